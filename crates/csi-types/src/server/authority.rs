//! Accepting the `:authority` values that real gRPC clients send over unix
//! sockets.
//!
//! Over a unix socket, grpcio (since 1.57), grpc-java and others send the
//! socket path, percent-encoded (`%2Frun%2Fcsi%2Fcsi.sock`) or raw, as the
//! HTTP/2 `:authority`; some send it empty. The HTTP/2 layer under tonic
//! (`h2`) answers any value that is not an RFC 3986 authority with
//! `RST_STREAM(PROTOCOL_ERROR)`, so every call from those clients fails.
//!
//! [`Rewriter`] sits on the byte stream from the client to `h2`. Every
//! frame other than a header block passes byte for byte. Each header block
//! is walked representation by representation with a full HPACK decoder
//! that follows the client's dynamic table, and forwarded unchanged unless
//! it carries an invalid `:authority`; then only that representation is
//! replaced, so that `h2`'s dynamic table stays a copy of the client's in
//! every index and entry size:
//!
//! - an indexed field (the static `:authority` with an empty value) or a
//!   literal that is not indexed becomes a literal `localhost` without
//!   indexing, which leaves the table alone;
//! - a literal with incremental indexing (what grpcio sends on a
//!   connection's first call) becomes one with a valid value of the same
//!   length ([`same_length_replacement`]: `localhost` cut or padded), so
//!   that `h2` inserts an entry of the same size and every later call that
//!   refers to it by index (grpcio's every later call) passes unchanged.
//!   The decoder records `h2`'s value, so it knows the entry is valid now.
//!
//! Clients that send `localhost` (kubelet, the Go sidecars) or a valid
//! authority therefore cost a walk of each block and nothing else, and
//! grpcio costs one rewritten block per connection. The one case that
//! cannot keep the tables alike is an empty value sent with incremental
//! indexing (no valid value has length 0): from that block on, every header
//! block of the connection is decoded and re-encoded without indexing, with
//! the invalid values replaced by `localhost`, so that the table `h2` keeps
//! is never used again and cannot disagree with the client's.
//!
//! A stream that is not HTTP/2 (no connection preface), or a header block
//! that does not decode before anything was rewritten, is passed through
//! unchanged for `h2` to judge; after a rewrite such a block closes the
//! connection.

use super::hpack::{self, Decoder, Field, HpackError};

/// The client connection preface (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may advertise, so always
/// acceptable to `h2`.
const MAX_FRAME: usize = 16_384;
/// The most header block bytes buffered before giving up on one block.
const MAX_BLOCK: usize = 1 << 20;
/// What an invalid `:authority` becomes.
pub(crate) const REPLACEMENT: &[u8] = b"localhost";

/// The stream could not be rewritten; the connection must be closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    /// A header block did not decode after the rewriting started.
    #[error(transparent)]
    Hpack(#[from] hpack::HpackError),
    /// An HTTP/2 framing rule was broken after the rewriting started.
    #[error("HTTP/2 framing: {0}")]
    Framing(&'static str),
}

#[derive(Debug)]
enum Phase {
    /// Matching the connection preface; the count of bytes matched.
    Preface(usize),
    /// Parsing frames.
    Frames,
    /// Not HTTP/2 as expected: everything passes unchanged.
    Opaque,
}

/// A header block being collected (HEADERS + CONTINUATION frames).
#[derive(Debug, Default)]
struct Block {
    stream_id: u32,
    /// The HEADERS frame's flags.
    flags: u8,
    /// The PRIORITY fields of the HEADERS frame, if flagged.
    priority: Option<[u8; 5]>,
    /// The frames as received, headers included, to forward unchanged.
    raw: Vec<u8>,
    /// The header block fragments, without padding or priority.
    fragment: Vec<u8>,
}

/// Rewrites invalid `:authority` values in a client-to-server HTTP/2 byte
/// stream (see the module documentation).
#[derive(Debug)]
pub(crate) struct Rewriter {
    phase: Phase,
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current non-header frame still to copy through.
    pass: usize,
    /// Payload of the current HEADERS/CONTINUATION frame.
    payload: Vec<u8>,
    /// Payload bytes of the current HEADERS/CONTINUATION frame still to come.
    payload_need: usize,
    in_header_frame: bool,
    block: Option<Block>,
    /// A finished block's buffers, kept for the next one.
    spare: Block,
    decoder: Decoder,
    /// Whether a block was changed: from then on `h2`'s table holds values
    /// the client did not send, and a block that does not decode is an error.
    diverged: bool,
    /// Whether header blocks are being re-encoded (after an empty
    /// `:authority` sent with incremental indexing).
    reencode: bool,
    /// The rewritten header block fragment, reused.
    spliced: Vec<u8>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            phase: Phase::Preface(0),
            head: [0; 9],
            head_len: 0,
            pass: 0,
            payload: Vec::new(),
            payload_need: 0,
            in_header_frame: false,
            block: None,
            spare: Block::default(),
            decoder: Decoder::default(),
            diverged: false,
            reencode: false,
            spliced: Vec::new(),
            rewritten: 0,
        }
    }
}

