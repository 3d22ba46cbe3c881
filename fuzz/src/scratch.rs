//! A directory of this fuzzing process for decoders that read files (WAL segments,
//! snapshots). Every input is written over the same paths, so a run of millions of inputs
//! leaves a handful of files; `cargo xtask fuzz` points `TMPDIR` at a directory of its own and
//! removes it afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An empty directory named `name` inside this process's scratch directory: whatever the
/// previous input left there is removed first, so inputs do not see each other's files.
pub fn fresh_dir(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT
        .get_or_init(|| std::env::temp_dir().join(format!("wasmkv-fuzz-{}", std::process::id())));
    let dir = root.join(name);
    remove_dir(&dir);
    fs::create_dir_all(&dir).expect("the scratch directory can be created");
    dir
}

fn remove_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot empty the scratch directory {}: {e}", dir.display()),
    }
}
