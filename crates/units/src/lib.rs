//! One byte-size type for the whole SDK.
//!
//! Storage software mixes two unit systems and gets hurt by it: a "T" that is 10¹² bytes in one
//! file and 2⁴⁰ in another silently loses 9% of a drive. This crate has one rule, the meaning
//! Kubernetes quantities give the units, and every crate of the SDK parses and prints sizes
//! through it:
//!
//! | written | meaning | examples |
//! |---|---|---|
//! | no unit, or `B` | bytes | `4096`, `512 B`, `1_000` |
//! | SI: `k`/`K`, `M`, `G`, `T`, `P`, `E`, with or without `B` | powers of **1000** | `12TB`, `500 G`, `4k` |
//! | IEC: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`, with or without `B` | powers of **1024** | `4 KiB`, `10Gi`, `1.5 GiB` |
//! | a decimal exponent, `e` or `E` and a signed integer, instead of a unit | bytes × 10ⁿ | `1e3`, `1.5E9`, `150e-1` |
//!
//! The units mean what they mean in Kubernetes quantities, and every Kubernetes quantity that is
//! a whole number of bytes reads the same here (`-0` is zero). The notation is wider, for people:
//! spaces, a `B`, `_` between digits, `K` and case-insensitive multi-letter units, none of which
//! Kubernetes accepts; [`ByteSize::parse_quantity`] reads Kubernetes' grammar to the letter, for
//! text that Kubernetes itself must accept.
//!
//! Multi-letter units are case-insensitive (`gib`, `GB`). A lone `m` is refused: in Kubernetes
//! quantities it means *milli*, which is never a size. A lone `e` is refused too: Kubernetes reads
//! only the upper-case `E` as exa, and an `e` there starts a decimal exponent, which needs digits
//! (`1e3`; `1e` and `1e+` are errors). A fraction is allowed when the result is a
//! whole number of bytes (`1.5 GiB` is 1,610,612,736 bytes; `0.1 KiB` is refused, it is 102.4).
//! Values are exact: no floating point is involved anywhere. In a [`ByteRate`] a prefix with a
//! lower-case `b` (`100 Gb/s`) is refused: network speeds are written so in bits per second.
//!
//! [`ByteSize`]'s `Display` is exact too, in the unit that divides the value with the fewest
//! digits (binary on a tie), so that printing and parsing again gives the same number; [`ByteSize::approx`] prints
//! three significant digits for people, and [`ByteSize::quantity`] prints a Kubernetes quantity.
//!
//! ```
//! use storage_units::ByteSize;
//!
//! let drive: ByteSize = "12 TB".parse()?;
//! assert_eq!(drive.bytes(), 12_000_000_000_000);
//! assert_eq!(ByteSize::gib(10).to_string(), "10 GiB");
//! assert_eq!(ByteSize::gib(10).quantity().to_string(), "10Gi");
//! assert_eq!(drive.approx().to_string(), "10.9 TiB");
//! assert_eq!("1.5 GiB".parse::<ByteSize>()?, ByteSize::mib(1536));
//!
//! let err = "5 XB".parse::<ByteSize>().unwrap_err();
//! assert_eq!(err.to_string(), r#"size "5 XB": unknown unit "XB" (use B, kB, MB, GB, TB, PB, EB or KiB, MiB, GiB, TiB, PiB, EiB)"#);
//! # Ok::<(), storage_units::ParseSizeError>(())
//! ```
//!
//! Messages quote what they name through the same crate: rejected input by [`quote`] (escaped,
//! cut after 64 characters; [`quote_within`] cuts at another length), and paths by [`quote_path`] (plain ones as they are, odd ones
//! escaped, a long one cut in the middle so that its last component stays visible).
//!
//! # Features
//! - `serde`: `ByteSize` and [`ByteRate`] deserialize from an integer (bytes) or a string with a
//!   unit, and serialize as an integer. A floating-point number (`1.5e9` in JSON) is refused
//!   with the way to write it: the file's parser may already have rounded it.
//! - `proptest`: `Arbitrary` implementations for both, and [`cases`], the one way the
//!   workspace's property tests read their case count from the environment.

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "proptest")]
pub mod cases;
mod path;
pub use path::{PATH_HEAD_CHARS, PATH_SHOWN_CHARS, PATH_TAIL_CHARS, quote_path};

/// A unit a size can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// 1 byte.
    B,
    /// 1000 bytes.
    KB,
    /// 1000² bytes.
    MB,
    /// 1000³ bytes.
    GB,
    /// 1000⁴ bytes.
    TB,
    /// 1000⁵ bytes.
    PB,
    /// 1000⁶ bytes.
    EB,
    /// 1024 bytes.
    KiB,
    /// 1024² bytes.
    MiB,
    /// 1024³ bytes.
    GiB,
    /// 1024⁴ bytes.
    TiB,
    /// 1024⁵ bytes.
    PiB,
    /// 1024⁶ bytes.
    EiB,
}

