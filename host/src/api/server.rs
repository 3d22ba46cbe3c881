//! The HTTP server: accepts connections (HTTP/1.1 and HTTP/2 on one port, in clear or over
//! TLS), enforces the connection limits, authorizes and routes each request, records its
//! latency and outcome, and shuts down gracefully. A connection starts on the node's own
//! HTTP/1.1 loop (`h1`), which serves ordinary requests and hands anything else, with the
//! bytes it has read, to hyper for the rest of the connection.
//!
//! Abuse limits act before a request costs anything: a connection over
//! `limits.max_connections` gets one `resource_exhausted` answer and is closed; a
//! connection must send its first bytes, finish its TLS handshake and send each request's
//! headers within `limits.header_read_timeout` (slow-loris); HTTP/2 connections carry at
//! most `limits.max_streams_per_connection` requests at once.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::auth;
use super::codec::WireMessage;
use super::connect::{self, Answer, RequestBody, ResponseBody};
use super::error::{Code, ConnectError};
use super::h1;
pub use super::h1::Pacing;
use super::head::{Head, Headers};
use super::lanes::Lanes;
use super::state::ApiState;
use super::{admin, kv, replication, rest, watch};
use crate::auth::Access;

/// How long shutdown waits for in-flight requests before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection refused for a limit is kept to deliver the refusal.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Most refusals being delivered at once; past it, connections are closed unanswered, so a
/// flood of connections cannot turn refusals into the resource it exhausts.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How the listener treats connections.
#[derive(Clone)]
pub struct ServerOptions {
    /// Serve TLS with this configuration (ALPN offers h2 and http/1.1).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most connections open at once; 0 = no limit.
    pub max_connections: usize,
    /// Time allowed for a connection's first bytes, its TLS handshake, and each request's
    /// headers.
    pub header_read_timeout: Duration,
    /// Most concurrent requests on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
    /// When the HTTP/1.1 fast path writes a connection's answers.
    pub pacing: Pacing,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            tls: None,
            max_connections: 0,
            header_read_timeout: Duration::from_secs(10),
            max_streams_per_connection: 256,
            pacing: Pacing::TurnEnd,
        }
    }
}

/// What every connection task needs.
struct Listener {
    state: Arc<ApiState>,
    http: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
    /// What the HTTP/1.1 fast path holds a request to.
    deadlines: h1::Deadlines,
    pacing: Pacing,
    max_connections: usize,
}

/// Serve `listener` until `shutdown` completes, then stop accepting and let in-flight
/// requests finish. Connections are served on `lanes` (started by the caller, so that a
/// failure to start them stops the node before it listens).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    options: ServerOptions,
    mut lanes: Lanes,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_streams_per_connection)
        // Finds peers that vanished without closing, so their streams and slot are freed.
        .keep_alive_interval(Duration::from_secs(30));
    let shared = Arc::new(Listener {
        state: Arc::clone(&state),
        http,
        tls: options.tls.map(TlsAcceptor::from),
        header_read_timeout: options.header_read_timeout,
        deadlines: h1::Deadlines {
            head: options.header_read_timeout,
            body: state.limits.body_read_timeout,
        },
        pacing: options.pacing,
        max_connections: options.max_connections,
    });
    // Tells the fast path's connections to close once idle; hyper's have `graceful`. Its
    // `closed()` is when every one of them has.
    let (stopping, _) = tokio::sync::watch::channel(false);
    let slots =
        (options.max_connections > 0).then(|| Arc::new(Semaphore::new(options.max_connections)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        let slot = slots.as_ref().map(|s| Arc::clone(s).try_acquire_owned());
        match slot {
            None | Some(Ok(_)) => {
                let stop = stopping.subscribe();
                // Handed over as a std socket: it must be registered with the event loop of
                // the thread that will serve it.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot hand over a connection");
                        continue;
                    }
                };
                lanes.run(Box::new(move || {
                    Box::pin(async move {
                        let _slot = slot;
                        let stream = match TcpStream::from_std(stream) {
                            Ok(stream) => stream,
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "cannot take over a connection");
                                return;
                            }
                        };
                        let _open = shared.state.metrics.connection_opened();
                        shared.connection(stream, peer, watcher, Some(stop)).await;
                    })
                }));
            }
            Some(Err(_)) => {
                state.metrics.refused("max_connections");
                let Ok(refusing) = Arc::clone(&refusals).try_acquire_owned() else {
                    continue; // Dropped unanswered: already answering enough refusals.
                };
                tokio::spawn(async move {
                    let _refusing = refusing;
                    let refusal = shared.connection(stream, peer, watcher, None);
                    let _ = tokio::time::timeout(REFUSAL_TIME, refusal).await;
                });
            }
        }
    }
    // Stop before the listener closes: a client refused a connection can count on the
    // connections it has being told.
    stopping.send_replace(true);
    drop(listener);
    let drained = async { tokio::join!(graceful.shutdown(), stopping.closed()) };
    tokio::select! {
        _ = drained => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
        }
    }
    lanes.close().await;
}

