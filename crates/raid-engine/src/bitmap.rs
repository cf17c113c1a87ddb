//! The write-intent bitmap: one bit per region of member data area, set (and
//! made durable on every member) before a write to the region starts, and
//! cleared only once the region's writes are flushed on every member of a
//! non-degraded volume and no write touched it since the flush before (so
//! that a region written between every pair of flushes does not have its
//! bit cleared and persisted again at each one; md's bitmap daemon likewise
//! clears a bit only on its second pass over a quiet region). After a crash the set bits name the only regions
//! whose copies may disagree; while a member is failed the bits keep every
//! region written since, so that the member can come back with a resync of
//! just those regions (md's internal bitmap does the same).

use std::sync::Mutex;

/// In-memory state of the bitmap. The volume persists [`Bitmap::snapshot`]
/// to the members; this type only keeps the bookkeeping.
#[derive(Debug)]
pub(crate) struct Bitmap {
    /// Member sectors per bit.
    pub(crate) region: u64,
    /// Number of regions.
    pub(crate) regions: usize,
    /// Bytes of the on-disk bitmap (a multiple of 512).
    pub(crate) bytes: usize,
    inner: Mutex<Inner>,
    /// Serialises persisting, so that a later snapshot never lands before an
    /// earlier one.
    pub(crate) persist: Mutex<()>,
}

#[derive(Debug)]
struct Inner {
    bits: Vec<u8>,
    pending: Vec<u32>,
    seq: Vec<u64>,
    /// Each region's `seq` when the previous flush listed candidates.
    listed: Vec<u64>,
}

impl Bitmap {
    pub(crate) fn new(region: u64, regions: usize, bytes: usize, bits: Vec<u8>) -> Self {
        let mut bits = bits;
        bits.resize(bytes, 0);
        Bitmap {
            region,
            regions,
            bytes,
            inner: Mutex::new(Inner {
                bits,
                pending: vec![0; regions],
                seq: vec![0; regions],
                listed: vec![0; regions],
            }),
            persist: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Regions covering member sectors `start..start+sectors`.
    pub(crate) fn regions_of(&self, start: u64, sectors: u64) -> std::ops::Range<usize> {
        if sectors == 0 {
            return 0..0;
        }
        let a = (start / self.region) as usize;
        let b = ((start + sectors - 1) / self.region) as usize + 1;
        a.min(self.regions)..b.min(self.regions)
    }

    /// Count a write into `regions`; returns whether a bit was newly set
    /// (the caller must then persist before writing data).
    pub(crate) fn start(&self, regions: &[usize]) -> bool {
        let mut g = self.lock();
        let mut newly = false;
        for &r in regions {
            g.pending[r] += 1;
            g.seq[r] += 1;
            if g.bits[r / 8] & (1 << (r % 8)) == 0 {
                g.bits[r / 8] |= 1 << (r % 8);
                newly = true;
            }
        }
        newly
    }

    /// A write counted by [`Bitmap::start`] is over.
    pub(crate) fn end(&self, regions: &[usize]) {
        let mut g = self.lock();
        for &r in regions {
            g.pending[r] = g.pending[r].saturating_sub(1);
        }
    }

    /// Mark regions dirty without a write (a member failed mid-resync).
    pub(crate) fn mark(&self, regions: impl Iterator<Item = usize>) {
        let mut g = self.lock();
        for r in regions {
            g.bits[r / 8] |= 1 << (r % 8);
        }
    }

    /// Regions whose bit is set.
    pub(crate) fn dirty(&self) -> Vec<usize> {
        let g = self.lock();
        (0..self.regions)
            .filter(|&r| g.bits[r / 8] & (1 << (r % 8)) != 0)
            .collect()
    }

    /// Set regions without writes in flight and without writes started
    /// since the previous listing (the previous flush), with their write
    /// sequence; every region's sequence is remembered for the next one.
    pub(crate) fn clear_candidates(&self) -> Vec<(usize, u64)> {
        let mut g = self.lock();
        let out = (0..self.regions)
            .filter(|&r| {
                g.bits[r / 8] & (1 << (r % 8)) != 0 && g.pending[r] == 0 && g.seq[r] == g.listed[r]
            })
            .map(|r| (r, g.seq[r]))
            .collect();
        let Inner { seq, listed, .. } = &mut *g;
        listed.copy_from_slice(seq);
        out
    }

    /// Clear the candidates that saw no write since they were listed;
    /// returns whether any bit changed.
    pub(crate) fn clear(&self, candidates: &[(usize, u64)]) -> bool {
        let mut g = self.lock();
        let mut changed = false;
        for &(r, seq) in candidates {
            if g.pending[r] == 0 && g.seq[r] == seq {
                g.bits[r / 8] &= !(1 << (r % 8));
                changed = true;
            }
        }
        changed
    }

    /// The on-disk image.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.lock().bits.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_clear_only_without_writes_since_listing() {
        let b = Bitmap::new(8, 20, 512, vec![]);
        assert_eq!(b.regions_of(7, 2), 0..2);
        assert_eq!(b.regions_of(8, 8), 1..2);
        assert!(b.start(&[1, 2]));
        assert!(!b.start(&[2]));
        // In flight: not listed (but they started before this listing).
        assert!(b.clear_candidates().is_empty());
        b.end(&[1, 2]);
        b.end(&[2]);
        let c = b.clear_candidates();
        assert_eq!(c.len(), 2);
        assert!(!b.start(&[2]));
        b.end(&[2]);
        // Region 2 was written after listing: it stays set.
        assert!(b.clear(&c));
        assert_eq!(b.dirty(), vec![2]);
        assert_eq!(b.snapshot()[0], 0b100);
        // Region 2 is listed again only after a listing without writes.
        assert!(b.clear_candidates().is_empty());
        let c = b.clear_candidates();
        assert_eq!(c.len(), 1);
        assert!(b.clear(&c));
        assert!(b.dirty().is_empty());
    }

    #[test]
    fn a_region_written_between_every_flush_keeps_its_bit() {
        let b = Bitmap::new(8, 4, 512, vec![]);
        assert!(b.start(&[0]));
        b.end(&[0]);
        for _ in 0..5 {
            let c = b.clear_candidates();
            assert!(c.is_empty());
            // Set already: no new persisting needed.
            assert!(!b.start(&[0]));
            b.end(&[0]);
        }
        assert_eq!(b.dirty(), vec![0]);
    }
}
