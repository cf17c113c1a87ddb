//! The `composer` binary: `composer serve` runs the controller, `composer
//! admin …` talks to a running one, `composer inventory` checks and prints
//! an inventory file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use composer::admin::{self, Request};
use composer_core::{EtcdConfig, EtcdStore, Health, Inventory, RedbStore, Store};

/// A composer: carves a pool of disaggregated drives into CSI volumes.
#[derive(Parser, Debug)]
#[command(name = "composer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
        #[arg(long, default_value = "/composer")]
        etcd_prefix: String,
        /// etcd user (authentication); the password comes from ETCD_PASSWORD.
        #[arg(long)]
        etcd_user: Option<String>,
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
        #[arg(long, default_value = "userspace")]
        backend: composer::node::Backend,
        /// Also run the JBOD agent in this process: the drives as sparse
        /// files in this directory, exported over NBD to the servers their
        /// `nbd` volumes are published to (see `composer::agent`).
        #[arg(long)]
        jbod_agent: Option<PathBuf>,
        /// Where the JBOD agent listens.
        #[arg(long, default_value = "127.0.0.1:10809")]
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
        #[command(subcommand)]
        what: AdminCommand,
    },
    /// Check an inventory file (default: the built-in one) and print a summary,
    /// or with --print the built-in inventory's TOML.
    Inventory {
        /// The file.
        file: Option<PathBuf>,
        /// Print the built-in inventory.
        #[arg(long)]
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
        /// failed | draining | degraded | healthy.
        health: String,
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
}

fn load_inventory(file: Option<&PathBuf>) -> Result<Inventory, String> {
    match file {
        None => Ok(Inventory::default_inventory()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            Inventory::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve {
            endpoint,
            state,
            store,
            etcd_prefix,
            etcd_user,
            inventory,
            admin_socket,
            node_id,
            data_dir,
            backend,
            jbod_agent,
            jbod_agent_listen,
        } => {
            let inv = load_inventory(inventory.as_ref())?;
            if store.is_none()
                && let Some(dir) = state.parent()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
            if let Some(dir) = admin_socket.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
            let started = std::time::Instant::now();
            let store: Arc<dyn Store> = match store {
                None => Arc::new(RedbStore::open(&state).map_err(|e| e.to_string())?),
                Some(url) => {
                    let mut cfg = EtcdConfig::parse(&url).map_err(|e| e.to_string())?;
                    cfg.prefix = etcd_prefix.trim_end_matches('/').to_string();
                    if let Some(u) = etcd_user {
                        let p = std::env::var("ETCD_PASSWORD").map_err(|_| {
                            "--etcd-user: the password must be in ETCD_PASSWORD".to_string()
                        })?;
                        cfg.user = Some((u, p));
                    }
                    Arc::new(EtcdStore::connect(cfg).map_err(|e| e.to_string())?)
                }
            };
            let mut driver = composer::ComposerDriver::open(inv, store, node_id.as_deref())
                .map_err(|e| e.to_string())?;
            if let Some(data) = data_dir {
                if node_id.is_none() {
                    return Err("--data-dir serves the node side and needs --node-id".into());
                }
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
                    admin::serve_with(c, after_repair, &admin_socket, async move {
                        let _ = rx.changed().await;
                    })
                    .await
                })
            };
            let mut rx2 = rx;
            let r = composer::serve(&driver, &endpoint, async move {
                tokio::select! {
                    _ = csi_types::server::shutdown_signal() => {}
                    _ = rx2.changed() => {}
                }
            })
            .await;
            if let Some(side) = driver.node_side() {
                side.release_all();
            }
            if let Some(a) = agent {
                a.shutdown();
            }
            let _ = tx.send(true);
            let _ = admin.await;
            r
        }
        Command::Demo => {
            let dir = std::env::temp_dir().join(format!("composer-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            println!("composer demo in {}", dir.display());
            let started = std::time::Instant::now();
            let r = composer::demo::run(&dir, &mut std::io::stdout()).await;
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "demo {} in {:.1} s",
                if r.is_ok() { "passed" } else { "FAILED" },
                started.elapsed().as_secs_f64()
            );
            r
        }
        Command::Admin { socket, what } => {
            let req = match what {
                AdminCommand::Drives => Request::Drives,
                AdminCommand::Servers => Request::Servers,
                AdminCommand::Reconcile => Request::Reconcile,
                AdminCommand::Volumes => Request::Volumes,
                AdminCommand::Mark { target, health } => Request::Mark {
                    target,
                    health: match health.as_str() {
                        "failed" => Health::Failed,
                        "draining" => Health::Draining,
                        "degraded" => Health::Degraded,
                        "healthy" => Health::Healthy,
                        other => {
                            return Err(format!(
                                "health: must be failed, draining, degraded or healthy, got {other:?}"
                            ));
                        }
                    },
                },
                AdminCommand::RepairPlan { target } => Request::RepairPlan { target },
                AdminCommand::RepairApply { target } => Request::RepairApply { target },
            };
            let answer = admin::call(&socket, &req).await?;
            if let Some(e) = answer.get("error") {
                return Err(e.as_str().unwrap_or_default().to_string());
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
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("composer: {e}");
            ExitCode::from(2)
        }
    }
}
