//! RAID levels and md layouts, with mdadm's names and md's layout numbers.
//!
//! The names are those of mdadm's `maps.c` tables (`r5layout`, `r6layout`,
//! `r0layout`) and its RAID10 syntax (`n2`, `f2`, `o2`); the numbers are the
//! `layout` field md stores in the superblock (`ALGORITHM_*` in
//! `drivers/md/raid5.h`, the RAID10 bit fields of `drivers/md/raid10.c`).

use std::fmt;
use std::str::FromStr;

use crate::error::{RaidError, Result};

/// A RAID level (md "personality").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Striping without redundancy.
    Raid0,
    /// Mirroring: every member holds every sector.
    Raid1,
    /// Striping with a dedicated parity member.
    Raid4,
    /// Striping with rotating XOR parity.
    Raid5,
    /// Striping with XOR parity P and Reed–Solomon syndrome Q.
    Raid6,
    /// md's RAID10: near/far/offset copies over any number of members.
    Raid10,
}

impl Level {
    /// The level as mdadm's `--level` spells it (`raid5`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Raid4 => "raid4",
            Level::Raid5 => "raid5",
            Level::Raid6 => "raid6",
            Level::Raid10 => "raid10",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = RaidError;
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        let l = l.strip_prefix("raid").unwrap_or(&l);
        Ok(match l {
            "0" | "stripe" => Level::Raid0,
            "1" | "mirror" => Level::Raid1,
            "4" => Level::Raid4,
            "5" => Level::Raid5,
            "6" => Level::Raid6,
            "10" => Level::Raid10,
            _ => return Err(RaidError::BadLevel(s.to_string())),
        })
    }
}

/// How md's RAID0 places chunks in the second and later zones of an array
/// whose members differ in size (`drivers/md/raid0.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Raid0Layout {
    /// `RAID0_ORIG_LAYOUT` (1): the member within a zone is chosen from the
    /// chunk number counted from the start of the *array* (kernels before 3.14).
    Original,
    /// `RAID0_ALT_MULTIZONE_LAYOUT` (2): the member is chosen from the chunk
    /// number counted from the start of the *zone* (kernels 3.14 to 5.3).
    Alternate,
}

/// A parity placement algorithm of md's RAID4/5/6 (`ALGORITHM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParityAlgorithm {
    /// `left-asymmetric` (0).
    LeftAsymmetric,
    /// `right-asymmetric` (1).
    RightAsymmetric,
    /// `left-symmetric` (2), mdadm's default.
    LeftSymmetric,
    /// `right-symmetric` (3).
    RightSymmetric,
    /// `parity-first` (4): P (and Q) on the first member(s).
    ParityFirst,
    /// `parity-last` (5): P (and Q) on the last member(s); RAID4's placement.
    ParityLast,
    /// `ddf-zero-restart` (8, RAID6 only).
    DdfZeroRestart,
    /// `ddf-N-restart` (9, RAID6 only).
    DdfNRestart,
    /// `ddf-N-continue` (10, RAID6 only).
    DdfNContinue,
    /// `left-asymmetric-6` (16, RAID6 only): RAID5 left-asymmetric plus Q on the last member.
    LeftAsymmetric6,
    /// `right-asymmetric-6` (17, RAID6 only).
    RightAsymmetric6,
    /// `left-symmetric-6` (18, RAID6 only).
    LeftSymmetric6,
    /// `right-symmetric-6` (19, RAID6 only).
    RightSymmetric6,
    /// `parity-first-6` (20, RAID6 only).
    ParityFirst6,
}

const PARITY_NAMES: &[(&str, ParityAlgorithm, bool)] = &[
    // (mdadm name, algorithm, RAID6 only)
    ("left-asymmetric", ParityAlgorithm::LeftAsymmetric, false),
    ("right-asymmetric", ParityAlgorithm::RightAsymmetric, false),
    ("left-symmetric", ParityAlgorithm::LeftSymmetric, false),
    ("right-symmetric", ParityAlgorithm::RightSymmetric, false),
    ("default", ParityAlgorithm::LeftSymmetric, false),
    ("la", ParityAlgorithm::LeftAsymmetric, false),
    ("ra", ParityAlgorithm::RightAsymmetric, false),
    ("ls", ParityAlgorithm::LeftSymmetric, false),
    ("rs", ParityAlgorithm::RightSymmetric, false),
    ("parity-first", ParityAlgorithm::ParityFirst, false),
    ("parity-last", ParityAlgorithm::ParityLast, false),
    ("ddf-zero-restart", ParityAlgorithm::DdfZeroRestart, true),
    ("ddf-n-restart", ParityAlgorithm::DdfNRestart, true),
    ("ddf-n-continue", ParityAlgorithm::DdfNContinue, true),
    ("left-asymmetric-6", ParityAlgorithm::LeftAsymmetric6, true),
    (
        "right-asymmetric-6",
        ParityAlgorithm::RightAsymmetric6,
        true,
    ),
    ("left-symmetric-6", ParityAlgorithm::LeftSymmetric6, true),
    ("right-symmetric-6", ParityAlgorithm::RightSymmetric6, true),
    ("parity-first-6", ParityAlgorithm::ParityFirst6, true),
];

