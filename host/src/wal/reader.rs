//! Reading committed records back from the log files while the writer keeps appending: the
//! seed's `GetEntriesSince`, used by replication catch-up and `wasmkv wal dump`.

use super::error::{Result, WalError};
use super::record::Record;
use super::segment::{SegmentMeta, SegmentReader};

/// Iterates the records with `after_lsn < lsn <= up_to` in LSN order. `up_to` is fixed when
/// the reader is made (the committed LSN then), so it never sees a record being written.
pub struct LogReader {
    segments: Vec<SegmentMeta>,
    index: usize,
    current: Option<SegmentReader>,
    next_lsn: u64,
    /// Records up to here are read (to find the start) but not returned.
    skip_through: u64,
    up_to: u64,
    done: bool,
    /// Ended on an error (as opposed to reaching `up_to`).
    failed: bool,
    /// The segment being read was removed by retention before `extend`.
    removed: bool,
}

impl LogReader {
    pub(crate) fn new(segments: Vec<SegmentMeta>, after_lsn: u64, up_to: u64) -> Result<Self> {
        let wanted = after_lsn + 1;
        let oldest = segments.first().map_or(wanted, |s| s.first_lsn);
        if wanted < oldest && wanted <= up_to {
            return Err(WalError::Trimmed {
                requested: wanted,
                oldest,
            });
        }
        // The segment holding `wanted` is the last one starting at or before it.
        let index = segments
            .iter()
            .rposition(|s| s.first_lsn <= wanted)
            .unwrap_or(0);
        let first = segments.get(index).map_or(wanted, |s| s.first_lsn);
        Ok(LogReader {
            segments,
            index,
            current: None,
            next_lsn: first,
            skip_through: after_lsn,
            up_to,
            done: false,
            failed: false,
            removed: false,
        })
    }

    /// The LSN of the last record this reader will return.
    pub fn up_to(&self) -> u64 {
        self.up_to
    }

    /// Go on to `up_to` (what was committed since), over the segments as they are now, from
    /// where this reader stopped: a follower of the log (replication) reads each record once
    /// instead of re-reading its segment from the start at every step. A reader that ended on
    /// an error stays ended; one whose segment was removed meanwhile ends with `Trimmed`.
    pub(crate) fn extend(&mut self, segments: Vec<SegmentMeta>, up_to: u64) {
        if self.failed {
            return;
        }
        let reading = self.segments.get(self.index).map(|s| s.first_lsn);
        self.segments = segments;
        match reading.and_then(|first| self.segments.iter().position(|s| s.first_lsn == first)) {
            Some(index) => self.index = index,
            None if reading.is_some() => self.removed = true,
            None => {}
        }
        self.up_to = self.up_to.max(up_to);
        self.done = false;
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.removed {
            return Err(WalError::Trimmed {
                requested: self.next_lsn,
                oldest: self
                    .segments
                    .first()
                    .map_or(self.up_to + 1, |s| s.first_lsn),
            });
        }
        loop {
            if self.next_lsn > self.up_to {
                return Ok(None);
            }
            let Some(seg) = self.segments.get(self.index) else {
                return Err(self.ended_early());
            };
            if self.current.is_none() {
                self.current = Some(SegmentReader::open(&seg.path).map_err(|e| match e {
                    // Removed by retention after this reader was made.
                    WalError::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        WalError::Trimmed {
                            requested: self.next_lsn,
                            // At best the next segment's start: the removal may have gone further.
                            oldest: self
                                .segments
                                .get(self.index + 1)
                                .map_or(self.up_to + 1, |next| next.first_lsn),
                        }
                    }
                    other => other,
                })?);
            }
            let reader = self.current.as_mut().expect("opened above");
            match reader.next(self.next_lsn)? {
                Some(record) => {
                    self.next_lsn += 1;
                    if record.lsn > self.skip_through {
                        return Ok(Some(record));
                    }
                }
                None => {
                    let next_first = self.segments.get(self.index + 1).map(|s| s.first_lsn);
                    if next_first != Some(self.next_lsn) {
                        return Err(self.ended_early());
                    }
                    self.index += 1;
                    self.current = None;
                }
            }
        }
    }

    fn ended_early(&self) -> WalError {
        WalError::Corrupt {
            path: self
                .segments
                .get(self.index)
                .map(|s| s.path.clone())
                .unwrap_or_default(),
            offset: 0,
            lsn: self.next_lsn,
            reason: "the log ends before the committed LSN".into(),
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
            self.failed = matches!(item, Some(Err(_)));
        }
        item
    }
}

impl LogReader {
    /// A reader over the log in `dir` (a WAL directory), for offline tools such as
    /// `wasmkv wal dump`: no writer is running, so the bound is where `verify` finds the
    /// intact log ending, not a committed LSN. Returns records with LSN > `after_lsn`; damage
    /// after the intact prefix is not reported here (see `verify`).
    pub fn open_dir(dir: &std::path::Path, after_lsn: u64) -> Result<LogReader> {
        super::recovery::verify(dir)?.reader(after_lsn)
    }
}
