//! Property tests of the run state, the history and the verdict's fit:
//! whatever results arrive, a run's state never panics, and any report fits
//! a verdict (the renderers' own are in `report/tests/properties.rs`).

use proptest::collection::vec;
use proptest::prelude::*;
use testfleet_aggregator::run_state::RunState;
use testfleet_aggregator::{history, verdict};
use testfleet_types::messages::RunAnnounce;
use testfleet_types::strategies::{run_report, test_result};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_history_takes_any_report(report in run_report()) {
        history::samples(&report);
        history::batch_overhead_ms(&report);
    }

    #[test]
    fn any_report_fits_a_verdict(report in run_report(), budget in 0usize..200_000) {
        let fitted = verdict::fit(report, budget, "host:/reports/run");
        testfleet_report::console_summary(&fitted);
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
            verdict_token: None,
            queue: testfleet_types::messages::JobQueue::Shared,
            weight: 1,
            auto_quarantine_percent: None,
            quarantine: Vec::new(),
            signatures: Vec::new(),
            ab: None,
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
        testfleet_report::html::render(&report, &testfleet_report::triage::triage(&report, &[]));
    }
}
