//! The HTML report in a real browser: a mixed suite runs through a real fleet,
//! then headless Chromium (Debian's `chromium`, installed by `scripts/setup.sh`)
//! opens the run's `report.html`, dumps the DOM it built, and takes a screenshot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::{binary, scripted_command, tests, Fleet, BUSYBOX};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Plays a test by its id: passes, a straggler, a flaky test, and failures
/// with two distinct causes. One failure prints markup, which the page must
/// show as text.
const SCRIPT: &str = r#"
id="$1"
case "$id" in
  pass-*) echo "ok $id" ;;
  slow-*) sleep 12; echo "slow but fine" ;;
  flaky-*) if [ "$TESTFLEET_ATTEMPT" = 1 ]; then echo "flaky: first attempt fails" >&2; exit 1; fi ;;
  db-*) echo "connecting to the database"; echo "ERROR: connection refused by db:5432 (try $TESTFLEET_ATTEMPT)" >&2; exit 1 ;;
  assert-*) echo "<script>alert(1)</script>"; echo "assertion failed: expected ${id#assert-} rows, got 0" >&2; exit 2 ;;
  *) echo "unknown test $id" >&2; exit 9 ;;
esac
"#;

/// The user's rule that names one of the two causes.
const TRIAGE_CONFIG: &str =
    "[report]\ntriage_rules = [{ name = \"db down\", pattern = \"connection refused\" }]\n";

fn suite() -> Vec<String> {
    let mut ids: Vec<String> = (1..=12).map(|i| format!("pass-{i:02}")).collect();
    // Failures in the middle of the run's order: the page must still list them first.
    ids.splice(
        4..4,
        [
            "db-01",
            "assert-01",
            "flaky-01",
            "slow-01",
            "db-02",
            "assert-02",
        ]
        .map(String::from),
    );
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn the_html_report_shows_failures_first_with_causes_timeline_and_histogram() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/setup.sh"
    );
    let fleet = Fleet::start(2, 2);
    let config = fleet.dir.join("triage.toml");
    std::fs::write(&config, TRIAGE_CONFIG).unwrap();
    let command = scripted_command(SCRIPT);
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--image",
        BUSYBOX,
        "--suite",
        "html",
        "--timeout",
        "30",
        "--retry-threshold",
        "0.5",
        "--max-rounds",
        "2",
    ];
    args.extend(command.iter().map(String::as_str));
    let run = fleet.run(&suite(), &args).await;
    assert_eq!(run.exit_code(), 1, "tests failed\n{}", run.describe());
    assert!(
        run.stdout().contains("report.html"),
        "the summary names the page\n{}",
        run.describe()
    );

    // The Markdown summary groups the same failures by the same causes.
    let summary = std::fs::read_to_string(run.run_dir().join("summary.md")).unwrap();
    assert!(summary.contains("4 failures, 2 causes"), "{summary}");
    assert!(summary.contains("db down"), "{summary}");

    let page = run.run_dir().join("report.html");
    let dom = chromium_dom(&fleet, &page).await;
    check_page(&dom, &run.report());
    check_screenshot(&fleet, &page).await;

    // The aggregator writes the page too (without the producer's rule, so
    // its causes are two signatures).
    let aggregator_page = fleet
        .dir
        .join("aggregator-reports")
        .join(run.run_id())
        .join("report.html");
    let html = std::fs::read_to_string(&aggregator_page).expect("the aggregator's report.html");
    assert!(html.contains("<section data-groups=\"2\" id=\"causes\">"));
    fleet.teardown().await;
}

