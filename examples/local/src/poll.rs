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

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
    /// documentation; 2 ms measured well on a guest without a polling idle
    /// state: longer than a quick call plus a client's pause between two
    /// calls, short enough that a driver called now and then spends next to
    /// nothing). `None` when the thread cannot run at idle priority
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

/// The CPU limit (a CFS quota) that the driver's cgroup, or one above it,
/// sets, described for a log line; `None` without one, or where the
/// cgroup file systems cannot be read. The idle poller's spinning runs at
/// idle priority but still counts against a quota: under a limit, as node
/// plugins often run, it would get the driver throttled, and the binary
/// warns when `--idle-poll` turns the poller on where this finds one.
pub fn cpu_limit() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cpu_limit_in(&cgroups, &mounts, |p| std::fs::read_to_string(p).ok())
}

/// [`cpu_limit`] over the text of `/proc/self/cgroup` and
/// `/proc/self/mountinfo`, reading the cgroup files with `read`.
fn cpu_limit_in(
    cgroups: &str,
    mounts: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<String> {
    for line in cgroups.lines() {
        // `ID:CONTROLLERS:PATH`; an empty list of controllers is cgroup v2.
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "cpu") {
            continue;
        }
        let Some((mount_root, mount_point)) = cgroup_mount(mounts, v2) else {
            continue;
        };
        // The cgroup's directory, then each one above it up to the mount.
        let below = path.strip_prefix(mount_root).unwrap_or(path);
        let mut dir = mount_point.join(below.trim_start_matches('/'));
        loop {
            let limit = if v2 {
                read(&dir.join("cpu.max")).and_then(|s| v2_quota(&s))
            } else {
                read(&dir.join("cpu.cfs_quota_us")).and_then(|q| {
                    let period = read(&dir.join("cpu.cfs_period_us"));
                    v1_quota(&q, period.as_deref())
                })
            };
            if let Some(limit) = limit {
                return Some(format!("{limit} (cgroup {})", dir.display()));
            }
            if dir == mount_point || !dir.pop() {
                break;
            }
        }
    }
    None
}

/// The root and mount point of the cgroup v2 hierarchy (`v2`) or of the v1
/// hierarchy with the `cpu` controller, from `/proc/self/mountinfo`.
fn cgroup_mount(mounts: &str, v2: bool) -> Option<(&str, &Path)> {
    mounts.lines().find_map(|line| {
        // `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [TAGS] - FSTYPE SOURCE SUPER_OPTIONS`
        let (left, right) = line.split_once(" - ")?;
        let mut left = left.split(' ');
        let (root, point) = (left.nth(3)?, left.next()?);
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let found = if v2 {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup" && right.nth(1)?.split(',').any(|o| o == "cpu")
        };
        found.then_some((root, Path::new(point)))
    })
}

/// `cpu.max` (`QUOTA PERIOD`, or `max PERIOD` without a limit).
fn v2_quota(cpu_max: &str) -> Option<String> {
    let mut fields = cpu_max.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period = fields.next().unwrap_or("100000");
    Some(format!("{quota} µs of CPU every {period} µs"))
}

/// `cpu.cfs_quota_us` (-1 without a limit) and `cpu.cfs_period_us`.
fn v1_quota(quota: &str, period: Option<&str>) -> Option<String> {
    let quota: u64 = quota.trim().parse().ok()?;
    let period = period.map_or("100000", str::trim);
    Some(format!("{quota} µs of CPU every {period} µs"))
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

    const V1_MOUNTS: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
40 31 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const V2_MOUNTS: &str = "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";

    fn files<'a>(files: &'a [(&'a str, &'a str)]) -> impl Fn(&Path) -> Option<String> + 'a {
        move |p| {
            files
                .iter()
                .find(|(name, _)| Path::new(name) == p)
                .map(|(_, text)| text.to_string())
        }
    }

    #[test]
    fn a_cpu_limit_is_found_in_the_cgroup_or_above_it() {
        // cgroup v2: the container's own limit, and one set on the pod above it.
        let cgroups = "0::/kubepods/pod1/ctr\n";
        let own = [("/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "50000 100000\n")];
        let limit = cpu_limit_in(cgroups, V2_MOUNTS, files(&own)).expect("own limit");
        assert!(
            limit.starts_with("50000 µs of CPU every 100000 µs"),
            "{limit}"
        );
        let above = [
            ("/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/kubepods/pod1/cpu.max", "20000 100000\n"),
        ];
        let limit = cpu_limit_in(cgroups, V2_MOUNTS, files(&above)).expect("the pod's limit");
        assert!(limit.contains("/sys/fs/cgroup/kubepods/pod1)"), "{limit}");
        // cgroup v1 (hybrid, as on this project's machines), quota on the cgroup.
        let cgroups = "9:name=systemd:/\n2:cpuacct:/\n1:cpu:/job\n0::/\n";
        let v1 = [
            ("/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "150000\n"),
            ("/sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "100000\n"),
        ];
        let limit = cpu_limit_in(cgroups, V1_MOUNTS, files(&v1)).expect("v1 limit");
        assert!(
            limit.starts_with("150000 µs of CPU every 100000 µs"),
            "{limit}"
        );
    }

    #[test]
    fn no_cpu_limit_without_a_quota_or_a_readable_cgroup() {
        let none = [
            ("/sys/fs/cgroup/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
        ];
        assert_eq!(cpu_limit_in("0::/\n", V2_MOUNTS, files(&none)), None);
        assert_eq!(
            cpu_limit_in("1:cpu:/\n0::/\n", V1_MOUNTS, files(&none)),
            None
        );
        // Nothing readable, or no cgroup file system mounted.
        assert_eq!(cpu_limit_in("0::/a\n", V2_MOUNTS, files(&[])), None);
        assert_eq!(cpu_limit_in("0::/a\n", "", files(&none)), None);
        assert_eq!(cpu_limit_in("garbage\n", V2_MOUNTS, files(&none)), None);
    }
}
