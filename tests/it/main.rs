//! End-to-end tests: real RabbitMQ, real Docker engine, real binaries.
//!
//! Run `scripts/setup.sh` first (the README's test command does). Each test starts
//! its own fleet under its own queue prefix, so tests run in parallel on one broker.

mod ab;
mod bad_input;
mod batches;
mod bench_smoke;
mod bounds;
mod cache;
mod campaign;
mod ci;
mod cluster;
mod compose;
mod dashboard;
mod disruptive;
mod events;
mod fairness;
mod faults;
mod fixtures;
mod html_report;
mod netns;
mod pipeline;
mod presets;
mod process_executor;
mod producer_cli;
mod quarantine;
mod rdeps;
mod reasons;
mod resume;
mod runtime;
mod shutdown;
mod third_party;
mod warm;
mod worker_kill;
