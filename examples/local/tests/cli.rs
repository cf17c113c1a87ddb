//! The binary's error convention: one line per error on stderr, exit code
//! 2 for bad input (nothing created), 1 for a failure of the work.

use std::process::{Command, Output};

fn local(args: &[&str], state_dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_local"))
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("CSI_ENDPOINT")
        .output()
        .unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_bad_endpoint_is_bad_input_and_creates_no_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = local(&["--endpoint", "http://nowhere", "--node-id", "n1"], &state);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line, printed once: {lines:?}");
    assert!(
        lines[0].starts_with("local: --endpoint: invalid endpoint"),
        "{lines:?}"
    );
    assert!(
        !state.exists(),
        "the state directory was created before the endpoint was checked"
    );
}

#[test]
fn a_bad_driver_name_is_bad_input_with_a_grammatical_message() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let out = local(
        &[
            "--endpoint",
            &endpoint,
            "--node-id",
            "n1",
            "--driver-name=bad-",
        ],
        &state,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The flag and the rule, nothing about a response: the user's value is at fault, not the
    // driver's code.
    assert!(
        lines[0].starts_with("local: --driver-name: the plugin name must follow domain name notation: begin and end with an alphanumeric"),
        "{lines:?}"
    );
    assert!(lines[0].contains(r#"(got "bad-")"#), "{lines:?}");
    assert!(
        !lines[0].contains("internal error") && !lines[0].contains("built by the driver"),
        "{lines:?}"
    );
    assert!(!state.exists());
}

#[test]
fn a_bad_node_id_names_the_flag_and_the_rule_not_a_wire_field() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let long = "n".repeat(257);
    for (value, rule) in [
        ("", "must not be empty"),
        (long.as_str(), "must be at most 256 bytes, got 257"),
    ] {
        let out = local(&["--endpoint", &endpoint, "--node-id", value], &state);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines, [format!("local: --node-id: {rule}")]);
        assert!(!state.exists());
    }
}

#[test]
fn a_state_directory_that_cannot_be_created_is_a_failure_of_the_work() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the state directory's parent should be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let out = local(
        &["--endpoint", &endpoint, "--node-id", "n1"],
        &blocker.join("state"),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "printed once, on one line: {lines:?}");
    assert!(lines[0].starts_with("local: "), "{lines:?}");
}

#[test]
fn a_state_directory_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, b"not a directory").unwrap();
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let out = local(&["--endpoint", &endpoint, "--node-id", "n1"], &file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // It used to say "creating STATE: File exists (os error 17)".
    assert_eq!(
        stderr_lines(&out),
        vec![format!(
            "local: state directory {} exists and is not a directory",
            file.display()
        )]
    );
}

#[test]
fn a_second_driver_on_the_same_state_directory_is_refused() {
    // Two drivers on one directory would each replay and clear the journal the other appends
    // to, and collect the other's new volumes as garbage: the second is refused before it
    // reads or changes anything.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("first.sock");
    let mut first = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(["--node-id", "n1", "--endpoint"])
        .arg(format!("unix://{}", socket.display()))
        .arg("--state-dir")
        .arg(&state)
        .env_remove("CSI_ENDPOINT")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Ready once its socket exists (it opens the state before it listens).
    while !socket.exists() {
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the first driver exited with {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let journal = std::fs::read(state.join("journal")).unwrap();
    // The same endpoint too: before the lock, the second driver opened (and could change) the
    // state and only then found the socket in use; it never serves.
    let endpoint = format!("unix://{}", socket.display());
    let out = local(&["--endpoint", &endpoint, "--node-id", "n1"], &state);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0],
        format!(
            "local: state directory {} is in use by another local driver (it holds the lock on {}); \
             stop that driver or give this one its own --state-dir",
            state.display(),
            state.join("lock").display()
        )
    );
    assert!(still_running, "the first driver stopped");
    assert!(socket.exists(), "the first driver's socket is gone");
    assert_eq!(
        std::fs::read(state.join("journal")).unwrap(),
        journal,
        "the refused driver changed the journal"
    );
}

#[test]
fn bad_flag_values_are_one_line_naming_the_flag_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    // A state directory that cannot be made: a flag value that got through would end the run
    // with status 1 there, rather than serve.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let state = blocker.join("state");
    let endpoint = format!("unix://{}/csi.sock", dir.path().display());
    let cases: &[(&[&str], &str)] = &[
        // Taken for an unknown flag before, with a usage text over four lines.
        (
            &["--capacity", "-1"],
            "local: invalid value '-1' for '--capacity <CAPACITY>': size \"-1\": must not be negative (see --help)",
        ),
        (
            &["--capacity", "1.5Xi"],
            "local: invalid value '1.5Xi' for '--capacity <CAPACITY>': size \"1.5Xi\": unknown unit \"Xi\" \
             (use B, kB, MB, GB, TB, PB, EB or KiB, MiB, GiB, TiB, PiB, EiB) (see --help)",
        ),
        // "invalid digit found in string" before.
        (
            &["--max-volumes-per-node", "-3"],
            "local: invalid value '-3' for '--max-volumes-per-node <MAX_VOLUMES_PER_NODE>': \
             must not be negative (0: no limit) (see --help)",
        ),
        // A second value for a key replaced the first without a word.
        (
            &["--topology", "zone=a", "--topology", "zone=b"],
            "local: --topology \"zone=b\": key \"zone\" is already given (\"zone=a\"); each key takes one value",
        ),
        (
            &["--tool-timeout", "losetup"],
            "local: --tool-timeout \"losetup\": expected NAME=DURATION (e.g. mkfs.xfs=15m)",
        ),
        (
            &["--tool-timeout", "mkfs=5m"],
            "local: --tool-timeout \"mkfs=5m\": unknown tool \"mkfs\"; the tools are blkid, mkfs.ext4, \
             mkfs.xfs, e2fsck, resize2fs, xfs_growfs, losetup, wipefs",
        ),
        (
            &["--tool-timeout", "losetup=90"],
            "local: --tool-timeout \"losetup=90\": duration \"90\": a duration is a whole number of ms, s, m \
             or h (e.g. 90s, 15m)",
        ),
        (
            &["--tool-timeout", "blkid=0s"],
            "local: --tool-timeout \"blkid=0s\": duration \"0s\": must be more than zero (a zero limit fails \
             every call that runs the tool)",
        ),
        (
            &["--tool-timeout", "blkid=1m", "--tool-timeout", "blkid=2m"],
            "local: --tool-timeout \"blkid=2m\": tool \"blkid\" is already given; each tool takes one limit",
        ),
    ];
    for (args, expect) in cases {
        let mut all = vec!["--endpoint", &endpoint, "--node-id", "n1"];
        all.extend_from_slice(args);
        let out = local(&all, &state);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(stderr_lines(&out), vec![expect.to_string()], "{args:?}");
        assert!(!state.exists(), "{args:?} created the state directory");
    }
}
