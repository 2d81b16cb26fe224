//! Bounds on messages and values: a run of any size and output volume gets its
//! verdict; a value no arithmetic can hold is refused at the door; a panic
//! costs one job or one run's reports, never the fleet.

use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use testfleet_types::codec::{decode, encode};
use testfleet_types::messages::{BatchRecord, Batches, Body, Part, TestResult};

use crate::fixtures::{passed_result, scripted_command, tests, Fleet, BROKER, BUSYBOX};

/// The repro of a verdict bigger than the broker's message limit: 200 tests
/// that print 2 MB each and fail make a 200 MB report. The verdict must reach
/// the producer quickly, its reports must say what was cut and where the
/// aggregator's whole copy is, and that copy must be whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_reports_exceed_the_broker_message_size_gets_its_verdict() {
    let mut fleet = Fleet::start(0, 1);
    let worker = format!("{}-proc", fleet.prefix);
    fleet.start_worker_with(&worker, 4, &["--executors", "process"]);
    let ids: Vec<String> = (1..=200).map(|i| format!("big-{i:03}")).collect();
    let started = Instant::now();
    let run = fleet
        .run(
            &ids,
            &[
                "--executor",
                "process",
                "--timeout",
                "60",
                "--deadline",
                "400",
                "--",
                "sh",
                "-c",
                "head -c 2000000 /dev/zero | tr '\\0' x; exit 1",
            ],
        )
        .await;
    let took = started.elapsed();

    // Every test fails: over the retry threshold, so one round and exit 3.
    assert_eq!(run.exit_code(), 3, "{}", run.describe());
    assert!(took < Duration::from_secs(300), "verdict after {took:?}");
    let report = run.report();
    assert_eq!(tests(&report).count(), 200, "every test in the report");
    let cut = &report["verdict_cut"];
    assert_eq!(cut["outputs_shortened"], 200, "{cut}");
    assert_eq!(cut["passed_tests_left_out"], 0, "{cut}");
    let full = cut["full_report"].as_str().unwrap();
    let dir = full.split_once(':').unwrap().1;
    assert!(
        dir.ends_with(&run.run_id()),
        "names the run's folder: {full}"
    );
    assert!(
        run.stdout().contains("cut to fit the verdict message"),
        "{}",
        run.stdout()
    );
    let shortened = tests(&report).next().unwrap()["attempts"][0]["output"]
        .as_str()
        .unwrap();
    assert!(
        shortened.contains(full),
        "the output says where the rest is"
    );

    let whole: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/report.json")).unwrap())
            .unwrap();
    assert_eq!(whole["verdict_cut"], serde_json::Value::Null);
    let output = tests(&whole).next().unwrap()["attempts"][0]["output"]
        .as_str()
        .unwrap();
    assert!(
        output.len() >= 1 << 20,
        "the aggregator keeps the whole output: {} bytes",
        output.len()
    );
    fleet.teardown().await;
}

