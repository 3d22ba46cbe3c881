//! The Rust client of a wasmkv node, used by the CLI, the tests and the bench.
//!
//! It speaks Connect unary over HTTP/1.1 with CBOR bodies: CBOR keeps keys and values as raw
//! bytes (no base64 as in JSON) and is self-describing (unlike protobuf, a person can decode a
//! captured body without the schema), and the server maps it field by field onto the same
//! generated types. Connections are pooled and kept alive, because a unary call is one small
//! request and reconnecting for each would cost more than the call itself. A `Client` is a
//! handle on that pool: clone it freely, every clone shares the connections.
//!
//! Errors keep the server's Connect code (`ClientError::Rpc`) apart from failures on the way
//! (unreachable node, deadline, unreadable response), so a caller can tell "the node said no"
//! from "the node could not be asked".
//!
//! A node behind TLS is called with an `https://` address (or any address when TLS options
//! are given) and [`ClientOptions`]: the CA to trust, a client certificate for mutual TLS, and
//! the bearer token sent with every call.
//!
//! Writes (`Set`, `Delete`, `Write`) sent to a replica are refused with `failed_precondition`
//! and the primary's address in the `wasmkv-primary` header; the client then sends the same
//! request once to that primary and returns its answer, so a caller pointed at any node of a
//! cluster can write. Reads are served by replicas and never redirected.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::api::connect::{END_STREAM_FLAG, envelope};
use crate::api::proto::{
    AddReplicaRequest, AddReplicaResponse, DeleteRequest, DeleteResponse, DigestRequest,
    DigestResponse, FollowRequest, FollowResponse, GetRequest, GetResponse, GetUpdatesRequest,
    GetUpdatesResponse, ListPluginsRequest, ListPluginsResponse, MultiGetRequest, MultiGetResponse,
    Mutation, PluginInfo, PromoteRequest, PromoteResponse, RemoveReplicaRequest,
    RemoveReplicaResponse, SetRequest, SetResponse, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse, WatchRequest, WatchResponse, WriteRequest, WriteResponse,
};
use crate::api::{Code, Codec, ConnectError, WireMessage};
use crate::auth::Secret;
use crate::tls::{ClientTls, TlsError};

const KVSTORE: &str = "kvstore.v1.KVStore";
const ADMIN: &str = "kvstore.v1.Admin";
const SET: &str = "kvstore.v1.KVStore/Set";
const DELETE: &str = "kvstore.v1.KVStore/Delete";
const WRITE: &str = "kvstore.v1.KVStore/Write";
/// The calls a replica refuses and this client re-sends to the primary it names. Only
/// these: reads are the replica's to answer, and an admin call is meant for the node the
/// caller named, not for whichever node it points to.
const REDIRECTED: [&str; 3] = [SET, DELETE, WRITE];
/// The response header in which a replica names its primary when it refuses a write: a
/// `host:port` or an `http://` URL.
pub use crate::api::connect::PRIMARY_HEADER;
/// The Connect protocol version this client speaks (sent so servers can reject a mismatch).
const PROTOCOL_VERSION: &str = "1";
/// The Connect spec allows at most 10 digits in `Connect-Timeout-Ms`.
const MAX_TIMEOUT_MS: u128 = 9_999_999_999;
/// How much of a non-Connect error body is kept as the message: enough for a proxy's one-line
/// explanation, not a whole HTML page.
const MAX_ERROR_TEXT: usize = 512;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Connect error (its code and message, unchanged).
    #[error(transparent)]
    Rpc(#[from] ConnectError),
    /// The node refused the call because it is a replica (`failed_precondition`), and named
    /// its primary in the `wasmkv-primary` header. A write only fails so when the redirect
    /// could not be followed: the primary refused it too (the client follows one hop, never
    /// a chain), or the named address is not one this client can call. `primary` is the
    /// header as the node sent it.
    #[error("{error}")]
    NotPrimary {
        primary: String,
        error: ConnectError,
    },
    /// No answer could be had: the connection was refused, reset or closed mid-call. The
    /// `io::Error` carries the underlying kind (e.g. `ConnectionRefused`) and the whole cause.
    #[error("cannot reach {addr}: {source}")]
    Transport {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The local deadline (`Client::with_timeout`) passed before the answer arrived. The call
    /// may still have taken effect on the server.
    #[error("no answer from {addr} within {}", humantime::format_duration(*after))]
    Timeout { addr: String, after: Duration },
    /// The TLS options could not be used (an unreadable CA file, a key without its
    /// certificate).
    #[error("TLS setup: {0}")]
    Tls(#[from] TlsError),
    /// The node address (or a call path) is not something this client can send to.
    #[error("bad address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    /// A 200 response this client cannot read (wrong content type, undecodable body): the
    /// peer is probably not a wasmkv node, or a newer one with an incompatible change.
    #[error("unreadable response from {addr}: {reason}")]
    BadResponse { addr: String, reason: String },
}

impl ClientError {
    /// The Connect code of this failure, as any Connect client reports it: the server's code;
    /// `deadline_exceeded` for the local deadline; `unavailable` when the node cannot be
    /// reached (retrying may help); `internal` for an unreadable response. None for a bad
    /// address, where no call was made.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc(e) | ClientError::NotPrimary { error: e, .. } => Some(e.code),
            ClientError::Transport { .. } => Some(Code::Unavailable),
            ClientError::Timeout { .. } => Some(Code::DeadlineExceeded),
            ClientError::BadResponse { .. } => Some(Code::Internal),
            ClientError::BadAddress { .. } | ClientError::Tls(_) => None,
        }
    }

    /// The primary a replica named when it refused the call: where to send writes from now
    /// on to save the redirect hop.
    pub fn primary(&self) -> Option<&str> {
        match self {
            ClientError::NotPrimary { primary, .. } => Some(primary),
            _ => None,
        }
    }
}

