//! Attribute macros of `wasmkv-guest`. Use them through that crate (`wasmkv_guest::validate`),
//! which re-exports them; the generated code names `::wasmkv_guest` paths.
//!
//! Each hook attribute keeps the function as written (callable natively, e.g. from tests) and,
//! when compiling for wasm32 only, adds the `#[no_mangle]` export that decodes the input, calls
//! the function and encodes the reply.

#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{FnArg, Item, ItemFn, Type, parse_macro_input};

/// Marks the plugin's config type: derives `Deserialize` (through `wasmkv_guest::serde`, so
/// the plugin needs no serde dependency) and, in wasm, exports `wasmkv_init`, which decodes the
/// node's `config:` value into it once per instance. `#[serde(...)]` attributes work as usual.
#[proc_macro_attribute]
pub fn config(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = parse_macro_input!(item as Item);
    expand_config(attr.into(), item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// `fn f(req: &WriteRequest, cfg: &Config) -> Verdict` (config optional): exported as
/// `wasmkv_validate`.
#[proc_macro_attribute]
pub fn validate(attr: TokenStream, item: TokenStream) -> TokenStream {
    hook(attr, item, Hook::Validate)
}

/// `fn f(input: &EvictionInput, cfg: &Config) -> Victims` (config optional): exported as
/// `wasmkv_evict`.
#[proc_macro_attribute]
pub fn evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    hook(attr, item, Hook::Evict)
}

/// `fn f(entry: &FilterEntry, replica: &ReplicaInfo, cfg: &Config) -> bool` (config optional):
/// exported as `wasmkv_filter`, which calls it for each entry of a batch.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    hook(attr, item, Hook::Filter)
}

#[derive(Clone, Copy)]
enum Hook {
    Validate,
    Evict,
    Filter,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Validate => "validate",
            Hook::Evict => "evict",
            Hook::Filter => "filter",
        }
    }

    /// Parameters before the optional config.
    fn inputs(self) -> usize {
        match self {
            Hook::Validate | Hook::Evict => 1,
            Hook::Filter => 2,
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Hook::Validate => "fn(&WriteRequest, &Config) -> Verdict",
            Hook::Evict => "fn(&EvictionInput, &Config) -> Victims",
            Hook::Filter => "fn(&FilterEntry, &ReplicaInfo, &Config) -> bool",
        }
    }
}

fn hook(attr: TokenStream, item: TokenStream, kind: Hook) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    expand_hook(attr.into(), function, kind)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn no_arguments(attr: TokenStream2, what: &str) -> syn::Result<()> {
    if attr.is_empty() {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            attr,
            format!("#[{what}] takes no arguments"),
        ))
    }
}

fn expand_hook(attr: TokenStream2, function: ItemFn, kind: Hook) -> syn::Result<TokenStream2> {
    no_arguments(attr, kind.name())?;
    let sig = &function.sig;
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() || sig.variadic.is_some() {
        return Err(syn::Error::new_spanned(
            sig,
            format!(
                "a {} hook is a plain, non-generic, non-async function: {}",
                kind.name(),
                kind.signature()
            ),
        ));
    }
    let arity = sig.inputs.len();
    let config = match arity {
        n if n == kind.inputs() => None,
        n if n == kind.inputs() + 1 => Some(config_type(sig.inputs.last().expect("n > 0"))?),
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.inputs,
                format!(
                    "a {} hook has the signature {} (the config parameter is optional)",
                    kind.name(),
                    kind.signature()
                ),
            ));
        }
    };
    let name = &sig.ident;
    let export = format_ident!("wasmkv_{}", kind.name());
    let body = format_ident!("export_{}", kind.name());
    let (check, config_arg) = match &config {
        Some(ty) => (
            quote! { const _: () = ::wasmkv_guest::__private::assert_config::<#ty>(); },
            quote! { ::wasmkv_guest::__private::config::<#ty>() },
        ),
        None => (quote! {}, quote! { ::core::option::Option::Some(&()) }),
    };
    Ok(quote! {
        #function
        #check
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn #export(ptr: i32, len: i32) -> i64 {
                ::wasmkv_guest::__private::#body(ptr, len, #config_arg, #name)
            }
        };
    })
}

fn config_type(arg: &FnArg) -> syn::Result<&Type> {
    if let FnArg::Typed(arg) = arg
        && let Type::Reference(reference) = &*arg.ty
        && reference.mutability.is_none()
    {
        return Ok(&reference.elem);
    }
    Err(syn::Error::new_spanned(
        arg,
        "the config parameter is a shared reference to the plugin's #[config] type, e.g. `cfg: &MyConfig`",
    ))
}

fn expand_config(attr: TokenStream2, item: Item) -> syn::Result<TokenStream2> {
    no_arguments(attr, "config")?;
    let (name, generics) = match &item {
        Item::Struct(s) => (&s.ident, &s.generics),
        Item::Enum(e) => (&e.ident, &e.generics),
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "#[config] goes on the struct or enum the plugin's hooks take as config",
            ));
        }
    };
    if !generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            generics,
            "a plugin config type cannot be generic (wasmkv_init decodes one concrete type)",
        ));
    }
    let serde_path = syn::LitStr::new("::wasmkv_guest::serde", Span::call_site());
    Ok(quote! {
        #[derive(::wasmkv_guest::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #item

        impl ::wasmkv_guest::PluginConfig for #name {
            #[cfg(target_arch = "wasm32")]
            fn slot() -> &'static ::wasmkv_guest::__private::OnceLock<Self> {
                static SLOT: ::wasmkv_guest::__private::OnceLock<#name> =
                    ::wasmkv_guest::__private::OnceLock::new();
                &SLOT
            }
        }

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn wasmkv_init(ptr: i32, len: i32) -> i64 {
                ::wasmkv_guest::__private::export_init::<#name>(ptr, len)
            }
        };
    })
}
