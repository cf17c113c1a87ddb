//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in the engine.
///
/// Each variant names what was at fault (the member, the field, the peer) so
/// that an operator can act on the message alone. A call that fails leaves
/// the volume as it was before the call, except that a member whose I/O
/// failed is marked failed (that is the point of RAID).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An I/O error on a member device or a file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`member 2 (/tmp/d2): write at 1048576`).
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The layout math refused a geometry or address.
    #[error(transparent)]
    Raid(#[from] raid::RaidError),
    /// A parameter breaks a rule.
    #[error("invalid {field}: {rule}")]
    Invalid {
        /// The parameter at fault.
        field: String,
        /// The rule, with the offending value.
        rule: String,
    },
    /// A member's metadata is missing, damaged or from another array.
    #[error("member {member}: {detail}")]
    Metadata {
        /// Which device (path or description).
        member: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Too many members failed: some data has no readable copy.
    #[error("data unavailable: {0}")]
    Unavailable(String),
    /// The NBD peer broke the protocol or refused a request.
    ///
    /// The message starts with the peer, once: `nbd://HOST:PORT/EXPORT: `
    /// on the client's side, `nbd client IP:PORT: ` on the server's (it is
    /// shown as it is, with no prefix of its own).
    #[error("{0}")]
    Nbd(String),
    /// The wrong secret was given for an encrypted volume.
    #[error("encryption: {0}")]
    Crypto(String),
    /// The operation is not supported by this volume or device.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A member device is in use by another holder (a volume, an export of
    /// `raid-engine serve-nbd`), in this process or another
    /// ([`BlockDevice::claim`](crate::BlockDevice::claim) refused it);
    /// nothing was written.
    #[error("{what}: {detail}")]
    InUse {
        /// Which member (`devices[1]`, `replacement for role 0`).
        what: String,
        /// The device and who holds it.
        detail: String,
    },
    /// A long operation (rebuild, re-add, scrub) stopped because
    /// `Volume::interrupt` asked it to, or (a rebuild or re-add) because the
    /// member it writes was failed meanwhile; says how far it got.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, EngineError>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Whether the message `text` names `name` as a word of its own: at the
/// start or after a space or `(`, and at the end or before a space or one
/// of `:,;)`. A short name (`d`) inside a word ("device") is not it.
///
/// This is how the engine and its command line decide whether a message
/// already names a device, so as to name it once.
pub fn names(text: &str, name: &str) -> bool {
    !name.is_empty()
        && text.match_indices(name).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + name.len()..].chars().next();
            matches!(before, None | Some(' ' | '('))
                && matches!(after, None | Some(' ' | ':' | ',' | ';' | ')'))
        })
}
