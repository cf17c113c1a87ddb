//! `place`: dry-run volume requests against an inventory.
//!
//! ```text
//! cargo run -p placement --example place -- INVENTORY.toml [REQUESTS.toml]
//!     [--seed N] [--evacuate TARGET] [--drain TARGET] [--save STATE.toml]
//! ```
//!
//! Places the requests in order, committing each, and prints one JSON object per request on
//! its own line. `--evacuate`/`--drain` then print the repair/drain plan for a drive or failure
//! domain (as a JSON object). `--save` writes the resulting state (with volumes) as TOML.
//! Formats are described in the crate README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use placement::{Engine, Inventory, PlacementError, RequestFile, VolumeId};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Dry-run volume placement against an inventory")]
struct Args {
    /// Inventory TOML file.
    inventory: PathBuf,
    /// Requests TOML file (`[[request]]` tables).
    requests: Option<PathBuf>,
    /// Tie-breaking seed.
    #[arg(long, default_value_t = 0)]
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

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("place: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let inv = Inventory::from_toml(&read(&args.inventory)?)
        .map_err(|e| format!("{}: {e}", args.inventory.display()))?;
    let mut engine =
        Engine::new(inv, args.seed).map_err(|e| format!("{}: {e}", args.inventory.display()))?;
    if let Some(path) = &args.requests {
        let file =
            RequestFile::from_toml(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, req) in file.requests.iter().enumerate() {
            let name = req.name.clone().unwrap_or_else(|| format!("request-{i}"));
            let out = match VolumeId::new(name.clone()) {
                Err(e) => json!({ "request": name, "placed": false, "error": e.to_string() }),
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
                        json!({
                            "request": name,
                            "placed": false,
                            "error": e.to_string(),
                            "explanation": explanation,
                        })
                    }
                },
            };
            println!("{out}");
        }
    }
    if let Some(t) = &args.evacuate {
        let plan = engine.plan_evacuation(t).map_err(|e| e.to_string())?;
        println!("{}", json!({ "plan": plan }));
    }
    if let Some(t) = &args.drain {
        let plan = engine.plan_drain(t).map_err(|e| e.to_string())?;
        println!("{}", json!({ "plan": plan }));
    }
    if let Some(path) = &args.save {
        std::fs::write(path, engine.snapshot().to_toml())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
