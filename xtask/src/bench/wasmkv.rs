//! The wasmkv side: a `wasmkv serve` node per run (config/primary.yaml with the scenario's
//! settings as `WASMKV_*` environment overrides, as an operator would set them; a replica is
//! the same with `WASMKV_PRIMARY__ADDRESS`), and runs of the load generator `wasmkv bench`,
//! whose one-line JSON result is parsed here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use super::cmd::{Cmd, Process};
use super::{Commands, micros};

/// Threads of every node (`server.threads`) and of every `wasmkv bench` run (`--threads`).
/// Redis serves from one event-loop thread and redis-benchmark drives it from one, so on a
/// machine whose cores the server and its load generator share, each side gets one thread
/// and (on 2 cores) a core of its own. With the default of a thread per core on both sides,
/// four busy threads share two cores and the scheduler's time slices show in every p99.
pub(super) const THREADS: &str = "1";

/// Where the release binary and the config are.
pub struct Wasmkv {
    pub bin: PathBuf,
    pub config: PathBuf,
}

/// A running node; SIGTERM (graceful: in-flight requests finish, the WAL is fsynced) on
/// `stop` or drop.
pub struct Node {
    process: Process,
    pub addr: String,
    port: u16,
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// For a replica: its primary's `host:port`.
    primary: Option<String>,
    /// From spawn until `/readyz` answered 200.
    pub ready_after: Duration,
}

/// What a stopped node needs to start again on the same data, port and settings.
pub struct Stopped {
    dir: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    primary: Option<String>,
}

impl Wasmkv {
    /// Start a node with its data in `dir` and `env` overrides (e.g. `WASMKV_WAL__SYNC`).
    pub fn start(&self, dir: &Path, env: &[(&str, &str)], commands: &mut Commands) -> Result<Node> {
        self.start_node(dir, env, None, commands)
    }

    /// Start a replica of `primary` (`WASMKV_PRIMARY__ADDRESS`, shown as `$PRIMARY`), like
    /// `start` otherwise.
    pub fn start_replica(
        &self,
        dir: &Path,
        primary: &Node,
        env: &[(&str, &str)],
        commands: &mut Commands,
    ) -> Result<Node> {
        let address = format!("127.0.0.1:{}", primary.port);
        self.start_node(dir, env, Some(address), commands)
    }

    fn start_node(
        &self,
        dir: &Path,
        env: &[(&str, &str)],
        primary: Option<String>,
        commands: &mut Commands,
    ) -> Result<Node> {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let node = Stopped {
            dir: dir.to_owned(),
            port: crate::free_port()?,
            env,
            primary,
        };
        self.start_again(node, commands)
    }

    /// Start a stopped node again on its data, port and settings; the new node's
    /// `ready_after` is the restart time.
    pub fn start_again(&self, node: Stopped, commands: &mut Commands) -> Result<Node> {
        let Stopped {
            dir,
            port,
            env,
            primary,
        } = node;
        let mut cmd = Cmd::new(&self.bin, "wasmkv");
        cmd.env_as("WASMKV_DATA_DIR", &dir, "$DIR")
            .env_as("WASMKV_SERVER__PORT", port.to_string(), "$PORT")
            .env("WASMKV_LOG__LEVEL", "warn")
            .env("WASMKV_SERVER__THREADS", THREADS);
        for (key, value) in &env {
            cmd.env(key, value);
        }
        if let Some(address) = &primary {
            cmd.env_as("WASMKV_PRIMARY__ADDRESS", address, "$PRIMARY");
        }
        cmd.args(["serve", "--config"])
            .arg_as(&self.config, "config/primary.yaml");
        commands.add(&cmd);
        let started = Instant::now();
        let mut process = cmd.spawn_logged(&dir.with_extension("log"))?;
        let deadline = started + Duration::from_secs(120);
        while !matches!(http_status(port, "/readyz"), Ok(200)) {
            if let Some(status) = process.exited()? {
                bail!(
                    "wasmkv serve exited during start-up ({status}):\n{}",
                    process.log_tail()
                );
            }
            ensure!(Instant::now() < deadline, "wasmkv not ready within 120 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Node {
            process,
            addr: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            env,
            primary,
            ready_after: started.elapsed(),
        })
    }

    /// Stop cleanly (SIGTERM) and start again on the same data and settings; the new node's
    /// `ready_after` is the restart time.
    pub fn restart(&self, node: Node, commands: &mut Commands) -> Result<Node> {
        let stopped = node.stop()?;
        self.start_again(stopped, commands)
    }

    /// A client command against `node` (`status --json`, `snapshot`), returning stdout.
    pub fn client(&self, node: &Node, args: &[&str], commands: &mut Commands) -> Result<String> {
        let mut cmd = Cmd::new(&self.bin, "wasmkv");
        cmd.args(args).arg("--addr").arg_as(&node.addr, "$URL");
        commands.add(&cmd);
        cmd.output()
    }

    /// `wasmkv status --json`: the node's own counts (keys, evicted_keys, ...).
    pub fn status(&self, node: &Node, commands: &mut Commands) -> Result<serde_json::Value> {
        let out = self.client(node, &["status", "--json"], commands)?;
        serde_json::from_str(&out).context("parse wasmkv status --json")
    }

    /// Run `wasmkv bench` against `node`.
    pub fn bench(&self, node: &Node, load: &Load, commands: &mut Commands) -> Result<BenchResult> {
        self.bench_at(&node.addr, "$URL", load, commands)
    }

