//! The offline tools: `wal verify`, `wal dump` and `repair` read a data directory's WAL with
//! no node running. They are what an operator reaches for when a node refuses to start on a
//! damaged log: `verify` says where the damage is and what a repair would cost, `dump` shows
//! what the log holds, `repair` cuts it. Only `repair` writes, and only with the data
//! directory's lock held, so it can never race a node.

use std::fs::{File, TryLockError};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use wasmkv::wal::{self, Command, Mutation, Record, VerifyReport};

use super::escape;

/// Where the WAL of what the operator named lives, and the data directory that holds its
/// lock (if there is one to check).
struct Located {
    wal_dir: PathBuf,
    data_dir: Option<PathBuf>,
}

/// `dir` is a data directory (its WAL is `dir/wal`) or a WAL directory itself (it holds
/// `*.wal` segments; its parent is then the data directory).
fn locate(dir: &Path) -> Result<Located> {
    let nested = dir.join("wal");
    if nested.is_dir() {
        return Ok(Located {
            wal_dir: nested,
            data_dir: Some(dir.to_owned()),
        });
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut has_segments = false;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.path().extension().is_some_and(|e| e == "wal") {
            has_segments = true;
            break;
        }
    }
    if !has_segments {
        bail!(
            "{} holds no WAL: expected a data directory (with a wal/ directory) or a directory \
             of *.wal segments",
            dir.display()
        );
    }
    Ok(Located {
        wal_dir: dir.to_owned(),
        data_dir: dir.parent().map(Path::to_owned),
    })
}

/// Who holds a data directory, as far as its `LOCK` file tells.
enum Lock {
    /// We hold it now (released when dropped); None when there is no lock file at all, which
    /// means no node ever opened the directory.
    Held(Option<File>),
    /// A running node holds it; the text is what it wrote there (its pid).
    Busy(String),
}

