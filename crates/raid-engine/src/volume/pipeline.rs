//! Queued I/O: several requests in flight, one writer thread per member.
//!
//! [`Volume::write_at`] and [`Volume::read_at`] return when their member
//! I/O is done: every request forks to the member threads and joins them,
//! and callers on several threads write the same member files at once. A
//! [`Pipeline`] instead keeps a submission queue per member, served by one
//! thread per member (or per group of members), as md and hardware RAID
//! queue per device: a request is split into member pieces that are queued,
//! and it is complete when its pieces are. A caller keeps several requests
//! in flight ([`Pipeline::write`] / [`Pipeline::read`] return a [`Pending`]
//! to [`Pending::wait`] on), or callers on several threads share one
//! pipeline; either way every member file has exactly one writer and the
//! member threads go from one piece to the next without a join between
//! requests.
//!
//! The buffers are owned ([`Bytes`] to write, [`BytesMut`] to read into),
//! since the member threads outlive the call; a read buffer is split into
//! the pieces' parts and joined back in place, without copies.
//! [`aligned_buffer`] makes a page-aligned one, which `O_DIRECT` members
//! take without a bounce copy.
//!
//! What the volume guarantees holds here too: a write's write-intent bits
//! are set and persisted before it is queued; members that fail are marked
//! failed and the write counts if a copy of each piece landed; a rebuild,
//! resync or scrub step waits until every queued request is complete (see
//! `Volume::exclusive`); [`Pipeline::flush`] makes durable every write
//! whose [`Pending::wait`] returned before it was called. Only the
//! non-parity levels without encryption are queued (linear, RAID0, RAID1,
//! RAID10): RAID4/5/6 writes lock stripes and read-modify-write, encrypted
//! data is copied to be encrypted, and a write whose alignment the members
//! cannot take is merged into an aligned copy, so those requests run as
//! [`Volume::write_at`] / [`Volume::read_at`] on the calling thread (the
//! returned [`Pending`] is already complete). A queued read whose member
//! fails is read again that way, from the other copies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub use bytes::{Bytes, BytesMut};

use super::{DIRECT_ALIGN, EngineError, MAX_WORKERS, PARALLEL_BYTES, Result, SECTOR, Volume};

/// A zeroed buffer of `len` bytes whose start is page-aligned (4 KiB), to
/// read into or to fill and [`BytesMut::freeze`] for a write.
pub fn aligned_buffer(len: usize) -> BytesMut {
    let mut b = BytesMut::zeroed(len + DIRECT_ALIGN);
    let pad = b.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    let mut out = b.split_off(pad);
    out.truncate(len);
    out
}

/// A submitted request; [`Pending::wait`] returns its result. Dropping it
/// does not cancel the request: the member threads complete it anyway.
#[must_use = "a request's errors are only seen through `wait`"]
pub struct Pending<T> {
    inner: PendingInner<T>,
}

enum PendingInner<T> {
    Done(Result<T>),
    Queued {
        req: Arc<Request>,
        spin: u32,
        vol: Arc<Volume>,
        offset: u64,
        wrap: fn(Option<BytesMut>) -> T,
    },
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = matches!(self.inner, PendingInner::Queued { .. });
        f.debug_struct("Pending").field("queued", &queued).finish()
    }
}

