//! Properties of the durable store, through its public API only: snapshot + replay, expiry,
//! eviction and limits, compare-and-set, batches, the log reader, the directory lock.
//!
//! Every test gets its own temporary directory and waits with deadlines, never bare sleeps.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmkv::clock::now_ms;
use wasmkv::db::{Db, DbError, DbOptions, ErrorKind, SetOptions};
use wasmkv::storage::{Item, builtin_policy};
use wasmkv::wal::{Command, Mutation, Record, SyncPolicy, WalError};
use wasmkv_tests::wait_for;

const WAIT: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3_600);

fn options(dir: &Path) -> DbOptions {
    let mut opts = DbOptions::new(dir, SyncPolicy::Never);
    opts.disk_reserve = 0;
    opts
}

fn open(opts: &DbOptions) -> Db {
    Db::open(opts.clone()).expect("open the store")
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:05}"))
}

fn set(db: &Db, key: Bytes, value: &str) -> u64 {
    db.set(
        key,
        Bytes::copy_from_slice(value.as_bytes()),
        SetOptions::default(),
    )
    .expect("set")
}

/// Every record after `after`, read back from the log files.
fn log(db: &Db, after: u64) -> Vec<Record> {
    db.read_log(after)
        .expect("read the log")
        .collect::<Result<_, _>>()
        .expect("intact log records")
}

/// First LSNs of the WAL segment files on disk, oldest first.
fn segment_lsns(dir: &Path) -> Vec<u64> {
    let mut lsns: Vec<u64> = std::fs::read_dir(dir.join("wal"))
        .expect("list wal/")
        .filter_map(|entry| {
            let name = entry.expect("dir entry").file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse().ok()
        })
        .collect();
    lsns.sort_unstable();
    lsns
}

