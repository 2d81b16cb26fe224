//! The aggregator's bookkeeping as a pure core: every run it follows (open,
//! being finished, finished lately) and the unknown runs whose results it
//! keeps. Each event (an announcement, a worker's results, a dead-lettered
//! job, a resume, time passing, a run's finishing) is a method that takes
//! the event as a value, and the time, and returns what must happen:
//! [`Effects`]. The service loop decodes, performs those effects (journal,
//! publish, park, claim) and nothing else, so the rules here (the round's
//! end, the retry rule, the deadline, resumption, what a late or unknown
//! result becomes) have unit tests that need no broker (quinn-proto's
//! connection, nextest's dispatcher).
//!
//! What happens in what order, which the service keeps: journals are
//! created before their first record; every record is queued, durable at
//! the next group commit, which starts only once the effects are performed,
//! so a round's retry jobs are published before its closing is durable (a
//! crash in between publishes them again, counted once) and its events go
//! before its jobs; a run decided finished is finished (reports, verdict,
//! its queue deleted) only when the commit holding its closing ends.

use std::collections::{HashMap, HashSet, VecDeque};

use testfleet_types::messages::{
    AttemptStatus, BatchRecord, Batches, Body, Job, ResumeOutcome, ResumeRequest, RunAnnounce,
    RunEvent, TestResult,
};
use testfleet_types::order;
use testfleet_types::sides;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::dashboard::model::RunProgress;
use crate::events;
use crate::journal::Record;
use crate::quarantine;
use crate::run_state::{Recorded, RoundDecision, RunState};
use crate::unclaimed::{self, Unclaimed};

/// Finished runs remembered, so a late result of one is dropped as late
/// rather than kept as unknown.
pub const FINISHED_MEMORY: usize = 10_000;
/// How long results of an unknown run are kept (its unclaimed queue's
/// expiry).
pub const UNCLAIMED_EXPIRY_MS: u64 = 7 * 24 * 3600 * 1000;

/// What the service must do after an event, in this order (module docs).
#[derive(Debug, Default)]
pub struct Effects {
    /// Journals to create.
    pub new_journals: Vec<Uuid>,
    /// Records to journal, in order: durable at the next commit.
    pub records: Vec<(Uuid, Record)>,
    /// Run events for followers and the dashboard; best effort.
    pub events: Vec<RunEvent>,
    /// Jobs to publish to their run's queue (declared first), confirmed
    /// before the commit holding the records above starts.
    pub jobs: Vec<Publish>,
    /// Results and batch records kept for an unknown run, in its unclaimed
    /// queue, confirmed before the delivery that brought them is acked.
    pub keep_unclaimed: Vec<(Uuid, Batches)>,
    /// What is parked in `{p}.parked`, with why.
    pub park: Vec<(Body, String)>,
    /// Runs whose kept results to claim now that they are known.
    pub claim: Vec<Uuid>,
    /// Runs to finish once the commit holding the records above ends.
    pub finish: Vec<Uuid>,
    /// Whether the delivery that brought the event is parked (through its
    /// queue's dead-lettering) rather than acked.
    pub park_delivery: bool,
}

/// Jobs of a run to publish.
#[derive(Debug, PartialEq)]
pub struct Publish {
    pub run_id: Uuid,
    pub jobs: Vec<Job>,
    /// Tell the workers the run's queue has jobs again.
    pub notice: bool,
}

/// What a run's finishing needs, taken from its state.
pub struct FinishOrder {
    pub report: testfleet_types::messages::RunReport,
    pub tokens: Vec<Uuid>,
    pub quarantine: quarantine::Rules,
    pub announce_queue: (Uuid, testfleet_types::messages::JobQueue),
}

/// Every run the aggregator knows.
#[derive(Debug)]
pub struct Runs {
    open: HashMap<Uuid, RunState>,
    /// Handed over to be finished, their verdict not out yet (or their
    /// finishing failed): known, their journals kept.
    ending: HashSet<Uuid>,
    finished: HashSet<Uuid>,
    finished_order: VecDeque<Uuid>,
    unclaimed: Unclaimed,
    /// Deliveries a job has before the broker dead-letters it.
    delivery_limit: u32,
}

impl Runs {
    pub fn new(delivery_limit: u32) -> Self {
        Runs {
            open: HashMap::new(),
            ending: HashSet::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            unclaimed: Unclaimed::default(),
            delivery_limit,
        }
    }

