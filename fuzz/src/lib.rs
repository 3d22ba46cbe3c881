//! Properties the fuzz targets check, shared so that each target under `fuzz_targets/` says in a
//! few lines what it feeds where, and the seed corpus. Built only by `cargo +nightly fuzz`
//! (`cargo xtask fuzz`).

pub mod scratch;
pub mod seeds;
pub mod wire;

/// The first bytes of a WAL segment (`WKVWAL01`), spelled out here rather than taken from the
/// host: the on-disk format is what is under test.
pub const SEGMENT_MAGIC: &[u8] = b"WKVWAL01";