/// Options of a single `Client::set`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Expire the key this long after the write; None = never. Sub-millisecond TTLs are
    /// rounded up to 1 ms, because 0 on the wire means "never expires".
    pub ttl: Option<Duration>,
    /// Compare-and-set: the key's current version must be this (0 = the key must not exist).
    pub if_version: Option<u64>,
    /// Reply only once this many replicas acknowledged the write.
    pub min_replicas: u32,
}

/// How a client connects and who it says it is.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// TLS settings; when set, addresses without a scheme mean `https://`.
    pub tls: Option<ClientTls>,
    /// Sent as `Authorization: Bearer <token>` with every call.
    pub token: Option<Secret>,
}

/// A handle on a node: cheap to clone, every clone shares one pool of keep-alive connections.
#[derive(Clone)]
pub struct Client {
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `http(s)://host:port` (plus an optional path prefix), without a trailing slash.
    base: Arc<str>,
    /// The scheme of addresses given without one (a redirect's `host:port`).
    default_scheme: &'static str,
    /// The `Authorization` header, marked sensitive so HTTP/2 never indexes it.
    authorization: Option<HeaderValue>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the node at `base`, e.g. `http://127.0.0.1:8080` (`127.0.0.1:8080` means
    /// the same). Nothing is connected until the first call.
    pub fn new(base: &str) -> Result<Client, ClientError> {
        Client::with_options(base, &ClientOptions::default())
    }

    /// A client of the node at `base` using `options`. With TLS options, `host:port` means
    /// `https://host:port`; an `https://` address without them trusts the public web PKI.
    pub fn with_options(base: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        let default_scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = normalize_base_with(base, default_scheme)?;
        let tls = options.tls.clone().unwrap_or_default();
        let mut http = HttpConnector::new();
        // Calls are small request/response pairs: Nagle's algorithm would only add latency.
        http.set_nodelay(true);
        http.enforce_http(false);
        let mut tls_config = tls.client_config()?;
        tls_config.alpn_protocols = vec![crate::tls::ALPN_HTTP1.to_vec()];
        let connector = match tls.fixed_server_name()? {
            Some(name) => HttpsConnector::new(
                http,
                tls_config,
                false,
                Arc::new(FixedServerNameResolver::new(name)),
            ),
            None => HttpsConnector::new(
                http,
                tls_config,
                false,
                Arc::new(DefaultServerNameResolver::default()),
            ),
        };
        let http = HttpClient::builder(TokioExecutor::new())
            // Shorter than a node's default limits.header_read_timeout (10 s), after which
            // it closes an idle connection: the client lets go first, rather than sending a
            // call on a connection just as the node closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        let authorization = options
            .token
            .as_ref()
            .map(|token| {
                let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| ClientError::BadAddress {
                        addr: base.clone(),
                        reason: "the token contains characters a header cannot carry".into(),
                    })?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        Ok(Client {
            http,
            base: base.into(),
            default_scheme,
            authorization,
            timeout: None,
        })
    }

    /// Give every call at most `timeout`: the server is told (`Connect-Timeout-Ms`, so it can
    /// stop working on a call nobody waits for) and the client stops waiting at the same
    /// time (so a node that never answers cannot hang the caller). A write redirected to the
    /// primary gets what is left of the same `timeout`, not a second one.
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client {
            timeout: Some(timeout),
            ..self
        }
    }

    /// The node this client calls, normalized (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One Connect unary call: `path` is `service/Method` (e.g. `kvstore.v1.KVStore/Get`,
    /// a leading `/` is fine).
    ///
    /// Every RPC of this client goes through here, so this is the one place that follows a
    /// replica's redirect: a write (`Set`, `Delete`, `Write`) refused with
    /// `ClientError::NotPrimary` is sent once more, unchanged, to the primary the replica
    /// named, and that answer is the call's. One hop at most: if the primary refuses too,
    /// its `NotPrimary` is returned rather than followed, so two nodes that name each other
    /// cannot bounce a call forever.
    pub async fn call<Req: WireMessage, Resp: WireMessage>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        // Encoded once into `Bytes`, so a redirect re-sends it without encoding again.
        let body = Bytes::from(Codec::Cbor.encode(req));
        let path = path.trim_start_matches('/');
        let started = Instant::now();
        let first = self
            .send(&self.base, path, body.clone(), self.timeout)
            .await;
        let (addr, answer) = match first {
            Err(ClientError::NotPrimary { primary, error }) if REDIRECTED.contains(&path) => {
                let to = match normalize_base_with(&primary, self.default_scheme) {
                    Ok(to) => to,
                    Err(e) => {
                        tracing::debug!(from = %self.base, path, "redirect not followed: {e}");
                        return Err(ClientError::NotPrimary { primary, error });
                    }
                };
                tracing::debug!(from = %self.base, %to, path, "write refused, sent to the primary");
                let left = self.timeout.map(|t| t.saturating_sub(started.elapsed()));
                let answer = self.send(&to, path, body, left).await?;
                (to, answer)
            }
            answer => (self.base.to_string(), answer?),
        };
        Codec::Cbor
            .decode(&answer)
            .map_err(|e| ClientError::BadResponse {
                addr,
                reason: e.message,
            })
    }

