//! The unit rule, case by case, and the properties every crate relies on.

use proptest::prelude::*;
use storage_units::{ByteRate, ByteSize, ErrorKind, Unit};

#[test]
fn accepted_forms() {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("512", 512),
        ("512 B", 512),
        ("1_000", 1000),
        ("+7", 7),
        ("4k", 4_000),
        ("4K", 4_000),
        ("4 kB", 4_000),
        ("12TB", 12_000_000_000_000),
        ("12 tb", 12_000_000_000_000),
        ("500 G", 500_000_000_000),
        ("3M", 3_000_000),
        ("3 MB", 3_000_000),
        ("2P", 2_000_000_000_000_000),
        ("1E", 1_000_000_000_000_000_000),
        ("4 KiB", 4096),
        ("4Ki", 4096),
        ("4 kib", 4096),
        ("10Gi", 10 << 30),
        ("1.5 GiB", 1_610_612_736),
        ("30.5 GiB", 61 << 29),
        ("0.5 KiB", 512),
        ("1.000 MB", 1_000_000),
        (".5 KiB", 512),
        ("2 Ti", 2 << 40),
        ("1 Pi", 1 << 50),
        ("15 EiB", 15 << 60),
        ("  8 GiB  ", 8 << 30),
        ("18446744073709551615", u64::MAX),
    ];
    for &(text, bytes) in cases {
        assert_eq!(
            ByteSize::parse(text).map(|s| s.bytes()),
            Ok(bytes),
            "{text}"
        );
    }
}

#[test]
fn refused_forms_name_the_rule() {
    let cases: &[(&str, ErrorKind)] = &[
        ("", ErrorKind::NoNumber),
        ("GB", ErrorKind::NoNumber),
        ("-5 GB", ErrorKind::Negative),
        ("5 XB", ErrorKind::UnknownUnit("XB".into())),
        ("5 m", ErrorKind::Milli),
        ("0.1 KiB", ErrorKind::Fractional),
        ("1.5", ErrorKind::Fractional),
        ("1.2.3 GB", ErrorKind::BadNumber("1.2.3".into())),
        (".", ErrorKind::BadNumber(".".into())),
        ("16 EiB", ErrorKind::Overflow),
        ("99999999999 EB", ErrorKind::Overflow),
        ("18446744073709551616", ErrorKind::Overflow),
        ("5 GB 3", ErrorKind::UnknownUnit("GB 3".into())),
    ];
    for (text, kind) in cases {
        let err = ByteSize::parse(text).unwrap_err();
        assert_eq!(err.kind(), kind, "{text}");
        assert_eq!(err.input(), *text);
        assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
    }
}

#[test]
fn display_is_exact_and_prefers_binary() {
    assert_eq!(ByteSize::new(0).to_string(), "0 B");
    assert_eq!(ByteSize::new(1536).to_string(), "1536 B");
    assert_eq!(ByteSize::new(4096).to_string(), "4 KiB");
    assert_eq!(ByteSize::tb(12).to_string(), "12 TB");
    assert_eq!(ByteSize::gib(1024).to_string(), "1 TiB");
    assert_eq!(ByteSize::new(1000 * 1024).to_string(), "1000 KiB");
    assert_eq!(ByteSize::gb(4).quantity().to_string(), "4G");
    assert_eq!(ByteSize::new(7).quantity().to_string(), "7");
    assert_eq!(ByteRate::parse("200 MB/s").unwrap().to_string(), "200 MB/s");
    assert_eq!(
        ByteRate::parse("200 MB/s").unwrap().bytes_per_second(),
        200_000_000
    );
}

