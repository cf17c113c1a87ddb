//! What `mdadm --create` does to sizes, and the arguments to call it with.
//!
//! mdadm (v1.2 metadata) puts the superblock 4 KiB into each member, leaves
//! room for an internal bitmap, a bad-block log and some reshape headroom,
//! and starts the data area at the *data offset*. It then rounds the
//! component size (the data area md uses on each member) down to a multiple
//! of the chunk size, or of 64 KiB for RAID1 ("if this is ever reshaped to
//! RAID5, we will need a chunksize"). These functions reproduce that so that
//! a composer can predict the array size before creating it.
//!
//! The default data offset follows mdadm 4.x `super1.c`: headroom starts at
//! 128 MiB and is halved while it exceeds about 0.1 % of the device
//! (`headroom << 10 > size`) but stays at least two chunks; the offset is
//! superblock offset (4 KiB) + superblock (4 KiB) + bitmap space
//! (`choose_bm_space`) + bad-block log (4 KiB) + headroom, rounded up to
//! 1 MiB. On a 200 GiB or larger member that gives 264 192 sectors, the value
//! mdadm 4.x prints as "Data Offset". Versions differ (mdadm 3.2 used 2048
//! sectors), so callers that know their mdadm can pass an explicit offset,
//! exactly as `mdadm --data-offset` does.

use crate::error::{Result, geom_err};
use crate::geometry::Geometry;
use crate::layout::{Layout, Level};
use crate::units::Sectors;

/// mdadm's default chunk size: 512 KiB (1024 sectors).
pub const DEFAULT_CHUNK_SECTORS: u64 = 1024;

/// `choose_bm_space()` of mdadm's `super1.c`: sectors reserved for an
/// internal write-intent bitmap on a device of `dev_sectors`.
pub fn bitmap_space_sectors(dev_sectors: u64) -> u64 {
    if dev_sectors < 64 * 2 {
        0
    } else if dev_sectors - 64 * 2 >= 200 * 1024 * 1024 * 2 {
        128 * 2
    } else if dev_sectors - 4 * 2 > 8 * 1024 * 1024 * 2 {
        64 * 2
    } else {
        4 * 2
    }
}

/// mdadm 4.x's default v1.2 data offset in sectors for a member of
/// `dev_sectors` in an array with `chunk_sectors` chunks (0 for RAID1).
/// See the module documentation for the derivation.
pub fn default_data_offset_v12(dev_sectors: u64, chunk_sectors: u64) -> u64 {
    let mut headroom: u64 = 128 * 1024 * 2;
    while (headroom << 10) > dev_sectors && headroom / 2 >= chunk_sectors * 2 && headroom > 8 {
        headroom >>= 1;
    }
    let raw = 4 * 2 + 4 * 2 + bitmap_space_sectors(dev_sectors) + 4 * 2 + headroom;
    raw.div_ceil(2048) * 2048
}

/// The component size (sectors of data area per member) mdadm gives a
/// member of `dev_sectors`: device minus data offset, rounded down to the
/// chunk for striped levels and to 64 KiB for RAID1. RAID0 members keep
/// their own sizes (md rounds each one to the chunk itself).
///
/// `data_offset` overrides the default of [`default_data_offset_v12`].
pub fn component_sectors(
    level: Level,
    dev_sectors: u64,
    chunk_sectors: u64,
    data_offset: Option<u64>,
) -> Result<u64> {
    let chunk = if level == Level::Raid1 {
        0
    } else {
        chunk_sectors
    };
    let off = data_offset.unwrap_or_else(|| default_data_offset_v12(dev_sectors, chunk));
    if dev_sectors <= off {
        return Err(geom_err(
            "dev_sectors",
            format!("{dev_sectors} sectors do not exceed the data offset of {off} sectors"),
        ));
    }
    let avail = dev_sectors - off;
    let round = match level {
        Level::Raid1 => 128,
        _ if chunk == 0 => {
            return Err(geom_err(
                "chunk_sectors",
                "striped levels need a chunk size",
            ));
        }
        _ => chunk,
    };
    let comp = avail / round * round;
    if comp == 0 {
        return Err(geom_err(
            "dev_sectors",
            format!("{avail} sectors after the data offset hold no full {round}-sector unit"),
        ));
    }
    Ok(comp)
}

