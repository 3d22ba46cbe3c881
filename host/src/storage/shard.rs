//! One shard's data: its map, its index of keys with a TTL and its memory tally, kept in sync
//! by the only methods that change them.

use bytes::Bytes;
use foldhash::fast::RandomState;
use indexmap::{IndexMap, IndexSet, map::Entry as Slot};
use parking_lot::RwLock;

use super::entry::{Entry, entry_cost};
use super::sample::distinct_indices;

/// A shard behind its lock, aligned to two cache lines so that the lock word of one shard never
/// shares a line with its neighbour's (adjacent-line prefetching pulls lines in pairs).
#[repr(align(128))]
pub(super) struct Shard(pub(super) RwLock<ShardData>);

impl Shard {
    pub(super) fn new() -> Self {
        Self(RwLock::new(ShardData::new()))
    }
}

/// The contents of a shard.
///
/// Maps are `IndexMap`s so that a uniformly random entry is one `get_index` away: expiry and
/// eviction sample keys instead of scanning. Removal uses `swap_remove`, which keeps that O(1).
/// Hashers are randomly seeded per map so that clients cannot craft colliding keys.
/// No `Debug`: it would dump every entry.
pub(super) struct ShardData {
    map: IndexMap<Bytes, Entry, RandomState>,
    /// Keys of `map` whose entry has an expiry, so active expiry samples only those.
    ttl: IndexSet<Bytes, RandomState>,
    /// Sum of `entry_cost` over `map`, so a clear can give back exactly what this shard added
    /// to the engine's counters.
    memory: u64,
}

/// What a [`ShardData::set`] replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replaced {
    /// The key was not stored.
    Nothing,
    /// The key was stored with an entry of this cost.
    Entry { cost: u64 },
}

impl ShardData {
    pub(super) fn new() -> Self {
        Self {
            map: IndexMap::default(),
            ttl: IndexSet::default(),
            memory: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn memory(&self) -> u64 {
        self.memory
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    pub(super) fn get_key_value(&self, key: &[u8]) -> Option<(&Bytes, &Entry)> {
        self.map.get_key_value(key)
    }

    /// Every stored entry, in map order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.map.iter()
    }

    /// Inserts or overwrites `key`, keeping the TTL index and the memory tally in sync.
    pub(super) fn set(
        &mut self,
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
        version: u64,
        tick: u32,
    ) -> Replaced {
        let cost = entry_cost(key.len(), value.len());
        let has_ttl = expires_at_ms != 0;
        let replaced = match self.map.entry(key) {
            // The stored key is kept: the caller's copy may pin a larger buffer.
            Slot::Occupied(mut slot) => {
                let old = slot.get();
                let replaced = Replaced::Entry {
                    cost: entry_cost(slot.key().len(), old.value.len()),
                };
                let had_ttl = old.expires_at_ms != 0;
                slot.get_mut()
                    .overwrite(value, expires_at_ms, version, tick);
                if had_ttl && !has_ttl {
                    self.ttl.swap_remove(slot.key());
                } else if has_ttl && !had_ttl {
                    self.ttl.insert(slot.key().clone());
                }
                replaced
            }
            Slot::Vacant(slot) => {
                if has_ttl {
                    self.ttl.insert(slot.key().clone());
                }
                slot.insert(Entry::new(value, expires_at_ms, version, tick));
                Replaced::Nothing
            }
        };
        if let Replaced::Entry { cost: old } = replaced {
            self.memory -= old;
        }
        self.memory += cost;
        replaced
    }

    /// Removes `key` whatever its expiry; returns the cost it had.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<u64> {
        let (key, entry) = self.map.swap_remove_entry(key)?;
        if entry.expires_at_ms != 0 {
            self.ttl.swap_remove(&key);
        }
        let cost = entry_cost(key.len(), entry.value.len());
        self.memory -= cost;
        Some(cost)
    }

    /// Up to `n` distinct random entries.
    pub(super) fn sample(&self, n: usize) -> impl Iterator<Item = (&Bytes, &Entry)> {
        distinct_indices(self.map.len(), n)
            .into_iter()
            .filter_map(|i| self.map.get_index(i))
    }

    /// Up to `n` distinct random entries among those with an expiry.
    pub(super) fn sample_ttl(&self, n: usize) -> impl Iterator<Item = (&Bytes, &Entry)> {
        distinct_indices(self.ttl.len(), n)
            .into_iter()
            .filter_map(|i| self.map.get_key_value(self.ttl.get_index(i)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// The invariants every other module relies on.
    fn check(data: &ShardData) {
        let with_ttl: Vec<&Bytes> = data
            .map
            .iter()
            .filter(|(_, e)| e.expires_at_ms != 0)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(data.ttl.len(), with_ttl.len());
        assert!(with_ttl.iter().all(|k| data.ttl.contains(*k)));
        let memory: u64 = data
            .map
            .iter()
            .map(|(k, e)| entry_cost(k.len(), e.value.len()))
            .sum();
        assert_eq!(data.memory, memory);
    }

    #[test]
    fn ttl_index_follows_sets_overwrites_and_removes() {
        let mut data = ShardData::new();
        assert_eq!(data.set(b("a"), b("1"), 100, 1, 0), Replaced::Nothing);
        assert_eq!(data.set(b("b"), b("22"), 0, 2, 0), Replaced::Nothing);
        check(&data);
        assert_eq!(data.ttl.len(), 1);
        let cost = entry_cost(1, 1);
        assert_eq!(
            data.set(b("a"), b("333"), 0, 3, 0),
            Replaced::Entry { cost }
        );
        check(&data);
        assert!(data.ttl.is_empty());
        data.set(b("b"), b(""), 50, 4, 0);
        check(&data);
        assert_eq!(data.ttl.len(), 1);
        assert_eq!(data.remove(b"b"), Some(entry_cost(1, 0)));
        assert_eq!(data.remove(b"b"), None);
        check(&data);
        assert!(data.ttl.is_empty());
        assert_eq!(data.len(), 1);
    }

    #[test]
    fn invariants_hold_after_random_operations() {
        let mut data = ShardData::new();
        for i in 0..5_000u64 {
            let key = Bytes::from(vec![fastrand::u8(..32)]);
            if fastrand::u8(..4) == 0 {
                data.remove(&key);
            } else {
                let ttl = if fastrand::bool() { i + 1 } else { 0 };
                let value = Bytes::from(vec![0; fastrand::usize(..64)]);
                data.set(key, value, ttl, i, 0);
            }
            check(&data);
        }
    }

    #[test]
    fn overwrite_keeps_the_stored_key() {
        let mut data = ShardData::new();
        let first = b("key");
        data.set(first.clone(), b("1"), 0, 1, 0);
        data.set(b("key"), b("2"), 0, 2, 0);
        let (stored, entry) = data.iter().next().expect("stored");
        assert_eq!(stored.as_ptr(), first.as_ptr());
        assert_eq!(entry.value, b("2"));
    }

    #[test]
    fn samples_are_distinct_and_ttl_samples_have_ttl() {
        let mut data = ShardData::new();
        for i in 0..100u64 {
            data.set(
                Bytes::from(i.to_le_bytes().to_vec()),
                b("v"),
                i % 2 * 1_000,
                i,
                0,
            );
        }
        let keys: Vec<&Bytes> = data.sample(10).map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(data.sample(1_000).count(), 100);
        let ttl: Vec<(&Bytes, &Entry)> = data.sample_ttl(1_000).collect();
        assert_eq!(ttl.len(), 50);
        assert!(ttl.iter().all(|(_, e)| e.expires_at_ms != 0));
    }
}
