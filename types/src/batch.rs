//! Cutting a run's tests into batches: which tests share a job (and so a
//! container and a runner start), and each batch's timeout.
//!
//! Pure, so that the rules below are tested exactly:
//!
//! - **Too short to split.** When running the whole suite as one batch costs
//!   no more than splitting it would save, `T · (1 − 1/S) ≤ F` (`T` the
//!   expected total, `S` the slots, `F` the fixed cost of a batch), it runs as
//!   one batch.
//! - **With history**, in phases whose batches shrink: phase `j` holds the
//!   fraction `PHASES[j]` of the total time in `S` batches, the listing taken
//!   in its order. Early batches are big (few fixed costs); the last are
//!   small, so that slots that ran ahead take them and the tail ends
//!   together. A phase whose batches would fall under `MIN_BATCH_FIXED_COSTS
//!   × F` is folded into the one before it, so no batch spends much of itself
//!   starting up.
//! - **Neighbours stay together.** A phase's tests are cut into contiguous
//!   runs of the listing of an equal share of its time each, so that a batch
//!   imports and sets up what neighbouring tests share (a file's module, a
//!   folder's data, a lexer's compiled rules) once, as the suite's own run
//!   would, instead of every batch paying for all of it (dealing tests by
//!   length alone made a batch of a quarter of a suite cost half its CPU).
//! - **Long tests first.** A test longer than a batch of the last phase
//!   would end the run late wherever the listing puts it: such tests run in
//!   the first phase, dealt longest first to its lightest batches.
//! - **Without history**, by count, in the same phases, every test weighing
//!   the same.
//! - Tests without history in a run that has some are estimated at the median
//!   of the known ones.
//! - A batch never holds more than `max_tests` tests or `max_ids_bytes` of ids
//!   (argv limits), splitting where needed, and its timeout stays under
//!   `max_job_ms` (the broker's `consumer_timeout`, past which it closes the
//!   channel of a worker still holding the job): its tests' allowances are
//!   scaled down to fit. A batch that then times out has its unreported tests
//!   run again, split, as any batch that ends early.
//! - Within a batch, tests run in the order they were listed: longest first
//!   decides which batch a test joins, not where it runs in it, since a suite
//!   may depend on its own order (one that imports a module before another
//!   checks it is not imported yet).
//!
//! **Timeout of a batch**: `BATCH_STARTUP_MS` plus, for each test, its
//! allowance: `min(timeout, 3 × expected + 2 s)` with history, the per-test
//! timeout without; capped at `limits::MAX_TIMEOUT_MS`. A batch of one test
//! keeps the per-test timeout, as a test alone always had.

use crate::limits::MAX_TIMEOUT_MS;

/// The share of the total expected time each phase holds, in order.
pub const PHASES: [f64; 4] = [0.5, 0.25, 0.15, 0.10];
/// A batch is at least this many fixed costs long (so at most a fifth of it
/// is start-up), or it joins the phase before.
pub const MIN_BATCH_FIXED_COSTS: f64 = 4.0;
/// Time a batch may take beyond its tests' allowances: a container or process
/// start and the runner's start-up and collection (a go package's build).
pub const BATCH_STARTUP_MS: u64 = 30_000;
/// Extra allowance per test with history, beyond three times its expected time.
const ALLOWANCE_SLACK_MS: u64 = 2_000;

/// What the plan depends on besides the tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanParams {
    /// Batches that make the run faster side by side (at least 1): the
    /// fleet's slots, or its cores for a CPU-bound suite.
    pub slots: usize,
    /// Slots that take jobs at once (at least `slots`). When there are more,
    /// the later phases' batches would start at once beside the first ones
    /// and share their CPUs rather than fill in after them: the plan is then
    /// one phase of `slots` batches.
    pub takers: usize,
    /// What a batch costs beyond its tests (container, runner start-up), ms.
    pub fixed_cost_ms: u64,
    /// Tests per batch at most.
    pub max_tests: usize,
    /// Bytes of ids per batch at most (they become argv elements).
    pub max_ids_bytes: usize,
    /// A batch's timeout stays under this (the broker's consumer timeout).
    pub max_job_ms: u64,
    /// The per-test timeout, ms.
    pub timeout_ms: u64,
}

