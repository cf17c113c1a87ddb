//! [`Plugin`]: a driver's trait objects bundled into one CSI plugin, with
//! request validation, derived capabilities, a per-volume operation guard,
//! panic isolation and a tracing span per RPC.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures::FutureExt;
use futures::stream::StreamExt;
use tracing::Instrument;

use crate::CsiError;
use crate::api::{RawCsi, RawStream};
use crate::capabilities::{
    ControllerCapabilities, GroupControllerCapabilities, NodeCapabilities, PluginCapabilities,
};
use crate::check::ResponseRules;
use crate::controller::*;
use crate::driver::*;
use crate::group_controller::*;
use crate::identity::*;
use crate::node::*;
use crate::proto;
use crate::snapshot_metadata::BlockMetadataResponse;

/// A CSI plugin: the driver's service implementations, ready to be served
/// (feature `server`) or called in process through [`RawCsi`] / [`crate::Csi`].
///
/// Built with [`Plugin::builder`]. Every call:
/// - is validated into its typed request (a bad field answers
///   `INVALID_ARGUMENT` naming the field, without reaching the driver);
/// - answers `UNIMPLEMENTED` when the trait that serves it was not
///   registered, and the capabilities RPCs report exactly what was registered;
/// - holds a per-object guard, so a second operation on the same volume (or
///   volume name, snapshot, snapshot name, group snapshot) while one is in
///   flight answers `ABORTED`, as the spec recommends;
/// - turns a panic in the driver into `INTERNAL` for that call;
/// - runs in a `csi` tracing span with the RPC name, logging the request
///   (secrets stripped) at debug level and the outcome at info level.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Arc<dyn Identity>,
    controller: Option<Arc<dyn Controller>>,
    provisioner: Option<Arc<dyn Provisioner>>,
    publisher: Option<Arc<dyn ControllerPublisher>>,
    volume_lister: Option<Arc<dyn VolumeLister>>,
    capacity_reporter: Option<Arc<dyn CapacityReporter>>,
    snapshotter: Option<Arc<dyn Snapshotter>>,
    snapshot_lister: Option<Arc<dyn SnapshotLister>>,
    snapshot_getter: Option<Arc<dyn SnapshotGetter>>,
    controller_expander: Option<Arc<dyn ControllerExpander>>,
    volume_getter: Option<Arc<dyn VolumeGetter>>,
    modifier: Option<Arc<dyn VolumeModifier>>,
    node: Option<Arc<dyn Node>>,
    stager: Option<Arc<dyn NodeStager>>,
    node_stats: Option<Arc<dyn NodeVolumeStats>>,
    node_expander: Option<Arc<dyn NodeExpander>>,
    group_controller: Option<Arc<dyn GroupController>>,
    snapshot_metadata: Option<Arc<dyn SnapshotMetadata>>,
    plugin_capabilities: PluginCapabilities,
    controller_capabilities: ControllerCapabilities,
    node_capabilities: NodeCapabilities,
    guard: Option<InFlight>,
}

/// Builds a [`Plugin`] from a driver's trait implementations.
///
/// Register each part the driver implements; the advertised capabilities
/// follow from what was registered. One driver struct usually implements
/// several traits and is registered as several `Arc` clones.
pub struct PluginBuilder {
    inner: Inner,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $trait:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, part: Arc<dyn $trait>) -> Self {
                self.inner.$name = Some(part);
                self
            }
        )*
    };
}

impl Plugin {
    /// Starts a plugin with its Identity service, the one service every plugin serves.
    pub fn builder(identity: Arc<dyn Identity>) -> PluginBuilder {
        PluginBuilder {
            inner: Inner {
                identity,
                controller: None,
                provisioner: None,
                publisher: None,
                volume_lister: None,
                capacity_reporter: None,
                snapshotter: None,
                snapshot_lister: None,
                snapshot_getter: None,
                controller_expander: None,
                volume_getter: None,
                modifier: None,
                node: None,
                stager: None,
                node_stats: None,
                node_expander: None,
                group_controller: None,
                snapshot_metadata: None,
                plugin_capabilities: PluginCapabilities::empty(),
                controller_capabilities: ControllerCapabilities::empty(),
                node_capabilities: NodeCapabilities::empty(),
                guard: Some(InFlight::default()),
            },
        }
    }

    /// What `GetPluginCapabilities` advertises.
    pub fn plugin_capabilities(&self) -> PluginCapabilities {
        self.inner.plugin_capabilities
    }

    /// What `ControllerGetCapabilities` advertises.
    pub fn controller_capabilities(&self) -> ControllerCapabilities {
        self.inner.controller_capabilities
    }

    /// What `NodeGetCapabilities` advertises.
    pub fn node_capabilities(&self) -> NodeCapabilities {
        self.inner.node_capabilities
    }

    /// What `GroupControllerGetCapabilities` advertises.
    pub fn group_controller_capabilities(&self) -> GroupControllerCapabilities {
        if self.inner.group_controller.is_some() {
            GroupControllerCapabilities::CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT
        } else {
            GroupControllerCapabilities::empty()
        }
    }
}

