//! One shard's data: its map, its index of keys with a TTL and its memory tally, kept in sync
//! by the only methods that change them.

use std::hash::{Hash, Hasher};

use foldhash::fast::RandomState;
use indexmap::{Equivalent, IndexSet, set::MutableValues};
use parking_lot::RwLock;

use super::entry::{ENTRY_OVERHEAD, Entry};
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
/// The map is an `IndexSet` of entries that carry their own key, so that a uniformly random
/// entry is one `get_index` away: expiry and eviction sample keys instead of scanning. Removal
/// uses `swap_remove`, which keeps that O(1). Hashers are randomly seeded per map so that
/// clients cannot craft colliding keys. No `Debug`: it would dump every entry.
pub(super) struct ShardData {
    map: IndexSet<Entry, RandomState>,
    /// Keys of `map` whose entry has an expiry, so active expiry samples only those.
    ttl: IndexSet<Box<[u8]>, RandomState>,
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
            map: IndexSet::default(),
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

    /// Bytes of the keys and values stored: the memory tally without each entry's overhead.
    pub(super) fn payload_bytes(&self) -> usize {
        let overhead = (self.map.len() as u64).saturating_mul(ENTRY_OVERHEAD);
        usize::try_from(self.memory.saturating_sub(overhead)).unwrap_or(0)
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Where `key`'s entry is, if stored, found from the table alone: the first entry whose
    /// hash tag matches, which may be another key's (the caller compares keys, and looks up
    /// with [`ShardData::get`] if it is). `None` means `key` is not stored. Reads no entry, so
    /// that a batch can find all its slots before it waits for any entry to arrive.
    pub(super) fn slot_of(&self, key: &[u8]) -> Option<usize> {
        self.map.get_index_of(&TagMatch(key))
    }

    /// The entry in `slot`.
    pub(super) fn entry_at(&self, slot: usize) -> Option<&Entry> {
        self.map.get_index(slot)
    }

    /// Every stored entry, in map order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.map.iter()
    }

    /// Inserts or overwrites `key`, keeping the TTL index and the memory tally in sync.
    pub(super) fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
        version: u64,
        tick: u32,
    ) -> Replaced {
        let has_ttl = expires_at_ms != 0;
        let Some((_, stored)) = self.map.get_full_mut2(key) else {
            // A new key costs a second probe, into control bytes the miss just brought into
            // the cache; an overwrite, the common case under load, needs no new entry.
            let entry = Entry::new(key, value, expires_at_ms, version, tick);
            self.memory += entry.cost();
            self.map.insert(entry);
            if has_ttl {
                self.ttl.insert(key.into());
            }
            return Replaced::Nothing;
        };
        let had_ttl = stored.expires_at_ms != 0;
        let old_cost = stored.cost();
        if !stored.overwrite_in_place(value, expires_at_ms, version, tick) {
            let old =
                std::mem::replace(stored, Entry::new(key, value, expires_at_ms, version, tick));
            stored.inherit(&old);
        }
        let cost = stored.cost();
        if had_ttl && !has_ttl {
            self.ttl.swap_remove(key);
        } else if has_ttl && !had_ttl {
            self.ttl.insert(key.into());
        }
        self.memory = self.memory - old_cost + cost;
        Replaced::Entry { cost: old_cost }
    }

    /// Removes `key` whatever its expiry; returns the cost it had.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<u64> {
        let entry = self.map.swap_take(key)?;
        if entry.expires_at_ms != 0 {
            self.ttl.swap_remove(key);
        }
        let cost = entry.cost();
        self.memory -= cost;
        Some(cost)
    }

    /// Up to `n` distinct random entries.
    pub(super) fn sample(&self, n: usize) -> impl Iterator<Item = &Entry> {
        distinct_indices(self.map.len(), n)
            .into_iter()
            .filter_map(|i| self.map.get_index(i))
    }

    /// Up to `n` distinct random entries among those with an expiry.
    pub(super) fn sample_ttl(&self, n: usize) -> impl Iterator<Item = &Entry> {
        distinct_indices(self.ttl.len(), n)
            .into_iter()
            .filter_map(|i| self.map.get(&**self.ttl.get_index(i)?))
    }
}

/// A key that hashes as its entry does but equals every entry it is compared with, so that
/// a lookup stops at the first entry whose 7-bit hash tag matches without reading it.
struct TagMatch<'a>(&'a [u8]);

impl Hash for TagMatch<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `Entry` hashes its key.
        self.0.hash(state);
    }
}

