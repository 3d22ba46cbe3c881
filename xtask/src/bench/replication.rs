//! The replication figures of issue 5, on wasmkv alone: how far two replicas lag behind a
//! primary taking SETs at 50% and 90% of its maximum rate, how fast a stopped replica catches
//! up when it comes back (partial resync), and how long an empty replica takes to get a copy
//! of a loaded primary (full resync). Each round starts its nodes fresh in a fresh temp dir,
//! like the other scenarios; the nodes' guards stop them on an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use serde::Deserialize;

use super::report::{Better, Table, Unit};
use super::scenarios::{
    CONNECTIONS, NO_MEMORY_LIMIT, SYNC_NEVER, checked, fill, result, say, timed,
};
use super::wasmkv::{BenchResult, Length, Load, Node, Wasmkv};
use super::{Commands, Plan};

/// How often both replicas' status is sampled during a paced run.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How often a replica's status is polled while waiting for it to catch up.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The longest a replica may take to catch up or to finish a full resync.
const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// The paced runs, as shares of the primary's maximum SET rate.
const SHARES: [(f64, &str); 2] = [(0.5, "50%"), (0.9, "90%")];
/// SETs per `Write` while the replica is away.
const WRITE_BATCH: u64 = 100;

/// Every replication table, in the order BENCHMARKS.md shows them.
pub fn run_all(plan: &Plan, wasmkv: &Wasmkv) -> Result<Vec<Table>> {
    let keys = plan.replication_keys;
    let (mut lag, mut catch_up, mut full) = (lag_table(), catch_up_table(keys), full_table(keys));
    for round in 1..=plan.rounds {
        lag_and_catch_up(plan, wasmkv, round, &mut lag, &mut catch_up)?;
        full_resync(plan, wasmkv, round, &mut full)?;
    }
    Ok(vec![lag, catch_up, full])
}

/// The head of BENCHMARKS.md's replication section.
pub fn intro(rounds: usize) -> String {
    format!(
        "## Replication\n\n\
         - wasmkv alone: Redis's replication (`replicaof`) is not measured. Its lag is an \
         offset in bytes rather than a count of writes, and its copy is an RDB file rather \
         than a stream, so the figures would not compare like for like.\n\
         - Every node is `config/primary.yaml` with `sync: never` (`WASMKV_WAL__SYNC=never`) \
         and no memory limit; a replica is the same with `WASMKV_PRIMARY__ADDRESS=$PRIMARY` \
         (the primary's `127.0.0.1:$PORT`). Primary, replicas and load generator share the \
         machine's cores.\n\
         - Method as above: each round starts its nodes fresh, each in a fresh directory \
         under `target/tmp`, and each figure is the median of its {rounds} rounds. No issue 4 \
         target applies here.\n"
    )
}

/// A replica's link to its primary, the `primary` object of `wasmkv status --json`.
#[derive(Debug, Deserialize)]
struct Link {
    state: String,
    applied_lsn: u64,
    lag_entries: u64,
    lag_ms: u64,
    full_syncs: u64,
    partial_syncs: u64,
}

fn link(wasmkv: &Wasmkv, replica: &Node, commands: &mut Commands) -> Result<Link> {
    let status = wasmkv.status(replica, commands)?;
    serde_json::from_value(status["primary"].clone())
        .with_context(|| format!("no replication link in a replica's status: {status}"))
}

/// The node's own LSN (`lsn` in `wasmkv status --json`).
fn lsn(wasmkv: &Wasmkv, node: &Node, commands: &mut Commands) -> Result<u64> {
    let status = wasmkv.status(node, commands)?;
    status["lsn"]
        .as_u64()
        .with_context(|| format!("no lsn in the status: {status}"))
}

