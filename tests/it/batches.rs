//! Batches end to end: several tests per job (one container, one runner
//! start), each test counted alone from the runner's report; tests the report
//! lacks are split until alone; and the fault cases hold with batches: a
//! worker killed mid-batch, a poison test inside a batch, an aggregator
//! killed while batches are half reported.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::{tests, Fleet, RunOutcome, BUSYBOX};

/// A test runner in busybox `sh`, as real runners behave: it runs each id it
/// is given in turn and writes a JUnit report at its first argument when it
/// is done; a crash or a kill leaves no report at all. Ids play their test:
/// `pass-*` and `slow-*` (2 s) pass, `fail-*` fails printing why, `flaky-*`
/// fails on attempt 1, `crash-*` ends the runner as a segfault would (139), `hang-*` never ends,
/// `poison` runs 60 s (the harness kills the worker running it), `huge-*`
/// fails with a 70,000-byte message, more than a result may carry.
const RUNNER: &str = r#"
report="$1"; shift
cases=""
for id in "$@"; do
  echo "running $id"
  ok=1; text=""
  case "$id" in
    slow-*) sleep 2 ;;
    fail-*) ok=0; text="assertion failed in $id" ;;
    flaky-*) [ "$TESTFLEET_ATTEMPT" != 1 ] || { ok=0; text="first try of $id"; } ;;
    crash-*) echo "runner crashing in $id"; exit 139 ;;
    hang-*) sleep 1000 ;;
    poison) sleep 60 ;;
    huge-*) ok=0; text=$(head -c 70000 /dev/zero | tr '\0' x) ;;
    *) sleep 0.1 ;;
  esac
  if [ $ok = 1 ]; then
    cases="$cases<testcase classname=\"suite\" name=\"$id\" time=\"0.1\"><system-out>out of $id</system-out></testcase>"
  else
    cases="$cases<testcase classname=\"suite\" name=\"$id\" time=\"0.1\"><failure message=\"$text\">$text</failure></testcase>"
  fi
done
printf '<testsuites><testsuite name="suite">%s</testsuite></testsuites>' "$cases" > "$report"
"#;

