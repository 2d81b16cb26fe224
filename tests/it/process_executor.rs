//! The process executor end to end: tests run as child processes of real
//! workers, with the Docker executor's outcomes; and runs of a suite published
//! longest first from the durations its earlier runs left in the aggregator's
//! history, across an aggregator restart.

use std::process::Command;
use std::time::Duration;

use crate::fixtures::{scripted_command, tests, Fleet};

/// Plays a test by its id, on the worker's host. `hang-*` leaves a grandchild
/// behind, named after the test, which the timeout must kill with its parent.
const SCRIPT: &str = r#"
id="$1"
echo "run=$TESTFLEET_RUN_ID attempt=$TESTFLEET_ATTEMPT test=$TEST_ID broker=${TESTFLEET_BROKER__URL:-unset} cwd=$(pwd)"
case "$id" in
  pass-*) exit 0 ;;
  fail-*) echo "assertion failed in $id" >&2; exit 3 ;;
  hang-*) sh -c 'while :; do sleep 1; done' "$id-grandchild" & sleep 1000 ;;
  sleep-*) sleep "${id#sleep-}" ;;
  *) echo "unknown test $id" >&2; exit 2 ;;
esac
"#;

fn command_args<'a>(extra: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    let mut args: Vec<&str> = vec!["--executor", "process", "--suite", "process-it"];
    args.extend_from_slice(extra);
    args.extend(command.iter().map(String::as_str));
    args
}

