//! One node, wired together from a `Config`: the HTTP server and the store behind it.
//!
//! The listener is bound first and the store recovered after, so `/healthz` answers and
//! `/readyz` says "recovering" while a large WAL replays; requests get `unavailable` until
//! recovery is done. A recovery failure (a damaged WAL, a locked directory) stops the node
//! with that error.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{ApiState, Limits, server};
use crate::config::Config;
use crate::db::{Db, DbError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "this node is configured as a replica of {primary} (the primary/master section), but \
         replication is not available in this version; remove that section to run a primary"
    )]
    ReplicaUnsupported { primary: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] DbError),
    #[error("the store task failed: {0}")]
    Task(String),
}

pub struct Node;

impl Node {
    /// Bind, start serving, recover the store; returns once the node is ready.
    pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
        if let Some(primary) = config.primary_address() {
            return Err(NodeError::ReplicaUnsupported {
                primary: primary.to_owned(),
            });
        }
        let listen = config.listen_addr();
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: listen,
            source,
        })?;
        let opts = config.db_options();
        let state = Arc::new(ApiState::new(Limits {
            max_key_bytes: config.limits.max_key_bytes as usize,
            max_value_bytes: config.limits.max_value_bytes as usize,
            max_request_bytes: config.limits.max_request_bytes as usize,
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, Arc::clone(&state), async {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, dir = %opts.dir.display(), "listening; recovering the store");
        let opened = tokio::task::spawn_blocking(move || Db::open(opts)).await;
        let db = match opened {
            Ok(Ok(db)) => db,
            failed => {
                drop(stop);
                let _ = server.await;
                return Err(match failed {
                    Ok(Err(e)) => NodeError::Store(e),
                    Err(e) => NodeError::Task(e.to_string()),
                    Ok(Ok(_)) => unreachable!("matched above"),
                });
            }
        };
        let recovery = db.recovery();
        tracing::info!(
            %addr,
            lsn = db.applied_lsn(),
            keys = db.stats().keys,
            recovery_ms = recovery.elapsed.as_millis() as u64,
            "ready"
        );
        let _ = state.store.set(db);
        Ok(NodeHandle {
            addr,
            state,
            stop,
            server,
        })
    }
}

/// A running node.
pub struct NodeHandle {
    addr: SocketAddr,
    state: Arc<ApiState>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl NodeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let in-flight requests finish, then flush and fsync the WAL and
    /// release the data directory.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.state.begin_shutdown();
        let _ = self.stop.send(());
        let _ = self.server.await;
        let state = self.state;
        tokio::task::spawn_blocking(move || match state.store.get() {
            Some(db) => db.close(),
            None => Ok(()),
        })
        .await
        .map_err(|e| NodeError::Task(e.to_string()))??;
        tracing::info!("stopped");
        Ok(())
    }
}
