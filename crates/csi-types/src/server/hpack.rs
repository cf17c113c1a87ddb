//! Just enough HPACK (RFC 7541) for [`super::authority`]: a complete decoder
//! that tracks the peer's dynamic table, the primitives to walk a block
//! representation by representation, and an encoder that never indexes.
//!
//! The decoder must be complete (every representation, Huffman strings,
//! table size updates, eviction), because it follows the client's encoder
//! through the whole connection: one entry missed and every later index is
//! wrong. While a block is walked the table keeps an undo log
//! ([`Decoder::begin_block`]), so that a walk that finds it cannot keep
//! `h2`'s table a copy of this one can put the table back as it was before
//! the block. The encoder only writes representations that leave the
//! receiver's dynamic table untouched (indexed static fields and literals
//! without indexing), so what it writes never has to agree with any table.

use std::collections::VecDeque;
use std::sync::OnceLock;

use super::huffman_table::CODES;

/// A malformed header block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed HPACK header block: {0}")]
pub(crate) struct HpackError(&'static str);

impl HpackError {
    pub(crate) const fn new(why: &'static str) -> Self {
        HpackError(why)
    }
}

/// One decoded header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent as "never indexed" (a sensitive value): kept so when re-encoded.
    pub never_indexed: bool,
}

/// The static table (RFC 7541, Appendix A); index 1 is the first entry.
pub(crate) const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The per-entry overhead of the table size accounting (RFC 7541, 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The largest dynamic table size a client may announce here. HTTP/2
/// servers advertise 4,096 bytes by default; anything far above that is a
/// broken or hostile peer, and refusing it bounds this decoder's memory.
pub(crate) const MAX_TABLE_SIZE: usize = 1 << 20;

/// A dynamic table entry: (name, value).
type Entry = (Vec<u8>, Vec<u8>);

/// Decodes header blocks, following the sender's dynamic table.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest entry first (index 62 is `dynamic[0]`).
    dynamic: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// What the block being walked changed, while `logging`.
    undo: Undo,
    logging: bool,
}

/// What one block did to the table, to take it back (see
/// [`Decoder::rollback`]). Its vector is reused from block to block.
#[derive(Debug, Default)]
struct Undo {
    size: usize,
    max_size: usize,
    /// Entries inserted at the front.
    inserted: usize,
    /// Entries evicted from the back, oldest first.
    evicted: Vec<Entry>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            // SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 7540, 6.5.2).
            max_size: 4096,
            undo: Undo::default(),
            logging: false,
        }
    }
}

impl Decoder {
    /// Starts logging changes to the table, so that [`Self::rollback`] can
    /// undo what the next block does.
    pub(crate) fn begin_block(&mut self) {
        self.undo.size = self.size;
        self.undo.max_size = self.max_size;
        self.undo.inserted = 0;
        self.undo.evicted.clear();
        self.logging = true;
    }

    /// Keeps what the block did and stops logging.
    pub(crate) fn commit(&mut self) {
        self.logging = false;
        self.undo.evicted.clear();
    }

    /// Puts the table back as it was at [`Self::begin_block`].
    pub(crate) fn rollback(&mut self) {
        for _ in 0..self.undo.inserted {
            self.dynamic.pop_front();
        }
        while let Some(entry) = self.undo.evicted.pop() {
            self.dynamic.push_back(entry);
        }
        self.size = self.undo.size;
        self.max_size = self.undo.max_size;
        self.logging = false;
    }

    /// A dynamic table size update (RFC 7541, 6.3), already read.
    pub(crate) fn resize(&mut self, size: usize) -> Result<(), HpackError> {
        if size > MAX_TABLE_SIZE {
            return Err(HpackError("table size update beyond the allowed maximum"));
        }
        self.max_size = size;
        self.evict(0);
        Ok(())
    }

