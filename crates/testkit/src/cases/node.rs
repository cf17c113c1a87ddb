//! Node service cases.

use std::path::Path;

use csi_types::capabilities::NodeCapabilities as NC;
use csi_types::{
    Code,
    capabilities::{ControllerCapabilities as CC, PluginCapabilities},
    node::{NodeExpandVolumeResponse, NodeGetInfoResponse, NodeGetVolumeStatsResponse},
    proto,
};

use super::{Case, UNKNOWN_ID, block, case, rw};
use crate::ctx::{Answer, CaseError, Cleanup, Ctx, code, ensure, fail, ok_raw};

/// A node case that sends a request with one REQUIRED field left out.
///
/// With a trailing `unknown`, the request also names a volume that does not
/// exist, so two of the spec's rules apply: `INVALID_ARGUMENT` for the
/// missing field and `NOT_FOUND` for the volume. The field is one the RPC
/// acts on (not an object-bound field, see `csi_types::bound`), so
/// `INVALID_ARGUMENT` is preferred — it is what the SDK's precedence rule
/// and the CSI community's sanity suite answer — and `NOT_FOUND` passes with
/// a warning.
macro_rules! missing {
    ($name:literal, $field:literal, |$c:ident| $need:block, $rpc:literal, $method:ident, $req:expr) => {
        case!(
            $name,
            concat!($rpc, " without `", $field, "` answers INVALID_ARGUMENT"),
            |$c| {
                $need;
                let req = $req;
                code($rpc, $c.nd().$method(req).await, Code::InvalidArgument)
            }
        )
    };
    ($name:literal, $field:literal, |$c:ident| $need:block, $rpc:literal, $method:ident, $req:expr, unknown) => {
        case!(
            $name,
            concat!(
                $rpc, " without `", $field,
                "` (and an unknown volume) answers INVALID_ARGUMENT; NOT_FOUND passes with a warning"
            ),
            |$c| {
                $need;
                let req = $req;
                let r = $c.nd().$method(req).await;
                $c.answer(
                    $rpc,
                    r,
                    Answer::Code(Code::InvalidArgument),
                    &[Answer::Code(Code::NotFound)],
                    concat!(
                        "the volume does not exist and `", $field,
                        "` is missing; `", $field,
                        "` is a path or capability the RPC acts on, and the CSI sanity suite expects INVALID_ARGUMENT"
                    ),
                )
            }
        )
    };
}

/// A volume published on the node at a target path, when the controller can
/// create one (`None` for a node-only driver): the object for the cases
/// whose object-bound field is left out, so that only one rule applies.
async fn published_volume(c: &Ctx) -> Result<Option<(String, String)>, CaseError> {
    if !c.found().controller.contains(CC::CREATE_DELETE_VOLUME) {
        return Ok(None);
    }
    let (vol, staging, pctx) = c.ready_for_node_publish(rw()).await?;
    let req = c.node_publish_req(vol.volume_id.as_str(), &staging, rw(), false, &pctx)?;
    let target = req.target_path.clone();
    ok_raw("NodePublishVolume", c.send_node_publish(req).await)?;
    Ok(Some((vol.volume_id.into_string(), target)))
}

/// The answer to a request without `volume_path` (object-bound: see
/// `csi_types::bound`): for a published volume only `INVALID_ARGUMENT`
/// applies; for an unknown one (no controller to make a volume) both
/// `INVALID_ARGUMENT` and the missing volume's `NOT_FOUND` are right.
fn missing_path_answer<P>(
    c: &Ctx,
    rpc: &str,
    known: bool,
    r: Result<P, csi_types::CsiError>,
) -> Result<(), CaseError> {
    if known {
        return code(rpc, r, Code::InvalidArgument);
    }
    match r {
        Err(e) if matches!(e.code(), Code::InvalidArgument | Code::NotFound) => Ok(()),
        // Fails, naming both accepted answers (NOT_FOUND was matched above).
        other => c.answer(
            rpc,
            other,
            Answer::Code(Code::InvalidArgument),
            &[Answer::Code(Code::NotFound)],
            "",
        ),
    }
}

