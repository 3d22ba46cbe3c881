//! TLS, tokens and abuse limits, on real node processes: certificates made here by a
//! throwaway CA, tokens made by `wasmkv token new`, raw sockets for the slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use wasmkv::api::Code;
use wasmkv::api::proto::{
    AckRequest, AckResponse, GetRequest, GetResponse, MultiGetRequest, SetRequest, SnapshotRequest,
    SnapshotResponse, StatusRequest,
};
use wasmkv::auth::Secret;
use wasmkv::client::{Client, ClientError, ClientOptions};
use wasmkv::tls::ClientTls;
use wasmkv_tests::cluster::{NodeConfig, NodeProcess, block_on, wait_until, wasmkv_binary};
use wasmkv_tests::pki::Pki;

const GET: &str = "kvstore.v1.KVStore/Get";
const SET: &str = "kvstore.v1.KVStore/Set";
const SNAPSHOT: &str = "kvstore.v1.Admin/Snapshot";
const STATUS: &str = "kvstore.v1.Admin/Status";
const ACK: &str = "kvstore.v1.Replication/Ack";

fn tls_to(pki: &Pki) -> ClientTls {
    ClientTls {
        ca: Some(pki.ca.clone()),
        ..ClientTls::default()
    }
}

fn server_tls(pki: &Pki, client_ca: Option<&Path>) -> Vec<String> {
    let mut lines = vec![
        "tls:".to_owned(),
        format!("  cert: {:?}", pki.server_cert.display().to_string()),
        format!("  key: {:?}", pki.server_key.display().to_string()),
    ];
    if let Some(ca) = client_ca {
        lines.push(format!("  client_ca: {:?}", ca.display().to_string()));
    }
    lines
}

fn lines(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// A token of `role` made by the CLI: (token, its `auth.tokens` entry).
fn new_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(wasmkv_binary())
        .args(["token", "new", "--role", role, "--name", name])
        .output()
        .expect("run wasmkv token new");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().expect("the token line").to_owned();
    let entry = lines.next().expect("the entry line").to_owned();
    assert!(
        entry.starts_with("- {") && !entry.contains(&token),
        "{entry}"
    );
    (token, entry)
}

fn client(node: &NodeProcess, tls: Option<ClientTls>, token: Option<&str>) -> Client {
    let options = ClientOptions {
        tls,
        token: token.map(|t| Secret::new(t.to_owned())),
    };
    Client::with_options(&node.addr(), &options)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
}

fn set_request(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        ..SetRequest::default()
    }
}

