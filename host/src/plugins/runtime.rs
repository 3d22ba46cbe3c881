//! The one wasmtime engine of a node, its sandbox settings, and compiling plugin files into
//! checked modules.
//!
//! Every call runs under three limits: a memory cap per instance (a `ResourceLimiter`), a
//! deadline (epoch interruption: a ticker thread advances the engine's epoch every
//! millisecond, and a call may run for `deadline` worth of ticks), and optionally fuel.
//! Compiled code is cached on disk by wasmtime, keyed by the module's hash and the engine's
//! version and settings, so a restart does not recompile unchanged plugins.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Caller, Config, Engine, ExternType, FuncType, InstancePre, Linker, Module,
    StoreLimits, ValType,
};

use super::error::LoadError;
use crate::config::PluginLimits;

/// How often the engine's epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What a store carries for the host functions and the limiter.
pub struct HostState {
    pub limits: StoreLimits,
    /// The plugin's name, for its log lines.
    pub plugin: Arc<str>,
}

/// The engine, the linker of the `wasmkv` imports, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    pub limits: PluginLimits,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

/// Hooks a module exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub init: bool,
    pub validate: bool,
    pub evict: bool,
    pub filter: bool,
}

impl Hooks {
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.validate, "validate"),
            (self.evict, "evict"),
            (self.filter, "filter"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
}

/// A compiled module that passed the ABI checks, ready to instantiate.
pub struct Compiled {
    pub pre: InstancePre<HostState>,
    pub hooks: Hooks,
}

impl Runtime {
    /// An engine with the sandbox `limits`, caching compiled code under `cache_dir`
    /// (`None`: no cache).
    pub fn new(limits: PluginLimits, cache_dir: Option<&Path>) -> Result<Runtime, LoadError> {
        let runtime_error = |e: wasmtime::Error| LoadError::Runtime(format!("{e:#}"));
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(limits.fuel > 0);
        if let Some(dir) = cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(Cache::new(cache).map_err(runtime_error)?));
        }
        let engine = Engine::new(&config).map_err(runtime_error)?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("wasmkv", "now_ms", || crate::clock::now_ms() as i64)
            .map_err(runtime_error)?;
        linker
            .func_wrap("wasmkv", "log", plugin_log)
            .map_err(runtime_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("wasmkv-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Runtime(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Runtime {
            engine,
            linker,
            limits,
            stop,
            ticker: Some(ticker),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Epoch ticks a call may run: the deadline, rounded up, plus one because the current
    /// tick may be nearly over when the call starts.
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_micros().max(1);
        (self.limits.deadline.as_micros().div_ceil(tick) as u64).max(1) + 1
    }

    /// Compile `bytes` and check them against ABI v1: only `wasmkv` imports, the marker and
    /// the required exports with their exact types, at least one hook.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled, LoadError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| LoadError::Compile {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let abi = |problem: String| LoadError::Abi {
            name: name.to_owned(),
            problem,
        };
        for import in module.imports() {
            let allowed = import.module() == "wasmkv"
                && matches!(import.name(), "log" | "now_ms")
                && matches!(import.ty(), ExternType::Func(_));
            if !allowed {
                return Err(LoadError::ForbiddenImport {
                    name: name.to_owned(),
                    module: import.module().to_owned(),
                    field: import.name().to_owned(),
                });
            }
        }
        let func = |params: &[ValType], results: &[ValType]| {
            FuncType::new(
                &self.engine,
                params.iter().cloned(),
                results.iter().cloned(),
            )
        };
        let call = func(&[ValType::I32, ValType::I32], &[ValType::I64]);
        let required = [
            ("wasmkv_abi_v1", func(&[], &[ValType::I32])),
            ("wasmkv_alloc", func(&[ValType::I32], &[ValType::I32])),
            ("wasmkv_free", func(&[ValType::I32, ValType::I32], &[])),
        ];
        let export_type = |wanted: &str| {
            module
                .exports()
                .find(|e| e.name() == wanted)
                .map(|e| e.ty())
        };
        match export_type("memory") {
            Some(ExternType::Memory(_)) => {}
            Some(_) => return Err(abi("its export `memory` is not a memory".into())),
            None => return Err(abi("it does not export `memory`".into())),
        }
        for (export, ty) in &required {
            check_func(export_type(export), export, ty).map_err(abi)?;
        }
        let optional = |export: &str| -> Result<bool, LoadError> {
            match export_type(export) {
                None => Ok(false),
                found => check_func(found, export, &call).map(|()| true).map_err(abi),
            }
        };
        let hooks = Hooks {
            init: optional("wasmkv_init")?,
            validate: optional("wasmkv_validate")?,
            evict: optional("wasmkv_evict")?,
            filter: optional("wasmkv_filter")?,
        };
        if hooks.names().is_empty() {
            return Err(abi(
                "it exports no hook (wasmkv_validate, wasmkv_evict or wasmkv_filter)".into(),
            ));
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| abi(format!("cannot be linked: {e:#}")))?;
        Ok(Compiled { pre, hooks })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

fn check_func(found: Option<ExternType>, name: &str, wanted: &FuncType) -> Result<(), String> {
    match found {
        Some(ExternType::Func(ty)) if FuncType::eq(&ty, wanted) => Ok(()),
        Some(ExternType::Func(ty)) => Err(format!(
            "its export `{name}` has type {ty}, ABI v1 wants {wanted}"
        )),
        Some(_) => Err(format!("its export `{name}` is not a function")),
        None => Err(format!("it does not export `{name}`")),
    }
}

/// Longest plugin log line kept; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// The `wasmkv.log` import: one line into the node's log, tagged with the plugin's name.
fn plugin_log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) {
    let Some(memory) = caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
    else {
        return;
    };
    let len = (len as u32 as usize).min(MAX_LOG_LINE);
    let mut buf = vec![0u8; len];
    if memory.read(&caller, ptr as u32 as usize, &mut buf).is_err() {
        return;
    }
    let line = String::from_utf8_lossy(&buf);
    let plugin = &*caller.data().plugin;
    match level {
        1 => tracing::error!(plugin, "{line}"),
        2 => tracing::warn!(plugin, "{line}"),
        3 => tracing::info!(plugin, "{line}"),
        4 => tracing::debug!(plugin, "{line}"),
        _ => tracing::trace!(plugin, "{line}"),
    }
}