/// Whether `h2` accepts `value` as an `:authority`.
pub(crate) fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A valid authority of `len` bytes (`len` > 0) that stands for an invalid
/// one of that length in a table entry: `localhost` cut to `len`, or
/// followed by `:` and a zero port (`localhost:0000`) to fill it.
pub(crate) fn same_length_replacement(len: usize) -> Vec<u8> {
    let mut v = REPLACEMENT[..len.min(REPLACEMENT.len())].to_vec();
    if len > REPLACEMENT.len() {
        v.push(b':');
        v.resize(len, b'0');
    }
    v
}

/// What walking a block found.
enum Walk {
    /// The block can be forwarded: unchanged, or as `spliced` when `edited`.
    Mirrored { edited: bool },
    /// An empty `:authority` with incremental indexing: the table was put
    /// back as before the block, which must be re-encoded.
    Reencode,
}

/// The `:authority` static name (index 1) in a literal's first byte.
const AUTHORITY_NAME: usize = 1;

impl Rewriter {
    /// How many header blocks had an `:authority` replaced so far.
    #[cfg(test)]
    pub(crate) fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// How many bytes may be read straight into the caller's buffer: bytes
    /// that pass unchanged whatever they are (frame payloads other than
    /// header blocks, or everything once the stream is opaque).
    pub(crate) fn passthrough_budget(&self) -> usize {
        match self.phase {
            Phase::Opaque => usize::MAX,
            Phase::Frames if self.pass > 0 => self.pass,
            _ => 0,
        }
    }

    /// Records that `n` bytes within [`Self::passthrough_budget`] were
    /// passed through by the caller.
    pub(crate) fn passed_through(&mut self, n: usize) {
        if let Phase::Frames = self.phase {
            self.pass -= n;
        }
    }

