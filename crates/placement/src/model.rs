//! Identifier and unit newtypes, drive kinds, transports and health: the vocabulary shared by the
//! inventory, the requests and the engine.

use std::fmt;
use std::str::FromStr;

use bitflags::bitflags;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use storage_units::quote;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier {}: {reason}", quote(.value))]
pub struct IdError {
    /// The rejected text.
    pub value: String,
    /// The rule it broke.
    pub reason: &'static str,
}

fn check_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 bytes");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// # Invariants
        /// Non-empty, at most 253 bytes, no whitespace or control characters.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                match check_id(&s) {
                    Ok(()) => Ok(Self(s)),
                    Err(reason) => Err(IdError { value: s, reason }),
                }
            }
            /// The identifier text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "proptest")]
        impl proptest::arbitrary::Arbitrary for $name {
            type Parameters = ();
            type Strategy = proptest::strategy::BoxedStrategy<Self>;
            fn arbitrary_with(_: ()) -> Self::Strategy {
                use proptest::strategy::Strategy;
                "[a-z][a-z0-9_.-]{0,15}".prop_map(|s| Self(s)).boxed()
            }
        }
    };
}

id_type!(
    /// Identifier of a drive.
    DriveId
);
id_type!(
    /// Identifier of a failure domain (zone, row, rack, JBOD, server, ...).
    DomainId
);
id_type!(
    /// Identifier of a bandwidth domain (switch, uplink, enclosure port, ...).
    BwDomainId
);
id_type!(
    /// Identifier of a server (a compute node volumes attach to).
    ServerId
);
id_type!(
    /// Identifier of a storage group.
    GroupId
);
id_type!(
    /// Identifier of a placed volume.
    VolumeId
);

