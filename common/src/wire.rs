//! The messages that cross the broker, and their MessagePack codec.
//!
//! Every message is an [`Envelope`]: a format version and one [`Body`]. A reader
//! checks the version before it looks at the body, so a message from a newer or
//! older testfleet is refused with a clear reason instead of being half-read.
//! No `untagged` or `flatten` here: they let mismatched peers decode garbage
//! silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bumped whenever a wire type changes incompatibly: 2 made a job carry
/// several tests (a batch).
pub const FORMAT_VERSION: u16 = 2;

/// What a test's container did, as seen by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The command exited 0.
    Passed,
    /// The command exited non-zero.
    Failed,
    /// The per-test timeout killed the container.
    TimedOut,
    /// The infrastructure failed (image missing, engine error): not the test's fault.
    Error,
}

impl Outcome {
    /// Classifies a finished container by its exit code.
    pub fn from_exit_code(code: i64) -> Self {
        if code == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Error => "error",
        }
    }
}

/// The aggregator's retry rule for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retry only while (failed + missing) / tests ≤ this ratio.
    pub threshold: f64,
    /// Rounds in all, the first included.
    pub max_rounds: u32,
}

/// How the worker confines a test's container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerLimits {
    /// Docker network mode (`none`, `host`, `bridge`, …).
    pub network: String,
    /// tmpfs mounts as `path` or `path:options`.
    pub tmpfs: Vec<String>,
    pub memory_bytes: Option<i64>,
    /// CPU quota in units of 10⁻⁹ CPUs, as Docker's `NanoCpus`.
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Docker's `no-new-privileges`: setuid binaries gain nothing. Appended
    /// with a default (on), so an older producer's job stays hardened.
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    /// Capabilities given back to the container, which drops every other
    /// one. Appended with a default (none), as `no_new_privileges`.
    #[serde(default)]
    pub cap_add: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Where a worker runs a test's command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// In a fresh container from `RunSpec::image`.
    #[default]
    Docker,
    /// As a child process on the worker's host, in its own process group.
    Process,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::Process => "process",
        }
    }
}

/// Everything a worker needs to run any test of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub image: String,
    /// argv; `{id}` inside an element is replaced by the test id. Never a shell line.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub output_cap_bytes: u64,
    pub retry: RetryPolicy,
    pub container: ContainerLimits,
    /// Added after version 1 shipped: a spec without it means Docker, so the
    /// field is appended with a default rather than bumping the format version.
    #[serde(default)]
    pub executor: ExecutorKind,
    /// Working directory of a process job; `None` is the worker's own.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Docker jobs: a fresh container per test, or an `exec` in a kept one.
    /// Appended with a default (fresh), like `executor`.
    #[serde(default)]
    pub container_mode: ContainerMode,
    /// Warm mode: tests run in one container before it is replaced.
    #[serde(default = "default_warm_reuse")]
    pub warm_reuse: u32,
    /// Docker jobs: the OCI runtime the engine starts containers with, by the
    /// name the engine registered it under (`crun`, `runc`); `None` is the
    /// engine's default. Appended with a default, like `executor`.
    #[serde(default)]
    pub runtime: Option<String>,
    /// The machine-readable report the command writes at `{report}`, read
    /// back for per-test results; `None`: a job's outcome is its exit code.
    #[serde(default)]
    pub runner_report: Option<RunnerReport>,
    /// Docker jobs: the user the command runs as (`1000`, `1000:1000`, a
    /// name the image knows); `None` is the image's own. Appended with a
    /// default, like `executor`.
    #[serde(default)]
    pub user: Option<String>,
    /// Names of `env` variables whose values are secret: they reach the
    /// test, and no report, verdict or event. Appended with a default.
    #[serde(default)]
    pub secret_env: Vec<String>,
}

/// What a report shows of a secret variable's value.
pub const SECRET_SHOWN_AS: &str = "<secret>";

impl RunSpec {
    /// The spec as reports show it: the values of `secret_env` variables
    /// replaced by [`SECRET_SHOWN_AS`].
    pub fn redacted(&self) -> RunSpec {
        let mut spec = self.clone();
        for (key, value) in spec.env.iter_mut() {
            if self.secret_env.iter().any(|secret| secret == key) {
                *value = SECRET_SHOWN_AS.to_owned();
            }
        }
        spec
    }

