//! The offline commands of the `wasmkv` binary, run as a real process on WALs written by a
//! real `Db`: `wal verify`, `wal dump` and `repair`, and the lock that keeps `repair` away
//! from a directory a node is using.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmkv::db::{Db, DbOptions, SetOptions};
use wasmkv::wal::{Mutation, SyncPolicy};

fn options(dir: &Path) -> DbOptions {
    let mut opts = DbOptions::new(dir, SyncPolicy::Never);
    // Small segments, so there are sealed ones to damage.
    opts.wal.max_file_size = 1024;
    opts.disk_reserve = 0;
    opts
}

/// A data directory whose WAL holds `n` sets (LSN i sets `key-i`), the store closed.
fn data_dir(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(options(dir.path())).unwrap();
    for i in 1..=n {
        let lsn = db
            .set(
                Bytes::from(format!("key-{i}")),
                Bytes::from(format!("value-{i}")),
                SetOptions::default(),
            )
            .unwrap();
        assert_eq!(lsn, i);
    }
    db.close().unwrap();
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// The first LSN of a segment, from its name.
fn first_lsn(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Flip a bit in the first record of the second segment (a sealed one); returns that
/// segment and its first LSN, the first record lost.
fn damage_sealed_segment(dir: &Path) -> (PathBuf, u64) {
    let files = segments(dir);
    assert!(files.len() > 2, "{files:?}");
    let victim = files[1].clone();
    let mut data = fs::read(&victim).unwrap();
    data[8 + 20] ^= 0x10;
    fs::write(&victim, &data).unwrap();
    let lsn = first_lsn(&victim);
    (victim, lsn)
}

fn wasmkv(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmkv"))
        .args(args)
        .arg(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn verify_reports_an_intact_wal() {
    let dir = data_dir(100);
    let count = segments(dir.path()).len();
    for target in [dir.path().to_owned(), dir.path().join("wal")] {
        let out = wasmkv(&["wal", "verify"], &target);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("ok: 100 records, LSN 1..100 in {count} segments\n")
        );
        assert_eq!(stderr(&out), "");
    }
}

#[test]
fn verify_names_the_damage_and_changes_nothing() {
    let dir = data_dir(100);
    let (victim, lost) = damage_sealed_segment(dir.path());
    let before = fs::read(&victim).unwrap();
    let out = wasmkv(&["wal", "verify"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "damaged: {} at offset 8 (LSN {lost}): checksum mismatch",
            victim.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "intact before it: {} records, LSN 1..{}",
            lost - 1,
            lost - 1
        )),
        "{text}"
    );
    let err = stderr(&out);
    assert!(err.starts_with("error: the WAL is damaged"), "{err}");
    assert!(err.contains("wasmkv repair"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(fs::read(&victim).unwrap(), before);
}

#[test]
fn dump_prints_one_line_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(options(dir.path())).unwrap();
    db.set(
        Bytes::from_static(b"plain"),
        Bytes::from_static(b"hello"),
        SetOptions::default(),
    )
    .unwrap();
    db.set(
        Bytes::from_static(b"bin\x00\xff\"q"),
        Bytes::from_static(b"\x01\x02"),
        SetOptions {
            expires_at_ms: 4_102_444_800_000,
            if_version: None,
        },
    )
    .unwrap();
    db.write(vec![
        Mutation::Set {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"1"),
            expires_at_ms: 0,
        },
        Mutation::Delete {
            key: Bytes::from_static(b"plain"),
        },
    ])
    .unwrap();
    db.delete(Bytes::from_static(b"a")).unwrap();
    db.close().unwrap();
    drop(db);

    let out = wasmkv(&["wal", "dump"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let rest = |line: &str| line.split_once(" op=").map(|(_, rest)| rest.to_owned());
    assert!(lines[0].starts_with("lsn=1 ts=20"), "{}", lines[0]);
    assert_eq!(
        rest(lines[0]).unwrap(),
        "set key=\"plain\" value=5 bytes expires_at_ms=0"
    );
    assert!(lines[1].starts_with("lsn=2 "), "{}", lines[1]);
    assert_eq!(
        rest(lines[1]).unwrap(),
        "set key=\"bin\\x00\\xff\\\"q\" value=2 bytes expires_at_ms=4102444800000"
    );
    assert!(lines[2].starts_with("lsn=3 ") && lines[3].starts_with("lsn=3 "));
    assert_eq!(
        rest(lines[2]).unwrap(),
        "batch.set key=\"a\" value=1 bytes expires_at_ms=0"
    );
    assert_eq!(rest(lines[3]).unwrap(), "batch.delete key=\"plain\"");
    assert!(lines[4].starts_with("lsn=4 "), "{}", lines[4]);
    assert_eq!(rest(lines[4]).unwrap(), "delete key=\"a\"");

    let out = wasmkv(
        &["wal", "dump", "--from", "2", "--limit", "1", "--values"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("lsn=2 "), "{text}");
    assert!(text.contains(" value=\"\\x01\\x02\" "), "{text}");
}

#[test]
fn dump_of_a_damaged_wal_prints_the_intact_prefix_then_fails() {
    let dir = data_dir(100);
    let (_, lost) = damage_sealed_segment(dir.path());
    let out = wasmkv(&["wal", "dump"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(text.lines().count() as u64, lost - 1);
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(&format!("lsn={} ", lost - 1))
    );
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: the log stops being readable after LSN {}",
            lost - 1
        )),
        "{err}"
    );
}

#[test]
fn repair_cuts_at_the_damage_and_then_verify_is_ok() {
    let dir = data_dir(100);
    let (victim, lost) = damage_sealed_segment(dir.path());
    let out = wasmkv(&["repair"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "cut {} at offset 8: records from LSN {lost} on are gone\n",
            victim.display()
        )),
        "{text}"
    );
    assert!(text.contains("removed "), "{text}");
    assert!(
        text.ends_with(&format!("the WAL now ends at LSN {}\n", lost - 1)),
        "{text}"
    );

    let out = wasmkv(&["wal", "verify"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("ok: {} records, LSN 1..{}", lost - 1, lost - 1)),
        "{}",
        stdout(&out)
    );
    let out = wasmkv(&["repair"], dir.path());
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!(
            "nothing to repair: the WAL is intact up to LSN {}\n",
            lost - 1
        )
    );
    // The node starts on the repaired log and continues the LSN sequence.
    let db = Db::open(options(dir.path())).unwrap();
    assert_eq!(db.applied_lsn(), lost - 1);
    assert!(db.get(format!("key-{}", lost - 1).as_bytes()).is_some());
    assert!(db.get(format!("key-{lost}").as_bytes()).is_none());
}

#[test]
fn repair_refuses_while_a_node_holds_the_directory() {
    let dir = data_dir(100);
    let (victim, _) = damage_sealed_segment(dir.path());
    let before: Vec<(PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    // A node that opened the directory before the damage, still running: it holds the lock
    // the way `Db` does (a `Db` cannot open the damaged log itself).
    let lock = fs::File::open(dir.path().join("LOCK")).unwrap();
    // The lock `data_dir`'s store let go of can look held for a moment longer: a child that
    // another test is spawning shares the open file until it execs (see `DirLock::acquire`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = lock.try_lock() {
        assert!(Instant::now() < deadline, "the lock stayed held: {e}");
        std::thread::sleep(Duration::from_millis(5));
    }

    let out = wasmkv(&["repair"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: the data directory "), "{err}");
    assert!(err.contains("in use by a running node"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let after: Vec<(PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    assert_eq!(before, after, "nothing was cut in {}", victim.display());

    // Verify still works (it only reads) and says a node is running.
    let out = wasmkv(&["wal", "verify"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("note: a node is running"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn repair_refuses_while_a_db_is_open() {
    let dir = data_dir(10);
    let db = Db::open(options(dir.path())).unwrap();
    let out = wasmkv(&["repair"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "in use by a running node (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    db.close().unwrap();
    drop(db);
    let out = wasmkv(&["repair"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("nothing to repair"));
}

#[test]
fn a_directory_without_a_wal_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["wal", "verify"][..], &["wal", "dump"], &["repair"]] {
        let out = wasmkv(args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("holds no WAL"), "{err}");
    }
    let out = wasmkv(&["wal", "verify"], &dir.path().join("missing"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("No such file"), "{}", stderr(&out));
}
