//! `report.json`'s types: the document of `docs/REPORT.md`, schema 2, of its
//! own rather than the verdict message's, converted from a run's report at
//! this edge. A message's field can be renamed without touching the file
//! tools read, and the other way round.
//!
//! Writing converts one test (and one batch) at a time ([`Report`]'s list
//! parameters, see `mod.rs`), so a big run's document never sits in memory
//! beside the report it comes from; reading (tools, tests) takes the plain
//! lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use testfleet_types::messages as message;
use uuid::Uuid;

/// The whole document. `T` and `B` are its lists of tests and batches: owned
/// when read, converted one by one as they are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report<T = Vec<Test>, B = Vec<Batch>, C = Vec<ComparedTest>> {
    pub schema: u32,
    pub run_id: Uuid,
    pub suite: String,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
    pub rounds: u32,
    pub verdict: Verdict,
    pub spec: Spec,
    pub tests: T,
    pub verdict_cut: Option<Cut>,
    pub ignored_results: Vec<Ignored>,
    pub batches: B,
    pub reports_error: Option<String>,
    pub flakiness: Option<Flakiness>,
    /// The tests that did not pass, by their last attempt's reason.
    #[serde(default)]
    pub reasons: Vec<ReasonCount>,
    /// An A/B run's comparison of its sides, id by id.
    #[serde(default)]
    pub comparison: Option<Comparison<C>>,
    /// A run of the cache network: the fleet's caches' traffic over its time.
    #[serde(default)]
    pub cache: Option<Cache>,
}

/// The fleet's package caches over a run's time, as they count it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cache {
    pub caches: Vec<CacheFigures>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheFigures {
    pub name: String,
    pub package_hits: u64,
    pub package_misses: u64,
    /// Of the packages served, the share the cache had, in percent.
    pub hit_percent: Option<f64>,
    pub index_requests: u64,
    pub bytes_served: u64,
    pub bytes_fetched: u64,
}

impl From<&message::CacheUse> for Cache {
    fn from(cache: &message::CacheUse) -> Self {
        Cache {
            caches: cache
                .caches
                .iter()
                .map(|c| CacheFigures {
                    name: c.name.clone(),
                    package_hits: c.package_hits,
                    package_misses: c.package_misses,
                    hit_percent: c.hit_percent(),
                    index_requests: c.index_requests,
                    bytes_served: c.bytes_served,
                    bytes_fetched: c.bytes_fetched,
                })
                .collect(),
            error: cache.error.clone(),
        }
    }
}

/// How an A/B run's ids compare, its baseline against its candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison<C = Vec<ComparedTest>> {
    pub baseline_image: String,
    pub confirm: u32,
    pub counts: ClassCounts,
    /// Every id, in the run's order.
    pub tests: C,
}

/// How many ids of each class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    pub regressed: usize,
    pub fixed: usize,
    pub flaky: usize,
    pub infra: usize,
    pub failing: usize,
    pub passing: usize,
}

/// One id: its class, and each side's attempts (their outputs are those of
/// `tests`, under `base::<id>` and `cand::<id>`, and are not repeated here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparedTest {
    pub id: String,
    pub class: Class,
    pub confirmed: bool,
    pub baseline: Vec<Attempt>,
    pub candidate: Vec<Attempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Regressed,
    Fixed,
    Flaky,
    Infra,
    Failing,
    Passing,
}

impl From<message::CompareClass> for Class {
    fn from(class: message::CompareClass) -> Self {
        match class {
            message::CompareClass::Regressed => Class::Regressed,
            message::CompareClass::Fixed => Class::Fixed,
            message::CompareClass::Flaky => Class::Flaky,
            message::CompareClass::Infra => Class::Infra,
            message::CompareClass::Failing => Class::Failing,
            message::CompareClass::Passing => Class::Passing,
        }
    }
}

impl ClassCounts {
    pub fn of(comparison: &message::Comparison) -> Self {
        let mut counts = ClassCounts::default();
        for test in &comparison.tests {
            *match test.class {
                message::CompareClass::Regressed => &mut counts.regressed,
                message::CompareClass::Fixed => &mut counts.fixed,
                message::CompareClass::Flaky => &mut counts.flaky,
                message::CompareClass::Infra => &mut counts.infra,
                message::CompareClass::Failing => &mut counts.failing,
                message::CompareClass::Passing => &mut counts.passing,
            } += 1;
        }
        counts
    }
}

