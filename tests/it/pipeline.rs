//! The whole path on real parts: a mixed suite's verdict, attempts, reports and
//! exit code, asserted exactly; and the retry threshold.

use crate::fixtures::{leftover_containers, scripted_command, tests, Fleet, BUSYBOX};

/// Plays a test by its id. Prints what only the container knows (its hostname,
/// which Docker sets to the container id) so results prove where they ran.
const SCRIPT: &str = r#"
id="$1"
echo "host=$(hostname) run=$TESTFLEET_RUN_ID attempt=$TESTFLEET_ATTEMPT test=$TEST_ID"
case "$id" in
  pass-*) exit 0 ;;
  flaky-*) if [ "$TESTFLEET_ATTEMPT" = 1 ]; then echo "first attempt fails" >&2; exit 1; fi ;;
  fail-*) echo "assertion failed in $id" >&2; exit 3 ;;
  timeout-*) sleep 60 ;;
  chatty-*) yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 5000000; exit 1 ;;
  *) echo "unknown test $id" >&2; exit 2 ;;
esac
"#;

fn ids(spec: &[(&str, usize)]) -> Vec<String> {
    spec.iter()
        .flat_map(|(kind, n)| (1..=*n).map(move |i| format!("{kind}-{i:02}")))
        .collect()
}

fn args<'a>(extra: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    let mut args: Vec<&str> = vec!["--image", BUSYBOX, "--suite", "mixed"];
    args.extend_from_slice(extra);
    args.extend(command.iter().map(String::as_str));
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_suite_ends_with_exact_outcomes_attempts_and_reports() {
    let fleet = Fleet::start(3, 2);
    let ids = ids(&[
        ("pass", 25),
        ("flaky", 2),
        ("fail", 1),
        ("timeout", 1),
        ("chatty", 1),
    ]);
    let command = scripted_command(SCRIPT);
    let run = fleet
        .run(
            &ids,
            &args(&["--timeout", "2", "--retry-threshold", "0.2"], &command),
        )
        .await;

    assert_eq!(
        run.exit_code(),
        1,
        "tests failed → exit 1\n{}",
        run.describe()
    );
    let statuses = run.statuses();
    let attempts = run.attempts();
    assert_eq!(statuses.len(), 30, "every test reported once");
    for id in &ids {
        let (status, tries) = match id.split('-').next().unwrap() {
            "pass" => ("Passed", 1),
            "flaky" => ("Flaky", 2),
            "fail" => ("Failed", 3),
            "timeout" => ("TimedOut", 3),
            "chatty" => ("Failed", 3),
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(
            (statuses[id].as_str(), attempts[id]),
            (status, tries),
            "{id}"
        );
    }

    let report = run.report();
    assert_eq!(report["verdict"], "TestsFailed");
    assert_eq!(report["rounds"], 3);
    let run_id = run.run_id();
    let workers = fleet.worker_ids();
    for test in tests(&report) {
        for attempt in test["attempts"].as_array().unwrap() {
            let worker = attempt["worker_id"].as_str().expect("a worker ran it");
            assert!(
                workers.iter().any(|w| w == worker),
                "{worker} is one of the fleet"
            );
            assert!(attempt["started_at_ms"].as_u64() <= attempt["finished_at_ms"].as_u64());
        }
    }
    let fail = tests(&report).find(|t| t["id"] == "fail-01").unwrap();
    for (n, attempt) in fail["attempts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(attempt["exit_code"], 3);
        let output = attempt["output"].as_str().unwrap();
        let expected = format!("run={run_id} attempt={} test=fail-01", n + 1);
        assert!(output.contains(&expected), "{output}");
        assert!(output.contains("assertion failed in fail-01"), "{output}");
        let host = output
            .split("host=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(
            host.len() == 12 && host.chars().all(|c| c.is_ascii_hexdigit()),
            "container hostname {host}"
        );
    }
    let timeout = tests(&report).find(|t| t["id"] == "timeout-01").unwrap();
    assert!(timeout["attempts"][0]["exit_code"].is_null());
    let chatty = tests(&report).find(|t| t["id"] == "chatty-01").unwrap();
    let chatty_first = &chatty["attempts"][0];
    assert_eq!(chatty_first["output_truncated"], true);
    let kept = chatty_first["output"].as_str().unwrap().len();
    assert!(
        (1 << 20) <= kept + 100 && kept < (1 << 20) + 200,
        "kept {kept} bytes of 5 MB"
    );

    let junit = run.junit();
    assert!(
        junit.contains(r#"tests="30""#)
            && junit.contains(r#"failures="3""#)
            && junit.contains(r#"errors="0""#),
        "{}",
        &junit[..400]
    );
    assert_eq!(
        junit.matches("<flakyFailure").count(),
        2,
        "one flaky failure per flaky test"
    );
    let summary = std::fs::read_to_string(run.run_dir().join("summary.md")).unwrap();
    for name in ["fail-01", "timeout-01", "chatty-01", "flaky-01", "flaky-02"] {
        assert!(summary.contains(name), "{name} in the Markdown summary");
    }
    let stdout = run.stdout();
    assert!(
        stdout.contains("timeout-01") && stdout.contains("flaky-02") && stdout.contains("fail-01"),
        "{stdout}"
    );
    assert!(
        leftover_containers(&run_id).is_empty(),
        "every container removed"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suite_with_half_its_tests_failing_is_not_retried() {
    let fleet = Fleet::start(3, 2);
    let ids = ids(&[("pass", 5), ("fail", 5)]);
    let command = scripted_command(SCRIPT);
    let run = fleet.run(&ids, &args(&[], &command)).await;

    assert_eq!(
        run.exit_code(),
        3,
        "too many failures → exit 3\n{}",
        run.describe()
    );
    assert!(
        run.attempts().values().all(|&n| n == 1),
        "nothing retried: {:?}",
        run.attempts()
    );
    let statuses = run.statuses();
    assert_eq!(statuses.values().filter(|s| *s == "Failed").count(), 5);
    assert_eq!(statuses.values().filter(|s| *s == "Passed").count(), 5);
    assert_eq!(run.report()["verdict"], "TooManyFailures");
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_is_an_infrastructure_error_not_a_test_failure() {
    let fleet = Fleet::start(1, 2);
    let ids = ids(&[("pass", 2)]);
    let command = scripted_command(SCRIPT);
    let mut args = vec!["--image", "testfleet/no-such-image:0"];
    args.extend(command.iter().map(String::as_str));
    let run = fleet.run(&ids, &args).await;

    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    assert!(
        run.statuses().values().all(|s| s == "Error"),
        "{:?}",
        run.statuses()
    );
    assert!(
        run.attempts().values().all(|&n| n == 3),
        "errors are retried: {:?}",
        run.attempts()
    );
    let report = run.report();
    let message = report["tests"][0]["attempts"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("testfleet/no-such-image:0") && message.contains("could not be pulled"),
        "{message}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_without_workers_ends_at_its_deadline_with_its_tests_missing() {
    let fleet = Fleet::start(0, 1);
    let ids = ids(&[("pass", 3)]);
    let command = scripted_command(SCRIPT);
    let run = fleet.run(&ids, &args(&["--deadline", "3"], &command)).await;

    assert_eq!(
        run.exit_code(),
        4,
        "missing at the deadline → exit 4\n{}",
        run.describe()
    );
    assert!(
        run.statuses().values().all(|s| s == "Missing"),
        "{:?}",
        run.statuses()
    );
    assert!(
        run.stdout().contains("pass-03"),
        "missing tests listed: {}",
        run.stdout()
    );
    fleet.teardown().await;
}
