//! The `place` example CLI as a user runs it: exit status 0 when everything is placed, 1 when a
//! request does not fit, 2 when an input is invalid; one line per error on stderr; a closed
//! standard output (piped to `head`) ends the run quietly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The example binary, built next to this test by `cargo test` (examples are compiled with the
/// tests: `target/<profile>/examples/place`).
fn place() -> Command {
    example("place")
}

/// The example `name`, built next to this test.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built", bin.display());
    assert_fresh(&bin, name);
    Command::new(bin)
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// An input file `name` holding `text` in a directory of its own, removed when dropped.
struct Input {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Input {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for Input {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

fn temp(name: &str, text: &str) -> Input {
    let dir = tempfile::Builder::new()
        .prefix("placement-cli-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    Input { path, _dir: dir }
}

fn run(args: &[&Path]) -> Output {
    place().args(args).output().unwrap()
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn all_placed_exits_0() {
    let req = temp(
        "ok.toml",
        "[[request]]\nname = \"a\"\nshape = { type = \"mirror\", legs = 2 }\nsize = \"1 GB\"\n",
    );
    let o = run(&[&dir().join("inventory.toml"), &req]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(o.stderr.is_empty(), "{o:?}");
}

#[test]
fn a_request_that_does_not_fit_exits_1_with_one_line() {
    let o = run(&[&dir().join("inventory.toml"), &dir().join("requests.toml")]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let lines = stderr_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("place: cannot place 'too-wide'"),
        "{lines:?}"
    );
    // Every request still gets its JSON line.
    let requests = std::fs::read_to_string(dir().join("requests.toml"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("[[request]]"))
        .count();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), requests);
}

#[test]
fn an_invalid_request_exits_2_and_names_the_field_once() {
    let req = temp(
        "bad.toml",
        "[[request]]\nname = \"z\"\nshape = { type = \"mirror\", legs = 0 }\nsize = \"1 GB\"\n",
    );
    let o = run(&[&dir().join("inventory.toml"), &req]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let lines = stderr_lines(&o);
    assert_eq!(
        lines,
        vec!["place: request 'z': shape.legs must be at least 1".to_string()]
    );
}

#[test]
fn an_invalid_inventory_exits_2_on_one_line() {
    // A TOML syntax error: the parser's message spans several lines.
    let inv = temp("broken.toml", "[[drive]]\nid = \"a\"\nkind = \n");
    let o = run(&[&inv]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let lines = stderr_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("broken.toml"), "{lines:?}");
    let missing = temp("x", "");
    let o = run(&[&missing.with_file_name("does-not-exist.toml")]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(stderr_lines(&o).len(), 1);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // More output than a pipe buffers, so that writing fails with EPIPE whenever the reader goes.
    let mut text = String::new();
    for i in 0..3000 {
        text += &format!(
            "[[request]]\nname = \"s{i}\"\nshape = {{ type = \"single\" }}\nsize = \"1 MB\"\n"
        );
    }
    let req = temp("many.toml", &text);
    let mut child = place()
        .arg(dir().join("inventory.toml"))
        .arg(&req)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.is_empty(), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

/// A request name of 100,000 bytes was echoed whole, twice, in its one stderr line ("request
/// 'nnn…': name invalid identifier \"nnn…\""); the line names the request's index and field
/// and quotes the first 64 characters with the length.
#[test]
fn a_long_bad_name_is_quoted_short() {
    let name = "n".repeat(100_000);
    let req = temp(
        "long.toml",
        &format!("[[request]]\nname = \"{name}\"\nshape = {{ type = \"single\" }}\nsize = 1\n"),
    );
    let o = run(&[&dir().join("inventory.toml"), &req]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(
        stderr_lines(&o),
        vec![format!(
            "place: request[0].name: invalid identifier {:?}… (100000 bytes): must be at most 253 bytes",
            &name[..64]
        )]
    );
}

/// Argument errors are one line too (clap printed four or five: the error, a tip, the usage and
/// a pointer to --help), and still exit 2.
#[test]
fn bad_arguments_exit_2_on_one_line() {
    let inv = dir().join("inventory.toml");
    for (args, want) in [
        (
            // Was "unexpected argument '-1' found", as if --seed took no value.
            vec![inv.as_os_str(), "--seed".as_ref(), "-1".as_ref()],
            "place: invalid value '-1' for '--seed <SEED>': must be a whole number from 0 to 18446744073709551615 (see --help)",
        ),
        (
            vec![inv.as_os_str(), "--seed".as_ref(), "x".as_ref()],
            "place: invalid value 'x' for '--seed <SEED>': must be a whole number from 0 to 18446744073709551615 (see --help)",
        ),
        (
            vec![],
            "place: the following required arguments were not provided: <INVENTORY> (see --help)",
        ),
    ] {
        let o = place().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert_eq!(stderr_lines(&o), vec![want.to_string()], "{args:?}");
    }
    // A state file that cannot be written names the flag (it named only the path, like an
    // unreadable input file).
    let d = tempfile::tempdir().unwrap();
    let to = d.path().join("missing").join("state.toml");
    let o = place().arg(&inv).arg("--save").arg(&to).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let lines = stderr_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("place: --save {}: ", to.display())),
        "{lines:?}"
    );
    let o = place().arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
}

/// `--save` was written only after every placement: a path that cannot be written lost the whole
/// run at its end. It is opened first, so nothing is placed (no JSON line) and the run ends 2;
/// an existing state file keeps its content when the run fails before its end, and a state file
/// the failed run created is removed.
#[test]
fn an_unwritable_save_path_fails_before_placing() {
    let inv = dir().join("inventory.toml");
    let req = dir().join("requests.toml");
    let d = tempfile::tempdir().unwrap();
    for to in [
        d.path().join("missing").join("state.toml"),
        d.path().to_path_buf(),
    ] {
        let o = place()
            .arg(&inv)
            .arg(&req)
            .arg("--save")
            .arg(&to)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(o.stdout.is_empty(), "placed before failing: {o:?}");
        let lines = stderr_lines(&o);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!("place: --save {}: ", to.display())),
            "{lines:?}"
        );
    }
    // A run that fails after opening the file: an existing file is left as it was, a new one
    // is not left behind empty.
    let old = d.path().join("old.toml");
    std::fs::write(&old, "kept = true\n").unwrap();
    let new = d.path().join("new.toml");
    for to in [&old, &new] {
        let o = place()
            .arg(&inv)
            .arg("--evacuate")
            .arg("no-such-target")
            .arg("--save")
            .arg(to)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{o:?}");
    }
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "kept = true\n");
    assert!(!new.exists());
    // A run that ends replaces the old content (shorter content leaves no tail behind).
    std::fs::write(&old, "x".repeat(1 << 20)).unwrap();
    let o = place().arg(&inv).arg("--save").arg(&old).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let saved = std::fs::read_to_string(&old).unwrap();
    assert!(
        placement::Inventory::from_toml(&saved).is_ok(),
        "old tail kept: {saved:.200}"
    );
}

/// Fails when the example is older than its source or the library's: `cargo test --test cli`
/// builds no examples, and then ran the previous build's binary, passing or failing against
/// code that was no longer there.
///
/// Twin of `assert_fresh` in `crates/raid/tests/cli.rs`: change both. Not shared through a `#[path]` file,
/// because `cargo package` takes only the crate's own directory, and the packaged tests of
/// either crate would then not build.
fn assert_fresh(bin: &Path, name: &str) {
    fn newest(dir: &Path) -> std::time::SystemTime {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    newest(&p)
                } else {
                    e.metadata().unwrap().modified().unwrap()
                }
            })
            .max()
            .unwrap_or(std::time::UNIX_EPOCH)
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = newest(&root.join("src")).max(
        std::fs::metadata(root.join(format!("examples/{name}.rs")))
            .unwrap()
            .modified()
            .unwrap(),
    );
    let built = std::fs::metadata(bin).unwrap().modified().unwrap();
    assert!(
        built >= source,
        "{} is older than its sources: run the whole `cargo test -p placement` (which builds the examples) or `cargo build -p placement --example place`",
        bin.display()
    );
}

/// Tried as a new user would: a 100,000-character `--seed` or `--evacuate` target was echoed
/// whole (a 100 kB line), and a newline in a target broke the line; an inventory value in the
/// wrong case was refused. Values are quoted short and escaped, names read in any case.
#[test]
fn long_and_unprintable_arguments_are_quoted_short() {
    let inv = dir().join("inventory.toml");
    let long = "x".repeat(100_000);
    for (flag, want) in [
        (
            "--seed",
            format!(
                "place: invalid value {:?}… (100000 bytes) for '--seed <SEED>': must be a whole number from 0 to 18446744073709551615 (see --help)",
                &long[..64]
            ),
        ),
        (
            "--evacuate",
            format!(
                "place: --evacuate: unknown drive or failure domain {:?}… (100000 bytes)",
                &long[..64]
            ),
        ),
    ] {
        let o = place().arg(&inv).arg(flag).arg(&long).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(o.stderr.len() < 400, "{flag}: {} bytes", o.stderr.len());
        assert_eq!(stderr_lines(&o), vec![want], "{flag}");
    }
    let o = place()
        .arg(&inv)
        .args(["--drain", "a\nb"])
        .output()
        .unwrap();
    assert_eq!(
        stderr_lines(&o),
        vec![r#"place: --drain: unknown drive or failure domain "a\nb""#.to_string()]
    );
    // A drive kind in capitals is read as it is in every other inventory field.
    let text = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("kind = \"hdd\"", "kind = \"HDD\"");
    let upper = temp("upper.toml", &text);
    let o = run(&[&upper]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `profile_ops` ran its default 100 racks (minutes of filling) when `PROFILE_RACKS` or
/// `PROFILE_REPS` could not be read, and panicked on `PROFILE_RACKS=1`; each is one line naming
/// the variable and the rule, with status 2, before any work.
#[test]
fn profile_ops_refuses_unreadable_counts() {
    for (var, value, min) in [
        ("PROFILE_RACKS", "abc", 2),
        ("PROFILE_RACKS", "1", 2),
        ("PROFILE_REPS", "-3", 1),
        ("PROFILE_REPS", "0", 1),
    ] {
        let o = example("profile_ops")
            .env_remove("PROFILE_WAIT")
            .env("PROFILE_RACKS", "2")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{var}={value}: {o:?}");
        assert_eq!(
            stderr_lines(&o),
            vec![format!(
                "profile_ops: {var} must be a whole number, at least {min}, got {value:?}"
            )],
            "{var}={value}"
        );
        assert!(o.stdout.is_empty(), "{var}={value}");
    }
}
