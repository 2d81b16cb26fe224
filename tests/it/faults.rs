//! Faults injected for real: every test must still be counted exactly once and the
//! verdict must mean what it says.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use testfleet_types::codec::encode;
use testfleet_types::messages::{Body, Job};

use crate::fixtures::{
    leftover_containers, passed_result, scripted_command, Fleet, RunOutcome, BROKER, BUSYBOX,
};
use crate::netns::{BrokerUser, Netns};

/// Passes, except `flaky-*` tests, which fail on their first attempt.
/// `poison` sleeps long enough for the poison case to kill whoever runs it.
/// `pass-030` and `pass-031` take 20 s, so they are mid-run when the fault hits
/// (once 30 tests have finished), and outlast a stopping Docker daemon's 10 s
/// grace period, so that it kills them.
const SCRIPT: &str = r#"
case "$1" in pass-03[01]) sleep 20 ;; poison) sleep 60 ;; *) sleep 0.3 ;; esac
case "$1" in
  flaky-*) [ "$TESTFLEET_ATTEMPT" != 1 ] ;;
  *) true ;;
esac
"#;

/// 95 passing and 5 flaky tests, each with the (status, attempts) it must end
/// with: what an undisturbed run gives, since every outcome follows from the id.
fn suite() -> BTreeMap<String, (String, usize)> {
    let pass = (1..=95).map(|i| (format!("pass-{i:03}"), ("Passed".to_owned(), 1)));
    let flaky = (1..=5).map(|i| (format!("flaky-{i}"), ("Flaky".to_owned(), 2)));
    pass.chain(flaky).collect()
}

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

/// Runs the 100-test suite on 3 workers × 2 slots, injects `fault` once 30 tests
/// have finished, and checks that every test ends exactly as in an undisturbed
/// run, counted once, with no container left behind. Returns the fleet (for its
/// logs) and the run.
/// `fault` is synchronous: it may block (restarting a service) while the run
/// goes on in its own task.
pub async fn survives(fault: impl FnOnce(&mut Fleet)) -> (Fleet, RunOutcome) {
    survives_on(Fleet::start(3, 2), fault).await
}

/// [`survives`] on a fleet of the caller's.
pub async fn survives_on(mut fleet: Fleet, fault: impl FnOnce(&mut Fleet)) -> (Fleet, RunOutcome) {
    let expected = suite();
    let producer = fleet.producer();
    let ids: Vec<String> = expected.keys().cloned().collect();
    let run = tokio::spawn(async move {
        let command = scripted_command(SCRIPT);
        // A deadline, so that a broken mechanism fails the test instead of hanging it.
        let mut args = vec!["--image", BUSYBOX, "--timeout", "30", "--deadline", "300"];
        args.extend(command.iter().map(String::as_str));
        producer.run(&ids, &args).await
    });
    while fleet.finished_count() < 30 {
        assert!(!run.is_finished(), "the run ended before the fault");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| fault(&mut fleet));
    let run = run.await.unwrap();

    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(
        outcomes(&run),
        expected,
        "same outcomes as an undisturbed run, each counted once"
    );
    assert_no_leftovers(&run.run_id()).await;
    (fleet, run)
}

/// Containers a killed worker was creating at its death may appear after the
/// survivors' start-up sweep; their next periodic sweep (15 s) removes them.
async fn assert_no_leftovers(run_id: &str) {
    for _ in 0..40 {
        if leftover_containers(run_id).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("containers left behind: {:?}", leftover_containers(run_id));
}

/// Polls `done` every 50 ms for up to `secs`; panics with `what` if it never holds.
fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < until, "{what} (waited {secs}s)");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The reference every fault case is held to: the suite with no fault ends as
/// [`suite`] predicts, so a fault case's equality means "as if undisturbed".
#[tokio::test(flavor = "multi_thread")]
async fn an_undisturbed_run_of_the_fault_suite_ends_as_predicted() {
    let (fleet, run) = survives(|_| {}).await;
    assert_eq!(run.report()["rounds"], 2, "{}", run.describe());
    fleet.teardown().await;
}