/// Binary units from the largest down, then decimal ones: the order `Display` tries them in.
const DISPLAY_ORDER: [Unit; 12] = [
    Unit::EiB,
    Unit::PiB,
    Unit::TiB,
    Unit::GiB,
    Unit::MiB,
    Unit::KiB,
    Unit::EB,
    Unit::PB,
    Unit::TB,
    Unit::GB,
    Unit::MB,
    Unit::KB,
];

impl Unit {
    /// How many bytes one of this unit is.
    pub const fn bytes(self) -> u64 {
        match self {
            Unit::B => 1,
            Unit::KB => 1_000,
            Unit::MB => 1_000_000,
            Unit::GB => 1_000_000_000,
            Unit::TB => 1_000_000_000_000,
            Unit::PB => 1_000_000_000_000_000,
            Unit::EB => 1_000_000_000_000_000_000,
            Unit::KiB => 1 << 10,
            Unit::MiB => 1 << 20,
            Unit::GiB => 1 << 30,
            Unit::TiB => 1 << 40,
            Unit::PiB => 1 << 50,
            Unit::EiB => 1 << 60,
        }
    }

    /// The symbol this crate prints (`"GiB"`, `"TB"`, `"B"`).
    pub const fn symbol(self) -> &'static str {
        match self {
            Unit::B => "B",
            Unit::KB => "kB",
            Unit::MB => "MB",
            Unit::GB => "GB",
            Unit::TB => "TB",
            Unit::PB => "PB",
            Unit::EB => "EB",
            Unit::KiB => "KiB",
            Unit::MiB => "MiB",
            Unit::GiB => "GiB",
            Unit::TiB => "TiB",
            Unit::PiB => "PiB",
            Unit::EiB => "EiB",
        }
    }

    /// The Kubernetes quantity suffix (`"Gi"`, `"T"`, `""` for bytes).
    pub const fn quantity_suffix(self) -> &'static str {
        match self {
            Unit::B => "",
            Unit::KB => "k",
            Unit::MB => "M",
            Unit::GB => "G",
            Unit::TB => "T",
            Unit::PB => "P",
            Unit::EB => "E",
            Unit::KiB => "Ki",
            Unit::MiB => "Mi",
            Unit::GiB => "Gi",
            Unit::TiB => "Ti",
            Unit::PiB => "Pi",
            Unit::EiB => "Ei",
        }
    }

    /// The unit whose [`Unit::quantity_suffix`] is `suffix`, exactly as written (`"Gi"`, `"k"`,
    /// `""` for bytes); `None` for any other text.
    fn from_quantity_suffix(suffix: &str) -> Option<Unit> {
        std::iter::once(Unit::B)
            .chain(DISPLAY_ORDER)
            .find(|u| u.quantity_suffix() == suffix)
    }

    /// Reads a unit as written after a number; `None` when it is not one.
    fn parse(text: &str) -> Option<Unit> {
        // A lone `m` is milli in Kubernetes quantities; only the upper-case `M` is mega. A lone
        // `e` is not a unit there either: only the upper-case `E` is exa, and `e` starts a
        // decimal exponent (`1e3`), which needs digits.
        if text == "m" || text == "e" {
            return None;
        }
        let lower = text.to_ascii_lowercase();
        let stem = match lower.strip_suffix('b') {
            Some(stem) if !stem.is_empty() => stem,
            _ => lower.as_str(),
        };
        Some(match stem {
            "" | "b" => Unit::B,
            "k" => Unit::KB,
            "m" => Unit::MB,
            "g" => Unit::GB,
            "t" => Unit::TB,
            "p" => Unit::PB,
            "e" => Unit::EB,
            "ki" => Unit::KiB,
            "mi" => Unit::MiB,
            "gi" => Unit::GiB,
            "ti" => Unit::TiB,
            "pi" => Unit::PiB,
            "ei" => Unit::EiB,
            _ => return None,
        })
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A size in bytes.
///
/// # Invariants
/// Any `u64`: the value is an exact number of bytes. Arithmetic is checked (`checked_*`) or
/// saturating; nothing wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// No bytes.
    pub const ZERO: ByteSize = ByteSize(0);
    /// The largest size.
    pub const MAX: ByteSize = ByteSize(u64::MAX);

    /// `n` bytes.
    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    /// `n` of `unit`, or `None` when that does not fit in 64 bits.
    pub const fn checked_from(n: u64, unit: Unit) -> Option<Self> {
        match n.checked_mul(unit.bytes()) {
            Some(bytes) => Some(ByteSize(bytes)),
            None => None,
        }
    }

    /// `n` KiB. Panics on overflow, so use it with constants; see [`checked_from`](Self::checked_from).
    pub const fn kib(n: u64) -> Self {
        Self::unit_const(n, Unit::KiB)
    }
    /// `n` MiB. Panics on overflow, so use it with constants.
    pub const fn mib(n: u64) -> Self {
        Self::unit_const(n, Unit::MiB)
    }
    /// `n` GiB. Panics on overflow, so use it with constants.
    pub const fn gib(n: u64) -> Self {
        Self::unit_const(n, Unit::GiB)
    }
    /// `n` TiB. Panics on overflow, so use it with constants.
    pub const fn tib(n: u64) -> Self {
        Self::unit_const(n, Unit::TiB)
    }
    /// `n` kB (1000 bytes). Panics on overflow, so use it with constants.
    pub const fn kb(n: u64) -> Self {
        Self::unit_const(n, Unit::KB)
    }
    /// `n` MB. Panics on overflow, so use it with constants.
    pub const fn mb(n: u64) -> Self {
        Self::unit_const(n, Unit::MB)
    }
    /// `n` GB. Panics on overflow, so use it with constants.
    pub const fn gb(n: u64) -> Self {
        Self::unit_const(n, Unit::GB)
    }
    /// `n` TB. Panics on overflow, so use it with constants.
    pub const fn tb(n: u64) -> Self {
        Self::unit_const(n, Unit::TB)
    }

    const fn unit_const(n: u64, unit: Unit) -> Self {
        match Self::checked_from(n, unit) {
            Some(size) => size,
            None => panic!("size constant overflows 64 bits"),
        }
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses a size as the [crate documentation](crate) describes.
    pub fn parse(text: &str) -> Result<Self, ParseSizeError> {
        parse(text, "size").map(ByteSize)
    }

    /// Parses a Kubernetes quantity exactly as Kubernetes' `resource.Quantity` grammar writes
    /// it, for text that Kubernetes itself produced or must accept (a PVC's `storage`, a
    /// StorageClass parameter validated by the API server):
    ///
    /// ```text
    /// <quantity>        ::= <signedNumber><suffix>
    /// <signedNumber>    ::= <number> | "+" <number> | "-" <number>
    /// <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    /// <suffix>          ::= "" | k | M | G | T | P | E | Ki | Mi | Gi | Ti | Pi | Ei
    ///                     | m | u | n | "e" <signedInteger> | "E" <signedInteger>
    /// ```
    ///
    /// Suffixes are case-sensitive and nothing else is allowed: no space, no `B`, no `_`. The
    /// value must be a whole number of bytes that fits in 64 bits, and is never rounded:
    /// `0.1` and `500m` (half a byte) are refused; `1500m` is 1 byte and a half, refused;
    /// `2000m` is 2 bytes; `-0` is zero; any other negative number is refused.
    ///
    /// [`ByteSize::parse`] reads everything this reads (except the rarely meant milli, micro
    /// and nano suffixes) and more (`12 TB`, `4 KiB`, `1_000`, `1gi`), for files and flags
    /// written by people.
    ///
    /// ```
    /// use storage_units::ByteSize;
    /// assert_eq!(ByteSize::parse_quantity("1.5Gi")?.bytes(), 1_610_612_736);
    /// assert_eq!(ByteSize::parse_quantity("1e3")?.bytes(), 1000);
    /// assert_eq!(ByteSize::parse_quantity("+.5Ki")?.bytes(), 512);
    /// let e = ByteSize::parse_quantity("1gi").unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "quantity \"1gi\": unknown suffix \"gi\" (suffixes are case-sensitive: \
    ///      k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent such as e3)"
    /// );
    /// assert!(ByteSize::parse_quantity("1 Gi").is_err());
    /// # Ok::<(), storage_units::ParseSizeError>(())
    /// ```
    pub fn parse_quantity(text: &str) -> Result<Self, ParseSizeError> {
        parse_quantity(text).map(ByteSize)
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: ByteSize) -> Option<ByteSize> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(ByteSize(v)),
            None => None,
        }
    }

    /// `self - other`, or `None` when `other` is larger.
    pub const fn checked_sub(self, other: ByteSize) -> Option<ByteSize> {
        match self.0.checked_sub(other.0) {
            Some(v) => Some(ByteSize(v)),
            None => None,
        }
    }

    /// `self * n`, or `None` on overflow.
    pub const fn checked_mul(self, n: u64) -> Option<ByteSize> {
        match self.0.checked_mul(n) {
            Some(v) => Some(ByteSize(v)),
            None => None,
        }
    }

    /// `self - other`, or zero when `other` is larger.
    pub const fn saturating_sub(self, other: ByteSize) -> ByteSize {
        ByteSize(self.0.saturating_sub(other.0))
    }

    /// Whether `self` is a whole number of `unit`s. Every size is a multiple of one byte; no size
    /// but zero is a multiple of zero.
    pub const fn is_multiple_of(self, unit: ByteSize) -> bool {
        self.0.is_multiple_of(unit.0)
    }

    /// The smallest multiple of `unit` that is at least `self`; `None` when `unit` is zero or the
    /// result does not fit.
    pub const fn align_up(self, unit: ByteSize) -> Option<ByteSize> {
        if unit.0 == 0 {
            return None;
        }
        let rem = self.0 % unit.0;
        if rem == 0 {
            Some(self)
        } else {
            match self.0.checked_add(unit.0 - rem) {
                Some(v) => Some(ByteSize(v)),
                None => None,
            }
        }
    }

    /// The largest multiple of `unit` that is at most `self`; `None` when `unit` is zero.
    pub const fn align_down(self, unit: ByteSize) -> Option<ByteSize> {
        if unit.0 == 0 {
            None
        } else {
            Some(ByteSize(self.0 - self.0 % unit.0))
        }
    }

    /// The unit that divides the size exactly with the smallest count (binary on a tie), and the
    /// count; `(n, Unit::B)` when none does, and `(0, Unit::B)` for zero.
    pub fn exact_unit(self) -> (u64, Unit) {
        if self.0 == 0 {
            return (0, Unit::B);
        }
        // The fewest digits wins (`12 TB`, not `11718750000 KiB`); binary units come first in
        // DISPLAY_ORDER, so they win ties.
        DISPLAY_ORDER
            .iter()
            .filter(|u| self.0.is_multiple_of(u.bytes()))
            .map(|&u| (self.0 / u.bytes(), u))
            .min_by_key(|&(n, _)| n)
            .unwrap_or((self.0, Unit::B))
    }

    /// A display of the size for people, with three significant digits in binary units
    /// (`"10.9 TiB"`, `"0.977 MiB"` for 1000 KiB, `"1.00 MiB"` for 1 MiB less a byte); below
    /// 1 KiB the exact bytes (`"512 B"`). Not exact; use `Display` where the value must survive
    /// a round trip.
    pub fn approx(self) -> Approx {
        Approx(self)
    }

    /// A display of the size as an exact Kubernetes quantity (`"10Gi"`, `"12T"`, `"1536"`).
    pub fn quantity(self) -> Quantity {
        Quantity(self)
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> Self {
        size.0
    }
}

