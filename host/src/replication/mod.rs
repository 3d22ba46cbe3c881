//! Replication: one primary, any number of read replicas, each with its own WAL.
//!
//! A replica dials its primary's `Replication/Subscribe` and keeps the primary's LSNs in its
//! own log, so "applied through LSN n" means the same history on every node of a replication
//! ID. The primary keeps its log for replicas that still need it (`registry`), bounded by
//! `backlog_max` and `backlog_max_age`; a replica that falls further behind gets a full
//! resync. Roles change at run time: `Follow` makes a node a replica (or a primary again) and
//! `Promote` makes a replica a primary with a new history that continues the old one.
//!
//! Nothing here knows about HTTP: the API layer hands in requests and takes out messages.

mod follower;
pub mod identity;
mod primary;
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, RwLock};

pub use follower::FollowConfig;
pub use primary::{Outbox, serve as serve_subscription};
pub use registry::Registry;

use crate::api::proto::{PrimaryLinkStatus, PromoteResponse, ReplicaStatus};
use crate::db::{Db, DbError, DbOptions};
use follower::Follower;
use identity::{History, IdentityError, NodeFile, new_id};

/// Where the node's store is published for request handlers: swapped whole by a full resync.
pub type StoreSlot = ArcSwapOption<Db>;

/// How often the primary recomputes how much log its replicas need.
const RETENTION_EVERY: Duration = Duration::from_secs(1);

/// Replication settings of a node.
#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    /// The primary to follow from the configuration (`primary.address`), if any.
    pub primary: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// How clients and primaries reach this node (`host:port`).
    pub advertise: String,
    /// A replica acknowledges at least this often (`primary.sync_interval`).
    pub ack_interval: Duration,
    pub allow_full_resync_from_empty: bool,
    /// Most WAL bytes a primary keeps for lagging replicas.
    pub backlog_max: u64,
    /// How long a disconnected replica keeps holding the log back.
    pub backlog_max_age: Duration,
    /// TLS and credentials of the link to a primary.
    pub link: crate::client::ClientOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Store(#[from] DbError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("this node is not a replica: only a replica can be promoted")]
    NotReplica,
    #[error("the store is not open")]
    NoStore,
}

/// What the follower and the role changes share.
pub(crate) struct Shared {
    root: PathBuf,
    store: Arc<StoreSlot>,
    db_options: DbOptions,
    node: Mutex<NodeFile>,
    history: Mutex<History>,
}

impl Shared {
    fn db(&self) -> Option<Arc<Db>> {
        self.store.load_full()
    }

    /// A fresh directory for a store built by a full resync.
    fn new_store_dir(&self) -> Result<(String, PathBuf), IdentityError> {
        let name = format!("store-{}", &new_id()[..12]);
        let dir = self.root.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::wal::WalError::io("create directory", &dir, e))?;
        Ok((name, dir))
    }

    /// Make the store in `name` the node's store: on disk first (one atomic rewrite of
    /// `NODE`), then for requests; the old store is closed and deleted.
    async fn switch_store(
        &self,
        name: &str,
        db: Arc<Db>,
        history: History,
    ) -> Result<(), IdentityError> {
        let old_name = {
            let mut node = self.node.lock();
            let old = std::mem::replace(&mut node.store, name.to_owned());
            node.save(&self.root)?;
            old
        };
        *self.history.lock() = history;
        let old = self.store.swap(Some(db));
        let root = self.root.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(old) = old
                && let Err(e) = old.close()
            {
                tracing::warn!(error = %e, "closing the replaced store failed");
            }
            remove_store(&root, &old_name);
        })
        .await;
        Ok(())
    }
}

/// Delete the store `name` under `root` ("" = the one kept in `root` itself).
fn remove_store(root: &Path, name: &str) {
    let result = if name.is_empty() {
        ["wal", "snap"]
            .iter()
            .map(|d| std::fs::remove_dir_all(root.join(d)))
            .chain([std::fs::remove_file(root.join("HISTORY"))])
            .find(|r| {
                r.as_ref()
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound)
            })
            .unwrap_or(Ok(()))
    } else {
        std::fs::remove_dir_all(root.join(name))
    };
    if let Err(e) = result {
        tracing::warn!(root = %root.display(), store = name, error = %e, "cannot delete an old store");
    }
}

