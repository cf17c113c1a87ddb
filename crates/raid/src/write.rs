//! Write plans: which member ranges to read and to write so that a logical
//! write leaves data and parity consistent, healthy or degraded.
//!
//! [`Geometry::write_plan`] splits a logical range into [`StripeWrite`]
//! steps. For RAID0/1/10 there is one step whose writes are the mapped
//! extents of every surviving copy. For RAID4/5/6 every stripe the range
//! touches gives one step per *column range*: the member sectors of the
//! stripe in which the same data members are written (a write that starts
//! and ends inside chunks gives up to three steps for a stripe; the reads and
//! writes of one step all cover the same member sectors). Each step picks
//! the cheaper way to get its parity:
//!
//! * **reconstruct-write**: read the data members that are not written and
//!   compute P (and Q) from all the data (a full-stripe write reads nothing);
//! * **read-modify-write**: read the old data of the written members and the
//!   old parity, and fold the change into it
//!   ([`ParityEngine::apply_delta`]);
//!
//! whichever reads fewer member ranges (ties go to reconstruct-write, as in
//! md, since it does not carry stale parity forward). With failed members
//! the plan never reads or writes them; when neither way is possible (an
//! unwritten data member is lost) the step reads every surviving member,
//! rebuilds the lost old data and then computes the parity
//! ([`WriteStrategy::DegradedReconstructWrite`]); when no parity member
//! survives only the data is written ([`WriteStrategy::DataOnly`]).
//!
//! [`ParityEngine::fill_parity`] computes the parity buffers of a step
//! from the buffers read and the new data, on plain slices, so that an I/O
//! engine only moves bytes.

use std::collections::BTreeSet;

use crate::error::{RaidError, Result};
use crate::geometry::{Geometry, StripeLayout};
use crate::layout::Layout;
use crate::parity::ParityEngine;

/// What a member range of a write plan holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoRole {
    /// Data of logical sectors `logical ..` (copy `copy` for RAID1/10; 0
    /// otherwise). For a write, the new data comes from the caller's buffer
    /// at byte offset `(logical - plan.logical) * 512`; for a read, it is
    /// the old data of those sectors.
    Data {
        /// First logical sector.
        logical: u64,
        /// Copy index (md's order, as in [`crate::Mapping::copies`]).
        copy: usize,
    },
    /// The stripe's P parity.
    P,
    /// The stripe's Q syndrome (RAID6).
    Q,
}

/// One read or write of a contiguous member range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberIo {
    /// Member index.
    pub member: usize,
    /// First sector within the member's data area.
    pub member_sector: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// What the range holds.
    pub role: IoRole,
}

/// How a step of a write plan obtains its parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteStrategy {
    /// RAID0/1/10: the data is written to every surviving copy; nothing is read.
    Direct,
    /// The unwritten data members are read and the parity is computed from
    /// all the data (nothing is read for a full-stripe write).
    ReconstructWrite,
    /// The old data of the written members and the old parity are read, and
    /// the difference is folded into the parity.
    ReadModifyWrite,
    /// Degraded: an unwritten data member is lost, so every surviving member
    /// is read, the lost old data rebuilt, and the parity computed from all
    /// the data.
    DegradedReconstructWrite,
    /// Degraded: no parity member of the stripe survives; only the data is
    /// written.
    DataOnly,
}

/// One step of a [`WritePlan`]: reads, then parity computation, then writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeWrite {
    /// For RAID4/5/6, the roles of the stripe's members (P, Q, data order,
    /// Q exponents); `None` for RAID0/1/10.
    pub layout: Option<StripeLayout>,
    /// How the parity is obtained.
    pub strategy: WriteStrategy,
    /// Member ranges to read before the parity can be computed (old data and
    /// old parity, never a failed member).
    pub reads: Vec<MemberIo>,
    /// Member ranges to write: new data (every surviving copy) and the
    /// stripe's surviving parity members.
    pub writes: Vec<MemberIo>,
    /// Data writes that fall on failed members (RAID4/5/6): not written,
    /// but their new data is an input of the parity, which is how the data
    /// survives. Empty when no written data member has failed.
    pub lost_data: Vec<MemberIo>,
}

impl StripeWrite {
    /// The stripe number (RAID4/5/6).
    pub fn stripe(&self) -> Option<u64> {
        self.layout.as_ref().map(|l| l.stripe)
    }
}

