//! The primary's side of one `Replication/Subscribe` stream.
//!
//! The first message says how the replica is brought up to date. If it shares this node's
//! history up to where it is (same replication ID, or the secondary one up to the fork point)
//! and the log still holds what follows, the log is streamed from there: a partial resync.
//! Otherwise a copy of the data is streamed first (a full resync): the copy is taken shard by
//! shard while writes go on, so it is consistent only once the log from where the copy began
//! (`snapshot_lsn`) through where it ended (`snapshot_end_lsn`) is applied on top; every
//! record is an absolute overwrite or delete, so replaying what the copy already has is
//! harmless. Then committed records are pushed as they commit, in batches, with heartbeats
//! while idle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::identity::History;
use super::registry::Registry;
use crate::api::error::{Code, ConnectError};
use crate::api::proto::{SnapshotItem, StreamEvent, SubscribeRequest, SubscribeResponse};
use crate::clock::now_ms;
use crate::db::{Db, DbError};
use crate::plugins::{FilterStep, Plugins, filter_entries};
use crate::wal::{self, LogReader, MutationRef, WalError};
use wasmkv_guest::abi;

/// How often an idle stream tells the replica the primary's LSN and clock.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Most records and bytes per message, so one batch never holds up the stream for long.
const RECORDS_PER_MESSAGE: usize = 1024;
const BYTES_PER_MESSAGE: usize = 1 << 20;
/// Most snapshot entries per message.
const ITEMS_PER_MESSAGE: usize = 1024;
/// How long a stream waits before asking a failing filter again.
const HOLD_RETRY: Duration = Duration::from_millis(200);

/// Where a stream's messages go: the encoded messages are queued for the HTTP body.
pub struct Outbox {
    pub tx: mpsc::Sender<Bytes>,
    pub encode: Box<dyn Fn(&SubscribeResponse) -> Bytes + Send + Sync>,
}

impl Outbox {
    /// False once the replica is gone.
    async fn send(&self, message: SubscribeResponse) -> bool {
        self.tx.send((self.encode)(&message)).await.is_ok()
    }
}

/// Serve one subscription until the replica goes away, the node shuts down, or the log no
/// longer holds what the replica needs (it then reconnects and gets a full resync).
pub async fn serve(
    db: Arc<Db>,
    registry: Arc<Registry>,
    history: History,
    plugins: Option<Arc<Plugins>>,
    request: SubscribeRequest,
    out: Outbox,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectError> {
    let mut applied = db.watch_applied();
    let labels: BTreeMap<String, String> = request.labels.clone().into_iter().collect();
    let filter = Arc::new(Filter {
        steps: plugins.map(|p| p.filters_for(&labels)).unwrap_or_default(),
        replica: abi::ReplicaInfo {
            id: if request.address.is_empty() {
                request.replica_id.clone()
            } else {
                request.address.clone()
            },
            labels: labels.clone(),
        },
    });
    let primary_lsn = db.applied_lsn();
    let partial = history.shares(&request.replication_id, request.from_lsn, primary_lsn)
        && db.read_log(request.from_lsn).is_ok();
    let start = if partial {
        request.from_lsn
    } else {
        primary_lsn
    };
    let guard = registry.connect(
        &request.replica_id,
        &request.address,
        labels,
        start,
        !partial,
    );
    tracing::info!(
        replica = %request.replica_id,
        address = %request.address,
        from_lsn = request.from_lsn,
        mode = if partial { "partial" } else { "full" },
        "replica subscribed"
    );
    let hello = SubscribeResponse {
        event: StreamEvent::Hello as i32,
        replication_id: history.replication_id.clone(),
        full_resync: !partial,
        snapshot_lsn: start,
        primary_empty: db.stats().keys == 0,
        ..heartbeat(primary_lsn)
    };
    if !out.send(hello).await {
        return Ok(());
    }
    if !partial {
        if !send_snapshot(&db, &filter, &out).await? {
            return Ok(());
        }
        let end = SubscribeResponse {
            event: StreamEvent::SnapshotEnd as i32,
            snapshot_end_lsn: db.applied_lsn(),
            ..heartbeat(db.applied_lsn())
        };
        if !out.send(end).await {
            return Ok(());
        }
        guard.streaming();
    }
    let mut cursor = start;
    // One reader for the whole stream, so each record is read from disk once.
    let mut reader = None;
    loop {
        // On shutdown, first send what is committed: a replica that stays up then holds every
        // write this primary acknowledged before it stopped.
        let draining = *shutdown.borrow();
        let step = {
            let db = Arc::clone(&db);
            let filter = Arc::clone(&filter);
            let mut kept = reader.take();
            let (step, kept) = tokio::task::spawn_blocking(move || {
                let step = read_records(&db, &filter, &mut kept, cursor);
                (step, kept)
            })
            .await
            .map_err(|e| ConnectError::internal(format!("log reader failed: {e}")))?;
            reader = kept;
            step?
        };
        let step = match step {
            Step::Held(reason) => {
                tracing::warn!(replica = %request.replica_id, %reason, "replication held back");
                tokio::select! {
                    () = tokio::time::sleep(HOLD_RETRY) => continue,
                    () = out.tx.closed() => return Ok(()),
                }
            }
            Step::Records(records) => records,
        };
        if let Some((records, last)) = step {
            cursor = last;
            let message = SubscribeResponse {
                event: StreamEvent::Records as i32,
                records,
                ..heartbeat(db.applied_lsn())
            };
            if !out.send(message).await {
                return Ok(());
            }
            continue;
        }
        if draining {
            return Err(ConnectError::unavailable(
                "the primary is shutting down; reconnect to resume",
            ));
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return Ok(()) },
            () = tokio::time::sleep(HEARTBEAT) => {
                if !out.send(heartbeat(db.applied_lsn())).await {
                    return Ok(());
                }
            }
            _ = shutdown.changed() => {}
            () = out.tx.closed() => return Ok(()),
        }
    }
}

