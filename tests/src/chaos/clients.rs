//! The clients of a chaos run: threads writing and reading through the whole run, recording
//! every call in the [`Recorder`].
//!
//! Each writer owns its keys (no two writers write the same key), so a key's writes are
//! sequential and the durability oracle can tell which acknowledged write is the last; some
//! writes ask for `min_replicas: 1`, and a few go to keys the validator plugin refuses
//! (`deny:`). Readers read every key from the primary (the linearizability oracle checks
//! them), and one reads from the replicas (their answers may lag, but never invent).
//!
//! All of them go through one [`Gate`], so the runner can pause them with no call in flight
//! (for a promotion, or a checkpoint of the primary's data).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use wasmkv::api::Code;
use wasmkv::client::{Client, ClientError, SetOptions};

use super::history::{Action, Op, Recorder, WriteOutcome, unique_value};
use crate::cluster::{Gate, block_on};

const WRITERS: u32 = 3;
const KEYS_PER_WRITER: u32 = 12;
const PRIMARY_READERS: u32 = 2;
/// Every call's deadline: short, so that a paused or partitioned node turns into unknown
/// outcomes quickly instead of stalling the clients.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a failed call, before the next one (a back-off, not a wait for anything).
const BACKOFF: Duration = Duration::from_millis(20);
/// Keys under this prefix are refused by the validator (see the runner's plugin config).
pub const DENIED_PREFIX: &str = "deny:";

/// Where clients send their calls: the runner changes them when roles change (with the
/// clients paused).
#[derive(Default)]
pub struct Endpoints {
    /// The primary's term and address.
    primary: Mutex<(u32, String)>,
    replicas: Mutex<Vec<String>>,
}

impl Endpoints {
    pub fn set(&self, term: u32, primary: String, replicas: Vec<String>) {
        *self.primary.lock().unwrap_or_else(PoisonError::into_inner) = (term, primary);
        *self.replicas.lock().unwrap_or_else(PoisonError::into_inner) = replicas;
    }

    fn primary(&self) -> (u32, String) {
        self.primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replica(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        (!replicas.is_empty()).then(|| replicas[rng.usize(..replicas.len())].clone())
    }
}

/// Every key the clients use (the writers' keys and their refused twins).
pub fn all_keys() -> Vec<Bytes> {
    (0..WRITERS)
        .flat_map(|w| (0..KEYS_PER_WRITER).map(move |i| (w, i)))
        .flat_map(|(w, i)| [key(w, i, false), key(w, i, true)])
        .collect()
}

fn key(writer: u32, i: u32, denied: bool) -> Bytes {
    let prefix = if denied { DENIED_PREFIX } else { "" };
    Bytes::from(format!("{prefix}c{writer}k{i:02}"))
}

/// The running client threads.
pub struct Clients {
    gate: Arc<Gate>,
    threads: Vec<JoinHandle<()>>,
}

/// While this lives, no client call is in flight and none starts.
pub struct Paused<'a>(&'a Clients);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.gate.resume();
    }
}

impl Clients {
    /// Start the writers and readers; `seed` makes their choices (not their timing)
    /// repeatable.
    pub fn start(recorder: &Recorder, endpoints: &Arc<Endpoints>, seed: u64) -> Clients {
        let gate = Arc::new(Gate::default());
        let mut threads = Vec::new();
        let mut spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(body)
                    .expect("spawn a chaos client"),
            );
        };
        for w in 0..WRITERS {
            let mut client = Caller::new(w, recorder, endpoints, &gate, seed);
            spawn(
                format!("chaos-writer-{w}"),
                Box::new(move || client.write_loop()),
            );
        }
        for r in 0..=PRIMARY_READERS {
            let id = WRITERS + r;
            let mut client = Caller::new(id, recorder, endpoints, &gate, seed);
            let on_primary = r < PRIMARY_READERS;
            spawn(
                format!("chaos-reader-{r}"),
                Box::new(move || client.read_loop(on_primary)),
            );
        }
        Clients { gate, threads }
    }

    /// Pause every client until the guard is dropped; returns once no call is in flight.
    pub fn pause(&self) -> Paused<'_> {
        self.gate.pause();
        Paused(self)
    }

    /// Stop every client (calls in flight finish first).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.gate.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One client thread's state.