/// Poll `replica` every `POLL_EVERY` until it streams with `lsn` applied; its link then.
fn wait_caught_up(
    wasmkv: &Wasmkv,
    replica: &Node,
    lsn: u64,
    commands: &mut Commands,
) -> Result<Link> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let link = link(wasmkv, replica, commands)?;
        if link.state == "streaming" && link.applied_lsn >= lsn {
            return Ok(link);
        }
        ensure!(
            link.state != "refused",
            "the replica refuses its primary: {link:?}"
        );
        ensure!(
            Instant::now() < deadline,
            "the replica has not reached LSN {lsn} within {WAIT_LIMIT:?}: {link:?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// The `q` quantile of `samples` by nearest rank: the smallest sample that at least `q` of
/// them do not exceed.
fn percentile(samples: &[u64], q: f64) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What every replication node runs with.
fn env() -> Vec<(&'static str, &'static str)> {
    SYNC_NEVER.iter().chain(NO_MEMORY_LIMIT).copied().collect()
}

const MAX: &str = "primary's maximum SETs/s (closed loop, replicas attached)";
const REACHED: &str = "SETs/s reached";
/// The lag figures of each paced run, from the samples of both replicas.
const LAG_FIGURES: [(&str, Unit); 4] = [
    ("lag p50, entries", Unit::Count),
    ("lag p99, entries", Unit::Count),
    ("lag p50, time", Unit::Seconds),
    ("lag p99, time", Unit::Seconds),
];

fn lag_figure(share: &str, what: &str) -> String {
    format!("{share} of the maximum: {what}")
}

fn lag_table() -> Table {
    let mut t = Table::alone(
        "R1. Replication lag: two replicas while the primary takes SETs",
        &[
            "One primary and two replicas. SETs of 64-byte values over 100k random keys \
             (`key:%012d`), 50 connections, on the primary.",
            "First the primary's maximum: `wasmkv bench --workload set`, one request in flight \
             per connection, with both replicas attached and streaming. Then the same load \
             paced at 50% and 90% of that rate (`--rate $RATE`: each connection sends at its \
             share of the rate; the load generator's latency then counts from when a request \
             was due). The replicas have caught up before each run.",
            &format!(
                "During each paced run (after its warm-up) both replicas' `wasmkv status \
                 --json` is sampled every {} ms.",
                SAMPLE_EVERY.as_millis()
            ),
            "Lag in entries is `primary.lag_entries`: the primary's LSN in \
             the last message the replica received minus the LSN it has applied (one SET is \
             one entry). Lag in time is `primary.lag_ms`: how old that message was when it \
             arrived (the primary's timestamp in it against the replica's clock, the same \
             machine's here, in whole milliseconds), or 0 if the replica had already applied \
             what it reports. p50 and p99 are over all the samples of both replicas.",
        ],
    );
    t.row(MAX, Unit::PerSec, Better::Higher, false);
    for (_, share) in SHARES {
        t.row(
            &lag_figure(share, REACHED),
            Unit::PerSec,
            Better::Higher,
            false,
        );
        for (what, unit) in LAG_FIGURES {
            t.row(&lag_figure(share, what), unit, Better::Lower, false);
        }
    }
    t
}

const CATCH_UP_TIME: &str = "catch-up time";
const CATCH_UP_SETS: &str = "catch-up rate, SETs/s";
const CATCH_UP_ENTRIES: &str = "catch-up rate, log entries/s";

fn catch_up_table(sets: u64) -> Table {
    let mut t = Table::alone(
        &format!("R2. Catch-up: a replica back after {sets} SETs (partial resync)"),
        &[
            &format!(
                "After the lag runs, both replicas are stopped (SIGTERM); the primary takes \
                 {sets} SETs over the same 100k keys (`wasmkv bench --workload write --batch \
                 {WRITE_BATCH}`: a Write of {WRITE_BATCH} SETs is one log entry, so {} \
                 entries); then replica 1 is started again on its data.",
                sets / WRITE_BATCH
            ),
            &format!(
                "Catch-up time: from spawning the replica until its status shows the \
                 primary's LSN applied (polled every {} ms), so it includes the replica's own \
                 recovery and reconnection. Its status must show one partial resync and no \
                 full one.",
                POLL_EVERY.as_millis()
            ),
        ],
    );
    t.row(CATCH_UP_TIME, Unit::Seconds, Better::Lower, false);
    t.row(CATCH_UP_SETS, Unit::PerSec, Better::Higher, false);
    t.row(CATCH_UP_ENTRIES, Unit::PerSec, Better::Higher, false);
    t
}

const FULL_TIME: &str = "full resync time";
const FULL_RATE: &str = "full resync rate, keys/s";

fn full_table(keys: u64) -> Table {
    let mut t = Table::alone(
        &format!("R3. Full resync: an empty replica of a primary with {keys} keys"),
        &[
            &format!(
                "A primary loaded with {keys} keys (`key:%012d`, 64-byte values, Writes of 100) \
                 and then idle; an empty replica is started. The primary streams a copy of its \
                 data, the replica writes it as a snapshot into a store of its own, opens it, \
                 applies the log after it and switches to it."
            ),
            &format!(
                "Full resync time: from spawning the replica until its status shows one full \
                 resync done and the primary's LSN applied (polled every {} ms); then `wasmkv \
                 digest` must answer the same on both nodes.",
                POLL_EVERY.as_millis()
            ),
        ],
    );
    t.row(FULL_TIME, Unit::Seconds, Better::Lower, false);
    t.row(FULL_RATE, Unit::PerSec, Better::Higher, false);
    t
}

/// One round of R1, then R2 on the same nodes.
fn lag_and_catch_up(
    plan: &Plan,
    wasmkv: &Wasmkv,
    round: usize,
    lag: &mut Table,
    catch_up: &mut Table,
) -> Result<()> {
    const LABEL: &str = "replication 1/3";
    let env = env();
    let tmp = plan.tempdir()?;
    say(LABEL, round, plan, "start a primary and two replicas");
    let primary = wasmkv.start(&tmp.path().join("primary"), &env, &mut lag.commands)?;
    let replicas = (1..=2)
        .map(|i| {
            let dir = tmp.path().join(format!("replica-{i}"));
            wasmkv.start_replica(&dir, &primary, &env, &mut lag.commands)
        })
        .collect::<Result<Vec<_>>>()?;
    let caught_up = |commands: &mut Commands| -> Result<()> {
        let lsn = lsn(wasmkv, &primary, commands)?;
        for replica in &replicas {
            wait_caught_up(wasmkv, replica, lsn, commands)?;
        }
        Ok(())
    };
    caught_up(&mut lag.commands)?;

    say(LABEL, round, plan, "wasmkv set: the primary's maximum");
    let max = checked(wasmkv.bench(
        &primary,
        &timed(plan, "set", CONNECTIONS, 1),
        &mut lag.commands,
    )?)?
    .ops_per_s;
    lag.ours(MAX, max);
    for (share, name) in SHARES {
        caught_up(&mut lag.commands)?;
        let rate = ((max * share).round() as u64).max(1);
        say(
            LABEL,
            round,
            plan,
            &format!("wasmkv set --rate {rate} ({name} of the maximum), sampling the replicas"),
        );
        let (run, samples) = paced_run(plan, wasmkv, &primary, &replicas, rate, lag)?;
        if let Some(down) = samples.iter().find(|l| l.state != "streaming") {
            return Err(anyhow!(
                "a replica's link went down during the run: {down:?}"
            ));
        }
        let entries: Vec<u64> = samples.iter().map(|l| l.lag_entries).collect();
        let ms: Vec<u64> = samples.iter().map(|l| l.lag_ms).collect();
        let (e50, e99, ms50, ms99) = (
            percentile(&entries, 0.5),
            percentile(&entries, 0.99),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
        );
        result(format!(
            "{} samples: lag p50 {e50} entries / {ms50} ms, p99 {e99} entries / {ms99} ms",
            samples.len()
        ));
        lag.ours(&lag_figure(name, REACHED), run.ops_per_s);
        // In LAG_FIGURES' order; times in seconds, as Unit::Seconds shows them.
        let values = [
            e50 as f64,
            e99 as f64,
            ms50 as f64 / 1000.0,
            ms99 as f64 / 1000.0,
        ];
        for ((what, _), value) in LAG_FIGURES.iter().zip(values) {
            lag.ours(&lag_figure(name, what), value);
        }
        lag.note(
            &format!("In the last round, the {name} run"),
            format!(
                "In the last round, the {name} run asked for {rate} SETs/s and took {} samples.",
                samples.len()
            ),
        );
    }

    // R2: replica 1 comes back after the primary took writes without it.
    const CATCH_UP: &str = "replication 2/3";
    caught_up(&mut catch_up.commands)?;
    let mut replicas = replicas.into_iter();
    let (first, second) = (
        replicas.next().context("replica 1")?,
        replicas.next().context("replica 2")?,
    );
    let from = link(wasmkv, &first, &mut catch_up.commands)?.applied_lsn;
    say(CATCH_UP, round, plan, "stop both replicas (SIGTERM)");
    second.stop()?;
    let stopped = first.stop()?;
    let sets = plan.replication_keys;
    say(
        CATCH_UP,
        round,
        plan,
        &format!("wasmkv write --batch {WRITE_BATCH}: {sets} SETs on the primary"),
    );
    let writes = Load {
        batch: WRITE_BATCH as u32,
        length: Length::Requests(sets / WRITE_BATCH),
        warmup: Some(Duration::ZERO),
        ..Load::timed("write", CONNECTIONS, plan.keys, Duration::ZERO)
    };
    checked(wasmkv.bench(&primary, &writes, &mut catch_up.commands)?)?;
    let to = lsn(wasmkv, &primary, &mut catch_up.commands)?;
    say(
        CATCH_UP,
        round,
        plan,
        "start replica 1 again, wait for the primary's LSN",
    );
    let started = Instant::now();
    let replica = wasmkv.start_again(stopped, &mut catch_up.commands)?;
    let link = wait_caught_up(wasmkv, &replica, to, &mut catch_up.commands)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        (link.partial_syncs, link.full_syncs) == (1, 0),
        "the replica came back with {} partial and {} full resyncs, not one partial",
        link.partial_syncs,
        link.full_syncs
    );
    let entries = to - from;
    result(format!(
        "caught up on {entries} entries ({sets} SETs) in {secs:.3} s (ready after {:.3} s)",
        replica.ready_after.as_secs_f64()
    ));
    catch_up.ours(CATCH_UP_TIME, secs);
    catch_up.ours(CATCH_UP_SETS, sets as f64 / secs);
    catch_up.ours(CATCH_UP_ENTRIES, entries as f64 / secs);
    catch_up.note(
        "In the last round, the replica",
        format!(
            "In the last round, the replica caught up on LSNs {from} to {to} and answered \
             `/readyz` {:.0} ms after its spawn.",
            replica.ready_after.as_secs_f64() * 1000.0
        ),
    );
    replica.stop()?;
    primary.stop()?;
    Ok(())
}

