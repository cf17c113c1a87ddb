//! The driver's configuration: where it keeps volumes, who the node is, how
//! much it may provision, and the parsing of the command-line values.

use std::path::PathBuf;
use std::time::Duration;

use csi_node::Tool;

use csi_types::{
    ids::{NodeId, PluginName},
    types::Topology,
};
use storage_units::ByteSize;

/// The topology key the driver uses when no `--topology` is given.
pub const DEFAULT_TOPOLOGY_KEY: &str = "topology.local.csi.example.com/node";

/// The plugin name returned by `GetPluginInfo` unless configured otherwise.
pub const DEFAULT_DRIVER_NAME: &str = "local.csi.example.com";

/// Everything the driver needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The plugin name (`GetPluginInfo`).
    pub driver_name: PluginName,
    /// The directory holding `state.json`, `volumes/` and `snapshots/`.
    pub state_dir: PathBuf,
    /// This node's id (`NodeGetInfo`); `ControllerPublishVolume` accepts only it.
    pub node_id: NodeId,
    /// Bytes the driver may provision, volumes and snapshots together.
    pub capacity: u64,
    /// The attach limit: volumes controller-published to the node at once (0: no limit).
    pub max_volumes_per_node: u64,
    /// Where the node is; empty means no accessibility constraints.
    pub topology: Topology,
    /// Time limits for the programs csi-node runs (`--tool-timeout`), each tool at most once.
    /// [`LocalDriver::open`](crate::LocalDriver::open) sets them with [`Tool::set_timeout`],
    /// for the whole process (csi-node's settings are process-wide); a tool not named keeps
    /// its limit ([`Tool::default_timeout`] unless something else set it).
    pub tool_timeouts: Vec<(Tool, Duration)>,
}

impl Config {
    /// A configuration with the defaults the demo and the tests use: 10 GiB,
    /// 16 attachments, node `node-1` at `topology.local.csi.example.com/node=node-1`.
    pub fn with_state_dir(state_dir: impl Into<PathBuf>) -> Config {
        Config {
            driver_name: PluginName::new(DEFAULT_DRIVER_NAME).expect("a valid constant"),
            state_dir: state_dir.into(),
            node_id: NodeId::new("node-1").expect("a valid constant"),
            capacity: 10 << 30,
            max_volumes_per_node: 16,
            topology: Topology::new([(DEFAULT_TOPOLOGY_KEY, "node-1")]).expect("a valid constant"),
            tool_timeouts: Vec::new(),
        }
    }
}

/// Parses a size as `storage-units` reads every size in the workspace:
/// plain bytes or a number with an IEC (`Ki`, `Mi`, `Gi`, `Ti`, = 1024ⁿ) or
/// SI (`K`, `M`, `G`, `T`, = 1000ⁿ) unit, at most `i64::MAX` bytes (what the
/// CSI wire carries).
///
/// ```
/// assert_eq!(local::config::parse_size("4096").unwrap(), 4096);
/// assert_eq!(local::config::parse_size("10Gi").unwrap(), 10 << 30);
/// assert_eq!(local::config::parse_size("2G").unwrap(), 2_000_000_000);
/// assert!(local::config::parse_size("ten").is_err());
/// assert!(local::config::parse_size("9Ei").unwrap_err().contains("too large"));
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = ByteSize::parse(s).map_err(|e| e.to_string())?.bytes();
    if bytes > i64::MAX as u64 {
        return Err(format!(
            "{s:?} is too large: a CSI size is at most {} bytes",
            i64::MAX
        ));
    }
    Ok(bytes)
}

/// Parses `--max-volumes-per-node`: a count of volumes, 0 for no limit. A minus sign gets
/// its own message rather than the integer parser's "invalid digit found in string".
///
/// ```
/// assert_eq!(local::config::parse_attach_limit("16").unwrap(), 16);
/// assert_eq!(local::config::parse_attach_limit("0").unwrap(), 0);
/// assert_eq!(
///     local::config::parse_attach_limit("-3").unwrap_err(),
///     "must not be negative (0: no limit)"
/// );
/// assert!(local::config::parse_attach_limit("many").is_err());
/// ```
pub fn parse_attach_limit(s: &str) -> Result<u64, String> {
    if s.trim_start().starts_with('-') {
        return Err("must not be negative (0: no limit)".to_string());
    }
    s.parse::<u64>().map_err(|e| e.to_string())
}