impl PluginBuilder {
    setters! {
        /// The Controller service's mandatory part (`ValidateVolumeCapabilities`).
        controller: Controller,
        /// `CreateVolume`/`DeleteVolume`: advertises `CREATE_DELETE_VOLUME`.
        provisioner: Provisioner,
        /// `ControllerPublishVolume`/`ControllerUnpublishVolume`: advertises `PUBLISH_UNPUBLISH_VOLUME`;
        /// needed by `PUBLISH_READONLY` and `LIST_VOLUMES_PUBLISHED_NODES`.
        publisher: ControllerPublisher,
        /// `ListVolumes`: advertises `LIST_VOLUMES`.
        volume_lister: VolumeLister,
        /// `GetCapacity`: advertises `GET_CAPACITY`.
        capacity_reporter: CapacityReporter,
        /// `CreateSnapshot`/`DeleteSnapshot`: advertises `CREATE_DELETE_SNAPSHOT`;
        /// needs a `provisioner` (such a plugin "MUST support creating volume
        /// from snapshot").
        snapshotter: Snapshotter,
        /// `ListSnapshots`: advertises `LIST_SNAPSHOTS`.
        snapshot_lister: SnapshotLister,
        /// `GetSnapshot`: advertises `GET_SNAPSHOT`.
        snapshot_getter: SnapshotGetter,
        /// `ControllerExpandVolume`: advertises the controller's `EXPAND_VOLUME`;
        /// needed by `VOLUME_EXPANSION_OFFLINE` on an instance serving the
        /// Controller service.
        controller_expander: ControllerExpander,
        /// `ControllerGetVolume`: advertises `GET_VOLUME`.
        volume_getter: VolumeGetter,
        /// `ControllerModifyVolume`: advertises `MODIFY_VOLUME`.
        modifier: VolumeModifier,
        /// The Node service's mandatory part (publish, unpublish, info).
        node: Node,
        /// `NodeStageVolume`/`NodeUnstageVolume`: advertises `STAGE_UNSTAGE_VOLUME`.
        stager: NodeStager,
        /// `NodeGetVolumeStats`: advertises `GET_VOLUME_STATS`.
        node_stats: NodeVolumeStats,
        /// `NodeExpandVolume`: advertises the node's `EXPAND_VOLUME`.
        node_expander: NodeExpander,
        /// The GroupController service: advertises `GROUP_CONTROLLER_SERVICE`
        /// and `CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT`.
        group_controller: GroupController,
        /// The SnapshotMetadata service: advertises `SNAPSHOT_METADATA_SERVICE`.
        snapshot_metadata: SnapshotMetadata,
    }

    /// Turns the per-object operation guard on (the default) or off, for a
    /// driver that serialises operations itself.
    pub fn operation_guard(mut self, on: bool) -> Self {
        self.inner.guard = on.then(InFlight::default);
        self
    }

