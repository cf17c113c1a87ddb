//! StorageClass parameters, parsed once into [`Parameters`].
//!
//! Every key of the table in the crate README is accepted with its default;
//! any other key is refused with `INVALID_ARGUMENT` naming it, except the
//! keys Kubernetes' external-provisioner adds itself (prefix
//! `csi.storage.k8s.io/`), which are ignored.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::inventory::{RESERVED_TAG_PREFIX, Transport, TransportSet};
use storage_units::{ByteSize, quote};

/// What a volume is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeType {
    /// Whole hard disks.
    #[default]
    Hdd,
    /// Whole solid-state drives (SAS/SATA SSD or NVMe).
    Ssd,
    /// A slice of a solid-state drive.
    Slice,
}

/// Bytes a LUKS2 header takes at the start of an `encryptionFormat=luks`
/// device: the node formats with `--offset 32768` (sectors), cryptsetup's
/// default data offset for LUKS2 (two 16 KiB metadata copies and the
/// keyslots area), so the encrypted volume is the device less 16 MiB.
pub const LUKS2_HEADER_BYTES: u64 = 16 << 20;

/// How the node side encrypts an `encrypt=true` volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncryptionFormat {
    /// The user-space engine's AES-XTS, keyed from the node-stage secret.
    #[default]
    Engine,
    /// dm-crypt/LUKS (`cryptsetup`): needs device-mapper on the node; a node
    /// that cannot answers `FAILED_PRECONDITION` at stage, never plaintext.
    Luks,
}

/// The filesystem the node side makes on a mount volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsType {
    /// ext4.
    #[default]
    Ext4,
    /// XFS.
    Xfs,
}

impl FsType {
    /// Every filesystem, with its name.
    pub const ALL: &[(&'static str, FsType)] = &[("ext4", FsType::Ext4), ("xfs", FsType::Xfs)];

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// The filesystem named `name`, read as the StorageClass key `fsType`
    /// is (ASCII case and surrounding blanks do not matter, `XFS` is xfs):
    /// for a capability's `fs_type`, which Kubernetes takes from the same
    /// StorageClass, so that the controller and the node read both alike.
    pub fn from_name(name: &str) -> Option<FsType> {
        lookup(name, FsType::ALL)
    }
}

/// The largest `raidMaxDrives` accepted.
pub const MAX_RAID_DRIVES: u32 = 64;

/// Parsed StorageClass parameters. Field docs give the key and default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    /// `type`: hdd | ssd | slice (default hdd).
    pub kind: VolumeType,
    /// `rpm`: minimum rotation speed of HDDs (ignored for ssd and slice).
    pub min_rpm: Option<u32>,
    /// `fsType`: ext4 | xfs (default ext4).
    pub fs_type: FsType,
    /// `striping` (default true): when no single drive fits, stripe whole
    /// drives (RAID10 with `redundancy`, RAID0 without). Never for slices.
    pub striping: bool,
    /// `redundancy` (default false): mirror every byte (RAID1 / RAID10).
    pub redundancy: bool,
    /// `raidMaxDrives` (default 16, 1 to 64): most drives in one volume.
    pub raid_max_drives: u32,
    /// `sgResiliency` (default true): a redundant volume must survive the
    /// failure of a storage group (else the create fails); false = best effort.
    pub sg_resiliency: bool,
    /// `jbodResiliency` (default true): likewise for an enclosure failure.
    pub jbod_resiliency: bool,
    /// `encrypt` (default false): recorded in the volume context for the node
    /// side, which encrypts the device.
    pub encrypt: bool,
    /// `encryptionFormat` (default engine; needs `encrypt=true`): engine or luks.
    pub encryption_format: EncryptionFormat,
    /// `minVolumeSize`: smaller requests are rounded up to it.
    pub min_volume_size: Option<u64>,
    /// `maxVolumeSize`: larger requests answer `OUT_OF_RANGE`.
    pub max_volume_size: Option<u64>,
    /// `softDomains` (default false): bandwidth-domain spreading is a
    /// preference (true) or a rule (false).
    pub soft_domains: bool,
    /// `requiredTags`: drives must carry all of them.
    pub required_tags: Vec<String>,
    /// `excludedTags`: drives must carry none of them.
    pub excluded_tags: Vec<String>,
    /// `storageGroup`: drives must be in one of these storage groups.
    pub storage_groups: Vec<String>,
    /// `networkTransportsAllowed`: transports the volume may use (empty = the
    /// fastest available).
    pub transports: TransportSet,
}

impl Default for Parameters {
    fn default() -> Self {
        Parameters {
            kind: VolumeType::Hdd,
            min_rpm: None,
            fs_type: FsType::Ext4,
            striping: true,
            redundancy: false,
            raid_max_drives: 16,
            sg_resiliency: true,
            jbod_resiliency: true,
            encrypt: false,
            encryption_format: EncryptionFormat::Engine,
            min_volume_size: None,
            max_volume_size: None,
            soft_domains: false,
            required_tags: Vec::new(),
            excluded_tags: Vec::new(),
            storage_groups: Vec::new(),
            transports: TransportSet::ALL,
        }
    }
}

/// Every key this driver reads, in README order.
pub const KEYS: &[&str] = &[
    "type",
    "rpm",
    "fsType",
    "striping",
    "redundancy",
    "raidMaxDrives",
    "sgResiliency",
    "jbodResiliency",
    "encrypt",
    "encryptionFormat",
    "minVolumeSize",
    "maxVolumeSize",
    "softDomains",
    "requiredTags",
    "excludedTags",
    "storageGroup",
    "networkTransportsAllowed",
];

/// The keys whose value is a comma-separated list.
pub const LIST_KEYS: &[&str] = &[
    "requiredTags",
    "excludedTags",
    "storageGroup",
    "networkTransportsAllowed",
];

/// Keys with this prefix are added by Kubernetes' external-provisioner and ignored.
pub const KUBERNETES_PREFIX: &str = "csi.storage.k8s.io/";

fn bad(key: &str, rule: impl Into<String>) -> Error {
    Error::Parameter {
        key: key.to_string(),
        rule: rule.into(),
    }
}

/// The value of `choices` that `v` names. Every value from a fixed
/// vocabulary (`type`, `fsType`, `encryptionFormat`, the booleans, the
/// transports) is read this one way: ASCII case and surrounding blanks do
/// not matter, as Kubernetes' own drivers read `fsType` and volume types
/// (`XFS`, `SSD`, `True`). Names of things in the inventory (tags, storage
/// groups) are ids and stay exact.
fn lookup<T: Copy>(v: &str, choices: &[(&str, T)]) -> Option<T> {
    let v = v.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(v))
        .map(|&(_, t)| t)
}

