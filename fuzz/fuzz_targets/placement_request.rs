//! `placement` request files on untrusted text, planned and placed on a fixed inventory.
//!
//! The input, as lossy UTF-8, goes to `RequestFile::from_toml`. That must never panic. The
//! first eight accepted requests are then planned and placed, in order, on the inventory of
//! `crates/placement/examples/inventory.toml` with a bounded search budget: neither call may
//! panic, `plan` and `place` must agree on whether the request can be placed and on how many
//! members it gets, and after every placement the engine's state must still pass the
//! inventory's own validation (no drive, group or bandwidth domain over its capacity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use placement::{Engine, Inventory, RequestFile, VolumeId};

const INVENTORY: &str = include_str!("../../crates/placement/examples/inventory.toml");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(file) = RequestFile::from_toml(&text) else {
        return;
    };
    let inventory = Inventory::from_toml(INVENTORY).expect("the embedded inventory loads");
    let mut engine = Engine::new(inventory, 7).expect("the embedded inventory has no volumes");
    engine.set_search_budget(20_000);
    for (i, request) in file.requests.iter().take(8).enumerate() {
        let planned = engine.plan(request);
        let id = VolumeId::new(format!("fuzz-{i}")).expect("a valid volume id");
        let placed = engine.place(id, request);
        match (&planned, &placed) {
            (Ok(p), Ok(q)) => assert_eq!(
                p.members.len(),
                q.members.len(),
                "plan and place gave different member counts"
            ),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "plan and place disagree: plan {:?}, place {:?}",
                planned.as_ref().map(|p| p.drives()),
                placed.as_ref().map(|p| p.drives())
            ),
        }
        if placed.is_ok() {
            let state = engine.snapshot();
            Inventory::from_spec(state.spec().clone()).unwrap_or_else(|e| {
                panic!("the state after placing request {i} fails validation: {e}")
            });
        }
    }
});
