//! `raid-map`: md array address mapping on the command line, JSON lines out.
//!
//! ```text
//! raid-map map      --level raid6 --members 5 --chunk 64KiB --member-size 1GiB < sectors.txt
//! raid-map unmap    --level raid6 --members 5 --chunk 64KiB --member-size 1GiB < member-sectors.txt
//! raid-map stripe   --level raid6 --members 5 --chunk 64KiB --member-size 1GiB < stripes.txt
//! raid-map capacity --level raid6 --members 5 --chunk 64KiB --member-size 1GiB
//! ```
//!
//! `map` reads one logical sector per line, `unmap` one `MEMBER SECTOR` pair
//! per line, `stripe` one stripe number per line (RAID4/5/6), and each
//! prints one JSON object per line; `capacity` prints one object for the
//! geometry. Sizes use the workspace's units (`storage-units`): `4096`,
//! `64KiB`, `1GiB` (IEC, 1024^n) or `1GB` (SI, 1000^n). Exit status: 0 when
//! everything was answered, 2 for bad input (bad arguments, or input lines
//! that are not addresses of the array: each gets an `error` object on
//! stdout and one line on stderr, and the tool carries on), 1 when the work
//! itself failed (stdin unreadable, stdout unwritable). A closed stdout
//! (`raid-map ... | head -1`) ends the tool quietly with status 0. See the
//! crate README for the formats.

use std::io::{BufRead, ErrorKind, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use raid::{ChunkSize, Geometry, Layout, Level, MemberContent, Sectors};
use serde_json::{Value, json};
use storage_units::{ByteSize, quote};

#[derive(Parser)]
#[command(
    name = "raid-map",
    about = "md array address mapping: map, unmap, stripe roles, capacity (JSON lines)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Map logical sectors (one per stdin line) to every copy and the stripe's parity members.
    Map(GeometryArgs),
    /// Map member sectors (`MEMBER SECTOR` per stdin line) back to what they hold.
    Unmap(GeometryArgs),
    /// Roles of the members of stripes (one stripe number per stdin line): P, Q, data order, Q exponents.
    Stripe(GeometryArgs),
    /// Capacity and shape of the array (one JSON line; reads no input).
    Capacity(GeometryArgs),
}

#[derive(Args)]
struct GeometryArgs {
    /// RAID level: raid0, raid1, raid4, raid5, raid6, raid10 (or 0/1/4/5/6/10).
    #[arg(long)]
    level: String,
    /// Layout as mdadm names it (left-symmetric, n2, f2, o2, original, …);
    /// empty for the level's default.
    #[arg(long, default_value = "")]
    layout: String,
    /// Number of members.
    // Negative numbers (and any size below: `-1G` is no number to clap) are taken as values, so
    // that the message states the rule instead of clap's "unexpected argument '-1' found".
    #[arg(long, allow_negative_numbers = true, value_parser = members)]
    members: usize,
    /// Chunk size, e.g. 64KiB or 512KiB (a number alone is bytes); a
    /// multiple of 4 KiB. Ignored for raid1.
    #[arg(long, default_value = "512KiB", allow_hyphen_values = true)]
    chunk: String,
    /// Size of each member's data area: one size for all members or a
    /// comma-separated list (1GiB, 500GB, 1073741824); whole 512-byte sectors.
    #[arg(long, allow_hyphen_values = true)]
    member_size: String,
}

/// `--members`: a whole number (its range is checked with the geometry).
fn members(text: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| "must be a whole number of members, at least 1".to_string())
}

/// Parse a size with the workspace's unit rules into whole sectors.
fn sectors(field: &str, text: &str) -> Result<Sectors, String> {
    let size: ByteSize = text.trim().parse().map_err(|e| format!("{field}: {e}"))?;
    Sectors::from_byte_size(size).map_err(|e| format!("{field}: {e}"))
}

