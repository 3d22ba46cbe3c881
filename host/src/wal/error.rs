//! Errors of the write-ahead log. Every message names the file (and where it helps, the byte
//! offset and LSN) so an operator can act on it without reading code.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "WAL segment {path} is damaged at offset {offset} (expected LSN {lsn}): {reason}. \
         Records from there on cannot be trusted; `wasmkv repair` cuts the log at this point \
         (everything after it is lost)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        lsn: u64,
        reason: String,
    },
    #[error(
        "snapshot {path} is damaged: {reason}. Restore it from a backup: the WAL alone no \
         longer holds what the snapshot folded in"
    )]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error(
        "the WAL no longer holds LSN {requested}: the oldest retained record is LSN {oldest} \
         (older ones were folded into a snapshot)"
    )]
    Trimmed { requested: u64, oldest: u64 },
    #[error(
        "the WAL refuses writes after an I/O failure ({0}); the page cache can no longer be \
         trusted, restart the node to recover from disk"
    )]
    Failed(String),
    #[error("a record of {bytes} bytes is larger than the WAL allows ({max}); split the write")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("the WAL is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
