//! One chaos run: a primary and two replicas (real `wasmkv` processes, `sync: always`, a
//! validator plugin), each replica reaching its primary through a [`FaultProxy`], clients
//! writing and reading all along, the schedule's faults one after another, and the oracles
//! at the end.
//!
//! While faults are held and between them, the runner keeps observing the replicas for the
//! prefix oracle ([`super::prefix`]). After a crash of the primary and after a promotion
//! (a switchover, or a failover that may discard writes: recorded as a [`Rollback`]) it
//! pauses the clients and reads every key from the primary (a durability checkpoint,
//! recorded as reads, which also gives a new term its starting state). Once the schedule is
//! over, every node is running and every link healed: the clients stop, the nodes must
//! converge, a last checkpoint is read, and the history goes to the checker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checker::{self, Anomaly, LinearizabilityStats, Oracle};
use super::clients::{Clients, DENIED_PREFIX, Endpoints, all_keys};
use super::history::{Action, Op, Recorder, Rollback, WriteOutcome};
use super::plugin::{self, PluginFile};
use super::prefix::PrefixObserver;
use super::schedule::{Event, Fault, Link, Target};
use crate::cluster::{NodeConfig, NodeProcess, block_on, try_converged};
use crate::proxy::FaultProxy;

/// How long the nodes may take to hold equal data once the faults are over.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a replica may take to catch up with its primary before a promotion.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
/// How long the primary may take to load a replaced plugin file.
const PLUGIN_RELOAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long a checkpoint may keep trying to read the primary.
const CHECKPOINT_DEADLINE: Duration = Duration::from_secs(15);
/// The deadline of the runner's own calls (observations, checkpoints).
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two prefix observations of the replicas.
const OBSERVE_EVERY: Duration = Duration::from_millis(500);

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub seconds: u64,
    /// Where `key-policy.wasm` is (built by `cargo xtask plugins`).
    pub plugin_dir: PathBuf,
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Client calls recorded (and checked): writes and reads.
    pub writes: usize,
    pub reads: usize,
    /// Prefix observations made (a replica compared with its primary), and log entries
    /// compared by them.
    pub prefix_observations: u64,
    pub prefix_entries: u64,
    pub linearizability: LinearizabilityStats,
    pub checkpoints: u64,
    /// Writes by outcome: acknowledged, unknown (no answer), refused.
    pub acked: usize,
    pub unknown: usize,
    pub refused: usize,
    /// Acknowledged writes a failover discarded (allowed: none had `min_replicas` ≥ 1).
    pub discarded: usize,
    /// Plugin files replaced, and replacements the primary was seen to load.
    pub plugin_swaps: u64,
    pub plugin_reloads_confirmed: u64,
    pub anomalies: Vec<Anomaly>,
    pub elapsed: Duration,
}

impl Report {
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// One node of the run and its way to the primary.
struct Member {
    process: NodeProcess,
    /// While this node is a replica: the proxy it reaches its primary through.
    proxy: Option<FaultProxy>,
}

struct Run {
    members: Vec<Member>,
    primary: usize,
    /// One more at every promotion.
    term: u32,
    /// What each failover discarded.
    rollbacks: Vec<Rollback>,
    /// The node configuration without a role.
    base: NodeConfig,
    plugin: PluginFile,
    endpoints: Arc<Endpoints>,
    recorder: Recorder,
    prefix: PrefixObserver,
    last_observed: Instant,
    report: Report,
}

/// Run `events` against a fresh cluster and check everything; `log` gets a line per event.
pub fn run(options: &Options, events: &[Event], log: &mut dyn FnMut(String)) -> Report {
    let started = Instant::now();
    let mut run = Run::start(options);
    let clients = Clients::start(&run.recorder, &run.endpoints, options.seed);
    for event in events {
        run.hold_until(started + event.at);
        log(format!(
            "{:>7.1}s  {} ({})",
            started.elapsed().as_secs_f64(),
            event.fault,
            run.describe(event.fault)
        ));
        run.inject(event.fault, &clients);
        *run.report.faults.entry(event.fault.kind()).or_default() += 1;
    }
    run.hold_until(started + Duration::from_secs(options.seconds));
    log(format!(
        "{:>7.1}s  faults over: clients stop, nodes must converge",
        started.elapsed().as_secs_f64()
    ));
    clients.stop();
    run.finish();
    run.report.elapsed = started.elapsed();
    run.report
}

impl Run {
    fn start(options: &Options) -> Run {
        let plugin = PluginFile::install(&options.plugin_dir);
        let base = NodeConfig::default()
            .sync("always")
            .plugins(&plugin.section());
        let primary = NodeProcess::start("n0", base.clone());
        let mut members = vec![Member {
            process: primary,
            proxy: None,
        }];
        for name in ["n1", "n2"] {
            let proxy = proxy_to(&members[0].process);
            let config = base.clone().following(proxy.local_addr());
            members.push(Member {
                process: NodeProcess::start(name, config),
                proxy: Some(proxy),
            });
        }
        for member in &members[1..] {
            member.process.wait_streaming();
        }
        let prefix = PrefixObserver::new(members.len());
        let run = Run {
            members,
            primary: 0,
            term: 0,
            rollbacks: Vec::new(),
            base,
            plugin,
            endpoints: Arc::default(),
            recorder: Recorder::new(),
            prefix,
            last_observed: Instant::now(),
            report: Report::default(),
        };
        run.publish_endpoints();
        run
    }

