//! Eviction: keys with a TTL go first, soonest to expire first (they would vanish anyway);
//! when there are not enough of them, the least recently used of the rest follow.

#![warn(missing_docs)]

use wasmkv_guest::{EvictionInput, Victims, evict};

/// The `need` candidates that expire soonest, then the least recently used.
#[evict]
pub fn pick(input: &EvictionInput) -> Victims {
    let mut order: Vec<u32> = (0..input.candidates.len() as u32).collect();
    // Volatile keys (expires_at_ms != 0) sort before persistent ones, then by expiry, then by
    // last access; the index breaks ties so the order is deterministic.
    order.sort_by_key(|&i| {
        let c = &input.candidates[i as usize];
        (c.expires_at_ms == 0, c.expires_at_ms, c.last_access_ms, i)
    });
    order.truncate(input.need as usize);
    Victims { victims: order }
}

#[cfg(test)]
mod tests {
    use wasmkv_guest::testing::Plugin;
    use wasmkv_guest::{Candidate, EvictionInput};

    use super::pick;

    fn candidate(expires_at_ms: u64, last_access_ms: u64) -> Candidate {
        Candidate {
            key: b"k".to_vec(),
            size: 100,
            last_access_ms,
            hits: 3,
            expires_at_ms,
        }
    }

    fn victims(candidates: Vec<Candidate>, need: u32) -> Vec<u32> {
        let input = EvictionInput { candidates, need };
        Plugin::new().evict(pick, &input).unwrap().victims
    }

    #[test]
    fn soonest_expiry_first_then_least_recently_used() {
        let candidates = vec![
            candidate(0, 50),
            candidate(9_000, 99),
            candidate(0, 10),
            candidate(5_000, 99),
            candidate(0, 30),
        ];
        assert_eq!(victims(candidates.clone(), 2), vec![3, 1]);
        assert_eq!(victims(candidates.clone(), 4), vec![3, 1, 2, 4]);
        assert_eq!(victims(candidates, 9), vec![3, 1, 2, 4, 0]);
    }

    #[test]
    fn nothing_needed_or_nothing_offered() {
        assert!(victims(vec![candidate(1, 1)], 0).is_empty());
        assert!(victims(Vec::new(), 3).is_empty());
    }
}