/// CSI carries sizes as `int64`; a negative one is not a size.
impl TryFrom<i64> for ByteSize {
    type Error = ParseSizeError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u64::try_from(value)
            .map(ByteSize)
            .map_err(|_| ParseSizeError {
                what: "size",
                input: value.to_string(),
                kind: ErrorKind::Negative,
            })
    }
}

impl FromStr for ByteSize {
    type Err = ParseSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteSize::parse(s)
    }
}

impl fmt::Display for ByteSize {
    /// Exact: the unit that divides the size with the smallest count, so that parsing the text
    /// gives the same size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = self.exact_unit();
        write!(f, "{n} {}", unit.symbol())
    }
}

/// The [`ByteSize::approx`] display.
#[derive(Clone, Copy, Debug)]
pub struct Approx(ByteSize);

impl fmt::Display for Approx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.0;
        let unit = [
            Unit::EiB,
            Unit::PiB,
            Unit::TiB,
            Unit::GiB,
            Unit::MiB,
            Unit::KiB,
        ]
        .into_iter()
        .find(|u| bytes >= u.bytes());
        let Some(unit) = unit else {
            return write!(f, "{bytes} B");
        };
        // Exact integer arithmetic, rounded half up once, at the precision that gives three
        // significant digits (rounding hundredths and then tenths would round twice).
        let (bytes, per) = (u128::from(bytes), u128::from(unit.bytes()));
        let scaled = |scale: u128| (bytes * scale + per / 2) / per;
        let hundredths = scaled(100);
        let (whole, frac) = (hundredths / 100, hundredths % 100);
        let tenths = scaled(10);
        let next = match unit {
            Unit::KiB => Some(Unit::MiB),
            Unit::MiB => Some(Unit::GiB),
            Unit::GiB => Some(Unit::TiB),
            Unit::TiB => Some(Unit::PiB),
            Unit::PiB => Some(Unit::EiB),
            _ => None,
        };
        if let Some(next) = next
            && scaled(1) >= 1000
        {
            // 1000–1023 of a unit are four digits ("1024 KiB" for 1 MiB less a byte): the next
            // unit gives three, "0.977 MiB" ... "1.00 MiB".
            let per = u128::from(next.bytes());
            let thousandths = (bytes * 1000 + per / 2) / per;
            if thousandths >= 1000 {
                write!(f, "1.00 {}", next.symbol())
            } else {
                write!(f, "0.{thousandths:03} {}", next.symbol())
            }
        } else if whole >= 100 || tenths >= 1000 {
            write!(f, "{} {}", scaled(1), unit.symbol())
        } else if whole >= 10 {
            write!(f, "{}.{} {}", tenths / 10, tenths % 10, unit.symbol())
        } else {
            write!(f, "{whole}.{frac:02} {}", unit.symbol())
        }
    }
}

