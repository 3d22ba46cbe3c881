//! Reading the log back at start-up, and cutting it on purpose (`repair`).
//!
//! Invariants checked here: every segment starts with the magic; records are intact (length,
//! CRC) and their LSNs are dense across segments. The only damage forgiven is a torn tail: bad
//! bytes at the end of the **last** segment with no intact record after them, which is what a
//! crash in the middle of a write leaves. It is cut off and logged. Anything else is corruption
//! of acknowledged data and stops start-up with the file, offset and LSN. Zeros from a record
//! boundary to the end of a file are not damage: they are the preallocated space after the
//! last record (see `segment`).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::{Result, WalError};
use super::reader::LogReader;
use super::record::{self, Record};
use super::segment::{self, MAGIC, SegmentMeta};

/// What recovery found: the segments to keep appending after, and where the log ends.
#[derive(Debug)]
pub struct Recovered {
    pub segments: Vec<SegmentMeta>,
    /// LSN of the last intact record, 0 for an empty log.
    pub last_lsn: u64,
    /// Byte length of the valid prefix of the last segment.
    pub tail_len: u64,
}

/// The first damage met while scanning, if any.
struct Damage {
    segment: usize,
    offset: u64,
    lsn: u64,
    reason: String,
    /// Damage is a torn tail when it is in the last segment and nothing intact follows it.
    torn_tail: bool,
}

struct Scan {
    last_lsn: u64,
    tail_len: u64,
    damage: Option<Damage>,
}

/// Replay the log in `dir`: `apply` receives, in order, every record with LSN > `after_lsn`.
/// A torn tail is truncated away; other damage is an error.
pub fn recover(dir: &Path, after_lsn: u64, apply: impl FnMut(Record)) -> Result<Recovered> {
    let segments = segment::list(dir)?;
    let scan = scan(&segments, after_lsn, apply)?;
    match scan.damage {
        None => Ok(Recovered {
            segments,
            last_lsn: scan.last_lsn,
            tail_len: scan.tail_len,
        }),
        Some(damage) if damage.torn_tail && damage.offset < MAGIC.len() as u64 => {
            // A segment whose creation a crash interrupted (its magic never reached the disk):
            // nothing of it is kept, and the log goes on at the end of the one before.
            let mut segments = segments;
            let torn = segments.remove(damage.segment);
            tracing::warn!(
                file = %torn.path.display(),
                "removing a WAL segment whose creation a crash interrupted"
            );
            fs::remove_file(&torn.path).map_err(|e| WalError::io("remove", &torn.path, e))?;
            segment::sync_dir(dir)?;
            Ok(Recovered {
                segments,
                last_lsn: scan.last_lsn,
                tail_len: scan.tail_len,
            })
        }
        Some(damage) if damage.torn_tail => {
            let path = &segments[damage.segment].path;
            tracing::warn!(
                file = %path.display(),
                offset = damage.offset,
                lsn = damage.lsn,
                reason = %damage.reason,
                "cutting off a torn record at the end of the WAL (a crash interrupted a write)"
            );
            truncate(path, damage.offset)?;
            Ok(Recovered {
                segments,
                last_lsn: scan.last_lsn,
                tail_len: damage.offset,
            })
        }
        Some(damage) => Err(WalError::Corrupt {
            path: segments[damage.segment].path.clone(),
            offset: damage.offset,
            lsn: damage.lsn,
            reason: damage.reason,
        }),
    }
}

/// What `repair` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The segment that was cut, where, and the first LSN lost; None if the log was intact.
    pub cut: Option<(PathBuf, u64, u64)>,
    /// Segments removed: the damaged one when nothing of it was kept (damage at offset 0),
    /// and every later one.
    pub removed: Vec<PathBuf>,
    /// The last LSN kept.
    pub last_lsn: u64,
}

/// Cut the log at its first damage, wherever it is: truncate that segment there (remove it if
/// nothing of it is left) and remove every later one. Everything before the damage is kept.
pub fn repair(dir: &Path) -> Result<RepairReport> {
    let segments = segment::list(dir)?;
    let scan = scan(&segments, u64::MAX, |_| {})?;
    let mut report = RepairReport {
        last_lsn: scan.last_lsn,
        ..RepairReport::default()
    };
    if let Some(damage) = scan.damage {
        let path = &segments[damage.segment].path;
        if damage.offset < MAGIC.len() as u64 {
            // Nothing of this segment is kept (its header is bad, or it does not follow on
            // from the log before it): truncated, it would still not be a segment, and its
            // name would still break the LSN sequence, so `verify` and start-up would refuse
            // the repaired log. Found by fuzzing (fuzz/fuzz_targets/wal_segment.rs).
            fs::remove_file(path).map_err(|e| WalError::io("remove", path, e))?;
            report.removed.push(path.clone());
        } else {
            truncate(path, damage.offset)?;
        }
        for later in &segments[damage.segment + 1..] {
            fs::remove_file(&later.path).map_err(|e| WalError::io("remove", &later.path, e))?;
            report.removed.push(later.path.clone());
        }
        segment::sync_dir(dir)?;
        report.cut = Some((path.clone(), damage.offset, damage.lsn));
    }
    Ok(report)
}