/// One test as the planner sees it: its id and, if known, its usual duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub id: String,
    pub expected_ms: Option<u64>,
}

/// A batch: its tests in running order (the order they were listed, which
/// suites that depend on order expect), each with its timeout allowance, and
/// what it is expected to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub tests: Vec<(String, u64)>,
    pub expected_ms: u64,
}

impl Batch {
    /// The batch's timeout: see the module.
    pub fn timeout_ms(&self, per_test_timeout_ms: u64) -> u64 {
        batch_timeout_ms(self.tests.iter().map(|(_, a)| *a), per_test_timeout_ms)
    }
}

/// A batch's timeout from its tests' allowances (module docs).
pub fn batch_timeout_ms(allowances: impl ExactSizeIterator<Item = u64>, per_test_ms: u64) -> u64 {
    if allowances.len() <= 1 {
        return per_test_ms.min(MAX_TIMEOUT_MS);
    }
    allowances
        .fold(BATCH_STARTUP_MS, u64::saturating_add)
        .min(MAX_TIMEOUT_MS)
}

/// A test's allowance in a batch: module docs.
pub fn allowance_ms(expected_ms: Option<u64>, timeout_ms: u64) -> u64 {
    match expected_ms {
        Some(ms) => ms
            .saturating_mul(3)
            .saturating_add(ALLOWANCE_SLACK_MS)
            .min(timeout_ms),
        None => timeout_ms,
    }
}

/// Cuts `tests` into batches, in the order they should be published.
pub fn plan(tests: Vec<Planned>, params: &PlanParams) -> Vec<Batch> {
    if tests.is_empty() {
        return Vec::new();
    }
    let slots = params.slots.max(1);
    let known: Vec<u64> = tests.iter().filter_map(|t| t.expected_ms).collect();
    let by_count = known.is_empty();
    let median = median(known);
    // Weights: expected ms with history (median for the unknown); 1 each by count.
    let weighed: Vec<Weighed> = tests
        .into_iter()
        .enumerate()
        .map(|(listed, t)| {
            let weight = if by_count {
                1
            } else {
                t.expected_ms.unwrap_or(median).max(1)
            };
            (listed, t, weight)
        })
        .collect();
    let total: u64 = weighed
        .iter()
        .map(|(_, _, w)| *w)
        .fold(0, u64::saturating_add);
    let fixed = if by_count { 0 } else { params.fixed_cost_ms };
    let mut shares = phase_shares(total, slots, fixed, weighed.len());
    if params.takers > slots {
        let count = shares.first().map_or(1, |(_, count)| *count);
        shares = vec![(1.0, count)];
    }
    // A test heavier than a batch of the last phase would end the run late
    // wherever the listing puts it: it runs in the first phase.
    let (last_share, last_count) = *shares.last().expect("at least one phase");
    let tail_batch = total as f64 * last_share / last_count as f64;
    let (long, rest): (Vec<Weighed>, Vec<Weighed>) = weighed
        .into_iter()
        .partition(|(_, _, w)| shares.len() > 1 && *w as f64 > tail_batch);
    let mut batches = Vec::new();
    let mut rest = rest.into_iter().peekable();
    let mut long = Some(long);
    for (phase, (share, count)) in shares.iter().enumerate() {
        let last_phase = phase + 1 == shares.len();
        let budget = (total as f64 * share).ceil() as u64;
        let first = long.take().unwrap_or_default();
        let mut weight: u64 = first
            .iter()
            .map(|(_, _, w)| *w)
            .fold(0, u64::saturating_add);
        let mut taken = Vec::new();
        while let Some((_, _, w)) = rest.peek() {
            if !last_phase && weight >= budget {
                break;
            }
            weight = weight.saturating_add(*w);
            taken.push(rest.next().expect("peeked"));
        }
        batches.extend(fill(first, taken, *count, params));
    }
    batches
}