    /// Taking the lead: the open runs are those the journals replay; runs
    /// being finished by an earlier session are reloaded with them. Their
    /// kept results are claimed.
    pub fn reload(&mut self, journals: Vec<(Uuid, Vec<Record>)>) -> Effects {
        self.open.clear();
        self.ending.clear();
        let mut effects = Effects::default();
        for (run_id, records) in journals {
            let Some(state) = replay(records) else {
                warn!(run = %run_id, "ignoring a journal without a run announcement");
                continue;
            };
            let (settled, of) = state.progress();
            info!(run = %run_id, round = state.round(), settled, of, "resumed a run from its journal");
            self.unclaimed.claimed(&run_id);
            effects.claim.push(run_id);
            self.open.insert(run_id, state);
        }
        effects
    }

    /// A run announced: followed from now on (once, however often announced).
    pub fn announced(&mut self, announce: RunAnnounce) -> Effects {
        let run_id = announce.run_id;
        let mut effects = Effects::default();
        if self.knows(&run_id) {
            debug!(run = %run_id, "run announced again; already known");
            return effects;
        }
        info!(run = %run_id, suite = %announce.suite, tests = announce.tests.len(), "following a new run");
        effects.new_journals.push(run_id);
        effects
            .records
            .push((run_id, Record::Announce(Box::new((&announce).into()))));
        self.unclaimed.claimed(&run_id);
        effects.claim.push(run_id);
        self.open.insert(run_id, RunState::new(announce));
        effects
    }

    /// A worker's results and batch records (from `sender`, the user id the
    /// broker checked): counted, then the rounds they complete closed.
    /// Those of runs no aggregator knows are kept for the one that learns
    /// them, within the budget of unknown runs, else parked.
    pub fn results(
        &mut self,
        sender: &str,
        batches: Vec<BatchRecord>,
        results: Vec<TestResult>,
        now_ms: u64,
    ) -> Effects {
        let mut effects = Effects::default();
        let mut unknown: HashMap<Uuid, Batches> = HashMap::new();
        for batch in batches {
            if !self.knows(&batch.run_id) {
                unknown.entry(batch.run_id).or_default().batches.push(batch);
            } else if let Some(state) = self.open.get_mut(&batch.run_id) {
                let record = (batch.run_id, Record::Batch((&batch).into()));
                if state.record_batch(batch) {
                    effects.records.push(record);
                }
            }
        }
        let mut touched: Vec<Uuid> = Vec::new();
        for result in results {
            let run_id = result.run_id;
            if !self.knows(&run_id) {
                unknown.entry(run_id).or_default().results.push(result);
                continue;
            }
            let event = events::test_finished(&result, now_ms);
            if self.count_result(result, &mut effects) {
                effects.events.push(event);
                if !touched.contains(&run_id) {
                    touched.push(run_id);
                }
            }
        }
        self.keep_unknown(sender, unknown, now_ms, &mut effects);
        for run_id in touched {
            self.close_if_due(run_id, now_ms, &mut effects);
        }
        effects
    }

    /// Counts one result; true when it was new (the round may be complete).
    fn count_result(&mut self, result: TestResult, effects: &mut Effects) -> bool {
        let Some(state) = self.open.get_mut(&result.run_id) else {
            info!(run = %result.run_id, test = %result.test_id, attempt = result.attempt, "ignoring a late result of a finished run");
            return false;
        };
        let record = Record::Result((&result).into());
        let (run_id, test, attempt) = (result.run_id, result.test_id.clone(), result.attempt);
        match state.record_result(result) {
            Recorded::New => {
                effects.records.push((run_id, record));
                let (settled, of) = state.progress();
                debug!(run = %run_id, %test, attempt, settled, of, "result recorded");
                true
            }
            Recorded::Duplicate => {
                info!(run = %run_id, %test, attempt, "ignoring a duplicate result");
                false
            }
            Recorded::Stale => {
                info!(run = %run_id, %test, attempt, "ignoring a stale result (its round has closed)");
                false
            }
        }
    }

