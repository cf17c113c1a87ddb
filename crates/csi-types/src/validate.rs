//! The spec's field rules, in one place. Every typed conversion calls these,
//! so a rule is written once and every violation names its field.

use std::collections::BTreeMap;

use crate::CsiError;

/// The general size limit of a string field (CSI "Size Limits").
pub const MAX_STRING_BYTES: usize = 128;
/// The general size limit of a `map<string, string>` field, keys and values together.
pub const MAX_MAP_BYTES: usize = 4096;
/// The size limit of `node_id`, which overrides the general limit.
pub const MAX_NODE_ID_BYTES: usize = 256;
/// The longest path accepted for `target_path`, `staging_target_path` and
/// `volume_path` (Linux `PATH_MAX`); the spec asks for at least 128 bytes and
/// recommends the OS limit.
pub const MAX_PATH_BYTES: usize = 4096;
/// The total size limit of `mount_flags`.
pub const MAX_MOUNT_FLAGS_BYTES: usize = 4096;
/// The limit of a DNS label style name (plugin name, topology key parts and values).
pub const MAX_LABEL_CHARS: usize = 63;

/// The rule of an empty REQUIRED field.
pub(crate) const REQUIRED: &str = "this field is REQUIRED";

pub(crate) fn required(field: &str, value: &str) -> Result<(), CsiError> {
    if value.is_empty() {
        Err(CsiError::missing(field))
    } else {
        Ok(())
    }
}

pub(crate) fn max_bytes(field: &str, value: &str, max: usize) -> Result<(), CsiError> {
    if value.len() > max {
        Err(CsiError::invalid(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ))
    } else {
        Ok(())
    }
}

/// A string field with the general 128-byte limit.
pub(crate) fn string(field: &str, value: &str) -> Result<(), CsiError> {
    max_bytes(field, value, MAX_STRING_BYTES)
}

