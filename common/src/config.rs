//! Configuration, in two stages: layered sources into [`RawConfig`], then
//! validation into the types the services use.
//!
//! Layers, later winning: the embedded `defaults.toml` ← a `testfleet.toml` ←
//! `TESTFLEET_SECTION__KEY` environment variables ← command-line flags. Unknown keys
//! and values of the wrong type are errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::Value;
use config::{Config, Environment, File, FileFormat};
use regex::Regex;
use serde::Deserialize;
use testfleet_types::messages::{
    AbRun, ContainerLimits, ContainerMode, ExecutorKind, JobQueue, RetryPolicy, RunSpec,
    SignatureRule,
};
use testfleet_types::triage::{signature_regex, TriageRule};
use testfleet_types::{checks, limits};

use crate::topology::Topology;

const DEFAULTS: &str = include_str!("defaults.toml");
/// The file read from the working directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "testfleet.toml";
const ENV_PREFIX: &str = "TESTFLEET";
/// A worker's id travels in every result and labels its containers.
const MAX_WORKER_ID_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `config` crate's words, in the message (no `source`, so that a
    /// chain printer does not say them twice).
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub broker: BrokerConfig,
    pub run: RunConfig,
    pub worker: WorkerConfig,
    pub aggregator: AggregatorConfig,
    pub report: ReportConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub url: String,
    pub prefix: String,
    pub delivery_limit: u32,
    pub connect_timeout_secs: u64,
    /// The broker's own `consumer_timeout`, which jobs must stay under.
    pub consumer_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub suite: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_secs: f64,
    /// Kill a test quiet this long (0: never).
    pub quiet_timeout_secs: f64,
    pub deadline_secs: u64,
    pub output_cap_bytes: u64,
    pub retry_threshold: f64,
    pub max_rounds: u32,
    pub network: String,
    pub tmpfs: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub no_new_privileges: bool,
    pub executor: ExecutorKind,
    /// Empty: the worker's own working directory.
    pub workdir: String,
    pub container_mode: ContainerMode,
    pub warm_reuse: u32,
    /// Empty: the engine's default runtime.
    pub runtime: String,
    /// Capabilities given back to a test container (it drops all others).
    pub cap_add: Vec<String>,
    /// Empty: the image's own user.
    pub user: String,
    /// `env` variables kept out of every report.
    pub secret_env: Vec<String>,
    /// Where the run's jobs wait: `own` (a queue of its own, shared fairly
    /// with other runs) or `shared` (one FIFO queue for every run).
    pub queue: JobQueue,
    /// The run's share beside other runs of their own queues.
    pub weight: u32,
    /// A file listing quarantined tests (empty: none).
    pub quarantine_file: String,
    /// Quarantine tests flaky in more than this share of recent runs (0: off).
    pub auto_quarantine: f64,
    /// Log-signature rules naming why a test failed; see
    /// [`RunConfig::signatures`].
    pub signatures: Vec<SignatureRuleConfig>,
    /// An A/B run's baseline image (empty: not an A/B run); see
    /// [`RunConfig::ab`].
    pub baseline_image: String,
    /// An A/B run's confirmations of each difference.
    pub confirm: u32,
}

/// A log-signature rule as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRuleConfig {
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub fleet_fault: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: u32,
    pub id: String,
    pub docker_timeout_secs: u64,
    /// Which executors this worker runs jobs with.
    pub executors: Vec<ExecutorKind>,
    /// Jobs held beyond the slots while results are confirmed (see defaults).
    pub prefetch_extra: u32,
    /// How many `basic.get`s the worker's taker has under way at once.
    pub gets_in_flight: u32,
    /// Network modes a Docker job may ask for.
    pub allowed_networks: Vec<String>,
    /// Limits a Docker job may turn off (`memory`, `pids`, `no_new_privileges`).
    pub liftable_limits: Vec<String>,
    /// Capabilities a Docker job may add back.
    pub allowed_capabilities: Vec<String>,
    /// OCI runtimes a Docker job may name (`run.runtime`).
    pub allowed_runtimes: Vec<String>,
    /// The highest memory limit a Docker job may set.
    pub max_memory_bytes: u64,
    /// The highest process limit a Docker job may set.
    pub max_pids: u64,
    /// Seconds without a job after which the worker exits (0: never).
    pub exit_when_idle_secs: u64,
    /// The fleet's package cache, for jobs of `run.network = "cache"`.
    pub cache: CacheConfig,
}

