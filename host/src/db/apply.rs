//! Applying a logged command to the in-memory engine. The one function used both for live
//! writes (after they commit) and for replay at start-up, so the two cannot disagree.

use crate::storage::Engine;
use crate::wal::{Command, Mutation};

/// Apply `command`, logged at `lsn`, to `engine`. Every effect is an absolute overwrite or
/// delete, so applying a record twice (snapshot + replay overlap) is harmless.
///
/// The command is consumed: its keys and values move into the engine rather than being
/// cloned, which for `Bytes` would add a shared header to every stored entry for good.
pub fn apply(engine: &Engine, lsn: u64, command: Command) {
    let apply_one = |mutation: Mutation| match mutation {
        Mutation::Set {
            key,
            value,
            expires_at_ms,
        } => {
            engine.set(key, value, expires_at_ms, lsn);
        }
        Mutation::Delete { key } => {
            engine.delete(&key);
        }
    };
    match command {
        Command::Set {
            key,
            value,
            expires_at_ms,
        } => apply_one(Mutation::Set {
            key,
            value,
            expires_at_ms,
        }),
        Command::Delete { key } => apply_one(Mutation::Delete { key }),
        Command::Batch(mutations) => mutations.into_iter().for_each(apply_one),
        Command::Expire(keys) | Command::Evict(keys) => keys
            .into_iter()
            .for_each(|key| apply_one(Mutation::Delete { key })),
    }
}
