//! The messages' codec: a body in its versioned envelope, as MessagePack, and
//! back, checked against its bounds (`checks.rs`) before anyone uses it.
//!
//! A reader checks the version before it looks at the body, so a message from
//! a newer or older testfleet is refused with a clear reason instead of being
//! half-read.

use serde::{Deserialize, Serialize};

use crate::checks;
use crate::messages::{Body, History, Job, ResumeAnswer, RunReport};

/// Bumped whenever a message type changes incompatibly: 2 made a job carry
/// several tests (a batch).
pub const FORMAT_VERSION: u16 = 2;

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
    /// Readable, but a value is out of the bounds `limits.rs` keeps.
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
/// value against its bounds (`checks::check`).
pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
    let body = decode_unchecked(bytes)?;
    checks::check(&body).map_err(|reason| WireError::OutOfBounds {
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
/// `Batches` (`checks::sort_out`) rather than refusing the whole message.
pub fn decode_sorting(bytes: &[u8]) -> Result<(Body, Refused), WireError> {
    let body = decode_unchecked(bytes)?;
    let (body, refused) = checks::sort_out(body);
    checks::check(&body).map_err(|reason| WireError::OutOfBounds {
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

/// Decodes a message that must be an answer to a resume request.
pub fn decode_resumed(bytes: &[u8]) -> Result<ResumeAnswer, WireError> {
    match decode(bytes)? {
        Body::Resumed(answer) => Ok(answer),
        other => Err(wrong_kind("resumed", &other)),
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
    use std::collections::BTreeMap;

    use serde::Serialize;
    use uuid::Uuid;

    use super::*;
    use crate::messages::*;

    /// The default spec, with an environment so that maps are exercised too.
    fn sample_spec() -> RunSpec {
        let mut spec = crate::strategies::sample_spec();
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
            reason: None,
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
            host_busy_permille: Some(870),
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
                queue: JobQueue::Own,
                weight: 3,
                auto_quarantine_percent: None,
                quarantine: Vec::new(),
                signatures: Vec::new(),
                ab: None,
            }),
            Body::Job(Job {
                run_id,
                tests: vec![
                    JobTest {
                        id: "t1".into(),
                        allowance_ms: 5,
                        command_id: None,
                    },
                    JobTest {
                        id: "t2".into(),
                        allowance_ms: 7,
                        command_id: None,
                    },
                ],
                attempt: 1,
                deadline_ms: 2,
                spec: sample_spec(),
                published_at_ms: 1,
                queue: JobQueue::Own,
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
                host_busy_permille: Some(990),
                capacity: Some(Capacity { slots: 4, cores: 2 }),
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
                        reason: None,
                        signature: None,
                    }],
                    quarantined: None,
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
                flakiness: None,
                comparison: None,
                cache: None,
            }),
        ]
        .into_iter()
        .chain(sample_events(run_id).into_iter().map(Body::Event))
        .chain([Body::Events(sample_events(run_id))])
        .chain([Body::Queues(QueueNotice {
            runs: vec![RunQueue {
                run_id,
                weight: 2,
                deadline_ms: 9,
            }],
            whole: true,
        })])
        .chain([
            Body::Resume(ResumeRequest {
                run_id,
                deadline_ms: 7,
                verdict_token: Uuid::nil(),
                run_token: Uuid::nil(),
            }),
            Body::Heartbeat(Heartbeat {
                worker_id: "w1".into(),
                slots: 4,
                executors: vec![ExecutorKind::Docker],
                running: vec![RunningTest {
                    run_id,
                    test: "t1 (+2 more)".into(),
                    attempt: 1,
                    started_at_ms: 5,
                }],
                at_ms: 6,
                host: "engine-1".into(),
                cores: 2,
            }),
            Body::Resumed(ResumeAnswer {
                run_id,
                outcome: ResumeOutcome::Resumed {
                    tests: 3,
                    queued: 2,
                    round: 1,
                    deadline_ms: 7,
                },
            }),
        ])
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
}