/// Parses `--topology` values (`key=value`, repeated) into a checked topology.
///
/// ```
/// let t = local::config::parse_topology(&["zone=z1".to_string()]).unwrap();
/// assert_eq!(t.get("zone"), Some("z1"));
/// assert!(local::config::parse_topology(&["zone".to_string()]).is_err());
/// ```
pub fn parse_topology(pairs: &[String]) -> Result<Topology, String> {
    let mut segments = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("--topology {p:?}: expected key=value"))?;
        // A topology maps each key to one value: a second value for a key would otherwise
        // replace the first without a word.
        if let Some(first) = seen.insert(k, p) {
            return Err(format!(
                "--topology {p:?}: key {k:?} is already given ({first:?}); each key takes one value"
            ));
        }
        segments.push((k.to_string(), v.to_string()));
    }
    Topology::new(segments).map_err(|e| format!("--topology: {e}"))
}

/// Parses `--tool-timeout` values (`NAME=DURATION`, repeated): `NAME` is a program csi-node
/// runs ([`Tool::name`]: `blkid`, `mkfs.ext4`, `mkfs.xfs`, `e2fsck`, `resize2fs`, `xfs_growfs`,
/// `losetup`, `wipefs`), each at most once; `DURATION` a whole number of `ms`, `s`, `m` or `h`, more
/// than zero (a zero limit would fail every call that runs the tool).
///
/// ```
/// use std::time::Duration;
/// use csi_node::Tool;
/// let t = local::config::parse_tool_timeouts(&["mkfs.xfs=15m".into(), "losetup=90s".into()]).unwrap();
/// assert_eq!(t, [(Tool::MkfsXfs, Duration::from_secs(900)), (Tool::Losetup, Duration::from_secs(90))]);
/// let e = local::config::parse_tool_timeouts(&["losetup=90".into()]).unwrap_err();
/// assert!(e.starts_with("--tool-timeout \"losetup=90\": "), "{e}");
/// ```
pub fn parse_tool_timeouts(pairs: &[String]) -> Result<Vec<(Tool, Duration)>, String> {
    let mut out: Vec<(Tool, Duration)> = Vec::new();
    for p in pairs {
        let fail = |rule: String| format!("--tool-timeout {p:?}: {rule}");
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| fail("expected NAME=DURATION (e.g. mkfs.xfs=15m)".into()))?;
        let tool = Tool::ALL
            .iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Tool::ALL.iter().map(|t| t.name()).collect();
                fail(format!(
                    "unknown tool {name:?}; the tools are {}",
                    names.join(", ")
                ))
            })?;
        if out.iter().any(|(t, _)| *t == tool) {
            return Err(fail(format!(
                "tool {name:?} is already given; each tool takes one limit"
            )));
        }
        out.push((tool, parse_duration(value).map_err(fail)?));
    }
    Ok(out)
}

/// A duration for `--tool-timeout`: whole `ms`, `s`, `m` or `h`, more than zero.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let rule = "a duration is a whole number of ms, s, m or h (e.g. 90s, 15m)";
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let scale_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("duration {value:?}: {rule}")),
    };
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale_ms))
        .ok_or_else(|| format!("duration {value:?}: {rule}"))?;
    if ms == 0 {
        return Err(format!(
            "duration {value:?}: must be more than zero (a zero limit fails every call that runs the tool)"
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// The default topology for a node id: `topology.local.csi.example.com/node=<id>`
/// when the id is a valid segment value, else none.
pub fn default_topology(node_id: &NodeId) -> Topology {
    Topology::new([(DEFAULT_TOPOLOGY_KEY, node_id.as_str())]).unwrap_or_default()
}

/// The machine's host name, for the default node id.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
