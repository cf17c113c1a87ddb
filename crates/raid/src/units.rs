//! Typed sizes: 512-byte sectors and md chunk sizes, with every conversion
//! to bytes and KiB in one place.
//!
//! md and this crate count in 512-byte sectors; mdadm's `--chunk`,
//! `--size` and `--data-offset` count in KiB; drives and volumes are sized in
//! bytes, as the workspace's [`ByteSize`] (crate `storage-units`) which
//! parses and prints them with explicit SI and IEC units. Where an API mixes
//! these, it takes or returns these types instead of a bare `u64`.
//!
//! ```
//! use raid::{ChunkSize, Sectors};
//! use storage_units::ByteSize;
//!
//! let chunk = ChunkSize::from_byte_size("64 KiB".parse()?)?;
//! assert_eq!(chunk.sectors(), Sectors::new(128));
//! assert_eq!(Sectors::new(2048).to_byte_size(), Some(ByteSize::mib(1)));
//! // 1 kB (SI) is not a whole number of sectors.
//! assert!(Sectors::from_byte_size("1 kB".parse()?).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use storage_units::ByteSize;

use crate::error::{RaidError, Result};

/// Bytes in a sector.
pub const SECTOR_BYTES: u64 = 512;

fn bad(field: &str, rule: String) -> RaidError {
    RaidError::BadSize {
        field: field.to_string(),
        rule,
    }
}

/// A count of 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sectors(u64);

impl Sectors {
    /// No sectors.
    pub const ZERO: Sectors = Sectors(0);

    /// `n` sectors.
    pub const fn new(n: u64) -> Self {
        Sectors(n)
    }
    /// The count.
    pub const fn get(self) -> u64 {
        self.0
    }
    /// Exactly `bytes` bytes; an error unless `bytes` is a multiple of 512.
    pub fn from_bytes(bytes: u64) -> Result<Self> {
        if !bytes.is_multiple_of(SECTOR_BYTES) {
            return Err(bad(
                "byte count",
                format!("{bytes} is not a whole number of 512-byte sectors"),
            ));
        }
        Ok(Sectors(bytes / SECTOR_BYTES))
    }
    /// The whole sectors in `bytes` bytes (rounded down).
    pub const fn from_bytes_floor(bytes: u64) -> Self {
        Sectors(bytes / SECTOR_BYTES)
    }
    /// `kib` KiB; an error if that overflows.
    pub fn from_kib(kib: u64) -> Result<Self> {
        kib.checked_mul(2)
            .map(Sectors)
            .ok_or_else(|| bad("KiB count", format!("{kib} KiB overflows a sector count")))
    }
    /// The size in bytes, or `None` if it does not fit in a `u64`.
    pub const fn checked_bytes(self) -> Option<u64> {
        self.0.checked_mul(SECTOR_BYTES)
    }
    /// Exactly `size`; an error unless it is a whole number of sectors.
    pub fn from_byte_size(size: ByteSize) -> Result<Self> {
        Sectors::from_bytes(size.bytes()).map_err(|_| {
            bad(
                "size",
                format!("{size} is not a whole number of 512-byte sectors"),
            )
        })
    }
    /// The size as a [`ByteSize`], or `None` if it does not fit in a `u64`.
    pub const fn to_byte_size(self) -> Option<ByteSize> {
        match self.checked_bytes() {
            Some(b) => Some(ByteSize::new(b)),
            None => None,
        }
    }
    /// The size in KiB, or `None` if it is not a whole number of KiB (an
    /// odd sector count).
    pub const fn exact_kib(self) -> Option<u64> {
        if self.0.is_multiple_of(2) {
            Some(self.0 / 2)
        } else {
            None
        }
    }
}

impl From<Sectors> for u64 {
    fn from(s: Sectors) -> u64 {
        s.0
    }
}

impl fmt::Display for Sectors {
    /// `N sectors`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sectors", self.0)
    }
}

/// An md chunk size.
///
/// # Invariants
/// A positive multiple of 8 sectors (4 KiB), the smallest unit md accepts
/// for any level. [`crate::Geometry::new`] adds the level's own rules (a
/// power of two for RAID4/5/6/10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkSize(u64);

impl ChunkSize {
    /// mdadm's default chunk: 512 KiB.
    pub const MDADM_DEFAULT: ChunkSize = ChunkSize(1024);

