//! `local demo`: the driver started in process on a temporary socket and
//! state directory, and driven over gRPC by the SDK's client through a whole
//! volume life cycle, one printed line per step.
//!
//! As root the node steps use real bind mounts and a loop device; otherwise
//! the demo says that mounts need root and runs the controller steps only.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use csi_types::client::Client;
// Not a glob: the client implements both `RawCsi` and `Csi`, and only the typed `Csi` is wanted here.
use csi_types::{
    Csi, CsiError,
    controller::{
        ControllerExpandVolumeRequest, ControllerGetCapabilitiesRequest,
        ControllerGetVolumeRequest, ControllerModifyVolumeRequest, ControllerPublishVolumeRequest,
        ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest,
        DeleteSnapshotRequest, DeleteVolumeRequest, GetCapacityRequest, ListVolumesRequest,
    },
    identity::GetPluginInfoRequest,
    ids::{NodeId, NodePath, SnapshotName, VolumeId, VolumeName},
    node::{
        NodeExpandVolumeRequest, NodeGetVolumeStatsRequest, NodePublishVolumeRequest,
        NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
    },
    redact::Secrets,
    types::{AccessMode, CapacityRange, Map, VolumeCapability, VolumeContentSource},
};

use crate::{Config, LocalDriver};

const MIB: u64 = 1 << 20;

/// Prints steps and counts failures.
struct Steps<'a, W: Write> {
    out: &'a mut W,
    failed: usize,
}

impl<W: Write> Steps<'_, W> {
    fn line(&mut self, tag: &str, what: &str, detail: &str) {
        let _ = writeln!(self.out, "[{tag}] {what}: {detail}");
    }

    /// Records a step; returns its value when it succeeded.
    fn check<T>(
        &mut self,
        what: &str,
        r: Result<T, String>,
        show: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                let d = show(&v);
                self.line("ok  ", what, &d);
                Some(v)
            }
            Err(e) => {
                self.failed += 1;
                self.line("FAIL", what, &e);
                None
            }
        }
    }

    fn skip(&mut self, what: &str, why: &str) {
        self.line("skip", what, why);
    }
}

fn s<T>(r: Result<T, CsiError>) -> Result<T, String> {
    r.map_err(|e| format!("{} ({})", e, e.code()))
}

fn mount_vol(name: &str, bytes: u64, source: Option<VolumeContentSource>) -> CreateVolumeRequest {
    volume_request(
        name,
        bytes,
        VolumeCapability::mount(AccessMode::SingleNodeWriter),
        source,
    )
}

fn volume_request(
    name: &str,
    bytes: u64,
    cap: VolumeCapability,
    source: Option<VolumeContentSource>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: VolumeName::new(name).expect("a valid constant"),
        capacity_range: Some(CapacityRange {
            required_bytes: Some(bytes),
            limit_bytes: None,
        }),
        volume_capabilities: vec![cap],
        parameters: Map::new(),
        secrets: Secrets::default(),
        volume_content_source: source,
        accessibility_requirements: None,
        mutable_parameters: [("iops-class".to_string(), "standard".to_string())].into(),
    }
}

/// A path below the demo's directory as a CSI path; `run` checked that directory is UTF-8, and
/// the names below it are.
fn path(p: &Path) -> NodePath {
    let p = p.to_str().expect("below the demo's UTF-8 directory");
    NodePath::new(p).expect("an absolute temp path")
}

