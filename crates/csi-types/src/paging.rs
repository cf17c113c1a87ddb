//! Paging of `ListVolumes` and `ListSnapshots`: `max_entries`,
//! `starting_token` and `next_token` as the spec asks, for any driver whose
//! objects can be listed in order of a string key (their id).
//!
//! A token names the position *after* the last key of a page, so a sequence
//! of pages neither repeats nor skips an object that exists throughout it,
//! whatever is created or deleted between the calls. Tokens carry a
//! checksum over the listing and the position: a token this plugin did not
//! issue, or one issued by the other listing, answers `ABORTED` ("If the
//! starting_token is not valid, the Plugin MUST respond with ABORTED", CSI
//! v1.12, `ListVolumes` and `ListSnapshots` errors). A token fits the spec's
//! 128-byte string limit whatever the key: a key of up to 119 bytes is
//! carried whole; a longer one as its first bytes and a hash of the rest.
//! In that one case, if the page's last object is deleted before the next
//! page is asked for, the next page may repeat objects whose keys share
//! those first bytes (it never skips one).
//!
//! ```
//! use std::collections::BTreeMap;
//! use csi_types::Code;
//! use csi_types::controller::ListVolumesRequest;
//! use csi_types::paging::Paging;
//!
//! let vols: BTreeMap<String, u64> = (1..=5).map(|i| (format!("vol-{i}"), i << 30)).collect();
//!
//! let first = ListVolumesRequest { max_entries: Some(2), starting_token: None };
//! let page = Paging::volumes(&first)?.page(&vols);
//! assert_eq!(page.entries.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["vol-1", "vol-2"]);
//!
//! let rest = ListVolumesRequest { max_entries: None, starting_token: page.next_token };
//! let page = Paging::volumes(&rest)?.page(&vols);
//! assert_eq!(page.entries.len(), 3);
//! assert_eq!(page.next_token, None);
//!
//! let bad = ListVolumesRequest { max_entries: None, starting_token: Some("page-2".into()) };
//! assert_eq!(Paging::volumes(&bad).unwrap_err().code(), Code::Aborted);
//! # Ok::<(), csi_types::CsiError>(())
//! ```

use crate::CsiError;
use crate::controller::{ListSnapshotsRequest, ListVolumesRequest};
use crate::validate::MAX_STRING_BYTES;

/// Which listing a token belongs to: a token of one is refused by the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Listing {
    /// `ListVolumes`.
    Volumes,
    /// `ListSnapshots`.
    Snapshots,
}

impl Listing {
    fn name(self) -> &'static str {
        match self {
            Listing::Volumes => "volumes",
            Listing::Snapshots => "snapshots",
        }
    }
}

/// One page: the entries, in key order, and the token of the next page
/// (`None` on the last page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries of this page.
    pub entries: Vec<T>,
    /// The `next_token` to answer; `None` when nothing follows.
    pub next_token: Option<String>,
}

/// Where a page starts, decoded from a `starting_token`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Position {
    /// After this key.
    After(String),
    /// After the key that starts with `prefix` and hashes to `hash`.
    AfterHashed { prefix: String, hash: u32 },
}

/// The paging of one List call: its listing, its `max_entries` and where its
/// `starting_token` says to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paging {
    listing: Listing,
    max: Option<usize>,
    start: Option<Position>,
}

/// Tag of a token that carries its whole key.
const WHOLE: char = 'a';
/// Tag of a token that carries a key's prefix and the hash of the key.
const HASHED: char = 'h';
/// Tag and checksum: the bytes of a token before its key.
const HEADER: usize = 1 + 8;
/// The longest key a token carries whole.
const MAX_WHOLE_KEY: usize = MAX_STRING_BYTES - HEADER;
/// The longest prefix a hashed token carries (after its second hash).
const MAX_PREFIX: usize = MAX_STRING_BYTES - HEADER - 8;

