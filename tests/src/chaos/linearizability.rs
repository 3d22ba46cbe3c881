//! A linearizability checker for one register (one key): Wing & Gong's search with Lowe's
//! memoization, as described by Horn and Kroening ("Faster linearizability checking via
//! P-compositionality", 2015). Keys are independent registers, so a store is linearizable
//! when every key's history is, and each key is checked alone.
//!
//! (The one crate with this algorithm, `todc-utils`, has had two releases, in 2023, and no
//! notion of an operation whose outcome is unknown, which every crash produces; this is
//! small enough to own.)
//!
//! The search walks the history's calls and returns in time order and linearizes a pending
//! operation as soon as the register allows it; when it reaches the return of an operation
//! it has not linearized, that order cannot work, so it undoes the last choice and tries the
//! next candidate. A cache of (operations linearized, register state) pairs already explored
//! keeps it from exploring the same situation twice.
//!
//! An operation without a return (a write whose answer was lost) returns "at infinity": it
//! may take effect at any point after its call, or never (linearized after everything else,
//! it changes nothing anyone saw).

use std::collections::HashSet;

use bytes::Bytes;

use super::history::Nanos;

/// What an operation did to the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// Set the value (`None`: delete the key).
    Write(Option<Bytes>),
    /// Read this (`None`: not found).
    Read(Option<Bytes>),
}

/// One operation with its real-time interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed {
    pub call: Nanos,
    /// None: no answer, so it may take effect at any time after `call`, or never.
    pub ret: Option<Nanos>,
    pub op: RegisterOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// For diagnosis: the most operations any order managed to linearize, and the one whose
    /// return that order then reached (an index into the history).
    NotLinearizable {
        linearized: usize,
        stuck_at: usize,
    },
    /// The search took more than its budget of steps: neither verdict.
    GaveUp,
}

/// Whether `history` is linearizable for a register that starts absent, exploring at most
/// `budget` steps.
pub fn check(history: &[Timed], budget: u64) -> Verdict {
    Search::new(history).run(budget)
}

/// The doubly linked list of calls and returns the search lifts operations out of.
struct Search {
    /// Per operation: what it does, with values interned (0 = absent).
    ops: Vec<(bool, u32)>,
    /// Per list entry (the last one is the head sentinel): neighbours, and which operation's
    /// call or return it is.
    next: Vec<usize>,
    prev: Vec<usize>,
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    /// Per operation: its call's and its return's entries.
    call_at: Vec<usize>,
    ret_at: Vec<usize>,
}

impl Search {
    fn new(history: &[Timed]) -> Search {
        let mut values: Vec<Option<&Bytes>> = vec![None];
        let ops: Vec<(bool, u32)> = history
            .iter()
            .map(|t| {
                let (is_write, value) = match &t.op {
                    RegisterOp::Write(v) => (true, v.as_ref()),
                    RegisterOp::Read(v) => (false, v.as_ref()),
                };
                let id = values.iter().position(|v| *v == value).unwrap_or_else(|| {
                    values.push(value);
                    values.len() - 1
                });
                (is_write, id as u32)
            })
            .collect();
        // (time, 0 for a call and 1 for a return, op): at equal times calls come first, so
        // operations that touch are taken as concurrent (the lenient reading).
        let mut events: Vec<(Nanos, u8, usize)> = Vec::with_capacity(2 * history.len());
        for (i, t) in history.iter().enumerate() {
            events.push((t.call, 0, i));
            events.push((t.ret.unwrap_or(Nanos::MAX), 1, i));
        }
        events.sort_unstable();
        // Entries 0.. in time order, then the head sentinel, in a circular list.
        let len = events.len() + 1;
        let mut search = Search {
            ops,
            next: (0..len).map(|e| (e + 1) % len).collect(),
            prev: (0..len).map(|e| (e + len - 1) % len).collect(),
            entry_op: vec![usize::MAX; len],
            entry_is_call: vec![false; len],
            call_at: vec![0; history.len()],
            ret_at: vec![0; history.len()],
        };
        for (e, &(_, kind, op)) in events.iter().enumerate() {
            search.entry_op[e] = op;
            search.entry_is_call[e] = kind == 0;
            if kind == 0 {
                search.call_at[op] = e;
            } else {
                search.ret_at[op] = e;
            }
        }
        search
    }

    fn head(&self) -> usize {
        self.next.len() - 1
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Undo `unlink(e)`; valid in the reverse order of the unlinks.
    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_at[op]);
        self.unlink(self.ret_at[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_at[op]);
        self.relink(self.call_at[op]);
    }

