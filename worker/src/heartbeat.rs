//! The worker's heartbeat: every few seconds, what it is and what its slots
//! run now, on the heartbeats queue, for the aggregator's dashboard. Best
//! effort and information only: nothing decides on a heartbeat.
//!
//! Job tasks put their job on the [`Board`] when its test starts and take it
//! off when it ends (a guard, so a panic takes it off too); the heartbeat
//! task reads the board. The board is the one piece of state the tasks
//! share behind a mutex, held for a few instructions, deciding nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use testfleet_common::broker;
use testfleet_common::topology::Topology;
use testfleet_types::messages::{Body, ExecutorKind, Heartbeat, Job, RunningTest};
use testfleet_types::now_ms;
use tokio::task::JoinHandle;

/// How often a worker says it is there.
pub const EVERY: Duration = Duration::from_secs(2);

/// The jobs this worker runs now.
#[derive(Debug, Clone, Default)]
pub struct Board {
    running: Arc<Mutex<HashMap<u64, RunningTest>>>,
    next: Arc<AtomicU64>,
}

/// Takes its job off the board when dropped.
pub struct OnBoard {
    board: Board,
    key: u64,
}

impl Board {
    /// Puts `job` on the board until the guard is dropped.
    pub fn running(&self, job: &Job) -> OnBoard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = RunningTest {
            run_id: job.run_id,
            test: job.label(),
            attempt: job.attempt,
            started_at_ms: now_ms(),
        };
        self.lock().insert(key, entry);
        OnBoard {
            board: self.clone(),
            key,
        }
    }

    fn snapshot(&self) -> Vec<RunningTest> {
        let mut running: Vec<RunningTest> = self.lock().values().cloned().collect();
        running.sort_by_key(|job| job.started_at_ms);
        running
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RunningTest>> {
        // A job task that panicked while holding the lock left nothing half
        // done: an insert or a remove.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for OnBoard {
    fn drop(&mut self) {
        self.board.lock().remove(&self.key);
    }
}

/// What a heartbeat says of the worker beside its running jobs.
#[derive(Debug, Clone)]
pub struct Identity {
    pub worker_id: String,
    pub slots: u32,
    pub executors: Vec<ExecutorKind>,
    /// The host its tests run on, and that host's CPUs.
    pub host: String,
    pub cores: u32,
}

/// Sends a heartbeat now and every [`EVERY`] on `channel`, until aborted.
pub fn start(
    channel: Channel,
    topology: Topology,
    identity: Identity,
    board: Board,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            let heartbeat = Body::Heartbeat(Heartbeat {
                worker_id: identity.worker_id.clone(),
                slots: identity.slots,
                executors: identity.executors.clone(),
                running: board.snapshot(),
                at_ms: now_ms(),
                host: identity.host.clone(),
                cores: identity.cores,
            });
            broker::publish_event(&channel, "", &topology.heartbeats, &heartbeat).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_common::config::default_spec as sample_spec;

    #[test]
    fn a_job_is_on_the_board_while_its_guard_lives() {
        let board = Board::default();
        let job = Job::single(uuid::Uuid::nil(), "t".into(), 2, 9, sample_spec());
        let first = board.running(&job);
        let second = board.running(&job);
        assert_eq!(board.snapshot().len(), 2);
        drop(first);
        let left = board.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].test.as_str(), left[0].attempt), ("t", 2));
        drop(second);
        assert!(board.snapshot().is_empty());
    }
}
