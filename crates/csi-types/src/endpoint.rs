//! Parsing of CSI endpoint addresses (`unix:///path`, `tcp://host:port`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a CSI plugin listens: a unix socket (the norm) or TCP (for tests
/// and remote tools).
///
/// ```
/// use csi_types::endpoint::Endpoint;
/// assert_eq!(
///     "unix:///run/csi/csi.sock".parse::<Endpoint>().unwrap(),
///     Endpoint::Unix("/run/csi/csi.sock".into())
/// );
/// assert!("tcp://127.0.0.1:10000".parse::<Endpoint>().is_ok());
/// assert!("http://x".parse::<Endpoint>().is_err());
/// let e = "unix:///run/csi\0/csi.sock".parse::<Endpoint>().unwrap_err();
/// assert!(e.to_string().ends_with("the socket path must not contain a NUL byte"), "{e}");
/// assert!("/run/csi\0".parse::<Endpoint>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix domain socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// An endpoint string that is not `unix://PATH` or `tcp://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {endpoint:?}: {reason}")]
pub struct EndpointError {
    endpoint: String,
    reason: &'static str,
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let err = |reason| EndpointError {
            endpoint: s.to_string(),
            reason,
        };
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(err("the socket path is empty"));
            }
            if !path.starts_with('/') {
                return Err(err(
                    "the socket path must be absolute (unix:///path/to/csi.sock)",
                ));
            }
            // No path with one can be bound or connected to; refused here, before a server
            // makes the socket's directory.
            if path.contains('\0') {
                return Err(err("the socket path must not contain a NUL byte"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr
                .parse()
                .map(Endpoint::Tcp)
                .map_err(|_| err("expected tcp://IP:PORT, e.g. tcp://127.0.0.1:10000"));
        }
        if s.starts_with('/') {
            if s.contains('\0') {
                return Err(err("the socket path must not contain a NUL byte"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        Err(err("expected unix:///path/to/csi.sock or tcp://IP:PORT"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The size of `sun_path`, which holds a unix socket's path and its closing NUL: 108 bytes on
/// Linux (104 on the BSDs and macOS, whose `bind` and `connect` still refuse a longer one).
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) const SUN_PATH_BYTES: usize = 108;

/// The error for a socket path too long for `sun_path`, naming the limit and the length (the
/// standard library only says "path must be shorter than SUN_LEN"); `None` when it fits.
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) fn socket_path_too_long(path: &std::path::Path) -> Option<std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let len = path.as_os_str().as_bytes().len();
    (len >= SUN_PATH_BYTES).then(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the socket path is {len} bytes, and a unix socket path must be shorter than \
                 {SUN_PATH_BYTES} bytes (sun_path): use a shorter directory"
            ),
        )
    })
}