    /// Consumes `input`, appending what the server should read to `out`.
    /// Partial frames are kept until the rest arrives.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match self.phase {
                Phase::Opaque => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Phase::Preface(matched) => {
                    let n = (PREFACE.len() - matched).min(input.len());
                    if input[..n] != PREFACE[matched..matched + n] {
                        out.extend_from_slice(&PREFACE[..matched]);
                        self.phase = Phase::Opaque;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.phase = if matched + n == PREFACE.len() {
                        Phase::Frames
                    } else {
                        Phase::Preface(matched + n)
                    };
                }
                Phase::Frames => {
                    if self.pass > 0 {
                        let n = self.pass.min(input.len());
                        out.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        self.pass -= n;
                    } else if self.in_header_frame {
                        let n = self.payload_need.min(input.len());
                        self.payload.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        self.payload_need -= n;
                        if self.payload_need == 0 {
                            self.in_header_frame = false;
                            self.header_frame_done(out)?;
                        }
                    } else {
                        let n = (9 - self.head_len).min(input.len());
                        self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                        self.head_len += n;
                        input = &input[n..];
                        if self.head_len == 9 {
                            self.head_len = 0;
                            self.frame_start(out)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A frame header was read.
    fn frame_start(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let h = self.head;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let kind = h[3];
        let is_header_frame = kind == HEADERS || (kind == CONTINUATION && self.block.is_some());
        if self.block.is_some() && kind != CONTINUATION {
            // Only CONTINUATION may follow an unfinished header block.
            self.give_up(out, "a frame other than CONTINUATION inside a header block")?;
            out.extend_from_slice(&h);
            return Ok(());
        }
        if is_header_frame {
            let block_len = self.block.as_ref().map_or(0, |b| b.raw.len());
            if block_len + 9 + len > MAX_BLOCK {
                self.give_up(out, "a header block larger than 1 MiB")?;
                out.extend_from_slice(&h);
                return Ok(());
            }
            self.in_header_frame = true;
            self.payload.clear();
            self.payload_need = len;
            if len == 0 {
                self.in_header_frame = false;
                self.header_frame_done(out)?;
            }
        } else {
            out.extend_from_slice(&h);
            self.pass = len;
        }
        Ok(())
    }

    /// Stops rewriting for good: before the switch the stream passes on
    /// unchanged for `h2` to judge; after it, the connection must close.
    fn give_up(&mut self, out: &mut Vec<u8>, why: &'static str) -> Result<(), RewriteError> {
        if self.reencode {
            return Err(RewriteError::Framing(why));
        }
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        self.phase = Phase::Opaque;
        Ok(())
    }

    /// A HEADERS or CONTINUATION frame's payload is complete.
    fn header_frame_done(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let h = self.head_copy();
        let flags = h[4];
        let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let payload = std::mem::take(&mut self.payload);
        let result = self.header_frame_payload(h, flags, stream_id, &payload, out);
        self.payload = payload;
        self.payload.clear();
        result
    }

    /// The body of [`Self::header_frame_done`], with the frame's payload.
    fn header_frame_payload(
        &mut self,
        h: [u8; 9],
        flags: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let mut block = match self.block.take() {
            Some(b) => {
                if b.stream_id != stream_id {
                    self.block = Some(b);
                    self.give_up(out, "CONTINUATION on another stream")?;
                    out.extend_from_slice(&h);
                    out.extend_from_slice(payload);
                    return Ok(());
                }
                b
            }
            None => {
                let mut b = std::mem::take(&mut self.spare);
                b.stream_id = stream_id;
                b.flags = flags;
                b.priority = None;
                b.raw.clear();
                b.fragment.clear();
                let mut start = 0;
                let mut end = payload.len();
                if flags & PADDED != 0 {
                    let pad = payload.first().copied().unwrap_or(0) as usize;
                    start = 1;
                    end = end.saturating_sub(pad);
                }
                if flags & PRIORITY != 0 {
                    if start + 5 <= end {
                        let mut p = [0; 5];
                        p.copy_from_slice(&payload[start..start + 5]);
                        b.priority = Some(p);
                    }
                    start += 5;
                }
                if start > end {
                    self.give_up(out, "HEADERS padding or priority longer than the frame")?;
                    out.extend_from_slice(&h);
                    out.extend_from_slice(payload);
                    return Ok(());
                }
                b.fragment.extend_from_slice(&payload[start..end]);
                b.raw.extend_from_slice(&h);
                b.raw.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    return self.block_done(b, out);
                }
                self.block = Some(b);
                return Ok(());
            }
        };
        block.fragment.extend_from_slice(payload);
        block.raw.extend_from_slice(&h);
        block.raw.extend_from_slice(payload);
        if flags & END_HEADERS != 0 {
            self.block_done(block, out)
        } else {
            self.block = Some(block);
            Ok(())
        }
    }

    /// The header of the frame whose payload was just collected. (The head
    /// buffer is only overwritten when the next frame starts.)
    fn head_copy(&self) -> [u8; 9] {
        self.head
    }

    /// A complete header block: forward it, changed where needed.
    fn block_done(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let result = self.forward_block(&block, out);
        self.spare = block;
        result
    }

    fn forward_block(&mut self, block: &Block, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if !self.reencode {
            self.decoder.begin_block();
            let walked = walk(&mut self.decoder, &block.fragment, &mut self.spliced);
            match walked {
                Ok(Walk::Mirrored { edited: false }) => {
                    self.decoder.commit();
                    out.extend_from_slice(&block.raw);
                    return Ok(());
                }
                Ok(Walk::Mirrored { edited: true }) => {
                    self.decoder.commit();
                    self.rewritten += 1;
                    self.diverged = true;
                    write_frames(block, &self.spliced, out);
                    return Ok(());
                }
                Ok(Walk::Reencode) => {
                    // The table is as before the block: decode it again below.
                    self.reencode = true;
                    self.diverged = true;
                }
                Err(e) if self.diverged => return Err(e.into()),
                Err(_) => {
                    // Let h2 find the error and answer it.
                    self.decoder.commit();
                    out.extend_from_slice(&block.raw);
                    self.phase = Phase::Opaque;
                    return Ok(());
                }
            }
        }
        let mut fields = self.decoder.decode(&block.fragment)?;
        let mut bad = false;
        for f in &mut fields {
            if f.name == b":authority" && !is_valid_authority(&f.value) {
                f.value = REPLACEMENT.to_vec();
                bad = true;
            }
        }
        if bad {
            self.rewritten += 1;
        }
        write_block(block, &fields, out);
        Ok(())
    }
}

/// Logs a replaced authority.
fn replacing(value: &[u8]) {
    tracing::debug!(
        authority = %String::from_utf8_lossy(value),
        "replacing an :authority that is not an RFC 3986 authority"
    );
}

/// Walks one header block, following the client's table in `decoder` (as
/// `h2` will hold it), and writes to `spliced` the block with each invalid
/// `:authority` replaced (see the module documentation) when there is one.
/// The decoder must be logging ([`Decoder::begin_block`]); on
/// [`Walk::Reencode`] it is rolled back.
fn walk(decoder: &mut Decoder, block: &[u8], spliced: &mut Vec<u8>) -> Result<Walk, HpackError> {
    spliced.clear();
    // How much of `block` is already in `spliced`, once something changed.
    let mut copied: Option<usize> = None;
    let mut edit =
        |start: usize, end: usize, spliced: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
            spliced.extend_from_slice(&block[copied.unwrap_or(0)..start]);
            write(spliced);
            copied = Some(end);
        };
    let mut src = block;
    let mut may_resize = true;
    while let Some(&first) = src.first() {
        let start = block.len() - src.len();
        if first & 0x80 != 0 {
            let index = hpack::int(&mut src, 7)?;
            let (name, value) = decoder.entry(index)?;
            if name == b":authority" && !is_valid_authority(value) {
                replacing(value);
                let end = block.len() - src.len();
                edit(start, end, spliced, &|o| {
                    hpack::encode_unindexed(o, b":authority", REPLACEMENT, false)
                });
            }
        } else if first & 0xe0 == 0x20 {
            // A size update is only allowed at the start of a block
            // (RFC 7541, 4.2).
            if !may_resize {
                return Err(HpackError::new("table size update after a header field"));
            }
            let size = hpack::int(&mut src, 5)?;
            decoder.resize(size)?;
            continue;
        } else {
            let incremental = first & 0xc0 == 0x40;
            let never = first & 0xf0 == 0x10;
            let index = hpack::int(&mut src, if incremental { 6 } else { 4 })?;
            let literal_name;
            let name = if index == 0 {
                literal_name = hpack::string(&mut src)?;
                &literal_name[..]
            } else {
                decoder.entry(index)?.0
            };
            let authority = name == b":authority";
            let name = (incremental && !authority).then(|| name.to_vec());
            let (raw, huffman) = hpack::raw_string(&mut src)?;
            if !authority && !incremental {
                may_resize = false;
                continue;
            }
            let value = if huffman {
                hpack::huffman_decode(raw)?
            } else {
                raw.to_vec()
            };
            let end = block.len() - src.len();
            if authority && !is_valid_authority(&value) {
                replacing(&value);
                if !incremental {
                    edit(start, end, spliced, &|o| {
                        hpack::encode_unindexed(o, b":authority", REPLACEMENT, never)
                    });
                } else if value.is_empty() {
                    decoder.rollback();
                    return Ok(Walk::Reencode);
                } else {
                    let replacement = same_length_replacement(value.len());
                    edit(start, end, spliced, &|o| {
                        hpack::put_int(o, 0x40, 6, AUTHORITY_NAME);
                        hpack::put_string(o, &replacement);
                    });
                    decoder.insert(b":authority".to_vec(), replacement);
                }
            } else if incremental {
                let name = name.unwrap_or_else(|| b":authority".to_vec());
                decoder.insert(name, value);
            }
        }
        may_resize = false;
    }
    match copied {
        None => Ok(Walk::Mirrored { edited: false }),
        Some(at) => {
            spliced.extend_from_slice(&block[at..]);
            Ok(Walk::Mirrored { edited: true })
        }
    }
}

/// Writes `fields` as a HEADERS frame (plus CONTINUATION frames if needed)
/// with `block`'s stream, flags (less PADDED) and priority.
fn write_block(block: &Block, fields: &[Field], out: &mut Vec<u8>) {
    let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
    for f in fields {
        hpack::encode_unindexed(&mut encoded, &f.name, &f.value, f.never_indexed);
    }
    write_frames(block, &encoded, out);
}

/// Writes the header block fragment `encoded` as a HEADERS frame (plus
/// CONTINUATION frames if needed) with `block`'s stream, flags (less
/// PADDED) and priority.
fn write_frames(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let mut rest = encoded;
    let mut first = true;
    loop {
        let room = MAX_FRAME - if first { priority.len() } else { 0 };
        let n = room.min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let (kind, mut flags) = if first {
            (HEADERS, block.flags & !(PADDED | END_HEADERS))
        } else {
            (CONTINUATION, 0)
        };
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        let body = if first { priority.len() } else { 0 } + chunk.len();
        out.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&block.stream_id.to_be_bytes());
        if first {
            out.extend_from_slice(priority);
        }
        out.extend_from_slice(chunk);
        first = false;
        if rest.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorities_real_clients_send() {
        assert!(is_valid_authority(b"localhost"));
        assert!(is_valid_authority(b"127.0.0.1:10000"));
        assert!(!is_valid_authority(b"%2Ftmp%2Fcsi.sock"));
        assert!(!is_valid_authority(b"/tmp/csi.sock"));
        assert!(!is_valid_authority(b""));
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn same_length_replacements_are_valid() {
        for len in 1..300 {
            let v = same_length_replacement(len);
            assert_eq!(v.len(), len);
            assert!(is_valid_authority(&v), "{}", String::from_utf8_lossy(&v));
        }
        assert_eq!(same_length_replacement(9), b"localhost");
        assert_eq!(same_length_replacement(4), b"loca");
        assert_eq!(same_length_replacement(13), b"localhost:000");
    }

    /// Feeds `input` and returns what the server reads.
    fn rewrite(r: &mut Rewriter, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        r.feed(input, &mut out).unwrap();
        out
    }

    #[test]
    fn grpcio_costs_one_rewritten_block_per_connection() {
        // grpcio's first call inserts the path authority into the table
        // (literal with incremental indexing, static name), later calls
        // refer to it by index.
        let path = b"%2Ftmp%2Fcsi.sock";
        let mut first = vec![0x83, 0x41, path.len() as u8];
        first.extend_from_slice(path);
        let mut r = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        let out = rewrite(&mut r, &input);
        let mut want = vec![0x83, 0x41, path.len() as u8];
        want.extend_from_slice(&same_length_replacement(path.len()));
        let mut expected = PREFACE.to_vec();
        expected.extend(frame(HEADERS, END_HEADERS, 1, &want));
        assert_eq!(out, expected);
        // The next calls, by index (62, the entry inserted), pass byte for
        // byte: h2's entry 62 holds the valid value of the same size.
        for id in [3, 5] {
            let next = frame(HEADERS, END_HEADERS, id, &[0x83, 0x80 | 62]);
            assert_eq!(rewrite(&mut r, &next), next);
        }
        assert_eq!(r.rewritten(), 1);
        assert!(!r.reencode);
    }

    #[test]
    fn valid_and_empty_indexed_authorities() {
        // `localhost` inserted and referred to: nothing changes.
        let mut block = vec![0x83, 0x41, 9];
        block.extend_from_slice(b"localhost");
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0x83, 0xbe]));
        let mut r = Rewriter::default();
        assert_eq!(rewrite(&mut r, &input), input);
        assert_eq!(r.rewritten(), 0);
        // The static empty `:authority` (index 1) becomes a `localhost`
        // literal without indexing; the table is untouched.
        let out = rewrite(&mut r, &frame(HEADERS, END_HEADERS, 5, &[0x83, 0x81, 0xbe]));
        let mut want = vec![0x83];
        hpack::encode_unindexed(&mut want, b":authority", REPLACEMENT, false);
        want.push(0xbe);
        assert_eq!(out, frame(HEADERS, END_HEADERS, 5, &want));
        assert!(!r.reencode);
    }

