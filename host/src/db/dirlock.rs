//! One process per data directory. Two nodes appending to the same WAL would interleave
//! records and destroy it, so the directory is locked for the life of the node and a second
//! process fails at once, naming the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::DbError;

/// How long a lock that names this very process may take to be let go (see `acquire`).
const SELF_RELEASE_GRACE: Duration = Duration::from_millis(500);
const RETRY_EVERY: Duration = Duration::from_millis(5);

/// Holds the lock on a data directory; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, DbError> {
        let path = dir.join("LOCK");
        let io_err = |op: &'static str| {
            let path: PathBuf = path.clone();
            move |source| DbError::Io { op, path, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock file"))?;
        let ours = format!("pid {}", std::process::id());
        let mut waited = Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim().to_owned();
                    // A lock this process released a moment ago can still look held by
                    // itself: a child being spawned shares the lock's open file until it
                    // execs. Give that instant time to pass; any other holder fails at once.
                    if holder == ours && waited < SELF_RELEASE_GRACE {
                        std::thread::sleep(RETRY_EVERY);
                        waited += RETRY_EVERY;
                        continue;
                    }
                    return Err(DbError::Locked {
                        dir: dir.to_owned(),
                        holder,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err("lock")(e)),
            }
        }
        // Record who holds it, for the next process's error message.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "pid {}", std::process::id()))
            .map_err(io_err("write lock file"))?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_holder_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("in use"), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
