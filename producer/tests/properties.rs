//! Property tests of what the producer makes of events from the wire: any
//! event, any number in it, updates the progress and renders as NDJSON
//! without a panic.

use proptest::collection::vec;
use proptest::prelude::*;
use testfleet_producer::ndjson;
use testfleet_producer::progress::Progress;
use testfleet_types::strategies::{number, run_event, run_report};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn progress_follows_any_events(
        tests in 0usize..50,
        started in number(),
        events in vec(run_event(), 0..30),
        now in number(),
    ) {
        let mut progress = Progress::new(tests, started);
        for event in &events {
            progress.apply(&event.kind);
            ndjson::run_event(event);
        }
        progress.counts();
        progress.eta(now);
        progress.describe(now);
        progress.plain_line(now);
    }

    #[test]
    fn any_verdict_renders_as_its_ndjson_line(report in run_report(), at in number()) {
        ndjson::verdict(&report, None, at);
    }
}
