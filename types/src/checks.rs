//! Every value of a decoded message checked against its bound
//! (`limits.rs`): a message whose values are out of range is refused with the
//! reason, as garbage is, so that no arithmetic downstream (deadlines,
//! timelines, progress) meets a value it cannot hold.

use crate::limits::*;
use crate::messages::{
    BatchRecord, Batches, Body, Comparison, Flakiness, Job, ResumeOutcome, RunAnnounce, RunEvent,
    RunEventKind, RunReport, RunSpec, TestResult,
};

/// Checks every value of a decoded body against the bounds above; the `Err`
/// is the reason, for the parked message's log line.
pub fn check(body: &Body) -> Result<(), String> {
    match body {
        Body::Run(announce) => check_announce(announce),
        Body::Job(job) => check_job(job),
        Body::Result(result) => check_result(result),
        Body::Results(results) => results.iter().try_for_each(check_result),
        Body::Batches(batches) => {
            batches.batches.iter().try_for_each(check_batch)?;
            batches.results.iter().try_for_each(check_result)
        }
        Body::Report(report) => check_report(report),
        Body::HistoryQuery(query) => check_len("suite", &query.suite, MAX_TEST_ID_BYTES),
        Body::History(history) => {
            check_len("suite", &history.suite, MAX_TEST_ID_BYTES)?;
            at_most(
                "host_busy_permille",
                u64::from(history.host_busy_permille.unwrap_or(0)),
                1000,
            )?;
            if let Some(capacity) = history.capacity {
                at_most("slots", u64::from(capacity.slots), u64::from(u32::MAX))?;
                at_most(
                    "cores",
                    u64::from(capacity.cores),
                    u64::from(capacity.slots),
                )?;
            }
            history.durations_ms.iter().try_for_each(|(id, ms)| {
                check_id(id)?;
                at_most("a history duration", *ms, MAX_DURATION_MS)
            })
        }
        Body::Event(event) => check_event(event),
        Body::Events(events) => events.iter().try_for_each(check_event),
        Body::Discover(discover) => {
            check_time("deadline_ms", discover.deadline_ms)?;
            check_spec(&discover.spec)
        }
        Body::Listing(listing) => {
            at_most(
                "a listing's length",
                listing.listing.len() as u64,
                MAX_PARTED_BYTES as u64,
            )?;
            check_len(
                "output",
                &listing.output,
                MAX_OUTPUT_CAP_BYTES as usize + OUTPUT_SLACK_BYTES,
            )
        }
        Body::Queues(notice) => {
            at_most(
                "runs in a notice",
                notice.runs.len() as u64,
                MAX_RUNS_PER_NOTICE as u64,
            )?;
            notice.runs.iter().try_for_each(|run| {
                check_weight(run.weight)?;
                check_time("deadline_ms", run.deadline_ms)
            })
        }
        Body::Resume(request) => check_time("deadline_ms", request.deadline_ms),
        Body::Heartbeat(heartbeat) => {
            check_len("worker_id", &heartbeat.worker_id, MAX_TEST_ID_BYTES)?;
            check_len("host", &heartbeat.host, MAX_TEST_ID_BYTES)?;
            at_most("cores", u64::from(heartbeat.cores), u64::from(MAX_CORES))?;
            check_time("at_ms", heartbeat.at_ms)?;
            at_most(
                "jobs running on a worker",
                heartbeat.running.len() as u64,
                u64::from(u16::MAX),
            )?;
            heartbeat.running.iter().try_for_each(|job| {
                check_len("a running test", &job.test, MAX_TEST_ID_BYTES)?;
                check_attempt(job.attempt)?;
                check_time("started_at_ms", job.started_at_ms)
            })
        }
        Body::Resumed(answer) => match answer.outcome {
            ResumeOutcome::Resumed {
                tests,
                queued,
                round,
                deadline_ms,
            } => {
                at_most("tests in a run", u64::from(tests), MAX_TESTS_PER_RUN as u64)?;
                at_most("tests queued", u64::from(queued), u64::from(tests))?;
                at_most("a round", u64::from(round), u64::from(MAX_ROUNDS))?;
                check_time("deadline_ms", deadline_ms)
            }
            ResumeOutcome::Finished | ResumeOutcome::Unknown | ResumeOutcome::NotPermitted => {
                Ok(())
            }
        },
        Body::Part(part) => {
            let parts = MAX_PARTED_BYTES.div_ceil(PART_BYTES) as u32;
            at_most("a part count", u64::from(part.count), u64::from(parts))?;
            if part.index >= part.count {
                return Err(format!("part {} of {}", part.index, part.count));
            }
            at_most("a part's size", part.bytes.len() as u64, PART_BYTES as u64)
        }
    }
}