struct Caller {
    id: u32,
    recorder: Recorder,
    endpoints: Arc<Endpoints>,
    gate: Arc<Gate>,
    rng: fastrand::Rng,
    /// A client per node address, so connections are kept alive between calls.
    clients: HashMap<String, Client>,
}

impl Caller {
    fn new(
        id: u32,
        recorder: &Recorder,
        endpoints: &Arc<Endpoints>,
        gate: &Arc<Gate>,
        seed: u64,
    ) -> Caller {
        Caller {
            id,
            recorder: recorder.clone(),
            endpoints: Arc::clone(endpoints),
            gate: Arc::clone(gate),
            rng: fastrand::Rng::with_seed(seed ^ (u64::from(id) << 32)),
            clients: HashMap::new(),
        }
    }

    fn client(&mut self, address: &str) -> Client {
        self.clients
            .entry(address.to_owned())
            .or_insert_with(|| {
                Client::new(address)
                    .expect("a node address")
                    .with_timeout(CALL_TIMEOUT)
            })
            .clone()
    }

    /// Calls until stopped, each inside the gate; `one` returns false when its call failed.
    fn run(&mut self, mut one: impl FnMut(&mut Caller) -> bool) {
        while self.gate.enter() {
            let ok = one(self);
            self.gate.leave();
            if !ok {
                std::thread::sleep(BACKOFF);
            }
        }
    }

    fn write_loop(&mut self) {
        let mut seq = 0u64;
        self.run(|me| {
            seq += 1;
            me.write_one(seq)
        });
    }

    fn write_one(&mut self, seq: u64) -> bool {
        let denied = self.rng.u8(..100) < 5;
        let key = key(self.id, self.rng.u32(..KEYS_PER_WRITER), denied);
        let delete = !denied && self.rng.u8(..100) < 12;
        let min_replicas = u32::from(!delete && self.rng.u8(..100) < 20);
        let value = (!delete).then(|| unique_value(&key, self.id, seq, self.rng.usize(16..200)));
        let (term, primary) = self.endpoints.primary();
        let client = self.client(&primary);
        let call = self.recorder.now();
        let result = block_on(async {
            match &value {
                Some(value) => {
                    let options = SetOptions {
                        min_replicas,
                        ..SetOptions::default()
                    };
                    client.set(key.clone(), value.clone(), options).await
                }
                None => client.delete(key.clone()).await.map(|r| r.lsn),
            }
        });
        let now = self.recorder.now();
        let outcome = outcome(&result);
        self.recorder.record(Op {
            client: self.id,
            term,
            key,
            call,
            ret: (outcome != WriteOutcome::Unknown).then_some(now),
            action: Action::Write {
                value,
                min_replicas,
                outcome,
            },
        });
        result.is_ok()
    }

    fn read_loop(&mut self, on_primary: bool) {
        let keys = all_keys();
        self.run(|me| {
            let key = keys[me.rng.usize(..keys.len())].clone();
            let (term, primary) = me.endpoints.primary();
            let address = if on_primary {
                Some(primary)
            } else {
                me.endpoints.replica(&mut me.rng)
            };
            let Some(address) = address else {
                return false;
            };
            let client = me.client(&address);
            let call = me.recorder.now();
            let result = block_on(client.get(key.clone()));
            let ret = me.recorder.now();
            let Ok(got) = result else {
                return false;
            };
            me.recorder.record(Op {
                client: me.id,
                term,
                key,
                call,
                ret: Some(ret),
                action: Action::Read {
                    got: got.found.then_some(got.value),
                    on_primary,
                    checkpoint: false,
                },
            });
            true
        });
    }
}

/// What a write's result says about whether it was applied.
pub fn outcome(result: &Result<u64, ClientError>) -> WriteOutcome {
    match result {
        Ok(lsn) => WriteOutcome::Acked { lsn: *lsn },
        // Refusals that leave nothing behind: a validator's veto, a replica's "not the
        // primary", a malformed call. (`deadline_exceeded` from a `min_replicas` wait means
        // applied on the primary, so it is unknown like every other failure.)
        Err(ClientError::Rpc(e) | ClientError::NotPrimary { error: e, .. })
            if matches!(
                e.code,
                Code::PermissionDenied | Code::FailedPrecondition | Code::InvalidArgument
            ) =>
        {
            WriteOutcome::Refused
        }
        // Nothing was sent.
        Err(ClientError::Transport { source, .. })
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            WriteOutcome::Refused
        }
        Err(_) => WriteOutcome::Unknown,
    }
}
