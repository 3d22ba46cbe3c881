//! Storage and WAL figures: raw fdatasync rate, group-commit throughput, recovery time and
//! memory per key. Run by `cargo xtask bench` (which writes BENCHMARKS.md) or directly:
//! `cargo bench -p wasmkv --bench storage -- [--quick] [--write FILE]`.
//!
//! Memory per key is measured in a child process (this binary re-run with `--memory DIR`) so
//! the allocations of earlier phases do not blur the figure.

mod common;

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmkv::db::{Db, DbOptions, SetOptions};
use wasmkv::wal::{Command, SyncPolicy, Wal, WalOptions};

struct Scale {
    phase: Duration,
    keys: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--memory") {
        measure_memory_child(Path::new(&args[i + 1]));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let write_to = args
        .iter()
        .position(|a| a == "--write")
        .map(|i| PathBuf::from(&args[i + 1]));
    let scale = if quick {
        Scale {
            phase: Duration::from_millis(500),
            keys: 100_000,
        }
    } else {
        Scale {
            phase: Duration::from_secs(3),
            keys: 1_000_000,
        }
    };
    let base = tempfile::Builder::new()
        .prefix("wasmkv-bench")
        .tempdir_in(bench_dir())
        .expect("temp dir");
    let mut report = String::new();

    eprintln!("[1/3] fdatasync rate and group commit");
    let appended_rate = raw_fdatasync_rate(base.path(), scale.phase, false);
    let fsync_rate = raw_fdatasync_rate(base.path(), scale.phase, true);
    writeln!(
        report,
        "### WAL append with `sync: always` (group commit)\n"
    )
    .unwrap();
    writeln!(
        report,
        "Raw `write` + `fdatasync` of one 100-byte record at a time on this disk: \
         **{fsync_rate:.0} fsyncs/s** into preallocated space, as the WAL writes \
         ({appended_rate:.0}/s appending to the file, which makes each fdatasync record a new \
         size too).\n"
    )
    .unwrap();
    writeln!(
        report,
        "| writers | appends/s | records per fsync | ratio to raw fsync rate |\n|---:|---:|---:|---:|"
    )
    .unwrap();
    for writers in [1, 16, 64] {
        let (rate, per_fsync) = wal_append_rate(base.path(), writers, scale.phase);
        eprintln!("      {writers} writers: {rate:.0} appends/s, {per_fsync:.1} per fsync");
        writeln!(
            report,
            "| {writers} | {rate:.0} | {per_fsync:.1} | {:.1}× |",
            rate / fsync_rate
        )
        .unwrap();
    }

    eprintln!("[2/3] recovery of {} keys", scale.keys);
    let dir = base.path().join("recovery");
    let load = load_keys(&dir, scale.keys);
    let wal_only = time_open(&dir);
    {
        let db = open(&dir, SyncPolicy::Never);
        db.snapshot().expect("snapshot");
    }
    let from_snapshot = time_open(&dir);
    writeln!(
        report,
        "\n### Recovery ({} keys, 16-byte keys, 64-byte values)\n\n\
         | start-up from | time |\n|---|---:|\n\
         | WAL only ({} records) | {:.2} s |\n| snapshot | {:.2} s |\n\n\
         Loading them through `Db::set` from 4 threads with `sync: never` took {:.2} s \
         ({:.0} sets/s).\n",
        scale.keys,
        scale.keys,
        wal_only.as_secs_f64(),
        from_snapshot.as_secs_f64(),
        load.as_secs_f64(),
        scale.keys as f64 / load.as_secs_f64()
    )
    .unwrap();

    eprintln!("[3/3] memory per key");
    let child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--memory")
        .arg(&dir)
        .output()
        .expect("run memory child");
    let out = String::from_utf8_lossy(&child.stdout);
    writeln!(report, "### Memory per key\n\n{}", out.trim()).unwrap();

    println!("{report}");
    if let Some(path) = write_to.filter(|_| !quick) {
        write_benchmarks(&path, &report);
        eprintln!("wrote {}", path.display());
    }
}

/// Benchmarks run on the disk that holds the build (a tmpfs /tmp would flatter fsync).
fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// `preallocated`: write into space reserved beforehand (the WAL's way), else append.
fn raw_fdatasync_rate(dir: &Path, phase: Duration, preallocated: bool) -> f64 {
    let path = dir.join(format!("fsync-probe-{preallocated}"));
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("probe file");
    if preallocated {
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, 64 << 20)
            .expect("fallocate");
        file.sync_all().expect("fsync");
    }
    let record = [7u8; 100];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < phase {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `writers` threads each append-and-commit records in a loop for `phase`; returns the
/// aggregate appends/s and the records per fsync.
fn wal_append_rate(dir: &Path, writers: u64, phase: Duration) -> (f64, f64) {
    let dir = dir.join(format!("wal-{writers}"));
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        max_file_size: 64 << 20,
        ..WalOptions::default()
    };
    let wal = Arc::new(Wal::open(&dir, opts, 0, |_| {}).expect("open wal"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let (wal, stop, done) = (Arc::clone(&wal), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let command = Command::Set {
                        key: Bytes::from(format!("k{t:04}-{i:010}")),
                        value: Bytes::from(vec![b'v'; 64]),
                        expires_at_ms: 0,
                    };
                    let lsn = wal.append(0, &command).expect("append");
                    wal.commit(lsn).expect("commit");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let fsyncs_before = wal.stats().fsyncs;
    let started = Instant::now();
    let before = done.load(Ordering::Relaxed);
    std::thread::sleep(phase);
    let appends = done.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    let fsyncs = wal.stats().fsyncs - fsyncs_before;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("writer");
    }
    (
        appends as f64 / elapsed.as_secs_f64(),
        appends as f64 / fsyncs.max(1) as f64,
    )
}

fn open(dir: &Path, sync: SyncPolicy) -> Db {
    let mut opts = DbOptions::new(dir, sync);
    opts.snapshot_after_bytes = 0;
    opts.disk_reserve = 0;
    Db::open(opts).expect("open store")
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key:{i:012}"))
}

/// Load `n` keys (16-byte keys, 64-byte values) from 4 threads; returns the time taken.
fn load_keys(dir: &Path, n: u64) -> Duration {
    let db = Arc::new(open(dir, SyncPolicy::Never));
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    db.set(key(i), Bytes::from(vec![b'v'; 64]), SetOptions::default())
                        .expect("set");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("loader");
    }
    started.elapsed()
}

fn time_open(dir: &Path) -> Duration {
    let started = Instant::now();
    let db = open(dir, SyncPolicy::Never);
    let elapsed = started.elapsed();
    drop(db);
    elapsed
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("rss field");
    pages * 4096
}

/// Child mode: open the store in `dir` (from its snapshot) and report RSS growth per key.
fn measure_memory_child(dir: &Path) {
    let before = rss_bytes();
    let db = open(dir, SyncPolicy::Never);
    let after = rss_bytes();
    let stats = db.stats();
    let keys = stats.keys.max(1);
    println!(
        "| measure | bytes per key |\n|---|---:|\n\
         | process RSS growth / keys ({keys} keys, loaded from snapshot) | {:.0} |\n\
         | the store's own accounting (`storage::entry_cost`) | {:.0} |\n\
         | payload (16-byte key + 64-byte value) | 80 |",
        (after - before) as f64 / keys as f64,
        stats.memory_bytes as f64 / keys as f64,
    );
}

fn write_benchmarks(path: &Path, report: &str) {
    common::write_section(
        path,
        "storage-bench",
        "Storage engine and WAL",
        "host/benches/storage.rs",
        report,
    );
}