impl<T> Pending<T> {
    /// Wait until the request is complete and return its result: `()` for
    /// a write (done on every writable copy, or an error if a piece has no
    /// copy written), the filled buffer for a read.
    pub fn wait(self) -> Result<T> {
        let (req, spin, vol, offset, wrap) = match self.inner {
            PendingInner::Done(r) => return r,
            PendingInner::Queued {
                req,
                spin,
                vol,
                offset,
                wrap,
            } => (req, spin, vol, offset, wrap),
        };
        for _ in 0..spin {
            if req.remaining.load(Ordering::Acquire) == 0 {
                break;
            }
            std::thread::yield_now();
        }
        let mut st = req.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.result.is_none() {
            st.waiting = true;
            st = req.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let result = st.result.take().unwrap_or(Ok(()));
        let buf = st.joined.take();
        let retry = st.retry_read;
        drop(st);
        result?;
        match buf {
            Some(mut buf) if retry => {
                // A member failed under a piece: the volume's own read
                // takes the other copies (or reconstructs), as it would
                // have from the start.
                vol.read_at(&mut buf, offset)?;
                Ok(wrap(Some(buf)))
            }
            buf => Ok(wrap(buf)),
        }
    }
}

/// One request's bookkeeping, shared by its pieces.
struct Request {
    /// Pieces not yet done; the member thread that takes it to zero
    /// completes the request.
    remaining: AtomicUsize,
    state: Mutex<ReqState>,
    done: Condvar,
}

#[derive(Default)]
struct ReqState {
    /// Write: which logical pieces (logical sector, sectors) have a copy
    /// written. Read: unused.
    ok: Vec<bool>,
    spans: Vec<(u64, u64)>,
    /// Member errors: (member, error).
    failures: Vec<(usize, std::io::Error)>,
    /// Write-intent regions to end when complete.
    regions: Vec<usize>,
    /// Read: the buffer's parts, in order, and what was left after them.
    parts: Vec<Option<BytesMut>>,
    rest: Option<BytesMut>,
    joined: Option<BytesMut>,
    retry_read: bool,
    /// The caller is blocked on `done`.
    waiting: bool,
    result: Option<Result<()>>,
}

enum Work {
    Write { data: Bytes, offset: u64 },
    Read { buf: BytesMut, offset: u64 },
}

struct Job {
    member: usize,
    piece: usize,
    work: Work,
    req: Arc<Request>,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// The member thread is blocked on `ready` (a submitter wakes it only
    /// then: a wake-up is a system call, and on a VM an interrupt).
    sleeping: bool,
    stop: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct Shared {
    vol: Arc<Volume>,
    queues: Vec<Queue>,
    /// Times a member thread with an empty queue, or a caller in
    /// [`Pending::wait`], yields its core before it blocks.
    spin_yields: std::sync::atomic::AtomicU32,
}

/// Queued I/O on a volume: one submission queue and one thread per member
/// (or per group of members), several requests in flight. See the
/// [module documentation](self).
///
/// Dropping the pipeline completes every queued request and stops its
/// threads; drop it (or wait for every request) before
/// [`Volume::close`], which records a clean shutdown.
pub struct Pipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Pipeline {
    /// A pipeline with one member thread per member (up to 32; beyond,
    /// members share threads).
    pub fn new(vol: Arc<Volume>) -> Result<Pipeline> {
        let n = vol.members();
        Pipeline::with_threads(vol, n)
    }

