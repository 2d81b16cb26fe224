//! One run's bookkeeping: which tests are in the open round, what each attempt
//! did, when the round closes, and what the retry rule decides then.
//!
//! Pure logic, no I/O and no clock: the service passes the time in, so tests (and
//! the journal replay) drive it exactly.
//!
//! Memory grows with the run, so each test costs as little as it can: its id is
//! stored once (the index holds positions, not copies), an attempt is a fixed
//! record with the worker as a number, and output is kept only for attempts
//! that did not pass. `examples/memory_probe.rs` shows the figures.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;
use testfleet_types::limits::MAX_RUN_MS;
use testfleet_types::messages::{
    AttemptReport, AttemptStatus, BatchRecord, CompareClass, ComparedTest, Comparison, FinalStatus,
    IgnoredReason, IgnoredResult, Outcome, RunAnnounce, RunReport, RuntimeReason, SideTally,
    TestReport, TestResult, VerdictKind,
};
use testfleet_types::sides::{self, Side};
use testfleet_types::triage::Signatures;
use testfleet_types::vocabulary::{classify, confirmed, confirmed_against_record};
use uuid::Uuid;

use crate::dashboard::model::{ComparedProgress, RunProgress, MAX_REGRESSIONS_SHOWN};

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

/// One attempt as the run keeps it: a fixed record, with what only a failing
/// attempt needs boxed apart.
#[derive(Debug, Clone)]
struct Attempt {
    number: u32,
    status: AttemptStatus,
    /// What the worker reported; `None` for a missing or dead-lettered attempt.
    ran: Option<Ran>,
}

#[derive(Debug, Clone)]
struct Ran {
    /// Index into `RunState::workers`.
    worker: u32,
    exit_code: Option<i64>,
    duration_ms: u64,
    started_at_ms: u64,
    finished_at_ms: u64,
    published_at_ms: u64,
    /// The batch it ran in, if any (`RunState::batches`).
    batch: Option<Uuid>,
    reason: Option<RuntimeReason>,
    /// The signature rule its output matched (`RunState::signatures`).
    signature: Option<u16>,
    /// Output (dropped when the attempt passed) and the worker's message; most
    /// attempts pass without a message, so this is usually `None`.
    detail: Option<Box<Detail>>,
}

#[derive(Debug, Clone)]
struct Detail {
    output: Option<String>,
    output_truncated: bool,
    message: Option<String>,
}

/// A test's attempts in order of number; one fits inline, which is what most
/// tests of a big run ever have.
type Attempts = SmallVec<[Attempt; 1]>;

/// The state of one run the aggregator follows.
#[derive(Debug)]
pub struct RunState {
    announce: RunAnnounce,
    /// Positions in `announce.tests`, found by hashing the id they point at.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Names of the workers that sent results, each once, the first
    /// [`MAX_WORKERS_PER_RUN`] (any more share one name).
    workers: Vec<String>,
    /// Positions in `workers`, found by hashing the name they point at.
    worker_index: HashTable<u32>,
    /// Tests the announcement quarantines, by position (sorted), with the
    /// time their entry expires: their failures cost no retry budget.
    quarantined: Vec<(u32, u64)>,
    /// The round whose unsettled tests a resume queued again, if one did:
    /// a second resume of that round queues nothing twice.
    requeued_round: Option<u32>,
    /// Per test (by position), its attempts in ascending number.
    attempts: Vec<Attempts>,
    round: u32,
    /// Positions of the tests run in the open round, ascending (round 1 is
    /// every test; a retry round keeps the order it filters), so membership is
    /// a binary search rather than a scan per result.
    in_round: Vec<u32>,
    /// How many of `in_round` have an outcome for this round.
    settled: usize,
    too_many_failures: bool,
    finished: Option<VerdictKind>,
    /// Results not counted, the first [`MAX_IGNORED_KEPT`].
    ignored: Vec<IgnoredResult>,
    /// The batches its tests ran in, the first [`MAX_BATCHES_KEPT`].
    batches: Vec<BatchRecord>,
    /// Their ids, to keep a record delivered twice once.
    batch_ids: std::collections::HashSet<Uuid>,
    /// Bytes of their logs kept.
    batch_log_bytes: usize,
    /// Tokens of producers that resumed the run (`--resume`), which its
    /// verdict carries beside the announcement's, the last
    /// [`MAX_RESUME_TOKENS`].
    resume_tokens: Vec<Uuid>,
    /// The announcement's log-signature rules, compiled.
    signatures: Signatures,
    /// An A/B run's other side of each test, by position (`base::X` ↔
    /// `cand::X`); empty for any other run.
    pairs: Vec<u32>,
    /// An A/B run's regressions as of its last round's close, for the
    /// dashboard (computed once a round, not per snapshot).
    compared: Option<ComparedProgress>,
}

/// Workers a run names in its report, at most: results from more (a huge
/// fleet, or forged names) are attributed to [`MORE_WORKERS`].
pub const MAX_WORKERS_PER_RUN: usize = 65_536;
/// The name results past [`MAX_WORKERS_PER_RUN`] workers are attributed to.
pub const MORE_WORKERS: &str = "<more workers>";

/// Producers that resumed a run whose tokens its verdict carries, at most.
pub const MAX_RESUME_TOKENS: usize = 8;

/// Batch records a run keeps for its report, at most.
pub const MAX_BATCHES_KEPT: usize = 100_000;
/// Bytes of batch logs a run keeps, at most: each failing test keeps its own
/// output besides, so past this a batch's record keeps no log.
pub const MAX_BATCH_LOG_BYTES: usize = 256 << 20;

/// Ignored results a run keeps for its report, at most.
pub const MAX_IGNORED_KEPT: usize = 1_000;

