//! A child process for crash tests: writes to a store as fast as it can and reports every
//! acknowledged write on stdout, until it is killed.
//!
//! Usage: `crash-writer DIR SYNC THREADS PREFIX` where SYNC is `always`, `never` or an
//! interval in milliseconds. Each line is `ack KEY VALUE LSN`, printed only after the store
//! acknowledged the write, so the parent knows exactly what must survive.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use wasmkv::db::{Db, DbOptions, SetOptions};
use wasmkv::wal::SyncPolicy;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, sync, threads, prefix] = args.as_slice() else {
        bail!("usage: crash-writer DIR SYNC THREADS PREFIX");
    };
    let sync = match sync.as_str() {
        "always" => SyncPolicy::Always,
        "never" => SyncPolicy::Never,
        ms => SyncPolicy::Interval(Duration::from_millis(ms.parse().context("SYNC")?)),
    };
    let threads: usize = threads.parse().context("THREADS")?;
    let mut opts = DbOptions::new(dir, sync);
    // Small segments and frequent snapshots so kills also land in rotation and snapshotting.
    opts.wal.max_file_size = 64 << 10;
    opts.snapshot_after_bytes = 256 << 10;
    opts.disk_reserve = 0;
    let db = Arc::new(Db::open(opts)?);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("ready");
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (db, out, prefix) = (Arc::clone(&db), Arc::clone(&out), prefix.clone());
            std::thread::spawn(move || -> Result<()> {
                for i in 0u64.. {
                    let key = format!("{prefix}-t{t}-{i}");
                    let value = format!("v{i}-{}", "x".repeat((i % 50) as usize));
                    let lsn = db.set(
                        Bytes::from(key.clone()),
                        Bytes::from(value.clone()),
                        SetOptions::default(),
                    )?;
                    let mut out = out.lock().expect("stdout lock");
                    writeln!(out, "ack {key} {value} {lsn}")?;
                    out.flush()?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("writer thread")?;
    }
    Ok(())
}
