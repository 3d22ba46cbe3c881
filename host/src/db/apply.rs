//! Applying a logged command to the in-memory engine. The one function used both for live
//! writes (after they commit) and for replay at start-up, so the two cannot disagree.

use crate::storage::Engine;
use crate::wal::{Command, Mutation};

/// Apply `command`, logged at `lsn`, to `engine`. Every effect is an absolute overwrite or
/// delete, so applying a record twice (snapshot + replay overlap) is harmless.
pub fn apply(engine: &Engine, lsn: u64, command: &Command) {
    match command {
        Command::Set {
            key,
            value,
            expires_at_ms,
        } => {
            engine.set(key.clone(), value.clone(), *expires_at_ms, lsn);
        }
        Command::Delete { key } => {
            engine.delete(key);
        }
        Command::Batch(mutations) => {
            for mutation in mutations {
                match mutation {
                    Mutation::Set {
                        key,
                        value,
                        expires_at_ms,
                    } => {
                        engine.set(key.clone(), value.clone(), *expires_at_ms, lsn);
                    }
                    Mutation::Delete { key } => {
                        engine.delete(key);
                    }
                }
            }
        }
        Command::Expire(keys) | Command::Evict(keys) => {
            for key in keys {
                engine.delete(key);
            }
        }
    }
}

/// Call `f` for each key `command` touches, in order (a key may repeat within a batch).
pub fn for_each_key(command: &Command, mut f: impl FnMut(&bytes::Bytes)) {
    match command {
        Command::Set { key, .. } | Command::Delete { key } => f(key),
        Command::Batch(mutations) => mutations.iter().for_each(|m| f(m.key())),
        Command::Expire(keys) | Command::Evict(keys) => keys.iter().for_each(f),
    }
}