/// Network speeds are written in bits: `100 Gb/s` is a 100-gigabit port, 12.5 GB/s. The
/// case-insensitive units read it as 100 GB/s, eight times the link, and a bandwidth domain
/// declared so was silently overstated. A rate refuses a prefix with a lower-case `b`, naming
/// the byte unit to write; sizes keep their case-insensitive units.
#[test]
fn a_rate_in_bits_is_refused_not_read_as_bytes() {
    for (text, unit, bytes) in [
        ("100 Gb/s", "Gb", "GB"),
        ("100Gb/s", "Gb", "GB"),
        ("10 gb/s", "gb", "GB"),
        ("400 mb/s", "mb", "MB"),
        ("1 kb/s", "kb", "kB"),
        ("25 Gib/s", "Gib", "GiB"),
        ("25 Gb", "Gb", "GB"),
    ] {
        let e = ByteRate::parse(text).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Bits(unit.to_string()), "{text}");
        assert_eq!(
            e.to_string(),
            format!(
                "rate {text:?}: {unit:?} reads as bits per second in a rate; write {bytes} for bytes (a bit rate divided by 8)"
            )
        );
    }
    for (text, v) in [
        ("12.5 GB/s", 12_500_000_000u64),
        ("12.5 GB", 12_500_000_000),
        ("10 GiB/s", 10 << 30),
        ("1 gB/s", 1_000_000_000),
        ("512 B/s", 512),
        ("512/s", 512),
        ("512 b/s", 512),
    ] {
        assert_eq!(
            ByteRate::parse(text).unwrap().bytes_per_second(),
            v,
            "{text}"
        );
    }
    // Sizes are not rates: case-insensitive as documented.
    assert_eq!(
        ByteSize::parse("12 tb").unwrap().bytes(),
        12_000_000_000_000
    );
}

/// A 100,000-character size was quoted whole, twice (the input and the unknown unit), in
/// its one-line error; both are shortened to 64 characters and a length, and `input()` keeps
/// the text.
#[test]
fn a_long_bad_size_is_quoted_short() {
    let text = format!("1 {}", "x".repeat(100_000));
    let e = ByteSize::parse(&text).unwrap_err();
    assert_eq!(e.input(), text);
    assert_eq!(
        e.to_string(),
        format!(
            "size {:?}… (100002 bytes): unknown unit {:?}… (100000 bytes) (use B, kB, MB, GB, TB, PB, EB or KiB, MiB, GiB, TiB, PiB, EiB)",
            &text[..64],
            "x".repeat(64)
        )
    );
    let digits = "1.".repeat(50_000);
    let e = ByteSize::parse(&digits).unwrap_err().to_string();
    assert!(e.len() < 300, "{}", e.len());
    let e = ByteSize::parse_quantity(&text).unwrap_err().to_string();
    assert!(e.len() < 400, "{}", e.len());
    // Short text is quoted whole, as before.
    assert_eq!(
        ByteSize::parse("1 xb").unwrap_err().to_string(),
        "size \"1 xb\": unknown unit \"xb\" (use B, kB, MB, GB, TB, PB, EB or KiB, MiB, GiB, TiB, PiB, EiB)"
    );
}

#[test]
fn approx_has_three_significant_digits() {
    assert_eq!(ByteSize::new(512).approx().to_string(), "512 B");
    assert_eq!(ByteSize::kib(1).approx().to_string(), "1.00 KiB");
    assert_eq!(ByteSize::new(1536).approx().to_string(), "1.50 KiB");
    assert_eq!(ByteSize::tb(12).approx().to_string(), "10.9 TiB");
    assert_eq!(ByteSize::gib(999).approx().to_string(), "999 GiB");
    assert_eq!(ByteSize::new(u64::MAX).approx().to_string(), "16.0 EiB");
    // 1000–1023 of a unit were printed with four digits ("1024 KiB" for 1 MiB less a byte,
    // "1000 KiB"); they are shown in the next unit.
    assert_eq!(ByteSize::mib(1).approx().to_string(), "1.00 MiB");
    assert_eq!(
        ByteSize::new((1 << 20) - 1).approx().to_string(),
        "1.00 MiB"
    );
    assert_eq!(ByteSize::kib(1000).approx().to_string(), "0.977 MiB");
    assert_eq!(ByteSize::new(1_023_999).approx().to_string(), "0.977 MiB");
    assert_eq!(
        ByteSize::new(1_022_976 + 511).approx().to_string(),
        "999 KiB"
    );
    assert_eq!(ByteSize::gib(1023).approx().to_string(), "0.999 TiB");
    assert_eq!(
        ByteSize::new((1 << 60) - 1).approx().to_string(),
        "1.00 EiB"
    );
    assert_eq!(ByteSize::new(1023).approx().to_string(), "1023 B");
}

