//! What every request handler shares: the store (once recovered), the request limits, the
//! metrics.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::connect::RequestBody;
use super::error::{Code, ConnectError};
use super::head::Headers;
use super::metrics::Metrics;
use crate::auth::TokenSet;
use crate::db::{Db, DbError};
use crate::plugins::{Plugins, WriteCheck};
use crate::replication::{Replication, StoreSlot};

/// Request limits, checked before a request reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_request_bytes: usize,
    /// Most keys in one `MultiGet` or `Write`.
    pub max_batch_keys: usize,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_request_bytes: 8 << 20,
            max_batch_keys: 10_000,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Who may call the node, and how it calls others.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The accepted tokens; `None` = no authentication.
    pub tokens: Option<TokenSet>,
    /// Whether `/metrics` needs a token.
    pub protect_metrics: bool,
    /// TLS of the connections this node makes to other nodes (`AddReplica` tells the new
    /// replica to follow).
    pub link_tls: Option<crate::tls::ClientTls>,
}

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<(), ConnectError> {
        if key.is_empty() {
            return Err(ConnectError::invalid_argument(
                "key is required (it was empty)",
            ));
        }
        if key.len() > self.max_key_bytes {
            return Err(ConnectError::invalid_argument(format!(
                "key is {} bytes; the limit is {} (limits.max_key_bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// A batch (`MultiGet`, `Write`) of `len` keys is within `max_batch_keys`.
    pub fn check_batch(&self, len: usize, metrics: &Metrics) -> Result<(), ConnectError> {
        if len <= self.max_batch_keys {
            return Ok(());
        }
        metrics.refused("max_batch_keys");
        Err(ConnectError::new(
            Code::ResourceExhausted,
            format!(
                "the batch has {len} keys; the limit is {} per request (limits.max_batch_keys): \
                 split it",
                self.max_batch_keys
            ),
        ))
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), ConnectError> {
        if value.len() > self.max_value_bytes {
            return Err(ConnectError::invalid_argument(format!(
                "value is {} bytes; the limit is {} (limits.max_value_bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }
}

pub struct ApiState {
    /// Filled in when recovery finishes (requests before that get `unavailable`), and
    /// replaced whole when a replica completes a full resync.
    pub store: Arc<StoreSlot>,
    /// Set with the store: the node's replication role.
    pub replication: Arc<OnceLock<Arc<Replication>>>,
    /// The node's plugins, when its config names any; replaced whole by a reload (SIGHUP).
    pub plugins: Arc<ArcSwapOption<Plugins>>,
    pub limits: Limits,
    /// The accepted tokens, replaced whole on SIGHUP; `None` = no authentication, fixed for
    /// the node's life (so a node without tokens pays one branch per request, not an atomic
    /// load).
    pub tokens: Option<arc_swap::ArcSwap<TokenSet>>,
    pub protect_metrics: bool,
    /// See [`Security::link_tls`].
    pub link_tls: Option<crate::tls::ClientTls>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Set when the node begins shutting down, so long-lived streams end promptly.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// The answer to a request body that did not arrive within `limits.body_read_timeout`.
pub fn body_timed_out(timeout: Duration) -> ConnectError {
    ConnectError::new(
        Code::DeadlineExceeded,
        format!(
            "the request body did not arrive within {} (limits.body_read_timeout); nothing \
             was done",
            humantime::format_duration(timeout)
        ),
    )
}

impl ApiState {
    pub fn new(limits: Limits, security: Security) -> Self {
        let store = Arc::new(StoreSlot::empty());
        let replication = Arc::new(OnceLock::new());
        let plugins = Arc::new(ArcSwapOption::empty());
        ApiState {
            metrics: Metrics::new(
                Arc::clone(&store),
                Arc::clone(&replication),
                Arc::clone(&plugins),
            ),
            store,
            replication,
            plugins,
            limits,
            tokens: security.tokens.map(arc_swap::ArcSwap::from_pointee),
            protect_metrics: security.protect_metrics,
            link_tls: security.link_tls,
            started: Instant::now(),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Tell streams to end: the node is shutting down.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The store, for the duration of one request. A guard rather than an `Arc` clone: the
    /// clone's reference count is one cache line every request on every core would write.
    pub fn db(&self) -> Result<DbRef, ConnectError> {
        let guard = self.store.load();
        if guard.is_none() {
            return Err(recovering());
        }
        Ok(DbRef(guard))
    }

    pub fn replication(&self) -> Result<&Arc<Replication>, ConnectError> {
        self.replication.get().ok_or_else(recovering)
    }

    /// A request body of at most `max` bytes (the setting `limits.<limit>`), arriving within
    /// `limits.body_read_timeout`. Refusals are counted by limit.
    pub async fn read_body(
        &self,
        headers: &dyn Headers,
        body: RequestBody,
        max: usize,
        limit: &'static str,
    ) -> Result<bytes::Bytes, ConnectError> {
        let body = match body {
            RequestBody::Whole(whole) if whole.len() > max => {
                self.metrics.refused(limit);
                return Err(super::connect::too_large(max, limit));
            }
            RequestBody::Whole(whole) => return Ok(whole),
            RequestBody::Hyper(body) => body,
        };
        let timeout = self.limits.body_read_timeout;
        let read = super::connect::read_body(headers, body, max, limit);
        match tokio::time::timeout(timeout, read).await {
            Ok(Err(e)) if e.code == Code::ResourceExhausted => {
                self.metrics.refused(limit);
                Err(e)
            }
            Ok(read) => read,
            Err(_) => {
                self.metrics.refused("body_read_timeout");
                Err(body_timed_out(timeout))
            }
        }
    }

    /// The validate chain as loaded now, for one request: every write of a batch is then
    /// checked by the same chain even if a plugin reload lands meanwhile, and the chain is
    /// loaded once per request, not once per key.
    pub fn validator(&self) -> Validator {
        Validator(self.plugins.load())
    }

    /// Writes are taken by the primary only: on a replica, the error names the primary.
    pub fn check_primary(&self) -> Result<(), ConnectError> {
        match self.replication()?.primary_address() {
            Some(primary) => Err(ConnectError::not_primary(&primary)),
            None => Ok(()),
        }
    }

    /// Run a store call that may block (fsync, snapshot, log reads) off the async workers.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, ConnectError> {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let db = state.db()?;
            Ok(call(&db)?)
        })
        .await
        .map_err(|e| ConnectError::new(Code::Internal, format!("store call failed: {e}")))?
    }
}

fn recovering() -> ConnectError {
    ConnectError::unavailable("the node is recovering its data; retry shortly")
}

/// The validate chain one request's writes are checked by (see [`ApiState::validator`]).
pub struct Validator(arc_swap::Guard<Option<Arc<Plugins>>>);

impl Validator {
    /// Run the chain on one write: a veto is `permission_denied` with its reason.
    pub fn check(&self, write: &WriteCheck<'_>) -> Result<(), ConnectError> {
        match &*self.0 {
            Some(plugins) => plugins
                .validate
                .check(write)
                .map_err(|reason| ConnectError::new(Code::PermissionDenied, reason)),
            None => Ok(()),
        }
    }
}

/// The node's store as one request sees it (see [`ApiState::db`]).
pub struct DbRef(arc_swap::Guard<Option<Arc<Db>>>);

impl DbRef {
    /// A reference that outlives the request (a stream's).
    pub fn to_arc(&self) -> Arc<Db> {
        Arc::clone(self.0.as_ref().expect("checked when made"))
    }
}

impl std::ops::Deref for DbRef {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.0.as_ref().expect("checked when made")
    }
}