/// Runs the demo, printing to `out`; true when every step succeeded.
pub async fn run(out: &mut impl Write) -> bool {
    let mut st = Steps { out, failed: 0 };
    let tmp = match tempfile::Builder::new().prefix("csi-local-demo-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            st.check::<()>("make a temporary directory", Err(e.to_string()), |_| {
                String::new()
            });
            return false;
        }
    };
    // CSI paths are strings: a lossy copy of a directory whose name is not UTF-8 would name
    // another directory, and the driver would mount there.
    if tmp.path().to_str().is_none() {
        st.check::<()>(
            "make a temporary directory",
            Err(format!(
                "{} is not UTF-8, and CSI paths (staging_target_path, target_path) are strings: \
                 set TMPDIR to a directory whose path is UTF-8",
                tmp.path().display()
            )),
            |_| String::new(),
        );
        return false;
    }
    let state_dir = tmp.path().join("state");
    let socket = tmp.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let cfg = Config::with_state_dir(&state_dir);
    let node_id = cfg.node_id.clone();

    let Some(driver) = st.check("open the driver", LocalDriver::open(cfg), |d| {
        format!(
            "state in {}, {} GiB, node {}",
            d.config().state_dir.display(),
            d.config().capacity >> 30,
            d.config().node_id
        )
    }) else {
        return false;
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let driver = driver.clone();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            crate::serve(&driver, &endpoint, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let client = connect(&endpoint).await;
    let Some(client) = st.check("connect a csi_types::client::Client", client, |_| {
        endpoint.clone()
    }) else {
        let _ = stop.send(());
        return false;
    };

    steps(&mut st, &client, tmp.path(), &node_id).await;

    let _ = stop.send(());
    let served = server.await.map_err(|e| e.to_string()).and_then(|r| r);
    st.check("stop the server", served, |_| {
        format!("socket removed: {}", !socket.exists())
    });
    let ok = st.failed == 0;
    let summary = if ok {
        "every step succeeded".to_string()
    } else {
        format!("{} step(s) failed", st.failed)
    };
    st.line(if ok { "done" } else { "FAIL" }, "demo", &summary);
    csi_node::release_under(tmp.path());
    ok
}

async fn connect(endpoint: &str) -> Result<Client, String> {
    let mut last = String::new();
    for _ in 0..100 {
        match Client::connect(endpoint).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}

async fn steps<W: Write>(st: &mut Steps<'_, W>, c: &Client, tmp: &Path, node_id: &NodeId) {
    st.check(
        "GetPluginInfo",
        s(c.get_plugin_info(GetPluginInfoRequest {}).await),
        |r| format!("{} {}", r.name, r.vendor_version),
    );
    st.check(
        "ControllerGetCapabilities",
        s(
            c.controller_get_capabilities(ControllerGetCapabilitiesRequest {})
                .await,
        ),
        |r| format!("{:?}", r.capabilities),
    );

    let Some(vol) = st.check(
        "CreateVolume demo-data (64 MiB, mount)",
        s(c.create_volume(mount_vol("demo-data", 64 * MIB, None))
            .await),
        |r| {
            format!(
                "{} of {} MiB",
                r.volume.volume_id,
                r.volume.capacity_bytes / MIB
            )
        },
    ) else {
        return;
    };
    let vol = vol.volume.volume_id;
    st.check(
        "GetCapacity",
        s(c.get_capacity(GetCapacityRequest::default()).await),
        |r| {
            format!(
                "{} MiB available, largest volume {} MiB",
                r.available_capacity / MIB,
                r.maximum_volume_size.unwrap_or(0) / MIB
            )
        },
    );

    let root = csi_node::is_root();
    let mount_cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let writer_staging = tmp.join("staging-data");
    let writer_target = tmp.join("pod-writer");
    let payload = b"hello from the local CSI driver\n";
    if root {
        publish(
            st,
            c,
            &vol,
            node_id,
            &mount_cap,
            &writer_staging,
            &writer_target,
            false,
        )
        .await;
        let file = writer_target.join("hello.txt");
        st.check(
            "write hello.txt through the published target",
            std::fs::write(&file, payload).map_err(|e| e.to_string()),
            |_| file.display().to_string(),
        );
        stats(st, c, &vol, &writer_target).await;
    } else {
        st.skip(
            "stage, publish and write through a bind mount",
            "not running as root: mounts need root (run `sudo cargo run -p local -- demo`); the controller steps still run",
        );
    }

    let Some(snap) = st.check(
        "CreateSnapshot demo-snap (copies the volume's tree)",
        s(c.create_snapshot(CreateSnapshotRequest {
            source_volume_id: vol.clone(),
            name: SnapshotName::new("demo-snap").expect("a valid constant"),
            secrets: Secrets::default(),
            parameters: Map::new(),
        })
        .await),
        |r| {
            format!(
                "{} of {}, ready {}",
                r.snapshot.snapshot_id, r.snapshot.source_volume_id, r.snapshot.ready_to_use
            )
        },
    ) else {
        return;
    };
    let snap = snap.snapshot.snapshot_id;
    let clone = st.check(
        "CreateVolume demo-restore from the snapshot",
        s(c.create_volume(mount_vol(
            "demo-restore",
            64 * MIB,
            Some(VolumeContentSource::Snapshot(snap.clone())),
        ))
        .await),
        |r| format!("{} from {:?}", r.volume.volume_id, r.volume.content_source),
    );
    let clone = clone.map(|r| r.volume.volume_id);

    let reader_staging = tmp.join("staging-restore");
    let reader_target = tmp.join("pod-reader");
    if let (true, Some(clone)) = (root, &clone) {
        publish(
            st,
            c,
            clone,
            node_id,
            &mount_cap,
            &reader_staging,
            &reader_target,
            true,
        )
        .await;
        let read = std::fs::read(reader_target.join("hello.txt")).map_err(|e| e.to_string());
        let read = read.and_then(|b| {
            if b == payload {
                Ok(b)
            } else {
                Err(format!(
                    "read {:?}, expected {:?}",
                    String::from_utf8_lossy(&b),
                    String::from_utf8_lossy(payload)
                ))
            }
        });
        st.check("read hello.txt back from the read-only clone", read, |b| {
            format!("{:?}", String::from_utf8_lossy(b).trim_end())
        });
        let write = match std::fs::write(reader_target.join("new.txt"), b"x") {
            Ok(()) => Err("the write succeeded on a read-only publish".to_string()),
            Err(e) if e.raw_os_error() == Some(30) => Ok(e),
            Err(e) => Err(format!("unexpected error {e}")),
        };
        st.check("a write to the read-only clone fails", write, |e| {
            e.to_string()
        });
    }

    st.check(
        "ControllerExpandVolume demo-data to 128 MiB",
        s(c.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: vol.clone(),
            capacity_range: CapacityRange::exactly(128 * MIB),
            secrets: Secrets::default(),
            volume_capability: Some(mount_cap.clone()),
        })
        .await),
        |r| {
            format!(
                "{} MiB, node expansion required: {}",
                r.capacity_bytes / MIB,
                r.node_expansion_required
            )
        },
    );
    if root {
        st.check(
            "NodeExpandVolume",
            s(c.node_expand_volume(NodeExpandVolumeRequest {
                volume_id: vol.clone(),
                volume_path: path(&writer_target).into(),
                capacity_range: Some(CapacityRange::exactly(128 * MIB)),
                staging_target_path: Some(path(&writer_staging)).into(),
                volume_capability: Some(mount_cap.clone()),
                secrets: Secrets::default(),
            })
            .await),
            |r| format!("{} MiB", r.capacity_bytes.unwrap_or(0) / MIB),
        );
        stats(st, c, &vol, &writer_target).await;
    }
    st.check(
        "ControllerModifyVolume iops-class=high",
        s(c.controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: vol.clone(),
            secrets: Secrets::default(),
            mutable_parameters: [("iops-class".to_string(), "high".to_string())].into(),
        })
        .await),
        |_| "recorded".into(),
    );
    st.check(
        "ControllerGetVolume",
        s(c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: vol.clone(),
        })
        .await),
        |r| {
            format!(
                "{} MiB, published to {:?}, condition {:?}, iops-class {:?}",
                r.volume.capacity_bytes / MIB,
                r.status
                    .published_node_ids
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>(),
                r.status
                    .volume_condition
                    .as_ref()
                    .map(|c| c.message.as_str()),
                r.volume.volume_context.get("iops-class")
            )
        },
    );
    st.check("ListVolumes (2 per page)", list_all(c).await, |ids| {
        format!("{ids:?}")
    });

    if root {
        block_steps(st, c, tmp, node_id).await;
    } else {
        st.skip("block volume on a loop device", "not running as root");
    }

    // Teardown, in the order a CO uses.
    if root {
        unpublish(st, c, &vol, node_id, &writer_staging, &writer_target).await;
        if let Some(clone) = &clone {
            unpublish(st, c, clone, node_id, &reader_staging, &reader_target).await;
        }
    }
    st.check(
        "DeleteSnapshot",
        s(c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snap,
            secrets: Secrets::default(),
        })
        .await),
        |_| "deleted".into(),
    );
    for id in std::iter::once(vol).chain(clone) {
        st.check(
            &format!("DeleteVolume {id}"),
            s(c.delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: Secrets::default(),
            })
            .await),
            |_| "deleted".into(),
        );
    }
    st.check(
        "GetCapacity after teardown",
        s(c.get_capacity(GetCapacityRequest::default()).await),
        |r| format!("{} MiB available", r.available_capacity / MIB),
    );
}

