//! `wasmkv bench` as a real process against an in-process node: every workload, both HTTP
//! protocols, the JSON report's figures, and failures that must fail the run; and over RESP
//! against a stand-in for Redis.

mod common;

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;
use wasmkv::client::Client;

/// A bench run may take this long at most (the node is a debug build in the tests).
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// The key space of these runs: small, so that preloading a debug node is quick.
const KEYS: u64 = 1000;

async fn bench(base: &str, args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_wasmkv"))
        .arg("bench")
        .args(["--addr", base])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("WASMKV_ADDR")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("bench {args:?} did not finish within {RUN_DEADLINE:?}"))
        .expect("run the wasmkv binary")
}

fn report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line on stdout; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Run the bench, which must succeed; its JSON report. `what` names the run in a failure.
async fn bench_ok(base: &str, args: &[&str], what: &str) -> serde_json::Value {
    let output = bench(base, args).await;
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    report(&output)
}

fn number(json: &serde_json::Value, key: &str) -> u64 {
    json[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no whole number {key:?} in {json}"))
}

/// Run `workload` for 200 requests on 4 connections after a preload, check the report, and
/// check that the node holds exactly the key space (so every get hit).
async fn run_workload(workload: &str, extra: &[&str], batch: u64) -> serde_json::Value {
    let (node, base, _dir) = common::start("").await;
    let keys = KEYS.to_string();
    let mut args = vec![
        "--workload",
        workload,
        "--requests",
        "200",
        "--connections",
        "4",
        "--json",
        "--preload",
        "--keys",
        &keys,
    ];
    args.extend_from_slice(extra);
    let json = bench_ok(&base, &args, &format!("{workload} {extra:?}")).await;
    let protocol = if extra.contains(&"--http2") {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    };
    assert_eq!(json["workload"], workload, "{json}");
    assert_eq!(json["protocol"], protocol, "{json}");
    assert_eq!(number(&json, "connections"), 4, "{json}");
    assert_eq!(number(&json, "batch"), batch, "{json}");
    assert_eq!(number(&json, "requests"), 200, "{json}");
    assert_eq!(number(&json, "ops"), 200 * batch, "{json}");
    assert_eq!(number(&json, "errors"), 0, "{json}");
    let elapsed = json["elapsed_s"].as_f64().unwrap();
    let rps = json["rps"].as_f64().unwrap();
    assert!(elapsed > 0.0 && rps > 0.0, "{json}");
    assert!((rps * elapsed - 200.0).abs() < 1e-6, "{json}");
    let latencies = ["p50_us", "p99_us", "p999_us", "max_us"].map(|k| number(&json, k));
    assert!(latencies[0] >= 1, "{json}");
    assert!(latencies.is_sorted(), "percentiles out of order: {json}");
    // Every key of the key space is there (and no other): the gets of the run all hit.
    let status = Client::new(&base).unwrap().status().await.unwrap();
    assert_eq!(status.keys, KEYS, "{workload}");
    node.shutdown().await.unwrap();
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get() {
    run_workload("get", &[], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_with_a_ttl() {
    let (node, base, _dir) = common::start("").await;
    let args = [
        "--workload=set",
        "--requests=200",
        "--connections=4",
        "--json",
        "--keys=1",
        "--ttl-ms=600000",
        "--value-size=10",
        "--warmup=0s",
    ];
    let json = report(&bench(&base, &args).await);
    assert_eq!(
        (number(&json, "requests"), number(&json, "errors")),
        (200, 0)
    );
    let got = Client::new(&base)
        .unwrap()
        .get("key:000000000000")
        .await
        .unwrap();
    assert!(got.found);
    assert_eq!(got.value.len(), 10);
    assert!(got.expires_at_ms > 0, "the TTL was sent");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set() {
    run_workload("set", &[], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed() {
    run_workload("mixed", &["--read-ratio", "0.5"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiget() {
    run_workload("multiget", &[], 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write() {
    run_workload("write", &["--batch", "4"], 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_get() {
    run_workload("rest-get", &[], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_over_http2() {
    run_workload("get", &["--http2"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_over_http2() {
    run_workload("write", &["--http2"], 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_get_over_http2() {
    run_workload("rest-get", &["--http2"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_run_measures_after_its_warmup() {
    let (node, base, _dir) = common::start("").await;
    let args = [
        "--duration=400ms",
        "--warmup=200ms",
        "--connections=2",
        "--keys=100",
        "--preload",
        "--json",
    ];
    let json = bench_ok(&base, &args, "timed run").await;
    assert!(number(&json, "requests") >= 1, "{json}");
    assert_eq!(number(&json, "errors"), 0, "{json}");
    let elapsed = json["elapsed_s"].as_f64().unwrap();
    // The measured time is the duration (plus the last answers), not the warmup too.
    assert!((0.4..1.5).contains(&elapsed), "{json}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_run_sends_exactly_its_rate_over_its_duration() {
    let (node, base, _dir) = common::start("").await;
    // 300 requests/s for 1 s over 3 connections: request k of connection i is due at
    // (3k + i) / 300 s, so exactly 300 are due within the measured second, each sent when
    // the pacing alarm says so (far below what even a debug node answers).
    let args = [
        "--rate=300",
        "--duration=1s",
        "--warmup=100ms",
        "--connections=3",
        "--keys=100",
        "--preload",
        "--json",
    ];
    let json = bench_ok(&base, &args, "paced run").await;
    assert_eq!(number(&json, "rate"), 300, "{json}");
    assert_eq!(number(&json, "requests"), 300, "{json}");
    assert_eq!(number(&json, "errors"), 0, "{json}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_for_people() {
    let (node, base, _dir) = common::start("").await;
    let output = bench(&base, &["--requests=50", "--connections=2", "--warmup=0s"]).await;
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    for row in ["workload", "requests", "errors", "requests/s", "latency"] {
        assert!(table.contains(row), "{row} in\n{table}");
    }
    assert!(table.contains("p99.9"), "{table}");
    // Not a terminal, no --progress: nothing on stderr.
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_fail_the_run_with_the_first_error() {
    let (node, base, _dir) = common::start("").await;
    // Nothing preloaded: every REST get is a 404.
    let args = [
        "--workload=rest-get",
        "--requests=100",
        "--connections=2",
        "--json",
        "--warmup=0s",
        "--progress",
    ];
    let output = bench(&base, &args).await;
    assert_eq!(output.status.code(), Some(2));
    let json = report(&output);
    assert_eq!(
        (number(&json, "requests"), number(&json, "errors")),
        (0, 100),
        "{json}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: 100 of 100 requests failed; the first: not_found: key "),
        "{stderr}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_fails_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = bench(&addr, &["--requests=10", "--connections=2"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unavailable: cannot connect to") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// A stand-in for Redis: it speaks RESP over a real socket and keeps what it is sent, so the
/// RESP side of the load generator is checked without a Redis server on the test machine
/// (`cargo xtask bench` runs it against the real one).
mod fake_redis {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Default)]
    pub struct Seen {
        pub store: HashMap<Vec<u8>, Vec<u8>>,
        pub gets: u64,
        pub misses: u64,
        pub sets: u64,
    }

    /// Listen on a free port; with `refuse_sets`, every SET gets an error reply.
    pub async fn start(refuse_sets: bool) -> (String, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("redis://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared), refuse_sets));
            }
        });
        (addr, seen)
    }

    async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Seen>>, refuse_sets: bool) {
        let mut buf = Vec::new();
        loop {
            let mut replies = Vec::new();
            while let Some((args, len)) = command(&buf) {
                buf.drain(..len);
                replies.extend(answer(&args, &mut seen.lock().unwrap(), refuse_sets));
            }
            if !replies.is_empty() && stream.write_all(&replies).await.is_err() {
                return;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn answer(args: &[Vec<u8>], seen: &mut Seen, refuse_sets: bool) -> Vec<u8> {
        match args {
            [name, key] if name == b"GET" => {
                seen.gets += 1;
                match seen.store.get(key) {
                    Some(value) => {
                        let mut out = format!("${}\r\n", value.len()).into_bytes();
                        out.extend_from_slice(value);
                        out.extend_from_slice(b"\r\n");
                        out
                    }
                    None => {
                        seen.misses += 1;
                        b"$-1\r\n".to_vec()
                    }
                }
            }
            [name, ..] if name == b"SET" && refuse_sets => {
                b"-OOM command not allowed when used memory > 'maxmemory'.\r\n".to_vec()
            }
            [name, key, value, ..] if name == b"SET" => {
                seen.sets += 1;
                seen.store.insert(key.clone(), value.clone());
                b"+OK\r\n".to_vec()
            }
            _ => b"-ERR unknown command\r\n".to_vec(),
        }
    }

    /// The command at the start of `buf` and its length, once it is all there.
    fn command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
        let line = |at: usize| -> Option<(usize, usize)> {
            let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
            let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
            Some((n, end + 2))
        };
        let (count, mut at) = line(0)?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let (len, start) = line(at)?;
            args.push(buf.get(start..start + len)?.to_vec());
            at = start + len + 2;
        }
        (buf.len() >= at).then_some((args, at))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_resp_every_workload_reaches_a_redis_server() {
    let (addr, seen) = fake_redis::start(false).await;
    let keys = KEYS.to_string();
    for (workload, batch) in [("get", 1), ("multiget", 3), ("set", 1), ("write", 3)] {
        let batch_arg = format!("--batch={batch}");
        let mut args = vec![
            "--workload",
            workload,
            "--requests=200",
            "--connections=4",
            "--warmup=0s",
            "--json",
            "--keys",
            &keys,
            &batch_arg,
        ];
        if workload == "get" {
            args.push("--preload");
        }
        let json = bench_ok(&addr, &args, workload).await;
        assert_eq!(json["protocol"], "RESP", "{json}");
        assert_eq!(number(&json, "requests"), 200, "{json}");
        assert_eq!(number(&json, "ops"), 200 * batch, "{json}");
        assert_eq!(number(&json, "errors"), 0, "{json}");
    }
    let seen = seen.lock().unwrap();
    // The preload set every key once; then 200 gets and 600 multiget keys, all hits; then
    // 200 sets and 600 write keys.
    assert_eq!(seen.store.len() as u64, KEYS);
    assert_eq!((seen.gets, seen.misses), (800, 0));
    assert_eq!(seen.sets, KEYS + 800);
    assert!(seen.store.values().all(|v| v.len() == 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_error_replies_fail_the_run_with_the_first() {
    let (addr, seen) = fake_redis::start(true).await;
    let args = [
        "--workload=write",
        "--requests=20",
        "--connections=2",
        "--warmup=0s",
        "--json",
    ];
    let output = bench(&addr, &args).await;
    assert_eq!(output.status.code(), Some(2));
    let json = report(&output);
    assert_eq!(
        (number(&json, "requests"), number(&json, "errors")),
        (0, 20),
        "{json}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("20 of 20 requests failed; the first: unknown: OOM command not allowed"),
        "{stderr}"
    );
    assert_eq!(seen.lock().unwrap().sets, 0);
}
