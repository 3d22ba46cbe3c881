//! One node, wired together from a `Config`: the HTTP server and the store behind it.
//!
//! The listener is bound first and the store recovered after, so `/healthz` answers and
//! `/readyz` says "recovering" while a large WAL replays; requests get `unavailable` until
//! recovery is done. A recovery failure (a damaged WAL, a locked directory) stops the node
//! with that error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::lanes::Lanes;
use crate::api::{ApiState, Limits, Security, server};
use crate::auth::{Secret, TokenSet};
use crate::client::ClientOptions;
use crate::config::{AuthConfig, Config, ConfigError, PluginsConfig, SyncMode};
use crate::plugins::{LoadError, Plugins};
use crate::replication::{Replication, ReplicationError, ReplicationOptions};
use crate::storage::EvictionPolicy;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {addr} without authentication: anyone who can reach it could \
         read and write everything. Add auth tokens (`wasmkv token new`), listen on a loopback \
         address, or set server.allow_insecure_remote: true if the network is trusted"
    )]
    InsecureRemote { addr: SocketAddr },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] ReplicationError),
    #[error("cannot load the plugins: {0}")]
    Plugins(#[from] LoadError),
    #[error("the store task failed: {0}")]
    Task(String),
    #[error("cannot start the connection threads (server.threads): {0}")]
    Threads(#[source] std::io::Error),
}

pub struct Node;

impl Node {
    /// Bind, start serving, recover the store; returns once the node is ready.
    pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
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
        let tokens = token_set(&config.auth)?;
        if tokens.is_none() && !config.server.allow_insecure_remote && !addr.ip().is_loopback() {
            return Err(NodeError::InsecureRemote { addr });
        }
        if tokens.is_some() && config.server.tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "tokens travel in clear text: serve TLS (server.tls) on a network");
        }
        let server_options = server::ServerOptions {
            tls: config
                .server
                .tls
                .as_ref()
                .map(|t| t.server_config())
                .transpose()?,
            max_connections: usize::try_from(config.limits.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: config.limits.header_read_timeout,
            max_streams_per_connection: config.limits.max_streams_per_connection,
            pacing: if config.wal.sync == SyncMode::Always {
                server::Pacing::TurnEndUnlessWaited
            } else {
                server::Pacing::TurnEnd
            },
        };
        let link = ClientOptions {
            tls: config.replication.tls.clone(),
            token: read_secret(config.replication.token_file.as_deref())?,
        };
        // Fail now on link TLS files that cannot be used, not at the first reconnect.
        if let Some(tls) = &link.tls {
            tls.client_config()?;
            tls.fixed_server_name()?;
        }
        let mut opts = config.db_options();
        let plugins = load_plugins(&config.plugins, &config.data_dir).await?;
        let builtin_eviction = (Arc::clone(&opts.eviction_policy), opts.eviction_samples);
        if let Some((policy, sample)) = plugin_eviction(plugins.as_deref(), &config.plugins) {
            opts.eviction_policy = policy;
            opts.eviction_samples = sample;
        }
        let state = Arc::new(ApiState::new(
            Limits {
                max_key_bytes: config.limits.max_key_bytes as usize,
                max_value_bytes: config.limits.max_value_bytes as usize,
                max_request_bytes: config.limits.max_request_bytes as usize,
                max_batch_keys: usize::try_from(config.limits.max_batch_keys).unwrap_or(usize::MAX),
                body_read_timeout: config.limits.body_read_timeout,
            },
            Security {
                tokens,
                protect_metrics: config.auth.protect_metrics,
                link_tls: config.replication.tls.clone(),
            },
        ));
        let lanes = Lanes::start(config.server.connection_threads()).map_err(NodeError::Threads)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            Arc::clone(&state),
            server_options,
            lanes,
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(%addr, dir = %opts.dir.display(), "listening; recovering the store");
        let options = replication_options(&config, addr, link);
        let store = Arc::clone(&state.store);
        let opened = tokio::task::spawn_blocking(move || {
            let root = opts.dir.clone();
            Replication::open(&root, opts, options, store)
        })
        .await;
        let replication = match opened {
            Ok(Ok(replication)) => Arc::new(replication),
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
        let db = state.db().map_err(|e| NodeError::Task(e.message))?;
        tracing::info!(
            %addr,
            lsn = db.applied_lsn(),
            keys = db.stats().keys,
            recovery_ms = db.recovery().elapsed.as_millis() as u64,
            role = if replication.is_primary() { "primary" } else { "replica" },
            "ready"
        );
        replication.start(state.shutdown_signal()).await;
        if let Some(plugins) = plugins {
            plugins.watch()?;
            state.plugins.store(Some(plugins));
        }
        let _ = state.replication.set(replication);
        Ok(NodeHandle {
            addr,
            state,
            data_dir: config.data_dir.clone(),
            builtin_eviction,
            stop,
            server,
        })
    }
}

