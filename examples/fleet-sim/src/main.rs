//! `fleet-sim` command line: runs the simulation, prints the report (text or JSON), writes
//! SVG plots, and shows a progress bar on stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ContextValue};
use fleet_sim::config::generated_fleet_fields;
use fleet_sim::num::{exact, human};
use fleet_sim::{PolicyKind, Progress, SimConfig, SimError, svg};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use storage_units::{quote, quote_path, requote};

/// Simulate years of a composable data centre: failures, rebuilds and data loss per placement
/// policy.
#[derive(Parser, Debug)]
#[command(name = "fleet-sim", version)]
struct Args {
    /// Configuration file (TOML); absent fields take the defaults (see --print-config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Inventory file in the placement crate's format, instead of the generated fleet (the
    /// configuration's [fleet] may then set only jbod_level and rack_level).
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Seed (overrides the configuration).
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    seed: Option<u64>,
    /// Simulated years (overrides the configuration).
    // Negative numbers are taken as values so that the message states the rule (positive)
    // instead of clap's "unexpected argument '-1'".
    #[arg(long, allow_negative_numbers = true, value_parser = years)]
    years: Option<f64>,
    /// Steady volume population (overrides the configuration).
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    volumes: Option<u64>,
    /// Comma-separated policies: engine, straw2, random (overrides the configuration).
    #[arg(long, value_delimiter = ',')]
    policies: Option<Vec<String>>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write utilisation.svg and losses.svg into this directory.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// `--seed`, `--volumes`: a whole number that fits in 64 bits (clap's own message was Rust's
/// "invalid digit found in string", which states no rule).
fn whole(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("must be a whole number from 0 to {}", u64::MAX))
}

/// `--years`: a number; its range is checked with the configuration (clap's own message was
/// Rust's "invalid float literal").
fn years(text: &str) -> Result<f64, String> {
    text.parse()
        .map_err(|_| "must be a number of years, e.g. 5 or 0.5".to_string())
}

fn fail(msg: String) -> ExitCode {
    eprintln!("fleet-sim: {msg}");
    ExitCode::from(2)
}