    /// Run `wasmkv bench` against `addr` (a `redis://` address speaks RESP), shown in the
    /// commands as `shown`.
    pub fn bench_at(
        &self,
        addr: &str,
        shown: &str,
        load: &Load,
        commands: &mut Commands,
    ) -> Result<BenchResult> {
        let mut cmd = Cmd::new(&self.bin, "wasmkv");
        cmd.args(["bench", "--addr"]).arg_as(addr, shown);
        load.args(&mut cmd);
        commands.add(&cmd);
        parse_result(&cmd.output()?)
    }
}

impl Node {
    pub fn rss_bytes(&self) -> Result<u64> {
        self.process.rss_bytes()
    }

    /// SIGTERM and wait; what it takes to start the node again.
    pub fn stop(mut self) -> Result<Stopped> {
        let status = self.process.terminate()?;
        ensure!(status.success(), "wasmkv exited with {status} on SIGTERM");
        Ok(Stopped {
            dir: self.dir,
            port: self.port,
            env: self.env,
            primary: self.primary,
        })
    }
}

/// How long a `wasmkv bench` run lasts.
pub enum Length {
    Duration(Duration),
    /// A fixed count: with `--preload` and 1 request, a pure loading run.
    Requests(u64),
}

/// The arguments of one `wasmkv bench` run (everything but `--addr`).
pub struct Load {
    pub workload: &'static str,
    pub connections: u32,
    pub batch: u32,
    pub read_ratio: Option<f64>,
    pub ttl_ms: Option<u64>,
    pub keys: u64,
    pub value_size: usize,
    pub length: Length,
    pub warmup: Option<Duration>,
    pub preload: bool,
    /// `--rate`: paced at this many requests per second (shown as `$RATE`).
    pub rate: Option<u64>,
}

impl Load {
    /// A timed run of `workload` over `keys` keys of 64-byte values.
    pub fn timed(workload: &'static str, connections: u32, keys: u64, length: Duration) -> Load {
        Load {
            workload,
            connections,
            batch: 1,
            read_ratio: None,
            ttl_ms: None,
            keys,
            value_size: 64,
            length: Length::Duration(length),
            warmup: None,
            preload: false,
            rate: None,
        }
    }

    /// Write every key once (`--preload`, then a single request and no warm-up): fills a
    /// node.
    pub fn fill(keys: u64) -> Load {
        Load {
            batch: 100,
            length: Length::Requests(1),
            warmup: Some(Duration::ZERO),
            preload: true,
            ..Load::timed("write", 16, keys, Duration::ZERO)
        }
    }

    fn args(&self, cmd: &mut Cmd) {
        cmd.arg("--threads")
            .arg(THREADS)
            .arg("--connections")
            .arg(self.connections.to_string())
            .arg("--workload")
            .arg(self.workload);
        if let Some(ratio) = self.read_ratio {
            cmd.arg("--read-ratio").arg(ratio.to_string());
        }
        if self.batch > 1 {
            cmd.arg("--batch").arg(self.batch.to_string());
        }
        cmd.arg("--keys")
            .arg(self.keys.to_string())
            .arg("--value-size")
            .arg(self.value_size.to_string());
        if let Some(ttl) = self.ttl_ms {
            cmd.arg("--ttl-ms").arg(ttl.to_string());
        }
        match self.length {
            Length::Duration(d) => cmd.arg("--duration").arg(humantime(d)),
            Length::Requests(n) => cmd.arg("--requests").arg(n.to_string()),
        };
        if let Some(warmup) = self.warmup {
            cmd.arg("--warmup").arg(humantime(warmup));
        }
        if self.preload {
            cmd.arg("--preload");
        }
        if let Some(rate) = self.rate {
            cmd.arg("--rate").arg_as(rate.to_string(), "$RATE");
        }
        cmd.arg("--json");
    }
}

/// `1s`, `300ms`: what `wasmkv bench` parses.
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The JSON line `wasmkv bench --json` prints.
#[derive(Debug, Deserialize, PartialEq)]
pub struct BenchResult {
    pub workload: String,
    pub connections: u32,
    pub batch: u32,
    pub requests: u64,
    pub ops: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub rps: f64,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl BenchResult {
    pub fn summary(&self) -> String {
        format!(
            "{} {:.0} ops/s ({:.0} requests/s), p50 {}, p99 {}, {} errors",
            self.workload,
            self.ops_per_s,
            self.rps,
            micros(self.p50_us),
            micros(self.p99_us),
            self.errors
        )
    }
}

/// The last line of stdout that is a JSON object (the load generator may print other lines).
pub fn parse_result(stdout: &str) -> Result<BenchResult> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("wasmkv bench printed no JSON line: {stdout:?}"))?;
    serde_json::from_str(line).with_context(|| format!("parse wasmkv bench output {line:?}"))
}

/// The status code of a `GET path` (one request per connection, like a readiness probe).
fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])?
        .parse()
        .context("malformed HTTP status line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bench_json_line() {
        let out = "preloading 100000 keys\n{\"workload\":\"get\",\"connections\":50,\"protocol\":\"HTTP/1.1\",\
                   \"batch\":1,\"requests\":1000,\"ops\":1000,\"errors\":0,\"elapsed_s\":5.0,\
                   \"rps\":200.0,\"ops_per_s\":200.0,\"p50_us\":120,\"p99_us\":900,\
                   \"p999_us\":1500,\"max_us\":3000}\n";
        let r = parse_result(out).unwrap();
        assert_eq!(r.workload, "get");
        assert_eq!(r.connections, 50);
        assert_eq!(r.ops_per_s, 200.0);
        assert_eq!(r.p99_us, 900.0);
        assert!(parse_result("no json here").is_err());
        assert!(parse_result("{\"workload\":\"get\"}").is_err());
    }

    #[test]
    fn durations_in_bench_syntax() {
        assert_eq!(humantime(Duration::from_secs(5)), "5s");
        assert_eq!(humantime(Duration::from_millis(300)), "300ms");
    }
}
