//! Layout choice for a composed volume, in the style of composable-
//! infrastructure drivers: from a requested size, the candidate drives,
//! whether the volume must be mirrored (`redundancy`) and whether it may be
//! striped over several drives (`striping`), pick the simplest layout that
//! fits within `max_drives`:
//!
//! | redundancy | fits on one drive | layout |
//! |---|---|---|
//! | no  | yes | single drive (no md) |
//! | no  | no  | RAID0 over the fewest drives (needs `striping`) |
//! | yes | two drives each hold it | RAID1 on two drives |
//! | yes | no  | RAID10 `n2` over the fewest drives (needs `striping`) |
//!
//! Sizes account for mdadm's data offset and rounding (see [`crate::mdadm`]).
//! Among drive sets of the chosen count the smallest sufficient drives are
//! used, leaving large drives for large requests. RAID10 may use an odd
//! number of drives, which md supports.

use crate::error::{RaidError, Result};
use crate::geometry::Geometry;
use crate::layout::{Layout, Level, Raid0Layout, Raid10Layout};
use crate::mdadm;
use crate::units::{ChunkSize, Sectors};

/// Default limit on drives in one volume.
pub const DEFAULT_MAX_DRIVES: usize = 16;

/// A layout-choice request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRequest {
    /// Requested usable size in bytes.
    pub size_bytes: u64,
    /// Sizes of the candidate drives in bytes (index = drive id in the answer).
    pub drive_bytes: Vec<u64>,
    /// Whether every byte must be mirrored on two drives.
    pub redundancy: bool,
    /// Whether the volume may span several drives' capacity.
    pub striping: bool,
    /// Most drives one volume may use (default 16).
    pub max_drives: usize,
    /// Chunk size for striped layouts (default mdadm's 512 KiB); RAID10
    /// needs a power of two.
    pub chunk: ChunkSize,
    /// Explicit md data offset; `None` for mdadm's default (see
    /// [`mdadm::geometry_for_devices`]).
    pub data_offset: Option<Sectors>,
}

impl LayoutRequest {
    /// A request with the defaults: no redundancy, no striping, 16 drives,
    /// 512 KiB chunks, mdadm's default data offset.
    pub fn new(size_bytes: u64, drive_bytes: Vec<u64>) -> Self {
        LayoutRequest {
            size_bytes,
            drive_bytes,
            redundancy: false,
            striping: false,
            max_drives: DEFAULT_MAX_DRIVES,
            chunk: ChunkSize::MDADM_DEFAULT,
            data_offset: None,
        }
    }
}

/// The kind of layout chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceKind {
    /// One drive used directly.
    Single,
    /// md RAID1 on two drives.
    Raid1,
    /// md RAID10 `n2`.
    Raid10,
    /// md RAID0.
    Raid0,
}

/// A chosen layout.
#[derive(Debug, Clone)]
pub struct LayoutChoice {
    /// What was chosen.
    pub kind: ChoiceKind,
    /// The drives used (indices into the request's `drive_bytes`), in md member order.
    pub drives: Vec<usize>,
    /// The md geometry, `None` for a single drive.
    pub geometry: Option<Geometry>,
    /// Usable bytes of the resulting volume (≥ the requested size).
    pub usable_bytes: u64,
}

