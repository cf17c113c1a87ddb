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
//! does not halt between them. It follows the processor that received the
//! last call. Once no call has arrived for the window it sleeps, so an
//! idle driver uses no processor time.
//!
//! It must never keep a thread that has work from running. A thread that
//! *wakes* on its processor preempts it at once (and the scheduler places
//! a woken thread on a processor running only idle-priority threads as on
//! an idle one), but `SCHED_IDLE` is only a very low weight, not a strict
//! priority: a thread already *queued* on that processor (woken there by a
//! client running on it, say, which then sleeps) may be passed over in
//! favour of the poller for the rest of its slice, a millisecond or two.
//! So the poller yields the processor ([`rustix::thread::sched_yield`])
//! as it spins, and a queued thread runs at once; with a runqueue of one,
//! the yield returns at once.
//!
//! It spins only while calls come one at a time. Once two calls are in
//! flight together the processors have work of their own between calls,
//! and a spinning thread only competes with the clients sharing the
//! machine (64 concurrent clients lost throughput with a poller that spun
//! whenever calls arrived); from a call that found another in flight until
//! [`CROWD_HOLD_WINDOWS`] windows later the poller sleeps, and calls do not
//! wake it.
//!
//! Its cost is processor time that would otherwise be idle: while calls
//! come one at a time, up to one processor's idle time; after the last
//! call, the window.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The processor to follow is re-read at most this often, so that calls
/// served on two processors in turn do not move the poller on every call.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(1);

/// How often a sleeping poller looks whether anything is left to call it.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// `Shared::last_ns` before the first call, `Shared::crowded_ns` before
/// two calls were first in flight together.
const NEVER: u64 = u64::MAX;

/// How long, in windows, the poller stays asleep after a call that found
/// another in flight (with the 2 ms window of `auto`, 100 ms): long enough
/// that a steady run of concurrent calls never lets it spin between them.
pub const CROWD_HOLD_WINDOWS: u64 = 50;

/// What the serving threads and the poller share.
#[derive(Debug)]
struct Shared {
    base: Instant,
    window_ns: u64,
    /// `window_ns` times [`CROWD_HOLD_WINDOWS`].
    crowd_hold_ns: u64,
    /// Nanoseconds since `base` of the last call's arrival.
    last_ns: AtomicU64,
    /// Calls in flight (their futures not yet finished or dropped).
    in_flight: AtomicUsize,
    /// Nanoseconds since `base` of the last call that arrived while
    /// another was in flight.
    crowded_ns: AtomicU64,
    /// The processor that received the last call.
    cpu: AtomicUsize,
    /// The poller is asleep (or about to sleep) on `wake`.
    parked: AtomicBool,
    /// How many spells of spinning the poller has begun (one per run of
    /// calls; what the tests look at).
    spells: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn active(&self) -> bool {
        self.active_at(self.now_ns())
    }

    /// Whether the poller spins at `now`: a call arrived within the window
    /// and none found another in flight within the hold.
    fn active_at(&self, now: u64) -> bool {
        let last = self.last_ns.load(Ordering::SeqCst);
        if last == NEVER || now.saturating_sub(last) >= self.window_ns {
            return false;
        }
        let crowded = self.crowded_ns.load(Ordering::SeqCst);
        crowded == NEVER || now.saturating_sub(crowded) >= self.crowd_hold_ns
    }

    /// A call arrived on this thread's processor; it is in flight until
    /// the guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        let now = self.now_ns();
        if self.in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
            self.crowded_ns.store(now, Ordering::SeqCst);
        }
        self.last_ns.store(now, Ordering::SeqCst);
        self.cpu
            .store(rustix::thread::sched_getcpu(), Ordering::Relaxed);
        // Stored before looking, as the poller sets `parked` before it
        // looks at `last_ns`: one of the two sees the other's write. A
        // crowded call leaves it asleep (waking it only to have it see
        // that it must not spin would cost a wakeup per call).
        if self.parked.load(Ordering::SeqCst) && self.active_at(now) {
            let _guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
        InFlight(Arc::clone(self))
    }
}

