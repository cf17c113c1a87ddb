//! `loose`: a second, independent CSI driver for the conformance runner.
//!
//! It is written differently from everything else in the workspace on
//! purpose, so that `csi-conformance` is checked against a driver that did
//! not grow up with it:
//!
//! - it implements the generated tonic service traits directly, on raw
//!   `csi_types::proto` messages: no typed requests, no `Plugin`, no
//!   `csi_types::server`; every field rule it applies is written out here;
//! - it follows the specification *loosely where the specification lets
//!   it*: volume ids are the CO's names; `published_node_ids` carries an
//!   empty entry after the real nodes ("MAY include nodes not published to
//!   or reported by the SP. The CO MUST be resilient to that"); volume
//!   conditions have no message (alpha, "informative for humans only");
//!   `ControllerUnpublishVolume` of an unknown volume answers `NOT_FOUND`
//!   (the spec says SHOULD answer `OK`); `NodeGetVolumeStats` checks its
//!   `volume_path` before it looks the volume up; `Probe` leaves `ready`
//!   unset; `ControllerPublishVolume` returns no publish context.
//!
//! The runner must pass it with zero failures (`.ci/conformance`); what is
//! loose shows up as warnings.
//!
//! Volumes live in memory; a node publication is a directory (mode 0555 when
//! read-only) or, for a block volume, an empty file at the target path.
//!
//! ```text
//! loose --endpoint unix:///path/csi.sock [--node-id ID]
//! ```
//! Exit status: 0 after SIGTERM/SIGINT, 1 when serving fails, 2 on bad
//! arguments (one line on stderr).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use csi_types::proto;
use csi_types::proto::controller_server::{Controller, ControllerServer};
use csi_types::proto::identity_server::{Identity, IdentityServer};
use csi_types::proto::node_server::{Node, NodeServer};
use tonic::{Request, Response, Status};

type Reply<T> = Result<Response<T>, Status>;

/// The largest volume; bigger requests answer `OUT_OF_RANGE`.
const MAX_VOLUME: i64 = 1 << 40;
/// The size of a volume created without a capacity range.
const DEFAULT_VOLUME: i64 = 1 << 20;
/// Sizes are rounded up to this.
const GRANULE: i64 = 4096;
const TOKEN_PREFIX: &str = "after:";

#[derive(Clone, PartialEq)]
struct Publication {
    capability: proto::VolumeCapability,
    readonly: bool,
}

struct Vol {
    capacity: i64,
    parameters: BTreeMap<String, String>,
    capabilities: Vec<proto::VolumeCapability>,
    /// Controller publications by node id.
    published: BTreeMap<String, Publication>,
    /// Node publications by target path.
    targets: BTreeMap<String, Publication>,
}

/// The driver: one node, volumes in memory. Clones share the state.
#[derive(Clone)]
struct Loose {
    node_id: String,
    volumes: Arc<Mutex<BTreeMap<String, Vol>>>,
}

fn invalid(field: &str, rule: &str) -> Status {
    Status::invalid_argument(format!("{field}: {rule}"))
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(invalid(field, "required"))
    } else if value.len() > 128 && field != "node_id" {
        Err(invalid(field, "longer than 128 bytes"))
    } else {
        Ok(())
    }
}

/// Checks a capability and tells whether it is a block one.
fn capability(field: &str, c: Option<&proto::VolumeCapability>) -> Result<bool, Status> {
    use proto::volume_capability::AccessType;
    let c = c.ok_or_else(|| invalid(field, "required"))?;
    let block = match &c.access_type {
        Some(AccessType::Block(_)) => true,
        Some(AccessType::Mount(_)) => false,
        None => return Err(invalid(field, "no access type")),
    };
    match &c.access_mode {
        Some(m) if m.mode > 0 && m.mode <= 7 => Ok(block),
        _ => Err(invalid(field, "no access mode")),
    }
}

fn mode(c: &proto::VolumeCapability) -> i32 {
    c.access_mode.as_ref().map_or(0, |m| m.mode)
}

/// SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY and the two SINGLE_NODE_*_WRITER modes.
fn single_node(c: &proto::VolumeCapability) -> bool {
    matches!(mode(c), 1 | 2 | 6 | 7)
}

