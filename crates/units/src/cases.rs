//! How many cases a property test runs, read one way across the workspace.
//!
//! A crate's property tests run a default number of cases; a longer run asks for more through
//! the crate's own variable (`PLACEMENT_PROPTEST_CASES=8000`), or through proptest's own
//! `PROPTEST_CASES`, read when the crate's variable is not set. A value that is set but is not a
//! whole number is an error naming its variable, never a silent fallback to the default: a typo
//! would otherwise run fewer cases than asked for without saying so.
//!
//! ```
//! use storage_units::cases::{CaseCountError, pick_case_count};
//!
//! let own = "PLACEMENT_PROPTEST_CASES";
//! assert_eq!(pick_case_count((own, None), None, 400), Ok(400));
//! assert_eq!(pick_case_count((own, None), Some("4000"), 400), Ok(4000));
//! assert_eq!(pick_case_count((own, Some("8000")), Some("4000"), 400), Ok(8000));
//! let err: CaseCountError = pick_case_count((own, Some("lots")), None, 400).unwrap_err();
//! assert_eq!(err.to_string(), r#"PLACEMENT_PROPTEST_CASES: "lots" is not a whole number of cases"#);
//! ```

use std::fmt;

/// The name of proptest's own case-count variable.
pub const PROPTEST_CASES: &str = "PROPTEST_CASES";

/// A case-count variable set to something that is not a whole number of cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseCountError {
    /// The variable that holds the value.
    pub variable: String,
    /// The value as it was set.
    pub value: String,
}

impl fmt::Display for CaseCountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is not a whole number of cases",
            self.variable,
            crate::quote(&self.value)
        )
    }
}

impl std::error::Error for CaseCountError {}

/// The case count from the crate's own variable `own = (name, value)` if it is set, else from
/// proptest's `PROPTEST_CASES` (`proptest`) if set, else `default`.
pub fn pick_case_count(
    own: (&str, Option<&str>),
    proptest: Option<&str>,
    default: u32,
) -> Result<u32, CaseCountError> {
    let (variable, value) = match (own, proptest) {
        ((name, Some(v)), _) => (name, v),
        (_, Some(v)) => (PROPTEST_CASES, v),
        (_, None) => return Ok(default),
    };
    value.trim().parse().map_err(|_| CaseCountError {
        variable: variable.to_string(),
        value: value.to_string(),
    })
}

/// [`pick_case_count`] with the values of the process's environment variables `own_variable`
/// and `PROPTEST_CASES` (a variable that is not valid Unicode counts as not a whole number).
pub fn case_count(own_variable: &str, default: u32) -> Result<u32, CaseCountError> {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    pick_case_count(
        (own_variable, var(own_variable).as_deref()),
        var(PROPTEST_CASES).as_deref(),
        default,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "RAID_PROPTEST_CASES";

    #[test]
    fn the_crate_variable_then_proptest_cases_then_the_default() {
        assert_eq!(pick_case_count((OWN, None), None, 96), Ok(96));
        assert_eq!(pick_case_count((OWN, None), Some("4000"), 96), Ok(4000));
        assert_eq!(
            pick_case_count((OWN, Some("8000")), Some("4000"), 96),
            Ok(8000)
        );
        assert_eq!(pick_case_count((OWN, Some(" 8000\n")), None, 96), Ok(8000));
    }

    #[test]
    fn a_value_that_is_not_a_count_names_its_variable() {
        let e = pick_case_count((OWN, Some("lots")), Some("4000"), 96).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"RAID_PROPTEST_CASES: "lots" is not a whole number of cases"#
        );
        let e = pick_case_count((OWN, None), Some("-1"), 96).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"PROPTEST_CASES: "-1" is not a whole number of cases"#
        );
        let e = pick_case_count((OWN, Some("")), None, 96).unwrap_err();
        assert_eq!(e.variable, OWN);
    }
}