/// FNV-1a, 32 bits: a checksum that recognises a token this code did not
/// write (not a secret: tokens are not credentials).
fn fnv(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = (h ^ 0xff).wrapping_mul(0x0100_0193);
        }
        for &b in *part {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Paging {
    /// The paging of a call to `listing` with these request fields. A
    /// `max_entries` of `None` (or 0) means no limit. A `starting_token`
    /// this plugin did not issue for `listing` is `ABORTED`.
    pub fn new(
        listing: Listing,
        max_entries: Option<u32>,
        starting_token: Option<&str>,
    ) -> Result<Self, CsiError> {
        let start = starting_token
            .map(|t| Self::decode(listing, t))
            .transpose()?;
        Ok(Paging {
            listing,
            max: max_entries.filter(|&m| m > 0).map(|m| m as usize),
            start,
        })
    }

    /// The paging a `ListVolumes` request asks for.
    pub fn volumes(req: &ListVolumesRequest) -> Result<Self, CsiError> {
        Self::new(
            Listing::Volumes,
            req.max_entries,
            req.starting_token.as_deref(),
        )
    }

    /// The paging a `ListSnapshots` request asks for. Its filters
    /// (`snapshot_id`, `source_volume_id`) are the driver's to apply to the
    /// items it passes to [`Paging::page`].
    pub fn snapshots(req: &ListSnapshotsRequest) -> Result<Self, CsiError> {
        Self::new(
            Listing::Snapshots,
            req.max_entries,
            req.starting_token.as_deref(),
        )
    }

    fn decode(listing: Listing, token: &str) -> Result<Position, CsiError> {
        let bad = || {
            CsiError::aborted(format!(
                "starting_token {token:?} was not issued by this plugin's {} listing",
                listing.name()
            ))
        };
        let mut chars = token.chars();
        let tag = chars.next().ok_or_else(bad)?;
        let rest = chars.as_str();
        if rest.len() < 8 || !rest.is_char_boundary(8) {
            return Err(bad());
        }
        let (sum, body) = rest.split_at(8);
        let sum = parse_hex8(sum).ok_or_else(bad)?;
        if sum
            != fnv(&[
                listing.name().as_bytes(),
                tag.to_string().as_bytes(),
                body.as_bytes(),
            ])
        {
            return Err(bad());
        }
        match tag {
            WHOLE if !body.is_empty() => Ok(Position::After(body.to_string())),
            HASHED if body.len() >= 8 && body.is_char_boundary(8) => {
                let (hash, prefix) = body.split_at(8);
                let hash = parse_hex8(hash).ok_or_else(bad)?;
                Ok(Position::AfterHashed {
                    prefix: prefix.to_string(),
                    hash,
                })
            }
            _ => Err(bad()),
        }
    }

    /// The token that continues after `key` in this listing; at most 128 bytes.
    pub fn token_after(&self, key: &str) -> String {
        let (tag, body) = if key.len() <= MAX_WHOLE_KEY {
            (WHOLE, key.to_string())
        } else {
            let hash = fnv(&[key.as_bytes()]);
            (HASHED, format!("{hash:08x}{}", prefix(key, MAX_PREFIX)))
        };
        let sum = fnv(&[
            self.listing.name().as_bytes(),
            tag.to_string().as_bytes(),
            body.as_bytes(),
        ]);
        format!("{tag}{sum:08x}{body}")
    }

    /// A lower bound of the keys this page can hold: a driver that keeps its
    /// objects in an ordered map may start its iteration here (inclusive)
    /// rather than at the first key. `None` for the first page.
    pub fn lower_bound(&self) -> Option<&str> {
        match &self.start {
            None => None,
            Some(Position::After(k)) => Some(k),
            Some(Position::AfterHashed { prefix, .. }) => Some(prefix),
        }
    }

    /// One page of `items`, which must come in strictly increasing order of
    /// their keys (a `BTreeMap`'s order; filtered as the request asks): the
    /// items after the starting token's position, at most `max_entries`,
    /// and the token of the next page if any item follows.
    pub fn page<K, T, I>(&self, items: I) -> Page<(K, T)>
    where
        K: AsRef<str>,
        I: IntoIterator<Item = (K, T)>,
    {
        let mut items = items.into_iter().peekable();
        // Items held back while looking for a hashed position's key.
        let mut held: Vec<(K, T)> = Vec::new();
        match &self.start {
            None => {}
            Some(Position::After(after)) => {
                while items
                    .next_if(|(k, _)| k.as_ref() <= after.as_str())
                    .is_some()
                {}
            }
            Some(Position::AfterHashed { prefix, hash }) => {
                while items
                    .next_if(|(k, _)| k.as_ref() < prefix.as_str())
                    .is_some()
                {}
                // Keys that share the prefix: continue after the one with
                // the hash; without it (deleted), repeat them all rather
                // than skip one.
                while let Some(item) =
                    items.next_if(|(k, _)| k.as_ref().starts_with(prefix.as_str()))
                {
                    if fnv(&[item.0.as_ref().as_bytes()]) == *hash {
                        held.clear();
                        break;
                    }
                    held.push(item);
                }
            }
        }
        let mut all = held.into_iter().chain(items).peekable();
        let max = self.max.unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        while entries.len() < max {
            match all.next() {
                Some(item) => entries.push(item),
                None => break,
            }
        }
        let next_token = match (all.peek(), entries.last()) {
            (Some(_), Some((last, _))) => Some(self.token_after(last.as_ref())),
            _ => None,
        };
        Page {
            entries,
            next_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;
    use std::collections::BTreeMap;

    fn keys<T>(p: &Page<(&String, T)>) -> Vec<String> {
        p.entries.iter().map(|(k, _)| k.to_string()).collect()
    }

    /// Every page of `map` in order, `max` at a time, with the tokens used.
    fn walk(map: &BTreeMap<String, u32>, max: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let p = Paging::new(Listing::Volumes, Some(max), token.as_deref()).unwrap();
            let page = p.page(map);
            assert!(page.entries.len() <= max as usize);
            out.extend(keys(&page));
            match page.next_token {
                Some(t) => {
                    assert!(t.len() <= MAX_STRING_BYTES, "token of {} bytes", t.len());
                    token = Some(t);
                }
                None => return out,
            }
        }
    }

    #[test]
    fn pages_cover_every_key_once() {
        let map: BTreeMap<String, u32> = (0..23).map(|i| (format!("v{i:03}"), i)).collect();
        for max in 1..=25 {
            assert_eq!(
                walk(&map, max),
                map.keys().cloned().collect::<Vec<_>>(),
                "max {max}"
            );
        }
    }

    #[test]
    fn no_limit_and_zero_mean_everything() {
        let map: BTreeMap<String, u32> = (0..5).map(|i| (format!("v{i}"), i)).collect();
        for max in [None, Some(0)] {
            let page = Paging::new(Listing::Volumes, max, None).unwrap().page(&map);
            assert_eq!(page.entries.len(), 5);
            assert_eq!(page.next_token, None);
        }
        let empty = BTreeMap::<String, u32>::new();
        let page = Paging::new(Listing::Volumes, Some(1), None)
            .unwrap()
            .page(&empty);
        assert!(page.entries.is_empty());
        assert_eq!(page.next_token, None);
    }

    #[test]
    fn last_full_page_has_no_token() {
        let map: BTreeMap<String, u32> = (0..4).map(|i| (format!("v{i}"), i)).collect();
        let page = Paging::new(Listing::Volumes, Some(4), None)
            .unwrap()
            .page(&map);
        assert_eq!(page.next_token, None);
    }

    #[test]
    fn changes_between_pages_neither_repeat_nor_skip_survivors() {
        let mut map: BTreeMap<String, u32> = (0..10).map(|i| (format!("v{i}"), i)).collect();
        let p = Paging::new(Listing::Volumes, Some(3), None).unwrap();
        let first = p.page(&map);
        let token = first.next_token.clone().unwrap();
        // The page's last key and a later key go; an earlier and a later key come.
        map.remove("v2");
        map.remove("v5");
        map.insert("v0a".into(), 0);
        map.insert("v7a".into(), 0);
        let next = Paging::new(Listing::Volumes, None, Some(&token))
            .unwrap()
            .page(&map);
        assert_eq!(keys(&next), ["v3", "v4", "v6", "v7", "v7a", "v8", "v9"]);
    }

    #[test]
    fn long_keys_fit_the_string_limit_and_continue_exactly() {
        // Keys of 128 bytes that share a 120-byte prefix, some multi-byte.
        let base = "é".repeat(60);
        let map: BTreeMap<String, u32> = (0..12).map(|i| (format!("{base}{i:08}"), i)).collect();
        assert!(map.keys().all(|k| k.len() == 128));
        for max in 1..=13 {
            assert_eq!(
                walk(&map, max),
                map.keys().cloned().collect::<Vec<_>>(),
                "max {max}"
            );
        }
    }

    #[test]
    fn a_deleted_long_key_repeats_its_prefix_group_but_skips_nothing() {
        let base = "x".repeat(120);
        let mut map: BTreeMap<String, u32> = (0..6).map(|i| (format!("{base}{i:08}"), i)).collect();
        map.insert("y".into(), 9);
        let first = Paging::new(Listing::Volumes, Some(3), None)
            .unwrap()
            .page(&map);
        let last = first.entries.last().unwrap().0.clone();
        let token = first.next_token.unwrap();
        map.remove(&last);
        let next = Paging::new(Listing::Volumes, None, Some(&token))
            .unwrap()
            .page(&map);
        let got = keys(&next);
        for k in map.keys().filter(|k| k.as_str() > last.as_str()) {
            assert!(got.contains(k), "{k} skipped");
        }
    }

    #[test]
    fn foreign_tokens_are_aborted_naming_the_field() {
        let map: BTreeMap<String, u32> = (0..5).map(|i| (format!("v{i}"), i)).collect();
        let vols = Paging::new(Listing::Volumes, Some(2), None).unwrap();
        let good = vols.page(&map).next_token.unwrap();
        let mut forged = good.clone();
        forged.push('x');
        let snaps = Paging::new(Listing::Snapshots, Some(2), None).unwrap();
        let snap_token = snaps.token_after("v1");
        for bad in [
            "",
            "a",
            "page-2",
            "after:v1",
            "a00000000v1",
            "h00000000",
            "aé0000000v1",
            forged.as_str(),
            snap_token.as_str(),
            &good[..good.len() - 1],
        ] {
            let err = Paging::new(Listing::Volumes, None, Some(bad)).unwrap_err();
            assert_eq!(err.code(), Code::Aborted, "{bad:?}");
            assert!(err.to_string().contains("starting_token"), "{err}");
            assert!(err.to_string().contains("volumes listing"), "{err}");
        }
        assert!(Paging::new(Listing::Snapshots, None, Some(&snap_token)).is_ok());
    }

    #[test]
    fn request_constructors_read_the_request() {
        let req = ListVolumesRequest {
            max_entries: Some(1),
            starting_token: None,
        };
        let map: BTreeMap<String, u32> = (0..3).map(|i| (format!("v{i}"), i)).collect();
        let page = Paging::volumes(&req).unwrap().page(&map);
        assert_eq!(keys(&page), ["v0"]);
        let req = ListSnapshotsRequest {
            max_entries: None,
            starting_token: page.next_token,
            ..Default::default()
        };
        // A volumes token is not a snapshots token.
        assert_eq!(Paging::snapshots(&req).unwrap_err().code(), Code::Aborted);
    }

    #[test]
    fn lower_bound_lets_a_range_scan_start_late() {
        let map: BTreeMap<String, u32> = (0..9).map(|i| (format!("v{i}"), i)).collect();
        let first = Paging::new(Listing::Volumes, Some(4), None).unwrap();
        assert_eq!(first.lower_bound(), None);
        let token = first.page(&map).next_token.unwrap();
        let p = Paging::new(Listing::Volumes, None, Some(&token)).unwrap();
        let from = p.lower_bound().unwrap().to_string();
        let page = p.page(map.range(from..));
        assert_eq!(keys(&page), ["v4", "v5", "v6", "v7", "v8"]);
    }
}
