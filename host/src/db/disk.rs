//! Free space on the volume that holds the WAL. Writes are refused below a reserve so the node
//! reports "disk nearly full" as a clear error instead of meeting ENOSPC in the middle of a
//! record, and so there is always room left to write a snapshot and shut down cleanly.

use std::path::Path;

/// Bytes available to this (unprivileged) process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_some_free_space_for_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::free_bytes(dir.path()).unwrap() > 0);
    }
}