/// Where a worker's containers of `run.network = "cache"` go: a Docker
/// network on which the fleet's caches (and nothing else) can be reached,
/// and the variables that point package managers at them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The Docker network (empty: this worker has no cache).
    pub network: String,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    pub report_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Where open runs' journals are kept: `file` or `broker`.
    pub journal: JournalKind,
    /// The broker journal's retention, in bytes.
    pub journal_max_bytes: u64,
    /// The file holding the key that seals the broker journal's entries;
    /// required with `journal = "broker"`.
    pub journal_key_file: String,
    /// Where the dashboard listens; empty: off.
    pub dashboard: String,
    /// A token every dashboard request must carry; empty: none.
    pub dashboard_token: String,
    /// Host names the dashboard answers to, beside IP addresses and
    /// `localhost`.
    pub dashboard_hosts: Vec<String>,
    /// The fleet's package caches whose hits and misses a run of the cache
    /// network reports, each `name=http://host:port` of its stats.
    pub caches: Vec<String>,
}

/// Where the aggregator keeps open runs' journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalKind {
    /// A file per run under `aggregator.state_dir`, synced before acks.
    File,
    /// A RabbitMQ stream, replicated with the broker, that any aggregator
    /// of the prefix replays: a standby needs no shared disk.
    Broker,
}

/// How reports are written; see [`ReportConfig::triage_rules`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub triage_rules: Vec<TriageRuleConfig>,
}

/// A user's failure-triage rule as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageRuleConfig {
    pub name: String,
    pub pattern: String,
}

/// A command-line flag that overrides a configuration key.
pub type Override = (&'static str, Value);

/// Builds the raw configuration from every layer.
///
/// `file` is a path given on the command line (it must exist); without one,
/// `testfleet.toml` in the working directory is read if present.
pub fn load(file: Option<&Path>, overrides: Vec<Override>) -> Result<RawConfig, ConfigError> {
    load_with_env(file, overrides, std::env::vars())
}

/// [`load`] with the environment given, so tests need not touch the process's.
pub fn load_with_env(
    file: Option<&Path>,
    overrides: Vec<Override>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigError> {
    let file_source = match file {
        Some(path) => File::from(path).required(true),
        None => File::with_name(DEFAULT_FILE).required(false),
    };
    let mut builder = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .add_source(file_source.format(FileFormat::Toml))
        .add_source(environment(env));
    for (key, value) in overrides {
        builder = builder.set_override(key, value)?;
    }
    Ok(builder.build()?.try_deserialize()?)
}

/// The embedded defaults alone: no file, no environment, no flags.
pub fn defaults() -> RawConfig {
    Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .build()
        .and_then(Config::try_deserialize)
        .expect("the embedded defaults are valid configuration")
}

/// The run spec the embedded defaults describe: a base that code (tests, tools)
/// adjusts field by field instead of spelling out every field again.
pub fn default_spec() -> RunSpec {
    defaults()
        .run
        .to_spec()
        .expect("the embedded run defaults are a valid spec")
}

/// Keys whose environment variable is a comma-separated list.
const LIST_KEYS: [&str; 10] = [
    "run.cap_add",
    "run.secret_env",
    "run.tmpfs",
    "worker.executors",
    "worker.allowed_networks",
    "worker.liftable_limits",
    "worker.allowed_capabilities",
    "worker.allowed_runtimes",
    "aggregator.dashboard_hosts",
    "aggregator.caches",
];

/// Only `TESTFLEET_<SECTION>__<KEY>` variables are configuration; others with the
/// prefix (such as `TESTFLEET_RUN_ID`, which workers give to tests) are not.
fn environment(env: impl IntoIterator<Item = (String, String)>) -> Environment {
    let prefix = format!("{ENV_PREFIX}_");
    let ours: config::Map<String, String> = env
        .into_iter()
        .filter(|(key, _)| key.strip_prefix(&prefix).is_some_and(|k| k.contains("__")))
        .collect();
    let lists = LIST_KEYS.iter().fold(
        Environment::with_prefix(ENV_PREFIX).list_separator(","),
        |env, key| env.with_list_parse_key(key),
    );
    lists
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(ours))
}

impl BrokerConfig {
    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, self.delivery_limit)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let urls: Vec<&str> = self.url.split(',').map(str::trim).collect();
        if urls.iter().any(|u| u.is_empty()) {
            return invalid(
                "broker.url",
                "must be one URL, or several separated by commas (the nodes of one cluster), none empty",
            );
        }
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("amqp://") || u.starts_with("amqps://")))
        {
            let shown = crate::broker::redact(bad);
            return invalid(
                "broker.url",
                &format!(
                    "must start with amqp:// or amqps:// (each of its URLs; {shown:?} does not)"
                ),
            );
        }
        if self.prefix.is_empty() {
            return invalid("broker.prefix", "must not be empty");
        }
        Ok(())
    }
}