    /// Whether the command writes a runner's report at `{report}`.
    pub fn writes_report(&self) -> bool {
        self.command.iter().any(|a| a.contains("{report}"))
    }

    /// Whether the command takes several tests (`{ids}`, `{ids_file}`,
    /// `{ids_regex}`): a batched command.
    pub fn takes_several_ids(&self) -> bool {
        self.command
            .iter()
            .any(|a| a == "{ids}" || a.contains("{ids_file}") || a.contains("{ids_regex}"))
    }
}

/// A test runner's report of a batch, and how its entries name the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReport {
    pub format: ReportFormat,
    pub ids: IdScheme,
}

/// The formats of runner reports testfleet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportFormat {
    /// JUnit XML: pytest `--junitxml`, nextest, RSpec's JUnit formatter,
    /// gotestsum, jest-junit.
    Junit,
    /// `go test -json`.
    GoTestJson,
    /// RSpec's `--format json`.
    RspecJson,
}

/// How a runner's report names a listed id (see the worker's `runner_report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdScheme {
    /// pytest node ids: `path.py::Class::name[params]`.
    Pytest,
    /// nextest ids: `<binary-id> <test name>`.
    Nextest,
    /// RSpec example ids: `./spec/a_spec.rb[1:2]`.
    Rspec,
    /// go test names: `TestX`.
    Go,
    /// The report's test name, or `classname::name`, or `classname.name`.
    Name,
}

fn default_warm_reuse() -> u32 {
    50
}

/// How Docker jobs get their container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerMode {
    /// A fresh container per test: full isolation between tests.
    #[default]
    Fresh,
    /// One long-lived container per worker slot and run, each test an `exec` in
    /// it; replaced after a test that does not pass and after `warm_reuse`
    /// tests. Weaker isolation: a test sees what earlier ones left behind.
    Warm,
}

/// Tells the aggregator that a run exists and which tests it expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunAnnounce {
    pub run_id: Uuid,
    /// A human name for the suite (reports, history keys).
    pub suite: String,
    pub created_at_ms: u64,
    /// Unix time after which the run ends with whatever it has.
    pub deadline_ms: u64,
    pub spec: RunSpec,
    pub tests: Vec<String>,
    /// A secret of the producer's, which the aggregator puts on the run's
    /// verdict (`broker::VERDICT_TOKEN_HEADER`), so that a waiting producer
    /// takes a verdict from the aggregator alone: jobs, reports and events
    /// never carry it. Appended with a default.
    #[serde(default)]
    pub verdict_token: Option<Uuid>,
}

/// One attempt at one test, or at a batch of tests sharing a container and a
/// runner start; each test of a batch keeps its own result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub run_id: Uuid,
    /// In running order; one for a test alone.
    pub tests: Vec<JobTest>,
    /// 1 for the first round, 2 for its first retry, … (every test of a batch
    /// is in the same round).
    pub attempt: u32,
    pub deadline_ms: u64,
    pub spec: RunSpec,
    /// Unix ms when the producer (or the aggregator, for a retry) published the
    /// job; 0 from older senders. Appended with a default, as `RunSpec::executor`.
    #[serde(default)]
    pub published_at_ms: u64,
}

/// A test of a job, with the time it is allowed in a batch (`crate::batch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTest {
    pub id: String,
    pub allowance_ms: u64,
}

impl Job {
    /// The job of one test alone, as every job was before batches.
    pub fn single(
        run_id: Uuid,
        test_id: String,
        attempt: u32,
        deadline_ms: u64,
        spec: RunSpec,
    ) -> Job {
        let allowance_ms = spec.timeout_ms;
        Job {
            run_id,
            tests: vec![JobTest {
                id: test_id,
                allowance_ms,
            }],
            attempt,
            deadline_ms,
            spec,
            published_at_ms: 0,
        }
    }

    /// The job's ids, in running order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = &str> {
        self.tests.iter().map(|t| t.id.as_str())
    }

    /// How long the whole job may run: the per-test timeout for a test alone,
    /// else the batch rule of `crate::batch`.
    pub fn timeout_ms(&self) -> u64 {
        crate::batch::batch_timeout_ms(
            self.tests.iter().map(|t| t.allowance_ms),
            self.spec.timeout_ms,
        )
    }

    /// A short name for logs: the test, or the first test and how many more.
    pub fn label(&self) -> String {
        match self.tests.as_slice() {
            [only] => only.id.clone(),
            [first, rest @ ..] => format!("{} (+{} more)", first.id, rest.len()),
            [] => "(no tests)".into(),
        }
    }
}

