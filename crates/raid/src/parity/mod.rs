//! RAID-5 P and RAID-6 Q parity and reconstruction, bit-compatible with md.
//!
//! P is the XOR of the data blocks. Q is the Reed–Solomon syndrome of
//! `lib/raid6`: Q = Σ g^i · D_i over GF(2^8) with polynomial 0x11d and
//! g = 2, where `i` is the data block's *slot*. Which member sits in which
//! slot depends on the layout (see [`StripeLayout::q_exponent`]); the
//! stripe-level functions ([`ParityEngine::encode_stripe`],
//! [`ParityEngine::reconstruct_stripe`]) take care of it.
//!
//! Three implementations compute the same bytes:
//! * [`Backend::Reference`]: byte at a time with log/exp tables — the
//!   "plain scalar" oracle the others are tested and benchmarked against;
//! * [`Backend::Portable`]: 64-bit SWAR words, md's `int64` algorithm;
//! * [`Backend::Ssse3`], [`Backend::Avx2`], [`Backend::Avx512`]: x86-64
//!   SIMD in the crate's one `unsafe` module (`parity::simd`), chosen at run time by
//!   [`ParityEngine::detect`].

use bytes::{Bytes, BytesMut};

use crate::error::{RaidError, Result};
use crate::geometry::StripeLayout;

mod simd;

const fn build_exp() -> [u8; 512] {
    let mut t = [0u8; 512];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 512 {
        t[i] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    t
}

const fn build_log(exp: &[u8; 512]) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 255 {
        t[exp[i] as usize] = i as u8;
        i += 1;
    }
    t
}

static EXP: [u8; 512] = build_exp();
static LOG: [u8; 256] = build_log(&EXP);

/// Multiply in GF(2^8) with polynomial 0x11d.
#[inline]
pub fn gf_mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// Multiplicative inverse in GF(2^8)/0x11d; `gf_inv(0)` is 0 by convention.
#[inline]
pub fn gf_inv(a: u8) -> u8 {
    if a == 0 {
        0
    } else {
        EXP[255 - LOG[a as usize] as usize]
    }
}

/// g^e for the generator g = 2.
#[inline]
pub fn gf_exp(e: usize) -> u8 {
    EXP[e % 255]
}

/// The implementation used for parity arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Byte-at-a-time table lookups (the plain scalar reference).
    Reference,
    /// 64-bit SWAR, portable to every target.
    Portable,
    /// x86-64 SSSE3 (16-byte vectors).
    Ssse3,
    /// x86-64 AVX2 (32-byte vectors).
    Avx2,
    /// x86-64 AVX-512F + AVX-512BW (64-byte vectors).
    Avx512,
}

impl Backend {
    /// Whether this CPU can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Reference | Backend::Portable => true,
            Backend::Ssse3 | Backend::Avx2 | Backend::Avx512 => simd::available(self),
        }
    }
    /// Every backend this CPU can run, slowest first.
    pub fn all_available() -> Vec<Backend> {
        [
            Backend::Reference,
            Backend::Portable,
            Backend::Ssse3,
            Backend::Avx2,
            Backend::Avx512,
        ]
        .into_iter()
        .filter(|b| b.is_available())
        .collect()
    }
}

/// Parity arithmetic with a chosen [`Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParityEngine {
    backend: Backend,
}

impl Default for ParityEngine {
    fn default() -> Self {
        ParityEngine::detect()
    }
}

fn check_lens(blocks: &[Option<&[u8]>], outs: &[usize]) -> Result<usize> {
    let len = outs.first().copied().unwrap_or(0);
    if let Some(i) = outs.iter().position(|&l| l != len) {
        return Err(RaidError::BadBuffers(format!(
            "output {i} has {} bytes, output 0 has {len}",
            outs[i]
        )));
    }
    for (i, b) in blocks.iter().enumerate() {
        if let Some(b) = b
            && b.len() != len
        {
            return Err(RaidError::BadBuffers(format!(
                "block {i} has {} bytes but the parity buffers have {len}",
                b.len()
            )));
        }
    }
    Ok(len)
}

