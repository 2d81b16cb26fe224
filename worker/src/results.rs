//! What a job's run yields, whichever executor ran it: a result per test, the
//! batch's record, and the jobs its unreported tests run again in.
//!
//! A job of one test without a runner report ends as its command did, as
//! every job did before batches. Otherwise the runner's report decides each
//! test it covers, and a test it does not cover (the runner crashed, was
//! killed at the batch's timeout, or stopped early) is run again in the same
//! attempt: alone when it is the only one, else in `k` parts (the slots free
//! on this worker when it ends, this one's included; at least two), so that
//! a crashing or hanging test ends up alone and gets its own outcome while
//! every other test gets its true one. A job of one test that its report does
//! not cover ends as its command did. For a batch of `n` tests with one
//! culprit that takes `log_k(n)` rounds and at most `k · log_k(n)` extra
//! jobs, the parts of a round running side by side.
//!
//! A runner that says why tests did not run (the pytest preset's plugin
//! names a file's collection error for each test of it) reports them, so
//! they are never bisected.
//!
//! An infrastructure error (the image is missing, the command cannot start)
//! is every test's outcome: splitting would only repeat it.

use testfleet_types::limits::{MAX_DURATION_MS, MAX_MESSAGE_TEXT_BYTES, MAX_SPLIT_PARTS};
use testfleet_types::messages::{BatchRecord, Job, Outcome, TestResult};
use testfleet_types::now_ms;
use uuid::Uuid;

use crate::capture::OutputCapture;
use crate::job::{Observed, Ran};
use crate::runner_report::{self, Read, Reported};

/// Bytes of every test's own output in one batch, at most (each test keeps
/// at least [`MIN_TEST_OUTPUT`], and never more than the run's cap): a batch
/// of thousands of failing tests must not hold gigabytes. The batch's whole
/// log is kept beside them.
const BATCH_OUTPUTS_BUDGET: usize = 64 << 20;
const MIN_TEST_OUTPUT: usize = 4 << 10;

/// What a job's run yields.
#[derive(Debug)]
pub struct Yield {
    pub results: Vec<TestResult>,
    pub batch: Option<BatchRecord>,
    /// Jobs for the tests the runner did not report, in the same attempt.
    pub follow_ups: Vec<Job>,
}

/// Turns what an executor observed into results, a batch record and
/// follow-up jobs (module docs).
/// What settling a job needs to know beside what was observed.
pub struct Settling<'a> {
    pub worker_id: &'a str,
    /// Parts its unreported tests are split into (at least two).
    pub parts: usize,
    /// How busy the host's CPUs were while it ran (see `host.rs`).
    pub host_busy_permille: Option<u16>,
}