/// The batched command: the runner with the report path and the ids.
fn batched(extra: &[&'static str]) -> Vec<String> {
    let mut args: Vec<String> = ["--image", BUSYBOX, "--report-format", "junit:name"]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--", "sh", "-c", RUNNER, "sh", "{report}", "{ids}"].map(String::from));
    args
}

async fn run(fleet: &Fleet, ids: &[String], extra: &[&'static str]) -> RunOutcome {
    let args = batched(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fleet.run(ids, &args).await
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// (status, attempts) of each test.
fn outcomes(run: &RunOutcome) -> BTreeMap<String, (String, usize)> {
    let attempts = run.attempts();
    run.statuses()
        .into_iter()
        .map(|(id, status)| {
            let tries = attempts[&id];
            (id, (status, tries))
        })
        .collect()
}

fn batches(report: &Value) -> &Vec<Value> {
    report["batches"]
        .as_array()
        .expect("batches in report.json")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_test_of_a_batch_keeps_its_own_outcome_output_and_retries() {
    let fleet = Fleet::start(2, 2);
    let mut names: Vec<String> = (1..=20).map(|i| format!("pass-{i:02}")).collect();
    names.extend(ids(&["fail-a", "flaky-b"]));
    let run = run(
        &fleet,
        &names,
        &[
            "--batch",
            "6",
            "--retry-threshold",
            "0.5",
            "--timeout",
            "10",
        ],
    )
    .await;

    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let outcomes = outcomes(&run);
    for (id, (status, attempts)) in &outcomes {
        let expected = match id.as_str() {
            "fail-a" => ("Failed", 3),
            "flaky-b" => ("Flaky", 2),
            _ => ("Passed", 1),
        };
        assert_eq!((status.as_str(), *attempts), expected, "{id}");
    }
    let report = run.report();
    let test = |id: &str| tests(&report).find(|t| t["id"] == id).unwrap().clone();
    let failed = &test("fail-a")["attempts"][0];
    assert_eq!(
        failed["output"], "assertion failed in fail-a",
        "its own output"
    );
    assert_eq!(failed["duration_ms"], 100, "the runner's own time");
    let batch_of = |attempt: &Value| attempt["batch"].as_str().unwrap().to_owned();
    let first_batch = batch_of(failed);
    let record = batches(&report)
        .iter()
        .find(|b| b["id"] == first_batch.as_str())
        .unwrap();
    assert!(
        record["log"].as_str().unwrap().contains("running fail-a"),
        "the batch's whole log is kept: {record}"
    );
    let log = run
        .run_dir()
        .join("outputs/batches")
        .join(format!("{first_batch}.log"));
    let kept = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(kept.contains("running fail-a"), "outputs/ keeps it");
    let html = std::fs::read_to_string(run.run_dir().join("report.html")).unwrap();
    assert!(
        html.contains(&format!("outputs/batches/{first_batch}.log")),
        "the HTML's batches list links it"
    );
    // 22 tests in batches of at most 6: 4 jobs in round 1, then retries alone.
    let first_round = batches(&report)
        .iter()
        .filter(|b| b["attempt"] == 1)
        .count();
    assert_eq!(first_round, 4, "{}", run.describe());
    assert!(batches(&report)
        .iter()
        .all(|b| b["tests"].as_u64() <= Some(6)));
    assert!(
        run.junit().contains("name=\"fail-a\""),
        "JUnit stays per test"
    );
    fleet.teardown().await;
}

/// A batch whose runner crashes, and one whose runner hangs past the
/// batch's timeout, report nothing; their tests are split until the culprits
/// are alone: each gets its own outcome (the crash's exit code, a timeout),
/// every other test its true one.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_and_a_hanging_test_end_up_alone_and_the_rest_get_their_true_outcomes() {
    let fleet = Fleet::start(2, 2);
    let names = ids(&[
        "pass-1", "pass-2", "crash-x", "pass-3", "pass-4", "fail-z", "hang-y", "pass-5",
    ]);
    let run = run(
        &fleet,
        &names,
        &[
            "--batch",
            "8",
            "--max-rounds",
            "1",
            "--retry-threshold",
            "1",
            "--timeout",
            "2",
        ],
    )
    .await;

    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let report = run.report();
    let attempt = |id: &str| tests(&report).find(|t| t["id"] == id).unwrap()["attempts"][0].clone();
    assert_eq!(attempt("crash-x")["status"]["Ran"], "Failed");
    assert_eq!(attempt("crash-x")["exit_code"], 139, "its runner's end");
    assert!(attempt("crash-x")["output"]
        .as_str()
        .unwrap()
        .contains("runner crashing in crash-x"));
    assert_eq!(attempt("hang-y")["status"]["Ran"], "TimedOut");
    assert_eq!(attempt("fail-z")["status"]["Ran"], "Failed");
    for i in 1..=5 {
        let id = format!("pass-{i}");
        assert_eq!(attempt(&id)["status"]["Ran"], "Passed", "{id}");
    }
    // A batch of 8 bisected: each split halves what was unreported, so a
    // culprit is alone after log2(8) = 3 levels, at most two jobs a level for
    // each of the two culprits.
    let jobs = batches(&report).len();
    assert!(jobs <= 1 + 2 * 3 * 2, "{jobs} jobs");
    assert!(batches(&report).iter().any(|b| b["split_into"] == 2));
    assert!(batches(&report).iter().any(|b| b["timed_out"] == true));
    fleet.teardown().await;
}

/// The fault suite's tests as batches: what an undisturbed run gives.
fn fault_suite() -> BTreeMap<String, (String, usize)> {
    let pass = (1..=56).map(|i| (format!("pass-{i:03}"), ("Passed".to_owned(), 1)));
    let slow = (1..=4).map(|i| (format!("slow-{i}"), ("Passed".to_owned(), 1)));
    let flaky = (1..=3).map(|i| (format!("flaky-{i}"), ("Flaky".to_owned(), 2)));
    pass.chain(slow).chain(flaky).collect()
}

/// Runs the fault suite in batches of 8 on 3 workers × 2 slots, lets `fault`
/// strike once a batch has finished, and checks every test ends as in an
/// undisturbed run, counted once. `fault` is synchronous (it may block).
async fn batches_survive(fault: impl FnOnce(&mut Fleet)) -> (Fleet, RunOutcome) {
    let mut fleet = Fleet::start(3, 2);
    let expected = fault_suite();
    let producer = fleet.producer();
    let names: Vec<String> = expected.keys().cloned().collect();
    let events = fleet.dir.join("events.ndjson");
    let events_arg = events.to_str().unwrap().to_owned();
    let run = tokio::spawn(async move {
        let mut args = batched(&[
            "--batch",
            "8",
            "--retry-threshold",
            "0.2",
            "--timeout",
            "10",
        ]);
        args.splice(0..0, ["--events".to_owned(), events_arg]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        producer.run(&names, &args).await
    });
    while finished_tests(&events) < 8 {
        assert!(!run.is_finished(), "the run ended before the fault");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| fault(&mut fleet));
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(
        outcomes(&run),
        expected,
        "as an undisturbed run, each counted once"
    );
    (fleet, run)
}

/// `test_finished` events in the producer's NDJSON stream so far.
fn finished_tests(events: &std::path::Path) -> usize {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"event\":\"test_finished\""))
        .count()
}

/// Workers running a test now, by the producer's events: a `test_started`
/// without its `test_finished`.
fn busy_workers(events: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let parsed: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let key = |e: &Value| (e["test"].to_string(), e["attempt"].to_string());
    let finished: Vec<_> = parsed
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(key)
        .collect();
    parsed
        .iter()
        .filter(|e| e["event"] == "test_started" && !finished.contains(&key(e)))
        .filter_map(|e| e["worker"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_batch_loses_nothing_and_counts_nothing_twice() {
    let (fleet, run) = batches_survive(|fleet| {
        let events = fleet.dir.join("events.ndjson");
        let victim = loop {
            if let Some(busy) = busy_workers(&events)
                .into_iter()
                .find(|w| fleet.worker_ids().contains(w))
            {
                break busy;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        fleet.kill_worker(&victim);
        fleet.start_worker(&format!("{}-new", fleet.prefix), 2);
    })
    .await;
    // The killed worker's batch came back whole, was split in two, and ran.
    let report = run.report();
    assert!(
        batches(&report).len() > 63_usize.div_ceil(8),
        "more jobs than an undisturbed run's batches: {}",
        batches(&report).len()
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aggregator_killed_while_batches_are_half_reported_resumes_exactly() {
    let (fleet, run) = batches_survive(|fleet| {
        fleet.kill_aggregator();
        std::thread::sleep(Duration::from_secs(2));
        fleet.start_aggregator();
    })
    .await;
    let report = run.report();
    let mut ids: Vec<&str> = batches(&report)
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    let recorded = ids.len();
    ids.dedup();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), recorded, "each batch recorded once");
    // Every result of a batch points at a recorded batch.
    for test in tests(&report) {
        for attempt in test["attempts"].as_array().unwrap() {
            if let Some(batch) = attempt["batch"].as_str() {
                assert!(ids.contains(&batch), "{test}");
            }
        }
    }
    assert!(fleet
        .aggregator_log()
        .contains("resumed a run from its journal"));
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_test_inside_a_batch_ends_alone_dead_lettered_and_the_rest_pass() {
    let mut fleet = Fleet::start(3, 1);
    let expected = fault_suite();
    let mut names: Vec<String> = expected.keys().cloned().collect();
    names.push("poison".into());
    let producer = fleet.producer();
    let events = fleet.dir.join("events.ndjson");
    let events_arg = events.to_str().unwrap().to_owned();
    let run = tokio::spawn(async move {
        let mut args = batched(&[
            "--batch",
            "8",
            "--max-rounds",
            "2",
            "--retry-threshold",
            "0.5",
            "--timeout",
            "120",
            "--deadline",
            "500",
        ]);
        args.splice(0..0, ["--events".to_owned(), events_arg]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        producer.run(&names, &args).await
    });
    // Whoever starts a job holding `poison` dies, as a worker would that a
    // test brings down: the job comes back, is split, and poison ends alone.
    let mut killed: Vec<String> = Vec::new();
    while !run.is_finished() {
        for worker in poison_runners(&events) {
            if !killed.contains(&worker) && fleet.worker_ids().contains(&worker) {
                fleet.kill_worker(&worker);
                killed.push(worker);
                let replacement = format!("{}-replacement-{}", fleet.prefix, killed.len());
                fleet.start_worker(&replacement, 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let mut outcomes = outcomes(&run);
    let poison = outcomes.remove("poison").expect("reported");
    assert_eq!(poison, ("DeadLettered".to_owned(), 2), "{}", run.describe());
    assert_eq!(
        outcomes, expected,
        "every bystander as in an undisturbed run"
    );
    fleet.teardown().await;
}

/// The workers that started a job holding `poison`, by the producer's events.
fn poison_runners(events: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "test_started" && e["test"] == "poison")
        .filter_map(|e| e["worker"].as_str().map(str::to_owned))
        .collect()
}

/// A runner's failure message bigger than a result may carry (70,000 bytes
/// against 64 KiB) is cut by the worker: the test ends Failed with the
/// message shortened, and its batch neighbours keep their results. Before,
/// the whole results message was parked and the batch's tests ended missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_failure_message_is_cut_and_costs_its_batch_nothing() {
    let fleet = Fleet::start(1, 2);
    let names = ids(&["pass-1", "huge-1", "pass-2"]);
    let run = run(
        &fleet,
        &names,
        &[
            "--batch",
            "10",
            "--max-rounds",
            "1",
            "--retry-threshold",
            "1",
            "--deadline",
            "60",
        ],
    )
    .await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let statuses = run.statuses();
    assert_eq!(statuses["huge-1"], "Failed");
    assert_eq!(
        (statuses["pass-1"].as_str(), statuses["pass-2"].as_str()),
        ("Passed", "Passed")
    );
    let report = run.report();
    let huge = tests(&report).find(|t| t["id"] == "huge-1").unwrap();
    let message = huge["attempts"][0]["message"].as_str().unwrap();
    assert!(
        message.len() <= 64 << 10 && message.starts_with("xxx"),
        "{} bytes",
        message.len()
    );
    fleet.teardown().await;
}

/// A batch whose run's queue is deleted while it runs (the aggregator deletes
/// it at the run's end) cannot publish the follow-ups of its unreported
/// tests: they are dropped, and the worker's session, with every other job it
/// holds, goes on. Before, the broker returned them, the whole outbox group
/// counted as unpublished and the session ended: the job of another run on
/// the same worker was interrupted and ran again.
#[tokio::test(flavor = "multi_thread")]
async fn follow_ups_to_a_deleted_run_queue_cost_the_worker_nothing() {
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-fu", fleet.prefix);
    fleet.start_worker_with(&worker, 2, &["--executors", "process"]);
    let marks = fleet.dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let marks = marks.to_str().unwrap().to_owned();
    // A: a batch whose runner writes no report (every test unreported).
    let a_script = format!("touch {marks}/a-started; sleep 6");
    let a_args: Vec<String> = [
        "--executor",
        "process",
        "--report-format",
        "junit:name",
        "--batch",
        "4",
        "--deadline",
        "40",
        "--max-rounds",
        "1",
        "--",
        "sh",
        "-c",
        &a_script,
        "sh",
        "{report}",
        "{ids}",
    ]
    .map(String::from)
    .to_vec();
    // B: one long test of another run, on the worker's other slot.
    let b_script = format!("echo ran >> {marks}/b-runs; sleep 15");
    let b_args: Vec<String> = [
        "--executor",
        "process",
        "--max-rounds",
        "1",
        "--",
        "sh",
        "-c",
        &b_script,
    ]
    .map(String::from)
    .to_vec();
    let producer_a = fleet.producer();
    let run_a = tokio::spawn(async move {
        let args: Vec<&str> = a_args.iter().map(String::as_str).collect();
        producer_a.run(&ids(&["a1", "a2", "a3", "a4"]), &args).await
    });
    let started = std::time::Instant::now();
    while !std::path::Path::new(&format!("{marks}/a-started")).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "A never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_id = loop {
        let submitted = fleet.events().into_iter().find_map(|e| {
            (e["event"] == "run_submitted").then(|| e["run_id"].as_str().unwrap().to_owned())
        });
        if let Some(id) = submitted {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let producer_b = fleet.producer();
    let run_b = tokio::spawn(async move {
        let args: Vec<&str> = b_args.iter().map(String::as_str).collect();
        producer_b.run(&ids(&["b1"]), &args).await
    });
    let deleted = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "delete_queue",
            &fleet.topology().run_jobs_queue(&a_id),
        ])
        .output()
        .expect("rabbitmqctl");
    assert!(deleted.status.success(), "{deleted:?}");
    let b = run_b.await.unwrap();
    assert_eq!(b.exit_code(), 0, "{}", b.describe());
    let b_runs = std::fs::read_to_string(format!("{marks}/b-runs")).unwrap();
    assert_eq!(
        b_runs.lines().count(),
        1,
        "B ran once: the worker's session went on"
    );
    let a = run_a.await.unwrap();
    assert_ne!(
        a.exit_code(),
        0,
        "A's tests never got results: {}",
        a.describe()
    );
    fleet.teardown().await;
}
