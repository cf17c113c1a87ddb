//! Calls whose record cannot be saved (the disk holding the state fails) leave what they made
//! as it was before: an expansion's image goes back to its recorded size, a stage's bind is
//! unmounted. The state directory is an ext4 on a loop device that the test shuts down
//! (`FS_IOC_SHUTDOWN`, via `xfs_io`); the volumes' data lives on a tmpfs mounted over
//! `volumes/`, which stays healthy, so that what the calls do to it can be checked.
//! Needs root, loop devices, `mkfs.ext4` and `xfs_io`; under `CI=true` it fails without them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use csi_types::{
    Code, Csi,
    controller::ControllerExpandVolumeRequest,
    redact::Secrets,
    types::{AccessMode, CapacityRange, VolumeCapability},
};

const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The state directory `DIR/state` on an ext4 of its own (on a loop device over an image kept
/// in a directory of its own, out of the driver's reach), with a tmpfs on `state/volumes`.
/// Dropping it unmounts both and detaches the device.
struct StateDisk {
    _image_dir: tempfile::TempDir,
    device: String,
    state: PathBuf,
}

impl StateDisk {
    /// The disk under `dir`, or why it cannot be made here (a failure under `CI=true`).
    fn make(dir: &Path, test: &str) -> Option<StateDisk> {
        if !can_mount(test) {
            return None;
        }
        let made = (|| {
            let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let image = image_dir.path().join("state.img");
            fs::File::create(&image)
                .and_then(|f| f.set_len(64 * MIB))
                .map_err(|e| e.to_string())?;
            run(Command::new("xfs_io").arg("-V"))?;
            let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
            let disk = StateDisk {
                _image_dir: image_dir,
                device,
                state: dir.join("state"),
            };
            run(Command::new("mkfs.ext4").args(["-q", &disk.device]))?;
            fs::create_dir(&disk.state).map_err(|e| e.to_string())?;
            run(Command::new("mount").arg(&disk.device).arg(&disk.state))?;
            fs::create_dir(disk.state.join("volumes")).map_err(|e| e.to_string())?;
            run(Command::new("mount")
                .args(["-t", "tmpfs", "volumes"])
                .arg(disk.state.join("volumes")))?;
            Ok::<_, String>(disk)
        })();
        match made {
            Ok(disk) => Some(disk),
            Err(why) => {
                skip_without_loop_devices(test, &why);
                None
            }
        }
    }

    /// Shuts the state's filesystem down: every write to it fails from now on (`EIO`).
    fn fail(&self) {
        run(Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(&self.state))
        .unwrap();
    }
}

impl Drop for StateDisk {
    fn drop(&mut self) {
        for m in [self.state.join("volumes"), self.state.clone()] {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Makes the journal fail: the first call that saves a record after the shutdown fails, and
/// every commit after it is refused.
async fn lose_the_journal(s: &Served, disk: &StateDisk) {
    disk.fail();
    assert_eq!(
        code(s.client.create_volume(block_req("lost", MIB)).await),
        Code::Internal
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expansion_not_recorded_leaves_the_image_at_its_recorded_size() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = StateDisk::make(dir.path(), "expansion_not_recorded") else {
        return;
    };
    let mut cfg = local::Config::with_state_dir(disk.state.clone());
    cfg.capacity = 64 * MIB;
    let s = Served::start_in(dir, cfg).await;
    let v = new_volume(&s.client, block_req("b", 4 * MIB)).await;
    let img = local::volume_data_path(&s.state_dir(), v.as_str(), true);
    assert_eq!(fs::metadata(&img).unwrap().len(), 4 * MIB);
    lose_the_journal(&s, &disk).await;
    let expand = ControllerExpandVolumeRequest {
        volume_id: v.clone(),
        capacity_range: CapacityRange {
            required_bytes: Some(8 * MIB),
            limit_bytes: None,
        },
        secrets: Secrets::default(),
        volume_capability: None,
    };
    let err = s.client.controller_expand_volume(expand).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(
        err.to_string().contains("could not save its state"),
        "{err}"
    );
    assert_eq!(
        fs::metadata(&img).unwrap().len(),
        4 * MIB,
        "the image is larger than its record says"
    );
    let dir = s.stop().await;
    drop(disk);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_not_recorded_leaves_no_bind() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = StateDisk::make(dir.path(), "stage_not_recorded") else {
        return;
    };
    let cfg = local::Config::with_state_dir(disk.state.clone());
    let s = Served::start_in(dir, cfg).await;
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let v = new_volume(&s.client, mount_req("m", MIB)).await;
    // Staged once, so that its first-stage mark is saved already and the next stage gets as far
    // as its bind before it saves anything.
    let first = s.path("first");
    s.client
        .node_stage_volume(stage(&v, &first, &cap))
        .await
        .unwrap();
    s.client
        .node_unstage_volume(unstage(&v, &first))
        .await
        .unwrap();
    lose_the_journal(&s, &disk).await;
    let staging = s.path("staging");
    let err = s
        .client
        .node_stage_volume(stage(&v, &staging, &cap))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(
        err.to_string().contains("could not save its state"),
        "{err}"
    );
    assert!(
        !csi_node::is_mount_point(staging.as_path()).unwrap(),
        "a stage that was not recorded left its bind"
    );
    let dir = s.stop().await;
    drop(disk);
    drop(dir);
}
