//! The chains a node runs plugins in: validators every write must pass, and an eviction
//! policy that ranks candidates (falling back to the built-in LRU whenever the plugin fails).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use wasmkv_guest::abi::{self, Verdict, Victims};

use super::step::Step;
use crate::config::{FilterOnError, ValidateOnError};
use crate::storage::{Candidate, EvictionError, EvictionPolicy, Lru};

/// One write as validators see it.
pub struct WriteCheck<'a> {
    pub delete: bool,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub ttl_ms: u64,
}

pub struct ValidateStep {
    pub step: Arc<Step>,
    pub on_error: ValidateOnError,
}

/// Validators in order: all must allow a write; the first veto's reason goes to the client.
#[derive(Default)]
pub struct ValidateChain {
    pub steps: Vec<ValidateStep>,
}

impl ValidateChain {
    /// `Err(reason)` when a step refuses the write (or fails with `on_error: reject`).
    pub fn check(&self, write: &WriteCheck<'_>) -> Result<(), String> {
        if self.steps.is_empty() {
            return Ok(());
        }
        let request = abi::WriteRequest {
            op: if write.delete {
                abi::Op::Delete
            } else {
                abi::Op::Set
            },
            key: write.key.to_vec(),
            value: write.value.to_vec(),
            ttl_ms: write.ttl_ms,
        };
        for step in &self.steps {
            let name = &step.step.plugin.name;
            match step.step.call::<_, Verdict>("wasmkv_validate", &request) {
                Ok(verdict) if verdict.allow => {}
                Ok(verdict) => return Err(format!("refused by plugin {name}: {}", verdict.reason)),
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "validator failed");
                    if step.on_error == ValidateOnError::Reject {
                        return Err(format!(
                            "plugin {name} failed ({e}) and its chain step rejects on error \
                             (on_error: reject)"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An eviction policy implemented by a plugin. The plugin's answer is checked (indices in
/// range, distinct, at most `want`); a failure or a bad answer falls back to the built-in
/// LRU for that round, so the store can always make room.
pub struct WasmEviction {
    pub step: Arc<Step>,
    fallback: Lru,
}

impl WasmEviction {
    pub fn new(step: Arc<Step>) -> Self {
        WasmEviction {
            step,
            fallback: Lru,
        }
    }
}

impl EvictionPolicy for WasmEviction {
    fn name(&self) -> &str {
        &self.step.plugin.name
    }

    fn rank(&self, candidates: &[Candidate], want: usize) -> Result<Vec<usize>, EvictionError> {
        let input = abi::EvictionInput {
            candidates: candidates
                .iter()
                .map(|c| abi::Candidate {
                    key: c.key.to_vec(),
                    size: c.size,
                    last_access_ms: c.last_access_ms,
                    hits: c.hits,
                    expires_at_ms: c.expires_at_ms,
                })
                .collect(),
            need: u32::try_from(want).unwrap_or(u32::MAX),
        };
        let answer = self
            .step
            .call::<_, Victims>("wasmkv_evict", &input)
            .map_err(|e| e.to_string())
            .and_then(|victims| checked_victims(&victims.victims, candidates.len(), want));
        match answer {
            Ok(victims) => Ok(victims),
            Err(reason) => {
                tracing::warn!(plugin = %self.step.plugin.name, %reason, "eviction plugin failed; using LRU");
                self.fallback.rank(candidates, want)
            }
        }
    }
}

/// The plugin's victims if they follow the ABI's rules.
pub fn checked_victims(
    victims: &[u32],
    candidates: usize,
    want: usize,
) -> Result<Vec<usize>, String> {
    if victims.len() > want {
        return Err(format!("{} victims for {want} wanted", victims.len()));
    }
    let mut seen = HashSet::new();
    victims
        .iter()
        .map(|&i| {
            let i = i as usize;
            if i >= candidates {
                Err(format!("victim index {i} out of {candidates} candidates"))
            } else if !seen.insert(i) {
                Err(format!("victim index {i} repeated"))
            } else {
                Ok(i)
            }
        })
        .collect()
}

/// A replication filter step and the replicas it applies to.
pub struct FilterStep {
    pub step: Arc<Step>,
    /// Applies to replicas carrying all these labels (empty = every replica).
    pub labels: BTreeMap<String, String>,
    pub on_error: FilterOnError,
}

impl FilterStep {
    pub fn applies_to(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Which of `entries` the replica receives, by every step (an entry is sent only if all keep
/// it). `Err` means hold: a step failed with `on_error: hold`, so nothing is sent now and the
/// same entries are asked about again later.
pub fn filter_entries(
    steps: &[Arc<FilterStep>],
    replica: &abi::ReplicaInfo,
    entries: Vec<abi::FilterEntry>,
) -> Result<Vec<bool>, String> {
    let mut keep = vec![true; entries.len()];
    if steps.is_empty() || entries.is_empty() {
        return Ok(keep);
    }
    let input = abi::FilterInput {
        replica: replica.clone(),
        entries,
    };
    for filter in steps {
        let name = &filter.step.plugin.name;
        let answer = filter
            .step
            .call::<_, abi::FilterOutput>("wasmkv_filter", &input)
            .map_err(|e| e.to_string())
            .and_then(|out| {
                if out.keep.len() == keep.len() {
                    Ok(out.keep)
                } else {
                    Err(format!(
                        "answered {} decisions for {} entries",
                        out.keep.len(),
                        keep.len()
                    ))
                }
            });
        match answer {
            Ok(decisions) => keep.iter_mut().zip(decisions).for_each(|(k, d)| *k &= d),
            Err(reason) if filter.on_error == FilterOnError::Hold => {
                return Err(format!(
                    "filter plugin {name} failed ({reason}); holding entries back"
                ));
            }
            Err(reason) => {
                tracing::warn!(plugin = %name, %reason, "filter failed; sending unfiltered (on_error: send)");
            }
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_must_be_distinct_in_range_and_few_enough() {
        assert_eq!(checked_victims(&[2, 0], 3, 2), Ok(vec![2, 0]));
        assert!(
            checked_victims(&[3], 3, 1)
                .unwrap_err()
                .contains("out of 3")
        );
        assert!(
            checked_victims(&[1, 1], 3, 2)
                .unwrap_err()
                .contains("repeated")
        );
        assert!(
            checked_victims(&[0, 1], 3, 1)
                .unwrap_err()
                .contains("2 victims")
        );
        assert_eq!(checked_victims(&[], 3, 2), Ok(vec![]));
    }
}
