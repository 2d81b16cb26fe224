//! Property tests of the renderers: whatever numbers and strings a report
//! holds (bounds checked or not), every report renders without a panic.

use proptest::prelude::*;
use testfleet_report::{self as report, html, json, junit, markdown, triage};
use testfleet_types::strategies::run_report;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_renderer_takes_any_report(report in run_report()) {
        let triage = triage::triage(&report, &[]);
        json::render(&report).unwrap();
        junit::render(&report).unwrap();
        markdown::render(&report, &triage);
        html::render(&report, &triage);
        report::console_summary(&report);
        let dir = std::env::temp_dir().join(format!("tf-prop-{}", uuid::Uuid::new_v4()));
        report::outputs::write(&report, &dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