/// Rejects the control characters the spec bans in names:
/// U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F.
pub(crate) fn no_banned_controls(field: &str, value: &str) -> Result<(), CsiError> {
    if let Some(c) = value.chars().find(|&c| {
        matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
    }) {
        Err(CsiError::invalid(
            field,
            format!("must not contain the control character U+{:04X}", c as u32),
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn map_size(field: &str, map: &BTreeMap<String, String>) -> Result<(), CsiError> {
    let total: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_MAP_BYTES {
        Err(CsiError::invalid(
            field,
            format!("keys and values together must be at most {MAX_MAP_BYTES} bytes, got {total}"),
        ))
    } else {
        Ok(())
    }
}

/// Checks the secret key `key`, the `position`th (from 1) of `count` keys of `field` in byte
/// order. An invalid key is named by that place and its length, never quoted: a key field is
/// where a secret value lands when pasted into the wrong box, and the error reaches the CO's
/// logs. Only the first disallowed character is shown, and only when it is ASCII punctuation
/// (`:`, `=`, `/`); any other is described ("a space", "a non-ASCII character").
pub(crate) fn secret_key(
    field: &str,
    position: usize,
    count: usize,
    key: &str,
) -> Result<(), CsiError> {
    if key.is_empty() {
        return Err(CsiError::invalid(field, "secret keys must not be empty"));
    }
    if let Some((at, c)) = key
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        let what = match c {
            ' ' => "a space".to_string(),
            c if c.is_ascii_punctuation() => format!("{c:?}"),
            c if c.is_ascii_control() => "a control character".to_string(),
            _ => "a non-ASCII character".to_string(),
        };
        return Err(CsiError::invalid(
            field,
            format!(
                "key {position} of {count} in byte order ({} bytes, not shown: it may hold a \
                 secret) has {what} at byte {at}: secret keys may contain only ASCII \
                 alphanumerics, '-', '_' and '.'",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// The first repeated entry of `ids`, as `(first, again)` indexes: the rule behind lists
/// whose entries name distinct objects.
pub(crate) fn first_repeat<'a>(ids: impl IntoIterator<Item = &'a str>) -> Option<(usize, usize)> {
    let mut seen = BTreeMap::new();
    ids.into_iter()
        .enumerate()
        .find_map(|(i, id)| seen.insert(id, i).map(|first| (first, i)))
}

/// An absolute path of at most [`MAX_PATH_BYTES`] without NUL bytes.
pub(crate) fn path(field: &str, value: &str) -> Result<(), CsiError> {
    required(field, value)?;
    max_bytes(field, value, MAX_PATH_BYTES)?;
    if value.contains('\0') {
        return Err(CsiError::invalid(field, "must not contain a NUL byte"));
    }
    if !std::path::Path::new(value).is_absolute() {
        return Err(CsiError::invalid(field, "must be an absolute path"));
    }
    Ok(())
}

/// The DNS-label style rule shared by topology key names and segment values:
/// at most 63 characters, beginning and ending with an ASCII alphanumeric,
/// with `-`, `_`, `.` or alphanumerics between.
pub(crate) fn label(field: &str, what: &str, value: &str) -> Result<(), CsiError> {
    if value.is_empty() {
        return Err(CsiError::invalid(
            field,
            format!("{what} must not be empty"),
        ));
    }
    if value.chars().count() > MAX_LABEL_CHARS {
        return Err(CsiError::invalid(
            field,
            format!("{what} must be at most {MAX_LABEL_CHARS} characters"),
        ));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let first = value.chars().next().unwrap_or(' ');
    let last = value.chars().last().unwrap_or(' ');
    if !first.is_ascii_alphanumeric()
        || !last.is_ascii_alphanumeric()
        || !value.chars().all(ok_inner)
    {
        return Err(CsiError::invalid(
            field,
            format!(
                "{what} must begin and end with an ASCII alphanumeric and contain only alphanumerics, '-', '_' or '.' (got {value:?})"
            ),
        ));
    }
    Ok(())
}

/// A DNS subdomain (RFC 1035 section 2.3.1 style, as the spec uses it for the
/// plugin name and topology key prefixes): at most 63 characters, beginning
/// and ending with an alphanumeric, with `-`, `.` and alphanumerics between,
/// and each dot-separated label non-empty, beginning and ending with an
/// alphanumeric (no `a..b`, `a.-b` or `a-.b`).
/// `lower_only` additionally demands lower case (topology key prefixes).
pub(crate) fn domain_name(
    field: &str,
    what: &str,
    value: &str,
    lower_only: bool,
) -> Result<(), CsiError> {
    if value.is_empty() {
        return Err(CsiError::invalid(
            field,
            format!("{what} must not be empty"),
        ));
    }
    if value.chars().count() > MAX_LABEL_CHARS {
        return Err(CsiError::invalid(
            field,
            format!("{what} must be at most {MAX_LABEL_CHARS} characters"),
        ));
    }
    let alnum = |c: char| {
        if lower_only {
            c.is_ascii_lowercase() || c.is_ascii_digit()
        } else {
            c.is_ascii_alphanumeric()
        }
    };
    let first = value.chars().next().unwrap_or(' ');
    let last = value.chars().last().unwrap_or(' ');
    let (one, case) = if lower_only {
        ("a lower-case", "lower-case ")
    } else {
        ("an", "")
    };
    if !alnum(first) || !alnum(last) || !value.chars().all(|c| alnum(c) || matches!(c, '-' | '.')) {
        return Err(CsiError::invalid(
            field,
            format!(
                "{what} must follow domain name notation: begin and end with {one} alphanumeric and contain only {case}alphanumerics, '-' or '.' (got {value:?})"
            ),
        ));
    }
    // Domain name notation (RFC 1035 section 2.3.1, with RFC 1123's leading
    // digit): dot-separated labels, each non-empty and beginning and ending
    // with an alphanumeric. The whole name's ends are checked above; a label
    // boundary is a '.' next to a '.' or a '-'.
    let b = value.as_bytes();
    if b.windows(2)
        .any(|w| (w[0] == b'.' && matches!(w[1], b'.' | b'-')) || (w[0] == b'-' && w[1] == b'.'))
    {
        return Err(CsiError::invalid(
            field,
            format!(
                "{what} must follow domain name notation: each dot-separated label must be non-empty and begin and end with {one} alphanumeric (got {value:?})"
            ),
        ));
    }
    Ok(())
}

// Field paths are built for every nested field a request or response
// carries, on the success path too (they are the `field` of the errors the
// validators may return), so they are put together without the `format!`
// machinery: in a CreateVolume + DeleteVolume cycle of the `local` driver,
// `format!` here cost about 14k instructions (callgrind), 7% of the cycle.

/// Names a child field of `parent` (`parent.child`, or `child` at the root).
pub(crate) fn at(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        join(parent, child)
    }
}

/// Joins a parent field path and a child name.
pub(crate) fn join(parent: &str, child: &str) -> String {
    let mut path = String::with_capacity(parent.len() + 1 + child.len());
    path.push_str(parent);
    path.push('.');
    path.push_str(child);
    path
}

/// A field path with an index.
pub(crate) fn index(parent: &str, i: usize) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = i;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut path = String::with_capacity(parent.len() + 2 + digits.len() - at);
    path.push_str(parent);
    path.push('[');
    for &d in &digits[at..] {
        path.push(char::from(d));
    }
    path.push(']');
    path
}

/// A plain `map<string, string>` field: size limit only.
pub(crate) fn map(
    field: &str,
    map: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, CsiError> {
    map_size(field, &map)?;
    Ok(map)
}

/// Runs `rule`, whose verdict does not depend on the field's name, and
/// builds that name (`field`) only when the rule is broken: for fields
/// checked on every call whose paths (`segments["zone"]`, `volume.volume_id`)
/// would otherwise be put together for nothing.
pub(crate) fn lazily<T>(
    field: impl FnOnce() -> String,
    rule: impl Fn(&str) -> Result<T, CsiError>,
) -> Result<T, CsiError> {
    rule("").or_else(|_| rule(&field()))
}

/// A REQUIRED timestamp that a `SystemTime` can hold.
pub(crate) fn timestamp(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<std::time::SystemTime, CsiError> {
    let t = t.ok_or_else(|| CsiError::missing(field))?;
    std::time::SystemTime::try_from(t)
        .map_err(|e| CsiError::invalid(field, format!("not a valid timestamp: {e}")))
}

/// A non-negative int64 that must be set (non-zero is not required: 0 is a valid size).
pub(crate) fn non_negative(field: &str, value: i64) -> Result<u64, CsiError> {
    u64::try_from(value)
        .map_err(|_| CsiError::invalid(field, format!("must not be negative, got {value}")))
}

/// An `int32` count where 0 means "unset".
pub(crate) fn optional_count(field: &str, value: i32) -> Result<Option<u32>, CsiError> {
    match value {
        0 => Ok(None),
        n if n < 0 => Err(CsiError::invalid(
            field,
            format!("must not be negative, got {n}"),
        )),
        n => Ok(Some(n as u32)),
    }
}

/// A count the typed layer keeps as `u32` back to the wire's `int32`,
/// saturating at `i32::MAX`.
pub(crate) fn count_to_wire(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A typed size (`u64`) as the wire's `int64`, naming the field (built by
/// `field` only for the error) when it does not fit: sent as `i64::MAX`, it
/// would be a different size than the one built.
pub(crate) fn wire_size(field: impl FnOnce() -> String, value: u64) -> Result<i64, CsiError> {
    i64::try_from(value).map_err(|_| {
        CsiError::invalid(
            field(),
            format!(
                "must be at most {} (the largest int64, which the wire carries), got {value}",
                i64::MAX
            ),
        )
    })
}

/// A List request's `starting_token`; empty means unset. A token longer
/// than the spec's 128-byte string limit was issued by no plugin (a
/// `next_token` obeys that limit too), so it is an invalid `starting_token`,
/// whose code the `ListVolumes` and `ListSnapshots` error tables name:
/// `ABORTED` ("Indicates that `starting_token` is not valid"; the caller
/// starts the listing again), not the general `INVALID_ARGUMENT`.
pub(crate) fn starting_token(value: String) -> Result<Option<String>, CsiError> {
    if value.len() > MAX_STRING_BYTES {
        return Err(CsiError::aborted(format!(
            "`starting_token` is not valid: must be at most {MAX_STRING_BYTES} bytes, got {}; \
             start the listing again with an empty starting_token",
            value.len()
        )));
    }
    Ok((!value.is_empty()).then_some(value))
}

/// Cuts `s` to at most `max` bytes on a character boundary, for free-text
/// fields a plugin fills (condition and validation messages).
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        assert_eq!(join("volume", "volume_id"), "volume.volume_id");
        assert_eq!(index("volume_capabilities", 0), "volume_capabilities[0]");
        assert_eq!(index("x", 9), "x[9]");
        assert_eq!(index("x", 10), "x[10]");
        assert_eq!(index("x", usize::MAX), format!("x[{}]", usize::MAX));
    }

    /// An overlong `starting_token` is an invalid token: the `ABORTED` the
    /// List RPCs' error tables name, not `INVALID_ARGUMENT`.
    #[test]
    fn an_overlong_starting_token_is_aborted() {
        use crate::Code;
        use crate::controller::{ListSnapshotsRequest, ListVolumesRequest};
        let token = "t".repeat(MAX_STRING_BYTES + 1);
        let rule = "`starting_token` is not valid: must be at most 128 bytes, got 129; start \
                    the listing again with an empty starting_token";
        let volumes = ListVolumesRequest::try_from(crate::proto::ListVolumesRequest {
            max_entries: 0,
            starting_token: token.clone(),
        })
        .unwrap_err();
        let snapshots = ListSnapshotsRequest::try_from(crate::proto::ListSnapshotsRequest {
            starting_token: token,
            ..Default::default()
        })
        .unwrap_err();
        for e in [volumes, snapshots] {
            assert_eq!(e.code(), Code::Aborted, "{e}");
            assert_eq!(e.to_string(), format!("aborted: {rule}"));
        }
        // At the limit, the token is the driver's to judge.
        let at_limit = "t".repeat(MAX_STRING_BYTES);
        let r = ListVolumesRequest::try_from(crate::proto::ListVolumesRequest {
            max_entries: 0,
            starting_token: at_limit.clone(),
        })
        .unwrap();
        assert_eq!(r.starting_token, Some(at_limit));
    }

    /// A secret value pasted into a key by mistake is not repeated in the error (which a CO
    /// logs, and a driver too): the key is named by its place, its length and the rule.
    #[test]
    fn an_invalid_secret_key_is_not_quoted() {
        let leaked = "s3cr3t-AKIAIOSFODNN7EXAMPLE-wJalrXUtnFEMI";
        let key = format!("password: {leaked}{}", "x".repeat(4000));
        let map = BTreeMap::from([
            ("a-user".to_string(), "u".to_string()),
            (key.clone(), "v".to_string()),
        ]);
        let e = crate::redact::Secrets::new(map).unwrap_err();
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(!shown.contains("password"), "{shown}");
            assert!(shown.len() < 400, "{shown}");
        }
        assert_eq!(
            e.to_string(),
            format!(
                "invalid `secrets`: key 2 of 2 in byte order ({} bytes, not shown: it may hold a secret) \
                 has ':' at byte 8: secret keys may contain only ASCII alphanumerics, '-', '_' \
                 and '.'",
                key.len()
            )
        );
        // A character that is not ASCII punctuation is described, not shown.
        let e = crate::redact::Secrets::new(BTreeMap::from([("pässword".into(), "v".into())]))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("has a non-ASCII character at byte 1"),
            "{e}"
        );
        assert!(!e.to_string().contains('ä'), "{e}");
    }
}
