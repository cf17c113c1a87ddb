//! The inventory of a composable data centre: sites, storage groups, racks,
//! switches, JBODs/eBODs with their drives, and servers, in one TOML format a
//! person can write ([`InventoryFile`]), checked once into an [`Inventory`]
//! whose every entry is valid and every reference resolved.
//!
//! A *site* is one Ethernet fabric: every server of a site reaches every drive
//! of the site over the transports both support. A *storage group* is a set of
//! racks that share a failure (power feed, controller pair); racks that name
//! none are their own group. Switches and JBOD ports are bandwidth domains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use storage_units::{ByteRate, ByteSize};

/// The built-in inventory: one site, two storage groups, four racks of JBODs,
/// an eBOD per rack and four servers per rack. Used when no file is given.
pub const DEFAULT_INVENTORY: &str = include_str!("../default-inventory.toml");

/// A storage transport between a server and a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// NVMe over RDMA (RoCE v2): the fastest.
    Roce,
    /// NVMe over TCP.
    Nvmetcp,
    /// iSCSI.
    Iscsi,
    /// The node side's user-space block transport (NBD); the slowest.
    Nbd,
}

impl Transport {
    /// Every transport, fastest first.
    pub const FASTEST_FIRST: [Transport; 4] = [
        Transport::Roce,
        Transport::Nvmetcp,
        Transport::Iscsi,
        Transport::Nbd,
    ];

    /// The name used in files and StorageClass parameters.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Roce => "roce",
            Transport::Nvmetcp => "nvmetcp",
            Transport::Iscsi => "iscsi",
            Transport::Nbd => "nbd",
        }
    }

    /// Parses a transport name (`roce`, `nvmetcp`, `iscsi`, `nbd`).
    pub fn parse(s: &str) -> Option<Transport> {
        Transport::FASTEST_FIRST.into_iter().find(|t| t.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransportSet(u8);

impl TransportSet {
    /// Every transport.
    pub const ALL: TransportSet = TransportSet(0b1111);

    /// The set of the given transports.
    pub fn of(ts: impl IntoIterator<Item = Transport>) -> TransportSet {
        TransportSet(ts.into_iter().fold(0, |a, t| a | t.bit()))
    }

    /// Whether `t` is in the set.
    pub fn contains(self, t: Transport) -> bool {
        self.0 & t.bit() != 0
    }

    /// Members, fastest first.
    pub fn iter(self) -> impl Iterator<Item = Transport> {
        Transport::FASTEST_FIRST
            .into_iter()
            .filter(move |t| self.contains(*t))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The transports in both sets.
    pub fn intersect(self, other: TransportSet) -> TransportSet {
        TransportSet(self.0 & other.0)
    }
}

/// The medium of a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// Spinning disk (give `rpm`).
    Hdd,
    /// SAS/SATA solid-state drive.
    Ssd,
    /// NVMe solid-state drive.
    Nvme,
}

/// The operational state of a drive, enclosure or server: placement's
/// (`healthy`, `degraded`, `draining`, `failed`; ordered from best to worst),
/// so that one word means one thing across the SDK. Only healthy drives and
/// servers take new volumes; volumes with a member on a failed drive are
/// abnormal.
pub use placement::Health;

/// A storage enclosure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enclosure {
    /// Just a bunch of disks behind a SAS expander and an Ethernet head.
    #[default]
    Jbod,
    /// Ethernet bunch of flash: each NVMe drive reachable on the fabric.
    Ebod,
}

/// Reads one of `names` (each with its value) whatever its ASCII case and surrounding blanks, as
/// StorageClass values are read (`kind = "SSD"`, `transports = ["RoCE"]`); anything else is
/// refused naming the values allowed.
fn any_case<'de, D, T>(d: D, names: &[(&str, T)]) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Copy,
{
    let got = String::deserialize(d)?;
    let key = got.trim().to_ascii_lowercase();
    names
        .iter()
        .find(|(n, _)| *n == key)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let allowed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            serde::de::Error::custom(format!(
                "unknown value {got:?}, expected one of {} (any case)",
                allowed.join(", ")
            ))
        })
}

impl<'de> Deserialize<'de> for Transport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Transport::FASTEST_FIRST.map(|t| (t.name(), t));
        any_case(d, &names)
    }
}

impl<'de> Deserialize<'de> for Media {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_case(
            d,
            &[
                ("hdd", Media::Hdd),
                ("ssd", Media::Ssd),
                ("nvme", Media::Nvme),
            ],
        )
    }
}

impl<'de> Deserialize<'de> for Enclosure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_case(d, &[("jbod", Enclosure::Jbod), ("ebod", Enclosure::Ebod)])
    }
}

/// A drive's or server's `health`, in any case (placement's names).
fn health_any_case<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Health, D::Error> {
    any_case(d, &Health::NAMES)
}

fn default_transports() -> Vec<Transport> {
    Transport::FASTEST_FIRST.to_vec()
}

