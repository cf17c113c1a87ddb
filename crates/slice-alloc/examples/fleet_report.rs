//! Prints the issue-5 fleet figures for slice-alloc and its peers, on the same input in one
//! run: allocations/s, failed allocations (overall and while a fitting extent existed), both
//! fragmentation figures, the share of live slices able to grow 10% in place, and resident
//! memory (each allocator measured in a child process of this same binary, so one allocator's
//! freed heap does not hide another's).
//!
//! ```text
//! cargo run --release -p slice-alloc --example fleet_report -- \
//!     [--ops 1000000] [--policy extent|largest-extent] [--only <allocator>]
//! ```
//!
//! `--ops` is at least 1,000 (fewer are too quick to time). A closed standard output
//! (`fleet_report | head -3`) ends the run quietly.
//!
//! Without `--policy` it measures every allocator under both device policies: best fit by
//! extent (slice-alloc's default) and best fit by largest free extent. `cargo bench -p
//! slice-alloc` runs the same report (`benches/fleet.rs`) after the criterion benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

#[path = "../benches/common/workload.rs"]
mod workload;

use slice_alloc::ceph_fragmentation_score;
use storage_units::quote;
use workload::{
    BestFit, Counts, DEVICE_UNITS, DEVICES, Fleet, OffsetAlloc, Ours, Policy, RangeAlloc, Run,
    TARGET, gaps, layout,
};

/// Harness-side record of every device's used extents and largest gap, to tell whether a
/// failed allocation had a fitting extent somewhere (independently of the allocator).
struct Shadow {
    used: Vec<BTreeMap<u32, u32>>,
    largest: BTreeSet<(u32, u32)>,
    cur: Vec<u32>,
}

impl Shadow {
    fn new<F: Fleet>(run: &Run<F>) -> Self {
        let mut s = Shadow {
            used: vec![BTreeMap::new(); DEVICES as usize],
            largest: BTreeSet::new(),
            cur: vec![0; DEVICES as usize],
        };
        for (h, _) in &run.live {
            let (d, o, l) = run.fleet.extent(h);
            s.used[d as usize].insert(o, l);
        }
        for d in 0..DEVICES {
            let l = s.gap(d);
            s.cur[d as usize] = l;
            s.largest.insert((l, d));
        }
        s
    }
    fn gap(&self, d: u32) -> u32 {
        let v: Vec<(u32, u32)> = self.used[d as usize]
            .iter()
            .map(|(&o, &l)| (o, l))
            .collect();
        gaps(&v).into_iter().max().unwrap_or(0)
    }
    fn update(&mut self, d: u32) {
        let l = self.gap(d);
        let old = std::mem::replace(&mut self.cur[d as usize], l);
        self.largest.remove(&(old, d));
        self.largest.insert((l, d));
    }
    fn fits(&self, units: u32) -> bool {
        self.largest.last().is_some_and(|&(l, _)| l >= units)
    }
}

#[derive(Debug, Default)]
struct Figures {
    name: &'static str,
    policy: Option<Policy>,
    fill_failures: u64,
    counts: Counts,
    failed_while_fit: u64,
    mixed_ops_per_s: f64,
    mixed_ops_per_cpu_s: f64,
    allocs_per_s: f64,
    allocs_per_cpu_s: f64,
    free_ratio: f64,
    ceph: f64,
    grow_share: f64,
    live: usize,
    fill: f64,
    rss_mib: Option<f64>,
}