fn scan(segments: &[SegmentMeta], after_lsn: u64, mut apply: impl FnMut(Record)) -> Result<Scan> {
    let mut expected = segments.first().map_or(1, |s| s.first_lsn);
    let mut tail_len = 0;
    for (index, seg) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let damage = |offset: u64, lsn: u64, reason: String, data: &[u8]| Damage {
            segment: index,
            offset,
            lsn,
            reason,
            torn_tail: is_last && !intact_record_after(data, offset as usize),
        };
        if seg.first_lsn != expected {
            return Ok(Scan {
                last_lsn: expected - 1,
                tail_len: 0,
                damage: Some(Damage {
                    segment: index,
                    offset: 0,
                    lsn: expected,
                    reason: format!(
                        "segment starts at LSN {} but the log before it ends at LSN {}",
                        seg.first_lsn,
                        expected - 1
                    ),
                    torn_tail: false,
                }),
            });
        }
        let data = fs::read(&seg.path).map_err(|e| WalError::io("read segment", &seg.path, e))?;
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            // A segment holding less than its magic (maybe followed by preallocated zeros; the
            // magic has none) is one whose creation a crash interrupted.
            let written = data
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1);
            let torn = is_last && MAGIC.starts_with(&data[..written]);
            let reason = "not a wasmkv WAL segment (bad magic)".to_string();
            let mut d = damage(0, expected, reason, &data);
            d.torn_tail = torn;
            return Ok(Scan {
                last_lsn: expected - 1,
                // Where the segment before ends: the log's end once this one is dropped.
                tail_len,
                damage: Some(d),
            });
        }
        let mut offset = MAGIC.len();
        while offset < data.len() {
            let rest = &data[offset..];
            if segment::is_unwritten(rest) {
                break; // Preallocated space: the records end here.
            }
            let outcome =
                record::decode(rest)
                    .map_err(|e| e.to_string())
                    .and_then(|(record, used)| {
                        if record.lsn == expected {
                            Ok((record, used))
                        } else {
                            Err(format!("found LSN {}", record.lsn))
                        }
                    });
            match outcome {
                Ok((record, used)) => {
                    if record.lsn > after_lsn {
                        apply(record);
                    }
                    expected += 1;
                    offset += used;
                }
                Err(reason) => {
                    return Ok(Scan {
                        last_lsn: expected - 1,
                        tail_len: offset as u64,
                        damage: Some(damage(offset as u64, expected, reason, &data)),
                    });
                }
            }
        }
        tail_len = offset as u64;
    }
    Ok(Scan {
        last_lsn: expected - 1,
        tail_len,
        damage: None,
    })
}

/// Whether an intact record frame starts anywhere after `offset`. Used only on damage, to tell
/// a torn tail (nothing valid follows) from corruption in the middle of the data.
fn intact_record_after(data: &[u8], offset: usize) -> bool {
    // No record starts in the zeros at the end (a record's length is never 0): a preallocated
    // tail of megabytes is not searched byte by byte.
    let written = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    (offset + 1..written).any(|p| record::frame(&data[p..]).is_ok())
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open for truncation", path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| WalError::io("truncate", path, e))
}

/// The first damage `verify` met: where it is and why, without anything having been cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalDamage {
    /// The segment file holding the damage.
    pub path: PathBuf,
    /// Byte offset of the first bad byte range in that file (0 for a bad magic or an LSN gap).
    pub offset: u64,
    /// The LSN the damaged record should have carried.
    pub lsn: u64,
    pub reason: String,
    /// The damage is a torn tail: at the end of the last segment with nothing intact after it,
    /// which is what a crash in the middle of a write leaves. Start-up cuts it by itself;
    /// anything else makes start-up refuse the log until `repair`.
    pub torn_tail: bool,
}

impl From<WalDamage> for WalError {
    fn from(damage: WalDamage) -> Self {
        WalError::Corrupt {
            path: damage.path,
            offset: damage.offset,
            lsn: damage.lsn,
            reason: damage.reason,
        }
    }
}

/// What `verify` found: how much of the log is intact, and the first damage if any.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// Segment files in the directory (including any after the damage).
    pub segments: usize,
    /// Intact records before the first damage.
    pub records: u64,
    /// LSN of the first intact record; 0 when there is none.
    pub first_lsn: u64,
    /// LSN of the last intact record before any damage; 0 for an empty log (after retention
    /// removed old segments it can be above 0 with no records left).
    pub last_lsn: u64,
    pub damage: Option<WalDamage>,
    /// Kept so `reader` can serve the intact prefix without listing the directory again.
    listed: Vec<SegmentMeta>,
}

impl VerifyReport {
    /// Whether every record of every segment is intact.
    pub fn is_ok(&self) -> bool {
        self.damage.is_none()
    }

    /// A reader over the verified records with LSN > `after_lsn`. It stops at `last_lsn`, so
    /// it never meets the damage that `verify` reported (as long as nobody writes meanwhile).
    pub fn reader(&self, after_lsn: u64) -> Result<LogReader> {
        LogReader::new(self.listed.clone(), after_lsn, self.last_lsn)
    }
}

/// Check every record of every segment in `dir`, as start-up would, but change nothing: no
/// torn tail is cut, no file is opened for writing. For `wasmkv wal verify` and `wal dump`,
/// which an operator runs to decide whether a `repair` is needed and what it would cost.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let listed = segment::list(dir)?;
    let mut records = 0;
    let mut first_lsn = 0;
    let scan = scan(&listed, 0, |record| {
        if records == 0 {
            first_lsn = record.lsn;
        }
        records += 1;
    })?;
    let damage = scan.damage.map(|d| WalDamage {
        path: listed[d.segment].path.clone(),
        offset: d.offset,
        lsn: d.lsn,
        reason: d.reason,
        torn_tail: d.torn_tail,
    });
    Ok(VerifyReport {
        segments: listed.len(),
        records,
        first_lsn,
        last_lsn: scan.last_lsn,
        damage,
        listed,
    })
}
