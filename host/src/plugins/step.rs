//! A loaded plugin (its current version, swapped atomically on reload), its call statistics,
//! and a chain step: a plugin with a config and a pool of instances initialized with it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmkv_guest::abi;

use super::error::{CallError, FailureKind, LoadError};
use super::instance::Instance;
use super::runtime::{Compiled, Hooks, Runtime};

/// Failures in a row after which a plugin is backed off.
const BACKOFF_AFTER: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Idle instances kept per step: enough that concurrent requests rarely instantiate.
const POOL_SIZE: usize = 8;

/// One compiled version of a plugin file.
pub struct Version {
    pub compiled: Compiled,
    pub sha256: String,
    pub loaded_at_ms: u64,
    /// Tells pooled instances of an older version apart.
    pub generation: u64,
}

impl Version {
    pub fn hooks(&self) -> Hooks {
        self.compiled.hooks
    }
}

/// Call counters and timings of a plugin, across versions and steps.
pub struct Stats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    /// Call times in nanoseconds.
    pub times: Mutex<Histogram<u64>>,
    failures_in_a_row: AtomicU32,
    backoff_until: Mutex<Option<Instant>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            times: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds"),
            ),
            failures_in_a_row: AtomicU32::new(0),
            backoff_until: Mutex::new(None),
        }
    }
}

impl Stats {
    fn record(&self, elapsed: Duration, failure: Option<FailureKind>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .times
            .lock()
            .record(elapsed.as_nanos().clamp(1, 60_000_000_000) as u64);
        let Some(kind) = failure else {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            return;
        };
        match kind {
            FailureKind::Timeout => &self.timeouts,
            FailureKind::Trap => &self.traps,
            FailureKind::Error => &self.errors,
        }
        .fetch_add(1, Ordering::Relaxed);
        let in_a_row = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= BACKOFF_AFTER {
            let backoff = Duration::from_millis(100)
                .saturating_mul(1 << (in_a_row - BACKOFF_AFTER).min(16))
                .min(MAX_BACKOFF);
            *self.backoff_until.lock() = Some(Instant::now() + backoff);
        }
    }

    /// Whether calls are skipped now because of repeated failures.
    pub fn backed_off(&self) -> bool {
        self.backoff_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    /// p50 and p99 call time in ns.
    pub fn percentiles(&self) -> (u64, u64) {
        let times = self.times.lock();
        (times.value_at_quantile(0.5), times.value_at_quantile(0.99))
    }
}

/// A plugin by name: its file, its current version, its statistics.
pub struct Plugin {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub current: ArcSwap<Version>,
    pub stats: Stats,
    /// The file was deleted: the last good version keeps running.
    pub file_removed: AtomicBool,
    /// Why the last reload was refused, if it was.
    pub last_error: Mutex<Option<String>>,
}

/// A chain step: `plugin` with its config and a pool of instances initialized with it.
pub struct Step {
    pub plugin: Arc<Plugin>,
    /// The step's config as CBOR, for `wasmkv_init`.
    pub config: Vec<u8>,
    runtime: Arc<Runtime>,
    pool: Mutex<Vec<(u64, Instance)>>,
}

impl Step {
    pub fn new(plugin: Arc<Plugin>, config: Vec<u8>, runtime: Arc<Runtime>) -> Step {
        Step {
            plugin,
            config,
            runtime,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The runtime this step's instances run in.
    pub fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.runtime)
    }

    /// An instance of `version` initialized with this step's config: the check a new file
    /// passes before it replaces the running version.
    pub fn try_init(&self, version: &Version) -> Result<(), LoadError> {
        Instance::new(
            &self.runtime,
            &version.compiled,
            &self.plugin.name,
            &self.config,
        )
        .map(drop)
    }

    /// Call `hook` with `input` on an instance of the current version and decode its reply.
    /// Any failure (trap, deadline, memory cap, an error reply, garbage) is counted and the
    /// instance discarded; repeated failures back the plugin off.
    pub fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        hook: &str,
        input: &I,
    ) -> Result<O, CallError> {
        let stats = &self.plugin.stats;
        if stats.backed_off() {
            return Err(CallError::BackedOff);
        }
        let input = abi::encode(input).map_err(|e| CallError::BadOutput(e.to_string()))?;
        // A guard, not an Arc clone: no shared reference count written on every call.
        let version = self.plugin.current.load();
        let pooled = {
            let mut pool = self.pool.lock();
            pool.retain(|(generation, _)| *generation == version.generation);
            pool.pop()
        };
        let started = Instant::now();
        let outcome = pooled
            .map(|(_, instance)| Ok(instance))
            .unwrap_or_else(|| {
                Instance::new(
                    &self.runtime,
                    &version.compiled,
                    &self.plugin.name,
                    &self.config,
                )
                .map_err(|e| CallError::Trap(e.to_string()))
            })
            .and_then(|mut instance| {
                let reply = instance.call(&self.runtime, hook, &input)?;
                let decoded = abi::decode_reply::<O>(&reply).map_err(|e| match e {
                    abi::ReplyError::Guest(message) => CallError::Guest(message),
                    other => CallError::BadOutput(other.to_string()),
                })?;
                Ok((instance, decoded))
            });
        stats.record(
            started.elapsed(),
            outcome.as_ref().err().map(CallError::kind),
        );
        let (instance, decoded) = outcome?;
        let mut pool = self.pool.lock();
        if pool.len() < POOL_SIZE {
            pool.push((version.generation, instance));
        }
        Ok(decoded)
    }
}
