//! What every testfleet service shares: the wire format, the AMQP topology, broker
//! plumbing, configuration and logging.
//!
//! Layout:
//! - [`wire`]: message types and their versioned MessagePack codec.
//! - [`batch`]: cutting a run's tests into batches, and a batch's timeout (pure).
//! - [`faults`]: deliberate panics for the end-to-end tests (debug builds).
//! - [`limits`]: the bounds on every message sent and every value received.
//! - [`parts`]: messages too big for one, split and joined again.
//! - [`topology`]: queue and exchange names and their one declaration.
//! - [`broker`]: connecting with backoff, confirmed publishing, checked acks.
//! - [`config`]: layered configuration and its validation.
//! - [`order`]: longest-first ordering of a run's jobs from past durations.
//! - [`cli`]: flags, exit codes and the start-up flow the binaries share.
//! - [`shutdown`]: two-stage shutdown (drain, then abort).
//! - `strategies` (tests, feature `strategies`): proptest strategies for the
//!   wire types, which `properties` and the other crates' property tests use.
//! - [`logging`]: the tracing subscriber the binaries install.

pub mod batch;
pub mod broker;
pub mod cli;
pub mod config;
pub mod faults;
pub mod limits;
pub mod logging;
pub mod order;
pub mod parts;
#[cfg(test)]
mod properties;
pub mod shutdown;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
pub mod topology;
pub mod wire;

/// Milliseconds since the Unix epoch, the time unit on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
