//! Following a run: the `--events` NDJSON stream of a mixed suite checked line by
//! line against its report.json, `--events -` keeping stdout for the stream, and
//! the plain progress lines `--wait` prints when stderr is not a terminal.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fixtures::{scripted_command, tests, Fleet, RunOutcome, BUSYBOX};

/// Every test takes a second, so the run lasts several progress intervals.
const SCRIPT: &str = r#"
id="$1"
sleep 1
case "$id" in
  pass-*) exit 0 ;;
  flaky-*) [ "$TESTFLEET_ATTEMPT" != 1 ] || exit 1 ;;
  fail-*) exit 3 ;;
  *) exit 2 ;;
esac
"#;

const KINDS: [&str; 6] = [
    "run_submitted",
    "test_started",
    "test_finished",
    "test_retried",
    "round_closed",
    "verdict",
];

fn mixed_ids() -> Vec<String> {
    let pass = (1..=9).map(|i| format!("pass-{i:02}"));
    let flaky = (1..=2).map(|i| format!("flaky-{i:02}"));
    pass.chain(flaky).chain(["fail-01".to_owned()]).collect()
}

fn args<'a>(extra: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["--image", BUSYBOX, "--retry-threshold", "0.3"];
    args.extend_from_slice(extra);
    args.extend(command.iter().map(String::as_str));
    args
}

/// Parses every line, checking the fields every event carries.
fn parse_stream(text: &str, run_id: &str) -> Vec<Value> {
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for event in &events {
        assert_eq!(event["schema"], 1, "{event}");
        assert_eq!(event["run_id"], run_id, "{event}");
        assert!(
            event["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{event}"
        );
        let kind = event["event"].as_str().unwrap_or_default();
        assert!(KINDS.contains(&kind), "unknown kind in {event}");
    }
    events
}

fn of_kind<'a>(events: &'a [Value], kind: &'a str) -> impl Iterator<Item = (usize, &'a Value)> {
    events
        .iter()
        .enumerate()
        .filter(move |(_, e)| e["event"] == kind)
}

/// Positions of the events of `kind` for one (test, attempt).
fn positions(events: &[Value], kind: &str, test: &str, attempt: u64) -> Vec<usize> {
    of_kind(events, kind)
        .filter(|(_, e)| e["test"] == test && e["attempt"] == attempt)
        .map(|(i, _)| i)
        .collect()
}

/// report.json's attempt status (`"Passed"`, `{"Ran": "Failed"}`, …) as the stream names it.
fn outcome_name(status: &Value) -> String {
    match status {
        Value::String(s) if s == "Missing" => "missing".into(),
        Value::Object(map) if map.contains_key("DeadLettered") => "dead_lettered".into(),
        Value::Object(map) => match map["Ran"].as_str().unwrap() {
            "TimedOut" => "timed_out".into(),
            other => other.to_lowercase(),
        },
        other => panic!("unexpected attempt status {other}"),
    }
}

/// Each attempt in the report has one start and one finish, in that order, with
/// its outcome and worker; a retry is announced before its attempt starts.
fn check_attempts(events: &[Value], report: &Value) {
    let mut attempts_in_report = 0;
    for test in tests(report) {
        let id = test["id"].as_str().unwrap();
        for attempt in test["attempts"].as_array().unwrap() {
            attempts_in_report += 1;
            let n = attempt["attempt"].as_u64().unwrap();
            let started = positions(events, "test_started", id, n);
            let finished = positions(events, "test_finished", id, n);
            assert_eq!((started.len(), finished.len()), (1, 1), "{id} attempt {n}");
            assert!(
                started[0] < finished[0],
                "{id} {n}: started before finished"
            );
            let done = &events[finished[0]];
            assert_eq!(
                done["outcome"],
                outcome_name(&attempt["status"]),
                "{id} {n}"
            );
            assert_eq!(done["worker"], attempt["worker_id"], "{id} {n}");
            assert_eq!(events[started[0]]["worker"], attempt["worker_id"]);
            if n > 1 {
                let retried = positions(events, "test_retried", id, n);
                assert_eq!(retried.len(), 1, "{id} retried as attempt {n}");
                assert!(retried[0] < started[0], "{id} {n}: retried before started");
            }
        }
    }
    assert_eq!(of_kind(events, "test_started").count(), attempts_in_report);
    assert_eq!(of_kind(events, "test_finished").count(), attempts_in_report);
}

