//! The admin protocol: one JSON request per line on a unix socket, one JSON
//! answer per line (`{"ok": …}` or `{"error": "…"}`).
//!
//! Requests: `{"op":"drives"}`, `{"op":"servers"}`, `{"op":"reconcile"}`,
//! `{"op":"volumes"}`,
//! `{"op":"mark","target":ID,"health":"failed"|"draining"|"healthy"}`,
//! `{"op":"repair-plan","target":DRIVE_OR_JBOD}`,
//! `{"op":"repair-apply","target":DRIVE_OR_JBOD}` (with a node side,
//! refused, changing nothing, when it would move a member of a volume
//! staged here: `rebuild` moves and rebuilds those);
//! served with the node side (`composer serve --node-id … --data-dir …`):
//! `{"op":"fail-drive","target":DRIVE}` (marks the drive failed and fails
//! its members in the staged volumes, which keep serving from the
//! survivors; refused, changing nothing, when the drive holds the last copy
//! of some data of a staged volume, as `mdadm --fail` refuses; when the
//! engine stops it part way, the error lists the volumes whose member was
//! failed, which keep the drive failed, and with none the drive's mark is
//! put back) and
//! `{"op":"rebuild","target":DRIVE}` (applies the drive's repair plan and
//! rebuilds every staged volume it moved onto the replacement, and every
//! member staged here whose earlier copy did not finish, except one on a
//! drive failed since, which its answer lists under `waiting` until a
//! rebuild of that drive moves it; refused,
//! changing nothing, for a drive not marked failed, while a member it
//! would move is not failed in a
//! staged volume's engine, or belongs to a single drive or slice staged
//! here; before the answer, one `{"progress": {…}}` line per percent;
//! meanwhile the volumes stay in use: their publishes, unpublishes and
//! expands run, their unstages are refused `ABORTED` until the rebuild
//! ends, see [`NodeSide::rebuild_to`]).
//!
//! While a request is being answered the socket sends `{"alive": true}`
//! every [`HEARTBEAT`]; a client ([`call_with`]) gives up after an idle
//! timeout without any line, so a peer that accepts and never answers
//! cannot keep `composer admin` waiting forever.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use composer_core::{Composer, Health};

use crate::node::NodeSide;
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
    /// Mark a drive failed and fail its members on this node (refused,
    /// changing nothing, when it holds the last copy of some data).
    FailDrive {
        /// Drive id.
        target: String,
    },
    /// Apply a failed drive's repair plan and rebuild onto the replacements.
    Rebuild {
        /// Drive id.
        target: String,
        /// Rebuild rate limit (bytes per second), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes_per_sec: Option<u64>,
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

/// Called after `repair-apply` or `rebuild` moved members, with the volumes
/// moved (the controller's JBOD agent grants their new drives).
pub type AfterRepair = Arc<dyn Fn(&Composer, &[String]) + Send + Sync>;

/// Answers one request (without a node side).
pub fn handle(c: &Composer, req: Request) -> serde_json::Value {
    handle_with(c, None, req, &|_| {}, None)
}

/// Answers one request, with the node side `side` when this process serves
/// one; `progress` gets the rebuild's progress lines, and `after` is called
/// once a repair moved members.
pub fn handle_with(
    c: &Composer,
    side: Option<&NodeSide>,
    req: Request,
    progress: &(dyn Fn(serde_json::Value) + Sync),
    after: Option<&AfterRepair>,
) -> serde_json::Value {
    let repaired = |p: &placement::RepairPlan| {
        if let Some(f) = after {
            let mut vols: Vec<String> = p.moves.iter().map(|m| m.volume.to_string()).collect();
            vols.sort();
            vols.dedup();
            f(c, &vols);
        }
    };
    let r: Result<serde_json::Value, composer_core::Error> = match req {
        Request::FailDrive { target } => {
            return answer(side_of(side).and_then(|s| fail_drive(c, s, &target)));
        }
        Request::Rebuild {
            target,
            max_bytes_per_sec,
        } => {
            return answer(
                side_of(side)
                    .and_then(|s| rebuild(c, s, &target, max_bytes_per_sec, progress, &repaired)),
            );
        }
        Request::Drives => Ok(serde_json::to_value(c.drive_report()).unwrap_or_default()),
        Request::Servers => Ok(serde_json::to_value(c.server_report()).unwrap_or_default()),
        Request::Reconcile => Ok(serde_json::json!(c.reconcile_report().lines())),
        Request::Volumes => Ok(serde_json::to_value(c.records()).unwrap_or_default()),
        Request::Mark { target, health } => c
            .mark(&target, health)
            .map(|()| serde_json::json!("marked")),
        Request::RepairPlan { target } => c.repair_plan(&target).map(|p| plan_json(&p)),
        Request::RepairApply { target } => c
            .apply_repair_if(&target, |plan| match side {
                Some(s) => refuse_staged_moves(s, &target, plan),
                None => Ok(()),
            })
            .map(|p| {
                repaired(&p);
                plan_json(&p)
            }),
    };
    answer(r.map_err(|e| e.to_string()))
}

/// `repair-apply` only moves records: a volume staged on this node would
/// go on reading and writing its old member while the record names the
/// new one and the pool hands the old space to other volumes, and no
/// later `rebuild` would find the move. Such moves are refused, changing
/// nothing; `rebuild` moves and rebuilds them.
fn refuse_staged_moves(
    side: &NodeSide,
    target: &str,
    plan: &placement::RepairPlan,
) -> Result<(), composer_core::Error> {
    let mut staged: Vec<String> = plan
        .moves
        .iter()
        .filter(|m| side.is_staged(&m.volume.to_string()))
        .map(|m| {
            format!(
                "member {} of volume {} (drive {})",
                m.member, m.volume, m.from
            )
        })
        .collect();
    if staged.is_empty() {
        return Ok(());
    }
    staged.dedup();
    Err(composer_core::Error::FailedPrecondition(format!(
        "repair-apply {target}: refused, nothing was changed: {} staged on this node, \
         which would keep using the old member: composer admin rebuild moves and \
         rebuilds a staged volume (after composer admin fail-drive of the drive), \
         or unstage it first",
        staged.join(", ")
    )))
}

fn answer(r: Result<serde_json::Value, String>) -> serde_json::Value {
    match r {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "error": e }),
    }
}

