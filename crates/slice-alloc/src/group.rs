//! Group commit: an [`Allocator`] shared by many threads, whose changes are appended to a
//! journal and made durable in batches, one `sync` for every change that arrived while the
//! previous batch was being written.
//!
//! The crate does no I/O itself: the journal goes to a [`JournalSink`] you pass (a file whose
//! `sync` is `File::sync_data`, in production). No runtime, no threads of its own: the callers'
//! threads do the work. The first caller that finds no batch in flight becomes the *leader*: it
//! takes every record appended so far, writes and syncs them outside the lock, then wakes the
//! callers whose records are now durable. Callers that arrive meanwhile append their records
//! for the next batch and wait. So with c concurrent callers a sync covers up to c changes, and
//! a lone caller pays one sync per change, as with [`Journaled`](crate::Journaled).

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::journal::{JOURNAL_HEADER, Recovered, Snapshot, encode_record};
use crate::tx::{Tx, Undo, journaled_methods, undo_all};
use crate::{Allocator, Constraints, DeviceId, DeviceSpec, Error, Reservation, Slice, SliceId};

/// Where a [`GroupCommit`] journal goes: an append-only byte stream that can be made durable.
///
/// # Contract
/// `write_all` appends the bytes after everything written before (or fails); `sync` returns
/// only once every byte appended so far is durable (for a file: `File::sync_data`, i.e.
/// `fdatasync`). A change is acknowledged only after the `sync` that covers its record
/// returned `Ok`.
///
/// ```
/// use std::fs::File;
/// use std::io::{self, Write};
/// use slice_alloc::JournalSink;
///
/// /// A journal file: appends, then `fdatasync`.
/// struct FileSink(File);
///
/// impl JournalSink for FileSink {
///     fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
///         self.0.write_all(buf)
///     }
///     fn sync(&mut self) -> io::Result<()> {
///         self.0.sync_data()
///     }
/// }
/// ```
pub trait JournalSink: Send {
    /// Appends `buf`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// An in-memory journal (for tests and examples): `sync` does nothing.
impl JournalSink for Vec<u8> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.extend_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counters of a [`GroupCommit`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Batches written and synced.
    pub batches: u64,
    /// Records made durable by them.
    pub records: u64,
}

#[derive(Debug)]
struct State {
    alloc: Allocator,
    /// Sequence number of the last record appended (durable or not).
    last_seq: u64,
    /// Sequence number of the last durable record.
    durable_seq: u64,
    /// Encoded frames appended since the batch in flight was taken.
    pending: Vec<u8>,
    /// The buffer of the previous batch, reused for the next.
    spare: Vec<u8>,
    /// Undo steps of every change not yet durable, with the last sequence number of its records.
    undo: Vec<(u64, Vec<Undo>)>,
    /// Whether a leader is writing a batch.
    flushing: bool,
    /// Set when a batch failed, until [`GroupCommit::condense`]: changes are refused.
    poisoned: bool,
    /// How many batches failed: a waiter whose change was appended in an earlier generation
    /// lost it.
    generation: u64,
    /// The last batch failure, told to the callers whose changes it undid.
    failure: Option<(io::ErrorKind, String)>,
    journal_len: u64,
    threshold: u64,
    stats: GroupStats,
}

/// An [`Allocator`] shared by threads (`&self` methods, `Sync`), journaled with group commit.
/// Every change method returns once its record is durable (or with an error, having changed
/// nothing).
///
/// Each change is applied in memory and its frame appended under one lock. The first caller
/// that finds no batch in flight becomes the *leader*: it takes every frame appended so far,
/// writes and syncs them through the [`JournalSink`] outside the lock, then wakes the callers
/// whose records are now durable. Callers that arrive meanwhile append for the next batch and
/// wait. So with c concurrent callers a sync covers up to c changes, and a lone caller pays one
/// sync per change, as with [`Journaled`](crate::Journaled). No thread or runtime of its own:
/// the callers' threads do the work.
///
/// Changes are applied in memory when they are made, so a change made while an earlier one
/// is still waiting for its sync can see it (and its record follows the earlier one in the
/// journal). If a batch fails to write or sync, every change not yet durable is undone in
/// memory, its caller gets [`Error::JournalWrite`], and later changes get
/// [`Error::JournalPoisoned`] until [`condense`](Self::condense) starts a new journal (after a
/// failed `fsync` the kernel may have dropped the written pages, so the old journal can no
/// longer be trusted to end cleanly). Whether a failed change reached the disk is unknown until
/// recovery reads the journal back.
///
/// ```
/// use std::sync::Arc;
/// use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GroupCommit, GIB, recover};
///
/// let g = Arc::new(GroupCommit::create(Allocator::new(AllocatorConfig::default())?, Vec::new(), 0, 64 << 20)?);
/// g.add_device(DeviceSpec::new(DeviceId::new(1), 1000 * GIB)?)?;
/// let threads: Vec<_> = (0..8)
///     .map(|_| {
///         let g = Arc::clone(&g);
///         std::thread::spawn(move || g.allocate(10 * GIB, &Constraints::any()).map(|s| s.id))
///     })
///     .collect();
/// for t in threads {
///     t.join().expect("no panic")?;
/// }
/// // Everything acknowledged is in the journal.
/// let (alloc, journal) = Arc::into_inner(g).expect("threads joined").into_parts();
/// let r = recover(None, &journal, AllocatorConfig::default())?;
/// assert_eq!(r.allocator.slice_count(), 8);
/// assert_eq!(r.allocator.snapshot(0), alloc.snapshot(0));
/// # Ok::<(), slice_alloc::Error>(())
/// ```
#[derive(Debug)]
pub struct GroupCommit<S: JournalSink> {
    state: Mutex<State>,
    wake: Condvar,
    sink: Mutex<S>,
}

/// Locks a mutex; a panic in another thread holding it cannot leave the state half-changed
/// (the allocator's methods change it only after their checks), so the data is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: JournalSink> GroupCommit<S> {
    /// Starts a new journal on `sink` (writes and syncs the header) for `alloc`, whose state is
    /// covered by a snapshot with `last_seq` (0 for a fresh allocator). `threshold` is the
    /// journal size past which [`needs_condense`](Self::needs_condense) says so.
    pub fn create(
        alloc: Allocator,
        mut sink: S,
        last_seq: u64,
        threshold: u64,
    ) -> Result<Self, Error> {
        sink.write_all(&JOURNAL_HEADER)
            .and_then(|()| sink.sync())
            .map_err(Error::JournalWrite)?;
        Ok(Self::with_state(
            alloc,
            sink,
            last_seq,
            JOURNAL_HEADER.len() as u64,
            threshold,
        ))
    }

