//! Why an attempt did not pass, as the runtime saw it: a container killed
//! for memory under its own limit is `oom` (the engine's OOMKilled, whatever
//! the test printed), a test quiet past `--quiet-timeout` is killed as
//! `no-output-timeout` while one that keeps talking runs on, a death by a
//! signal is `signal:N`, the rest `exit:N`; in both executors, as
//! `report.json` names them. Then log-signature rules (`run.signatures`):
//! a failure a fleet-fault rule matches is the fleet's error, retried and
//! never the test's failure; another rule names a failure that stays one;
//! and what the runtime saw beats any text.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fixtures::{scripted_command, tests, Fleet, BUSYBOX};

/// Plays a test by its id prefix.
/// The memory hogs wait a second before they start: the engine may not
/// mark a container killed for memory in its first instants, its OOM
/// watcher not yet set up (containerd/containerd#8180); these tests check
/// the fleet's rules, not that race.
const SCRIPT: &str = r#"
case "$1" in
  oom-*) echo "all is well"; sleep 1; dd if=/dev/zero of=/dev/null bs=300M count=1 ;;
  quiet-*) echo "started"; sleep 120 ;;
  chatty-*) for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "tick $i"; sleep 0.5; done ;;
  signal-*) sh -c 'kill -SEGV $$' ;;
  fail-*) exit 3 ;;
  nospace-*) echo "cp: write error: No space left on device" >&2; exit 1 ;;
  resolver-*) echo "E: Unable to correct problems, you have held broken packages."; exit 100 ;;
  oomtext-*) echo "No space left on device"; sleep 1; dd if=/dev/zero of=/dev/null bs=300M count=1 ;;
  pass-*) exit 0 ;;
esac
"#;

/// A limit far under what `oom-*` asks for, and a quiet timeout far under
/// the run's own timeout (which `chatty-*` outlives twice over).
const MEMORY_LIMIT: &str = "67108864";
const QUIET_SECS: &str = "3";

/// Each test's first attempt: its status and reason.
fn reasons(report: &Value) -> BTreeMap<String, (String, Value)> {
    tests(report)
        .map(|test| {
            let attempt = &test["attempts"][0];
            (
                test["id"].as_str().unwrap().to_owned(),
                (
                    test["status"].as_str().unwrap().to_owned(),
                    attempt["reason"].clone(),
                ),
            )
        })
        .collect()
}

fn args<'a>(executor: &'a str, command: &'a [String]) -> Vec<&'a str> {
    let mut args = vec![
        "--executor",
        executor,
        "--image",
        BUSYBOX,
        "--timeout",
        "100",
        "--quiet-timeout",
        QUIET_SECS,
        "--max-rounds",
        "1",
    ];
    args.extend(command.iter().map(String::as_str));
    args
}

