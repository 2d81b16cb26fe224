//! Messages too big for one broker message: split into [`Part`]s by the sender,
//! joined again by the receiver.
//!
//! Only messages with one reader are split: a run's announcement (the
//! aggregator), a verdict (the waiting producer), a history answer (the
//! producer that asked). A queue of competing consumers (jobs) never carries
//! parts, since its parts would go to different workers.
//!
//! The receiver holds every part's delivery unacked until the message is whole
//! and used, then acks them all: a receiver that dies half-way gets every part
//! again from the broker. Whatever a sender claims is checked: a part count
//! within [`MAX_PARTED_BYTES`], indices in range, and a bounded number of
//! messages being joined at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::codec::{decode, encode, WireError};
use crate::limits::{MAX_MESSAGE_BYTES, MAX_PARTED_BYTES, PART_BYTES};
use crate::messages::{Body, Part};

/// Messages being joined at once, at most; a receiver sees one or two.
const MAX_JOINING: usize = 16;

/// A body too big even for parts.
#[derive(Debug, thiserror::Error)]
#[error("a {kind} message of {bytes} bytes is over the {MAX_PARTED_BYTES}-byte bound of a parted message")]
pub struct TooBig {
    pub kind: &'static str,
    pub bytes: usize,
}

/// The encoded messages that carry `body`: itself when it fits one message,
/// else its encoding cut into parts.
pub fn split(body: &Body) -> Result<Vec<Vec<u8>>, TooBig> {
    let whole = encode(body);
    if whole.len() <= MAX_MESSAGE_BYTES {
        return Ok(vec![whole]);
    }
    if whole.len() > MAX_PARTED_BYTES {
        return Err(TooBig {
            kind: body.kind(),
            bytes: whole.len(),
        });
    }
    let message_id = Uuid::new_v4();
    let count = whole.len().div_ceil(PART_BYTES) as u32;
    Ok(whole
        .chunks(PART_BYTES)
        .enumerate()
        .map(|(index, chunk)| {
            encode(&Body::Part(Part {
                message_id,
                index: index as u32,
                count,
                bytes: chunk.to_vec(),
            }))
        })
        .collect())
}

/// What adding a part led to. `H` is what the receiver holds per part (its
/// delivery, to ack or reject once the message is settled).
#[derive(Debug)]
pub enum Joined<H> {
    /// More parts to come; the part's delivery is held.
    Incomplete,
    /// Every part is in: the decoded message (or why it cannot be read), and
    /// every part's delivery.
    Whole {
        body: Box<Result<Body, WireError>>,
        held: Vec<H>,
    },
    /// This part cannot belong to any message (its count disagrees with its
    /// siblings', it repeats a part held already): refuse it alone.
    Refused { reason: String, held: H },
}

/// How much a joiner holds at most. Parts wait unacked, so what they hold
/// is taken from the receiver's prefetch and memory: bounded, a sender that
/// starts messages it never finishes cannot starve everything else.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Messages being joined at once.
    pub messages: usize,
    /// Messages being joined at once for one sender.
    pub per_sender: usize,
    /// Parts held in all (each a delivery the receiver's prefetch counts).
    pub parts: usize,
    /// Bytes of parts held in all.
    pub bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            messages: MAX_JOINING,
            per_sender: MAX_JOINING,
            parts: usize::MAX,
            bytes: MAX_PARTED_BYTES + PART_BYTES,
        }
    }
}

/// Joins parts into messages.
pub struct Joiner<H> {
    joining: HashMap<Uuid, Joining<H>>,
    bounds: Bounds,
    /// Parts of messages given up to keep within the bounds, oldest first,
    /// for the receiver to refuse ([`Joiner::take_evicted`]).
    evicted: Vec<H>,
    /// The age rank the next message gets: lower is older.
    next_rank: u64,
}

struct Joining<H> {
    sender: String,
    rank: u64,
    count: u32,
    parts: Vec<Option<Vec<u8>>>,
    received: u32,
    bytes: usize,
    held: Vec<H>,
    since: Instant,
}

impl<H> Default for Joiner<H> {
    fn default() -> Self {
        Joiner::with_bounds(Bounds::default())
    }
}

impl<H> Joiner<H> {
    pub fn with_bounds(bounds: Bounds) -> Self {
        Joiner {
            joining: HashMap::new(),
            bounds,
            evicted: Vec::new(),
            next_rank: 0,
        }
    }

