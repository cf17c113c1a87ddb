//! The idle poller: one thread at idle priority that keeps the processor
//! serving calls from halting between calls that follow each other
//! closely, so that the next request, and the completion of the journal's
//! durable write, find it running.
//!
//! Why: on a virtual machine whose guest has no polling idle state (the
//! machine these figures come from has the cpuidle driver `none`, so an
//! idle vCPU executes `HLT` and leaves the guest), every wait of a call
//! lets a processor halt: for the request, for the journal write and for
//! its cache flush, and on the client's side for the answer; one client's
//! cycle of two calls halted a processor about twelve times. Each halt
//! costs a wakeup (a few microseconds seen from the guest) and, more, a
//! slower start after it: the driver's own work took a sixth more processor
//! time per cycle when its processor halted between calls than when it did
//! not (the README's throughput section has the measures). The kernel's
//! remedy is its `haltpoll` idle driver, which polls a while before
//! halting; where the machine does not use it, this thread does the same
//! for the driver's processor: while calls have arrived within the last
//! window, it stays runnable at `SCHED_IDLE` priority, so the processor
//! does not halt between them, and any other thread that wakes there takes
//! the processor at once (an idle-priority thread is preempted on every
//! wakeup, and the scheduler places a woken thread on a processor running
//! only idle-priority threads as on an idle one). It follows the processor
//! that received the last call. Once no call has arrived for the window it
//! sleeps, so an idle driver uses no processor time.
//!
//! Its cost is processor time that would otherwise be idle: under load,
//! up to one processor's idle time; after the last call, the window.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long after a call's arrival the poller keeps spinning by default:
/// longer than a call of the quick kind takes plus a client's pause
/// between two calls, short enough that a driver called now and then
/// spends next to nothing.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(2);

/// The processor to follow is re-read at most this often, so that calls
/// served on two processors in turn do not move the poller on every call.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(1);

/// How often a sleeping poller looks whether anything is left to call it.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// `Shared::last_ns` before the first call.
const NEVER: u64 = u64::MAX;

/// What the serving threads and the poller share.
#[derive(Debug)]
struct Shared {
    base: Instant,
    window_ns: u64,
    /// Nanoseconds since `base` of the last call's arrival.
    last_ns: AtomicU64,
    /// The processor that received the last call.
    cpu: AtomicUsize,
    /// The poller is asleep (or about to sleep) on `wake`.
    parked: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn active(&self) -> bool {
        let last = self.last_ns.load(Ordering::SeqCst);
        last != NEVER && self.now_ns().saturating_sub(last) < self.window_ns
    }