/// The [`ByteSize::quantity`] display.
#[derive(Clone, Copy, Debug)]
pub struct Quantity(ByteSize);

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = self.0.exact_unit();
        write!(f, "{n}{}", unit.quantity_suffix())
    }
}

/// A rate in bytes per second, written like a size with an optional `/s` (`"200 MB/s"`).
///
/// # Invariants
/// Any `u64` of bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRate(u64);

impl ByteRate {
    /// `n` bytes per second.
    pub const fn new(bytes_per_second: u64) -> Self {
        ByteRate(bytes_per_second)
    }

    /// Bytes per second.
    pub const fn bytes_per_second(self) -> u64 {
        self.0
    }

    /// Parses a size with an optional `/s` suffix.
    ///
    /// A unit prefix followed by a lower-case `b` (`Gb/s`, `10 mb/s`, `1 Gib/s`) is refused
    /// with [`ErrorKind::Bits`]: network speeds are written that way in bits per second, and
    /// reading `100 Gb/s` (a 100-gigabit port, 12.5 GB/s) as 100 GB/s would overstate the link
    /// eightfold. Sizes keep case-insensitive units (`12 tb`), where no bit reading is common.
    ///
    /// ```
    /// use storage_units::{ByteRate, ErrorKind};
    ///
    /// assert_eq!(ByteRate::parse("12.5 GB/s")?.bytes_per_second(), 12_500_000_000);
    /// let e = ByteRate::parse("100 Gb/s").unwrap_err();
    /// assert!(matches!(e.kind(), ErrorKind::Bits(_)));
    /// assert_eq!(
    ///     e.to_string(),
    ///     "rate \"100 Gb/s\": \"Gb\" reads as bits per second in a rate; write GB for bytes \
    ///      (a bit rate divided by 8)"
    /// );
    /// # Ok::<(), storage_units::ParseSizeError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, ParseSizeError> {
        let t = text.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        let fail = |kind| ParseSizeError {
            what: "rate",
            input: text.to_string(),
            kind,
        };
        let unit = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &t[unit.len()..];
        if let Some(stem) = unit.strip_suffix('b')
            && !stem.is_empty()
            && Unit::parse(unit).is_some_and(|u| u != Unit::B)
        {
            return Err(fail(ErrorKind::Bits(unit.to_string())));
        }
        parse(t, "rate").map(ByteRate).map_err(|e| ParseSizeError {
            input: text.to_string(),
            ..e
        })
    }
}