    /// Results of unknown runs: kept in their run's unclaimed queue while
    /// the budget allows, else parked with the reason.
    fn keep_unknown(
        &mut self,
        sender: &str,
        unknown: HashMap<Uuid, Batches>,
        now_ms: u64,
        effects: &mut Effects,
    ) {
        for (run_id, kept) in unknown {
            let count = kept.results.len() + kept.batches.len();
            if self
                .unclaimed
                .admit(run_id, sender, now_ms, UNCLAIMED_EXPIRY_MS)
            {
                warn!(run = %run_id, count, "keeping results of a run this aggregator does not know, for one that does");
                effects.keep_unclaimed.push((run_id, kept));
            } else {
                let reason = format!(
                    "results of a run no aggregator knows, past the runs kept so (at most {} per sender, {} in all; sender {sender:?})",
                    unclaimed::MAX_RUNS_PER_SENDER,
                    unclaimed::MAX_RUNS
                );
                warn!(run = %run_id, %sender, count, "parking results of an unknown run beyond the budget of unknown runs");
                effects.park.push((Body::Batches(kept), reason));
            }
        }
    }

    /// A job the broker dead-lettered (it used up its deliveries). Of an
    /// unknown run: parked. Of a run that is over: dropped (its verdict is
    /// out, its queue may be gone). A batch: run again as two halves in the
    /// same attempt, each with a fresh delivery budget, so that a test
    /// that kills workers ends alone. A job of one test: its outcome.
    pub fn dead_letter(&mut self, job: Job, now_ms: u64) -> Effects {
        let mut effects = Effects::default();
        if !self.knows(&job.run_id) {
            warn!(run = %job.run_id, test = %job.label(), attempt = job.attempt, "parking a dead-lettered job of a run this aggregator does not know");
            effects.park_delivery = true;
            return effects;
        }
        if !self.open.contains_key(&job.run_id) {
            info!(run = %job.run_id, test = %job.label(), attempt = job.attempt, "dropping a dead-lettered job of a run that is over");
            return effects;
        }
        if job.tests.len() > 1 {
            warn!(run = %job.run_id, tests = job.tests.len(), attempt = job.attempt, "a batch was dead-lettered: running it again as two halves");
            let middle = job.tests.len() / 2;
            let halves = [&job.tests[..middle], &job.tests[middle..]].map(|tests| Job {
                tests: tests.to_vec(),
                published_at_ms: now_ms,
                ..job.clone()
            });
            effects.jobs.push(Publish {
                run_id: job.run_id,
                jobs: halves.into(),
                notice: false,
            });
            return effects;
        }
        // Workers reject only unreadable jobs, so a readable job got here by
        // using up its deliveries. RabbitMQ 3.10 puts no delivery count on
        // dead-lettered messages (checked), so the count is the one the
        // limit implies.
        let deliveries = self.delivery_limit.saturating_add(1);
        let test_id = job.ids().next().unwrap_or_default().to_owned();
        let state = self.open.get_mut(&job.run_id).expect("open, checked above");
        if state.record_dead_letter(&test_id, job.attempt, deliveries) == Recorded::New {
            effects.records.push((
                job.run_id,
                Record::DeadLetter {
                    test_id,
                    attempt: job.attempt,
                    deliveries,
                },
            ));
            let status = AttemptStatus::DeadLettered { deliveries };
            effects.events.push(events::test_ended_unrun(
                job.run_id,
                &job.label(),
                job.attempt,
                status,
                now_ms,
            ));
            self.close_if_due(job.run_id, now_ms, &mut effects);
        }
        effects
    }

    /// A producer asks to resume a run (`--resume`): only with the run's
    /// token; its deadline moves (within the run's 30 days), the producer's
    /// token joins the verdict's, and the open round's tests without a
    /// result are queued again, once per round (their jobs may be gone with
    /// a wiped broker; one still queued runs twice and counts once).
    pub fn resume(&mut self, request: &ResumeRequest) -> (Effects, ResumeOutcome) {
        let run_id = request.run_id;
        let mut effects = Effects::default();
        let Some(state) = self.open.get_mut(&run_id) else {
            let outcome = match self.knows(&run_id) {
                true => ResumeOutcome::Finished,
                false => ResumeOutcome::Unknown,
            };
            return (effects, outcome);
        };
        if !state.verdict_tokens().contains(&request.run_token) {
            warn!(run = %run_id, "refusing a resume without the run's token");
            return (effects, ResumeOutcome::NotPermitted);
        }
        let tests = state.resume(request.deadline_ms, Some(request.verdict_token));
        effects.records.push((
            run_id,
            Record::Resumed {
                deadline_ms: request.deadline_ms,
                verdict_token: request.verdict_token,
            },
        ));
        let announce = state.announce();
        let round = state.round();
        effects.jobs.push(Publish {
            run_id,
            jobs: retry_jobs(announce, round, &tests),
            notice: true,
        });
        let outcome = ResumeOutcome::Resumed {
            tests: announce.tests.len() as u32,
            queued: tests.len() as u32,
            round,
            deadline_ms: announce.deadline_ms,
        };
        (effects, outcome)
    }

