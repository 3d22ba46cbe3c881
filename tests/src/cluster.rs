//! Clusters of real `wasmkv` processes for the replication tests (issue 5).
//!
//! A [`NodeProcess`] is one `wasmkv serve` child with a temporary directory of its own: its
//! YAML (`node.yaml`), its data directory (`data/`) and its log (`node.log`, stdout and stderr
//! of every incarnation, each start marked by a line of its own). It can be killed (SIGKILL),
//! stopped (SIGTERM), restarted on the same port and data directory, and asked things through
//! a blocking facade over the async [`Client`], driven by a tokio runtime this module owns.
//! Whenever something a test waits for does not happen in time, or a call fails, the panic
//! message carries the last lines of the logs involved, and a `NodeProcess` dropped while its
//! test panics prints its log tail as well, so a failure can be diagnosed from the test output.
//!
//! A [`Cluster`] is a primary and its replicas; [`converged`] waits until nodes hold equal
//! data (equal digests at equal LSNs). A [`Writer`] writes continuously from a thread of its
//! own (sets, deletes, TTL'd keys, `Write` batches) and keeps a [`Model`] of every
//! acknowledged write, which can then be checked against any node ([`Model::assert_on`]); a
//! [`Reader`] hammers `Get` on a node and counts every "not found" for keys that must exist.
//!
//! The `wasmkv` binary is the one cargo built next to the test executable
//! (`target/<profile>/wasmkv`); `WASMKV_TEST_BIN` overrides it. Set `WASMKV_TEST_KEEP=1` to
//! keep the nodes' directories after the test.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use wasmkv::api::proto::{
    AddReplicaRequest, AddReplicaResponse, DeleteRequest, DigestResponse, GetResponse, Mutation,
    Op, PrimaryLinkStatus, PromoteRequest, PromoteResponse, RemoveReplicaRequest,
    RemoveReplicaResponse, ReplicaStatus, SetRequest, StatusResponse, WriteRequest,
};
use wasmkv::api::{Code, Codec, ConnectError, WireMessage};
use wasmkv::client::{
    Client, ClientError, ClientOptions, SetOptions, error_from_response, normalize_base,
};

use crate::ChildGuard;

/// How long a node may take from spawn to `/readyz` answering 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The deadline of every call the facade makes, so a stalled node fails a test instead of
/// hanging it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long replication may take to do something it should do "soon": reach streaming,
/// converge, count a resync.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two checks of a condition being waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Log lines shown when something fails.
const LOG_TAIL_LINES: usize = 40;
/// The Connect services, for `call` and `raw_call`.
pub const KVSTORE: &str = "kvstore.v1.KVStore";
pub const ADMIN: &str = "kvstore.v1.Admin";

// ---------------------------------------------------------------------------------------------
// Runtime, binary, ports, time

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cluster-harness")
        .enable_all()
        .build()
        .expect("build the harness's tokio runtime")
});

/// Run `future` to completion on the harness's runtime, from synchronous test code (any
/// thread, several at once; never from inside the runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

/// The `wasmkv` binary cargo built next to this test executable.
///
/// # Panics
/// If it is not there, with a message saying how to build it.
pub fn wasmkv_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMKV_TEST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the path of the test executable");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(format!("wasmkv{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the wasmkv binary is not at {}: build it first with `cargo build -p wasmkv --bin \
         wasmkv` (same profile and target dir as the tests), or run the tests with `cargo test \
         --workspace`, which builds it",
        binary.display()
    );
    binary
}

