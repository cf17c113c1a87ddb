//! What `Composer::open` refuses: an inventory a composer cannot serve,
//! whoever opens it (the binary checked it for its own files; a library
//! user got a composer that could never publish a volume).

use std::sync::Arc;

use composer_core::{Composer, Error, Inventory, MemStore};

const SITE_AND_RACK: &str = "[[site]]\nid = \"dc\"\n[[rack]]\nid = \"r1\"\nsite = \"dc\"\n";
const JBOD: &str =
    "[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nkind = \"ssd\"\ncapacity = \"1 TB\"\n";
const SERVER: &str = "[[server]]\nid = \"n1\"\nrack = \"r1\"\n";

fn open(toml: &str) -> Result<Composer, Error> {
    Composer::open(
        Inventory::from_toml(toml).unwrap(),
        Arc::new(MemStore::default()),
    )
}

#[test]
fn an_inventory_without_servers_is_refused_naming_the_rule() {
    let e = open(&format!("{SITE_AND_RACK}{JBOD}")).err().unwrap();
    assert!(matches!(e, Error::Inventory { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("inventory: no servers: a composer needs at least one [[server]]"),
        "{e}"
    );
}

#[test]
fn an_inventory_without_drives_is_refused_naming_the_rule() {
    let e = open(&format!("{SITE_AND_RACK}{SERVER}")).err().unwrap();
    assert!(
        e.to_string().starts_with(
            "inventory: no drives: a composer needs at least one [[jbod]] with a [[jbod.drive]] entry"
        ),
        "{e}"
    );
}
