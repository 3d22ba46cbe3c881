//! Ordering writes between "logged" and "applied".
//!
//! A write becomes visible only once the WAL has made it as safe as the sync policy promises,
//! so a failed fsync never leaves readers holding a value the disk does not have. Between the
//! append (which fixes the write's LSN) and the apply, the write is *pending*. Decisions taken
//! at append time — compare-and-set, limits, eviction — must still see pending writes, so the
//! sequencer keeps, under one lock with the append:
//! - `pending`: the pending records in LSN order, applied strictly in that order;
//! - `overlay`: for each key with a pending write, its state after the newest one;
//! - the projected change in entry count and memory that the pending records will make.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use smallvec::SmallVec;

use super::apply::{self, WARM_WINDOW};
use crate::storage::{Engine, EvictionError, Evictor, entry_cost};
use crate::wal::{Command, MutationRef};

/// A key's state as writers must see it: the newest pending write, else the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Absent,
    Present {
        version: u64,
        expires_at_ms: u64,
        cost: u64,
    },
}

impl KeyState {
    /// The version compare-and-set compares with: 0 for a missing (or expired) key.
    pub fn version(self, now_ms: u64) -> u64 {
        match self {
            KeyState::Present {
                version,
                expires_at_ms,
                ..
            } if expires_at_ms == 0 || expires_at_ms > now_ms => version,
            _ => 0,
        }
    }

    fn cost(self) -> u64 {
        match self {
            KeyState::Present { cost, .. } => cost,
            KeyState::Absent => 0,
        }
    }
}

/// The effect a command will have once applied, worked out before it is appended.
#[derive(Debug, Default)]
pub struct Plan {
    pub entries_delta: i64,
    pub memory_delta: i64,
    /// Final state of each touched key; the version is filled in with the LSN on `record`.
    /// Inline for one key, the common single set or delete, which then allocates nothing here.
    states: SmallVec<[(Bytes, KeyState); 1]>,
}

struct PendingRecord {
    lsn: u64,
    command: Command,
    entries_delta: i64,
    memory_delta: i64,
}

/// The store's limits (`max_entries`, `max_memory`; 0 = none).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub max_entries: u64,
    pub max_memory: u64,
}

impl Limits {
    fn allow(&self, entries: i64, memory: i64) -> bool {
        (self.max_entries == 0 || entries <= self.max_entries as i64)
            && (self.max_memory == 0 || memory <= self.max_memory as i64)
    }
}

pub struct Sequencer {
    overlay: HashMap<Bytes, (u64, KeyState), foldhash::fast::RandomState>,
    pending: VecDeque<PendingRecord>,
    entries_delta: i64,
    memory_delta: i64,
    evictor: Evictor,
    limits: Limits,
}

impl Sequencer {
    pub fn evictor_mut(&mut self) -> &mut Evictor {
        &mut self.evictor
    }

    pub fn new(evictor: Evictor, limits: Limits) -> Self {
        Sequencer {
            overlay: HashMap::default(),
            pending: VecDeque::new(),
            entries_delta: 0,
            memory_delta: 0,
            evictor,
            limits,
        }
    }

    pub fn state(&self, engine: &Engine, key: &[u8], now_ms: u64) -> KeyState {
        match self.overlay.get(key) {
            Some(&(_, state)) => state,
            None => match engine.peek(key, now_ms) {
                Some(peek) => KeyState::Present {
                    version: peek.version,
                    expires_at_ms: peek.expires_at_ms,
                    cost: peek.cost,
                },
                None => KeyState::Absent,
            },
        }
    }

    /// Whether `key` has a write in flight (such keys are never chosen for expiry or eviction:
    /// the pending write decides their fate).
    pub fn is_pending(&self, key: &[u8]) -> bool {
        self.overlay.contains_key(key)
    }

    /// Ask the eviction policy for up to `need` victims, never a key with a pending write nor
    /// one that `plan` (the write being made room for) touches: evicting those would undo the
    /// accounting the plan was made with.
    pub fn pick_victims(
        &mut self,
        engine: &Engine,
        need: usize,
        plan: &Plan,
    ) -> Result<Vec<(Bytes, u64)>, EvictionError> {
        let overlay = &self.overlay;
        self.evictor.pick(engine, need, |key| {
            overlay.contains_key(key) || plan.states.iter().any(|(k, _)| k == key)
        })
    }

