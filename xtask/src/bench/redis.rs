//! The Redis side: a `redis-server` per run, a minimal RESP client for the few commands the
//! harness sends itself (PING while timing a restart, INFO, DBSIZE, CONFIG SET), loading keys
//! with `redis-cli --pipe`, and `redis-benchmark` runs with their CSV parsed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::cmd::{Cmd, Process};
use super::{Commands, Plan, key, micros};

/// A running `redis-server`; SHUTDOWN NOSAVE on `stop`, SIGTERM if dropped.
pub struct Redis {
    process: Process,
    pub port: u16,
    dir: PathBuf,
    settings: Vec<String>,
    /// From spawn until PING answered PONG with `loading:0`.
    pub ready_after: Duration,
}

impl Redis {
    /// Start `redis-server` on 127.0.0.1 with its files in `dir` and `settings` (e.g.
    /// `--appendonly yes`) on top of the defaults.
    pub fn start(dir: &Path, settings: &[&str], commands: &mut Commands) -> Result<Redis> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let port = crate::free_port()?;
        let settings: Vec<String> = settings.iter().map(|s| (*s).to_owned()).collect();
        Redis::spawn(dir, port, settings, commands)
    }

    fn spawn(
        dir: &Path,
        port: u16,
        settings: Vec<String>,
        commands: &mut Commands,
    ) -> Result<Redis> {
        let mut cmd = Cmd::new("redis-server", "redis-server");
        cmd.arg("--port")
            .arg_as(port.to_string(), "$PORT")
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg_as(dir, "$DIR")
            .args(&settings);
        commands.add(&cmd);
        let started = Instant::now();
        let mut process = cmd.spawn_logged(&dir.join("redis.log"))?;
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Ok(Reply::Status(s)) = call(port, &["PING"])
                && s == "PONG"
                && info_field(&info(port, "persistence")?, "loading")? == "0"
            {
                break;
            }
            if let Some(status) = process.exited()? {
                bail!(
                    "redis-server exited during start-up ({status}):\n{}",
                    process.log_tail()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server not ready within 120 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Redis {
            process,
            port,
            dir: dir.to_owned(),
            settings,
            ready_after: started.elapsed(),
        })
    }

    /// Stop cleanly and start again on the same files and settings; the new server's
    /// `ready_after` is the restart time.
    pub fn restart(self, commands: &mut Commands) -> Result<Redis> {
        let (dir, port, settings) = (self.dir.clone(), self.port, self.settings.clone());
        self.stop()?;
        Redis::spawn(&dir, port, settings, commands)
    }

    pub fn call(&self, args: &[&str]) -> Result<Reply> {
        match call(self.port, args)? {
            Reply::Error(e) => bail!("redis {}: {e}", args.join(" ")),
            reply => Ok(reply),
        }
    }

    pub fn info(&self, section: &str) -> Result<String> {
        info(self.port, section)
    }

    pub fn info_u64(&self, section: &str, field: &str) -> Result<u64> {
        let value = info_field(&self.info(section)?, field)?;
        value
            .parse()
            .with_context(|| format!("INFO {field}: {value:?} is not a number"))
    }

    pub fn dbsize(&self) -> Result<u64> {
        match self.call(&["DBSIZE"])? {
            Reply::Int(n) => Ok(n as u64),
            other => bail!("DBSIZE answered {other:?}"),
        }
    }

    pub fn rss_bytes(&self) -> Result<u64> {
        self.process.rss_bytes()
    }

    /// Wait until no AOF rewrite is running or scheduled.
    pub fn wait_for_aof_rewrite(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let info = self.info("persistence")?;
            if info_field(&info, "aof_rewrite_in_progress")? == "0"
                && info_field(&info, "aof_rewrite_scheduled")? == "0"
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "AOF rewrite still running after 300 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SHUTDOWN NOSAVE: what an operator would do; AOF is flushed, no RDB is written.
    pub fn stop(mut self) -> Result<()> {
        // The server closes the connection instead of replying, so the reply is ignored.
        let _ = call(self.port, &["SHUTDOWN", "NOSAVE"]);
        let status = self.process.wait(Duration::from_secs(30))?;
        ensure!(
            status.success(),
            "redis-server exited with {status} on SHUTDOWN"
        );
        Ok(())
    }
}

/// A RESP reply, as far as the harness needs it.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
}

