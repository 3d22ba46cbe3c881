//! Running the tools the benchmarks drive, in a way that can be shown: every command is built
//! once and both executed and printed from that one description, so the commands listed in
//! BENCHMARKS.md are exactly the ones that ran (with `$PORT`, `$DIR` and friends standing for
//! what changes between runs). Servers are held by guards that stop them on drop, so an error
//! or a panic half-way never leaves a process behind.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

/// A command and how it is shown.
pub struct Cmd {
    cmd: Command,
    shown_env: Vec<String>,
    shown: Vec<String>,
}

impl Cmd {
    /// `program` runs; `shown` names it in the printed command (e.g. `wasmkv` for the full path).
    pub fn new(program: impl AsRef<OsStr>, shown: &str) -> Cmd {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        Cmd {
            cmd,
            shown_env: Vec::new(),
            shown: vec![shown.to_owned()],
        }
    }

    /// An argument shown as it is.
    pub fn arg(&mut self, arg: impl AsRef<str>) -> &mut Cmd {
        let arg = arg.as_ref();
        self.cmd.arg(arg);
        self.shown.push(quote(arg));
        self
    }

    pub fn args<S: AsRef<str>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Cmd {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// An argument that changes from run to run (a port, a temp dir), shown as `shown`.
    pub fn arg_as(&mut self, arg: impl AsRef<OsStr>, shown: &str) -> &mut Cmd {
        self.cmd.arg(arg);
        self.shown.push(shown.to_owned());
        self
    }

    /// An environment variable shown as it is.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Cmd {
        self.env_as(key, value, value)
    }

    /// An environment variable whose value changes from run to run, shown as `shown`.
    pub fn env_as(&mut self, key: &str, value: impl AsRef<OsStr>, shown: &str) -> &mut Cmd {
        self.cmd.env(key, value);
        self.shown_env.push(format!("{key}={shown}"));
        self
    }

    pub fn shown(&self) -> String {
        let mut words = self.shown_env.clone();
        words.extend(self.shown.iter().cloned());
        words.join(" ")
    }

    /// Run to completion and return stdout; a failure carries stderr. A run still going
    /// after [`RUN_LIMIT`] is killed and is an error.
    pub fn output(&mut self) -> Result<String> {
        self.output_within(RUN_LIMIT)
    }

    /// [`Cmd::output`] of a run whose standard input `feed` writes, on a thread of its own
    /// (the input ends when `feed` returns).
    pub fn output_fed(
        &mut self,
        feed: impl FnOnce(ChildStdin) -> std::io::Result<()> + Send + 'static,
    ) -> Result<String> {
        self.run(RUN_LIMIT, Some(Box::new(feed)))
    }

    /// [`Cmd::output`] with the run killed (and an error) once it has taken `limit`.
    pub fn output_within(&mut self, limit: Duration) -> Result<String> {
        self.run(limit, None)
    }

    fn run(&mut self, limit: Duration, feed: Option<Feed>) -> Result<String> {
        if feed.is_some() {
            self.cmd.stdin(Stdio::piped());
        }
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut self.cmd);
        let mut child = self
            .cmd
            .spawn()
            .with_context(|| format!("could not start: {}", self.shown()))?;
        let fed = match (feed, child.stdin.take()) {
            (Some(feed), Some(stdin)) => Some(std::thread::spawn(move || feed(stdin))),
            _ => None,
        };
        // Read while it runs, so that a full pipe never stops it.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` did not finish within {limit:?}; killed (is the server it drives \
                     still up?)",
                    self.shown()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = |pipe: JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&pipe.join().unwrap_or_default()).into_owned()
        };
        let (stdout, stderr) = (text(stdout), text(stderr));
        if !status.success() {
            bail!(
                "`{}` failed ({status}): {}{}",
                self.shown(),
                stderr.trim(),
                stdout.trim()
            );
        }
        if let Some(fed) = fed {
            fed.join()
                .map_err(|_| anyhow::anyhow!("feeding `{}` panicked", self.shown()))?
                .with_context(|| format!("feeding `{}`", self.shown()))?;
        }
        Ok(stdout)
    }

    /// Start as a server whose output goes to `log` (kept in its temp dir for post-mortems).
    pub fn spawn_logged(&mut self, log: &Path) -> Result<Process> {
        let file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        self.cmd.stdout(file.try_clone()?).stderr(file);
        die_with_parent(&mut self.cmd);
        let child = self
            .cmd
            .spawn()
            .with_context(|| format!("could not start: {}", self.shown()))?;
        Ok(Process {
            child,
            log: log.to_owned(),
        })
    }
}

/// What writes a run's standard input.
type Feed = Box<dyn FnOnce(ChildStdin) -> std::io::Result<()> + Send>;

/// The longest one run of a tool may take. Every run of the bench lasts seconds, so one still
/// going after this has hung (redis-benchmark, for one, retries a server that is gone forever,
/// at full CPU), and the bench stops with an error instead of never ending.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Have the kernel send `cmd`'s process SIGTERM when the xtask dies: the drop guards cannot
/// run if the xtask itself is killed (a cancelled CI job).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure only makes one prctl system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
}

/// Read `pipe` to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn quote(arg: &str) -> String {
    if arg.is_empty() {
        "\"\"".into()
    } else if arg.contains([' ', '\'', '"', '*']) {
        format!("'{arg}'")
    } else {
        arg.into()
    }
}

/// A server process: SIGTERM then SIGKILL when dropped, whatever happened before.
pub struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The last lines of the server's output, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Resident set size from /proc (the kernel's own count, same method for both servers).
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.pid() as i32) {
            let _ = kill_process(pid, signal);
        }
    }

    /// Wait for the process to exit on its own (after a SIGTERM or SHUTDOWN); SIGKILL and an
    /// error if it takes longer than `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.signal(Signal::KILL);
                self.child.wait()?;
                bail!("did not stop within {timeout:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait: the clean stop for wasmkv, and a safe one for Redis.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::TERM);
        self.wait(Duration::from_secs(30))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::TERM);
            if self.wait(Duration::from_secs(10)).is_err() {
                eprintln!("      (a server ignored SIGTERM and was killed)");
            }
        }
    }
}

/// Whether a program is on PATH (without running it: some, like `wrk -v`, exit non-zero).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_run_returns_its_output_and_a_failure_says_why() {
        let out = Cmd::new("sh", "sh").args(["-c", "echo out"]).output();
        assert_eq!(out.unwrap(), "out\n");
        let err = Cmd::new("sh", "sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .output()
            .unwrap_err()
            .to_string();
        assert!(err.contains("failed") && err.contains("oops"), "{err}");
    }

    #[test]
    fn a_fed_run_reads_all_its_input() {
        let lines = Cmd::new("wc", "wc")
            .arg("-l")
            .output_fed(|mut stdin| {
                for _ in 0..100_000 {
                    stdin.write_all(b"a line\n")?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(lines.trim(), "100000");
    }

    #[test]
    fn a_run_past_its_limit_is_killed_and_is_an_error() {
        let started = Instant::now();
        let err = Cmd::new("sleep", "sleep")
            .arg("60")
            .output_within(Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sleep 60` did not finish within 200ms; killed"),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it was not killed"
        );
    }
}