    /// Derives the capabilities and checks that every declared feature has
    /// the RPCs it needs. The error names the capability and what is missing.
    ///
    /// Refused ([`BuildError`]), each as the spec's rule demands:
    /// - a Controller or Node part without the service's mandatory trait
    ///   ([`BuildError::MissingService`]);
    /// - a `snapshotter` without a `provisioner` (`CREATE_DELETE_SNAPSHOT`
    ///   plugins "MUST support creating volume from snapshot"), and
    ///   `CLONE_VOLUME` without a `provisioner`;
    /// - `PUBLISH_READONLY` without a `publisher`;
    /// - `LIST_VOLUMES_PUBLISHED_NODES` without a `publisher` ("The SP MUST
    ///   also support PUBLISH_UNPUBLISH_VOLUME"), or without a
    ///   `volume_lister` or `volume_getter` (either reports
    ///   `published_node_ids`);
    /// - the controller's `VOLUME_CONDITION` without a `volume_lister` or
    ///   `volume_getter`, the node's without a `node_stats`;
    /// - both `VOLUME_EXPANSION_ONLINE` and `VOLUME_EXPANSION_OFFLINE`
    ///   ([`BuildError::Exclusive`]);
    /// - on an instance serving both services, either expansion capability
    ///   with neither expander; on an instance serving the Controller
    ///   service, `VOLUME_EXPANSION_OFFLINE` without a
    ///   `controller_expander` (node expansion alone does not serve it). An
    ///   instance serving one service alone advertises the plugin's
    ///   expansion without holding the part its other half serves
    ///   (capabilities are "the grand sum" of all instances).
    pub fn build(mut self) -> Result<Plugin, BuildError> {
        let i = &mut self.inner;
        let missing = |capability: &'static str, needs: &'static str| {
            BuildError::CapabilityWithoutPart { capability, needs }
        };

        let has_controller_part = i.provisioner.is_some()
            || i.publisher.is_some()
            || i.volume_lister.is_some()
            || i.capacity_reporter.is_some()
            || i.snapshotter.is_some()
            || i.snapshot_lister.is_some()
            || i.snapshot_getter.is_some()
            || i.controller_expander.is_some()
            || i.volume_getter.is_some()
            || i.modifier.is_some();
        if has_controller_part && i.controller.is_none() {
            return Err(BuildError::MissingService {
                service: "Controller",
                mandatory: "ValidateVolumeCapabilities is",
            });
        }
        let has_node_part =
            i.stager.is_some() || i.node_stats.is_some() || i.node_expander.is_some();
        if has_node_part && i.node.is_none() {
            return Err(BuildError::MissingService {
                service: "Node",
                mandatory: "NodePublishVolume, NodeUnpublishVolume and NodeGetInfo are",
            });
        }

        type C = ControllerCapabilities;
        let mut cc = C::empty();
        if let Some(controller) = &i.controller {
            let rpc_bits = [
                (i.provisioner.is_some(), C::CREATE_DELETE_VOLUME),
                (i.publisher.is_some(), C::PUBLISH_UNPUBLISH_VOLUME),
                (i.volume_lister.is_some(), C::LIST_VOLUMES),
                (i.capacity_reporter.is_some(), C::GET_CAPACITY),
                (i.snapshotter.is_some(), C::CREATE_DELETE_SNAPSHOT),
                (i.snapshot_lister.is_some(), C::LIST_SNAPSHOTS),
                (i.snapshot_getter.is_some(), C::GET_SNAPSHOT),
                (i.controller_expander.is_some(), C::EXPAND_VOLUME),
                (i.volume_getter.is_some(), C::GET_VOLUME),
                (i.modifier.is_some(), C::MODIFY_VOLUME),
            ];
            for (present, bit) in rpc_bits {
                cc.set(bit, present);
            }
            let features = controller.feature_capabilities()
                & (C::CLONE_VOLUME
                    | C::PUBLISH_READONLY
                    | C::LIST_VOLUMES_PUBLISHED_NODES
                    | C::VOLUME_CONDITION
                    | C::SINGLE_NODE_MULTI_WRITER);
            // "plugins supporting CREATE_DELETE_SNAPSHOT MUST support
            // creating volume from snapshot": CreateVolume is the
            // Provisioner's.
            if i.snapshotter.is_some() && i.provisioner.is_none() {
                return Err(missing("CREATE_DELETE_SNAPSHOT", "a Provisioner"));
            }
            if features.contains(C::CLONE_VOLUME) && i.provisioner.is_none() {
                return Err(missing("CLONE_VOLUME", "a Provisioner"));
            }
            if features.contains(C::PUBLISH_READONLY) && i.publisher.is_none() {
                return Err(missing("PUBLISH_READONLY", "a ControllerPublisher"));
            }
            // The capability covers `published_node_ids` of ListVolumes and
            // of ControllerGetVolume, so either RPC reports it; and "The SP
            // MUST also support PUBLISH_UNPUBLISH_VOLUME".
            if features.contains(C::LIST_VOLUMES_PUBLISHED_NODES) {
                if i.publisher.is_none() {
                    return Err(missing(
                        "LIST_VOLUMES_PUBLISHED_NODES",
                        "a ControllerPublisher",
                    ));
                }
                if i.volume_lister.is_none() && i.volume_getter.is_none() {
                    return Err(missing(
                        "LIST_VOLUMES_PUBLISHED_NODES",
                        "a VolumeLister or VolumeGetter",
                    ));
                }
            }
            if features.contains(C::VOLUME_CONDITION)
                && i.volume_lister.is_none()
                && i.volume_getter.is_none()
            {
                return Err(missing(
                    "the controller's VOLUME_CONDITION",
                    "a VolumeLister or VolumeGetter",
                ));
            }
            cc |= features;
        }

        type N = NodeCapabilities;
        let mut nc = N::empty();
        if let Some(node) = &i.node {
            nc.set(N::STAGE_UNSTAGE_VOLUME, i.stager.is_some());
            nc.set(N::GET_VOLUME_STATS, i.node_stats.is_some());
            nc.set(N::EXPAND_VOLUME, i.node_expander.is_some());
            let features = node.feature_capabilities()
                & (N::VOLUME_CONDITION | N::SINGLE_NODE_MULTI_WRITER | N::VOLUME_MOUNT_GROUP);
            if features.contains(N::VOLUME_CONDITION) && i.node_stats.is_none() {
                return Err(missing("the node's VOLUME_CONDITION", "a NodeVolumeStats"));
            }
            nc |= features;
        }

        type P = PluginCapabilities;
        let mut pc = i.identity.plugin_capabilities()
            & (P::VOLUME_ACCESSIBILITY_CONSTRAINTS
                | P::VOLUME_EXPANSION_ONLINE
                | P::VOLUME_EXPANSION_OFFLINE);
        if pc.contains(P::VOLUME_EXPANSION_ONLINE | P::VOLUME_EXPANSION_OFFLINE) {
            return Err(BuildError::Exclusive(
                "VOLUME_EXPANSION_ONLINE",
                "VOLUME_EXPANSION_OFFLINE",
            ));
        }
        // Plugin capabilities are "the grand sum of all capabilities of all
        // instances of the Plugin software", so an instance that serves only
        // the Controller or only the Node service (a controller Deployment
        // and a node DaemonSet) advertises expansion its other half may
        // serve: the rules below look only at the services this instance
        // serves.
        let serves_controller = i.controller.is_some();
        let split_part = serves_controller != i.node.is_some();
        if pc.intersects(P::VOLUME_EXPANSION_ONLINE | P::VOLUME_EXPANSION_OFFLINE)
            && !split_part
            && i.controller_expander.is_none()
            && i.node_expander.is_none()
        {
            return Err(missing(
                "VOLUME_EXPANSION",
                "a ControllerExpander or NodeExpander",
            ));
        }
        // "When a plugin supports OFFLINE volume expansion it MUST implement
        // either the EXPAND_VOLUME controller capability or both the
        // EXPAND_VOLUME controller capability and the EXPAND_VOLUME node
        // capability": node expansion alone does not serve OFFLINE (ONLINE
        // accepts either). Only the instance serving the Controller service
        // can hold that part.
        if pc.contains(P::VOLUME_EXPANSION_OFFLINE)
            && serves_controller
            && i.controller_expander.is_none()
        {
            return Err(missing("VOLUME_EXPANSION_OFFLINE", "a ControllerExpander"));
        }
        pc.set(P::CONTROLLER_SERVICE, i.controller.is_some());
        pc.set(P::GROUP_CONTROLLER_SERVICE, i.group_controller.is_some());
        pc.set(P::SNAPSHOT_METADATA_SERVICE, i.snapshot_metadata.is_some());

        i.plugin_capabilities = pc;
        i.controller_capabilities = cc;
        i.node_capabilities = nc;
        Ok(Plugin {
            inner: Arc::new(self.inner),
        })
    }
}

