//! What a run's journal holds: record types of the journal's own, converted
//! from and to the messages at its edge (`service.rs` journals what it
//! counts, and replays records into it), so that a message can change without
//! the journal changing with it, and the other way round.
//!
//! Both journals (`files.rs`, `stream.rs`) write
//! these records with MessagePack, fields in order: the encoding of every
//! record is pinned by a test below, since a file written by one aggregator
//! is read back by the next. The spec inside an announcement is the message
//! type itself (a job carries it to workers verbatim, so the journal keeps
//! what it must send again); a change to its encoding bumps both formats.

use serde::{Deserialize, Serialize};
use testfleet_types::limits::MAX_PARTED_BYTES;
use testfleet_types::messages::{
    AbRun, BatchRecord, JobQueue, Outcome, Quarantine, RecordedSide, RunAnnounce, RunSpec,
    RuntimeReason, SignatureRule, TestResult,
};
use uuid::Uuid;

use crate::framed::Kind;

/// The journal's file format: an announcement, the biggest record, is at
/// most a parted message.
pub const JOURNAL: Kind = Kind {
    magic: *b"tfjournl",
    version: 3,
    max_record: MAX_PARTED_BYTES as u32 + (1 << 20),
    name: "journal",
};

/// One entry of a run's journal, replayed in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Announce(Box<AnnounceRecord>),
    Result(ResultRecord),
    DeadLetter {
        test_id: String,
        attempt: u32,
        deliveries: u32,
    },
    /// The open round was closed at this time (so replay closes it identically).
    RoundClosed {
        at_ms: u64,
    },
    /// A batch the run's tests ran in.
    Batch(BatchEntry),
    /// A producer resumed the run: its deadline, and the token its verdict
    /// carries too. Added after format 3's first records, by name, so files
    /// without it read as before.
    Resumed {
        deadline_ms: u64,
        verdict_token: Uuid,
    },
}

/// The run as announced: what it expects and how its jobs run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnounceRecord {
    pub run_id: Uuid,
    pub suite: String,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    pub spec: RunSpec,
    pub tests: Vec<String>,
    /// Put on the run's verdict, so that the waiting producer knows it.
    #[serde(default)]
    pub verdict_token: Option<Uuid>,
    /// Appended with a default (shared), as records before it were written.
    #[serde(default)]
    pub queue: RecordedQueue,
    /// Appended with a default (1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Appended with a default (none).
    #[serde(default)]
    pub quarantine: Vec<QuarantineRecord>,
    /// Appended with a default (off).
    #[serde(default)]
    pub auto_quarantine_percent: Option<u32>,
    /// Appended with a default (none).
    #[serde(default)]
    pub signatures: Vec<SignatureRecord>,
    /// Appended with a default (none: not an A/B run).
    #[serde(default)]
    pub ab: Option<AbRecord>,
}

/// What makes a run an A/B run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbRecord {
    pub baseline_image: String,
    pub confirm: u32,
    /// Appended with a default (none: both sides run).
    #[serde(default)]
    pub recorded: Option<RecordedSideRecord>,
}

/// The earlier run a `--compare` run's baseline is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSideRecord {
    pub run: String,
    pub outcomes: Vec<Vec<RecordedOutcome>>,
}

/// A test the run does not fail for, and why, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub test_id: String,
    pub reason: String,
    pub expires_ms: u64,
}

fn one() -> u32 {
    1
}

/// Where the run's jobs wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordedQueue {
    #[default]
    Shared,
    Own,
}

/// How an attempt's command ended, as the journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordedOutcome {
    Passed,
    Failed,
    TimedOut,
    Error,
}

/// One counted attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub run_id: Uuid,
    pub test_id: String,
    pub attempt: u32,
    pub outcome: RecordedOutcome,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub worker_id: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub output: String,
    pub output_truncated: bool,
    pub message: Option<String>,
    pub published_at_ms: u64,
    pub batch: Option<Uuid>,
    /// Appended with a default: records before it name no reason.
    #[serde(default)]
    pub reason: Option<RecordedReason>,
}

/// A log-signature rule, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    pub name: String,
    pub pattern: String,
    pub fleet_fault: bool,
}

/// What the runtime saw end an attempt, as the journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordedReason {
    Exit,
    Signal(u8),
    Oom,
    HostOom,
    Timeout,
    NoOutputTimeout,
}