/// A port of 127.0.0.1 that nothing listens on right now: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Milliseconds since the Unix epoch, the clock the nodes expire keys by.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last `lines` lines of the file at `path` (or why it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Poll `check` every few milliseconds until it returns `Ok`, for at most `timeout`. `check`
/// says with its `Err` why the condition does not hold yet; on timeout the panic message
/// has `what`, the last such reason and `context()` (log tails, usually).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let why = match check() {
            Ok(()) => return,
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\nlast state: {why}\n{}",
                context()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Check `check` every few milliseconds for `window`: a property that must stay true (a
/// replica keeps refusing, keeps its data). Panics at the first `Err`, with its reason and
/// `context()`.
pub fn assert_holds_for(
    what: &str,
    window: Duration,
    mut check: impl FnMut() -> Result<(), String>,
    context: impl FnOnce() -> String,
) {
    let started = Instant::now();
    loop {
        if let Err(why) = check() {
            panic!(
                "{what}: no longer so after {:?}: {why}\n{}",
                started.elapsed(),
                context()
            );
        }
        if started.elapsed() >= window {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The log tails of `nodes`, for a failure message.
pub fn logs_of(nodes: &[&NodeProcess]) -> String {
    nodes.iter().map(|n| n.log_report()).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// What goes into a node's YAML (see `config/primary.yaml` for the meaning of every key).
/// The defaults suit tests: 127.0.0.1, no fsync, no disk reserve, store defaults otherwise.
/// `primary: None` is a primary, except for [`Cluster::add_replica`], which fills in the
/// cluster's primary.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `primary.address`: makes the node a replica of `host:port`.
    pub primary: Option<String>,
    /// `primary.sync_interval`.
    pub primary_sync_interval: String,
    /// `wal.sync`: always, interval or never.
    pub sync: String,
    /// `wal.max_file_size`.
    pub max_file_size: Option<String>,
    /// `storage.snapshot_after`.
    pub snapshot_after: Option<String>,
    /// `replication.backlog_max`.
    pub backlog_max: Option<String>,
    /// `replication.backlog_max_age`.
    pub backlog_max_age: Option<String>,
    /// `replication.labels`, `k=v,k2=v2`.
    pub labels: Option<String>,
    /// `replication.allow_full_resync_from_empty`.
    pub allow_full_resync_from_empty: Option<bool>,
    /// Extra arguments after `serve --config FILE`.
    pub args: Vec<String>,
    /// Extra environment variables (the test's own `WASMKV_*` variables are never passed on).
    pub env: Vec<(String, String)>,
    /// More YAML lines per top-level section (`server`, `limits`, `auth`, ...), written as
    /// given under the section's key.
    pub extra: Vec<(String, Vec<String>)>,
    /// How the harness's own client reaches the node (TLS, token).
    pub client: ClientOptions,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            primary: None,
            primary_sync_interval: "100ms".into(),
            sync: "never".into(),
            max_file_size: None,
            snapshot_after: None,
            backlog_max: None,
            backlog_max_age: None,
            labels: None,
            allow_full_resync_from_empty: None,
            args: Vec::new(),
            env: Vec::new(),
            extra: Vec::new(),
            client: ClientOptions::default(),
        }
    }
}

impl NodeConfig {
    /// A replica of `primary` (`host:port`), otherwise the defaults.
    pub fn replica_of(primary: impl ToString) -> NodeConfig {
        NodeConfig::default().following(primary)
    }

    /// The same configuration as a replica of `primary`.
    pub fn following(mut self, primary: impl ToString) -> NodeConfig {
        self.primary = Some(primary.to_string());
        self
    }

    /// The same configuration as a primary (no `primary:` section).
    pub fn standalone(mut self) -> NodeConfig {
        self.primary = None;
        self
    }

    pub fn sync(mut self, mode: &str) -> NodeConfig {
        self.sync = mode.into();
        self
    }

    pub fn max_file_size(mut self, size: &str) -> NodeConfig {
        self.max_file_size = Some(size.into());
        self
    }

    pub fn snapshot_after(mut self, size: &str) -> NodeConfig {
        self.snapshot_after = Some(size.into());
        self
    }

    pub fn backlog_max(mut self, size: &str) -> NodeConfig {
        self.backlog_max = Some(size.into());
        self
    }

    pub fn backlog_max_age(mut self, age: &str) -> NodeConfig {
        self.backlog_max_age = Some(age.into());
        self
    }

    pub fn labels(mut self, labels: &str) -> NodeConfig {
        self.labels = Some(labels.into());
        self
    }

    pub fn allow_full_resync_from_empty(mut self, allow: bool) -> NodeConfig {
        self.allow_full_resync_from_empty = Some(allow);
        self
    }

    /// Add `lines` (indented as they are to sit under it) to the YAML section `section`.
    pub fn yaml_in(mut self, section: &str, lines: &[&str]) -> NodeConfig {
        self.extra.push((
            section.to_owned(),
            lines.iter().map(|l| (*l).to_owned()).collect(),
        ));
        self
    }

    /// The harness's client of this node uses `options` (TLS, token).
    pub fn client_options(mut self, options: ClientOptions) -> NodeConfig {
        self.client = options;
        self
    }

    /// The extra lines of `section`, each indented by two spaces.
    fn extra_lines(&self, section: &str) -> String {
        self.extra
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, lines)| lines)
            .map(|line| format!("  {line}\n"))
            .collect()
    }

    /// The `plugins:` section, as YAML lines already indented under it (e.g.
    /// `  dir: /x\n  validate: ...`).
    pub fn plugins(self, section: &str) -> NodeConfig {
        let lines: Vec<&str> = section
            .lines()
            .map(|line| line.strip_prefix("  ").unwrap_or(line))
            .collect();
        self.yaml_in("plugins", &lines)
    }

    /// Add a command-line argument after `serve --config FILE`.
    pub fn arg(mut self, arg: &str) -> NodeConfig {
        self.args.push(arg.into());
        self
    }

    /// The YAML of this configuration for a node on `port` keeping its data in `data_dir`.
    /// Sections the configuration leaves at their defaults are left out.
    pub fn yaml(&self, data_dir: &Path, port: u16) -> String {
        let mut yaml = format!(
            "data_dir: {:?}\nserver:\n  address: 127.0.0.1\n  port: {port}\nwal:\n  sync: {}\n",
            data_dir.display().to_string(),
            self.sync
        );
        yaml = yaml.replace("wal:\n", &format!("{}wal:\n", self.extra_lines("server")));
        if self.sync == "interval" {
            yaml.push_str("  sync_interval: 100ms\n");
        }
        if let Some(size) = &self.max_file_size {
            yaml.push_str(&format!("  max_file_size: {size}\n"));
        }
        yaml.push_str("storage:\n  disk_reserve: 0\n");
        if let Some(size) = &self.snapshot_after {
            yaml.push_str(&format!("  snapshot_after: {size}\n"));
        }
        let mut replication = String::new();
        if let Some(size) = &self.backlog_max {
            replication.push_str(&format!("  backlog_max: {size}\n"));
        }
        if let Some(age) = &self.backlog_max_age {
            replication.push_str(&format!("  backlog_max_age: {age}\n"));
        }
        if let Some(labels) = &self.labels {
            replication.push_str(&format!("  labels: {labels:?}\n"));
        }
        if let Some(allow) = self.allow_full_resync_from_empty {
            replication.push_str(&format!("  allow_full_resync_from_empty: {allow}\n"));
        }
        replication.push_str(&self.extra_lines("replication"));
        if !replication.is_empty() {
            yaml.push_str("replication:\n");
            yaml.push_str(&replication);
        }
        if let Some(primary) = &self.primary {
            yaml.push_str(&format!(
                "primary:\n  address: {primary:?}\n  sync_interval: {}\n",
                self.primary_sync_interval
            ));
        }
        for section in ["limits", "auth", "plugins"] {
            let lines = self.extra_lines(section);
            if !lines.is_empty() {
                yaml.push_str(&format!("{section}:\n{lines}"));
            }
        }
        yaml.push_str("log:\n  level: info\n");
        yaml
    }
}

// ---------------------------------------------------------------------------------------------
// One node

/// A complete HTTP answer to [`NodeProcess::raw_call`].
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// From sending the request to the end of the answer.
    pub elapsed: Duration,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The Connect error of a non-200 answer; None for a 200.
    pub fn error(&self) -> Option<ConnectError> {
        (self.status != 200).then(|| {
            let status = http::StatusCode::from_u16(self.status).expect("a valid status");
            error_from_response(status, &self.body)
        })
    }

    /// The Connect error of this answer, checking it has `code`.
    #[track_caller]
    pub fn expect_error(&self, code: Code) -> ConnectError {
        let error = self.error().unwrap_or_else(|| {
            panic!(
                "expected a {code:?} error, got a 200 answer after {:?}",
                self.elapsed
            )
        });
        assert_eq!(
            error.code, code,
            "HTTP {} after {:?}: {error}",
            self.status, self.elapsed
        );
        error
    }

    /// The message of a 200 answer (CBOR).
    #[track_caller]
    pub fn decode<T: WireMessage>(&self) -> T {
        if let Some(error) = self.error() {
            panic!("expected a 200 answer, got HTTP {}: {error}", self.status);
        }
        Codec::Cbor
            .decode(&self.body)
            .unwrap_or_else(|e| panic!("undecodable answer: {}", e.message))
    }
}

/// One `wasmkv serve` child process with its own temporary directory. See the module docs.
pub struct NodeProcess {
    name: String,
    dir: TempDir,
    port: u16,
    config: NodeConfig,
    child: Option<ChildGuard>,
    /// A client of this incarnation of the node (a fresh connection pool per start).
    client: Client,
    starts: u32,
    /// Whether the log tail was put in a failure message already (so that dropping the node
    /// during the panic does not print it twice).
    reported: AtomicBool,
}

