//! ABI v1: the messages exchanged between the node and a plugin, and their codec.
//!
//! The host depends on this module too, so both sides encode and decode with the same types and
//! the same functions ([`encode`], [`decode`], [`decode_reply`], [`encode_error`]) and cannot
//! drift. Nothing here is specific to wasm. `ABI.md` documents the wire format for authors in
//! other languages.

mod codec;
mod types;

pub use codec::{DecodeError, EncodeError, ReplyError, decode, decode_reply, encode, encode_error};
pub use types::{
    Candidate, EvictionInput, FilterEntry, FilterInput, FilterOutput, Op, ReplicaInfo, Verdict,
    Victims, WriteRequest,
};

/// The ABI major version this crate speaks; a plugin exports `wasmkv_abi_v1` to declare it.
pub const VERSION: u32 = 1;
