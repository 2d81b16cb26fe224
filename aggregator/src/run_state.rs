//! One run's bookkeeping: which tests are in the open round, what each attempt
//! did, when the round closes, and what the retry rule decides then.
//!
//! Pure logic, no I/O and no clock: the service passes the time in, so tests (and
//! the journal replay) drive it exactly.

use std::collections::{BTreeMap, HashMap};

use testfleet_common::wire::{
    AttemptReport, AttemptStatus, FinalStatus, Outcome, RunAnnounce, RunReport, TestReport,
    TestResult, VerdictKind,
};

/// How an incoming result relates to what the run already knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new attempt outcome, now counted.
    New,
    /// This (test, attempt) already has an outcome: a redelivery or a re-run.
    Duplicate,
    /// For a round that has closed, or a test the run does not have.
    Stale,
}

/// What closing a round leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundDecision {
    /// Run these tests again as `attempt`.
    Retry {
        attempt: u32,
        tests: Vec<String>,
    },
    Finish(VerdictKind),
}

/// What the retry rule decides from one closed round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRule {
    Retry,
    /// Failures exceed the threshold: not worth retrying.
    TooManyFailures,
    /// Rounds are used up.
    NoRoundsLeft,
    NothingToRetry,
}

/// Applies the retry rule: retry while (failed + missing) / tests ≤ threshold and
/// rounds remain. Infrastructure errors are retried but not counted as failures,
/// since they say nothing about the code under test.
pub fn retry_rule(
    failed_or_missing: usize,
    retryable: usize,
    tests_in_run: usize,
    round: u32,
    threshold: f64,
    max_rounds: u32,
) -> RetryRule {
    if retryable == 0 {
        return RetryRule::NothingToRetry;
    }
    if failed_or_missing as f64 > threshold * tests_in_run as f64 {
        return RetryRule::TooManyFailures;
    }
    if round >= max_rounds {
        return RetryRule::NoRoundsLeft;
    }
    RetryRule::Retry
}

#[derive(Debug, Clone)]
struct Attempt {
    status: AttemptStatus,
    /// The worker's full result, without output when the attempt passed.
    result: Option<TestResult>,
}

/// The state of one run the aggregator follows.
#[derive(Debug)]
pub struct RunState {
    announce: RunAnnounce,
    /// Test id → position in `announce.tests`.
    index: HashMap<String, usize>,
    /// Per test (by position), attempts by number. Boxed: a B-tree leaf holds
    /// room for 11 values, which for an inline `Attempt` cost about 2 KB per
    /// test, most of a 400,000-test run's memory.
    attempts: Vec<BTreeMap<u32, Box<Attempt>>>,
    round: u32,
    /// Positions of the tests run in the open round, ascending (round 1 is
    /// every test; a retry round keeps the order it filters), so membership is
    /// a binary search rather than a scan per result.
    in_round: Vec<usize>,
    /// How many of `in_round` have an outcome for this round.
    settled: usize,
    too_many_failures: bool,
    finished: Option<VerdictKind>,
}

impl RunState {
    pub fn new(announce: RunAnnounce) -> Self {
        let index = announce
            .tests
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let tests = announce.tests.len();
        RunState {
            announce,
            index,
            attempts: vec![BTreeMap::new(); tests],
            round: 1,
            in_round: (0..tests).collect(),
            settled: 0,
            too_many_failures: false,
            finished: None,
        }
    }

    pub fn announce(&self) -> &RunAnnounce {
        &self.announce
    }

    pub fn round(&self) -> u32 {
        self.round
    }

    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// Every test of the open round has an outcome.
    pub fn round_complete(&self) -> bool {
        self.settled == self.in_round.len()
    }

    pub fn deadline_passed(&self, now_ms: u64) -> bool {
        now_ms >= self.announce.deadline_ms
    }

    /// How long the test's latest attempt that ran took, if one did.
    pub fn last_duration_ms(&self, test_id: &str) -> Option<u64> {
        let position = *self.index.get(test_id)?;
        self.attempts[position]
            .values()
            .rev()
            .find_map(|a| a.result.as_ref().map(|r| r.duration_ms))
    }

