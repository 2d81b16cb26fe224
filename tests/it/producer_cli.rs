//! The producer's answers to bad input: clear messages and the usage exit code.

use crate::fixtures::Fleet;

const USAGE: i32 = 2;

fn fleetless() -> Fleet {
    Fleet::start(0, 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_list_is_a_usage_error() {
    let fleet = fleetless();
    let run = fleet.run(&[], &[]).await;
    assert_eq!(run.exit_code(), USAGE, "{}", run.describe());
    assert!(
        run.describe().contains("no tests to run"),
        "{}",
        run.describe()
    );

    let run = fleet
        .run(&["a".into(), "b".into()], &["--filter", "^zzz"])
        .await;
    assert_eq!(run.exit_code(), USAGE);
    assert!(
        run.describe().contains("2 listed, 2 filtered out"),
        "{}",
        run.describe()
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_the_key() {
    let fleet = fleetless();
    let cases = [
        ("[run]\nimagee = \"x\"\n", "imagee"),
        ("[worker]\nconcurrency = \"lots\"\n", "worker.concurrency"),
        ("[run]\nretry_threshold = 2.0\n", "run.retry_threshold"),
    ];
    for (toml, key) in cases {
        let path = fleet.dir.join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let run = fleet
            .run(&["a".into()], &["--config", path.to_str().unwrap()])
            .await;
        assert_eq!(run.exit_code(), USAGE, "{toml}: {}", run.describe());
        assert!(
            run.describe().contains(key),
            "{key} named: {}",
            run.describe()
        );
    }
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_source_of_ids_is_a_usage_error() {
    let fleet = fleetless();
    let run = fleet.run_producer(&[], &[]).await;
    assert_eq!(run.exit_code(), USAGE);
    assert!(run.describe().contains("--tests"), "{}", run.describe());
    fleet.teardown().await;
}

/// A batched command must say how each test ended (a report at `{report}`
/// and its format); `--batch` needs a batched command. Both are usage errors
/// that name the flag, before anything is published.
#[tokio::test(flavor = "multi_thread")]
async fn batching_without_a_report_or_a_batched_command_is_a_usage_error() {
    let fleet = fleetless();
    let ids = ["a".to_owned(), "b".to_owned()];
    for (args, named) in [
        (vec!["--", "run-tests", "{ids}"], "--report-format"),
        (
            vec!["--report-format", "junit:name", "--", "run-tests", "{ids}"],
            "{report}",
        ),
        (vec!["--batch", "5", "--", "run-test", "{id}"], "--batch"),
        (
            vec![
                "--report-format",
                "tap:name",
                "--",
                "x",
                "{report}",
                "{ids}",
            ],
            "unknown report format",
        ),
    ] {
        let run = fleet.run(&ids, &args).await;
        assert_eq!(run.exit_code(), USAGE, "{args:?}: {}", run.describe());
        assert!(
            run.describe().contains(named),
            "{named}: {}",
            run.describe()
        );
    }
    fleet.teardown().await;
}
