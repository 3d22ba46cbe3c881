//! wasmkv: a replicated key-value store node whose policies are sandboxed WebAssembly plugins.
//!
//! The data of one request flows one way: `api` accepts the connection (over `tls` when
//! configured), checks the caller's token against `auth` and decodes the call, `plugins`
//! validate it, `db` commits it through the `wal` and then applies it to the `storage`
//! engine, and `replication` streams the log to replicas. `storage` knows nothing about the WAL and the
//! WAL knows nothing about the in-memory map; `db` is the only place where the two meet.
//! `plugins` takes and returns ABI types only; `node` wires one node together.

pub mod api;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod node;
pub mod plugins;
pub mod replication;
pub mod storage;
pub mod tls;
mod turn;
pub mod wal;
