//! The node's configuration: a YAML file, overridden by `WASMKV_*` environment variables.
//!
//! ```yaml
//! data_dir: ./data          # LOCK, wal/ and snap/ live here
//! server: { address: 127.0.0.1, port: 8080 }
//! wal: { sync: interval, sync_interval: 1s, max_file_size: 64MiB }
//! storage: { max_entries: 0, max_memory: 512MB, eviction_policy: lru }
//! primary: { address: "primary:8080" }   # present = this node is a replica
//! plugins: { dir: ./plugins, limits: { memory: 16MiB, deadline: 2ms }, validate: [...] }
//! ```
//!
//! The seed's files load unchanged: `wal.directory` is another name for `data_dir`, and
//! `master` for `primary`. Durations need a unit (`250ms`, `1s`, `2m`, `1h`). Sizes are bytes
//! (`512`) or a number with a unit, where `KB`/`MB`/`GB`/`TB` are powers of 1000 and
//! `KiB`/`MiB`/`GiB`/`TiB` powers of 1024: `100MB` is 100,000,000 bytes, `64MiB` is 64 × 2^20.
//!
//! Every single key can be overridden by a variable `WASMKV_<SECTION>__<KEY>` (any case; two
//! underscores between levels since keys contain one), e.g. `WASMKV_SERVER__PORT=9000`,
//! `WASMKV_DATA_DIR` for the top-level key, and one more level for a nested section:
//! `WASMKV_PLUGINS__LIMITS__MEMORY=32MiB`. The plugin chains (`plugins.validate`, `evict`,
//! `replicate`; see [`PluginsConfig`]) are lists with nested values and are set in the file
//! only. `config/primary.yaml` documents every key.
//!
//! Any mistake is an error naming where it is (`file:line:column` or the variable) and the
//! key path: a node that starts with a setting silently ignored is worse than one that does
//! not start.

mod auth;
mod env;
mod plugins;
mod reader;
mod settings;
mod yaml;

pub use auth::AuthConfig;
pub use plugins::{
    EvictStep, FilterOnError, PluginLimits, PluginsConfig, ReplicateStep, ValidateOnError,
    ValidateStep,
};

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::db::DbOptions;
use crate::storage::{DEFAULT_SAMPLE, EngineOptions, builtin_policy};
use crate::wal::{SyncPolicy, WalOptions};

/// Everything a node is started with. Build it with [`Config::load`]; the fields are public
/// so that the server and tests can read (and adjust) them, but [`Config::validate`] should
/// pass before [`Config::db_options`] is called.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the store keeps `LOCK`, `wal/` and `snap/`.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub wal: WalConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    /// The primary this node follows; `None` for a primary.
    pub primary: Option<PrimaryConfig>,
    pub replication: ReplicationConfig,
    /// Plugin directory, sandbox limits and chains (`plugins:`).
    pub plugins: PluginsConfig,
    /// Bearer tokens (`auth:`); no tokens = no authentication (loopback only).
    pub auth: AuthConfig,
    pub log: LogConfig,
}

/// Replication settings that apply whatever the node's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Most WAL bytes a primary keeps for replicas that lag or are away; past it they get a
    /// full resync instead of the primary filling its disk.
    pub backlog_max: u64,
    /// How long a disconnected replica keeps holding the primary's log back.
    pub backlog_max_age: Duration,
    /// Labels this node reports to its primary (replication filters match on them).
    pub labels: std::collections::BTreeMap<String, String>,
    /// How other nodes reach this one (`host:port`); empty = the listen address.
    pub advertise: String,
    /// Follow a primary that came back empty with a new history, wiping this replica.
    pub allow_full_resync_from_empty: bool,
    /// TLS of the links this node dials: to its primary, and to a replica it adds. Here
    /// rather than under `primary:` because a node started as a primary dials too (after
    /// `AddReplica`, or rejoining as a replica after a promotion elsewhere).
    pub tls: Option<crate::tls::ClientTls>,
    /// A file holding the `replication` token this node presents to its primary.
    pub token_file: Option<PathBuf>,
}

/// Where clients (and replicas) connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// An IP address or host name to listen on.
    pub address: String,
    /// 0 lets the OS pick a free port (tests use it).
    pub port: u16,
    /// Listen on an address other than loopback without `auth` tokens. Off by default: an
    /// open store on a network is a breach waiting for a port scan.
    pub allow_insecure_remote: bool,
    /// Serve TLS (`server.tls.cert`, `.key`, and `.client_ca` for mutual TLS).
    pub tls: Option<crate::tls::ServerTls>,
    /// Threads serving connections, each with its own event loop; 0 = one per CPU.
    pub threads: u64,
}