impl RunState {
    /// An id announced twice counts once (the producer drops duplicates; an
    /// announcement from elsewhere must not leave a position that no result
    /// can fill, which would hold the round open until the deadline). Panics if
    /// the run has more than `u32::MAX` tests (the producer caps runs far below
    /// that).
    pub fn new(mut announce: RunAnnounce) -> Self {
        let hasher = DefaultHashBuilder::default();
        let listed = std::mem::take(&mut announce.tests);
        let mut index = HashTable::with_capacity(listed.len());
        let mut ids: Vec<String> = Vec::with_capacity(listed.len());
        for id in listed {
            let hash = hasher.hash_one(&id);
            if index.find(hash, |&p: &u32| ids[p as usize] == id).is_some() {
                continue;
            }
            let position = u32::try_from(ids.len()).expect("fewer than 2^32 tests");
            index.insert_unique(hash, position, |&p| hasher.hash_one(&ids[p as usize]));
            ids.push(id);
        }
        announce.tests = ids;
        let tests = announce.tests.len();
        let positions = tests as u32;
        let mut state = RunState {
            announce,
            index,
            hasher,
            workers: Vec::new(),
            worker_index: HashTable::new(),
            quarantined: Vec::new(),
            requeued_round: None,
            attempts: vec![Attempts::new(); tests],
            round: 1,
            in_round: (0..positions).collect(),
            settled: 0,
            too_many_failures: false,
            finished: None,
            ignored: Vec::new(),
            batches: Vec::new(),
            batch_ids: std::collections::HashSet::new(),
            batch_log_bytes: 0,
            resume_tokens: Vec::new(),
            signatures: Signatures::default(),
            pairs: Vec::new(),
            compared: None,
        };
        state.signatures = Signatures::new(&state.announce.signatures);
        if state.announce.ab.is_some() {
            state.pairs = state.pair_positions();
            state.take_recorded_baseline();
        }
        state.quarantined = state.quarantined_positions();
        state
    }

    /// The announcement's quarantine entries as positions (tests the run
    /// does not have left out), each once with its latest expiry.
    fn quarantined_positions(&self) -> Vec<(u32, u64)> {
        let mut quarantined: Vec<(u32, u64)> = self
            .announce
            .quarantine
            .iter()
            .filter_map(|q| Some((self.position(&q.test_id)? as u32, q.expires_ms)))
            .collect();
        quarantined.sort_unstable();
        // Sorted by position then expiry: the last of each position expires latest.
        quarantined.reverse();
        quarantined.dedup_by_key(|(position, _)| *position);
        quarantined.reverse();
        quarantined
    }

    /// Each position's other side (an A/B announcement is checked paired
    /// on arrival; a test left unpaired is its own pair, and compares as
    /// infra).
    fn pair_positions(&self) -> Vec<u32> {
        (0..self.announce.tests.len())
            .map(|p| {
                let other = sides::split(&self.announce.tests[p])
                    .and_then(|(side, plain)| self.position(&sides::side_id(side.other(), plain)));
                other.unwrap_or(p) as u32
            })
            .collect()
    }

    /// Whether the test at `position` is quarantined at `now_ms`.
    fn quarantined_at(&self, position: u32, now_ms: u64) -> bool {
        match self
            .quarantined
            .binary_search_by_key(&position, |(p, _)| *p)
        {
            Ok(found) => self.quarantined[found].1 > now_ms,
            Err(_) => false,
        }
    }

    /// The test's position in the run.
    fn position(&self, test_id: &str) -> Option<usize> {
        let ids = &self.announce.tests;
        self.index
            .find(self.hasher.hash_one(test_id), |&p| {
                ids[p as usize] == test_id
            })
            .map(|&p| p as usize)
    }

    /// The worker's number, adding it the first time (past
    /// [`MAX_WORKERS_PER_RUN`], the number of [`MORE_WORKERS`]).
    fn worker_number(&mut self, worker_id: &str) -> u32 {
        let workers = &self.workers;
        let hash = self.hasher.hash_one(worker_id);
        if let Some(&number) = self
            .worker_index
            .find(hash, |&n| workers[n as usize] == worker_id)
        {
            return number;
        }
        if self.workers.len() >= MAX_WORKERS_PER_RUN {
            let more = self.hasher.hash_one(MORE_WORKERS);
            if let Some(&number) = self
                .worker_index
                .find(more, |&n| self.workers[n as usize] == MORE_WORKERS)
            {
                return number;
            }
            return self.add_worker(MORE_WORKERS);
        }
        self.add_worker(worker_id)
    }