    /// Counts a worker's result, unless it is a duplicate or stale.
    pub fn record_result(&mut self, mut result: TestResult) -> Recorded {
        if result.outcome == Outcome::Passed {
            result.output = String::new();
        }
        let status = AttemptStatus::Ran(result.outcome);
        self.record(
            &result.test_id.clone(),
            result.attempt,
            status,
            Some(result),
        )
    }

    /// Counts a job the broker dead-lettered after `deliveries` deliveries.
    pub fn record_dead_letter(&mut self, test_id: &str, attempt: u32, deliveries: u32) -> Recorded {
        self.record(
            test_id,
            attempt,
            AttemptStatus::DeadLettered { deliveries },
            None,
        )
    }

    fn record(
        &mut self,
        test_id: &str,
        attempt: u32,
        status: AttemptStatus,
        result: Option<TestResult>,
    ) -> Recorded {
        let Some(&position) = self.index.get(test_id) else {
            return Recorded::Stale;
        };
        if self.attempts[position].contains_key(&attempt) {
            return Recorded::Duplicate;
        }
        if self.finished.is_some()
            || attempt != self.round
            || self.in_round.binary_search(&position).is_err()
        {
            return Recorded::Stale;
        }
        self.attempts[position].insert(attempt, Box::new(Attempt { status, result }));
        self.settled += 1;
        Recorded::New
    }

    /// Closes the open round: tests without an outcome become missing, then the
    /// retry rule decides. Call when the round is complete or the deadline passed.
    pub fn close_round(&mut self, now_ms: u64) -> RoundDecision {
        let round = self.round;
        for &position in &self.in_round {
            self.attempts[position].entry(round).or_insert_with(|| {
                Box::new(Attempt {
                    status: AttemptStatus::Missing,
                    result: None,
                })
            });
        }
        let statuses: Vec<(usize, AttemptStatus)> = self
            .in_round
            .iter()
            .map(|&p| (p, self.attempts[p][&round].status))
            .collect();
        let failed_or_missing = statuses
            .iter()
            .filter(|(_, s)| counts_as_failure(*s))
            .count();
        let retryable: Vec<usize> = statuses
            .iter()
            .filter(|(_, s)| is_retryable(*s))
            .map(|(p, _)| *p)
            .collect();

        if self.deadline_passed(now_ms) {
            return self.finish();
        }
        let policy = &self.announce.spec.retry;
        let rule = retry_rule(
            failed_or_missing,
            retryable.len(),
            self.announce.tests.len(),
            round,
            policy.threshold,
            policy.max_rounds,
        );
        match rule {
            RetryRule::Retry => {
                self.round += 1;
                self.in_round = retryable;
                self.settled = 0;
                RoundDecision::Retry {
                    attempt: self.round,
                    tests: self
                        .in_round
                        .iter()
                        .map(|&p| self.announce.tests[p].clone())
                        .collect(),
                }
            }
            RetryRule::TooManyFailures => {
                self.too_many_failures = true;
                self.finish()
            }
            RetryRule::NoRoundsLeft | RetryRule::NothingToRetry => self.finish(),
        }
    }

    fn finish(&mut self) -> RoundDecision {
        let finals: Vec<FinalStatus> = (0..self.attempts.len())
            .map(|p| self.final_status(p))
            .collect();
        let verdict = if finals.contains(&FinalStatus::Missing) {
            VerdictKind::TestsMissing
        } else if finals.iter().all(|s| s.is_pass()) {
            VerdictKind::Passed
        } else if self.too_many_failures {
            VerdictKind::TooManyFailures
        } else {
            VerdictKind::TestsFailed
        };
        self.finished = Some(verdict);
        RoundDecision::Finish(verdict)
    }

    fn final_status(&self, position: usize) -> FinalStatus {
        let attempts = &self.attempts[position];
        let Some(last) = attempts.values().next_back() else {
            return FinalStatus::Missing;
        };
        match last.status {
            AttemptStatus::Ran(Outcome::Passed) if attempts.len() > 1 => FinalStatus::Flaky,
            AttemptStatus::Ran(Outcome::Passed) => FinalStatus::Passed,
            AttemptStatus::Ran(Outcome::Failed) => FinalStatus::Failed,
            AttemptStatus::Ran(Outcome::TimedOut) => FinalStatus::TimedOut,
            AttemptStatus::Ran(Outcome::Error) => FinalStatus::Error,
            AttemptStatus::Missing => FinalStatus::Missing,
            AttemptStatus::DeadLettered { .. } => FinalStatus::DeadLettered,
        }
    }

