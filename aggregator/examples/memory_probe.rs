//! A profiling aid, not a benchmark: where the aggregator's memory goes for one
//! run of N passing tests, step by step (state, report, report files, verdict),
//! without a broker. The scale benchmark (`scripts/bench.sh scale`) measures the
//! real thing end to end; this shows which step a change should aim at.
//!
//! `cargo run --release -p testfleet-aggregator --example memory_probe -- 400000`

use testfleet_aggregator::run_state::RunState;
use testfleet_report as report;
use testfleet_types::codec::encode;
use testfleet_types::messages::{Body, Outcome, RunAnnounce, TestResult};
use uuid::Uuid;

/// This process's resident set now and at its peak, in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn step(name: &str) {
    let (now, peak) = rss_mb();
    println!("{name:<28} rss {now:>8.1} MB   peak {peak:>8.1} MB");
}

fn passing_result(run_id: Uuid, test_id: String, n: u64) -> TestResult {
    TestResult {
        run_id,
        test_id,
        attempt: 1,
        outcome: Outcome::Passed,
        exit_code: Some(0),
        duration_ms: 3,
        worker_id: format!("bench-worker-{}", n % 16),
        started_at_ms: 1_000 + n,
        finished_at_ms: 1_003 + n,
        output: String::new(),
        output_truncated: false,
        message: None,
        published_at_ms: 900,
        batch: None,
        reason: None,
    }
}

fn main() {
    let tests: usize = std::env::args()
        .nth(1)
        .map_or(400_000, |n| n.parse().expect("a number of tests"));
    step("start");
    let run_id = Uuid::new_v4();
    let ids: Vec<String> = (0..tests).map(|i| format!("t{i:07}")).collect();
    let mut state = RunState::new(RunAnnounce {
        run_id,
        suite: "probe".into(),
        created_at_ms: 0,
        deadline_ms: u64::MAX,
        spec: testfleet_common::config::default_spec(),
        tests: ids.clone(),
        verdict_token: None,
        queue: testfleet_types::messages::JobQueue::Shared,
        weight: 1,
        auto_quarantine_percent: None,
        quarantine: Vec::new(),
        signatures: Vec::new(),
        ab: None,
    });
    drop(ids);
    step("announced");
    for i in 0..tests {
        state.record_result(passing_result(run_id, format!("t{i:07}"), i as u64));
    }
    step("every result recorded");
    state.close_round(1);
    let report = state.into_report(2);
    step("report built");
    let dir = std::env::temp_dir().join(format!("memory-probe-{run_id}"));
    report::write_all(&report, &dir).expect("reports written");
    step("report files written");
    let verdict = encode(&Body::Report(report));
    step("verdict encoded");
    println!("verdict message: {:.1} MB", verdict.len() as f64 / 1e6);
    let _ = std::fs::remove_dir_all(dir);
}
