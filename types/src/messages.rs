//! The messages that cross the broker: one [`Body`] per message, in a
//! versioned envelope (`codec.rs`).
//!
//! These types are the wire format and nothing else: `report.json` (the report
//! crate's `json.rs`) and the aggregator's journal have types of their own,
//! converted at their edges, so that each format changes alone. No `untagged`
//! or `flatten` here: they let mismatched peers decode garbage silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::vocabulary::{
    AttemptStatus, CompareClass, FinalStatus, Outcome, RuntimeReason, SideTally, VerdictKind,
};

/// The network mode (`run.network`) of a job that may reach the fleet's
/// package caches and nothing else (`worker.cache`).
pub const CACHE_NETWORK: &str = "cache";

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
    /// Kill a test that writes nothing for this long (`run.quiet_timeout_secs`):
    /// a hung install need not wait out the whole timeout. Appended.
    #[serde(default)]
    pub quiet_timeout_ms: Option<u64>,
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

    /// Whether the command line carries the ids themselves (`{id}`, `{ids}`,
    /// `{ids_regex}`), which argv limits bound, rather than `{ids_file}`.
    pub fn ids_on_command_line(&self) -> bool {
        self.command
            .iter()
            .any(|a| a == "{ids}" || a.contains("{ids_regex}") || a.contains("{id}"))
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
    /// One JSON object per line and per test, `id` exactly as listed (the
    /// pytest preset's plugin writes it; any runner can): `outcome`
    /// (`passed`, `skipped`, `failed`), `duration_s`, `output`, `message`.
    Jsonl,
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
    /// Where the run's jobs wait: its own queue, which workers take from in
    /// turn with every other run's (fair sharing), or the shared FIFO one.
    /// Appended with a default (shared, as before per-run queues).
    #[serde(default)]
    pub queue: JobQueue,
    /// The run's share of the fleet beside other runs of their own queues:
    /// a run of weight 2 gets two turns for another's one. Appended with a
    /// default (1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Tests that run and are reported but whose failure fails nothing
    /// (the producer's `run.quarantine_file`, expired entries left out).
    /// Appended with a default.
    #[serde(default)]
    pub quarantine: Vec<Quarantine>,
    /// Quarantine, besides, every test flaky in more than this share of the
    /// suite's recent runs, in percent (`run.auto_quarantine`). Appended
    /// with a default (off).
    #[serde(default)]
    pub auto_quarantine_percent: Option<u32>,
    /// Log-signature rules (`run.signatures`), the first match naming why
    /// an attempt failed. Appended with a default (none).
    #[serde(default)]
    pub signatures: Vec<SignatureRule>,
    /// An A/B run: every id runs on the baseline image as `base::<id>` and
    /// on the run's image as `cand::<id>` (`crate::sides`), and ids whose
    /// sides differ are confirmed. Appended with a default (none).
    #[serde(default)]
    pub ab: Option<AbRun>,
}

/// What makes a run an A/B run (`--baseline-image`, `--confirm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbRun {
    /// The image the baseline side runs in; the candidate's is the spec's.
    /// With `recorded`, what the baseline was (`run <id>`): nothing runs in it.
    pub baseline_image: String,
    /// More attempts on each side for an id whose sides differ (on the
    /// candidate's alone with `recorded`).
    pub confirm: u32,
    /// The baseline as an earlier run recorded it (`--compare`): its side
    /// is never run, only compared with. Appended with a default.
    #[serde(default)]
    pub recorded: Option<RecordedSide>,
}

/// An earlier run's outcomes of each id, the baseline of `--compare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSide {
    /// The earlier run, as the user named it.
    pub run: String,
    /// Per baseline id of the announcement, in its order, that id's
    /// attempts in the earlier run (an error of the fleet's for what was
    /// missing or dead-lettered); empty: the earlier run did not have it.
    pub outcomes: Vec<Vec<Outcome>>,
}

/// A failure whose output matches `pattern` (a regex) is named `name`; a
/// fleet fault is an error of the fleet's (retried, never counted as the
/// test's failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRule {
    pub name: String,
    pub pattern: String,
    pub fleet_fault: bool,
}

/// The rule an attempt's output matched, as reports name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub name: String,
    pub fleet_fault: bool,
}

fn default_weight() -> u32 {
    1
}