    /// Continues after [`recover`](crate::recover): `sink` must append to the journal
    /// truncated to `recovered.valid_len` (when that is 0 a header is written first).
    pub fn resume(recovered: Recovered, sink: S, threshold: u64) -> Result<Self, Error> {
        if recovered.valid_len == 0 {
            return Self::create(recovered.allocator, sink, recovered.last_seq, threshold);
        }
        Ok(Self::with_state(
            recovered.allocator,
            sink,
            recovered.last_seq,
            recovered.valid_len as u64,
            threshold,
        ))
    }

    fn with_state(
        alloc: Allocator,
        sink: S,
        last_seq: u64,
        journal_len: u64,
        threshold: u64,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                alloc,
                last_seq,
                durable_seq: last_seq,
                pending: Vec::new(),
                spare: Vec::new(),
                undo: Vec::new(),
                flushing: false,
                poisoned: false,
                generation: 0,
                failure: None,
                journal_len,
                threshold,
                stats: GroupStats::default(),
            }),
            wake: Condvar::new(),
            sink: Mutex::new(sink),
        }
    }

    /// Reads the allocator (reports, lookups) under the lock. It may include changes whose
    /// callers are still waiting for their sync.
    pub fn with_allocator<T>(&self, f: impl FnOnce(&Allocator) -> T) -> T {
        f(&lock(&self.state).alloc)
    }

    /// Sequence number of the last durable record.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.state).durable_seq
    }

    /// Bytes of the current journal that are durable, header included.
    pub fn journal_len(&self) -> u64 {
        lock(&self.state).journal_len
    }

    /// Whether the journal has grown past the condense threshold.
    pub fn needs_condense(&self) -> bool {
        let st = lock(&self.state);
        st.journal_len > st.threshold
    }

    /// Batches and records written so far.
    pub fn stats(&self) -> GroupStats {
        lock(&self.state).stats
    }

    /// A snapshot of the durable state, after waiting for the batch in flight and writing the
    /// pending one. To condense the journal use [`condense`](Self::condense), which keeps other
    /// callers out between the snapshot and the switch to the new journal.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.drain(lock(&self.state));
        st.alloc.snapshot(st.durable_seq)
    }

    /// Condenses the journal, or starts a new one after a write failure: waits for every
    /// pending change, takes the snapshot, hands it to `persist` (which must store it durably
    /// and atomically, e.g. write a temporary file, `fsync`, rename, `fsync` the directory),
    /// then starts a new journal on `sink` and returns the old sink (delete its file). Other
    /// callers wait meanwhile. A crash at any point is safe: the old journal's records are in
    /// the snapshot or still in the old journal. On error the old journal stays in use.
    pub fn condense(
        &self,
        persist: impl FnOnce(&Snapshot) -> io::Result<()>,
        mut sink: S,
    ) -> Result<S, Error> {
        let mut st = self.drain(lock(&self.state));
        let snapshot = st.alloc.snapshot(st.durable_seq);
        persist(&snapshot).map_err(Error::JournalWrite)?;
        sink.write_all(&JOURNAL_HEADER)
            .and_then(|()| sink.sync())
            .map_err(Error::JournalWrite)?;
        let old = std::mem::replace(&mut *lock(&self.sink), sink);
        st.journal_len = JOURNAL_HEADER.len() as u64;
        st.poisoned = false;
        Ok(old)
    }

    /// Splits into the allocator and the sink (pending changes are written first).
    pub fn into_parts(self) -> (Allocator, S) {
        let st = self.drain(lock(&self.state));
        drop(st);
        let st = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        (
            st.alloc,
            self.sink
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Waits until no batch is in flight and nothing is pending (or a batch failed).
    fn drain<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        loop {
            if st.flushing {
                st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            } else if st.pending.is_empty() {
                return st;
            } else {
                st = self.flush(st);
            }
        }
    }

    /// Writes and syncs everything pending as one batch, as the leader. Called with no batch
    /// in flight; the lock is released during the I/O.
    fn flush<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let spare = std::mem::take(&mut st.spare);
        let mut batch = std::mem::replace(&mut st.pending, spare);
        let end = st.last_seq;
        st.flushing = true;
        drop(st);
        let r = {
            let mut sink = lock(&self.sink);
            sink.write_all(&batch).and_then(|()| sink.sync())
        };
        let mut st = lock(&self.state);
        st.flushing = false;
        match r {
            Ok(()) => {
                st.stats.batches += 1;
                st.stats.records += end - st.durable_seq;
                st.durable_seq = end;
                st.journal_len += batch.len() as u64;
                let done = st.undo.partition_point(|(s, _)| *s <= end);
                st.undo.drain(..done);
                batch.clear();
                st.spare = batch;
            }
            Err(e) => {
                tracing::error!(error = %e, "journal batch failed; undoing every change not yet durable");
                // Undo the failed batch and everything appended after it, newest first.
                let undo = std::mem::take(&mut st.undo);
                for (_, steps) in undo.into_iter().rev() {
                    undo_all(&mut st.alloc, steps);
                }
                st.last_seq = st.durable_seq;
                st.pending.clear();
                st.poisoned = true;
                st.generation += 1;
                st.failure = Some((e.kind(), e.to_string()));
            }
        }
        self.wake.notify_all();
        st
    }

    /// Runs one change, then waits until its records are durable (leading a batch when none is
    /// in flight).
    fn run<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let mut st = lock(&self.state);
        if st.poisoned {
            return Err(Error::JournalPoisoned);
        }
        let st_ref = &mut *st;
        let seq = crate::journal::next_seq(st_ref.last_seq)?;
        let (v, journal) = Tx::change(&mut st_ref.alloc, f)?;
        let Some((record, undo)) = journal else {
            return Ok(v);
        };
        let start = st_ref.pending.len();
        encode_record(seq, &record, &mut st_ref.pending);
        if let Err(e) = crate::journal::check_frame(&st_ref.pending[start..]) {
            st_ref.pending.truncate(start);
            undo_all(&mut st_ref.alloc, undo);
            return Err(e);
        }
        st_ref.last_seq = seq;
        let (mine, generation) = (st_ref.last_seq, st_ref.generation);
        st_ref.undo.push((mine, undo));
        loop {
            if st.generation != generation {
                let (kind, msg) = st
                    .failure
                    .clone()
                    .unwrap_or((io::ErrorKind::Other, String::new()));
                return Err(Error::JournalWrite(io::Error::new(kind, msg)));
            }
            if st.durable_seq >= mine {
                return Ok(v);
            }
            st = if st.flushing {
                self.wake.wait(st).unwrap_or_else(PoisonError::into_inner)
            } else {
                self.flush(st)
            };
        }
    }

    journaled_methods!();
}
