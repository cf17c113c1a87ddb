//! Array geometry and address mapping, ported from md's own arithmetic.
//!
//! * RAID0: `create_strip_zones`, `find_zone` and `map_sector` of
//!   `drivers/md/raid0.c` (both multi-zone layouts).
//! * RAID4/5/6: `raid5_compute_sector` of `drivers/md/raid5.c`, and the
//!   syndrome source order of `set_syndrome_sources` / `raid6_d0` /
//!   `raid6_idx_to_slot`.
//! * RAID10: `__raid10_find_phys`, `raid10_find_virt`, `calc_sectors` and
//!   `raid10_size` of `drivers/md/raid10.c`.
//!
//! All addresses are 512-byte sectors. Member sectors are relative to the
//! start of the member's data area (md adds the superblock's data offset).

use std::collections::HashMap;
use std::ops::Deref;

use crate::error::{RaidError, Result, geom_err};
use crate::fastdiv::Divisor;
use crate::layout::{Layout, ParityAlgorithm, Raid0Layout, Raid10Layout};
use crate::units::{ChunkSize, Sectors};

/// Largest member count accepted (md's limit for v1.x superblocks).
pub const MAX_MEMBERS: usize = 1920;
/// Largest RAID6 member count: Q coefficients are powers of a generator of
/// order 255, so at most 255 distinct slots exist.
pub const MAX_RAID6_MEMBERS: usize = 255;

/// A place on a member: member index (its md `raid_disk` slot) and sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Location {
    /// Member index, `0..members`.
    pub member: usize,
    /// Sector within the member's data area.
    pub sector: u64,
}

const INLINE_COPIES: usize = 4;

/// The data copies of one logical sector, in md's order (the first copy is
/// the one md reads by default). Dereferences to `[Location]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copies {
    len: usize,
    inline: [Location; INLINE_COPIES],
    heap: Vec<Location>,
}

impl Copies {
    #[inline(always)]
    fn new() -> Self {
        Copies {
            len: 0,
            inline: [Location::default(); INLINE_COPIES],
            heap: Vec::new(),
        }
    }
    #[inline(always)]
    fn one(l: Location) -> Self {
        Copies {
            len: 1,
            inline: [
                l,
                Location::default(),
                Location::default(),
                Location::default(),
            ],
            heap: Vec::new(),
        }
    }
    #[inline(always)]
    fn with_capacity(n: usize) -> Self {
        let mut c = Copies::new();
        if n > INLINE_COPIES {
            c.heap.reserve_exact(n);
        }
        c
    }
    #[inline(always)]
    fn push(&mut self, l: Location) {
        if self.heap.capacity() == 0 && self.len < INLINE_COPIES {
            self.inline[self.len] = l;
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            self.heap.push(l);
        }
        self.len += 1;
    }
}

impl Deref for Copies {
    type Target = [Location];
    #[inline]
    fn deref(&self) -> &[Location] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Parity information of the stripe a sector belongs to (RAID4/5/6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeParity {
    /// Stripe number; the stripe occupies member sectors
    /// `stripe * chunk .. (stripe + 1) * chunk` on every member.
    pub stripe: u64,
    /// Member holding P.
    pub p: usize,
    /// Member holding Q (RAID6).
    pub q: Option<usize>,
    /// The sector's chunk index among the stripe's data chunks, in logical order.
    pub data_index: usize,
}

/// Where one logical sector lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The logical sector that was mapped.
    pub logical: u64,
    /// Every copy of the sector's data.
    pub copies: Copies,
    /// For RAID4/5/6, the stripe's parity members (same member sector as the data).
    pub parity: Option<StripeParity>,
}

/// What a member sector holds (the inverse of [`Geometry::map`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberContent {
    /// Copy `copy` (index into [`Mapping::copies`]) of logical sector `logical`.
    Data {
        /// Logical sector.
        logical: u64,
        /// Which copy this is.
        copy: usize,
    },
    /// P parity of a stripe.
    P {
        /// Stripe number.
        stripe: u64,
    },
    /// Q syndrome of a stripe.
    Q {
        /// Stripe number.
        stripe: u64,
    },
    /// Space md does not use (beyond the array's end on this member).
    Unused,
}

/// A contiguous run of a logical extent on one member (see [`Geometry::map_range`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberExtent {
    /// Member index.
    pub member: usize,
    /// First member sector.
    pub member_sector: u64,
    /// First logical sector.
    pub logical: u64,
    /// Length in sectors (the same on the member and in the array).
    pub sectors: u64,
    /// Copy index.
    pub copy: usize,
}

/// The roles of the members in one RAID4/5/6 stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeLayout {
    /// Stripe number.
    pub stripe: u64,
    /// Member holding P.
    pub p: usize,
    /// Member holding Q (RAID6).
    pub q: Option<usize>,
    /// Data members in logical order: `data[i]` holds the stripe's i-th data chunk.
    pub data: Vec<usize>,
    /// For RAID6, the Q coefficient exponent of each member:
    /// Q = Σ g^`q_exponent[m]` · D_m over data members `m` (g = 2 in
    /// GF(2^8)/0x11d); `None` for the P and Q members. md numbers data
    /// members in member order starting just after Q; DDF layouts use the raw
    /// member index. Empty for RAID4/5.
    pub q_exponent: Vec<Option<u8>>,
}

