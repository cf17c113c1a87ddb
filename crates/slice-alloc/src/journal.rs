//! Durable state: a serde [`Snapshot`] plus an append-only journal of checksummed records.
//!
//! # Journal format (version 1)
//! An 8-byte header `b"SLAJ"` + `1u32` (little endian), then frames:
//!
//! | field   | size | meaning                                    |
//! |---------|------|--------------------------------------------|
//! | `len`   | 4    | payload length, little endian              |
//! | `crc`   | 4    | CRC-32 (IEEE, `crc32fast`) of the payload  |
//! | payload | len  | `seq: u64`, `tag: u8`, body (little endian) |
//!
//! Bodies: `1` AddDevice `id, capacity, granularity, reserved`; `2` RemoveDevice `id`;
//! `3` Allocate `slice, device, n: u32, n × (offset, len)`; `4` Free `slice`;
//! `5` Resize `slice, n: u32, n × (offset, len)` (the slice's full new extent list). Offsets
//! and lengths are bytes. Sequence numbers increase by exactly one from frame to frame.
//!
//! # Recovery rules
//! A frame that runs past the end of the buffer, or a bad frame followed only by zero bytes or
//! nothing, is a torn tail: it was never acknowledged (the write did not complete), so it is
//! dropped and [`Recovered::valid_len`] says where to truncate. A bad frame followed by more
//! data is corruption: truncating there would lose acknowledged records, so recovery refuses
//! with [`Error::CorruptJournal`] naming the byte offset.
//!
//! # Condensing
//! When [`Journaled::needs_condense`] says so: take [`Journaled::snapshot`], persist it
//! atomically, then [`Journaled::switch_journal`] to an empty writer and delete the old journal.
//! A crash anywhere in between is safe: records already in the snapshot (`seq <= last_seq`) are
//! skipped on replay.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, Error, Extent, Reservation,
    Slice, SliceId,
};

/// Journal header: magic and format version.
pub const JOURNAL_HEADER: [u8; 8] = *b"SLAJ\x01\0\0\0";
/// Largest payload a frame may claim; anything larger is damage, not data.
const MAX_PAYLOAD: u32 = 1 << 24;
/// Default journal size (bytes) past which [`Journaled::needs_condense`] returns `true`.
pub const DEFAULT_CONDENSE_THRESHOLD: u64 = 64 << 20;
/// Current snapshot format version.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A durable change to the allocator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Record {
    /// A device was added.
    AddDevice(DeviceSpec),
    /// An empty device was removed.
    RemoveDevice(DeviceId),
    /// A slice was allocated (or a reservation committed) with these extents.
    Allocate {
        /// The slice.
        slice: SliceId,
        /// Its device.
        device: DeviceId,
        /// Its extents, in bytes.
        extents: Vec<Extent>,
    },
    /// A slice was freed.
    Free {
        /// The slice.
        slice: SliceId,
    },
    /// A slice was grown or shrunk; these are its complete new extents.
    Resize {
        /// The slice.
        slice: SliceId,
        /// Its new extents, in bytes.
        extents: Vec<Extent>,
    },
}

/// The whole committed state at a point of the journal. Reservations are not included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`] at the time of writing.
    pub format: u32,
    /// Sequence number of the last journal record included.
    pub last_seq: u64,
    /// Next slice id to hand out.
    pub next_slice_id: u64,
    /// Devices sorted by id, each with its slices sorted by id.
    pub devices: Vec<DeviceSnapshot>,
}

/// One device in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    /// The device geometry.
    pub spec: DeviceSpec,
    /// Its committed slices, sorted by id.
    pub slices: Vec<SliceSnapshot>,
}

/// One slice in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSnapshot {
    /// The slice.
    pub id: SliceId,
    /// Its extents, in bytes.
    pub extents: Vec<Extent>,
}

