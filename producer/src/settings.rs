//! The producer's settings: where the layered configuration (defaults, file,
//! environment, flags) and the flags that are not configuration (`--preset`,
//! `--report-format`, `--batch`, `--slots`, `--order`) become what a run is
//! published with, validated, in one place. `main.rs` only parses flags.

use std::time::Duration;

use testfleet_common::broker::Brokers;
use testfleet_common::config::{ConfigError, RawConfig};
use testfleet_common::topology::Topology;
use testfleet_types::limits::MAX_TESTS_PER_JOB;
use testfleet_types::messages::{
    AbRun, IdScheme, JobQueue, Quarantine, RecordedSide, ReportFormat, RunSpec, RunnerReport,
    SignatureRule,
};
use testfleet_types::now_ms;
use testfleet_types::triage::TriageRule;

use crate::history::Order;
use crate::presets::Preset;
use crate::quarantine;

/// Validated settings of the producer.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub brokers: Brokers,
    pub connect_timeout: Duration,
    pub topology: Topology,
    pub suite: String,
    pub spec: RunSpec,
    /// How long the run may take in all.
    pub deadline: Duration,
    /// The order jobs are published in.
    pub order: Order,
    /// How tests are grouped into jobs.
    pub batching: Batching,
    /// The broker's `consumer_timeout`, as configured: no job may run longer.
    pub consumer_timeout_ms: u64,
    /// Where the run's jobs wait, and its share beside other runs.
    pub queue: JobQueue,
    pub weight: u32,
    /// Tests whose failure fails nothing, from `run.quarantine_file`.
    pub quarantine: Vec<Quarantine>,
    /// Why entries of that file were left out: they expired.
    pub quarantine_expired: Vec<String>,
    /// `run.auto_quarantine`, in percent; `None`: off.
    pub auto_quarantine_percent: Option<u32>,
    /// `run.signatures`, validated.
    pub signatures: Vec<SignatureRule>,
    /// An A/B run's baseline and confirmations (`--baseline-image`).
    pub ab: Option<AbRun>,
    /// `run.confirm`, for a comparison with an earlier run (`--compare`).
    pub confirm: u32,
}

/// How a run's tests are grouped into jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One test per job, as a command with `{id}` needs.
    One,
    /// Batches planned from the suite's history (`testfleet_types::batch`),
    /// for `slots` test slots (`None`: the workers consuming now, 2 each).
    Auto { slots: Option<usize> },
    /// Batches of at most this many tests, by count.
    AtMost(usize),
}

/// What the command line chose that is not a configuration key.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    pub preset: Option<Preset>,
    /// `--report-format FORMAT:IDS`, as given.
    pub report_format: Option<String>,
    /// `--batch auto|N`, as given.
    pub batch: Option<String>,
    pub slots: Option<usize>,
    pub order: Order,
}

impl ProducerSettings {
    /// The producer's settings and the triage rules of the reports `--wait`
    /// writes, or what is wrong with them.
    pub fn from_config(
        raw: &RawConfig,
        choices: &Choices,
    ) -> Result<(ProducerSettings, Vec<TriageRule>), ConfigError> {
        let triage_rules = raw.report.triage_rules()?;
        let mut spec = raw.run.to_spec()?;
        spec.runner_report = runner_report(choices, &spec)?;
        let batching = batching(choices, &spec)?;
        let consumer_timeout_ms = raw.broker.consumer_timeout_secs.saturating_mul(1000);
        let quarantine = match raw.run.quarantine_file.trim() {
            "" => quarantine::Read::default(),
            path => quarantine::read(std::path::Path::new(path), now_ms()).map_err(|problem| {
                ConfigError::Invalid {
                    key: "run.quarantine_file",
                    problem,
                }
            })?,
        };
        within_consumer_timeout(&spec, consumer_timeout_ms)?;
        let signatures = raw.run.signatures()?;
        let ab = raw.run.ab()?;
        if let Some(ab) = &ab {
            with_confirmation_rounds(&mut spec, ab.confirm);
        }
        let settings = ProducerSettings {
            brokers: Brokers::new(&raw.broker.url),
            connect_timeout: raw.broker.connect_timeout(),
            topology: raw.broker.topology(),
            suite: raw.run.suite.clone(),
            spec,
            deadline: Duration::from_secs(raw.run.deadline_secs),
            order: choices.order,
            batching,
            consumer_timeout_ms,
            queue: raw.run.queue,
            weight: raw.run.weight,
            quarantine: quarantine.entries,
            quarantine_expired: quarantine.expired,
            auto_quarantine_percent: (raw.run.auto_quarantine > 0.0)
                .then(|| (raw.run.auto_quarantine * 100.0).round().clamp(1.0, 99.0) as u32),
            signatures,
            ab,
            confirm: raw.run.confirm,
        };
        Ok((settings, triage_rules))
    }
}

