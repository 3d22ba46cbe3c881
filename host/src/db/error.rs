//! Errors of the durable store, each with the kind the API layer maps to a wire code.

use std::path::PathBuf;

use bytes::Bytes;

use crate::storage::EvictionError;
use crate::wal::WalError;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "version mismatch on key {key:?}: expected {expected}, found {}",
        describe_version(*actual)
    )]
    VersionMismatch {
        key: Bytes,
        expected: u64,
        actual: u64,
    },
    #[error("store is full: {0}")]
    LimitReached(#[source] EvictionError),
    #[error(
        "disk nearly full: {free} bytes free under {dir}, below the reserve of {reserve} bytes; \
         free space or lower storage.disk_reserve"
    )]
    DiskReserve {
        dir: PathBuf,
        free: u64,
        reserve: u64,
    },
    #[error("data directory {dir} is in use by another wasmkv process ({holder})")]
    Locked { dir: PathBuf, holder: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A replicated batch does not continue this store's log.
    #[error(
        "replicated record {got} does not follow this store's last LSN {last}: the stream \
         skipped records"
    )]
    ReplicationGap { last: u64, got: u64 },
    /// A replicated batch failed its checksums or does not decode.
    #[error("replicated records are damaged: {0}")]
    BadReplicationStream(#[source] crate::wal::DecodeError),
}

fn describe_version(actual: u64) -> String {
    if actual == 0 {
        "no such key".into()
    } else {
        format!("version {actual}")
    }
}

/// What kind of failure an error is, for callers that map errors to protocol codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A compare-and-set precondition did not hold.
    Aborted,
    /// A limit (entries, memory, disk) refuses the write.
    ResourceExhausted,
    /// The node cannot take writes now (I/O failure, closed); reads may still work.
    Unavailable,
    /// Damage or an unexpected I/O error.
    Internal,
}

impl DbError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DbError::VersionMismatch { .. } => ErrorKind::Aborted,
            DbError::LimitReached(_)
            | DbError::DiskReserve { .. }
            | DbError::Wal(WalError::RecordTooLarge { .. }) => ErrorKind::ResourceExhausted,
            DbError::Locked { .. } | DbError::Wal(WalError::Failed(_) | WalError::Closed) => {
                ErrorKind::Unavailable
            }
            DbError::Io { .. }
            | DbError::Wal(_)
            | DbError::ReplicationGap { .. }
            | DbError::BadReplicationStream(_) => ErrorKind::Internal,
        }
    }
}