fn default_max_volumes() -> u32 {
    128
}

fn one() -> u32 {
    1
}

/// `[[site]]`: one fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Site id (a CSI topology value: at most 63 characters of `[A-Za-z0-9._-]`).
    pub id: String,
    /// Tags every drive of the site carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `[[storage_group]]`: racks that fail together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageGroupSpec {
    /// Group id.
    pub id: String,
    /// The site it is in.
    pub site: String,
    /// Optional cap on the bytes placed in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<ByteSize>,
}

/// `[[switch]]`: a bandwidth domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    /// Switch id.
    pub id: String,
    /// The site it is in.
    pub site: String,
    /// Bandwidth (`"400 GB/s"`).
    pub bandwidth: ByteRate,
}

/// `[[rack]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackSpec {
    /// Rack id (a CSI topology value).
    pub id: String,
    /// The site it is in.
    pub site: String,
    /// The storage group it belongs to; absent = a group of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_group: Option<String>,
    /// The top-of-rack switch its enclosures hang off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// Tags every drive of the rack carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `[[jbod.drive]]`: `count` identical drives in consecutive slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveGroupSpec {
    /// Explicit id (only with `count = 1`); default `<jbod>-<slot>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// How many drives (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Medium.
    pub kind: Media,
    /// Capacity of each drive.
    pub capacity: ByteSize,
    /// Rotation speed (HDDs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tags of these drives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Transports these drives can be exported over (default: the enclosure's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<Transport>>,
    /// State of these drives.
    #[serde(default, deserialize_with = "health_any_case")]
    pub health: Health,
}

/// `[[jbod]]`: an enclosure of drives (JBOD or eBOD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JbodSpec {
    /// Enclosure id.
    pub id: String,
    /// The rack it is in.
    pub rack: String,
    /// `jbod` (default) or `ebod`.
    #[serde(default)]
    pub kind: Enclosure,
    /// The switch it hangs off (default: the rack's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// Bandwidth of its Ethernet port(s), bytes per second (default 12.5 GB/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_bandwidth: Option<ByteRate>,
    /// Transports its drives can be exported over (default all).
    #[serde(default = "default_transports")]
    pub transports: Vec<Transport>,
    /// Tags every drive of the enclosure carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The drives, in slot order.
    #[serde(default, rename = "drive")]
    pub drives: Vec<DriveGroupSpec>,
}

/// `[[server]]`: a compute node volumes are published to (a CSI node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Server id: the CSI `node_id` and topology value.
    pub id: String,
    /// The rack it is in.
    pub rack: String,
    /// Transports its initiators support (default all).
    #[serde(default = "default_transports")]
    pub transports: Vec<Transport>,
    /// How many volumes may be published to it at once (default 128).
    #[serde(default = "default_max_volumes")]
    pub max_volumes: u32,
    /// State of the server.
    #[serde(default, deserialize_with = "health_any_case")]
    pub health: Health,
}

/// The inventory file as a person writes it. Unknown keys are rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    /// Sites.
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteSpec>,
    /// Storage groups.
    #[serde(default, rename = "storage_group")]
    pub storage_groups: Vec<StorageGroupSpec>,
    /// Switches.
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchSpec>,
    /// Racks.
    #[serde(default, rename = "rack")]
    pub racks: Vec<RackSpec>,
    /// Enclosures.
    #[serde(default, rename = "jbod")]
    pub jbods: Vec<JbodSpec>,
    /// Servers.
    #[serde(default, rename = "server")]
    pub servers: Vec<ServerSpec>,
}

/// A drive, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Drive id, unique in the inventory.
    pub id: String,
    /// Index of its enclosure (see [`Inventory::jbod_id`]).
    pub jbod: u32,
    /// Index of its rack.
    pub rack: u32,
    /// Index of its site.
    pub site: u32,
    /// Medium.
    pub kind: Media,
    /// Capacity in bytes.
    pub capacity: u64,
    /// RPM (HDDs; 0 when unknown).
    pub rpm: u32,
    /// Own tags plus those of its enclosure, rack and site.
    pub tags: BTreeSet<String>,
    /// Transports it can be exported over.
    pub transports: TransportSet,
    /// Health written in the file.
    pub health: Health,
}

/// A server, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Server id (CSI node id).
    pub id: String,
    /// Index of its rack.
    pub rack: u32,
    /// Index of its site.
    pub site: u32,
    /// Transports it supports.
    pub transports: TransportSet,
    /// Attach limit.
    pub max_volumes: u32,
    /// Health written in the file.
    pub health: Health,
}

