//! The store's background thread: applying committed writes nobody waited for, active
//! expiry ten times a second, a free-disk-space reading
//! every second, and an automatic snapshot once enough WAL has accumulated since the last one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Inner, disk};

const TICK: Duration = Duration::from_millis(100);
/// Share of each tick that active expiry may use (Redis uses 25% of its cycle).
const EXPIRY_BUDGET: Duration = Duration::from_millis(25);
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Tells the background thread to finish, and wakes it so it does so at once.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    /// Sleep for `period` unless stopped first; false once stopped.
    fn sleep(&self, period: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            self.wake.wait_for(&mut stopped, period);
        }
        !*stopped
    }
}

pub fn spawn(inner: Arc<Inner>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("db-maintenance".into())
        .spawn(move || run(&inner))
}

fn run(inner: &Arc<Inner>) {
    let mut last_disk_check = Instant::now();
    while inner.stop.sleep(TICK) {
        // A write whose async waiter went away (a client deadline) is committed by the WAL's
        // flusher but applied by nobody; make it visible here at the latest.
        inner.apply_committed();
        if inner.wal.failure().is_some() {
            continue;
        }
        if inner.active_expiry.load(Ordering::Relaxed)
            && let Err(e) = inner.expire_cycle(EXPIRY_BUDGET)
        {
            tracing::warn!(error = %e, "active expiry failed");
        }
        if last_disk_check.elapsed() >= DISK_CHECK_EVERY {
            last_disk_check = Instant::now();
            match disk::free_bytes(&inner.opts.dir) {
                Ok(free) => inner.disk_free.store(free, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "cannot read free disk space"),
            }
        }
        maybe_snapshot(inner);
    }
}

/// Start a snapshot on its own thread when the WAL has grown enough since the last one, so a
/// long snapshot never delays expiry.
fn maybe_snapshot(inner: &Arc<Inner>) {
    let every = inner.opts.snapshot_after_bytes;
    if every == 0 || inner.snapshot_running.load(Ordering::Acquire) {
        return;
    }
    let baseline = inner.snapshot_wal_bytes.load(Ordering::Relaxed);
    if inner.wal.stats().bytes.saturating_sub(baseline) < every {
        return;
    }
    inner.snapshot_running.store(true, Ordering::Release);
    let worker = Arc::clone(inner);
    let spawned = std::thread::Builder::new()
        .name("db-snapshot".into())
        .spawn(move || {
            if let Err(e) = worker.snapshot() {
                tracing::error!(error = %e, "automatic snapshot failed");
            }
            worker.snapshot_running.store(false, Ordering::Release);
        });
    match spawned {
        Ok(handle) => *inner.snapshot_thread.lock() = Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a snapshot thread");
            inner.snapshot_running.store(false, Ordering::Release);
        }
    }
}
