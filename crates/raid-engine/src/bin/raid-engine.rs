//! `raid-engine`: create, inspect, serve, expose, rebuild and scrub
//! user-space RAID volumes. Run `raid-engine --help` for the subcommands.
//!
//! Members are paths of files or block devices, or `nbd://HOST:PORT/EXPORT`
//! for a drive served over NBD.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use raid_engine::error::names;
use raid_engine::nbd::{AllowList, Export, MAX_NAME_BYTES, NbdDevice, NbdServer};
use raid_engine::{
    BlockDevice, CacheMode, CreateOptions, EngineError, FileDevice, Health, Progress,
    RebuildOptions, RoleCondition, Secret, Volume, VolumeLayout,
};
use storage_units::{quote, quote_path};

/// `println!` that does not panic when stdout is closed (`| head -1`, a
/// reader gone): the command carries on, closes its volume and exits with
/// its own status; what could not be printed is lost, as it would be for
/// any reader that left.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The exit codes, as `--help` lists them.
const EXIT_CODES: &str = "Exit codes:
  0  success (status: the volume can start, whole or degraded; scrub: every
     byte checked and no mismatch left unrepaired)
  1  the operation failed: unreadable or inconsistent members, an I/O
     error, values that read well but that the members or the volume
     refuse (a chunk too large for them, a role out of range) (scrub: a member whose I/O failed is marked failed, the scrub carries
     on without it and says so), or (scrub without --repair) mismatches
     found
  2  usage: what was typed cannot be read, and nothing was written (an
     unknown flag, a value left out or malformed: a number, a size, a
     level, an --export NAME=PATH, an expose --name that is not a file
     name, a member that is not a path or nbd://HOST:PORT/EXPORT, a
     --listen that is not HOST:PORT, a member count --level single
     refuses)
  3  the volume cannot start: the missing or failed members hold every copy
     of some data (status still prints every role and why)
  4  scrub: not every byte could be checked (degraded: a single readable
     copy, or a stripe with no redundancy left (RAID4/5 with a member
     missing, RAID6 with two); no redundancy; or no readable copy); what
     was checked had no mismatch";

/// Exit code: an error.
const EXIT_ERROR: u8 = 1;
/// Exit code: what was typed cannot be read (clap's usage errors exit 2
/// too).
const EXIT_USAGE: u8 = 2;
/// Exit code: the volume cannot start.
const EXIT_CANNOT_START: u8 = 3;
/// Exit code: the scrub could not check every byte.
const EXIT_SCRUB_INCOMPLETE: u8 = 4;

#[derive(Parser)]
#[command(
    name = "raid-engine",
    version,
    about = "User-space md-compatible RAID volumes",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Members {
    /// Member devices in role order: paths, or nbd://HOST:PORT/EXPORT.
    #[arg(required = true)]
    members: Vec<String>,
    /// File holding the encryption secret (16 to 1024 bytes).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Use buffered I/O instead of O_DIRECT on local members.
    #[arg(long)]
    buffered: bool,
    /// Give up on an NBD member (and an NBD --replacement) whose server
    /// answers no request for this long: a whole number with ms, s or m
    /// (30s; a bare number is seconds). Its requests then fail and the
    /// member is marked failed, the volume carrying on degraded. Default:
    /// no limit, since a slow drive is not a failed one (the kernel's nbd
    /// client gives up after 30 s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = duration)]
    nbd_timeout: Option<Duration>,
}

/// The members of a volume that the command starts (expose, rebuild, readd,
/// scrub), and whether it may start degraded. Only these take `--run`:
/// status never starts the volume and create starts a new one, so there it
/// is a usage error rather than a flag silently ignored.
#[derive(clap::Args)]
struct Start {
    #[command(flatten)]
    m: Members,
    /// Start the volume even though members that were in sync when it last
    /// ran are not given (as mdadm --run): it starts degraded and records
    /// them failed, so that they come back only by readd or rebuild.
    /// Without it such a start is refused.
    #[arg(long)]
    run: bool,
}

