//! HTTP/1.1 without hyper for the requests that make up nearly all traffic: a request with a
//! `Content-Length` body (or none) to any route but the two streaming RPCs.
//!
//! Why: on a unary GET, hyper's general machinery was ~30% of the node's user CPU (profiled
//! in BENCHMARKS.md): a body channel, a header-read timer and an 8 KiB read buffer allocated
//! for every request (its keep-alive read reserves while the last request still holds the
//! old buffer), and a dispatcher built for streaming both ways. Here a connection reads into
//! one buffer it reuses, parses each request in place with `httparse`, calls the same
//! [`handle`](super::server::handle) as hyper's path with the whole body, and writes every
//! answer ready in one turn with one `write(2)`.
//!
//! Anything else (HTTP/1.0, `Transfer-Encoding`, `Expect`, `Upgrade`, a request larger than
//! [`MAX_REQUEST`], a head `httparse` rejects, the HTTP/2 preface, `Watch` and `Subscribe`)
//! is handed to hyper together with the bytes already read, and hyper serves the rest of the
//! connection: its answers, refusals and errors stay the only ones for those cases.

use std::cell::Cell;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderName, Method, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::connect::{self, Answer, RequestBody, ResponseBody};
use super::error::ConnectError;
use super::gather;
use super::head::{Head, Headers};
use super::server::{SUBSCRIBE_PATH, WATCH_PATH, handle};
use super::state::{ApiState, body_timed_out};

/// What the read buffer starts at and is kept at (hyper's initial size).
const READ_BUFFER: usize = 8192;
/// The largest request (head and body) served here; a larger one goes to hyper, which
/// streams it. Bounds what one connection buffers.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Buffers larger than this (grown for one large request or answer) are let go once empty,
/// so that an idle connection holds little.
const MAX_KEPT: usize = 64 * 1024;
/// Most header lines served here (hyper's limit is 100, and it answers past it).
const MAX_HEADERS: usize = 64;
/// The RPCs that answer with a stream: hyper serves them, and notices when their client
/// goes away while nothing is being sent.
const STREAMING_PATHS: [&str; 2] = [WATCH_PATH, SUBSCRIBE_PATH];

/// How a connection's time on the fast path ended.
pub enum Ending {
    /// It is closed: by the client, for a timeout, after `Connection: close`, or at shutdown.
    Closed,
    /// A request this loop does not serve starts at the front of these bytes.
    HandOver(Bytes),
}

/// Turns true when the node shuts down: an idle connection then closes, a busy one after
/// its answer (which says so).
pub type Stop = watch::Receiver<bool>;

/// Limits a connection is held to while it sends a request.
pub struct Deadlines {
    /// For a request's head, from when the connection starts waiting for it.
    pub head: Duration,
    /// For a request's body, once its head has arrived.
    pub body: Duration,
}

/// When a connection that shares its thread with others writes the answers it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// At the end of the event loop's turn, unless a handler finished there already (a GET
    /// gathered into the turn's batch of lookups, a write committed with the turn's group).
    TurnEnd,
    /// At the end of the turn, except after a handler that had to wait, whose answer goes at
    /// once. For `sync: always`, where a write waits for its group's fdatasync: the writers
    /// of a group resume together when it completes, so their answers already go out
    /// together, and holding them only puts the next turn's reads before them (durable SETs
    /// at 50 connections: fewer requests/s in 7 of 8 pairs, BENCHMARKS.md, session 17).
    TurnEndUnlessWaited,
}

