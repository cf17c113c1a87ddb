//! `slice_alloc` journal decoding and recovery on untrusted bytes.
//!
//! The input is a journal buffer, as read back from disk after a crash. Beyond "never panics":
//!
//! - `decode_journal`: `valid_len + torn_bytes` is the input length, and re-encoding the decoded
//!   records with `encode_record` after `JOURNAL_HEADER` reproduces `input[..valid_len]` byte for
//!   byte, each frame at the offset the decoder reported (nothing is accepted that the encoder
//!   would not have written);
//! - `recover(None, ..)` agrees with `decode_journal` on `valid_len`, `torn_bytes` and the
//!   reported dropped tail;
//! - with a snapshot: the input is split at the first `b"SLAJ"`; the bytes before it, when they
//!   parse as a JSON `Snapshot`, are the snapshot and the rest is the journal. On success the
//!   recovered allocator's own snapshot is accepted by `Allocator::from_snapshot` and is a fixed
//!   point of snapshot -> restore -> snapshot and of a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slice_alloc::journal::JOURNAL_HEADER;
use slice_alloc::{
    Allocator, AllocatorConfig, Recovered, Snapshot, decode_journal, encode_record, recover,
};

fuzz_target!(|data: &[u8]| {
    check_decode(data);
    check_recover(None, data);
    let split = data
        .windows(4)
        .position(|w| w == &JOURNAL_HEADER[..4])
        .unwrap_or(data.len());
    if let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&data[..split]) {
        check_recover(Some(&snapshot), &data[split..]);
    }
});

fn check_decode(data: &[u8]) {
    let Ok(decoded) = decode_journal(data) else {
        return;
    };
    assert!(decoded.valid_len <= data.len(), "valid_len past the input");
    assert_eq!(decoded.valid_len + decoded.torn_bytes, data.len());
    let mut encoded = Vec::new();
    if decoded.valid_len == 0 {
        // Not even a whole header: nothing may have been decoded.
        assert!(decoded.entries.is_empty(), "entries without a header");
    } else {
        encoded.extend_from_slice(&JOURNAL_HEADER);
        for entry in &decoded.entries {
            assert_eq!(entry.offset, encoded.len() as u64, "entry offset");
            encode_record(entry.seq, &entry.record, &mut encoded);
        }
    }
    assert!(
        encoded == data[..decoded.valid_len],
        "re-encoding {} decoded records gives {} bytes that differ from the valid prefix of {} \
         bytes",
        decoded.entries.len(),
        encoded.len(),
        decoded.valid_len,
    );
}

fn check_recover(snapshot: Option<&Snapshot>, journal: &[u8]) {
    let Ok(recovered) = recover(snapshot, journal, AllocatorConfig::default()) else {
        return;
    };
    let decoded = decode_journal(journal).expect("recover accepted a journal decode refuses");
    let Recovered {
        allocator,
        last_seq,
        applied,
        valid_len,
        torn_bytes,
        dropped,
    } = recovered;
    assert_eq!(valid_len, decoded.valid_len);
    assert_eq!(torn_bytes, decoded.torn_bytes);
    assert_eq!(dropped, decoded.dropped);
    if let Some(d) = &dropped {
        assert_eq!((d.offset as usize, d.bytes as usize), (valid_len, torn_bytes));
    }
    assert!(applied <= decoded.entries.len());
    let base = snapshot.map_or(0, |s| s.last_seq);
    assert!(last_seq >= base, "recovery went back before the snapshot");
    assert_eq!(
        last_seq - base,
        applied as u64,
        "applied count vs sequence numbers"
    );

    let state = allocator.snapshot(last_seq);
    let restored = Allocator::from_snapshot(&state, AllocatorConfig::default())
        .unwrap_or_else(|e| panic!("the recovered state's own snapshot is refused: {e}"));
    assert_eq!(
        restored.snapshot(last_seq),
        state,
        "snapshot -> restore -> snapshot"
    );
    let json = serde_json::to_vec(&state).expect("a snapshot serializes");
    let back: Snapshot = serde_json::from_slice(&json).expect("a serialized snapshot parses");
    assert_eq!(back, state, "snapshot JSON round trip");
}
