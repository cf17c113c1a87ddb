//! What the engine keeps on each member besides data: a superblock at 4 KiB
//! (where md's v1.2 superblock sits) and a write-intent bitmap at 8 KiB,
//! both before the data area, which starts at the data offset mdadm would
//! choose. The data area therefore holds exactly the bytes md would hold at
//! the same offsets; the superblock's format is the engine's own (mdadm does
//! not recognise it).
//!
//! Superblock (4096 bytes, little-endian), fields at fixed offsets:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RAIDENG1` |
//! | 8 | 4 | format version (1) |
//! | 12 | 16 | array uuid |
//! | 28 | 16 | this device's uuid |
//! | 44 | 4 | level (0, 1, 4, 5, 6, 10; 100 = linear) |
//! | 48 | 4 | md layout number |
//! | 52 | 8 | chunk sectors |
//! | 60 | 4 | members |
//! | 64 | 4 | this device's role (member index) |
//! | 68 | 8 | component sectors (data area used per member; linear: this member's) |
//! | 76 | 8 | data offset (sectors) |
//! | 84 | 8 | bitmap region (sectors of member data area per bit) |
//! | 92 | 8 | bitmap bytes |
//! | 100 | 8 | events (bumped on every membership change) |
//! | 108 | 8 | recovery offset of this device (`u64::MAX` = in sync) |
//! | 116 | 1 | encrypted (0/1) |
//! | 117 | 32 | encryption salt |
//! | 149 | 32 | key check value |
//! | 181 | 1 | clean shutdown (0/1) |
//! | 182 | 1 | length of the layout name |
//! | 183 | 32 | layout name as mdadm spells it (`left-symmetric`, `f2`; empty for RAID1 and linear) |
//! | 256 | 17 × members | per role: state byte, device uuid |
//! | 4092 | 4 | CRC-32 of bytes 0..4092 |

use crate::error::{EngineError, Result};

/// Byte offset of the superblock on a member.
pub const SB_OFFSET: u64 = 4096;
/// Byte size of the superblock.
pub const SB_SIZE: usize = 4096;
/// Byte offset of the write-intent bitmap on a member.
pub const BITMAP_OFFSET: u64 = 8192;
/// Most members a volume may have (the per-role table must fit the superblock).
pub const MAX_MEMBERS: usize = 200;
const MAGIC: &[u8; 8] = b"RAIDENG1";
const ROLES_AT: usize = 256;
/// Level code of a linear (JBOD) volume.
pub const LINEAR_LEVEL: u32 = 100;

/// The state of a role as recorded in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleState {
    /// In sync.
    Active,
    /// Failed while in sync: a return resyncs only what the bitmap marks.
    Faulty,
    /// Empty or partly rebuilt: needs a full rebuild.
    Spare,
}

impl RoleState {
    fn code(self) -> u8 {
        match self {
            RoleState::Active => 0,
            RoleState::Faulty => 1,
            RoleState::Spare => 2,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => RoleState::Active,
            1 => RoleState::Faulty,
            2 => RoleState::Spare,
            _ => return None,
        })
    }
}

/// A decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Array identity.
    pub array_uuid: [u8; 16],
    /// This device's identity.
    pub device_uuid: [u8; 16],
    /// Level code (md level number, or [`LINEAR_LEVEL`]).
    pub level: u32,
    /// md layout number.
    pub layout: u32,
    /// The layout as mdadm names it (at most 32 bytes).
    pub layout_name: String,
    /// Chunk size in sectors.
    pub chunk_sectors: u64,
    /// This device's role.
    pub role: u32,
    /// Data-area sectors used on this member.
    pub component_sectors: u64,
    /// Data offset in sectors.
    pub data_offset: u64,
    /// Bitmap region in sectors.
    pub bitmap_region: u64,
    /// Bitmap size in bytes.
    pub bitmap_bytes: u64,
    /// Event counter.
    pub events: u64,
    /// This device's recovery offset (`u64::MAX` when in sync).
    pub recovery_offset: u64,
    /// Encryption salt and key check, if encrypted.
    pub encryption: Option<([u8; 32], [u8; 32])>,
    /// Whether the volume was closed cleanly.
    pub clean: bool,
    /// Every role's state and device uuid.
    pub roles: Vec<(RoleState, [u8; 16])>,
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}
fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}
fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}
fn arr<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&buf[at..at + N]);
    b
}