/// A test taken out of the verdict for a while, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub test_id: String,
    pub reason: String,
    /// Unix ms from which the entry no longer holds.
    pub expires_ms: u64,
}

/// Which queue a run's jobs wait in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobQueue {
    /// The prefix's one jobs queue, first in first out across runs.
    #[default]
    Shared,
    /// A queue of the run's own (`{prefix}.jobs.<run id>`), taken from in
    /// turn with the other runs'.
    Own,
}

impl JobQueue {
    pub fn as_str(self) -> &'static str {
        match self {
            JobQueue::Shared => "shared",
            JobQueue::Own => "own",
        }
    }
}

/// Which runs have jobs in queues of their own, for workers to take from:
/// a producer says so of its new run, the aggregator of every open run
/// (`whole`), again and again, and of a run whose retries it just queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueNotice {
    pub runs: Vec<RunQueue>,
    /// Every open run of the prefix: a run left out of it is over (after a
    /// grace for runs the aggregator has not learnt yet).
    pub whole: bool,
}

/// A run with a queue of its own, as workers follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQueue {
    pub run_id: Uuid,
    pub weight: u32,
    /// Past it, the run takes no job: workers stop following it.
    pub deadline_ms: u64,
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
    /// The queue the run's jobs wait in, where a worker puts the jobs a
    /// batch is split into. Appended with a default (shared).
    #[serde(default)]
    pub queue: JobQueue,
}

/// A test of a job, with the time it is allowed in a batch (`crate::batch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTest {
    pub id: String,
    pub allowance_ms: u64,
    /// The id the command is given (`{id}`, `{ids}`, the ids file,
    /// `TEST_ID`) and the runner's report names, when it is not `id`: an
    /// A/B run's `base::X` and `cand::X` both run `X`. Appended with a
    /// default (`id`).
    #[serde(default)]
    pub command_id: Option<String>,
}

impl JobTest {
    /// The id the command runs.
    pub fn command_id(&self) -> &str {
        self.command_id.as_deref().unwrap_or(&self.id)
    }
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
                command_id: None,
            }],
            attempt,
            deadline_ms,
            spec,
            published_at_ms: 0,
            queue: JobQueue::Shared,
        }
    }

    /// The job's ids, in running order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = &str> {
        self.tests.iter().map(|t| t.id.as_str())
    }

    /// The ids its command runs, in running order (`JobTest::command_id`).
    pub fn command_ids(&self) -> impl ExactSizeIterator<Item = &str> {
        self.tests.iter().map(JobTest::command_id)
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
    /// What the runtime saw end it, when it did not pass. Appended.
    #[serde(default)]
    pub reason: Option<RuntimeReason>,
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
    /// Jobs its unreported tests were split into (at most
    /// [`crate::limits::MAX_SPLIT_PARTS`]).
    pub split_into: u32,
    /// How busy its host's CPUs were (all of them, whoever used them) while
    /// it ran, in thousandths, where the worker could tell.
    #[serde(default)]
    pub host_busy_permille: Option<u16>,
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
    /// What the runtime saw end it, as its worker said. Appended.
    #[serde(default)]
    pub reason: Option<RuntimeReason>,
    /// The log-signature rule its output matched, if it did not pass.
    /// Appended.
    #[serde(default)]
    pub signature: Option<Signature>,
}

/// One test as reported: its final status and every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    pub id: String,
    pub status: FinalStatus,
    pub attempts: Vec<AttemptReport>,
    /// Why the test is quarantined: it ran and is reported, and its status
    /// does not fail the verdict. Appended with a default.
    #[serde(default)]
    pub quarantined: Option<String>,
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
    /// How often the run's flaky and failing tests, and the suite's
    /// flakiest, were flaky or failed in the suite's recent runs. Appended
    /// with a default.
    #[serde(default)]
    pub flakiness: Option<Flakiness>,
    /// An A/B run's comparison of its two sides, id by id. Appended with a
    /// default (none: not an A/B run).
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// What the fleet's package caches served during a run of the cache
    /// network, as the caches count it. Appended with a default (none).
    #[serde(default)]
    pub cache: Option<CacheUse>,
}

