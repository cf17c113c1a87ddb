//! Calls of one volume on the node side take the volume's turn
//! ([`crate::node::NodeSide::turn`]); calls of different volumes do not wait
//! for each other. The second call is started from a hook at a named point
//! of the first ([`crate::node::NodeSide::test_point`]), and the hook sees
//! it either finish or wait for the turn: no timing.
//!
//! Needs root, `/dev/fuse` and loop devices: without them the tests say so
//! and pass, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use csi_types::prelude::*;
use csi_types::{
    controller::ControllerPublishVolumeRequest,
    ids::{NodeId, NodePath, VolumeId},
    node::{
        NodePublishVolumeRequest, NodePublishVolumeResponse, NodeStageVolumeRequest,
        NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
    },
    redact::Secrets,
    types::{AccessMode, Map, VolumeCapability},
};

use crate::ComposerDriver;
use crate::node::{Backend, NodeConfig, NodeSide};

use crate::demo::can_mount_in_tests as can_mount;

/// Runs `f` to its end on a runtime of the calling thread (a second call's
/// thread, started from a hook).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn np(p: &Path) -> NodePath {
    NodePath::new(p.to_str().unwrap()).unwrap()
}

fn cap() -> VolumeCapability {
    VolumeCapability::mount(AccessMode::SingleNodeWriter)
}

struct Setup {
    dir: tempfile::TempDir,
    driver: ComposerDriver,
    plugin: Plugin,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let inv = composer_core::Inventory::from_toml(crate::demo::DEMO_INVENTORY).unwrap();
        let store = Arc::new(composer_core::MemStore::default());
        let driver = ComposerDriver::open(inv, store, Some("r1-n1"))
            .unwrap()
            .with_node_side(NodeConfig {
                data_dir: dir.path().join("drives"),
                run_dir: dir.path().join("run"),
                backend: Backend::Userspace,
            });
        let plugin = driver.plugin().unwrap();
        Setup {
            dir,
            driver,
            plugin,
        }
    }

    fn side(&self) -> &Arc<NodeSide> {
        self.driver.node_side().unwrap()
    }

    fn staging(&self, name: &str) -> PathBuf {
        self.dir.path().join("staging").join(name)
    }

    fn target(&self, name: &str) -> PathBuf {
        self.dir.path().join("target").join(name)
    }

    /// Creates slice volume `name` and publishes it to r1-n1; its id.
    async fn create(&self, name: &str) -> String {
        self.create_with(name, &[("type", "slice")]).await
    }

    /// Creates volume `name` with StorageClass `params` and publishes it
    /// to r1-n1; its id.
    async fn create_with(&self, name: &str, params: &[(&str, &str)]) -> String {
        let mut req = crate::create_request(name, params, 64 << 20).unwrap();
        req.volume_capabilities = vec![cap()];
        let id = Csi::create_volume(&self.plugin, req)
            .await
            .unwrap()
            .volume
            .volume_id
            .as_str()
            .to_string();
        Csi::controller_publish_volume(
            &self.plugin,
            ControllerPublishVolumeRequest {
                volume_id: VolumeId::new(&id).unwrap(),
                node_id: NodeId::new("r1-n1").unwrap(),
                volume_capability: cap(),
                readonly: false,
                secrets: Secrets::default(),
                volume_context: Map::new(),
            },
        )
        .await
        .unwrap();
        id
    }

    fn stage_req(&self, id: &str, name: &str) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            publish_context: Map::new(),
            staging_target_path: np(&self.staging(name)),
            volume_capability: cap(),
            secrets: Secrets::default(),
            volume_context: Map::new(),
        }
    }

    fn publish_req(&self, id: &str, name: &str) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            publish_context: Map::new(),
            staging_target_path: Some(np(&self.staging(name))),
            target_path: np(&self.target(name)),
            volume_capability: cap(),
            readonly: false,
            secrets: Secrets::default(),
            volume_context: Map::new(),
        }
    }

    fn expand_req(&self, id: &str, name: &str) -> csi_types::node::NodeExpandVolumeRequest {
        csi_types::node::NodeExpandVolumeRequest {
            volume_id: VolumeId::new(id).unwrap(),
            volume_path: np(&self.staging(name)).into(),
            capacity_range: None,
            staging_target_path: Some(np(&self.staging(name))).into(),
            volume_capability: Some(cap()),
            secrets: Secrets::default(),
        }
    }

    /// Creates and stages volumes `a` and `b`; their ids.
    async fn stage_two(&self) -> (String, String) {
        let a = self.create("a").await;
        let b = self.create("b").await;
        for (id, name) in [(&a, "a"), (&b, "b")] {
            Csi::node_stage_volume(&self.plugin, self.stage_req(id, name))
                .await
                .unwrap();
        }
        (a, b)
    }

    /// At `point` of a call on volume `a`, a publish of volume `b` (staged
    /// as `b`) on a thread of its own ([`start_at`]).
    fn publish_at(
        &self,
        point: &'static str,
        a: &str,
        b: &str,
    ) -> (
        Seen,
        SecondThread<Result<NodePublishVolumeResponse, CsiError>>,
    ) {
        let (plugin, req) = (self.plugin.clone(), self.publish_req(b, "b"));
        start_at(self.side(), point, a, move || {
            block_on(Csi::node_publish_volume(&plugin, req))
        })
    }

    /// Unpublishes and unstages `id` (whatever is left of it).
    async fn teardown(&self, id: &str, name: &str) {
        Csi::node_unpublish_volume(
            &self.plugin,
            NodeUnpublishVolumeRequest {
                volume_id: VolumeId::new(id).unwrap(),
                target_path: np(&self.target(name)),
            },
        )
        .await
        .unwrap();
        self.side().unstage(id, &self.staging(name)).unwrap();
        assert!(!csi_node::is_mount_point(&self.target(name)).unwrap_or(false));
        assert!(!csi_node::is_mount_point(&self.staging(name)).unwrap_or(false));
    }
}

