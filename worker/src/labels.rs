//! Labels on test containers, and the rule that tells orphans by them (pure:
//! the sweep that lists and removes them is the Docker executor's).
//!
//! A live worker always kills its container at the test's timeout, so a labelled
//! container past `testfleet.expires` belongs to a worker that died: any worker on
//! the same engine may remove it. No coordinator is needed for that rule.
//!
//! A container also names its owner process (`testfleet.owner`: host, pid and the
//! process's start time). A worker on the same host can tell at once that the
//! owner is dead and remove its containers without waiting for the expiry: that
//! is the common case of a worker killed and restarted on one machine.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use testfleet_types::messages::Job;
use testfleet_types::now_ms;

/// Present on every container testfleet creates.
pub const MANAGED: &str = "testfleet";
pub const RUN: &str = "testfleet.run";
pub const TEST: &str = "testfleet.test";
pub const ATTEMPT: &str = "testfleet.attempt";
pub const WORKER: &str = "testfleet.worker";
/// Unix milliseconds after which the container is certainly orphaned.
pub const EXPIRES: &str = "testfleet.expires";
/// `host/pid/start-time` of the worker process that created the container.
pub const OWNER: &str = "testfleet.owner";

/// Time beyond the test's timeout before a container counts as orphaned.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
pub const ORPHAN_GRACE_MS: u64 = ORPHAN_GRACE.as_millis() as u64;
/// Label values are capped; a 10 KB test id is in the command, not the label.
const MAX_LABEL_VALUE: usize = 256;

pub fn for_job(job: &Job, worker_id: &str) -> HashMap<String, String> {
    let expires = expiry(job.timeout_ms());
    let test: String = job.label().chars().take(MAX_LABEL_VALUE).collect();
    HashMap::from([
        (MANAGED.to_owned(), "1".to_owned()),
        (RUN.to_owned(), job.run_id.to_string()),
        (TEST.to_owned(), test),
        (ATTEMPT.to_owned(), job.attempt.to_string()),
        (WORKER.to_owned(), worker_id.to_owned()),
        (EXPIRES.to_owned(), expires.to_string()),
        (OWNER.to_owned(), Owner::current().label()),
    ])
}

/// When a container whose test may take `busy_ms` is certainly orphaned.
/// Saturating: the bounds on a spec keep it far from overflow, and a clock
/// gone wild must not panic a worker.
pub fn expiry(busy_ms: u64) -> u64 {
    now_ms()
        .saturating_add(busy_ms)
        .saturating_add(ORPHAN_GRACE_MS)
}

/// A worker process, as far as another process on its host can check it is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    host: String,
    pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat`): a recycled pid
    /// has another one.
    started: u64,
}

impl Owner {
    fn current() -> &'static Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                host: this_host(),
                pid,
                started: process_start(pid).unwrap_or(0),
            }
        })
    }

    fn label(&self) -> String {
        format!("{}/{}/{}", self.host, self.pid, self.started)
    }

    fn parse(label: &str) -> Option<Owner> {
        let mut parts = label.rsplitn(3, '/');
        let started = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_owned();
        Some(Owner { host, pid, started })
    }

    /// Whether this owner certainly died: it ran on this host and its process is
    /// gone (or the pid now belongs to another process). Owners on other hosts
    /// are never judged dead here: their expiry covers them.
    fn is_dead_here(&self) -> bool {
        self.host == Owner::current().host && process_start(self.pid) != Some(self.started)
    }
}

fn this_host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`, after the parenthesised command name (which
/// may itself contain spaces or parentheses).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Which managed containers a sweep removes.
#[derive(Debug, Clone, Copy)]
pub enum Sweep<'a> {
    /// Past their expiry, or created by a worker process of this host that
    /// died: safe while other workers share the engine.
    Expired,
    /// Also every container of this worker id: at start-up, when a predecessor
    /// with the same id crashed and left its containers behind.
    ExpiredOrOwnedBy(&'a str),
}

/// Whether a container with `labels` is an orphan `sweep` removes.
pub fn is_orphan(labels: &HashMap<String, String>, sweep: Sweep<'_>, now: u64) -> bool {
    let expired = labels
        .get(EXPIRES)
        .and_then(|v| v.parse::<u64>().ok())
        .is_none_or(|expires| expires < now);
    let owner_dead = labels
        .get(OWNER)
        .and_then(|label| Owner::parse(label))
        .is_some_and(|owner| owner.is_dead_here());
    let owned = match sweep {
        Sweep::Expired => false,
        Sweep::ExpiredOrOwnedBy(worker) => labels.get(WORKER).map(String::as_str) == Some(worker),
    };
    expired || owner_dead || owned
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
    fn an_owner_label_round_trips_and_names_a_live_process() {
        let me = Owner::current();
        assert!(me.started > 0, "start time read from /proc");
        assert_eq!(Owner::parse(&me.label()).as_ref(), Some(me));
        assert!(!me.is_dead_here());
    }

    #[test]
    fn containers_of_a_dead_process_on_this_host_are_orphans() {
        let me = Owner::current();
        let recycled_pid = Owner {
            started: me.started + 1,
            ..me.clone()
        };
        let of = |owner: &Owner| {
            let mut labels = labels("other", u64::MAX);
            labels.insert(OWNER.to_owned(), owner.label());
            is_orphan(&labels, Sweep::Expired, 0)
        };
        assert!(of(&recycled_pid), "same pid, another process");
        assert!(!of(me), "a live owner keeps its containers");
        let elsewhere = Owner {
            host: "another-host".into(),
            pid: u32::MAX,
            ..me.clone()
        };
        assert!(!of(&elsewhere), "a process of another host is not judged");
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
