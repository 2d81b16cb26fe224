//! `junit.xml`: the run as JUnit XML, the format CI systems read, written with
//! quick-junit.
//!
//! A test's final attempt is its main status; earlier failed attempts follow as
//! reruns. A test that passed after failing is a success with `<flakyFailure>` /
//! `<flakyError>` children, as Surefire writes flaky tests, so CI marks it flaky
//! rather than failed. A still-failing test gets `<rerunFailure>` / `<rerunError>`.
//! A quarantined test that did not pass is `<skipped>` with the quarantine's
//! reason and its failure in the message, so that CI systems (which fail a
//! build on failures and errors, never on skips) show it without failing;
//! every quarantined test carries a `quarantined` property, and a test the
//! suite's history knows a `flakiness` one. Of an A/B run, the file describes
//! the candidate alone.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use quick_junit::{
    NonSuccessKind, Report, SerializeError, TestCase, TestCaseStatus, TestRerun, TestSuite,
    XmlString,
};
use testfleet_types::messages::{
    AttemptReport, AttemptStatus, FinalStatus, Outcome, RunReport, TestReport,
};
use testfleet_types::sides::{self, Side};

use super::format::{
    attempt_status_str, describe_attempt, describe_final, failed_attempts, flakiness_note,
    last_attempt, rfc3339, run_duration_ms,
};

/// The report as a JUnit XML document.
pub fn render(report: &RunReport) -> Result<String, SerializeError> {
    document(&candidate_view(report)).to_string()
}

/// What the JUnit file describes: the run, or of an A/B run its candidate
/// alone, ids without their side's prefix (the comparison is in the other
/// reports; a CI system reads JUnit as the code under test's results).
fn candidate_view(report: &RunReport) -> Cow<'_, RunReport> {
    if report.comparison.is_none() {
        return Cow::Borrowed(report);
    }
    let tests = report
        .tests
        .iter()
        .filter_map(|test| match sides::split(&test.id) {
            Some((Side::Candidate, plain)) => Some(TestReport {
                id: plain.to_owned(),
                ..test.clone()
            }),
            _ => None,
        })
        .collect();
    Cow::Owned(RunReport {
        run_id: report.run_id,
        suite: report.suite.clone(),
        created_at_ms: report.created_at_ms,
        finished_at_ms: report.finished_at_ms,
        rounds: report.rounds,
        verdict: report.verdict,
        spec: report.spec.clone(),
        tests,
        verdict_cut: report.verdict_cut.clone(),
        ignored_results: Vec::new(),
        batches: Vec::new(),
        reports_error: report.reports_error.clone(),
        flakiness: report.flakiness.clone(),
        comparison: None,
        cache: None,
    })
}

/// Test cases per `<testsuite>` element when a run is written in parts.
/// quick-junit holds a whole document in memory, about 800 bytes a test case,
/// so a bigger run is written as several suites of this many tests (all with
/// the run's suite name), one at a time, under one `<testsuites>`.
const CASES_PER_PART: usize = 10_000;

/// [`render`] into `out` as it is serialized, a part at a time for big runs.
pub fn write(report: &RunReport, mut out: impl io::Write) -> Result<(), SerializeError> {
    let report = &*candidate_view(report);
    if report.tests.len() <= CASES_PER_PART {
        return document(report).serialize(out);
    }
    let parts = || report.tests.chunks(CASES_PER_PART);
    // The root element carries the totals, so they are counted first.
    let mut totals = frame(report);
    for part in parts() {
        let suite = suite(report, part);
        totals.tests += suite.tests;
        totals.failures += suite.failures;
        totals.errors += suite.errors;
        totals.skipped += suite.skipped;
    }
    let frame = totals.to_string()?;
    let (head, tail) = frame.split_at(frame.rfind("</testsuites>").expect("a closing root tag"));
    out.write_all(head.as_bytes())?;
    for part in parts() {
        let mut document = self::frame(report);
        document.add_test_suite(suite(report, part));
        out.write_all(suites_inside(&document.to_string()?).as_bytes())?;
    }
    out.write_all(tail.as_bytes())?;
    Ok(())
}

/// What a document holds between `<testsuites …>` and `</testsuites>`.
/// quick-xml escapes `>` in attribute values, so the first `>` after the
/// root's name ends its start tag.
fn suites_inside(document: &str) -> &str {
    let root = document.find("<testsuites").expect("a root tag");
    let start = root + document[root..].find('>').expect("an end to the root tag") + 1;
    let end = document.rfind("</testsuites>").expect("a closing root tag");
    document[start..end].trim_start_matches('\n')
}