impl FromStr for ByteRate {
    type Err = ParseSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteRate::parse(s)
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", ByteSize(self.0))
    }
}

/// A size or rate that could not be read. The message quotes the input and names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {}: {kind}", quote(.input))]
pub struct ParseSizeError {
    what: &'static str,
    input: String,
    kind: ErrorKind,
}

impl ParseSizeError {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The text that was read.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// Why a size could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing, or no digits before the unit.
    #[error("expected a number, e.g. 10Gi or 500 GB")]
    NoNumber,
    /// A minus sign.
    #[error("must not be negative")]
    Negative,
    /// Digits that are not a decimal number.
    #[error("{} is not a decimal number", quote(.0))]
    BadNumber(String),
    /// A suffix that is not a unit.
    #[error(
        "unknown unit {} (use B, kB, MB, GB, TB, PB, EB or KiB, MiB, GiB, TiB, PiB, EiB)",
        quote(.0)
    )]
    UnknownUnit(String),
    /// A lone `m`: milli in Kubernetes quantities.
    #[error(
        "\"m\" means milli in Kubernetes quantities; write M or MB for 10^6 bytes, Mi or MiB for 2^20"
    )]
    Milli,
    /// An `e` or `E` with an optional sign and no digits after it (`1e`, `1e+`, `1E-`): a decimal
    /// exponent needs digits (`1e3`), and in Kubernetes quantities only the upper-case `E` alone
    /// is exa.
    #[error(
        "{0:?} is a decimal exponent without digits (write e.g. 1e3); for 10^18 bytes write E or EB, for 2^60 Ei or EiB"
    )]
    IncompleteExponent(String),
    /// A fraction that does not come out as whole bytes.
    #[error("is not a whole number of bytes")]
    Fractional,
    /// More than 2⁶⁴ − 1 bytes.
    #[error("does not fit in 64 bits")]
    Overflow,
    /// In a rate, a unit prefix with a lower-case `b` (`Gb`, `mb`, `Gib`): bits per second
    /// as network speeds are written, not bytes; see [`ByteRate::parse`].
    #[error(
        "{0:?} reads as bits per second in a rate; write {upper} for bytes (a bit rate divided by 8)",
        upper = bytes_spelling(.0)
    )]
    Bits(String),
    /// A suffix [`ByteSize::parse_quantity`] does not know: Kubernetes' suffixes are
    /// case-sensitive, and a quantity has no space, `B` or `_`.
    #[error(
        "unknown suffix {} (suffixes are case-sensitive: k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent such as e3)",
        quote(.0)
    )]
    UnknownSuffix(String),
}

