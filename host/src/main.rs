//! The `wasmkv` binary: runs a node (`serve`), talks to one (`get`, `set`, `del`, `status`,
//! `digest`, `snapshot`, `watch`, `replica add|remove`, `promote`, `plugin list`), checks a
//! plugin file (`plugin check`), measures one under load (`bench`), and inspects or repairs
//! a stopped node's write-ahead log (`wal verify`, `wal dump`, `repair`). One binary, so an
//! operator has one thing to install and the offline tools always understand the WAL format
//! of the node they came with.
//!
//! This file is the command line's shape (clap) and the process's edges: logging, exit
//! status, signals. What each command does lives in `cli/`.

mod cli;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use cli::remote::Target;

const EXIT_STATUS: &str = "Exit status: 0 success, 1 key not found or WAL damaged, 2 any other \
                           error (the reason is printed on stderr as `error: ...`).";

#[derive(Parser)]
#[command(
    name = "wasmkv",
    version,
    about = "A replicated key-value store node, its client, and tools for its write-ahead log",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM (no config: a primary on 127.0.0.1:8080 with ./data)
    Serve {
        /// YAML configuration file
        #[arg(long, short, env = "WASMKV_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// As a replica, follow a primary that came back empty with a new history, wiping
        /// this node's data (replication.allow_full_resync_from_empty)
        #[arg(long)]
        allow_full_resync_from_empty: bool,
    },
    /// Print the value of KEY: its raw bytes, then a newline
    Get {
        /// The key (any bytes the shell can pass)
        key: OsString,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Store VALUE under KEY and print the write's LSN (the key's new version)
    Set {
        /// The key (any bytes the shell can pass)
        key: OsString,
        /// The value, stored as these bytes (it may start with `-`)
        #[arg(allow_hyphen_values = true)]
        value: OsString,
        /// Expire the key after this long (e.g. 10s, 5m, 1h 30m)
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        ttl: Option<Duration>,
        /// Compare-and-set: write only if the key's version is N (0: only if it does not exist)
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        /// Reply only once this many replicas acknowledged the write
        #[arg(long, value_name = "N", default_value_t = 0)]
        min_replicas: u32,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Delete KEY; prints `deleted`, or `not found` (exit status 1)
    #[command(visible_alias = "delete")]
    Del {
        /// The key (any bytes the shell can pass)
        key: OsString,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show a node's role, LSN, size and health
    Status {
        /// Print the status as one JSON object (every field, proto field names)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print a digest of the node's data, its LSN and key count (equal digests: equal data)
    Digest {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Make the node write a snapshot now; prints its LSN and entry count
    Snapshot {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print changes to keys under PREFIX as they commit, one line each, until Ctrl-C
    Watch {
        /// Only keys starting with these bytes (default: every key)
        #[arg(default_value = "")]
        prefix: OsString,
        /// First replay the changes after this LSN (default: only new changes)
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Attach nodes to the primary at --addr as its replicas, or detach them
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// Make the replica at --addr a primary; prints its new replication ID and LSN
    Promote {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List a node's plugins, or check a plugin file offline before installing it
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Load a node with a closed-loop workload; report throughput and latency percentiles
    ///
    /// Each connection keeps one request in flight. Fails (exit status 2) when more than 1%
    /// of the requests fail, naming the first error.
    Bench(Box<cli::bench::BenchArgs>),
    /// Inspect the write-ahead log of a data directory (offline: changes nothing)
    #[command(subcommand)]
    Wal(WalCommand),
    /// Make access tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Cut a damaged WAL at its first damage so the node can start again
    ///
    /// Everything from the damage on is lost (`wal verify` tells how much first). Refuses
    /// while a node holds the data directory.
    Repair {
        /// The data directory (the WAL is DIR/wal), or the WAL directory itself
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReplicaCommand {
    /// Tell the node at ADDR to follow the primary at --addr
    Add {
        /// The new replica's address (host:port or URL), as the primary can reach it
        address: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Tell the node at ADDR to stop following the primary at --addr
    Remove {
        /// The replica's address, as it was added
        address: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show each plugin the node at --addr runs: version, hooks, chains, call figures, state
    List {
        /// Print the list as one JSON object (every field, proto field names)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Load FILE as a node would (ABI v1, exports, wasmkv_init with the config) and call each
    /// hook once with a sample input; exit status 2 with the reason if anything fails
    Check {
        /// The plugin, NAME.wasm
        file: PathBuf,
        /// The step's config: a YAML file, or inline YAML (default: an empty mapping)
        #[arg(long, value_name = "YAML_FILE_OR_INLINE")]
        config: Option<String>,
        /// Check only this hook (default: every hook the module exports)
        #[arg(long, value_enum)]
        hook: Option<cli::plugin::Hook>,
        /// Longest one call may run (plugins.limits.deadline of the node it is meant for)
        #[arg(
            long,
            value_parser = humantime::parse_duration,
            default_value = "2ms",
            value_name = "DURATION"
        )]
        deadline: Duration,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the `auth.tokens` entry that lets it in
    ///
    /// The first line is the token: give it to its user, it is shown only now. The second is
    /// the config entry, which holds only the token's SHA-256.
    New {
        /// What the token may do: read, write (and read), admin (everything), or replication
        /// (what a replica needs)
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(wasmkv::auth::ROLES))]
        role: String,
        /// The name logs and errors give the token (default: ROLE-<first hex digits of its
        /// SHA-256>)
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Check every record of every segment, as start-up would, without cutting anything
    Verify {
        /// The data directory (the WAL is DIR/wal), or the WAL directory itself
        dir: PathBuf,
    },
    /// Print the intact records, one line per change (a batch gives one line per mutation)
    Dump {
        /// The data directory (the WAL is DIR/wal), or the WAL directory itself
        dir: PathBuf,
        /// Start at this LSN (default: the oldest record kept)
        #[arg(long, value_name = "LSN")]
        from: Option<u64>,
        /// Print at most N records
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Print values (escaped) instead of their lengths
        #[arg(long)]
        values: bool,
    },
}

/// Which node a client command talks to, and how long it waits.
#[derive(Args)]
struct NodeArgs {
    /// The node's address
    #[arg(
        long,
        env = "WASMKV_ADDR",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    addr: String,
    /// Give up after this long (e.g. 2s, 500ms); the node is told too, so it can stop early
    #[arg(
        long,
        value_parser = humantime::parse_duration,
        default_value = "10s",
        value_name = "DURATION"
    )]
    timeout: Duration,
    /// CA certificate(s) that signed the node's certificate, PEM (default: the public web
    /// PKI); with any TLS option, an address without a scheme means https://
    #[arg(long, env = "WASMKV_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate for a node that requires mutual TLS, PEM
    #[arg(long, env = "WASMKV_CERT", value_name = "FILE", requires = "tls_key")]
    cert: Option<PathBuf>,
    /// The private key of --cert, PEM
    #[arg(
        id = "tls_key",
        long = "key",
        env = "WASMKV_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    tls_key: Option<PathBuf>,
    /// Verify the node's certificate against this name instead of the address's host
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// A file holding the bearer token to send (default: the WASMKV_TOKEN variable). There
    /// is no --token: a command line is visible to every user of the machine
    #[arg(long, env = "WASMKV_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl From<NodeArgs> for Target {
    fn from(args: NodeArgs) -> Self {
        let tls = (args.ca.is_some() || args.cert.is_some() || args.server_name.is_some())
            .then_some(wasmkv::tls::ClientTls {
                ca: args.ca,
                cert: args.cert,
                key: args.tls_key,
                server_name: args.server_name,
            });
        Target {
            addr: args.addr,
            timeout: args.timeout,
            tls,
            token_file: args.token_file,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cli::error_line(&err));
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    use std::os::unix::ffi::OsStringExt;
    if let Command::Serve {
        config,
        allow_full_resync_from_empty,
    } = command
    {
        return serve(config.as_deref(), allow_full_resync_from_empty);
    }
    // The other commands only log what goes wrong inside the library (e.g. a WAL warning).
    init_tracing("warn")?;
    match command {
        Command::Serve { .. } => unreachable!("handled above"),
        Command::Get { key, node } => cli::remote::get(&node.into(), key.into_vec()),
        Command::Set {
            key,
            value,
            ttl,
            if_version,
            min_replicas,
            node,
        } => {
            let opts = wasmkv::client::SetOptions {
                ttl,
                if_version,
                min_replicas,
            };
            cli::remote::set(&node.into(), key.into_vec(), value.into_vec(), opts)
        }
        Command::Del { key, node } => cli::remote::delete(&node.into(), key.into_vec()),
        Command::Status { json, node } => cli::remote::status(&node.into(), json),
        Command::Digest { node } => cli::remote::digest(&node.into()),
        Command::Snapshot { node } => cli::remote::snapshot(&node.into()),
        Command::Watch { prefix, from, node } => {
            cli::remote::watch(&node.into(), prefix.into_vec(), from)
        }
        Command::Replica(ReplicaCommand::Add { address, node }) => {
            cli::remote::add_replica(&node.into(), &address)
        }
        Command::Replica(ReplicaCommand::Remove { address, node }) => {
            cli::remote::remove_replica(&node.into(), &address)
        }
        Command::Promote { node } => cli::remote::promote(&node.into()),
        Command::Plugin(PluginCommand::List { json, node }) => {
            cli::plugin::list(&node.into(), json)
        }
        Command::Plugin(PluginCommand::Check {
            file,
            config,
            hook,
            deadline,
        }) => cli::plugin::check(&file, config.as_deref(), hook, deadline),
        Command::Bench(args) => cli::bench::run(*args),
        Command::Wal(WalCommand::Verify { dir }) => cli::offline::verify(&dir),
        Command::Wal(WalCommand::Dump {
            dir,
            from,
            limit,
            values,
        }) => cli::offline::dump(&dir, from, limit, values),
        Command::Repair { dir } => cli::offline::repair(&dir),
        Command::Token(TokenCommand::New { role, name }) => cli::token::new(&role, name),
    }
}

/// Log to stderr: `RUST_LOG` when set (a developer's override), else `default`.
fn init_tracing(default: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .with_context(|| format!("RUST_LOG={spec:?} is not a valid log filter"))?,
        _ => EnvFilter::try_new(default)
            .with_context(|| format!("log level {default:?} is not a valid log filter"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a log file they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow!("cannot set up logging: {e}"))
}

fn serve(config_path: Option<&Path>, allow_full_resync_from_empty: bool) -> Result<ExitCode> {
    let mut config =
        wasmkv::config::Config::load(config_path).context("loading the configuration")?;
    config.replication.allow_full_resync_from_empty |= allow_full_resync_from_empty;
    init_tracing(&config.log.level).context("the log.level setting")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Installed before the node starts, so a signal during start-up is not the default
        // action (killing the process mid-recovery) but a clean stop once it is up.
        let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
        let node = wasmkv::node::Node::start(config)
            .await
            .context("starting the node")?;
        tracing::info!("wasmkv listening on http://{}", node.local_addr());
        let name = loop {
            tokio::select! {
                _ = interrupt.recv() => break "SIGINT",
                _ = terminate.recv() => break "SIGTERM",
                _ = hangup.recv() => reload(&node, config_path).await,
            }
        };
        tracing::info!(signal = name, "shutting down");
        // A second signal means the operator will not wait for a clean stop.
        tokio::select! {
            stopped = node.shutdown() => stopped.context("shutting down")?,
            _ = interrupt.recv() => bail!("interrupted again while shutting down; stopped at once"),
            _ = terminate.recv() => bail!("terminated again while shutting down; stopped at once"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUP: read the configuration again and replace the plugin chains and the accepted
/// tokens with its own. Only the `plugins` and `auth` sections are applied; a bad file,
/// plugin or token list keeps what is running.
async fn reload(node: &wasmkv::node::NodeHandle, config_path: Option<&Path>) {
    tracing::info!("SIGHUP: reloading the plugin chains and tokens");
    let config = match wasmkv::config::Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "the configuration was not reloaded; the running one stays");
            return;
        }
    };
    if let Err(e) = node.reload_plugins(&config.plugins).await {
        tracing::error!(error = %format!("{e:#}"), "the plugin chains were not reloaded; the running ones stay");
    }
    if let Err(e) = node.reload_tokens(&config.auth) {
        tracing::error!(error = %e, "the tokens were not reloaded; the running ones stay");
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("wasmkv").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn replica_add_and_remove_take_an_address_and_the_primary() {
        let Command::Replica(ReplicaCommand::Add { address, node }) = parse(&[
            "replica",
            "add",
            "10.0.0.2:8080",
            "--addr",
            "http://10.0.0.1:8080",
        ])
        .unwrap() else {
            panic!("not `replica add`");
        };
        assert_eq!(
            (address.as_str(), node.addr.as_str()),
            ("10.0.0.2:8080", "http://10.0.0.1:8080")
        );
        let Command::Replica(ReplicaCommand::Remove { address, node }) = parse(&[
            "replica",
            "remove",
            "http://10.0.0.2:8080",
            "--timeout",
            "2s",
        ])
        .unwrap() else {
            panic!("not `replica remove`");
        };
        assert_eq!(address, "http://10.0.0.2:8080");
        assert_eq!(node.timeout, Duration::from_secs(2));
        for args in [
            &["replica", "add"][..],
            &["replica"],
            &["replica", "list", "x"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn promote_takes_only_the_node() {
        let Command::Promote { node } = parse(&["promote", "--addr", "10.0.0.2:8080"]).unwrap()
        else {
            panic!("not `promote`");
        };
        assert_eq!(node.addr, "10.0.0.2:8080");
        assert!(parse(&["promote", "10.0.0.2:8080"]).is_err());
    }
}
