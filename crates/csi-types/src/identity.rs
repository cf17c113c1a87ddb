//! Typed requests and responses of the Identity service.

use crate::CsiError;
use crate::capabilities::PluginCapabilities;
use crate::check::must::MustResponse;
use crate::ids::PluginName;
use crate::proto;
use crate::types::Map;
use crate::validate;

/// `GetPluginInfo` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetPluginInfoRequest {}

/// `GetPluginInfo` response.
///
/// ```
/// use csi_types::{identity::GetPluginInfoResponse, ids::PluginName};
/// let r = GetPluginInfoResponse::new(PluginName::new("local.csi.example.com").unwrap(), "0.1.0")
///     .unwrap()
///     .with_manifest("commit", "abc123");
/// let wire: csi_types::proto::GetPluginInfoResponse = r.into();
/// assert_eq!(wire.name, "local.csi.example.com");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetPluginInfoResponse {
    /// The plugin's name. REQUIRED.
    pub name: PluginName,
    /// The plugin's version, opaque to the CO. REQUIRED (non-empty).
    pub vendor_version: String,
    /// Opaque build information.
    pub manifest: Map,
}

impl GetPluginInfoResponse {
    /// A response with every REQUIRED field.
    ///
    /// # Errors
    /// `INTERNAL` if `vendor_version` is empty or too long, naming the field
    /// and the rule: a driver that builds an invalid response has a bug of its
    /// own, so the error it passes on with `?` must not answer
    /// `INVALID_ARGUMENT`, which would blame the CO's request.
    ///
    /// ```
    /// use csi_types::{Code, identity::GetPluginInfoResponse, ids::PluginName};
    /// let name = PluginName::new("local.csi.example.com").unwrap();
    /// let err = GetPluginInfoResponse::new(name, "").unwrap_err();
    /// assert_eq!(err.code(), Code::Internal);
    /// assert_eq!(
    ///     err.to_string(),
    ///     "internal error: invalid GetPluginInfoResponse built by the driver: \
    ///      vendor_version: this field is REQUIRED"
    /// );
    /// ```
    pub fn new(name: PluginName, vendor_version: impl Into<String>) -> Result<Self, CsiError> {
        let vendor_version = vendor_version.into();
        check_vendor_version(&vendor_version)
            .map_err(|e| CsiError::built_invalid("GetPluginInfoResponse", e))?;
        Ok(GetPluginInfoResponse {
            name,
            vendor_version,
            manifest: Map::new(),
        })
    }

    /// Adds a manifest entry.
    pub fn with_manifest(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.manifest.insert(key.into(), value.into());
        self
    }
}

/// The rules of `vendor_version`, shared by [`GetPluginInfoResponse::new`]
/// and the response's in-place check.
pub(crate) fn check_vendor_version(v: &str) -> Result<(), CsiError> {
    validate::required("vendor_version", v)?;
    validate::string("vendor_version", v)
}

/// `GetPluginCapabilities` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetPluginCapabilitiesRequest {}

/// `GetPluginCapabilities` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetPluginCapabilitiesResponse {
    /// The advertised capabilities.
    pub capabilities: PluginCapabilities,
}

/// `Probe` request (empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeRequest {}

/// `Probe` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeResponse {
    /// Whether the plugin is ready; `None` means the plugin does not say
    /// (the CO treats that as ready).
    pub ready: Option<bool>,
}

impl ProbeResponse {
    /// A plugin that is ready.
    pub fn ready() -> Self {
        ProbeResponse { ready: Some(true) }
    }

    /// A plugin that is still starting.
    pub fn not_ready() -> Self {
        ProbeResponse { ready: Some(false) }
    }
}

crate::messages::empty_messages! {
    GetPluginInfoRequest => proto::GetPluginInfoRequest,
    GetPluginCapabilitiesRequest => proto::GetPluginCapabilitiesRequest,
    ProbeRequest => proto::ProbeRequest,
}

impl TryFrom<proto::GetPluginInfoResponse> for GetPluginInfoResponse {
    type Error = CsiError;
    fn try_from(p: proto::GetPluginInfoResponse) -> Result<Self, CsiError> {
        p.must()?;
        Ok(GetPluginInfoResponse {
            name: PluginName::from_checked(p.name),
            vendor_version: p.vendor_version,
            manifest: p.manifest,
        })
    }
}

impl From<GetPluginInfoResponse> for proto::GetPluginInfoResponse {
    fn from(r: GetPluginInfoResponse) -> Self {
        proto::GetPluginInfoResponse {
            name: r.name.into_string(),
            vendor_version: r.vendor_version,
            manifest: r.manifest,
        }
    }
}

impl TryFrom<proto::GetPluginCapabilitiesResponse> for GetPluginCapabilitiesResponse {
    type Error = CsiError;
    fn try_from(p: proto::GetPluginCapabilitiesResponse) -> Result<Self, CsiError> {
        Ok(GetPluginCapabilitiesResponse {
            capabilities: PluginCapabilities::from_proto(&p.capabilities),
        })
    }
}

impl From<GetPluginCapabilitiesResponse> for proto::GetPluginCapabilitiesResponse {
    fn from(r: GetPluginCapabilitiesResponse) -> Self {
        proto::GetPluginCapabilitiesResponse {
            capabilities: r.capabilities.to_proto(),
        }
    }
}

impl TryFrom<proto::ProbeResponse> for ProbeResponse {
    type Error = CsiError;
    fn try_from(p: proto::ProbeResponse) -> Result<Self, CsiError> {
        Ok(ProbeResponse { ready: p.ready })
    }
}

impl From<ProbeResponse> for proto::ProbeResponse {
    fn from(r: ProbeResponse) -> Self {
        proto::ProbeResponse { ready: r.ready }
    }
}