/// Names of the snapshot files on disk.
fn snapshot_files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("snap")) {
        Ok(entries) => entries
            .map(|e| e.expect("dir entry").file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".snap"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The live items of `keys`, read one by one: beside the digest (which leaves versions out),
/// a view that also compares versions and expiry times.
fn contents(db: &Db, keys: impl IntoIterator<Item = Bytes>) -> HashMap<Bytes, Item> {
    keys.into_iter()
        .filter_map(|k| db.get(&k).map(|item| (k, item)))
        .collect()
}

/// Keys that `Evict` records in `records` name, in total.
fn evicted_in_log(records: &[Record]) -> u64 {
    records
        .iter()
        .map(|r| match &r.command {
            Command::Evict(keys) => keys.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Keys written by [`churn`] come from this many.
const CHURN_KEYS: u64 = 400;

/// One writer's random mix of sets, deletes and two-to-four-mutation batches over a key space
/// shared with the other writers, until `ops` writes are done or `stop` is set.
fn churn(db: &Db, seed: u64, ops: usize, stop: &AtomicBool) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let value = |rng: &mut fastrand::Rng| {
        let len = rng.usize(0..64);
        Bytes::from(format!("{seed}-{}", rng.alphanumeric()).repeat(len / 8 + 1))
    };
    for _ in 0..ops {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = key(rng.u64(..CHURN_KEYS));
        match rng.u8(..10) {
            0..=5 => {
                let v = value(&mut rng);
                db.set(k, v, SetOptions::default()).expect("set");
            }
            6..=7 => {
                db.delete(k).expect("delete");
            }
            _ => {
                let mut batch = vec![Mutation::Set {
                    key: k,
                    value: value(&mut rng),
                    expires_at_ms: 0,
                }];
                for _ in 0..rng.usize(1..4) {
                    let k = key(rng.u64(..CHURN_KEYS));
                    batch.push(if rng.bool() {
                        Mutation::Delete { key: k }
                    } else {
                        Mutation::Set {
                            key: k,
                            value: value(&mut rng),
                            expires_at_ms: 0,
                        }
                    });
                }
                db.write(batch).expect("batch");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1, 2: snapshot + replay
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshots_taken_during_concurrent_writes_plus_replay_equal_a_store_that_never_restarted() {
    const WRITERS: u64 = 4;
    const OPS: usize = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.wal.max_file_size = 16 << 10;
    let db = open(&opts);
    let stop = AtomicBool::new(false);
    let finished = AtomicUsize::new(0);
    let mut snapshots = Vec::new();
    thread::scope(|s| {
        for t in 0..WRITERS {
            let (db, stop, finished) = (&db, &stop, &finished);
            s.spawn(move || {
                churn(db, t, OPS, stop);
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Writers produce ~9_000 records (deletes of missing keys log nothing): snapshot at
        // 1/8 .. 5/8 of that, so every snapshot races the writers and some log follows the last.
        for round in 1..=5u64 {
            let target = round * 9_000 / 8;
            wait_for("the writers to make progress", WAIT, || {
                db.applied_lsn() >= target || finished.load(Ordering::SeqCst) == WRITERS as usize
            });
            snapshots.push(db.snapshot().expect("snapshot"));
        }
    });
    let last = *snapshots.last().unwrap();
    assert!(
        snapshots.windows(2).all(|w| w[0].lsn <= w[1].lsn),
        "snapshot LSNs go backwards: {snapshots:?}"
    );
    assert!(last.lsn > 0);

    let before = db.digest();
    let applied = db.applied_lsn();
    assert_eq!(before.lsn, applied);
    assert!(
        applied > last.lsn,
        "the writers finished before the last snapshot ({last:?}, applied {applied}): no replay"
    );
    let stored = db.stats().keys;
    let items = contents(&db, (0..CHURN_KEYS).map(key));
    assert_eq!(items.len() as u64, before.keys);

    // Snapshots dropped what they made redundant, but nothing recovery needs.
    let segments = segment_lsns(dir.path());
    assert!(
        segments[0] > 1,
        "no WAL segment was removed after {} snapshots (segments start at {segments:?})",
        snapshots.len()
    );
    assert!(
        segments[0] <= last.lsn + 1,
        "segments from {} on are left, but the newest snapshot is at LSN {}: records {}..{} are \
         lost",
        segments[0],
        last.lsn,
        last.lsn + 1,
        segments[0] - 1
    );
    assert_eq!(db.stats().wal.segments, segments.len() as u64);
    assert_eq!(
        snapshot_files(dir.path()).len(),
        1,
        "older snapshots are removed"
    );
    drop(db);

    let db = open(&opts);
    let report = db.recovery();
    assert_eq!(
        report.snapshot_lsn, last.lsn,
        "the newest snapshot is loaded"
    );
    assert_eq!(report.replayed_records, applied - last.lsn);
    assert_eq!(db.applied_lsn(), applied);
    let after = db.digest();
    assert_eq!((after.digest, after.keys), (before.digest, before.keys));
    assert_eq!(db.stats().keys, stored);
    assert_eq!(contents(&db, (0..CHURN_KEYS).map(key)), items);
}

#[test]
fn automatic_snapshots_plus_replay_equal_a_store_that_never_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.wal.max_file_size = 16 << 10;
    opts.snapshot_after_bytes = 64 << 10;
    let db = open(&opts);
    let stop = AtomicBool::new(false);
    let mut snapshot_lsn = 0;
    thread::scope(|s| {
        for t in 0..4 {
            let (db, stop) = (&db, &stop);
            s.spawn(move || churn(db, 100 + t, usize::MAX, stop));
        }
        wait_for("an automatic snapshot", WAIT, || {
            snapshot_lsn = db.stats().snapshot_lsn;
            snapshot_lsn > 0
        });
        // Write on after it, so recovery needs both the snapshot and the log behind it.
        wait_for("writes after the snapshot", WAIT, || {
            db.applied_lsn() > snapshot_lsn + 500
        });
        stop.store(true, Ordering::Relaxed);
    });
    wait_for("the snapshot to remove old segments", WAIT, || {
        segment_lsns(dir.path())[0] > 1
    });
    let before = db.digest();
    let applied = db.applied_lsn();
    let items = contents(&db, (0..CHURN_KEYS).map(key));
    drop(db);

    let db = open(&opts);
    let report = db.recovery();
    assert!(report.snapshot_lsn >= snapshot_lsn, "{report:?}");
    assert!(report.snapshot_entries > 0, "{report:?}");
    assert_eq!(db.applied_lsn(), applied);
    let after = db.digest();
    assert_eq!((after.digest, after.keys), (before.digest, before.keys));
    assert_eq!(contents(&db, (0..CHURN_KEYS).map(key)), items);
}

// ---------------------------------------------------------------------------------------------
// 3: TTL
// ---------------------------------------------------------------------------------------------

#[test]
fn an_expired_key_is_never_returned_even_before_it_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.active_expiry = false;
    let db = open(&opts);
    let plain = set(&db, key(0), "forever");

    // Already expired when written: hidden at once, though stored.
    let past = SetOptions {
        expires_at_ms: now_ms() - 1_000,
        if_version: None,
    };
    db.set(key(1), Bytes::from_static(b"stale"), past).unwrap();
    assert_eq!(db.get(&key(1)), None);

    // Expires while we watch.
    let ttl = SetOptions::ttl(Duration::from_millis(300));
    let version = db
        .set(key(2), Bytes::from_static(b"short"), ttl)
        .expect("set with ttl");
    let item = db.get(&key(2));
    // Checked only when the read surely happened before the expiry (slow machines).
    if now_ms() < ttl.expires_at_ms {
        let item = item.expect("an unexpired key is readable");
        assert_eq!(
            (item.version, item.expires_at_ms),
            (version, ttl.expires_at_ms)
        );
    }
    wait_for("the TTL to pass", WAIT, || now_ms() >= ttl.expires_at_ms);
    assert_eq!(db.get(&key(2)), None, "expired at {}", ttl.expires_at_ms);

    let stats = db.stats();
    assert_eq!(stats.keys, 3, "expired keys stay stored until deleted");
    assert_eq!(stats.expired_keys, 0);
    assert_eq!(db.digest().keys, 1, "the digest only counts live keys");
    let item = db.get(&key(0)).expect("a key without TTL never expires");
    assert_eq!((item.version, item.expires_at_ms), (plain, 0));
}

#[test]
fn expire_now_deletes_expired_keys_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.active_expiry = false;
    let db = open(&opts);
    let past = SetOptions {
        expires_at_ms: now_ms() - 1,
        if_version: None,
    };
    for i in 0..20 {
        db.set(key(i), Bytes::from_static(b"stale"), past).unwrap();
    }
    for i in 20..30 {
        set(&db, key(i), "no ttl");
    }
    let far = SetOptions::ttl(HOUR);
    for i in 30..40 {
        db.set(key(i), Bytes::from_static(b"later"), far).unwrap();
    }
    assert_eq!(db.stats().keys, 40);

    assert_eq!(db.expire_now().expect("expire"), 20);
    let stats = db.stats();
    assert_eq!((stats.keys, stats.expired_keys), (20, 20));
    for i in 0..20 {
        assert_eq!(db.get(&key(i)), None);
    }
    for i in 20..40 {
        assert!(db.get(&key(i)).is_some(), "key {i} was deleted");
    }
    assert_eq!(
        db.expire_now().expect("expire"),
        0,
        "nothing left to expire"
    );
}

#[test]
fn the_background_thread_deletes_expired_keys_without_expire_now() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    assert!(opts.active_expiry);
    let db = open(&opts);
    for i in 0..10 {
        set(&db, key(i), "no ttl");
    }
    let soon = SetOptions::ttl(Duration::from_millis(50));
    for i in 10..60 {
        db.set(key(i), Bytes::from_static(b"short"), soon).unwrap();
    }
    wait_for("background expiry", WAIT, || db.stats().keys == 10);
    assert_eq!(db.stats().expired_keys, 50);
    for i in 0..10 {
        assert!(db.get(&key(i)).is_some(), "key {i} without TTL was deleted");
    }
}

#[test]
fn expiry_is_logged_and_an_expired_key_stays_gone_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.active_expiry = false;
    let db = open(&opts);
    set(&db, key(0), "kept");
    let past = SetOptions {
        expires_at_ms: now_ms() - 1,
        if_version: None,
    };
    db.set(key(1), Bytes::from_static(b"stale"), past).unwrap();
    assert_eq!(db.expire_now().unwrap(), 1);
    let records = log(&db, 0);
    assert!(
        records
            .iter()
            .any(|r| r.command == Command::Expire(vec![key(1)])),
        "no Expire record for the expired key: {records:?}"
    );
    let applied = db.applied_lsn();
    drop(db);

    // Without active expiry on reopen, only the logged Expire can have removed the key.
    let db = open(&opts);
    assert_eq!(db.applied_lsn(), applied);
    assert_eq!(db.get(&key(1)), None);
    assert_eq!(db.stats().keys, 1, "the expired key came back into memory");
    assert!(db.get(&key(0)).is_some());
}

// ---------------------------------------------------------------------------------------------
// 4, 5, 6: limits and eviction
// ---------------------------------------------------------------------------------------------

/// Four threads write `total` distinct keys while a side thread samples the stats; every write
/// must succeed and `within` must hold after each write and at every sample.
fn flood(db: &Db, total: u64, expires_at_ms: u64, within: &(dyn Fn(&Db) -> bool + Sync)) {
    let done = AtomicBool::new(false);
    let samples = AtomicU64::new(0);
    thread::scope(|s| {
        let sampler = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                assert!(within(db), "limit exceeded: {:?}", db.stats());
                samples.fetch_add(1, Ordering::Relaxed);
                thread::yield_now();
            }
        });
        let writers: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    for i in (t..total).step_by(4) {
                        let value = Bytes::from(format!("value-{i:032}"));
                        let opts = SetOptions {
                            expires_at_ms,
                            if_version: None,
                        };
                        if let Err(e) = db.set(key(i), value, opts) {
                            panic!("set {i} failed: {e}");
                        }
                        assert!(within(db), "limit exceeded: {:?}", db.stats());
                    }
                })
            })
            .collect();
        for writer in writers {
            if let Err(panic) = writer.join() {
                done.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(panic);
            }
        }
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
    });
    assert!(samples.load(Ordering::Relaxed) > 0);
}

