//! Why a plugin could not be loaded or a call failed.

use std::path::PathBuf;

/// A plugin file that cannot be used; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {name}: not a valid WebAssembly module: {reason}")]
    Compile { name: String, reason: String },
    #[error(
        "plugin {name}: imports {module}.{field}, which wasmkv does not provide (a plugin may \
         import only wasmkv.log and wasmkv.now_ms: no WASI, files or network)"
    )]
    ForbiddenImport {
        name: String,
        module: String,
        field: String,
    },
    #[error("plugin {name}: {problem} (see guest-sdk/ABI.md)")]
    Abi { name: String, problem: String },
    #[error("plugin {name}: wasmkv_init refused its config: {reason}")]
    Init { name: String, reason: String },
    #[error(
        "plugin {name}: {path} does not exist; build it (cargo xtask plugins) or fix the chain"
    )]
    Missing { name: String, path: PathBuf },
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

/// Why one call into a plugin failed. Every kind discards the instance.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("exceeded its {0:?} deadline")]
    Timeout(std::time::Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("answered garbage: {0}")]
    BadOutput(String),
    #[error("reported an error: {0}")]
    Guest(String),
    #[error("is backed off after repeated failures")]
    BackedOff,
}

impl CallError {
    /// Whether this counts as a trap or a timeout in the statistics.
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::Timeout(_) => FailureKind::Timeout,
            CallError::Trap(_) => FailureKind::Trap,
            CallError::BadOutput(_) | CallError::Guest(_) | CallError::BackedOff => {
                FailureKind::Error
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    Trap,
    Error,
}
