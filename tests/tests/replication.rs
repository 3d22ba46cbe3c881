//! Replication (issue 5) with real processes: a primary and replicas as `wasmkv serve`
//! children, continuous writes, crashes, restarts, link faults, promotion, and the
//! consistency knobs. Each test checks data with digests (equal live data) and against a model
//! of every write the primary acknowledged. The harness is `wasmkv_tests::cluster`.
//!
//! Needs the `wasmkv` binary next to the test executable: `cargo test --workspace` builds it,
//! or `cargo build -p wasmkv --bin wasmkv` before `cargo test -p wasmkv-tests`.

use std::time::Duration;

use bytes::Bytes;
use wasmkv::api::Code;
use wasmkv::api::proto::{
    GetRequest, GetResponse, GetUpdatesRequest, GetUpdatesResponse, Mutation, Op, SetRequest,
    WriteRequest, WriteResponse,
};
use wasmkv::client::SetOptions;
use wasmkv_tests::cluster::{
    Cluster, KVSTORE, Model, NodeConfig, NodeProcess, Reader, SYNC_TIMEOUT, Writer, WriterOptions,
    assert_holds_for, block_on, bulk_load, converged, logs_of, now_ms, same_address, wait_until,
};
use wasmkv_tests::proxy::FaultProxy;

/// How long writes may take to make the progress a test waits for.
const PROGRESS: Duration = Duration::from_secs(60);

#[test]
fn a_primary_and_two_replicas_converge_under_continuous_writes() {
    let labels = ["zone=a,rack=1", "zone=b"];
    let cluster = Cluster::with_configs(
        NodeConfig::default(),
        labels.map(|l| NodeConfig::default().labels(l)).to_vec(),
    );
    let writer = Writer::start(&cluster.primary, WriterOptions::default(), Model::default());
    writer.wait_more(2000, PROGRESS);

    // Replicas serve reads while the writes go on, and what is written reaches them.
    let lsn = cluster.primary.set(b"marker", b"written mid-stream");
    for replica in &cluster.replicas {
        replica.wait_applied(lsn);
        let got = replica.get(b"marker");
        assert!(
            got.found && got.value == "written mid-stream" && got.version == lsn,
            "{}: {got:?}",
            replica.name()
        );
    }
    writer.wait_more(1000, PROGRESS);
    let model = writer.stop();

    let digest = cluster.converged(SYNC_TIMEOUT);
    assert!(digest.keys > 100, "too little data to compare: {digest:?}");
    for node in cluster.nodes() {
        model.assert_on(node); // MultiGet on the replicas
    }

    let primary_id = cluster.primary.status().replication_id;
    assert!(!primary_id.is_empty(), "a primary has a replication ID");
    let mut replica_ids = Vec::new();
    for replica in &cluster.replicas {
        replica.assert_refuses_writes(&cluster.primary.addr());
        let status = replica.status();
        assert_eq!(status.role, "replica", "{}", replica.name());
        assert_eq!(status.replication_id, primary_id, "{}", replica.name());
        assert!(
            !status.replica_id.is_empty(),
            "{}: no replica ID",
            replica.name()
        );
        let link = replica.link();
        assert!(
            same_address(&link.address, &cluster.primary.addr()),
            "{}: link {link:?}",
            replica.name()
        );
        assert_eq!(link.state, "streaming", "{}: {link:?}", replica.name());
        replica_ids.push(status.replica_id);
    }
    for (id, labels) in replica_ids.iter().zip(labels) {
        let entry = cluster
            .primary
            .wait_replica_entry(id, "acked everything", |r| {
                r.acked_lsn >= digest.lsn && r.lag_entries == 0
            });
        assert_eq!(entry.state, "streaming", "{entry:?}");
        let mut reported: Vec<String> = entry
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        reported.sort();
        let mut configured: Vec<&str> = labels.split(',').collect();
        configured.sort();
        assert_eq!(reported, configured, "labels of {entry:?}");
    }
    assert_eq!(
        cluster.primary.status().replicas.len(),
        2,
        "the primary lists its two replicas"
    );
}

