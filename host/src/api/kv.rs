//! The `kvstore.v1.KVStore` methods: request validation and translation to the store.

use std::sync::Arc;

use bytes::Bytes;

use super::error::{Code, ConnectError};
use super::proto::{
    DeleteRequest, DeleteResponse, Entry, GetRequest, GetResponse, GetUpdatesRequest,
    GetUpdatesResponse, MultiGetRequest, MultiGetResponse, Mutation, Op, SetRequest, SetResponse,
    WriteRequest, WriteResponse,
};
use super::state::ApiState;
use crate::clock::now_ms;
use crate::db::{DbError, SetOptions};
use crate::storage::Item;
use crate::wal::{self, MutationRef, WalError};

/// Most records one GetUpdates call returns.
const MAX_UPDATES: u32 = 10_000;
const DEFAULT_UPDATES: u32 = 1_000;

pub async fn get(state: &Arc<ApiState>, req: GetRequest) -> Result<GetResponse, ConnectError> {
    state.limits.check_key(&req.key)?;
    let db = state.db()?;
    let applied = db.applied_lsn();
    if req.min_lsn > applied {
        return Err(ConnectError::unavailable(format!(
            "this node has applied LSN {applied}, not yet min_lsn {}",
            req.min_lsn
        )));
    }
    Ok(item_response(db.get(&req.key)))
}

pub async fn multi_get(
    state: &Arc<ApiState>,
    req: MultiGetRequest,
) -> Result<MultiGetResponse, ConnectError> {
    for key in &req.keys {
        state.limits.check_key(key)?;
    }
    let db = state.db()?;
    Ok(MultiGetResponse {
        results: req.keys.iter().map(|k| item_response(db.get(k))).collect(),
    })
}

fn item_response(item: Option<Item>) -> GetResponse {
    match item {
        Some(item) => GetResponse {
            found: true,
            value: item.value,
            version: item.version,
            expires_at_ms: item.expires_at_ms as i64,
        },
        None => GetResponse::default(),
    }
}

pub async fn set(state: &Arc<ApiState>, req: SetRequest) -> Result<SetResponse, ConnectError> {
    state.limits.check_key(&req.key)?;
    state.limits.check_value(&req.value)?;
    check_ttl(req.ttl_ms)?;
    refuse_min_replicas(req.min_replicas)?;
    let opts = SetOptions {
        expires_at_ms: expiry(req.ttl_ms),
        if_version: req.if_version,
    };
    let lsn = state
        .db()?
        .submit_set(req.key, req.value, opts)?
        .wait_async()
        .await?;
    Ok(SetResponse { lsn })
}

pub async fn delete(
    state: &Arc<ApiState>,
    req: DeleteRequest,
) -> Result<DeleteResponse, ConnectError> {
    state.limits.check_key(&req.key)?;
    let outcome = state.db()?.submit_delete(req.key)?.wait_async().await?;
    Ok(DeleteResponse {
        found: outcome.found,
        lsn: outcome.lsn,
    })
}

