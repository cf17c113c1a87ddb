//! RAID4/5/6 I/O on `raid`'s write plans and P/Q kernels: read-modify-write
//! or reconstruct-write as the plan chooses (full-stripe writes read
//! nothing), reconstruction reads when a data member is missing, rebuild
//! and resync stripe row by stripe row, and parity scrub.
//!
//! A write holds its stripe's lock from the first read of old data to the
//! last parity write, so that two writes to one stripe cannot interleave
//! their read-modify-write cycles; a degraded read holds it too, so that it
//! never reconstructs from a half-updated stripe.

use raid::{IoRole, ParityEngine, WritePlan};

use super::*;

/// Number of stripe locks (stripes share locks modulo this).
pub(super) const STRIPE_LOCKS: usize = 64;

impl Volume {
    fn stripe_lock(&self, stripe: u64) -> std::sync::MutexGuard<'_, ()> {
        self.stripe_locks[(stripe % STRIPE_LOCKS as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn geometry_or_err(&self) -> Result<&Geometry> {
        self.geometry()
            .ok_or_else(|| EngineError::Unsupported("a linear volume has no parity".into()))
    }

    /// Members that cannot take part in stripe `stripe`: failed ones, and
    /// recovering ones not yet rebuilt past the stripe.
    fn stripe_failed(&self, stripe: u64, chunk: u64) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&m| !self.readable(m, (stripe + 1) * chunk))
            .collect()
    }

    /// Write whole sectors at logical sector `start` on a RAID4/5/6 volume.
    pub(super) fn write_parity(&self, start: u64, data: &[u8]) -> Result<()> {
        let g = self.geometry_or_err()?;
        let chunk = g.chunk_sectors();
        let row = chunk * g.data_disks() as u64;
        let end = start + data.len() as u64 / SECTOR;
        let mut pos = start;
        while pos < end {
            let stripe = pos / row;
            let sub_end = end.min((stripe + 1) * row);
            let bytes =
                &data[((pos - start) * SECTOR) as usize..((sub_end - start) * SECTOR) as usize];
            let _l = self.stripe_lock(stripe);
            loop {
                let failed = self.stripe_failed(stripe, chunk);
                if failed.len() > g.guaranteed_tolerance() {
                    return Err(EngineError::Unavailable(format!(
                        "stripe {stripe}: members {failed:?} are unavailable, more than {} tolerates",
                        g.layout()
                    )));
                }
                let plan = g.write_plan(pos, sub_end - pos, &failed)?;
                if self.exec_plan(&plan, bytes)? {
                    break;
                }
            }
            // A member being recovered that the plan left out (not yet in
            // sync at this stripe) gets its share of the row recomputed,
            // so that a resync that already passed, or skips, this stripe
            // leaves it current.
            for m in 0..self.slots.len() {
                if self.slots[m]
                    .state
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == RECOVERING
                    && !self.readable(m, (stripe + 1) * chunk)
                {
                    self.reconstruct_range(&[m], stripe * chunk, chunk)?;
                }
            }
            pos = sub_end;
        }
        Ok(())
    }

