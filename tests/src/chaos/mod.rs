//! Randomized fault injection with a history checker (issue 8): `cargo xtask chaos`.
//!
//! A run ([`runner`]) starts a primary and two replicas as real processes, drives clients
//! against them ([`clients`]) while a schedule drawn from a seed ([`schedule`]) kills,
//! pauses, partitions, promotes and swaps plugins, records every call ([`history`]), and
//! finally checks what was seen against the oracles ([`checker`], with a linearizability
//! checker of its own in [`linearizability`]; the prefix oracle observes the replicas
//! while the run goes on, in [`prefix`]). [`plugin`] is the validator whose file the run
//! replaces.

pub mod checker;
pub mod clients;
pub mod history;
pub mod linearizability;
pub mod plugin;
pub mod prefix;
pub mod runner;
pub mod schedule;
