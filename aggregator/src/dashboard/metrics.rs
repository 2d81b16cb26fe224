//! `/metrics`: the dashboard's snapshot in Prometheus' text exposition format
//! (version 0.0.4): tests finished by outcome, runs finished by verdict and
//! their durations, open runs, jobs waiting per queue, workers and their busy
//! slots. Pure.

use std::fmt::Write;

use testfleet_types::messages::AttemptStatus;

use super::model::{Snapshot, DURATION_BUCKETS};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let totals = &snapshot.totals;
    family(
        &mut out,
        "testfleet_tests_finished_total",
        "counter",
        "Test attempts counted, by outcome.",
    );
    for outcome in AttemptStatus::ALL.map(AttemptStatus::name) {
        let count = totals.finished.get(outcome).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "testfleet_tests_finished_total{{outcome=\"{outcome}\"}} {count}"
        );
    }
    family(
        &mut out,
        "testfleet_runs_finished_total",
        "counter",
        "Runs whose verdict went out, by verdict.",
    );
    for (verdict, count) in &totals.runs {
        let _ = writeln!(
            out,
            "testfleet_runs_finished_total{{verdict=\"{}\"}} {count}",
            label(verdict)
        );
    }
    family(
        &mut out,
        "testfleet_run_duration_seconds",
        "histogram",
        "Finished runs, from creation to verdict.",
    );
    for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
        let count = totals.duration_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "testfleet_run_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "testfleet_run_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        totals.duration_count
    );
    let _ = writeln!(
        out,
        "testfleet_run_duration_seconds_sum {}",
        totals.duration_sum_secs
    );
    let _ = writeln!(
        out,
        "testfleet_run_duration_seconds_count {}",
        totals.duration_count
    );
    family(
        &mut out,
        "testfleet_runs_open",
        "gauge",
        "Runs the aggregator follows now.",
    );
    let _ = writeln!(out, "testfleet_runs_open {}", snapshot.runs.len());
    family(
        &mut out,
        "testfleet_queue_depth",
        "gauge",
        "Jobs waiting in a jobs queue, as the broker last said.",
    );
    for queue in &snapshot.queues {
        if let Some(waiting) = queue.waiting {
            let _ = writeln!(
                out,
                "testfleet_queue_depth{{queue=\"{}\"}} {waiting}",
                label(&queue.queue)
            );
        }
    }
    let workers = &snapshot.workers;
    family(
        &mut out,
        "testfleet_workers",
        "gauge",
        "Workers heard from lately.",
    );
    let _ = writeln!(out, "testfleet_workers {}", workers.len());
    family(
        &mut out,
        "testfleet_slots",
        "gauge",
        "Test slots of those workers.",
    );
    let _ = writeln!(
        out,
        "testfleet_slots {}",
        workers.iter().map(|w| u64::from(w.slots)).sum::<u64>()
    );
    family(
        &mut out,
        "testfleet_busy_slots",
        "gauge",
        "Slots running a test now.",
    );
    let _ = writeln!(
        out,
        "testfleet_busy_slots {}",
        workers.iter().map(|w| w.busy).sum::<usize>()
    );
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the format allows it: backslash, quote and newline
/// escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::model::{QueueView, Totals};
    use super::*;

    #[test]
    fn every_family_is_typed_and_labels_are_escaped() {
        let mut totals = Totals::default();
        totals.finished.insert("passed", 7);
        totals.runs.insert("tests failed", 1);
        let snapshot = Snapshot {
            queues: vec![QueueView {
                queue: "odd\"name".into(),
                waiting: Some(3),
            }],
            totals,
            ..Snapshot::default()
        };
        let text = render(&snapshot);
        assert!(text.contains("testfleet_tests_finished_total{outcome=\"passed\"} 7\n"));
        assert!(text.contains("testfleet_tests_finished_total{outcome=\"missing\"} 0\n"));
        assert!(text.contains("testfleet_runs_finished_total{verdict=\"tests failed\"} 1\n"));
        assert!(text.contains("testfleet_queue_depth{queue=\"odd\\\"name\"} 3\n"));
        assert!(text.contains("testfleet_run_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has a type"
            );
        }
    }
}
