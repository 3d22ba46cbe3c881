//! What the chaos clients did and saw: one [`Op`] per call, with when it was sent and when
//! its answer came back, as the checker needs them.
//!
//! Values are unique: every write puts `{key}={client}:{seq}` (plus filler) in its value, so
//! a value names the one write that produced it, and a value nobody wrote cannot pass as one
//! that somebody did.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

/// Nanoseconds since the start of the run.
pub type Nanos = u64;

/// How a write ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged at this LSN.
    Acked { lsn: u64 },
    /// No answer, a lost connection, a deadline: it may or may not have been applied, now or
    /// at any later time.
    Unknown,
    /// The node said no for a reason that leaves nothing behind (a validator's veto, a
    /// replica's refusal): never applied.
    Refused,
}

/// One client call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A set (`Some(value)`) or a delete (`None`).
    Write {
        value: Option<Bytes>,
        /// `min_replicas` of a set (0 for deletes).
        min_replicas: u32,
        outcome: WriteOutcome,
    },
    /// A successful read: what it returned (`None` = not found).
    Read {
        got: Option<Bytes>,
        /// Read from the primary of the time (reads from replicas are not linearizable and
        /// only count for "no invention").
        on_primary: bool,
        /// A read made by the checker with every client paused, right after a crash of the
        /// primary or a promotion, for the durability oracle.
        checkpoint: bool,
    },
}

/// One call on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u32,
    /// The primary's term when the call was sent: 0 at the start, one more at every
    /// promotion.
    pub term: u32,
    pub key: Bytes,
    /// When the call was sent.
    pub call: Nanos,
    /// When its answer came back; None when there was none (an unknown write).
    pub ret: Option<Nanos>,
    pub action: Action,
}

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(self.action, Action::Write { .. })
    }

    /// The value this op wrote or read (None for deletes and "not found").
    pub fn value(&self) -> Option<&Bytes> {
        match &self.action {
            Action::Write { value, .. } => value.as_ref(),
            Action::Read { got, .. } => got.as_ref(),
        }
    }
}

/// A failover (a promotion after the primary crashed) ended `term`: the new primary holds
/// its history through `after_lsn` only, so the term's acknowledged writes beyond it are
/// lost, as they may be unless acknowledged with `min_replicas` ≥ 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollback {
    pub term: u32,
    pub after_lsn: u64,
}

impl Rollback {
    /// Whether `op` is an acknowledged write this failover discarded.
    pub fn discards(&self, op: &Op) -> bool {
        op.term == self.term
            && matches!(
                &op.action,
                Action::Write { outcome: WriteOutcome::Acked { lsn }, .. } if *lsn > self.after_lsn
            )
    }
}

/// The shared, append-only record of a run, and its clock.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// Now, on the run's clock.
    pub fn now(&self) -> Nanos {
        self.started.elapsed().as_nanos() as Nanos
    }

    pub fn record(&self, op: Op) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }

    /// Every op so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The value of write number `seq` of `client` to `key`, `len` bytes at least: unique
/// across the run.
pub fn unique_value(key: &[u8], client: u32, seq: u64, len: usize) -> Bytes {
    let mut value = format!("{}={client}:{seq};", String::from_utf8_lossy(key)).into_bytes();
    let mut filler = b'a';
    while value.len() < len {
        value.push(filler);
        filler = if filler == b'z' { b'a' } else { filler + 1 };
    }
    Bytes::from(value)
}
