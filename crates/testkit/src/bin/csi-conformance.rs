//! `csi-conformance`: runs the csi-testkit suite against a CSI endpoint.
//!
//! ```text
//! csi-conformance --endpoint unix:///csi/csi.sock [--node-endpoint unix:///...]
//!     [--staging-dir DIR] [--target-dir DIR] [--params k=v ...] [--mutable-params k=v ...]
//!     [--second-node-id ID] [--volume-size SIZE] [--filter PATTERN] [--cases N] [--seed N]
//!     [--block-targets-may-be-files] [--junit FILE] [--case-timeout S] [--connect-timeout S]
//! ```
//!
//! Prints `PASS name`, `FAIL name: reason` or `SKIP name: reason` per case,
//! a `WARN name: what` line under a case for each thing the driver did that
//! the spec allows or tells the CO to tolerate but users' tools may not
//! expect, then `N passed, N failed, N skipped` (and `, N warnings`).
//!
//! Exit status: 0 when no case failed (warnings included), 1 when a case
//! failed, 2 on bad input (arguments, a `--filter` that matches no case, an
//! endpoint that cannot be reached or
//! does not answer GetPluginInfo within `--connect-timeout`, a
//! `--junit` path that cannot be written — checked before the run starts),
//! each error on one line of stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use csi_testkit::{Config, Suite};
use csi_types::RawCsi;
use csi_types::client::{Client, ConnectOptions};

/// Run the CSI conformance suite against a plugin's endpoint.
#[derive(Parser, Debug)]
#[command(name = "csi-conformance", version)]
struct Args {
    /// The controller (and identity) endpoint: `unix:///path` or `tcp://ip:port`.
    #[arg(long, required_unless_present = "list")]
    endpoint: Option<String>,
    /// The node endpoint, when it differs from `--endpoint`.
    #[arg(long)]
    node_endpoint: Option<String>,
    /// Directory for staging paths (created if missing).
    #[arg(long)]
    staging_dir: Option<PathBuf>,
    /// Directory for target paths (created if missing).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// A StorageClass parameter sent with every CreateVolume, as `key=value`.
    #[arg(long = "params", value_parser = key_value, num_args = 1..)]
    params: Vec<(String, String)>,
    /// A mutable parameter the driver accepts in ControllerModifyVolume, as `key=value`.
    #[arg(long = "mutable-params", value_parser = key_value, num_args = 1..)]
    mutable_params: Vec<(String, String)>,
    /// A second node the controller knows, for the publish-to-another-node case.
    #[arg(long, value_parser = node_id)]
    second_node_id: Option<String>,
    /// Size of the volumes the suite creates: bytes or a Kubernetes quantity (`1Gi`, `1G`,
    /// `1e9`). At least 1 byte: with 0, "a larger capacity" is 0 too, and a driver that
    /// rightly answers OK would fail `create_volume/incompatible_existing`.
    // A leading minus reaches `volume_size` (which says what is wrong) instead of being
    // taken for an unknown flag; `-0` is zero there, as in Kubernetes.
    #[arg(long, default_value = "1Mi", allow_hyphen_values = true, value_parser = volume_size)]
    volume_size: u64,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Random sequences the state-machine property runs (0 skips it).
    // A negative number reaches `cases` (which says what is wrong) instead of being taken
    // for an unknown flag.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = cases)]
    cases: u32,
    /// Seed of the state machine's random sequences (same seed, same sequences).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = seed)]
    seed: u64,
    /// Concurrent calls in the concurrency cases, from 1 (with 0 they would pass without a
    /// call) to 1024 (each is a task and a call in flight; more only exhausts the runner).
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = concurrency)]
    concurrency: usize,
    /// Seconds a case may take before it fails as hung.
    #[arg(long, default_value_t = 300, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    case_timeout: u64,
    /// Seconds to connect to an endpoint and get an answer to GetPluginInfo (any answer,
    /// an error too) before the run starts; an endpoint that accepts connections but never
    /// answers is refused as unreachable instead of hanging the runner.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    connect_timeout: u64,
    /// Accept a regular file as a published BLOCK volume's target, for
    /// drivers (like the in-memory reference driver) that cannot make device nodes.
    #[arg(long)]
    block_targets_may_be_files: bool,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// List the case names and exit.
    #[arg(long)]
    list: bool,
}