/// What the browser built from the page, checked against report.json.
fn check_page(dom: &str, report: &Value) {
    assert!(
        dom.contains("data-verdict=\"TestsFailed\""),
        "verdict\n{dom}"
    );
    assert!(dom.contains("✗ Tests failed"), "verdict heading");
    for (status, count) in [
        ("passed", 13),
        ("failed", 4),
        ("flaky", 1),
        ("timed out", 0),
    ] {
        let card = format!("data-status=\"{status}\" data-count=\"{count}\"");
        assert!(dom.contains(&card), "no {card}");
    }

    // Failures first: every failing test's entry comes before the flaky one,
    // which comes before any passing test.
    let at = |needle: &str| {
        dom.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} on the page"))
    };
    let first_pass = at("data-status=\"passed\"><td><code>pass-01</code>");
    let flaky = at("<code class=\"id\">flaky-01</code>");
    for id in ["db-01", "db-02", "assert-01", "assert-02"] {
        assert!(
            at(&format!("<code class=\"id\">{id}</code>")) < flaky,
            "{id} listed before the flaky test"
        );
    }
    assert!(flaky < first_pass, "flaky before passes");
    assert!(at("id=\"failures\"") < at("id=\"passed\""));
    assert!(at("id=\"causes\"") < at("id=\"failures\""));

    // Two causes: the user's rule and a normalised signature.
    assert!(dom.contains("<section data-groups=\"2\" id=\"causes\">"));
    assert_eq!(dom.matches("<tr class=\"group\"").count(), 2);
    assert!(dom.contains("<span class=\"rule\">rule</span><strong>db down</strong>"));
    assert!(dom.contains("<code>assertion failed: expected N rows, got N</code>"));
    assert!(dom.contains("4 failures, 2 causes"));

    // A flaky test shows its attempts: the failed one, then the pass.
    let flaky_entry = &dom[flaky..flaky + dom[flaky..].find("</details>").unwrap()];
    assert!(flaky_entry.contains("failed on attempt 1, then passed"));
    let attempts_table =
        &flaky_entry[flaky_entry.find("<table class=\"list attempts\"").unwrap()..];
    let rows: Vec<&str> = attempts_table.split("<tr><td>").skip(1).collect();
    assert_eq!(rows.len(), 2, "{attempts_table}");
    assert!(rows[0].starts_with("1</td>") && rows[0].contains(">failed<"));
    assert!(rows[1].starts_with("2</td>") && rows[1].contains(">passed<"));

    // Output is one click away, and markup in it is text, not markup.
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!dom.contains("<script"), "no script element at all");

    check_timeline(dom, report);
    let histogram = svg(dom, "histogram");
    let binned: usize = histogram
        .split("<g class=\"bin\" data-count=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse::<usize>().unwrap())
        .sum();
    assert_eq!(binned, attempts(report).count(), "every attempt binned");
}

/// One lane per worker that ran something, a bar per attempt, the straggler named.
fn check_timeline(dom: &str, report: &Value) {
    let timeline = svg(dom, "timeline-chart");
    let workers: BTreeSet<&str> = attempts(report)
        .map(|a| a["worker_id"].as_str().expect("a worker ran it"))
        .collect();
    assert_eq!(
        timeline.matches("<g class=\"lane\"").count(),
        workers.len(),
        "one lane per worker"
    );
    for worker in &workers {
        assert!(timeline.contains(&format!("data-worker=\"{worker}\"")));
    }
    assert_eq!(
        timeline.matches("<rect class=\"bar ").count(),
        attempts(report).count()
    );
    assert!(timeline.contains("<title>db-01 — attempt 2, failed,"));
    assert!(
        timeline.contains(">slow-01 · "),
        "the straggler is named:\n{timeline}"
    );
}

fn attempts(report: &Value) -> impl Iterator<Item = &Value> {
    tests(report).flat_map(|t| t["attempts"].as_array().unwrap())
}

/// The `<svg id=…>` element's markup.
fn svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no svg #{id}"));
    let end = start + dom[start..].find("</svg>").expect("svg closed");
    &dom[start..end]
}

async fn chromium_dom(fleet: &Fleet, page: &Path) -> String {
    let output = chromium(fleet, "dump", &["--dump-dom"], page).await;
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// Takes a 1280×2000 screenshot and checks it is a PNG of that size with
/// content. A copy is kept in the temp dir for people to look at.
async fn check_screenshot(fleet: &Fleet, page: &Path) {
    let png = fleet.dir.join("report.png");
    let flag = format!("--screenshot={}", png.display());
    chromium(fleet, "shot", &[&flag, "--window-size=1280,2000"], page).await;
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (1280, 2000), "IHDR width and height");
    // A blank or near-blank page compresses to a few kilobytes.
    assert!(bytes.len() > 50_000, "{} bytes only", bytes.len());
    let _ = std::fs::copy(&png, std::env::temp_dir().join("testfleet-html-report.png"));
}

/// Runs headless Chromium on the page with a fresh profile, and no network
/// chatter of its own, within two minutes.
async fn chromium(fleet: &Fleet, tag: &str, args: &[&str], page: &Path) -> Output {
    let profile: PathBuf = fleet.dir.join(format!("chromium-{tag}"));
    let mut command = tokio::process::Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium finished within two minutes")
        .expect("chromium ran");
    assert!(
        output.status.success(),
        "chromium {args:?}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A bad triage rule is a configuration error: exit 2, naming the key, before
/// the aggregator touches the broker.
#[test]
fn a_bad_triage_rule_is_a_usage_error_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tf-html-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("testfleet.toml");
    std::fs::write(
        &config,
        "[report]\ntriage_rules = [{ name = \"broken\", pattern = \"(unclosed\" }]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let producer = ["--config", config, "--tests", "-", "--wait", "--", "true"];
    for (program, args) in [
        ("testfleet-aggregator", &["--config", config][..]),
        ("testfleet-producer", &producer[..]),
    ] {
        let output = std::process::Command::new(binary(program))
            .args(args)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{program}: {stderr}");
        assert!(
            stderr.contains("`report.triage_rules`"),
            "{program}: {stderr}"
        );
        assert!(
            stderr.contains("rule 1 (\"broken\")"),
            "{program}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