impl NodeProcess {
    /// Start a node called `name` (in messages and file names) on a free port and wait until
    /// it is ready. A port taken by someone else between picking it and binding it is picked
    /// again.
    pub fn start(name: &str, config: NodeConfig) -> NodeProcess {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("wasmkv-{name}-"))
            .tempdir()
            .expect("create the node's temporary directory");
        if std::env::var_os("WASMKV_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
        }
        let mut node = NodeProcess {
            name: name.to_owned(),
            dir,
            port: 0,
            config,
            child: None,
            client: Client::new("127.0.0.1:1").expect("a valid placeholder address"),
            starts: 0,
            reported: AtomicBool::new(false),
        };
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            node.port = free_port();
            node.spawn();
            match node.try_wait_ready() {
                Ok(()) => return node,
                Err(_) if attempt < ATTEMPTS && node.port_was_taken() => {
                    node.kill();
                }
                Err(why) => node.fail(&why),
            }
        }
        unreachable!("the last attempt either returns or fails")
    }

    /// The node's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as configurations and `AddReplica` take it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.config.client.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr())
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The YAML file the node was started with (rewritten at every start).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.yaml")
    }

    /// Send `signal` to the process (SIGHUP to reload, for one). Nothing happens if it is
    /// not running.
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(child) = &self.child {
            let pid = rustix::process::Pid::from_child(&child.0);
            if let Err(e) = rustix::process::kill_process(pid, signal) {
                self.fail(&format!("cannot send {signal:?}: {e}"));
            }
        }
    }

    /// The last lines of the node's log, under a header naming it.
    pub fn log_report(&self) -> String {
        self.reported.store(true, Ordering::Relaxed);
        format!(
            "--- last {LOG_TAIL_LINES} lines of {} ({}) ---\n{}\n",
            self.name,
            self.log_path().display(),
            log_tail(&self.log_path(), LOG_TAIL_LINES)
        )
    }

    /// Panic with `what` and the node's log tail.
    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{} ({}): {what}\n{}",
            self.name,
            self.url(),
            self.log_report()
        )
    }

    /// A client of the node as it runs now, with [`CALL_TIMEOUT`] on every call.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client of the node as it runs now with another deadline per call.
    pub fn client_with_timeout(&self, timeout: Duration) -> Client {
        self.client.clone().with_timeout(timeout)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{}: already running", self.name);
        fs::write(
            self.config_path(),
            self.config.yaml(&self.data_dir(), self.port),
        )
        .expect("write the node's config");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the node's log");
        self.starts += 1;
        writeln!(
            log,
            "==== wasmkv-tests: start #{} of {} on port {} ====",
            self.starts, self.name, self.port
        )
        .expect("write to the node's log");
        let mut command = Command::new(wasmkv_binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .args(&self.config.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log's handle"))
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("WASMKV_")
            {
                command.env_remove(key);
            }
        }
        command.envs(self.config.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot spawn {:?}: {e}", self.name, command));
        self.child = Some(ChildGuard(child));
        self.client = Client::with_options(&self.url(), &self.config.client)
            .expect("a valid node address")
            .with_timeout(CALL_TIMEOUT);
    }

    /// Whether the last start failed because the port was in use.
    fn port_was_taken(&self) -> bool {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let marker = format!("==== wasmkv-tests: start #{} ", self.starts);
        log.rsplit_once(&marker)
            .is_some_and(|(_, this_start)| this_start.contains("in use"))
    }

    /// Wait until `GET /readyz` answers 200; an error if the process exits first or it takes
    /// longer than [`READY_TIMEOUT`].
    fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/readyz", self.url());
        loop {
            let child = self.child.as_mut().ok_or("the node is not running")?;
            if let Ok(Some(status)) = child.0.try_wait() {
                self.child = None;
                return Err(format!("exited with {status} before it was ready"));
            }
            let last = if self.config.client.tls.is_some() {
                // The raw HTTP client speaks no TLS: ask the node itself through ours.
                match block_on(self.client.status()) {
                    Ok(_) => return Ok(()),
                    Err(e) => e.to_string(),
                }
            } else {
                match block_on(http_request(
                    http::Method::GET,
                    &url,
                    Vec::new(),
                    Bytes::new(),
                    Duration::from_secs(2),
                )) {
                    Ok(reply) if reply.status == 200 => return Ok(()),
                    Ok(reply) => format!("HTTP {}", reply.status),
                    Err(e) => e,
                }
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready after {READY_TIMEOUT:?}; last /readyz: {last}"
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Wait until the node is ready (`/readyz` 200), failing with its log if it is not.
    pub fn wait_ready(&mut self) {
        if let Err(why) = self.try_wait_ready() {
            self.fail(&why);
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.0.try_wait(), Ok(None)))
    }

    /// SIGKILL the process and reap it (a crash). Nothing happens if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// SIGSTOP the process: it stops answering but keeps its sockets open, as a node that
    /// hangs (a long GC-like stall, a frozen VM) would. Nothing happens if it is not running.
    pub fn pause(&mut self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT a process stopped by [`pause`](Self::pause).
    pub fn resume(&mut self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// SIGTERM the process and wait until it exits, which must be with success (a graceful
    /// stop). Nothing happens if it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.0.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    child.kill();
                    self.fail(&format!(
                        "still running {STOP_TIMEOUT:?} after SIGTERM (killed it)"
                    ));
                }
                Err(e) => self.fail(&format!("cannot wait for the process: {e}")),
            }
        };
        if !status.success() {
            self.fail(&format!("exited with {status} after SIGTERM"));
        }
    }

    /// Start the node again on the same port and data directory with the same configuration,
    /// stopping it first (SIGTERM) if it runs; waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// [`restart`](Self::restart) with another configuration (same port, same data).
    pub fn restart_with(&mut self, config: NodeConfig) {
        self.stop();
        self.config = config;
        self.spawn();
        self.wait_ready();
    }

    /// Delete the data directory of a node that is not running.
    pub fn wipe_data(&mut self) {
        assert!(
            !self.is_running(),
            "{}: wipe the data of a stopped node only",
            self.name
        );
        match fs::remove_dir_all(self.data_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!(
                "{}: cannot wipe {}: {e}",
                self.name,
                self.data_dir().display()
            ),
        }
    }

    // --- blocking facade --------------------------------------------------------------------

    fn expect<T>(&self, result: Result<T, ClientError>, what: &str) -> T {
        result.unwrap_or_else(|e| self.fail(&format!("{what} failed: {e}")))
    }

    /// Any unary RPC (`service/Method`), through the node's client.
    pub fn call<Req: WireMessage, Resp: WireMessage>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        block_on(self.client.call(path, req))
    }

    pub fn try_status(&self) -> Result<StatusResponse, ClientError> {
        block_on(self.client.status())
    }

    pub fn status(&self) -> StatusResponse {
        self.expect(self.try_status(), "Status")
    }

    pub fn try_digest(&self) -> Result<DigestResponse, ClientError> {
        block_on(self.client.digest())
    }

    pub fn digest(&self) -> DigestResponse {
        self.expect(self.try_digest(), "Digest")
    }

    pub fn get(&self, key: &[u8]) -> GetResponse {
        self.expect(
            block_on(self.client.get(Bytes::copy_from_slice(key))),
            "Get",
        )
    }

    pub fn multi_get(&self, keys: Vec<Bytes>) -> Vec<GetResponse> {
        self.expect(block_on(self.client.multi_get(keys)), "MultiGet")
    }

    /// Set `key` to `value` (no TTL, no conditions); returns its LSN.
    pub fn set(&self, key: &[u8], value: &[u8]) -> u64 {
        self.expect(
            block_on(self.client.set(
                Bytes::copy_from_slice(key),
                Bytes::copy_from_slice(value),
                SetOptions::default(),
            )),
            "Set",
        )
    }

    pub fn promote(&self) -> PromoteResponse {
        self.expect(
            self.call(&format!("{ADMIN}/Promote"), &PromoteRequest {}),
            "Promote",
        )
    }

    /// `Admin/AddReplica`: make the node at `address` follow this one.
    pub fn add_replica(&self, address: &str) {
        let _: AddReplicaResponse = self.expect(
            self.call(
                &format!("{ADMIN}/AddReplica"),
                &AddReplicaRequest {
                    address: address.into(),
                },
            ),
            "AddReplica",
        );
    }

    /// `Admin/RemoveReplica`: detach the node at `address` from this one.
    pub fn remove_replica(&self, address: &str) {
        let _: RemoveReplicaResponse = self.expect(
            self.call(
                &format!("{ADMIN}/RemoveReplica"),
                &RemoveReplicaRequest {
                    address: address.into(),
                },
            ),
            "RemoveReplica",
        );
    }

    /// A Connect unary call made by hand (CBOR), so the test sees exactly what the node
    /// answered: status, headers, error code and message, unaffected by anything the client
    /// does with them. `timeout` goes out as `Connect-Timeout-Ms`; the test waits 10 s longer.
    pub fn raw_call<Req: WireMessage>(
        &self,
        path: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> RawReply {
        let mut headers = vec![
            ("content-type", "application/cbor".to_owned()),
            ("connect-protocol-version", "1".to_owned()),
        ];
        if let Some(timeout) = timeout {
            headers.push(("connect-timeout-ms", timeout.as_millis().to_string()));
        }
        let patience = timeout.unwrap_or(CALL_TIMEOUT) + Duration::from_secs(10);
        let url = format!("{}/{}", self.url(), path.trim_start_matches('/'));
        let body = Bytes::from(Codec::Cbor.encode(req));
        block_on(http_request(
            http::Method::POST,
            &url,
            headers,
            body,
            patience,
        ))
        .unwrap_or_else(|e| self.fail(&format!("POST {path}: {e}")))
    }

    /// A plain-HTTP request made by hand to `path` (`/metrics`, `/v1/kv/...`), with
    /// `headers`; the reply as the node sent it.
    pub fn raw_request(
        &self,
        method: http::Method,
        path: &str,
        headers: Vec<(&str, String)>,
        body: Bytes,
    ) -> RawReply {
        let url = format!("{}{path}", self.url());
        block_on(http_request(method, &url, headers, body, CALL_TIMEOUT))
            .unwrap_or_else(|e| self.fail(&format!("{path}: {e}")))
    }

    /// Wait until the node's status satisfies `ready` (errors count as "not yet"); returns
    /// that status.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&StatusResponse) -> bool,
    ) -> StatusResponse {
        let mut last = None;
        wait_until(
            &format!("{}: {what}", self.name),
            timeout,
            || match self.try_status() {
                Ok(status) if ready(&status) => {
                    last = Some(status);
                    Ok(())
                }
                Ok(status) => Err(format!("{status:?}")),
                Err(e) => Err(e.to_string()),
            },
            || self.log_report(),
        );
        last.expect("set when the wait ends")
    }

    /// This replica's link to its primary, from its status.
    pub fn link(&self) -> PrimaryLinkStatus {
        let status = self.status();
        status.primary.clone().unwrap_or_else(|| {
            self.fail(&format!(
                "no primary link in the status of a replica: {status:?}"
            ))
        })
    }

    /// Wait until this node is a replica streaming from its primary; returns its status.
    pub fn wait_streaming(&self) -> StatusResponse {
        self.wait_status(
            "the replica to stream from its primary",
            SYNC_TIMEOUT,
            |s| s.role == "replica" && s.primary.as_ref().is_some_and(|p| p.state == "streaming"),
        )
    }

    /// Wait until this replica streams after a resync done by this process since it started,
    /// and check that it was partial: `primary.partial_syncs` ≥ 1 and `full_syncs` == 0.
    /// Returns its link.
    #[track_caller]
    pub fn wait_partial_resync(&self) -> PrimaryLinkStatus {
        self.wait_partial_resync_since(&PrimaryLinkStatus::default())
    }

    /// Wait until this replica streams after one more resync than its link counted in
    /// `before`, and check that the new ones were partial: `partial_syncs` grew and
    /// `full_syncs` did not. (Waiting for any resync rather than a partial one makes a full
    /// resync fail at once, with the counters in the message.) Returns its link.
    #[track_caller]
    pub fn wait_partial_resync_since(&self, before: &PrimaryLinkStatus) -> PrimaryLinkStatus {
        let syncs = |p: &PrimaryLinkStatus| p.full_syncs + p.partial_syncs;
        let status = self.wait_status(
            &format!("the replica to stream after a resync (before: {before:?})"),
            SYNC_TIMEOUT,
            |s| {
                s.primary
                    .as_ref()
                    .is_some_and(|p| p.state == "streaming" && syncs(p) > syncs(before))
            },
        );
        let link = status.primary.expect("checked by the wait");
        if link.full_syncs != before.full_syncs || link.partial_syncs <= before.partial_syncs {
            self.fail(&format!(
                "expected a partial resync, not a full one: before {before:?}, now {link:?}"
            ));
        }
        link
    }

    /// Wait until this node applied `lsn`.
    pub fn wait_applied(&self, lsn: u64) -> StatusResponse {
        self.wait_status(&format!("LSN {lsn} applied"), SYNC_TIMEOUT, |s| {
            s.lsn >= lsn
        })
    }

    /// On a primary: its status entry for the replica whose ID is `replica_id`.
    pub fn replica_entry(&self, replica_id: &str) -> Option<ReplicaStatus> {
        self.status()
            .replicas
            .into_iter()
            .find(|r| r.id == replica_id)
    }

    /// On a primary: wait until its entry for the replica `replica_id` satisfies `ready`;
    /// returns that entry.
    pub fn wait_replica_entry(
        &self,
        replica_id: &str,
        what: &str,
        mut ready: impl FnMut(&ReplicaStatus) -> bool,
    ) -> ReplicaStatus {
        let status = self.wait_status(
            &format!("replica {replica_id:?}: {what}"),
            SYNC_TIMEOUT,
            |s| s.replicas.iter().any(|r| r.id == replica_id && ready(r)),
        );
        status
            .replicas
            .into_iter()
            .find(|r| r.id == replica_id)
            .expect("checked by the wait")
    }

    /// Check that this replica refuses `Set`, `Delete` and `Write` with `failed_precondition`
    /// naming `primary` (`host:port`) in the message and in the `wasmkv-primary` header, and
    /// that nothing was written.
    #[track_caller]
    pub fn assert_refuses_writes(&self, primary: &str) {
        let key = Bytes::from_static(b"refused-write");
        let set = SetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"must not be stored"),
            ..SetRequest::default()
        };
        let write = WriteRequest {
            mutations: vec![Mutation {
                op: Op::Set as i32,
                key: key.clone(),
                value: Bytes::from_static(b"must not be stored"),
                ttl_ms: 0,
            }],
            min_replicas: 0,
        };
        let replies = [
            ("Set", self.raw_call(&format!("{KVSTORE}/Set"), &set, None)),
            (
                "Delete",
                self.raw_call(
                    &format!("{KVSTORE}/Delete"),
                    &DeleteRequest { key: key.clone() },
                    None,
                ),
            ),
            (
                "Write",
                self.raw_call(&format!("{KVSTORE}/Write"), &write, None),
            ),
        ];
        for (method, reply) in replies {
            let Some(error) = reply.error() else {
                self.fail(&format!("a replica accepted {method}"));
            };
            assert_eq!(
                (reply.status, error.code),
                (400, Code::FailedPrecondition),
                "{}: {method} on a replica: {error}",
                self.name
            );
            assert!(
                error.message.contains(primary),
                "{}: the refusal of {method} does not name the primary {primary}: {error}",
                self.name
            );
            let header = reply.header("wasmkv-primary").unwrap_or_else(|| {
                panic!(
                    "{}: the refusal of {method} has no wasmkv-primary header: {:?}",
                    self.name, reply.headers
                )
            });
            assert!(
                header.contains(primary),
                "{}: wasmkv-primary is {header:?} on the refusal of {method}, not {primary}",
                self.name
            );
        }
        assert!(
            !self.get(&key).found,
            "{}: a refused write was stored",
            self.name
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.reported.load(Ordering::Relaxed) {
            eprintln!("{}", self.log_report());
        }
        self.kill();
    }
}