    fn add_worker(&mut self, name: &str) -> u32 {
        let number = self.workers.len() as u32;
        self.workers.push(name.to_owned());
        let (workers, hasher) = (&self.workers, &self.hasher);
        self.worker_index
            .insert_unique(hasher.hash_one(name), number, |&n| {
                hasher.hash_one(&workers[n as usize])
            });
        number
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

    /// Tests of the open round without an outcome yet, in run order: what a
    /// resumed run queues again (its jobs may have been lost).
    pub fn unsettled(&self) -> Vec<String> {
        if self.finished.is_some() {
            return Vec::new();
        }
        self.in_round
            .iter()
            .filter(|&&p| self.attempt_in(p as usize, self.round).is_none())
            .map(|&p| self.announce.tests[p as usize].clone())
            .collect()
    }

    /// A producer resumed the run: its deadline moves to `deadline_ms` (never
    /// earlier, and never past the run's 30 days), and its verdict also
    /// carries `token`. Returns the open round's tests to queue again (their
    /// jobs may be lost), none if a resume already queued this round's.
    pub fn resume(&mut self, deadline_ms: u64, token: Option<Uuid>) -> Vec<String> {
        let longest = self.announce.created_at_ms.saturating_add(MAX_RUN_MS);
        self.announce.deadline_ms = self.announce.deadline_ms.max(deadline_ms.min(longest));
        if let Some(token) = token {
            if self.resume_tokens.len() == MAX_RESUME_TOKENS {
                self.resume_tokens.remove(0);
            }
            self.resume_tokens.push(token);
        }
        if self.requeued_round == Some(self.round) {
            return Vec::new();
        }
        self.requeued_round = Some(self.round);
        self.unsettled()
    }

    /// The tokens the run's verdict carries: the announcement's, and those of
    /// producers that resumed it.
    pub fn verdict_tokens(&self) -> Vec<Uuid> {
        self.announce
            .verdict_token
            .into_iter()
            .chain(self.resume_tokens.iter().copied())
            .collect()
    }

    /// How long the test's latest attempt that ran took, if one did.
    pub fn last_duration_ms(&self, test_id: &str) -> Option<u64> {
        self.attempts[self.position(test_id)?]
            .iter()
            .rev()
            .find_map(|a| a.ran.as_ref().map(|r| r.duration_ms))
    }

    /// Counts a worker's result, unless it is a duplicate or stale (which is
    /// kept among the ignored results, up to [`MAX_IGNORED_KEPT`]).
    pub fn record_result(&mut self, result: TestResult) -> Recorded {
        let signature = self.signature_of(&result);
        // A failure the rules call the fleet's is the fleet's error.
        let outcome = match signature.and_then(|s| self.signatures.get(s)) {
            Some(rule) if rule.fleet_fault && result.outcome == Outcome::Failed => Outcome::Error,
            _ => result.outcome,
        };
        let status = AttemptStatus::Ran(outcome);
        // An A/B run's confirmations are of ids whose sides differ: their
        // passing output is kept too, so a regression shows what the
        // baseline printed beside the candidate's failure.
        let keep_output =
            result.outcome != Outcome::Passed || (self.announce.ab.is_some() && result.attempt > 1);
        let detail = (keep_output || result.message.is_some()).then(|| {
            Box::new(Detail {
                output: keep_output.then_some(result.output),
                output_truncated: result.output_truncated,
                message: result.message,
            })
        });
        let ran = Ran {
            worker: self.worker_number(&result.worker_id),
            exit_code: result.exit_code,
            duration_ms: result.duration_ms,
            started_at_ms: result.started_at_ms,
            finished_at_ms: result.finished_at_ms,
            published_at_ms: result.published_at_ms,
            batch: result.batch,
            reason: result.reason,
            signature,
            detail,
        };
        let recorded = self.record(&result.test_id, result.attempt, status, Some(ran));
        let reason = match recorded {
            Recorded::New => return recorded,
            Recorded::Duplicate => IgnoredReason::Duplicate,
            Recorded::Stale => IgnoredReason::Stale,
        };
        if self.ignored.len() < MAX_IGNORED_KEPT {
            self.ignored.push(IgnoredResult {
                test_id: result.test_id,
                attempt: result.attempt,
                worker_id: result.worker_id,
                started_at_ms: result.started_at_ms,
                finished_at_ms: result.finished_at_ms,
                reason,
            });
        }
        recorded
    }

    /// The signature rule a result's output (or message) matches, when the
    /// rules name its failure: what the runtime saw of memory or time comes
    /// first (`vocabulary::reason_of`).
    fn signature_of(&self, result: &TestResult) -> Option<u16> {
        let runtime_named = matches!(
            result.reason,
            Some(
                RuntimeReason::Oom
                    | RuntimeReason::HostOom
                    | RuntimeReason::Timeout
                    | RuntimeReason::NoOutputTimeout
            )
        );
        if matches!(result.outcome, Outcome::Passed | Outcome::TimedOut) || runtime_named {
            return None;
        }
        self.signatures.first_match(&result.output).or_else(|| {
            let message = result.message.as_deref()?;
            self.signatures.first_match(message)
        })
    }

    /// Keeps a batch's record for the report (a redelivered record, same id,
    /// once). `false` when it was known already or the run keeps no more.
    pub fn record_batch(&mut self, mut batch: BatchRecord) -> bool {
        if self.batches.len() >= MAX_BATCHES_KEPT || !self.batch_ids.insert(batch.id) {
            return false;
        }
        let log_bytes = batch.log.as_ref().map_or(0, String::len);
        if self.batch_log_bytes.saturating_add(log_bytes) > MAX_BATCH_LOG_BYTES {
            batch.log = None;
        } else {
            self.batch_log_bytes += log_bytes;
        }
        self.batches.push(batch);
        true
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
        ran: Option<Ran>,
    ) -> Recorded {
        let Some(position) = self.position(test_id) else {
            return Recorded::Stale;
        };
        if self.attempts[position].iter().any(|a| a.number == attempt) {
            return Recorded::Duplicate;
        }
        if self.finished.is_some()
            || attempt != self.round
            || self.in_round.binary_search(&(position as u32)).is_err()
        {
            return Recorded::Stale;
        }
        // Only the open round's attempt is new, and it has the highest number
        // yet: pushing keeps the attempts in order.
        self.attempts[position].push(Attempt {
            number: attempt,
            status,
            ran,
        });
        self.settled += 1;
        Recorded::New
    }

    /// The test's attempt numbered `round`, if it has one.
    fn attempt_in(&self, position: usize, round: u32) -> Option<&Attempt> {
        self.attempts[position].iter().find(|a| a.number == round)
    }

    /// Closes the open round: tests without an outcome become missing, then the
    /// retry rule decides. Call when the round is complete or the deadline passed.
    pub fn close_round(&mut self, now_ms: u64) -> RoundDecision {
        let round = self.round;
        self.fill_missing();
        if self.announce.ab.is_some() {
            return self.close_round_compared(now_ms);
        }
        let statuses: Vec<(u32, AttemptStatus)> = self
            .in_round
            .iter()
            .map(|&p| {
                let attempt = self.attempt_in(p as usize, round).expect("filled above");
                (p, attempt.status)
            })
            .collect();
        // A quarantined test is still retried (its flakiness is why it is
        // watched), but its failures fail nothing and so cost no budget.
        let failed_or_missing = statuses
            .iter()
            .filter(|(p, s)| s.counts_as_failure() && !self.quarantined_at(*p, now_ms))
            .count();
        let retryable: Vec<u32> = statuses
            .iter()
            .filter(|(_, s)| s.is_retried())
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
                        .map(|&p| self.announce.tests[p as usize].clone())
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

    /// Gives each test of the open round without an outcome a missing attempt.
    fn fill_missing(&mut self) {
        let round = self.round;
        for &position in &self.in_round {
            let attempts = &mut self.attempts[position as usize];
            if !attempts.iter().any(|a| a.number == round) {
                attempts.push(Attempt {
                    number: round,
                    status: AttemptStatus::Missing,
                    ran: None,
                });
            }
        }
    }

    /// An A/B run's round closing: each id whose sides differ runs again
    /// on both sides until each has `confirm` more attempts, or a side
    /// disagrees with itself (flaky: one extra round, not `confirm`); a side
    /// with nothing decisive (the fleet's errors, missing) is retried while
    /// such retries stay under the threshold. Confirmation is what the run
    /// is for, so the threshold never stops it.
    fn close_round_compared(&mut self, now_ms: u64) -> RoundDecision {
        if self.deadline_passed(now_ms) {
            return self.finish_compared();
        }
        let confirm = self.announce.ab.as_ref().map_or(0, |ab| ab.confirm);
        let (mut confirming, mut infra) = (Vec::new(), Vec::new());
        let mut ids_confirming = 0;
        for (base, cand) in self.pairs_in_round() {
            let (b, c) = (self.tally(base), self.tally(cand));
            let class = classify(b, c);
            let before = confirming.len();
            for (position, tally) in [(base, b), (cand, c)] {
                if !self.is_run(position) {
                    continue;
                }
                if class == CompareClass::Infra && tally.decisive() == 0 {
                    infra.push(position);
                } else if class.differs() && tally.decisive() <= confirm {
                    confirming.push(position);
                }
            }
            ids_confirming += u32::from(confirming.len() > before);
        }
        let policy = &self.announce.spec.retry;
        if infra.len() as f64 > policy.threshold * self.announce.tests.len() as f64 {
            infra.clear();
        }
        self.compared = Some(self.compared_progress(ids_confirming));
        let mut next = confirming;
        next.append(&mut infra);
        if next.is_empty() || self.round >= policy.max_rounds {
            return self.finish_compared();
        }
        next.sort_unstable();
        next.dedup();
        self.round += 1;
        self.in_round = next;
        self.settled = 0;
        RoundDecision::Retry {
            attempt: self.round,
            tests: self
                .in_round
                .iter()
                .map(|&p| self.announce.tests[p as usize].clone())
                .collect(),
        }
    }

    /// A `--compare` run's baseline side is the earlier run's attempts,
    /// never run: its tests start with them and only the candidate's are
    /// in the first round.
    fn take_recorded_baseline(&mut self) {
        let Some(recorded) = self
            .announce
            .ab
            .as_ref()
            .and_then(|ab| ab.recorded.as_ref())
        else {
            return;
        };
        let mut earlier = recorded.outcomes.iter();
        let mut run = Vec::with_capacity(self.announce.tests.len() / 2);
        for (position, id) in self.announce.tests.iter().enumerate() {
            if !matches!(sides::split(id), Some((Side::Baseline, _))) {
                run.push(position as u32);
                continue;
            }
            let outcomes = earlier.next().map_or(&[][..], Vec::as_slice);
            self.attempts[position] = outcomes
                .iter()
                .zip(1..)
                .map(|(&outcome, number)| Attempt {
                    number,
                    status: AttemptStatus::Ran(outcome),
                    ran: None,
                })
                .collect();
        }
        self.in_round = run;
    }

    /// Whether the test at `position` is run: every test but the recorded
    /// baseline of a `--compare` run.
    fn is_run(&self, position: u32) -> bool {
        let recorded = self
            .announce
            .ab
            .as_ref()
            .is_some_and(|ab| ab.recorded.is_some());
        !recorded
            || !matches!(
                sides::split(&self.announce.tests[position as usize]),
                Some((Side::Baseline, _))
            )
    }

    /// The (baseline, candidate) positions of the ids with a side in the
    /// open round, each once.
    fn pairs_in_round(&self) -> Vec<(u32, u32)> {
        let mut pairs: Vec<(u32, u32)> = self
            .in_round
            .iter()
            .map(|&p| self.ordered_pair(p))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }

    /// The test at `position` and its other side, baseline first.
    fn ordered_pair(&self, position: u32) -> (u32, u32) {
        let other = self.pairs[position as usize];
        match sides::split(&self.announce.tests[position as usize]) {
            Some((Side::Candidate, _)) => (other, position),
            _ => (position, other),
        }
    }

    /// One side's attempts so far, folded.
    fn tally(&self, position: u32) -> SideTally {
        SideTally::of(self.attempts[position as usize].iter().map(|a| a.status))
    }

    /// An A/B run ends missing when a side never reported; failed when a
    /// regression is found (confirmed or not: the deadline may leave one
    /// unconfirmed) or when a side the fleet ran ended in its errors alone
    /// (an id it could not compare, as an errored test fails a plain run);
    /// passed otherwise: failures on both sides are no change of the
    /// candidate's.
    fn finish_compared(&mut self) -> RoundDecision {
        // A recorded baseline without attempts is an id the earlier run did
        // not have: compared as infra, not missing from this run, and
        // failing nothing.
        let missing = (0..self.attempts.len())
            .any(|p| self.is_run(p as u32) && self.final_status(p) == FinalStatus::Missing);
        let failed = self.compared_tests().any(|t| t.fails_the_run());
        let verdict = if missing {
            VerdictKind::TestsMissing
        } else if failed {
            VerdictKind::TestsFailed
        } else {
            VerdictKind::Passed
        };
        self.finished = Some(verdict);
        RoundDecision::Finish(verdict)
    }

    /// Each id of an A/B run compared, in the run's order (by its
    /// baseline's position).
    fn compared_tests(&self) -> impl Iterator<Item = ComparedTest> + '_ {
        let ab = self.announce.ab.as_ref();
        let confirm = ab.map_or(0, |ab| ab.confirm);
        let stands = match ab.is_some_and(|ab| ab.recorded.is_some()) {
            true => confirmed_against_record,
            false => confirmed,
        };
        (0..self.pairs.len() as u32)
            .filter(|&p| self.ordered_pair(p).0 == p)
            .map(move |base| {
                let cand = self.pairs[base as usize];
                let (baseline, candidate) = (self.tally(base), self.tally(cand));
                let id = sides::split(&self.announce.tests[base as usize])
                    .map_or(self.announce.tests[base as usize].as_str(), |(_, plain)| {
                        plain
                    });
                ComparedTest {
                    id: id.to_owned(),
                    class: classify(baseline, candidate),
                    confirmed: stands(baseline, candidate, confirm),
                    baseline,
                    candidate,
                }
            })
    }

    /// An A/B run's regressions so far, `confirming` differences still
    /// being confirmed.
    fn compared_progress(&self, confirming: u32) -> ComparedProgress {
        let mut regressed: Vec<ComparedTest> = self
            .compared_tests()
            .filter(|t| t.class == CompareClass::Regressed)
            .collect();
        regressed.sort_by_key(|t| !t.confirmed);
        ComparedProgress {
            regressed: regressed.len() as u32,
            confirmed: regressed.iter().filter(|t| t.confirmed).count() as u32,
            confirming,
            first: regressed
                .into_iter()
                .take(MAX_REGRESSIONS_SHOWN)
                .map(|t| t.id)
                .collect(),
        }
    }

    /// An A/B run's comparison, `None` for any other run.
    pub fn comparison(&self) -> Option<Comparison> {
        let ab = self.announce.ab.as_ref()?;
        Some(Comparison {
            baseline_image: ab.baseline_image.clone(),
            confirm: ab.confirm,
            tests: self.compared_tests().collect(),
        })
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
        let statuses: Vec<AttemptStatus> =
            self.attempts[position].iter().map(|a| a.status).collect();
        FinalStatus::of_attempts(&statuses)
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
                    .map(|a| attempt_report(&self.workers, &self.signatures, a.clone()))
                    .collect(),
                quarantined: None,
            })
            .collect();
        RunReport {
            run_id: self.announce.run_id,
            suite: self.announce.suite.clone(),
            created_at_ms: self.announce.created_at_ms,
            finished_at_ms,
            rounds: self.round,
            verdict: self.finished.unwrap_or(VerdictKind::TestsMissing),
            spec: self.announce.spec.redacted(),
            tests,
            verdict_cut: None,
            ignored_results: self.ignored.clone(),
            batches: self.batches.clone(),
            reports_error: None,
            flakiness: None,
            comparison: self.comparison(),
            cache: None,
        }
    }

    /// The report of a finished run, taking the state apart: ids and outputs
    /// move into the report rather than being copied, and the index goes
    /// first. At the end of a big run this is the aggregator's peak (state and
    /// report side by side), so what is not copied is not held twice.
    pub fn into_report(mut self, finished_at_ms: u64) -> RunReport {
        let comparison = self.comparison();
        self.index = HashTable::new();
        let statuses: Vec<FinalStatus> = (0..self.attempts.len())
            .map(|p| self.final_status(p))
            .collect();
        let ids = std::mem::take(&mut self.announce.tests);
        let attempts = std::mem::take(&mut self.attempts);
        let mut tests = Vec::with_capacity(ids.len());
        for ((id, attempts), status) in ids.into_iter().zip(attempts).zip(statuses) {
            // Sized first: smallvec's owning iterator gives no size hint, and a
            // collected Vec would start at 4 reports, paid once per test.
            let mut reports = Vec::with_capacity(attempts.len());
            reports.extend(
                attempts
                    .into_iter()
                    .map(|a| attempt_report(&self.workers, &self.signatures, a)),
            );
            tests.push(TestReport {
                id,
                status,
                attempts: reports,
                quarantined: None,
            });
        }
        RunReport {
            run_id: self.announce.run_id,
            suite: self.announce.suite,
            created_at_ms: self.announce.created_at_ms,
            finished_at_ms,
            rounds: self.round,
            verdict: self.finished.unwrap_or(VerdictKind::TestsMissing),
            spec: self.announce.spec.redacted(),
            tests,
            verdict_cut: None,
            ignored_results: self.ignored,
            batches: self.batches,
            reports_error: None,
            flakiness: None,
            comparison,
            cache: None,
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
            .enumerate()
            // A recorded baseline's attempts ran in another run.
            .filter(|&(position, _)| self.is_run(position as u32))
            .filter_map(move |(_, (id, attempts))| {
                let attempt = attempts.iter().find(|a| a.number == round)?;
                Some((id.as_str(), attempt.status))
            })
    }

    /// Counts of attempt outcomes in the open round, for progress logs.
    pub fn progress(&self) -> (usize, usize) {
        (self.settled, self.in_round.len())
    }

    /// The run's progress as the dashboard shows it: the open round's
    /// settled tests, how many of them passed and how many did not.
    pub fn progress_view(&self) -> RunProgress {
        let (mut passed, mut failed) = (0u32, 0u32);
        for &position in &self.in_round {
            match self.attempt_in(position as usize, self.round) {
                Some(a) if a.status.passed() => passed += 1,
                Some(_) => failed += 1,
                None => {}
            }
        }
        RunProgress {
            run_id: self.announce.run_id,
            suite: self.announce.suite.clone(),
            tests: self.announce.tests.len(),
            round: self.round,
            settled: self.settled,
            in_round: self.in_round.len(),
            passed,
            failed,
            created_at_ms: self.announce.created_at_ms,
            deadline_ms: self.announce.deadline_ms,
            compared: self.compared.clone(),
        }
    }
}