    #[test]
    fn an_empty_authority_with_indexing_re_encodes_from_its_block_on() {
        // An entry inserted in the same block before the empty authority
        // must not be inserted twice when the block is decoded again.
        let mut block = vec![0x40, 1, b'x', 1, b'y', 0x41, 0];
        block.push(0xbf); // x: y, inserted first, now index 63
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0xbe, 0xbf]));
        let mut r = Rewriter::default();
        let out = rewrite(&mut r, &input);
        assert!(r.reencode);
        let (lists, _) = tests_view(&out);
        let auth = (b":authority".to_vec(), REPLACEMENT.to_vec());
        let xy = (b"x".to_vec(), b"y".to_vec());
        assert_eq!(
            lists,
            vec![vec![xy.clone(), auth.clone(), xy.clone()], vec![auth, xy]]
        );
    }

    /// The header lists of a rewritten stream, decoded by the reference decoder.
    fn tests_view(s: &[u8]) -> (Vec<Sent>, Vec<OtherFrame>) {
        let (lists, others) = server_view(s);
        (
            lists
                .into_iter()
                .map(|l| l.into_iter().map(|(n, v, _)| (n, v)).collect())
                .collect(),
            others,
        )
    }

    #[test]
    fn a_stream_without_the_preface_passes_unchanged() {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        r.feed(input, &mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn a_path_authority_is_replaced_and_padding_dropped() {
        let mut block = Vec::new();
        hpack::encode_unindexed(&mut block, b":method", b"POST", false);
        hpack::encode_unindexed(&mut block, b":authority", b"/tmp/csi.sock", false);
        let mut padded = vec![3u8];
        padded.extend_from_slice(&block);
        padded.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &padded));
        input.extend(frame(0, 1, 1, b"data"));
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        r.feed(&input, &mut out).unwrap();
        assert_eq!(r.rewritten(), 1);
        let mut expected_block = Vec::new();
        hpack::encode_unindexed(&mut expected_block, b":method", b"POST", false);
        hpack::encode_unindexed(&mut expected_block, b":authority", b"localhost", false);
        let mut expected = PREFACE.to_vec();
        expected.extend(frame(HEADERS, END_HEADERS, 1, &expected_block));
        expected.extend(frame(0, 1, 1, b"data"));
        assert_eq!(out, expected);
    }

    // ---- Property: random client streams, encoded by an independent
    // HPACK encoder (with Huffman coding, incremental indexing and table
    // size updates), split at random points, come out as the same frames
    // carrying the same header lists, with only invalid authorities
    // replaced; and a stream with no invalid authority is left byte for byte.

    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct FieldSpec {
        name: Vec<u8>,
        value: Vec<u8>,
        /// httlib-hpack encoder flags.
        flags: u8,
    }

    #[derive(Clone, Debug)]
    struct BlockSpec {
        size_update: Option<u32>,
        fields: Vec<FieldSpec>,
        padded: Option<u8>,
        priority: bool,
        end_stream: bool,
        /// Where the encoded block is cut into HEADERS + CONTINUATION.
        cuts: Vec<usize>,
        /// A frame sent after the block (DATA, PING or WINDOW_UPDATE).
        after: Option<(u8, Vec<u8>)>,
    }

    fn authority() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"localhost".to_vec()),
            Just(b"%2Ftmp%2Fcsi.sock".to_vec()),
            Just(b"/run/csi/socket".to_vec()),
            Just(Vec::new()),
            Just(b"127.0.0.1:10000".to_vec()),
            proptest::collection::vec(
                prop_oneof![
                    Just(b'a'),
                    Just(b'%'),
                    Just(b'/'),
                    Just(b'.'),
                    Just(b':'),
                    Just(b'2')
                ],
                0..24
            ),
        ]
    }

    fn flags() -> impl Strategy<Value = u8> {
        (
            0u8..4,
            prop_oneof![Just(0u8), Just(0x4), Just(0x8)],
            any::<bool>(),
        )
            .prop_map(|(h, i, best)| h | i | if best { 0x10 } else { 0 })
    }

    fn field() -> impl Strategy<Value = FieldSpec> {
        (
            prop_oneof![
                Just(b"content-type".to_vec()),
                Just(b"te".to_vec()),
                Just(b"user-agent".to_vec()),
                Just(b"grpc-timeout".to_vec()),
                "[a-z][a-z0-9-]{0,15}".prop_map(String::into_bytes),
            ],
            "[ -~]{0,40}".prop_map(String::into_bytes),
            flags(),
        )
            .prop_map(|(name, value, flags)| FieldSpec { name, value, flags })
    }

    fn block() -> impl Strategy<Value = BlockSpec> {
        (
            proptest::option::weighted(
                0.15,
                prop_oneof![Just(0u32), Just(64), Just(256), Just(4096)],
            ),
            proptest::option::weighted(0.9, (authority(), flags())),
            "/csi\\.v1\\.[A-Za-z]{1,10}/[A-Za-z]{1,20}",
            proptest::collection::vec(field(), 0..6),
            flags(),
            proptest::option::weighted(0.3, any::<u8>()),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(0usize..200, 0..3),
            proptest::option::weighted(
                0.5,
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..100).prop_map(|d| (0u8, d)),
                    proptest::collection::vec(any::<u8>(), 8..=8).prop_map(|d| (6u8, d)),
                    Just((8u8, vec![0, 0, 1, 0])),
                ],
            ),
        )
            .prop_map(
                |(
                    size_update,
                    auth,
                    path,
                    extra,
                    pflags,
                    padded,
                    priority,
                    end_stream,
                    cuts,
                    after,
                )| {
                    let mut fields = vec![
                        FieldSpec {
                            name: b":method".to_vec(),
                            value: b"POST".to_vec(),
                            flags: 0x10,
                        },
                        FieldSpec {
                            name: b":scheme".to_vec(),
                            value: b"http".to_vec(),
                            flags: 0x10,
                        },
                        FieldSpec {
                            name: b":path".to_vec(),
                            value: path.into_bytes(),
                            flags: pflags,
                        },
                    ];
                    if let Some((value, flags)) = auth {
                        fields.push(FieldSpec {
                            name: b":authority".to_vec(),
                            value,
                            flags,
                        });
                    }
                    fields.extend(extra);
                    BlockSpec {
                        size_update,
                        fields,
                        padded,
                        priority,
                        end_stream,
                        cuts,
                        after,
                    }
                },
            )
    }

    /// Stands for a replaced authority in the expected header lists.
    const REPLACED: &[u8] = b"<replaced>";

    /// A header list as sent: (name, value).
    type Sent = Vec<(Vec<u8>, Vec<u8>)>;
    /// A header list as decoded: (name, value, never indexed).
    type Seen = Vec<(Vec<u8>, Vec<u8>, bool)>;

    /// A frame other than a header block: (type, flags, payload).
    type OtherFrame = (u8, u8, Vec<u8>);

    /// Encodes the blocks as a client would, returning the byte stream and,
    /// per block, the header list sent (without the never-indexed marks).
    fn client_stream(blocks: &[BlockSpec]) -> (Vec<u8>, Vec<Sent>) {
        let mut enc = httlib_hpack::Encoder::default();
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0x10, 0])); // SETTINGS
        let mut expected = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let id = 1 + 2 * i as u32;
            let mut encoded = Vec::new();
            if let Some(size) = b.size_update {
                enc.update_max_dynamic_size(size, &mut encoded).unwrap();
            }
            let mut want = Vec::new();
            for f in &b.fields {
                enc.encode((f.name.clone(), f.value.clone(), f.flags), &mut encoded)
                    .unwrap();
                want.push((f.name.clone(), f.value.clone()));
            }
            expected.push(want);
            let mut cuts: Vec<usize> = b.cuts.iter().map(|c| c % (encoded.len() + 1)).collect();
            cuts.sort();
            cuts.push(encoded.len());
            let mut start = 0;
            for (k, &end) in cuts.iter().enumerate() {
                let last = k + 1 == cuts.len();
                let chunk = &encoded[start..end];
                start = end;
                if k == 0 {
                    let mut flags = if b.end_stream { 1 } else { 0 };
                    let mut payload = Vec::new();
                    if let Some(pad) = b.padded {
                        flags |= PADDED;
                        payload.push(pad);
                    }
                    if b.priority {
                        flags |= PRIORITY;
                        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
                    }
                    payload.extend_from_slice(chunk);
                    payload.extend(std::iter::repeat_n(0, b.padded.unwrap_or(0) as usize));
                    if last {
                        flags |= END_HEADERS;
                    }
                    stream.extend(frame(HEADERS, flags, id, &payload));
                } else {
                    stream.extend(frame(
                        CONTINUATION,
                        if last { END_HEADERS } else { 0 },
                        id,
                        chunk,
                    ));
                }
            }
            if let Some((kind, data)) = &b.after {
                stream.extend(frame(*kind, 0, if *kind == 6 { 0 } else { id }, data));
            }
        }
        (stream, expected)
    }

    /// Parses the rewritten stream: header lists (decoded by the reference
    /// decoder, as the server's table sees them) and the other frames.
    fn server_view(mut s: &[u8]) -> (Vec<Seen>, Vec<OtherFrame>) {
        assert!(s.starts_with(PREFACE));
        s = &s[PREFACE.len()..];
        let mut dec = httlib_hpack::Decoder::default();
        let mut lists = Vec::new();
        let mut others = Vec::new();
        let mut fragment: Option<Vec<u8>> = None;
        while !s.is_empty() {
            let len = u32::from_be_bytes([0, s[0], s[1], s[2]]) as usize;
            let (kind, flags) = (s[3], s[4]);
            let payload = &s[9..9 + len];
            s = &s[9 + len..];
            match kind {
                HEADERS | CONTINUATION => {
                    let mut body = payload;
                    if kind == HEADERS {
                        assert!(fragment.is_none());
                        let pad = if flags & PADDED != 0 {
                            let p = body[0] as usize;
                            body = &body[1..body.len() - p];
                            p
                        } else {
                            0
                        };
                        let _ = pad;
                        if flags & PRIORITY != 0 {
                            assert_eq!(&body[..5], &[0, 0, 0, 0, 15]);
                            body = &body[5..];
                        }
                        others.push((kind, flags & 1, Vec::new()));
                    }
                    let f = fragment.get_or_insert_with(Vec::new);
                    f.extend_from_slice(body);
                    if flags & END_HEADERS != 0 {
                        let mut buf = fragment.take().unwrap();
                        let mut out = Vec::new();
                        dec.decode(&mut buf, &mut out)
                            .expect("the server can decode the block");
                        lists.push(
                            out.into_iter()
                                .map(|(n, v, f)| (n, v, f & 0x8 != 0))
                                .collect(),
                        );
                    }
                }
                _ => others.push((kind, flags, payload.to_vec())),
            }
        }
        assert!(fragment.is_none());
        (lists, others)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn rewritten_streams_carry_the_same_headers(
            blocks in proptest::collection::vec(block(), 1..8),
            splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let (stream, sent_lists) = client_stream(&blocks);
            // What the client meant, as the reference decoder reads it, with
            // the invalid authorities replaced.
            let input_lists = server_view(&stream).0;
            let decoded_sent: Vec<Vec<_>> = input_lists.iter().map(|l| l.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect()).collect();
            prop_assert_eq!(&decoded_sent, &sent_lists, "the reference codec round-trips");
            let expected: Vec<Vec<_>> = input_lists.into_iter().map(|list| {
                list.into_iter().map(|(n, v, never): (Vec<u8>, Vec<u8>, bool)| {
                    if n == b":authority" && !is_valid_authority(&v) {
                        (n, REPLACED.to_vec(), never)
                    } else {
                        (n, v, never)
                    }
                }).collect()
            }).collect();
            let mut r = Rewriter::default();
            let mut out = Vec::new();
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort();
            let mut at = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                r.feed(&stream[at..c], &mut out).unwrap();
                at = c;
            }
            let (lists, others) = server_view(&out);
            // Where the client sent an invalid authority the server sees a
            // valid one: `localhost`, or one of the same length.
            prop_assert_eq!(lists.len(), expected.len());
            let lists: Vec<Vec<_>> = lists.into_iter().zip(&expected).map(|(list, want)| {
                list.into_iter().zip(want).map(|((n, v, never), (_, w, _))| {
                    if w == REPLACED {
                        assert!(is_valid_authority(&v), "{:?}", String::from_utf8_lossy(&v));
                        assert!(v == REPLACEMENT || v == same_length_replacement(v.len()));
                        (n, REPLACED.to_vec(), never)
                    } else {
                        (n, v, never)
                    }
                }).collect()
            }).collect();
            prop_assert_eq!(&lists, &expected);
            let (_, want_others) = server_view(&client_stream_unpadded(&blocks));
            prop_assert_eq!(others, want_others);
            let any_bad = blocks.iter().any(|b| b.fields.iter().any(|f| f.name == b":authority" && !is_valid_authority(&f.value)));
            if !any_bad {
                prop_assert_eq!(&out, &stream, "a stream with valid authorities passes byte for byte");
            }
            prop_assert_eq!(r.rewritten() > 0, any_bad);
        }
    }

    /// The same stream without padding: frames other than header blocks
    /// must come out exactly as sent, and header blocks with the same
    /// END_STREAM flag.
    fn client_stream_unpadded(blocks: &[BlockSpec]) -> Vec<u8> {
        let blocks: Vec<BlockSpec> = blocks
            .iter()
            .cloned()
            .map(|mut b| {
                b.padded = None;
                b
            })
            .collect();
        client_stream(&blocks).0
    }
}
