//! A rebuild whose copy fails part way, then a restart of the node
//! process before the operator's retry: the new node side re-assembles the
//! volume, and `composer admin rebuild` completes the member. Before, the
//! roles whose copy had not finished were known only to the node process
//! that ran the copy: the new one saw the record name the new drive and
//! rebuilt nothing, and the volume stayed degraded while every record said
//! it was whole.
//!
//! The I/O error is made as in `rebuild_copy_failed.rs`: the process's file
//! size limit (`RLIMIT_FSIZE`) lies in the middle of the new member's
//! slice. The limit is process-wide: this file holds this one test. Runs
//! through the engine alone (no kernel mounts, no root).

mod common;
#[path = "support/failed_copy.rs"]
mod failed_copy;

#[tokio::test]
async fn a_rebuild_whose_copy_failed_is_completed_after_a_node_restart() {
    failed_copy::failed_copy_then_retry(true).await;
}