/// Why [`PluginBuilder::build`] refused a driver's configuration: a mistake
/// in the driver's code, not a bad request, so it is not a [`CsiError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Optional parts of a service are registered without its mandatory trait.
    #[error("{service} parts are registered but no {service} ({mandatory} mandatory)")]
    MissingService {
        /// The service (`Controller`, `Node`).
        service: &'static str,
        /// The RPCs its mandatory trait serves.
        mandatory: &'static str,
    },
    /// A declared feature capability has no registered part to serve it.
    #[error("{capability} is declared but {needs} is not registered")]
    CapabilityWithoutPart {
        /// The capability's name.
        capability: &'static str,
        /// The part (driver trait) it needs.
        needs: &'static str,
    },
    /// Two declared capabilities exclude each other.
    #[error("{0} and {1} exclude each other")]
    Exclusive(&'static str, &'static str),
}

/// For a driver that builds its plugin inside a CSI call or a function
/// returning [`CsiError`]: a misconfigured plugin is `INTERNAL`.
impl From<BuildError> for CsiError {
    fn from(e: BuildError) -> Self {
        CsiError::internal(format!("the plugin is misconfigured: {e}"))
    }
}

/// Keys of the operations in flight; a second operation on a key answers `ABORTED`.
#[derive(Default)]
struct InFlight(Arc<Mutex<HashSet<GuardKey>>>);

/// What an operation guards: the kind of object (`volume`, `volume name`, …)
/// and its id or name. The value is shared by the set and the call's token,
/// so a call copies it once; the message naming it is built only for a
/// refusal.
#[derive(Clone, PartialEq, Eq, Hash)]
struct GuardKey {
    label: &'static str,
    value: Arc<str>,
}

impl GuardKey {
    fn new(label: &'static str, value: &str) -> Self {
        GuardKey {
            label,
            value: Arc::from(value),
        }
    }
}

struct InFlightToken {
    set: Arc<Mutex<HashSet<GuardKey>>>,
    key: GuardKey,
}

impl InFlight {
    fn acquire(&self, key: GuardKey, rpc: &str) -> Result<InFlightToken, CsiError> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(key.clone()) {
            return Err(CsiError::aborted(format!(
                "{rpc}: an operation on {} {:?} is already in progress; retry later",
                key.label, &*key.value
            )));
        }
        Ok(InFlightToken {
            set: Arc::clone(&self.0),
            key,
        })
    }
}