fn side_of(side: Option<&NodeSide>) -> Result<&NodeSide, String> {
    side.ok_or_else(|| {
        "this composer serves no node side (start it with --node-id and --data-dir)".to_string()
    })
}

fn fail_drive(c: &Composer, side: &NodeSide, drive: &str) -> Result<serde_json::Value, String> {
    fail_drive_with(c, side, drive, &|| {})
}

/// `fail-drive` of `drive` as the admin socket answers it (the `ok` value,
/// or the error), running `meanwhile` after the inventory records the
/// drive failed and before the node side fails its members: the window in
/// which a volume staged or a member failed through I/O by someone else
/// can still make the node refuse. The admin socket runs nothing there;
/// a test runs such a change there to reach, deterministically, the path
/// that puts the drive's earlier mark back when no member was failed.
pub fn fail_drive_with(
    c: &Composer,
    side: &NodeSide,
    drive: &str,
    meanwhile: &dyn Fn(),
) -> Result<serde_json::Value, String> {
    if c.inventory().drive_index(drive).is_none() {
        return Err(format!("target: no drive {drive:?} in the inventory"));
    }
    // The engine refuses to fail the last copy of some data: ask before
    // the inventory records the drive failed, so that a refusal changes
    // nothing anywhere.
    side.check_fail_drive(drive)
        .map_err(|e| format!("fail-drive {drive}: refused: {e}"))?;
    let before = c.mark_of(drive);
    c.mark(drive, Health::Failed).map_err(|e| e.to_string())?;
    meanwhile();
    // The node checks again and the engine once more per member: a volume
    // staged since the check, or a member failed through I/O since, can
    // still stop it, and failing a member writes the survivors' superblocks,
    // which can fail. The inventory must then say what is true.
    let volumes = side.fail_drive(drive).map_err(|e| {
        let why = format!("fail-drive {drive}: {}", e.error);
        if !e.failed.is_empty() {
            // A failed member is not taken back: the drive is out of
            // those volumes, and the inventory says so.
            return format!(
                "{why}; its members in {} were failed before that and stay failed \
                 (those volumes run without it), so the inventory keeps drive {drive} \
                 failed; its members in other volumes were not failed",
                e.failed.join(", ")
            );
        }
        match c.mark(drive, before) {
            Ok(()) => format!(
                "{why}; no member on drive {drive} was failed, and the inventory \
                 marks it {} again, as before",
                health_name(before)
            ),
            Err(m) => format!(
                "{why}; no member on drive {drive} was failed, but the inventory \
                 still marks it failed: putting back its mark {} failed: {m}",
                health_name(before)
            ),
        }
    })?;
    tracing::warn!(
        drive,
        ?volumes,
        "drive failed by the operator; volumes served from the survivors"
    );
    Ok(serde_json::json!({ "drive": drive, "degraded": volumes }))
}