/// Serve requests on `io` until it closes, `stop` turns true while it is idle, or a request
/// needs hyper.
pub async fn serve<I>(
    io: &mut I,
    state: &Arc<ApiState>,
    deadlines: &Deadlines,
    pacing: Pacing,
    stop: &Stop,
) -> Ending
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut out = Vec::with_capacity(1024);
    // One timer for the connection's life, moved only when it fires early: re-arming it for
    // every request would cost a timer-wheel update each time.
    let mut alarm = pin!(tokio::time::sleep(deadlines.head));
    // When the connection started waiting for what it waits for now: a request's head from
    // the end of the previous answer (so a kept-alive connection idle for the whole
    // `header_read_timeout` is closed, as hyper does), its body from the end of its head.
    let mut waiting_since = Instant::now();
    let mut waiting_for = Part::Head;
    let mut fields = [(Span::default(), Span::default()); MAX_HEADERS];
    // One wait for shutdown for the connection's life, on a copy of `stop` (which sees the
    // same changes): made afresh for every read, it was a waiter added to and removed from
    // the channel's list each time.
    let mut shutdown = stop.clone();
    let mut stopped = pin!(shutdown.changed());
    let on_this_thread = Counted::enter();
    loop {
        let mut answered = false;
        // Whether a handler had to wait (for a group commit: see `Pacing`), and whether one
        // finished at the turn's end already (`gather::Handled`).
        let mut waited = false;
        let mut crossed = false;
        let missing = loop {
            let request = match parse(&buf, &mut fields) {
                Parsed::Whole(request) => request,
                Parsed::Partial(part) => break part,
                Parsed::Foreign if *stop.borrow() => {
                    // hyper's connections are already draining: one started now would be
                    // cancelled unanswered, so this answer says why instead.
                    refuse(io, &mut out, &shutting_down()).await;
                    return Ending::Closed;
                }
                Parsed::Foreign => {
                    if write_out(io, &mut out).await.is_err() {
                        return Ending::Closed;
                    }
                    return Ending::HandOver(buf.freeze());
                }
            };
            let close = request.close || *stop.borrow();
            let head_only = request.method == Method::HEAD;
            let (response, close) = match request.take(&mut buf) {
                Some((target, head, body)) => {
                    let lines = Lines {
                        head: &head,
                        fields: &fields[..request.header_count],
                    };
                    let head = request.head(&target, &lines);
                    let handler = pin!(handle(state, head, RequestBody::Whole(body)));
                    let may_gather = !answered && on_this_thread.others();
                    let (response, handled) = gather::run(handler, may_gather).await;
                    waited |= handled.waited;
                    crossed |= handled.crossed;
                    (response, close)
                }
                None => (bad_request(), true),
            };
            if encode(&mut out, response, head_only, close).is_err() || close {
                let _ = write_out(io, &mut out).await;
                let _ = io.shutdown().await;
                return Ending::Closed;
            }
            answered = true;
            // Answers to many pipelined requests are sent as they grow, not all held at once.
            if out.len() > MAX_KEPT && write_out(io, &mut out).await.is_err() {
                return Ending::Closed;
            }
        };
        let holds = match pacing {
            Pacing::TurnEnd => !crossed,
            Pacing::TurnEndUnlessWaited => !waited,
        };
        if answered && holds && on_this_thread.others() {
            // The answers wait for the end of the event loop's turn (`turn`), as Redis writes
            // its replies just before it polls again: the other connections ready in this turn
            // are served first, and their answers reach the client together. Written at once,
            // they trickled out one request apart and woke a client that had already gone
            // idle for each one. At 50 connections on one thread the client then slept 0.2-0.55
            // times per answer instead of 0.1-0.15, waking it was the largest item in the
            // node's profile (7.7%), and with the yield the node served about 10% more
            // GETs/s (BENCHMARKS.md, session 13). A connection alone on its thread has no
            // answers to wait for: the yield would only add a poll to the round trip.
            //
            // A handler that finished at the turn's end already goes at once: a GET gathered
            // into the turn's batch of lookups, a write committed with the turn's group. (When
            // the group commit waited past the loop's next poll for I/O, holding its answers
            // one more turn lowered SETs' p99, BENCHMARKS.md session 17; now that it waits
            // for the turn's end only, holding them raised it: 361 → 388 µs, 9 of 12 pairs,
            // session 20.)
            crate::turn::yield_to_ready_tasks().await;
        }
        if write_out(io, &mut out).await.is_err() {
            return Ending::Closed;
        }
        // The next head's clock starts once the last answer is out, its body's once its head
        // is in.
        if answered || matches!((waiting_for, missing), (Part::Head, Part::Body { .. })) {
            waiting_since = Instant::now();
        }
        waiting_for = missing;
        let (limit, within) = match missing {
            Part::Head => ("header_read_timeout", deadlines.head),
            Part::Body { needed } => {
                buf.reserve(needed.saturating_sub(buf.len()));
                ("body_read_timeout", deadlines.body)
            }
        };
        if buf.is_empty() && buf.capacity() > MAX_KEPT {
            buf = BytesMut::with_capacity(READ_BUFFER);
        } else if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            // Reclaims the buffer's start when no request still holds it.
            buf.reserve(READ_BUFFER);
        }
        let due = waiting_since + within;
        if alarm.deadline() > due.into() {
            // Waiting for something with a shorter limit than the alarm was set for.
            alarm.as_mut().reset(due.into());
        }
        let idle = buf.is_empty();
        let read = tokio::select! {
            biased;
            read = io.read_buf(&mut buf) => read,
            () = &mut alarm => {
                if Instant::now() < due {
                    alarm.as_mut().reset(due.into());
                    continue;
                }
                state.metrics.refused(limit);
                tracing::debug!("closed: a request was not sent within limits.{limit}");
                if let Part::Body { .. } = missing {
                    refuse(io, &mut out, &body_timed_out(within)).await;
                }
                return Ending::Closed;
            }
            _ = &mut stopped, if idle => return Ending::Closed,
        };
        if let Ok(0) | Err(_) = read {
            return Ending::Closed;
        }
    }
}