/// How long the hook waits for the second call before it takes it as
/// stuck behind the first: not a measure of speed, a bound on a deadlock.
const STUCK: std::time::Duration = std::time::Duration::from_secs(60);

/// What the second call did while the first was at its hook.
#[derive(Debug)]
enum Second<T> {
    /// It waits for the volume's turn.
    Waits,
    /// It finished.
    Done(T),
}

/// What the hook saw of the second call, once it saw it.
type Seen = Arc<Mutex<Option<Second<()>>>>;

/// The second call's thread, once started.
type SecondThread<T> = Arc<Mutex<Option<std::thread::JoinHandle<T>>>>;

/// Waits for the second call, takes the hook down; what the hook saw and
/// what the second call answered.
fn finish<T>(side: &NodeSide, seen: &Seen, thread: &SecondThread<T>) -> (Option<Second<()>>, T) {
    let answer = thread.lock().unwrap().take().unwrap().join().unwrap();
    *side.hook.lock().unwrap() = None;
    (seen.lock().unwrap().take(), answer)
}

/// Sets the node side's hook: at `point` of volume `first`, `second` runs on
/// a thread of its own, and the hook returns once it has finished or waits
/// for a turn. Returns what the hook saw, and the second call's thread.
fn start_at<T: Send + 'static>(
    side: &Arc<NodeSide>,
    point: &'static str,
    first: &str,
    second: impl FnOnce() -> T + Send + 'static,
) -> (Seen, SecondThread<T>) {
    let (tx, rx) = mpsc::channel::<Second<()>>();
    let tx = Mutex::new(tx);
    let rx = Mutex::new(rx);
    let seen = Arc::new(Mutex::new(None));
    let thread = Arc::new(Mutex::new(None));
    let second = Mutex::new(Some(second));
    let (first, seen2, thread2) = (first.to_string(), seen.clone(), thread.clone());
    let hook: crate::node::TestHook = Arc::new(move |at: &str, id: &str| {
        if at == "turn-wait" {
            let _ = tx.lock().unwrap().send(Second::Waits);
            return;
        }
        if at != point || id != first {
            return;
        }
        let Some(f) = second.lock().unwrap().take() else {
            return;
        };
        let done = tx.lock().unwrap().clone();
        *thread2.lock().unwrap() = Some(std::thread::spawn(move || {
            let r = f();
            let _ = done.send(Second::Done(()));
            r
        }));
        // Bounded, so that a second call stuck behind the first (which
        // cannot go on before this returns) fails the test instead of
        // hanging it: nothing seen.
        *seen2.lock().unwrap() = rx.lock().unwrap().recv_timeout(STUCK).ok();
    });
    *side.hook.lock().unwrap() = Some(hook);
    (seen, thread)
}

