//! Byte fields of a CBOR request that share the request body's buffer instead of copying it.
//!
//! Every `bytes` field of the wire types deserializes through [`deserialize`] (the build script
//! puts it there). While [`sharing`] runs a decode, a byte string that lies inside the body
//! becomes a slice of it: a reference count, where a copy was an allocation, a `memcpy` and a
//! free. A batched write of 16 keys made three such copies per key, one of them the key the
//! pending write keeps. Anything else (another body, another format, a decode outside
//! [`sharing`]) is copied as before.
//!
//! The slices keep the whole body alive, so they are for requests only, whose keys and values
//! are dropped once the write is applied or the answer written; the store copies what it keeps
//! into entries of its own.
//!
//! serde has no way to hand a buffer to a field's deserializer, hence the thread-local: set by
//! [`sharing`] around one synchronous decode and cleared by a guard even if the decode panics.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{Error, SeqAccess, Visitor};

thread_local! {
    /// The body being decoded on this thread, empty outside [`sharing`].
    static SOURCE: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
}

/// Runs `decode` with `body` as the buffer its byte fields may share.
pub fn sharing<T>(body: &Bytes, decode: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            SOURCE.with(|source| *source.borrow_mut() = Bytes::new());
        }
    }
    SOURCE.with(|source| *source.borrow_mut() = body.clone());
    let _clear = Clear;
    decode()
}

/// A slice of the body being decoded when `bytes` lies inside it, else a copy.
fn share(bytes: &[u8]) -> Bytes {
    SOURCE.with(|source| {
        let source = source.borrow();
        let inside = source.as_ptr_range();
        let range = bytes.as_ptr_range();
        if !bytes.is_empty() && inside.start <= range.start && range.end <= inside.end {
            source.slice_ref(bytes)
        } else {
            Bytes::copy_from_slice(bytes)
        }
    })
}

/// A `bytes` field: accepts what `Bytes`'s own `Deserialize` accepts (a byte string, a string
/// or a sequence of integers), sharing the body where it can.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_bytes(BytesVisitor)
}

/// A `repeated bytes` field.
pub fn deserialize_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Bytes>, D::Error> {
    deserializer.deserialize_seq(ListVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share(v))
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes::from(out))
    }
}

struct ListVisitor;

/// One element of a `repeated bytes` field, through [`deserialize`].
struct Element(Bytes);

impl<'de> serde::Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Element)
    }
}

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<Bytes>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of byte strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Bytes>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Element(bytes)) = seq.next_element()? {
            out.push(bytes);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Codec;
    use crate::api::proto::{MultiGetRequest, Mutation, Op, WriteRequest};

    fn write_request() -> WriteRequest {
        WriteRequest {
            mutations: vec![Mutation {
                op: Op::Set.into(),
                key: Bytes::from_static(b"key"),
                value: Bytes::from_static(b"value"),
                ttl_ms: 0,
            }],
            ..Default::default()
        }
    }

    fn inside(body: &Bytes, field: &Bytes) -> bool {
        body.as_ptr_range().contains(&field.as_ptr())
    }

    #[test]
    fn byte_fields_share_the_body_only_while_sharing() {
        let body = Bytes::from(Codec::Cbor.encode(&write_request()));
        let shared: WriteRequest = sharing(&body, || Codec::Cbor.decode(&body)).unwrap();
        assert_eq!(shared, write_request());
        let set = &shared.mutations[0];
        assert!(inside(&body, &set.key) && inside(&body, &set.value));

        let copied: WriteRequest = Codec::Cbor.decode(&body).unwrap();
        assert_eq!(copied, shared);
        let set = &copied.mutations[0];
        assert!(!inside(&body, &set.key) && !inside(&body, &set.value));
    }

    #[test]
    fn requests_decoded_for_serving_share_their_body_in_protobuf_and_cbor() {
        for codec in Codec::ALL {
            let body = Bytes::from(codec.encode(&write_request()));
            let decoded: WriteRequest = codec.decode_shared(&body).unwrap();
            assert_eq!(decoded, write_request(), "{codec:?}");
            // JSON carries bytes as base64, which has to be decoded into a buffer of its own.
            let shares = codec != Codec::Json;
            assert_eq!(
                inside(&body, &decoded.mutations[0].key),
                shares,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_body_other_than_the_one_shared_is_copied() {
        let request = MultiGetRequest {
            keys: vec![Bytes::from_static(b"a"), Bytes::new()],
        };
        let body = Bytes::from(Codec::Cbor.encode(&request));
        let other = Bytes::from_static(b"unrelated");
        let decoded: MultiGetRequest = sharing(&other, || Codec::Cbor.decode(&body)).unwrap();
        assert_eq!(decoded, request);
        assert!(!inside(&body, &decoded.keys[0]));
    }

    #[test]
    fn the_body_is_let_go_after_a_decode_even_a_failed_one() {
        let body = Bytes::from(vec![0xff; 8]);
        let failed = sharing(&body, || Codec::Cbor.decode::<WriteRequest>(&body));
        assert!(failed.is_err());
        SOURCE.with(|source| assert!(source.borrow().is_empty()));
        let panicked = std::panic::catch_unwind(|| sharing(&body, || panic!("in a decode")));
        assert!(panicked.is_err());
        SOURCE.with(|source| assert!(source.borrow().is_empty()));
    }

    #[test]
    fn other_serde_formats_still_read_bytes_as_sequences_and_strings() {
        let from_seq: MultiGetRequest = serde_json::from_str(r#"{"keys":[[104,105]]}"#).unwrap();
        assert_eq!(from_seq.keys, [Bytes::from_static(b"hi")]);
        let from_str: MultiGetRequest = serde_json::from_str(r#"{"keys":["hi"]}"#).unwrap();
        assert_eq!(from_str.keys, [Bytes::from_static(b"hi")]);
    }
}
