//! A WAL segment file as start-up and the offline tools read it: `verify` finds the intact
//! prefix and the first damage, the log reader serves that prefix, `repair` cuts the rest.

#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use wasmkv::wal::{encode_record, repair, segment_path, verify};
use wasmkv_fuzz::{SEGMENT_MAGIC, scratch};

fuzz_target!(|data: &[u8]| {
    let dir = scratch::fresh_dir("wal_segment");
    fs::write(segment_path(&dir, 1), data).expect("scratch files can be written");
    let report = verify(&dir).expect("a readable segment is verified, damaged or not");

    // The intact prefix: the records the reader serves, re-encoded, are the segment's bytes
    // up to the damage (or the end), so nothing was skipped, reordered or misread.
    let intact_end = report
        .damage
        .as_ref()
        .map_or(data.len(), |d| d.offset as usize);
    let mut expected = SEGMENT_MAGIC.to_vec();
    let mut lsn = 0;
    for record in report.reader(0).expect("the verified prefix is readable") {
        let record = record.expect("the verified prefix reads back without errors");
        lsn += 1;
        assert_eq!(record.lsn, lsn, "LSNs are dense from the segment's first");
        encode_record(
            record.lsn,
            record.timestamp_ms,
            &record.command,
            &mut expected,
        );
    }
    assert_eq!((report.records, report.last_lsn), (lsn, lsn));
    if intact_end == 0 {
        assert_eq!(lsn, 0, "a segment without its magic holds no records");
    } else {
        assert_eq!(
            expected,
            data[..intact_end],
            "the intact prefix is not what was read"
        );
    }

    // Repair cuts exactly there and leaves a log that verifies clean with the same records.
    if let Some(damage) = report.damage {
        let repaired = repair(&dir).expect("a damaged segment can be repaired");
        assert_eq!(repaired.last_lsn, lsn);
        assert_eq!(
            repaired.cut.map(|(_, offset, lsn)| (offset, lsn)),
            Some((damage.offset, lsn + 1))
        );
        let after = verify(&dir).expect("the repaired segment is readable");
        assert!(
            after.is_ok(),
            "damage left after repair: {:?}",
            after.damage
        );
        assert_eq!(after.records, lsn);
    }
});
