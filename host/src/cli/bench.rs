//! `wasmkv bench`: the load generator behind BENCHMARKS.md.
//!
//! The figures it reports must be the node's, so the client costs as little as it can. Every
//! connection is one task with exactly one request in flight (a closed loop, as `wrk` and
//! `redis-benchmark` without `-P` run), on its own socket (no pool, no per-call lookups).
//!
//! With `--rate N` the load is paced instead (open loop, as far as one request in flight per
//! connection allows, like `wrk2`): request `k` of connection `i` (of `C`) is due
//! `(k * C + i) / N` seconds after the load starts, so the requests of all connections
//! together are spread evenly at N per second. A connection sleeps until its next request is
//! due (`alarm`: within 0.1 ms, where tokio's timer would round to the millisecond and send a
//! millisecond's requests together); one that is behind (its previous answer came late)
//! sends at once. Latency is then counted from when the request was due whenever the
//! connection was behind, so the time a request waited for a slow answer to the one before
//! it is part of its latency (no coordinated omission), and from when it was sent otherwise
//! (the alarm's wake-up is not charged to the node). A node that cannot keep up shows it
//! twice: the rate reached stays below N, and latencies grow with the backlog.
//! Requests are serialized once, by the real codec, with placeholder keys; a request then
//! only rewrites its keys' digits (every key is `key:` and 12 digits, so the layout never
//! changes). `link` holds the wire side, `report` the figures.
//!
//! The connections are spread over one single-threaded runtime per client thread rather than
//! one work-stealing runtime: a connection never needs to move to another thread, and a
//! single-threaded runtime wakes its tasks without signalling other threads, which leaves a
//! little more of the shared cores to the node being measured.
//!
//! Errors (any answer but 200, and lost connections) are counted apart, never silently: more
//! than 1% of them fails the run with the first one's Connect code and message.
//!
//! `--addr redis://host:port` sends the same workloads to a Redis server over RESP (a `Get`
//! is a GET, a `Write` of B keys B pipelined SETs, as `redis-benchmark -P B` sends them), so
//! that Redis can be measured by the same client, with the same clock, as the node.

mod alarm;
mod link;
mod report;

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::Uri;

use wasmkv::api::proto::{GetRequest, MultiGetRequest, Mutation, Op, SetRequest, WriteRequest};
use wasmkv::api::{Code, Codec, ConnectError, WireMessage};

use alarm::Alarm;
use link::{Call, Caller, ConnectCall, Link, Protocol, Template, resp_command, resp_set};
use report::{Recorder, Report, Totals, thousands};

/// Keys are `key:` and 12 decimal digits: 16 bytes, the size the benchmark scenarios use.
const KEY_DIGITS: usize = 12;
const KEY_PREFIX: &str = "key:";
/// The size of the largest key space whose keys all have 12 digits.
const MAX_KEYS: u64 = 1_000_000_000_000;
/// Most keys per `Write` while preloading: preloading 100k keys takes well under a second.
const PRELOAD_BATCH: u64 = 100;
/// Most value bytes per preload `Write`, so that large values keep a request far below the
/// node's size limit (`limits.max_request_bytes`, 8 MiB by default).
const PRELOAD_BYTES: u64 = 1 << 20;
/// How long after the end of a timed run a request may still take before it is given up as
/// failed: a node that stops answering must not hang the benchmark.
const STRAGGLER_GRACE: Duration = Duration::from_secs(10);

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Connect `KVStore/Get` of one key
    Get,
    /// Connect `KVStore/Set` of one key
    Set,
    /// Gets and sets, `--read-ratio` of them gets
    Mixed,
    /// Connect `KVStore/MultiGet` of `--batch` keys
    #[value(name = "multiget")]
    MultiGet,
    /// Connect `KVStore/Write` of `--batch` sets (one atomic batch)
    Write,
    /// `GET /v1/kv/{key}`: the route `wrk` can hit too, to check this tool against it
    RestGet,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Set => "set",
            Workload::Mixed => "mixed",
            Workload::MultiGet => "multiget",
            Workload::Write => "write",
            Workload::RestGet => "rest-get",
        }
    }

    fn batched(self) -> bool {
        matches!(self, Workload::MultiGet | Workload::Write)
    }
}

/// The options of `wasmkv bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// The node's address (`redis://host:port`: a Redis server, over RESP)
    #[arg(
        long,
        env = "WASMKV_ADDR",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub addr: String,
    /// Connections, each with one request in flight (closed loop unless --rate)
    #[arg(long, default_value_t = 50, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Speak cleartext HTTP/2 with prior knowledge (default: HTTP/1.1 keep-alive)
    #[arg(long)]
    pub http2: bool,
    /// What each request does
    #[arg(long, value_enum, default_value_t = Workload::Get)]
    pub workload: Workload,
    /// Share of gets in the mixed workload (the rest are sets), 0 to 1
    #[arg(long, default_value_t = 0.9, value_name = "R", value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Keys per MultiGet or Write request
    #[arg(long, default_value_t = 16, value_name = "B",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Key space: keys are key:000000000000 .. key:{K-1}, each request's picked uniformly
    #[arg(long, default_value_t = 100_000, value_name = "K",
          value_parser = clap::value_parser!(u64).range(1..=MAX_KEYS))]
    pub keys: u64,
    /// Bytes of each value written
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub value_size: usize,
    /// TTL of what sets and writes store (0: never expires; preloaded keys never expire)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub ttl_ms: u64,
    /// Measure for this long (e.g. 10s, 1m) [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure this many requests instead of a duration
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Run this long before measuring; requests in it are not recorded
    #[arg(long, default_value = "1s", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// First set every key of the key space once (Write batches of 100), so gets hit
    #[arg(long)]
    pub preload: bool,
    /// Requests per second across all connections, each sending at its share of the rate
    /// (paced; latency then counts from when a request was due) [default: as fast as answered]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Client threads [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Print one JSON object on stdout instead of a table
    #[arg(long)]
    pub json: bool,
    /// Show the progress line on stderr even when it is not a terminal
    #[arg(long)]
    pub progress: bool,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("{ratio} is not between 0 and 1"))
    }
}