/// One batch of the run's tests, as its worker saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEntry {
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

impl From<&RunAnnounce> for AnnounceRecord {
    fn from(announce: &RunAnnounce) -> Self {
        AnnounceRecord {
            run_id: announce.run_id,
            suite: announce.suite.clone(),
            created_at_ms: announce.created_at_ms,
            deadline_ms: announce.deadline_ms,
            spec: announce.spec.clone(),
            tests: announce.tests.clone(),
            verdict_token: announce.verdict_token,
            queue: match announce.queue {
                JobQueue::Shared => RecordedQueue::Shared,
                JobQueue::Own => RecordedQueue::Own,
            },
            weight: announce.weight,
            quarantine: announce
                .quarantine
                .iter()
                .map(|entry| QuarantineRecord {
                    test_id: entry.test_id.clone(),
                    reason: entry.reason.clone(),
                    expires_ms: entry.expires_ms,
                })
                .collect(),
            auto_quarantine_percent: announce.auto_quarantine_percent,
            signatures: announce
                .signatures
                .iter()
                .map(|rule| SignatureRecord {
                    name: rule.name.clone(),
                    pattern: rule.pattern.clone(),
                    fleet_fault: rule.fleet_fault,
                })
                .collect(),
            ab: announce.ab.as_ref().map(|ab| AbRecord {
                baseline_image: ab.baseline_image.clone(),
                confirm: ab.confirm,
                recorded: ab.recorded.as_ref().map(|r| RecordedSideRecord {
                    run: r.run.clone(),
                    outcomes: r
                        .outcomes
                        .iter()
                        .map(|o| o.iter().map(|&o| o.into()).collect())
                        .collect(),
                }),
            }),
        }
    }
}

impl From<AnnounceRecord> for RunAnnounce {
    fn from(record: AnnounceRecord) -> Self {
        RunAnnounce {
            run_id: record.run_id,
            suite: record.suite,
            created_at_ms: record.created_at_ms,
            deadline_ms: record.deadline_ms,
            spec: record.spec,
            tests: record.tests,
            verdict_token: record.verdict_token,
            queue: match record.queue {
                RecordedQueue::Shared => JobQueue::Shared,
                RecordedQueue::Own => JobQueue::Own,
            },
            weight: record.weight,
            auto_quarantine_percent: record.auto_quarantine_percent,
            quarantine: record
                .quarantine
                .into_iter()
                .map(|entry| Quarantine {
                    test_id: entry.test_id,
                    reason: entry.reason,
                    expires_ms: entry.expires_ms,
                })
                .collect(),
            signatures: record
                .signatures
                .into_iter()
                .map(|rule| SignatureRule {
                    name: rule.name,
                    pattern: rule.pattern,
                    fleet_fault: rule.fleet_fault,
                })
                .collect(),
            ab: record.ab.map(|ab| AbRun {
                baseline_image: ab.baseline_image,
                confirm: ab.confirm,
                recorded: ab.recorded.map(|r| RecordedSide {
                    run: r.run,
                    outcomes: r
                        .outcomes
                        .into_iter()
                        .map(|o| o.into_iter().map(Outcome::from).collect())
                        .collect(),
                }),
            }),
        }
    }
}

impl From<Outcome> for RecordedOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Passed => RecordedOutcome::Passed,
            Outcome::Failed => RecordedOutcome::Failed,
            Outcome::TimedOut => RecordedOutcome::TimedOut,
            Outcome::Error => RecordedOutcome::Error,
        }
    }
}

impl From<RecordedOutcome> for Outcome {
    fn from(outcome: RecordedOutcome) -> Self {
        match outcome {
            RecordedOutcome::Passed => Outcome::Passed,
            RecordedOutcome::Failed => Outcome::Failed,
            RecordedOutcome::TimedOut => Outcome::TimedOut,
            RecordedOutcome::Error => Outcome::Error,
        }
    }
}

impl From<RuntimeReason> for RecordedReason {
    fn from(reason: RuntimeReason) -> Self {
        match reason {
            RuntimeReason::Exit => RecordedReason::Exit,
            RuntimeReason::Signal(signal) => RecordedReason::Signal(signal),
            RuntimeReason::Oom => RecordedReason::Oom,
            RuntimeReason::HostOom => RecordedReason::HostOom,
            RuntimeReason::Timeout => RecordedReason::Timeout,
            RuntimeReason::NoOutputTimeout => RecordedReason::NoOutputTimeout,
        }
    }
}