fn document(report: &RunReport) -> Report {
    let mut junit = frame(report);
    junit.add_test_suite(suite(report, &report.tests));
    junit
}

/// The root element alone: the run's name, id and time.
fn frame(report: &RunReport) -> Report {
    let mut junit = Report::new(xml(&report.suite));
    junit
        .set_uuid(report.run_id)
        .set_time(Duration::from_millis(run_duration_ms(report)));
    junit
}

fn suite(report: &RunReport, tests: &[TestReport]) -> TestSuite {
    let mut suite = TestSuite::new(xml(&report.suite));
    suite.set_time(Duration::from_millis(run_duration_ms(report)));
    // quick-junit takes timestamps as chrono types; chrono is not a dependency of
    // ours, so the attribute goes in through `extra`. `set_timestamp` must then
    // stay unused, or the attribute would appear twice.
    suite.extra.insert(
        XmlString::new("timestamp"),
        XmlString::new(rfc3339(report.created_at_ms)),
    );
    suite.add_properties([
        ("run_id".to_owned(), report.run_id.to_string()),
        ("verdict".to_owned(), report.verdict.as_str().to_owned()),
        ("rounds".to_owned(), report.rounds.to_string()),
        ("image".to_owned(), report.spec.image.clone()),
    ]);
    suite.add_test_cases(tests.iter().map(|test| test_case(report, test)));
    suite
}

fn test_case(report: &RunReport, test: &TestReport) -> TestCase {
    let last = last_attempt(test);
    let mut case = TestCase::new(xml(&test.id), status(report, test, last));
    case.set_classname(xml(&report.suite));
    if let Some(attempt) = last {
        case.set_time(Duration::from_millis(attempt.duration_ms));
        if let Some(started) = attempt.started_at_ms {
            // Same reason as the suite's timestamp: no chrono here.
            case.extra.insert(
                XmlString::new("timestamp"),
                XmlString::new(rfc3339(started)),
            );
        }
        if let Some(worker) = &attempt.worker_id {
            case.add_property(("worker".to_owned(), worker.clone()));
        }
        if let Some(reason) = &test.quarantined {
            case.add_property(("quarantined".to_owned(), reason.clone()));
        }
        if let Some(flakiness) = &report.flakiness {
            if let Some(known) = flakiness.of(&test.id) {
                case.add_property((
                    "flakiness".to_owned(),
                    flakiness_note(known, flakiness.runs),
                ));
            }
        }
        if !test.status.is_pass() {
            if let Some(output) = output_text(report, attempt) {
                case.set_system_out(output);
            }
        }
    }
    case
}

fn status(report: &RunReport, test: &TestReport, last: Option<&AttemptReport>) -> TestCaseStatus {
    if test.status.is_pass() {
        // For a success quick-junit writes every rerun as <flakyFailure>/<flakyError>.
        let mut status = TestCaseStatus::success();
        status.add_reruns(failed_attempts(test).map(|a| rerun(report, a)));
        return status;
    }
    if let Some(reason) = &test.quarantined {
        let mut status = TestCaseStatus::skipped();
        status.set_message(xml(&format!(
            "quarantined ({reason}): {}",
            describe_final(test, &report.spec)
        )));
        return status;
    }
    let mut status = TestCaseStatus::non_success(final_kind(test.status));
    status
        .set_message(xml(&describe_final(test, &report.spec)))
        .set_type(test.status.as_str());
    if let Some(message) = last.and_then(|a| a.message.as_deref()) {
        status.set_description(xml(message));
    }
    let last_number = last.map(|a| a.attempt);
    status.add_reruns(
        failed_attempts(test)
            .filter(|a| Some(a.attempt) != last_number)
            .map(|a| rerun(report, a)),
    );
    status
}

fn rerun(report: &RunReport, attempt: &AttemptReport) -> TestRerun {
    let mut rerun = TestRerun::new(attempt_kind(attempt.status));
    rerun
        .set_time(Duration::from_millis(attempt.duration_ms))
        .set_message(xml(&format!(
            "attempt {}: {}",
            attempt.attempt,
            describe_attempt(attempt, &report.spec)
        )))
        .set_type(attempt_status_str(attempt.status));
    if let Some(output) = output_text(report, attempt) {
        rerun.set_system_out(output);
    }
    if let Some(message) = &attempt.message {
        rerun.set_description(xml(message));
    }
    rerun
}

