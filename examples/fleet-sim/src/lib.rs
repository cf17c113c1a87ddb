//! `fleet-sim`: years of a composable data centre in a minute.
//!
//! A discrete-event simulator over an inventory in the `placement` crate's format (generated
//! from a few parameters, or read from a file): drives fail (exponential or Weibull lifetimes),
//! whole JBODs, servers and racks fail and come back, rebuilds share drive and bandwidth-domain
//! capacity, unrecoverable read errors strike during rebuilds, and volumes arrive and depart
//! from a workload mix. Volumes are placed by one of three policies compared in one run — the
//! `placement` engine under each class's request, a CRUSH-like straw2 draw, random drives —
//! and lose data when `raid`'s failure analysis says their failed set is fatal. SSD slices go
//! through `slice-alloc`.
//!
//! ```
//! use fleet_sim::{SimConfig, run};
//!
//! let mut cfg = SimConfig::default();
//! cfg.fleet.racks = 4;
//! cfg.fleet.drives_per_rack = 120;
//! cfg.fleet.servers_per_rack = 4;
//! cfg.workload.volumes = 100;
//! cfg.years = 0.25;
//! cfg.engine_search_budget = 1000;
//! let report = run(&cfg, None, &mut |_, _| {}).unwrap();
//! assert_eq!(report.policies.len(), 3);
//! assert_eq!(report, run(&cfg, None, &mut |_, _| {}).unwrap()); // same seed, same report
//! ```
//!
//! Modules: [`config`] (the TOML configuration), [`fleet`] (inventory generation and the
//! derived topology), [`policy`] (the policies' contract, straw2, random), [`adapter`] (every
//! call into `placement`, `raid` and `slice-alloc`), [`flow`] (the fair-share rebuild model),
//! [`sim`] (the event loop), [`report`], [`num`] and [`svg`] (output).

pub mod adapter;
pub mod config;
pub mod error;
pub mod fleet;
pub mod flow;
pub mod num;
pub mod policy;
pub mod report;
pub mod sim;
pub mod svg;
pub mod units;

use std::sync::Arc;

pub use config::{PolicyKind, SimConfig};
pub use error::SimError;
pub use fleet::Fleet;
pub use report::Report;
pub use sim::Progress;

/// Runs every configured policy over the same fleet, failures and workload (one thread per
/// policy) and gathers the report. `inventory` replaces the generated fleet. `progress` is
/// called with the policy's index and how far it has got ([`Progress`]: first the placement
/// of the initial population, then the fraction of simulated time).
pub fn run(
    cfg: &SimConfig,
    inventory: Option<placement::InventorySpec>,
    progress: &mut (dyn FnMut(usize, Progress) + Send),
) -> Result<Report, SimError> {
    cfg.validate()?;
    let spec = match inventory {
        Some(s) => {
            // `validate` checked the generated fleet's size; this is the inventory's.
            let flash = s
                .drives
                .iter()
                .filter(|d| d.kind != placement::DriveKind::Hdd);
            let (drives, servers) = (s.drives.len() as u64, s.servers.len() as u64);
            if let Err(SimError::Config { rule, .. }) =
                cfg.check_memory(drives, flash.count() as u64, servers)
            {
                return Err(SimError::Inventory(format!("this inventory {rule}")));
            }
            s
        }
        None => fleet::generate(&cfg.fleet, cfg.seed)?,
    };
    let fleet = Arc::new(Fleet::new(
        spec,
        &cfg.fleet.jbod_level,
        &cfg.fleet.rack_level,
        &cfg.rebuild,
    )?);
    // Build every simulation first so that a configuration error surfaces before any work.
    let sims = cfg
        .policies
        .iter()
        .map(|&p| sim::Simulation::new(cfg, fleet.clone(), p))
        .collect::<Result<Vec<_>, _>>()?;
    let progress = std::sync::Mutex::new(progress);
    let stats: Vec<report::PolicyStats> = std::thread::scope(|s| {
        let handles: Vec<_> = sims
            .into_iter()
            .enumerate()
            .map(|(i, sim)| {
                let progress = &progress;
                s.spawn(move || {
                    sim.run(&mut |f| {
                        if let Ok(mut p) = progress.lock() {
                            (*p)(i, f);
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| SimError::Inventory("a simulation thread panicked".into()))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let hardware = stats
        .first()
        .map(|s| s.hardware.clone())
        .unwrap_or_default();
    Ok(Report {
        seed: cfg.seed,
        years: cfg.years,
        drives: fleet.drives.len(),
        capacity_bytes: fleet.capacity(),
        jbods: fleet.jbods.len(),
        racks: fleet.racks.len(),
        servers: fleet.servers.len(),
        hardware,
        policies: stats.iter().map(report::PolicyReport::new).collect(),
    })
}
