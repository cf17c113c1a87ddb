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
//! Bodies (integers little endian, offsets and lengths in bytes, strings `len: u32` + UTF-8):
//!
//! | tag | record | body |
//! |-----|--------|------|
//! | 1 | AddDevice | `id, capacity, granularity, reserved` |
//! | 2 | RemoveDevice | `id` |
//! | 3 | Allocate (also a commit's slice in journals before tag 7) | `slice, device, n: u32, n × (offset, len)` |
//! | 4 | Free | `slice` |
//! | 5 | Resize | `slice, n: u32, n × (offset, len)` (the full new extent list) |
//! | 6 | Reserve | `slice, device, expires_at, n: u32, n × (offset, len)` |
//! | 7 | Commit | `slice` |
//! | 8 | Release (by the caller or on expiry) | `slice` |
//! | 9 | Renew | `slice, expires_at` |
//! | 10 | SetLabel | `device, key, 0` (removed) or `device, key, 1, value` |
//! | 11 | Cordon | `device, 0/1` |
//! | 12 | ResizeDevice | `device, capacity` |
//! | 13 | SetReserved | `device, reserved` |
//! | 14 | Atomic | `n: u32` (≥ 2), then `n` × (tag, body) of non-atomic records |
//!
//! A payload holds at most 16 MiB (recovery treats a longer length as damage), so a change
//! whose record would be longer (a multi-extent slice of over a million extents) is refused
//! and undone rather than written and acknowledged.
//!
//! Sequence numbers increase by exactly one from frame to frame. A call that makes several
//! changes (`reserve` or `expire` releasing expired reservations) writes one Atomic frame.
//! Every slice and reservation id appears in the record that created it, so replay (and the
//! snapshot's `next_slice_id`) never hands an id out twice.
//!
//! # Recovery rules
//! A torn write can only be the last thing in a journal. So a bad frame (incomplete header,
//! length out of range, running past the end, checksum mismatch) is a torn tail only when no
//! intact frame continuing the sequence follows it anywhere in the buffer (a byte-by-byte scan,
//! since a damaged length field hides where the next frame starts): then it is dropped,
//! [`Recovered::valid_len`] says where to truncate and [`Recovered::dropped`] what was dropped
//! and why (`None` when only zero bytes follow the last frame). Otherwise the journal is
//! damaged, truncating would lose acknowledged records, and recovery refuses with
//! [`Error::CorruptJournal`] naming the byte offset. A checksum-valid frame that does not
//! decode, or a sequence gap, is always refused, and so is a record carrying slice id
//! `u64::MAX` (no id would be left after it) or a sequence that runs past `u64::MAX`. Every single-byte corruption of a journal is
//! thus either refused, or (in its last frame, where it cannot be told from a torn write)
//! recovered to every record before the damaged frame, and reported.
//!
//! One case is refused although nothing acknowledged was lost: after a power loss in the middle
//! of a multi-page group-commit batch, the file system may have kept a later page of the batch
//! and not an earlier one. None of the batch was acknowledged (its sync never returned), but a
//! hole followed by an intact frame looks exactly like damage; the error names the offset, and
//! an operator who knows the crash was a power loss may truncate there.
//!
//! # Condensing
//! When [`Journaled::needs_condense`] says so: take [`Journaled::snapshot`], persist it
//! atomically, then [`Journaled::switch_journal`] to an empty writer and delete the old journal
//! ([`GroupCommit::condense`](crate::GroupCommit::condense) does the same steps under its lock).
//! A crash anywhere in between is safe: records already in the snapshot (`seq <= last_seq`) are
//! skipped on replay.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::tx::{Tx, journaled_methods, undo_all};
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
    /// A reservation was made.
    Reserve {
        /// The reservation.
        slice: SliceId,
        /// Its device.
        device: DeviceId,
        /// Its extents, in bytes.
        extents: Vec<Extent>,
        /// When it expires (caller's clock).
        expires_at: u64,
    },
    /// A reservation was committed.
    Commit {
        /// The reservation, now a slice.
        slice: SliceId,
    },
    /// A reservation was released (by the caller or because it expired).
    Release {
        /// The reservation.
        slice: SliceId,
    },
    /// A reservation was renewed.
    Renew {
        /// The reservation.
        slice: SliceId,
        /// Its new expiry.
        expires_at: u64,
    },
    /// A device label was set (`Some`) or removed (`None`).
    SetLabel {
        /// The device.
        device: DeviceId,
        /// Label key.
        key: String,
        /// New value, `None` to remove the label.
        value: Option<String>,
    },
    /// A device was cordoned (`true`) or uncordoned.
    Cordon {
        /// The device.
        device: DeviceId,
        /// Whether it is now cordoned.
        cordoned: bool,
    },
    /// A device's capacity changed.
    ResizeDevice {
        /// The device.
        device: DeviceId,
        /// New capacity in bytes.
        capacity: u64,
    },
    /// A device's reserved headroom changed.
    SetReserved {
        /// The device.
        device: DeviceId,
        /// New reserved headroom in bytes.
        reserved: u64,
    },
    /// The changes of one call that made several (for example `reserve` releasing expired
    /// reservations before placing the new one), in one frame so that recovery applies all of
    /// them or none. At least two records, none of them `Atomic`.
    Atomic(Vec<Record>),
}

