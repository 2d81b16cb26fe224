//! A hand-built run report covering every final status, and unique temp dirs,
//! for the renderers' unit tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use testfleet_types::messages::{
    AttemptReport, AttemptStatus, CompareClass, ComparedTest, Comparison, FinalStatus, Outcome,
    RetryPolicy, RunReport, RunSpec, RuntimeReason, SideTally, TestReport, VerdictKind,
};
use uuid::Uuid;

/// An id built to break naive renderers: quotes, a newline, backticks, unicode,
/// shell syntax, an ANSI escape and characters XML 1.0 forbids.
pub const WEIRD_ID: &str =
    "we\"ird 'id'\nwith `ticks` ünïcødé 🚀 $(rm -rf /) <&> \u{1b}[31m\u{0}\u{FFFF}";
pub const CREATED_AT_MS: u64 = 1_700_000_000_000;

pub fn long_id() -> String {
    format!("long/{}", "é".repeat(5_000))
}

pub fn spec() -> RunSpec {
    let mut spec = testfleet_types::strategies::sample_spec();
    spec.image = "testfleet/busybox".into();
    spec.command = vec!["sh".into(), "-c".into(), "run {id}".into()];
    spec.timeout_ms = 5_000;
    spec.retry = RetryPolicy {
        threshold: 0.5,
        max_rounds: 2,
    };
    spec
}

/// An attempt that ran, with its output kept only when it did not pass, as the
/// aggregator records it.
pub fn ran(attempt: u32, outcome: Outcome, exit_code: Option<i64>, output: &str) -> AttemptReport {
    let started = CREATED_AT_MS + u64::from(attempt) * 10_000;
    AttemptReport {
        attempt,
        status: AttemptStatus::Ran(outcome),
        exit_code,
        duration_ms: 1_234 * u64::from(attempt),
        worker_id: Some("worker-a".into()),
        started_at_ms: Some(started),
        finished_at_ms: Some(started + 1_234),
        output: (outcome != Outcome::Passed).then(|| output.to_owned()),
        output_truncated: false,
        message: None,
        published_at_ms: None,
        batch: None,
        reason: (outcome != Outcome::Passed).then_some(RuntimeReason::Exit),
        signature: None,
    }
}

/// An attempt that never produced a result.
pub fn unrun(attempt: u32, status: AttemptStatus, message: Option<&str>) -> AttemptReport {
    AttemptReport {
        attempt,
        status,
        exit_code: None,
        duration_ms: 0,
        worker_id: None,
        started_at_ms: None,
        finished_at_ms: None,
        output: None,
        output_truncated: false,
        message: message.map(str::to_owned),
        published_at_ms: None,
        batch: None,
        reason: None,
        signature: None,
    }
}

pub fn test(id: &str, status: FinalStatus, attempts: Vec<AttemptReport>) -> TestReport {
    TestReport {
        id: id.to_owned(),
        status,
        attempts,
        quarantined: None,
    }
}

/// 25 numbered lines, so that a 20-line tail is visible.
pub fn numbered_output(prefix: &str) -> String {
    (1..=25).map(|i| format!("{prefix} line {i}\n")).collect()
}

pub fn report_with(tests: Vec<TestReport>, verdict: VerdictKind) -> RunReport {
    RunReport {
        run_id: Uuid::new_v4(),
        suite: "smoke".into(),
        created_at_ms: CREATED_AT_MS,
        finished_at_ms: CREATED_AT_MS + 61_500,
        rounds: 2,
        verdict,
        spec: spec(),
        tests,
        verdict_cut: None,
        ignored_results: Vec::new(),
        batches: Vec::new(),
        reports_error: None,
        flakiness: None,
        comparison: None,
        cache: None,
    }
}