impl Allocator {
    /// The committed state (reservations excluded), canonically ordered, tagged with the
    /// sequence number of the last journal record it includes.
    pub fn snapshot(&self, last_seq: u64) -> Snapshot {
        let mut devices: Vec<DeviceSnapshot> = Vec::new();
        let mut pos = vec![usize::MAX; self.devices.len()];
        let mut order: Vec<u32> = self.by_id.values().copied().collect();
        order.sort_by_key(|&i| self.dev(i).spec.id());
        for i in order {
            pos[i as usize] = devices.len();
            devices.push(DeviceSnapshot {
                spec: self.dev(i).spec.clone(),
                slices: Vec::new(),
            });
        }
        for (&id, e) in &self.slices {
            if e.expires.is_none() {
                let s = self.to_slice(id, e);
                devices[pos[e.device as usize]].slices.push(SliceSnapshot {
                    id,
                    extents: s.extents,
                });
            }
        }
        for d in &mut devices {
            d.slices.sort_by_key(|s| s.id);
        }
        Snapshot {
            format: SNAPSHOT_FORMAT,
            last_seq,
            next_slice_id: self.next_id,
            devices,
        }
    }

    /// Rebuilds an allocator from a snapshot, checking every invariant: known format, unique
    /// devices and slice ids, every extent aligned and inside its device, no overlaps. The
    /// error names the offending device or slice.
    pub fn from_snapshot(snapshot: &Snapshot, config: AllocatorConfig) -> Result<Self, Error> {
        let wrap = |e| Error::BadSnapshot(Box::new(e));
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(wrap(Error::InvalidArgument {
                field: "snapshot.format",
                rule: format!(
                    "version {} is not supported (expected {SNAPSHOT_FORMAT})",
                    snapshot.format
                ),
            }));
        }
        let mut a = Allocator::new(config)?;
        for d in &snapshot.devices {
            a.add_device(d.spec.clone()).map_err(wrap)?;
        }
        for d in &snapshot.devices {
            for s in &d.slices {
                a.restore(s.id, d.spec.id(), &s.extents, None)
                    .map_err(wrap)?;
            }
        }
        a.next_id = a.next_id.max(snapshot.next_slice_id);
        Ok(a)
    }

    /// Applies one journal record (used by recovery; also usable to mirror a journal stream).
    /// Checks the same invariants as the operations themselves and changes nothing on error.
    pub fn apply(&mut self, record: &Record) -> Result<(), Error> {
        match record {
            Record::AddDevice(spec) => self.add_device(spec.clone()),
            Record::RemoveDevice(id) => self.remove_device(*id).map(drop),
            Record::Allocate {
                slice,
                device,
                extents,
            } => self.restore(*slice, *device, extents, None),
            Record::Free { slice } => self.free(*slice).map(drop),
            Record::Resize { slice, extents } => {
                let old = self.slice(*slice).ok_or(Error::UnknownSlice(*slice))?;
                if self.is_reservation(*slice) {
                    return Err(Error::WrongState {
                        slice: *slice,
                        actual: "a reservation",
                        expected: "a committed slice",
                    });
                }
                self.remove_entry(*slice);
                if let Err(e) = self.restore(*slice, old.device, extents, None) {
                    self.restore(*slice, old.device, &old.extents, None)
                        .expect("old extents were just freed");
                    return Err(e);
                }
                Ok(())
            }
        }
    }
}

// ---- encoding ----

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_extents(out: &mut Vec<u8>, extents: &[Extent]) {
    out.extend_from_slice(&(extents.len() as u32).to_le_bytes());
    for e in extents {
        put_u64(out, e.offset());
        put_u64(out, e.len());
    }
}

