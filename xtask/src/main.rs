//! `cargo xtask`: the project's entry points, so a newcomer needs two commands and nothing
//! installed by hand. Every step says what it runs before running it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod chaos;
mod demo;
mod fuzz;
mod plugins;
mod sections;

#[derive(Parser)]
#[command(about = "wasmkv project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Show wasmkv working: start a node from config/ and run a scripted tour.
    Demo {
        /// Stop after the tour instead of waiting for Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Everything CI checks: formatting, lints, the plugins, the whole test suite, a fuzzing
    /// smoke, a 60-second chaos run, the demo.
    Test,
    /// Benchmark wasmkv against Redis (and the storage engine) and rewrite BENCHMARKS.md.
    Bench {
        /// A short smoke run (one round, small data): prints the tables, writes nothing.
        #[arg(long)]
        quick: bool,
    },
    /// Randomized fault injection against a primary and two replicas, checked by oracles.
    Chaos {
        /// How long the faults go on.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The schedule's seed (random by default, printed either way).
        #[arg(long)]
        seed: Option<u64>,
        /// Add the run's figures to ROBUSTNESS.md.
        #[arg(long)]
        record: bool,
    },
    /// Fuzz the decoders (cargo-fuzz, nightly): each target for a bounded time. A run of every
    /// target for at least 30 s each rewrites the figures in ROBUSTNESS.md.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (`cargo +nightly fuzz list` names them); records nothing.
        #[arg(long)]
        target: Option<String>,
        /// Instead of fuzzing, rewrite the seed corpus (fuzz/corpus/) from the real encoders.
        #[arg(long, conflicts_with_all = ["seconds", "target"])]
        seeds: bool,
    },
    /// Build the plugins under plugins/ for wasm32, check them against ABI v1, collect them.
    Plugins {
        /// Where to put NAME.wasm (default: `plugins` in the cargo target directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Demo { exit } => demo(exit),
        Task::Test => test(),
        Task::Bench { quick } => bench(quick),
        Task::Chaos {
            seconds,
            seed,
            record,
        } => chaos::chaos(seconds, seed, record),
        Task::Fuzz { seeds: true, .. } => fuzz::write_seeds(),
        Task::Fuzz {
            seconds, target, ..
        } => fuzz::fuzz(seconds, target.as_deref()),
        Task::Plugins { out } => {
            plugins::build(&out.unwrap_or_else(plugins::default_out_dir)).map(drop)
        }
    }
}

/// The workspace. `cargo run` (which `cargo xtask` is) says where xtask's manifest is at run
/// time; the path baked in at compile time is only a fallback, because a binary built for one
/// checkout is reused by another at a different path when they share a target directory
/// (CI's cache), and it would then work on the wrong tree.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("==> {step}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start: {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn demo(exit: bool) -> Result<()> {
    demo::demo(exit)
}

fn test() -> Result<()> {
    install_test_tools()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy -D warnings", clippy)?;
    // The plugin tests load the shipped plugins from here (they would build them otherwise).
    let plugin_dir = plugins::default_out_dir();
    plugins::build(&plugin_dir)?;
    let mut tests = cargo();
    tests
        .args(["test", "--workspace"])
        .env("WASMKV_PLUGIN_DIR", &plugin_dir);
    run(
        &format!(
            "cargo test --workspace (WASMKV_PLUGIN_DIR={})",
            plugin_dir.display()
        ),
        tests,
    )?;
    fuzz::smoke()?;
    chaos::chaos(60, Some(chaos::TEST_SEED), false)?;
    demo(true)
}

/// What the suite needs beyond Rust: `cbor2` for the Python example. (The Connect-ES client's
/// npm packages are installed by its test, from the committed lock file.)
fn install_test_tools() -> Result<()> {
    let has_cbor2 = Command::new("python3")
        .args(["-c", "import cbor2"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_cbor2 {
        let mut pip = Command::new("python3");
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "cbor2",
        ]);
        run("install cbor2 (Python) for the Python example", pip)?;
    }
    Ok(())
}

fn bench(quick: bool) -> Result<()> {
    bench::bench(quick)
}

/// Where cargo puts build output (`CARGO_TARGET_DIR` if set), so the built binary is found.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A port nothing listens on right now, for a server started next (each run gets its own, so
/// runs never meet a previous server's leftovers).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
