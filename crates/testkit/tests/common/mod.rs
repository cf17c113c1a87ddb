//! Shared setup of the integration tests.

#![allow(dead_code)] // Each test binary uses a different part.

pub mod broken;

use std::path::Path;

use csi_testkit::{Config, Outcome, Report};

/// Property cases per run: small by default, more with `CSI_TESTKIT_CASES`.
pub fn proptest_cases() -> u32 {
    std::env::var("CSI_TESTKIT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

/// The property seed: 0 by default, another with `CSI_TESTKIT_SEED`.
pub fn seed() -> u64 {
    std::env::var("CSI_TESTKIT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The suite configuration matching `MemDriverConfig::default()`.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir);
    c.second_node_id = Some("memdriver-node-2".into());
    c.mutable_parameters = [("iops".to_string(), "500".to_string())].into();
    c.proptest_cases = proptest_cases();
    c.seed = seed();
    // The memdriver publishes a BLOCK volume as an empty regular file.
    c.block_targets_may_be_files = true;
    c
}

/// Prints the report and panics on a failed case.
pub fn assert_all_pass(report: &Report) {
    for r in &report.results {
        println!("{r}");
    }
    println!("{}", report.summary());
    assert!(report.success(), "{}", report.summary());
}

/// The skips the memdriver is expected to have, with their reasons.
pub fn assert_skips_are_explained(report: &Report) {
    for r in &report.results {
        if let Outcome::Skip(reason) = &r.outcome {
            assert!(!reason.is_empty(), "{} skipped without a reason", r.name);
        }
    }
}