impl ParityAlgorithm {
    /// md's `ALGORITHM_*` number.
    pub fn md_number(self) -> u32 {
        use ParityAlgorithm::*;
        match self {
            LeftAsymmetric => 0,
            RightAsymmetric => 1,
            LeftSymmetric => 2,
            RightSymmetric => 3,
            ParityFirst => 4,
            ParityLast => 5,
            DdfZeroRestart => 8,
            DdfNRestart => 9,
            DdfNContinue => 10,
            LeftAsymmetric6 => 16,
            RightAsymmetric6 => 17,
            LeftSymmetric6 => 18,
            RightSymmetric6 => 19,
            ParityFirst6 => 20,
        }
    }

    /// The name mdadm prints (`left-symmetric`, `ddf-N-restart`, …).
    pub fn mdadm_name(self) -> &'static str {
        use ParityAlgorithm::*;
        match self {
            LeftAsymmetric => "left-asymmetric",
            RightAsymmetric => "right-asymmetric",
            LeftSymmetric => "left-symmetric",
            RightSymmetric => "right-symmetric",
            ParityFirst => "parity-first",
            ParityLast => "parity-last",
            DdfZeroRestart => "ddf-zero-restart",
            DdfNRestart => "ddf-N-restart",
            DdfNContinue => "ddf-N-continue",
            LeftAsymmetric6 => "left-asymmetric-6",
            RightAsymmetric6 => "right-asymmetric-6",
            LeftSymmetric6 => "left-symmetric-6",
            RightSymmetric6 => "right-symmetric-6",
            ParityFirst6 => "parity-first-6",
        }
    }

    /// Whether md accepts this algorithm only for RAID6.
    pub fn raid6_only(self) -> bool {
        PARITY_NAMES.iter().any(|&(_, a, only6)| a == self && only6)
    }

    /// Whether this is one of the DDF algorithms, whose Q coefficients follow
    /// the raw member index rather than md's "start after Q" order.
    pub fn is_ddf(self) -> bool {
        matches!(
            self,
            ParityAlgorithm::DdfZeroRestart
                | ParityAlgorithm::DdfNRestart
                | ParityAlgorithm::DdfNContinue
        )
    }
}

/// md RAID10 copy arrangement: `near` copies of each chunk on consecutive
/// members, repeated `far` times (with `offset`, the far copies sit in the
/// next chunk rows instead of the far halves of the members).
///
/// # Invariants
/// `near >= 1`, `far >= 1`, `near * far >= 2`, both at most 255 (md's
/// 8-bit fields). Only md's original far-set arrangement (far set = all
/// members, layout bit 17 clear) is supported; mdadm never sets that bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Raid10Layout {
    near: u8,
    far: u8,
    offset: bool,
}