/// A test as the planner weighs it: its listed position, itself, its weight.
type Weighed = (usize, Planned, u64);

/// Each phase's share of the total and its number of batches (module docs).
fn phase_shares(total: u64, slots: usize, fixed_ms: u64, tests: usize) -> Vec<(f64, usize)> {
    if fixed_ms > 0 && total as f64 * (1.0 - 1.0 / slots as f64) <= fixed_ms as f64 {
        return vec![(1.0, 1)];
    }
    let min_batch = MIN_BATCH_FIXED_COSTS * fixed_ms as f64;
    let mut shares: Vec<(f64, usize)> = Vec::new();
    for &share in &PHASES {
        let per_batch = total as f64 * share / slots as f64;
        match shares.last_mut() {
            Some(last) if per_batch < min_batch => last.0 += share,
            _ => shares.push((share, slots)),
        }
    }
    // Even the first phase's batches are too short: fewer, longer batches.
    if let Some(first) = shares.first_mut() {
        let per_batch = total as f64 * first.0 / first.1 as f64;
        if per_batch < min_batch {
            let batches = (total as f64 * first.0 / min_batch).floor() as usize;
            first.1 = batches.clamp(1, slots);
        }
    }
    // Never more batches than tests.
    let mut left = tests;
    for share in &mut shares {
        share.1 = share.1.min(left).max(1);
        left = left.saturating_sub(share.1);
    }
    shares
}

/// A phase's `count` batches: its `long` tests dealt longest first to the
/// lightest batch, then its other tests, in their listed order, cut into
/// runs that fill each batch up to an equal share of the phase. A batch is
/// then mostly a contiguous run of the listing, so that it imports and sets
/// up what neighbouring tests share (a file's module, a folder's data) once,
/// as the suite's own run would, rather than every batch paying for all of
/// it. Each batch is put back in listed order and split where it is over
/// the argv limits.
fn fill(
    long: Vec<Weighed>,
    contiguous: Vec<Weighed>,
    count: usize,
    params: &PlanParams,
) -> Vec<Batch> {
    if long.is_empty() && contiguous.is_empty() {
        return Vec::new();
    }
    let mut dealt: Vec<(u64, Vec<Weighed>)> = (0..count.max(1)).map(|_| (0, Vec::new())).collect();
    let mut long = long;
    long.sort_by_key(|(_, _, w)| std::cmp::Reverse(*w));
    for test in long {
        let lightest = dealt
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one batch");
        lightest.0 = lightest.0.saturating_add(test.2);
        lightest.1.push(test);
    }
    let phase: u64 = dealt
        .iter()
        .map(|(load, _)| *load)
        .chain(contiguous.iter().map(|(_, _, w)| *w))
        .fold(0, u64::saturating_add);
    let share = phase.div_ceil(dealt.len() as u64);
    let mut next = 0;
    for test in contiguous {
        // The next batch takes over once this one has its share; the last
        // takes what is left.
        while next + 1 < dealt.len() && dealt[next].0 >= share {
            next += 1;
        }
        dealt[next].0 = dealt[next].0.saturating_add(test.2);
        dealt[next].1.push(test);
    }
    let mut batches: Vec<Batch> = dealt
        .into_iter()
        .map(|(expected_ms, mut tests)| {
            tests.sort_by_key(|(listed, _, _)| *listed);
            Batch {
                tests: tests
                    .into_iter()
                    .map(|(_, t, _)| {
                        let allowance = allowance_ms(t.expected_ms, params.timeout_ms);
                        (t.id, allowance)
                    })
                    .collect(),
                expected_ms,
            }
        })
        .collect();
    batches.sort_by_key(|b| std::cmp::Reverse(b.expected_ms));
    batches
        .into_iter()
        .filter(|b| !b.tests.is_empty())
        .flat_map(|b| within_limits(b, params))
        .collect()
}

