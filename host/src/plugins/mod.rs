//! WebAssembly plugins: the sandboxed runtime (ABI v1, see `guest-sdk/ABI.md`), the chains a
//! node runs them in, and hot reload of the plugin directory.
//!
//! `plugins` knows nothing about the rest of the node: it takes and returns ABI types (and
//! implements the storage engine's `EvictionPolicy`). A plugin named by a chain is loaded at
//! start-up, or the node does not start. After that, a changed file is compiled and checked
//! off the request path (marker, exports, `wasmkv_init` with every config a chain gives it)
//! and only then swapped in; calls in flight finish on the old version. A file that fails a
//! check, or is deleted, leaves the last good version running, and the plugin list says so.

mod chains;
mod error;
mod instance;
mod runtime;
mod step;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

pub use chains::{
    FilterStep, ValidateChain, WasmEviction, WriteCheck, checked_victims, filter_entries,
};
pub use error::{CallError, LoadError};
pub use runtime::{Hooks, Runtime};

use crate::api::proto::PluginInfo;
use crate::config::PluginsConfig;
use chains::ValidateStep;
use step::{Plugin, Step, Version};

/// How long the directory must be quiet before changes are acted on: an editor or `cp`
/// writing a file in several steps is seen once, complete.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// A node's plugins and chains.
pub struct Plugins {
    dir: PathBuf,
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// Every step that uses a plugin, by plugin name: a new version must init with each
    /// step's config before it replaces the running one.
    steps: BTreeMap<String, Vec<(&'static str, Arc<Step>)>>,
    pub validate: ValidateChain,
    pub evict: Option<Arc<WasmEviction>>,
    /// Replication filters, each for the replicas its labels select.
    pub replicate: Vec<Arc<FilterStep>>,
    generation: AtomicU64,
    watcher: Mutex<
        Option<
            notify_debouncer_full::Debouncer<
                notify::RecommendedWatcher,
                notify_debouncer_full::RecommendedCache,
            >,
        >,
    >,
}

impl Plugins {
    /// Load every plugin the chains of `config` name and build the chains. Fails if a file is
    /// missing, invalid, lacks the hook its chain needs, or refuses its step's config.
    /// Compiled code is cached in `cache_dir`.
    pub fn load(config: &PluginsConfig, cache_dir: Option<&Path>) -> Result<Plugins, LoadError> {
        let runtime = Arc::new(Runtime::new(config.limits, cache_dir)?);
        let mut plugins = Plugins {
            dir: config.dir.clone(),
            plugins: BTreeMap::new(),
            steps: BTreeMap::new(),
            validate: ValidateChain::default(),
            evict: None,
            replicate: Vec::new(),
            generation: AtomicU64::new(0),
            watcher: Mutex::new(None),
        };
        for step in &config.validate {
            let built = plugins.step(&runtime, &step.plugin, &step.config, "validate")?;
            plugins.validate.steps.push(ValidateStep {
                step: built,
                on_error: step.on_error,
            });
        }
        if let Some(step) = &config.evict {
            let built = plugins.step(&runtime, &step.plugin, &step.config, "evict")?;
            plugins.evict = Some(Arc::new(WasmEviction::new(built)));
        }
        for step in &config.replicate {
            let built = plugins.step(&runtime, &step.plugin, &step.config, "replicate")?;
            plugins.replicate.push(Arc::new(FilterStep {
                step: built,
                labels: step.labels.clone(),
                on_error: step.on_error,
            }));
        }
        Ok(plugins)
    }

    /// The step of `chain` running `name` with `config`, loading the plugin on first use.
    fn step(
        &mut self,
        runtime: &Arc<Runtime>,
        name: &str,
        config: &serde_json::Value,
        chain: &'static str,
    ) -> Result<Arc<Step>, LoadError> {
        let plugin = match self.plugins.get(name) {
            Some(plugin) => Arc::clone(plugin),
            None => {
                let path = self.dir.join(format!("{name}.wasm"));
                if !path.exists() {
                    return Err(LoadError::Missing {
                        name: name.to_owned(),
                        path,
                    });
                }
                let version = self.compile(runtime, name, &path)?;
                let plugin = Arc::new(Plugin {
                    name: name.into(),
                    path,
                    current: ArcSwap::from_pointee(version),
                    stats: step::Stats::default(),
                    file_removed: Default::default(),
                    last_error: Mutex::new(None),
                });
                self.plugins.insert(name.to_owned(), Arc::clone(&plugin));
                plugin
            }
        };
        check_hook(name, &plugin.current.load(), chain)?;
        let config = wasmkv_guest::abi::encode(config)
            .map_err(|e| LoadError::Runtime(format!("encoding the config of {name}: {e}")))?;
        let step = Arc::new(Step::new(plugin, config, Arc::clone(runtime)));
        step.try_init(&step.plugin.current.load())?;
        self.steps
            .entry(name.to_owned())
            .or_default()
            .push((chain, Arc::clone(&step)));
        Ok(step)
    }