/// SINGLE_NODE_READER_ONLY and MULTI_NODE_READER_ONLY.
fn reader_only(c: &proto::VolumeCapability) -> bool {
    matches!(mode(c), 2 | 3)
}

fn is_block(c: &proto::VolumeCapability) -> bool {
    matches!(
        c.access_type,
        Some(proto::volume_capability::AccessType::Block(_))
    )
}

impl Loose {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vol>> {
        self.volumes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn volume(id: &str, v: &Vol) -> proto::Volume {
        proto::Volume {
            volume_id: id.to_string(),
            capacity_bytes: v.capacity,
            ..Default::default()
        }
    }

    /// Loose on purpose: an empty entry after the real nodes, and a
    /// condition without a message.
    fn status(v: &Vol) -> (Vec<String>, Option<proto::VolumeCondition>) {
        let mut nodes: Vec<String> = v.published.keys().cloned().collect();
        nodes.push(String::new());
        (
            nodes,
            Some(proto::VolumeCondition {
                abnormal: false,
                message: String::new(),
            }),
        )
    }
}

#[tonic::async_trait]
impl Identity for Loose {
    async fn get_plugin_info(
        &self,
        _: Request<proto::GetPluginInfoRequest>,
    ) -> Reply<proto::GetPluginInfoResponse> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: "loose.csi.example.com".into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Reply<proto::GetPluginCapabilitiesResponse> {
        use proto::plugin_capability::{Service, Type, service};
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: vec![proto::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            }],
        }))
    }

    async fn probe(&self, _: Request<proto::ProbeRequest>) -> Reply<proto::ProbeResponse> {
        // `ready` is OPTIONAL; unset means ready.
        Ok(Response::new(proto::ProbeResponse { ready: None }))
    }
}