    /// A chunk of `sectors` sectors; see the invariants.
    pub fn new(sectors: Sectors) -> Result<Self> {
        let s = sectors.get();
        if s == 0 || !s.is_multiple_of(8) {
            return Err(bad(
                "chunk size",
                format!("{s} sectors is not a positive multiple of 8 sectors (4 KiB)"),
            ));
        }
        Ok(ChunkSize(s))
    }
    /// A chunk of exactly `size`; an error unless it is a positive
    /// multiple of 4 KiB (a size that is not whole sectors is reported in
    /// those terms too, in the unit the caller gave).
    pub fn from_byte_size(size: ByteSize) -> Result<Self> {
        let whole = |_| {
            bad(
                "chunk size",
                format!("{size} is not a positive multiple of 4 KiB"),
            )
        };
        let sectors = Sectors::from_byte_size(size).map_err(whole)?;
        ChunkSize::new(sectors).map_err(|_| {
            bad(
                "chunk size",
                format!("{size} is not a positive multiple of 4 KiB"),
            )
        })
    }
    /// A chunk of `kib` KiB (as mdadm's `--chunk` counts).
    pub fn from_kib(kib: u64) -> Result<Self> {
        ChunkSize::new(Sectors::from_kib(kib)?)
    }
    /// The size in sectors.
    pub const fn sectors(self) -> Sectors {
        Sectors(self.0)
    }
    /// The size in KiB (always whole).
    pub const fn kib(self) -> u64 {
        self.0 / 2
    }
    /// The size in bytes, or `None` if it does not fit in a `u64`.
    pub const fn checked_bytes(self) -> Option<u64> {
        self.0.checked_mul(SECTOR_BYTES)
    }
}

impl fmt::Display for ChunkSize {
    /// `N KiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KiB", self.kib())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Sectors::from_bytes(4096).unwrap(), Sectors::new(8));
        assert!(Sectors::from_bytes(4097).is_err());
        assert_eq!(Sectors::from_bytes_floor(4097), Sectors::new(8));
        assert_eq!(Sectors::from_kib(3).unwrap().get(), 6);
        assert!(Sectors::from_kib(u64::MAX).is_err());
        assert_eq!(Sectors::new(7).exact_kib(), None);
        assert_eq!(Sectors::new(8).exact_kib(), Some(4));
        assert_eq!(Sectors::new(u64::MAX).checked_bytes(), None);
        assert_eq!(ChunkSize::from_kib(512).unwrap(), ChunkSize::MDADM_DEFAULT);
        assert_eq!(ChunkSize::MDADM_DEFAULT.to_string(), "512 KiB");
        assert!(ChunkSize::new(Sectors::new(12)).is_err());
        assert!(ChunkSize::new(Sectors::ZERO).is_err());
        assert_eq!(
            ChunkSize::from_kib(64).unwrap().checked_bytes(),
            Some(65536)
        );
    }

    /// Every size error reads as one sentence naming the size and its rule,
    /// with no doubled word ("size size: …" before).
    #[test]
    fn size_errors_read_as_one_sentence() {
        let msg = |r: Result<_>| match r {
            Err(e @ RaidError::BadSize { .. }) => e.to_string(),
            other => panic!("expected BadSize, got {other:?}"),
        };
        assert_eq!(
            msg(Sectors::from_byte_size(ByteSize::new(1000)).map(|_| ())),
            "invalid size: 1 kB is not a whole number of 512-byte sectors"
        );
        assert_eq!(
            msg(Sectors::from_bytes(4097).map(|_| ())),
            "invalid byte count: 4097 is not a whole number of 512-byte sectors"
        );
        assert_eq!(
            msg(Sectors::from_kib(u64::MAX).map(|_| ())),
            format!(
                "invalid KiB count: {} KiB overflows a sector count",
                u64::MAX
            )
        );
        assert_eq!(
            msg(ChunkSize::new(Sectors::new(12)).map(|_| ())),
            "invalid chunk size: 12 sectors is not a positive multiple of 8 sectors (4 KiB)"
        );
        assert_eq!(
            msg(ChunkSize::from_byte_size(ByteSize::kib(6)).map(|_| ())),
            "invalid chunk size: 6 KiB is not a positive multiple of 4 KiB"
        );
        // Not whole sectors: still said in chunk terms, in the caller's unit.
        assert_eq!(
            msg(ChunkSize::from_byte_size(ByteSize::new(1000)).map(|_| ())),
            "invalid chunk size: 1 kB is not a positive multiple of 4 KiB"
        );
    }
}
