//! x86-64 SIMD kernels for parity: SSSE3, AVX2 and AVX-512BW.
//!
//! This is the crate's only module with `unsafe` code. The workspace forbids
//! `unsafe`; the crate lowers that to `deny` and this module allows it,
//! because `std::arch` intrinsics and `#[target_feature]` functions are
//! `unsafe` to call and a measured hot path (P+Q generation, several times
//! faster than the portable SWAR code) needs them. Every kernel here has a
//! portable twin in `parity::reference`, and the tests compare the two on
//! random inputs for every backend the CPU supports.
//!
//! Soundness rests on two checks made by the safe wrappers before any
//! `unsafe` call: the CPU feature was detected at run time
//! ([`available`]), and every buffer is at least as long as the length the
//! kernel processes (`assert!`ed, so a violation panics instead of reading
//! out of bounds; the public API validates lengths first, so it never does).
#![allow(unsafe_code)]

use super::Backend;
use super::reference;

/// Whether the CPU supports `backend` (always false off x86-64).
pub(crate) fn available(backend: Backend) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match backend {
            Backend::Ssse3 => std::arch::is_x86_feature_detected!("ssse3"),
            Backend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            Backend::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            Backend::Reference | Backend::Portable => true,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        matches!(backend, Backend::Reference | Backend::Portable)
    }
}

fn check_slots(slots: &[Option<&[u8]>], len: usize) {
    for s in slots.iter().flatten() {
        assert!(s.len() >= len, "parity kernel: block shorter than output");
    }
}

