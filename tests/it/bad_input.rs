//! The bad-input catalogue: each case ends in a clear error or a clear outcome,
//! never a crash, a hang or a lost test.

use std::time::{Duration, Instant};

use crate::fixtures::{scripted_command, tests, Fleet, BUSYBOX};

/// Ids that break anything that passes them through a shell, splits on
/// whitespace or newlines, or assumes ASCII or short names.
fn hostile_ids() -> Vec<String> {
    vec![
        "has two  spaces".into(),
        "it's \"quoted\"".into(),
        "semi; echo INJECTED".into(),
        "$(echo INJECTED)".into(),
        "`echo INJECTED`".into(),
        "line one\nline two".into(),
        "ünïcødé-测试-🚀".into(),
        "glob-*-?".into(),
        "x".repeat(10 * 1024),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_ids_run_and_are_reported_verbatim() {
    let fleet = Fleet::start(2, 2);
    let ids = hostile_ids();
    let list = fleet.dir.join("ids.nul");
    std::fs::write(&list, ids.join("\0")).unwrap();
    // Each test prints its argument and fails, so its output is in the report.
    let command = scripted_command(
        r#"printf '%s' "$1"; [ "$TEST_ID" = "$1" ] || echo " TEST_ID differs"; exit 1"#,
    );
    let mut args = vec!["--image", BUSYBOX, "--max-rounds", "1"];
    args.extend(command.iter().map(String::as_str));
    let run = fleet
        .run_producer(
            &["--tests", list.to_str().unwrap(), "--null", "--wait"],
            &args,
        )
        .await;

    // Every test fails: too many to retry, exit 3.
    assert_eq!(run.exit_code(), 3, "{}", run.describe());
    let report = run.report();
    let mut reported: Vec<(String, String)> = tests(&report)
        .map(|t| {
            let output = t["attempts"][0]["output"].as_str().unwrap_or("");
            (t["id"].as_str().unwrap().to_owned(), output.to_owned())
        })
        .collect();
    reported.sort();
    let mut expected: Vec<(String, String)> =
        ids.iter().map(|id| (id.clone(), id.clone())).collect();
    expected.sort();
    assert_eq!(
        reported, expected,
        "each id reached its test verbatim, as argv and TEST_ID"
    );
    assert_valid_xml(&run.junit());
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_ids_run_once_with_a_warning() {
    let fleet = Fleet::start(1, 2);
    let ids: Vec<String> = ["a", "b", "a", "c", "b"].map(String::from).to_vec();
    let run = fleet.run(&ids, &["--image", BUSYBOX, "--", "true"]).await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(run.attempts().len(), 3, "{:?}", run.attempts());
    assert!(run.describe().contains("duplicate"), "{}", run.describe());
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_without_the_command_is_an_error_outcome_naming_it() {
    let fleet = Fleet::start(1, 2);
    let run = fleet
        .run(
            &["t1".into()],
            &[
                "--image",
                BUSYBOX,
                "--max-rounds",
                "1",
                "--",
                "no-such-program",
                "{id}",
            ],
        )
        .await;
    let report = run.report();
    let test = tests(&report).next().unwrap();
    assert_eq!(test["status"], "Error", "{}", run.describe());
    let message = test["attempts"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("no-such-program"), "{message}");
    assert_ne!(run.exit_code(), 0, "{}", run.describe());
    fleet.teardown().await;
}

/// 100 MB of text and 2 MB of random bytes: capped, reports valid, the worker's
/// memory bounded by the cap, not by the output.
#[tokio::test(flavor = "multi_thread")]
async fn huge_and_binary_output_is_capped_and_reports_stay_valid() {
    let fleet = Fleet::start(1, 2);
    let script = r#"
case "$1" in
  huge) yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 100000000 ;;
  binary) head -c 2000000 /dev/urandom ;;
esac
exit 1"#;
    let command = scripted_command(script);
    let mut args = vec!["--image", BUSYBOX, "--max-rounds", "1", "--timeout", "120"];
    args.extend(command.iter().map(String::as_str));
    let run = fleet.run(&["huge".into(), "binary".into()], &args).await;

    assert_eq!(run.exit_code(), 3, "{}", run.describe());
    // report.json parsed as JSON, hence valid UTF-8.
    let report = run.report();
    for test in tests(&report) {
        let attempt = &test["attempts"][0];
        assert_eq!(test["status"], "Failed", "{test}");
        assert_eq!(attempt["output_truncated"], true, "{}", test["id"]);
        let kept = attempt["output"].as_str().unwrap().len();
        assert!(kept <= 1_100_000, "{} kept {kept} bytes", test["id"]);
    }
    assert_valid_xml(&run.junit());
    let worker = &fleet.worker_ids()[0];
    let peak = fleet.worker_peak_rss(worker);
    assert!(peak < 64 << 20, "worker peak RSS {} MB", peak >> 20);
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_at_start_up_is_retried_then_a_clear_error() {
    let fleet = Fleet::start(0, 1);
    let started = Instant::now();
    let output = tokio::process::Command::new(crate::fixtures::binary("testfleet-producer"))
        .env(
            "TESTFLEET_BROKER__URL",
            "amqp://tf:s3cret-pw@127.0.0.1:1/%2f",
        )
        .env("TESTFLEET_BROKER__CONNECT_TIMEOUT_SECS", "3")
        .current_dir(&fleet.dir)
        .args(["--discover", "echo t1", "--wait", "--", "true"])
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(5),
        "infrastructure exit code: {stderr}"
    );
    assert!(
        stderr.matches("broker unreachable, retrying").count() >= 2,
        "retries with backoff: {stderr}"
    );
    assert!(
        stderr.contains("tf:***@127.0.0.1:1"),
        "names the broker: {stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "password redacted: {stderr}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "gives up after the configured time: {took:?}"
    );
    fleet.teardown().await;
}

/// The default limits are really applied inside the container, and a run spec
/// loosens them on a worker that allows it.
#[tokio::test(flavor = "multi_thread")]
async fn test_containers_are_hardened_by_default_and_the_run_spec_overrides_it() {
    let mut fleet = Fleet::start(0, 2);
    let worker = format!("{}-loose", fleet.prefix);
    fleet.start_worker_with(&worker, 2, &["--liftable-limits", "no_new_privileges"]);
    let script = r#"
grep -E 'NoNewPrivs|CapEff' /proc/self/status
echo "pids.max=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)"
echo "memory.max=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
echo "interfaces=$(ls /sys/class/net | tr '\n' ' ')"
echo "user=$(id -u):$(id -g)"
exit 1"#;
    let command = scripted_command(script);
    let mut args = vec!["--image", BUSYBOX, "--max-rounds", "1"];
    args.extend(command.iter().map(String::as_str));

    let output_of = |run: &crate::fixtures::RunOutcome| {
        let report = run.report();
        let test = tests(&report).next().unwrap().clone();
        test["attempts"][0]["output"].as_str().unwrap().to_owned()
    };
    let hardened = output_of(&fleet.run(&["defaults".into()], &args).await);
    assert!(hardened.contains("NoNewPrivs:\t1"), "{hardened}");
    assert!(
        hardened.contains("CapEff:\t0000000000000000"),
        "no capability: {hardened}"
    );
    assert!(hardened.contains("pids.max=1024"), "{hardened}");
    assert!(hardened.contains("memory.max=1073741824"), "{hardened}");
    assert!(
        hardened.contains("interfaces=lo \n"),
        "no network but loopback: {hardened}"
    );
    assert!(
        hardened.contains("user=0:0"),
        "the image's user: {hardened}"
    );

    let overridden = fleet
        .producer()
        .with_env("TESTFLEET_RUN__PIDS_LIMIT", "64")
        .with_env("TESTFLEET_RUN__MEMORY_BYTES", "268435456")
        .with_env("TESTFLEET_RUN__NETWORK", "bridge")
        .with_env("TESTFLEET_RUN__NO_NEW_PRIVILEGES", "false")
        .with_env("TESTFLEET_RUN__USER", "1000:1000")
        .run(&["overridden".into()], &args)
        .await;
    let overridden = output_of(&overridden);
    assert!(overridden.contains("NoNewPrivs:\t0"), "{overridden}");
    assert!(overridden.contains("pids.max=64"), "{overridden}");
    assert!(overridden.contains("memory.max=268435456"), "{overridden}");
    assert!(overridden.contains("eth0"), "bridge network: {overridden}");
    assert!(overridden.contains("user=1000:1000"), "{overridden}");
    fleet.teardown().await;
}

/// A job asking for the host's network, no limits and a privileged
/// capability is refused by a default worker before any container exists:
/// each test is an error that names what was asked and the setting that
/// would allow it. A worker configured for it runs the same spec.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_spec_is_refused_by_a_default_worker() {
    let mut fleet = Fleet::start(1, 2);
    let hostile = |producer: crate::fixtures::Producer| {
        producer
            .with_env("TESTFLEET_RUN__NETWORK", "host")
            .with_env("TESTFLEET_RUN__PIDS_LIMIT", "0")
            .with_env("TESTFLEET_RUN__MEMORY_BYTES", "0")
            .with_env("TESTFLEET_RUN__NO_NEW_PRIVILEGES", "false")
            .with_env("TESTFLEET_RUN__CAP_ADD", "SYS_ADMIN,NET_ADMIN")
    };
    let args = [
        "--image",
        BUSYBOX,
        "--max-rounds",
        "1",
        "--",
        "sh",
        "-c",
        "grep CapEff /proc/self/status",
    ];
    let ids: Vec<String> = (0..3).map(|i| format!("hostile-{i}")).collect();
    let since = testfleet_types::now_ms() / 1000;
    let run = hostile(fleet.producer()).run(&ids, &args).await;
    assert_ne!(run.exit_code(), 0, "{}", run.describe());
    let report = run.report();
    for test in tests(&report) {
        assert_eq!(test["status"], "Error", "{test}");
        let message = test["attempts"][0]["message"].as_str().unwrap_or_default();
        for asked in [
            "refuses this job's container",
            "network mode \"host\"",
            "no memory limit",
            "no pids limit",
            "no no_new_privileges limit",
            "capabilities SYS_ADMIN, NET_ADMIN",
            "worker.allowed_networks",
        ] {
            assert!(message.contains(asked), "{asked:?} in {message:?}");
        }
    }
    let created = crate::fixtures::containers_created(&run.run_id(), since);
    assert!(created.is_empty(), "no container created: {created:?}");

    // Taken away, so that only the worker that allows it gets the next run.
    let first = fleet.worker_ids()[0].clone();
    fleet.kill_worker(&first);
    let trusting = format!("{}-trusting", fleet.prefix);
    fleet.start_worker_with(
        &trusting,
        2,
        &[
            "--allowed-networks",
            "host",
            "--liftable-limits",
            "memory,pids,no_new_privileges",
            "--allowed-capabilities",
            "SYS_ADMIN,NET_ADMIN",
        ],
    );
    let allowed = hostile(fleet.producer())
        .run(&["allowed".into()], &args)
        .await;
    assert_eq!(allowed.exit_code(), 0, "{}", allowed.describe());
    let report = allowed.report();
    let attempt = &tests(&report).next().unwrap()["attempts"][0];
    assert_eq!(attempt["worker_id"], trusting.as_str());
    let created = crate::fixtures::containers_created(&allowed.run_id(), since);
    assert_eq!(created.len(), 1, "one container: {created:?}");
    fleet.teardown().await;
}

/// The whole path over TLS: every service joins `amqps://`, trusting the local CA
/// that `scripts/setup.sh` made, through `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_joins_an_amqps_broker() {
    let url = "amqps://guest:guest@localhost:5671/%2f?heartbeat=5";
    let fleet =
        Fleet::start_with_broker(1, 2, url, &[("SSL_CERT_FILE", "/etc/testfleet/tls/ca.pem")]);
    let run = fleet
        .run(
            &["tls-1".into(), "tls-2".into()],
            &["--image", BUSYBOX, "--", "true"],
        )
        .await;
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let worker = fleet.worker_log(&fleet.worker_ids()[0]);
    assert!(
        worker.contains("connected to the broker broker=amqps://guest:***@localhost:5671"),
        "{worker}"
    );
    // Nothing the fleet wrote (every service's log, every report) holds it.
    for (path, text) in files_under(&fleet.dir) {
        assert!(!text.contains("guest:guest"), "password in {path:?}");
    }
    assert!(
        fleet.aggregator_log().contains("guest:***@"),
        "{}",
        fleet.aggregator_log()
    );
    fleet.teardown().await;
}

