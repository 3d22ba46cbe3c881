//! The WAL record and its byte encoding.
//!
//! ```text
//! record  = len:u32le  crc:u32le  body
//! body    = lsn:u64le  timestamp_ms:u64le  op:u8  payload        (len = body length)
//! crc     = CRC32C(len bytes ++ body)
//! payload by op:
//!   1 set     key  value  expires_at_ms:u64le      (expires 0 = never)
//!   2 delete  key
//!   3 batch   count:u32le  count × (kind:u8 (1 set | 2 delete)  set-or-delete payload)
//!   4 expire  count:u32le  count × key                (deleted because their TTL passed)
//!   5 evict   count:u32le  count × key                (deleted to stay within limits)
//! key, value = length:u32le  bytes
//! ```
//! The CRC covers the length too, so a damaged length is caught like damaged content. Every
//! field is fixed-width little endian: decoding is a bounds-checked walk, no varints.

use bytes::Bytes;

/// Bytes before the body: length and CRC.
pub const FRAME_HEADER: usize = 8;
/// Bytes of the body before the payload: LSN, timestamp, op.
const BODY_HEADER: usize = 17;
/// Upper bound on one record's body. A length above it is damage, never a record: this keeps
/// a corrupt length from making recovery allocate gigabytes.
pub const MAX_BODY: usize = 256 << 20;

/// One change to one key. Sets carry an absolute expiry so that replaying a record, however
/// late, gives the same result: that is what makes snapshot + replay idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Set {
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
    },
    Delete {
        key: Bytes,
    },
}

impl Mutation {
    pub fn key(&self) -> &Bytes {
        match self {
            Mutation::Set { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

/// What a record does. Expire and Evict are deletes whose cause is kept for metrics and for
/// readers of the log (replicas apply them as plain deletes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Set {
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
    },
    Delete {
        key: Bytes,
    },
    Batch(Vec<Mutation>),
    Expire(Vec<Bytes>),
    Evict(Vec<Bytes>),
}

impl Command {
    fn op(&self) -> u8 {
        match self {
            Command::Set { .. } => 1,
            Command::Delete { .. } => 2,
            Command::Batch(_) => 3,
            Command::Expire(_) => 4,
            Command::Evict(_) => 5,
        }
    }

    /// Bytes of keys and values the record carries: a size estimate for batching.
    pub fn approximate_size(&self) -> usize {
        let mut size = 0;
        self.for_each_mutation(|m| {
            size += match m {
                MutationRef::Set { key, value, .. } => key.len() + value.len() + 16,
                MutationRef::Delete { key } => key.len() + 8,
            }
        });
        size
    }

    /// How many changes the record makes (the calls [`Command::for_each_mutation`] makes).
    pub fn mutation_count(&self) -> usize {
        match self {
            Command::Set { .. } | Command::Delete { .. } => 1,
            Command::Batch(mutations) => mutations.len(),
            Command::Expire(keys) | Command::Evict(keys) => keys.len(),
        }
    }

    /// Call `f` with each change the record makes, in order, without copying keys or
    /// values: the one walk shared by apply, accounting and log readers.
    pub fn for_each_mutation<'a>(&'a self, mut f: impl FnMut(MutationRef<'a>)) {
        match self {
            Command::Set {
                key,
                value,
                expires_at_ms,
            } => f(MutationRef::Set {
                key,
                value,
                expires_at_ms: *expires_at_ms,
            }),
            Command::Delete { key } => f(MutationRef::Delete { key }),
            Command::Batch(mutations) => {
                for mutation in mutations {
                    f(match mutation {
                        Mutation::Set {
                            key,
                            value,
                            expires_at_ms,
                        } => MutationRef::Set {
                            key,
                            value,
                            expires_at_ms: *expires_at_ms,
                        },
                        Mutation::Delete { key } => MutationRef::Delete { key },
                    });
                }
            }
            Command::Expire(keys) | Command::Evict(keys) => {
                keys.iter().for_each(|key| f(MutationRef::Delete { key }));
            }
        }
    }
}

/// One change of a record, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutationRef<'a> {
    Set {
        key: &'a Bytes,
        value: &'a Bytes,
        expires_at_ms: u64,
    },
    Delete {
        key: &'a Bytes,
    },
}

impl<'a> MutationRef<'a> {
    pub fn key(self) -> &'a Bytes {
        match self {
            MutationRef::Set { key, .. } | MutationRef::Delete { key } => key,
        }
    }

