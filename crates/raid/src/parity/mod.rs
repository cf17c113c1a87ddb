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
//! * [`Backend::Portable`]: plain Rust, md's algorithm on byte lanes that
//!   the compiler vectorises (x86 SSE2, ARM NEON) or on 64-bit SWAR words
//!   (md's `int64`, on targets without baseline SIMD);
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
///
/// Non-exhaustive so that kernels for other CPUs can be added: aarch64 NEON
/// kernels belong next to the x86-64 ones in `parity::simd`, with a branch in
/// [`ParityEngine::detect`]; they are not written yet because this project's
/// machines cannot build or test for aarch64, so aarch64 runs `Portable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Byte-at-a-time table lookups (the plain scalar reference).
    Reference,
    /// Plain Rust for every target: byte lanes the compiler vectorises where
    /// the target has baseline SIMD (SSE2, NEON), 64-bit SWAR words elsewhere.
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

/// The error for a backend this CPU cannot run.
fn unsupported(backend: Backend) -> RaidError {
    let reason = if cfg!(target_arch = "x86_64") {
        "this CPU lacks the instructions it needs"
    } else {
        "it exists for x86-64 only and this build targets another architecture"
    };
    RaidError::UnsupportedBackend {
        backend: format!("{backend:?}"),
        reason: reason.into(),
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
        // Candidates per architecture, fastest first; `Portable` is the
        // fallback everywhere. An aarch64 NEON backend would be listed under
        // its own `cfg(target_arch = "aarch64")` here.
        #[cfg(target_arch = "x86_64")]
        const CANDIDATES: &[Backend] = &[Backend::Avx512, Backend::Avx2, Backend::Ssse3];
        #[cfg(not(target_arch = "x86_64"))]
        const CANDIDATES: &[Backend] = &[];
        let backend = CANDIDATES
            .iter()
            .copied()
            .find(|b| b.is_available())
            .unwrap_or(Backend::Portable);
        ParityEngine { backend }
    }
    /// A specific backend; an error if this CPU cannot run it.
    pub fn with_backend(backend: Backend) -> Result<Self> {
        if !backend.is_available() {
            return Err(unsupported(backend));
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

    /// `dst = c · (a ⊕ dst)` byte-wise in GF(2^8).
    fn mul_xor(&self, c: u8, a: &[u8], dst: &mut [u8]) {
        match self.backend {
            Backend::Reference => reference::mul_xor(c, a, dst),
            Backend::Portable => portable::mul_xor(c, a, dst),
            be => simd::mul_xor(be, c, a, dst),
        }
    }

    /// Two-data-block recovery core (lib/raid6/recov.c):
    /// on entry `dp = Pxy`, `dq = Qxy` (syndromes with the two blocks zeroed);
    /// on exit `dp = D_a`, `dq = D_b`.
    fn recov2(&self, p: &[u8], q: &[u8], dp: &mut [u8], dq: &mut [u8], pbmul: u8, qmul: u8) {
        match self.backend {
            Backend::Reference => reference::recov2(p, q, dp, dq, pbmul, qmul),
            Backend::Portable => portable::recov2(p, q, dp, dq, pbmul, qmul),
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
        let mut out = vec![0u8; len];
        self.gen_syndrome(&s, &mut px, &mut out)?;
        self.mul_xor(gf_inv(gf_exp(a)), q, &mut out);
        Ok(out)
    }

    /// Compute the stripe's P (and Q) members from its data members.
    /// `members[m]` is member `m`'s chunk (or part of it, all the same
    /// length); the entries at `layout.p` and `layout.q` are overwritten.
    pub fn encode_stripe(&self, layout: &StripeLayout, members: &mut [BytesMut]) -> Result<()> {
        let mut views: Vec<&mut [u8]> = members.iter_mut().map(|m| &mut m[..]).collect();
        self.encode_stripe_slices(layout, &mut views)
    }

    /// [`Self::encode_stripe`] on plain buffers: `members[m]` is member
    /// `m`'s part of the stripe (all the same length); the buffers at
    /// `layout.p` and `layout.q` are overwritten, nothing is allocated.
    ///
    /// ```
    /// use raid::{Geometry, Layout, Level, ParityEngine};
    ///
    /// let g = Geometry::new(Layout::parse(Level::Raid6, "left-symmetric")?, 8, &[64; 5])?;
    /// let stripe = g.stripe_layout(2)?;
    /// let mut bufs = vec![[7u8; 4096]; 5];
    /// let mut members: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    /// ParityEngine::detect().encode_stripe_slices(&stripe, &mut members)?;
    /// // Three data members of 7s: P = 7 ^ 7 ^ 7.
    /// assert!(bufs[stripe.p].iter().all(|&b| b == 7));
    /// # Ok::<(), raid::RaidError>(())
    /// ```
    pub fn encode_stripe_slices(
        &self,
        layout: &StripeLayout,
        members: &mut [&mut [u8]],
    ) -> Result<()> {
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
        // Move P and Q out so that the data can be borrowed alongside them.
        let p = std::mem::take(&mut members[layout.p]);
        let mut q = layout.q.map(|qd| std::mem::take(&mut members[qd]));
        let result = {
            let views: Vec<Option<&[u8]>> = members
                .iter()
                .enumerate()
                .map(|(m, b)| (m != layout.p && Some(m) != layout.q).then_some(&b[..]))
                .collect();
            match q.as_deref_mut() {
                Some(q) => {
                    let slots = syndrome_slots(layout, &views);
                    self.gen_syndrome(&slots, p, q)
                }
                None => {
                    let data: Vec<&[u8]> = layout.data.iter().filter_map(|&d| views[d]).collect();
                    self.gen_p(&data, p)
                }
            }
        };
        members[layout.p] = p;
        if let (Some(qd), Some(q)) = (layout.q, q) {
            members[qd] = q;
        }
        result
    }

    /// Read-modify-write on plain buffers: data member `member` of the
    /// stripe changes from `old` to `new`; fold the change into the old
    /// parity in place: P ⊕= old ⊕ new and Q ⊕= g^e · (old ⊕ new), with `e`
    /// the member's Q exponent ([`StripeLayout::q_exponent`]). Pass `None`
    /// for a parity block that is not kept (a failed member). All buffers
    /// must have the same length.
    ///
    /// ```
    /// use raid::{Geometry, Layout, Level, ParityEngine};
    ///
    /// let g = Geometry::new(Layout::parse(Level::Raid6, "left-symmetric")?, 8, &[64; 6])?;
    /// let stripe = g.stripe_layout(0)?;
    /// let engine = ParityEngine::detect();
    /// let mut bufs = vec![vec![1u8; 512]; 6];
    /// let mut members: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    /// engine.encode_stripe_slices(&stripe, &mut members)?;
    ///
    /// // Overwrite one data member and update P and Q by the delta alone.
    /// let d = stripe.data[2];
    /// let new = vec![9u8; 512];
    /// let (mut p, mut q) = (bufs[stripe.p].clone(), bufs[stripe.q.unwrap()].clone());
    /// engine.apply_delta(&stripe, d, &bufs[d], &new, Some(&mut p), Some(&mut q))?;
    /// bufs[d] = new;
    ///
    /// // The same parity as encoding the whole stripe again.
    /// let mut members: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    /// engine.encode_stripe_slices(&stripe, &mut members)?;
    /// assert_eq!((&p, &q), (&bufs[stripe.p], &bufs[stripe.q.unwrap()]));
    /// # Ok::<(), raid::RaidError>(())
    /// ```
    pub fn apply_delta(
        &self,
        layout: &StripeLayout,
        member: usize,
        old: &[u8],
        new: &[u8],
        p: Option<&mut [u8]>,
        q: Option<&mut [u8]>,
    ) -> Result<()> {
        if !layout.data.contains(&member) {
            return Err(RaidError::BadBuffers(format!(
                "member {member} is not a data member of stripe {} (data members {:?})",
                layout.stripe, layout.data
            )));
        }
        if q.is_some() && layout.q.is_none() {
            return Err(RaidError::BadBuffers(format!(
                "a Q buffer was given but stripe {} has no Q (raid4/5)",
                layout.stripe
            )));
        }
        let len = old.len();
        let mut outs = vec![new.len()];
        outs.extend(p.as_deref().map(|b| b.len()));
        outs.extend(q.as_deref().map(|b| b.len()));
        if let Some(i) = outs.iter().position(|&l| l != len) {
            return Err(RaidError::BadBuffers(format!(
                "old data has {len} bytes but {} has {}",
                [
                    "new data",
                    "the first parity buffer",
                    "the second parity buffer"
                ][i],
                outs[i]
            )));
        }
        if let Some(p) = p {
            self.delta(1, old, new, p);
        }
        if let Some(q) = q {
            let e = exponent(layout, member)?;
            self.delta(gf_exp(e), old, new, q);
        }
        Ok(())
    }

    /// `dst ⊕= c · (a ⊕ b)` (all the same length).
    fn delta(&self, c: u8, a: &[u8], b: &[u8], dst: &mut [u8]) {
        match self.backend {
            Backend::Reference => reference::delta(c, a, b, dst),
            Backend::Portable => portable::delta(c, a, b, dst),
            be => simd::delta(be, c, a, b, dst),
        }
    }

    /// Rebuild the missing members (`None`) of one stripe from the present
    /// ones: any one member for RAID4/5, any two for RAID6, P and Q
    /// included. Returns every member's buffer; present ones are returned
    /// as given (a cheap `Bytes` clone), missing ones freshly allocated.
    pub fn reconstruct_stripe(
        &self,
        layout: &StripeLayout,
        members: &[Option<Bytes>],
    ) -> Result<Vec<Bytes>> {
        let views: Vec<Option<&[u8]>> = members.iter().map(|m| m.as_deref()).collect();
        let len = check_stripe(layout, &views)?;
        let missing: Vec<usize> = (0..views.len()).filter(|&m| views[m].is_none()).collect();
        let mut bufs: Vec<Vec<u8>> = missing.iter().map(|_| vec![0u8; len]).collect();
        {
            let mut outs: Vec<(usize, &mut [u8])> = missing
                .iter()
                .copied()
                .zip(bufs.iter_mut().map(|b| &mut b[..]))
                .collect();
            self.reconstruct_core(layout, &views, &mut outs, len)?;
        }
        let mut rebuilt = missing.into_iter().zip(bufs).peekable();
        Ok(members
            .iter()
            .enumerate()
            .map(|(m, present)| match present {
                Some(b) => b.clone(),
                None => match rebuilt.next_if(|(i, _)| *i == m) {
                    Some((_, buf)) => Bytes::from(buf),
                    None => Bytes::new(),
                },
            })
            .collect())
    }

    /// Rebuild the members listed in `missing` in place: their buffers in
    /// `members` are overwritten (their old contents are ignored), the others
    /// are read. All buffers must have the same length. This form does not
    /// allocate for data and P/Q-with-data losses, which matters for large
    /// chunks.
    pub fn reconstruct_in_place(
        &self,
        layout: &StripeLayout,
        members: &mut [BytesMut],
        missing: &[usize],
    ) -> Result<()> {
        let mut views: Vec<&mut [u8]> = members.iter_mut().map(|m| &mut m[..]).collect();
        self.reconstruct_slices(layout, &mut views, missing)
    }

    /// [`Self::reconstruct_in_place`] on plain buffers: the buffers of the
    /// members in `missing` are overwritten, the others are read.
    ///
    /// ```
    /// use raid::{Geometry, Layout, Level, ParityEngine};
    ///
    /// let g = Geometry::new(Layout::parse(Level::Raid5, "left-symmetric")?, 8, &[64; 4])?;
    /// let stripe = g.stripe_layout(1)?;
    /// let engine = ParityEngine::detect();
    /// let mut bufs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 4096]).collect();
    /// let mut members: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    /// engine.encode_stripe_slices(&stripe, &mut members)?;
    /// let good = bufs.clone();
    /// bufs[stripe.data[0]].fill(0xee); // lost
    /// let mut members: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    /// engine.reconstruct_slices(&stripe, &mut members, &[stripe.data[0]])?;
    /// assert_eq!(bufs, good);
    /// # Ok::<(), raid::RaidError>(())
    /// ```
    pub fn reconstruct_slices(
        &self,
        layout: &StripeLayout,
        members: &mut [&mut [u8]],
        missing: &[usize],
    ) -> Result<()> {
        if let Some(&m) = missing.iter().find(|&&m| m >= members.len()) {
            return Err(RaidError::BadBuffers(format!(
                "missing member {m} is not below the {} buffers given",
                members.len()
            )));
        }
        let mut missing: Vec<usize> = missing.to_vec();
        missing.sort_unstable();
        missing.dedup();
        let len = members.first().map_or(0, |b| b.len());
        if let Some(i) = members.iter().position(|b| b.len() != len) {
            return Err(RaidError::BadBuffers(format!(
                "member {i} buffer has {} bytes, member 0 has {len}",
                members[i].len()
            )));
        }
        // Move the buffers to rebuild out so that the rest can be borrowed
        // immutably; they are put back whatever happens.
        let mut taken: Vec<&mut [u8]> = missing
            .iter()
            .map(|&m| std::mem::take(&mut members[m]))
            .collect();
        let result = {
            let views: Vec<Option<&[u8]>> = members
                .iter()
                .enumerate()
                .map(|(i, b)| (!missing.contains(&i)).then_some(&b[..]))
                .collect();
            let mut outs: Vec<(usize, &mut [u8])> = missing
                .iter()
                .copied()
                .zip(taken.iter_mut().map(|b| &mut b[..]))
                .collect();
            check_stripe(layout, &views)
                .and_then(|_| self.reconstruct_core(layout, &views, &mut outs, len))
        };
        for (&m, b) in missing.iter().zip(taken) {
            members[m] = b;
        }
        result
    }

    /// Compute the members of `outs` (member, buffer of `len` bytes) from the
    /// present members in `views` (`None` = missing).
    fn reconstruct_core(
        &self,
        layout: &StripeLayout,
        views: &[Option<&[u8]>],
        outs: &mut [(usize, &mut [u8])],
        len: usize,
    ) -> Result<()> {
        let missing: Vec<usize> = outs.iter().map(|(m, _)| *m).collect();
        let tolerated = if layout.q.is_some() { 2 } else { 1 };
        if missing.len() > tolerated {
            return Err(RaidError::TooManyMissing {
                missing: missing.len(),
                members: missing,
                level: if tolerated == 2 { "raid6" } else { "raid4/5" }.into(),
                tolerated,
            });
        }
        if missing.is_empty() {
            return Ok(());
        }
        let is_data = |m: usize| m != layout.p && Some(m) != layout.q;
        let p_idx = missing.iter().position(|&m| m == layout.p);
        let q_idx = layout.q.and_then(|q| missing.iter().position(|&m| m == q));
        let data_idx: Vec<usize> = (0..missing.len())
            .filter(|&i| is_data(missing[i]))
            .collect();
        let (first, rest) = outs.split_at_mut(1);
        let (o0, o1) = (&mut first[0], rest.first_mut());
        match (data_idx.as_slice(), p_idx, q_idx) {
            // Parity only: regenerate from the data.
            ([], _, _) => {
                let mut scratch = Vec::new();
                let (pbuf, qbuf): (&mut [u8], Option<&mut [u8]>) = match (p_idx, q_idx, o1) {
                    (Some(0), Some(1), Some(b)) => (&mut *o0.1, Some(&mut *b.1)),
                    (Some(1), Some(0), Some(b)) => (&mut *b.1, Some(&mut *o0.1)),
                    (Some(0), None, _) => (&mut *o0.1, None),
                    _ => {
                        // Q alone: P is present, compute it into scratch.
                        scratch.resize(len, 0);
                        (&mut scratch[..], Some(&mut *o0.1))
                    }
                };
                match qbuf {
                    Some(q) => {
                        let slots = syndrome_slots(layout, views);
                        self.gen_syndrome(&slots, pbuf, q)?;
                    }
                    None => {
                        let data: Vec<&[u8]> =
                            layout.data.iter().filter_map(|&d| views[d]).collect();
                        self.gen_p(&data, pbuf)?;
                    }
                }
            }
            // One data member with P present: XOR of P and the other data.
            ([0], None, _) => {
                let d = &mut *o0.1;
                let srcs: Vec<&[u8]> = layout
                    .data
                    .iter()
                    .filter_map(|&m| views[m])
                    .chain(views[layout.p])
                    .collect();
                self.gen_p(&srcs, d)?;
                if let Some(b) = o1 {
                    // The other missing member is Q: regenerate it.
                    let mut full = views.to_vec();
                    full[o0.0] = Some(&*o0.1);
                    let slots = syndrome_slots(layout, &full);
                    let mut scratch = vec![0u8; len];
                    self.gen_syndrome(&slots, &mut scratch, &mut *b.1)?;
                }
            }
            ([1], None, Some(0)) => {
                let b =
                    o1.ok_or_else(|| RaidError::BadBuffers("internal: missing buffer".into()))?;
                let srcs: Vec<&[u8]> = layout
                    .data
                    .iter()
                    .filter_map(|&m| views[m])
                    .chain(views[layout.p])
                    .collect();
                self.gen_p(&srcs, &mut *b.1)?;
                let mut full = views.to_vec();
                full[b.0] = Some(&*b.1);
                let slots = syndrome_slots(layout, &full);
                let mut scratch = vec![0u8; len];
                self.gen_syndrome(&slots, &mut scratch, &mut *o0.1)?;
            }
            // One data member and P: Q alone gives the data, then P.
            ([di], Some(_), None) => {
                let b =
                    o1.ok_or_else(|| RaidError::BadBuffers("internal: missing buffer".into()))?;
                let (d, p): (&mut [u8], &mut [u8]) = if *di == 0 {
                    (&mut *o0.1, &mut *b.1)
                } else {
                    (&mut *b.1, &mut *o0.1)
                };
                let dm = missing[*di];
                let a = exponent(layout, dm)?;
                let q = views[layout.q.unwrap_or(0)].unwrap_or(&[]);
                let slots = syndrome_slots(layout, views);
                // Qx (syndrome without the missing block) lands in d, the
                // P of the rest in p; then d = g^-a · (Q ⊕ Qx).
                self.gen_syndrome(&slots, p, d)?;
                self.mul_xor(gf_inv(gf_exp(a)), q, d);
                let mut full = views.to_vec();
                full[dm] = Some(&*d);
                let data: Vec<&[u8]> = layout.data.iter().filter_map(|&m| full[m]).collect();
                self.gen_p(&data, p)?;
            }
            // Two data members: lib/raid6/recov.c's data+data recovery.
            ([_, _], None, None) => {
                let b =
                    o1.ok_or_else(|| RaidError::BadBuffers("internal: missing buffer".into()))?;
                let (ea, eb) = (exponent(layout, o0.0)?, exponent(layout, b.0)?);
                let ((lo, dlo), (hi, dhi)) = if ea < eb {
                    ((ea, &mut *o0.1), (eb, &mut *b.1))
                } else {
                    ((eb, &mut *b.1), (ea, &mut *o0.1))
                };
                let slots = syndrome_slots(layout, views);
                self.gen_syndrome(&slots, dlo, dhi)?;
                let p = views[layout.p].unwrap_or(&[]);
                let q = views[layout.q.unwrap_or(0)].unwrap_or(&[]);
                let pbmul = gf_inv(gf_exp(hi - lo) ^ 1);
                let qmul = gf_inv(gf_exp(lo) ^ gf_exp(hi));
                self.recov2(p, q, dlo, dhi, pbmul, qmul);
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
        Ok(())
    }
}

/// Check member count and equal lengths; returns the common length.
fn check_stripe(layout: &StripeLayout, views: &[Option<&[u8]>]) -> Result<usize> {
    let n = layout.data.len() + 1 + usize::from(layout.q.is_some());
    if views.len() != n {
        return Err(RaidError::BadBuffers(format!(
            "stripe has {n} members but {} buffers were given",
            views.len()
        )));
    }
    let Some(len) = views.iter().flatten().map(|b| b.len()).next() else {
        return Err(RaidError::BadBuffers("no member buffer present".into()));
    };
    if let Some(i) = (0..n).find(|&i| views[i].is_some_and(|b| b.len() != len)) {
        return Err(RaidError::BadBuffers(format!(
            "member {i} buffer has {} bytes, others have {len}",
            views[i].map_or(0, |b| b.len())
        )));
    }
    Ok(len)
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
pub(crate) fn syndrome_slots<'a>(
    layout: &StripeLayout,
    views: &[Option<&'a [u8]>],
) -> Vec<Option<&'a [u8]>> {
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

    /// `dst = c · (a ⊕ dst)`.
    pub fn mul_xor(c: u8, a: &[u8], dst: &mut [u8]) {
        for (d, &x) in dst.iter_mut().zip(a) {
            *d = gf_mul(c, x ^ *d);
        }
    }

    /// `dst ⊕= c · (a ⊕ b)`.
    pub fn delta(c: u8, a: &[u8], b: &[u8], dst: &mut [u8]) {
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d ^= gf_mul(c, x ^ y);
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

/// Portable P and P+Q in plain Rust, written so that the compiler keeps the
/// working set in vector registers where the target has them.
///
/// P+Q follows md's algorithm (Horner's rule from the highest slot:
/// `Q = 2·Q ⊕ D`, `P ⊕= D`) on 64 bytes of every member at a time, with P
/// and Q held in registers across the whole member loop, so each data byte
/// is loaded once and P and Q are stored once. The multiplication by 2 in
/// GF(2^8) has two formulations (the private `Lanes` trait):
/// * byte lanes (`[u8; 64]`): `(x << 1) ⊕ (0x1d if the top bit was set)`,
///   four vector instructions per 16 bytes (add, signed compare, and, xor),
///   used where the target's baseline has SIMD registers that compilers
///   vectorise byte arithmetic into (SSE2 on x86, NEON on aarch64 and arm;
///   checked in the x86-64 disassembly, not built for ARM here);
/// * 64-bit SWAR words (`[u64; 8]`, md's `int64`): the same on eight
///   bytes packed in a `u64`, eight integer instructions per word, used
///   everywhere else, where byte lanes would run one byte at a time.
///
/// Both are compiled on every target and tested against the reference. 64
/// bytes keep P, Q, the constants and the temporaries within x86-64's 16
/// vector registers; the previous kernel worked on 128 bytes, which spilled
/// P to the stack on every member and fell behind a member-by-member word
/// loop at 64 KiB. P alone is XOR only, done on sixteen 64-bit words.
pub mod portable {
    /// Bytes per step of every member.
    const STEP: usize = 64;
    /// Bytes per step of the P-only kernel: sixteen 64-bit words.
    const P_STEP: usize = 128;
    const P_WORDS: usize = P_STEP / 8;

    /// A [`STEP`]-byte piece of a block in the form the P+Q kernel computes
    /// on; implemented for byte lanes and for 64-bit SWAR words.
    pub(super) trait Lanes: Copy {
        /// All bytes zero.
        const ZERO: Self;
        /// The bytes of `b`.
        fn load(b: &[u8; STEP]) -> Self;
        /// Write the bytes to `out`.
        fn store(&self, out: &mut [u8; STEP]);
        /// Byte-wise XOR.
        fn xor(self, other: Self) -> Self;
        /// Every byte times 2 in GF(2^8)/0x11d.
        fn mul2(self) -> Self;
    }

    /// 64 byte lanes (vectorised on SIMD targets).
    #[derive(Clone, Copy)]
    pub(super) struct ByteLanes([u8; STEP]);

    impl Lanes for ByteLanes {
        const ZERO: Self = ByteLanes([0; STEP]);
        #[inline(always)]
        fn load(b: &[u8; STEP]) -> Self {
            ByteLanes(*b)
        }
        #[inline(always)]
        fn store(&self, out: &mut [u8; STEP]) {
            *out = self.0;
        }
        #[inline(always)]
        fn xor(self, other: Self) -> Self {
            ByteLanes(std::array::from_fn(|k| self.0[k] ^ other.0[k]))
        }
        #[inline(always)]
        fn mul2(self) -> Self {
            // `(x as i8) >> 7` is 0xff where the top bit is set: one
            // compare against zero in SSE2 or NEON.
            ByteLanes(std::array::from_fn(|k| {
                let x = self.0[k];
                (x << 1) ^ (((x as i8) >> 7) as u8 & 0x1d)
            }))
        }
    }

    /// Eight 64-bit SWAR words (md's `int64`).
    #[derive(Clone, Copy)]
    #[cfg_attr(
        any(target_feature = "sse2", target_feature = "neon"),
        allow(
            dead_code,
            reason = "runs on targets without baseline SIMD; compiled and tested on every target"
        )
    )]
    pub(super) struct WordLanes([u64; STEP / 8]);

    impl Lanes for WordLanes {
        const ZERO: Self = WordLanes([0; STEP / 8]);
        #[inline(always)]
        fn load(b: &[u8; STEP]) -> Self {
            WordLanes(std::array::from_fn(|k| word(b, k * 8)))
        }
        #[inline(always)]
        fn store(&self, out: &mut [u8; STEP]) {
            for (o, w) in out.chunks_exact_mut(8).zip(&self.0) {
                o.copy_from_slice(&w.to_ne_bytes());
            }
        }
        #[inline(always)]
        fn xor(self, other: Self) -> Self {
            WordLanes(std::array::from_fn(|k| self.0[k] ^ other.0[k]))
        }
        #[inline(always)]
        fn mul2(self) -> Self {
            const HI: u64 = 0x8080_8080_8080_8080;
            const LOW7: u64 = 0xfefe_fefe_fefe_fefe;
            const POLY: u64 = 0x1d1d_1d1d_1d1d_1d1d;
            WordLanes(self.0.map(|x| {
                let hi = x & HI;
                // 0xff in every byte whose top bit was set (no borrow
                // crosses bytes).
                let mask = (hi << 1).wrapping_sub(hi >> 7);
                ((x << 1) & LOW7) ^ (mask & POLY)
            }))
        }
    }

    /// The formulation this target runs (see the module documentation).
    #[cfg(any(target_feature = "sse2", target_feature = "neon"))]
    type Fast = ByteLanes;
    #[cfg(not(any(target_feature = "sse2", target_feature = "neon")))]
    type Fast = WordLanes;

    #[inline(always)]
    fn word(b: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_ne_bytes(w)
    }

    /// P (and Q) of `slots` (see [`super::reference::gen_pq`]).
    pub fn gen_pq(slots: &[Option<&[u8]>], p: &mut [u8], q: Option<&mut [u8]>) {
        match q {
            None => gen_p(slots, p),
            Some(q) => gen_pq_with::<Fast>(slots, p, q),
        }
    }

    /// P and Q with the given formulation: whole [`STEP`]s through `L`, the
    /// last `len % STEP` bytes one at a time.
    pub(super) fn gen_pq_with<L: Lanes>(slots: &[Option<&[u8]>], p: &mut [u8], q: &mut [u8]) {
        let len = p.len();
        let q = &mut q[..len];
        // Slots above the highest present one only double a zero Q.
        let top = slots.iter().rposition(Option::is_some).map_or(0, |t| t + 1);
        let slots = &slots[..top];
        let body = len - len % STEP;
        // Every slot present (the usual case) runs a loop without the
        // per-member test for a missing block.
        let dense: Option<Vec<&[u8]>> = slots.iter().rev().copied().collect();
        let steps = p[..body]
            .chunks_exact_mut(STEP)
            .zip(q[..body].chunks_exact_mut(STEP));
        for (n, (po, qo)) in steps.enumerate() {
            let i = n * STEP;
            let (wp, wq) = match &dense {
                Some(data) => step_dense::<L>(data, i),
                None => step_sparse::<L>(slots, i),
            };
            wp.store(po.try_into().expect("STEP bytes"));
            wq.store(qo.try_into().expect("STEP bytes"));
        }
        for i in body..len {
            let (mut wp, mut wq) = (0u8, 0u8);
            for s in slots.iter().rev() {
                wq = (wq << 1) ^ (((wq as i8) >> 7) as u8 & 0x1d);
                if let Some(d) = s {
                    wp ^= d[i];
                    wq ^= d[i];
                }
            }
            p[i] = wp;
            q[i] = wq;
        }
    }

    /// P and Q of the [`STEP`] bytes at `i` of `data`, highest slot first.
    #[inline(always)]
    fn step_dense<L: Lanes>(data: &[&[u8]], i: usize) -> (L, L) {
        let (mut wp, mut wq) = (L::ZERO, L::ZERO);
        for d in data {
            let x = L::load(d[i..i + STEP].try_into().expect("STEP bytes"));
            wp = wp.xor(x);
            wq = wq.mul2().xor(x);
        }
        (wp, wq)
    }

    /// P and Q of the [`STEP`] bytes at `i` of `slots`, `None` a zero block.
    #[inline(always)]
    fn step_sparse<L: Lanes>(slots: &[Option<&[u8]>], i: usize) -> (L, L) {
        let (mut wp, mut wq) = (L::ZERO, L::ZERO);
        for s in slots.iter().rev() {
            wq = wq.mul2();
            if let Some(d) = s {
                let x = L::load(d[i..i + STEP].try_into().expect("STEP bytes"));
                wp = wp.xor(x);
                wq = wq.xor(x);
            }
        }
        (wp, wq)
    }

    /// P alone: XOR of the present slots, sixteen 64-bit words at a time.
    fn gen_p(slots: &[Option<&[u8]>], p: &mut [u8]) {
        let present: Vec<&[u8]> = slots.iter().flatten().copied().collect();
        let len = p.len();
        let body = len - len % P_STEP;
        for (n, po) in p[..body].chunks_exact_mut(P_STEP).enumerate() {
            let i = n * P_STEP;
            let mut wp = [0u64; P_WORDS];
            for d in &present {
                let x: &[u8; P_STEP] = d[i..i + P_STEP].try_into().expect("P_STEP bytes");
                for (k, w) in wp.iter_mut().enumerate() {
                    *w ^= word(x, k * 8);
                }
            }
            for (o, w) in po.chunks_exact_mut(8).zip(&wp) {
                o.copy_from_slice(&w.to_ne_bytes());
            }
        }
        for i in body..len {
            p[i] = present.iter().fold(0, |acc, d| acc ^ d[i]);
        }
    }

    /// `dst ⊕= c · (a ⊕ b)`: whole words for `c = 1` (P), a 256-entry
    /// product table for other coefficients (Q).
    pub fn delta(c: u8, a: &[u8], b: &[u8], dst: &mut [u8]) {
        if c == 1 {
            let body = dst.len() - dst.len() % 8;
            for ((d, x), y) in dst[..body]
                .chunks_exact_mut(8)
                .zip(a.chunks_exact(8))
                .zip(b.chunks_exact(8))
            {
                let v = word(d, 0) ^ word(x, 0) ^ word(y, 0);
                d.copy_from_slice(&v.to_ne_bytes());
            }
            for ((d, &x), &y) in dst[body..].iter_mut().zip(&a[body..]).zip(&b[body..]) {
                *d ^= x ^ y;
            }
            return;
        }
        let table = product_table(c);
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d ^= table[usize::from(x ^ y)];
        }
    }

    /// `c · x` for every byte `x`: one lookup per byte instead of the
    /// reference's two logarithms and an exponential.
    fn product_table(c: u8) -> [u8; 256] {
        std::array::from_fn(|x| super::gf_mul(c, x as u8))
    }

    /// `dst = c · (a ⊕ dst)` (see [`super::reference::mul_xor`]).
    pub fn mul_xor(c: u8, a: &[u8], dst: &mut [u8]) {
        let table = product_table(c);
        for (d, &x) in dst.iter_mut().zip(a) {
            *d = table[usize::from(x ^ *d)];
        }
    }

    /// Two-data recovery core (see [`super::reference::recov2`]) with
    /// product tables.
    pub fn recov2(p: &[u8], q: &[u8], dp: &mut [u8], dq: &mut [u8], pbmul: u8, qmul: u8) {
        let (pt, qt) = (product_table(pbmul), product_table(qmul));
        for (((&p, &q), dp), dq) in p.iter().zip(q).zip(dp.iter_mut()).zip(dq.iter_mut()) {
            let px = p ^ *dp;
            let db = pt[usize::from(px)] ^ qt[usize::from(q ^ *dq)];
            *dq = db;
            *dp = db ^ px;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both P+Q formulations of the portable kernel (whichever this target
    /// does not run included) equal the reference: lengths around the
    /// 64-byte step, one to three members, missing slots at the bottom, in
    /// the middle and at the top.
    #[test]
    fn both_portable_formulations_equal_the_reference() {
        fn check<L: portable::Lanes>(name: &str) {
            let blocks: Vec<Vec<u8>> = (0..5u8)
                .map(|k| {
                    (0..300u32)
                        .map(|i| (i as u8).wrapping_mul(37) ^ k.wrapping_mul(101) ^ 0x80)
                        .collect()
                })
                .collect();
            let patterns: [&[bool]; 7] = [
                &[true],
                &[true, true],
                &[true, true, true],
                &[false, true, true],
                &[true, false, true],
                &[true, true, false],
                &[true, false, true, true, false],
            ];
            for present in patterns {
                for len in [0, 1, 7, 8, 63, 64, 65, 127, 128, 129, 200, 255, 300] {
                    let slots: Vec<Option<&[u8]>> = present
                        .iter()
                        .zip(&blocks)
                        .map(|(&on, b)| on.then_some(&b[..len]))
                        .collect();
                    let (mut p0, mut q0) = (vec![0u8; len], vec![0u8; len]);
                    reference::gen_pq(&slots, &mut p0, Some(&mut q0));
                    let (mut p, mut q) = (vec![1u8; len], vec![2u8; len]);
                    portable::gen_pq_with::<L>(&slots, &mut p, &mut q);
                    assert_eq!((&p, &q), (&p0, &q0), "{name}, {present:?}, {len} bytes");
                    let mut p = vec![3u8; len];
                    portable::gen_pq(&slots, &mut p, None);
                    assert_eq!(p, p0, "P alone, {present:?}, {len} bytes");
                }
            }
        }
        check::<portable::ByteLanes>("byte lanes");
        check::<portable::WordLanes>("64-bit words");
    }

    #[test]
    fn an_unavailable_backend_is_not_a_buffer_error() {
        let e = unsupported(Backend::Avx512);
        assert!(matches!(e, RaidError::UnsupportedBackend { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with("parity backend Avx512 is not available: "),
            "{text}"
        );
        for b in Backend::all_available() {
            assert!(ParityEngine::with_backend(b).is_ok());
        }
        for b in [Backend::Ssse3, Backend::Avx2, Backend::Avx512] {
            if !b.is_available() {
                assert_eq!(ParityEngine::with_backend(b), Err(unsupported(b)));
            }
        }
    }
}
