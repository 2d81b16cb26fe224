//! The run events the aggregator publishes for whoever follows a run: a test
//! finished, a round closed, a test is retried.
//!
//! Pure: these functions only build events from what the service loop already
//! decided; the loop publishes them (best-effort, see `broker::publish_event`).

use testfleet_types::messages::{AttemptStatus, RoundCounts, RunEvent, RunEventKind, TestResult};
use uuid::Uuid;

use crate::run_state::RoundDecision;

/// A worker's result, now counted.
pub fn test_finished(result: &TestResult, now_ms: u64) -> RunEvent {
    RunEvent {
        run_id: result.run_id,
        at_ms: now_ms,
        kind: RunEventKind::TestFinished {
            test_id: result.test_id.clone(),
            attempt: result.attempt,
            status: AttemptStatus::Ran(result.outcome),
            duration_ms: result.duration_ms,
            exit_code: result.exit_code,
            worker_id: Some(result.worker_id.clone()),
        },
    }
}

/// An attempt that ended without a result from a worker: dead-lettered, or
/// missing when its round closed.
pub fn test_ended_unrun(
    run_id: Uuid,
    test_id: &str,
    attempt: u32,
    status: AttemptStatus,
    now_ms: u64,
) -> RunEvent {
    RunEvent {
        run_id,
        at_ms: now_ms,
        kind: RunEventKind::TestFinished {
            test_id: test_id.to_owned(),
            attempt,
            status,
            duration_ms: 0,
            exit_code: None,
            worker_id: None,
        },
    }
}

/// What closing `round` tells a follower, in the order it should learn it: the
/// tests found missing, the round's counts, then each test run again.
/// `statuses` are the round's tests as they stand once it closed.
pub fn round_closed<'a>(
    run_id: Uuid,
    round: u32,
    statuses: impl IntoIterator<Item = (&'a str, AttemptStatus)>,
    decision: &RoundDecision,
    now_ms: u64,
) -> Vec<RunEvent> {
    let mut events = Vec::new();
    let mut counts = RoundCounts::default();
    for (test_id, status) in statuses {
        counts.add(status);
        if status == AttemptStatus::Missing {
            events.push(test_ended_unrun(run_id, test_id, round, status, now_ms));
        }
    }
    let retried: &[String] = match decision {
        RoundDecision::Retry { tests, .. } => tests,
        RoundDecision::Finish(_) => &[],
    };
    let event = |kind| RunEvent {
        run_id,
        at_ms: now_ms,
        kind,
    };
    events.push(event(RunEventKind::RoundClosed {
        round,
        counts,
        retrying: retried.len() as u32,
    }));
    if let RoundDecision::Retry { attempt, tests } = decision {
        events.extend(tests.iter().map(|test_id| {
            event(RunEventKind::TestRetried {
                test_id: test_id.clone(),
                attempt: *attempt,
            })
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use testfleet_types::messages::{Outcome, VerdictKind};

    use super::*;

    fn kinds(events: &[RunEvent]) -> Vec<&RunEventKind> {
        events.iter().map(|e| &e.kind).collect()
    }

    #[test]
    fn a_retried_round_reports_missing_tests_then_counts_then_retries() {
        let statuses = [
            ("a", AttemptStatus::Ran(Outcome::Passed)),
            ("b", AttemptStatus::Ran(Outcome::Failed)),
            ("c", AttemptStatus::Missing),
        ];
        let decision = RoundDecision::Retry {
            attempt: 2,
            tests: vec!["b".into(), "c".into()],
        };
        let events = round_closed(Uuid::nil(), 1, statuses, &decision, 7);
        assert!(events.iter().all(|e| e.at_ms == 7 && e.run_id.is_nil()));
        assert_eq!(
            kinds(&events),
            vec![
                &RunEventKind::TestFinished {
                    test_id: "c".into(),
                    attempt: 1,
                    status: AttemptStatus::Missing,
                    duration_ms: 0,
                    exit_code: None,
                    worker_id: None,
                },
                &RunEventKind::RoundClosed {
                    round: 1,
                    counts: RoundCounts {
                        passed: 1,
                        failed: 1,
                        missing: 1,
                        ..RoundCounts::default()
                    },
                    retrying: 2,
                },
                &RunEventKind::TestRetried {
                    test_id: "b".into(),
                    attempt: 2,
                },
                &RunEventKind::TestRetried {
                    test_id: "c".into(),
                    attempt: 2,
                },
            ]
        );
    }

    #[test]
    fn a_final_round_retries_nothing() {
        let statuses = [("a", AttemptStatus::Ran(Outcome::Failed))];
        let decision = RoundDecision::Finish(VerdictKind::TestsFailed);
        let events = round_closed(Uuid::nil(), 3, statuses, &decision, 0);
        assert_eq!(
            kinds(&events),
            vec![&RunEventKind::RoundClosed {
                round: 3,
                counts: RoundCounts {
                    failed: 1,
                    ..RoundCounts::default()
                },
                retrying: 0,
            }]
        );
    }

    #[test]
    fn a_finished_event_carries_the_result_facts() {
        let result = TestResult {
            run_id: Uuid::nil(),
            test_id: "t".into(),
            attempt: 2,
            outcome: Outcome::TimedOut,
            exit_code: None,
            duration_ms: 3000,
            worker_id: "w9".into(),
            started_at_ms: 1,
            finished_at_ms: 3001,
            output: "not in the event".into(),
            output_truncated: false,
            message: None,
            published_at_ms: 0,
            batch: None,
            reason: None,
        };
        let event = test_finished(&result, 5);
        assert_eq!(
            event.kind,
            RunEventKind::TestFinished {
                test_id: "t".into(),
                attempt: 2,
                status: AttemptStatus::Ran(Outcome::TimedOut),
                duration_ms: 3000,
                exit_code: None,
                worker_id: Some("w9".into()),
            }
        );
    }
}