/// `choices`' names as a rule says them: "a, b or c".
fn alternatives<T>(choices: &[(&str, T)]) -> String {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// [`lookup`], refusing any other value with the key and the allowed ones.
fn one_of<T: Copy>(key: &str, v: &str, choices: &[(&str, T)]) -> Result<T, Error> {
    lookup(v, choices).ok_or_else(|| {
        bad(
            key,
            format!("must be {}, got {}", alternatives(choices), quote(v)),
        )
    })
}

fn boolean(key: &str, v: &str) -> Result<bool, Error> {
    one_of(key, v, &[("true", true), ("false", false)])
}

fn list(key: &str, v: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                key,
                format!("item {} must not contain whitespace", quote(item)),
            ));
        }
        if !out.iter().any(|o| o == item) {
            out.push(item.to_string());
        }
    }
    Ok(out)
}

/// A whole number: its digits (surrounding blanks aside), said as `what`
/// when it is not one. A number too large for the key is the caller's to
/// refuse with its range: before, `rpm=99999999999` was told "must be a
/// whole number", which it is.
fn whole(key: &str, v: &str, what: &str) -> Result<u64, Error> {
    // A leading `+` as `u32::from_str` took it (stored classes are read back).
    let t = v.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, format!("must be {what}, got {}", quote(v))));
    }
    // Only digits: what does not parse is beyond 64 bits.
    Ok(t.parse().unwrap_or(u64::MAX))
}

fn size(key: &str, v: &str) -> Result<u64, Error> {
    let s: ByteSize = v.parse().map_err(|e: storage_units::ParseSizeError| {
        bad(
            key,
            format!("must be a size such as \"10Gi\" or \"1 TB\": {e}"),
        )
    })?;
    if s.bytes() == 0 {
        return Err(bad(key, "must be greater than zero"));
    }
    Ok(s.bytes())
}