/// The invariant, read from data: no attempt the cut-off worker started while
/// cut off is counted (`report.json`'s attempts, with worker and start time)
/// or even reached the aggregator (its ignored results); every test counted
/// once. After the link heals it joins again as a new session, and what it
/// runs then counts as any worker's. A result of the cut-off worker that went
/// out before the cut may come back as an ignored duplicate: the broker
/// redelivers a job whose ack the cut lost, at least once, as designed.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_from_the_broker_has_its_jobs_run_elsewhere_and_publishes_nothing_stale() {
    let netns = Netns::create();
    let user = BrokerUser::create();
    let mut fleet = Fleet::start(2, 2);
    let remote = format!("{}-remote", fleet.prefix);
    fleet.start_worker_in(&netns, &user.url(&netns.host_ip), &remote, 2);

    let (mut cut_at_ms, mut healed_at_ms) = (0, 0);
    let (fleet, run) = survives_on(fleet, |_| {
        wait_until(60, "the remote worker never held a job", || {
            user.unacked() > 0
        });
        netns.cut();
        cut_at_ms = testfleet_types::now_ms();
        // Still cut off: the broker must notice (missed heartbeats), close the
        // connection and requeue its jobs before the link comes back.
        wait_until(60, "the broker never dropped the cut-off worker", || {
            user.connections() == 0
        });
        healed_at_ms = testfleet_types::now_ms();
        netns.heal();
        wait_until(60, "the remote worker did not reconnect", || {
            user.connections() > 0
        });
    })
    .await;

    let report = run.report();
    let by_remote = |attempt: &serde_json::Value| attempt["worker_id"] == remote.as_str();
    let while_cut = |a: &serde_json::Value| {
        let started = a["started_at_ms"].as_u64();
        by_remote(a) && started.is_some_and(|ms| (cut_at_ms..healed_at_ms).contains(&ms))
    };
    let counted: Vec<&serde_json::Value> = crate::fixtures::tests(&report)
        .flat_map(|t| t["attempts"].as_array().unwrap())
        .filter(|a| by_remote(a))
        .collect();
    assert!(!counted.is_empty(), "the remote worker ran tests");
    for attempt in counted {
        assert!(!while_cut(attempt), "counted while cut off: {attempt}");
    }
    for ignored in report["ignored_results"].as_array().unwrap() {
        assert!(
            !while_cut(ignored),
            "the cut-off worker published a result it started while cut off: {ignored}"
        );
    }
    let log = fleet.worker_log(&remote);
    assert!(
        !log.contains(&user.password),
        "the password never reaches a log"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_killed_again_and_again_mid_run_lose_nothing_and_count_nothing_twice() {
    let (fleet, _) = survives(|fleet| {
        for kill in 1..=3 {
            // A worker caught mid-test, so that a job is surely in flight.
            let victim = loop {
                if let Some(busy) = fleet.busy_workers().into_iter().next() {
                    break busy;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            fleet.kill_worker(&victim);
            fleet.start_worker(&format!("{}-new-{kill}", fleet.prefix), 2);
            std::thread::sleep(Duration::from_secs(2));
        }
    })
    .await;
    let removed: usize = fleet
        .worker_ids()
        .iter()
        .map(|w| {
            fleet
                .worker_log(w)
                .matches("removing orphaned test container")
                .count()
        })
        .sum();
    assert!(removed > 0, "the killed workers' containers were swept");
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aggregator_killed_mid_run_resumes_from_its_journal_without_double_counting() {
    let (fleet, _) = survives(|fleet| {
        fleet.kill_aggregator();
        std::thread::sleep(Duration::from_secs(2));
        fleet.start_aggregator();
    })
    .await;
    assert!(fleet
        .aggregator_log()
        .contains("resumed a run from its journal"));
    fleet.teardown().await;
}

/// Two aggregators on one prefix, sharing a state dir (a redeploy's
/// overlap): one leads and the other stands by, consuming nothing, so no
/// result goes to an aggregator that does not know its run. Killed mid-run,
/// the leader hands over: the other resumes the run from the journals, and
/// every test ends as in an undisturbed run, counted once.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_aggregator_stands_by_and_takes_over_when_the_first_dies() {
    let mut fleet = Fleet::start(3, 2);
    let results = fleet.topology().results;
    wait_until(30, "the first aggregator never consumed", || {
        crate::fixtures::consumers(&results) == 1
    });
    fleet.start_standby_aggregator();
    wait_until(30, "the second aggregator never said it stands by", || {
        fleet.standby_log().contains("standing by")
    });
    assert_eq!(crate::fixtures::consumers(&results), 1, "one consumer");
    let (fleet, _) = survives_on(fleet, |fleet| fleet.kill_aggregator()).await;
    assert!(fleet
        .standby_log()
        .contains("resumed a run from its journal"));
    fleet.teardown().await;
}

/// The durable journal: the aggregator exits (as a kill would stop it) right
/// after a group of results is synced to its journal and before any of them
/// is acked. Restarted, it has them from the journal, and the broker's
/// redeliveries of the same results are recognised as duplicates: nothing
/// lost, nothing counted twice.
#[tokio::test(flavor = "multi_thread")]
async fn an_aggregator_killed_between_a_journal_sync_and_its_acks_loses_and_doubles_nothing() {
    let mut fleet = Fleet::start(3, 2);
    fleet.kill_aggregator();
    fleet.start_aggregator_with(&[("TESTFLEET_FAULT_EXIT", "journal-commit:40")]);
    let (fleet, run) = survives_on(fleet, |fleet| {
        let status = fleet.wait_aggregator_exit(Duration::from_secs(120));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(137),
            "the aggregator exits at its fault point"
        );
        fleet.start_aggregator();
    })
    .await;
    let report = run.report();
    let duplicates = report["ignored_results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "Duplicate")
        .count();
    assert!(
        duplicates > 0,
        "the journaled, unacked results came again and were not counted: {}",
        report["ignored_results"]
    );
    assert!(fleet
        .aggregator_log()
        .contains("deliberate exit at journal-commit"));
    fleet.teardown().await;
}

/// A standby on "another machine": a state dir of its own, the journal in
/// the broker's stream. The leader is killed mid-run; the standby replays
/// the stream, takes over the open run and finishes it as an undisturbed
/// run ends, each test counted once.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_without_the_leaders_disk_takes_over_from_the_broker_journal() {
    let broker_journal = [("TESTFLEET_AGGREGATOR__JOURNAL", "broker")];
    let mut fleet = Fleet::start_with_broker(3, 2, BROKER, &broker_journal);
    let results = fleet.topology().results;
    wait_until(30, "the first aggregator never consumed", || {
        crate::fixtures::consumers(&results) == 1
    });
    fleet.start_standby_aggregator_in("standby-state");
    wait_until(30, "the second aggregator never said it stands by", || {
        fleet.standby_log().contains("standing by")
    });
    let (fleet, run) = survives_on(fleet, |fleet| fleet.kill_aggregator()).await;
    let standby = fleet.standby_log();
    assert!(
        standby.contains("replayed the journal stream")
            && standby.contains("resumed a run from its journal"),
        "{standby}"
    );
    let standby_report = fleet
        .dir
        .join("standby-reports")
        .join(run.run_id())
        .join("report.json");
    assert!(standby_report.exists(), "the standby finished the run");
    assert!(
        fleet.journaled_runs().is_empty(),
        "the leader kept no journal on disk"
    );
    fleet.teardown().await;
}

/// The aggregator's state dir full (a 1 MiB tmpfs, filled): it cannot journal,
/// so it acks nothing, keeps running (no crash loop), and says why; the
/// results wait in the broker. Once there is room again the run goes on and
/// ends as it would have, every test counted once.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_disk_pauses_the_aggregator_and_loses_nothing() {
    let mut fleet = Fleet::start(0, 2);
    fleet.kill_aggregator();
    let state = fleet.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let _mounted = Tmpfs::mount(&state, "1m");
    let filler = state.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    fleet.start_aggregator();
    fleet.start_worker(&format!("{}-w", fleet.prefix), 2);
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let ids: Vec<String> = (1..=5).map(|i| format!("disk-{i}")).collect();
        producer
            .run(
                &ids,
                &["--image", BUSYBOX, "--deadline", "180", "--", "true"],
            )
            .await
    });
    wait_until(
        60,
        "the aggregator never said its state dir is full",
        || {
            fleet
                .aggregator_log()
                .contains("cannot keep the aggregator's state")
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(fleet.aggregator_running(), "no exit on a full disk");
    assert!(!run.is_finished(), "nothing counted without its journal");
    std::fs::remove_file(&filler).unwrap();
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert!(
        run.attempts().values().all(|&n| n == 1),
        "{:?}",
        run.attempts()
    );
    fleet.teardown().await;
}

/// The state dir fills up mid-run, while results stream in and commits are
/// pipelined: a commit that fails takes none of its deliveries' acks with
/// it (they come again once there is room), so every test still runs once.
/// Acking before the journal took the record would lose the result, and the
/// test would run a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_disk_filling_mid_run_acks_nothing_it_could_not_journal() {
    let mut fleet = Fleet::start(0, 4);
    fleet.kill_aggregator();
    let state = fleet.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let _mounted = Tmpfs::mount(&state, "1m");
    fleet.start_aggregator();
    fleet.start_worker(&format!("{}-w", fleet.prefix), 4);
    let producer = fleet.producer();
    // Enough results that their records outgrow the journal's last page
    // (a tmpfs takes writes into a page it already gave the file).
    let ids: Vec<String> = (1..=80).map(|i| format!("filling-{i:02}")).collect();
    let run = tokio::spawn(async move {
        producer
            .run(
                &ids,
                &["--image", BUSYBOX, "--deadline", "120", "--", "true"],
            )
            .await
    });
    while fleet.finished_count() < 5 {
        assert!(!run.is_finished(), "the run ended before the disk filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let filler = state.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    wait_until(
        120,
        "the aggregator never said its state dir is full",
        || {
            fleet
                .aggregator_log()
                .contains("cannot keep the aggregator's state")
        },
    );
    std::fs::remove_file(&filler).unwrap();
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(run.attempts().len(), 80);
    assert!(
        run.attempts().values().all(|&n| n == 1),
        "{:?}",
        run.attempts()
    );
    fleet.teardown().await;
}

/// A tmpfs mounted for a test, unmounted when dropped (a failed assertion
/// leaves no mount behind).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs (tests run as root)");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Anyone who can publish can put a verdict on a waiting producer's queue:
/// one without the run's secret token (which only the producer and the
/// aggregator know) is parked, and the producer waits for the real one.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_verdict_is_parked_and_the_producer_waits_for_the_real_one() {
    let fleet = Fleet::start(0, 1);
    let topology = fleet.topology();
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let ids = ["forged-a".to_owned(), "forged-b".to_owned()];
        let args = [
            "--image",
            BUSYBOX,
            "--deadline",
            "15",
            "--max-rounds",
            "1",
            "--",
            "true",
        ];
        producer.run(&ids, &args).await
    });
    let verdict_queue = wait_for_verdict_queue(&topology.verdicts).await;
    let run_id = verdict_queue.rsplit('.').next().unwrap().parse().unwrap();
    let now = testfleet_types::now_ms();
    let forged = Body::Report(testfleet_types::messages::RunReport {
        run_id,
        suite: "forged".into(),
        created_at_ms: now,
        finished_at_ms: now,
        rounds: 1,
        verdict: testfleet_types::messages::VerdictKind::Passed,
        spec: testfleet_common::config::default_spec(),
        tests: Vec::new(),
        verdict_cut: None,
        ignored_results: Vec::new(),
        batches: Vec::new(),
        reports_error: None,
        flakiness: None,
        comparison: None,
        cache: None,
    });
    let connection = lapin::Connection::connect(BROKER, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    publish_raw(&channel, &verdict_queue, &encode(&forged)).await;
    let _ = connection.close(200, "forged".into()).await;
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 4, "the real verdict: {}", run.describe());
    assert!(run.statuses().values().all(|s| s == "Missing"));
    assert!(
        fleet.parked_count().await >= 1,
        "the forged verdict is kept"
    );
    fleet.teardown().await;
}

