//! Log-level tests: replay, rotation, torn tails, corruption, repair, retention, failures.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::log::INITIALIZE_AHEAD;
use super::*;

fn set(i: u64) -> Command {
    Command::Set {
        key: Bytes::from(format!("key-{i}")),
        value: Bytes::from(format!("value-{i}-{}", "x".repeat((i % 7) as usize))),
        expires_at_ms: 0,
    }
}

fn options(sync: SyncPolicy, max_file_size: u64) -> WalOptions {
    WalOptions {
        sync,
        max_file_size,
        ..WalOptions::default()
    }
}

/// Write `n` records (LSN i carries `set(i)`) and close the log.
pub(super) fn write_log(dir: &Path, n: u64, max_file_size: u64) {
    let wal = Wal::open(dir, options(SyncPolicy::Never, max_file_size), 0, |_| {}).unwrap();
    for i in 1..=n {
        let lsn = wal.append(i, &set(i)).unwrap();
        assert_eq!(lsn, i);
        wal.commit(lsn).unwrap();
    }
    wal.close().unwrap();
}

fn replay(dir: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let wal = Wal::open(dir, options(SyncPolicy::Never, 1 << 20), 0, |r| {
        records.push(r)
    })?;
    drop(wal);
    Ok(records)
}

fn lsns(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.lsn).collect()
}

pub(super) fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect()
}

#[test]
fn replays_everything_in_order_and_continues_the_lsn_sequence() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 50, 1 << 20);
    let records = replay(dir.path()).unwrap();
    assert_eq!(lsns(&records), (1..=50).collect::<Vec<_>>());
    assert_eq!(records[9].command, set(10));
    let wal = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
    assert_eq!(wal.append(0, &set(51)).unwrap(), 51);
}

#[test]
fn replay_skips_records_covered_by_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 20, 1 << 20);
    let mut seen = Vec::new();
    Wal::open(dir.path(), WalOptions::default(), 15, |r| seen.push(r.lsn)).unwrap();
    assert_eq!(seen, vec![16, 17, 18, 19, 20]);
}

#[test]
fn rotates_segments_and_reads_across_them() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 512);
    let files = segments(dir.path());
    assert!(files.len() > 5, "only {} segments", files.len());
    assert_eq!(
        lsns(&replay(dir.path()).unwrap()),
        (1..=200).collect::<Vec<_>>()
    );
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 512), 0, |_| {}).unwrap();
    let tail: Vec<u64> = wal
        .read_from(120, u64::MAX)
        .unwrap()
        .map(|r| r.unwrap().lsn)
        .collect();
    assert_eq!(tail, (121..=200).collect::<Vec<_>>());
    assert_eq!(wal.read_from(200, u64::MAX).unwrap().count(), 0);
}

#[test]
fn a_reader_goes_on_across_new_records_and_segments_and_reports_removal() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 512), 0, |_| {}).unwrap();
    let append = |from: u64, to: u64| {
        for i in from..=to {
            let lsn = wal.append(i, &set(i)).unwrap();
            wal.commit(lsn).unwrap();
        }
    };
    append(1, 10);
    let mut reader = wal.read_from(0, u64::MAX).unwrap();
    let read =
        |reader: &mut LogReader| -> Vec<u64> { reader.by_ref().map(|r| r.unwrap().lsn).collect() };
    assert_eq!(read(&mut reader), (1..=10).collect::<Vec<_>>());
    assert_eq!(read(&mut reader), Vec::<u64>::new(), "nothing new yet");
    // Enough to rotate through several 512-byte segments.
    append(11, 100);
    // Only as far as asked (the store reads as far as it has applied).
    wal.read_on(&mut reader, 40);
    assert_eq!(read(&mut reader), (11..=40).collect::<Vec<_>>());
    wal.read_on(&mut reader, u64::MAX);
    assert_eq!(read(&mut reader), (41..=100).collect::<Vec<_>>());
    assert_eq!(read(&mut wal.read_from(95, 97).unwrap()), [96, 97]);
    assert!(segments(dir.path()).len() > 3);
    // Retention removes the segment the reader is in: it ends with Trimmed, not garbage.
    append(101, 200);
    wal.remove_segments_through(180).unwrap();
    wal.read_on(&mut reader, u64::MAX);
    match reader.next() {
        Some(Err(WalError::Trimmed { requested, oldest })) => {
            assert_eq!(requested, 101);
            assert!(oldest > 101, "{oldest}");
        }
        other => panic!("expected Trimmed, got {other:?}"),
    }
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let mut last = Vec::new();
    record::encode(10, 10, &set(10), &mut last);
    assert!(full.ends_with(&last));
    let start = full.len() - last.len();
    for cut in start..full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        let records = replay(dir.path()).unwrap();
        assert_eq!(lsns(&records), (1..=9).collect::<Vec<_>>(), "cut at {cut}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), start as u64);
        // The log continues after the cut with the next LSN.
        let wal = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
        assert_eq!(wal.last_lsn(), 9);
    }
}

