//! Named call sequences from `testdata/sequences.toml`, replayed against the
//! memdriver (each must agree with the model), against the drivers in
//! `passes_on` that choose otherwise where the spec allows (each must agree
//! too) and, for the shrunk failures kept there, against the broken driver
//! they caught (each must fail).

mod common;

use csi_testkit::Suite;
use csi_testkit::memdriver::{MemDriver, MemDriverConfig};
use csi_testkit::props::{Op, replay};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    sequence: Vec<Sequence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sequence {
    name: String,
    calls: Vec<String>,
    catches: Option<String>,
    #[serde(default)]
    passes_on: Vec<String>,
}

fn load() -> Vec<(Sequence, Vec<Op>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sequences.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!file.sequence.is_empty());
    file.sequence
        .into_iter()
        .map(|s| {
            let ops = s
                .calls
                .iter()
                .map(|c| {
                    c.parse::<Op>()
                        .unwrap_or_else(|e| panic!("{}: {e}", s.name))
                })
                .collect();
            (s, ops)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sequence_agrees_with_the_model_on_the_memdriver() {
    let dir = tempfile::tempdir().unwrap();
    let plugin: std::sync::Arc<dyn csi_types::RawCsi> =
        std::sync::Arc::new(MemDriver::new(MemDriverConfig::default()).plugin());
    let suite = Suite::new(common::config(dir.path()), plugin.clone(), plugin);
    for (seq, ops) in load() {
        if let Err(e) = replay(&suite, &ops).await {
            panic!("{}: {e}", seq.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_agree_with_the_model_on_drivers_that_choose_otherwise() {
    let mut replayed = 0;
    for (seq, ops) in load() {
        for kind in &seq.passes_on {
            let dir = tempfile::tempdir().unwrap();
            let plugin = common::broken::plugin(kind);
            let suite = Suite::new(common::config(dir.path()), plugin.clone(), plugin);
            if let Err(e) = replay(&suite, &ops).await {
                panic!("{} on the {kind} driver: {e}", seq.name);
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_failures_still_catch_their_broken_driver() {
    let mut caught = 0;
    for (seq, ops) in load() {
        let Some(kind) = &seq.catches else { continue };
        let dir = tempfile::tempdir().unwrap();
        let plugin = common::broken::plugin(kind);
        let suite = Suite::new(common::config(dir.path()), plugin.clone(), plugin);
        let err = replay(&suite, &ops)
            .await
            .expect_err(&format!("{}: the {kind} driver passed", seq.name));
        println!("{}: {err}", seq.name);
        caught += 1;
    }
    assert!(caught >= 2);
}

#[test]
fn printed_calls_parse_back() {
    for (_, ops) in load() {
        for op in ops {
            assert_eq!(op.to_string().parse::<Op>().unwrap(), op);
        }
    }
    let e = "Frobnicate(v0)".parse::<Op>().unwrap_err();
    assert!(e.contains("not a call the state machine makes"), "{e}");
    let e = "DeleteVolume(v)".parse::<Op>().unwrap_err();
    assert!(e.contains("expected v<number>"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_that_cannot_be_sent_whole_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plugin: std::sync::Arc<dyn csi_types::RawCsi> =
        std::sync::Arc::new(MemDriver::new(MemDriverConfig::default()).plugin());
    let suite = Suite::new(common::config(dir.path()), plugin.clone(), plugin);
    // Nothing is published, so nothing can be staged.
    let ops: Vec<Op> = ["CreateVolume(v0, required=1×size)", "NodeStageVolume(v0)"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let e = replay(&suite, &ops).await.unwrap_err();
    assert!(e.starts_with("call 2 was not sent"), "{e}");
}