impl Drop for InFlightToken {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The optional part serving an RPC, or `UNIMPLEMENTED` naming the typed
/// capability it would be advertised as.
fn part<T: ?Sized, F: bitflags::Flags>(
    part: &Option<Arc<T>>,
    rpc: &str,
    capability: F,
) -> Result<Arc<T>, CsiError> {
    part.clone().ok_or_else(|| {
        let names: Vec<&str> = capability.iter_names().map(|(name, _)| name).collect();
        CsiError::unimplemented(format!(
            "{rpc} is not implemented by this plugin (it does not advertise {})",
            names.join(" | ")
        ))
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

impl Plugin {
    /// The common path of every unary RPC: validate, guard, call with panic
    /// isolation, log, convert.
    async fn unary<H, P, T, R, W, Fut>(
        &self,
        rpc: &'static str,
        req: P,
        handler: Result<H, CsiError>,
        key: impl FnOnce(&T) -> Option<GuardKey>,
        call: impl FnOnce(H, T) -> Fut,
    ) -> Result<W, CsiError>
    where
        P: Debug,
        T: TryFrom<P, Error = CsiError>,
        Fut: Future<Output = Result<R, CsiError>>,
        W: TryFrom<R> + Debug + WireResponse,
        CsiError: From<W::Error>,
    {
        let span = tracing::info_span!("csi", rpc);
        async move {
            tracing::debug!(request = ?req, "request");
            let start = Instant::now();
            let result = async {
                // An RPC the plugin does not offer answers UNIMPLEMENTED
                // whatever its fields hold.
                let handler = handler?;
                let typed = T::try_from(req)?;
                let _token = match (&self.inner.guard, key(&typed)) {
                    (Some(guard), Some(k)) => Some(guard.acquire(k, rpc)?),
                    _ => None,
                };
                match AssertUnwindSafe(call(handler, typed)).catch_unwind().await {
                    Ok(r) => {
                        // A size the wire's int64 cannot carry is the
                        // driver's bug: INTERNAL, not another size sent.
                        let wire = W::try_from(r?).map_err(|e| {
                            CsiError::from(e).built_by_driver(&format!("{rpc}Response"))
                        })?;
                        // Public fields let a driver build a response the
                        // spec forbids (an empty condition message, a map
                        // over 4 KiB); it is refused here, not sent.
                        wire.check(self.advertised()).map_err(|e| {
                            CsiError::internal(format!(
                                "the driver's {rpc} response breaks the spec: {e}"
                            ))
                        })?;
                        Ok(wire)
                    }
                    Err(payload) => Err(CsiError::internal(format!(
                        "the driver panicked in {rpc}: {}",
                        panic_message(&*payload)
                    ))),
                }
            }
            .await;
            let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
            match &result {
                Ok(resp) => {
                    tracing::debug!(response = ?resp, "response");
                    tracing::info!(code = "OK", elapsed_ms, "done");
                }
                Err(e) => tracing::info!(code = %e.code(), error = %e, elapsed_ms, "failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    fn identity(&self, _rpc: &str) -> Result<Arc<dyn Identity>, CsiError> {
        Ok(Arc::clone(&self.inner.identity))
    }

    fn controller(&self, rpc: &str) -> Result<Arc<dyn Controller>, CsiError> {
        self.inner.controller.clone().ok_or_else(|| {
            CsiError::unimplemented(format!(
                "{rpc}: this plugin does not serve the Controller service"
            ))
        })
    }

    fn node(&self, rpc: &str) -> Result<Arc<dyn Node>, CsiError> {
        self.inner.node.clone().ok_or_else(|| {
            CsiError::unimplemented(format!(
                "{rpc}: this plugin does not serve the Node service"
            ))
        })
    }

    fn group_controller(&self, rpc: &str) -> Result<Arc<dyn GroupController>, CsiError> {
        self.inner.group_controller.clone().ok_or_else(|| {
            CsiError::unimplemented(format!(
                "{rpc}: this plugin does not serve the GroupController service"
            ))
        })
    }

    fn snapshot_metadata(&self, rpc: &str) -> Result<Arc<dyn SnapshotMetadata>, CsiError> {
        self.inner.snapshot_metadata.clone().ok_or_else(|| {
            CsiError::unimplemented(format!(
                "{rpc}: this plugin does not serve the SnapshotMetadata service"
            ))
        })
    }
}

/// The guard key of a request, from the RPC table's `[key]` column.
macro_rules! guard_key {
    ($req:ident, []) => {
        |_: &$req| None
    };
    ($req:ident, [$field:ident $label:literal]) => {
        |r: &$req| Some(GuardKey::new($label, r.$field.as_str()))
    };
}

/// One RPC's call through [`Plugin::unary`], from the RPC table's `[serve]` column.
macro_rules! dispatch {
    ($this:ident, $service:ident, $method:ident, $rpc:literal, $wire:ident, $req:ident, $resp:ident,
     [capabilities $getter:ident], $key:tt) => {
        $this
            .unary(
                $rpc,
                $wire,
                $this.$service($rpc).map(|_| $this.$getter()),
                guard_key!($req, $key),
                |capabilities, _: $req| async move { Ok($resp { capabilities }) },
            )
            .await
    };
    ($this:ident, $service:ident, $method:ident, $rpc:literal, $wire:ident, $req:ident, $resp:ident,
     [$trait:ident], $key:tt) => {
        $this
            .unary(
                $rpc,
                $wire,
                $this.$service($rpc),
                guard_key!($req, $key),
                |h: Arc<dyn $trait>, r| async move { h.$method(r).await },
            )
            .await
    };
    ($this:ident, $service:ident, $method:ident, $rpc:literal, $wire:ident, $req:ident, $resp:ident,
     [$trait:ident: $part:ident if $capability:path], $key:tt) => {
        $this
            .unary(
                $rpc,
                $wire,
                $this
                    .$service($rpc)
                    .and_then(|_| part::<dyn $trait, _>(&$this.inner.$part, $rpc, $capability)),
                guard_key!($req, $key),
                |h, r| async move { h.$method(r).await },
            )
            .await
    };
}

macro_rules! plugin_dispatch {
    ($([$server:ident :: $svc:ident, $service:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        #[async_trait]
        impl RawCsi for Plugin {
            $($(
                async fn $raw(&self, req: proto::$req) -> Result<proto::$resp, CsiError> {
                    dispatch!(self, $service, $method, $rpc, req, $req, $resp, $serve, $key)
                }
            )*)*

            async fn raw_get_metadata_allocated(
                &self,
                req: proto::GetMetadataAllocatedRequest,
            ) -> Result<RawStream<proto::GetMetadataAllocatedResponse>, CsiError> {
                self.streaming("GetMetadataAllocated", req, |h, r| async move {
                    h.get_metadata_allocated(r).await
                })
                .await
            }

            async fn raw_get_metadata_delta(
                &self,
                req: proto::GetMetadataDeltaRequest,
            ) -> Result<RawStream<proto::GetMetadataDeltaResponse>, CsiError> {
                self.streaming("GetMetadataDelta", req, |h, r| async move {
                    h.get_metadata_delta(r).await
                })
                .await
            }
        }
    };
}

crate::api::for_each_unary_rpc!(plugin_dispatch);

impl Plugin {
    /// A server-streaming SnapshotMetadata RPC: the common path of
    /// [`Plugin::unary`], then each streamed message checked.
    async fn streaming<P, T, W, Fut>(
        &self,
        rpc: &'static str,
        req: P,
        call: impl FnOnce(Arc<dyn SnapshotMetadata>, T) -> Fut,
    ) -> Result<RawStream<W>, CsiError>
    where
        P: Debug,
        T: TryFrom<P, Error = CsiError> + StreamBounds,
        Fut: Future<Output = Result<BlockMetadataStream, CsiError>>,
        W: TryFrom<BlockMetadataResponse, Error = CsiError> + ResponseRules + Send + 'static,
    {
        let stream: BlockStream = self
            .unary(
                rpc,
                req,
                self.snapshot_metadata(rpc),
                |_: &T| None,
                |h, r| {
                    let bounds = r.bounds();
                    async move { call(h, r).await.map(|s| BlockStream(s, bounds)) }
                },
            )
            .await?;
        Ok(checked_block_messages(rpc, stream))
    }
}

/// What a SnapshotMetadata request asks of the stream that answers it:
/// `(starting_offset, max_results)`.
trait StreamBounds {
    fn bounds(&self) -> (u64, Option<u32>);
}

impl StreamBounds for crate::snapshot_metadata::GetMetadataAllocatedRequest {
    fn bounds(&self) -> (u64, Option<u32>) {
        (self.starting_offset, self.max_results)
    }
}

impl StreamBounds for crate::snapshot_metadata::GetMetadataDeltaRequest {
    fn bounds(&self) -> (u64, Option<u32>) {
        (self.starting_offset, self.max_results)
    }
}

/// The rules a streamed message owes its request: "If the value of
/// max_results ... is greater than zero, then the number of entries in this
/// list MUST be less than or equal to that value", and the stream's first
/// range must end after `starting_offset` ("if S is the requested
/// starting_offset, and B0 is block_metadata[0] of the first message in the
/// response stream, then (S < B0.byte_offset + B0.size_bytes) must be
/// true"; the first range of a stream whose first messages are empty is
/// held to it too). `first` is whether no range was streamed before.
fn within_bounds(
    m: &BlockMetadataResponse,
    (starting_offset, max_results): (u64, Option<u32>),
    first: bool,
) -> Result<(), CsiError> {
    if let Some(max) = max_results.filter(|&m| m > 0)
        && m.block_metadata.len() > max as usize
    {
        return Err(CsiError::invalid(
            "block_metadata",
            format!(
                "must hold at most the request's max_results ({max}) ranges, got {}",
                m.block_metadata.len()
            ),
        ));
    }
    if let (true, Some(b0)) = (first, m.block_metadata.first()) {
        let end = b0.byte_offset.saturating_add(b0.size_bytes);
        if end <= starting_offset {
            return Err(CsiError::invalid(
                "block_metadata[0]",
                format!(
                    "the stream's first range must end after the request's starting_offset \
                     ({starting_offset}), but it ends at {end}"
                ),
            ));
        }
    }
    Ok(())
}

/// What a plugin advertises, which some response rules depend on.
#[derive(Clone, Copy, Debug)]
struct Advertised {
    plugin: PluginCapabilities,
    controller: ControllerCapabilities,
    node: NodeCapabilities,
}

impl Plugin {
    fn advertised(&self) -> Advertised {
        Advertised {
            plugin: self.inner.plugin_capabilities,
            controller: self.inner.controller_capabilities,
            node: self.inner.node_capabilities,
        }
    }
}

/// A wire response the plugin checks against the spec before sending it,
/// and against what the plugin advertises.
trait WireResponse {
    fn check(&self, advertised: Advertised) -> Result<(), CsiError>;
}

/// The response rules that depend on what the plugin advertises. Where a
/// response reports topology, which only a plugin advertising
/// `VOLUME_ACCESSIBILITY_CONSTRAINTS` may: "A plugin that returns this field
/// MUST also set the VOLUME_ACCESSIBILITY_CONSTRAINTS plugin capability"
/// (`Volume.accessible_topology`, `NodeGetInfoResponse.accessible_topology`);
/// and where a response MUST carry a field because of a capability.
trait AdvertisedRules {
    /// The first field that holds topology, if any.
    fn topology_field(&self) -> Option<String> {
        None
    }

    /// The fields the spec makes REQUIRED by an advertised capability:
    /// `ListVolumesResponse.entries[].status` with
    /// `LIST_VOLUMES_PUBLISHED_NODES`; the `volume_condition` of
    /// `ListVolumes` entries and of `ControllerGetVolume` with the
    /// controller's `VOLUME_CONDITION`, of `NodeGetVolumeStats` with the
    /// node's ("This field MUST be specified if the VOLUME_CONDITION
    /// [...] capability is supported"). A `published_node_ids` list is
    /// not checked: an empty one is how the wire says "published nowhere".
    fn capability_fields(&self, _: Advertised) -> Result<(), CsiError> {
        Ok(())
    }
}

/// The error for `field`, missing although `capability` is advertised.
fn required_by(field: String, capability: &str) -> CsiError {
    CsiError::invalid(
        field,
        format!(
            "this field is REQUIRED: it MUST be specified when the plugin advertises {capability}"
        ),
    )
}

/// A volume's topology field under `path`, if set.
fn volume_topology(path: impl FnOnce() -> String, v: &Option<proto::Volume>) -> Option<String> {
    v.as_ref()
        .filter(|v| !v.accessible_topology.is_empty())
        .map(|_| format!("{}.accessible_topology", path()))
}

impl AdvertisedRules for proto::CreateVolumeResponse {
    fn topology_field(&self) -> Option<String> {
        volume_topology(|| "volume".into(), &self.volume)
    }
}

impl AdvertisedRules for proto::ControllerGetVolumeResponse {
    fn topology_field(&self) -> Option<String> {
        volume_topology(|| "volume".into(), &self.volume)
    }

    fn capability_fields(&self, a: Advertised) -> Result<(), CsiError> {
        // `status` itself is REQUIRED whatever is advertised (a MUST rule).
        if a.controller
            .contains(ControllerCapabilities::VOLUME_CONDITION)
            && self
                .status
                .as_ref()
                .is_some_and(|s| s.volume_condition.is_none())
        {
            return Err(required_by(
                "status.volume_condition".into(),
                "the controller's VOLUME_CONDITION",
            ));
        }
        Ok(())
    }
}

impl AdvertisedRules for proto::ListVolumesResponse {
    fn topology_field(&self) -> Option<String> {
        self.entries
            .iter()
            .enumerate()
            .find_map(|(i, e)| volume_topology(|| format!("entries[{i}].volume"), &e.volume))
    }

    fn capability_fields(&self, a: Advertised) -> Result<(), CsiError> {
        type C = ControllerCapabilities;
        let nodes = a.controller.contains(C::LIST_VOLUMES_PUBLISHED_NODES);
        let condition = a.controller.contains(C::VOLUME_CONDITION);
        for (i, e) in self.entries.iter().enumerate() {
            match &e.status {
                None if nodes => {
                    return Err(required_by(
                        format!("entries[{i}].status"),
                        "LIST_VOLUMES_PUBLISHED_NODES",
                    ));
                }
                // The condition lives in the status: without one it is missing too.
                Some(proto::list_volumes_response::VolumeStatus {
                    volume_condition: None,
                    ..
                })
                | None
                    if condition =>
                {
                    return Err(required_by(
                        format!("entries[{i}].status.volume_condition"),
                        "the controller's VOLUME_CONDITION",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl AdvertisedRules for proto::NodeGetVolumeStatsResponse {
    fn capability_fields(&self, a: Advertised) -> Result<(), CsiError> {
        if a.node.contains(NodeCapabilities::VOLUME_CONDITION) && self.volume_condition.is_none() {
            return Err(required_by(
                "volume_condition".into(),
                "the node's VOLUME_CONDITION",
            ));
        }
        Ok(())
    }
}

impl AdvertisedRules for proto::NodeGetInfoResponse {
    fn topology_field(&self) -> Option<String> {
        self.accessible_topology
            .as_ref()
            .map(|_| "accessible_topology".to_string())
    }
}

// Responses without topology or a capability-dependent field.
impl AdvertisedRules for proto::GetPluginInfoResponse {}
impl AdvertisedRules for proto::GetPluginCapabilitiesResponse {}
impl AdvertisedRules for proto::ProbeResponse {}
impl AdvertisedRules for proto::DeleteVolumeResponse {}
impl AdvertisedRules for proto::ControllerPublishVolumeResponse {}
impl AdvertisedRules for proto::ControllerUnpublishVolumeResponse {}
impl AdvertisedRules for proto::ValidateVolumeCapabilitiesResponse {}
impl AdvertisedRules for proto::GetCapacityResponse {}
impl AdvertisedRules for proto::ControllerGetCapabilitiesResponse {}
impl AdvertisedRules for proto::CreateSnapshotResponse {}
impl AdvertisedRules for proto::DeleteSnapshotResponse {}
impl AdvertisedRules for proto::ListSnapshotsResponse {}
impl AdvertisedRules for proto::GetSnapshotResponse {}
impl AdvertisedRules for proto::ControllerExpandVolumeResponse {}
impl AdvertisedRules for proto::ControllerModifyVolumeResponse {}
impl AdvertisedRules for proto::GroupControllerGetCapabilitiesResponse {}
impl AdvertisedRules for proto::CreateVolumeGroupSnapshotResponse {}
impl AdvertisedRules for proto::DeleteVolumeGroupSnapshotResponse {}
impl AdvertisedRules for proto::GetVolumeGroupSnapshotResponse {}
impl AdvertisedRules for proto::NodeStageVolumeResponse {}
impl AdvertisedRules for proto::NodeUnstageVolumeResponse {}
impl AdvertisedRules for proto::NodePublishVolumeResponse {}
impl AdvertisedRules for proto::NodeUnpublishVolumeResponse {}
impl AdvertisedRules for proto::NodeExpandVolumeResponse {}
impl AdvertisedRules for proto::NodeGetCapabilitiesResponse {}

macro_rules! wire_responses {
    ($([$server:ident :: $service:ident, $field:ident] {
        $(($method:ident, $raw:ident, $rpc:literal, $req:ident, $resp:ident, $serve:tt, $key:tt)),* $(,)?
    })*) => {
        $($(
            impl WireResponse for proto::$resp {
                fn check(&self, advertised: Advertised) -> Result<(), CsiError> {
                    // Both severities: a driver served here is held to
                    // the tolerated rules too (see `crate::check`).
                    if let Some(odd) = crate::check::ResponseRules::tolerated(self).into_iter().next() {
                        let rule = odd.rule.split(';').next().unwrap_or_default();
                        return Err(CsiError::invalid(odd.field, rule));
                    }
                    crate::check::ResponseRules::must(self)?;
                    AdvertisedRules::capability_fields(self, advertised)?;
                    match AdvertisedRules::topology_field(self) {
                        Some(field)
                            if !advertised
                                .plugin
                                .contains(PluginCapabilities::VOLUME_ACCESSIBILITY_CONSTRAINTS) =>
                        {
                            Err(CsiError::invalid(
                                field,
                                "set, but the plugin does not advertise \
                                 VOLUME_ACCESSIBILITY_CONSTRAINTS (a plugin that returns \
                                 topology MUST set that capability)",
                            ))
                        }
                        _ => Ok(()),
                    }
                }
            }
        )*)*
    };
}

crate::api::for_each_unary_rpc!(wire_responses);

impl WireResponse for BlockStream {
    /// The messages are checked one by one as they are streamed.
    fn check(&self, _: Advertised) -> Result<(), CsiError> {
        Ok(())
    }
}

/// Checks each streamed block-metadata message in place before it is sent
/// (the messages have MUST rules only).
fn checked_block_messages<W>(rpc: &'static str, stream: BlockStream) -> RawStream<W>
where
    W: TryFrom<BlockMetadataResponse, Error = CsiError> + ResponseRules + Send + 'static,
{
    let BlockStream(messages, bounds) = stream;
    let mut first = true;
    messages
        .map(move |r| {
            let r = r?;
            within_bounds(&r, bounds, first).map_err(|e| {
                CsiError::internal(format!("the driver's {rpc} stream breaks the spec: {e}"))
            })?;
            first &= r.block_metadata.is_empty();
            let wire = W::try_from(r).map_err(|e| e.built_by_driver(&format!("{rpc}Response")))?;
            wire.must().map_err(|e| {
                CsiError::internal(format!("the driver's {rpc} stream breaks the spec: {e}"))
            })?;
            Ok(wire)
        })
        .boxed()
}

/// Lets a stream pass through [`Plugin::unary`], which logs its response with `Debug`.
struct BlockStream(BlockMetadataStream, (u64, Option<u32>));

impl Debug for BlockStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<stream of block metadata>")
    }
}
