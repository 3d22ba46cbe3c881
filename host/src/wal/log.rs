//! The log writer: LSN assignment, group commit, segment rotation, sync policies, retention.
//!
//! Appending and making durable are two steps. `append` encodes a record into an in-memory
//! buffer under a short lock and hands back its LSN, so LSN order is exactly buffer order.
//! `commit(lsn)` then waits until that LSN is written (and, with `sync: always`, fdatasync'ed).
//! Whoever first gets the I/O lock becomes the leader: it takes the whole buffer — its own
//! record and every record appended since the last flush — writes it with one `write` and
//! syncs it with one `fdatasync`, while new appends keep filling a fresh buffer. Followers
//! find their LSN already covered and return. That is group commit: one fsync per batch of
//! concurrent writers, with no timer and no added latency for a lone writer.
//!
//! With `sync: interval` writers only wait for the `write` (a crashed process loses nothing);
//! a background thread fdatasyncs a duplicate of the file descriptor every interval without
//! holding the I/O lock, so a slow disk never stalls writers. With `never` the OS decides.
//!
//! Any failed write or fsync is sticky (PostgreSQL's lesson: after a failed fsync the page
//! cache may have dropped the dirty pages, so retrying would lie). The partial write is cut
//! off, every waiting and later writer gets `WalError::Failed`, and readers go on.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::{Result, WalError};
use super::reader::LogReader;
use super::record::{self, Command, Record};
use super::recovery;
use super::segment::{self, MAGIC, SegmentMeta};

/// When an acknowledged write reaches stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge after fdatasync; concurrent writers share one fsync.
    Always,
    /// Acknowledge after write(2); fdatasync in the background at this interval.
    Interval(Duration),
    /// Acknowledge after write(2); the OS flushes when it likes. (The log still writes back
    /// in the background every `WRITEBACK_BYTES`, for latency, not durability: see there.)
    Never,
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    pub sync: SyncPolicy,
    /// A new segment is started once the current one reaches this size.
    pub max_file_size: u64,
    /// With `sync: always`: whether an async writer may write and fdatasync its event
    /// loop's whole group on its own thread (`Wal::commit_async`). Right when one event loop
    /// takes every write, as on a node with one connection thread (Redis's shape): it saves
    /// two thread hand-offs per group, 9-27% more durable writes per second at 16
    /// connections and 18-35% at 50 (three A/B pairs). With several, one flusher gathers
    /// every thread's writers into one fdatasync, where a thread blocked in its own would
    /// stop its connections from joining the group (5-19% fewer at 16 connections with two
    /// threads, two pairs); only a lone writer syncs on its own thread then.
    pub inline_fsync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync: SyncPolicy::Interval(Duration::from_secs(1)),
            max_file_size: 64 << 20,
            inline_fsync: false,
        }
    }
}

/// Counters for metrics and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub last_lsn: u64,
    pub written_lsn: u64,
    pub durable_lsn: u64,
    pub segments: u64,
    pub bytes: u64,
    pub fsyncs: u64,
    pub fsync_nanos: u64,
}

/// Written but not yet fsynced bytes after which the background syncer writes them back
/// (`sync: interval` and `never`). Starting a new segment fdatasyncs the old one under the
/// I/O lock (so a crash can never keep a later segment's records but lose an earlier one's,
/// an LSN gap recovery would refuse), and the kernel leaves gigabytes dirty before it
/// writes back by itself: with 64 KiB values every writer stalled ~30 ms on each 64 MiB
/// segment's fdatasync. Written back as it goes, as RocksDB's `wal_bytes_per_sync` does, a
/// segment is mostly on disk when it is sealed (4 MiB is ~3 ms of a 1.6 GB/s disk).
pub(super) const WRITEBACK_BYTES: u64 = 4 << 20;

/// The longest fdatasync after which an async writer still does the next one on its event
/// loop's thread (`Shared::fsync_is_quick`): a read on that thread waits at most about this
/// long for it.
const INLINE_FSYNC_MAX: Duration = Duration::from_millis(1);