fn heartbeat(primary_lsn: u64) -> SubscribeResponse {
    SubscribeResponse {
        event: StreamEvent::Heartbeat as i32,
        primary_lsn,
        primary_time_ms: now_ms() as i64,
        ..SubscribeResponse::default()
    }
}

/// Stream a copy of the data (what the replica's filters let through); false if the replica
/// went away. A filter that holds ends the stream: the replica retries later.
async fn send_snapshot(
    db: &Arc<Db>,
    filter: &Arc<Filter>,
    out: &Outbox,
) -> Result<bool, ConnectError> {
    let (chunks, mut received) = mpsc::channel::<Vec<SnapshotItem>>(4);
    let copier = {
        let db = Arc::clone(db);
        let filter = Arc::clone(filter);
        tokio::task::spawn_blocking(move || {
            db.for_each_chunk(|entries| {
                for part in entries.chunks(ITEMS_PER_MESSAGE) {
                    let now = now_ms();
                    let keep = filter.keep(part.iter().map(|e| abi::FilterEntry {
                        op: abi::Op::Set,
                        key: e.key.to_vec(),
                        value_len: e.value.len() as u64,
                        ttl_ms: remaining_ttl(e.expires_at_ms, now),
                    }))?;
                    let items = part
                        .iter()
                        .zip(keep)
                        .filter(|(_, keep)| *keep)
                        .map(|(e, _)| SnapshotItem {
                            key: e.key.clone(),
                            value: e.value.clone(),
                            expires_at_ms: e.expires_at_ms as i64,
                            version: e.version,
                        })
                        .collect();
                    chunks
                        .blocking_send(items)
                        .map_err(|_| CopyStopped::ReplicaGone)?;
                }
                Ok::<(), CopyStopped>(())
            })
        })
    };
    while let Some(items) = received.recv().await {
        let message = SubscribeResponse {
            event: StreamEvent::Snapshot as i32,
            items,
            ..heartbeat(db.applied_lsn())
        };
        if !out.send(message).await {
            return Ok(false);
        }
    }
    // The copier ends once every chunk is sent, or early if the receiver went away.
    let copied = copier
        .await
        .map_err(|e| ConnectError::internal(format!("snapshot copy failed: {e}")))?;
    match copied {
        Ok(()) => Ok(true),
        Err(CopyStopped::ReplicaGone) => Ok(false),
        Err(CopyStopped::Held(reason)) => Err(ConnectError::unavailable(reason)),
    }
}

/// Why a snapshot copy stopped early.
enum CopyStopped {
    ReplicaGone,
    Held(String),
}

