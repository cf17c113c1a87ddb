//! Runs the `raid-map` example (cargo builds examples for `cargo test`) and
//! checks its JSON-lines output against the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use raid::{Geometry, Layout, Level, MemberContent};

fn raid_map() -> PathBuf {
    // target/<profile>/deps/cli-<hash> → target/<profile>/examples/raid-map
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory");
    let path = dir
        .join("examples")
        .join(format!("raid-map{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not built: run the whole `cargo test -p raid`, which builds the examples",
        path.display()
    );
    assert_fresh(&path);
    path
}

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(raid_map())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raid-map");
    // The tool may exit before reading everything (bad arguments).
    if let Err(e) = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    let out = child.wait_with_output().expect("raid-map output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

/// Arguments written as one string (none of them contains a space).
fn sh(args: &str) -> Vec<&str> {
    args.split_whitespace().collect()
}

fn lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const RAID6: [&str; 8] = [
    "--level",
    "raid6",
    "--layout",
    "left-asymmetric",
    "--members",
    "5",
    "--chunk",
    "4KiB",
];

fn raid6_args(cmd: &str) -> Vec<&str> {
    let mut a = vec![cmd];
    a.extend(RAID6);
    a.extend(["--member-size", "32KiB"]);
    a
}

fn raid6() -> Geometry {
    Geometry::new(
        Layout::parse(Level::Raid6, "left-asymmetric").unwrap(),
        8,
        &[64; 5],
    )
    .unwrap()
}

#[test]
fn maps_sectors_to_json_lines() {
    let g = raid6();
    let input: String = (0..g.array_sectors()).map(|l| format!("{l}\n")).collect();
    let (code, out, err) = run(&raid6_args("map"), &input);
    assert_eq!(code, 0, "{err}");
    let lines = lines(&out);
    assert_eq!(lines.len() as u64, g.array_sectors());
    for (l, v) in lines.iter().enumerate() {
        let m = g.map(l as u64).unwrap();
        assert_eq!(v["logical"], l as u64);
        assert_eq!(v["copies"][0]["member"], m.copies[0].member);
        assert_eq!(v["copies"][0]["sector"], m.copies[0].sector);
        let p = m.parity.unwrap();
        assert_eq!(v["p"], p.p);
        assert_eq!(v["q"], p.q.unwrap());
        assert_eq!(v["stripe"], p.stripe);
    }
}

#[test]
fn unmaps_every_member_sector() {
    let g = raid6();
    let input: String = (0..5)
        .flat_map(|m| (0..64).map(move |s| format!("{m} {s}\n")))
        .collect();
    let (code, out, err) = run(&raid6_args("unmap"), &input);
    assert_eq!(code, 0, "{err}");
    let lines = lines(&out);
    assert_eq!(lines.len(), 5 * 64);
    for v in &lines {
        let (m, s) = (v["member"].as_u64().unwrap(), v["sector"].as_u64().unwrap());
        match g.unmap(m as usize, s).unwrap() {
            MemberContent::Data { logical, copy } => {
                assert_eq!(v["content"], "data");
                assert_eq!(v["logical"], logical);
                assert_eq!(v["copy"], copy);
                assert_eq!(g.map(logical).unwrap().copies[copy].member, m as usize);
            }
            MemberContent::P { stripe } => {
                assert_eq!((&v["content"], &v["stripe"]), (&"p".into(), &stripe.into()))
            }
            MemberContent::Q { stripe } => {
                assert_eq!((&v["content"], &v["stripe"]), (&"q".into(), &stripe.into()))
            }
            MemberContent::Unused => assert_eq!(v["content"], "unused"),
        }
    }
}

#[test]
fn stripe_roles_and_q_exponents() {
    let g = raid6();
    let (code, out, err) = run(&raid6_args("stripe"), "0\n3\n7\n");
    assert_eq!(code, 0, "{err}");
    for (v, s) in lines(&out).iter().zip([0u64, 3, 7]) {
        let sl = g.stripe_layout(s).unwrap();
        assert_eq!(v["stripe"], s);
        assert_eq!(v["member_sector"], s * 8);
        assert_eq!(v["p"], sl.p);
        assert_eq!(v["q"], sl.q.unwrap());
        assert_eq!(v["data"], serde_json::json!(sl.data));
        let exps: Vec<(usize, u8)> = serde_json::from_value(v["q_exponent"].clone()).unwrap();
        let want: Vec<(usize, u8)> = sl
            .q_exponent
            .iter()
            .enumerate()
            .filter_map(|(m, e)| e.map(|e| (m, e)))
            .collect();
        assert_eq!(exps, want);
    }
    // Levels without parity stripes are bad input.
    let (code, out, err) = run(
        &sh("stripe --level raid10 --members 4 --chunk 4KiB --member-size 32KiB"),
        "0\n",
    );
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no parity stripes"), "{err}");
}

#[test]
fn capacity_matches_the_library() {
    let (code, out, err) = run(
        &sh(
            "capacity --level raid10 --layout f2 --members 5 --chunk 512KiB --member-size 1GiB,1GiB,1GiB,1GiB,2GiB",
        ),
        "",
    );
    assert_eq!(code, 0, "{err}");
    let g = Geometry::new(
        Layout::parse(Level::Raid10, "f2").unwrap(),
        1024,
        &[2 << 20, 2 << 20, 2 << 20, 2 << 20, 4 << 20],
    )
    .unwrap();
    let v = &lines(&out)[0];
    assert_eq!(v["array_sectors"], g.array_sectors());
    assert_eq!(v["array_bytes"], g.array_bytes());
    assert_eq!(v["array_size"], g.array_size().to_string());
    assert_eq!(v["used_sectors"], serde_json::json!(g.used_sectors()));
    assert_eq!(
        (&v["level"], &v["layout"], &v["copies"], &v["tolerates"]),
        (&"raid10".into(), &"f2".into(), &2.into(), &1.into())
    );
    assert_eq!(v["chunk"], "512 KiB");
    // Sizes follow the workspace's units: T is 1000^4 (SI), Ti 1024^4.
    let (code, out, _) = run(
        &sh("capacity --level raid1 --members 2 --member-size 1T"),
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(lines(&out)[0]["array_bytes"], 1_000_000_000_000u64);
    let (_, out, _) = run(
        &sh("capacity --level raid1 --members 2 --member-size 1Ti"),
        "",
    );
    assert_eq!(lines(&out)[0]["array_bytes"], 1u64 << 40);
}

#[test]
fn bad_lines_are_bad_input() {
    let args = [
        "map",
        "--level",
        "raid10",
        "--layout",
        "n2",
        "--members",
        "3",
        "--chunk",
        "4KiB",
        "--member-size",
        "32KiB",
    ];
    let (code, out, err) = run(&args, "8\nnot-a-number\n\n1000000\n16\n");
    assert_eq!(code, 2);
    let lines = lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["copies"].as_array().unwrap().len(), 2);
    assert_eq!(lines[1]["line"], 2);
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("not a decimal")
    );
    assert!(lines[2]["error"].as_str().unwrap().contains("out of range"));
    assert_eq!(lines[3]["logical"], 16);
    // One stderr line per bad line.
    let err: Vec<&str> = err.lines().collect();
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err[0].starts_with("raid-map: line 2: "), "{err:?}");
    assert!(err[1].starts_with("raid-map: line 4: "), "{err:?}");
    let (code, out, _) = run(
        &sh("unmap --level raid1 --members 2 --member-size 1MiB"),
        "0\n1 2 3\n2 0\n",
    );
    assert_eq!(code, 2);
    assert_eq!(lines_of(&out, "error"), 3);
}