/// The answer to a request naming an unknown volume with a relative
/// `volume_path`: the missing volume comes first (`NOT_FOUND`, what the CSI
/// sanity suite expects); `INVALID_ARGUMENT` for the path passes with a
/// warning.
fn unknown_relative_answer<P>(
    c: &Ctx,
    rpc: &str,
    r: Result<P, csi_types::CsiError>,
) -> Result<(), CaseError> {
    c.answer(
        rpc,
        r,
        Answer::Code(Code::NotFound),
        &[Answer::Code(Code::InvalidArgument)],
        "the volume does not exist, and `volume_path` only locates an existing volume (the SDK's precedence rule and the CSI sanity suite answer NOT_FOUND)",
    )
}

fn abs(dir: &Path, leaf: &str) -> String {
    dir.join(leaf).to_string_lossy().into_owned()
}

/// Whether a file can be created in `dir`. When the harness runs with
/// privileges that bypass permission bits (root), a directory whose mode
/// grants no write permission also counts as read-only, since the kernel
/// would refuse every unprivileged writer.
fn writable(dir: &Path) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let probe = dir.join(".csi-testkit-write-probe");
    match std::fs::write(&probe, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(meta.permissions().mode() & 0o222 != 0)
        }
        Err(_) => Ok(false),
    }
}

pub(super) async fn unstage_unpublish_order(
    c: &Ctx,
    volume_id: &str,
    target: &str,
    staging: &Option<String>,
) -> Result<(), CaseError> {
    let un = proto::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.to_string(),
    };
    ok_raw(
        "NodeUnpublishVolume",
        c.nd().raw_node_unpublish_volume(un.clone()).await,
    )?;
    ok_raw(
        "NodeUnpublishVolume (again)",
        c.nd().raw_node_unpublish_volume(un).await,
    )?;
    let (v, t) = (volume_id.to_string(), target.to_string());
    c.forget(|x| matches!(x, Cleanup::NodePublish(a, b) if *a == v && *b == t));
    ensure!(
        std::fs::symlink_metadata(target).is_err(),
        "NodeUnpublishVolume left the target path {target} behind (the plugin MUST delete it)"
    );
    if let Some(s) = staging {
        let un = proto::NodeUnstageVolumeRequest {
            volume_id: volume_id.to_string(),
            staging_target_path: s.clone(),
        };
        ok_raw(
            "NodeUnstageVolume",
            c.nd().raw_node_unstage_volume(un.clone()).await,
        )?;
        ok_raw(
            "NodeUnstageVolume (again)",
            c.nd().raw_node_unstage_volume(un).await,
        )?;
        let (v, s) = (volume_id.to_string(), s.clone());
        c.forget(|x| matches!(x, Cleanup::Stage(a, b) if *a == v && *b == s));
    }
    Ok(())
}

/// The two cases of an RPC whose `volume_path` is object-bound
/// (`csi_types::bound`): without it, for a published volume (only
/// `INVALID_ARGUMENT` applies); and relative, for an unknown volume
/// (`NOT_FOUND` preferred).
macro_rules! volume_path_cases {
    ($prefix:literal, $rpc:literal, $cap:ident, $method:ident, $req:ident) => {
        [
            case!(
                concat!($prefix, "/missing_volume_path"),
                concat!(
                    $rpc,
                    " without `volume_path` answers INVALID_ARGUMENT for a published volume (for an unknown volume, with a node-only driver, NOT_FOUND is as right)"
                ),
                |c| {
                    c.need_node(NC::$cap, stringify!($cap))?;
                    let known = published_volume(&c).await?;
                    let volume_id = known
                        .as_ref()
                        .map_or(UNKNOWN_ID.to_string(), |(v, _)| v.clone());
                    let r = c
                        .nd()
                        .$method(proto::$req {
                            volume_id,
                            ..Default::default()
                        })
                        .await;
                    missing_path_answer(&c, $rpc, known.is_some(), r)
                }
            ),
            case!(
                concat!($prefix, "/unknown_volume_relative_path"),
                concat!(
                    $rpc,
                    " of a volume that does not exist with a relative `volume_path` answers NOT_FOUND (INVALID_ARGUMENT passes with a warning)"
                ),
                |c| {
                    c.need_node(NC::$cap, stringify!($cap))?;
                    let r = c
                        .nd()
                        .$method(proto::$req {
                            volume_id: UNKNOWN_ID.into(),
                            volume_path: "some/path".into(),
                            ..Default::default()
                        })
                        .await;
                    unknown_relative_answer(&c, concat!($rpc, " (unknown volume, relative path)"), r)
                }
            ),
        ]
    };
}