#[test]
fn arithmetic_never_wraps() {
    assert_eq!(ByteSize::MAX.checked_add(ByteSize::new(1)), None);
    assert_eq!(ByteSize::new(1).checked_sub(ByteSize::new(2)), None);
    assert_eq!(
        ByteSize::new(1).saturating_sub(ByteSize::new(2)),
        ByteSize::ZERO
    );
    assert_eq!(
        ByteSize::gib(1).align_up(ByteSize::gib(1)),
        Some(ByteSize::gib(1))
    );
    assert_eq!(
        ByteSize::new(1).align_up(ByteSize::gib(1)),
        Some(ByteSize::gib(1))
    );
    assert_eq!(ByteSize::MAX.align_up(ByteSize::gib(1)), None);
    assert_eq!(ByteSize::new(5).align_up(ByteSize::ZERO), None);
    assert_eq!(
        ByteSize::mib(1500).align_down(ByteSize::gib(1)),
        Some(ByteSize::gib(1))
    );
    assert!(ByteSize::ZERO.is_multiple_of(ByteSize::ZERO));
    assert!(!ByteSize::new(3).is_multiple_of(ByteSize::ZERO));
    assert_eq!(ByteSize::checked_from(16, Unit::EiB), None);
    assert!(ByteSize::try_from(-1i64).is_err());
    assert_eq!(ByteSize::try_from(5i64), Ok(ByteSize::new(5)));
}

#[test]
fn serde_reads_integers_and_units() {
    #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
    struct Drive {
        capacity: ByteSize,
        bandwidth: ByteRate,
    }
    let d: Drive = toml::from_str("capacity = \"8 TB\"\nbandwidth = \"1.5 GB/s\"").unwrap();
    assert_eq!(d.capacity, ByteSize::tb(8));
    assert_eq!(d.bandwidth.bytes_per_second(), 1_500_000_000);
    let d2: Drive = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(d, d2);
    let err = toml::from_str::<Drive>("capacity = -1\nbandwidth = 1").unwrap_err();
    assert!(err.to_string().contains("must not be negative"), "{err}");
    let err = toml::from_str::<Drive>("capacity = \"8 XB\"\nbandwidth = 1").unwrap_err();
    assert!(err.to_string().contains("unknown unit"), "{err}");
}

#[test]
fn approx_rounds_once() {
    // 10.645 EiB: rounding to hundredths first (10.65) and then to tenths would show 10.7.
    assert_eq!(
        ByteSize::new(12_272_849_416_539_886_060)
            .approx()
            .to_string(),
        "10.6 EiB"
    );
    assert_eq!(ByteSize::new(99_960).approx().to_string(), "97.6 KiB");
    assert_eq!(ByteSize::new(102_350).approx().to_string(), "100 KiB");
    assert_eq!(ByteSize::new(1536).approx().to_string(), "1.50 KiB");
}

