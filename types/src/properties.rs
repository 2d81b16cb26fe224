//! Property tests of the decoders: whatever bytes arrive, decoding ends in a
//! body within bounds or a reason, never a panic; a body within bounds comes
//! back as it went.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::codec::{decode, encode, WireError};
use crate::messages::{Body, Part};
use crate::parts::{split, Joined, Joiner};
use crate::strategies::body;
use crate::{checks, limits};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_decode_to_a_body_or_a_reason(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn a_body_round_trips_or_is_refused_for_its_bounds(body in body()) {
        match decode(&encode(&body)) {
            Ok(back) => {
                prop_assert!(checks::check(&body).is_ok());
                prop_assert_eq!(back, body);
            }
            Err(WireError::OutOfBounds { .. }) => prop_assert!(checks::check(&body).is_err()),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    #[test]
    fn damaged_encodings_never_panic(body in body(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = encode(&body);
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] = byte;
            bytes.truncate(bytes.len() - at / 2);
        }
        let _ = decode(&bytes);
    }

    #[test]
    fn parts_from_anyone_join_or_are_refused(
        parts in vec((0..4u32, any::<u32>(), any::<u32>(), vec(any::<u8>(), 0..8)), 0..12)
    ) {
        let mut joiner = Joiner::default();
        let ids = [uuid::Uuid::nil(), uuid::Uuid::max(), uuid::Uuid::from_u128(7), uuid::Uuid::from_u128(8)];
        for (i, (which, index, count, bytes)) in parts.into_iter().enumerate() {
            let part = Part { message_id: ids[which as usize], index, count, bytes };
            // Parts reach the joiner only through `decode`, which checks them.
            let encoded = encode(&Body::Part(part));
            if let Ok(Body::Part(part)) = decode(&encoded) {
                match joiner.add(part, i) {
                    Joined::Whole { held, .. } => prop_assert!(!held.is_empty()),
                    Joined::Incomplete | Joined::Refused { .. } => {}
                }
            }
        }
    }

    #[test]
    fn whatever_is_split_fits_a_message_and_joins_back(body in body()) {
        let payloads = split(&body).unwrap();
        prop_assert!(payloads.iter().all(|p| p.len() <= limits::MAX_MESSAGE_BYTES));
    }
}