fn measure<F: Fleet>(policy: Policy, ops: u64) -> Figures {
    // Pass 1: classify failures against the shadow layout.
    let mut run = Run::<F>::filled(policy);
    let fill_failures = run.fill_failures;
    let mut shadow = Shadow::new(&run);
    let mut counts = Counts::default();
    let mut failed_while_fit = 0;
    for _ in 0..ops {
        let before = run.live.len();
        // Note the extent of a slice about to be freed: replay the stream's choice.
        let mut probe = run.rng.clone();
        let _ = probe.size();
        let pick = probe.next_u64();
        let freeing = !(run.used < TARGET || run.live.is_empty());
        let freed = freeing.then(|| {
            let i = (pick % run.live.len() as u64) as usize;
            run.fleet.extent(&run.live[i].0)
        });
        run.step(&mut counts, &mut |_, size| {
            if shadow.fits(size) {
                failed_while_fit += 1;
            }
        });
        if let Some((d, o, _)) = freed {
            shadow.used[d as usize].remove(&o);
            shadow.update(d);
        } else if run.live.len() > before {
            let (d, o, l) = run.fleet.extent(&run.live.last().unwrap().0);
            shadow.used[d as usize].insert(o, l);
            shadow.update(d);
        }
    }
    // Fragmentation and growth from the final layout.
    let lay = layout(&run);
    let (mut w, mut ratio, mut ceph) = (0f64, 0f64, 0f64);
    let (mut growable, mut total) = (0usize, 0usize);
    for d in 0..DEVICES {
        let used = lay.get(&d).cloned().unwrap_or_default();
        let g = gaps(&used);
        let free: u64 = g.iter().map(|&x| u64::from(x)).sum();
        if free > 0 {
            let largest = u64::from(*g.iter().max().unwrap());
            let f = free as f64;
            w += f;
            ratio += (1.0 - largest as f64 / f) * f;
            ceph += ceph_fragmentation_score(g.iter().map(|&x| u64::from(x))) * f;
        }
        for (i, &(o, l)) in used.iter().enumerate() {
            let next = used.get(i + 1).map_or(DEVICE_UNITS, |n| n.0);
            total += 1;
            if next - (o + l) >= l.div_ceil(10) {
                growable += 1;
            }
        }
    }
    let live = run.live.len();
    let fill = run.used as f64 / (u64::from(DEVICES) * u64::from(DEVICE_UNITS)) as f64;
    drop(run);

    // Pass 2: the same stream, timed, without the shadow.
    let mut run = Run::<F>::filled(policy);
    let mut c2 = Counts::default();
    let (t, c) = (Instant::now(), cpu_s());
    for _ in 0..ops {
        run.step(&mut c2, &mut |_, _| {});
    }
    let mixed = t.elapsed().as_secs_f64();
    let mixed_cpu = cpu_s() - c;
    assert_eq!(
        c2.allocations, counts.allocations,
        "the timed pass must replay the same stream"
    );

    // Pass 3: allocation calls alone at 90% fill (free to 89% untimed, refill timed).
    let (mut timed, mut timed_cpu) = (0f64, 0f64);
    let mut done = 0u64;
    while done < ops / 2 {
        while run.used > TARGET - TARGET / 100 {
            let i = (run.rng.next_u64() % run.live.len() as u64) as usize;
            let (h, size) = run.live.swap_remove(i);
            run.fleet.free(h);
            run.used -= u64::from(size);
        }
        let sizes: Vec<u32> = (0..512).map(|_| run.rng.size()).collect();
        let mut k = 0;
        let (t, c) = (Instant::now(), cpu_s());
        while run.used < TARGET && k < sizes.len() {
            if let Some(h) = run.fleet.allocate(sizes[k]) {
                run.live.push((h, sizes[k]));
                run.used += u64::from(sizes[k]);
            }
            k += 1;
        }
        timed += t.elapsed().as_secs_f64();
        timed_cpu += cpu_s() - c;
        done += k as u64;
    }

    Figures {
        name: F::NAME,
        policy: Some(policy),
        fill_failures,
        counts,
        failed_while_fit,
        mixed_ops_per_s: ops as f64 / mixed,
        mixed_ops_per_cpu_s: ops as f64 / mixed_cpu,
        allocs_per_s: done as f64 / timed,
        allocs_per_cpu_s: done as f64 / timed_cpu,
        free_ratio: ratio / w,
        ceph: ceph / w,
        grow_share: growable as f64 / total as f64,
        live,
        fill,
        rss_mib: None,
    }
}

