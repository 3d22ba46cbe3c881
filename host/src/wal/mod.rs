//! The write-ahead log: every change is a record here before it touches memory.
//!
//! Layout of a data directory's `wal/`: segment files named by their first LSN (see
//! `segment`), each a magic followed by records (see `record` for the byte format). LSNs are
//! dense and increasing across segments; a gap is corruption. `snap/` beside it holds
//! snapshots (see `snapshot`). `log` is the writer (group commit, rotation, sync policies,
//! retention), `recovery` reads the log back at start-up, checks it offline (`verify`) and
//! repairs it on request, and `reader` serves committed records to readers while the writer
//! appends.

mod error;
mod log;
mod reader;
mod record;
mod recovery;
mod segment;
pub mod snapshot;

pub use error::{Result, WalError};
pub use log::{SyncPolicy, Wal, WalOptions, WalStats};
pub use reader::LogReader;
pub use record::{Command, DecodeError, Mutation, MutationRef, Record};
/// For the fuzz targets (`fuzz/`): they frame arbitrary bodies with a right length and CRC, so
/// that fuzzing reaches the body decoder instead of stopping at the checksum.
#[doc(hidden)]
pub use record::{FRAME_HEADER, seal_frame};
/// Record frames travel as they are stored: replication ships them to replicas.
pub use record::{decode as decode_record, encode as encode_record};
pub use recovery::{RepairReport, VerifyReport, WalDamage, repair, verify};
pub use segment::{segment_path, sync_dir};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tools_tests;