/// Batches of at most `params.max_tests` tests each, in the listed order,
/// within the other limits too: what a user who chose the size expects.
pub fn by_count(tests: Vec<(String, u64)>, params: &PlanParams) -> Vec<Batch> {
    if tests.is_empty() {
        return Vec::new();
    }
    within_limits(
        Batch {
            tests,
            expected_ms: 0,
        },
        params,
    )
}

/// `batch` split into pieces of at most `max_tests` tests and `max_ids_bytes`
/// of ids, each with a timeout under `max_job_ms`, keeping its order.
fn within_limits(batch: Batch, params: &PlanParams) -> Vec<Batch> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    let mut bytes = 0;
    let per_test = batch.expected_ms / batch.tests.len().max(1) as u64;
    for (id, allowance) in batch.tests {
        let full = piece.len() >= params.max_tests.max(1)
            || (!piece.is_empty() && bytes + id.len() > params.max_ids_bytes);
        if full {
            pieces.push(std::mem::take(&mut piece));
            bytes = 0;
        }
        bytes += id.len();
        piece.push((id, allowance));
    }
    pieces.push(piece);
    pieces
        .into_iter()
        .map(|tests| Batch {
            expected_ms: per_test.saturating_mul(tests.len() as u64),
            tests: fit_allowances(tests, params.max_job_ms),
        })
        .collect()
}

/// A batch's allowances scaled down, in proportion, until its timeout is
/// under `max_job_ms`. A test alone keeps its own (the per-test timeout,
/// which the producer keeps under the broker's consumer timeout anyway).
fn fit_allowances(tests: Vec<(String, u64)>, max_job_ms: u64) -> Vec<(String, u64)> {
    let total: u64 = tests.iter().map(|(_, a)| *a).fold(0, u64::saturating_add);
    let room = max_job_ms.saturating_sub(BATCH_STARTUP_MS + 1);
    if tests.len() <= 1 || total <= room {
        return tests;
    }
    tests
        .into_iter()
        .map(|(id, allowance)| {
            let scaled = u128::from(allowance) * u128::from(room) / u128::from(total);
            (id, (scaled as u64).max(1))
        })
        .collect()
}