/// Floods a store limited by `limit` under each evicting policy; checks the limit holds
/// throughout, that evictions are logged, and that a restart keeps the same data.
fn eviction_keeps_the_store_within(
    limit: impl Fn(&mut DbOptions),
    within: &(dyn Fn(&Db) -> bool + Sync),
) {
    for policy in ["lru", "lfu", "volatile-ttl"] {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        limit(&mut opts);
        opts.eviction_policy = builtin_policy(policy).unwrap();
        let db = open(&opts);
        let expires_at_ms = if policy == "volatile-ttl" {
            now_ms() + HOUR.as_millis() as u64
        } else {
            0
        };
        flood(&db, 5_000, expires_at_ms, within);
        assert!(within(&db), "{policy}: {:?}", db.stats());
        let stats = db.stats();
        assert!(stats.evicted_keys > 0, "{policy}: nothing evicted");
        assert_eq!(
            stats.keys + stats.evicted_keys,
            5_000,
            "{policy}: keys were lost other than by eviction"
        );
        assert_eq!(
            evicted_in_log(&log(&db, 0)),
            stats.evicted_keys,
            "{policy}: every eviction is an Evict record in the log"
        );
        let digest = db.digest();
        drop(db);
        let db = open(&opts);
        assert_eq!(db.stats().keys, stats.keys, "{policy}");
        assert_eq!(db.digest().digest, digest.digest, "{policy}");
        assert!(within(&db), "{policy}: {:?}", db.stats());
    }
}

