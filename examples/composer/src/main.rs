//! The `composer` binary: `composer serve` runs the controller, `composer
//! admin …` talks to a running one, `composer inventory` checks and prints
//! an inventory file.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use composer::admin::{self, Request};
use composer_core::{EtcdConfig, EtcdStore, Health, Inventory, RedbStore, Store};

/// The exit statuses, shown at the end of `composer --help`.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the operation was refused or failed (stderr says why)
  2  usage error: an unknown subcommand, flag or value, or flags that do not
     go together (clap's convention)
  3  serve: the shutdown after SIGTERM took longer than 25 s and was cut short";

/// A composer: carves a pool of disaggregated drives into CSI volumes.
#[derive(Parser, Debug)]
#[command(name = "composer", version, about, long_about = None, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format on stderr: text or json (one JSON object per line).
    #[arg(long, global = true, default_value = "text")]
    log_format: csi_types::logging::LogFormat,
}

// Parsed once per process: the size of `Serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve CSI Identity and Controller, and the admin socket.
    Serve {
        /// Where to serve CSI.
        #[arg(
            long,
            env = "CSI_ENDPOINT",
            default_value = "unix:///run/composer/csi.sock"
        )]
        endpoint: String,
        /// The state database (created if missing), when --store is not given.
        #[arg(long, default_value = "/var/lib/composer/state.redb")]
        state: PathBuf,
        /// Keep the state in etcd instead: etcd://HOST:PORT[,HOST:PORT…]. Several
        /// replicas may share one etcd.
        #[arg(long)]
        store: Option<String>,
        /// Key prefix in etcd.
        #[arg(long, default_value = "/composer", requires = "store")]
        etcd_prefix: String,
        /// etcd user (authentication); the password comes from
        /// --etcd-password-file, else from ETCD_PASSWORD.
        #[arg(long, requires = "store")]
        etcd_user: Option<String>,
        /// A file holding the etcd user's password (one line).
        #[arg(long)]
        etcd_password_file: Option<PathBuf>,
        /// TLS to etcd: the CA (PEM) that signed etcd's server certificate.
        #[arg(long, requires = "store")]
        etcd_ca: Option<PathBuf>,
        /// TLS client certificate (PEM) for an etcd with --client-cert-auth;
        /// needs --etcd-key and --etcd-ca.
        #[arg(long, requires = "store")]
        etcd_cert: Option<PathBuf>,
        /// The key (PEM) of --etcd-cert.
        #[arg(long, requires = "store")]
        etcd_key: Option<PathBuf>,
        /// Lease of the leader among replicas on etcd, in seconds (1 to
        /// 9000000000, etcd's longest lease): a paused or cut-off leader
        /// loses its background work after at most this long.
        #[arg(long, default_value_t = 10, requires = "store", allow_negative_numbers = true,
              value_parser = |s: &str| whole(s, 1, MAX_LEASE_TTL_S,
                  "must be 1 to 9000000000 seconds (etcd's longest lease)"))]
        etcd_lease_ttl: u64,
        /// This replica's id in the leader key (default: host name and PID).
        #[arg(long, requires = "store")]
        replica_id: Option<String>,
        /// Repair the drives marked failed every this many seconds, on the
        /// leader only (0: never; repairs then run from `composer admin`).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true,
              value_parser = |s: &str| whole(s, 0, u64::MAX,
                  "must not be negative (a whole number of seconds; 0: never)"))]
        repair_every: u64,
        /// Inventory file (default: the built-in inventory).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// The admin socket.
        #[arg(long, default_value = "/run/composer/admin.sock")]
        admin_socket: PathBuf,
        /// Also serve the node side as this server (NodeGetInfo; with
        /// --data-dir also stage, publish and stats).
        #[arg(long)]
        node_id: Option<String>,
        /// The node side's drive files and FUSE mounts (with --node-id).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How the node side assembles volumes: userspace (raid-engine) or
        /// mdadm (answers FAILED_PRECONDITION where md is absent).
        #[arg(long, default_value = "userspace", requires = "data_dir")]
        backend: composer::node::Backend,
        /// Serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9808).
        #[arg(long, value_name = "ADDRESS")]
        metrics_address: Option<std::net::SocketAddr>,
        /// Also run the JBOD agent in this process: the drives as sparse
        /// files in this directory, exported over NBD to the servers their
        /// `nbd` volumes are published to (see `composer::agent`).
        #[arg(long)]
        jbod_agent: Option<PathBuf>,
        /// Where the JBOD agent listens.
        #[arg(long, default_value = "127.0.0.1:10809", requires = "jbod_agent")]
        jbod_agent_listen: String,
    },
    /// Run the whole story on this machine with real mounts: provision,
    /// stage, publish, write, fail drives, verify, rebuild, verify, tear down.
    Demo,
    /// Ask a running composer.
    Admin {
        /// The admin socket.
        #[arg(long, default_value = "/run/composer/admin.sock")]
        socket: PathBuf,
        /// Seconds to wait for the next line from the socket (connecting,
        /// then between lines of the answer) before giving up with an
        /// error; not a limit on the whole call: a composer sends a line
        /// at least every 5 s while it works, and a rebuild streams
        /// progress for as long as it runs.
        #[arg(long, value_name = "SECONDS", default_value_t = admin::DEFAULT_IDLE_TIMEOUT.as_secs(),
              allow_negative_numbers = true,
              value_parser = |s: &str| whole(s, 1, u64::MAX,
                  "must be at least 1 second (a whole number of seconds)"))]
        idle_timeout: u64,
        #[command(subcommand)]
        what: AdminCommand,
    },
    /// Check an inventory file (default: the built-in one) and print a summary,
    /// or with --print the built-in inventory's TOML.
    Inventory {
        /// The file.
        file: Option<PathBuf>,
        /// Print the built-in inventory.
        #[arg(long, conflicts_with = "file")]
        print: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Drives with utilisation and health.
    Drives,
    /// Servers with publications and health.
    Servers,
    /// Differences the start-up check found.
    Reconcile,
    /// Every volume record with its members.
    Volumes,
    /// Mark a drive, JBOD or server failed, draining or healthy.
    Mark {
        /// Drive, JBOD or server id.
        target: String,
        /// The new health.
        health: HealthArg,
    },
    /// Show the repair plan for a drive or JBOD.
    RepairPlan {
        /// Drive or JBOD id.
        target: String,
    },
    /// Make and apply the repair plan for a drive or JBOD.
    RepairApply {
        /// Drive or JBOD id.
        target: String,
    },
    /// Fail a drive: mark it failed and fail its members in the volumes the
    /// node side serves (they keep serving from the survivors).
    FailDrive {
        /// Drive id.
        drive: String,
    },
    /// Apply a failed drive's repair plan and rebuild onto the replacement
    /// drives, with a progress bar.
    Rebuild {
        /// Drive id.
        drive: String,
        /// Rebuild rate limit in bytes per second (at least 1; leave it
        /// out for no limit). 0 read as no limit, the opposite of what it
        /// says.
        #[arg(long, allow_negative_numbers = true,
              value_parser = |s: &str| whole(s, 1, u64::MAX,
                  "must be at least 1 byte per second (leave it out for no limit)"))]
        max_bytes_per_sec: Option<u64>,
    },
}