/// A long bad line was echoed whole in the error (100,000 digits on one stderr line and again
/// in the JSON `error`); the message quotes its first 64 characters and its length, as every
/// crate of the SDK does (`storage_units::quote`), and the JSON `input` keeps the whole line.
#[test]
fn a_long_bad_line_is_quoted_short() {
    let long = "9".repeat(100_000);
    let (code, out, err) = run(
        &sh("map --level raid1 --members 2 --member-size 1MiB"),
        &format!("{long}\n"),
    );
    assert_eq!(code, 2);
    let want = format!(
        "\"{}\"… (100000 bytes) is not a decimal sector number",
        &long[..64]
    );
    assert_eq!(err, format!("raid-map: line 1: {want}\n"));
    let lines = lines(&out);
    assert_eq!(lines[0]["error"], want.as_str());
    assert_eq!(lines[0]["input"], long.as_str());
    let (_, _, err) = run(
        &sh("unmap --level raid1 --members 2 --member-size 1MiB"),
        &format!("1 2 {long}\n"),
    );
    assert!(err.len() < 200, "{}", &err[..200]);
    assert!(err.contains(" bytes) is not `MEMBER SECTOR`"), "{err}");
}

/// A bad line's control characters were written raw to the terminal in the stderr message (an
/// escape sequence in the input recoloured or cleared the screen); they are escaped.
#[test]
fn a_bad_line_with_control_characters_is_escaped() {
    let (code, out, err) = run(
        &sh("map --level raid1 --members 2 --member-size 1MiB"),
        "\x1b[2J7\x07\n",
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "raid-map: line 1: \"\\u{1b}[2J7\\u{7}\" is not a decimal sector number\n"
    );
    assert!(!err.contains('\x1b'));
    assert_eq!(lines(&out)[0]["input"], "\x1b[2J7\x07");
}