proptest! {
    #[test]
    fn display_parses_back(size in any::<ByteSize>()) {
        prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        prop_assert_eq!(size.quantity().to_string().parse::<ByteSize>(), Ok(size));
    }

    #[test]
    fn rate_display_parses_back(rate in any::<ByteRate>()) {
        prop_assert_eq!(rate.to_string().parse::<ByteRate>(), Ok(rate));
    }

    #[test]
    fn approx_is_within_half_a_percent(size in any::<ByteSize>()) {
        let text = size.approx().to_string();
        let (number, unit) = text.split_once(' ').unwrap();
        let unit = ByteSize::parse(&format!("1 {unit}")).unwrap().bytes() as f64;
        let shown = number.parse::<f64>().unwrap() * unit;
        let actual = size.bytes() as f64;
        prop_assert!((shown - actual).abs() <= actual * 0.005 + 0.5, "{} for {}", text, actual);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,24}") {
        let _ = ByteSize::parse(&text);
        let _ = ByteRate::parse(&text);
    }

    /// `DIGITS.DIGITSeN` against a reference in `u128` arithmetic: the exact value when it is a
    /// whole number of bytes that fits, `Overflow` from 2^64 bytes up, `Fractional` otherwise.
    #[test]
    fn exponents_match_exact_arithmetic(
        whole in 0u64..1_000_000_000_000,
        frac in proptest::option::of("[0-9]{1,12}"),
        exponent in -30i32..30,
        upper in any::<bool>(),
    ) {
        let frac = frac.unwrap_or_default();
        let text = format!(
            "{whole}{}{frac}{}{exponent}",
            if frac.is_empty() { "" } else { "." },
            if upper { "E" } else { "e" },
        );
        let mantissa: u128 = format!("{whole}{frac}").parse().unwrap();
        let scale = i32::try_from(frac.len()).unwrap() - exponent;
        let expect = if mantissa == 0 {
            Ok(0)
        } else if scale <= 0 {
            10u128
                .checked_pow(scale.unsigned_abs())
                .and_then(|p| p.checked_mul(mantissa))
                .and_then(|v| u64::try_from(v).ok())
                .ok_or(ErrorKind::Overflow)
        } else {
            // 2^64 bytes or more is an overflow, whole or not; below that, a fraction is
            // refused. A power of ten beyond u128 exceeds the mantissa (below 10^24).
            match 10u128.checked_pow(scale.unsigned_abs()) {
                Some(p) if u64::try_from(mantissa / p).is_err() => Err(ErrorKind::Overflow),
                Some(p) if mantissa.is_multiple_of(p) => Ok((mantissa / p) as u64),
                _ => Err(ErrorKind::Fractional),
            }
        };
        let got = ByteSize::parse(&text).map(|s| s.bytes()).map_err(|e| e.kind().clone());
        prop_assert_eq!(got, expect, "{}", text);
    }

    #[test]
    fn fractions_are_exact(whole in 0u64..1_000_000, half in any::<bool>(), unit in 1usize..7) {
        let unit = [Unit::B, Unit::KiB, Unit::MiB, Unit::GiB, Unit::TiB, Unit::KB, Unit::MB][unit];
        let text = format!("{whole}{} {}", if half { ".5" } else { "" }, unit.symbol());
        let expect = whole * unit.bytes() + if half { unit.bytes() / 2 } else { 0 };
        prop_assert_eq!(ByteSize::parse(&text).map(|s| s.bytes()), Ok(expect));
    }
}