/// `--volume-size`: a size as `storage_units` reads it (bytes, `1Gi`, `1G`, `1e9`), from 1 byte
/// to the largest size CSI carries (an `int64`). clap names the flag in front of the error.
fn volume_size(s: &str) -> Result<u64, String> {
    let bytes = storage_units::ByteSize::parse(s)
        .map_err(|e| e.to_string())?
        .bytes();
    if bytes == 0 {
        return Err("must be at least 1 byte".to_string());
    }
    if bytes > i64::MAX as u64 {
        return Err(format!(
            "{s:?} is too large: a CSI size is at most {} bytes",
            i64::MAX
        ));
    }
    Ok(bytes)
}

/// `--cases`: a count, where a minus sign gets a message rather than "invalid digit".
fn cases(s: &str) -> Result<u32, String> {
    if s.trim_start().starts_with('-') {
        return Err("must be a positive number, or 0 to skip properties/state_machine".to_string());
    }
    s.parse::<u32>().map_err(|e| e.to_string())
}

/// A count or a number of seconds: a whole number from 1. A negative one reaches this
/// parser (`allow_negative_numbers`) and is told the rule, instead of being taken for an
/// unknown flag or answered "invalid digit".
fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + Default + PartialEq,
{
    if s.trim_start().starts_with('-') {
        return Err("must be at least 1".to_string());
    }
    match s.parse::<T>() {
        Ok(n) if n == T::default() => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The most concurrent calls `--concurrency` takes.
const MAX_CONCURRENCY: usize = 1024;

/// `--concurrency`: from 1 to [`MAX_CONCURRENCY`]. A huge number used to be taken, and the
/// concurrency cases spawned that many tasks until the runner ran out of memory.
fn concurrency(s: &str) -> Result<usize, String> {
    match at_least_one::<usize>(s) {
        Ok(n) if n > MAX_CONCURRENCY => Err(format!(
            "must be at most {MAX_CONCURRENCY} (each is a task and a call in flight)"
        )),
        other => other,
    }
}

/// `--seed`: any whole number from 0 to 2^64 - 1; a negative one is told so.
fn seed(s: &str) -> Result<u64, String> {
    if s.trim_start().starts_with('-') {
        return Err("must be a whole number from 0 to 18446744073709551615".to_string());
    }
    s.parse::<u64>().map_err(|e| e.to_string())
}

/// `--second-node-id`: a node id as CSI defines one, so that a bad one is told here rather
/// than failing the case that sends it with the driver's INVALID_ARGUMENT.
fn node_id(s: &str) -> Result<String, String> {
    csi_types::ids::NodeId::new(s)
        .map(String::from)
        .map_err(|e| e.to_string())
}

/// The pairs of a repeatable `key=value` flag as a map; a key given twice is refused rather
/// than the last value silently winning.
fn unique_pairs(
    flag: &str,
    pairs: Vec<(String, String)>,
) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(first) = map.insert(k.clone(), v.clone()) {
            return Err(format!(
                "{flag}: key {k:?} is given twice ({first:?} and {v:?}); give each key once"
            ));
        }
    }
    Ok(map)
}

