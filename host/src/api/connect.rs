//! The Connect protocol over hyper: unary calls and server-streaming envelopes.
//!
//! Unary: `POST /pkg.Service/Method`, the body one message in the codec named by
//! `Content-Type`, the response in the same codec; errors as JSON `{"code","message"}` with the
//! HTTP status the protocol assigns. Streaming: `application/connect+<codec>` bodies made of
//! envelopes (`flags:u8 length:u32be data`); the response ends with an end-of-stream envelope
//! (flag 0x02) carrying `{}` or `{"error":{...}}`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use super::codec::{Codec, WireMessage};
use super::error::{Code, ConnectError};
use super::head::{CONNECT_TIMEOUT_MS, Headers};

/// The body of every response: one whole message, or the envelopes of a stream as they are
/// sent on the channel. An enum, not a boxed body: the box was one more allocation on every
/// request.
pub enum ResponseBody {
    /// The whole body (empty once sent).
    Full(Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

/// The body of a request: hyper's, or the whole body the HTTP/1.1 fast path (`h1`) has
/// already read.
pub enum RequestBody {
    Hyper(Incoming),
    Whole(Bytes),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => {
                Poll::Ready((!bytes.is_empty()).then(|| Ok(Frame::data(std::mem::take(bytes)))))
            }
            ResponseBody::Stream(rx) => rx
                .poll_recv(cx)
                .map(|item| item.map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_empty(),
            ResponseBody::Stream(_) => false,
        }
    }

    // A whole message's exact size is what lets hyper send a Content-Length.
    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Flag of the envelope that ends a stream.
pub const END_STREAM_FLAG: u8 = 0x02;
/// Flag of a compressed envelope (we never compress, and refuse compressed input).
const COMPRESSED_FLAG: u8 = 0x01;

pub fn full(body: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::Full(body.into())
}

/// The error response of a unary call.
pub fn error_response(error: &ConnectError) -> Response<ResponseBody> {
    let mut response = Response::builder()
        .status(error.code.http_status())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(primary) = error
        .primary
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        response = response.header(PRIMARY_HEADER, primary);
    }
    response
        .body(full(error.to_json()))
        .expect("static headers are valid")
}

/// Response header naming the primary when a replica refuses a write.
pub const PRIMARY_HEADER: &str = "wasmkv-primary";

/// An answer to a request, for either HTTP path to send: nearly always a unary call's message,
/// which the HTTP/1.1 fast path writes out without building an `http::Response` (whose header
/// map cost two allocations per request for one line).
pub enum Answer {
    /// `200 OK` with one message in the codec the call used.
    Message {
        codec: Codec,
        body: Bytes,
    },
    Response(Response<ResponseBody>),
}

impl From<Response<ResponseBody>> for Answer {
    fn from(response: Response<ResponseBody>) -> Self {
        Answer::Response(response)
    }
}

impl From<Answer> for Response<ResponseBody> {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Message { codec, body } => Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(codec.unary_content_type()),
                )
                .body(full(body))
                .expect("static headers are valid"),
            Answer::Response(response) => response,
        }
    }
}

/// The answer to a unary call that succeeded.
pub fn message_answer<T: WireMessage>(codec: Codec, message: &T) -> Answer {
    Answer::Message {
        codec,
        body: codec.encode(message).into(),
    }
}

/// The codec a unary request asks for; a missing or unsupported type is a clear error.
pub fn unary_codec(headers: &dyn Headers) -> Result<Codec, ConnectError> {
    let content_type = headers.text(&header::CONTENT_TYPE).unwrap_or("");
    Codec::from_unary_content_type(content_type).ok_or_else(|| {
        ConnectError::invalid_argument(format!(
            "unsupported Content-Type {content_type:?}: use application/cbor, \
             application/json or application/proto"
        ))
    })
}