impl std::ops::Deref for Start {
    type Target = Members;
    fn deref(&self) -> &Members {
        &self.m
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a volume (writes superblocks; data areas are not initialised
    /// unless --resync is given).
    Create {
        /// linear, single, raid0, raid1, raid10[:n2|f2|o2|...], raid4,
        /// raid5[:left-symmetric|...], raid6[:left-symmetric|...]
        #[arg(long)]
        level: String,
        /// Chunk size: KiB like mdadm, or with suffix K/M/G.
        #[arg(long, default_value = "512K", allow_hyphen_values = true)]
        chunk: String,
        /// Data offset in sectors (default: mdadm's v1.2 default).
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>)]
        data_offset: Option<u64>,
        /// Create even over devices that hold a member of an existing
        /// volume (refused without it, as mdadm asks first: their
        /// superblocks would be overwritten).
        #[arg(long)]
        force: bool,
        /// Copy the first copy over the others everywhere after creating.
        /// A member whose I/O fails meanwhile is marked failed, the volume
        /// is closed (degraded), and the next assembly resyncs the rest.
        #[arg(long)]
        resync: bool,
        #[command(flatten)]
        m: Members,
    },
    /// Print the volume's size, layout, every role's state and whether it
    /// can start, from the superblocks alone (nothing is started or
    /// written; a secret is not needed). Exits 0 when the volume can start
    /// (whole or degraded), 3 when it cannot. A member whose superblock
    /// cannot be read is listed as unreadable with the reason, the rest is
    /// described from the others, and the exit code is 1 (3 if the others
    /// cannot start the volume). Members that contradict each other (two
    /// volumes mixed up, a role given twice, a member replaced since) are
    /// each listed with their own superblock's view, followed by every
    /// contradiction; the exit code is then 1.
    #[command(after_help = EXIT_CODES)]
    Status {
        #[command(flatten)]
        m: Members,
    },
    /// Serve drive files over NBD: --export NAME=PATH[@IP+IP...]
    /// (without @ any client may connect).
    ServeNbd {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:10809")]
        listen: String,
        /// NAME=PATH or NAME=PATH@IP+IP (allow-list).
        #[arg(long = "export", required = true)]
        exports: Vec<String>,
    },
    /// Expose the volume as MOUNT/NAME through FUSE, optionally on a loop
    /// device; runs until SIGTERM/SIGINT or until the mount is unmounted.
    Expose {
        /// Mount point (an existing empty directory).
        #[arg(long)]
        mount: PathBuf,
        /// File name inside the mount.
        #[arg(long, default_value = "volume")]
        name: String,
        /// Attach a loop device to the file and print its path.
        #[arg(long = "loop")]
        loop_dev: bool,
        /// Longest adaptive polling window, in µs: while requests come at
        /// short gaps, a worker polls for the next one instead of sleeping
        /// (0: off; at most 1000).
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = micros::<1000>)]
        poll_us: u64,
        /// Busy polling: poll for this long after every request, in µs,
        /// whatever the gaps (0: off, the default; at most 1000000).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = micros::<1_000_000>)]
        busy_poll_us: u64,
        #[command(flatten)]
        m: Start,
    },
    /// Rebuild a failed member onto a replacement device, with a progress bar.
    /// An active role is failed first, unless it holds the last copy of
    /// some data (refused, as `mdadm --fail` refuses).
    Rebuild {
        /// Role (member index) to rebuild.
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>)]
        role: usize,
        /// The replacement device.
        #[arg(long)]
        replacement: String,
        /// Throttle, bytes per second (suffix K/M/G allowed; 0: no limit,
        /// as without it).
        #[arg(long, allow_hyphen_values = true)]
        rate: Option<String>,
        /// Rebuild onto a replacement that holds a member of another
        /// volume (refused without it, as create refuses: its superblock
        /// and data would be overwritten).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        m: Start,
    },
    /// Bring a failed member back with a bitmap-driven resync.
    Readd {
        /// Role (member index) to bring back.
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<usize>)]
        role: usize,
        #[command(flatten)]
        m: Start,
    },
    /// Compare every copy (or check every stripe's parity); with --repair
    /// rewrite the ones that differ. A RAID6 stripe with one member
    /// missing is checked against the parity it has left, and --repair
    /// rewrites that parity (as md does: one syndrome cannot say which
    /// member is wrong). Says how many bytes could not be checked, and
    /// exits 4 if any (1 if mismatches were left unrepaired). A member
    /// whose read fails is marked failed and the scrub carries on from
    /// the others, as md does; it is named and the exit code is 1.
    #[command(after_help = EXIT_CODES)]
    Scrub {
        /// Repair mismatches.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        m: Start,
    },
}

/// A whole number from 0 (a role, a sector count). A negative one reaches
/// this parser (`allow_negative_numbers`) and is told the rule, instead of
/// being taken for an unknown flag ("unexpected argument '-1'").
fn whole<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    if s.trim_start().starts_with('-') {
        return Err("must not be negative (a whole number from 0)".into());
    }
    s.trim()
        .parse()
        .map_err(|_| format!("{} is not a whole number from 0", quote(s)))
}

/// A duration more than zero: a whole number with `ms`, `s` or `m` (a bare
/// number is seconds). A negative one, or a flag typed where the value was
/// left out, reaches this through `allow_hyphen_values` and is told so.
fn duration(s: &str) -> Result<Duration, String> {
    const RULE: &str = "a whole number with ms, s or m, as 30s";
    let s = s.trim();
    let q = quote(s);
    if s.starts_with("--") {
        return Err(format!(
            "{q} is not a duration ({RULE}): was the value left out?"
        ));
    }
    if s.starts_with('-') {
        return Err(format!("{q} must not be negative ({RULE})"));
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let from: fn(u64) -> Option<Duration> = match unit {
        "ms" => |n| Some(Duration::from_millis(n)),
        "" | "s" => |n| Some(Duration::from_secs(n)),
        "m" => |n| n.checked_mul(60).map(Duration::from_secs),
        _ => return Err(format!("{q} is not a duration ({RULE})")),
    };
    if num.is_empty() {
        return Err(format!("{q} is not a duration ({RULE})"));
    }
    let d = num
        .parse()
        .ok()
        .and_then(from)
        .ok_or_else(|| format!("{q} is too large"))?;
    if d.is_zero() {
        return Err(format!(
            "{q} must be more than zero (leave the flag out for no limit)"
        ));
    }
    Ok(d)
}

/// A number of microseconds from 0 to `MAX`.
fn micros<const MAX: u64>(s: &str) -> Result<u64, String> {
    let n: u64 = whole(s)?;
    if n > MAX {
        return Err(format!("{n} µs is more than the {MAX} µs allowed"));
    }
    Ok(n)
}

/// The message of `e` with the library's parameter named by the flag the
/// user typed: `flag` tells, for a field of [`EngineError::Invalid`] (or
/// of the geometry's `raid::RaidError::InvalidGeometry`), the flag and its
/// value (`chunk_sectors` is `--chunk 3K`), or `None` to keep the message.
fn flag_error(e: EngineError, flag: impl Fn(&str) -> Option<String>) -> String {
    let (field, rule) = match &e {
        EngineError::Invalid { field, rule }
        | EngineError::Raid(raid::RaidError::InvalidGeometry { field, rule }) => (field, rule),
        _ => return e.to_string(),
    };
    match flag(field) {
        Some(flag) => format!("{flag}: {rule}"),
        None => e.to_string(),
    }
}

/// A size from a flag's value: a whole number of `default_unit`s, or
/// with a suffix K, M or G. A negative or too large one is told its rule
/// (a negative one, `-1` or `-64K`, reaches this through
/// `allow_hyphen_values`, instead of being taken for an unknown flag; so
/// does a flag typed where the value was left out).
fn parse_size(s: &str, default_unit: u64) -> Result<u64, String> {
    let s = s.trim();
    let q = quote(s);
    if s.starts_with("--") || (s.starts_with('-') && parse_size(&s[1..], default_unit).is_err()) {
        return Err(format!(
            "{q} is not a size (a whole number with optional K, M or G): was the value left out?"
        ));
    }
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, default_unit),
    };
    if s.starts_with('-') {
        return Err(format!(
            "{q} must not be negative (a size: a whole number with optional K, M or G)"
        ));
    }
    if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
        return num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| format!("{q} is too large (at most {} bytes)", u64::MAX));
    }
    Err(format!(
        "{q} is not a size (a whole number with optional K, M or G)"
    ))
}

