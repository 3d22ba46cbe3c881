//! Applying a logged command to the in-memory engine. The one function used both for live
//! writes (after they commit) and for replay at start-up, so the two cannot disagree.

use smallvec::SmallVec;

use crate::storage::Engine;
use crate::wal::{Command, MutationRef};

/// Apply `command`, logged at `lsn`, to `engine`. Every effect is an absolute overwrite or
/// delete, so applying a record twice (snapshot + replay overlap) is harmless. The engine
/// copies keys and values into its own allocations, so the command is only borrowed.
pub fn apply(engine: &Engine, lsn: u64, command: &Command) {
    if let Command::Batch(mutations) = command {
        // One key after another, each write would wait for its key's entry to come from
        // memory; warmed together, those waits overlap.
        let keys: SmallVec<[&[u8]; 32]> = mutations.iter().map(|m| &m.key()[..]).collect();
        engine.warm(&keys);
    }
    command.for_each_mutation(|mutation| match mutation {
        MutationRef::Set {
            key,
            value,
            expires_at_ms,
        } => {
            engine.set(key, value, expires_at_ms, lsn);
        }
        MutationRef::Delete { key } => {
            engine.delete(key);
        }
    });
}
