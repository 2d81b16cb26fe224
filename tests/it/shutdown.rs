//! A worker asked to stop: the first SIGTERM lets running tests finish and their
//! results count; a second one hands running jobs back to the queue.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::task::JoinHandle;

use crate::fixtures::{scripted_command, Fleet, RunOutcome, BUSYBOX};

const SCRIPT: &str = r#"echo "running $1"; sleep 3"#;

/// A one-worker fleet with two 3 s tests running on its two slots; the run goes
/// on in a task. Returns the fleet, the worker's id and the run.
async fn fleet_running_two_tests() -> (Fleet, String, JoinHandle<RunOutcome>) {
    let fleet = Fleet::start(1, 2);
    let worker = fleet.worker_ids()[0].clone();
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let command = scripted_command(SCRIPT);
        let mut args = vec!["--image", BUSYBOX, "--timeout", "30"];
        args.extend(command.iter().map(String::as_str));
        producer.run(&["a".into(), "b".into()], &args).await
    });
    while fleet.starts().len() < 2 {
        assert!(
            !run.is_finished(),
            "the run ended before both tests started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (fleet, worker, run)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_running_tests_finish_and_count() {
    let (mut fleet, worker, run) = fleet_running_two_tests().await;
    fleet.signal_worker(&worker, Signal::SIGTERM);
    let run = run.await.unwrap();

    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert!(run.statuses().values().all(|s| s == "Passed"));
    let status = fleet.wait_worker(&worker);
    assert_eq!(
        status.code(),
        Some(0),
        "the worker exits cleanly after draining"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_requeues_running_jobs_for_another_worker() {
    let (mut fleet, worker, run) = fleet_running_two_tests().await;
    fleet.signal_worker(&worker, Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.signal_worker(&worker, Signal::SIGTERM);
    let status = fleet.wait_worker(&worker);
    assert_eq!(status.code(), Some(0));
    fleet.start_worker("second", 2);
    let run = run.await.unwrap();

    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert!(
        run.attempts().values().all(|&n| n == 1),
        "requeued, not retried: {:?}",
        run.attempts()
    );
    let report = run.report();
    for test in report["tests"].as_array().unwrap() {
        assert_eq!(test["attempts"][0]["worker_id"], "second");
    }
    fleet.teardown().await;
}

/// A worker started with `--exit-when-idle 5` once a run's job waits takes
/// it (from the aggregator's list of open runs, within 2 s), runs it to its
/// end though it lasts longer than that (a running job is not idleness),
/// then, with nothing left to take, stops by itself and exits 0: what a
/// fleet that scales to zero needs.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_exits_by_itself_after_its_last_job() {
    let mut fleet = Fleet::start(0, 0);
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let command = scripted_command("sleep 8");
        let mut args = vec!["--executor", "process"];
        args.extend(command.iter().map(String::as_str));
        producer.run(&["long".to_owned()], &args).await
    });
    let jobs = format!("{}.", fleet.topology().jobs);
    let waited = std::time::Instant::now();
    loop {
        if let [queue] = crate::fixtures::queues_with_prefix(&jobs).as_slice() {
            if fleet.queue_len(queue).await == Some(1) {
                break;
            }
        }
        assert!(waited.elapsed() < Duration::from_secs(30), "no job queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.start_worker_with(
        "idle-w",
        1,
        &["--executors", "process", "--exit-when-idle", "5"],
    );
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let status = tokio::task::block_in_place(|| fleet.wait_worker("idle-w"));
    assert_eq!(status.code(), Some(0), "{}", fleet.worker_log("idle-w"));
    fleet.teardown().await;
}