#[test]
fn a_zeroed_block_at_the_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let len = data.len();
    data[len - 512..].fill(0);
    fs::write(&seg, &data).unwrap();
    let records = replay(dir.path()).unwrap();
    let kept = records.len() as u64;
    assert!(kept < 100 && kept > 50, "kept {kept}");
    assert_eq!(lsns(&records), (1..=kept).collect::<Vec<_>>());
    // What was kept is intact, and the file now ends where the damage began.
    assert_eq!(records.last().unwrap().command, set(kept));
    assert!(fs::metadata(&seg).unwrap().len() <= (len - 512) as u64);
}

#[test]
fn a_bit_flip_in_a_sealed_segment_stops_startup_and_repair_keeps_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let files = segments(dir.path());
    let sealed = &files[1];
    let mut data = fs::read(sealed).unwrap();
    let offset = segment::MAGIC.len() + 40;
    data[offset] ^= 0x04;
    fs::write(sealed, &data).unwrap();
    let first_lsn = segment::list(dir.path()).unwrap()[1].first_lsn;

    let err = replay(dir.path()).unwrap_err();
    let message = err.to_string();
    match &err {
        WalError::Corrupt {
            path, offset, lsn, ..
        } => {
            assert_eq!(path, sealed);
            assert_eq!(*offset, segment::MAGIC.len() as u64);
            assert_eq!(*lsn, first_lsn);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(message.contains(&sealed.display().to_string()), "{message}");
    assert!(message.contains("offset 8"), "{message}");
    assert!(message.contains(&format!("LSN {first_lsn}")), "{message}");

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.last_lsn, first_lsn - 1);
    assert_eq!(report.removed.len(), files.len() - 2);
    let records = replay(dir.path()).unwrap();
    assert_eq!(lsns(&records), (1..first_lsn).collect::<Vec<_>>());
}

/// Regression (fuzz target wal_segment): repair cut a segment with a bad header to an empty
/// file, which `verify` still reported as damage.
#[test]
fn repair_removes_a_segment_with_a_bad_header() {
    let dir = tempfile::tempdir().unwrap();
    let seg = segment::segment_path(dir.path(), 1);
    fs::write(&seg, b"").unwrap();
    let report = repair(dir.path()).unwrap();
    assert_eq!(report.cut, Some((seg.clone(), 0, 1)));
    assert_eq!(report.removed, vec![seg]);
    assert!(verify(dir.path()).unwrap().is_ok());
    assert!(replay(dir.path()).unwrap().is_empty());
}

/// Regression (found while fixing the one above): a segment that does not follow on from the
/// log before it was cut to an empty file whose name still broke the LSN sequence, so the node
/// refused to start on the repaired log.
#[test]
fn repair_removes_a_segment_after_an_lsn_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let files = segments(dir.path());
    // The first segment ends where the second began; without the second, the third follows
    // a gap.
    let kept = segment::list(dir.path()).unwrap()[1].first_lsn - 1;
    fs::remove_file(&files[1]).unwrap();

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.last_lsn, kept);
    assert_eq!(report.removed, files[2..].to_vec());
    assert!(verify(dir.path()).unwrap().is_ok());
    let records = replay(dir.path()).unwrap();
    assert_eq!(lsns(&records), (1..=kept).collect::<Vec<_>>());
}

#[test]
fn damage_in_the_last_segment_followed_by_intact_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data[segment::MAGIC.len() + 100] ^= 0xff;
    fs::write(&seg, &data).unwrap();
    assert!(matches!(replay(dir.path()), Err(WalError::Corrupt { .. })));
    // Nothing was cut: the operator decides.
    assert_eq!(fs::read(&seg).unwrap(), data);
}

#[test]
fn a_missing_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let files = segments(dir.path());
    fs::remove_file(&files[2]).unwrap();
    let err = replay(dir.path()).unwrap_err();
    assert!(err.to_string().contains("segment starts at LSN"), "{err}");
}

