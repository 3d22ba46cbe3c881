//! The durable store: commits every change through the WAL, then applies it to the engine.
//!
//! `Db` is the one place where `wal` and `storage` meet. A write takes the sequencer lock just
//! long enough to check its preconditions (compare-and-set, limits), make room by eviction if
//! needed, and append its record; it then waits for the WAL's group commit outside any lock,
//! and finally applies every committed record in LSN order. Expiry and eviction are writes
//! like any other (Expire and Evict records), so they reach the log — and later replicas.
//!
//! A data directory holds `LOCK`, `wal/` (segments) and `snap/` (snapshots).

mod apply;
mod dirlock;
mod disk;
mod error;
mod maintenance;
mod sequencer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

pub use error::{DbError, ErrorKind};

use crate::clock::now_ms;
use crate::storage::{Engine, EngineOptions, EvictionPolicy, Evictor, Item, builtin_policy};
use crate::wal::{self, Command, Mutation, SyncPolicy, Wal, WalOptions};
use dirlock::DirLock;
use sequencer::{Plan, Sequencer};

/// How a store is opened. `Default` is a primary in `./data` with `sync: interval 1s`.
#[derive(Clone)]
pub struct DbOptions {
    pub dir: PathBuf,
    pub wal: WalOptions,
    pub engine: EngineOptions,
    /// Most entries kept (0 = no limit).
    pub max_entries: u64,
    /// Most bytes kept, as counted by `storage::entry_cost` (0 = no limit).
    pub max_memory: u64,
    /// What to drop when a limit is reached.
    pub eviction_policy: Arc<dyn EvictionPolicy>,
    /// Candidates sampled per eviction round.
    pub eviction_samples: usize,
    /// Writes are refused while the WAL's volume has less free space than this.
    pub disk_reserve: u64,
    /// Take a snapshot once this many WAL bytes were written since the last one (0 = never).
    pub snapshot_after_bytes: u64,
    /// Delete expired keys in the background (the primary does; replicas leave it to it).
    pub active_expiry: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            dir: PathBuf::from("data"),
            wal: WalOptions::default(),
            engine: EngineOptions::default(),
            max_entries: 0,
            max_memory: 0,
            eviction_policy: builtin_policy("lru").expect("lru is built in"),
            eviction_samples: 5,
            disk_reserve: 64 << 20,
            snapshot_after_bytes: 256 << 20,
            active_expiry: true,
        }
    }
}

impl DbOptions {
    /// Options for a store in `dir` with the given sync policy, everything else default.
    pub fn new(dir: impl Into<PathBuf>, sync: SyncPolicy) -> Self {
        DbOptions {
            dir: dir.into(),
            wal: WalOptions {
                sync,
                ..WalOptions::default()
            },
            ..DbOptions::default()
        }
    }
}

/// Preconditions and expiry of a single set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Absolute expiry in wall-clock ms since the epoch (0 = never).
    pub expires_at_ms: u64,
    /// Compare-and-set: the key's current version must be this (0 = the key must not exist).
    pub if_version: Option<u64>,
}

impl SetOptions {
    /// Expire `ttl` from now.
    pub fn ttl(ttl: Duration) -> Self {
        SetOptions {
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as u64),
            if_version: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub found: bool,
    /// The delete's LSN, or the store's applied LSN when there was nothing to delete.
    pub lsn: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestInfo {
    pub digest: [u8; 16],
    pub keys: u64,
    /// The applied LSN the digest was taken at (writes running meanwhile may be included).
    pub lsn: u64,
}

/// Figures for status pages and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbStats {
    pub applied_lsn: u64,
    pub keys: u64,
    pub memory_bytes: u64,
    pub wal: wal::WalStats,
    pub disk_free_bytes: u64,
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub snapshot_lsn: u64,
    /// Set once an I/O failure stopped writes.
    pub failure: Option<String>,
}

/// What recovery did at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub snapshot_lsn: u64,
    pub snapshot_entries: u64,
    pub replayed_records: u64,
    pub elapsed: Duration,
}

