//! A NodeUnstageVolume whose loop device detach fails keeps the device in
//! the node's record, so the CO's retry detaches it. Before, the record
//! dropped the device before the detach: the retry skipped it and
//! answered OK with the device still attached over the drive file.
//! `losetup -d` is made to fail by pointing csi-node's `Tool::Losetup` at a
//! script that refuses `-d` and runs the real `losetup` for anything else;
//! `Tool::set_program` is process-wide, hence a test binary of its own.
//!
//! Needs root and loop devices: without them the test says so and passes,
//! except under `CI=true`, where it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use csi_node::{LoopDevice, Tool};
use csi_types::types::CapacityRange;

mod common;

/// Releases what the node side staged and every loop device and mount under
/// the directory, and gives `losetup` back, when dropped.
struct Release<'a>(&'a composer::node::NodeSide, &'a Path);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        Tool::Losetup.set_program("losetup");
        self.0.release_all();
        csi_node::release_under(self.1);
    }
}

/// The loop devices attached over a file under `dir`.
fn attached_under(dir: &Path) -> Vec<String> {
    LoopDevice::all()
        .into_iter()
        .filter(|(_, b)| b.starts_with(dir))
        .map(|(d, b)| format!("{} over {}", d.path().display(), b.display()))
        .collect()
}

#[test]
fn a_failed_detach_is_retried_by_the_next_unstage() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let driver = common::driver_in(&root);
    let side = driver.node_side().unwrap();
    let _release = Release(side, &root);
    let params = common::params(&[("type", "slice")]);
    let range = CapacityRange::new(Some(64 << 20), None).unwrap();
    let rec = driver
        .composer()
        .create("plain", &params, range, true, true, None)
        .unwrap()
        .record;
    let staging = root.join("staging");
    side.stage(
        &rec,
        &staging,
        true,
        csi_node::FsType::Ext4,
        &[],
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        attached_under(&root).len(),
        1,
        "{:?}",
        attached_under(&root)
    );

    let fake = root.join("losetup-refusing-detach");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = -d ]; then\n    \
         echo 'losetup: detach refused by the test' >&2\n    exit 1\n  fi\ndone\n\
         exec losetup \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    Tool::Losetup.set_program(&fake);
    let err = side.unstage(&rec.id, &staging).unwrap_err();
    assert!(err.to_string().contains("detach refused"), "{err}");
    assert_eq!(
        attached_under(&root).len(),
        1,
        "{:?}",
        attached_under(&root)
    );

    // The CO retries once the detach can succeed: the device goes.
    Tool::Losetup.set_program("losetup");
    side.unstage(&rec.id, &staging).unwrap();
    assert!(
        attached_under(&root).is_empty(),
        "left attached after the retried unstage: {:?}",
        attached_under(&root)
    );
}
