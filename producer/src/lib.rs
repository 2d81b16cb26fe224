//! The testfleet producer: lists a run's tests, publishes the run and one job per
//! test, and optionally waits for the verdict.
//!
//! Layout:
//! - [`ids`]: reading test ids from a file, stdin or a discovery command; filtering.
//! - [`submit`]: publishing the run with confirms; waiting for its verdict.

pub mod ids;
pub mod submit;

pub use submit::{submit, wait_for_verdict, ProducerError, ProducerSettings, Submitted};