/// One HTTP/1.1 request with its own connection; the whole answer within `patience`.
async fn http_request(
    method: http::Method,
    url: &str,
    headers: Vec<(&str, String)>,
    body: Bytes,
    patience: Duration,
) -> Result<RawReply, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let started = Instant::now();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>(RawReply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            elapsed: started.elapsed(),
        })
    };
    tokio::time::timeout(patience, exchange)
        .await
        .map_err(|_| format!("no answer within {patience:?}"))?
}

// ---------------------------------------------------------------------------------------------
// Clusters

/// A primary and its replicas.
pub struct Cluster {
    pub primary: NodeProcess,
    pub replicas: Vec<NodeProcess>,
}

impl Cluster {
    /// A default primary and `replicas` default replicas of it, all streaming.
    pub fn start(replicas: usize) -> Cluster {
        Cluster::with_configs(NodeConfig::default(), vec![NodeConfig::default(); replicas])
    }

    /// A primary with `primary`'s configuration and one replica per entry of `replicas`
    /// (whose `primary` is filled in when it is None), all streaming.
    pub fn with_configs(primary: NodeConfig, replicas: Vec<NodeConfig>) -> Cluster {
        let mut cluster = Cluster::start_primary(primary);
        for config in replicas {
            cluster.add_replica(config);
        }
        cluster.wait_streaming();
        cluster
    }