/// A publish between its claim of the target and its bind, and an unstage
/// of the same volume started there: the unstage waits for the publish's
/// bind and is then refused (the volume is published), so the publish's
/// target is bound to a volume still staged. Before, the unstage ran in
/// between and answered OK, and the publish then answered OK with its
/// target bound to a staging path no longer staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstage_waits_for_a_publish_of_the_volume() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let id = s.create("v").await;
    Csi::node_stage_volume(&s.plugin, s.stage_req(&id, "v"))
        .await
        .unwrap();
    let side = s.side().clone();
    let (side2, staging) = (side.clone(), s.staging("v"));
    let unstage_id = id.clone();
    let (seen, thread) = start_at(&side, "publish-bind", &id, move || {
        side2.unstage(&unstage_id, &staging)
    });
    let published = Csi::node_publish_volume(&s.plugin, s.publish_req(&id, "v")).await;
    let (seen, unstaged) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Waits)),
        "the unstage did not wait for the publish: {seen:?}, publish {published:?}, \
         unstage {unstaged:?}"
    );
    published.unwrap();
    assert_eq!(
        unstaged.unwrap_err().code(),
        Code::FailedPrecondition,
        "the unstage of a published volume"
    );
    assert!(side.staged_at(&id).is_some());
    assert!(csi_node::is_mount_point(&s.target("v")).unwrap());
    assert!(csi_node::is_mount_point(&s.staging("v")).unwrap());
    s.teardown(&id, "v").await;
}

/// A stage of volume A in its turn does not hold up a publish of volume B:
/// the publish, started in A's stage, finishes while A's stage is still in
/// its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_of_one_volume_does_not_hold_up_a_publish_of_another() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let a = s.create("a").await;
    let b = s.create("b").await;
    Csi::node_stage_volume(&s.plugin, s.stage_req(&b, "b"))
        .await
        .unwrap();
    let side = s.side().clone();
    let (plugin, req) = (s.plugin.clone(), s.publish_req(&b, "b"));
    let (seen, thread) = start_at(&side, "stage", &a, move || {
        block_on(Csi::node_publish_volume(&plugin, req))
    });
    Csi::node_stage_volume(&s.plugin, s.stage_req(&a, "a"))
        .await
        .unwrap();
    let (seen, published) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Done(()))),
        "the publish of b waited for the stage of a: {seen:?}"
    );
    published.unwrap();
    assert!(csi_node::is_mount_point(&s.target("b")).unwrap());
    s.teardown(&b, "b").await;
    s.side().unstage(&a, &s.staging("a")).unwrap();
}

/// An expand of a volume started while a publish of it holds its turn
/// waits for the turn (an unstage in its turn cannot take the device apart
/// under the resize). Before, it ran at once, whatever held the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expand_waits_for_the_turn_of_the_volume() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let id = s.create("v").await;
    Csi::node_stage_volume(&s.plugin, s.stage_req(&id, "v"))
        .await
        .unwrap();
    let side = s.side().clone();
    let req = s.expand_req(&id, "v");
    // The driver's own call, as a program that uses the driver without a
    // `Plugin` makes it (the `Plugin` refuses a second call of a volume in
    // progress with ABORTED; the admin socket's rebuild and fail-drive do
    // not go through it).
    let driver = s.driver.clone();
    let (seen, thread) = start_at(&side, "publish-bind", &id, move || {
        block_on(NodeExpander::node_expand_volume(&driver, req))
    });
    Csi::node_publish_volume(&s.plugin, s.publish_req(&id, "v"))
        .await
        .unwrap();
    let (seen, expanded) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Waits)),
        "the expand did not wait for the publish: {seen:?}, expand {expanded:?}"
    );
    expanded.unwrap();
    s.teardown(&id, "v").await;
}