/// Tried as a new user would: no command printed the tool's description as if it were the
/// error; a negative size with a unit (`-1G`) was "unexpected argument '-1' found"; and clap
/// quoted a 100,000-character value whole. Each is one line naming the rule.
#[test]
fn arguments_tried_as_a_new_user_would() {
    let long = "x".repeat(100_000);
    let members = format!("map --level raid5 --member-size 1G --members {long}");
    for (args, want) in [
        (
            String::new(),
            "raid-map: a command is required: map, unmap, stripe or capacity\n".to_string(),
        ),
        (
            "map --level raid5 --members 3 --member-size -1G".into(),
            "raid-map: --member-size: size \"-1G\": must not be negative\n".into(),
        ),
        (
            "map --level raid5 --members 3 --member-size 1G --chunk -4KiB".into(),
            "raid-map: --chunk: size \"-4KiB\": must not be negative\n".into(),
        ),
        (
            members,
            format!(
                "raid-map: invalid value {:?}… (100000 bytes) for '--members <MEMBERS>': must be a whole number of members, at least 1\n",
                &long[..64]
            ),
        ),
    ] {
        let (code, out, err) = run(&sh(&args), "");
        assert_eq!((code, out.as_str()), (2, ""), "{args:.80}");
        assert_eq!(err, want, "{args:.80}");
    }
}

/// The README's `raid-map` output is what the tool prints for the README's array: it showed
/// keys in an order the tool never prints and `map` figures of a 4 KiB chunk under a
/// `--chunk 64KiB` command, and its bad-line example had the keys out of order too.
#[test]
fn the_readme_shows_what_the_tool_prints() {
    let readme = include_str!("../README.md");
    let geometry =
        "--level raid6 --layout left-symmetric --members 5 --chunk 64KiB --member-size 1GiB";
    assert!(
        readme.contains("echo 56 | cargo run -p raid --example raid-map -- map --level raid6 --layout left-symmetric \\\n    --members 5 --chunk 64KiB --member-size 1GiB\n"),
        "the README's command changed: update this test"
    );
    let block = readme
        .split(
            "`map` of `56`, `unmap` of `1 0`, `stripe` of `1` and `capacity` print:\n\n```json\n",
        )
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's output block");
    let mut printed = String::new();
    for (cmd, input) in [
        ("map", "56\n"),
        ("unmap", "1 0\n"),
        ("stripe", "1\n"),
        ("capacity", ""),
    ] {
        let (code, out, err) = run(&sh(&format!("{cmd} {geometry}")), input);
        assert_eq!((code, err.as_str()), (0, ""), "{cmd}");
        printed.push_str(&out);
    }
    assert_eq!(block, printed);
    let (_, out, _) = run(&sh(&format!("map {geometry}")), "1\n2\nabc\n");
    let bad = out.lines().nth(2).unwrap();
    assert!(readme.contains(&format!("`{bad}`")), "{bad}");
}

fn lines_of(out: &str, key: &str) -> usize {
    lines(out).iter().filter(|v| v.get(key).is_some()).count()
}