/// Appends one frame holding `record` with sequence number `seq` to `out`.
pub fn encode_record(seq: u64, record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    put_u64(out, seq);
    match record {
        Record::AddDevice(s) => {
            out.push(1);
            for v in [s.id().get(), s.capacity(), s.granularity(), s.reserved()] {
                put_u64(out, v);
            }
        }
        Record::RemoveDevice(id) => {
            out.push(2);
            put_u64(out, id.get());
        }
        Record::Allocate {
            slice,
            device,
            extents,
        } => {
            out.push(3);
            put_u64(out, slice.get());
            put_u64(out, device.get());
            put_extents(out, extents);
        }
        Record::Free { slice } => {
            out.push(4);
            put_u64(out, slice.get());
        }
        Record::Resize { slice, extents } => {
            out.push(5);
            put_u64(out, slice.get());
            put_extents(out, extents);
        }
    }
    let payload_len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        let (h, t) = self.0.split_first_chunk::<8>().ok_or("payload too short")?;
        self.0 = t;
        Ok(u64::from_le_bytes(*h))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let (h, t) = self.0.split_first_chunk::<4>().ok_or("payload too short")?;
        self.0 = t;
        Ok(u32::from_le_bytes(*h))
    }
    fn u8(&mut self) -> Result<u8, String> {
        let (h, t) = self.0.split_first().ok_or("payload too short")?;
        self.0 = t;
        Ok(*h)
    }
    fn extents(&mut self) -> Result<Vec<Extent>, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(16) > self.0.len() {
            return Err(format!(
                "claims {n} extents but only {} bytes remain",
                self.0.len()
            ));
        }
        (0..n)
            .map(|_| Extent::new(self.u64()?, self.u64()?).map_err(|e| e.to_string()))
            .collect()
    }
}

fn decode_payload(payload: &[u8]) -> Result<(u64, Record), String> {
    let mut c = Cursor(payload);
    let seq = c.u64()?;
    let rec = match c.u8()? {
        1 => {
            let (id, cap, gran, res) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
            let spec = DeviceSpec::from_parts(DeviceId::new(id), cap, gran, res)
                .map_err(|e| e.to_string())?;
            Record::AddDevice(spec)
        }
        2 => Record::RemoveDevice(DeviceId::new(c.u64()?)),
        3 => Record::Allocate {
            slice: SliceId::new(c.u64()?),
            device: DeviceId::new(c.u64()?),
            extents: c.extents()?,
        },
        4 => Record::Free {
            slice: SliceId::new(c.u64()?),
        },
        5 => Record::Resize {
            slice: SliceId::new(c.u64()?),
            extents: c.extents()?,
        },
        t => return Err(format!("unknown record tag {t}")),
    };
    if !c.0.is_empty() {
        return Err(format!("{} trailing bytes after the record", c.0.len()));
    }
    Ok((seq, rec))
}

/// One decoded journal frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Sequence number.
    pub seq: u64,
    /// Byte offset of the frame in the journal.
    pub offset: u64,
    /// The record.
    pub record: Record,
}

/// A torn tail that decoding dropped: a bad frame with no valid frame after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTail {
    /// Byte offset of the bad frame (equal to the `valid_len` of the decode).
    pub offset: u64,
    /// Bytes dropped, from `offset` to the end of the buffer.
    pub bytes: u64,
    /// Sequence number the dropped frame would have carried (one after the last good frame;
    /// `None` when no frame before it decoded).
    pub seq: Option<u64>,
    /// Why the frame is bad (incomplete header, length out of range, runs past the end,
    /// checksum mismatch).
    pub reason: String,
}

/// The result of decoding a journal buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedJournal {
    /// Every complete, checksum-valid frame, in order.
    pub entries: Vec<JournalEntry>,
    /// Bytes up to the end of the last good frame (0 if even the header is incomplete): truncate
    /// the journal to this length before appending to it.
    pub valid_len: usize,
    /// Bytes of torn tail dropped after `valid_len`.
    pub torn_bytes: usize,
    /// The torn tail that was dropped: `None` when the buffer ends exactly after a good frame
    /// or continues with zero bytes only (space that was never written).
    pub dropped: Option<DroppedTail>,
}