/// With `sync: always`, how far past the log's end the active segment's preallocated space is
/// kept written with zeros (see `Shared::initialize_ahead`).
pub(super) const INITIALIZE_AHEAD: u64 = 1 << 20;

/// What `initialize_ahead` writes: static, so it costs no memory (the zero page backs it).
static ZEROS: [u8; INITIALIZE_AHEAD as usize] = [0; INITIALIZE_AHEAD as usize];

pub struct Wal {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    dir: PathBuf,
    opts: WalOptions,
    pending: Mutex<Pending>,
    active: Mutex<Active>,
    segments: Mutex<Vec<SegmentMeta>>,
    /// Held while old segments are removed (`remove_segments_through`).
    trimming: Mutex<()>,
    written_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
    retention_floor: AtomicU64,
    failure: OnceLock<String>,
    stop: (Mutex<bool>, Condvar),
    /// Followers of a group commit wait here for the leader's flush to finish.
    progress: Mutex<()>,
    progressed: Condvar,
    /// The durable LSN for async waiters, sent after every flush (and on failure).
    durable_tx: tokio::sync::watch::Sender<u64>,
    /// Whether an async commit's flusher is running on the blocking pool.
    flusher: std::sync::atomic::AtomicBool,
    /// How long the last fdatasync took, in nanoseconds (`Shared::fsync_is_quick`).
    last_fsync_nanos: AtomicU64,
    /// Records in the last flush's write: how many writers shared it.
    last_group: AtomicU64,
    /// Bytes written since the background syncer last started an fdatasync (or a rotation
    /// synced them).
    unsynced: AtomicU64,
    /// `unsynced` passed `WRITEBACK_BYTES` and the syncer was woken (set and cleared under
    /// the `stop` lock's protocol: see `request_writeback`).
    writeback_due: std::sync::atomic::AtomicBool,
}

/// Records appended but not yet handed to the OS.
struct Pending {
    next_lsn: u64,
    buf: Vec<u8>,
    closed: bool,
}

/// The segment being appended to.
struct Active {
    file: File,
    path: PathBuf,
    len: u64,
    /// The file's bytes below this offset have been written (records or zeros), so writing
    /// there again changes no metadata (`Shared::initialize_ahead`).
    initialized: u64,
    /// The other half of the double buffer, swapped with `Pending::buf` on each flush.
    spare: Vec<u8>,
}

