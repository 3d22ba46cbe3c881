//! The one CBOR codec both sides use (minicbor-serde, chosen by measurement: see README.md).
//!
//! Invariants: decoding never panics, whatever the bytes; one buffer holds exactly one CBOR item
//! (trailing bytes are an error, so a truncated or concatenated buffer cannot pass); a reply
//! that is a CBOR text string instead of the expected map is the guest reporting an error.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Major type 3 (text string) occupies the initial bytes 0x60..=0x7f.
const TEXT_STRING: std::ops::RangeInclusive<u8> = 0x60..=0x7f;

/// A value could not be turned into CBOR (a `Serialize` impl failed).
#[derive(Debug, Error)]
#[error("cannot encode CBOR: {message}")]
pub struct EncodeError {
    message: String,
}

/// Bytes that are not one well-formed CBOR item of the expected shape.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer is empty.
    #[error("empty buffer where CBOR was expected")]
    Empty,
    /// Malformed CBOR, or CBOR of another shape (missing field, wrong type, …).
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// A complete item was read but bytes remain after it.
    #[error("{0} unexpected bytes after the CBOR item")]
    TrailingBytes(usize),
}

/// A hook's reply that is not the output it should be.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplyError {
    /// The guest answered with an error message (a CBOR text string) instead of an output.
    #[error("plugin error: {0}")]
    Guest(String),
    /// The reply is neither a valid output nor an error message.
    #[error("bad reply from plugin: {0}")]
    Malformed(#[from] DecodeError),
}

/// Encode `value` as CBOR (structs as maps keyed by field name, byte fields as byte strings).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    // Most messages are small; starting at 128 bytes saves the first few reallocations.
    let mut out = Vec::with_capacity(128);
    value
        .serialize(&mut minicbor_serde::Serializer::new(&mut out))
        .map_err(|e| EncodeError {
            message: e.to_string(),
        })?;
    Ok(out)
}

/// Decode exactly one CBOR item from `bytes` into `T`. Unknown map keys are ignored.
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut de = minicbor_serde::Deserializer::new(bytes);
    let value = T::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let rest = bytes.len() - de.decoder().position();
    if rest != 0 {
        return Err(DecodeError::TrailingBytes(rest));
    }
    Ok(value)
}

/// Encode an error message the way a guest reports one: a single CBOR text string.
pub fn encode_error(message: &str) -> Vec<u8> {
    let len = message.len() as u64;
    let mut out = Vec::with_capacity(message.len() + 9);
    // A definite-length text string header (RFC 8949 §3.1): the argument in the low five bits
    // when below 24, else in the 1, 2, 4 or 8 bytes that follow.
    match len {
        0..=23 => out.push(0x60 | len as u8),
        24..=0xff => out.extend([0x78, len as u8]),
        0x100..=0xffff => {
            out.push(0x79);
            out.extend((len as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0x7a);
            out.extend((len as u32).to_be_bytes());
        }
        _ => {
            out.push(0x7b);
            out.extend(len.to_be_bytes());
        }
    }
    out.extend_from_slice(message.as_bytes());
    out
}

/// Decode a hook's (or `wasmkv_init`'s) reply: the output `T`, or the guest's error message.
pub fn decode_reply<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ReplyError> {
    match bytes.first() {
        Some(b) if TEXT_STRING.contains(b) => Err(ReplyError::Guest(decode::<String>(bytes)?)),
        _ => Ok(decode(bytes)?),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::abi::{FilterInput, Verdict, Victims, WriteRequest};

    #[test]
    fn round_trip_uses_field_names_and_byte_strings() {
        let req = WriteRequest::set(b"user:1".to_vec(), b"v".to_vec()).with_ttl_ms(5);
        let bytes = encode(&req).unwrap();
        // {"op": "set", "key": h'757365723a31', ...}: a map of 4, text keys, byte-string key.
        assert_eq!(bytes[0], 0xa4);
        assert_eq!(&bytes[1..4], b"\x62op");
        assert!(bytes.windows(7).any(|w| w == b"\x46user:1"));
        assert_eq!(decode::<WriteRequest>(&bytes).unwrap(), req);
    }

    #[test]
    fn trailing_and_empty_input_are_errors() {
        let mut bytes = encode(&Verdict::allow()).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<Verdict>(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(decode::<Verdict>(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn error_replies_are_text_strings_of_any_length() {
        for len in [0, 23, 24, 255, 256, 70_000] {
            let message = "x".repeat(len);
            let reply = encode_error(&message);
            assert_eq!(decode::<String>(&reply).unwrap(), message);
            assert_eq!(
                decode_reply::<Verdict>(&reply),
                Err(ReplyError::Guest(message))
            );
        }
        let ok = encode(&Verdict::deny("no")).unwrap();
        assert_eq!(decode_reply::<Verdict>(&ok).unwrap(), Verdict::deny("no"));
        assert!(matches!(
            decode_reply::<Verdict>(&[0xa0]),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_even_deeply_nested() {
        // {"allow": true, "reason": "", "extra": [[[[...]]]]} with 100 000 nested arrays.
        let mut bytes = vec![0xa3, 0x65];
        bytes.extend(b"allow");
        bytes.push(0xf5);
        bytes.push(0x66);
        bytes.extend(b"reason");
        bytes.push(0x60);
        bytes.push(0x65);
        bytes.extend(b"extra");
        bytes.extend(std::iter::repeat_n(0x81, 100_000));
        bytes.push(0x00);
        assert_eq!(decode::<Verdict>(&bytes).unwrap(), Verdict::allow());
    }

    #[test]
    fn huge_declared_lengths_are_errors_not_allocations() {
        // A byte string and an array claiming 2^64-1 items, with nothing behind them.
        for bytes in [
            &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode::<Vec<u8>>(bytes).is_err());
            assert!(decode::<FilterInput>(bytes).is_err());
        }
    }

    #[test]
    fn indefinite_containers_pass_but_strings_must_be_definite() {
        // {_ "victims": [_ 1, 2]}
        let victims = [
            0xbf, 0x67, b'v', b'i', b'c', b't', b'i', b'm', b's', 0x9f, 1, 2, 0xff, 0xff,
        ];
        assert_eq!(decode::<Victims>(&victims).unwrap().victims, vec![1, 2]);
        // {"allow": true, "reason": (_ "a", "b")}
        let mut verdict = vec![0xa2, 0x65];
        verdict.extend(b"allow\xf5\x66reason\x7f\x61a\x61b\xff");
        assert!(matches!(
            decode::<Verdict>(&verdict),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<WriteRequest>(&bytes);
            let _ = decode::<FilterInput>(&bytes);
            let _ = decode_reply::<Verdict>(&bytes);
        }

        #[test]
        fn truncated_requests_are_errors(cut in 0usize..40) {
            let bytes = encode(&WriteRequest::set(b"key".to_vec(), vec![1; 16])).unwrap();
            prop_assume!(cut < bytes.len());
            prop_assert!(decode::<WriteRequest>(&bytes[..cut]).is_err());
        }
    }
}