    /// Just the primary (`config.primary` must be None); add replicas with
    /// [`add_replica`](Self::add_replica).
    pub fn start_primary(config: NodeConfig) -> Cluster {
        assert!(config.primary.is_none(), "a primary follows nobody");
        Cluster {
            primary: NodeProcess::start("primary", config),
            replicas: Vec::new(),
        }
    }

    /// Start a replica (`replica1`, `replica2`, ...) following the address in
    /// `config.primary`, or the cluster's primary when that is None. Does not wait for it to
    /// stream.
    pub fn add_replica(&mut self, mut config: NodeConfig) -> &mut NodeProcess {
        if config.primary.is_none() {
            config.primary = Some(self.primary.addr());
        }
        let name = format!("replica{}", self.replicas.len() + 1);
        self.replicas.push(NodeProcess::start(&name, config));
        self.replicas.last_mut().expect("just pushed")
    }

    /// The primary, then the replicas.
    pub fn nodes(&self) -> Vec<&NodeProcess> {
        std::iter::once(&self.primary)
            .chain(&self.replicas)
            .collect()
    }

    /// Wait until every replica streams from its primary.
    pub fn wait_streaming(&self) {
        for replica in &self.replicas {
            replica.wait_streaming();
        }
    }

    /// Wait until every node holds the same data; see [`converged`].
    pub fn converged(&self, deadline: Duration) -> DigestResponse {
        converged(&self.nodes(), deadline)
    }

    /// Pause `writer` (no write in flight), wait until every node holds the same data, and
    /// let the writer go on.
    pub fn converged_paused(&self, writer: &Writer, deadline: Duration) -> DigestResponse {
        let _paused = writer.pause();
        self.converged(deadline)
    }

    /// The log tails of every node.
    pub fn logs(&self) -> String {
        logs_of(&self.nodes())
    }
}

/// Wait until every node of `nodes` reports the same digest at the same LSN, with the first
/// node's digest unchanged across the round (so nothing was moving), within `deadline`;
/// returns that digest. Panics with every node's state and log tail otherwise.
pub fn converged(nodes: &[&NodeProcess], deadline: Duration) -> DigestResponse {
    try_converged(nodes, deadline).unwrap_or_else(|why| {
        panic!(
            "timed out after {deadline:?} waiting for {} to hold equal data (digest and LSN)\n\
             last state: {why}\n{}",
            names(nodes),
            logs_of(nodes)
        )
    })
}