fn median(mut known: Vec<u64>) -> u64 {
    if known.is_empty() {
        return 1;
    }
    known.sort_unstable();
    known[known.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(slots: usize, fixed_cost_ms: u64) -> PlanParams {
        PlanParams {
            slots,
            takers: slots,
            fixed_cost_ms,
            max_tests: 10_000,
            max_ids_bytes: 64 << 10,
            max_job_ms: 1_800_000,
            timeout_ms: 300_000,
        }
    }

    fn known(durations: &[u64]) -> Vec<Planned> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &ms)| Planned {
                id: format!("t{i}"),
                expected_ms: Some(ms),
            })
            .collect()
    }

    fn ids(batches: &[Batch]) -> Vec<String> {
        let mut ids: Vec<String> = batches
            .iter()
            .flat_map(|b| b.tests.iter().map(|(id, _)| id.clone()))
            .collect();
        ids.sort();
        ids
    }

    /// Every slot takes the next batch when it is free: the plan's makespan.
    fn makespan(batches: &[Batch], slots: usize, fixed: u64) -> u64 {
        let mut free_at = vec![0u64; slots];
        for batch in batches {
            let slot = (0..slots).min_by_key(|&s| free_at[s]).unwrap();
            free_at[slot] += fixed + batch.expected_ms;
        }
        free_at.into_iter().max().unwrap()
    }

    #[test]
    fn a_suite_too_short_to_split_is_one_batch() {
        // 200 tests of 2 ms: 0.4 s in all, a batch costs 1 s to start.
        let batches = plan(known(&[2; 200]), &params(4, 1_000));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].tests.len(), 200);
    }

    #[test]
    fn every_test_is_in_exactly_one_batch() {
        let durations: Vec<u64> = (0..1000).map(|i| 50 + (i * 7919) % 3000).collect();
        let batches = plan(known(&durations), &params(8, 400));
        let mut expected: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        expected.sort();
        assert_eq!(ids(&batches), expected);
    }

    #[test]
    fn a_heavy_tailed_suite_ends_near_the_bound_with_few_batches() {
        // 1,000 tests of 0.05-3 s, most short, a few long (heavy tail).
        let durations: Vec<u64> = (0..1000u64)
            .map(|i| {
                let u = ((i * 2654435761) % 1000) as f64 / 1000.0;
                (50.0 + 2950.0 * u.powi(4)) as u64
            })
            .collect();
        let slots = 8;
        let fixed = 400;
        let batches = plan(known(&durations), &params(slots, fixed));
        let total: u64 = durations.iter().sum();
        let longest = *durations.iter().max().unwrap();
        let bound = longest.max(total / slots as u64);
        let span = makespan(&batches, slots, fixed);
        assert!(
            (span as f64) <= 1.10 * bound as f64,
            "makespan {span} ms, bound {bound} ms"
        );
        assert!(batches.len() <= slots * 4, "{} batches", batches.len());
    }

    #[test]
    fn a_test_longer_than_a_tail_batch_runs_in_the_first_phase() {
        // The listing ends with a test as long as a tenth of the suite.
        let mut durations = vec![100; 1000];
        durations.push(10_000);
        let slots = 4;
        let batches = plan(known(&durations), &params(slots, 10));
        let first_phase = &batches[..slots];
        assert!(
            first_phase
                .iter()
                .any(|b| b.tests.iter().any(|(id, _)| id == "t1000")),
            "{:?}",
            batches.iter().map(|b| b.tests.len()).collect::<Vec<_>>()
        );
        let span = makespan(&batches, slots, 10);
        let bound = 110_000 / slots as u64;
        assert!(
            span as f64 <= 1.15 * bound as f64,
            "makespan {span}, bound {bound}"
        );
    }

    #[test]
    fn more_takers_than_batches_worth_running_make_one_phase() {
        // A CPU-bound suite on 2 cores and 4 slots: later phases would run
        // beside the first at once, sharing its cores.
        let durations = vec![10; 1000];
        let mut p = params(2, 100);
        p.takers = 4;
        let batches = plan(known(&durations), &p);
        assert_eq!(
            batches.len(),
            2,
            "{:?}",
            batches.iter().map(|b| b.tests.len()).collect::<Vec<_>>()
        );
        assert_eq!(batches[0].tests.len(), 500);
        p.takers = 2;
        assert!(
            plan(known(&durations), &p).len() > 2,
            "phases when slots wait for batches"
        );
    }

    #[test]
    fn a_batch_is_a_run_of_neighbours_in_the_listing() {
        // A suite whose tests share what they set up with their neighbours
        // (a file's module): each batch is one contiguous run of the listing.
        let durations: Vec<u64> = (0..400).map(|i| 10 + i % 7).collect();
        let batches = plan(known(&durations), &params(4, 10));
        assert!(batches.len() > 4, "several phases");
        for batch in &batches {
            let positions: Vec<usize> = batch
                .tests
                .iter()
                .map(|(id, _)| id[1..].parse().unwrap())
                .collect();
            let span = positions.last().unwrap() - positions.first().unwrap() + 1;
            assert_eq!(span, positions.len(), "contiguous: {positions:?}");
        }
    }

    #[test]
    fn without_history_batches_go_by_count_and_shrink() {
        let tests: Vec<Planned> = (0..200)
            .map(|i| Planned {
                id: format!("t{i}"),
                expected_ms: None,
            })
            .collect();
        let batches = plan(tests, &params(4, 1_000));
        assert_eq!(batches.len(), 16, "four phases of four batches");
        let sizes: Vec<usize> = batches.iter().map(|b| b.tests.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.first() > sizes.last(), "{sizes:?}");
        assert!(batches.iter().all(|b| b.timeout_ms(300_000) < 1_800_000));
    }

    #[test]
    fn a_batch_runs_its_tests_in_listed_order() {
        let batches = plan(known(&[5, 900, 10, 700, 20, 800]), &params(2, 10));
        for batch in &batches {
            let positions: Vec<usize> = batch
                .tests
                .iter()
                .map(|(id, _)| id[1..].parse().unwrap())
                .collect();
            let mut sorted = positions.clone();
            sorted.sort();
            assert_eq!(positions, sorted, "{batches:?}");
        }
    }

    #[test]
    fn tests_without_history_weigh_the_median() {
        let mut tests = known(&[10_000, 10_000, 100, 100, 100]);
        tests.push(Planned {
            id: "new".into(),
            expected_ms: None,
        });
        let batches = plan(tests, &params(2, 10));
        assert_eq!(ids(&batches).len(), 6);
    }

    #[test]
    fn argv_limits_split_a_batch() {
        let mut p = params(1, 1_000);
        p.max_tests = 3;
        let batches = plan(known(&[1; 10]), &p);
        assert!(batches.iter().all(|b| b.tests.len() <= 3));
        assert_eq!(ids(&batches).len(), 10);
        p.max_tests = 100;
        p.max_ids_bytes = 6;
        let batches = plan(known(&[1; 10]), &p);
        assert!(batches
            .iter()
            .all(|b| b.tests.iter().map(|(id, _)| id.len()).sum::<usize>() <= 6));
    }

    #[test]
    fn a_batch_never_outlasts_the_brokers_consumer_timeout() {
        let mut p = params(1, 1_000);
        p.max_job_ms = 1_800_000;
        // Without history each test is allowed the whole per-test timeout.
        let tests: Vec<(String, u64)> = (0..20).map(|i| (format!("t{i}"), 300_000)).collect();
        let batches = by_count(tests.clone(), &p);
        assert_eq!(batches.len(), 1, "the count decides the batches");
        assert!(batches[0].timeout_ms(300_000) < 1_800_000);
        assert!(
            batches[0].timeout_ms(300_000) > 1_790_000,
            "as much as fits"
        );
        let planned = plan(
            tests
                .iter()
                .map(|(id, _)| Planned {
                    id: id.clone(),
                    expected_ms: None,
                })
                .collect(),
            &p,
        );
        assert!(planned.iter().all(|b| b.timeout_ms(300_000) < 1_800_000));
        let alone = by_count(vec![("t".into(), 300_000)], &p);
        assert_eq!(
            alone[0].tests[0].1, 300_000,
            "a test alone keeps its timeout"
        );
    }

    #[test]
    fn by_count_keeps_the_listed_order_within_every_limit() {
        let mut p = params(1, 1_000);
        p.max_tests = 4;
        let tests: Vec<(String, u64)> = (0..10).map(|i| (format!("t{i}"), 1_000)).collect();
        let batches = by_count(tests, &p);
        assert_eq!(
            batches.iter().map(|b| b.tests.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(ids(&batches)[..2], ["t0", "t1"]);
        assert!(by_count(Vec::new(), &p).is_empty());
    }

    #[test]
    fn a_batch_timeout_follows_its_allowances() {
        assert_eq!(allowance_ms(Some(1_000), 300_000), 5_000);
        assert_eq!(allowance_ms(Some(200_000), 300_000), 300_000);
        assert_eq!(allowance_ms(None, 300_000), 300_000);
        let batch = Batch {
            tests: vec![("a".into(), 5_000), ("b".into(), 7_000)],
            expected_ms: 3_000,
        };
        assert_eq!(batch.timeout_ms(300_000), BATCH_STARTUP_MS + 12_000);
        let alone = Batch {
            tests: vec![("a".into(), 5_000)],
            expected_ms: 1_000,
        };
        assert_eq!(
            alone.timeout_ms(300_000),
            300_000,
            "a test alone keeps its timeout"
        );
        assert_eq!(
            batch_timeout_ms([u64::MAX, u64::MAX].into_iter(), 1),
            MAX_TIMEOUT_MS
        );
    }
}