/// What a worker observed running one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub run_id: Uuid,
    pub test_id: String,
    pub attempt: u32,
    pub outcome: Outcome,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub worker_id: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// stdout and stderr interleaved, lossily UTF-8, capped (see `output_truncated`).
    pub output: String,
    pub output_truncated: bool,
    /// Why an `Error` happened, or other worker remarks.
    pub message: Option<String>,
    /// The job's `published_at_ms`, so that publish-to-start latency can be
    /// read off results and reports; 0 when unknown.
    #[serde(default)]
    pub published_at_ms: u64,
    /// The batch this test ran in (see [`BatchRecord`]), if its job held
    /// several tests or read a runner report.
    #[serde(default)]
    pub batch: Option<Uuid>,
}

/// One run of a job's command over its tests, as the worker saw it: when it
/// started, when the runner started (the fixed cost before it: a container
/// created and started), when it ended, and its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: Uuid,
    pub run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    /// Tests the job held.
    pub tests: u32,
    /// Tests the runner's report covered; the rest ran again, split.
    pub reported: u32,
    pub started_at_ms: u64,
    /// When the command started: the container created and started, or the
    /// process spawned.
    pub command_started_at_ms: u64,
    pub finished_at_ms: u64,
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// The command's whole output (capped), kept when a test of the batch did
    /// not pass or was not reported.
    pub log: Option<String>,
    pub log_truncated: bool,
    /// Jobs its unreported tests were split into (0, 1 or 2).
    pub split_into: u32,
}

/// How one attempt ended, as the aggregator records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptStatus {
    Ran(Outcome),
    /// No result before the run's deadline.
    Missing,
    /// The broker gave up on the job after this many deliveries.
    DeadLettered {
        deliveries: u32,
    },
}

/// Where a test stands once its run has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FinalStatus {
    Passed,
    /// Failed at least once, then passed.
    Flaky,
    Failed,
    TimedOut,
    Error,
    Missing,
    DeadLettered,
}

impl FinalStatus {
    pub fn is_pass(self) -> bool {
        matches!(self, FinalStatus::Passed | FinalStatus::Flaky)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Passed => "passed",
            FinalStatus::Flaky => "flaky",
            FinalStatus::Failed => "failed",
            FinalStatus::TimedOut => "timed out",
            FinalStatus::Error => "error",
            FinalStatus::Missing => "missing",
            FinalStatus::DeadLettered => "dead-lettered",
        }
    }
}

/// Why a run ended the way it did; each maps to its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerdictKind {
    /// Every test passed, possibly after retries.
    Passed,
    /// Some tests still fail after the retries the policy allowed.
    TestsFailed,
    /// Failures exceeded the retry threshold, so they were not retried.
    TooManyFailures,
    /// The deadline passed with tests that never reported.
    TestsMissing,
}

impl VerdictKind {
    /// The process exit code documented in the README.
    pub fn exit_code(self) -> i32 {
        match self {
            VerdictKind::Passed => 0,
            VerdictKind::TestsFailed => 1,
            VerdictKind::TooManyFailures => 3,
            VerdictKind::TestsMissing => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Passed => "passed",
            VerdictKind::TestsFailed => "tests failed",
            VerdictKind::TooManyFailures => "too many failures to retry",
            VerdictKind::TestsMissing => "tests missing at the deadline",
        }
    }
}

/// One attempt as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub attempt: u32,
    pub status: AttemptStatus,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub worker_id: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Kept for attempts that did not pass.
    pub output: Option<String>,
    pub output_truncated: bool,
    pub message: Option<String>,
    /// When the attempt's job was published (see `Job::published_at_ms`).
    #[serde(default)]
    pub published_at_ms: Option<u64>,
    /// The batch it ran in (`RunReport::batches`).
    #[serde(default)]
    pub batch: Option<Uuid>,
}

/// One test as reported: its final status and every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    pub id: String,
    pub status: FinalStatus,
    pub attempts: Vec<AttemptReport>,
}

