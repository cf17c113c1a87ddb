//! The one place where the composer's inventory meets the other vocabularies:
//! placement's ids, failure domains and bandwidth domains, and CSI's node ids
//! and topology.
//!
//! * Failure domains: `site:<site>` → `rack:<rack>` → `jbod:<jbod>`, at
//!   levels `site`, `rack`, `jbod`. Drive ids are the inventory's.
//! * Bandwidth domains: every switch (kind `switch`) and every enclosure port
//!   (`port:<jbod>`, kind `port`).
//! * Storage groups are placement's storage groups (for `storageGroup`,
//!   quotas and placement's native storage-group separation, `sgResiliency`).
//!   A rack in no storage group fails on its own: its drives form the
//!   implicit group [`implicit_group`] of that rack, which no StorageClass
//!   can name.
//! * Transports map one to one to placement's (NBD is placement's
//!   user-space transport).
//! * Whole-drive volumes need drives of one exact capacity with nothing on
//!   them; placement has no filter on a drive's capacity, so every drive
//!   carries the tag `composer.capacity=<bytes>` and a whole-drive request
//!   requires it.
//! * CSI topology: a node (server) is the segment `{site, rack, server}` under
//!   the keys [`TOPOLOGY_SITE`], [`TOPOLOGY_RACK`], [`TOPOLOGY_SERVER`]; a
//!   volume is accessible from the servers of its site that support its
//!   transport, reported as `{site}` when that is all of them, else as
//!   `{site, rack}` and `{site, rack, server}` segments.

use std::collections::BTreeMap;

use csi_types::types::{Topology, TopologyRequirement};

use crate::error::Error;
use crate::inventory::{Health, Inventory, Media, Transport, TransportSet};

/// Topology key of a node's site.
pub const TOPOLOGY_SITE: &str = "topology.composer.csi/site";
/// Topology key of a node's rack.
pub const TOPOLOGY_RACK: &str = "topology.composer.csi/rack";
/// Topology key of the node (server) itself.
pub const TOPOLOGY_SERVER: &str = "topology.composer.csi/server";

/// The tag that pins a request to drives of exactly `capacity` bytes.
pub fn capacity_tag(capacity: u64) -> String {
    format!("composer.capacity={capacity}")
}

/// Placement's id of a site's failure domain.
pub fn site_domain(site: &str) -> String {
    format!("site:{site}")
}

/// Placement's id of an enclosure's failure domain (a repair target).
pub fn jbod_domain(jbod: &str) -> String {
    format!("jbod:{jbod}")
}

fn rack_domain(rack: &str) -> String {
    format!("rack:{rack}")
}

/// Placement's storage group of the drives of a rack in no storage group:
/// `~<rack>`. Inventory ids start with a letter or digit, so it never equals
/// a storage group of the file (nor one a StorageClass can name).
pub fn implicit_group(rack: &str) -> String {
    format!("~{rack}")
}

fn id<T>(r: Result<T, placement::IdError>) -> T {
    // Inventory ids were checked to be CSI topology values (no whitespace,
    // at most 63 bytes), which placement's id rules accept.
    r.expect("inventory ids are valid placement ids")
}

/// Placement's drive kind for a medium.
pub fn drive_kind(m: Media) -> placement::DriveKind {
    match m {
        Media::Hdd => placement::DriveKind::Hdd,
        Media::Ssd => placement::DriveKind::Ssd,
        Media::Nvme => placement::DriveKind::Nvme,
    }
}

/// Placement's transport for one of ours.
pub fn placement_transport(t: Transport) -> placement::Transports {
    match t {
        Transport::Roce => placement::Transports::ROCE,
        Transport::Nvmetcp => placement::Transports::NVME_TCP,
        Transport::Iscsi => placement::Transports::ISCSI,
        Transport::Nbd => placement::Transports::NBD,
    }
}

/// Placement's transports for a set of ours.
pub fn placement_transports(ts: TransportSet) -> placement::Transports {
    ts.iter()
        .map(placement_transport)
        .fold(placement::Transports::empty(), |a, b| a | b)
}