    /// Run one write plan; `Ok(false)` when a read failed (the member is
    /// then marked failed and the caller plans again).
    fn exec_plan(&self, plan: &WritePlan, data: &[u8]) -> Result<bool> {
        let engine = ParityEngine::detect();
        let mut regions = std::collections::BTreeSet::new();
        if let Some(bm) = &self.bitmap {
            for s in &plan.steps {
                for w in &s.writes {
                    regions.extend(bm.regions_of(w.member_sector, w.sectors));
                }
            }
        }
        let regions = self.begin_intent(regions.into_iter().collect())?;
        let parallel = data.len() >= PARALLEL_BYTES;
        let result = (|| {
            let mut had_failures = false;
            for step in &plan.steps {
                // Old data and parity, from all members at once.
                let mut old: Vec<Vec<u8>> = step
                    .reads
                    .iter()
                    .map(|io| vec![0u8; (io.sectors * SECTOR) as usize])
                    .collect();
                let jobs: Vec<Vec<(usize, u64, &mut [u8])>> = step
                    .reads
                    .iter()
                    .zip(old.iter_mut())
                    .map(|(io, b)| vec![(io.member, self.member_off(io.member_sector), &mut b[..])])
                    .collect();
                let errors: Vec<(usize, std::io::Error)> = self
                    .fan_out(jobs, parallel, &|(m, off, b): (usize, u64, &mut [u8])| {
                        self.member_read(m, b, off).err().map(|e| (m, e))
                    })
                    .into_iter()
                    .flatten()
                    .collect();
                if !errors.is_empty() {
                    for (m, e) in errors {
                        self.mark_failed(m, &format!("read error: {e}"));
                    }
                    self.write_superblocks(false)?;
                    return Ok(false);
                }
                let new_data = |logical: u64, sectors: u64| -> &[u8] {
                    let a = ((logical - plan.logical) * SECTOR) as usize;
                    &data[a..a + (sectors * SECTOR) as usize]
                };
                let lost: Vec<&[u8]> = step
                    .lost_data
                    .iter()
                    .map(|io| match io.role {
                        IoRole::Data { logical, .. } => new_data(logical, io.sectors),
                        _ => &[][..],
                    })
                    .collect();
                let mut bufs: Vec<Vec<u8>> = step
                    .writes
                    .iter()
                    .map(|io| match io.role {
                        IoRole::Data { logical, .. } => new_data(logical, io.sectors).to_vec(),
                        IoRole::P | IoRole::Q => vec![0u8; (io.sectors * SECTOR) as usize],
                    })
                    .collect();
                {
                    let reads: Vec<&[u8]> = old.iter().map(|b| &b[..]).collect();
                    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
                    engine.fill_parity(step, &reads, &lost, &mut outs)?;
                }
                let stale_q = self.fault(Fault::StaleQ);
                let jobs: Vec<Vec<(usize, u64, &[u8])>> = step
                    .writes
                    .iter()
                    .zip(&bufs)
                    .filter(|(io, _)| !(stale_q && io.role == IoRole::Q))
                    .map(|(io, b)| vec![(io.member, self.member_off(io.member_sector), &b[..])])
                    .collect();
                let results = self.fan_out(jobs, parallel, &|(m, off, b): (usize, u64, &[u8])| {
                    (m, self.member_write(m, b, off))
                });
                for (m, res) in results {
                    if let Err(e) = res {
                        // The data stays recoverable through the parity
                        // (or the parity is rebuilt from the data).
                        self.mark_failed(m, &format!("write error: {e}"));
                        had_failures = true;
                    }
                }
            }
            if had_failures {
                self.write_superblocks(false)?;
                let g = self.geometry_or_err()?;
                let failed = self
                    .status()
                    .iter()
                    .filter(|s| s.state != MemberState::Active)
                    .count();
                if failed > g.guaranteed_tolerance() {
                    return Err(EngineError::Unavailable(format!(
                        "{failed} members have failed, more than {} tolerates",
                        g.layout()
                    )));
                }
            }
            Ok(true)
        })();
        if let Some(bm) = &self.bitmap {
            bm.end(&regions);
        }
        result
    }

    /// Reconstruct the bytes of `piece` (a run within one chunk whose data
    /// member is unreadable) from the rest of its stripe.
    pub(super) fn reconstruct_read(&self, piece: &Piece, out: &mut [u8]) -> Result<()> {
        let g = self.geometry_or_err()?;
        let chunk = g.chunk_sectors();
        let loc = piece.copies[0];
        let stripe = loc.sector / chunk;
        let _l = self.stripe_lock(stripe);
        let layout = g.stripe_layout(stripe)?;
        let n = self.slots.len();
        let len = (piece.sectors * SECTOR) as usize;
        let mut bufs = vec![vec![0u8; len]; n];
        loop {
            let missing: Vec<usize> = (0..n)
                .filter(|&m| !self.readable(m, loc.sector + piece.sectors))
                .collect();
            if missing.len() > g.guaranteed_tolerance() {
                return Err(EngineError::Unavailable(format!(
                    "logical sector {}: members {missing:?} are unavailable, more than {} tolerates",
                    piece.logical,
                    g.layout()
                )));
            }
            let errors = self.read_members(&mut bufs, &missing, loc.sector);
            if !errors.is_empty() {
                for (m, e) in errors {
                    self.mark_failed(m, &format!("read error: {e}"));
                }
                self.write_superblocks(false)?;
                continue;
            }
            let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            ParityEngine::detect().reconstruct_slices(&layout, &mut views, &missing)?;
            out.copy_from_slice(&bufs[loc.member]);
            return Ok(());
        }
    }