/// A SET run paced at `rate` on the primary, both replicas' links sampled every
/// `SAMPLE_EVERY` from the end of its warm-up until it ends.
fn paced_run(
    plan: &Plan,
    wasmkv: &Wasmkv,
    primary: &Node,
    replicas: &[Node],
    rate: u64,
    t: &mut Table,
) -> Result<(BenchResult, Vec<Link>)> {
    let load = Load {
        rate: Some(rate),
        ..timed(plan, "set", CONNECTIONS, 1)
    };
    let done = AtomicBool::new(false);
    let (run, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(wasmkv, replicas, plan.warmup, &done));
        let run = wasmkv.bench(primary, &load, &mut t.commands);
        done.store(true, Ordering::Relaxed);
        (run, sampler.join())
    });
    let run = checked(run?)?;
    let samples = samples.map_err(|_| anyhow!("the sampling thread panicked"))??;
    ensure!(!samples.is_empty(), "no status sample during the run");
    Ok((run, samples))
}

fn sample(
    wasmkv: &Wasmkv,
    replicas: &[Node],
    after: Duration,
    done: &AtomicBool,
) -> Result<Vec<Link>> {
    // The table shows `wasmkv status --json` from the waits before each run.
    let mut shown = Commands::default();
    let mut samples = Vec::new();
    let mut next = Instant::now() + after;
    while !done.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(5)));
            continue;
        }
        for replica in replicas {
            samples.push(link(wasmkv, replica, &mut shown)?);
        }
        next = (next + SAMPLE_EVERY).max(Instant::now());
    }
    Ok(samples)
}

