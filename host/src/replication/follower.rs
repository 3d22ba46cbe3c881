//! The replica's side: follow a primary's `Subscribe` stream, log and apply what it sends,
//! acknowledge what is applied, and reconnect (with a partial resync when possible) whenever
//! the link breaks.
//!
//! A full resync never wipes the replica first: the copy is written as a snapshot into a new
//! store directory and opened there, the log after it is applied, and only once that store
//! has reached the primary's `snapshot_end_lsn` does the node switch to it (one atomic rewrite
//! of the `NODE` file, then one swap of the store that requests see). Until then the old data
//! keeps serving reads.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::Shared;
use super::identity::History;
use crate::api::proto::{
    AckRequest, AckResponse, PrimaryLinkStatus, StreamEvent, SubscribeRequest, SubscribeResponse,
};
use crate::client::{Client, ClientError, ClientOptions, ServerStream};
use crate::clock::now_ms;
use crate::db::{Db, DbError};
use crate::storage::SnapshotEntry;
use crate::wal::snapshot::SnapshotWriter;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a follower is told to do.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The primary, `host:port` or a URL.
    pub primary: String,
    pub replica_id: String,
    pub labels: BTreeMap<String, String>,
    /// Where this node serves clients, as told to the primary.
    pub address: String,
    /// Acknowledge at least this often.
    pub ack_interval: Duration,
    /// Follow a primary that came back empty with a new history (wiping this replica).
    pub allow_full_resync_from_empty: bool,
    /// An operator told this node to follow `primary` (`AddReplica`/`Follow`): its first sync
    /// may replace whatever the node held. Cleared once a sync succeeds.
    pub adopt: bool,
    /// TLS and the `replication` token to present to the primary.
    pub link: ClientOptions,
}

/// Why one attempt to follow ended.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Store(#[from] DbError),
    #[error("{0}")]
    Identity(#[from] super::identity::IdentityError),
    #[error("the primary ended the stream")]
    Ended,
    #[error("unexpected message from the primary: {0}")]
    Protocol(String),
    #[error(
        "refusing to follow: the primary came back empty (or with less data than this replica) \
         under a new replication ID ({replid}), and following it would wipe this replica's \
         {keys} keys; restore the primary, or start this replica with \
         --allow-full-resync-from-empty (replication.allow_full_resync_from_empty)"
    )]
    EmptyPrimary { replid: String, keys: u64 },
    #[error("stopped")]
    Stopped,
}

/// A running follower; dropping it stops it.
pub struct Follower {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    status: Arc<Mutex<PrimaryLinkStatus>>,
}

impl Follower {
    /// Start following on `runtime`; the link runs until `stop`.
    pub(super) fn start(
        runtime: &tokio::runtime::Handle,
        shared: Arc<Shared>,
        config: FollowConfig,
    ) -> Follower {
        let (stop, stopped) = watch::channel(false);
        let status = Arc::new(Mutex::new(PrimaryLinkStatus {
            address: config.primary.clone(),
            state: "connecting".into(),
            ..PrimaryLinkStatus::default()
        }));
        let task = runtime.spawn(run(shared, config, Arc::clone(&status), stopped));
        Follower {
            stop,
            task: Some(task),
            status,
        }
    }

    /// The link's figures as they change (read by status and metrics).
    pub fn status(&self) -> Arc<Mutex<PrimaryLinkStatus>> {
        Arc::clone(&self.status)
    }

