//! Log output for a driver binary (feature `logging`): human-readable lines
//! or JSON lines on stderr, filtered by `RUST_LOG`.
//!
//! Every request the [`crate::Plugin`] logs has its secrets stripped before
//! it reaches any subscriber, so both formats carry the same redacted text.
//!
//! ```
//! use csi_types::logging::LogFormat;
//!
//! // As a command-line flag: `--log-format text|json`.
//! let format: LogFormat = "json".parse().unwrap();
//! assert_eq!(format, LogFormat::Json);
//! assert_eq!(
//!     "xml".parse::<LogFormat>().unwrap_err().to_string(),
//!     "unknown log format \"xml\": expected `text` or `json`"
//! );
//! // In `main`: csi_types::logging::init(format, "info")?;
//! ```
//!
//! A JSON line holds `timestamp`, `level`, `target`, the event's fields
//! flattened (`message`, `code`, `elapsed_ms`, …) and `span` with the
//! current span's fields (`rpc` for a CSI call).

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A log format name that is neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?}: expected `text` or `json`")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;
    fn from_str(s: &str) -> Result<Self, UnknownLogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_string())),
        }
    }
}

/// Why [`init`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogInitError {
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// Another global subscriber is already installed.
    #[error("installing the log subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// A subscriber writing `format` to `writer`, keeping events that `filter`
/// lets through. [`init`] installs one on stderr; tests can capture one.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the global subscriber: `format` on stderr, filtered by
/// `RUST_LOG` or, when it is unset, by `default_filter` (`"info"`,
/// `"warn,csi_types=debug"`, …).
pub fn init(format: LogFormat, default_filter: &str) -> Result<(), LogInitError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(default_filter)?,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    use tracing_subscriber::util::SubscriberInitExt;
    subscriber(format, filter, std::io::stderr, ansi).try_init()?;
    Ok(())
}