/// CPU time this thread has run, in seconds (Linux `/proc/thread-self/schedstat`). On a
/// shared machine wall time also counts time spent waiting for a core, so both are reported.
/// The counter advances at scheduler ticks: exact for the one long mixed pass, an unbiased but
/// noisier estimate (roughly ±10%) when summed over the many short allocation-only stretches.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Child mode: build, fill and run one allocator, print the resident-memory growth in KiB.
fn memory_child(name: &str, policy: Policy, ops: u64) {
    fn go<F: Fleet>(policy: Policy, ops: u64) -> u64 {
        let before = rss_kib().unwrap_or(0);
        let mut run = Run::<F>::filled(policy);
        let mut c = Counts::default();
        for _ in 0..ops {
            run.step(&mut c, &mut |_, _| {});
        }
        let after = rss_kib().unwrap_or(0);
        std::hint::black_box(&run);
        after.saturating_sub(before)
    }
    let kib = match name {
        "slice-alloc" => go::<Ours>(policy, ops),
        "offset-allocator" => go::<OffsetAlloc>(policy, ops),
        "range-alloc" => go::<RangeAlloc>(policy, ops),
        "pure best fit" => go::<BestFit>(policy, ops),
        other => panic!("unknown allocator {other}"),
    };
    println!("{kib}");
}

/// The allocators the report measures, by the name `--only` takes.
const ALLOCATORS: [&str; 4] = [
    Ours::NAME,
    OffsetAlloc::NAME,
    RangeAlloc::NAME,
    BestFit::NAME,
];

/// What the command line asks for.
struct Args {
    ops: u64,
    policies: Vec<Policy>,
    only: Option<String>,
    memory_child: Option<String>,
}

/// Fewest operations `--ops` takes.
const MIN_OPS: u64 = 1000;

/// One line of the report on standard output; a closed pipe (`fleet_report | head -3`) ends the
/// run quietly instead of panicking, and another write error ends it with status 1.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("fleet_report: standard output: {e}");
        std::process::exit(1);
    }
}

/// The flags, for `--help` and the unknown-flag message.
const FLAGS: &str = "--ops N, --policy extent|largest-extent, --only NAME";

/// Reads `--ops N`, `--policy extent|largest-extent`, `--only NAME` and (internal)
/// `--memory-child NAME`; a bad or missing value, or an unknown flag, is one line naming the
/// flag and the rule, the value quoted short. `None` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut out = Args {
        ops: 1_000_000,
        policies: Policy::ALL.to_vec(),
        only: None,
        memory_child: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ops" => {
                let v = value()?;
                out.ops = v.parse().map_err(|_| {
                    format!(
                        "--ops takes a whole number of operations, got {}",
                        quote(&v)
                    )
                })?;
                // `--ops 0` printed NaN rates (0 operations in 0 s) and a handful printed inf
                // (faster than the clock ticks): too few to time is an input error.
                if out.ops < MIN_OPS {
                    return Err(format!(
                        "--ops must be at least {MIN_OPS} (fewer are too quick to time), got {v}"
                    ));
                }
            }
            "--policy" => {
                let v = value()?;
                out.policies = vec![Policy::parse(&v).ok_or_else(|| {
                    format!("--policy takes extent or largest-extent, got {}", quote(&v))
                })?];
            }
            "--only" | "--memory-child" => {
                let v = value()?;
                if !ALLOCATORS.contains(&v.as_str()) {
                    return Err(format!(
                        "{flag} takes one of {}, got {}",
                        ALLOCATORS.map(|n| format!("{n:?}")).join(", "),
                        quote(&v)
                    ));
                }
                if flag == "--only" {
                    out.only = Some(v);
                } else {
                    out.memory_child = Some(v);
                }
            }
            "-h" | "--help" => return Ok(None),
            // `cargo bench` passes `--bench` to every bench binary, this report's
            // (`benches/fleet.rs`) too, which refused it: `cargo bench -p slice-alloc` failed.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {} (flags: {FLAGS})",
                    quote(other)
                ));
            }
        }
    }
    Ok(Some(out))
}

