//! The body of a server-streaming Connect call (`Watch`, `Subscribe`): one envelope
//! (`flags:u8 length:u32be message`) around a request in any codec.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use wasmkv::api::connect::{decode_stream_request, envelope};
use wasmkv::api::proto::{SubscribeRequest, WatchRequest};
use wasmkv::api::{Code, Codec, WireMessage};
use wasmkv_fuzz::wire;

fuzz_target!(|data: &[u8]| {
    for codec in Codec::ALL {
        check::<WatchRequest>(codec, data);
        check::<SubscribeRequest>(codec, data);
    }
});

fn check<T: WireMessage + PartialEq + Debug>(codec: Codec, body: &[u8]) {
    match decode_stream_request::<T>(codec, body) {
        Ok(message) => {
            // Exactly one uncompressed envelope (flag 0x01 is compression) whose length is
            // the rest of the body, holding what the codec alone decodes.
            assert!(body.len() >= 5 && body[0] & 0x01 == 0);
            let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
            assert_eq!(5 + len, body.len());
            assert_eq!(wire::check::<T>(codec, &body[5..]).as_ref(), Some(&message));
            let again = envelope(body[0], &codec.encode(&message));
            assert_eq!(
                decode_stream_request::<T>(codec, &again).ok(),
                Some(message)
            );
        }
        Err(e) => assert!(
            matches!(e.code, Code::InvalidArgument | Code::Unimplemented),
            "{:?}: {}",
            e.code,
            e.message
        ),
    }
}