impl ParityEngine {
    /// The fastest backend this CPU supports.
    pub fn detect() -> Self {
        let backend = [Backend::Avx512, Backend::Avx2, Backend::Ssse3]
            .into_iter()
            .find(|b| b.is_available())
            .unwrap_or(Backend::Portable);
        ParityEngine { backend }
    }
    /// A specific backend; an error if this CPU cannot run it.
    pub fn with_backend(backend: Backend) -> Result<Self> {
        if !backend.is_available() {
            return Err(RaidError::BadBuffers(format!(
                "backend {backend:?} is not supported by this CPU"
            )));
        }
        Ok(ParityEngine { backend })
    }
    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// P = XOR of `data`. All blocks and `p` must have the same length.
    pub fn gen_p(&self, data: &[&[u8]], p: &mut [u8]) -> Result<()> {
        let blocks: Vec<Option<&[u8]>> = data.iter().map(|d| Some(*d)).collect();
        check_lens(&blocks, &[p.len()])?;
        self.kernel_pq(&blocks, p, None);
        Ok(())
    }

    /// P and Q of `data`, where `data[i]` is the block in syndrome slot `i`
    /// (coefficient g^i). All blocks and outputs must have the same length.
    pub fn gen_pq(&self, data: &[&[u8]], p: &mut [u8], q: &mut [u8]) -> Result<()> {
        let blocks: Vec<Option<&[u8]>> = data.iter().map(|d| Some(*d)).collect();
        self.gen_syndrome(&blocks, p, q)
    }

    /// P and Q where `slots[i]` is the block with coefficient g^i and `None`
    /// stands for an all-zero block (the P/Q positions of DDF layouts, or
    /// missing blocks during reconstruction). At most 255 slots.
    pub fn gen_syndrome(&self, slots: &[Option<&[u8]>], p: &mut [u8], q: &mut [u8]) -> Result<()> {
        if slots.len() > 255 {
            return Err(RaidError::BadBuffers(format!(
                "{} syndrome slots given; GF(2^8) has 255 distinct coefficients",
                slots.len()
            )));
        }
        check_lens(slots, &[p.len(), q.len()])?;
        self.kernel_pq(slots, p, Some(q));
        Ok(())
    }

    fn kernel_pq(&self, slots: &[Option<&[u8]>], p: &mut [u8], q: Option<&mut [u8]>) {
        match self.backend {
            Backend::Reference => reference::gen_pq(slots, p, q),
            Backend::Portable => portable::gen_pq(slots, p, q),
            b => simd::gen_pq(b, slots, p, q),
        }
    }

    /// `dst = c · (a ⊕ b)` byte-wise in GF(2^8).
    fn mul_xor(&self, c: u8, a: &[u8], b: &[u8], dst: &mut [u8]) {
        match self.backend {
            Backend::Reference | Backend::Portable => reference::mul_xor(c, a, b, dst),
            be => simd::mul_xor(be, c, a, b, dst),
        }
    }

    /// Two-data-block recovery core (lib/raid6/recov.c):
    /// on entry `dp = Pxy`, `dq = Qxy` (syndromes with the two blocks zeroed);
    /// on exit `dp = D_a`, `dq = D_b`.
    fn recov2(&self, p: &[u8], q: &[u8], dp: &mut [u8], dq: &mut [u8], pbmul: u8, qmul: u8) {
        match self.backend {
            Backend::Reference | Backend::Portable => reference::recov2(p, q, dp, dq, pbmul, qmul),
            be => simd::recov2(be, p, q, dp, dq, pbmul, qmul),
        }
    }

    /// Recover the data blocks in slots `a` and `b` (a ≠ b) from the other
    /// slots, P and Q. `slots[a]` and `slots[b]` are ignored. Returns
    /// `(D_a, D_b)`.
    pub fn recover_two_data(
        &self,
        slots: &[Option<&[u8]>],
        a: usize,
        b: usize,
        p: &[u8],
        q: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        if a == b || a >= slots.len() || b >= slots.len() {
            return Err(RaidError::BadBuffers(format!(
                "missing slots {a} and {b} must differ and lie below {}",
                slots.len()
            )));
        }
        let (lo, hi) = (a.min(b), a.max(b));
        let mut s: Vec<Option<&[u8]>> = slots.to_vec();
        s[lo] = None;
        s[hi] = None;
        let len = check_lens(&s, &[p.len(), q.len()])?;
        let mut dp = vec![0u8; len];
        let mut dq = vec![0u8; len];
        self.gen_syndrome(&s, &mut dp, &mut dq)?;
        let pbmul = gf_inv(gf_exp(hi - lo) ^ 1);
        let qmul = gf_inv(gf_exp(lo) ^ gf_exp(hi));
        self.recov2(p, q, &mut dp, &mut dq, pbmul, qmul);
        // dp now holds D_lo, dq holds D_hi.
        Ok(if a < b { (dp, dq) } else { (dq, dp) })
    }

