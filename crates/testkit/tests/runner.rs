//! The `csi-conformance` runner over a real unix socket: its output format,
//! exit status and JUnit report.

mod common;

use std::process::Command;

use csi_testkit::memdriver::{MemDriver, MemDriverConfig};
use csi_types::RawCsi;

/// Serves `plugin` on a socket in `dir` from a background runtime; the
/// returned sender stops it.
fn serve(
    plugin: impl RawCsi + 'static,
    dir: &std::path::Path,
) -> (String, std::sync::mpsc::Sender<()>) {
    let endpoint = format!("unix://{}", dir.join("csi.sock").display());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (up_tx, up_rx) = std::sync::mpsc::channel::<()>();
    let ep = endpoint.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let _ = stop_rx.recv();
                let _ = tx.send(());
            });
            let path = ep.trim_start_matches("unix://").to_string();
            let server = tokio::spawn(async move {
                csi_types::server::serve(plugin, &ep, async {
                    let _ = rx.await;
                })
                .await
            });
            // A connection, not the file: the socket file exists a moment before the
            // server listens, and the runner refuses to start on a refused connection.
            while tokio::net::UnixStream::connect(&path).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let _ = up_tx.send(());
            server.await.unwrap().unwrap();
        });
    });
    up_rx.recv().unwrap();
    (endpoint, stop_tx)
}

fn runner(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_csi-conformance"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn runner_passes_the_memdriver_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, stop) = serve(
        MemDriver::new(MemDriverConfig::default()).plugin(),
        dir.path(),
    );
    let junit = dir.path().join("report.xml");
    let staging = dir.path().join("staging");
    let target = dir.path().join("target");
    let (code, out) = runner(&[
        "--endpoint",
        &endpoint,
        "--staging-dir",
        staging.to_str().unwrap(),
        "--target-dir",
        target.to_str().unwrap(),
        "--second-node-id",
        "memdriver-node-2",
        "--mutable-params",
        "iops=500",
        "--params",
        "tier=fast",
        "--block-targets-may-be-files",
        "--cases",
        "4",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    stop.send(()).unwrap();
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let (last, cases) = lines.split_last().unwrap();
    let n = csi_testkit::all_cases().len();
    assert_eq!(*last, format!("{n} passed, 0 failed, 0 skipped"));
    assert_eq!(cases.len(), n);
    assert!(cases.iter().all(|l| l.starts_with("PASS ")), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert!(
        xml.contains(&format!(
            "tests=\"{n}\" failures=\"0\" errors=\"0\" skipped=\"0\""
        )),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), n);
}

#[test]
fn runner_reports_failures_and_skips_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, stop) = serve(common::broken::plugin("loses-pages"), dir.path());
    let junit = dir.path().join("report.xml");
    let (code, out) = runner(&[
        "--endpoint",
        &endpoint,
        "--node-endpoint",
        &endpoint,
        "--staging-dir",
        dir.path().join("s").to_str().unwrap(),
        "--target-dir",
        dir.path().join("t").to_str().unwrap(),
        "--filter",
        "controller/",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    stop.send(()).unwrap();
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL controller/list_volumes/pagination: ")),
        "{out}"
    );
    // No --second-node-id and no --mutable-params: those cases skip and say why.
    assert!(
        out.contains("SKIP controller/publish/second_node: no second node id configured"),
        "{out}"
    );
    assert!(
        out.contains("SKIP controller/modify_volume/supported: no mutable parameters configured"),
        "{out}"
    );
    assert!(
        !out.contains("PASS node/"),
        "the filter keeps node cases out"
    );
    let last = out.lines().last().unwrap();
    let parts: Vec<&str> = last.split(", ").collect();
    // passed, failed, skipped, and the warnings when there are any (the
    // lost volume also shows across the change between pages, a warning).
    assert!(
        parts.len() == 3 || (parts.len() == 4 && parts[3].ends_with(" warnings")),
        "{last}"
    );
    assert!(
        parts[1].ends_with(" failed") && parts[1] != "0 failed",
        "{last}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<failure message=\"ListVolumes in pages of 2 lost volume"),
        "{xml}"
    );
}