/// Kubernetes quantities may carry a decimal exponent (`<decimalExponent> ::= "e" <signedNumber>
/// | "E" <signedNumber>`, apimachinery `resource.Quantity`): `1e3` is 1000 bytes. It used to be
/// read as an unknown unit `"e3"`; it is exact like every other form, and an exponent that leaves
/// a fraction or does not fit says so.
#[test]
fn decimal_exponents_are_exact() {
    let accepted: &[(&str, u64)] = &[
        ("1e3", 1000),
        ("1E3", 1000),
        ("1e+3", 1000),
        ("+2e0", 2),
        ("1.5e3", 1500),
        (".5e1", 5),
        ("150e-1", 15),
        ("1e19", 10_000_000_000_000_000_000),
        ("18446744073709551615e0", u64::MAX),
        ("1844674407370955161.5e1", u64::MAX),
        ("0e99999999999999999999999", 0),
        ("0.000e-5", 0),
        // Trailing zeros of the digits cancel a negative exponent.
        ("1000000e-6", 1),
        // The `E` of exa without digits after it stays a unit.
        ("1E", 1_000_000_000_000_000_000),
        ("1 E", 1_000_000_000_000_000_000),
        // Multi-letter units stay case-insensitive.
        ("1eb", 1_000_000_000_000_000_000),
        // Fractions of many digits that still come out whole: 2^-39 EiB is 2 MiB.
        ("0.000000000001818989403545856475830078125 EiB", 2 << 20),
        ("0.000000000001818989403545856475830078125Ei", 2 << 20),
    ];
    for &(text, bytes) in accepted {
        assert_eq!(
            ByteSize::parse(text).map(|s| s.bytes()),
            Ok(bytes),
            "{text}"
        );
    }
    let refused: &[(&str, ErrorKind)] = &[
        ("1e-3", ErrorKind::Fractional),
        ("15e-1", ErrorKind::Fractional),
        ("1e-99999999999999999999999", ErrorKind::Fractional),
        ("1e20", ErrorKind::Overflow),
        ("2e19", ErrorKind::Overflow),
        ("1e99999999999999999999999", ErrorKind::Overflow),
        ("1e400", ErrorKind::Overflow),
        // 2^64 bytes or more is an overflow, whole or not.
        ("18446744073709551616.5", ErrorKind::Overflow),
        ("10000000000.00000000001e10", ErrorKind::Overflow),
        ("1844674407370955161.55e1", ErrorKind::Fractional),
        ("18446744073709551616e0", ErrorKind::Overflow),
        (
            "0.1000000000000000000000000000000000000001",
            ErrorKind::Fractional,
        ),
        ("1e3Ki", ErrorKind::UnknownUnit("e3Ki".into())),
        ("1e+", ErrorKind::IncompleteExponent("e+".into())),
        ("1E-", ErrorKind::IncompleteExponent("E-".into())),
        // Kubernetes reads a lone lower-case `e` as neither exa (only `E` is) nor an exponent
        // (which needs digits); it used to be read here as exa, 10^18 bytes.
        ("1e", ErrorKind::IncompleteExponent("e".into())),
        ("1 e", ErrorKind::IncompleteExponent("e".into())),
        ("1Ki1", ErrorKind::UnknownUnit("Ki1".into())),
    ];
    for (text, kind) in refused {
        let err = ByteSize::parse(text).unwrap_err();
        assert_eq!(err.kind(), kind, "{text}");
    }
}

/// Quantities as Kubernetes users write them, each against the `resource.Quantity` grammar
/// (`<signedNumber><suffix>`, case-sensitive suffixes, nothing else): what Kubernetes accepts
/// and is a whole number of bytes that fits 64 bits is read exactly; what it refuses, or what
/// is not whole bytes, or does not fit, is refused with the rule, never rounded.
#[test]
fn kubernetes_quantities_to_the_letter() {
    let accepted: &[(&str, u64)] = &[
        ("1Gi", 1 << 30),
        ("1G", 1_000_000_000),
        ("1.5Gi", 1_610_612_736),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1E+3", 1000),
        ("1000e-3", 1),
        ("1E", 1_000_000_000_000_000_000),
        ("1k", 1000),
        ("+1Gi", 1 << 30),
        ("-0", 0),
        ("-0.0Gi", 0),
        ("+0", 0),
        ("1.", 1),
        (".5Ki", 512),
        ("+.5Ki", 512),
        ("2000m", 2),
        ("3000000u", 3),
        ("15Ei", 15 << 60),
        ("18446744073709551615", u64::MAX),
        ("0.0000000000000000000000001e25", 1),
    ];
    for &(text, bytes) in accepted {
        assert_eq!(
            ByteSize::parse_quantity(text).map(|s| s.bytes()),
            Ok(bytes),
            "{text}"
        );
    }
    let refused: &[(&str, ErrorKind)] = &[
        // Not a whole number of bytes: never rounded.
        ("0.1", ErrorKind::Fractional),
        ("9.9999999999999999999Gi", ErrorKind::Fractional),
        ("500m", ErrorKind::Fractional),
        ("1e-3", ErrorKind::Fractional),
        // Does not fit 64 bits.
        ("16Ei", ErrorKind::Overflow),
        ("18446744073709551616", ErrorKind::Overflow),
        ("1e20", ErrorKind::Overflow),
        // Negative.
        ("-1", ErrorKind::Negative),
        ("-0.5", ErrorKind::Negative),
        // Not the grammar: suffixes are case-sensitive, no space, no B, no _.
        ("1gi", ErrorKind::UnknownSuffix("gi".into())),
        ("1K", ErrorKind::UnknownSuffix("K".into())),
        ("1GB", ErrorKind::UnknownSuffix("GB".into())),
        ("1GiB", ErrorKind::UnknownSuffix("GiB".into())),
        ("1 Gi", ErrorKind::UnknownSuffix(" Gi".into())),
        ("1Gi ", ErrorKind::UnknownSuffix("Gi ".into())),
        ("1_000", ErrorKind::UnknownSuffix("_000".into())),
        (" 1Gi", ErrorKind::NoNumber),
        ("", ErrorKind::NoNumber),
        ("Gi", ErrorKind::NoNumber),
        ("--1", ErrorKind::NoNumber),
        ("+-1", ErrorKind::NoNumber),
        (".", ErrorKind::BadNumber(".".into())),
        ("1.2.3", ErrorKind::BadNumber("1.2.3".into())),
        ("1e", ErrorKind::IncompleteExponent("e".into())),
        ("1E-", ErrorKind::IncompleteExponent("E-".into())),
        ("1e3Gi", ErrorKind::UnknownSuffix("e3Gi".into())),
        ("1e1.5", ErrorKind::UnknownSuffix("e1.5".into())),
    ];
    for (text, kind) in refused {
        let err = ByteSize::parse_quantity(text).unwrap_err();
        assert_eq!(err.kind(), kind, "{text}");
        assert_eq!(err.input(), *text);
        assert!(
            err.to_string().starts_with(&format!("quantity {text:?}: ")),
            "{err}"
        );
    }
}