/// Status and reason by id; a passing attempt names no reason.
fn expected(pairs: &[(&str, &str, Option<&str>)]) -> BTreeMap<String, (String, Value)> {
    pairs
        .iter()
        .map(|&(id, status, reason)| (id.into(), (status.into(), reason.into())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_attempt_that_did_not_pass_names_what_the_runtime_saw() {
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-both", fleet.prefix);
    fleet.start_worker_with(&worker, 8, &["--executors", "docker,process"]);
    let command = scripted_command(SCRIPT);
    let in_containers: Vec<String> = ["oom-1", "quiet-1", "chatty-1", "signal-1", "fail-1"]
        .map(String::from)
        .into();
    let as_processes: Vec<String> = ["quiet-2", "chatty-2", "signal-2", "fail-2"]
        .map(String::from)
        .into();
    let limited = fleet
        .producer()
        .with_env("TESTFLEET_RUN__MEMORY_BYTES", MEMORY_LIMIT);
    let unlimited = fleet.producer();
    let (docker_args, process_args) = (args("docker", &command), args("process", &command));
    let docker = limited.run(&in_containers, &docker_args);
    let process = unlimited.run(&as_processes, &process_args);
    let (docker, process) = tokio::join!(docker, process);

    assert_eq!(
        reasons(&docker.report()),
        expected(&[
            ("oom-1", "Failed", Some("oom")),
            ("quiet-1", "TimedOut", Some("no-output-timeout")),
            ("chatty-1", "Passed", None),
            ("signal-1", "Failed", Some("signal:11")),
            ("fail-1", "Failed", Some("exit:3")),
        ]),
        "{}",
        docker.describe()
    );
    assert_eq!(
        reasons(&process.report()),
        expected(&[
            ("quiet-2", "TimedOut", Some("no-output-timeout")),
            ("chatty-2", "Passed", None),
            ("signal-2", "Failed", Some("signal:11")),
            ("fail-2", "Failed", Some("exit:3")),
        ]),
        "{}",
        process.describe()
    );
    let oom = tests(&docker.report())
        .find(|t| t["id"] == "oom-1")
        .map(|t| t["attempts"][0]["fleet_fault"].clone());
    assert_eq!(
        oom,
        Some(Value::Bool(false)),
        "its own limit: the test's doing"
    );
    fleet.teardown().await;
}

const SIGNATURES: &str = r#"
[run]
signatures = [
  { name = "no-space", pattern = "(?i)no space left on device", fleet_fault = true },
  { name = "unsatisfiable", pattern = "held broken packages" },
]
"#;

/// Each attempt's reason and whether it was the fleet's fault, by test.
fn attempt_reasons(report: &Value) -> BTreeMap<String, Vec<(Value, Value)>> {
    tests(report)
        .map(|test| {
            let attempts = test["attempts"].as_array().unwrap();
            let reasons = attempts
                .iter()
                .map(|a| (a["reason"].clone(), a["fleet_fault"].clone()))
                .collect();
            (test["id"].as_str().unwrap().to_owned(), reasons)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_rules_name_failures_and_the_fleets_own_are_retried_as_errors() {
    let fleet = Fleet::start(1, 4);
    let config = fleet.dir.join("signatures.toml");
    std::fs::write(&config, SIGNATURES).unwrap();
    let command = scripted_command(SCRIPT);
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--image",
        BUSYBOX,
        "--retry-threshold",
        "1",
        "--max-rounds",
        "2",
    ];
    args.extend(command.iter().map(String::as_str));
    let ids: Vec<String> = ["nospace-1", "resolver-1", "oomtext-1", "pass-1"]
        .map(String::from)
        .into();
    let run = fleet
        .producer()
        .with_env("TESTFLEET_RUN__MEMORY_BYTES", MEMORY_LIMIT)
        .run(&ids, &args)
        .await;
    let report = run.report();

    let fleet_fault = |reason: &str| (Value::from(reason), Value::Bool(true));
    let the_tests = |reason: &str| (Value::from(reason), Value::Bool(false));
    let expected = BTreeMap::from([
        ("nospace-1".to_owned(), vec![fleet_fault("no-space"); 2]),
        ("resolver-1".to_owned(), vec![the_tests("unsatisfiable"); 2]),
        ("oomtext-1".to_owned(), vec![the_tests("oom"); 2]),
        ("pass-1".to_owned(), vec![(Value::Null, Value::Bool(false))]),
    ]);
    assert_eq!(attempt_reasons(&report), expected, "{}", run.describe());
    assert_eq!(
        run.statuses()["nospace-1"],
        "Error",
        "the fleet's, not the test's"
    );
    assert_eq!(run.statuses()["resolver-1"], "Failed");
    assert_eq!(
        run.statuses()["oomtext-1"],
        "Failed",
        "what the runtime saw first"
    );
    let groups: Vec<(Value, Value)> = report["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["reason"].clone(), g["tests"].clone()))
        .collect();
    assert_eq!(
        groups,
        [
            (Value::from("no-space"), serde_json::json!(["nospace-1"])),
            (Value::from("oom"), serde_json::json!(["oomtext-1"])),
            (
                Value::from("unsatisfiable"),
                serde_json::json!(["resolver-1"])
            ),
        ]
    );
    fleet.teardown().await;
}
