//! The ingest log: requests are durable here before DuckDB has their spans.
//!
//! A request is synced to this log before it is answered, and the writer moves its spans into
//! DuckDB afterwards. Under load that lets a DuckDB transaction hold a whole row group (122,880
//! spans), which DuckDB compresses and writes straight to the database file instead of
//! serializing every row into its own WAL and compressing it again at the next checkpoint:
//! about 30% less CPU per span (BENCHMARKS.md). Each DuckDB transaction records the
//! [`LogPosition`] its spans reach, and opening the store replays whatever lies after it.
//!
//! The log is a directory of segments named by the sequence number of their first record
//! (`00000000000000000042.log`), each a run of records
//! `[payload length: u32 LE][CRC-32 of sequence number and payload: u32 LE][sequence number: u64 LE][payload]`
//! whose payload is the request as OTLP/protobuf. A record cut short or damaged by a crash ends
//! its segment: it was never synced, so never answered.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Segments are started anew past this size, so that applied ones can be removed whole.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const HEADER_BYTES: usize = 16;
/// Larger than any request the receivers accept, so a damaged length cannot make a reader
/// allocate without bound.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// How far spans from the log have been committed to DuckDB: every record before `seq`, and
/// the first `spans` spans of record `seq` (a record can be split between two transactions so
/// that each holds exactly a row group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LogPosition {
    pub seq: u64,
    pub spans: usize,
}

/// Appends records to the newest segment; owned by the writer's log thread.
pub(crate) struct LogWriter {
    dir: PathBuf,
    segment: File,
    segment_bytes: u64,
    /// A write or sync failed: what follows in this segment may be cut short, so the next
    /// group starts a new one.
    broken: bool,
    next_seq: u64,
    /// Reused for each group, so appending allocates only while requests grow.
    buffer: Vec<u8>,
}

impl LogWriter {
    /// Starts a segment at `next_seq`, which must be past every intact record in `dir`; a
    /// segment named at or past it holds none and is removed.
    pub(crate) fn create(dir: &Path, next_seq: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for (first, path) in segments(dir)? {
            if first >= next_seq {
                fs::remove_file(path)?;
            }
        }
        let segment = new_segment(dir, next_seq)?;
        Ok(Self {
            dir: dir.to_owned(),
            segment,
            segment_bytes: 0,
            broken: false,
            next_seq,
            buffer: Vec::new(),
        })
    }

