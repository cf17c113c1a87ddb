//! The property tests' case count, read as the workspace's other crates
//! read theirs: `COMPOSER_CORE_PROPTEST_CASES` if set, else proptest's own
//! `PROPTEST_CASES` if set, else the test's default. Before,
//! `PROPTEST_CASES=4000` ran the default cases without saying so.

/// `default` cases, or as the variables above ask; a value set but not a
/// whole number stops the test naming its variable (a typo would otherwise
/// run fewer cases than asked for, silently).
pub fn cases(default: u32) -> u32 {
    let var = |name| std::env::var(name).ok();
    pick_cases(
        var("COMPOSER_CORE_PROPTEST_CASES").as_deref(),
        var("PROPTEST_CASES").as_deref(),
        default,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The crate's variable `own` first, then proptest's `proptest`, then
/// `default`.
pub fn pick_cases(own: Option<&str>, proptest: Option<&str>, default: u32) -> Result<u32, String> {
    let (name, value) = match (own, proptest) {
        (Some(v), _) => ("COMPOSER_CORE_PROPTEST_CASES", v),
        (None, Some(v)) => ("PROPTEST_CASES", v),
        (None, None) => return Ok(default),
    };
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}: {value:?} is not a whole number of cases"))
}

#[test]
fn case_count_reads_the_crate_variable_then_proptest_cases() {
    assert_eq!(pick_cases(None, None, 24), Ok(24));
    assert_eq!(pick_cases(None, Some("4000"), 24), Ok(4000));
    assert_eq!(pick_cases(Some("8000"), Some("4000"), 24), Ok(8000));
    assert_eq!(pick_cases(Some("8000"), None, 24), Ok(8000));
    assert_eq!(
        pick_cases(Some("lots"), Some("4000"), 24),
        Err(r#"COMPOSER_CORE_PROPTEST_CASES: "lots" is not a whole number of cases"#.to_string())
    );
    assert_eq!(
        pick_cases(None, Some("-1"), 24),
        Err(r#"PROPTEST_CASES: "-1" is not a whole number of cases"#.to_string())
    );
}
