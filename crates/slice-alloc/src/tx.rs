//! One journaled change as a transaction: the allocator call, the records that describe it and
//! the steps that undo it. [`Journaled`](crate::Journaled) and
//! [`GroupCommit`](crate::GroupCommit) run every change through a [`Tx`], write its records,
//! and undo it when the write fails; [`Allocator::reserve`] uses one to put expired
//! reservations back when the new one cannot be placed.

use crate::{
    Allocator, Constraints, DeviceId, DeviceSpec, Error, Record, Reservation, Slice, SliceId,
};

/// One step that undoes part of a change.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Apply this record (the inverse of the change).
    Apply(Record),
    /// Turn a committed slice back into a reservation expiring at this time.
    Uncommit(SliceId, u64),
    /// Put the next slice id back to this value (the first step of a change that used ids, so
    /// undone last).
    NextId(u64),
}

/// Undoes `steps` (in reverse order). Each step inverts a change that succeeded and everything
/// after it has already been undone, so each one applies.
pub(crate) fn undo_all(a: &mut Allocator, steps: Vec<Undo>) {
    for u in steps.into_iter().rev() {
        match u {
            Undo::Apply(r) => {
                if let Err(e) = a.apply(&r) {
                    debug_assert!(false, "undo {r:?} failed: {e}");
                }
            }
            Undo::Uncommit(id, t) => a.set_expiry(id, Some(t)),
            Undo::NextId(next) => a.next_id = next,
        }
    }
}

/// What a change journals: its record, and the steps that undo it if the write fails.
pub(crate) type Journal = (Record, Vec<Undo>);

/// A change in progress: see the [module docs](self).
pub(crate) struct Tx<'a> {
    pub(crate) a: &'a mut Allocator,
    pub(crate) records: Vec<Record>,
    pub(crate) undo: Vec<Undo>,
}

fn alloc_record(s: &Slice) -> Record {
    Record::Allocate {
        slice: s.id,
        device: s.device,
        extents: s.extents.clone(),
    }
}

fn reserve_record(r: &Reservation) -> Record {
    Record::Reserve {
        slice: r.slice.id,
        device: r.slice.device,
        extents: r.slice.extents.clone(),
        expires_at: r.expires_at,
    }
}