#[test]
fn a_replica_killed_mid_stream_resumes_with_a_partial_resync_every_time() {
    let mut cluster = Cluster::start(1);
    let writer = Writer::start(&cluster.primary, WriterOptions::default(), Model::default());
    let Cluster { primary, replicas } = &mut cluster;
    let replica = &mut replicas[0];
    let id = replica.status().replica_id;
    for round in 1..=10 {
        writer.wait_more(150, PROGRESS);
        let before = primary
            .replica_entry(&id)
            .unwrap_or_else(|| primary.fail(&format!("no status entry for replica {id:?}")));
        replica.kill();
        writer.wait_more(150, PROGRESS);
        replica.restart();

        let link = replica.wait_partial_resync();
        eprintln!("round {round}: {link:?}");
        assert_eq!(
            replica.status().replica_id,
            id,
            "round {round}: a new identity"
        );
        primary.wait_replica_entry(&id, "one more partial resync", |r| {
            r.partial_syncs > before.partial_syncs
        });
        let entry = primary.replica_entry(&id).expect("just seen");
        assert_eq!(
            entry.full_syncs, before.full_syncs,
            "round {round}: the primary counted a full resync: {entry:?}"
        );
        // Streaming really resumed: the replica catches up with writes made since.
        replica.wait_applied(primary.status().lsn);
    }
    let model = writer.stop();
    cluster.converged(SYNC_TIMEOUT);
    model.assert_on(&cluster.replicas[0]);
}

#[test]
fn replicas_converge_after_their_link_is_cut_stalled_and_slowed() {
    // Enough backlog that no fault below can need a full resync.
    let mut cluster = Cluster::start_primary(NodeConfig::default().backlog_max("64MiB"));
    let proxy = FaultProxy::start(cluster.primary.socket_addr()).expect("start the proxy");
    cluster.add_replica(NodeConfig::replica_of(proxy.local_addr()));
    cluster.add_replica(NodeConfig::default());
    cluster.wait_streaming();
    let proxied = &cluster.replicas[0];
    let proxied_id = proxied.status().replica_id;
    // The counters count since the replica started, its first sync included.
    let initial = proxied.link();
    let writer = Writer::start(&cluster.primary, WriterOptions::default(), Model::default());

    // Cut: every connection reset; the replica must dial again.
    writer.wait_more(200, PROGRESS);
    let accepted = proxy.stats().accepted;
    proxy.drop_all();
    writer.wait_more(200, PROGRESS);
    wait_until(
        "the replica to reconnect through the proxy",
        SYNC_TIMEOUT,
        || {
            let stats = proxy.stats();
            (stats.accepted > accepted)
                .then_some(())
                .ok_or(format!("{stats:?}"))
        },
        || cluster.logs(),
    );
    cluster.converged_paused(&writer, SYNC_TIMEOUT);

    // Stall: nothing moves, nothing closes, for over two seconds of writes. A key that
    // expires meanwhile is deleted on the primary, and the delete cannot reach the replica:
    // the replica must hide it by its own clock.
    let expiring = Bytes::from_static(b"expires-during-the-stall");
    let ttl = SetOptions {
        ttl: Some(Duration::from_millis(500)),
        ..SetOptions::default()
    };
    let lsn = block_on(
        cluster
            .primary
            .client()
            .set(expiring.clone(), "soon gone", ttl),
    )
    .unwrap_or_else(|e| cluster.primary.fail(&format!("Set with a TTL: {e}")));
    proxied.wait_applied(lsn);
    assert!(
        proxied.get(&expiring).found,
        "the TTL'd key reached the replica"
    );
    proxy.blackhole();
    writer.wait_more(100, PROGRESS);
    cluster
        .primary
        .wait_replica_entry(&proxied_id, "no ack for 2 s", |r| r.last_ack_age_ms >= 2000);
    let stalled = proxied.status().lsn;
    assert!(
        stalled < writer.last_lsn(),
        "the replica kept up through a blackhole (at {stalled}, writer at {})",
        writer.last_lsn()
    );
    assert!(
        !cluster.primary.get(&expiring).found,
        "expired on the primary"
    );
    let got = proxied.get(&expiring);
    assert!(
        !got.found,
        "a replica returned a key expired by its clock ({} ms ago): {got:?}",
        now_ms().saturating_sub(got.expires_at_ms as u64)
    );
    proxy.pass();
    cluster.converged_paused(&writer, SYNC_TIMEOUT);

    // Slow: 50 ms each way on every chunk.
    proxy.delay(Duration::from_millis(50));
    writer.wait_more(300, PROGRESS);
    cluster.converged_paused(&writer, SYNC_TIMEOUT);
    proxy.pass();

    writer.wait_more(200, PROGRESS);
    let model = writer.stop();
    cluster.converged(SYNC_TIMEOUT);
    for node in cluster.nodes() {
        model.assert_on(node);
    }
    let link = cluster.replicas[0].link();
    assert_eq!(
        link.full_syncs, initial.full_syncs,
        "the primary held the log all along: first {initial:?}, now {link:?}"
    );
    assert!(
        link.partial_syncs > initial.partial_syncs,
        "it reconnected: first {initial:?}, now {link:?}"
    );
}