    /// The entry at `index` (static or dynamic), borrowed.
    pub(crate) fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError("index 0")),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => self
                .dynamic
                .get(index - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError("index past the end of the dynamic table")),
        }
    }

    /// Decodes one complete header block, updating the dynamic table.
    pub(crate) fn decode(&mut self, mut src: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::with_capacity(12);
        let mut may_resize = true;
        while let Some(&first) = src.first() {
            if first & 0x80 != 0 {
                let index = int(&mut src, 7)?;
                let (name, value) = self.get(index)?;
                fields.push(Field {
                    name,
                    value,
                    never_indexed: false,
                });
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(&mut src, 6, false)?;
                self.insert(field.name.clone(), field.value.clone());
                fields.push(field);
            } else if first & 0xe0 == 0x20 {
                // A size update is only allowed at the start of a block
                // (RFC 7541, 4.2).
                if !may_resize {
                    return Err(HpackError("table size update after a header field"));
                }
                let size = int(&mut src, 5)?;
                self.resize(size)?;
                continue;
            } else {
                let never = first & 0xf0 == 0x10;
                fields.push(self.literal(&mut src, 4, never)?);
            }
            may_resize = false;
        }
        Ok(fields)
    }

    /// A literal field whose name index has a `prefix`-bit prefix.
    fn literal(
        &self,
        src: &mut &[u8],
        prefix: u8,
        never_indexed: bool,
    ) -> Result<Field, HpackError> {
        let index = int(src, prefix)?;
        let name = if index == 0 {
            string(src)?
        } else {
            self.get(index)?.0
        };
        let value = string(src)?;
        Ok(Field {
            name,
            value,
            never_indexed,
        })
    }

    fn get(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        self.entry(index).map(|(n, v)| (n.to_vec(), v.to_vec()))
    }

    /// Adds an entry as a literal with incremental indexing does.
    pub(crate) fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // An entry larger than the table empties it (RFC 7541, 4.4).
            self.evict(usize::MAX - self.size);
            return;
        }
        self.evict(size);
        self.size += size;
        self.dynamic.push_front((name, value));
        if self.logging {
            self.undo.inserted += 1;
        }
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size.saturating_add(room) > self.max_size {
            match self.dynamic.pop_back() {
                Some((n, v)) => {
                    self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
                    if self.logging {
                        if self.undo.inserted > self.dynamic.len() {
                            // An entry of this block: taking it back is
                            // not an insertion to undo any more.
                            self.undo.inserted -= 1;
                        } else {
                            self.undo.evicted.push((n, v));
                        }
                    }
                }
                None => break,
            }
        }
    }
}

/// Reads an integer with an `n`-bit prefix (RFC 7541, 5.1).
pub(crate) fn int(src: &mut &[u8], n: u8) -> Result<usize, HpackError> {
    let (&first, rest) = src.split_first().ok_or(HpackError("truncated integer"))?;
    *src = rest;
    let mask = (1u16 << n) as usize - 1;
    let mut value = first as usize & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = src.split_first().ok_or(HpackError("truncated integer"))?;
        *src = rest;
        // Nothing in a header block needs more than 28 bits.
        if shift > 21 {
            return Err(HpackError("integer too large"));
        }
        value += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Reads a string literal (RFC 7541, 5.2), Huffman-decoding it if flagged.
pub(crate) fn string(src: &mut &[u8]) -> Result<Vec<u8>, HpackError> {
    let (raw, huffman) = raw_string(src)?;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// Reads a string literal's bytes as sent, and whether they are Huffman
/// coded, without decoding them.
pub(crate) fn raw_string<'a>(src: &mut &'a [u8]) -> Result<(&'a [u8], bool), HpackError> {
    let huffman = src.first().is_some_and(|b| b & 0x80 != 0);
    let len = int(src, 7)?;
    if src.len() < len {
        return Err(HpackError("truncated string"));
    }
    let (raw, rest) = src.split_at(len);
    *src = rest;
    Ok((raw, huffman))
}

/// The Huffman code as a binary tree: `[child for bit 0, child for bit 1]`,
/// where a child is a node index (> 0), a leaf `-(symbol + 1)`, or 0 (none).
fn tree() -> &'static [[i32; 2]] {
    static TREE: OnceLock<Vec<[i32; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut nodes = vec![[0i32; 2]];
        for (symbol, &(code, len)) in CODES.iter().enumerate() {
            let mut node = 0usize;
            for i in (0..len).rev() {
                let bit = ((code >> i) & 1) as usize;
                if i == 0 {
                    nodes[node][bit] = -(symbol as i32 + 1);
                } else {
                    if nodes[node][bit] == 0 {
                        nodes.push([0; 2]);
                        nodes[node][bit] = (nodes.len() - 1) as i32;
                    }
                    node = nodes[node][bit] as usize;
                }
            }
        }
        nodes
    })
}

/// Decodes a Huffman-coded string (RFC 7541, 5.2 and Appendix B).
pub(crate) fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, HpackError> {
    let tree = tree();
    let mut out = Vec::with_capacity(src.len() * 8 / 5 + 1);
    let mut node = 0usize;
    // Bits read since the last symbol, and whether all of them were 1s:
    // what is left at the end must be a prefix of EOS shorter than a byte.
    let mut pending = 0u32;
    let mut all_ones = true;
    for &byte in src {
        for i in (0..8).rev() {
            let bit = ((byte >> i) & 1) as usize;
            let next = tree[node][bit];
            if next < 0 {
                let symbol = (-next - 1) as usize;
                if symbol == 256 {
                    return Err(HpackError("EOS in a Huffman string"));
                }
                out.push(symbol as u8);
                node = 0;
                pending = 0;
                all_ones = true;
            } else if next == 0 {
                return Err(HpackError("invalid Huffman code"));
            } else {
                node = next as usize;
                pending += 1;
                all_ones &= bit == 1;
            }
        }
    }
    if pending > 7 || !all_ones {
        return Err(HpackError("invalid Huffman padding"));
    }
    Ok(out)
}

