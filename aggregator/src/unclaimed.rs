//! Which runs this aggregator keeps results of without knowing them (in a
//! queue per run, `{p}.results.unclaimed.<run>`, for the aggregator that
//! learns the run): bounded, since one message naming thousands of random
//! run ids would otherwise leave thousands of queues for a week. Each sender
//! (the broker-checked user id of the message) may name at most
//! [`MAX_RUNS_PER_SENDER`] such runs, and all senders [`MAX_RUNS`]; results
//! of more are parked, with the reason. A run leaves the budget when it is
//! claimed, or when its queue expires. Pure; the budget is not journaled (a
//! restarted aggregator starts it afresh).

use std::collections::HashMap;

use uuid::Uuid;

/// Unknown runs kept at once, at most.
pub const MAX_RUNS: usize = 1_000;
/// Unknown runs one sender may have kept at once, at most.
pub const MAX_RUNS_PER_SENDER: usize = 100;

/// The unknown runs kept, each with its sender and since when.
#[derive(Debug, Default)]
pub struct Unclaimed {
    runs: HashMap<Uuid, (String, u64)>,
}

impl Unclaimed {
    /// Whether results of `run_id` from `sender` may be kept at `now_ms`;
    /// keeping the first of a run takes a place in the budget.
    pub fn admit(&mut self, run_id: Uuid, sender: &str, now_ms: u64, expiry_ms: u64) -> bool {
        self.runs
            .retain(|_, (_, since)| now_ms.saturating_sub(*since) < expiry_ms);
        if self.runs.contains_key(&run_id) {
            return true;
        }
        let of_sender = self.runs.values().filter(|(s, _)| s == sender).count();
        if self.runs.len() >= MAX_RUNS || of_sender >= MAX_RUNS_PER_SENDER {
            return false;
        }
        self.runs.insert(run_id, (sender.to_owned(), now_ms));
        true
    }

    /// The run is known now: its kept results are claimed.
    pub fn claimed(&mut self, run_id: &Uuid) {
        self.runs.remove(run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: u64 = 7 * 24 * 3600 * 1000;

    #[test]
    fn one_sender_cannot_make_thousands_of_queues() {
        let mut unclaimed = Unclaimed::default();
        let kept = (0..20_000)
            .filter(|_| unclaimed.admit(Uuid::new_v4(), "forger", 0, WEEK))
            .count();
        assert_eq!(kept, MAX_RUNS_PER_SENDER);
        let others: usize = (0..20)
            .map(|s| {
                (0..200)
                    .filter(|_| unclaimed.admit(Uuid::new_v4(), &format!("w{s}"), 0, WEEK))
                    .count()
            })
            .sum();
        assert_eq!(
            kept + others,
            MAX_RUNS,
            "and all senders no more than the total"
        );
    }

    #[test]
    fn a_kept_run_stays_admitted_until_claimed_or_expired() {
        let mut unclaimed = Unclaimed::default();
        let run = Uuid::new_v4();
        assert!(unclaimed.admit(run, "w", 0, WEEK));
        for _ in 0..MAX_RUNS_PER_SENDER {
            unclaimed.admit(Uuid::new_v4(), "w", 1, WEEK);
        }
        assert!(unclaimed.admit(run, "w", 2, WEEK), "already kept");
        assert!(!unclaimed.admit(Uuid::new_v4(), "w", 2, WEEK), "full");
        unclaimed.claimed(&run);
        assert!(
            unclaimed.admit(Uuid::new_v4(), "w", 3, WEEK),
            "a place freed"
        );
        assert!(
            unclaimed.admit(Uuid::new_v4(), "w", WEEK + 5, WEEK),
            "expired ones go"
        );
    }
}
