//! The JBOD agent: the drives of the inventory as sparse files under a data
//! directory (`<drive id>.img`, the node side's naming), exported over NBD by
//! `raid-engine`'s server, each to exactly the servers its volumes are
//! published to.
//!
//! The controller keeps the allow-lists in step with its records
//! ([`JbodAgent::sync_volume`] after every ControllerPublish, Unpublish and
//! Delete of a volume using the `nbd` transport, [`JbodAgent::sync_all`] on
//! start-up). A drive is exported the first time a volume on it is published
//! (the file is created sparse, at the drive's capacity); until then, and
//! after its last unpublish, nobody may open it.
//!
//! On one host every server of the inventory stands for itself with its own
//! loopback address ([`server_address`]: `127.0.0.2` for the first server,
//! then onwards through `127.0.0.0/8`), and its node side connects from that
//! address ([`connect_member`]), so the allow-list decides for real: the
//! server sees the peer address of each connection.
//!
//! A volume's members are claimed on the agent's drive files
//! ([`BlockDevice::claim_range`]) for as long as the volume is exported: an
//! `nbd` volume whose members overlap another's (in this agent or another
//! process on the files) is refused with FAILED_PRECONDITION naming the
//! drive file, the range and the rule, and nothing of its grants changes.
//!
//! An allow-list is checked when an export is opened; connections opened
//! before an unpublish keep working until the node closes them (NodeUnstage
//! comes before ControllerUnpublish in CSI's order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use composer_core::inventory::Transport;
use composer_core::store::VolumeRecord;
use composer_core::{Composer, Inventory};
use csi_types::CsiError;
use raid_engine::device::{BlockDevice, CacheMode, Claim, ClaimHolder, FileDevice};
use raid_engine::nbd::{AllowList, Export, NbdDevice, NbdServer, ServerHandle};

/// Publish-context key carrying the agent's `host:port` for NBD volumes.
pub const CONTEXT_AGENT: &str = "nbdAgent";

/// The loopback address standing for the server at `index` of the
/// inventory on one host: `127.0.0.2 + index` (`127.0.0.1` stays the
/// agent's own). `None` past the end of `127.0.0.0/8`.
pub fn server_address(index: u32) -> Option<IpAddr> {
    let n = index.checked_add(2).filter(|n| *n < 1 << 24)?;
    Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n)))
}

/// Opens member `drive` of a volume from the agent at `agent` (`host:port`)
/// as the server at `source` would: the connection comes from that address.
/// Refused with `NBD_REP_ERR_POLICY` unless the drive is published there.
pub fn connect_member(
    agent: &str,
    drive: &str,
    source: IpAddr,
) -> Result<NbdDevice, raid_engine::EngineError> {
    NbdDevice::connect_from(agent, drive, source)
}

/// How much of each end of a member [`wipe_members`] zeroes: where
/// filesystem, md and engine signatures live.
pub const WIPE_BYTES: u64 = 1 << 20;

/// Zeroes the first and last [`WIPE_BYTES`] of every member of `rec` in the
/// drive files under `data_dir` (those that exist), and syncs them, so that
/// space freed by a delete never shows a later volume a stale filesystem or
/// RAID superblock (a slice is reused at the same offset). Called while the
/// volume still owns its members, just before its delete is recorded.
pub fn wipe_members(data_dir: &Path, rec: &VolumeRecord) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for m in &rec.members {
        let path = data_dir.join(format!("{}.img", m.drive));
        let f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let have = f.metadata()?.len();
        let end = (m.offset + m.len).min(have);
        if end <= m.offset {
            continue;
        }
        let head = (m.offset, (m.offset + WIPE_BYTES).min(end));
        let tail = (end.saturating_sub(WIPE_BYTES).max(head.1), end);
        let zeros = vec![0u8; WIPE_BYTES as usize];
        for (a, b) in [head, tail] {
            if b > a {
                f.write_all_at(&zeros[..(b - a) as usize], a)?;
            }
        }
        f.sync_data()?;
    }
    Ok(())
}

/// An exported drive: its device, and per volume the servers allowed
/// through it.
type Exported = (Arc<dyn BlockDevice>, BTreeMap<String, BTreeSet<IpAddr>>);

#[derive(Default)]
struct Grants {
    /// Per drive, once exported.
    drives: BTreeMap<String, Exported>,
    /// Per volume, the drives it holds grants on.
    volumes: BTreeMap<String, BTreeSet<String>>,
    /// Per volume with grants, its claims on its members' bytes of the
    /// drive files ([`BlockDevice::claim_range`]), held as long as it is
    /// exported.
    claims: BTreeMap<String, (ClaimHolder, Vec<Claim>)>,
}

