//! A/B runs (`--baseline-image`): every id runs in the baseline image and in
//! the candidate's, side by side; an id whose sides differ runs `--confirm`
//! more times on both; `report.json`'s `comparison` names each id's class,
//! the verdict fails on a confirmed regression alone, and the JUnit file
//! describes the candidate. Two busybox images built here differ by one
//! file, `/side`, which the test command reads; flakiness is played by
//! attempt number, so every class is known in advance.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::fixtures::{scripted_command, Fleet, BROKER, BUSYBOX};

/// Plays an id on the side its image says. An id the script does not know
/// fails on both sides: a command given `base::X` rather than `X` would make
/// every id `failing`.
const SCRIPT: &str = r#"
side=$(cat /side)
case "$1:$side" in
  same-pass:*) exit 0 ;;
  reg:base|fix:cand) exit 0 ;;
  reg:cand) echo "candidate broke reg"; exit 1 ;;
  fix:base) echo "baseline broke fix"; exit 1 ;;
  flaky-base:base) [ "$TESTFLEET_ATTEMPT" = 2 ] && exit 1; exit 0 ;;
  flaky-base:cand) exit 1 ;;
  infra:base) exit 0 ;;
  infra:cand) echo "write error: No space left on device"; exit 1 ;;
  *) echo "unknown: $1 on $side"; exit 1 ;;
esac
"#;

/// The same, as a batch writing testfleet's jsonl report: each id's outcome
/// is the script's for that id.
const BATCH_SCRIPT: &str = r#"
for id in "$@"; do
  if sh /play "$id" >/dev/null 2>&1; then outcome=passed; else outcome=failed; fi
  printf '{"id": "%s", "outcome": "%s"}\n' "$id" "$outcome" >> "$0"
done
"#;

const SIGNATURES: &str = r#"
[run]
signatures = [{ name = "no-space", pattern = "No space left on device", fleet_fault = true }]
"#;