impl ComparedTest {
    /// `test` with its sides' attempts (`None`: a side the report left
    /// out), outputs left out.
    pub fn of(
        test: &message::ComparedTest,
        baseline: Option<&message::TestReport>,
        candidate: Option<&message::TestReport>,
    ) -> Self {
        let attempts = |side: Option<&message::TestReport>| -> Vec<Attempt> {
            side.map(|t| t.attempts.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|a| Attempt {
                    output: None,
                    ..Attempt::from(a)
                })
                .collect()
        };
        ComparedTest {
            id: test.id.clone(),
            class: test.class.into(),
            confirmed: test.confirmed,
            baseline: attempts(baseline),
            candidate: attempts(candidate),
        }
    }
}

/// A reason, and the tests whose last attempt it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub fleet_fault: bool,
    pub tests: Vec<String>,
}

/// The suite's recent runs, as the aggregator knew them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flakiness {
    pub runs: u32,
    pub tests: Vec<TestFlakiness>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFlakiness {
    pub test_id: String,
    pub flaky: u32,
    pub failed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Passed,
    TestsFailed,
    TooManyFailures,
    TestsMissing,
}

/// The run's spec, secret values already hidden by the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub output_cap_bytes: u64,
    pub retry: Retry,
    pub container: Container,
    pub executor: Executor,
    pub workdir: Option<String>,
    pub container_mode: ContainerMode,
    pub warm_reuse: u32,
    pub runtime: Option<String>,
    pub runner_report: Option<RunnerReport>,
    pub user: Option<String>,
    pub secret_env: Vec<String>,
    #[serde(default)]
    pub quiet_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub threshold: f64,
    pub max_rounds: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub network: String,
    pub tmpfs: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub no_new_privileges: bool,
    pub cap_add: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    Docker,
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerMode {
    Fresh,
    Warm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReport {
    pub format: ReportFormat,
    pub ids: IdScheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportFormat {
    Junit,
    GoTestJson,
    RspecJson,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdScheme {
    Pytest,
    Nextest,
    Rspec,
    Go,
    Name,
}

/// One test: its final status and every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Test {
    pub id: String,
    pub status: TestStatus,
    pub attempts: Vec<Attempt>,
    /// Why it is quarantined, if it is.
    pub quarantined: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestStatus {
    Passed,
    Flaky,
    Failed,
    TimedOut,
    Error,
    Missing,
    DeadLettered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub status: AttemptStatus,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub worker_id: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub output: Option<String>,
    pub output_truncated: bool,
    pub message: Option<String>,
    pub published_at_ms: Option<u64>,
    pub batch: Option<Uuid>,
    /// Why it did not pass: `exit:N`, `signal:N`, `oom`, `host-oom`,
    /// `timeout`, `no-output-timeout`, `error`, `missing`, `dead-lettered`.
    #[serde(default)]
    pub reason: Option<String>,
    /// The reason is the fleet's doing, not the test's.
    #[serde(default)]
    pub fleet_fault: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptStatus {
    Ran(Outcome),
    Missing,
    DeadLettered { deliveries: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Passed,
    Failed,
    TimedOut,
    Error,
}

/// A result received and not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    pub test_id: String,
    pub attempt: u32,
    pub worker_id: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub reason: IgnoredReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgnoredReason {
    Duplicate,
    Stale,
}

/// What a producer's copy lacks, when the verdict message was cut to fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub outputs_shortened: u64,
    pub output_bytes_cut: u64,
    pub passed_tests_left_out: u64,
    pub full_report: String,
    pub batch_logs_left_out: u64,
}

/// One batch the run's tests ran in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: Uuid,
    pub run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    pub tests: u32,
    pub reported: u32,
    pub started_at_ms: u64,
    pub command_started_at_ms: u64,
    pub finished_at_ms: u64,
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub log: Option<String>,
    pub log_truncated: bool,
    pub split_into: u32,
}

impl<T, B, C> Report<T, B, C> {
    /// The document of `report`, with `tests`, `batches` and the
    /// comparison's tests (for an A/B run) as given.
    pub fn of(report: &message::RunReport, tests: T, batches: B, compared: Option<C>) -> Self {
        Report {
            schema: super::SCHEMA,
            run_id: report.run_id,
            suite: report.suite.clone(),
            created_at_ms: report.created_at_ms,
            finished_at_ms: report.finished_at_ms,
            rounds: report.rounds,
            verdict: report.verdict.into(),
            spec: (&report.spec).into(),
            tests,
            verdict_cut: report.verdict_cut.as_ref().map(Cut::from),
            ignored_results: report.ignored_results.iter().map(Ignored::from).collect(),
            batches,
            reports_error: report.reports_error.clone(),
            flakiness: report.flakiness.as_ref().map(Flakiness::from),
            reasons: crate::reasons::by_reason(report)
                .into_iter()
                .map(|group| ReasonCount {
                    reason: group.reason.name,
                    fleet_fault: group.reason.fleet_fault,
                    tests: group.tests.into_iter().map(str::to_owned).collect(),
                })
                .collect(),
            comparison: report
                .comparison
                .as_ref()
                .zip(compared)
                .map(|(comparison, tests)| Comparison {
                    baseline_image: comparison.baseline_image.clone(),
                    confirm: comparison.confirm,
                    counts: ClassCounts::of(comparison),
                    tests,
                }),
            cache: report.cache.as_ref().map(Cache::from),
        }
    }
}

impl From<message::VerdictKind> for Verdict {
    fn from(kind: message::VerdictKind) -> Self {
        match kind {
            message::VerdictKind::Passed => Verdict::Passed,
            message::VerdictKind::TestsFailed => Verdict::TestsFailed,
            message::VerdictKind::TooManyFailures => Verdict::TooManyFailures,
            message::VerdictKind::TestsMissing => Verdict::TestsMissing,
        }
    }
}

impl From<&message::RunSpec> for Spec {
    fn from(spec: &message::RunSpec) -> Self {
        let limits = &spec.container;
        Spec {
            image: spec.image.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            timeout_ms: spec.timeout_ms,
            output_cap_bytes: spec.output_cap_bytes,
            retry: Retry {
                threshold: spec.retry.threshold,
                max_rounds: spec.retry.max_rounds,
            },
            container: Container {
                network: limits.network.clone(),
                tmpfs: limits.tmpfs.clone(),
                memory_bytes: limits.memory_bytes,
                nano_cpus: limits.nano_cpus,
                pids_limit: limits.pids_limit,
                no_new_privileges: limits.no_new_privileges,
                cap_add: limits.cap_add.clone(),
            },
            executor: match spec.executor {
                message::ExecutorKind::Docker => Executor::Docker,
                message::ExecutorKind::Process => Executor::Process,
            },
            workdir: spec.workdir.clone(),
            container_mode: match spec.container_mode {
                message::ContainerMode::Fresh => ContainerMode::Fresh,
                message::ContainerMode::Warm => ContainerMode::Warm,
            },
            warm_reuse: spec.warm_reuse,
            runtime: spec.runtime.clone(),
            runner_report: spec.runner_report.map(RunnerReport::from),
            user: spec.user.clone(),
            secret_env: spec.secret_env.clone(),
            quiet_timeout_ms: spec.quiet_timeout_ms,
        }
    }
}

impl From<message::RunnerReport> for RunnerReport {
    fn from(report: message::RunnerReport) -> Self {
        RunnerReport {
            format: match report.format {
                message::ReportFormat::Junit => ReportFormat::Junit,
                message::ReportFormat::GoTestJson => ReportFormat::GoTestJson,
                message::ReportFormat::RspecJson => ReportFormat::RspecJson,
                message::ReportFormat::Jsonl => ReportFormat::Jsonl,
            },
            ids: match report.ids {
                message::IdScheme::Pytest => IdScheme::Pytest,
                message::IdScheme::Nextest => IdScheme::Nextest,
                message::IdScheme::Rspec => IdScheme::Rspec,
                message::IdScheme::Go => IdScheme::Go,
                message::IdScheme::Name => IdScheme::Name,
            },
        }
    }
}

impl From<&message::TestReport> for Test {
    fn from(test: &message::TestReport) -> Self {
        Test {
            id: test.id.clone(),
            status: test.status.into(),
            attempts: test.attempts.iter().map(Attempt::from).collect(),
            quarantined: test.quarantined.clone(),
        }
    }
}

impl From<message::FinalStatus> for TestStatus {
    fn from(status: message::FinalStatus) -> Self {
        match status {
            message::FinalStatus::Passed => TestStatus::Passed,
            message::FinalStatus::Flaky => TestStatus::Flaky,
            message::FinalStatus::Failed => TestStatus::Failed,
            message::FinalStatus::TimedOut => TestStatus::TimedOut,
            message::FinalStatus::Error => TestStatus::Error,
            message::FinalStatus::Missing => TestStatus::Missing,
            message::FinalStatus::DeadLettered => TestStatus::DeadLettered,
        }
    }
}

impl From<&message::AttemptReport> for Attempt {
    fn from(attempt: &message::AttemptReport) -> Self {
        let reason = crate::reasons::reason_of_attempt(attempt);
        Attempt {
            fleet_fault: reason.as_ref().is_some_and(|r| r.fleet_fault),
            reason: reason.map(|r| r.name),
            attempt: attempt.attempt,
            status: attempt.status.into(),
            exit_code: attempt.exit_code,
            duration_ms: attempt.duration_ms,
            worker_id: attempt.worker_id.clone(),
            started_at_ms: attempt.started_at_ms,
            finished_at_ms: attempt.finished_at_ms,
            output: attempt.output.clone(),
            output_truncated: attempt.output_truncated,
            message: attempt.message.clone(),
            published_at_ms: attempt.published_at_ms,
            batch: attempt.batch,
        }
    }
}

impl From<message::AttemptStatus> for AttemptStatus {
    fn from(status: message::AttemptStatus) -> Self {
        match status {
            message::AttemptStatus::Ran(outcome) => AttemptStatus::Ran(outcome.into()),
            message::AttemptStatus::Missing => AttemptStatus::Missing,
            message::AttemptStatus::DeadLettered { deliveries } => {
                AttemptStatus::DeadLettered { deliveries }
            }
        }
    }
}

impl From<message::Outcome> for Outcome {
    fn from(outcome: message::Outcome) -> Self {
        match outcome {
            message::Outcome::Passed => Outcome::Passed,
            message::Outcome::Failed => Outcome::Failed,
            message::Outcome::TimedOut => Outcome::TimedOut,
            message::Outcome::Error => Outcome::Error,
        }
    }
}

impl From<&message::IgnoredResult> for Ignored {
    fn from(ignored: &message::IgnoredResult) -> Self {
        Ignored {
            test_id: ignored.test_id.clone(),
            attempt: ignored.attempt,
            worker_id: ignored.worker_id.clone(),
            started_at_ms: ignored.started_at_ms,
            finished_at_ms: ignored.finished_at_ms,
            reason: match ignored.reason {
                message::IgnoredReason::Duplicate => IgnoredReason::Duplicate,
                message::IgnoredReason::Stale => IgnoredReason::Stale,
            },
        }
    }
}

impl From<&message::VerdictCut> for Cut {
    fn from(cut: &message::VerdictCut) -> Self {
        Cut {
            outputs_shortened: cut.outputs_shortened,
            output_bytes_cut: cut.output_bytes_cut,
            passed_tests_left_out: cut.passed_tests_left_out,
            full_report: cut.full_report.clone(),
            batch_logs_left_out: cut.batch_logs_left_out,
        }
    }
}

impl From<&message::Flakiness> for Flakiness {
    fn from(flakiness: &message::Flakiness) -> Self {
        Flakiness {
            runs: flakiness.runs,
            tests: flakiness
                .tests
                .iter()
                .map(|test| TestFlakiness {
                    test_id: test.test_id.clone(),
                    flaky: test.flaky,
                    failed: test.failed,
                })
                .collect(),
        }
    }
}

impl From<&message::BatchRecord> for Batch {
    fn from(batch: &message::BatchRecord) -> Self {
        Batch {
            id: batch.id,
            run_id: batch.run_id,
            attempt: batch.attempt,
            worker_id: batch.worker_id.clone(),
            tests: batch.tests,
            reported: batch.reported,
            started_at_ms: batch.started_at_ms,
            command_started_at_ms: batch.command_started_at_ms,
            finished_at_ms: batch.finished_at_ms,
            exit_code: batch.exit_code,
            timed_out: batch.timed_out,
            log: batch.log.clone(),
            log_truncated: batch.log_truncated,
            split_into: batch.split_into,
        }
    }
}