#[test]
fn eviction_keeps_the_entry_count_within_max_entries_under_concurrent_writers() {
    eviction_keeps_the_store_within(|opts| opts.max_entries = 1_000, &|db| {
        db.stats().keys <= 1_000
    });
}

#[test]
fn eviction_keeps_memory_within_max_memory_under_concurrent_writers() {
    const MAX: u64 = 200 << 10;
    eviction_keeps_the_store_within(|opts| opts.max_memory = MAX, &|db| {
        db.stats().memory_bytes <= MAX
    });
}

#[test]
fn noeviction_refuses_new_keys_at_the_limit_but_allows_overwrites_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_entries = 100;
    opts.eviction_policy = builtin_policy("noeviction").unwrap();
    let db = open(&opts);
    for i in 0..100 {
        set(&db, key(i), "value-0");
    }
    let applied = db.applied_lsn();
    let err = db
        .set(
            key(100),
            Bytes::from_static(b"value-0"),
            SetOptions::default(),
        )
        .expect_err("the 101st key must not fit");
    assert!(matches!(err, DbError::LimitReached(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    let message = err.to_string();
    assert!(
        message.contains("noeviction")
            && message.contains("delete keys")
            && message.contains("max_entries"),
        "the message does not say what to do: {message}"
    );
    assert_eq!(db.get(&key(100)), None);
    assert_eq!(db.applied_lsn(), applied, "a refused write logs nothing");
    assert_eq!(db.stats().evicted_keys, 0);

    let version = set(&db, key(7), "value-1");
    assert_eq!(db.get(&key(7)).unwrap().version, version);
    assert!(db.delete(key(8)).unwrap().found);
    assert_eq!(db.stats().keys, 99);
    set(&db, key(100), "value-0");
    assert_eq!(db.stats().keys, 100);
    let err = db
        .set(
            key(101),
            Bytes::from_static(b"value-0"),
            SetOptions::default(),
        )
        .expect_err("full again");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
}

/// Waits until the coarse access clock (10 ms ticks) has surely moved on.
fn next_access_tick() {
    let start = Instant::now();
    wait_for("the access clock to tick", WAIT, || {
        start.elapsed() >= Duration::from_millis(30)
    });
}

#[test]
fn lru_eviction_keeps_recently_read_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_entries = 1_000;
    let db = open(&opts);
    for i in 0..1_000 {
        set(&db, key(i), "value");
    }
    next_access_tick();
    for _ in 0..3 {
        for i in 0..500 {
            assert!(db.get(&key(i)).is_some());
        }
    }
    next_access_tick();
    for i in 1_000..1_200 {
        set(&db, key(i), "value");
    }
    assert_eq!(db.stats().keys, 1_000);
    assert_eq!(db.stats().evicted_keys, 200);
    let hot = (0..500).filter(|&i| db.get(&key(i)).is_some()).count();
    let fresh = (1_000..1_200)
        .filter(|&i| db.get(&key(i)).is_some())
        .count();
    assert!(hot >= 450, "only {hot} of 500 recently read keys survived");
    assert!(
        fresh >= 180,
        "only {fresh} of 200 just written keys survived"
    );
}

// ---------------------------------------------------------------------------------------------
// 7, 8, 9: compare-and-set, batches, deletes
// ---------------------------------------------------------------------------------------------

fn cas(version: u64) -> SetOptions {
    SetOptions {
        expires_at_ms: 0,
        if_version: Some(version),
    }
}

fn assert_mismatch(result: Result<u64, DbError>, expected: u64, found: &str) {
    let err = result.expect_err("compare-and-set must fail");
    assert!(
        matches!(err, DbError::VersionMismatch { expected: e, .. } if e == expected),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Aborted);
    let message = err.to_string();
    assert!(
        message.contains(&format!("expected {expected}")) && message.contains(found),
        "message should name expected {expected} and found {found:?}: {message}"
    );
}

#[test]
fn compare_and_set_applies_only_at_the_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.active_expiry = false;
    let db = open(&opts);
    let k = key(1);
    let v1 = db
        .set(k.clone(), Bytes::from_static(b"one"), cas(0))
        .expect("if_version 0 creates a missing key");
    assert_eq!(db.get(&k).unwrap().version, v1);
    let applied = db.applied_lsn();
    assert_mismatch(
        db.set(k.clone(), Bytes::from_static(b"two"), cas(0)),
        0,
        &format!("found version {v1}"),
    );
    assert_eq!(
        db.applied_lsn(),
        applied,
        "a failed compare-and-set logs nothing"
    );

    let v2 = db
        .set(k.clone(), Bytes::from_static(b"two"), cas(v1))
        .expect("the current version matches");
    assert!(v2 > v1);
    assert_mismatch(
        db.set(k.clone(), Bytes::from_static(b"three"), cas(v1)),
        v1,
        &format!("found version {v2}"),
    );
    let item = db.get(&k).unwrap();
    assert_eq!((item.value.as_ref(), item.version), (&b"two"[..], v2));

    assert_mismatch(
        db.set(key(2), Bytes::from_static(b"x"), cas(v2)),
        v2,
        "found no such key",
    );
    assert_eq!(db.get(&key(2)), None);

    // An expired key counts as absent, even while it is still stored.
    let past = SetOptions {
        expires_at_ms: now_ms() - 1,
        if_version: None,
    };
    let stale = db.set(key(3), Bytes::from_static(b"old"), past).unwrap();
    assert_mismatch(
        db.set(key(3), Bytes::from_static(b"x"), cas(stale)),
        stale,
        "found no such key",
    );
    let v3 = db
        .set(key(3), Bytes::from_static(b"new"), cas(0))
        .expect("an expired key is absent for if_version 0");
    let item = db.get(&key(3)).unwrap();
    assert_eq!(
        (item.value.as_ref(), item.version, item.expires_at_ms),
        (&b"new"[..], v3, 0)
    );
}

