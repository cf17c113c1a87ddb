//! A rebuild whose copy fails part way (the new member's drive answers an
//! I/O error half way through it) and the operator's retry of
//! `composer admin rebuild`. Before, the failed copy left the new drive in
//! the node's record while the engine kept the member as a spare out of
//! sync, and the retry saw no drive to change: it answered that it rebuilt
//! nothing, and the volume stayed degraded while every record said it was
//! whole.
//!
//! The I/O error is a real one from the kernel: the process's file size
//! limit (`RLIMIT_FSIZE`) lies in the middle of the new member's slice, so
//! that every write at or beyond it answers `EFBIG`, as a drive that
//! stopped taking writes there would; every other write of the test (the
//! survivor's superblock and bitmap, the node's state) lies below it. The
//! limit is process-wide: this file holds this one test. Runs through the
//! engine alone (no kernel mounts, no root).

mod common;
#[path = "support/failed_copy.rs"]
mod failed_copy;

#[tokio::test]
async fn a_rebuild_whose_copy_failed_part_way_is_completed_by_a_retry() {
    failed_copy::failed_copy_then_retry(false).await;
}
