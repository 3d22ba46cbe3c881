//! The plugin figures of issue 6 that need a running node: SET throughput with a validate
//! chain of two plugins against the same node without one, in the same run (round after
//! round, A B A B). The per-call, compile and reload figures come from
//! `host/benches/plugins.rs`, which writes its own section.

use std::path::Path;

use anyhow::{Context, Result};

use super::Plan;
use super::report::{Better, Table, Unit};
use super::scenarios::{CONNECTIONS, SYNC_NEVER, checked, fill, say, timed};
use super::wasmkv::Wasmkv;

const LABEL: &str = "plugins";

/// `config/primary.yaml` plus a validate chain of two `key-policy` steps (the bench's keys
/// are `key:%012d`, which both allow), written into `dir`.
fn chain_config(wasmkv: &Wasmkv, plugins: &Path, dir: &Path) -> Result<std::path::PathBuf> {
    let base = std::fs::read_to_string(&wasmkv.config).context("read config/primary.yaml")?;
    let chain = format!(
        "\nplugins:\n  dir: {:?}\n  limits: {{deadline: 50ms}}\n  validate:\n    - plugin: key-policy\n      config: \
         {{allowed_prefixes: [\"key:\"]}}\n    - plugin: key-policy\n      config: \
         {{max_key_len: 64, charset: printable}}\n",
        plugins.display().to_string()
    );
    let path = dir.join("primary-with-plugins.yaml");
    std::fs::write(&path, base + &chain).context("write the plugin config")?;
    Ok(path)
}

pub fn throughput(plan: &Plan, wasmkv: &Wasmkv, plugins: &Path) -> Result<Table> {
    let mut t = Table::versus(
        "Plugins: write throughput with a validate chain",
        "2 validators",
        "none",
        &[
            "The same node (`sync: never`, 100k keys loaded) with and without a validate chain \
             of two `key-policy` steps (allowed prefixes; key length and charset), so every SET \
             makes two plugin calls before it is logged.",
            "SET of 64-byte values, 50 connections, one request in flight each, as in \
             scenario 1. Ratio: with/without.",
            "The chain's per-call deadline is 50 ms (`plugins.limits.deadline`) instead of the \
             default 2 ms: the deadline is wall-clock time, and on 2 cores shared by the node \
             and the load generator a call can be descheduled for longer than 2 ms.",
        ],
    );
    t.row("SET ops/s", Unit::PerSec, Better::Higher, false);
    t.row("SET p50", Unit::Micros, Better::Lower, false);
    t.row("SET p99", Unit::Micros, Better::Lower, false);
    let config_dir = plan.tempdir()?;
    let with_chain = Wasmkv {
        bin: wasmkv.bin.clone(),
        config: chain_config(wasmkv, plugins, config_dir.path())?,
    };
    for round in 1..=plan.rounds {
        for (node_kind, side) in [(&with_chain, true), (wasmkv, false)] {
            let tmp = plan.tempdir()?;
            let name = if side { "2 validators" } else { "no plugins" };
            say(
                LABEL,
                round,
                plan,
                &format!("wasmkv ({name}): start, load, set"),
            );
            let node = node_kind.start(&tmp.path().join("wasmkv"), SYNC_NEVER, &mut t.commands)?;
            fill(node_kind, &node, plan.keys, &mut t)?;
            let load = timed(plan, "set", CONNECTIONS, 1);
            let r = checked(node_kind.bench(&node, &load, &mut t.commands)?)?;
            let record = |t: &mut Table, figure: &str, value: f64| {
                if side {
                    t.ours(figure, value);
                } else {
                    t.theirs(figure, value);
                }
            };
            record(&mut t, "SET ops/s", r.ops_per_s);
            record(&mut t, "SET p50", r.p50_us);
            record(&mut t, "SET p99", r.p99_us);
            node.stop()?;
        }
    }
    Ok(t)
}