/// A member's text (or a device's [`BlockDevice::describe`]) as a message
/// shows it, once: `nbd://HOST:PORT/EXPORT` quoted as other text (as the
/// NBD client names its peer), any other as a path
/// ([`storage_units::quote_path`]: whole when plain, a long one by its
/// head and its tail), as the library's errors name the device.
fn shown_member(spec: &str) -> String {
    if spec.starts_with("nbd://") {
        quote(spec)
    } else {
        quote_path(std::path::Path::new(spec))
    }
}

/// `e`, an error about the path shown as `shown`, after what was done
/// (`what`, or `what_to` with the path where `e` does not name it):
/// `attaching a loop device to /mnt/v/volume: ...`, the path named once.
/// The path counts as named where it is a word of its own ([`names`]):
/// `/dev/loop1` is not named by an error about `/dev/loop10`.
fn naming_once(what: &str, what_to: &str, shown: &str, e: &str) -> String {
    if names(e, shown) {
        format!("{what}: {e}")
    } else {
        format!("{what_to}{shown}: {e}")
    }
}

/// The rule a member's text breaks, if it breaks one: it is a path, or
/// `nbd://HOST:PORT/EXPORT` with a port and an export name of 1 to
/// [`MAX_NAME_BYTES`] bytes. Checked for every member before anything is
/// opened or connected to: such a member is typed wrong (exit 2), where a
/// well-formed one that cannot be opened or reached is an operation that
/// failed (exit 1).
fn member_syntax(spec: &str) -> Result<(), String> {
    const FORM: &str = "a device is a path or nbd://HOST:PORT/EXPORT";
    if spec.is_empty() {
        return Err(format!("an empty device path ({FORM})"));
    }
    let Some(rest) = spec.strip_prefix("nbd://") else {
        return Ok(());
    };
    let (addr, name) = rest.split_once('/').unwrap_or((rest, ""));
    if NbdDevice::check_address(addr).is_err() {
        return Err(format!(
            "address {} is not HOST:PORT (NBD's port is usually 10809)",
            quote(addr)
        ));
    }
    if name.is_empty() {
        return Err(format!("the export name is empty ({FORM})"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the export name of {} bytes is too long: NBD allows at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    Ok(())
}

/// Every member's text, and a rebuild's `--replacement`, checked by
/// [`member_syntax`] before anything is opened: an error naming the member
/// and the rule, exit 2.
fn check_members(cmd: &Cmd) -> Result<(), Failure> {
    let (m, replacement) = match cmd {
        Cmd::Create { m, .. } | Cmd::Status { m } => (m, None),
        Cmd::Expose { m, .. } | Cmd::Readd { m, .. } | Cmd::Scrub { m, .. } => (&m.m, None),
        Cmd::Rebuild { m, replacement, .. } => (&m.m, Some(replacement)),
        Cmd::ServeNbd { .. } => return Ok(()),
    };
    for spec in &m.members {
        member_syntax(spec)
            .map_err(|rule| Failure::usage(format!("member {}: {rule}", shown_member(spec))))?;
    }
    if let Some(r) = replacement {
        member_syntax(r)
            .map_err(|rule| Failure::usage(format!("--replacement {}: {rule}", shown_member(r))))?;
    }
    Ok(())
}

/// Opens a member: a path, or `nbd://HOST:PORT/EXPORT` (its text checked
/// by [`member_syntax`] first), whose requests are given up on after
/// `nbd_timeout` (`None`: no limit).
fn open_member(
    spec: &str,
    buffered: bool,
    nbd_timeout: Option<Duration>,
) -> Result<Arc<dyn BlockDevice>, String> {
    if let Some(rest) = spec.strip_prefix("nbd://") {
        let (addr, name) = rest.split_once('/').unwrap_or((rest, ""));
        let d = NbdDevice::connect(addr, name).map_err(|e| {
            // The library names the peer quoted short already.
            e.to_string()
        })?;
        d.set_request_timeout(nbd_timeout)
            .map_err(|e| format!("--nbd-timeout: {e}"))?;
        return Ok(Arc::new(d));
    }
    let mode = if buffered {
        CacheMode::Buffered
    } else {
        CacheMode::DirectIfSupported
    };
    FileDevice::open(spec, mode)
        .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        .map_err(|e| {
            // The library's message names the path already (`quote_path`).
            e.to_string()
        })
}

/// Opened members and the secret, if one was given.
type Opened = (Vec<Arc<dyn BlockDevice>>, Option<Secret>);

fn open_members(m: &Members) -> Result<Opened, String> {
    let devs = m
        .members
        .iter()
        .map(|s| open_member(s, m.buffered, m.nbd_timeout))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((devs, read_secret(m)?))
}

fn read_secret(m: &Members) -> Result<Option<Secret>, String> {
    match &m.secret_file {
        Some(p) => {
            let flag = format!("--secret-file {}", quote_path(p));
            let bytes = std::fs::read(p).map_err(|e| format!("{flag}: {e}"))?;
            Ok(Some(Secret::new(bytes).map_err(|e| {
                flag_error(e, |f| (f == "secret").then(|| flag.clone()))
            })?))
        }
        None => Ok(None),
    }
}

/// Why a command failed, and the exit code that says so.
struct Failure {
    code: u8,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            code: EXIT_ERROR,
            message,
        }
    }
}

impl Failure {
    /// A value typed wrong: exits [`EXIT_USAGE`], as clap's own usage
    /// errors (an unknown flag, a `--role` that is not a number) do.
    fn usage(message: String) -> Self {
        Failure {
            code: EXIT_USAGE,
            message,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Starts the volume from `m`. Refused unless `--run` is given when a role
/// that was in sync when the volume last ran is missing (other than
/// `replacing`, the role a rebuild gives a new device): starting without
/// it records it failed. A volume that cannot start at all is left to
/// `Volume::assemble` to refuse, as are unreadable members.
fn assemble(m: &Start, replacing: Option<usize>) -> Result<Volume, Failure> {
    let (devs, secret) = open_members(m)?;
    if !m.run
        && let Ok(x) = Volume::examine(&devs, None)
        && x.can_start()
    {
        let missing: Vec<String> = x
            .roles
            .iter()
            .filter(|r| {
                r.condition == RoleCondition::Missing
                    && r.recorded_active
                    && Some(r.role) != replacing
            })
            .map(|r| r.role.to_string())
            .collect();
        if !missing.is_empty() {
            let (roles, them, are) = match missing.len() {
                1 => ("role", "it", "is"),
                _ => ("roles", "them", "are"),
            };
            return Err(format!(
                "{roles} {} of the volume {are} not given (in sync when the volume last ran): \
                 give every member, or --run to start the volume degraded without {them} \
                 (recorded failed; back only by readd or rebuild)",
                missing.join(", ")
            )
            .into());
        }
    }
    Volume::assemble(devs, secret.as_ref()).map_err(|e| Failure {
        code: match e {
            EngineError::Unavailable(_) => EXIT_CANNOT_START,
            _ => EXIT_ERROR,
        },
        message: secret_error(m, e),
    })
}

/// The message of `e`, where a secret that does not fit the volume is
/// told by `--secret-file` (given, or to give).
fn secret_error(m: &Members, e: EngineError) -> String {
    match (e, &m.secret_file) {
        (EngineError::Crypto(why), Some(p)) => {
            format!("--secret-file {}: {why}", quote_path(p))
        }
        (EngineError::Crypto(why), None) => {
            format!("{why}: give it with --secret-file FILE")
        }
        (e, _) => e.to_string(),
    }
}

fn print_status(v: &Volume) {
    out!(
        "size {} bytes, {} members, {}{}",
        v.size(),
        v.members(),
        v.geometry()
            .map_or("linear".to_string(), |g| g.layout().to_string()),
        if v.is_encrypted() { ", encrypted" } else { "" }
    );
    for s in v.status() {
        out!(
            "  role {}: {:?} {}",
            s.role,
            s.state,
            s.device.unwrap_or_else(|| "(missing)".into())
        );
    }
}

/// `create` without `--force`: refuse devices that hold a member of an
/// existing volume (a superblock that reads and makes sense on its own),
/// naming the first such device and the volume, before anything is written.
fn refuse_members_of_volumes(m: &Members, devs: &[Arc<dyn BlockDevice>]) -> Result<(), Failure> {
    // A device in use (by an expose, a scrub, ...) is said first: --force
    // would not help there, and `create` would refuse it anyway.
    let probe = raid_engine::ClaimHolder::new("raid-engine create");
    for (i, d) in devs.iter().enumerate() {
        if let Err(e) = d.claim(&probe) {
            // The refusal names the device (the claim contract): once.
            return Err(format!("devices[{i}]: {e}").into());
        }
    }
    for (i, d) in devs.iter().enumerate() {
        let Some((_, held)) = member_of_a_volume(d) else {
            continue;
        };
        return Err(format!(
            "devices[{i}] ({}) holds {held}: create would overwrite it; give --force to create over it anyway",
            shown_member(&m.members[i]),
        )
        .into());
    }
    Ok(())
}

/// The volume whose member `d` is, by its own superblock (a superblock
/// that reads and makes sense on its own): that volume's uuid, and what
/// `d` holds of it (`role 0 of an existing raid1 volume of 2 members
/// (8388608 bytes)`).
fn member_of_a_volume(d: &Arc<dyn BlockDevice>) -> Option<(String, String)> {
    let x = Volume::examine(std::slice::from_ref(d), None).ok()?;
    let role = x
        .roles
        .iter()
        .find(|r| r.device.is_some())
        .map_or_else(|| "a member".to_string(), |r| format!("role {}", r.role));
    let held = format!(
        "{role} of an existing {} volume of {} members ({} bytes{})",
        x.layout,
        x.roles.len(),
        x.size,
        if x.encrypted { ", encrypted" } else { "" },
    );
    Some((x.uuid, held))
}

/// The `unreadable:` line of member `spec` whose error is `e`: the
/// engine's messages name the device; it is said in front otherwise. A
/// member counts as named only where its name is a word of its own (a
/// member `d` is not named by "No such file or directory").
fn unreadable_line(spec: &str, e: String) -> String {
    let shown = shown_member(spec);
    if names(&e, &shown) {
        e
    } else {
        format!("{shown}: {e}")
    }
}

/// `status`: the superblocks' view, without starting the volume.
///
/// A member that cannot be opened, or whose superblock cannot be read or
/// makes no sense on its own (an I/O error, no superblock, a truncated
/// device), is listed as unreadable with the reason, and the volume is
/// described from the others; the exit code is then 1 (3 if the others
/// cannot start it), since `assemble` with the same members would refuse.
fn status(m: &Members) -> Result<(), Failure> {
    let secret = read_secret(m)?;
    let mut devs = Vec::with_capacity(m.members.len());
    let mut views = Vec::with_capacity(m.members.len());
    let mut unreadable = Vec::new();
    for spec in &m.members {
        let checked = open_member(spec, m.buffered, m.nbd_timeout).and_then(|d| {
            Volume::examine(std::slice::from_ref(&d), None)
                .map(|x| (d, x))
                .map_err(|e| e.to_string())
        });
        match checked {
            Ok((d, x)) => {
                devs.push(d);
                views.push((spec, x));
            }
            Err(e) => unreadable.push(unreadable_line(spec, e)),
        }
    }
    if devs.is_empty() {
        return Err(format!("no member is readable: {}", unreadable.join("; ")).into());
    }
    let x = match Volume::examine(&devs, secret.as_ref()) {
        Ok(x) => x,
        // The members contradict each other (two volumes, a role given
        // twice, a member replaced since): every member's own superblock
        // is listed, then everything that contradicts, so that the
        // operator sees which devices belong together.
        Err(e @ EngineError::Metadata { .. }) => {
            out!("members disagree; each member's own superblock says:");
            for (spec, v) in &views {
                let role = v
                    .roles
                    .iter()
                    .find(|r| r.device.is_some())
                    .map_or_else(|| "no role".to_string(), |r| format!("role {}", r.role));
                out!(
                    "  {}: {role} of volume {} ({}, {} members, {} bytes{}), event {}{}",
                    shown_member(spec),
                    v.uuid,
                    v.layout,
                    v.roles.len(),
                    v.size,
                    if v.encrypted { ", encrypted" } else { "" },
                    v.events,
                    if v.clean {
                        ""
                    } else {
                        ", not shut down cleanly"
                    }
                );
            }
            for u in &unreadable {
                out!("  unreadable: {u}");
            }
            return Err(format!(
                "the members contradict each other: {e} (give the members of one volume; status of each alone shows its view)"
            )
            .into());
        }
        Err(e) => return Err(secret_error(m, e).into()),
    };
    out!("volume {}", x.uuid);
    out!(
        "size {} bytes, {} members, {}{}{}",
        x.size,
        x.roles.len(),
        x.layout,
        if x.encrypted { ", encrypted" } else { "" },
        if x.clean {
            ""
        } else {
            ", not shut down cleanly"
        }
    );
    for r in &x.roles {
        match &r.device {
            Some(d) => out!("  role {}: {} {d}", r.role, r.condition),
            None => out!("  role {}: {}", r.role, r.condition),
        }
    }
    for u in &unreadable {
        out!("  unreadable: {u}");
    }
    match &x.health {
        Health::Whole => out!("state: whole (every member active)"),
        Health::Degraded { unavailable } => {
            let list: Vec<String> = unavailable
                .iter()
                .map(|&r| {
                    let why = match x.roles[r].condition {
                        RoleCondition::Missing => "missing",
                        RoleCondition::Faulty => "recorded failed",
                        _ => "not in sync",
                    };
                    format!("role {r} ({why})")
                })
                .collect();
            out!(
                "state: degraded: {} unavailable; every byte can still be read",
                list.join(", ")
            );
        }
        Health::DataLost { reason, .. } => {
            out!("state: cannot start: {reason}");
            return Err(Failure {
                code: EXIT_CANNOT_START,
                message: format!("the {} volume cannot start: {reason}", x.layout),
            });
        }
        other => out!("state: {other:?}"),
    }
    if !unreadable.is_empty() {
        return Err(format!(
            "unreadable member{}: {} (the status above is from the others; leave {} out to start the volume without {})",
            if unreadable.len() == 1 { "" } else { "s" },
            unreadable.join("; "),
            if unreadable.len() == 1 { "it" } else { "them" },
            if unreadable.len() == 1 { "it" } else { "them" },
        )
        .into());
    }
    Ok(())
}

/// A progress bar on stderr: redrawn in place on a terminal; elsewhere (a
/// log file, a CI job) one line at each tenth of the work, so that a log
/// keeps a few lines rather than a carriage return per callback.
fn progress_bar(started: Instant) -> impl Fn(Progress) + Sync {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let shown_tenth = std::sync::atomic::AtomicU64::new(u64::MAX);
    move |p: Progress| {
        let frac = if p.total_bytes == 0 {
            1.0
        } else {
            (p.done_bytes as f64 / p.total_bytes as f64).min(1.0)
        };
        if !terminal {
            let tenth = (frac * 10.0) as u64;
            if shown_tenth.swap(tenth, std::sync::atomic::Ordering::Relaxed) == tenth {
                return;
            }
        }
        let width = 40;
        let filled = (frac * width as f64) as usize;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "{}[{}{}] {:5.1}% {:8.1} MiB/s{}",
            if terminal { "\r" } else { "" },
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            p.done_bytes as f64 / secs / (1 << 20) as f64,
            if terminal { "" } else { "\n" }
        );
        let _ = err.flush();
    }
}

/// Ends [`progress_bar`]'s line on a terminal (elsewhere each line ended).
fn end_progress_line() {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    check_members(&cli.cmd)?;
    match cli.cmd {
        Cmd::Create {
            level,
            chunk,
            data_offset,
            resync,
            force,
            m,
        } => {
            let layout = VolumeLayout::parse(&level).map_err(|e| match e {
                EngineError::Invalid { field, rule } if field == "level" => {
                    Failure::usage(format!("--level: {rule}"))
                }
                e => Failure::usage(format!("--level: {e}")),
            })?;
            // `single` parses as RAID1 (over one member): more members
            // would silently make a mirror.
            if level.trim().eq_ignore_ascii_case("single") && m.members.len() != 1 {
                return Err(Failure::usage(format!(
                    "--level single takes exactly 1 member, got {} (a mirror is --level raid1)",
                    m.members.len()
                )));
            }
            let chunk_bytes =
                parse_size(&chunk, 1024).map_err(|e| Failure::usage(format!("--chunk: {e}")))?;
            let (devs, secret) = open_members(&m)?;
            let mut opts = CreateOptions::new(layout);
            opts.chunk_sectors = chunk_bytes / 512;
            opts.data_offset_sectors = data_offset;
            opts.secret = secret;
            let sectors = opts.chunk_sectors;
            let create_error = |e: EngineError| {
                // A member too small for mdadm's default data offset: the
                // user gave no offset, so say where it comes from.
                let hint = match &e {
                    EngineError::Raid(raid::RaidError::InvalidGeometry { field, rule })
                        if data_offset.is_none()
                            && field.starts_with("dev_sectors[")
                            && rule.contains("data offset") =>
                    {
                        format!(
                            " (the data offset is mdadm's default for these members and --chunk {chunk}, \
                             which keeps room to grow the array; give a smaller --chunk, larger \
                             members, or --data-offset)"
                        )
                    }
                    _ => String::new(),
                };
                let msg = flag_error(e, |f| match f {
                    "chunk_sectors" => Some(format!("--chunk {chunk} ({sectors} sectors)")),
                    "data_offset_sectors" => Some("--data-offset".into()),
                    // The library's name for the member list.
                    "devices" => Some("the MEMBERS arguments".into()),
                    // The geometry's name for a member's size.
                    f => f
                        .strip_prefix("dev_sectors[")
                        .and_then(|i| i.strip_suffix(']')?.parse::<usize>().ok())
                        .and_then(|i| {
                            Some(format!(
                                "{} (devices[{i}])",
                                shown_member(m.members.get(i)?)
                            ))
                        }),
                });
                msg + &hint
            };
            // The options against the members' count and sizes first: a
            // typo is said before the devices' contents are (a refusal
            // for a member of another volume, then the same typo after
            // --force).
            opts.check(&devs).map_err(create_error)?;
            if !force {
                refuse_members_of_volumes(&m, &devs)?;
            }
            let v = Volume::create(devs, &opts).map_err(create_error)?;
            // A failed resync closes the volume too (as `with_volume`
            // does), so that the superblocks record the member whose I/O
            // failed as failed (until then only the volume in memory
            // knows) and a clean shutdown. A resync fails only through a
            // member's I/O error, which marks that member failed: the
            // volume is then degraded, and a flush of a degraded volume
            // keeps every bitmap bit, so the regions not yet resynced stay
            // marked and the next assembly resyncs them.
            let resynced = if resync {
                v.resync_all()
                    .map(|_| ())
                    .map_err(|e| format!("--resync: {e}"))
            } else {
                Ok(())
            };
            let closed = v.close().map_err(|e| e.to_string());
            if let Err(e) = resynced {
                print_status(&v);
                return Err(e.into());
            }
            closed?;
            print_status(&v);
        }
        Cmd::Status { m } => status(&m)?,
        Cmd::ServeNbd { listen, exports } => {
            const FORM: &str = "a HOST:PORT to listen on, like 0.0.0.0:10809";
            // Typed wrong (exit 2) is told before binding; a well-formed
            // address that cannot be bound (in use, not this host's) is an
            // operation that failed (exit 1).
            let well_formed = listen.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok()
            });
            if !well_formed {
                return Err(Failure::usage(format!(
                    "--listen: {} is not HOST:PORT ({FORM})",
                    quote(&listen)
                )));
            }
            let shown = quote(&listen);
            let server = NbdServer::bind(&listen).map_err(|e| match e {
                EngineError::Io { source, .. } => format!("--listen {shown}: {source} ({FORM})"),
                e => format!("--listen {shown}: {e}"),
            })?;
            let mut names = std::collections::BTreeSet::new();
            // The server claims nothing itself (an embedding program may
            // export files it also uses); this process serves its exports
            // only, so it holds their claims until it ends. Each export is
            // a holder of its own: one file exported under two names would
            // let two clients (two volumes) write it.
            let mut claims = Vec::new();
            for spec in exports {
                let (name, rest) = spec.split_once('=').ok_or_else(|| {
                    // The export as typed, quoted short: a long one is not
                    // echoed whole.
                    Failure::usage(format!(
                        "--export {}: expected NAME=PATH[@IP+IP]",
                        quote(&spec)
                    ))
                })?;
                // The export by its name: what is wrong with its path or
                // addresses names them (the path once, by the device's
                // own error where there is one).
                let flag = format!("--export {}", quote(name));
                // The server replaces an export of the same name: a client
                // asking for it would get the last one given.
                if !names.insert(name.to_string()) {
                    return Err(Failure::usage(format!(
                        "{flag}: the export name is given twice"
                    )));
                }
                let (path, allow) = match rest.split_once('@') {
                    Some((p, ips)) => {
                        let ips = ips
                            .split('+')
                            .map(|s| {
                                if s.is_empty() {
                                    return Err(format!(
                                        "{flag}: an empty address in the allow-list after @ (NAME=PATH@IP+IP)"
                                    ));
                                }
                                s.parse::<IpAddr>().map_err(|_| {
                                    format!("{flag}: {} is not an IP address", quote(s))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(Failure::usage)?;
                        (p, AllowList::Only(ips))
                    }
                    None => (rest, AllowList::Any),
                };
                if path.is_empty() {
                    return Err(Failure::usage(format!("{flag}: PATH is empty")));
                }
                member_syntax(path).map_err(|rule| {
                    Failure::usage(format!("{flag}: {}: {rule}", shown_member(path)))
                })?;
                let dev = open_member(path, false, None).map_err(|e| format!("{flag}: {e}"))?;
                let holder = raid_engine::ClaimHolder::new(format!("raid-engine serve-nbd {flag}"));
                claims.push(dev.claim(&holder).map_err(|e| format!("{flag}: {e}"))?);
                server
                    .add_export(Export {
                        name: name.to_string(),
                        device: dev,
                        allow,
                        read_only: false,
                    })
                    .map_err(|e| format!("{flag}: {e}"))?;
            }
            eprintln!(
                "serving NBD on {}",
                server.local_addr().map_err(|e| e.to_string())?
            );
            let h = server.spawn().map_err(|e| e.to_string())?;
            let stop = signals()?;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            h.shutdown();
        }
        Cmd::Expose {
            mount,
            name,
            loop_dev,
            poll_us,
            busy_poll_us,
            m,
        } => {
            let poll = (
                Duration::from_micros(poll_us),
                Duration::from_micros(busy_poll_us),
            );
            expose(&mount, &name, loop_dev, poll, &m)?;
        }
        Cmd::Rebuild {
            role,
            replacement,
            rate,
            force,
            m,
        } => {
            // Every argument is checked before the role is failed: a typo
            // must not leave a healthy volume degraded.
            let rate = rate
                .map(|r| parse_size(&r, 1).map_err(|e| Failure::usage(format!("--rate: {e}"))))
                .transpose()?;
            let dev = open_member(&replacement, m.buffered, m.nbd_timeout)
                .map_err(|e| format!("--replacement: {e}"))?;
            // A member of another volume (not this one's own device, old
            // or failed: the library decides about those).
            if !force && let Some((uuid, held)) = member_of_a_volume(&dev) {
                // Members that cannot be examined are for the assembly
                // below to refuse, by name.
                let (members, _) = open_members(&m)?;
                if Volume::examine(&members, None).is_ok_and(|x| x.uuid != uuid) {
                    return Err(format!(
                        "--replacement {} holds {held}: the rebuild would overwrite it; give --force to rebuild onto it anyway",
                        shown_member(&replacement)
                    )
                    .into());
                }
            }
            with_volume(&m, Some(role), |v| {
                // Checked and claimed at once, and kept claimed until the
                // swap: nobody can take it once the role is failed.
                let reserved = v.reserve_replacement(role, dev).map_err(|e| match e {
                    EngineError::Invalid { .. } => flag_error(e, |f| match f {
                        "role" => Some(format!("--role {role}")),
                        "device" => Some("--replacement".into()),
                        _ => None,
                    }),
                    e => format!("--replacement: {e}"),
                })?;
                if matches!(
                    v.status().get(role).map(|s| s.state),
                    Some(raid_engine::MemberState::Active)
                ) {
                    // Refused when the role holds the last copy of some data.
                    v.fail_member(role).map_err(|e| {
                        format!("role {role} is active and cannot be failed to be replaced: {e}")
                    })?;
                }
                v.replace_reserved(reserved).map_err(|e| e.to_string())?;
                let bar = progress_bar(Instant::now());
                let p = v
                    .rebuild(
                        role,
                        &RebuildOptions {
                            max_bytes_per_sec: rate,
                            progress: Some(&bar),
                        },
                    )
                    .map_err(|e| {
                        end_progress_line();
                        recovery_error("rebuild", role, e)
                    })?;
                end_progress_line();
                out!("rebuilt role {role}: {} bytes copied", p.done_bytes);
                Ok(())
            })?;
        }
        Cmd::Readd { role, m } => with_volume(&m, None, |v| {
            let bar = progress_bar(Instant::now());
            let p = v
                .readd(
                    role,
                    None,
                    &RebuildOptions {
                        max_bytes_per_sec: None,
                        progress: Some(&bar),
                    },
                )
                .map_err(|e| {
                    end_progress_line();
                    recovery_error("readd", role, e)
                })?;
            end_progress_line();
            out!("re-added role {role}: {} bytes resynced", p.done_bytes);
            Ok(())
        })?,
        Cmd::Scrub { repair, m } => with_volume(&m, None, |v| {
            let r = v.scrub(repair).map_err(|e| match e {
                EngineError::Interrupted(how_far) => format!(
                    "scrub interrupted by a signal ({how_far}){}",
                    if repair {
                        "; the mismatches found so far were repaired"
                    } else {
                        ""
                    }
                ),
                e => e.to_string(),
            })?;
            out!(
                "read {} bytes, checked {} of {} volume bytes, {} mismatches{}",
                r.bytes_read,
                r.checked_bytes,
                v.size(),
                r.mismatches.len(),
                if repair { " (repaired)" } else { "" }
            );
            for mm in &r.mismatches {
                out!(
                    "  at {} (+{} sectors): members {:?}",
                    mm.at,
                    mm.sectors,
                    mm.members
                );
            }
            for f in &r.failed_members {
                out!(
                    "role {} ({}) failed during the scrub ({}): marked failed, scrub carried on without it",
                    f.role,
                    f.device,
                    f.error
                );
            }
            let health = v.health();
            match &health {
                Health::Degraded { unavailable } => {
                    // A RAID6 with one member missing checks in full and
                    // exits 0: the output says it is degraded all the same.
                    let roles: Vec<String> = unavailable.iter().map(|r| r.to_string()).collect();
                    out!(
                        "degraded: role{} {} unavailable; readd or rebuild {}",
                        if roles.len() == 1 { "" } else { "s" },
                        roles.join(", "),
                        if roles.len() == 1 { "it" } else { "them" }
                    );
                }
                Health::DataLost { reason, .. } => out!("data lost: {reason}"),
                _ => {}
            }
            if r.unverifiable_bytes > 0 {
                let why = match health {
                    Health::Whole => "no redundancy: a single copy",
                    _ => "degraded",
                };
                out!("{} bytes not checked ({why})", r.unverifiable_bytes);
            }
            if r.unreadable_bytes > 0 {
                out!(
                    "{} bytes not checked (no readable copy: data lost)",
                    r.unreadable_bytes
                );
            }
            if !r.mismatches.is_empty() && !repair {
                return Err("mismatches found".into());
            }
            if !r.failed_members.is_empty() {
                // An I/O error (exit 1), though the scrub went on: the
                // volume lost a member and needs an operator.
                let roles: Vec<String> = r
                    .failed_members
                    .iter()
                    .map(|f| format!("role {} ({})", f.role, f.device))
                    .collect();
                return Err(format!(
                    "{} failed during the scrub and {} now marked failed: the volume is {}",
                    roles.join(", "),
                    if roles.len() == 1 { "is" } else { "are" },
                    if health.loses_data() {
                        "missing data"
                    } else {
                        "degraded; rebuild or readd"
                    }
                )
                .into());
            }
            if !r.is_complete() {
                return Err(Failure {
                    code: EXIT_SCRUB_INCOMPLETE,
                    message: format!(
                        "scrub incomplete: {} of {} volume bytes not checked",
                        r.unverifiable_bytes + r.unreadable_bytes,
                        v.size()
                    ),
                });
            }
            Ok(())
        })?,
    }
    Ok(())
}

/// Start the volume, run `f` on it and close it whatever `f` answers, so
/// that a refused or failed command does not leave the members recorded
/// as not shut down cleanly. `f`'s failure comes first.
///
/// A SIGTERM or SIGINT while `f` runs interrupts a rebuild, readd or scrub
/// at its next step ([`Volume::interrupt`]), and the volume is closed as
/// for any failure; a second signal ends the process at once.
fn with_volume(
    m: &Start,
    replacing: Option<usize>,
    f: impl FnOnce(&Volume) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let v = assemble(m, replacing)?;
    let stop = match interruptible() {
        Ok(stop) => stop,
        Err(e) => {
            let _ = v.close();
            return Err(e.into());
        }
    };
    let finished = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::SeqCst) {
                if stop.load(Ordering::SeqCst) {
                    v.interrupt();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let result = f(&v);
        finished.store(true, Ordering::SeqCst);
        result
    });
    let closed = v.close().map_err(|e| Failure::from(e.to_string()));
    result.and(closed)
}

/// A flag set by the first SIGTERM or SIGINT; the second one exits at once
/// (status 1), so that a command that does not stop can still be ended.
fn interruptible() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first, so that it sees the flag before this signal
        // sets it: it exits only on a signal after the first.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_ERROR.into(), stop.clone())
            .map_err(|e| format!("signal: {e}"))?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal: {e}"))?;
    }
    Ok(stop)
}

/// The message of a rebuild or readd of `role` that failed with `e`.
fn recovery_error(what: &str, role: usize, e: EngineError) -> String {
    match e {
        EngineError::Interrupted(how_far) => format!(
            "{what} of role {role} interrupted by a signal ({how_far}): role {role} stays failed; run {what} again to start it over"
        ),
        e => flag_error(e, |f| (f == "role").then(|| format!("--role {role}"))),
    }
}

/// `expose`: serve the volume as a FUSE file (and a loop device on it)
/// until SIGTERM/SIGINT or an unmount.
#[cfg(feature = "fuse")]
fn expose(
    mount: &std::path::Path,
    name: &str,
    loop_dev: bool,
    (adaptive_poll, busy_poll): (Duration, Duration),
    m: &Start,
) -> Result<(), Failure> {
    let v = Arc::new(assemble(m, None)?);
    let opts = raid_engine::fuse::ExposeOptions::default()
        .with_adaptive_poll(adaptive_poll)
        .with_busy_poll(busy_poll);
    let exposed = signals().map_err(Failure::from).and_then(|stop| {
        raid_engine::fuse::expose_with(v.clone(), mount, name, &opts)
            .map(|exp| (stop, exp))
            .map_err(|e| {
                // A --name that is not a file name is typed wrong (usage);
                // a --mount that is not an empty directory is what is found
                // there (the operation failed).
                let typed = matches!(&e, EngineError::Invalid { field, .. } if field == "name");
                let message = flag_error(e, |f| match f {
                    "mountpoint" => Some("--mount".into()),
                    "name" => Some("--name".into()),
                    "adaptive_poll" => Some("--poll-us".into()),
                    "busy_poll" => Some("--busy-poll-us".into()),
                    _ => None,
                });
                if typed {
                    Failure::usage(message)
                } else {
                    Failure::from(message)
                }
            })
    });
    // Refused (a mount point that is not an empty directory, a bad
    // --name): the volume is closed as it was found, not left recorded as
    // not shut down cleanly.
    let (stop, exp) = match exposed {
        Ok(x) => x,
        Err(f) => {
            let _ = v.close();
            return Err(f);
        }
    };
    let mut attached = None;
    if loop_dev {
        // Direct I/O: the loop driver sends its requests to the
        // FUSE file asynchronously, several at once. The device is
        // remembered as one attachment (its disk sequence number), so
        // that the detach at the end never touches a device number that
        // someone else attached in between.
        let dev = csi_node::LoopDevice::attach_with(
            exp.file(),
            &csi_node::AttachOptions {
                direct_io: true,
                ..csi_node::AttachOptions::default()
            },
        )
        .map_err(|e| {
            naming_once(
                "attaching a loop device",
                "attaching a loop device to ",
                &quote_path(exp.file()),
                &e.to_string(),
            )
        })?;
        out!("{}", dev.path().display());
        attached = Some(dev);
    } else {
        out!("{}", exp.file().display());
    }
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::SeqCst) && !exp.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Detach before the unmount: once the FUSE mount is gone the kernel
    // no longer names the device's backing file under it. While the device
    // stays open (a file system still mounted on it) or cannot be detached,
    // the unmount below keeps serving it and returns once its last user has
    // let it go; a failed detach is said at once and makes the exit status
    // non-zero.
    let detached = match &attached {
        None => Ok(()),
        Some(dev) => match dev.detach_and_wait(Duration::from_secs(10)) {
            Ok(true) => Ok(()),
            Ok(false) => {
                eprintln!(
                    "{} is still open: served until its last user closes it, \
                     then the kernel detaches it",
                    quote_path(dev.path())
                );
                Ok(())
            }
            Err(e) => {
                let e = format!(
                    "{}; served until it is detached",
                    naming_once(
                        "detaching",
                        "detaching ",
                        &quote_path(dev.path()),
                        &e.to_string()
                    )
                );
                eprintln!("raid-engine: {e}");
                Err(e)
            }
        },
    };
    exp.unmount().map_err(|e| e.to_string())?;
    eprintln!("volume closed");
    detached.map_err(Failure::from)
}

#[cfg(not(feature = "fuse"))]
fn expose(
    _: &std::path::Path,
    _: &str,
    _: bool,
    _: (Duration, Duration),
    _: &Start,
) -> Result<(), Failure> {
    Err("expose: this raid-engine was built without the `fuse` feature".into())
}

fn signals() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal: {e}"))?;
    }
    Ok(stop)
}

