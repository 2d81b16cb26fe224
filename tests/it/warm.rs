//! Warm mode end to end: tests run as execs in kept containers, with the fresh
//! mode's outcomes; a kept container is replaced after `warm_reuse` tests and
//! after any test that does not pass, and none is left once the worker stops.

use nix::sys::signal::Signal;

use crate::fixtures::{leftover_containers, scripted_command, tests, Fleet, BUSYBOX};

/// Each test appends to a file of its container and prints how many tests that
/// container has run: the count shows when a container was replaced.
const SCRIPT: &str = r#"
id="$1"
echo "$id" >>/tmp/ran
echo "seen=$(wc -l </tmp/ran) test=$TEST_ID attempt=$TESTFLEET_ATTEMPT"
case "$id" in
  p*) exit 0 ;;
  f*) exit 3 ;;
  t*) sleep 60 ;;
esac
"#;

#[tokio::test(flavor = "multi_thread")]
async fn warm_containers_are_reused_then_replaced_after_n_tests_and_after_failures() {
    // One slot and arrival order: the tests run one after the other, as listed.
    let mut fleet = Fleet::start(0, 1);
    let worker = format!("{}-warm", fleet.prefix);
    fleet.start_worker(&worker, 1);
    let ids: Vec<String> = ["p1", "p2", "p3", "f4", "f5", "p6", "t7", "f8", "p9"]
        .map(String::from)
        .to_vec();
    let command = scripted_command(SCRIPT);
    let mut args = vec![
        "--image",
        BUSYBOX,
        "--order",
        "arrival",
        "--timeout",
        "3",
        "--max-rounds",
        "1",
        "--retry-threshold",
        "1",
    ];
    args.extend(command.iter().map(String::as_str));
    let run = fleet
        .producer()
        .with_env("TESTFLEET_RUN__CONTAINER_MODE", "warm")
        .with_env("TESTFLEET_RUN__WARM_REUSE", "3")
        .run(&ids, &args)
        .await;
    assert_eq!(run.exit_code(), 1, "{}", run.describe());

    let report = run.report();
    let attempt = |id: &str| {
        tests(&report)
            .find(|t| t["id"] == id)
            .expect("test in report")["attempts"][0]
            .clone()
    };
    for id in ["p1", "p2", "p3", "p6", "p9"] {
        assert_eq!(attempt(id)["status"]["Ran"], "Passed", "{id}");
    }
    assert_eq!(attempt("t7")["status"]["Ran"], "TimedOut");
    // Outputs are kept for tests that did not pass; the count says which
    // container each ran in.
    let seen = |id: &str| {
        let a = attempt(id);
        assert_eq!(a["exit_code"], 3, "{id}: {a}");
        let output = a["output"].as_str().unwrap().to_owned();
        assert!(output.contains(&format!("test={id} attempt=1")), "{output}");
        output
    };
    // p1..p3 used up the first container (warm_reuse = 3): f4 is in a new one.
    assert!(seen("f4").contains("seen=1"), "{}", seen("f4"));
    // f4 failed: its container was replaced.
    assert!(seen("f5").contains("seen=1"), "{}", seen("f5"));
    // p6 then t7 shared a container, which the timeout killed: f8 is in a new one.
    assert!(seen("f8").contains("seen=1"), "{}", seen("f8"));

    // Only p9's container is kept after the run, and the worker removes it
    // when it stops.
    let run_id = run.run_id();
    assert_eq!(leftover_containers(&run_id).len(), 1);
    fleet.signal_worker(&worker, Signal::SIGTERM);
    assert!(fleet.wait_worker(&worker).success());
    assert!(
        leftover_containers(&run_id).is_empty(),
        "{:?}",
        leftover_containers(&run_id)
    );
    fleet.teardown().await;
}