/// Takes out of a worker's results (`Results`, `Batches`) each result and
/// batch record out of bounds, with its reason, and leaves the rest: one
/// bad result costs itself, not the others of its message, which other
/// jobs' tests (and other runs') share. Any other body is left whole.
pub fn sort_out(body: Body) -> (Body, Vec<(Body, String)>) {
    match body {
        Body::Results(results) => {
            let (results, refused) = keep_within(results, check_result);
            let refused = refused
                .into_iter()
                .map(|(result, why)| (Body::Result(result), why))
                .collect();
            (Body::Results(results), refused)
        }
        Body::Batches(Batches { batches, results }) => {
            let (batches, bad_batches) = keep_within(batches, check_batch);
            let (results, bad_results) = keep_within(results, check_result);
            let refused = bad_batches
                .into_iter()
                .map(|(batch, why)| {
                    let alone = Batches {
                        batches: vec![batch],
                        results: Vec::new(),
                    };
                    (Body::Batches(alone), why)
                })
                .chain(
                    bad_results
                        .into_iter()
                        .map(|(result, why)| (Body::Result(result), why)),
                )
                .collect();
            (Body::Batches(Batches { batches, results }), refused)
        }
        other => (other, Vec::new()),
    }
}

/// `items` split into those `check` passes and those it refuses, with why.
fn keep_within<T>(
    items: Vec<T>,
    check: impl Fn(&T) -> Result<(), String>,
) -> (Vec<T>, Vec<(T, String)>) {
    let mut kept = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for item in items {
        match check(&item) {
            Ok(()) => kept.push(item),
            Err(why) => refused.push((item, why)),
        }
    }
    (kept, refused)
}

fn check_announce(announce: &RunAnnounce) -> Result<(), String> {
    check_len("suite", &announce.suite, MAX_TEST_ID_BYTES)?;
    check_weight(announce.weight)?;
    check_quarantine(announce)?;
    check_signatures(announce)?;
    check_ab(announce)?;
    check_time("created_at_ms", announce.created_at_ms)?;
    check_time("deadline_ms", announce.deadline_ms)?;
    let lasts = announce.deadline_ms.saturating_sub(announce.created_at_ms);
    at_most("a run's length in ms", lasts, MAX_RUN_MS)?;
    check_spec(&announce.spec)?;
    at_most(
        "tests in a run",
        announce.tests.len() as u64,
        MAX_TESTS_PER_RUN as u64,
    )?;
    announce.tests.iter().try_for_each(|id| check_id(id))
}

/// An A/B run's settings, and its tests all paired.
fn check_ab(announce: &RunAnnounce) -> Result<(), String> {
    let Some(ab) = &announce.ab else {
        return Ok(());
    };
    at_most(
        "confirmations",
        u64::from(ab.confirm),
        u64::from(MAX_CONFIRM),
    )?;
    check_len("baseline_image", &ab.baseline_image, MAX_SPEC_BYTES)?;
    if let Some(recorded) = &ab.recorded {
        check_len("recorded run", &recorded.run, MAX_SPEC_BYTES)?;
        at_most(
            "recorded ids",
            recorded.outcomes.len() as u64,
            announce.tests.len() as u64 / 2,
        )?;
        recorded.outcomes.iter().try_for_each(|outcomes| {
            at_most(
                "recorded attempts of an id",
                outcomes.len() as u64,
                MAX_RECORDED_ATTEMPTS as u64,
            )
        })?;
        // Each becomes an attempt in the aggregator's memory: no more, in
        // all, than a run's first round on both sides would make.
        let recorded_attempts: u64 = recorded.outcomes.iter().map(|o| o.len() as u64).sum();
        at_most(
            "recorded attempts in all",
            recorded_attempts,
            announce.tests.len() as u64,
        )?;
    }
    crate::sides::check_paired(announce)
}

