//! Proptest strategies for the wire types, for the property tests of every
//! decoder and renderer (feature `strategies`, enabled by the crates' tests).
//!
//! Values are arbitrary on purpose, bounds or not: numbers lean on the edges
//! (0, `u64::MAX`), strings on what breaks renderers (markup, control and
//! bidirectional characters, long lines).

use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

use crate::messages::{
    AttemptReport, AttemptStatus, Body, ContainerLimits, ContainerMode, ExecutorKind, FinalStatus,
    History, IgnoredReason, IgnoredResult, Outcome, QueueNotice, RetryPolicy, RoundCounts,
    RunEvent, RunEventKind, RunQueue, RunReport, RunSpec, RuntimeReason, TestReport, TestResult,
    VerdictCut, VerdictKind,
};

/// The spec of the embedded defaults (`testfleet-common`'s `defaults.toml`,
/// whose test keeps the two equal), for tests that need a plain one.
pub fn sample_spec() -> RunSpec {
    RunSpec {
        image: "testfleet/busybox:latest".into(),
        command: ["sh", "-c", "echo no command configured for {id}; exit 1"]
            .map(String::from)
            .to_vec(),
        env: Default::default(),
        timeout_ms: 300_000,
        output_cap_bytes: 1 << 20,
        retry: RetryPolicy {
            threshold: 0.10,
            max_rounds: 3,
        },
        container: ContainerLimits {
            network: "none".into(),
            tmpfs: vec!["/tmp".into()],
            memory_bytes: Some(1 << 30),
            nano_cpus: None,
            pids_limit: Some(1024),
            no_new_privileges: true,
            cap_add: Vec::new(),
        },
        executor: ExecutorKind::Docker,
        workdir: None,
        container_mode: ContainerMode::Fresh,
        warm_reuse: 50,
        runtime: None,
        runner_report: None,
        user: None,
        secret_env: Vec::new(),
        quiet_timeout_ms: None,
    }
}

/// A number, often at an edge.
pub fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        0..100_000u64,
        any::<u64>(),
    ]
}

/// A small number of the wire's `u32` kind (attempts, rounds, counts).
pub fn count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), Just(u32::MAX), 0..10u32, any::<u32>()]
}

/// Text as tests and workers produce it, and as an attacker would.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_:/\\[\\]0-9.-]{0,24}",
        "\\PC{0,40}",
        ".{0,40}",
        "(<script>|&amp;|`|\\u{202e}|\\u{1b}\\[2J|\r|\n|\t| ){0,8}",
        Just("x".repeat(5_000)),
    ]
}

pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

pub fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Passed),
        Just(Outcome::Failed),
        Just(Outcome::TimedOut),
        Just(Outcome::Error),
    ]
}

pub fn attempt_status() -> impl Strategy<Value = AttemptStatus> {
    prop_oneof![
        outcome().prop_map(AttemptStatus::Ran),
        Just(AttemptStatus::Missing),
        count().prop_map(|deliveries| AttemptStatus::DeadLettered { deliveries }),
    ]
}

pub fn final_status() -> impl Strategy<Value = FinalStatus> {
    prop_oneof![
        Just(FinalStatus::Passed),
        Just(FinalStatus::Flaky),
        Just(FinalStatus::Failed),
        Just(FinalStatus::TimedOut),
        Just(FinalStatus::Error),
        Just(FinalStatus::Missing),
        Just(FinalStatus::DeadLettered),
    ]
}

pub fn verdict_kind() -> impl Strategy<Value = VerdictKind> {
    prop_oneof![
        Just(VerdictKind::Passed),
        Just(VerdictKind::TestsFailed),
        Just(VerdictKind::TooManyFailures),
        Just(VerdictKind::TestsMissing),
    ]
}

/// A spec with arbitrary numbers (the rest as the defaults have it).
pub fn spec() -> impl Strategy<Value = RunSpec> {
    (number(), number(), count(), any::<f64>(), vec(text(), 1..4)).prop_map(
        |(timeout_ms, output_cap_bytes, max_rounds, threshold, command)| {
            let mut spec = sample_spec();
            spec.timeout_ms = timeout_ms;
            spec.output_cap_bytes = output_cap_bytes;
            spec.retry.max_rounds = max_rounds;
            spec.retry.threshold = threshold;
            spec.command = command;
            spec
        },
    )
}

pub fn test_result() -> impl Strategy<Value = TestResult> {
    (
        (uuid(), text(), count(), outcome(), any::<Option<i64>>()),
        (number(), text(), number(), number(), number()),
        (
            text(),
            any::<bool>(),
            proptest::option::of(text()),
            proptest::option::of(runtime_reason()),
        ),
    )
        .prop_map(
            |(
                (run_id, test_id, attempt, outcome, exit_code),
                (duration_ms, worker_id, started_at_ms, finished_at_ms, published_at_ms),
                (output, output_truncated, message, reason),
            )| TestResult {
                run_id,
                test_id,
                attempt,
                outcome,
                exit_code,
                duration_ms,
                worker_id,
                started_at_ms,
                finished_at_ms,
                output,
                output_truncated,
                message,
                published_at_ms,
                batch: None,
                reason,
            },
        )
}

/// Any reason a worker may name, with any signal number.
pub fn runtime_reason() -> impl Strategy<Value = RuntimeReason> {
    prop_oneof![
        Just(RuntimeReason::Exit),
        any::<u8>().prop_map(RuntimeReason::Signal),
        Just(RuntimeReason::Oom),
        Just(RuntimeReason::HostOom),
        Just(RuntimeReason::Timeout),
        Just(RuntimeReason::NoOutputTimeout),
    ]
}

