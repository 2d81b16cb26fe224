//! Warm mode's pool: kept containers of a run, idle between tests.
//!
//! Opt-in (`run.container_mode = "warm"`) for suites of very short tests, whose
//! time would otherwise go mostly to creating and removing containers: each test
//! is an `exec` in a container kept from earlier tests of the same run (see
//! `DockerExecutor::run_warm`). Isolation is weaker than a fresh container per
//! test: a test sees the files and processes earlier tests left there. So a
//! container is replaced after any test that does not pass, after `warm_reuse`
//! tests, and before it could outlive its expiry label (past it, any worker's
//! sweep may remove it, under a running test). Containers idle for
//! [`WARM_IDLE_MAX`] are removed by the worker's sweep tick, and all of them
//! when the worker stops, so a finished run's containers do not linger.
//!
//! A kept container is for its run and its spec alone: the key is the run id
//! and a keyed hash of the whole spec (image, command, environment,
//! confinement), so that a forged job, which may name any run, finds no
//! container made for another spec and cannot exec in it.
//!
//! The pool sits behind a mutex rather than in the service loop: it is touched
//! for a few instructions at a job's start and end, from the job's own task, and
//! decides nothing the loop needs to know; a message round trip per job would
//! cost more than the lock.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testfleet_types::messages::Job;
use uuid::Uuid;

/// A kept container unused for this long is removed.
pub const WARM_IDLE_MAX: Duration = Duration::from_secs(30);

/// Which jobs may use a kept container: those of its run with its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmKey {
    run_id: Uuid,
    /// The spec's hash under this worker's own random key: nobody outside
    /// can aim a different spec at a collision.
    spec: u64,
}

/// A kept container between tests.
#[derive(Debug)]
pub struct Warm {
    pub id: String,
    pub key: WarmKey,
    /// Tests run in it so far.
    pub used: u32,
    /// Its `testfleet.expires` label, Unix ms.
    pub expires_ms: u64,
    idle_since: Instant,
}

impl Warm {
    pub fn new(id: String, key: WarmKey, expires_ms: u64) -> Self {
        Warm {
            id,
            key,
            used: 0,
            expires_ms,
            idle_since: Instant::now(),
        }
    }
}

/// Idle kept containers of every run this worker serves; at most one per slot
/// and run, since a container is out of the pool while a test runs in it.
#[derive(Debug, Clone, Default)]
pub struct WarmPool {
    idle: Arc<Mutex<Vec<Warm>>>,
    hasher: RandomState,
}

impl WarmPool {
    /// The key of the containers `job` may run in.
    pub fn key(&self, job: &Job) -> WarmKey {
        let spec = serde_json::to_vec(&job.spec).expect("a spec always serializes");
        WarmKey {
            run_id: job.run_id,
            spec: self.hasher.hash_one(spec),
        }
    }

    /// An idle container for `key` that stays unexpired until `needed_until_ms`,
    /// and the ids of its containers too close to their expiry to use, which
    /// the caller removes.
    pub fn checkout(&self, key: WarmKey, needed_until_ms: u64) -> (Option<Warm>, Vec<String>) {
        let mut idle = self.idle.lock().expect("warm pool lock");
        let (expired, kept): (Vec<Warm>, Vec<Warm>) = idle
            .drain(..)
            .partition(|w| w.key == key && w.expires_ms <= needed_until_ms);
        *idle = kept;
        let found = idle
            .iter()
            .position(|w| w.key == key)
            .map(|at| idle.swap_remove(at));
        (found, expired.into_iter().map(|w| w.id).collect())
    }

    /// Returns a container after a passed test, for the run's next test.
    pub fn put_back(&self, mut warm: Warm) {
        warm.idle_since = Instant::now();
        self.idle.lock().expect("warm pool lock").push(warm);
    }

    /// Takes out the containers idle for at least `idle_for`, for removal.
    pub fn take_idle(&self, idle_for: Duration) -> Vec<String> {
        let mut idle = self.idle.lock().expect("warm pool lock");
        let (old, kept): (Vec<Warm>, Vec<Warm>) = idle
            .drain(..)
            .partition(|w| w.idle_since.elapsed() >= idle_for);
        *idle = kept;
        old.into_iter().map(|w| w.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_go_to_their_own_run_and_spec_and_never_past_their_expiry() {
        let pool = WarmPool::default();
        let job = Job::single(
            Uuid::new_v4(),
            "t".into(),
            1,
            u64::MAX,
            testfleet_common::config::default_spec(),
        );
        let mut other_run = job.clone();
        other_run.run_id = Uuid::new_v4();
        let mut forged = job.clone();
        forged.spec.container.network = "host".into();
        let key = pool.key(&job);
        assert_eq!(key, pool.key(&job.clone()));
        pool.put_back(Warm::new("fresh".into(), key, 10_000));
        pool.put_back(Warm::new("stale".into(), key, 1_000));
        pool.put_back(Warm::new("theirs".into(), pool.key(&other_run), 10_000));

        let (found, _) = pool.checkout(pool.key(&forged), 5_000);
        assert!(
            found.is_none(),
            "another spec of the same run finds nothing"
        );
        let (found, expired) = pool.checkout(key, 5_000);
        assert_eq!(found.unwrap().id, "fresh");
        assert_eq!(expired, vec!["stale".to_owned()]);
        let (found, expired) = pool.checkout(key, 5_000);
        assert!(found.is_none() && expired.is_empty());

        assert!(pool.take_idle(Duration::from_secs(3600)).is_empty());
        assert_eq!(pool.take_idle(Duration::ZERO), vec!["theirs".to_owned()]);
    }
}