fn check_job(job: &Job) -> Result<(), String> {
    check_attempt(job.attempt)?;
    check_time("deadline_ms", job.deadline_ms)?;
    check_time("published_at_ms", job.published_at_ms)?;
    check_spec(&job.spec)?;
    if job.tests.is_empty() {
        return Err("a job without tests".into());
    }
    at_most(
        "tests in a job",
        job.tests.len() as u64,
        MAX_TESTS_PER_JOB as u64,
    )?;
    job.tests.iter().try_for_each(|test| {
        check_id(&test.id)?;
        if let Some(command_id) = &test.command_id {
            check_id(command_id)?;
        }
        at_most("a test's allowance_ms", test.allowance_ms, MAX_TIMEOUT_MS)
    })
}

/// What a worker may say about one batch.
fn check_batch(batch: &BatchRecord) -> Result<(), String> {
    check_attempt(batch.attempt)?;
    check_len("worker_id", &batch.worker_id, MAX_TEST_ID_BYTES)?;
    at_most(
        "tests in a batch",
        u64::from(batch.tests),
        MAX_TESTS_PER_JOB as u64,
    )?;
    at_most(
        "tests reported",
        u64::from(batch.reported),
        u64::from(batch.tests),
    )?;
    at_most(
        "jobs split into",
        u64::from(batch.split_into),
        u64::from(MAX_SPLIT_PARTS),
    )?;
    at_most(
        "host_busy_permille",
        u64::from(batch.host_busy_permille.unwrap_or(0)),
        1000,
    )?;
    check_time("started_at_ms", batch.started_at_ms)?;
    check_time("command_started_at_ms", batch.command_started_at_ms)?;
    check_time("finished_at_ms", batch.finished_at_ms)?;
    let log_max = MAX_OUTPUT_CAP_BYTES as usize + OUTPUT_SLACK_BYTES;
    match &batch.log {
        Some(log) => check_len("log", log, log_max),
        None => Ok(()),
    }
}

/// What a worker may say about one attempt.
pub fn check_result(result: &TestResult) -> Result<(), String> {
    check_id(&result.test_id)?;
    check_attempt(result.attempt)?;
    at_most("duration_ms", result.duration_ms, MAX_DURATION_MS)?;
    check_time("started_at_ms", result.started_at_ms)?;
    check_time("finished_at_ms", result.finished_at_ms)?;
    check_time("published_at_ms", result.published_at_ms)?;
    let output_max = MAX_OUTPUT_CAP_BYTES as usize + OUTPUT_SLACK_BYTES;
    check_len("output", &result.output, output_max)?;
    check_len("worker_id", &result.worker_id, MAX_TEST_ID_BYTES)?;
    match &result.message {
        Some(message) => check_len("message", message, MAX_MESSAGE_TEXT_BYTES),
        None => Ok(()),
    }
}