/// Build the geometry, collecting every argument error (one message each).
fn build(args: &GeometryArgs) -> Result<Geometry, Vec<String>> {
    let mut errors = Vec::new();
    let level: Option<Level> = args
        .level
        .parse()
        .map_err(|e| errors.push(format!("--level: {e}")))
        .ok();
    let layout = level.and_then(|level| {
        Layout::parse(level, &args.layout)
            .map_err(|e| errors.push(format!("--layout: {e}")))
            .ok()
    });
    let chunk = if level == Some(Level::Raid1) {
        Some(0)
    } else {
        // Checked as a chunk size from the bytes given, so that the message
        // names the size in the user's unit (`6 KiB`), not in sectors.
        args.chunk
            .trim()
            .parse::<ByteSize>()
            .map_err(|e| e.to_string())
            .and_then(|size| ChunkSize::from_byte_size(size).map_err(|e| e.to_string()))
            .map(|c| c.sectors().get())
            .map_err(|e| errors.push(format!("--chunk: {e}")))
            .ok()
    };
    if args.members == 0 {
        errors.push("--members: must be at least 1".into());
    } else if args.members > raid::geometry::MAX_MEMBERS {
        // Checked before one size is repeated for every member: a count like 10^14 would
        // otherwise ask for that many sizes in memory and abort the process.
        errors.push(format!(
            "--members: md arrays have at most {} members, got {}",
            raid::geometry::MAX_MEMBERS,
            args.members
        ));
    }
    let given: Vec<&str> = args.member_size.split(',').collect();
    let mut sizes = Vec::new();
    for s in &given {
        match sectors("--member-size", s) {
            Ok(s) => sizes.push(s.get()),
            Err(e) => errors.push(e),
        }
    }
    let sizes = match given.len() {
        _ if sizes.len() < given.len() => Vec::new(),
        _ if args.members == 0 || args.members > raid::geometry::MAX_MEMBERS => Vec::new(),
        1 => vec![sizes[0]; args.members],
        n if n == args.members => sizes,
        n => {
            errors.push(format!(
                "--member-size: {n} sizes given for {} members (give one or one per member)",
                args.members
            ));
            Vec::new()
        }
    };
    match (layout, chunk) {
        (Some(layout), Some(chunk)) if errors.is_empty() => {
            Geometry::new(layout, chunk, &sizes).map_err(|e| vec![e.to_string()])
        }
        _ => Err(errors),
    }
}

/// Exit statuses.
const OK: u8 = 0;
const WORK_FAILED: u8 = 1;
const BAD_INPUT: u8 = 2;

fn fail(lines: &[String], code: u8) -> ExitCode {
    // Writing to a closed stderr must not panic either.
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "raid-map: {l}");
    }
    ExitCode::from(code)
}

/// A write error: a closed pipe ends the work quietly (status 0); anything
/// else is a failure of the work.
fn write_failed(e: std::io::Error) -> ExitCode {
    if e.kind() == ErrorKind::BrokenPipe {
        ExitCode::from(OK)
    } else {
        fail(&[format!("writing stdout: {e}")], WORK_FAILED)
    }
}

/// Answer every non-blank stdin line with `answer`, one JSON object per
/// line; bad lines get an error object and a stderr line.
fn each_line(answer: impl Fn(&str) -> Result<Value, String>) -> ExitCode {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad = false;
    for (n, line) in stdin.lock().split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = out.flush();
                return fail(&[format!("reading stdin: {e}")], WORK_FAILED);
            }
        };
        // A line that is not UTF-8 is a bad line like any other that is not an address: it
        // gets its error object and the tool carries on.
        let (line, answered) = match String::from_utf8(line) {
            Ok(l) => (l, None),
            Err(e) => (
                String::from_utf8_lossy(e.as_bytes()).into_owned(),
                Some(Err("the line is not UTF-8 text".to_string())),
            ),
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let obj = answered
            .unwrap_or_else(|| answer(text))
            .unwrap_or_else(|e| {
                bad = true;
                let _ = writeln!(std::io::stderr().lock(), "raid-map: line {}: {e}", n + 1);
                json!({"line": n + 1, "input": text, "error": e})
            });
        if let Err(e) = writeln!(out, "{obj}") {
            return write_failed(e);
        }
    }
    if let Err(e) = out.flush() {
        return write_failed(e);
    }
    ExitCode::from(if bad { BAD_INPUT } else { OK })
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{} is not a decimal {what}", quote(text)))
}

fn map(g: &Geometry, text: &str) -> Result<Value, String> {
    let m = g
        .map(number(text, "sector number")?)
        .map_err(|e| e.to_string())?;
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
    Ok(o)
}