/// Everything known about a finished run; the aggregator publishes it as the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: Uuid,
    pub suite: String,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
    pub rounds: u32,
    pub verdict: VerdictKind,
    pub spec: RunSpec,
    /// In the order the run listed them.
    pub tests: Vec<TestReport>,
    /// What the aggregator left out of this copy to keep the verdict message
    /// within its bound; `None` in the aggregator's own reports and whenever
    /// nothing was cut. Appended with a default, as `RunSpec::executor`.
    #[serde(default)]
    pub verdict_cut: Option<VerdictCut>,
    /// Results the aggregator received but did not count (the first 1,000):
    /// a second result for an attempt already counted (at-least-once: a job
    /// redelivered after its result went out but before its ack), or one for
    /// a round already closed. Kept in memory only, so a restarted aggregator
    /// knows those it saw since. Appended with a default.
    #[serde(default)]
    pub ignored_results: Vec<IgnoredResult>,
    /// Every batch the run's tests ran in (the first 100,000), in the order
    /// they reached the aggregator.
    #[serde(default)]
    pub batches: Vec<BatchRecord>,
    /// Why the aggregator could not write its own reports of the run (a full
    /// disk, say), when it could not: the verdict is then the only copy.
    /// Appended with a default.
    #[serde(default)]
    pub reports_error: Option<String>,
}

/// A result the aggregator did not count, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredResult {
    pub test_id: String,
    pub attempt: u32,
    pub worker_id: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub reason: IgnoredReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgnoredReason {
    /// The attempt already had an outcome.
    Duplicate,
    /// Its round had closed, or the run has no such test.
    Stale,
}

/// What a verdict's copy of the report lacks, and where the whole one is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCut {
    /// Attempts whose output was shortened (head and tail kept) or dropped.
    pub outputs_shortened: u64,
    /// Output bytes left out in all.
    pub output_bytes_cut: u64,
    /// Passed tests left out of `tests` altogether (only for huge runs).
    pub passed_tests_left_out: u64,
    /// Where the aggregator wrote the full reports: host and folder.
    pub full_report: String,
    /// Batch logs left out (the aggregator's `outputs/batches/` has them).
    #[serde(default)]
    pub batch_logs_left_out: u64,
}

impl RunReport {
    /// Tests with the given final status, in run order.
    pub fn with_status(&self, status: FinalStatus) -> impl Iterator<Item = &TestReport> {
        self.tests.iter().filter(move |t| t.status == status)
    }

    pub fn count(&self, status: FinalStatus) -> usize {
        self.with_status(status).count()
    }
}

/// A producer asks the aggregator how long a suite's tests took before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub suite: String,
}

/// The aggregator's answer: the average duration of each test of a suite it has
/// seen finish, in milliseconds, and what a batch of it costs beyond its
/// tests (container and runner start-up), once a batch has run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub suite: String,
    pub durations_ms: Vec<(String, u64)>,
    #[serde(default)]
    pub batch_overhead_ms: Option<u64>,
}

/// The payload of an [`Envelope`]. New variants go at the end.
/// How many tests of one round ended which way, when the round closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundCounts {
    pub passed: u32,
    pub failed: u32,
    pub timed_out: u32,
    pub error: u32,
    pub missing: u32,
    pub dead_lettered: u32,
}

impl RoundCounts {
    /// Every attempt counted, whatever its status.
    pub fn total(&self) -> u64 {
        [
            self.passed,
            self.failed,
            self.timed_out,
            self.error,
            self.missing,
            self.dead_lettered,
        ]
        .iter()
        .map(|&n| u64::from(n))
        .sum()
    }

    /// Counts one attempt's status.
    pub fn add(&mut self, status: AttemptStatus) {
        let slot = match status {
            AttemptStatus::Ran(Outcome::Passed) => &mut self.passed,
            AttemptStatus::Ran(Outcome::Failed) => &mut self.failed,
            AttemptStatus::Ran(Outcome::TimedOut) => &mut self.timed_out,
            AttemptStatus::Ran(Outcome::Error) => &mut self.error,
            AttemptStatus::Missing => &mut self.missing,
            AttemptStatus::DeadLettered { .. } => &mut self.dead_lettered,
        };
        *slot = slot.saturating_add(1);
    }
}

/// What happened in a run, for whoever follows it live (`--wait`, `--events`).
///
/// Events are best-effort information: published without confirms, they may be
/// lost (a broker restart, a crash) or repeated (a re-executed job starts twice).
/// The verdict ([`Body::Report`]) is the reliable path; nothing decides on events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub run_id: Uuid,
    /// When the publisher saw it happen, Unix milliseconds.
    pub at_ms: u64,
    pub kind: RunEventKind,
}