/// P (and Q) of `slots`; `None` slots are zero blocks.
pub(crate) fn gen_pq(
    backend: Backend,
    slots: &[Option<&[u8]>],
    p: &mut [u8],
    q: Option<&mut [u8]>,
) {
    let len = p.len();
    check_slots(slots, len);
    if let Some(q) = q.as_deref() {
        assert!(q.len() >= len, "parity kernel: Q shorter than P");
    }
    if !available(backend) {
        return super::portable::gen_pq(slots, p, q);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut q = q;
        let body = match backend {
            // SAFETY: `available` confirmed the CPU feature each function is
            // compiled for; all slices hold at least `len` bytes (checked
            // above) and the kernels touch only offsets below `len`.
            Backend::Avx512 => unsafe { x86::gen_pq_avx512(slots, p, q.as_deref_mut(), len) },
            // SAFETY: as above, for AVX2.
            Backend::Avx2 => unsafe { x86::gen_pq_avx2(slots, p, q.as_deref_mut(), len) },
            // SAFETY: as above, for SSSE3.
            Backend::Ssse3 => unsafe { x86::gen_pq_ssse3(slots, p, q.as_deref_mut(), len) },
            Backend::Reference | Backend::Portable => 0,
        };
        if body < len {
            let tail: Vec<Option<&[u8]>> = slots.iter().map(|s| s.map(|d| &d[body..len])).collect();
            reference::gen_pq(&tail, &mut p[body..], q.map(|q| &mut q[body..len]));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    super::portable::gen_pq(slots, p, q)
}

/// `dst = c · (a ⊕ dst)`.
pub(crate) fn mul_xor(backend: Backend, c: u8, a: &[u8], dst: &mut [u8]) {
    let len = dst.len();
    assert!(a.len() >= len, "mul_xor: short input");
    if !available(backend) {
        return reference::mul_xor(c, a, dst);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (lo, hi) = nibble_tables(c);
        let body = match backend {
            // SAFETY: feature detected by `available`; `a` and `dst` hold at
            // least `len` bytes and the kernel stays below `len`.
            Backend::Avx512 => unsafe { x86::mul_xor_avx512(&lo, &hi, a, dst, len) },
            // SAFETY: as above, for AVX2.
            Backend::Avx2 => unsafe { x86::mul_xor_avx2(&lo, &hi, a, dst, len) },
            // SAFETY: as above, for SSSE3.
            Backend::Ssse3 => unsafe { x86::mul_xor_ssse3(&lo, &hi, a, dst, len) },
            Backend::Reference | Backend::Portable => 0,
        };
        reference::mul_xor(c, &a[body..len], &mut dst[body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    reference::mul_xor(c, a, dst)
}

/// `dst ⊕= c · (a ⊕ b)`.
pub(crate) fn delta(backend: Backend, c: u8, a: &[u8], b: &[u8], dst: &mut [u8]) {
    let len = dst.len();
    assert!(a.len() >= len && b.len() >= len, "delta: short input");
    if !available(backend) {
        return super::portable::delta(c, a, b, dst);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (lo, hi) = nibble_tables(c);
        let body = match backend {
            // SAFETY: feature detected by `available`; `a`, `b` and `dst`
            // hold at least `len` bytes and the kernel stays below `len`.
            Backend::Avx512 => unsafe { x86::delta_avx512(&lo, &hi, a, b, dst, len) },
            // SAFETY: as above, for AVX2.
            Backend::Avx2 => unsafe { x86::delta_avx2(&lo, &hi, a, b, dst, len) },
            // SAFETY: as above, for SSSE3.
            Backend::Ssse3 => unsafe { x86::delta_ssse3(&lo, &hi, a, b, dst, len) },
            Backend::Reference | Backend::Portable => 0,
        };
        super::portable::delta(c, &a[body..len], &b[body..len], &mut dst[body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    super::portable::delta(c, a, b, dst)
}

/// Two-data recovery core; see `reference::recov2`.
pub(crate) fn recov2(
    backend: Backend,
    p: &[u8],
    q: &[u8],
    dp: &mut [u8],
    dq: &mut [u8],
    pbmul: u8,
    qmul: u8,
) {
    let len = dp.len();
    assert!(
        p.len() >= len && q.len() >= len && dq.len() >= len,
        "recov2: short buffer"
    );
    if !available(backend) {
        return reference::recov2(p, q, dp, dq, pbmul, qmul);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let pt = nibble_tables(pbmul);
        let qt = nibble_tables(qmul);
        let body = match backend {
            // SAFETY: feature detected by `available`; all four buffers hold at
            // least `len` bytes and the kernel stays below `len`.
            Backend::Avx512 => unsafe { x86::recov2_avx512(&pt, &qt, p, q, dp, dq, len) },
            // SAFETY: as above, for AVX2.
            Backend::Avx2 => unsafe { x86::recov2_avx2(&pt, &qt, p, q, dp, dq, len) },
            // SAFETY: as above, for SSSE3.
            Backend::Ssse3 => unsafe { x86::recov2_ssse3(&pt, &qt, p, q, dp, dq, len) },
            Backend::Reference | Backend::Portable => 0,
        };
        reference::recov2(
            &p[body..len],
            &q[body..len],
            &mut dp[body..],
            &mut dq[body..len],
            pbmul,
            qmul,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    reference::recov2(p, q, dp, dq, pbmul, qmul)
}

/// Multiplication by `c` split into nibbles: c·x = lo[x & 15] ⊕ hi[x >> 4].
fn nibble_tables(c: u8) -> ([u8; 16], [u8; 16]) {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    for i in 0..16u8 {
        lo[usize::from(i)] = super::gf_mul(c, i);
        hi[usize::from(i)] = super::gf_mul(c, i << 4);
    }
    (lo, hi)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    type Tables = ([u8; 16], [u8; 16]);

    // ---------- SSSE3 (16-byte vectors, two per step) ----------

    /// Returns how many leading bytes were processed (a multiple of 32).
    ///
    /// # Safety
    /// The CPU must support SSSE3; every `Some` slot, `p` and `q` must hold at
    /// least `len` bytes.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn gen_pq_ssse3(
        slots: &[Option<&[u8]>],
        p: &mut [u8],
        mut q: Option<&mut [u8]>,
        len: usize,
    ) -> usize {
        let body = len - len % 32;
        let poly = _mm_set1_epi8(0x1d);
        let zero = _mm_setzero_si128();
        let mut i = 0;
        while i < body {
            let (mut p0, mut p1, mut q0, mut q1) = (zero, zero, zero, zero);
            for s in slots.iter().rev() {
                // Q := Q·2 — bytes with the top bit set get 0x1d folded in.
                let m0 = _mm_cmpgt_epi8(zero, q0);
                let m1 = _mm_cmpgt_epi8(zero, q1);
                q0 = _mm_xor_si128(_mm_add_epi8(q0, q0), _mm_and_si128(m0, poly));
                q1 = _mm_xor_si128(_mm_add_epi8(q1, q1), _mm_and_si128(m1, poly));
                if let Some(d) = s {
                    // SAFETY: i + 32 <= body <= len <= d.len().
                    let (d0, d1) = unsafe {
                        (
                            _mm_loadu_si128(d.as_ptr().add(i).cast()),
                            _mm_loadu_si128(d.as_ptr().add(i + 16).cast()),
                        )
                    };
                    p0 = _mm_xor_si128(p0, d0);
                    p1 = _mm_xor_si128(p1, d1);
                    q0 = _mm_xor_si128(q0, d0);
                    q1 = _mm_xor_si128(q1, d1);
                }
            }
            // SAFETY: i + 32 <= len <= p.len(), q.len().
            unsafe {
                _mm_storeu_si128(p.as_mut_ptr().add(i).cast(), p0);
                _mm_storeu_si128(p.as_mut_ptr().add(i + 16).cast(), p1);
                if let Some(q) = q.as_deref_mut() {
                    _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), q0);
                    _mm_storeu_si128(q.as_mut_ptr().add(i + 16).cast(), q1);
                }
            }
            i += 32;
        }
        body
    }

    #[inline]
    #[target_feature(enable = "ssse3")]
    fn mul_ssse3(lo: __m128i, hi: __m128i, x: __m128i) -> __m128i {
        let mask = _mm_set1_epi8(0x0f);
        let l = _mm_shuffle_epi8(lo, _mm_and_si128(x, mask));
        let h = _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi64(x, 4), mask));
        _mm_xor_si128(l, h)
    }

    /// # Safety
    /// SSSE3 available; `a` and `dst` hold at least `len` bytes.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn mul_xor_ssse3(
        lo: &[u8; 16],
        hi: &[u8; 16],
        a: &[u8],
        dst: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 16;
        // SAFETY: the tables are 16 bytes.
        let (lo, hi) = unsafe {
            (
                _mm_loadu_si128(lo.as_ptr().cast()),
                _mm_loadu_si128(hi.as_ptr().cast()),
            )
        };
        let mut i = 0;
        while i < body {
            // SAFETY: i + 16 <= len <= every buffer's length.
            unsafe {
                let x = _mm_xor_si128(
                    _mm_loadu_si128(a.as_ptr().add(i).cast()),
                    _mm_loadu_si128(dst.as_ptr().add(i).cast()),
                );
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), mul_ssse3(lo, hi, x));
            }
            i += 16;
        }
        body
    }

    /// `dst ⊕= c · (a ⊕ b)` with `c` given as nibble tables.
    ///
    /// # Safety
    /// The CPU must support the target features; `a`, `b` and `dst` hold at
    /// least `len` bytes.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn delta_ssse3(
        lo: &[u8; 16],
        hi: &[u8; 16],
        a: &[u8],
        b: &[u8],
        dst: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 16;
        let (lo, hi) = (
            // SAFETY: the tables are 16 bytes.
            unsafe { _mm_loadu_si128(lo.as_ptr().cast()) },
            // SAFETY: as above.
            unsafe { _mm_loadu_si128(hi.as_ptr().cast()) },
        );
        let mut i = 0;
        while i < body {
            // SAFETY: i + 16 <= len <= every buffer's length.
            unsafe {
                let x = _mm_xor_si128(
                    _mm_loadu_si128(a.as_ptr().add(i).cast()),
                    _mm_loadu_si128(b.as_ptr().add(i).cast()),
                );
                let d = _mm_loadu_si128(dst.as_ptr().add(i).cast());
                _mm_storeu_si128(
                    dst.as_mut_ptr().add(i).cast(),
                    _mm_xor_si128(d, mul_ssse3(lo, hi, x)),
                );
            }
            i += 16;
        }
        body
    }

    /// # Safety
    /// SSSE3 available; all buffers hold at least `len` bytes.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn recov2_ssse3(
        pt: &Tables,
        qt: &Tables,
        p: &[u8],
        q: &[u8],
        dp: &mut [u8],
        dq: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 16;
        // SAFETY: the tables are 16 bytes each.
        let (plo, phi, qlo, qhi) = unsafe {
            (
                _mm_loadu_si128(pt.0.as_ptr().cast()),
                _mm_loadu_si128(pt.1.as_ptr().cast()),
                _mm_loadu_si128(qt.0.as_ptr().cast()),
                _mm_loadu_si128(qt.1.as_ptr().cast()),
            )
        };
        let mut i = 0;
        while i < body {
            // SAFETY: i + 16 <= len <= every buffer's length.
            unsafe {
                let px = _mm_xor_si128(
                    _mm_loadu_si128(p.as_ptr().add(i).cast()),
                    _mm_loadu_si128(dp.as_ptr().add(i).cast()),
                );
                let qx = _mm_xor_si128(
                    _mm_loadu_si128(q.as_ptr().add(i).cast()),
                    _mm_loadu_si128(dq.as_ptr().add(i).cast()),
                );
                let db = _mm_xor_si128(mul_ssse3(plo, phi, px), mul_ssse3(qlo, qhi, qx));
                _mm_storeu_si128(dq.as_mut_ptr().add(i).cast(), db);
                _mm_storeu_si128(dp.as_mut_ptr().add(i).cast(), _mm_xor_si128(db, px));
            }
            i += 16;
        }
        body
    }

    // ---------- AVX2 (32-byte vectors, two per step) ----------

    /// # Safety
    /// AVX2 available; every `Some` slot, `p` and `q` hold at least `len` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gen_pq_avx2(
        slots: &[Option<&[u8]>],
        p: &mut [u8],
        mut q: Option<&mut [u8]>,
        len: usize,
    ) -> usize {
        let body = len - len % 64;
        let poly = _mm256_set1_epi8(0x1d);
        let zero = _mm256_setzero_si256();
        let mut i = 0;
        while i < body {
            let (mut p0, mut p1, mut q0, mut q1) = (zero, zero, zero, zero);
            for s in slots.iter().rev() {
                let m0 = _mm256_cmpgt_epi8(zero, q0);
                let m1 = _mm256_cmpgt_epi8(zero, q1);
                q0 = _mm256_xor_si256(_mm256_add_epi8(q0, q0), _mm256_and_si256(m0, poly));
                q1 = _mm256_xor_si256(_mm256_add_epi8(q1, q1), _mm256_and_si256(m1, poly));
                if let Some(d) = s {
                    // SAFETY: i + 64 <= body <= len <= d.len().
                    let (d0, d1) = unsafe {
                        (
                            _mm256_loadu_si256(d.as_ptr().add(i).cast()),
                            _mm256_loadu_si256(d.as_ptr().add(i + 32).cast()),
                        )
                    };
                    p0 = _mm256_xor_si256(p0, d0);
                    p1 = _mm256_xor_si256(p1, d1);
                    q0 = _mm256_xor_si256(q0, d0);
                    q1 = _mm256_xor_si256(q1, d1);
                }
            }
            // SAFETY: i + 64 <= len <= p.len(), q.len().
            unsafe {
                _mm256_storeu_si256(p.as_mut_ptr().add(i).cast(), p0);
                _mm256_storeu_si256(p.as_mut_ptr().add(i + 32).cast(), p1);
                if let Some(q) = q.as_deref_mut() {
                    _mm256_storeu_si256(q.as_mut_ptr().add(i).cast(), q0);
                    _mm256_storeu_si256(q.as_mut_ptr().add(i + 32).cast(), q1);
                }
            }
            i += 64;
        }
        body
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul_avx2(lo: __m256i, hi: __m256i, x: __m256i) -> __m256i {
        let mask = _mm256_set1_epi8(0x0f);
        let l = _mm256_shuffle_epi8(lo, _mm256_and_si256(x, mask));
        let h = _mm256_shuffle_epi8(hi, _mm256_and_si256(_mm256_srli_epi64(x, 4), mask));
        _mm256_xor_si256(l, h)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn table_avx2(t: &[u8; 16]) -> __m256i {
        // SAFETY: the table is 16 bytes.
        let x = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
        _mm256_broadcastsi128_si256(x)
    }

    /// # Safety
    /// AVX2 available; `a` and `dst` hold at least `len` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn mul_xor_avx2(
        lo: &[u8; 16],
        hi: &[u8; 16],
        a: &[u8],
        dst: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 32;
        let (lo, hi) = (table_avx2(lo), table_avx2(hi));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= len <= every buffer's length.
            unsafe {
                let x = _mm256_xor_si256(
                    _mm256_loadu_si256(a.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(dst.as_ptr().add(i).cast()),
                );
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), mul_avx2(lo, hi, x));
            }
            i += 32;
        }
        body
    }

    /// `dst ⊕= c · (a ⊕ b)` with `c` given as nibble tables.
    ///
    /// # Safety
    /// The CPU must support the target features; `a`, `b` and `dst` hold at
    /// least `len` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn delta_avx2(
        lo: &[u8; 16],
        hi: &[u8; 16],
        a: &[u8],
        b: &[u8],
        dst: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 32;
        let (lo, hi) = (table_avx2(lo), table_avx2(hi));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= len <= every buffer's length.
            unsafe {
                let x = _mm256_xor_si256(
                    _mm256_loadu_si256(a.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(b.as_ptr().add(i).cast()),
                );
                let d = _mm256_loadu_si256(dst.as_ptr().add(i).cast());
                _mm256_storeu_si256(
                    dst.as_mut_ptr().add(i).cast(),
                    _mm256_xor_si256(d, mul_avx2(lo, hi, x)),
                );
            }
            i += 32;
        }
        body
    }

    /// # Safety
    /// AVX2 available; all buffers hold at least `len` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn recov2_avx2(
        pt: &Tables,
        qt: &Tables,
        p: &[u8],
        q: &[u8],
        dp: &mut [u8],
        dq: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 32;
        let (plo, phi) = (table_avx2(&pt.0), table_avx2(&pt.1));
        let (qlo, qhi) = (table_avx2(&qt.0), table_avx2(&qt.1));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= len <= every buffer's length.
            unsafe {
                let px = _mm256_xor_si256(
                    _mm256_loadu_si256(p.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(dp.as_ptr().add(i).cast()),
                );
                let qx = _mm256_xor_si256(
                    _mm256_loadu_si256(q.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(dq.as_ptr().add(i).cast()),
                );
                let db = _mm256_xor_si256(mul_avx2(plo, phi, px), mul_avx2(qlo, qhi, qx));
                _mm256_storeu_si256(dq.as_mut_ptr().add(i).cast(), db);
                _mm256_storeu_si256(dp.as_mut_ptr().add(i).cast(), _mm256_xor_si256(db, px));
            }
            i += 32;
        }
        body
    }

    // ---------- AVX-512BW (64-byte vectors, two per step) ----------

    /// # Safety
    /// AVX-512F and AVX-512BW available; every `Some` slot, `p` and `q` hold
    /// at least `len` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn gen_pq_avx512(
        slots: &[Option<&[u8]>],
        p: &mut [u8],
        mut q: Option<&mut [u8]>,
        len: usize,
    ) -> usize {
        let body = len - len % 128;
        let poly = _mm512_set1_epi8(0x1d);
        let zero = _mm512_setzero_si512();
        let mut i = 0;
        while i < body {
            let (mut p0, mut p1, mut q0, mut q1) = (zero, zero, zero, zero);
            for s in slots.iter().rev() {
                // Top bits become a byte mask; fold 0x1d into those bytes.
                let k0 = _mm512_movepi8_mask(q0);
                let k1 = _mm512_movepi8_mask(q1);
                q0 = _mm512_xor_si512(_mm512_add_epi8(q0, q0), _mm512_maskz_mov_epi8(k0, poly));
                q1 = _mm512_xor_si512(_mm512_add_epi8(q1, q1), _mm512_maskz_mov_epi8(k1, poly));
                if let Some(d) = s {
                    // SAFETY: i + 128 <= body <= len <= d.len().
                    let (d0, d1) = unsafe {
                        (
                            _mm512_loadu_si512(d.as_ptr().add(i).cast()),
                            _mm512_loadu_si512(d.as_ptr().add(i + 64).cast()),
                        )
                    };
                    p0 = _mm512_xor_si512(p0, d0);
                    p1 = _mm512_xor_si512(p1, d1);
                    q0 = _mm512_xor_si512(q0, d0);
                    q1 = _mm512_xor_si512(q1, d1);
                }
            }
            // SAFETY: i + 128 <= len <= p.len(), q.len().
            unsafe {
                _mm512_storeu_si512(p.as_mut_ptr().add(i).cast(), p0);
                _mm512_storeu_si512(p.as_mut_ptr().add(i + 64).cast(), p1);
                if let Some(q) = q.as_deref_mut() {
                    _mm512_storeu_si512(q.as_mut_ptr().add(i).cast(), q0);
                    _mm512_storeu_si512(q.as_mut_ptr().add(i + 64).cast(), q1);
                }
            }
            i += 128;
        }
        body
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn mul_avx512(lo: __m512i, hi: __m512i, x: __m512i) -> __m512i {
        let mask = _mm512_set1_epi8(0x0f);
        let l = _mm512_shuffle_epi8(lo, _mm512_and_si512(x, mask));
        let h = _mm512_shuffle_epi8(hi, _mm512_and_si512(_mm512_srli_epi64(x, 4), mask));
        _mm512_xor_si512(l, h)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn table_avx512(t: &[u8; 16]) -> __m512i {
        // SAFETY: the table is 16 bytes.
        let x = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
        _mm512_broadcast_i32x4(x)
    }

    /// # Safety
    /// AVX-512F/BW available; `a` and `dst` hold at least `len` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn mul_xor_avx512(
        lo: &[u8; 16],
        hi: &[u8; 16],
        a: &[u8],
        dst: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 64;
        let (lo, hi) = (table_avx512(lo), table_avx512(hi));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 64 <= len <= every buffer's length.
            unsafe {
                let x = _mm512_xor_si512(
                    _mm512_loadu_si512(a.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(dst.as_ptr().add(i).cast()),
                );
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), mul_avx512(lo, hi, x));
            }
            i += 64;
        }
        body
    }

    /// `dst ⊕= c · (a ⊕ b)` with `c` given as nibble tables.
    ///
    /// # Safety
    /// The CPU must support the target features; `a`, `b` and `dst` hold at
    /// least `len` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn delta_avx512(
        lo: &[u8; 16],
        hi: &[u8; 16],
        a: &[u8],
        b: &[u8],
        dst: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 64;
        let (lo, hi) = (table_avx512(lo), table_avx512(hi));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 64 <= len <= every buffer's length.
            unsafe {
                let x = _mm512_xor_si512(
                    _mm512_loadu_si512(a.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i).cast()),
                );
                let d = _mm512_loadu_si512(dst.as_ptr().add(i).cast());
                _mm512_storeu_si512(
                    dst.as_mut_ptr().add(i).cast(),
                    _mm512_xor_si512(d, mul_avx512(lo, hi, x)),
                );
            }
            i += 64;
        }
        body
    }

    /// # Safety
    /// AVX-512F/BW available; all buffers hold at least `len` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn recov2_avx512(
        pt: &Tables,
        qt: &Tables,
        p: &[u8],
        q: &[u8],
        dp: &mut [u8],
        dq: &mut [u8],
        len: usize,
    ) -> usize {
        let body = len - len % 64;
        let (plo, phi) = (table_avx512(&pt.0), table_avx512(&pt.1));
        let (qlo, qhi) = (table_avx512(&qt.0), table_avx512(&qt.1));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 64 <= len <= every buffer's length.
            unsafe {
                let px = _mm512_xor_si512(
                    _mm512_loadu_si512(p.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(dp.as_ptr().add(i).cast()),
                );
                let qx = _mm512_xor_si512(
                    _mm512_loadu_si512(q.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(dq.as_ptr().add(i).cast()),
                );
                let db = _mm512_xor_si512(mul_avx512(plo, phi, px), mul_avx512(qlo, qhi, qx));
                _mm512_storeu_si512(dq.as_mut_ptr().add(i).cast(), db);
                _mm512_storeu_si512(dp.as_mut_ptr().add(i).cast(), _mm512_xor_si512(db, px));
            }
            i += 64;
        }
        body
    }
}