impl Equivalent<Entry> for TagMatch<'_> {
    fn equivalent(&self, _: &Entry) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::entry_cost;
    use super::*;

    fn b(s: &str) -> &[u8] {
        s.as_bytes()
    }

    /// The invariants every other module relies on.
    fn check(data: &ShardData) {
        let with_ttl: Vec<&[u8]> = data
            .map
            .iter()
            .filter(|e| e.expires_at_ms != 0)
            .map(Entry::key)
            .collect();
        assert_eq!(data.ttl.len(), with_ttl.len());
        assert!(with_ttl.iter().all(|k| data.ttl.contains(*k)));
        let memory: u64 = data
            .map
            .iter()
            .map(|e| entry_cost(e.key().len(), e.value().len()))
            .sum();
        assert_eq!(data.memory, memory);
    }

    #[test]
    fn a_slot_found_by_hash_tag_holds_the_key_or_one_sharing_its_tag() {
        let mut data = ShardData::new();
        for i in 0..5_000u64 {
            data.set(format!("key:{i:012}").as_bytes(), b"v", 0, i, 0);
        }
        // A 7-bit tag is shared by about one entry in 128, so among 5,000 keys some slots
        // found for a stored key hold another key first, and some absent keys find a slot.
        let (mut stored_elsewhere, mut absent_with_slot) = (0, 0);
        for i in 0..5_000u64 {
            let key = format!("key:{i:012}");
            let slot = data
                .slot_of(key.as_bytes())
                .expect("a stored key has a slot");
            if data.entry_at(slot).expect("a slot holds an entry").key() != key.as_bytes() {
                stored_elsewhere += 1;
                assert!(data.get(key.as_bytes()).is_some());
            }
            let absent = format!("absent:{i:012}");
            if let Some(slot) = data.slot_of(absent.as_bytes()) {
                absent_with_slot += 1;
                assert_ne!(data.entry_at(slot).map(Entry::key), Some(absent.as_bytes()));
            }
        }
        assert!(
            stored_elsewhere > 0,
            "no stored key met another with its tag first"
        );
        assert!(
            absent_with_slot > 0,
            "no absent key shared a stored key's tag"
        );
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
            let key = [fastrand::u8(..32)];
            if fastrand::u8(..4) == 0 {
                data.remove(&key);
            } else {
                let ttl = if fastrand::bool() { i + 1 } else { 0 };
                let value = vec![0; fastrand::usize(..64)];
                data.set(&key, &value, ttl, i, 0);
            }
            check(&data);
        }
    }

    #[test]
    fn overwrite_replaces_the_value_in_place() {
        let mut data = ShardData::new();
        data.set(b("key"), b("1"), 0, 1, 0);
        data.set(b("other"), b("x"), 0, 2, 0);
        data.set(b("key"), b("22"), 0, 3, 0);
        let values: Vec<(&[u8], &[u8], u64)> = data
            .iter()
            .map(|e| (e.key(), e.value(), e.version))
            .collect();
        assert_eq!(values, [(b("key"), b("22"), 3), (b("other"), b("x"), 2)]);
        check(&data);
        // A value of the same length, first with an expiry, then without.
        let cost = entry_cost(3, 2);
        assert_eq!(
            data.set(b("key"), b("33"), 50, 4, 0),
            Replaced::Entry { cost }
        );
        check(&data);
        assert_eq!(data.ttl.len(), 1);
        let entry = data.get(b("key")).unwrap();
        assert_eq!(
            (entry.value(), entry.expires_at_ms, entry.version),
            (b("33"), 50, 4)
        );
        assert_eq!(
            data.set(b("key"), b("44"), 0, 5, 0),
            Replaced::Entry { cost }
        );
        check(&data);
        assert!(data.ttl.is_empty());
        assert_eq!(data.len(), 2);
    }

    #[test]
    fn samples_are_distinct_and_ttl_samples_have_ttl() {
        let mut data = ShardData::new();
        for i in 0..100u64 {
            data.set(&i.to_le_bytes(), b("v"), i % 2 * 1_000, i, 0);
        }
        let keys: Vec<&[u8]> = data.sample(10).map(Entry::key).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(data.sample(1_000).count(), 100);
        let ttl: Vec<&Entry> = data.sample_ttl(1_000).collect();
        assert_eq!(ttl.len(), 50);
        assert!(ttl.iter().all(|e| e.expires_at_ms != 0));
    }
}