    /// A pipeline with `threads` member threads (at least 1, at most one
    /// per member and 32); thread `t` serves members `t`, `t + threads`, …
    /// in the order their pieces were queued.
    pub fn with_threads(vol: Arc<Volume>, threads: usize) -> Result<Pipeline> {
        let threads = threads.clamp(1, vol.members().clamp(1, MAX_WORKERS));
        let shared = Arc::new(Shared {
            vol,
            queues: (0..threads).map(|_| Queue::default()).collect(),
            spin_yields: std::sync::atomic::AtomicU32::new(0),
        });
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("raid-engine-q{t}"))
                .spawn(move || serve(&s, t));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // The threads started so far end with the pipeline.
                    drop(Pipeline {
                        shared,
                        threads: handles,
                    });
                    return Err(EngineError::Io {
                        what: format!("starting pipeline member thread {t}"),
                        source: e,
                    });
                }
            }
        }
        Ok(Pipeline {
            shared,
            threads: handles,
        })
    }

    /// How many times a member thread whose queue is empty, and a caller
    /// in [`Pending::wait`] whose request is not complete, yield their core
    /// (`sched_yield`, letting the other threads run) and look again before
    /// they block; a thread that is not blocked needs no wake-up. 0 (the
    /// default) blocks at once.
    pub fn set_spin_yields(&self, n: u32) {
        self.shared.spin_yields.store(n, Ordering::Relaxed);
    }

    /// The volume.
    pub fn volume(&self) -> &Arc<Volume> {
        &self.shared.vol
    }

    /// Make durable every write whose [`Pending::wait`] returned before
    /// this call ([`Volume::flush`]; writes still queued may or may not be).
    pub fn flush(&self) -> Result<()> {
        self.shared.vol.flush()
    }

    fn queue_of(&self, member: usize) -> &Queue {
        &self.shared.queues[member % self.shared.queues.len()]
    }

    /// Queue a write of `data` at byte `offset`. Errors that the volume
    /// finds before any byte is written (range, no writable copy, the
    /// bitmap not persisted) come back here; member errors from
    /// [`Pending::wait`].
    pub fn write(&self, data: Bytes, offset: u64) -> Result<Pending<()>> {
        let vol = &self.shared.vol;
        vol.check_io(data.len(), offset)?;
        let end = offset + data.len() as u64;
        let fits = |a: u64| offset.is_multiple_of(a) && end.is_multiple_of(a);
        let want = vol.member_alignment();
        let addr_fits = |a: u64| (data.as_ptr() as usize).is_multiple_of(a as usize);
        let queueable = !data.is_empty()
            && !vol.is_parity()
            && vol.cipher.is_none()
            && fits(SECTOR)
            && (want == SECTOR || fits(want) && addr_fits(want));
        if !queueable {
            return Ok(done(vol.write_at(&data, offset)));
        }
        let _g = vol.gate.read().unwrap_or_else(|p| p.into_inner());
        let start = offset / SECTOR;
        let pieces = vol.pieces(start, end / SECTOR, false)?;
        let mut jobs = Vec::with_capacity(pieces.len() * 2);
        let mut off = 0usize;
        for (i, p) in pieces.iter().enumerate() {
            let len = (p.sectors * SECTOR) as usize;
            let before = jobs.len();
            for c in &p.copies {
                if vol.is_writable(c.member) {
                    jobs.push((
                        c.member,
                        i,
                        Work::Write {
                            data: data.slice(off..off + len),
                            offset: vol.member_off(c.sector),
                        },
                    ));
                }
            }
            if jobs.len() == before {
                return Err(EngineError::Unavailable(format!(
                    "logical sector {} has no writable copy",
                    p.logical
                )));
            }
            off += len;
        }
        let regions = vol.begin_intent(vol.regions_for(&pieces))?;
        let state = ReqState {
            ok: vec![false; pieces.len()],
            spans: pieces.iter().map(|p| (p.logical, p.sectors)).collect(),
            regions,
            ..ReqState::default()
        };
        let req = self.enqueue(jobs, state);
        Ok(Pending {
            inner: PendingInner::Queued {
                req,
                spin: self.shared.spin_yields.load(Ordering::Relaxed),
                vol: vol.clone(),
                offset,
                wrap: |_| (),
            },
        })
    }

    /// Queue a read of `buf.len()` bytes at byte `offset` into `buf`;
    /// [`Pending::wait`] gives the buffer back filled.
    pub fn read(&self, mut buf: BytesMut, offset: u64) -> Result<Pending<BytesMut>> {
        let vol = &self.shared.vol;
        vol.check_io(buf.len(), offset)?;
        let len = buf.len() as u64;
        let queueable = len > 0
            && !vol.is_parity()
            && vol.cipher.is_none()
            && offset.is_multiple_of(SECTOR)
            && len.is_multiple_of(SECTOR);
        if !queueable {
            return Ok(done(vol.read_at(&mut buf, offset).map(|()| buf)));
        }
        let g = vol.gate.read().unwrap_or_else(|p| p.into_inner());
        let start = offset / SECTOR;
        let mut pieces = vol.pieces(start, start + len / SECTOR, true)?;
        if len >= PARALLEL_BYTES as u64 {
            pieces = vol.split_near_copies(pieces);
        }
        let mut choices = Vec::with_capacity(pieces.len());
        for p in &pieces {
            match vol
                .read_order(p)
                .into_iter()
                .find(|l| vol.readable(l.member, l.sector + p.sectors))
            {
                Some(l) => choices.push(l),
                None => {
                    // No copy to queue on: the volume's read reports it
                    // (or reconstructs, for the levels that can).
                    drop(g);
                    return Ok(done(vol.read_at(&mut buf, offset).map(|()| buf)));
                }
            }
        }
        let mut jobs = Vec::with_capacity(pieces.len());
        for (i, (p, l)) in pieces.iter().zip(choices).enumerate() {
            let part = buf.split_to((p.sectors * SECTOR) as usize);
            jobs.push((
                l.member,
                i,
                Work::Read {
                    buf: part,
                    offset: vol.member_off(l.sector),
                },
            ));
        }
        let state = ReqState {
            parts: (0..pieces.len()).map(|_| None).collect(),
            rest: Some(buf),
            ..ReqState::default()
        };
        let req = self.enqueue(jobs, state);
        Ok(Pending {
            inner: PendingInner::Queued {
                req,
                spin: self.shared.spin_yields.load(Ordering::Relaxed),
                vol: vol.clone(),
                offset,
                wrap: |b| b.unwrap_or_default(),
            },
        })
    }

    /// Count the request in (under the caller's shared gate) and queue its
    /// pieces, each member's in one go.
    fn enqueue(&self, jobs: Vec<(usize, usize, Work)>, state: ReqState) -> Arc<Request> {
        let req = Arc::new(Request {
            remaining: AtomicUsize::new(jobs.len()),
            state: Mutex::new(state),
            done: Condvar::new(),
        });
        self.shared.vol.queued_begin();
        let nq = self.shared.queues.len();
        let mut by_queue: Vec<Vec<Job>> = (0..nq).map(|_| Vec::new()).collect();
        for (member, piece, work) in jobs {
            by_queue[member % nq].push(Job {
                member,
                piece,
                work,
                req: req.clone(),
            });
        }
        for (q, jobs) in by_queue.into_iter().enumerate() {
            if jobs.is_empty() {
                continue;
            }
            let queue = self.queue_of(q);
            let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
            st.jobs.extend(jobs);
            let wake = st.sleeping;
            drop(st);
            if wake {
                queue.ready.notify_one();
            }
        }
        req
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for q in &self.shared.queues {
            q.state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            q.ready.notify_all();
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn done<T>(r: Result<T>) -> Pending<T> {
    Pending {
        inner: PendingInner::Done(r),
    }
}

/// A member thread: take every piece queued for its members, in order, do
/// it, and complete the requests whose last piece it did; until the
/// pipeline stops and the queue is empty.
fn serve(shared: &Shared, t: usize) {
    let queue = &shared.queues[t];
    let mut batch = VecDeque::new();
    let mut idle = 0;
    loop {
        {
            let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.jobs.is_empty() {
                if st.stop {
                    return;
                }
                if idle < shared.spin_yields.load(Ordering::Relaxed) {
                    drop(st);
                    idle += 1;
                    std::thread::yield_now();
                } else {
                    st.sleeping = true;
                    st = queue.ready.wait(st).unwrap_or_else(|p| p.into_inner());
                    st.sleeping = false;
                }
                continue;
            }
            std::mem::swap(&mut batch, &mut st.jobs);
        }
        idle = 0;
        for job in batch.drain(..) {
            run(&shared.vol, job);
        }
    }
}

fn run(vol: &Volume, job: Job) {
    let Job {
        member,
        piece,
        work,
        req,
    } = job;
    match work {
        Work::Write { data, offset } => {
            let r = vol.member_write(member, &data, offset);
            let mut st = req.state.lock().unwrap_or_else(|p| p.into_inner());
            match r {
                Ok(()) => st.ok[piece] = true,
                Err(e) => st.failures.push((member, e)),
            }
        }
        Work::Read { mut buf, offset } => {
            let r = vol.member_read(member, &mut buf, offset);
            let mut st = req.state.lock().unwrap_or_else(|p| p.into_inner());
            st.parts[piece] = Some(buf);
            if let Err(e) = r {
                st.failures.push((member, e));
            }
        }
    }
    if req.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        complete(vol, &req);
    }
}

/// The last piece of `req` is done: fail the members that erred, end the
/// write-intent regions, join a read's buffer, and wake the waiter.
fn complete(vol: &Volume, req: &Request) {
    let mut st = req.state.lock().unwrap_or_else(|p| p.into_inner());
    let failures = std::mem::take(&mut st.failures);
    let failed = !failures.is_empty();
    for (member, e) in failures {
        let what = if st.parts.is_empty() { "write" } else { "read" };
        vol.mark_failed(member, &format!("{what} error: {e}"));
    }
    if let Some(bm) = &vol.bitmap {
        bm.end(&st.regions);
    }
    let mut result = if failed {
        vol.write_superblocks(false)
    } else {
        Ok(())
    };
    if st.parts.is_empty() {
        if let Some(i) = st.ok.iter().position(|&o| !o)
            && result.is_ok()
        {
            let (logical, sectors) = st.spans[i];
            result = Err(EngineError::Unavailable(format!(
                "logical sectors {logical}..{}: every copy failed to write",
                logical + sectors
            )));
        }
    } else {
        let mut parts = std::mem::take(&mut st.parts).into_iter().flatten();
        let mut whole = parts.next().unwrap_or_default();
        for p in parts.chain(st.rest.take()) {
            whole.unsplit(p);
        }
        st.joined = Some(whole);
        st.retry_read = failed;
    }
    vol.queued_end();
    st.result = Some(result);
    let wake = st.waiting;
    drop(st);
    if wake {
        req.done.notify_all();
    }
}
