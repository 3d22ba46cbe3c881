//! The paced load's clock: one thread that wakes each paced connection when its next request
//! is due, sleeping on the kernel's high-resolution timers in between.
//!
//! tokio's timer has millisecond slots, so with it every request due within the same
//! millisecond was sent at its end, together, and the burst queued at the server: at 20k
//! requests/s, 20 at a time, which tripled the p50 the node was charged with. Here requests
//! due within [`BATCH`] of each other are released together, and only those: a tenth of
//! tokio's slot, and few enough wake-ups (at most one per `BATCH`) that the client does not
//! take the shared cores from the node. (A `timerfd` per connection was measured too: exact,
//! but one wake-up per request cost the node throughput at 45k/s.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

/// Requests due this close together are released together.
pub(super) const BATCH: Duration = Duration::from_micros(100);

pub(super) struct Alarm {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when an earlier deadline arrives, or on stop.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Due>>,
    stop: bool,
}

/// A waiting connection, ordered by when it is due.
struct Due {
    at: Instant,
    waker: Waker,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Alarm {
    pub(super) fn start() -> std::io::Result<Alarm> {
        let shared = Arc::new(Shared::default());
        let ringing = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || ring(&ringing))?;
        Ok(Alarm {
            shared,
            thread: Some(thread),
        })
    }

    /// Ready once `at` is at most [`BATCH`] away.
    pub(super) fn sleep_until(&self, at: Instant) -> Sleep<'_> {
        Sleep { alarm: self, at }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The alarm thread: wake whatever is due, then sleep until the next deadline.
fn ring(shared: &Shared) {
    let mut state = shared.state.lock();
    while !state.stop {
        let horizon = Instant::now() + BATCH;
        let mut woken = Vec::new();
        while state.due.peek().is_some_and(|next| next.0.at <= horizon) {
            woken.extend(state.due.pop().map(|due| due.0.waker));
        }
        if !woken.is_empty() {
            // Woken without the lock held, so connections registering again never wait.
            MutexGuard::unlocked(&mut state, || woken.into_iter().for_each(Waker::wake));
            continue;
        }
        match state.due.peek().map(|next| next.0.at - BATCH) {
            Some(wake_at) => {
                shared.changed.wait_until(&mut state, wake_at);
            }
            None => shared.changed.wait(&mut state),
        }
    }
}

pub(super) struct Sleep<'a> {
    alarm: &'a Alarm,
    at: Instant,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() + BATCH >= self.at {
            return Poll::Ready(());
        }
        let shared = &self.alarm.shared;
        let mut state = shared.state.lock();
        let earliest = state.due.peek().is_none_or(|next| self.at < next.0.at);
        state.due.push(Reverse(Due {
            at: self.at,
            waker: cx.waker().clone(),
        }));
        drop(state);
        // The alarm thread sleeps until the earliest deadline it knew of; an earlier one
        // must wake it. (A poll that was not woken by the alarm registers again, and is woken
        // twice: harmless.)
        if earliest {
            shared.changed.notify_one();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far beyond any scheduling delay, far below the 10 s deadlines that must not be waited.
    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn wakes_every_sleeper_and_an_earlier_deadline_is_not_held_up_by_a_later_one() {
        let alarm = Alarm::start().unwrap();
        // Once this has been woken, the alarm thread is running and about to sleep.
        alarm.sleep_until(Instant::now() + 2 * BATCH).await;
        let start = Instant::now();
        // The alarm thread then sleeps towards a deadline 10 s away...
        let mut far = Box::pin(alarm.sleep_until(start + Duration::from_secs(10)));
        assert!(futures_poll(far.as_mut()).is_pending());
        // ...and sleepers registered after it, out of order and some sharing a deadline,
        // are each woken in time all the same.
        let waits = [5, 1, 3, 3, 2, 8, 1].map(Duration::from_millis);
        let near = waits.map(|wait| alarm.sleep_until(start + wait));
        tokio::time::timeout(PATIENCE, join_all(near))
            .await
            .expect("every near sleeper woken, not after the far one");
        assert!(Instant::now() < start + Duration::from_secs(10));
        // A deadline that has passed, or is within a batch, does not sleep.
        alarm.sleep_until(start).await;
        alarm.sleep_until(Instant::now() + BATCH / 2).await;
        // Stopping with a sleeper still registered does not wait for its deadline.
        drop(far);
        tokio::task::spawn_blocking(move || drop(alarm))
            .await
            .unwrap();
        assert!(start.elapsed() < PATIENCE);
    }

    fn futures_poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        future.poll(&mut cx)
    }

    async fn join_all<F: Future<Output = ()>, const N: usize>(futures: [F; N]) {
        let mut pending = Vec::from(futures.map(Box::pin));
        std::future::poll_fn(|cx| {
            pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
            if pending.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