pub(super) fn cases() -> Vec<Case> {
    let mut v = vec![
        case!(
            "node/get_info",
            "NodeGetInfo answers a valid node_id (REQUIRED, at most 256 bytes) and a max_volumes_per_node that is not negative (0 or unset: the CO decides)",
            |c| {
                // The response rules check both fields; the typed response
                // reads 0 as no limit, as the spec does.
                let _: NodeGetInfoResponse = c.ok(
                    "NodeGetInfo",
                    c.nd().raw_node_get_info(Default::default()).await,
                )?;
                Ok(())
            }
        ),
        case!(
            "node/get_capabilities",
            "NodeGetCapabilities answers",
            |c| {
                let _: csi_types::node::NodeGetCapabilitiesResponse = c.ok(
                    "NodeGetCapabilities",
                    c.nd().raw_node_get_capabilities(Default::default()).await,
                )?;
                Ok(())
            }
        ),
        missing!(
            "node/stage_volume/missing_volume_id",
            "volume_id",
            |c| { c.need_node(NC::STAGE_UNSTAGE_VOLUME, "STAGE_UNSTAGE_VOLUME")? },
            "NodeStageVolume",
            raw_node_stage_volume,
            proto::NodeStageVolumeRequest {
                staging_target_path: abs(&c.config().staging_dir, "x"),
                volume_capability: Some(rw()),
                ..Default::default()
            }
        ),
        missing!(
            "node/stage_volume/missing_staging_target_path",
            "staging_target_path",
            |c| { c.need_node(NC::STAGE_UNSTAGE_VOLUME, "STAGE_UNSTAGE_VOLUME")? },
            "NodeStageVolume",
            raw_node_stage_volume,
            proto::NodeStageVolumeRequest {
                volume_id: UNKNOWN_ID.into(),
                volume_capability: Some(rw()),
                ..Default::default()
            },
            unknown
        ),
        missing!(
            "node/stage_volume/missing_volume_capability",
            "volume_capability",
            |c| { c.need_node(NC::STAGE_UNSTAGE_VOLUME, "STAGE_UNSTAGE_VOLUME")? },
            "NodeStageVolume",
            raw_node_stage_volume,
            proto::NodeStageVolumeRequest {
                volume_id: UNKNOWN_ID.into(),
                staging_target_path: abs(&c.config().staging_dir, "x"),
                ..Default::default()
            },
            unknown
        ),
        missing!(
            "node/unstage_volume/missing_volume_id",
            "volume_id",
            |c| { c.need_node(NC::STAGE_UNSTAGE_VOLUME, "STAGE_UNSTAGE_VOLUME")? },
            "NodeUnstageVolume",
            raw_node_unstage_volume,
            proto::NodeUnstageVolumeRequest {
                staging_target_path: abs(&c.config().staging_dir, "x"),
                ..Default::default()
            }
        ),
        missing!(
            "node/unstage_volume/missing_staging_target_path",
            "staging_target_path",
            |c| { c.need_node(NC::STAGE_UNSTAGE_VOLUME, "STAGE_UNSTAGE_VOLUME")? },
            "NodeUnstageVolume",
            raw_node_unstage_volume,
            proto::NodeUnstageVolumeRequest {
                volume_id: UNKNOWN_ID.into(),
                ..Default::default()
            },
            unknown
        ),
        missing!(
            "node/publish_volume/missing_volume_id",
            "volume_id",
            |c| {},
            "NodePublishVolume",
            raw_node_publish_volume,
            proto::NodePublishVolumeRequest {
                target_path: abs(&c.config().target_dir, "x"),
                staging_target_path: abs(&c.config().staging_dir, "x"),
                volume_capability: Some(rw()),
                ..Default::default()
            }
        ),
        missing!(
            "node/publish_volume/missing_target_path",
            "target_path",
            |c| {},
            "NodePublishVolume",
            raw_node_publish_volume,
            proto::NodePublishVolumeRequest {
                volume_id: UNKNOWN_ID.into(),
                staging_target_path: abs(&c.config().staging_dir, "x"),
                volume_capability: Some(rw()),
                ..Default::default()
            },
            unknown
        ),
        missing!(
            "node/publish_volume/missing_volume_capability",
            "volume_capability",
            |c| {},
            "NodePublishVolume",
            raw_node_publish_volume,
            proto::NodePublishVolumeRequest {
                volume_id: UNKNOWN_ID.into(),
                staging_target_path: abs(&c.config().staging_dir, "x"),
                target_path: abs(&c.config().target_dir, "x"),
                ..Default::default()
            },
            unknown
        ),
        missing!(
            "node/unpublish_volume/missing_volume_id",
            "volume_id",
            |c| {},
            "NodeUnpublishVolume",
            raw_node_unpublish_volume,
            proto::NodeUnpublishVolumeRequest {
                target_path: abs(&c.config().target_dir, "x"),
                ..Default::default()
            }
        ),
        missing!(
            "node/unpublish_volume/missing_target_path",
            "target_path",
            |c| {},
            "NodeUnpublishVolume",
            raw_node_unpublish_volume,
            proto::NodeUnpublishVolumeRequest {
                volume_id: UNKNOWN_ID.into(),
                ..Default::default()
            },
            unknown
        ),
        missing!(
            "node/get_volume_stats/missing_volume_id",
            "volume_id",
            |c| { c.need_node(NC::GET_VOLUME_STATS, "GET_VOLUME_STATS")? },
            "NodeGetVolumeStats",
            raw_node_get_volume_stats,
            proto::NodeGetVolumeStatsRequest {
                volume_path: abs(&c.config().target_dir, "x"),
                ..Default::default()
            }
        ),
        missing!(
            "node/expand_volume/missing_volume_id",
            "volume_id",
            |c| { c.need_node(NC::EXPAND_VOLUME, "EXPAND_VOLUME")? },
            "NodeExpandVolume",
            raw_node_expand_volume,
            proto::NodeExpandVolumeRequest {
                volume_path: abs(&c.config().target_dir, "x"),
                ..Default::default()
            }
        ),
        case!(
            "node/stage_volume/unknown_volume",
            "NodeStageVolume of a volume that does not exist answers NOT_FOUND",
            |c| {
                c.need_node(NC::STAGE_UNSTAGE_VOLUME, "STAGE_UNSTAGE_VOLUME")?;
                let gone = c.gone_volume().await?;
                let path = c.staging_path()?;
                let r = c
                    .nd()
                    .raw_node_stage_volume(proto::NodeStageVolumeRequest {
                        volume_id: gone.id.clone(),
                        staging_target_path: path.clone(),
                        volume_capability: Some(rw()),
                        ..Default::default()
                    })
                    .await;
                if r.is_ok() {
                    c.push(Cleanup::Stage(gone.id.clone(), path));
                }
                c.not_found("NodeStageVolume (unknown volume)", r, &gone)
            }
        ),
        case!(
            "node/publish_volume/unknown_volume",
            "NodePublishVolume of a volume that does not exist answers NOT_FOUND",
            |c| {
                let staging = if c.found().node.contains(NC::STAGE_UNSTAGE_VOLUME) {
                    Some(c.staging_path()?)
                } else {
                    None
                };
                let gone = c.gone_volume().await?;
                let req =
                    c.node_publish_req(&gone.id, &staging, rw(), false, &Default::default())?;
                c.not_found(
                    "NodePublishVolume (unknown volume)",
                    c.send_node_publish(req).await,
                    &gone,
                )
            }
        ),
        case!(
            "node/get_volume_stats/unknown_volume",
            "NodeGetVolumeStats of a volume that does not exist answers NOT_FOUND",
            |c| {
                c.need_node(NC::GET_VOLUME_STATS, "GET_VOLUME_STATS")?;
                let gone = c.gone_volume().await?;
                let r = c
                    .nd()
                    .raw_node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
                        volume_id: gone.id.clone(),
                        volume_path: c.target_path()?,
                        ..Default::default()
                    })
                    .await;
                c.not_found("NodeGetVolumeStats (unknown volume)", r, &gone)
            }
        ),
        case!(
            "node/expand_volume/unknown_volume",
            "NodeExpandVolume of a volume that does not exist answers NOT_FOUND",
            |c| {
                c.need_node(NC::EXPAND_VOLUME, "EXPAND_VOLUME")?;
                let gone = c.gone_volume().await?;
                let r = c
                    .nd()
                    .raw_node_expand_volume(proto::NodeExpandVolumeRequest {
                        volume_id: gone.id.clone(),
                        volume_path: c.target_path()?,
                        ..Default::default()
                    })
                    .await;
                c.not_found("NodeExpandVolume (unknown volume)", r, &gone)
            }
        ),
        case!(
            "node/lifecycle",
            "stage → publish → stats → expand → unpublish → unstage, each call sent twice, succeeds and creates and removes the target",
            |c| { lifecycle(c).await }
        ),
        case!(
            "node/lifecycle_block",
            "a BLOCK volume staged and published (each call twice) is a block device at the target, and unpublish and unstage (each twice) remove it",
            |c| { lifecycle_block(c).await }
        ),
        case!(
            "node/publish_volume/readonly",
            "NodePublishVolume with readonly makes a mount target nobody can write to",
            |c| {
                let (vol, staging, pctx) = c.ready_for_node_publish(rw()).await?;
                let req =
                    c.node_publish_req(vol.volume_id.as_str(), &staging, rw(), true, &pctx)?;
                let target = req.target_path.clone();
                ok_raw(
                    "NodePublishVolume (readonly)",
                    c.send_node_publish(req).await,
                )?;
                match writable(Path::new(&target)) {
                    Err(e) => fail!("after NodePublishVolume (readonly): {e}"),
                    Ok(true) => fail!(
                        "NodePublishVolume with readonly=true left the target {target} writable"
                    ),
                    Ok(false) => Ok(()),
                }
            }
        ),
        case!(
            "node/publish_volume/incompatible",
            "NodePublishVolume again at the same target with another readonly flag answers ALREADY_EXISTS",
            |c| {
                let (vol, staging, pctx) = c.ready_for_node_publish(rw()).await?;
                let req =
                    c.node_publish_req(vol.volume_id.as_str(), &staging, rw(), false, &pctx)?;
                ok_raw("NodePublishVolume", c.send_node_publish(req.clone()).await)?;
                let mut again = req;
                again.readonly = true;
                code(
                    "NodePublishVolume (same target, readonly)",
                    c.send_node_publish(again).await,
                    Code::AlreadyExists,
                )
            }
        ),
    ];
    v.extend(volume_path_cases!(
        "node/get_volume_stats",
        "NodeGetVolumeStats",
        GET_VOLUME_STATS,
        raw_node_get_volume_stats,
        NodeGetVolumeStatsRequest
    ));
    v.extend(volume_path_cases!(
        "node/expand_volume",
        "NodeExpandVolume",
        EXPAND_VOLUME,
        raw_node_expand_volume,
        NodeExpandVolumeRequest
    ));
    v
}