impl RunConfig {
    /// Validates the run settings into the spec that travels with every job.
    pub fn to_spec(&self) -> Result<RunSpec, ConfigError> {
        if self.image.trim().is_empty() {
            return invalid("run.image", "must name an image");
        }
        if self.command.is_empty() {
            return invalid("run.command", "must have at least the program to run");
        }
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return invalid("run.timeout_secs", "must be a positive number of seconds");
        }
        if !(self.quiet_timeout_secs.is_finite() && self.quiet_timeout_secs >= 0.0) {
            return invalid(
                "run.quiet_timeout_secs",
                "must be 0 (off) or a number of seconds",
            );
        }
        if !(0.0..=1.0).contains(&self.retry_threshold) {
            return invalid("run.retry_threshold", "must be a ratio between 0 and 1");
        }
        if self.max_rounds == 0 {
            return invalid("run.max_rounds", "must be at least 1");
        }
        if self.deadline_secs == 0 {
            return invalid("run.deadline_secs", "must be at least 1");
        }
        if self.warm_reuse == 0 {
            return invalid("run.warm_reuse", "must be at least 1");
        }
        self.within_bounds()?;
        let nano_cpus = match self.cpus {
            Some(cpus) if !(cpus.is_finite() && cpus > 0.0) => {
                return invalid("run.cpus", "must be a positive number of CPUs")
            }
            Some(cpus) => Some((cpus * 1e9) as i64),
            None => None,
        };
        let spec = RunSpec {
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            timeout_ms: (self.timeout_secs * 1000.0).ceil() as u64,
            output_cap_bytes: self.output_cap_bytes,
            retry: RetryPolicy {
                threshold: self.retry_threshold,
                max_rounds: self.max_rounds,
            },
            container: ContainerLimits {
                network: self.network.clone(),
                tmpfs: self.tmpfs.clone(),
                memory_bytes: self.memory_bytes,
                nano_cpus,
                pids_limit: self.pids_limit,
                no_new_privileges: self.no_new_privileges,
                cap_add: self
                    .cap_add
                    .iter()
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect(),
            },
            executor: self.executor,
            workdir: (!self.workdir.is_empty()).then(|| self.workdir.clone()),
            container_mode: self.container_mode,
            warm_reuse: self.warm_reuse,
            runtime: (!self.runtime.is_empty()).then(|| self.runtime.clone()),
            runner_report: None,
            user: (!self.user.trim().is_empty()).then(|| self.user.trim().to_owned()),
            secret_env: self.secret_env.clone(),
            quiet_timeout_ms: (self.quiet_timeout_secs > 0.0)
                .then(|| (self.quiet_timeout_secs * 1000.0).ceil() as u64),
        };
        checks::check_spec(&spec).map_err(|problem| ConfigError::Invalid {
            key: "run.command",
            problem,
        })?;
        Ok(spec)
    }
}

