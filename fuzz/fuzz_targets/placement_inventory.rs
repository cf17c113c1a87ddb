//! `placement` TOML inventory loading on untrusted text.
//!
//! The input, as lossy UTF-8, goes to `Inventory::from_toml`. That must never panic; an
//! accepted inventory must pass its own validation again (`Inventory::from_spec` on its spec)
//! and must save with `to_toml` into text that loads back to an equal inventory, as `to_toml`
//! documents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use placement::Inventory;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(inventory) = Inventory::from_toml(&text) else {
        return;
    };
    let revalidated = Inventory::from_spec(inventory.spec().clone())
        .unwrap_or_else(|e| panic!("an accepted inventory fails its own validation: {e}"));
    assert_eq!(revalidated.spec(), inventory.spec());
    assert_eq!(revalidated.levels(), inventory.levels());
    let saved = inventory.to_toml();
    let reloaded = Inventory::from_toml(&saved)
        .unwrap_or_else(|e| panic!("to_toml wrote text that does not load: {e}\n{saved}"));
    assert_eq!(
        reloaded.spec(),
        inventory.spec(),
        "to_toml -> from_toml changed the inventory"
    );
});