/// Delete stores a crash left behind mid-resync (any `store-*` that `NODE` does not name).
fn remove_leftovers(root: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("store-") && name != current {
            tracing::info!(store = %name, "deleting the store of an unfinished full resync");
            remove_store(root, &name);
        }
    }
}

/// A node's replication role and machinery.
pub struct Replication {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    options: ReplicationOptions,
    /// The follower while this node is a replica.
    follower: tokio::sync::Mutex<Option<Follower>>,
    /// The primary's address while this node is a replica, for redirects (read per write).
    primary: RwLock<Option<String>>,
    /// The follower's link figures while this node is a replica.
    link: RwLock<Option<Arc<Mutex<PrimaryLinkStatus>>>>,
    /// The node's runtime, set by `start`: a follower started by a request (`Follow`,
    /// `Promote`) runs there, not on the connection thread that served the request.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Replication {
    /// Open the node's store in `root` as its `NODE` file says (blocking: recovery runs
    /// here) and publish it in `store`. A primary starts a new history that continues the
    /// recovered one (its log may have lost an unsynced tail that a replica saw, so the old
    /// ID is only trusted up to what was recovered).
    pub fn open(
        root: &Path,
        mut db_options: DbOptions,
        options: ReplicationOptions,
        store: Arc<StoreSlot>,
    ) -> Result<Replication, ReplicationError> {
        let node = NodeFile::load_or_create(root)?;
        remove_leftovers(root, &node.store);
        let follow = options.primary.clone().or_else(|| node.follow.clone());
        if follow.is_some() {
            // A replica holds what its primary sends: the primary expires and evicts.
            db_options.active_expiry = false;
            db_options.max_entries = 0;
            db_options.max_memory = 0;
        }
        let mut opts = db_options.clone();
        opts.dir = node.store_dir(root);
        let db = Db::open(opts)?;
        let mut history = History::load(db.dir())?;
        if follow.is_none() {
            history = history.fork(db.applied_lsn());
            history.save(db.dir())?;
        }
        store.store(Some(Arc::new(db)));
        let registry = Arc::new(Registry::new(options.backlog_max_age));
        Ok(Replication {
            shared: Arc::new(Shared {
                root: root.to_owned(),
                store,
                db_options,
                node: Mutex::new(node),
                history: Mutex::new(history),
            }),
            registry,
            primary: RwLock::new(follow),
            link: RwLock::new(None),
            options,
            follower: tokio::sync::Mutex::new(None),
            runtime: std::sync::OnceLock::new(),
        })
    }

    /// Start following (a replica) and the primary's log retention task. Runs until
    /// `shutdown` is set.
    pub async fn start(self: &Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let primary = self.primary.read().clone();
        if let Some(primary) = primary {
            self.start_follower(primary, false).await;
        }
        tokio::spawn(Arc::clone(self).retain_log(shutdown));
    }

    /// Follow `primary`; `adopt` when an operator asked for it just now.
    async fn start_follower(&self, primary: String, adopt: bool) {
        let replica_id = self.shared.node.lock().replica_id.clone();
        let config = FollowConfig {
            primary: primary.clone(),
            replica_id,
            labels: self.options.labels.clone(),
            address: self.options.advertise.clone(),
            ack_interval: self.options.ack_interval,
            allow_full_resync_from_empty: self.options.allow_full_resync_from_empty,
            adopt,
            link: self.options.link.clone(),
        };
        if let Some(db) = self.shared.db() {
            db.set_active_expiry(false);
        }
        let mut follower = self.follower.lock().await;
        if let Some(old) = follower.take() {
            old.stop().await;
        }
        let runtime = self
            .runtime
            .get()
            .cloned()
            .unwrap_or_else(tokio::runtime::Handle::current);
        let started = Follower::start(&runtime, Arc::clone(&self.shared), config);
        *self.link.write() = Some(started.status());
        *follower = Some(started);
        *self.primary.write() = Some(primary);
    }