/// A health as the admin protocol spells it (`"failed"`, …).
fn health_name(h: Health) -> String {
    serde_json::to_value(h)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{h:?}"))
}

fn rebuild(
    c: &Composer,
    side: &NodeSide,
    drive: &str,
    max_bytes_per_sec: Option<u64>,
    progress: &(dyn Fn(serde_json::Value) + Sync),
    repaired: &dyn Fn(&placement::RepairPlan),
) -> Result<serde_json::Value, String> {
    // A rebuild replaces members whose drive is gone. On a drive still in
    // service (a typo, or a drive meant to be emptied, which `repair-apply`
    // does) it would move the records of volumes that other nodes keep
    // using on that drive. The target is a drive or an enclosure.
    let working: Vec<String> = c
        .drive_report()
        .iter()
        .filter(|r| (r.id == drive || r.jbod == drive) && r.health != Health::Failed)
        .map(|r| format!("{} ({})", r.id, health_name(r.health)))
        .collect();
    if !working.is_empty() {
        return Err(format!(
            "rebuild {drive}: refused, nothing was changed: not failed: {}; a rebuild \
             replaces failed drives (composer admin fail-drive DRIVE first); \
             repair-apply moves the members off a working drive",
            working.join(", ")
        ));
    }
    // The engine replaces failed members only: every member the plan
    // moves off a volume staged here must have failed there first. Asked
    // about the plan being applied, before it is recorded, so that a
    // refusal changes nothing (before, the records moved and the node kept
    // the old member, while the pool took the old space back for other
    // volumes).
    let plan = c
        .apply_repair_if(drive, |plan| {
            let refused: Vec<String> = plan
                .moves
                .iter()
                .filter_map(|m| {
                    side.check_rebuild(&m.volume.to_string(), m.member, &m.from.to_string())
                        .err()
                        .map(|e| e.to_string())
                })
                .collect();
            if refused.is_empty() {
                Ok(())
            } else {
                Err(composer_core::Error::FailedPrecondition(format!(
                    "rebuild {drive}: refused, nothing was changed: {}",
                    refused.join("; ")
                )))
            }
        })
        .map_err(|e| e.to_string())?;
    repaired(&plan);
    let mut rebuilt = Vec::new();
    let mut volumes: Vec<String> = plan.moves.iter().map(|m| m.volume.to_string()).collect();
    // And the volumes staged here whose earlier rebuild did not finish (a
    // copy that failed part way): their records moved then, so this plan
    // does not name them again, but the node still has to copy.
    volumes.extend(side.unsynced_volumes());
    volumes.sort();
    volumes.dedup();
    // A member whose copy did not finish on a drive failed since (it
    // failed during the copy) is not copied there again: a rebuild of
    // that drive moves it. Its volume waits for that rebuild.
    let failed: std::collections::BTreeSet<String> = c
        .drive_report()
        .into_iter()
        .filter(|r| r.health == Health::Failed)
        .map(|r| r.id)
        .collect();
    let mut waiting = Vec::new();
    for id in volumes {
        if side.volume(&id).is_none() {
            continue;
        }
        let rec = c.get(&id).map_err(|e| e.to_string())?.record;
        let on_failed: Vec<serde_json::Value> = side
            .unsynced_roles(&id)
            .into_iter()
            .filter_map(|r| rec.members.get(r).map(|m| (r, &m.drive)))
            .filter(|(_, d)| failed.contains(*d))
            .map(|(r, d)| serde_json::json!({ "volume": id, "member": r, "drive": d }))
            .collect();
        if !on_failed.is_empty() {
            waiting.extend(on_failed);
            continue;
        }
        let roles = side
            .rebuild_to(&rec, max_bytes_per_sec, &|role, p| {
                progress(serde_json::json!({
                    "volume": id, "member": role, "drive": rec.members[role].drive,
                    "done": p.done_bytes, "total": p.total_bytes,
                }))
            })
            .map_err(|e| e.to_string())?;
        for r in roles {
            rebuilt.push(serde_json::json!({
                "volume": id, "member": r, "drive": rec.members[r].drive,
            }));
        }
    }
    Ok(serde_json::json!({ "plan": plan_json(&plan), "rebuilt": rebuilt, "waiting": waiting }))
}