#[test]
fn a_replica_behind_a_trimmed_backlog_does_a_full_resync_without_read_gaps() {
    const KEYS: usize = 10_000;
    let small_log = NodeConfig::default()
        .max_file_size("64KiB")
        .snapshot_after("256KiB")
        .backlog_max("64KiB");
    let mut cluster = Cluster::start_primary(small_log);
    // Through a proxy, so the full resync can be slowed down enough to read during it.
    let proxy = FaultProxy::start(cluster.primary.socket_addr()).expect("start the proxy");
    cluster.add_replica(NodeConfig::replica_of(proxy.local_addr()));
    cluster.wait_streaming();
    let Cluster { primary, replicas } = &mut cluster;
    let replica = &mut replicas[0];

    let mut model = Model::default();
    bulk_load(primary, &mut model, "k", KEYS, 200);
    // Keys are never deleted in this test (no deletes, no TTLs): once there, always there.
    let existing = model.present_keys();
    let options = WriterOptions {
        prefix: "k".into(),
        keys: KEYS as u32,
        value_len: (100, 300),
        ..WriterOptions::sets_only()
    };
    let writer = Writer::start(primary, options, model);
    writer.wait_more(200, PROGRESS);
    let reader = Reader::start(replica, existing);
    replica.wait_applied(writer.last_lsn());
    let id = replica.status().replica_id;
    let before = primary
        .replica_entry(&id)
        .unwrap_or_else(|| primary.fail(&format!("no status entry for replica {id:?}")));

    replica.kill();
    // The replica applied at most what the primary has now; once the primary's log no longer
    // holds what follows this LSN, it no longer holds what the replica needs either.
    let applied = primary.status().lsn;
    wait_until(
        "the primary to trim the log the killed replica needs",
        SYNC_TIMEOUT,
        || {
            let updates: GetUpdatesResponse = primary
                .call(
                    &format!("{KVSTORE}/GetUpdates"),
                    &GetUpdatesRequest {
                        since_lsn: applied,
                        limit: 1,
                    },
                )
                .map_err(|e| e.to_string())?;
            if updates.snapshot_required {
                Ok(())
            } else {
                Err(format!(
                    "the log still holds LSN {}; writer at {}",
                    applied + 1,
                    writer.last_lsn()
                ))
            }
        },
        || primary.log_report(),
    );

    proxy.bandwidth(1 << 20);
    replica.restart();
    let at_restart = reader.found();
    let status = replica.wait_status("a full resync to begin", SYNC_TIMEOUT, |s| {
        s.primary.as_ref().is_some_and(|p| p.state == "full-sync")
    });
    eprintln!("full resync under way: {:?}", status.primary);
    let during = reader.found();
    let status = replica.wait_status("streaming after a full resync", SYNC_TIMEOUT, |s| {
        s.primary
            .as_ref()
            .is_some_and(|p| p.state == "streaming" && p.full_syncs >= 1)
    });
    let after = reader.found();
    proxy.pass();
    let link = status.primary.expect("checked by the wait");
    assert_eq!(link.full_syncs, 1, "{link:?}");
    primary.wait_replica_entry(&id, "one more full resync counted", |r| {
        r.full_syncs > before.full_syncs
    });

    let model = writer.stop();
    cluster.converged(SYNC_TIMEOUT);
    let report = reader.stop();
    eprintln!(
        "reader: {} found ({} after the restart, {} while the full resync ran), {} errors",
        report.found,
        report.found - at_restart,
        after - during,
        report.errors
    );
    assert!(
        report.not_found.is_empty(),
        "{} reads of keys that existed before and after found nothing during the full \
         resync, e.g. {:?}",
        report.not_found.len(),
        &report.not_found[..report.not_found.len().min(5)]
    );
    assert!(
        after > during,
        "no read was served while the full resync ran"
    );
    model.assert_on(&cluster.replicas[0]);
}

