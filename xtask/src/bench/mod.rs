//! `cargo xtask bench [--quick]`: wasmkv against Redis on the same machine, in the same run.
//!
//! Installs what the machine lacks (`setup`), builds wasmkv, its benches and the plugins in
//! release (not counted in the time bound), runs the storage bench
//! (`host/benches/storage.rs`, which owns its section of BENCHMARKS.md), checks the load
//! generator against wrk (`wrk`), then runs every scenario of issue 4 (`scenarios`)
//! against both servers (`wasmkv`, `redis`, started through `cmd`) and the replication
//! figures of issue 5 on wasmkv alone (`replication`), and rewrites BENCHMARKS.md around the
//! storage section (`report`). `--quick` is a smoke run: one short round, smaller data sets,
//! tables printed and nothing written.

mod cmd;
mod plugins;
mod redis;
mod replication;
mod report;
mod scenarios;
mod setup;
mod wasmkv;
mod wrk;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{cargo, root, run, target_dir};
use cmd::Cmd;
/// The date and machine lines of a report, shared with the fuzzing figures.
pub(crate) use setup::{date, machine};

/// The temp dirs of this harness, under the target dir.
const TEMP_PREFIX: &str = "wasmkv-vs-redis-";

/// How long and how big: the full run must stay under 15 minutes on 2 cores, `--quick`
/// under 2.
pub struct Plan {
    pub rounds: usize,
    /// Each measured run (redis-benchmark's `-n` is sized to last about this long).
    pub duration: Duration,
    /// Unmeasured load before each measured run, on both sides.
    pub warmup: Duration,
    /// The key space of scenarios 1, 2, 3 and 6.
    pub keys: u64,
    /// The data set of scenarios 4 and 5.
    pub big_keys: u64,
    /// Replication: the SETs a stopped replica catches up on, and the keys of a full resync.
    pub replication_keys: u64,
    /// When the run began, for the progress lines.
    pub started: Instant,
    /// Parent of every server's temp dir: under the target dir rather than /tmp, which may be
    /// a tmpfs where fsync costs nothing and the durable scenarios would mean nothing.
    tmp: PathBuf,
}

impl Plan {
    fn new(quick: bool, started: Instant) -> Result<Plan> {
        let tmp = target_dir().join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        // A run that was killed (rather than failed) could not remove its temp dirs, and a
        // million keys on disk add up: clear them before this run makes its own.
        for entry in std::fs::read_dir(&tmp)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("remove {}", entry.path().display()))?;
            }
        }
        Ok(if quick {
            Plan {
                rounds: 1,
                duration: Duration::from_secs(1),
                warmup: Duration::from_millis(300),
                keys: 100_000,
                big_keys: 200_000,
                replication_keys: 100_000,
                started,
                tmp,
            }
        } else {
            // 28 timed runs a round, 4 s each after 0.5 s of warm-up: a round takes about 2.4
            // minutes here, so 5 rounds stay within the 15 minutes. Five samples rather than
            // three: runs on this shared machine spread by 15-20%, and a median of five is
            // less often an outlier.
            Plan {
                rounds: 5,
                duration: Duration::from_secs(4),
                warmup: Duration::from_millis(500),
                keys: 100_000,
                big_keys: 1_000_000,
                replication_keys: 1_000_000,
                started,
                tmp,
            }
        })
    }

    /// A fresh directory for one round's servers, removed when dropped.
    pub fn tempdir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(&self.tmp)
            .context("create a temp dir")
    }
}

/// The commands a table's figures came from, in first-run order, each once.
#[derive(Default)]
pub struct Commands(Vec<String>);

impl Commands {
    pub fn add(&mut self, cmd: &Cmd) {
        self.push(cmd.shown());
    }

    /// `cmd` shown after `prefix` (what feeds its stdin, for instance).
    pub fn add_as(&mut self, cmd: &Cmd, prefix: &str) {
        self.push(format!("{prefix}{}", cmd.shown()));
    }