#[test]
fn bad_arguments_give_one_line_per_error_and_status_2() {
    // Three independent errors, three lines, nothing on stdout.
    let (code, out, err) = run(
        &sh("map --level raid5 --layout n2 --members 3 --chunk 6KiB --member-size 1G,1G"),
        "",
    );
    assert_eq!((code, out.as_str()), (2, ""));
    let err: Vec<&str> = err.lines().collect();
    assert_eq!(err.len(), 3, "{err:?}");
    assert!(err[0].starts_with("raid-map: --layout: "), "{err:?}");
    assert_eq!(
        err[1],
        "raid-map: --chunk: invalid chunk size: 6 KiB is not a positive multiple of 4 KiB"
    );
    assert!(err[2].starts_with("raid-map: --member-size: "), "{err:?}");
    // A size that is not whole sectors, and an unknown unit.
    let (code, _, err) = run(
        &sh("capacity --level raid1 --members 2 --member-size 1000"),
        "",
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "raid-map: --member-size: invalid size: 1 kB is not a whole number of 512-byte sectors\n"
    );
    let (code, _, err) = run(
        &sh("capacity --level raid1 --members 2 --member-size 1XB"),
        "",
    );
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    // clap's own errors: one line too, naming the missing arguments (the line used to end
    // at "not provided:").
    let (code, _, err) = run(&["map", "--level", "raid1"], "");
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "raid-map: the following required arguments were not provided: --members <MEMBERS> --member-size <MEMBER_SIZE>\n"
    );
    // Negative numbers are values that break the flag's rule (they were "unexpected
    // argument '-1' found", as if the flag took no value).
    for (args, want) in [
        (
            "capacity --level raid0 --members -1 --member-size 1GiB",
            "raid-map: invalid value '-1' for '--members <MEMBERS>': must be a whole number of members, at least 1\n",
        ),
        (
            "capacity --level raid0 --members 3 --member-size -5",
            "raid-map: --member-size: size \"-5\": must not be negative\n",
        ),
        (
            "capacity --level raid0 --members 3 --chunk -4096 --member-size 1GiB",
            "raid-map: --chunk: size \"-4096\": must not be negative\n",
        ),
    ] {
        let (code, out, err) = run(&sh(args), "");
        assert_eq!((code, out.as_str(), err.as_str()), (2, "", want), "{args}");
    }
    let (code, _, err) = run(&["frobnicate"], "");
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_member_count_beyond_md_is_refused_before_any_allocation() {
    // 10^14 members used to ask for 10^14 sizes in memory and abort (status 134).
    for members in ["1921", "100000000000000", "18446744073709551615"] {
        let (code, out, err) = run(
            &[
                "capacity",
                "--level",
                "raid0",
                "--members",
                members,
                "--member-size",
                "1GiB",
            ],
            "",
        );
        assert_eq!((code, out.as_str()), (2, ""), "{members}: {err}");
        assert_eq!(
            err.trim_end(),
            format!("raid-map: --members: md arrays have at most 1920 members, got {members}")
        );
    }
}

#[test]
fn a_line_that_is_not_utf8_is_a_bad_line() {
    // Not a failure of the work: the line gets its error object and the next one its answer.
    let mut child = Command::new(raid_map())
        .args(raid6_args("map"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raid-map");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"0\n\xff\xfe\n8\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["logical"], 0);
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["error"], "the line is not UTF-8 text");
    assert_eq!(lines[2]["logical"], 8);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, "raid-map: line 2: the line is not UTF-8 text\n");
}

#[test]
fn unreadable_stdin_is_a_failure_of_the_work() {
    // A directory opens but cannot be read.
    let out = Command::new(raid_map())
        .args(raid6_args("map"))
        .stdin(std::fs::File::open("/").expect("open /"))
        .output()
        .expect("run raid-map");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("raid-map: reading stdin: "), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // Like `raid-map map ... | head -1`: read one line, close the pipe,
    // keep feeding input.
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(raid_map())
        .args(raid6_args("map"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raid-map");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Stops when raid-map has gone (EPIPE on our side).
        for _ in 0..20_000 {
            if stdin.write_all(b"0\n1\n2\n3\n4\n5\n6\n7\n").is_err() {
                break;
            }
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"logical\":0"), "{first}");
    // The reader is dropped here: stdout is closed.
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Fails when the example is older than its source or the library's: `cargo test --test cli`
/// builds no examples, and then ran the previous build's binary, passing or failing against
/// code that was no longer there.
///
/// Twin of `assert_fresh` in `crates/placement/tests/cli.rs`: change both. Not shared through a `#[path]` file,
/// because `cargo package` takes only the crate's own directory, and the packaged tests of
/// either crate would then not build.
fn assert_fresh(bin: &Path) {
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
        std::fs::metadata(root.join("examples/raid-map.rs"))
            .unwrap()
            .modified()
            .unwrap(),
    );
    let built = std::fs::metadata(bin).unwrap().modified().unwrap();
    assert!(
        built >= source,
        "{} is older than its sources: run the whole `cargo test -p raid` (which builds the examples) or `cargo build -p raid --example raid-map`",
        bin.display()
    );
}
