//! Runs the `raid-map` example (cargo builds examples for `cargo test`) and
//! checks its JSON-lines output against the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use raid::{Geometry, Layout, Level};

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
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("raid-map output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

#[test]
fn maps_sectors_to_json_lines() {
    let args = [
        "--level",
        "raid6",
        "--layout",
        "left-asymmetric",
        "--members",
        "5",
        "--chunk",
        "8s",
        "--member-size",
        "64s",
    ];
    let g = Geometry::new(
        Layout::parse(Level::Raid6, "left-asymmetric").unwrap(),
        8,
        &[64; 5],
    )
    .unwrap();
    let input: String = (0..g.array_sectors()).map(|l| format!("{l}\n")).collect();
    let (code, out, err) = run(&args, &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
fn bad_lines_and_bad_geometry_are_reported() {
    let args = [
        "--level",
        "raid10",
        "--layout",
        "n2",
        "--members",
        "3",
        "--chunk",
        "4",
        "--member-size",
        "32K",
    ];
    let (code, out, _) = run(&args, "8\nnot-a-number\n\n1000000\n16\n");
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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

    let (code, _, err) = run(
        &[
            "--level",
            "raid5",
            "--layout",
            "n2",
            "--members",
            "3",
            "--member-size",
            "1G",
        ],
        "",
    );
    assert_eq!(code, 2);
    assert!(err.contains("--layout"), "{err}");
    let (code, _, err) = run(
        &[
            "--level",
            "raid5",
            "--members",
            "3",
            "--member-size",
            "1G,1G",
        ],
        "",
    );
    assert_eq!(code, 2);
    assert!(err.contains("--member-size"), "{err}");
}
