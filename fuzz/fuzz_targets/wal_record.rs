//! WAL record frames, as a replica receives them from its primary (`SubscribeResponse.records`)
//! and as recovery reads them from a segment: a sequence of `len crc body` frames.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmkv::wal::{DecodeError, FRAME_HEADER, decode_record, encode_record, seal_frame};

fuzz_target!(|data: &[u8]| {
    check_frames(data);
    // Random bytes almost never carry a right CRC, which would keep the fuzzer out of the body
    // decoder: the same input again with its first frame's length and CRC made right.
    if data.len() >= FRAME_HEADER {
        let mut sealed = data.to_vec();
        seal_frame(&mut sealed, 0);
        check_frames(&sealed);
    }
});

/// Decode frames one after the other, as `Db::apply_replicated` does, until the bytes end or
/// one does not decode. Every decoded record re-encodes to exactly the bytes it came from: the
/// decoder accepts one encoding per record, so a frame cannot mean two things.
fn check_frames(mut buf: &[u8]) {
    while !buf.is_empty() {
        match decode_record(buf) {
            Ok((record, used)) => {
                let mut again = Vec::new();
                encode_record(record.lsn, record.timestamp_ms, &record.command, &mut again);
                assert_eq!(again, buf[..used], "{record:?} re-encodes differently");
                buf = &buf[used..];
            }
            Err(DecodeError::Truncated { needed, available }) => {
                assert!(needed > available && available == buf.len());
                return;
            }
            Err(_) => return,
        }
    }
}
