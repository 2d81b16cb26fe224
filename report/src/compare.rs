//! An A/B run's comparison as the renderers show it: each compared id with
//! its two sides' tests found in the report, classes in the order reports
//! list them (regressions first), and the one line that leads every report.

use std::collections::HashMap;

use testfleet_types::messages::{CompareClass, ComparedTest, Comparison, RunReport, TestReport};
use testfleet_types::sides::{self, Side};

use crate::format::plural;

/// One compared id and its sides' tests (`None`: a side the report left out,
/// as a shortened verdict does with tests that passed).
#[derive(Debug, Clone, Copy)]
pub struct Sides<'a> {
    pub compared: &'a ComparedTest,
    pub baseline: Option<&'a TestReport>,
    pub candidate: Option<&'a TestReport>,
}

/// The classes that differ between the sides, in the order every report
/// lists them: regressions first.
pub const DIFFERENCES: [CompareClass; 4] = [
    CompareClass::Regressed,
    CompareClass::Fixed,
    CompareClass::Flaky,
    CompareClass::Infra,
];

/// Every compared id of `class`, with its sides, in the run's order.
pub fn of_class(report: &RunReport, class: CompareClass) -> Vec<Sides<'_>> {
    let Some(comparison) = &report.comparison else {
        return Vec::new();
    };
    let wanted: Vec<&ComparedTest> = comparison.of_class(class).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let tests: HashMap<&str, &TestReport> =
        report.tests.iter().map(|t| (t.id.as_str(), t)).collect();
    let side = |side, id: &str| tests.get(sides::side_id(side, id).as_str()).copied();
    wanted
        .into_iter()
        .map(|compared| Sides {
            compared,
            baseline: side(Side::Baseline, &compared.id),
            candidate: side(Side::Candidate, &compared.id),
        })
        .collect()
}

/// The line every report of an A/B run leads with: "2 confirmed
/// regressions of 40 ids (3 confirmations each)", with what else stands out.
pub fn headline(comparison: &Comparison) -> String {
    let regressed = comparison.count(CompareClass::Regressed);
    let confirmed = comparison
        .of_class(CompareClass::Regressed)
        .filter(|t| t.confirmed)
        .count();
    let mut line = match (regressed, confirmed) {
        (0, _) => "no regression".to_owned(),
        (n, c) if n == c => plural(n, "confirmed regression"),
        (n, c) => format!("{} ({c} confirmed)", plural(n, "regression")),
    };
    line.push_str(&format!(
        " of {} ({})",
        plural(comparison.tests.len(), "id"),
        plural(comparison.confirm as usize, "confirmation") + " each"
    ));
    let others: Vec<String> = [
        CompareClass::Fixed,
        CompareClass::Flaky,
        CompareClass::Infra,
        CompareClass::Failing,
        CompareClass::Passing,
    ]
    .into_iter()
    .map(|class| (class, comparison.count(class)))
    .filter(|&(_, n)| n > 0)
    .map(|(class, n)| format!("{n} {}", class.name()))
    .collect();
    if !others.is_empty() {
        line.push_str(&format!(": {}", others.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn the_headline_leads_with_confirmed_regressions() {
        let report = fixture::ab_report();
        assert_eq!(
            headline(report.comparison.as_ref().unwrap()),
            "1 confirmed regression of 4 ids (2 confirmations each): 1 fixed, 1 failing, 1 passing"
        );
        let regressed = of_class(&report, CompareClass::Regressed);
        assert_eq!(regressed.len(), 1);
        assert_eq!(regressed[0].baseline.unwrap().id, "base::lib-user");
        assert_eq!(regressed[0].candidate.unwrap().id, "cand::lib-user");
    }
}
