//! The harness catches bugs: deliberately broken wrappers of the memdriver
//! each make the case that checks their rule fail.

mod common;

use std::sync::Arc;

use csi_testkit::{CaseResult, Outcome, Report, Suite};
use csi_types::RawCsi;

use common::broken;

async fn run(plugin: Arc<dyn RawCsi>) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 8;
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    for r in &report.results {
        println!("{r}");
    }
    report
}

fn assert_fails(report: &Report, name: &str, reason_contains: &str) {
    match report.outcome(name) {
        Some(Outcome::Fail(reason)) => assert!(
            reason.contains(reason_contains),
            "{name} failed for another reason: {reason}"
        ),
        other => panic!("{name}: expected FAIL, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_create_volume_that_is_not_idempotent() {
    let report = run(broken::plugin("not-idempotent")).await;
    assert_fails(
        &report,
        "controller/create_volume/idempotent",
        "returned another volume",
    );
    assert_fails(
        &report,
        "properties/state_machine",
        "minimal failing sequence",
    );
    assert_eq!(
        report.outcome("controller/delete_volume/unknown_id"),
        Some(&Outcome::Pass)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_the_wrong_code_for_a_missing_field() {
    let report = run(broken::plugin("wrong-code")).await;
    assert_fails(
        &report,
        "controller/delete_volume/missing_volume_id",
        "expected INVALID_ARGUMENT, got INTERNAL",
    );
    // Only DeleteVolume is broken.
    assert_eq!(
        report.outcome("controller/create_volume/missing_name"),
        Some(&Outcome::Pass)
    );
    assert_eq!(report.failed(), 1, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_volume_lost_by_list_volumes_pagination() {
    let report = run(broken::plugin("loses-pages")).await;
    assert_fails(&report, "controller/list_volumes/pagination", "lost volume");
    assert_eq!(
        report.outcome("controller/list_volumes/bad_token"),
        Some(&Outcome::Pass)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_node_publish_that_ignores_readonly() {
    let report = run(broken::plugin("ignores-readonly")).await;
    assert_fails(&report, "node/publish_volume/readonly", "writable");
    assert_eq!(report.outcome("node/lifecycle"), Some(&Outcome::Pass));
}

/// Asserts that `name` is the one case that fails.
fn assert_only_failure(report: &Report, name: &str, reason_contains: &str) {
    assert_fails(report, name, reason_contains);
    assert_eq!(report.failed(), 1, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_controller_get_volume_without_volume_condition() {
    let report = run(broken::plugin("no-volume-condition")).await;
    assert_only_failure(
        &report,
        "controller/get_volume/volume_condition",
        "volume_condition is missing",
    );
    // ListVolumes still reports it.
    assert_eq!(
        report.outcome("controller/list_volumes/volume_condition"),
        Some(&Outcome::Pass)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_fresh_volume_reported_abnormal_on_the_node() {
    let report = run(broken::plugin("abnormal-on-node")).await;
    assert_only_failure(
        &report,
        "node/get_volume_stats/volume_condition",
        "reported abnormal: \"the disk is on fire\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_volume_placed_outside_the_requisite_topology() {
    let report = run(broken::plugin("wrong-topology")).await;
    assert_fails(
        &report,
        "controller/create_volume/topology_requisite",
        "zone-elsewhere",
    );
    assert_fails(
        &report,
        "controller/create_volume/topology_requisite_several",
        "none of which covers the node's topology",
    );
    assert_eq!(report.failed(), 2, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_topology_keys_with_another_prefix_in_list_volumes() {
    let report = run(broken::plugin("foreign-prefix")).await;
    assert_only_failure(
        &report,
        "controller/create_volume/topology_key_prefix",
        "ListVolumes returns topology key \"other.example.com/zone\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_volume_reported_in_the_first_preferred_topology() {
    let report = run(broken::plugin("first-preferred")).await;
    assert_only_failure(
        &report,
        "controller/create_volume/topology_requisite_several",
        "includes the topology the plugin cannot provision in",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_capacity_reported_where_the_plugin_cannot_provision() {
    let report = run(broken::plugin("capacity-everywhere")).await;
    assert_only_failure(
        &report,
        "controller/get_capacity/topology",
        "where CreateVolume cannot provision",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_create_volume_that_ignores_an_unsatisfiable_requisite() {
    let report = run(broken::plugin("ignores-requisite")).await;
    assert_only_failure(
        &report,
        "controller/create_volume/topology_unsatisfiable",
        "expected RESOURCE_EXHAUSTED or INVALID_ARGUMENT, got OK",
    );
    for passes in [
        "controller/create_volume/topology_requisite",
        "controller/create_volume/topology_requisite_several",
    ] {
        assert_eq!(report.outcome(passes), Some(&Outcome::Pass), "{passes}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_snapshot_metadata_ranges_that_go_backwards_across_messages() {
    let report = run(broken::plugin("metadata-backwards")).await;
    assert_only_failure(
        &report,
        "snapshot_metadata/get_metadata_allocated/ranges",
        "starts before the previous range ends",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_catches_snapshots_deleted_with_their_volume() {
    let plugin = broken::plugin("snapshots-die-with-volume");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 128;
    config.filter = Some("properties/".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    assert_fails(
        &report,
        "properties/state_machine",
        "ListSnapshots disagrees with the model",
    );
    let Some(Outcome::Fail(reason)) = report.outcome("properties/state_machine") else {
        unreachable!()
    };
    println!("{reason}");
    // Shrunk to the essence: create a volume, snapshot it, delete the volume.
    assert!(
        reason.contains("minimal failing sequence (3 calls)"),
        "{reason}"
    );
    assert!(reason.contains("1. CreateVolume(v"), "{reason}");
    assert!(reason.contains("2. CreateSnapshot(s"), "{reason}");
    assert!(reason.contains("3. DeleteVolume(v"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_catches_group_members_without_the_group_id() {
    let plugin = broken::plugin("ungrouped-members");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 64;
    config.filter = Some("properties/".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    assert_fails(
        &report,
        "properties/state_machine",
        "has group_snapshot_id \"\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_delta_between_snapshots_of_two_volumes() {
    let report = run(broken::plugin("delta-ignores-base")).await;
    assert_only_failure(
        &report,
        "snapshot_metadata/get_metadata_delta/different_volumes",
        "expected INVALID_ARGUMENT or NOT_FOUND, got a stream",
    );
}

/// Runs every case with 64 state-machine sequences; asserts that none fails
/// and that nothing is left behind.
async fn assert_passes_everything(plugin: Arc<dyn RawCsi>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 64;
    let report = Suite::new(config, plugin.clone(), plugin.clone())
        .run()
        .await;
    for r in &report.results {
        println!("{r}");
    }
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let left = plugin
        .raw_list_volumes(csi_types::proto::ListVolumesRequest::default())
        .await
        .unwrap();
    assert!(left.entries.is_empty(), "left behind: {:?}", left.entries);
}

/// The idempotency rule of `ControllerPublishVolume` asks only for OK, but
/// `publish_context` "SHALL NOT be mutable": a driver that answers a retry
/// with another context fails the case and the state machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_publish_context_that_changes_on_retry() {
    let report = run(broken::plugin("fresh-publish-context")).await;
    assert_fails(
        &report,
        "controller/publish/idempotent",
        "retried returned another publish_context",
    );
    assert_fails(
        &report,
        "properties/state_machine",
        "publishing again returned publish_context",
    );
}

/// A mutable parameter may change a volume's size: a `ControllerModifyVolume`
/// that grows the volume passes the state machine, with a warning (it
/// failed: it demanded the `ListVolumes` entry unchanged), and every other
/// case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modify_that_resizes_the_volume_passes() {
    let plugin = broken::plugin("modify-resizes");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 64;
    config.filter = Some("properties/".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    let r = &report.results[0];
    assert_passed_with_warning(r, "ControllerModifyVolume(iops=500): ListVolumes shows");
    assert_passes_everything(broken::plugin("modify-resizes")).await;
}

/// The spec lets a plugin refuse to delete a volume with snapshots or
/// clones, or a snapshot with restored volumes (`FAILED_PRECONDITION`): such
/// a driver passes every case, and the state machine's teardown still
/// removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_keeps_dependents_passes() {
    assert_passes_everything(broken::plugin("keeps-dependents")).await;
}

/// A plugin may refuse a `ControllerExpandVolume` below the current size
/// with `OUT_OF_RANGE` rather than answer it as a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_refuses_to_shrink_passes() {
    assert_passes_everything(broken::plugin("refuses-shrink")).await;
}

/// A state machine that fails before its first call (here every `ListVolumes` fails) says
/// so, instead of printing an empty "minimal failing sequence (0 calls):".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_the_first_call_says_so() {
    let plugin = broken::plugin("cannot-list");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.filter = Some("properties/state_machine".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    match report.outcome("properties/state_machine") {
        Some(Outcome::Fail(why)) => {
            assert!(why.contains("the volume table is unreadable"), "{why}");
            assert!(why.contains("before the first call"), "{why}");
            assert!(!why.contains("(0 calls)"), "{why}");
        }
        other => panic!("properties/state_machine: expected FAIL, got {other:?}"),
    }
}

/// A plugin that does not confirm the capability a volume was created with, and gives no
/// message, fails `validate_volume_capabilities/confirms` with a reason that says so (it
/// ended in a bare ": ").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_validation_that_confirms_nothing() {
    let plugin = broken::plugin("never-confirms");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.filter = Some("controller/validate_volume_capabilities/confirms".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    match report.outcome("controller/validate_volume_capabilities/confirms") {
        Some(Outcome::Fail(why)) => {
            assert!(why.contains("did not confirm"), "{why}");
            assert!(why.contains("gave no message"), "{why}");
        }
        other => panic!("expected FAIL, got {other:?}"),
    }
}

/// A plugin whose volumes' capacity is unknown answers `capacity_bytes` 0 and may find an
/// existing volume compatible with a larger range (the spec leaves that to it): OK passes
/// `create_volume/incompatible_existing` with a warning, and the state machine takes OK or
/// `ALREADY_EXISTS`. Both used to demand `ALREADY_EXISTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_of_unknown_capacity_passes() {
    assert_passes_everything(broken::plugin("unknown-capacity")).await;
    let r = run_one(
        "unknown-capacity",
        "controller/create_volume/incompatible_existing",
    )
    .await;
    assert_passed_with_warning(&r, "answered OK");
    assert!(
        r.warnings.iter().any(|w| w.contains("unknown")),
        "{:?}",
        r.warnings
    );
}

/// `NodeGetVolumeStats` whose `available` exceeds `total` (a thin share
/// reporting its pool's free space): the spec does not forbid it, so the
/// lifecycle case passes with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_reporting_more_available_than_total_passes() {
    assert_passes_everything(broken::plugin("overcommitted-share")).await;
    let r = run_one("overcommitted-share", "node/lifecycle").await;
    assert_passed_with_warning(&r, "above total");
}

/// Space freed in a shared pool raises the available capacity: the spec
/// does not forbid it (`GetCapacity` reports what can be provisioned now),
/// so neither the case nor the state machine fails for it, and the case
/// says so in a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_capacity_rises_passes() {
    assert_passes_everything(broken::plugin("space-freed-elsewhere")).await;
    let r = run_one("space-freed-elsewhere", "controller/get_capacity").await;
    assert_passed_with_warning(&r, "rose");
}

/// A plugin whose ids have a format refuses a made-up id as malformed
/// (`INVALID_ARGUMENT`): every case passes, those sending the made-up id
/// with a warning; where a case can, it uses the id of a deleted volume,
/// which only `NOT_FOUND` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_refusing_malformed_ids_passes() {
    assert_passes_everything(broken::plugin("formatted-ids")).await;
    // A group snapshot the case made and deleted: well formed, no warning.
    for name in ["group/get/unknown_id", "group/delete/unknown_id"] {
        let r = run_one("formatted-ids", name).await;
        assert_eq!(r.outcome, Outcome::Pass, "{r}");
        assert!(r.warnings.is_empty(), "{r}: {:?}", r.warnings);
    }
    let r = run_one(
        "formatted-ids",
        "group/delete/unknown_id_without_snapshot_ids",
    )
    .await;
    assert_passed_with_warning(&r, "INVALID_ARGUMENT");
    let r = run_one("formatted-ids", "controller/delete_volume/unknown_id").await;
    assert_passed_with_warning(&r, "INVALID_ARGUMENT");
    let r = run_one("formatted-ids", "controller/list_snapshots/filters").await;
    assert_passed_with_warning(&r, "INVALID_ARGUMENT");
}

/// The spec ties `minimum_volume_size` to `maximum_volume_size` by no rule:
/// one above the other passes, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimum_volume_size_above_the_maximum_passes() {
    assert_passes_everything(broken::plugin("minimum-above-maximum")).await;
    let r = run_one("minimum-above-maximum", "controller/get_capacity").await;
    assert_passed_with_warning(&r, "exceeds maximum_volume_size");
}

/// Without a topology a plugin may report the pool it would pick, less
/// than the node's topology: passes, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_without_a_topology_below_the_nodes_passes() {
    assert_passes_everything(broken::plugin("default-pool-capacity")).await;
    let r = run_one("default-pool-capacity", "controller/get_capacity/topology").await;
    assert_passed_with_warning(&r, "reported without a topology");
}

/// The volume's `content_source` is OPTIONAL: a plugin that leaves it out
/// of a restored or cloned volume passes, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_without_its_content_source_passes() {
    assert_passes_everything(broken::plugin("no-content-source")).await;
    for name in [
        "controller/create_volume/from_snapshot",
        "controller/create_volume/clone",
    ] {
        let r = run_one("no-content-source", name).await;
        assert_passed_with_warning(&r, "no content_source");
    }
}

/// `ListSnapshots` filtered by a deleted volume's id lists nothing: a
/// plugin answering `NOT_FOUND` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_not_found_for_list_snapshots_of_a_deleted_volume() {
    let r = run_one(
        "unknown-source-not-found",
        "controller/list_snapshots/unknown_source_volume",
    )
    .await;
    match &r.outcome {
        Outcome::Fail(reason) => assert!(reason.contains("expected OK, got NOT_FOUND"), "{reason}"),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

/// A deleted volume's id is well formed: a plugin that answers
/// `INVALID_ARGUMENT` for it (not `NOT_FOUND`) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_invalid_argument_for_a_deleted_volume() {
    let r = run_one("gone-is-invalid", "controller/get_volume/unknown_volume").await;
    match &r.outcome {
        Outcome::Fail(reason) => assert!(
            reason.contains("expected NOT_FOUND, got INVALID_ARGUMENT"),
            "{reason}"
        ),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

/// Runs the one case `name` against the broken driver `kind`.
async fn run_one(kind: &str, name: &str) -> CaseResult {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.filter = Some(name.into());
    let plugin = broken::plugin(kind);
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    report.results[0].clone()
}

/// Asserts that `r` passed with a warning containing `text`.
fn assert_passed_with_warning(r: &CaseResult, text: &str) {
    assert_eq!(r.outcome, Outcome::Pass, "{r}");
    assert!(
        r.warnings.iter().any(|w| w.contains(text)),
        "no warning containing {text:?}: {:?}",
        r.warnings
    );
}

/// A plugin that allows no volume of the larger range answers the existing
/// name with it `OUT_OF_RANGE` or `ALREADY_EXISTS` (both rules apply): the
/// first passes `create_volume/incompatible_existing` with a warning, once a
/// new name with that range is refused too; a plugin that refuses the range
/// only for the existing name fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_name_with_a_range_the_plugin_never_allows() {
    const CASE: &str = "controller/create_volume/incompatible_existing";
    // The whole suite, the state machine's larger volumes included, passes.
    assert_passes_everything(broken::plugin("small-maximum")).await;
    let r = run_one("small-maximum", CASE).await;
    assert_passed_with_warning(&r, "answered OUT_OF_RANGE");
    let r = run_one("range-for-name-only", CASE).await;
    match &r.outcome {
        Outcome::Fail(why) => assert!(why.contains("under a new name was created"), "{why}"),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

/// A plugin that reports no `maximum_volume_size` may answer a CreateVolume
/// of 8 EiB `RESOURCE_EXHAUSTED` (it lacks the space) rather than
/// `OUT_OF_RANGE`: `create_volume/out_of_range` passes with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_without_a_maximum_volume_size_may_lack_the_space() {
    let r = run_one("no-maximum", "controller/create_volume/out_of_range").await;
    assert_passed_with_warning(&r, "answered RESOURCE_EXHAUSTED");
}

/// A plugin may refuse any `ControllerExpandVolume` it cannot satisfy with
/// `OUT_OF_RANGE` ("capacity range not allowed by the Plugin"), growth
/// included: the grow case skips, saying why, and the state machine takes
/// the refusal as leaving the size unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_cannot_grow_passes() {
    let plugin = broken::plugin("cannot-grow");
    assert_passes_everything(plugin.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.filter = Some("controller/expand_volume/grow".into());
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    match report.outcome("controller/expand_volume/grow") {
        Some(Outcome::Skip(why)) => assert!(why.contains("OUT_OF_RANGE"), "{why}"),
        other => panic!("controller/expand_volume/grow: expected SKIP, got {other:?}"),
    }
}

/// A refusal is right only for a size the plugin does not allow: a driver
/// that refuses an expansion during the race and grants the same request
/// alone afterwards fails the concurrency case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_an_expansion_refused_only_under_concurrency() {
    let report = run(broken::plugin("refuses-once")).await;
    assert_fails(
        &report,
        "concurrency/same_volume_operations",
        "alone after the race the same request answered",
    );
}

/// `CreateSnapshot` may answer `RESOURCE_EXHAUSTED` ("Not enough space to
/// create snapshot"): racing expansions of its source, the concurrency case
/// passes with a warning (it demanded OK or `ABORTED`); elsewhere the cases
/// that need a snapshot skip and the state machine warns (they failed). A
/// code the spec does not give it there, `FAILED_PRECONDITION`, still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_without_space_in_the_race_passes() {
    const CASE: &str = "concurrency/same_volume_operations";
    let r = run_one("no-snapshot-space", CASE).await;
    assert_passed_with_warning(&r, "answered RESOURCE_EXHAUSTED");
    // The whole suite: the cases that need a snapshot skip, naming the
    // answer, and the state machine takes it as creating nothing.
    assert_passes_everything(broken::plugin("no-snapshot-space")).await;
    let r = run_one(
        "no-snapshot-space",
        "controller/create_volume/from_snapshot",
    )
    .await;
    match &r.outcome {
        Outcome::Skip(why) => assert!(why.contains("answered RESOURCE_EXHAUSTED"), "{why}"),
        other => panic!("expected SKIP, got {other:?}"),
    }
    let r = run_one("snapshot-precondition", CASE).await;
    match &r.outcome {
        Outcome::Fail(why) => assert!(
            why.contains("CreateSnapshot (concurrent, same volume): expected OK, ABORTED or RESOURCE_EXHAUSTED, got FAILED_PRECONDITION"),
            "{why}"
        ),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

/// While volumes are added and deleted between pages, a CO "MAY either
/// witness duplicate volumes in the list, not witness existing volumes, or
/// both", and an invalidated token answers `ABORTED`: drivers with offset
/// tokens, or tokens that expire on a change, pass every case, the change
/// case with a warning (it demanded that no volume be lost and the token
/// keep working). One that loses a volume with nothing changing still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_that_shift_or_expire_when_volumes_change_pass() {
    const CASE: &str = "controller/list_volumes/changes_between_pages";
    for (kind, warning) in [
        ("offset-pages", "missed"),
        ("expiring-pages", "answered ABORTED"),
    ] {
        let r = run_one(kind, CASE).await;
        assert_passed_with_warning(&r, warning);
        assert_passes_everything(broken::plugin(kind)).await;
    }
    let r = run_one("loses-pages", CASE).await;
    match &r.outcome {
        Outcome::Fail(why) => assert!(why.contains("started again after the changes"), "{why}"),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

/// A plugin whose volumes are at least 2 MiB may refuse any smaller range
/// with `OUT_OF_RANGE` before looking at anything else; run with a volume
/// size it allows, it passes every case (`expand_volume/missing_volume_id`
/// sent 1 MiB, so that both rules applied, and demanded `INVALID_ARGUMENT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_with_a_minimum_volume_size_passes() {
    let plugin = broken::plugin("large-minimum");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.volume_size = 2 << 20;
    config.proptest_cases = 16;
    let report = Suite::new(config, plugin.clone(), plugin.clone())
        .run()
        .await;
    for r in &report.results {
        println!("{r}");
    }
    assert_eq!(
        report.outcome("controller/expand_volume/missing_volume_id"),
        Some(&Outcome::Pass)
    );
    assert_eq!(report.failed(), 0, "{}", report.summary());
}

/// `NodeGetInfo.accessible_topology` is OPTIONAL even with
/// `VOLUME_ACCESSIBILITY_CONSTRAINTS` (left out, the node is subject to no
/// constraint): such a driver passes every case, the node case with a
/// warning (it failed), the cases that need the node's topology skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_topology_passes() {
    assert_passes_everything(broken::plugin("node-without-topology")).await;
    let r = run_one("node-without-topology", "node/get_info/accessible_topology").await;
    assert_passed_with_warning(&r, "reports no accessible_topology");
}

/// `CreateVolumeGroupSnapshot` may answer `FAILED_PRECONDITION` ("Cannot
/// snapshot multiple volumes together") for volumes not configured as the
/// plugin requires: such a driver passes every case, the two-volume
/// lifecycle skipping with the answer, the state machine taking the
/// refusal as creating nothing (both failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_cannot_group_every_volume_passes() {
    assert_passes_everything(broken::plugin("separate-pools")).await;
    let r = run_one("separate-pools", "group/lifecycle").await;
    match &r.outcome {
        Outcome::Skip(why) => assert!(why.contains("answered FAILED_PRECONDITION"), "{why}"),
        other => panic!("group/lifecycle: expected SKIP, got {other:?}"),
    }
}

/// A driver whose ids derive from names gives a name created again after
/// its deletion the old id back; that is not a deleted object reappearing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_whose_ids_come_from_names_passes() {
    assert_passes_everything(broken::plugin("ids-from-names")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_create_volume_race() {
    let report = run(broken::plugin("racy")).await;
    assert_fails(
        &report,
        "concurrency/create_volume_same_name",
        "concurrent CreateVolume calls with one name made",
    );
    // Called one at a time it looks fine.
    assert_eq!(
        report.outcome("controller/create_volume/idempotent"),
        Some(&Outcome::Pass)
    );
    assert_eq!(
        report.outcome("properties/state_machine"),
        Some(&Outcome::Pass)
    );
}

/// Concurrent `CreateVolume` calls with one name may answer
/// `RESOURCE_EXHAUSTED` (the pending call holds the space): a warning; a
/// pool without space for the volume skips the case, naming the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_volume_race_without_space_passes_or_skips() {
    let r = run_one("reserving", "concurrency/create_volume_same_name").await;
    assert_passed_with_warning(&r, "RESOURCE_EXHAUSTED");
    let r = run_one("full-pool", "concurrency/create_volume_same_name").await;
    match &r.outcome {
        Outcome::Skip(reason) => assert!(reason.contains("RESOURCE_EXHAUSTED"), "{reason}"),
        other => panic!("expected SKIP, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_its_case_only() {
    let report = run(broken::plugin("panics-on-probe")).await;
    assert_fails(
        &report,
        "identity/probe",
        "the case panicked: probe exploded",
    );
    assert_eq!(report.failed(), 1, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_target_that_is_a_regular_file_fails_unless_allowed() {
    // The memdriver publishes a BLOCK volume as a regular file: only the
    // setting for drivers that cannot make device nodes lets that pass.
    let plugin: Arc<dyn RawCsi> =
        Arc::new(csi_testkit::memdriver::MemDriver::new(Default::default()).plugin());
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.filter = Some("node/lifecycle".into());
    config.block_targets_may_be_files = false;
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    assert_only_failure(&report, "node/lifecycle_block", "made a regular file at");
    assert_eq!(report.outcome("node/lifecycle"), Some(&Outcome::Pass));
}

/// Wherever the spec allows several answers — two rules apply to one request,
/// or it says SHOULD, or it tells the CO to be resilient — a driver that
/// gives the other one passes every case, and each such answer is reported
/// as a warning on the case that saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_spec_allows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.proptest_cases = 8;
    let plugin = broken::plugin("other-allowed-answers");
    let report = Suite::new(config, plugin.clone(), plugin).run().await;
    for r in &report.results {
        println!("{r}");
        for w in &r.warnings {
            println!("  WARN {w}");
        }
    }
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let warned = |name: &str, text: &str| {
        let r = report.results.iter().find(|r| r.name == name).unwrap();
        assert_eq!(r.outcome, Outcome::Pass, "{name}");
        assert!(
            r.warnings.iter().any(|w| w.contains(text)),
            "{name}: no warning containing {text:?}: {:?}",
            r.warnings
        );
    };
    for name in [
        "node/stage_volume/missing_staging_target_path",
        "node/stage_volume/missing_volume_capability",
        "node/unstage_volume/missing_staging_target_path",
        "node/publish_volume/missing_target_path",
        "node/publish_volume/missing_volume_capability",
        "node/unpublish_volume/missing_target_path",
        "controller/unpublish/unknown_volume",
        "controller/unpublish/unknown_node",
    ] {
        warned(name, "answered NOT_FOUND");
    }
    // Storage without changed block tracking: the delta's error cases pass
    // with a warning, its range case skips naming the answer.
    for name in [
        "snapshot_metadata/starting_offset_past_end",
        "snapshot_metadata/get_metadata_delta/different_volumes",
        "snapshot_metadata/unknown_snapshot",
    ] {
        warned(name, "answered FAILED_PRECONDITION");
    }
    match report.outcome("snapshot_metadata/get_metadata_delta/ranges") {
        Some(Outcome::Skip(why)) => assert!(why.contains("FAILED_PRECONDITION"), "{why}"),
        other => panic!("snapshot_metadata/get_metadata_delta/ranges: {other:?}"),
    }
    for name in [
        "node/get_volume_stats/unknown_volume_relative_path",
        "node/expand_volume/unknown_volume_relative_path",
        "group/get/unknown_id_without_snapshot_ids",
        "group/delete/unknown_id_without_snapshot_ids",
        "controller/create_volume/topology_unsatisfiable",
        "controller/get_capacity/topology",
    ] {
        warned(name, "answered INVALID_ARGUMENT");
    }
    warned(
        "controller/list_volumes/published_nodes",
        "published_node_ids[*]",
    );
    warned(
        "controller/get_volume/volume_condition",
        "volume_condition.message",
    );
    warned(
        "node/get_volume_stats/volume_condition",
        "volume_condition.message",
    );
    // The preferred answers give no warning: the plain memdriver has none.
    let plain = run(broken::plugin("none")).await;
    assert_eq!(plain.failed(), 0, "{}", plain.summary());
    assert_eq!(plain.warnings(), 0, "{:?}", plain.results);
}

/// The typed client (`csi_types::Csi`) over a plugin: a response that bends
/// only tolerated rules is accepted (the odd node id dropped, the empty
/// condition message kept); one that breaks a MUST rule is `INTERNAL`,
/// naming the RPC and the field, and the harness fails the case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_accepts_tolerated_rules_and_refuses_must_rules() {
    use csi_types::{
        Code, Csi,
        controller::ControllerGetVolumeRequest,
        ids::VolumeId,
        proto,
        types::{AccessMode, VolumeCapability},
    };
    async fn volume(plugin: &dyn RawCsi) -> VolumeId {
        let v = RawCsi::raw_create_volume(
            plugin,
            proto::CreateVolumeRequest {
                name: "typed".into(),
                volume_capabilities: vec![
                    VolumeCapability::mount(AccessMode::SingleNodeWriter).into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        VolumeId::new(v.volume.unwrap().volume_id).unwrap()
    }
    let odd = broken::plugin("other-allowed-answers");
    let id = volume(&*odd).await;
    let g = Csi::controller_get_volume(&*odd, ControllerGetVolumeRequest { volume_id: id })
        .await
        .unwrap();
    assert!(
        g.status.published_node_ids.is_empty(),
        "the empty id is dropped"
    );
    assert_eq!(g.status.volume_condition.unwrap().message, "");

    let bad = broken::plugin("negative-capacity");
    let id = volume(&*bad).await;
    let e = Csi::controller_get_volume(&*bad, ControllerGetVolumeRequest { volume_id: id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(
        e.to_string(),
        "internal error: the plugin's ControllerGetVolume response breaks the spec: invalid `volume.capacity_bytes`: must not be negative, got -1"
    );
    let report = run(bad).await;
    assert_fails(
        &report,
        "controller/get_volume/volume_condition",
        "invalid `volume.capacity_bytes`",
    );
}