impl ServerConfig {
    /// `threads` with 0 resolved to the number of CPUs.
    pub fn connection_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

/// When an acknowledged write reaches stable storage; see [`SyncPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Always,
    Interval,
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    pub sync: SyncMode,
    /// How often `SyncMode::Interval` flushes: the most a power failure can lose.
    pub sync_interval: Duration,
    /// A new segment is started once the current one reaches this many bytes.
    pub max_file_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// Most entries kept (0 = no limit).
    pub max_entries: u64,
    /// Most bytes kept (0 = no limit).
    pub max_memory: u64,
    /// One of [`crate::storage::BUILTIN_POLICIES`].
    pub eviction_policy: String,
    /// Candidates sampled per eviction round.
    pub eviction_samples: usize,
    /// Writes are refused while the data volume has less free space than this.
    pub disk_reserve: u64,
    /// WAL bytes written between automatic snapshots (0 = never).
    pub snapshot_after: u64,
}

/// The limits the server enforces before a request reaches the store, so that no client
/// can exhaust the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    pub max_request_bytes: u64,
    /// Most keys in one `MultiGet` or `Write`.
    pub max_batch_keys: u64,
    /// Most client connections open at once (0 = no limit).
    pub max_connections: u64,
    /// How long a connection may take to send its first bytes, finish the TLS handshake,
    /// and send a request's headers (slow-loris).
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive once its headers did.
    pub body_read_timeout: Duration,
    /// Most requests in flight on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
}

/// The primary a replica follows (the seed's `master` section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// `host:port` of the primary.
    pub address: String,
    /// How often the replica asks the primary for news.
    pub sync_interval: Duration,
}

impl PrimaryConfig {
    /// The seed's interval, used when a replica's config does not say.
    pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive such as `info` or `wasmkv=debug,info`.
    pub level: String,
}

/// A 1-based line and column in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a configuration was refused. Each variant's message names where the bad setting came
/// from, so that an operator can go straight to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem in a file: `file:line:column: key.path: message`.
    #[error("{file}{}: {}{message}", at(position), key_prefix(key))]
    File {
        file: String,
        /// `None` for problems spanning keys, such as two limits that contradict each other.
        position: Option<Position>,
        /// The key path as written (`master.address`); `None` for YAML syntax errors.
        key: Option<String>,
        message: String,
    },
    /// A problem in an environment variable.
    #[error("environment variable {var}: {}{message}", key_prefix(key))]
    Env {
        var: String,
        key: Option<String>,
        message: String,
    },
    /// A setting that [`Config::validate`] refused, wherever it came from.
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn at(position: &Option<Position>) -> String {
    position.map_or_else(String::new, |p| format!(":{}:{}", p.line, p.column))
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map_or_else(String::new, |k| format!("{k}: "))
}

/// One value for one setting from one source, with where it came from (`O`: a position in a
/// file, or a variable name).
struct Assignment<O> {
    /// The key path as the source wrote it, aliases included.
    key: String,
    setting: &'static settings::Setting,
    value: String,
    origin: O,
}

impl Default for Config {
    /// A primary on 127.0.0.1:8080 keeping its data in `./data`, with the store's defaults.
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig {
                address: "127.0.0.1".to_owned(),
                port: 8080,
                allow_insecure_remote: false,
                tls: None,
                threads: 0,
            },
            wal: WalConfig {
                sync: SyncMode::Interval,
                sync_interval: Duration::from_secs(1),
                max_file_size: 64 << 20,
            },
            storage: StorageConfig {
                max_entries: 0,
                max_memory: 0,
                eviction_policy: "lru".to_owned(),
                eviction_samples: DEFAULT_SAMPLE,
                disk_reserve: 64 << 20,
                snapshot_after: 256 << 20,
            },
            limits: LimitsConfig {
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                max_request_bytes: 8 << 20,
                max_batch_keys: 10_000,
                max_connections: 10_000,
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                max_streams_per_connection: 256,
            },
            primary: None,
            replication: ReplicationConfig {
                backlog_max: 256 << 20,
                backlog_max_age: Duration::from_secs(3600),
                labels: std::collections::BTreeMap::new(),
                advertise: String::new(),
                allow_full_resync_from_empty: false,
                tls: None,
                token_file: None,
            },
            plugins: PluginsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig {
                level: "info".to_owned(),
            },
        }
    }
}

