//! The OCI runtime a run spec chooses (`--runtime`, `run.runtime`): containers
//! really start under it, and a runtime the engine does not know is an error
//! outcome that names it. `scripts/setup.sh` registers `crun` with the engine.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixtures::{tests, Fleet, BUSYBOX};

/// The runtime the engine reports for the first container labelled with
/// `test_id`, polling until one exists or `limit` passes.
fn runtime_of_container_for(test_id: &str, limit: Duration) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let ps = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=testfleet.test={test_id}"),
            ])
            .output()
            .unwrap();
        let ids = String::from_utf8_lossy(&ps.stdout);
        if let Some(id) = ids.split_whitespace().next() {
            let inspect = Command::new("docker")
                .args(["inspect", "-f", "{{.HostConfig.Runtime}}", id])
                .output()
                .unwrap();
            return Some(String::from_utf8_lossy(&inspect.stdout).trim().to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_spec_chooses_the_containers_runtime() {
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-crun", fleet.prefix);
    fleet.start_worker_with(&worker, 2, &["--allowed-runtimes", "crun"]);
    let id = format!("crun-{}", uuid::Uuid::new_v4().simple());
    let args = ["--image", BUSYBOX, "--runtime", "crun", "--", "sleep", "3"];
    let ids = [id.clone()];
    let run = fleet.run(&ids, &args);
    let inspect_id = id.clone();
    let runtime = tokio::task::spawn_blocking(move || {
        runtime_of_container_for(&inspect_id, Duration::from_secs(30))
    });
    let (run, runtime) = tokio::join!(run, runtime);
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    assert_eq!(runtime.unwrap().as_deref(), Some("crun"));
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_runtime_is_an_error_outcome_naming_it() {
    let mut fleet = Fleet::start(0, 0);
    let worker = format!("{}-any", fleet.prefix);
    fleet.start_worker_with(&worker, 2, &["--allowed-runtimes", "no-such-runtime"]);
    let args = [
        "--image",
        BUSYBOX,
        "--runtime",
        "no-such-runtime",
        "--max-rounds",
        "1",
        "--",
        "true",
    ];
    let run = fleet.run(&["t1".into()], &args).await;
    let report = run.report();
    let test = tests(&report).next().unwrap();
    assert_eq!(test["status"], "Error", "{}", run.describe());
    let message = test["attempts"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("no-such-runtime"), "{message}");
    assert_ne!(run.exit_code(), 0, "{}", run.describe());
    fleet.teardown().await;
}

/// A job naming a runtime its worker does not list is refused before any
/// container exists: another runtime may confine less than the engine's
/// default (runc beside gVisor).
#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_the_worker_does_not_allow_is_refused() {
    let fleet = Fleet::start(1, 2);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let args = [
        "--image",
        BUSYBOX,
        "--runtime",
        "runc",
        "--max-rounds",
        "1",
        "--",
        "true",
    ];
    let run = fleet.run(&["t1".into()], &args).await;
    let report = run.report();
    let test = tests(&report).next().unwrap();
    assert_eq!(test["status"], "Error", "{}", run.describe());
    let message = test["attempts"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("worker.allowed_runtimes"), "{message}");
    assert!(
        crate::fixtures::containers_created(&run.run_id(), since).is_empty(),
        "refused before any container"
    );
    fleet.teardown().await;
}
