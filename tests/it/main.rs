//! End-to-end tests: real RabbitMQ, real Docker engine, real binaries.
//!
//! Run `scripts/setup.sh` first (the README's test command does). Each test starts
//! its own fleet under its own queue prefix, so tests run in parallel on one broker.

mod disruptive;
mod faults;
mod fixtures;
mod pipeline;
mod producer_cli;
mod shutdown;
mod worker_kill;