/// The key with index `i`: `key:` and `i` in 12 digits.
pub fn key(i: u64) -> String {
    format!("{KEY_PREFIX}{i:0KEY_DIGITS$}")
}

/// Run the benchmark and print its report. Fails (exit status 2) when the node cannot be
/// reached or preloaded, or when more than 1% of the requests failed.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let plan = Plan::new(&args)?;
    let progress = args.progress || std::io::stderr().is_terminal();
    let threads = match args.threads {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let alarm = match plan.rate {
        Some(_) => Some(Alarm::start().context("starting the pacing thread")?),
        None => None,
    };
    let shared = Arc::new(Shared::new(
        plan,
        args.connections as usize,
        progress,
        alarm,
    ));
    let ticker = progress.then(|| Ticker::start(Arc::clone(&shared)));
    let outcome = run_threads(&shared, threads);
    if let Some(ticker) = ticker {
        ticker.stop();
    }
    let recorders = outcome?;
    let timeline = shared
        .timeline
        .get()
        .ok_or_else(|| anyhow!("the benchmark never started"))?;
    let totals = Totals::merge(recorders, timeline.measure_from, Instant::now());
    let batch = if args.workload.batched() {
        args.batch
    } else {
        1
    };
    let report = Report::new(
        args.workload.name(),
        args.connections,
        shared.plan.protocol,
        batch,
        args.rate,
        &totals,
    );
    let text = if args.json {
        let mut line = serde_json::to_string(&report).context("encoding the report")?;
        line.push('\n');
        line
    } else {
        report.table()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    if totals.too_many_errors() {
        let first = totals
            .first_error
            .unwrap_or_else(|| ConnectError::new(Code::Unknown, "no error was kept"));
        bail!(
            "{} of {} requests failed; the first: {}: {}",
            totals.errors,
            totals.requests + totals.errors,
            first.code,
            first.message
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where to connect and what to send, built once from the arguments.
struct Plan {
    /// `host:port` to open TCP connections to.
    connect_to: String,
    protocol: Protocol,
    keys: u64,
    preload: bool,
    warmup: Duration,
    stop: StopRule,
    /// `--rate`: requests per second across all connections.
    rate: Option<u64>,
    /// Requests are `calls[0]`, or with two calls (the mixed workload) `calls[0]` with
    /// probability `first_share` and `calls[1]` otherwise.
    calls: Vec<Call>,
    first_share: f64,
    /// The preload's `Write` (unused over RESP), its body encoded per batch.
    preload_call: ConnectCall,
    value: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StopRule {
    After(Duration),
    Requests(u64),
}

impl Plan {
    fn new(args: &BenchArgs) -> Result<Plan> {
        let target = Target::parse(&args.addr)?;
        let protocol = match (target.resp, args.http2) {
            (false, false) => Protocol::Http1,
            (false, true) => Protocol::Http2,
            (true, false) => Protocol::Resp,
            (true, true) => bail!("--http2 is for a wasmkv node; a redis:// address speaks RESP"),
        };
        let http2 = args.http2;
        let value = Bytes::from(vec![b'x'; args.value_size]);
        if protocol == Protocol::Resp {
            return Plan::over_resp(args, target, value);
        }
        let placeholders =
            |n: u32| -> Vec<Bytes> { (0..u64::from(n)).map(|i| Bytes::from(key(i))).collect() };
        let get = || {
            let body = GetRequest {
                key: Bytes::from(key(0)),
                min_lsn: 0,
            };
            target.connect_call(http2, "Get", &body, 1)
        };
        let set = || {
            let body = SetRequest {
                key: Bytes::from(key(0)),
                value: value.clone(),
                ttl_ms: args.ttl_ms,
                min_replicas: 0,
                if_version: None,
            };
            target.connect_call(http2, "Set", &body, 1)
        };
        let (calls, first_share) = match args.workload {
            Workload::Get => (vec![get()?], 1.0),
            Workload::Set => (vec![set()?], 1.0),
            Workload::Mixed => (vec![get()?, set()?], args.read_ratio),
            Workload::MultiGet => {
                let body = MultiGetRequest {
                    keys: placeholders(args.batch),
                };
                let call = target.connect_call(http2, "MultiGet", &body, args.batch as usize)?;
                (vec![call], 1.0)
            }
            Workload::Write => {
                let body = WriteRequest {
                    mutations: placeholders(args.batch)
                        .into_iter()
                        .map(|key| Mutation {
                            op: Op::Set as i32,
                            key,
                            value: value.clone(),
                            ttl_ms: args.ttl_ms,
                        })
                        .collect(),
                    min_replicas: 0,
                };
                let call = target.connect_call(http2, "Write", &body, args.batch as usize)?;
                (vec![call], 1.0)
            }
            Workload::RestGet => (vec![target.rest_call(http2)?], 1.0),
        };
        Plan::with_calls(args, &target, protocol, value, calls, first_share)
    }

    /// The plan of `args` against Redis: each Connect call as the RESP commands that do the
    /// same (a batch as that many pipelined commands, whose replies all count).
    fn over_resp(args: &BenchArgs, target: Target, value: Bytes) -> Result<Plan> {
        let batch = args.batch as usize;
        let commands = |keys: usize, one: &dyn Fn(&mut Vec<u8>, &[u8])| -> Result<Call> {
            let mut bytes = Vec::new();
            for i in 0..keys as u64 {
                one(&mut bytes, key(i).as_bytes());
            }
            Ok(Call::Resp {
                commands: Template::new(bytes, keys)?,
                replies: keys,
            })
        };
        let get = |out: &mut Vec<u8>, key: &[u8]| resp_command(out, &[b"GET", key]);
        let set = |out: &mut Vec<u8>, key: &[u8]| resp_set(out, key, &value, args.ttl_ms);
        let (calls, first_share) = match args.workload {
            Workload::Get => (vec![commands(1, &get)?], 1.0),
            Workload::Set => (vec![commands(1, &set)?], 1.0),
            Workload::Mixed => (
                vec![commands(1, &get)?, commands(1, &set)?],
                args.read_ratio,
            ),
            Workload::MultiGet => (vec![commands(batch, &get)?], 1.0),
            Workload::Write => (vec![commands(batch, &set)?], 1.0),
            Workload::RestGet => bail!(
                "--workload rest-get is the node's HTTP route; against redis:// use --workload get"
            ),
        };
        Plan::with_calls(args, &target, Protocol::Resp, value, calls, first_share)
    }

    fn with_calls(
        args: &BenchArgs,
        target: &Target,
        protocol: Protocol,
        value: Bytes,
        calls: Vec<Call>,
        first_share: f64,
    ) -> Result<Plan> {
        let stop = match (args.requests, args.duration) {
            (Some(n), _) => StopRule::Requests(n),
            (None, Some(d)) => StopRule::After(d),
            (None, None) => StopRule::After(Duration::from_secs(10)),
        };
        ensure!(
            stop != StopRule::After(Duration::ZERO),
            "--duration must be longer than 0s"
        );
        Ok(Plan {
            connect_to: target.connect_to.clone(),
            protocol,
            keys: args.keys,
            preload: args.preload,
            warmup: args.warmup,
            stop,
            rate: args.rate,
            calls,
            first_share,
            preload_call: target.connect_target("Write")?,
            value,
        })
    }

    /// Keys per preload `Write`: `PRELOAD_BATCH`, fewer for values so large that the
    /// request would pass `PRELOAD_BYTES`, and at least one.
    fn preload_batch(&self) -> u64 {
        let per_key = (KEY_PREFIX.len() + KEY_DIGITS + self.value.len()) as u64;
        (PRELOAD_BYTES / per_key).clamp(1, PRELOAD_BATCH)
    }

    /// The keys of preload batch `index` (`index * preload_batch() ..`), or None past the
    /// key space. Preloaded keys never expire, whatever `--ttl-ms` says, so gets hit for the
    /// whole run.
    fn preload_keys(&self, index: u64) -> Option<Range<u64>> {
        let batch = self.preload_batch();
        let first = index.checked_mul(batch)?;
        if first >= self.keys {
            return None;
        }
        Some(first..first.saturating_add(batch).min(self.keys))
    }
}

/// The node's address taken apart: what to connect to, and what requests name.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` (port 80 when the address has none).
    connect_to: String,
    /// `http://host[:port]` as given, for HTTP/2's absolute URIs.
    origin: String,
    /// The authority as given, for HTTP/1.1's `Host` header.
    host: String,
    /// A path prefix (e.g. `/kv` behind a proxy) without a trailing slash; usually empty.
    prefix: String,
    /// A `redis://` address: a Redis server, spoken to over RESP.
    resp: bool,
}

impl Target {
    fn parse(addr: &str) -> Result<Target> {
        if let Some(rest) = addr.trim().strip_prefix("redis://") {
            let authority: http::uri::Authority = rest
                .trim_end_matches('/')
                .parse()
                .with_context(|| format!("{addr:?} is not redis://host[:port]"))?;
            ensure!(
                !authority.as_str().contains('@'),
                "{addr:?}: the load generator sends no credentials to Redis"
            );
            let port = authority.port_u16().unwrap_or(6379);
            return Ok(Target {
                connect_to: format!("{}:{port}", authority.host()),
                origin: format!("http://{authority}"),
                host: authority.as_str().to_owned(),
                prefix: String::new(),
                resp: true,
            });
        }
        // The client's rules for what an address may be, so both accept the same ones.
        let base = wasmkv::client::normalize_base(addr)?;
        let uri: Uri = base.parse().context("normalized address")?;
        // The load generator writes requests on bare sockets, to measure the node and not a
        // client library; it has no TLS of its own.
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "the load generator speaks plain HTTP only: bench a node's loopback listener \
             without server.tls"
        );
        let authority = uri.authority().context("normalized address has a host")?;
        let connect_to = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        Ok(Target {
            connect_to,
            origin: format!("http://{authority}"),
            host: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            resp: false,
        })
    }

    /// `KVStore/{method}` without its body.
    fn connect_target(&self, method: &str) -> Result<ConnectCall> {
        let path = format!("{}/kvstore.v1.KVStore/{method}", self.prefix);
        ConnectCall::new(&path, &format!("{}{path}", self.origin), &self.host)
    }

    /// `KVStore/{method}` of `message`, whose `keys` placeholder keys (`key(0)` ..) are
    /// replaced per request.
    fn connect_call<T: WireMessage>(
        &self,
        http2: bool,
        method: &str,
        message: &T,
        keys: usize,
    ) -> Result<Call> {
        let target = self.connect_target(method)?;
        let body = Codec::Cbor.encode(message);
        let call = if http2 {
            Call::Connect {
                body: Template::new(body, keys)?,
                target: Box::new(target),
            }
        } else {
            Call::Wire(Template::new(target.wire(&body), keys)?)
        };
        Ok(call)
    }

    /// `GET /v1/kv/{key}`, the key replaced per request.
    fn rest_call(&self, http2: bool) -> Result<Call> {
        let path = format!("{}/v1/kv/{}", self.prefix, key(0));
        if http2 {
            let uri = format!("{}{path}", self.origin);
            // Checked here once, so that rewriting digits (which keeps it valid) needs none.
            uri.parse::<Uri>()
                .with_context(|| format!("bad request URI {uri:?}"))?;
            Ok(Call::Rest {
                uri: Template::new(uri.into_bytes(), 1)?,
            })
        } else {
            let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.host);
            Ok(Call::Wire(Template::new(request.into_bytes(), 1)?))
        }
    }
}

/// What every connection task shares.
struct Shared {
    plan: Plan,
    connections: usize,
    /// Every connection waits here once set up (connected, its share of the preload sent),
    /// so the load starts on all of them at once and never while the node is being filled.
    set_up: tokio::sync::Barrier,
    /// The next preload batch to send.
    next_batch: AtomicU64,
    /// Why setting up failed (the first reason), which ends the benchmark.
    fatal: Mutex<Option<anyhow::Error>>,
    timeline: OnceLock<Timeline>,
    /// Requests answered and failed so far (warmup included), for the progress line only: a
    /// shared counter costs every request a contended atomic, so without the line it is None.
    progress: Option<Counters>,
    /// Wakes paced connections when their next request is due (`--rate` only).
    alarm: Option<Alarm>,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn new(plan: Plan, connections: usize, progress: bool, alarm: Option<Alarm>) -> Shared {
        Shared {
            plan,
            connections,
            set_up: tokio::sync::Barrier::new(connections),
            next_batch: AtomicU64::new(0),
            fatal: Mutex::new(None),
            timeline: OnceLock::new(),
            progress: progress.then(Counters::default),
            alarm,
        }
    }

    fn fail(&self, error: anyhow::Error) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        fatal.get_or_insert(error);
    }

    fn failed(&self) -> bool {
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn count(&self, ok: bool) {
        if let Some(counters) = &self.progress {
            let counter = if ok { &counters.done } else { &counters.errors };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// When the load started, when measuring starts, and when it stops.
struct Timeline {
    load_from: Instant,
    measure_from: Instant,
    stop: Stop,
}

enum Stop {
    At(Instant),
    /// Requests the measured phase may still start.
    Remaining(AtomicU64),
}

impl Timeline {
    fn starting_now(plan: &Plan) -> Timeline {
        let load_from = Instant::now();
        let measure_from = load_from + plan.warmup;
        let stop = match plan.stop {
            StopRule::After(d) => Stop::At(measure_from + d),
            StopRule::Requests(n) => Stop::Remaining(AtomicU64::new(n)),
        };
        Timeline {
            load_from,
            measure_from,
            stop,
        }
    }

    /// Whether a request starting at `now`, in the measured phase, may go.
    fn admit(&self, now: Instant) -> bool {
        match &self.stop {
            Stop::At(end) => now < *end,
            Stop::Remaining(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// When requests still unanswered are given up (timed runs only).
    fn give_up_at(&self) -> Option<Instant> {
        match self.stop {
            Stop::At(end) => Some(end + STRAGGLER_GRACE),
            Stop::Remaining(_) => None,
        }
    }
}

/// Run every connection to the end on `threads` threads; their recorders, or why setting up
/// failed.
fn run_threads(shared: &Arc<Shared>, threads: usize) -> Result<Vec<Recorder>> {
    let threads = threads.clamp(1, shared.connections);
    // Built before any thread starts: a thread that could not start its runtime would leave
    // the others waiting at the barrier for its connections forever.
    let runtimes = (0..threads)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting an async runtime")
        })
        .collect::<Result<Vec<_>>>()?;
    let workers: Vec<_> = runtimes
        .into_iter()
        .enumerate()
        .map(|(thread, runtime)| {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(format!("bench-{thread}"))
                .spawn(move || runtime.block_on(run_connections(shared, thread, threads)))
                .context("starting a client thread")
        })
        .collect::<Result<_>>()?;
    let mut recorders = Vec::with_capacity(shared.connections);
    for worker in workers {
        let done = worker
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))?;
        recorders.extend(done?);
    }
    match shared
        .fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        Some(error) => Err(error),
        None => Ok(recorders),
    }
}

/// Run connections `first`, `first + step`, ... to the end on the current runtime.
async fn run_connections(shared: Arc<Shared>, first: usize, step: usize) -> Result<Vec<Recorder>> {
    let tasks: Vec<_> = (first..shared.connections)
        .step_by(step)
        .map(|index| tokio::spawn(connection(index as u64, Arc::clone(&shared))))
        .collect();
    let mut recorders = Vec::with_capacity(tasks.len());
    for task in tasks {
        recorders.push(task.await.context("a connection task panicked")?);
    }
    Ok(recorders)
}

/// One connection from start to end: connect, send its share of the preload, wait for the
/// others, then requests until the stop rule says no, reconnecting after a lost connection.
async fn connection(index: u64, shared: Arc<Shared>) -> Recorder {
    let plan = &shared.plan;
    let mut recorder = Recorder::new();
    let mut link = match Link::open(&plan.connect_to, plan.protocol).await {
        Ok(link) => Some(link),
        Err(e) => {
            shared.fail(anyhow!("{e}"));
            None
        }
    };
    if plan.preload
        && let Some(open) = &mut link
        && let Err(e) = preload(open, &shared).await
    {
        shared.fail(anyhow!("preloading the key space: {e}"));
        link = None;
    }
    // Every task reaches the barrier, whatever happened, so that none waits forever.
    shared.set_up.wait().await;
    let Some(mut link) = link.filter(|_| !shared.failed()) else {
        return recorder;
    };
    let timeline = shared.timeline.get_or_init(|| Timeline::starting_now(plan));
    // Seeded per connection: runs are repeatable, and connections draw different keys.
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000_0000 + index);
    let mut caller = Caller::new(&plan.calls);
    // Kept across reconnections: a lost connection does not reset its share of the rate.
    let mut pace = plan
        .rate
        .map(|rate| Pace::new(rate, shared.connections, index, timeline.load_from));
    loop {
        let session = measure(
            &mut link,
            &shared,
            timeline,
            &mut recorder,
            &mut rng,
            &mut caller,
            &mut pace,
        );
        let ended = match timeline.give_up_at() {
            None => Some(session.await),
            Some(deadline) => tokio::select! {
                biased;
                ended = session => Some(ended),
                () = tokio::time::sleep_until(deadline.into()) => None,
            },
        };
        match ended {
            Some(Ok(())) => return recorder,
            Some(Err(())) => {}
            None => {
                let error = ConnectError::new(
                    Code::DeadlineExceeded,
                    format!(
                        "{}: no answer {} after the end of the run",
                        plan.connect_to,
                        humantime::format_duration(STRAGGLER_GRACE)
                    ),
                );
                recorder.error(error, Instant::now());
                shared.count(false);
                return recorder;
            }
        }
        match Link::open(&plan.connect_to, plan.protocol).await {
            Ok(new) => link = new,
            Err(e) => {
                // The node is gone: this connection stops, its failure counted even in the
                // warmup, so that a run with fewer connections than asked never looks clean.
                recorder.error(e, Instant::now());
                shared.count(false);
                return recorder;
            }
        }
    }
}

/// Send preload batches until none is left, taking turns with the other connections.
async fn preload(link: &mut Link, shared: &Shared) -> Result<(), ConnectError> {
    loop {
        let index = shared.next_batch.fetch_add(1, Ordering::Relaxed);
        let plan = &shared.plan;
        let Some(keys) = plan.preload_keys(index) else {
            return Ok(());
        };
        if let Some(error) = link.set_all(&plan.preload_call, keys, &plan.value).await? {
            return Err(error);
        }
    }
}

/// The loop: (wait until the next request is due, when paced,) send, wait for the whole
/// answer, record, again. Ok when the stop rule ended it; Err when the link can serve no more
/// (a failure already counted, or the node closing the connection).
async fn measure(
    link: &mut Link,
    shared: &Shared,
    timeline: &Timeline,
    recorder: &mut Recorder,
    rng: &mut fastrand::Rng,
    caller: &mut Caller<'_>,
    pace: &mut Option<Pace>,
) -> Result<(), ()> {
    let plan = &shared.plan;
    loop {
        if !link.reusable() {
            return Err(());
        }
        let now = Instant::now();
        let due = pace.as_mut().map_or(now, Pace::next_due);
        // Admitted (or not) by when it is due, so that a paced connection never sleeps past
        // the end of the run.
        let measured = due >= timeline.measure_from;
        if measured && !timeline.admit(due) {
            return Ok(());
        }
        // Behind schedule (or not paced): latency counts from when the request was due.
        let started = match &shared.alarm {
            Some(alarm) if due > now => {
                alarm.sleep_until(due).await;
                Instant::now()
            }
            _ => due,
        };
        let which = usize::from(plan.calls.len() > 1 && rng.f64() >= plan.first_share);
        let want_error = recorder.first_error.is_none();
        let keys = plan.keys;
        let outcome = caller
            .call(link, which, || rng.u64(0..keys), want_error)
            .await;
        let done = Instant::now();
        shared.count(matches!(outcome, Ok(None)));
        match outcome {
            Ok(None) if measured => recorder.success(done - started, done),
            Ok(Some(error)) if measured => recorder.error(error, done),
            Ok(_) => {}
            Err(error) => {
                if measured {
                    recorder.error(error, done);
                }
                return Err(());
            }
        }
    }
}

/// The schedule of one connection under `--rate`: its request `k` is due
/// `(k * connections + index) / rate` seconds after the load started, so that all the
/// connections together send `rate` requests per second, evenly spread. Computed from the
/// start each time (in integer nanoseconds), so no rounding error adds up over a long run.
struct Pace {
    from: Instant,
    rate: u64,
    connections: u64,
    index: u64,
    /// Requests of this connection scheduled so far.
    scheduled: u64,
}

impl Pace {
    fn new(rate: u64, connections: usize, index: u64, from: Instant) -> Pace {
        Pace {
            from,
            rate,
            connections: connections as u64,
            index,
            scheduled: 0,
        }
    }

    /// How long after the start request `k` of this connection is due.
    fn offset(&self, k: u64) -> Duration {
        let slot = u128::from(k) * u128::from(self.connections) + u128::from(self.index);
        let nanos = slot * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// When this connection's next request is due; each call moves its schedule one on.
    fn next_due(&mut self) -> Instant {
        let due = self.from + self.offset(self.scheduled);
        self.scheduled += 1;
        due
    }
}

/// The progress line: rewritten on stderr once a second from a thread of its own, so the
/// connections never wait on a terminal.
struct Ticker {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn start(shared: Arc<Shared>) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut width = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(1))
            {
                let line = progress_line(&shared, Instant::now());
                // Padded to the last line's width, so that no tail of it stays on screen.
                eprint!("\r{line:<width$}");
                width = line.chars().count();
            }
            if width > 0 {
                eprintln!();
            }
        });
        Ticker { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn progress_line(shared: &Shared, now: Instant) -> String {
    let Some(timeline) = shared.timeline.get() else {
        let batches = shared.next_batch.load(Ordering::Relaxed);
        let sent = batches
            .saturating_mul(shared.plan.preload_batch())
            .min(shared.plan.keys);
        return if shared.plan.preload {
            format!(
                "preloading: {} of {} keys",
                thousands(sent),
                thousands(shared.plan.keys)
            )
        } else {
            "connecting".to_owned()
        };
    };
    let counters = shared.progress.as_ref();
    let done = counters.map_or(0, |c| c.done.load(Ordering::Relaxed));
    let errors = counters.map_or(0, |c| c.errors.load(Ordering::Relaxed));
    let elapsed = now
        .saturating_duration_since(timeline.load_from)
        .as_secs_f64();
    let phase = if now < timeline.measure_from {
        "warmup"
    } else {
        "running"
    };
    let rate = if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    format!(
        "{phase} {elapsed:.0}s: {} requests/s, {} errors",
        thousands(rate.round() as u64),
        thousands(errors)
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use wasmkv::api::proto::{GetRequest, MultiGetRequest, SetRequest, WriteRequest};

    use super::link::{resp_sets, write_of};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|cli| cli.bench)
    }

    fn plan(args: &[&str]) -> Plan {
        Plan::new(&parse(args).unwrap()).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.connections, 50);
        assert!(!args.http2);
        assert_eq!(args.workload, Workload::Get);
        assert_eq!(args.read_ratio, 0.9);
        assert_eq!(args.batch, 16);
        assert_eq!(args.keys, 100_000);
        assert_eq!(args.value_size, 64);
        assert_eq!(args.ttl_ms, 0);
        assert_eq!(args.warmup, Duration::from_secs(1));
        assert!(!args.preload && !args.json && !args.progress);
        assert_eq!(args.rate, None);
        let plan = Plan::new(&args).unwrap();
        assert_eq!(plan.stop, StopRule::After(Duration::from_secs(10)));
        assert_eq!(plan.rate, None);
        if std::env::var_os("WASMKV_ADDR").is_none() {
            assert_eq!(plan.connect_to, "127.0.0.1:8080");
        }
    }

    #[test]
    fn every_workload_parses_by_its_name() {
        for (name, workload) in [
            ("get", Workload::Get),
            ("set", Workload::Set),
            ("mixed", Workload::Mixed),
            ("multiget", Workload::MultiGet),
            ("write", Workload::Write),
            ("rest-get", Workload::RestGet),
        ] {
            let args = parse(&["--workload", name]).unwrap();
            assert_eq!(args.workload, workload);
            assert_eq!(workload.name(), name);
        }
        assert!(parse(&["--workload", "scan"]).is_err());
    }

    #[test]
    fn stop_rules_and_their_conflicts() {
        assert_eq!(plan(&["--requests", "200"]).stop, StopRule::Requests(200));
        assert_eq!(
            plan(&["--duration", "1m 30s"]).stop,
            StopRule::After(Duration::from_secs(90))
        );
        assert!(parse(&["--duration", "1s", "--requests", "5"]).is_err());
        assert!(parse(&["--requests", "0"]).is_err());
        assert!(Plan::new(&parse(&["--duration", "0s"]).unwrap()).is_err());
        assert_eq!(parse(&["--warmup", "0s"]).unwrap().warmup, Duration::ZERO);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            &["--connections", "0"][..],
            &["--batch", "0"],
            &["--keys", "0"],
            &["--keys", "1000000000001"],
            &["--read-ratio", "1.5"],
            &["--read-ratio", "-0.1"],
            &["--read-ratio", "most"],
            &["--threads", "0"],
            &["--rate", "0"],
            &["--rate", "-5"],
            &["--rate", "1.5"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--read-ratio", "0"]).unwrap().read_ratio, 0.0);
        assert_eq!(parse(&["--read-ratio", "1"]).unwrap().read_ratio, 1.0);
        assert_eq!(parse(&["--keys", "1000000000000"]).unwrap().keys, MAX_KEYS);
        assert_eq!(plan(&["--rate", "1"]).rate, Some(1));
        assert_eq!(plan(&["--rate=250000"]).rate, Some(250_000));
    }

    #[test]
    fn the_pace_spreads_the_rate_evenly_over_the_connections() {
        let start = Instant::now();
        // 1,000 requests/s over 4 connections: each sends every 4 ms, the 4 of them 1 ms
        // apart, so that together they send one request every millisecond.
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|index| {
                let mut pace = Pace::new(1_000, 4, index, start);
                (0..250).map(move |_| pace.next_due() - start)
            })
            .collect();
        all.sort();
        let want: Vec<Duration> = (0..1_000).map(Duration::from_millis).collect();
        assert_eq!(all, want);
        let mut third = Pace::new(1_000, 4, 2, start);
        let due: Vec<Duration> = (0..3).map(|_| third.next_due() - start).collect();
        assert_eq!(due, [2, 6, 10].map(Duration::from_millis));
    }

    #[test]
    fn the_pace_does_not_drift() {
        // 7 requests/s over 3 connections: 3/7 s per request per connection, which no
        // Duration holds exactly; the millionth request is still due at 3,000,000/7 s.
        let pace = Pace::new(7, 3, 0, Instant::now());
        assert_eq!(
            pace.offset(1_000_000),
            Duration::from_nanos(3_000_000 * 1_000_000_000 / 7)
        );
        // Fewer requests per second than connections: each sends less than once a second.
        let slow = Pace::new(1, 50, 49, Instant::now());
        assert_eq!(slow.offset(0), Duration::from_secs(49));
        assert_eq!(slow.offset(1), Duration::from_secs(99));
        // A rate above a billion per second rounds down to the nanosecond, never below 0.
        let fast = Pace::new(4_000_000_000, 1, 0, Instant::now());
        assert_eq!(fast.offset(3), Duration::ZERO);
        assert_eq!(fast.offset(4), Duration::from_nanos(1));
    }

    #[test]
    fn keys_are_sixteen_bytes() {
        assert_eq!(key(0), "key:000000000000");
        assert_eq!(key(42), "key:000000000042");
        assert_eq!(key(MAX_KEYS - 1), "key:999999999999");
        assert_eq!(key(MAX_KEYS - 1).len(), 16);
        let mut digits = *b"000000000000";
        link::put_digits(&mut digits, 99_123);
        assert_eq!(&digits, b"000000099123");
    }

    #[test]
    fn addresses_are_taken_apart() {
        let target = |addr: &str| Target::parse(addr).unwrap();
        assert_eq!(
            target("127.0.0.1:9000"),
            Target {
                connect_to: "127.0.0.1:9000".into(),
                origin: "http://127.0.0.1:9000".into(),
                host: "127.0.0.1:9000".into(),
                prefix: String::new(),
                resp: false,
            }
        );
        let proxied = target(" http://node/kv/ ");
        assert_eq!(
            (proxied.connect_to.as_str(), proxied.host.as_str()),
            ("node:80", "node")
        );
        assert_eq!(proxied.prefix, "/kv");
        assert_eq!(target("http://[::1]:8080").connect_to, "[::1]:8080");
        for bad in ["https://x:1", "http://", "http://x:1/?a=b", "x y"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        // A Redis server: its default port, and nothing a RESP client could not send.
        let redis = target("redis://127.0.0.1:7000");
        assert!(redis.resp);
        assert_eq!(redis.connect_to, "127.0.0.1:7000");
        assert_eq!(target("redis://cache/").connect_to, "cache:6379");
        for bad in ["redis://", "redis://x:1/0", "redis://user:pw@x:1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    /// The request `call` sends with keys `keys`, split into head and body (HTTP/1.1), or
    /// the body (HTTP/2 Connect), or the URI (HTTP/2 REST).
    fn filled(call: &Call, keys: &[u64]) -> (String, Vec<u8>) {
        let mut next = keys.iter().copied();
        let mut next_key = || next.next().expect("enough keys");
        let fill = |template: &Template, next_key: &mut dyn FnMut() -> u64| {
            let mut bytes = template.bytes.clone();
            template.fill_in_place(&mut bytes, next_key);
            bytes
        };
        match call {
            Call::Wire(template) => {
                let bytes = fill(template, &mut next_key);
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut request = httparse::Request::new(&mut headers);
                let httparse::Status::Complete(len) = request.parse(&bytes).unwrap() else {
                    panic!("an incomplete request");
                };
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                assert_eq!(bytes.len(), len + length, "Content-Length is the body's");
                let head = String::from_utf8(bytes[..len].to_vec()).unwrap();
                (head, bytes[len..].to_vec())
            }
            Call::Connect { body, .. } => (String::new(), fill(body, &mut next_key)),
            Call::Rest { uri } => (String::from_utf8(fill(uri, &mut next_key)).unwrap(), vec![]),
            Call::Resp { commands, .. } => (
                String::from_utf8(fill(commands, &mut next_key)).unwrap(),
                vec![],
            ),
        }
    }

    fn decode<T: WireMessage>(body: &[u8]) -> T {
        Codec::Cbor.decode(body).unwrap()
    }

    #[test]
    fn requests_carry_the_drawn_keys_in_both_protocols() {
        for http2 in [false, true] {
            let flag = if http2 { "--http2" } else { "--connections=1" };
            let get = plan(&[flag, "--addr", "127.0.0.1:7000"]);
            let (head, body) = filled(&get.calls[0], &[77]);
            if !http2 {
                assert!(
                    head.starts_with("POST /kvstore.v1.KVStore/Get HTTP/1.1\r\n"),
                    "{head}"
                );
                assert!(head.contains("host: 127.0.0.1:7000\r\n"), "{head}");
                assert!(
                    head.contains("content-type: application/cbor\r\n"),
                    "{head}"
                );
                assert!(head.contains("connect-protocol-version: 1\r\n"), "{head}");
            }
            let request: GetRequest = decode(&body);
            assert_eq!(request.key, key(77).as_bytes());

            let set = plan(&[flag, "--workload=set", "--value-size=100", "--ttl-ms=5000"]);
            let request: SetRequest = decode(&filled(&set.calls[0], &[5]).1);
            assert_eq!(request.key, key(5).as_bytes());
            assert_eq!((request.value.len(), request.ttl_ms), (100, 5000));

            let mixed = plan(&[flag, "--workload=mixed", "--read-ratio=0.25"]);
            assert_eq!((mixed.calls.len(), mixed.first_share), (2, 0.25));
            let _: GetRequest = decode(&filled(&mixed.calls[0], &[1]).1);
            let _: SetRequest = decode(&filled(&mixed.calls[1], &[1]).1);

            let keys: Vec<u64> = (0..16).map(|i| 1000 + i * 7).collect();
            let multiget = plan(&[flag, "--workload=multiget"]);
            let request: MultiGetRequest = decode(&filled(&multiget.calls[0], &keys).1);
            let want: Vec<String> = keys.iter().map(|&k| key(k)).collect();
            let got: Vec<String> = request
                .keys
                .iter()
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
                .collect();
            assert_eq!(got, want);

            let write = plan(&[flag, "--workload=write", "--batch=3", "--ttl-ms=9"]);
            let request: WriteRequest = decode(&filled(&write.calls[0], &[3, 2, 1]).1);
            let got: Vec<(String, usize, u64, i32)> = request
                .mutations
                .iter()
                .map(|m| {
                    let k = String::from_utf8(m.key.to_vec()).unwrap();
                    (k, m.value.len(), m.ttl_ms, m.op)
                })
                .collect();
            let set_op = Op::Set as i32;
            assert_eq!(
                got,
                [
                    (key(3), 64, 9, set_op),
                    (key(2), 64, 9, set_op),
                    (key(1), 64, 9, set_op)
                ]
            );

            let rest = plan(&[flag, "--workload=rest-get", "--addr=http://h:1/p"]);
            let (text, body) = filled(&rest.calls[0], &[123_456]);
            assert!(body.is_empty());
            if http2 {
                assert_eq!(text, "http://h:1/p/v1/kv/key:000000123456");
            } else {
                assert_eq!(
                    text,
                    "GET /p/v1/kv/key:000000123456 HTTP/1.1\r\nhost: h:1\r\n\r\n"
                );
            }
        }
    }

    #[test]
    fn over_resp_each_workload_is_the_commands_that_do_the_same() {
        let resp = |workload: &str| {
            plan(&[
                "--addr=redis://h:1",
                "--value-size=2",
                "--batch=2",
                "--ttl-ms=500",
                &format!("--workload={workload}"),
            ])
        };
        let text = |plan: &Plan, which: usize, keys: &[u64]| {
            let Call::Resp { replies, .. } = &plan.calls[which] else {
                panic!("not a RESP call");
            };
            (filled(&plan.calls[which], keys).0, *replies)
        };
        let get = |k| format!("*2\r\n$3\r\nGET\r\n$16\r\n{}\r\n", key(k));
        let set = |k| {
            format!(
                "*5\r\n$3\r\nSET\r\n$16\r\n{}\r\n$2\r\nxx\r\n$2\r\nPX\r\n$3\r\n500\r\n",
                key(k)
            )
        };
        let plan = resp("get");
        assert_eq!(plan.protocol, Protocol::Resp);
        assert_eq!(text(&plan, 0, &[7]), (get(7), 1));
        assert_eq!(text(&resp("set"), 0, &[8]), (set(8), 1));
        let mixed = resp("mixed");
        assert_eq!(text(&mixed, 0, &[1]), (get(1), 1));
        assert_eq!(text(&mixed, 1, &[2]), (set(2), 1));
        // A batch is that many commands in one write, and as many replies.
        assert_eq!(text(&resp("multiget"), 0, &[3, 4]), (get(3) + &get(4), 2));
        assert_eq!(text(&resp("write"), 0, &[5, 6]), (set(5) + &set(6), 2));
        // What RESP cannot say is refused before anything is sent.
        let refused = |args: &[&str]| Plan::new(&parse(args).unwrap()).err().unwrap().to_string();
        assert!(refused(&["--addr=redis://h:1", "--workload=rest-get"]).contains("--workload get"));
        assert!(refused(&["--addr=redis://h:1", "--http2"]).contains("RESP"));
    }

    #[test]
    fn the_batch_is_ignored_by_single_key_workloads() {
        let args = parse(&["--workload=get", "--batch=8"]).unwrap();
        assert!(!args.workload.batched());
        let request: GetRequest = decode(&filled(&Plan::new(&args).unwrap().calls[0], &[1]).1);
        assert_eq!(request.key, key(1).as_bytes());
    }

    #[test]
    fn preload_batches_of_large_values_stay_within_a_mebibyte() {
        let batch = |size: &str| plan(&["--keys=1000", &format!("--value-size={size}")]);
        assert_eq!(batch("64").preload_batch(), PRELOAD_BATCH);
        // 64 KiB values: 15 per request (16-byte keys); 1 MiB and larger: one at a time.
        let large = batch("65536");
        assert_eq!(large.preload_batch(), 15);
        assert_eq!(large.preload_keys(1), Some(15..30));
        assert_eq!(batch("1048576").preload_batch(), 1);
        assert_eq!(batch("8388608").preload_batch(), 1);
    }

    #[test]
    fn preload_batches_cover_the_key_space_once() {
        let plan = plan(&["--keys=250", "--ttl-ms=1000", "--value-size=3"]);
        let mut seen = Vec::new();
        let mut index = 0;
        while let Some(keys) = plan.preload_keys(index) {
            let request: WriteRequest = decode(&Codec::Cbor.encode(&write_of(keys, &plan.value)));
            assert!(request.mutations.len() <= PRELOAD_BATCH as usize);
            for m in request.mutations {
                assert_eq!((m.op, m.ttl_ms, m.value.len()), (Op::Set as i32, 0, 3));
                seen.push(String::from_utf8(m.key.to_vec()).unwrap());
            }
            index += 1;
        }
        assert_eq!(index, 3);
        assert_eq!(seen, (0..250).map(key).collect::<Vec<_>>());
        assert!(plan.preload_keys(u64::MAX).is_none());
        // Over RESP, the same keys as pipelined SETs without expiry.
        let sets = String::from_utf8(resp_sets(2..4, &plan.value)).unwrap();
        assert_eq!(
            sets,
            format!(
                "*3\r\n$3\r\nSET\r\n$16\r\n{}\r\n$3\r\nxxx\r\n\
                 *3\r\n$3\r\nSET\r\n$16\r\n{}\r\n$3\r\nxxx\r\n",
                key(2),
                key(3)
            )
        );
    }

    #[test]
    fn a_request_count_admits_exactly_that_many() {
        let plan = plan(&["--requests=3", "--warmup=0s"]);
        let timeline = Timeline::starting_now(&plan);
        let now = Instant::now();
        let admitted = (0..10).filter(|_| timeline.admit(now)).count();
        assert_eq!(admitted, 3);
        assert_eq!(timeline.give_up_at(), None);
        let timed = Timeline::starting_now(&self::plan(&["--duration=2s", "--warmup=1s"]));
        assert_eq!(timed.measure_from - timed.load_from, Duration::from_secs(1));
        assert!(timed.admit(timed.measure_from + Duration::from_millis(1999)));
        assert!(!timed.admit(timed.measure_from + Duration::from_secs(2)));
        assert_eq!(
            timed.give_up_at(),
            Some(timed.measure_from + Duration::from_secs(2) + STRAGGLER_GRACE)
        );
    }

    #[test]
    fn the_progress_line_names_the_phase() {
        let shared = Shared::new(plan(&["--preload", "--keys=1000"]), 1, true, None);
        shared.next_batch.store(3, Ordering::Relaxed);
        assert_eq!(
            progress_line(&shared, Instant::now()),
            "preloading: 300 of 1,000 keys"
        );
        let timeline = shared
            .timeline
            .get_or_init(|| Timeline::starting_now(&shared.plan));
        let counters = shared.progress.as_ref().unwrap();
        counters.done.store(5000, Ordering::Relaxed);
        counters.errors.store(2, Ordering::Relaxed);
        let line = progress_line(&shared, timeline.load_from + Duration::from_secs(2));
        assert_eq!(line, "running 2s: 2,500 requests/s, 2 errors");
        let line = progress_line(&shared, timeline.load_from + Duration::from_millis(500));
        assert!(line.starts_with("warmup 0s: "), "{line}");
    }
}