/// The aggregator cannot write a run's reports (its report folder is a
/// file): the verdict says so, and the producer's report.json carries why.
#[tokio::test(flavor = "multi_thread")]
async fn reports_the_aggregator_cannot_write_are_said_in_the_verdict() {
    let mut fleet = Fleet::start(1, 2);
    fleet.kill_aggregator();
    std::fs::write(fleet.dir.join("aggregator-reports"), "not a folder").unwrap();
    fleet.start_aggregator();
    let run = fleet
        .run(&["unwritten".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let error = run.report()["reports_error"].clone();
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("aggregator-reports")),
        "{error}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_messages_on_every_queue_are_parked_and_the_run_goes_on() {
    let fleet = Fleet::start(2, 2);
    let topology = fleet.topology();
    // Let the services declare the topology before we publish into it.
    let warmup = fleet
        .run(&["pass-0".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(warmup.exit_code(), 0, "{}", warmup.describe());

    let result = Body::Result(passed_result(uuid::Uuid::new_v4(), "x", "w"));
    let mut wrong_version = encode(&result);
    assert_eq!(
        wrong_version[1],
        testfleet_types::codec::FORMAT_VERSION as u8,
        "a msgpack array of [version, body]"
    );
    wrong_version[1] = 0x7f;
    let bad: Vec<Vec<u8>> = vec![
        b"\xde\xad garbage \xbe\xef".to_vec(),
        wrong_version,
        encode(&result),
    ];

    let connection = lapin::Connection::connect(BROKER, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // On the jobs queue a result is of the wrong kind; on the results queue a
    // result is fine, so a job plays the wrong kind there (and on the others).
    let job = encode(&Body::Job(sample_job()));
    let with_job = vec![bad[0].clone(), bad[1].clone(), job];
    for (queue, payloads) in [
        (&topology.jobs, bad.clone()),
        (&topology.results, with_job.clone()),
        (&topology.history, with_job.clone()),
    ] {
        for payload in payloads {
            publish_raw(&channel, queue, &payload).await;
        }
    }

    // A waiting producer's own verdict queue exists only while its run goes on:
    // feed it while the run's one test sleeps.
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let ids = ["after-1".to_owned(), "after-2".to_owned()];
        producer
            .run(&ids, &["--image", BUSYBOX, "--", "sleep", "5"])
            .await
    });
    let verdict_queue = wait_for_verdict_queue(&topology.verdicts).await;
    for payload in &with_job {
        publish_raw(&channel, &verdict_queue, payload).await;
    }
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 0, "consumers carry on: {}", run.describe());

    let mut parked = 0;
    for _ in 0..100 {
        let queue = channel
            .queue_declare(
                topology.parked.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        parked = queue.message_count();
        if parked >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = connection.close(200, "done".into()).await;
    assert_eq!(parked, 12, "every unreadable message parked, none lost");
    let logs = fleet.aggregator_log()
        + &fleet
            .worker_ids()
            .iter()
            .map(|w| fleet.worker_log(w))
            .collect::<String>()
        + &run.describe();
    for reason in [
        "message format version 127",
        "expected a job message, got a result message",
        "parking a message of the wrong kind",
        "parking an unreadable history query",
        "expected a history query, got a job message",
        "parking a message that is no part of this run's verdict",
        "a job message of another run or kind",
    ] {
        assert!(logs.contains(reason), "the reason is logged: {reason}");
    }
    fleet.teardown().await;
}

async fn publish_raw(channel: &lapin::Channel, queue: &str, payload: &[u8]) {
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

/// The name of the one verdict queue under `verdicts`, once it exists.
async fn wait_for_verdict_queue(verdicts: &str) -> String {
    let prefix = format!("{verdicts}.verdict.");
    for _ in 0..100 {
        let listed = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name"])
            .output()
            .expect("rabbitmqctl");
        let names = String::from_utf8_lossy(&listed.stdout).into_owned();
        if let Some(name) = names.lines().find(|n| n.starts_with(&prefix)) {
            return name.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no verdict queue under {prefix}");
}

/// A well-formed job: the wrong kind of message on the results queue.
fn sample_job() -> Job {
    let mut spec = testfleet_common::config::default_spec();
    spec.image = BUSYBOX.into();
    spec.command = vec!["true".into()];
    let deadline_ms = testfleet_types::now_ms() + 3_600_000;
    Job::single(uuid::Uuid::new_v4(), "x".into(), 1, deadline_ms, spec)
}

/// Kills every worker that starts `poison` (by the run's events), replacing
/// it, until the run ends. Returns how many workers it killed.
async fn kill_whoever_runs(
    fleet: &mut Fleet,
    poison: &str,
    run: &tokio::task::JoinHandle<crate::fixtures::RunOutcome>,
) -> usize {
    let mut killed: Vec<String> = Vec::new();
    while !run.is_finished() {
        for (worker, test) in fleet.starts() {
            if test == poison && !killed.contains(&worker) && fleet.worker_ids().contains(&worker) {
                fleet.kill_worker(&worker);
                killed.push(worker);
                let replacement = format!("{}-replacement-{}", fleet.prefix, killed.len());
                fleet.start_worker(&replacement, 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killed.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_test_is_dead_lettered_after_the_delivery_limit_and_the_run_ends() {
    // One slot per worker, so a worker holds one job (prefetch = slots) and the
    // poison test's deaths never use up a bystander's deliveries. With more
    // slots a bystander that shares every death of a round is dead-lettered
    // with it and retried; CI once saw one share all of both rounds' deaths.
    let mut fleet = Fleet::start(3, 1);
    let producer = fleet.producer();
    let expected = suite();
    let mut ids: Vec<String> = expected.keys().cloned().collect();
    ids.push("poison".into());
    let run = tokio::spawn(async move {
        let command = scripted_command(SCRIPT);
        // Two rounds, so the poison test is retried once as a fresh message.
        let mut args = vec!["--max-rounds", "2", "--retry-threshold", "0.5"];
        args.extend(["--image", BUSYBOX, "--timeout", "120", "--deadline", "400"]);
        args.extend(command.iter().map(String::as_str));
        producer.run(&ids, &args).await
    });
    let kills = kill_whoever_runs(&mut fleet, "poison", &run).await;
    let run = run.await.unwrap();

    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let mut outcomes = outcomes(&run);
    let poison = outcomes
        .remove("poison")
        .expect("the poison test is reported");
    assert_eq!(poison, ("DeadLettered".to_owned(), 2), "{}", run.describe());
    assert_eq!(
        outcomes, expected,
        "the rest of the run ends as an undisturbed one"
    );
    // The jobs queue allows 4 redeliveries: the 5th delivery's death dead-letters
    // it, in each of the two rounds.
    assert_eq!(kills, 10, "one worker killed per delivery");
    let report = run.report();
    let poison = crate::fixtures::tests(&report)
        .find(|t| t["id"] == "poison")
        .unwrap();
    for attempt in poison["attempts"].as_array().unwrap() {
        assert_eq!(attempt["status"]["DeadLettered"]["deliveries"], 5);
    }
    assert!(run.stdout().contains("poison"), "{}", run.stdout());
    // The killed workers' containers go with the replacements' sweeps.
    assert_no_leftovers(&run.run_id()).await;
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_worker_dies_the_run_ends_at_its_deadline_listing_its_missing_tests() {
    let mut fleet = Fleet::start(3, 2);
    let ids: Vec<String> = suite().keys().cloned().collect();
    let producer = fleet.producer();
    let started = std::time::Instant::now();
    let deadline_secs = 40;
    let run = tokio::spawn(async move {
        let command = scripted_command(SCRIPT);
        let deadline = deadline_secs.to_string();
        let mut args = vec![
            "--image",
            BUSYBOX,
            "--timeout",
            "30",
            "--deadline",
            &deadline,
        ];
        args.extend(command.iter().map(String::as_str));
        producer.run(&ids, &args).await
    });
    while fleet.finished_count() < 30 {
        assert!(!run.is_finished(), "the run ended before the fault");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workers = fleet.worker_ids();
    for worker in &workers {
        fleet.kill_worker(worker);
    }
    let run = run.await.unwrap();
    let took = started.elapsed();

    assert_eq!(run.exit_code(), 4, "{}", run.describe());
    assert!(
        took >= Duration::from_secs(deadline_secs)
            && took < Duration::from_secs(deadline_secs + 30),
        "ends at its deadline, not before, not much after: {took:?}"
    );
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 100, "every test accounted for");
    let missing = statuses.values().filter(|s| *s == "Missing").count();
    // Flaky tests that failed once and whose retry never ran stay failed.
    let finished = statuses
        .values()
        .filter(|s| ["Passed", "Flaky", "Failed"].contains(&s.as_str()))
        .count();
    assert!(missing >= 50, "most tests never ran: {statuses:?}");
    assert_eq!(missing + finished, 100, "{statuses:?}");
    assert!(
        run.stdout().contains(&format!("missing ({missing}):")),
        "{}",
        run.stdout()
    );
    // The console names the first 20; the Markdown summary names every one.
    let summary = std::fs::read_to_string(run.run_dir().join("summary.md")).unwrap();
    let missing_ids = statuses.iter().filter(|(_, s)| *s == "Missing");
    for (shown, (id, _)) in missing_ids.enumerate() {
        if shown < 20 {
            assert!(run.stdout().contains(&format!("  {id}\n")), "{id} listed");
        }
        assert!(summary.contains(id.as_str()), "{id} in summary.md");
    }
    // Workers restarted under their ids remove what their predecessors left.
    for worker in &workers {
        fleet.start_worker(worker, 2);
    }
    assert_no_leftovers(&run.run_id()).await;
    fleet.teardown().await;
}

/// A run's verdict goes out only once the commit holding its last facts has
/// ended: with every journal commit slowed by 3 s, the run finishes (its
/// report's `finished_at_ms`) at least 3 s after its last attempt ended.
/// Before, the verdict went out as the round closed, while that closing
/// still waited for its sync: a crash in between finished the run twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_waits_for_the_commit_that_holds_its_facts() {
    let slow = [("TESTFLEET_FAULT_SLOW", "journal-commit:3000")];
    let fleet = Fleet::start_with_broker(1, 1, crate::fixtures::BROKER, &slow);
    let run = fleet
        .run(&["t1".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let report = run.report();
    let attempt_end = report["tests"][0]["attempts"][0]["finished_at_ms"]
        .as_u64()
        .unwrap();
    let finished = report["finished_at_ms"].as_u64().unwrap();
    assert!(
        finished >= attempt_end + 3_000,
        "the run finished {} ms after its last attempt, before its closing was durable",
        finished.saturating_sub(attempt_end)
    );
    fleet.teardown().await;
}
