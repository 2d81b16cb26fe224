//! Whose turn it is to give a free slot its next job: smooth weighted
//! round-robin between the sources a worker takes from (each run's own
//! queue, and the shared one), skipping those found empty. Pure, so that
//! the rule is tested exactly; `taker.rs` does the taking.
//!
//! Each pick adds every candidate's weight to its credit and gives the turn
//! to the one with the most, which then pays the weights' sum: over any
//! stretch, a source of weight `w` gets `w` turns in each `Σw`, spread out
//! rather than in a row (nginx's smooth weighted round-robin). A source
//! found empty is taken out of the pick as if it had not been offered: the
//! turn goes to the next, and the empty one earns nothing meanwhile, since
//! it wanted nothing.
//!
//! Several turns may be under way at once (the taker has gets in flight
//! for several free slots): a refusal undoes exactly its own pick, so it
//! does not disturb the picks made since.

use std::collections::HashMap;
use std::hash::Hash;

/// The credit of every source ever offered a turn.
#[derive(Debug)]
pub struct Turns<K> {
    credit: HashMap<K, i64>,
}

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Turns {
            credit: HashMap::new(),
        }
    }
}

/// One turn being given: the sources still offered it.
#[derive(Debug)]
pub struct Offer<K> {
    offered: Vec<(K, i64)>,
    /// The source the last `next` picked, whose pick a refusal undoes.
    picked: Option<K>,
}

impl<K: Copy + Eq + Hash> Turns<K> {
    /// A turn for `candidates`, each with its weight (at least 1), in the
    /// order they are given for ties.
    pub fn offer(&self, candidates: &[(K, u32)]) -> Offer<K> {
        Offer {
            offered: candidates
                .iter()
                .map(|&(key, weight)| (key, i64::from(weight.max(1))))
                .collect(),
            picked: None,
        }
    }

    /// Whose turn it is among the sources still offered; `None` when every
    /// one refused. It keeps the turn unless [`Self::refused`] says otherwise.
    pub fn next(&mut self, offer: &mut Offer<K>) -> Option<K> {
        if offer.offered.is_empty() {
            return None;
        }
        let key = self.pick(&offer.offered);
        offer.picked = Some(key);
        Some(key)
    }

    /// The source `next` named took nothing: the turn is as if it had not
    /// been offered to it.
    pub fn refused(&mut self, offer: &mut Offer<K>, key: K) {
        if offer.picked.take() == Some(key) {
            self.unpick(&offer.offered, key);
        }
        offer.offered.retain(|(candidate, _)| *candidate != key);
    }

    /// Forgets sources no longer followed, so the credit stays bounded.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.credit.retain(|key, _| keep(key));
    }

    fn pick(&mut self, offered: &[(K, i64)]) -> K {
        let total: i64 = offered.iter().map(|(_, weight)| weight).sum();
        let mut best: Option<(K, i64)> = None;
        for &(key, weight) in offered {
            let credit = self.credit.entry(key).or_insert(0);
            *credit += weight;
            if best.is_none_or(|(_, most)| *credit > most) {
                best = Some((key, *credit));
            }
        }
        let (key, _) = best.expect("offered is not empty");
        *self.credit.get_mut(&key).expect("credited above") -= total;
        key
    }

    /// The inverse of `pick(offered)` having chosen `key`: credit is only
    /// added to, so it commutes with the picks of other turns made since.
    /// A source forgotten meanwhile stays forgotten.
    fn unpick(&mut self, offered: &[(K, i64)], key: K) {
        let total: i64 = offered.iter().map(|(_, weight)| weight).sum();
        for (candidate, weight) in offered {
            if let Some(credit) = self.credit.get_mut(candidate) {
                *credit -= weight;
            }
        }
        if let Some(credit) = self.credit.get_mut(&key) {
            *credit += total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One turn among `candidates`: the first source in turn that `takes`.
    fn take(
        turns: &mut Turns<char>,
        candidates: &[(char, u32)],
        takes: impl Fn(char) -> bool,
    ) -> Option<char> {
        let mut offer = turns.offer(candidates);
        while let Some(key) = turns.next(&mut offer) {
            if takes(key) {
                return Some(key);
            }
            turns.refused(&mut offer, key);
        }
        None
    }

    /// The keys of `n` turns among `candidates`, every source taking.
    fn turns(turns: &mut Turns<char>, candidates: &[(char, u32)], n: usize) -> String {
        (0..n)
            .map(|_| take(turns, candidates, |_| true).unwrap())
            .collect()
    }

    #[test]
    fn equal_sources_take_turns_one_by_one() {
        let mut t = Turns::default();
        assert_eq!(turns(&mut t, &[('a', 1), ('b', 1)], 6), "ababab");
    }

    #[test]
    fn weights_share_the_turns_and_spread_them() {
        let mut t = Turns::default();
        let seq = turns(&mut t, &[('a', 2), ('b', 1)], 9);
        assert_eq!(seq.matches('a').count(), 6);
        assert_eq!(seq.matches('b').count(), 3);
        assert!(!seq.contains("aaa"), "spread out: {seq}");
    }

    #[test]
    fn an_empty_source_passes_its_turn_and_earns_nothing_meanwhile() {
        let mut t = Turns::default();
        let both = [('a', 1), ('b', 1)];
        // b is empty for four turns: a gets them all.
        let seq: String = (0..4)
            .map(|_| take(&mut t, &both, |k| k == 'a').unwrap())
            .collect();
        assert_eq!(seq, "aaaa");
        // Then b has jobs again: they alternate from there, b not owed
        // the turns it let pass.
        assert_eq!(turns(&mut t, &both, 4), "baba");
    }

    #[test]
    fn a_new_source_gets_a_turn_at_once_beside_a_long_running_one() {
        let mut t = Turns::default();
        turns(&mut t, &[('a', 1)], 1000);
        let seq = turns(&mut t, &[('a', 1), ('n', 1)], 4);
        assert!(seq.starts_with('n') || seq.starts_with("an"), "{seq}");
        assert_eq!(seq.matches('n').count(), 2);
    }

    /// Turns given at once (gets in flight for several slots) share as
    /// turns given one by one do, whatever order their answers come in.
    #[test]
    fn turns_under_way_at_once_share_as_one_by_one() {
        let mut t = Turns::default();
        let candidates = [('a', 2), ('b', 1), ('c', 1)];
        let mut taken = String::new();
        for _ in 0..30 {
            // Three turns at once; c is empty, and says so last.
            let mut offers: Vec<Offer<char>> = (0..3).map(|_| t.offer(&candidates)).collect();
            let picks: Vec<char> = offers.iter_mut().map(|o| t.next(o).unwrap()).collect();
            for (offer, key) in offers.iter_mut().zip(picks).rev() {
                let mut key = key;
                while key == 'c' {
                    t.refused(offer, key);
                    key = t.next(offer).unwrap();
                }
                taken.push(key);
            }
        }
        assert_eq!(taken.matches('a').count(), 60, "{taken}");
        assert_eq!(taken.matches('b').count(), 30, "{taken}");
        assert!(t.credit.values().all(|c| c.abs() <= 8), "{:?}", t.credit);
    }

    #[test]
    fn nobody_taking_ends_the_turn() {
        let mut t = Turns::default();
        assert_eq!(take(&mut t, &[('a', 1), ('b', 3)], |_| false), None);
        assert_eq!(take(&mut t, &[], |_| true), None);
        t.retain(|_| false);
        assert!(t.credit.is_empty());
    }
}
