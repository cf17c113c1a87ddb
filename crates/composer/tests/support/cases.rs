//! The property tests' case count, read as the workspace's other crates read theirs
//! (`storage_units::cases`): `COMPOSER_CORE_PROPTEST_CASES` if set, else proptest's own
//! `PROPTEST_CASES` if set, else the test's default; a value that is not a whole number stops
//! the test naming its variable.

pub fn cases(default: u32) -> u32 {
    storage_units::cases::case_count("COMPOSER_CORE_PROPTEST_CASES", default)
        .unwrap_or_else(|e| panic!("{e}"))
}
