//! The testfleet producer: lists a run's tests, publishes the run and one job per
//! test, and optionally waits for the verdict.
//!
//! Layout:
//! - [`ids`]: reading test ids from a file, stdin or a discovery command; filtering.
//! - [`rdeps`]: reverse dependencies from a Debian `Packages` file or Python
//!   metadata, as a run's listing.
//! - [`presets`]: discovery commands, listing parsers and batched commands of
//!   common test runners.
//! - [`discovery`]: listing a suite's tests inside its image, through a worker.
//! - [`submit`]: publishing the run with confirms; waiting for its verdict.
//! - [`history`]: asking the aggregator for the suite's durations (longest first).
//! - [`quarantine`]: the quarantine file, read and checked.
//! - [`resume`]: `--resume` (a run continued under its id) and `--rerun` (a
//!   finished run's tests that did not pass, as a new run).
//! - [`settings`]: configuration and flags into validated settings.
//! - [`follow`]: the loop that follows a run to its verdict, showing its events.
//! - [`progress`]: progress counts and ETA from events (pure), bar or plain lines.
//! - [`ndjson`]: the `--events` stream's lines (schema in `docs/EVENTS.md`).

pub mod compare;
pub mod discovery;
pub mod follow;
pub mod history;
pub mod ids;
pub mod ndjson;
pub mod presets;
pub mod progress;
pub mod quarantine;
pub mod rdeps;
pub mod resume;
pub mod settings;
pub mod submit;

pub use settings::ProducerSettings;
pub use submit::{submit, wait_for_verdict, ProducerError, Submitted};
