//! Secret handling: values that must never reach a log.

use std::collections::BTreeMap;
use std::fmt;

/// The text printed in place of a secret.
pub const STRIPPED: &str = "***stripped***";

/// A placeholder whose `Debug` and `Display` print [`STRIPPED`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Stripped;

impl fmt::Debug for Stripped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STRIPPED)
    }
}

impl fmt::Display for Stripped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STRIPPED)
    }
}

/// The `secrets` map of a CSI request.
///
/// `Debug` and `Display` never print a key's value, only [`STRIPPED`], so a
/// typed request can be logged with `{:?}` as it is.
///
/// # Invariants
/// Every key is non-empty and consists of ASCII alphanumerics, `-`, `_` or `.`
/// (CSI "Secrets Requirements"); the whole map is at most 4 KiB.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    /// Validates a secrets map.
    ///
    /// ```
    /// use csi_types::redact::Secrets;
    /// let s = Secrets::new([("password".to_string(), "hunter2".to_string())].into()).unwrap();
    /// assert_eq!(s.get("password"), Some("hunter2"));
    /// assert_eq!(format!("{s:?}"), "***stripped***");
    /// assert!(Secrets::new([("pass word".to_string(), "x".to_string())].into()).is_err());
    /// ```
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, crate::CsiError> {
        Self::parse("secrets", map)
    }

    pub(crate) fn parse(
        field: &str,
        map: BTreeMap<String, String>,
    ) -> Result<Self, crate::CsiError> {
        crate::validate::map_size(field, &map)?;
        for (i, key) in map.keys().enumerate() {
            crate::validate::secret_key(field, i + 1, map.len(), key)?;
        }
        Ok(Self(map))
    }

    /// The value of a secret.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The names of the secrets (never their values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether there are no secrets.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of secrets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The map itself, for passing on to a storage system.
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Consumes the secrets, returning the map.
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STRIPPED)
    }
}

impl fmt::Display for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STRIPPED)
    }
}
