//! Tests of the offline tools' view of the log: `verify` and `LogReader::open_dir`. What they
//! must never do is change a file, so most tests compare the bytes before and after.

use std::fs;
use std::path::{Path, PathBuf};

use super::tests::{segments, write_log};
use super::*;

/// Every file of the directory with its contents, to prove nothing was touched.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segments(dir)
        .into_iter()
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

fn read_all(reader: LogReader) -> Vec<u64> {
    reader.map(|r| r.unwrap().lsn).collect()
}

#[test]
fn verify_counts_an_intact_log_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
    assert_eq!(report.segments, segments(dir.path()).len());
    assert!(report.segments > 3, "{}", report.segments);
    assert_eq!(
        (report.records, report.first_lsn, report.last_lsn),
        (200, 1, 200)
    );
    assert_eq!(
        read_all(report.reader(0).unwrap()),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(
        read_all(LogReader::open_dir(dir.path(), 150).unwrap()),
        (151..=200).collect::<Vec<_>>()
    );
    assert_eq!(LogReader::open_dir(dir.path(), 200).unwrap().count(), 0);
}

#[test]
fn an_empty_directory_is_an_empty_intact_log() {
    let dir = tempfile::tempdir().unwrap();
    let report = verify(dir.path()).unwrap();
    assert!(report.is_ok());
    assert_eq!(
        (
            report.segments,
            report.records,
            report.first_lsn,
            report.last_lsn
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(report.reader(0).unwrap().count(), 0);
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = verify(&missing).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn damage_in_a_sealed_segment_is_reported_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let files = segments(dir.path());
    let mut data = fs::read(&files[1]).unwrap();
    data[segment::MAGIC.len() + 40] ^= 0x04;
    fs::write(&files[1], &data).unwrap();
    let second_lsn = segment::list(dir.path()).unwrap()[1].first_lsn;
    let before = contents(dir.path());

    let report = verify(dir.path()).unwrap();
    let damage = report.damage.clone().expect("damage found");
    assert_eq!(damage.path, files[1]);
    assert_eq!(damage.offset, segment::MAGIC.len() as u64);
    assert_eq!(damage.lsn, second_lsn);
    assert!(damage.reason.contains("checksum"), "{}", damage.reason);
    assert!(!damage.torn_tail);
    assert_eq!(report.records, second_lsn - 1);
    assert_eq!(report.last_lsn, second_lsn - 1);
    assert_eq!(report.segments, files.len());
    // The same error start-up gives.
    let err = WalError::from(damage);
    assert!(err.to_string().contains("offset 8"), "{err}");
    // The reader serves the intact prefix and stops before the damage.
    assert_eq!(
        read_all(report.reader(0).unwrap()),
        (1..second_lsn).collect::<Vec<_>>()
    );
    assert_eq!(contents(dir.path()), before);
}

#[test]
fn a_torn_tail_is_reported_as_such_but_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let full = fs::read(&seg).unwrap();
    fs::write(&seg, &full[..full.len() - 3]).unwrap();
    let before = contents(dir.path());

    let report = verify(dir.path()).unwrap();
    let damage = report.damage.clone().expect("torn tail found");
    assert!(damage.torn_tail);
    assert_eq!(damage.lsn, 10);
    assert_eq!((report.records, report.last_lsn), (9, 9));
    assert_eq!(
        read_all(LogReader::open_dir(dir.path(), 0).unwrap()),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(contents(dir.path()), before);
}

#[test]
fn a_missing_segment_is_a_gap_and_the_prefix_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let listed = segment::list(dir.path()).unwrap();
    fs::remove_file(&listed[2].path).unwrap();
    let report = verify(dir.path()).unwrap();
    let damage = report.damage.clone().unwrap();
    assert_eq!(damage.path, listed[3].path);
    assert_eq!((damage.offset, damage.lsn), (0, listed[2].first_lsn));
    assert!(
        damage.reason.contains("segment starts at LSN"),
        "{damage:?}"
    );
    assert_eq!(report.last_lsn, listed[2].first_lsn - 1);
    assert_eq!(
        read_all(report.reader(0).unwrap()),
        (1..listed[2].first_lsn).collect::<Vec<_>>()
    );
}

#[test]
fn after_retention_the_log_starts_later_and_older_lsns_are_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let options = WalOptions {
        sync: SyncPolicy::Never,
        max_file_size: 1024,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), options, 0, |_| {}).unwrap();
    wal.set_retention_floor(100);
    wal.remove_segments_through(100).unwrap();
    drop(wal);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_ok());
    let oldest = segment::list(dir.path()).unwrap()[0].first_lsn;
    assert!(oldest > 1 && oldest <= 101, "{oldest}");
    assert_eq!(
        (report.first_lsn, report.last_lsn, report.records),
        (oldest, 200, 201 - oldest)
    );
    assert_eq!(
        read_all(report.reader(oldest - 1).unwrap()),
        (oldest..=200).collect::<Vec<_>>()
    );
    assert!(matches!(
        LogReader::open_dir(dir.path(), 0),
        Err(WalError::Trimmed { requested: 1, .. })
    ));
}