impl Raid10Layout {
    /// A near/far/offset arrangement; see the type's invariants.
    pub fn new(near: u8, far: u8, offset: bool) -> Result<Self> {
        if near == 0 || far == 0 || u32::from(near) * u32::from(far) < 2 {
            return Err(RaidError::BadLayout {
                level: "raid10".into(),
                name: format!("near={near} far={far}"),
                rule: "near and far copies must be at least 1 and near*far at least 2".into(),
            });
        }
        Ok(Raid10Layout { near, far, offset })
    }
    /// Copies on consecutive members.
    pub fn near(self) -> u8 {
        self.near
    }
    /// Copies in far halves (or, with `offset`, in following rows).
    pub fn far(self) -> u8 {
        self.far
    }
    /// Whether far copies are offset by one row instead of a member fraction.
    pub fn offset(self) -> bool {
        self.offset
    }
    /// Total copies of every chunk.
    pub fn copies(self) -> usize {
        usize::from(self.near) * usize::from(self.far)
    }
    /// md's layout number: `near | far << 8 | offset << 16`.
    pub fn md_number(self) -> u32 {
        u32::from(self.near) | (u32::from(self.far) << 8) | (u32::from(self.offset) << 16)
    }
    /// Decode md's layout number.
    pub fn from_md_number(n: u32) -> Result<Self> {
        if n >> 17 != 0 {
            return Err(RaidError::BadLayout {
                level: "raid10".into(),
                name: n.to_string(),
                rule: "bits 17 and above (the far-set variants) are not supported; mdadm never sets them".into(),
            });
        }
        Raid10Layout::new((n & 255) as u8, ((n >> 8) & 255) as u8, n & (1 << 16) != 0)
    }
    /// The name mdadm uses: `n2`, `f2`, `o2`; a mixed layout such as near 2
    /// and far 2 prints as `n2f2` (mdadm itself prints `near=2, far=2`).
    pub fn mdadm_name(self) -> String {
        match (self.near, self.far, self.offset) {
            (n, 1, false) => format!("n{n}"),
            (1, f, false) => format!("f{f}"),
            (1, f, true) => format!("o{f}"),
            (n, f, false) => format!("n{n}f{f}"),
            (n, f, true) => format!("n{n}o{f}"),
        }
    }
}

/// A complete md layout: level plus the level's layout parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// RAID0 with its multi-zone layout.
    Raid0(Raid0Layout),
    /// RAID1.
    Raid1,
    /// RAID4 (parity on the last member).
    Raid4,
    /// RAID5 with a parity algorithm (not the RAID6-only ones).
    Raid5(ParityAlgorithm),
    /// RAID6 with any parity algorithm.
    Raid6(ParityAlgorithm),
    /// RAID10 with its copy arrangement.
    Raid10(Raid10Layout),
}

impl Layout {
    /// The level.
    pub fn level(&self) -> Level {
        match self {
            Layout::Raid0(_) => Level::Raid0,
            Layout::Raid1 => Level::Raid1,
            Layout::Raid4 => Level::Raid4,
            Layout::Raid5(_) => Level::Raid5,
            Layout::Raid6(_) => Level::Raid6,
            Layout::Raid10(_) => Level::Raid10,
        }
    }

    /// How many members [`Geometry::new`](crate::Geometry::new) accepts
    /// for this layout: RAID0/1 at least 1, RAID4/5 at least 2, RAID10 at
    /// least its copies, all at most [`MAX_MEMBERS`](crate::geometry::MAX_MEMBERS);
    /// RAID6 4 to [`MAX_RAID6_MEMBERS`](crate::geometry::MAX_RAID6_MEMBERS). A user
    /// of the crate with a smaller limit of its own (a superblock with
    /// fewer role slots) intersects it with this range to say its own.
    ///
    /// ```
    /// use raid::{Layout, Level};
    /// assert_eq!(Layout::default_for(Level::Raid6).member_range(), 4..=255);
    /// ```
    pub fn member_range(&self) -> std::ops::RangeInclusive<usize> {
        use crate::geometry::{MAX_MEMBERS, MAX_RAID6_MEMBERS};
        match self {
            Layout::Raid0(_) | Layout::Raid1 => 1..=MAX_MEMBERS,
            Layout::Raid4 | Layout::Raid5(_) => 2..=MAX_MEMBERS,
            Layout::Raid6(_) => 4..=MAX_RAID6_MEMBERS,
            Layout::Raid10(r) => r.copies()..=MAX_MEMBERS,
        }
    }

    /// The default layout for a level: RAID0 `original` (`RAID0_ORIG_LAYOUT`;
    /// pass `alternate` for multi-zone arrays created by kernels 3.14 to 5.3),
    /// RAID5/6 `left-symmetric` and RAID10 `n2` (mdadm's defaults).
    pub fn default_for(level: Level) -> Layout {
        match level {
            Level::Raid0 => Layout::Raid0(Raid0Layout::Original),
            Level::Raid1 => Layout::Raid1,
            Level::Raid4 => Layout::Raid4,
            Level::Raid5 => Layout::Raid5(ParityAlgorithm::LeftSymmetric),
            Level::Raid6 => Layout::Raid6(ParityAlgorithm::LeftSymmetric),
            Level::Raid10 => Layout::Raid10(Raid10Layout {
                near: 2,
                far: 1,
                offset: false,
            }),
        }
    }

