//! GETs gathered over one turn of a connection thread's event loop and looked up together.
//!
//! A lookup in a large map is a chain of dependent cache misses (the table's control bytes,
//! its slot, the entry, the entry's key and value), and a GET served alone waits for each in
//! turn: under 50 connections they were the largest item in the node's profile, 11% of its
//! CPU (BENCHMARKS.md, session 18). Served in one pass, the misses of many keys overlap
//! ([`crate::storage::Engine`]'s `get_many`). So a GET on the HTTP/1.1 path that shares its
//! thread with other connections joins the turn's batch and yields to the turn's other tasks
//! ([`crate::turn`]); the first of the batch to resume at the turn's end looks every key up,
//! and each takes its own answer. Its answer leaves no later than before: the loop would have
//! held it to the end of the turn anyway (`h1::Pacing`), and [`run`] tells the loop that the
//! handler finished at the turn's end, so that it writes at once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;

use crate::db::Db;
use crate::storage::Item;

/// What a handler learned while it ran, for its loop to pace the answer by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Handled {
    /// It had to wait at least once (for a group commit, or for its batch's lookup).
    pub waited: bool,
    /// Its last wait was for the end of the event loop's turn ([`crate::turn`]): a GET's for
    /// its batch, a write's for its group commit.
    pub crossed: bool,
}

thread_local! {
    /// Whether the handler being polled now may gather; not outside [`run`], as for every
    /// request hyper serves.
    static MAY_GATHER: Cell<bool> = const { Cell::new(false) };
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch::new()) };
}

/// Poll `handler` to its end, letting it gather its lookup into the turn's batch if
/// `may_gather`. The loop allows it only when other connections share the thread (alone, the
/// yield would only add a poll to the round trip), and only for the first request it serves
/// after a read, so that requests pipelined behind it cost one turn in all, not one each.
///
/// It takes the handler pinned where its caller made it: taken by value, the future (about
/// 1.5 KB) was kept twice in this one's, and copied in and out on every request.
pub(super) async fn run<F: Future>(
    mut handler: Pin<&mut F>,
    may_gather: bool,
) -> (F::Output, Handled) {
    let mut handled = Handled::default();
    let output = std::future::poll_fn(|cx| {
        let outer = MAY_GATHER.replace(may_gather);
        let (poll, resumed) = crate::turn::poll_noting_turn_end(|| handler.as_mut().poll(cx));
        MAY_GATHER.set(outer);
        match poll {
            Poll::Pending => handled.waited = true,
            // Finished in the poll that resumed it at the turn's end, not after a later wait.
            Poll::Ready(_) => handled.crossed = resumed,
        }
        poll
    })
    .await;
    (output, handled)
}

/// The live value of `key` in `db`: from the turn's batch when the handler may gather,
/// directly otherwise.
pub(super) async fn get(db: &Db, key: &Bytes) -> Option<Item> {
    let ticket = if MAY_GATHER.get() {
        BATCH.with_borrow_mut(|batch| batch.join(db, key))
    } else {
        None
    };
    let Some(ticket) = ticket else {
        return db.get(key);
    };
    crate::turn::yield_to_ready_tasks().await;
    BATCH
        .with_borrow_mut(|batch| batch.take(db, ticket))
        // The scheduler split the turn and a later batch ran first: look up alone.
        .unwrap_or_else(|| db.get(key))
}

/// A GET's place in a batch.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    batch: u64,
    index: usize,
}

/// This thread's open batch and the answers of the last one looked up. A GET whose connection
/// closes while it waits leaves its key in the open batch until that is looked up (with the
/// next GET on the thread), and its answer until the next batch is: one turn's worth at most.
struct Batch {
    /// The store the open batch's keys are for, by address: a batch reads one store (several
    /// stores share a thread only in tests). Its joiners hold it alive until they take.
    db: usize,
    open: u64,
    keys: Vec<Bytes>,
    looked_up: u64,
    items: Vec<Option<Item>>,
}

impl Batch {
    const fn new() -> Batch {
        Batch {
            db: 0,
            open: 1,
            keys: Vec::new(),
            looked_up: 0,
            items: Vec::new(),
        }
    }

    /// Add `key` to the open batch; `None` if that batch reads another store.
    fn join(&mut self, db: &Db, key: &Bytes) -> Option<Ticket> {
        let address = std::ptr::from_ref(db) as usize;
        if !self.keys.is_empty() && self.db != address {
            return None;
        }
        self.db = address;
        self.keys.push(key.clone());
        Some(Ticket {
            batch: self.open,
            index: self.keys.len() - 1,
        })
    }

