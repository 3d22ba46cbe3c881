//! Connection threads: each accepted connection is served, for its whole life, by one of a
//! few threads that each run their own single-threaded event loop (a tokio current-thread
//! runtime), handed out in turn by the acceptor.
//!
//! Why not the node's multi-threaded runtime: there, an I/O event that readies a task on one
//! worker often wakes the other worker to steal it, and on a small machine those cross-thread
//! wake-ups cost more than the request. With a loop per thread, a connection's reads, writes
//! and handler all run where its socket is polled, as in Redis's event loop, but on every
//! core. Measured on 2 cores, 50 connections, three A/B pairs: GET 89–99k against 68–88k
//! requests/s, SET 80–92k against 64–83k, batched SET 533–627k against 381–549k keys/s
//! (BENCHMARKS.md, "Where the time goes"). The node's own work (replication links,
//! maintenance, signals) stays on the multi-threaded runtime.

use std::future::Future;
use std::pin::Pin;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

/// A connection's work, built on the thread that will run it (a socket must be registered
/// with the event loop that polls it).
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The connection threads.
pub struct Lanes {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
}

impl Lanes {
    /// Start `count` threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Lanes> {
        let count = count.max(1);
        let mut lanes = Lanes {
            senders: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            next: 0,
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (sender, mut jobs) = mpsc::unbounded_channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(format!("wasmkv-conn-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = jobs.recv().await {
                            tokio::spawn(job());
                        }
                    });
                    // Dropping the runtime here ends whatever is still running on it: only
                    // connections that outlived the server's drain.
                })?;
            lanes.senders.push(sender);
            lanes.threads.push(thread);
        }
        tracing::debug!(threads = count, "connection threads started");
        Ok(lanes)
    }

    /// Run `job` on the next thread in turn.
    pub fn run(&mut self, job: Job) {
        let lane = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        if self.senders[lane].send(job).is_err() {
            // Only if that thread's runtime panicked and stopped; the connection is dropped.
            tracing::error!(lane, "a connection thread has stopped; connection dropped");
        }
    }

    /// Stop taking connections and wait for the threads to end, which they do as soon as
    /// their last queued connection has started (call after the server's drain).
    pub async fn close(self) {
        drop(self.senders);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn jobs_go_to_each_thread_in_turn_and_close_ends_the_threads() {
        let mut lanes = Lanes::start(3).unwrap();
        let (ran, on) = std::sync::mpsc::channel();
        for _ in 0..6 {
            let ran = ran.clone();
            lanes.run(Box::new(move || {
                Box::pin(async move {
                    let name = std::thread::current().name().unwrap_or_default().to_owned();
                    ran.send(name).unwrap();
                })
            }));
        }
        let mut seen: Vec<String> = (0..6)
            .map(|_| on.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        seen.sort();
        let expected: Vec<String> = (0..3)
            .flat_map(|i| [format!("wasmkv-conn-{i}"), format!("wasmkv-conn-{i}")])
            .collect();
        assert_eq!(seen, expected);
        tokio::time::timeout(Duration::from_secs(10), lanes.close())
            .await
            .expect("the threads end once closed");
    }
}