    /// Recover the data block in slot `a` from the other slots and Q alone
    /// (used when P is also missing).
    pub fn recover_data_from_q(
        &self,
        slots: &[Option<&[u8]>],
        a: usize,
        q: &[u8],
    ) -> Result<Vec<u8>> {
        if a >= slots.len() {
            return Err(RaidError::BadBuffers(format!(
                "missing slot {a} must lie below {}",
                slots.len()
            )));
        }
        let mut s: Vec<Option<&[u8]>> = slots.to_vec();
        s[a] = None;
        let len = check_lens(&s, &[q.len()])?;
        let mut px = vec![0u8; len];
        let mut qx = vec![0u8; len];
        self.gen_syndrome(&s, &mut px, &mut qx)?;
        let mut out = vec![0u8; len];
        self.mul_xor(gf_inv(gf_exp(a)), q, &qx, &mut out);
        Ok(out)
    }

    /// Compute the stripe's P (and Q) members from its data members.
    /// `members[m]` is member `m`'s chunk (or part of it, all the same
    /// length); the entries at `layout.p` and `layout.q` are overwritten.
    pub fn encode_stripe(&self, layout: &StripeLayout, members: &mut [BytesMut]) -> Result<()> {
        let n = layout.data.len() + 1 + usize::from(layout.q.is_some());
        if members.len() != n {
            return Err(RaidError::BadBuffers(format!(
                "stripe has {n} members but {} buffers were given",
                members.len()
            )));
        }
        let len = members[layout.data[0]].len();
        if let Some(i) = members.iter().position(|m| m.len() != len) {
            return Err(RaidError::BadBuffers(format!(
                "member {i} buffer has {} bytes, member {} has {len}",
                members[i].len(),
                layout.data[0]
            )));
        }
        let mut p = vec![0u8; len];
        let mut q = vec![0u8; len];
        {
            let views: Vec<Option<&[u8]>> = members.iter().map(|m| Some(&m[..])).collect();
            let slots = syndrome_slots(layout, &views);
            match layout.q {
                Some(_) => self.gen_syndrome(&slots, &mut p, &mut q)?,
                None => {
                    let data: Vec<&[u8]> = layout.data.iter().map(|&d| &members[d][..]).collect();
                    self.gen_p(&data, &mut p)?;
                }
            }
        }
        members[layout.p].copy_from_slice(&p);
        if let Some(qd) = layout.q {
            members[qd].copy_from_slice(&q);
        }
        Ok(())
    }