#[test]
fn after_a_primary_crash_with_sync_always_replicas_resume_and_no_acknowledged_write_is_lost() {
    let mut cluster = Cluster::with_configs(
        NodeConfig::default().sync("always"),
        vec![NodeConfig::default(); 2],
    );
    let writer = Writer::start(&cluster.primary, WriterOptions::default(), Model::default());
    writer.wait_more(500, PROGRESS);
    let before: Vec<_> = cluster.replicas.iter().map(NodeProcess::link).collect();

    cluster.primary.kill();
    let model = writer.stop();
    cluster.primary.restart();
    // Every write acknowledged before the kill survived it on the primary...
    model.assert_on(&cluster.primary);
    // ...the replicas pick up where they were...
    for (replica, before) in cluster.replicas.iter().zip(&before) {
        replica.wait_partial_resync_since(before);
    }
    // ...and hold every acknowledged write too.
    cluster.converged(SYNC_TIMEOUT);
    for replica in &cluster.replicas {
        model.assert_on(replica);
    }

    // Replication goes on with the restarted primary.
    let writer = Writer::start(&cluster.primary, WriterOptions::default(), model);
    writer.wait_more(300, PROGRESS);
    let model = writer.stop();
    cluster.converged(SYNC_TIMEOUT);
    for node in cluster.nodes() {
        model.assert_on(node);
    }
}

#[test]
fn a_promoted_replica_is_followed_by_the_others_after_partial_resyncs() {
    let mut cluster = Cluster::start(2);
    // No TTLs before the switch: the old primary must write nothing once the writer stopped
    // (an expiry it logs after the others converged is history the new primary never had,
    // and rightly forces a full resync on the old primary).
    let quiet = WriterOptions {
        ttls: false,
        ..WriterOptions::default()
    };
    let writer = Writer::start(&cluster.primary, quiet, Model::default());
    writer.wait_more(500, PROGRESS);
    let model = writer.stop();
    let shared = cluster.converged(SYNC_TIMEOUT);
    let old_id = cluster.primary.status().replication_id;

    let Cluster {
        primary: old,
        replicas,
    } = &mut cluster;
    let [new, other] = &mut replicas[..] else {
        unreachable!("two replicas")
    };
    old.stop();
    let promoted = new.promote();
    assert!(
        !promoted.replication_id.is_empty() && promoted.replication_id != old_id,
        "a promotion starts a new history: {promoted:?} (old {old_id:?})"
    );
    assert_eq!(promoted.secondary_replication_id, old_id, "{promoted:?}");
    assert_eq!(
        promoted.lsn, shared.lsn,
        "the shared history ends where all converged"
    );
    let status = new.wait_status("the role primary", SYNC_TIMEOUT, |s| s.role == "primary");
    assert_eq!(status.replication_id, promoted.replication_id, "{status:?}");
    assert_eq!(status.secondary_replication_id, old_id, "{status:?}");

    // The new primary takes writes while the others are pointed at it.
    let writer = Writer::start(new, WriterOptions::default(), model);
    writer.wait_more(200, PROGRESS);
    other.restart_with(other.config().clone().following(new.addr()));
    old.restart_with(old.config().clone().following(new.addr()));
    for node in [&*other, &*old] {
        node.wait_partial_resync();
        let id = node.status().replica_id;
        let entry =
            new.wait_replica_entry(&id, "a partial resync counted", |r| r.partial_syncs >= 1);
        assert_eq!(entry.full_syncs, 0, "{}: {entry:?}", node.name());
    }
    old.assert_refuses_writes(&new.addr());

    writer.wait_more(200, PROGRESS);
    let model = writer.stop();
    let nodes = [&*new, &*other, &*old];
    converged(&nodes, SYNC_TIMEOUT);
    for node in nodes {
        model.assert_on(node);
    }
}