    /// A call arrived on this thread's processor.
    fn touch(&self) {
        self.last_ns.store(self.now_ns(), Ordering::SeqCst);
        self.cpu
            .store(rustix::thread::sched_getcpu(), Ordering::Relaxed);
        // Stored before looking, as the poller sets `parked` before it
        // looks at `last_ns`: one of the two sees the other's write.
        if self.parked.load(Ordering::SeqCst) {
            let _guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
    }
}

/// The poller's handle: cheap to clone; [`IdlePoller::layer`] gives the
/// tower layer that tells it of each call.
#[derive(Clone, Debug)]
pub struct IdlePoller {
    shared: Arc<Shared>,
}

impl IdlePoller {
    /// Starts the poller thread with this window (see the module
    /// documentation). `None` when the thread cannot run at idle priority
    /// (a spinning thread at normal priority would take the processor
    /// from the threads it is meant to serve) or cannot be started; the
    /// reason is logged.
    pub fn start(window: Duration) -> Option<IdlePoller> {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            last_ns: AtomicU64::new(NEVER),
            cpu: AtomicUsize::new(rustix::thread::sched_getcpu()),
            parked: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("idle-poller".into())
            .spawn(move || {
                let idle = thread_priority::set_thread_priority_and_policy(
                    thread_priority::thread_native_id(),
                    thread_priority::ThreadPriority::Min,
                    thread_priority::ThreadSchedulePolicy::Normal(
                        thread_priority::NormalThreadSchedulePolicy::Idle,
                    ),
                );
                let ok = idle.is_ok();
                let _ = ready_tx.send(idle.map_err(|e| format!("{e:?}")));
                if ok {
                    run(thread_shared);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "the idle poller could not start; serving without it");
            return None;
        }
        match ready_rx.recv() {
            Ok(Ok(())) => Some(IdlePoller { shared }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the idle poller cannot run at idle priority (SCHED_IDLE); serving without it");
                None
            }
            Err(_) => None,
        }
    }

    /// The layer that tells the poller of each call (a store of the time
    /// and the processor; a wakeup only when the poller sleeps).
    pub fn layer(&self) -> TouchLayer {
        TouchLayer(Arc::clone(&self.shared))
    }
}

/// The poller thread: spins while calls arrive, on the processor of the
/// last one, and sleeps when none has arrived for the window. It ends once
/// no handle or layer is left to call it.
fn run(shared: Arc<Shared>) {
    let mut pinned = usize::MAX;
    let mut followed = Instant::now()
        .checked_sub(FOLLOW_INTERVAL)
        .unwrap_or_else(Instant::now);
    loop {
        while shared.active() {
            let cpu = shared.cpu.load(Ordering::Relaxed);
            if cpu != pinned && followed.elapsed() >= FOLLOW_INTERVAL {
                followed = Instant::now();
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                if rustix::thread::sched_setaffinity(None, &set).is_ok() {
                    pinned = cpu;
                }
            }
            // No `spin_loop` hint: a PAUSE loop may make the hypervisor
            // take the vCPU away (pause-loop exiting), the very exit this
            // thread is here to avoid. Reading the clock is the wait.
        }
        let guard = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
        shared.parked.store(true, Ordering::SeqCst);
        if !shared.active() {
            // A call arriving from here on finds `parked` and wakes this
            // thread; one that arrived just before is seen by `active`.
            drop(
                shared
                    .wake
                    .wait_timeout(guard, IDLE_CHECK)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        } else {
            drop(guard);
        }
        shared.parked.store(false, Ordering::SeqCst);
        if Arc::strong_count(&shared) == 1 {
            return;
        }
    }
}

/// A tower layer that tells the [`IdlePoller`] of each call.
#[derive(Clone, Debug)]
pub struct TouchLayer(Arc<Shared>);

impl<S> tower::Layer<S> for TouchLayer {
    type Service = Touch<S>;
    fn layer(&self, inner: S) -> Touch<S> {
        Touch {
            inner,
            shared: Arc::clone(&self.0),
        }
    }
}

/// See [`TouchLayer`].
#[derive(Clone, Debug)]
pub struct Touch<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, R> tower::Service<R> for Touch<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.shared.touch();
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to 10 s for `f` (the poller runs at idle priority, so on a
    /// busy machine it may wait a while for a processor).
    fn eventually(f: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// The poller sleeps until a call arrives, spins after it, sleeps again
    /// once the window has passed with no call, and a call wakes it.
    #[test]
    fn the_poller_spins_after_a_call_and_sleeps_when_calls_stop() {
        let Some(poller) = IdlePoller::start(Duration::from_millis(20)) else {
            // Only a sandbox refusing SCHED_IDLE (seccomp) stops it.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the idle poller could not start"
            );
            return;
        };
        let shared = &poller.shared;
        assert!(!shared.active(), "no call yet");
        assert!(
            eventually(|| shared.parked.load(Ordering::SeqCst)),
            "asleep before any call"
        );
        shared.touch();
        assert!(shared.active());
        assert!(
            eventually(|| !shared.parked.load(Ordering::SeqCst)),
            "woken by a call"
        );
        assert!(eventually(|| !shared.active()), "the window ends");
        assert!(
            eventually(|| shared.parked.load(Ordering::SeqCst)),
            "asleep after the window"
        );
    }
}