/// A flag's whole number from `lo` to `hi`, else `rule`, the range in
/// words (clap's message names the flag and the value before it): clap's
/// own range check said "0 is not in 1..18446744073709551615", and a
/// negative value read as an unknown flag ("unexpected argument '-1'"), so
/// its flags also allow negative numbers, to be refused here.
fn whole(s: &str, lo: u64, hi: u64, rule: &str) -> Result<u64, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= i128::from(lo) && n <= i128::from(hi) => Ok(n as u64),
        _ => Err(rule.to_string()),
    }
}

/// etcd's longest lease (`MaxLeaseTTL`, seconds): etcd refuses longer
/// ones, and a replica asking for one would never lead, with no error
/// beyond a debug line. Zero was taken as one second.
const MAX_LEASE_TTL_S: u64 = 9_000_000_000;

/// `composer admin mark`'s health, checked by clap (a usage error, exit 2).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum HealthArg {
    Failed,
    Draining,
    Degraded,
    Healthy,
}

impl From<HealthArg> for Health {
    fn from(h: HealthArg) -> Health {
        match h {
            HealthArg::Failed => Health::Failed,
            HealthArg::Draining => Health::Draining,
            HealthArg::Degraded => Health::Degraded,
            HealthArg::Healthy => Health::Healthy,
        }
    }
}

