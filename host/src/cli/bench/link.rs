//! The bench's side of the wire: requests built once and patched per request, and the three
//! kinds of connection that carry them.
//!
//! HTTP/1.1 is spoken directly on the socket. A closed loop with one request in flight needs
//! nothing of a general client (no pipelining, no pool, no streaming bodies), and measured
//! against `wrk` on 2 cores, hyper's client side spent about three times `wrk`'s user CPU per
//! request (its dispatch channels, header maps, allocations): CPU taken from the node on the
//! same machine, which lowered the node's figures. Here a request is one `write` of bytes
//! that were serialized once (head and body) with only the key digits rewritten, and a
//! response is parsed in place with httparse. HTTP/2 goes through hyper, whose framing and
//! flow control are not worth redoing.
//!
//! RESP (Redis's protocol) is the third: the same workloads sent to a Redis server by this
//! same client, so that the two servers' latencies are timed alike (`redis-benchmark` starts
//! its clock one event-loop turn after this client would, and tops out on one core).

use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use wasmkv::api::proto::{Mutation, Op, WriteRequest};
use wasmkv::api::{Code, Codec, ConnectError};
use wasmkv::client::error_from_response;

use super::{KEY_DIGITS, KEY_PREFIX, key};

/// Read at least this much room per `read`: every answer of the benchmark fits at once.
const READ_CHUNK: usize = 16 * 1024;
/// Response headers parsed at most (the node sends about five).
const MAX_HEADERS: usize = 32;

/// Write `n` as the 12 digits of a key into `out` (its last 12 digits if it had more).
pub(super) fn put_digits(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Bytes serialized once with placeholder keys, and where each key's digits are, so that a
/// request costs a few digit writes instead of an encode: every key has the same length, so
/// every request has the same layout.
#[derive(Debug)]
pub(super) struct Template {
    pub(super) bytes: Vec<u8>,
    digits: Vec<usize>,
}

impl Template {
    /// Locate the placeholders `key(0)` .. `key(count - 1)` in `bytes`, each exactly once.
    pub(super) fn new(bytes: Vec<u8>, count: usize) -> anyhow::Result<Template> {
        let mut digits = Vec::with_capacity(count);
        for i in 0..count as u64 {
            let needle = key(i);
            let needle = needle.as_bytes();
            let mut found = bytes
                .windows(needle.len())
                .enumerate()
                .filter(|(_, window)| *window == needle)
                .map(|(at, _)| at);
            match (found.next(), found.next()) {
                (Some(at), None) => digits.push(at + KEY_PREFIX.len()),
                _ => anyhow::bail!("the key {:?} is not in the request exactly once", key(i)),
            }
        }
        Ok(Template { bytes, digits })
    }

    /// Write the next keys into `bytes`, a copy of this template's bytes.
    pub(super) fn fill_in_place(&self, bytes: &mut [u8], mut next_key: impl FnMut() -> u64) {
        for &at in &self.digits {
            put_digits(&mut bytes[at..at + KEY_DIGITS], next_key());
        }
    }

    /// A copy with the next keys, built in `buf`, which is reused: once hyper has dropped the
    /// previous copy, the same allocation serves again.
    fn fill(&self, buf: &mut BytesMut, next_key: impl FnMut() -> u64) -> Bytes {
        buf.extend_from_slice(&self.bytes);
        self.fill_in_place(buf, next_key);
        buf.split().freeze()
    }
}

/// A Connect unary POST of `KVStore/{method}`, in both protocols' forms.
pub(super) struct ConnectCall {
    /// HTTP/1.1: the head up to `Content-Length` (request line, Host, Content-Type, version).
    head: String,
    /// HTTP/2: the absolute URI and the headers, cloned per request (reference counts only).
    uri: Uri,
    headers: HeaderMap,
}

impl ConnectCall {
    /// `origin_form` is the path HTTP/1.1 sends; `absolute` the URI HTTP/2 sends; `host` the
    /// node as HTTP/1.1's Host header names it.
    pub(super) fn new(origin_form: &str, absolute: &str, host: &str) -> anyhow::Result<Self> {
        let content_type = Codec::Cbor.unary_content_type();
        let head = format!(
            "POST {origin_form} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {content_type}\r\n\
             connect-protocol-version: 1\r\n"
        );
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            HeaderName::from_static("connect-protocol-version"),
            HeaderValue::from_static("1"),
        );
        let uri = absolute
            .parse()
            .map_err(|e| anyhow::anyhow!("bad request URI {absolute:?}: {e}"))?;
        Ok(ConnectCall { head, uri, headers })
    }

    /// The whole HTTP/1.1 request with `body`.
    pub(super) fn wire(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + 32 + body.len());
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The HTTP/2 request with `body`.
    pub(super) fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One kind of request of a workload, built for the protocol of the run.
pub(super) enum Call {
    /// HTTP/1.1: the whole request as sent, keys rewritten in place.
    Wire(Template),
    /// HTTP/2 Connect call: the CBOR body's keys filled in per request.
    Connect {
        target: Box<ConnectCall>,
        body: Template,
    },
    /// HTTP/2 REST GET: the URI's key filled in per request.
    Rest { uri: Template },
    /// RESP: commands pipelined in one write, keys rewritten in place; as many replies.
    Resp { commands: Template, replies: usize },
}

/// Append `args` as one RESP command (an array of bulk strings) to `out`.
pub(super) fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Append a RESP `SET key value`, with `PX ttl_ms` unless it is 0, to `out`.
pub(super) fn resp_set(out: &mut Vec<u8>, key: &[u8], value: &[u8], ttl_ms: u64) {
    if ttl_ms == 0 {
        resp_command(out, &[b"SET", key, value]);
    } else {
        let ttl = ttl_ms.to_string();
        resp_command(out, &[b"SET", key, value, b"PX", ttl.as_bytes()]);
    }
}

/// A connection's own copies of what its requests are built from.
pub(super) struct Caller<'a> {
    calls: &'a [Call],
    /// For `Call::Wire` and `Call::Resp`, the request bytes, rewritten in place by each
    /// request.
    wire: Vec<Vec<u8>>,
    buf: BytesMut,
}

