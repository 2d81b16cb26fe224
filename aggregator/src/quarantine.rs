//! Quarantined tests: they run and are reported, marked as such, and their
//! failure fails nothing. A run's quarantine is its producer's list
//! (`run.quarantine_file`, expired entries already left out), and, when the
//! run asks for it (`run.auto_quarantine`), every test flaky in more than
//! that share of the suite's recent runs. Pure: the finishing task applies it
//! to a finished run's report before its reports and verdict go out.

use std::collections::HashMap;

use testfleet_types::messages::{Flakiness, Quarantine, RunReport, TestFlakiness, VerdictKind};
use testfleet_types::sides;

/// Runs a suite must have had before a test is quarantined automatically:
/// "flaky in 1 of 1" says nothing.
pub const MIN_RUNS_FOR_AUTO: u32 = 5;

/// What quarantines the tests of one run.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub listed: Vec<Quarantine>,
    /// Percent of recent runs a test must have been flaky in, strictly more.
    pub auto_percent: Option<u32>,
}

/// Marks the report's quarantined tests, and passes a run whose every test
/// that did not pass is quarantined. Entries that expired by `now_ms` hold
/// no longer. Linear in the tests and entries: each list is looked up by id.
pub fn apply(report: &mut RunReport, rules: &Rules, flakiness: Option<&Flakiness>, now_ms: u64) {
    let mut listed: HashMap<&str, &Quarantine> = HashMap::new();
    for entry in rules.listed.iter().filter(|e| e.expires_ms > now_ms) {
        listed.entry(entry.test_id.as_str()).or_insert(entry);
    }
    let flaky: HashMap<&str, &TestFlakiness> = flakiness
        .map(|f| f.tests.iter().map(|t| (t.test_id.as_str(), t)).collect())
        .unwrap_or_default();
    let compared = report.comparison.is_some();
    for test in &mut report.tests {
        // An A/B run's entries name plain ids, which both sides share.
        let listed_as = match sides::split(&test.id) {
            Some((_, plain)) if compared => plain,
            _ => test.id.as_str(),
        };
        test.quarantined = listed
            .get(listed_as)
            .map(|entry| entry.reason.clone())
            .or_else(|| {
                let known = flaky.get(listed_as)?;
                automatic(rules.auto_percent?, flakiness?.runs, known)
            });
    }
    if let Some(comparison) = &report.comparison {
        // Only a regression, or an id a side could not decide, fails an
        // A/B run.
        let quarantined: std::collections::HashSet<&str> = report
            .tests
            .iter()
            .filter(|t| t.quarantined.is_some())
            .filter_map(|t| Some(sides::split(&t.id)?.1))
            .collect();
        let every_failure_quarantined = comparison
            .failing_the_run()
            .all(|t| quarantined.contains(t.id.as_str()));
        if report.verdict == VerdictKind::TestsFailed && every_failure_quarantined {
            report.verdict = VerdictKind::Passed;
        }
        return;
    }
    let every_failure_quarantined = report
        .tests
        .iter()
        .all(|test| test.status.is_pass() || test.quarantined.is_some());
    if report.verdict != VerdictKind::Passed && every_failure_quarantined {
        report.verdict = VerdictKind::Passed;
    }
}

