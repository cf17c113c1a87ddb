//! Division by a run-time constant through a precomputed reciprocal.
//!
//! Mapping a sector divides by the chunk size, the member count and the
//! data-member count; a hardware 64-bit division costs tens of cycles, which
//! alone would cap mapping below the 100 M sectors/s target. With
//! c = ⌈2^128 / d⌉, ⌊n·c / 2^128⌋ = ⌊n / d⌋ for every 64-bit n
//! (Lemire, Kaser, Kurz, "Faster remainder by direct computation", 2019,
//! with F = 128 ≥ 64 + log2 d), which costs two multiplications.

/// A divisor with its reciprocal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Divisor {
    d: u64,
    /// For powers of two: the shift; otherwise unused.
    shift: u32,
    pow2: bool,
    c_hi: u64,
    c_lo: u64,
}

impl Divisor {
    /// `d` must be positive (callers validate it first).
    pub(crate) fn new(d: u64) -> Self {
        let d = d.max(1);
        if d.is_power_of_two() {
            return Divisor {
                d,
                shift: d.trailing_zeros(),
                pow2: true,
                c_hi: 0,
                c_lo: 0,
            };
        }
        // d is not a power of two, so ⌈2^128/d⌉ = ⌊(2^128−1)/d⌋ + 1.
        let c = u128::MAX / u128::from(d) + 1;
        Divisor {
            d,
            shift: 0,
            pow2: false,
            c_hi: (c >> 64) as u64,
            c_lo: c as u64,
        }
    }

    /// ⌊n / d⌋.
    #[inline(always)]
    pub(crate) fn div(self, n: u64) -> u64 {
        if self.pow2 {
            return n >> self.shift;
        }
        let n = u128::from(n);
        let t = (n * u128::from(self.c_lo)) >> 64;
        ((n * u128::from(self.c_hi) + t) >> 64) as u64
    }

    /// (⌊n / d⌋, n mod d).
    #[inline(always)]
    pub(crate) fn div_rem(self, n: u64) -> (u64, u64) {
        let q = self.div(n);
        (q, n - q * self.d)
    }

    /// n mod d.
    #[inline(always)]
    pub(crate) fn rem(self, n: u64) -> u64 {
        self.div_rem(n).1
    }
}

#[cfg(test)]
mod tests {
    use super::Divisor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_hardware_division(n in any::<u64>(), d in 1u64..u64::MAX) {
            let v = Divisor::new(d);
            prop_assert_eq!(v.div_rem(n), (n / d, n % d));
        }

        #[test]
        fn small_divisors_and_edges(d in 1u64..5000, k in 0u64..4) {
            let v = Divisor::new(d);
            for n in [0, 1, d - 1, d, d + 1, u64::MAX - k, u64::MAX / d * d, (u64::MAX / d) * d - 1] {
                prop_assert_eq!(v.div_rem(n), (n / d, n % d), "n {}", n);
            }
        }
    }
}
