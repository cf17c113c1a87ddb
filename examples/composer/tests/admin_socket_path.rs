//! `--admin-socket` follows the rule of the CSI endpoint (`--endpoint`), by
//! the one function csi-types serves its socket with: a path too long for a
//! unix socket is refused naming the limit, the socket's own directory is
//! created but not a chain of missing ones, a stale socket is removed, and a
//! live socket or a file that is not a socket is refused and left alone.
//!
//! Before, the admin socket had its own copy of the stale/live rule without
//! the length check or the directory rule: a long path failed later at
//! `bind` with "path must be shorter than SUN_LEN", and a missing directory
//! was an error of `bind` rather than created as the endpoint's is.

use composer::admin::prepare_socket;

#[test]
fn a_path_too_long_for_a_unix_socket_says_the_limit_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("new-dir").join("s".repeat(120));
    let e = prepare_socket(&long).unwrap_err();
    assert!(e.starts_with("--admin-socket: "), "{e}");
    assert!(
        e.ends_with(
            "a unix socket path must be shorter than 108 bytes (sun_path): use a shorter directory"
        ),
        "{e}"
    );
    assert!(!dir.path().join("new-dir").exists());
}

#[test]
fn the_sockets_own_directory_is_made_but_not_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("run");
    prepare_socket(&own.join("admin.sock")).unwrap();
    assert!(own.is_dir());

    let typo = dir.path().join("rnu/composer/admin.sock");
    let e = prepare_socket(&typo).unwrap_err();
    assert!(e.starts_with("--admin-socket: "), "{e}");
    assert!(e.contains("does not exist either (a typo?)"), "{e}");
    assert!(!dir.path().join("rnu").exists());
}

#[test]
fn a_stale_socket_is_removed_and_a_live_one_or_a_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    prepare_socket(&stale).unwrap();
    assert!(!stale.exists());

    let live = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let e = prepare_socket(&live).unwrap_err();
    assert!(e.contains("another process serves this socket"), "{e}");
    assert!(std::os::unix::net::UnixStream::connect(&live).is_ok());

    let file = dir.path().join("state.redb");
    std::fs::write(&file, b"precious").unwrap();
    let e = prepare_socket(&file).unwrap_err();
    assert!(e.contains("exists and is not a socket; not removed"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}
