//! The plugin's config type: the `config:` value of its chain step in the node's YAML, decoded
//! once by `wasmkv_init` and lent to every hook that takes it.

use serde::de::DeserializeOwned;

/// Implemented by `#[wasmkv_guest::config]` on the one type a plugin's hooks take as config.
///
/// A hook whose config parameter names a type without the attribute does not compile. A plugin
/// has at most one config type: a second `#[config]` defines `wasmkv_init` twice, which fails
/// the wasm build with "symbol `wasmkv_init` is already defined".
///
/// ```compile_fail
/// use wasmkv_guest::{Verdict, WriteRequest, validate};
///
/// #[derive(wasmkv_guest::Deserialize)]
/// #[serde(crate = "wasmkv_guest::serde")]
/// struct NotMarked {}
///
/// #[validate] // error: `NotMarked` is not this plugin's config type
/// fn check(_: &WriteRequest, _: &NotMarked) -> Verdict {
///     Verdict::allow()
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not this plugin's config type",
    note = "put `#[wasmkv_guest::config]` on the definition of `{Self}` (instead of `#[derive(Deserialize)]`)"
)]
pub trait PluginConfig: DeserializeOwned + Send + Sync + 'static {
    /// Where `wasmkv_init` keeps the decoded config for the instance's lifetime.
    #[cfg(target_arch = "wasm32")]
    fn slot() -> &'static std::sync::OnceLock<Self>;
}
