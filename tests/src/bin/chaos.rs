//! `chaos`: one randomized fault-injection run against a primary and two replicas, checked
//! against the oracles of `wasmkv_tests::chaos`. Normally started by `cargo xtask chaos`,
//! which builds the node and the plugins first.
//!
//! It prints the seed and the schedule before starting, a line per fault as it happens,
//! and the verdict; it exits with failure when an oracle found an anomaly. The same seed
//! replays the same schedule (the clients' timing, and so the history, differ).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use wasmkv_tests::chaos::runner::{self, Options, Report};
use wasmkv_tests::chaos::schedule;

#[derive(Parser)]
#[command(about = "Randomized fault injection against a wasmkv cluster, with a history checker")]
struct Args {
    /// How long the faults go on.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The schedule's seed (random by default; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Where key-policy.wasm is.
    #[arg(long, env = "WASMKV_PLUGIN_DIR")]
    plugin_dir: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Print the schedule and stop.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let events = schedule::generate(seed, args.seconds);
    println!(
        "chaos: seed {seed}, {} s, {} faults:",
        args.seconds,
        events.len()
    );
    for event in &events {
        println!("{:>7.1}s  {}", event.at.as_secs_f64(), event.fault);
    }
    if args.dry_run {
        return Ok(());
    }
    println!("---- run");
    let options = Options {
        seed,
        seconds: args.seconds,
        plugin_dir: args.plugin_dir,
    };
    let report = runner::run(&options, &events, &mut |line| println!("{line}"));
    print_report(seed, &report);
    if let Some(path) = &args.summary {
        let json = summary(seed, args.seconds, &report);
        std::fs::write(path, json.to_string())
            .with_context(|| format!("write {}", path.display()))?;
    }
    if !report.anomalies.is_empty() {
        bail!(
            "{} anomalies (seed {seed}; replay with --seed {seed})",
            report.anomalies.len()
        );
    }
    Ok(())
}

fn print_report(seed: u64, report: &Report) {
    println!(
        "---- verdict (seed {seed}, {:.1} s)",
        report.elapsed.as_secs_f64()
    );
    let kinds: Vec<String> = report
        .faults
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "faults injected: {} ({})",
        report.faults_total(),
        kinds.join(", ")
    );
    println!(
        "operations checked: {} writes ({} acknowledged, {} unknown, {} refused), {} reads \
         ({} durability checkpoints)",
        report.writes,
        report.acked,
        report.unknown,
        report.refused,
        report.reads,
        report.checkpoints
    );
    println!(
        "acknowledged writes discarded by failovers: {}",
        report.discarded
    );
    println!(
        "plugin swaps: {}, new version seen loaded on the primary: {}",
        report.plugin_swaps, report.plugin_reloads_confirmed
    );
    let lin = &report.linearizability;
    println!(
        "linearizability: {} histories (key x primary term), {} ops, {} left unchecked",
        lin.segments, lin.ops, lin.unchecked
    );
    println!(
        "prefix: {} observations, {} log entries compared",
        report.prefix_observations, report.prefix_entries
    );
    println!("anomalies: {}", report.anomalies.len());
    for anomaly in &report.anomalies {
        println!("  {anomaly}");
    }
    println!(
        "{}",
        if report.anomalies.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    );
}

fn summary(seed: u64, seconds: u64, report: &Report) -> serde_json::Value {
    serde_json::json!({
        "seed": seed,
        "seconds": seconds,
        "faults": report.faults,
        "writes": report.writes,
        "reads": report.reads,
        "acked": report.acked,
        "unknown": report.unknown,
        "refused": report.refused,
        "discarded": report.discarded,
        "checkpoints": report.checkpoints,
        "linearizability_histories": report.linearizability.segments,
        "linearizability_ops": report.linearizability.ops,
        "linearizability_unchecked": report.linearizability.unchecked,
        "prefix_observations": report.prefix_observations,
        "prefix_entries": report.prefix_entries,
        "anomalies": report.anomalies.len(),
    })
}