#[test]
fn min_replicas_waits_for_replica_acks_and_min_lsn_for_the_replica_to_catch_up() {
    let mut cluster = Cluster::start(2);
    let primary = cluster.primary.client();

    // Both replicas up: the write returns once both applied it.
    let both = SetOptions {
        min_replicas: 2,
        ..SetOptions::default()
    };
    let lsn = block_on(primary.set("acked-by-two", "set", both))
        .unwrap_or_else(|e| cluster.primary.fail(&format!("Set min_replicas 2: {e}")));
    let write: WriteResponse = cluster
        .primary
        .call(
            &format!("{KVSTORE}/Write"),
            &WriteRequest {
                mutations: vec![Mutation {
                    op: Op::Set as i32,
                    key: Bytes::from_static(b"acked-by-two-batch"),
                    value: Bytes::from_static(b"write"),
                    ttl_ms: 0,
                }],
                min_replicas: 2,
            },
        )
        .unwrap_or_else(|e| cluster.primary.fail(&format!("Write min_replicas 2: {e}")));
    for replica in &cluster.replicas {
        let status = replica.status();
        assert!(
            status.lsn >= write.lsn && write.lsn > lsn,
            "{}: at LSN {} right after Set (LSN {lsn}) and Write (LSN {}) with min_replicas 2",
            replica.name(),
            status.lsn,
            write.lsn
        );
        assert_eq!(replica.get(b"acked-by-two").value, "set");
        assert_eq!(replica.get(b"acked-by-two-batch").value, "write");
    }

    // min_lsn: a replica answers once it applied the LSN...
    let replica = &cluster.replicas[0];
    let lsn = cluster.primary.set(b"read-your-writes", b"new value");
    let get = |min_lsn: u64, deadline: Duration| {
        replica.raw_call(
            &format!("{KVSTORE}/Get"),
            &GetRequest {
                key: Bytes::from_static(b"read-your-writes"),
                min_lsn,
            },
            Some(deadline),
        )
    };
    let got: GetResponse = get(lsn, Duration::from_secs(10)).decode();
    assert!(
        got.found && got.value == "new value" && got.version == lsn,
        "Get with min_lsn {lsn}: {got:?}"
    );
    // ...or says it cannot within the deadline.
    let deadline = Duration::from_millis(300);
    let reply = get(lsn + 1_000_000, deadline);
    let error = reply.expect_error(Code::Unavailable);
    assert!(
        reply.elapsed >= deadline / 2 && reply.elapsed < deadline + Duration::from_secs(3),
        "answered after {:?} with a {deadline:?} deadline: {error}",
        reply.elapsed
    );

    // One replica down: min_replicas 2 cannot be met, the write stays on the primary.
    cluster.replicas[1].stop();
    let deadline = Duration::from_millis(500);
    let reply = cluster.primary.raw_call(
        &format!("{KVSTORE}/Set"),
        &SetRequest {
            key: Bytes::from_static(b"acked-by-one"),
            value: Bytes::from_static(b"still written"),
            min_replicas: 2,
            ..SetRequest::default()
        },
        Some(deadline),
    );
    let error = reply.expect_error(Code::DeadlineExceeded);
    let message = error.message.to_lowercase();
    assert!(
        message.contains("applied") && message.contains("primary") && message.contains("replica"),
        "the error does not say the write is applied on the primary but not confirmed: {error}"
    );
    assert!(
        reply.elapsed >= deadline / 2 && reply.elapsed < deadline + Duration::from_secs(3),
        "answered after {:?} with a {deadline:?} deadline",
        reply.elapsed
    );
    let got = cluster.primary.get(b"acked-by-one");
    assert!(
        got.found && got.value == "still written",
        "a write that timed out waiting for replicas was rolled back: {got:?}"
    );

    // The replica that was down gets it after a restart.
    cluster.replicas[1].restart();
    cluster.wait_streaming();
    cluster.converged(SYNC_TIMEOUT);
    assert_eq!(
        cluster.replicas[1].get(b"acked-by-one").value,
        "still written"
    );
}