pub fn settle(job: &Job, observed: Observed, settling: &Settling) -> Yield {
    let Settling {
        worker_id,
        parts,
        host_busy_permille,
    } = *settling;
    let ids: Vec<String> = job.command_ids().map(str::to_owned).collect();
    let (read, report_problem) = read_report(job, &observed, &ids);
    let Observed {
        ran,
        output,
        started_at_ms,
        command_started_at_ms,
        clock,
        ..
    } = observed;
    let mut log = output.map(OutputCapture::finish).unwrap_or_default();
    if !read.outside.trim().is_empty() {
        // What the runner wrote in its report outside any test (a build
        // failure) is part of what the command said.
        log.0
            .push_str("\n[testfleet: the runner's report says, outside any test:]\n");
        log.0.push_str(&read.outside);
    }
    let ended = Ended {
        ran,
        log,
        started_at_ms,
        command_started_at_ms,
        duration_ms: clock.elapsed().as_millis() as u64,
    };
    if job.tests.len() == 1 && job.spec.runner_report.is_none() {
        return Yield {
            results: vec![ended.result_of(job, 0, worker_id, None)],
            batch: None,
            follow_ups: Vec::new(),
        };
    }
    let batch_id = Uuid::new_v4();
    let mut results = Vec::new();
    let mut unreported = Vec::new();
    for (position, reported) in read.reported.into_iter().enumerate() {
        match reported {
            Some(reported) => results.push(from_report(
                job, position, reported, &ended, worker_id, batch_id,
            )),
            None => unreported.push(position),
        }
    }
    let reported_count = results.len() as u32;
    let keep_log = !unreported.is_empty()
        || report_problem.is_some()
        || results.iter().any(|r| r.outcome != Outcome::Passed);
    let mut follow_ups = Vec::new();
    if !unreported.is_empty() {
        if job.tests.len() == 1 || ended.ran.outcome == Outcome::Error || read.none_ran {
            // The command's end is the outcome of what it did not report:
            // alone, an infrastructure error, or a runner that says none of
            // its tests could run (bisecting would only repeat it).
            for &position in &unreported {
                results.push(ended.result_of(job, position, worker_id, Some(batch_id)));
            }
        } else {
            follow_ups = split(job, &unreported, parts);
        }
    }
    let log = keep_log.then(|| match &report_problem {
        Some(problem) => format!("[testfleet: {problem}]\n{}", ended.log.0),
        None => ended.log.0.clone(),
    });
    let batch = BatchRecord {
        id: batch_id,
        run_id: job.run_id,
        attempt: job.attempt,
        worker_id: worker_id.to_owned(),
        tests: job.tests.len() as u32,
        reported: reported_count,
        started_at_ms: ended.started_at_ms,
        command_started_at_ms: ended.command_started_at_ms,
        finished_at_ms: now_ms(),
        exit_code: ended.ran.exit_code,
        timed_out: ended.ran.outcome == Outcome::TimedOut,
        log,
        log_truncated: keep_log && ended.log.1,
        split_into: follow_ups.len() as u32,
        host_busy_permille,
    };
    Yield {
        results,
        batch: Some(batch),
        follow_ups,
    }
}

/// How a job's command ended, with its whole output.
struct Ended {
    ran: Ran,
    /// The output and whether it was cut.
    log: (String, bool),
    started_at_ms: u64,
    command_started_at_ms: u64,
    duration_ms: u64,
}