impl Listener {
    /// Serve one accepted connection: wait for its first bytes, do the TLS handshake if this
    /// is a TLS listener, then HTTP. Without `stop` (a connection over the limit), every
    /// request on it is answered with the `max_connections` refusal.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        stop: Option<h1::Stop>,
    ) {
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.header_read_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(_) => return, // Closed before sending anything.
            Err(_) => {
                self.state.metrics.refused("header_read_timeout");
                tracing::debug!(%peer, "closed: sent nothing within limits.header_read_timeout");
                return;
            }
        }
        let Some(acceptor) = self.tls.clone() else {
            return self.http(stream, peer, watcher, stop).await;
        };
        if first[0] != TLS_HANDSHAKE_RECORD {
            return plaintext_to_tls_port(stream).await;
        }
        match tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.http(tls, peer, watcher, stop).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => {
                self.state.metrics.refused("header_read_timeout");
                tracing::debug!(%peer, "closed: TLS handshake not done within limits.header_read_timeout");
            }
        }
    }

    /// HTTP on an open connection: the fast path first (see `h1`), then hyper for whatever
    /// it hands over (HTTP/2, streams, the unusual), or for everything when refusing.
    async fn http<I>(
        self: Arc<Self>,
        mut io: I,
        peer: SocketAddr,
        watcher: Watcher,
        stop: Option<h1::Stop>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let refuse = stop.is_none();
        let read = match stop {
            Some(stop) => {
                match h1::serve(&mut io, &self.state, &self.deadlines, self.pacing, &stop).await {
                    h1::Ending::Closed => return,
                    h1::Ending::HandOver(read) => read,
                }
            }
            None => bytes::Bytes::new(),
        };
        let io = TokioIo::new(h1::Prefixed::new(read, io));
        let state = Arc::clone(&self.state);
        let max_connections = self.max_connections;
        let service = service_fn(move |req| {
            let state = Arc::clone(&state);
            async move {
                Ok::<_, Infallible>(if refuse {
                    connect::error_response(&too_many_connections(max_connections))
                } else {
                    let (parts, body) = req.into_parts();
                    handle(&state, Head::of(&parts), RequestBody::Hyper(body))
                        .await
                        .into()
                })
            }
        });
        let connection = self.http.serve_connection_with_upgrades(io, service);
        if let Err(e) = watcher.watch(connection.into_owned()).await {
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                self.state.metrics.refused("header_read_timeout");
            }
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

fn too_many_connections(max: usize) -> ConnectError {
    ConnectError::new(
        Code::ResourceExhausted,
        format!(
            "the node has {max} connections open, its limit (limits.max_connections); retry \
             later or reuse connections"
        ),
    )
}

/// Answer a plain-HTTP request sent to the TLS port in plain HTTP, as Go's servers do, so
/// the caller reads why instead of a failed handshake; then close.
async fn plaintext_to_tls_port(mut stream: TcpStream) {
    let body = ConnectError::invalid_argument(
        "this port serves TLS: call it with https:// (giving the CA that signed the node's \
         certificate, e.g. --ca, unless it is publicly trusted)",
    )
    .to_json();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing, or the kernel resets the connection
        // and the client may never read the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
}

/// The streaming RPCs, whose answers are streams.
pub(super) const WATCH_PATH: &str = "/kvstore.v1.KVStore/Watch";
pub(super) const SUBSCRIBE_PATH: &str = "/kvstore.v1.Replication/Subscribe";

/// Answer one request, whichever HTTP path read it.
pub(super) async fn handle(state: &Arc<ApiState>, head: Head<'_>, body: RequestBody) -> Answer {
    let started = Instant::now();
    let (path, headers) = (head.path, head.headers);
    let (method_name, route) = match (head.method, path) {
        (&Method::POST, WATCH_PATH) => ("Watch", Route::Stream { subscribe: false }),
        (&Method::POST, SUBSCRIBE_PATH) => ("Subscribe", Route::Stream { subscribe: true }),
        (&Method::POST, p) if p.starts_with("/kvstore.v1.") => (rpc_name(p), Route::Rpc),
        (_, p) if p.starts_with(rest::KV_PREFIX) => ("rest", Route::Rest),
        (&Method::GET, "/healthz") => return rest::healthz().into(),
        (&Method::GET, "/readyz") => return rest::readyz(state).into(),
        (&Method::GET, "/metrics") => {
            let allowed = if state.protect_metrics {
                auth::authorize(state, headers, Access::Read, "/metrics")
            } else {
                Ok(())
            };
            return match allowed {
                Ok(()) => rest::metrics(state),
                Err(e) => connect::error_response(&e),
            }
            .into();
        }
        _ => {
            return rest::text(
                StatusCode::NOT_FOUND,
                format!("no route for {} {path}\n", head.method),
            )
            .into();
        }
    };
    let (access, called) = match route {
        Route::Rest => (auth::rest_access(head.method), "this call"),
        _ => (auth::rpc_access(method_name), method_name),
    };
    // Each call's future is awaited where it is made: passed to a helper that authorizes
    // first, the unary call's (3 KB) was copied into the helper's on every request.
    let result = match auth::authorize(state, headers, access, called) {
        Err(e) => Err(e),
        Ok(()) => match route {
            Route::Rpc => rpc(state, method_name, started, headers, body).await,
            Route::Rest => rest::kv_route(state, head, started, body)
                .await
                .map(Answer::from),
            // Boxed for the same reason as the cold methods in `rpc`.
            Route::Stream { subscribe } => Box::pin(stream_rpc(state, headers, body, subscribe))
                .await
                .map(Answer::from),
        },
    };
    let code = result.as_ref().err().map(|e| e.code);
    let response = result.unwrap_or_else(|e| connect::error_response(&e).into());
    state.metrics.observe(method_name, started.elapsed(), code);
    response
}

/// What serves a request that needs authorizing.
enum Route {
    /// A unary RPC.
    Rpc,
    /// `Watch`, or `Subscribe`.
    Stream { subscribe: bool },
    /// `/v1/kv/{key}`.
    Rest,
}

/// The unary RPCs.
const RPC_PATHS: [&str; 15] = [
    "/kvstore.v1.KVStore/Get",
    "/kvstore.v1.KVStore/Set",
    "/kvstore.v1.KVStore/Delete",
    "/kvstore.v1.KVStore/GetUpdates",
    "/kvstore.v1.KVStore/MultiGet",
    "/kvstore.v1.KVStore/Write",
    "/kvstore.v1.Admin/Status",
    "/kvstore.v1.Admin/Digest",
    "/kvstore.v1.Admin/Snapshot",
    "/kvstore.v1.Admin/AddReplica",
    "/kvstore.v1.Admin/RemoveReplica",
    "/kvstore.v1.Admin/Promote",
    "/kvstore.v1.Admin/Follow",
    "/kvstore.v1.Admin/ListPlugins",
    "/kvstore.v1.Replication/Ack",
];

/// The metric label of an RPC path: one of `latency::METHODS`, so a client cannot grow the
/// label space.
fn rpc_name(path: &str) -> &'static str {
    RPC_PATHS
        .into_iter()
        .find(|m| *m == path)
        .map_or("unknown", |m| m.rsplit('/').next().expect("has a slash"))
}