impl From<String> for CopyStopped {
    fn from(reason: String) -> Self {
        CopyStopped::Held(reason)
    }
}

/// The replication filters that apply to one replica.
struct Filter {
    steps: Vec<Arc<FilterStep>>,
    replica: abi::ReplicaInfo,
}

impl Filter {
    /// One decision per entry; `Err` = hold.
    fn keep(&self, entries: impl Iterator<Item = abi::FilterEntry>) -> Result<Vec<bool>, String> {
        filter_entries(&self.steps, &self.replica, entries.collect())
    }
}

/// The TTL left at `now` of an entry expiring at `expires_at_ms` (0 = none).
fn remaining_ttl(expires_at_ms: u64, now: u64) -> u64 {
    if expires_at_ms == 0 {
        0
    } else {
        expires_at_ms.saturating_sub(now).max(1)
    }
}

/// What one read of the log gave.
enum Step {
    /// Frames and the last LSN among them, or nothing new.
    Records(Option<(Bytes, u64)>),
    /// A filter failed with `on_error: hold`: try the same records again later.
    Held(String),
}

/// The next committed records after `cursor` as WAL frames, filtered for the replica: a
/// mutation a filter drops leaves its record's LSN in place (an empty batch if nothing of it
/// is left), so the replica's log stays dense and in step with the primary's.
fn read_records(
    db: &Db,
    filter: &Filter,
    kept: &mut Option<LogReader>,
    cursor: u64,
) -> Result<Step, ConnectError> {
    let reader = match kept {
        Some(reader) => {
            db.read_log_on(reader);
            reader
        }
        None => kept.insert(db.read_log(cursor).map_err(log_error)?),
    };
    let mut records = Vec::new();
    let mut bytes = 0usize;
    for record in reader.by_ref().take(RECORDS_PER_MESSAGE) {
        let record = record.map_err(|e| log_error(DbError::from(e)))?;
        bytes += record.command.approximate_size();
        records.push(record);
        if bytes >= BYTES_PER_MESSAGE {
            break;
        }
    }
    let Some(last) = records.last().map(|r| r.lsn) else {
        return Ok(Step::Records(None));
    };
    if !filter.steps.is_empty() {
        let now = now_ms();
        let mut entries = Vec::new();
        for record in &records {
            record.command.for_each_mutation(|m| {
                entries.push(match m {
                    MutationRef::Set {
                        key,
                        value,
                        expires_at_ms,
                    } => abi::FilterEntry {
                        op: abi::Op::Set,
                        key: key.to_vec(),
                        value_len: value.len() as u64,
                        ttl_ms: remaining_ttl(expires_at_ms, now),
                    },
                    MutationRef::Delete { key } => abi::FilterEntry {
                        op: abi::Op::Delete,
                        key: key.to_vec(),
                        value_len: 0,
                        ttl_ms: 0,
                    },
                });
            });
        }
        let keep = match filter.keep(entries.into_iter()) {
            Ok(keep) => keep,
            Err(reason) => {
                // These records are asked about again: read them again next time.
                *kept = None;
                return Ok(Step::Held(reason));
            }
        };
        let mut decisions = keep.into_iter();
        for record in &mut records {
            let mut kept = Vec::new();
            let mut dropped = false;
            record.command.for_each_mutation(|m| {
                if decisions.next().unwrap_or(true) {
                    kept.push(m.to_mutation());
                } else {
                    dropped = true;
                }
            });
            if dropped {
                record.command = wal::Command::Batch(kept);
            }
        }
    }
    let mut frames = Vec::with_capacity(bytes + records.len() * 32);
    for record in &records {
        wal::encode_record(
            record.lsn,
            record.timestamp_ms,
            &record.command,
            &mut frames,
        );
    }
    Ok(Step::Records(Some((Bytes::from(frames), last))))
}

/// A failure to read the log, as the stream's end-of-stream error.
fn log_error(error: DbError) -> ConnectError {
    match error {
        DbError::Wal(WalError::Trimmed { requested, oldest }) => ConnectError::new(
            Code::OutOfRange,
            format!(
                "the primary's log no longer holds LSN {requested} (the oldest kept is \
                 {oldest}); reconnect for a full resync"
            ),
        ),
        other => other.into(),
    }
}