async fn lifecycle(c: Ctx) -> Result<(), CaseError> {
    let (vol, staging, pctx) = c.ready_for_node_publish(rw()).await?;
    let id = vol.volume_id.to_string();
    if let Some(s) = &staging {
        // Staging again with the same arguments is idempotent.
        ok_raw(
            "NodeStageVolume (retry)",
            c.nd()
                .raw_node_stage_volume(proto::NodeStageVolumeRequest {
                    volume_id: id.clone(),
                    publish_context: pctx.clone(),
                    staging_target_path: s.clone(),
                    volume_capability: Some(rw()),
                    ..Default::default()
                })
                .await,
        )?;
    }
    let req = c.node_publish_req(&id, &staging, rw(), false, &pctx)?;
    let target = req.target_path.clone();
    ensure!(
        std::fs::symlink_metadata(&target).is_err(),
        "the harness's target path {target} exists before publish"
    );
    ok_raw("NodePublishVolume", c.send_node_publish(req.clone()).await)?;
    ok_raw("NodePublishVolume (retry)", c.send_node_publish(req).await)?;
    ensure!(
        Path::new(&target).is_dir(),
        "NodePublishVolume of a mount volume did not create the target directory {target}"
    );
    if c.found().node.contains(NC::GET_VOLUME_STATS) {
        let s: NodeGetVolumeStatsResponse = c.ok(
            "NodeGetVolumeStats",
            c.nd()
                .raw_node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
                    volume_id: id.clone(),
                    volume_path: target.clone(),
                    staging_target_path: staging.clone().unwrap_or_default(),
                })
                .await,
        )?;
        // The spec relates none of the figures: a thin share may report its
        // pool's free space as available, compressed data a used above the
        // total. Worth a warning, not a failure.
        for u in &s.usage {
            if u.used > u.total || u.available > u.total {
                c.warn(format!(
                    "NodeGetVolumeStats: usage {u:?} has used or available above total (the spec allows it)"
                ));
            }
        }
    }
    let online = c
        .found()
        .plugin
        .contains(PluginCapabilities::VOLUME_EXPANSION_ONLINE);
    let mut new_size = None;
    let mut grow_refused = false;
    if online && c.found().controller.contains(CC::EXPAND_VOLUME) {
        let want = vol.capacity_bytes.max(c.config().volume_size) * 2;
        let r = c
            .ctl()
            .raw_controller_expand_volume(proto::ControllerExpandVolumeRequest {
                volume_id: id.clone(),
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: want as i64,
                    limit_bytes: 0,
                }),
                volume_capability: Some(rw()),
                ..Default::default()
            })
            .await;
        match r {
            // A size the plugin does not allow, which the spec lets it
            // refuse: the volume keeps its size and is not expanded online.
            Err(e) if e.code() == Code::OutOfRange => {
                c.warn(format!(
                    "ControllerExpandVolume (published) to {want} bytes answered OUT_OF_RANGE, so online expansion was not exercised: {}",
                    crate::ctx::describe(&e)
                ));
                grow_refused = true;
            }
            r => {
                let r: csi_types::controller::ControllerExpandVolumeResponse =
                    c.ok("ControllerExpandVolume (published)", r)?;
                ensure!(
                    r.capacity_bytes >= want,
                    "ControllerExpandVolume to {want} answered {}",
                    r.capacity_bytes
                );
                new_size = Some(want);
            }
        }
    }
    if online && !grow_refused && c.found().node.contains(NC::EXPAND_VOLUME) {
        let req = proto::NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.clone(),
            capacity_range: new_size.map(|b| proto::CapacityRange {
                required_bytes: b as i64,
                limit_bytes: 0,
            }),
            staging_target_path: staging.clone().unwrap_or_default(),
            volume_capability: Some(rw()),
            ..Default::default()
        };
        let a: NodeExpandVolumeResponse = c.ok(
            "NodeExpandVolume",
            c.nd().raw_node_expand_volume(req.clone()).await,
        )?;
        let b: NodeExpandVolumeResponse = c.ok(
            "NodeExpandVolume (retry)",
            c.nd().raw_node_expand_volume(req).await,
        )?;
        if let (Some(want), Some(got)) = (new_size, a.capacity_bytes) {
            ensure!(
                got >= want,
                "NodeExpandVolume to {want} answered capacity_bytes {got}"
            );
        }
        ensure!(
            a.capacity_bytes == b.capacity_bytes,
            "NodeExpandVolume retried answered {:?} then {:?}",
            a.capacity_bytes,
            b.capacity_bytes
        );
    }
    unstage_unpublish_order(&c, &id, &target, &staging).await?;
    Ok(())
}