/// Nine tests: one per final status, plus a second failure with the weird id
/// and a passing test with a 10 KB id.
/// Counts: 2 passed, 2 failed, 1 timed out, 1 flaky, 1 missing, 1 dead-lettered, 1 error.
pub fn sample_report() -> RunReport {
    let mut truncated = ran(2, Outcome::Failed, Some(2), &numbered_output("fail"));
    truncated.output_truncated = true;
    let mut infra = ran(1, Outcome::Error, None, "");
    infra.message = Some("image testfleet/busybox not found".into());
    let tests = vec![
        test(
            "pass-1",
            FinalStatus::Passed,
            vec![ran(1, Outcome::Passed, Some(0), "")],
        ),
        test(
            "flaky-1",
            FinalStatus::Flaky,
            vec![
                ran(1, Outcome::Failed, Some(1), "flaky boom\n"),
                ran(2, Outcome::Passed, Some(0), ""),
            ],
        ),
        test(
            "fail-1",
            FinalStatus::Failed,
            vec![ran(1, Outcome::Failed, Some(1), "first try\n"), truncated],
        ),
        test(
            WEIRD_ID,
            FinalStatus::Failed,
            vec![ran(
                1,
                Outcome::Failed,
                Some(3),
                "\u{1b}[31mred\u{1b}[0m\u{0}\u{FFFF} ```` fence ]]> </details>\n",
            )],
        ),
        test(
            "slow-1",
            FinalStatus::TimedOut,
            vec![ran(1, Outcome::TimedOut, Some(137), "waiting for godot\n")],
        ),
        test("infra-1", FinalStatus::Error, vec![infra]),
        test(
            "dead-1",
            FinalStatus::DeadLettered,
            vec![unrun(
                1,
                AttemptStatus::DeadLettered { deliveries: 5 },
                Some("delivery limit reached"),
            )],
        ),
        test(
            "gone-1",
            FinalStatus::Missing,
            vec![
                ran(1, Outcome::Failed, Some(1), "gone first\n"),
                unrun(2, AttemptStatus::Missing, None),
            ],
        ),
        test(
            &long_id(),
            FinalStatus::Passed,
            vec![ran(1, Outcome::Passed, Some(0), "")],
        ),
    ];
    report_with(tests, VerdictKind::TestsMissing)
}

/// An A/B run of four ids, confirmed twice: `lib-user` regressed (its
/// candidate's log says why), `fixed-app` fixed, `both-broken` failing on
/// both sides, `ok-app` passing.
pub fn ab_report() -> RunReport {
    let pass = |n| ran(n, Outcome::Passed, Some(0), "");
    let fail = |n, log: &str| ran(n, Outcome::Failed, Some(1), log);
    let sided = |id: &str, status, attempts: Vec<AttemptReport>| test(id, status, attempts);
    let tests = vec![
        sided(
            "base::lib-user",
            FinalStatus::Passed,
            vec![pass(1), pass(2), pass(3)],
        ),
        sided(
            "cand::lib-user",
            FinalStatus::Failed,
            (1..=3)
                .map(|n| fail(n, "libfoo: symbol v1_api not found\n"))
                .collect(),
        ),
        sided(
            "base::fixed-app",
            FinalStatus::Failed,
            (1..=3).map(|n| fail(n, "old bug\n")).collect(),
        ),
        sided(
            "cand::fixed-app",
            FinalStatus::Passed,
            vec![pass(1), pass(2), pass(3)],
        ),
        sided(
            "base::both-broken",
            FinalStatus::Failed,
            vec![fail(1, "broken\n")],
        ),
        sided(
            "cand::both-broken",
            FinalStatus::Failed,
            vec![fail(1, "broken\n")],
        ),
        sided("base::ok-app", FinalStatus::Passed, vec![pass(1)]),
        sided("cand::ok-app", FinalStatus::Passed, vec![pass(1)]),
    ];
    let mut report = report_with(tests, VerdictKind::TestsFailed);
    report.rounds = 3;
    let tally = |passed, failed| SideTally {
        passed,
        failed,
        infra: 0,
    };
    let compared = |id: &str, class, confirmed, baseline, candidate| ComparedTest {
        id: id.into(),
        class,
        confirmed,
        baseline,
        candidate,
    };
    report.comparison = Some(Comparison {
        baseline_image: "testfleet/busybox:old".into(),
        confirm: 2,
        tests: vec![
            compared(
                "lib-user",
                CompareClass::Regressed,
                true,
                tally(3, 0),
                tally(0, 3),
            ),
            compared(
                "fixed-app",
                CompareClass::Fixed,
                true,
                tally(0, 3),
                tally(3, 0),
            ),
            compared(
                "both-broken",
                CompareClass::Failing,
                false,
                tally(0, 1),
                tally(0, 1),
            ),
            compared(
                "ok-app",
                CompareClass::Passing,
                false,
                tally(1, 0),
                tally(1, 0),
            ),
        ],
    });
    report
}

/// A fresh directory under the system temp dir, unique per call and process.
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "testfleet-report-{tag}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}