impl Superblock {
    /// Encode into a 4096-byte block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SB_SIZE];
        put(&mut b, 0, MAGIC);
        put(&mut b, 8, &1u32.to_le_bytes());
        put(&mut b, 12, &self.array_uuid);
        put(&mut b, 28, &self.device_uuid);
        put(&mut b, 44, &self.level.to_le_bytes());
        put(&mut b, 48, &self.layout.to_le_bytes());
        put(&mut b, 52, &self.chunk_sectors.to_le_bytes());
        put(&mut b, 60, &(self.roles.len() as u32).to_le_bytes());
        put(&mut b, 64, &self.role.to_le_bytes());
        put(&mut b, 68, &self.component_sectors.to_le_bytes());
        put(&mut b, 76, &self.data_offset.to_le_bytes());
        put(&mut b, 84, &self.bitmap_region.to_le_bytes());
        put(&mut b, 92, &self.bitmap_bytes.to_le_bytes());
        put(&mut b, 100, &self.events.to_le_bytes());
        put(&mut b, 108, &self.recovery_offset.to_le_bytes());
        if let Some((salt, check)) = &self.encryption {
            b[116] = 1;
            put(&mut b, 117, salt);
            put(&mut b, 149, check);
        }
        b[181] = u8::from(self.clean);
        let name = &self.layout_name.as_bytes()[..self.layout_name.len().min(32)];
        b[182] = name.len() as u8;
        put(&mut b, 183, name);
        for (i, (st, uuid)) in self.roles.iter().enumerate() {
            let at = ROLES_AT + 17 * i;
            b[at] = st.code();
            put(&mut b, at + 1, uuid);
        }
        let crc = crc32fast::hash(&b[..SB_SIZE - 4]);
        put(&mut b, SB_SIZE - 4, &crc.to_le_bytes());
        b
    }

    /// Decode a block read from `member` (named in errors).
    pub fn decode(b: &[u8], member: &str) -> Result<Self> {
        let bad = |detail: String| EngineError::Metadata {
            member: member.to_string(),
            detail,
        };
        if b.len() != SB_SIZE || &b[..8] != MAGIC {
            return Err(bad(
                "no raid-engine superblock at 4 KiB (not a member, or never created)".into(),
            ));
        }
        let crc = crc32fast::hash(&b[..SB_SIZE - 4]);
        if crc != u32_at(b, SB_SIZE - 4) {
            return Err(bad("superblock checksum mismatch".into()));
        }
        if u32_at(b, 8) != 1 {
            return Err(bad(format!(
                "superblock format version {} is not 1",
                u32_at(b, 8)
            )));
        }
        let members = u32_at(b, 60) as usize;
        if members == 0 || members > MAX_MEMBERS {
            return Err(bad(format!(
                "member count {members} is not in 1..={MAX_MEMBERS}"
            )));
        }
        let mut roles = Vec::with_capacity(members);
        for i in 0..members {
            let at = ROLES_AT + 17 * i;
            let st = RoleState::from_code(b[at])
                .ok_or_else(|| bad(format!("role {i} has unknown state code {}", b[at])))?;
            roles.push((st, arr::<16>(b, at + 1)));
        }
        let role = u32_at(b, 64);
        if role as usize >= members {
            return Err(bad(format!(
                "role {role} is not below the member count {members}"
            )));
        }
        Ok(Superblock {
            array_uuid: arr(b, 12),
            device_uuid: arr(b, 28),
            level: u32_at(b, 44),
            layout: u32_at(b, 48),
            layout_name: String::from_utf8_lossy(&b[183..183 + usize::from(b[182].min(32))])
                .into_owned(),
            chunk_sectors: u64_at(b, 52),
            role,
            component_sectors: u64_at(b, 68),
            data_offset: u64_at(b, 76),
            bitmap_region: u64_at(b, 84),
            bitmap_bytes: u64_at(b, 92),
            events: u64_at(b, 100),
            recovery_offset: u64_at(b, 108),
            encryption: (b[116] == 1).then(|| (arr(b, 117), arr(b, 149))),
            clean: b[181] == 1,
            roles,
        })
    }
}

/// Fresh random bytes from the kernel.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| EngineError::Io {
                what: "getrandom".into(),
                source: e.into(),
            })?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let sb = Superblock {
            array_uuid: [1; 16],
            device_uuid: [2; 16],
            level: 10,
            layout: 0x102,
            layout_name: "f2".into(),
            chunk_sectors: 128,
            role: 2,
            component_sectors: 4096,
            data_offset: 2048,
            bitmap_region: 1024,
            bitmap_bytes: 1,
            events: 9,
            recovery_offset: u64::MAX,
            encryption: Some(([3; 32], [4; 32])),
            clean: true,
            roles: vec![
                (RoleState::Active, [5; 16]),
                (RoleState::Faulty, [6; 16]),
                (RoleState::Spare, [2; 16]),
            ],
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b, "m").unwrap(), sb);
        b[100] ^= 1;
        let e = Superblock::decode(&b, "m").unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        assert!(Superblock::decode(&[0; SB_SIZE], "m").is_err());
    }
}