    /// The key's value, version and expiry; `found` is false when it does not exist.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<GetResponse, ClientError> {
        let req = GetRequest {
            key: key.into(),
            min_lsn: 0,
        };
        self.call(&format!("{KVSTORE}/Get"), &req).await
    }

    /// Store `value` under `key`; returns the write's LSN (the key's new version).
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        opts: SetOptions,
    ) -> Result<u64, ClientError> {
        let req = SetRequest {
            key: key.into(),
            value: value.into(),
            ttl_ms: opts.ttl.map_or(0, ttl_ms),
            min_replicas: opts.min_replicas,
            if_version: opts.if_version,
        };
        let resp: SetResponse = self.call(SET, &req).await?;
        Ok(resp.lsn)
    }

    /// Delete `key`; `found` says whether it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<DeleteResponse, ClientError> {
        let req = DeleteRequest { key: key.into() };
        self.call(DELETE, &req).await
    }

    /// Several keys in one round trip; the results are in the order of `keys`.
    pub async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<GetResponse>, ClientError> {
        let req = MultiGetRequest { keys };
        let resp: MultiGetResponse = self.call(&format!("{KVSTORE}/MultiGet"), &req).await?;
        Ok(resp.results)
    }

    /// Apply sets and deletes atomically (one WAL record); returns its LSN.
    pub async fn write(&self, mutations: Vec<Mutation>) -> Result<u64, ClientError> {
        let req = WriteRequest {
            mutations,
            min_replicas: 0,
        };
        let resp: WriteResponse = self.call(WRITE, &req).await?;
        Ok(resp.lsn)
    }

    /// Up to `limit` log entries after `since_lsn` (the pull side of replication).
    pub async fn get_updates(
        &self,
        since_lsn: u64,
        limit: u32,
    ) -> Result<GetUpdatesResponse, ClientError> {
        let req = GetUpdatesRequest { since_lsn, limit };
        self.call(&format!("{KVSTORE}/GetUpdates"), &req).await
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(&format!("{ADMIN}/Status"), &StatusRequest {})
            .await
    }

    /// A digest of the whole data set, to compare nodes.
    pub async fn digest(&self) -> Result<DigestResponse, ClientError> {
        self.call(&format!("{ADMIN}/Digest"), &DigestRequest {})
            .await
    }

    /// Ask the node to write a snapshot now.
    pub async fn snapshot(&self) -> Result<SnapshotResponse, ClientError> {
        self.call(&format!("{ADMIN}/Snapshot"), &SnapshotRequest {})
            .await
    }

    /// The node's plugins: each one's running version, hooks, chains and call figures, and
    /// why its file was last refused (empty when the node's config names no plugin).
    pub async fn list_plugins(&self) -> Result<Vec<PluginInfo>, ClientError> {
        let resp: ListPluginsResponse = self
            .call(&format!("{ADMIN}/ListPlugins"), &ListPluginsRequest {})
            .await?;
        Ok(resp.plugins)
    }

    /// Tell the node at `address` (`host:port` or URL) to follow this node, a primary.
    pub async fn add_replica(&self, address: &str) -> Result<(), ClientError> {
        let req = AddReplicaRequest {
            address: address.to_owned(),
        };
        let _: AddReplicaResponse = self.call(&format!("{ADMIN}/AddReplica"), &req).await?;
        Ok(())
    }

    /// Tell the node at `address` to stop following this primary, which forgets it.
    pub async fn remove_replica(&self, address: &str) -> Result<(), ClientError> {
        let req = RemoveReplicaRequest {
            address: address.to_owned(),
        };
        let _: RemoveReplicaResponse = self.call(&format!("{ADMIN}/RemoveReplica"), &req).await?;
        Ok(())
    }

    /// Make this node, a replica, a primary: the answer holds its new replication ID, the
    /// history it continues and the last LSN of that history.
    pub async fn promote(&self) -> Result<PromoteResponse, ClientError> {
        self.call(&format!("{ADMIN}/Promote"), &PromoteRequest {})
            .await
    }

    /// Make this node follow `primary` (`host:port` or URL); `""` makes it stop following
    /// and become a primary. Normally sent by a primary's `AddReplica`/`RemoveReplica`.
    pub async fn follow(&self, primary: &str) -> Result<(), ClientError> {
        let req = FollowRequest {
            primary: primary.to_owned(),
        };
        let _: FollowResponse = self.call(&format!("{ADMIN}/Follow"), &req).await?;
        Ok(())
    }

    /// A Connect POST of `body` to `base/path` with the protocol's headers.
    fn request(
        &self,
        base: &str,
        path: &str,
        content_type: &'static str,
        timeout: Option<Duration>,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, ClientError> {
        let url = format!("{base}/{path}");
        let mut request = http::Request::post(&url)
            .header(CONTENT_TYPE, content_type)
            .header("connect-protocol-version", PROTOCOL_VERSION)
            .header(
                USER_AGENT,
                concat!("wasmkv-client/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(timeout) = timeout {
            let ms = timeout.as_millis().clamp(1, MAX_TIMEOUT_MS);
            request = request.header("connect-timeout-ms", ms.to_string());
        }
        request
            .body(Full::new(body))
            .map_err(|e| ClientError::BadAddress {
                addr: url,
                reason: e.to_string(),
            })
    }

    /// Follow the changes to keys under `prefix` as they commit, after replaying those after
    /// `from_lsn` (0 = only new changes). The stream has no deadline: it lasts until the node
    /// ends it or the `WatchStream` is dropped.
    pub async fn watch(
        &self,
        prefix: impl Into<Bytes>,
        from_lsn: u64,
    ) -> Result<WatchStream, ClientError> {
        let req = WatchRequest {
            prefix: prefix.into(),
            from_lsn,
        };
        self.server_stream(&format!("{KVSTORE}/Watch"), &req).await
    }

    /// One Connect server-streaming call (`path` as for [`Client::call`]). The stream has no
    /// deadline: it lasts until the node ends it or the stream is dropped.
    pub async fn server_stream<Req: WireMessage, Resp: WireMessage>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<ServerStream<Resp>, ClientError> {
        let body = envelope(0, &Codec::Cbor.encode(req));
        let request = self.request(
            &self.base,
            path.trim_start_matches('/'),
            Codec::Cbor.stream_content_type(),
            None,
            body,
        )?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| transport(&self.base, &e))?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            let body = body
                .collect()
                .await
                .map_err(|e| transport(&self.base, &e))?
                .to_bytes();
            return Err(rpc_error(parts.status, &parts.headers, &body));
        }
        Ok(ServerStream {
            body,
            buf: BytesMut::new(),
            addr: self.base.to_string(),
            done: false,
            message: PhantomData,
        })
    }

    /// POST `body` to `{base}/{path}` and return the body of a 200 answer; any other answer is
    /// turned into the error it carries. `budget` is what is left of the call's timeout (all
    /// of it, unless this is a redirect's second hop).
    async fn send(
        &self,
        base: &str,
        path: &str,
        body: Bytes,
        budget: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        let request = self.request(base, path, Codec::Cbor.unary_content_type(), budget, body)?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| transport(base, &e))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| transport(base, &e))?
                .to_bytes();
            Ok::<_, ClientError>((parts, body))
        };
        let (parts, body) = match budget {
            Some(budget) => tokio::time::timeout(budget, exchange).await.map_err(|_| {
                ClientError::Timeout {
                    addr: base.to_owned(),
                    // The timeout the caller set, not the part of it left for this hop.
                    after: self.timeout.unwrap_or(budget),
                }
            })??,
            None => exchange.await?,
        };
        if parts.status != StatusCode::OK {
            return Err(rpc_error(parts.status, &parts.headers, &body));
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if Codec::from_unary_content_type(content_type) != Some(Codec::Cbor) {
            return Err(ClientError::BadResponse {
                addr: base.to_owned(),
                reason: format!(
                    "expected Content-Type {}, got {content_type:?}",
                    Codec::Cbor.unary_content_type()
                ),
            });
        }
        Ok(body)
    }
}