    /// Recompute members `targets` over member sectors `sector..+sectors`
    /// (within one stripe row) from the other members and write them.
    /// The caller holds the gate exclusively.
    pub(super) fn reconstruct_range(
        &self,
        targets: &[usize],
        sector: u64,
        sectors: u64,
    ) -> Result<()> {
        let g = self.geometry_or_err()?;
        let stripe = sector / g.chunk_sectors();
        let layout = g.stripe_layout(stripe)?;
        let n = self.slots.len();
        let len = (sectors * SECTOR) as usize;
        let mut bufs = vec![vec![0u8; len]; n];
        let mut missing: Vec<usize> = (0..n)
            .filter(|&m| targets.contains(&m) || !self.readable(m, sector + sectors))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.len() > g.guaranteed_tolerance() {
            return Err(EngineError::Unavailable(format!(
                "stripe {stripe}: members {missing:?} cannot all be rebuilt by {}",
                g.layout()
            )));
        }
        let mut errors = self.read_members(&mut bufs, &missing, sector).into_iter();
        if let Some((m, e)) = errors.next() {
            for (other, e) in errors {
                self.mark_failed(other, &format!("read error: {e}"));
            }
            let d = self.attached(m)?;
            return self.member_result(m, &*d, "read", Err(e));
        }
        {
            let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            ParityEngine::detect().reconstruct_slices(&layout, &mut views, &missing)?;
        }
        let jobs: Vec<Vec<usize>> = targets.iter().map(|&t| vec![t]).collect();
        let results = self.fan_out(jobs, len * targets.len() >= PARALLEL_BYTES, &|t: usize| {
            let r = self
                .attached(t)
                .map(|d| (d.write_at(&bufs[t], self.member_off(sector)), d));
            (t, r)
        });
        for (t, r) in results {
            let (r, d) = r?;
            self.member_result(t, &*d, "write", r)?;
        }
        Ok(())
    }