impl Parameters {
    /// Bytes the node keeps at the start of the volume's device for its own
    /// metadata: [`LUKS2_HEADER_BYTES`] with `encrypt=true` and
    /// `encryptionFormat=luks`, else 0. The plan lays out a device this much
    /// larger than the capacity it reports.
    pub fn device_overhead(&self) -> u64 {
        if self.encrypt && self.encryption_format == EncryptionFormat::Luks {
            LUKS2_HEADER_BYTES
        } else {
            0
        }
    }

    /// Parses StorageClass parameters.
    ///
    /// This is also how stored volume records are read back, so it accepts
    /// what earlier versions accepted (an empty list entry is skipped, a
    /// repeated one folded); a new volume's class is also held to
    /// [`Parameters::check_new`].
    ///
    /// ```
    /// use composer_core::{Parameters, VolumeType};
    /// let p = Parameters::parse(&[("type".into(), "slice".into())].into()).unwrap();
    /// assert_eq!(p.kind, VolumeType::Slice);
    /// assert!(p.striping && !p.redundancy);
    /// let e = Parameters::parse(&[("tpye".into(), "ssd".into())].into()).unwrap_err();
    /// assert!(e.to_string().starts_with("parameters[\"tpye\"]: unknown StorageClass parameter"));
    /// ```
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Parameters, Error> {
        let mut p = Parameters::default();
        for (k, v) in map {
            let key = k.as_str();
            match key {
                "type" => {
                    p.kind = one_of(
                        key,
                        v,
                        &[
                            ("hdd", VolumeType::Hdd),
                            ("ssd", VolumeType::Ssd),
                            ("slice", VolumeType::Slice),
                        ],
                    )?
                }
                "rpm" => {
                    let rpm = whole(key, v, "a whole number of revolutions per minute")?;
                    if rpm == 0 {
                        return Err(bad(key, "must be greater than zero"));
                    }
                    p.min_rpm = Some(u32::try_from(rpm).map_err(|_| {
                        bad(key, format!("must be at most {}, got {rpm}", u32::MAX))
                    })?);
                }
                "fsType" => p.fs_type = one_of(key, v, FsType::ALL)?,
                "striping" => p.striping = boolean(key, v)?,
                "redundancy" => p.redundancy = boolean(key, v)?,
                "raidMaxDrives" => {
                    let n = whole(key, v, "a whole number")?;
                    if !(1..=u64::from(MAX_RAID_DRIVES)).contains(&n) {
                        return Err(bad(
                            key,
                            format!("must be between 1 and {MAX_RAID_DRIVES}, got {n}"),
                        ));
                    }
                    p.raid_max_drives = n as u32;
                }
                "sgResiliency" => p.sg_resiliency = boolean(key, v)?,
                "jbodResiliency" => p.jbod_resiliency = boolean(key, v)?,
                "encrypt" => p.encrypt = boolean(key, v)?,
                "encryptionFormat" => {
                    p.encryption_format = one_of(
                        key,
                        v,
                        &[
                            ("engine", EncryptionFormat::Engine),
                            ("luks", EncryptionFormat::Luks),
                        ],
                    )?
                }
                "minVolumeSize" => p.min_volume_size = Some(size(key, v)?),
                "maxVolumeSize" => p.max_volume_size = Some(size(key, v)?),
                "softDomains" => p.soft_domains = boolean(key, v)?,
                "requiredTags" => p.required_tags = list(key, v)?,
                "excludedTags" => p.excluded_tags = list(key, v)?,
                "storageGroup" => p.storage_groups = list(key, v)?,
                "networkTransportsAllowed" => {
                    let names = list(key, v)?;
                    if names.is_empty() {
                        p.transports = TransportSet::ALL;
                    } else {
                        let mut ts = Vec::new();
                        let choices: Vec<(&str, Transport)> = [
                            Transport::Iscsi,
                            Transport::Nvmetcp,
                            Transport::Roce,
                            Transport::Nbd,
                        ]
                        .into_iter()
                        .map(|t| (t.name(), t))
                        .collect();
                        for n in &names {
                            ts.push(lookup(n, &choices).ok_or_else(|| {
                                bad(
                                    key,
                                    format!(
                                        "unknown transport {} (expected {})",
                                        quote(n),
                                        alternatives(&choices)
                                    ),
                                )
                            })?);
                        }
                        p.transports = TransportSet::of(ts);
                    }
                }
                _ if key.starts_with(KUBERNETES_PREFIX) => {}
                _ => {
                    return Err(bad(
                        key,
                        format!(
                            "unknown StorageClass parameter (known: {})",
                            KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        if let (Some(min), Some(max)) = (p.min_volume_size, p.max_volume_size)
            && min > max
        {
            return Err(bad(
                "minVolumeSize",
                format!("must not exceed maxVolumeSize ({max} bytes), got {min} bytes"),
            ));
        }
        if map.contains_key("encryptionFormat") && !p.encrypt {
            return Err(bad("encryptionFormat", "needs encrypt=true"));
        }
        if p.redundancy && p.raid_max_drives < 2 {
            return Err(bad(
                "raidMaxDrives",
                "must be at least 2 when redundancy=true",
            ));
        }
        if let Some(t) = p.required_tags.iter().find(|t| p.excluded_tags.contains(t)) {
            return Err(bad(
                "excludedTags",
                format!("tag {} is also in requiredTags", quote(t)),
            ));
        }
        Ok(p)
    }

    /// The rules a class must also meet to make a new volume, beyond what
    /// [`Parameters::parse`] reads: [`Composer::create`] and
    /// [`Composer::capacity`] hold new requests to them, while `parse` keeps
    /// reading what earlier versions accepted, so that volumes recorded with
    /// such a class still load, list, expand, stage and delete.
    ///
    /// * A list key ([`LIST_KEYS`]) must have no empty entry (`fast,,nvme`,
    ///   `fast,`, `,`): a templating slip that would silently make another
    ///   class. A blank value as a whole reads as the key left out (its
    ///   default), as a template renders an unset value.
    /// * No entry may be listed twice (`fast,fast`; transports by name,
    ///   whatever the case), as the Kubernetes API refuses a duplicate in a
    ///   set-valued field rather than folding it.
    /// * `requiredTags` and `excludedTags` must not name a tag starting with
    ///   [`RESERVED_TAG_PREFIX`]: such tags are the composer's own encoding
    ///   (the inventory refuses them on its entries), so requiring one places
    ///   nothing and excluding one reaches into internals that may change.
    ///
    /// ```
    /// use composer_core::Parameters;
    /// let e = Parameters::check_new(&[("requiredTags".into(), "fast,,nvme".into())].into())
    ///     .unwrap_err();
    /// assert!(e.to_string().starts_with("parameters[\"requiredTags\"]: \"fast,,nvme\" has an empty entry"));
    /// assert!(Parameters::check_new(&[("requiredTags".into(), "fast, nvme".into())].into()).is_ok());
    /// ```
    ///
    /// [`Composer::create`]: crate::Composer::create
    /// [`Composer::capacity`]: crate::Composer::capacity
    pub fn check_new(map: &BTreeMap<String, String>) -> Result<(), Error> {
        for &key in LIST_KEYS {
            let Some(v) = map.get(key) else { continue };
            // A blank value reads as the key left out, as it always has
            // (documented: "empty = all"); templates render unset values so.
            if v.trim().is_empty() {
                continue;
            }
            let mut seen: Vec<String> = Vec::new();
            for item in v.split(',').map(str::trim) {
                if item.is_empty() {
                    return Err(bad(
                        key,
                        format!(
                            "{} has an empty entry: values are separated by single commas, \
                             with none at either end",
                            quote(v)
                        ),
                    ));
                }
                // Transports are a fixed vocabulary read whatever the case;
                // tags and storage groups are exact ids.
                let name = if key == "networkTransportsAllowed" {
                    item.to_ascii_lowercase()
                } else {
                    item.to_string()
                };
                if seen.contains(&name) {
                    return Err(bad(
                        key,
                        format!("{} is listed twice in {}", quote(item), quote(v)),
                    ));
                }
                if matches!(key, "requiredTags" | "excludedTags")
                    && item.starts_with(RESERVED_TAG_PREFIX)
                {
                    return Err(bad(
                        key,
                        format!(
                            "tag {}: tags starting with {RESERVED_TAG_PREFIX:?} are the \
                             composer's own and no inventory entry carries them",
                            quote(item)
                        ),
                    ));
                }
                seen.push(name);
            }
        }
        Ok(())
    }

    /// Whether parameter maps `a` and `b` ask for the same volume: written
    /// alike, or read alike by [`Parameters::parse`] (the case of a
    /// fixed-vocabulary value, blanks, the keys Kubernetes adds do not
    /// count). What a repeated create and a validation compare.
    pub fn same_class(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
        a == b
            || matches!(
                (Parameters::parse(a), Parameters::parse(b)),
                (Ok(x), Ok(y)) if x == y
            )
    }

    /// The minimum RPM that applies (only to HDD volumes).
    pub fn effective_min_rpm(&self) -> Option<u32> {
        match self.kind {
            VolumeType::Hdd => self.min_rpm,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kv: &[(&str, &str)]) -> Result<Parameters, Error> {
        Parameters::parse(
            &kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `e` is a refusal of `key` whose rule says `rule`.
    fn names(e: &Error, key: &str, rule: &str) {
        let Error::Parameter { key: k, rule: r } = e else {
            panic!("{e:?}")
        };
        assert_eq!(k, key, "{e}");
        assert!(r.contains(rule), "{r:?} should contain {rule:?}");
    }

    fn fails(kv: &[(&str, &str)], key: &str, rule: &str) {
        names(&parse(kv).unwrap_err(), key, rule);
    }

    #[test]
    fn long_values_are_quoted_short_and_escaped() {
        let long = "x".repeat(100_000);
        let twice = format!("iscsi,{long},{long}");
        let cases: [(&str, &str); 5] = [
            ("networkTransportsAllowed", &long),
            ("type", &long),
            ("rpm", &long),
            ("requiredTags", &twice),
            ("fsType", "ext4\nrm -rf"),
        ];
        for (key, value) in cases {
            let map: BTreeMap<String, String> = [(key.to_string(), value.to_string())].into();
            // Repeated list entries are refused for new classes only.
            let e = Parameters::parse(&map)
                .and_then(|_| Parameters::check_new(&map))
                .unwrap_err();
            let text = e.to_string();
            assert!(
                text.len() < 400,
                "{key}: {} bytes: {}",
                text.len(),
                &text[..400]
            );
            assert!(!text.contains('\n'), "{key}: {text}");
        }
    }

    #[test]
    fn defaults() {
        let p = parse(&[]).unwrap();
        assert_eq!(p, Parameters::default());
        assert_eq!(p.kind, VolumeType::Hdd);
        assert_eq!(p.fs_type, FsType::Ext4);
        assert!(p.striping && !p.redundancy && p.sg_resiliency && p.jbod_resiliency);
        assert!(!p.encrypt && !p.soft_domains);
        assert_eq!(p.raid_max_drives, 16);
        assert_eq!(p.transports, TransportSet::ALL);
    }

    #[test]
    fn every_key_parses() {
        let p = parse(&[
            ("type", "ssd"),
            ("rpm", "7200"),
            ("fsType", "xfs"),
            ("striping", "false"),
            ("redundancy", "TRUE"),
            ("raidMaxDrives", "8"),
            ("sgResiliency", "false"),
            ("jbodResiliency", "false"),
            ("encrypt", "true"),
            ("encryptionFormat", "luks"),
            ("minVolumeSize", "1Gi"),
            ("maxVolumeSize", "2 TB"),
            ("softDomains", "true"),
            ("requiredTags", "a, b,a"),
            ("excludedTags", "c"),
            ("storageGroup", "sg-a,sg-b"),
            ("networkTransportsAllowed", "nbd,iscsi"),
            ("csi.storage.k8s.io/pvc/name", "data-0"),
        ])
        .unwrap();
        assert_eq!(p.kind, VolumeType::Ssd);
        assert_eq!(p.min_rpm, Some(7200));
        assert_eq!(p.effective_min_rpm(), None, "rpm is ignored for ssd");
        assert_eq!(p.fs_type, FsType::Xfs);
        assert!(!p.striping && p.redundancy && !p.sg_resiliency && !p.jbod_resiliency);
        assert!(p.encrypt && p.soft_domains);
        assert_eq!(p.encryption_format, EncryptionFormat::Luks);
        assert_eq!(p.raid_max_drives, 8);
        assert_eq!(p.min_volume_size, Some(1 << 30));
        assert_eq!(p.max_volume_size, Some(2_000_000_000_000));
        assert_eq!(p.required_tags, ["a", "b"]);
        assert_eq!(p.excluded_tags, ["c"]);
        assert_eq!(p.storage_groups, ["sg-a", "sg-b"]);
        assert_eq!(
            p.transports.iter().collect::<Vec<_>>(),
            [Transport::Iscsi, Transport::Nbd]
        );
        assert_eq!(
            parse(&[("networkTransportsAllowed", "")])
                .unwrap()
                .transports,
            TransportSet::ALL
        );
    }

    #[test]
    fn fixed_vocabulary_values_ignore_case_and_blanks() {
        let p = parse(&[
            ("type", "SSD"),
            ("fsType", " XFS "),
            ("striping", "False"),
            ("redundancy", "TRUE"),
            ("encrypt", "True"),
            ("encryptionFormat", "LUKS"),
            ("networkTransportsAllowed", "NBD, iSCSI"),
        ])
        .unwrap();
        assert_eq!(p.kind, VolumeType::Ssd);
        assert_eq!(p.fs_type, FsType::Xfs);
        assert!(!p.striping && p.redundancy && p.encrypt);
        assert_eq!(p.encryption_format, EncryptionFormat::Luks);
        assert_eq!(
            p.transports.iter().collect::<Vec<_>>(),
            [Transport::Iscsi, Transport::Nbd]
        );
        assert_eq!(parse(&[("type", "Slice")]).unwrap().kind, VolumeType::Slice);
        // The capability's fs_type is read the same way.
        assert_eq!(FsType::from_name("Ext4"), Some(FsType::Ext4));
        assert_eq!(FsType::from_name("btrfs"), None);
        // Ids stay exact: a tag or storage group is a name in the inventory.
        assert_eq!(
            parse(&[("requiredTags", "Fast")]).unwrap().required_tags,
            ["Fast"]
        );
        // Other values are still refused, naming the key and what it takes.
        fails(
            &[("type", "Tape")],
            "type",
            "must be hdd, ssd or slice, got \"Tape\"",
        );
        fails(
            &[("fsType", "EXT3")],
            "fsType",
            "must be ext4 or xfs, got \"EXT3\"",
        );
        fails(
            &[("encrypt", "TRUE"), ("encryptionFormat", "dm-crypt")],
            "encryptionFormat",
            "must be engine or luks",
        );
        fails(
            &[("networkTransportsAllowed", "FC")],
            "networkTransportsAllowed",
            "unknown transport \"FC\" (expected iscsi, nvmetcp, roce or nbd)",
        );
    }

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A new class that `parse` reads (as it reads stored records) but
    /// `check_new` refuses, naming the key and the rule.
    fn refused_new(kv: &[(&str, &str)], key: &str, rule: &str) {
        parse(kv).unwrap();
        names(&Parameters::check_new(&map(kv)).unwrap_err(), key, rule);
    }

    #[test]
    fn new_classes_refuse_empty_repeated_and_reserved_entries() {
        for key in LIST_KEYS {
            // A blank value is the key left out, as documented.
            Parameters::check_new(&map(&[(key, "")])).unwrap();
            Parameters::check_new(&map(&[(key, "  ")])).unwrap();
            refused_new(&[(key, " , ")], key, "has an empty entry");
        }
        refused_new(
            &[("requiredTags", "fast,,nvme")],
            "requiredTags",
            "\"fast,,nvme\" has an empty entry",
        );
        refused_new(&[("excludedTags", "slow,")], "excludedTags", "empty entry");
        refused_new(&[("storageGroup", ",sg-a")], "storageGroup", "empty entry");
        refused_new(
            &[("networkTransportsAllowed", "nbd,,iscsi")],
            "networkTransportsAllowed",
            "empty entry",
        );
        refused_new(
            &[("requiredTags", "a, a")],
            "requiredTags",
            "\"a\" is listed twice",
        );
        refused_new(&[("storageGroup", "sg,sg")], "storageGroup", "twice");
        refused_new(
            &[("networkTransportsAllowed", "nbd,NBD")],
            "networkTransportsAllowed",
            "\"NBD\" is listed twice",
        );
        for key in ["requiredTags", "excludedTags"] {
            refused_new(
                &[(key, "fast,composer.capacity=16000000000000")],
                key,
                "tag \"composer.capacity=16000000000000\": tags starting with \"composer.\" \
                 are the composer's own",
            );
        }
        // What stays accepted: blanks around entries, tags differing in
        // case (ids are exact), a tag that merely contains "composer.".
        for ok in [
            map(&[("requiredTags", " fast , nvme ")]),
            map(&[
                ("requiredTags", "Fast,fast"),
                ("excludedTags", "x.composer.y"),
            ]),
            map(&[
                ("storageGroup", "sg-a,sg-b"),
                ("networkTransportsAllowed", "nbd, iscsi"),
            ]),
            map(&[("type", "ssd")]),
        ] {
            Parameters::check_new(&ok).unwrap();
        }
        // Read back as before: an old record's `a,,b` is `a, b`.
        assert_eq!(
            parse(&[("requiredTags", "a,,b,a")]).unwrap().required_tags,
            ["a", "b"]
        );
    }

    /// A number too large for its key is refused with the key's range, not
    /// as "not a whole number"; a leading `+` reads as it always did.
    #[test]
    fn numbers_out_of_range_say_the_range() {
        fails(
            &[("rpm", "99999999999")],
            "rpm",
            "must be at most 4294967295, got 99999999999",
        );
        fails(
            &[("raidMaxDrives", "4294967296")],
            "raidMaxDrives",
            "must be between 1 and 64, got 4294967296",
        );
        fails(
            &[("raidMaxDrives", "99999999999999999999999")],
            "raidMaxDrives",
            "must be between 1 and 64",
        );
        fails(
            &[("raidMaxDrives", "-3")],
            "raidMaxDrives",
            "must be a whole number, got \"-3\"",
        );
        fails(
            &[("rpm", "7200.5")],
            "rpm",
            "whole number of revolutions per minute",
        );
        fails(&[("rpm", "+")], "rpm", "whole number");
        assert_eq!(parse(&[("rpm", " +7200 ")]).unwrap().min_rpm, Some(7200));
        assert_eq!(
            parse(&[("raidMaxDrives", "+8")]).unwrap().raid_max_drives,
            8
        );
    }

    #[test]
    fn failures_name_key_and_rule() {
        fails(&[("tpye", "hdd")], "tpye", "unknown StorageClass parameter");
        fails(&[("type", "tape")], "type", "must be hdd, ssd or slice");
        fails(&[("rpm", "fast")], "rpm", "whole number");
        fails(&[("rpm", "0")], "rpm", "greater than zero");
        fails(&[("fsType", "btrfs")], "fsType", "must be ext4 or xfs");
        fails(
            &[("encrypt", "true"), ("encryptionFormat", "dm")],
            "encryptionFormat",
            "must be engine or luks",
        );
        fails(
            &[("encryptionFormat", "luks")],
            "encryptionFormat",
            "needs encrypt=true",
        );
        for k in [
            "striping",
            "redundancy",
            "sgResiliency",
            "jbodResiliency",
            "encrypt",
            "softDomains",
        ] {
            fails(&[(k, "yes")], k, "must be true or false");
        }
        fails(
            &[("raidMaxDrives", "0")],
            "raidMaxDrives",
            "between 1 and 64",
        );
        fails(
            &[("raidMaxDrives", "65")],
            "raidMaxDrives",
            "between 1 and 64",
        );
        fails(
            &[("raidMaxDrives", "1"), ("redundancy", "true")],
            "raidMaxDrives",
            "at least 2",
        );
        fails(
            &[("minVolumeSize", "lots")],
            "minVolumeSize",
            "must be a size",
        );
        fails(
            &[("maxVolumeSize", "0")],
            "maxVolumeSize",
            "greater than zero",
        );
        fails(
            &[("minVolumeSize", "2Gi"), ("maxVolumeSize", "1Gi")],
            "minVolumeSize",
            "must not exceed maxVolumeSize",
        );
        fails(&[("requiredTags", "a b")], "requiredTags", "whitespace");
        fails(
            &[("requiredTags", "a"), ("excludedTags", "a")],
            "excludedTags",
            "also in requiredTags",
        );
        fails(
            &[("networkTransportsAllowed", "fc")],
            "networkTransportsAllowed",
            "unknown transport \"fc\"",
        );
    }
}