impl RunConfig {
    /// The bounds every spec keeps on the wire (`testfleet_types::limits`), said with
    /// the key to change.
    fn within_bounds(&self) -> Result<(), ConfigError> {
        let max_timeout_secs = (limits::MAX_TIMEOUT_MS / 1000) as f64;
        if self.timeout_secs > max_timeout_secs {
            return invalid(
                "run.timeout_secs",
                &format!("must be at most {max_timeout_secs} (a week)"),
            );
        }
        if self.quiet_timeout_secs > max_timeout_secs {
            return invalid(
                "run.quiet_timeout_secs",
                &format!("must be at most {max_timeout_secs} (a week)"),
            );
        }
        if self.deadline_secs > limits::MAX_RUN_MS / 1000 {
            return invalid(
                "run.deadline_secs",
                &format!("must be at most {} (30 days)", limits::MAX_RUN_MS / 1000),
            );
        }
        if self.output_cap_bytes > limits::MAX_OUTPUT_CAP_BYTES {
            return invalid(
                "run.output_cap_bytes",
                &format!(
                    "must be at most {} (4 MiB, so that any result fits a broker message)",
                    limits::MAX_OUTPUT_CAP_BYTES
                ),
            );
        }
        if !(0.0..1.0).contains(&self.auto_quarantine) {
            return invalid(
                "run.auto_quarantine",
                "must be a share of recent runs from 0 (off) to under 1",
            );
        }
        if !(1..=limits::MAX_WEIGHT).contains(&self.weight) {
            return invalid(
                "run.weight",
                &format!("must be between 1 and {}", limits::MAX_WEIGHT),
            );
        }
        if self.max_rounds > limits::MAX_ROUNDS {
            return invalid(
                "run.max_rounds",
                &format!("must be at most {}", limits::MAX_ROUNDS),
            );
        }
        if self.warm_reuse > limits::MAX_WARM_REUSE {
            return invalid(
                "run.warm_reuse",
                &format!("must be at most {}", limits::MAX_WARM_REUSE),
            );
        }
        Ok(())
    }
}

impl RunConfig {
    /// What makes the run an A/B run, if `baseline_image` names an image:
    /// every id runs in it and in `image`, and differences run `confirm`
    /// more times on each side. Only containers have images to compare.
    pub fn ab(&self) -> Result<Option<AbRun>, ConfigError> {
        let baseline_image = self.baseline_image.trim();
        if baseline_image.is_empty() {
            return Ok(None);
        }
        if self.confirm > limits::MAX_CONFIRM {
            return invalid(
                "run.confirm",
                &format!("must be at most {}", limits::MAX_CONFIRM),
            );
        }
        if self.executor != ExecutorKind::Docker {
            return invalid(
                "run.baseline_image",
                "an A/B run compares two images: it needs run.executor = \"docker\"",
            );
        }
        Ok(Some(AbRun {
            baseline_image: baseline_image.to_owned(),
            confirm: self.confirm,
            recorded: None,
        }))
    }

    /// The log-signature rules in their order (the first match wins): each
    /// name short and non-empty, each pattern a valid regex, as many as a
    /// run may carry.
    pub fn signatures(&self) -> Result<Vec<SignatureRule>, ConfigError> {
        const KEY: &str = "run.signatures";
        if self.signatures.len() > limits::MAX_SIGNATURES {
            return invalid(KEY, &format!("at most {} rules", limits::MAX_SIGNATURES));
        }
        self.signatures
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let which = format!("rule {} ({:?})", i + 1, rule.name);
                let name = rule.name.trim();
                if name.is_empty() || name.len() > limits::MAX_SIGNATURE_NAME_BYTES {
                    let most = limits::MAX_SIGNATURE_NAME_BYTES;
                    return invalid(KEY, &format!("{which}: `name` must have 1 to {most} bytes"));
                }
                if rule.pattern.len() > limits::MAX_SIGNATURE_PATTERN_BYTES {
                    let most = limits::MAX_SIGNATURE_PATTERN_BYTES;
                    return invalid(KEY, &format!("{which}: `pattern` is over {most} bytes"));
                }
                if let Err(error) = signature_regex(&rule.pattern) {
                    return invalid(
                        KEY,
                        &format!("{which}: `pattern` is not a valid regex: {error}"),
                    );
                }
                Ok(SignatureRule {
                    name: name.to_owned(),
                    pattern: rule.pattern.clone(),
                    fleet_fault: rule.fleet_fault,
                })
            })
            .collect()
    }
}

