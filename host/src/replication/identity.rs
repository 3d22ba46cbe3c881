//! What a node remembers about replication across restarts, in two small files.
//!
//! - `NODE`, in the node's data directory: the node's replica ID (stable, so a primary
//!   recognises a replica that reconnects), the primary it was told to follow by `AddReplica`,
//!   and which directory holds the store. A full resync builds the new store in a directory
//!   of its own and switches by rewriting this file, so a crash at any point leaves either the
//!   old store or the complete new one, never a mix.
//! - `HISTORY`, in the store's directory: the replication ID the data belongs to, and the
//!   history it continued from (secondary ID, shared up to `secondary_lsn`), so a replica of
//!   the old history can still resync partially after a promotion or a primary restart.
//!
//! Both are JSON, replaced atomically (write, fsync, rename, fsync the directory).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wal::{WalError, sync_dir};

const NODE_FILE: &str = "NODE";
const HISTORY_FILE: &str = "HISTORY";

/// Why a replication file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Io(#[from] WalError),
    #[error("{path} is damaged ({reason}); restore it or remove it to start this node afresh")]
    Damaged { path: PathBuf, reason: String },
}

/// The node-level file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    /// This node's identity as a replica.
    pub replica_id: String,
    /// The primary `AddReplica` told this node to follow (host:port or URL), if any.
    #[serde(default)]
    pub follow: Option<String>,
    /// Directory of the store, relative to the data directory ("" = the data directory).
    #[serde(default)]
    pub store: String,
}

impl NodeFile {
    /// The node file of `root`, created with a fresh replica ID if there is none.
    pub fn load_or_create(root: &Path) -> Result<NodeFile, IdentityError> {
        fs::create_dir_all(root).map_err(|e| WalError::io("create directory", root, e))?;
        if let Some(node) = read_json(&root.join(NODE_FILE))? {
            return Ok(node);
        }
        let node = NodeFile {
            replica_id: new_id(),
            follow: None,
            store: String::new(),
        };
        node.save(root)?;
        Ok(node)
    }

    pub fn save(&self, root: &Path) -> Result<(), IdentityError> {
        write_json(root, NODE_FILE, self)
    }

    /// The store directory this file names under `root`.
    pub fn store_dir(&self, root: &Path) -> PathBuf {
        if self.store.is_empty() {
            root.to_owned()
        } else {
            root.join(&self.store)
        }
    }
}

/// The replication history a store's data belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Empty for a replica that has never synced.
    pub replication_id: String,
    /// The history this one continued from ("" = none) and its last LSN shared with this one.
    #[serde(default)]
    pub secondary_id: String,
    #[serde(default)]
    pub secondary_lsn: u64,
}

impl History {
    /// The history file of the store in `dir`; the default (no history) if there is none.
    pub fn load(dir: &Path) -> Result<History, IdentityError> {
        Ok(read_json(&dir.join(HISTORY_FILE))?.unwrap_or_default())
    }

    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        write_json(dir, HISTORY_FILE, self)
    }

    /// A new history that continues this one after `lsn`: a promotion, or a primary restart
    /// (whose log may have lost an unsynced tail a replica saw, so the old ID is only trusted
    /// up to what was recovered).
    pub fn fork(&self, lsn: u64) -> History {
        History {
            replication_id: new_id(),
            secondary_id: self.replication_id.clone(),
            secondary_lsn: if self.replication_id.is_empty() {
                0
            } else {
                lsn
            },
        }
    }

    /// Whether a replica holding `replication_id` up to `lsn` shares this history (so that it
    /// can go on from `lsn` with a partial resync), given this node's applied LSN.
    pub fn shares(&self, replication_id: &str, lsn: u64, applied: u64) -> bool {
        if replication_id.is_empty() {
            return false;
        }
        (replication_id == self.replication_id && lsn <= applied)
            || (replication_id == self.secondary_id && lsn <= self.secondary_lsn)
    }
}

/// A random 160-bit identifier in hex, like Redis's replication IDs.
pub fn new_id() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| IdentityError::Damaged {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io("read", path, e).into()),
    }
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), IdentityError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).expect("plain structs serialise");
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| WalError::io("write", &path, e))?;
    sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_file_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeFile::load_or_create(dir.path()).unwrap();
        assert_eq!(first.replica_id.len(), 40);
        assert_eq!(first.store_dir(dir.path()), dir.path());
        let mut changed = first.clone();
        changed.follow = Some("p:1".into());
        changed.store = "store-2".into();
        changed.save(dir.path()).unwrap();
        let again = NodeFile::load_or_create(dir.path()).unwrap();
        assert_eq!(again, changed);
        assert_eq!(again.store_dir(dir.path()), dir.path().join("store-2"));
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(NODE_FILE), b"{not json").unwrap();
        let err = NodeFile::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("NODE is damaged"), "{err}");
    }

    #[test]
    fn a_fork_keeps_the_old_history_as_secondary() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(History::load(dir.path()).unwrap(), History::default());
        let first = History::default().fork(7);
        assert_eq!((first.secondary_id.as_str(), first.secondary_lsn), ("", 0));
        let second = first.fork(100);
        assert_ne!(second.replication_id, first.replication_id);
        second.save(dir.path()).unwrap();
        assert_eq!(History::load(dir.path()).unwrap(), second);

        // Its own ID up to what it applied; the old one up to the fork point.
        assert!(second.shares(&second.replication_id, 150, 150));
        assert!(!second.shares(&second.replication_id, 151, 150));
        assert!(second.shares(&first.replication_id, 100, 150));
        assert!(!second.shares(&first.replication_id, 101, 150));
        assert!(!second.shares("", 0, 150));
        assert!(!second.shares("other", 0, 150));
    }
}