/// Why a command did not succeed, which decides the exit status (see
/// [`EXIT_STATUS`]).
#[derive(Debug)]
enum Failure {
    /// The command line is wrong: exit 2, as clap exits for its own usage
    /// errors, so that a script can tell a typo from a refusal.
    Usage(String),
    /// The operation was refused or failed: exit 1.
    Failed(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Failed(e)
    }
}

/// The bounds of `composer serve`'s shutdown.
mod shutdown {
    use std::time::Duration;

    // Within Kubernetes' default grace period of 30 s before SIGKILL.
    /// How long calls in flight may take to finish.
    pub const DRAIN: Duration = Duration::from_secs(5);
    /// How long the node side may take to flush its volumes.
    pub const FLUSH: Duration = Duration::from_secs(15);
    /// After the signal, the process ends within this whatever still runs.
    pub const HARD: Duration = Duration::from_secs(25);

    /// Ends the process `HARD` after now, if it has not ended by then.
    pub fn start_watchdog() {
        let _ = std::thread::Builder::new()
            .name("shutdown-watchdog".into())
            .spawn(|| {
                std::thread::sleep(HARD);
                eprintln!(
                    "composer: shutdown took longer than {} s; exiting",
                    HARD.as_secs()
                );
                std::process::exit(3);
            });
    }
}

/// Refuses `--endpoint` (`text`, parsed as `ep`) when another process serves it, and for a TCP
/// address binds it: the listener returned is the one `serve` serves on, so no other process can
/// take the port between this check and the serving (before, the check bound the address and let
/// it go, and the state was opened before the server bound it again).
///
/// A unix socket is checked by the server's own rule, touching nothing
/// (`csi_types::server::check_unix_socket`: the check runs before the state opens): a socket
/// another process accepts connections on, a path too long to bind, a path that is not a
/// socket and a missing directory above the socket's own are refused. The server's start
/// (`prepare_unix_socket`) then removes a stale socket and makes the socket's directory.
fn claim_endpoint(
    text: &str,
    ep: &csi_types::endpoint::Endpoint,
) -> Result<Option<std::net::TcpListener>, String> {
    use csi_types::endpoint::Endpoint;
    use csi_types::server::ServeError;
    let in_use = || {
        format!(
            "--endpoint {text}: another process is serving on it (another composer?); nothing \
             was opened: stop it or choose another endpoint"
        )
    };
    match ep {
        Endpoint::Unix(path) => match csi_types::server::check_unix_socket(path) {
            Ok(_) => Ok(None),
            Err(ServeError::SocketInUse(_)) => Err(in_use()),
            Err(e) => Err(format!("--endpoint {text}: {e}; nothing was opened")),
        },
        Endpoint::Tcp(addr) => match bind_tcp(addr) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(in_use()),
            Err(e) => Err(format!(
                "--endpoint {text}: cannot bind {addr}: {e}; nothing was opened"
            )),
        },
    }
}

