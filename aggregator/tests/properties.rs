//! Property tests of the renderers and the run state: whatever numbers and
//! strings a report holds (bounds checked or not), every report renders, and
//! whatever results arrive, a run's state never panics.

use proptest::collection::vec;
use proptest::prelude::*;
use testfleet_aggregator::report::{self, html, json, junit, markdown, triage};
use testfleet_aggregator::run_state::RunState;
use testfleet_aggregator::{history, verdict};
use testfleet_common::strategies::{run_report, test_result};
use testfleet_common::wire::RunAnnounce;

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
        history::samples(&report);
        let dir = std::env::temp_dir().join(format!("tf-prop-{}", uuid::Uuid::new_v4()));
        report::outputs::write(&report, &dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn any_report_fits_a_verdict(report in run_report(), budget in 0usize..200_000) {
        let fitted = verdict::fit(report, budget, "host:/reports/run");
        report::console_summary(&fitted);
    }

    #[test]
    fn a_run_takes_any_results_in_any_order(
        ids in vec("[a-c]{1,2}", 1..6),
        results in vec(test_result(), 0..20),
        closes in vec(any::<u64>(), 0..4),
    ) {
        let mut spec = testfleet_common::config::default_spec();
        spec.retry.threshold = 1.0;
        let mut state = RunState::new(RunAnnounce {
            run_id: uuid::Uuid::nil(),
            suite: "p".into(),
            created_at_ms: 0,
            deadline_ms: u64::MAX,
            spec,
            tests: ids.clone(),
        });
        for (i, mut result) in results.into_iter().enumerate() {
            // Half the results name a test of the run, to reach past the index.
            if i % 2 == 0 {
                result.test_id = ids[i % ids.len()].clone();
                result.attempt = state.round();
            }
            state.record_result(result);
            if state.round_complete() {
                state.close_round(closes.get(i % closes.len().max(1)).copied().unwrap_or(0));
            }
        }
        let report = state.into_report(u64::MAX);
        html::render(&report, &triage::triage(&report, &[]));
    }
}