/// [`converged`] without the panic: the agreed digest, or the nodes' last states.
pub fn try_converged(nodes: &[&NodeProcess], deadline: Duration) -> Result<DigestResponse, String> {
    assert!(!nodes.is_empty());
    let deadline = Instant::now() + deadline;
    loop {
        let why = match digests_agree(nodes) {
            Ok(digest) => return Ok(digest),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(why);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One round of [`try_converged`].
fn digests_agree(nodes: &[&NodeProcess]) -> Result<DigestResponse, String> {
    let mut digests = Vec::with_capacity(nodes.len());
    for node in nodes {
        let digest = node
            .try_digest()
            .map_err(|e| format!("{}: {e}", node.name()))?;
        digests.push(digest);
    }
    let again = nodes[0]
        .try_digest()
        .map_err(|e| format!("{}: {e}", nodes[0].name()))?;
    if again != digests[0] || digests.iter().any(|d| *d != digests[0]) {
        return Err(nodes
            .iter()
            .zip(&digests)
            .map(|(node, d)| {
                format!(
                    "{}: lsn {} keys {} digest {}",
                    node.name(),
                    d.lsn,
                    d.keys,
                    hex(&d.digest)
                )
            })
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(again)
}

fn names(nodes: &[&NodeProcess]) -> String {
    nodes
        .iter()
        .map(|n| n.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `address` in the form `http://host:port`, so addresses given with or without a scheme
/// compare equal.
pub fn same_address(a: &str, b: &str) -> bool {
    match (normalize_base(a), normalize_base(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// What was acknowledged

/// What a key may hold according to the writes acknowledged so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    Absent,
    Present {
        value: Bytes,
        /// The write's LSN (the key's version); None when the write's answer was lost, so
        /// the LSN is unknown.
        lsn: Option<u64>,
        /// For a TTL: the earliest and latest absolute expiry the node can have given it (the
        /// clock at sending and at the answer, plus the TTL), in ms since the epoch.
        expires: Option<(u64, u64)>,
    },
}

/// Clock slack when comparing expiry times, in ms.
const EXPIRY_SLACK_MS: u64 = 5;

impl KeyState {
    /// Whether `got`, read between `t0` and `t1` (ms since the epoch), is this state.
    fn matches(&self, got: &GetResponse, t0: u64, t1: u64) -> bool {
        match self {
            KeyState::Absent => !got.found,
            KeyState::Present {
                value,
                lsn,
                expires,
            } => {
                let same = |got: &GetResponse| {
                    got.value == *value && lsn.is_none_or(|lsn| got.version == lsn)
                };
                match expires {
                    None => got.found && same(got) && got.expires_at_ms == 0,
                    Some((earliest, latest)) => {
                        if got.found {
                            let at = u64::try_from(got.expires_at_ms).unwrap_or(0);
                            same(got)
                                && at + EXPIRY_SLACK_MS >= *earliest
                                && at <= latest + EXPIRY_SLACK_MS
                                // A key expired by the node's clock is never returned.
                                && at + EXPIRY_SLACK_MS > t0
                        } else {
                            // Gone is right once it may have expired.
                            *earliest <= t1 + EXPIRY_SLACK_MS
                        }
                    }
                }
            }
        }
    }
}

/// Every key written in a test and the states it may be in: one when the last write of it
/// was acknowledged, several when a write's outcome is unknown (its answer was lost).
#[derive(Clone, Debug, Default)]
pub struct Model {
    keys: HashMap<Bytes, Vec<KeyState>>,
    /// Writes acknowledged, in total.
    pub acked: u64,
    /// The highest LSN acknowledged.
    pub last_lsn: u64,
}

impl Model {
    /// A write of `key` to `state` was acknowledged at `lsn`.
    pub fn acknowledged(&mut self, key: Bytes, state: KeyState, lsn: u64) {
        self.keys.insert(key, vec![state]);
        self.last_lsn = self.last_lsn.max(lsn);
    }

    /// A write of `key` to `state` may or may not have happened.
    pub fn uncertain(&mut self, key: Bytes, state: KeyState) {
        let states = self
            .keys
            .entry(key)
            .or_insert_with(|| vec![KeyState::Absent]);
        if !states.contains(&state) {
            states.push(state);
        }
    }

    /// Every key written.
    pub fn keys(&self) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = self.keys.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Keys that certainly exist and never expire.
    pub fn present_keys(&self) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = self
            .keys
            .iter()
            .filter(|(_, states)| {
                states
                    .iter()
                    .all(|s| matches!(s, KeyState::Present { expires: None, .. }))
            })
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Read every key from `node` (MultiGet, in chunks) and list the keys whose answer is
    /// none of the states they may be in.
    pub fn mismatches(&self, node: &NodeProcess) -> Result<Vec<String>, ClientError> {
        let keys = self.keys();
        let mut wrong = Vec::new();
        for chunk in keys.chunks(256) {
            let t0 = now_ms();
            let results = block_on(node.client.multi_get(chunk.to_vec()))?;
            let t1 = now_ms();
            assert_eq!(results.len(), chunk.len(), "MultiGet answers every key");
            for (key, got) in chunk.iter().zip(&results) {
                let states = &self.keys[key];
                if !states.iter().any(|s| s.matches(got, t0, t1)) {
                    wrong.push(format!(
                        "{}: got {} between {t0} and {t1}; expected one of {states:?}",
                        String::from_utf8_lossy(key),
                        describe(got)
                    ));
                }
            }
        }
        Ok(wrong)
    }

    /// Check that `node` holds every acknowledged write; panics listing what is wrong.
    #[track_caller]
    pub fn assert_on(&self, node: &NodeProcess) {
        let wrong = node.expect(self.mismatches(node), "MultiGet of the model's keys");
        if !wrong.is_empty() {
            node.fail(&format!(
                "{} of {} keys differ from the acknowledged writes, e.g.:\n  {}",
                wrong.len(),
                self.len(),
                wrong[..wrong.len().min(10)].join("\n  ")
            ));
        }
    }
}

fn describe(got: &GetResponse) -> String {
    if got.found {
        format!(
            "{:?} version {} expires_at_ms {}",
            String::from_utf8_lossy(&got.value),
            got.version,
            got.expires_at_ms
        )
    } else {
        "not found".into()
    }
}

/// Write `count` keys `{prefix}{i}` with values of `value_len` bytes to `node` in `Write`
/// batches of 100, recording them in `model`.
pub fn bulk_load(
    node: &NodeProcess,
    model: &mut Model,
    prefix: &str,
    count: usize,
    value_len: usize,
) {
    let keys: Vec<Bytes> = (0..count)
        .map(|i| Bytes::from(format!("{prefix}{i:06}")))
        .collect();
    for chunk in keys.chunks(100) {
        let mutations: Vec<Mutation> = chunk
            .iter()
            .map(|key| Mutation {
                op: Op::Set as i32,
                key: key.clone(),
                value: filled(
                    &format!("{}=bulk;", String::from_utf8_lossy(key)),
                    value_len,
                ),
                ttl_ms: 0,
            })
            .collect();
        let lsn = node.expect(
            block_on(node.client.write(mutations.clone())),
            "Write of a bulk batch",
        );
        for m in mutations {
            let state = KeyState::Present {
                value: m.value,
                lsn: Some(lsn),
                expires: None,
            };
            model.acknowledged(m.key, state, lsn);
        }
        model.acked += 1;
    }
}

/// `head` padded with filler to `len` bytes (or `head` alone when it is longer).
fn filled(head: &str, len: usize) -> Bytes {
    let mut value = head.as_bytes().to_vec();
    let mut i = 0u8;
    while value.len() < len {
        value.push(b'a' + i % 26);
        i = i.wrapping_add(1);
    }
    Bytes::from(value)
}

// ---------------------------------------------------------------------------------------------
// Continuous writes

/// What a [`Writer`] writes.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Keys are `{prefix}{n:06}` with n below `keys`, so keys are overwritten and deleted
    /// again (and [`bulk_load`] with the same prefix writes the same keys).
    pub prefix: String,
    pub keys: u32,
    /// Value sizes in bytes, from..to (exclusive).
    pub value_len: (usize, usize),
    /// Delete keys (also inside batches).
    pub deletes: bool,
    /// Give some keys a TTL: most short (expiring during the test), some an hour.
    pub ttls: bool,
    /// Send some writes as `Write` batches of 2 to 6 mutations.
    pub batches: bool,
    pub seed: u64,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            prefix: "w".into(),
            keys: 2000,
            value_len: (16, 200),
            deletes: true,
            ttls: true,
            batches: true,
            seed: 0x5eed,
        }
    }
}

impl WriterOptions {
    /// Sets and batches of sets only, without TTLs: keys, once written, exist for good.
    pub fn sets_only() -> WriterOptions {
        WriterOptions {
            deletes: false,
            ttls: false,
            ..WriterOptions::default()
        }
    }
}

/// Lets a test stop the writer between two writes: `busy` while a write is in flight. Also
/// shared by the chaos clients (one gate for many threads: `busy` counts them).
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    paused: bool,
    /// Operations in flight.
    busy: usize,
    stop: bool,
}

impl Gate {
    /// Wait while paused, then mark a write in flight; false once stopping.
    pub fn enter(&self) -> bool {
        let mut state = lock(&self.state);
        while state.paused && !state.stop {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.stop {
            return false;
        }
        state.busy += 1;
        true
    }

    /// The operation marked by [`enter`](Self::enter) is over.
    pub fn leave(&self) {
        lock(&self.state).busy -= 1;
        self.changed.notify_all();
    }

    /// Let no operation start; returns once none is in flight.
    pub fn pause(&self) {
        let mut state = lock(&self.state);
        state.paused = true;
        while state.busy > 0 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub fn resume(&self) {
        lock(&self.state).paused = false;
        self.changed.notify_all();
    }

    /// From now on [`enter`](Self::enter) returns false.
    pub fn stop(&self) {
        lock(&self.state).stop = true;
        self.changed.notify_all();
    }
}

struct WriterShared {
    gate: Gate,
    model: Mutex<Model>,
    acked: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<String>,
}

/// A thread writing to one node continuously, one write at a time, recording every
/// acknowledged write in a [`Model`]. Failed writes are retried with other writes after a
/// short back-off, so it keeps going across crashes and restarts of the node.
pub struct Writer {
    shared: Arc<WriterShared>,
    thread: Option<JoinHandle<()>>,
    node: String,
    log: PathBuf,
}

/// While this lives, the writer does not write (and no write is in flight).
pub struct Paused<'a>(&'a Writer);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.shared.gate.resume();
    }
}

impl Writer {
    /// Start writing to `node` (the client of its current incarnation, so restart the
    /// writer after restarting the node), continuing `model`.
    pub fn start(node: &NodeProcess, options: WriterOptions, model: Model) -> Writer {
        let shared = Arc::new(WriterShared {
            gate: Gate::default(),
            acked: AtomicU64::new(model.acked),
            model: Mutex::new(model),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        });
        let client = node.client();
        let thread = std::thread::Builder::new()
            .name(format!("writer-{}", node.name()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_loop(&client, &options, &shared)
            })
            .expect("spawn the writer thread");
        Writer {
            shared,
            thread: Some(thread),
            node: node.name().to_owned(),
            log: node.log_path(),
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// Writes that failed so far.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// The highest LSN acknowledged so far.
    pub fn last_lsn(&self) -> u64 {
        lock(&self.shared.model).last_lsn
    }

    /// Wait until `more` writes more than now are acknowledged, within `timeout`.
    pub fn wait_more(&self, more: u64, timeout: Duration) {
        let target = self.acked() + more;
        wait_until(
            &format!("{more} more writes acknowledged by {}", self.node),
            timeout,
            || {
                if self.acked() >= target {
                    Ok(())
                } else {
                    Err(format!(
                        "{} of {target} acknowledged, {} failed, last error: {}",
                        self.acked(),
                        self.errors(),
                        lock(&self.shared.last_error)
                    ))
                }
            },
            || {
                format!(
                    "--- last lines of {} ---\n{}\n",
                    self.node,
                    log_tail(&self.log, LOG_TAIL_LINES)
                )
            },
        );
    }

    /// Stop writing until the returned guard is dropped; returns once no write is in flight.
    pub fn pause(&self) -> Paused<'_> {
        self.shared.gate.pause();
        Paused(self)
    }

    /// Stop writing (any write in flight finishes first) and return the model.
    pub fn stop(mut self) -> Model {
        self.halt();
        std::mem::take(&mut *lock(&self.shared.model))
    }

    fn halt(&mut self) {
        self.shared.gate.stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the writer thread panicked");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Whether a failed write certainly did not happen: the node said no, for a reason that
/// leaves nothing behind. Lost answers, deadlines and unknown failures may have happened.
fn certainly_not_written(error: &ClientError) -> bool {
    matches!(error, ClientError::Rpc(e) if !matches!(
        e.code,
        Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Canceled
    ))
}

fn write_loop(client: &Client, options: &WriterOptions, shared: &WriterShared) {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut n: u64 = 0;
    while shared.gate.enter() {
        n += 1;
        let failed = block_on(write_one(client, options, shared, &mut rng, n));
        shared.gate.leave();
        if let Some(error) = failed {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            *lock(&shared.last_error) = error;
            // A back-off between retries, not a wait for something: the writer keeps trying
            // until the test stops it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What one mutation writes to its key: a value and a TTL in ms (None: a delete instead).
type Put = (Bytes, Option<u64>);

/// One random write; records its outcome, returns the error of a failed one.
async fn write_one(
    client: &Client,
    options: &WriterOptions,
    shared: &WriterShared,
    rng: &mut fastrand::Rng,
    n: u64,
) -> Option<String> {
    let key = |rng: &mut fastrand::Rng| {
        Bytes::from(format!("{}{:06}", options.prefix, rng.u32(..options.keys)))
    };
    let value = |rng: &mut fastrand::Rng, key: &Bytes| {
        let len = rng.usize(options.value_len.0..options.value_len.1);
        filled(&format!("{}={n};", String::from_utf8_lossy(key)), len)
    };
    let ttl = |rng: &mut fastrand::Rng| match rng.u8(..100) {
        _ if !options.ttls => None,
        0..15 => Some(rng.u64(200..1500)),
        15..20 => Some(3_600_000),
        _ => None,
    };
    let roll = rng.u8(..100);
    let mut writes: Vec<(Bytes, Option<Put>)> = Vec::new();
    let batch = options.batches && roll < 15;
    let count = if batch { rng.usize(2..=6) } else { 1 };
    while writes.len() < count {
        let k = key(rng);
        if writes.iter().any(|(other, _)| *other == k) {
            continue;
        }
        let delete = options.deletes && rng.u8(..100) < if batch { 30 } else { 18 };
        let set = (!delete).then(|| (value(rng, &k), ttl(rng)));
        writes.push((k, set));
    }
    let sent = now_ms();
    let result = if batch {
        let mutations = writes
            .iter()
            .map(|(key, set)| match set {
                Some((value, ttl)) => Mutation {
                    op: Op::Set as i32,
                    key: key.clone(),
                    value: value.clone(),
                    ttl_ms: ttl.unwrap_or(0),
                },
                None => Mutation {
                    op: Op::Delete as i32,
                    key: key.clone(),
                    value: Bytes::new(),
                    ttl_ms: 0,
                },
            })
            .collect();
        client.write(mutations).await
    } else {
        let (key, set) = &writes[0];
        match set {
            Some((value, ttl)) => {
                let options = SetOptions {
                    ttl: ttl.map(Duration::from_millis),
                    ..SetOptions::default()
                };
                client.set(key.clone(), value.clone(), options).await
            }
            None => client.delete(key.clone()).await.map(|r| r.lsn),
        }
    };
    let answered = now_ms();
    let state = |set: &Option<Put>, lsn: Option<u64>| match set {
        Some((value, ttl)) => KeyState::Present {
            value: value.clone(),
            lsn,
            expires: ttl.map(|ttl| (sent + ttl, answered + ttl)),
        },
        None => KeyState::Absent,
    };
    let mut model = lock(&shared.model);
    match result {
        Ok(lsn) => {
            for (key, set) in &writes {
                model.acknowledged(key.clone(), state(set, Some(lsn)), lsn);
            }
            model.acked += 1;
            shared.acked.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(error) => {
            if !certainly_not_written(&error) {
                for (key, set) in &writes {
                    model.uncertain(key.clone(), state(set, None));
                }
            }
            Some(error.to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Continuous reads

struct ReaderShared {
    stop: AtomicBool,
    found: AtomicU64,
    not_found: Mutex<Vec<(Bytes, u64)>>,
    errors: AtomicU64,
    last_error: Mutex<String>,
}

/// What a [`Reader`] saw.
#[derive(Debug)]
pub struct ReaderReport {
    /// Reads that found their key.
    pub found: u64,
    /// Keys read as not found, with when (ms since the epoch).
    pub not_found: Vec<(Bytes, u64)>,
    /// Reads that failed (node down, restarting, deadline).
    pub errors: u64,
    pub last_error: String,
}

/// A thread reading random keys of a list from one node with `Get`, as fast as it can,
/// counting keys found and recording every key not found. Errors (the node down or
/// restarting) are counted and the reads go on.
pub struct Reader {
    shared: Arc<ReaderShared>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Read `keys` from `node`, across restarts of it (same address).
    pub fn start(node: &NodeProcess, keys: Vec<Bytes>) -> Reader {
        assert!(!keys.is_empty(), "nothing to read");
        let shared = Arc::new(ReaderShared {
            stop: AtomicBool::new(false),
            found: AtomicU64::new(0),
            not_found: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        });
        let client = Client::new(&node.url())
            .expect("a valid node address")
            .with_timeout(Duration::from_secs(2));
        let thread = std::thread::Builder::new()
            .name(format!("reader-{}", node.name()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let mut rng = fastrand::Rng::with_seed(7);
                    while !shared.stop.load(Ordering::Relaxed) {
                        let key = keys[rng.usize(..keys.len())].clone();
                        match block_on(client.get(key.clone())) {
                            Ok(got) if got.found => {
                                shared.found.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => lock(&shared.not_found).push((key, now_ms())),
                            Err(e) => {
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                                *lock(&shared.last_error) = e.to_string();
                                // Back-off while the node is down, not a wait.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                }
            })
            .expect("spawn the reader thread");
        Reader {
            shared,
            thread: Some(thread),
        }
    }

    /// Reads that found their key so far.
    pub fn found(&self) -> u64 {
        self.shared.found.load(Ordering::Relaxed)
    }

    /// Stop reading and say what was seen.
    pub fn stop(mut self) -> ReaderReport {
        self.halt();
        ReaderReport {
            found: self.found(),
            not_found: std::mem::take(&mut *lock(&self.shared.not_found)),
            errors: self.shared.errors.load(Ordering::Relaxed),
            last_error: lock(&self.shared.last_error).clone(),
        }
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the reader thread panicked");
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness against a lone primary (no replication needed): the model agrees with a
    /// node after every kind of write and a crash, and it does catch a difference.
    #[test]
    fn the_model_matches_a_node_across_a_crash_and_catches_a_stray_write() {
        let mut node = NodeProcess::start("self-test", NodeConfig::default());
        let options = WriterOptions {
            keys: 300,
            ..WriterOptions::default()
        };
        let writer = Writer::start(&node, options, Model::default());
        writer.wait_more(1500, SYNC_TIMEOUT);
        {
            let _paused = writer.pause();
            let acked = writer.acked();
            converged(&[&node], SYNC_TIMEOUT);
            assert_eq!(writer.acked(), acked, "no write while paused");
        }
        let model = writer.stop();
        assert!(
            model.acked >= 1500 && model.last_lsn > 0,
            "acked {} up to LSN {}",
            model.acked,
            model.last_lsn
        );
        model.assert_on(&node);

        node.kill();
        node.restart();
        model.assert_on(&node);

        let key = model.present_keys()[0].clone();
        node.set(&key, b"written behind the model's back");
        let wrong = model.mismatches(&node).expect("MultiGet");
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        node.stop();
        assert!(!node.is_running());
    }
}
