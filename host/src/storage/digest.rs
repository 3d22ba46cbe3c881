//! An order-independent fingerprint of the live dataset, to check that replicas agree.

use std::convert::Infallible;

use xxhash_rust::xxh3::Xxh3Default;

use super::engine::Engine;

/// Fingerprint of the live data, as returned by [`Engine::digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Wrapping sum of the entries' xxh3-128 hashes, little-endian.
    pub hash: [u8; 16],
    /// Number of live keys.
    pub keys: u64,
}

impl Engine {
    /// Digest of the live dataset at `now_ms` (expired entries excluded): the wrapping 128-bit
    /// sum of xxh3-128 over each entry's encoding `key_len:u64le key value_len:u64le value
    /// expires_at_ms:u64le`. A sum does not depend on the order entries are visited in, so two
    /// engines with the same live data agree whatever their insertion order or shard count.
    /// Versions are left out because replicas that loaded a snapshot may number writes
    /// differently from the primary while holding the same data. Length prefixes keep
    /// ("ab", "c") and ("a", "bc") apart.
    ///
    /// Hashing happens outside the shard locks (see [`Engine::for_each_chunk`]).
    pub fn digest(&self, now_ms: u64) -> Digest {
        let mut sum = 0u128;
        let mut keys = 0u64;
        let mut hasher = Xxh3Default::new();
        let Ok(()) = self.for_each_chunk(|chunk| {
            for entry in chunk {
                if entry.expires_at_ms != 0 && entry.expires_at_ms <= now_ms {
                    continue;
                }
                hasher.reset();
                hasher.update(&(entry.key.len() as u64).to_le_bytes());
                hasher.update(&entry.key);
                hasher.update(&(entry.value.len() as u64).to_le_bytes());
                hasher.update(&entry.value);
                hasher.update(&entry.expires_at_ms.to_le_bytes());
                sum = sum.wrapping_add(hasher.digest128());
                keys += 1;
            }
            Ok::<(), Infallible>(())
        });
        Digest {
            hash: sum.to_le_bytes(),
            keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use xxhash_rust::xxh3::xxh3_128;

    use super::*;
    use crate::storage::EngineOptions;

    fn engine(shards: usize) -> Engine {
        Engine::new(EngineOptions { shards })
    }

    fn key(i: u32) -> Bytes {
        Bytes::from(format!("key-{i}"))
    }

    #[test]
    fn one_entry_hashes_its_documented_encoding() {
        let e = engine(4);
        e.set(
            &Bytes::from_static(b"ab"),
            &Bytes::from_static(b"xyz"),
            9,
            1,
        );
        let mut encoding = Vec::new();
        encoding.extend_from_slice(&2u64.to_le_bytes());
        encoding.extend_from_slice(b"ab");
        encoding.extend_from_slice(&3u64.to_le_bytes());
        encoding.extend_from_slice(b"xyz");
        encoding.extend_from_slice(&9u64.to_le_bytes());
        let want = Digest {
            hash: xxh3_128(&encoding).to_le_bytes(),
            keys: 1,
        };
        assert_eq!(e.digest(0), want);
        assert_eq!(
            engine(1).digest(0),
            Digest {
                hash: [0; 16],
                keys: 0
            }
        );
    }

    #[test]
    fn same_data_same_digest_whatever_order_shards_and_versions() {
        let (a, b) = (engine(1), engine(64));
        for i in 0..1_000 {
            a.set(
                &key(i),
                &Bytes::from(vec![i as u8; i as usize % 50]),
                u64::from(i % 3) * 10_000,
                1,
            );
        }
        for i in (0..1_000).rev() {
            b.set(
                &key(i),
                &Bytes::from(vec![i as u8; i as usize % 50]),
                u64::from(i % 3) * 10_000,
                99,
            );
        }
        // Writes that were overwritten later leave no trace.
        b.set(&key(5), &Bytes::from_static(b"old"), 0, 100);
        b.set(&key(5), &Bytes::from(vec![5u8; 5]), 20_000, 101);
        assert_eq!(a.digest(0), b.digest(0));
        assert_eq!(a.digest(0).keys, 1_000);
    }

    #[test]
    fn one_different_value_changes_the_digest() {
        let (a, b) = (engine(8), engine(8));
        for i in 0..100 {
            a.set(&key(i), &Bytes::from_static(b"v"), 0, 1);
            b.set(&key(i), &Bytes::from_static(b"v"), 0, 1);
        }
        b.set(&key(42), &Bytes::from_static(b"w"), 0, 2);
        assert_ne!(a.digest(0).hash, b.digest(0).hash);
        b.set(&key(42), &Bytes::from_static(b"v"), 7_000, 3);
        assert_ne!(
            a.digest(0).hash,
            b.digest(0).hash,
            "expiry is part of the data"
        );
    }

    #[test]
    fn expired_entries_are_excluded() {
        let (a, b) = (engine(8), engine(8));
        a.set(&key(1), &Bytes::from_static(b"v"), 0, 1);
        b.set(&key(1), &Bytes::from_static(b"v"), 0, 1);
        b.set(&key(2), &Bytes::from_static(b"gone"), 500, 2);
        assert_ne!(a.digest(499), b.digest(499));
        assert_eq!(a.digest(500), b.digest(500));
        assert_eq!(b.digest(500).keys, 1);
        assert_eq!(b.len(), 2);
    }
}