    async fn stop_follower(&self) -> bool {
        let old = self.follower.lock().await.take();
        *self.primary.write() = None;
        *self.link.write() = None;
        match old {
            Some(old) => {
                old.stop().await;
                true
            }
            None => false,
        }
    }

    /// Keep the log replicas still need: the lowest LSN a known replica acknowledged, but no
    /// more than `backlog_max` bytes of it.
    async fn retain_log(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Some(db) = self.shared.db() {
                let floor = match self.registry.needed_from() {
                    Some(needed) if self.is_primary() => {
                        (needed + 1).max(db.log_floor_within(self.options.backlog_max))
                    }
                    _ => u64::MAX,
                };
                db.set_retention_floor(floor);
            }
            tokio::select! {
                () = tokio::time::sleep(RETENTION_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The primary's address while this node is a replica.
    pub fn primary_address(&self) -> Option<String> {
        self.primary.read().clone()
    }

    pub fn is_primary(&self) -> bool {
        self.primary.read().is_none()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn history(&self) -> History {
        self.shared.history.lock().clone()
    }

    /// How other nodes reach this one.
    pub fn advertise(&self) -> &str {
        &self.options.advertise
    }

    pub fn replica_id(&self) -> String {
        self.shared.node.lock().replica_id.clone()
    }

    /// This node's replicas (on a primary).
    pub fn replicas(&self, primary_lsn: u64) -> Vec<ReplicaStatus> {
        self.registry.status(primary_lsn)
    }

    /// The link to the primary (on a replica).
    pub fn link(&self) -> Option<PrimaryLinkStatus> {
        let mut status = self.link.read().as_ref()?.lock().clone();
        if let Some(db) = self.shared.db() {
            status.applied_lsn = db.applied_lsn();
        }
        status.lag_entries = status.primary_lsn.saturating_sub(status.applied_lsn);
        Some(status)
    }

    /// Follow `primary` from now on, or stop following (`None`) and act as a primary; the
    /// choice is kept in the data directory so it survives restarts.
    pub async fn follow(&self, primary: Option<String>) -> Result<(), ReplicationError> {
        {
            let mut node = self.shared.node.lock();
            node.follow = primary.clone();
            node.save(&self.shared.root)?;
        }
        match primary {
            Some(primary) => self.start_follower(primary, true).await,
            None => {
                if self.stop_follower().await {
                    self.become_primary()?;
                }
            }
        }
        Ok(())
    }

    /// Become a primary with a new replication ID that continues this replica's history.
    pub async fn promote(&self) -> Result<PromoteResponse, ReplicationError> {
        if !self.stop_follower().await {
            return Err(ReplicationError::NotReplica);
        }
        {
            let mut node = self.shared.node.lock();
            node.follow = None;
            node.save(&self.shared.root)?;
        }
        let history = self.become_primary()?;
        Ok(PromoteResponse {
            replication_id: history.replication_id,
            secondary_replication_id: history.secondary_id,
            lsn: history.secondary_lsn,
        })
    }

    fn become_primary(&self) -> Result<History, ReplicationError> {
        let db = self.shared.db().ok_or(ReplicationError::NoStore)?;
        let history = self.shared.history.lock().fork(db.applied_lsn());
        history.save(db.dir())?;
        *self.shared.history.lock() = history.clone();
        db.set_active_expiry(true);
        tracing::info!(
            replication_id = %history.replication_id,
            lsn = history.secondary_lsn,
            "now a primary"
        );
        Ok(history)
    }

    /// Stop following (on shutdown), so the store is no longer written to.
    pub async fn shutdown(&self) {
        if let Some(follower) = self.follower.lock().await.take() {
            follower.stop().await;
        }
    }
}
