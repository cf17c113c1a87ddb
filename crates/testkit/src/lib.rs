//! A CSI conformance and property-based test harness that any driver can
//! run: in process from its own `cargo test`, or over a socket with the
//! `csi-conformance` runner, whatever language the driver is written in.
//!
//! The suite has three parts, all run by [`Suite::run`]:
//!
//! - **Spec cases** ([`cases`]): named checks derived from the CSI v1.12
//!   specification for every RPC of Identity, Controller, GroupController,
//!   Node and SnapshotMetadata — REQUIRED fields, not-found codes,
//!   idempotency, `ALREADY_EXISTS`, 128-byte names, `OUT_OF_RANGE`,
//!   pagination, publish limits, the node lifecycle (mount and `BLOCK`),
//!   read-only publishing, snapshots, clones, expansion,
//!   `ControllerModifyVolume`, group snapshots, `VOLUME_CONDITION`, topology
//!   and snapshot block metadata. A case whose capability the driver does
//!   not advertise is skipped, with the reason.
//! - **A state-machine property** ([`props`]): random sequences of calls
//!   with duplicates and retries, checked after every step against a model
//!   of the spec; failures shrink to a minimal list of calls.
//! - **Concurrency cases**: the same request, or operations on one volume,
//!   sent at once must succeed or answer `ABORTED` (or what the spec gives
//!   the RPC there: `OUT_OF_RANGE` for a size the plugin does not allow,
//!   `RESOURCE_EXHAUSTED` for a snapshot without space) and leave a
//!   consistent state.
//!
//! Every object a case creates is deleted after it, pass or fail. A case
//! that hangs fails after [`Config::case_timeout`]; one that panics fails
//! alone.
//!
//! A case demands one answer only where the spec allows one: where two of
//! its rules apply to a request (an unknown object *and* a malformed field),
//! it either uses a known object so that only one applies, or accepts every
//! allowed answer and records a warning ([`Ctx::answer`]) for the one users'
//! tools expect less. A response that bends a rule the spec tells the CO to
//! tolerate (`csi_types::check`) passes with a warning ([`Ctx::ok`]); one
//! that breaks a MUST rule fails. Warnings ([`CaseResult::warnings`]) never
//! fail a run.
//!
//! # When to use what
//!
//! - A driver built on `csi-types`: call [`Suite::run`] from a `cargo test`
//!   with the driver's [`csi_types::Plugin`] (example below).
//! - Any driver behind a socket, in any language: the `csi-conformance`
//!   runner (`--endpoint unix:///…`), which prints one line per case, a
//!   closing `N passed, N failed, N skipped` line, and optionally JUnit XML
//!   ([`Report::to_junit`]).
//! - A shrunk failure kept as a regression test: parse the printed calls
//!   into [`props::Op`]s and run them with [`props::replay`].
//! - Trying the harness, or reading how the spec's rules look in code:
//!   [`memdriver`], the in-memory reference driver that passes every case.
//!
//! # Example: the whole suite against the in-memory reference driver
//!
//! ```
//! use std::sync::Arc;
//! use csi_testkit::{Config, Suite, memdriver::{MemDriver, MemDriverConfig}};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let driver = MemDriver::new(MemDriverConfig::default());
//! let plugin = Arc::new(driver.plugin());
//!
//! let mut config = Config::new(dir.path());
//! config.second_node_id = Some("memdriver-node-2".into());
//! config.mutable_parameters = [("iops".to_string(), "500".to_string())].into();
//! config.block_targets_may_be_files = true; // the memdriver makes no device nodes
//! config.proptest_cases = 4;
//!
//! let report = Suite::new(config, plugin.clone(), plugin).run().await;
//! for r in &report.results {
//!     println!("{r}");
//! }
//! println!("{}", report.summary());
//! assert!(report.success(), "{}", report.summary());
//! # }
//! ```
//!
//! Over a socket, [`csi_types::client::Client`] is a [`RawCsi`] too:
//! `Suite::new(config, Arc::new(client.clone()), Arc::new(client))`.
//!
//! # Features
//!
//! None: the crate needs tokio, tonic (through `csi-types`) and proptest.

use std::sync::Arc;
use std::time::Instant;

use csi_types::RawCsi;
use futures::FutureExt;

pub mod cases;
mod ctx;
pub mod memdriver;
pub mod props;
mod report;