/// Send `error` as the connection's last answer, after whatever answers are waiting in `out`.
async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>, error: &ConnectError) {
    if encode(out, connect::error_response(error).into(), false, true).is_ok()
        && write_out(io, out).await.is_ok()
    {
        let _ = io.shutdown().await;
    }
}

/// The answer to a request that would need hyper once the node has begun to shut down.
fn shutting_down() -> ConnectError {
    ConnectError::unavailable(
        "the node is shutting down; send this request again, to this node once it is back or \
         to another",
    )
}

/// hyper's answer to a request-target it cannot parse, which then closes the connection.
fn bad_request() -> Answer {
    let mut response = Response::new(connect::full(Bytes::new()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.into()
}

async fn write_out<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    // A flush as well: over TLS, `write_all` can leave the end of the answer in the TLS
    // layer's buffer when the socket is full, and nothing else would send it.
    let written = match io.write_all(out).await {
        Ok(()) => io.flush().await,
        Err(e) => Err(e),
    };
    out.clear();
    if out.capacity() > MAX_KEPT {
        *out = Vec::with_capacity(READ_BUFFER);
    }
    written
}

/// What is missing before the next request can be served.
#[derive(Clone, Copy)]
enum Part {
    Head,
    /// The head is there; the buffer must hold `needed` bytes for the body to be.
    Body {
        needed: usize,
    },
}

enum Parsed {
    Whole(WholeRequest),
    Partial(Part),
    Foreign,
}

/// Where a field lies in the read buffer.
#[derive(Clone, Copy, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(base: *const u8, part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base as usize;
        Span {
            start,
            end: start + part.len(),
        }
    }
}

/// Where each header line's name and value lie in the read buffer, kept by the connection
/// for every request rather than moved with each.
type Fields = [(Span, Span); MAX_HEADERS];

/// A request whose head and body are all in the buffer, as spans of it (its header lines in
/// the connection's [`Fields`]).
struct WholeRequest {
    method: Method,
    path: Span,
    header_count: usize,
    head_len: usize,
    body_len: usize,
    close: bool,
}

impl WholeRequest {
    /// Take the request off the front of `buf`: its target, head and body, which share the
    /// buffer's memory (reclaimed once they are dropped). `None` if its target is not a URI.
    fn take(&self, buf: &mut BytesMut) -> Option<(PathAndQuery, Bytes, Bytes)> {
        let head = buf.split_to(self.head_len).freeze();
        let body = buf.split_to(self.body_len).freeze();
        // Parsed as hyper parses it, so a target is refused on both paths alike.
        let target = PathAndQuery::from_maybe_shared(head.slice(self.path.start..self.path.end));
        Some((target.ok()?, head, body))
    }

