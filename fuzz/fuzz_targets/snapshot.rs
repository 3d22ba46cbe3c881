//! A snapshot file as start-up and a full resync load it.

#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use wasmkv::wal::WalError;
use wasmkv::wal::snapshot::{self, SnapshotWriter};
use wasmkv_fuzz::scratch;

fuzz_target!(|data: &[u8]| {
    let dir = scratch::fresh_dir("snapshot");
    let path = dir.join("input.snap");
    fs::write(&path, data).expect("scratch files can be written");
    let mut entries = Vec::new();
    match snapshot::load(&path, |entry| entries.push(entry)) {
        Ok(info) => {
            assert_eq!(info.entries, entries.len() as u64);
            // Writing what was loaded gives the same file back: the loader accepts one
            // encoding per snapshot and drops nothing.
            let out = dir.join("out");
            let mut writer = SnapshotWriter::create(&out, info.lsn, info.created_ms)
                .expect("a snapshot can be written");
            for entry in &entries {
                writer
                    .write(entry)
                    .expect("a snapshot entry can be written");
            }
            let written = writer.finish().expect("a snapshot can be finished");
            assert_eq!(
                fs::read(written).expect("the written snapshot is readable"),
                data
            );
        }
        // Damage of any kind is reported as such (naming the file), never as an I/O failure
        // or a panic.
        Err(WalError::CorruptSnapshot { .. }) => {}
        Err(other) => panic!("damage reported as something else: {other}"),
    }
});
