//! Identity service cases.

use csi_types::{GetPluginCapabilitiesResponse, GetPluginInfoResponse, ProbeResponse, proto};

use super::{Case, case};
use crate::ctx::{ensure, ok};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "identity/get_plugin_info",
            "GetPluginInfo answers a valid name and a non-empty vendor_version",
            |c| {
                let r: GetPluginInfoResponse = ok(
                    "GetPluginInfo",
                    c.ctl()
                        .get_plugin_info(proto::GetPluginInfoRequest {})
                        .await,
                )?;
                ensure!(
                    !r.vendor_version.is_empty(),
                    "GetPluginInfo: vendor_version is REQUIRED but empty"
                );
                if !std::ptr::addr_eq(c.ctl(), c.nd()) {
                    let n: GetPluginInfoResponse = ok(
                        "GetPluginInfo (node endpoint)",
                        c.nd().get_plugin_info(proto::GetPluginInfoRequest {}).await,
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
                let r: GetPluginCapabilitiesResponse = ok(
                    "GetPluginCapabilities",
                    c.ctl()
                        .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
                        .await,
                )?;
                if r.capabilities
                    .contains(csi_types::PluginCapabilities::CONTROLLER_SERVICE)
                {
                    let _: csi_types::ControllerGetCapabilitiesResponse = ok(
                        "ControllerGetCapabilities",
                        c.ctl()
                            .controller_get_capabilities(Default::default())
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
                let _: ProbeResponse = ok("Probe", c.ctl().probe(proto::ProbeRequest {}).await)?;
                let _: ProbeResponse = ok(
                    "Probe (node endpoint)",
                    c.nd().probe(proto::ProbeRequest {}).await,
                )?;
                Ok(())
            }
        ),
    ]
}
