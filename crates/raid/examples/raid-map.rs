//! `raid-map`: map logical sectors of an md array to member sectors.
//!
//! ```text
//! cargo run -p raid --example raid-map -- --level raid6 --layout left-symmetric \
//!     --members 5 --chunk 64K --member-size 1G < sectors.txt
//! ```
//!
//! Geometry on the command line, one logical sector (decimal, 512-byte
//! units) per line on stdin, one JSON object per line on stdout:
//! `{"logical":L,"copies":[{"member":M,"sector":S},…]}` plus, for RAID4/5/6,
//! `"stripe"`, `"p"` and (RAID6) `"q"`. A line that is not a sector in the
//! array produces `{"line":N,"input":"…","error":"…"}`; the tool goes on and
//! exits with status 1 at the end. See the crate README for the format.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Parser;
use raid::{Geometry, Layout, Level};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Map logical sectors of an md array to member sectors (JSON lines)")]
struct Args {
    /// RAID level: raid0, raid1, raid4, raid5, raid6, raid10 (or 0/1/4/5/6/10).
    #[arg(long)]
    level: String,
    /// Layout as mdadm names it (left-symmetric, n2, f2, o2, original, …);
    /// empty for the level's default.
    #[arg(long, default_value = "")]
    layout: String,
    /// Number of members.
    #[arg(long)]
    members: usize,
    /// Chunk size: a number in KiB like mdadm's --chunk, or with a suffix
    /// s (sectors), K, M, G. Ignored for raid1.
    #[arg(long, default_value = "512K")]
    chunk: String,
    /// Size of each member's data area: one size for all members or a
    /// comma-separated list, in KiB or with a suffix s, K, M, G, T.
    #[arg(long)]
    member_size: String,
}

fn parse_size(field: &str, s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1u64),
        Some((i, 'K' | 'k')) => (&s[..i], 2),
        Some((i, 'M' | 'm')) => (&s[..i], 2 << 10),
        Some((i, 'G' | 'g')) => (&s[..i], 2 << 20),
        Some((i, 'T' | 't')) => (&s[..i], 2 << 30),
        _ => (s, 2),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("{field}: `{s}` is not a size (a number with optional suffix s, K, M, G, T)")
        })
}

fn build(args: &Args) -> Result<Geometry, String> {
    let level: Level = args.level.parse().map_err(|e| format!("--level: {e}"))?;
    let layout = Layout::parse(level, &args.layout).map_err(|e| format!("--layout: {e}"))?;
    let chunk = if level == Level::Raid1 {
        0
    } else {
        parse_size("--chunk", &args.chunk)?
    };
    let sizes: Vec<u64> = args
        .member_size
        .split(',')
        .map(|s| parse_size("--member-size", s))
        .collect::<Result<_, _>>()?;
    let sizes = match sizes.len() {
        1 => vec![sizes[0]; args.members],
        n if n == args.members => sizes,
        n => {
            return Err(format!(
                "--member-size: {n} sizes given for {} members (give one or one per member)",
                args.members
            ));
        }
    };
    Geometry::new(layout, chunk, &sizes).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let g = match build(&args) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("raid-map: {e}");
            return ExitCode::from(2);
        }
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("raid-map: reading stdin: {e}");
                return ExitCode::from(2);
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let value = match text.parse::<u64>() {
            Err(_) => Err(format!("`{text}` is not a decimal sector number")),
            Ok(l) => g.map(l).map_err(|e| e.to_string()),
        };
        let obj = match value {
            Ok(m) => {
                let copies: Vec<_> = m
                    .copies
                    .iter()
                    .map(|c| json!({"member": c.member, "sector": c.sector}))
                    .collect();
                let mut o = json!({"logical": m.logical, "copies": copies});
                if let Some(p) = m.parity {
                    o["stripe"] = json!(p.stripe);
                    o["p"] = json!(p.p);
                    if let Some(q) = p.q {
                        o["q"] = json!(q);
                    }
                }
                o
            }
            Err(e) => {
                failed = true;
                json!({"line": n + 1, "input": text, "error": e})
            }
        };
        if writeln!(out, "{obj}").is_err() {
            return ExitCode::from(2);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(2);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
