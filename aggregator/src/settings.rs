//! The aggregator's settings: where the layered configuration (defaults,
//! file, environment, flags) becomes what the service runs with, validated,
//! in one place. `main.rs` only turns its flags into configuration overrides.

use crate::cache_stats::CacheEndpoint;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use testfleet_common::broker::Brokers;
use testfleet_common::config::{ConfigError, JournalKind, RawConfig};
use testfleet_common::topology::Topology;
use testfleet_types::limits::MAX_CACHES;
use testfleet_types::triage::TriageRule;

use crate::journal::seal::JournalKey;

/// Validated settings of the aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorSettings {
    pub brokers: Brokers,
    pub connect_timeout: Duration,
    pub topology: Topology,
    pub report_dir: PathBuf,
    pub state_dir: PathBuf,
    /// How the reports group failing tests (`[report] triage_rules`).
    pub triage_rules: Vec<TriageRule>,
    /// Where open runs' journals are kept.
    pub journal: JournalKind,
    /// The key that seals the broker journal (with `journal = "broker"`).
    pub journal_key: Option<JournalKey>,
    /// The broker journal's retention, in bytes.
    pub journal_max_bytes: u64,
    /// Where the dashboard listens; `None`: no dashboard.
    pub dashboard: Option<SocketAddr>,
    pub dashboard_token: Option<String>,
    /// Host names it answers to, beside IP addresses and `localhost`.
    pub dashboard_hosts: Vec<String>,
    /// The fleet's package caches (`aggregator.caches`).
    pub caches: Vec<CacheEndpoint>,
}

/// `aggregator.dashboard` as an address to listen on, if it is not empty.
fn dashboard_address(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match text.trim() {
        "" => Ok(None),
        address => address.parse().map(Some).map_err(|_| ConfigError::Invalid {
            key: "aggregator.dashboard",
            problem: format!("{address:?} is not an address to listen on, such as 127.0.0.1:9191"),
        }),
    }
}

/// The broker journal's key, which that journal needs: its entries carry
/// secrets that other broker users must not read.
fn journal_key(
    aggregator: &testfleet_common::config::AggregatorConfig,
) -> Result<Option<JournalKey>, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        key: "aggregator.journal_key_file",
        problem,
    };
    match (aggregator.journal, aggregator.journal_key_file.as_str()) {
        (JournalKind::File, _) => Ok(None),
        (JournalKind::Broker, "") => Err(invalid(
            "must name a key file with journal = \"broker\" (openssl rand -hex 32 > journal.key)"
                .into(),
        )),
        (JournalKind::Broker, path) => JournalKey::read(std::path::Path::new(path))
            .map(Some)
            .map_err(invalid),
    }
}

impl AggregatorSettings {
    /// The aggregator's settings from its configuration, or what is wrong.
    pub fn from_config(raw: &RawConfig) -> Result<AggregatorSettings, ConfigError> {
        Ok(AggregatorSettings {
            brokers: Brokers::new(&raw.broker.url),
            connect_timeout: raw.broker.connect_timeout(),
            topology: raw.broker.topology(),
            report_dir: raw.aggregator.report_dir.clone(),
            state_dir: raw.aggregator.state_dir.clone(),
            triage_rules: raw.report.triage_rules()?,
            journal: raw.aggregator.journal,
            journal_key: journal_key(&raw.aggregator)?,
            journal_max_bytes: raw.aggregator.journal_max_bytes,
            dashboard: dashboard_address(&raw.aggregator.dashboard)?,
            dashboard_token: Some(raw.aggregator.dashboard_token.clone())
                .filter(|token| !token.is_empty()),
            dashboard_hosts: raw
                .aggregator
                .dashboard_hosts
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            caches: raw
                .aggregator
                .caches
                .iter()
                .map(|text| CacheEndpoint::parse(text))
                .collect::<Result<_, _>>()
                .and_then(|caches: Vec<CacheEndpoint>| match caches.len() {
                    n if n > MAX_CACHES => Err(format!("names {n} caches, at most {MAX_CACHES}")),
                    _ => Ok(caches),
                })
                .map_err(|problem| ConfigError::Invalid {
                    key: "aggregator.caches",
                    problem,
                })?,
        })
    }
}