/// The whole durable state at a point of the journal: devices (with labels and cordons),
/// committed slices, reservations and the next slice id.
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
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Whether it is cordoned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
    /// Its committed slices and reservations, sorted by id.
    pub slices: Vec<SliceSnapshot>,
}

/// One slice or reservation in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSnapshot {
    /// The slice.
    pub id: SliceId,
    /// Its extents, in bytes.
    pub extents: Vec<Extent>,
    /// `Some(expiry)` for a reservation, `None` for a committed slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Allocator {
    /// The whole state (devices with labels and cordons, slices, reservations, next id),
    /// canonically ordered, tagged with the sequence number of the last journal record it
    /// includes.
    pub fn snapshot(&self, last_seq: u64) -> Snapshot {
        let mut devices: Vec<DeviceSnapshot> = Vec::new();
        let mut pos = vec![usize::MAX; self.devices.len()];
        let mut order: Vec<u32> = self.by_id.values().copied().collect();
        order.sort_by_key(|&i| self.dev(i).spec.id());
        for i in order {
            pos[i as usize] = devices.len();
            let d = self.dev(i);
            devices.push(DeviceSnapshot {
                spec: d.spec.clone(),
                labels: (*d.labels).clone(),
                cordoned: d.cordoned,
                slices: Vec::new(),
            });
        }
        for (&id, e) in &self.slices {
            let s = self.to_slice(id, e);
            devices[pos[e.device as usize]].slices.push(SliceSnapshot {
                id,
                extents: s.extents,
                expires_at: e.expires,
            });
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
            for (k, v) in &d.labels {
                a.set_label(d.spec.id(), k, v).map_err(wrap)?;
            }
        }
        for d in &snapshot.devices {
            for s in &d.slices {
                a.restore(s.id, d.spec.id(), &s.extents, s.expires_at)
                    .map_err(wrap)?;
            }
            // Cordon last: restoring slices onto a cordoned device is not a new allocation.
            if d.cordoned {
                a.cordon(d.spec.id()).map_err(wrap)?;
            }
        }
        a.next_id = a.next_id.max(snapshot.next_slice_id);
        Ok(a)
    }

    /// Applies one journal record (used by recovery; also usable to mirror a journal stream).
    /// Checks the same invariants as the operations themselves and changes nothing on error.
    ///
    /// An [`Record::Atomic`] group is applied on a copy of the allocator, which replaces it
    /// once every record applied.
    pub fn apply(&mut self, record: &Record) -> Result<(), Error> {
        if let Record::Atomic(records) = record {
            let mut copy = self.clone();
            copy.apply_in_order(records)?;
            *self = copy;
            return Ok(());
        }
        self.apply_one(record)
    }

    /// Applies `records` in order, stopping at the first that fails (recovery then gives up, so
    /// what the earlier ones changed does not matter).
    fn apply_in_order(&mut self, records: &[Record]) -> Result<(), Error> {
        for r in records {
            match r {
                Record::Atomic(inner) => self.apply_in_order(inner)?,
                r => self.apply_one(r)?,
            }
        }
        Ok(())
    }

    fn apply_one(&mut self, record: &Record) -> Result<(), Error> {
        match record {
            Record::Atomic(records) => self.apply_in_order(records),
            Record::AddDevice(spec) => self.add_device(spec.clone()),
            Record::RemoveDevice(id) => self.remove_device(*id).map(drop),
            Record::Allocate {
                slice,
                device,
                extents,
            } => self.restore(*slice, *device, extents, None),
            Record::Free { slice } => self.free(*slice).map(drop),
            Record::Reserve {
                slice,
                device,
                extents,
                expires_at,
            } => self.restore(*slice, *device, extents, Some(*expires_at)),
            Record::Commit { slice } => {
                // Committed before it expired, by the clock of the time: no expiry check.
                self.expect_reservation(*slice)?;
                self.set_expiry(*slice, None);
                Ok(())
            }
            Record::Release { slice } => self.release(*slice).map(drop),
            Record::Renew { slice, expires_at } => {
                self.expect_reservation(*slice)?;
                self.set_expiry(*slice, Some(*expires_at));
                Ok(())
            }
            Record::SetLabel { device, key, value } => match value {
                Some(v) => self.set_label(*device, key, v).map(drop),
                None => self.remove_label(*device, key).map(drop),
            },
            Record::Cordon { device, cordoned } => {
                if *cordoned {
                    self.cordon(*device)
                } else {
                    self.uncordon(*device)
                }
            }
            Record::ResizeDevice { device, capacity } => {
                self.resize_device(*device, *capacity).map(drop)
            }
            Record::SetReserved { device, reserved } => {
                self.set_reserved(*device, *reserved).map(drop)
            }
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

fn put_str(out: &mut Vec<u8>, v: &str) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v.as_bytes());
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
    encode_body(record, out);
    let payload_len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The tag and body of one record.
fn encode_body(record: &Record, out: &mut Vec<u8>) {
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
        Record::Reserve {
            slice,
            device,
            extents,
            expires_at,
        } => {
            out.push(6);
            put_u64(out, slice.get());
            put_u64(out, device.get());
            put_u64(out, *expires_at);
            put_extents(out, extents);
        }
        Record::Commit { slice } => {
            out.push(7);
            put_u64(out, slice.get());
        }
        Record::Release { slice } => {
            out.push(8);
            put_u64(out, slice.get());
        }
        Record::Renew { slice, expires_at } => {
            out.push(9);
            put_u64(out, slice.get());
            put_u64(out, *expires_at);
        }
        Record::SetLabel { device, key, value } => {
            out.push(10);
            put_u64(out, device.get());
            put_str(out, key);
            match value {
                Some(v) => {
                    out.push(1);
                    put_str(out, v);
                }
                None => out.push(0),
            }
        }
        Record::Cordon { device, cordoned } => {
            out.push(11);
            put_u64(out, device.get());
            out.push(u8::from(*cordoned));
        }
        Record::ResizeDevice { device, capacity } => {
            out.push(12);
            put_u64(out, device.get());
            put_u64(out, *capacity);
        }
        Record::SetReserved { device, reserved } => {
            out.push(13);
            put_u64(out, device.get());
            put_u64(out, *reserved);
        }
        Record::Atomic(records) => {
            out.push(14);
            out.extend_from_slice(&(records.len() as u32).to_le_bytes());
            for r in records {
                encode_body(r, out);
            }
        }
    }
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
    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("flag byte {b} is neither 0 nor 1")),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err(format!(
                "claims a {n}-byte string but only {} bytes remain",
                self.0.len()
            ));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        String::from_utf8(h.to_vec()).map_err(|e| format!("string is not UTF-8: {e}"))
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
    let rec = decode_body(&mut c, true)?;
    if !c.0.is_empty() {
        return Err(format!("{} trailing bytes after the record", c.0.len()));
    }
    Ok((seq, rec))
}

