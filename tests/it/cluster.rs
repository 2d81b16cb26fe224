//! The broker as a cluster: three RabbitMQ nodes on this machine
//! (`scripts/cluster.sh`), every service given all three URLs. The node that
//! leads the run's jobs queue is stopped hard mid-run, brought back, and then the
//! node leading it next is stopped too: every test must end as in an
//! undisturbed run, counted once, with no container left. Run with the
//! serial tests (three more Erlang nodes are heavy for a 2-core machine).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::faults::survives_on;
use crate::fixtures::Fleet;

/// The three-node cluster of `scripts/cluster.sh`, stopped and wiped on drop.
struct Cluster {
    urls: String,
}

impl Cluster {
    fn start() -> Cluster {
        let output = script(&["start"]);
        let urls = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert_eq!(urls.split(',').count(), 3, "three node URLs: {urls}");
        Cluster { urls }
    }

    /// The number (1-3) of the node leading `queue`, as the live nodes say.
    fn leader(&self, queue: &str) -> String {
        let output = script(&["leader", queue]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn kill(&self, node: &str) {
        script(&["kill", node]);
    }

    fn restart(&self, node: &str) {
        script(&["restart", node]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(cluster_script()).arg("stop").output();
    }
}

fn cluster_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts/cluster.sh")
}

/// Runs `scripts/cluster.sh` with `args`; it must succeed.
fn script(args: &[&str]) -> std::process::Output {
    let output = Command::new(cluster_script())
        .args(args)
        .output()
        .expect("run scripts/cluster.sh");
    assert!(
        output.status.success(),
        "scripts/cluster.sh {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The run's own jobs queue (`run.queue = "own"`), named after the run the
/// producer's first event names.
fn run_jobs_queue(fleet: &Fleet) -> String {
    let events = fleet.events();
    let run_id = events
        .iter()
        .find(|e| e["event"] == "run_submitted")
        .and_then(|e| e["run_id"].as_str())
        .expect("the run was submitted");
    fleet.topology().run_jobs_queue(run_id)
}

/// Waits until `count` tests have finished, as the run's events say.
fn wait_for_finished(fleet: &Fleet, count: usize) {
    let until = Instant::now() + Duration::from_secs(240);
    while fleet.finished_count() < count {
        assert!(Instant::now() < until, "{count} tests never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fault_suite_survives_losing_the_node_leading_the_jobs_queue_twice() {
    let cluster = Cluster::start();
    let journal_in_the_broker = [("TESTFLEET_AGGREGATOR__JOURNAL", "broker")];
    let fleet = Fleet::start_with_broker(3, 2, &cluster.urls, &journal_in_the_broker);
    let mut stopped = Vec::new();
    let (fleet, _run) = survives_on(fleet, |fleet| {
        let jobs = run_jobs_queue(fleet);
        let first = cluster.leader(&jobs);
        cluster.kill(&first);
        wait_for_finished(fleet, 50);
        cluster.restart(&first);
        let second = cluster.leader(&jobs);
        cluster.kill(&second);
        wait_for_finished(fleet, 75);
        cluster.restart(&second);
        stopped = vec![first, second];
    })
    .await;
    assert_ne!(stopped[0], stopped[1], "the jobs queue's lead moved");
    let moved = fleet
        .worker_ids()
        .iter()
        .map(|w| fleet.worker_log(w))
        .chain([fleet.aggregator_log()])
        .filter(|log| log.contains("joined another broker node"))
        .count();
    assert!(moved > 0, "some service joined another node");
    fleet.teardown().await;
}
