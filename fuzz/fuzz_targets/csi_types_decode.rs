//! `csi-types` request validation on untrusted wire bytes.
//!
//! The first input byte picks one of the CSI request messages (modulo their number); the rest is
//! decoded with prost and converted to the typed request with `TryFrom`. That must never panic,
//! a refusal must carry a message, and an accepted request must survive typed -> proto -> bytes
//! -> proto -> typed unchanged (the identity that `tests/properties.rs` checks from generated
//! values, here from whatever the fuzzer finds).
#![no_main]

use std::fmt::Debug;

use csi_types::{CsiError, proto};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `bytes` as `P`, validates it into `T` and checks the round trip.
fn check<T, P>(bytes: &[u8])
where
    T: Clone + Debug + PartialEq + TryInto<P, Error: Debug> + TryFrom<P, Error = CsiError>,
    P: Message + Default,
{
    let Ok(wire) = P::decode(bytes) else {
        return;
    };
    let typed = match T::try_from(wire) {
        Ok(typed) => typed,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a refusal without a message");
            return;
        }
    };
    // A request read from the wire has no size beyond int64, so it converts back.
    let back: P = typed
        .clone()
        .try_into()
        .expect("an accepted request converts back to the wire");
    let decoded =
        P::decode(back.encode_to_vec().as_slice()).expect("prost decodes what it just encoded");
    match T::try_from(decoded) {
        Ok(again) => assert_eq!(again, typed, "typed -> proto -> typed changed the request"),
        Err(e) => panic!("an accepted request, converted back to proto, is refused: {e}"),
    }
}

include!("../csi_requests.rs");

/// One check per request message, in `for_each_request!` order.
macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        const CHECKS: &[fn(&[u8])] = &[$(check::<requests::$name, proto::$name>),*];
    };
}

for_each_request!(checks);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    CHECKS[usize::from(pick) % CHECKS.len()](bytes);
});