    fn compile(&self, runtime: &Runtime, name: &str, path: &Path) -> Result<Version, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            name: name.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let compiled = runtime.compile(name, &bytes)?;
        Ok(Version {
            compiled,
            sha256,
            loaded_at_ms: crate::clock::now_ms(),
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// The replication filters that apply to a replica with these labels.
    pub fn filters_for(&self, labels: &BTreeMap<String, String>) -> Vec<Arc<FilterStep>> {
        self.replicate
            .iter()
            .filter(|f| f.applies_to(labels))
            .cloned()
            .collect()
    }

    /// Load the file of plugin `name` again if it changed: compile, check, init with every
    /// step's config, then swap it in. Returns whether a new version is running; on any
    /// failure the last good version keeps running and the error is kept for the list.
    pub fn reload(&self, name: &str) -> Result<bool, LoadError> {
        let Some(plugin) = self.plugins.get(name) else {
            return Ok(false);
        };
        let steps = self.steps.get(name).map(Vec::as_slice).unwrap_or_default();
        let Some((_, first)) = steps.first() else {
            return Ok(false);
        };
        let outcome = (|| -> Result<bool, LoadError> {
            let version = self.compile(&first.runtime(), name, &plugin.path)?;
            if version.sha256 == plugin.current.load().sha256 {
                return Ok(false);
            }
            for (chain, step) in steps {
                check_hook(name, &version, chain)?;
                step.try_init(&version)?;
            }
            let sha = version.sha256.clone();
            plugin.current.store(Arc::new(version));
            tracing::info!(plugin = name, sha256 = %sha, "plugin reloaded");
            Ok(true)
        })();
        plugin.file_removed.store(false, Ordering::Relaxed);
        match &outcome {
            Ok(_) => *plugin.last_error.lock() = None,
            Err(e) => {
                tracing::error!(plugin = name, error = %e, "new plugin file refused; the last good version keeps running");
                *plugin.last_error.lock() = Some(e.to_string());
            }
        }
        outcome
    }

    /// Watch the plugin directory and reload plugins whose files change.
    pub fn watch(self: &Arc<Self>) -> Result<(), LoadError> {
        use notify::RecursiveMode;
        let weak = Arc::downgrade(self);
        let mut debouncer = notify_debouncer_full::new_debouncer(
            DEBOUNCE,
            None,
            move |events: notify_debouncer_full::DebounceEventResult| {
                let Some(plugins) = weak.upgrade() else {
                    return;
                };
                let Ok(events) = events else {
                    return;
                };
                let mut names: Vec<String> = events
                    .iter()
                    .flat_map(|e| e.paths.iter())
                    .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                    .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
                    .collect();
                names.sort();
                names.dedup();
                for name in names {
                    plugins.file_changed(&name);
                }
            },
        )
        .map_err(|e| LoadError::Runtime(format!("cannot watch {}: {e}", self.dir.display())))?;
        debouncer
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| LoadError::Runtime(format!("cannot watch {}: {e}", self.dir.display())))?;
        *self.watcher.lock() = Some(debouncer);
        Ok(())
    }

    fn file_changed(&self, name: &str) {
        let Some(plugin) = self.plugins.get(name) else {
            return;
        };
        if plugin.path.exists() {
            let _ = self.reload(name);
        } else {
            plugin.file_removed.store(true, Ordering::Relaxed);
            tracing::warn!(
                plugin = name,
                "plugin file deleted; the last good version keeps running"
            );
        }
    }

    /// Every loaded plugin with its version, hooks, chains and call figures.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.plugins
            .iter()
            .map(|(name, plugin)| {
                let version = plugin.current.load();
                let stats = &plugin.stats;
                let (p50, p99) = stats.percentiles();
                let mut chains: Vec<String> = self
                    .steps
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|(chain, _)| (*chain).to_owned())
                    .collect();
                chains.dedup();
                let state = if plugin.file_removed.load(Ordering::Relaxed) {
                    "file removed; running the last good version"
                } else if stats.backed_off() {
                    "backed off after repeated failures"
                } else if plugin.last_error.lock().is_some() {
                    "new file refused; running the last good version"
                } else {
                    "loaded"
                };
                PluginInfo {
                    name: name.clone(),
                    sha256: version.sha256.clone(),
                    loaded_at_ms: version.loaded_at_ms,
                    hooks: version
                        .hooks()
                        .names()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    chains,
                    calls: stats.calls.load(Ordering::Relaxed),
                    errors: stats.errors.load(Ordering::Relaxed),
                    traps: stats.traps.load(Ordering::Relaxed),
                    timeouts: stats.timeouts.load(Ordering::Relaxed),
                    p50_ns: p50,
                    p99_ns: p99,
                    state: state.into(),
                    last_error: plugin.last_error.lock().clone().unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// A plugin in `chain` must export that chain's hook.
fn check_hook(name: &str, version: &Version, chain: &str) -> Result<(), LoadError> {
    let hooks = version.hooks();
    let (has, hook) = match chain {
        "validate" => (hooks.validate, "wasmkv_validate"),
        "evict" => (hooks.evict, "wasmkv_evict"),
        _ => (hooks.filter, "wasmkv_filter"),
    };
    if has {
        return Ok(());
    }
    Err(LoadError::Abi {
        name: name.to_owned(),
        problem: format!("it is in the {chain} chain but does not export {hook}"),
    })
}

#[cfg(test)]
mod tests;