/// How many connections the kernel holds for the CSI endpoint before the server accepts them:
/// tokio's `TcpListener::bind` (which `serve` used before the check bound the address) listens
/// with 1024, std's `TcpListener::bind` with 128 (Linux caps either at `net.core.somaxconn`).
const TCP_BACKLOG: i32 = 1024;

/// Binds `addr` and listens with [`TCP_BACKLOG`], with `SO_REUSEADDR` set as std sets it (a
/// restarted composer rebinds at once while old connections are in `TIME_WAIT`).
fn bind_tcp(addr: &std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        std::net::SocketAddr::V4(_) => AddressFamily::INET,
        std::net::SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, addr)?;
    rustix::net::listen(&fd, TCP_BACKLOG)?;
    Ok(std::net::TcpListener::from(fd))
}

fn load_inventory(file: Option<&PathBuf>) -> Result<Inventory, String> {
    match file {
        None => Ok(Inventory::default_inventory()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("reading {}: {e}", storage_units::quote_path(p)))?;
            let inv = Inventory::from_toml(&text).map_err(|e| {
                format!(
                    "{}: {}",
                    storage_units::quote_path(p),
                    one_line(&e.to_string())
                )
            })?;
            // Valid TOML with nothing in it (an empty file, a ConfigMap key
            // mounted empty) or without its servers: `Composer::open`
            // refuses it with the same check, but `serve` opens the store
            // (and creates the state file) before it, and `inventory FILE`
            // opens no composer; so it is asked here, with the path.
            inv.check_can_serve().map_err(|e| {
                format!(
                    "{}: {e} (composer inventory --print shows the built-in one)",
                    storage_units::quote_path(p)
                )
            })?;
            Ok(inv)
        }
    }
}