/// `--staging-dir`/`--target-dir`: absolute (CSI paths are; a relative one would make every
/// node case fail with the driver's INVALID_ARGUMENT), and a directory that exists or can be
/// made, checked before the run.
fn work_dir(flag: &str, dir: &std::path::Path) -> Result<PathBuf, String> {
    let dir = std::path::absolute(dir).map_err(|e| format!("{flag} {}: {e}", dir.display()))?;
    match std::fs::metadata(&dir) {
        Ok(m) if !m.is_dir() => Err(format!("{flag} {}: is not a directory", dir.display())),
        Ok(_) => Ok(dir),
        Err(_) => std::fs::create_dir_all(&dir)
            .map(|()| dir.clone())
            .map_err(|e| format!("{flag} {}: cannot create it: {e}", dir.display())),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Bad input: one line on stderr, exit status 2.
fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("csi-conformance: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print them, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans several lines (what is wrong, then usage
            // and a hint after a blank line); keep what is wrong, on one line.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            return bad_input(format!(
                "{} (see --help)",
                what.join(" ").trim_start_matches("error: ")
            ));
        }
    };
    if args.list {
        for c in csi_testkit::all_cases() {
            println!("{}  {}", c.name, c.about);
        }
        return ExitCode::SUCCESS;
    }
    // A mistyped filter used to run nothing and exit 0 ("0 passed, 0 failed, 0 skipped"),
    // which a CI job reads as success.
    if let Some(f) = &args.filter
        && !csi_testkit::all_cases()
            .iter()
            .any(|c| c.name.contains(f.as_str()))
    {
        return bad_input(format!(
            "--filter {f:?} matches no case (--list prints their names)"
        ));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("csi-conformance: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

/// Connects to `endpoint` and waits for an answer to GetPluginInfo, all within `wait`. Whether
/// the answer is right is for the identity cases to judge; any answer, an error status too,
/// shows that something serves gRPC there. Without a deadline, a socket whose owner accepts but
/// never answers (a hung driver, or not a gRPC server) kept the runner waiting forever, silent.
async fn connect(endpoint: &str, wait: std::time::Duration) -> Result<Client, String> {
    use csi_types::RawCsi as _;
    let no_answer = |what: &str| {
        format!(
            "cannot connect to {endpoint}: {what} within {} s (--connect-timeout): \
             is the driver hung, or not a gRPC server?",
            wait.as_secs()
        )
    };
    let mut options = ConnectOptions::default();
    options.connect_timeout = wait;
    let client = match tokio::time::timeout(wait, Client::connect_with(endpoint, options)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            // The client's message starts with the endpoint too; say it once.
            let e = e.to_string();
            let why = e
                .strip_prefix(&format!("connecting to {endpoint}: "))
                .unwrap_or(&e);
            return Err(format!("cannot connect to {endpoint}: {why}"));
        }
        Err(_) => return Err(no_answer("the connection was accepted but not set up")),
    };
    let probe = client.raw_get_plugin_info(csi_types::proto::GetPluginInfoRequest {});
    match tokio::time::timeout(wait, probe).await {
        // UNAVAILABLE is the client's own answer when the connection fails (a peer that
        // does not speak HTTP/2, or closes) or stops answering its pings (with a
        // --connect-timeout longer than the client's keepalive, 5 min + 20 s): nothing serves
        // gRPC there, and every case would fail the same way.
        Ok(Err(e)) if e.code() == csi_types::Code::Unavailable => Err(format!(
            "cannot connect to {endpoint}: GetPluginInfo failed: {e}"
        )),
        Ok(_) => Ok(client),
        Err(_) => Err(no_answer("no answer to GetPluginInfo")),
    }
}

async fn run(args: Args) -> ExitCode {
    let tmp = std::env::temp_dir().join(format!("csi-conformance-{}", std::process::id()));
    let mut config = Config::new(&tmp);
    if let Some(d) = args.staging_dir {
        match work_dir("--staging-dir", &d) {
            Ok(d) => config.staging_dir = d,
            Err(e) => return bad_input(e),
        }
    }
    if let Some(d) = args.target_dir {
        match work_dir("--target-dir", &d) {
            Ok(d) => config.target_dir = d,
            Err(e) => return bad_input(e),
        }
    }
    match unique_pairs("--params", args.params) {
        Ok(p) => config.parameters = p,
        Err(e) => return bad_input(e),
    }
    match unique_pairs("--mutable-params", args.mutable_params) {
        Ok(p) => config.mutable_parameters = p,
        Err(e) => return bad_input(e),
    }
    config.second_node_id = args.second_node_id;
    config.volume_size = args.volume_size;
    config.filter = args.filter;
    config.proptest_cases = args.cases;
    config.seed = args.seed;
    config.concurrency = args.concurrency;
    config.case_timeout = std::time::Duration::from_secs(args.case_timeout);
    config.block_targets_may_be_files = args.block_targets_may_be_files;

    // An unwritable report path is found now, not after a long run: the
    // file is created (truncated) here and written at the end.
    let junit = match &args.junit {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some((path.clone(), f)),
            Err(e) => return bad_input(format!("cannot write {}: {e}", path.display())),
        },
    };
    let endpoint = args.endpoint.unwrap_or_default();
    let wait = std::time::Duration::from_secs(args.connect_timeout);
    let controller: Arc<dyn RawCsi> = match connect(&endpoint, wait).await {
        Ok(c) => Arc::new(c),
        Err(e) => return bad_input(e),
    };
    let node: Arc<dyn RawCsi> = match &args.node_endpoint {
        None => controller.clone(),
        Some(ep) => match connect(ep, wait).await {
            Ok(c) => Arc::new(c),
            Err(e) => return bad_input(e),
        },
    };
    let report = Suite::new(config, controller, node)
        .run_with(|r| {
            println!("{r}");
            for w in &r.warnings {
                println!("WARN {}: {w}", r.name);
            }
        })
        .await;
    println!("{}", report.summary());
    if let Some((path, mut file)) = junit {
        use std::io::Write;
        if let Err(e) = file
            .write_all(report.to_junit("csi-conformance").as_bytes())
            .and_then(|()| file.sync_all())
        {
            eprintln!("csi-conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