fn unmap(g: &Geometry, text: &str) -> Result<Value, String> {
    let parts: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect();
    let [member, sector] = parts[..] else {
        return Err(format!("{} is not `MEMBER SECTOR`", quote(text)));
    };
    let member = number(member, "member number")?;
    let sector = number(sector, "sector number")?;
    let member = usize::try_from(member).map_err(|_| format!("member {member} is too large"))?;
    let mut o = json!({"member": member, "sector": sector});
    match g.unmap(member, sector).map_err(|e| e.to_string())? {
        MemberContent::Data { logical, copy } => {
            o["content"] = json!("data");
            o["logical"] = json!(logical);
            o["copy"] = json!(copy);
        }
        MemberContent::P { stripe } => {
            o["content"] = json!("p");
            o["stripe"] = json!(stripe);
        }
        MemberContent::Q { stripe } => {
            o["content"] = json!("q");
            o["stripe"] = json!(stripe);
        }
        MemberContent::Unused => o["content"] = json!("unused"),
    }
    Ok(o)
}

fn stripe(g: &Geometry, text: &str) -> Result<Value, String> {
    let s = g
        .stripe_layout(number(text, "stripe number")?)
        .map_err(|e| e.to_string())?;
    let mut o = json!({
        "stripe": s.stripe,
        "member_sector": s.stripe * g.chunk_sectors(),
        "sectors": g.chunk_sectors(),
        "p": s.p,
        "data": s.data,
    });
    if let Some(q) = s.q {
        o["q"] = json!(q);
        let exps: Vec<Value> = s
            .q_exponent
            .iter()
            .enumerate()
            .filter_map(|(m, e)| e.map(|e| json!([m, e])))
            .collect();
        o["q_exponent"] = json!(exps);
    }
    Ok(o)
}

fn capacity(g: &Geometry) -> Value {
    let layout = g.layout();
    let mut o = json!({
        "level": layout.level().name(),
        "layout": layout.mdadm_name(),
        "members": g.members(),
        "chunk_sectors": g.chunk_sectors(),
        "member_sectors": g.member_sectors(),
        "used_sectors": g.used_sectors(),
        "array_sectors": g.array_sectors(),
        "array_bytes": g.array_bytes(),
        "array_size": g.array_size().to_string(),
        "copies": g.copies(),
        "tolerates": g.guaranteed_tolerance(),
    });
    if let Some(c) = g.chunk_size() {
        o["chunk"] = json!(c.to_string());
    }
    if matches!(layout, Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_)) {
        o["data_members"] = json!(g.data_disks());
        o["stripes"] = json!(g.stripes());
    }
    o
}

/// A clap error as one line: clap's first paragraph (it lists missing arguments on lines of
/// their own; tips and usage follow a blank line), with a long or unprintable value quoted short
/// and escaped (clap quoted a 100,000-character `--members` whole).
fn clap_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap printed the whole help, of which the first paragraph is the tool's description.
        return "a command is required: map, unmap, stripe or capacity".into();
    }
    let text = e.to_string();
    let mut first = text
        .split("\n\n")
        .next()
        .unwrap_or("bad arguments")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for kind in [ContextKind::InvalidValue, ContextKind::InvalidArg] {
        if let Some(ContextValue::String(v)) = e.get(kind) {
            first = storage_units::requote(&first, v).into_owned();
        }
    }
    first.trim_start_matches("error: ").to_string()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Help and version go to stdout with status 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return fail(&[clap_line(&e)], BAD_INPUT),
    };
    let (Cmd::Map(args) | Cmd::Unmap(args) | Cmd::Stripe(args) | Cmd::Capacity(args)) = &cli.cmd;
    let g = match build(args) {
        Ok(g) => g,
        Err(errors) => return fail(&errors, BAD_INPUT),
    };
    match cli.cmd {
        Cmd::Map(_) => each_line(|t| map(&g, t)),
        Cmd::Unmap(_) => each_line(|t| unmap(&g, t)),
        Cmd::Stripe(_) => {
            if g.stripes() == 0 || g.stripe_layout(0).is_err() {
                return fail(
                    &[format!("stripe: {} has no parity stripes", g.layout())],
                    BAD_INPUT,
                );
            }
            each_line(|t| stripe(&g, t))
        }
        Cmd::Capacity(_) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", capacity(&g)).and_then(|_| out.flush()) {
                Ok(()) => ExitCode::from(OK),
                Err(e) => write_failed(e),
            }
        }
    }
}