impl<'a> Caller<'a> {
    pub(super) fn new(calls: &'a [Call]) -> Caller<'a> {
        let wire = calls
            .iter()
            .map(|call| match call {
                Call::Wire(template)
                | Call::Resp {
                    commands: template, ..
                } => template.bytes.clone(),
                Call::Connect { .. } | Call::Rest { .. } => Vec::new(),
            })
            .collect();
        Caller {
            calls,
            wire,
            buf: BytesMut::new(),
        }
    }

    /// Send call `which` with keys from `next_key` and wait for the whole answer.
    pub(super) async fn call(
        &mut self,
        link: &mut Link,
        which: usize,
        next_key: impl FnMut() -> u64,
        want_error: bool,
    ) -> Result<Option<ConnectError>, ConnectError> {
        match (&self.calls[which], link) {
            (Call::Wire(template), Link::Wire(wire)) => {
                let bytes = &mut self.wire[which];
                template.fill_in_place(bytes, next_key);
                wire.exchange(bytes, want_error).await
            }
            (Call::Resp { commands, replies }, Link::Resp(resp)) => {
                let bytes = &mut self.wire[which];
                commands.fill_in_place(bytes, next_key);
                resp.exchange(bytes, *replies, want_error).await
            }
            (Call::Connect { target, body }, Link::H2(h2)) => {
                let request = target.request(body.fill(&mut self.buf, next_key));
                h2.exchange(request, want_error).await
            }
            (Call::Rest { uri }, Link::H2(h2)) => {
                let uri = Uri::from_maybe_shared(uri.fill(&mut self.buf, next_key))
                    .expect("digits in place of digits keep a URI valid");
                let mut request = Request::new(Full::new(Bytes::new()));
                *request.uri_mut() = uri;
                h2.exchange(request, want_error).await
            }
            _ => unreachable!("the calls are built for the protocol of the links"),
        }
    }
}

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
    Resp,
}

impl Protocol {
    pub(super) fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Resp => "RESP",
        }
    }
}

/// One connection to the server.
pub(super) enum Link {
    Wire(WireLink),
    H2(H2Link),
    Resp(RespLink),
}