/// A call in flight, counted until dropped (when the call's future ends
/// or is dropped unfinished).
#[derive(Debug)]
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
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
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            base: Instant::now(),
            window_ns,
            crowd_hold_ns: window_ns.saturating_mul(CROWD_HOLD_WINDOWS),
            last_ns: AtomicU64::new(NEVER),
            in_flight: AtomicUsize::new(0),
            crowded_ns: AtomicU64::new(NEVER),
            cpu: AtomicUsize::new(rustix::thread::sched_getcpu()),
            parked: AtomicBool::new(false),
            spells: AtomicUsize::new(0),
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
    /// and the processor, a count of the calls in flight; a wakeup only
    /// when the poller sleeps and may spin).
    pub fn layer(&self) -> TouchLayer {
        TouchLayer(Arc::clone(&self.shared))
    }
}

/// The poller thread: spins while calls arrive, on the processor of the
/// last one, yielding as it goes, and sleeps when none has arrived for the
/// window. It ends once no handle or layer is left to call it.
fn run(shared: Arc<Shared>) {
    let mut pinned = usize::MAX;
    let mut followed = Instant::now()
        .checked_sub(FOLLOW_INTERVAL)
        .unwrap_or_else(Instant::now);
    loop {
        if shared.active() {
            shared.spells.fetch_add(1, Ordering::Relaxed);
        }
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
            // Gives the processor to any thread queued on it (see the
            // module documentation). No `spin_loop` hint: a PAUSE loop may
            // make the hypervisor take the vCPU away (pause-loop exiting),
            // the very exit this thread is here to avoid.
            rustix::thread::sched_yield();
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

/// The window `--idle-poll auto` uses where it turns the poller on.
pub const AUTO_WINDOW: Duration = Duration::from_millis(2);

/// The `--idle-poll` setting: `auto`, `0` (off) or a window in
/// microseconds (on, whatever the machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// On where the guest halts when idle and no CPU limit applies (see
    /// [`decide`]).
    Auto,
    /// Never.
    Off,
    /// Always, with this window.
    Window(Duration),
}

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Setting, String> {
        match s.trim() {
            "auto" => Ok(Setting::Auto),
            n => match n.parse::<u64>() {
                Ok(0) => Ok(Setting::Off),
                Ok(us) => Ok(Setting::Window(Duration::from_micros(us))),
                Err(_) => Err(format!(
                    "{s:?}: expected `auto` or a number of microseconds (0: off)"
                )),
            },
        }
    }
}

/// Whether the poller runs, and why, as [`decide`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The window, when the poller runs.
    pub window: Option<Duration>,
    /// Why, for a log line.
    pub why: String,
}