/// The responses of a `Client::watch`.
pub type WatchStream = ServerStream<WatchResponse>;

/// The responses of a server-streaming call, read envelope by envelope as they arrive.
pub struct ServerStream<T> {
    body: hyper::body::Incoming,
    buf: BytesMut,
    addr: String,
    done: bool,
    message: PhantomData<fn() -> T>,
}

impl<T: WireMessage> ServerStream<T> {
    /// The next message; None once the node ended the stream cleanly.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        let bad = |addr: &str, reason: String| ClientError::BadResponse {
            addr: addr.to_owned(),
            reason,
        };
        loop {
            if self.done {
                return None;
            }
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
                if self.buf.len() >= 5 + len {
                    let frame = self.buf.split_to(5 + len);
                    let (flags, data) = (frame[0], &frame[5..]);
                    if flags & END_STREAM_FLAG == 0 {
                        return Some(
                            Codec::Cbor
                                .decode(data)
                                .map_err(|e| bad(&self.addr, e.message)),
                        );
                    }
                    self.done = true;
                    return end_of_stream(data).map(|e| Err(ClientError::Rpc(e)));
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(transport(&self.addr, &e)));
                }
                None => {
                    self.done = true;
                    return Some(Err(bad(
                        &self.addr,
                        "the stream ended without an end-of-stream message".into(),
                    )));
                }
            }
        }
    }
}

