//! The primary's view of its replicas: who is connected, what each has acknowledged, and
//! waiting for acknowledgements (`min_replicas`).
//!
//! Replicas are known by their replica ID, so a replica that reconnects (after a restart or a
//! cut link) keeps its counters and its place in the WAL retention floor. A replica that stays
//! away longer than `backlog_max_age` stops holding the log back; if it comes back after the
//! log it needs is gone, it gets a full resync.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::api::proto::ReplicaStatus;

/// Where a replica's link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    FullSync,
    Streaming,
    Disconnected,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::FullSync => "full-sync",
            LinkState::Streaming => "streaming",
            LinkState::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug)]
struct Known {
    address: String,
    labels: BTreeMap<String, String>,
    acked_lsn: u64,
    last_ack: Instant,
    /// When the replica last had everything the primary had applied: its lag in time.
    caught_up: Instant,
    state: LinkState,
    /// Streams open for this replica (a reconnect may overlap the old stream's end).
    streams: u32,
    since: Instant,
    full_syncs: u64,
    partial_syncs: u64,
}

/// The replicas a primary serves.
#[derive(Debug)]
pub struct Registry {
    replicas: Mutex<HashMap<String, Known>>,
    /// Bumped on every acknowledgement, for `wait_for_acks`.
    acks: watch::Sender<u64>,
    max_age: Duration,
}

/// Holds a replica's stream open in the registry; dropping it marks the replica disconnected.
#[must_use]
pub struct StreamGuard<'a> {
    registry: &'a Registry,
    id: String,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        let mut replicas = self.registry.replicas.lock();
        if let Some(known) = replicas.get_mut(&self.id) {
            known.streams = known.streams.saturating_sub(1);
            if known.streams == 0 {
                known.state = LinkState::Disconnected;
                known.since = Instant::now();
            }
        }
    }
}

impl StreamGuard<'_> {
    /// The full resync is complete: the replica now follows the log.
    pub fn streaming(&self) {
        if let Some(known) = self.registry.replicas.lock().get_mut(&self.id) {
            known.state = LinkState::Streaming;
        }
    }
}

impl Registry {
    pub fn new(max_age: Duration) -> Self {
        Registry {
            replicas: Mutex::new(HashMap::new()),
            acks: watch::Sender::new(0),
            max_age,
        }
    }

