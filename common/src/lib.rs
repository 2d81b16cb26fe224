//! What every testfleet service shares beyond the types of `testfleet-types`:
//! the AMQP topology, broker plumbing, configuration and logging.
//!
//! Layout:
//! - [`faults`]: deliberate panics for the end-to-end tests (debug builds).
//! - [`topology`]: queue and exchange names and their one declaration.
//! - [`broker`]: connecting with backoff, confirmed publishing, checked acks.
//! - [`config`]: layered configuration and its validation.
//! - [`cli`]: flags, exit codes and the start-up flow the binaries share.
//! - [`shutdown`]: two-stage shutdown (drain, then abort).
//! - [`logging`]: the tracing subscriber the binaries install.

pub mod broker;
pub mod cli;
pub mod config;
pub mod faults;
pub mod logging;
pub mod shutdown;
pub mod topology;