    /// Adds one part from an unnamed sender (see [`Joiner::add_from`]).
    pub fn add(&mut self, part: Part, held: H) -> Joined<H> {
        self.add_from("", part, held)
    }

    /// Adds one part (already checked against `limits` by `decode`) from
    /// `sender` (a name the broker vouches for, such as a message's
    /// validated user id). To make room, the oldest messages being joined
    /// (the sender's own first, when it has too many) are given up, their
    /// parts left in [`Joiner::take_evicted`].
    pub fn add_from(&mut self, sender: &str, part: Part, held: H) -> Joined<H> {
        if !self.joining.contains_key(&part.message_id) {
            self.make_room_for(sender);
            self.next_rank += 1;
            self.joining.insert(
                part.message_id,
                Joining {
                    sender: sender.to_owned(),
                    rank: self.next_rank,
                    count: part.count,
                    parts: vec![None; part.count as usize],
                    received: 0,
                    bytes: 0,
                    held: Vec::new(),
                    since: Instant::now(),
                },
            );
        }
        let joining = self
            .joining
            .get_mut(&part.message_id)
            .expect("inserted above");
        if part.count != joining.count {
            return Joined::Refused {
                reason: format!(
                    "part of {} when its message has {}",
                    part.count, joining.count
                ),
                held,
            };
        }
        let slot = &mut joining.parts[part.index as usize];
        if slot.is_some() {
            return Joined::Refused {
                reason: format!("part {} of a message that has it already", part.index),
                held,
            };
        }
        joining.bytes += part.bytes.len();
        *slot = Some(part.bytes);
        joining.received += 1;
        joining.held.push(held);
        if joining.received < joining.count {
            self.keep_within_bounds(part.message_id);
            return Joined::Incomplete;
        }
        let joining = self
            .joining
            .remove(&part.message_id)
            .expect("present above");
        let whole: Vec<u8> = joining.parts.into_iter().flatten().flatten().collect();
        let body = match decode(&whole) {
            Ok(Body::Part(_)) => Err(WireError::Malformed("a part inside a part".into())),
            other => other,
        };
        Joined::Whole {
            body: Box::new(body),
            held: joining.held,
        }
    }

    /// Parts given up since the last call, to refuse.
    pub fn take_evicted(&mut self) -> Vec<H> {
        std::mem::take(&mut self.evicted)
    }

    /// Gives up the oldest messages until a new one of `sender` fits.
    fn make_room_for(&mut self, sender: &str) {
        let of_sender = self.joining.values().filter(|j| j.sender == sender).count();
        if of_sender >= self.bounds.per_sender.max(1) {
            self.evict_oldest(|_, j| j.sender == sender);
        }
        while self.joining.len() >= self.bounds.messages.max(1) {
            self.evict_oldest(|_, _| true);
        }
    }

    /// Gives up the oldest other messages while the parts or bytes held are
    /// over their bounds (`keep` is the message just added to).
    fn keep_within_bounds(&mut self, keep: Uuid) {
        while self.over_bounds() {
            if !self.evict_oldest(|id, _| *id != keep) {
                return;
            }
        }
    }

    fn over_bounds(&self) -> bool {
        let parts: usize = self.joining.values().map(|j| j.held.len()).sum();
        let bytes: usize = self.joining.values().map(|j| j.bytes).sum();
        parts > self.bounds.parts || bytes > self.bounds.bytes
    }

