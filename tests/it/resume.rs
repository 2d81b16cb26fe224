//! Runs taken up again: `--rerun RUN_ID` runs a finished run's tests that
//! did not pass as a new run; `--resume RUN_ID` continues a run whose jobs
//! were lost (its queue deleted under it, its workers gone, its producer
//! stopped), under its own id, with a verdict that covers every test.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixtures::{scripted_command, tests, Fleet};

/// Plays a test by its id on the worker's host.
const SCRIPT: &str = r#"
case "$1" in
  pass-*) sleep 0.2; exit 0 ;;
  fail-*) echo "assertion failed in $1" >&2; exit 3 ;;
  *) exit 2 ;;
esac
"#;

fn args(command: &[String]) -> Vec<&str> {
    let mut args = vec![
        "--executor",
        "process",
        "--max-rounds",
        "1",
        "--retry-threshold",
        "1",
    ];
    args.extend(command.iter().map(String::as_str));
    args
}

/// A rerun of a run with failures runs exactly the tests that did not pass,
/// as a new run of the same suite.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_runs_the_tests_that_did_not_pass() {
    let mut fleet = Fleet::start(0, 0);
    fleet.start_worker_with("rerun-w", 4, &["--executors", "process"]);
    let command = scripted_command(SCRIPT);
    let ids: Vec<String> = ["pass-1", "fail-1", "pass-2", "fail-2", "pass-3"]
        .map(String::from)
        .to_vec();
    let mut first_args = vec!["--suite", "rerun-it"];
    first_args.extend(args(&command));
    let first = fleet.run(&ids, &first_args).await;
    assert_eq!(first.exit_code(), 1, "{}", first.describe());

    let run_id = first.run_id();
    let rerun = fleet
        .run_producer(&["--rerun", &run_id, "--wait"], &args(&command))
        .await;
    assert_eq!(rerun.exit_code(), 1, "{}", rerun.describe());
    assert_ne!(rerun.run_id(), run_id, "a new run");
    let report = rerun.report();
    let rerun_ids: Vec<&str> = tests(&report).map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(rerun_ids, ["fail-1", "fail-2"]);
    assert_eq!(
        report["suite"], "rerun-it",
        "the suite of the run it reruns"
    );
    fleet.teardown().await;
}

/// Mid-run, the producer stops waiting, the worker is killed and the run's
/// jobs queue is deleted with every job it held. `--resume` queues the
/// tests without a result again, under the same run id: the verdict covers
/// every test, each passed, each counted once.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_jobs_were_lost_is_resumed_under_its_own_id() {
    let mut fleet = Fleet::start(0, 0);
    fleet.start_worker_with("resume-w1", 1, &["--executors", "process"]);
    let command = scripted_command(SCRIPT);
    let ids: Vec<String> = (0..30).map(|i| format!("pass-{i:02}")).collect();
    let producer = fleet.producer();
    // A deadline, so that a broken resumption fails the test rather than hangs it.
    let mut command_args = vec!["--deadline".to_owned(), "60".to_owned()];
    command_args.extend(args(&command).iter().map(|a| a.to_string()));
    let first = tokio::spawn(async move {
        let args: Vec<&str> = command_args.iter().map(String::as_str).collect();
        producer.run(&ids, &args).await
    });
    let started = Instant::now();
    while fleet.finished_count() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.abort();
    let _ = first.await;
    fleet.kill_worker("resume-w1");
    let run_id = submitted_run_id(&fleet);
    let queue = fleet.topology().run_jobs_queue(&run_id);
    let deleted = Command::new("rabbitmqctl")
        .args(["-q", "delete_queue", &queue])
        .output()
        .expect("rabbitmqctl");
    assert!(deleted.status.success(), "{deleted:?}");

    fleet.start_worker_with("resume-w2", 2, &["--executors", "process"]);
    let resumed = fleet
        .run_producer(&["--resume", &run_id, "--wait", "--deadline", "60"], &[])
        .await;
    assert_eq!(resumed.exit_code(), 0, "{}", resumed.describe());
    assert_eq!(resumed.run_id(), run_id, "the same run");
    let statuses = resumed.statuses();
    assert_eq!(statuses.len(), 30, "every test in the verdict");
    assert!(statuses.values().all(|s| s == "Passed"), "{statuses:?}");
    for (test, attempts) in resumed.attempts() {
        assert_eq!(attempts, 1, "{test} counted once");
    }
    fleet.teardown().await;
}

/// A finished run cannot be resumed: the producer says so, and how to run
/// its failing tests again.
#[tokio::test(flavor = "multi_thread")]
async fn a_finished_run_is_not_resumed() {
    let mut fleet = Fleet::start(0, 0);
    fleet.start_worker_with("done-w", 2, &["--executors", "process"]);
    let command = scripted_command(SCRIPT);
    let run = fleet.run(&["pass-1".to_owned()], &args(&command)).await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let again = fleet
        .run_producer(&["--resume", &run.run_id(), "--wait"], &[])
        .await;
    assert_eq!(again.exit_code(), 2, "{}", again.describe());
    let stderr = String::from_utf8_lossy(&again.output.stderr);
    assert!(stderr.contains("--rerun"), "{stderr}");
    fleet.teardown().await;
}

/// The run id the first producer's events name.
fn submitted_run_id(fleet: &Fleet) -> String {
    fleet
        .events()
        .iter()
        .find(|e| e["event"] == "run_submitted")
        .and_then(|e| e["run_id"].as_str())
        .expect("the run was submitted")
        .to_owned()
}

/// Only who holds a run's token resumes it, and a second resume of the same
/// round queues nothing twice: without either, anyone who learns a run id
/// could requeue its open round over and over.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_needs_the_runs_token_and_queues_a_round_once() {
    let fleet = Fleet::start(0, 0);
    let list = fleet.dir.join("ids.txt");
    std::fs::write(&list, "pass-1\npass-2\npass-3\n").unwrap();
    let command = scripted_command(SCRIPT);
    let first = ["--tests", list.to_str().unwrap(), "--deadline", "120"];
    // The command last: what follows `--` is the test's argv.
    let submitted = fleet.run_producer(&first, &args(&command)).await;
    assert_eq!(submitted.exit_code(), 0, "{}", submitted.describe());
    let run_id = submitted.run_id();
    let queue = fleet.topology().run_jobs_queue(&run_id);
    assert_eq!(
        fleet.queue_len(&queue).await,
        Some(3),
        "no worker: the jobs wait"
    );

    let forged = uuid::Uuid::new_v4().to_string();
    let refused = fleet
        .run_producer(&["--resume", &run_id, "--run-token", &forged], &[])
        .await;
    assert_eq!(refused.exit_code(), 2, "{}", refused.describe());
    let stderr = String::from_utf8_lossy(&refused.output.stderr);
    assert!(stderr.contains("token"), "{stderr}");
    assert_eq!(
        fleet.queue_len(&queue).await,
        Some(3),
        "nothing queued for a forged token"
    );

    for resume in 0..2 {
        let resumed = fleet.run_producer(&["--resume", &run_id], &[]).await;
        assert_eq!(
            resumed.exit_code(),
            0,
            "resume {resume}: {}",
            resumed.describe()
        );
    }
    assert_eq!(
        fleet.queue_len(&queue).await,
        Some(6),
        "the open round queued again once, not twice"
    );
    fleet.teardown().await;
}