fn automatic(percent: u32, runs: u32, known: &TestFlakiness) -> Option<String> {
    let flaky = known.flaky;
    let over = u64::from(flaky) * 100 > u64::from(percent) * u64::from(runs);
    (runs >= MIN_RUNS_FOR_AUTO && over)
        .then(|| format!("automatic: flaky in {flaky} of the last {runs} runs (over {percent} %)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::{FinalStatus, TestReport};
    use testfleet_types::strategies::sample_spec;

    fn report(tests: &[(&str, FinalStatus)], verdict: VerdictKind) -> RunReport {
        RunReport {
            run_id: uuid::Uuid::nil(),
            suite: "s".into(),
            created_at_ms: 1,
            finished_at_ms: 2,
            rounds: 1,
            verdict,
            spec: sample_spec(),
            tests: tests
                .iter()
                .map(|(id, status)| TestReport {
                    id: id.to_string(),
                    status: *status,
                    attempts: Vec::new(),
                    quarantined: None,
                })
                .collect(),
            verdict_cut: None,
            ignored_results: Vec::new(),
            batches: Vec::new(),
            reports_error: None,
            flakiness: None,
            comparison: None,
            cache: None,
        }
    }

    fn entry(test_id: &str, expires_ms: u64) -> Quarantine {
        Quarantine {
            test_id: test_id.into(),
            reason: "known flaky".into(),
            expires_ms,
        }
    }

    #[test]
    fn an_ab_run_passes_when_its_regressions_are_quarantined_whatever_fails_on_both_sides() {
        use testfleet_types::messages::{CompareClass, ComparedTest, Comparison, SideTally};
        let compared = |id: &str, class| ComparedTest {
            id: id.into(),
            class,
            confirmed: true,
            baseline: SideTally::default(),
            candidate: SideTally::default(),
        };
        let ab_report = || {
            let mut run = report(
                &[
                    ("base::reg", FinalStatus::Passed),
                    ("cand::reg", FinalStatus::Failed),
                    ("base::both", FinalStatus::Failed),
                    ("cand::both", FinalStatus::Failed),
                ],
                VerdictKind::TestsFailed,
            );
            run.comparison = Some(Comparison {
                baseline_image: "old".into(),
                confirm: 1,
                tests: vec![
                    compared("reg", CompareClass::Regressed),
                    compared("both", CompareClass::Failing),
                ],
            });
            run
        };
        let rules = |id: &str| Rules {
            listed: vec![entry(id, 100)],
            auto_percent: None,
        };
        let mut run = ab_report();
        apply(&mut run, &rules("reg"), None, 1);
        assert_eq!(run.verdict, VerdictKind::Passed);
        assert!(run.tests[..2].iter().all(|t| t.quarantined.is_some()));
        let mut run = ab_report();
        apply(&mut run, &rules("both"), None, 1);
        assert_eq!(run.verdict, VerdictKind::TestsFailed);
    }

    #[test]
    fn a_run_failing_only_quarantined_tests_passes_and_says_which() {
        let mut run = report(
            &[("ok", FinalStatus::Passed), ("bad", FinalStatus::Failed)],
            VerdictKind::TestsFailed,
        );
        let rules = Rules {
            listed: vec![entry("bad", 100)],
            auto_percent: None,
        };
        apply(&mut run, &rules, None, 50);
        assert_eq!(run.verdict, VerdictKind::Passed);
        assert_eq!(run.tests[1].quarantined.as_deref(), Some("known flaky"));
        assert_eq!(run.tests[0].quarantined, None);
    }

    #[test]
    fn a_hundred_thousand_tests_and_entries_apply_in_linear_time() {
        let ids: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
        let statuses: Vec<(&str, FinalStatus)> = ids
            .iter()
            .map(|id| (id.as_str(), FinalStatus::Failed))
            .collect();
        let mut run = report(&statuses, VerdictKind::TestsFailed);
        let rules = Rules {
            listed: ids.iter().map(|id| entry(id, 100)).collect(),
            auto_percent: None,
        };
        let started = std::time::Instant::now();
        apply(&mut run, &rules, None, 50);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(run.verdict, VerdictKind::Passed);
    }

    #[test]
    fn an_expired_entry_holds_no_longer_and_another_failure_still_fails() {
        let mut run = report(&[("bad", FinalStatus::Failed)], VerdictKind::TestsFailed);
        let rules = Rules {
            listed: vec![entry("bad", 100)],
            auto_percent: None,
        };
        apply(&mut run, &rules, None, 100);
        assert_eq!(run.verdict, VerdictKind::TestsFailed, "expired");
        let mut run = report(
            &[
                ("bad", FinalStatus::Failed),
                ("worse", FinalStatus::TimedOut),
            ],
            VerdictKind::TestsFailed,
        );
        apply(&mut run, &rules, None, 50);
        assert_eq!(
            run.verdict,
            VerdictKind::TestsFailed,
            "worse is not quarantined"
        );
        assert!(run.tests[0].quarantined.is_some());
    }

    #[test]
    fn a_test_flaky_in_more_than_the_share_is_quarantined_automatically() {
        let flakiness = |runs, flaky| Flakiness {
            runs,
            tests: vec![TestFlakiness {
                test_id: "wobbly".into(),
                flaky,
                failed: 0,
            }],
        };
        let rules = Rules {
            listed: Vec::new(),
            auto_percent: Some(30),
        };
        let mut run = report(&[("wobbly", FinalStatus::Failed)], VerdictKind::TestsFailed);
        apply(&mut run, &rules, Some(&flakiness(10, 4)), 0);
        assert_eq!(run.verdict, VerdictKind::Passed);
        let reason = run.tests[0].quarantined.clone().unwrap();
        assert!(reason.contains("4 of the last 10"), "{reason}");

        for (runs, flaky) in [(10, 3), (4, 4)] {
            let mut run = report(&[("wobbly", FinalStatus::Failed)], VerdictKind::TestsFailed);
            apply(&mut run, &rules, Some(&flakiness(runs, flaky)), 0);
            assert_eq!(run.verdict, VerdictKind::TestsFailed, "{flaky} of {runs}");
        }
    }
}