impl From<RecordedReason> for RuntimeReason {
    fn from(reason: RecordedReason) -> Self {
        match reason {
            RecordedReason::Exit => RuntimeReason::Exit,
            RecordedReason::Signal(signal) => RuntimeReason::Signal(signal),
            RecordedReason::Oom => RuntimeReason::Oom,
            RecordedReason::HostOom => RuntimeReason::HostOom,
            RecordedReason::Timeout => RuntimeReason::Timeout,
            RecordedReason::NoOutputTimeout => RuntimeReason::NoOutputTimeout,
        }
    }
}

impl From<&TestResult> for ResultRecord {
    fn from(result: &TestResult) -> Self {
        ResultRecord {
            run_id: result.run_id,
            test_id: result.test_id.clone(),
            attempt: result.attempt,
            outcome: result.outcome.into(),
            exit_code: result.exit_code,
            duration_ms: result.duration_ms,
            worker_id: result.worker_id.clone(),
            started_at_ms: result.started_at_ms,
            finished_at_ms: result.finished_at_ms,
            output: result.output.clone(),
            output_truncated: result.output_truncated,
            message: result.message.clone(),
            published_at_ms: result.published_at_ms,
            batch: result.batch,
            reason: result.reason.map(RecordedReason::from),
        }
    }
}

impl From<ResultRecord> for TestResult {
    fn from(record: ResultRecord) -> Self {
        TestResult {
            run_id: record.run_id,
            test_id: record.test_id,
            attempt: record.attempt,
            outcome: record.outcome.into(),
            exit_code: record.exit_code,
            duration_ms: record.duration_ms,
            worker_id: record.worker_id,
            started_at_ms: record.started_at_ms,
            finished_at_ms: record.finished_at_ms,
            output: record.output,
            output_truncated: record.output_truncated,
            message: record.message,
            published_at_ms: record.published_at_ms,
            batch: record.batch,
            reason: record.reason.map(RuntimeReason::from),
        }
    }
}