/// Runs the report (or, with `--memory-child`, one allocator's memory measurement).
pub fn main() {
    let Args {
        ops,
        policies,
        only,
        memory_child: child,
    } = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!(
                "fleet_report: slice-alloc and its peers on the same fleet workload\n\nUsage: fleet_report [{}]\n\n  --ops N      mixed operations after the fill, at least {MIN_OPS} (default 1000000)\n  --policy P   device policy: extent or largest-extent (default both)\n  --only NAME  one allocator: {}",
                FLAGS.replace(", ", "] ["),
                ALLOCATORS.join(", ")
            );
            return;
        }
        Err(e) => {
            eprintln!("fleet_report: {e}");
            std::process::exit(2)
        }
    };
    if let Some(name) = child {
        memory_child(&name, policies[0], ops);
        return;
    }
    say(format_args!(
        "workload: {DEVICES} devices x {DEVICE_UNITS} GiB, slices log-uniform 1-2048 GiB, fill 90%, then {ops} mixed ops, seed {:#x}",
        workload::seed()
    ));
    // `--only <name>` measures one allocator (for profiling).
    let want = |n: &str| only.as_deref().is_none_or(|o| o == n);
    let mut all = Vec::new();
    for &policy in &policies {
        if want(Ours::NAME) {
            all.push(measure::<Ours>(policy, ops));
        }
        if want(OffsetAlloc::NAME) {
            all.push(measure::<OffsetAlloc>(policy, ops));
        }
        if want(RangeAlloc::NAME) {
            all.push(measure::<RangeAlloc>(policy, ops));
        }
        if want(BestFit::NAME) {
            all.push(measure::<BestFit>(policy, ops));
        }
    }
    let exe = std::env::current_exe().expect("own path");
    for f in &mut all {
        let policy = match f.policy {
            Some(Policy::BestFitLargestExtent) => "largest-extent",
            _ => "extent",
        };
        let out = std::process::Command::new(&exe)
            .args(["--memory-child", f.name, "--policy", policy])
            .args(["--ops", &ops.to_string()])
            .output()
            .expect("run child");
        f.rss_mib = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .ok()
            .map(|k| k / 1024.0);
    }
    say(format_args!(
        "\n| device policy | allocator | allocations/s at 90% (CPU time / wall) | mixed ops/s (CPU time / wall) | allocation attempts | failed | failed while a fitting extent existed | fill failures | 1 - largest/free | Ceph score | live slices growable 10% in place | live slices | final fill | resident memory |"
    ));
    say(format_args!(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    ));
    for f in &all {
        say(format_args!(
            "| {} | {} | {:.2} M / {:.2} M | {:.2} M / {:.2} M | {} | {} ({:.2}%) | {} | {} | {:.3} | {:.3} | {:.1}% | {} | {:.1}% | {} |",
            f.policy.map_or("", Policy::name),
            f.name,
            f.allocs_per_cpu_s / 1e6,
            f.allocs_per_s / 1e6,
            f.mixed_ops_per_cpu_s / 1e6,
            f.mixed_ops_per_s / 1e6,
            f.counts.allocations,
            f.counts.failed,
            100.0 * f.counts.failed as f64 / f.counts.allocations.max(1) as f64,
            f.failed_while_fit,
            f.fill_failures,
            f.free_ratio,
            f.ceph,
            100.0 * f.grow_share,
            f.live,
            100.0 * f.fill,
            f.rss_mib
                .map_or("n/a".to_string(), |m| format!("{m:.1} MiB")),
        ));
    }
}
