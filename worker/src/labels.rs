//! Labels on test containers, and the sweep that removes orphans by them.
//!
//! A live worker always kills its container at the test's timeout, so a labelled
//! container past `testfleet.expires` belongs to a worker that died: any worker on
//! the same engine may remove it. No coordinator is needed for that rule.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use testfleet_common::now_ms;
use testfleet_common::wire::Job;
use tracing::{info, warn};

use crate::docker::DockerExecutor;

/// Present on every container testfleet creates.
pub const MANAGED: &str = "testfleet";
pub const RUN: &str = "testfleet.run";
pub const TEST: &str = "testfleet.test";
pub const ATTEMPT: &str = "testfleet.attempt";
pub const WORKER: &str = "testfleet.worker";
/// Unix milliseconds after which the container is certainly orphaned.
pub const EXPIRES: &str = "testfleet.expires";

/// Time beyond the test's timeout before a container counts as orphaned.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// Label values are capped; a 10 KB test id is in the command, not the label.
const MAX_LABEL_VALUE: usize = 256;

pub fn for_job(job: &Job, worker_id: &str) -> HashMap<String, String> {
    let expires = now_ms() + job.spec.timeout_ms + ORPHAN_GRACE.as_millis() as u64;
    let test: String = job.test_id.chars().take(MAX_LABEL_VALUE).collect();
    HashMap::from([
        (MANAGED.to_owned(), "1".to_owned()),
        (RUN.to_owned(), job.run_id.to_string()),
        (TEST.to_owned(), test),
        (ATTEMPT.to_owned(), job.attempt.to_string()),
        (WORKER.to_owned(), worker_id.to_owned()),
        (EXPIRES.to_owned(), expires.to_string()),
    ])
}

/// Which managed containers a sweep removes.
#[derive(Debug, Clone, Copy)]
pub enum Sweep<'a> {
    /// Past their expiry only: safe while other workers share the engine.
    Expired,
    /// Also every container of this worker id: at start-up, when a predecessor
    /// with the same id crashed and left its containers behind.
    ExpiredOrOwnedBy(&'a str),
}

fn is_orphan(labels: &HashMap<String, String>, sweep: Sweep<'_>, now: u64) -> bool {
    let expired = labels
        .get(EXPIRES)
        .and_then(|v| v.parse::<u64>().ok())
        .is_none_or(|expires| expires < now);
    let owned = match sweep {
        Sweep::Expired => false,
        Sweep::ExpiredOrOwnedBy(worker) => labels.get(WORKER).map(String::as_str) == Some(worker),
    };
    expired || owned
}

/// Removes orphaned test containers; returns how many it removed.
pub async fn sweep(executor: &DockerExecutor, sweep: Sweep<'_>) -> usize {
    let containers = match list_managed(executor.docker()).await {
        Ok(containers) => containers,
        Err(error) => {
            warn!(%error, "could not list containers for the orphan sweep");
            return 0;
        }
    };
    let now = now_ms();
    let mut removed = 0;
    for (id, labels) in containers {
        if is_orphan(&labels, sweep, now) {
            info!(container = %id, run = labels.get(RUN).map(String::as_str).unwrap_or("?"), "removing orphaned test container");
            executor.remove(&id).await;
            removed += 1;
        }
    }
    removed
}

/// Retries the removal of containers the engine did not answer for. Those that
/// fail again come back through the channel for the next call.
pub async fn remove_leftovers(
    executor: &DockerExecutor,
    leftovers: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut pending = Vec::new();
    while let Ok(container) = leftovers.try_recv() {
        pending.push(container);
    }
    for container in pending {
        info!(%container, "removing a container left while the engine was unreachable");
        executor.remove(&container).await;
    }
}

async fn list_managed(
    docker: &Docker,
) -> Result<Vec<(String, HashMap<String, String>)>, bollard::errors::Error> {
    let filters = HashMap::from([("label".to_owned(), vec![MANAGED.to_owned()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = docker.list_containers(Some(options)).await?;
    Ok(summaries
        .into_iter()
        .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(worker: &str, expires: u64) -> HashMap<String, String> {
        HashMap::from([
            (WORKER.to_owned(), worker.to_owned()),
            (EXPIRES.to_owned(), expires.to_string()),
        ])
    }

    #[test]
    fn only_expired_or_own_containers_are_orphans() {
        let now = 1_000;
        assert!(is_orphan(&labels("other", 999), Sweep::Expired, now));
        assert!(!is_orphan(&labels("other", 1_001), Sweep::Expired, now));
        assert!(!is_orphan(&labels("me", 1_001), Sweep::Expired, now));
        assert!(is_orphan(
            &labels("me", 1_001),
            Sweep::ExpiredOrOwnedBy("me"),
            now
        ));
        assert!(!is_orphan(
            &labels("other", 1_001),
            Sweep::ExpiredOrOwnedBy("me"),
            now
        ));
        assert!(
            is_orphan(&HashMap::new(), Sweep::Expired, now),
            "unlabelled expiry counts as expired"
        );
    }
}
