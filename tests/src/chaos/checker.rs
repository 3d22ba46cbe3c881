//! The oracles of a chaos run. Each takes what was recorded and returns the anomalies it
//! finds; none of them needs the cluster, so each is tested here on histories made up to be
//! wrong in its way.
//!
//! - [`no_invention`]: every value any node returned was written by a client, to that key,
//!   in a write that was not refused.
//! - [`durability`]: at each checkpoint (every client paused, right after the primary
//!   crashed and came back, after a promotion, and at the end) the primary holds, for every
//!   key, the last acknowledged write, or a write whose outcome is unknown.
//! - [`linearizability`]: per key, the writes and the reads served by the primary form a
//!   linearizable register history ([`super::linearizability`]).
//! - [`compare_logs`]: the prefix oracle's comparison, of a replica's log with its
//!   primary's over the same LSNs (the runner fetches them while the run goes on).
//!
//! The fifth, convergence, is a wait for equal digests and lives in the runner.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bytes::Bytes;
use wasmkv::api::proto::Entry;

use super::history::{Action, Op, Rollback, WriteOutcome};
use super::linearizability::{self, RegisterOp, Timed, Verdict};

/// Which oracle found an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Oracle {
    Durability,
    NoInvention,
    Prefix,
    Convergence,
    Linearizability,
}

impl fmt::Display for Oracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Oracle::Durability => "durability",
            Oracle::NoInvention => "no invention",
            Oracle::Prefix => "prefix",
            Oracle::Convergence => "convergence",
            Oracle::Linearizability => "linearizability",
        })
    }
}

/// Something that must not happen, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub oracle: Oracle,
    pub detail: String,
}

impl Anomaly {
    pub fn new(oracle: Oracle, detail: impl Into<String>) -> Anomaly {
        Anomaly {
            oracle,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.oracle, self.detail)
    }
}

fn text(value: Option<&Bytes>) -> String {
    match value {
        Some(v) => format!("{:?}", String::from_utf8_lossy(&v[..v.len().min(40)])),
        None => "(absent)".into(),
    }
}

/// Every value read (from any node) was written to its key by a write that was not refused.
pub fn no_invention(ops: &[Op]) -> Vec<Anomaly> {
    let mut written: HashMap<&Bytes, &Bytes> = HashMap::new();
    let mut refused: HashSet<&Bytes> = HashSet::new();
    for op in ops {
        if let Action::Write {
            value: Some(value),
            outcome,
            ..
        } = &op.action
        {
            if *outcome == WriteOutcome::Refused {
                refused.insert(value);
            } else {
                written.insert(value, &op.key);
            }
        }
    }
    let mut anomalies = Vec::new();
    for op in ops {
        let Action::Read { got: Some(got), .. } = &op.action else {
            continue;
        };
        let why = if refused.contains(got) {
            "the value of a refused write"
        } else if written.get(got) != Some(&&op.key) {
            "a value no client wrote to this key"
        } else {
            continue;
        };
        anomalies.push(Anomaly::new(
            Oracle::NoInvention,
            format!(
                "key {} read as {}: {why} (client {}, at {} ns)",
                text(Some(&op.key)),
                text(Some(got)),
                op.client,
                op.call
            ),
        ));
    }
    anomalies
}

