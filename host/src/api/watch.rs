//! `KVStore/Watch`: a server stream of the changes to keys under a prefix, as they commit.
//!
//! The stream first replays the log after `from_lsn`, then follows new commits (woken by the
//! store's applied-LSN watch, no polling). Every response carries the LSN delivered through,
//! so a client resumes a broken watch without gaps or repeats; while nothing matches, a
//! heartbeat carries only that LSN. The stream ends with an error when the log no longer holds
//! `from_lsn` or the node shuts down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::codec::Codec;
use super::connect::{self, ResponseBody, envelope};
use super::error::{Code, ConnectError};
use super::kv::push_entries;
use super::proto::{Entry, WatchRequest, WatchResponse};
use super::state::ApiState;
use crate::db::DbError;
use crate::wal::{LogReader, WalError};

/// How often an idle watch says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Records read from the log per step, so one watcher never holds a huge batch.
const RECORDS_PER_STEP: usize = 1024;

pub async fn watch(
    state: &Arc<ApiState>,
    codec: Codec,
    req: WatchRequest,
) -> Result<Response<ResponseBody>, ConnectError> {
    let db = state.db()?;
    let applied = db.watch_applied();
    let from = if req.from_lsn == 0 {
        db.applied_lsn()
    } else {
        req.from_lsn
    };
    let (tx, rx) = mpsc::channel(16);
    // Subscribed before the response leaves, so a shutdown that starts right after cannot be
    // missed by a pump that has not run yet.
    let shutdown = state.shutdown_signal();
    tokio::spawn(pump(
        Arc::clone(state),
        codec,
        req.prefix,
        from,
        tx,
        applied,
        shutdown,
    ));
    Ok(stream_response(codec, rx))
}

/// The response of a server stream whose envelopes arrive on `rx`.
pub(super) fn stream_response(codec: Codec, rx: mpsc::Receiver<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::builder().status(StatusCode::OK);
    for (name, value) in connect::stream_response_headers(codec) {
        response = response.header(name, value);
    }
    response
        .body(ResponseBody::Stream(rx))
        .expect("valid headers")
}

async fn pump(
    state: Arc<ApiState>,
    codec: Codec,
    prefix: Bytes,
    mut cursor: u64,
    tx: mpsc::Sender<Bytes>,
    mut applied: tokio::sync::watch::Receiver<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let send = |message: WatchResponse| envelope(0, &codec.encode(&message));
    // One reader for the whole watch, so each record is read from disk once.
    let mut reader = None;
    let outcome: Result<(), ConnectError> = loop {
        if *shutdown.borrow() {
            break Err(shutting_down(cursor));
        }
        let step = {
            let prefix = prefix.clone();
            let mut kept = reader.take();
            let done = state
                .blocking(move |db| {
                    let step = read_step(db, &mut kept, cursor, &prefix);
                    Ok((step, kept))
                })
                .await;
            match done {
                Ok((step, kept)) => {
                    reader = kept;
                    step
                }
                Err(e) => Err(e),
            }
        };
        match step {
            Ok((entries, last)) if last > cursor => {
                cursor = last;
                if !entries.is_empty()
                    && tx
                        .send(send(WatchResponse {
                            entries,
                            lsn: cursor,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { break Ok(()) },
            () = tokio::time::sleep(HEARTBEAT) => {
                if tx.send(send(WatchResponse { entries: Vec::new(), lsn: cursor })).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => break Err(shutting_down(cursor)),
            () = tx.closed() => return,
        }
    };
    let _ = tx.send(connect::end_stream(outcome.err().as_ref())).await;
}

/// The matching entries of the next committed records after `cursor`, and the LSN read through.
fn read_step(
    db: &crate::db::Db,
    kept: &mut Option<LogReader>,
    cursor: u64,
    prefix: &[u8],
) -> Result<(Vec<Entry>, u64), ConnectError> {
    let log_error = |e: DbError| match e {
        DbError::Wal(WalError::Trimmed { requested, oldest }) => trimmed_error(requested, oldest),
        other => other.into(),
    };
    let reader = match kept {
        Some(reader) => {
            db.read_log_on(reader);
            reader
        }
        None => kept.insert(db.read_log(cursor).map_err(log_error)?),
    };
    let mut entries = Vec::new();
    let mut last = cursor;
    let mut record_entries = Vec::new();
    for record in reader.by_ref().take(RECORDS_PER_STEP) {
        let record = record.map_err(|e| log_error(DbError::from(e)))?;
        last = record.lsn;
        push_entries(&mut record_entries, &record);
        entries.extend(
            record_entries
                .drain(..)
                .filter(|e: &Entry| e.key.starts_with(prefix)),
        );
    }
    Ok((entries, last))
}

/// A response body fed by a channel: each item is one envelope.
fn shutting_down(cursor: u64) -> ConnectError {
    ConnectError::unavailable(format!(
        "the node is shutting down; resume the watch with from_lsn {cursor}"
    ))
}

/// A watch that cannot go on (the log no longer holds `from_lsn`) is an `out_of_range` error.
fn trimmed_error(requested: u64, oldest: u64) -> ConnectError {
    ConnectError::new(
        Code::OutOfRange,
        format!(
            "the log no longer holds LSN {requested} (the oldest kept is {oldest}); start a \
             new watch with from_lsn 0 after reading the current values"
        ),
    )
}
