//! Helpers shared by the workspace-level tests: child processes that are always cleaned up,
//! waiting for conditions with a deadline instead of sleeping, and a fault-injecting TCP
//! proxy ([`proxy::FaultProxy`]) for links that are slow, stalled, cut or refused, and
//! clusters of real `wasmkv` processes with continuous writers and readers
//! ([`cluster`]). [`chaos`] builds randomized fault injection and its checker on them.

pub mod chaos;
pub mod cluster;
pub mod pki;
pub mod proxy;

use std::process::Child;
use std::time::{Duration, Instant};

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test never
/// leaves processes behind.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// SIGKILL the child and wait for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `condition` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
