//! Eviction: least frequently used, where a key's hits lose half their weight every
//! `half_life_ms` since its last access, so a key that was hot an hour ago does not outlive one
//! that is warm now.

#![warn(missing_docs)]

use wasmkv_guest::{EvictionInput, Victims, config, evict, now_ms};

/// `config:` of the plugin's `evict` step.
#[config]
#[serde(deny_unknown_fields)]
pub struct Decay {
    /// Time after which an idle key's hits count half (default one minute).
    #[serde(default = "default_half_life_ms")]
    pub half_life_ms: u64,
}

fn default_half_life_ms() -> u64 {
    60_000
}

/// A key's hits, decayed by the time since its last access.
pub fn score(hits: u32, idle_ms: u64, half_life_ms: u64) -> f64 {
    let half_lives = idle_ms as f64 / half_life_ms.max(1) as f64;
    f64::from(hits) * (-half_lives).exp2()
}

/// The `need` candidates with the lowest decayed hits.
#[evict]
pub fn pick(input: &EvictionInput, cfg: &Decay) -> Victims {
    let now = now_ms();
    let scores: Vec<f64> = input
        .candidates
        .iter()
        .map(|c| {
            score(
                c.hits,
                now.saturating_sub(c.last_access_ms),
                cfg.half_life_ms,
            )
        })
        .collect();
    let mut order: Vec<u32> = (0..input.candidates.len() as u32).collect();
    // Lowest score first; equal scores go to the longer idle key, then the lower index.
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&input.candidates[a as usize], &input.candidates[b as usize]);
        scores[a as usize]
            .total_cmp(&scores[b as usize])
            .then(ca.last_access_ms.cmp(&cb.last_access_ms))
            .then(a.cmp(&b))
    });
    order.truncate(input.need as usize);
    Victims { victims: order }
}

#[cfg(test)]
mod tests {
    use wasmkv_guest::testing::Plugin;
    use wasmkv_guest::{Candidate, EvictionInput};

    use super::{Decay, pick, score};

    const NOW: u64 = 10_000_000;

    fn candidate(hits: u32, idle_ms: u64) -> Candidate {
        Candidate {
            key: b"k".to_vec(),
            size: 64,
            last_access_ms: NOW - idle_ms,
            hits,
            expires_at_ms: 0,
        }
    }

    fn victims(yaml: &str, candidates: Vec<Candidate>, need: u32) -> Vec<u32> {
        let plugin = Plugin::<Decay>::init(yaml).unwrap();
        plugin.set_now_ms(NOW);
        plugin
            .evict(pick, &EvictionInput { candidates, need })
            .unwrap()
            .victims
    }

    #[test]
    fn hits_halve_every_half_life() {
        assert_eq!(score(8, 0, 1_000), 8.0);
        assert_eq!(score(8, 1_000, 1_000), 4.0);
        assert_eq!(score(8, 3_000, 1_000), 1.0);
        assert_eq!(
            score(8, 1_000, 0),
            score(8, 1_000, 1),
            "a zero half-life is one ms"
        );
    }

    #[test]
    fn an_idle_hot_key_goes_before_a_warm_recent_one() {
        // 100 hits idle for 10 half-lives (~0.1) vs 5 hits just now vs 50 hits idle 1 half-life.
        let candidates = vec![
            candidate(5, 0),
            candidate(100, 10_000),
            candidate(50, 1_000),
        ];
        assert_eq!(
            victims("half_life_ms: 1000", candidates.clone(), 1),
            vec![1]
        );
        // With a long half-life, raw frequency dominates.
        assert_eq!(victims("half_life_ms: 1000000", candidates, 2), vec![0, 2]);
    }

    #[test]
    fn ties_go_to_the_longest_idle_and_defaults_apply() {
        let candidates = vec![candidate(0, 5), candidate(0, 50), candidate(0, 50)];
        assert_eq!(victims("{}", candidates, 3), vec![1, 2, 0]);
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        assert!(Plugin::<Decay>::init("half_life: 5").is_err());
    }
}
