//! The path every hook call takes, in wasm and in the test harness alike:
//! CBOR input → decode → the author's function → encode → CBOR reply.
//!
//! A hook may be written with or without a config parameter; the shape markers
//! ([`WithConfig`], [`WithoutConfig`]) let one trait accept both. Bad input never panics: it
//! becomes an error reply (a CBOR text string, see [`abi::decode_reply`]).

use serde::de::DeserializeOwned;

use crate::abi::{
    self, EvictionInput, FilterEntry, FilterInput, FilterOutput, ReplicaInfo, Verdict, Victims,
    WriteRequest,
};

/// Marks a hook function that takes the plugin's config as its last parameter.
pub struct WithConfig;

/// Marks a hook function without a config parameter (it accepts any config).
pub struct WithoutConfig;

/// A validate hook: `fn(&WriteRequest, &C) -> Verdict` or `fn(&WriteRequest) -> Verdict`.
pub trait ValidateHook<C, Shape> {
    /// Judge one write.
    fn call(&self, req: &WriteRequest, cfg: &C) -> Verdict;
}

impl<C, F: Fn(&WriteRequest, &C) -> Verdict> ValidateHook<C, WithConfig> for F {
    fn call(&self, req: &WriteRequest, cfg: &C) -> Verdict {
        self(req, cfg)
    }
}

impl<C, F: Fn(&WriteRequest) -> Verdict> ValidateHook<C, WithoutConfig> for F {
    fn call(&self, req: &WriteRequest, _: &C) -> Verdict {
        self(req)
    }
}

/// An evict hook: `fn(&EvictionInput, &C) -> Victims` or `fn(&EvictionInput) -> Victims`.
pub trait EvictHook<C, Shape> {
    /// Pick victims among the candidates.
    fn call(&self, input: &EvictionInput, cfg: &C) -> Victims;
}

impl<C, F: Fn(&EvictionInput, &C) -> Victims> EvictHook<C, WithConfig> for F {
    fn call(&self, input: &EvictionInput, cfg: &C) -> Victims {
        self(input, cfg)
    }
}

impl<C, F: Fn(&EvictionInput) -> Victims> EvictHook<C, WithoutConfig> for F {
    fn call(&self, input: &EvictionInput, _: &C) -> Victims {
        self(input)
    }
}

/// A filter hook, called once per entry of a batch:
/// `fn(&FilterEntry, &ReplicaInfo, &C) -> bool` or `fn(&FilterEntry, &ReplicaInfo) -> bool`.
pub trait FilterHook<C, Shape> {
    /// Whether `entry` is sent to `replica`.
    fn call(&self, entry: &FilterEntry, replica: &ReplicaInfo, cfg: &C) -> bool;
}

impl<C, F: Fn(&FilterEntry, &ReplicaInfo, &C) -> bool> FilterHook<C, WithConfig> for F {
    fn call(&self, entry: &FilterEntry, replica: &ReplicaInfo, cfg: &C) -> bool {
        self(entry, replica, cfg)
    }
}

impl<C, F: Fn(&FilterEntry, &ReplicaInfo) -> bool> FilterHook<C, WithoutConfig> for F {
    fn call(&self, entry: &FilterEntry, replica: &ReplicaInfo, _: &C) -> bool {
        self(entry, replica)
    }
}

/// Decode a config the way `wasmkv_init` does; the error is the message the host will see.
pub fn init_bytes<C: DeserializeOwned>(input: &[u8]) -> Result<C, String> {
    abi::decode(input).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Run a validate hook on CBOR input, returning the CBOR reply `wasmkv_validate` hands back.
pub fn validate_bytes<C, S>(input: &[u8], cfg: &C, hook: &impl ValidateHook<C, S>) -> Vec<u8> {
    match abi::decode::<WriteRequest>(input) {
        Ok(req) => reply(&hook.call(&req, cfg)),
        Err(e) => abi::encode_error(&format!("wasmkv_validate: bad input: {e}")),
    }
}

/// Run an evict hook on CBOR input, returning the CBOR reply `wasmkv_evict` hands back.
pub fn evict_bytes<C, S>(input: &[u8], cfg: &C, hook: &impl EvictHook<C, S>) -> Vec<u8> {
    match abi::decode::<EvictionInput>(input) {
        Ok(input) => reply(&hook.call(&input, cfg)),
        Err(e) => abi::encode_error(&format!("wasmkv_evict: bad input: {e}")),
    }
}

/// Run a filter hook over every entry of a CBOR batch, returning the CBOR reply
/// `wasmkv_filter` hands back.
pub fn filter_bytes<C, S>(input: &[u8], cfg: &C, hook: &impl FilterHook<C, S>) -> Vec<u8> {
    match abi::decode::<FilterInput>(input) {
        Ok(batch) => {
            let keep = batch
                .entries
                .iter()
                .map(|entry| hook.call(entry, &batch.replica, cfg))
                .collect();
            reply(&FilterOutput { keep })
        }
        Err(e) => abi::encode_error(&format!("wasmkv_filter: bad input: {e}")),
    }
}

fn reply<T: serde::Serialize>(output: &T) -> Vec<u8> {
    abi::encode(output).unwrap_or_else(|e| abi::encode_error(&e.to_string()))
}