    /// The report of a finished run (or of the run so far).
    pub fn report(&self, finished_at_ms: u64) -> RunReport {
        let tests = self
            .announce
            .tests
            .iter()
            .enumerate()
            .map(|(p, id)| TestReport {
                id: id.clone(),
                status: self.final_status(p),
                attempts: self.attempts[p]
                    .iter()
                    .map(|(n, a)| attempt_report(*n, a))
                    .collect(),
            })
            .collect();
        RunReport {
            run_id: self.announce.run_id,
            suite: self.announce.suite.clone(),
            created_at_ms: self.announce.created_at_ms,
            finished_at_ms,
            rounds: self.round,
            verdict: self.finished.unwrap_or(VerdictKind::TestsMissing),
            spec: self.announce.spec.clone(),
            tests,
        }
    }

    /// Each test that ran in `round`, with how that attempt ended (after the
    /// round closed, tests without a result show as missing). Attempts are
    /// numbered by round, so this is the tests with an attempt numbered `round`.
    pub fn round_statuses(&self, round: u32) -> impl Iterator<Item = (&str, AttemptStatus)> {
        self.announce
            .tests
            .iter()
            .zip(&self.attempts)
            .filter_map(move |(id, attempts)| Some((id.as_str(), attempts.get(&round)?.status)))
    }

    /// Counts of attempt outcomes in the open round, for progress logs.
    pub fn progress(&self) -> (usize, usize) {
        (self.settled, self.in_round.len())
    }
}

fn counts_as_failure(status: AttemptStatus) -> bool {
    matches!(
        status,
        AttemptStatus::Ran(Outcome::Failed | Outcome::TimedOut)
            | AttemptStatus::Missing
            | AttemptStatus::DeadLettered { .. }
    )
}

/// Dead-lettered tests are retried too, as fresh messages with a fresh delivery
/// budget: a worker's death uses up a delivery of every job it holds, so a test
/// that shared workers with a poison test is dead-lettered with it, and only
/// running them apart tells which one kills workers. A true poison test thus
/// costs `delivery_limit + 1` worker deaths per round, bounded by `max_rounds`.
fn is_retryable(status: AttemptStatus) -> bool {
    matches!(
        status,
        AttemptStatus::Ran(Outcome::Failed | Outcome::TimedOut | Outcome::Error)
            | AttemptStatus::Missing
            | AttemptStatus::DeadLettered { .. }
    )
}