pub struct Db {
    inner: Arc<Inner>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

struct Inner {
    opts: DbOptions,
    engine: Engine,
    wal: Wal,
    seq: Mutex<Sequencer>,
    applied_lsn: AtomicU64,
    /// The same LSN for async waiters (watchers, and later replication).
    applied_tx: tokio::sync::watch::Sender<u64>,
    snapshot_lsn: AtomicU64,
    /// WAL size right after the last snapshot: automatic snapshots count growth from here.
    snapshot_wal_bytes: AtomicU64,
    snapshot_running: AtomicBool,
    /// The automatic snapshot in progress, joined on close so none outlives the store.
    snapshot_thread: Mutex<Option<JoinHandle<()>>>,
    snapshot_lock: Mutex<()>,
    disk_free: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    stop: maintenance::Stop,
    /// Whether this store deletes expired keys itself: a primary does, a replica waits for
    /// its primary's deletes. Changes when a node is promoted or starts to follow.
    active_expiry: AtomicBool,
    /// Released by `close`, so a closed store frees its directory even while handles to it
    /// linger.
    lock: Mutex<Option<DirLock>>,
}

impl Db {
    /// Lock the directory, load the newest snapshot, replay the WAL after it, and start the
    /// background work (expiry, disk checks, automatic snapshots).
    pub fn open(opts: DbOptions) -> Result<Db, DbError> {
        let started = Instant::now();
        std::fs::create_dir_all(&opts.dir).map_err(|source| DbError::Io {
            op: "create data directory",
            path: opts.dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&opts.dir)?;
        let engine = Engine::new(opts.engine.clone());
        let mut report = RecoveryReport::default();
        if let Some((lsn, path)) = wal::snapshot::newest(&snap_dir(&opts.dir))? {
            tracing::info!(snapshot = %path.display(), lsn, "loading snapshot");
            let mut progress = Progress::new("snapshot entries loaded");
            let info = wal::snapshot::load(&path, |e| {
                engine.set(&e.key, &e.value, e.expires_at_ms, e.version);
                progress.tick();
            })?;
            // The header's LSN is not covered by a checksum; the file name must agree, or a
            // flipped bit could make recovery skip (or discard) the log after it.
            if info.lsn != lsn {
                return Err(DbError::Wal(wal::WalError::CorruptSnapshot {
                    path,
                    reason: format!(
                        "its header says LSN {} but its name says LSN {lsn}",
                        info.lsn
                    ),
                }));
            }
            report.snapshot_lsn = info.lsn;
            report.snapshot_entries = info.entries;
        }
        let mut progress = Progress::new("WAL records replayed");
        let wal = Wal::open(
            &wal_dir(&opts.dir),
            opts.wal.clone(),
            report.snapshot_lsn,
            |record| {
                apply::apply(&engine, record.lsn, &record.command);
                progress.tick();
            },
        )?;
        report.replayed_records = progress.count;
        report.elapsed = started.elapsed();
        let applied = wal.last_lsn();
        tracing::info!(
            lsn = applied,
            keys = engine.len(),
            snapshot_entries = report.snapshot_entries,
            replayed = report.replayed_records,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "recovered"
        );
        let evictor = Evictor::new(opts.eviction_policy.clone(), opts.eviction_samples);
        let disk_free = disk::free_bytes(&opts.dir).unwrap_or(u64::MAX);
        let inner = Arc::new(Inner {
            engine,
            wal,
            seq: Mutex::new(Sequencer::new(
                evictor,
                sequencer::Limits {
                    max_entries: opts.max_entries,
                    max_memory: opts.max_memory,
                },
            )),
            applied_lsn: AtomicU64::new(applied),
            applied_tx: tokio::sync::watch::Sender::new(applied),
            snapshot_lsn: AtomicU64::new(report.snapshot_lsn),
            snapshot_wal_bytes: AtomicU64::new(0),
            snapshot_running: AtomicBool::new(false),
            snapshot_thread: Mutex::new(None),
            snapshot_lock: Mutex::new(()),
            disk_free: AtomicU64::new(disk_free),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            stop: maintenance::Stop::default(),
            active_expiry: AtomicBool::new(opts.active_expiry),
            lock: Mutex::new(Some(lock)),
            opts,
        });
        let maintenance = maintenance::spawn(Arc::clone(&inner)).map_err(|source| DbError::Io {
            op: "spawn maintenance thread for",
            path: inner.opts.dir.clone(),
            source,
        })?;
        Ok(Db {
            inner,
            maintenance: Mutex::new(Some(maintenance)),
            recovery: report,
        })
    }

    pub fn recovery(&self) -> RecoveryReport {
        self.recovery
    }

    /// The live value of `key`; expired keys are never returned, even before they are deleted.
    pub fn get(&self, key: &[u8]) -> Option<Item> {
        self.inner.engine.get(key, now_ms())
    }

    /// [`Db::get`] of several keys, in order; the values share one buffer.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<Item>> {
        self.inner.engine.get_many(keys, now_ms())
    }