    /// The request as its handler reads it.
    fn head<'a>(&'a self, target: &'a PathAndQuery, lines: &'a Lines<'a>) -> Head<'a> {
        Head {
            method: &self.method,
            path: target.path(),
            query: target.query(),
            headers: lines,
        }
    }
}

/// The header lines of a request taken off the buffer, read where they lie.
struct Lines<'a> {
    head: &'a [u8],
    fields: &'a [(Span, Span)],
}

impl Headers for Lines<'_> {
    fn raw(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        self.fields
            .iter()
            .find(|(line, _)| self.head[line.start..line.end].eq_ignore_ascii_case(name))
            .map(|(_, value)| &self.head[value.start..value.end])
    }
}

/// Parse the request at the front of `buf`, deciding whether this loop serves it.
fn parse(buf: &[u8], fields: &mut Fields) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial(Part::Head);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {
            return Parsed::Partial(Part::Head);
        }
        // Too large, too many headers, malformed, or HTTP/2's preface: hyper answers.
        _ => return Parsed::Foreign,
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::Foreign;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Foreign;
    };
    // Only origin-form targets (`/path?query`), and never the streaming RPCs, whatever
    // query they carry; an absolute URL and the rest are hyper's.
    let route = path.split('?').next().unwrap_or_default();
    if !path.starts_with('/') || STREAMING_PATHS.contains(&route) {
        return Parsed::Foreign;
    }
    let base = buf.as_ptr();
    let mut request = WholeRequest {
        method,
        path: Span::of(base, path.as_bytes()),
        header_count: parsed.headers.len(),
        head_len,
        body_len: 0,
        close: false,
    };
    let mut content_length = None;
    for (slot, field) in fields.iter_mut().zip(parsed.headers.iter()) {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(field.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                // Larger bodies are hyper's, and `head_len + length` cannot overflow.
                .filter(|&length| length <= MAX_REQUEST);
            match (content_length, length) {
                (None, Some(length)) => content_length = Some(length),
                _ => return Parsed::Foreign, // repeated, not a number, or too large
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::Foreign;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    request.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Foreign;
                }
            }
        }
        // What `HeaderValue` accepts (httparse also lets DEL through).
        if !field
            .value
            .iter()
            .all(|&b| b >= b' ' && b != 0x7f || b == b'\t')
        {
            return Parsed::Foreign;
        }
        *slot = (Span::of(base, name.as_bytes()), Span::of(base, field.value));
    }
    request.body_len = content_length.unwrap_or(0);
    let needed = head_len + request.body_len;
    if needed > MAX_REQUEST {
        return Parsed::Foreign;
    }
    if buf.len() < needed {
        return Parsed::Partial(Part::Body { needed });
    }
    Parsed::Whole(request)
}