/// One `round_closed` per round, in order, whose counts are the report's
/// attempts of that round and whose `retrying` is the next round's size.
fn check_rounds(events: &[Value], report: &Value) {
    let rounds = report["rounds"].as_u64().unwrap();
    let closed: Vec<&Value> = of_kind(events, "round_closed").map(|(_, e)| e).collect();
    let numbers: Vec<u64> = closed
        .iter()
        .map(|e| e["round"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=rounds).collect::<Vec<_>>());
    let mut per_round: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for test in tests(report) {
        for attempt in test["attempts"].as_array().unwrap() {
            let round = per_round
                .entry(attempt["attempt"].as_u64().unwrap())
                .or_default();
            *round.entry(outcome_name(&attempt["status"])).or_default() += 1;
        }
    }
    for event in closed {
        let round = event["round"].as_u64().unwrap();
        for outcome in [
            "passed",
            "failed",
            "timed_out",
            "error",
            "missing",
            "dead_lettered",
        ] {
            let expected = per_round[&round].get(outcome).copied().unwrap_or(0);
            assert_eq!(event[outcome], expected, "round {round} {outcome}");
        }
        let next_size: u64 = per_round.get(&(round + 1)).map_or(0, |r| r.values().sum());
        assert_eq!(event["retrying"], next_size, "round {round} retrying");
    }
}

