//! A vector shared between clones in chunks, for the engine's per-drive tables whose entries
//! are themselves allocations (each drive's member list): cloning the engine copies one
//! pointer per chunk instead of one list per drive, and a write copies only the chunk it lands
//! in, and only while a clone still shares it.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// Entries per chunk: small enough that the first write to a shared chunk (a copy of its
/// entries) costs microseconds, large enough that a clone of 100,000 entries copies about a
/// hundred pointers.
const CHUNK: usize = 1024;

/// A `Vec<T>` in chunks of [`CHUNK`] entries, each behind an [`Arc`]. `Clone` shares every
/// chunk; [`IndexMut`], `push` and `swap_remove` copy a chunk that a clone shares before writing
/// it (`Arc::make_mut`), so a change to one copy is never seen by another.
///
/// # Invariants
/// Every chunk but the last holds exactly `CHUNK` entries; the last holds 1 to `CHUNK`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CowVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T: Clone> CowVec<T> {
    /// `n` copies of `value`.
    pub(crate) fn from_elem(value: T, n: usize) -> Self {
        let mut v = CowVec {
            chunks: Vec::with_capacity(n.div_ceil(CHUNK)),
            len: 0,
        };
        for _ in 0..n {
            v.push(value.clone());
        }
        v
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends an entry (copying the last chunk first if a clone shares it).
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Removes entry `i`, the last entry taking its place (as `Vec::swap_remove`). Panics if
    /// `i` is out of bounds.
    pub(crate) fn swap_remove(&mut self, i: usize) -> T {
        assert!(i < self.len, "swap_remove index {i} out of {}", self.len);
        let last = self.chunks.last_mut().expect("not empty");
        let moved = Arc::make_mut(last).pop().expect("chunks are never empty");
        if last.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if i == self.len {
            moved
        } else {
            std::mem::replace(&mut self[i], moved)
        }
    }

    /// The entries in order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Whether `self` and `other` share chunk `c` (a clone shares each until either writes it).
    #[cfg(test)]
    pub(crate) fn shares_chunk(&self, other: &Self, c: usize) -> bool {
        Arc::ptr_eq(&self.chunks[c], &other.chunks[c])
    }
}

impl<T> Index<usize> for CowVec<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T: Clone> IndexMut<usize> for CowVec<T> {
    /// The entry to write, its chunk copied first if a clone shares it.
    fn index_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        &mut Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone and its original stay equal to two plain vectors put through the same
    /// operations (pushes, writes, swap-removes across chunk boundaries, on either side): a
    /// write to one is never seen by the other, and a clone shares every chunk until one of
    /// them writes it.
    #[test]
    fn a_clone_shares_chunks_and_copies_on_write() {
        let n = 3 * CHUNK + 5;
        let mut a = CowVec::from_elem(Vec::<u32>::new(), n);
        let mut model_a: Vec<Vec<u32>> = vec![Vec::new(); n];
        for i in 0..n {
            a[i].push(i as u32);
            model_a[i].push(i as u32);
        }
        let mut b = a.clone();
        let mut model_b = model_a.clone();
        for c in 0..4 {
            assert!(a.shares_chunk(&b, c));
        }
        // Writes to the original: the clone keeps its values; only the written chunks copy.
        a[7].push(70);
        model_a[7].push(70);
        a[2 * CHUNK].clear();
        model_a[2 * CHUNK].clear();
        assert!(!a.shares_chunk(&b, 0) && a.shares_chunk(&b, 1) && !a.shares_chunk(&b, 2));
        assert!(a.shares_chunk(&b, 3));
        // Writes to the clone: the original keeps its values.
        b[CHUNK + 1] = vec![9, 9];
        model_b[CHUNK + 1] = vec![9, 9];
        assert!(!a.shares_chunk(&b, 1));
        // Removals and pushes that cross a chunk boundary, on both sides.
        for (i, x) in [(0, 100u32), (CHUNK, 101), (n - 10, 102)] {
            assert_eq!(a.swap_remove(i), model_a.swap_remove(i));
            a.push(vec![x]);
            model_a.push(vec![x]);
        }
        for i in (0..3 * CHUNK).step_by(CHUNK / 2) {
            assert_eq!(b.swap_remove(i), model_b.swap_remove(i));
        }
        for _ in 0..CHUNK + 3 {
            b.push(vec![1]);
            model_b.push(vec![1]);
        }
        for (v, model) in [(&a, &model_a), (&b, &model_b)] {
            assert_eq!(v.len(), model.len());
            assert_eq!(v.iter().cloned().collect::<Vec<_>>(), *model);
            assert!((0..v.len()).all(|i| v[i] == model[i]));
        }
        // Down to nothing and back.
        let mut c = b.clone();
        while c.len() > 0 {
            c.swap_remove(0);
        }
        c.push(vec![5]);
        assert_eq!(c.iter().cloned().collect::<Vec<_>>(), [vec![5]]);
        assert_eq!(b.iter().cloned().collect::<Vec<_>>(), model_b);
    }
}