    /// A replica opened a stream starting after `from_lsn` (which pins the log from there
    /// until it acknowledges more).
    pub fn connect(
        &self,
        id: &str,
        address: &str,
        labels: BTreeMap<String, String>,
        from_lsn: u64,
        full: bool,
    ) -> StreamGuard<'_> {
        let now = Instant::now();
        let mut replicas = self.replicas.lock();
        let known = replicas.entry(id.to_owned()).or_insert_with(|| Known {
            address: String::new(),
            labels: BTreeMap::new(),
            acked_lsn: from_lsn,
            last_ack: now,
            caught_up: now,
            state: LinkState::Disconnected,
            streams: 0,
            since: now,
            full_syncs: 0,
            partial_syncs: 0,
        });
        known.address = address.to_owned();
        known.labels = labels;
        known.acked_lsn = from_lsn;
        known.streams += 1;
        known.since = now;
        if full {
            known.full_syncs += 1;
            known.state = LinkState::FullSync;
        } else {
            known.partial_syncs += 1;
            known.state = LinkState::Streaming;
        }
        drop(replicas);
        self.acks.send_modify(|n| *n += 1);
        StreamGuard {
            registry: self,
            id: id.to_owned(),
        }
    }

    /// A replica acknowledged `lsn` while the primary had applied `primary_lsn`. Unknown
    /// replicas are ignored (a late ack after `forget`).
    pub fn ack(&self, id: &str, lsn: u64, primary_lsn: u64) {
        let now = Instant::now();
        {
            let mut replicas = self.replicas.lock();
            let Some(known) = replicas.get_mut(id) else {
                return;
            };
            known.acked_lsn = known.acked_lsn.max(lsn);
            known.last_ack = now;
            if known.acked_lsn >= primary_lsn {
                known.caught_up = now;
            }
        }
        self.acks.send_modify(|n| *n += 1);
    }

    /// Forget the replica at `address` (or with that ID); true if one was known.
    pub fn forget(&self, address_or_id: &str) -> bool {
        let mut replicas = self.replicas.lock();
        let before = replicas.len();
        replicas.retain(|id, known| id != address_or_id && known.address != address_or_id);
        replicas.len() != before
    }

    /// How many replicas acknowledged `lsn` or later.
    pub fn acked_at_least(&self, lsn: u64) -> usize {
        self.replicas
            .lock()
            .values()
            .filter(|known| known.acked_lsn >= lsn)
            .count()
    }

    /// Wait until `count` replicas acknowledged `lsn`, at most until `deadline`. Returns how
    /// many had when it returned.
    pub async fn wait_for_acks(&self, lsn: u64, count: usize, deadline: Instant) -> usize {
        let mut acks = self.acks.subscribe();
        loop {
            let confirmed = self.acked_at_least(lsn);
            if confirmed >= count {
                return confirmed;
            }
            let changed = tokio::time::timeout_at(deadline.into(), acks.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return self.acked_at_least(lsn);
            }
        }
    }

    /// The oldest LSN some replica still needs (the lowest acknowledged LSN among replicas
    /// connected now or gone for less than `backlog_max_age`), if any.
    pub fn needed_from(&self) -> Option<u64> {
        let now = Instant::now();
        self.replicas
            .lock()
            .values()
            .filter(|known| {
                known.state != LinkState::Disconnected
                    || now.duration_since(known.since) < self.max_age
            })
            .map(|known| known.acked_lsn)
            .min()
    }

    /// Status of every known replica, given the primary's applied LSN.
    pub fn status(&self, primary_lsn: u64) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        let mut out: Vec<ReplicaStatus> = self
            .replicas
            .lock()
            .iter()
            .map(|(id, known)| ReplicaStatus {
                id: id.clone(),
                address: known.address.clone(),
                acked_lsn: known.acked_lsn,
                lag_entries: primary_lsn.saturating_sub(known.acked_lsn),
                lag_ms: if known.acked_lsn >= primary_lsn {
                    0
                } else {
                    now.duration_since(known.caught_up).as_millis() as u64
                },
                last_ack_age_ms: now.duration_since(known.last_ack).as_millis() as u64,
                state: known.state.as_str().into(),
                full_syncs: known.full_syncs,
                partial_syncs: known.partial_syncs,
                labels: known.labels.clone().into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acks_release_waiters_and_count_per_replica() {
        let registry = Registry::new(Duration::from_secs(60));
        let a = registry.connect("a", "h:1", BTreeMap::new(), 0, false);
        let _b = registry.connect("b", "h:2", BTreeMap::new(), 0, true);
        let deadline = Instant::now() + Duration::from_secs(10);
        let wait = registry.wait_for_acks(5, 2, deadline);
        let ack = async {
            registry.ack("a", 5, 5);
            tokio::task::yield_now().await;
            registry.ack("b", 7, 7);
        };
        let (confirmed, ()) = tokio::join!(wait, ack);
        assert_eq!(confirmed, 2);
        a.streaming();
        let status = registry.status(9);
        assert_eq!(status.len(), 2);
        assert_eq!(
            (
                status[0].acked_lsn,
                status[0].lag_entries,
                status[0].state.as_str()
            ),
            (5, 4, "streaming")
        );
        assert_eq!(
            (status[1].full_syncs, status[1].state.as_str()),
            (1, "full-sync")
        );
        drop(a);
        assert_eq!(registry.status(9)[0].state, "disconnected");
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_with_the_count_so_far() {
        let registry = Registry::new(Duration::from_secs(60));
        let _a = registry.connect("a", "h:1", BTreeMap::new(), 0, false);
        registry.ack("a", 3, 3);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(registry.wait_for_acks(3, 2, deadline).await, 1);
    }

    #[test]
    fn the_floor_follows_the_slowest_replica_until_it_is_away_too_long() {
        let registry = Registry::new(Duration::ZERO);
        assert_eq!(registry.needed_from(), None);
        let a = registry.connect("a", "h:1", BTreeMap::new(), 10, false);
        let b = registry.connect("b", "h:2", BTreeMap::new(), 4, false);
        assert_eq!(registry.needed_from(), Some(4));
        registry.ack("b", 12, 12);
        assert_eq!(registry.needed_from(), Some(10));
        drop(a);
        // Gone for longer than backlog_max_age (zero here): it no longer holds the log.
        assert_eq!(registry.needed_from(), Some(12));
        drop(b);
        assert_eq!(registry.needed_from(), None);
        assert!(registry.forget("h:1"));
        assert!(registry.forget("b"));
        assert!(!registry.forget("b"));
    }
}