#[allow(clippy::too_many_arguments)] // One call per demo step; a struct would only rename them.
async fn publish<W: Write>(
    st: &mut Steps<'_, W>,
    c: &Client,
    vol: &VolumeId,
    node_id: &NodeId,
    cap: &VolumeCapability,
    staging: &Path,
    target: &Path,
    readonly: bool,
) {
    let ctx = st.check(
        &format!("ControllerPublishVolume {vol} (readonly {readonly})"),
        s(c.controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: vol.clone(),
            node_id: node_id.clone(),
            volume_capability: cap.clone(),
            readonly,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        })
        .await),
        |r| format!("publish context {:?}", r.publish_context),
    );
    let publish_context = ctx.map(|r| r.publish_context).unwrap_or_default();
    let _ = std::fs::create_dir_all(staging);
    st.check(
        &format!("NodeStageVolume {vol}"),
        s(c.node_stage_volume(NodeStageVolumeRequest {
            volume_id: vol.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: path(staging),
            volume_capability: cap.clone(),
            secrets: Secrets::default(),
            volume_context: Map::new(),
        })
        .await),
        |_| {
            let kind = if cap.is_block() {
                "loop devices checked"
            } else {
                "bind mount"
            };
            format!("{kind} at {}", staging.display())
        },
    );
    st.check(
        &format!("NodePublishVolume {vol}"),
        s(c.node_publish_volume(NodePublishVolumeRequest {
            volume_id: vol.clone(),
            publish_context,
            staging_target_path: Some(path(staging)),
            target_path: path(target),
            volume_capability: cap.clone(),
            readonly,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        })
        .await),
        |_| {
            let ro = if readonly { "read-only " } else { "" };
            format!("{ro}bind mount at {}", target.display())
        },
    );
}