fn check_verdict(events: &[Value], report: &Value, run: &RunOutcome) {
    let verdicts: Vec<usize> = of_kind(events, "verdict").map(|(i, _)| i).collect();
    assert_eq!(
        verdicts,
        vec![events.len() - 1],
        "exactly one verdict, last"
    );
    let verdict = events.last().unwrap();
    assert_eq!(verdict["verdict"], "tests_failed");
    assert_eq!(verdict["exit_code"], run.exit_code());
    assert_eq!(verdict["rounds"], report["rounds"]);
    let statuses = run.statuses();
    for (field, status) in [
        ("passed", "Passed"),
        ("flaky", "Flaky"),
        ("failed", "Failed"),
    ] {
        let expected = statuses.values().filter(|s| *s == status).count();
        assert_eq!(verdict[field], expected, "{field}");
    }
    let json = verdict["reports"]["json"].as_str().expect("report paths");
    assert!(std::path::Path::new(json).is_file(), "{json} exists");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_of_a_mixed_suite_matches_its_report() {
    let fleet = Fleet::start(2, 2);
    let events_file = fleet.dir.join("events.ndjson");
    let command = scripted_command(SCRIPT);
    let extra = [
        "--events",
        events_file.to_str().unwrap(),
        "--progress-every",
        "1",
    ];
    let producer = fleet.producer();
    let run_args: Vec<String> = args(&extra, &command)
        .iter()
        .map(|a| a.to_string())
        .collect();
    let run = tokio::spawn(async move {
        let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
        producer.run(&mixed_ids(), &run_args).await
    });
    // A machine can follow the stream while the run goes on: finished tests
    // show up in the file long before the verdict does.
    let mut seen_live = false;
    while !run.is_finished() {
        let text = std::fs::read_to_string(&events_file).unwrap_or_default();
        seen_live |= text.contains("\"test_finished\"") && !text.contains("\"verdict\"");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen_live, "events are written as they happen");
    let run = run.await.unwrap();
    assert_eq!(run.exit_code(), 1, "tests failed\n{}", run.describe());

    let text = std::fs::read_to_string(&events_file).expect("the events file");
    let events = parse_stream(&text, &run.run_id());
    assert_eq!(events[0]["event"], "run_submitted", "{text}");
    assert_eq!(events[0]["tests"], 12);
    let report = run.report();
    check_attempts(&events, &report);
    check_rounds(&events, &report);
    check_verdict(&events, &report, &run);
    for (test, retries) in [
        ("fail-01", 2),
        ("flaky-01", 1),
        ("flaky-02", 1),
        ("pass-01", 0),
    ] {
        let retried = of_kind(&events, "test_retried").filter(|(_, e)| e["test"] == test);
        assert_eq!(retried.count(), retries, "{test}");
    }

    // Not a terminal: plain lines, one a second, while the run went on.
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("progress: "))
        .collect();
    assert!(lines.len() >= 3, "progress lines on stderr:\n{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("/12 settled") && l.contains(" running · round ")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ETA ") && !l.contains("ETA unknown")),
        "an estimate once results came in: {lines:#?}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_on_stdout_leave_it_to_the_stream() {
    let fleet = Fleet::start(1, 2);
    let command = scripted_command(SCRIPT);
    let ids = ["pass-01".to_owned(), "pass-02".to_owned()];
    let run = fleet.run(&ids, &args(&["--events", "-"], &command)).await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());

    let stdout = run.stdout();
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let run_id = first["run_id"].as_str().expect("a run id").to_owned();
    let events = parse_stream(&stdout, &run_id);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_submitted"));
    assert_eq!(kinds.last(), Some(&"verdict"));
    assert_eq!(events.last().unwrap()["verdict"], "passed");
    assert_eq!(kinds.iter().filter(|k| **k == "test_finished").count(), 2);
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        stderr.contains("testfleet: PASSED") && stderr.contains(&run_id),
        "the summary and run id go to stderr:\n{stderr}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_progress_is_a_bar_with_counts_round_and_eta_then_the_summary() {
    let fleet = Fleet::start(1, 2);
    let command = scripted_command(SCRIPT);
    let run = fleet
        .producer()
        .run_in_terminal(&mixed_ids(), &args(&[], &command))
        .await;
    assert_eq!(run.exit_code(), 1, "tests failed\n{}", run.describe());

    let screen = run.stdout();
    // The bar redraws in place (erase-line codes), never as plain lines.
    assert!(screen.contains("\u{1b}[2K"), "redrawn in place: {screen:?}");
    assert!(!screen.contains("progress: "), "{screen}");
    assert!(
        regex::Regex::new(r"=+>.* \d+/12 settled")
            .unwrap()
            .is_match(&screen),
        "a bar of settled tests: {screen:?}"
    );
    let counts = regex::Regex::new(
        r"(\d+) passed · (\d+) failed · (\d+) flaky · (\d+) running · round (\d+) · ETA (\w+)",
    )
    .unwrap();
    let drawn: Vec<regex::Captures> = counts.captures_iter(&screen).collect();
    assert!(
        drawn.len() >= 3,
        "the counts redrawn as results came: {screen:?}"
    );
    assert!(
        drawn.iter().any(|c| &c[4] != "0" && &c[6] != "unknown"),
        "tests running and an estimate: {screen:?}"
    );
    assert!(drawn.iter().any(|c| &c[5] == "2"), "the retry round shown");
    let last = drawn.last().unwrap();
    assert_eq!(
        (&last[1], &last[2], &last[3]),
        ("9", "1", "2"),
        "final counts"
    );
    // Then the summary and the report paths, after the bar was cleared.
    let summary = screen.rfind("testfleet: FAILED").expect("the summary");
    let last_bar = screen.rfind(" running · round ").unwrap();
    assert!(summary > last_bar, "summary after the bar: {screen:?}");
    assert!(screen[summary..].contains("reports: "), "{screen}");
    assert!(screen[summary..].contains("html report: "), "{screen}");
    fleet.teardown().await;
}
