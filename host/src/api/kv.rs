//! The `kvstore.v1.KVStore` methods: request validation and translation to the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::{Code, ConnectError};
use super::proto::{
    DeleteRequest, DeleteResponse, Entry, GetRequest, GetResponse, GetUpdatesRequest,
    GetUpdatesResponse, MultiGetRequest, MultiGetResponse, Mutation, Op, SetRequest, SetResponse,
    WriteRequest, WriteResponse,
};
use super::state::{ApiState, Validator};
use crate::clock::now_ms;
use crate::db::{DbError, SetOptions};
use crate::plugins::WriteCheck;
use crate::storage::Item;
use crate::wal::{self, MutationRef, WalError};

/// Most records one GetUpdates call returns.
const MAX_UPDATES: u32 = 10_000;
const DEFAULT_UPDATES: u32 = 1_000;

/// How long a call may wait for replication (`min_lsn`, `min_replicas`): a little less than
/// the caller's deadline, so that the answer says what was waited for before the deadline
/// itself cuts the call off; a bounded default without one.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    until: Instant,
}

impl Wait {
    /// Waiting when the caller sets no deadline.
    const DEFAULT: Duration = Duration::from_secs(10);

    /// For a call that started at `started` (its handler's clock, read once per request).
    pub fn within(deadline: Option<Duration>, started: Instant) -> Wait {
        let budget = deadline.map_or(Self::DEFAULT, |d| d.mul_f64(0.9));
        Wait {
            until: started + budget,
        }
    }
}

pub async fn get(
    state: &Arc<ApiState>,
    req: GetRequest,
    wait: Wait,
) -> Result<GetResponse, ConnectError> {
    state.limits.check_key(&req.key)?;
    let db = state.db()?;
    if req.min_lsn > db.applied_lsn() {
        let mut applied = db.watch_applied();
        let reached = tokio::time::timeout_at(
            wait.until.into(),
            applied.wait_for(|&lsn| lsn >= req.min_lsn),
        )
        .await;
        if !matches!(reached, Ok(Ok(_))) {
            return Err(ConnectError::unavailable(format!(
                "this node has applied LSN {}, not yet min_lsn {}; retry, or read from the \
                 primary",
                db.applied_lsn(),
                req.min_lsn
            )));
        }
    }
    Ok(item_response(super::gather::get(&db, &req.key).await))
}

pub async fn multi_get(
    state: &Arc<ApiState>,
    req: MultiGetRequest,
) -> Result<MultiGetResponse, ConnectError> {
    state.limits.check_batch(req.keys.len(), &state.metrics)?;
    for key in &req.keys {
        state.limits.check_key(key)?;
    }
    let db = state.db()?;
    Ok(MultiGetResponse {
        results: db
            .get_many(&req.keys)
            .into_iter()
            .map(item_response)
            .collect(),
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

pub async fn set(
    state: &Arc<ApiState>,
    req: SetRequest,
    wait: Wait,
) -> Result<SetResponse, ConnectError> {
    state.check_primary()?;
    state.limits.check_key(&req.key)?;
    state.limits.check_value(&req.value)?;
    check_ttl(req.ttl_ms)?;
    state.validator().check(&WriteCheck {
        delete: false,
        key: &req.key,
        value: &req.value,
        ttl_ms: req.ttl_ms,
    })?;
    let opts = SetOptions {
        expires_at_ms: expiry(req.ttl_ms),
        if_version: req.if_version,
    };
    let lsn = state
        .db()?
        .submit_set(req.key, req.value, opts)?
        .wait_async()
        .await?;
    wait_for_replicas(state, lsn, req.min_replicas, wait).await?;
    Ok(SetResponse { lsn })
}

pub async fn delete(
    state: &Arc<ApiState>,
    req: DeleteRequest,
) -> Result<DeleteResponse, ConnectError> {
    state.check_primary()?;
    state.limits.check_key(&req.key)?;
    state.validator().check(&WriteCheck {
        delete: true,
        key: &req.key,
        value: &[],
        ttl_ms: 0,
    })?;
    let outcome = state.db()?.submit_delete(req.key)?.wait_async().await?;
    Ok(DeleteResponse {
        found: outcome.found,
        lsn: outcome.lsn,
    })
}

pub async fn write(
    state: &Arc<ApiState>,
    req: WriteRequest,
    wait: Wait,
) -> Result<WriteResponse, ConnectError> {
    state.check_primary()?;
    if req.mutations.is_empty() {
        return Err(ConnectError::invalid_argument(
            "a write needs at least one mutation",
        ));
    }
    state
        .limits
        .check_batch(req.mutations.len(), &state.metrics)?;
    let mutations = {
        // Let go before the write is waited for: a guard held across an await pins the
        // chain's old version for as long.
        let validator = state.validator();
        req.mutations
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                to_mutation(state, &validator, m)
                    .map_err(|e| ConnectError::new(e.code, format!("mutation {i}: {}", e.message)))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let lsn = state.db()?.submit_write(mutations)?.wait_async().await?;
    wait_for_replicas(state, lsn, req.min_replicas, wait).await?;
    Ok(WriteResponse { lsn })
}

/// One mutation of a batch, checked and validated: a batch is validated entry by entry, and
/// one veto refuses the whole batch.
fn to_mutation(
    state: &ApiState,
    validator: &Validator,
    m: Mutation,
) -> Result<wal::Mutation, ConnectError> {
    state.limits.check_key(&m.key)?;
    match Op::try_from(m.op) {
        Ok(Op::Set) => {
            state.limits.check_value(&m.value)?;
            check_ttl(m.ttl_ms)?;
            validator.check(&WriteCheck {
                delete: false,
                key: &m.key,
                value: &m.value,
                ttl_ms: m.ttl_ms,
            })?;
            Ok(wal::Mutation::Set {
                key: m.key,
                value: m.value,
                expires_at_ms: expiry(m.ttl_ms),
            })
        }
        Ok(Op::Delete) => {
            validator.check(&WriteCheck {
                delete: true,
                key: &m.key,
                value: &[],
                ttl_ms: 0,
            })?;
            Ok(wal::Mutation::Delete { key: m.key })
        }
        Ok(Op::Unspecified) | Err(_) => Err(ConnectError::invalid_argument(format!(
            "op must be OP_SET (1) or OP_DELETE (2), got {}",
            m.op
        ))),
    }
}

/// WAIT semantics: the write is applied on the primary whatever happens; the reply waits
/// until `count` replicas acknowledged `lsn`, or says that they have not yet.
async fn wait_for_replicas(
    state: &ApiState,
    lsn: u64,
    count: u32,
    wait: Wait,
) -> Result<(), ConnectError> {
    if count == 0 {
        return Ok(());
    }
    let confirmed = state
        .replication()?
        .registry()
        .wait_for_acks(lsn, count as usize, wait.until)
        .await;
    if confirmed >= count as usize {
        return Ok(());
    }
    Err(ConnectError::new(
        Code::DeadlineExceeded,
        format!(
            "the write (LSN {lsn}) is applied on the primary but confirmed by only {confirmed} \
             of the {count} replicas asked for before the deadline; it is not rolled back"
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