/// A run spec, from the wire or from configuration.
pub fn check_spec(spec: &RunSpec) -> Result<(), String> {
    if spec.command.is_empty() {
        return Err("the command is empty".into());
    }
    if !(spec.timeout_ms >= 1 && spec.timeout_ms <= MAX_TIMEOUT_MS) {
        return Err(format!(
            "timeout_ms {} is not within 1..={MAX_TIMEOUT_MS}",
            spec.timeout_ms
        ));
    }
    if let Some(quiet) = spec.quiet_timeout_ms {
        if !(1..=MAX_TIMEOUT_MS).contains(&quiet) {
            return Err(format!(
                "quiet_timeout_ms {quiet} is not within 1..={MAX_TIMEOUT_MS}"
            ));
        }
    }
    at_most(
        "output_cap_bytes",
        spec.output_cap_bytes,
        MAX_OUTPUT_CAP_BYTES,
    )?;
    let retry = &spec.retry;
    if !(retry.threshold.is_finite() && (0.0..=1.0).contains(&retry.threshold)) {
        return Err(format!(
            "retry threshold {} is not a ratio",
            retry.threshold
        ));
    }
    if !(1..=MAX_ROUNDS).contains(&retry.max_rounds) {
        return Err(format!(
            "max_rounds {} is not within 1..={MAX_ROUNDS}",
            retry.max_rounds
        ));
    }
    if !(1..=MAX_WARM_REUSE).contains(&spec.warm_reuse) {
        return Err(format!(
            "warm_reuse {} is not within 1..={MAX_WARM_REUSE}",
            spec.warm_reuse
        ));
    }
    let text: usize = spec.command.iter().map(String::len).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + spec.image.len()
        + spec.workdir.as_ref().map_or(0, String::len)
        + spec.user.as_ref().map_or(0, String::len)
        + spec.container.network.len()
        + spec.container.tmpfs.iter().map(String::len).sum::<usize>()
        + spec
            .container
            .cap_add
            .iter()
            .map(String::len)
            .sum::<usize>();
    at_most(
        "the spec's command and environment, in bytes",
        text as u64,
        MAX_SPEC_BYTES as u64,
    )
}

fn check_comparison(comparison: &Comparison) -> Result<(), String> {
    at_most(
        "confirmations",
        u64::from(comparison.confirm),
        u64::from(MAX_CONFIRM),
    )?;
    check_len("baseline_image", &comparison.baseline_image, MAX_SPEC_BYTES)?;
    at_most(
        "compared tests",
        comparison.tests.len() as u64,
        MAX_TESTS_PER_RUN as u64,
    )?;
    comparison.tests.iter().try_for_each(|test| {
        check_id(&test.id)?;
        for tally in [test.baseline, test.candidate] {
            let attempts =
                u64::from(tally.passed) + u64::from(tally.failed) + u64::from(tally.infra);
            at_most("attempts of a side", attempts, u64::from(MAX_ROUNDS))?;
        }
        Ok(())
    })
}

fn check_report(report: &RunReport) -> Result<(), String> {
    check_time("created_at_ms", report.created_at_ms)?;
    check_time("finished_at_ms", report.finished_at_ms)?;
    at_most("rounds", u64::from(report.rounds), u64::from(MAX_ROUNDS))?;
    check_spec(&report.spec)?;
    report.batches.iter().try_for_each(check_batch)?;
    if let Some(flakiness) = &report.flakiness {
        check_flakiness(flakiness)?;
    }
    if let Some(comparison) = &report.comparison {
        check_comparison(comparison)?;
    }
    if let Some(cache) = &report.cache {
        at_most("caches", cache.caches.len() as u64, MAX_CACHES as u64)?;
        for counters in &cache.caches {
            check_len("a cache's name", &counters.name, MAX_TEST_ID_BYTES)?;
        }
        if let Some(error) = &cache.error {
            check_len("a cache's error", error, MAX_REASON_BYTES)?;
        }
    }
    for test in &report.tests {
        check_id(&test.id)?;
        if let Some(reason) = &test.quarantined {
            check_len("a quarantine reason", reason, MAX_REASON_BYTES)?;
        }
        at_most(
            "attempts of a test",
            test.attempts.len() as u64,
            u64::from(MAX_ROUNDS),
        )?;
        for attempt in &test.attempts {
            check_attempt(attempt.attempt)?;
            at_most("duration_ms", attempt.duration_ms, MAX_DURATION_MS)?;
            for time in [
                attempt.started_at_ms,
                attempt.finished_at_ms,
                attempt.published_at_ms,
            ]
            .into_iter()
            .flatten()
            {
                check_time("an attempt's time", time)?;
            }
            if let Some(signature) = &attempt.signature {
                check_len(
                    "a signature's name",
                    &signature.name,
                    MAX_SIGNATURE_NAME_BYTES,
                )?;
            }
        }
    }
    Ok(())
}

