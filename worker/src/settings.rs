//! The worker's settings: where the layered configuration (defaults, file,
//! environment, flags) becomes what the service runs with, validated, in one
//! place. `main.rs` only turns its flags into configuration overrides.

use std::collections::BTreeSet;
use std::time::Duration;

use testfleet_common::broker::Brokers;
use testfleet_common::config::{ConfigError, RawConfig, WorkerConfig};
use testfleet_common::topology::Topology;
use testfleet_types::messages::ExecutorKind;

use crate::confinement::{CacheAccess, Ceilings, Confinement, Liftable, CACHE_NETWORK};

/// Validated settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub brokers: Brokers,
    pub connect_timeout: Duration,
    pub topology: Topology,
    pub concurrency: u16,
    pub worker_id: String,
    pub docker_timeout: Duration,
    /// Executors to run jobs with; validated non-empty.
    pub executors: Vec<ExecutorKind>,
    /// Deliveries beyond the slots, so a slot can start a test while its last
    /// result is being confirmed; 0 keeps prefetch equal to slots.
    pub prefetch_extra: u16,
    /// How many gets the taker has under way at once (validated 1–64).
    pub gets_in_flight: usize,
    /// What a Docker job may loosen here.
    pub confinement: Confinement,
    /// How long without a job before the worker exits; `None`: never.
    pub exit_when_idle: Option<Duration>,
    /// The fleet's package cache, if this worker has one.
    pub cache: Option<CacheAccess>,
}

impl WorkerSettings {
    /// The worker's settings from its configuration, or what is wrong with it.
    pub fn from_config(raw: &RawConfig) -> Result<WorkerSettings, ConfigError> {
        raw.worker.validate()?;
        let concurrency =
            u16::try_from(raw.worker.concurrency).map_err(|_| ConfigError::Invalid {
                key: "worker.concurrency",
                problem: "must be at most 65535".into(),
            })?;
        let worker_id = match raw.worker.id.trim() {
            "" => default_worker_id(),
            id => id.to_owned(),
        };
        Ok(WorkerSettings {
            brokers: Brokers::new(&raw.broker.url),
            connect_timeout: raw.broker.connect_timeout(),
            topology: raw.broker.topology(),
            concurrency,
            worker_id,
            docker_timeout: Duration::from_secs(raw.worker.docker_timeout_secs),
            // Validated: concurrency + prefetch_extra fits the AMQP prefetch (u16).
            prefetch_extra: raw.worker.prefetch_extra as u16,
            gets_in_flight: raw.worker.gets_in_flight as usize,
            executors: dedup(raw.worker.executors.clone()),
            confinement: confinement(&raw.worker)?,
            cache: cache_access(&raw.worker)?,
            exit_when_idle: (raw.worker.exit_when_idle_secs > 0)
                .then(|| Duration::from_secs(raw.worker.exit_when_idle_secs)),
        })
    }
}

/// The worker's rules for its test containers, each name checked.
/// The cache a job of `run.network = "cache"` reaches, if the worker has
/// one; a worker that allows such jobs must say where its cache is.
fn cache_access(worker: &WorkerConfig) -> Result<Option<CacheAccess>, ConfigError> {
    let network = worker.cache.network.trim();
    let allows_cache = worker.allowed_networks.iter().any(|n| n == CACHE_NETWORK);
    if network.is_empty() {
        return match allows_cache {
            true => Err(ConfigError::Invalid {
                key: "worker.cache.network",
                problem: "must name the Docker network of the fleet's caches: worker.allowed_networks lists \"cache\"".into(),
            }),
            false => Ok(None),
        };
    }
    Ok(Some(CacheAccess {
        network: network.to_owned(),
        env: worker
            .cache
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }))
}

fn confinement(worker: &WorkerConfig) -> Result<Confinement, ConfigError> {
    let mut liftable = BTreeSet::new();
    for name in &worker.liftable_limits {
        let Some(limit) = Liftable::parse(name) else {
            return Err(ConfigError::Invalid {
                key: "worker.liftable_limits",
                problem: format!(
                    "names {name:?}, which is none of {}",
                    Liftable::NAMES.join(", ")
                ),
            });
        };
        liftable.insert(limit);
    }
    if worker.allowed_networks.iter().any(|n| n.trim().is_empty()) {
        return Err(ConfigError::Invalid {
            key: "worker.allowed_networks",
            problem: "must not hold an empty name".into(),
        });
    }
    let ceiling = |key: &'static str, value: u64| {
        i64::try_from(value)
            .ok()
            .filter(|v| *v > 0)
            .ok_or(ConfigError::Invalid {
                key,
                problem: format!("must be between 1 and {}", i64::MAX),
            })
    };
    let ceilings = Ceilings {
        memory_bytes: ceiling("worker.max_memory_bytes", worker.max_memory_bytes)?,
        pids: ceiling("worker.max_pids", worker.max_pids)?,
    };
    if worker.allowed_runtimes.iter().any(|r| r.trim().is_empty()) {
        return Err(ConfigError::Invalid {
            key: "worker.allowed_runtimes",
            problem: "must not hold an empty name".into(),
        });
    }
    Ok(Confinement::new(
        worker.allowed_networks.clone(),
        liftable,
        worker.allowed_capabilities.clone(),
        ceilings,
    )
    .with_runtimes(worker.allowed_runtimes.clone()))
}

/// `--executors docker,docker` is one Docker executor, in first-named order.
fn dedup(kinds: Vec<ExecutorKind>) -> Vec<ExecutorKind> {
    let mut unique = Vec::new();
    for kind in kinds {
        if !unique.contains(&kind) {
            unique.push(kind);
        }
    }
    unique
}

/// Hostname plus a random suffix: unique even for several workers on one host.
fn default_worker_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "worker".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_worker_with_an_id_of_its_own() {
        let settings = WorkerSettings::from_config(&testfleet_common::config::defaults()).unwrap();
        assert_eq!(settings.executors, [ExecutorKind::Docker]);
        assert_eq!(settings.concurrency, 2);
        let again = WorkerSettings::from_config(&testfleet_common::config::defaults()).unwrap();
        assert_ne!(settings.worker_id, again.worker_id);
    }

    #[test]
    fn an_unknown_liftable_limit_is_named() {
        let mut raw = testfleet_common::config::defaults();
        raw.worker.liftable_limits = vec!["memory".into(), "seccomp".into()];
        let error = WorkerSettings::from_config(&raw).unwrap_err().to_string();
        assert!(
            error.contains("worker.liftable_limits") && error.contains("\"seccomp\""),
            "{error}"
        );
    }

    #[test]
    fn a_worker_allowing_the_cache_network_must_name_its_cache() {
        let mut raw = testfleet_common::config::defaults();
        raw.worker.allowed_networks = vec!["none".into(), "cache".into()];
        let error = WorkerSettings::from_config(&raw).unwrap_err().to_string();
        assert!(error.contains("worker.cache.network"), "{error}");
        raw.worker.cache.network = "fleet-cache".into();
        raw.worker
            .cache
            .env
            .insert("http_proxy".into(), "http://apt-cache:3142".into());
        let cache = WorkerSettings::from_config(&raw).unwrap().cache.unwrap();
        assert_eq!(cache.network, "fleet-cache");
        assert_eq!(
            cache.env,
            [("http_proxy".into(), "http://apt-cache:3142".into())]
        );
    }

    #[test]
    fn executors_named_twice_count_once_in_order() {
        use ExecutorKind::*;
        assert_eq!(dedup(vec![Process, Docker, Process]), [Process, Docker]);
    }
}