#[test]
fn a_batch_applies_all_its_mutations_as_one_logged_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let db = open(&opts);
    set(&db, key(3), "doomed");
    set(&db, key(1), "old");
    let before = db.applied_lsn();
    let far = now_ms() + HOUR.as_millis() as u64;
    let batch = vec![
        Mutation::Set {
            key: key(1),
            value: Bytes::from_static(b"a"),
            expires_at_ms: 0,
        },
        Mutation::Set {
            key: key(2),
            value: Bytes::from_static(b"b"),
            expires_at_ms: far,
        },
        Mutation::Delete { key: key(3) },
        Mutation::Set {
            key: key(4),
            value: Bytes::from_static(b"first"),
            expires_at_ms: 0,
        },
        Mutation::Delete { key: key(4) },
        Mutation::Set {
            key: key(5),
            value: Bytes::from_static(b"c"),
            expires_at_ms: 0,
        },
    ];
    let lsn = db.write(batch.clone()).expect("batch");
    assert_eq!(lsn, before + 1, "a batch takes one LSN");
    assert_eq!(db.applied_lsn(), lsn);

    let check = |db: &Db| {
        let got = |i| {
            db.get(&key(i))
                .map(|it| (it.value, it.version, it.expires_at_ms))
        };
        assert_eq!(got(1), Some((Bytes::from_static(b"a"), lsn, 0)));
        assert_eq!(got(2), Some((Bytes::from_static(b"b"), lsn, far)));
        assert_eq!(got(3), None);
        assert_eq!(got(4), None, "later mutations of a batch win");
        assert_eq!(got(5), Some((Bytes::from_static(b"c"), lsn, 0)));
        assert_eq!(db.stats().keys, 3);
    };
    check(&db);
    let records = log(&db, before);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].lsn, lsn);
    assert_eq!(records[0].command, Command::Batch(batch));
    drop(db);

    let db = open(&opts);
    assert_eq!(db.applied_lsn(), lsn);
    check(&db);
}