/// Most characters of a text that [`quote`] keeps.
pub const SHOWN_CHARS: usize = 64;

/// `text` as a one-line error message quotes it: in double quotes with control characters,
/// quotes and backslashes escaped as `{:?}` writes them (a newline in the input cannot break
/// the line), whole up to [`SHOWN_CHARS`] characters, else its first 64 characters followed by
/// `…` and the whole text's length in bytes, so that the error stays short whatever was read.
/// Every crate of the SDK quotes rejected input through it ([`ParseSizeError`] keeps the full
/// text in [`ParseSizeError::input`]); a path is shown by [`quote_path`] instead, which keeps
/// a long path's tail too.
///
/// ```
/// use storage_units::quote;
///
/// assert_eq!(quote("12 XB"), r#""12 XB""#);
/// assert_eq!(quote("a\nb"), r#""a\nb""#);
/// let long = "9".repeat(100_000);
/// assert_eq!(quote(&long), format!("{:?}… (100000 bytes)", &long[..64]));
/// ```
pub fn quote(text: &str) -> String {
    quote_within(text, SHOWN_CHARS)
}

/// `text` quoted as [`quote`] quotes it, cut after `max_chars` characters instead of
/// [`SHOWN_CHARS`]: for input whose readable length is another (a mount option, say).
///
/// ```
/// use storage_units::quote_within;
///
/// assert_eq!(quote_within("ro", 4), r#""ro""#);
/// assert_eq!(quote_within("noatime", 2), r#""no"… (7 bytes)"#);
/// ```
pub fn quote_within(text: &str, max_chars: usize) -> String {
    match cut(text, max_chars) {
        None => format!("{text:?}"),
        Some(at) => format!("{:?}… ({} bytes)", &text[..at], text.len()),
    }
}

/// `text` shortened to `max_chars` characters as [`quote`] shortens, without the quotes and
/// escapes: for text that is prose already, such as another library's error message that may
/// echo a long input, which a caller has made one line.
///
/// ```
/// use storage_units::shorten;
///
/// assert_eq!(shorten("invalid type", 64), "invalid type");
/// let long = "x".repeat(70);
/// assert_eq!(shorten(&long, 64), format!("{}… (70 bytes)", &long[..64]));
/// ```
pub fn shorten(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match cut(text, max_chars) {
        None => text.into(),
        Some(at) => format!("{}… ({} bytes)", &text[..at], text.len()).into(),
    }
}

/// `message`, another library's (a command-line parser's, say), with the `value` it quotes
/// whole requoted by [`quote`] when that value is long or holds control characters: `'value'`
/// (or the bare value) is replaced once. Short printable values are left as the library wrote
/// them.
///
/// ```
/// use storage_units::requote;
///
/// let long = "x".repeat(100);
/// let message = format!("invalid value '{long}' for '--seed <SEED>'");
/// assert_eq!(
///     requote(&message, &long),
///     format!("invalid value {:?}… (100 bytes) for '--seed <SEED>'", &long[..64])
/// );
/// assert_eq!(requote("invalid value 'x' for '--seed'", "x"), "invalid value 'x' for '--seed'");
/// ```
pub fn requote<'a>(message: &'a str, value: &str) -> std::borrow::Cow<'a, str> {
    if cut(value, SHOWN_CHARS).is_none() && !value.chars().any(char::is_control) {
        return message.into();
    }
    let quoted = format!("'{value}'");
    let old = if message.contains(&quoted) {
        quoted.as_str()
    } else {
        value
    };
    message.replacen(old, &quote(value), 1).into()
}

/// serde's message for an integer out of its type's range (`invalid value: integer `-3`,
/// expected u32`, as toml reports `racks = -3`) in a reader's words: the range, then the value.
/// `None` for any other message. For the unsigned types a count or index is read as.
///
/// ```
/// use storage_units::count_rule;
///
/// assert_eq!(
///     count_rule("invalid value: integer `-3`, expected u32").as_deref(),
///     Some("must be a whole number from 0 to 4294967295, got -3")
/// );
/// assert_eq!(count_rule("invalid type: string \"x\", expected u32"), None);
/// ```
pub fn count_rule(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid value: integer `")?;
    let (value, ty) = rest.split_once("`, expected ")?;
    let max = match ty.trim() {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" => u64::MAX,
        "usize" => usize::MAX as u64,
        _ => return None,
    };
    Some(format!(
        "must be a whole number from 0 to {max}, got {value}"
    ))
}

/// The byte offset of character number `max_chars` of `text`, if it has more characters.
fn cut(text: &str, max_chars: usize) -> Option<usize> {
    text.char_indices().nth(max_chars).map(|(at, _)| at)
}