    /// Entries and memory the engine will hold once every pending record is applied.
    pub fn projected(&self, engine: &Engine) -> (u64, u64) {
        let entries = engine.len() as i64 + self.entries_delta;
        let memory = engine.memory() as i64 + self.memory_delta;
        (entries.max(0) as u64, memory.max(0) as u64)
    }

    /// Work out `command`'s effect. For a command of sets, the change in entries and memory
    /// is first bounded from above (every set adds a new key); only when that bound could
    /// take the store past a limit is it made exact, from each key's state before the write:
    /// a lookup in the engine per mutation, which was the largest single item of a batched
    /// write's profile. Far from the limits (or without any) an overestimate changes no
    /// decision, and it lasts only while the write is pending. Deletes are always exact:
    /// eviction counts on what they free.
    pub fn plan(&self, engine: &Engine, command: &Command, now_ms: u64) -> Plan {
        let mut plan = Plan::default();
        plan.states.reserve_exact(command.mutation_count());
        let mut deletes = false;
        command.for_each_mutation(|mutation| {
            let (key, after) = match mutation {
                MutationRef::Set {
                    key,
                    value,
                    expires_at_ms,
                } => {
                    let cost = entry_cost(key.len(), value.len());
                    plan.entries_delta += 1;
                    plan.memory_delta += cost as i64;
                    let state = KeyState::Present {
                        version: 0,
                        expires_at_ms,
                        cost,
                    };
                    (key, state)
                }
                MutationRef::Delete { key } => {
                    deletes = true;
                    (key, KeyState::Absent)
                }
            };
            // A clone: keys decoded from a request share its body (`api::shared_bytes`), so
            // this is a reference count, and the body is let go once the write is applied.
            plan.states.push((key.clone(), after));
        });
        let (entries, memory) = self.projected(engine);
        if !deletes
            && self.limits.allow(
                entries as i64 + plan.entries_delta,
                memory as i64 + plan.memory_delta,
            )
        {
            return plan;
        }
        plan.entries_delta = 0;
        plan.memory_delta = 0;
        for (i, (key, after)) in plan.states.iter().enumerate() {
            let before = plan.states[..i]
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|&(_, s)| s)
                .unwrap_or_else(|| self.state(engine, key, now_ms));
            plan.entries_delta +=
                i64::from(*after != KeyState::Absent) - i64::from(before != KeyState::Absent);
            plan.memory_delta += after.cost() as i64 - before.cost() as i64;
        }
        plan
    }

    /// Remember an appended command until it is applied.
    pub fn record(&mut self, lsn: u64, command: Command, plan: Plan) {
        for (key, mut state) in plan.states {
            if let KeyState::Present { version, .. } = &mut state {
                *version = lsn;
            }
            self.overlay.insert(key, (lsn, state));
        }
        self.entries_delta += plan.entries_delta;
        self.memory_delta += plan.memory_delta;
        self.pending.push_back(PendingRecord {
            lsn,
            command,
            entries_delta: plan.entries_delta,
            memory_delta: plan.memory_delta,
        });
    }

    /// Apply, in LSN order, every pending record at or below `committed_lsn`. Returns the LSN
    /// of the last one applied, if any.
    ///
    /// The records go in windows of at most `WARM_WINDOW` keys (or one larger record), each
    /// warmed in one pass (`apply::warm`) before it is applied: a group commit makes a whole
    /// event-loop turn's writes committed at once, and applied one after another each would
    /// wait for its key's entry to come from memory in turn.
    pub fn apply_through(&mut self, engine: &Engine, committed_lsn: u64) -> Option<u64> {
        let mut last = None;
        loop {
            let window = self.next_window(committed_lsn);
            if window == 0 {
                return last;
            }
            apply::warm(engine, self.pending.range(..window).map(|r| &r.command));
            for record in self.pending.drain(..window) {
                self.entries_delta -= record.entries_delta;
                self.memory_delta -= record.memory_delta;
                record.command.for_each_mutation(|mutation| {
                    let key = mutation.key();
                    if self
                        .overlay
                        .get(key)
                        .is_some_and(|&(lsn, _)| lsn == record.lsn)
                    {
                        self.overlay.remove(key);
                    }
                });
                apply::apply(engine, record.lsn, &record.command);
                last = Some(record.lsn);
            }
        }
    }

    /// How many of the first pending records to apply together: those at or below
    /// `committed_lsn`, as long as they hold at most `WARM_WINDOW` keys in all (but at least
    /// one record, whatever its size).
    fn next_window(&self, committed_lsn: u64) -> usize {
        let (mut records, mut keys) = (0, 0);
        self.pending
            .iter()
            .take_while(|r| r.lsn <= committed_lsn)
            .take_while(|r| {
                keys += r.command.mutation_count();
                records += 1;
                records == 1 || keys <= WARM_WINDOW
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{EngineOptions, builtin_policy};
    use crate::wal::Mutation;

    fn set(key: String, value: &'static str) -> Command {
        Command::Set {
            key: key.into(),
            value: Bytes::from_static(value.as_bytes()),
            expires_at_ms: 0,
        }
    }

    /// Log `command` as the next record, as `Db` does: plan, then record.
    fn log(seq: &mut Sequencer, engine: &Engine, lsn: &mut u64, command: Command) {
        *lsn += 1;
        let plan = seq.plan(engine, &command, 0);
        seq.record(*lsn, command, plan);
    }

    #[test]
    fn committed_records_are_applied_in_windows_of_keys_and_in_lsn_order() {
        let engine = Engine::new(EngineOptions::default());
        let lru = builtin_policy("lru").expect("built in");
        let mut seq = Sequencer::new(Evictor::new(lru, 5), Limits::default());
        let mut lsn = 0;
        // LSNs 1-70: single sets; 71: a batch larger than a window; 72-81: the first ten
        // keys set again.
        for i in 0..70 {
            log(&mut seq, &engine, &mut lsn, set(format!("k{i}"), "first"));
        }
        let batch = (0..100)
            .map(|i| Mutation::Set {
                key: format!("b{i}").into(),
                value: Bytes::from_static(b"batch"),
                expires_at_ms: 0,
            })
            .collect();
        log(&mut seq, &engine, &mut lsn, Command::Batch(batch));
        for i in 0..10 {
            log(&mut seq, &engine, &mut lsn, set(format!("k{i}"), "second"));
        }

        assert_eq!(seq.next_window(0), 0, "nothing is committed");
        assert_eq!(
            seq.next_window(10),
            10,
            "a window stops at the committed LSN"
        );
        assert_eq!(
            seq.next_window(81),
            WARM_WINDOW,
            "a window holds WARM_WINDOW keys"
        );
        assert_eq!(seq.apply_through(&engine, 66), Some(66));
        assert_eq!(engine.len(), 66);
        // Four single sets are left before the batch, which would take the window past its
        // keys; the batch then goes alone, however large.
        assert_eq!(seq.next_window(81), 4);
        assert_eq!(seq.apply_through(&engine, 70), Some(70));
        assert_eq!(seq.next_window(81), 1);
        assert_eq!(seq.apply_through(&engine, 81), Some(81));
        assert_eq!(
            seq.apply_through(&engine, 81),
            None,
            "everything was applied"
        );

        assert_eq!(engine.len(), 170);
        for i in 0..70u64 {
            let item = engine.get(format!("k{i}").as_bytes(), 0).expect("applied");
            let (value, version) = if i < 10 {
                ("second", 72 + i)
            } else {
                ("first", i + 1)
            };
            assert_eq!((&item.value[..], item.version), (value.as_bytes(), version));
        }
        assert!(engine.get(b"b99", 0).is_some_and(|item| item.version == 71));
        assert!(!seq.is_pending(b"k0") && !seq.is_pending(b"b0"));
        assert_eq!(seq.projected(&engine), (engine.len(), engine.memory()));
    }
}