/// The machine's cpuidle driver (`/sys/devices/system/cpu/cpuidle/current_driver`),
/// `None` where the file is absent or unreadable.
pub fn cpuidle_driver() -> Option<String> {
    std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether an idle processor halts at once, from the cpuidle driver's
/// name: with `none` (or no cpuidle at all, or nothing readable) the
/// kernel's default idle executes `HLT`, which in a guest leaves it for
/// the hypervisor; any driver (`haltpoll`, which polls first, or the
/// idle states of bare metal, `intel_idle`, `acpi_idle`) chooses better.
pub fn halts_when_idle(cpuidle_driver: Option<&str>) -> bool {
    matches!(cpuidle_driver.map(str::trim), None | Some("" | "none"))
}

/// Decides `--idle-poll`: `0` off, a window on; `auto` on (with
/// [`AUTO_WINDOW`]) only where the guest halts when idle
/// ([`halts_when_idle`]) and no CPU limit applies (`cpu_limit`, as
/// [`cpu_limit`] finds it: under a quota the spinning would get the driver
/// throttled).
pub fn decide(setting: Setting, cpuidle_driver: Option<&str>, cpu_limit: Option<&str>) -> Decision {
    let driver = cpuidle_driver.map_or("absent", str::trim);
    match setting {
        Setting::Off => Decision {
            window: None,
            why: "--idle-poll 0".into(),
        },
        Setting::Window(w) => Decision {
            window: Some(w),
            why: format!("--idle-poll {}", w.as_micros()),
        },
        Setting::Auto if !halts_when_idle(cpuidle_driver) => Decision {
            window: None,
            why: format!(
                "auto: the cpuidle driver is {driver}, idle processors do not simply halt"
            ),
        },
        Setting::Auto => match cpu_limit {
            Some(limit) => Decision {
                window: None,
                why: format!("auto: a CPU limit applies ({limit})"),
            },
            None => Decision {
                window: Some(AUTO_WINDOW),
                why: format!(
                    "auto: the cpuidle driver is {driver} (idle processors halt) and no CPU limit applies"
                ),
            },
        },
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
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Tracked<S::Future> {
        let in_flight = self.shared.begin();
        Tracked {
            inner: self.inner.call(req),
            _in_flight: in_flight,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's future, counted as in flight until it ends or is dropped.
    #[derive(Debug)]
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        _in_flight: InFlight,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// The CPU limit (a CFS quota) that the driver's cgroup, or one above it,
/// sets, described for a log line; `None` without one, or where the
/// cgroup file systems cannot be read. The idle poller's spinning runs at
/// idle priority but still counts against a quota: under a limit, as node
/// plugins often run, it would get the driver throttled, and the binary
/// warns when `--idle-poll` turns the poller on where this finds one.
pub fn cpu_limit() -> Option<String> {
    cpu_limit_from(|p| std::fs::read(p).ok())
}

/// [`cpu_limit`] with the files' bytes from `read`. They are decoded lossily: mountinfo writes
/// every byte of a path but space, tab, newline and backslash as it is, so one mount point
/// that is not UTF-8 anywhere on the host (any user can make one) would otherwise make the
/// whole table unreadable and hide the limit; the lines that matter here are UTF-8.
fn cpu_limit_from(read: impl Fn(&Path) -> Option<Vec<u8>>) -> Option<String> {
    let text = |p: &Path| read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
    let cgroups = text(Path::new("/proc/self/cgroup"))?;
    let mounts = text(Path::new("/proc/self/mountinfo"))?;
    cpu_limit_in(&cgroups, &mounts, text)
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

    /// The poller sleeps until a call arrives, spins after it, sleeps
    /// again once the window has passed with no call, a call wakes it, and
    /// it ends once nothing is left to call it.
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
        let parked = || shared.parked.load(Ordering::SeqCst);
        assert!(!shared.active(), "no call yet");
        assert!(eventually(parked), "asleep before any call");
        assert_eq!(shared.spells.load(Ordering::SeqCst), 0);
        // A call wakes it and it spins once it runs (at idle priority it
        // may wait for a processor and find the window over: calls are
        // repeated until it did).
        assert!(
            eventually(|| {
                drop(shared.begin());
                shared.spells.load(Ordering::SeqCst) >= 1
            }),
            "woken by a call"
        );
        assert!(eventually(|| !shared.active()), "the window ends");
        assert!(eventually(parked), "asleep after the window");
        let weak = Arc::downgrade(&poller.shared);
        drop(poller);
        assert!(
            eventually(|| {
                if let Some(s) = weak.upgrade() {
                    let _guard = s.sleep.lock();
                    s.wake.notify_one();
                }
                weak.strong_count() == 0
            }),
            "the thread ends"
        );
    }

    /// A call that finds another in flight stops the spinning for the
    /// hold, whether the calls end or are dropped unfinished; a call
    /// alone after the hold spins again.
    #[test]
    fn the_poller_spins_only_while_calls_come_one_at_a_time() {
        use tower::{Layer, Service};
        let Some(poller) = IdlePoller::start(Duration::from_millis(2)) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the idle poller could not start"
            );
            return;
        };
        let shared = &poller.shared;
        let hold = shared.crowd_hold_ns;
        assert_eq!(hold, 2_000_000 * CROWD_HOLD_WINDOWS);
        let last = || shared.last_ns.load(Ordering::SeqCst);
        let in_flight = || shared.in_flight.load(Ordering::SeqCst);

        // Through the layer: a call's future counts while it lives.
        let mut service = poller.layer().layer(tower::service_fn(|_: ()| {
            std::future::pending::<Result<(), ()>>()
        }));
        let first = service.call(());
        assert_eq!(in_flight(), 1);
        assert!(shared.active_at(last() + 1), "one call in flight: spin");
        assert!(!shared.active_at(last() + 2_000_000), "the window ended");

        let second = service.call(());
        assert_eq!(in_flight(), 2);
        assert!(!shared.active_at(last() + 1), "two in flight: no spinning");
        drop(first);
        drop(second);
        assert_eq!(in_flight(), 0, "dropped calls are no longer in flight");

        drop(shared.begin());
        let alone = last();
        assert!(!shared.active_at(alone + 1), "alone, but within the hold");
        // A call alone, one hold after the crowded one (the clock moved
        // on by hand).
        let later = shared.crowded_ns.load(Ordering::SeqCst) + hold;
        shared.last_ns.store(later, Ordering::SeqCst);
        assert!(shared.active_at(later + 1), "alone after the hold: spin");
        assert_eq!(in_flight(), 0);
    }

    #[test]
    fn the_setting_parses_auto_off_and_windows() {
        assert_eq!("auto".parse(), Ok(Setting::Auto));
        assert_eq!("0".parse(), Ok(Setting::Off));
        assert_eq!(
            "2000".parse(),
            Ok(Setting::Window(Duration::from_micros(2000)))
        );
        for bad in ["", "on", "-1", "2ms", "1.5"] {
            let e = bad.parse::<Setting>().unwrap_err();
            assert!(e.contains("auto") && e.contains("microseconds"), "{e}");
        }
    }

    #[test]
    fn a_guest_halts_with_no_cpuidle_driver_only() {
        assert!(halts_when_idle(Some("none\n")));
        assert!(halts_when_idle(Some("")));
        assert!(halts_when_idle(None));
        assert!(!halts_when_idle(Some("haltpoll\n")));
        assert!(!halts_when_idle(Some("intel_idle")));
        assert!(!halts_when_idle(Some("acpi_idle")));
    }

    #[test]
    fn auto_runs_the_poller_only_on_a_halting_guest_without_a_cpu_limit() {
        let limit = Some("50000 µs of CPU every 100000 µs (cgroup /sys/fs/cgroup/x)");
        let on = decide(Setting::Auto, Some("none\n"), None);
        assert_eq!(on.window, Some(AUTO_WINDOW), "{}", on.why);
        assert_eq!(decide(Setting::Auto, None, None).window, Some(AUTO_WINDOW));
        let quota = decide(Setting::Auto, Some("none"), limit);
        assert_eq!(quota.window, None);
        assert!(quota.why.contains("CPU limit"), "{}", quota.why);
        let polls = decide(Setting::Auto, Some("haltpoll"), None);
        assert_eq!(polls.window, None);
        assert!(polls.why.contains("haltpoll"), "{}", polls.why);
        assert_eq!(decide(Setting::Auto, Some("intel_idle"), None).window, None);
        // `0` is always off, a window always on.
        assert_eq!(decide(Setting::Off, Some("none"), None).window, None);
        let w = Duration::from_micros(300);
        assert_eq!(
            decide(Setting::Window(w), Some("haltpoll"), limit).window,
            Some(w)
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
    fn a_mount_point_that_is_not_utf8_does_not_hide_the_limit() {
        let mut mountinfo = b"812 30 0:99 / /tmp/vol-\xff rw,relatime - tmpfs tmpfs rw\n".to_vec();
        mountinfo.extend_from_slice(V2_MOUNTS.as_bytes());
        let read = |p: &Path| -> Option<Vec<u8>> {
            match p.to_str()? {
                "/proc/self/cgroup" => Some(b"0::/kubepods/pod1/ctr\n".to_vec()),
                "/proc/self/mountinfo" => Some(mountinfo.clone()),
                "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max" => Some(b"50000 100000\n".to_vec()),
                _ => None,
            }
        };
        let limit = cpu_limit_from(read).expect("the limit, whatever else is mounted");
        assert!(
            limit.starts_with("50000 µs of CPU every 100000 µs"),
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
