//! A criterion measurement of the benchmark thread's own CPU time.
//!
//! The benchmark machine is shared (2 cores, several builds at once), so
//! wall-clock figures mostly measure the load. This measurement reads the
//! thread's on-CPU nanoseconds from `/proc/thread-self/schedstat` (Linux),
//! which leaves out time spent waiting for a core. The kernel updates that
//! counter at scheduler ticks and context switches, so each reading may lag
//! by up to one tick: the benches switch to flat sampling in this mode, so
//! that every sample runs for about 100 ms and the error stays within a few
//! per cent (and is unbiased). Selected with `RAID_BENCH_CPU_TIME=1`.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// Thread CPU time, formatted like wall time.
pub struct ThreadCpuTime;

static WALL: WallTime = WallTime;

fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .expect("RAID_BENCH_CPU_TIME needs /proc/thread-self/schedstat (Linux)")
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        on_cpu_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(on_cpu_ns().saturating_sub(start))
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

/// Whether to measure CPU time instead of wall time.
pub fn enabled() -> bool {
    std::env::var_os("RAID_BENCH_CPU_TIME").is_some_and(|v| v != "0")
}