impl Link {
    pub(super) async fn open(connect_to: &str, protocol: Protocol) -> Result<Link, ConnectError> {
        let unavailable = |e: io::Error| {
            ConnectError::unavailable(format!("cannot connect to {connect_to}: {e}"))
        };
        let stream = TcpStream::connect(connect_to).await.map_err(unavailable)?;
        // One small request at a time per connection: Nagle's algorithm would only delay it.
        stream.set_nodelay(true).map_err(unavailable)?;
        if protocol == Protocol::Http2 {
            return H2Link::open(stream, connect_to).await.map(Link::H2);
        }
        let socket = Socket {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            ended: false,
            connect_to: connect_to.to_owned(),
        };
        Ok(match protocol {
            Protocol::Resp => Link::Resp(RespLink { socket }),
            _ => Link::Wire(WireLink {
                socket,
                closing: false,
            }),
        })
    }

    /// Whether another request may be sent (the node did not announce it closes the
    /// connection).
    pub(super) fn reusable(&self) -> bool {
        match self {
            Link::Wire(wire) => !wire.closing && !wire.socket.ended,
            Link::H2(h2) => !h2.sender.is_closed(),
            Link::Resp(resp) => !resp.socket.ended,
        }
    }

    /// Set every key of `keys` to `value`, without expiry, in one request (preloading):
    /// a `Write` sent as `call`, or pipelined SETs over RESP.
    pub(super) async fn set_all(
        &mut self,
        call: &ConnectCall,
        keys: Range<u64>,
        value: &Bytes,
    ) -> Result<Option<ConnectError>, ConnectError> {
        match self {
            Link::Resp(resp) => {
                let count = keys.clone().count();
                resp.exchange(&resp_sets(keys, value), count, true).await
            }
            Link::Wire(wire) => {
                let body = Codec::Cbor.encode(&write_of(keys, value));
                wire.exchange(&call.wire(&body), true).await
            }
            Link::H2(h2) => {
                let body = Codec::Cbor.encode(&write_of(keys, value));
                h2.exchange(call.request(Bytes::from(body)), true).await
            }
        }
    }
}

/// A `Write` setting every key of `keys` to `value`, without expiry.
pub(super) fn write_of(keys: Range<u64>, value: &Bytes) -> WriteRequest {
    WriteRequest {
        mutations: keys
            .map(|i| Mutation {
                op: Op::Set as i32,
                key: Bytes::from(key(i)),
                value: value.clone(),
                ttl_ms: 0,
            })
            .collect(),
        min_replicas: 0,
    }
}

/// Pipelined RESP SETs of every key of `keys` to `value`, without expiry.
pub(super) fn resp_sets(keys: Range<u64>, value: &[u8]) -> Vec<u8> {
    let mut commands = Vec::new();
    for i in keys {
        resp_set(&mut commands, key(i).as_bytes(), value, 0);
    }
    commands
}

/// A bare TCP socket and the answer being read from it.
struct Socket {
    stream: TcpStream,
    /// The answer being read; its allocation serves every answer.
    buf: Vec<u8>,
    /// The server closed the connection.
    ended: bool,
    connect_to: String,
}

impl Socket {
    /// Write all of `request`, and forget the last answer: with one request in flight,
    /// whatever is in the buffer belonged to it.
    async fn send(&mut self, request: &[u8]) -> Result<(), ConnectError> {
        self.buf.clear();
        self.stream
            .write_all(request)
            .await
            .map_err(|e| ConnectError::unavailable(format!("{}: {e}", self.connect_to)))
    }

    async fn read_more(&mut self) -> Result<(), ConnectError> {
        self.buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => {
                self.ended = true;
                Err(ConnectError::unavailable(format!(
                    "{} closed the connection",
                    self.connect_to
                )))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(ConnectError::unavailable(format!(
                "{}: {e}",
                self.connect_to
            ))),
        }
    }

    fn unreadable(&self, why: &str) -> ConnectError {
        ConnectError::internal(format!("{}: {why}", self.connect_to))
    }
}

/// HTTP/1.1 on a bare socket.
pub(super) struct WireLink {
    socket: Socket,
    /// The node announced it closes the connection after the last answer.
    closing: bool,
}

/// What the head of an answer says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    len: usize,
    status: u16,
    content_length: usize,
    close: bool,
}

