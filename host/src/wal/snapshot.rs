//! Snapshot files: the whole dataset as of an LSN, so recovery replays only the log after it.
//!
//! ```text
//! file    = magic "WKVSNAP1"  lsn:u64le  created_ms:u64le  entry*  trailer
//! entry   = len:u32le  crc:u32le  key  value  expires_at_ms:u64le  version:u64le   (WAL framing)
//! trailer = 0xFFFFFFFF  count:u64le  crc32c(count):u32le
//! ```
//! A snapshot is "fuzzy": it is taken while writes go on. `lsn` is the last record applied
//! before iteration began; entries may also reflect later records. Replaying the log from
//! `lsn + 1` fixes that up, because every record is an absolute overwrite or delete.
//! The file is written under a temporary name, fsynced, renamed, and the directory fsynced, so
//! a crash leaves either the old snapshot or the complete new one, never half of one. The
//! trailer's count tells a complete file from a truncated one.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::{Result, WalError};
use super::record::{self, FRAME_HEADER, MAX_BODY, Reader};
use super::segment::sync_dir;
use crate::storage::SnapshotEntry;

const MAGIC: &[u8; 8] = b"WKVSNAP1";
const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
const TRAILER_MARK: u32 = u32::MAX;
/// key length + value length + expiry + version.
const MIN_ENTRY_BODY: usize = 24;

pub fn snapshot_path(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("{lsn:020}{SUFFIX}"))
}

/// Writes one snapshot. Nothing is visible under the final name until `finish` succeeds.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    dir: PathBuf,
    tmp: PathBuf,
    lsn: u64,
    count: u64,
    frame: Vec<u8>,
}

impl SnapshotWriter {
    pub fn create(dir: &Path, lsn: u64, created_ms: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
        let tmp = dir.join(format!("{lsn:020}{TMP_SUFFIX}"));
        let file = File::create(&tmp).map_err(|e| WalError::io("create snapshot", &tmp, e))?;
        let mut writer = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            dir: dir.to_owned(),
            tmp,
            lsn,
            count: 0,
            frame: Vec::new(),
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&lsn.to_le_bytes());
        header.extend_from_slice(&created_ms.to_le_bytes());
        writer.put(&header)?;
        Ok(writer)
    }

    pub fn write(&mut self, entry: &SnapshotEntry) -> Result<()> {
        self.frame.clear();
        self.frame.extend_from_slice(&[0; FRAME_HEADER]);
        record::put_bytes(&mut self.frame, &entry.key);
        record::put_bytes(&mut self.frame, &entry.value);
        self.frame
            .extend_from_slice(&entry.expires_at_ms.to_le_bytes());
        self.frame.extend_from_slice(&entry.version.to_le_bytes());
        record::seal_frame(&mut self.frame, 0);
        let frame = std::mem::take(&mut self.frame);
        let written = self.put(&frame);
        self.frame = frame;
        self.count += 1;
        written
    }

    /// Seal the file and publish it under its final name; returns that path.
    pub fn finish(mut self) -> Result<PathBuf> {
        let mut trailer = TRAILER_MARK.to_le_bytes().to_vec();
        trailer.extend_from_slice(&self.count.to_le_bytes());
        trailer.extend_from_slice(&crc32c::crc32c(&self.count.to_le_bytes()).to_le_bytes());
        self.put(&trailer)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| WalError::io("write snapshot", &self.tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| WalError::io("fsync snapshot", &self.tmp, e))?;
        let path = snapshot_path(&self.dir, self.lsn);
        fs::rename(&self.tmp, &path).map_err(|e| WalError::io("publish snapshot", &path, e))?;
        sync_dir(&self.dir)?;
        Ok(path)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| WalError::io("write snapshot", &self.tmp, e))
    }
}

/// The newest complete snapshot in `dir` (by LSN), if any. Leftover temporary files from an
/// interrupted snapshot are removed.
pub fn newest(dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::io("list", dir, e)),
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let Some(lsn) = name
            .strip_suffix(SUFFIX)
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| lsn > *b) {
            best = Some((lsn, entry.path()));
        }
    }
    Ok(best)
}

/// Remove every snapshot older than `lsn`.
pub fn remove_older_than(dir: &Path, lsn: u64) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| WalError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list", dir, e))?;
        let older = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|l| l < lsn);
        if older {
            fs::remove_file(entry.path()).map_err(|e| WalError::io("remove", entry.path(), e))?;
        }
    }
    sync_dir(dir)
}

/// What a loaded snapshot held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub lsn: u64,
    pub created_ms: u64,
    pub entries: u64,
}