#[test]
fn segment_removal_respects_snapshot_floor_and_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 1024), 0, |_| {}).unwrap();
    let before = segment::list(dir.path()).unwrap();
    wal.set_retention_floor(60);
    wal.remove_segments_through(150).unwrap();
    let after = segment::list(dir.path()).unwrap();
    // Every remaining record at or above the floor is still readable.
    assert!(after[0].first_lsn <= 61, "{:?}", after[0]);
    assert!(after.len() < before.len());
    let read: Vec<u64> = wal
        .read_from(60, u64::MAX)
        .unwrap()
        .map(|r| r.unwrap().lsn)
        .collect();
    assert_eq!(read, (61..=200).collect::<Vec<_>>());
    assert!(matches!(
        wal.read_from(0, u64::MAX),
        Err(WalError::Trimmed { requested: 1, .. })
    ));
    wal.set_retention_floor(u64::MAX);
    wal.remove_segments_through(u64::MAX).unwrap();
    let last = segment::list(dir.path()).unwrap();
    assert_eq!(last.len(), 1, "the active segment stays");
    drop(wal);
    // Recovery with a snapshot at 200 needs nothing more.
    let mut seen = 0;
    let wal = Wal::open(dir.path(), WalOptions::default(), 200, |_| seen += 1).unwrap();
    assert_eq!((seen, wal.last_lsn()), (0, 200));
}

#[test]
fn group_commit_makes_every_concurrent_write_durable() {
    let dir = tempfile::tempdir().unwrap();
    let wal =
        Arc::new(Wal::open(dir.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap());
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let lsn = wal.append(0, &set(t * 100 + i)).unwrap();
                    wal.commit(lsn).unwrap();
                    assert!(wal.stats().durable_lsn >= lsn);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.durable_lsn, 200);
    assert!(stats.fsyncs >= 1 && stats.fsyncs <= 200, "{stats:?}");
    drop(wal);
    assert_eq!(replay(dir.path()).unwrap().len(), 200);
}