/// One round of R3.
fn full_resync(plan: &Plan, wasmkv: &Wasmkv, round: usize, t: &mut Table) -> Result<()> {
    const LABEL: &str = "replication 3/3";
    let keys = plan.replication_keys;
    let env = env();
    let tmp = plan.tempdir()?;
    say(
        LABEL,
        round,
        plan,
        &format!("start a primary, load {keys} keys"),
    );
    let primary = wasmkv.start(&tmp.path().join("primary"), &env, &mut t.commands)?;
    fill(wasmkv, &primary, keys, t)?;
    let lsn = lsn(wasmkv, &primary, &mut t.commands)?;
    say(
        LABEL,
        round,
        plan,
        "start an empty replica, wait for the primary's LSN",
    );
    let started = Instant::now();
    let dir = tmp.path().join("replica");
    let replica = wasmkv.start_replica(&dir, &primary, &env, &mut t.commands)?;
    let link = wait_caught_up(wasmkv, &replica, lsn, &mut t.commands)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        link.full_syncs == 1,
        "the replica caught up with {} full resyncs, not one: {link:?}",
        link.full_syncs
    );
    let (ours, theirs) = (
        wasmkv.client(&replica, &["digest"], &mut t.commands)?,
        wasmkv.client(&primary, &["digest"], &mut t.commands)?,
    );
    ensure!(
        ours == theirs,
        "after the full resync the replica's digest differs:\n{ours}vs the primary's\n{theirs}"
    );
    result(format!(
        "full resync of {keys} keys in {secs:.3} s; digests agree"
    ));
    t.ours(FULL_TIME, secs);
    t.ours(FULL_RATE, keys as f64 / secs);
    replica.stop()?;
    primary.stop()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&samples, 0.5), 50);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&samples, 1.0), 100);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[0, 0, 0, 12], 0.5), 0);
        assert_eq!(percentile(&[0, 0, 0, 12], 0.99), 12);
    }

    #[test]
    fn links_parse_from_a_replicas_status() {
        let status = serde_json::json!({
            "role": "replica",
            "lsn": 120,
            "primary": {
                "address": "127.0.0.1:8080", "state": "streaming", "applied_lsn": 120,
                "primary_lsn": 130, "lag_entries": 10, "lag_ms": 3, "full_syncs": 0,
                "partial_syncs": 1, "last_error": ""
            }
        });
        let link: Link = serde_json::from_value(status["primary"].clone()).unwrap();
        assert_eq!(
            (
                link.state.as_str(),
                link.applied_lsn,
                link.lag_entries,
                link.lag_ms
            ),
            ("streaming", 120, 10, 3)
        );
        assert_eq!((link.full_syncs, link.partial_syncs), (0, 1));
        assert!(serde_json::from_value::<Link>(serde_json::Value::Null).is_err());
    }

    #[test]
    fn the_tables_declare_every_figure_they_fill() {
        let mut lag = lag_table();
        lag.ours(MAX, 1.0);
        for (_, share) in SHARES {
            lag.ours(&lag_figure(share, REACHED), 1.0);
            for (what, _) in LAG_FIGURES {
                lag.ours(&lag_figure(share, what), 1.0);
            }
        }
        assert_eq!(lag.rows.len(), 1 + SHARES.len() * (1 + LAG_FIGURES.len()));
        let mut catch_up = catch_up_table(100_000);
        for figure in [CATCH_UP_TIME, CATCH_UP_SETS, CATCH_UP_ENTRIES] {
            catch_up.ours(figure, 1.0);
        }
        let mut full = full_table(100_000);
        for figure in [FULL_TIME, FULL_RATE] {
            full.ours(figure, 1.0);
        }
        assert!(catch_up.title.contains("100000 SETs"), "{}", catch_up.title);
        assert!(catch_up.setup[0].contains("so 1000 entries"));
        let intro = intro(3);
        assert!(intro.starts_with("## Replication\n"), "{intro}");
        assert!(intro.contains("median of its 3 rounds"), "{intro}");
    }
}
