//! `cargo xtask chaos`: build the node, the plugins and the `chaos` runner (wasmkv-tests),
//! then run it; with `--record`, add the run's figures to ROBUSTNESS.md (between the
//! `chaos:begin`/`chaos:end` markers, leaving the rest of the file alone).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::{cargo, plugins, root, run, sections, target_dir};

/// The seed of the run `cargo xtask test` makes, so CI replays one schedule.
pub const TEST_SEED: u64 = 8;

const BEGIN: &str = "<!-- chaos:begin -->";
const END: &str = "<!-- chaos:end -->";
const HEADER: &str = "| seed | seconds | faults | by kind | writes | reads | linearizability histories / ops | prefix entries compared | anomalies |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|";

/// The figures the runner writes with `--summary`.
#[derive(Deserialize)]
struct Summary {
    seed: u64,
    seconds: u64,
    faults: BTreeMap<String, u64>,
    writes: u64,
    reads: u64,
    linearizability_histories: u64,
    linearizability_ops: u64,
    prefix_entries: u64,
    anomalies: u64,
}

/// One chaos run of `seconds` with `seed` (random when None); `record` adds it to
/// ROBUSTNESS.md. Fails when the run found anomalies.
pub fn chaos(seconds: u64, seed: Option<u64>, record: bool) -> Result<()> {
    let plugin_dir = plugins::default_out_dir();
    plugins::build(&plugin_dir)?;
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "wasmkv",
        "--bin",
        "wasmkv",
        "-p",
        "wasmkv-tests",
        "--bin",
        "chaos",
    ]);
    run("cargo build (wasmkv, chaos)", build)?;
    let bin = target_dir().join("debug");
    let summary = tempfile::NamedTempFile::new()?;
    let mut chaos = Command::new(bin.join("chaos"));
    chaos
        .current_dir(root())
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--summary")
        .arg(summary.path())
        .env("WASMKV_PLUGIN_DIR", &plugin_dir)
        .env("WASMKV_TEST_BIN", bin.join("wasmkv"));
    if let Some(seed) = seed {
        chaos.arg("--seed").arg(seed.to_string());
    }
    let outcome = run(&format!("chaos run of {seconds} s"), chaos);
    if record {
        let text =
            std::fs::read_to_string(summary.path()).context("the chaos run wrote no summary")?;
        let summary: Summary = serde_json::from_str(&text).context("the chaos summary")?;
        let path = root().join("ROBUSTNESS.md");
        record_run(&path, &summary)?;
        eprintln!("==> recorded in {}", path.display());
    }
    outcome
}

/// Add `run` to the chaos section of the file at `path` and recompute its totals.
fn record_run(path: &Path, run: &Summary) -> Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Robustness\n".to_owned(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    if !text.contains(BEGIN) && !text.contains(END) {
        text = format!("{}\n\n{BEGIN}\n{END}\n", text.trim_end());
    }
    let damaged = || format!("{}: the chaos markers are damaged", path.display());
    let section = text
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(section, _)| section)
        .with_context(damaged)?;
    let mut rows: Vec<String> = section
        .lines()
        .filter(|line| {
            line.starts_with("| ") && line[2..].starts_with(|c: char| c.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect();
    let kinds: Vec<String> = run.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    rows.push(format!(
        "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
        run.seed,
        run.seconds,
        run.faults.values().sum::<u64>(),
        kinds.join(", "),
        run.writes,
        run.reads,
        run.linearizability_histories,
        run.linearizability_ops,
        run.prefix_entries,
        run.anomalies
    ));
    let totals = totals(&rows)?;
    let new_section = format!(
        "## Chaos runs\n\nRandomized fault injection (`cargo xtask chaos --seconds N --seed S \
         --record`, debug build, on the 2 shared cores this file's runs were made on): a \
         primary and two replicas (`sync: always`, the key-policy validator), three writers, \
         two readers of the primary and one of the replicas throughout, and a schedule drawn \
         from the seed of SIGKILLs and restarts, SIGSTOPs, replication links dropped, \
         delayed, blackholed or refused, plugin files replaced, switchovers (a caught-up \
         replica promoted) and failovers (the primary killed, the most advanced replica \
         promoted, the old primary rejoining). Every operation is checked for durability \
         (acknowledged writes survive crashes and switchovers; a failover may discard only \
         writes not confirmed with `min_replicas` ≥ 1), no invention, replica logs being \
         prefixes of their primary's, convergence after the faults, and per-key \
         linearizability on the primary. See `tests/src/chaos/`.\n\n{totals}\n\n{HEADER}\n{}\n",
        rows.join("\n")
    );
    let updated = sections::replace(&text, BEGIN, END, &new_section).with_context(damaged)?;
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))
}

/// The totals line of the section's rows.
fn totals(rows: &[String]) -> Result<String> {
    let (mut seconds, mut faults, mut ops, mut anomalies) = (0u64, 0u64, 0u64, 0u64);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let number = |i: usize| -> Result<u64> {
            cells
                .get(i)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("column {i} of the row {row:?}"))
        };
        seconds += number(2)?;
        faults += number(3)?;
        ops += number(5)? + number(6)?;
        anomalies += number(9)?;
        for kind in cells[4].split(", ").filter(|k| !k.is_empty()) {
            let (name, n) = kind
                .rsplit_once(' ')
                .context("a fault kind and its count")?;
            *kinds.entry(name.to_owned()).or_default() += n.parse::<u64>()?;
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    Ok(format!(
        "**{} runs, {seconds} s of faults, {faults} faults injected ({}), {ops} operations \
         checked, {anomalies} anomalies.**",
        rows.len(),
        kinds.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, kills: u64) -> Summary {
        Summary {
            seed,
            seconds: 60,
            faults: BTreeMap::from([("kill".to_owned(), kills), ("pause".to_owned(), 1)]),
            writes: 10,
            reads: 20,
            linearizability_histories: 3,
            linearizability_ops: 25,
            prefix_entries: 7,
            anomalies: 0,
        }
    }

    #[test]
    fn runs_are_added_between_the_markers_with_totals_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ROBUSTNESS.md");
        let fuzz = "<!-- fuzz:begin -->\nfuzz figures\n<!-- fuzz:end -->\n";
        std::fs::write(&path, format!("# Robustness\n\n{fuzz}")).unwrap();
        record_run(&path, &run(1, 2)).unwrap();
        record_run(&path, &run(2, 3)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(fuzz), "{text}");
        assert_eq!(text.matches(BEGIN).count(), 1, "{text}");
        assert!(text.contains("| 1 | 60 | 3 | kill 2, pause 1 | 10 | 20 | 3 / 25 | 7 | 0 |"));
        assert!(
            text.contains(
                "**2 runs, 120 s of faults, 7 faults injected (kill 5, pause 2), 60 operations \
                 checked, 0 anomalies.**"
            ),
            "{text}"
        );
        assert!(text.trim_end().ends_with(END), "{text}");
    }
}
