//! The messages of ABI v1: one input and one output type per hook.
//!
//! Every type is a CBOR map keyed by field name (see `ABI.md`). Keys and values travel as CBOR
//! byte strings. Decoders ignore keys they do not know, so a later v1 host may add optional
//! fields without breaking plugins built today.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a write does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Store `value` under `key` (CBOR text `"set"`).
    Set,
    /// Remove `key` (CBOR text `"delete"`). Expiry and eviction reach filters as deletes.
    Delete,
}

/// Input of `wasmkv_validate`: one write the node is about to accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Set or delete.
    pub op: Op,
    /// The key, as bytes (keys need not be UTF-8).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value to store; empty for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Time to live in milliseconds; 0 means the key does not expire.
    pub ttl_ms: u64,
}

impl WriteRequest {
    /// A set of `key` to `value` with no TTL.
    pub fn set(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            op: Op::Set,
            key: key.into(),
            value: value.into(),
            ttl_ms: 0,
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self {
            op: Op::Delete,
            key: key.into(),
            value: Vec::new(),
            ttl_ms: 0,
        }
    }

    /// The same write with a TTL of `ttl_ms` milliseconds (0 = none).
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }
}

/// Output of `wasmkv_validate`: whether the write may go ahead, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `true` lets the write through (to the next validator of the chain).
    pub allow: bool,
    /// Why the write was refused, shown to the client; empty when allowed.
    pub reason: String,
}

impl Verdict {
    /// Let the write through.
    pub fn allow() -> Self {
        Self {
            allow: true,
            reason: String::new(),
        }
    }

    /// Refuse the write; `reason` reaches the client, so say what to change.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            allow: false,
            reason: reason.into(),
        }
    }
}

/// One key the node could evict, with the access metadata the engine keeps for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Approximate bytes the entry takes (key, value and overhead).
    pub size: u64,
    /// When the key was last read or written, in milliseconds since the Unix epoch (coarse).
    pub last_access_ms: u64,
    /// A small, saturating access counter.
    pub hits: u32,
    /// When the key expires, in milliseconds since the Unix epoch; 0 means never.
    pub expires_at_ms: u64,
}

/// Input of `wasmkv_evict`: a sample of keys and how many of them must go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvictionInput {
    /// The sampled keys.
    pub candidates: Vec<Candidate>,
    /// How many victims the node wants (it may get fewer; never ask for more than this).
    pub need: u32,
}

/// Output of `wasmkv_evict`: the chosen keys, as indices into `EvictionInput::candidates`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victims {
    /// Distinct indices, each below the number of candidates, best victim first.
    pub victims: Vec<u32>,
}

/// The replica a filter batch is bound for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// The replica's identifier (its address as the primary knows it).
    pub id: String,
    /// The labels the node's configuration gives this replica (`region: eu`, …).
    pub labels: BTreeMap<String, String>,
}

/// One replicated write, as a filter sees it (the value itself is not sent, only its size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterEntry {
    /// Set or delete.
    pub op: Op,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Length of the value in bytes; 0 for a delete.
    pub value_len: u64,
    /// Time to live in milliseconds; 0 means none.
    pub ttl_ms: u64,
}

/// Input of `wasmkv_filter`: a batch of writes about to be sent to one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterInput {
    /// Where the batch goes.
    pub replica: ReplicaInfo,
    /// The writes, in log order.
    pub entries: Vec<FilterEntry>,
}

/// Output of `wasmkv_filter`: one decision per entry, in the same order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterOutput {
    /// `keep[i]` says whether `entries[i]` is sent; the length must equal the batch's.
    pub keep: Vec<bool>,
}