/// An unstage of volume A, parked in its turn before it takes A apart,
/// does not hold up a publish of volume B. Before, the unstage held the
/// node side's map across its unmount, detach and FUSE unmount, and the
/// publish of B waited for all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstage_of_one_volume_does_not_hold_up_a_publish_of_another() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let (a, b) = s.stage_two().await;
    let side = s.side().clone();
    let (seen, thread) = s.publish_at("unstage", &a, &b);
    side.unstage(&a, &s.staging("a")).unwrap();
    let (seen, published) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Done(()))),
        "the publish of b waited for the unstage of a: {seen:?} (None: stuck behind it)"
    );
    published.unwrap();
    assert!(side.staged_at(&a).is_none());
    assert!(!csi_node::is_mount_point(&s.staging("a")).unwrap_or(false));
    assert!(csi_node::is_mount_point(&s.target("b")).unwrap());
    s.teardown(&b, "b").await;
}

/// An expand of volume A at its `cryptsetup resize` (in A's turn) does not
/// hold up a publish of volume B. Before, the resize held the node side's
/// map, and every call of another volume waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expand_of_one_volume_does_not_hold_up_a_publish_of_another() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let (a, b) = s.stage_two().await;
    let side = s.side().clone();
    let (seen, thread) = s.publish_at("resize-encryption", &a, &b);
    let expanded = NodeExpander::node_expand_volume(&s.driver, s.expand_req(&a, "a")).await;
    let (seen, published) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Done(()))),
        "the publish of b waited for the expand of a: {seen:?} (None: stuck behind it)"
    );
    expanded.unwrap();
    published.unwrap();
    assert!(csi_node::is_mount_point(&s.target("b")).unwrap());
    s.teardown(&b, "b").await;
    side.unstage(&a, &s.staging("a")).unwrap();
}

/// Creates, stages (as `v`) and degrades a mirrored volume: the drive of
/// its member 0 failed in the composer and the engine, and its repair plan
/// applied. Returns its id and the record to rebuild it to.
async fn degraded_mirror(s: &Setup) -> (String, composer_core::VolumeRecord) {
    let id = s
        .create_with("v", &[("type", "hdd"), ("redundancy", "true")])
        .await;
    Csi::node_stage_volume(&s.plugin, s.stage_req(&id, "v"))
        .await
        .unwrap();
    let c = s.driver.composer();
    let drive = c.get(&id).unwrap().record.members[0].drive.clone();
    c.mark(&drive, composer_core::Health::Failed).unwrap();
    assert_eq!(s.side().fail_drive(&drive).unwrap(), vec![id.clone()]);
    c.apply_repair(&drive).unwrap();
    let rec = c.get(&id).unwrap().record;
    assert_ne!(
        rec.members[0].drive, drive,
        "a replacement drive was chosen"
    );
    (id, rec)
}

/// A throttle for the rebuilds below: slow, as on a loaded node. The tests
/// do not depend on it: the second call starts in a step of the copy, which
/// waits for it.
const SLOW: Option<u64> = Some(8 << 20);

/// A publish of a volume started while its (throttled) rebuild copies
/// finishes during the copy: the rebuild holds the volume's turn only to
/// change the node's record. Before, the rebuild held the turn for the
/// whole copy and the publish waited for it to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_completes_while_the_volume_rebuilds() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let (id, rec) = degraded_mirror(&s).await;
    let side = s.side().clone();
    let (plugin, req) = (s.plugin.clone(), s.publish_req(&id, "v"));
    let (seen, thread) = start_at(&side, "rebuild", &id, move || {
        block_on(Csi::node_publish_volume(&plugin, req))
    });
    let rebuilt = side.rebuild_to(&rec, SLOW, &|_, _| {});
    let (seen, published) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Done(()))),
        "the publish waited for the rebuild: {seen:?}, publish {published:?}"
    );
    published.unwrap();
    assert_eq!(rebuilt.unwrap(), vec![0]);
    assert!(csi_node::is_mount_point(&s.target("v")).unwrap());
    let cond = side.condition(&id).unwrap();
    assert!(!cond.abnormal, "rebuilt in full: {cond:?}");
    s.teardown(&id, "v").await;
}

