//! The Controller + Node driver of the `csi-types` README ("Add it to your driver") passes the
//! conformance suite: a driver author's first copy of the SDK's example must not fail it.
//!
//! `readme_driver/tiny.rs` is the README's code block without its `main`; the first test keeps the
//! two the same, the second runs the suite against the driver.

use std::sync::Arc;

use csi_testkit::{Config, Outcome, Suite};

// The README's imports serve its `main` too, which is not copied here.
#[allow(unused_imports)]
mod tiny {
    include!("readme_driver/tiny.rs");

    /// Built as the README's `main` builds it.
    pub fn plugin() -> Plugin {
        let tiny = Arc::new(Tiny::default());
        Plugin::builder(tiny.clone())
            .controller(tiny.clone())
            .provisioner(tiny.clone())
            .volume_lister(tiny.clone())
            .node(tiny)
            .build()
            .expect("the README's plugin builds")
    }
}

#[test]
fn the_copy_is_the_readme_code() {
    let readme = include_str!("../../csi-types/README.md");
    let driver = include_str!("readme_driver/tiny.rs");
    assert!(
        readme.contains(driver),
        "tests/readme_driver/tiny.rs differs from the driver in crates/csi-types/README.md \
         (\"Add it to your driver\"): copy the README's code block, without `main`, into it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_driver_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Arc::new(tiny::plugin());
    let mut config = Config::new(dir.path());
    config.proptest_cases = 16;
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    for r in &report.results {
        println!("{r}");
        for w in &r.warnings {
            println!("  WARN {w}");
        }
    }
    assert!(report.success(), "{}", report.summary());
    // It serves what the README says, so those cases ran rather than skipped.
    for name in [
        "controller/create_volume/max_length_name",
        "controller/list_volumes/pagination",
        "node/lifecycle",
        "node/publish_volume/readonly",
        "node/publish_volume/incompatible",
        "properties/state_machine",
    ] {
        assert_eq!(report.outcome(name), Some(&Outcome::Pass), "{name}");
    }
}
