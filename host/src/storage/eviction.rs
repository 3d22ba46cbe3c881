//! What eviction policies see and implement: candidates sampled from the engine, the policy
//! trait and its errors.
//!
//! Over a limit, the primary evicts by sampling (Redis-style) rather than keeping an exact LRU
//! list, which would turn every read into a write to shared state. A policy only ranks the
//! candidates it is shown; [`super::Evictor`] does the sampling and keeps a pool across rounds.

use bytes::Bytes;

use super::engine::Engine;
use super::entry::{AccessClock, Entry};

/// A stored entry offered to an eviction policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: Bytes,
    /// [`super::entry_cost`] of the entry: what evicting it frees.
    pub size: u64,
    /// Absolute wall-clock ms of the last read or write (10 ms resolution).
    pub last_access_ms: u64,
    /// Logarithmic frequency counter (0 to 255, Redis LFU semantics): a new key starts at 5,
    /// it grows with the log of the hit count and loses one per idle minute.
    pub hits: u32,
    /// Absolute wall-clock expiry in ms; 0 means none.
    pub expires_at_ms: u64,
    /// Version of the entry, so the caller deletes it only if it was not rewritten since.
    pub version: u64,
}

impl Candidate {
    fn new(entry: &Entry, clock: &AccessClock, tick: u32) -> Self {
        Self {
            key: Bytes::copy_from_slice(entry.key()),
            size: entry.cost(),
            last_access_ms: clock.wall_ms(entry.access_tick()),
            hits: u32::from(entry.hits(tick)),
            expires_at_ms: entry.expires_at_ms,
            version: entry.version,
        }
    }
}

/// Why no victim could be chosen. The messages reach clients whose writes are refused, so they
/// say what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error(
        "memory or entry limit reached and eviction_policy is noeviction: delete keys or raise \
         max_memory/max_entries"
    )]
    NoEviction,
    #[error(
        "memory or entry limit reached and the eviction policy found no key to evict \
         (volatile-ttl only evicts keys with a TTL): delete keys, set TTLs or raise \
         max_memory/max_entries"
    )]
    NoCandidates,
    #[error("eviction policy {policy} failed: {message}")]
    Policy { policy: String, message: String },
}

/// Ranks eviction candidates.
///
/// Implementations may be untrusted (a later WebAssembly plugin implements this trait), so the
/// caller tolerates any answer: indices out of range or repeated are ignored.
pub trait EvictionPolicy: Send + Sync {
    /// Name shown in errors, logs and metrics.
    fn name(&self) -> &str;

    /// Up to `want` indices into `candidates`, best victim first. May return fewer.
    fn rank(&self, candidates: &[Candidate], want: usize) -> Result<Vec<usize>, EvictionError>;

    /// Whether the policy only ever evicts keys with an expiry. The evictor then samples among
    /// those keys only, as Redis does for its volatile policies: sampling all keys would rarely
    /// show such a policy a candidate when few keys have a TTL.
    fn volatile_only(&self) -> bool {
        false
    }
}

impl Engine {
    /// Up to `n` distinct random stored entries (expired ones included), fewer if the engine
    /// holds fewer.
    ///
    /// Entries are drawn from a random shard first and from the following shards only if it
    /// holds too few: a shard's keys are a hash-random subset of all keys, so this is as good a
    /// sample as drawing each entry from a different shard, for one lock instead of `n`.
    pub fn sample_candidates(&self, n: usize) -> Vec<Candidate> {
        self.sample(n, false)
    }

    /// Like [`Engine::sample_candidates`], among entries that have an expiry only.
    pub fn sample_volatile_candidates(&self, n: usize) -> Vec<Candidate> {
        self.sample(n, true)
    }

    /// Current metadata of a stored entry (expired or not); `None` if the key is gone.
    pub fn candidate(&self, key: &[u8]) -> Option<Candidate> {
        let tick = self.clock().now_tick();
        let data = self.shard_of(key).0.read();
        Some(Candidate::new(data.get(key)?, self.clock(), tick))
    }

    fn sample(&self, n: usize, volatile: bool) -> Vec<Candidate> {
        let shards = self.shards();
        let tick = self.clock().now_tick();
        let start = fastrand::usize(..shards.len());
        let mut out = Vec::new();
        for offset in 0..shards.len() {
            let need = n - out.len();
            if need == 0 {
                break;
            }
            let data = shards[(start + offset) % shards.len()].0.read();
            let make = |entry| Candidate::new(entry, self.clock(), tick);
            if volatile {
                out.extend(data.sample_ttl(need).map(make));
            } else {
                out.extend(data.sample(need).map(make));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::storage::{EngineOptions, entry_cost};

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("key-{i}"))
    }

    #[test]
    fn samples_are_distinct_and_bounded_by_the_engine_size() {
        let engine = Engine::new(EngineOptions { shards: 256 });
        assert!(engine.sample_candidates(5).is_empty());
        for i in 0..3 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        // Three entries spread over 256 shards are all found.
        let mut keys: Vec<Bytes> = engine
            .sample_candidates(5)
            .into_iter()
            .map(|c| c.key)
            .collect();
        keys.sort();
        assert_eq!(keys, vec![key(0), key(1), key(2)]);
        for i in 3..1_000 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        let sample = engine.sample_candidates(50);
        let distinct: HashSet<&Bytes> = sample.iter().map(|c| &c.key).collect();
        assert_eq!((sample.len(), distinct.len()), (50, 50));
    }

    #[test]
    fn volatile_samples_only_see_keys_with_ttl() {
        let engine = Engine::new(EngineOptions { shards: 16 });
        for i in 0..1_000 {
            engine.set(
                &key(i),
                &Bytes::new(),
                if i % 100 == 0 { 5_000 + i } else { 0 },
                i,
            );
        }
        let sample = engine.sample_volatile_candidates(100);
        assert_eq!(sample.len(), 10);
        assert!(sample.iter().all(|c| c.expires_at_ms == 5_000 + c.version));
    }

    #[test]
    fn candidate_reports_current_metadata() {
        let engine = Engine::new(EngineOptions::default());
        assert_eq!(engine.candidate(b"k"), None);
        engine.set(
            &Bytes::from_static(b"k"),
            &Bytes::from_static(b"value"),
            77,
            3,
        );
        let c = engine.candidate(b"k").expect("stored");
        assert_eq!(c.key, Bytes::from_static(b"k"));
        assert_eq!(
            (c.size, c.hits, c.expires_at_ms, c.version),
            (entry_cost(1, 5), 5, 77, 3)
        );
        let now = crate::clock::now_ms();
        assert!(
            c.last_access_ms.abs_diff(now) < 1_000,
            "{} vs {now}",
            c.last_access_ms
        );
        // An expired entry is still a candidate: evicting it frees memory too.
        assert!(engine.candidate(b"k").is_some());
        engine.get(b"k", 0);
        assert_eq!(engine.candidate(b"k").expect("stored").hits, 6);
        engine.delete(b"k");
        assert_eq!(engine.candidate(b"k"), None);
    }

    #[test]
    fn errors_say_what_to_do() {
        assert!(EvictionError::NoEviction.to_string().contains("raise"));
        let err = EvictionError::Policy {
            policy: "p".into(),
            message: "trap".into(),
        };
        assert_eq!(err.to_string(), "eviction policy p failed: trap");
    }
}
