//! The fleet as its workers' heartbeats describe it, for the history answer
//! a producer plans its batches with: how many test slots it has, and how
//! many cores within them (workers on one host share its CPUs, so each host
//! counts once, at most its slots). Information like the heartbeats: a
//! worker silent for [`SILENCE_MS`] is forgotten, and nothing but a plan's
//! size depends on it. Pure; the loop feeds it.

use std::collections::HashMap;

use testfleet_types::messages::{Capacity, Heartbeat};

/// A worker not heard from for this long is gone (heartbeats every 2 s).
pub const SILENCE_MS: u64 = 10_000;
/// Workers followed at most: anyone who can publish heartbeats could name
/// millions.
pub const MAX_WORKERS: usize = 10_000;

/// Each worker's last heartbeat, as far as capacity goes.
#[derive(Debug, Default)]
pub struct Fleet {
    workers: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    host: String,
    cores: u32,
    slots: u32,
    at_ms: u64,
}

impl Fleet {
    pub fn heartbeat(&mut self, beat: &Heartbeat, now_ms: u64) {
        self.forget_silent(now_ms);
        if self.workers.len() >= MAX_WORKERS && !self.workers.contains_key(&beat.worker_id) {
            return;
        }
        let host = if beat.host.is_empty() {
            // A worker that cannot name its host is a host of its own.
            format!("worker:{}", beat.worker_id)
        } else {
            beat.host.clone()
        };
        self.workers.insert(
            beat.worker_id.clone(),
            Seen {
                host,
                cores: beat.cores,
                slots: beat.slots,
                at_ms: now_ms,
            },
        );
    }

    /// The fleet's slots and the cores within them, if any worker was heard
    /// from lately. A host of unknown cores counts its slots as cores.
    pub fn capacity(&mut self, now_ms: u64) -> Option<Capacity> {
        self.forget_silent(now_ms);
        if self.workers.is_empty() {
            return None;
        }
        let mut hosts: HashMap<&str, (u32, u32)> = HashMap::new();
        for seen in self.workers.values() {
            let (slots, cores) = hosts.entry(&seen.host).or_default();
            *slots = slots.saturating_add(seen.slots);
            *cores = (*cores).max(seen.cores);
        }
        let slots = hosts.values().map(|(s, _)| *s).fold(0, u32::saturating_add);
        let cores = hosts
            .values()
            .map(|&(slots, cores)| if cores == 0 { slots } else { cores.min(slots) })
            .fold(0, u32::saturating_add);
        Some(Capacity { slots, cores })
    }

    fn forget_silent(&mut self, now_ms: u64) {
        self.workers
            .retain(|_, seen| now_ms.saturating_sub(seen.at_ms) < SILENCE_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(worker: &str, host: &str, cores: u32, slots: u32) -> Heartbeat {
        Heartbeat {
            worker_id: worker.into(),
            slots,
            executors: Vec::new(),
            running: Vec::new(),
            at_ms: 0,
            host: host.into(),
            cores,
        }
    }

    #[test]
    fn workers_of_one_host_share_its_cores() {
        let mut fleet = Fleet::default();
        assert_eq!(fleet.capacity(0), None, "no worker heard from");
        // Two workers of 2 slots on one 2-core engine, one of 4 on an 8-core one.
        fleet.heartbeat(&beat("a", "engine-1", 2, 2), 0);
        fleet.heartbeat(&beat("b", "engine-1", 2, 2), 0);
        fleet.heartbeat(&beat("c", "engine-2", 8, 4), 0);
        assert_eq!(fleet.capacity(1_000), Some(Capacity { slots: 8, cores: 6 }));
    }

    #[test]
    fn a_worker_of_unknown_host_or_cores_counts_its_slots() {
        let mut fleet = Fleet::default();
        fleet.heartbeat(&beat("a", "", 0, 3), 0);
        fleet.heartbeat(&beat("b", "", 0, 2), 0);
        assert_eq!(fleet.capacity(0), Some(Capacity { slots: 5, cores: 5 }));
    }

    #[test]
    fn a_silent_worker_is_forgotten() {
        let mut fleet = Fleet::default();
        fleet.heartbeat(&beat("a", "h", 2, 2), 0);
        fleet.heartbeat(&beat("b", "h2", 2, 2), 5_000);
        assert_eq!(
            fleet.capacity(SILENCE_MS + 1),
            Some(Capacity { slots: 2, cores: 2 })
        );
        assert_eq!(fleet.capacity(5_000 + SILENCE_MS), None);
    }
}