/// A running agent. Shut it down with [`JbodAgent::shutdown`].
pub struct JbodAgent {
    inv: Arc<Inventory>,
    data_dir: PathBuf,
    addr: SocketAddr,
    server: Mutex<Option<ServerHandle>>,
    grants: Mutex<Grants>,
}

fn internal(m: String) -> CsiError {
    CsiError::internal(format!("JBOD agent: {m}"))
}

impl JbodAgent {
    /// Starts the agent for the drives of `inv`, with its files under
    /// `data_dir`, listening on `bind` (for example `127.0.0.1:0`).
    pub fn start(inv: Arc<Inventory>, data_dir: &Path, bind: &str) -> Result<JbodAgent, CsiError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            internal(format!(
                "creating {}: {e}",
                storage_units::quote_path(data_dir)
            ))
        })?;
        let server = NbdServer::bind(bind).map_err(|e| internal(e.to_string()))?;
        let handle = server.spawn().map_err(|e| internal(e.to_string()))?;
        Ok(JbodAgent {
            inv,
            data_dir: data_dir.to_path_buf(),
            addr: handle.local_addr(),
            server: Mutex::new(Some(handle)),
            grants: Mutex::new(Grants::default()),
        })
    }

    /// The directory of the drive files.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The address the agent listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The servers (their addresses) that may open `drive` now.
    pub fn allowed(&self, drive: &str) -> BTreeSet<IpAddr> {
        self.lock()
            .drives
            .get(drive)
            .map(|(_, by_vol)| by_vol.values().flatten().copied().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the grants of volume `id` what `rec` says: for an `nbd` volume,
    /// each of its drives open to every server it is published to; for any
    /// other volume, or `None` (deleted), no grant at all. A volume with
    /// grants holds its members' bytes of the drive files; one whose bytes
    /// another holder has is refused with FAILED_PRECONDITION (naming the
    /// file, the range and the rule) and its grants stay as they were.
    pub fn sync_volume(&self, id: &str, rec: Option<&VolumeRecord>) -> Result<(), CsiError> {
        if self.is_stopped() {
            return Err(internal("the agent has stopped".into()));
        }
        let mut want: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        if let Some(r) = rec.filter(|r| r.transport == Transport::Nbd) {
            let mut ips = BTreeSet::new();
            for node in r.published.keys() {
                let ip = self
                    .inv
                    .server_index(node)
                    .and_then(server_address)
                    .ok_or_else(|| {
                        CsiError::failed_precondition(format!(
                            "JBOD agent: exporting volume {id}: it is published to node {node}, \
                             which is not a server of the inventory (or has no address); every \
                             node a volume is published to must be in the inventory"
                        ))
                    })?;
                ips.insert(ip);
            }
            if !ips.is_empty() {
                for m in &r.members {
                    want.insert(m.drive.clone(), ips.clone());
                }
            }
        }
        let mut g = self.lock();
        // Open the drives newly needed and claim the volume's bytes of them
        // first, so a failure changes nothing.
        let mut opened = BTreeMap::new();
        for drive in want.keys() {
            if !g.drives.contains_key(drive) {
                opened.insert(drive.clone(), self.open_drive(drive)?);
            }
        }
        let (holder, old) = g.claims.remove(id).unwrap_or_else(|| {
            (
                ClaimHolder::new(format!("the JBOD agent's export of volume {id}")),
                Vec::new(),
            )
        });
        let members = rec.filter(|_| !want.is_empty()).map(|r| &r.members[..]);
        let claimed = (|| {
            let mut claims = Vec::new();
            for m in members.unwrap_or_default() {
                let Some(dev) = g
                    .drives
                    .get(&m.drive)
                    .map(|(d, _)| d)
                    .or_else(|| opened.get(&m.drive))
                else {
                    continue;
                };
                let size = dev.size();
                if m.len == 0 || m.offset.checked_add(m.len).is_none_or(|end| end > size) {
                    // The record and the drive disagree (the inventory gives
                    // the drive fewer bytes than when the volume was placed):
                    // not the agent's fault, and nothing to retry as it is.
                    return Err(CsiError::failed_precondition(format!(
                        "JBOD agent: exporting volume {id}: its member on drive {} is bytes \
                         {}..{} and the drive ({}) has {size} bytes; a member must be \
                         non-empty and lie within its drive",
                        m.drive,
                        m.offset,
                        u128::from(m.offset) + u128::from(m.len),
                        dev.describe()
                    )));
                }
                let c = dev.claim_range(&holder, m.offset, m.len).map_err(|e| {
                    let what = format!("JBOD agent: exporting volume {id}: {e}");
                    if e.kind() == std::io::ErrorKind::ResourceBusy {
                        CsiError::failed_precondition(what)
                    } else {
                        CsiError::internal(what)
                    }
                })?;
                claims.push(c);
            }
            Ok(claims)
        })();
        let claims = match claimed {
            Ok(c) => c,
            Err(e) => {
                g.claims.insert(id.to_string(), (holder, old));
                return Err(e);
            }
        };
        // The new claims are taken: the old ones (the same ranges, counted
        // twice meanwhile, or ranges no longer exported) go.
        drop(old);
        if !claims.is_empty() {
            g.claims.insert(id.to_string(), (holder, claims));
        }
        for (drive, dev) in opened {
            g.drives.insert(drive, (dev, BTreeMap::new()));
        }
        let mut touched: BTreeSet<String> = g.volumes.remove(id).unwrap_or_default();
        for d in &touched {
            if let Some((_, by_vol)) = g.drives.get_mut(d) {
                by_vol.remove(id);
            }
        }
        for (d, ips) in &want {
            if let Some((_, by_vol)) = g.drives.get_mut(d) {
                by_vol.insert(id.to_string(), ips.clone());
            }
        }
        if !want.is_empty() {
            g.volumes
                .insert(id.to_string(), want.keys().cloned().collect());
        }
        touched.extend(want.into_keys());
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let server = server
            .as_ref()
            .ok_or_else(|| internal("the agent has stopped".into()))?;
        for d in touched {
            let Some((dev, by_vol)) = g.drives.get(&d) else {
                continue;
            };
            let allow: Vec<IpAddr> = by_vol
                .values()
                .flatten()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            server
                .add_export(Export {
                    name: d.clone(),
                    device: dev.clone(),
                    allow: AllowList::Only(allow),
                    read_only: false,
                })
                .map_err(|e| internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Grants what the composer's records say (on start-up): each `nbd`
    /// volume published somewhere is granted on its own, so that one that
    /// cannot be (its bytes held by another holder, a member past its
    /// drive's end) does not keep the others from their servers. Each
    /// refusal is logged at error level, naming the volume and why, and
    /// returned with its volume id; the volume stays ungranted until its
    /// next ControllerPublish (the CO's retry) or start-up grants it, and
    /// that call answers the refusal to the CO. `Err` only when the agent
    /// has stopped.
    pub fn sync_all(&self, c: &Composer) -> Result<Vec<(String, CsiError)>, CsiError> {
        let mut refused = Vec::new();
        for r in c.records() {
            if r.transport != Transport::Nbd || r.published.is_empty() {
                continue;
            }
            if let Err(e) = self.sync_volume(&r.id, Some(&r)) {
                if self.is_stopped() {
                    return Err(e);
                }
                tracing::error!(volume = %r.id, error = %e,
                    "JBOD agent: the volume's drives are not exported at start-up");
                refused.push((r.id.clone(), e));
            }
        }
        Ok(refused)
    }

    fn is_stopped(&self) -> bool {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The drive's file, created sparse at the drive's capacity.
    fn open_drive(&self, drive: &str) -> Result<Arc<dyn BlockDevice>, CsiError> {
        let i = self.inv.drive_index(drive).ok_or_else(|| {
            CsiError::failed_precondition(format!(
                "JBOD agent: drive {drive} is not in the inventory; every drive of a volume \
                 must be (was it removed while volumes still use it?)"
            ))
        })?;
        let cap = self.inv.drives()[i as usize].capacity;
        let path = self.data_dir.join(format!("{drive}.img"));
        // The standard library's errors do not name the file, the engine's
        // do: each is named once.
        let std_err = |what: &str, e: std::io::Error| {
            internal(format!(
                "{what} the file of drive {drive}, {}: {e}",
                storage_units::quote_path(&path)
            ))
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| std_err("opening", e))?;
        let have = f.metadata().map_err(|e| std_err("reading", e))?.len();
        if have < cap {
            f.set_len(cap).map_err(|e| std_err("sizing", e))?;
        }
        drop(f);
        let dev = FileDevice::open(&path, CacheMode::Buffered)
            .map_err(|e| internal(format!("opening the file of drive {drive}: {e}")))?;
        Ok(Arc::new(dev))
    }

    /// Stops accepting connections, and lets the volumes' bytes of the
    /// drive files go (another agent may export them now).
    pub fn shutdown(&self) {
        if let Some(h) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.shutdown();
        }
        self.lock().claims.clear();
    }
}
