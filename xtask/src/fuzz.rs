//! `cargo xtask fuzz [--seconds N] [--target NAME]`: the fuzz targets of `fuzz/` (cargo-fuzz,
//! libFuzzer, nightly), each run for a bounded time, with executions per target and in total.
//! A crash fails the run, naming the input that caused it and how to replay it.
//!
//! Targets start from their committed seeds (`fuzz/corpus/<target>/`, read only); what a run
//! adds to the corpus goes to a temporary directory and is dropped, so fuzzing never dirties
//! the tree. `cargo xtask test` runs a few seconds of each target (`smoke`). A full run (every
//! target, at least `RECORD_MIN_SECONDS` each) rewrites the fuzzing figures in ROBUSTNESS.md.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::bench::{date, machine};
use crate::{cargo, root, run, sections, target_dir};

/// Seconds per target of the smoke in `cargo xtask test`: enough to replay the seeds and try
/// some thousands of mutations, little enough to keep CI fast.
const SMOKE_SECONDS: u64 = 3;
/// Runs shorter than this per target are smoke, not figures worth recording.
const RECORD_MIN_SECONDS: u64 = 30;
const BEGIN: &str = "<!-- fuzz:begin -->";
const END: &str = "<!-- fuzz:end -->";
/// The toolchain cargo-fuzz needs (`-Z` flags for the sanitizer-coverage instrumentation).
const TOOLCHAIN: &str = "nightly";
/// An input that takes longer than this is a hang, reported like a crash.
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// Memory a target may use: about four times what the targets need (30-40 MB). Inputs are a
/// few kilobytes, so a decoder that needs more is allocating what a length field claims
/// rather than what the input holds.
const RSS_LIMIT_MB: u64 = 128;

/// What one target did in one run, from libFuzzer's final statistics.
struct Outcome {
    target: String,
    execs: u64,
    /// Inputs in the corpus at the end: the seeds and what the run added.
    corpus: usize,
    seeds: usize,
    peak_rss_mb: u64,
}

/// `cargo xtask fuzz`: every target (or `only`) for `seconds` each.
pub fn fuzz(seconds: u64, only: Option<&str>) -> Result<()> {
    let outcomes = run_targets(seconds, only)?;
    if only.is_none() && seconds >= RECORD_MIN_SECONDS {
        record(seconds, &outcomes)?;
    } else {
        eprintln!(
            "(figures not recorded: ROBUSTNESS.md takes runs of every target for at least \
             {RECORD_MIN_SECONDS} s)"
        );
    }
    Ok(())
}

/// The smoke in `cargo xtask test`: the fuzz crate's formatting and lints (it is not a
/// workspace member, so the workspace's checks skip it; the stable toolchain checks it like
/// the rest), then every target briefly, nothing recorded.
pub fn smoke() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]);
    run("cargo fmt --check (fuzz/)", fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--all-targets",
    ]);
    clippy.args(["--", "-D", "warnings"]);
    run("cargo clippy -D warnings (fuzz/)", clippy)?;
    run_targets(SMOKE_SECONDS, None).map(drop)
}

/// `cargo xtask fuzz --seeds`: rewrite the committed seed corpus from the real encoders.
pub fn write_seeds() -> Result<()> {
    install()?;
    build()?;
    let scratch = scratch()?;
    let mut seed_corpus = Command::new(binary("seed_corpus")?);
    seed_corpus
        .current_dir(root())
        .env("TMPDIR", scratch.path());
    run("write the seed corpus (fuzz/corpus/)", seed_corpus)
}

/// Scratch space for the targets that read files and for the corpus a run grows, removed when
/// dropped: in memory where there is a tmpfs, since every input is written to a file.
fn scratch() -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("wasmkv-fuzz-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .context("create a scratch directory for fuzzing")
}

