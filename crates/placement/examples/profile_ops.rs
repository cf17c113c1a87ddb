//! The operations of the bench whose timings vary most between builds — planning a RAID1 and
//! an 8-drive RAID10 volume, planning the evacuation of a full 60-drive JBOD, and setting one
//! of its drives failed and healthy again — on the bench's fleet filled to 90% with the
//! bench's request stream, each in a function of its own (`op_*`), so that a profiler counts
//! exactly those calls. Instruction counts do not depend on the machine's load, so two builds
//! can be compared on a shared machine, outside a benchmark slot.
//!
//! `PROFILE_RACKS` racks of the bench's fleet (default 100, the bench's 100,000 drives; its
//! first racks are the same at any count), `PROFILE_REPS` repetitions of each plan and health
//! pair (default 100; the evacuation runs a twentieth as often, at least once).
//!
//! Under callgrind, the fill runs uninstrumented (3–4 minutes at 100 racks on the development
//! machine, against about 30 s natively): with `PROFILE_WAIT=<path>` the example writes
//! `<path>.ready` once filled and waits for `<path>.go`, between which a driver turns
//! instrumentation on:
//!
//! ```text
//! cargo build --profile bench -p placement --example profile_ops
//! PROFILE_WAIT=/tmp/p valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no \
//!     --toggle-collect='profile_ops::op_*' target/release/examples/profile_ops &
//! while [ ! -e /tmp/p.ready ]; do sleep 1; done
//! callgrind_control -i on $!; touch /tmp/p.go; wait
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep 'profile_ops::op_'
//! ```

use std::hint::black_box;

use placement::*;

// Shared with the bench, which uses every item.
#[allow(dead_code)]
#[path = "../benches/fleet/mod.rs"]
mod fleet;
use fleet::{GB, fill_to, inventory_of, raid1, raid10};

#[inline(never)]
fn op_plan_raid1(engine: &Engine, r: &Request, reps: usize) -> usize {
    // (Starts from an opaque zero so that it is not folded into `op_plan_raid10`.)
    let mut ok = black_box(0);
    for _ in 0..reps {
        ok += black_box(engine.plan(black_box(r)).is_ok()) as usize;
    }
    ok
}

#[inline(never)]
fn op_plan_raid10(engine: &Engine, r: &Request, reps: usize) -> usize {
    let mut ok = 0;
    for _ in 0..reps {
        ok += black_box(engine.plan(black_box(r)).is_ok()) as usize;
    }
    ok
}

#[inline(never)]
fn op_evacuation(engine: &mut Engine, jbod: &str, reps: usize) -> usize {
    let mut moves = 0;
    for _ in 0..reps {
        moves += black_box(
            engine
                .plan_evacuation(black_box(jbod))
                .map(|p| p.moves.len()),
        )
        .expect("evacuation plan");
    }
    moves
}

#[inline(never)]
fn op_health(engine: &mut Engine, drive: &str, reps: usize) -> usize {
    let mut affected = 0;
    for _ in 0..reps {
        affected += engine
            .set_drive_health(drive, Health::Failed)
            .expect("health")
            .len();
        engine
            .set_drive_health(drive, Health::Healthy)
            .expect("health");
    }
    affected
}

/// A count from the environment, at least `min`; else one line naming the variable and the rule,
/// and status 2 (an unreadable value silently ran the default, minutes of 100 racks, and
/// `PROFILE_RACKS=1` panicked).
fn env(name: &str, default: usize, min: usize) -> usize {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    match text.trim().parse() {
        Ok(n) if n >= min => n,
        _ => {
            eprintln!(
                "profile_ops: {name} must be a whole number, at least {min}, got {}",
                storage_units::quote(&text)
            );
            std::process::exit(2)
        }
    }
}

fn main() {
    // The evacuated JBOD is the bench's (a full HDD JBOD in the second rack).
    let racks = env("PROFILE_RACKS", 100, 2);
    let reps = env("PROFILE_REPS", 100, 1);
    let mut engine = Engine::new(inventory_of(racks), 1).expect("engine");
    fill_to(&mut engine, 0.90);
    if let Ok(w) = std::env::var("PROFILE_WAIT") {
        std::fs::write(format!("{w}.ready"), b"").expect("write the ready file");
        while !std::path::Path::new(&format!("{w}.go")).exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let jbod = "r001-j05";
    let drives = engine.inventory().drives_in(jbod).expect("jbod exists");
    let t = std::time::Instant::now();
    let ok = op_plan_raid1(&engine, &raid1(10 * GB), reps);
    println!("plan_raid1: {ok} of {reps} placed, {:.2?}", t.elapsed());
    let t = std::time::Instant::now();
    let ok = op_plan_raid10(&engine, &raid10(10 * GB), reps);
    println!(
        "plan_raid10_4x2: {ok} of {reps} placed, {:.2?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    let n = (reps / 20).max(1);
    let moves = op_evacuation(&mut engine, jbod, n);
    println!(
        "plan_evacuation {jbod}: {} member moves each, {n} times, {:.2?}",
        moves / n,
        t.elapsed()
    );
    let t = std::time::Instant::now();
    let affected = op_health(&mut engine, drives[0].as_str(), reps);
    println!(
        "set_drive_health failed and healthy: {} volumes affected each, {reps} times, {:.2?}",
        affected / reps,
        t.elapsed()
    );
}
