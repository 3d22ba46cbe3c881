//! What the run needs from the machine: Redis, its tools and wrk installed from the
//! distribution (so a fresh CI box runs the benchmarks unattended), and the facts the report
//! states about the machine and the versions measured.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cmd::{Cmd, on_path};

/// (program, Debian package that provides it)
const TOOLS: [(&str, &str); 4] = [
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("redis-benchmark", "redis-tools"),
    ("wrk", "wrk"),
];

/// `apt-get install -y` whatever is missing: as root directly, else through password-less
/// sudo; `apt-get update` only if the install fails (a stale package index), since it is slow.
pub fn install_tools() -> Result<()> {
    let mut packages: Vec<&str> = TOOLS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    let manual = format!("apt-get install -y {}", packages.join(" "));
    if !on_path("apt-get") {
        bail!("missing {packages:?} and no apt-get on this machine: install them by hand");
    }
    let sudo = if rustix::process::geteuid().is_root() {
        false
    } else if on_path("sudo")
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
    {
        true
    } else {
        bail!("missing {packages:?}; not root and no password-less sudo: run `sudo {manual}`");
    };
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        crate::run(&format!("apt-get {}", args.join(" ")), cmd)
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install)?;
    }
    if let Some((program, _)) = TOOLS.iter().find(|(program, _)| !on_path(program)) {
        bail!("{program} is still missing after `{manual}`");
    }
    Ok(())
}

/// The versions the report names.
pub struct Versions {
    pub wasmkv: String,
    pub commit: String,
    pub redis: String,
    pub wrk: String,
}

impl Versions {
    pub fn probe(wasmkv: &std::path::Path) -> Result<Versions> {
        let first_line = |text: String| text.lines().next().unwrap_or_default().trim().to_owned();
        let wasmkv = first_line(Cmd::new(wasmkv, "wasmkv").arg("--version").output()?);
        let redis = first_line(
            Cmd::new("redis-server", "redis-server")
                .arg("--version")
                .output()?,
        );
        // `wrk -v` prints its version and exits with status 1, so its status is not checked.
        let wrk = Command::new("wrk")
            .arg("-v")
            .output()
            .context("run wrk -v")?;
        let wrk = first_line(String::from_utf8_lossy(&wrk.stdout).into_owned());
        let wrk = wrk
            .split(" Copyright")
            .next()
            .unwrap_or_default()
            .to_owned();
        let git = |args: &[&str]| -> String {
            Command::new("git")
                .args(args)
                .current_dir(crate::root())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let mut commit = git(&["rev-parse", "--short=12", "HEAD"]);
        if !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            commit.push_str(" with uncommitted changes");
        }
        Ok(Versions {
            wasmkv,
            commit,
            redis,
            wrk,
        })
    }
}

/// Cores, CPU model and kernel, as the report's first line states them.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

/// Today in UTC, from `date` (the one place the xtask needs a calendar).
pub fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine's CPU time so far, in clock ticks, from the first line of `/proc/stat`: all of
/// it, and the part the hypervisor ran other guests in instead (steal). On a shared virtual
/// machine, steal slows rounds unevenly, and a reader of the tables should know how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTime {
    total: u64,
    steal: u64,
}

impl CpuTime {
    /// Now; `None` where there is no `/proc/stat`.
    pub fn now() -> Option<CpuTime> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        CpuTime::parse(stat.lines().next()?)
    }

    /// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: the first eight
    /// make the total (guest time is counted in user time already).
    fn parse(line: &str) -> Option<CpuTime> {
        let ticks: Vec<u64> = line
            .strip_prefix("cpu ")?
            .split_whitespace()
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        (ticks.len() == 8).then(|| CpuTime {
            total: ticks.iter().sum(),
            steal: ticks[7],
        })
    }

    /// The percentage of the CPU time since `earlier` that was stolen.
    pub fn steal_since(self, earlier: CpuTime) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        Some(100.0 * steal as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let earlier = CpuTime::parse("cpu  100 0 50 800 10 0 5 35 0 0").unwrap();
        assert_eq!(
            earlier,
            CpuTime {
                total: 1000,
                steal: 35
            }
        );
        let later = CpuTime::parse("cpu  200 0 100 1550 20 0 10 120 7 0").unwrap();
        assert_eq!(later.steal_since(earlier), Some(8.5));
        assert_eq!(earlier.steal_since(earlier), None, "no time passed");
        assert_eq!(
            CpuTime::parse("cpu0 1 2 3 4 5 6 7 8"),
            None,
            "one core's line"
        );
        assert_eq!(
            CpuTime::parse("cpu  1 2 3"),
            None,
            "an old kernel's short line"
        );
    }
}
