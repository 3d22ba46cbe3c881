//! WAL segment files, as start-up and the offline tools read them: `verify` finds the intact
//! prefix of the log and its first damage, the log reader serves that prefix, `repair` cuts the
//! rest. The input is one segment, or two: a second `WKVWAL01` followed by an LSN (u64le)
//! starts the next segment, named by that LSN.

#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use wasmkv::wal::{encode_record, repair, segment_path, verify};
use wasmkv_fuzz::{SEGMENT_MAGIC, scratch};

fuzz_target!(|data: &[u8]| {
    let dir = scratch::fresh_dir("wal_segment");
    let segments = split(data);
    for (first_lsn, bytes) in &segments {
        fs::write(segment_path(&dir, *first_lsn), bytes).expect("scratch files can be written");
    }
    let report = verify(&dir).expect("readable segments are verified, damaged or not");

    // The intact prefix: the records the reader serves, re-encoded, are the segments' bytes
    // (after each one's magic) up to the damage, so nothing was skipped, reordered or misread;
    // all a segment may hold after them is zeros, the preallocated space of a live log.
    let mut served = Vec::new();
    let mut lsn = 0;
    for record in report.reader(0).expect("the verified prefix is readable") {
        let record = record.expect("the verified prefix reads back without errors");
        lsn += 1;
        assert_eq!(record.lsn, lsn, "LSNs are dense from the first segment's");
        let mut encoded = Vec::new();
        encode_record(
            record.lsn,
            record.timestamp_ms,
            &record.command,
            &mut encoded,
        );
        served.push(encoded);
    }
    assert_eq!((report.records, report.last_lsn), (lsn, lsn));
    let damaged = report.damage.as_ref().map(|d| {
        let index = segments
            .iter()
            .position(|(first_lsn, _)| segment_path(&dir, *first_lsn) == d.path)
            .expect("the damage is in one of the segments");
        (index, d.offset as usize)
    });
    let mut unread = served.iter().peekable();
    for (index, (_, bytes)) in segments.iter().enumerate() {
        let end = match damaged {
            Some((at, offset)) if index == at => offset,
            Some((at, _)) if index > at => break,
            _ => bytes.len(),
        };
        if end > 0 {
            assert!(
                bytes.starts_with(SEGMENT_MAGIC),
                "a segment without its magic was read"
            );
            let mut intact = &bytes[SEGMENT_MAGIC.len()..end];
            while let Some(record) = unread.next_if(|record| intact.starts_with(record)) {
                intact = &intact[record.len()..];
            }
            assert!(
                intact.iter().all(|&b| b == 0),
                "the intact prefix is not what was read: {} bytes after the records read",
                intact.len()
            );
        }
    }
    assert!(
        unread.next().is_none(),
        "a record was read that is not in the segments"
    );

    // Repair cuts exactly there and leaves a log that verifies clean with the same records.
    if let Some(damage) = report.damage {
        let repaired = repair(&dir).expect("a damaged log can be repaired");
        assert_eq!(repaired.last_lsn, lsn);
        let cut = repaired.cut.map(|(_, offset, lsn)| (offset, lsn));
        assert_eq!(cut, Some((damage.offset, lsn + 1)));
        let after = verify(&dir).expect("the repaired log is readable");
        assert!(
            after.is_ok(),
            "damage left after repair: {:?}",
            after.damage
        );
        assert_eq!(after.records, lsn);
    }
});

/// The segments the input describes, with the LSN each is named by (the first: 1).
fn split(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let header = SEGMENT_MAGIC.len() + 8;
    let second = (1..data.len())
        .find(|&at| data[at..].starts_with(SEGMENT_MAGIC))
        .and_then(|at| {
            let lsn = data.get(at + SEGMENT_MAGIC.len()..at + header)?;
            let lsn = u64::from_le_bytes(lsn.try_into().expect("8 bytes"));
            // LSN 1 names the first segment already.
            (lsn > 1).then_some((at, lsn))
        });
    match second {
        Some((at, lsn)) => vec![
            (1, data[..at].to_vec()),
            (lsn, [SEGMENT_MAGIC, &data[at + header..]].concat()),
        ],
        None => vec![(1, data.to_vec())],
    }
}