pub use cases::{Case, all as all_cases};
pub use ctx::{Answer, CaseError, Config, Ctx, Discovered};
pub use report::{CaseResult, Outcome, Report, xml_escape};

/// The suite over one driver: a controller-side and a node-side endpoint
/// (often the same object) and a [`Config`].
pub struct Suite {
    config: Config,
    controller: Arc<dyn RawCsi>,
    node: Arc<dyn RawCsi>,
}

impl Suite {
    /// A suite over the given endpoints. A relative `staging_dir` or
    /// `target_dir` is taken from the current directory: CSI paths are
    /// absolute, and a relative one would fail every node case with the
    /// driver's `INVALID_ARGUMENT`.
    pub fn new(mut config: Config, controller: Arc<dyn RawCsi>, node: Arc<dyn RawCsi>) -> Suite {
        for dir in [&mut config.staging_dir, &mut config.target_dir] {
            // Only fails for an empty path (or no current directory), which the cases report.
            if let Ok(absolute) = std::path::absolute(&*dir) {
                *dir = absolute;
            }
        }
        Suite {
            config,
            controller,
            node,
        }
    }

    /// The cases this suite would run (those matching the filter).
    pub fn cases(&self) -> Vec<Case> {
        all_cases()
            .into_iter()
            .filter(|c| {
                self.config
                    .filter
                    .as_deref()
                    .is_none_or(|f| c.name.contains(f))
            })
            .collect()
    }

    /// A context for code that drives the endpoints outside a case (such as
    /// [`props::replay`]): what the driver advertises is discovered afresh.
    pub(crate) async fn context(&self, name: &str) -> Ctx {
        let found = Discovered::discover(&*self.controller, &*self.node).await;
        Ctx::new(
            self.controller.clone(),
            self.node.clone(),
            self.config.clone(),
            found,
            name,
        )
    }

    /// Runs every matching case in order and reports each outcome.
    pub async fn run(&self) -> Report {
        self.run_with(|_| {}).await
    }

    /// As [`Suite::run`], calling `each` as every case finishes (the runner
    /// prints its line there).
    pub async fn run_with(&self, mut each: impl FnMut(&CaseResult)) -> Report {
        let found = Discovered::discover(&*self.controller, &*self.node).await;
        let mut report = Report::default();
        for case in self.cases() {
            let ctx = Ctx::new(
                self.controller.clone(),
                self.node.clone(),
                self.config.clone(),
                found.clone(),
                case.name,
            );
            let start = Instant::now();
            // A panic in a case (a harness bug, or a driver panicking in
            // process) fails that case only.
            let body = std::panic::AssertUnwindSafe((case.run)(ctx.clone())).catch_unwind();
            let body = tokio::time::timeout(self.config.case_timeout, body).await;
            let mut outcome = match body {
                Ok(Ok(Ok(()))) => Outcome::Pass,
                Ok(Ok(Err(CaseError::Fail(r)))) => Outcome::Fail(r),
                Ok(Ok(Err(CaseError::Skip(r)))) => Outcome::Skip(r),
                Ok(Err(panic)) => {
                    Outcome::Fail(format!("the case panicked: {}", panic_text(&*panic)))
                }
                Err(_) => Outcome::Fail(format!(
                    "did not finish within {:?} (case_timeout, --case-timeout)",
                    self.config.case_timeout
                )),
            };
            let leftovers =
                match tokio::time::timeout(self.config.case_timeout, ctx.cleanup()).await {
                    Ok(l) => l,
                    Err(_) => vec![format!(
                        "did not finish within {:?} (case_timeout, --case-timeout)",
                        self.config.case_timeout
                    )],
                };
            if !leftovers.is_empty() && !outcome.is_fail() {
                outcome = Outcome::Fail(format!("cleanup failed: {}", leftovers.join("; ")));
            }
            let result = CaseResult {
                name: case.name.to_string(),
                outcome,
                duration: start.elapsed(),
                warnings: ctx.warnings(),
            };
            each(&result);
            report.results.push(result);
        }
        report
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Runs the suite: `Suite::new(config.clone(), controller, node).run()`.
pub async fn run(config: &Config, controller: Arc<dyn RawCsi>, node: Arc<dyn RawCsi>) -> Report {
    Suite::new(config.clone(), controller, node).run().await
}