/// Read a snapshot, passing each entry to `apply`. Any damage — bad magic, a bad entry, a
/// missing or wrong trailer, bytes after it — is an error naming the file.
pub fn load(path: &Path, mut apply: impl FnMut(SnapshotEntry)) -> Result<SnapshotInfo> {
    let corrupt = |reason: String| WalError::CorruptSnapshot {
        path: path.to_owned(),
        reason,
    };
    let truncated = || corrupt("the file ends early (truncated)".into());
    let io_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            truncated()
        } else {
            WalError::io("read snapshot", path, e)
        }
    };
    let file = File::open(path).map_err(|e| WalError::io("open snapshot", path, e))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 24];
    input.read_exact(&mut header).map_err(io_err)?;
    if &header[..8] != MAGIC {
        return Err(corrupt("not a wasmkv snapshot (bad magic)".into()));
    }
    let lsn = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let created_ms = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let mut count = 0u64;
    let mut buf = vec![0; FRAME_HEADER];
    loop {
        buf.truncate(FRAME_HEADER);
        input.read_exact(&mut buf).map_err(io_err)?;
        let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
        if len == TRAILER_MARK {
            let mut trailer = [0u8; 12];
            trailer[..4].copy_from_slice(&buf[4..8]);
            input.read_exact(&mut trailer[4..]).map_err(io_err)?;
            let stored = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
            let crc = u32::from_le_bytes(trailer[8..].try_into().expect("4 bytes"));
            if crc != crc32c::crc32c(&trailer[..8]) || stored != count {
                return Err(corrupt(format!(
                    "trailer says {stored} entries, found {count} (or its checksum is wrong)"
                )));
            }
            if input.read(&mut [0u8; 1]).map_err(io_err)? != 0 {
                return Err(corrupt("bytes after the trailer".into()));
            }
            return Ok(SnapshotInfo {
                lsn,
                created_ms,
                entries: count,
            });
        }
        let len = len as usize;
        if len > MAX_BODY {
            return Err(corrupt(format!("entry {count} claims {len} bytes")));
        }
        // Read what the file holds rather than allocate what the length claims: a damaged
        // length in a short file must not cost up to MAX_BODY of memory (found by fuzzing).
        let read = input
            .by_ref()
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if read < len {
            return Err(truncated());
        }
        let body = record::checked_frame(&buf, MIN_ENTRY_BODY)
            .map_err(|e| corrupt(format!("entry {count}: {e}")))?;
        let entry = decode_entry(body).map_err(|e| corrupt(format!("entry {count}: {e}")))?;
        apply(entry);
        count += 1;
    }
}

fn decode_entry(body: &[u8]) -> Result<SnapshotEntry, record::DecodeError> {
    let mut r = Reader(body);
    let key: Bytes = r.bytes()?;
    let value = r.bytes()?;
    let expires_at_ms = r.u64()?;
    let version = r.u64()?;
    if !r.0.is_empty() {
        return Err(record::DecodeError::Malformed("trailing bytes in entry"));
    }
    Ok(SnapshotEntry {
        key,
        value,
        expires_at_ms,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> SnapshotEntry {
        SnapshotEntry {
            key: Bytes::from(format!("key-{i}")),
            value: Bytes::from(vec![i as u8; (i % 50) as usize]),
            expires_at_ms: i * 3,
            version: i + 100,
        }
    }

    fn write(dir: &Path, lsn: u64, n: u64) -> PathBuf {
        let mut w = SnapshotWriter::create(dir, lsn, 77).unwrap();
        for i in 0..n {
            w.write(&entry(i)).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_and_newest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 5, 10);
        let path = write(dir.path(), 9, 300);
        fs::write(dir.path().join("00000000000000000012.snap.tmp"), b"half").unwrap();
        let (lsn, newest_path) = newest(dir.path()).unwrap().unwrap();
        assert_eq!((lsn, &newest_path), (9, &path));
        assert!(!dir.path().join("00000000000000000012.snap.tmp").exists());
        let mut got = Vec::new();
        let info = load(&path, |e| got.push(e)).unwrap();
        assert_eq!(
            info,
            SnapshotInfo {
                lsn: 9,
                created_ms: 77,
                entries: 300
            }
        );
        assert_eq!(got, (0..300).map(entry).collect::<Vec<_>>());
        remove_older_than(dir.path(), 9).unwrap();
        assert!(!snapshot_path(dir.path(), 5).exists());
        assert!(path.exists());
    }

    /// Regression (fuzz target snapshot, out of memory): an entry length of up to 256 MiB in
    /// a file of a few bytes made `load` allocate and zero that much before finding the file
    /// truncated.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_length_beyond_the_file_is_truncation_without_the_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.snap");
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[0; 16]);
        data.extend_from_slice(&(MAX_BODY as u32).to_le_bytes());
        data.extend_from_slice(b"crc and a little data");
        fs::write(&path, &data).unwrap();
        let before = peak_rss_bytes();
        let err = load(&path, |_| {}).unwrap_err();
        let grown = peak_rss_bytes() - before;
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(grown < (MAX_BODY / 4) as u64, "loading took {grown} bytes");
    }

    /// The process's peak resident memory so far (`VmHWM`).
    #[cfg(target_os = "linux")]
    fn peak_rss_bytes() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 3, 4);
        let good = fs::read(&path).unwrap();
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(
                matches!(load(&path, |_| {}), Err(WalError::CorruptSnapshot { .. })),
                "truncation at {cut} accepted"
            );
        }
        // Header fields other than the magic are not checksummed (the LSN and creation time
        // are cross-checked by the file name and are informational); everything else is.
        for byte in (0..8).chain(24..good.len()) {
            let mut bad = good.clone();
            bad[byte] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert!(load(&path, |_| {}).is_err(), "flip in byte {byte} accepted");
        }
    }
}
