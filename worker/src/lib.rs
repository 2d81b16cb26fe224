//! The testfleet worker: a stateless consumer that runs each job in a fresh Docker
//! container and publishes what happened.
//!
//! Layout:
//! - [`service`]: the loop that owns the broker session and the running jobs.
//! - [`docker`]: running one job in a container (the only code that talks to Docker).
//! - [`labels`]: container labels and the orphan sweep.
//! - [`capture`]: head-and-tail output capture under a cap.

pub mod capture;
pub mod docker;
pub mod labels;
pub mod service;

pub use service::{run, WorkerError, WorkerSettings};
