//! Deliberate bugs and crash points, for showing that the crash tests catch
//! what they claim to catch (feature `fault-injection`, off by default and
//! never needed outside tests).
//!
//! A crash-consistency test that passes proves little unless it is also
//! seen to *fail* when the engine gets the ordering wrong. These hooks turn
//! on, per volume, one of the mistakes a RAID engine can make, and a crash
//! point that kills the process in the middle of a write:
//!
//! * [`Fault::SkipIntentBit`]: data is written without first setting and
//!   persisting its write-intent bit (the ordering md's bitmap relies on).
//!   A crash between the member writes of one stripe then leaves data and
//!   parity (or two mirror copies) disagreeing in a region the bitmap does
//!   not mark, so the resync after restart leaves it as it is.
//! * [`Fault::StaleQ`]: the Q syndrome of a RAID6 write is computed but
//!   never written.
//! * [`Fault::KillAfterMemberWrites`]: the process sends itself `SIGKILL`
//!   right after its n-th member write on the data path, so that a test can
//!   crash in the middle of a stripe (between the data and the parity
//!   writes) deterministically.
//!
//! ```
//! # #[cfg(feature = "fault-injection")] {
//! use raid_engine::fault::Fault;
//! assert_eq!(Fault::parse_list("skip-intent-bit,kill-after=7")?, vec![
//!     Fault::SkipIntentBit,
//!     Fault::KillAfterMemberWrites(7),
//! ]);
//! assert!(Fault::parse_list("kill-after=0").is_err());
//! # }
//! # Ok::<(), raid_engine::EngineError>(())
//! ```

#[cfg(feature = "fault-injection")]
use std::sync::Mutex;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, invalid};

/// One deliberate bug or crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Write data without setting its write-intent bit first.
    SkipIntentBit,
    /// Never write the Q syndrome of a RAID6 write step.
    StaleQ,
    /// `SIGKILL` the process right after the n-th (counted from 1) member
    /// write of the data path (foreground writes; not superblock, bitmap,
    /// rebuild or resync writes).
    KillAfterMemberWrites(u64),
}

impl Fault {
    /// Parse a comma-separated list: `skip-intent-bit`, `stale-q`,
    /// `kill-after=N` (N ≥ 1).
    pub fn parse_list(s: &str) -> Result<Vec<Fault>> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t {
                "skip-intent-bit" => Ok(Fault::SkipIntentBit),
                "stale-q" => Ok(Fault::StaleQ),
                _ => match t.strip_prefix("kill-after=").map(str::parse::<u64>) {
                    Some(Ok(n)) if n >= 1 => Ok(Fault::KillAfterMemberWrites(n)),
                    _ => Err(invalid(
                        "faults",
                        format!(
                            "{} is not one of skip-intent-bit, stale-q, kill-after=N (N >= 1)",
                            storage_units::quote(t)
                        ),
                    )),
                },
            })
            .collect()
    }
}

/// The faults switched on for one volume.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    on: Mutex<Vec<Fault>>,
    member_writes: AtomicU64,
}

#[cfg(feature = "fault-injection")]
impl Faults {
    pub(crate) fn set(&self, faults: &[Fault]) {
        *self.on.lock().unwrap_or_else(|p| p.into_inner()) = faults.to_vec();
    }

    pub(crate) fn has(&self, f: Fault) -> bool {
        self.on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&f)
    }

    /// Count a data-path member write; die here if that is the crash point.
    pub(crate) fn after_member_write(&self) {
        let n = self.member_writes.fetch_add(1, Ordering::SeqCst) + 1;
        let kill = self
            .on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&Fault::KillAfterMemberWrites(n));
        if kill {
            // Nothing after this line runs: no destructor, no flush.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            std::process::abort();
        }
    }
}