async fn unpublish<W: Write>(
    st: &mut Steps<'_, W>,
    c: &Client,
    vol: &VolumeId,
    node_id: &NodeId,
    staging: &Path,
    target: &Path,
) {
    st.check(
        &format!("NodeUnpublishVolume {vol}"),
        s(c.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: vol.clone(),
            target_path: path(target),
        })
        .await)
        .and_then(|_| {
            if target.exists() {
                Err(format!("{} still exists", target.display()))
            } else {
                Ok(())
            }
        }),
        |_| format!("unmounted, {} removed", target.display()),
    );
    st.check(
        &format!("NodeUnstageVolume {vol}"),
        s(c.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: vol.clone(),
            staging_target_path: path(staging),
        })
        .await),
        |_| "unmounted".into(),
    );
    st.check(
        &format!("ControllerUnpublishVolume {vol}"),
        s(
            c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: vol.clone(),
                node_id: Some(node_id.clone()),
                secrets: Secrets::default(),
            })
            .await,
        ),
        |_| "detached".into(),
    );
}

async fn stats<W: Write>(st: &mut Steps<'_, W>, c: &Client, vol: &VolumeId, target: &Path) {
    st.check(
        "NodeGetVolumeStats",
        s(c.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: vol.clone(),
            volume_path: path(target).into(),
            staging_target_path: None.into(),
        })
        .await),
        |r| {
            let parts: Vec<String> = r
                .usage
                .iter()
                .map(|u| {
                    format!(
                        "{:?}: {} used / {} total / {} available",
                        u.unit, u.used, u.total, u.available
                    )
                })
                .collect();
            format!(
                "{}; {}",
                parts.join("; "),
                r.volume_condition
                    .as_ref()
                    .map(|c| c.message.as_str())
                    .unwrap_or("")
            )
        },
    );
}

