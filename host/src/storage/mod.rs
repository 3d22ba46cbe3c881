//! The in-memory storage engine: a sharded concurrent map from keys to values with absolute
//! expiry times, versions and approximate access metadata.
//!
//! This layer only stores and samples. It never decides on its own to expire or evict anything,
//! because on a replica that would make the dataset diverge from the primary's: `db` asks it for
//! expired keys ([`Engine::sample_expired`]) or eviction victims ([`Evictor::pick`]) and then
//! deletes them through the WAL like any other write. For the same reason it knows nothing about
//! the WAL.
//!
//! Keys and values are stored as given. Callers should hand in `Bytes` that own their memory
//! (not slices of a large network buffer), otherwise an entry pins the whole buffer and
//! [`Engine::memory`] underestimates what is really held.

mod digest;
mod engine;
mod entry;
mod eviction;
mod evictor;
mod expiry;
mod policies;
mod sample;
mod shard;

pub use digest::Digest;
pub use engine::{Engine, EngineOptions, Item, Peek, SnapshotEntry};
pub use entry::{ENTRY_OVERHEAD, entry_cost};
pub use eviction::{Candidate, EvictionError, EvictionPolicy};
pub use evictor::{DEFAULT_SAMPLE, Evictor, POOL_SIZE};
pub use expiry::ExpirySample;
pub use policies::{BUILTIN_POLICIES, Lfu, Lru, NoEviction, VolatileTtl, builtin_policy};