/// The kinds of [`RunEvent`]; who publishes each is said on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunEventKind {
    /// A worker started an attempt (published by the worker).
    TestStarted {
        test_id: String,
        attempt: u32,
        worker_id: String,
    },
    /// The aggregator counted an attempt's outcome (a result, a dead-lettered
    /// job, or a test found missing when its round closed).
    TestFinished {
        test_id: String,
        attempt: u32,
        status: AttemptStatus,
        duration_ms: u64,
        exit_code: Option<i64>,
        worker_id: Option<String>,
    },
    /// The aggregator queued the test again; `attempt` is the new attempt, which
    /// is also the new round.
    TestRetried { test_id: String, attempt: u32 },
    /// The aggregator closed a round: its counts, and how many tests run again.
    RoundClosed {
        round: u32,
        counts: RoundCounts,
        retrying: u32,
    },
}

/// The payload of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Run(RunAnnounce),
    Job(Job),
    Result(TestResult),
    Report(RunReport),
    HistoryQuery(HistoryQuery),
    History(History),
    /// Added in format version 1 without a bump: readers that predate it never
    /// receive one, since events go only to queues bound to their routing key.
    Event(RunEvent),
    /// Several results in one message, as a worker sends them under load: one
    /// publish, one confirm and one delivery instead of one per test. Added in
    /// format version 1 without a bump, so an aggregator of this build still
    /// reads an older worker's single `Result`; an older aggregator parks a
    /// batch as malformed (logged), so aggregators are upgraded first.
    Results(Vec<TestResult>),
    /// Results of batches: each batch's record and its tests' results.
    Batches(Batches),
    /// A producer asks a worker to list a suite's tests inside the run's
    /// image (on the jobs queue, answered through its reply-to).
    Discover(Discover),
    /// A worker's answer to a [`Discover`].
    Listing(Listing),
    /// Several events of one run in one message; as `Results`, added without a
    /// bump (an older producer parks a batch and loses only progress).
    Events(Vec<RunEvent>),
    /// One piece of a message too big to travel whole (see `crate::parts`).
    /// Added without a bump, as `Results`: only a receiver that asked for a
    /// parted message (a waiting producer, the aggregator) gets one.
    Part(Part),
}

/// Run the spec's command (which writes the listing at `{report}`) where
/// the run's tests would run, and answer with what it listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discover {
    pub request_id: Uuid,
    pub spec: RunSpec,
    /// Unix ms after which nobody waits for the answer.
    pub deadline_ms: u64,
    /// The image id of a listing the producer kept: when the worker's engine
    /// has that same id, it answers `unchanged` instead of listing again.
    #[serde(default)]
    pub known_image_id: Option<String>,
}

/// What a discovery listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub request_id: Uuid,
    /// How the listing command ended (its exit code, or why it did not run).
    pub outcome: Outcome,
    pub exit_code: Option<i64>,
    /// What the command wrote at `{report}`.
    pub listing: String,
    /// Its own output (what it said on failure), capped.
    pub output: String,
    pub message: Option<String>,
    /// The image's id on the worker's engine, when known.
    pub image_id: Option<String>,
    /// Answered from the worker's listing of the same image id and command.
    pub cached: bool,
    /// The image is the one of `Discover::known_image_id`: the producer's own
    /// listing stands, and `listing` is empty.
    #[serde(default)]
    pub unchanged: bool,
}

/// Batch records and the results of their tests (and of tests run alone),
/// as a worker sends them: one message per group commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batches {
    pub batches: Vec<BatchRecord>,
    pub results: Vec<TestResult>,
}

/// One of `count` pieces of an encoded message bigger than
/// [`crate::limits::MAX_MESSAGE_BYTES`]; the receiver joins them in `index`
/// order and decodes the whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Shared by every part of one message.
    pub message_id: Uuid,
    pub index: u32,
    pub count: u32,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Run(_) => "run",
            Body::Job(_) => "job",
            Body::Result(_) => "result",
            Body::Report(_) => "report",
            Body::HistoryQuery(_) => "history query",
            Body::History(_) => "history",
            Body::Event(_) => "event",
            Body::Results(_) => "results",
            Body::Events(_) => "events",
            Body::Part(_) => "part",
            Body::Batches(_) => "batches",
            Body::Discover(_) => "discover",
            Body::Listing(_) => "listing",
        }
    }
}

/// A versioned message, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub body: Body,
}