/// Why the frame at the start of a buffer is not a good frame.
enum BadFrame {
    /// Could be a torn write: incomplete, implausible length, checksum mismatch.
    Torn(String),
    /// Checksum-valid but undecodable: never a torn write, always refused.
    Invalid(String),
}

/// Parses the frame at the start of `rest`: its sequence number, record and length in bytes.
fn parse_frame(rest: &[u8]) -> Result<(u64, Record, usize), BadFrame> {
    let Some((head, body)) = rest.split_first_chunk::<8>() else {
        return Err(BadFrame::Torn(format!(
            "frame header incomplete ({} of 8 bytes)",
            rest.len()
        )));
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(9..=MAX_PAYLOAD).contains(&len) {
        return Err(BadFrame::Torn(format!(
            "frame length {len} is out of range 9..={MAX_PAYLOAD}"
        )));
    }
    let Some(payload) = body.get(..len as usize) else {
        return Err(BadFrame::Torn(format!(
            "frame of {len} payload bytes runs past the end ({} remain)",
            body.len()
        )));
    };
    if crc32fast::hash(payload) != crc {
        return Err(BadFrame::Torn("checksum mismatch".into()));
    }
    let (seq, record) = decode_payload(payload).map_err(BadFrame::Invalid)?;
    Ok((seq, record, 8 + len as usize))
}

/// The first position at or after `from` where a checksum-valid, decodable frame with a
/// sequence number above `after` (any, when `None`) starts: proof that a bad frame before it
/// is damage, not a torn tail. Byte by byte, because a damaged length field hides where the
/// next frame starts; a position is checksummed only when its length field is plausible and
/// the frame fits in the buffer.
fn later_frame(bytes: &[u8], from: usize, after: Option<u64>) -> Option<(usize, u64)> {
    (from..bytes.len()).find_map(|pos| match parse_frame(&bytes[pos..]) {
        Ok((seq, _, _)) if after.is_none_or(|a| seq > a) => Some((pos, seq)),
        _ => None,
    })
}

/// Decodes a journal buffer, dropping a torn tail and refusing damage anywhere else (see the
/// [module docs](self) for the rules).
pub fn decode_journal(bytes: &[u8]) -> Result<DecodedJournal, Error> {
    let corrupt = |offset: usize, reason: String| Error::CorruptJournal {
        offset: offset as u64,
        reason,
    };
    let hl = JOURNAL_HEADER.len();
    if bytes.len() < hl {
        if bytes == &JOURNAL_HEADER[..bytes.len()] {
            return Ok(DecodedJournal {
                entries: Vec::new(),
                valid_len: 0,
                torn_bytes: bytes.len(),
                dropped: (!bytes.is_empty()).then(|| DroppedTail {
                    offset: 0,
                    bytes: bytes.len() as u64,
                    seq: None,
                    reason: format!("journal header incomplete ({} of {hl} bytes)", bytes.len()),
                }),
            });
        }
        return Err(corrupt(0, "not a slice-alloc journal (bad magic)".into()));
    }
    if bytes[..hl] != JOURNAL_HEADER {
        return Err(corrupt(
            0,
            "not a slice-alloc journal version 1 (bad magic or version)".into(),
        ));
    }
    let mut pos = hl;
    let mut entries: Vec<JournalEntry> = Vec::new();
    let mut dropped = None;
    while pos < bytes.len() {
        match parse_frame(&bytes[pos..]) {
            Ok((seq, record, len)) => {
                if let Some(prev) = entries.last()
                    && seq != prev.seq + 1
                {
                    return Err(corrupt(
                        pos,
                        format!("sequence {seq} does not follow {}", prev.seq),
                    ));
                }
                entries.push(JournalEntry {
                    seq,
                    offset: pos as u64,
                    record,
                });
                pos += len;
            }
            Err(BadFrame::Invalid(reason)) => return Err(corrupt(pos, reason)),
            Err(BadFrame::Torn(reason)) => {
                // A torn write can only be the last thing in the journal: a later intact frame
                // that continues the sequence proves that this frame was damaged after it was
                // written (and acknowledged), so truncating here would lose records.
                let last = entries.last().map(|e| e.seq);
                if let Some((at, seq)) = later_frame(bytes, pos + 1, last) {
                    return Err(corrupt(
                        pos,
                        format!(
                            "{reason}, but an intact frame with sequence {seq} follows at byte \
                             {at}: this is damage, not a torn tail, and truncating would lose \
                             acknowledged records"
                        ),
                    ));
                }
                // Zero bytes after the last frame (preallocated or zero-filled space) are not
                // a frame at all: nothing was torn.
                if bytes[pos..].iter().any(|&b| b != 0) {
                    dropped = Some(DroppedTail {
                        offset: pos as u64,
                        bytes: (bytes.len() - pos) as u64,
                        seq: last.map(|s| s + 1),
                        reason,
                    });
                }
                break;
            }
        }
    }
    Ok(DecodedJournal {
        entries,
        valid_len: pos,
        torn_bytes: bytes.len() - pos,
        dropped,
    })
}

/// What [`recover`] rebuilt.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The recovered allocator (no reservations).
    pub allocator: Allocator,
    /// Sequence number of the last record applied (or of the snapshot).
    pub last_seq: u64,
    /// Journal records applied on top of the snapshot.
    pub applied: usize,
    /// Truncate the journal to this many bytes before appending (0: start a new journal).
    pub valid_len: usize,
    /// Torn-tail bytes dropped.
    pub torn_bytes: usize,
    /// What was dropped as a torn tail, and why (see [`DecodedJournal::dropped`]). Every
    /// record before [`DroppedTail::offset`] was recovered; the dropped frame was the last thing
    /// in the journal, so it was never acknowledged unless the journal was damaged there.
    pub dropped: Option<DroppedTail>,
}