/// A checked inventory: every id unique, every reference resolved.
#[derive(Debug, Clone)]
pub struct Inventory {
    file: InventoryFile,
    drives: Vec<Drive>,
    servers: Vec<Server>,
    drive_index: HashMap<String, u32>,
    server_index: HashMap<String, u32>,
    site_index: HashMap<String, u32>,
    rack_index: HashMap<String, u32>,
    jbod_index: HashMap<String, u32>,
    /// Per rack: its storage group index, if any.
    rack_group: Vec<Option<u32>>,
    /// Per enclosure: its switch index, if any.
    jbod_switch: Vec<Option<u32>>,
    /// Per site: its server indexes.
    site_servers: Vec<Vec<u32>>,
    /// Per rack: its server indexes.
    rack_servers: Vec<Vec<u32>>,
    /// Per enclosure: its drive indexes.
    jbod_drives: Vec<Vec<u32>>,
    /// Distinct capacities per medium, ascending.
    capacities: BTreeMap<Media, Vec<u64>>,
}

/// Tags starting with this are the composer's own (see [`crate::convert`]).
pub const RESERVED_TAG_PREFIX: &str = "composer.";

/// The most drives one enclosure may hold (the largest JBODs sold hold
/// about a hundred): a `count` beyond it is a typo, refused with the entry
/// named, rather than an inventory of billions of drives that takes all
/// the memory there is before it answers.
pub const MAX_ENCLOSURE_DRIVES: u32 = 1024;

fn bad(entry: impl Into<String>, rule: impl Into<String>) -> Error {
    Error::Inventory {
        entry: entry.into(),
        rule: rule.into(),
    }
}