/// A non-negative quantity of bytes (or bytes per second for bandwidth).
///
/// Deserializes from a non-negative integer or from a string with a unit: `"512"`, `"4 KiB"`,
/// `"12TB"`, `"1.5 GiB"`, `"200 MB/s"` (decimal `k M G T P E` = powers of 1000 and binary
/// `Ki Mi Gi Ti Pi Ei` = powers of 1024, with optional `B` and `/s`, parsed by
/// `storage_units`; a fraction must come out as whole bytes). Serializes as a plain integer.
///
/// # Invariants
/// Any `u64`; the value is exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// The raw number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parses a size or a rate through the SDK's one size type ([`storage_units::ByteSize`]: SI
/// units are powers of 1000, IEC units powers of 1024, exact, no floating point); a trailing
/// `/s` reads a rate ([`storage_units::ByteRate`]). For files written for the first version of
/// this format, a lone lower-case `m` still means mega (there is no milli-byte).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (body, rate) = match t.strip_suffix("/s") {
        Some(b) => (b.trim_end(), true),
        None => (t, false),
    };
    let mega;
    let body = match body.strip_suffix('m') {
        Some(n)
            if n.trim_end()
                .ends_with(|c: char| c.is_ascii_digit() || c == '.') =>
        {
            mega = format!("{n}M");
            mega.as_str()
        }
        _ => body,
    };
    let parsed = if rate {
        storage_units::ByteRate::parse(body).map(|r| r.bytes_per_second())
    } else {
        storage_units::ByteSize::parse(body).map(|b| b.bytes())
    };
    parsed.map_err(|e| e.to_string())
}

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(Bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A size exactly as written in a file, kept raw so that validation can name the entry that holds
/// a negative or malformed value.
#[derive(Debug, Clone)]
pub(crate) enum RawSize {
    Int(i64),
    Unsigned(u64),
    Text(String),
}

/// By hand rather than `#[serde(untagged)]`: a value of the wrong type (`1.5`, `true`) must be
/// answered with the rule ("expected a size: ...") rather than "data did not match any variant
/// of untagged enum RawSize".
impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a size: an integer number of bytes or a string with a unit (\"500 GB\", \"10Gi\")",
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Unsigned(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl RawSize {
    pub(crate) fn resolve(&self) -> Result<u64, String> {
        match self {
            RawSize::Int(i) if *i < 0 => Err(format!("must not be negative (got {i})")),
            RawSize::Int(i) => Ok(*i as u64),
            RawSize::Unsigned(u) => Ok(*u),
            RawSize::Text(t) => parse_size(t),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawSize::deserialize(d)?;
        raw.resolve().map(Bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "proptest")]
impl proptest::arbitrary::Arbitrary for Bytes {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        proptest::num::u64::ANY.prop_map(Bytes).boxed()
    }
}

/// A name that is none of a type's names, as in `kind = "tape"`: the message quotes it and
/// lists the names accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {}, expected one of {} (any case)", quote(.value), .expected.join(", "))]
pub struct UnknownName {
    /// What was read (`drive kind`, `health`, `mode`).
    pub what: &'static str,
    /// The rejected text.
    pub value: String,
    /// The names accepted, as written.
    pub expected: Vec<&'static str>,
}

/// The value named `text` among `names`: names are matched in any ASCII case with surrounding
/// blanks trimmed, as the composer reads its inventory values.
///
/// ```
/// use placement::{DriveKind, by_name};
///
/// assert_eq!(by_name("drive kind", &DriveKind::NAMES, " NVMe "), Ok(DriveKind::Nvme));
/// let e = by_name("drive kind", &DriveKind::NAMES, "tape").unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "unknown drive kind \"tape\", expected one of hdd, ssd, nvme (any case)"
/// );
/// ```
pub fn by_name<T: Copy>(
    what: &'static str,
    names: &[(&'static str, T)],
    text: &str,
) -> Result<T, UnknownName> {
    let key = text.trim();
    names
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map(|&(_, v)| v)
        .ok_or_else(|| UnknownName {
            what,
            value: text.to_string(),
            expected: names.iter().map(|&(name, _)| name).collect(),
        })
}

/// For an enum named in files and on command lines: `NAMES`, `name()`, a canonical `Display`
/// (the lower-case name, as serde writes it) and `FromStr`/`Deserialize` that read the name in
/// any ASCII case through [`by_name`].
macro_rules! named_enum {
    ($ty:ident, $what:literal, [$(($name:literal, $variant:ident)),+ $(,)?]) => {
        impl $ty {
            /// Every value with its name as written (and read, in any ASCII case).
            pub const NAMES: [(&'static str, $ty); [$($name),+].len()] =
                [$(($name, $ty::$variant)),+];

            /// The name as written in files and messages.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::model::UnknownName;
            fn from_str(s: &str) -> Result<Self, $crate::model::UnknownName> {
                $crate::model::by_name($what, &Self::NAMES, s)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let got = <String as ::serde::Deserialize>::deserialize(d)?;
                got.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use named_enum;

/// The medium of a drive.
///
/// Written in lowercase; read in any ASCII case with surrounding blanks trimmed:
/// `kind = "NVMe"` is [`DriveKind::Nvme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriveKind {
    /// Spinning disk.
    Hdd,
    /// SATA/SAS solid-state drive.
    Ssd,
    /// NVMe solid-state drive.
    Nvme,
}

named_enum!(
    DriveKind,
    "drive kind",
    [("hdd", Hdd), ("ssd", Ssd), ("nvme", Nvme)]
);

/// Operational state of a drive. Only [`Health::Healthy`] drives receive new members.
///
/// Written in lowercase; read in any ASCII case with surrounding blanks trimmed (as the
/// composer reads its inventory values): `health = " Draining "` is [`Health::Draining`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// In service.
    #[default]
    Healthy,
    /// Serving but suspect (e.g. reallocated sectors): keeps its members, takes no new ones.
    Degraded,
    /// Being emptied on purpose: keeps serving reads, takes no new members.
    Draining,
    /// Gone: its members must be rebuilt elsewhere.
    Failed,
}

named_enum!(
    Health,
    "health",
    [
        ("healthy", Healthy),
        ("degraded", Degraded),
        ("draining", Draining),
        ("failed", Failed),
    ]
);

bitflags! {
    /// Storage transports over which a drive can be exported.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Transports: u8 {
        /// iSCSI.
        const ISCSI = 1;
        /// NVMe over TCP.
        const NVME_TCP = 2;
        /// NVMe over RDMA (RoCE).
        const ROCE = 4;
        /// NBD served from user space: the slowest, chosen last.
        const NBD = 8;
    }
}

impl Transports {
    /// Single transports from the fastest to the slowest: RoCE, NVMe/TCP, iSCSI, user-space NBD.
    pub const FASTEST_FIRST: [Transports; 4] = [
        Transports::ROCE,
        Transports::NVME_TCP,
        Transports::ISCSI,
        Transports::NBD,
    ];

    /// The fastest single transport in the set (see [`Transports::FASTEST_FIRST`]), if any.
    pub fn fastest(self) -> Option<Transports> {
        Self::FASTEST_FIRST.into_iter().find(|&t| self.contains(t))
    }

    /// The file-format name of a single transport flag (`"roce"`, `"nvme-tcp"`, `"iscsi"`,
    /// `"nbd"`); `"none"` for the empty set and `"several"` for more than one.
    pub fn name(self) -> &'static str {
        match self {
            t if t == Transports::ISCSI => "iscsi",
            t if t == Transports::NVME_TCP => "nvme-tcp",
            t if t == Transports::ROCE => "roce",
            t if t == Transports::NBD => "nbd",
            t if t.is_empty() => "none",
            _ => "several",
        }
    }

    fn name_of(flag: Transports) -> &'static str {
        flag.name()
    }

    /// Parses one transport name (`iscsi`, `nvme-tcp`, `roce`, `nbd`; case-insensitive).
    pub fn parse_one(s: &str) -> Result<Transports, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "iscsi" => Ok(Transports::ISCSI),
            "nvme-tcp" | "nvmetcp" | "tcp" => Ok(Transports::NVME_TCP),
            "roce" | "nvme-roce" | "rdma" | "nvme-rdma" => Ok(Transports::ROCE),
            "nbd" => Ok(Transports::NBD),
            _ => Err(format!(
                "unknown transport {} (expected iscsi, nvme-tcp, roce or nbd)",
                quote(s)
            )),
        }
    }
}

impl Serialize for Transports {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.iter().count()))?;
        for f in self.iter() {
            seq.serialize_element(Transports::name_of(f))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Transports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut t = Transports::empty();
        for n in names {
            t |= Transports::parse_one(&n).map_err(serde::de::Error::custom)?;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4 KiB").unwrap(), 4096);
        assert_eq!(parse_size("12TB").unwrap(), 12_000_000_000_000);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("200 MB/s").unwrap(), 200_000_000);
        assert_eq!(parse_size("1_000").unwrap(), 1000);
        assert_eq!(parse_size("3.84TB").unwrap(), 3_840_000_000_000);
        assert_eq!(parse_size("25 GB/s").unwrap(), 25_000_000_000);
        assert_eq!(parse_size("512 GiB").unwrap(), 512 << 30);
        assert_eq!(parse_size("200m").unwrap(), 200_000_000);
        assert_eq!(parse_size("4k").unwrap(), 4000);
        assert!(parse_size("-5 GB").is_err());
        assert!(parse_size("5 XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("GB").is_err());
        assert!(parse_size("99999999999 EB").is_err());
        // Whole bytes only: 0.1 KiB is 102.4 bytes.
        assert!(parse_size("0.1 KiB").is_err());
    }

    #[test]
    fn ids_reject_bad_text() {
        assert!(DriveId::new("d-1").is_ok());
        assert_eq!(DriveId::new("").unwrap_err().reason, "must not be empty");
        assert!(DomainId::new("rack 1").is_err());
    }

    #[test]
    fn transports_round_trip() {
        let t: Transports = serde_json::from_str(r#"["iscsi","NVMe-TCP"]"#).unwrap();
        assert_eq!(t, Transports::ISCSI | Transports::NVME_TCP);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"["iscsi","nvme-tcp"]"#
        );
        assert!(serde_json::from_str::<Transports>(r#"["fc"]"#).is_err());
    }
}