    /// Parse a layout as mdadm's `--layout` spells it for `level`.
    ///
    /// RAID0: `original`/`alternate` (or `1`/`2`); RAID4: `parity-last` or
    /// `default`; RAID5: `left-symmetric`, `ls`, `parity-first`, …; RAID6:
    /// those plus `ddf-zero-restart`, `ddf-N-restart`, `ddf-N-continue` and the
    /// `-6` variants; RAID10: `n<k>`, `f<k>`, `o<k>` (and `n<k>f<k>`,
    /// `n<k>o<k>` for mixed layouts). An empty string or `default` gives
    /// [`Layout::default_for`]. Case is ignored.
    pub fn parse(level: Level, name: &str) -> Result<Layout> {
        let lower = name.trim().to_ascii_lowercase();
        let bad = |rule: &str| RaidError::BadLayout {
            level: level.to_string(),
            name: name.to_string(),
            rule: rule.to_string(),
        };
        if lower.is_empty() || lower == "default" {
            return Ok(Layout::default_for(level));
        }
        match level {
            Level::Raid0 => match lower.as_str() {
                "original" | "1" => Ok(Layout::Raid0(Raid0Layout::Original)),
                "alternate" | "2" => Ok(Layout::Raid0(Raid0Layout::Alternate)),
                _ => Err(bad("expected `original` or `alternate`")),
            },
            Level::Raid1 => Err(bad("raid1 has no layouts; use `default` or leave it empty")),
            Level::Raid4 => match lower.as_str() {
                "parity-last" => Ok(Layout::Raid4),
                _ => Err(bad("raid4 keeps parity on the last member: expected `parity-last`")),
            },
            Level::Raid5 | Level::Raid6 => {
                let found = PARITY_NAMES.iter().find(|(n, _, _)| *n == lower);
                match found {
                    Some(&(_, _, true)) if level == Level::Raid5 => {
                        Err(bad("this algorithm exists only for raid6"))
                    }
                    Some(&(_, alg, _)) if level == Level::Raid5 => Ok(Layout::Raid5(alg)),
                    Some(&(_, alg, _)) => Ok(Layout::Raid6(alg)),
                    None => Err(bad(
                        "expected one of left-asymmetric, right-asymmetric, left-symmetric, right-symmetric (la/ra/ls/rs), parity-first, parity-last; raid6 also ddf-zero-restart, ddf-N-restart, ddf-N-continue, left-asymmetric-6, right-asymmetric-6, left-symmetric-6, right-symmetric-6, parity-first-6",
                    )),
                }
            }
            Level::Raid10 => parse_raid10(&lower)
                .ok_or_else(|| bad("expected n<copies>, f<copies> or o<copies> (e.g. n2, f2, o3), optionally n<k>f<k> / n<k>o<k>; copies 1..=255 with at least 2 in total"))
                .map(Layout::Raid10),
        }
    }

    /// The name to pass to `mdadm --layout`, or `None` for RAID1 (no layout).
    pub fn mdadm_name(&self) -> Option<String> {
        match self {
            Layout::Raid0(Raid0Layout::Original) => Some("original".into()),
            Layout::Raid0(Raid0Layout::Alternate) => Some("alternate".into()),
            Layout::Raid1 => None,
            Layout::Raid4 => Some("parity-last".into()),
            Layout::Raid5(a) | Layout::Raid6(a) => Some(a.mdadm_name().into()),
            Layout::Raid10(r) => Some(r.mdadm_name()),
        }
    }

    /// md's superblock `layout` number.
    pub fn md_number(&self) -> u32 {
        match self {
            Layout::Raid0(Raid0Layout::Original) => 1,
            Layout::Raid0(Raid0Layout::Alternate) => 2,
            Layout::Raid1 => 0,
            Layout::Raid4 => ParityAlgorithm::ParityLast.md_number(),
            Layout::Raid5(a) | Layout::Raid6(a) => a.md_number(),
            Layout::Raid10(r) => r.md_number(),
        }
    }
}

fn parse_raid10(s: &str) -> Option<Raid10Layout> {
    // One or two groups of <letter><count>: n, f, o; n may combine with f or o.
    let mut near = None;
    let mut far = None;
    let mut offset = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let letter = bytes[i];
        i += 1;
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let n: u8 = s.get(start..i)?.parse().ok()?;
        match letter {
            b'n' if near.is_none() => near = Some(n),
            b'f' | b'o' if far.is_none() => {
                far = Some(n);
                offset = letter == b'o';
            }
            _ => return None,
        }
    }
    Raid10Layout::new(near.unwrap_or(1), far.unwrap_or(1), offset).ok()
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mdadm_name() {
            Some(n) => write!(f, "{} {}", self.level(), n),
            None => write!(f, "{}", self.level()),
        }
    }
}