/// What to read and write, member by member, to write the logical range
/// `logical .. logical + sectors` (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePlan {
    /// First logical sector written.
    pub logical: u64,
    /// Sectors written.
    pub sectors: u64,
    /// The failed members the plan avoids, sorted.
    pub failed: Vec<usize>,
    /// The steps, in logical order.
    pub steps: Vec<StripeWrite>,
}

impl WritePlan {
    /// Number of member reads (I/Os) in the plan.
    pub fn read_ios(&self) -> usize {
        self.steps.iter().map(|s| s.reads.len()).sum()
    }
    /// Number of member writes (I/Os) in the plan.
    pub fn write_ios(&self) -> usize {
        self.steps.iter().map(|s| s.writes.len()).sum()
    }
    /// Bytes read from members.
    pub fn bytes_read(&self) -> u64 {
        self.steps
            .iter()
            .flat_map(|s| &s.reads)
            .map(|r| r.sectors * 512)
            .sum()
    }
    /// Bytes written to members.
    pub fn bytes_written(&self) -> u64 {
        self.steps
            .iter()
            .flat_map(|s| &s.writes)
            .map(|r| r.sectors * 512)
            .sum()
    }
}

impl Geometry {
    /// Plan the write of logical sectors `start .. start + sectors` while
    /// the members in `failed` are unavailable: per step, which member
    /// ranges to read and which to write (data, P, Q), choosing
    /// read-modify-write or reconstruct-write by the fewer reads. See the
    /// [`write`](crate::write) module for the rules.
    ///
    /// Errors: `OutOfRange` for a range beyond the array or a failed member
    /// that does not exist; `DataLost` when more members failed than the
    /// level tolerates (RAID4/5/6) or some written sector has no surviving
    /// copy (RAID0/1/10).
    ///
    /// ```
    /// use raid::{Geometry, Layout, Level, ParityEngine, WriteStrategy};
    ///
    /// // RAID6 over 8 members, 64 KiB chunks (128 sectors), 6 data per stripe.
    /// let g = Geometry::new(Layout::parse(Level::Raid6, "left-symmetric")?, 128, &[128 * 16; 8])?;
    ///
    /// // 4 KiB inside one chunk: read old data, P and Q (3 reads rather than
    /// // the 5 other data members); write all three.
    /// let plan = g.write_plan(8, 8, &[])?;
    /// let step = &plan.steps[0];
    /// assert_eq!(step.strategy, WriteStrategy::ReadModifyWrite);
    /// assert_eq!((step.reads.len(), step.writes.len()), (3, 3));
    ///
    /// // A whole stripe: nothing to read.
    /// let full = g.write_plan(0, 6 * 128, &[])?;
    /// assert_eq!(full.steps[0].strategy, WriteStrategy::ReconstructWrite);
    /// assert_eq!(full.read_ios(), 0);
    ///
    /// // The same 4 KiB with its data member failed: the others are read and
    /// // only P and Q are written.
    /// let failed = step.writes.iter().find(|w| matches!(w.role, raid::IoRole::Data { .. })).unwrap().member;
    /// let degraded = g.write_plan(8, 8, &[failed])?;
    /// assert_eq!(degraded.steps[0].strategy, WriteStrategy::ReconstructWrite);
    /// assert!(degraded.steps[0].writes.iter().all(|w| w.member != failed));
    ///
    /// // An engine reads `reads`, puts the new data in the data writes and
    /// // lets the crate fill the parity writes.
    /// let old: Vec<Vec<u8>> = step.reads.iter().map(|_| vec![0u8; 4096]).collect();
    /// let reads: Vec<&[u8]> = old.iter().map(|b| &b[..]).collect();
    /// let mut bufs: Vec<Vec<u8>> = step.writes.iter().map(|_| vec![0xabu8; 4096]).collect();
    /// let mut writes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    /// ParityEngine::detect().fill_parity(step, &reads, &[], &mut writes)?;
    /// # Ok::<(), raid::RaidError>(())
    /// ```
    pub fn write_plan(&self, start: u64, sectors: u64, failed: &[usize]) -> Result<WritePlan> {
        let end = start.saturating_add(sectors);
        if end > self.array_sectors() {
            return Err(RaidError::OutOfRange {
                what: "end of logical range".into(),
                value: end,
                limit: self.array_sectors() + 1,
            });
        }
        if let Some(&m) = failed.iter().find(|&&m| m >= self.members()) {
            return Err(RaidError::OutOfRange {
                what: "failed member".into(),
                value: m as u64,
                limit: self.members() as u64,
            });
        }
        let failed: BTreeSet<usize> = failed.iter().copied().collect();
        let steps = if sectors == 0 {
            Vec::new()
        } else {
            match self.layout() {
                Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                    self.parity_steps(start, end, &failed)?
                }
                _ => self.direct_steps(start, end, &failed)?,
            }
        };
        Ok(WritePlan {
            logical: start,
            sectors,
            failed: failed.into_iter().collect(),
            steps,
        })
    }

    fn direct_steps(
        &self,
        start: u64,
        end: u64,
        failed: &BTreeSet<usize>,
    ) -> Result<Vec<StripeWrite>> {
        let extents = self.map_range(start, end - start)?;
        let mut writes = Vec::with_capacity(extents.len());
        let mut covered: Vec<(u64, u64)> = Vec::with_capacity(extents.len());
        for e in extents.iter().filter(|e| !failed.contains(&e.member)) {
            covered.push((e.logical, e.logical + e.sectors));
            writes.push(MemberIo {
                member: e.member,
                member_sector: e.member_sector,
                sectors: e.sectors,
                role: IoRole::Data {
                    logical: e.logical,
                    copy: e.copy,
                },
            });
        }
        covered.sort_unstable();
        let mut reached = start;
        for (a, b) in covered {
            if a > reached {
                break;
            }
            reached = reached.max(b);
        }
        if reached < end {
            let members: Vec<usize> = self.map(reached)?.copies.iter().map(|c| c.member).collect();
            return Err(RaidError::DataLost {
                failed: failed.iter().copied().collect(),
                detail: match self.layout() {
                    Layout::Raid0(_) => format!(
                        "raid0 keeps a single copy: logical sector {reached} lies on failed member {}",
                        members[0]
                    ),
                    _ => format!(
                        "{} keeps {} copies: every copy of logical sector {reached} is on failed members {members:?}",
                        self.layout(),
                        self.copies()
                    ),
                },
            });
        }
        Ok(vec![StripeWrite {
            layout: None,
            strategy: WriteStrategy::Direct,
            reads: Vec::new(),
            writes,
            lost_data: Vec::new(),
        }])
    }

    fn parity_steps(
        &self,
        start: u64,
        end: u64,
        failed: &BTreeSet<usize>,
    ) -> Result<Vec<StripeWrite>> {
        let tolerated = self.guaranteed_tolerance();
        if failed.len() > tolerated {
            return Err(RaidError::DataLost {
                failed: failed.iter().copied().collect(),
                detail: if tolerated == 2 {
                    format!(
                        "raid6 keeps two parity blocks (P and Q) per stripe, which rebuild two missing members; {} are missing",
                        failed.len()
                    )
                } else {
                    format!(
                        "{} keeps one parity block (P) per stripe, which rebuilds one missing member; {} are missing",
                        self.layout().level(),
                        failed.len()
                    )
                },
            });
        }
        let chunk = self.chunk_sectors();
        let d = self.data_disks() as u64;
        let width = d * chunk;
        let mut steps = Vec::new();
        for stripe in start / width..end.div_ceil(width) {
            let base = stripe * width;
            let a = start.max(base) - base;
            let b = end.min(base + width) - base;
            let layout = self.stripe_layout(stripe)?;
            let mut bounds = vec![0, a % chunk, b - (b - 1) / chunk * chunk, chunk];
            bounds.sort_unstable();
            bounds.dedup();
            for w in bounds.windows(2) {
                let (c0, c1) = (w[0], w[1]);
                let written: Vec<usize> = (0..d)
                    .filter(|&i| i * chunk + c0 >= a && i * chunk + c1 <= b)
                    .map(|i| i as usize)
                    .collect();
                if !written.is_empty() {
                    steps.push(plan_columns(
                        layout.clone(),
                        base,
                        chunk,
                        (c0, c1),
                        &written,
                        failed,
                    ));
                }
            }
        }
        Ok(steps)
    }
}