    /// The change as an owned mutation (sharing the record's buffers).
    pub fn to_mutation(self) -> Mutation {
        match self {
            MutationRef::Set {
                key,
                value,
                expires_at_ms,
            } => Mutation::Set {
                key: key.clone(),
                value: value.clone(),
                expires_at_ms,
            },
            MutationRef::Delete { key } => Mutation::Delete { key: key.clone() },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub timestamp_ms: u64,
    pub command: Command,
}

/// Why bytes did not decode as a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before the record does: a torn write, or the end of the data.
    #[error("record truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("record length {0} is impossible")]
    BadLength(usize),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

/// Append the encoding of a record to `out`.
pub fn encode(lsn: u64, timestamp_ms: u64, command: &Command, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.push(command.op());
    match command {
        Command::Set {
            key,
            value,
            expires_at_ms,
        } => put_set(out, key, value, *expires_at_ms),
        Command::Delete { key } => put_bytes(out, key),
        Command::Batch(mutations) => {
            put_u32(out, mutations.len() as u32);
            for mutation in mutations {
                match mutation {
                    Mutation::Set {
                        key,
                        value,
                        expires_at_ms,
                    } => {
                        out.push(1);
                        put_set(out, key, value, *expires_at_ms);
                    }
                    Mutation::Delete { key } => {
                        out.push(2);
                        put_bytes(out, key);
                    }
                }
            }
        }
        Command::Expire(keys) | Command::Evict(keys) => {
            put_u32(out, keys.len() as u32);
            for key in keys {
                put_bytes(out, key);
            }
        }
    }
    seal_frame(out, start);
}

/// Fill in the length and CRC of the frame that starts at `start` and runs to the end of `out`
/// (its 8 header bytes reserved by the caller).
pub fn seal_frame(out: &mut [u8], start: usize) {
    let body_len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&body_len.to_le_bytes()),
        &out[start + FRAME_HEADER..],
    );
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decode the record at the start of `buf`; returns it and the bytes it occupied. Keys and
/// values are copied out, so the record does not pin `buf` in memory.
pub fn decode(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    let body = frame(buf)?;
    let record = decode_body(body)?;
    Ok((record, FRAME_HEADER + body.len()))
}

/// Check length and CRC of the record at the start of `buf` and return its body.
pub fn frame(buf: &[u8]) -> Result<&[u8], DecodeError> {
    checked_frame(buf, BODY_HEADER)
}

/// Check a `len crc body` frame whose body is at least `min_body` bytes. Snapshots use the
/// same framing for their entries.
pub(crate) fn checked_frame(buf: &[u8], min_body: usize) -> Result<&[u8], DecodeError> {
    if buf.len() < FRAME_HEADER {
        return Err(DecodeError::Truncated {
            needed: FRAME_HEADER,
            available: buf.len(),
        });
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if !(min_body..=MAX_BODY).contains(&len) {
        return Err(DecodeError::BadLength(len));
    }
    let total = FRAME_HEADER + len;
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let body = &buf[FRAME_HEADER..total];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), body);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    Ok(body)
}

fn decode_body(body: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader(body);
    let lsn = r.u64()?;
    let timestamp_ms = r.u64()?;
    let op = r.u8()?;
    let command = match op {
        1 => {
            let (key, value, expires_at_ms) = r.set()?;
            Command::Set {
                key,
                value,
                expires_at_ms,
            }
        }
        2 => Command::Delete { key: r.bytes()? },
        3 => {
            let count = r.count()?;
            let mut mutations = Vec::with_capacity(count);
            for _ in 0..count {
                mutations.push(match r.u8()? {
                    1 => {
                        let (key, value, expires_at_ms) = r.set()?;
                        Mutation::Set {
                            key,
                            value,
                            expires_at_ms,
                        }
                    }
                    2 => Mutation::Delete { key: r.bytes()? },
                    _ => return Err(DecodeError::Malformed("unknown mutation kind in batch")),
                });
            }
            Command::Batch(mutations)
        }
        4 | 5 => {
            let count = r.count()?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push(r.bytes()?);
            }
            if op == 4 {
                Command::Expire(keys)
            } else {
                Command::Evict(keys)
            }
        }
        _ => return Err(DecodeError::Malformed("unknown op")),
    };
    if !r.0.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after payload"));
    }
    Ok(Record {
        lsn,
        timestamp_ms,
        command,
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_set(out: &mut Vec<u8>, key: &[u8], value: &[u8], expires_at_ms: u64) {
    put_bytes(out, key);
    put_bytes(out, value);
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
}

/// A bounds-checked cursor over a record body. Shared with the snapshot codec.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed(
                "field runs past the end of the record",
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    /// A count of items that each take at least 4 bytes: rejecting counts the remaining bytes
    /// cannot hold keeps a damaged count from reserving huge vectors.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count > self.0.len() / 4 {
            return Err(DecodeError::Malformed("item count exceeds the record"));
        }
        Ok(count)
    }

    fn set(&mut self) -> Result<(Bytes, Bytes, u64), DecodeError> {
        Ok((self.bytes()?, self.bytes()?, self.u64()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn samples() -> Vec<Command> {
        vec![
            Command::Set {
                key: b("k"),
                value: b("value"),
                expires_at_ms: 42,
            },
            Command::Set {
                key: b(""),
                value: b(""),
                expires_at_ms: 0,
            },
            Command::Delete { key: b("gone") },
            Command::Batch(vec![
                Mutation::Set {
                    key: b("a"),
                    value: b("1"),
                    expires_at_ms: 0,
                },
                Mutation::Delete { key: b("b") },
            ]),
            Command::Batch(vec![]),
            Command::Expire(vec![b("x"), b("y")]),
            Command::Evict(vec![b("z")]),
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for (i, command) in samples().into_iter().enumerate() {
            let mut buf = Vec::new();
            encode(i as u64 + 1, 1000 + i as u64, &command, &mut buf);
            let (record, used) = decode(&buf).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(record.lsn, i as u64 + 1);
            assert_eq!(record.timestamp_ms, 1000 + i as u64);
            assert_eq!(record.command, command);
        }
    }

    #[test]
    fn mutation_count_is_what_the_walk_visits() {
        for command in samples() {
            let mut visited = 0;
            command.for_each_mutation(|_| visited += 1);
            assert_eq!(command.mutation_count(), visited, "{command:?}");
        }
    }

    #[test]
    fn every_truncation_is_reported_as_truncated_or_bad() {
        let mut buf = Vec::new();
        encode(7, 1, &samples()[3], &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(9, 2, &samples()[0], &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    decode(&damaged).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert!(matches!(decode(&[0; 64]), Err(DecodeError::BadLength(0))));
    }

    #[test]
    fn absurd_counts_are_rejected_without_allocating() {
        // A batch claiming u32::MAX mutations in a tiny body, with a valid CRC.
        let mut body = Vec::new();
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.push(3);
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &body);
        let mut buf = len.to_vec();
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&body);
        assert!(matches!(decode(&buf), Err(DecodeError::Malformed(_))));
    }
}