/// `Gb` → `GB`, `kib` → `KiB`: the byte unit of a bits-looking unit, for [`ErrorKind::Bits`].
fn bytes_spelling(unit: &str) -> String {
    Unit::parse(unit).map_or_else(|| unit.to_string(), |u| u.symbol().to_string())
}

fn parse(text: &str, what: &'static str) -> Result<u64, ParseSizeError> {
    let fail = |kind| ParseSizeError {
        what,
        input: text.to_string(),
        kind,
    };
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('-') {
        // Kubernetes reads `-0` (and `-0.0Gi`) as zero, which is a size; any other negative
        // number is not. A second sign (`--0`, `-+0`) is no number at all.
        return match rest.starts_with(['+', '-']) {
            false if parse(rest, what) == Ok(0) => Ok(0),
            _ => Err(fail(ErrorKind::Negative)),
        };
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (number, unit_text) = t.split_at(split);
    let unit_text = unit_text.trim_start();
    let number: String = number.chars().filter(|&c| c != '_').collect();
    if number.is_empty() {
        return Err(fail(ErrorKind::NoNumber));
    }
    // A Kubernetes decimal exponent (`1e3`, `1E-2`) is written where a unit would be; a lone `E`
    // with no digits after it is still exa, but Kubernetes refuses a lone `e` and an `e`/`E`
    // with only a sign after it (`<decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>`).
    let (unit, exponent) = match decimal_exponent(unit_text) {
        Some(exponent) => (Unit::B, Some(exponent)),
        None => match Unit::parse(unit_text) {
            Some(unit) => (unit, None),
            None if unit_text == "m" => return Err(fail(ErrorKind::Milli)),
            None if is_incomplete_exponent(unit_text) => {
                return Err(fail(ErrorKind::IncompleteExponent(unit_text.to_string())));
            }
            None => return Err(fail(ErrorKind::UnknownUnit(unit_text.to_string()))),
        },
    };
    let (whole, frac) = number.split_once('.').unwrap_or((&number, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_ok(whole) || !digits_ok(frac) {
        return Err(fail(ErrorKind::BadNumber(number.clone())));
    }
    exact_bytes(whole, frac, exponent, unit).map_err(fail)
}

/// [`ByteSize::parse_quantity`]: Kubernetes' grammar, to the letter.
fn parse_quantity(text: &str) -> Result<u64, ParseSizeError> {
    let fail = |kind| ParseSizeError {
        what: "quantity",
        input: text.to_string(),
        kind,
    };
    let (negative, t) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    if number.is_empty() {
        return Err(fail(ErrorKind::NoNumber));
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(fail(ErrorKind::BadNumber(number.to_string())));
    }
    let (unit, exponent) = match suffix {
        // Milli, micro, nano: whole bytes only, as every other value.
        "m" => (Unit::B, Some(-3)),
        "u" => (Unit::B, Some(-6)),
        "n" => (Unit::B, Some(-9)),
        _ => match Unit::from_quantity_suffix(suffix) {
            Some(unit) => (unit, None),
            None => match decimal_exponent(suffix) {
                Some(exponent) => (Unit::B, Some(exponent)),
                None if is_incomplete_exponent(suffix) => {
                    return Err(fail(ErrorKind::IncompleteExponent(suffix.to_string())));
                }
                None => return Err(fail(ErrorKind::UnknownSuffix(suffix.to_string()))),
            },
        },
    };
    let value = exact_bytes(whole, frac, exponent, unit).map_err(|kind| match kind {
        ErrorKind::Fractional if negative => ErrorKind::Negative,
        kind => kind,
    });
    match value {
        Ok(v) if negative && v != 0 => Err(fail(ErrorKind::Negative)),
        Ok(v) => Ok(v),
        Err(kind) => Err(fail(kind)),
    }
}

/// A decimal exponent as written after the number: `e` or `E`, an optional sign and digits.
/// An exponent too long for an `i64` is kept as `i64::MIN`/`i64::MAX`: either way it leaves a
/// fraction or does not fit, which `exact_bytes` answers without computing it.
fn decimal_exponent(text: &str) -> Option<i64> {
    let rest = text.strip_prefix(['e', 'E'])?;
    let (negative, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i64>().unwrap_or(i64::MAX);
    Some(if negative { -magnitude } else { magnitude })
}

/// `e` or `E` with at most a sign after it: the start of a decimal exponent without its digits.
fn is_incomplete_exponent(text: &str) -> bool {
    matches!(text, "e" | "e+" | "e-" | "E+" | "E-")
}

/// The exact value of `whole.frac × 10^exponent × unit`, without floating point and without
/// limiting how many digits the fraction has.
///
/// The digits become one integer `d` with a power of ten `10^e` (trailing zeros move into `e`).
/// Then `d × 10^e ≥ 10^(len(d) − 1 + e)` bounds the value from below, so anything with
/// `len(d) − 1 + e ≥ 20` does not fit in 64 bits (whether or not it is whole). Otherwise
/// `e ≤ 19`, and `d × 10^e × unit` is multiplied out in decimal digits, in time linear in the
/// input: the digits before the last `−e` are the whole bytes, which must fit in 64 bits, and
/// the last `−e` must be zeros. So a value of 2⁶⁴ bytes or more is `Overflow`, and a smaller
/// one that is not whole is `Fractional`.
fn exact_bytes(
    whole: &str,
    frac: &str,
    exponent: Option<i64>,
    unit: Unit,
) -> Result<u64, ErrorKind> {
    let mut digits: Vec<u8> = whole
        .bytes()
        .chain(frac.bytes())
        .map(|b| b - b'0')
        .collect();
    // i128: the exponent and the digit counts cannot overflow it.
    let mut e = i128::from(exponent.unwrap_or(0)) - frac.len() as i128;
    let leading = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading);
    if digits.is_empty() {
        return Ok(0);
    }
    while digits.last() == Some(&0) {
        digits.pop();
        e += 1;
    }
    if digits.len() as i128 - 1 + e >= 20 {
        return Err(ErrorKind::Overflow);
    }
    if e > 0 {
        digits.resize(digits.len() + e as usize, 0);
    }
    // digits × unit, in place, least significant digit last.
    let mut carry = 0u128;
    for d in digits.iter_mut().rev() {
        let v = u128::from(*d) * u128::from(unit.bytes()) + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
    // The whole bytes, then what is left after the decimal point.
    let cut = if e < 0 {
        usize::try_from(-e).map_or(0, |scale| digits.len().saturating_sub(scale))
    } else {
        digits.len()
    };
    let mut value = 0u64;
    for &d in &digits[..cut] {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(ErrorKind::Overflow)?;
    }
    if digits[cut..].iter().any(|&d| d != 0) {
        return Err(ErrorKind::Fractional);
    }
    Ok(value)
}

#[cfg(feature = "serde")]
mod serde_impls {
    use super::{ByteRate, ByteSize, ParseSizeError};
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
    use std::fmt;

    /// An integer (bytes) or a string with a unit, as a file holds it; anything else is
    /// refused naming the rule. (An untagged enum said only "data did not match any variant".)
    struct Visitor {
        what: &'static str,
        example: &'static str,
        parse: fn(&str) -> Result<u64, ParseSizeError>,
    }

    impl de::Visitor<'_> for Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a {} in bytes (an integer) or a string with a unit, such as {:?}",
                self.what, self.example
            )
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{} {v}: must not be negative", self.what)))
        }

        fn visit_u128<E: de::Error>(self, v: u128) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{} {v}: does not fit in 64 bits", self.what)))
        }

        fn visit_i128<E: de::Error>(self, v: i128) -> Result<u64, E> {
            if v < 0 {
                return Err(E::custom(format!(
                    "{} {v}: must not be negative",
                    self.what
                )));
            }
            self.visit_u128(v.unsigned_abs())
        }

        /// A floating-point number may already have been rounded by the file's parser
        /// (`12345678901234567891` and `1.00000000000000001` are not what they say), and sizes
        /// are exact: refused, with the way to write it.
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            let what = self.what;
            Err(E::custom(if v < 0.0 {
                format!("{what} {v}: must not be negative")
            } else if v >= 18_446_744_073_709_551_616.0 {
                format!("{what} {v}: does not fit in 64 bits")
            } else {
                format!(
                    "{what} {v}: a floating-point number is not read as a {what}, since it may have \
                     been rounded; write an integer of bytes or a string such as \"1.5e9\" or {:?}",
                    self.example
                )
            }))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }

    impl Serialize for ByteSize {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(self.0)
        }
    }

    impl<'de> Deserialize<'de> for ByteSize {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Visitor {
                what: "size",
                example: "10Gi",
                parse: |t| ByteSize::parse(t).map(|s| s.0),
            })
            .map(ByteSize)
        }
    }

    impl Serialize for ByteRate {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(self.0)
        }
    }

    impl<'de> Deserialize<'de> for ByteRate {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Visitor {
                what: "rate",
                example: "200 MB/s",
                parse: |t| ByteRate::parse(t).map(|r| r.0),
            })
            .map(ByteRate)
        }
    }
}

#[cfg(feature = "proptest")]
mod arbitrary {
    use super::{ByteRate, ByteSize};
    use proptest::prelude::*;

    impl Arbitrary for ByteSize {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            // Round sizes in every unit are where unit bugs live; plain u64s cover the rest.
            prop_oneof![
                any::<u64>().prop_map(ByteSize),
                (0u64..4096, 0usize..super::DISPLAY_ORDER.len()).prop_filter_map(
                    "fits in 64 bits",
                    |(n, u)| ByteSize::checked_from(n, super::DISPLAY_ORDER[u])
                ),
            ]
            .boxed()
        }
    }

    impl Arbitrary for ByteRate {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            any::<ByteSize>().prop_map(|s| ByteRate(s.0)).boxed()
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
