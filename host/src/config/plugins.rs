//! The `plugins:` section: where plugin files live, the sandbox limits, and the chains that
//! run them.
//!
//! ```yaml
//! plugins:
//!   dir: ./plugins                 # NAME.wasm files, watched for changes
//!   limits: {memory: 16MiB, deadline: 2ms, fuel: 0}
//!   validate:                      # every step must allow a write
//!     - {plugin: key-policy, config: {allowed_prefixes: ["user:"]}, on_error: reject}
//!   evict: {plugin: lfu-evict, config: {half_life_ms: 600000}, sample: 16}
//!   replicate:                     # per-replica filters, matched by the replica's labels
//!     - plugin: prefix-filter
//!       config: {rules: [{labels: {region: us}, deny_prefixes: ["eu:"]}]}
//!       replicas: {labels: {region: us}}
//!       on_error: hold
//! ```
//!
//! `dir` and `limits` are settings like any other (so `WASMKV_PLUGINS__DIR` and
//! `WASMKV_PLUGINS__LIMITS__MEMORY` override them). The chains are read here, from the file
//! only:
//!
//! ```text
//! validate:  null | [STEP...]   STEP = {plugin: NAME, config?: ANY, on_error?: reject | allow}
//! evict:     null | {plugin: NAME, config?: ANY, sample?: 1..=1024}
//! replicate: null | [STEP...]   STEP = {plugin: NAME, config?: ANY, on_error?: hold | send,
//!                                       replicas?: null | {labels?: null | {KEY: VALUE, ...}}}
//! ```
//!
//! `NAME` is the file `dir/NAME.wasm`, so it has no `/`, no `..` and no `.wasm`. `config` is
//! any YAML, handed to the plugin with its types (`10` a number, `"10"` and `10m` strings);
//! missing, it is an empty mapping. Whether the file exists is for start-up to say, not the
//! configuration: a plugin may be installed after the config is written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::reader::{Field, Fields, Reader};
use super::settings::parse_count;
use super::yaml::Node;

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

    /// Check what the file reader checks in the chains (plugin names, sample sizes), for a
    /// configuration built or changed by hand: the key path and what is wrong.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let names = self
            .validate
            .iter()
            .enumerate()
            .map(|(i, step)| (format!("plugins.validate[{i}].plugin"), &step.plugin))
            .chain(
                self.evict
                    .iter()
                    .map(|step| ("plugins.evict.plugin".to_owned(), &step.plugin)),
            )
            .chain(
                self.replicate
                    .iter()
                    .enumerate()
                    .map(|(i, step)| (format!("plugins.replicate[{i}].plugin"), &step.plugin)),
            );
        for (key, name) in names {
            check_name(name).map_err(|message| (key, message))?;
        }
        if let Some(step) = &self.evict {
            check_sample(step.sample)
                .map_err(|message| ("plugins.evict.sample".to_owned(), message))?;
        }
        Ok(())
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

impl PluginLimits {
    /// One WebAssembly page: no module with memory can run in less.
    pub const MIN_MEMORY: u64 = 64 << 10;
    /// A call holds up the request it serves; past this it is surely stuck.
    pub const MAX_DEADLINE: Duration = Duration::from_secs(10);
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

impl EvictStep {
    /// `sample` when the file does not say.
    pub const DEFAULT_SAMPLE: usize = 16;
    /// The most candidates one round may hand a plugin.
    pub const MAX_SAMPLE: usize = 1024;
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicateStep {
    pub plugin: String,
    pub config: serde_json::Value,
    /// The step applies to replicas carrying all these labels (empty = every replica).
    pub labels: BTreeMap<String, String>,
    pub on_error: FilterOnError,
}

/// A plugin name names the file `NAME.wasm` in `plugins.dir`, and nothing outside it.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("must not be empty; expected {NAME_FORM}"));
    }
    if let Some(stem) = name.strip_suffix(".wasm") {
        return Err(format!(
            "{name:?} would be the file {name}.wasm; write {stem:?} (.wasm is added)"
        ));
    }
    if name.contains(['/', '\\']) || name.contains("..") {
        return Err(format!(
            "invalid plugin name {name:?}; expected {NAME_FORM}"
        ));
    }
    Ok(())
}

/// What a plugin name looks like, for messages.
const NAME_FORM: &str = "the name of a file in plugins.dir without .wasm, such as key-policy \
                         for key-policy.wasm";

fn check_sample(sample: usize) -> Result<(), String> {
    if !(1..=EvictStep::MAX_SAMPLE).contains(&sample) {
        return Err(format!(
            "{sample} is out of range; expected 1 to {}",
            EvictStep::MAX_SAMPLE
        ));
    }
    Ok(())
}

/// The keys of `plugins:` that hold chains. Their values are lists and nested YAML, which
/// the settings table (and so the environment) cannot hold; [`read_chain`] reads them.
pub(super) const CHAINS: &[&str] = &["validate", "evict", "replicate"];

const VALIDATE_KEYS: &[&str] = &["plugin", "config", "on_error"];
const EVICT_KEYS: &[&str] = &["plugin", "config", "sample"];
const REPLICATE_KEYS: &[&str] = &["plugin", "config", "replicas", "on_error"];
const REPLICAS_KEYS: &[&str] = &["labels"];

/// The chains a file sets; none where it says nothing.
#[derive(Default)]
pub(super) struct Chains {
    validate: Vec<ValidateStep>,
    evict: Option<EvictStep>,
    replicate: Vec<ReplicateStep>,
}

impl Chains {
    pub(super) fn apply(self, plugins: &mut PluginsConfig) {
        plugins.validate = self.validate;
        plugins.evict = self.evict;
        plugins.replicate = self.replicate;
    }
}