impl Ended {
    /// The result of the test at `position` when the command's own end is its
    /// outcome: a job of one, or an infrastructure error.
    fn result_of(
        &self,
        job: &Job,
        position: usize,
        worker_id: &str,
        batch: Option<Uuid>,
    ) -> TestResult {
        TestResult {
            run_id: job.run_id,
            test_id: job.tests[position].id.clone(),
            attempt: job.attempt,
            outcome: self.ran.outcome,
            exit_code: self.ran.exit_code,
            duration_ms: self.duration_ms,
            worker_id: worker_id.to_owned(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: now_ms(),
            output: self.log.0.clone(),
            output_truncated: self.log.1,
            message: self
                .ran
                .message
                .clone()
                .map(|m| within(m, MAX_MESSAGE_TEXT_BYTES)),
            published_at_ms: job.published_at_ms,
            batch,
            reason: self.ran.reason,
        }
    }
}

/// The report's entries per listed id, and why there is no report, if so.
fn read_report(job: &Job, observed: &Observed, ids: &[String]) -> (Read, Option<String>) {
    let none = Read {
        reported: vec![None; ids.len()],
        outside: String::new(),
        none_ran: false,
    };
    let Some(format) = job.spec.runner_report else {
        return (none, None);
    };
    let Some(bytes) = &observed.report else {
        let problem = (observed.ran.outcome != Outcome::Error)
            .then(|| "the command wrote no report at {report}".to_owned());
        return (none, problem);
    };
    match runner_report::read(
        format.format,
        format.ids,
        bytes,
        ids,
        per_test_output_cap(job),
    ) {
        Ok(read) => (read, None),
        Err(problem) => (none, Some(format!("unreadable report: {problem}"))),
    }
}

/// Each test's own output in a batch: the run's cap, shared out so that the
/// batch's outputs stay within [`BATCH_OUTPUTS_BUDGET`].
fn per_test_output_cap(job: &Job) -> usize {
    let cap = job.spec.output_cap_bytes as usize;
    let share = BATCH_OUTPUTS_BUDGET / job.tests.len().max(1);
    cap.min(share.max(MIN_TEST_OUTPUT))
}

/// A reported test's result: its output was capped as the report was read
/// (`runner_report::read`, at the batch's share per test).
fn from_report(
    job: &Job,
    position: usize,
    reported: Reported,
    ended: &Ended,
    worker_id: &str,
    batch: Uuid,
) -> TestResult {
    TestResult {
        run_id: job.run_id,
        test_id: job.tests[position].id.clone(),
        attempt: job.attempt,
        outcome: reported.outcome,
        exit_code: ended.ran.exit_code,
        // A runner's report says what it likes: capped and saturated here,
        // so that no result is refused at the aggregator for its words.
        duration_ms: reported.duration_ms.min(MAX_DURATION_MS),
        worker_id: worker_id.to_owned(),
        started_at_ms: ended.command_started_at_ms,
        finished_at_ms: now_ms(),
        output: reported.output,
        output_truncated: reported.output_truncated,
        message: reported.message.map(|m| within(m, MAX_MESSAGE_TEXT_BYTES)),
        published_at_ms: job.published_at_ms,
        batch: Some(batch),
        // The runner said how it went; the command's end is the batch's.
        reason: None,
    }
}

/// The unreported tests, in their running order, as one job (one test) or
/// `parts` (at least two, at most one per test) of near-equal size, in the
/// same attempt with their allowances.
fn split(job: &Job, unreported: &[usize], parts: usize) -> Vec<Job> {
    let tests: Vec<_> = unreported.iter().map(|&p| job.tests[p].clone()).collect();
    let parts = parts.clamp(2, MAX_SPLIT_PARTS as usize).min(tests.len());
    let (size, longer) = (tests.len() / parts, tests.len() % parts);
    let mut rest = tests.as_slice();
    let pieces: Vec<Vec<_>> = (0..parts)
        .map(|part| {
            let (piece, after) = rest.split_at(size + usize::from(part < longer));
            rest = after;
            piece.to_vec()
        })
        .collect();
    pieces
        .into_iter()
        .map(|tests| Job {
            run_id: job.run_id,
            tests,
            attempt: job.attempt,
            deadline_ms: job.deadline_ms,
            spec: job.spec.clone(),
            published_at_ms: now_ms(),
            queue: job.queue,
        })
        .collect()
}

/// `text` cut at a character boundary to at most `max` bytes: an engine's
/// error can quote anything, and a result must stay within its bounds.
pub fn within(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::{IdScheme, JobTest, ReportFormat, RunnerReport};

    fn job(ids: &[&str]) -> Job {
        let mut spec = testfleet_common::config::default_spec();
        spec.command = vec!["run".into(), "{report}".into(), "{ids}".into()];
        spec.runner_report = Some(RunnerReport {
            format: ReportFormat::Junit,
            ids: IdScheme::Name,
        });
        Job {
            run_id: Uuid::nil(),
            tests: ids
                .iter()
                .map(|id| JobTest {
                    id: id.to_string(),
                    allowance_ms: 1_000,
                    command_id: None,
                })
                .collect(),
            attempt: 1,
            deadline_ms: u64::MAX,
            spec,
            published_at_ms: 0,
            queue: Default::default(),
        }
    }

    fn settling(parts: usize) -> Settling<'static> {
        Settling {
            worker_id: "w",
            parts,
            host_busy_permille: None,
        }
    }

    fn settle_in_halves(job: &Job, observed: Observed, worker_id: &str) -> Yield {
        settle(
            job,
            observed,
            &Settling {
                worker_id,
                parts: 2,
                host_busy_permille: None,
            },
        )
    }