/// One attempt as reports show it, with the worker named.
fn attempt_report(workers: &[String], signatures: &Signatures, a: Attempt) -> AttemptReport {
    let mut ran = a.ran;
    let (output, output_truncated, worker_message) =
        match ran.as_mut().and_then(|r| r.detail.take()) {
            Some(detail) => (detail.output, detail.output_truncated, detail.message),
            None => (None, false, None),
        };
    let ran = ran.as_ref();
    AttemptReport {
        attempt: a.number,
        status: a.status,
        exit_code: ran.and_then(|r| r.exit_code),
        duration_ms: ran.map_or(0, |r| r.duration_ms),
        worker_id: ran.map(|r| workers[r.worker as usize].clone()),
        started_at_ms: ran.map(|r| r.started_at_ms),
        finished_at_ms: ran.map(|r| r.finished_at_ms),
        published_at_ms: ran.map(|r| r.published_at_ms),
        batch: ran.and_then(|r| r.batch),
        reason: ran.and_then(|r| r.reason),
        signature: ran.and_then(|r| signatures.get(r.signature?)).cloned(),
        output,
        output_truncated,
        message: a.status.unrun_message().or(worker_message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::RetryPolicy;

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
            verdict_token: None,
            queue: testfleet_types::messages::JobQueue::Shared,
            weight: 1,
            auto_quarantine_percent: None,
            quarantine: Vec::new(),
            signatures: Vec::new(),
            ab: None,
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
            batch: None,
            reason: None,
        }
    }

    /// Records `outcome_of(test)` for every test of the open round.
    fn play_round(state: &mut RunState, outcome_of: impl Fn(usize) -> Outcome) {
        let attempt = state.round();
        let positions = state.in_round.clone();
        for p in positions.into_iter().map(|p| p as usize) {
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
        let ignored: Vec<_> = state
            .report(0)
            .ignored_results
            .iter()
            .map(|i| (i.test_id.clone(), i.attempt, i.reason))
            .collect();
        assert_eq!(
            ignored,
            vec![
                ("t0".into(), 1, IgnoredReason::Duplicate),
                ("t1".into(), 2, IgnoredReason::Stale),
                ("nope".into(), 1, IgnoredReason::Stale),
                ("t1".into(), 1, IgnoredReason::Duplicate),
                ("t1".into(), 2, IgnoredReason::Stale),
            ],
            "every result not counted is kept, with why"
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

    #[test]
    fn an_id_announced_twice_counts_once() {
        let mut announce = run(0, 1.0, 1).announce;
        announce.tests = ["a", "b", "a", "c", "b"].map(String::from).to_vec();
        let mut state = RunState::new(announce);
        assert_eq!(state.progress(), (0, 3));
        for id in ["a", "b", "c"] {
            let mut passed = result(0, 1, Outcome::Passed);
            passed.test_id = id.into();
            assert_eq!(state.record_result(passed), Recorded::New);
        }
        assert!(
            state.round_complete(),
            "no position left that no result can fill"
        );
        assert_eq!(state.report(0).tests.len(), 3);
    }

    #[test]
    fn taking_the_state_apart_reports_what_the_state_says_without_spare_room() {
        let mut state = run(6, 1.0, 2);
        play_round(&mut state, |p| match p {
            0 | 1 => Outcome::Failed,
            _ => Outcome::Passed,
        });
        state.close_round(0);
        state.record_result(result(0, 2, Outcome::Passed));
        assert_eq!(state.record_dead_letter("t1", 2, 5), Recorded::New);
        state.close_round(DEADLINE);
        let expected = state.report(7);
        assert_eq!(expected.count(FinalStatus::Flaky), 1);
        assert_eq!(expected.count(FinalStatus::DeadLettered), 1);
        assert_eq!(expected.tests[0].attempts[0].output.as_deref(), Some("out"));

        let report = state.into_report(7);
        assert_eq!(report, expected);
        // Each test's attempts exactly sized: a big run pays every spare slot
        // once per test (docs/BENCHMARKS.md).
        for test in &report.tests {
            assert_eq!(test.attempts.capacity(), test.attempts.len(), "{}", test.id);
        }
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

    fn quarantine(
        state_of: fn(usize, f64, u32) -> RunState,
        ids: &[usize],
        expires_ms: u64,
    ) -> RunState {
        let mut state = state_of(100, 0.1, 3);
        let mut announce = state.announce.clone();
        announce.quarantine = ids
            .iter()
            .map(|i| testfleet_types::messages::Quarantine {
                test_id: format!("t{i}"),
                reason: "known".into(),
                expires_ms,
            })
            .collect();
        state = RunState::new(announce);
        state
    }

    #[test]
    fn quarantined_failures_cost_no_retry_budget() {
        // 100 tests at 10 %: ten quarantined tests fail, and one more.
        let mut state = quarantine(run, &(0..10).collect::<Vec<_>>(), DEADLINE);
        play_round(&mut state, |t| {
            if t <= 10 {
                Outcome::Failed
            } else {
                Outcome::Passed
            }
        });
        match state.close_round(10) {
            RoundDecision::Retry { tests, .. } => {
                assert!(
                    tests.contains(&"t10".to_owned()),
                    "the flaky one is retried"
                );
                assert_eq!(tests.len(), 11, "quarantined tests are retried too");
            }
            other => panic!("retried, not {other:?}"),
        }
        // Expired entries count again.
        let mut expired = quarantine(run, &(0..10).collect::<Vec<_>>(), 5);
        play_round(&mut expired, |t| {
            if t <= 10 {
                Outcome::Failed
            } else {
                Outcome::Passed
            }
        });
        assert!(matches!(
            expired.close_round(10),
            RoundDecision::Finish(VerdictKind::TooManyFailures)
        ));
    }

    #[test]
    fn a_resume_keeps_the_runs_thirty_days_and_queues_a_round_once() {
        let mut state = run(3, 0.5, 3);
        play_round(&mut state, |_| Outcome::Passed);
        let mut state = run(3, 0.5, 3);
        assert!(state.record_result(result(0, 1, Outcome::Passed)) == Recorded::New);
        let queued = state.resume(u64::MAX / 2, None);
        assert_eq!(queued, ["t1", "t2"]);
        assert_eq!(
            state.announce().deadline_ms,
            MAX_RUN_MS,
            "created at 0: 30 days at most"
        );
        assert!(
            state.resume(5, None).is_empty(),
            "the same round is not queued twice"
        );
        assert_eq!(state.announce().deadline_ms, MAX_RUN_MS, "never earlier");
    }

    #[test]
    fn results_of_many_workers_are_numbered_in_linear_time_and_bounded() {
        let mut state = run(200_000, 1.0, 1);
        let started = std::time::Instant::now();
        for t in 0..200_000 {
            let mut r = result(t, 1, Outcome::Passed);
            r.worker_id = format!("worker-{t}");
            state.record_result(r);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(state.workers.len(), MAX_WORKERS_PER_RUN + 1);
        let report = state.report(0);
        assert_eq!(
            report.tests[199_999].attempts[0].worker_id.as_deref(),
            Some(MORE_WORKERS)
        );
        assert_eq!(
            report.tests[3].attempts[0].worker_id.as_deref(),
            Some("worker-3")
        );
    }

    /// An A/B run of `ids`, each confirmed `confirm` times, `max_rounds`
    /// rounds at most.
    fn ab_run(ids: &[&str], confirm: u32, max_rounds: u32) -> RunState {
        let mut announce = run(0, 0.5, max_rounds).announce;
        announce.tests = sides::paired(ids.iter().map(|s| s.to_string()).collect());
        announce.ab = Some(testfleet_types::messages::AbRun {
            baseline_image: "old".into(),
            confirm,
            recorded: None,
        });
        RunState::new(announce)
    }

    /// Plays the open round: `outcome(id, side, attempt)` for each test in it.
    fn play_sides(state: &mut RunState, outcome: impl Fn(&str, Side, u32) -> Outcome) {
        let attempt = state.round();
        for p in state.in_round.clone() {
            let id = state.announce.tests[p as usize].clone();
            let (side, plain) = sides::split(&id).unwrap();
            let mut r = result(0, attempt, outcome(plain, side, attempt));
            r.test_id = id.clone();
            assert_eq!(state.record_result(r), Recorded::New, "{id}");
        }
    }

    /// Plays rounds until the run finishes; the rounds' test counts and the verdict.
    fn play_compared(
        state: &mut RunState,
        outcome: impl Fn(&str, Side, u32) -> Outcome,
    ) -> (Vec<usize>, VerdictKind) {
        let mut rounds = Vec::new();
        loop {
            rounds.push(state.in_round.len());
            play_sides(state, &outcome);
            match state.close_round(0) {
                RoundDecision::Retry { .. } => continue,
                RoundDecision::Finish(verdict) => return (rounds, verdict),
            }
        }
    }

    fn tally(passed: u32, failed: u32, infra: u32) -> SideTally {
        SideTally {
            passed,
            failed,
            infra,
        }
    }

    fn class_of(state: &RunState, id: &str) -> (CompareClass, bool, SideTally, SideTally) {
        let comparison = state.comparison().unwrap();
        let t = comparison.tests.iter().find(|t| t.id == id).unwrap();
        (t.class, t.confirmed, t.baseline, t.candidate)
    }

    fn behaviour(id: &str, side: Side, attempt: u32) -> Outcome {
        use Outcome::*;
        match (id, side) {
            ("same-pass", _) => Passed,
            ("same-fail", _) => Failed,
            ("reg", Side::Candidate) => Failed,
            ("fix", Side::Baseline) => Failed,
            ("flaky-base", Side::Baseline) if attempt == 2 => Failed,
            ("flaky-base", Side::Candidate) => Failed,
            ("infra", Side::Candidate) => Error,
            _ => Passed,
        }
    }

    #[test]
    fn differences_are_confirmed_on_both_sides_and_a_regression_fails_the_run() {
        let ids = [
            "same-pass",
            "same-fail",
            "reg",
            "fix",
            "flaky-base",
            "infra",
        ];
        let mut state = ab_run(&ids, 2, 5);
        let (rounds, verdict) = play_compared(&mut state, behaviour);
        assert_eq!(verdict, VerdictKind::TestsFailed);
        // Round 1: all 12; round 2: reg, fix, flaky-base (both sides) and
        // infra's candidate; round 3: reg and fix (flaky-base stopped
        // early), infra's candidate again; then infra's retries to the last
        // round.
        assert_eq!(rounds, [12, 7, 5, 1, 1]);
        use CompareClass::*;
        assert_eq!(
            class_of(&state, "same-pass"),
            (Passing, false, tally(1, 0, 0), tally(1, 0, 0))
        );
        assert_eq!(
            class_of(&state, "same-fail"),
            (Failing, false, tally(0, 1, 0), tally(0, 1, 0))
        );
        assert_eq!(
            class_of(&state, "reg"),
            (Regressed, true, tally(3, 0, 0), tally(0, 3, 0))
        );
        assert_eq!(
            class_of(&state, "fix"),
            (Fixed, true, tally(0, 3, 0), tally(3, 0, 0))
        );
        assert_eq!(
            class_of(&state, "flaky-base"),
            (Flaky, false, tally(1, 1, 0), tally(0, 2, 0))
        );
        assert_eq!(
            class_of(&state, "infra"),
            (Infra, false, tally(1, 0, 0), tally(0, 0, 5))
        );
        let report = state.report(0);
        assert_eq!(report.comparison.as_ref().unwrap().tests.len(), ids.len());
        assert_eq!(report.tests.len(), 2 * ids.len());
    }

    #[test]
    fn the_dashboard_sees_regressions_as_rounds_confirm_them() {
        let mut state = ab_run(&["reg", "same-pass"], 2, 5);
        assert_eq!(state.progress_view().compared, None, "nothing compared yet");
        play_sides(&mut state, behaviour);
        state.close_round(0);
        let first = state.progress_view().compared.unwrap();
        assert_eq!(
            (first.regressed, first.confirmed, first.confirming),
            (1, 0, 1)
        );
        assert_eq!(first.first, ["reg"]);
        play_sides(&mut state, behaviour);
        state.close_round(0);
        play_sides(&mut state, behaviour);
        assert_eq!(
            state.close_round(0),
            RoundDecision::Finish(VerdictKind::TestsFailed)
        );
        let last = state.progress_view().compared.unwrap();
        assert_eq!((last.regressed, last.confirmed, last.confirming), (1, 1, 0));
    }

    /// A candidate the fleet could not run (an image it cannot start, say)
    /// is no "no regression": the run fails, as errored tests fail a plain
    /// run.
    #[test]
    fn a_side_left_to_the_fleets_errors_fails_an_ab_run() {
        let mut state = ab_run(&["same-pass", "infra"], 2, 5);
        let (_, verdict) = play_compared(&mut state, behaviour);
        assert_eq!(class_of(&state, "infra").0, CompareClass::Infra);
        assert_eq!(verdict, VerdictKind::TestsFailed);
    }

    /// An id an earlier run did not have is compared as infra, and fails
    /// nothing: the fleet made no error.
    #[test]
    fn an_id_the_record_lacks_fails_no_compared_run() {
        let mut state = compare_run(&["same-pass", "new"], vec![vec![Outcome::Passed]], 2);
        let (_, verdict) = play_compared(&mut state, behaviour);
        assert_eq!(class_of(&state, "new").0, CompareClass::Infra);
        assert_eq!(verdict, VerdictKind::Passed);
    }

    #[test]
    fn failures_on_both_sides_pass_an_ab_run_and_nothing_reruns() {
        let mut state = ab_run(&["same-pass", "same-fail", "fix"], 3, 6);
        let (rounds, verdict) = play_compared(&mut state, behaviour);
        assert_eq!(verdict, VerdictKind::Passed);
        assert_eq!(rounds, [6, 2, 2, 2]);
    }

    #[test]
    fn a_regression_the_rounds_leave_unconfirmed_still_fails() {
        let mut state = ab_run(&["reg"], 3, 2);
        let (rounds, verdict) = play_compared(&mut state, behaviour);
        assert_eq!(rounds, [2, 2]);
        assert_eq!(verdict, VerdictKind::TestsFailed);
        let (class, confirmed, ..) = class_of(&state, "reg");
        assert_eq!((class, confirmed), (CompareClass::Regressed, false));
    }

    #[test]
    fn an_ab_run_replayed_closes_the_same_rounds() {
        let ids = ["same-pass", "reg", "flaky-base", "infra"];
        let mut first = ab_run(&ids, 2, 5);
        let mut second = ab_run(&ids, 2, 5);
        let a = play_compared(&mut first, behaviour);
        let b = play_compared(&mut second, behaviour);
        assert_eq!(a, b);
        assert_eq!(first.comparison(), second.comparison());
    }

    /// A `--compare` run: the baseline is what an earlier run recorded.
    fn compare_run(ids: &[&str], earlier: Vec<Vec<Outcome>>, confirm: u32) -> RunState {
        let mut announce = ab_run(ids, confirm, 6).announce;
        announce.ab = Some(testfleet_types::messages::AbRun {
            baseline_image: "run r1".into(),
            confirm,
            recorded: Some(testfleet_types::messages::RecordedSide {
                run: "r1".into(),
                outcomes: earlier,
            }),
        });
        RunState::new(announce)
    }

    #[test]
    fn a_compared_run_confirms_differences_on_its_own_side_alone() {
        use Outcome::{Failed, Passed};
        let ids = ["same-pass", "reg", "fix", "flaky-base", "new"];
        let earlier = vec![
            vec![Passed],
            vec![Passed],
            vec![Failed, Failed],
            vec![Failed, Passed],
        ];
        let mut state = compare_run(&ids, earlier, 2);
        let (rounds, verdict) = play_compared(&mut state, behaviour);
        // Only candidates run: all five, then reg, fix and flaky-base's
        // candidate (which differs from its flaky record) twice more...
        // flaky-base is flaky at once, so only reg and fix are confirmed.
        assert_eq!(rounds, [5, 2, 2]);
        assert_eq!(verdict, VerdictKind::TestsFailed);
        use CompareClass::*;
        assert_eq!(
            class_of(&state, "reg"),
            (Regressed, true, tally(1, 0, 0), tally(0, 3, 0))
        );
        assert_eq!(
            class_of(&state, "fix"),
            (Fixed, true, tally(0, 2, 0), tally(3, 0, 0))
        );
        assert_eq!(
            class_of(&state, "flaky-base"),
            (Flaky, false, tally(1, 1, 0), tally(0, 1, 0))
        );
        // The earlier run did not have it: nothing to compare with, and
        // not missing from this run.
        assert_eq!(
            class_of(&state, "new"),
            (Infra, false, tally(0, 0, 0), tally(1, 0, 0))
        );
    }

    #[test]
    fn a_compared_runs_rounds_and_dashboard_count_what_ran() {
        use Outcome::Passed;
        let mut state = compare_run(&["reg", "same-pass"], vec![vec![Passed], vec![Passed]], 2);
        play_sides(&mut state, behaviour);
        state.close_round(0);
        // The earlier run's attempts are no attempts of this run's rounds.
        let first: Vec<&str> = state.round_statuses(1).map(|(id, _)| id).collect();
        assert_eq!(first, ["cand::reg", "cand::same-pass"]);
        let progress = state.progress_view().compared.unwrap();
        assert_eq!((progress.regressed, progress.confirming), (1, 1));
    }
}