impl ReportConfig {
    /// The triage rules in their order (the first match wins), each name
    /// non-empty and each pattern a valid regex.
    pub fn triage_rules(&self) -> Result<Vec<TriageRule>, ConfigError> {
        const KEY: &str = "report.triage_rules";
        self.triage_rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                // People count rules from 1, as they read them in the file.
                let which = format!("rule {} ({:?})", i + 1, rule.name);
                if rule.name.trim().is_empty() {
                    return invalid(KEY, &format!("{which}: `name` must not be empty"));
                }
                let pattern = Regex::new(&rule.pattern).map_err(|e| ConfigError::Invalid {
                    key: KEY,
                    problem: format!("{which}: `pattern` is not a valid regex: {e}"),
                })?;
                Ok(TriageRule {
                    name: rule.name.clone(),
                    pattern,
                })
            })
            .collect()
    }
}

/// The most gets a worker's taker may have under way: each is a channel of
/// its own per source on the broker.
pub const MAX_GETS_IN_FLIGHT: u32 = 64;

impl WorkerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return invalid("worker.concurrency", "must be at least 1");
        }
        if self.executors.is_empty() {
            return invalid("worker.executors", "must name at least one executor");
        }
        if self.id.len() > MAX_WORKER_ID_BYTES {
            return invalid(
                "worker.id",
                &format!("must be at most {MAX_WORKER_ID_BYTES} bytes"),
            );
        }
        if !(1..=MAX_GETS_IN_FLIGHT).contains(&self.gets_in_flight) {
            return invalid(
                "worker.gets_in_flight",
                &format!("must be from 1 to {MAX_GETS_IN_FLIGHT}"),
            );
        }
        if u64::from(self.concurrency) + u64::from(self.prefetch_extra) > u64::from(u16::MAX) {
            return invalid(
                "worker.prefetch_extra",
                "concurrency + prefetch_extra must be at most 65535",
            );
        }
        Ok(())
    }
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        ConfigError::Load(error)
    }
}