    /// Rebuild the missing members (`None`) of one stripe from the present
    /// ones: any one member for RAID4/5, any two for RAID6, P and Q
    /// included. Returns every member's buffer; present ones are returned
    /// as given (a cheap `Bytes` clone).
    pub fn reconstruct_stripe(
        &self,
        layout: &StripeLayout,
        members: &[Option<Bytes>],
    ) -> Result<Vec<Bytes>> {
        let n = layout.data.len() + 1 + usize::from(layout.q.is_some());
        if members.len() != n {
            return Err(RaidError::BadBuffers(format!(
                "stripe has {n} members but {} buffers were given",
                members.len()
            )));
        }
        let missing: Vec<usize> = (0..n).filter(|&m| members[m].is_none()).collect();
        let tolerated = if layout.q.is_some() { 2 } else { 1 };
        if missing.len() > tolerated {
            return Err(RaidError::TooManyMissing {
                missing: missing.len(),
                members: missing,
                level: if tolerated == 2 { "raid6" } else { "raid4/5" }.into(),
                tolerated,
            });
        }
        let Some(len) = members.iter().flatten().map(|b| b.len()).next() else {
            return Err(RaidError::BadBuffers("no member buffer present".into()));
        };
        if let Some(i) = (0..n).find(|&i| members[i].as_ref().is_some_and(|b| b.len() != len)) {
            return Err(RaidError::BadBuffers(format!(
                "member {i} buffer has {} bytes, others have {len}",
                members[i].as_ref().map_or(0, |b| b.len())
            )));
        }
        let views: Vec<Option<&[u8]>> = members.iter().map(|m| m.as_deref()).collect();
        let mut rebuilt: Vec<(usize, Vec<u8>)> = Vec::new();
        let is_data = |m: usize| m != layout.p && Some(m) != layout.q;
        let data_missing: Vec<usize> = missing.iter().copied().filter(|&m| is_data(m)).collect();
        let p_missing = missing.contains(&layout.p);
        let q_missing = layout.q.is_some_and(|q| missing.contains(&q));
        let xor_others = |skip: usize| -> Result<Vec<u8>> {
            // P ⊕ every other data block, i.e. the missing data block.
            let mut srcs: Vec<&[u8]> = layout
                .data
                .iter()
                .filter(|&&d| d != skip)
                .filter_map(|&d| views[d])
                .collect();
            if let Some(p) = views[layout.p] {
                srcs.push(p);
            }
            let mut out = vec![0u8; len];
            self.gen_p(&srcs, &mut out)?;
            Ok(out)
        };
        match (data_missing.as_slice(), p_missing, q_missing) {
            ([], _, _) => {}
            ([d], false, _) => rebuilt.push((*d, xor_others(*d)?)),
            ([d], true, false) => {
                let slots = syndrome_slots(layout, &views);
                let a = exponent(layout, *d)?;
                let q = views[layout.q.unwrap_or(0)].unwrap_or(&[]);
                rebuilt.push((*d, self.recover_data_from_q(&slots, a, q)?));
            }
            ([d1, d2], false, false) => {
                let slots = syndrome_slots(layout, &views);
                let (a, b) = (exponent(layout, *d1)?, exponent(layout, *d2)?);
                let p = views[layout.p].unwrap_or(&[]);
                let q = views[layout.q.unwrap_or(0)].unwrap_or(&[]);
                let (da, db) = self.recover_two_data(&slots, a, b, p, q)?;
                rebuilt.push((*d1, da));
                rebuilt.push((*d2, db));
            }
            _ => {
                return Err(RaidError::TooManyMissing {
                    missing: missing.len(),
                    members: missing,
                    level: "raid6".into(),
                    tolerated,
                });
            }
        }
        // Now every data block is known; regenerate missing P/Q.
        let mut full: Vec<Option<&[u8]>> = views.clone();
        for (m, buf) in &rebuilt {
            full[*m] = Some(buf);
        }
        let mut p_new = None;
        let mut q_new = None;
        if p_missing || q_missing {
            let mut p = vec![0u8; len];
            let mut q = vec![0u8; len];
            if layout.q.is_some() {
                let slots = syndrome_slots(layout, &full);
                self.gen_syndrome(&slots, &mut p, &mut q)?;
            } else {
                let data: Vec<&[u8]> = layout.data.iter().filter_map(|&d| full[d]).collect();
                self.gen_p(&data, &mut p)?;
            }
            p_new = p_missing.then_some(p);
            q_new = q_missing.then_some(q);
        }
        let mut out: Vec<Bytes> = Vec::with_capacity(n);
        let mut rebuilt_iter: Vec<Option<Vec<u8>>> = vec![None; n];
        for (m, buf) in rebuilt {
            rebuilt_iter[m] = Some(buf);
        }
        if let Some(p) = p_new {
            rebuilt_iter[layout.p] = Some(p);
        }
        if let (Some(q), Some(qd)) = (q_new, layout.q) {
            rebuilt_iter[qd] = Some(q);
        }
        for (m, present) in members.iter().enumerate() {
            out.push(match present {
                Some(b) => b.clone(),
                None => Bytes::from(rebuilt_iter[m].take().unwrap_or_default()),
            });
        }
        Ok(out)
    }
}