/// Spawn `count` async writers on this event loop, each doing `work` on the loop's thread
/// (as a handler does) before it logs its record, wait for all, each having seen its record
/// durable; returns the fdatasyncs that took.
async fn fsyncs_for_async_writers(wal: &Arc<Wal>, count: u64, work: Duration) -> u64 {
    let before = wal.stats().fsyncs;
    let writers: Vec<_> = (0..count)
        .map(|i| {
            let wal = Arc::clone(wal);
            tokio::spawn(async move {
                std::thread::sleep(work);
                let lsn = wal.append(0, &set(i)).unwrap();
                wal.commit_async(lsn).await.unwrap();
                assert!(wal.stats().durable_lsn >= lsn);
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    wal.stats().fsyncs - before
}

/// Two async writers ready together on one event loop (one connection thread) share one
/// fdatasync. The lone-writer shortcut used to let the first lead an fsync of its record
/// alone before the second had appended; every fsync then carried one record, so each writer
/// in turn looked alone again and the thread settled at one fsync per write.
#[tokio::test(flavor = "current_thread")]
async fn async_writers_ready_together_on_one_event_loop_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let wal =
        Arc::new(Wal::open(dir.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap());
    let before = wal.stats().fsyncs;
    assert_eq!(
        fsyncs_for_async_writers(&wal, 2, Duration::ZERO).await,
        1,
        "{:?}",
        wal.stats()
    );

    // A writer that is alone still does its own write and fdatasync.
    let lsn = wal.append(0, &set(3)).unwrap();
    wal.commit_async(lsn).await.unwrap();
    assert_eq!(wal.stats().fsyncs - before, 2);
    assert_eq!(wal.stats().durable_lsn, lsn);
}

/// Writers ready in the same turn of one event loop share one fdatasync however long each
/// takes to log its write (a validation plugin, a large value): the flush starts only once
/// the turn is over, whether the flusher does it or, with `inline_fsync`, the first writer.
/// Started at once by the second writer, it carried the first two and the rest waited for a
/// second fdatasync.
#[tokio::test(flavor = "current_thread")]
async fn writers_of_one_event_loop_turn_share_one_fsync_however_long_each_takes() {
    for inline_fsync in [false, true] {
        writers_of_one_turn_share_one_fsync(inline_fsync).await;
    }
}

async fn writers_of_one_turn_share_one_fsync(inline_fsync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        inline_fsync,
        ..options(SyncPolicy::Always, 1 << 20)
    };
    let wal = Arc::new(Wal::open(dir.path(), opts, 0, |_| {}).unwrap());
    assert_eq!(
        fsyncs_for_async_writers(&wal, 8, Duration::from_millis(20)).await,
        1,
        "inline_fsync {inline_fsync}: {:?}",
        wal.stats()
    );
}

/// On a slow disk the flusher, not the event loop's thread, fdatasyncs the whole turn's
/// group, and wakes every writer.
#[tokio::test(flavor = "current_thread")]
async fn on_a_slow_disk_the_flusher_syncs_the_turn_s_group_and_wakes_every_writer() {
    let dir = tempfile::tempdir().unwrap();
    let wal =
        Arc::new(Wal::open(dir.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap());
    wal.pretend_the_last_fsync_took(Duration::from_millis(50));
    assert_eq!(
        fsyncs_for_async_writers(&wal, 8, Duration::ZERO).await,
        1,
        "{:?}",
        wal.stats()
    );
}

/// The extents of `path` that are reserved but unwritten and start below `below`, or None
/// where the file system does not report extents (FIEMAP).
fn unwritten_extents_below(path: &Path, below: u64) -> Option<Vec<(u64, u64)>> {
    let extents = match fiemap::fiemap(path) {
        Ok(extents) => extents.collect::<std::io::Result<Vec<_>>>(),
        Err(e) => Err(e),
    };
    match extents {
        Ok(extents) => Some(
            extents
                .iter()
                .filter(|e| {
                    e.fe_flags.contains(fiemap::FiemapExtentFlags::UNWRITTEN)
                        && e.fe_logical < below
                })
                .map(|e| (e.fe_logical, e.fe_length))
                .collect(),
        ),
        Err(e) => {
            eprintln!("skipped: no FIEMAP for {}: {e}", path.display());
            None
        }
    }
}

/// With `sync: always` the space just past the log's end is written with zeros, not only
/// reserved: the first write into a reserved (unwritten) extent changes the file's extent
/// map, which every group commit's fdatasync would then have to journal. In a new segment
/// after a rotation too; and the zeros still read as the end of the log.
#[test]
fn with_sync_always_the_space_past_the_log_s_end_is_written_not_only_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * INITIALIZE_AHEAD;
    let wal = Wal::open(dir.path(), options(SyncPolicy::Always, size), 0, |_| {}).unwrap();
    wal.commit(wal.append(1, &set(1)).unwrap()).unwrap();
    let first = segments(dir.path()).pop().unwrap();
    let Some(unwritten) = unwritten_extents_below(&first, INITIALIZE_AHEAD) else {
        return;
    };
    assert_eq!(unwritten, [], "the first MiB past the record is written");
    assert!(
        !unwritten_extents_below(&first, size).unwrap().is_empty(),
        "the rest of the segment is still only reserved"
    );

    // Large records fill the segment; the next one is written ahead as well.
    let big = Command::Set {
        key: Bytes::from_static(b"big"),
        value: Bytes::from(vec![7u8; 256 << 10]),
        expires_at_ms: 0,
    };
    let mut lsn = 1;
    while segments(dir.path()).len() < 2 {
        lsn = wal.append(2, &big).unwrap();
        wal.commit(lsn).unwrap();
    }
    let second = segments(dir.path()).pop().unwrap();
    assert_eq!(
        unwritten_extents_below(&second, INITIALIZE_AHEAD).unwrap(),
        []
    );

    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    drop(wal);
    assert_eq!(
        lsns(&replay(crashed.path()).unwrap()),
        (1..=lsn).collect::<Vec<_>>()
    );
}

#[test]
fn interval_sync_catches_up_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        options(SyncPolicy::Interval(Duration::from_millis(20)), 1 << 20),
        0,
        |_| {},
    )
    .unwrap();
    let lsn = wal.append(0, &set(1)).unwrap();
    wal.commit(lsn).unwrap();
    assert_eq!(wal.committed_lsn(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.stats().durable_lsn < 1 {
        assert!(Instant::now() < deadline, "interval sync never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Without an fsync policy the log still writes back in the background once
/// `WRITEBACK_BYTES` pile up, so sealing a segment never has a whole segment to fdatasync
/// with writers waiting; below that it leaves the flushing to the OS.
#[test]
fn never_writes_back_in_the_background_once_enough_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 64 << 20), 0, |_| {}).unwrap();
    let big = |i: u64| Command::Set {
        key: Bytes::from(format!("key-{i}")),
        value: Bytes::from(vec![b'v'; 64 << 10]),
        expires_at_ms: 0,
    };
    let lsn = wal.append(0, &big(0)).unwrap();
    wal.commit(lsn).unwrap();
    let before = wal.stats();
    assert_eq!((before.fsyncs, before.durable_lsn), (0, 0), "{before:?}");

    for i in 1..=(super::log::WRITEBACK_BYTES / (64 << 10)) {
        let lsn = wal.append(0, &big(i)).unwrap();
        wal.commit(lsn).unwrap();
    }
    // The syncer covers what was written when it started; records written while it runs
    // count towards the next writeback.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.stats().durable_lsn < lsn {
        assert!(
            Instant::now() < deadline,
            "no background writeback: {:?}",
            wal.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failed_write_is_sticky_and_leaves_no_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap();
    for i in 1..=3 {
        let lsn = wal.append(0, &set(i)).unwrap();
        wal.commit(lsn).unwrap();
    }
    wal.break_active_file_for_test();
    let lsn = wal.append(0, &set(4)).unwrap();
    let err = wal.commit(lsn).unwrap_err();
    assert!(matches!(err, WalError::Failed(_)), "{err}");
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(matches!(wal.append(0, &set(5)), Err(WalError::Failed(_))));
    assert!(wal.failure().is_some());
    drop(wal);
    assert_eq!(lsns(&replay(dir.path()).unwrap()), vec![1, 2, 3]);
}

#[test]
fn a_log_that_starts_after_the_snapshot_is_a_gap_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 1024), 0, |_| {}).unwrap();
    wal.remove_segments_through(150).unwrap();
    drop(wal);
    // As if the snapshot that covered LSNs 1..150 were lost: the log alone is not enough.
    let Err(err) = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}) else {
        panic!("a log with a gap after the snapshot opened");
    };
    assert!(matches!(err, WalError::Corrupt { lsn: 1, .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_record_too_large_to_recover_is_refused_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 1 << 20), 0, |_| {}).unwrap();
    let huge = Command::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from(vec![0u8; record::MAX_BODY]),
        expires_at_ms: 0,
    };
    let err = wal.append(0, &huge).unwrap_err();
    assert!(matches!(err, WalError::RecordTooLarge { .. }), "{err}");
    let lsn = wal.append(0, &set(1)).unwrap();
    assert_eq!(lsn, 1);
    wal.commit(lsn).unwrap();
    drop(wal);
    assert_eq!(lsns(&replay(dir.path()).unwrap()), vec![1]);
}

