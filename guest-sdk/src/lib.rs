//! Write wasmkv plugins in Rust.
//!
//! A plugin is a `cdylib` built for `wasm32-unknown-unknown`. Its author writes plain functions
//! under one attribute each and never touches the ABI:
//!
//! ```
//! use wasmkv_guest::{Verdict, WriteRequest, config, validate};
//!
//! /// The `config:` of this plugin's chain step in the node's YAML.
//! #[config]
//! struct Prefixes {
//!     allowed: Vec<String>,
//! }
//!
//! #[validate]
//! fn check(req: &WriteRequest, cfg: &Prefixes) -> Verdict {
//!     if cfg.allowed.iter().any(|p| req.key.starts_with(p.as_bytes())) {
//!         Verdict::allow()
//!     } else {
//!         Verdict::deny(format!("allowed prefixes: {}", cfg.allowed.join(", ")))
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! - [`abi`]: the ABI v1 messages and their codec, shared with the host.
//! - [`config`], [`validate`], [`evict`], [`filter`]: the attributes that generate the exports.
//! - [`log!`] and friends, [`now_ms`]: what the node lends a plugin.
//! - `testing` (native builds only): run the hooks in `cargo test`.
//!
//! In wasm the crate also exports `wasmkv_abi_v1`, `wasmkv_alloc` and `wasmkv_free`. Natively
//! it exports nothing, so the host can depend on it for [`abi`] alone. `ABI.md` beside this
//! crate describes the ABI for authors in other languages.

#![warn(missing_docs)]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod abi;
mod config;
mod env;
pub mod hooks;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use abi::{
    Candidate, EvictionInput, FilterEntry, FilterInput, FilterOutput, Op, ReplicaInfo, Verdict,
    Victims, WriteRequest,
};
pub use config::PluginConfig;
pub use env::{Level, log, now_ms};
/// Serde, re-exported so a plugin needs no dependency of its own (`#[config]` derives
/// `Deserialize` through it; write `wasmkv_guest::serde::Deserialize` for other types).
pub use serde;
pub use serde::Deserialize;
pub use wasmkv_guest_macros::{config, evict, filter, validate};