/// Try the lock a node takes on its data directory (see `db::dirlock`), without creating
/// anything: a tool must not leave files behind in a directory that may not be a node's.
fn try_lock(data_dir: &Path) -> Result<Lock> {
    let path = data_dir.join("LOCK");
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lock::Held(None)),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(Lock::Held(Some(file))),
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Ok(Lock::Busy(if holder.is_empty() {
                "another process".to_owned()
            } else {
                holder.to_owned()
            }))
        }
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Reading a log a node is writing is allowed (nothing is changed), but its last record may
/// be half written and show up as a torn tail: say so, so nobody repairs a healthy log.
fn warn_if_running(located: &Located) -> Result<()> {
    if let Some(data_dir) = &located.data_dir
        && let Lock::Busy(holder) = try_lock(data_dir)?
    {
        eprintln!(
            "note: a node is running on {} ({holder}); a record it is writing may show up as \
             a torn tail",
            data_dir.display()
        );
    }
    Ok(())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "N records, LSN a..b in K segments", the intact part of the log in one phrase.
fn summary(report: &VerifyReport) -> String {
    let segments = plural(report.segments as u64, "segment", "segments");
    if report.records == 0 {
        return format!("0 records in {segments}");
    }
    format!(
        "{}, LSN {}..{} in {segments}",
        plural(report.records, "record", "records"),
        report.first_lsn,
        report.last_lsn
    )
}

/// What the damage means for the operator, in one sentence.
fn consequence(damage: &wal::WalDamage, dir: &Path) -> String {
    if damage.torn_tail {
        "the WAL ends in a torn record (a crash interrupted a write); the node cuts it off by \
         itself at start-up"
            .to_owned()
    } else {
        format!(
            "the WAL is damaged: the node will not start on it; `wasmkv repair {}` cuts it at \
             the damage (every record from LSN {} on is lost)",
            dir.display(),
            damage.lsn
        )
    }
}

pub fn verify(dir: &Path) -> Result<ExitCode> {
    let located = locate(dir)?;
    warn_if_running(&located)?;
    let report = wal::verify(&located.wal_dir)?;
    match &report.damage {
        None => {
            println!("ok: {}", summary(&report));
            Ok(ExitCode::SUCCESS)
        }
        Some(damage) => {
            println!(
                "damaged: {} at offset {} (LSN {}): {}",
                damage.path.display(),
                damage.offset,
                damage.lsn,
                damage.reason
            );
            println!("intact before it: {}", summary(&report));
            eprintln!("error: {}", consequence(damage, dir));
            Ok(ExitCode::from(1))
        }
    }
}

pub fn dump(dir: &Path, from: Option<u64>, limit: Option<u64>, values: bool) -> Result<ExitCode> {
    let located = locate(dir)?;
    warn_if_running(&located)?;
    let report = wal::verify(&located.wal_dir)?;
    // --from is the first LSN printed; by default, the oldest the log still holds.
    let after = match from {
        Some(lsn) => lsn.saturating_sub(1),
        None => report.first_lsn.saturating_sub(1),
    };
    let reader = report.reader(after)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed = 0;
    for record in reader {
        if limit.is_some_and(|limit| printed >= limit) {
            break;
        }
        let written = write_record(&mut out, &record?, values);
        if let Err(e) = written.and_then(|()| out.flush()) {
            // `wasmkv wal dump | head` closes the pipe early: that is not a failure.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e).context("writing to stdout");
        }
        printed += 1;
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing to stdout");
        }
        _ => {}
    }
    let reached_end = limit.is_none_or(|limit| printed < limit);
    match &report.damage {
        Some(damage) if reached_end => {
            eprintln!(
                "error: the log stops being readable after LSN {}: {} at offset {}: {}; {}",
                report.last_lsn,
                damage.path.display(),
                damage.offset,
                damage.reason,
                consequence(damage, dir)
            );
            Ok(ExitCode::from(1))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// One line per change: `lsn=.. ts=.. op=set key=".." value=N bytes expires_at_ms=..`. A
/// batch prints one `op=batch.set` / `op=batch.delete` line per mutation, expiry and eviction
/// one line per key, all with the record's LSN and time.
fn write_record(out: &mut impl Write, record: &Record, values: bool) -> io::Result<()> {
    let when = UNIX_EPOCH + Duration::from_millis(record.timestamp_ms);
    let head = format!(
        "lsn={} ts={}",
        record.lsn,
        humantime::format_rfc3339_millis(when)
    );
    let set = |key: &[u8], value: &[u8], expires_at_ms: u64| {
        let value = if values {
            format!("\"{}\"", escape(value))
        } else {
            format!("{} bytes", value.len())
        };
        format!(
            "key=\"{}\" value={value} expires_at_ms={expires_at_ms}",
            escape(key)
        )
    };
    match &record.command {
        Command::Set {
            key,
            value,
            expires_at_ms,
        } => writeln!(out, "{head} op=set {}", set(key, value, *expires_at_ms)),
        Command::Delete { key } => writeln!(out, "{head} op=delete key=\"{}\"", escape(key)),
        Command::Batch(mutations) if mutations.is_empty() => {
            writeln!(out, "{head} op=batch (empty)")
        }
        Command::Batch(mutations) => mutations.iter().try_for_each(|m| match m {
            Mutation::Set {
                key,
                value,
                expires_at_ms,
            } => writeln!(
                out,
                "{head} op=batch.set {}",
                set(key, value, *expires_at_ms)
            ),
            Mutation::Delete { key } => {
                writeln!(out, "{head} op=batch.delete key=\"{}\"", escape(key))
            }
        }),
        Command::Expire(keys) => keys
            .iter()
            .try_for_each(|key| writeln!(out, "{head} op=expire key=\"{}\"", escape(key))),
        Command::Evict(keys) => keys
            .iter()
            .try_for_each(|key| writeln!(out, "{head} op=evict key=\"{}\"", escape(key))),
    }
}

pub fn repair(dir: &Path) -> Result<ExitCode> {
    let located = locate(dir)?;
    // Held until the repair is done, so a node cannot start on a log being cut.
    let _lock = match &located.data_dir {
        Some(data_dir) => match try_lock(data_dir)? {
            Lock::Held(file) => file,
            Lock::Busy(holder) => bail!(
                "the data directory {} is in use by a running node ({holder}); stop it before \
                 repairing its WAL",
                data_dir.display()
            ),
        },
        None => None,
    };
    let report = wal::repair(&located.wal_dir)
        .with_context(|| format!("repairing the WAL in {}", located.wal_dir.display()))?;
    match report.cut {
        None => println!(
            "nothing to repair: the WAL is intact up to LSN {}",
            report.last_lsn
        ),
        Some((path, offset, lsn)) => {
            println!(
                "cut {} at offset {offset}: records from LSN {lsn} on are gone",
                path.display()
            );
            for removed in &report.removed {
                println!("removed {}", removed.display());
            }
            println!("the WAL now ends at LSN {}", report.last_lsn);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn line(record: &Record, values: bool) -> String {
        let mut out = Vec::new();
        write_record(&mut out, record, values).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_print_one_line_per_change() {
        let set = Record {
            lsn: 7,
            timestamp_ms: 1_500,
            command: Command::Set {
                key: Bytes::from_static(b"user:\x01"),
                value: Bytes::from_static(b"hello"),
                expires_at_ms: 99,
            },
        };
        assert_eq!(
            line(&set, false),
            "lsn=7 ts=1970-01-01T00:00:01.500Z op=set key=\"user:\\x01\" value=5 bytes \
             expires_at_ms=99\n"
        );
        assert!(line(&set, true).contains(" value=\"hello\" "));
        let batch = Record {
            lsn: 8,
            timestamp_ms: 0,
            command: Command::Batch(vec![
                Mutation::Set {
                    key: Bytes::from_static(b"a"),
                    value: Bytes::new(),
                    expires_at_ms: 0,
                },
                Mutation::Delete {
                    key: Bytes::from_static(b"b"),
                },
            ]),
        };
        let text = line(&batch, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("op=batch.set key=\"a\" value=0 bytes expires_at_ms=0"));
        assert!(lines[1].ends_with("op=batch.delete key=\"b\""));
        let expire = Record {
            lsn: 9,
            timestamp_ms: 0,
            command: Command::Expire(vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")]),
        };
        assert_eq!(line(&expire, false).matches("op=expire").count(), 2);
    }
}
