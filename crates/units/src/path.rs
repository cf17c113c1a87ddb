//! How every crate of the SDK shows a path in a message: [`quote_path`].

use std::path::Path;

/// Most characters of a path that [`quote_path`] shows whole: enough for any path kubelet
/// makes (`/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~csi/pvc-<uid>/mount` is about
/// 135 characters), far less than `PATH_MAX`.
pub const PATH_SHOWN_CHARS: usize = 256;

/// How many characters of a longer path's head [`quote_path`] keeps.
pub const PATH_HEAD_CHARS: usize = 64;

/// How many characters of a longer path's tail [`quote_path`] keeps: the part that tells two
/// volumes' paths apart (the volume's name and the last component) is at the end.
pub const PATH_TAIL_CHARS: usize = 128;

/// `path` as a one-line message shows it.
///
/// - A plain path (valid UTF-8, not empty, no white space at either end, nothing that `{:?}`
///   escapes, at most [`PATH_SHOWN_CHARS`] characters) is shown as it is.
/// - Any other path of at most [`PATH_SHOWN_CHARS`] characters is quoted and escaped as
///   `{:?}` writes a string: control characters (a newline cannot break the line), quotes and
///   backslashes escaped, and each byte that is not UTF-8 as `\xFF`.
/// - A longer path keeps its first [`PATH_HEAD_CHARS`] and its last [`PATH_TAIL_CHARS`]
///   characters, each quoted and escaped, with its length in bytes between them, so that the
///   volume it belongs to and its last component stay visible however deep it is.
///
/// A byte that is not UTF-8 counts as one character. Each character is written as at most 10
/// (`\u{10ffff}`), so a shown path is never longer than `10 * PATH_SHOWN_CHARS + 2`
/// characters. Callers keep the whole path in their error's fields.
///
/// ```
/// use std::path::Path;
/// use storage_units::quote_path;
///
/// let target = "/var/lib/kubelet/pods/0f3c/volumes/kubernetes.io~csi/pvc-1/mount";
/// assert_eq!(quote_path(Path::new(target)), target);
/// assert_eq!(quote_path(Path::new("")), r#""""#);
/// assert_eq!(quote_path(Path::new("/mnt/a\nb")), r#""/mnt/a\nb""#);
/// assert_eq!(quote_path(Path::new("/mnt/x ")), r#""/mnt/x ""#);
///
/// # #[cfg(unix)] {
/// use std::os::unix::ffi::OsStrExt;
/// let bad = Path::new(std::ffi::OsStr::from_bytes(b"/mnt/bad\xffname"));
/// assert_eq!(quote_path(bad), r#""/mnt/bad\xFFname""#);
/// # }
///
/// let deep = format!("/srv/{}pvc-42/mount", "d/".repeat(200));
/// let shown = quote_path(Path::new(&deep));
/// assert!(shown.starts_with(r#""/srv/d/d/"#), "{shown}");
/// assert!(shown.contains("… (417 bytes) …"), "{shown}");
/// assert!(shown.ends_with(r#"d/d/pvc-42/mount""#), "{shown}");
/// ```
pub fn quote_path(path: &Path) -> String {
    let bytes = path.as_os_str().as_encoded_bytes();
    let starts = char_starts(bytes);
    if starts.len() <= PATH_SHOWN_CHARS {
        return match path.to_str() {
            Some(text) if is_plain(text) => text.to_string(),
            _ => escaped(bytes),
        };
    }
    let head_end = starts[PATH_HEAD_CHARS];
    let tail_start = starts[starts.len() - PATH_TAIL_CHARS];
    format!(
        "{}… ({} bytes) …{}",
        escaped(&bytes[..head_end]),
        bytes.len(),
        escaped(&bytes[tail_start..])
    )
}

/// Whether `text` reads the same bare as quoted: not empty, no white space at either end, and
/// nothing `{:?}` would escape.
fn is_plain(text: &str) -> bool {
    !text.is_empty() && text.trim() == text && format!("{text:?}").len() == text.len() + 2
}

/// Where each character of `bytes` starts: a UTF-8 character, or a byte that is not UTF-8.
fn char_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    for chunk in bytes.utf8_chunks() {
        starts.extend(chunk.valid().char_indices().map(|(i, _)| at + i));
        at += chunk.valid().len();
        starts.extend(at..at + chunk.invalid().len());
        at += chunk.invalid().len();
    }
    starts
}

