//! Shared helpers for the HTTP-level tests: an in-process node on 127.0.0.1 with a temporary
//! data directory, and a small HTTP client (hyper-util's legacy client) with a deadline on
//! every request.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;
use wasmkv::api::{Codec, WireMessage};
use wasmkv::config::Config;
use wasmkv::node::{Node, NodeError, NodeHandle};

/// How long any single request may take before the test fails instead of hanging.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// The YAML of a test node in `dir`: 127.0.0.1, port 0 (the OS picks), no fsync (tests do not
/// need durability against power loss; a clean shutdown still flushes), then `extra` — more
/// top-level sections, which must not repeat `data_dir`, `server` or `wal`.
pub fn config_yaml(dir: &Path, extra: &str) -> String {
    format!(
        "data_dir: {dir:?}\nserver:\n  address: 127.0.0.1\n  port: 0\nwal:\n  sync: never\n{extra}",
        dir = dir.display().to_string()
    )
}

pub fn config(dir: &Path, extra: &str) -> Config {
    let yaml = config_yaml(dir, extra);
    Config::from_yaml_str(&yaml, "test config")
        .unwrap_or_else(|e| panic!("the test config does not parse: {e}\n{yaml}"))
}

/// Start a node on `dir`; returns the handle and its base URL (`http://127.0.0.1:PORT`).
pub async fn start_in(dir: &Path, extra: &str) -> Result<(NodeHandle, String), NodeError> {
    let node = Node::start(config(dir, extra)).await?;
    let base = format!("http://127.0.0.1:{}", node.local_addr().port());
    Ok((node, base))
}

/// Start a node with a fresh temporary data directory (kept alive by the returned `TempDir`).
pub async fn start(extra: &str) -> (NodeHandle, String, TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary data directory");
    let (node, base) = start_in(dir.path(), extra)
        .await
        .unwrap_or_else(|e| panic!("the node did not start: {e}"));
    (node, base, dir)
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub version: http::Version,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The Connect error of this reply: `(code, message)`, checking it is a Connect JSON
    /// error body served as `application/json`.
    pub fn connect_error(&self) -> (String, String) {
        assert_eq!(
            self.content_type(),
            "application/json",
            "a Connect error is JSON; status {} body {}",
            self.status,
            self.text()
        );
        let json = self.json();
        let code = json["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `code` in {json}"))
            .to_owned();
        let message = json["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "the error has no message: {json}");
        (code, message)
    }

    /// Assert this is the Connect error `code` with `status`, and return its message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            (self.status.as_u16(), self.connect_error().0.as_str()),
            (status, code),
            "body: {}",
            self.text()
        );
        self.connect_error().1
    }
}

async fn send(client: HttpVersion, req: Request<Full<Bytes>>) -> Reply {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_max_idle_per_host(0);
    if client == HttpVersion::Http2 {
        builder.http2_only(true);
    }
    let client = builder.build_http::<Full<Bytes>>();
    let what = format!("{} {}", req.method(), req.uri());
    let exchange = async {
        let response = client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the response failed: {e}"))
            .to_bytes();
        Reply {
            version: parts.version,
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(REQUEST_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no response within {REQUEST_DEADLINE:?}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    /// Cleartext HTTP/2 with prior knowledge (h2c, no upgrade).
    Http2,
}

/// `POST base+path` with an optional Content-Type and extra headers.
pub async fn post(
    base: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
    extra_headers: &[(&str, &str)],
) -> Reply {
    post_with(
        HttpVersion::Http1,
        base,
        path,
        content_type,
        body,
        extra_headers,
    )
    .await
}

pub async fn post_with(
    version: HttpVersion,
    base: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
    extra_headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::post(format!("{base}{path}"));
    if let Some(content_type) = content_type {
        req = req.header(header::CONTENT_TYPE, content_type);
    }
    for (name, value) in extra_headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(body.into()))
        .expect("a valid test request");
    send(version, req).await
}

/// Any method on a full URL, with a raw body (empty for none).
pub async fn request(method: Method, url: &str, body: impl Into<Bytes>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.into()))
        .expect("a valid test request");
    send(HttpVersion::Http1, req).await
}

/// The path of an RPC: `("KVStore", "Get")` → `/kvstore.v1.KVStore/Get`.
pub fn rpc_path(service: &str, method: &str) -> String {
    format!("/kvstore.v1.{service}/{method}")
}

/// A unary call in `codec` that must succeed: checks the status and that the response comes
/// back in the request's codec, and decodes it.
pub async fn call<Req: WireMessage, Resp: WireMessage>(
    version: HttpVersion,
    base: &str,
    codec: Codec,
    service: &str,
    method: &str,
    request: &Req,
) -> Resp {
    let reply = post_with(
        version,
        base,
        &rpc_path(service, method),
        Some(codec.unary_content_type()),
        codec.encode(request),
        &[],
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{service}/{method} in {codec:?}: {}",
        reply.text()
    );
    assert_eq!(
        reply.content_type(),
        codec.unary_content_type(),
        "{service}/{method}: the response codec must match the request's"
    );
    codec
        .decode(&reply.body)
        .unwrap_or_else(|e| panic!("{service}/{method} in {codec:?}: undecodable response: {e}"))
}

/// A unary call that must fail: returns the raw reply for the caller to check.
pub async fn call_raw<Req: WireMessage>(
    base: &str,
    codec: Codec,
    service: &str,
    method: &str,
    request: &Req,
) -> Reply {
    post(
        base,
        &rpc_path(service, method),
        Some(codec.unary_content_type()),
        codec.encode(request),
        &[],
    )
    .await
}

/// Poll `check` until it returns `Some`, failing the test after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
