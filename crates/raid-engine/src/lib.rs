//! A user-space RAID engine that stores real data with `raid`'s md-exact
//! layout math.
//!
//! On hosts without Linux md (containers, machines whose kernel has neither
//! md nor device-mapper), a composer can still give a pod a volume that
//! survives a drive failure: [`Volume`] does the I/O over member devices
//! ([`BlockDevice`]: a local file or block device, [`FileDevice`], or a
//! remote drive over NBD, [`nbd::NbdDevice`]), and the members hold the same
//! bytes at the same offsets as md would.
//!
//! * Levels: linear (JBOD), single, RAID0, RAID1 (n-way), RAID10
//!   (near/far/offset as `raid` maps them), RAID4/5/6 on `raid`'s write
//!   plans (read-modify-write or reconstruct-write, full-stripe writes
//!   without reads) and P/Q kernels, with reconstruction reads when
//!   degraded.
//! * Degraded mode, a write-intent bitmap persisted on the members, online
//!   rebuild onto a replacement following `raid`'s rebuild plan (throttled,
//!   with progress), bitmap-driven re-add, crash resync and scrub (which
//!   counts what it could not check: [`ScrubReport`]).
//! * No silent data loss: [`Volume::assemble`] refuses to start a volume
//!   whose missing or failed members hold every copy of some data (by
//!   `raid`'s failure analysis), [`Volume::examine`] inspects the members
//!   without starting it, [`Volume::fail_member`] refuses to fail the last
//!   copy of any data (as `mdadm --fail` does; [`Volume::fail_member_forced`]
//!   is the explicit opt-in for tests), and [`Volume::health`] tells when
//!   members that failed while the volume ran have taken some data with
//!   them.
//! * Exclusive use of members: a volume claims its devices
//!   ([`BlockDevice::claim`]: `flock`, and `O_EXCL` on block devices), so a
//!   second volume over the same files, in this process or another, is
//!   refused ([`EngineError::InUse`]) before it writes.
//! * Optional AES-256-XTS encryption at rest ([`Secret`]).
//! * [`nbd`]: an NBD server exporting drive files with an allow-list, and
//!   an NBD client usable as a member.
//! * [`fuse`] (feature `fuse`, on by default): the volume as a file in a
//!   FUSE mount, for a loop device and a real file system on top.
//!
//! ```
//! use std::sync::Arc;
//! use raid_engine::{BlockDevice, CacheMode, CreateOptions, FileDevice, Volume, VolumeLayout};
//!
//! let dir = tempfile::tempdir()?;
//! let devs: Vec<Arc<dyn BlockDevice>> = (0..4)
//!     .map(|i| {
//!         let d = FileDevice::create(dir.path().join(format!("d{i}")), 8 << 20, CacheMode::Buffered)?;
//!         Ok(Arc::new(d) as Arc<dyn BlockDevice>)
//!     })
//!     .collect::<std::io::Result<_>>()?;
//! let mut opts = CreateOptions::new(VolumeLayout::parse("raid10:n2")?);
//! opts.chunk_sectors = 128; // 64 KiB
//! let vol = Volume::create(devs.clone(), &opts)?;
//! vol.write_at(&[7u8; 4096], 1 << 20)?;
//! vol.flush()?;
//!
//! // Lose a member: reads come from the other copy.
//! vol.fail_member(0)?;
//! let mut back = [0u8; 4096];
//! vol.read_at(&mut back, 1 << 20)?;
//! assert_eq!(back, [7u8; 4096]);
//!
//! // Bring it back: only the bitmap's dirty regions are copied.
//! vol.readd(0, None, &Default::default())?;
//! vol.close()?;
//! drop(vol);
//! let vol = Volume::assemble(devs, None)?;
//! assert!(vol.scrub(false)?.mismatches.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! * `fuse` (default): [`fuse`] module (crate `fuser`, pure-Rust mount via
//!   `fusermount3` or, as root, directly).
//! * `fault-injection` (off; for tests): `fault` module and
//!   `Volume::inject_faults`, deliberate bugs and crash points that show the
//!   crash tests catch what they claim to catch.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod bitmap;
pub mod crypt;
pub mod device;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
// Without the feature only the (inert) `Fault` names exist, so that the
// checks in the I/O path compile to `false`.
#[cfg(not(feature = "fault-injection"))]
#[allow(dead_code)]
mod fault;
#[cfg(feature = "fuse")]
pub mod fuse;
pub mod meta;
pub mod nbd;
pub mod volume;

pub use crypt::Secret;
pub use device::{BlockDevice, CacheMode, Claim, ClaimHolder, FileDevice, SliceDevice};
pub use error::{EngineError, Result};
pub use volume::{
    CreateOptions, Examination, FailedMember, Health, MemberState, MemberStatus, Mismatch,
    Progress, RebuildOptions, Replacement, RoleCondition, RoleExamination, ScrubReport, Volume,
    VolumeLayout,
};