#[test]
fn the_retention_floor_keeps_the_segment_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 1024), 0, |_| {}).unwrap();
    let floor = segment::list(dir.path()).unwrap()[3].first_lsn;
    wal.set_retention_floor(floor);
    wal.remove_segments_through(u64::MAX).unwrap();
    assert_eq!(segment::list(dir.path()).unwrap()[0].first_lsn, floor);
    let read: Vec<u64> = wal
        .read_from(floor - 1, u64::MAX)
        .unwrap()
        .map(|r| r.unwrap().lsn)
        .collect();
    assert_eq!(read.first(), Some(&floor));
}

#[test]
fn a_reader_whose_segment_is_removed_meanwhile_reports_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 1024);
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 1024), 0, |_| {}).unwrap();
    let reader = wal.read_from(0, u64::MAX).unwrap();
    let second = segment::list(dir.path()).unwrap()[1].first_lsn;
    wal.remove_segments_through(second - 1).unwrap();
    let err = reader
        .map(|r| r.map(|record| record.lsn))
        .find_map(Result::err)
        .expect("the removed segment cannot be read");
    assert!(
        matches!(err, WalError::Trimmed { requested: 1, oldest } if oldest == second),
        "{err}"
    );
}

/// The files of a log as a crash would leave them: copied while the log is open, so the
/// active segment still has its preallocated zeros after the last record.
fn crash_copy(from: &Path, to: &Path) {
    for path in segments(from) {
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn the_active_segment_is_preallocated_and_trimmed_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap();
    for i in 1..=5 {
        wal.commit(wal.append(i, &set(i)).unwrap()).unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), 1 << 20, "preallocated");
    let written = wal.stats().bytes;
    assert!(
        written < 1024,
        "stats count the records, not the reserve: {written}"
    );
    wal.close().unwrap();
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        written,
        "trimmed on close"
    );
    assert_eq!(
        lsns(&replay(dir.path()).unwrap()),
        (1..=5).collect::<Vec<_>>()
    );
}