/// JUnit's "failure" is the test's fault, "error" is not.
fn final_kind(status: FinalStatus) -> NonSuccessKind {
    match status {
        FinalStatus::Failed | FinalStatus::TimedOut => NonSuccessKind::Failure,
        _ => NonSuccessKind::Error,
    }
}

fn attempt_kind(status: AttemptStatus) -> NonSuccessKind {
    match status {
        AttemptStatus::Ran(Outcome::Failed | Outcome::TimedOut | Outcome::Passed) => {
            NonSuccessKind::Failure
        }
        AttemptStatus::Ran(Outcome::Error)
        | AttemptStatus::Missing
        | AttemptStatus::DeadLettered { .. } => NonSuccessKind::Error,
    }
}

/// The attempt's captured output, with a closing note when the worker cut it.
fn output_text(report: &RunReport, attempt: &AttemptReport) -> Option<XmlString> {
    // An empty <system-out/> only adds noise.
    let output = attempt.output.as_deref().filter(|o| !o.is_empty())?;
    if !attempt.output_truncated {
        return Some(xml(output));
    }
    let note = format!(
        "\n[testfleet: output truncated at the worker's cap of {} bytes]\n",
        report.spec.output_cap_bytes
    );
    Some(xml(&format!("{output}{note}")))
}