/// A value one of this program's parsers refused (`--role`,
/// `--data-offset`, `--poll-us`, `--nbd-timeout`, ...) as one line,
/// `--FLAG: rule`, the form of the values checked after parsing (`--chunk:
/// ...`), instead of clap's several lines (`error: invalid value ... For
/// more information, try '--help'.`). `None` for any other clap error.
fn value_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let rule = std::error::Error::source(e)?;
    // `--role <ROLE>`: the flag without its value's name.
    let flag = match e.get(ContextKind::InvalidArg)? {
        ContextValue::String(arg) => arg.split(' ').next().unwrap_or(arg),
        _ => return None,
    };
    Some(format!("{flag}: {rule}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match value_error(&e) {
            Some(line) => {
                eprintln!("raid-engine: {line}");
                return ExitCode::from(EXIT_USAGE);
            }
            // Help, version, and clap's other usage errors as clap says them.
            None => e.exit(),
        },
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("raid-engine: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{naming_once, unreadable_line};

    /// A device or file is named once: not again where the error names it,
    /// and where the error names only a longer path it is a prefix of
    /// (`/dev/loop10` for `/dev/loop1`), it is said.
    #[test]
    fn naming_once_says_a_path_the_error_names_only_as_a_prefix() {
        let once = naming_once("detaching", "detaching ", "/dev/loop1", "/dev/loop1: busy");
        assert_eq!(once, "detaching: /dev/loop1: busy");
        let said = naming_once("detaching", "detaching ", "/dev/loop1", "/dev/loop10: busy");
        assert_eq!(said, "detaching /dev/loop1: /dev/loop10: busy");
    }

    /// A member with a short name is named even where its name is part of
    /// a word of the error (before, a substring test took `d` as named by
    /// "directory" and the line named no member).
    #[test]
    fn a_short_member_name_inside_a_word_is_still_said() {
        let e = "No such file or directory (os error 2)";
        for spec in ["d", "o", "a"] {
            assert_eq!(unreadable_line(spec, e.into()), format!("{spec}: {e}"));
        }
        let named = "member a: no raid-engine superblock at 4 KiB";
        assert_eq!(unreadable_line("a", named.into()), named);
    }
}