impl WireLink {
    /// Send `request` and read the whole answer: Ok(None) for 200, Ok(Some) for the node's
    /// error (its message read only when `want_error`: only the first error is reported),
    /// Err when the connection failed or the answer cannot be read.
    async fn exchange(
        &mut self,
        request: &[u8],
        want_error: bool,
    ) -> Result<Option<ConnectError>, ConnectError> {
        let socket = &mut self.socket;
        // A node that refuses a request (one over its size limit, say) answers before it has
        // read all of it and closes, so the rest of the write fails. The answer says why,
        // and is still there to read; only without one is the failed write the error.
        let sent = socket.send(request).await;
        let head = loop {
            match parse_head(&socket.buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {
                    if let Err(e) = socket.read_more().await {
                        return Err(sent.err().unwrap_or(e));
                    }
                }
                Err(why) => return Err(sent.err().unwrap_or_else(|| socket.unreadable(&why))),
            }
        };
        let end = head.len + head.content_length;
        while socket.buf.len() < end {
            if let Err(e) = socket.read_more().await {
                return Err(sent.err().unwrap_or(e));
            }
        }
        self.closing = head.close || sent.is_err();
        if head.status == 200 {
            return Ok(None);
        }
        let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        Ok(Some(if want_error {
            error_from_response(status, &socket.buf[head.len..end])
        } else {
            ConnectError::new(Code::Unknown, String::new())
        }))
    }
}

/// The head of the answer at the start of `buf`: None while incomplete, Err for what this
/// client does not read (a body without Content-Length, such as a chunked one).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unreadable HTTP response: {e}")),
    };
    let status = response.code.unwrap_or_default();
    // HTTP/1.0 closes after each answer unless it says otherwise.
    let mut close = response.version == Some(0);
    let mut content_length = None;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok();
            content_length = Some(
                value
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        format!(
                            "bad Content-Length {:?}",
                            header.value.escape_ascii().to_string()
                        )
                    })?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(
                "the answer is chunked, which this client does not read: the node (or a \
                        proxy) should send Content-Length"
                    .to_owned(),
            );
        } else if name.eq_ignore_ascii_case("connection") {
            let value = header.value.to_ascii_lowercase();
            if value.windows(5).any(|w| w == b"close") {
                close = true;
            } else if value.windows(10).any(|w| w == b"keep-alive") {
                close = false;
            }
        }
    }
    let content_length = match content_length {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => {
            return Err(format!(
                "an answer ({status}) without Content-Length, which this client does not read"
            ));
        }
    };
    Ok(Some(Head {
        len,
        status,
        content_length,
        close,
    }))
}

/// RESP on a bare socket.
pub(super) struct RespLink {
    socket: Socket,
}

impl RespLink {
    /// Send `commands` and read `replies` replies: Ok(None) when none is an error reply,
    /// Ok(Some) with the first error reply (its text only when `want_error`), Err when the
    /// connection failed or a reply cannot be read.
    async fn exchange(
        &mut self,
        commands: &[u8],
        replies: usize,
        want_error: bool,
    ) -> Result<Option<ConnectError>, ConnectError> {
        let socket = &mut self.socket;
        socket.send(commands).await?;
        let (mut read, mut at, mut first_error) = (0, 0, None);
        while read < replies {
            match parse_reply(&socket.buf[at..]) {
                Ok(Some(reply)) => {
                    read += 1;
                    at += reply.len;
                    first_error = first_error.or(reply.error);
                }
                Ok(None) => socket.read_more().await?,
                Err(why) => return Err(socket.unreadable(&why)),
            }
        }
        Ok(first_error.map(|text| {
            let text = if want_error { text } else { String::new() };
            ConnectError::new(Code::Unknown, text)
        }))
    }
}

/// One whole RESP reply at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    len: usize,
    /// The text of the first error reply in it (`-ERR ...`).
    error: Option<String>,
}