/// Build the [`Geometry`] mdadm creates from whole devices of
/// `dev_sectors` each, with `data_offset` (or, for `None`, mdadm 4.x's
/// default for the *smallest* device) as the data offset of every member.
/// RAID1, RAID4/5/6 and RAID10 members all use the smallest member's
/// component size, as mdadm does. The geometry carries the data offset, and
/// [`create_args`] passes it to mdadm, so that the array mdadm builds is
/// this one even where mdadm's own default would differ (other versions,
/// devices of different sizes).
pub fn geometry_for_devices(
    layout: Layout,
    chunk_sectors: u64,
    dev_sectors: &[u64],
    data_offset: Option<u64>,
) -> Result<Geometry> {
    let chunk = if layout.level() == Level::Raid1 {
        0
    } else {
        chunk_sectors
    };
    let smallest = dev_sectors.iter().min().copied().unwrap_or(0);
    let offset = data_offset.unwrap_or_else(|| default_data_offset_v12(smallest, chunk));
    let mut comps = Vec::with_capacity(dev_sectors.len());
    for (i, &d) in dev_sectors.iter().enumerate() {
        comps.push(
            component_sectors(layout.level(), d, chunk, Some(offset)).map_err(|e| match e {
                // The device's own size names the device; a rule on
                // another parameter (a striped level without a chunk)
                // keeps that parameter's name.
                crate::RaidError::InvalidGeometry { field, rule } if field == "dev_sectors" => {
                    geom_err(format!("dev_sectors[{i}]"), rule)
                }
                other => other,
            })?,
        );
    }
    if layout.level() != Level::Raid0
        && let Some(&min) = comps.iter().min()
    {
        comps.iter_mut().for_each(|c| *c = min);
    }
    Geometry::new(layout, chunk, &comps)?.with_data_offset(Sectors::new(offset))
}

/// Arguments for `mdadm --create` (without the program name) that build
/// `geometry` on `devices` as md device `md_device`. The geometry's
/// member order is the device order. Always includes `--data-offset` (the
/// geometry's [`Geometry::data_offset`], which must be known and a whole
/// number of KiB) and, for RAID1/4/5/6/10, `--size` (the component size in
/// KiB), so that mdadm builds exactly this geometry: the same data areas,
/// hence the same capacity and the same mapping. Each device must hold at
/// least data offset + member sectors; this function cannot check that,
/// mdadm refuses devices that are too small.
pub fn create_args(md_device: &str, geometry: &Geometry, devices: &[&str]) -> Result<Vec<String>> {
    if devices.len() != geometry.members() {
        return Err(geom_err(
            "devices",
            format!(
                "{} device paths given for {} members",
                devices.len(),
                geometry.members()
            ),
        ));
    }
    if let Some(i) = devices.iter().position(|d| d.is_empty()) {
        return Err(geom_err(format!("devices[{i}]"), "must not be empty"));
    }
    let Some(offset) = geometry.data_offset() else {
        return Err(geom_err(
            "data_offset",
            "unknown: without --data-offset mdadm picks its own (version- and size-dependent) offset and the sizes may not fit; build the geometry with mdadm::geometry_for_devices or Geometry::with_data_offset",
        ));
    };
    let Some(offset_kib) = offset.exact_kib() else {
        return Err(geom_err(
            "data_offset",
            format!("{offset} is not a whole number of KiB, which mdadm --data-offset counts in"),
        ));
    };
    let layout = geometry.layout();
    let mut a = vec![
        "--create".to_string(),
        md_device.to_string(),
        "--run".into(),
        "--metadata=1.2".into(),
        format!("--level={}", layout.level()),
    ];
    if layout.level() == Level::Raid1 && geometry.members() == 1 {
        a.push("--force".into());
    }
    if let Some(name) = layout.mdadm_name()
        && layout.level() != Level::Raid4
    {
        a.push(format!("--layout={name}"));
    }
    if let Some(chunk) = geometry.chunk_size() {
        a.push(format!("--chunk={}K", chunk.kib()));
    }
    if layout.level() != Level::Raid0 {
        let comp = geometry.member_sectors().iter().min().copied().unwrap_or(0);
        let Some(kib) = Sectors::new(comp).exact_kib() else {
            return Err(geom_err(
                "member_sectors",
                format!(
                    "the component size of {comp} sectors is not a whole number of KiB, which mdadm --size counts in"
                ),
            ));
        };
        a.push(format!("--size={kib}K"));
    }
    a.push(format!("--data-offset={offset_kib}K"));
    a.push(format!("--raid-devices={}", geometry.members()));
    a.extend(devices.iter().map(|d| d.to_string()));
    Ok(a)
}
