//! The admin protocol: one JSON request per line on a unix socket, one JSON
//! answer per line (`{"ok": …}` or `{"error": "…"}`).
//!
//! Requests: `{"op":"drives"}`, `{"op":"servers"}`, `{"op":"reconcile"}`,
//! `{"op":"volumes"}`,
//! `{"op":"mark","target":ID,"health":"failed"|"draining"|"healthy"}`,
//! `{"op":"repair-plan","target":DRIVE_OR_JBOD}`,
//! `{"op":"repair-apply","target":DRIVE_OR_JBOD}`.

use std::path::Path;
use std::sync::Arc;

use composer_core::{Composer, Health};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One admin request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Every drive with use and health.
    Drives,
    /// Every server with publications and health.
    Servers,
    /// What the start-up check found.
    Reconcile,
    /// Every volume record (members with offsets), for audits.
    Volumes,
    /// Mark a drive, enclosure or server.
    Mark {
        /// Drive, enclosure or server id.
        target: String,
        /// New state.
        health: Health,
    },
    /// The repair plan for a drive or enclosure.
    RepairPlan {
        /// Drive or enclosure id.
        target: String,
    },
    /// Make and apply the repair plan for a drive or enclosure.
    RepairApply {
        /// Drive or enclosure id.
        target: String,
    },
}

fn plan_json(p: &placement::RepairPlan) -> serde_json::Value {
    serde_json::json!({
        "target": p.target,
        "drives": p.drives.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "moves": p.moves.iter().map(|m| serde_json::json!({
            "volume": m.volume.to_string(), "member": m.member,
            "from": m.from.to_string(), "to": m.to.to_string()})).collect::<Vec<_>>(),
        "unplaceable": p.unplaceable.iter().map(|u| serde_json::json!({
            "volume": u.volume.to_string(), "members": u.members, "reason": u.reason})).collect::<Vec<_>>(),
    })
}

/// Called after `repair-apply` moved members, with the volumes moved (the
/// controller's JBOD agent grants their new drives).
pub type AfterRepair = Arc<dyn Fn(&Composer, &[String]) + Send + Sync>;

/// Answers one request.
pub fn handle(c: &Composer, req: Request) -> serde_json::Value {
    handle_with(c, req, None)
}

/// [`handle`], calling `after` once a repair is applied.
pub fn handle_with(c: &Composer, req: Request, after: Option<&AfterRepair>) -> serde_json::Value {
    let req = match (req, after) {
        (Request::RepairApply { target }, Some(f)) => {
            let r = c.apply_repair(&target).map(|p| {
                let mut vols: Vec<String> = p.moves.iter().map(|m| m.volume.to_string()).collect();
                vols.sort();
                vols.dedup();
                f(c, &vols);
                plan_json(&p)
            });
            return match r {
                Ok(v) => serde_json::json!({ "ok": v }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
        }
        (req, _) => req,
    };
    let r: Result<serde_json::Value, composer_core::Error> = match req {
        Request::Drives => Ok(serde_json::to_value(c.drive_report()).unwrap_or_default()),
        Request::Servers => Ok(serde_json::to_value(c.server_report()).unwrap_or_default()),
        Request::Reconcile => Ok(serde_json::json!(c.reconcile_report().lines())),
        Request::Volumes => Ok(serde_json::to_value(c.records()).unwrap_or_default()),
        Request::Mark { target, health } => c
            .mark(&target, health)
            .map(|()| serde_json::json!("marked")),
        Request::RepairPlan { target } => c.repair_plan(&target).map(|p| plan_json(&p)),
        Request::RepairApply { target } => c.apply_repair(&target).map(|p| plan_json(&p)),
    };
    match r {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Serves the admin protocol on `path` until `shutdown` completes.
pub async fn serve(
    c: Arc<Composer>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    serve_with(c, None, path, shutdown).await
}

/// [`serve`], calling `after` once a repair is applied.
pub async fn serve_with(
    c: Arc<Composer>,
    after: Option<AfterRepair>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("binding {}: {e}", path.display()))?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let c = c.clone();
                let after = after.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = match serde_json::from_str::<Request>(&line) {
                            Ok(req) => {
                                let c = c.clone();
                                let after = after.clone();
                                tokio::task::spawn_blocking(move || handle_with(&c, req, after.as_ref()))
                                    .await
                                    .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
                            }
                            Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
                        };
                        let mut out = answer.to_string();
                        out.push('\n');
                        if w.write_all(out.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Sends one request and returns the answer.
pub async fn call(path: &Path, req: &Request) -> Result<serde_json::Value, String> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    w.write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(r).lines();
    let answer = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the composer closed the connection")?;
    serde_json::from_str(&answer).map_err(|e| e.to_string())
}
