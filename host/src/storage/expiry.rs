//! Finding expired keys by sampling, for the primary's active expiry.
//!
//! Expired entries are hidden from reads as soon as they expire, but they only leave memory when
//! the primary logs a delete for them. The primary's expiry loop calls
//! [`Engine::sample_expired`] shard by shard and, like Redis, repeats on a shard while a large
//! part of its sample was expired.

use bytes::Bytes;

use super::engine::Engine;

/// Result of [`Engine::sample_expired`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpirySample {
    /// How many keys with a TTL were looked at: the denominator of the expired ratio.
    pub sampled: usize,
    /// The sampled keys that are expired, with their versions so the caller's delete can be
    /// skipped if the key is rewritten in the meantime.
    pub expired: Vec<(Bytes, u64)>,
}

impl Engine {
    /// Samples up to `n` distinct random keys that have a TTL from shard `shard` and returns how
    /// many were sampled and those expired at `now_ms`. Only keys with a TTL are sampled (each
    /// shard indexes them), so keys without one never dilute the sample. A shard index out of
    /// range samples nothing. Takes the shard's read lock only.
    pub fn sample_expired(&self, shard: usize, n: usize, now_ms: u64) -> ExpirySample {
        let Some(shard) = self.shards().get(shard) else {
            return ExpirySample::default();
        };
        let data = shard.0.read();
        let mut sample = ExpirySample::default();
        for entry in data.sample_ttl(n) {
            sample.sampled += 1;
            if entry.is_expired(now_ms) {
                let key = Bytes::copy_from_slice(entry.key());
                sample.expired.push((key, entry.version));
            }
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::EngineOptions;

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("key-{i}"))
    }

    /// Samples every shard until nothing is left to find, as the expiry loop would.
    fn all_expired(engine: &Engine, now_ms: u64) -> Vec<(Bytes, u64)> {
        let mut found = Vec::new();
        for shard in 0..engine.shard_count() {
            let sample = engine.sample_expired(shard, usize::MAX, now_ms);
            found.extend(sample.expired);
        }
        found.sort();
        found
    }

    #[test]
    fn finds_expired_keys_and_only_keys_with_ttl() {
        let engine = Engine::new(EngineOptions { shards: 4 });
        for i in 0..300 {
            // A third never expires, a third expires at 1_000, a third at 5_000.
            let ttl = [0, 1_000, 5_000][(i % 3) as usize];
            engine.set(&key(i), &Bytes::from_static(b"v"), ttl, i);
        }
        let want: Vec<(Bytes, u64)> = {
            let mut want: Vec<_> = (0..300)
                .filter(|i| i % 3 == 1)
                .map(|i| (key(i), i))
                .collect();
            want.sort();
            want
        };
        assert_eq!(all_expired(&engine, 999), vec![]);
        assert_eq!(all_expired(&engine, 1_000), want);
        let sampled: usize = (0..4)
            .map(|s| engine.sample_expired(s, usize::MAX, 0).sampled)
            .sum();
        assert_eq!(sampled, 200, "keys without a TTL are never sampled");
        assert_eq!(all_expired(&engine, 5_000).len(), 200);
    }

    #[test]
    fn samples_at_most_n_distinct_keys() {
        let engine = Engine::new(EngineOptions { shards: 1 });
        for i in 0..100 {
            engine.set(&key(i), &Bytes::new(), 1, i);
        }
        let mut sample = engine.sample_expired(0, 20, 10);
        assert_eq!(sample.sampled, 20);
        sample.expired.sort();
        sample.expired.dedup();
        assert_eq!(sample.expired.len(), 20);
        assert_eq!(engine.sample_expired(0, 0, 10), ExpirySample::default());
        assert_eq!(engine.sample_expired(1, 20, 10), ExpirySample::default());
    }

    #[test]
    fn ttl_index_follows_overwrites_and_deletes() {
        let engine = Engine::new(EngineOptions { shards: 2 });
        engine.set(&key(1), &Bytes::new(), 100, 1);
        engine.set(&key(2), &Bytes::new(), 100, 2);
        engine.set(&key(3), &Bytes::new(), 0, 3);
        // Overwrite without a TTL: no longer sampled.
        engine.set(&key(1), &Bytes::new(), 0, 4);
        // Deleted: gone from the index too.
        engine.delete(&key(2));
        // Overwrite adding a TTL: now sampled.
        engine.set(&key(3), &Bytes::new(), 50, 5);
        assert_eq!(all_expired(&engine, 1_000), vec![(key(3), 5)]);
        engine.clear();
        assert_eq!(all_expired(&engine, 1_000), vec![]);
    }
}