impl Wal {
    /// Open the log in `dir` (created if missing), replaying into `apply` every record with an
    /// LSN above `after_lsn` (the newest snapshot's), and continue after the last record.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        after_lsn: u64,
        apply: impl FnMut(Record),
    ) -> Result<Wal> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
        let recovered = recovery::recover(dir, after_lsn, apply)?;
        let mut segments = recovered.segments;
        let mut last_lsn = recovered.last_lsn;
        let tail_len = recovered.tail_len;
        if let Some(first) = segments.first()
            && last_lsn >= after_lsn
            && first.first_lsn > after_lsn + 1
        {
            return Err(WalError::Corrupt {
                path: first.path.clone(),
                offset: 0,
                lsn: after_lsn + 1,
                reason: format!(
                    "the snapshot ends at LSN {after_lsn} but the log starts at LSN {}: the \
                     records between them are missing",
                    first.first_lsn
                ),
            });
        }
        if last_lsn < after_lsn {
            // The snapshot is newer than the whole log (the log was repaired or fully folded
            // into it): the old segments hold nothing recovery needs and would leave an LSN gap.
            for seg in segments.drain(..) {
                std::fs::remove_file(&seg.path)
                    .map_err(|e| WalError::io("remove", &seg.path, e))?;
            }
            last_lsn = after_lsn;
        }
        let active = match segments.last() {
            Some(seg) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(|e| WalError::io("open segment", &seg.path, e))?;
                // Whatever lies past the intact log goes: preallocated zeros, and any bytes a
                // crash left after them (written after the last fdatasync, so promised to no
                // one) that a later crash could otherwise join up with new records.
                file.set_len(tail_len)
                    .map_err(|e| WalError::io("truncate", &seg.path, e))?;
                segment::preallocate(&file, &seg.path, opts.max_file_size);
                file.sync_all()
                    .map_err(|e| WalError::io("fsync", &seg.path, e))?;
                Active {
                    file,
                    path: seg.path.clone(),
                    len: tail_len,
                    initialized: tail_len,
                    spare: Vec::new(),
                }
            }
            None => {
                let (file, path) = segment::create(dir, last_lsn + 1, opts.max_file_size)?;
                segments.push(SegmentMeta {
                    first_lsn: last_lsn + 1,
                    path: path.clone(),
                });
                Active {
                    file,
                    path,
                    len: MAGIC.len() as u64,
                    initialized: MAGIC.len() as u64,
                    spare: Vec::new(),
                }
            }
        };
        // The active segment counts what is written in it, not its preallocated size.
        let sealed = &segments[..segments.len() - 1];
        let bytes = sealed
            .iter()
            .map(|s| std::fs::metadata(&s.path).map_or(0, |m| m.len()))
            .sum::<u64>()
            + active.len;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            opts: opts.clone(),
            pending: Mutex::new(Pending {
                next_lsn: last_lsn + 1,
                buf: Vec::new(),
                closed: false,
            }),
            active: Mutex::new(active),
            segments: Mutex::new(segments),
            trimming: Mutex::new(()),
            written_lsn: AtomicU64::new(last_lsn),
            durable_lsn: AtomicU64::new(last_lsn),
            bytes: AtomicU64::new(bytes),
            fsyncs: AtomicU64::new(0),
            fsync_nanos: AtomicU64::new(0),
            retention_floor: AtomicU64::new(u64::MAX),
            failure: OnceLock::new(),
            stop: (Mutex::new(false), Condvar::new()),
            progress: Mutex::new(()),
            progressed: Condvar::new(),
            durable_tx: tokio::sync::watch::Sender::new(last_lsn),
            flusher: std::sync::atomic::AtomicBool::new(false),
            last_fsync_nanos: AtomicU64::new(0),
            last_group: AtomicU64::new(0),
            unsynced: AtomicU64::new(0),
            writeback_due: std::sync::atomic::AtomicBool::new(false),
        });
        // `sync: always` fsyncs every group itself; the others sync (and write back) here.
        let syncer = if opts.sync == SyncPolicy::Always {
            None
        } else {
            let shared = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("wal-sync".into())
                    .spawn(move || shared.sync_in_background())
                    .map_err(|e| WalError::io("spawn sync thread", dir, e))?,
            )
        };
        Ok(Wal {
            shared,
            syncer: Mutex::new(syncer),
        })
    }

    /// Encode a record into the log buffer and return its LSN. Cheap: no I/O. The record is
    /// not acknowledged until `commit` returns for it.
    pub fn append(&self, timestamp_ms: u64, command: &Command) -> Result<u64> {
        let mut pending = self.shared.pending.lock();
        self.shared.check_usable()?;
        if pending.closed {
            return Err(WalError::Closed);
        }
        let lsn = pending.next_lsn;
        let start = pending.buf.len();
        record::encode(lsn, timestamp_ms, command, &mut pending.buf);
        let body = pending.buf.len() - start - record::FRAME_HEADER;
        if body > record::MAX_BODY {
            // Recovery would refuse such a record, so it is never written.
            pending.buf.truncate(start);
            return Err(WalError::RecordTooLarge {
                bytes: body,
                max: record::MAX_BODY,
            });
        }
        pending.next_lsn += 1;
        Ok(lsn)
    }

    /// Wait until `lsn` is as safe as the sync policy promises (written, or written and synced).
    ///
    /// One caller at a time is the leader and does the I/O for everything appended so far.
    /// With fsync, the others wait on a condition variable, not on the I/O lock, so when the
    /// leader's fsync completes every writer it covered returns at once instead of queueing
    /// behind the next leader's fsync.
    pub fn commit(&self, lsn: u64) -> Result<()> {
        let shared = &*self.shared;
        let sync = shared.opts.sync == SyncPolicy::Always;
        let covered = || {
            let mark = if sync {
                &shared.durable_lsn
            } else {
                &shared.written_lsn
            };
            mark.load(Ordering::Acquire) >= lsn
        };
        if !sync {
            // Without fsync the lock is held for one write(2): brief enough that waiting on
            // the lock itself (parking_lot spins before it parks) beats a condvar hand-off.
            if covered() {
                return Ok(());
            }
            let mut active = shared.active.lock();
            if covered() {
                return Ok(());
            }
            shared.check_usable()?;
            return shared.flush(&mut active, false);
        }
        loop {
            if covered() {
                return Ok(());
            }
            shared.check_usable()?;
            if let Some(flushed) = shared.lead(lsn) {
                flushed?;
                continue;
            }
            let mut guard = shared.progress.lock();
            if covered() {
                return Ok(());
            }
            if shared.active.is_locked() {
                // The timeout only matters when the lock holder is the interval syncer taking
                // a descriptor copy, which does not notify.
                shared
                    .progressed
                    .wait_for(&mut guard, Duration::from_millis(1));
            }
        }
    }

    /// `commit` for async callers. Every policy first yields once: the other tasks ready on
    /// this event loop then log their writes, and one `write(2)` (and with `sync: always` one
    /// fdatasync) carries them all, as Redis writes and fsyncs its AOF once per event-loop
    /// turn ([`crate::turn`]). Without fsync, `commit` then writes inline. With `sync: always` the first writer
    /// to resume writes and fdatasyncs the group on its own thread while the disk is quick
    /// (`Shared::fsync_is_quick`); otherwise one flusher on the blocking pool writes and
    /// fsyncs whatever is appended, again and again while more arrives, and the tasks wait on
    /// a watch, not a thread, woken after each fsync.
    pub async fn commit_async(&self, lsn: u64) -> Result<()> {
        if self.shared.opts.sync != SyncPolicy::Always {
            if self.shared.written_lsn.load(Ordering::Acquire) < lsn {
                crate::turn::yield_to_ready_tasks().await;
            }
            return self.commit(lsn);
        }
        let mut durable = self.shared.durable_tx.subscribe();
        let mut turn_over = false;
        loop {
            if self.shared.durable_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            self.shared.check_usable()?;
            if !self.shared.flusher.load(Ordering::Acquire) {
                if !turn_over {
                    // Nobody is flushing, so this writer would start a flush. It yields once
                    // first: the other writers ready on this event loop then log theirs, and
                    // one fsync carries them all, as Redis fsyncs its AOF once per event-loop
                    // turn. Started at once, a flush took the first writer or two of a turn
                    // and the rest waited for the next one: at 50 connections on one thread
                    // the fsyncs alternated between 2-5 records and 30. It waits past the
                    // loop's next poll for I/O too (`yield_now`, not `turn`), so that the
                    // writes that poll reads join the fsync, which costs more than the wait.
                    tokio::task::yield_now().await;
                    turn_over = true;
                    continue;
                }
                // Write and fdatasync the turn's group on this thread, as Redis's event loop
                // does: handing it to the flusher and the result back costs two thread
                // wake-ups (50-75 µs each on the test machine, a third of a 250 µs
                // fdatasync). Nothing else on this event loop runs meanwhile, which
                // `fsync_is_quick` bounds.
                if self.shared.may_sync_inline(lsn)
                    && let Some(flushed) = self.shared.lead(lsn)
                {
                    flushed?;
                    continue;
                }
                // A slow disk, or the I/O lock is taken (by a leader, which wakes the waiters
                // when done, or by a snapshot's flush, which does not): the flusher waits for
                // the lock if need be, flushes, and wakes us.
                if !self.shared.flusher.swap(true, Ordering::AcqRel) {
                    let shared = Arc::clone(&self.shared);
                    tokio::task::spawn_blocking(move || shared.flush_until_idle());
                }
            }
            if durable.changed().await.is_err() {
                return Err(WalError::Closed);
            }
        }
    }

    /// The highest LSN that is acknowledged-safe under the sync policy: what readers of the
    /// log (replication) may see.
    pub fn committed_lsn(&self) -> u64 {
        match self.shared.opts.sync {
            SyncPolicy::Always => self.shared.durable_lsn.load(Ordering::Acquire),
            _ => self.shared.written_lsn.load(Ordering::Acquire),
        }
    }

    /// The LSN the next append will get, minus one.
    pub fn last_lsn(&self) -> u64 {
        self.shared.pending.lock().next_lsn - 1
    }

    /// Read the committed records after `after_lsn` and up to `through`, in order.
    pub fn read_from(&self, after_lsn: u64, through: u64) -> Result<LogReader> {
        let segments = self.shared.segments.lock().clone();
        LogReader::new(segments, after_lsn, through.min(self.committed_lsn()))
    }

    /// Let `reader` go on to what was committed since it was made, up to `through` (see
    /// `LogReader::extend`).
    pub fn read_on(&self, reader: &mut LogReader, through: u64) {
        let segments = self.shared.segments.lock().clone();
        reader.extend(segments, through.min(self.committed_lsn()));
    }

    /// Replication sets this to the lowest LSN a connected replica still needs; the segments
    /// holding it and everything after are kept even when a snapshot covers them.
    pub fn set_retention_floor(&self, lsn: u64) {
        self.shared.retention_floor.store(lsn, Ordering::Release);
    }

    /// The first LSN of the oldest segment such that it and every later one together hold at
    /// most `bytes` (the segment being written is always counted, at its preallocated size:
    /// the space it takes on disk).
    pub fn oldest_lsn_within(&self, bytes: u64) -> u64 {
        let segments = self.shared.segments.lock();
        let mut total = 0u64;
        let mut oldest = self.last_lsn() + 1;
        for (i, seg) in segments.iter().enumerate().rev() {
            total += std::fs::metadata(&seg.path).map_or(0, |m| m.len());
            if total > bytes && i + 1 < segments.len() {
                break;
            }
            oldest = seg.first_lsn;
        }
        oldest
    }

    /// Remove the segments that hold only records at or below `lsn` (covered by a snapshot)
    /// and below the retention floor. The segment being written is never removed.
    pub fn remove_segments_through(&self, lsn: u64) -> Result<Vec<PathBuf>> {
        // The floor is the lowest LSN still needed, so the segment holding it stays.
        let floor = self.shared.retention_floor.load(Ordering::Acquire);
        let limit = lsn.min(floor.saturating_sub(1));
        // One remover at a time: between choosing the oldest segments and taking them off
        // the list, nothing else may take any.
        let _one_at_a_time = self.shared.trimming.lock();
        let removable: Vec<PathBuf> = {
            let segments = self.shared.segments.lock();
            segments
                .windows(2)
                .take_while(|pair| pair[1].first_lsn - 1 <= limit)
                .map(|pair| pair[0].path.clone())
                .collect()
        };
        // Unlinked without the list's lock: freeing a 64 MiB segment's blocks and cached
        // pages takes milliseconds, and starting a segment needs that lock while writers wait
        // (six at once stalled every write for ~100 ms). A reader that listed a segment
        // being removed finds it gone and reports the log trimmed, as it always could.
        let mut removed = Vec::with_capacity(removable.len());
        let mut outcome = Ok(());
        for path in removable {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            if let Err(e) = std::fs::remove_file(&path) {
                // Stop at the first failure; what is still on disk stays listed and readable.
                outcome = Err(WalError::io("remove", &path, e));
                break;
            }
            self.shared.bytes.fetch_sub(size, Ordering::Relaxed);
            removed.push(path);
        }
        // Segments are only ever added at the end, so the removed ones are still the first.
        self.shared.segments.lock().drain(..removed.len());
        if !removed.is_empty() {
            segment::sync_dir(&self.shared.dir)?;
        }
        outcome.map(|()| removed)
    }

    /// Write and fdatasync everything appended so far, whatever the sync policy (a snapshot
    /// must never describe writes the log could lose). Writers wait only for the write(2),
    /// not for the fdatasync (a snapshot's could take tens of milliseconds).
    pub fn sync(&self) -> Result<()> {
        let target = {
            let mut active = self.shared.active.lock();
            self.shared.flush(&mut active, false)?;
            self.shared.written_lsn.load(Ordering::Acquire)
        };
        self.shared.sync_detached(target)
    }

    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        WalStats {
            last_lsn: self.last_lsn(),
            written_lsn: s.written_lsn.load(Ordering::Acquire),
            durable_lsn: s.durable_lsn.load(Ordering::Acquire),
            segments: s.segments.lock().len() as u64,
            bytes: s.bytes.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            fsync_nanos: s.fsync_nanos.load(Ordering::Relaxed),
        }
    }

    /// The I/O failure that stopped writes, if any.
    pub fn failure(&self) -> Option<&str> {
        self.shared.failure.get().map(String::as_str)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Flush and fsync everything appended, stop the background syncer and refuse further
    /// appends. Called on graceful shutdown; also run (errors logged) on drop.
    pub fn close(&self) -> Result<()> {
        self.shared.pending.lock().closed = true;
        {
            let (stop, wake) = &self.shared.stop;
            *stop.lock() = true;
            wake.notify_all();
        }
        if let Some(handle) = self.syncer.lock().take() {
            let _ = handle.join();
        }
        self.shared.check_usable()?;
        let mut active = self.shared.active.lock();
        self.shared.flush(&mut active, true)?;
        // Trim the preallocated space, so a cleanly closed log is its records and nothing
        // more (for tools, copies and backups). Only tidiness: the zeros would read as the
        // end of the log anyway.
        if let Err(e) = active.file.set_len(active.len) {
            tracing::warn!(file = %active.path.display(), error = %e, "cannot trim the WAL segment");
        }
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the WAL failed");
        }
    }
}

