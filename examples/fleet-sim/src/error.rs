//! The simulator's error type.

/// Why a simulation could not be set up or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A configuration field breaks a rule.
    #[error("config: {field} {rule}")]
    Config {
        /// The field, e.g. `failures.drive.afr`.
        field: String,
        /// The rule broken.
        rule: String,
    },
    /// A configuration file is not valid TOML for the configuration's fields (a syntax error,
    /// a value of the wrong type, an unknown or repeated field).
    #[error("line {line}, column {column} (`{text}`): {message}")]
    Syntax {
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// That line, trimmed.
        text: String,
        /// What is wrong, on one line.
        message: String,
    },
    /// The inventory (generated or read) is not usable.
    #[error("inventory: {0}")]
    Inventory(String),
    /// A policy could not be built over the inventory.
    #[error("policy '{policy}': {reason}")]
    Policy {
        /// Policy name.
        policy: &'static str,
        /// What went wrong.
        reason: String,
    },
}
