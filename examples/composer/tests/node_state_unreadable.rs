//! A node process that finds its state file unreadable starts with nothing
//! staged, and keeps the file aside (`node-state.json.unreadable`) rather
//! than overwriting it at its first change: an operator can still read in
//! it what an earlier process staged and published. Before, the first
//! publish or stage replaced it. No root needed.

use composer::node::{Backend, NodeConfig, NodeSide};

#[test]
fn an_unreadable_state_file_is_kept_aside_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let garbage = b"{\"staged\": {\"vol-1\": {\"staging\": \"/s/vol-1\", truncated".to_vec();
    std::fs::write(run.join("node-state.json"), &garbage).unwrap();
    // A file of an earlier set-aside stays as it is.
    std::fs::write(run.join("node-state.json.unreadable"), b"older").unwrap();
    let side = NodeSide::new(NodeConfig {
        data_dir: dir.path().join("drives"),
        run_dir: run.clone(),
        backend: Backend::Userspace,
    });
    assert!(!side.is_staged("vol-1"));
    // A change writes a new state file ...
    assert!(
        side.claim_target(&dir.path().join("t"), "vol-2", false)
            .unwrap()
    );
    let now = std::fs::read_to_string(run.join("node-state.json")).unwrap();
    assert!(now.contains("vol-2"), "{now}");
    // ... and the unreadable one is still there to read.
    assert_eq!(
        std::fs::read(run.join("node-state.json.unreadable.1")).unwrap(),
        garbage
    );
    assert_eq!(
        std::fs::read(run.join("node-state.json.unreadable")).unwrap(),
        b"older"
    );
}