/// Text fit for XML 1.0. quick-junit drops ANSI escapes and C0 control characters
/// itself but lets U+FFFE and U+FFFF through, which XML 1.0 also forbids.
fn xml(text: &str) -> XmlString {
    XmlString::new(text.replace(['\u{FFFE}', '\u{FFFF}'], "\u{FFFD}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, WEIRD_ID};
    use crate::format::MISSING_MESSAGE;

    fn is_xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }

    fn case<'a>(suite: &'a TestSuite, name: &str) -> &'a TestCase {
        suite
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("no test case {name:?}"))
    }

    fn parse(xml: &str) -> TestSuite {
        let mut parsed = Report::deserialize_from_str(xml).expect("valid JUnit XML");
        assert_eq!(parsed.test_suites.len(), 1);
        parsed.test_suites.remove(0)
    }

    /// A run over `CASES_PER_PART` tests is written in parts that, read back,
    /// hold every test case once, under root totals that count them all.
    #[test]
    fn a_big_run_is_written_in_parts_with_whole_run_totals() {
        let mut report = fixture::sample_report();
        let sample = std::mem::take(&mut report.tests);
        let copies = CASES_PER_PART / sample.len() + 1;
        for copy in 0..copies {
            report.tests.extend(sample.iter().cloned().map(|mut test| {
                test.id = format!("{copy}/{}", test.id);
                test
            }));
        }
        let mut xml = Vec::new();
        write(&report, &mut xml).unwrap();
        let parsed = Report::deserialize_from_str(std::str::from_utf8(&xml).unwrap())
            .expect("valid JUnit XML");

        let tests = report.tests.len();
        assert_eq!(parsed.test_suites.len(), tests.div_ceil(CASES_PER_PART));
        assert_eq!(
            (parsed.tests, parsed.failures, parsed.errors),
            (tests, 3 * copies, 3 * copies)
        );
        let mut names: Vec<&str> = parsed
            .test_suites
            .iter()
            .flat_map(|s| s.test_cases.iter().map(|c| c.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), tests, "every test case once");
    }

    #[test]
    fn counts_match_the_final_statuses() {
        let report = fixture::sample_report();
        let xml = render(&report).unwrap();
        assert!(xml
            .contains(r#"<testsuites name="smoke" tests="9" skipped="0" failures="3" errors="3""#));
        assert!(xml
            .contains(r#"<testsuite name="smoke" tests="9" skipped="0" errors="3" failures="3""#));
        assert!(xml.contains(r#"timestamp="2023-11-14T22:13:20Z""#));
        let suite = parse(&xml);
        assert_eq!((suite.tests, suite.failures, suite.errors), (9, 3, 3));
    }

    #[test]
    fn output_is_valid_xml_whatever_the_ids_and_outputs_hold() {
        let xml = render(&fixture::sample_report()).unwrap();
        let bad: Vec<char> = xml.chars().filter(|&c| !is_xml_char(c)).collect();
        assert!(bad.is_empty(), "characters XML 1.0 forbids: {bad:?}");
        let suite = parse(&xml);
        // Control characters and the ANSI escape are gone; quotes, newline,
        // backticks, unicode and shell syntax survive the round trip.
        let weird = "we\"ird 'id'\nwith `ticks` ünïcødé 🚀 $(rm -rf /) <&> \u{FFFD}";
        let case = case(&suite, weird);
        assert_ne!(weird, WEIRD_ID);
        let out = case.system_out.as_deref().unwrap();
        assert!(
            out.contains("red") && out.contains("]]> </details>"),
            "{out:?}"
        );
        assert!(!out.contains('\u{1b}'));
        let long = fixture::long_id();
        assert!(suite.test_cases.iter().any(|c| c.name.as_str() == long));
    }

    #[test]
    fn flaky_test_is_a_success_with_a_flaky_failure() {
        let xml = render(&fixture::sample_report()).unwrap();
        let suite = parse(&xml);
        let TestCaseStatus::Success { flaky_runs } = &case(&suite, "flaky-1").status else {
            panic!("flaky test must be a success");
        };
        assert_eq!(flaky_runs.len(), 1);
        assert_eq!(flaky_runs[0].kind, NonSuccessKind::Failure);
        // quick-junit's reader trims text nodes; what was written ends with "\n".
        assert_eq!(flaky_runs[0].system_out.as_deref(), Some("flaky boom"));
        assert!(xml.contains("<system-out>flaky boom\n</system-out>"));
        assert!(flaky_runs[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with("attempt 1: failed with exit code 1"));
        assert_eq!(xml.matches("<flakyFailure").count(), 1);
        let passed = case(&suite, "pass-1");
        assert_eq!(passed.status, TestCaseStatus::success());
        assert_eq!(passed.time, Some(Duration::from_millis(1_234)));
    }

    fn non_success(case: &TestCase) -> (NonSuccessKind, Option<&str>, usize) {
        match &case.status {
            TestCaseStatus::NonSuccess {
                kind,
                message,
                reruns,
                ..
            } => (*kind, message.as_deref(), reruns.runs.len()),
            other => panic!("{:?}: expected a non-success, got {other:?}", case.name),
        }
    }

    #[test]
    fn failures_and_errors_carry_their_reason() {
        let xml = render(&fixture::sample_report()).unwrap();
        let suite = parse(&xml);

        let fail = case(&suite, "fail-1");
        assert_eq!(
            non_success(fail),
            (NonSuccessKind::Failure, Some("failed with exit code 2"), 1)
        );
        assert_eq!(fail.time, Some(Duration::from_millis(2 * 1_234)));
        let out = fail.system_out.as_deref().unwrap();
        assert!(out.starts_with("fail line 1\n"));
        assert!(out.ends_with(
            "fail line 25\n\n[testfleet: output truncated at the worker's cap of 1048576 bytes]"
        ));
        assert_eq!(xml.matches("<rerunFailure").count(), 2, "fail-1 and gone-1");

        let (kind, message, _) = non_success(case(&suite, "slow-1"));
        assert_eq!(kind, NonSuccessKind::Failure);
        assert!(message.unwrap().starts_with("timed out"), "{message:?}");

        let (kind, message, _) = non_success(case(&suite, "infra-1"));
        assert_eq!(kind, NonSuccessKind::Error);
        assert!(message
            .unwrap()
            .contains("image testfleet/busybox not found"));
        assert_eq!(
            case(&suite, "infra-1").system_out,
            None,
            "empty output is left out"
        );

        let (kind, message, _) = non_success(case(&suite, "dead-1"));
        assert_eq!(kind, NonSuccessKind::Error);
        assert!(message.unwrap().contains("5 deliveries"));

        assert_eq!(
            non_success(case(&suite, "gone-1")),
            (NonSuccessKind::Error, Some(MISSING_MESSAGE), 1)
        );
    }

    #[test]
    fn an_ab_runs_junit_describes_its_candidate() {
        let xml = render(&fixture::ab_report()).unwrap();
        assert!(xml.contains("name=\"lib-user\""), "{xml}");
        assert!(!xml.contains("base::") && !xml.contains("cand::"), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert!(xml.contains("libfoo: symbol v1_api not found"));
        assert!(
            !xml.contains("old bug"),
            "the baseline's failures are not the candidate's"
        );
    }
}
