//! Numbers as the text report, progress lines and error messages show them.
//!
//! A run of 0.001 years has a few hundredths of a volume-year and confidence bounds in the
//! tens of thousands; fixed decimals printed those as `0` and `13100.0423`. [`human`] gives
//! every figure about three significant digits instead, and [`exact`] echoes a value the user
//! gave without rounding it and without 300 digits for `1e308`. The JSON report keeps full
//! precision: only text goes through here.

/// `x` with three significant digits for a reader: `0.28`, `31.9`, `0.000123`; whole numbers
/// with thousands separators from 100 up (`13,100`, `57,313`); scientific notation for
/// magnitudes below 0.0001 or from 10^15 (`1.23e-7`, `4.5e18`); `0`, `inf`, `-inf`, `NaN`.
///
/// ```
/// use fleet_sim::num::human;
///
/// assert_eq!(human(13100.0423), "13,100");
/// assert_eq!(human(0.28), "0.28");
/// assert_eq!(human(31.8957551), "31.9");
/// assert_eq!(human(1.5e-9), "1.5e-9");
/// assert_eq!(human(0.0), "0");
/// ```
pub fn human(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-4..1e15).contains(&a) {
        return trim_exp(&format!("{x:.2e}"));
    }
    if a >= 99.95 {
        return group(x.round());
    }
    // Digits before the point decide how many go after it (three in all).
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    trim_fraction(&format!("{x:.decimals$}"))
}

/// `x` exactly as `f64` prints it, switching to scientific notation when that is more than 16
/// characters (`1e308`, not 309 digits), so an error message names the value that was given.
///
/// ```
/// use fleet_sim::num::exact;
///
/// assert_eq!(exact(0.000001), "0.000001");
/// assert_eq!(exact(1e308), "1e308");
/// assert_eq!(exact(5.0), "5");
/// ```
pub fn exact(x: f64) -> String {
    let s = x.to_string();
    if s.len() > 16 { format!("{x:e}") } else { s }
}

/// A count with a comma every three digits (`7,263`, `127,557`), as [`human`] writes whole
/// numbers, so that one report does not mix `89,351` and `127557`.
///
/// ```
/// assert_eq!(fleet_sim::num::count(127_557), "127,557");
/// assert_eq!(fleet_sim::num::count(999), "999");
/// ```
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut o = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// A whole number below 10^15 (exact in an `f64`) with a comma every three digits.
fn group(x: f64) -> String {
    let sign = if x < 0.0 { "-" } else { "" };
    format!("{sign}{}", count(x.abs() as u64))
}

/// `1.50` → `1.5`, `2.00` → `2` (the digits shown are significant; their zeros are noise).
fn trim_fraction(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// `1.50e-9` → `1.5e-9`.
fn trim_exp(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", trim_fraction(m)),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits_at_every_magnitude() {
        for (x, want) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (0.28, "0.28"),
            (0.2804, "0.28"),
            (9.996, "10"),
            (99.94, "99.9"),
            (99.96, "100"),
            (123.4, "123"),
            (999.6, "1,000"),
            (1234.5, "1,235"),
            (13100.0423, "13,100"),
            (-57312.6849, "-57,313"),
            (1_000_000.0, "1,000,000"),
            (0.0001, "0.0001"),
            (0.00012345, "0.000123"),
            (0.00009999, "1e-4"),
            (1.5e-9, "1.5e-9"),
            (1e15, "1e15"),
            (4.56789e18, "4.57e18"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(human(x), want, "{x}");
        }
    }

    #[test]
    fn exact_keeps_the_value_and_bounds_the_length() {
        for (x, want) in [
            (0.0, "0"),
            (0.5, "0.5"),
            (1001.0, "1001"),
            (0.000000001, "0.000000001"),
            (1e308, "1e308"),
            (-1e300, "-1e300"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(exact(x), want, "{x}");
        }
    }
}