    /// Time passing: the rounds of runs past their deadline close (their
    /// tests without a result missing), and runs decided finished are
    /// handed over (after the next commit).
    pub fn tick(&mut self, now_ms: u64) -> Effects {
        let mut effects = Effects::default();
        let runs: Vec<Uuid> = self.open.keys().copied().collect();
        for run_id in runs {
            self.close_if_due(run_id, now_ms, &mut effects);
        }
        effects
    }

    /// Closes the run's round if it is complete or past its deadline, and
    /// acts on the decision: its events, then its retry jobs (longest first
    /// by this run's durations: the retry round's length is its longest
    /// test), then its closing journaled; a finish waits for that closing's
    /// commit.
    fn close_if_due(&mut self, run_id: Uuid, now_ms: u64, effects: &mut Effects) {
        let Some(state) = self.open.get_mut(&run_id) else {
            return;
        };
        if state.is_finished() {
            if !effects.finish.contains(&run_id) {
                effects.finish.push(run_id);
            }
            return;
        }
        if !(state.round_complete() || state.deadline_passed(now_ms)) {
            return;
        }
        let round = state.round();
        let decision = state.close_round(now_ms);
        effects.events.extend(events::round_closed(
            run_id,
            round,
            state.round_statuses(round),
            &decision,
            now_ms,
        ));
        match &decision {
            RoundDecision::Retry { attempt, tests } => {
                let tests = order::longest_first(tests.clone(), |t| state.last_duration_ms(t));
                info!(run = %run_id, round = attempt, tests = tests.len(), "round closed: re-running failed and missing tests");
                effects.jobs.push(Publish {
                    run_id,
                    jobs: retry_jobs(state.announce(), *attempt, &tests),
                    notice: true,
                });
            }
            RoundDecision::Finish(_) => effects.finish.push(run_id),
        }
        effects
            .records
            .push((run_id, Record::RoundClosed { at_ms: now_ms }));
    }

    /// Hands a finished run over to be finished (its state taken apart into
    /// its report: a run of 400,000 tests would otherwise hold both). It
    /// stays known until its finishing ends.
    pub fn take_finished(&mut self, run_id: Uuid, now_ms: u64) -> Option<FinishOrder> {
        let state = self.open.remove(&run_id)?;
        self.ending.insert(run_id);
        let tokens = state.verdict_tokens();
        let announce = state.announce();
        let quarantine = quarantine::Rules {
            listed: announce.quarantine.clone(),
            auto_percent: announce.auto_quarantine_percent,
        };
        let announce_queue = (announce.run_id, announce.queue);
        Some(FinishOrder {
            report: state.into_report(now_ms),
            tokens,
            quarantine,
            announce_queue,
        })
    }

    /// The run's verdict is out: remembered as finished.
    pub fn finish_ended(&mut self, run_id: Uuid) {
        self.ending.remove(&run_id);
        self.finished.insert(run_id);
        self.finished_order.push_back(run_id);
        if self.finished_order.len() > FINISHED_MEMORY {
            if let Some(oldest) = self.finished_order.pop_front() {
                self.finished.remove(&oldest);
            }
        }
    }

    /// Whether the run is open, being finished, or finished lately.
    pub fn knows(&self, run_id: &Uuid) -> bool {
        self.open.contains_key(run_id)
            || self.ending.contains(run_id)
            || self.finished.contains(run_id)
    }

    pub fn is_open(&self, run_id: &Uuid) -> bool {
        self.open.contains_key(run_id)
    }

    pub fn announce(&self, run_id: &Uuid) -> Option<&RunAnnounce> {
        self.open.get(run_id).map(RunState::announce)
    }