fn check_id(entry: &str, field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(bad(entry, format!("{field} must not be empty")));
    }
    if id.len() > 63 {
        return Err(bad(
            entry,
            format!(
                "{field} must be at most 63 characters (a CSI topology value), got {}",
                id.len()
            ),
        ));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !id.chars().all(ok_char)
        || !id.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !id.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(bad(
            entry,
            format!(
                "{field} {id:?} must be letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn check_tags(entry: &str, tags: &[String]) -> Result<(), Error> {
    for t in tags {
        if t.is_empty()
            || t.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(bad(
                entry,
                format!("tag {t:?} must be non-empty, without whitespace or commas"),
            ));
        }
        if t.starts_with(RESERVED_TAG_PREFIX) {
            return Err(bad(
                entry,
                format!("tag {t:?}: tags starting with {RESERVED_TAG_PREFIX:?} are reserved"),
            ));
        }
    }
    Ok(())
}

fn index_of<'a>(
    kind: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, u32>, Error> {
    let mut m = HashMap::new();
    for (i, id) in ids.enumerate() {
        let entry = format!("{kind} '{id}'");
        check_id(&entry, "id", id)?;
        if m.insert(id.to_string(), i as u32).is_some() {
            return Err(bad(entry, format!("duplicate {kind} id")));
        }
    }
    Ok(m)
}

fn resolve(
    map: &HashMap<String, u32>,
    entry: &str,
    field: &str,
    what: &str,
    id: &str,
) -> Result<u32, Error> {
    map.get(id)
        .copied()
        .ok_or_else(|| bad(entry, format!("{field} refers to unknown {what} '{id}'")))
}

impl Inventory {
    /// Parses and checks an inventory file.
    ///
    /// ```
    /// let inv = composer_core::Inventory::from_toml(composer_core::DEFAULT_INVENTORY).unwrap();
    /// assert!(inv.drives().len() > 100);
    /// let err = composer_core::Inventory::from_toml("[[rack]]\nid = \"r1\"\nsite = \"nowhere\"\n")
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "inventory: rack 'r1': site refers to unknown site 'nowhere'");
    /// ```
    pub fn from_toml(text: &str) -> Result<Inventory, Error> {
        let file: InventoryFile = toml::from_str(text).map_err(|e| Error::Inventory {
            entry: "file".into(),
            rule: e.to_string().trim().to_string(),
        })?;
        Inventory::from_file(file)
    }

    /// Whether a composer can serve this inventory: it needs at least one
    /// drive to place volumes on and at least one server to attach them to.
    /// [`Inventory::from_toml`] takes either alone (a fragment checked on
    /// its own, a test's); [`Composer::open`](crate::Composer::open)
    /// refuses an inventory this refuses, so that valid TOML that lacks
    /// them (an empty file, a ConfigMap key mounted empty, a file without
    /// its `[[server]]` entries) is refused at start rather than answering
    /// every create `RESOURCE_EXHAUSTED`. Call it to check a file ahead of
    /// time.
    ///
    /// ```
    /// use composer_core::Inventory;
    /// Inventory::default_inventory().check_can_serve().unwrap();
    /// let no_servers = "[[site]]\nid = \"dc\"\n[[rack]]\nid = \"r1\"\nsite = \"dc\"\n\
    ///     [[jbod]]\nid = \"j1\"\nrack = \"r1\"\n\
    ///     [[jbod.drive]]\nkind = \"ssd\"\ncapacity = \"1 TB\"\n";
    /// let e = Inventory::from_toml(no_servers).unwrap().check_can_serve().unwrap_err();
    /// assert!(e.to_string().starts_with("inventory: no servers: a composer needs at least one [[server]]"));
    /// ```
    pub fn check_can_serve(&self) -> Result<(), Error> {
        if self.drives.is_empty() {
            return Err(bad(
                "no drives",
                "a composer needs at least one [[jbod]] with a [[jbod.drive]] entry",
            ));
        }
        if self.servers.is_empty() {
            return Err(bad(
                "no servers",
                "a composer needs at least one [[server]] to attach volumes to \
                 (with none, every create fails for want of a server that supports a transport)",
            ));
        }
        Ok(())
    }

    /// Whether every storage group `p` names (`storageGroup`) is one of
    /// this inventory's: a create and `GetCapacity` of such a class are
    /// refused alike, naming the key and the groups there are (before,
    /// `GetCapacity` answered 0 bytes for a misspelt group while the create
    /// was refused, so a CO saw an empty class rather than an error).
    ///
    /// ```
    /// use composer_core::{Inventory, Parameters};
    /// let p = Parameters::parse(&[("storageGroup".into(), "sg-z".into())].into()).unwrap();
    /// let e = Inventory::default_inventory().check_names(&p).unwrap_err();
    /// assert!(e.to_string().starts_with("parameters[\"storageGroup\"]: unknown storage group 'sg-z'"));
    /// ```
    pub fn check_names(&self, p: &crate::Parameters) -> Result<(), Error> {
        let groups = &self.file.storage_groups;
        match p
            .storage_groups
            .iter()
            .find(|g| !groups.iter().any(|s| &s.id == *g))
        {
            None => Ok(()),
            Some(g) => Err(Error::Parameter {
                key: "storageGroup".into(),
                rule: if groups.is_empty() {
                    format!("unknown storage group '{g}' (the inventory has none)")
                } else {
                    format!(
                        "unknown storage group '{g}' (the inventory's: {})",
                        groups
                            .iter()
                            .map(|s| s.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            }),
        }
    }

    /// The built-in default inventory.
    pub fn default_inventory() -> Inventory {
        Inventory::from_toml(DEFAULT_INVENTORY).expect("the built-in inventory is valid")
    }

    /// Checks an inventory given as data.
    pub fn from_file(file: InventoryFile) -> Result<Inventory, Error> {
        let site_index = index_of("site", file.sites.iter().map(|s| s.id.as_str()))?;
        let group_index = index_of(
            "storage_group",
            file.storage_groups.iter().map(|s| s.id.as_str()),
        )?;
        let switch_index = index_of("switch", file.switches.iter().map(|s| s.id.as_str()))?;
        let rack_index = index_of("rack", file.racks.iter().map(|s| s.id.as_str()))?;
        let jbod_index = index_of("jbod", file.jbods.iter().map(|s| s.id.as_str()))?;
        let server_index = index_of("server", file.servers.iter().map(|s| s.id.as_str()))?;
        for s in &file.sites {
            check_tags(&format!("site '{}'", s.id), &s.tags)?;
        }
        let mut group_site = Vec::new();
        for g in &file.storage_groups {
            let e = format!("storage_group '{}'", g.id);
            group_site.push(resolve(&site_index, &e, "site", "site", &g.site)?);
        }
        let mut switch_site = Vec::new();
        for s in &file.switches {
            let e = format!("switch '{}'", s.id);
            switch_site.push(resolve(&site_index, &e, "site", "site", &s.site)?);
            if s.bandwidth.bytes_per_second() == 0 {
                return Err(bad(e, "bandwidth must be greater than zero"));
            }
        }
        let mut rack_site = Vec::new();
        let mut rack_group = Vec::new();
        let mut rack_switch = Vec::new();
        for r in &file.racks {
            let e = format!("rack '{}'", r.id);
            let site = resolve(&site_index, &e, "site", "site", &r.site)?;
            check_tags(&e, &r.tags)?;
            let group = match &r.storage_group {
                Some(g) => {
                    let gi = resolve(&group_index, &e, "storage_group", "storage group", g)?;
                    if group_site[gi as usize] != site {
                        return Err(bad(e, format!("storage_group '{g}' is in another site")));
                    }
                    Some(gi)
                }
                None => None,
            };
            let sw = match &r.switch {
                Some(s) => {
                    let si = resolve(&switch_index, &e, "switch", "switch", s)?;
                    if switch_site[si as usize] != site {
                        return Err(bad(e, format!("switch '{s}' is in another site")));
                    }
                    Some(si)
                }
                None => None,
            };
            rack_site.push(site);
            rack_group.push(group);
            rack_switch.push(sw);
        }
        let mut drives = Vec::new();
        let mut drive_index = HashMap::new();
        let mut jbod_switch = Vec::new();
        let mut jbod_drives = Vec::new();
        for (ji, j) in file.jbods.iter().enumerate() {
            let e = format!("jbod '{}'", j.id);
            let rack = resolve(&rack_index, &e, "rack", "rack", &j.rack)?;
            let site = rack_site[rack as usize];
            check_tags(&e, &j.tags)?;
            let sw = match &j.switch {
                Some(s) => {
                    let si = resolve(&switch_index, &e, "switch", "switch", s)?;
                    if switch_site[si as usize] != site {
                        return Err(bad(e, format!("switch '{s}' is in another site")));
                    }
                    Some(si)
                }
                None => rack_switch[rack as usize],
            };
            if j.port_bandwidth == Some(ByteRate::new(0)) {
                return Err(bad(e, "port_bandwidth must be greater than zero"));
            }
            if j.transports.is_empty() {
                return Err(bad(e, "transports must list at least one transport"));
            }
            let enclosure_transports = TransportSet::of(j.transports.iter().copied());
            let mut inherited: BTreeSet<String> = j.tags.iter().cloned().collect();
            inherited.extend(file.racks[rack as usize].tags.iter().cloned());
            inherited.extend(file.sites[site as usize].tags.iter().cloned());
            let mut slot = 0u32;
            let mut mine = Vec::new();
            for (gi, g) in j.drives.iter().enumerate() {
                let ge = format!("{e} drive entry {}", gi + 1);
                if g.count == 0 {
                    return Err(bad(ge, "count must be at least 1"));
                }
                if u64::from(slot) + u64::from(g.count) > u64::from(MAX_ENCLOSURE_DRIVES) {
                    return Err(bad(
                        ge,
                        format!(
                            "count {} is too many: an enclosure holds at most \
                             {MAX_ENCLOSURE_DRIVES} drives ({slot} before this entry)",
                            g.count
                        ),
                    ));
                }
                if g.id.is_some() && g.count != 1 {
                    return Err(bad(ge, "id may only be given with count = 1"));
                }
                if g.capacity.bytes() == 0 {
                    return Err(bad(ge, "capacity must be greater than zero"));
                }
                if g.kind != Media::Hdd && g.rpm.is_some() {
                    return Err(bad(ge, "rpm applies to hdd drives only"));
                }
                if g.rpm == Some(0) {
                    return Err(bad(ge, "rpm must be greater than zero"));
                }
                if j.kind == Enclosure::Ebod && g.kind == Media::Hdd {
                    return Err(bad(ge, "an ebod holds flash drives (ssd, nvme), not hdd"));
                }
                check_tags(&ge, &g.tags)?;
                let transports = match &g.transports {
                    Some(t) if t.is_empty() => {
                        return Err(bad(ge, "transports must list at least one transport"));
                    }
                    Some(t) => TransportSet::of(t.iter().copied()),
                    None => enclosure_transports,
                };
                for _ in 0..g.count {
                    let id =
                        g.id.clone()
                            .unwrap_or_else(|| format!("{}-{slot:02}", j.id));
                    let de = format!("drive '{id}'");
                    check_id(&de, "id", &id)?;
                    let di = drives.len() as u32;
                    if drive_index.insert(id.clone(), di).is_some() {
                        return Err(bad(de, "duplicate drive id"));
                    }
                    let mut tags = inherited.clone();
                    tags.extend(g.tags.iter().cloned());
                    drives.push(Drive {
                        id,
                        jbod: ji as u32,
                        rack,
                        site,
                        kind: g.kind,
                        capacity: g.capacity.bytes(),
                        rpm: g.rpm.unwrap_or(0),
                        tags,
                        transports,
                        health: g.health,
                    });
                    mine.push(di);
                    slot += 1;
                }
            }
            jbod_switch.push(sw);
            jbod_drives.push(mine);
        }
        let mut servers = Vec::new();
        let mut site_servers = vec![Vec::new(); file.sites.len()];
        let mut rack_servers = vec![Vec::new(); file.racks.len()];
        for (si, s) in file.servers.iter().enumerate() {
            let e = format!("server '{}'", s.id);
            let rack = resolve(&rack_index, &e, "rack", "rack", &s.rack)?;
            let site = rack_site[rack as usize];
            if s.transports.is_empty() {
                return Err(bad(e, "transports must list at least one transport"));
            }
            if s.max_volumes == 0 {
                return Err(bad(e, "max_volumes must be at least 1"));
            }
            site_servers[site as usize].push(si as u32);
            rack_servers[rack as usize].push(si as u32);
            servers.push(Server {
                id: s.id.clone(),
                rack,
                site,
                transports: TransportSet::of(s.transports.iter().copied()),
                max_volumes: s.max_volumes,
                health: s.health,
            });
        }
        // Marks, repairs and `composer admin` name a drive, an enclosure or
        // a server by its id alone, and one mark map holds all three: a
        // drive named as an enclosure or a server would be marked with it.
        for d in &drives {
            let other = if jbod_index.contains_key(&d.id) {
                Some("jbod")
            } else if server_index.contains_key(&d.id) {
                Some("server")
            } else {
                None
            };
            if let Some(kind) = other {
                return Err(bad(
                    format!("drive '{}'", d.id),
                    format!(
                        "id is also the id of a {kind}; drives, enclosures and servers are \
                         marked and repaired by id, which must name one of them"
                    ),
                ));
            }
        }
        if let Some(s) = file.servers.iter().find(|s| jbod_index.contains_key(&s.id)) {
            return Err(bad(
                format!("server '{}'", s.id),
                "id is also the id of a jbod; drives, enclosures and servers are \
                 marked and repaired by id, which must name one of them",
            ));
        }
        let mut caps: BTreeMap<Media, BTreeSet<u64>> = BTreeMap::new();
        for d in &drives {
            caps.entry(d.kind).or_default().insert(d.capacity);
        }
        Ok(Inventory {
            capacities: caps
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            file,
            drives,
            servers,
            drive_index,
            server_index,
            site_index,
            rack_index,
            jbod_index,
            rack_group,
            jbod_switch,
            site_servers,
            rack_servers,
            jbod_drives,
        })
    }

    /// The file this inventory was read from.
    pub fn file(&self) -> &InventoryFile {
        &self.file
    }

    /// Every drive, in file order.
    pub fn drives(&self) -> &[Drive] {
        &self.drives
    }

    /// Every server, in file order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The index of a drive.
    pub fn drive_index(&self, id: &str) -> Option<u32> {
        self.drive_index.get(id).copied()
    }

    /// The index of a server.
    pub fn server_index(&self, id: &str) -> Option<u32> {
        self.server_index.get(id).copied()
    }

    /// The index of a site.
    pub fn site_index(&self, id: &str) -> Option<u32> {
        self.site_index.get(id).copied()
    }

    /// The index of a rack.
    pub fn rack_index(&self, id: &str) -> Option<u32> {
        self.rack_index.get(id).copied()
    }

    /// The index of an enclosure.
    pub fn jbod_index(&self, id: &str) -> Option<u32> {
        self.jbod_index.get(id).copied()
    }

    /// Site id by index.
    pub fn site_id(&self, i: u32) -> &str {
        &self.file.sites[i as usize].id
    }

    /// Rack id by index.
    pub fn rack_id(&self, i: u32) -> &str {
        &self.file.racks[i as usize].id
    }

    /// Enclosure id by index.
    pub fn jbod_id(&self, i: u32) -> &str {
        &self.file.jbods[i as usize].id
    }

    /// The site of a rack.
    pub fn rack_site(&self, rack: u32) -> u32 {
        self.site_index[&self.file.racks[rack as usize].site]
    }

    /// The storage group of a rack, if it names one.
    pub fn rack_group(&self, rack: u32) -> Option<&str> {
        self.rack_group[rack as usize].map(|g| self.file.storage_groups[g as usize].id.as_str())
    }

    /// The switch of an enclosure, if any.
    pub fn jbod_switch(&self, jbod: u32) -> Option<&str> {
        self.jbod_switch[jbod as usize].map(|s| self.file.switches[s as usize].id.as_str())
    }

    /// Servers of a site.
    pub fn site_servers(&self, site: u32) -> &[u32] {
        &self.site_servers[site as usize]
    }

    /// Servers of a rack.
    pub fn rack_servers(&self, rack: u32) -> &[u32] {
        &self.rack_servers[rack as usize]
    }

    /// Drives of an enclosure.
    pub fn jbod_drives(&self, jbod: u32) -> &[u32] {
        &self.jbod_drives[jbod as usize]
    }

    /// Distinct drive capacities per medium, ascending.
    pub fn capacities(&self) -> &BTreeMap<Media, Vec<u64>> {
        &self.capacities
    }

    /// A regular inventory of any size, for benchmarks and simulations: `sites`
    /// sites of `racks` racks, each rack a storage group of its own with a
    /// 400 GB/s switch, `hdd_jbods` JBODs of `drives_per_jbod` 16 TB 7200-rpm
    /// HDDs, `flash_ebods` eBODs of `drives_per_jbod` 7.68 TB NVMe drives and
    /// `servers` servers.
    ///
    /// # Panics
    ///
    /// When the shape makes an invalid inventory: `drives_per_jbod` 0 or
    /// above [`MAX_ENCLOSURE_DRIVES`].
    pub fn generate(g: &Generate) -> Inventory {
        let mut f = InventoryFile::default();
        for s in 0..g.sites {
            let site = format!("site{s}");
            f.sites.push(SiteSpec {
                id: site.clone(),
                tags: vec![],
            });
            for r in 0..g.racks {
                let rack = format!("s{s}-r{r:03}");
                let sw = format!("{rack}-tor");
                f.switches.push(SwitchSpec {
                    id: sw.clone(),
                    site: site.clone(),
                    bandwidth: ByteRate::new(400_000_000_000),
                });
                f.racks.push(RackSpec {
                    id: rack.clone(),
                    site: site.clone(),
                    storage_group: None,
                    switch: Some(sw),
                    tags: vec![],
                });
                for j in 0..g.hdd_jbods + g.flash_ebods {
                    let flash = j >= g.hdd_jbods;
                    f.jbods.push(JbodSpec {
                        id: format!("{rack}-j{j:02}"),
                        rack: rack.clone(),
                        kind: if flash {
                            Enclosure::Ebod
                        } else {
                            Enclosure::Jbod
                        },
                        switch: None,
                        port_bandwidth: None,
                        transports: default_transports(),
                        tags: vec![],
                        drives: vec![DriveGroupSpec {
                            id: None,
                            count: g.drives_per_jbod,
                            kind: if flash { Media::Nvme } else { Media::Hdd },
                            capacity: ByteSize::new(if flash {
                                7_680_000_000_000
                            } else {
                                16_000_000_000_000
                            }),
                            rpm: (!flash).then_some(7200),
                            tags: vec![],
                            transports: None,
                            health: Health::Healthy,
                        }],
                    });
                }
                for n in 0..g.servers {
                    f.servers.push(ServerSpec {
                        id: format!("{rack}-n{n:03}"),
                        rack: rack.clone(),
                        transports: default_transports(),
                        max_volumes: default_max_volumes(),
                        health: Health::Healthy,
                    });
                }
            }
        }
        Inventory::from_file(f).expect("generated inventories are valid")
    }
}

/// The shape of a generated inventory ([`Inventory::generate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generate {
    /// Sites.
    pub sites: u32,
    /// Racks per site.
    pub racks: u32,
    /// HDD JBODs per rack.
    pub hdd_jbods: u32,
    /// NVMe eBODs per rack.
    pub flash_ebods: u32,
    /// Drives per enclosure (1 to [`MAX_ENCLOSURE_DRIVES`]).
    pub drives_per_jbod: u32,
    /// Servers per rack.
    pub servers: u32,
}

impl Generate {
    /// The scale of the issue's benchmark: 100 racks of 100 servers, 8 HDD
    /// JBODs and 2 NVMe eBODs of 100 drives each (10,000 servers, 100,000 drives).
    pub const LARGE: Generate = Generate {
        sites: 1,
        racks: 100,
        hdd_jbods: 8,
        flash_ebods: 2,
        drives_per_jbod: 100,
        servers: 100,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Inventory::from_toml(text).unwrap_err().to_string()
    }

    const BASE: &str = r#"
[[site]]
id = "dc1"
[[switch]]
id = "tor1"
site = "dc1"
bandwidth = "100 GB/s"
[[rack]]
id = "r1"
site = "dc1"
switch = "tor1"
"#;

    #[test]
    fn default_inventory_is_valid() {
        let inv = Inventory::default_inventory();
        assert!(
            inv.drives()
                .iter()
                .any(|d| d.kind == Media::Hdd && d.rpm == 7200)
        );
        assert!(inv.drives().iter().any(|d| d.kind == Media::Nvme));
        assert!(inv.servers().len() >= 8);
    }

    #[test]
    fn validation_names_entry_and_rule() {
        let cases = [
            (
                "[[site]]\nid = \"a b\"\n",
                "site 'a b': id \"a b\" must be letters",
            ),
            (
                "[[site]]\nid = \"x\"\n[[site]]\nid = \"x\"\n",
                "site 'x': duplicate site id",
            ),
            // One mark would have failed both.
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nid = \"j1\"\nkind = \"ssd\"\ncapacity = \"1 TB\"\n"
                ),
                "drive 'j1': id is also the id of a jbod",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nid = \"n1\"\nkind = \"ssd\"\ncapacity = \"1 TB\"\n[[server]]\nid = \"n1\"\nrack = \"r1\"\n"
                ),
                "drive 'n1': id is also the id of a server",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[server]]\nid = \"j1\"\nrack = \"r1\"\n"
                ),
                "server 'j1': id is also the id of a jbod",
            ),
            (
                &format!("{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r9\"\n"),
                "jbod 'j1': rack refers to unknown rack 'r9'",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nkind = \"hdd\"\ncapacity = 0\n"
                ),
                "jbod 'j1' drive entry 1: capacity must be greater than zero",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nkind = \"ssd\"\ncapacity = \"1 TB\"\nrpm = 7200\n"
                ),
                "rpm applies to hdd drives only",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\nkind = \"ebod\"\n[[jbod.drive]]\nkind = \"hdd\"\ncapacity = \"1 TB\"\n"
                ),
                "an ebod holds flash drives",
            ),
            (
                &format!("{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\ntags = [\"composer.x\"]\n"),
                "are reserved",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nid = \"d\"\ncount = 2\nkind = \"ssd\"\ncapacity = \"1 TB\"\n"
                ),
                "id may only be given with count = 1",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\ncount = 4000000000\nkind = \"hdd\"\ncapacity = \"1 TB\"\n"
                ),
                "jbod 'j1' drive entry 1: count 4000000000 is too many: an enclosure holds at most 1024 drives (0 before this entry)",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\ncount = 1000\nkind = \"hdd\"\ncapacity = \"1 TB\"\n[[jbod.drive]]\ncount = 25\nkind = \"hdd\"\ncapacity = \"1 TB\"\n"
                ),
                "jbod 'j1' drive entry 2: count 25 is too many: an enclosure holds at most 1024 drives (1000 before this entry)",
            ),
            (
                &format!("{BASE}[[server]]\nid = \"n1\"\nrack = \"r1\"\nmax_volumes = 0\n"),
                "server 'n1': max_volumes must be at least 1",
            ),
            (
                &format!("{BASE}[[server]]\nid = \"n1\"\nrack = \"r1\"\ntransports = [\"fc\"]\n"),
                "unknown value \"fc\", expected one of roce, nvmetcp, iscsi, nbd (any case)",
            ),
            (
                &format!(
                    "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\ncount = 1\nkind = \"tape\"\ncapacity = \"1 TB\"\n"
                ),
                "unknown value \"tape\", expected one of hdd, ssd, nvme (any case)",
            ),
            (
                &format!("{BASE}[[rack]]\nid = \"r2\"\nsite = \"dc1\"\ncolour = \"red\"\n"),
                "unknown field `colour`",
            ),
            (
                &format!("{BASE}[[rack]]\nid = \"r2\"\nsite = \"dc1\"\nstorage_group = \"sg\"\n"),
                "rack 'r2': storage_group refers to unknown storage group 'sg'",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    /// Enum values in the file are read whatever their ASCII case and surrounding blanks, as
    /// StorageClass values are (`kind = "SSD"` was refused before, while `type: SSD` was not).
    #[test]
    fn enum_values_are_read_in_any_case() {
        let text = format!(
            "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\nkind = \"EBOD\"\ntransports = [\"RoCE\", \" nbd \"]\n\
             [[jbod.drive]]\ncount = 2\nkind = \"SSD\"\ncapacity = \"1 TB\"\nhealth = \"Degraded\"\n\
             [[server]]\nid = \"n1\"\nrack = \"r1\"\ntransports = [\"NBD\"]\nhealth = \"FAILED\"\n"
        );
        let inv = Inventory::from_toml(&text).unwrap();
        let d = &inv.drives()[0];
        assert_eq!(d.kind, Media::Ssd);
        assert_eq!(d.health, Health::Degraded);
        assert_eq!(
            d.transports,
            TransportSet::of([Transport::Roce, Transport::Nbd])
        );
        assert_eq!(inv.file().jbods[0].kind, Enclosure::Ebod);
        assert_eq!(inv.servers()[0].health, Health::Failed);
    }

    #[test]
    fn a_served_inventory_needs_drives_and_servers() {
        let served = |text: &str| {
            Inventory::from_toml(text)
                .unwrap()
                .check_can_serve()
                .map_err(|e| e.to_string())
        };
        let jbod = "[[jbod]]\nid = \"j1\"\nrack = \"r1\"\n[[jbod.drive]]\nkind = \"ssd\"\ncapacity = \"1 TB\"\n";
        let server = "[[server]]\nid = \"n1\"\nrack = \"r1\"\n";
        assert_eq!(
            served(""),
            Err(
                "inventory: no drives: a composer needs at least one [[jbod]] with a \
                 [[jbod.drive]] entry"
                    .to_string()
            )
        );
        assert_eq!(served(&format!("{BASE}{server}")), served(""));
        let e = served(&format!("{BASE}{jbod}")).unwrap_err();
        assert!(
            e.starts_with("inventory: no servers: a composer needs at least one [[server]]"),
            "{e}"
        );
        served(&format!("{BASE}{jbod}{server}")).unwrap();
        Inventory::default_inventory().check_can_serve().unwrap();
    }

    #[test]
    fn drive_groups_expand_into_slots() {
        let inv = Inventory::from_toml(&format!(
            "{BASE}[[jbod]]\nid = \"j1\"\nrack = \"r1\"\ntags = [\"enc\"]\n[[jbod.drive]]\ncount = 3\nkind = \"hdd\"\ncapacity = \"16 TB\"\nrpm = 7200\n[[jbod.drive]]\nid = \"special\"\nkind = \"ssd\"\ncapacity = \"3.84 TB\"\ntags = [\"fast\"]\ntransports = [\"nbd\"]\n"
        ))
        .unwrap();
        let ids: Vec<_> = inv.drives().iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["j1-00", "j1-01", "j1-02", "special"]);
        let s = &inv.drives()[3];
        assert_eq!(s.capacity, 3_840_000_000_000);
        assert!(s.tags.contains("enc") && s.tags.contains("fast"));
        assert_eq!(s.transports, TransportSet::of([Transport::Nbd]));
        assert_eq!(inv.jbod_switch(0), Some("tor1"));
    }
}