/// The step for columns `c0 .. c1` of a stripe whose data indices `written`
/// are overwritten.
fn plan_columns(
    layout: StripeLayout,
    base: u64,
    chunk: u64,
    (c0, c1): (u64, u64),
    written: &[usize],
    failed: &BTreeSet<usize>,
) -> StripeWrite {
    let sector = layout.stripe * chunk + c0;
    let sectors = c1 - c0;
    let io = |member: usize, role: IoRole| MemberIo {
        member,
        member_sector: sector,
        sectors,
        role,
    };
    let data_io = |i: usize| {
        io(
            layout.data[i],
            IoRole::Data {
                logical: base + i as u64 * chunk + c0,
                copy: 0,
            },
        )
    };
    let alive = |m: &usize| !failed.contains(m);
    let parity: Vec<MemberIo> = std::iter::once(io(layout.p, IoRole::P))
        .chain(layout.q.map(|q| io(q, IoRole::Q)))
        .filter(|x| alive(&x.member))
        .collect();
    let (mut writes, lost_data): (Vec<MemberIo>, Vec<MemberIo>) = written
        .iter()
        .map(|&i| data_io(i))
        .partition(|x| alive(&x.member));
    if parity.is_empty() {
        return StripeWrite {
            layout: Some(layout),
            strategy: WriteStrategy::DataOnly,
            reads: Vec::new(),
            writes,
            lost_data,
        };
    }
    writes.extend(parity.iter().copied());
    let unwritten: Vec<usize> = (0..layout.data.len())
        .filter(|i| !written.contains(i))
        .collect();
    let rcw = unwritten
        .iter()
        .all(|&i| alive(&layout.data[i]))
        .then(|| unwritten.iter().map(|&i| data_io(i)).collect::<Vec<_>>());
    let rmw = written.iter().all(|&i| alive(&layout.data[i])).then(|| {
        written
            .iter()
            .map(|&i| data_io(i))
            .chain(parity.iter().copied())
            .collect::<Vec<_>>()
    });
    let (strategy, reads) = match (rcw, rmw) {
        (Some(r), Some(m)) if m.len() < r.len() => (WriteStrategy::ReadModifyWrite, m),
        (Some(r), _) => (WriteStrategy::ReconstructWrite, r),
        (None, Some(m)) => (WriteStrategy::ReadModifyWrite, m),
        (None, None) => {
            // Every surviving member, data and parity, to rebuild the lost
            // old data of the stripe's columns.
            let reads = (0..layout.data.len())
                .map(data_io)
                .filter(|x| alive(&x.member))
                .chain(parity.iter().copied())
                .collect();
            (WriteStrategy::DegradedReconstructWrite, reads)
        }
    };
    StripeWrite {
        layout: Some(layout),
        strategy,
        reads,
        writes,
        lost_data,
    }
}