impl LayoutChoice {
    /// `mdadm --create` arguments for this choice; `paths[i]` is the device
    /// path of `drives[i]`. `None` for a single drive (no md array needed).
    pub fn mdadm_create_args(
        &self,
        md_device: &str,
        paths: &[&str],
    ) -> Result<Option<Vec<String>>> {
        match &self.geometry {
            None => Ok(None),
            Some(g) => mdadm::create_args(md_device, g, paths).map(Some),
        }
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Choose a layout; see the module documentation for the rules. The error
/// says which rule excluded each option. Emits a `tracing` span
/// `choose_layout` with the request and a debug event with the outcome.
pub fn choose_layout(req: &LayoutRequest) -> Result<LayoutChoice> {
    let span = tracing::debug_span!(
        "choose_layout",
        size_bytes = req.size_bytes,
        drives = req.drive_bytes.len(),
        redundancy = req.redundancy,
        striping = req.striping,
        max_drives = req.max_drives
    );
    let _guard = span.enter();
    let result = choose_layout_inner(req);
    match &result {
        Ok(c) => {
            tracing::debug!(kind = ?c.kind, drives = ?c.drives, usable_bytes = c.usable_bytes, "layout chosen")
        }
        Err(e) => tracing::debug!(error = %e, "no layout fits"),
    }
    result
}

fn choose_layout_inner(req: &LayoutRequest) -> Result<LayoutChoice> {
    if req.size_bytes == 0 {
        return Err(RaidError::NoLayoutFits(
            "size_bytes must be positive".into(),
        ));
    }
    if req.drive_bytes.is_empty() {
        return Err(RaidError::NoLayoutFits(
            "drive_bytes lists no drives".into(),
        ));
    }
    if req.max_drives == 0 {
        return Err(RaidError::NoLayoutFits(
            "max_drives must be at least 1".into(),
        ));
    }
    if !req.chunk.sectors().get().is_power_of_two() {
        return Err(RaidError::NoLayoutFits(format!(
            "chunk must be a power of two for raid10, got {}",
            req.chunk
        )));
    }
    // Single drive: the smallest that holds the request.
    let mut by_size: Vec<usize> = (0..req.drive_bytes.len()).collect();
    by_size.sort_by_key(|&i| (req.drive_bytes[i], i));
    let largest = req.drive_bytes.iter().copied().max().unwrap_or(0);
    if !req.redundancy {
        if let Some(&d) = by_size
            .iter()
            .find(|&&i| req.drive_bytes[i] >= req.size_bytes)
        {
            return Ok(LayoutChoice {
                kind: ChoiceKind::Single,
                drives: vec![d],
                geometry: None,
                usable_bytes: req.drive_bytes[d],
            });
        }
        if !req.striping {
            return Err(RaidError::NoLayoutFits(format!(
                "no single drive holds {} (largest is {}) and striping is not allowed",
                gib(req.size_bytes),
                gib(largest)
            )));
        }
        return choose_striped(req, &by_size, Layout::Raid0(Raid0Layout::Original), 2);
    }
    if req.max_drives < 2 {
        return Err(RaidError::NoLayoutFits(
            "redundancy needs at least two drives but max_drives is 1".into(),
        ));
    }
    if req.drive_bytes.len() < 2 {
        return Err(RaidError::NoLayoutFits(
            "redundancy needs at least two drives but only one is available".into(),
        ));
    }
    // RAID1: the two smallest drives whose component size holds the request.
    let mut fits = Vec::new();
    for &i in &by_size {
        let dev = req.drive_bytes[i] / 512;
        if let Ok(c) =
            mdadm::component_sectors(Level::Raid1, dev, 0, req.data_offset.map(u64::from))
            && c * 512 >= req.size_bytes
        {
            fits.push(i);
            if fits.len() == 2 {
                break;
            }
        }
    }
    if fits.len() == 2 {
        let sectors: Vec<u64> = fits.iter().map(|&i| req.drive_bytes[i] / 512).collect();
        let g = mdadm::geometry_for_devices(
            Layout::Raid1,
            0,
            &sectors,
            req.data_offset.map(u64::from),
        )?;
        return Ok(LayoutChoice {
            kind: ChoiceKind::Raid1,
            usable_bytes: g.array_bytes(),
            drives: fits,
            geometry: Some(g),
        });
    }
    if !req.striping {
        return Err(RaidError::NoLayoutFits(format!(
            "a mirror needs two drives that each hold {} after md's data offset, {} such drive(s) exist, and striping is not allowed",
            gib(req.size_bytes),
            fits.len()
        )));
    }
    let n2 = Raid10Layout::new(2, 1, false)?;
    choose_striped(req, &by_size, Layout::Raid10(n2), 3)
}

/// Fewest drives (from `min_count`) of `layout` that hold the request,
/// using the smallest sufficient drives for that count.
fn choose_striped(
    req: &LayoutRequest,
    by_size: &[usize],
    layout: Layout,
    min_count: usize,
) -> Result<LayoutChoice> {
    let limit = req.max_drives.min(req.drive_bytes.len());
    let geom = |set: &[usize]| -> Option<Geometry> {
        let sectors: Vec<u64> = set.iter().map(|&i| req.drive_bytes[i] / 512).collect();
        mdadm::geometry_for_devices(
            layout,
            req.chunk.sectors().get(),
            &sectors,
            req.data_offset.map(u64::from),
        )
        .ok()
    };
    let mut best_at_limit = 0;
    for count in min_count..=limit {
        // Windows of `count` consecutive drives in size order: capacity grows
        // as the window moves to larger drives, so the first window that
        // fits uses the smallest sufficient drives.
        for start in 0..=(by_size.len() - count) {
            let mut set: Vec<usize> = by_size[start..start + count].to_vec();
            set.sort_unstable();
            if let Some(g) = geom(&set) {
                if count == limit {
                    best_at_limit = best_at_limit.max(g.array_bytes());
                }
                if g.array_bytes() >= req.size_bytes {
                    return Ok(LayoutChoice {
                        kind: if layout.level() == Level::Raid0 {
                            ChoiceKind::Raid0
                        } else {
                            ChoiceKind::Raid10
                        },
                        usable_bytes: g.array_bytes(),
                        drives: set,
                        geometry: Some(g),
                    });
                }
            }
        }
    }
    let what = if layout.level() == Level::Raid0 {
        "striping (raid0)"
    } else {
        "mirrored striping (raid10 n2)"
    };
    if limit < min_count {
        return Err(RaidError::NoLayoutFits(format!(
            "{what} needs at least {min_count} drives but only {limit} may be used ({} available, max_drives {})",
            req.drive_bytes.len(),
            req.max_drives
        )));
    }
    Err(RaidError::NoLayoutFits(format!(
        "{what} over the {limit} largest usable drives holds at most {}, less than the requested {} ({} drives available, max_drives {})",
        gib(best_at_limit),
        gib(req.size_bytes),
        req.drive_bytes.len(),
        req.max_drives
    )))
}
