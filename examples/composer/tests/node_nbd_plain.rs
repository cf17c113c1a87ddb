//! A single drive and a slice whose drive is reached over NBD (the JBOD
//! agent), staged and published with real mounts: raid-engine's FUSE file
//! over the member range, a loop device with direct I/O, ext4. The volume
//! the pod sees is exactly the member range (its size is the volume's
//! capacity, at least the request, and the drive holds the filesystem at the
//! member's first byte: no metadata of the node's on it); files written
//! through the mount read back equal after an unstage and a new stage; a
//! slice grown by ControllerExpandVolume shows its new size at the next
//! stage; unstage leaves no mount, loop device or FUSE directory.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the test says so
//! and passes, except under `CI=true`, where it fails.

use std::os::unix::fs::FileExt;

use csi_types::{controller::*, prelude::*, redact::*, types::*};

mod common;

use common::{InProcess as Setup, Vol, cap};

/// The staged device's size and whether its loop device does direct I/O.
fn staged_device(s: &Setup, id: &str) -> (u64, bool) {
    let (_, _, dev) = s.driver.node_side().unwrap().staged_at(id).unwrap();
    let size = csi_node::block_device_size(&dev).unwrap();
    let dio = csi_node::LoopDevice::open(&dev).unwrap().direct_io();
    (size, dio == Some(true))
}

/// Nothing of the volume is left on the node: no mount or loop device under
/// the test's directory, no FUSE directory.
fn nothing_left(s: &Setup, id: &str) {
    common::assert_nothing_left(s.dir.path());
    assert!(!s.dir.path().join("run").join(id).exists());
    assert!(s.driver.node_side().unwrap().staged_at(id).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_drive_and_slice_stage_over_nbd_with_exact_capacity() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::with_agent();
    let nbd = ("networkTransportsAllowed", "nbd");
    for (name, params, want, grow_to) in [
        ("single", vec![("type", "hdd"), nbd], 200u64 << 20, None),
        (
            "slice",
            vec![("type", "slice"), nbd],
            100 << 20,
            Some(176u64 << 20),
        ),
    ] {
        let mut req = composer::create_request(name, &params, want).unwrap();
        req.volume_capabilities = vec![cap()];
        let vol = Csi::create_volume(&s.plugin, req).await.unwrap().volume;
        let id = vol.volume_id.as_str().to_string();
        let rec = s.driver.composer().get(&id).unwrap().record;
        assert_eq!(rec.transport.name(), "nbd", "{name}");
        assert!(vol.capacity_bytes >= want, "{name}: {vol:?}");
        assert_eq!(rec.layout.usable_bytes, vol.capacity_bytes, "{name}");
        let ctx = common::controller_publish(&s.plugin, &id).await;
        let v = Vol {
            id: id.clone(),
            staging: s.dir.path().join("staging").join(name),
            target: s.dir.path().join("target").join(name),
        };
        common::stage_with(&s.plugin, &v, &ctx).await.unwrap();
        // Idempotent.
        common::stage_with(&s.plugin, &v, &ctx).await.unwrap();
        common::publish(&s.plugin, &v).await.unwrap();
        assert!(csi_node::is_mount_point(&v.target).unwrap());
        let (size, dio) = staged_device(&s, &id);
        assert_eq!(
            size, vol.capacity_bytes,
            "{name}: the pod sees the capacity"
        );
        assert!(
            dio,
            "{name}: the loop device over the FUSE file does direct I/O"
        );
        let files = common::data(name.len() as u8 + 3);
        common::write(&v.target, &files);
        common::check(&v.target, &files);

        // The drive (the agent's file, not the node's) holds the volume at
        // the member's first byte: ext4's magic at 1024 + 56.
        let m = &rec.members[0];
        let drive = s.dir.path().join("agent").join(format!("{}.img", m.drive));
        let mut magic = [0u8; 2];
        std::fs::File::open(&drive)
            .unwrap()
            .read_exact_at(&mut magic, m.offset + 1024 + 56)
            .unwrap();
        assert_eq!(magic, [0x53, 0xef], "{name}: ext4 at the member's start");
        assert!(
            !s.dir
                .path()
                .join("drives")
                .join(format!("{}.img", m.drive))
                .exists(),
            "{name}: the node did not open the drive file locally"
        );

        common::teardown(&s.plugin, &v).await;
        nothing_left(&s, &id);

        let mut capacity = vol.capacity_bytes;
        if let Some(after) = grow_to {
            let grown = Csi::controller_expand_volume(
                &s.plugin,
                ControllerExpandVolumeRequest {
                    volume_id: vol.volume_id.clone(),
                    capacity_range: CapacityRange::new(Some(after), None).unwrap(),
                    secrets: Secrets::default(),
                    volume_capability: Some(cap()),
                },
            )
            .await
            .unwrap();
            assert!(grown.capacity_bytes >= after);
            capacity = grown.capacity_bytes;
        }
        // Staged again: the same files, on the (grown) device.
        common::stage_with(&s.plugin, &v, &ctx).await.unwrap();
        common::publish(&s.plugin, &v).await.unwrap();
        assert_eq!(staged_device(&s, &id).0, capacity, "{name}");
        let fs_bytes = csi_node::filesystem_stats(&v.target).unwrap().bytes_total;
        if grow_to.is_some() {
            assert!(
                fs_bytes > vol.capacity_bytes,
                "{name}: ext4 grew at the stage to {fs_bytes}"
            );
        }
        common::check(&v.target, &files);
        common::teardown(&s.plugin, &v).await;
        nothing_left(&s, &id);
    }
}
