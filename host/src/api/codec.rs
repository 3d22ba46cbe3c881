//! The three body encodings of every message: protobuf, proto3 JSON and CBOR.
//!
//! Protobuf is prost's. JSON goes through prost-reflect's dynamic messages, which implement the
//! proto3 JSON mapping exactly (camelCase or original field names accepted, bytes as base64,
//! 64-bit integers as strings) from the descriptor. CBOR is serde on the generated structs:
//! a map keyed by the proto field names, bytes as byte strings, integers and enums as integers,
//! unknown keys ignored (so old servers accept newer clients' extra fields). The CBOR codec is
//! minicbor-serde, chosen by measurement as for the guest SDK: ciborium's decoding was ~10% of
//! the node's CPU under batched writes of 16 keys.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ConnectError;
use super::shared_bytes;

/// What every wire message supports.
pub trait WireMessage:
    Message + ReflectMessage + Serialize + DeserializeOwned + Default + Send + 'static
{
}

impl<T> WireMessage for T where
    T: Message + ReflectMessage + Serialize + DeserializeOwned + Default + Send + 'static
{
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Proto,
    Json,
    Cbor,
}

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Proto, Codec::Json, Codec::Cbor];

    pub fn name(self) -> &'static str {
        match self {
            Codec::Proto => "proto",
            Codec::Json => "json",
            Codec::Cbor => "cbor",
        }
    }

    /// The codec of a unary request's `Content-Type` (`application/cbor`, parameters ignored).
    pub fn from_unary_content_type(content_type: &str) -> Option<Codec> {
        Codec::from_media_type(content_type, "application/")
    }

    /// The codec of a streaming request's `Content-Type` (`application/connect+cbor`).
    pub fn from_stream_content_type(content_type: &str) -> Option<Codec> {
        Codec::from_media_type(content_type, "application/connect+")
    }

    /// The codec named after `prefix` in the media type of a Content-Type header, compared
    /// without regard to case (media types are case-insensitive) and without parameters.
    /// Compared in place: this runs on every request.
    fn from_media_type(content_type: &str, prefix: &str) -> Option<Codec> {
        // Up to the parameters, if any; a plain loop, as the value is short (`split` set up a
        // searcher per request).
        let end = content_type
            .bytes()
            .position(|b| b == b';')
            .unwrap_or(content_type.len());
        let media_type = content_type[..end].trim_ascii();
        let (head, name) = media_type.split_at_checked(prefix.len())?;
        if !head.eq_ignore_ascii_case(prefix) {
            return None;
        }
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    pub fn unary_content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
            Codec::Cbor => "application/cbor",
        }
    }

    pub fn stream_content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/connect+proto",
            Codec::Json => "application/connect+json",
            Codec::Cbor => "application/connect+cbor",
        }
    }

    /// Decodes a request body whose byte fields may keep slices of it instead of copies (for
    /// protobuf and CBOR; see `shared_bytes`). For bodies that are dropped soon after, as a
    /// request's are.
    pub fn decode_shared<T: WireMessage>(self, body: &Bytes) -> Result<T, ConnectError> {
        match self {
            // prost takes byte fields out of a `Bytes` buffer as slices of it.
            Codec::Proto if !body.is_empty() => {
                T::decode(body.clone()).map_err(|e| self.malformed::<T>(&e))
            }
            Codec::Cbor => shared_bytes::sharing(body, || self.decode(body)),
            _ => self.decode(body),
        }
    }

    fn malformed<T: WireMessage>(self, e: &dyn std::fmt::Display) -> ConnectError {
        ConnectError::invalid_argument(format!(
            "malformed {} body for {}: {e}",
            self.name(),
            T::default().descriptor().full_name()
        ))
    }

    pub fn decode<T: WireMessage>(self, body: &[u8]) -> Result<T, ConnectError> {
        let malformed = |e: &dyn std::fmt::Display| self.malformed::<T>(e);
        // An empty body is the empty message in every codec, as it is in protobuf, so a
        // request with only default fields may omit its body whatever the codec.
        if body.is_empty() {
            return Ok(T::default());
        }
        match self {
            Codec::Proto => T::decode(body).map_err(|e| malformed(&e)),
            Codec::Cbor => minicbor_serde::from_slice(body).map_err(|e| malformed(&e)),
            Codec::Json => {
                let mut de = serde_json::Deserializer::from_slice(body);
                let dynamic = DynamicMessage::deserialize(T::default().descriptor(), &mut de)
                    .map_err(|e| malformed(&e))?;
                de.end().map_err(|e| malformed(&e))?;
                dynamic.transcode_to::<T>().map_err(|e| malformed(&e))
            }
        }
    }

    pub fn encode<T: WireMessage>(self, message: &T) -> Vec<u8> {
        match self {
            Codec::Proto => message.encode_to_vec(),
            Codec::Cbor => {
                // Sized once from the protobuf length, which CBOR exceeds by its field names:
                // growing from empty took a malloc and two or three reallocs per response.
                let mut out = Vec::with_capacity(message.encoded_len() * 3 / 2 + 64);
                message
                    .serialize(&mut minicbor_serde::Serializer::new(&mut out))
                    .expect("writing CBOR to a Vec cannot fail");
                out
            }
            Codec::Json => serde_json::to_vec(&message.transcode_to_dynamic())
                .expect("a dynamic message always serializes to JSON"),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::api::proto::{GetResponse, SetRequest};

    fn sample() -> SetRequest {
        SetRequest {
            key: Bytes::from_static(b"k\xff"),
            value: Bytes::from_static(b"\x00v"),
            ttl_ms: 1500,
            min_replicas: 0,
            if_version: Some(0),
        }
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in Codec::ALL {
            let bytes = codec.encode(&sample());
            assert_eq!(
                codec.decode::<SetRequest>(&bytes).unwrap(),
                sample(),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn cbor_is_a_map_of_field_names_with_byte_strings() {
        let value: ciborium::Value =
            ciborium::from_reader(&Codec::Cbor.encode(&sample())[..]).unwrap();
        let map = value.as_map().unwrap();
        let get = |name: &str| {
            map.iter()
                .find(|(k, _)| k.as_text() == Some(name))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("key").unwrap().as_bytes().unwrap(), b"k\xff");
        assert_eq!(get("ttl_ms").unwrap().as_integer().unwrap(), 1500.into());
        assert_eq!(get("if_version").unwrap().as_integer().unwrap(), 0.into());
        // Unknown keys from newer clients are ignored; absent fields take their defaults.
        let mut extra = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![
                ("key".into(), ciborium::Value::Bytes(b"a".to_vec())),
                ("future_field".into(), 7.into()),
            ]),
            &mut extra,
        )
        .unwrap();
        let decoded: SetRequest = Codec::Cbor.decode(&extra).unwrap();
        assert_eq!(
            (decoded.key.as_ref(), decoded.if_version),
            (&b"a"[..], None)
        );
    }

    #[test]
    fn json_follows_the_proto3_mapping() {
        let json = String::from_utf8(Codec::Json.encode(&sample())).unwrap();
        assert!(json.contains("\"key\":\"a/8=\""), "{json}");
        assert!(json.contains("\"ttlMs\":\"1500\""), "{json}");
        let parsed: SetRequest = Codec::Json
            .decode(br#"{"key":"a/8=","value":"AHY=","ttl_ms":1500,"ifVersion":"0"}"#)
            .unwrap();
        assert_eq!(parsed, sample());
        for codec in Codec::ALL {
            let empty: GetResponse = codec.decode(b"").unwrap();
            assert_eq!(empty, GetResponse::default(), "{codec:?}");
        }
    }

    #[test]
    fn garbage_is_invalid_argument_naming_codec_and_message() {
        for codec in Codec::ALL {
            let err = codec.decode::<SetRequest>(b"\xff\xfe garbage").unwrap_err();
            assert_eq!(err.code, crate::api::error::Code::InvalidArgument);
            assert!(err.message.contains(codec.name()), "{}", err.message);
            assert!(
                err.message.contains("kvstore.v1.SetRequest"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Codec::from_unary_content_type("Application/CBOR; charset=utf-8"),
            Some(Codec::Cbor)
        );
        assert_eq!(
            Codec::from_stream_content_type("application/connect+json"),
            Some(Codec::Json)
        );
        assert_eq!(Codec::from_unary_content_type("text/plain"), None);
        assert_eq!(
            Codec::from_unary_content_type("application/connect+proto"),
            None
        );
    }
}
