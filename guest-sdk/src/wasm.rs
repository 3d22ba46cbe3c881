//! The guest side of ABI v1 in wasm: the exports every plugin has (`wasmkv_abi_v1`,
//! `wasmkv_alloc`, `wasmkv_free`) and the pointer handling behind the exports the macros
//! generate (`wasmkv_init`, `wasmkv_validate`, `wasmkv_evict`, `wasmkv_filter`).
//!
//! Ownership (ABI.md, "Memory"): the host fills an input buffer it got from `wasmkv_alloc` and
//! passes it to one call, which takes it over and frees it. The call returns a buffer of its
//! own, allocated as by `wasmkv_alloc(len)`, that the host frees with `wasmkv_free(ptr, len)`
//! once it has copied the bytes out. Every buffer is allocated with alignment 1 and its exact
//! length, so `(ptr, len)` is all it takes to free it.

use std::alloc::{Layout, alloc, dealloc};

use crate::abi;
use crate::config::PluginConfig;
use crate::hooks::{self, EvictHook, FilterHook, ValidateHook};

/// The marker the host looks for: its presence declares ABI v1; it returns the version.
#[unsafe(no_mangle)]
pub extern "C" fn wasmkv_abi_v1() -> i32 {
    abi::VERSION as i32
}

/// Allocate `len` bytes for the host to write into; 0 if memory is exhausted. A zero-length
/// request returns 1, a pointer that must not be written to (freeing it is a no-op).
#[unsafe(no_mangle)]
pub extern "C" fn wasmkv_alloc(len: i32) -> i32 {
    let len = len as u32 as usize;
    if len == 0 {
        return 1;
    }
    match Layout::from_size_align(len, 1) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc(layout) as usize as i32 },
        Err(_) => 0,
    }
}

/// Free a buffer of `len` bytes that `wasmkv_alloc` or a call's reply handed out.
#[unsafe(no_mangle)]
pub extern "C" fn wasmkv_free(ptr: i32, len: i32) {
    let len = len as u32 as usize;
    if len == 0 || ptr == 0 {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(len, 1) {
        // SAFETY: by the ABI contract `ptr` came from `wasmkv_alloc(len)` or is a reply of
        // exactly `len` bytes (allocated with the same layout), and is freed only once.
        unsafe { dealloc(ptr as u32 as usize as *mut u8, layout) }
    }
}

/// Take over the input buffer the host passed to a call.
///
/// # Safety
/// `(ptr, len)` must be a buffer from `wasmkv_alloc(len)`, filled by the host and not freed.
unsafe fn take_input(ptr: i32, len: i32) -> Box<[u8]> {
    let len = len as u32 as usize;
    if len == 0 {
        return Box::default();
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as u32 as usize as *mut u8, len);
    // SAFETY: (caller) the buffer was allocated with Layout (len, 1), which is the layout of a
    // `Box<[u8]>` of `len` bytes, and nobody else owns it any more.
    unsafe { Box::from_raw(slice) }
}

/// Hand a reply to the host as `ptr << 32 | len`; the host frees it with `wasmkv_free`.
fn hand_over(reply: Vec<u8>) -> i64 {
    // `into_boxed_slice` makes the allocation exactly `len` bytes long, as `wasmkv_free` expects.
    let reply = reply.into_boxed_slice();
    let len = reply.len() as u64;
    let ptr = Box::into_raw(reply) as *mut u8 as usize as u64;
    ((ptr << 32) | len) as i64
}

/// Body of the `wasmkv_init` export `#[config]` generates: decode and keep the config.
pub fn export_init<C: PluginConfig>(ptr: i32, len: i32) -> i64 {
    // SAFETY: the host passes a buffer it got from `wasmkv_alloc`, as the ABI requires.
    let input = unsafe { take_input(ptr, len) };
    let message = match hooks::init_bytes::<C>(&input) {
        Ok(config) => match C::slot().set(config) {
            Ok(()) => return 0,
            Err(_) => "wasmkv_init was already called on this instance".to_owned(),
        },
        Err(message) => message,
    };
    drop(input);
    hand_over(abi::encode_error(&message))
}

fn with_config<C>(
    name: &str,
    ptr: i32,
    len: i32,
    cfg: Option<&C>,
    run: impl FnOnce(&[u8], &C) -> Vec<u8>,
) -> i64 {
    // SAFETY: the host passes a buffer it got from `wasmkv_alloc`, as the ABI requires.
    let input = unsafe { take_input(ptr, len) };
    let reply = match cfg {
        Some(cfg) => run(&input, cfg),
        None => abi::encode_error(&format!(
            "{name} called before wasmkv_init: this plugin needs its config"
        )),
    };
    drop(input);
    hand_over(reply)
}

/// Body of a `wasmkv_validate` export.
pub fn export_validate<C, S>(
    ptr: i32,
    len: i32,
    cfg: Option<&C>,
    hook: impl ValidateHook<C, S>,
) -> i64 {
    with_config("wasmkv_validate", ptr, len, cfg, |input, cfg| {
        hooks::validate_bytes(input, cfg, &hook)
    })
}

/// Body of a `wasmkv_evict` export.
pub fn export_evict<C, S>(ptr: i32, len: i32, cfg: Option<&C>, hook: impl EvictHook<C, S>) -> i64 {
    with_config("wasmkv_evict", ptr, len, cfg, |input, cfg| {
        hooks::evict_bytes(input, cfg, &hook)
    })
}

/// Body of a `wasmkv_filter` export.
pub fn export_filter<C, S>(
    ptr: i32,
    len: i32,
    cfg: Option<&C>,
    hook: impl FilterHook<C, S>,
) -> i64 {
    with_config("wasmkv_filter", ptr, len, cfg, |input, cfg| {
        hooks::filter_bytes(input, cfg, &hook)
    })
}

/// The config `wasmkv_init` stored, if it has run.
pub fn config<C: PluginConfig>() -> Option<&'static C> {
    C::slot().get()
}