impl From<&BatchRecord> for BatchEntry {
    fn from(batch: &BatchRecord) -> Self {
        BatchEntry {
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

impl From<BatchEntry> for BatchRecord {
    fn from(entry: BatchEntry) -> Self {
        BatchRecord {
            id: entry.id,
            run_id: entry.run_id,
            attempt: entry.attempt,
            worker_id: entry.worker_id,
            tests: entry.tests,
            reported: entry.reported,
            started_at_ms: entry.started_at_ms,
            command_started_at_ms: entry.command_started_at_ms,
            finished_at_ms: entry.finished_at_ms,
            exit_code: entry.exit_code,
            timed_out: entry.timed_out,
            log: entry.log,
            log_truncated: entry.log_truncated,
            host_busy_permille: None,
            split_into: entry.split_into,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let run_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let batch = Uuid::from_u128(7);
        let mut spec = testfleet_types::strategies::sample_spec();
        spec.env.insert("A".into(), "b".into());
        spec.runner_report = Some(testfleet_types::messages::RunnerReport {
            format: testfleet_types::messages::ReportFormat::Junit,
            ids: testfleet_types::messages::IdScheme::Pytest,
        });
        vec![
            Record::Announce(Box::new(AnnounceRecord {
                run_id,
                suite: "suite".into(),
                created_at_ms: 1,
                deadline_ms: 2,
                spec,
                tests: vec!["a".into(), "b".into()],
                verdict_token: Some(Uuid::from_u128(9)),
                queue: RecordedQueue::Own,
                weight: 2,
                auto_quarantine_percent: Some(30),
                signatures: vec![SignatureRecord {
                    name: "no-space".into(),
                    pattern: "No space left".into(),
                    fleet_fault: true,
                }],
                quarantine: vec![QuarantineRecord {
                    test_id: "b".into(),
                    reason: "flaky".into(),
                    expires_ms: 15,
                }],
                ab: Some(AbRecord {
                    baseline_image: "old".into(),
                    confirm: 3,
                    recorded: Some(RecordedSideRecord {
                        run: "r1".into(),
                        outcomes: vec![vec![RecordedOutcome::Failed, RecordedOutcome::Passed]],
                    }),
                }),
            })),
            Record::Result(ResultRecord {
                run_id,
                test_id: "a".into(),
                attempt: 2,
                outcome: RecordedOutcome::TimedOut,
                exit_code: Some(137),
                duration_ms: 3,
                worker_id: "w".into(),
                started_at_ms: 4,
                finished_at_ms: 5,
                output: "out".into(),
                output_truncated: true,
                message: Some("m".into()),
                published_at_ms: 6,
                batch: Some(batch),
                reason: Some(RecordedReason::Signal(9)),
            }),
            Record::DeadLetter {
                test_id: "b".into(),
                attempt: 1,
                deliveries: 5,
            },
            Record::RoundClosed { at_ms: 8 },
            Record::Batch(BatchEntry {
                id: batch,
                run_id,
                attempt: 2,
                worker_id: "w".into(),
                tests: 2,
                reported: 1,
                started_at_ms: 10,
                command_started_at_ms: 11,
                finished_at_ms: 12,
                exit_code: None,
                timed_out: true,
                log: Some("log".into()),
                log_truncated: false,
                split_into: 1,
            }),
            Record::Resumed {
                deadline_ms: 13,
                verdict_token: Uuid::from_u128(14),
            },
        ]
    }

    /// Each kind of record as journal format 3 writes it (the announcement's
    /// queue, weight and quarantine appended to what it was when its records
    /// were the message types): a change to a record's encoding fails here
    /// before it reaches a user.
    const GOLDEN: [&str; 6] = [
        "81a8416e6e6f756e63659dc4100123456789abcdef0123456789abcdefa573756974650102dc0010b874657374666c6565742f62757379626f783a6c617465737493a27368a22d63d92b6563686f206e6f20636f6d6d616e6420636f6e6669677572656420666f72207b69647d3b2065786974203181a141a162ce000493e0ce0010000092cb3fb999999999999a0397a46e6f6e6591a42f746d70ce40000000c0cd0400c390a6646f636b6572c0a5667265736832c092a56a756e6974a6707974657374c090c092a161a162c41000000000000000000000000000000009a34f776e029193a162a5666c616b790f1e9193a86e6f2d7370616365ad4e6f207370616365206c656674c393a36f6c640392a272319192a64661696c6564a6506173736564",
        "81a6526573756c749fc4100123456789abcdef0123456789abcdefa16102a854696d65644f7574cc8903a1770405a36f7574c3a16d06c4100000000000000000000000000000000781a65369676e616c09",
        "81aa446561644c657474657293a1620105",
        "81ab526f756e64436c6f7365649108",
        "81a542617463689ec41000000000000000000000000000000007c4100123456789abcdef0123456789abcdef02a17702010a0b0cc0c3a36c6f67c201",
        "81a7526573756d6564920dc4100000000000000000000000000000000e",
    ];

    /// An announcement as format 3 wrote it before queue and weight.
    const ANNOUNCE_BEFORE_QUEUES: &str = "81a8416e6e6f756e636597c4100123456789abcdef0123456789abcdefa5737569746501029fb874657374666c6565742f62757379626f783a6c617465737493a27368a22d63d92b6563686f206e6f20636f6d6d616e6420636f6e6669677572656420666f72207b69647d3b2065786974203181a141a162ce000493e0ce0010000092cb3fb999999999999a0397a46e6f6e6591a42f746d70ce40000000c0cd0400c390a6646f636b6572c0a5667265736832c092a56a756e6974a6707974657374c09092a161a162c41000000000000000000000000000000009";

    /// An announcement as format 3 wrote it before A/B runs.
    const ANNOUNCE_BEFORE_AB: &str = "81a8416e6e6f756e63659cc4100123456789abcdef0123456789abcdefa573756974650102dc0010b874657374666c6565742f62757379626f783a6c617465737493a27368a22d63d92b6563686f206e6f20636f6d6d616e6420636f6e6669677572656420666f72207b69647d3b2065786974203181a141a162ce000493e0ce0010000092cb3fb999999999999a0397a46e6f6e6591a42f746d70ce40000000c0cd0400c390a6646f636b6572c0a5667265736832c092a56a756e6974a6707974657374c090c092a161a162c41000000000000000000000000000000009a34f776e029193a162a5666c616b790f1e9193a86e6f2d7370616365ad4e6f207370616365206c656674c3";

    /// An announcement as format 3 wrote it before `--compare` (an A/B run
    /// with both sides run).
    const ANNOUNCE_BEFORE_RECORDED: &str = "81a8416e6e6f756e63659dc4100123456789abcdef0123456789abcdefa573756974650102dc0010b874657374666c6565742f62757379626f783a6c617465737493a27368a22d63d92b6563686f206e6f20636f6d6d616e6420636f6e6669677572656420666f72207b69647d3b2065786974203181a141a162ce000493e0ce0010000092cb3fb999999999999a0397a46e6f6e6591a42f746d70ce40000000c0cd0400c390a6646f636b6572c0a5667265736832c092a56a756e6974a6707974657374c090c092a161a162c41000000000000000000000000000000009a34f776e029193a162a5666c616b790f1e9193a86e6f2d7370616365ad4e6f207370616365206c656674c392a36f6c6403";

    /// A result as format 3 wrote it before results named a reason.
    const RESULT_BEFORE_REASONS: &str = "81a6526573756c749ec4100123456789abcdef0123456789abcdefa16102a854696d65644f7574cc8903a1770405a36f7574c3a16d06c41000000000000000000000000000000007";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn records_keep_the_encoding_of_journal_format_3() {
        for (record, golden) in samples().iter().zip(GOLDEN) {
            let bytes = rmp_serde::to_vec(record).unwrap();
            assert_eq!(hex(&bytes), golden, "{record:?}");
            let back: Record = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(&back, record);
        }
    }

    /// A journal written before results named a reason still reads: its
    /// results name none, and the rest is as it was.
    #[test]
    fn a_result_from_before_reasons_reads_without_one() {
        let Record::Result(result) = rmp_serde::from_slice(&unhex(RESULT_BEFORE_REASONS)).unwrap()
        else {
            panic!("a result");
        };
        let Record::Result(now) = samples().remove(1) else {
            panic!("a result");
        };
        assert_eq!(
            result,
            ResultRecord {
                reason: None,
                ..now
            }
        );
    }

    /// A journal written before A/B runs still reads: its runs are not A/B.
    #[test]
    fn an_announcement_from_before_ab_runs_reads_without_one() {
        let Record::Announce(announce) = rmp_serde::from_slice(&unhex(ANNOUNCE_BEFORE_AB)).unwrap()
        else {
            panic!("an announcement");
        };
        let Record::Announce(now) = samples().remove(0) else {
            panic!("an announcement");
        };
        assert_eq!(*announce, AnnounceRecord { ab: None, ..*now });
    }

    /// A journal written before `--compare` still reads: its A/B runs run
    /// both sides.
    #[test]
    fn an_ab_announcement_from_before_compare_reads_without_a_recorded_side() {
        let Record::Announce(announce) =
            rmp_serde::from_slice(&unhex(ANNOUNCE_BEFORE_RECORDED)).unwrap()
        else {
            panic!("an announcement");
        };
        let Record::Announce(now) = samples().remove(0) else {
            panic!("an announcement");
        };
        let ab = now.ab.clone().map(|ab| AbRecord {
            recorded: None,
            ..ab
        });
        assert_eq!(*announce, AnnounceRecord { ab, ..*now });
    }

    /// A journal written before runs had queues of their own still reads:
    /// its runs are of the shared queue, at weight 1.
    #[test]
    fn an_announcement_from_before_queues_reads_with_the_defaults() {
        let Record::Announce(announce) =
            rmp_serde::from_slice(&unhex(ANNOUNCE_BEFORE_QUEUES)).unwrap()
        else {
            panic!("an announcement");
        };
        let Record::Announce(now) = samples().remove(0) else {
            panic!("an announcement");
        };
        assert_eq!(
            (announce.queue, announce.weight),
            (RecordedQueue::Shared, 1)
        );
        assert_eq!(announce.tests, now.tests);
    }

    #[test]
    fn messages_come_back_as_they_went_through_the_journal() {
        for record in samples() {
            match record {
                Record::Announce(announce) => {
                    let message = RunAnnounce::from(*announce.clone());
                    assert_eq!(AnnounceRecord::from(&message), *announce);
                }
                Record::Result(result) => {
                    let message = TestResult::from(result.clone());
                    assert_eq!(ResultRecord::from(&message), result);
                }
                Record::Batch(batch) => {
                    let message = BatchRecord::from(batch.clone());
                    assert_eq!(BatchEntry::from(&message), batch);
                }
                Record::DeadLetter { .. } | Record::RoundClosed { .. } | Record::Resumed { .. } => {
                }
            }
        }
    }
}
