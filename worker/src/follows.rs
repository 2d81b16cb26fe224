//! Which runs' queues a worker follows, decided from the notices it gets;
//! pure (the taker opens and closes the channels).
//!
//! Anyone who may publish on the runs exchange can name runs, so a run named
//! only by one-run notices (a producer's) is followed provisionally: at most
//! [`MAX_PROVISIONAL`] such runs, the one named longest ago giving way to a
//! new one. A run the aggregator's whole list names is confirmed, and
//! provisional runs give way to it when the worker follows all it may. A
//! whole list ends the runs it leaves out once their grace is over.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

/// Runs followed at once at most: each has a channel.
pub const MAX_FOLLOWED: usize = 1_000;
/// Runs followed on one-run notices alone, at most.
pub const MAX_PROVISIONAL: usize = 64;

/// The runs followed, each with when a notice last named it and whether the
/// aggregator's whole list did.
#[derive(Debug, Default)]
pub struct Follows {
    runs: HashMap<Uuid, Followed>,
}

#[derive(Debug, Clone, Copy)]
struct Followed {
    named_at_ms: u64,
    confirmed: bool,
}

/// What a notice changes: runs to start following and runs to stop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<Uuid>,
    pub dropped: Vec<Uuid>,
}

impl Follows {
    /// A notice naming `runs` (the aggregator's `whole` list, or a one-run
    /// notice) at `now_ms`; runs a whole list leaves out are dropped once
    /// `grace_ms` passed since a notice named them.
    pub fn notice(&mut self, runs: &[Uuid], whole: bool, now_ms: u64, grace_ms: u64) -> Change {
        let mut change = Change::default();
        for &run in runs {
            if let Some(followed) = self.runs.get_mut(&run) {
                followed.named_at_ms = now_ms;
                followed.confirmed |= whole;
                continue;
            }
            let room = match whole {
                true => self.runs.len() < MAX_FOLLOWED || self.evict_provisional(&mut change),
                false => {
                    let provisional = self.runs.values().filter(|f| !f.confirmed).count();
                    let full = self.runs.len() >= MAX_FOLLOWED || provisional >= MAX_PROVISIONAL;
                    !full || self.evict_provisional(&mut change)
                }
            };
            if !room {
                continue;
            }
            self.runs.insert(
                run,
                Followed {
                    named_at_ms: now_ms,
                    confirmed: whole,
                },
            );
            change.added.push(run);
        }
        if whole {
            let listed: HashSet<&Uuid> = runs.iter().collect();
            let left_out: Vec<Uuid> = self
                .runs
                .iter()
                .filter(|(run, f)| {
                    !listed.contains(run) && now_ms.saturating_sub(f.named_at_ms) > grace_ms
                })
                .map(|(run, _)| *run)
                .collect();
            for run in left_out {
                self.runs.remove(&run);
                change.dropped.push(run);
            }
        }
        change
    }

    /// The run is no longer followed (its deadline passed, its queue is gone).
    pub fn forget(&mut self, run: &Uuid) {
        self.runs.remove(run);
    }

    /// Drops the provisional run named longest ago; false if there is none.
    fn evict_provisional(&mut self, change: &mut Change) -> bool {
        let oldest = self
            .runs
            .iter()
            .filter(|(_, f)| !f.confirmed)
            .min_by_key(|(_, f)| f.named_at_ms)
            .map(|(run, _)| *run);
        match oldest {
            Some(run) => {
                self.runs.remove(&run);
                change.dropped.push(run);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[test]
    fn forged_one_run_notices_cannot_crowd_out_the_aggregators_runs() {
        let mut follows = Follows::default();
        for (at, run) in runs(2_000).into_iter().enumerate() {
            follows.notice(&[run], false, at as u64, 60_000);
        }
        assert_eq!(
            follows.len(),
            MAX_PROVISIONAL,
            "provisional runs are bounded"
        );
        let real = runs(MAX_FOLLOWED);
        let change = follows.notice(&real, true, 3_000, 60_000);
        assert_eq!(
            change.added.len(),
            MAX_FOLLOWED,
            "every listed run followed"
        );
        assert_eq!(follows.len(), MAX_FOLLOWED);
        // Now full of confirmed runs: a one-run notice finds no room.
        let change = follows.notice(&runs(1), false, 3_001, 60_000);
        assert!(change.added.is_empty());
    }

    #[test]
    fn a_whole_list_ends_what_it_leaves_out_after_the_grace() {
        let mut follows = Follows::default();
        let [a, b] = [Uuid::new_v4(), Uuid::new_v4()];
        follows.notice(&[a], false, 0, 60_000);
        follows.notice(&[b], true, 0, 60_000);
        assert!(
            follows
                .notice(&[b], true, 30_000, 60_000)
                .dropped
                .is_empty(),
            "in its grace"
        );
        assert_eq!(follows.notice(&[b], true, 61_000, 60_000).dropped, [a]);
        follows.forget(&b);
        assert!(follows.is_empty());
    }
}