/// A result whose duration no chart can scale (`u64::MAX`) is parked at the
/// door with its reason, and the run it claims to belong to finishes with its
/// real result; so does the next run. A result of a run nobody announced is
/// parked too, never acked away. Before the bounds, it was counted, and
/// rendering the run's HTML overflowed: the aggregator crashed on every
/// restart, since the result was in its journal.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_with_an_impossible_duration_is_parked_and_every_run_finishes() {
    let fleet = Fleet::start(1, 2);
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let ids = ["slow".to_owned(), "quick".to_owned()];
        let command = scripted_command(r#"[ "$1" = slow ] && sleep 4; true"#);
        let mut args = vec!["--image", BUSYBOX, "--deadline", "120"];
        args.extend(command.iter().map(String::as_str));
        producer.run(&ids, &args).await
    });
    let run_id = loop {
        if let Some(run_id) = fleet.journaled_runs().pop() {
            break run_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let forged = Body::Result(TestResult {
        duration_ms: u64::MAX,
        ..passed_result(run_id.parse().unwrap(), "slow", "forger")
    });
    publish(&fleet.topology().results, &encode(&forged)).await;
    // A result of a run nobody announced: kept, not acked away.
    let Body::Result(mut stray) = forged else {
        unreachable!()
    };
    let stray_run = uuid::Uuid::new_v4();
    stray.run_id = stray_run;
    stray.duration_ms = 5;
    publish(&fleet.topology().results, &encode(&Body::Result(stray))).await;
    let run = run.await.unwrap();

    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let slow = tests(&run.report())
        .find(|t| t["id"] == "slow")
        .unwrap()
        .clone();
    assert_ne!(slow["attempts"][0]["worker_id"], "forger", "{slow}");
    assert_eq!(fleet.parked_count().await, 1, "the forged result is kept");
    assert_eq!(
        fleet.unclaimed_count(&stray_run.to_string()).await,
        1,
        "the stray one is kept for its run"
    );
    assert!(
        fleet.aggregator_log().contains("duration_ms"),
        "reason logged"
    );
    let next = fleet
        .run(&["after".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(next.exit_code(), 0, "{}", next.describe());
    fleet.teardown().await;
}

/// Someone who starts parted messages and never finishes them (16 of them,
/// 32 parts of 64 each: enough to fill the aggregator's prefetch) holds
/// only what the joiner's bounds allow, per sender and in all: a run
/// submitted after them gets its announcement read and its verdict, long
/// before the half-sent parts would expire.
#[tokio::test(flavor = "multi_thread")]
async fn half_sent_parted_messages_do_not_starve_the_results_queue() {
    let fleet = Fleet::start(1, 2);
    let first = fleet
        .run(&["first".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(first.exit_code(), 0, "{}", first.describe());
    let junk: Vec<Vec<u8>> = (0..16)
        .flat_map(|_| {
            let message_id = uuid::Uuid::new_v4();
            (0..32).map(move |index| {
                encode(&Body::Part(Part {
                    message_id,
                    index,
                    count: 64,
                    bytes: vec![7; 64],
                }))
            })
        })
        .collect();
    publish_all(&fleet.topology().results, &junk).await;
    let started = Instant::now();
    let after = fleet
        .run(
            &["after-1".into(), "after-2".into()],
            &["--image", BUSYBOX, "--deadline", "60", "--", "true"],
        )
        .await;
    assert_eq!(after.exit_code(), 0, "{}", after.describe());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run waited {:?} behind the half-sent parts",
        started.elapsed()
    );
    fleet.teardown().await;
}

/// Results of a run no aggregator knew (another one led without its journal,
/// or its announcement was lost) are kept for the run; the aggregator that
/// learns the run claims and counts them. Here the run is announced after
/// its one result came, and no job is ever published: the result is all it
/// has, and it finishes with it.
#[tokio::test(flavor = "multi_thread")]
async fn results_kept_for_an_unknown_run_are_claimed_once_it_is_known() {
    let fleet = Fleet::start(0, 1);
    let first = fleet.topology().results;
    while crate::fixtures::consumers(&first) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_id = uuid::Uuid::new_v4();
    let early = Body::Results(vec![passed_result(run_id, "t", "early-worker")]);
    publish(&fleet.topology().results, &encode(&early)).await;
    let started = Instant::now();
    while fleet.unclaimed_count(&run_id.to_string()).await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "never kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = testfleet_types::now_ms();
    let announce = Body::Run(testfleet_types::messages::RunAnnounce {
        run_id,
        suite: "late".into(),
        created_at_ms: now,
        deadline_ms: now + 30_000,
        spec: testfleet_common::config::default_spec(),
        tests: vec!["t".into()],
        verdict_token: None,
        queue: testfleet_types::messages::JobQueue::Shared,
        weight: 1,
        auto_quarantine_percent: None,
        quarantine: Vec::new(),
        signatures: Vec::new(),
        ab: None,
    });
    publish(&fleet.topology().results, &encode(&announce)).await;
    let report = fleet
        .dir
        .join("aggregator-reports")
        .join(run_id.to_string())
        .join("report.json");
    while !report.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no report");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let test = tests(&report).next().unwrap();
    assert_eq!(test["status"], "Passed", "{test}");
    assert_eq!(test["attempts"][0]["worker_id"], "early-worker");
    fleet.teardown().await;
}

/// One result out of bounds in a worker's message costs itself alone: its
/// neighbour in the same message (another job's test) is counted, and only
/// the bad one is parked.
#[tokio::test(flavor = "multi_thread")]
async fn one_result_out_of_bounds_costs_its_neighbours_nothing() {
    let fleet = Fleet::start(0, 1);
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let ids = ["bad".to_owned(), "good".to_owned()];
        let args = [
            "--image",
            BUSYBOX,
            "--deadline",
            "20",
            "--max-rounds",
            "1",
            "--",
            "true",
        ];
        producer.run(&ids, &args).await
    });
    let run_id: uuid::Uuid = loop {
        if let Some(run_id) = fleet.journaled_runs().pop() {
            break run_id.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bad = TestResult {
        message: Some("x".repeat(70_000)),
        ..passed_result(run_id, "bad", "forger")
    };
    let good = passed_result(run_id, "good", "forger");
    let message = Body::Results(vec![bad, good]);
    publish(&fleet.topology().results, &encode(&message)).await;
    let run = run.await.unwrap();

    assert_eq!(run.exit_code(), 4, "{}", run.describe());
    let statuses = run.statuses();
    assert_eq!(statuses["good"], "Passed", "{}", run.describe());
    assert_eq!(statuses["bad"], "Missing");
    assert_eq!(fleet.parked_count().await, 1, "the bad result alone");
    fleet.teardown().await;
}

/// A worker's batch record and result of a run no aggregator knows are kept
/// together (in the run's unclaimed queue), record included, never acked
/// away. Before, the aggregator parked the result and dropped the record.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_record_of_an_unknown_run_is_kept_with_its_results() {
    let fleet = Fleet::start(1, 1);
    // After a run the results queue exists and its consumer is the aggregator.
    let first = fleet
        .run(&["first".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(first.exit_code(), 0, "{}", first.describe());
    let run_id = uuid::Uuid::new_v4();
    let batch = BatchRecord {
        id: uuid::Uuid::new_v4(),
        run_id,
        attempt: 1,
        worker_id: "stray-worker".into(),
        tests: 1,
        reported: 1,
        started_at_ms: 1,
        command_started_at_ms: 2,
        finished_at_ms: 3,
        exit_code: Some(0),
        timed_out: false,
        log: None,
        log_truncated: false,
        split_into: 0,
        host_busy_permille: None,
    };
    let result = TestResult {
        batch: Some(batch.id),
        ..passed_result(run_id, "stray", "stray-worker")
    };
    let stray = Body::Batches(Batches {
        batches: vec![batch.clone()],
        results: vec![result],
    });
    publish(&fleet.topology().results, &encode(&stray)).await;

    let kept = fleet
        .take_unclaimed(&run_id.to_string(), 1, Duration::from_secs(30))
        .await;
    assert_eq!(kept.len(), 1, "the stray message is kept for its run");
    match decode(&kept[0]) {
        Ok(Body::Batches(kept)) => {
            assert_eq!(kept.batches, vec![batch], "the batch record is kept");
            assert_eq!(kept.results.len(), 1, "and its result beside it");
        }
        other => panic!("parked: {other:?}"),
    }
    fleet.teardown().await;
}

/// A job whose task panics goes back to the queue at once (and, panicking
/// at every delivery, is dead-lettered after the limit), while the worker
/// carries on with the other jobs. Before, its delivery was dropped unacked:
/// the job held a slot and the run waited for its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_task_panics_is_given_back_and_the_worker_goes_on() {
    let fleet = Fleet::start_with_broker(1, 2, BROKER, &[("TESTFLEET_FAULT_PANIC", "job:boom")]);
    let ids: Vec<String> = ["boom", "a", "b", "c"].map(String::from).to_vec();
    let started = Instant::now();
    let run = fleet
        .run(
            &ids,
            &[
                "--image",
                BUSYBOX,
                "--max-rounds",
                "1",
                "--retry-threshold",
                "1",
                "--deadline",
                "200",
                "--",
                "true",
            ],
        )
        .await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "ended long before its deadline: {:?}",
        started.elapsed()
    );
    let statuses = run.statuses();
    assert_eq!(statuses["boom"], "DeadLettered", "{statuses:?}");
    for id in ["a", "b", "c"] {
        assert_eq!(statuses[id], "Passed", "{statuses:?}");
    }
    fleet.teardown().await;
}

/// Reports that panic while being written cost that run its aggregator-side
/// files only: its verdict still reaches its producer (which writes its own
/// reports from it), and another run finishing beside it is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_writing_one_runs_reports_spares_its_verdict_and_the_other_runs() {
    let fleet =
        Fleet::start_with_broker(1, 2, BROKER, &[("TESTFLEET_FAULT_PANIC", "report:doomed")]);
    let doomed = fleet.producer();
    let doomed = tokio::spawn(async move {
        let args = ["--suite", "doomed", "--image", BUSYBOX, "--", "true"];
        doomed.run(&["d1".into(), "d2".into()], &args).await
    });
    let fine = fleet
        .run(
            &["f1".into(), "f2".into()],
            &["--suite", "fine", "--image", BUSYBOX, "--", "true"],
        )
        .await;
    let doomed = doomed.await.unwrap();
    assert_eq!(fine.exit_code(), 0, "{}", fine.describe());
    assert_eq!(doomed.exit_code(), 0, "{}", doomed.describe());
    assert_eq!(doomed.statuses().len(), 2, "the producer's own report");
    let aggregator_reports = fleet.dir.join("aggregator-reports");
    assert!(aggregator_reports
        .join(fine.run_id())
        .join("report.json")
        .is_file());
    assert!(
        !aggregator_reports
            .join(doomed.run_id())
            .join("report.json")
            .exists(),
        "the panic did strike"
    );
    fleet.teardown().await;
}

/// Publishes `payloads` to `queue`, each confirmed.
async fn publish_all(queue: &str, payloads: &[Vec<u8>]) {
    let connection = lapin::Connection::connect(BROKER, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    for payload in payloads {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _ = connection.close(200, "published".into()).await;
}

async fn publish(queue: &str, payload: &[u8]) {
    let connection = lapin::Connection::connect(BROKER, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "published".into()).await;
}

/// A batch dead-lettered after its run finished (its queue deleted) is
/// dropped: before, the aggregator published its halves to the deleted
/// queue, the broker refused them, the session ended and the same delivery
/// came back first, for ever, so no other run was counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_lettered_batch_of_a_finished_run_is_dropped() {
    let fleet = Fleet::start(1, 1);
    let first = fleet
        .run(&["first".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(first.exit_code(), 0, "{}", first.describe());
    let run_id: uuid::Uuid = first.run_id().parse().unwrap();
    let mut job = testfleet_types::messages::Job::single(
        run_id,
        "first".into(),
        1,
        testfleet_types::now_ms() + 60_000,
        testfleet_common::config::default_spec(),
    );
    job.tests.push(testfleet_types::messages::JobTest {
        id: "second".into(),
        allowance_ms: 1_000,
        command_id: None,
    });
    job.queue = testfleet_types::messages::JobQueue::Own;
    let payload = encode(&Body::Job(job));
    let dead = fleet.topology().dead_jobs.clone();
    publish(&dead, &payload).await;
    let started = std::time::Instant::now();
    while fleet.queue_len(&dead).await.unwrap_or(0) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the dead-lettered batch stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = fleet
        .run(&["after".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(
        second.exit_code(),
        0,
        "the aggregator goes on: {}",
        second.describe()
    );
    fleet.teardown().await;
}

/// One message naming 2,000 runs no aggregator knows leaves at most the
/// budget's queues of unclaimed results (100 per sender); the rest is
/// parked with the reason. Before, each run got a queue kept for a week.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_naming_many_unknown_runs_leaves_few_queues() {
    let fleet = Fleet::start(0, 1);
    let results: Vec<TestResult> = (0..2_000)
        .map(|i| passed_result(uuid::Uuid::new_v4(), &format!("t{i}"), "forger"))
        .collect();
    let results_queue = fleet.topology().results.clone();
    let parked_queue = fleet.topology().parked.clone();
    let ready = Instant::now();
    // The aggregator declares the topology once it runs.
    while fleet.queue_len(&parked_queue).await.is_none() {
        assert!(ready.elapsed() < Duration::from_secs(60), "no aggregator");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(&results_queue, &encode(&Body::Results(results))).await;
    let started = Instant::now();
    while fleet.parked_count().await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing parked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Parked in one message per run beyond the budget.
    while fleet.parked_count().await < 1_900 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} parked",
            fleet.parked_count().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = crate::fixtures::queues_with_prefix(&format!("{}.results.unclaimed.", fleet.prefix));
    assert!(kept.len() <= 100, "{} unclaimed queues", kept.len());
    fleet.teardown().await;
}
