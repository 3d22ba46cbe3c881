//! Routes for people with curl: `GET`/`PUT`/`DELETE /v1/kv/{key}` with raw bodies (keys are
//! percent-decoded path segments; `PUT ...?ttl=10s`), plus `/healthz`, `/readyz`, `/metrics`.
//! Errors use the same Connect JSON as the RPC routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};

use super::connect::{RequestBody, ResponseBody, full};
use super::error::{Code, ConnectError};
use super::head::Head;
use super::kv;
use super::proto::{DeleteRequest, GetRequest, SetRequest};
use super::state::ApiState;

pub const KV_PREFIX: &str = "/v1/kv/";

pub async fn kv_route(
    state: &Arc<ApiState>,
    head: Head<'_>,
    started: Instant,
    body: RequestBody,
) -> Result<Response<ResponseBody>, ConnectError> {
    let raw = head.path.strip_prefix(KV_PREFIX).unwrap_or_default();
    let key = Bytes::from(percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>());
    match *head.method {
        Method::GET | Method::HEAD => {
            let got = kv::get(
                state,
                GetRequest {
                    key: key.clone(),
                    min_lsn: 0,
                },
                kv::Wait::within(None, started),
            )
            .await?;
            if !got.found {
                return Err(not_found(&key));
            }
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header("x-wasmkv-version", got.version)
                .header("x-wasmkv-expires-at-ms", got.expires_at_ms)
                .body(full(got.value))
                .expect("valid headers"))
        }
        Method::PUT | Method::POST => {
            let ttl = ttl_param(head.query)?;
            let value = state
                .read_body(
                    head.headers,
                    body,
                    state.limits.max_value_bytes,
                    "max_value_bytes",
                )
                .await?;
            let set = kv::set(
                state,
                SetRequest {
                    key,
                    value,
                    ttl_ms: ttl.map_or(0, ttl_ms),
                    ..SetRequest::default()
                },
                kv::Wait::within(None, started),
            )
            .await?;
            Ok(json(serde_json::json!({ "lsn": set.lsn })))
        }
        Method::DELETE => {
            let deleted = kv::delete(state, DeleteRequest { key: key.clone() }).await?;
            if !deleted.found {
                return Err(not_found(&key));
            }
            Ok(json(
                serde_json::json!({ "found": true, "lsn": deleted.lsn }),
            ))
        }
        _ => Err(ConnectError::new(
            Code::Unimplemented,
            format!(
                "{} is not supported on {KV_PREFIX}{{key}}: use GET, PUT or DELETE",
                head.method
            ),
        )),
    }
}

/// `?ttl=` in ms as the RPC takes it: 0 means "never expires", and a TTL under 1 ms (but not
/// zero) rounds up so it is not mistaken for that.
fn ttl_ms(ttl: Duration) -> u64 {
    match u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) {
        0 if !ttl.is_zero() => 1,
        ms => ms,
    }
}

fn not_found(key: &[u8]) -> ConnectError {
    ConnectError::new(
        Code::NotFound,
        format!("key {:?} not found", String::from_utf8_lossy(key)),
    )
}

/// `ttl=10s` (humantime: 250ms, 10s, 5m, 1h30m) from the query string.
fn ttl_param(query: Option<&str>) -> Result<Option<Duration>, ConnectError> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "ttl" {
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            return humantime::parse_duration(&value).map(Some).map_err(|e| {
                ConnectError::invalid_argument(format!(
                    "ttl={value:?} is not a duration ({e}); use forms like 250ms, 10s, 5m"
                ))
            });
        }
    }
    Ok(None)
}

pub fn json(value: serde_json::Value) -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(
            serde_json::to_vec(&value).expect("JSON value serializes"),
        ))
        .expect("valid headers")
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(body))
        .expect("valid headers")
}

pub fn healthz() -> Response<ResponseBody> {
    text(StatusCode::OK, "ok\n")
}

pub fn readyz(state: &ApiState) -> Response<ResponseBody> {
    // The store is published (and serves reads) before replication has started; until then
    // writes and the admin calls answer `unavailable`, so the node is not ready yet.
    if state.replication().is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "recovering\n");
    }
    match state.store.load_full() {
        None => text(StatusCode::SERVICE_UNAVAILABLE, "recovering\n"),
        Some(db) => match db.stats().failure {
            Some(failure) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("writes refused: {failure}\n"),
            ),
            None => text(StatusCode::OK, "ready\n"),
        },
    }
}

pub fn metrics(state: &ApiState) -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(full(state.metrics.render()))
        .expect("valid headers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Limits, Security};
    use crate::db::{Db, DbOptions};
    use crate::wal::SyncPolicy;

    /// Found by a chaos run: `/readyz` said 200 while the store was open but replication not
    /// started yet, so an operator's `Follow` right after a restart failed with
    /// `unavailable`.
    #[test]
    fn not_ready_until_replication_has_started() {
        let dir = tempfile::tempdir().unwrap();
        let state = ApiState::new(Limits::default(), Security::default());
        let db = Db::open(DbOptions::new(dir.path(), SyncPolicy::Never)).unwrap();
        state.store.store(Some(Arc::new(db)));
        assert_eq!(readyz(&state).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            state.check_primary().is_err(),
            "writes are refused meanwhile"
        );
    }

    #[test]
    fn ttl_query_parameter() {
        assert_eq!(ttl_param(None).unwrap(), None);
        assert_eq!(ttl_param(Some("x=1")).unwrap(), None);
        assert_eq!(
            ttl_param(Some("a=b&ttl=10s")).unwrap(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            ttl_param(Some("ttl=1h30m")).unwrap(),
            Some(Duration::from_secs(5400))
        );
        let err = ttl_param(Some("ttl=soon")).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("250ms"), "{}", err.message);
    }
}