/// The fleet's caches' traffic over a run's time (from every client: exact
/// for one campaign at a time, an upper bound when runs overlap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUse {
    pub caches: Vec<CacheCounters>,
    /// Why a cache could not be asked, if one could not.
    pub error: Option<String>,
}

/// One cache's counts over a run's time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounters {
    /// As `aggregator.caches` names it (`apt`, `pypi`).
    pub name: String,
    /// Packages served from the cache, and fetched upstream first.
    pub package_hits: u64,
    pub package_misses: u64,
    /// Index and metadata requests (package lists, project pages).
    pub index_requests: u64,
    pub bytes_served: u64,
    pub bytes_fetched: u64,
}

impl CacheCounters {
    /// Packages served, hits and misses: the cache's own counts, so summed
    /// without trusting them to fit.
    pub fn packages_served(&self) -> u64 {
        self.package_hits.saturating_add(self.package_misses)
    }

    /// Hits of all packages served, in percent; `None` when none was.
    pub fn hit_percent(&self) -> Option<f64> {
        let served = self.packages_served();
        (served > 0).then(|| self.package_hits as f64 * 100.0 / served as f64)
    }
}

/// How each id of an A/B run compares across its sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline_image: String,
    pub confirm: u32,
    /// Every id (plain, without its side's prefix), in the run's order.
    pub tests: Vec<ComparedTest>,
}

/// One id's comparison: the class and the tallies it was decided from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComparedTest {
    pub id: String,
    pub class: CompareClass,
    /// A difference run `confirm` more times on each side with the same
    /// result; `false` for a difference the run's end left unconfirmed
    /// (still reported, and still failing the verdict) and for every class
    /// that is no difference.
    pub confirmed: bool,
    pub baseline: SideTally,
    pub candidate: SideTally,
}

impl ComparedTest {
    /// Whether this id fails its A/B run: a regression, or a side the fleet
    /// ran and could not decide (nothing was compared). Failures on both
    /// sides fail nothing, nor does a baseline an earlier run did not record.
    pub fn fails_the_run(&self) -> bool {
        self.class == CompareClass::Regressed
            || self.baseline.undecided()
            || self.candidate.undecided()
    }
}

impl Comparison {
    /// The ids that fail the run ([`ComparedTest::fails_the_run`]).
    pub fn failing_the_run(&self) -> impl Iterator<Item = &ComparedTest> {
        self.tests.iter().filter(|t| t.fails_the_run())
    }

    /// The ids of one class, in the run's order.
    pub fn of_class(&self, class: CompareClass) -> impl Iterator<Item = &ComparedTest> {
        self.tests.iter().filter(move |t| t.class == class)
    }

    pub fn count(&self, class: CompareClass) -> usize {
        self.of_class(class).count()
    }
}

/// Flaky and failing tests across a suite's recent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flakiness {
    /// The suite's runs counted, this one included.
    pub runs: u32,
    /// This run's tests that were flaky or did not pass, then the suite's
    /// flakiest, each once.
    pub tests: Vec<TestFlakiness>,
}

/// In how many of a suite's counted runs one test was flaky, or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFlakiness {
    pub test_id: String,
    pub flaky: u32,
    /// Runs in which it did not pass at all (failed, timed out, errors,
    /// missing, dead-lettered).
    pub failed: u32,
}

impl Flakiness {
    /// What is known of `test_id`.
    pub fn of(&self, test_id: &str) -> Option<&TestFlakiness> {
        self.tests.iter().find(|t| t.test_id == test_id)
    }
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
    /// How busy the CPUs of the hosts running the suite's batches were, in
    /// thousandths, over its recent runs: near 1000, its tests are CPU-bound
    /// and more batches than cores only share them.
    #[serde(default)]
    pub host_busy_permille: Option<u16>,
    /// The fleet the aggregator hears from now (workers' heartbeats).
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

/// What the fleet can run at once: its test slots, and its cores within
/// them (each host's CPUs counted once, at most its slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub slots: u32,
    pub cores: u32,
}

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

