//! Who may call what: the bearer token of a request checked against the node's tokens, and
//! the access each route needs.

use http::{Method, header};

use super::error::{Code, ConnectError};
use super::head::Headers;
use super::state::ApiState;
use crate::auth::Access;

/// The access an RPC needs, by its method name (see `server::rpc_name`).
pub fn rpc_access(method: &str) -> Access {
    match method {
        "Set" | "Delete" | "Write" => Access::Write,
        "Snapshot" | "AddReplica" | "RemoveReplica" | "Promote" | "Follow" => Access::Admin,
        "Subscribe" | "Ack" => Access::Replication,
        // Reads of keys and of the node's state; an unknown method is refused after.
        _ => Access::Read,
    }
}

/// The access a REST call on `/v1/kv/...` needs.
pub fn rest_access(method: &Method) -> Access {
    if method == Method::GET || method == Method::HEAD {
        Access::Read
    } else {
        Access::Write
    }
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
pub fn bearer(headers: &dyn Headers) -> Option<&str> {
    let value = headers.text(&header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Let the request through if the node takes no tokens, or if its token grants `access`.
/// `method` names the call in the refusal. Refusals are counted; the token is never part of
/// a message or a log line.
pub fn authorize(
    state: &ApiState,
    headers: &dyn Headers,
    access: Access,
    method: &str,
) -> Result<(), ConnectError> {
    let Some(tokens) = &state.tokens else {
        return Ok(());
    };
    let tokens = tokens.load();
    let Some(token) = bearer(headers) else {
        state.metrics.auth_failed("missing");
        return Err(ConnectError::new(
            Code::Unauthenticated,
            "this node requires a bearer token: send `Authorization: Bearer <token>` (the \
             wasmkv CLI reads it from WASMKV_TOKEN or --token-file)",
        ));
    };
    let Some(entry) = tokens.verify(token) else {
        state.metrics.auth_failed("invalid");
        return Err(ConnectError::new(
            Code::Unauthenticated,
            "the bearer token is not one this node accepts (revoked, mistyped, or meant for \
             another cluster)",
        ));
    };
    if entry.role.allows(access) {
        return Ok(());
    }
    state.metrics.auth_failed("forbidden");
    Err(ConnectError::new(
        Code::PermissionDenied,
        format!(
            "token {:?} has the role {}; {method} needs {}",
            entry.name,
            entry.role,
            access.roles()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_required() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer(&headers).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn every_method_needs_the_access_its_effect_calls_for() {
        for (method, access) in [
            ("Get", Access::Read),
            ("MultiGet", Access::Read),
            ("Watch", Access::Read),
            ("Status", Access::Read),
            ("Set", Access::Write),
            ("Write", Access::Write),
            ("Delete", Access::Write),
            ("Promote", Access::Admin),
            ("AddReplica", Access::Admin),
            ("Snapshot", Access::Admin),
            ("Follow", Access::Admin),
            ("Subscribe", Access::Replication),
            ("Ack", Access::Replication),
        ] {
            assert_eq!(rpc_access(method), access, "{method}");
        }
        assert_eq!(rest_access(&Method::GET), Access::Read);
        assert_eq!(rest_access(&Method::PUT), Access::Write);
        assert_eq!(rest_access(&Method::DELETE), Access::Write);
    }
}
