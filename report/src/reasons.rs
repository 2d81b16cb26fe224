//! The tests that did not pass, grouped by why their last attempt did not
//! (`vocabulary::reason_of`: what the runtime saw, a log-signature rule, the
//! exit code): the campaign's count by reason, for `report.json` and the
//! Markdown summary.

use testfleet_types::messages::{AttemptReport, FinalStatus, RunReport};
use testfleet_types::vocabulary::{reason_of, Reason};

/// One reason and the tests it ended, in the report's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonGroup<'a> {
    pub reason: Reason,
    pub tests: Vec<&'a str>,
}

/// Every test whose final status is not a pass, by its last attempt's
/// reason; the biggest group first, then by name.
pub fn by_reason(report: &RunReport) -> Vec<ReasonGroup<'_>> {
    let mut groups: Vec<ReasonGroup<'_>> = Vec::new();
    let not_passed = report
        .tests
        .iter()
        .filter(|t| !matches!(t.status, FinalStatus::Passed | FinalStatus::Flaky));
    for test in not_passed {
        let Some(reason) = test.attempts.last().and_then(reason_of_attempt) else {
            continue;
        };
        match groups.iter_mut().find(|g| g.reason == reason) {
            Some(group) => group.tests.push(&test.id),
            None => groups.push(ReasonGroup {
                reason,
                tests: vec![&test.id],
            }),
        }
    }
    groups.sort_by(|a, b| (b.tests.len(), &a.reason.name).cmp(&(a.tests.len(), &b.reason.name)));
    groups
}

/// Why an attempt did not pass, as every report names it.
pub fn reason_of_attempt(attempt: &AttemptReport) -> Option<Reason> {
    let rule = attempt
        .signature
        .as_ref()
        .map(|s| (s.name.as_str(), s.fleet_fault));
    reason_of(attempt.status, attempt.reason, attempt.exit_code, rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn every_test_that_did_not_pass_is_in_one_group_the_biggest_first() {
        let report = fixture::sample_report();
        let groups = by_reason(&report);
        let not_passed = report
            .tests
            .iter()
            .filter(|t| !matches!(t.status, FinalStatus::Passed | FinalStatus::Flaky))
            .count();
        assert_eq!(
            groups.iter().map(|g| g.tests.len()).sum::<usize>(),
            not_passed
        );
        assert!(groups
            .windows(2)
            .all(|w| w[0].tests.len() >= w[1].tests.len()));
        let names: Vec<&str> = groups.iter().map(|g| g.reason.name.as_str()).collect();
        assert!(
            names.contains(&"timeout") && names.contains(&"missing"),
            "{names:?}"
        );
    }
}
