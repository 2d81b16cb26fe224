//! Runs sharing one fleet: each run's jobs wait in a queue of its own
//! (`run.queue = "own"`, the default), which workers take from in turn, so a
//! small run never waits behind a big one's queued jobs; a worker that joins
//! later learns the open runs from the aggregator; a run's queue goes with
//! the run.

use std::time::{Duration, Instant};

use crate::fixtures::{tests, Fleet, RunOutcome};

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// A test of 0.1 s on the worker's host.
const SLEEP: [&str; 8] = [
    "--executor",
    "process",
    "--",
    "sh",
    "-c",
    "sleep 0.1",
    "sh",
    "{id}",
];

/// Every attempt's (started, finished) times in a run's report.
fn times(run: &RunOutcome) -> Vec<(u64, u64)> {
    let report = run.report();
    tests(&report)
        .flat_map(|t| t["attempts"].as_array().unwrap().clone())
        .map(|a| {
            (
                a["started_at_ms"].as_u64().unwrap(),
                a["finished_at_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A run of 5 tests submitted while a run of 120 holds both slots of the
/// fleet is over long before the big one: its tests are taken in turn with
/// the big run's queued ones, not after all of them (first in, first out,
/// they would all start after the big run's last). Both queues are gone
/// once their runs end.
#[tokio::test(flavor = "multi_thread")]
async fn a_small_run_is_not_queued_behind_a_big_one() {
    let mut fleet = Fleet::start(0, 0);
    fleet.start_worker_with("fair-w", 2, &["--executors", "process"]);
    let big_producer = fleet.producer();
    let big = tokio::spawn(async move { big_producer.run(&ids("big", 120), &SLEEP).await });
    let started = Instant::now();
    while fleet.finished_count() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the big run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let small = fleet.run(&ids("small", 5), &SLEEP).await;
    let big = big.await.unwrap();
    assert_eq!(small.exit_code(), 0, "{}", small.describe());
    assert_eq!(big.exit_code(), 0, "{}", big.describe());

    let small_end = times(&small).iter().map(|(_, end)| *end).max().unwrap();
    let big_last_start = times(&big).iter().map(|(start, _)| *start).max().unwrap();
    assert!(
        small_end < big_last_start,
        "the small run ended at {small_end}, after the big run's last start at {big_last_start}"
    );

    let topology = fleet.topology();
    for run in [&small, &big] {
        let queue = topology.run_jobs_queue(&run.run_id());
        let waited = Instant::now();
        while fleet.queue_len(&queue).await.is_some() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "{queue} outlived its run"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fleet.teardown().await;
}

/// A worker started after a run's jobs were published, and after the
/// producer's notices went out, learns the run from the aggregator's list of
/// open runs and runs its tests.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_joins_later_takes_from_runs_already_open() {
    let mut fleet = Fleet::start(0, 0);
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let mut args = vec!["--deadline", "90"];
        args.extend(SLEEP);
        producer.run(&ids("late", 6), &args).await
    });
    let topology = fleet.topology();
    let published = Instant::now();
    // Every job is in the run's queue, so the producer's last notice is out.
    loop {
        let queues = crate::fixtures::queues_with_prefix(&format!("{}.", topology.jobs));
        if let [queue] = queues.as_slice() {
            if fleet.queue_len(queue).await == Some(6) {
                break;
            }
        }
        assert!(
            published.elapsed() < Duration::from_secs(30),
            "no run queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.start_worker_with("late-w", 2, &["--executors", "process"]);
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert!(fleet.starts().iter().all(|(worker, _)| worker == "late-w"));
    fleet.teardown().await;
}