/// A parser's message made one line: a TOML error's excerpt of the file
/// (the lines of the source and the caret under it) is left out, its
/// position and its reason are kept, joined by `: `.
fn one_line(message: &str) -> String {
    let excerpt = |l: &str| {
        let t = l.trim_start();
        t.starts_with('|')
            || t.split_once('|')
                .is_some_and(|(n, _)| n.trim().parse::<u64>().is_ok())
    };
    message
        .lines()
        .filter(|l| !l.trim().is_empty() && !excerpt(l))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

/// `--etcd-user` with its password from `--etcd-password-file` or
/// ETCD_PASSWORD.
fn etcd_user_of(
    user: Option<String>,
    password_file: Option<PathBuf>,
) -> Result<Option<(String, String)>, Failure> {
    let Some(user) = user else {
        return match password_file {
            Some(_) => Err(Failure::Usage(
                "--etcd-password-file: needs --etcd-user".into(),
            )),
            None => Ok(None),
        };
    };
    let password = match password_file {
        Some(f) => std::fs::read_to_string(&f)
            .map_err(|e| {
                format!(
                    "--etcd-password-file: reading {}: {e}",
                    storage_units::quote_path(&f)
                )
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var("ETCD_PASSWORD").map_err(|_| {
            Failure::Usage(
                "--etcd-user: the password must be in --etcd-password-file or ETCD_PASSWORD"
                    .to_string(),
            )
        })?,
    };
    Ok(Some((user, password)))
}

/// `--etcd-ca` with an optional `--etcd-cert`/`--etcd-key` pair; the
/// errors are usage errors.
fn etcd_tls_of(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<composer_core::EtcdTls>, Failure> {
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(Failure::Usage("--etcd-cert: needs --etcd-key".into())),
        (None, Some(_)) => return Err(Failure::Usage("--etcd-key: needs --etcd-cert".into())),
    };
    match (ca, identity) {
        (Some(ca), identity) => Ok(Some(composer_core::EtcdTls { ca, identity })),
        (None, Some(_)) => Err(Failure::Usage(
            "--etcd-cert: TLS to etcd needs --etcd-ca".into(),
        )),
        (None, None) => Ok(None),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve {
            endpoint,
            state,
            store,
            etcd_prefix,
            etcd_user,
            etcd_password_file,
            etcd_ca,
            etcd_cert,
            etcd_key,
            etcd_lease_ttl,
            replica_id,
            repair_every,
            inventory,
            admin_socket,
            node_id,
            data_dir,
            backend,
            metrics_address,
            jbod_agent,
            jbod_agent_listen,
        } => {
            // Usage first, before anything is created or opened.
            let ep = match endpoint.parse::<csi_types::endpoint::Endpoint>() {
                Ok(ep) => ep,
                Err(e) => return Err(Failure::Usage(format!("--endpoint: {e}"))),
            };
            // A second composer started by mistake on a live endpoint stops here, before it
            // opens (or creates) the state the first one serves.
            let listener = claim_endpoint(&endpoint, &ep)?;
            if data_dir.is_some() && node_id.is_none() {
                return Err(Failure::Usage(
                    "--data-dir serves the node side and needs --node-id".into(),
                ));
            }
            let inv = load_inventory(inventory.as_ref())?;
            if store.is_none()
                && let Some(dir) = state.parent()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", storage_units::quote_path(dir)))?;
            }
            // Checked before the store opens: the admin task's own errors
            // come too late to stop the start. It makes the socket's own
            // directory (`/run/composer`), not a chain of missing ones.
            admin::prepare_socket(&admin_socket)?;
            let started = std::time::Instant::now();
            let mut etcd = None;
            let store: Arc<dyn Store> = match store {
                None => Arc::new(RedbStore::open(&state).map_err(|e| e.to_string())?),
                Some(url) => {
                    let mut cfg =
                        EtcdConfig::parse(&url).map_err(|e| Failure::Usage(e.to_string()))?;
                    cfg.prefix = etcd_prefix.trim_end_matches('/').to_string();
                    cfg.user = etcd_user_of(etcd_user, etcd_password_file)?;
                    cfg.tls = etcd_tls_of(etcd_ca, etcd_cert, etcd_key)?;
                    let s = Arc::new(EtcdStore::connect(cfg).map_err(|e| e.to_string())?);
                    etcd = Some(s.clone());
                    s
                }
            };
            let mut driver = composer::ComposerDriver::open(inv, store, node_id.as_deref())
                .map_err(|e| e.to_string())?;
            if let Some(data) = data_dir {
                driver = driver.with_node_side(composer::node::NodeConfig {
                    run_dir: data.join("run"),
                    data_dir: data.join("drives"),
                    backend,
                });
            }
            let agent = match jbod_agent {
                Some(dir) => {
                    let a = composer::agent::JbodAgent::start(
                        Arc::new(driver.composer().inventory().clone()),
                        &dir,
                        &jbod_agent_listen,
                    )
                    .map_err(|e| e.to_string())?;
                    let a = Arc::new(a);
                    driver = driver.with_agent(a.clone()).map_err(|e| e.to_string())?;
                    tracing::info!(addr = %a.addr(), "JBOD agent listening");
                    Some(a)
                }
                None => None,
            };
            let c = driver.composer().clone();
            let side = driver.node_side().cloned();
            let leadership = etcd.map(|s| {
                let id = replica_id.unwrap_or_else(|| {
                    let host =
                        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    format!("{}-{}", host.trim(), std::process::id())
                });
                s.campaign(&id, std::time::Duration::from_secs(etcd_lease_ttl))
            });
            if repair_every > 0 {
                composer::background::spawn(
                    c.clone(),
                    leadership,
                    std::time::Duration::from_secs(repair_every),
                );
            }
            // Without background work the campaign still runs (it lives on the
            // store's runtime): the leader key says who would do the work.
            tracing::info!(
                volumes = c.volume_count(),
                drives = c.inventory().drives().len(),
                servers = c.inventory().servers().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                reconcile_differences = c.reconcile_report().lines().len(),
                "state recovered"
            );
            let after_repair: Option<admin::AfterRepair> = agent.as_ref().map(|_| {
                let d = driver.clone();
                Arc::new(move |c: &composer_core::Composer, v: &[String]| d.after_repair(c, v))
                    as admin::AfterRepair
            });
            let (tx, rx) = tokio::sync::watch::channel(false);
            let admin = {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let r = admin::serve_with(c, side, after_repair, &admin_socket, async move {
                        let _ = rx.changed().await;
                    })
                    .await;
                    // Said when it happens, not at shutdown.
                    if let Err(e) = &r {
                        tracing::error!("the admin socket is not served: {e}");
                    }
                    r
                })
            };
            let mut rx2 = rx;
            let mut options = csi_types::server::ServeOptions::default();
            options.metrics_address = metrics_address;
            let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
            let stop = async move {
                tokio::select! {
                    _ = csi_types::server::shutdown_signal() => {}
                    _ = rx2.changed() => {}
                }
                shutdown::start_watchdog();
                let _ = stopping_tx.send(true);
            };
            let serve = async {
                match listener {
                    // The address bound by the check, before the state opened.
                    Some(l) => {
                        composer::serve_listener_with_options(&driver, l, stop, options).await
                    }
                    None => composer::serve_with_options(&driver, &endpoint, stop, options).await,
                }
            };
            // Calls in flight get `DRAIN` to finish; then the node flushes
            // and the process ends without them.
            let r = tokio::select! {
                r = serve => r,
                _ = async {
                    let _ = stopping.wait_for(|s| *s).await;
                    tokio::time::sleep(shutdown::DRAIN).await;
                } => {
                    tracing::error!(drain_s = shutdown::DRAIN.as_secs(), "calls still in flight at shutdown; leaving them");
                    Ok(())
                }
            };
            if let Some(side) = driver.node_side() {
                let report = side.shutdown(shutdown::FLUSH);
                if !report.is_complete() {
                    tracing::error!(?report, "some staged volumes were not flushed");
                }
            }
            if let Some(a) = agent {
                a.shutdown();
            }
            let _ = tx.send(true);
            let _ = tokio::time::timeout(shutdown::DRAIN, admin).await;
            r.map_err(Failure::Failed)
        }
        Command::Demo => {
            let dir = std::env::temp_dir().join(format!("composer-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", storage_units::quote_path(&dir)))?;
            println!("{}", demo_dir_line(&dir));
            let started = std::time::Instant::now();
            let r = composer::demo::run(&dir, &mut std::io::stdout()).await;
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "demo {} in {:.1} s",
                if r.is_ok() { "passed" } else { "FAILED" },
                started.elapsed().as_secs_f64()
            );
            r.map_err(Failure::Failed)
        }
        Command::Admin {
            socket,
            idle_timeout,
            what,
        } => {
            let req = match what {
                AdminCommand::Drives => Request::Drives,
                AdminCommand::Servers => Request::Servers,
                AdminCommand::Reconcile => Request::Reconcile,
                AdminCommand::Volumes => Request::Volumes,
                AdminCommand::Mark { target, health } => Request::Mark {
                    target,
                    health: health.into(),
                },
                AdminCommand::RepairPlan { target } => Request::RepairPlan { target },
                AdminCommand::RepairApply { target } => Request::RepairApply { target },
                AdminCommand::FailDrive { drive } => Request::FailDrive { target: drive },
                AdminCommand::Rebuild {
                    drive,
                    max_bytes_per_sec,
                } => Request::Rebuild {
                    target: drive,
                    max_bytes_per_sec,
                },
            };
            let bar = admin::ProgressBar::new();
            let idle = std::time::Duration::from_secs(idle_timeout);
            let answer = admin::call_with(&socket, &req, idle, &mut |p| {
                if let (Some(done), Some(total)) = (p["done"].as_u64(), p["total"].as_u64()) {
                    bar.update(done, total);
                }
            })
            .await;
            bar.finish();
            let answer = answer?;
            if let Some(e) = answer.get("error") {
                return Err(Failure::Failed(e.as_str().unwrap_or_default().to_string()));
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&answer["ok"]).unwrap_or_default()
            );
            Ok(())
        }
        Command::Inventory { file, print } => {
            if print {
                print!("{}", composer_core::DEFAULT_INVENTORY);
                return Ok(());
            }
            let inv = load_inventory(file.as_ref())?;
            let f = inv.file();
            println!(
                "{} site(s), {} storage group(s), {} rack(s), {} switch(es), {} enclosure(s), {} drive(s), {} server(s)",
                f.sites.len(),
                f.storage_groups.len(),
                f.racks.len(),
                f.switches.len(),
                f.jbods.len(),
                inv.drives().len(),
                inv.servers().len()
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version: to stdout, status 0.
        Err(e) if !e.use_stderr() => e.exit(),
        // clap quotes a bad value whole: a 10,000-character --idle-timeout
        // made a 10 kB line. Requoted short, as the SDK quotes input.
        Err(e) => {
            let mut text = e.to_string();
            for kind in [
                clap::error::ContextKind::InvalidValue,
                clap::error::ContextKind::InvalidArg,
            ] {
                if let Some(clap::error::ContextValue::String(v)) = e.get(kind) {
                    text = storage_units::requote(&text, v).into_owned();
                }
            }
            eprint!("{text}");
            std::process::exit(e.exit_code());
        }
    };
    // The demo prints its own story: only warnings and errors from the
    // components, unless RUST_LOG asks for more.
    //
    // `fuser::reply` is off by default: fuser logs at error level a reply
    // the kernel no longer waits for (ENOENT: the request was interrupted;
    // ENODEV: the file system was unmounted), which libfuse deliberately
    // ignores; the file system can do nothing about either, and the demo
    // showed one now and then at unstage.
    let default = match cli.command {
        Command::Demo => "warn,fuser::reply=off",
        _ => "info,fuser::reply=off",
    };
    if let Err(e) = csi_types::logging::init(cli.log_format, default) {
        eprintln!("composer: logging: {e}");
    }
    let code = match run(cli).await {
        Ok(()) => 0,
        Err(Failure::Failed(e)) => {
            eprintln!("composer: {e}");
            1
        }
        Err(Failure::Usage(e)) => {
            eprintln!("composer: {e}");
            eprintln!("For more information, try '--help'.");
            2
        }
    };
    // Exit here rather than return: returning drops the runtime, which waits
    // for blocking calls still running (a stage stuck on a dead drive), and
    // drops the node side's FUSE exposures that `shutdown` left to the end
    // of the process.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// The demo's first line, naming its working directory: a message (the
/// directory is removed at the end), so the path is shown as every message
/// shows one ([`storage_units::quote_path`]).
fn demo_dir_line(dir: &std::path::Path) -> String {
    format!("composer demo in {}", storage_units::quote_path(dir))
}

#[cfg(test)]
mod tests {
    /// A temporary directory with a line break in its name (`TMPDIR` is the
    /// user's) keeps the demo's first line one line. Before, the path was
    /// printed raw.
    #[test]
    fn the_demo_dir_is_shown_by_the_path_rule() {
        let plain = std::path::Path::new("/tmp/composer-demo-7");
        assert_eq!(
            super::demo_dir_line(plain),
            "composer demo in /tmp/composer-demo-7"
        );
        let odd = std::path::Path::new("/tmp/x\ny/composer-demo-7");
        let line = super::demo_dir_line(odd);
        assert_eq!(line, r#"composer demo in "/tmp/x\ny/composer-demo-7""#);
        assert!(!line.contains('\n'));
    }

    use super::claim_endpoint;

    /// The TCP address the check accepted stays bound until `serve` takes
    /// it over: another process cannot take it in between (the check used
    /// to bind it and let it go).
    #[test]
    fn a_checked_tcp_endpoint_stays_bound_for_the_server() {
        let text = "tcp://127.0.0.1:0";
        let listener = claim_endpoint(text, &text.parse().unwrap())
            .unwrap()
            .expect("a TCP endpoint is bound by the check");
        let addr = listener.local_addr().unwrap();
        let other = std::net::TcpListener::bind(addr).map(|_| ());
        assert_eq!(
            other.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::AddrInUse),
            "{addr} was free again after the check"
        );
        // And a second composer's check on it is refused, naming the flag.
        let text = format!("tcp://{addr}");
        let e = claim_endpoint(&text, &text.parse().unwrap()).unwrap_err();
        assert!(
            e.starts_with(&format!("--endpoint {text}: another process")),
            "{e}"
        );
    }

    /// The TCP address the check binds listens with tokio's backlog of
    /// 1024, as `serve` did when it bound the address itself; std's bind
    /// listens with 128. `ss` shows a listening socket's backlog as its
    /// Send-Q (capped by `net.core.somaxconn`, which is read too).
    #[test]
    fn a_checked_tcp_endpoint_listens_with_tokios_backlog() {
        let text = "tcp://127.0.0.1:0";
        let listener = claim_endpoint(text, &text.parse().unwrap())
            .unwrap()
            .expect("a TCP endpoint is bound by the check");
        let port = listener.local_addr().unwrap().port();
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) runs");
        assert!(out.status.success(), "{out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let backlog: u32 = line
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no Send-Q in {line:?}"));
        let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(backlog, cap.min(1024), "{line}");
    }

    /// A unix socket path too long to bind is refused by the check, before
    /// the state opens, creating nothing (it was found only when serving).
    #[test]
    fn a_socket_path_too_long_is_refused_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a".repeat(110)).join("csi.sock");
        let text = format!("unix://{}", path.display());
        let e = claim_endpoint(&text, &text.parse().unwrap()).unwrap_err();
        assert!(e.contains("must be shorter than 108 bytes"), "{e}");
        assert!(e.starts_with(&format!("--endpoint {text}: ")), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// What the server's start refuses for a unix socket (a missing
    /// directory above the socket's own, a path that is not a socket) is
    /// refused by the check, before the state opens, creating and removing
    /// nothing; the socket's own directory missing is fine (the server
    /// makes it).
    #[test]
    fn a_unix_endpoint_the_server_would_refuse_is_refused_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let check = |p: &std::path::Path| {
            let text = format!("unix://{}", p.display());
            claim_endpoint(&text, &text.parse().unwrap())
        };
        let e = check(&dir.path().join("typo/x/csi.sock")).unwrap_err();
        assert!(e.contains("typo does not exist either (a typo?)"), "{e}");
        let file = dir.path().join("state.redb");
        std::fs::write(&file, b"data").unwrap();
        let e = check(&file).unwrap_err();
        assert!(e.contains("exists and is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
        assert!(check(&dir.path().join("own/csi.sock")).unwrap().is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the file written here");
    }

    /// A unix socket nobody serves is neither created nor removed by the
    /// check.
    #[test]
    fn the_unix_check_creates_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("sub/csi.sock");
        let text = format!("unix://{}", missing.display());
        assert!(
            claim_endpoint(&text, &text.parse().unwrap())
                .unwrap()
                .is_none()
        );
        assert!(!dir.path().join("sub").exists());
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let text = format!("unix://{}", stale.display());
        assert!(
            claim_endpoint(&text, &text.parse().unwrap())
                .unwrap()
                .is_none()
        );
        assert!(stale.exists(), "the stale socket is the server's to remove");
        let _live = std::os::unix::net::UnixListener::bind(dir.path().join("live.sock")).unwrap();
        let text = format!("unix://{}", dir.path().join("live.sock").display());
        assert!(claim_endpoint(&text, &text.parse().unwrap()).is_err());
    }
}