async fn rpc(
    state: &Arc<ApiState>,
    name: &'static str,
    started: Instant,
    headers: &dyn Headers,
    body: RequestBody,
) -> Result<Answer, ConnectError> {
    if name == "unknown" {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "no such method; services are kvstore.v1.KVStore (Get, Set, Delete, GetUpdates, \
             MultiGet, Write, Watch), kvstore.v1.Admin (Status, Digest, Snapshot, AddReplica, \
             RemoveReplica, Promote, Follow, ListPlugins) and kvstore.v1.Replication (Subscribe, Ack)",
        ));
    }
    let codec = connect::unary_codec(headers)?;
    let deadline = connect::timeout(headers)?;
    if deadline == Some(Duration::ZERO) {
        return Err(ConnectError::new(
            Code::DeadlineExceeded,
            "Connect-Timeout-Ms is 0: the deadline passed before the call started; nothing \
             was done",
        ));
    }
    let body = read_request(state, headers, body).await?;
    let wait = kv::Wait::within(deadline, started);
    // The methods off the data path are boxed: inline, their futures (Snapshot's, Follow's,
    // ...) set the size of every request's future, which is moved a few times per request
    // (5.1 KB before, 3.1 KB after).
    let call = async {
        match name {
            "Get" => unary(codec, &body, |r| kv::get(state, r, wait)).await,
            "Set" => unary(codec, &body, |r| kv::set(state, r, wait)).await,
            "Delete" => unary(codec, &body, |r| kv::delete(state, r)).await,
            "GetUpdates" => unary(codec, &body, |r| kv::get_updates(state, r)).await,
            "MultiGet" => unary(codec, &body, |r| kv::multi_get(state, r)).await,
            "Write" => unary(codec, &body, |r| kv::write(state, r, wait)).await,
            "Status" => Box::pin(unary(codec, &body, |r| admin::status(state, r))).await,
            "Digest" => Box::pin(unary(codec, &body, |r| admin::digest(state, r))).await,
            "Snapshot" => Box::pin(unary(codec, &body, |r| admin::snapshot(state, r))).await,
            "AddReplica" => {
                let token = auth::bearer(headers);
                Box::pin(unary(codec, &body, |r| {
                    replication::add_replica(state, r, token)
                }))
                .await
            }
            "RemoveReplica" => {
                let token = auth::bearer(headers);
                Box::pin(unary(codec, &body, |r| {
                    replication::remove_replica(state, r, token)
                }))
                .await
            }
            "Promote" => Box::pin(unary(codec, &body, |r| replication::promote(state, r))).await,
            "Follow" => Box::pin(unary(codec, &body, |r| replication::follow(state, r))).await,
            "Ack" => Box::pin(unary(codec, &body, |r| replication::ack(state, r))).await,
            "ListPlugins" => Box::pin(unary(codec, &body, |r| admin::list_plugins(state, r))).await,
            _ => unreachable!("rpc_name returns only the names above"),
        }
    };
    match deadline {
        None => call.await,
        Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(ConnectError::new(
                Code::DeadlineExceeded,
                format!(
                    "the deadline of {} ms passed before the call finished; a write may \
                     still be applied",
                    limit.as_millis()
                ),
            ))
        }),
    }
}