/// Rebuilds the allocator from an optional snapshot and a journal buffer. Records already in the
/// snapshot are skipped; a gap between the snapshot and the journal, a corrupt frame before the
/// tail, or a record that breaks an invariant (overlap, out of range) is refused with an error
/// naming it.
pub fn recover(
    snapshot: Option<&Snapshot>,
    journal: &[u8],
    config: AllocatorConfig,
) -> Result<Recovered, Error> {
    let (mut allocator, mut last_seq) = match snapshot {
        Some(s) => (Allocator::from_snapshot(s, config)?, s.last_seq),
        None => (Allocator::new(config)?, 0),
    };
    let decoded = decode_journal(journal)?;
    let mut applied = 0;
    for e in &decoded.entries {
        if e.seq <= last_seq {
            continue;
        }
        if e.seq != last_seq + 1 {
            return Err(Error::CorruptJournal {
                offset: e.offset,
                reason: format!("record {} follows {last_seq}: records are missing", e.seq),
            });
        }
        allocator.apply(&e.record).map_err(|source| Error::Replay {
            seq: e.seq,
            offset: e.offset,
            source: Box::new(source),
        })?;
        last_seq = e.seq;
        applied += 1;
    }
    Ok(Recovered {
        allocator,
        last_seq,
        applied,
        valid_len: decoded.valid_len,
        torn_bytes: decoded.torn_bytes,
        dropped: decoded.dropped,
    })
}

/// An [`Allocator`] whose every committed change is appended to a journal before the call
/// returns. An operation is acknowledged when it returns `Ok`: its record has been written and
/// the writer flushed (make `flush` durable, e.g. `sync_data`, in the writer you pass).
///
/// If a write fails the operation is rolled back and the wrapper refuses further changes
/// ([`Error::JournalPoisoned`]) until [`switch_journal`](Self::switch_journal), because the old
/// journal may end in a partial frame.
#[derive(Debug)]
pub struct Journaled<W: Write> {
    alloc: Allocator,
    writer: W,
    last_seq: u64,
    journal_len: u64,
    threshold: u64,
    poisoned: bool,
    buf: Vec<u8>,
}