/// The codec of a server-streaming request (`application/connect+<codec>`).
pub fn stream_codec(headers: &dyn Headers) -> Result<Codec, ConnectError> {
    let content_type = headers.text(&header::CONTENT_TYPE).unwrap_or("");
    Codec::from_stream_content_type(content_type).ok_or_else(|| {
        ConnectError::invalid_argument(format!(
            "unsupported Content-Type {content_type:?} for a streaming method: use \
             application/connect+cbor, application/connect+json or application/connect+proto"
        ))
    })
}

/// The deadline a client set with `Connect-Timeout-Ms` (at most 10 digits, per the protocol).
pub fn timeout(headers: &dyn Headers) -> Result<Option<Duration>, ConnectError> {
    let Some(value) = headers.raw(&CONNECT_TIMEOUT_MS) else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            ConnectError::invalid_argument(format!(
                "Connect-Timeout-Ms must be a whole number of milliseconds (at most 10 digits), \
                 got {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Read a request body of at most `limit` bytes (the setting `limits.<limit_name>`). A
/// declared `Content-Length` over the limit is refused before anything is read; otherwise
/// reading stops as soon as the limit is passed.
pub async fn read_body<B>(
    headers: &dyn Headers,
    body: B,
    limit: usize,
    limit_name: &str,
) -> Result<Bytes, ConnectError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || too_large(limit, limit_name);
    let declared = headers
        .text(&header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // Gathered by hand rather than with `collect()`: a body is nearly always one frame, which
    // is then returned as it is, where `collect()` queues frames in a deque it allocates.
    let mut body = Limited::new(body, limit);
    let mut whole = Bytes::new();
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ConnectError::new(
                    Code::Canceled,
                    format!("could not read the request body: {e}"),
                )
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing a unary call reads
        };
        if whole.is_empty() && joined.is_empty() {
            whole = data;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&std::mem::take(&mut whole));
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() {
        whole
    } else {
        joined.freeze()
    })
}

/// The refusal of a request body over `limit` bytes (the setting `limits.<limit_name>`).
pub fn too_large(limit: usize, limit_name: &str) -> ConnectError {
    ConnectError::new(
        Code::ResourceExhausted,
        format!("request body exceeds {limit} bytes (limits.{limit_name})"),
    )
}

/// One envelope: flags, big-endian length, data.
pub fn envelope(flags: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + data.len());
    out.put_u8(flags);
    out.put_u32(data.len() as u32);
    out.put_slice(data);
    out.freeze()
}

/// The end-of-stream envelope, with the error that ended the stream if any.
pub fn end_stream(error: Option<&ConnectError>) -> Bytes {
    let json = match error {
        None => b"{}".to_vec(),
        Some(e) => serde_json::to_vec(&serde_json::json!({
            "error": { "code": e.code.as_str(), "message": e.message }
        }))
        .expect("a JSON object always serializes"),
    };
    envelope(END_STREAM_FLAG, &json)
}

/// The single request message of a server-streaming call: exactly one uncompressed envelope.
pub fn decode_stream_request<T: WireMessage>(codec: Codec, body: &[u8]) -> Result<T, ConnectError> {
    let bad =
        |why: &str| ConnectError::invalid_argument(format!("malformed request envelope: {why}"));
    if body.len() < 5 {
        return Err(bad("shorter than its 5-byte header"));
    }
    if body[0] & COMPRESSED_FLAG != 0 {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "compressed messages are not supported; send Connect-Content-Encoding: identity",
        ));
    }
    let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
    if body.len() != 5 + len {
        return Err(bad("its length does not match the body"));
    }
    codec.decode(&body[5..])
}

