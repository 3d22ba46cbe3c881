//! The native harness drives hooks through the same CBOR path as the wasm exports.

use wasmkv_guest::testing::{InitError, LogLine, Plugin};
use wasmkv_guest::{
    Candidate, EvictionInput, FilterEntry, FilterInput, Level, Op, ReplicaInfo, Verdict, Victims,
    WriteRequest, abi, config, evict, filter, info, validate,
};

#[config]
#[serde(deny_unknown_fields)]
struct Limits {
    max_key: usize,
    #[serde(default)]
    label: String,
}

#[validate]
fn check(req: &WriteRequest, cfg: &Limits) -> Verdict {
    info!("checking {} bytes", req.key.len());
    if req.key.len() > cfg.max_key {
        Verdict::deny(format!("key longer than {} bytes", cfg.max_key))
    } else {
        Verdict::allow()
    }
}

#[evict]
fn oldest(input: &EvictionInput) -> Victims {
    let mut order: Vec<u32> = (0..input.candidates.len() as u32).collect();
    order.sort_by_key(|&i| input.candidates[i as usize].last_access_ms);
    order.truncate(input.need as usize);
    wasmkv_guest::log!(debug, "now is {}", wasmkv_guest::now_ms());
    Victims { victims: order }
}

#[filter]
fn labelled(entry: &FilterEntry, replica: &ReplicaInfo, cfg: &Limits) -> bool {
    replica.labels.get("tier").is_some_and(|t| *t == cfg.label) || entry.key.starts_with(b"all:")
}

#[test]
fn validate_goes_through_cbor_and_captures_logs() {
    let plugin = Plugin::<Limits>::init("max_key: 3").unwrap();
    assert_eq!(
        plugin
            .validate(check, &WriteRequest::set("abc", ""))
            .unwrap(),
        Verdict::allow()
    );
    let verdict = plugin
        .validate(check, &WriteRequest::delete("abcd"))
        .unwrap();
    assert_eq!(verdict, Verdict::deny("key longer than 3 bytes"));
    assert_eq!(
        plugin.take_logs(),
        vec![
            LogLine {
                level: Level::Info,
                message: "checking 3 bytes".into()
            },
            LogLine {
                level: Level::Info,
                message: "checking 4 bytes".into()
            },
        ]
    );
    // The original function stays callable as written.
    assert!(check(&WriteRequest::set("a", ""), plugin.config()).allow);
}

#[test]
fn garbage_input_is_an_error_reply() {
    let plugin = Plugin::<Limits>::init("max_key: 3").unwrap();
    for garbage in [&b""[..], b"\xff", b"\xa1\x62op\x63put"] {
        let reply = plugin.validate_raw(check, garbage);
        match abi::decode_reply::<Verdict>(&reply) {
            Err(abi::ReplyError::Guest(message)) => {
                assert!(
                    message.starts_with("wasmkv_validate: bad input"),
                    "{message}"
                )
            }
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let missing = Plugin::<Limits>::init("{}").err().unwrap();
    assert!(
        matches!(&missing, InitError::Refused(m) if m.contains("max_key")),
        "{missing}"
    );
    let typo = Plugin::<Limits>::init("max_key: 3\nlabl: x").err().unwrap();
    assert!(typo.to_string().contains("labl"), "{typo}");
    assert!(matches!(
        Plugin::<Limits>::init("max_key: [3"),
        Err(InitError::Yaml(_))
    ));
    let cbor = abi::encode(&std::collections::BTreeMap::from([("max_key", 7)])).unwrap();
    assert_eq!(
        Plugin::<Limits>::init_cbor(&cbor).unwrap().config().max_key,
        7
    );
}

#[test]
fn hooks_without_config_and_a_pinned_clock() {
    let plugin = Plugin::new();
    plugin.set_now_ms(42);
    let candidate = |last_access_ms| Candidate {
        key: b"k".to_vec(),
        size: 10,
        last_access_ms,
        hits: 1,
        expires_at_ms: 0,
    };
    let input = EvictionInput {
        candidates: vec![candidate(30), candidate(10), candidate(20)],
        need: 2,
    };
    assert_eq!(plugin.evict(oldest, &input).unwrap().victims, vec![1, 2]);
    assert_eq!(plugin.take_logs()[0].message, "now is 42");
}

#[test]
fn filters_run_once_per_entry() {
    let plugin = Plugin::<Limits>::init("{max_key: 1, label: gold}").unwrap();
    let entry = |key: &str| FilterEntry {
        op: Op::Set,
        key: key.as_bytes().to_vec(),
        value_len: 1,
        ttl_ms: 0,
    };
    let batch = FilterInput {
        replica: ReplicaInfo {
            id: "r1".into(),
            labels: [("tier".into(), "silver".into())].into(),
        },
        entries: vec![entry("x"), entry("all:y"), entry("z")],
    };
    assert_eq!(
        plugin.filter(labelled, &batch).unwrap().keep,
        vec![false, true, false]
    );
    let gold = ReplicaInfo {
        id: "r2".into(),
        labels: [("tier".into(), "gold".into())].into(),
    };
    assert!(plugin.filter_one(labelled, &entry("x"), &gold).unwrap());
}
