//! The types every testfleet part shares, with no broker plumbing: the
//! messages and their codec, the bounds on them, and the pure rules the
//! services share. The report crate builds on this alone (no AMQP client).
//!
//! Layout:
//! - [`vocabulary`]: how attempts and runs end, what each way means and
//!   its names, decided once.
//! - [`messages`]: the message types, the wire format and nothing else.
//! - [`codec`]: a message in its versioned envelope, as MessagePack, and back.
//! - [`limits`]: the bounds on every message sent and every value received
//!   (numbers only).
//! - [`checks`]: every value of a decoded message checked against its bound.
//! - [`parts`]: messages too big for one, split and joined again.
//! - [`batch`]: cutting a run's tests into batches, and a batch's timeout.
//! - [`order`]: longest-first ordering of a run's jobs from past durations.
//! - [`sides`]: the two sides of an A/B run, as test ids and jobs.
//! - [`triage`]: the validated failure-triage rule the reports group by,
//!   and a run's log-signature rules, compiled.
//! - `strategies` (tests, feature `strategies`): proptest strategies for the
//!   message types, which `properties` and the other crates' property tests use.
//!
//! Imports run one way: `limits` ← `batch` ← `vocabulary` ← `messages` ←
//! `sides` ← `checks` ← `codec` ← `parts`.

pub mod batch;
pub mod checks;
pub mod codec;
pub mod limits;
pub mod messages;
pub mod order;
pub mod parts;
#[cfg(test)]
mod properties;
pub mod sides;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
pub mod triage;
pub mod vocabulary;

/// Milliseconds since the Unix epoch, the time unit on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
