//! The verdict's copy of a finished run's report, fitted under a byte budget.
//!
//! The verdict carries the report to the waiting producer, which writes its
//! own reports from it. Outputs are what make a report big (up to the output
//! cap per failing attempt), so they are cut first: every output keeps its head
//! and tail within one per-output allowance chosen so that the total fits (the
//! shortest outputs stay whole). Batch logs go before that (each test keeps its
//! own output). Only when no output can stay are outputs
//! dropped, and only a run too big even then leaves out its passed tests (and an A/B
//! run's ids passing on both sides). What
//! was cut, and where the aggregator's full reports are, travels in
//! [`VerdictCut`], which the producer's reports show.

use std::collections::HashSet;

use testfleet_types::codec::encode;
use testfleet_types::messages::{Body, CompareClass, FinalStatus, RunReport, VerdictCut};
use testfleet_types::sides;

/// An output shorter than this is not worth keeping a piece of.
const MIN_KEPT_OUTPUT: usize = 512;
/// Room for the cut markers and rounding.
const SLACK_BYTES: usize = 64 << 10;

/// The report as the verdict carries it: whole when its encoding fits
/// `budget`, else cut as the module says, naming `full_report`.
pub fn fit(mut report: RunReport, budget: usize, full_report: &str) -> RunReport {
    let size = encoded_size(&report);
    if size <= budget {
        return report;
    }
    let mut cut = VerdictCut {
        outputs_shortened: 0,
        output_bytes_cut: 0,
        passed_tests_left_out: 0,
        full_report: full_report.to_owned(),
        batch_logs_left_out: 0,
    };
    // Batch logs first: each test's own output says more about it.
    for batch in &mut report.batches {
        if batch.log.take().is_some() {
            cut.batch_logs_left_out += 1;
        }
    }
    let size = encoded_size(&report);
    if size <= budget {
        report.verdict_cut = Some(cut);
        return report;
    }
    let outputs: usize = outputs(&report).map(String::len).sum();
    let room = budget.saturating_sub(size - outputs + SLACK_BYTES);
    let allowance = allowance(outputs_lengths(&report), room);
    shorten_outputs(&mut report, allowance, &mut cut);
    if encoded_size(&report) > budget {
        leave_out_passed_tests(&mut report, &mut cut);
    }
    report.verdict_cut = Some(cut);
    report
}

fn encoded_size(report: &RunReport) -> usize {
    // The body is cloned only to encode it; a report that needs fitting is
    // encoded a few times at most.
    encode(&Body::Report(report.clone())).len()
}

fn outputs(report: &RunReport) -> impl Iterator<Item = &String> {
    report
        .tests
        .iter()
        .flat_map(|t| &t.attempts)
        .filter_map(|a| a.output.as_ref())
}

fn outputs_lengths(report: &RunReport) -> Vec<usize> {
    outputs(report).map(String::len).collect()
}

/// The largest per-output length such that the outputs, each cut to it, add
/// up to at most `room` (water-filling); 0 when even that leaves too little.
fn allowance(mut lengths: Vec<usize>, room: usize) -> usize {
    lengths.sort_unstable();
    let mut left = room;
    let mut remaining = lengths.len();
    for length in lengths {
        let share = left / remaining.max(1);
        if length > share {
            return if share >= MIN_KEPT_OUTPUT { share } else { 0 };
        }
        left -= length;
        remaining -= 1;
    }
    usize::MAX
}

fn shorten_outputs(report: &mut RunReport, allowance: usize, cut: &mut VerdictCut) {
    let full_report = cut.full_report.clone();
    for attempt in report.tests.iter_mut().flat_map(|t| &mut t.attempts) {
        let Some(output) = attempt.output.take() else {
            continue;
        };
        if output.len() <= allowance {
            attempt.output = Some(output);
            continue;
        }
        cut.outputs_shortened += 1;
        cut.output_bytes_cut += (output.len() - allowance) as u64;
        attempt.output_truncated = true;
        attempt.output = (allowance > 0).then(|| head_and_tail(&output, allowance, &full_report));
    }
}