/// Writes an integer with an `n`-bit prefix; `flags` fills the bits above it.
pub(crate) fn put_int(out: &mut Vec<u8>, flags: u8, n: u8, value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Writes a string literal without Huffman coding.
pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Encodes `field` without touching the receiver's dynamic table: as an
/// indexed static entry when one matches exactly, else as a literal
/// without indexing (or never indexed, if it was sent so), naming a static
/// entry when one has the name.
pub(crate) fn encode_unindexed(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    let mut name_index = 0;
    for (i, (n, v)) in STATIC.iter().enumerate() {
        if n.as_bytes() == name {
            if v.as_bytes() == value && !never_indexed {
                put_int(out, 0x80, 7, i + 1);
                return;
            }
            if name_index == 0 {
                name_index = i + 1;
            }
        }
    }
    put_int(out, if never_indexed { 0x10 } else { 0 }, 4, name_index);
    if name_index == 0 {
        put_string(out, name);
    }
    put_string(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7541, C.4.1: a request with Huffman-coded literals.
    #[test]
    fn decodes_the_rfc_example_with_huffman() {
        let block = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let mut d = Decoder::default();
        let fields = d.decode(&block).unwrap();
        let got: Vec<(String, String)> = fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.clone()).unwrap(),
                    String::from_utf8(f.value.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(d.size, 57);
        // C.4.2: the next request refers to the entry just inserted.
        let fields = d
            .decode(&[
                0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
            ])
            .unwrap();
        assert_eq!(fields[3].value, b"www.example.com");
        assert_eq!(fields[4].name, b"cache-control");
        assert_eq!(fields[4].value, b"no-cache");
        assert_eq!(d.size, 110);
    }

    #[test]
    fn bad_huffman_padding_and_eos_are_refused() {
        // "a" is 00011 (5 bits); padding with zeros is invalid.
        assert!(huffman_decode(&[0b0001_1000]).is_err());
        assert_eq!(huffman_decode(&[0b0001_1111]).unwrap(), b"a");
        // A whole byte of padding is too much.
        assert!(huffman_decode(&[0b0001_1111, 0xff]).is_err());
        // EOS (30 ones) inside the string.
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut d = Decoder::default();
        assert!(d.decode(&[0x80]).is_err()); // index 0
        assert!(d.decode(&[0xbe]).is_err()); // empty dynamic table
        assert!(d.decode(&[0x40, 0x05, b'a']).is_err()); // truncated name
        assert!(d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(d.decode(&[0x82, 0x20]).is_err()); // late size update
        assert!(d.decode(&[0x3f, 0xe1, 0xff, 0x7f]).is_err()); // huge table
    }

    #[test]
    fn rollback_restores_inserts_evictions_and_resizes() {
        let mut d = Decoder::default();
        d.resize(100).unwrap();
        d.insert(b"a".to_vec(), b"1".to_vec()); // 34 bytes
        d.insert(b"b".to_vec(), b"2".to_vec());
        let before = (d.dynamic.clone(), d.size, d.max_size);
        d.begin_block();
        d.insert(b"c".to_vec(), b"3".to_vec()); // evicts a
        d.insert(b"d".to_vec(), b"4".to_vec()); // evicts b
        d.insert(b"e".to_vec(), b"5".to_vec()); // evicts c, inserted here
        d.resize(40).unwrap(); // evicts d
        d.insert(vec![b'x'; 100], Vec::new()); // too large: empties the table
        assert!(d.dynamic.is_empty());
        d.rollback();
        assert_eq!((d.dynamic.clone(), d.size, d.max_size), before);
        // Committed changes stay.
        d.begin_block();
        d.insert(b"c".to_vec(), b"3".to_vec());
        d.commit();
        assert_eq!(d.entry(62).unwrap(), (&b"c"[..], &b"3"[..]));
        assert_eq!(d.entry(63).unwrap(), (&b"b"[..], &b"2"[..]));
    }

    #[test]
    fn the_unindexed_encoding_round_trips() {
        let mut out = Vec::new();
        encode_unindexed(&mut out, b":method", b"POST", false);
        encode_unindexed(&mut out, b":authority", b"localhost", false);
        encode_unindexed(&mut out, b"x-secret", b"s3cret", true);
        encode_unindexed(&mut out, b"x-long", &[b'v'; 300], false);
        assert_eq!(out[0], 0x83);
        let mut d = Decoder::default();
        let fields = d.decode(&out).unwrap();
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[1].value, b"localhost");
        assert!(fields[2].never_indexed);
        assert_eq!(fields[3].value.len(), 300);
        assert!(d.dynamic.is_empty());
    }
}