/// The reply at the start of `buf`: None while incomplete, Err for what is not RESP.
fn parse_reply(buf: &[u8]) -> Result<Option<Reply>, String> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(line_len) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[1..line_len];
    let after_line = line_len + 2;
    let count = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad RESP length {:?}", line.escape_ascii().to_string()))
    };
    let simple = |error| {
        Ok(Some(Reply {
            len: after_line,
            error,
        }))
    };
    match kind {
        b'+' | b':' => simple(None),
        b'-' => simple(Some(String::from_utf8_lossy(line).into_owned())),
        b'$' => match usize::try_from(count()?) {
            // `$-1`: a missing key's null.
            Err(_) => simple(None),
            Ok(n) => {
                let end = after_line.saturating_add(n).saturating_add(2);
                match buf.get(after_line.saturating_add(n)..end) {
                    None => Ok(None),
                    Some(b"\r\n") => Ok(Some(Reply {
                        len: end,
                        error: None,
                    })),
                    Some(_) => Err(format!("a RESP bulk string of {n} bytes is longer")),
                }
            }
        },
        b'*' => {
            let mut reply = Reply {
                len: after_line,
                error: None,
            };
            for _ in 0..count()?.max(0) {
                match parse_reply(&buf[reply.len..])? {
                    None => return Ok(None),
                    Some(item) => {
                        reply.len += item.len;
                        reply.error = reply.error.or(item.error);
                    }
                }
            }
            Ok(Some(reply))
        }
        other => Err(format!(
            "not a RESP reply: it starts with {:?}",
            char::from(other)
        )),
    }
}

/// HTTP/2 through hyper.
pub(super) struct H2Link {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    connect_to: String,
}

impl H2Link {
    async fn open(stream: TcpStream, connect_to: &str) -> Result<H2Link, ConnectError> {
        let (sender, driver) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| transport_error(connect_to, &e))?;
        // The connection's I/O runs in its own task (hyper spawns one per HTTP/2 stream
        // anyway); when it fails, the next send says so.
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(H2Link {
            sender,
            connect_to: connect_to.to_owned(),
        })
    }

    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        want_error: bool,
    ) -> Result<Option<ConnectError>, ConnectError> {
        let lost = |e: hyper::Error| transport_error(&self.connect_to, &e);
        self.sender.ready().await.map_err(lost)?;
        let response = self.sender.send_request(request).await.map_err(lost)?;
        let (parts, mut body) = response.into_parts();
        let mut text = Vec::new();
        // Drained frame by frame and dropped: collecting would allocate for nothing.
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(lost)?;
            if let (false, true, Ok(data)) = (
                parts.status == StatusCode::OK,
                want_error,
                frame.into_data(),
            ) {
                text.extend_from_slice(&data);
            }
        }
        Ok(match (parts.status, want_error) {
            (StatusCode::OK, _) => None,
            (status, true) => Some(error_from_response(status, &text)),
            (_, false) => Some(ConnectError::new(Code::Unknown, String::new())),
        })
    }
}

