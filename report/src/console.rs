//! The short plain-text summary printed to the console when a run ends.

use testfleet_types::messages::{Comparison, FinalStatus, RunReport};

use super::compare;
use super::format::{
    cache_line, counts_line, did_not_pass, flakiest, flakiness_note, one_line, plural,
    run_duration_ms, seconds, test_notes, verdict_cut_note,
};

/// Statuses whose tests are named, in this order.
const NAMED: [FinalStatus; 6] = [
    FinalStatus::Failed,
    FinalStatus::TimedOut,
    FinalStatus::Flaky,
    FinalStatus::Missing,
    FinalStatus::DeadLettered,
    FinalStatus::Error,
];

/// Names listed per status; a terminal is no place for thousands of ids.
const MAX_NAMES: usize = 20;
/// The suite's flakiest tests listed.
const MAX_FLAKIEST: usize = 5;
const MAX_ID_CHARS: usize = 200;

/// Verdict, counts, rounds, duration, then the names of the tests that did not
/// simply pass. Ids are shown escaped, so an id holding terminal escape codes
/// cannot repaint the console.
pub fn console_summary(report: &RunReport) -> String {
    let verdict = if report.verdict.exit_code() == 0 {
        "PASSED"
    } else {
        "FAILED"
    };
    let mut out = format!(
        "testfleet: {verdict} ({}, exit code {})\n",
        report.verdict.as_str(),
        report.verdict.exit_code()
    );
    out.push_str(&format!(
        "suite {} · run {} · {} · {}\n",
        one_line(&report.suite, MAX_ID_CHARS),
        report.run_id,
        plural(report.rounds as usize, "round"),
        seconds(run_duration_ms(report)),
    ));
    out.push_str(&counts_line(report));
    out.push('\n');
    let cut = verdict_cut_note(report);
    if !cut.is_empty() {
        out.push_str(&cut);
        out.push('\n');
    }
    let cache = cache_line(report);
    if !cache.is_empty() {
        out.push_str(&format!("cache: {cache}\n"));
    }
    match &report.comparison {
        Some(comparison) => out.push_str(&compared_lines(report, comparison)),
        None => {
            for status in NAMED {
                out.push_str(&names(report, status));
            }
        }
    }
    out.push_str(&flakiest_lines(report));
    out
}

/// The suite's flakiest tests over its recent runs, when the aggregator knew.
fn flakiest_lines(report: &RunReport) -> String {
    let flakiest = flakiest(report, MAX_FLAKIEST);
    let Some(flakiness) = report.flakiness.as_ref().filter(|_| !flakiest.is_empty()) else {
        return String::new();
    };
    let mut out = format!(
        "flakiest of the suite (last {}):\n",
        plural(flakiness.runs as usize, "run")
    );
    for test in flakiest {
        out.push_str(&format!(
            "  {}  ({})\n",
            one_line(&test.test_id, MAX_ID_CHARS),
            flakiness_note(test, flakiness.runs)
        ));
    }
    out
}

/// An A/B run's headline, then its differences by class, regressions first
/// with the candidate's reason.
fn compared_lines(report: &RunReport, comparison: &Comparison) -> String {
    let mut out = format!("{}\n", compare::headline(comparison));
    for class in compare::DIFFERENCES {
        let ids = compare::of_class(report, class);
        if ids.is_empty() {
            continue;
        }
        out.push_str(&format!("{} ({}):\n", class.name(), ids.len()));
        for sides in ids.iter().take(MAX_NAMES) {
            let reason = sides
                .candidate
                .and_then(|t| t.attempts.iter().rev().find(|a| did_not_pass(a)))
                .and_then(crate::reasons::reason_of_attempt)
                .map(|r| format!("  ({})", r.name))
                .unwrap_or_default();
            let id = one_line(&sides.compared.id, MAX_ID_CHARS);
            out.push_str(&format!("  {id}{reason}\n"));
        }
        if ids.len() > MAX_NAMES {
            out.push_str(&format!("  … and {} more\n", ids.len() - MAX_NAMES));
        }
    }
    out
}

fn names(report: &RunReport, status: FinalStatus) -> String {
    let count = report.count(status);
    if count == 0 {
        return String::new();
    }
    let mut out = format!("{} ({count}):\n", status.as_str());
    for test in report.with_status(status).take(MAX_NAMES) {
        let notes = test_notes(report, test);
        match notes.is_empty() {
            true => out.push_str(&format!("  {}\n", one_line(&test.id, MAX_ID_CHARS))),
            false => out.push_str(&format!(
                "  {}  ({})\n",
                one_line(&test.id, MAX_ID_CHARS),
                one_line(&notes, MAX_ID_CHARS)
            )),
        }
    }
    if count > MAX_NAMES {
        out.push_str(&format!("  … and {} more\n", count - MAX_NAMES));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use testfleet_types::messages::{Outcome, VerdictKind};

    #[test]
    fn summary_names_every_test_that_did_not_simply_pass() {
        let report = fixture::sample_report();
        let summary = console_summary(&report);
        let expected_head = format!(
            "testfleet: FAILED (tests missing at the deadline, exit code 4)\n\
             suite smoke · run {} · 2 rounds · 61.500 s\n\
             9 tests: 2 passed, 2 failed, 1 timed out, 1 flaky, 1 missing, 1 dead-lettered, 1 error\n\
             failed (2):\n  fail-1\n  we\"ird 'id'\\nwith `ticks` ",
            report.run_id
        );
        assert!(summary.starts_with(&expected_head), "{summary}");
        for part in [
            "timed out (1):\n  slow-1\n",
            "flaky (1):\n  flaky-1\n",
            "missing (1):\n  gone-1\n",
            "dead-lettered (1):\n  dead-1\n",
            "error (1):\n  infra-1\n",
        ] {
            assert!(summary.contains(part), "no {part:?} in\n{summary}");
        }
        assert!(
            !summary.contains('\u{1b}'),
            "escape codes are shown, not sent"
        );
        assert!(!summary.contains("pass-1"));
    }

    #[test]
    fn long_lists_are_cut() {
        let tests = (0..25)
            .map(|i| {
                fixture::test(
                    &format!("t{i}"),
                    FinalStatus::Failed,
                    vec![fixture::ran(1, Outcome::Failed, Some(1), "")],
                )
            })
            .collect();
        let summary = console_summary(&fixture::report_with(tests, VerdictKind::TestsFailed));
        assert!(summary.contains("  t19\n  … and 5 more\n"), "{summary}");
        assert!(!summary.contains("t20"));
    }

    #[test]
    fn an_ab_run_names_its_regressions_first() {
        let text = console_summary(&fixture::ab_report());
        let headline = text.find("1 confirmed regression of 4 ids").unwrap();
        let regressed = text.find("regressed (1):\n  lib-user  (exit:1)\n").unwrap();
        let fixed = text.find("fixed (1):\n  fixed-app\n").unwrap();
        assert!(headline < regressed && regressed < fixed, "{text}");
        assert!(!text.contains("cand::"), "{text}");
    }
}