#[derive(Debug, Clone)]
struct Zone {
    /// End of the zone in array sectors (exclusive).
    zone_end: u64,
    /// Start of the zone on each of its members.
    dev_start: u64,
    /// Members of the zone in member order.
    devs: Vec<usize>,
    /// Divides by the zone's member count.
    nb: Divisor,
    /// Divides by chunk × member count (one chunk row of the zone).
    row: Divisor,
}

/// A validated md array geometry.
///
/// # Invariants
/// * Members: RAID0/1 ≥ 1, RAID4/5 ≥ 2, RAID6 4..=255, RAID10 ≥ copies;
///   at most [`MAX_MEMBERS`].
/// * Chunk (sectors): RAID0 a positive multiple of 8 (4 KiB); RAID4/5/6/10
///   a power of two ≥ 8; ignored (stored as 0) for RAID1.
/// * Every member holds at least one chunk and the array is non-empty.
#[derive(Debug, Clone)]
pub struct Geometry {
    layout: Layout,
    chunk: u64,
    member_sectors: Vec<u64>,
    /// Sectors used on each member (RAID0: its own rounded size; others: common size).
    used: Vec<u64>,
    array_sectors: u64,
    shift: u32,
    pow2: bool,
    zones: Vec<Zone>,
    /// RAID10 distance between far copies on a member.
    stride: u64,
    chunk_div: Divisor,
    /// Divides by the member count.
    disks_div: Divisor,
    /// Divides by the member count minus one (RAID6 `-6` layouts).
    disks1_div: Divisor,
    /// Divides by the data-member count (RAID4/5/6).
    data_div: Divisor,
    /// Sectors before each member's data area, when known.
    data_offset: Option<u64>,
}