pub fn attempt_report() -> impl Strategy<Value = AttemptReport> {
    (
        (count(), attempt_status(), any::<Option<i64>>(), number()),
        (
            proptest::option::of("w[0-9]{0,2}"),
            proptest::option::of(number()),
            proptest::option::of(number()),
            proptest::option::of(number()),
        ),
        (
            proptest::option::of(text()),
            any::<bool>(),
            proptest::option::of(text()),
            proptest::option::of(runtime_reason()),
        ),
    )
        .prop_map(
            |(
                (attempt, status, exit_code, duration_ms),
                (worker_id, started_at_ms, finished_at_ms, published_at_ms),
                (output, output_truncated, message, reason),
            )| AttemptReport {
                attempt,
                status,
                exit_code,
                duration_ms,
                worker_id,
                started_at_ms,
                finished_at_ms,
                output,
                output_truncated,
                message,
                published_at_ms,
                batch: None,
                reason,
                signature: None,
            },
        )
}

pub fn test_report() -> impl Strategy<Value = TestReport> {
    (text(), final_status(), vec(attempt_report(), 0..4)).prop_map(|(id, status, attempts)| {
        TestReport {
            id,
            status,
            attempts,
            quarantined: None,
        }
    })
}

fn verdict_cut() -> impl Strategy<Value = VerdictCut> {
    (number(), number(), number(), text()).prop_map(
        |(outputs_shortened, output_bytes_cut, passed_tests_left_out, full_report)| VerdictCut {
            outputs_shortened,
            output_bytes_cut,
            passed_tests_left_out,
            full_report,
            batch_logs_left_out: 0,
        },
    )
}

fn ignored_result() -> impl Strategy<Value = IgnoredResult> {
    (text(), count(), text(), number(), number(), any::<bool>()).prop_map(
        |(test_id, attempt, worker_id, started_at_ms, finished_at_ms, duplicate)| IgnoredResult {
            test_id,
            attempt,
            worker_id,
            started_at_ms,
            finished_at_ms,
            reason: if duplicate {
                IgnoredReason::Duplicate
            } else {
                IgnoredReason::Stale
            },
        },
    )
}

/// A finished run's report with every number arbitrary.
pub fn run_report() -> impl Strategy<Value = RunReport> {
    (
        (uuid(), text(), number(), number(), count(), verdict_kind()),
        (spec(), vec(test_report(), 0..25)),
        (
            proptest::option::of(verdict_cut()),
            vec(ignored_result(), 0..3),
        ),
    )
        .prop_map(
            |(
                (run_id, suite, created_at_ms, finished_at_ms, rounds, verdict),
                (spec, tests),
                (verdict_cut, ignored_results),
            )| RunReport {
                run_id,
                suite,
                created_at_ms,
                finished_at_ms,
                rounds,
                verdict,
                spec,
                tests,
                verdict_cut,
                ignored_results,
                batches: Vec::new(),
                reports_error: None,
                flakiness: None,
                comparison: None,
                cache: None,
            },
        )
}

pub fn round_counts() -> impl Strategy<Value = RoundCounts> {
    (count(), count(), count(), count(), count(), count()).prop_map(
        |(passed, failed, timed_out, error, missing, dead_lettered)| RoundCounts {
            passed,
            failed,
            timed_out,
            error,
            missing,
            dead_lettered,
        },
    )
}

pub fn event_kind() -> impl Strategy<Value = RunEventKind> {
    prop_oneof![
        (text(), count(), text()).prop_map(|(test_id, attempt, worker_id)| {
            RunEventKind::TestStarted {
                test_id,
                attempt,
                worker_id,
            }
        }),
        (
            (text(), count(), attempt_status(), number()),
            (any::<Option<i64>>(), proptest::option::of(text()))
        )
            .prop_map(
                |((test_id, attempt, status, duration_ms), (exit_code, worker_id))| {
                    RunEventKind::TestFinished {
                        test_id,
                        attempt,
                        status,
                        duration_ms,
                        exit_code,
                        worker_id,
                    }
                }
            ),
        (text(), count())
            .prop_map(|(test_id, attempt)| RunEventKind::TestRetried { test_id, attempt }),
        (count(), round_counts(), count()).prop_map(|(round, counts, retrying)| {
            RunEventKind::RoundClosed {
                round,
                counts,
                retrying,
            }
        }),
    ]
}

pub fn run_event() -> impl Strategy<Value = RunEvent> {
    (uuid(), number(), event_kind()).prop_map(|(run_id, at_ms, kind)| RunEvent {
        run_id,
        at_ms,
        kind,
    })
}

/// Any body a peer might send.
pub fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        test_result().prop_map(Body::Result),
        vec(test_result(), 0..4).prop_map(Body::Results),
        run_event().prop_map(Body::Event),
        vec(run_event(), 0..4).prop_map(Body::Events),
        run_report().prop_map(Body::Report),
        (text(), vec((text(), number()), 0..5)).prop_map(|(suite, durations_ms)| Body::History(
            History {
                suite,
                durations_ms,
                batch_overhead_ms: None,
                host_busy_permille: None,
                capacity: None,
            }
        )),
        (vec((uuid(), count(), number()), 0..4), any::<bool>()).prop_map(|(runs, whole)| {
            let runs = runs
                .into_iter()
                .map(|(run_id, weight, deadline_ms)| RunQueue {
                    run_id,
                    weight,
                    deadline_ms,
                })
                .collect();
            Body::Queues(QueueNotice { runs, whole })
        }),
    ]
}
