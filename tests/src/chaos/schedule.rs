//! The faults of a run, drawn from its seed before it starts, so that a seed names one
//! schedule and replays it.
//!
//! Events happen one after another: each applies its fault, holds it, and heals it before
//! the next one starts, with a quiet gap in between. Targets are roles, not processes
//! ("the primary", "the first replica" by node order), because a promotion changes who is
//! what; which process that is at the time follows from the events before it, so it is as
//! repeatable as the schedule.

use std::fmt;
use std::time::Duration;

/// A node, named by the role it has when the event starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Primary,
    /// The first or second replica, in node order.
    Replica(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Primary => f.write_str("primary"),
            Target::Replica(i) => write!(f, "replica#{i}"),
        }
    }
}

/// What happens to a replica's link to its primary (through its [`FaultProxy`]).
///
/// [`FaultProxy`]: crate::proxy::FaultProxy
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Every connection reset at once.
    Drop,
    /// Every byte delayed this long.
    Delay(Duration),
    /// Nothing moves, nothing closes.
    Blackhole,
    /// New connections are refused, open ones reset.
    Refuse,
}

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, down for `down`, then started again on the same data.
    Kill { target: Target, down: Duration },
    /// SIGSTOP for `held`, then SIGCONT.
    Pause { target: Target, held: Duration },
    /// A replica's link faulted for `held`, then healed.
    Link {
        replica: usize,
        link: Link,
        held: Duration,
    },
    /// The validator's `.wasm` overwritten with a broken build for `held` (the node must
    /// refuse it and keep the running one), then with a fresh copy of the good one (reloaded).
    Plugin { held: Duration },
    /// A switchover: clients paused, the replica caught up and promoted, the old primary
    /// and the other replica told to follow it, clients resumed on it.
    Promote { replica: usize },
    /// A failover: the primary SIGKILLed, the most advanced replica promoted as it is, the
    /// other replica and the old primary (restarted) told to follow it. Writes the promoted
    /// replica had not received are lost, as they may be unless acknowledged with
    /// `min_replicas` ≥ 1.
    Failover,
}

impl Fault {
    /// A short name for counting faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Link {
                link: Link::Drop, ..
            } => "link-drop",
            Fault::Link {
                link: Link::Delay(_),
                ..
            } => "link-delay",
            Fault::Link {
                link: Link::Blackhole,
                ..
            } => "link-blackhole",
            Fault::Link {
                link: Link::Refuse, ..
            } => "link-refuse",
            Fault::Plugin { .. } => "plugin-swap",
            Fault::Promote { .. } => "promote",
            Fault::Failover => "failover",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { target, down } => write!(f, "SIGKILL {target}, restart after {down:?}"),
            Fault::Pause { target, held } => write!(f, "SIGSTOP {target} for {held:?}"),
            Fault::Link {
                replica,
                link,
                held,
            } => write!(f, "link of replica#{replica}: {link:?} for {held:?}"),
            Fault::Plugin { held } => write!(f, "plugin file broken for {held:?}, then replaced"),
            Fault::Promote { replica } => write!(f, "promote replica#{replica}"),
            Fault::Failover => f.write_str("SIGKILL primary, promote the most advanced replica"),
        }
    }
}

/// A fault and when it starts, from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub fault: Fault,
}

/// The events of a run of `seconds`, drawn from `seed`. The last one starts early enough to
/// end within the run.
pub fn generate(seed: u64, seconds: u64) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Duration::from_secs(seconds);
    let ms = |rng: &mut fastrand::Rng, from: u64, to: u64| Duration::from_millis(rng.u64(from..to));
    // Time for clients to get going before the first fault.
    let mut at = Duration::from_secs(2);
    let mut events = Vec::new();
    loop {
        at += ms(&mut rng, 500, 3000);
        let target = |rng: &mut fastrand::Rng| match rng.u8(..3) {
            0 => Target::Primary,
            n => Target::Replica(usize::from(n - 1)),
        };
        let fault = match rng.u8(..100) {
            0..22 => Fault::Kill {
                target: target(&mut rng),
                down: ms(&mut rng, 100, 2000),
            },
            22..40 => Fault::Pause {
                target: target(&mut rng),
                held: ms(&mut rng, 200, 3000),
            },
            40..75 => Fault::Link {
                replica: rng.usize(..2),
                link: match rng.u8(..4) {
                    0 => Link::Drop,
                    1 => Link::Delay(ms(&mut rng, 5, 200)),
                    2 => Link::Blackhole,
                    _ => Link::Refuse,
                },
                held: ms(&mut rng, 300, 4000),
            },
            75..85 => Fault::Plugin {
                held: ms(&mut rng, 200, 2000),
            },
            85..93 => Fault::Promote {
                replica: rng.usize(..2),
            },
            _ => Fault::Failover,
        };
        if at + held(&fault) >= end {
            return events;
        }
        events.push(Event { at, fault });
        at += held(&fault);
    }
}

/// How long a fault lasts as scheduled (what the runner does around it takes longer).
fn held(fault: &Fault) -> Duration {
    match fault {
        Fault::Kill { down, .. } => *down,
        Fault::Pause { held, .. } | Fault::Link { held, .. } | Fault::Plugin { held } => *held,
        Fault::Promote { .. } | Fault::Failover => Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule() {
        assert_eq!(generate(42, 60), generate(42, 60));
        assert_ne!(generate(42, 60), generate(43, 60));
    }

    #[test]
    fn a_minute_has_every_kind_of_fault_within_it() {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..5 {
            let events = generate(seed, 60);
            assert!(events.len() >= 10, "seed {seed}: {} events", events.len());
            let last = events.last().expect("events");
            assert!(last.at + held(&last.fault) < Duration::from_secs(60));
            kinds.extend(events.iter().map(|e| e.fault.kind()));
        }
        assert_eq!(kinds.len(), 9, "{kinds:?}");
    }
}
