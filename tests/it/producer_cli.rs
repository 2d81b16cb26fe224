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