/// The error an end-of-stream message carries, if any.
fn end_of_stream(data: &[u8]) -> Option<ConnectError> {
    #[derive(serde::Deserialize)]
    struct EndOfStream {
        error: Option<serde_json::Value>,
    }
    let end: EndOfStream = serde_json::from_slice(data).ok()?;
    let error = end.error?;
    Some(
        ConnectError::from_json(error.to_string().as_bytes())
            .unwrap_or_else(|| ConnectError::new(Code::Unknown, error.to_string())),
    )
}

/// The wire TTL of a `SetOptions::ttl`.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `http://host:port[/prefix]` without a trailing slash, from what a person types.
pub fn normalize_base(input: &str) -> Result<String, ClientError> {
    normalize_base_with(input, "http")
}

/// [`normalize_base`] for a client whose addresses without a scheme mean `default_scheme`.
fn normalize_base_with(input: &str, default_scheme: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadAddress {
        addr: input.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = input.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("{default_scheme}://{trimmed}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(bad("only http:// and https:// addresses are supported")),
    };
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a,
        _ => return Err(bad("no host")),
    };
    if uri.query().is_some() {
        return Err(bad("a node address takes no query string"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{prefix}"))
}

/// The Connect error a non-200 answer carries: its JSON error body when it has one, else
/// (a proxy, a load balancer, a server that is not Connect) a code derived from the HTTP
/// status as the Connect protocol prescribes, with the body text as the message.
pub fn error_from_response(status: StatusCode, body: &[u8]) -> ConnectError {
    if let Some(e) = ConnectError::from_json(body) {
        return e;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        let mut end = text.len().min(MAX_ERROR_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    ConnectError::new(code_for_http_status(status), message)
}

/// The error a non-200 answer stands for: `NotPrimary` when a replica refused the call and
/// named its primary, else the Connect error it carries.
fn rpc_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let error = error_from_response(status, body);
    let primary = headers
        .get(PRIMARY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|primary| !primary.is_empty());
    match primary {
        Some(primary) if error.code == Code::FailedPrecondition => ClientError::NotPrimary {
            primary: primary.to_owned(),
            error,
        },
        _ => ClientError::Rpc(error),
    }
}

/// The Connect protocol's mapping of an HTTP status without a Connect error body to a code.
fn code_for_http_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A transport failure as an `io::Error` whose message is the whole cause, without the
/// pooling layer's wrapper (it only names the stage, e.g. "client error (Connect)") and
/// without repeats, and whose kind is that of the underlying I/O error when there is one.
fn transport(addr: &str, err: &(dyn StdError + 'static)) -> ClientError {
    let mut kind = io::ErrorKind::Other;
    let mut text = String::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        cause = e.source();
        if let Some(io) = e.downcast_ref::<io::Error>() {
            kind = io.kind();
        }
        let wrapper = e
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some();
        let message = e.to_string();
        if (wrapper && cause.is_some()) || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    ClientError::Transport {
        addr: addr.to_owned(),
        source: io::Error::new(kind, text),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Response;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn http_statuses_map_to_connect_codes() {
        let cases = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (418, Code::Unknown),
            (302, Code::Unknown),
        ];
        for (status, code) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(code_for_http_status(status), code, "{status}");
        }
    }

    #[test]
    fn a_connect_error_body_wins_over_the_status() {
        let body = ConnectError::new(Code::FailedPrecondition, "read-only replica").to_json();
        let e = error_from_response(StatusCode::BAD_REQUEST, &body);
        assert_eq!(e.code, Code::FailedPrecondition);
        assert_eq!(e.message, "read-only replica");
    }

    #[test]
    fn other_bodies_keep_their_text_under_the_status_code() {
        let e = error_from_response(StatusCode::BAD_GATEWAY, b"  upstream went away\n");
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::Unavailable, "upstream went away")
        );
        // JSON that is not a Connect error (an unknown code) is just text.
        let e = error_from_response(StatusCode::NOT_FOUND, br#"{"code":"teapot"}"#);
        assert_eq!(e.code, Code::Unimplemented);
        assert_eq!(e.message, r#"{"code":"teapot"}"#);
        // No body: the status is the message.
        let e = error_from_response(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(e.message, "HTTP 503 Service Unavailable");
        // A whole HTML page is cut, on a character boundary.
        let page = "é".repeat(1000);
        let e = error_from_response(StatusCode::INTERNAL_SERVER_ERROR, page.as_bytes());
        assert_eq!(e.code, Code::Unknown);
        assert!(e.message.len() <= MAX_ERROR_TEXT && !e.message.is_empty());
        let e = error_from_response(StatusCode::UNAUTHORIZED, b"\xff\xfe");
        assert_eq!(e.code, Code::Unauthenticated);
    }

    #[test]
    fn addresses_are_normalized_or_refused() {
        let ok = [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            (" localhost:1/ ", "http://localhost:1"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
            ("http://node:80/kv/", "http://node:80/kv"),
            ("https://x:1", "https://x:1"),
        ];
        for (input, want) in ok {
            assert_eq!(Client::new(input).unwrap().base(), want, "{input}");
        }
        let tls = ClientOptions {
            tls: Some(ClientTls::default()),
            token: None,
        };
        assert_eq!(
            Client::with_options("node:8443", &tls).unwrap().base(),
            "https://node:8443"
        );
        for input in ["ftp://x:1", "http://", "", "http://x:1/?a=b", "x y"] {
            let err = Client::new(input).unwrap_err();
            assert!(
                matches!(err, ClientError::BadAddress { .. }),
                "{input}: {err}"
            );
            assert_eq!(err.code(), None);
        }
    }

    #[test]
    fn ttls_never_round_to_never() {
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_secs(10)), 10_000);
    }

    /// A free local port with nothing listening on it.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn an_unreachable_node_is_unavailable_with_the_io_kind() {
        let addr = closed_port().await;
        let err = Client::new(&addr).unwrap().status().await.unwrap_err();
        assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
        let ClientError::Transport { source, .. } = &err else {
            panic!("expected a transport error, got {err:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot reach http://{addr}: ")),
            "{message}"
        );
        assert!(!message.contains("client error ("), "{message}");
    }

    /// A node that accepts and holds connections without ever answering; abort the task to
    /// stop it.
    async fn silent_node() -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (addr, holder)
    }

    #[tokio::test]
    async fn a_silent_node_hits_the_deadline() {
        let (addr, holder) = silent_node().await;
        let client = Client::new(&addr)
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        let err = client.get("k").await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert_eq!(err.code(), Some(Code::DeadlineExceeded));
        assert!(err.to_string().contains("within 100ms"), "{err}");
        holder.abort();
    }

    /// A stand-in server on a free local port answering every request with `answer`; returns
    /// its `host:port` and the number of connections it accepted.
    async fn serve<F, Fut>(answer: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let reply = answer(req);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        (addr, connections)
    }

    fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    /// A stand-in node: checks what a Connect unary request must carry, answers Get with a
    /// CBOR GetResponse echoing the key, Set with a plain-text 503, anything else with a
    /// Connect error. Counts connections, to show that calls reuse one.
    async fn fake_node() -> (String, Arc<AtomicUsize>) {
        serve(answer).await
    }

    async fn answer(req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(header("content-type").as_deref(), Some("application/cbor"));
        assert_eq!(header("connect-protocol-version").as_deref(), Some("1"));
        assert_eq!(header("connect-timeout-ms").as_deref(), Some("5000"));
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        match path.as_str() {
            "/kvstore.v1.KVStore/Get" => {
                let get: GetRequest = Codec::Cbor.decode(&body).unwrap();
                let resp = GetResponse {
                    found: true,
                    value: get.key,
                    version: 7,
                    expires_at_ms: 0,
                };
                reply(200, "application/cbor", Codec::Cbor.encode(&resp))
            }
            "/kvstore.v1.KVStore/Set" => reply(503, "text/plain", b"draining".to_vec()),
            "/kvstore.v1.Admin/Status" => reply(200, "application/json", b"{}".to_vec()),
            _ => {
                let e = ConnectError::new(Code::Unimplemented, format!("no route {path}"));
                reply(501, "application/json", e.to_json())
            }
        }
    }

    #[tokio::test]
    async fn calls_carry_the_connect_headers_and_share_a_connection() {
        let (addr, connections) = fake_node().await;
        let client = Client::new(&addr)
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        for i in 0..3 {
            let key = format!("key-{i}");
            let got = client.clone().get(key.clone()).await.unwrap();
            assert!(got.found);
            assert_eq!((got.value.as_ref(), got.version), (key.as_bytes(), 7));
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1, "keep-alive reused");

        let err = client
            .set("k", "v", SetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::Unavailable));
        assert_eq!(err.to_string(), "unavailable: draining");

        let err = client.digest().await.unwrap_err();
        assert!(matches!(&err, ClientError::Rpc(e) if e.code == Code::Unimplemented));
        assert!(
            err.to_string().contains("/kvstore.v1.Admin/Digest"),
            "{err}"
        );

        let err = client.status().await.unwrap_err();
        assert!(matches!(err, ClientError::BadResponse { .. }), "{err}");
        assert_eq!(err.code(), Some(Code::Internal));
    }

    /// What a replica answers a write: `failed_precondition`, naming `primary` in the
    /// `wasmkv-primary` header when given.
    fn refusal(primary: Option<&str>) -> Response<Full<Bytes>> {
        let e = ConnectError::new(Code::FailedPrecondition, "this node is a read-only replica");
        let mut response = reply(400, "application/json", e.to_json());
        if let Some(primary) = primary {
            response
                .headers_mut()
                .insert(PRIMARY_HEADER, primary.parse().unwrap());
        }
        response
    }

    /// A stand-in replica that refuses every call (reads too, so a test can tell whether a
    /// read was redirected) naming `primary`, if given; returns its address and its call count.
    async fn stub_replica(primary: Option<String>) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let (addr, _) = serve(move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            let response = refusal(primary.as_deref());
            async move { response }
        })
        .await;
        (addr, calls)
    }

    /// A request as a stand-in primary received it.
    struct Received {
        path: String,
        body: Bytes,
        timeout_ms: u64,
    }

    /// A stand-in primary that takes every write (LSN 42) and keeps what it received.
    async fn stub_primary() -> (String, Arc<Mutex<Vec<Received>>>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let (addr, _) = serve(move |req: http::Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let timeout_ms = req.headers()["connect-timeout-ms"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let answer = match path.as_str() {
                    "/kvstore.v1.KVStore/Set" => Codec::Cbor.encode(&SetResponse { lsn: 42 }),
                    "/kvstore.v1.KVStore/Delete" => Codec::Cbor.encode(&DeleteResponse {
                        found: true,
                        lsn: 42,
                    }),
                    "/kvstore.v1.KVStore/Write" => Codec::Cbor.encode(&WriteResponse { lsn: 42 }),
                    _ => panic!("the primary got an unexpected call: {path}"),
                };
                log.lock().unwrap().push(Received {
                    path,
                    body,
                    timeout_ms,
                });
                reply(200, "application/cbor", answer)
            }
        })
        .await;
        (addr, received)
    }

    fn client(addr: &str) -> Client {
        Client::new(addr)
            .unwrap()
            .with_timeout(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn writes_refused_by_a_replica_are_sent_once_to_its_primary() {
        let (primary, received) = stub_primary().await;
        // The header may be a bare `host:port` or a URL: both are followed.
        for named in [primary.clone(), format!("http://{primary}/")] {
            received.lock().unwrap().clear();
            let (replica, calls) = stub_replica(Some(named.clone())).await;
            let client = client(&replica);
            let opts = SetOptions {
                ttl: Some(Duration::from_secs(1)),
                ..SetOptions::default()
            };
            assert_eq!(client.set("k", "v", opts).await.unwrap(), 42, "{named}");
            let deleted = client.delete("k").await.unwrap();
            assert_eq!((deleted.found, deleted.lsn), (true, 42));
            let batch = vec![Mutation {
                op: crate::api::proto::Op::Set as i32,
                key: Bytes::from("b"),
                value: Bytes::from("1"),
                ttl_ms: 0,
            }];
            assert_eq!(client.write(batch.clone()).await.unwrap(), 42);
            assert_eq!(calls.load(Ordering::SeqCst), 3, "one refusal per write");

            // The primary got the very requests the replica refused.
            let set = SetRequest {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
                ttl_ms: 1000,
                min_replicas: 0,
                if_version: None,
            };
            let delete = DeleteRequest {
                key: Bytes::from("k"),
            };
            let write = WriteRequest {
                mutations: batch,
                min_replicas: 0,
            };
            let want = [
                (SET, Codec::Cbor.encode(&set)),
                (DELETE, Codec::Cbor.encode(&delete)),
                (WRITE, Codec::Cbor.encode(&write)),
            ]
            .map(|(path, body)| (format!("/{path}"), Bytes::from(body)));
            let got: Vec<_> = (received.lock().unwrap().iter())
                .map(|r| (r.path.clone(), r.body.clone()))
                .collect();
            assert_eq!(got, want, "{named}");
        }
    }

    #[tokio::test]
    async fn reads_and_admin_calls_are_not_redirected() {
        let (primary, received) = stub_primary().await;
        let (replica, calls) = stub_replica(Some(primary.clone())).await;
        let client = client(&replica);
        let err = client.get("k").await.unwrap_err();
        assert_eq!(err.primary(), Some(primary.as_str()), "{err:?}");
        assert_eq!(err.code(), Some(Code::FailedPrecondition));
        assert_eq!(
            err.to_string(),
            "failed_precondition: this node is a read-only replica"
        );
        let err = client.multi_get(vec![Bytes::from("k")]).await.unwrap_err();
        assert_eq!(err.primary(), Some(primary.as_str()), "{err:?}");
        let err = client.add_replica("10.0.0.9:8080").await.unwrap_err();
        assert_eq!(err.primary(), Some(primary.as_str()), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_primary_that_redirects_again_is_an_error_after_one_hop() {
        let (third, received) = stub_primary().await;
        let (second, second_calls) = stub_replica(Some(third.clone())).await;
        let (first, first_calls) = stub_replica(Some(second)).await;
        let err = client(&first)
            .set("k", "v", SetOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(&err, ClientError::NotPrimary { .. }), "{err:?}");
        assert_eq!(err.primary(), Some(third.as_str()));
        assert_eq!(first_calls.load(Ordering::SeqCst), 1);
        assert_eq!(second_calls.load(Ordering::SeqCst), 1);
        assert!(received.lock().unwrap().is_empty(), "a second hop was made");
    }

    #[tokio::test]
    async fn a_refusal_the_client_cannot_follow_is_returned_as_it_came() {
        let (replica, calls) = stub_replica(None).await;
        let err = client(&replica).delete("k").await.unwrap_err();
        let ClientError::Rpc(e) = &err else {
            panic!("expected the node's own error, got {err:?}");
        };
        assert_eq!(
            e,
            &ConnectError::new(Code::FailedPrecondition, "this node is a read-only replica")
        );
        assert_eq!(err.primary(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A primary this client cannot call: the refusal, naming it, is the answer.
        let (replica, calls) = stub_replica(Some("ftp://10.0.0.1:8443".into())).await;
        let err = client(&replica).delete("k").await.unwrap_err();
        assert!(matches!(&err, ClientError::NotPrimary { .. }), "{err:?}");
        assert_eq!(err.primary(), Some("ftp://10.0.0.1:8443"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_a_failed_precondition_with_a_primary_is_a_redirect() {
        let refusal = |code: Code, header: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert(PRIMARY_HEADER, value.parse().unwrap());
            }
            let body = ConnectError::new(code, "no").to_json();
            rpc_error(code.http_status(), &headers, &body)
        };
        let err = refusal(Code::FailedPrecondition, Some(" p:1 "));
        assert_eq!(err.primary(), Some("p:1"));
        for (code, header) in [
            (Code::FailedPrecondition, None),
            (Code::FailedPrecondition, Some("  ")),
            (Code::Unavailable, Some("p:1")),
        ] {
            let err = refusal(code, header);
            assert!(
                matches!(&err, ClientError::Rpc(e) if e.code == code),
                "{code} {header:?}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_redirected_write_gets_what_is_left_of_the_deadline() {
        let (primary, received) = stub_primary().await;
        let named = primary.clone();
        // A replica that takes 200 ms to refuse: the primary must be told at most 4.8 s.
        let (replica, _) = serve(move |_req| {
            let response = refusal(Some(&named));
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                response
            }
        })
        .await;
        client(&replica)
            .set("k", "v", SetOptions::default())
            .await
            .unwrap();
        let timeout_ms = received.lock().unwrap()[0].timeout_ms;
        assert!(timeout_ms <= 4800, "{timeout_ms}");

        // A primary that never answers: the call fails at the one deadline, naming it.
        let (silent, holder) = silent_node().await;
        let (replica, _) = stub_replica(Some(silent.clone())).await;
        let err = Client::new(&replica)
            .unwrap()
            .with_timeout(Duration::from_millis(300))
            .set("k", "v", SetOptions::default())
            .await
            .unwrap_err();
        let ClientError::Timeout { addr, after } = &err else {
            panic!("expected a timeout, got {err:?}");
        };
        assert_eq!(
            (addr.as_str(), *after),
            (
                format!("http://{silent}").as_str(),
                Duration::from_millis(300)
            )
        );
        holder.abort();
    }
}