/// Processes whose command line holds `marker`, as `pgrep -f` sees them.
fn processes_matching(marker: &str) -> Vec<String> {
    let output = Command::new("pgrep")
        .args(["-a", "-f", marker])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The run's tests in the order they started, by their attempts' start times
/// in `report.json`.
fn started_tests(run: &crate::fixtures::RunOutcome) -> Vec<String> {
    let report = run.report();
    let mut started: Vec<(u64, String)> = tests(&report)
        .flat_map(|t| {
            t["attempts"].as_array().unwrap().iter().map(move |a| {
                (
                    a["started_at_ms"].as_u64().unwrap_or(u64::MAX),
                    t["id"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    started.sort();
    started.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn process_jobs_pass_fail_time_out_with_their_whole_group_and_keep_ids_verbatim() {
    let mut fleet = Fleet::start(0, 1);
    let worker = format!("{}-proc", fleet.prefix);
    fleet.start_worker_with(&worker, 3, &["--executors", "process"]);
    let marker = format!("hang-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let canary = fleet.dir.join("canary");
    let weird = format!(
        "fail-a b;'\"$(touch {0}) `touch {0}` {{id}}",
        canary.display()
    );
    let ids = vec![
        "pass-1".to_owned(),
        "pass-2".into(),
        weird.clone(),
        marker.clone(),
    ];
    let command = scripted_command(SCRIPT);
    let workdir = fleet.dir.to_str().unwrap().to_owned();
    let args = command_args(
        &[
            "--timeout",
            "3",
            "--max-rounds",
            "1",
            "--retry-threshold",
            "1",
            "--workdir",
            &workdir,
        ],
        &command,
    );
    let run = fleet.run(&ids, &args).await;

    assert_eq!(run.exit_code(), 1, "tests failed\n{}", run.describe());
    let statuses = run.statuses();
    assert_eq!(statuses["pass-1"], "Passed");
    assert_eq!(statuses["pass-2"], "Passed");
    assert_eq!(statuses[&weird], "Failed");
    assert_eq!(statuses[&marker], "TimedOut");

    let report = run.report();
    let attempt = |id: &str| tests(&report).find(|t| t["id"] == id).unwrap()["attempts"][0].clone();
    let failed = attempt(&weird);
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["worker_id"], worker.as_str());
    let output = failed["output"].as_str().unwrap();
    let expected = format!(
        "run={} attempt=1 test={weird} broker=unset cwd={workdir}",
        run.run_id()
    );
    assert!(output.contains(&expected), "{expected}\nin\n{output}");
    assert!(
        output.contains(&format!("assertion failed in {weird}")),
        "stderr captured with stdout: {output}"
    );
    assert!(!canary.exists(), "the id went through a shell");

    let hung = attempt(&marker);
    assert!(hung["exit_code"].is_null());
    assert!(hung["output"].as_str().unwrap().contains(&marker));
    let left = processes_matching(&marker);
    assert!(
        left.is_empty(),
        "the timeout killed the test's whole group: {left:?}"
    );
    let log = fleet.worker_log(&worker);
    assert!(
        log.contains("executors=process") && log.contains(r#"executor="process""#),
        "{log}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_job_that_cannot_start_or_finds_no_process_executor_is_an_error() {
    let mut fleet = Fleet::start(0, 1);
    let worker = format!("{}-proc", fleet.prefix);
    fleet.start_worker_with(&worker, 2, &["--executors", "process"]);
    let ids = vec!["t1".to_owned()];
    let args = [
        "--executor",
        "process",
        "--max-rounds",
        "1",
        "--",
        "testfleet-no-such-program",
        "{id}",
    ];
    let run = fleet.run(&ids, &args).await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    assert_eq!(run.statuses()["t1"], "Error");
    let message = run.report()["tests"][0]["attempts"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("`testfleet-no-such-program`") && message.contains("not found"),
        "{message}"
    );
    fleet.kill_worker(&worker);

    // A worker with only the Docker executor reports the job, it does not lose it.
    let docker_only = format!("{}-docker", fleet.prefix);
    fleet.start_worker(&docker_only, 1);
    let command = scripted_command(SCRIPT);
    let run = fleet
        .run(&ids, &command_args(&["--max-rounds", "1"], &command))
        .await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let message = run.report()["tests"][0]["attempts"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("{docker_only} does not run process jobs"))
            && message.contains("--executors process"),
        "{message}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_orders_the_next_run_longest_first_across_an_aggregator_restart() {
    let mut fleet = Fleet::start(0, 1);
    let worker = format!("{}-proc", fleet.prefix);
    // One slot: tests start in the order the queue hands them out.
    fleet.start_worker_with(&worker, 1, &["--executors", "process"]);
    let command = scripted_command(SCRIPT);
    let args = command_args(&[], &command);
    let first: Vec<String> = ["0.1", "0.5", "0.3", "0.9", "0.7"]
        .iter()
        .map(|s| format!("sleep-{s}"))
        .collect();

    let run = fleet.run(&first, &args).await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(started_tests(&run), first, "without history, arrival order");

    fleet.kill_aggregator();
    fleet.start_aggregator();
    // Ready again: the new aggregator consumes the results queue.
    let results = fleet.topology().results;
    for _ in 0..600 {
        if crate::fixtures::consumers(&results) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A test without history goes by the median of the known (0.5 s).
    let mut second = first.clone();
    second.insert(0, "sleep-0.05".into());
    let run = fleet.run(&second, &args).await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let started = started_tests(&run);
    let known: Vec<&String> = started.iter().filter(|t| *t != "sleep-0.05").collect();
    assert_eq!(
        known,
        [
            "sleep-0.9",
            "sleep-0.7",
            "sleep-0.5",
            "sleep-0.3",
            "sleep-0.1"
        ],
        "longest first: {started:?}"
    );
    let new = started.iter().position(|t| t == "sleep-0.05").unwrap();
    let position = |id: &str| started.iter().position(|t| t == id).unwrap();
    assert!(
        position("sleep-0.7") < new && new < position("sleep-0.3"),
        "the new test goes by the median: {started:?}"
    );

    let mut arrival = args.clone();
    arrival.splice(0..0, ["--order", "arrival"]);
    let run = fleet.run(&first, &arrival).await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(
        started_tests(&run),
        first,
        "--order arrival keeps the listed order"
    );
    fleet.teardown().await;
}