fn invalid<T>(key: &'static str, problem: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        problem: problem.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_file(toml: &str, env: Vec<(&str, &str)>) -> Result<RawConfig, ConfigError> {
        let mut file = tempfile_in_target();
        file.1.write_all(toml.as_bytes()).unwrap();
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned()));
        load_with_env(Some(&file.0), vec![], env)
    }

    fn tempfile_in_target() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("tf-config-{}.toml", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }

    #[test]
    fn defaults_are_valid() {
        let raw = defaults();
        raw.broker.validate().unwrap();
        raw.worker.validate().unwrap();
        let spec = raw.run.to_spec().unwrap();
        assert!(raw.report.triage_rules().unwrap().is_empty());
        assert_eq!(spec.retry.max_rounds, 3);
        assert_eq!(spec.container.network, "none");
        assert_eq!(raw.broker.topology().jobs, "testfleet.jobs");
        assert_eq!(spec.executor, ExecutorKind::Docker);
        assert_eq!(spec.workdir, None);
        assert_eq!(raw.worker.executors, vec![ExecutorKind::Docker]);
    }

    /// The types crate's plain spec for tests is the embedded defaults'.
    #[test]
    fn the_sample_spec_is_the_default_one() {
        assert_eq!(default_spec(), testfleet_types::strategies::sample_spec());
    }

    #[test]
    fn executors_are_chosen_by_name() {
        let raw = load_file(
            "[run]\nexecutor = \"process\"\nworkdir = \"/srv\"\n[worker]\nexecutors = [\"process\", \"docker\"]\n",
            vec![],
        )
        .unwrap();
        let spec = raw.run.to_spec().unwrap();
        assert_eq!(spec.executor, ExecutorKind::Process);
        assert_eq!(spec.workdir.as_deref(), Some("/srv"));
        assert_eq!(
            raw.worker.executors,
            vec![ExecutorKind::Process, ExecutorKind::Docker]
        );

        let raw = load_file("[run]\ncontainer_mode = \"warm\"\nwarm_reuse = 7\n", vec![]).unwrap();
        let spec = raw.run.to_spec().unwrap();
        assert_eq!(
            (spec.container_mode, spec.warm_reuse),
            (ContainerMode::Warm, 7)
        );
        assert_eq!(spec.runtime, None, "empty: the engine's default");
        let raw = load_file("[run]\nruntime = \"crun\"\n", vec![]).unwrap();
        assert_eq!(raw.run.to_spec().unwrap().runtime.as_deref(), Some("crun"));
        let err = load_file("[run]\nwarm_reuse = 0\n", vec![]).unwrap();
        let err = err.run.to_spec().unwrap_err();
        assert!(err.to_string().contains("run.warm_reuse"), "{err}");
        let err = load_file("[run]\nexecutor = \"vm\"\n", vec![]).unwrap_err();
        assert!(err.to_string().contains("run.executor"), "{err}");
        let raw = load_file("[worker]\nexecutors = []\n", vec![]).unwrap();
        let err = raw.worker.validate().unwrap_err();
        assert!(err.to_string().contains("worker.executors"), "{err}");
    }

    #[test]
    fn layers_apply_in_order() {
        let raw = load_file(
            "[worker]\nconcurrency = 3\n[run]\nmax_rounds = 5\n",
            vec![
                ("TESTFLEET_WORKER__CONCURRENCY", "7"),
                ("TESTFLEET_RUN_ID", "not configuration"),
            ],
        )
        .unwrap();
        assert_eq!(raw.worker.concurrency, 7, "environment beats the file");
        assert_eq!(raw.run.max_rounds, 5, "the file beats the defaults");

        let overridden = load_with_env(
            None,
            vec![("worker.concurrency", 9.into())],
            vec![("TESTFLEET_WORKER__CONCURRENCY".into(), "7".into())],
        )
        .unwrap();
        assert_eq!(
            overridden.worker.concurrency, 9,
            "flags beat the environment"
        );
    }

    #[test]
    fn list_settings_come_from_the_environment_comma_separated() {
        let raw = load_file(
            "",
            vec![
                ("TESTFLEET_RUN__CAP_ADD", "CHOWN,SETUID"),
                ("TESTFLEET_WORKER__ALLOWED_NETWORKS", "none"),
                ("TESTFLEET_RUN__IMAGE", "a,b"),
            ],
        )
        .unwrap();
        assert_eq!(raw.run.cap_add, ["CHOWN", "SETUID"]);
        assert_eq!(raw.worker.allowed_networks, ["none"]);
        assert_eq!(raw.run.image, "a,b", "other keys stay strings");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_file("[worker]\nconcurency = 3\n", vec![]).unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = load_file("[worker]\nconcurrency = \"many\"\n", vec![]).unwrap_err();
        assert!(err.to_string().contains("worker.concurrency"), "{err}");
    }

    #[test]
    fn gets_in_flight_out_of_range_are_named() {
        for toml in [
            "[worker]\ngets_in_flight = 0\n",
            "[worker]\ngets_in_flight = 65\n",
        ] {
            let raw = load_file(toml, vec![]).unwrap();
            let err = raw.worker.validate().unwrap_err();
            assert!(err.to_string().contains("worker.gets_in_flight"), "{err}");
        }
        let raw = load_file("[worker]\ngets_in_flight = 64\n", vec![]).unwrap();
        assert!(raw.worker.validate().is_ok());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let raw = load_file("[run]\nretry_threshold = 1.5\n", vec![]).unwrap();
        let err = raw.run.to_spec().unwrap_err();
        assert!(err.to_string().contains("run.retry_threshold"), "{err}");

        let raw = load_file("[run]\ncommand = []\n", vec![]).unwrap();
        assert!(raw
            .run
            .to_spec()
            .unwrap_err()
            .to_string()
            .contains("run.command"));
    }

    #[test]
    fn values_the_wire_cannot_carry_are_refused_with_their_key() {
        for (toml, key) in [
            (
                "[run]\noutput_cap_bytes = 1000000000\n",
                "run.output_cap_bytes",
            ),
            ("[run]\ntimeout_secs = 1e17\n", "run.timeout_secs"),
            ("[run]\nmax_rounds = 1000\n", "run.max_rounds"),
            ("[run]\ndeadline_secs = 100000000\n", "run.deadline_secs"),
        ] {
            let raw = load_file(toml, vec![]).unwrap();
            let err = raw.run.to_spec().unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn triage_rules_keep_their_order() {
        let raw = load_file(
            "[report]\ntriage_rules = [\n  { name = \"db down\", pattern = \"connection refused\" },\n  { name = \"oom\", pattern = \"(?i)out of memory\" },\n]\n",
            vec![],
        )
        .unwrap();
        let rules = raw.report.triage_rules().unwrap();
        let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db down", "oom"]);
        assert!(rules[1].pattern.is_match("fatal: Out Of Memory"));
    }

    #[test]
    fn the_example_signatures_are_valid_and_a_bad_one_is_named() {
        let raw = load_file(include_str!("../../examples/signatures.toml"), vec![]).unwrap();
        let rules = raw.run.signatures().unwrap();
        assert_eq!(rules[0].name, "no-space");
        assert!(rules[0].fleet_fault && !rules.last().unwrap().fleet_fault);
        // A cache that could not reach its upstream answers 5xx: the
        // fleet's fault; a package the index lacks is not.
        let fetch = rules
            .iter()
            .find(|r| r.name == "mirror-unreachable")
            .unwrap();
        assert!(fetch.fleet_fault);
        let fetch = regex::Regex::new(&fetch.pattern).unwrap();
        assert!(fetch.is_match(
            "W: Failed to fetch http://examplerepo/base/./Packages  503  Connection closed, check DlMaxRetries"
        ));
        assert!(!fetch.is_match("E: Unable to locate package app-pinned"));
        assert!(
            !fetch.is_match("E: Failed to fetch http://examplerepo/base/./x.deb  404  Not Found")
        );

        let raw = load_file(
            "[run]\nsignatures = [{ name = \"ok\", pattern = \"a\" }, { name = \"broken\", pattern = \"(unclosed\" }]\n",
            vec![],
        )
        .unwrap();
        let err = raw.run.signatures().unwrap_err().to_string();
        assert!(
            err.contains("`run.signatures`") && err.contains("rule 2 (\"broken\")"),
            "{err}"
        );
        let raw = load_file(
            "[run]\nsignatures = [{ name = \"\", pattern = \"a\", fleet_fault = true }]\n",
            vec![],
        )
        .unwrap();
        assert!(raw
            .run
            .signatures()
            .unwrap_err()
            .to_string()
            .contains("`name`"));
    }

    #[test]
    fn a_bad_triage_rule_is_named() {
        let raw = load_file(
            "[report]\ntriage_rules = [{ name = \"ok\", pattern = \"a\" }, { name = \"broken\", pattern = \"(unclosed\" }]\n",
            vec![],
        )
        .unwrap();
        let err = raw.report.triage_rules().unwrap_err().to_string();
        assert!(err.contains("`report.triage_rules`"), "{err}");
        assert!(err.contains("rule 2 (\"broken\")"), "{err}");
        assert!(err.contains("not a valid regex"), "{err}");

        let raw = load_file(
            "[report]\ntriage_rules = [{ name = \" \", pattern = \"a\" }]\n",
            vec![],
        )
        .unwrap();
        let err = raw.report.triage_rules().unwrap_err().to_string();
        assert!(err.contains("`name` must not be empty"), "{err}");

        let err = load_file(
            "[report]\ntriage_rules = [{ name = \"x\", regex = \"a\" }]\n",
            vec![],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("regex"),
            "unknown key named: {err}"
        );
    }
}