/// `bytes` quoted and escaped as `{:?}` writes a path: the UTF-8 parts as a `str`'s `{:?}`
/// does, and each other byte as `\xFF`.
fn escaped(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        let valid = format!("{:?}", chunk.valid());
        out.push_str(&valid[1..valid.len() - 1]);
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    /// The longest a shown path can be (see [`quote_path`]).
    const BOUND: usize = 10 * PATH_SHOWN_CHARS + 2;

    fn path(bytes: &[u8]) -> &Path {
        Path::new(OsStr::from_bytes(bytes))
    }

    #[test]
    fn a_kubelet_target_path_is_shown_whole() {
        let target = "/var/lib/kubelet/pods/0f3c5a1e-7b2d-4c8e-9f10-2a3b4c5d6e7f/volumes/\
                      kubernetes.io~csi/pvc-8d9e0f1a-2b3c-4d5e-8f60-718293a4b5c6/mount";
        assert!(target.len() > 130);
        assert_eq!(quote_path(Path::new(target)), target);
    }

    #[test]
    fn a_long_path_keeps_its_head_and_its_tail() {
        let long = format!("/{}/pvc-1/mount", "x".repeat(5000));
        let shown = quote_path(Path::new(&long));
        let tail = &long[long.len() - PATH_TAIL_CHARS..];
        assert_eq!(
            shown,
            format!("{:?}… (5013 bytes) …{tail:?}", &long[..PATH_HEAD_CHARS])
        );
        // Characters, not bytes, and a byte that is not UTF-8 counts as one.
        let mut odd = b"/\n".to_vec();
        odd.extend("é".repeat(300).as_bytes());
        odd.extend(b"/\xffend");
        let shown = quote_path(path(&odd));
        assert!(shown.starts_with("\"/\\né"), "{shown}");
        assert!(shown.ends_with("é/\\xFFend\""), "{shown}");
        assert!(shown.contains("… (607 bytes) …"), "{shown}");
    }

    #[test]
    fn only_a_path_that_reads_the_same_bare_is_shown_bare() {
        for odd in [
            "",
            " /a",
            "/a\t",
            "/a\"b",
            "/a\\b",
            "/a\u{2028}b",
            "/\u{301}",
        ] {
            let shown = quote_path(Path::new(odd));
            assert_eq!(shown, format!("{odd:?}"), "{odd:?}");
        }
        assert_eq!(quote_path(Path::new("/a b/é")), "/a b/é");
        assert_eq!(quote_path(path(b"/a\x80\xe2\x82")), r#""/a\x80\xE2\x82""#);
    }

    /// A path component: printable, odd or not UTF-8.
    fn component() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"abcxyz019-_.~ ".to_vec()).prop_map(|b| vec![b]),
                1 => prop::sample::select(vec!["é", "\n", "\"", "\\", "\u{2028}", "€", "\u{1F600}"])
                    .prop_map(|s| s.as_bytes().to_vec()),
                1 => (0x80u8..=0xff).prop_map(|b| vec![b]),
            ],
            1..40,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_shown_path_is_one_bounded_line_whole_when_short_and_keeps_a_short_last_component(
            components in prop::collection::vec(component(), 1..30),
        ) {
            let mut bytes = Vec::new();
            for c in &components {
                bytes.push(b'/');
                bytes.extend(c);
            }
            let p = path(&bytes);
            let shown = quote_path(p);
            prop_assert!(
                !shown.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
                "not one line: {shown}"
            );
            prop_assert!(shown.chars().count() <= BOUND, "{} characters", shown.chars().count());
            let chars = char_starts(&bytes).len();
            if chars <= PATH_SHOWN_CHARS {
                let whole = format!("{p:?}");
                prop_assert!(shown == whole || shown == p.to_str().unwrap(), "{shown} / {whole}");
            } else {
                prop_assert!(shown.contains(&format!("… ({} bytes) …", bytes.len())), "{shown}");
            }
            let last = components.last().unwrap();
            if char_starts(last).len() < PATH_TAIL_CHARS {
                let mut slash_last = vec![b'/'];
                slash_last.extend(last);
                let last = escaped(&slash_last);
                prop_assert!(
                    shown.ends_with(&last[1..]) || shown == p.to_str().unwrap(),
                    "{shown} does not end with {last}"
                );
            }
        }
    }
}