impl Geometry {
    /// [`Geometry::new`] with typed sizes: the chunk as a [`ChunkSize`]
    /// (`None` for RAID1, which has no chunk; the other levels need one) and
    /// each member's data area as [`Sectors`], so that KiB, bytes and sectors
    /// cannot be mixed up at the call.
    ///
    /// ```
    /// use raid::{ChunkSize, Geometry, Layout, Level, Sectors};
    ///
    /// let layout = Layout::parse(Level::Raid5, "left-symmetric")?;
    /// let chunk = ChunkSize::from_byte_size("64 KiB".parse()?)?;
    /// let member = Sectors::from_byte_size("1 GiB".parse()?)?;
    /// let g = Geometry::from_sizes(layout, Some(chunk), &[member; 4])?;
    /// let same = Geometry::new(layout, 128, &[2 * 1024 * 1024; 4])?;
    /// assert_eq!((g.chunk_sectors(), g.used_sectors()), (same.chunk_sectors(), same.used_sectors()));
    /// assert_eq!(g.array_size().to_string(), "3 GiB");
    /// // RAID5 without a chunk size names the field.
    /// let e = Geometry::from_sizes(layout, None, &[member; 4]).unwrap_err();
    /// assert!(e.to_string().starts_with("invalid geometry: chunk: "), "{e}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_sizes(
        layout: Layout,
        chunk: Option<ChunkSize>,
        member_sizes: &[Sectors],
    ) -> Result<Self> {
        let chunk_sectors = match (layout, chunk) {
            (Layout::Raid1, None) => 0,
            (Layout::Raid1, Some(c)) => {
                return Err(geom_err(
                    "chunk",
                    format!("raid1 has no chunk size, got {c}; pass None"),
                ));
            }
            (_, Some(c)) => c.sectors().get(),
            (_, None) => {
                return Err(geom_err(
                    "chunk",
                    format!("{layout} needs a chunk size, got None"),
                ));
            }
        };
        let members: Vec<u64> = member_sizes.iter().map(|s| s.get()).collect();
        Geometry::new(layout, chunk_sectors, &members)
    }

    /// Build a geometry from md's parameters: the layout, the chunk size in
    /// sectors and the size of each member's data area in sectors (the
    /// component size; see [`crate::mdadm`] to derive it from drive sizes).
    pub fn new(layout: Layout, chunk_sectors: u64, member_sectors: &[u64]) -> Result<Self> {
        let n = member_sectors.len();
        let allowed = layout.member_range();
        let (min_members, max_members) = (*allowed.start(), *allowed.end());
        if !allowed.contains(&n) {
            return Err(geom_err(
                "members",
                format!("{layout} needs {min_members}..={max_members} members, got {n}"),
            ));
        }
        if let Layout::Raid5(a) = layout
            && a.raid6_only()
        {
            return Err(geom_err(
                "layout",
                format!("{} exists only for raid6", a.mdadm_name()),
            ));
        }
        if let Layout::Raid10(r) = layout
            && r.offset()
            && r.near() > 1
            && !n.is_multiple_of(usize::from(r.near()))
        {
            // __raid10_find_phys() moves a near copy that wraps past the last
            // member one chunk down, which in an offset layout is the row of
            // the far copies: md would store two chunks in one place.
            return Err(geom_err(
                "members",
                format!(
                    "{layout} (near copies with offset) needs a member count divisible by {}, got {n}",
                    r.near()
                ),
            ));
        }
        // Keep every sum and byte count md could form within 64 bits.
        let total = member_sectors
            .iter()
            .try_fold(0u64, |a, &s| a.checked_add(s));
        if total.is_none_or(|t| t > u64::MAX / 512) {
            return Err(geom_err(
                "member_sectors",
                "the members' total size must stay below 2^55 sectors (2^64 bytes)",
            ));
        }
        if let Some(i) = member_sectors.iter().position(|&s| s == 0) {
            return Err(geom_err(format!("member_sectors[{i}]"), "must be positive"));
        }
        let chunk = match layout {
            Layout::Raid1 => 0,
            Layout::Raid0(_) => {
                if chunk_sectors == 0 || !chunk_sectors.is_multiple_of(8) {
                    return Err(geom_err(
                        "chunk_sectors",
                        format!(
                            "raid0 needs a positive multiple of 8 sectors (4 KiB), got {chunk_sectors}"
                        ),
                    ));
                }
                chunk_sectors
            }
            _ => {
                if chunk_sectors < 8 || !chunk_sectors.is_power_of_two() {
                    return Err(geom_err(
                        "chunk_sectors",
                        format!(
                            "{} needs a power of two of at least 8 sectors (4 KiB), got {chunk_sectors}",
                            layout.level()
                        ),
                    ));
                }
                chunk_sectors
            }
        };
        if chunk > 0
            && let Some(i) = member_sectors.iter().position(|&s| s < chunk)
        {
            return Err(geom_err(
                format!("member_sectors[{i}]"),
                format!(
                    "{} sectors is smaller than one chunk ({chunk} sectors)",
                    member_sectors[i]
                ),
            ));
        }
        let pow2 = chunk.is_power_of_two();
        let shift = if pow2 { chunk.trailing_zeros() } else { 0 };
        let min = *member_sectors.iter().min().unwrap_or(&0);
        let mut g = Geometry {
            layout,
            chunk,
            member_sectors: member_sectors.to_vec(),
            used: Vec::new(),
            array_sectors: 0,
            shift,
            pow2,
            zones: Vec::new(),
            stride: 0,
            chunk_div: Divisor::new(chunk),
            disks_div: Divisor::new(n as u64),
            disks1_div: Divisor::new(n as u64 - 1),
            data_div: Divisor::new(1),
            data_offset: None,
        };
        g.data_div = Divisor::new(g.data_disks() as u64);
        match layout {
            Layout::Raid0(_) => {
                let rounded: Vec<u64> = member_sectors.iter().map(|s| s / chunk * chunk).collect();
                let mut prev_end = 0;
                let mut cur_start = 0;
                loop {
                    let devs: Vec<usize> = (0..n).filter(|&i| rounded[i] > cur_start).collect();
                    let Some(smallest) = devs.iter().map(|&i| rounded[i]).min() else {
                        break;
                    };
                    let zone_end = prev_end + (smallest - cur_start) * devs.len() as u64;
                    let nb = devs.len() as u64;
                    g.zones.push(Zone {
                        zone_end,
                        dev_start: cur_start,
                        devs,
                        nb: Divisor::new(nb),
                        row: Divisor::new(chunk * nb),
                    });
                    prev_end = zone_end;
                    cur_start = smallest;
                }
                g.array_sectors = prev_end;
                g.used = rounded;
            }
            Layout::Raid1 => {
                g.array_sectors = min;
                g.used = vec![min; n];
            }
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                let comp = min / chunk * chunk;
                g.array_sectors = comp * g.data_disks() as u64;
                g.used = vec![comp; n];
            }
            Layout::Raid10(r) => {
                // calc_sectors(): array chunks, then used chunks per member
                // rounded up, then the far stride.
                let nc = u64::from(r.near());
                let fc = u64::from(r.far());
                let disks = n as u64;
                let array_chunks = (min >> shift) / fc * disks / nc;
                let per_dev = (array_chunks * r.copies() as u64).div_ceil(disks);
                let dev_sectors = per_dev << shift;
                g.stride = if r.offset() {
                    chunk
                } else {
                    (per_dev / fc) << shift
                };
                // raid10_size() recomputed from dev_sectors, as md does.
                g.array_sectors = ((dev_sectors >> shift) / fc * disks / nc) << shift;
                g.used = vec![dev_sectors; n];
            }
        }
        if g.array_sectors == 0 {
            // Only raid10 gets here (the other levels hold data in one chunk per member, which
            // was checked above): say how large the smallest member must be.
            let need = match layout {
                Layout::Raid10(r) => raid10_min_chunks(r.near(), r.far(), n as u64)
                    .map(|c| {
                        format!(
                            ": {layout} over {n} members needs at least {} sectors ({c} chunks) per member, got {min}",
                            c * chunk
                        )
                    })
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(geom_err(
                "member_sectors",
                format!("the members are too small to hold any data in this layout{need}"),
            ));
        }
        Ok(g)
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Number of members.
    pub fn members(&self) -> usize {
        self.member_sectors.len()
    }
    /// Chunk size in sectors (0 for RAID1).
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk
    }
    /// Chunk size as a typed value (`None` for RAID1, which has none).
    pub fn chunk_size(&self) -> Option<ChunkSize> {
        ChunkSize::new(Sectors::new(self.chunk)).ok()
    }
    /// Sectors between the start of each member device and its data area
    /// (md's superblock `data_offset`), when known: set by
    /// [`crate::mdadm::geometry_for_devices`] or [`Geometry::with_data_offset`];
    /// `None` after [`Geometry::new`]. Member sectors elsewhere in this crate
    /// count from the data area, so device sector = data offset + member sector.
    pub fn data_offset(&self) -> Option<Sectors> {
        self.data_offset.map(Sectors::new)
    }
    /// The same geometry with every member's data area starting `offset`
    /// sectors into its device.
    pub fn with_data_offset(mut self, offset: Sectors) -> Result<Self> {
        let worst = self.member_sectors.iter().max().copied().unwrap_or(0);
        if worst
            .checked_add(offset.get())
            .is_none_or(|s| s > u64::MAX / 512)
        {
            return Err(geom_err(
                "data_offset",
                format!("{offset} plus a member of {worst} sectors overflows 2^55 sectors"),
            ));
        }
        self.data_offset = Some(offset.get());
        Ok(self)
    }
    /// The member data-area sizes the geometry was built from.
    pub fn member_sectors(&self) -> &[u64] {
        &self.member_sectors
    }
    /// Sectors md uses on each member (`used_sectors()[m]`), the rest is idle.
    pub fn used_sectors(&self) -> &[u64] {
        &self.used
    }
    /// Usable array size in sectors.
    pub fn array_sectors(&self) -> u64 {
        self.array_sectors
    }
    /// Usable array size in bytes.
    pub fn array_bytes(&self) -> u64 {
        self.array_sectors * 512
    }
    /// Usable array size as a [`storage_units::ByteSize`].
    pub fn array_size(&self) -> storage_units::ByteSize {
        storage_units::ByteSize::new(self.array_bytes())
    }
    /// Data members per stripe for RAID4/5/6 (members − parity members).
    pub fn data_disks(&self) -> usize {
        let n = self.members();
        match self.layout {
            Layout::Raid4 | Layout::Raid5(_) => n - 1,
            Layout::Raid6(_) => n - 2,
            Layout::Raid0(_) => n,
            Layout::Raid1 => 1,
            Layout::Raid10(r) => n / r.copies(),
        }
    }
    /// How many members can fail, whichever they are, without losing data
    /// (RAID10: copies − 1, although some larger sets survive; see
    /// [`crate::FailureModel`] for the exact answer for a given set).
    pub fn guaranteed_tolerance(&self) -> usize {
        match self.layout {
            Layout::Raid0(_) => 0,
            Layout::Raid1 => self.members() - 1,
            Layout::Raid4 | Layout::Raid5(_) => 1,
            Layout::Raid6(_) => 2,
            Layout::Raid10(r) => r.copies() - 1,
        }
    }

    /// Number of data copies of every sector.
    pub fn copies(&self) -> usize {
        match self.layout {
            Layout::Raid1 => self.members(),
            Layout::Raid10(r) => r.copies(),
            _ => 1,
        }
    }
    /// Number of stripes (RAID4/5/6), i.e. chunk rows per member.
    pub fn stripes(&self) -> u64 {
        self.used[0].checked_div(self.chunk).unwrap_or(0)
    }
    /// RAID10 distance in sectors between far copies on a member (0 otherwise).
    pub fn raid10_stride(&self) -> u64 {
        self.stride
    }

    #[inline]
    fn split_chunk(&self, s: u64) -> (u64, u64) {
        if self.pow2 {
            (s >> self.shift, s & (self.chunk - 1))
        } else {
            self.chunk_div.div_rem(s)
        }
    }

    #[inline(always)]
    fn check_logical(&self, logical: u64) -> Result<()> {
        if logical >= self.array_sectors {
            return Err(self.logical_out_of_range(logical));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn logical_out_of_range(&self, logical: u64) -> RaidError {
        RaidError::OutOfRange {
            what: "logical sector".into(),
            value: logical,
            limit: self.array_sectors,
        }
    }

    /// Map a logical sector to every copy of its data (and its stripe's
    /// parity members for RAID4/5/6).
    #[inline]
    pub fn map(&self, logical: u64) -> Result<Mapping> {
        self.check_logical(logical)?;
        // Single-copy layouts build the result in one expression: writing
        // the copy list piecewise and then moving it into the result made
        // the move (a store-forwarding stall) cost more than the arithmetic.
        match self.layout {
            Layout::Raid0(l) => Ok(Mapping {
                logical,
                copies: Copies::one(self.raid0_map(l, logical)),
                parity: None,
            }),
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                let (chunk_number, off) = self.split_chunk(logical);
                let (stripe, dd) = self.data_div.div_rem(chunk_number);
                let dd = dd as usize;
                let (dev, p, q) = self.r5_roles(stripe, dd);
                Ok(Mapping {
                    logical,
                    copies: Copies::one(Location {
                        member: dev,
                        sector: (stripe << self.shift) + off,
                    }),
                    parity: Some(StripeParity {
                        stripe,
                        p,
                        q,
                        data_index: dd,
                    }),
                })
            }
            Layout::Raid1 if self.members() <= INLINE_COPIES => Ok(Mapping {
                logical,
                copies: Copies {
                    len: self.members(),
                    inline: std::array::from_fn(|member| Location {
                        member,
                        sector: logical,
                    }),
                    heap: Vec::new(),
                },
                parity: None,
            }),
            Layout::Raid10(r) if r.copies() == 2 => {
                // n2, f2 and o2: the second copy is the next member (near,
                // wrapping one chunk down) or the far/offset copy.
                let (dev, sector) = self.raid10_first(r, logical);
                let disks = self.members();
                let second = if r.near() == 2 {
                    if dev + 1 == disks {
                        Location {
                            member: 0,
                            sector: sector + self.chunk,
                        }
                    } else {
                        Location {
                            member: dev + 1,
                            sector,
                        }
                    }
                } else {
                    Location {
                        member: if dev + 1 == disks { 0 } else { dev + 1 },
                        sector: sector + self.stride,
                    }
                };
                Ok(Mapping {
                    logical,
                    copies: Copies {
                        len: 2,
                        inline: [
                            Location {
                                member: dev,
                                sector,
                            },
                            second,
                            Location::default(),
                            Location::default(),
                        ],
                        heap: Vec::new(),
                    },
                    parity: None,
                })
            }
            Layout::Raid1 => {
                let mut copies = Copies::with_capacity(self.members());
                for member in 0..self.members() {
                    copies.push(Location {
                        member,
                        sector: logical,
                    });
                }
                Ok(Mapping {
                    logical,
                    copies,
                    parity: None,
                })
            }
            Layout::Raid10(r) => {
                let mut copies = Copies::with_capacity(r.copies());
                self.raid10_map(r, logical, &mut copies);
                Ok(Mapping {
                    logical,
                    copies,
                    parity: None,
                })
            }
        }
    }

    #[inline]
    fn raid0_map(&self, layout: Raid0Layout, logical: u64) -> Location {
        // find_zone(): first zone whose end is beyond the sector.
        let mut zi = 0;
        while logical >= self.zones[zi].zone_end {
            zi += 1;
        }
        let z = &self.zones[zi];
        let zone_off = if zi == 0 {
            logical
        } else {
            logical - self.zones[zi - 1].zone_end
        };
        // map_sector(): the member index comes from the array-relative chunk
        // number in the original layout, from the zone-relative one in the
        // alternate layout; the chunk row always from the zone offset.
        let sel = match layout {
            Raid0Layout::Original => logical,
            Raid0Layout::Alternate => zone_off,
        };
        let (chunk_no, in_chunk) = self.split_chunk(sel);
        let row = z.row.div(zone_off);
        Location {
            member: z.devs[z.nb.rem(chunk_no) as usize],
            sector: z.dev_start + row * self.chunk + in_chunk,
        }
    }

    /// `raid5_compute_sector()`'s parity selection: for stripe `stripe` and
    /// logical data index `dd`, the data member, P and Q.
    #[inline]
    fn r5_roles(&self, stripe: u64, dd: usize) -> (usize, usize, Option<usize>) {
        use ParityAlgorithm::*;
        let disks = self.members();
        let data = self.data_disks();
        let m = |k: usize| {
            if k == disks {
                self.disks_div.rem(stripe) as usize
            } else {
                self.disks1_div.rem(stripe) as usize
            }
        };
        match self.layout {
            Layout::Raid4 => (dd, data, None),
            Layout::Raid5(alg) => {
                let (dev, pd) = match alg {
                    LeftAsymmetric => {
                        let pd = data - m(disks);
                        (if dd >= pd { dd + 1 } else { dd }, pd)
                    }
                    RightAsymmetric => {
                        let pd = m(disks);
                        (if dd >= pd { dd + 1 } else { dd }, pd)
                    }
                    LeftSymmetric => {
                        let pd = data - m(disks);
                        ((pd + 1 + dd) % disks, pd)
                    }
                    RightSymmetric => {
                        let pd = m(disks);
                        ((pd + 1 + dd) % disks, pd)
                    }
                    ParityFirst => (dd + 1, 0),
                    // ParityLast; RAID6-only algorithms are rejected in new().
                    _ => (dd, data),
                };
                (dev, pd, None)
            }
            Layout::Raid6(alg) => {
                // The asymmetric and DDF-restart cases share md's
                // "Q D D D P" / "D D P Q D" placement.
                let asym = |pd: usize| {
                    if pd == disks - 1 {
                        (dd + 1, pd, 0)
                    } else if dd >= pd {
                        (dd + 2, pd, pd + 1)
                    } else {
                        (dd, pd, pd + 1)
                    }
                };
                let (dev, pd, qd) = match alg {
                    LeftAsymmetric => asym(disks - 1 - m(disks)),
                    RightAsymmetric | DdfZeroRestart => asym(m(disks)),
                    DdfNRestart => {
                        asym(disks - 1 - self.disks_div.rem(stripe.wrapping_add(1)) as usize)
                    }
                    LeftSymmetric => {
                        let pd = disks - 1 - m(disks);
                        ((pd + 2 + dd) % disks, pd, (pd + 1) % disks)
                    }
                    RightSymmetric => {
                        let pd = m(disks);
                        ((pd + 2 + dd) % disks, pd, (pd + 1) % disks)
                    }
                    ParityFirst => (dd + 2, 0, 1),
                    ParityLast => (dd, data, data + 1),
                    DdfNContinue => {
                        let pd = disks - 1 - m(disks);
                        ((pd + 1 + dd) % disks, pd, (pd + disks - 1) % disks)
                    }
                    LeftAsymmetric6 => {
                        let pd = data - m(disks - 1);
                        (if dd >= pd { dd + 1 } else { dd }, pd, disks - 1)
                    }
                    RightAsymmetric6 => {
                        let pd = m(disks - 1);
                        (if dd >= pd { dd + 1 } else { dd }, pd, disks - 1)
                    }
                    LeftSymmetric6 => {
                        let pd = data - m(disks - 1);
                        ((pd + 1 + dd) % (disks - 1), pd, disks - 1)
                    }
                    RightSymmetric6 => {
                        let pd = m(disks - 1);
                        ((pd + 1 + dd) % (disks - 1), pd, disks - 1)
                    }
                    ParityFirst6 => (dd + 1, 0, disks - 1),
                };
                (dev, pd, Some(qd))
            }
            _ => unreachable!("r5_roles is only called for RAID4/5/6"),
        }
    }

    /// The logical data index of data member `m` in stripe `stripe` (whose
    /// P member is `p`): the inverse of [`Self::r5_roles`].
    fn r5_data_index(&self, stripe: u64, m: usize, p: usize) -> usize {
        let guess = self.r5_data_index_formula(m, p);
        if guess < self.data_disks() && self.r5_roles(stripe, guess).0 == m {
            return guess;
        }
        // Not reached for md's algorithms (a unit test checks every one), but
        // a search is a safe fallback should a formula ever disagree.
        (0..self.data_disks())
            .find(|&dd| self.r5_roles(stripe, dd).0 == m)
            .unwrap_or(0)
    }

    /// Closed-form inverse of the data placement of each algorithm.
    fn r5_data_index_formula(&self, m: usize, p: usize) -> usize {
        use ParityAlgorithm::*;
        let n = self.members();
        let skip1 = |m: usize| if m > p { m - 1 } else { m };
        match self.layout {
            Layout::Raid4 => m,
            Layout::Raid5(LeftAsymmetric | RightAsymmetric) => skip1(m),
            Layout::Raid5(LeftSymmetric | RightSymmetric) => (m + n - p - 1) % n,
            Layout::Raid5(ParityFirst) => m.wrapping_sub(1),
            Layout::Raid6(LeftAsymmetric | RightAsymmetric | DdfZeroRestart | DdfNRestart) => {
                if p == n - 1 {
                    m.wrapping_sub(1)
                } else if m > p {
                    m - 2
                } else {
                    m
                }
            }
            Layout::Raid6(LeftSymmetric | RightSymmetric) => (m + 2 * n - p - 2) % n,
            Layout::Raid6(ParityFirst) => m.wrapping_sub(2),
            Layout::Raid6(DdfNContinue) => (m + n - p - 1) % n,
            Layout::Raid6(LeftAsymmetric6 | RightAsymmetric6) => skip1(m),
            Layout::Raid6(LeftSymmetric6 | RightSymmetric6) => (m + 2 * (n - 1) - p - 1) % (n - 1),
            Layout::Raid6(ParityFirst6) => m.wrapping_sub(1),
            _ => m,
        }
    }

    /// Member and member sector of the first copy (`__raid10_find_phys`).
    #[inline(always)]
    fn raid10_first(&self, r: Raid10Layout, logical: u64) -> (usize, u64) {
        let (chunk, off) = self.split_chunk(logical);
        let (mut stripe, dev) = self.disks_div.div_rem(chunk * u64::from(r.near()));
        if r.offset() {
            stripe *= u64::from(r.far());
        }
        (dev as usize, off + (stripe << self.shift))
    }

    #[inline]
    fn raid10_map(&self, r: Raid10Layout, logical: u64, out: &mut Copies) {
        // __raid10_find_phys() with far_set_size == raid_disks.
        let disks = self.members();
        let nc = usize::from(r.near());
        let fc = usize::from(r.far());
        let (mut dev, mut sector) = self.raid10_first(r, logical);
        for _ in 0..nc {
            let mut d = dev;
            let mut s = sector;
            out.push(Location {
                member: d,
                sector: s,
            });
            for _ in 1..fc {
                // nc <= disks, so one conditional subtraction is the modulo.
                d += nc;
                if d >= disks {
                    d -= disks;
                }
                s += self.stride;
                out.push(Location {
                    member: d,
                    sector: s,
                });
            }
            dev += 1;
            if dev >= disks {
                dev = 0;
                sector += self.chunk;
            }
        }
    }

    /// The roles of every member in stripe `stripe` (RAID4/5/6 only).
    pub fn stripe_layout(&self, stripe: u64) -> Result<StripeLayout> {
        if !matches!(
            self.layout,
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_)
        ) {
            return Err(geom_err(
                "layout",
                format!("{} has no parity stripes", self.layout),
            ));
        }
        if stripe >= self.stripes() {
            return Err(RaidError::OutOfRange {
                what: "stripe".into(),
                value: stripe,
                limit: self.stripes(),
            });
        }
        let data_n = self.data_disks();
        let mut data = Vec::with_capacity(data_n);
        let (mut p, mut q) = (0, None);
        for dd in 0..data_n {
            let (dev, pd, qd) = self.r5_roles(stripe, dd);
            data.push(dev);
            p = pd;
            q = qd;
        }
        let mut q_exponent = Vec::new();
        if let (Layout::Raid6(alg), Some(qd)) = (self.layout, q) {
            let disks = self.members();
            q_exponent = vec![None; disks];
            if alg.is_ddf() {
                for &d in &data {
                    q_exponent[d] = Some(d as u8);
                }
            } else {
                // raid6_d0(): md starts just after the Q block.
                let d0 = if qd == disks - 1 { 0 } else { qd + 1 };
                let mut slot = 0u8;
                for k in 0..disks {
                    let i = (d0 + k) % disks;
                    if i != p && i != qd {
                        q_exponent[i] = Some(slot);
                        slot += 1;
                    }
                }
            }
        }
        Ok(StripeLayout {
            stripe,
            p,
            q,
            data,
            q_exponent,
        })
    }

    /// What member sector `sector` of member `member` holds: the inverse of
    /// [`Geometry::map`] (and `Unused` for space md leaves idle).
    pub fn unmap(&self, member: usize, sector: u64) -> Result<MemberContent> {
        if member >= self.members() {
            return Err(RaidError::OutOfRange {
                what: "member".into(),
                value: member as u64,
                limit: self.members() as u64,
            });
        }
        if sector >= self.member_sectors[member] {
            return Err(RaidError::OutOfRange {
                what: format!("sector of member {member}"),
                value: sector,
                limit: self.member_sectors[member],
            });
        }
        if sector >= self.used[member] {
            return Ok(MemberContent::Unused);
        }
        Ok(match self.layout {
            Layout::Raid0(l) => self.raid0_unmap(l, member, sector),
            Layout::Raid1 => MemberContent::Data {
                logical: sector,
                copy: member,
            },
            Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                let (stripe, off) = self.split_chunk(sector);
                let (_, p, q) = self.r5_roles(stripe, 0);
                if p == member {
                    MemberContent::P { stripe }
                } else if q == Some(member) {
                    MemberContent::Q { stripe }
                } else {
                    let i = self.r5_data_index(stripe, member, p);
                    let chunk_no = stripe * self.data_disks() as u64 + i as u64;
                    MemberContent::Data {
                        logical: (chunk_no << self.shift) + off,
                        copy: 0,
                    }
                }
            }
            Layout::Raid10(r) => self.raid10_unmap(r, member, sector),
        })
    }

    fn raid0_unmap(&self, layout: Raid0Layout, member: usize, sector: u64) -> MemberContent {
        for (zi, z) in self.zones.iter().enumerate() {
            let zone_start = if zi == 0 {
                0
            } else {
                self.zones[zi - 1].zone_end
            };
            let nb = z.devs.len() as u64;
            let per_dev = (z.zone_end - zone_start) / nb;
            if sector < z.dev_start || sector >= z.dev_start + per_dev {
                continue;
            }
            let Some(k) = z.devs.iter().position(|&d| d == member) else {
                continue;
            };
            let rel = sector - z.dev_start;
            let (row, in_chunk) = (rel / self.chunk, rel % self.chunk);
            // The member index is chosen as (base + zone chunk) mod nb,
            // with base the zone's first array chunk (original) or 0 (alternate).
            let base = match layout {
                Raid0Layout::Original => (zone_start / self.chunk) % nb,
                Raid0Layout::Alternate => 0,
            };
            let c = row * nb + (k as u64 + nb - base) % nb;
            return MemberContent::Data {
                logical: zone_start + c * self.chunk + in_chunk,
                copy: 0,
            };
        }
        MemberContent::Unused
    }

    fn raid10_unmap(&self, r: Raid10Layout, member: usize, sector: u64) -> MemberContent {
        // raid10_find_virt() with far_set_size == raid_disks, then a forward
        // check so that sectors md never maps report Unused.
        let disks = self.members() as u64;
        let nc = u64::from(r.near());
        let fc = u64::from(r.far());
        let mut dev = member as u64;
        let offset = sector & (self.chunk - 1);
        let chunk;
        if r.offset() {
            let row = sector >> self.shift;
            let f = row % fc;
            chunk = row / fc;
            let back = (f * nc) % disks;
            dev = (dev + disks - back) % disks;
        } else {
            let mut s = sector;
            if s >= self.stride * fc {
                return MemberContent::Unused;
            }
            while s >= self.stride {
                s -= self.stride;
                dev = (dev + disks - nc % disks) % disks;
            }
            chunk = s >> self.shift;
        }
        let vchunk = (chunk * disks + dev) / nc;
        let logical = (vchunk << self.shift) + offset;
        if logical >= self.array_sectors {
            return MemberContent::Unused;
        }
        let mut copies = Copies::new();
        self.raid10_map(r, logical, &mut copies);
        match copies
            .iter()
            .position(|l| l.member == member && l.sector == sector)
        {
            Some(copy) => MemberContent::Data { logical, copy },
            None => MemberContent::Unused,
        }
    }

    /// Split the logical extent `start .. start + sectors` into contiguous
    /// per-member extents, one set per copy, in logical order. Pieces that
    /// continue the previous piece of the same copy on the same member are
    /// merged.
    pub fn map_range(&self, start: u64, sectors: u64) -> Result<Vec<MemberExtent>> {
        if sectors == 0 {
            return Ok(Vec::new());
        }
        let end = start.saturating_add(sectors);
        if end > self.array_sectors {
            return Err(RaidError::OutOfRange {
                what: "end of logical range".into(),
                value: end,
                limit: self.array_sectors + 1,
            });
        }
        let mut out: Vec<MemberExtent> = Vec::new();
        let mut last: HashMap<(usize, usize), usize> = HashMap::new();
        let mut pos = start;
        while pos < end {
            let piece_end = match pos.checked_div(self.chunk) {
                None => end,
                Some(c) => ((c + 1) * self.chunk).min(end),
            };
            let len = piece_end - pos;
            let m = self.map(pos)?;
            for (copy, loc) in m.copies.iter().enumerate() {
                if let Some(&i) = last.get(&(copy, loc.member)) {
                    let e = &mut out[i];
                    if e.logical + e.sectors == pos && e.member_sector + e.sectors == loc.sector {
                        e.sectors += len;
                        continue;
                    }
                }
                last.insert((copy, loc.member), out.len());
                out.push(MemberExtent {
                    member: loc.member,
                    member_sector: loc.sector,
                    logical: pos,
                    sectors: len,
                    copy,
                });
            }
            pos = piece_end;
        }
        Ok(out)
    }
}