/// A variable marked secret reaches the test, and no file the fleet writes
/// (reports of the aggregator and the producer, events, logs) holds its
/// value; report.json shows it as `<secret>`. A plain one is reported as is.
#[tokio::test(flavor = "multi_thread")]
async fn secret_variables_reach_the_tests_and_no_report() {
    let fleet = Fleet::start(1, 2);
    let config = fleet.dir.join("secret.toml");
    std::fs::write(
        &config,
        "[run]\nsecret_env = [\"TOKEN\"]\n[run.env]\nTOKEN = \"canary-5f1e\"\nPLAIN = \"in-the-open\"\n",
    )
    .unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--image",
        BUSYBOX,
        "--",
        "sh",
        "-c",
        // The whole value is nowhere in the argv, which reports do show.
        "[ \"${TOKEN%e}\" = canary-5f1 ] && [ \"$PLAIN\" = in-the-open ]",
    ];
    let run = fleet
        .run(&["secret-1".into(), "secret-2".into()], &args)
        .await;
    assert_eq!(run.exit_code(), 0, "the tests saw it: {}", run.describe());
    let report = run.report();
    assert_eq!(report["spec"]["env"]["TOKEN"], "<secret>");
    assert_eq!(report["spec"]["env"]["PLAIN"], "in-the-open");
    for (path, text) in files_under(&fleet.dir) {
        // The journal keeps it (retries after a restart need it), readable
        // by the aggregator's user alone, and goes with the run.
        if path == config || path.starts_with(fleet.dir.join("state")) {
            continue;
        }
        assert!(!text.contains("canary-5f1e"), "the secret in {path:?}");
    }
    fleet.teardown().await;
}

