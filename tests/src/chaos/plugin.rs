//! The validator plugin of a run: a directory of its own (so replacing the file touches only
//! this run's nodes), the nodes' `plugins:` section pointing at it, and the replacements a
//! `Plugin` fault makes: first a broken file, which the nodes must refuse while they keep
//! running the old version, then another build of the good one, which they must load.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::clients::DENIED_PREFIX;
use crate::cluster::{NodeProcess, block_on};

/// The validator every node runs.
pub const PLUGIN: &str = "key-policy";

/// The run's copy of the plugin.
pub struct PluginFile {
    dir: TempDir,
    file: PathBuf,
    good: Vec<u8>,
    /// Builds installed so far (each one a different file).
    builds: u64,
}

impl PluginFile {
    /// Copy `key-policy.wasm` from `from` into a fresh directory.
    ///
    /// # Panics
    /// If it is not there, saying how to build it.
    pub fn install(from: &Path) -> PluginFile {
        let source = from.join(format!("{PLUGIN}.wasm"));
        let good = std::fs::read(&source).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (build the plugins with `cargo xtask plugins`)",
                source.display()
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("wasmkv-chaos-plugins-")
            .tempdir()
            .expect("create the run's plugin directory");
        let file = dir.path().join(format!("{PLUGIN}.wasm"));
        std::fs::write(&file, &good).expect("copy the plugin");
        PluginFile {
            dir,
            file,
            good,
            builds: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The `plugins:` section of every node: the validator refuses keys under `deny:`; a
    /// generous deadline, because two busy cores are no reason for a write to be refused.
    pub fn section(&self) -> String {
        format!(
            "  dir: {:?}\n  limits:\n    deadline: 1s\n  validate:\n    - plugin: {PLUGIN}\n      \
             config: {{denied_prefixes: [{DENIED_PREFIX:?}]}}\n",
            self.dir.path().display().to_string()
        )
    }

    /// Install a truncated module.
    pub fn break_it(&self) {
        self.replace(&self.good[..self.good.len() / 2]);
    }

    /// Install another build of the good module: the same code with a custom section
    /// naming the build, so the file differs from every earlier one.
    pub fn rebuild(&mut self) {
        self.builds += 1;
        let name = b"chaos-build";
        let payload = self.builds.to_le_bytes();
        let size = u8::try_from(1 + name.len() + payload.len())
            .expect("a section shorter than 128 bytes (its size is one LEB128 byte)");
        let mut module = self.good.clone();
        module.extend([0, size, name.len() as u8]);
        module.extend(name);
        module.extend(payload);
        self.replace(&module);
    }

    /// Replace the file in one step (write aside, rename), as a deployment would.
    fn replace(&self, bytes: &[u8]) {
        let aside = self.file.with_extension("new");
        std::fs::write(&aside, bytes).expect("write the new plugin file");
        std::fs::rename(&aside, &self.file).expect("move the new plugin file in place");
    }
}

/// When `node` loaded the version of the plugin it runs (0 if it cannot tell).
pub fn loaded_at(node: &NodeProcess) -> u64 {
    let client = node.client_with_timeout(Duration::from_secs(1));
    block_on(client.list_plugins())
        .ok()
        .and_then(|plugins| plugins.into_iter().find(|p| p.name == PLUGIN))
        .map_or(0, |p| p.loaded_at_ms)
}

/// Whether `node` runs a version of the plugin loaded after `before`, within `deadline`.
pub fn reloaded(node: &NodeProcess, before: u64, deadline: Duration) -> bool {
    let deadline = Instant::now() + deadline;
    while Instant::now() < deadline {
        if loaded_at(node) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