async fn list_all(c: &Client) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = s(c
            .list_volumes(ListVolumesRequest {
                max_entries: Some(2),
                starting_token: token,
            })
            .await)?;
        ids.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.volume_id.to_string()),
        );
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(ids),
        }
    }
}

/// A block volume: a sparse image published as a loop device.
async fn block_steps<W: Write>(st: &mut Steps<'_, W>, c: &Client, tmp: &Path, node_id: &NodeId) {
    let cap = VolumeCapability::block(AccessMode::SingleNodeWriter);
    let Some(r) = st.check(
        "CreateVolume demo-block (16 MiB, block)",
        s(
            c.create_volume(volume_request("demo-block", 16 * MIB, cap.clone(), None))
                .await,
        ),
        |r| format!("{} (a sparse image)", r.volume.volume_id),
    ) else {
        return;
    };
    let vol = r.volume.volume_id;
    let staging = tmp.join("staging-block");
    let target = tmp.join("pod-block-device");
    let _ = std::fs::create_dir_all(&staging);
    let staged = s(c
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: vol.clone(),
            publish_context: Map::new(),
            staging_target_path: path(&staging),
            volume_capability: cap.clone(),
            secrets: Secrets::default(),
            volume_context: Map::new(),
        })
        .await);
    match staged {
        Err(e) if e.contains("FAILED_PRECONDITION") => {
            st.skip(
                "block volume on a loop device",
                &format!("this machine cannot: {e}"),
            );
        }
        staged => {
            if st
                .check("NodeStageVolume demo-block", staged, |_| {
                    "loop devices available".into()
                })
                .is_some()
            {
                publish_block(st, c, &vol, &cap, &staging, &target).await;
            }
        }
    }
    let _ = node_id;
    st.check(
        "DeleteVolume demo-block",
        s(c.delete_volume(DeleteVolumeRequest {
            volume_id: vol,
            secrets: Secrets::default(),
        })
        .await),
        |_| "deleted".into(),
    );
}

async fn publish_block<W: Write>(
    st: &mut Steps<'_, W>,
    c: &Client,
    vol: &VolumeId,
    cap: &VolumeCapability,
    staging: &Path,
    target: &Path,
) {
    let published = st.check(
        "NodePublishVolume demo-block",
        s(c.node_publish_volume(NodePublishVolumeRequest {
            volume_id: vol.clone(),
            publish_context: Map::new(),
            staging_target_path: Some(path(staging)),
            target_path: path(target),
            volume_capability: cap.clone(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        })
        .await),
        |_| format!("loop device bound at {}", target.display()),
    );
    if published.is_some() {
        let io = || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(target)?;
            dev.seek(SeekFrom::Start(MIB))?;
            dev.write_all(b"block data")?;
            dev.sync_all()?;
            dev.seek(SeekFrom::Start(MIB))?;
            let mut back = vec![0; 10];
            dev.read_exact(&mut back)?;
            Ok(back)
        };
        st.check(
            "write and read 10 bytes at 1 MiB through the device",
            io().map_err(|e| e.to_string()).and_then(|b| {
                if b == b"block data" {
                    Ok(b)
                } else {
                    Err(format!("read back {b:?}"))
                }
            }),
            |b| format!("{:?}", String::from_utf8_lossy(b)),
        );
        st.check(
            "NodeUnpublishVolume demo-block",
            s(c.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: vol.clone(),
                target_path: path(target),
            })
            .await),
            |_| "unmounted, loop device detached".into(),
        );
    }
    st.check(
        "NodeUnstageVolume demo-block",
        s(c.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: vol.clone(),
            staging_target_path: path(staging),
        })
        .await),
        |_| "done".into(),
    );
}