#[test]
fn a_batch_that_does_not_fit_applies_none_of_its_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_entries = 3;
    opts.eviction_policy = builtin_policy("noeviction").unwrap();
    let db = open(&opts);
    set(&db, key(0), "a");
    set(&db, key(1), "b");
    let applied = db.applied_lsn();
    let batch = vec![
        Mutation::Set {
            key: key(0),
            value: Bytes::from_static(b"changed"),
            expires_at_ms: 0,
        },
        Mutation::Delete { key: key(1) },
        Mutation::Set {
            key: key(2),
            value: Bytes::from_static(b"c"),
            expires_at_ms: 0,
        },
        Mutation::Set {
            key: key(3),
            value: Bytes::from_static(b"d"),
            expires_at_ms: 0,
        },
        Mutation::Set {
            key: key(4),
            value: Bytes::from_static(b"e"),
            expires_at_ms: 0,
        },
    ];
    let err = db.write(batch).expect_err("four keys do not fit in three");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    assert_eq!(db.applied_lsn(), applied);
    assert_eq!(db.get(&key(0)).unwrap().value, Bytes::from_static(b"a"));
    assert!(db.get(&key(1)).is_some());
    for i in 2..5 {
        assert_eq!(db.get(&key(i)), None);
    }
}

#[test]
fn deleting_a_missing_key_reports_not_found_and_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.active_expiry = false;
    let db = open(&opts);
    set(&db, key(1), "present");
    let past = SetOptions {
        expires_at_ms: now_ms() - 1,
        if_version: None,
    };
    db.set(key(2), Bytes::from_static(b"expired"), past)
        .unwrap();
    let applied = db.applied_lsn();
    for missing in [key(0), key(2)] {
        let outcome = db.delete(missing).expect("delete");
        assert!(!outcome.found);
        assert_eq!(outcome.lsn, applied);
    }
    assert_eq!(db.applied_lsn(), applied);
    assert!(log(&db, applied).is_empty());

    let outcome = db.delete(key(1)).expect("delete");
    assert!(outcome.found);
    assert_eq!(outcome.lsn, applied + 1);
    assert_eq!(db.get(&key(1)), None);
    assert_eq!(
        log(&db, applied)
            .into_iter()
            .map(|r| r.command)
            .collect::<Vec<_>>(),
        vec![Command::Delete { key: key(1) }]
    );
}

// ---------------------------------------------------------------------------------------------
// 10, 11, 12, 13: disk reserve, directory lock, value sizes, the log reader
// ---------------------------------------------------------------------------------------------

