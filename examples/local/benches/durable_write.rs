//! The journal's durable write, both ways, side by side in one process on
//! one preallocated file: a record of `--bytes` (300: a CreateVolume's)
//! written with `O_DSYNC` through the page cache, as the journal did, and
//! padded to the direct-I/O unit from an aligned buffer with
//! `O_DIRECT | O_DSYNC`, as it does now. Prints, per write, the CPU time of
//! the writing thread (user and system, from `/proc/thread-self/stat`) and
//! the latency p50/p99, for `--rounds` alternating rounds of `--writes`
//! writes each.
//!
//! ```text
//! cargo bench -p local --bench durable_write -- [--writes N] [--rounds R] [--bytes B] [--dir DIR]
//! ```
//!
//! `--dir` is where the file goes (the bench's temporary directory by
//! default: put it on the file system the state directory will be on).

use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use rustix::fs::OFlags;

/// The calling thread's user and system CPU time, in clock ticks.
fn thread_cpu() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[11].parse().expect("utime"), f[12].parse().expect("stime"))
}

fn ticks_per_second() -> f64 {
    // `getconf CLK_TCK`; 100 on every Linux this runs on.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Zeros written (not a sparse file), synced, and dropped from the cache:
/// the journal's preallocation.
fn preallocate(path: &Path, size: usize) {
    let f = fs::File::create(path).expect("the file");
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        f.write_all_at(&zeros, at as u64).expect("zeros");
        at += zeros.len();
    }
    f.sync_all().expect("sync");
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
}

struct Run {
    user_us: f64,
    sys_us: f64,
    p50_us: f64,
    p99_us: f64,
}

fn run(file: &fs::File, buf: &[u8], writes: usize, unit: usize) -> Run {
    let mut lat = Vec::with_capacity(writes);
    let tps = ticks_per_second();
    let (u0, s0) = thread_cpu();
    for i in 0..writes {
        let t = Instant::now();
        file.write_all_at(buf, (i * unit) as u64)
            .expect("a durable write");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (u1, s1) = thread_cpu();
    lat.sort_by(f64::total_cmp);
    let per = |ticks: u64| ticks as f64 / tps * 1e6 / writes as f64;
    Run {
        user_us: per(u1 - u0),
        sys_us: per(s1 - s0),
        p50_us: lat[writes / 2],
        p99_us: lat[writes * 99 / 100],
    }
}

fn main() {
    let mut writes = 20_000;
    let mut rounds = 3;
    let mut bytes = 300;
    let mut dir: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |d: usize| args.next().and_then(|s| s.parse().ok()).unwrap_or(d);
        match a.as_str() {
            "--writes" => writes = num(writes),
            "--rounds" => rounds = num(rounds),
            "--bytes" => bytes = num(bytes),
            "--dir" => dir = args.next(),
            _ => {} // cargo passes --bench
        }
    }
    let tmp = match &dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let path = tmp.path().join("journal");
    fs::File::create(&path).expect("the file");
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        &path,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::DIOALIGN,
    )
    .expect("statx");
    let unit = if st.stx_dio_offset_align > 0 {
        st.stx_dio_offset_align as usize
    } else {
        4096
    };
    let padded = bytes.next_multiple_of(unit);
    println!(
        "{writes} durable writes of a {bytes}-byte record per round, {rounds} rounds; \
         direct-I/O unit {unit} bytes (memory alignment {}), so {padded} bytes a write direct",
        st.stx_dio_mem_align
    );
    println!("way                         user µs  sys µs  cpu µs  p50 µs  p99 µs");
    let record = vec![b'x'; bytes];
    // An aligned buffer without unsafe code: the aligned part of a larger one.
    let raw = vec![b'x'; padded + 4096];
    let start = raw.as_ptr().align_offset(4096);
    let aligned = &raw[start..start + padded];
    for _ in 0..rounds {
        for direct in [false, true] {
            preallocate(&path, writes * padded.max(bytes));
            let flags = if direct {
                OFlags::DSYNC | OFlags::DIRECT
            } else {
                OFlags::DSYNC
            };
            let file = fs::OpenOptions::new()
                .write(true)
                .custom_flags(flags.bits() as i32)
                .open(&path)
                .expect("the journal file");
            let r = if direct {
                run(&file, aligned, writes, padded)
            } else {
                run(&file, &record, writes, bytes)
            };
            println!(
                "{:<26}  {:>7.1}  {:>6.1}  {:>6.1}  {:>6.1}  {:>6.1}",
                if direct {
                    "O_DIRECT|O_DSYNC, padded"
                } else {
                    "O_DSYNC, page cache"
                },
                r.user_us,
                r.sys_us,
                r.user_us + r.sys_us,
                r.p50_us,
                r.p99_us
            );
        }
    }
}