    fn observed(ran: Ran, report: Option<&str>) -> Observed {
        let mut output = OutputCapture::new(1 << 20);
        output.push(b"the whole batch log\n");
        Observed {
            ran,
            output: Some(output),
            report: report.map(|r| r.as_bytes().to_vec()),
            started_at_ms: 1,
            command_started_at_ms: 2,
            clock: tokio::time::Instant::now(),
        }
    }

    fn junit(cases: &[(&str, bool)]) -> String {
        let cases: String = cases
            .iter()
            .map(|(name, passed)| {
                if *passed {
                    format!(r#"<testcase classname="c" name="{name}" time="0.5"/>"#)
                } else {
                    format!(r#"<testcase classname="c" name="{name}" time="0.5"><failure message="no">trace of {name}</failure></testcase>"#)
                }
            })
            .collect();
        format!("<testsuites><testsuite>{cases}</testsuite></testsuites>")
    }

    #[test]
    fn each_reported_test_keeps_its_own_outcome_and_output() {
        let job = job(&["a", "b", "c"]);
        let report = junit(&[("a", true), ("b", false), ("c", true)]);
        let settled = settle_in_halves(&job, observed(Ran::exited(1), Some(&report)), "w");
        let outcomes: Vec<_> = settled
            .results
            .iter()
            .map(|r| (r.test_id.as_str(), r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", Outcome::Passed),
                ("b", Outcome::Failed),
                ("c", Outcome::Passed)
            ]
        );
        assert_eq!(settled.results[1].output, "trace of b");
        assert_eq!(settled.results[1].duration_ms, 500);
        let batch = settled.batch.unwrap();
        assert_eq!((batch.tests, batch.reported, batch.split_into), (3, 3, 0));
        assert_eq!(
            batch.log.as_deref(),
            Some("the whole batch log\n"),
            "kept: b failed"
        );
        assert!(settled.results.iter().all(|r| r.batch == Some(batch.id)));
        assert!(settled.follow_ups.is_empty());
    }

    #[test]
    fn a_runners_huge_message_and_absurd_duration_stay_within_bounds() {
        let job = job(&["huge", "fine"]);
        let message = "x".repeat(70_000);
        let report = format!(
            r#"<testsuites><testsuite><testcase classname="c" name="huge" time="1e12"><failure message="{message}">trace</failure></testcase><testcase classname="c" name="fine" time="0.1"/></testsuite></testsuites>"#
        );
        let settled = settle_in_halves(&job, observed(Ran::exited(1), Some(&report)), "w");
        for result in &settled.results {
            assert_eq!(testfleet_types::checks::check_result(result), Ok(()));
        }
        let huge = &settled.results[0];
        assert_eq!(huge.outcome, Outcome::Failed);
        assert_eq!(huge.duration_ms, MAX_DURATION_MS);
        assert!(huge.message.as_ref().unwrap().len() <= MAX_MESSAGE_TEXT_BYTES);
    }

    #[test]
    fn a_batch_that_passes_keeps_no_log() {
        let job = job(&["a", "b"]);
        let report = junit(&[("a", true), ("b", true)]);
        let settled = settle_in_halves(&job, observed(Ran::exited(0), Some(&report)), "w");
        assert_eq!(settled.batch.unwrap().log, None);
    }

    #[test]
    fn unreported_tests_run_again_in_halves_in_the_same_attempt() {
        let job = job(&["a", "b", "c", "d", "e"]);
        // The runner died after `a`: b..e unreported.
        let report = junit(&[("a", true)]);
        let settled = settle_in_halves(&job, observed(Ran::exited(137), Some(&report)), "w");
        assert_eq!(settled.results.len(), 1);
        let halves: Vec<Vec<&str>> = settled
            .follow_ups
            .iter()
            .map(|j| j.ids().collect())
            .collect();
        assert_eq!(halves, [vec!["b", "c"], vec!["d", "e"]]);
        assert!(settled.follow_ups.iter().all(|j| j.attempt == 1));
        assert_eq!(settled.batch.unwrap().split_into, 2);

        // No report at all (killed at the batch's timeout): the same.
        let timed_out = crate::job::timed_out(std::time::Duration::from_secs(1));
        let settled = settle_in_halves(&job, observed(timed_out, None), "w");
        assert_eq!(settled.follow_ups.len(), 2);
        assert!(settled.batch.unwrap().timed_out);
    }

    #[test]
    fn unreported_tests_run_again_in_as_many_parts_as_free_slots() {
        let job = job(&["a", "b", "c", "d", "e", "f", "g", "h"]);
        let report = junit(&[("a", true)]);
        let parts = |k| -> Vec<Vec<String>> {
            settle(
                &job,
                observed(Ran::exited(137), Some(&report)),
                &settling(k),
            )
            .follow_ups
            .iter()
            .map(|j| j.ids().map(str::to_owned).collect())
            .collect()
        };
        assert_eq!(
            parts(3),
            [vec!["b", "c", "d"], vec!["e", "f"], vec!["g", "h"]],
            "near-equal parts in running order"
        );
        assert_eq!(parts(1).len(), 2, "at least halves");
        assert_eq!(parts(100).len(), 7, "at most one per test");
    }

    #[test]
    fn a_lone_unreported_test_runs_alone_and_alone_ends_as_its_command() {
        let pair = job(&["a", "b"]);
        let settled = settle_in_halves(
            &pair,
            observed(Ran::exited(1), Some(&junit(&[("a", true)]))),
            "w",
        );
        let again: Vec<Vec<&str>> = settled
            .follow_ups
            .iter()
            .map(|j| j.ids().collect())
            .collect();
        assert_eq!(again, [vec!["b"]]);

        let alone_job = job(&["b"]);
        let settled = settle_in_halves(&alone_job, observed(Ran::exited(139), Some("")), "w");
        assert!(settled.follow_ups.is_empty());
        let result = &settled.results[0];
        assert_eq!(
            (result.outcome, result.exit_code),
            (Outcome::Failed, Some(139))
        );
        assert_eq!(result.output, "the whole batch log\n");
    }

    #[test]
    fn a_runner_that_says_no_test_ran_attributes_every_test_without_bisecting() {
        let mut job = job(&["TestA", "TestB", "TestC"]);
        job.spec.runner_report = Some(RunnerReport {
            format: ReportFormat::GoTestJson,
            ids: IdScheme::Go,
        });
        let report = "./a_test.go:3:2: undefined: nope\n\
                      {\"Action\":\"fail\",\"Package\":\"p\",\"Elapsed\":0}\n";
        let settled = settle(&job, observed(Ran::exited(1), Some(report)), &settling(4));
        assert!(settled.follow_ups.is_empty(), "nothing bisected");
        assert_eq!(settled.results.len(), 3);
        for result in &settled.results {
            assert_eq!(
                (result.outcome, result.exit_code),
                (Outcome::Failed, Some(1))
            );
            assert!(
                result.output.contains("undefined: nope"),
                "{}",
                result.output
            );
        }
        assert!(settled
            .batch
            .unwrap()
            .log
            .unwrap()
            .contains("undefined: nope"));
    }

    #[test]
    fn an_infrastructure_error_is_every_tests_outcome() {
        let job = job(&["a", "b", "c"]);
        let error = crate::job::error_outcome("image missing".into());
        let settled = settle_in_halves(&job, observed(error, None), "w");
        assert!(settled.follow_ups.is_empty());
        assert_eq!(settled.results.len(), 3);
        assert!(settled.results.iter().all(|r| r.outcome == Outcome::Error));
    }

    #[test]
    fn a_job_of_one_without_a_report_is_todays_job() {
        let mut job = job(&["only"]);
        job.spec.runner_report = None;
        job.spec.command = vec!["run".into(), "{id}".into()];
        let settled = settle_in_halves(&job, observed(Ran::exited(0), None), "w");
        assert!(settled.batch.is_none());
        assert_eq!(settled.results[0].outcome, Outcome::Passed);
        assert_eq!(settled.results[0].batch, None);
    }
}
