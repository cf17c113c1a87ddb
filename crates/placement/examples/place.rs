//! `place`: dry-run volume requests against an inventory.
//!
//! ```text
//! cargo run -p placement --example place -- INVENTORY.toml [REQUESTS.toml]
//!     [--seed N] [--evacuate TARGET] [--drain TARGET] [--save STATE.toml]
//! ```
//!
//! Places the requests in order, committing each, and prints one JSON object per request on
//! its own line. `--evacuate`/`--drain` then print the repair/drain plan for a drive or failure
//! domain (as a JSON object). `--save` writes the resulting state (with volumes) as TOML; the
//! file is opened before placing, so a path that cannot be written fails the run first.
//! Formats are described in the crate README.
//!
//! Exit status: 0 when every request was placed, 1 when a request could not be placed (its
//! explanation is also one line on stderr), 2 when an input is invalid (unreadable file, bad
//! inventory, malformed request, unknown evacuation target). A closed standard output (piped to
//! `head`) ends the run quietly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ContextValue};
use placement::{Engine, Inventory, PlacementError, RequestFile, VolumeId};
use serde_json::json;
use storage_units::quote_path;

#[derive(Parser)]
#[command(about = "Dry-run volume placement against an inventory")]
struct Args {
    /// Inventory TOML file.
    inventory: PathBuf,
    /// Requests TOML file (`[[request]]` tables).
    requests: Option<PathBuf>,
    /// Tie-breaking seed (0 to 18446744073709551615).
    // A negative number is taken as a value, so that the message states the rule instead of
    // clap's "unexpected argument '-1' found".
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = seed)]
    seed: u64,
    /// Print a repair plan for this failed drive or failure domain.
    #[arg(long)]
    evacuate: Option<String>,
    /// Print a drain plan for this drive or failure domain.
    #[arg(long)]
    drain: Option<String>,
    /// Write the resulting state here.
    #[arg(long)]
    save: Option<PathBuf>,
}

/// `--seed`: a whole number that fits in 64 bits.
fn seed(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("must be a whole number from 0 to {}", u64::MAX))
}

/// How a run ends: the exit status and, for failures, one line per error on stderr.
enum Failure {
    /// An input (file, inventory, request) is invalid: status 2.
    Invalid(String),
    /// Errors already reported line by line on stderr; the status to end with (1: a request
    /// did not fit; 2: a request was invalid).
    Reported(u8),
    /// Standard output was closed (e.g. piped to `head`): end quietly.
    Closed,
}

/// One line: messages from parsers span several lines.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        // Help and version go to stdout with status 0.
        Err(e) if !e.use_stderr() => e.exit(),
        // One line, like every other error (clap adds tips and a usage block).
        Err(e) => {
            // The error is clap's first paragraph (which may list missing arguments on
            // lines of their own); tips and usage follow after a blank line.
            let text = e.to_string();
            let mut first = one_line(text.split("\n\n").next().unwrap_or("bad arguments"));
            // clap quotes a bad value whole: a 100,000-character --seed made a 100 kB line.
            for kind in [ContextKind::InvalidValue, ContextKind::InvalidArg] {
                if let Some(ContextValue::String(v)) = e.get(kind) {
                    first = storage_units::requote(&first, v).into_owned();
                }
            }
            eprintln!(
                "place: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Reported(status)) => ExitCode::from(status),
        Err(Failure::Invalid(e)) => {
            eprintln!("place: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// Writes one line of output; a closed pipe ends the run quietly.
fn emit(out: &mut impl Write, value: &serde_json::Value) -> Result<(), Failure> {
    match writeln!(out, "{value}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
        Err(e) => Err(Failure::Invalid(format!("standard output: {e}"))),
    }
}

/// The `--save` file, opened (and created if missing) before any work but replaced only at the
/// end: an existing file keeps its content when the run fails first, and a file this run
/// created is removed then.
struct SaveTo {
    path: PathBuf,
    file: std::fs::File,
    created: bool,
    written: bool,
}

impl SaveTo {
    fn open(path: &Path) -> Result<Self, String> {
        let fail = |e: std::io::Error| format!("--save {}: {e}", quote_path(path));
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            created,
            written: false,
        })
    }

    fn write(&mut self, text: &str) -> Result<(), String> {
        self.written = true;
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(text.as_bytes()))
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("--save {}: {e}", quote_path(&self.path)))
    }
}

impl Drop for SaveTo {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let invalid = Failure::Invalid;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| invalid(format!("{}: {e}", quote_path(p))))
    };
    let inv = Inventory::from_toml(&read(&args.inventory)?)
        .map_err(|e| invalid(format!("{}: {e}", quote_path(&args.inventory))))?;
    let mut engine = Engine::new(inv, args.seed)
        .map_err(|e| invalid(format!("{}: {e}", quote_path(&args.inventory))))?;
    let file = match &args.requests {
        Some(path) => Some(
            RequestFile::from_toml(&read(path)?)
                .map_err(|e| invalid(format!("{}: {e}", quote_path(path))))?,
        ),
        None => None,
    };
    // Opened before placing, so that a state file that cannot be written ends the run before
    // the work rather than after it.
    let mut save = match &args.save {
        Some(path) => Some(SaveTo::open(path).map_err(invalid)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    // Every request is tried and reported; the worst outcome decides the status.
    let (mut bad_request, mut unplaced) = (false, false);
    for (i, req) in file.iter().flat_map(|f| f.requests.iter()).enumerate() {
        let name = req.name.clone().unwrap_or_else(|| format!("request-{i}"));
        let value = match VolumeId::new(name.clone()) {
            Err(e) => {
                // The error quotes the name (shortened when long): not twice.
                eprintln!("place: request[{i}].name: {e}");
                bad_request = true;
                json!({ "request": name, "placed": false, "error": e.to_string() })
            }
            Ok(id) => match engine.place(id, req) {
                Ok(p) => json!({
                    "request": name,
                    "placed": true,
                    "members": p.members,
                    "soft_violations": p.soft_violations,
                }),
                Err(e) => {
                    let explanation = match &e {
                        PlacementError::Unsatisfiable(x) => Some(x.as_ref()),
                        PlacementError::SearchExhausted { explanation, .. } => {
                            Some(explanation.as_ref())
                        }
                        _ => None,
                    };
                    eprintln!("place: {}", one_line(&e.to_string()));
                    match explanation {
                        Some(_) => unplaced = true,
                        None => bad_request = true,
                    }
                    json!({
                        "request": name,
                        "placed": false,
                        "error": e.to_string(),
                        "explanation": explanation,
                    })
                }
            },
        };
        emit(&mut out, &value)?;
    }
    if let Some(t) = &args.evacuate {
        let plan = engine
            .plan_evacuation(t)
            .map_err(|e| invalid(format!("--evacuate: {e}")))?;
        emit(&mut out, &json!({ "plan": plan }))?;
    }
    if let Some(t) = &args.drain {
        let plan = engine
            .plan_drain(t)
            .map_err(|e| invalid(format!("--drain: {e}")))?;
        emit(&mut out, &json!({ "plan": plan }))?;
    }
    if let Some(save) = &mut save {
        save.write(&engine.snapshot().to_toml()).map_err(invalid)?;
    }
    match (bad_request, unplaced) {
        (true, _) => Err(Failure::Reported(2)),
        (false, true) => Err(Failure::Reported(1)),
        (false, false) => Ok(()),
    }
}