/// Headers every Connect streaming response carries.
pub fn stream_response_headers(codec: Codec) -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_content_type()),
    )]
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http::HeaderMap;

    use super::*;
    use crate::api::proto::{GetRequest, GetResponse};

    /// A request body arriving in the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Frames {
        fn data(chunks: &[&'static str]) -> Self {
            Frames(
                chunks
                    .iter()
                    .map(|c| Frame::data(Bytes::from(*c)))
                    .collect(),
            )
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }

    async fn read(body: Frames, limit: usize) -> Result<Bytes, ConnectError> {
        read_body(&HeaderMap::new(), body, limit, "max_request_bytes").await
    }

    #[tokio::test]
    async fn bodies_are_read_whole_whatever_their_frames() {
        let one = Bytes::from_static(b"one frame");
        let body = Frames(VecDeque::from([Frame::data(one.clone())]));
        let read_one = read(body, 100).await.unwrap();
        assert_eq!(read_one, one);
        assert_eq!(
            read_one.as_ptr(),
            one.as_ptr(),
            "a single frame is not copied"
        );

        let split = read(Frames::data(&["", "ab", "", "cd", "e"]), 100).await;
        assert_eq!(split.unwrap(), "abcde");
        let mut with_trailers = Frames::data(&["ab", "cd"]);
        with_trailers.0.push_back(Frame::trailers(HeaderMap::new()));
        assert_eq!(read(with_trailers, 100).await.unwrap(), "abcd");
        assert_eq!(read(Frames::data(&[]), 100).await.unwrap(), "");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_as_they_arrive_or_as_declared() {
        assert_eq!(
            read(Frames::data(&["abc", "de"]), 5).await.unwrap(),
            "abcde"
        );
        let err = read(Frames::data(&["abc", "def"]), 5).await.unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert!(err.message.contains("limits.max_request_bytes"), "{err:?}");

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        let declared = read_body(&headers, Frames::data(&["ab"]), 5, "max_request_bytes").await;
        assert_eq!(declared.unwrap_err().code, Code::ResourceExhausted);
    }

    /// hyper sends a Content-Length only for a body that states its exact size.
    #[tokio::test]
    async fn whole_messages_state_their_length_and_streams_end_when_the_sender_does() {
        let response = Response::from(message_answer(Codec::Json, &GetResponse::default()));
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");

        let (tx, rx) = mpsc::channel(2);
        let stream = ResponseBody::Stream(rx);
        assert_eq!(stream.size_hint().exact(), None);
        assert!(!stream.is_end_stream());
        tx.send(Bytes::from_static(b"one")).await.unwrap();
        drop(tx);
        assert_eq!(stream.collect().await.unwrap().to_bytes(), "one");
    }

    #[test]
    fn timeouts_are_validated() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout(&headers).unwrap(), None);
        headers.insert("connect-timeout-ms", HeaderValue::from_static("250"));
        assert_eq!(timeout(&headers).unwrap(), Some(Duration::from_millis(250)));
        for bad in ["-1", "abc", "12345678901", ""] {
            headers.insert("connect-timeout-ms", HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                timeout(&headers).unwrap_err().code,
                Code::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn stream_requests_are_one_envelope() {
        let message = GetRequest {
            key: Bytes::from_static(b"k"),
            min_lsn: 3,
        };
        let body = envelope(0, &Codec::Cbor.encode(&message));
        assert_eq!(
            decode_stream_request::<GetRequest>(Codec::Cbor, &body).unwrap(),
            message
        );
        assert!(decode_stream_request::<GetRequest>(Codec::Cbor, &body[..4]).is_err());
        let mut compressed = body.to_vec();
        compressed[0] = COMPRESSED_FLAG;
        assert_eq!(
            decode_stream_request::<GetRequest>(Codec::Cbor, &compressed)
                .unwrap_err()
                .code,
            Code::Unimplemented
        );
    }

    #[test]
    fn end_of_stream_carries_the_error() {
        let eos = end_stream(Some(&ConnectError::unavailable("gone")));
        assert_eq!(eos[0], END_STREAM_FLAG);
        let json: serde_json::Value = serde_json::from_slice(&eos[5..]).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
        assert_eq!(&end_stream(None)[5..], b"{}");
    }
}
