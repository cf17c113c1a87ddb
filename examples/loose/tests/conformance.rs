//! The `loose` binary over a real unix socket: the conformance suite passes
//! it with zero failures, reporting what is loose as warnings, and the SDK's
//! typed client accepts its tolerated oddities.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use csi_testkit::{Config, Outcome, Suite};
use csi_types::client::Client;
use csi_types::{
    Csi, RawCsi,
    controller::{ControllerGetVolumeRequest, CreateVolumeRequest, ListVolumesRequest},
    ids::VolumeName,
    proto,
    redact::Secrets,
    types::{AccessMode, CapacityRange, Map, VolumeCapability},
};

/// The driver process, stopped by PID (SIGTERM) when dropped.
struct Driver {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let child = Command::new(env!("CARGO_BIN_EXE_loose"))
            .args(["--endpoint", &endpoint, "--node-id", "loose-node"])
            .spawn()
            .unwrap();
        // Wait until the socket accepts (its file exists a moment before
        // it listens), without a timed assertion: a driver that never
        // listens fails the first call below.
        for _ in 0..6000 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Driver {
            child,
            endpoint,
            _dir: dir,
        }
    }

    fn stop(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_passes_the_loose_driver_with_warnings_only() {
    let mut d = Driver::start();
    let client = Client::connect(&d.endpoint).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut config = Config::new(work.path());
    config.block_targets_may_be_files = true;
    config.proptest_cases = 4;
    let report = Suite::new(config, Arc::new(client.clone()), Arc::new(client))
        .run()
        .await;
    for r in &report.results {
        println!("{r}");
        for w in &r.warnings {
            println!("  WARN {w}");
        }
    }
    println!("{}", report.summary());
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(report.passed() > 40, "{}", report.summary());
    // What is loose is reported, and the cases still pass.
    let warned = |case: &str, text: &str| {
        let r = report.results.iter().find(|r| r.name == case).unwrap();
        assert_eq!(r.outcome, Outcome::Pass, "{case}");
        assert!(
            r.warnings.iter().any(|w| w.contains(text)),
            "{case}: no warning about {text}: {:?}",
            r.warnings
        );
    };
    warned(
        "controller/list_volumes/published_nodes",
        "published_node_ids",
    );
    warned(
        "controller/get_volume/volume_condition",
        "volume_condition.message",
    );
    warned(
        "node/get_volume_stats/volume_condition",
        "volume_condition.message",
    );
    warned("controller/unpublish/unknown_volume", "answered NOT_FOUND");
    warned(
        "node/get_volume_stats/unknown_volume_relative_path",
        "answered INVALID_ARGUMENT",
    );
    assert_eq!(d.stop(), Some(0), "loose exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_accepts_tolerated_oddities() {
    let d = Driver::start();
    let c = Client::connect(&d.endpoint).await.unwrap();
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let v = Csi::create_volume(
        &c,
        CreateVolumeRequest {
            name: VolumeName::new("odd").unwrap(),
            capacity_range: Some(CapacityRange::exactly(1 << 20)),
            volume_capabilities: vec![cap.clone()],
            parameters: Map::new(),
            secrets: Secrets::default(),
            volume_content_source: None,
            accessibility_requirements: None,
            mutable_parameters: Map::new(),
        },
    )
    .await
    .unwrap()
    .volume;
    // Ids derived from names: allowed, the id is opaque.
    assert_eq!(v.volume_id.as_str(), "odd");
    RawCsi::raw_controller_publish_volume(
        &c,
        proto::ControllerPublishVolumeRequest {
            volume_id: "odd".into(),
            node_id: "loose-node".into(),
            volume_capability: Some(cap.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // On the wire: the real node, then an empty id, and no condition message.
    let raw = RawCsi::raw_controller_get_volume(
        &c,
        proto::ControllerGetVolumeRequest {
            volume_id: "odd".into(),
        },
    )
    .await
    .unwrap();
    let status = raw.status.unwrap();
    assert_eq!(status.published_node_ids, ["loose-node", ""]);
    assert_eq!(status.volume_condition.unwrap().message, "");

    // Typed: accepted, the empty id ignored, the empty message kept.
    let g = Csi::controller_get_volume(
        &c,
        ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        },
    )
    .await
    .unwrap();
    let ids: Vec<&str> = g
        .status
        .published_node_ids
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(ids, ["loose-node"]);
    assert_eq!(g.status.volume_condition.unwrap().message, "");
    let list = Csi::list_volumes(&c, ListVolumesRequest::default())
        .await
        .unwrap();
    let status = list.entries[0].status.as_ref().unwrap();
    assert_eq!(status.published_node_ids.len(), 1);
}

/// Bad arguments: exit status 2 and one line on stderr naming the problem, never a panic.
#[test]
fn bad_arguments_are_one_line_and_exit_status_2() {
    use std::os::unix::ffi::OsStrExt;
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_loose"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        stderr
    };
    let os = |s: &str| std::ffi::OsStr::new(s).to_owned();
    // Not UTF-8: `std::env::args` used to panic on it.
    let bad = std::ffi::OsStr::from_bytes(b"/tmp/\xff.sock").to_owned();
    let e = run(&[&os("--endpoint"), &bad]);
    assert_eq!(
        e.trim_end(),
        r#"loose: argument "/tmp/\xFF.sock" is not valid UTF-8"#
    );
    let e = run(&[&os("--endpoint")]);
    assert_eq!(e.trim_end(), "loose: --endpoint needs a value");
    let e = run(&[&os("--endpoint"), &os("unix://relative.sock")]);
    assert!(
        e.contains("--endpoint must be unix:///absolute/path"),
        "{e}"
    );
    let e = run(&[
        &os("--endpoint"),
        &os("unix:///tmp/x.sock"),
        &os("--node-id"),
        &os(""),
    ]);
    assert_eq!(e.trim_end(), "loose: --node-id must be 1 to 256 bytes");
}
