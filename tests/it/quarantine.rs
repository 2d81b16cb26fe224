//! Flaky tests across runs: the aggregator's history of a suite's flaky and
//! failing tests says "flaky in k of the last N runs" in the reports; a
//! quarantine file takes tests out of the verdict (marked in every report,
//! `<skipped>` in JUnit), an expired entry warns and holds no longer, and
//! automatic quarantine takes a test flaky in most recent runs out too.

use std::path::Path;

use serde_json::Value;

use crate::fixtures::{scripted_command, tests, Fleet, RunOutcome};

/// `flaky-*` fails its first attempt; `fail-*` always fails; `wobbly-*` is
/// flaky until the file `MARKER` exists, then always fails.
const SCRIPT: &str = r#"
case "$1" in
  pass-*) exit 0 ;;
  flaky-*) [ "$TESTFLEET_ATTEMPT" != 1 ] || { echo "first attempt fails" >&2; exit 1; } ;;
  fail-*) echo "always fails" >&2; exit 3 ;;
  wobbly-*) [ ! -e MARKER ] && [ "$TESTFLEET_ATTEMPT" != 1 ] || { echo "wobbles" >&2; exit 1; } ;;
esac
"#;

fn ids() -> Vec<String> {
    ["pass-1", "flaky-1", "fail-1", "wobbly-1"]
        .map(String::from)
        .to_vec()
}

fn test<'a>(report: &'a Value, id: &str) -> &'a Value {
    tests(report)
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} in the report"))
}

fn flakiness<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["flakiness"]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test_id"] == id)
        .unwrap_or_else(|| panic!("{id} in the flakiness: {}", report["flakiness"]))
}

async fn run(fleet: &Fleet, marker: &Path, env: &[(&str, &str)]) -> RunOutcome {
    let mut producer = fleet.producer();
    for (key, value) in env {
        producer = producer.with_env(key, value);
    }
    let script = SCRIPT.replace("MARKER", &format!("'{}'", marker.display()));
    let command = scripted_command(&script);
    let mut args = vec![
        "--executor",
        "process",
        "--suite",
        "quarantine-it",
        "--retry-threshold",
        "1",
        "--max-rounds",
        "2",
    ];
    args.extend(command.iter().map(String::as_str));
    producer.run(&ids(), &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_and_flaky_history_across_a_suites_runs() {
    let mut fleet = Fleet::start(0, 0);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("wobbly-fails");
    fleet.start_worker_with("q-w", 4, &["--executors", "process"]);
    let quarantine = dir.path().join("quarantine.toml");
    std::fs::write(
        &quarantine,
        r#"
[[quarantine]]
test = "fail-1"
reason = "broken upstream, #42"
expires = "2099-01-01"

[[quarantine]]
test = "pass-1"
reason = "was flaky once"
expires = "2000-01-01"
"#,
    )
    .unwrap();
    let listed = (
        "TESTFLEET_RUN__QUARANTINE_FILE",
        quarantine.to_str().unwrap(),
    );

    // Run 1: fail-1 is quarantined, so the run passes; pass-1's entry
    // expired, which the producer says.
    let first = run(&fleet, &marker, &[listed]).await;
    assert_eq!(first.exit_code(), 0, "{}", first.describe());
    let stderr = String::from_utf8_lossy(&first.output.stderr);
    assert!(stderr.contains("expired on 2000-01-01"), "{stderr}");
    let report = first.report();
    assert_eq!(test(&report, "fail-1")["status"], "Failed");
    assert_eq!(
        test(&report, "fail-1")["quarantined"],
        "broken upstream, #42"
    );
    assert!(test(&report, "pass-1")["quarantined"].is_null());
    assert_eq!(report["flakiness"]["runs"], 1);
    assert_eq!(flakiness(&report, "flaky-1")["flaky"], 1);
    let junit = first.junit();
    let case = junit
        .split("<testcase")
        .find(|c| c.contains("name=\"fail-1\""))
        .unwrap();
    assert!(
        case.contains("<skipped") && case.contains("broken upstream"),
        "{case}"
    );

    // Runs 2 to 4 without the quarantine: fail-1 fails them.
    for round in 2..=4 {
        let next = run(&fleet, &marker, &[]).await;
        assert_eq!(next.exit_code(), 1, "run {round}: {}", next.describe());
        let report = next.report();
        assert_eq!(report["flakiness"]["runs"], round);
        assert_eq!(flakiness(&report, "flaky-1")["flaky"], round);
        assert_eq!(flakiness(&report, "fail-1")["failed"], round);
        let summary = std::fs::read_to_string(next.run_dir().join("summary.md")).unwrap();
        let said = format!("flaky in {round} of the last {round} runs");
        assert!(summary.contains(&said), "{said} in {summary}");
    }

    // Run 5: wobbly-1 now fails outright; flaky in 4 of the last 5 runs, it
    // is quarantined automatically, fail-1 by the list: the run passes.
    std::fs::write(&marker, "").unwrap();
    let auto = ("TESTFLEET_RUN__AUTO_QUARANTINE", "0.3");
    let fifth = run(&fleet, &marker, &[listed, auto]).await;
    assert_eq!(fifth.exit_code(), 0, "{}", fifth.describe());
    let report = fifth.report();
    assert_eq!(test(&report, "wobbly-1")["status"], "Failed");
    let reason = test(&report, "wobbly-1")["quarantined"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("4 of the last 5"), "{reason}");
    assert!(Path::new(&fifth.run_dir()).join("report.html").exists());
    fleet.teardown().await;
}
