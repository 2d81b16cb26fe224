//! Asking the aggregator, through the broker, how long a suite's tests took, to
//! publish a run's jobs longest first. The producer may run on another machine
//! than the aggregator, so the broker is the only way to its history.

use std::collections::HashMap;
use std::time::Duration;

use clap::ValueEnum;
use lapin::Connection;
use testfleet_common::broker;
use testfleet_common::topology::Topology;
use testfleet_types::messages::{Body, Capacity, HistoryQuery};
use testfleet_types::order;
use tracing::{info, warn};

/// How long to wait for the aggregator's answer before publishing in arrival order.
pub const HISTORY_TIMEOUT: Duration = Duration::from_secs(3);

/// The order a run's jobs are published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Order {
    /// As the ids were listed.
    Arrival,
    /// Longest first by past durations; tests without one go by the median.
    #[default]
    LongestFirst,
}

/// What the aggregator knows of a suite's past runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub durations_ms: HashMap<String, u64>,
    /// What a batch of this suite costs beyond its tests, once measured.
    pub batch_overhead_ms: Option<u64>,
    /// How busy its hosts' CPUs were while its batches ran, in thousandths.
    pub host_busy_permille: Option<u16>,
    /// The fleet's slots and cores, from its workers' heartbeats.
    pub capacity: Option<Capacity>,
}

/// The suite's history from the aggregator, or `None` (with a warning)
/// when none came in time: the caller keeps arrival order.
pub async fn fetch(
    connection: &Connection,
    topology: &Topology,
    suite: &str,
    timeout: Duration,
) -> Option<History> {
    let query = Body::HistoryQuery(HistoryQuery {
        suite: suite.to_owned(),
    });
    let answer = match broker::request(connection, &topology.history, &query, timeout).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            warn!(%suite, ?timeout, "no history from the aggregator in time; publishing in arrival order");
            return None;
        }
        Err(error) => {
            warn!(%suite, %error, "could not ask for the suite's history; publishing in arrival order");
            return None;
        }
    };
    match answer {
        Body::History(history) if history.suite == suite => Some(History {
            durations_ms: history.durations_ms.into_iter().collect(),
            batch_overhead_ms: history.batch_overhead_ms,
            host_busy_permille: history.host_busy_permille,
            capacity: history.capacity,
        }),
        Body::History(other) => {
            warn!(%suite, answered = %other.suite, "history of another suite; publishing in arrival order");
            None
        }
        other => {
            warn!(%suite, kind = other.kind(), "an answer that is no history; publishing in arrival order");
            None
        }
    }
}

/// Orders `tests` longest first by `history`, logging how much was known.
pub fn longest_first(tests: Vec<String>, history: &HashMap<String, u64>) -> Vec<String> {
    let known = tests.iter().filter(|t| history.contains_key(*t)).count();
    info!(
        tests = tests.len(),
        known, "publishing longest first from the suite's history"
    );
    order::longest_first(tests, |t| history.get(t).copied())
}
