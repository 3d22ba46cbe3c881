//! The built-in eviction policies, chosen by name in the configuration.

use std::sync::Arc;

use super::eviction::{Candidate, EvictionError, EvictionPolicy};

/// Names accepted by [`builtin_policy`], for configuration errors and help text.
pub const BUILTIN_POLICIES: &[&str] = &["lru", "lfu", "volatile-ttl", "noeviction"];

/// The built-in policy called `name`, if there is one.
pub fn builtin_policy(name: &str) -> Option<Arc<dyn EvictionPolicy>> {
    match name {
        "lru" => Some(Arc::new(Lru)),
        "lfu" => Some(Arc::new(Lfu)),
        "volatile-ttl" => Some(Arc::new(VolatileTtl)),
        "noeviction" => Some(Arc::new(NoEviction)),
        _ => None,
    }
}

/// Approximate LRU (the default): least recently accessed first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lru;

/// Approximate LFU: lowest frequency counter first, least recently accessed among equals.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lfu;

/// Only keys with a TTL, soonest expiry first: data without a TTL is never evicted.
#[derive(Clone, Copy, Debug, Default)]
pub struct VolatileTtl;

/// Never evicts: writes over a limit fail instead.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEviction;

/// The `want` indices with the smallest `key`, smallest first.
fn smallest<K: Ord>(
    candidates: &[Candidate],
    want: usize,
    keep: impl Fn(&Candidate) -> bool,
    key: impl Fn(&Candidate) -> K,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| keep(&candidates[i]))
        .collect();
    order.sort_by_key(|&i| key(&candidates[i]));
    order.truncate(want);
    order
}

impl EvictionPolicy for Lru {
    fn name(&self) -> &str {
        "lru"
    }

    fn rank(&self, candidates: &[Candidate], want: usize) -> Result<Vec<usize>, EvictionError> {
        Ok(smallest(candidates, want, |_| true, |c| c.last_access_ms))
    }
}

impl EvictionPolicy for Lfu {
    fn name(&self) -> &str {
        "lfu"
    }

    fn rank(&self, candidates: &[Candidate], want: usize) -> Result<Vec<usize>, EvictionError> {
        Ok(smallest(
            candidates,
            want,
            |_| true,
            |c| (c.hits, c.last_access_ms),
        ))
    }
}

impl EvictionPolicy for VolatileTtl {
    fn name(&self) -> &str {
        "volatile-ttl"
    }

    fn rank(&self, candidates: &[Candidate], want: usize) -> Result<Vec<usize>, EvictionError> {
        let ranked = smallest(
            candidates,
            want,
            |c| c.expires_at_ms != 0,
            |c| c.expires_at_ms,
        );
        if ranked.is_empty() && want > 0 {
            return Err(EvictionError::NoCandidates);
        }
        Ok(ranked)
    }

    fn volatile_only(&self) -> bool {
        true
    }
}

impl EvictionPolicy for NoEviction {
    fn name(&self) -> &str {
        "noeviction"
    }

    fn rank(&self, _: &[Candidate], _: usize) -> Result<Vec<usize>, EvictionError> {
        Err(EvictionError::NoEviction)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn candidate(last_access_ms: u64, hits: u32, expires_at_ms: u64) -> Candidate {
        Candidate {
            key: Bytes::new(),
            size: 1,
            last_access_ms,
            hits,
            expires_at_ms,
            version: 1,
        }
    }

    fn rank(
        name: &str,
        candidates: &[Candidate],
        want: usize,
    ) -> Result<Vec<usize>, EvictionError> {
        builtin_policy(name)
            .expect("built in")
            .rank(candidates, want)
    }

    #[test]
    fn every_listed_name_resolves_to_itself() {
        for name in BUILTIN_POLICIES {
            assert_eq!(builtin_policy(name).expect("built in").name(), *name);
        }
        assert!(builtin_policy("LRU").is_none());
        assert!(builtin_policy("").is_none());
    }

    #[test]
    fn lru_ranks_oldest_access_first() {
        let c = [
            candidate(30, 0, 0),
            candidate(10, 9, 0),
            candidate(20, 1, 0),
        ];
        assert_eq!(rank("lru", &c, 10).unwrap(), vec![1, 2, 0]);
        assert_eq!(rank("lru", &c, 2).unwrap(), vec![1, 2]);
        assert_eq!(rank("lru", &c, 0).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn lfu_ranks_fewest_hits_first_then_oldest() {
        let c = [
            candidate(10, 7, 0),
            candidate(30, 2, 0),
            candidate(20, 2, 0),
        ];
        assert_eq!(rank("lfu", &c, 10).unwrap(), vec![2, 1, 0]);
    }

    #[test]
    fn volatile_ttl_ranks_soonest_expiry_first_among_keys_with_ttl() {
        let c = [candidate(0, 0, 50), candidate(0, 0, 0), candidate(0, 0, 20)];
        assert_eq!(rank("volatile-ttl", &c, 10).unwrap(), vec![2, 0]);
        let none = [candidate(0, 0, 0)];
        assert!(matches!(
            rank("volatile-ttl", &none, 1),
            Err(EvictionError::NoCandidates)
        ));
        assert!(builtin_policy("volatile-ttl").unwrap().volatile_only());
        assert!(!builtin_policy("lru").unwrap().volatile_only());
    }

    #[test]
    fn noeviction_always_refuses() {
        assert!(matches!(
            rank("noeviction", &[candidate(0, 0, 0)], 1),
            Err(EvictionError::NoEviction)
        ));
        assert!(matches!(
            rank("noeviction", &[], 1),
            Err(EvictionError::NoEviction)
        ));
    }
}
