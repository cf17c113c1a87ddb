//! Operating a fleet of devices: labels (for example topology segments), cordons, capacity
//! changes, reserved-headroom changes and drain plans. Each change is a method of
//! [`Allocator`] that checks its input and changes nothing on error; [`Journaled`] and
//! [`GroupCommit`] journal them.
//!
//! [`Journaled`]: crate::Journaled
//! [`GroupCommit`]: crate::GroupCommit

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Allocator, Constraints, DeviceId, DeviceSpec, Error, Extent, SliceId};

/// Longest label key in bytes (the longest Kubernetes label key, prefix included).
pub const MAX_LABEL_KEY: usize = 253;
/// Longest label value in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;

/// Where one slice of a drained device should go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainMove {
    /// The slice (or reservation) to move.
    pub slice: SliceId,
    /// Whether it is a reservation (it may also simply be left to expire or be released).
    pub reservation: bool,
    /// Its size in bytes.
    pub size: u64,
    /// The device to move it to.
    pub to: DeviceId,
    /// The extent to take there, with [`Allocator::allocate_at`] (one extent, in bytes).
    pub extent: Extent,
}

/// Which slices must leave a device and where they can go, computed by
/// [`Allocator::drain_plan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainPlan {
    /// The device being drained.
    pub device: DeviceId,
    /// Moves, largest slice first; together they fit (no two targets overlap).
    pub moves: Vec<DrainMove>,
    /// Slices no candidate device can take, with their sizes in bytes, largest first.
    pub unplaced: Vec<(SliceId, u64)>,
}

impl DrainPlan {
    /// Whether every slice has a target.
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty()
    }
}

fn check_label(key: &str, value: Option<&str>) -> Result<(), Error> {
    let bad = |field, rule: String| Err(Error::InvalidArgument { field, rule });
    if key.is_empty() || key.len() > MAX_LABEL_KEY {
        return bad(
            "label.key",
            format!("must be 1 to {MAX_LABEL_KEY} bytes, got {}", key.len()),
        );
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad(
            "label.key",
            format!("{key:?} contains whitespace or control characters"),
        );
    }
    if let Some(v) = value {
        if v.len() > MAX_LABEL_VALUE {
            return bad(
                "label.value",
                format!("must be at most {MAX_LABEL_VALUE} bytes, got {}", v.len()),
            );
        }
        if v.chars().any(char::is_control) {
            return bad("label.value", format!("{v:?} contains control characters"));
        }
    }
    Ok(())
}

impl Allocator {
    /// Sets label `key` of `device` to `value`, returning the previous value. Keys are 1 to
    /// [`MAX_LABEL_KEY`] bytes without whitespace or control characters; values at most
    /// [`MAX_LABEL_VALUE`] bytes without control characters.
    pub fn set_label(
        &mut self,
        device: DeviceId,
        key: &str,
        value: &str,
    ) -> Result<Option<String>, Error> {
        check_label(key, Some(value))?;
        let idx = self.idx(device)?;
        let labels = Arc::make_mut(&mut self.dev_mut(idx).labels);
        Ok(labels.insert(key.to_owned(), value.to_owned()))
    }

    /// Removes label `key` of `device`, returning its value (`None` if it was not set).
    pub fn remove_label(&mut self, device: DeviceId, key: &str) -> Result<Option<String>, Error> {
        check_label(key, None)?;
        let idx = self.idx(device)?;
        if !self.dev(idx).labels.contains_key(key) {
            return Ok(None);
        }
        Ok(Arc::make_mut(&mut self.dev_mut(idx).labels).remove(key))
    }

    /// The labels of `device`.
    pub fn labels(&self, device: DeviceId) -> Result<&BTreeMap<String, String>, Error> {
        Ok(&self.dev(self.idx(device)?).labels)
    }