/// The body of an RPC, within `limits.max_request_bytes`.
async fn read_request(
    state: &ApiState,
    headers: &dyn Headers,
    body: RequestBody,
) -> Result<bytes::Bytes, ConnectError> {
    state
        .read_body(
            headers,
            body,
            state.limits.max_request_bytes,
            "max_request_bytes",
        )
        .await
}

/// A server-streaming call: one enveloped request in, envelopes out until end-of-stream.
async fn stream_rpc(
    state: &Arc<ApiState>,
    headers: &dyn Headers,
    body: RequestBody,
    subscribe: bool,
) -> Result<Response<ResponseBody>, ConnectError> {
    let codec = connect::stream_codec(headers)?;
    let body = read_request(state, headers, body).await?;
    if subscribe {
        let request = connect::decode_stream_request(codec, &body)?;
        replication::subscribe(state, codec, request).await
    } else {
        let request = connect::decode_stream_request(codec, &body)?;
        watch::watch(state, codec, request).await
    }
}

async fn unary<
    Req: WireMessage,
    Resp: WireMessage,
    F: Future<Output = Result<Resp, ConnectError>>,
>(
    codec: super::Codec,
    body: &bytes::Bytes,
    handler: impl FnOnce(Req) -> F,
) -> Result<Answer, ConnectError> {
    let request = codec.decode_shared::<Req>(body)?;
    let response = handler(request).await?;
    Ok(connect::message_answer(codec, &response))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why: latency is counted per label from a fixed list, and a label missing from it
    /// would be counted as `unknown`.
    #[test]
    fn every_method_is_counted_under_its_own_label() {
        let labels = RPC_PATHS.map(rpc_name);
        for label in labels
            .iter()
            .chain(&["Watch", "Subscribe", "rest", "unknown"])
        {
            assert!(
                super::super::latency::METHODS.contains(label),
                "{label} has no latency label"
            );
        }
        assert_eq!(rpc_name("/kvstore.v1.KVStore/Nope"), "unknown");
    }
}