/// Every file below `dir`, read lossily, with its path.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    files
}

/// Parses XML with Python's standard library, which rejects what XML 1.0 forbids.
fn assert_valid_xml(xml: &str) {
    let path = std::env::temp_dir().join(format!("junit-{}.xml", uuid::Uuid::new_v4()));
    std::fs::write(&path, xml).unwrap();
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(&path)
        .status()
        .expect("python3");
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "junit.xml is not well-formed XML");
}

/// A worker configured with another delivery limit than the jobs queue was
/// declared with cannot work with that queue: it stops at once, saying which
/// setting disagrees and how to fix it, instead of reconnecting in a loop.
#[tokio::test(flavor = "multi_thread")]
async fn a_setting_that_disagrees_with_an_existing_queue_is_named_and_the_service_stops() {
    let fleet = Fleet::start(1, 1);
    let warmup = fleet
        .run(&["x".into()], &["--image", BUSYBOX, "--", "true"])
        .await;
    assert_eq!(warmup.exit_code(), 0, "{}", warmup.describe());
    let started = Instant::now();
    let output = fleet.run_service_to_exit(
        "testfleet-worker",
        &[("TESTFLEET_BROKER__DELIVERY_LIMIT", "7")],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at once"
    );
    let jobs = fleet.topology().jobs;
    for said in [
        "`broker.delivery_limit`",
        jobs.as_str(),
        "rabbitmqctl delete_queue",
    ] {
        assert!(stderr.contains(said), "{said} in: {stderr}");
    }
    fleet.teardown().await;
}