    /// The devices carrying every `(key, value)` label of `selector` (all devices for an empty
    /// selector), in the order they were added: for example a CSI topology segment. O(n) in
    /// the devices.
    ///
    /// ```
    /// use slice_alloc::{Allocator, AllocatorConfig, DeviceId, DeviceSpec, GIB};
    ///
    /// let mut a = Allocator::new(AllocatorConfig::default())?;
    /// for (id, zone) in [(1, "a"), (2, "b"), (3, "a")] {
    ///     a.add_device(DeviceSpec::new(DeviceId::new(id), 100 * GIB)?)?;
    ///     a.set_label(DeviceId::new(id), "topology.example.com/zone", zone)?;
    /// }
    /// let zone_a = a.devices_matching(&[("topology.example.com/zone", "a")]);
    /// assert_eq!(zone_a, [DeviceId::new(1), DeviceId::new(3)]);
    /// # Ok::<(), slice_alloc::Error>(())
    /// ```
    pub fn devices_matching(&self, selector: &[(&str, &str)]) -> Vec<DeviceId> {
        self.devices
            .iter()
            .flatten()
            .filter(|d| {
                selector
                    .iter()
                    .all(|(k, v)| d.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|d| d.spec.id())
            .collect()
    }

    /// Cordons `device`: it takes no new slices or reservations (not even through
    /// [`allocate_at`](Self::allocate_at)) and reports no allocatable space, while its slices
    /// stay, may grow, shrink and be freed, and its reservations may be committed. Cordoning
    /// a cordoned device is a no-op.
    pub fn cordon(&mut self, device: DeviceId) -> Result<(), Error> {
        self.set_cordon(device, true)
    }

    /// Lifts a cordon (a no-op on a device that is not cordoned).
    pub fn uncordon(&mut self, device: DeviceId) -> Result<(), Error> {
        self.set_cordon(device, false)
    }

    fn set_cordon(&mut self, device: DeviceId, cordoned: bool) -> Result<(), Error> {
        let idx = self.idx(device)?;
        if self.dev(idx).cordoned != cordoned {
            self.dev_mut(idx).cordoned = cordoned;
            self.reindex(idx);
        }
        Ok(())
    }

    /// Whether `device` is cordoned.
    pub fn is_cordoned(&self, device: DeviceId) -> Result<bool, Error> {
        Ok(self.dev(self.idx(device)?).cordoned)
    }

    /// Changes the capacity of `device` (for example after the namespace or LUN behind it was
    /// resized), returning its new spec. Growth adds free space at the end. Shrinking needs the
    /// space past the new end to be free: otherwise the error names the slice in the way. The
    /// reserved headroom must still fit in the new capacity.
    pub fn resize_device(&mut self, device: DeviceId, capacity: u64) -> Result<DeviceSpec, Error> {
        let idx = self.idx(device)?;
        let spec = self.dev(idx).spec.clone().with_capacity(capacity)?;
        let new_units = spec.units();
        let old_units = self.dev(idx).units;
        let g = spec.granularity();
        let (d, ix) = self.dev_and_index(idx);
        let old_spec = std::mem::replace(&mut d.spec, spec);
        if let Err(used) = d.set_units(new_units, ix) {
            d.spec = old_spec;
            let owner = self.owner(idx, used, 1);
            return Err(Error::InvalidArgument {
                field: "capacity",
                rule: format!(
                    "shrinking {device} to {capacity} bytes would cut off {} at byte {}",
                    owner.map_or_else(|| "space in use".into(), |o| o.to_string()),
                    used * g
                ),
            });
        }
        self.capacity = self.capacity - u128::from(old_units * g) + u128::from(new_units * g);
        self.reindex(idx);
        Ok(self.dev(idx).spec.clone())
    }

    /// Changes the reserved headroom of `device` (bytes, rounded up to whole units, at most its
    /// capacity), returning its new spec. Existing slices stay where they are, even when less
    /// than the new headroom is free: new allocations then wait until enough space is free.
    pub fn set_reserved(&mut self, device: DeviceId, reserved: u64) -> Result<DeviceSpec, Error> {
        let idx = self.idx(device)?;
        let spec = self.dev(idx).spec.clone().with_reserved(reserved)?;
        let d = self.dev_mut(idx);
        d.reserved_units = spec.reserved_units().min(d.units);
        d.spec = spec;
        self.reindex(idx);
        Ok(self.dev(idx).spec.clone())
    }

    /// Plans moving every slice and reservation off `device` (to cordon and retire it): for
    /// each, largest first, a target device and extent chosen as
    /// [`allocate`](Self::allocate) would under `constraints` (single extents only; `device`
    /// itself and cordoned devices are never targets), taking the earlier moves into account.
    /// Changes nothing: carry a move out with [`allocate_at`](Self::allocate_at) on the target,
    /// copy the data, then [`free`](Self::free) the old slice. Slices that fit nowhere are
    /// listed in [`DrainPlan::unplaced`]. Costs a copy of the allocator.
    ///
    /// ```
    /// use slice_alloc::{Allocator, AllocatorConfig, Constraints, DeviceId, DeviceSpec, GIB};
    ///
    /// let mut a = Allocator::new(AllocatorConfig::default())?;
    /// let (old, new) = (DeviceId::new(1), DeviceId::new(2));
    /// a.add_device(DeviceSpec::new(old, 100 * GIB)?)?;
    /// let s = a.allocate(40 * GIB, &Constraints::any())?;
    /// a.add_device(DeviceSpec::new(new, 100 * GIB)?)?;
    /// a.cordon(old)?;
    /// let plan = a.drain_plan(old, &Constraints::any())?;
    /// assert!(plan.is_complete());
    /// let m = &plan.moves[0];
    /// assert_eq!((m.slice, m.to, m.size), (s.id, new, 40 * GIB));
    /// // Carry it out: take the target extent, copy, free the old slice.
    /// let moved = a.allocate_at(m.to, m.extent.offset(), m.extent.len())?;
    /// a.free(s.id)?;
    /// assert_eq!(moved.size(), 40 * GIB);
    /// # Ok::<(), slice_alloc::Error>(())
    /// ```
    pub fn drain_plan(
        &self,
        device: DeviceId,
        constraints: &Constraints<'_>,
    ) -> Result<DrainPlan, Error> {
        let idx = self.idx(device)?;
        if let Some(list) = constraints.candidates {
            for &id in list {
                self.idx(id)?;
            }
        }
        let mut todo: Vec<(u64, SliceId, bool)> = self
            .slices
            .iter()
            .filter(|(_, e)| e.device == idx)
            .map(|(&id, e)| {
                let g = self.dev(idx).gran();
                (e.exts.units() * g, id, e.expires.is_some())
            })
            .collect();
        todo.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut sim = self.clone();
        sim.set_cordon(device, true)?;
        let c = Constraints {
            multi_extent: Some(false),
            ..*constraints
        };
        let mut plan = DrainPlan {
            device,
            moves: Vec::new(),
            unplaced: Vec::new(),
        };
        for (size, slice, reservation) in todo {
            match sim.allocate(size, &c) {
                Ok(t) => plan.moves.push(DrainMove {
                    slice,
                    reservation,
                    size,
                    to: t.device,
                    extent: t.extents[0],
                }),
                Err(_) => plan.unplaced.push((slice, size)),
            }
        }
        Ok(plan)
    }

    /// The reservation `id` exists (errors otherwise, as [`Allocator::release`] does).
    pub(crate) fn expect_reservation(&self, id: SliceId) -> Result<(), Error> {
        self.expect_state(id, true).map(drop)
    }
}