/// Decodes one record's tag and body (an [`Record::Atomic`] group only at the top level).
fn decode_body(c: &mut Cursor<'_>, top: bool) -> Result<Record, String> {
    Ok(match c.u8()? {
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
        6 => Record::Reserve {
            slice: SliceId::new(c.u64()?),
            device: DeviceId::new(c.u64()?),
            expires_at: c.u64()?,
            extents: c.extents()?,
        },
        7 => Record::Commit {
            slice: SliceId::new(c.u64()?),
        },
        8 => Record::Release {
            slice: SliceId::new(c.u64()?),
        },
        9 => Record::Renew {
            slice: SliceId::new(c.u64()?),
            expires_at: c.u64()?,
        },
        10 => Record::SetLabel {
            device: DeviceId::new(c.u64()?),
            key: c.string()?,
            value: if c.bool()? { Some(c.string()?) } else { None },
        },
        11 => Record::Cordon {
            device: DeviceId::new(c.u64()?),
            cordoned: c.bool()?,
        },
        12 => Record::ResizeDevice {
            device: DeviceId::new(c.u64()?),
            capacity: c.u64()?,
        },
        13 => Record::SetReserved {
            device: DeviceId::new(c.u64()?),
            reserved: c.u64()?,
        },
        14 if top => {
            let n = c.u32()? as usize;
            // Every record is at least a tag and a u64.
            if n < 2 || n.saturating_mul(9) > c.0.len() {
                return Err(format!(
                    "an atomic group of {n} records does not fit in {} bytes (or has fewer than 2)",
                    c.0.len()
                ));
            }
            Record::Atomic(
                (0..n)
                    .map(|_| decode_body(c, false))
                    .collect::<Result<_, _>>()?,
            )
        }
        14 => return Err("an atomic group inside an atomic group".into()),
        t => return Err(format!("unknown record tag {t}")),
    })
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
                    && prev.seq.checked_add(1) != Some(seq)
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
        allocator
            .apply_in_order(std::slice::from_ref(&e.record))
            .map_err(|source| Error::Replay {
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

/// An [`Allocator`] whose every change (slices, reservations, devices, labels, cordons) is
/// appended to a journal before the call returns. An operation is acknowledged when it returns
/// `Ok`: its record has been written and the writer flushed (make `flush` durable, e.g.
/// `sync_data`, in the writer you pass). One caller at a time (`&mut self`), one flush per
/// change: for many concurrent callers sharing each flush, use
/// [`GroupCommit`](crate::GroupCommit).
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

/// Refuses a frame whose payload is larger than recovery reads back ([`MAX_PAYLOAD`]): writing
/// it acknowledged a change that recovery then dropped as a torn tail (or, with frames after
/// it, refused the whole journal). A slice of more than a million extents made one.
pub(crate) fn check_frame(frame: &[u8]) -> Result<(), Error> {
    let payload = frame.len().saturating_sub(8);
    if payload > MAX_PAYLOAD as usize {
        return Err(Error::InvalidArgument {
            field: "change",
            rule: format!(
                "its journal record would be {payload} bytes, above the {MAX_PAYLOAD} a record \
                 may hold (recovery could not read it back): make it in smaller steps"
            ),
        });
    }
    Ok(())
}

/// The sequence number after `last`, or an error when `last` is the largest: checked before a
/// change is applied, so that a change that could not be journaled is not made (a snapshot or
/// journal claiming `u64::MAX` overflowed the counter on the next change).
pub(crate) fn next_seq(last: u64) -> Result<u64, Error> {
    last.checked_add(1).ok_or_else(|| Error::InvalidArgument {
        field: "last_seq",
        rule: format!("record sequence numbers are used up: the last was {last}"),
    })
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

    /// Runs one change: on success its records are written and flushed before it returns; if
    /// the change fails nothing is written, and if the write fails the change is undone and the
    /// journal poisoned.
    fn run<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        if self.poisoned {
            return Err(Error::JournalPoisoned);
        }
        let seq = next_seq(self.last_seq)?;
        let (v, journal) = Tx::change(&mut self.alloc, f)?;
        let Some((record, undo)) = journal else {
            return Ok(v);
        };
        self.buf.clear();
        encode_record(seq, &record, &mut self.buf);
        if let Err(e) = check_frame(&self.buf) {
            undo_all(&mut self.alloc, undo);
            return Err(e);
        }
        match self
            .writer
            .write_all(&self.buf)
            .and_then(|()| self.writer.flush())
        {
            Ok(()) => {
                self.last_seq = seq;
                self.journal_len += self.buf.len() as u64;
                Ok(v)
            }
            Err(e) => {
                undo_all(&mut self.alloc, undo);
                self.poisoned = true;
                Err(Error::JournalWrite(e))
            }
        }
    }

    journaled_methods!(mut);
}