fn attempt_report(attempt: u32, a: &Attempt) -> AttemptReport {
    let result = a.result.as_ref();
    AttemptReport {
        attempt,
        status: a.status,
        exit_code: result.and_then(|r| r.exit_code),
        duration_ms: result.map_or(0, |r| r.duration_ms),
        worker_id: result.map(|r| r.worker_id.clone()),
        started_at_ms: result.map(|r| r.started_at_ms),
        finished_at_ms: result.map(|r| r.finished_at_ms),
        published_at_ms: result.map(|r| r.published_at_ms),
        output: result
            .filter(|r| r.outcome != Outcome::Passed)
            .map(|r| r.output.clone()),
        output_truncated: result.is_some_and(|r| r.output_truncated),
        message: match a.status {
            AttemptStatus::Missing => {
                Some("did not run: no result before the run's deadline (timeout or drop)".into())
            }
            AttemptStatus::DeadLettered { deliveries } => Some(format!(
                "dead-lettered by the broker after {deliveries} deliveries"
            )),
            AttemptStatus::Ran(_) => result.and_then(|r| r.message.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_common::wire::RetryPolicy;
    use uuid::Uuid;

    const DEADLINE: u64 = 1_000_000;

    fn run(tests: usize, threshold: f64, max_rounds: u32) -> RunState {
        let mut spec = testfleet_common::config::default_spec();
        spec.retry = RetryPolicy {
            threshold,
            max_rounds,
        };
        RunState::new(RunAnnounce {
            run_id: Uuid::nil(),
            suite: "unit".into(),
            created_at_ms: 0,
            deadline_ms: DEADLINE,
            spec,
            tests: (0..tests).map(|i| format!("t{i}")).collect(),
        })
    }

    fn result(test: usize, attempt: u32, outcome: Outcome) -> TestResult {
        TestResult {
            run_id: Uuid::nil(),
            test_id: format!("t{test}"),
            attempt,
            outcome,
            exit_code: Some(i64::from(outcome != Outcome::Passed)),
            duration_ms: 5,
            worker_id: "w".into(),
            started_at_ms: 1,
            finished_at_ms: 6,
            output: "out".into(),
            output_truncated: false,
            message: None,
            published_at_ms: 0,
        }
    }

    /// Records `outcome_of(test)` for every test of the open round.
    fn play_round(state: &mut RunState, outcome_of: impl Fn(usize) -> Outcome) {
        let attempt = state.round();
        let positions = state.in_round.clone();
        for p in positions {
            assert_eq!(
                state.record_result(result(p, attempt, outcome_of(p))),
                Recorded::New
            );
        }
        assert!(state.round_complete());
    }

    #[test]
    fn retry_rule_table() {
        use RetryRule::*;
        // (failed+missing, retryable, tests, round, threshold, max) → rule
        let cases = [
            (0, 0, 10, 1, 0.1, 3, NothingToRetry),
            (1, 1, 10, 1, 0.1, 3, Retry),
            (2, 2, 10, 1, 0.1, 3, TooManyFailures),
            (1, 1, 10, 3, 0.1, 3, NoRoundsLeft),
            (0, 10, 10, 1, 0.1, 3, Retry), // infrastructure errors only: retried
            (5, 5, 10, 1, 0.5, 3, Retry),  // exactly at the threshold
            (1, 1, 10, 1, 0.0, 3, TooManyFailures),
        ];
        for (failed, retryable, tests, round, threshold, max, expected) in cases {
            assert_eq!(
                retry_rule(failed, retryable, tests, round, threshold, max),
                expected,
                "{failed}/{tests} retryable {retryable} round {round}"
            );
        }
    }

    #[test]
    fn round_statuses_list_the_tests_of_that_round_with_missing_ones() {
        let mut state = run(4, 1.0, 3);
        state.record_result(result(0, 1, Outcome::Passed));
        state.record_result(result(1, 1, Outcome::Failed));
        state.record_dead_letter("t2", 1, 5);
        state.close_round(0);
        let first: Vec<_> = state.round_statuses(1).collect();
        assert_eq!(
            first,
            vec![
                ("t0", AttemptStatus::Ran(Outcome::Passed)),
                ("t1", AttemptStatus::Ran(Outcome::Failed)),
                ("t2", AttemptStatus::DeadLettered { deliveries: 5 }),
                ("t3", AttemptStatus::Missing),
            ]
        );
        state.record_result(result(1, 2, Outcome::Passed));
        let second: Vec<_> = state.round_statuses(2).collect();
        assert_eq!(second, vec![("t1", AttemptStatus::Ran(Outcome::Passed))]);
    }

    #[test]
    fn all_passing_finishes_in_one_round() {
        let mut state = run(5, 0.1, 3);
        play_round(&mut state, |_| Outcome::Passed);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::Passed)
        );
        assert!(state
            .report(1)
            .tests
            .iter()
            .all(|t| t.status == FinalStatus::Passed));
    }

    #[test]
    fn a_test_that_fails_then_passes_is_flaky() {
        let mut state = run(10, 0.1, 3);
        play_round(&mut state, |p| {
            if p == 3 {
                Outcome::Failed
            } else {
                Outcome::Passed
            }
        });
        assert_eq!(
            state.close_round(0),
            RoundDecision::Retry {
                attempt: 2,
                tests: vec!["t3".into()]
            }
        );
        play_round(&mut state, |_| Outcome::Passed);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::Passed)
        );
        let report = state.report(1);
        assert_eq!(report.tests[3].status, FinalStatus::Flaky);
        assert_eq!(report.tests[3].attempts.len(), 2);
        assert_eq!(report.tests[3].attempts[0].output.as_deref(), Some("out"));
        assert_eq!(
            report.tests[3].attempts[1].output, None,
            "passing output is not kept"
        );
        assert_eq!(report.rounds, 2);
    }

    #[test]
    fn failures_over_the_threshold_are_not_retried() {
        let mut state = run(10, 0.1, 3);
        play_round(&mut state, |p| {
            if p < 5 {
                Outcome::Failed
            } else {
                Outcome::Passed
            }
        });
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::TooManyFailures)
        );
        assert_eq!(state.report(0).count(FinalStatus::Failed), 5);
    }

    #[test]
    fn a_persistent_failure_uses_every_round_then_fails() {
        let mut state = run(20, 0.1, 3);
        play_round(&mut state, |p| {
            if p == 0 {
                Outcome::Failed
            } else {
                Outcome::Passed
            }
        });
        assert!(matches!(
            state.close_round(0),
            RoundDecision::Retry { attempt: 2, .. }
        ));
        play_round(&mut state, |_| Outcome::TimedOut);
        assert!(matches!(
            state.close_round(0),
            RoundDecision::Retry { attempt: 3, .. }
        ));
        play_round(&mut state, |_| Outcome::Failed);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::TestsFailed)
        );
        assert_eq!(state.report(0).tests[0].attempts.len(), 3);
    }

    #[test]
    fn duplicates_and_stale_results_are_not_counted() {
        let mut state = run(3, 0.5, 3);
        assert_eq!(
            state.record_result(result(0, 1, Outcome::Failed)),
            Recorded::New
        );
        assert_eq!(
            state.record_result(result(0, 1, Outcome::Passed)),
            Recorded::Duplicate
        );
        assert_eq!(
            state.record_result(result(1, 2, Outcome::Passed)),
            Recorded::Stale,
            "future attempt"
        );
        let mut unknown = result(0, 1, Outcome::Passed);
        unknown.test_id = "nope".into();
        assert_eq!(state.record_result(unknown), Recorded::Stale);
        assert_eq!(state.progress(), (1, 3));
        state.record_result(result(1, 1, Outcome::Passed));
        state.record_result(result(2, 1, Outcome::Passed));
        assert!(matches!(
            state.close_round(0),
            RoundDecision::Retry { attempt: 2, .. }
        ));
        assert_eq!(
            state.record_result(result(1, 1, Outcome::Failed)),
            Recorded::Duplicate
        );
        assert_eq!(
            state.record_result(result(1, 2, Outcome::Failed)),
            Recorded::Stale,
            "not in round 2"
        );
    }

    #[test]
    fn the_deadline_makes_the_rest_missing_and_ends_the_run() {
        let mut state = run(4, 1.0, 3);
        state.record_result(result(0, 1, Outcome::Passed));
        state.record_result(result(1, 1, Outcome::Failed));
        assert!(!state.round_complete());
        assert!(state.deadline_passed(DEADLINE));
        assert_eq!(
            state.close_round(DEADLINE),
            RoundDecision::Finish(VerdictKind::TestsMissing)
        );
        let report = state.report(DEADLINE);
        assert_eq!(report.count(FinalStatus::Missing), 2);
        assert_eq!(report.count(FinalStatus::Failed), 1);
        assert!(report.tests[2].attempts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("deadline"));
        assert_eq!(
            state.record_result(result(2, 1, Outcome::Passed)),
            Recorded::Duplicate
        );
    }

    #[test]
    fn a_dead_lettered_job_settles_its_round_and_is_retried_until_rounds_run_out() {
        let mut state = run(10, 0.2, 2);
        assert_eq!(state.record_dead_letter("t0", 1, 5), Recorded::New);
        play_round_rest(&mut state);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Retry {
                attempt: 2,
                tests: vec!["t0".into()]
            }
        );
        assert_eq!(state.record_dead_letter("t0", 2, 5), Recorded::New);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::TestsFailed)
        );
        let report = state.report(0);
        assert_eq!(report.tests[0].status, FinalStatus::DeadLettered);
        assert_eq!(
            report.tests[0].attempts[0].status,
            AttemptStatus::DeadLettered { deliveries: 5 }
        );
    }

    fn play_round_rest(state: &mut RunState) {
        for p in 1..10 {
            state.record_result(result(p, 1, Outcome::Passed));
        }
    }

    #[test]
    fn infrastructure_errors_are_retried_without_counting_as_failures() {
        let mut state = run(4, 0.0, 2);
        play_round(&mut state, |_| Outcome::Error);
        assert!(
            matches!(state.close_round(0), RoundDecision::Retry { attempt: 2, ref tests } if tests.len() == 4)
        );
        play_round(&mut state, |_| Outcome::Error);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::TestsFailed)
        );
        assert_eq!(state.report(0).count(FinalStatus::Error), 4);
    }
}