/// Builds an image of busybox with `/side` saying `side` and the script at
/// `/play`; its tag.
fn side_image(side: &str) -> String {
    let dir = std::env::temp_dir().join(format!("testfleet-ab-{side}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("side"), format!("{side}\n")).unwrap();
    std::fs::write(dir.join("play"), SCRIPT).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {BUSYBOX}\nCOPY side /side\nCOPY play /play\n"),
    )
    .unwrap();
    let tag = format!("testfleet-test/ab-{side}:latest");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(&dir)
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    tag
}

/// Each compared id: its class, whether confirmed, and each side's number
/// of attempts.
fn classes(report: &Value) -> BTreeMap<String, (String, bool, usize, usize)> {
    report["comparison"]["tests"]
        .as_array()
        .expect("a comparison")
        .iter()
        .map(|t| {
            let attempts = |side: &str| t[side].as_array().unwrap().len();
            (
                t["id"].as_str().unwrap().to_owned(),
                (
                    t["class"].as_str().unwrap().to_owned(),
                    t["confirmed"].as_bool().unwrap(),
                    attempts("baseline"),
                    attempts("candidate"),
                ),
            )
        })
        .collect()
}

fn expected(
    rows: &[(&str, &str, bool, usize, usize)],
) -> BTreeMap<String, (String, bool, usize, usize)> {
    rows.iter()
        .map(|&(id, class, confirmed, b, c)| (id.into(), (class.into(), confirmed, b, c)))
        .collect()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The dashboard's finished runs, by run id: how many regressions each A/B
/// run had; waits (bounded) until `runs` are all there, since the dashboard
/// learns of a run's end after its verdict went out.
fn dashboard_regressions(address: &str, runs: &[String]) -> BTreeMap<String, Value> {
    use std::io::{Read, Write};
    for _ in 0..100 {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let request = format!(
            "GET /api/state HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        let state: Value = serde_json::from_str(body).unwrap();
        let recent: BTreeMap<String, Value> = state["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["run_id"].as_str().unwrap().to_owned(),
                    r["regressed"].clone(),
                )
            })
            .collect();
        if runs.iter().all(|r| recent.contains_key(r)) {
            return recent;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the dashboard never listed runs {runs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn differences_are_confirmed_on_both_sides_and_only_a_regression_fails() {
    let (base, cand) = (side_image("base"), side_image("cand"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let env = [
        ("TESTFLEET_AGGREGATOR__DASHBOARD", address.as_str()),
        ("TESTFLEET_AGGREGATOR__DASHBOARD_TOKEN", "s3cret"),
    ];
    let mut fleet = Fleet::start_with_broker(0, 0, BROKER, &env);
    let worker = format!("{}-ab", fleet.prefix);
    fleet.start_worker(&worker, 6);
    let config = std::env::temp_dir().join(format!("testfleet-ab-{}.toml", std::process::id()));
    std::fs::write(&config, SIGNATURES).unwrap();
    let command = scripted_command(SCRIPT);
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--image",
        &cand,
        "--baseline-image",
        &base,
        "--confirm",
        "2",
        "--max-rounds",
        "2",
        "--retry-threshold",
        "0.5",
    ];
    args.extend(command.iter().map(String::as_str));
    let every = ids(&[
        "same-pass",
        "same-fail",
        "reg",
        "fix",
        "flaky-base",
        "infra",
    ]);
    let no_regression = ids(&["same-pass", "same-fail", "fix"]);
    let producer = fleet.producer();
    let (with_regression, without) = tokio::join!(
        producer.run(&every, &args),
        producer.run(&no_regression, &args)
    );

    let report = with_regression.report();
    assert_eq!(
        with_regression.exit_code(),
        1,
        "{}",
        with_regression.describe()
    );
    // --max-rounds 2 with --confirm 2: four rounds, so reg and fix run 3
    // times a side; flaky-base stops after its second round; infra's
    // candidate is the fleet's error each time (the rule), so it is retried
    // to the last round and compared as infra.
    assert_eq!(
        classes(&report),
        expected(&[
            ("same-pass", "passing", false, 1, 1),
            ("same-fail", "failing", false, 1, 1),
            ("reg", "regressed", true, 3, 3),
            ("fix", "fixed", true, 3, 3),
            ("flaky-base", "flaky", false, 2, 2),
            ("infra", "infra", false, 1, 4),
        ]),
        "{}",
        with_regression.describe()
    );
    let regressed = &report["comparison"]["tests"][2];
    assert_eq!(regressed["candidate"][0]["reason"], "exit:1");
    assert_eq!(report["comparison"]["counts"]["regressed"], 1);
    // Confirmations of a side that passes each time are passes, not flakes.
    let statuses = with_regression.statuses();
    assert_eq!(statuses["base::reg"], "Passed", "{statuses:?}");
    assert_eq!(statuses["cand::fix"], "Passed", "{statuses:?}");
    let junit = with_regression.junit();
    assert!(junit.contains("name=\"reg\""), "{junit}");
    assert!(
        !junit.contains("base::") && !junit.contains("cand::"),
        "{junit}"
    );
    let summary = std::fs::read_to_string(with_regression.run_dir().join("summary.md")).unwrap();
    assert!(
        summary.starts_with("## ❌ Tests failed — 1 confirmed regression of 6 ids"),
        "{summary}"
    );
    assert!(summary.contains("candidate broke reg"), "{summary}");

    assert_eq!(
        without.exit_code(),
        0,
        "failing on both sides is no regression: {}",
        without.describe()
    );
    assert_eq!(
        classes(&without.report()),
        expected(&[
            ("same-pass", "passing", false, 1, 1),
            ("same-fail", "failing", false, 1, 1),
            ("fix", "fixed", true, 3, 3),
        ])
    );
    let runs = [with_regression.run_id(), without.run_id()];
    let dashboard = dashboard_regressions(&address, &runs);
    assert_eq!(dashboard[&runs[0]], 1, "{dashboard:?}");
    assert_eq!(dashboard[&runs[1]], 0, "{dashboard:?}");

    // --rerun of an A/B run compares again only what differed or could not
    // be compared.
    let rerun = producer
        .run_producer(&["--rerun", &runs[0], "--wait"], &args)
        .await;
    assert_eq!(rerun.exit_code(), 1, "{}", rerun.describe());
    let rerun_ids: Vec<String> = rerun.report()["comparison"]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rerun_ids, ["reg", "fix", "flaky-base", "infra"]);
    std::fs::remove_file(&config).unwrap();
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batched_ab_run_compares_as_one_id_per_container_does() {
    let (base, cand) = (side_image("base"), side_image("cand"));
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-ab-batch", fleet.prefix);
    fleet.start_worker(&worker, 4);
    let args = vec![
        "--image",
        &cand,
        "--baseline-image",
        &base,
        "--confirm",
        "1",
        "--batch",
        "3",
        "--report-format",
        "jsonl:name",
        "--",
        "sh",
        "-c",
        BATCH_SCRIPT,
        "{report}",
        "{ids}",
    ];
    let every = ids(&["same-pass", "same-fail", "reg", "fix", "flaky-base"]);
    let run = fleet.producer().run(&every, &args).await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    assert_eq!(
        classes(&run.report()),
        expected(&[
            ("same-pass", "passing", false, 1, 1),
            ("same-fail", "failing", false, 1, 1),
            ("reg", "regressed", true, 2, 2),
            ("fix", "fixed", true, 2, 2),
            ("flaky-base", "flaky", false, 2, 2),
        ]),
        "{}",
        run.describe()
    );
    let batched = run.report()["batches"].as_array().unwrap().len();
    assert!(
        batched >= 4,
        "each side's first round in batches: {batched}"
    );
    fleet.teardown().await;
}

/// `--compare RUN`: an earlier run of the baseline image is the baseline;
/// nothing runs on its side, and differences are confirmed on the
/// candidate's alone; an id the earlier run did not have compares as infra
/// and fails nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_compared_with_an_earlier_one_confirms_on_its_own_side() {
    let (base, cand) = (side_image("base"), side_image("cand"));
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-ab-compare", fleet.prefix);
    fleet.start_worker(&worker, 4);
    let command = scripted_command(SCRIPT);
    let producer = fleet.producer();
    let mut earlier_args = vec!["--image", base.as_str(), "--max-rounds", "1"];
    earlier_args.extend(command.iter().map(String::as_str));
    let earlier = producer
        .run(
            &ids(&["same-pass", "same-fail", "reg", "fix"]),
            &earlier_args,
        )
        .await;
    let earlier_tests = earlier.report()["tests"].as_array().unwrap().len();
    assert_eq!(earlier_tests, 4, "{}", earlier.describe());

    let earlier_id = earlier.run_id();
    let mut args = vec![
        "--image",
        cand.as_str(),
        "--compare",
        earlier_id.as_str(),
        "--confirm",
        "2",
    ];
    args.extend(command.iter().map(String::as_str));
    let every = ids(&["same-pass", "same-fail", "reg", "fix", "new"]);
    let run = producer.run(&every, &args).await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    let report = run.report();
    assert_eq!(
        classes(&report),
        expected(&[
            ("same-pass", "passing", false, 1, 1),
            ("same-fail", "failing", false, 1, 1),
            ("reg", "regressed", true, 1, 3),
            ("fix", "fixed", true, 1, 3),
            ("new", "infra", false, 0, 1),
        ]),
        "{}",
        run.describe()
    );
    assert_eq!(
        report["comparison"]["baseline_image"],
        format!("run {earlier_id}")
    );
    // The baseline's attempts are the earlier run's: no worker ran them,
    // and no job of its side came back as a result nobody counted.
    assert_eq!(report["ignored_results"], serde_json::json!([]), "{report}");
    for test in super::fixtures::tests(&report) {
        let base_side = test["id"].as_str().unwrap().starts_with("base::");
        for attempt in test["attempts"].as_array().unwrap() {
            assert_eq!(attempt["worker_id"].is_null(), base_side, "{test}");
        }
    }
    fleet.teardown().await;
}

/// `--compare` with batches: the candidate's tests run batched, the
/// earlier batched run is the baseline.
#[tokio::test(flavor = "multi_thread")]
async fn a_batched_run_compares_with_an_earlier_batched_one() {
    let (base, cand) = (side_image("base"), side_image("cand"));
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-ab-compare-batch", fleet.prefix);
    fleet.start_worker(&worker, 4);
    let batched = [
        "--batch",
        "3",
        "--report-format",
        "jsonl:name",
        "--",
        "sh",
        "-c",
        BATCH_SCRIPT,
        "{report}",
        "{ids}",
    ];
    let every = ids(&["same-pass", "same-fail", "reg", "fix"]);
    let producer = fleet.producer();
    let mut earlier_args = vec!["--image", base.as_str(), "--max-rounds", "1"];
    earlier_args.extend(batched);
    let earlier = producer.run(&every, &earlier_args).await;
    let earlier_id = earlier.run_id();
    let mut args = vec![
        "--image",
        cand.as_str(),
        "--compare",
        earlier_id.as_str(),
        "--confirm",
        "1",
    ];
    args.extend(batched);
    let run = producer.run(&every, &args).await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());
    assert_eq!(
        classes(&run.report()),
        expected(&[
            ("same-pass", "passing", false, 1, 1),
            ("same-fail", "failing", false, 1, 1),
            ("reg", "regressed", true, 1, 2),
            ("fix", "fixed", true, 1, 2),
        ]),
        "{}",
        run.describe()
    );
    assert!(!run.report()["batches"].as_array().unwrap().is_empty());
    fleet.teardown().await;
}
