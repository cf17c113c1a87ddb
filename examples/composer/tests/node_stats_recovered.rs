//! NodeGetVolumeStats of a volume staged by an earlier node process whose
//! data path died with it (an engine volume: its FUSE ended with that
//! process) answers, at the staging path and at a published target, with
//! an abnormal `volume_condition` saying so: the driver has the
//! VOLUME_CONDITION node capability, and the volume is still staged as far
//! as the CO knows. A path that is not the volume's stays NOT_FOUND.
//! Before, every path answered NOT_FOUND. The earlier process is its state
//! file (`node-state.json` in the run directory), written as it writes it:
//! no root, FUSE or loop device needed.

use std::path::Path;

use composer::node::{Backend, NodeConfig};
use csi_types::{ids::*, node::*, prelude::*};

mod common;

fn path(p: &Path) -> NodePath {
    NodePath::new(p.to_str().unwrap()).unwrap()
}

async fn stats(
    plugin: &Plugin,
    id: &str,
    at: &Path,
) -> Result<NodeGetVolumeStatsResponse, CsiError> {
    Csi::node_get_volume_stats(
        plugin,
        NodeGetVolumeStatsRequest {
            volume_id: VolumeId::new(id).unwrap(),
            volume_path: path(at).into(),
            staging_target_path: None.into(),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_whose_data_path_died_with_the_earlier_process_is_abnormal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let inv = composer_core::Inventory::from_toml(composer::demo::DEMO_INVENTORY).unwrap();
    let store = std::sync::Arc::new(composer_core::MemStore::default());
    let driver = composer::ComposerDriver::open(inv, store, Some("r1-n1")).unwrap();
    let params = common::params(&[("type", "hdd"), ("redundancy", "true")]);
    let range = csi_types::types::CapacityRange::new(Some(64 << 20), None).unwrap();
    let rec = driver
        .composer()
        .create("mirror", &params, range, false, true, None)
        .unwrap()
        .record;
    let (staging, target, elsewhere) = (
        root.join("staging"),
        root.join("target"),
        root.join("other"),
    );
    for d in [&staging, &target, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let run = root.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let drives: Vec<&str> = rec.members.iter().map(|m| m.drive.as_str()).collect();
    let state = serde_json::json!({
        "staged": { rec.id.clone(): {
            "staging": staging, "block": false, "drives": drives,
            "loopdev": null, "fuse_dir": run.join(&rec.id),
        }},
        "targets": { target.to_str().unwrap(): [rec.id.clone(), false] },
    });
    std::fs::write(run.join("node-state.json"), state.to_string()).unwrap();
    let driver = driver.with_node_side(NodeConfig {
        data_dir: root.join("drives"),
        run_dir: run,
        backend: Backend::Userspace,
    });
    assert!(driver.node_side().unwrap().is_staged(&rec.id));
    let plugin = driver.plugin().unwrap();

    for at in [&staging, &target] {
        let r = stats(&plugin, &rec.id, at).await.unwrap();
        let c = r.volume_condition.expect("a volume condition");
        assert!(c.abnormal, "{}: {c:?}", at.display());
        assert!(
            c.message.contains("earlier node process") && c.message.contains("NodeStageVolume"),
            "{}",
            c.message
        );
        assert!(r.usage.is_empty(), "{:?}", r.usage);
    }
    let err = stats(&plugin, &rec.id, &elsewhere).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}