    /// The replicas' indices, in node order.
    fn replicas(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| i != self.primary)
            .collect()
    }

    fn resolve(&self, target: Target) -> usize {
        match target {
            Target::Primary => self.primary,
            Target::Replica(i) => self.replicas()[i],
        }
    }

    fn describe(&self, fault: Fault) -> String {
        let node = |i: usize| self.members[i].process.name().to_owned();
        match fault {
            Fault::Kill { target, .. } | Fault::Pause { target, .. } => node(self.resolve(target)),
            Fault::Link { replica, .. } | Fault::Promote { replica } => {
                node(self.replicas()[replica])
            }
            Fault::Plugin { .. } => format!("{}", self.plugin.path().display()),
            Fault::Failover => node(self.primary),
        }
    }

    fn publish_endpoints(&self) {
        self.endpoints.set(
            self.term,
            self.members[self.primary].process.url(),
            self.replicas()
                .into_iter()
                .map(|i| self.members[i].process.url())
                .collect(),
        );
    }

    /// The configuration node `i` must start with in its current role (a restarted node
    /// takes its primary from its configuration before its `NODE` file).
    fn config_for(&self, i: usize) -> NodeConfig {
        match &self.members[i].proxy {
            Some(proxy) => self.base.clone().following(proxy.local_addr()),
            None => self.base.clone(),
        }
    }