fn check_flakiness(flakiness: &Flakiness) -> Result<(), String> {
    at_most(
        "tests in a flakiness",
        flakiness.tests.len() as u64,
        MAX_FLAKINESS_TESTS as u64,
    )?;
    flakiness.tests.iter().try_for_each(|test| {
        check_id(&test.test_id)?;
        at_most(
            "flaky runs",
            u64::from(test.flaky),
            u64::from(flakiness.runs),
        )?;
        at_most(
            "failed runs",
            u64::from(test.failed),
            u64::from(flakiness.runs),
        )
    })
}

fn check_quarantine(announce: &RunAnnounce) -> Result<(), String> {
    at_most(
        "quarantine entries",
        announce.quarantine.len() as u64,
        MAX_QUARANTINE as u64,
    )?;
    if let Some(percent) = announce.auto_quarantine_percent {
        at_most("auto_quarantine_percent", u64::from(percent), 100)?;
    }
    announce.quarantine.iter().try_for_each(|entry| {
        check_id(&entry.test_id)?;
        check_len("a quarantine reason", &entry.reason, MAX_REASON_BYTES)?;
        check_time("a quarantine's expires_ms", entry.expires_ms)
    })
}

fn check_signatures(announce: &RunAnnounce) -> Result<(), String> {
    at_most(
        "signature rules",
        announce.signatures.len() as u64,
        MAX_SIGNATURES as u64,
    )?;
    announce.signatures.iter().try_for_each(|rule| {
        if rule.name.is_empty() {
            return Err("a signature rule without a name".into());
        }
        check_len("a signature's name", &rule.name, MAX_SIGNATURE_NAME_BYTES)?;
        check_len(
            "a signature's pattern",
            &rule.pattern,
            MAX_SIGNATURE_PATTERN_BYTES,
        )
    })
}

fn check_event(event: &RunEvent) -> Result<(), String> {
    check_time("at_ms", event.at_ms)?;
    match &event.kind {
        RunEventKind::TestStarted {
            test_id, attempt, ..
        }
        | RunEventKind::TestRetried { test_id, attempt } => {
            check_id(test_id)?;
            check_attempt(*attempt)
        }
        RunEventKind::TestFinished {
            test_id,
            attempt,
            duration_ms,
            ..
        } => {
            check_id(test_id)?;
            check_attempt(*attempt)?;
            at_most("duration_ms", *duration_ms, MAX_DURATION_MS)
        }
        RunEventKind::RoundClosed {
            round,
            counts,
            retrying,
        } => {
            check_attempt(*round)?;
            let tests = MAX_TESTS_PER_RUN as u64;
            at_most("tests retrying", u64::from(*retrying), tests)?;
            at_most("a round's count", counts.total(), tests)
        }
    }
}

/// A test id: bounded, and without NUL, which no argv can carry.
fn check_weight(weight: u32) -> Result<(), String> {
    if weight == 0 {
        return Err("a weight of 0".into());
    }
    at_most("a weight", u64::from(weight), u64::from(MAX_WEIGHT))
}

fn check_id(id: &str) -> Result<(), String> {
    if id.contains('\0') {
        return Err("a test id holds a NUL byte".into());
    }
    check_len("a test id", id, MAX_TEST_ID_BYTES)
}

fn check_attempt(attempt: u32) -> Result<(), String> {
    if (1..=MAX_ROUNDS).contains(&attempt) {
        Ok(())
    } else {
        Err(format!("attempt {attempt} is not within 1..={MAX_ROUNDS}"))
    }
}

fn check_time(what: &str, ms: u64) -> Result<(), String> {
    at_most(what, ms, MAX_TIME_MS)
}