/// `text`'s first and last `keep / 2` bytes (at character boundaries) around a
/// line saying how much was cut and where the whole is.
fn head_and_tail(text: &str, keep: usize, full_report: &str) -> String {
    let half = keep / 2;
    let head_end = (0..=half)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let tail_start = (text.len() - half..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    let cut = tail_start - head_end;
    format!(
        "{}\n[… testfleet cut {cut} bytes here to fit the verdict message; the whole output is in the aggregator's reports: {full_report} …]\n{}",
        &text[..head_end],
        &text[tail_start..]
    )
}

/// Leaves out the tests that passed; of an A/B run, both sides of the ids
/// passing on both (a regression's passing baseline stays, as its log is
/// what the regression is compared with).
fn leave_out_passed_tests(report: &mut RunReport, cut: &mut VerdictCut) {
    let before = report.tests.len();
    match &mut report.comparison {
        Some(comparison) => {
            let passing: HashSet<String> = comparison
                .of_class(CompareClass::Passing)
                .map(|t| t.id.clone())
                .collect();
            report
                .tests
                .retain(|t| !sides::split(&t.id).is_some_and(|(_, plain)| passing.contains(plain)));
            comparison
                .tests
                .retain(|t| t.class != CompareClass::Passing);
        }
        None => report.tests.retain(|t| t.status != FinalStatus::Passed),
    }
    cut.passed_tests_left_out = (before - report.tests.len()) as u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::{
        AttemptReport, AttemptStatus, Outcome, TestReport, VerdictKind,
    };

    fn report(outputs: &[usize], passed: usize) -> RunReport {
        let attempt = |output: Option<String>, outcome| AttemptReport {
            attempt: 1,
            status: AttemptStatus::Ran(outcome),
            exit_code: Some(1),
            duration_ms: 1,
            worker_id: Some("w".into()),
            started_at_ms: Some(1),
            finished_at_ms: Some(2),
            output,
            output_truncated: false,
            message: None,
            published_at_ms: None,
            batch: None,
            reason: None,
            signature: None,
        };
        let failing = outputs.iter().enumerate().map(|(i, &len)| TestReport {
            id: format!("failing-{i}"),
            status: FinalStatus::Failed,
            attempts: vec![attempt(Some("x".repeat(len)), Outcome::Failed)],
            quarantined: None,
        });
        let passing = (0..passed).map(|i| TestReport {
            id: format!("passing-{i:06}-with-a-longish-name-as-real-suites-have"),
            status: FinalStatus::Passed,
            attempts: vec![attempt(None, Outcome::Passed)],
            quarantined: None,
        });
        RunReport {
            run_id: uuid::Uuid::nil(),
            suite: "s".into(),
            created_at_ms: 0,
            finished_at_ms: 1,
            rounds: 1,
            verdict: VerdictKind::TestsFailed,
            spec: testfleet_common::config::default_spec(),
            tests: failing.chain(passing).collect(),
            verdict_cut: None,
            ignored_results: Vec::new(),
            batches: Vec::new(),
            reports_error: None,
            flakiness: None,
            comparison: None,
            cache: None,
        }
    }

    #[test]
    fn a_report_that_fits_is_untouched() {
        let small = report(&[100, 200], 10);
        assert_eq!(fit(small.clone(), 1 << 20, "h:/r"), small);
    }

    #[test]
    fn big_outputs_are_cut_to_fit_and_short_ones_kept_whole() {
        // 200 failing tests printing 1 MiB each, and one printing 10 bytes.
        let mut lengths = vec![1 << 20; 200];
        lengths.push(10);
        let fitted = fit(report(&lengths, 0), 8 << 20, "agg-host:/srv/reports/run");
        assert!(
            encoded_size(&fitted) <= 8 << 20,
            "{}",
            encoded_size(&fitted)
        );
        let cut = fitted.verdict_cut.clone().unwrap();
        assert_eq!(cut.outputs_shortened, 200);
        assert_eq!(cut.passed_tests_left_out, 0);
        assert!(cut.output_bytes_cut > 190 << 20, "{cut:?}");
        let kept = fitted.tests[0].attempts[0].output.as_deref().unwrap();
        assert!(kept.contains("agg-host:/srv/reports/run"), "says where");
        assert!(kept.starts_with("xxx") && kept.ends_with("xxx"));
        assert!(fitted.tests[0].attempts[0].output_truncated);
        assert_eq!(
            fitted.tests[200].attempts[0].output.as_deref(),
            Some("xxxxxxxxxx"),
            "a short output stays whole"
        );
    }

    #[test]
    fn a_huge_run_leaves_out_passed_tests_but_keeps_every_failure() {
        let fitted = fit(report(&[1 << 20, 1 << 20], 60_000), 1 << 20, "h:/r");
        assert!(encoded_size(&fitted) <= 1 << 20);
        let cut = fitted.verdict_cut.unwrap();
        assert_eq!(cut.passed_tests_left_out, 60_000);
        assert_eq!(fitted.tests.len(), 2, "both failures kept");
    }

    /// Of an A/B run, only the ids passing on both sides go: a regression
    /// keeps its passing baseline, a fix its passing candidate.
    #[test]
    fn a_huge_ab_run_keeps_both_sides_of_every_difference() {
        use testfleet_types::messages::{ComparedTest, Comparison, SideTally};
        let mut run = report(&[], 30_000);
        let compared = |id: &str, class| ComparedTest {
            id: id.into(),
            class,
            confirmed: true,
            baseline: SideTally::default(),
            candidate: SideTally::default(),
        };
        let mut tests = Vec::new();
        let mut compared_tests = Vec::new();
        for (i, test) in run.tests.drain(..).enumerate() {
            let plain = test.id.clone();
            let class = match i {
                0 => CompareClass::Regressed,
                1 => CompareClass::Fixed,
                _ => CompareClass::Passing,
            };
            compared_tests.push(compared(&plain, class));
            for side in [sides::Side::Baseline, sides::Side::Candidate] {
                let mut test = test.clone();
                test.id = sides::side_id(side, &plain);
                tests.push(test);
            }
        }
        run.tests = tests;
        run.comparison = Some(Comparison {
            baseline_image: "old".into(),
            confirm: 1,
            tests: compared_tests,
        });
        let fitted = fit(run, 1 << 20, "h:/r");
        assert!(encoded_size(&fitted) <= 1 << 20);
        assert_eq!(fitted.verdict_cut.unwrap().passed_tests_left_out, 59_996);
        assert_eq!(fitted.tests.len(), 4, "both sides of both differences");
        let classes: Vec<CompareClass> = fitted
            .comparison
            .unwrap()
            .tests
            .iter()
            .map(|t| t.class)
            .collect();
        assert_eq!(classes, [CompareClass::Regressed, CompareClass::Fixed]);
    }

    #[test]
    fn batch_logs_go_before_any_tests_own_output() {
        let mut report = report(&[1_000], 0);
        report.batches = (0..4)
            .map(|_| testfleet_types::messages::BatchRecord {
                id: uuid::Uuid::new_v4(),
                run_id: uuid::Uuid::nil(),
                attempt: 1,
                worker_id: "w".into(),
                tests: 1,
                reported: 1,
                started_at_ms: 1,
                command_started_at_ms: 2,
                finished_at_ms: 3,
                exit_code: Some(1),
                timed_out: false,
                log: Some("y".repeat(100_000)),
                log_truncated: false,
                split_into: 0,
                host_busy_permille: None,
            })
            .collect();
        let fitted = fit(report, 50_000, "h:/r");
        let cut = fitted.verdict_cut.clone().unwrap();
        assert_eq!(cut.batch_logs_left_out, 4);
        assert_eq!(cut.outputs_shortened, 0, "the test's own output stays");
        assert!(fitted.batches.iter().all(|b| b.log.is_none()));
    }

    #[test]
    fn the_allowance_fills_the_room_with_the_shortest_whole() {
        assert_eq!(allowance(vec![10, 20, 30], 100), usize::MAX);
        assert_eq!(allowance(vec![10, 10_000, 10_000], 2_010), 1_000);
        assert_eq!(allowance(vec![10_000; 100], 1_000), 0, "too little room");
    }
}
