//! Identity service cases.

use csi_types::{
    identity::{GetPluginCapabilitiesResponse, GetPluginInfoResponse, ProbeResponse},
    proto,
};

use super::{Case, case};
use crate::ctx::ensure;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "identity/get_plugin_info",
            "GetPluginInfo answers a valid name and a non-empty vendor_version",
            |c| {
                let r: GetPluginInfoResponse = c.ok(
                    "GetPluginInfo",
                    c.ctl()
                        .raw_get_plugin_info(proto::GetPluginInfoRequest {})
                        .await,
                )?;
                ensure!(
                    !r.vendor_version.is_empty(),
                    "GetPluginInfo: vendor_version is REQUIRED but empty"
                );
                if !std::ptr::addr_eq(c.ctl(), c.nd()) {
                    let n: GetPluginInfoResponse = c.ok(
                        "GetPluginInfo (node endpoint)",
                        c.nd()
                            .raw_get_plugin_info(proto::GetPluginInfoRequest {})
                            .await,
                    )?;
                    ensure!(
                        n.name == r.name,
                        "GetPluginInfo: the controller calls itself {} but the node {}",
                        r.name,
                        n.name
                    );
                }
                Ok(())
            }
        ),
        case!(
            "identity/get_plugin_capabilities",
            "GetPluginCapabilities answers, and CONTROLLER_SERVICE agrees with ControllerGetCapabilities",
            |c| {
                let r: GetPluginCapabilitiesResponse = c.ok(
                    "GetPluginCapabilities",
                    c.ctl()
                        .raw_get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
                        .await,
                )?;
                if r.capabilities
                    .contains(csi_types::capabilities::PluginCapabilities::CONTROLLER_SERVICE)
                {
                    let _: csi_types::controller::ControllerGetCapabilitiesResponse = c.ok(
                        "ControllerGetCapabilities",
                        c.ctl()
                            .raw_controller_get_capabilities(Default::default())
                            .await,
                    )?;
                }
                Ok(())
            }
        ),
        case!(
            "identity/probe",
            "Probe answers OK on both endpoints",
            |c| {
                let _: ProbeResponse =
                    c.ok("Probe", c.ctl().raw_probe(proto::ProbeRequest {}).await)?;
                let _: ProbeResponse = c.ok(
                    "Probe (node endpoint)",
                    c.nd().raw_probe(proto::ProbeRequest {}).await,
                )?;
                Ok(())
            }
        ),
    ]
}