#[test]
fn runner_refuses_bad_arguments_and_unreachable_endpoints() {
    let (code, out) = runner(&[
        "--endpoint",
        "unix:///nonexistent/csi.sock",
        "--params",
        "novalue",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expected key=value"), "{out}");
    let (code, out) = runner(&["--endpoint", "unix:///nonexistent/dir/csi.sock"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    let (code, out) = runner(&[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--endpoint"), "{out}");
}

/// Bad input: exit status 2 and exactly one line on stderr, saying what is
/// wrong (issue 16's convention for the CLIs).
fn bad_input(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_csi-conformance"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line expected: {stderr}"
    );
    assert!(stderr.starts_with("csi-conformance: "), "{stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    stderr
}

#[test]
fn bad_input_is_one_line_on_stderr_and_exit_status_2() {
    let e = bad_input(&[]);
    assert!(e.contains("--endpoint"), "{e}");
    let e = bad_input(&["--endpoint", "unix:///x", "--params", "novalue"]);
    assert!(e.contains("expected key=value"), "{e}");
    let e = bad_input(&["--endpoint", "unix:///x", "--no-such-flag"]);
    assert!(e.contains("--no-such-flag"), "{e}");
    // Zero volume size: the case that asks for a larger capacity asked for 0 again and failed
    // a driver that rightly answered OK. Zero concurrency: the concurrency cases passed
    // without a call.
    let e = bad_input(&["--endpoint", "unix:///x", "--volume-size", "0"]);
    assert!(e.contains("--volume-size"), "{e}");
    // A mistyped filter ran nothing and exited 0.
    let e = bad_input(&["--endpoint", "unix:///x", "--filter", "controler/"]);
    assert!(e.contains("--filter \"controler/\" matches no case"), "{e}");
    let e = bad_input(&["--endpoint", "unix:///x", "--concurrency", "0"]);
    assert!(
        e.contains("--concurrency") && e.contains("must be at least 1"),
        "{e}"
    );
    // A negative number was taken for an unknown flag ("unexpected argument '-3'").
    for flag in ["--concurrency", "--case-timeout", "--connect-timeout"] {
        let e = bad_input(&["--endpoint", "unix:///x", flag, "-3"]);
        assert!(
            e.contains(flag) && e.contains("must be at least 1"),
            "{flag}: {e}"
        );
    }
    let e = bad_input(&["--endpoint", "unix:///x", "--seed", "-1"]);
    assert!(
        e.contains("--seed") && e.contains("must be a whole number from 0"),
        "{e}"
    );
}

#[test]
fn volume_size_takes_a_quantity_and_refuses_zero_and_more_than_int64() {
    // Accepted: `--list` parses every argument, then prints the cases.
    for size in ["1Gi", "1G", "1e9", "4096"] {
        let (code, out) = runner(&["--volume-size", size, "--list"]);
        assert_eq!(code, 0, "--volume-size {size}: {out}");
    }
    let e = bad_input(&["--endpoint", "unix:///x", "--volume-size", "0"]);
    assert!(
        e.contains("--volume-size") && e.contains("must be at least 1 byte"),
        "{e}"
    );
    let e = bad_input(&["--endpoint", "unix:///x", "--volume-size", "8Ei"]);
    assert!(
        e.contains("--volume-size") && e.contains("is too large: a CSI size is at most"),
        "{e}"
    );
    let e = bad_input(&["--endpoint", "unix:///x", "--volume-size", "1Xi"]);
    assert!(
        e.contains("--volume-size") && e.contains("unknown unit"),
        "{e}"
    );
}

#[test]
fn a_negative_case_count_is_refused_as_such() {
    let e = bad_input(&["--endpoint", "unix:///x", "--cases", "-1"]);
    assert!(
        e.contains("--cases") && e.contains("must be a positive number"),
        "{e}"
    );
    let (code, out) = runner(&["--cases", "0", "--list"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_hung_case_names_the_case_timeout_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, stop) = serve(common::broken::plugin("hangs-on-probe"), dir.path());
    let (code, out) = runner(&[
        "--endpoint",
        &endpoint,
        "--filter",
        "identity/probe",
        "--case-timeout",
        "1",
    ]);
    stop.send(()).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL identity/probe: did not finish within 1s (case_timeout, --case-timeout)"
        ),
        "{out}"
    );
}

#[test]
fn a_failed_connection_keeps_the_os_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}", dir.path().join("nobody-here.sock").display());
    let e = bad_input(&["--endpoint", &missing]);
    assert!(e.contains("cannot connect"), "{e}");
    // The endpoint is named once, not again by the client's own message.
    assert_eq!(e.matches(missing.as_str()).count(), 1, "{e}");
    assert!(
        e.contains("No such file or directory"),
        "the OS cause is lost: {e}"
    );
    // A socket file nobody listens on: connection refused.
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let e = bad_input(&["--endpoint", &format!("unix://{}", path.display())]);
    assert!(
        e.contains("Connection refused"),
        "the OS cause is lost: {e}"
    );
    assert!(e.contains("no process is listening"), "{e}");
    // A path that exists and is not a socket answers "Connection refused" too, which sent
    // the reader looking for a driver that was not running: the message says what it is.
    let file = dir.path().join("csi.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    let e = bad_input(&["--endpoint", &format!("unix://{}", file.display())]);
    assert!(e.contains("is a regular file, not a unix socket"), "{e}");
    let e = bad_input(&["--endpoint", &format!("unix://{}", dir.path().display())]);
    assert!(e.contains("is a directory, not a unix socket"), "{e}");
    // Too long for a unix socket: the limit, not "path must be shorter than SUN_LEN".
    let long = dir.path().join("s".repeat(120));
    let e = bad_input(&["--endpoint", &format!("unix://{}", long.display())]);
    assert!(
        e.contains("a unix socket path must be shorter than 108 bytes (sun_path)"),
        "{e}"
    );
}

/// A unix socket in `dir` that accepts connections, keeps them open and never reads from
/// them: a hung driver, or a server that is not gRPC.
fn mute_socket(dir: &std::path::Path) -> String {
    let path = dir.join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    format!("unix://{}", path.display())
}

/// Runs the runner to its end, killing it (by its id) and failing the test if it is still
/// running after a bound far beyond any timeout under test: a guard against a hang, not a
/// speed check.
fn run_to_end(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csi-conformance"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the runner still waits for an endpoint that never answers");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_endpoint_that_accepts_but_never_answers_is_refused_as_unreachable() {
    // The runner used to wait for it forever without a word.
    let dir = tempfile::tempdir().unwrap();
    let endpoint = mute_socket(dir.path());
    let out = run_to_end(&["--endpoint", &endpoint, "--connect-timeout", "1"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no case ran");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("csi-conformance: cannot connect to {endpoint}: ")),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("within 1 s (--connect-timeout): is the driver hung, or not a gRPC server?"),
        "{stderr}"
    );
    // Zero would refuse every endpoint: not a timeout.
    let e = bad_input(&["--endpoint", &endpoint, "--connect-timeout", "0"]);
    assert!(e.contains("--connect-timeout"), "{e}");
}

#[test]
fn an_unwritable_junit_path_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("no-such-dir").join("report.xml");
    // The endpoint is unreachable too: the report path is checked first,
    // so its error is the one reported, before any connection or case.
    let e = bad_input(&[
        "--endpoint",
        "unix:///nonexistent/csi.sock",
        "--junit",
        report.to_str().unwrap(),
    ]);
    assert!(e.contains("cannot write"), "{e}");
    assert!(e.contains("report.xml"), "{e}");
}

#[test]
fn runner_lists_the_cases_without_an_endpoint() {
    let (code, out) = runner(&["--list"]);
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let expected: Vec<&str> = csi_testkit::all_cases().iter().map(|c| c.name).collect();
    assert_eq!(names, expected);
}

#[test]
fn work_dirs_keys_and_node_ids_are_checked_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let ep = "unix:///nonexistent/csi.sock";
    let file_arg = file.to_str().unwrap();

    // A regular file where a directory is expected.
    let e = bad_input(&["--endpoint", ep, "--staging-dir", file_arg]);
    assert_eq!(
        e.trim_end(),
        format!("csi-conformance: --staging-dir {file_arg}: is not a directory")
    );
    let e = bad_input(&["--endpoint", ep, "--target-dir", file_arg]);
    assert!(e.starts_with("csi-conformance: --target-dir "), "{e}");
    // A directory that cannot be made (under a regular file).
    let under = file.join("sub");
    let e = bad_input(&["--endpoint", ep, "--staging-dir", under.to_str().unwrap()]);
    assert!(
        e.contains("--staging-dir") && e.contains("cannot create it"),
        "{e}"
    );

    // The same key twice used to keep the last value silently.
    let e = bad_input(&["--endpoint", ep, "--params", "a=1", "--params", "a=2"]);
    assert_eq!(
        e.trim_end(),
        "csi-conformance: --params: key \"a\" is given twice (\"1\" and \"2\"); give each key once"
    );
    let e = bad_input(&["--endpoint", ep, "--mutable-params", "iops=1", "iops=2"]);
    assert!(
        e.contains("--mutable-params: key \"iops\" is given twice"),
        "{e}"
    );

    // A node id CSI refuses is told with the flag, not sent to fail a case.
    let e = bad_input(&["--endpoint", ep, "--second-node-id", ""]);
    assert!(
        e.contains("--second-node-id") && e.contains("this field is REQUIRED"),
        "{e}"
    );
    let long = "n".repeat(257);
    let e = bad_input(&["--endpoint", ep, "--second-node-id", &long]);
    assert!(e.contains("must be at most 256 bytes, got 257"), "{e}");
}

#[test]
fn relative_work_dirs_are_made_absolute() {
    // CSI paths are absolute: relative ones used to be sent as they were, and every node case
    // failed with the driver's INVALID_ARGUMENT.
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, stop) = serve(
        MemDriver::new(MemDriverConfig::default()).plugin(),
        dir.path(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_csi-conformance"))
        .current_dir(dir.path())
        .args([
            "--endpoint",
            &endpoint,
            "--staging-dir",
            "rel/staging",
            "--target-dir",
            "rel/target",
            "--filter",
            "node/",
            "--block-targets-may-be-files",
        ])
        .output()
        .unwrap();
    stop.send(()).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS node/"), "{stdout}");
    assert!(dir.path().join("rel/staging").is_dir());
}

#[test]
fn a_huge_concurrency_and_a_negative_volume_size_are_told_the_rule() {
    let ep = "unix:///nonexistent/csi.sock";
    // Used to be taken, and the concurrency cases spawned that many tasks.
    let e = bad_input(&["--endpoint", ep, "--concurrency", "100000000000"]);
    assert!(
        e.contains("--concurrency") && e.contains("must be at most 1024"),
        "{e}"
    );
    assert!(bad_input(&["--endpoint", ep, "--concurrency", "1025"]).contains("at most 1024"));
    // A leading minus used to be taken for an unknown flag ("unexpected argument '-0'").
    let e = bad_input(&["--endpoint", ep, "--volume-size", "-0"]);
    assert!(
        e.contains("--volume-size") && e.contains("must be at least 1 byte"),
        "{e}"
    );
    let e = bad_input(&["--endpoint", ep, "--volume-size", "-5Gi"]);
    assert!(
        e.contains("--volume-size") && e.contains("must not be negative"),
        "{e}"
    );
}

#[test]
fn an_endpoint_that_does_not_speak_grpc_is_refused_as_unreachable() {
    // Its answer to GetPluginInfo used to be taken for a plugin's, and every case failed.
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-grpc.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
            held.push(conn);
        }
    });
    let endpoint = format!("unix://{}", path.display());
    let out = run_to_end(&["--endpoint", &endpoint]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no case ran");
    assert!(
        stderr.starts_with(&format!(
            "csi-conformance: cannot connect to {endpoint}: GetPluginInfo failed: unavailable: "
        )) && stderr
            .trim_end()
            .ends_with("does not speak gRPC (HTTP/2): is the endpoint a CSI plugin?"),
        "{stderr}"
    );
}
