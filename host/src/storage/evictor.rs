//! Choosing eviction victims by sampling, with a pool of good candidates carried across rounds.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::fast::RandomState;
use indexmap::{IndexMap, IndexSet};

use super::engine::Engine;
use super::eviction::{Candidate, EvictionError, EvictionPolicy};

/// Candidates kept between rounds (Redis `EVPOOL_SIZE`). A key that ranked well but was not
/// evicted stays in view, so a few samples per round still converge on the best victims.
pub const POOL_SIZE: usize = 16;

/// Default candidates sampled per victim (Redis `maxmemory-samples` default): 5 approximates
/// true LRU closely; 10 is closer but costs twice as many samples per eviction.
pub const DEFAULT_SAMPLE: usize = 5;

/// Largest number of fresh candidates sampled in one round, so that a large `need` does not
/// hand the policy (possibly a WebAssembly plugin) an unbounded list.
const MAX_ROUND_SAMPLE: usize = 1024;

/// Rounds in a row without a new victim before [`Evictor::pick`] gives up. Sampling is random,
/// so one empty round (every sampled key skipped, say) does not prove there is nothing left.
const MAX_IDLE_ROUNDS: usize = 3;

/// Redis-style sampling evictor: each round samples candidates, merges them with the pool of
/// good candidates from earlier rounds and lets the policy rank them all; the best become
/// victims and the next best the new pool.
pub struct Evictor {
    policy: Arc<dyn EvictionPolicy>,
    sample: usize,
    pool: Vec<Candidate>,
}

impl Evictor {
    /// `sample` is how many candidates to sample per victim needed, like Redis's
    /// `maxmemory-samples` ([`DEFAULT_SAMPLE`] is its default); 0 counts as 1.
    /// Rank with `policy` from now on (a plugin reload); the candidate pool is emptied, since
    /// it was ranked by the old policy.
    pub fn set_policy(&mut self, policy: Arc<dyn EvictionPolicy>, sample: usize) {
        *self = Evictor::new(policy, sample);
    }

    pub fn new(policy: Arc<dyn EvictionPolicy>, sample: usize) -> Self {
        Self {
            policy,
            sample: sample.max(1),
            pool: Vec::with_capacity(POOL_SIZE),
        }
    }

    pub fn policy_name(&self) -> &str {
        self.policy.name()
    }

    /// Picks up to `need` distinct victim keys with their versions, best first. `skip(key)`
    /// excludes keys the caller must not evict (keys with writes in flight).
    ///
    /// Errors with the policy's error, or [`EvictionError::NoCandidates`] when nothing can be
    /// chosen. May return fewer than `need` victims; the caller deletes them and asks again if
    /// it is still over its limit.
    pub fn pick(
        &mut self,
        engine: &Engine,
        need: usize,
        skip: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Bytes, u64)>, EvictionError> {
        let mut victims = IndexMap::with_hasher(RandomState::default());
        let mut idle = 0;
        while victims.len() < need && idle < MAX_IDLE_ROUNDS {
            let before = victims.len();
            self.round(engine, need, &skip, &mut victims)?;
            idle = if victims.len() == before { idle + 1 } else { 0 };
        }
        if victims.is_empty() && need > 0 {
            return Err(EvictionError::NoCandidates);
        }
        Ok(victims.into_iter().collect())
    }

