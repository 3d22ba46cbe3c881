//! Run a plugin's hooks natively, in `cargo test`, through the same path the wasm exports take:
//! the input is encoded to CBOR, decoded by the SDK, handed to the hook, and the reply encoded
//! and decoded again, so a codec mistake fails a native test rather than a node.
//!
//! ```
//! use wasmkv_guest::{Verdict, WriteRequest, config, testing::Plugin};
//!
//! #[config]
//! struct Limits { max_value: usize }
//!
//! fn check(req: &WriteRequest, cfg: &Limits) -> Verdict {
//!     if req.value.len() > cfg.max_value { Verdict::deny("value too large") } else { Verdict::allow() }
//! }
//!
//! let plugin = Plugin::<Limits>::init("max_value: 4").unwrap();
//! assert!(plugin.validate(check, &WriteRequest::set("k", "abc")).unwrap().allow);
//! assert!(!plugin.validate(check, &WriteRequest::set("k", "abcdef")).unwrap().allow);
//! ```

use std::cell::{Cell, RefCell};

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::Level;
use crate::abi::{self, EvictionInput, FilterInput, FilterOutput, ReplyError, Verdict, Victims};
use crate::abi::{ReplicaInfo, WriteRequest};
use crate::env::imp::capture;
use crate::hooks::{self, EvictHook, FilterHook, ValidateHook};

/// Why a plugin could not be set up with a config.
#[derive(Debug, Error)]
pub enum InitError {
    /// The YAML given to [`Plugin::init`] does not parse.
    #[error("config is not valid YAML: {0}")]
    Yaml(String),
    /// The YAML parsed but could not be turned into CBOR.
    #[error(transparent)]
    Encode(#[from] abi::EncodeError),
    /// The plugin's `wasmkv_init` path refused the config (what the node would report).
    #[error("{0}")]
    Refused(String),
}

/// One line a hook logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// A plugin instance for tests: its decoded config, a clock and the lines its hooks logged.
pub struct Plugin<C = ()> {
    config: C,
    now_ms: Cell<Option<u64>>,
    logs: RefCell<Vec<LogLine>>,
}

impl Plugin<()> {
    /// A plugin whose hooks take no config.
    pub fn new() -> Self {
        Self::with_config(())
    }
}

impl Default for Plugin<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: DeserializeOwned> Plugin<C> {
    /// Initialise from a YAML config, as the `config:` value of a chain step in the node's YAML
    /// (`"{}"` for an empty one): YAML → CBOR → the `wasmkv_init` decode.
    pub fn init(yaml: &str) -> Result<Self, InitError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(yaml).map_err(|e| InitError::Yaml(e.to_string()))?;
        Self::init_cbor(&abi::encode(&value)?)
    }

    /// Initialise from the CBOR bytes the node would pass to `wasmkv_init`.
    pub fn init_cbor(cbor: &[u8]) -> Result<Self, InitError> {
        hooks::init_bytes(cbor)
            .map(Self::with_config)
            .map_err(InitError::Refused)
    }
}

impl<C> Plugin<C> {
    fn with_config(config: C) -> Self {
        Self {
            config,
            now_ms: Cell::new(None),
            logs: RefCell::new(Vec::new()),
        }
    }

    /// The decoded config.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// Pin the clock [`now_ms`](crate::now_ms) reads during calls to `now_ms`.
    pub fn set_now_ms(&self, now_ms: u64) {
        self.now_ms.set(Some(now_ms));
    }

    /// Call a validate hook with `req`, the way `wasmkv_validate` would.
    pub fn validate<S>(
        &self,
        hook: impl ValidateHook<C, S>,
        req: &WriteRequest,
    ) -> Result<Verdict, ReplyError> {
        let input = abi::encode(req).expect("WriteRequest always encodes");
        abi::decode_reply(&self.validate_raw(hook, &input))
    }

    /// Call a validate hook with raw input bytes (to test what it does with garbage).
    pub fn validate_raw<S>(&self, hook: impl ValidateHook<C, S>, input: &[u8]) -> Vec<u8> {
        self.run(|| hooks::validate_bytes(input, &self.config, &hook))
    }

    /// Call an evict hook with `input`, the way `wasmkv_evict` would.
    pub fn evict<S>(
        &self,
        hook: impl EvictHook<C, S>,
        input: &EvictionInput,
    ) -> Result<Victims, ReplyError> {
        let input = abi::encode(input).expect("EvictionInput always encodes");
        abi::decode_reply(&self.run(|| hooks::evict_bytes(&input, &self.config, &hook)))
    }

    /// Call a filter hook on a batch, the way `wasmkv_filter` would.
    pub fn filter<S>(
        &self,
        hook: impl FilterHook<C, S>,
        input: &FilterInput,
    ) -> Result<FilterOutput, ReplyError> {
        let input = abi::encode(input).expect("FilterInput always encodes");
        abi::decode_reply(&self.run(|| hooks::filter_bytes(&input, &self.config, &hook)))
    }

    /// Call a filter hook on a single entry bound for `replica`.
    pub fn filter_one<S>(
        &self,
        hook: impl FilterHook<C, S>,
        entry: &abi::FilterEntry,
        replica: &ReplicaInfo,
    ) -> Result<bool, ReplyError> {
        let batch = FilterInput {
            replica: replica.clone(),
            entries: vec![entry.clone()],
        };
        let output = self.filter(hook, &batch)?;
        match output.keep.as_slice() {
            [keep] => Ok(*keep),
            other => Err(ReplyError::Guest(format!(
                "filter returned {} decisions for 1 entry",
                other.len()
            ))),
        }
    }

    /// The lines logged by the calls so far, oldest first; the log is emptied.
    pub fn take_logs(&self) -> Vec<LogLine> {
        self.logs.take()
    }

    fn run(&self, call: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        let (reply, lines) = capture(self.now_ms.get(), call);
        self.logs.borrow_mut().extend(
            lines
                .into_iter()
                .map(|(level, message)| LogLine { level, message }),
        );
        reply
    }
}