pub async fn write(
    state: &Arc<ApiState>,
    req: WriteRequest,
) -> Result<WriteResponse, ConnectError> {
    if req.mutations.is_empty() {
        return Err(ConnectError::invalid_argument(
            "a write needs at least one mutation",
        ));
    }
    refuse_min_replicas(req.min_replicas)?;
    let mut total = 0usize;
    let mutations = req
        .mutations
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            total += m.key.len() + m.value.len();
            to_mutation(state, m)
                .map_err(|e| ConnectError::new(e.code, format!("mutation {i}: {}", e.message)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lsn = state.db()?.submit_write(mutations)?.wait_async().await?;
    Ok(WriteResponse { lsn })
}

fn to_mutation(state: &ApiState, m: Mutation) -> Result<wal::Mutation, ConnectError> {
    state.limits.check_key(&m.key)?;
    match Op::try_from(m.op) {
        Ok(Op::Set) => {
            state.limits.check_value(&m.value)?;
            check_ttl(m.ttl_ms)?;
            Ok(wal::Mutation::Set {
                key: m.key,
                value: m.value,
                expires_at_ms: expiry(m.ttl_ms),
            })
        }
        Ok(Op::Delete) => Ok(wal::Mutation::Delete { key: m.key }),
        Ok(Op::Unspecified) | Err(_) => Err(ConnectError::invalid_argument(format!(
            "op must be OP_SET (1) or OP_DELETE (2), got {}",
            m.op
        ))),
    }
}

/// Waiting for replicas needs replication, which this node does not run: refuse up front
/// rather than write and then fail to confirm.
fn refuse_min_replicas(min_replicas: u32) -> Result<(), ConnectError> {
    if min_replicas == 0 {
        return Ok(());
    }
    Err(ConnectError::new(
        Code::FailedPrecondition,
        format!(
            "min_replicas is {min_replicas} but this node has no replicas; nothing was written"
        ),
    ))
}

/// The longest TTL accepted: about 100 years, far inside the wire's signed 64-bit expiry.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

fn check_ttl(ttl_ms: u64) -> Result<(), ConnectError> {
    if ttl_ms > MAX_TTL_MS {
        return Err(ConnectError::invalid_argument(format!(
            "ttl_ms {ttl_ms} is too large: the limit is {MAX_TTL_MS} (about 100 years); use 0 \
             for a key that never expires"
        )));
    }
    Ok(())
}

/// The absolute expiry of a TTL (0 = never); the TTL was checked by `check_ttl`.
fn expiry(ttl_ms: u64) -> u64 {
    if ttl_ms == 0 { 0 } else { now_ms() + ttl_ms }
}

pub async fn get_updates(
    state: &Arc<ApiState>,
    req: GetUpdatesRequest,
) -> Result<GetUpdatesResponse, ConnectError> {
    let limit = match req.limit {
        0 => DEFAULT_UPDATES,
        n => n.min(MAX_UPDATES),
    } as usize;
    let since = req.since_lsn;
    state
        .blocking(move |db| {
            let reader = match db.read_log(since) {
                Ok(reader) => reader,
                Err(DbError::Wal(WalError::Trimmed { .. })) => {
                    return Ok(Ok(GetUpdatesResponse {
                        entries: Vec::new(),
                        last_lsn: since,
                        snapshot_required: true,
                    }));
                }
                Err(e) => return Err(e),
            };
            if since > reader.up_to() {
                return Ok(Err(ConnectError::new(
                    Code::OutOfRange,
                    format!(
                        "since_lsn {since} is beyond this node's last committed LSN {}: the \
                         caller has history this node lacks",
                        reader.up_to()
                    ),
                )));
            }
            let mut response = GetUpdatesResponse {
                last_lsn: since,
                ..GetUpdatesResponse::default()
            };
            for record in reader.take(limit) {
                let record = record?;
                response.last_lsn = record.lsn;
                push_entries(&mut response.entries, &record);
            }
            Ok(Ok(response))
        })
        .await?
}

/// The wire entries of one log record: a batch becomes one entry per mutation, all with the
/// record's LSN; expiry and eviction are deletes.
pub(super) fn push_entries(out: &mut Vec<Entry>, record: &wal::Record) {
    record.command.for_each_mutation(|mutation| {
        let (op, value, expires_at_ms) = match mutation {
            MutationRef::Set {
                value,
                expires_at_ms,
                ..
            } => (Op::Set, value.clone(), expires_at_ms),
            MutationRef::Delete { .. } => (Op::Delete, Bytes::new(), 0),
        };
        out.push(Entry {
            lsn: record.lsn,
            timestamp_ms: record.timestamp_ms as i64,
            op: op as i32,
            key: mutation.key().clone(),
            value,
            expires_at_ms: expires_at_ms as i64,
        });
    });
}
