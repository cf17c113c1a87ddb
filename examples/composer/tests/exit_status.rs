//! `composer`'s exit statuses, as `composer --help` lists them: 2 for a
//! usage error (clap's own convention, also for flags that do not go
//! together), 1 for an operation that was refused or failed. Before, every
//! error exited 2, so a script could not tell a typo from a refusal.

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn composer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_composer"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the composer binary runs")
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("ended by a signal: {:?}", out.status))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A short path of printable characters as the composer's messages show
/// it: as it is (`storage_units::quote_path`).
fn shown(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Paths of 10,000 characters, or with a newline in them, stay one short
/// line in the messages that name them: the inventory file, the admin
/// socket. Before, they were shown whole, over several lines.
#[test]
fn long_and_multiline_paths_stay_one_short_line() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("{}/{}", dir.path().display(), "x".repeat(10_000));
    let newline = format!("{}/in\nventory.toml", dir.path().display());
    let state = dir.path().join("state.redb");
    let admin = dir.path().join("admin.sock");
    for path in [&long, &newline] {
        for args in [
            vec!["inventory", path.as_str()],
            vec!["admin", "--socket", path.as_str(), "drives"],
            vec![
                "serve",
                "--endpoint",
                "unix:///proc/no-such-dir/csi.sock",
                "--state",
                state.to_str().unwrap(),
                "--admin-socket",
                admin.to_str().unwrap(),
                "--inventory",
                path.as_str(),
            ],
        ] {
            let out = composer(&args);
            let err = stderr(&out);
            let what = args[0];
            assert_eq!(code(&out), 1, "{what}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
            assert!(err.len() < 400, "{what}: {} bytes: {err:.400}", err.len());
        }
    }
    assert!(!state.exists(), "serve created its state");
}

#[test]
fn help_lists_the_exit_statuses() {
    let out = composer(&["--help"]);
    assert_eq!(code(&out), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit status:",
        "0  success",
        "1  the operation was refused or failed",
        "2  usage error",
        "3  serve: the shutdown after SIGTERM took longer than 25 s",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

/// A number flag out of its range says the rule in words, on one line,
/// and exits 2. Before, `--idle-timeout 0` read "0 is not in
/// 1..18446744073709551615" and `--repair-every -1` "unexpected argument
/// '-1' found".
#[test]
fn number_flags_out_of_range_say_the_rule_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let state = state.to_str().unwrap();
    let sock = dir.path().join("admin.sock");
    let sock = sock.to_str().unwrap();
    let serve = |flag: &'static str, value: &'static str| {
        vec![
            "serve",
            // Unbindable: had the value been taken, the command ends with 1.
            "--endpoint",
            "unix:///proc/no-such-dir/csi.sock",
            "--state",
            state,
            "--admin-socket",
            sock,
            flag,
            value,
        ]
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["admin", "--socket", sock, "--idle-timeout", "0", "drives"],
            "invalid value '0' for '--idle-timeout <SECONDS>': must be at least 1 second",
        ),
        (
            vec!["admin", "--socket", sock, "--idle-timeout", "-5", "drives"],
            "invalid value '-5' for '--idle-timeout <SECONDS>': must be at least 1 second",
        ),
        (
            serve("--repair-every", "-1"),
            "invalid value '-1' for '--repair-every <REPAIR_EVERY>': must not be negative",
        ),
        (
            serve("--repair-every", "soon"),
            "invalid value 'soon' for '--repair-every <REPAIR_EVERY>': must not be negative \
             (a whole number of seconds; 0: never)",
        ),
        (
            vec![
                "admin",
                "--socket",
                sock,
                "rebuild",
                "r1-e1-00",
                "--max-bytes-per-sec",
                "-1",
            ],
            "'--max-bytes-per-sec <MAX_BYTES_PER_SEC>': must be at least 1 byte per second",
        ),
    ];
    // A long value is shown short (clap showed it whole).
    let long = "9".repeat(10_000);
    let cases = cases.into_iter().chain([(
        vec!["admin", "--socket", sock, "--idle-timeout", &long, "drives"],
        "… (10000 bytes) for '--idle-timeout <SECONDS>': must be at least 1 second",
    )]);
    for (args, says) in cases {
        let out = composer(&args);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{args:.200?}: {err:.400}");
        assert!(err.len() < 400, "{} bytes: {err:.400}", err.len());
        let said: Vec<&str> = err
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
            .collect();
        assert_eq!(said.len(), 1, "{args:?}: {err}");
        assert!(said[0].contains(says), "{args:?}: {err}");
    }
    assert!(!Path::new(state).exists(), "serve created its state");
}

#[test]
fn usage_errors_exit_2_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let state = p("state.redb");
    let admin_sock = p("admin.sock");
    let data = p("data");
    let cases: &[(&[&str], &str)] = &[
        (&["no-such-command"], "unrecognized subcommand"),
        (
            &["admin", "mark", "r1-e1-00", "broken"],
            "invalid value 'broken'",
        ),
        (&["admin", "rebuild"], "required"),
        // 0 bytes per second was taken as no limit at all.
        (
            &["admin", "rebuild", "r1-e1-00", "--max-bytes-per-sec", "0"],
            "invalid value '0' for '--max-bytes-per-sec <MAX_BYTES_PER_SEC>': must be at least 1 \
             byte per second (leave it out for no limit)",
        ),
        (
            &[
                "serve",
                "--state",
                &state,
                "--admin-socket",
                &admin_sock,
                "--data-dir",
                &data,
            ],
            "--data-dir serves the node side and needs --node-id",
        ),
        // Flags of a store, an agent or a node side that is not there were
        // ignored: the composer served with its local state as if asked to.
        (
            &[
                "serve",
                // Unbindable: had the flag been ignored, the command ends
                // with 1 rather than serving.
                "--endpoint",
                "unix:///proc/no-such-dir/csi.sock",
                "--state",
                &state,
                "--admin-socket",
                &admin_sock,
                "--etcd-user",
                "composer",
            ],
            "--store <STORE>",
        ),
        (
            &[
                "serve",
                // Unbindable: had the flag been ignored, the command ends
                // with 1 rather than serving.
                "--endpoint",
                "unix:///proc/no-such-dir/csi.sock",
                "--state",
                &state,
                "--admin-socket",
                &admin_sock,
                "--replica-id",
                "a",
            ],
            "--store <STORE>",
        ),
        (
            &[
                "serve",
                // Unbindable: had the flag been ignored, the command ends
                // with 1 rather than serving.
                "--endpoint",
                "unix:///proc/no-such-dir/csi.sock",
                "--state",
                &state,
                "--admin-socket",
                &admin_sock,
                "--jbod-agent-listen",
                "127.0.0.1:1",
            ],
            "--jbod-agent <JBOD_AGENT>",
        ),
        (
            &[
                "serve",
                // Unbindable: had the flag been ignored, the command ends
                // with 1 rather than serving.
                "--endpoint",
                "unix:///proc/no-such-dir/csi.sock",
                "--state",
                &state,
                "--admin-socket",
                &admin_sock,
                "--backend",
                "mdadm",
            ],
            "--data-dir <DATA_DIR>",
        ),
        (
            &[
                "serve",
                "--endpoint",
                "csi.sock",
                "--state",
                &state,
                "--admin-socket",
                &admin_sock,
            ],
            "--endpoint: invalid endpoint \"csi.sock\"",
        ),
        (
            &[
                "serve",
                "--store",
                "etcd:/127.0.0.1",
                "--admin-socket",
                &admin_sock,
            ],
            "--store",
        ),
        (
            &[
                "serve",
                "--store",
                "etcd://127.0.0.1:1",
                "--admin-socket",
                &admin_sock,
                "--etcd-key",
                &p("key.pem"),
            ],
            "--etcd-key: needs --etcd-cert",
        ),
        (
            &["inventory", "--print", &p("inv.toml")],
            "cannot be used with",
        ),
    ];
    for ttl in ["0", "9000000001"] {
        // Had the lease been taken, the unreachable etcd would end the
        // command with 1.
        let out = composer(&[
            "serve",
            "--store",
            "etcd://127.0.0.1:1",
            "--admin-socket",
            &admin_sock,
            "--etcd-lease-ttl",
            ttl,
        ]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "--etcd-lease-ttl {ttl}: {err}");
        assert!(
            err.contains(&format!("invalid value '{ttl}' for '--etcd-lease-ttl")),
            "{err}"
        );
    }
    for (args, says) in cases {
        let out = composer(args);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Nothing was created by a refused command line.
    for f in [&state, &data] {
        assert!(!Path::new(f).exists(), "{f} was created");
    }
}

#[test]
fn failed_operations_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "drives = 3\n").unwrap();
    let state = dir.path().join("state.redb");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    // Drives and no server: every create would fail.
    let serverless = dir.path().join("serverless.toml");
    std::fs::write(
        &serverless,
        "[[site]]\nid = \"dc\"\n[[rack]]\nid = \"r1\"\nsite = \"dc\"\n\
         [[jbod]]\nid = \"j1\"\nrack = \"r1\"\n\
         [[jbod.drive]]\nkind = \"ssd\"\ncapacity = \"1 TB\"\n",
    )
    .unwrap();
    let missing = dir.path().join("admin.sock");
    // Not TOML: one line, with the parser's position and reason (before,
    // the file's line and a caret under it, over five lines).
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let out = composer(&["inventory", passwd.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("TOML parse error at line 1, column 32: key with no value"),
        "{err}"
    );
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["inventory", bad.to_str().unwrap()], shown(&bad)),
        (
            vec!["inventory", empty.to_str().unwrap()],
            format!("{}: inventory: no drives", shown(&empty)),
        ),
        (
            vec!["inventory", serverless.to_str().unwrap()],
            format!(
                "{}: inventory: no servers: a composer needs at least one [[server]]",
                shown(&serverless)
            ),
        ),
        (
            vec![
                "serve",
                // An endpoint that cannot be bound: had the inventory been
                // taken, the command ends rather than serving.
                "--endpoint",
                "unix:///proc/no-such-dir/csi.sock",
                "--inventory",
                empty.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
                "--admin-socket",
                missing.to_str().unwrap(),
            ],
            format!("{}: inventory: no drives", shown(&empty)),
        ),
        (
            vec!["admin", "--socket", missing.to_str().unwrap(), "drives"],
            format!("connecting to {}", shown(&missing)),
        ),
    ];
    for (args, says) in cases {
        let out = composer(&args);
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{args:?}: {err}");
        assert!(err.contains(&says), "{args:?}: {err}");
    }
    assert!(
        !state.exists(),
        "serve created its state for an empty inventory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_running_composer_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::Server::start(dir.path()).await;
    let sock = s.admin.to_str().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        // Every unknown id is told alike, naming the argument.
        (
            &["mark", "no-such-drive", "failed"],
            "target: no drive, enclosure or server \"no-such-drive\"",
        ),
        (
            &["repair-plan", "no-such-drive"],
            "target: no drive or enclosure \"no-such-drive\"",
        ),
        (
            &["fail-drive", "no-such-drive"],
            "target: no drive \"no-such-drive\"",
        ),
        (&["rebuild", "no-such-drive"], "no-such-drive"),
        // A healthy drive: a rebuild replaces failed drives.
        (&["rebuild", "r1-e1-00"], "refused, nothing was changed"),
    ];
    for (what, says) in cases {
        let mut args = vec!["admin", "--socket", &sock];
        args.extend_from_slice(what);
        let out = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || {
                Command::new(env!("CARGO_BIN_EXE_composer"))
                    .args(&args)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{what:?}: {err}");
        assert!(err.contains(says), "{what:?}: {err}");
    }
    // The CSI endpoint given as the admin socket: said so, not a JSON
    // parser's complaint.
    let csi = dir.path().join("csi.sock");
    let out = composer(&["admin", "--socket", csi.to_str().unwrap(), "drives"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: the answer is not the composer admin protocol",
            shown(&csi)
        )) && err.contains("not the CSI endpoint?"),
        "{err}"
    );
    // And a question it can answer: 0.
    let out = composer(&["admin", "--socket", &sock, "drives"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    s.kill();
}

/// `serve` runs `args`; panics unless it ends within a generous bound (a
/// guard against the process serving on, not a speed check).
fn serve_ends(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_composer"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("serve {args:?} went on serving: {}", stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// [`serve_ends`] of a second composer with `endpoint`, `state` and `admin`, from a blocking
/// task, beside a first one this test runs.
async fn serve_ends_beside(endpoint: &str, state: &str, admin: &str) -> Output {
    let args = [
        "--endpoint".to_string(),
        endpoint.to_string(),
        "--state".to_string(),
        state.to_string(),
        "--admin-socket".to_string(),
        admin.to_string(),
    ];
    tokio::task::spawn_blocking(move || {
        serve_ends(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

/// `--admin-socket` naming a file that is not a socket (the state
/// database, the inventory, by a slip) or the live socket of another
/// composer is refused and left alone. Before, whatever was there was
/// removed: the file was deleted, or the running composer lost its admin
/// socket to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_socket_path_in_use_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = |name: &str| other.path().join(name).to_str().unwrap().to_string();
    let precious = other.path().join("inventory.toml");
    std::fs::write(&precious, composer::demo::DEMO_INVENTORY).unwrap();
    let endpoint = format!("unix://{}", o("csi.sock"));
    let out = serve_ends(&[
        "--endpoint",
        &endpoint,
        "--state",
        &o("state.redb"),
        "--admin-socket",
        precious.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("exists and is not a socket; not removed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        composer::demo::DEMO_INVENTORY
    );
    assert!(!other.path().join("state.redb").exists());

    let s = common::Server::start(dir.path()).await;
    let taken = s.admin.to_str().unwrap().to_string();
    let out = serve_ends_beside(&endpoint, &o("state.redb"), &taken).await;
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("another process serves this socket"), "{err}");
    // The first composer still answers on it.
    let out = composer(&["admin", "--socket", &taken, "drives"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    s.kill();
}

/// `serve` makes the admin socket's own directory, as `--endpoint`'s, but not
/// a chain of missing ones: a typo in a deployment's path is refused before
/// anything is created. Before, `serve` created every missing directory of
/// `--admin-socket` itself, whatever the socket rule said.
#[test]
fn a_typo_in_the_admin_socket_directory_is_refused_before_anything_is_created() {
    let other = tempfile::tempdir().unwrap();
    let o = |name: &str| other.path().join(name).to_str().unwrap().to_string();
    let out = serve_ends(&[
        "--endpoint",
        &format!("unix://{}", o("csi.sock")),
        "--state",
        &o("state.redb"),
        "--admin-socket",
        &o("rnu/composer/admin.sock"),
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("--admin-socket: "), "{err}");
    assert!(err.contains("does not exist either (a typo?)"), "{err}");
    assert!(!other.path().join("rnu").exists(), "{err}");
    assert!(!other.path().join("state.redb").exists(), "{err}");
}

/// A second composer started by mistake on the CSI endpoint a running one serves is refused
/// before it opens or creates any state. Before, it opened (and created) its redb state file
/// first and only then found the endpoint in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_in_use_is_refused_before_the_state_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = |name: &str| other.path().join(name).to_str().unwrap().to_string();
    let s = common::Server::start(dir.path()).await;
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    let out = serve_ends_beside(&endpoint, &o("state.redb"), &o("admin.sock")).await;
    let err = stderr(&out);
    assert!(
        !other.path().join("state.redb").exists(),
        "no state was created: {err}"
    );
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!(
            "--endpoint {endpoint}: another process is serving on it"
        )),
        "{err}"
    );
    assert!(!other.path().join("admin.sock").exists());
    // The first composer still answers.
    let out = composer(&["admin", "--socket", s.admin.to_str().unwrap(), "drives"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    s.kill();
}
