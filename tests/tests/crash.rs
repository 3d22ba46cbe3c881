//! Crash tests with a real child process killed by SIGKILL at random points.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmkv::db::{Db, DbOptions};
use wasmkv::wal::SyncPolicy;
use wasmkv_tests::{ChildGuard, wait_for};

/// One acknowledged write, with the moment the parent saw the acknowledgement.
struct Ack {
    key: String,
    value: String,
    seen: Instant,
}

/// Start the writer, let it run until it has acknowledged some writes plus a random extra
/// moment, SIGKILL it, and return every acknowledgement it printed and the kill instant.
fn run_and_kill(
    dir: &Path,
    sync: &str,
    prefix: &str,
    rng: &mut fastrand::Rng,
) -> (Vec<Ack>, Instant) {
    let child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .args([dir.to_str().unwrap(), sync, "4", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start crash-writer");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let acks = Arc::clone(&acks);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split(' ');
                if parts.next() == Some("ack") {
                    let key = parts.next().unwrap().to_owned();
                    let value = parts.next().unwrap().to_owned();
                    acks.lock().unwrap().push(Ack {
                        key,
                        value,
                        seen: Instant::now(),
                    });
                }
            }
        })
    };
    let wanted = rng.usize(1..400);
    wait_for(
        "the writer's first acknowledgements",
        Duration::from_secs(60),
        || acks.lock().unwrap().len() >= wanted,
    );
    // The random point: a little more writing, so kills land mid-write, mid-fsync,
    // mid-rotation and mid-snapshot alike.
    std::thread::sleep(Duration::from_micros(rng.u64(0..30_000)));
    child.kill();
    let killed = Instant::now();
    reader.join().unwrap();
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    (acks, killed)
}

fn open(dir: &Path) -> Db {
    let mut opts = DbOptions::new(dir, SyncPolicy::Never);
    opts.disk_reserve = 0;
    Db::open(opts).expect("recovery after SIGKILL")
}

#[test]
fn sigkill_never_loses_an_acknowledged_write_with_sync_always() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut expected: HashMap<String, String> = HashMap::new();
    for round in 0..24 {
        let (acks, _) = run_and_kill(dir.path(), "always", &format!("r{round}"), &mut rng);
        assert!(!acks.is_empty());
        for ack in acks {
            expected.insert(ack.key, ack.value);
        }
        let db = open(dir.path());
        for (key, value) in &expected {
            let item = db
                .get(key.as_bytes())
                .unwrap_or_else(|| panic!("round {round}: acknowledged key {key} lost"));
            assert_eq!(item.value, value.as_bytes(), "round {round}: key {key}");
        }
        // Consistent: a second recovery of the same files gives the same data.
        let digest = db.digest();
        drop(db);
        let again = open(dir.path());
        assert_eq!(again.digest().digest, digest.digest, "round {round}");
        assert_eq!(again.applied_lsn(), digest.lsn, "round {round}");
    }
}

#[test]
fn with_sync_interval_the_loss_is_bounded_by_the_interval() {
    const INTERVAL: Duration = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(0xfeed);
    for round in 0..4 {
        let (acks, killed) = run_and_kill(
            dir.path(),
            &INTERVAL.as_millis().to_string(),
            &format!("r{round}"),
            &mut rng,
        );
        let db = open(dir.path());
        let lost: Vec<&Ack> = acks
            .iter()
            .filter(|a| {
                db.get(a.key.as_bytes())
                    .is_none_or(|i| i.value != a.value.as_bytes())
            })
            .collect();
        for ack in &lost {
            assert!(
                killed.duration_since(ack.seen) <= INTERVAL,
                "round {round}: {} was acknowledged {:?} before the kill and lost",
                ack.key,
                killed.duration_since(ack.seen)
            );
        }
    }
}