/// A validation error, attributed to the flag that set the field, or else to the file.
fn invalid(e: SimError, args: &Args) -> String {
    if let SimError::Config { field, rule } = &e {
        let flag = match field.as_str() {
            "years" if args.years.is_some() => Some("--years"),
            "workload.volumes" if args.volumes.is_some() => Some("--volumes"),
            _ => None,
        };
        if let Some(flag) = flag {
            return format!("{flag}: {rule}");
        }
    }
    match &args.config {
        Some(p) => format!("{}: {e}", quote_path(p)),
        None => e.to_string(),
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        // Help and version go to stdout with status 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // One line, like every other error of the tool (clap adds a usage block).
        Err(e) => {
            let text = e.to_string();
            let mut first = text.lines().next().unwrap_or("bad arguments").to_string();
            // clap quotes a bad value whole: a 100,000-character --years made a 100 kB line.
            for kind in [ContextKind::InvalidValue, ContextKind::InvalidArg] {
                if let Some(ContextValue::String(v)) = e.get(kind) {
                    first = requote(&first, v).into_owned();
                }
            }
            return fail(format!(
                "{} (see --help)",
                first.trim_start_matches("error: ")
            ));
        }
    };
    // The file is parsed, the flags override it, and then the whole is validated once: a
    // flag can correct a file's value, and an error names the flag when a flag set the value.
    let mut cfg = match &args.config {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => match SimConfig::parse_toml(&t) {
                // An inventory replaces the generated fleet: a file that also sizes the
                // generated fleet would run a simulation of another fleet without a word.
                Ok(_) if args.inventory.is_some() && !generated_fleet_fields(&t).is_empty() => {
                    return fail(format!(
                        "{}: {} describe the generated fleet, which --inventory replaces: \
                         remove them or drop --inventory (only fleet.jbod_level and \
                         fleet.rack_level apply to an inventory)",
                        quote_path(p),
                        generated_fleet_fields(&t).join(", ")
                    ));
                }
                Ok(c) => c,
                Err(e) => return fail(format!("{}: {e}", quote_path(p))),
            },
            Err(e) => return fail(format!("cannot read {}: {e}", quote_path(p))),
        },
        None => SimConfig::default(),
    };
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(y) = args.years {
        cfg.years = y;
    }
    if let Some(v) = args.volumes {
        cfg.workload.volumes = v;
    }
    if let Some(ps) = &args.policies {
        let mut out = Vec::new();
        for p in ps {
            match PolicyKind::parse(p) {
                Ok(k) if !out.contains(&k) => out.push(k),
                Ok(_) => return fail(format!("--policies: {} is listed twice", quote(p))),
                Err(e) => return fail(format!("--policies: {e}")),
            }
        }
        cfg.policies = out;
    }
    if let Err(e) = cfg.validate() {
        return fail(invalid(e, &args));
    }
    if args.print_config {
        match toml::to_string_pretty(&cfg) {
            Ok(t) => {
                print!("{t}");
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(format!("cannot print the configuration: {e}")),
        }
    }
    let inventory = match &args.inventory {
        Some(p) => {
            let text = match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", quote_path(p))),
            };
            match placement::Inventory::from_toml(&text) {
                Ok(inv) => Some(inv.spec()),
                Err(e) => return fail(format!("{}: {e}", quote_path(p))),
            }
        }
        None => None,
    };
    // What this run creates is removed again if it fails, so that a failed run leaves nothing
    // behind (an empty --json-out file and an empty --svg-dir were left).
    let mut created = Created(Vec::new());
    if let Some(dir) = &args.svg_dir {
        if !dir.exists() {
            created.0.push(dir.clone());
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(format!("cannot create {}: {e}", quote_path(dir)));
        }
    }
    // Opened before the run (not truncated until the report is ready): a directory or an
    // unwritable path was found only after the whole simulation, whose JSON was then lost.
    let json_out = match &args.json_out {
        Some(p) => {
            let new = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p);
            let opened = match new {
                Ok(f) => {
                    created.0.push(p.clone());
                    Ok(f)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::OpenOptions::new().write(true).open(p)
                }
                Err(e) => Err(e),
            };
            match opened {
                Ok(f) => Some((p, f)),
                Err(e) => return fail(format!("cannot write {}: {e}", quote_path(p))),
            }
        }
        None => None,
    };

    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{bar:40}] {percent:>3}% {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bars: Vec<ProgressBar> = cfg
        .policies
        .iter()
        .map(|p| {
            let b = multi.add(ProgressBar::new(1000));
            b.set_style(style.clone());
            b.set_prefix(p.name());
            b
        })
        .collect();
    let started = std::time::Instant::now();
    let years = cfg.years;
    let message = |p: Progress| match p {
        Progress::Placing { done, total } => {
            format!("placing the initial volumes: {done} of {total}")
        }
        Progress::Simulating(f) => {
            format!("simulated {} of {} years", human(f * years), exact(years))
        }
    };
    // Bars are drawn only on a terminal: with stderr redirected (a log, CI), a long run would
    // show nothing for minutes, so there each policy gets a plain line per tenth of a stage.
    let lines = !args.quiet && !std::io::stderr().is_terminal();
    let mut printed: Vec<(bool, i64)> = vec![(false, -1); cfg.policies.len()];
    let names: Vec<&str> = cfg.policies.iter().map(|p| p.name()).collect();
    let result = fleet_sim::run(&cfg, inventory, &mut |i, p| {
        if let Some(b) = bars.get(i) {
            b.set_position((p.fraction() * 1000.0) as u64);
            b.set_message(message(p));
        }
        if lines && let Some(last) = printed.get_mut(i) {
            let stage = (
                matches!(p, Progress::Simulating(_)),
                (p.fraction() * 10.0) as i64,
            );
            if stage > *last {
                *last = stage;
                eprintln!(
                    "fleet-sim: {}: {:.0}%: {}",
                    names[i],
                    p.fraction() * 100.0,
                    message(p)
                );
            }
        }
    });
    for b in &bars {
        b.finish();
    }
    let report = match result {
        Ok(r) => r,
        // A class the fleet cannot hold is found only once the fleet is built: still a
        // configuration error, attributed to the file (or flag) like those found before.
        Err(e @ SimError::Config { .. }) => return fail(invalid(e, &args)),
        Err(e) => return fail(e.to_string()),
    };
    if !args.quiet {
        eprintln!(
            "simulated {} years of {} policies in {:.1} s",
            exact(cfg.years),
            cfg.policies.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some((p, mut f)) = json_out {
        use std::io::Write;
        if let Err(e) = f
            .set_len(0)
            .and_then(|()| f.write_all(report.to_json().as_bytes()))
        {
            return fail(format!("cannot write {}: {e}", quote_path(p)));
        }
    }
    if let Some(dir) = &args.svg_dir {
        for (name, body) in [
            ("utilisation.svg", svg::utilisation_chart(&report)),
            ("losses.svg", svg::losses_chart(&report)),
        ] {
            let p = dir.join(name);
            if !p.exists() {
                created.0.push(p.clone());
            }
            if let Err(e) = std::fs::write(&p, body) {
                return fail(format!("cannot write {}: {e}", quote_path(&p)));
            }
        }
    }
    created.0.clear();
    ExitCode::SUCCESS
}

/// Paths a run created, removed (in reverse order; a directory only if empty) when dropped
/// before the run succeeded.
struct Created(Vec<PathBuf>);

impl Drop for Created {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            // Best effort on the way out of a failed run: its own error is the one to report.
            let _ = if p.is_dir() {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}
