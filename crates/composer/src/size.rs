//! Byte sizes in files and parameters, until the workspace's shared size type
//! is available: integers are bytes; strings take explicit SI (`k`/`K`, `M`,
//! `G`, `T`, `P`, `E` = 1000^n) or IEC (`Ki` … `Ei` = 1024^n) suffixes with an
//! optional `B`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
///
/// # Invariants
/// Any `u64`; parsing rejects negative, fractional-byte and overflowing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim().replace('_', "");
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "{text:?} is not a size (expected e.g. \"16 TB\" or \"512 GiB\")"
            ));
        }
        let unit = unit.trim();
        let mult: u128 = match unit.trim_end_matches('B') {
            "" => 1,
            "k" | "K" => 1000,
            "M" => 1000u128.pow(2),
            "G" => 1000u128.pow(3),
            "T" => 1000u128.pow(4),
            "P" => 1000u128.pow(5),
            "E" => 1000u128.pow(6),
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "Pi" => 1 << 50,
            "Ei" => 1 << 60,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (SI: kB MB GB TB PB EB; IEC: KiB MiB GiB TiB PiB EiB)"
                ));
            }
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = int
            .parse::<u128>()
            .map_err(|_| format!("{text:?} is not a size"))?;
        let mut value = int
            .checked_mul(mult)
            .ok_or_else(|| format!("{text:?} does not fit in 64 bits"))?;
        if !frac.is_empty() {
            let digits: u128 = frac
                .parse()
                .map_err(|_| format!("{text:?} is not a size"))?;
            let scale = 10u128.pow(frac.len() as u32);
            let part = digits * mult;
            if part % scale != 0 {
                return Err(format!("{text:?} is not a whole number of bytes"));
            }
            value += part / scale;
        }
        u64::try_from(value)
            .map(ByteSize)
            .map_err(|_| format!("{text:?} does not fit in 64 bits"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest SI unit that divides the value exactly, else the largest
    /// IEC unit that does, else bytes: `16 TB`, `512 GiB`, `1234 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v == 0 {
            return f.write_str("0 B");
        }
        for (m, u) in [
            (1000u64.pow(6), "EB"),
            (1000u64.pow(5), "PB"),
            (1000u64.pow(4), "TB"),
            (1000u64.pow(3), "GB"),
            (1000u64.pow(2), "MB"),
        ] {
            if v % m == 0 {
                return write!(f, "{} {u}", v / m);
            }
        }
        for (s, u) in [
            (60, "EiB"),
            (50, "PiB"),
            (40, "TiB"),
            (30, "GiB"),
            (20, "MiB"),
            (10, "KiB"),
        ] {
            if v % (1u64 << s) == 0 {
                return write!(f, "{} {u}", v >> s);
            }
        }
        if v % 1000 == 0 {
            return write!(f, "{} kB", v / 1000);
        }
        write!(f, "{v} B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => u64::try_from(i).map(ByteSize).map_err(|_| {
                serde::de::Error::custom(format!("size must not be negative (got {i})"))
            }),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_unit_systems() {
        assert_eq!("16 TB".parse::<ByteSize>().unwrap().0, 16_000_000_000_000);
        assert_eq!("512GiB".parse::<ByteSize>().unwrap().0, 512 << 30);
        assert_eq!("3.84 TB".parse::<ByteSize>().unwrap().0, 3_840_000_000_000);
        assert_eq!("1000".parse::<ByteSize>().unwrap().0, 1000);
        assert!("-1 GB".parse::<ByteSize>().is_err());
        assert!(
            "5 XB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!("0.5 B".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(16_000_000_000_000).to_string(), "16 TB");
        assert_eq!(ByteSize(512 << 30).to_string(), "512 GiB");
        for v in [0, 1, 999, 4096, 3_840_000_000_000, 1 << 40, u64::MAX] {
            let s = ByteSize(v).to_string();
            assert_eq!(s.parse::<ByteSize>().unwrap().0, v, "{s}");
        }
    }
}