/// A running node.
pub struct NodeHandle {
    addr: SocketAddr,
    state: Arc<ApiState>,
    data_dir: PathBuf,
    /// The configured built-in eviction policy, for when a reload drops the evict chain.
    builtin_eviction: (Arc<dyn EvictionPolicy>, usize),
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl NodeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the plugin chains with those of `config` (SIGHUP). The new chains are loaded
    /// and checked first; on any error the running ones stay and the error is returned.
    pub async fn reload_plugins(&self, config: &PluginsConfig) -> Result<(), NodeError> {
        let plugins = load_plugins(config, &self.data_dir).await?;
        if let Some(plugins) = &plugins {
            plugins.watch()?;
        }
        if let Ok(db) = self.state.db() {
            let (policy, sample) = plugin_eviction(plugins.as_deref(), config)
                .unwrap_or_else(|| self.builtin_eviction.clone());
            db.set_eviction_policy(policy, sample);
        }
        self.state.plugins.store(plugins);
        tracing::info!("plugin chains reloaded");
        Ok(())
    }

    /// Replace the accepted tokens with those of `auth` (SIGHUP: rotation, revocation). On an
    /// error the running tokens stay. Turning authentication on or off takes a restart, since
    /// it decides which addresses the node may listen on.
    pub fn reload_tokens(&self, auth: &AuthConfig) -> Result<(), NodeError> {
        match (&self.state.tokens, token_set(auth)?) {
            (Some(running), Some(tokens)) => {
                tracing::info!(tokens = tokens.len(), "tokens reloaded");
                running.store(Arc::new(tokens));
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err(NodeError::Config(ConfigError::Invalid {
                key: "auth".into(),
                message: "turning authentication on or off takes a restart".into(),
            })),
        }
    }

    /// Stop accepting, let in-flight requests finish, then flush and fsync the WAL and
    /// release the data directory.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.state.begin_shutdown();
        let _ = self.stop.send(());
        let _ = self.server.await;
        let state = self.state;
        if let Some(replication) = state.replication.get() {
            replication.shutdown().await;
        }
        tokio::task::spawn_blocking(move || match state.store.load_full() {
            Some(db) => db.close(),
            None => Ok(()),
        })
        .await
        .map_err(|e| NodeError::Task(e.to_string()))?
        .map_err(|e| NodeError::Store(e.into()))?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The replication settings of `config`, for a node listening on `addr`.
fn replication_options(
    config: &Config,
    addr: SocketAddr,
    link: ClientOptions,
) -> ReplicationOptions {
    let r = &config.replication;
    ReplicationOptions {
        primary: config.primary_address().map(str::to_owned),
        labels: r.labels.clone(),
        advertise: if r.advertise.is_empty() {
            addr.to_string()
        } else {
            r.advertise.clone()
        },
        ack_interval: config
            .primary
            .as_ref()
            .map_or(crate::config::PrimaryConfig::DEFAULT_SYNC_INTERVAL, |p| {
                p.sync_interval
            }),
        allow_full_resync_from_empty: r.allow_full_resync_from_empty,
        backlog_max: r.backlog_max,
        backlog_max_age: r.backlog_max_age,
        link,
    }
}

/// The tokens the node accepts, `None` when it has no `auth` section.
fn token_set(auth: &AuthConfig) -> Result<Option<TokenSet>, NodeError> {
    Ok(if auth.is_enabled() {
        Some(auth.token_set()?)
    } else {
        None
    })
}

/// The secret in `path` (surrounding whitespace dropped), if a path is given.
fn read_secret(path: Option<&Path>) -> Result<Option<Secret>, NodeError> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::Invalid {
            key: "replication.token_file".into(),
            message: format!(
                "{} is empty; it should hold the replication token",
                path.display()
            ),
        }
        .into());
    }
    Ok(Some(Secret::new(token.to_owned())))
}

/// The plugins the config's chains name, compiled (or taken from the cache in the data
/// directory) off the async workers; `None` when no chain names one.
async fn load_plugins(
    config: &PluginsConfig,
    data_dir: &Path,
) -> Result<Option<Arc<Plugins>>, NodeError> {
    if config.is_empty() {
        return Ok(None);
    }
    let plugins = config.clone();
    // wasmtime wants an absolute cache directory.
    let cache = std::path::absolute(data_dir.join("plugin-cache")).map_err(|e| {
        NodeError::Plugins(LoadError::Runtime(format!("plugin cache directory: {e}")))
    })?;
    let loaded = tokio::task::spawn_blocking(move || Plugins::load(&plugins, Some(&cache)))
        .await
        .map_err(|e| NodeError::Task(e.to_string()))??;
    for info in loaded.list() {
        tracing::info!(plugin = %info.name, sha256 = %info.sha256, chains = ?info.chains, "plugin loaded");
    }
    Ok(Some(Arc::new(loaded)))
}

/// The eviction policy and sample size of an `evict` chain, if `plugins` has one.
fn plugin_eviction(
    plugins: Option<&Plugins>,
    config: &PluginsConfig,
) -> Option<(Arc<dyn EvictionPolicy>, usize)> {
    let policy = plugins?.evict.clone()?;
    Some((
        policy as Arc<dyn EvictionPolicy>,
        config.evict.as_ref()?.sample,
    ))
}
