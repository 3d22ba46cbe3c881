//! Connect errors: a code from the Connect/gRPC set, an HTTP status per the Connect protocol,
//! and a message a person can act on. Serialized as `{"code": "...", "message": "..."}`.

use crate::db::{DbError, ErrorKind};

/// The Connect error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status the Connect protocol assigns to this code.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Code::Canceled => S::from_u16(499).expect("valid status"),
            Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
            Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
            Code::NotFound => S::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => S::CONFLICT,
            Code::PermissionDenied => S::FORBIDDEN,
            Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
            Code::Unimplemented => S::NOT_IMPLEMENTED,
            Code::Unavailable => S::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => S::UNAUTHORIZED,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
    /// On a replica's refusal of a write: the primary to send it to, also sent as the
    /// `wasmkv-primary` response header so that clients can follow it.
    pub primary: Option<String>,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
            primary: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        ConnectError::new(Code::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ConnectError::new(Code::Unavailable, message)
    }

    /// A write sent to a replica: it names the primary that takes writes.
    pub fn not_primary(primary: &str) -> Self {
        ConnectError {
            primary: Some(primary.to_owned()),
            ..ConnectError::new(
                Code::FailedPrecondition,
                format!(
                    "this node is a replica and does not take writes; send them to the \
                     primary at {primary}"
                ),
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ConnectError::new(Code::Internal, message)
    }

    /// The Connect error body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
        }))
        .expect("a JSON object always serializes")
    }

    /// Parse a Connect error body; None if it is not one.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Wire {
            code: String,
            #[serde(default)]
            message: String,
        }
        let wire: Wire = serde_json::from_slice(body).ok()?;
        Some(ConnectError::new(Code::parse(&wire.code)?, wire.message))
    }
}

impl From<DbError> for ConnectError {
    fn from(e: DbError) -> Self {
        let code = match e.kind() {
            ErrorKind::Aborted => Code::Aborted,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Internal => Code::Internal,
        };
        ConnectError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_json_with_their_statuses() {
        for code in Code::ALL {
            let e = ConnectError::new(code, "why");
            assert_eq!(ConnectError::from_json(&e.to_json()), Some(e));
        }
        assert_eq!(Code::InvalidArgument.http_status(), 400);
        assert_eq!(Code::ResourceExhausted.http_status(), 429);
        assert_eq!(Code::Unavailable.http_status(), 503);
        assert_eq!(Code::Aborted.http_status(), 409);
        assert!(ConnectError::from_json(b"{\"code\":\"nope\"}").is_none());
    }
}