    /// Appends one record per payload and syncs them; returns the first one's sequence number.
    /// Numbers are never handed out twice, even to records whose write failed: a reader may
    /// already have seen them.
    pub(crate) fn append<'p>(&mut self, payloads: impl IntoIterator<Item = &'p [u8]>) -> io::Result<u64> {
        if self.broken || self.segment_bytes >= SEGMENT_BYTES {
            self.segment = new_segment(&self.dir, self.next_seq)?;
            self.segment_bytes = 0;
            self.broken = false;
        }
        let first = self.next_seq;
        self.buffer.clear();
        for payload in payloads {
            let seq = self.next_seq;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(payload);
            self.buffer
                .extend_from_slice(&(payload.len() as u32).to_le_bytes());
            self.buffer.extend_from_slice(&crc.finalize().to_le_bytes());
            self.buffer.extend_from_slice(&seq.to_le_bytes());
            self.buffer.extend_from_slice(payload);
            self.next_seq += 1;
        }
        if self.buffer.is_empty() {
            return Ok(first);
        }
        let written = self
            .segment
            .write_all(&self.buffer)
            .and_then(|()| self.segment.sync_data());
        if let Err(error) = written {
            // None of these requests is answered; if some reached the disk whole anyway, a
            // replay stores them and the client's retry stores them again (OTLP delivers at
            // least once).
            self.broken = true;
            return Err(error);
        }
        self.segment_bytes += self.buffer.len() as u64;
        Ok(first)
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// Creates the segment starting at `first_seq`, and syncs the directory so that the file itself
/// survives a crash.
fn new_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(segment_path(dir, first_seq))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The segments in `dir` by first sequence number, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|name| name.to_str()?.strip_suffix(".log")?.parse().ok());
        if let Some(first) = first {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// What the log holds from some sequence number on.
pub(crate) struct Tail {
    /// Every intact record, with its sequence number, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The sequence number after the last intact record in the whole log (or the one asked
    /// for, if greater).
    pub next_seq: u64,
}

/// Every intact record in `dir` from sequence number `from` on.
pub(crate) fn read_from(dir: &Path, from: u64) -> io::Result<Tail> {
    let mut records = Vec::new();
    let mut next = from;
    for (_, path) in segments(dir)? {
        let bytes = fs::read(&path)?;
        let mut rest = &bytes[..];
        while let Some((seq, payload, after)) = record(rest) {
            if seq >= from {
                records.push((seq, payload.to_vec()));
            }
            next = next.max(seq + 1);
            rest = after;
        }
        if !rest.is_empty() {
            tracing::warn!(path = %path.display(), bytes = rest.len(), "ignoring a record cut short or damaged by a crash");
        }
    }
    Ok(Tail {
        records,
        next_seq: next,
    })
}

/// The record at the start of `bytes` and what follows it, if it is whole and intact.
fn record(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let header = bytes.get(..HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + len)?;
    let mut check = crc32fast::Hasher::new();
    check.update(&header[8..16]);
    check.update(payload);
    (check.finalize() == crc).then(|| (seq, payload, &bytes[HEADER_BYTES + len..]))
}

/// Removes the segments whose records all lie before `seq`: a segment is known to end where the
/// next one starts, so the newest segment always stays.
pub(crate) fn discard_before(dir: &Path, seq: u64) -> io::Result<()> {
    let segments = segments(dir)?;
    for pair in segments.windows(2) {
        let [(_, path), (next_first, _)] = pair else {
            unreachable!()
        };
        if *next_first <= seq {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ducktrace-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_read_back_in_order_from_a_position() {
        let dir = temp_dir("order");
        let mut log = LogWriter::create(&dir, 7).unwrap();
        assert_eq!(log.append([&b"a"[..], b"bb"]).unwrap(), 7);
        assert_eq!(log.append([&b"ccc"[..]]).unwrap(), 9);
        let tail = read_from(&dir, 8).unwrap();
        assert_eq!(tail.records, vec![(8, b"bb".to_vec()), (9, b"ccc".to_vec())]);
        assert_eq!(tail.next_seq, 10);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_or_damaged_record_ends_its_segment_and_later_segments_still_count() {
        let dir = temp_dir("torn");
        let mut log = LogWriter::create(&dir, 0).unwrap();
        log.append([&b"kept"[..], b"torn"]).unwrap();
        drop(log);
        let first = segment_path(&dir, 0);
        let bytes = fs::read(&first).unwrap();
        // Cut the second record short, as a crash during its write would.
        fs::write(&first, &bytes[..bytes.len() - 2]).unwrap();
        let tail = read_from(&dir, 0).unwrap();
        assert_eq!(tail.records, vec![(0, b"kept".to_vec())]);
        assert_eq!(tail.next_seq, 1);

        // A restart numbers on from the last intact record, in a segment of its own.
        let mut log = LogWriter::create(&dir, tail.next_seq).unwrap();
        log.append([&b"after"[..]]).unwrap();
        // A flipped bit in the first record makes it, and what follows in its segment, unreadable.
        let mut damaged = fs::read(&first).unwrap();
        damaged[HEADER_BYTES] ^= 1;
        fs::write(&first, damaged).unwrap();
        assert_eq!(read_from(&dir, 0).unwrap().records, vec![(1, b"after".to_vec())]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_segments_wholly_before_the_position_are_discarded() {
        let dir = temp_dir("discard");
        LogWriter::create(&dir, 0)
            .unwrap()
            .append([&b"a"[..], b"b"])
            .unwrap();
        LogWriter::create(&dir, 2).unwrap().append([&b"c"[..]]).unwrap();
        LogWriter::create(&dir, 3).unwrap();
        discard_before(&dir, 2).unwrap();
        let firsts = || -> Vec<u64> {
            segments(&dir)
                .unwrap()
                .into_iter()
                .map(|(first, _)| first)
                .collect()
        };
        assert_eq!(firsts(), vec![2, 3]);
        discard_before(&dir, 100).unwrap();
        assert_eq!(firsts(), vec![3], "the newest segment is the one being written");
        fs::remove_dir_all(&dir).unwrap();
    }
}