fn run_targets(seconds: u64, only: Option<&str>) -> Result<Vec<Outcome>> {
    install()?;
    build()?;
    let mut targets = list()?;
    if let Some(only) = only {
        if !targets.iter().any(|t| t == only) {
            bail!(
                "no fuzz target {only:?}; the targets: {}",
                targets.join(", ")
            );
        }
        targets.retain(|t| t == only);
    }
    let scratch = scratch()?;
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        match run_target(target, seconds, scratch.path())? {
            Ok(outcome) => outcomes.push(outcome),
            Err(report) => failed.push(report),
        }
    }
    print_summary(seconds, &outcomes);
    if !failed.is_empty() {
        bail!(
            "fuzzing found {} failure(s):\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(outcomes)
}

/// cargo-fuzz and the nightly toolchain, if this machine lacks them.
fn install() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_nightly {
        let mut rustup = Command::new("rustup");
        rustup.args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"]);
        run("install the nightly toolchain (for cargo-fuzz)", rustup)?;
    }
    let has_cargo_fuzz = nightly()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cargo_fuzz {
        let mut install = Command::new("cargo");
        install.args(["install", "cargo-fuzz", "--locked"]);
        run("cargo install cargo-fuzz --locked", install)?;
    }
    Ok(())
}

/// `cargo +nightly` in the repository root (whose rust-toolchain.toml names the stable one).
fn nightly() -> Command {
    // The rustup proxy, not `$CARGO`: that is the pinned toolchain's cargo, which takes no `+`.
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{TOOLCHAIN}"))
        .env("RUSTUP_TOOLCHAIN", TOOLCHAIN)
        .current_dir(root());
    cmd
}

/// `cargo fuzz build`: every target and the seed generator.
///
/// No sanitizer: the project has no `unsafe`, so AddressSanitizer would instrument mostly
/// dependencies, and it slows every execution (typically about twice). Debug assertions and
/// overflow checks stay on: an overflowing length computation is a crash. Sixteen codegen
/// units: cargo-fuzz's default of one makes code generation of each crate serial, and the
/// host pulls in large ones (Cranelift's).
fn build() -> Result<()> {
    let mut cmd = nightly();
    cmd.args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
        .args(["--codegen-units", "16", "--target-dir"])
        .arg(fuzz_target_dir());
    run(
        &format!("cargo +{TOOLCHAIN} fuzz build (fuzz targets and seed generator)"),
        cmd,
    )
}

/// Fuzz builds use flags of their own: kept apart from the normal build's output, under
/// `$CARGO_TARGET_DIR` when set (CI caches it), so dependencies are compiled once.
fn fuzz_target_dir() -> PathBuf {
    target_dir().join("fuzz")
}

/// The fuzz targets, as cargo-fuzz lists them from fuzz/Cargo.toml.
fn list() -> Result<Vec<String>> {
    let output = nightly()
        .args(["fuzz", "list"])
        .output()
        .context("could not run cargo fuzz list")?;
    if !output.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// A program that `build` built (cargo-fuzz builds for the host triple explicitly).
fn binary(name: &str) -> Result<PathBuf> {
    let dir = fuzz_target_dir();
    fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .flatten()
        .map(|triple| triple.path().join("release").join(name))
        .find(|path| path.is_file())
        .with_context(|| format!("{name} was not built under {}", dir.display()))
}

/// Run one target for `seconds`; `Err` inside is a report of what it found.
fn run_target(target: &str, seconds: u64, scratch: &Path) -> Result<Result<Outcome, String>> {
    let seeds_dir = root().join("fuzz/corpus").join(target);
    let grown = scratch.join(target).join("corpus");
    let tmp = scratch.join(target).join("tmp");
    fs::create_dir_all(&grown)?;
    fs::create_dir_all(&tmp)?;
    let log_path = scratch.join(format!("{target}.log"));
    let log = File::create(&log_path)?;
    let artifacts = root().join("fuzz/artifacts").join(target);
    fs::create_dir_all(&artifacts)?;
    eprintln!("==> fuzz {target} for {seconds} s");
    // The program itself rather than `cargo fuzz run`, which execs it: the peak RSS that
    // libFuzzer measures (and limits) would include cargo's.
    let program = binary(target)?;
    let status = Command::new(&program)
        // New inputs go to the first directory; the seeds are only read.
        .args([&grown, &seeds_dir])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .env("TMPDIR", &tmp)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("could not run the fuzz target {target}"))?;
    let text = fs::read_to_string(&log_path)?;
    if !status.success() {
        return Ok(Err(failure_report(target, &program, &text)));
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| format!("{target}: libFuzzer printed no {name}"))
    };
    Ok(Ok(Outcome {
        target: target.to_owned(),
        execs: stat("number_of_executed_units")?,
        peak_rss_mb: stat("peak_rss_mb")?,
        seeds: count_files(&seeds_dir)?,
        corpus: count_files(&seeds_dir)? + count_files(&grown)?,
    }))
}