/// Kubernetes reads `-0` as zero, which is a size; it used to be refused as negative.
#[test]
fn negative_zero_is_zero_and_other_negatives_are_refused() {
    for zero in ["-0", "-0.0", "-0 GiB", "-0e5", " -0 "] {
        assert_eq!(ByteSize::parse(zero), Ok(ByteSize::ZERO), "{zero}");
    }
    assert_eq!(ByteRate::parse("-0/s"), Ok(ByteRate::new(0)));
    for negative in ["-1", "-0.5 KiB", "-1e3", "--0", "-+0", "-0 XB", "-"] {
        let err = ByteSize::parse(negative).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Negative, "{negative}");
    }
}

proptest! {
    /// What `quantity()` prints, Kubernetes' strict grammar reads back to the same size.
    #[test]
    fn quantity_display_parses_back_strictly(size in any::<ByteSize>()) {
        prop_assert_eq!(ByteSize::parse_quantity(&size.quantity().to_string()), Ok(size));
    }

    /// The two parsers never disagree on a value: what the strict one reads (milli, micro and
    /// nano aside, which people do not mean for sizes), the liberal one reads the same.
    #[test]
    fn the_liberal_parser_agrees_with_the_strict_one(
        sign in "[+-]?",
        whole in "[0-9]{0,21}",
        frac in proptest::option::of("[0-9]{0,21}"),
        suffix in "(|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]{1,2})",
    ) {
        let text = match &frac {
            Some(f) => format!("{sign}{whole}.{f}{suffix}"),
            None => format!("{sign}{whole}{suffix}"),
        };
        if let Ok(strict) = ByteSize::parse_quantity(&text) {
            prop_assert_eq!(ByteSize::parse(&text), Ok(strict), "{}", text);
        }
    }

    #[test]
    fn parse_quantity_never_panics(text in "\\PC{0,24}") {
        let _ = ByteSize::parse_quantity(&text);
    }
}