#[test]
fn writes_are_refused_below_the_disk_reserve_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    let db = open(&opts);
    let version = set(&db, key(1), "kept");
    drop(db);

    opts.disk_reserve = u64::MAX;
    let db = open(&opts);
    let applied = db.applied_lsn();
    let err = db
        .set(key(2), Bytes::from_static(b"x"), SetOptions::default())
        .expect_err("below the reserve");
    assert!(
        matches!(
            err,
            DbError::DiskReserve {
                reserve: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    let message = err.to_string();
    assert!(
        message.contains("reserve") && message.contains("disk_reserve"),
        "{message}"
    );
    let err = db.delete(key(1)).expect_err("deletes append too");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    let batch = vec![Mutation::Delete { key: key(1) }];
    assert_eq!(
        db.write(batch).expect_err("batch").kind(),
        ErrorKind::ResourceExhausted
    );
    assert_eq!(db.applied_lsn(), applied);
    let item = db.get(&key(1)).expect("reads work below the reserve");
    assert_eq!((item.value.as_ref(), item.version), (&b"kept"[..], version));
}

#[test]
fn a_second_open_of_the_same_directory_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let first = open(&opts);
    set(&first, key(1), "v");
    let err = match Db::open(opts.clone()) {
        Ok(_) => panic!("two stores opened the same directory"),
        Err(err) => err,
    };
    assert!(matches!(err, DbError::Locked { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let message = err.to_string();
    assert!(message.contains("in use"), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "the message names the holder: {message}"
    );
    // The failed open disturbed nothing.
    set(&first, key(2), "w");
    drop(first);
    let second = Db::open(opts).expect("open after the first was dropped");
    assert_eq!(second.stats().keys, 2);
}

#[test]
fn empty_and_megabyte_values_and_the_empty_key_round_trip_through_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let db = open(&opts);
    let mut rng = fastrand::Rng::with_seed(12);
    let mut written = HashMap::new();
    for (i, len) in [0usize, 1, 1_000, 64 << 10, (1 << 20) - 1, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let value: Bytes = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        let version = db
            .set(key(i as u64), value.clone(), SetOptions::default())
            .expect("set");
        written.insert(key(i as u64), (value, version));
    }
    let empty = db
        .set(Bytes::new(), Bytes::new(), SetOptions::default())
        .expect("the empty key");
    written.insert(Bytes::new(), (Bytes::new(), empty));
    let check = |db: &Db, when: &str| {
        for (k, (value, version)) in &written {
            let item = db
                .get(k)
                .unwrap_or_else(|| panic!("{when}: key {k:?} lost"));
            assert!(item.value == value, "{when}: key {k:?} has the wrong value");
            assert_eq!(item.version, *version, "{when}: key {k:?}");
        }
        assert_eq!(db.stats().keys, written.len() as u64, "{when}");
    };
    check(&db, "before restart");
    drop(db);
    let db = open(&opts);
    assert_eq!(db.recovery().replayed_records, written.len() as u64);
    check(&db, "after replay");
    db.snapshot().expect("snapshot");
    drop(db);
    let db = open(&opts);
    assert_eq!(db.recovery().snapshot_entries, written.len() as u64);
    check(&db, "after snapshot load");
}

#[test]
fn read_log_returns_exactly_the_records_after_an_lsn_in_order_until_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.wal.max_file_size = 4 << 10;
    opts.active_expiry = false;
    let db = open(&opts);
    let mut expected = Vec::new();
    for i in 0..300u64 {
        let k = key(i % 50);
        let (lsn, command) = match i % 3 {
            0 | 1 => {
                let value = Bytes::from(format!("value-{i}"));
                let lsn = db.set(k.clone(), value.clone(), SetOptions::default());
                let command = Command::Set {
                    key: k,
                    value,
                    expires_at_ms: 0,
                };
                (lsn.unwrap(), command)
            }
            _ => {
                let batch = vec![
                    Mutation::Delete { key: k },
                    Mutation::Set {
                        key: key(i),
                        value: Bytes::new(),
                        expires_at_ms: 0,
                    },
                ];
                (db.write(batch.clone()).unwrap(), Command::Batch(batch))
            }
        };
        expected.push((lsn, command));
    }
    assert!(segment_lsns(dir.path()).len() > 2, "want several segments");
    let last = db.applied_lsn();
    for after in [0, 1, 99, 150, last - 1, last] {
        let got: Vec<(u64, Command)> = log(&db, after)
            .into_iter()
            .map(|r| (r.lsn, r.command))
            .collect();
        let want: Vec<(u64, Command)> = expected
            .iter()
            .filter(|(lsn, _)| *lsn > after)
            .cloned()
            .collect();
        assert_eq!(got, want, "read_log({after})");
    }

    let snapshot = db.snapshot().expect("snapshot");
    assert_eq!(snapshot.lsn, last);
    let oldest = segment_lsns(dir.path())[0];
    assert!(oldest > 1, "the snapshot removed no segment");
    match db.read_log(0) {
        Err(DbError::Wal(WalError::Trimmed {
            requested,
            oldest: o,
        })) => {
            assert_eq!((requested, o), (1, oldest));
        }
        Err(other) => panic!("expected Trimmed, got {other:?}"),
        Ok(_) => panic!("read_log(0) succeeded although LSN 1 was removed"),
    }
    // What is still on disk is still readable.
    let tail: Vec<u64> = log(&db, oldest - 1).iter().map(|r| r.lsn).collect();
    assert_eq!(tail, (oldest..=last).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Regressions: each of these once failed against the library.
// ---------------------------------------------------------------------------------------------

/// A store of `key(0..10)` where `key(0)` is the least recently used key by a clear margin,
/// and an evictor that samples every key, so LRU is certain to pick `key(0)` first.
fn ten_keys_with_key_0_least_recently_used(mut opts: DbOptions) -> Db {
    opts.eviction_samples = 100;
    let db = open(&opts);
    for i in 0..10 {
        set(&db, key(i), "value");
    }
    next_access_tick();
    for i in 1..10 {
        assert!(db.get(&key(i)).is_some());
    }
    next_access_tick();
    db
}

/// Regression: eviction once picked a key that the write it was making room for sets itself;
/// the write's plan (made with the key present) then re-inserted it uncounted, and the store
/// ended above `max_entries`.
#[test]
fn a_batch_rewriting_the_least_recently_used_key_still_respects_max_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_entries = 10;
    let db = ten_keys_with_key_0_least_recently_used(opts);
    let before = db.applied_lsn();
    let lsn = db
        .write(vec![
            Mutation::Set {
                key: key(0),
                value: Bytes::from_static(b"rewritten"),
                expires_at_ms: 0,
            },
            Mutation::Set {
                key: key(10),
                value: Bytes::from_static(b"new"),
                expires_at_ms: 0,
            },
        ])
        .expect("batch");
    let evicted: Vec<Command> = log(&db, before)
        .into_iter()
        .filter(|r| r.lsn < lsn)
        .map(|r| r.command)
        .collect();
    assert!(
        db.stats().keys <= 10,
        "{} keys stored with max_entries 10; the batch's own key was evicted first: \
         {evicted:?}",
        db.stats().keys
    );
}

/// Regression (same cause as above): overwriting the least recently used key with a larger
/// value under `max_memory` evicts that very key, then re-inserts it at full cost, so memory
/// ends above the limit (by the evicted entry's old cost).
#[test]
fn growing_the_least_recently_used_key_still_respects_max_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    let max = 10 * wasmkv::storage::entry_cost(key(0).len(), "value".len());
    opts.max_memory = max;
    let db = ten_keys_with_key_0_least_recently_used(opts);
    assert_eq!(db.stats().memory_bytes, max);
    let before = db.applied_lsn();
    db.set(key(0), Bytes::from(vec![b'x'; 100]), SetOptions::default())
        .expect("set");
    let commands: Vec<Command> = log(&db, before).into_iter().map(|r| r.command).collect();
    assert!(
        db.stats().memory_bytes <= max,
        "{} bytes stored with max_memory {max}; log: {commands:?}",
        db.stats().memory_bytes
    );
}

/// Regression: an automatic snapshot once ran on a detached thread that `Db::close` did not
/// wait for, so it went on writing, publishing and removing files after the directory was
/// released to the next owner. Nothing of it may be left in progress once `drop` returns.
#[test]
fn dropping_the_store_waits_for_a_running_automatic_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.snapshot_after_bytes = 0;
    let db = open(&opts);
    // Enough data that a snapshot takes a while.
    for chunk in 0..100u64 {
        let batch = (0..1_000)
            .map(|i| Mutation::Set {
                key: key(chunk * 1_000 + i),
                value: Bytes::from_static(b"some value of some length"),
                expires_at_ms: 0,
            })
            .collect();
        db.write(batch).expect("batch");
    }
    drop(db);

    opts.snapshot_after_bytes = 1;
    let db = open(&opts);
    let snapshot_running = || {
        std::fs::read_dir(dir.path().join("snap")).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".snap.tmp"))
        })
    };
    let mut extra = 0;
    wait_for("an automatic snapshot in progress", WAIT, || {
        if snapshot_running() {
            return true;
        }
        // Should one finish unseen, a little more log starts the next.
        extra += 1;
        set(&db, key(1_000_000 + extra), "more");
        false
    });
    drop(db);
    let still_writing = snapshot_running();
    let reopened = Db::open(opts.clone());
    if let Err(e) = &reopened {
        panic!("reopening right after drop failed: {e}");
    }
    assert!(
        !still_writing,
        "drop returned while the closed store's automatic snapshot was still being \
         written in {}",
        dir.path().display()
    );
}