/// Why bytes from the broker are not a message we can use.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a testfleet message: {0}")]
    Malformed(String),
    #[error("message format version {found}, this build reads version {expected}")]
    WrongVersion { found: u16, expected: u16 },
    #[error(
        "expected a {expected} message, got {} {found} message",
        article(found)
    )]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    /// Readable, but a value is out of the bounds `crate::limits` keeps.
    #[error("a {kind} message out of bounds: {reason}")]
    OutOfBounds { kind: &'static str, reason: String },
}

/// Serializes a body into its wire form.
pub fn encode(body: &Body) -> Vec<u8> {
    #[derive(Serialize)]
    struct EnvelopeRef<'a> {
        version: u16,
        body: &'a Body,
    }
    rmp_serde::to_vec(&EnvelopeRef {
        version: FORMAT_VERSION,
        body,
    })
    .expect("wire types always serialize")
}

/// Parses bytes into a body, checking the format version first and every
/// value against its bounds (`limits::check`).
pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
    let body = decode_unchecked(bytes)?;
    crate::limits::check(&body).map_err(|reason| WireError::OutOfBounds {
        kind: body.kind(),
        reason,
    })?;
    Ok(body)
}

/// Parses bytes into a body, checking the format version first, not yet
/// the values.
fn decode_unchecked(bytes: &[u8]) -> Result<Body, WireError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u16,
        #[allow(dead_code)]
        body: serde::de::IgnoredAny,
    }
    let head: VersionOnly =
        rmp_serde::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if head.version != FORMAT_VERSION {
        return Err(WireError::WrongVersion {
            found: head.version,
            expected: FORMAT_VERSION,
        });
    }
    let envelope: Envelope =
        rmp_serde::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok(envelope.body)
}

/// A message's parts refused for their values, each as a body of its own
/// with the reason, for the parked queue.
pub type Refused = Vec<(Body, String)>;

/// Parses bytes into a body as [`decode`] does, except that results and
/// batch records out of bounds are taken out of a worker's `Results` or
/// `Batches` (`limits::sort_out`) rather than refusing the whole message.
pub fn decode_sorting(bytes: &[u8]) -> Result<(Body, Refused), WireError> {
    let body = decode_unchecked(bytes)?;
    let (body, refused) = crate::limits::sort_out(body);
    crate::limits::check(&body).map_err(|reason| WireError::OutOfBounds {
        kind: body.kind(),
        reason,
    })?;
    Ok((body, refused))
}

/// Decodes a message that must be a job.
pub fn decode_job(bytes: &[u8]) -> Result<Job, WireError> {
    match decode(bytes)? {
        Body::Job(job) => Ok(job),
        other => Err(wrong_kind("job", &other)),
    }
}

/// Decodes a message that must be a suite's history.
pub fn decode_history(bytes: &[u8]) -> Result<History, WireError> {
    match decode(bytes)? {
        Body::History(history) => Ok(history),
        other => Err(wrong_kind("history", &other)),
    }
}

/// Decodes a message that must be a run report.
pub fn decode_report(bytes: &[u8]) -> Result<RunReport, WireError> {
    match decode(bytes)? {
        Body::Report(report) => Ok(report),
        other => Err(wrong_kind("report", &other)),
    }
}

