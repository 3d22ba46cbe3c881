//! A plugin's reply, as the host decodes it after every hook call: the hook's output, or a
//! CBOR text string that is the plugin's error message. A plugin is untrusted code, so its
//! reply is untrusted bytes.

#![no_main]

use std::collections::HashSet;
use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use wasmkv::plugins::checked_victims;
use wasmkv_guest::abi::{self, FilterOutput, ReplyError, Verdict, Victims};
use wasmkv_guest::serde::Serialize;
use wasmkv_guest::serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    check::<Verdict>(data);
    check::<FilterOutput>(data);
    // What `wasmkv_init` replies on failure: an error message, decoded as one.
    check::<String>(data);
    if let Some(victims) = check::<Victims>(data) {
        // Sample sizes and wants taken from the input, so the fuzzer explores them too.
        let candidates = data.len() % 64;
        let want = usize::from(data[0] % 16);
        check_victims(&victims.victims, candidates, want);
    }
});

/// Decode `data` as the reply of a hook whose output is `T`, and check what came out.
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    match abi::decode_reply::<T>(data) {
        Ok(output) => {
            let bytes = abi::encode(&output).expect("a decoded output encodes");
            assert_eq!(abi::decode::<T>(&bytes).as_ref(), Ok(&output));
            Some(output)
        }
        // An error message is a CBOR text string (major type 3), and survives the trip.
        Err(ReplyError::Guest(message)) => {
            assert_eq!(data[0] >> 5, 3, "an error reply that is not a text string");
            let again = abi::decode_reply::<T>(&abi::encode_error(&message));
            assert_eq!(again, Err(ReplyError::Guest(message)));
            None
        }
        Err(ReplyError::Malformed(_)) => None,
    }
}

/// The host takes a plugin's victims exactly when the ABI's rules hold: at most `want`,
/// distinct, each an index into the candidates.
fn check_victims(victims: &[u32], candidates: usize, want: usize) {
    let mut seen = HashSet::new();
    let follows_rules = victims.len() <= want
        && victims
            .iter()
            .all(|&i| (i as usize) < candidates && seen.insert(i));
    match checked_victims(victims, candidates, want) {
        Ok(taken) => {
            assert!(
                follows_rules,
                "{victims:?} of {candidates} (want {want}) accepted"
            );
            assert!(
                taken
                    .iter()
                    .copied()
                    .eq(victims.iter().map(|&i| i as usize))
            );
        }
        Err(_) => assert!(
            !follows_rules,
            "{victims:?} of {candidates} (want {want}) refused"
        ),
    }
}