/// The payload of a message (in `codec.rs`'s envelope). New variants go at the end.
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
    /// One piece of a message too big to travel whole (see `parts.rs`).
    /// Added without a bump, as `Results`: only a receiver that asked for a
    /// parted message (a waiting producer, the aggregator) gets one.
    Part(Part),
    /// Runs whose jobs wait in queues of their own (on the runs exchange,
    /// read by workers alone). Added without a bump, as `Results`.
    Queues(QueueNotice),
    /// A producer asks the aggregator to resume a run (on the history
    /// queue, answered through its reply-to). Added without a bump.
    Resume(ResumeRequest),
    /// The aggregator's answer to a [`ResumeRequest`].
    Resumed(ResumeAnswer),
    /// A worker's sign of life (on the heartbeats queue, read by the
    /// aggregator's dashboard). Added without a bump.
    Heartbeat(Heartbeat),
}

/// What a worker is, and what its slots run now: information for people
/// watching the fleet, never state anything decides on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: String,
    pub slots: u32,
    pub executors: Vec<ExecutorKind>,
    pub running: Vec<RunningTest>,
    /// When the worker sent it, Unix ms.
    pub at_ms: u64,
    /// The host its tests run on (the Docker engine's id, or the machine's):
    /// workers of one host share its cores.
    #[serde(default)]
    pub host: String,
    /// That host's CPUs (0: unknown).
    #[serde(default)]
    pub cores: u32,
}

/// A job a worker's slot runs: its run, its test (the first of a batch, and
/// how many more), its attempt and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTest {
    pub run_id: Uuid,
    pub test: String,
    pub attempt: u32,
    pub started_at_ms: u64,
}

/// Continue a run whose jobs may be lost (a wiped broker, a fleet taken
/// down) or whose producer stopped waiting: its tests without a result in
/// the open round are queued again, under the same run id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    pub run_id: Uuid,
    /// The run ends by then at the earliest (a deadline never moves back).
    pub deadline_ms: u64,
    /// The resuming producer's secret, which the verdict then carries too.
    pub verdict_token: Uuid,
    /// The run's own secret (its announcement's token): only who holds it
    /// may resume the run. Appended; missing reads as nil, which no run has.
    #[serde(default)]
    pub run_token: Uuid,
}

/// What came of a [`ResumeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeAnswer {
    pub run_id: Uuid,
    pub outcome: ResumeOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResumeOutcome {
    /// The run goes on: `queued` of its `tests` (the open round's without a
    /// result) were queued again; its deadline is the request's or later.
    Resumed {
        tests: u32,
        queued: u32,
        round: u32,
        deadline_ms: u64,
    },
    /// Its verdict is out (or on its way): nothing to resume.
    Finished,
    /// The aggregator does not know it: its journal is gone, or it never was.
    Unknown,
    /// The request did not carry the run's token: nothing changed.
    NotPermitted,
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
/// `limits::MAX_MESSAGE_BYTES`; the receiver joins them in `index`
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
            Body::Queues(_) => "queues",
            Body::Resume(_) => "resume",
            Body::Resumed(_) => "resumed",
            Body::Heartbeat(_) => "heartbeat",
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::strategies::sample_spec;

    /// A cache's counts are its own answer, untrusted: counts that do not
    /// fit when summed give a figure, not a panic.
    #[test]
    fn a_caches_counts_near_the_limit_give_a_hit_rate() {
        let counters = CacheCounters {
            name: "apt".into(),
            package_hits: u64::MAX,
            package_misses: 1,
            index_requests: 0,
            bytes_served: 0,
            bytes_fetched: 0,
        };
        assert_eq!(counters.packages_served(), u64::MAX);
        assert!(counters.hit_percent().unwrap() > 99.0);
    }

    /// A job of one test alone keeps the per-test timeout; a batch gets
    /// the batch rule's.
    #[test]
    fn a_jobs_timeout_follows_its_tests() {
        let spec = sample_spec();
        let alone = Job::single(Uuid::nil(), "t".into(), 1, 9, spec.clone());
        assert_eq!(alone.timeout_ms(), spec.timeout_ms);
        assert_eq!(alone.label(), "t");
        let batch = Job {
            tests: vec![
                JobTest {
                    id: "a".into(),
                    allowance_ms: 1_000,
                    command_id: None,
                },
                JobTest {
                    id: "b".into(),
                    allowance_ms: 2_000,
                    command_id: None,
                },
            ],
            ..alone
        };
        assert_eq!(batch.timeout_ms(), crate::batch::BATCH_STARTUP_MS + 3_000);
        assert_eq!(batch.label(), "a (+1 more)");
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