/// An unstage of a volume started while its rebuild copies is refused
/// ABORTED at once (retryable), and changes nothing: the rebuild finishes
/// on the staged volume, and the CO's retry then unstages it and leaves
/// nothing behind. Before, the unstage waited for the whole rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstage_during_a_rebuild_is_refused_aborted_and_retried_after_it() {
    if !can_mount() {
        return;
    }
    let s = Setup::new();
    let (id, rec) = degraded_mirror(&s).await;
    let side = s.side().clone();
    let unstage_req = || NodeUnstageVolumeRequest {
        volume_id: VolumeId::new(&id).unwrap(),
        staging_target_path: np(&s.staging("v")),
    };
    let (plugin, req) = (s.plugin.clone(), unstage_req());
    let (seen, thread) = start_at(&side, "rebuild", &id, move || {
        block_on(Csi::node_unstage_volume(&plugin, req))
    });
    let rebuilt = side.rebuild_to(&rec, SLOW, &|_, _| {});
    let (seen, unstaged) = finish(&side, &seen, &thread);
    assert!(
        matches!(seen, Some(Second::Done(()))),
        "the unstage waited for the rebuild: {seen:?}, unstage {unstaged:?}"
    );
    let e = unstaged.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    assert!(e.to_string().contains("rebuilding member 0"), "{e}");
    // Nothing was taken apart under the copy: it finished on the volume.
    assert_eq!(rebuilt.unwrap(), vec![0]);
    assert!(side.staged_at(&id).is_some());
    assert!(csi_node::is_mount_point(&s.staging("v")).unwrap());
    let cond = side.condition(&id).unwrap();
    assert!(!cond.abnormal, "rebuilt in full: {cond:?}");
    // The CO's retry, after the rebuild; and again (idempotent).
    for _ in 0..2 {
        Csi::node_unstage_volume(&s.plugin, unstage_req())
            .await
            .unwrap();
    }
    assert!(side.staged_at(&id).is_none() && side.volume(&id).is_none());
    assert!(!csi_node::is_mount_point(&s.staging("v")).unwrap_or(false));
    assert!(
        !s.dir.path().join("run").join(&id).exists(),
        "FUSE dir left"
    );
}

/// A mirror assembled without exposing it, whose member 0's drive failed
/// and was replaced in the record: its id, its record to rebuild it to and
/// its engine volume.
fn unexposed_degraded_mirror(
    s: &Setup,
) -> (
    String,
    composer_core::VolumeRecord,
    Arc<raid_engine::Volume>,
) {
    let c = s.driver.composer().clone();
    let side = s.side().clone();
    let params: std::collections::BTreeMap<String, String> = [("type", "slice")]
        .into_iter()
        .chain([("redundancy", "true")])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let range = csi_types::types::CapacityRange::new(Some(64 << 20), None).unwrap();
    let rec = c
        .create("v", &params, range, true, true, None)
        .unwrap()
        .record;
    let id = rec.id.clone();
    let v = side.assemble_unexposed(&rec).unwrap();
    let drive = rec.members[0].drive.clone();
    c.mark(&drive, composer_core::Health::Failed).unwrap();
    assert_eq!(side.fail_drive(&drive).unwrap(), vec![id.clone()]);
    c.apply_repair(&drive).unwrap();
    let rec = c.get(&id).unwrap().record;
    assert_ne!(rec.members[0].drive, drive);
    (id, rec, v)
}