impl<W: Write> Journaled<W> {
    /// Starts a new journal on `writer` (writes the header) for `alloc`, whose state is covered
    /// by a snapshot with `last_seq` (0 for a fresh allocator).
    pub fn create(
        alloc: Allocator,
        mut writer: W,
        last_seq: u64,
        threshold: u64,
    ) -> Result<Self, Error> {
        writer
            .write_all(&JOURNAL_HEADER)
            .and_then(|()| writer.flush())
            .map_err(Error::JournalWrite)?;
        Ok(Self {
            alloc,
            writer,
            last_seq,
            journal_len: JOURNAL_HEADER.len() as u64,
            threshold,
            poisoned: false,
            buf: Vec::new(),
        })
    }

    /// Continues after [`recover`]: `writer` must append to the journal truncated to
    /// `recovered.valid_len` (when that is 0 a header is written first).
    pub fn resume(recovered: Recovered, writer: W, threshold: u64) -> Result<Self, Error> {
        if recovered.valid_len == 0 {
            return Self::create(recovered.allocator, writer, recovered.last_seq, threshold);
        }
        Ok(Self {
            alloc: recovered.allocator,
            writer,
            last_seq: recovered.last_seq,
            journal_len: recovered.valid_len as u64,
            threshold,
            poisoned: false,
            buf: Vec::new(),
        })
    }