/// One command on a fresh connection (cheap next to what is measured, and a restart poll
/// must not hold a connection across the server's death anyway).
fn call(port: u16, args: &[&str]) -> Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.write_all(&encode(args))?;
    read_reply(&mut BufReader::new(stream))
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    ensure!(!line.is_empty(), "connection closed without a reply");
    let (kind, rest) = line.split_at(1);
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse()?),
        "$" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut body = vec![0; len as usize + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len as usize);
                Reply::Bulk(Some(body))
            }
        }
        _ => bail!("unexpected RESP reply {line:?}"),
    })
}

fn info(port: u16, section: &str) -> Result<String> {
    match call(port, &["INFO", section])? {
        Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
        other => bail!("INFO {section} answered {other:?}"),
    }
}

/// `field:value` from an INFO reply.
pub fn info_field(info: &str, field: &str) -> Result<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {field} in INFO"))
}

/// SET `key:%012d` for keys `0..count` to `value_size` bytes of `x` through `redis-cli --pipe`
/// (the bulk-load path Redis documents), so GETs hit and the key space matches
/// redis-benchmark's `-r`.
pub fn load(redis: &Redis, count: u64, value_size: usize, commands: &mut Commands) -> Result<()> {
    let mut cmd = Cmd::new("redis-cli", "redis-cli");
    cmd.arg("-p")
        .arg_as(redis.port.to_string(), "$PORT")
        .arg("--pipe");
    commands.add_as(
        &cmd,
        &format!("(SET key:%012d <{value_size} bytes> for {count} keys, in RESP) | "),
    );
    let out = cmd.output_fed(move |mut stdin| {
        let value = "x".repeat(value_size);
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 0..count {
            buf.extend_from_slice(&encode(&["SET", &key(i), &value]));
            if buf.len() >= 1 << 20 {
                stdin.write_all(&buf)?;
                buf.clear();
            }
        }
        stdin.write_all(&buf)
    })?;
    ensure!(out.contains("errors: 0,"), "redis-cli --pipe failed: {out}");
    Ok(())
}

/// One row of redis-benchmark's CSV.
#[derive(Debug, PartialEq)]
pub struct BenchRow {
    pub test: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Parse `redis-benchmark --csv` (Redis 7: `"test","rps","avg_latency_ms",...,
/// "p50_latency_ms",...,"p99_latency_ms",...`), locating columns by their header.
pub fn parse_csv(text: &str) -> Result<Vec<BenchRow>> {
    let mut lines = text.lines().filter(|l| l.starts_with('"'));
    let header: Vec<String> = fields(lines.next().context("redis-benchmark printed no CSV")?);
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("redis-benchmark CSV has no {name} column: {header:?}"))
    };
    let (test, rps, p50, p99) = (
        column("test")?,
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
    );
    let rows = lines
        .map(|line| {
            let f = fields(line);
            let num = |i: usize| -> Result<f64> {
                f.get(i)
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("bad redis-benchmark CSV line {line:?}"))
            };
            Ok(BenchRow {
                test: f.get(test).cloned().unwrap_or_default(),
                rps: num(rps)?,
                p50_us: num(p50)? * 1000.0,
                p99_us: num(p99)? * 1000.0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(!rows.is_empty(), "redis-benchmark printed no results");
    Ok(rows)
}

fn fields(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"').to_owned())
        .collect()
}

/// A `redis-benchmark` invocation (everything but `-n`).
pub struct Benchmark<'a> {
    pub connections: u32,
    pub pipeline: u32,
    pub tests: &'a str,
    pub keys: u64,
    pub value_size: usize,
}

impl Benchmark<'_> {
    fn cmd(&self, port: u16, requests: Option<u64>) -> Cmd {
        let mut cmd = Cmd::new("redis-benchmark", "redis-benchmark");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg_as(port.to_string(), "$PORT")
            .arg("-c")
            .arg(self.connections.to_string());
        if self.pipeline > 1 {
            cmd.arg("-P").arg(self.pipeline.to_string());
        }
        cmd.arg("-n");
        match requests {
            Some(n) => cmd.arg_as(n.to_string(), "$N"),
            None => cmd.arg("$N"),
        };
        cmd.args(["-t", self.tests, "-d"])
            .arg(self.value_size.to_string())
            .arg("-r")
            .arg(self.keys.to_string())
            .arg("--csv");
        cmd
    }

    /// redis-benchmark counts requests, not time: a short probe and a warm-up as long as
    /// wasmkv's `--warmup` size the measured run to last about `plan.duration`.
    pub fn run(
        &self,
        redis: &Redis,
        plan: &Plan,
        commands: &mut Commands,
    ) -> Result<Vec<BenchRow>> {
        commands.add(&self.cmd(redis.port, None));
        let probe = self.exec(redis.port, 2_000)?;
        let warmup = self.exec(redis.port, requests_for(&probe, plan.warmup))?;
        self.exec(redis.port, requests_for(&warmup, plan.duration))
    }

    fn exec(&self, port: u16, requests: u64) -> Result<Vec<BenchRow>> {
        parse_csv(&self.cmd(port, Some(requests)).output()?)
    }
}