/// Fails unless `target` is what publishing a BLOCK volume must make there:
/// a block device (spec, `NodePublishVolume.target_path`), or a regular
/// file when [`crate::Config::block_targets_may_be_files`] is set.
fn check_block_target(c: &Ctx, target: &str) -> Result<(), CaseError> {
    use std::os::unix::fs::FileTypeExt;
    // `metadata` follows a symlink to the device, which a CO can use as well.
    let meta = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) => fail!("NodePublishVolume of a BLOCK volume left no target at {target}: {e}"),
    };
    let kind = meta.file_type();
    if kind.is_block_device() || (kind.is_file() && c.config().block_targets_may_be_files) {
        return Ok(());
    }
    if kind.is_file() {
        fail!(
            "NodePublishVolume of a BLOCK volume made a regular file at {target}, not a block device (a driver that cannot make device nodes, like the memdriver, is run with Config::block_targets_may_be_files, --block-targets-may-be-files)"
        );
    }
    if kind.is_dir() {
        fail!(
            "NodePublishVolume of a BLOCK volume made a directory at {target}, where a block device belongs"
        );
    }
    fail!("NodePublishVolume of a BLOCK volume made {kind:?} at {target}, not a block device")
}

async fn lifecycle_block(c: Ctx) -> Result<(), CaseError> {
    c.need_controller(
        CC::CREATE_DELETE_VOLUME,
        "CREATE_DELETE_VOLUME (node cases need a volume to work on)",
    )?;
    c.node_id()?;
    let cap = block();
    let vol = c.block_volume("block").await?;
    let id = vol.volume_id.to_string();
    let pctx = c.controller_publish(&id, cap.clone(), false).await?;
    let staging = c.stage(&id, cap.clone(), &pctx).await?;
    if let Some(s) = &staging {
        ok_raw(
            "NodeStageVolume (BLOCK, retry)",
            c.nd()
                .raw_node_stage_volume(proto::NodeStageVolumeRequest {
                    volume_id: id.clone(),
                    publish_context: pctx.clone(),
                    staging_target_path: s.clone(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                })
                .await,
        )?;
    }
    let req = c.node_publish_req(&id, &staging, cap, false, &pctx)?;
    let target = req.target_path.clone();
    ok_raw(
        "NodePublishVolume (BLOCK)",
        c.send_node_publish(req.clone()).await,
    )?;
    ok_raw(
        "NodePublishVolume (BLOCK, retry)",
        c.send_node_publish(req).await,
    )?;
    check_block_target(&c, &target)?;
    if c.found().node.contains(NC::GET_VOLUME_STATS) {
        // For a block volume `used` and `available` MAY be left out; the
        // typed response checks what is there.
        let _: NodeGetVolumeStatsResponse = c.ok(
            "NodeGetVolumeStats (BLOCK)",
            c.nd()
                .raw_node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
                    volume_id: id.clone(),
                    volume_path: target.clone(),
                    staging_target_path: staging.clone().unwrap_or_default(),
                })
                .await,
        )?;
    }
    unstage_unpublish_order(&c, &id, &target, &staging).await
}
