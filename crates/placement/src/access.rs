//! Which servers can attach a placement: the CSI accessible topology of a volume.
//!
//! A server reaches a drive when it shares a bandwidth domain with it (or lists none: it reaches
//! everything) and a transport both support (within the request's `transports`); it reaches a
//! placement when it reaches every member.

use crate::engine::{Engine, PlacementError};
use crate::model::{DriveId, ServerId, Transports, VolumeId};

impl Engine {
    /// The servers that can reach every one of `drives` over a transport allowed by
    /// `transports` (`None`: any), in inventory order. Fails on an unknown drive.
    ///
    /// ```
    /// use placement::{DriveId, Engine, Inventory, Transports};
    ///
    /// let inv = Inventory::from_toml(r#"
    ///     bandwidth_domain = [{ id = "tor1", kind = "switch", capacity = "50 GB/s" }]
    ///     drive = [{ id = "d1", kind = "nvme", capacity = "4 TB", transports = ["roce"], bandwidth_domains = ["tor1"] }]
    ///     server = [
    ///       { id = "near", bandwidth_domains = ["tor1"] },
    ///       { id = "tcp-only", transports = ["nvme-tcp"] },
    ///       { id = "anywhere" },
    ///     ]
    /// "#).unwrap();
    /// let engine = Engine::new(inv, 0).unwrap();
    /// let d1 = DriveId::new("d1").unwrap();
    /// let servers = engine.servers_reaching(&[d1], None).unwrap();
    /// let names: Vec<&str> = servers.iter().map(|s| s.as_str()).collect();
    /// assert_eq!(names, ["near", "anywhere"]);
    /// ```
    pub fn servers_reaching(
        &self,
        drives: &[DriveId],
        transports: Option<Transports>,
    ) -> Result<Vec<ServerId>, PlacementError> {
        let inv = &self.inv;
        let mut idx = Vec::with_capacity(drives.len());
        for d in drives {
            idx.push(
                *inv.ix
                    .drive_index
                    .get(d)
                    .ok_or_else(|| PlacementError::UnknownTarget(d.to_string()))?,
            );
        }
        let allowed = transports.unwrap_or(Transports::all());
        Ok(inv
            .spec
            .servers
            .iter()
            .enumerate()
            .filter(|(s, _)| {
                let sb = &inv.ix.server_bw[*s];
                idx.iter().all(|&d| {
                    let bw_ok = sb.is_empty()
                        || inv.ix.drive_bw[d as usize]
                            .iter()
                            .any(|b| sb.binary_search(b).is_ok());
                    let tr =
                        inv.spec.drives[d as usize].transports & inv.ix.server_tr[*s] & allowed;
                    bw_ok && !tr.is_empty()
                })
            })
            .map(|(_, s)| s.id.clone())
            .collect())
    }

    /// The servers that can attach the placed volume `id` (its members' drives, over the
    /// transports its request allows).
    pub fn volume_servers(&self, id: &VolumeId) -> Result<Vec<ServerId>, PlacementError> {
        let v = self
            .volume(id)
            .ok_or_else(|| PlacementError::UnknownVolume(id.clone()))?;
        self.servers_reaching(&v.members, v.request.transports)
    }
}