    /// Read member sectors `sector..` of every member not in `skip` into
    /// `bufs[member]`, all members at once when the row is large; returns
    /// the members whose read failed.
    fn read_members(
        &self,
        bufs: &mut [Vec<u8>],
        skip: &[usize],
        sector: u64,
    ) -> Vec<(usize, std::io::Error)> {
        let off = self.member_off(sector);
        let total: usize = bufs.iter().map(Vec::len).sum();
        let jobs: Vec<Vec<(usize, &mut [u8])>> = bufs
            .iter_mut()
            .enumerate()
            .filter(|(m, _)| !skip.contains(m))
            .map(|(m, b)| vec![(m, &mut b[..])])
            .collect();
        self.fan_out(jobs, total >= PARALLEL_BYTES, &|(m, b): (
            usize,
            &mut [u8],
        )| {
            self.member_read(m, b, off).err().map(|e| (m, e))
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// Steps that rebuild member sectors `start..start+len` of a member:
    /// whole stripe rows.
    pub(super) fn parity_rows(&self, start: u64, len: u64) -> Result<Vec<Step>> {
        let g = self.geometry_or_err()?;
        let chunk = g.chunk_sectors();
        let mut out = Vec::new();
        let mut s = start / chunk * chunk;
        while s < start + len && s / chunk < g.stripes() {
            out.push(Step::Reconstruct {
                sector: s,
                sectors: chunk,
            });
            s += chunk;
        }
        Ok(out)
    }

    /// Recompute P (and Q) of the stripes in `regions` from the data.
    pub(super) fn resync_parity(&self, regions: &[usize], region: u64) -> Result<u64> {
        let g = self.geometry_or_err()?;
        if self.degraded() {
            tracing::warn!(
                "the volume is degraded and was not shut down cleanly: parity of the marked regions cannot be checked"
            );
            return Ok(0);
        }
        let mut done = 0;
        for &r in regions {
            for step in self.parity_rows(r as u64 * region, region)? {
                let Step::Reconstruct { sector, sectors } = step else {
                    continue;
                };
                let layout = g.stripe_layout(sector / g.chunk_sectors())?;
                let mut targets = vec![layout.p];
                targets.extend(layout.q);
                let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
                self.reconstruct_range(&targets, sector, sectors)?;
                done += sectors * SECTOR * targets.len() as u64;
            }
        }
        Ok(done)
    }

    /// Check (and with `repair` rewrite) the parity of every stripe that
    /// still has redundancy; count the others' data as unverifiable (no
    /// redundancy left: RAID4/5 with a member missing, RAID6 with two) or
    /// unreadable (more missing than tolerated).
    ///
    /// A RAID6 stripe with one member missing still has one redundancy and
    /// is checked: the missing member and one present parity are recomputed
    /// from the rest and that parity is compared with the one on disk. P
    /// missing: Q is checked against the data; Q missing: P is; a data
    /// member missing: it is rebuilt from P and Q is checked. One syndrome
    /// cannot tell which member is wrong, so `repair` does what md's repair
    /// does and takes the parity for the wrong one: it rewrites the parity
    /// it recomputed (and the data that parity protects stays as read, or
    /// as P reconstructs it).
    pub(super) fn scrub_parity(&self, repair: bool) -> Result<ScrubReport> {
        let g = self.geometry_or_err()?;
        let chunk = g.chunk_sectors();
        let n = self.slots.len();
        let len = (chunk * SECTOR) as usize;
        let tolerance = g.guaranteed_tolerance();
        let mut report = ScrubReport {
            repaired: repair,
            ..ScrubReport::default()
        };
        let engine = ParityEngine::detect();
        for stripe in 0..g.stripes() {
            self.check_interrupted(
                stripe * chunk * SECTOR * g.data_disks() as u64,
                g.stripes() * chunk * SECTOR * g.data_disks() as u64,
            )?;
            let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
            let sector = stripe * chunk;
            let data_bytes = chunk * SECTOR * g.data_disks() as u64;
            // Again from the members left whenever a read fails.
            'stripe: loop {
                let missing: Vec<usize> = (0..n)
                    .filter(|&m| !self.readable(m, sector + chunk))
                    .collect();
                if missing.len() > tolerance {
                    report.unreadable_bytes += data_bytes;
                    break;
                }
                if !missing.is_empty() && missing.len() == tolerance {
                    // The data can be computed, but nothing is left to check
                    // it against (md does not check such a stripe either).
                    report.unverifiable_bytes += data_bytes;
                    break;
                }
                let layout = g.stripe_layout(stripe)?;
                // `targets` are recomputed from the other members, `checked`
                // (the present ones among them) compared with the disk.
                let (targets, checked) = match *missing.as_slice() {
                    [] => {
                        let mut t = vec![layout.p];
                        t.extend(layout.q);
                        (t.clone(), t)
                    }
                    // RAID6 with one member missing (fewer than the tolerance):
                    // check Q, or P when Q is the one missing.
                    [m] => {
                        let check = match layout.q {
                            Some(q) if q != m => q,
                            _ => layout.p,
                        };
                        (vec![m, check], vec![check])
                    }
                    _ => {
                        // No layout tolerates more than two missing members.
                        return Err(EngineError::Unsupported(format!(
                            "scrub of stripe {stripe}: checking {} with members {missing:?} missing",
                            g.layout()
                        )));
                    }
                };
                let mut bufs = vec![vec![0u8; len]; n];
                for (m, b) in bufs.iter_mut().enumerate() {
                    if missing.contains(&m) {
                        continue;
                    }
                    if let Err(e) = self.member_read(m, b, self.member_off(sector)) {
                        self.scrub_member_failed(&mut report, m, "read", &e);
                        continue 'stripe;
                    }
                    report.bytes_read += len as u64;
                }
                report.checked_bytes += data_bytes;
                let mut want = bufs.clone();
                {
                    let mut views: Vec<&mut [u8]> = want.iter_mut().map(|b| &mut b[..]).collect();
                    engine.reconstruct_slices(&layout, &mut views, &targets)?;
                }
                let bad: Vec<usize> = checked
                    .iter()
                    .copied()
                    .filter(|&t| want[t] != bufs[t])
                    .collect();
                if bad.is_empty() {
                    break;
                }
                if repair {
                    for &t in &bad {
                        if let Err(e) = self.member_write_raw(t, &want[t], self.member_off(sector))
                        {
                            self.scrub_member_failed(&mut report, t, "repair write", &e);
                        }
                    }
                }
                report.mismatches.push(Mismatch {
                    at: stripe,
                    sectors: chunk,
                    members: bad,
                });
                break;
            }
        }
        if repair && !report.mismatches.is_empty() {
            self.flush()?;
        }
        Ok(report)
    }
}