    /// Gives up the oldest message `which` accepts; whether there was one.
    fn evict_oldest(&mut self, which: impl Fn(&Uuid, &Joining<H>) -> bool) -> bool {
        let oldest = self
            .joining
            .iter()
            .filter(|(id, j)| which(id, j))
            .min_by_key(|(_, j)| j.rank)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| self.joining.remove(&id)) {
            Some(joining) => {
                self.evicted.extend(joining.held);
                true
            }
            None => false,
        }
    }

    /// Gives up on messages still incomplete after `patience`: their sender
    /// died half-way. Returns what was held for them.
    pub fn expire(&mut self, patience: Duration) -> Vec<H> {
        let stale: Vec<Uuid> = self
            .joining
            .iter()
            .filter(|(_, j)| j.since.elapsed() >= patience)
            .map(|(id, _)| *id)
            .collect();
        stale
            .into_iter()
            .filter_map(|id| self.joining.remove(&id))
            .flat_map(|j| j.held)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::History;

    fn big_history(tests: usize) -> Body {
        Body::History(History {
            suite: "big".into(),
            durations_ms: (0..tests)
                .map(|i| (format!("tests/test_{i:08}.py::test_something[{i}]"), 1500))
                .collect(),
            batch_overhead_ms: None,
            host_busy_permille: None,
            capacity: None,
        })
    }

    fn decoded(payload: &[u8]) -> Part {
        match decode(payload).unwrap() {
            Body::Part(part) => part,
            other => panic!("expected a part, got {}", other.kind()),
        }
    }

    #[test]
    fn a_small_message_travels_whole() {
        let body = big_history(10);
        let payloads = split(&body).unwrap();
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(&payloads[0]).unwrap(), body);
    }

    #[test]
    fn a_big_message_is_split_under_the_bound_and_joined_in_any_order() {
        let body = big_history(400_000);
        let mut payloads = split(&body).unwrap();
        assert!(payloads.len() > 2, "{} parts", payloads.len());
        assert!(payloads.iter().all(|p| p.len() <= MAX_MESSAGE_BYTES));
        payloads.reverse();
        let mut joiner = Joiner::default();
        let last = payloads.pop().unwrap();
        for (i, payload) in payloads.iter().enumerate() {
            assert!(matches!(
                joiner.add(decoded(payload), i),
                Joined::Incomplete
            ));
        }
        // A part that repeats one held is refused alone and changes nothing.
        assert!(matches!(
            joiner.add(decoded(&payloads[0]), 99),
            Joined::Refused { held: 99, .. }
        ));
        match joiner.add(decoded(&last), 100) {
            Joined::Whole { body: joined, held } => {
                assert_eq!((*joined).unwrap(), body);
                assert_eq!(held.len(), payloads.len() + 1);
            }
            other => panic!("expected the whole message, got {other:?}"),
        }
        assert!(joiner.joining.is_empty());
    }

    #[test]
    fn a_part_that_disagrees_with_its_siblings_is_refused() {
        let id = Uuid::new_v4();
        let part = |index, count| Part {
            message_id: id,
            index,
            count,
            bytes: vec![1],
        };
        let mut joiner = Joiner::default();
        assert!(matches!(joiner.add(part(0, 3), 0), Joined::Incomplete));
        assert!(matches!(
            joiner.add(part(1, 2), 1),
            Joined::Refused { held: 1, .. }
        ));
        assert_eq!(joiner.expire(Duration::ZERO), vec![0]);
    }

    fn part(message_id: Uuid, index: u32, count: u32) -> Part {
        Part {
            message_id,
            index,
            count,
            bytes: vec![1; 100],
        }
    }

    #[test]
    fn half_sent_messages_are_given_up_oldest_first_within_the_bounds() {
        let bounds = Bounds {
            messages: 16,
            per_sender: 2,
            parts: 40,
            bytes: 1 << 20,
        };
        let mut joiner = Joiner::with_bounds(bounds);
        // A sender that starts messages and never ends them keeps two.
        for held in 0..16 {
            let joined = joiner.add_from("mallory", part(Uuid::new_v4(), 0, 64), held);
            assert!(matches!(joined, Joined::Incomplete));
        }
        assert_eq!(joiner.take_evicted(), (0..14).collect::<Vec<_>>());
        // Another sender's message is joined whole beside them.
        let id = Uuid::new_v4();
        assert!(matches!(
            joiner.add_from("producer", part(id, 0, 2), 100),
            Joined::Incomplete
        ));
        assert!(matches!(
            joiner.add_from("producer", part(id, 1, 2), 101),
            Joined::Whole { .. }
        ));
        // Parts held in all stay within their bound: the oldest go first.
        let big = Uuid::new_v4();
        for index in 0..40 {
            joiner.add_from("other", part(big, index, 64), 200 + index as usize);
        }
        assert_eq!(joiner.take_evicted(), [14, 15], "mallory's, the oldest");
        assert!(joiner.joining.contains_key(&big));
    }

    #[test]
    fn garbage_joined_is_an_unreadable_message_not_a_panic() {
        let mut joiner = Joiner::default();
        let id = Uuid::new_v4();
        for index in 0..2 {
            let joined = joiner.add(
                Part {
                    message_id: id,
                    index,
                    count: 2,
                    bytes: vec![0xc1; 3],
                },
                index,
            );
            if index == 1 {
                assert!(matches!(joined, Joined::Whole { body, .. } if body.is_err()));
            }
        }
    }
}