impl ProducerSettings {
    /// Makes the run a comparison with an earlier run's outcomes
    /// (`--compare`): an A/B run whose baseline is never run, and whose
    /// differences are confirmed `run.confirm` more times on its own side.
    pub fn compare_with(&mut self, recorded: RecordedSide) -> Result<(), ConfigError> {
        if self.ab.is_some() {
            return Err(ConfigError::Invalid {
                key: "run.baseline_image",
                problem: "a run compares with a baseline image or with an earlier run (--compare), not both"
                    .into(),
            });
        }
        if self.confirm > testfleet_types::limits::MAX_CONFIRM {
            return Err(ConfigError::Invalid {
                key: "run.confirm",
                problem: format!("must be at most {}", testfleet_types::limits::MAX_CONFIRM),
            });
        }
        with_confirmation_rounds(&mut self.spec, self.confirm);
        self.ab = Some(AbRun {
            baseline_image: format!("run {}", recorded.run),
            confirm: self.confirm,
            recorded: Some(recorded),
        });
        Ok(())
    }
}

/// Confirmation takes rounds of its own, beside the fleet's retries.
fn with_confirmation_rounds(spec: &mut RunSpec, confirm: u32) {
    spec.retry.max_rounds = spec
        .retry
        .max_rounds
        .saturating_add(confirm)
        .min(testfleet_types::limits::MAX_ROUNDS);
}

/// A worker holds a job's delivery unacked until its test ends, and the
/// broker closes the channel of a consumer that holds one longer than its
/// `consumer_timeout` (the job then runs again elsewhere, and again): a test
/// allowed that long is refused before anything is published.
fn within_consumer_timeout(spec: &RunSpec, consumer_timeout_ms: u64) -> Result<(), ConfigError> {
    if spec.timeout_ms < consumer_timeout_ms {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "run.timeout_secs",
        problem: format!(
            "is {} s, not under the broker's consumer_timeout of {} s (broker.consumer_timeout_secs): \
             RabbitMQ would close the channel of a worker running a test that long; raise \
             `consumer_timeout` in the broker's rabbitmq.conf (milliseconds) and \
             broker.consumer_timeout_secs with it, or lower the timeout",
            spec.timeout_ms.div_ceil(1000),
            consumer_timeout_ms / 1000
        ),
    })
}

/// The report the command writes: `--report-format`, else the preset's when
/// the command writes one at `{report}`.
fn runner_report(choices: &Choices, spec: &RunSpec) -> Result<Option<RunnerReport>, ConfigError> {
    if let Some(text) = &choices.report_format {
        return parse_report_format(text)
            .map(Some)
            .map_err(|problem| ConfigError::Invalid {
                key: "--report-format",
                problem,
            });
    }
    Ok(choices
        .preset
        .and_then(Preset::batched_command)
        .filter(|_| spec.writes_report())
        .map(|(_, report)| report))
}

/// One test per job unless the command takes several (`{ids}`, `{ids_file}`,
/// `{ids_regex}`); then batches, which need a report.
fn batching(choices: &Choices, spec: &RunSpec) -> Result<Batching, ConfigError> {
    let invalid = |problem: &str| ConfigError::Invalid {
        key: "--batch",
        problem: problem.to_owned(),
    };
    if !spec.takes_several_ids() {
        return match choices.batch {
            Some(_) => Err(invalid(
                "needs a batched command: one with `{ids}`, `{ids_file}` or `{ids_regex}`",
            )),
            None => Ok(Batching::One),
        };
    }
    if spec.runner_report.is_none() || !spec.writes_report() {
        return Err(ConfigError::Invalid {
            key: "--report-format",
            problem: "a batched command must write a report at `{report}` saying how each test ended: put `{report}` where the runner takes its report's path, and give --report-format FORMAT:IDS (or --preset)".into(),
        });
    }
    match choices.batch.as_deref() {
        None | Some("auto") => Ok(Batching::Auto {
            slots: choices.slots,
        }),
        Some(size) => match size.parse::<usize>() {
            Ok(size) if (1..=MAX_TESTS_PER_JOB).contains(&size) => Ok(Batching::AtMost(size)),
            _ => Err(invalid(&format!(
                "must be `auto` or a number of tests from 1 to {MAX_TESTS_PER_JOB} (the most a job may hold)"
            ))),
        },
    }
}