impl Config {
    /// The configuration in `path` (or the defaults, for `None`), overridden by the process's
    /// `WASMKV_*` variables, and validated.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::from_yaml_str(&text, &path.display().to_string())?
            }
            None => Config::default(),
        };
        config.apply_env(process_env()?)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration in `text`, validated; errors call the text `source_name`. The
    /// environment is not consulted (see [`Config::apply_env`]).
    pub fn from_yaml_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let doc = yaml::read(text, source_name)?;
        let mut config = Config::default();
        let file_error = |key: &str, position, message| ConfigError::File {
            file: source_name.to_owned(),
            position,
            key: Some(key.to_owned()),
            message,
        };
        if doc.primary_section.is_some() {
            // An empty `primary:` section still declares a replica; its address is checked
            // below, once every key was read.
            settings::primary_mut(&mut config);
        }
        config.assign(&doc.assignments, |a, message| {
            file_error(&a.key, Some(a.origin), message)
        })?;
        doc.chains.apply(&mut config.plugins);
        if let Some(tokens) = doc.tokens {
            config.auth.tokens = tokens;
        }
        if let (Some((section, position)), Some(primary)) = (&doc.primary_section, &config.primary)
            && primary.address.is_empty()
        {
            let key = format!("{section}.address");
            let message = settings::PRIMARY_ADDRESS_REQUIRED.to_owned();
            return Err(file_error(&key, Some(*position), message));
        }
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => file_error(&key, None, message),
            other => other,
        })?;
        Ok(config)
    }

    /// Override settings with `WASMKV_<SECTION>__<KEY>` variables among `vars` (names are
    /// case-insensitive; `WASMKV_DATA_DIR` for the top-level key). Variables with the prefix
    /// that do not look like configuration keys are left to whoever uses them. Does not
    /// validate combinations of settings: [`Config::load`] does that after.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let assignments = env::read(vars)?;
        self.assign(&assignments, |a, message| ConfigError::Env {
            var: a.origin.clone(),
            key: Some(a.key.clone()),
            message,
        })
    }

    /// Apply one source's assignments in order. Two names for one setting (`data_dir` and
    /// `wal.directory`, `primary` and `master`) with different values are refused: which
    /// one was meant cannot be guessed.
    fn assign<O: fmt::Display>(
        &mut self,
        assignments: &[Assignment<O>],
        error: impl Fn(&Assignment<O>, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for (i, a) in assignments.iter().enumerate() {
            let conflict = assignments[..i]
                .iter()
                .find(|b| b.setting.key == a.setting.key && b.value != a.value);
            if let Some(b) = conflict {
                let message = format!(
                    "{:?} conflicts with {} = {:?} ({}): both name the same setting; keep one",
                    a.value, b.key, b.value, b.origin
                );
                return Err(error(a, message));
            }
            (a.setting.apply)(self, &a.value)
                .and_then(|()| (a.setting.check)(self))
                .map_err(|message| error(a, message))?;
        }
        Ok(())
    }

    /// Check every setting and the ones that depend on each other. Loaders run this; call it
    /// again after changing fields by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for setting in settings::SETTINGS {
            (setting.check)(self).map_err(|message| ConfigError::Invalid {
                key: setting.key.to_owned(),
                message,
            })?;
        }
        self.plugins
            .check()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        settings::check_tls_complete(self)
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_key_bytes", limits.max_key_bytes),
            ("limits.max_value_bytes", limits.max_value_bytes),
        ] {
            if value > limits.max_request_bytes {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    message: format!(
                        "{value} bytes exceeds limits.max_request_bytes ({}): such a request \
                         could never be sent",
                        limits.max_request_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether this node follows a primary (a `primary` or `master` section is present).
    pub fn is_replica(&self) -> bool {
        self.primary.is_some()
    }

    /// The `host:port` of the primary this replica follows.
    pub fn primary_address(&self) -> Option<&str> {
        self.primary.as_ref().map(|p| p.address.as_str())
    }

    /// `address:port` to bind, with an IPv6 address in brackets (`[::1]:8080`).
    pub fn listen_addr(&self) -> String {
        let ServerConfig { address, port, .. } = &self.server;
        if address.parse::<Ipv6Addr>().is_ok() {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        }
    }

    /// The options to open the store with. A replica leaves expiry to its primary, whose
    /// Expire records it replays.
    ///
    /// # Panics
    /// If `storage.eviction_policy` names no built-in policy, which [`Config::validate`]
    /// (run by every loader) rules out.
    pub fn db_options(&self) -> DbOptions {
        let sync = match self.wal.sync {
            SyncMode::Always => SyncPolicy::Always,
            SyncMode::Interval => SyncPolicy::Interval(self.wal.sync_interval),
            SyncMode::Never => SyncPolicy::Never,
        };
        let policy = &self.storage.eviction_policy;
        DbOptions {
            dir: self.data_dir.clone(),
            wal: WalOptions {
                sync,
                max_file_size: self.wal.max_file_size,
                inline_fsync: self.server.connection_threads() == 1,
            },
            engine: EngineOptions::default(),
            max_entries: self.storage.max_entries,
            max_memory: self.storage.max_memory,
            eviction_policy: builtin_policy(policy)
                .unwrap_or_else(|| panic!("eviction policy {policy:?} was not validated")),
            eviction_samples: self.storage.eviction_samples,
            disk_reserve: self.storage.disk_reserve,
            snapshot_after_bytes: self.storage.snapshot_after,
            active_expiry: !self.is_replica(),
        }
    }
}

/// The process's variables. A configuration variable must be text; any other variable is not
/// ours to judge, so one that is not is skipped.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        match value.into_string() {
            Ok(value) => vars.push((name.to_owned(), value)),
            Err(_) if env::classify(name)?.is_some() => {
                return Err(ConfigError::Env {
                    var: name.to_owned(),
                    key: None,
                    message: "value is not valid UTF-8".to_owned(),
                });
            }
            Err(_) => {}
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests;