impl<'a> Tx<'a> {
    pub(crate) fn new(a: &'a mut Allocator) -> Self {
        Self {
            a,
            records: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// Runs `f` as one change of `a` that either succeeds or changes nothing.
    pub(crate) fn atomic<T>(
        a: &mut Allocator,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        Tx::change(a, f).map(|(v, _)| v)
    }

    fn rollback(self) {
        undo_all(self.a, self.undo);
    }

    /// Runs `f` as one change of `a`: on error it is undone and the error returned; on success
    /// the value, and the record to journal with the steps that undo the change (`None` when
    /// nothing changed).
    pub(crate) fn change<T>(
        a: &mut Allocator,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<(T, Option<Journal>), Error> {
        // A refused change leaves the next slice id where it was too. Handing an undone id out
        // again is as safe as reusing the undone change's sequence number, which the journal
        // already does: neither was acknowledged, and a new journal starts after a failed write.
        let next_id = a.next_id;
        let mut tx = Tx::new(a);
        let result = f(&mut tx);
        if tx.a.next_id != next_id {
            tx.undo.insert(0, Undo::NextId(next_id));
        }
        match result {
            Ok(v) => Ok((v, tx.record().map(|r| (r, tx.undo)))),
            Err(e) => {
                tx.rollback();
                Err(e)
            }
        }
    }

    /// The one record to journal for this change (several become one [`Record::Atomic`] group,
    /// so that recovery applies all or none), or `None` when nothing changed.
    pub(crate) fn record(&mut self) -> Option<Record> {
        match self.records.len() {
            0 => None,
            1 => self.records.pop(),
            _ => Some(Record::Atomic(std::mem::take(&mut self.records))),
        }
    }

    fn log(&mut self, record: Record, undo: Undo) {
        self.records.push(record);
        self.undo.push(undo);
    }

    fn new_slice(&mut self, s: Slice) -> Slice {
        self.log(alloc_record(&s), Undo::Apply(Record::Free { slice: s.id }));
        s
    }

    fn new_reservation(&mut self, r: Reservation) -> Reservation {
        self.log(
            reserve_record(&r),
            Undo::Apply(Record::Release { slice: r.slice.id }),
        );
        r
    }

    pub(crate) fn add_device(&mut self, spec: DeviceSpec) -> Result<(), Error> {
        let id = spec.id();
        self.a.add_device(spec.clone())?;
        self.log(
            Record::AddDevice(spec),
            Undo::Apply(Record::RemoveDevice(id)),
        );
        Ok(())
    }

    pub(crate) fn remove_device(&mut self, id: DeviceId) -> Result<DeviceSpec, Error> {
        let labels = self.a.labels(id)?.clone();
        let cordoned = self.a.is_cordoned(id)?;
        let spec = self.a.remove_device(id)?;
        self.records.push(Record::RemoveDevice(id));
        // Undone in reverse: the device first, then its labels and cordon.
        if cordoned {
            self.undo.push(Undo::Apply(Record::Cordon {
                device: id,
                cordoned: true,
            }));
        }
        for (key, value) in labels {
            self.undo.push(Undo::Apply(Record::SetLabel {
                device: id,
                key,
                value: Some(value),
            }));
        }
        self.undo.push(Undo::Apply(Record::AddDevice(spec.clone())));
        Ok(spec)
    }

    pub(crate) fn allocate(&mut self, size: u64, c: &Constraints<'_>) -> Result<Slice, Error> {
        let s = self.a.allocate(size, c)?;
        Ok(self.new_slice(s))
    }

    pub(crate) fn allocate_range(
        &mut self,
        min: u64,
        max: u64,
        c: &Constraints<'_>,
    ) -> Result<Slice, Error> {
        let s = self.a.allocate_range(min, max, c)?;
        Ok(self.new_slice(s))
    }

    pub(crate) fn allocate_at(
        &mut self,
        device: DeviceId,
        offset: u64,
        size: u64,
    ) -> Result<Slice, Error> {
        let s = self.a.allocate_at(device, offset, size)?;
        Ok(self.new_slice(s))
    }

    pub(crate) fn free(&mut self, id: SliceId) -> Result<Slice, Error> {
        let s = self.a.free(id)?;
        self.log(Record::Free { slice: id }, Undo::Apply(alloc_record(&s)));
        Ok(s)
    }

    fn resize(&mut self, id: SliceId, new_size: u64, grow: bool) -> Result<Slice, Error> {
        let old = self.a.slice(id).ok_or(Error::UnknownSlice(id))?;
        let s = if grow {
            self.a.grow(id, new_size)?
        } else {
            self.a.shrink(id, new_size)?
        };
        if s != old {
            self.log(
                Record::Resize {
                    slice: id,
                    extents: s.extents.clone(),
                },
                Undo::Apply(Record::Resize {
                    slice: id,
                    extents: old.extents,
                }),
            );
        }
        Ok(s)
    }

    pub(crate) fn grow(&mut self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
        self.resize(id, new_size, true)
    }

    pub(crate) fn shrink(&mut self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
        self.resize(id, new_size, false)
    }

    pub(crate) fn expire(&mut self, now: u64) -> Vec<SliceId> {
        let gone = self.a.expire_reservations(now);
        gone.into_iter()
            .map(|r| {
                let id = r.slice.id;
                self.log(
                    Record::Release { slice: id },
                    Undo::Apply(reserve_record(&r)),
                );
                id
            })
            .collect()
    }

    pub(crate) fn reserve(
        &mut self,
        size: u64,
        c: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        self.reserve_sized(size, None, c, now, ttl)
    }

    pub(crate) fn reserve_range(
        &mut self,
        min: u64,
        max: u64,
        c: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        self.reserve_sized(min, Some(max), c, now, ttl)
    }

    /// Releases expired reservations, then reserves `min` bytes (`max == None`) or a range.
    fn reserve_sized(
        &mut self,
        min: u64,
        max: Option<u64>,
        c: &Constraints<'_>,
        now: u64,
        ttl: u64,
    ) -> Result<Reservation, Error> {
        // Refuse a bad ttl before releasing anything (the transaction would undo it, but a call
        // that is refused outright should not touch the allocator at all).
        crate::alloc::expiry(now, ttl)?;
        self.expire(now);
        let r = self.a.place_reservation(min, max, c, now, ttl)?;
        Ok(self.new_reservation(r))
    }

    pub(crate) fn commit(&mut self, id: SliceId, now: u64) -> Result<Slice, Error> {
        let expires = self.a.reservations_expiry(id);
        let s = self.a.commit(id, now)?;
        let t = expires.expect("commit succeeded on a reservation");
        self.log(Record::Commit { slice: id }, Undo::Uncommit(id, t));
        Ok(s)
    }

    pub(crate) fn release(&mut self, id: SliceId) -> Result<Slice, Error> {
        let t = self.a.reservations_expiry(id);
        let s = self.a.release(id)?;
        let r = Reservation {
            slice: s.clone(),
            expires_at: t.expect("released a reservation"),
        };
        self.log(
            Record::Release { slice: id },
            Undo::Apply(reserve_record(&r)),
        );
        Ok(s)
    }

    pub(crate) fn renew(&mut self, id: SliceId, now: u64, ttl: u64) -> Result<Reservation, Error> {
        let old = self.a.reservations_expiry(id);
        let r = self.a.renew(id, now, ttl)?;
        self.log(
            Record::Renew {
                slice: id,
                expires_at: r.expires_at,
            },
            Undo::Apply(Record::Renew {
                slice: id,
                expires_at: old.expect("renewed a reservation"),
            }),
        );
        Ok(r)
    }

    pub(crate) fn set_label(
        &mut self,
        device: DeviceId,
        key: &str,
        value: &str,
    ) -> Result<Option<String>, Error> {
        let old = self.a.set_label(device, key, value)?;
        if old.as_deref() != Some(value) {
            self.log(
                Record::SetLabel {
                    device,
                    key: key.to_owned(),
                    value: Some(value.to_owned()),
                },
                Undo::Apply(Record::SetLabel {
                    device,
                    key: key.to_owned(),
                    value: old.clone(),
                }),
            );
        }
        Ok(old)
    }

    pub(crate) fn remove_label(
        &mut self,
        device: DeviceId,
        key: &str,
    ) -> Result<Option<String>, Error> {
        let old = self.a.remove_label(device, key)?;
        if old.is_some() {
            self.log(
                Record::SetLabel {
                    device,
                    key: key.to_owned(),
                    value: None,
                },
                Undo::Apply(Record::SetLabel {
                    device,
                    key: key.to_owned(),
                    value: old.clone(),
                }),
            );
        }
        Ok(old)
    }

    fn set_cordon(&mut self, device: DeviceId, cordoned: bool) -> Result<(), Error> {
        if self.a.is_cordoned(device)? == cordoned {
            return Ok(());
        }
        if cordoned {
            self.a.cordon(device)?;
        } else {
            self.a.uncordon(device)?;
        }
        self.log(
            Record::Cordon { device, cordoned },
            Undo::Apply(Record::Cordon {
                device,
                cordoned: !cordoned,
            }),
        );
        Ok(())
    }

    pub(crate) fn cordon(&mut self, device: DeviceId) -> Result<(), Error> {
        self.set_cordon(device, true)
    }

    pub(crate) fn uncordon(&mut self, device: DeviceId) -> Result<(), Error> {
        self.set_cordon(device, false)
    }

    /// A change of a device's spec: `change` makes it; `record` and `undo` describe it and
    /// its inverse from the new and the old spec. Nothing is journaled when nothing changed.
    fn respec(
        &mut self,
        device: DeviceId,
        change: impl FnOnce(&mut Allocator) -> Result<DeviceSpec, Error>,
        record: impl FnOnce(&DeviceSpec) -> Record,
        undo: impl FnOnce(&DeviceSpec) -> Record,
    ) -> Result<DeviceSpec, Error> {
        let old = self
            .a
            .devices()
            .find(|s| s.id() == device)
            .cloned()
            .ok_or(Error::UnknownDevice(device))?;
        let new = change(self.a)?;
        if new != old {
            self.log(record(&new), Undo::Apply(undo(&old)));
        }
        Ok(new)
    }

    pub(crate) fn resize_device(
        &mut self,
        device: DeviceId,
        capacity: u64,
    ) -> Result<DeviceSpec, Error> {
        self.respec(
            device,
            |a| a.resize_device(device, capacity),
            |new| Record::ResizeDevice {
                device,
                capacity: new.capacity(),
            },
            |old| Record::ResizeDevice {
                device,
                capacity: old.capacity(),
            },
        )
    }

    pub(crate) fn set_reserved(
        &mut self,
        device: DeviceId,
        reserved: u64,
    ) -> Result<DeviceSpec, Error> {
        self.respec(
            device,
            |a| a.set_reserved(device, reserved),
            |new| Record::SetReserved {
                device,
                reserved: new.reserved(),
            },
            |old| Record::SetReserved {
                device,
                reserved: old.reserved(),
            },
        )
    }
}

/// The journaled methods of [`Journaled`](crate::Journaled) (`journaled_methods!(mut)`) and
/// [`GroupCommit`](crate::GroupCommit) (`journaled_methods!()`): each runs the [`Tx`] method
/// of the same name through the wrapper's `run`.
macro_rules! journaled_methods {
    ($($m:tt)?) => {
        /// [`Allocator::add_device`], journaled.
        pub fn add_device(&$($m)? self, spec: DeviceSpec) -> Result<(), Error> {
            self.run(|tx| tx.add_device(spec))
        }
        /// [`Allocator::remove_device`], journaled.
        pub fn remove_device(&$($m)? self, id: DeviceId) -> Result<DeviceSpec, Error> {
            self.run(|tx| tx.remove_device(id))
        }
        /// [`Allocator::allocate`], journaled.
        pub fn allocate(&$($m)? self, size: u64, constraints: &Constraints<'_>) -> Result<Slice, Error> {
            self.run(|tx| tx.allocate(size, constraints))
        }
        /// [`Allocator::allocate_range`], journaled.
        pub fn allocate_range(
            &$($m)? self,
            min: u64,
            max: u64,
            constraints: &Constraints<'_>,
        ) -> Result<Slice, Error> {
            self.run(|tx| tx.allocate_range(min, max, constraints))
        }
        /// [`Allocator::allocate_at`], journaled.
        pub fn allocate_at(&$($m)? self, device: DeviceId, offset: u64, size: u64) -> Result<Slice, Error> {
            self.run(|tx| tx.allocate_at(device, offset, size))
        }
        /// [`Allocator::free`], journaled.
        pub fn free(&$($m)? self, id: SliceId) -> Result<Slice, Error> {
            self.run(|tx| tx.free(id))
        }
        /// [`Allocator::grow`], journaled.
        pub fn grow(&$($m)? self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
            self.run(|tx| tx.grow(id, new_size))
        }
        /// [`Allocator::shrink`], journaled.
        pub fn shrink(&$($m)? self, id: SliceId, new_size: u64) -> Result<Slice, Error> {
            self.run(|tx| tx.shrink(id, new_size))
        }
        /// [`Allocator::reserve`], journaled (with the releases of expired reservations).
        pub fn reserve(
            &$($m)? self,
            size: u64,
            constraints: &Constraints<'_>,
            now: u64,
            ttl: u64,
        ) -> Result<Reservation, Error> {
            self.run(|tx| tx.reserve(size, constraints, now, ttl))
        }
        /// [`Allocator::reserve_range`], journaled (with the releases of expired reservations).
        pub fn reserve_range(
            &$($m)? self,
            min: u64,
            max: u64,
            constraints: &Constraints<'_>,
            now: u64,
            ttl: u64,
        ) -> Result<Reservation, Error> {
            self.run(|tx| tx.reserve_range(min, max, constraints, now, ttl))
        }
        /// [`Allocator::commit`], journaled.
        pub fn commit(&$($m)? self, id: SliceId, now: u64) -> Result<Slice, Error> {
            self.run(|tx| tx.commit(id, now))
        }
        /// [`Allocator::release`], journaled.
        pub fn release(&$($m)? self, id: SliceId) -> Result<Slice, Error> {
            self.run(|tx| tx.release(id))
        }
        /// [`Allocator::renew`], journaled.
        pub fn renew(&$($m)? self, id: SliceId, now: u64, ttl: u64) -> Result<Reservation, Error> {
            self.run(|tx| tx.renew(id, now, ttl))
        }
        /// [`Allocator::expire`], journaled (one release record per expired reservation).
        pub fn expire(&$($m)? self, now: u64) -> Result<Vec<SliceId>, Error> {
            self.run(|tx| Ok(tx.expire(now)))
        }
        /// [`Allocator::set_label`], journaled.
        pub fn set_label(&$($m)? self, device: DeviceId, key: &str, value: &str) -> Result<Option<String>, Error> {
            self.run(|tx| tx.set_label(device, key, value))
        }
        /// [`Allocator::remove_label`], journaled.
        pub fn remove_label(&$($m)? self, device: DeviceId, key: &str) -> Result<Option<String>, Error> {
            self.run(|tx| tx.remove_label(device, key))
        }
        /// [`Allocator::cordon`], journaled.
        pub fn cordon(&$($m)? self, device: DeviceId) -> Result<(), Error> {
            self.run(|tx| tx.cordon(device))
        }
        /// [`Allocator::uncordon`], journaled.
        pub fn uncordon(&$($m)? self, device: DeviceId) -> Result<(), Error> {
            self.run(|tx| tx.uncordon(device))
        }
        /// [`Allocator::resize_device`], journaled.
        pub fn resize_device(&$($m)? self, device: DeviceId, capacity: u64) -> Result<DeviceSpec, Error> {
            self.run(|tx| tx.resize_device(device, capacity))
        }
        /// [`Allocator::set_reserved`], journaled.
        pub fn set_reserved(&$($m)? self, device: DeviceId, reserved: u64) -> Result<DeviceSpec, Error> {
            self.run(|tx| tx.set_reserved(device, reserved))
        }
    };
}
pub(crate) use journaled_methods;
