//! The `local` CSI driver binary: `local [OPTIONS]` serves it, `local demo`
//! runs it end to end against itself.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use csi_types::endpoint::Endpoint;
use csi_types::ids::{NodeId, PluginName};
use csi_types::logging::LogFormat;
use local::config::{self, Config};

/// A single-node CSI driver: volumes are directories and sparse images under
/// --state-dir, published with bind mounts and loop devices.
#[derive(Parser, Debug)]
// Negative numbers reach the value parsers (`--capacity -1`, `--max-volumes-per-node -3`:
// "must not be negative") instead of being taken for an unknown flag.
#[command(name = "local", version, about, long_about = None, allow_negative_numbers = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Where to serve CSI (unix:///path/to/csi.sock).
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///run/csi-local/csi.sock"
    )]
    endpoint: String,

    /// Directory for volume data and the driver's state.
    #[arg(long, default_value = "/var/lib/csi-local")]
    state_dir: PathBuf,

    /// This node's id (default: the host name).
    #[arg(long)]
    node_id: Option<String>,

    /// Bytes the driver may provision, volumes and snapshots together (e.g. 100Gi).
    #[arg(long, default_value = "100Gi", value_parser = config::parse_size)]
    capacity: u64,

    /// The attach limit reported by NodeGetInfo and enforced by ControllerPublishVolume (0: none).
    #[arg(long, default_value_t = 16, value_parser = config::parse_attach_limit)]
    max_volumes_per_node: u64,

    /// The node's topology, KEY=VALUE, repeatable (default: topology.local.csi.example.com/node=<node-id>).
    #[arg(long = "topology", value_name = "KEY=VALUE")]
    topology: Vec<String>,

    /// A time limit for a program the node runs, NAME=DURATION, repeatable (e.g. mkfs.xfs=15m;
    /// tools: blkid, mkfs.ext4, mkfs.xfs, e2fsck, resize2fs, xfs_growfs, losetup, wipefs).
    #[arg(long = "tool-timeout", value_name = "NAME=DURATION")]
    tool_timeout: Vec<String>,

    /// The plugin name reported by GetPluginInfo.
    #[arg(long, default_value = config::DEFAULT_DRIVER_NAME)]
    driver_name: String,

    /// Serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9808).
    #[arg(long, value_name = "ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,

    /// Log format on stderr: text or json (one JSON object per line).
    #[arg(long, default_value = "text")]
    log_format: LogFormat,

    /// Microseconds after each call during which an idle-priority thread
    /// keeps the serving processor from halting, while calls come one at a
    /// time: `0` (the default) never,
    /// N always, `auto` 2000 only where the guest halts when idle (cpuidle
    /// driver `none`) and no CPU limit applies (see the README).
    #[arg(long, value_name = "auto|MICROSECONDS", default_value = "0")]
    idle_poll: local::poll::Setting,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the driver (the default).
    Serve,
    /// Start the driver on a temporary socket and state directory and drive
    /// it end to end over gRPC: create, stage, publish, write, snapshot,
    /// clone, read-only publish, expand, stats, teardown.
    Demo,
}

fn logging(format: LogFormat, default: &str) {
    if let Err(e) = csi_types::logging::init(format, default) {
        eprintln!("local: logging: {e}");
    }
}

/// `--driver-name`, checked by csi-types' rule for a plugin name, the error naming the flag and
/// the rule (not `PluginName::new`, whose INTERNAL "built by the driver" is for a name in the
/// driver's code).
fn driver_name(value: &str) -> Result<PluginName, String> {
    value.parse().map_err(|e| format!("--driver-name: {e}"))
}

fn config(cli: &Cli) -> Result<Config, String> {
    let node_id = cli.node_id.clone().unwrap_or_else(config::hostname);
    let node_id: NodeId = node_id.parse().map_err(|e| format!("--node-id: {e}"))?;
    let topology = if cli.topology.is_empty() {
        config::default_topology(&node_id)
    } else {
        config::parse_topology(&cli.topology)?
    };
    Ok(Config {
        driver_name: driver_name(&cli.driver_name)?,
        state_dir: cli.state_dir.clone(),
        node_id,
        capacity: cli.capacity,
        max_volumes_per_node: cli.max_volumes_per_node,
        topology,
        tool_timeouts: config::parse_tool_timeouts(&cli.tool_timeout)?,
    })
}

/// Why the driver stopped: the exit code says which kind (the workspace's
/// convention for every CLI: 0 ok, 1 failure of the work, 2 bad input).
enum Failure {
    /// A flag or environment value is invalid; nothing was created.
    BadInput(String),
    /// The driver could not open its state or serve.
    Work(String),
}

async fn serve(cli: Cli) -> Result<(), Failure> {
    // Everything the user typed is checked before anything is created on
    // disk: a bad endpoint must not leave a fresh state directory behind.
    let endpoint: Endpoint = cli
        .endpoint
        .parse()
        .map_err(|e| Failure::BadInput(format!("--endpoint: {e}")))?;
    let cfg = config(&cli).map_err(Failure::BadInput)?;
    let driver = local::LocalDriver::open(cfg).map_err(Failure::Work)?;
    tracing::info!(
        %endpoint,
        node_id = %driver.config().node_id,
        capacity = driver.config().capacity,
        "starting the local CSI driver"
    );
    let mut options = csi_types::server::ServeOptions::default();
    options.metrics_address = cli.metrics_address;
    let shutdown = csi_types::server::shutdown_signal();
    let limit = local::poll::cpu_limit();
    let cpuidle = local::poll::cpuidle_driver();
    let decision = local::poll::decide(cli.idle_poll, cpuidle.as_deref(), limit.as_deref());
    let poller = match decision.window {
        None => {
            tracing::info!(why = %decision.why, "the idle poller is off");
            None
        }
        Some(window) => {
            if let Some(limit) = &limit {
                tracing::warn!(%limit, "a CPU limit applies: the idle poller's spinning counts against its quota");
            }
            tracing::info!(why = %decision.why, window_us = window.as_micros(), "the idle poller is on");
            local::poll::IdlePoller::start(window)
        }
    };
    local::serve_with_poller(&driver, &cli.endpoint, shutdown, options, poller.as_ref())
        .await
        .map_err(Failure::Work)
}

/// Prints an error as one line on stderr, whatever line breaks its causes hold.
fn report(e: &str) {
    let one_line = e
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("local: {one_line}");
}

/// The allocator: a serving loop allocates and frees many small buffers
/// per call (HTTP/2 frames, headers, messages), which mimalloc does in
/// less time than the system allocator (see the README's throughput
/// section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: printed on stdout, status 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's message spans several lines (what is wrong, a usage line, a hint); keep
            // what is wrong, on one line like every other error of the binary.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            report(&format!(
                "{} (see --help)",
                what.join(" ").trim_start_matches("error: ")
            ));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Demo) => {
            logging(cli.log_format, "warn");
            if local::demo::run(&mut std::io::stdout()).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some(Command::Serve) | None => {
            logging(cli.log_format, "info");
            // The fatal error is printed once, here, not logged as well.
            match serve(cli).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(Failure::BadInput(e)) => {
                    report(&e);
                    ExitCode::from(2)
                }
                Err(Failure::Work(e)) => {
                    report(&e);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