impl ParityEngine {
    /// Compute the parity writes of one step of a [`WritePlan`].
    ///
    /// `reads[i]` holds what was read for `step.reads[i]`; `lost_data[i]`
    /// the new data of `step.lost_data[i]` (a failed member's share of the
    /// write, usually none); `writes[i]` is the buffer for `step.writes[i]`:
    /// the caller fills the data writes with the new data, and this call
    /// fills the P and Q writes. All
    /// buffers must have the same length (normally `sectors * 512` of the
    /// step; any common length works, since parity is computed column by
    /// column, so a step can be processed in pieces). Nothing is computed
    /// for `Direct` and `DataOnly` steps (only the buffer counts are
    /// checked). Buffers are left unchanged on error.
    pub fn fill_parity(
        &self,
        step: &StripeWrite,
        reads: &[&[u8]],
        lost_data: &[&[u8]],
        writes: &mut [&mut [u8]],
    ) -> Result<()> {
        if reads.len() != step.reads.len()
            || lost_data.len() != step.lost_data.len()
            || writes.len() != step.writes.len()
        {
            return Err(RaidError::BadBuffers(format!(
                "the step has {} reads, {} lost data and {} writes but {}, {} and {} buffers were given",
                step.reads.len(),
                step.lost_data.len(),
                step.writes.len(),
                reads.len(),
                lost_data.len(),
                writes.len()
            )));
        }
        let layout = match (&step.layout, step.strategy) {
            (_, WriteStrategy::Direct | WriteStrategy::DataOnly) => return Ok(()),
            (Some(layout), _) => layout,
            (None, s) => {
                return Err(RaidError::BadBuffers(format!(
                    "a {s:?} step needs the stripe layout, and this step has none"
                )));
            }
        };
        let lens: Vec<(&str, usize, usize)> =
            (reads.iter().enumerate().map(|(i, b)| ("read", i, b.len())))
                .chain(
                    lost_data
                        .iter()
                        .enumerate()
                        .map(|(i, b)| ("lost data", i, b.len())),
                )
                .chain(
                    writes
                        .iter()
                        .enumerate()
                        .map(|(i, b)| ("write", i, b.len())),
                )
                .collect();
        let len = lens.first().map_or(0, |l| l.2);
        if let Some((kind, k, l)) = lens.iter().find(|l| l.2 != len) {
            return Err(RaidError::BadBuffers(format!(
                "{kind} buffer {k} has {l} bytes, the first buffer has {len}"
            )));
        }
        let n = layout.data.len() + 1 + usize::from(layout.q.is_some());
        // Old contents by member, and the new data and parity outputs.
        let mut old: Vec<Option<&[u8]>> = vec![None; n];
        for (io, buf) in step.reads.iter().zip(reads) {
            old[io.member] = Some(buf);
        }
        let mut new: Vec<Option<&[u8]>> = vec![None; n];
        for (io, buf) in step.lost_data.iter().zip(lost_data) {
            new[io.member] = Some(buf);
        }
        let (mut p_out, mut q_out): (Option<&mut [u8]>, Option<&mut [u8]>) = (None, None);
        for (io, buf) in step.writes.iter().zip(writes.iter_mut()) {
            match io.role {
                IoRole::Data { .. } => new[io.member] = Some(&**buf),
                IoRole::P => p_out = Some(&mut **buf),
                IoRole::Q => q_out = Some(&mut **buf),
            }
        }
        let missing = |m: usize| {
            RaidError::BadBuffers(format!(
                "step of stripe {} ({:?}) has no buffer for member {m}",
                layout.stripe, step.strategy
            ))
        };
        match step.strategy {
            WriteStrategy::Direct | WriteStrategy::DataOnly => Ok(()),
            WriteStrategy::ReconstructWrite => {
                let mut data: Vec<Option<&[u8]>> = vec![None; n];
                for &m in &layout.data {
                    data[m] = Some(new[m].or(old[m]).ok_or_else(|| missing(m))?);
                }
                self.parity_of(layout, &data, p_out, q_out, len)
            }
            WriteStrategy::ReadModifyWrite => {
                // Check first, so that nothing is written on error.
                for (m, _) in new.iter().enumerate().filter(|(_, b)| b.is_some()) {
                    old[m].ok_or_else(|| missing(m))?;
                    if !layout.data.contains(&m) {
                        return Err(RaidError::BadBuffers(format!(
                            "step writes data to member {m}, which is not a data member of stripe {}",
                            layout.stripe
                        )));
                    }
                }
                let old_p = old[layout.p];
                let old_q = layout.q.and_then(|q| old[q]);
                if p_out.is_some() && old_p.is_none() {
                    return Err(missing(layout.p));
                }
                if q_out.is_some() && old_q.is_none() {
                    return Err(missing(layout.q.unwrap_or(layout.p)));
                }
                if let (Some(out), Some(src)) = (p_out.as_deref_mut(), old_p) {
                    out.copy_from_slice(src);
                }
                if let (Some(out), Some(src)) = (q_out.as_deref_mut(), old_q) {
                    out.copy_from_slice(src);
                }
                for (m, nb) in new.iter().enumerate() {
                    if let (Some(nb), Some(ob)) = (nb, old[m]) {
                        self.apply_delta(
                            layout,
                            m,
                            ob,
                            nb,
                            p_out.as_deref_mut(),
                            q_out.as_deref_mut(),
                        )?;
                    }
                }
                Ok(())
            }
            WriteStrategy::DegradedReconstructWrite => {
                let lost: Vec<usize> = (0..n).filter(|&m| old[m].is_none()).collect();
                let mut bufs: Vec<Vec<u8>> = (0..n)
                    .map(|m| old[m].map_or_else(|| vec![0u8; len], <[u8]>::to_vec))
                    .collect();
                {
                    let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
                    self.reconstruct_slices(layout, &mut views, &lost)?;
                }
                let mut data: Vec<Option<&[u8]>> = vec![None; n];
                for &m in &layout.data {
                    data[m] = Some(new[m].unwrap_or(&bufs[m]));
                }
                self.parity_of(layout, &data, p_out, q_out, len)
            }
        }
    }

    /// P and/or Q of the stripe's data (`data[m]` for every data member).
    fn parity_of(
        &self,
        layout: &StripeLayout,
        data: &[Option<&[u8]>],
        p: Option<&mut [u8]>,
        q: Option<&mut [u8]>,
        len: usize,
    ) -> Result<()> {
        match (p, q) {
            (Some(p), None) => {
                let blocks: Vec<&[u8]> = layout.data.iter().filter_map(|&m| data[m]).collect();
                self.gen_p(&blocks, p)
            }
            (p, Some(q)) => {
                let mut scratch = Vec::new();
                let p = match p {
                    Some(p) => p,
                    None => {
                        scratch.resize(len, 0);
                        &mut scratch[..]
                    }
                };
                let slots = crate::parity::syndrome_slots(layout, data);
                self.gen_syndrome(&slots, p, q)
            }
            (None, None) => Ok(()),
        }
    }
}