fn count_files(dir: &Path) -> Result<usize> {
    Ok(fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .count())
}

/// What a failed target printed last, the input it saved and how to replay it.
fn failure_report(target: &str, program: &Path, log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    let artifact = lines
        .iter()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
        .unwrap_or("(none written: see the output above)");
    format!(
        "--- {target} ---\n{tail}\n--- {target}: the input is {artifact}\n    replay it: {} \
         {artifact}\n    then add it as a regression test next to the decoder it broke, and fix \
         the decoder",
        program.display()
    )
}

fn print_summary(seconds: u64, outcomes: &[Outcome]) {
    eprintln!("fuzz: {seconds} s per target");
    for o in outcomes {
        eprintln!(
            "  {:<18} {:>12} executions  {:>9}/s  corpus {} (+{})  peak RSS {} MB",
            o.target,
            o.execs,
            o.execs / seconds.max(1),
            o.corpus,
            o.corpus - o.seeds,
            o.peak_rss_mb
        );
    }
    let total: u64 = outcomes.iter().map(|o| o.execs).sum();
    eprintln!("  {:<18} {total:>12} executions", "total");
}

/// Rewrite the fuzzing section of ROBUSTNESS.md (creating the file if needed).
fn record(seconds: u64, outcomes: &[Outcome]) -> Result<()> {
    let path = root().join("ROBUSTNESS.md");
    let existing = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("# Robustness\n\n## Fuzzing\n\n{BEGIN}\n{END}\n")
        }
        Err(e) => return Err(e).context("read ROBUSTNESS.md"),
    };
    let section = render(seconds, outcomes)?;
    let updated = sections::replace(&existing, BEGIN, END, &section)
        .context("ROBUSTNESS.md lacks the fuzz markers")?;
    fs::write(&path, updated).context("write ROBUSTNESS.md")?;
    eprintln!("==> wrote the fuzzing figures to {}", path.display());
    Ok(())
}

fn render(seconds: u64, outcomes: &[Outcome]) -> Result<String> {
    let version = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut out = format!(
        "`cargo xtask fuzz --seconds {seconds}`, {date}: each target for {seconds} s in one \
         process, one after the other, on {machine}; {version}, no sanitizer, debug assertions \
         and overflow checks on. No target crashed, hung or exceeded {RSS_LIMIT_MB} MB.\n\n\
         | target | input | executions | per second | corpus: seeds + found | peak RSS |\n\
         |---|---|---:|---:|---:|---:|\n",
        date = date(),
        machine = machine(),
    );
    for o in outcomes {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} + {} | {} MB |\n",
            o.target,
            summary(&o.target)?,
            o.execs,
            o.execs / seconds.max(1),
            o.seeds,
            o.corpus - o.seeds,
            o.peak_rss_mb
        ));
    }
    let total: u64 = outcomes.iter().map(|o| o.execs).sum();
    out.push_str(&format!(
        "| **total** | | **{total}** | {} | | |\n",
        total / (seconds * outcomes.len() as u64).max(1)
    ));
    Ok(out)
}

/// The first sentence of a target's doc comment: what it feeds the decoder.
fn summary(target: &str) -> Result<String> {
    let path = root()
        .join("fuzz/fuzz_targets")
        .join(format!("{target}.rs"));
    let source = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let doc: Vec<&str> = source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let doc = doc.join(" ");
    Ok(doc
        .split_once(": ")
        .or_else(|| doc.split_once(". "))
        .map_or(doc.as_str(), |(first, _)| first)
        .trim_end_matches('.')
        .to_owned())
}
