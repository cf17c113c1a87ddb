//! The composer's background work, run only by the leader among the
//! replicas: every period, the drives the operator marked failed that still
//! hold members are repaired (`Composer::apply_repair`: each member moves to
//! the replacement placement chose, recorded in one batch). On etcd every
//! write of that work is fenced by the leader's term
//! ([`composer_core::Leadership::fenced`]); on the embedded store the one
//! process is the only writer and leads alone.

use std::sync::Arc;
use std::time::Duration;

use composer_core::{Composer, Error, Health, Leadership};

/// One round: repairs every failed drive that still holds members; returns
/// the drives repaired. Stops at the first error (a fenced write refused
/// ends the round: the replica no longer leads).
pub fn repair_failed(c: &Composer) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for d in c.drive_report() {
        if d.health == Health::Failed && !d.volumes.is_empty() {
            let plan = c.apply_repair(&d.id)?;
            tracing::warn!(
                "background: repaired failed drive {}: {} members moved",
                d.id,
                plan.moves.len()
            );
            done.push(d.id);
        }
    }
    Ok(done)
}

/// Runs [`repair_failed`] every `every` on a thread of its own, as the
/// leader only when `leadership` is given (etcd), for the life of the
/// process.
pub fn spawn(c: Arc<Composer>, leadership: Option<Leadership>, every: Duration) {
    std::thread::Builder::new()
        .name("background".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let r = match &leadership {
                    None => repair_failed(&c),
                    Some(l) if l.is_leader() => l.fenced(|| repair_failed(&c)),
                    Some(_) => continue,
                };
                if let Err(e) = r {
                    tracing::warn!("background: repair round stopped: {e}");
                }
            }
        })
        .expect("spawning the background thread");
}
