//! wasmkv as an embedded, durable store: the tour `cargo xtask demo` runs.
//!
//! It opens a store in a fresh directory, writes, reads, uses TTLs, compare-and-set and an
//! atomic batch, "crashes" (drops the store without a snapshot) and recovers from the WAL,
//! snapshots, and recovers again from the snapshot. `--exit` ends after the tour; otherwise it
//! waits for Ctrl-C (Enter) so the data directory can be looked at.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use wasmkv::db::{Db, DbOptions, SetOptions};
use wasmkv::wal::{Mutation, SyncPolicy};

fn step(what: &str) {
    println!("\n--> {what}");
}

fn open(dir: &std::path::Path) -> Result<Db> {
    let mut opts = DbOptions::new(dir, SyncPolicy::Always);
    opts.disk_reserve = 0;
    Db::open(opts).context("open the store")
}

fn show(db: &Db, key: &str) {
    match db.get(key.as_bytes()) {
        Some(item) => println!(
            "    get {key:<10} = {:?} (version {}{})",
            String::from_utf8_lossy(&item.value),
            item.version,
            if item.expires_at_ms > 0 {
                ", has a TTL"
            } else {
                ""
            }
        ),
        None => println!("    get {key:<10} = (not found)"),
    }
}

fn main() -> Result<()> {
    let exit = std::env::args().any(|a| a == "--exit");
    let dir = tempfile::tempdir().context("temp dir")?;
    let data = dir.path().join("data");
    println!("wasmkv embedded tour — data directory {}", data.display());

    step("open a store with sync: always (every acknowledged write is fsynced)");
    let db = open(&data)?;
    let v1 = db.set(b("greeting"), b("hello"), SetOptions::default())?;
    println!("    set greeting = \"hello\" -> LSN {v1}");
    show(&db, "greeting");

    step("compare-and-set: only replace the version we read");
    let v2 = db.set(
        b("greeting"),
        b("hello, world"),
        SetOptions {
            if_version: Some(v1),
            ..SetOptions::default()
        },
    )?;
    println!("    set greeting if_version={v1} -> LSN {v2}");
    let stale = db.set(
        b("greeting"),
        b("lost update"),
        SetOptions {
            if_version: Some(v1),
            ..SetOptions::default()
        },
    );
    println!(
        "    set greeting if_version={v1} again -> {}",
        stale.unwrap_err()
    );

    step("an atomic batch: one WAL record, all or nothing");
    let lsn = db.write(vec![
        Mutation::Set {
            key: b("user:1"),
            value: b("ada"),
            expires_at_ms: 0,
        },
        Mutation::Set {
            key: b("user:2"),
            value: b("grace"),
            expires_at_ms: 0,
        },
    ])?;
    println!("    batch of 2 sets -> LSN {lsn}");

    step("a key with a 300 ms TTL");
    db.set(
        b("session"),
        b("token"),
        SetOptions::ttl(Duration::from_millis(300)),
    )?;
    show(&db, "session");
    std::thread::sleep(Duration::from_millis(350));
    show(&db, "session");

    step("crash: drop the store without a snapshot, then recover from the WAL");
    let before = db.digest();
    drop(db);
    let db = open(&data)?;
    let rec = db.recovery();
    println!(
        "    replayed {} WAL records; digest {} ({})",
        rec.replayed_records,
        hex(&db.digest().digest),
        if db.digest().digest == before.digest {
            "same as before the crash"
        } else {
            "DIFFERENT"
        }
    );
    for key in ["greeting", "user:1", "user:2", "session"] {
        show(&db, key);
    }

    step("snapshot, then recover from it");
    let snap = db.snapshot()?;
    println!(
        "    snapshot at LSN {} with {} entries",
        snap.lsn, snap.entries
    );
    drop(db);
    let db = open(&data)?;
    let rec = db.recovery();
    println!(
        "    loaded {} entries from the snapshot, replayed {} records after it",
        rec.snapshot_entries, rec.replayed_records
    );
    let stats = db.stats();
    println!(
        "    {} keys, {} bytes accounted, WAL {} bytes in {} segment(s), {} fsyncs",
        stats.keys, stats.memory_bytes, stats.wal.bytes, stats.wal.segments, stats.wal.fsyncs
    );

    if !exit {
        println!(
            "\nThe tour is done. Press Enter (or Ctrl-C) to remove the data directory and exit."
        );
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    Ok(())
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