/// Each checkpoint read returned what the acknowledged writes before it leave: the value of
/// an acknowledged write to the key that no later acknowledged write superseded, or of a
/// write whose outcome is unknown (it may have been applied late); absent only if no
/// acknowledged write preceded it or the surviving one is a delete. Writes a failover
/// discarded (`rollbacks`) do not count, but one acknowledged with `min_replicas` ≥ 1 must
/// not have been discarded: the most advanced replica, the one promoted, had confirmed it.
pub fn durability(ops: &[Op], rollbacks: &[Rollback]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut writes: HashMap<&Bytes, Vec<&Op>> = HashMap::new();
    for op in ops.iter().filter(|op| op.is_write()) {
        if !rollbacks.iter().any(|r| r.discards(op)) {
            writes.entry(&op.key).or_default().push(op);
            continue;
        }
        if let Action::Write {
            min_replicas: 1..,
            outcome: WriteOutcome::Acked { lsn },
            value,
        } = &op.action
        {
            anomalies.push(Anomaly::new(
                Oracle::Durability,
                format!(
                    "the write of {} to key {} (LSN {lsn}, term {}) was acknowledged with \
                     min_replicas ≥ 1 but is not on the primary promoted after a crash",
                    text(value.as_ref()),
                    text(Some(&op.key)),
                    op.term
                ),
            ));
        }
    }
    for read in ops {
        let Action::Read {
            got,
            checkpoint: true,
            ..
        } = &read.action
        else {
            continue;
        };
        let to_key = writes.get(&read.key).map(Vec::as_slice).unwrap_or(&[]);
        let acked_before: Vec<&Op> = to_key
            .iter()
            .copied()
            .filter(|w| {
                matches!(
                    &w.action,
                    Action::Write {
                        outcome: WriteOutcome::Acked { .. },
                        ..
                    }
                ) && w.ret.is_some_and(|ret| ret < read.call)
            })
            .collect();
        // Acknowledged writes not followed by another acknowledged one that started after
        // they ended: one of them (or an unknown write) is the key's state.
        let mut allowed: Vec<Option<&Bytes>> = acked_before
            .iter()
            .filter(|w| {
                !acked_before
                    .iter()
                    .any(|later| w.ret.is_some_and(|ret| later.call > ret))
            })
            .map(|w| w.value())
            .collect();
        if acked_before.is_empty() {
            allowed.push(None);
        }
        allowed.extend(
            to_key
                .iter()
                .filter(|w| {
                    matches!(
                        &w.action,
                        Action::Write {
                            outcome: WriteOutcome::Unknown,
                            ..
                        }
                    ) && read.ret.is_none_or(|ret| w.call < ret)
                })
                .map(|w| w.value()),
        );
        if !allowed.contains(&got.as_ref()) {
            anomalies.push(Anomaly::new(
                Oracle::Durability,
                format!(
                    "key {} read as {} at a checkpoint ({} ns); the acknowledged writes leave \
                     one of {}",
                    text(Some(&read.key)),
                    text(got.as_ref()),
                    read.call,
                    allowed
                        .iter()
                        .map(|v| text(*v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    anomalies
}

/// What the linearizability oracle went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearizabilityStats {
    /// Histories checked: one per key and primary term.
    pub segments: usize,
    pub ops: usize,
    /// Histories left unchecked: the search ran out of budget, or the term's starting state
    /// is unknown.
    pub unchecked: usize,
}

/// Steps the search may take per key before giving up.
pub const SEARCH_BUDGET: u64 = 20_000_000;

/// Per key and primary term, the register history of the writes (acknowledged, or unknown)
/// and of the reads the primary served must be linearizable. A term after a promotion
/// starts from what the new primary held then, as its checkpoint read it (how that relates
/// to the term before is the durability oracle's business); a failover may discard writes,
/// so one history across terms would not be linearizable. A write of unknown outcome whose
/// value nobody read is left out: it is indistinguishable from one never applied, and left
/// in it only widens the search.
pub fn linearizability(ops: &[Op], budget: u64) -> (Vec<Anomaly>, LinearizabilityStats) {
    let read_values: HashSet<&Bytes> = ops
        .iter()
        .filter(|op| !op.is_write())
        .filter_map(Op::value)
        .collect();
    let mut per_key: HashMap<(&Bytes, u32), Vec<Timed>> = HashMap::new();
    // Histories of a later term that start from a checkpoint.
    let mut seeded: HashSet<(&Bytes, u32)> = HashSet::new();
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|op| op.call);
    for op in sorted {
        let timed = match &op.action {
            Action::Write { outcome, value, .. } => match outcome {
                WriteOutcome::Refused => continue,
                WriteOutcome::Unknown
                    if value.as_ref().is_some_and(|v| !read_values.contains(v)) =>
                {
                    continue;
                }
                WriteOutcome::Unknown => Timed {
                    call: op.call,
                    ret: None,
                    op: RegisterOp::Write(value.clone()),
                },
                WriteOutcome::Acked { .. } => Timed {
                    call: op.call,
                    ret: op.ret,
                    op: RegisterOp::Write(value.clone()),
                },
            },
            Action::Read {
                got,
                on_primary: true,
                checkpoint,
            } => {
                let segment = per_key.entry((&op.key, op.term)).or_default();
                if op.term > 0 && segment.is_empty() && *checkpoint {
                    seeded.insert((&op.key, op.term));
                    // The term's starting state: as if written just before its first read.
                    segment.push(Timed {
                        call: op.call,
                        ret: Some(op.call),
                        op: RegisterOp::Write(got.clone()),
                    });
                }
                Timed {
                    call: op.call,
                    ret: op.ret,
                    op: RegisterOp::Read(got.clone()),
                }
            }
            Action::Read { .. } => continue,
        };
        per_key.entry((&op.key, op.term)).or_default().push(timed);
    }
    let mut stats = LinearizabilityStats::default();
    let mut anomalies = Vec::new();
    let mut segments: Vec<_> = per_key.into_iter().collect();
    segments.sort_by(|a, b| a.0.cmp(&b.0));
    for ((key, term), history) in segments {
        stats.segments += 1;
        stats.ops += history.len();
        if term > 0 && !seeded.contains(&(key, term)) {
            // No checkpoint read the new primary's state: nothing to start from.
            stats.unchecked += 1;
            continue;
        }
        match linearizability::check(&history, budget) {
            Verdict::Linearizable => {}
            Verdict::GaveUp => stats.unchecked += 1,
            Verdict::NotLinearizable {
                linearized,
                stuck_at,
            } => {
                let stuck = &history[stuck_at];
                anomalies.push(Anomaly::new(
                    Oracle::Linearizability,
                    format!(
                        "the history of key {} in term {term} ({} ops) is not linearizable: at \
                         most {linearized} ops fit in an order, which then cannot place {} \
                         (called at {} ns, returned at {:?} ns)",
                        text(Some(key)),
                        history.len(),
                        match &stuck.op {
                            RegisterOp::Write(v) => format!("the write of {}", text(v.as_ref())),
                            RegisterOp::Read(v) => format!("the read of {}", text(v.as_ref())),
                        },
                        stuck.call,
                        stuck.ret
                    ),
                ));
            }
        }
    }
    (anomalies, stats)
}

/// The prefix oracle's comparison: `replica` and `primary` are the two logs read from the
/// same LSN; every entry the replica holds up to `up_to` (its applied LSN) must be, in
/// order, the primary's. Pages may end at different records, so only the LSNs both hold are
/// compared. Returns how many entries were compared.
pub fn compare_logs(replica: &[Entry], primary: &[Entry], up_to: u64) -> Result<usize, String> {
    let last = |log: &[Entry]| log.last().map_or(0, |e| e.lsn);
    let limit = up_to.min(last(replica)).min(last(primary));
    let within = |log: &[Entry]| -> Vec<Entry> {
        log.iter()
            .filter(|e| e.lsn <= limit)
            .map(|e| Entry {
                // When the record was written is the primary's clock in both logs, but it
                // is not part of the history; leave it out of the comparison.
                timestamp_ms: 0,
                ..e.clone()
            })
            .collect()
    };
    let (r, p) = (within(replica), within(primary));
    if let Some(i) = (0..r.len().min(p.len())).find(|&i| r[i] != p[i]) {
        return Err(format!(
            "at LSN {} the replica holds {:?} {} = {}, the primary {:?} {} = {}",
            r[i].lsn,
            r[i].op,
            text(Some(&r[i].key)),
            text(Some(&r[i].value)),
            p[i].op,
            text(Some(&p[i].key)),
            text(Some(&p[i].value)),
        ));
    }
    if r.len() != p.len() {
        return Err(format!(
            "up to LSN {limit} the replica holds {} log entries, the primary {}",
            r.len(),
            p.len()
        ));
    }
    Ok(r.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmkv::api::proto::Op as WireOp;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn write(key: &str, value: Option<&str>, call: u64, outcome: WriteOutcome) -> Op {
        Op {
            client: 1,
            term: 0,
            key: b(key),
            call,
            ret: (outcome != WriteOutcome::Unknown).then_some(call + 1),
            action: Action::Write {
                value: value.map(b),
                min_replicas: 0,
                outcome,
            },
        }
    }

    fn read(key: &str, got: Option<&str>, call: u64, checkpoint: bool) -> Op {
        Op {
            client: 2,
            term: 0,
            key: b(key),
            call,
            ret: Some(call + 1),
            action: Action::Read {
                got: got.map(b),
                on_primary: true,
                checkpoint,
            },
        }
    }

    const ACKED: WriteOutcome = WriteOutcome::Acked { lsn: 1 };

    #[test]
    fn a_good_history_passes_every_oracle() {
        let ops = vec![
            write("k", Some("k=1:1"), 0, ACKED),
            read("k", Some("k=1:1"), 2, false),
            write("k", Some("k=1:2"), 4, WriteOutcome::Unknown),
            write("k", Some("k=1:3"), 6, ACKED),
            read("k", Some("k=1:3"), 8, true),
            write("k", Some("k=1:4"), 10, WriteOutcome::Refused),
            write("k", None, 12, ACKED),
            read("k", None, 14, true),
            read("other", None, 16, true),
        ];
        assert_eq!(no_invention(&ops), []);
        assert_eq!(durability(&ops, &[]), []);
        let (anomalies, stats) = linearizability(&ops, SEARCH_BUDGET);
        assert_eq!(anomalies, []);
        assert_eq!(stats.segments, 2);
        // The unknown write nobody read and the refused one are left out.
        assert_eq!(stats.ops, 7);
    }

    #[test]
    fn an_invented_value_and_a_refused_write_are_flagged() {
        let ops = vec![
            write("k", Some("k=1:1"), 0, ACKED),
            write("deny:k", Some("deny:k=1:2"), 2, WriteOutcome::Refused),
            read("k", Some("k=9:9"), 4, false),
            read("deny:k", Some("deny:k=1:2"), 6, false),
            // Written, but to another key.
            read("j", Some("k=1:1"), 8, false),
        ];
        let anomalies = no_invention(&ops);
        assert_eq!(anomalies.len(), 3, "{anomalies:?}");
        assert!(anomalies[1].detail.contains("refused write"));
    }

    #[test]
    fn a_lost_acknowledged_write_is_flagged() {
        let lost = vec![
            write("k", Some("k=1:1"), 0, ACKED),
            write("k", Some("k=1:2"), 2, ACKED),
            read("k", Some("k=1:1"), 10, true),
        ];
        assert_eq!(durability(&lost, &[]).len(), 1);
        let gone = vec![
            write("k", Some("k=1:1"), 0, ACKED),
            read("k", None, 10, true),
        ];
        assert_eq!(durability(&gone, &[]).len(), 1);
        // Both are stale reads for the linearizability oracle too.
        assert_eq!(linearizability(&lost, SEARCH_BUDGET).0.len(), 1);
        assert_eq!(linearizability(&gone, SEARCH_BUDGET).0.len(), 1);
    }

    #[test]
    fn a_stale_read_on_the_primary_is_flagged() {
        let ops = vec![
            write("k", Some("k=1:1"), 0, ACKED),
            write("k", Some("k=1:2"), 2, ACKED),
            read("k", Some("k=1:1"), 4, false),
        ];
        let (anomalies, _) = linearizability(&ops, SEARCH_BUDGET);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].oracle, Oracle::Linearizability);
        // The same read from a replica is allowed to lag.
        let mut on_replica = ops;
        on_replica[2].action = Action::Read {
            got: Some(b("k=1:1")),
            on_primary: false,
            checkpoint: false,
        };
        assert_eq!(linearizability(&on_replica, SEARCH_BUDGET).0, []);
    }

    fn in_term(term: u32, mut op: Op) -> Op {
        op.term = term;
        op
    }

    fn with_min_replicas(mut op: Op) -> Op {
        if let Action::Write { min_replicas, .. } = &mut op.action {
            *min_replicas = 1;
        }
        op
    }

    #[test]
    fn a_failover_may_discard_writes_but_not_those_confirmed_by_a_replica() {
        // Term 0 acknowledges LSNs 10 and 11; the promoted replica had 10 only.
        let ops = vec![
            write("k", Some("k=1:1"), 0, WriteOutcome::Acked { lsn: 10 }),
            write("k", Some("k=1:2"), 2, WriteOutcome::Acked { lsn: 11 }),
            read("k", Some("k=1:2"), 4, false),
            in_term(1, read("k", Some("k=1:1"), 10, true)),
            in_term(1, read("k", Some("k=1:1"), 12, false)),
            in_term(
                1,
                write("k", Some("k=1:3"), 14, WriteOutcome::Acked { lsn: 11 }),
            ),
            in_term(1, read("k", Some("k=1:3"), 16, false)),
        ];
        let rollback = [Rollback {
            term: 0,
            after_lsn: 10,
        }];
        assert_eq!(durability(&ops, &rollback), []);
        let (anomalies, stats) = linearizability(&ops, SEARCH_BUDGET);
        assert_eq!(anomalies, []);
        assert_eq!((stats.segments, stats.unchecked), (2, 0));
        // Without the failover, the checkpoint lost an acknowledged write.
        assert_eq!(durability(&ops, &[]).len(), 1);
        // And with min_replicas, the discarded write had been confirmed by a replica.
        let mut confirmed = ops.clone();
        confirmed[1] = with_min_replicas(confirmed[1].clone());
        let anomalies = durability(&confirmed, &rollback);
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
        assert!(anomalies[0].detail.contains("min_replicas"));
    }

    #[test]
    fn a_stale_read_after_a_promotion_is_flagged() {
        let ops = vec![
            write("k", Some("k=1:1"), 0, ACKED),
            in_term(1, read("k", Some("k=1:1"), 10, true)),
            in_term(1, write("k", Some("k=1:2"), 12, ACKED)),
            in_term(1, read("k", Some("k=1:1"), 14, false)),
        ];
        let (anomalies, _) = linearizability(&ops, SEARCH_BUDGET);
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
        assert!(anomalies[0].detail.contains("term 1"));
    }

    fn entry(lsn: u64, key: &str, value: &str) -> Entry {
        Entry {
            lsn,
            timestamp_ms: lsn as i64,
            op: WireOp::Set as i32,
            key: b(key),
            value: b(value),
            expires_at_ms: 0,
        }
    }

    #[test]
    fn a_replica_log_that_is_a_prefix_passes() {
        let primary = [entry(5, "a", "1"), entry(6, "b", "2"), entry(7, "c", "3")];
        let mut replica = primary[..2].to_vec();
        replica[0].timestamp_ms = 99;
        assert_eq!(compare_logs(&replica, &primary, 6), Ok(2));
        // The replica's page may also end later than the primary's.
        assert_eq!(compare_logs(&primary, &primary[..1], 7), Ok(1));
    }

    #[test]
    fn a_replica_log_that_is_not_a_prefix_is_flagged() {
        let primary = [entry(5, "a", "1"), entry(6, "b", "2")];
        let diverged = [entry(5, "a", "1"), entry(6, "b", "other")];
        assert!(compare_logs(&diverged, &primary, 6).is_err());
        let missing = [entry(5, "a", "1"), entry(7, "b", "2")];
        assert!(
            compare_logs(
                &missing,
                &[entry(5, "a", "1"), entry(6, "x", "y"), entry(7, "b", "2")],
                7
            )
            .is_err()
        );
    }
}
