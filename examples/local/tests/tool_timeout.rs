//! `Config::tool_timeouts` (the `--tool-timeout` flag) reaches csi-node: opening the driver sets
//! each named tool's limit, and leaves the others alone.
//! A test binary of its own: the tool settings it changes are process-wide.

use std::time::Duration;

use csi_node::Tool;
use local::{Config, LocalDriver};

#[test]
fn the_configured_tool_timeouts_are_set_when_the_driver_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::with_state_dir(dir.path().join("state"));
    cfg.tool_timeouts =
        local::config::parse_tool_timeouts(&["mkfs.xfs=25m".into(), "losetup=1500ms".into()])
            .unwrap();
    assert_eq!(Tool::MkfsXfs.timeout(), Tool::MkfsXfs.default_timeout());
    let _driver = LocalDriver::open(cfg).unwrap();
    assert_eq!(Tool::MkfsXfs.timeout(), Duration::from_secs(25 * 60));
    assert_eq!(Tool::Losetup.timeout(), Duration::from_millis(1500));
    assert_eq!(Tool::Blkid.timeout(), Tool::Blkid.default_timeout());
}

#[test]
fn a_driver_that_fails_to_open_leaves_the_tool_timeouts_as_they_were() {
    // Tools the other test here leaves alone.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), b"not json").unwrap();
    let mut cfg = Config::with_state_dir(state);
    cfg.tool_timeouts =
        local::config::parse_tool_timeouts(&["e2fsck=7m".into(), "wipefs=3s".into()]).unwrap();
    Tool::E2fsck.set_timeout(Duration::from_secs(99));
    let e = LocalDriver::open(cfg).err().unwrap();
    assert!(e.contains("state.json"), "{e}");
    assert_eq!(Tool::E2fsck.timeout(), Duration::from_secs(99));
    assert_eq!(Tool::Wipefs.timeout(), Tool::Wipefs.default_timeout());
}
