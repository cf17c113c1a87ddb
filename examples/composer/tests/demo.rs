//! `composer demo` end to end (the library entry the binary calls): every
//! step must pass. Needs root, FUSE and loop devices: without them it says so
//! and passes, except under `CI=true`, where it fails.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_green() {
    if let Some(why) = composer::demo::missing_prerequisite() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but this host cannot run the demo: {why}"
        );
        eprintln!("SKIPPED: the demo needs root, FUSE and loop devices: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let r = composer::demo::run(dir.path(), &mut out).await;
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    r.unwrap();
    for step in [
        "provision, stage, publish raid1-encrypted",
        "verify every byte of raid1 (degraded)",
        "rebuild raid10",
        "verify every byte of raid10 (rebuilt)",
        "unpublish and unstage everything",
    ] {
        assert!(
            text.contains(&format!("s  {step}")),
            "missing step {step:?}:\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
}

/// The story through the engine alone (what the demo runs where the kernel
/// cannot mount): no root needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_only_demo_runs_green() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let r = composer::demo::run_engine_only(dir.path(), &mut out).await;
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    r.unwrap();
    for step in [
        "verify every byte of raid1 (degraded)",
        "rebuild raid10",
        "verify every byte of raid10 (rebuilt)",
    ] {
        assert!(
            text.contains(&format!("s  {step}")),
            "missing step {step:?}:\n{text}"
        );
    }
}

/// `composer demo` as a newcomer runs it (no RUST_LOG): the story on stdout;
/// on stderr the rebuild progress bars and, at the default level (warnings
/// and errors), only the engine's warnings about the members the demo fails
/// on purpose: no info lines, no FUSE warning (unmount at unstage, xattr or
/// fallocate requests of the loop driver).
#[test]
fn the_demo_binary_prints_no_warnings_by_default() {
    if let Some(why) = composer::demo::missing_prerequisite() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but this host cannot run the demo: {why}"
        );
        eprintln!("SKIPPED: the demo needs root, FUSE and loop devices: {why}");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_composer"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("the composer binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("demo passed"), "{stdout}");
    let logged: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("INFO"))
        .collect();
    assert!(
        logged
            .iter()
            .all(|l| l.contains("WARN") && l.contains("member failed")),
        "the demo logged:\n{stderr}"
    );
    assert_eq!(logged.len(), 2, "one warning per failed drive:\n{stderr}");
    assert!(stderr.contains("rebuild ["), "{stderr}");
    // Not a terminal: the bars print a line per tenth, two rebuilds.
    assert!(!stderr.contains('\r'), "a log gets lines, not redraws");
    let bars = stderr.lines().filter(|l| l.contains("rebuild [")).count();
    assert!((2..=22).contains(&bars), "{bars} progress lines:\n{stderr}");
}