/// A rebuild progress bar on stderr. On a terminal it is redrawn in place at
/// every percent; elsewhere (a log file, a CI job) it prints one line at
/// each tenth, so that a log keeps eleven lines rather than a hundred
/// carriage returns.
pub struct ProgressBar {
    terminal: bool,
    /// The percentage last drawn, `u64::MAX` before the first.
    shown: std::sync::atomic::AtomicU64,
}

impl Default for ProgressBar {
    fn default() -> Self {
        ProgressBar::new()
    }
}

impl ProgressBar {
    /// A bar drawn on this process's stderr.
    pub fn new() -> ProgressBar {
        ProgressBar {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            shown: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// Shows `done` of `total` bytes (100 % when `total` is 0).
    pub fn update(&self, done: u64, total: u64) {
        let pct = (done.saturating_mul(100))
            .checked_div(total)
            .unwrap_or(100)
            .min(100);
        // A log gets the tenths only (0, 10, … 100).
        let step = if self.terminal { pct } else { pct / 10 * 10 };
        let last = self.shown.swap(step, std::sync::atomic::Ordering::Relaxed);
        if last == step {
            return;
        }
        let n = (step / 4) as usize;
        let bar = format!(
            "  rebuild [{}{}] {step:3}%",
            "#".repeat(n),
            " ".repeat(25 - n)
        );
        if self.terminal {
            eprint!("\r{bar}");
        } else {
            eprintln!("{bar}");
        }
    }

    /// Ends the bar's line on a terminal, once anything was drawn.
    pub fn finish(&self) {
        if self.terminal && self.shown.load(std::sync::atomic::Ordering::Relaxed) != u64::MAX {
            eprintln!();
        }
    }
}

/// Serves the admin protocol on `path` until `shutdown` completes.
pub async fn serve(
    c: Arc<Composer>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    serve_with(c, None, None, path, shutdown).await
}

/// Like [`serve`], with the node side this process serves (for
/// `fail-drive` and `rebuild`), calling `after` once a repair moved members.
pub async fn serve_with(
    c: Arc<Composer>,
    side: Option<Arc<NodeSide>>,
    after: Option<AfterRepair>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    serve_with_heartbeat(c, side, after, path, shutdown, HEARTBEAT).await
}

/// Like [`serve_with`], sending `{"alive": true}` every `heartbeat` while a
/// request is being answered ([`HEARTBEAT`] there; a test shortens it).
pub async fn serve_with_heartbeat(
    c: Arc<Composer>,
    side: Option<Arc<NodeSide>>,
    after: Option<AfterRepair>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
    heartbeat: Duration,
) -> Result<(), String> {
    prepare_socket(path)?;
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("binding {}: {e}", storage_units::quote_path(path)))?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let c = c.clone();
                let side = side.clone();
                let after = after.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = match serde_json::from_str::<Request>(&line) {
                            Ok(req) => {
                                let c = c.clone();
                                let side = side.clone();
                                let after = after.clone();
                                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                                let job = tokio::task::spawn_blocking(move || {
                                    handle_with(
                                        &c,
                                        side.as_deref(),
                                        req,
                                        &|p| {
                                            let _ = tx.send(p);
                                        },
                                        after.as_ref(),
                                    )
                                });
                                // Progress lines as they come, and a heartbeat
                                // while none does, so that the client's idle
                                // timeout only fires on a silent peer.
                                let mut beat = tokio::time::interval_at(
                                    tokio::time::Instant::now() + heartbeat,
                                    heartbeat,
                                );
                                loop {
                                    let out = tokio::select! {
                                        p = rx.recv() => match p {
                                            Some(p) => serde_json::json!({ "progress": p }),
                                            None => break,
                                        },
                                        _ = beat.tick() => serde_json::json!({ "alive": true }),
                                    };
                                    let mut out = out.to_string();
                                    out.push('\n');
                                    if w.write_all(out.as_bytes()).await.is_err() {
                                        break;
                                    }
                                }
                                job.await
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
    if is_socket(path) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Makes `path` ready for the admin socket by the rule of the CSI
/// endpoint (`csi_types::server::prepare_unix_socket`): a socket left by a
/// process that is gone is removed; a socket another process (another
/// composer) listens on, and anything that is not a socket, are refused and
/// left alone; a path too long for a unix socket is refused before anything
/// is made; the socket's own directory is created, not a chain of them.
/// (`--admin-socket` naming the state database by mistake once deleted it.)
pub fn prepare_socket(path: &Path) -> Result<(), String> {
    csi_types::server::prepare_unix_socket(path).map_err(|e| match e {
        csi_types::server::ServeError::SocketInUse(_) => {
            format!("--admin-socket: {e} (another composer serves it?)")
        }
        e => format!("--admin-socket: {e}"),
    })
}

/// How long [`call`] waits for the next line of an answer by default: a
/// composer sends a line at least every [`HEARTBEAT`] while it works on a
/// request, so only a socket that accepts and never answers stays silent
/// this long. The time between lines, not the whole call: a `rebuild`
/// streams progress lines for as long as the rebuild takes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the admin socket sends `{"alive": true}` while a request is
/// being answered (a long `repair-apply`, a `rebuild` slower than a
/// percent per line), so that a client's idle timeout only fires on a
/// peer that says nothing at all.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Sends one request and returns the answer, waiting at most
/// [`DEFAULT_IDLE_TIMEOUT`] for each line.
pub async fn call(path: &Path, req: &Request) -> Result<serde_json::Value, String> {
    call_with_progress(path, req, &mut |_| {}).await
}

/// Sends one request, hands every progress line to `on_progress`, and
/// returns the answer, waiting at most [`DEFAULT_IDLE_TIMEOUT`] for each line.
pub async fn call_with_progress(
    path: &Path,
    req: &Request,
    on_progress: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<serde_json::Value, String> {
    call_with(path, req, DEFAULT_IDLE_TIMEOUT, on_progress).await
}

/// Like [`call_with_progress`], giving up when `idle` passes without a
/// line from the socket (connecting, sending the request, or between two
/// lines of the answer): before, a socket that accepted and never answered
/// (a hung composer, a foreign listener) kept `composer admin` waiting
/// forever. Heartbeat lines (`{"alive": true}`) count as lines and are not
/// handed on.
pub async fn call_with(
    path: &Path,
    req: &Request,
    idle: Duration,
    on_progress: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<serde_json::Value, String> {
    let silent = |what: &str| {
        format!(
            "{}: {what} for {} s (--idle-timeout): is a composer serving this admin \
             socket (composer serve --admin-socket), and is it responsive?",
            storage_units::quote_path(path),
            idle.as_secs_f64()
        )
    };
    let stream = tokio::time::timeout(idle, tokio::net::UnixStream::connect(path))
        .await
        .map_err(|_| silent("no connection"))?
        .map_err(|e| {
            let hint = match std::fs::symlink_metadata(path) {
                Err(_) => " (nothing there: is composer serve running with this --admin-socket?)",
                Ok(_) if !is_socket(path) => " (not a socket: --socket names the admin socket)",
                Ok(_) => " (no process listens on it: is composer serve running?)",
            };
            format!(
                "connecting to {}: {e}{hint}",
                storage_units::quote_path(path)
            )
        })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    tokio::time::timeout(idle, w.write_all(line.as_bytes()))
        .await
        .map_err(|_| silent("the request could not be sent"))?
        .map_err(|e| {
            format!(
                "{}: sending the request: {e}",
                storage_units::quote_path(path)
            )
        })?;
    let mut r = BufReader::new(r);
    // Something other than a composer's admin socket (the CSI endpoint,
    // given by mistake, answers HTTP/2 bytes) is named, not parsed.
    let foreign = |e: &dyn std::fmt::Display| {
        format!(
            "{}: the answer is not the composer admin protocol ({e}): is it the admin \
             socket (composer serve --admin-socket), not the CSI endpoint?",
            storage_units::quote_path(path)
        )
    };
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(idle, r.read_line(&mut line))
            .await
            .map_err(|_| silent("no answer"))?
            .map_err(|e| foreign(&e))?;
        if n == 0 {
            return Err(format!(
                "{}: the composer closed the connection without answering",
                storage_units::quote_path(path)
            ));
        }
        if !line.ends_with('\n') {
            // Something else (the CSI endpoint's HTTP/2 bytes) is named as
            // such; a cut JSON line as a cut answer.
            if !line.trim_start().starts_with('{') {
                return Err(foreign(&format_args!("{n} bytes that are not a JSON line")));
            }
            return Err(format!(
                "{}: the composer closed the connection in the middle of an answer \
                 (after {n} bytes of a line)",
                storage_units::quote_path(path)
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| foreign(&e))?;
        if v.get("alive").is_some() {
            continue;
        }
        match v.get("progress") {
            Some(p) => on_progress(p),
            None => return Ok(v),
        }
    }
}