#[tonic::async_trait]
impl Controller for Loose {
    async fn create_volume(
        &self,
        req: Request<proto::CreateVolumeRequest>,
    ) -> Reply<proto::CreateVolumeResponse> {
        let r = req.into_inner();
        required("name", &r.name)?;
        if r.volume_capabilities.is_empty() {
            return Err(invalid("volume_capabilities", "required"));
        }
        for c in &r.volume_capabilities {
            capability("volume_capabilities", Some(c))?;
        }
        if r.volume_content_source.is_some() {
            return Err(invalid(
                "volume_content_source",
                "this plugin creates empty volumes only",
            ));
        }
        if !r.mutable_parameters.is_empty() {
            return Err(invalid("mutable_parameters", "none are supported"));
        }
        let (want, limit) = match &r.capacity_range {
            None => (0, 0),
            Some(c) if c.required_bytes < 0 || c.limit_bytes < 0 => {
                return Err(invalid("capacity_range", "negative"));
            }
            Some(c) if c.limit_bytes > 0 && c.limit_bytes < c.required_bytes => {
                return Err(invalid("capacity_range", "limit below required"));
            }
            Some(c) => (c.required_bytes, c.limit_bytes),
        };
        let mut volumes = self.lock();
        // Ids are the CO's names: the same name is the same volume.
        if let Some(v) = volumes.get(&r.name) {
            let fits = v.capacity >= want && (limit == 0 || v.capacity <= limit);
            let same_caps = r
                .volume_capabilities
                .iter()
                .all(|c| v.capabilities.contains(c));
            if !fits || !same_caps || v.parameters != r.parameters {
                return Err(Status::already_exists(format!(
                    "{} exists with another size, capability or parameters",
                    r.name
                )));
            }
            return Ok(Response::new(proto::CreateVolumeResponse {
                volume: Some(Self::volume(&r.name, v)),
            }));
        }
        let base = if want == 0 {
            if limit > 0 {
                limit.min(DEFAULT_VOLUME)
            } else {
                DEFAULT_VOLUME
            }
        } else {
            want
        };
        // `base` is at most MAX_VOLUME before rounding, so this cannot overflow.
        let size = (base.min(MAX_VOLUME + 1) + GRANULE - 1) / GRANULE * GRANULE;
        if size > MAX_VOLUME || (limit > 0 && size > limit) {
            return Err(Status::out_of_range(format!(
                "sizes are multiples of {GRANULE} up to {MAX_VOLUME} bytes"
            )));
        }
        let v = Vol {
            capacity: size,
            parameters: r.parameters,
            capabilities: r.volume_capabilities,
            published: BTreeMap::new(),
            targets: BTreeMap::new(),
        };
        let volume = Self::volume(&r.name, &v);
        volumes.insert(r.name, v);
        Ok(Response::new(proto::CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<proto::DeleteVolumeRequest>,
    ) -> Reply<proto::DeleteVolumeResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let mut volumes = self.lock();
        if let Some(v) = volumes.get(&r.volume_id)
            && (!v.published.is_empty() || !v.targets.is_empty())
        {
            return Err(Status::failed_precondition("the volume is published"));
        }
        volumes.remove(&r.volume_id);
        Ok(Response::new(proto::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        req: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Reply<proto::ControllerPublishVolumeResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        required("node_id", &r.node_id)?;
        capability("volume_capability", r.volume_capability.as_ref())?;
        let cap = r.volume_capability.unwrap_or_default();
        let mut volumes = self.lock();
        let v = volumes
            .get_mut(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        if r.node_id != self.node_id {
            return Err(Status::not_found("no such node"));
        }
        let p = Publication {
            capability: cap,
            readonly: r.readonly,
        };
        match v.published.get(&r.node_id) {
            Some(old) if *old == p => {}
            Some(_) => {
                return Err(Status::already_exists(
                    "published to the node with another capability or readonly flag",
                ));
            }
            None if single_node(&p.capability) && !v.published.is_empty() => {
                return Err(Status::failed_precondition(
                    "single-node volume published elsewhere",
                ));
            }
            None => {
                v.published.insert(r.node_id, p);
            }
        }
        Ok(Response::new(
            proto::ControllerPublishVolumeResponse::default(),
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Reply<proto::ControllerUnpublishVolumeResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let mut volumes = self.lock();
        // Loose: NOT_FOUND for an unknown volume (the spec says SHOULD OK).
        let v = volumes
            .get_mut(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        if r.node_id.is_empty() {
            v.published.clear();
        } else {
            v.published.remove(&r.node_id);
        }
        Ok(Response::new(proto::ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Reply<proto::ValidateVolumeCapabilitiesResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        if r.volume_capabilities.is_empty() {
            return Err(invalid("volume_capabilities", "required"));
        }
        for c in &r.volume_capabilities {
            capability("volume_capabilities", Some(c))?;
        }
        let volumes = self.lock();
        let v = volumes
            .get(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        let block = v.capabilities.iter().any(is_block);
        if r.volume_capabilities.iter().any(|c| is_block(c) != block) {
            return Ok(Response::new(proto::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: "the access type differs from the volume's".into(),
            }));
        }
        Ok(Response::new(proto::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                volume_context: r.volume_context,
                volume_capabilities: r.volume_capabilities,
                parameters: r.parameters,
                mutable_parameters: r.mutable_parameters,
            }),
            message: String::new(),
        }))
    }

    async fn list_volumes(
        &self,
        req: Request<proto::ListVolumesRequest>,
    ) -> Reply<proto::ListVolumesResponse> {
        let r = req.into_inner();
        if r.max_entries < 0 {
            return Err(invalid("max_entries", "negative"));
        }
        let after = if r.starting_token.is_empty() {
            None
        } else {
            match r.starting_token.strip_prefix(TOKEN_PREFIX) {
                Some(a) => Some(a.to_string()),
                None => return Err(Status::aborted("starting_token not issued here")),
            }
        };
        let volumes = self.lock();
        let max = if r.max_entries == 0 {
            usize::MAX
        } else {
            r.max_entries as usize
        };
        let mut entries = Vec::new();
        let mut next_token = String::new();
        for (id, v) in volumes
            .iter()
            .filter(|(id, _)| after.as_deref().is_none_or(|a| id.as_str() > a))
        {
            if entries.len() == max {
                next_token = format!("{TOKEN_PREFIX}{}", entries_last(&entries));
                break;
            }
            let (published_node_ids, volume_condition) = Self::status(v);
            entries.push(proto::list_volumes_response::Entry {
                volume: Some(Self::volume(id, v)),
                status: Some(proto::list_volumes_response::VolumeStatus {
                    published_node_ids,
                    volume_condition,
                }),
            });
        }
        Ok(Response::new(proto::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> Reply<proto::ControllerGetCapabilitiesResponse> {
        use proto::controller_service_capability::{Rpc, Type, rpc::Type as T};
        let caps = [
            T::CreateDeleteVolume,
            T::PublishUnpublishVolume,
            T::ListVolumes,
            T::ListVolumesPublishedNodes,
            T::GetVolume,
            T::VolumeCondition,
        ];
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities: caps
                .into_iter()
                .map(|t| proto::ControllerServiceCapability {
                    r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
                })
                .collect(),
        }))
    }

    async fn controller_get_volume(
        &self,
        req: Request<proto::ControllerGetVolumeRequest>,
    ) -> Reply<proto::ControllerGetVolumeResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let volumes = self.lock();
        let v = volumes
            .get(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        let (published_node_ids, volume_condition) = Self::status(v);
        Ok(Response::new(proto::ControllerGetVolumeResponse {
            volume: Some(Self::volume(&r.volume_id, v)),
            status: Some(proto::controller_get_volume_response::VolumeStatus {
                published_node_ids,
                volume_condition,
            }),
        }))
    }

    async fn get_capacity(
        &self,
        _: Request<proto::GetCapacityRequest>,
    ) -> Reply<proto::GetCapacityResponse> {
        Err(Status::unimplemented("GET_CAPACITY is not advertised"))
    }

    async fn create_snapshot(
        &self,
        _: Request<proto::CreateSnapshotRequest>,
    ) -> Reply<proto::CreateSnapshotResponse> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn delete_snapshot(
        &self,
        _: Request<proto::DeleteSnapshotRequest>,
    ) -> Reply<proto::DeleteSnapshotResponse> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn list_snapshots(
        &self,
        _: Request<proto::ListSnapshotsRequest>,
    ) -> Reply<proto::ListSnapshotsResponse> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn get_snapshot(
        &self,
        _: Request<proto::GetSnapshotRequest>,
    ) -> Reply<proto::GetSnapshotResponse> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn controller_expand_volume(
        &self,
        _: Request<proto::ControllerExpandVolumeRequest>,
    ) -> Reply<proto::ControllerExpandVolumeResponse> {
        Err(Status::unimplemented("EXPAND_VOLUME is not advertised"))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<proto::ControllerModifyVolumeRequest>,
    ) -> Reply<proto::ControllerModifyVolumeResponse> {
        Err(Status::unimplemented("MODIFY_VOLUME is not advertised"))
    }
}

fn entries_last(entries: &[proto::list_volumes_response::Entry]) -> String {
    entries
        .last()
        .and_then(|e| e.volume.as_ref())
        .map(|v| v.volume_id.clone())
        .unwrap_or_default()
}

fn absolute(field: &str, p: &str) -> Result<(), Status> {
    if p.is_empty() {
        Err(invalid(field, "required"))
    } else if !p.starts_with('/') {
        Err(invalid(field, "not an absolute path"))
    } else {
        Ok(())
    }
}

fn remove_target(path: &Path) -> Result<(), Status> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| Status::internal(format!("removing {}: {e}", path.display())))
}

#[tonic::async_trait]
impl Node for Loose {
    async fn node_stage_volume(
        &self,
        _: Request<proto::NodeStageVolumeRequest>,
    ) -> Reply<proto::NodeStageVolumeResponse> {
        Err(Status::unimplemented(
            "STAGE_UNSTAGE_VOLUME is not advertised",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Reply<proto::NodeUnstageVolumeResponse> {
        Err(Status::unimplemented(
            "STAGE_UNSTAGE_VOLUME is not advertised",
        ))
    }

    async fn node_publish_volume(
        &self,
        req: Request<proto::NodePublishVolumeRequest>,
    ) -> Reply<proto::NodePublishVolumeResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        absolute("target_path", &r.target_path)?;
        let block = capability("volume_capability", r.volume_capability.as_ref())?;
        let cap = r.volume_capability.unwrap_or_default();
        let mut volumes = self.lock();
        let v = volumes
            .get_mut(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        let readonly = r.readonly || reader_only(&cap);
        let p = Publication {
            capability: cap,
            readonly,
        };
        if let Some(old) = v.targets.get(&r.target_path) {
            return if *old == p {
                Ok(Response::new(proto::NodePublishVolumeResponse {}))
            } else {
                Err(Status::already_exists(
                    "published there with another capability or readonly flag",
                ))
            };
        }
        let target = Path::new(&r.target_path);
        let made = if block {
            std::fs::write(target, b"")
        } else {
            let mode = if readonly { 0o555 } else { 0o755 };
            std::fs::create_dir_all(target).and_then(|()| {
                std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
            })
        };
        made.map_err(|e| Status::internal(format!("creating {}: {e}", r.target_path)))?;
        v.targets.insert(r.target_path, p);
        Ok(Response::new(proto::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Reply<proto::NodeUnpublishVolumeResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        absolute("target_path", &r.target_path)?;
        let mut volumes = self.lock();
        let v = volumes
            .get_mut(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        if v.targets.remove(&r.target_path).is_some() {
            remove_target(Path::new(&r.target_path))?;
        }
        Ok(Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Reply<proto::NodeGetVolumeStatsResponse> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        // Loose: the path is checked before the volume is looked up.
        absolute("volume_path", &r.volume_path)?;
        let volumes = self.lock();
        let v = volumes
            .get(&r.volume_id)
            .ok_or_else(|| Status::not_found("no such volume"))?;
        if !v.targets.contains_key(&r.volume_path) || !Path::new(&r.volume_path).exists() {
            return Err(Status::not_found("the volume is not published there"));
        }
        Ok(Response::new(proto::NodeGetVolumeStatsResponse {
            usage: vec![proto::VolumeUsage {
                available: v.capacity,
                total: v.capacity,
                used: 0,
                unit: proto::volume_usage::Unit::Bytes as i32,
            }],
            volume_condition: Some(proto::VolumeCondition {
                abnormal: false,
                message: String::new(),
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        _: Request<proto::NodeExpandVolumeRequest>,
    ) -> Reply<proto::NodeExpandVolumeResponse> {
        Err(Status::unimplemented("EXPAND_VOLUME is not advertised"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Reply<proto::NodeGetCapabilitiesResponse> {
        use proto::node_service_capability::{Rpc, Type, rpc::Type as T};
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: [T::GetVolumeStats, T::VolumeCondition]
                .into_iter()
                .map(|t| proto::NodeServiceCapability {
                    r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
                })
                .collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<proto::NodeGetInfoRequest>,
    ) -> Reply<proto::NodeGetInfoResponse> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

struct Args {
    socket: String,
    node_id: String,
}

fn parse_args() -> Result<Args, String> {
    let mut endpoint = None;
    let mut node_id = "loose-node".to_string();
    // `std::env::args` panics on an argument that is not UTF-8; refuse it instead.
    let mut it = std::env::args_os().skip(1).map(|a| {
        a.into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))
    });
    while let Some(a) = it.next() {
        let a = a?;
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| Err(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--endpoint" => endpoint = Some(value("--endpoint")?),
            "--node-id" => node_id = value("--node-id")?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let endpoint = endpoint.ok_or("--endpoint unix:///path is required")?;
    let socket = endpoint
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| format!("--endpoint must be unix:///absolute/path, got {endpoint:?}"))?
        .to_string();
    if node_id.is_empty() || node_id.len() > 256 {
        return Err("--node-id must be 1 to 256 bytes".into());
    }
    Ok(Args { socket, node_id })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loose: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loose: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loose: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let driver = Loose {
        node_id: args.node_id,
        volumes: Arc::default(),
    };
    let listener = tokio::net::UnixListener::bind(&args.socket)
        .map_err(|e| format!("cannot listen on {}: {e}", args.socket))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    let result = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(driver.clone()))
        .add_service(ControllerServer::new(driver.clone()))
        .add_service(NodeServer::new(driver))
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    let _ = std::fs::remove_file(&args.socket);
    result.map_err(|e| format!("serving: {e}"))
}