/// How many requests per test make a run of `length`, given the rates of an earlier run
/// (redis-benchmark runs its tests one after another, each with `-n` requests).
pub fn requests_for(rows: &[BenchRow], length: Duration) -> u64 {
    let secs_per_request: f64 = rows.iter().map(|r| 1.0 / r.rps.max(1.0)).sum();
    ((length.as_secs_f64() / secs_per_request) as u64).max(1_000)
}

/// The row for `test` (redis-benchmark names them in upper case).
pub fn row<'a>(rows: &'a [BenchRow], test: &str) -> Result<&'a BenchRow> {
    rows.iter()
        .find(|r| r.test.eq_ignore_ascii_case(test))
        .with_context(|| format!("redis-benchmark printed no {test} row"))
}

impl BenchRow {
    pub fn summary(&self) -> String {
        format!(
            "{} {:.0} rps, p50 {}, p99 {}",
            self.test,
            self.rps,
            micros(self.p50_us),
            micros(self.p99_us)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                       \"SET\",\"26075.62\",\"1.412\",\"0.128\",\"0.735\",\"4.847\",\"10.383\",\"26.575\"\n\
                       \"GET\",\"21949.08\",\"1.711\",\"0.120\",\"0.719\",\"8.055\",\"15.575\",\"32.495\"\n";

    #[test]
    fn parses_redis_7_csv() {
        let rows = parse_csv(CSV).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].test, "SET");
        assert_eq!(rows[0].rps, 26075.62);
        assert!((rows[0].p50_us - 735.0).abs() < 1e-6);
        assert!((rows[1].p99_us - 15575.0).abs() < 1e-6);
        assert_eq!(row(&rows, "get").unwrap().rps, 21949.08);
        assert!(row(&rows, "incr").is_err());
    }

    #[test]
    fn csv_without_percentiles_is_an_error() {
        assert!(parse_csv("\"test\",\"rps\"\n\"GET\",\"1.0\"\n").is_err());
        assert!(parse_csv("").is_err());
    }

    #[test]
    fn sizes_runs_from_the_rates_of_all_tests() {
        let rows = parse_csv(CSV).unwrap();
        // 5 s over two tests: n / 26075.62 + n / 21949.08 = 5.
        let n = requests_for(&rows, Duration::from_secs(5));
        let secs = n as f64 / 26075.62 + n as f64 / 21949.08;
        assert!((secs - 5.0).abs() < 0.01, "{n} requests take {secs} s");
        assert_eq!(requests_for(&rows, Duration::ZERO), 1_000);
    }

    #[test]
    fn resp_round_trip() {
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut r = &b"+PONG\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Status("PONG".into()));
        let mut r = &b"-LOADING Redis is loading\r\n"[..];
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Error(_)));
        let mut r = &b":42\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Int(42));
        let mut r = &b"$5\r\nab\r\nc\r\n"[..];
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(Some(b"ab\r\nc".to_vec()))
        );
        let mut r = &b""[..];
        assert!(read_reply(&mut r).is_err());
    }

    #[test]
    fn info_fields() {
        let info = "# Memory\r\nused_memory:1234\r\nused_memory_rss:5678\r\n";
        assert_eq!(info_field(info, "used_memory").unwrap(), "1234");
        assert_eq!(info_field(info, "used_memory_rss").unwrap(), "5678");
        assert!(info_field(info, "used").is_err());
    }
}