    /// One round: adds victims (key to version) until `need` and refills the pool.
    fn round(
        &mut self,
        engine: &Engine,
        need: usize,
        skip: &impl Fn(&[u8]) -> bool,
        victims: &mut IndexMap<Bytes, u64, RandomState>,
    ) -> Result<(), EvictionError> {
        let missing = need - victims.len();
        let candidates = self.candidates(engine, missing, |key| {
            skip(key) || victims.contains_key(key)
        });
        if candidates.is_empty() {
            return Ok(());
        }
        let ranked = match self.policy.rank(&candidates, missing + POOL_SIZE) {
            Ok(ranked) => ranked,
            // Maybe only this sample had nothing the policy wants; a later round may.
            Err(EvictionError::NoCandidates) => return Ok(()),
            Err(err) => return Err(err),
        };
        // The policy may be untrusted: ignore indices out of range or already used.
        let mut used = IndexSet::with_capacity_and_hasher(ranked.len(), RandomState::default());
        for index in ranked {
            let Some(candidate) = candidates.get(index) else {
                continue;
            };
            if !used.insert(index) {
                continue;
            }
            if victims.len() < need {
                victims.insert(candidate.key.clone(), candidate.version);
            } else if self.pool.len() < POOL_SIZE {
                self.pool.push(candidate.clone());
            } else {
                break;
            }
        }
        Ok(())
    }

    /// The pool (with current metadata; keys gone or rewritten since are dropped, as their
    /// ranking no longer holds) and a fresh sample, deduplicated by key, minus excluded keys.
    /// Empties the pool: the round refills it from the ranking.
    fn candidates(
        &mut self,
        engine: &Engine,
        missing: usize,
        exclude: impl Fn(&[u8]) -> bool,
    ) -> Vec<Candidate> {
        let mut merged = IndexMap::with_hasher(RandomState::default());
        for old in self.pool.drain(..) {
            if let Some(current) = engine.candidate(&old.key)
                && current.version == old.version
            {
                merged.insert(current.key.clone(), current);
            }
        }
        // Sampling per victim keeps each victim as well chosen as when evicting one at a time.
        let n = self.sample.saturating_mul(missing).min(MAX_ROUND_SAMPLE);
        let fresh = if self.policy.volatile_only() {
            engine.sample_volatile_candidates(n)
        } else {
            engine.sample_candidates(n)
        };
        for candidate in fresh {
            merged.entry(candidate.key.clone()).or_insert(candidate);
        }
        merged.retain(|key, _| !exclude(key));
        merged.into_values().collect()
    }
}