/// A rebuild still copying when the node process stops: the shutdown stops
/// it (the rebuild answers the stop), waits for it to end, and flushes the
/// volume; the new member stays a spare out of sync, to be copied again by
/// the next rebuild. Before, the shutdown emptied the node's record under
/// the rebuild, which went on copying during the flush and past it. Runs
/// through the engine alone (no mounts: the shutdown leaves a volume as
/// it is, to end with the process).
#[test]
fn a_shutdown_stops_a_running_rebuild_and_waits_for_it() {
    let s = Setup::new();
    let side = s.side().clone();
    let (id, rec, v) = unexposed_degraded_mirror(&s);

    // The rebuild waits at its first step until told to go on; the hook
    // says when the shutdown has stopped the rebuilds.
    let (at_tx, at_rx) = mpsc::channel::<&'static str>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (at_tx, go_rx) = (Mutex::new(at_tx), Mutex::new(go_rx));
    let first = std::sync::atomic::AtomicBool::new(true);
    let hook_id = id.clone();
    let hook: crate::node::TestHook = Arc::new(move |at: &str, vol: &str| {
        if at == "shutdown-interrupted" {
            let _ = at_tx.lock().unwrap().send("interrupted");
        } else if at == "rebuild"
            && vol == hook_id
            && first.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = at_tx.lock().unwrap().send("step");
            let _ = go_rx.lock().unwrap().recv_timeout(STUCK);
        }
    });
    *side.hook.lock().unwrap() = Some(hook);
    let rebuild = {
        let side = side.clone();
        std::thread::spawn(move || side.rebuild_to(&rec, None, &|_, _| {}))
    };
    assert_eq!(at_rx.recv_timeout(STUCK), Ok("step"));
    let shutdown = {
        let side = side.clone();
        std::thread::spawn(move || side.shutdown(STUCK))
    };
    let interrupted = at_rx.recv_timeout(STUCK);
    go_tx.send(()).unwrap();
    let rebuilt = rebuild.join().unwrap();
    let report = shutdown.join().unwrap();
    *side.hook.lock().unwrap() = None;
    assert_eq!(
        interrupted,
        Ok("interrupted"),
        "the shutdown stopped nothing"
    );
    let e = rebuilt.expect_err("the rebuild went on copying through the shutdown");
    assert!(e.to_string().contains("stopped after"), "{e}");
    assert_eq!(report.rebuilds_stopped, vec![id.clone()], "{report:?}");
    assert_eq!(report.flushed, vec![id.clone()], "{report:?}");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        v.status()[0].state,
        raid_engine::MemberState::Failed,
        "{:?}",
        v.status()
    );
}

/// A progress callback that panics part way through a rebuild's copy: the
/// panic goes to the caller, and the volume is not left marked as
/// rebuilding. Before, the mark stayed, and every unstage of the volume
/// was refused ABORTED for as long as the node ran.
#[test]
fn a_rebuild_that_panics_leaves_no_mark_that_refuses_the_unstage() {
    let s = Setup::new();
    let side = s.side().clone();
    let (id, rec, v) = unexposed_degraded_mirror(&s);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        side.rebuild_to(&rec, None, &|_, _| panic!("a progress callback's bug"))
    }));
    assert!(panicked.is_err(), "the callback's panic was swallowed");
    drop(v);
    side.unstage(&id, Path::new("")).unwrap();
    assert!(side.volume(&id).is_none());
}

/// [`unexposed_degraded_mirror`] with data written, whose rebuild was
/// stopped by a failure of the new member's drive (`fail_drive`) at the
/// copy's first step: its id, record, engine volume and data.
fn mirror_whose_new_drive_failed_during_the_copy(
    s: &Setup,
) -> (
    String,
    composer_core::VolumeRecord,
    Arc<raid_engine::Volume>,
    Vec<u8>,
) {
    let side = s.side().clone();
    let (id, rec, v) = unexposed_degraded_mirror(s);
    let size = v.size() as usize;
    let data: Vec<u8> = (0..size)
        .map(|i| (i ^ (i >> 12) ^ (i >> 20)) as u8)
        .collect();
    v.write_at(&data, 0).unwrap();
    v.flush().unwrap();
    let new = rec.members[0].drive.clone();
    let failed = Arc::new(Mutex::new(None));
    let first = std::sync::atomic::AtomicBool::new(true);
    let (hook_id, hook_failed) = (id.clone(), failed.clone());
    let hook_side = Arc::downgrade(&side);
    let hook: crate::node::TestHook = Arc::new(move |at: &str, vol: &str| {
        if at == "rebuild"
            && vol == hook_id
            && first.swap(false, std::sync::atomic::Ordering::SeqCst)
            && let Some(side) = hook_side.upgrade()
        {
            let r = side.fail_drive(&new).map_err(|e| e.to_string());
            *hook_failed.lock().unwrap() = Some(r);
        }
    });
    *side.hook.lock().unwrap() = Some(hook);
    let rebuilt = side.rebuild_to(&rec, None, &|_, _| {});
    *side.hook.lock().unwrap() = None;
    assert_eq!(
        failed.lock().unwrap().take(),
        Some(Ok(vec![id.clone()])),
        "the drive was not failed during the copy"
    );
    let e = rebuilt.expect_err("the rebuild completed a member failed during its copy");
    assert!(e.to_string().contains("failed during its rebuild"), "{e}");
    (id, rec, v, data)
}