    pub fn push(&mut self, line: String) {
        if !self.0.contains(&line) {
            self.0.push(line);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

/// Key `i` as both servers store it: `key:%012d`, 16 bytes (redis-benchmark's `-r` format).
pub fn key(i: u64) -> String {
    format!("key:{i:012}")
}

/// A latency for people: `850 µs`, `1.25 ms`.
pub fn micros(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

pub fn bench(quick: bool) -> Result<()> {
    let building = Instant::now();
    setup::install_tools()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "wasmkv", "--bin", "wasmkv"]);
    run("cargo build --release -p wasmkv --bin wasmkv", build)?;
    let mut build_benches = cargo();
    build_benches.args([
        "bench", "--no-run", "-p", "wasmkv", "--bench", "storage", "--bench", "plugins",
    ]);
    run(
        "cargo bench --no-run (storage and plugin benches)",
        build_benches,
    )?;
    let plugin_dir = crate::plugins::default_out_dir();
    crate::plugins::build(&plugin_dir)?;
    // The time bound (15 minutes, `--quick` 2) is on measuring: building takes what the
    // machine's cache leaves to do, from seconds to many minutes on a fresh one.
    let built_in = building.elapsed();
    let started = Instant::now();
    let cpu_at_start = setup::CpuTime::now();
    let wasmkv = wasmkv::Wasmkv {
        bin: target_dir().join("release/wasmkv"),
        config: root().join("config/primary.yaml"),
    };
    let versions = setup::Versions::probe(&wasmkv.bin)?;
    eprintln!(
        "==> {} (commit {}); {}; {}",
        versions.wasmkv, versions.commit, versions.redis, versions.wrk
    );

    let benchmarks = root().join("BENCHMARKS.md");
    let mut storage = cargo();
    storage.args(["bench", "-p", "wasmkv", "--bench", "storage", "--"]);
    if quick {
        storage.arg("--quick");
    } else {
        storage.arg("--write").arg(&benchmarks);
    }
    run("storage and WAL benchmarks", storage)?;

    let mut plugin_bench = cargo();
    plugin_bench.args([
        "bench",
        "-p",
        "wasmkv",
        "--bench",
        "plugins",
        "--",
        "--plugins",
    ]);
    plugin_bench.arg(&plugin_dir);
    if quick {
        plugin_bench.arg("--quick");
    } else {
        plugin_bench.arg("--write").arg(&benchmarks);
    }
    run("plugin benchmarks", plugin_bench)?;

    let plan = Plan::new(quick, started)?;
    let tables = scenarios::run_all(&plan, &wasmkv)?;
    let replication = replication::run_all(&plan, &wasmkv)?;
    let plugin_table = plugins::throughput(&plan, &wasmkv, &plugin_dir)?;
    let render = |tables: &[report::Table]| -> String {
        tables
            .iter()
            .map(|t| t.render(plan.rounds))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rendered = format!(
        "{}\n{}\n{}\n{}",
        render(&tables),
        replication::intro(plan.rounds),
        render(&replication),
        render(std::slice::from_ref(&plugin_table))
    );
    let elapsed = started.elapsed();
    let steal = cpu_at_start
        .zip(setup::CpuTime::now())
        .and_then(|(at_start, at_end)| at_end.steal_since(at_start));
    let (met, set) = report::target_count(&tables);
    println!("\n{rendered}\nTargets met: {met} of {set}.");
    if let Some(percent) = steal {
        println!("Steal while measuring: {percent:.1}% of the machine's CPU time.");
    }
    if quick {
        eprintln!(
            "==> quick run done in {:.0} s after {:.0} s of building; BENCHMARKS.md not \
             rewritten",
            elapsed.as_secs_f64(),
            built_in.as_secs_f64()
        );
        return Ok(());
    }
    let head = header(&plan, &versions, met, set, elapsed, built_in, steal);
    let existing = std::fs::read_to_string(&benchmarks).context("read BENCHMARKS.md")?;
    let updated = report::compose(&existing, &head, &rendered)?;
    std::fs::write(&benchmarks, updated).context("write BENCHMARKS.md")?;
    eprintln!(
        "==> done in {:.0} s after {:.0} s of building; BENCHMARKS.md rewritten",
        elapsed.as_secs_f64(),
        built_in.as_secs_f64()
    );
    Ok(())
}

fn header(
    plan: &Plan,
    v: &setup::Versions,
    met: usize,
    set: usize,
    elapsed: Duration,
    built_in: Duration,
    steal: Option<f64>,
) -> String {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let steal = steal.map_or(String::new(), |percent| {
        format!(
            "- While it measured, the hypervisor ran other guests for {percent:.1}% of this \
             machine's CPU time (steal, from `/proc/stat`). Steal comes in bursts that slow \
             some rounds and not others, so the spreads (±N%) grow with it.\n"
        )
    });
    format!(
        "# Benchmarks\n\n\
         Every figure here is written by `cargo xtask bench` (`xtask/src/bench/`; the storage \
         section by `host/benches/storage.rs`). Only the \"Where the time goes\" section is \
         written by hand; the run keeps it.\n\n\
         ## wasmkv vs Redis\n\n\
         - Measured {date} on {machine}, by `cargo xtask bench` in {total:.1} minutes \
         (after {built} of building).\n\
         {steal}\
         - {wasmkv} (commit {commit}), release build, `config/primary.yaml` with the \
         `WASMKV_*` overrides each scenario names.\n\
         - {redis}, with `redis-benchmark` and `redis-cli` of the same release \
         (Debian packages); wrk: {wrk}.\n\
         - Method: each round starts each server fresh on 127.0.0.1 with its files in a fresh \
         directory under `target/tmp` (a real disk, not tmpfs) and runs wasmkv, then Redis; \
         {rounds} rounds (A B A B ...), and each figure is the median of its {rounds} samples. \
         A timed run lasts {duration} after {warmup} of warm-up on both sides \
         (redis-benchmark counts requests, so a short probe and a {warmup} warm-up size its \
         `-n $N` to last about {duration}). Server and load generator share the machine's \
         cores on both sides, with one thread each: Redis serves from one event-loop thread \
         and redis-benchmark (like wrk `-t 1`) drives it from one, so every wasmkv node runs \
         with `server.threads: 1` (`WASMKV_SERVER__THREADS=1`) and every `wasmkv bench` with \
         `--threads 1`. (Both default to a thread per core; on 2 cores that is four busy \
         threads on two cores, and the scheduler's time slices then show in every p99.)\n\
         - Ratio: wasmkv/Redis for throughput, Redis/wasmkv for latency, memory and time, so \
         ≥ 1.00 always means wasmkv wins. \"target\" marks the targets of issue 4. A figure \
         whose rounds spread 10% or more around its median shows that spread (±N%).\n\
         - **Targets met: {met} of {set}.**\n\
         - Commands are shown as run, with `$PORT`, `$URL` (`http://127.0.0.1:$PORT`), `$DIR` \
         (the fresh directory) and `$N` standing for what changes between runs; \
         `redis-cli ...` lines are sent by the harness itself over RESP.\n",
        date = setup::date(),
        machine = setup::machine(),
        total = elapsed.as_secs_f64() / 60.0,
        built = if built_in < Duration::from_secs(60) {
            format!("{:.0} s", built_in.as_secs_f64())
        } else {
            format!("{:.1} minutes", built_in.as_secs_f64() / 60.0)
        },
        wasmkv = v.wasmkv,
        commit = v.commit,
        redis = v.redis,
        wrk = v.wrk,
        rounds = plan.rounds,
        duration = secs(plan.duration),
        warmup = secs(plan.warmup),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_16_bytes_like_redis_benchmark() {
        assert_eq!(key(0), "key:000000000000");
        assert_eq!(key(99_999), "key:000000099999");
        assert_eq!(key(123).len(), 16);
    }

    #[test]
    fn latencies_for_people() {
        assert_eq!(micros(850.4), "850 µs");
        assert_eq!(micros(1250.0), "1.25 ms");
    }
}