/// `junit:pytest` as a report format and an id scheme (`name` when omitted).
fn parse_report_format(text: &str) -> Result<RunnerReport, String> {
    let (format, ids) = text.split_once(':').unwrap_or((text, "name"));
    let format = match format {
        "junit" => ReportFormat::Junit,
        "go-test-json" => ReportFormat::GoTestJson,
        "rspec-json" => ReportFormat::RspecJson,
        "jsonl" => ReportFormat::Jsonl,
        other => {
            return Err(format!(
                "unknown report format `{other}` (junit, go-test-json, rspec-json, jsonl)"
            ))
        }
    };
    let ids = match ids {
        "pytest" => IdScheme::Pytest,
        "nextest" => IdScheme::Nextest,
        "rspec" => IdScheme::Rspec,
        "go" => IdScheme::Go,
        "name" => IdScheme::Name,
        other => {
            return Err(format!(
                "unknown id scheme `{other}` (pytest, nextest, rspec, go, name)"
            ))
        }
    };
    Ok(RunnerReport { format, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str], runner_report: Option<RunnerReport>) -> RunSpec {
        let mut spec = testfleet_common::config::default_spec();
        spec.command = command.iter().map(|a| a.to_string()).collect();
        spec.runner_report = runner_report;
        spec
    }

    fn junit() -> Option<RunnerReport> {
        Some(RunnerReport {
            format: ReportFormat::Junit,
            ids: IdScheme::Name,
        })
    }

    fn choices(batch: Option<&str>) -> Choices {
        Choices {
            batch: batch.map(str::to_owned),
            ..Choices::default()
        }
    }

    #[test]
    fn a_command_with_one_id_runs_one_test_per_job_and_refuses_batch() {
        let one = spec(&["t", "{id}"], None);
        assert_eq!(batching(&choices(None), &one).unwrap(), Batching::One);
        let error = batching(&choices(Some("5")), &one).unwrap_err();
        assert!(
            error.to_string().contains("needs a batched command"),
            "{error}"
        );
    }

    #[test]
    fn a_batched_command_needs_a_report_and_a_valid_size() {
        let no_report = spec(&["t", "{ids}"], None);
        let error = batching(&choices(None), &no_report).unwrap_err();
        assert!(error.to_string().contains("{report}"), "{error}");

        let batched = spec(&["t", "--out", "{report}", "{ids}"], junit());
        assert_eq!(
            batching(&choices(None), &batched).unwrap(),
            Batching::Auto { slots: None }
        );
        assert_eq!(
            batching(&choices(Some("7")), &batched).unwrap(),
            Batching::AtMost(7)
        );
        assert_eq!(
            batching(&choices(Some("10000")), &batched).unwrap(),
            Batching::AtMost(10_000)
        );
        for bad in ["0", "-1", "many", "10001"] {
            assert!(batching(&choices(Some(bad)), &batched).is_err(), "{bad}");
        }
        let error = batching(&choices(Some("10001")), &batched).unwrap_err();
        assert!(error.to_string().contains("1 to 10000"), "{error}");
    }

    #[test]
    fn a_test_timeout_must_stay_under_the_brokers_consumer_timeout() {
        let mut spec = spec(&["t", "{id}"], None);
        spec.timeout_ms = 1_799_999;
        assert!(within_consumer_timeout(&spec, 1_800_000).is_ok());
        spec.timeout_ms = 3_600_000;
        let error = within_consumer_timeout(&spec, 1_800_000)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is 3600 s, not under the broker's consumer_timeout of 1800 s")
                && error.contains("broker.consumer_timeout_secs"),
            "{error}"
        );
    }

    #[test]
    fn report_formats_name_what_they_accept() {
        assert_eq!(
            parse_report_format("go-test-json:go").unwrap(),
            RunnerReport {
                format: ReportFormat::GoTestJson,
                ids: IdScheme::Go,
            }
        );
        assert_eq!(parse_report_format("junit").unwrap(), junit().unwrap());
        assert!(parse_report_format("xml:pytest")
            .unwrap_err()
            .contains("junit, go-test-json"));
        assert!(parse_report_format("junit:mocha")
            .unwrap_err()
            .contains("pytest, nextest"));
    }

    #[test]
    fn a_preset_gives_its_report_only_to_a_command_that_writes_one() {
        let pytest = Choices {
            preset: Some(Preset::Pytest),
            ..Choices::default()
        };
        let writes = spec(&["pytest", "--junitxml={report}"], None);
        assert!(runner_report(&pytest, &writes).unwrap().is_some());
        let silent = spec(&["pytest"], None);
        assert!(runner_report(&pytest, &silent).unwrap().is_none());
    }
}