    /// The open runs' announcements.
    pub fn announces(&self) -> impl Iterator<Item = &RunAnnounce> {
        self.open.values().map(RunState::announce)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The open runs' progress, for the dashboard.
    pub fn progress_views(&self) -> Vec<RunProgress> {
        self.open.values().map(RunState::progress_view).collect()
    }
}

/// Rebuilds a run's state from its journal, each record turned back into
/// the message it was journalled from.
pub fn replay(records: Vec<Record>) -> Option<RunState> {
    let mut records = records.into_iter();
    let Some(Record::Announce(announce)) = records.next() else {
        return None;
    };
    let mut state = RunState::new((*announce).into());
    for record in records {
        match record {
            Record::Announce(_) => {}
            Record::Result(result) => {
                state.record_result(result.into());
            }
            Record::DeadLetter {
                test_id,
                attempt,
                deliveries,
            } => {
                state.record_dead_letter(&test_id, attempt, deliveries);
            }
            Record::RoundClosed { at_ms } => {
                state.close_round(at_ms);
            }
            Record::Batch(batch) => {
                state.record_batch(batch.into());
            }
            Record::Resumed {
                deadline_ms,
                verdict_token,
            } => {
                // What it queued went out when it was journaled.
                state.resume(deadline_ms, Some(verdict_token));
            }
        }
    }
    Some(state)
}

/// The jobs of one test each that run `tests` again as `attempt` (an A/B
/// run's each on its side).
fn retry_jobs(announce: &RunAnnounce, attempt: u32, tests: &[String]) -> Vec<Job> {
    tests
        .iter()
        .map(|test_id| {
            let mut job = Job::single(
                announce.run_id,
                test_id.clone(),
                attempt,
                announce.deadline_ms,
                announce.spec.clone(),
            );
            job.queue = announce.queue;
            if let Some(ab) = &announce.ab {
                sides::fit_job(ab, &mut job);
            }
            job
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::{JobQueue, Outcome, RetryPolicy};

    const NOW: u64 = 1_000;
    const DEADLINE: u64 = 1_000_000;

    fn announce(tests: usize, token: Uuid) -> RunAnnounce {
        let mut spec = testfleet_common::config::default_spec();
        spec.retry = RetryPolicy {
            threshold: 1.0,
            max_rounds: 3,
        };
        RunAnnounce {
            run_id: Uuid::new_v4(),
            suite: "core".into(),
            created_at_ms: 0,
            deadline_ms: DEADLINE,
            spec,
            tests: (0..tests).map(|i| format!("t{i}")).collect(),
            verdict_token: Some(token),
            queue: JobQueue::Own,
            weight: 1,
            auto_quarantine_percent: None,
            quarantine: Vec::new(),
            signatures: Vec::new(),
            ab: None,
        }
    }

    fn result(run_id: Uuid, test: &str, attempt: u32, outcome: Outcome, ms: u64) -> TestResult {
        TestResult {
            run_id,
            test_id: test.into(),
            attempt,
            outcome,
            exit_code: Some(i64::from(outcome != Outcome::Passed)),
            duration_ms: ms,
            worker_id: "w".into(),
            started_at_ms: 1,
            finished_at_ms: 2,
            output: String::new(),
            output_truncated: false,
            message: None,
            published_at_ms: 0,
            batch: None,
            reason: None,
        }
    }

    fn started(tests: usize) -> (Runs, Uuid, Uuid) {
        let mut runs = Runs::new(4);
        let token = Uuid::new_v4();
        let announce = announce(tests, token);
        let run_id = announce.run_id;
        let effects = runs.announced(announce);
        assert_eq!(effects.new_journals, [run_id]);
        assert!(matches!(effects.records[0].1, Record::Announce(_)));
        assert_eq!(effects.claim, [run_id], "its kept results claimed");
        (runs, run_id, token)
    }

    #[test]
    fn an_announcement_twice_is_one_run() {
        let (mut runs, run_id, token) = started(2);
        let mut again = announce(2, token);
        again.run_id = run_id;
        let effects = runs.announced(again);
        assert!(effects.new_journals.is_empty() && effects.records.is_empty());
        assert_eq!(runs.open_count(), 1);
    }

    #[test]
    fn a_complete_round_retries_its_failures_longest_first_then_finishes_after_a_commit() {
        let (mut runs, run_id, _) = started(3);
        let effects = runs.results(
            "w",
            Vec::new(),
            vec![
                result(run_id, "t0", 1, Outcome::Passed, 5),
                result(run_id, "t1", 1, Outcome::Failed, 10),
                result(run_id, "t2", 1, Outcome::Failed, 900),
            ],
            NOW,
        );
        assert_eq!(effects.records.len(), 4, "three results and the closing");
        assert!(matches!(
            effects.records[3].1,
            Record::RoundClosed { at_ms: NOW }
        ));
        let retries: Vec<&str> = effects.jobs[0].jobs.iter().flat_map(|j| j.ids()).collect();
        assert_eq!(
            retries,
            ["t2", "t1"],
            "longest first by this run's durations"
        );
        assert!(effects.jobs[0].jobs.iter().all(|j| j.attempt == 2));
        assert!(effects.finish.is_empty());
        let effects = runs.results(
            "w",
            Vec::new(),
            vec![
                result(run_id, "t1", 2, Outcome::Passed, 10),
                result(run_id, "t2", 2, Outcome::Passed, 900),
            ],
            NOW + 1,
        );
        assert_eq!(
            effects.finish,
            [run_id],
            "finished once the closing's commit ends"
        );
        assert!(runs.is_open(&run_id), "until then it is open");
        let order = runs.take_finished(run_id, NOW + 2).unwrap();
        assert_eq!(
            order.report.verdict,
            testfleet_types::messages::VerdictKind::Passed
        );
        assert!(
            runs.knows(&run_id) && !runs.is_open(&run_id),
            "known while it ends"
        );
        runs.finish_ended(run_id);
        assert!(runs.knows(&run_id));
    }

    #[test]
    fn the_deadline_makes_the_rest_missing_and_finishes() {
        let (mut runs, run_id, _) = started(2);
        runs.results(
            "w",
            Vec::new(),
            vec![result(run_id, "t0", 1, Outcome::Passed, 5)],
            NOW,
        );
        assert!(runs.tick(DEADLINE - 1).records.is_empty(), "not yet");
        let effects = runs.tick(DEADLINE);
        assert_eq!(effects.finish, [run_id]);
        let report = runs.take_finished(run_id, DEADLINE).unwrap().report;
        assert_eq!(
            report.verdict,
            testfleet_types::messages::VerdictKind::TestsMissing
        );
    }

    #[test]
    fn a_late_result_of_a_finished_run_is_dropped_and_an_unknown_run_is_kept_or_parked() {
        let (mut runs, run_id, _) = started(1);
        runs.results(
            "w",
            Vec::new(),
            vec![result(run_id, "t0", 1, Outcome::Passed, 5)],
            NOW,
        );
        runs.take_finished(run_id, NOW);
        runs.finish_ended(run_id);
        let late = runs.results(
            "w",
            Vec::new(),
            vec![result(run_id, "t0", 2, Outcome::Failed, 5)],
            NOW,
        );
        assert!(late.records.is_empty() && late.keep_unclaimed.is_empty() && late.park.is_empty());
        let stranger = runs.results(
            "w",
            Vec::new(),
            vec![result(Uuid::new_v4(), "x", 1, Outcome::Passed, 5)],
            NOW,
        );
        assert_eq!(
            stranger.keep_unclaimed.len(),
            1,
            "kept for the aggregator that learns it"
        );
        let many: Vec<TestResult> = (0..500)
            .map(|i| result(Uuid::new_v4(), &format!("x{i}"), 1, Outcome::Passed, 5))
            .collect();
        let effects = runs.results("forger", Vec::new(), many, NOW);
        assert_eq!(effects.keep_unclaimed.len(), unclaimed::MAX_RUNS_PER_SENDER);
        assert_eq!(effects.park.len(), 500 - unclaimed::MAX_RUNS_PER_SENDER);
    }

    #[test]
    fn a_dead_batch_is_split_while_its_run_is_open_and_dropped_once_it_is_over() {
        let (mut runs, run_id, _) = started(4);
        let mut batch = Job::single(
            run_id,
            "t0".into(),
            1,
            DEADLINE,
            announce(1, Uuid::nil()).spec,
        );
        batch.tests = ["t0", "t1", "t2", "t3"]
            .map(|id| testfleet_types::messages::JobTest {
                id: id.into(),
                allowance_ms: 1,
                command_id: None,
            })
            .to_vec();
        let effects = runs.dead_letter(batch.clone(), NOW);
        let halves: Vec<usize> = effects.jobs[0].jobs.iter().map(|j| j.tests.len()).collect();
        assert_eq!(halves, [2, 2]);
        assert!(!effects.park_delivery);
        runs.tick(DEADLINE);
        runs.take_finished(run_id, DEADLINE);
        let effects = runs.dead_letter(batch.clone(), DEADLINE);
        assert!(
            effects.jobs.is_empty() && !effects.park_delivery,
            "dropped: the run is over"
        );
        let mut stranger = batch;
        stranger.run_id = Uuid::new_v4();
        assert!(
            runs.dead_letter(stranger, NOW).park_delivery,
            "an unknown run's is parked"
        );
    }

    #[test]
    fn a_dead_lettered_test_is_its_outcome_with_its_event() {
        let (mut runs, run_id, _) = started(1);
        let job = Job::single(
            run_id,
            "t0".into(),
            1,
            DEADLINE,
            announce(1, Uuid::nil()).spec,
        );
        let effects = runs.dead_letter(job, NOW);
        assert!(matches!(
            effects.records[0].1,
            Record::DeadLetter { deliveries: 5, .. }
        ));
        assert!(!effects.events.is_empty());
        assert!(!effects.jobs.is_empty(), "retried in the next round");
    }

    #[test]
    fn a_resume_needs_the_runs_token_and_queues_a_round_once() {
        let (mut runs, run_id, token) = started(3);
        let request = |run_token| ResumeRequest {
            run_id,
            deadline_ms: DEADLINE * 2,
            verdict_token: Uuid::new_v4(),
            run_token,
        };
        let (effects, outcome) = runs.resume(&request(Uuid::new_v4()));
        assert_eq!(outcome, ResumeOutcome::NotPermitted);
        assert!(
            effects.records.is_empty() && effects.jobs.is_empty(),
            "nothing changed"
        );
        let (effects, outcome) = runs.resume(&request(token));
        assert!(
            matches!(outcome, ResumeOutcome::Resumed { queued: 3, .. }),
            "{outcome:?}"
        );
        assert!(matches!(effects.records[0].1, Record::Resumed { .. }));
        assert_eq!(effects.jobs[0].jobs.len(), 3);
        let (effects, outcome) = runs.resume(&request(token));
        assert!(
            matches!(outcome, ResumeOutcome::Resumed { queued: 0, .. }),
            "{outcome:?}"
        );
        assert!(
            effects.jobs[0].jobs.is_empty(),
            "the same round is not queued twice"
        );
        let stranger = ResumeRequest {
            run_id: Uuid::new_v4(),
            ..request(token)
        };
        assert_eq!(runs.resume(&stranger).1, ResumeOutcome::Unknown);
    }

    #[test]
    fn a_run_replayed_from_its_journal_goes_on_where_it_was() {
        let (mut runs, run_id, _) = started(2);
        let mut journal: Vec<Record> = Vec::new();
        journal.extend(runs_announce_records(run_id));
        let effects = runs.results(
            "w",
            Vec::new(),
            vec![result(run_id, "t0", 1, Outcome::Passed, 5)],
            NOW,
        );
        journal.extend(effects.records.into_iter().map(|(_, r)| r));
        let mut reloaded = Runs::new(4);
        let effects = reloaded.reload(vec![(run_id, journal)]);
        assert_eq!(effects.claim, [run_id]);
        let effects = reloaded.results(
            "w",
            Vec::new(),
            vec![result(run_id, "t0", 1, Outcome::Passed, 5)],
            NOW,
        );
        assert!(
            effects.records.is_empty(),
            "a redelivered result counts once"
        );
        let effects = reloaded.results(
            "w",
            Vec::new(),
            vec![result(run_id, "t1", 1, Outcome::Passed, 5)],
            NOW,
        );
        assert_eq!(effects.finish, [run_id]);
    }

    /// The announcement record a run's journal starts with.
    fn runs_announce_records(run_id: Uuid) -> Vec<Record> {
        let mut announce = announce(2, Uuid::nil());
        announce.run_id = run_id;
        vec![Record::Announce(Box::new((&announce).into()))]
    }
}