/// What a file holds besides integers and strings is refused naming the rule (an untagged
/// enum used to say only "data did not match any variant of untagged enum Raw"), and a
/// floating-point number, which the file's parser may have rounded, is never taken.
#[test]
fn serde_names_the_rule_for_every_other_value() {
    #[derive(serde::Deserialize, Debug)]
    struct Drive {
        #[allow(dead_code)]
        capacity: ByteSize,
    }
    let json = |t: &str| serde_json::from_str::<Drive>(t).unwrap_err().to_string();
    let toml = |t: &str| toml::from_str::<Drive>(t).unwrap_err().to_string();
    let float = "a floating-point number is not read as a size, since it may have been \
                 rounded; write an integer of bytes or a string such as \"1.5e9\" or \"10Gi\"";
    assert!(json(r#"{"capacity": 1.5e9}"#).contains(&format!("size 1500000000: {float}")));
    assert!(json(r#"{"capacity": 1e3}"#).contains(float));
    assert!(toml("capacity = 1.5").contains(&format!("size 1.5: {float}")));
    assert!(json(r#"{"capacity": -0.5}"#).contains("size -0.5: must not be negative"));
    let e = json(r#"{"capacity": 18446744073709551616}"#);
    assert!(e.contains("does not fit in 64 bits"), "{e}");
    let expected =
        "expected a size in bytes (an integer) or a string with a unit, such as \"10Gi\"";
    for bad in [
        r#"{"capacity": null}"#,
        r#"{"capacity": true}"#,
        r#"{"capacity": [1]}"#,
    ] {
        assert!(json(bad).contains(expected), "{bad}: {}", json(bad));
    }
    assert!(toml("capacity = true").contains(expected));
    // Integers and strings as before; -0 is zero.
    let ok = |t: &str| serde_json::from_str::<Drive>(t).map(|d| format!("{d:?}"));
    assert_eq!(
        ok(r#"{"capacity": 18446744073709551615}"#).unwrap(),
        "Drive { capacity: ByteSize(18446744073709551615) }"
    );
    // (JSON's `-0` is a floating-point number to serde_json; TOML's is an integer.)
    let zero = toml::from_str::<Drive>("capacity = -0").map(|d| format!("{d:?}"));
    assert_eq!(zero.unwrap(), "Drive { capacity: ByteSize(0) }");
    assert_eq!(
        ok(r#"{"capacity": "-0"}"#).unwrap(),
        "Drive { capacity: ByteSize(0) }"
    );
    let e = serde_json::from_str::<ByteRate>("2.5")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("rate 2.5: a floating-point number is not read as a rate"),
        "{e}"
    );
}

/// The one shortening of quoted input for the SDK's messages (four crates had their own, cutting
/// at 40, 64 or 80 characters, two of them leaving a newline in the input to break the line).
#[test]
fn quote_keeps_messages_one_short_line() {
    use storage_units::{SHOWN_CHARS, quote, shorten};
    let exact = "é".repeat(SHOWN_CHARS);
    assert_eq!(quote(&exact), format!("\"{exact}\""));
    assert_eq!(shorten(&exact, SHOWN_CHARS), exact);
    // One character more: cut between characters, never inside one, and the length in bytes.
    let over = format!("{exact}ü");
    assert_eq!(quote(&over), format!("\"{exact}\"… (130 bytes)"));
    assert_eq!(shorten(&over, SHOWN_CHARS), format!("{exact}… (130 bytes)"));
    assert_eq!(shorten(&over, 65), over);
    // Control characters are escaped, so a quoted value never spans two lines.
    assert_eq!(quote("a\nb\r\"c\""), r#""a\nb\r\"c\"""#);
    assert_eq!(quote(""), "\"\"");
    for text in ["x".repeat(100_000), "\n".repeat(100_000)] {
        let q = quote(&text);
        assert!(q.len() < 200 && !q.contains('\n'), "{q}");
    }
}

/// Another library's message that quotes a value whole (clap: `invalid value '…' for`) gets
/// the value quoted short; short printable values keep the library's quotes.
#[test]
fn requote_shortens_only_long_or_unprintable_values() {
    use storage_units::{quote, requote};
    let long = "y".repeat(1000);
    let m = format!("unexpected argument '{long}' found");
    assert_eq!(
        requote(&m, &long),
        format!("unexpected argument {} found", quote(&long))
    );
    assert_eq!(
        requote("invalid value 'a\nb' for '--x'", "a\nb"),
        r#"invalid value "a\nb" for '--x'"#
    );
    // Not quoted by the library: the bare value is replaced.
    assert_eq!(
        requote(&format!("no {long} here"), &long),
        format!("no {} here", quote(&long))
    );
    assert_eq!(requote("invalid value 'abc'", "abc"), "invalid value 'abc'");
}
