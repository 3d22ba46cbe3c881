//! The API's messages in its three codecs: whatever decodes must survive a round trip through
//! every codec unchanged, and whatever does not must be an `invalid_argument` error (the
//! client's fault), never a panic or another code.

use std::fmt::Debug;

use wasmkv::api::proto::{
    AckRequest, AddReplicaRequest, DeleteRequest, FollowRequest, GetRequest, GetUpdatesRequest,
    MultiGetRequest, RemoveReplicaRequest, SetRequest, SubscribeRequest, SubscribeResponse,
    WatchRequest, WatchResponse, WriteRequest,
};
use wasmkv::api::{Code, Codec, WireMessage};

/// Decode `body` with `codec` as each message a node decodes from the network and check the
/// ones that decode: every request with fields, and the stream messages a replica (from its
/// primary) and the client (from a node) decode. Messages without fields are left out: every
/// body is one of them, so they would test nothing.
pub fn check_every_message(codec: Codec, body: &[u8]) {
    check::<GetRequest>(codec, body);
    check::<SetRequest>(codec, body);
    check::<DeleteRequest>(codec, body);
    check::<GetUpdatesRequest>(codec, body);
    check::<MultiGetRequest>(codec, body);
    check::<WriteRequest>(codec, body);
    check::<WatchRequest>(codec, body);
    check::<AddReplicaRequest>(codec, body);
    check::<RemoveReplicaRequest>(codec, body);
    check::<FollowRequest>(codec, body);
    check::<SubscribeRequest>(codec, body);
    check::<AckRequest>(codec, body);
    check::<SubscribeResponse>(codec, body);
    check::<WatchResponse>(codec, body);
}

/// Decode `body` as a `T`; check the message if it decodes, or the error if not.
pub fn check<T: WireMessage + PartialEq + Debug>(codec: Codec, body: &[u8]) -> Option<T> {
    match codec.decode::<T>(body) {
        Ok(message) => {
            assert_round_trips(&message);
            Some(message)
        }
        Err(e) => {
            assert_eq!(e.code, Code::InvalidArgument, "{}", e.message);
            None
        }
    }
}

/// Every codec decodes its own encoding of `message` back to `message`: a value one codec
/// accepts is one every codec can carry, so a client may switch codecs without losing data.
pub fn assert_round_trips<T: WireMessage + PartialEq + Debug>(message: &T) {
    for codec in Codec::ALL {
        let bytes = codec.encode(message);
        let again: T = codec.decode(&bytes).unwrap_or_else(|e| {
            panic!(
                "{codec:?} refuses its own encoding of {message:?}: {}",
                e.message
            )
        });
        assert_eq!(&again, message, "{codec:?} round trip changed the message");
    }
}