#[test]
fn after_a_crash_the_preallocated_zeros_are_the_end_of_the_log() {
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let wal = Wal::open(live.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap();
    for i in 1..=20 {
        wal.commit(wal.append(i, &set(i)).unwrap()).unwrap();
    }
    crash_copy(live.path(), crashed.path());
    let report = recovery::verify(crashed.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
    assert_eq!(report.last_lsn, 20);
    // Start-up replays every record and appends after them, in preallocated space again.
    let mut replayed = Vec::new();
    let reopened = Wal::open(
        crashed.path(),
        options(SyncPolicy::Always, 1 << 20),
        0,
        |r| replayed.push(r),
    )
    .unwrap();
    assert_eq!(lsns(&replayed), (1..=20).collect::<Vec<_>>());
    assert_eq!(reopened.append(21, &set(21)).unwrap(), 21);
    reopened.commit(21).unwrap();
    let seg = segments(crashed.path()).pop().unwrap();
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        1 << 20,
        "preallocated again"
    );
    drop(reopened);
    assert_eq!(
        lsns(&replay(crashed.path()).unwrap()),
        (1..=21).collect::<Vec<_>>()
    );
}

#[test]
fn a_record_torn_inside_preallocated_space_is_cut() {
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let wal = Wal::open(live.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap();
    for i in 1..=10 {
        wal.commit(wal.append(i, &set(i)).unwrap()).unwrap();
    }
    let end = wal.stats().bytes as usize;
    crash_copy(live.path(), crashed.path());
    // The last record's second half never reached the disk: zeros, as the reserve reads.
    let seg = segments(crashed.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let mut last = Vec::new();
    record::encode(10, 10, &set(10), &mut last);
    data[end - last.len() / 2..end].fill(0);
    fs::write(&seg, &data).unwrap();
    assert!(
        recovery::verify(crashed.path())
            .unwrap()
            .damage
            .unwrap()
            .torn_tail
    );
    assert_eq!(
        lsns(&replay(crashed.path()).unwrap()),
        (1..=9).collect::<Vec<_>>()
    );
}

#[test]
fn zeros_followed_by_intact_records_are_damage_not_the_end() {
    // A block lost in the middle of the last segment must not silently hide the records
    // after it: start-up refuses, and `repair` is the operator's decision.
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let wal = Wal::open(live.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap();
    for i in 1..=100 {
        wal.commit(wal.append(i, &set(i)).unwrap()).unwrap();
    }
    crash_copy(live.path(), crashed.path());
    let seg = segments(crashed.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data[1000..1512].fill(0);
    fs::write(&seg, &data).unwrap();
    let damage = recovery::verify(crashed.path()).unwrap().damage.unwrap();
    assert!(!damage.torn_tail);
    assert!(matches!(
        replay(crashed.path()),
        Err(WalError::Corrupt { .. })
    ));
}

#[test]
fn a_reader_sees_records_written_after_it_read_ahead_into_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Never, 1 << 20), 0, |_| {}).unwrap();
    let append = |from: u64, to: u64| {
        for i in from..=to {
            wal.commit(wal.append(i, &set(i)).unwrap()).unwrap();
        }
    };
    append(1, 3);
    let mut reader = wal.read_from(0, u64::MAX).unwrap();
    let read =
        |reader: &mut LogReader| -> Vec<u64> { reader.by_ref().map(|r| r.unwrap().lsn).collect() };
    // Reading these buffers the zeros after them too.
    assert_eq!(read(&mut reader), vec![1, 2, 3]);
    append(4, 6);
    wal.read_on(&mut reader, u64::MAX);
    assert_eq!(read(&mut reader), vec![4, 5, 6]);
}

#[test]
fn a_segment_whose_creation_was_cut_short_after_preallocation_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, 1 << 20);
    // The next segment's file exists with its reserve, but its magic never reached the disk.
    let next = segment::segment_path(dir.path(), 6);
    fs::write(&next, vec![0u8; 4096]).unwrap();
    let wal = Wal::open(dir.path(), options(SyncPolicy::Always, 1 << 20), 0, |_| {}).unwrap();
    assert_eq!(wal.last_lsn(), 5);
    wal.commit(wal.append(6, &set(6)).unwrap()).unwrap();
    drop(wal);
    assert_eq!(
        lsns(&replay(dir.path()).unwrap()),
        (1..=6).collect::<Vec<_>>()
    );
}