    /// The allocator (read-only; change it through this wrapper).
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }
    /// The journal writer.
    pub fn writer(&self) -> &W {
        &self.writer
    }
    /// Sequence number of the last acknowledged record.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    /// Bytes written to the current journal, header included.
    pub fn journal_len(&self) -> u64 {
        self.journal_len
    }
    /// Whether the journal has grown past the condense threshold.
    pub fn needs_condense(&self) -> bool {
        self.journal_len > self.threshold
    }
    /// A snapshot covering every acknowledged record.
    pub fn snapshot(&self) -> Snapshot {
        self.alloc.snapshot(self.last_seq)
    }
    /// Starts a new journal on `writer` (after the caller persisted [`snapshot`](Self::snapshot))
    /// and returns the old writer.
    pub fn switch_journal(&mut self, mut writer: W) -> Result<W, Error> {
        writer
            .write_all(&JOURNAL_HEADER)
            .and_then(|()| writer.flush())
            .map_err(Error::JournalWrite)?;
        self.poisoned = false;
        self.journal_len = JOURNAL_HEADER.len() as u64;
        Ok(std::mem::replace(&mut self.writer, writer))
    }
    /// Splits into the allocator and the writer.
    pub fn into_parts(self) -> (Allocator, W) {
        (self.alloc, self.writer)
    }

    fn check(&self) -> Result<(), Error> {
        if self.poisoned {
            Err(Error::JournalPoisoned)
        } else {
            Ok(())
        }
    }

    fn log(&mut self, record: &Record) -> Result<(), std::io::Error> {
        self.buf.clear();
        encode_record(self.last_seq + 1, record, &mut self.buf);
        let r = self
            .writer
            .write_all(&self.buf)
            .and_then(|()| self.writer.flush());
        match r {
            Ok(()) => {
                self.last_seq += 1;
                self.journal_len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// [`Allocator::add_device`], journaled.
    pub fn add_device(&mut self, spec: DeviceSpec) -> Result<(), Error> {
        self.check()?;
        let id = spec.id();
        self.alloc.add_device(spec.clone())?;
        self.log(&Record::AddDevice(spec)).map_err(|e| {
            self.alloc.remove_device(id).expect("just added");
            Error::JournalWrite(e)
        })
    }

    /// [`Allocator::remove_device`], journaled.
    pub fn remove_device(&mut self, id: DeviceId) -> Result<DeviceSpec, Error> {
        self.check()?;
        let spec = self.alloc.remove_device(id)?;
        match self.log(&Record::RemoveDevice(id)) {
            Ok(()) => Ok(spec),
            Err(e) => {
                self.alloc.add_device(spec).expect("just removed");
                Err(Error::JournalWrite(e))
            }
        }
    }

    fn log_new(&mut self, s: Slice) -> Result<Slice, Error> {
        let rec = Record::Allocate {
            slice: s.id,
            device: s.device,
            extents: s.extents.clone(),
        };
        match self.log(&rec) {
            Ok(()) => Ok(s),
            Err(e) => {
                self.alloc.remove_entry(s.id);
                Err(Error::JournalWrite(e))
            }
        }
    }

    /// [`Allocator::allocate`], journaled.
    pub fn allocate(&mut self, size: u64, constraints: &Constraints<'_>) -> Result<Slice, Error> {
        self.check()?;
        let s = self.alloc.allocate(size, constraints)?;
        self.log_new(s)
    }

    /// [`Allocator::allocate_at`], journaled.
    pub fn allocate_at(
        &mut self,
        device: DeviceId,
        offset: u64,
        size: u64,
    ) -> Result<Slice, Error> {
        self.check()?;
        let s = self.alloc.allocate_at(device, offset, size)?;
        self.log_new(s)
    }

    /// [`Allocator::free`], journaled.
    pub fn free(&mut self, id: SliceId) -> Result<Slice, Error> {
        self.check()?;
        let s = self.alloc.free(id)?;
        match self.log(&Record::Free { slice: id }) {
            Ok(()) => Ok(s),
            Err(e) => {
                self.alloc
                    .restore(s.id, s.device, &s.extents, None)
                    .expect("space was just freed");
                Err(Error::JournalWrite(e))
            }
        }
    }

    fn resize(&mut self, id: SliceId, new_size: u64, grow: bool) -> Result<Slice, Error> {
        self.check()?;
        let old = self.alloc.slice(id).ok_or(Error::UnknownSlice(id))?;
        let s = if grow {
            self.alloc.grow(id, new_size)?
        } else {
            self.alloc.shrink(id, new_size)?
        };
        if s == old {
            return Ok(s);
        }
        match self.log(&Record::Resize {
            slice: id,
            extents: s.extents.clone(),
        }) {
            Ok(()) => Ok(s),
            Err(e) => {
                self.alloc.remove_entry(id);
                self.alloc
                    .restore(id, old.device, &old.extents, None)
                    .expect("old extents were just freed");
                Err(Error::JournalWrite(e))
            }
        }
    }

    /// [`Allocator::grow`], journaled.
    pub fn grow(&mut self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
        self.resize(id, new_size, true)
    }

    /// [`Allocator::shrink`], journaled.
    pub fn shrink(&mut self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
        self.resize(id, new_size, false)
    }

    /// [`Allocator::reserve`] (reservations are not journaled).
    pub fn reserve(
        &mut self,
        size: u64,
        constraints: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        self.check()?;
        self.alloc.reserve(size, constraints, now, ttl)
    }

    /// [`Allocator::commit`], journaled as an allocation.
    pub fn commit(&mut self, id: SliceId, now: u64) -> Result<Slice, Error> {
        self.check()?;
        let s = self.alloc.commit(id, now)?;
        let rec = Record::Allocate {
            slice: s.id,
            device: s.device,
            extents: s.extents.clone(),
        };
        match self.log(&rec) {
            Ok(()) => Ok(s),
            Err(e) => {
                // Back to a reservation that expires now: the caller was told the commit failed.
                self.alloc.remove_entry(id);
                self.alloc
                    .restore(id, s.device, &s.extents, Some(now))
                    .expect("space was just freed");
                Err(Error::JournalWrite(e))
            }
        }
    }

    /// [`Allocator::release`] (not journaled).
    pub fn release(&mut self, id: SliceId) -> Result<Slice, Error> {
        self.alloc.release(id)
    }

    /// [`Allocator::expire`] (not journaled).
    pub fn expire(&mut self, now: u64) -> Vec<SliceId> {
        self.alloc.expire(now)
    }
}
