//! Drawing distinct random positions, to sample a shard's keys.

use foldhash::fast::FixedState;
use indexmap::IndexSet;

/// Up to `n` distinct positions in `0..len`, uniformly at random.
///
/// Distinct so that a sample never reports the same key twice (the expiry loop would log the
/// same delete twice). Robert Floyd's algorithm costs O(n) whatever `len` is, where a shuffle
/// would cost O(len).
pub(super) fn distinct_indices(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    let mut picked = IndexSet::with_capacity_and_hasher(n, FixedState::default());
    for j in len - n..len {
        let t = fastrand::usize(..=j);
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    picked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_populations_are_taken_whole() {
        assert_eq!(distinct_indices(3, 5), vec![0, 1, 2]);
        assert_eq!(distinct_indices(0, 5), Vec::<usize>::new());
        assert_eq!(distinct_indices(10, 0), Vec::<usize>::new());
    }

    #[test]
    fn picks_are_distinct_in_range_and_cover_everything() {
        let mut seen = [0u32; 20];
        for _ in 0..2_000 {
            let mut picks = distinct_indices(20, 5);
            assert_eq!(picks.len(), 5);
            for &p in &picks {
                seen[p] += 1;
            }
            picks.sort_unstable();
            picks.dedup();
            assert_eq!(picks.len(), 5);
        }
        // Each position expects 500 picks; a biased sampler would starve some.
        assert!(seen.iter().all(|&c| (350..=650).contains(&c)), "{seen:?}");
    }
}