    /// Set `key`; returns the write's LSN (the key's new version) once it is committed.
    pub fn set(&self, key: Bytes, value: Bytes, opts: SetOptions) -> Result<u64, DbError> {
        self.submit_set(key, value, opts)?.wait()
    }

    /// Delete `key`. Deleting a missing key logs nothing.
    pub fn delete(&self, key: Bytes) -> Result<DeleteOutcome, DbError> {
        self.submit_delete(key)?.wait()
    }

    /// Apply all `mutations` atomically, as one WAL record: all or none.
    pub fn write(&self, mutations: Vec<Mutation>) -> Result<u64, DbError> {
        self.submit_write(mutations)?.wait()
    }

    /// `set`, split in two: the write is checked and logged now, and the returned
    /// [`Submitted`] waits for it to commit (blocking, or as a future).
    pub fn submit_set(
        &self,
        key: Bytes,
        value: Bytes,
        opts: SetOptions,
    ) -> Result<Submitted<'_, u64>, DbError> {
        let command = Command::Set {
            key,
            value,
            expires_at_ms: opts.expires_at_ms,
        };
        let lsn = self.inner.submit(command, opts.if_version)?;
        Ok(self.submitted(Some(lsn), lsn))
    }

    /// `delete`, split in two like [`Db::submit_set`].
    pub fn submit_delete(&self, key: Bytes) -> Result<Submitted<'_, DeleteOutcome>, DbError> {
        let mut seq = self.inner.seq.lock();
        let now = now_ms();
        if seq.state(&self.inner.engine, &key, now).version(now) == 0 {
            let outcome = DeleteOutcome {
                found: false,
                lsn: self.applied_lsn(),
            };
            return Ok(self.submitted(None, outcome));
        }
        let lsn = self.inner.append(&mut seq, Command::Delete { key }, now)?;
        Ok(self.submitted(Some(lsn), DeleteOutcome { found: true, lsn }))
    }

    /// `write`, split in two like [`Db::submit_set`].
    pub fn submit_write(&self, mutations: Vec<Mutation>) -> Result<Submitted<'_, u64>, DbError> {
        let lsn = self.inner.submit(Command::Batch(mutations), None)?;
        Ok(self.submitted(Some(lsn), lsn))
    }

    /// Log and apply records shipped by a primary (`frames`: WAL records in the on-disk frame
    /// format), keeping the primary's LSNs so that both logs number the same history alike.
    /// Records this store already has are skipped (a batch sent again after a reconnect); a
    /// record past the next LSN is an error, as is any damage (checked before anything of the
    /// batch is logged). Returns the applied LSN once the batch is committed and applied.
    ///
    /// Limits and eviction are the primary's business: its Evict records arrive like any
    /// other, so a replica holds exactly what its primary holds.
    pub fn apply_replicated(&self, frames: &[u8]) -> Result<u64, DbError> {
        let mut records = Vec::new();
        let mut rest = frames;
        while !rest.is_empty() {
            let (record, used) = wal::decode_record(rest).map_err(DbError::BadReplicationStream)?;
            records.push(record);
            rest = &rest[used..];
        }
        let mut last = None;
        {
            let mut seq = self.inner.seq.lock();
            let now = now_ms();
            for record in records {
                let next = self.inner.wal.last_lsn() + 1;
                if record.lsn < next {
                    continue;
                }
                if record.lsn > next {
                    return Err(DbError::ReplicationGap {
                        last: next - 1,
                        got: record.lsn,
                    });
                }
                let plan = seq.plan(&self.inner.engine, &record.command, now);
                let lsn = self
                    .inner
                    .wal
                    .append(record.timestamp_ms, &record.command)?;
                debug_assert_eq!(lsn, record.lsn, "the log appends at its next LSN");
                seq.record(lsn, record.command, plan);
                last = Some(lsn);
            }
        }
        if let Some(lsn) = last {
            self.inner.finish(lsn)?;
        }
        Ok(self.applied_lsn())
    }

    fn submitted<T>(&self, lsn: Option<u64>, outcome: T) -> Submitted<'_, T> {
        Submitted {
            inner: &self.inner,
            lsn,
            outcome,
        }
    }

    /// Order-independent digest of the live data, for comparing nodes.
    pub fn digest(&self) -> DigestInfo {
        let lsn = self.applied_lsn();
        let digest = self.inner.engine.digest(now_ms());
        DigestInfo {
            digest: digest.hash,
            keys: digest.keys,
            lsn,
        }
    }

    /// Write a snapshot now and drop the WAL segments and older snapshots it makes redundant.
    /// Writers are not blocked: the engine is copied out shard by shard.
    pub fn snapshot(&self) -> Result<wal::snapshot::SnapshotInfo, DbError> {
        self.inner.snapshot()
    }

    /// Visits every stored entry, chunk by chunk, without blocking writers (see
    /// [`Engine::for_each_chunk`]): a copy for a full resync.
    pub fn for_each_chunk<E>(
        &self,
        f: impl FnMut(&[crate::storage::SnapshotEntry]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.inner.engine.for_each_chunk(f)
    }

    /// The LSN of the last write visible to readers.
    pub fn applied_lsn(&self) -> u64 {
        self.inner.applied_lsn.load(Ordering::Acquire)
    }

    /// Follows the applied LSN: `changed().await` wakes when new writes become visible.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    /// Committed records after `after_lsn`, read from the log files (the seed's
    /// `GetEntriesSince`), as far as they are applied: a record fdatasynced but not yet
    /// applied is neither read nor sent to a replica, so a replica (and a watch) is never
    /// ahead of the LSN this node reports. With `sync: always` the log's durable LSN passes
    /// the applied one for as long as the group's writers take to resume; replicas had
    /// applied LSNs their primary did not report yet (the chaos run's prefix oracle).
    pub fn read_log(&self, after_lsn: u64) -> Result<wal::LogReader, DbError> {
        Ok(self.inner.wal.read_from(after_lsn, self.applied_lsn())?)
    }

    /// Let `reader` (from [`Db::read_log`]) go on to what was committed and applied since.
    pub fn read_log_on(&self, reader: &mut wal::LogReader) {
        self.inner.wal.read_on(reader, self.applied_lsn());
    }

    /// Keep WAL segments from `lsn` on even when a snapshot covers them (replication uses it).
    pub fn set_retention_floor(&self, lsn: u64) {
        self.inner.wal.set_retention_floor(lsn);
    }

    /// Evict with `policy` (sampling `sample` candidates) from now on: a plugin reload.
    pub fn set_eviction_policy(&self, policy: Arc<dyn EvictionPolicy>, sample: usize) {
        self.inner
            .seq
            .lock()
            .evictor_mut()
            .set_policy(policy, sample);
    }

    /// Start or stop deleting expired keys in the background (see
    /// [`DbOptions::active_expiry`]).
    pub fn set_active_expiry(&self, enabled: bool) {
        self.inner.active_expiry.store(enabled, Ordering::Relaxed);
    }

    /// The lowest LSN the log can keep from while holding at most `bytes` of segments (the
    /// segment being written always counts): the replication backlog bound.
    pub fn log_floor_within(&self, bytes: u64) -> u64 {
        self.inner.wal.oldest_lsn_within(bytes)
    }

    /// Run one active-expiry cycle now (the background thread runs them every 100 ms).
    pub fn expire_now(&self) -> Result<u64, DbError> {
        self.inner.expire_cycle(Duration::from_secs(1))
    }

    pub fn stats(&self) -> DbStats {
        let inner = &self.inner;
        DbStats {
            applied_lsn: self.applied_lsn(),
            keys: inner.engine.len(),
            memory_bytes: inner.engine.memory(),
            wal: inner.wal.stats(),
            disk_free_bytes: inner.disk_free.load(Ordering::Relaxed),
            expired_keys: inner.expired.load(Ordering::Relaxed),
            evicted_keys: inner.evicted.load(Ordering::Relaxed),
            snapshot_lsn: inner.snapshot_lsn.load(Ordering::Relaxed),
            failure: inner.wal.failure().map(str::to_owned),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.opts.dir
    }

    /// Stop background work, flush and fsync the WAL, and release the data directory.
    /// Further writes fail with `Closed`; reads go on.
    pub fn close(&self) -> Result<(), DbError> {
        self.inner.stop.stop();
        if let Some(handle) = self.maintenance.lock().take() {
            let _ = handle.join();
        }
        // Only now: the maintenance thread can no longer start another one.
        if let Some(handle) = self.inner.snapshot_thread.lock().take() {
            let _ = handle.join();
        }
        let closed = self.inner.wal.close();
        if closed.is_ok() {
            self.inner.lock.lock().take();
        }
        Ok(closed?)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

/// A write that is logged but not yet committed. `wait` blocks until it is as durable as the
/// sync policy promises and visible to readers; `wait_async` does the same without holding
/// a thread while an fsync runs (for async servers).
#[must_use = "a submitted write is only acknowledged once waited for"]
pub struct Submitted<'a, T> {
    inner: &'a Inner,
    /// None when there was nothing to log (deleting a missing key).
    lsn: Option<u64>,
    outcome: T,
}

impl<T> Submitted<'_, T> {
    pub fn wait(self) -> Result<T, DbError> {
        if let Some(lsn) = self.lsn {
            self.inner.finish(lsn)?;
        }
        Ok(self.outcome)
    }

    pub async fn wait_async(self) -> Result<T, DbError> {
        if let Some(lsn) = self.lsn {
            self.inner.wal.commit_async(lsn).await?;
            self.inner.apply_committed();
        }
        Ok(self.outcome)
    }
}

impl Inner {
    /// Check a write's preconditions and log it; returns its LSN (not yet committed).
    fn submit(&self, command: Command, if_version: Option<u64>) -> Result<u64, DbError> {
        let mut seq = self.seq.lock();
        let now = now_ms();
        if let (Some(expected), Command::Set { key, .. }) = (if_version, &command) {
            let actual = seq.state(&self.engine, key, now).version(now);
            if actual != expected {
                return Err(DbError::VersionMismatch {
                    key: key.clone(),
                    expected,
                    actual,
                });
            }
        }
        self.append(&mut seq, command, now)
    }

    /// Check the disk reserve, make room under the limits, and append `command` to the log.
    /// Runs under the sequencer lock; returns the command's LSN.
    fn append(&self, seq: &mut Sequencer, command: Command, now: u64) -> Result<u64, DbError> {
        let free = self.disk_free.load(Ordering::Relaxed);
        if free < self.opts.disk_reserve {
            return Err(DbError::DiskReserve {
                dir: self.opts.dir.clone(),
                free,
                reserve: self.opts.disk_reserve,
            });
        }
        let plan = seq.plan(&self.engine, &command, now);
        self.make_room(seq, &plan, now)?;
        Ok(self.append_planned(seq, command, plan, now)?)
    }

    fn append_planned(
        &self,
        seq: &mut Sequencer,
        command: Command,
        plan: Plan,
        now: u64,
    ) -> Result<u64, wal::WalError> {
        let lsn = self.wal.append(now, &command)?;
        seq.record(lsn, command, plan);
        Ok(lsn)
    }

    /// Evict until the store, with every pending write and this `plan` applied, is within
    /// its limits. A write that does not grow the store is always let through, so deletes
    /// work even when full.
    fn make_room(&self, seq: &mut Sequencer, plan: &Plan, now: u64) -> Result<(), DbError> {
        let (max_entries, max_memory) = (self.opts.max_entries, self.opts.max_memory);
        if (max_entries == 0 && max_memory == 0)
            || (plan.entries_delta <= 0 && plan.memory_delta <= 0)
        {
            return Ok(());
        }
        // Bounded so that a policy that keeps choosing nothing useful cannot spin forever.
        for _ in 0..64 {
            let (entries, memory) = seq.projected(&self.engine);
            let entries_after = entries as i64 + plan.entries_delta;
            let memory_after = memory as i64 + plan.memory_delta;
            let over_entries = if max_entries > 0 {
                (entries_after - max_entries as i64).max(0) as u64
            } else {
                0
            };
            let over_memory = if max_memory > 0 {
                (memory_after - max_memory as i64).max(0) as u64
            } else {
                0
            };
            if over_entries == 0 && over_memory == 0 {
                return Ok(());
            }
            let average_cost = (memory / entries.max(1)).max(1);
            let need = over_entries
                .max(over_memory.div_ceil(average_cost))
                .clamp(1, 64) as usize;
            let keys: Vec<Bytes> = seq
                .pick_victims(&self.engine, need, plan)
                .map_err(DbError::LimitReached)?
                .into_iter()
                .map(|(key, _)| key)
                .collect();
            if keys.is_empty() {
                return Err(DbError::LimitReached(
                    crate::storage::EvictionError::NoCandidates,
                ));
            }
            let count = keys.len() as u64;
            let evict = Command::Evict(keys);
            let evict_plan = seq.plan(&self.engine, &evict, now);
            self.append_planned(seq, evict, evict_plan, now)?;
            self.evicted.fetch_add(count, Ordering::Relaxed);
        }
        Err(DbError::LimitReached(
            crate::storage::EvictionError::NoCandidates,
        ))
    }

    /// Wait for `lsn` to commit, then apply everything committed so far, in order.
    fn finish(&self, lsn: u64) -> Result<(), DbError> {
        self.wal.commit(lsn)?;
        self.apply_committed();
        Ok(())
    }

    fn apply_committed(&self) {
        let committed = self.wal.committed_lsn();
        if self.applied_lsn.load(Ordering::Acquire) >= committed {
            return;
        }
        let mut seq = self.seq.lock();
        if let Some(last) = seq.apply_through(&self.engine, committed) {
            self.applied_lsn.fetch_max(last, Ordering::AcqRel);
            self.applied_tx.send_replace(last);
        }
    }

    fn snapshot(&self) -> Result<wal::snapshot::SnapshotInfo, DbError> {
        let _one_at_a_time = self.snapshot_lock.lock();
        let started = Instant::now();
        let lsn = self.applied_lsn.load(Ordering::Acquire);
        let dir = snap_dir(&self.opts.dir);
        let mut writer = wal::snapshot::SnapshotWriter::create(&dir, lsn, now_ms())?;
        let mut entries = 0u64;
        self.engine.for_each_chunk(|chunk| {
            entries += chunk.len() as u64;
            chunk.iter().try_for_each(|entry| writer.write(entry))
        })?;
        // The copy may include writes applied while it was taken; with `sync: interval` or
        // `never` those may not be on disk yet. Sync them first, so a power loss can never
        // leave a snapshot that is ahead of the log (and LSNs that get reused).
        self.wal.sync()?;
        let path = writer.finish()?;
        wal::snapshot::remove_older_than(&dir, lsn)?;
        self.snapshot_lsn.store(lsn, Ordering::Relaxed);
        let removed = self.wal.remove_segments_through(lsn)?;
        self.snapshot_wal_bytes
            .store(self.wal.stats().bytes, Ordering::Relaxed);
        tracing::info!(
            snapshot = %path.display(),
            lsn,
            entries,
            removed_segments = removed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        Ok(wal::snapshot::SnapshotInfo {
            lsn,
            created_ms: now_ms(),
            entries,
        })
    }

    /// Delete expired keys: per shard, sample keys with a TTL and log an Expire record for the
    /// expired ones; repeat on a shard while more than a quarter of its sample had expired
    /// (Redis's rule: expired keys are then likely plentiful). Returns how many were deleted.
    fn expire_cycle(&self, budget: Duration) -> Result<u64, DbError> {
        const SAMPLE: usize = 20;
        let started = Instant::now();
        let mut total = 0;
        for shard in 0..self.engine.shard_count() {
            loop {
                let now = now_ms();
                let (lsn, sampled, expired) = {
                    let mut seq = self.seq.lock();
                    let sample = self.engine.sample_expired(shard, SAMPLE, now);
                    let keys: Vec<Bytes> = sample
                        .expired
                        .into_iter()
                        .map(|(key, _)| key)
                        .filter(|key| !seq.is_pending(key))
                        .collect();
                    let expired = keys.len();
                    let lsn = if keys.is_empty() {
                        None
                    } else {
                        let command = Command::Expire(keys);
                        let plan = seq.plan(&self.engine, &command, now);
                        Some(self.append_planned(&mut seq, command, plan, now)?)
                    };
                    (lsn, sample.sampled, expired)
                };
                if let Some(lsn) = lsn {
                    self.finish(lsn)?;
                    self.expired.fetch_add(expired as u64, Ordering::Relaxed);
                    total += expired as u64;
                }
                if sampled == 0 || expired * 4 <= sampled || started.elapsed() > budget {
                    break;
                }
            }
            if started.elapsed() > budget {
                break;
            }
        }
        Ok(total)
    }
}

/// Where the store in `dir` keeps its WAL segments.
fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

/// Where the store in `dir` keeps its snapshots (a replica's full resync writes one there).
pub fn snap_dir(dir: &Path) -> PathBuf {
    dir.join("snap")
}

/// Logs progress of long start-up work at most once a second.
struct Progress {
    what: &'static str,
    count: u64,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        Progress {
            what,
            count: 0,
            last: Instant::now(),
        }
    }

    fn tick(&mut self) {
        self.count += 1;
        if self.count.is_multiple_of(65536) && self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            tracing::info!(count = self.count, "recovering: {}", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrites_near_a_limit_are_counted_exactly_and_evict_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path(), SyncPolicy::Never);
        opts.disk_reserve = 0;
        opts.max_entries = 10;
        let db = Db::open(opts).unwrap();
        let set = |i: usize| Mutation::Set {
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from("v"),
            expires_at_ms: 0,
        };
        db.write((0..8).map(set).collect()).unwrap();
        // 8 sets of keys that exist: counted as 8 new keys, 16 would pass the limit, so the
        // plan looks each key up and finds that nothing grows.
        for _ in 0..20 {
            db.write((0..8).map(set).collect()).unwrap();
        }
        assert_eq!(db.stats().evicted_keys, 0);
        assert_eq!(db.inner.engine.len(), 8);
        // New keys past the limit still evict.
        db.write((8..12).map(set).collect()).unwrap();
        assert_eq!(db.inner.engine.len(), 10);
        assert_eq!(db.stats().evicted_keys, 2);
    }

    #[test]
    fn after_a_wal_failure_writes_are_refused_and_reads_see_only_durable_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path(), SyncPolicy::Always);
        opts.disk_reserve = 0;
        let db = Db::open(opts.clone()).unwrap();
        db.set(
            Bytes::from("k"),
            Bytes::from("durable"),
            SetOptions::default(),
        )
        .unwrap();
        db.inner.wal.break_active_file_for_test();

        let err = db
            .set(Bytes::from("k"), Bytes::from("lost"), SetOptions::default())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("restart"), "{err}");
        // The failed write never became visible, and later writes are refused too.
        assert_eq!(db.get(b"k").unwrap().value, "durable");
        let again = db.delete(Bytes::from("k")).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Unavailable);
        assert!(db.stats().failure.is_some());
        assert_eq!(db.get(b"k").unwrap().value, "durable");
        drop(db);

        let reopened = Db::open(opts).unwrap();
        assert_eq!(reopened.get(b"k").unwrap().value, "durable");
    }

    #[test]
    fn the_log_is_read_only_as_far_as_the_store_has_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path(), SyncPolicy::Always);
        opts.disk_reserve = 0;
        let db = Db::open(opts).unwrap();
        let set = |key: &'static str| {
            db.submit_set(Bytes::from(key), Bytes::from("v"), SetOptions::default())
                .unwrap()
        };
        set("a").wait().unwrap();
        let lsns = |reader: &mut wal::LogReader| -> Vec<u64> {
            reader.by_ref().map(|record| record.unwrap().lsn).collect()
        };
        // Logged and fdatasynced, but its writer has not applied it yet: what a replica or
        // a watch reads between a group's fsync and its writers resuming.
        let pending = set("b");
        db.inner.wal.commit(2).unwrap();
        assert_eq!(db.inner.wal.committed_lsn(), 2);
        assert_eq!(db.applied_lsn(), 1);
        let mut reader = db.read_log(0).unwrap();
        assert_eq!(
            lsns(&mut reader),
            [1],
            "a durable record not yet applied was read"
        );

        pending.wait().unwrap();
        db.read_log_on(&mut reader);
        assert_eq!(lsns(&mut reader), [2]);
    }

    #[test]
    fn a_snapshot_whose_header_disagrees_with_its_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path(), SyncPolicy::Never);
        opts.disk_reserve = 0;
        let db = Db::open(opts.clone()).unwrap();
        db.set(Bytes::from("k"), Bytes::from("v"), SetOptions::default())
            .unwrap();
        let info = db.snapshot().unwrap();
        drop(db);
        let snap = snap_dir(dir.path());
        std::fs::rename(
            wal::snapshot::snapshot_path(&snap, info.lsn),
            wal::snapshot::snapshot_path(&snap, info.lsn + 1_000_000),
        )
        .unwrap();
        let err = Db::open(opts)
            .err()
            .expect("a mismatched snapshot must be refused");
        assert!(err.to_string().contains("its name says LSN"), "{err}");
    }
}