/// Append `answer` to `out`. A streamed body cannot be: only the streaming RPCs stream, and
/// they are hyper's.
fn encode(out: &mut Vec<u8>, answer: Answer, head_only: bool, close: bool) -> Result<(), ()> {
    // With whether the handler stated the length itself (a HEAD answer's is the body it
    // would have).
    let (body, length_stated) = match answer {
        Answer::Message { codec, body } => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: ");
            out.extend_from_slice(codec.unary_content_type().as_bytes());
            out.extend_from_slice(b"\r\n");
            (body, false)
        }
        Answer::Response(response) => {
            let (parts, body) = response.into_parts();
            let ResponseBody::Full(body) = body else {
                tracing::error!("a streamed answer reached the HTTP/1.1 fast path; closing");
                return Err(());
            };
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(parts.status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(
                parts
                    .status
                    .canonical_reason()
                    .unwrap_or("Unknown")
                    .as_bytes(),
            );
            out.extend_from_slice(b"\r\n");
            for (name, value) in &parts.headers {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            (body, parts.headers.contains_key(header::CONTENT_LENGTH))
        }
    };
    if !length_stated {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
    Ok(())
}

thread_local! {
    /// Connections in [`serve`] on this thread now. Each is served on one lane's thread for
    /// its whole life (`lanes.rs`).
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

/// One connection counted in [`SERVING`] for as long as it is held.
struct Counted;

impl Counted {
    fn enter() -> Counted {
        SERVING.set(SERVING.get() + 1);
        Counted
    }

    /// Whether other connections are served on this thread too.
    fn others(&self) -> bool {
        SERVING.get() > 1
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A connection ends on its lane's thread (`lanes.rs` drops each runtime on its own
        // thread), so this undoes its `enter`. Saturating all the same: the count only
        // decides whether answers wait for the turn's end, and must never panic a node.
        SERVING.set(SERVING.get().saturating_sub(1));
    }
}

/// Call `with` with the current date as HTTP writes it, formatted once a second per thread.
fn http_date(with: impl FnOnce(&[u8])) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(cached_second, date)| {
        if *cached_second != second || date.is_empty() {
            *cached_second = second;
            *date = httpdate::fmt_http_date(now);
        }
        with(date.as_bytes());
    });
}

/// A connection whose first bytes were already read: hyper reads them again from here.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Bytes, io: I) -> Self {
        Prefixed { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::head::CONNECT_TIMEOUT_MS;

    fn no_fields() -> Fields {
        [(Span::default(), Span::default()); MAX_HEADERS]
    }

    fn whole(raw: &[u8]) -> WholeRequest {
        match parse(raw, &mut no_fields()) {
            Parsed::Whole(request) => request,
            Parsed::Partial(_) => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
            Parsed::Foreign => panic!("foreign: {:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn is_foreign(raw: &[u8]) -> bool {
        matches!(parse(raw, &mut no_fields()), Parsed::Foreign)
    }

    #[test]
    fn a_whole_request_is_read_in_place_and_leaves_the_next_in_the_buffer() {
        let raw = b"POST /kvstore.v1.KVStore/Get?x=1 HTTP/1.1\r\nHost: a\r\n\
                    Content-Type: application/cbor\r\nContent-Length: 3\r\n\
                    Connect-Timeout-Ms: 50\r\nconnect-protocol-version: 1\r\n\
                    content-type: text/plain\r\n\r\nabcGET /next";
        let mut buf = BytesMut::from(&raw[..]);
        let mut fields = no_fields();
        let Parsed::Whole(parsed) = parse(&buf, &mut fields) else {
            panic!("a whole request");
        };
        assert!(!parsed.close);
        let (target, head, body) = parsed.take(&mut buf).expect("a valid target");
        let lines = Lines {
            head: &head,
            fields: &fields[..parsed.header_count],
        };
        let request = parsed.head(&target, &lines);
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/kvstore.v1.KVStore/Get");
        assert_eq!(request.query, Some("x=1"));
        let headers = request.headers;
        assert_eq!(
            headers.text(&header::CONTENT_TYPE),
            Some("application/cbor"),
            "the first of repeated lines, as HeaderMap::get"
        );
        assert_eq!(headers.text(&CONNECT_TIMEOUT_MS), Some("50"));
        assert_eq!(headers.text(&header::HOST), Some("a"));
        assert_eq!(headers.raw(&header::AUTHORIZATION), None);
        assert_eq!(body, "abc");
        assert_eq!(
            &buf[..],
            b"GET /next",
            "the next request stays in the buffer"
        );
    }

    #[test]
    fn requests_wait_for_the_rest_of_their_head_and_body() {
        assert!(matches!(
            parse(b"", &mut no_fields()),
            Parsed::Partial(Part::Head)
        ));
        assert!(matches!(
            parse(b"GET /healthz HTTP/1.1\r\nhost", &mut no_fields()),
            Parsed::Partial(Part::Head)
        ));
        let head = b"PUT /v1/kv/a HTTP/1.1\r\ncontent-length: 5\r\n\r\n";
        let mut partial = head.to_vec();
        partial.extend_from_slice(b"he");
        assert!(matches!(
            parse(&partial, &mut no_fields()),
            Parsed::Partial(Part::Body { needed }) if needed == head.len() + 5
        ));
        partial.extend_from_slice(b"llo");
        assert_eq!(whole(&partial).body_len, 5);
    }

    #[test]
    fn connection_close_is_honoured_in_any_case_and_list() {
        assert!(whole(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").close);
        assert!(!whole(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").close);
    }

    #[test]
    fn what_this_loop_does_not_serve_goes_to_hyper() {
        let cases: [&[u8]; 14] = [
            b"POST / HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n",
            b"POST /kvstore.v1.Replication/Subscribe?x HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET http://node/healthz HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nconnection: Upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\nx",
            b"POST / HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n",
            b"POST /kvstore.v1.KVStore/Watch HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nx: a\x7fb\r\n\r\n",
        ];
        for raw in cases {
            assert!(is_foreign(raw), "{:?}", String::from_utf8_lossy(raw));
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(
            is_foreign(&many),
            "more header lines than the fast path keeps"
        );
        let mut endless = b"GET / HTTP/1.1\r\nx: ".to_vec();
        endless.resize(MAX_REQUEST, b'a');
        assert!(is_foreign(&endless), "a head that never ends");
    }

    #[test]
    fn a_target_that_is_not_a_uri_is_a_bad_request() {
        let mut buf = BytesMut::from(&b"GET /a<b HTTP/1.1\r\n\r\n"[..]);
        let parsed = whole(&buf);
        assert!(parsed.take(&mut buf).is_none());
    }

    #[test]
    fn answers_carry_their_length_and_date_and_say_when_the_connection_closes() {
        let mut out = Vec::new();
        let response = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(connect::full("gone"))
            .unwrap();
        encode(&mut out, response.into(), false, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 404 Not Found"));
        let fields: Vec<&str> = lines.collect();
        assert!(fields.contains(&"content-type: text/plain"), "{fields:?}");
        assert!(fields.contains(&"content-length: 4"), "{fields:?}");
        assert!(fields.contains(&"connection: close"), "{fields:?}");
        let date = fields
            .iter()
            .find_map(|f| f.strip_prefix("date: "))
            .unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(body, "gone");

        let mut out = Vec::new();
        encode(
            &mut out,
            Response::new(connect::full("abc")).into(),
            true,
            false,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("content-length: 3\r\n"), "{text}");
        assert!(!text.contains("connection"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {text:?}"
        );
    }

    #[test]
    fn a_message_is_written_as_hyper_writes_its_response() {
        let message = || Answer::Message {
            codec: crate::api::Codec::Cbor,
            body: Bytes::from_static(b"abc"),
        };
        let mut fast = Vec::new();
        encode(&mut fast, message(), false, false).unwrap();
        let mut general = Vec::new();
        encode(&mut general, Response::from(message()).into(), false, false).unwrap();
        // Without the date, which the two may read a second apart.
        let undated = |out: Vec<u8>| {
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("\r\ndate: "), "{text}");
            text.split("\r\n")
                .filter(|line| !line.starts_with("date: "))
                .collect::<Vec<_>>()
                .join("\r\n")
        };
        let fast = undated(fast);
        assert!(fast.starts_with("HTTP/1.1 200 OK\r\n"), "{fast}");
        assert!(
            fast.contains("\r\ncontent-type: application/cbor\r\n"),
            "{fast}"
        );
        assert!(fast.ends_with("\r\ncontent-length: 3\r\n\r\nabc"), "{fast}");
        assert_eq!(fast, undated(general));
    }

    /// One end of a connection that notes in a shared log when the node reads from it and
    /// writes to it.
    struct Logged {
        name: &'static str,
        io: tokio::io::DuplexStream,
        log: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Logged {
        fn note(&self, what: &str) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{what} {}", self.name));
        }
    }

    impl AsyncRead for Logged {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let poll = Pin::new(&mut this.io).poll_read(cx, buf);
            if buf.filled().len() > before {
                this.note("read");
            }
            poll
        }
    }

    impl AsyncWrite for Logged {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            this.note("write");
            Pin::new(&mut this.io).poll_write(cx, data)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    fn test_state() -> (Arc<ApiState>, Deadlines) {
        use crate::api::state::{Limits, Security};
        let state = Arc::new(ApiState::new(Limits::default(), Security::default()));
        let deadlines = Deadlines {
            head: Duration::from_secs(10),
            body: Duration::from_secs(10),
        };
        (state, deadlines)
    }

    /// Connections: the client ends, and the node's ends, which note their reads and writes
    /// in `log`.
    fn connections(
        names: &[&'static str],
        log: &Arc<std::sync::Mutex<Vec<String>>>,
    ) -> (Vec<tokio::io::DuplexStream>, Vec<Logged>) {
        names
            .iter()
            .map(|&name| {
                let (near, far) = tokio::io::duplex(4096);
                let log = Arc::clone(log);
                (near, Logged { name, io: far, log })
            })
            .unzip()
    }

    /// Poll `serving` once; true while it goes on (the connection stays open).
    async fn poll_once(serving: Pin<&mut impl Future<Output = Ending>>) -> bool {
        let mut serving = Some(serving);
        std::future::poll_fn(|cx| {
            let serving = serving.take().expect("polled once");
            Poll::Ready(serving.poll(cx).is_pending())
        })
        .await
    }

    /// Send a request on each of `clients`.
    async fn send_requests(clients: &mut [tokio::io::DuplexStream]) {
        for near in clients {
            near.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
        }
    }

    /// Why: a client whose connections are answered one by one as they are served wakes for
    /// each answer (see the yield in `serve`).
    #[tokio::test]
    async fn answers_go_out_after_every_connection_ready_in_the_turn_was_served() {
        let (state, deadlines) = test_state();
        let (_stop_tx, stop) = watch::channel(false);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut clients, servers) = connections(&["a", "b"], &log);
        let [mut a, mut b] = <[Logged; 2]>::try_from(servers).ok().unwrap();
        let mut serving_a = pin!(serve(&mut a, &state, &deadlines, Pacing::TurnEnd, &stop));
        let mut serving_b = pin!(serve(&mut b, &state, &deadlines, Pacing::TurnEnd, &stop));
        // Both connections are open before any request comes, as on a node.
        assert!(poll_once(serving_a.as_mut()).await && poll_once(serving_b.as_mut()).await);
        send_requests(&mut clients).await;
        let answers = async {
            for near in &mut clients {
                let mut answer = [0u8; 12];
                near.read_exact(&mut answer).await.unwrap();
                assert_eq!(&answer, b"HTTP/1.1 200");
            }
            clients.clear();
        };
        tokio::join!(serving_a, serving_b, answers);
        // (`join!` takes its branches in turns, so which connection comes first varies.)
        let mut log = log.lock().unwrap().clone();
        log[..2].sort();
        log[2..4].sort();
        assert_eq!(
            log[..4],
            ["read a", "read b", "write a", "write b"],
            "{log:?}"
        );
    }

    /// A connection alone on its thread has nothing to wait for: its answer goes out in the
    /// same poll as its request came in.
    #[tokio::test]
    async fn a_connection_alone_on_its_thread_is_answered_at_once() {
        let (state, deadlines) = test_state();
        let (_stop_tx, stop) = watch::channel(false);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut clients, mut servers) = connections(&["a"], &log);
        let mut serving = pin!(serve(
            &mut servers[0],
            &state,
            &deadlines,
            Pacing::TurnEnd,
            &stop
        ));
        assert!(poll_once(serving.as_mut()).await);
        send_requests(&mut clients).await;
        assert!(
            poll_once(serving.as_mut()).await,
            "the connection stays open"
        );
        assert_eq!(*log.lock().unwrap(), ["read a", "write a"]);
    }

    /// `test_state` with a store that takes writes, logged with `sync: never`, in `dir`.
    fn writable_state(dir: &std::path::Path) -> (Arc<ApiState>, Deadlines) {
        use crate::db::DbOptions;
        use crate::replication::{Replication, ReplicationOptions};
        use crate::wal::SyncPolicy;
        let (state, deadlines) = test_state();
        let options = ReplicationOptions {
            primary: None,
            labels: Default::default(),
            advertise: "127.0.0.1:1".to_owned(),
            ack_interval: Duration::from_secs(1),
            allow_full_resync_from_empty: false,
            backlog_max: 1 << 20,
            backlog_max_age: Duration::from_secs(60),
            link: crate::client::ClientOptions::default(),
        };
        let db_options = DbOptions::new(dir, SyncPolicy::Never);
        let replication =
            Replication::open(dir, db_options, options, Arc::clone(&state.store)).unwrap();
        assert!(state.replication.set(Arc::new(replication)).is_ok());
        (state, deadlines)
    }

    /// Serve `request` with `pacing` on one of two connections that share a thread, so that
    /// there is a turn to wait for: how many polls its connection took to write an answer, and
    /// what it wrote.
    async fn polls_to_answer(
        state: &Arc<ApiState>,
        deadlines: &Deadlines,
        pacing: Pacing,
        request: &[u8],
    ) -> (usize, String) {
        let (_stop_tx, stop) = watch::channel(false);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut clients, servers) = connections(&["a", "b"], &log);
        let [mut a, mut b] = <[Logged; 2]>::try_from(servers).ok().unwrap();
        let mut serving_a = pin!(serve(&mut a, state, deadlines, pacing, &stop));
        let mut serving_b = pin!(serve(&mut b, state, deadlines, pacing, &stop));
        assert!(poll_once(serving_a.as_mut()).await && poll_once(serving_b.as_mut()).await);
        clients[0].write_all(request).await.unwrap();
        let mut polls = 0;
        while !log.lock().unwrap().iter().any(|e| e == "write a") {
            assert!(polls < 5, "{pacing:?}: no answer after {polls} polls");
            assert!(poll_once(serving_a.as_mut()).await);
            polls += 1;
        }
        let mut answer = vec![0u8; 4096];
        let n = clients[0].read(&mut answer).await.unwrap();
        (polls, String::from_utf8_lossy(&answer[..n]).into_owned())
    }

    /// Why: a write's group commit waits for the end of the turn, and its answer then goes
    /// out at once, not held for one more.
    #[tokio::test]
    async fn a_write_is_answered_once_its_group_is_committed() {
        // One poll reads the request and yields for the group commit; the next commits.
        for pacing in [Pacing::TurnEnd, Pacing::TurnEndUnlessWaited] {
            let dir = tempfile::tempdir().unwrap();
            let (state, deadlines) = writable_state(dir.path());
            let put = b"PUT /v1/kv/k HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nv";
            let (polls, answer) = polls_to_answer(&state, &deadlines, pacing, put).await;
            assert_eq!(polls, 2, "{pacing:?}");
            assert!(answer.starts_with("HTTP/1.1 200"), "{pacing:?}: {answer}");
            let db = state.db().unwrap();
            assert_eq!(&db.get(b"k").unwrap().value[..], b"v", "{pacing:?}");
        }
    }

    /// Why: a GET that shares its thread joins the turn's batch of lookups (`gather`), which
    /// already waits for the turn's end: its answer then goes out at once, not a turn later,
    /// with those of the requests pipelined behind it (served directly, not one turn each).
    #[tokio::test]
    async fn a_gathered_get_is_answered_once_its_batch_is_looked_up() {
        for pacing in [Pacing::TurnEnd, Pacing::TurnEndUnlessWaited] {
            let dir = tempfile::tempdir().unwrap();
            let (state, deadlines) = writable_state(dir.path());
            let db = state.db().unwrap();
            db.set(Bytes::from("k"), Bytes::from("v"), Default::default())
                .unwrap();
            // Two pipelined: the first joins the batch, the second is served after it. The
            // first poll reads them and joins; the next looks the batch up.
            let get = b"GET /v1/kv/k HTTP/1.1\r\nHost: a\r\n\r\n";
            let two = [&get[..], get].concat();
            let (polls, answer) = polls_to_answer(&state, &deadlines, pacing, &two).await;
            assert_eq!(polls, 2, "{pacing:?}");
            assert!(answer.starts_with("HTTP/1.1 200"), "{pacing:?}: {answer}");
            assert_eq!(
                answer.matches("\r\n\r\nv").count(),
                2,
                "{pacing:?}: {answer}"
            );
        }
    }

    #[tokio::test]
    async fn hyper_reads_the_handed_over_bytes_first() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut prefixed = Prefixed::new(Bytes::from_static(b"already "), far);
        near.write_all(b"read").await.unwrap();
        drop(near);
        let mut all = String::new();
        prefixed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "already read");
    }
}