fn get_request(key: &str) -> GetRequest {
    GetRequest {
        key: Bytes::from(key.to_owned()),
        ..GetRequest::default()
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Option<Code> {
    result.err().and_then(|e| e.code())
}

#[test]
fn tls_serves_http1_and_http2_and_answers_plaintext_clearly() {
    let pki = Pki::new();
    let node = NodeProcess::start(
        "tls",
        NodeConfig::default()
            .yaml_in("server", &lines(&server_tls(&pki, None)))
            .client_options(ClientOptions {
                tls: Some(tls_to(&pki)),
                token: None,
            }),
    );
    assert!(node.url().starts_with("https://"));

    // HTTP/1.1 over TLS through the client.
    let c = client(&node, Some(tls_to(&pki)), None);
    block_on(c.set("k", "v", Default::default())).unwrap();
    assert_eq!(&block_on(c.get("k")).unwrap().value[..], b"v");

    // HTTP/2 when the client offers it by ALPN.
    let (version, body) = block_on(h2_json_call(
        &pki,
        node.socket_addr(),
        GET,
        r#"{"key":"aw=="}"#,
    ));
    assert_eq!(version, http::Version::HTTP_2);
    assert!(body.contains(r#""value":"dg==""#), "{body}");

    // The CLI with --ca, an address without a scheme meaning https.
    let out = Command::new(wasmkv_binary())
        .args(["get", "k", "--addr", &node.addr(), "--ca"])
        .arg(&pki.ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"v\n");

    // Plain HTTP to the TLS port: an answer saying so, not a hang or a reset.
    let plain = Client::new(&format!("http://{}", node.addr())).unwrap();
    let err = block_on(plain.get("k")).unwrap_err();
    assert!(err.to_string().contains("this port serves TLS"), "{err}");

    // A CA that did not sign the node's certificate: refused by the client, clearly.
    let strangers = ClientTls {
        ca: Some(pki.other_ca.clone()),
        ..ClientTls::default()
    };
    let err = block_on(client(&node, Some(strangers), None).get("k")).unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // A name the certificate does not carry is refused; the right one is accepted.
    let named = |name: &str| ClientTls {
        server_name: Some(name.into()),
        ..tls_to(&pki)
    };
    let err = block_on(client(&node, Some(named("db.example")), None).get("k")).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    block_on(client(&node, Some(named("localhost")), None).get("k")).unwrap();
}

/// POST `json` to `path` over TLS offering only HTTP/2; the version and body of the answer.
async fn h2_json_call(
    pki: &Pki,
    addr: std::net::SocketAddr,
    path: &str,
    json: &str,
) -> (http::Version, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("https://localhost/{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let version = response.version();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_its_ca() {
    let pki = Pki::new();
    let with_cert = |cert: &Path, key: &Path| ClientTls {
        cert: Some(cert.to_owned()),
        key: Some(key.to_owned()),
        ..tls_to(&pki)
    };
    let good = with_cert(&pki.client_cert, &pki.client_key);
    let node = NodeProcess::start(
        "mtls",
        NodeConfig::default()
            .yaml_in("server", &lines(&server_tls(&pki, Some(&pki.ca))))
            .client_options(ClientOptions {
                tls: Some(good.clone()),
                token: None,
            }),
    );
    block_on(client(&node, Some(good), None).set("k", "v", Default::default())).unwrap();

    let no_cert = block_on(client(&node, Some(tls_to(&pki)), None).get("k")).unwrap_err();
    assert_eq!(no_cert.code(), Some(Code::Unavailable), "{no_cert}");
    let outsider = with_cert(&pki.other_client_cert, &pki.other_client_key);
    let stranger = block_on(client(&node, Some(outsider), None).get("k")).unwrap_err();
    assert_eq!(stranger.code(), Some(Code::Unavailable), "{stranger}");
}

#[test]
fn every_role_against_every_rpc_class() {
    let tokens: Vec<(&str, String, String)> = ["read", "write", "admin", "replication"]
        .into_iter()
        .map(|role| {
            let (token, entry) = new_token(role, &format!("{role}-app"));
            (role, token, entry)
        })
        .collect();
    let entries: Vec<String> = std::iter::once("tokens:".to_owned())
        .chain(tokens.iter().map(|(_, _, entry)| format!("  {entry}")))
        .collect();
    let admin = tokens[2].1.clone();
    let node = NodeProcess::start(
        "roles",
        NodeConfig::default()
            .yaml_in("auth", &lines(&entries))
            .client_options(ClientOptions {
                tls: None,
                token: Some(Secret::new(admin.clone())),
            }),
    );

    // What each class of call answers for each caller: None = allowed.
    let calls = |c: &Client| -> [Option<Code>; 5] {
        [
            code_of(block_on(c.call::<_, GetResponse>(GET, &get_request("k")))),
            code_of(block_on(c.call::<_, wasmkv::api::proto::StatusResponse>(
                STATUS,
                &StatusRequest::default(),
            ))),
            code_of(block_on(c.call::<_, wasmkv::api::proto::SetResponse>(
                SET,
                &set_request("k", "v"),
            ))),
            code_of(block_on(c.call::<_, SnapshotResponse>(
                SNAPSHOT,
                &SnapshotRequest::default(),
            ))),
            code_of(block_on(
                c.call::<_, AckResponse>(ACK, &AckRequest::default()),
            )),
        ]
    };
    let deny = Some(Code::PermissionDenied);
    let who = Some(Code::Unauthenticated);
    let expected = [
        ("read", [None, None, deny, deny, deny]),
        ("write", [None, None, None, deny, deny]),
        ("admin", [None, None, None, None, None]),
        ("replication", [deny, deny, deny, deny, None]),
    ];
    for ((role, token, _), (want_role, want)) in tokens.iter().zip(expected) {
        assert_eq!(*role, want_role);
        assert_eq!(
            calls(&client(&node, None, Some(token))),
            want,
            "role {role}"
        );
    }
    assert_eq!(calls(&client(&node, None, None)), [who; 5], "no token");
    assert_eq!(
        calls(&client(&node, None, Some("wkv_not-a-real-token"))),
        [who; 5],
        "an unknown token"
    );

    // The refusal says what is needed, never the token.
    let read = &tokens[0].1;
    let err = block_on(client(&node, None, Some(read)).set("k", "v", Default::default()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"read-app\" has the role read; Set needs write or admin"),
        "{err}"
    );
    assert!(!err.contains(read.as_str()));

    // The REST routes need the same roles; health stays open, metrics are open by default
    // and count the refusals.
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let rest = |method: http::Method, headers| {
        node.raw_request(method, "/v1/kv/r", headers, Bytes::from_static(b"x"))
            .status
    };
    assert_eq!(rest(http::Method::PUT, bearer(read)), 403);
    assert_eq!(rest(http::Method::PUT, Vec::new()), 401);
    assert_eq!(rest(http::Method::PUT, bearer(&tokens[1].1)), 200);
    assert_eq!(rest(http::Method::GET, bearer(read)), 200);
    assert_eq!(rest(http::Method::GET, Vec::new()), 401);
    assert_eq!(
        node.raw_request(http::Method::GET, "/healthz", Vec::new(), Bytes::new())
            .status,
        200
    );
    let metrics = node.raw_request(http::Method::GET, "/metrics", Vec::new(), Bytes::new());
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    for reason in ["missing", "invalid", "forbidden"] {
        assert!(
            text.contains(&format!(
                "wasmkv_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {text}"
        );
    }

    // No token ever reaches the node's log.
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    for (role, token, _) in &tokens {
        assert!(
            !log.contains(token.as_str()),
            "the {role} token is in the log"
        );
    }
}

#[test]
fn protected_metrics_need_a_token_and_tokens_reload_on_sighup() {
    let (old, old_entry) = new_token("read", "old");
    let (new, new_entry) = new_token("read", "new");
    let node = NodeProcess::start(
        "metrics",
        NodeConfig::default()
            .yaml_in(
                "auth",
                &[
                    "protect_metrics: true",
                    "tokens:",
                    &format!("  {old_entry}"),
                ],
            )
            .client_options(ClientOptions {
                tls: None,
                token: Some(Secret::new(old.clone())),
            }),
    );
    let metrics = |token: Option<&str>| {
        let headers = token
            .map(|t| vec![("authorization", format!("Bearer {t}"))])
            .unwrap_or_default();
        node.raw_request(http::Method::GET, "/metrics", headers, Bytes::new())
            .status
    };
    assert_eq!(metrics(None), 401);
    assert_eq!(metrics(Some(&old)), 200);

    // Rotate: the config now names only the new token; SIGHUP applies it.
    let config_path = node.config_path();
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        config.contains(&old_entry),
        "the harness writes node.yaml: {config}"
    );
    std::fs::write(&config_path, config.replace(&old_entry, &new_entry)).unwrap();
    node.signal(rustix::process::Signal::HUP);
    wait_until(
        "the new token admitted and the old one refused",
        Duration::from_secs(10),
        || match (metrics(Some(&new)), metrics(Some(&old))) {
            (200, 401) => Ok(()),
            other => Err(format!("{other:?}")),
        },
        || node.log_report(),
    );
}

#[test]
fn a_replica_presents_its_token_over_tls_and_a_wrong_one_is_refused_with_the_reason() {
    let pki = Pki::new();
    let (admin, admin_entry) = new_token("admin", "ops");
    let (replication, replication_entry) = new_token("replication", "replicas");
    let (reader, reader_entry) = new_token("read", "dashboards");
    let primary = NodeProcess::start(
        "primary",
        NodeConfig::default()
            .yaml_in("server", &lines(&server_tls(&pki, None)))
            .yaml_in(
                "auth",
                &[
                    "tokens:",
                    &format!("  {admin_entry}"),
                    &format!("  {replication_entry}"),
                    &format!("  {reader_entry}"),
                ],
            )
            .client_options(ClientOptions {
                tls: Some(tls_to(&pki)),
                token: Some(Secret::new(admin.clone())),
            }),
    );
    block_on(primary.client().set("before", "1", Default::default())).unwrap();

    // A replica whose token may read but not replicate.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("replication.token");
    std::fs::write(&token_file, format!("{reader}\n")).unwrap();
    let link = [
        "tls:".to_owned(),
        format!("  ca: {:?}", pki.ca.display().to_string()),
        format!("token_file: {:?}", token_file.display().to_string()),
    ];
    let replica_config = NodeConfig::replica_of(format!("https://{}", primary.addr()))
        .yaml_in("replication", &lines(&link));
    let mut replica = NodeProcess::start("replica", replica_config);
    let status = replica.wait_status(
        "the primary's refusal shown on the link",
        Duration::from_secs(20),
        |s| {
            s.primary
                .as_ref()
                .is_some_and(|p| p.last_error.contains("permission_denied"))
        },
    );
    let reason = status.primary.unwrap().last_error;
    assert!(
        reason.contains("has the role read; Subscribe needs replication or admin"),
        "{reason}"
    );
    assert!(!reason.contains(&reader));

    // The right token: the replica catches up and follows.
    std::fs::write(&token_file, &replication).unwrap();
    replica.restart();
    block_on(primary.client().set("after", "2", Default::default())).unwrap();
    wait_until(
        "the replica has both keys",
        Duration::from_secs(20),
        || match block_on(replica.client().get("after")) {
            Ok(got) if got.found => Ok(()),
            other => Err(format!("{other:?}")),
        },
        || replica.log_report(),
    );
    assert!(block_on(replica.client().get("before")).unwrap().found);

    // AddReplica: the primary presents the caller's admin token to the new node, which
    // then follows over TLS with its own replication token. A reader may not add one.
    let joiner = NodeProcess::start(
        "joiner",
        NodeConfig::default()
            .yaml_in("replication", &lines(&link))
            .yaml_in("auth", &["tokens:", &format!("  {admin_entry}")])
            .client_options(ClientOptions {
                tls: None,
                token: Some(Secret::new(admin.clone())),
            }),
    );
    let as_reader = client(&primary, Some(tls_to(&pki)), Some(&reader));
    let err = block_on(as_reader.add_replica(&joiner.addr())).unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    block_on(primary.client().add_replica(&joiner.addr())).unwrap();
    wait_until(
        "the added node has the primary's keys",
        Duration::from_secs(20),
        || match block_on(joiner.client().get("after")) {
            Ok(got) if got.found => Ok(()),
            other => Err(format!("{other:?}")),
        },
        || joiner.log_report(),
    );
}

#[test]
fn slow_clients_are_cut_off_while_others_are_served() {
    let node = NodeProcess::start(
        "slowloris",
        NodeConfig::default().yaml_in(
            "limits",
            &["header_read_timeout: 1s", "body_read_timeout: 1s"],
        ),
    );
    let addr = node.socket_addr();

    // Headers dribbled a byte at a time, and a connection that says nothing.
    let mut dribbler = TcpStream::connect(addr).unwrap();
    let silent = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let request = b"POST /kvstore.v1.KVStore/Get HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_after = None;
    for byte in request {
        if dribbler.write_all(&[*byte]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        // Meanwhile another client is served as usual. (A fresh client each time: the
        // node closes a kept-alive connection idle for longer than header_read_timeout, and
        // reusing one just as it closes is a client's race, not the node's refusal.)
        let other = Client::new(&node.addr()).unwrap();
        block_on(other.set("k", "v", Default::default())).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_after = cut_after.unwrap_or_else(|| {
        closed_within(&mut dribbler, Duration::from_secs(5));
        started.elapsed()
    });
    assert!(
        cut_after < Duration::from_secs(5),
        "cut after {cut_after:?}"
    );
    let mut silent = silent;
    closed_within(&mut silent, Duration::from_secs(5));

    // Headers in time, then a body that stalls: an answer saying which limit, not a hang.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(
            b"POST /kvstore.v1.KVStore/Get HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"key\":",
        )
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stalled.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("limits.body_read_timeout"), "{answer}");

    let metrics = node.raw_request(http::Method::GET, "/metrics", Vec::new(), Bytes::new());
    let text = String::from_utf8_lossy(&metrics.body);
    for limit in ["header_read_timeout", "body_read_timeout"] {
        assert!(
            text.contains(&format!("wasmkv_limit_refusals_total{{limit=\"{limit}\"}}")),
            "{limit}: {text}"
        );
    }
}

/// Wait for the node to close `stream` (EOF or a reset), failing after `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {} // An error answer before closing is fine.
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the connection was still open after {within:?}")
            }
            Err(_) => return, // Reset.
        }
    }
}

#[test]
fn connection_and_batch_limits_answer_with_resource_exhausted() {
    let node = NodeProcess::start(
        "limits",
        NodeConfig::default().yaml_in("limits", &["max_connections: 3", "max_batch_keys: 4"]),
    );
    // Three kept-alive connections, each served one request (so surely accepted and
    // counted), hold every slot. A connection closed just before (the harness's pooled one
    // from waiting for readiness, closed after 5 s idle) frees its slot only once the node
    // has seen it close, so a refusal here means "not yet": try again until the deadline.
    // With fewer than three slots the third never gets one and the wait fails.
    let held: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut held = None;
            wait_until(
                &format!("connection {} to hold a slot", i + 1),
                Duration::from_secs(15),
                || {
                    let mut s =
                        TcpStream::connect(node.socket_addr()).map_err(|e| e.to_string())?;
                    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                        .map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut answer = [0u8; 512];
                    let n = s.read(&mut answer).map_err(|e| e.to_string())?;
                    if answer[..n].starts_with(b"HTTP/1.1 200") {
                        held = Some(s);
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&answer[..n]).into_owned())
                    }
                },
                || node.log_report(),
            );
            held.expect("set when the wait ends")
        })
        .collect();
    let refused = node.raw_request(http::Method::GET, "/healthz", Vec::new(), Bytes::new());
    // The slots may take a moment to be counted: wait for the refusal.
    let refused = if refused.status == 429 {
        refused
    } else {
        let mut last = refused;
        wait_until(
            "a fourth connection refused",
            Duration::from_secs(10),
            || {
                last = node.raw_request(http::Method::GET, "/healthz", Vec::new(), Bytes::new());
                if last.status == 429 {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", last.status))
                }
            },
            || node.log_report(),
        );
        last
    };
    let error = refused.expect_error(Code::ResourceExhausted);
    assert!(
        error.message.contains("limits.max_connections"),
        "{error:?}"
    );
    drop(held);
    wait_until(
        "the slots freed",
        Duration::from_secs(10),
        || match block_on(node.client().get("k")) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        || node.log_report(),
    );

    let keys = |n: usize| MultiGetRequest {
        keys: (0..n).map(|i| Bytes::from(format!("k{i}"))).collect(),
    };
    let reply = node.raw_call("kvstore.v1.KVStore/MultiGet", &keys(5), None);
    let error = reply.expect_error(Code::ResourceExhausted);
    assert!(error.message.contains("limits.max_batch_keys"), "{error:?}");
    assert_eq!(
        node.raw_call("kvstore.v1.KVStore/MultiGet", &keys(4), None)
            .status,
        200
    );
}

#[test]
fn a_node_refuses_to_start_insecure_or_with_unusable_tls_files_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // The stderr of a node started with these `server` settings, which must fail.
    let refusal = |server: &str| {
        let path = dir.path().join("node.yaml");
        std::fs::write(
            &path,
            format!(
                "data_dir: {:?}\nserver:\n  port: 0\n{server}",
                dir.path().join("data").display().to_string()
            ),
        )
        .unwrap();
        let out = Command::new(wasmkv_binary())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("WASMKV_CONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refusal("  address: 0.0.0.0\n");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:")
            && stderr.contains("allow_insecure_remote"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.pem");
    let stderr = refusal(&format!(
        "  tls:\n    cert: {:?}\n    key: {:?}\n",
        missing.display().to_string(),
        missing.display().to_string()
    ));
    assert!(
        stderr.contains("certificate") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