/// The placement inventory of `inv`, with each drive's health from `health`
/// and free space from `free` (both by drive index). No volumes.
pub fn placement_spec(
    inv: &Inventory,
    health: impl Fn(u32) -> Health,
    free: impl Fn(u32) -> u64,
) -> placement::InventorySpec {
    let f = inv.file();
    let mut spec = placement::InventorySpec::default();
    for s in &f.sites {
        spec.domains.push(placement::DomainSpec {
            id: id(placement::DomainId::new(site_domain(&s.id))),
            level: "site".into(),
            parent: None,
        });
    }
    for g in &f.storage_groups {
        spec.storage_groups.push(placement::GroupSpec {
            id: id(placement::GroupId::new(g.id.clone())),
            quota: g.quota.map(|q| placement::Bytes(q.bytes())),
            used: placement::Bytes(0),
        });
    }
    for sw in &f.switches {
        spec.bandwidth_domains.push(placement::BwDomainSpec {
            id: id(placement::BwDomainId::new(sw.id.clone())),
            kind: "switch".into(),
            capacity: placement::Bytes(sw.bandwidth.bytes_per_second()),
            load: placement::Bytes(0),
        });
    }
    for r in &f.racks {
        if r.storage_group.is_none() {
            spec.storage_groups.push(placement::GroupSpec {
                id: id(placement::GroupId::new(implicit_group(&r.id))),
                quota: None,
                used: placement::Bytes(0),
            });
        }
        spec.domains.push(placement::DomainSpec {
            id: id(placement::DomainId::new(rack_domain(&r.id))),
            level: "rack".into(),
            parent: Some(id(placement::DomainId::new(site_domain(&r.site)))),
        });
    }
    for j in &f.jbods {
        spec.domains.push(placement::DomainSpec {
            id: id(placement::DomainId::new(jbod_domain(&j.id))),
            level: "jbod".into(),
            parent: Some(id(placement::DomainId::new(rack_domain(&j.rack)))),
        });
        spec.bandwidth_domains.push(placement::BwDomainSpec {
            id: id(placement::BwDomainId::new(format!("port:{}", j.id))),
            kind: "port".into(),
            capacity: placement::Bytes(
                j.port_bandwidth
                    .map_or(12_500_000_000, |b| b.bytes_per_second()),
            ),
            load: placement::Bytes(0),
        });
    }
    for (i, d) in inv.drives().iter().enumerate() {
        let i = i as u32;
        let mut tags: Vec<String> = d.tags.iter().cloned().collect();
        tags.push(capacity_tag(d.capacity));
        let jbod = inv.jbod_id(d.jbod);
        let mut bw = vec![id(placement::BwDomainId::new(format!("port:{jbod}")))];
        if let Some(sw) = inv.jbod_switch(d.jbod) {
            bw.push(id(placement::BwDomainId::new(sw)));
        }
        spec.drives.push(placement::DriveSpec {
            id: id(placement::DriveId::new(d.id.clone())),
            kind: drive_kind(d.kind),
            capacity: placement::Bytes(d.capacity),
            free: placement::Bytes(free(i)),
            rpm: d.rpm,
            tags,
            transports: placement_transports(d.transports),
            health: health(i),
            domain: Some(id(placement::DomainId::new(jbod_domain(jbod)))),
            group: Some(id(placement::GroupId::new(
                inv.rack_group(d.rack)
                    .map_or_else(|| implicit_group(inv.rack_id(d.rack)), str::to_string),
            ))),
            bandwidth_domains: bw,
            attributes: BTreeMap::new(),
        });
    }
    spec
}

/// A node's topology: `{site, rack, server}`.
pub fn node_topology(inv: &Inventory, server: u32) -> Topology {
    let s = &inv.servers()[server as usize];
    Topology::new([
        (TOPOLOGY_SITE, inv.site_id(s.site).to_string()),
        (TOPOLOGY_RACK, inv.rack_id(s.rack).to_string()),
        (TOPOLOGY_SERVER, s.id.clone()),
    ])
    .expect("inventory ids are valid topology values")
}