/// "a" or "an", so that "an event message" reads right.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn wrong_kind(expected: &'static str, found: &Body) -> WireError {
    WireError::WrongKind {
        expected,
        found: found.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default spec, with an environment so that maps are exercised too.
    fn sample_spec() -> RunSpec {
        let mut spec = crate::config::default_spec();
        spec.env = BTreeMap::from([("A".into(), "b".into())]);
        spec.executor = ExecutorKind::Process;
        spec.workdir = Some("/srv/suite".into());
        spec.container_mode = ContainerMode::Warm;
        spec.warm_reuse = 3;
        spec
    }

    fn sample_bodies() -> Vec<Body> {
        let run_id = Uuid::new_v4();
        let result = TestResult {
            run_id,
            test_id: "a b;$(rm)".into(),
            attempt: 2,
            outcome: Outcome::TimedOut,
            exit_code: Some(137),
            duration_ms: 10,
            worker_id: "w1".into(),
            started_at_ms: 1,
            finished_at_ms: 11,
            output: "héllo\n".into(),
            output_truncated: true,
            message: None,
            published_at_ms: 1,
            batch: Some(Uuid::nil()),
        };
        let batch = BatchRecord {
            id: Uuid::nil(),
            run_id,
            attempt: 2,
            worker_id: "w1".into(),
            tests: 3,
            reported: 1,
            started_at_ms: 1,
            command_started_at_ms: 5,
            finished_at_ms: 11,
            exit_code: Some(1),
            timed_out: false,
            log: Some("log".into()),
            log_truncated: false,
            split_into: 2,
        };
        vec![
            Body::Run(RunAnnounce {
                run_id,
                suite: "s".into(),
                created_at_ms: 1,
                deadline_ms: 2,
                spec: sample_spec(),
                tests: vec!["t1".into(), "t2".into()],
                verdict_token: Some(Uuid::nil()),
            }),
            Body::Job(Job {
                run_id,
                tests: vec![
                    JobTest {
                        id: "t1".into(),
                        allowance_ms: 5,
                    },
                    JobTest {
                        id: "t2".into(),
                        allowance_ms: 7,
                    },
                ],
                attempt: 1,
                deadline_ms: 2,
                spec: sample_spec(),
                published_at_ms: 1,
            }),
            Body::Result(result.clone()),
            Body::Results(vec![result.clone(), result.clone()]),
            Body::Batches(Batches {
                batches: vec![batch.clone()],
                results: vec![result],
            }),
            Body::HistoryQuery(HistoryQuery { suite: "s".into() }),
            Body::History(History {
                suite: "s".into(),
                durations_ms: vec![("t1".into(), 1500), ("a b;$(rm)".into(), 0)],
                batch_overhead_ms: Some(900),
            }),
            Body::Report(RunReport {
                run_id,
                suite: "s".into(),
                created_at_ms: 1,
                finished_at_ms: 3,
                rounds: 2,
                verdict: VerdictKind::TestsMissing,
                spec: sample_spec(),
                tests: vec![TestReport {
                    id: "t1".into(),
                    status: FinalStatus::DeadLettered,
                    attempts: vec![AttemptReport {
                        attempt: 1,
                        status: AttemptStatus::DeadLettered { deliveries: 5 },
                        exit_code: None,
                        duration_ms: 0,
                        worker_id: None,
                        started_at_ms: None,
                        finished_at_ms: None,
                        output: None,
                        output_truncated: false,
                        message: Some("x".into()),
                        published_at_ms: None,
                        batch: None,
                    }],
                }],
                verdict_cut: Some(VerdictCut {
                    outputs_shortened: 1,
                    output_bytes_cut: 2,
                    passed_tests_left_out: 3,
                    full_report: "host:/reports/x".into(),
                    batch_logs_left_out: 4,
                }),
                ignored_results: vec![IgnoredResult {
                    test_id: "t1".into(),
                    attempt: 1,
                    worker_id: "w".into(),
                    started_at_ms: 1,
                    finished_at_ms: 2,
                    reason: IgnoredReason::Duplicate,
                }],
                batches: vec![batch],
                reports_error: Some("disk full".into()),
            }),
        ]
        .into_iter()
        .chain(sample_events(run_id).into_iter().map(Body::Event))
        .chain([Body::Events(sample_events(run_id))])
        .collect()
    }

    fn sample_events(run_id: Uuid) -> Vec<RunEvent> {
        let kinds = vec![
            RunEventKind::TestStarted {
                test_id: "t1".into(),
                attempt: 1,
                worker_id: "w1".into(),
            },
            RunEventKind::TestFinished {
                test_id: "t1".into(),
                attempt: 1,
                status: AttemptStatus::DeadLettered { deliveries: 5 },
                duration_ms: 0,
                exit_code: None,
                worker_id: None,
            },
            RunEventKind::TestFinished {
                test_id: "t2".into(),
                attempt: 2,
                status: AttemptStatus::Ran(Outcome::Failed),
                duration_ms: 12,
                exit_code: Some(3),
                worker_id: Some("w2".into()),
            },
            RunEventKind::TestRetried {
                test_id: "t1".into(),
                attempt: 2,
            },
            RunEventKind::RoundClosed {
                round: 1,
                counts: RoundCounts {
                    passed: 1,
                    dead_lettered: 1,
                    ..RoundCounts::default()
                },
                retrying: 1,
            },
        ];
        kinds
            .into_iter()
            .map(|kind| RunEvent {
                run_id,
                at_ms: 42,
                kind,
            })
            .collect()
    }

    #[test]
    fn every_body_round_trips() {
        for body in sample_bodies() {
            let bytes = encode(&body);
            assert_eq!(decode(&bytes).unwrap(), body, "{}", body.kind());
        }
    }

    /// A job of one test alone keeps the per-test timeout; a batch gets
    /// the batch rule's.
    #[test]
    fn a_jobs_timeout_follows_its_tests() {
        let spec = crate::config::default_spec();
        let alone = Job::single(Uuid::nil(), "t".into(), 1, 9, spec.clone());
        assert_eq!(alone.timeout_ms(), spec.timeout_ms);
        assert_eq!(alone.label(), "t");
        let batch = Job {
            tests: vec![
                JobTest {
                    id: "a".into(),
                    allowance_ms: 1_000,
                },
                JobTest {
                    id: "b".into(),
                    allowance_ms: 2_000,
                },
            ],
            ..alone
        };
        assert_eq!(batch.timeout_ms(), crate::batch::BATCH_STARTUP_MS + 3_000);
        assert_eq!(batch.label(), "a (+1 more)");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            decode(b"\xff\x00garbage"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(decode(b""), Err(WireError::Malformed(_))));
    }

    #[test]
    fn other_version_is_refused_before_the_body_is_read() {
        #[derive(Serialize)]
        struct Future {
            version: u16,
            body: &'static str,
        }
        let bytes = rmp_serde::to_vec(&Future {
            version: FORMAT_VERSION + 1,
            body: "something new",
        })
        .unwrap();
        match decode(&bytes) {
            Err(WireError::WrongVersion { found, expected }) => {
                assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION))
            }
            other => panic!("expected a version error, got {other:?}"),
        }
    }

    #[test]
    fn a_result_is_not_a_job() {
        let result = sample_bodies().remove(2);
        assert!(matches!(result, Body::Result(_)));
        let err = decode_job(&encode(&result)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a job message, got a result message"
        );
    }

    #[test]
    fn an_event_is_not_a_report() {
        let event = Body::Event(sample_events(Uuid::nil()).remove(0));
        let err = decode_report(&encode(&event)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a report message, got an event message"
        );
    }

    /// What a reader that predates a body kind sees: a malformed message (which
    /// the services park or skip), not a wrong version and not a panic. This is
    /// why adding a `Body` variant needs no version bump.
    #[test]
    fn an_unknown_body_kind_is_malformed_under_the_same_version() {
        #[derive(Serialize)]
        enum NewerBody {
            Hologram(u32),
        }
        #[derive(Serialize)]
        struct NewerEnvelope {
            version: u16,
            body: NewerBody,
        }
        let bytes = rmp_serde::to_vec(&NewerEnvelope {
            version: FORMAT_VERSION,
            body: NewerBody::Hologram(7),
        })
        .unwrap();
        assert!(matches!(decode(&bytes), Err(WireError::Malformed(_))));
    }

    /// Variants travel by name, so adding one leaves every other encoding as it
    /// was: a job still starts its body with the name `Job`.
    #[test]
    fn bodies_are_tagged_by_variant_name() {
        let job = sample_bodies().remove(1);
        let bytes = encode(&job);
        assert!(bytes.windows(3).any(|w| w == b"Job"), "{bytes:?}");
        let event = Body::Event(sample_events(Uuid::nil()).remove(0));
        assert!(encode(&event).windows(5).any(|w| w == b"Event"));
    }

    #[test]
    fn round_counts_add_each_status_to_its_own_slot() {
        let mut counts = RoundCounts::default();
        for status in [
            AttemptStatus::Ran(Outcome::Passed),
            AttemptStatus::Ran(Outcome::Passed),
            AttemptStatus::Ran(Outcome::Failed),
            AttemptStatus::Ran(Outcome::TimedOut),
            AttemptStatus::Ran(Outcome::Error),
            AttemptStatus::Missing,
            AttemptStatus::DeadLettered { deliveries: 5 },
        ] {
            counts.add(status);
        }
        assert_eq!(
            counts,
            RoundCounts {
                passed: 2,
                failed: 1,
                timed_out: 1,
                error: 1,
                missing: 1,
                dead_lettered: 1,
            }
        );
    }

    #[test]
    fn exit_codes_classify() {
        assert_eq!(Outcome::from_exit_code(0), Outcome::Passed);
        assert_eq!(Outcome::from_exit_code(1), Outcome::Failed);
        assert_eq!(Outcome::from_exit_code(-1), Outcome::Failed);
    }
}