    /// The answer for `ticket`, looking the open batch up first if it is the ticket's. `None`
    /// if the ticket's batch was looked up and replaced by a later one already.
    fn take(&mut self, db: &Db, ticket: Ticket) -> Option<Option<Item>> {
        if ticket.batch == self.open {
            debug_assert_eq!(self.db, std::ptr::from_ref(db) as usize);
            self.items = db.get_many(&self.keys);
            self.keys.clear();
            self.looked_up = self.open;
            self.open += 1;
        }
        if ticket.batch != self.looked_up {
            return None;
        }
        self.items.get_mut(ticket.index).map(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;
    use crate::db::{DbOptions, SetOptions};
    use crate::wal::SyncPolicy;

    fn store(dir: &std::path::Path, keys: &[&str]) -> Db {
        let db = Db::open(DbOptions::new(dir, SyncPolicy::Never)).unwrap();
        for key in keys {
            let value = Bytes::from(format!("value of {key}"));
            db.set(Bytes::from(key.to_string()), value, SetOptions::default())
                .unwrap();
        }
        db
    }

    fn value(item: Option<Item>) -> Option<String> {
        item.map(|item| String::from_utf8(item.value.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_get_that_may_not_gather_looks_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path(), &["a"]);
        let (item, handled) = run(pin!(get(&db, &Bytes::from("a"))), false).await;
        assert_eq!(value(item).as_deref(), Some("value of a"));
        assert_eq!(handled, Handled::default(), "no wait, no turn crossed");
        let (item, _) = run(pin!(get(&db, &Bytes::from("b"))), false).await;
        assert_eq!(item, None);
    }

    /// Why: the GETs of one turn are looked up in one pass, so their cache misses overlap,
    /// and each handler tells its loop that its answer is made after the turn's end.
    #[tokio::test]
    async fn gets_of_one_turn_are_looked_up_together() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path(), &["a", "b"]);
        let before = BATCH.with_borrow(|batch| batch.looked_up);
        let [a, b, missing] = ["a", "b", "missing"].map(Bytes::from);
        // Polled in one task, as one turn polls its connections: all join, then all resume.
        let get_a = pin!(get(&db, &a));
        let get_b = pin!(get(&db, &b));
        let get_missing = pin!(get(&db, &missing));
        let answers = tokio::join!(run(get_a, true), run(get_b, true), run(get_missing, true));
        let answers = [answers.0, answers.1, answers.2];
        let values: Vec<_> = answers
            .iter()
            .map(|(item, _)| value(item.clone()))
            .collect();
        assert_eq!(
            values,
            [
                Some("value of a".to_owned()),
                Some("value of b".to_owned()),
                None
            ]
        );
        for (_, handled) in &answers {
            assert_eq!(
                *handled,
                Handled {
                    waited: true,
                    crossed: true
                }
            );
        }
        let after = BATCH.with_borrow(|batch| batch.looked_up);
        assert_eq!(after - before, 1, "one lookup for the three");
    }

    /// Why: the batch is looked up when its first GET resumes, after the turn's end, so a
    /// write committed after the GETs arrived and before that is seen (a read is never older
    /// than its request).
    #[tokio::test]
    async fn a_batch_reads_the_store_as_it_is_when_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path(), &["a"]);
        let key = Bytes::from("a");
        let lookup = pin!(get(&db, &key));
        let mut gathered = pin!(run(lookup, true));
        assert!(poll_once(&mut gathered.as_mut()).await.is_none(), "joined");
        db.set(key.clone(), Bytes::from("newer"), SetOptions::default())
            .unwrap();
        let (item, _) = gathered.await;
        assert_eq!(value(item).as_deref(), Some("newer"));
    }

    #[test]
    fn a_ticket_whose_batch_was_replaced_is_refused_and_another_store_is_not_joined() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path(), &["a"]);
        let other_dir = tempfile::tempdir().unwrap();
        let other = store(other_dir.path(), &["a"]);
        let mut batch = Batch::new();
        let key = Bytes::from("a");
        let first = batch.join(&db, &key).unwrap();
        let late = batch.join(&db, &key).unwrap();
        assert!(
            batch.join(&other, &key).is_none(),
            "a batch reads one store"
        );
        assert!(batch.take(&db, first).unwrap().is_some());
        let next = batch.join(&db, &key).unwrap();
        assert!(batch.take(&db, next).unwrap().is_some());
        assert_eq!(batch.take(&db, late), None, "its answers were replaced");
        // Once the open batch is empty, another store's GETs start the next one.
        assert!(batch.join(&other, &key).is_some());
    }

    /// Polls `future` once: its output if that finished it.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}