/// The server of a CSI node id; `NOT_FOUND` when there is none.
pub fn server_of_node(inv: &Inventory, node_id: &str) -> Result<u32, Error> {
    inv.server_index(node_id).ok_or_else(|| {
        Error::NotFound(format!("node {node_id:?} is not a server of the inventory"))
    })
}

/// The servers a topology segment names, within one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every server of the site.
    Site,
    /// The servers of a rack.
    Rack(u32),
    /// One server.
    Server(u32),
}

impl Scope {
    /// Whether some server in scope (of `site`) satisfies `pred`.
    pub fn any_server(&self, inv: &Inventory, site: u32, pred: impl Fn(u32) -> bool) -> bool {
        match self {
            Scope::Site => inv.site_servers(site).iter().any(|s| pred(*s)),
            Scope::Rack(r) => inv.rack_servers(*r).iter().any(|s| pred(*s)),
            Scope::Server(s) => pred(*s),
        }
    }
}

/// Where one topology segment points: `(site, scope)`, or `None` when no
/// server of the inventory matches it (unknown key or value).
pub fn segment_scope(inv: &Inventory, t: &Topology) -> Option<(u32, Scope)> {
    resolve_segment(inv, t).ok()
}

/// [`segment_scope`], or why the segment names no server of the inventory
/// (the key or value at fault), for an error a user can act on.
pub fn resolve_segment(inv: &Inventory, t: &Topology) -> Result<(u32, Scope), String> {
    let mut site = None;
    let mut rack = None;
    let mut server = None;
    for (k, v) in t.segments() {
        let v = v.as_str();
        let unknown = |what: &str| format!("{k}={v}: no {what} {v:?} in the inventory");
        match k.as_str() {
            TOPOLOGY_SITE => site = Some(inv.site_index(v).ok_or_else(|| unknown("site"))?),
            TOPOLOGY_RACK => rack = Some(inv.rack_index(v).ok_or_else(|| unknown("rack"))?),
            TOPOLOGY_SERVER => server = Some(inv.server_index(v).ok_or_else(|| unknown("server"))?),
            _ => {
                return Err(format!(
                    "{k}: not a topology key of this driver ({TOPOLOGY_SITE}, {TOPOLOGY_RACK}, {TOPOLOGY_SERVER})"
                ));
            }
        }
    }
    if let Some(s) = server {
        let srv = &inv.servers()[s as usize];
        if let Some(r) = rack.filter(|&r| r != srv.rack) {
            return Err(format!(
                "server {:?} is in rack {:?}, not {:?}",
                srv.id,
                inv.rack_id(srv.rack),
                inv.rack_id(r)
            ));
        }
        if let Some(x) = site.filter(|&x| x != srv.site) {
            return Err(format!(
                "server {:?} is in site {:?}, not {:?}",
                srv.id,
                inv.site_id(srv.site),
                inv.site_id(x)
            ));
        }
        return Ok((srv.site, Scope::Server(s)));
    }
    if let Some(r) = rack {
        let rs = inv.rack_site(r);
        if let Some(x) = site.filter(|&x| x != rs) {
            return Err(format!(
                "rack {:?} is in site {:?}, not {:?}",
                inv.rack_id(r),
                inv.site_id(rs),
                inv.site_id(x)
            ));
        }
        return Ok((rs, Scope::Rack(r)));
    }
    site.map(|s| (s, Scope::Site))
        .ok_or_else(|| "an empty segment names no site, rack or server".to_string())
}