impl Shared {
    fn check_usable(&self) -> Result<()> {
        match self.failure.get() {
            Some(reason) => Err(WalError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Mark the log failed for good and return the error for the caller at hand.
    fn fail(&self, op: &'static str, path: &Path, error: impl std::fmt::Display) -> WalError {
        let reason = format!("{op} {}: {error}", path.display());
        tracing::error!(%reason, "WAL I/O failed; refusing writes until restart");
        let _ = self.failure.set(reason.clone());
        WalError::Failed(self.failure.get().cloned().unwrap_or(reason))
    }

    /// Write out everything appended so far, then fdatasync if asked. Runs under the I/O lock.
    fn flush(&self, active: &mut Active, sync: bool) -> Result<()> {
        // Checked again here, under the I/O lock: a writer that passed the check before an
        // earlier leader failed must not write after the records that failure dropped (an LSN
        // gap) nor fsync and report as durable what was never written.
        self.check_usable()?;
        let (mut buf, last) = {
            let mut pending = self.pending.lock();
            let buf = std::mem::replace(&mut pending.buf, std::mem::take(&mut active.spare));
            (buf, pending.next_lsn - 1)
        };
        if !buf.is_empty() {
            let first = self.written_lsn.load(Ordering::Acquire) + 1;
            if active.len >= self.opts.max_file_size {
                self.rotate(active, first)?;
            }
            let end = active.len + buf.len() as u64;
            if self.opts.sync == SyncPolicy::Always && end > active.initialized {
                self.initialize_ahead(active, end);
            }
            if let Err(e) = active.file.write_all_at(&buf, active.len) {
                // Cut the partial write so no half record precedes a future valid one.
                let _ = active.file.set_len(active.len);
                return Err(self.fail("write", &active.path, e));
            }
            active.len += buf.len() as u64;
            self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            // Only the policies with a background syncer count (`always` syncs every group,
            // and its unsynced writes are a snapshot's, which syncs them itself).
            if !sync && self.opts.sync != SyncPolicy::Always {
                let len = buf.len() as u64;
                if self.unsynced.fetch_add(len, Ordering::Relaxed) + len >= WRITEBACK_BYTES {
                    self.request_writeback();
                }
            }
            self.last_group.store(last + 1 - first, Ordering::Relaxed);
            self.written_lsn.store(last, Ordering::Release);
        }
        buf.clear();
        active.spare = buf;
        let written = self.written_lsn.load(Ordering::Acquire);
        if sync && self.durable_lsn.load(Ordering::Acquire) < written {
            self.sync_file(&active.file, &active.path)?;
            self.durable_lsn.fetch_max(written, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The async flusher: flush and fsync until nothing is left, waking waiters after each.
    fn flush_until_idle(&self) {
        loop {
            {
                let mut active = self.active.lock();
                // A failure is sticky and recorded; the waiters see it when they wake.
                let _ = self.flush(&mut active, true);
            }
            self.wake_waiters();
            self.flusher.store(false, Ordering::Release);
            let behind =
                self.pending.lock().next_lsn - 1 > self.durable_lsn.load(Ordering::Acquire);
            if self.failure.get().is_some() || !behind || self.flusher.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }

    /// `sync: always` group commit: if the I/O lock is free, take it and write and fdatasync
    /// everything appended so far (unless `lsn` is already durable), then wake the waiters.
    /// None when another leader holds the lock.
    fn lead(&self, lsn: u64) -> Option<Result<()>> {
        let mut active = self.active.try_lock()?;
        let flushed = if self.durable_lsn.load(Ordering::Acquire) >= lsn {
            Ok(())
        } else {
            self.flush(&mut active, true)
        };
        drop(active);
        self.wake_waiters();
        Some(flushed)
    }

    /// Wake every writer waiting for a flush, blocked (`commit`) or async (`commit_async`).
    fn wake_waiters(&self) {
        // Taking the lock orders this wake-up after any follower's check-then-wait.
        drop(self.progress.lock());
        self.progressed.notify_all();
        self.durable_tx
            .send_replace(self.durable_lsn.load(Ordering::Acquire));
    }

    /// Seal the active segment (synced, so sealed segments are always durable) and start a new
    /// one whose first record is `first_lsn`.
    fn rotate(&self, active: &mut Active, first_lsn: u64) -> Result<()> {
        self.unsynced.store(0, Ordering::Relaxed);
        self.sync_file(&active.file, &active.path)?;
        self.durable_lsn.fetch_max(first_lsn - 1, Ordering::AcqRel);
        let (file, path) = segment::create(&self.dir, first_lsn, self.opts.max_file_size)
            .map_err(|e| self.fail("create segment in", &self.dir, e))?;
        self.segments.lock().push(SegmentMeta {
            first_lsn,
            path: path.clone(),
        });
        self.bytes.fetch_add(MAGIC.len() as u64, Ordering::Relaxed);
        active.file = file;
        active.path = path;
        active.len = MAGIC.len() as u64;
        active.initialized = MAGIC.len() as u64;
        Ok(())
    }

    /// `sync: always` only: before the log's end passes `active.initialized`, write zeros
    /// over the preallocated space from there to `INITIALIZE_AHEAD` past `end` (the end of
    /// the records about to be written).
    ///
    /// Preallocated blocks are unwritten extents: the first write into one changes the
    /// file's extent map, so the fdatasync after it must commit the file system's journal as
    /// well (on ext4 a journal thread's wake-up and a second device flush). Blocks written
    /// once are overwritten in place, and the fdatasync then carries the data alone. Under 50
    /// durable writers on this project's test machine, the mean fdatasync went from 370-440
    /// µs to 250-290 µs (BENCHMARKS.md). PostgreSQL fills its WAL segments with zeros for the
    /// same reason (`wal_init_zero`). One group commit in every `INITIALIZE_AHEAD` of log
    /// writes the zeros, and its fdatasync carries them. Best effort, as preallocation is: if
    /// the write fails, the records' own write reports what is wrong with the disk.
    fn initialize_ahead(&self, active: &mut Active, end: u64) {
        let from = active.initialized.max(end);
        let to = (end + INITIALIZE_AHEAD).min(self.opts.max_file_size);
        if to > from
            && let Err(e) = active
                .file
                .write_all_at(&ZEROS[..(to - from) as usize], from)
        {
            tracing::debug!(file = %active.path.display(), error = %e, "WAL space not written ahead");
        }
        active.initialized = to.max(end);
    }

    fn sync_file(&self, file: &File, path: &Path) -> Result<()> {
        let started = Instant::now();
        file.sync_data()
            .map_err(|e| self.fail("fdatasync", path, e))?;
        let took = started.elapsed().as_nanos() as u64;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos.fetch_add(took, Ordering::Relaxed);
        self.last_fsync_nanos.store(took, Ordering::Relaxed);
        Ok(())
    }

    /// Whether an async writer may write and fdatasync on its event loop's thread
    /// (`Wal::commit_async`): while the disk's last fdatasync took under `INLINE_FSYNC_MAX`.
    /// On a slow disk (a disk with a volatile cache flushed on every fdatasync, a network
    /// volume, one busy with other work) the flusher thread does it instead, and the event
    /// loop goes on serving reads and logging writes meanwhile.
    fn fsync_is_quick(&self) -> bool {
        self.last_fsync_nanos.load(Ordering::Relaxed) < INLINE_FSYNC_MAX.as_nanos() as u64
    }

    /// Whether the async writer of `lsn`, its event loop's turn over, may write and
    /// fdatasync the group on its own thread: the disk is quick, and either this log is
    /// written from one event loop (`WalOptions::inline_fsync`) or the writer is alone (its
    /// record the only one waiting, and the last group was one record too, so no other
    /// thread's writers are likely to join). With 1 connection and two connection threads
    /// the lone writer's own fdatasync gave 12-34% more durable writes per second.
    fn may_sync_inline(&self, lsn: u64) -> bool {
        self.fsync_is_quick()
            && (self.opts.inline_fsync
                || (self.last_group.load(Ordering::Relaxed) <= 1
                    && self.durable_lsn.load(Ordering::Acquire) + 1 == lsn
                    && self.pending.lock().next_lsn == lsn + 1))
    }

    /// Wake the background syncer to write back what has piled up (once per pile: the flag
    /// stays set until the syncer takes it).
    fn request_writeback(&self) {
        if self.writeback_due.swap(true, Ordering::AcqRel) {
            return;
        }
        // Under the lock the syncer checks the flag with, so the wake-up cannot fall between
        // its check and its wait.
        let _stopped = self.stop.0.lock();
        self.stop.1.notify_all();
    }

    /// The background syncer of `sync: interval` (at the interval) and `never`: both also
    /// sync whenever `WRITEBACK_BYTES` have been written since the last fdatasync.
    fn sync_in_background(&self) {
        let every = match self.opts.sync {
            SyncPolicy::Interval(every) => Some(every),
            _ => None,
        };
        let (stop, wake) = &self.stop;
        loop {
            {
                let mut stopped = stop.lock();
                if !*stopped && !self.writeback_due.load(Ordering::Acquire) {
                    match every {
                        Some(every) => {
                            wake.wait_for(&mut stopped, every);
                        }
                        None => wake.wait(&mut stopped),
                    }
                }
                if *stopped {
                    return;
                }
                self.writeback_due.store(false, Ordering::Release);
            }
            // Counted from before the fdatasync: what is written during it may or may not
            // be covered, so it counts towards the next one.
            self.unsynced.store(0, Ordering::Relaxed);
            if self.failure.get().is_some() {
                continue;
            }
            // A failure is sticky and recorded; writers see it.
            let _ = self.sync_detached(self.written_lsn.load(Ordering::Acquire));
        }
    }

    /// Make everything written up to `target` durable, fdatasyncing a duplicate descriptor
    /// so the I/O lock is held only for the `dup`, never for the fsync. (Segments before the
    /// active one were synced when it was started.)
    fn sync_detached(&self, target: u64) -> Result<()> {
        if self.durable_lsn.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let (file, path) = {
            let active = self.active.lock();
            (active.file.try_clone(), active.path.clone())
        };
        let file = file.map_err(|e| self.fail("dup", &path, e))?;
        self.sync_file(&file, &path)?;
        self.durable_lsn.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
impl Wal {
    /// Swap the active segment's descriptor for a read-only one, so the next write fails the
    /// way a dying disk would.
    pub(crate) fn break_active_file_for_test(&self) {
        let mut active = self.shared.active.lock();
        active.file = File::open(&active.path).expect("reopen read-only");
    }

    /// Make the disk look slow to `commit_async`, as if the last fdatasync took `took`.
    pub(crate) fn pretend_the_last_fsync_took(&self, took: Duration) {
        self.shared
            .last_fsync_nanos
            .store(took.as_nanos() as u64, Ordering::Relaxed);
    }
}
