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

/// Bumped whenever a wire type changes incompatibly.
pub const FORMAT_VERSION: u16 = 1;

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
}

/// One attempt at one test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub run_id: Uuid,
    pub test_id: String,
    /// 1 for the first round, 2 for its first retry, …
    pub attempt: u32,
    pub deadline_ms: u64,
    pub spec: RunSpec,
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

/// The payload of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Run(RunAnnounce),
    Job(Job),
    Result(TestResult),
    Report(RunReport),
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Run(_) => "run",
            Body::Job(_) => "job",
            Body::Result(_) => "result",
            Body::Report(_) => "report",
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
    #[error("expected a {expected} message, got a {found} message")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
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

/// Parses bytes into a body, checking the format version first.
pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
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

/// Decodes a message that must be a job.
pub fn decode_job(bytes: &[u8]) -> Result<Job, WireError> {
    match decode(bytes)? {
        Body::Job(job) => Ok(job),
        other => Err(wrong_kind("job", &other)),
    }
}

/// Decodes a message that must be a run report.
pub fn decode_report(bytes: &[u8]) -> Result<RunReport, WireError> {
    match decode(bytes)? {
        Body::Report(report) => Ok(report),
        other => Err(wrong_kind("report", &other)),
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
        };
        vec![
            Body::Run(RunAnnounce {
                run_id,
                suite: "s".into(),
                created_at_ms: 1,
                deadline_ms: 2,
                spec: sample_spec(),
                tests: vec!["t1".into(), "t2".into()],
            }),
            Body::Job(Job {
                run_id,
                test_id: "t1".into(),
                attempt: 1,
                deadline_ms: 2,
                spec: sample_spec(),
            }),
            Body::Result(result),
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
                    }],
                }],
            }),
        ]
    }

    #[test]
    fn every_body_round_trips() {
        for body in sample_bodies() {
            let bytes = encode(&body);
            assert_eq!(decode(&bytes).unwrap(), body, "{}", body.kind());
        }
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
        let err = decode_job(&encode(&result)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a job message, got a result message"
        );
    }

    #[test]
    fn exit_codes_classify() {
        assert_eq!(Outcome::from_exit_code(0), Outcome::Passed);
        assert_eq!(Outcome::from_exit_code(1), Outcome::Failed);
        assert_eq!(Outcome::from_exit_code(-1), Outcome::Failed);
    }
}
