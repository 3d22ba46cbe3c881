//! The `plugins:` section: where plugin files live, the sandbox limits, and the chains that
//! run them.
//!
//! ```yaml
//! plugins:
//!   dir: ./plugins                 # NAME.wasm files, watched for changes
//!   limits: {memory: 16MiB, deadline: 2ms, fuel: 0}
//!   validate:                      # every step must allow a write
//!     - {plugin: key-policy, config: {allowed_prefixes: ["user:"]}, on_error: reject}
//!   evict: {plugin: lfu-evict, config: {half_life: 10m}, sample: 16}
//!   replicate:                     # per-replica filters, matched by the replica's labels
//!     - {plugin: prefix-filter, config: {...}, replicas: {labels: {region: us}}, on_error: hold}
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole section. The default has no chains, so no plugin runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginsConfig {
    /// Directory of `NAME.wasm` files; a chain step's `plugin: NAME` is `dir/NAME.wasm`.
    pub dir: PathBuf,
    pub limits: PluginLimits,
    pub validate: Vec<ValidateStep>,
    pub evict: Option<EvictStep>,
    pub replicate: Vec<ReplicateStep>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("plugins"),
            limits: PluginLimits::default(),
            validate: Vec::new(),
            evict: None,
            replicate: Vec::new(),
        }
    }
}

impl PluginsConfig {
    /// Whether any chain names a plugin.
    pub fn is_empty(&self) -> bool {
        self.validate.is_empty() && self.evict.is_none() && self.replicate.is_empty()
    }
}

/// The sandbox of every plugin instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginLimits {
    /// Most linear memory an instance may grow to.
    pub memory: u64,
    /// Longest a single call may run (enforced by epoch interruption).
    pub deadline: Duration,
    /// Fuel (roughly, wasm instructions) per call; 0 = not metered.
    pub fuel: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory: 16 << 20,
            deadline: Duration::from_millis(2),
            fuel: 0,
        }
    }
}

/// What a validator's failure (trap, timeout, garbage) means for the write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValidateOnError {
    /// Refuse the write (fail closed).
    #[default]
    Reject,
    /// Let the write through (fail open).
    Allow,
}

/// What a filter's failure means for the entries it was asked about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterOnError {
    /// Send nothing for now and retry later.
    #[default]
    Hold,
    /// Send the entries unfiltered.
    Send,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidateStep {
    pub plugin: String,
    /// The step's `config:` value, handed to the plugin's `wasmkv_init` (as CBOR).
    pub config: serde_json::Value,
    pub on_error: ValidateOnError,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvictStep {
    pub plugin: String,
    pub config: serde_json::Value,
    /// Candidates sampled per eviction round.
    pub sample: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicateStep {
    pub plugin: String,
    pub config: serde_json::Value,
    /// The step applies to replicas carrying all these labels (empty = every replica).
    pub labels: BTreeMap<String, String>,
    pub on_error: FilterOnError,
}
