//! The order a run's jobs are published in: longest first, from past durations.
//!
//! With many tests and few slots, a run ends when its last test does. Starting
//! the long tests first leaves the short ones to fill the gaps at the end, instead
//! of one long test starting last and running alone while every other slot idles.
//! Pure logic: the producer (first round) and the aggregator (retries) share it.

/// Orders `tests` by estimated duration, longest first.
///
/// `known` gives a test's past duration if it has one. A test without one is
/// estimated at the median of the known durations of `tests`; when none of them is
/// known the order is left as it was. Ties keep their original order.
pub fn longest_first(tests: Vec<String>, known: impl Fn(&str) -> Option<u64>) -> Vec<String> {
    let estimates: Vec<Option<u64>> = tests.iter().map(|t| known(t)).collect();
    let mut durations: Vec<u64> = estimates.iter().flatten().copied().collect();
    let Some(fallback) = median(&mut durations) else {
        return tests;
    };
    let mut keyed: Vec<(u64, String)> = estimates
        .into_iter()
        .map(|e| e.unwrap_or(fallback))
        .zip(tests)
        .collect();
    // A stable sort: equal estimates (e.g. every unknown test) keep arrival order.
    keyed.sort_by_key(|(estimate, _)| std::cmp::Reverse(*estimate));
    keyed.into_iter().map(|(_, test)| test).collect()
}

/// The median (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        values[mid - 1] / 2 + values[mid] / 2 + (values[mid - 1] % 2 + values[mid] % 2) / 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn order(tests: &[&str], known: &[(&str, u64)]) -> Vec<String> {
        let known: HashMap<&str, u64> = known.iter().copied().collect();
        longest_first(ids(tests), |t| known.get(t).copied())
    }

    #[test]
    fn known_tests_go_longest_first() {
        assert_eq!(
            order(&["a", "b", "c"], &[("a", 10), ("b", 300), ("c", 20)]),
            ids(&["b", "c", "a"])
        );
    }

    #[test]
    fn unknown_tests_go_by_the_median_of_the_known() {
        // Known: 100, 200, 900 → median 200; `new` ties with `mid` and, coming
        // after it in arrival order, stays after it.
        assert_eq!(
            order(
                &["short", "mid", "new", "long"],
                &[("short", 100), ("mid", 200), ("long", 900)]
            ),
            ids(&["long", "mid", "new", "short"])
        );
        // Even count: median of 100 and 300 is 200, above `a` and below `c`.
        assert_eq!(
            order(&["a", "x", "c"], &[("a", 100), ("c", 300)]),
            ids(&["c", "x", "a"])
        );
    }

    #[test]
    fn without_any_history_the_order_is_kept() {
        assert_eq!(order(&["z", "a", "m"], &[]), ids(&["z", "a", "m"]));
        assert_eq!(
            order(&["z", "a"], &[("elsewhere", 5)]),
            ids(&["z", "a"]),
            "history of tests outside the run does not count"
        );
    }

    #[test]
    fn median_of_odd_even_and_huge_values() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [7]), Some(7));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut [u64::MAX, u64::MAX]), Some(u64::MAX));
        assert_eq!(median(&mut [3, 4]), Some(3));
    }
}
