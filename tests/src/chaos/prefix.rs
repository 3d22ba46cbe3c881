//! The prefix oracle's observations: while the run goes on, a replica that has joined its
//! primary's history (same replication ID) must not be ahead of it, and its log, read with
//! `GetUpdates`, must hold exactly the primary's entries at the same LSNs up to its applied
//! LSN ([`compare_logs`]). Each observation compares the log since the last one (at most
//! [`WINDOW`] LSNs back), so over a run every LSN a replica applied is compared once,
//! unless a snapshot or a full resync trimmed it from one of the logs first.

use wasmkv::client::ClientError;

use super::checker::{Anomaly, Oracle, compare_logs};
use crate::cluster::{NodeProcess, block_on};

/// How far back in a replica's log an observation compares, at most.
const WINDOW: u64 = 4000;
/// Log records per `GetUpdates` page.
const PAGE: u32 = 1000;

/// The observations made so far.
#[derive(Debug)]
pub struct PrefixObserver {
    /// Per node: how far its log was compared with its primary's.
    compared_to: Vec<u64>,
    /// Observations made (a replica compared with its primary).
    pub observations: u64,
    /// Log entries compared by them.
    pub entries: u64,
}

impl PrefixObserver {
    pub fn new(nodes: usize) -> PrefixObserver {
        PrefixObserver {
            compared_to: vec![0; nodes],
            observations: 0,
            entries: 0,
        }
    }

    /// Start over: the primary changed.
    pub fn reset(&mut self) {
        self.compared_to.fill(0);
    }

    /// Compare `replica` (node `i`) with `primary`. An error is a node that did not answer
    /// (down, paused, cut off): nothing to compare this time.
    pub fn observe(
        &mut self,
        i: usize,
        replica: &NodeProcess,
        primary: &NodeProcess,
        timeout: std::time::Duration,
    ) -> Result<Option<Anomaly>, ClientError> {
        let (replica_client, primary_client) = (
            replica.client_with_timeout(timeout),
            primary.client_with_timeout(timeout),
        );
        let r = block_on(replica_client.status())?;
        // Read after the replica: the primary's LSN only grows (`sync: always`), so it must
        // be at least the replica's.
        let p = block_on(primary_client.status())?;
        if r.role != "replica" || r.replication_id != p.replication_id {
            return Ok(None);
        }
        self.observations += 1;
        if r.lsn > p.lsn {
            return Ok(Some(Anomaly::new(
                Oracle::Prefix,
                format!(
                    "{} applied LSN {} of history {}, beyond its primary's {}",
                    replica.name(),
                    r.lsn,
                    r.replication_id,
                    p.lsn
                ),
            )));
        }
        let mut from = r
            .lsn
            .saturating_sub(WINDOW)
            .max(self.compared_to[i].min(r.lsn));
        while from < r.lsn {
            let mine = block_on(replica_client.get_updates(from, PAGE))?;
            let theirs = block_on(primary_client.get_updates(from, PAGE))?;
            if mine.snapshot_required || theirs.snapshot_required {
                // One of the logs no longer holds this range (a snapshot, a full resync).
                break;
            }
            match compare_logs(&mine.entries, &theirs.entries, r.lsn) {
                Ok(compared) => self.entries += compared as u64,
                Err(why) => {
                    return Ok(Some(Anomaly::new(
                        Oracle::Prefix,
                        format!("{}: {why}", replica.name()),
                    )));
                }
            }
            let next = mine.last_lsn.min(theirs.last_lsn).min(r.lsn);
            if next <= from {
                break;
            }
            from = next;
        }
        self.compared_to[i] = from;
        Ok(None)
    }
}