    /// Observe the replicas until `deadline` (the fault in force stays in force).
    fn hold_until(&mut self, deadline: Instant) {
        loop {
            if self.last_observed.elapsed() >= OBSERVE_EVERY {
                self.observe();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Sleeping between scheduled events, not waiting for a condition.
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn hold(&mut self, held: Duration) {
        self.hold_until(Instant::now() + held);
    }

    fn inject(&mut self, fault: Fault, clients: &Clients) {
        match fault {
            Fault::Kill { target, down } => {
                let i = self.resolve(target);
                self.members[i].process.kill();
                self.hold(down);
                let config = self.config_for(i);
                self.members[i].process.restart_with(config);
                if i == self.primary {
                    self.checkpoint(clients);
                }
            }
            Fault::Pause { target, held } => {
                let i = self.resolve(target);
                self.members[i].process.pause();
                self.hold(held);
                self.members[i].process.resume();
            }
            Fault::Link {
                replica,
                link,
                held,
            } => {
                let i = self.replicas()[replica];
                let proxy = self.members[i].proxy.as_ref().expect("a replica's proxy");
                match link {
                    Link::Drop => proxy.drop_all(),
                    Link::Delay(by) => proxy.delay(by),
                    Link::Blackhole => proxy.blackhole(),
                    Link::Refuse => {
                        proxy.refuse();
                        proxy.drop_all();
                    }
                }
                self.hold(held);
                if let Some(proxy) = &self.members[i].proxy {
                    proxy.pass();
                }
            }
            Fault::Plugin { held } => {
                self.plugin.break_it();
                self.hold(held);
                let primary = &self.members[self.primary].process;
                let before = plugin::loaded_at(primary);
                self.plugin.rebuild();
                self.report.plugin_swaps += 1;
                // No oracle depends on it, but a swap the primary never loads is no swap.
                if plugin::reloaded(primary, before, PLUGIN_RELOAD_DEADLINE) {
                    self.report.plugin_reloads_confirmed += 1;
                } else {
                    eprintln!(
                        "warning: the primary did not load the replaced plugin within \
                         {PLUGIN_RELOAD_DEADLINE:?}"
                    );
                }
            }
            Fault::Promote { replica } => self.promote(self.replicas()[replica], clients),
            Fault::Failover => self.failover(clients),
        }
    }

    /// A switchover: with the clients paused, let `new` catch up with the primary, promote
    /// it, point the old primary and the other replica at it (through fresh proxies), and
    /// resume the clients on it.
    fn promote(&mut self, new: usize, clients: &Clients) {
        let _paused = clients.pause();
        let old = self.primary;
        let target = self.members[old].process.status().lsn;
        if let Err(why) = self.wait_applied(new, target) {
            self.anomaly(
                Oracle::Convergence,
                format!(
                    "{} did not catch up with its primary ({target}) within \
                     {CATCH_UP_DEADLINE:?} before a promotion, with no fault in force: {why}",
                    self.members[new].process.name()
                ),
            );
            return;
        }
        self.members[new].process.promote();
        self.repoint(new, None);
    }

    /// A failover: SIGKILL the primary, promote the most advanced replica as it is (it holds
    /// every write a replica confirmed), restart the old primary and point it and the other
    /// replica at the new one. The clients are paused from the promotion on.
    fn failover(&mut self, clients: &Clients) {
        let old = self.primary;
        self.members[old].process.kill();
        let _paused = clients.pause();
        let new = self
            .replicas()
            .into_iter()
            .max_by_key(|&i| self.members[i].process.status().lsn)
            .expect("two replicas");
        let promoted = self.members[new].process.promote();
        self.rollbacks.push(Rollback {
            term: self.term,
            after_lsn: promoted.lsn,
        });
        self.repoint(new, Some(old));
    }

    /// Make `new`, just promoted, the primary of the run: the other nodes follow it through
    /// fresh proxies (`restart` is started first, as a replica), the clients are told, and
    /// a checkpoint reads the state the new term starts from.
    fn repoint(&mut self, new: usize, restart: Option<usize>) {
        self.members[new].proxy = None;
        self.primary = new;
        for i in self.replicas() {
            let proxy = proxy_to(&self.members[new].process);
            let address = proxy.local_addr().to_string();
            self.members[i].proxy = Some(proxy);
            if restart == Some(i) {
                let config = self.config_for(i);
                self.members[i].process.restart_with(config);
            }
            // `Follow` rather than the configuration alone: an operator's order, which lets
            // the node replace a history the new primary does not have (a failed-over
            // primary's unreplicated tail) with a full resync.
            block_on(self.members[i].process.client().follow(&address)).unwrap_or_else(|e| {
                self.members[i]
                    .process
                    .fail(&format!("Follow {address} failed: {e}"))
            });
        }
        self.term += 1;
        self.prefix.reset();
        self.publish_endpoints();
        self.read_checkpoint();
    }

    fn wait_applied(&self, i: usize, lsn: u64) -> Result<(), String> {
        let deadline = Instant::now() + CATCH_UP_DEADLINE;
        loop {
            let applied = self.members[i].process.try_status().map(|s| s.lsn);
            match applied {
                Ok(applied) if applied >= lsn => return Ok(()),
                _ if Instant::now() >= deadline => return Err(format!("{applied:?}")),
                _ => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    /// With the clients paused, read every key from the primary (durability checkpoint).
    fn checkpoint(&mut self, clients: &Clients) {
        let _paused = clients.pause();
        self.read_checkpoint();
    }

    fn read_checkpoint(&mut self) {
        let keys = all_keys();
        let client = self.members[self.primary]
            .process
            .client_with_timeout(OBSERVE_TIMEOUT);
        let deadline = Instant::now() + CHECKPOINT_DEADLINE;
        let (call, results) = loop {
            let call = self.recorder.now();
            match block_on(client.multi_get(keys.clone())) {
                Ok(results) => break (call, results),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    // Not an anomaly of the data: the primary did not answer. (After a
                    // promotion, the new term's linearizability goes unchecked for want
                    // of a starting state.)
                    eprintln!("checkpoint skipped: MultiGet on the primary failed: {e}");
                    return;
                }
            }
        };
        let ret = self.recorder.now();
        for (key, got) in keys.into_iter().zip(results) {
            self.recorder.record(Op {
                client: u32::MAX,
                term: self.term,
                key,
                call,
                ret: Some(ret),
                action: Action::Read {
                    got: got.found.then_some(got.value),
                    on_primary: true,
                    checkpoint: true,
                },
            });
        }
        self.report.checkpoints += 1;
    }

    /// The prefix oracle, once for every replica.
    fn observe(&mut self) {
        self.last_observed = Instant::now();
        for i in self.replicas() {
            let replica = &self.members[i].process;
            let primary = &self.members[self.primary].process;
            // An error is a node down, paused or cut off: nothing to compare this time.
            if let Ok(Some(anomaly)) = self.prefix.observe(i, replica, primary, OBSERVE_TIMEOUT) {
                self.anomaly(anomaly.oracle, anomaly.detail);
            }
        }
        self.report.prefix_observations = self.prefix.observations;
        self.report.prefix_entries = self.prefix.entries;
    }

    fn anomaly(&mut self, oracle: Oracle, detail: String) {
        eprintln!("ANOMALY [{oracle}] {detail}");
        self.report.anomalies.push(Anomaly::new(oracle, detail));
    }

    /// After the schedule: convergence, a last checkpoint and observation, then the
    /// history's oracles.
    fn finish(&mut self) {
        let nodes: Vec<&NodeProcess> = self.members.iter().map(|m| &m.process).collect();
        if let Err(why) = try_converged(&nodes, CONVERGENCE_DEADLINE) {
            self.anomaly(
                Oracle::Convergence,
                format!("no convergence within {CONVERGENCE_DEADLINE:?}: {why}"),
            );
        }
        self.read_checkpoint();
        self.observe();
        let ops = self.recorder.ops();
        self.report.writes = ops.iter().filter(|op| op.is_write()).count();
        self.report.reads = ops.len() - self.report.writes;
        self.report.discarded = ops
            .iter()
            .filter(|op| self.rollbacks.iter().any(|r| r.discards(op)))
            .count();
        for op in &ops {
            match &op.action {
                Action::Write {
                    outcome: WriteOutcome::Acked { .. },
                    ..
                } => self.report.acked += 1,
                Action::Write {
                    outcome: WriteOutcome::Unknown,
                    ..
                } => self.report.unknown += 1,
                Action::Write {
                    outcome: WriteOutcome::Refused,
                    ..
                } => self.report.refused += 1,
                Action::Read { .. } => {}
            }
        }
        let mut found = checker::no_invention(&ops);
        found.extend(checker::durability(&ops, &self.rollbacks));
        let (lin, stats) = checker::linearizability(&ops, checker::SEARCH_BUDGET);
        found.extend(lin);
        self.report.linearizability = stats;
        for anomaly in found {
            self.anomaly(anomaly.oracle, anomaly.detail);
        }
        let denied_acked = ops.iter().any(|op| {
            op.key.starts_with(DENIED_PREFIX.as_bytes())
                && matches!(
                    &op.action,
                    Action::Write {
                        outcome: WriteOutcome::Acked { .. },
                        ..
                    }
                )
        });
        if denied_acked {
            self.anomaly(
                Oracle::NoInvention,
                "a write the validator must refuse was acknowledged".into(),
            );
        }
    }
}

fn proxy_to(primary: &NodeProcess) -> FaultProxy {
    FaultProxy::start(primary.socket_addr()).expect("start a fault proxy")
}