#[test]
fn a_replica_refuses_a_primary_that_came_back_empty_unless_allowed() {
    let mut cluster = Cluster::with_configs(
        NodeConfig::default(),
        vec![
            NodeConfig::default(),
            NodeConfig::default().allow_full_resync_from_empty(true),
        ],
    );
    let mut model = Model::default();
    bulk_load(&cluster.primary, &mut model, "e", 500, 64);
    let before = cluster.converged(SYNC_TIMEOUT);

    cluster.primary.stop();
    cluster.primary.wipe_data();
    cluster.primary.restart();
    let Cluster { primary, replicas } = &mut cluster;
    let [strict, allowing] = &mut replicas[..] else {
        unreachable!("two replicas")
    };

    // The replica told to accept it follows the empty primary and becomes empty...
    let digest = converged(&[&*primary, &*allowing], SYNC_TIMEOUT);
    assert_eq!(digest.keys, 0, "{digest:?}");
    // ...the other refuses and keeps its data.
    let status = strict.wait_status("the empty primary refused", SYNC_TIMEOUT, |s| {
        s.primary.as_ref().is_some_and(|p| p.state == "refused")
    });
    let link = status.primary.expect("checked by the wait");
    assert!(
        link.last_error.to_lowercase().contains("empty"),
        "last_error does not say why: {link:?}"
    );
    assert_eq!(strict.digest(), before);
    model.assert_on(strict);

    // New writes reach the follower. The refuser goes on refusing: the primary is no longer
    // empty, but it is still the wiped one, and following it would still wipe the replica.
    primary.set(b"after-wipe", b"new history");
    let digest = converged(&[&*primary, &*allowing], SYNC_TIMEOUT);
    assert_eq!(digest.keys, 1, "{digest:?}");
    assert_holds_for(
        "the replica to keep refusing the wiped primary, and its data",
        Duration::from_secs(2),
        || {
            // Between two refusals it may be dialling again, never syncing.
            let link = strict.link();
            if !matches!(link.state.as_str(), "refused" | "connecting") {
                return Err(format!("its link is {link:?}"));
            }
            let now = strict.digest();
            (now == before)
                .then_some(())
                .ok_or(format!("its data changed: {now:?}, before {before:?}"))
        },
        || logs_of(&[&*primary, &*strict]),
    );
    strict.wait_status("the wiped primary still refused", SYNC_TIMEOUT, |s| {
        s.primary.as_ref().is_some_and(|p| p.state == "refused")
    });

    // Told so on the command line, the refuser follows as well.
    strict.restart_with(
        strict
            .config()
            .clone()
            .arg("--allow-full-resync-from-empty"),
    );
    let digest = converged(&[&*primary, &*strict], SYNC_TIMEOUT);
    assert_eq!(digest.keys, 1, "{digest:?}");
    assert_eq!(strict.get(b"after-wipe").value, "new history");
}

#[test]
fn add_replica_makes_a_node_follow_for_good_and_remove_replica_sets_it_free() {
    let a = NodeProcess::start("a", NodeConfig::default());
    let mut b = NodeProcess::start("b", NodeConfig::default());
    let mut model = Model::default();
    bulk_load(&a, &mut model, "a", 300, 64);
    bulk_load(&b, &mut Model::default(), "b", 100, 64);

    a.add_replica(&b.addr());
    let status = b.wait_streaming();
    let link = status.primary.expect("checked by the wait");
    assert!(same_address(&link.address, &a.addr()), "{link:?}");
    // B's own data is replaced by A's.
    converged(&[&a, &b], SYNC_TIMEOUT);
    model.assert_on(&b);
    let b_addr = b.addr();
    let listed = |a: &NodeProcess| {
        a.status()
            .replicas
            .iter()
            .any(|r| same_address(&r.address, &b_addr))
    };
    wait_until(
        "A to list B as its replica",
        SYNC_TIMEOUT,
        || listed(&a).then_some(()).ok_or(format!("{:?}", a.status())),
        || logs_of(&[&a, &b]),
    );

    // B keeps following A after a restart, though its config names no primary.
    assert!(b.config().primary.is_none());
    b.restart();
    let status = b.wait_streaming();
    let link = status.primary.expect("checked by the wait");
    assert!(same_address(&link.address, &a.addr()), "{link:?}");
    a.set(b"after-restart", b"replicated");
    converged(&[&a, &b], SYNC_TIMEOUT);
    b.assert_refuses_writes(&a.addr());

    // Removed, B is a primary of its own that keeps its data and takes writes.
    a.remove_replica(&b.addr());
    b.wait_status("the role primary", SYNC_TIMEOUT, |s| s.role == "primary");
    assert_eq!(b.digest().digest, a.digest().digest, "B kept A's data");
    b.set(b"b-own", b"written on b");
    wait_until(
        "A to forget B",
        SYNC_TIMEOUT,
        || {
            (!listed(&a))
                .then_some(())
                .ok_or(format!("{:?}", a.status()))
        },
        || logs_of(&[&a, &b]),
    );
    b.restart();
    assert_eq!(
        b.status().role,
        "primary",
        "B follows A again after a restart"
    );
    assert_eq!(b.get(b"b-own").value, "written on b");
    assert_eq!(b.get(b"after-restart").value, "replicated");
}