fn check_len(what: &str, text: &str, max: usize) -> Result<(), String> {
    at_most(&format!("{what}'s length"), text.len() as u64, max as u64)
}

fn at_most(what: &str, value: u64, max: u64) -> Result<(), String> {
    if value <= max {
        Ok(())
    } else {
        Err(format!("{what} {value} is over the bound of {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Outcome, RoundCounts};
    use crate::strategies::sample_spec;

    fn result() -> TestResult {
        TestResult {
            run_id: uuid::Uuid::nil(),
            test_id: "t".into(),
            attempt: 1,
            outcome: Outcome::Passed,
            exit_code: Some(0),
            duration_ms: 5,
            worker_id: "w".into(),
            started_at_ms: 1,
            finished_at_ms: 6,
            output: String::new(),
            output_truncated: false,
            message: None,
            published_at_ms: 0,
            batch: None,
            reason: None,
        }
    }

    #[test]
    fn values_out_of_range_are_refused_with_their_name() {
        let mut huge = result();
        huge.duration_ms = u64::MAX;
        let reason = check(&Body::Result(huge)).unwrap_err();
        assert!(reason.contains("duration_ms"), "{reason}");

        let mut zero = result();
        zero.attempt = 0;
        assert!(check(&Body::Results(vec![result(), zero])).is_err());

        let mut spec = sample_spec();
        spec.timeout_ms = 100_000_000_000_000_000;
        let reason = check_spec(&spec).unwrap_err();
        assert!(reason.contains("timeout_ms"), "{reason}");
        spec = sample_spec();
        spec.output_cap_bytes = u64::MAX;
        assert!(check_spec(&spec).unwrap_err().contains("output_cap_bytes"));
        spec = sample_spec();
        spec.retry.threshold = f64::NAN;
        assert!(check_spec(&spec).is_err());
    }

    /// A `--compare` record's attempts become attempts in the aggregator's
    /// memory: at most as many in all as the run has tests.
    #[test]
    fn a_compared_runs_record_is_bounded_in_all() {
        use crate::messages::{AbRun, JobQueue, RecordedSide, RunAnnounce};
        let announce = |outcomes: Vec<Vec<Outcome>>| RunAnnounce {
            run_id: uuid::Uuid::nil(),
            suite: "s".into(),
            created_at_ms: 1,
            deadline_ms: 2,
            spec: sample_spec(),
            tests: crate::sides::paired(vec!["a".into(), "b".into()]),
            verdict_token: None,
            queue: JobQueue::Own,
            weight: 1,
            auto_quarantine_percent: None,
            quarantine: Vec::new(),
            signatures: Vec::new(),
            ab: Some(AbRun {
                baseline_image: "run r".into(),
                confirm: 1,
                recorded: Some(RecordedSide {
                    run: "r".into(),
                    outcomes,
                }),
            }),
        };
        let two = vec![Outcome::Failed, Outcome::Passed];
        check(&Body::Run(announce(vec![two.clone(), two.clone()]))).unwrap();
        let over = announce(vec![vec![Outcome::Failed; 3], two]);
        let reason = check(&Body::Run(over)).unwrap_err();
        assert!(reason.contains("recorded attempts in all"), "{reason}");
    }

    #[test]
    fn a_round_of_every_kind_at_the_limit_is_accepted() {
        let event = RunEvent {
            run_id: uuid::Uuid::nil(),
            at_ms: MAX_TIME_MS,
            kind: RunEventKind::RoundClosed {
                round: MAX_ROUNDS,
                counts: RoundCounts {
                    passed: MAX_TESTS_PER_RUN as u32,
                    ..RoundCounts::default()
                },
                retrying: 0,
            },
        };
        check(&Body::Event(event.clone())).unwrap();
        let mut over = event;
        over.kind = RunEventKind::RoundClosed {
            round: u32::MAX,
            counts: RoundCounts::default(),
            retrying: 0,
        };
        assert!(check(&Body::Event(over)).is_err());
        check(&Body::Result(result())).unwrap();
    }
}