    /// Stop following and wait until the follower has let go of the store.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn run(
    shared: Arc<Shared>,
    config: FollowConfig,
    status: Arc<Mutex<PrimaryLinkStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut config = config;
    // Histories this follower refused: it keeps refusing them even once their primary holds
    // data again, so a wiped primary that takes a few writes cannot wipe the replica.
    let mut refused = HashSet::new();
    loop {
        if *stop.borrow() {
            return;
        }
        status.lock().state = "connecting".into();
        let started = Instant::now();
        let outcome = follow_once(&shared, &mut config, &status, &mut stop, &mut refused).await;
        match outcome {
            Err(FollowError::Stopped) => return,
            Err(e) => {
                let refused = matches!(e, FollowError::EmptyPrimary { .. });
                tracing::warn!(primary = %config.primary, error = %e, "replication link down");
                let mut s = status.lock();
                s.state = if refused { "refused" } else { "disconnected" }.into();
                s.last_error = e.to_string();
            }
            Ok(()) => status.lock().state = "disconnected".into(),
        }
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_millis(50);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn follow_once(
    shared: &Arc<Shared>,
    config: &mut FollowConfig,
    status: &Mutex<PrimaryLinkStatus>,
    stop: &mut watch::Receiver<bool>,
    refused: &mut HashSet<String>,
) -> Result<(), FollowError> {
    let mut db = shared.db().ok_or(FollowError::Stopped)?;
    let history = shared.history.lock().clone();
    let client = Client::with_options(&config.primary, &config.link)?;
    let request = SubscribeRequest {
        replication_id: history.replication_id.clone(),
        from_lsn: db.applied_lsn(),
        replica_id: config.replica_id.clone(),
        labels: config.labels.clone().into_iter().collect(),
        address: config.address.clone(),
    };
    let mut stream: ServerStream<SubscribeResponse> = client
        .server_stream("kvstore.v1.Replication/Subscribe", &request)
        .await?;
    let hello = next(&mut stream, stop).await?;
    if hello.event != StreamEvent::Hello as i32 {
        return Err(FollowError::Protocol(format!(
            "expected HELLO first, got event {}",
            hello.event
        )));
    }
    let (acked, ack_rx) = watch::channel(db.applied_lsn());
    let acker = tokio::spawn(ack_loop(
        client.clone(),
        config.clone(),
        hello.replication_id.clone(),
        ack_rx,
    ));
    let _stop_acker = AbortOnDrop(acker);
    if hello.full_resync {
        let keys = db.stats().keys;
        // A primary of another history that holds nothing, or less log than this replica,
        // lost its data (a wiped or replaced data directory): following it would wipe this
        // replica too.
        let lost = hello.primary_empty
            || hello.primary_lsn < db.applied_lsn()
            || refused.contains(&hello.replication_id);
        if hello.replication_id != history.replication_id
            && keys > 0
            && lost
            && !config.allow_full_resync_from_empty
            && !config.adopt
        {
            refused.insert(hello.replication_id.clone());
            return Err(FollowError::EmptyPrimary {
                replid: hello.replication_id,
                keys,
            });
        }
        status.lock().state = "full-sync".into();
        status.lock().full_syncs += 1;
        tracing::info!(primary = %config.primary, snapshot_lsn = hello.snapshot_lsn, "full resync");
        db = full_resync(shared, &hello, &mut stream, stop, status, &acked).await?;
    } else {
        if hello.replication_id != history.replication_id {
            // The primary continued our history under a new ID (a promotion or a restart):
            // adopt it, remembering the old one up to where we were.
            let adopted = History {
                replication_id: hello.replication_id.clone(),
                secondary_id: history.replication_id.clone(),
                secondary_lsn: request.from_lsn,
            };
            adopted.save(db.dir())?;
            *shared.history.lock() = adopted;
        }
        status.lock().partial_syncs += 1;
        tracing::info!(primary = %config.primary, from_lsn = request.from_lsn, "partial resync");
    }
    config.adopt = false;
    {
        let mut s = status.lock();
        s.state = "streaming".into();
        s.last_error.clear();
    }
    loop {
        let message = next(&mut stream, stop).await?;
        handle_stream_message(&db, &message, status, &acked).await?;
    }
}

/// Apply one message of the log-following phase.
async fn handle_stream_message(
    db: &Arc<Db>,
    message: &SubscribeResponse,
    status: &Mutex<PrimaryLinkStatus>,
    acked: &watch::Sender<u64>,
) -> Result<(), FollowError> {
    {
        let mut s = status.lock();
        s.primary_lsn = message.primary_lsn;
        s.lag_ms = if db.applied_lsn() >= message.primary_lsn {
            0
        } else {
            now_ms().saturating_sub(message.primary_time_ms.max(0) as u64)
        };
    }
    match StreamEvent::try_from(message.event) {
        Ok(StreamEvent::Records) => {
            let frames = message.records.clone();
            let db2 = Arc::clone(db);
            let applied = tokio::task::spawn_blocking(move || db2.apply_replicated(&frames))
                .await
                .map_err(|e| FollowError::Protocol(format!("apply task failed: {e}")))??;
            acked.send_replace(applied);
            Ok(())
        }
        Ok(StreamEvent::Heartbeat) => Ok(()),
        _ => Err(FollowError::Protocol(format!(
            "unexpected event {} while following the log",
            message.event
        ))),
    }
}

/// Receive the copy into a new store directory, catch it up to `snapshot_end_lsn`, then
/// switch the node to it. Returns the new store.
async fn full_resync(
    shared: &Arc<Shared>,
    hello: &SubscribeResponse,
    stream: &mut ServerStream<SubscribeResponse>,
    stop: &mut watch::Receiver<bool>,
    status: &Mutex<PrimaryLinkStatus>,
    acked: &watch::Sender<u64>,
) -> Result<Arc<Db>, FollowError> {
    let (name, dir) = shared.new_store_dir()?;
    let snapshot_lsn = hello.snapshot_lsn;
    let writer = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            SnapshotWriter::create(&crate::db::snap_dir(&dir), snapshot_lsn, now_ms())
        })
        .await
        .map_err(|e| FollowError::Protocol(format!("snapshot task failed: {e}")))?
        .map_err(DbError::from)?
    };
    let mut writer = Some(writer);
    let end_lsn = loop {
        let message = next(stream, stop).await?;
        match StreamEvent::try_from(message.event) {
            Ok(StreamEvent::Snapshot) => {
                let mut w = writer.take().expect("kept between chunks");
                let entries: Vec<SnapshotEntry> = message
                    .items
                    .into_iter()
                    .map(|item| SnapshotEntry {
                        key: item.key,
                        value: item.value,
                        expires_at_ms: item.expires_at_ms.max(0) as u64,
                        version: item.version,
                    })
                    .collect();
                let w = tokio::task::spawn_blocking(move || {
                    entries.iter().try_for_each(|e| w.write(e)).map(|()| w)
                })
                .await
                .map_err(|e| FollowError::Protocol(format!("snapshot task failed: {e}")))?
                .map_err(DbError::from)?;
                writer = Some(w);
            }
            Ok(StreamEvent::SnapshotEnd) => break message.snapshot_end_lsn,
            Ok(StreamEvent::Heartbeat) => {}
            _ => {
                return Err(FollowError::Protocol(format!(
                    "unexpected event {} during a full resync",
                    message.event
                )));
            }
        }
    };
    let writer = writer.take().expect("kept between chunks");
    let mut options = shared.db_options.clone();
    options.dir = dir.clone();
    let db = tokio::task::spawn_blocking(move || {
        writer.finish().map_err(DbError::from)?;
        Db::open(options)
    })
    .await
    .map_err(|e| FollowError::Protocol(format!("open task failed: {e}")))??;
    let db = Arc::new(db);
    let history = History {
        replication_id: hello.replication_id.clone(),
        secondary_id: String::new(),
        secondary_lsn: 0,
    };
    history.save(&dir)?;
    // Catch the new store up to where the copy is consistent before anyone reads it.
    while db.applied_lsn() < end_lsn {
        let message = next(stream, stop).await?;
        handle_stream_message(&db, &message, status, acked).await?;
    }
    shared.switch_store(&name, Arc::clone(&db), history).await?;
    tracing::info!(
        lsn = db.applied_lsn(),
        keys = db.stats().keys,
        "full resync complete"
    );
    Ok(db)
}

/// The next message, or why there is none.
async fn next(
    stream: &mut ServerStream<SubscribeResponse>,
    stop: &mut watch::Receiver<bool>,
) -> Result<SubscribeResponse, FollowError> {
    tokio::select! {
        message = stream.next() => match message {
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => Err(e.into()),
            None => Err(FollowError::Ended),
        },
        _ = stop.changed() => Err(FollowError::Stopped),
    }
}

/// Acknowledge the applied LSN right after it changes, and at least every `ack_interval`.
async fn ack_loop(
    client: Client,
    config: FollowConfig,
    replication_id: String,
    mut applied: watch::Receiver<u64>,
) {
    let client = client.with_timeout(Duration::from_secs(5));
    loop {
        let lsn = *applied.borrow_and_update();
        let ack = AckRequest {
            replica_id: config.replica_id.clone(),
            replication_id: replication_id.clone(),
            applied_lsn: lsn,
        };
        if let Err(e) = client
            .call::<_, AckResponse>("kvstore.v1.Replication/Ack", &ack)
            .await
        {
            tracing::debug!(error = %e, "ack failed");
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(config.ack_interval) => {}
        }
    }
}

/// Aborts a task when dropped, so a follower attempt never leaves its acker behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
