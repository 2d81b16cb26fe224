//! Faults in the services every test shares (the broker, the Docker engine).
//! `scripts/test.sh` runs this module on its own, one test at a time, after
//! everything else: nothing else may be running while the broker restarts.

use std::process::Command;
use std::time::Duration;

use crate::faults::survives;

/// Runs a command to completion, failing the test if it fails.
fn sh(command: &str) {
    let status = Command::new("sh").arg("-c").arg(command).status().unwrap();
    assert!(status.success(), "`{command}` failed: {status}");
}

/// Waits until `command` succeeds, for up to `seconds`.
fn wait_until(command: &str, seconds: u64) {
    for _ in 0..seconds * 2 {
        if Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .unwrap()
            .success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("`{command}` did not succeed within {seconds}s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_run_loses_nothing() {
    let (fleet, run) = survives(|_| {
        sh("rabbitmqctl -q stop >/dev/null");
        std::thread::sleep(Duration::from_secs(2));
        sh("rabbitmq-server -detached");
        wait_until(
            "rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1",
            90,
        );
    })
    .await;
    for worker in fleet.worker_ids() {
        assert!(
            fleet.worker_log(&worker).contains("reconnecting"),
            "{worker} says it reconnects"
        );
    }
    assert!(fleet.aggregator_log().contains("reconnecting"));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        stderr.contains("reconnecting"),
        "the waiting producer too: {stderr}"
    );
    fleet.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_engine_stopped_mid_run_fails_no_test() {
    let (fleet, _) = survives(|_| {
        sh("pkill -TERM -x dockerd");
        // The daemon stops its containers before it exits; a new one cannot
        // start while the old one holds its pid file.
        wait_until("! pgrep -x dockerd >/dev/null", 60);
        std::thread::sleep(Duration::from_secs(2));
        sh("mkdir -p /var/log/testfleet && setsid nohup dockerd >>/var/log/testfleet/dockerd.log 2>&1 &");
        wait_until("docker info >/dev/null 2>&1", 60);
    })
    .await;
    let logs: String = fleet
        .worker_ids()
        .iter()
        .map(|w| fleet.worker_log(w))
        .collect();
    assert!(logs.contains("docker engine unreachable"), "workers say so");
    fleet.teardown().await;
}
