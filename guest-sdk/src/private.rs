//! Paths the macros expand to. Not public API: names and signatures may change at any time.

use std::fmt;

use crate::env::{Level, log};

#[cfg(target_arch = "wasm32")]
pub use crate::wasm::{config, export_evict, export_filter, export_init, export_validate};
#[cfg(target_arch = "wasm32")]
pub use std::sync::OnceLock;

/// Compile-time check that a hook's config type carries `#[config]`.
pub const fn assert_config<C: crate::PluginConfig>() {}

/// Log formatted arguments, without allocating when they are a plain literal.
pub fn log_args(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => log(level, message),
        None => log(level, &args.to_string()),
    }
}