/// The sites a volume may go to, best first, each with the scopes the
/// requirement names there: preferred segments first, then the other
/// requisite ones; with no requirement every site (whole). Segments that name
/// nothing in the inventory are skipped; an empty answer means no site can
/// serve the requirement.
pub fn candidate_sites(
    inv: &Inventory,
    req: Option<&TopologyRequirement>,
) -> Vec<(u32, Vec<Scope>)> {
    let mut out: Vec<(u32, Vec<Scope>)> = Vec::new();
    let Some(req) = req else {
        return (0..inv.file().sites.len() as u32)
            .map(|s| (s, vec![Scope::Site]))
            .collect();
    };
    let mut add = |site: u32, scope: Scope| match out.iter_mut().find(|(s, _)| *s == site) {
        Some((_, scopes)) => {
            if !scopes.contains(&scope) {
                scopes.push(scope)
            }
        }
        None => out.push((site, vec![scope])),
    };
    for t in req.preferred.iter().chain(req.requisite.iter()) {
        if let Some((site, scope)) = segment_scope(inv, t) {
            add(site, scope);
        }
    }
    out
}

/// Where a volume of `site` using `transport` is accessible from: `{site}`
/// when every server there supports the transport, else per rack or server.
pub fn volume_topology(inv: &Inventory, site: u32, transport: Transport) -> Vec<Topology> {
    let site_id = inv.site_id(site).to_string();
    let ok = |s: &u32| inv.servers()[*s as usize].transports.contains(transport);
    if inv.site_servers(site).iter().all(ok) {
        return vec![Topology::new([(TOPOLOGY_SITE, site_id)]).expect("valid topology")];
    }
    let mut by_rack: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for s in inv.site_servers(site) {
        by_rack
            .entry(inv.servers()[*s as usize].rack)
            .or_default()
            .push(*s);
    }
    let mut out = Vec::new();
    for (rack, servers) in by_rack {
        let rack_id = inv.rack_id(rack).to_string();
        if servers.iter().all(ok) {
            out.push(
                Topology::new([(TOPOLOGY_SITE, site_id.clone()), (TOPOLOGY_RACK, rack_id)])
                    .expect("valid topology"),
            );
        } else {
            for s in servers.iter().filter(|s| ok(s)) {
                out.push(node_topology(inv, *s));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_inventory_converts_to_a_valid_placement_inventory() {
        let inv = Inventory::default_inventory();
        let spec = placement_spec(
            &inv,
            |_| Health::Healthy,
            |d| inv.drives()[d as usize].capacity,
        );
        let p = placement::Inventory::from_spec(spec).unwrap();
        assert_eq!(p.levels(), ["site", "rack", "jbod"]);
        let d = placement::DriveId::new("r1-j1-00").unwrap();
        assert_eq!(
            p.drive(&d).unwrap().group.as_ref().unwrap().as_str(),
            "sg-a"
        );
        assert!(
            p.drive(&d)
                .unwrap()
                .tags
                .contains(&capacity_tag(16_000_000_000_000))
        );
    }

    #[test]
    fn topology_round_trips_through_scopes() {
        let inv = Inventory::default_inventory();
        let s = inv.server_index("r2-n3").unwrap();
        let t = node_topology(&inv, s);
        assert_eq!(t.get(TOPOLOGY_SERVER), Some("r2-n3"));
        assert_eq!(segment_scope(&inv, &t), Some((0, Scope::Server(s))));
        assert!(Scope::Server(s).any_server(&inv, 0, |x| x == s));
        let other = Topology::new([(TOPOLOGY_SITE, "mars")]).unwrap();
        assert_eq!(segment_scope(&inv, &other), None);
        let wrong_rack =
            Topology::new([(TOPOLOGY_RACK, "r1"), (TOPOLOGY_SERVER, "r2-n3")]).unwrap();
        assert_eq!(segment_scope(&inv, &wrong_rack), None);
        // Server r*-n4 has only iSCSI and NBD: an NVMe/TCP volume is not reported there.
        let topo = volume_topology(&inv, 0, Transport::Nvmetcp);
        assert!(topo.iter().all(|t| t.get(TOPOLOGY_SERVER) != Some("r1-n4")));
        assert!(topo.iter().any(|t| t.get(TOPOLOGY_SERVER) == Some("r1-n1")));
        assert_eq!(volume_topology(&inv, 0, Transport::Iscsi).len(), 1);
    }
}
