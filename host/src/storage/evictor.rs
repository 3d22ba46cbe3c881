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