/// The fewest whole chunks per member for which md's `calc_sectors()` gives a raid10 of `near`
/// × `far` copies over `disks` members any data (the same arithmetic as [`Geometry::new`]).
/// At most `near × far` chunks are needed: then every member holds one chunk of each copy.
fn raid10_min_chunks(near: u8, far: u8, disks: u64) -> Option<u64> {
    let (nc, fc) = (u64::from(near), u64::from(far));
    (1..=nc * fc).find(|&chunks| {
        let array_chunks = chunks / fc * disks / nc;
        let per_dev = (array_chunks * nc * fc).div_ceil(disks);
        per_dev / fc * disks / nc > 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_index_formula_inverts_every_algorithm() {
        use ParityAlgorithm::*;
        let algs = [
            LeftAsymmetric,
            RightAsymmetric,
            LeftSymmetric,
            RightSymmetric,
            ParityFirst,
            ParityLast,
            DdfZeroRestart,
            DdfNRestart,
            DdfNContinue,
            LeftAsymmetric6,
            RightAsymmetric6,
            LeftSymmetric6,
            RightSymmetric6,
            ParityFirst6,
        ];
        let mut layouts = vec![Layout::Raid4];
        layouts.extend(algs[..6].iter().map(|&a| Layout::Raid5(a)));
        layouts.extend(algs.iter().map(|&a| Layout::Raid6(a)));
        for layout in layouts {
            for n in 2..12usize {
                let Ok(g) = Geometry::new(layout, 8, &vec![8 * 30; n]) else {
                    continue;
                };
                for stripe in 0..30 {
                    for dd in 0..g.data_disks() {
                        let (m, p, _) = g.r5_roles(stripe, dd);
                        assert_eq!(
                            g.r5_data_index_formula(m, p),
                            dd,
                            "{layout} n {n} stripe {stripe}"
                        );
                    }
                }
            }
        }
    }
}