/// `composer admin rebuild DRIVE` on `side`.
fn admin_rebuild(s: &Setup, drive: &str) -> serde_json::Value {
    crate::admin::handle_with(
        s.driver.composer(),
        Some(s.side()),
        crate::admin::Request::Rebuild {
            target: drive.to_string(),
            max_bytes_per_sec: None,
        },
        &|_| {},
        None,
    )
}

/// The new member's drive failed (`fail_drive`) while the member's rebuild
/// copies: the rebuild answers an error naming the failure, the member
/// stays failed and the volume degraded (the engine no longer makes a
/// member failed during its copy active at the end), and the operator's
/// rebuild of that drive moves the member to a third drive and completes
/// it: every byte reads back from the rebuilt member alone. Runs through
/// the engine alone (no mounts).
#[test]
fn a_member_failed_during_its_rebuild_stays_failed_until_a_rebuild_elsewhere() {
    let s = Setup::new();
    let side = s.side().clone();
    let c = s.driver.composer().clone();
    let (id, rec, v, data) = mirror_whose_new_drive_failed_during_the_copy(&s);
    let new = rec.members[0].drive.clone();
    assert_eq!(
        v.status()[0].state,
        raid_engine::MemberState::Failed,
        "{:?}",
        v.status()
    );
    let cond = side.condition(&id).unwrap();
    assert!(cond.abnormal, "reported whole: {cond:?}");

    // The operator fails the drive in the inventory too and rebuilds it:
    // the member moves to a third drive and is copied in full.
    c.mark(&new, composer_core::Health::Failed).unwrap();
    let retry = admin_rebuild(&s, &new);
    assert!(retry.get("error").is_none(), "{retry}");
    let third = c.get(&id).unwrap().record.members[0].drive.clone();
    assert!(third != new && third != rec.members[1].drive, "{third}");
    assert_eq!(
        retry["ok"]["rebuilt"],
        serde_json::json!([{ "volume": id, "member": 0, "drive": third }]),
        "{retry}"
    );
    assert_eq!(
        v.status()[0].state,
        raid_engine::MemberState::Active,
        "{:?}",
        v.status()
    );
    assert!(side.unsynced_volumes().is_empty());
    let cond = side.condition(&id).unwrap();
    assert!(!cond.abnormal, "{cond:?}");

    // Every byte comes from the rebuilt member alone.
    v.fail_member(1).unwrap();
    let mut back = vec![0u8; data.len()];
    v.read_at(&mut back, 0).unwrap();
    let bad = back.iter().zip(&data).position(|(x, y)| x != y);
    assert_eq!(bad, None, "the rebuilt member differs at byte {bad:?}");
    drop(v);
    side.unstage(&id, Path::new("")).unwrap();
    assert!(side.volume(&id).is_none());
}

/// After the new member's drive failed during its copy and was marked
/// failed in the inventory, a rebuild of another failed drive (the first
/// drive again: the operator's retry of the command that failed) does not
/// copy the member onto the failed drive: it names the member as waiting
/// for a rebuild of its drive, and leaves it failed. Before, every
/// rebuild copied a member whose copy had not finished again in place,
/// onto a drive the operator had failed, and reported the volume whole.
#[test]
fn a_rebuild_does_not_copy_onto_a_drive_failed_during_the_copy() {
    let s = Setup::new();
    let side = s.side().clone();
    let c = s.driver.composer().clone();
    let (id, rec, v, _) = mirror_whose_new_drive_failed_during_the_copy(&s);
    let new = rec.members[0].drive.clone();
    c.mark(&new, composer_core::Health::Failed).unwrap();
    let first: Vec<String> = c
        .drive_report()
        .iter()
        .filter(|r| r.health == composer_core::Health::Failed && r.id != new)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    let answer = admin_rebuild(&s, &first[0]);
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(answer["ok"]["rebuilt"], serde_json::json!([]), "{answer}");
    assert_eq!(
        answer["ok"]["waiting"],
        serde_json::json!([{ "volume": id, "member": 0, "drive": new }]),
        "{answer}"
    );
    assert_eq!(
        v.status()[0].state,
        raid_engine::MemberState::Failed,
        "{:?}",
        v.status()
    );
    assert_eq!(side.unsynced_volumes(), vec![id.clone()]);
    assert!(side.condition(&id).unwrap().abnormal);
    drop(v);
    side.unstage(&id, Path::new("")).unwrap();
}
