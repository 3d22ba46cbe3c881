//! The HTTP server: accepts connections (HTTP/1.1 and cleartext HTTP/2 on one port), routes
//! each request, records its latency and outcome, and shuts down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::codec::WireMessage;
use super::connect::{self, ResponseBody};
use super::error::{Code, ConnectError};
use super::state::ApiState;
use super::{admin, kv, replication, rest, watch};

/// How long shutdown waits for in-flight requests before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `listener` until `shutdown` completes, then stop accepting and let in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let state = Arc::clone(&state);
        let service = service_fn(move |req| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
        }
    }
}

async fn handle(state: Arc<ApiState>, req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let (method_name, result) = match (&parts.method, path) {
        (&Method::POST, "/kvstore.v1.KVStore/Watch") => (
            "Watch",
            stream_rpc(&state, &parts.headers, body, false).await,
        ),
        (&Method::POST, "/kvstore.v1.Replication/Subscribe") => (
            "Subscribe",
            stream_rpc(&state, &parts.headers, body, true).await,
        ),
        (&Method::POST, p) if p.starts_with("/kvstore.v1.") => {
            let name = rpc_name(p);
            (name, rpc(&state, name, &parts.headers, body).await)
        }
        (_, p) if p.starts_with(rest::KV_PREFIX) => (
            "rest",
            rest::kv_route(
                &state,
                &parts.method,
                p,
                parts.uri.query(),
                &parts.headers,
                body,
            )
            .await,
        ),
        (&Method::GET, "/healthz") => return rest::healthz(),
        (&Method::GET, "/readyz") => return rest::readyz(&state),
        (&Method::GET, "/metrics") => return rest::metrics(&state),
        _ => {
            return rest::text(
                StatusCode::NOT_FOUND,
                format!("no route for {} {path}\n", parts.method),
            );
        }
    };
    let code = result.as_ref().err().map(|e| e.code);
    let response = result.unwrap_or_else(|e| connect::error_response(&e));
    state.metrics.observe(method_name, started.elapsed(), code);
    response
}

/// The metric label of an RPC path: a fixed set, so a client cannot grow the label space.
fn rpc_name(path: &str) -> &'static str {
    const METHODS: [&str; 15] = [
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
    METHODS
        .into_iter()
        .find(|m| *m == path)
        .map_or("unknown", |m| m.rsplit('/').next().expect("has a slash"))
}

async fn rpc(
    state: &Arc<ApiState>,
    name: &'static str,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Response<ResponseBody>, ConnectError> {
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
    let wait = kv::Wait::within(deadline);
    let call = async {
        match name {
            "Get" => unary(codec, &body, |r| kv::get(state, r, wait)).await,
            "Set" => unary(codec, &body, |r| kv::set(state, r, wait)).await,
            "Delete" => unary(codec, &body, |r| kv::delete(state, r)).await,
            "GetUpdates" => unary(codec, &body, |r| kv::get_updates(state, r)).await,
            "MultiGet" => unary(codec, &body, |r| kv::multi_get(state, r)).await,
            "Write" => unary(codec, &body, |r| kv::write(state, r, wait)).await,
            "Status" => unary(codec, &body, |r| admin::status(state, r)).await,
            "Digest" => unary(codec, &body, |r| admin::digest(state, r)).await,
            "Snapshot" => unary(codec, &body, |r| admin::snapshot(state, r)).await,
            "AddReplica" => unary(codec, &body, |r| replication::add_replica(state, r)).await,
            "RemoveReplica" => unary(codec, &body, |r| replication::remove_replica(state, r)).await,
            "Promote" => unary(codec, &body, |r| replication::promote(state, r)).await,
            "Follow" => unary(codec, &body, |r| replication::follow(state, r)).await,
            "Ack" => unary(codec, &body, |r| replication::ack(state, r)).await,
            "ListPlugins" => unary(codec, &body, |r| admin::list_plugins(state, r)).await,
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
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<bytes::Bytes, ConnectError> {
    connect::read_body(
        headers,
        body,
        state.limits.max_request_bytes,
        "limits.max_request_bytes",
    )
    .await
}

/// A server-streaming call: one enveloped request in, envelopes out until end-of-stream.
async fn stream_rpc(
    state: &Arc<ApiState>,
    headers: &http::HeaderMap,
    body: Incoming,
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
    body: &[u8],
    handler: impl FnOnce(Req) -> F,
) -> Result<Response<ResponseBody>, ConnectError> {
    let request = codec.decode::<Req>(body)?;
    let response = handler(request).await?;
    Ok(connect::message_response(codec, &response))
}