/// Names the policy: the trait object itself has no `Debug`.
impl fmt::Debug for Evictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evictor")
            .field("policy", &self.policy.name())
            .field("sample", &self.sample)
            .field("pool", &self.pool.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use parking_lot::Mutex;

    use super::*;
    use crate::storage::{EngineOptions, builtin_policy};

    /// 10 s in access ticks of 10 ms.
    const TEN_S: u32 = 1_000;

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("key-{i:05}"))
    }

    fn index(key: &[u8]) -> u64 {
        std::str::from_utf8(&key[4..]).unwrap().parse().unwrap()
    }

    fn evictor(policy: &str) -> Evictor {
        Evictor::new(builtin_policy(policy).unwrap(), DEFAULT_SAMPLE)
    }

    /// Evicts one key at a time, `rounds` times, deleting each victim as the db would.
    fn evict(engine: &Engine, evictor: &mut Evictor, rounds: usize) -> Vec<u64> {
        let mut victims = Vec::new();
        for _ in 0..rounds {
            for (key, version) in evictor.pick(engine, 1, |_| false).unwrap() {
                assert_eq!(engine.peek(&key, 0).unwrap().version, version);
                engine.delete(&key);
                victims.push(index(&key));
            }
        }
        assert_eq!(victims.len(), rounds);
        victims
    }

    /// Ranks candidates in the order given and records what it was shown. Volatile-only, so
    /// that a key without a TTL can only reach it through the pool.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<Candidate>>>);

    impl EvictionPolicy for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }

        fn rank(&self, candidates: &[Candidate], want: usize) -> Result<Vec<usize>, EvictionError> {
            self.0.lock().push(candidates.to_vec());
            Ok((0..candidates.len().min(want)).collect())
        }

        fn volatile_only(&self) -> bool {
            true
        }
    }

    /// Returns a fixed answer whatever it is shown.
    struct Fixed(Result<Vec<usize>, fn() -> EvictionError>);

    impl EvictionPolicy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }

        fn rank(&self, _: &[Candidate], _: usize) -> Result<Vec<usize>, EvictionError> {
            self.0.clone().map_err(|make| make())
        }
    }

    #[test]
    fn lru_evicts_what_was_accessed_longest_ago() {
        let engine = Engine::new(EngineOptions { shards: 16 });
        for i in 0..10_000 {
            let tick = if i < 5_000 { 0 } else { 10 * TEN_S };
            engine.set_at(&key(i), &Bytes::new(), 0, i, tick);
        }
        // Reading the first quarter makes it recent: the second quarter is now the oldest.
        for i in 0..2_500 {
            engine.get_at(&key(i), 0, 20 * TEN_S);
        }
        let mut lru = evictor("lru");
        let victims = evict(&engine, &mut lru, 200);
        let oldest = victims
            .iter()
            .filter(|&&i| (2_500..5_000).contains(&i))
            .count();
        assert!(
            oldest >= 180,
            "only {oldest} of 200 victims among the oldest keys"
        );
    }

    #[test]
    fn lfu_evicts_rarely_read_entries() {
        let engine = Engine::new(EngineOptions { shards: 16 });
        for i in 0..10_000 {
            engine.set_at(&key(i), &Bytes::new(), 0, i, 0);
        }
        for i in (1..10_000).step_by(2) {
            for _ in 0..3 {
                engine.get_at(&key(i), 0, 0);
            }
        }
        let victims = evict(&engine, &mut evictor("lfu"), 200);
        let cold = victims.iter().filter(|i| i.is_multiple_of(2)).count();
        assert!(cold >= 180, "only {cold} of 200 victims among unread keys");
    }

    #[test]
    fn volatile_ttl_evicts_soonest_expiry_among_keys_with_ttl() {
        let engine = Engine::new(EngineOptions { shards: 16 });
        for i in 0..1_000 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        let mut ttl = evictor("volatile-ttl");
        assert!(matches!(
            ttl.pick(&engine, 1, |_| false),
            Err(EvictionError::NoCandidates)
        ));
        for (i, expires) in [(1_000, 3_000), (1_001, 1_000), (1_002, 2_000)] {
            engine.set(&key(i), &Bytes::new(), expires, i);
        }
        assert_eq!(evict(&engine, &mut ttl, 1), vec![1_001]);
        let rest: Vec<u64> = ttl
            .pick(&engine, 2, |_| false)
            .unwrap()
            .iter()
            .map(|(k, _)| index(k))
            .collect();
        assert_eq!(rest, vec![1_002, 1_000]);
        engine.delete(&key(1_002));
        engine.delete(&key(1_000));
        for i in 2_000..2_100 {
            engine.set(&key(i), &Bytes::new(), 10_000 + i, i);
        }
        let victims = evict(&engine, &mut ttl, 50);
        assert!(
            victims.iter().all(|i| (2_000..2_100).contains(i)),
            "{victims:?}"
        );
    }

    #[test]
    fn noeviction_refuses_with_an_actionable_error() {
        let engine = Engine::new(EngineOptions { shards: 4 });
        engine.set(&key(1), &Bytes::new(), 0, 1);
        let mut none = evictor("noeviction");
        assert_eq!(none.policy_name(), "noeviction");
        let err = none.pick(&engine, 1, |_| false).unwrap_err();
        assert!(matches!(err, EvictionError::NoEviction));
        assert!(err.to_string().contains("noeviction"), "{err}");
    }

    #[test]
    fn skipped_keys_are_never_victims() {
        let engine = Engine::new(EngineOptions { shards: 4 });
        for i in 0..10 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        let mut lru = Evictor::new(builtin_policy("lru").unwrap(), 100);
        let victims = lru.pick(&engine, 3, |k| k != key(3)).unwrap();
        assert_eq!(victims, vec![(key(3), 3)]);
        let all = lru.pick(&engine, 1, |_| true);
        assert!(matches!(all, Err(EvictionError::NoCandidates)));

        for i in 10..1_000 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        let mut lru = evictor("lru");
        for _ in 0..100 {
            for (victim, _) in lru
                .pick(&engine, 1, |k| index(k).is_multiple_of(2))
                .unwrap()
            {
                assert!(!index(&victim).is_multiple_of(2));
                engine.delete(&victim);
            }
        }
    }

    #[test]
    fn large_needs_get_distinct_victims() {
        let engine = Engine::new(EngineOptions { shards: 8 });
        for i in 0..1_000 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        let mut lru = evictor("lru");
        let victims = lru.pick(&engine, 100, |_| false).unwrap();
        let distinct: HashSet<&Bytes> = victims.iter().map(|(k, _)| k).collect();
        assert_eq!((victims.len(), distinct.len()), (100, 100));
        let everything = lru.pick(&engine, 5_000, |_| false).unwrap();
        let distinct: HashSet<&Bytes> = everything.iter().map(|(k, _)| k).collect();
        assert_eq!((everything.len(), distinct.len()), (1_000, 1_000));
        assert!(lru.pick(&engine, 0, |_| false).unwrap().is_empty());
    }

    #[test]
    fn garbage_rankings_are_tolerated() {
        let engine = Engine::new(EngineOptions { shards: 2 });
        for i in 0..3 {
            engine.set(&key(i), &Bytes::new(), 0, i);
        }
        let garbage = Fixed(Ok(vec![usize::MAX, 3, 1, 1, 0, 0, 2]));
        let mut evictor = Evictor::new(Arc::new(garbage), 10);
        let victims = evictor.pick(&engine, 2, |_| false).unwrap();
        let distinct: HashSet<u64> = victims.iter().map(|(k, _)| index(k)).collect();
        assert_eq!(distinct.len(), 2);
        assert!(distinct.iter().all(|i| *i < 3));
        // The repeated victim index did not slip into the pool next to the third key.
        assert_eq!(evictor.pool.len(), 1);
        assert!(!distinct.contains(&index(&evictor.pool[0].key)));

        let mut empty = Evictor::new(Arc::new(Fixed(Ok(vec![]))), 10);
        assert!(matches!(
            empty.pick(&engine, 1, |_| false),
            Err(EvictionError::NoCandidates)
        ));
        let failing = Fixed(Err(|| EvictionError::Policy {
            policy: "fixed".into(),
            message: "trapped".into(),
        }));
        let mut failing = Evictor::new(Arc::new(failing), 10);
        let err = failing.pick(&engine, 1, |_| false).unwrap_err();
        assert_eq!(err.to_string(), "eviction policy fixed failed: trapped");
    }

    #[test]
    fn pool_keeps_unchanged_candidates_and_drops_gone_or_rewritten_ones() {
        let engine = Engine::new(EngineOptions { shards: 1 });
        for i in 0..100 {
            engine.set(&key(i), &Bytes::new(), 1_000, i);
        }
        let recorder = Arc::new(Recorder::default());
        let mut evictor = Evictor::new(recorder.clone(), 4);
        let first = evictor.pick(&engine, 1, |_| false).unwrap();
        let seen = recorder.0.lock()[0].clone();
        assert_eq!(seen.len(), 4);
        assert_eq!(first, vec![(seen[0].key.clone(), seen[0].version)]);
        engine.delete(&first[0].0);
        engine.delete(&seen[1].key);
        // Rewritten without a TTL, so only the pool could still offer it.
        engine.set(&seen[2].key.clone(), &Bytes::new(), 0, 999);
        evictor.pick(&engine, 1, |_| false).unwrap();
        let second = recorder.0.lock()[1].clone();
        let keys: HashSet<&Bytes> = second.iter().map(|c| &c.key).collect();
        assert_eq!(keys.len(), second.len(), "candidates are deduplicated");
        assert!(
            keys.contains(&seen[3].key),
            "an unchanged pool entry is kept"
        );
        assert!(!keys.contains(&seen[1].key), "a deleted key is dropped");
        assert!(!keys.contains(&seen[2].key), "a rewritten key is dropped");
        assert!(format!("{evictor:?}").contains("recorder"));
    }
}