    fn run(mut self, budget: u64) -> Verdict {
        let head = self.head();
        let mut linearized = vec![0u64; self.ops.len().div_ceil(64)];
        let mut state = 0u32;
        let mut stack: Vec<(usize, u32)> = Vec::new();
        let mut cache: HashSet<(Vec<u64>, u32)> = HashSet::new();
        let mut entry = self.next[head];
        let mut steps = 0u64;
        let (mut deepest, mut stuck_at) = (0, 0);
        while self.next[head] != head {
            steps += 1;
            if steps > budget {
                return Verdict::GaveUp;
            }
            let op = self.entry_op[entry];
            if self.entry_is_call[entry] {
                let (is_write, value) = self.ops[op];
                let allowed = is_write || value == state;
                let after = if is_write { value } else { state };
                if allowed {
                    linearized[op / 64] |= 1 << (op % 64);
                    if cache.insert((linearized.clone(), after)) {
                        stack.push((op, state));
                        state = after;
                        self.lift(op);
                        entry = self.next[head];
                        continue;
                    }
                    linearized[op / 64] &= !(1 << (op % 64));
                }
                entry = self.next[entry];
            } else {
                // The return of an operation not linearized yet: undo the last choice.
                if stack.len() >= deepest {
                    (deepest, stuck_at) = (stack.len(), op);
                }
                let Some((last, before)) = stack.pop() else {
                    return Verdict::NotLinearizable {
                        linearized: deepest,
                        stuck_at,
                    };
                };
                state = before;
                linearized[last / 64] &= !(1 << (last % 64));
                self.unlift(last);
                entry = self.next[self.call_at[last]];
            }
        }
        Verdict::Linearizable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn v(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn w(call: u64, ret: Option<u64>, value: Option<Bytes>) -> Timed {
        Timed {
            call,
            ret,
            op: RegisterOp::Write(value),
        }
    }

    fn r(call: u64, ret: u64, got: Option<Bytes>) -> Timed {
        Timed {
            call,
            ret: Some(ret),
            op: RegisterOp::Read(got),
        }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = [
            r(0, 1, None),
            w(2, Some(3), v("a")),
            r(4, 5, v("a")),
            w(6, Some(7), None),
            r(8, 9, None),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
        assert_eq!(check(&[], BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_flagged() {
        // b is acknowledged before the read starts, which still returns a.
        let history = [
            w(0, Some(1), v("a")),
            w(2, Some(3), v("b")),
            r(4, 5, v("a")),
        ];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_lost_acknowledged_write_is_flagged() {
        let history = [w(0, Some(1), v("a")), r(10, 11, None)];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn an_invented_value_is_flagged() {
        let history = [w(0, Some(1), v("a")), r(2, 3, v("zzz"))];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        let old = [
            w(0, Some(1), v("a")),
            w(2, Some(10), v("b")),
            r(3, 4, v("a")),
        ];
        let new = [
            w(0, Some(1), v("a")),
            w(2, Some(10), v("b")),
            r(3, 4, v("b")),
        ];
        assert_eq!(check(&old, BUDGET), Verdict::Linearizable);
        assert_eq!(check(&new, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // During a long write, one read sees the new value, a later one the old: no order
        // explains both.
        let history = [
            w(0, Some(1), v("a")),
            w(2, Some(20), v("b")),
            r(3, 4, v("b")),
            r(5, 6, v("a")),
        ];
        assert!(matches!(
            check(&history, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_write_without_an_answer_may_apply_late_or_never() {
        let late = [
            w(0, Some(1), v("a")),
            w(2, None, v("b")),
            r(3, 4, v("a")),
            r(100, 101, v("b")),
        ];
        let never = [
            w(0, Some(1), v("a")),
            w(2, None, v("b")),
            r(100, 101, v("a")),
        ];
        assert_eq!(check(&late, BUDGET), Verdict::Linearizable);
        assert_eq!(check(&never, BUDGET), Verdict::Linearizable);
        // But not before it was sent, and once seen it stays until overwritten.
        let early = [r(0, 1, v("b")), w(2, None, v("b"))];
        let flicker = [
            w(0, Some(1), v("a")),
            w(2, None, v("b")),
            r(3, 4, v("b")),
            r(5, 6, v("a")),
        ];
        assert!(matches!(
            check(&early, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
        assert!(matches!(
            check(&flicker, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn concurrent_writers_need_backtracking() {
        // Two overlapping writes; the reads fix their order as a then b, which the search
        // only finds after trying b then a first.
        let history = [
            w(0, Some(10), v("b")),
            w(1, Some(10), v("a")),
            r(11, 12, v("b")),
            r(13, 14, v("b")),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
        let impossible = [
            w(0, Some(10), v("b")),
            w(1, Some(10), v("a")),
            r(11, 12, v("b")),
            r(13, 14, v("a")),
        ];
        assert!(matches!(
            check(&impossible, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn the_budget_bounds_the_search() {
        let history: Vec<Timed> = (0..40)
            .map(|i| w(i, None, v(&i.to_string())))
            .chain([r(100, 101, v("nope"))])
            .collect();
        assert_eq!(check(&history, 50), Verdict::GaveUp);
    }
}