/// Read `plugins.<key>` of `file` into `chains` if `key` names a chain (one of [`CHAINS`]);
/// `Ok(false)` if it does not.
pub(super) fn read_chain(
    file: &str,
    chains: &mut Chains,
    key: &Spanned<String>,
    value: Spanned<Node>,
) -> Result<bool, ConfigError> {
    let reader = Reader { file };
    let path = format!("plugins.{}", key.value);
    match key.value.as_str() {
        "validate" => {
            chains.validate = reader.steps(&path, value, VALIDATE_KEYS, |step| {
                Ok(ValidateStep {
                    plugin: reader.plugin(step)?,
                    config: reader.config(step)?,
                    on_error: reader
                        .choice(
                            step,
                            "on_error",
                            &[
                                ("reject", ValidateOnError::Reject),
                                ("allow", ValidateOnError::Allow),
                            ],
                        )?
                        .unwrap_or_default(),
                })
            })?;
        }
        "evict" => {
            chains.evict = match value.value {
                Node::Null => None,
                _ => Some(reader.evict(&mut reader.fields(
                    path,
                    key.referenced,
                    value,
                    EVICT_KEYS,
                )?)?),
            };
        }
        "replicate" => {
            chains.replicate = reader.steps(&path, value, REPLICATE_KEYS, |step| {
                Ok(ReplicateStep {
                    plugin: reader.plugin(step)?,
                    config: reader.config(step)?,
                    labels: reader.replicas(step)?,
                    on_error: reader
                        .choice(
                            step,
                            "on_error",
                            &[("hold", FilterOnError::Hold), ("send", FilterOnError::Send)],
                        )?
                        .unwrap_or_default(),
                })
            })?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

impl Reader<'_> {
    /// The step's `plugin`, which every step needs.
    fn plugin(&self, step: &mut Fields) -> Result<String, ConfigError> {
        let Some(field) = step.take("plugin") else {
            let message = format!("required: {NAME_FORM}");
            return Err(self.error(step.at, &format!("{}.plugin", step.path), message));
        };
        let name = self.text(&field)?;
        check_name(&name).map_err(|message| self.error(field.at, &field.path, message))?;
        Ok(name)
    }

    /// The step's `config`, any YAML; an empty mapping if it has none.
    fn config(&self, step: &mut Fields) -> Result<Value, ConfigError> {
        match step.take("config") {
            Some(field) => self.json(&field.path, field.value),
            None => Ok(Value::Object(serde_json::Map::new())),
        }
    }

    /// `node` as JSON with its YAML types.
    fn json(&self, path: &str, node: Spanned<Node>) -> Result<Value, ConfigError> {
        Ok(match node.value {
            Node::Null => Value::Null,
            Node::Bool(v) => Value::Bool(v),
            Node::Integer(v) => Value::Number(v),
            Node::Float(v) => Value::Number(serde_json::Number::from_f64(v).ok_or_else(|| {
                self.error(node.referenced, path, format!("{v} is not a finite number"))
            })?),
            Node::String(v) => Value::String(v),
            Node::Sequence(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.json(&format!("{path}[{i}]"), item))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Mapping(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| {
                        let value = self.json(&format!("{path}.{}", key.value), value)?;
                        Ok((key.value, value))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The step's `key`, one of `choices`; `None` if it has none.
    fn choice<T: Copy>(
        &self,
        step: &mut Fields,
        key: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ConfigError> {
        let Some(field) = step.take(key) else {
            return Ok(None);
        };
        let text = self.text(&field)?;
        match choices.iter().find(|(name, _)| *name == text) {
            Some((_, choice)) => Ok(Some(*choice)),
            None => {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                let message = format!("expected {}, got {text:?}", names.join(" or "));
                Err(self.error(field.at, &field.path, message))
            }
        }
    }

    fn evict(&self, step: &mut Fields) -> Result<EvictStep, ConfigError> {
        let plugin = self.plugin(step)?;
        let config = self.config(step)?;
        let sample = match step.take("sample") {
            None => EvictStep::DEFAULT_SAMPLE,
            Some(field) => {
                let error = |message| self.error(field.at, &field.path, message);
                let count = parse_count(&self.text(&field)?).map_err(error)?;
                let sample = usize::try_from(count).unwrap_or(usize::MAX);
                check_sample(sample).map_err(error)?;
                sample
            }
        };
        Ok(EvictStep {
            plugin,
            config,
            sample,
        })
    }

    /// The labels of the step's `replicas`; none (every replica) if it has none.
    fn replicas(&self, step: &mut Fields) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(replicas) = step.take("replicas") else {
            return Ok(BTreeMap::new());
        };
        if let Node::Null = replicas.value.value {
            return Ok(BTreeMap::new());
        }
        let mut replicas =
            self.fields(replicas.path, replicas.at, replicas.value, REPLICAS_KEYS)?;
        let Some(labels) = replicas.take("labels") else {
            return Ok(BTreeMap::new());
        };
        let entries = match labels.value.value {
            Node::Mapping(entries) => entries,
            Node::Null => Vec::new(),
            other => {
                let message = format!(
                    "expected a mapping of label names to values (region: us), found {}",
                    other.kind()
                );
                return Err(self.error(labels.value.referenced, &labels.path, message));
            }
        };
        entries
            .into_iter()
            .map(|(key, value)| {
                let field = Field {
                    path: format!("{}.{}", labels.path, key.value),
                    at: key.referenced,
                    value,
                };
                Ok((key.value, self.text(&field)?))
            })
            .collect()
    }
}
