//! The aggregator: follows every run it hears of, collects results, re-enqueues
//! failed and missing tests while failures are few, and emits verdicts and reports.
//!
//! Layout:
//! - [`settings`]: configuration into validated settings, in one place.
//! - [`service`]: the loop that talks to the broker: decodes, performs what
//!   the core decides, commits.
//! - [`runs`]: every run the aggregator knows and the rules of its
//!   bookkeeping, as a pure core: an event in, effects out.
//! - [`run_state`]: one run's rounds, attempts and retry rule (pure logic).
//! - [`run_queues`]: runs' own jobs queues: where retries go, the notices
//!   that tell workers which runs to take from, and deleting them at the end.
//! - [`journal`]: the durable per-run journals a restart resumes from: files
//!   under the state dir, or a broker stream a standby replays.
//! - [`framed`]: the file format (header, checksummed records) journal and
//!   history files are made of.
//! - [`dashboard`]: the live web page and Prometheus metrics (opt-in).
//! - [`events`]: the run events published for followers (pure builders).
//! - [`fleet`]: the fleet's slots and cores, from workers' heartbeats (pure).
//! - [`history`]: each suite's test durations, for longest-first ordering.
//! - [`pipeline`]: what each group commit settles, and the runs it lets
//!   finish (pure).
//! - [`outcomes`]: each suite's recent flaky and failing tests (flakiness).
//! - [`quarantine`]: tests whose failure fails nothing (pure).
//! - [`unclaimed`]: the budget of unknown runs whose results are kept (pure).
//! - [`history_files`]: the history files read and written off the loop.
//! - [`finishing`]: a finished run's reports and verdict, off the loop.
//! - [`cache_stats`]: the fleet's package caches' hits and misses over a
//!   run's time, asked of the caches.
//! - [`verdict`]: the verdict's copy of a report, fitted under its byte bound.

pub mod cache_stats;
pub mod dashboard;
pub mod events;
pub mod finishing;
pub mod fleet;
pub mod framed;
pub mod history;
pub mod history_files;
pub mod journal;
pub mod outcomes;
pub mod pipeline;
pub mod quarantine;
pub mod run_queues;
pub mod run_state;
pub mod runs;
pub mod service;
pub mod settings;
pub mod unclaimed;
pub mod verdict;

pub use service::{run, AggregatorError};
pub use settings::AggregatorSettings;