fn exponent(layout: &StripeLayout, member: usize) -> Result<usize> {
    layout
        .q_exponent
        .get(member)
        .copied()
        .flatten()
        .map(usize::from)
        .ok_or_else(|| {
            RaidError::BadBuffers(format!(
                "member {member} is not a data member of the stripe"
            ))
        })
}

/// Arrange member buffers into syndrome slots (slot = Q exponent).
fn syndrome_slots<'a>(layout: &StripeLayout, views: &[Option<&'a [u8]>]) -> Vec<Option<&'a [u8]>> {
    let top = layout
        .q_exponent
        .iter()
        .flatten()
        .map(|&e| usize::from(e) + 1)
        .max()
        .unwrap_or(0);
    let mut slots = vec![None; top];
    for (m, e) in layout.q_exponent.iter().enumerate() {
        if let Some(e) = e {
            slots[usize::from(*e)] = views[m];
        }
    }
    slots
}

/// The byte-at-a-time reference implementation (the "plain scalar" code
/// the SIMD paths are compared with).
pub mod reference {
    use super::gf_mul;

    /// P (and Q) by Horner's rule from the highest slot, as `lib/raid6` does;
    /// `None` slots are zero blocks.
    pub fn gen_pq(slots: &[Option<&[u8]>], p: &mut [u8], mut q: Option<&mut [u8]>) {
        for i in 0..p.len() {
            let mut wp = 0u8;
            let mut wq = 0u8;
            for s in slots.iter().rev() {
                wq = gf_mul(wq, 2);
                if let Some(d) = s {
                    wp ^= d[i];
                    wq ^= d[i];
                }
            }
            p[i] = wp;
            if let Some(q) = q.as_deref_mut() {
                q[i] = wq;
            }
        }
    }

    /// `dst = c · (a ⊕ b)`.
    pub fn mul_xor(c: u8, a: &[u8], b: &[u8], dst: &mut [u8]) {
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d = gf_mul(c, x ^ y);
        }
    }

    /// See [`super::ParityEngine`]'s two-data recovery: `dp`/`dq` hold
    /// Pxy/Qxy on entry and D_a/D_b on exit.
    pub fn recov2(p: &[u8], q: &[u8], dp: &mut [u8], dq: &mut [u8], pbmul: u8, qmul: u8) {
        for i in 0..p.len() {
            let px = p[i] ^ dp[i];
            let qx = gf_mul(qmul, q[i] ^ dq[i]);
            let db = gf_mul(pbmul, px) ^ qx;
            dq[i] = db;
            dp[i] = db ^ px;
        }
    }
}

/// 64-bit SWAR implementation (md's `int64` gen_syndrome), portable.
pub mod portable {
    const HI: u64 = 0x8080_8080_8080_8080;
    const POLY: u64 = 0x1d1d_1d1d_1d1d_1d1d;

    #[inline(always)]
    fn mul2(x: u64) -> u64 {
        let hi = x & HI;
        let mask = (hi << 1).wrapping_sub(hi >> 7);
        ((x << 1) & 0xfefe_fefe_fefe_fefe) ^ (mask & POLY)
    }

    #[inline(always)]
    fn word(b: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_ne_bytes(w)
    }

    /// P (and Q) of `slots` (see [`super::reference::gen_pq`]).
    pub fn gen_pq(slots: &[Option<&[u8]>], p: &mut [u8], mut q: Option<&mut [u8]>) {
        let len = p.len();
        let body = len - len % 8;
        let mut i = 0;
        while i < body {
            let mut wp = 0u64;
            let mut wq = 0u64;
            for s in slots.iter().rev() {
                wq = mul2(wq);
                if let Some(d) = s {
                    let w = word(d, i);
                    wp ^= w;
                    wq ^= w;
                }
            }
            p[i..i + 8].copy_from_slice(&wp.to_ne_bytes());
            if let Some(q) = q.as_deref_mut() {
                q[i..i + 8].copy_from_slice(&wq.to_ne_bytes());
            }
            i += 8;
        }
        if body < len {
            let tail: Vec<Option<&[u8]>> = slots.iter().map(|s| s.map(|d| &d[body..])).collect();
            super::reference::gen_pq(&tail, &mut p[body..], q.map(|q| &mut q[body..]));
        }
    }
}
