//! A worker killed with SIGKILL mid-test: its jobs are redelivered and run
//! elsewhere, and every test is still counted exactly once.

use std::time::Duration;

use crate::fixtures::{leftover_containers, scripted_command, Fleet, BUSYBOX};

/// Tests long enough that the killed worker is surely running some.
const SCRIPT: &str = r#"echo "running $1"; sleep 3"#;

/// The tests `worker` started, by the run's events.
fn started_tests(fleet: &Fleet, worker: &str) -> Vec<String> {
    fleet
        .starts()
        .into_iter()
        .filter(|(w, _)| w == worker)
        .map(|(_, test)| test)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_test_loses_nothing_and_counts_nothing_twice() {
    let mut fleet = Fleet::start(3, 2);
    let victim = fleet.worker_ids()[0].clone();
    let ids: Vec<String> = (1..=12).map(|i| format!("t{i:02}")).collect();
    let command = scripted_command(SCRIPT);
    let mut args = vec!["--image", BUSYBOX, "--timeout", "30"];
    args.extend(command.iter().map(String::as_str));

    let run = {
        let producer = fleet.producer();
        let producer = producer.run(&ids, &args);
        tokio::pin!(producer);
        let victim_started = tokio::select! {
            run = &mut producer => panic!("run ended before the kill: {}", run.describe()),
            started = wait_for_start(&fleet, &victim) => started,
        };
        fleet.kill_worker(&victim);
        // Same id: at start-up it removes the containers its predecessor left.
        fleet.start_worker(&victim, 2);
        let run = producer.await;
        (run, victim_started)
    };
    let (run, victim_started) = run;

    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 12);
    assert!(statuses.values().all(|s| s == "Passed"), "{statuses:?}");
    assert!(
        run.attempts().values().all(|&n| n == 1),
        "counted once: {:?}",
        run.attempts()
    );
    let all_starts: Vec<String> = fleet.starts().into_iter().map(|(_, test)| test).collect();
    for test in &victim_started {
        let runs = all_starts.iter().filter(|t| *t == test).count();
        assert!(
            runs >= 2,
            "{test} ran on the killed worker and again elsewhere ({runs} starts)"
        );
    }
    assert!(
        leftover_containers(&run.run_id()).is_empty(),
        "orphans removed"
    );
    fleet.teardown().await;
}

/// Waits until the run's events show the worker running tests; returns their ids.
async fn wait_for_start(fleet: &Fleet, worker: &str) -> Vec<String> {
    loop {
        let started = started_tests(fleet, worker);
        if !started.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return started_tests(fleet, worker);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