/// A failure on the way as a Connect error: `unavailable`, as a Connect client reports it,
/// with the whole cause.
fn transport_error(connect_to: &str, error: &(dyn std::error::Error + 'static)) -> ConnectError {
    let mut text = format!("{connect_to}: {error}");
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    ConnectError::unavailable(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: 5\r\n\r\nhello";

    #[test]
    fn heads_are_parsed_once_complete() {
        let head_len = OK.len() - 5;
        assert_eq!(
            parse_head(OK).unwrap(),
            Some(Head {
                len: head_len,
                status: 200,
                content_length: 5,
                close: false
            })
        );
        // Incomplete heads wait for more bytes; a head without its body is complete.
        assert_eq!(parse_head(&OK[..head_len - 1]).unwrap(), None);
        assert!(parse_head(&OK[..head_len]).unwrap().is_some());
        assert_eq!(parse_head(b"").unwrap(), None);
    }

    /// A node that answers a request it refuses before reading all of it, then closes: the
    /// failed write is not the error, the node's answer is.
    #[tokio::test]
    async fn an_answer_sent_before_the_request_was_read_is_the_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await.unwrap();
            let body = br#"{"code":"resource_exhausted","message":"request body exceeds 8388608 bytes (limits.max_request_bytes)"}"#;
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            stream.write_all(body).await.unwrap();
            // Closed with most of the request unread: the client's write fails.
        });
        let Link::Wire(mut link) = Link::open(&addr, Protocol::Http1).await.unwrap() else {
            panic!("an HTTP/1.1 link");
        };
        let mut request = b"POST /kvstore.v1.KVStore/Set HTTP/1.1\r\nhost: x\r\n\
            content-type: application/json\r\ncontent-length: 33554432\r\n\r\n"
            .to_vec();
        request.resize(request.len() + (32 << 20), b'x');
        let error = link.exchange(&request, true).await.unwrap().unwrap();
        assert_eq!(error.code, Code::ResourceExhausted, "{error:?}");
        assert!(error.message.contains("max_request_bytes"), "{error:?}");
        assert!(!Link::Wire(link).reusable());
        node.await.unwrap();
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_link() {
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n";
        let head = parse_head(close).unwrap().unwrap();
        assert_eq!((head.status, head.close), (503, true));
        let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_head(old).unwrap().unwrap().close);
        let kept = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
        assert!(!parse_head(kept).unwrap().unwrap().close);
    }

    #[test]
    fn answers_this_client_cannot_read_are_errors() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).unwrap_err().contains("chunked"));
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(
            parse_head(no_length)
                .unwrap_err()
                .contains("Content-Length")
        );
        let bad_length = b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n";
        assert!(parse_head(bad_length).is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        // No body, no length needed.
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_head(empty).unwrap().unwrap().content_length, 0);
    }

    #[test]
    fn resp_replies_are_read_whole() {
        let reply = |buf: &[u8]| parse_reply(buf).unwrap();
        let ok = |len| Some(Reply { len, error: None });
        assert_eq!(reply(b"+OK\r\n"), ok(5));
        assert_eq!(reply(b":42\r\n+OK\r\n"), ok(5));
        assert_eq!(reply(b"$3\r\nabc\r\n$-1\r\n"), ok(9));
        assert_eq!(reply(b"$-1\r\n"), ok(5));
        // A bulk string may hold CR LF; only its length says where it ends.
        assert_eq!(reply(b"$4\r\n\r\n\r\n\r\n"), ok(10));
        assert_eq!(reply(b"*2\r\n$1\r\na\r\n$-1\r\n"), ok(16));
        assert_eq!(
            reply(b"-ERR wrong type\r\n"),
            Some(Reply {
                len: 17,
                error: Some("ERR wrong type".into())
            })
        );
        assert_eq!(
            reply(b"*2\r\n+OK\r\n-OOM full\r\n")
                .unwrap()
                .error
                .as_deref(),
            Some("OOM full")
        );
        // Incomplete replies wait for more bytes.
        for part in [
            &b""[..],
            b"+OK",
            b"+OK\r",
            b"$3\r\nab",
            b"$3\r\nabc\r",
            b"*2\r\n+OK\r\n",
        ] {
            assert_eq!(reply(part), None, "{:?}", part.escape_ascii().to_string());
        }
        // What is not RESP is an error, not a wait.
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_reply(b"$x\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcd\r\n").is_err());
    }

    #[test]
    fn resp_commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        resp_command(&mut out, &[b"GET", b"k"]);
        resp_set(&mut out, b"k", b"", 0);
        resp_set(&mut out, b"k", b"v", 1500);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\
              *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n\
              *5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
    }

    #[test]
    fn templates_find_each_placeholder_once() {
        let text = format!("a {} b {} c", key(0), key(1));
        let template = Template::new(text.into_bytes(), 2).unwrap();
        let mut bytes = template.bytes.clone();
        let mut keys = [7, 8].into_iter();
        template.fill_in_place(&mut bytes, || keys.next().unwrap());
        assert_eq!(bytes, format!("a {} b {} c", key(7), key(8)).as_bytes());
        let mut buf = BytesMut::new();
        let copy = template.fill(&mut buf, || 9);
        assert_eq!(copy, format!("a {} b {} c", key(9), key(9)).as_bytes());
        // A placeholder missing or repeated cannot be rewritten safely.
        assert!(Template::new(key(0).into_bytes(), 2).is_err());
        assert!(Template::new(format!("{0}{0}", key(0)).into_bytes(), 1).is_err());
    }

    #[test]
    fn connect_calls_declare_their_body_length() {
        let call = ConnectCall::new(
            "/kvstore.v1.KVStore/Get",
            "http://n:1/kvstore.v1.KVStore/Get",
            "n:1",
        )
        .unwrap();
        let wire = call.wire(b"abc");
        assert!(wire.ends_with(b"content-length: 3\r\n\r\nabc"));
        let request = call.request(Bytes::from_static(b"abc"));
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://n:1/kvstore.v1.KVStore/Get");
        assert_eq!(request.headers()[CONTENT_TYPE], "application/cbor");
    }
}
