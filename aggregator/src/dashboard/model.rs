//! What the dashboard shows, kept by the aggregator's loop: its open runs'
//! progress (read from their state at each snapshot), the fleet's workers
//! (from their heartbeats), the jobs queues' depths, the last finished runs
//! and the suites' flakiest tests, and the counters `/metrics` exposes. The
//! loop publishes a [`Snapshot`] of it; the web server only reads those.
//! Pure but for the clock the caller passes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use testfleet_types::messages::{
    FinalStatus, Heartbeat, RunEvent, RunEventKind, RunReport, TestFlakiness, VerdictKind,
};
use uuid::Uuid;

/// Finished runs the dashboard lists.
pub const RECENT_RUNS: usize = 50;
/// A worker not heard from for this long is gone from the dashboard.
pub const WORKER_SILENCE_MS: u64 = 10_000;
/// The flakiest tests listed across suites.
pub const FLAKIEST: usize = 20;
/// Suites whose flakiest tests the dashboard keeps, at most: those whose runs
/// finished last.
pub const MAX_SUITES: usize = 1_000;
/// Upper bounds of the run duration histogram's buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Everything the page and `/metrics` read, as of `at_ms`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    pub runs: Vec<RunView>,
    pub workers: Vec<WorkerView>,
    pub queues: Vec<QueueView>,
    pub recent: Vec<FinishedView>,
    pub flakiest: Vec<FlakyView>,
    pub totals: Totals,
}

/// A run in progress: its progress, and the time it should take yet.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub progress: RunProgress,
    /// Seconds left at the pace so far; `None` before any test settled.
    pub eta_secs: Option<u64>,
}

/// What one run's state says of its progress, as the loop reads it.
#[derive(Debug, Clone, Serialize)]
pub struct RunProgress {
    pub run_id: Uuid,
    pub suite: String,
    pub tests: usize,
    pub round: u32,
    /// Tests of the open round with an outcome, of how many.
    pub settled: usize,
    pub in_round: usize,
    pub passed: u32,
    pub failed: u32,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    /// An A/B run's regressions so far, as of its last round's close.
    pub compared: Option<ComparedProgress>,
}

/// An A/B run's regressions as they are confirmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ComparedProgress {
    /// Ids whose sides differ as a regression, confirmed or not yet.
    pub regressed: u32,
    /// Of those, confirmed.
    pub confirmed: u32,
    /// Differences (either way) still being confirmed.
    pub confirming: u32,
    /// The first regressions' ids, confirmed ones first.
    pub first: Vec<String>,
}

/// Regression ids a dashboard snapshot names, at most.
pub const MAX_REGRESSIONS_SHOWN: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub slots: u32,
    pub busy: usize,
    pub executors: Vec<String>,
    pub running: Vec<RunningView>,
    pub seen_ms_ago: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunningView {
    pub run_id: Uuid,
    pub test: String,
    pub attempt: u32,
    pub for_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub queue: String,
    /// `None`: the broker did not say (the queue is gone).
    pub waiting: Option<u32>,
}

/// A finished run, with where its report is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FinishedView {
    pub run_id: Uuid,
    pub suite: String,
    pub verdict: &'static str,
    pub passed: bool,
    pub tests: usize,
    pub failed: usize,
    pub flaky: usize,
    pub quarantined: usize,
    pub duration_secs: f64,
    pub finished_at_ms: u64,
    /// The aggregator's `report.html` of it, when it wrote one.
    pub report: Option<String>,
    /// Of an A/B run, its regressions.
    pub regressed: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlakyView {
    pub suite: String,
    pub test_id: String,
    pub flaky: u32,
    pub failed: u32,
    pub runs: u32,
}

/// Counters since the aggregator started, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Attempts counted, by outcome.
    pub finished: BTreeMap<&'static str, u64>,
    /// Runs finished, by verdict.
    pub runs: BTreeMap<&'static str, u64>,
    /// Finished runs' durations: counts per bucket of [`DURATION_BUCKETS`]
    /// (cumulative, as Prometheus wants them), their sum and count.
    pub duration_buckets: Vec<u64>,
    pub duration_sum_secs: f64,
    pub duration_count: u64,
}

/// What a finished run leaves on the dashboard.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub view: FinishedView,
    pub verdict: VerdictKind,
    pub flakiest: Vec<TestFlakiness>,
    pub runs_counted: u32,
}

impl FinishedRun {
    /// A run that says nothing, for tests of what carries one.
    #[cfg(test)]
    pub fn blank() -> Self {
        FinishedRun {
            view: FinishedView::default(),
            verdict: VerdictKind::Passed,
            flakiest: Vec::new(),
            runs_counted: 0,
        }
    }

    /// The dashboard's record of `report` (quarantine and flakiness applied),
    /// its `report.html` served at `report` if the aggregator wrote it.
    pub fn of(report: &RunReport, report_link: Option<String>) -> Self {
        let count = |status| report.tests.iter().filter(|t| t.status == status).count();
        let failed = report.tests.iter().filter(|t| !t.status.is_pass()).count();
        let (flakiest, runs_counted) = match &report.flakiness {
            Some(f) => (
                f.tests.iter().filter(|t| t.flaky > 0).cloned().collect(),
                f.runs,
            ),
            None => (Vec::new(), 0),
        };
        let duration_ms = report.finished_at_ms.saturating_sub(report.created_at_ms);
        FinishedRun {
            view: FinishedView {
                run_id: report.run_id,
                suite: report.suite.clone(),
                verdict: report.verdict.as_str(),
                passed: report.verdict == VerdictKind::Passed,
                tests: report.tests.len(),
                failed,
                flaky: count(FinalStatus::Flaky),
                quarantined: report
                    .tests
                    .iter()
                    .filter(|t| t.quarantined.is_some())
                    .count(),
                duration_secs: duration_ms as f64 / 1000.0,
                finished_at_ms: report.finished_at_ms,
                report: report_link,
                regressed: report
                    .comparison
                    .as_ref()
                    .map(|c| c.count(testfleet_types::messages::CompareClass::Regressed)),
            },
            verdict: report.verdict,
            flakiest,
            runs_counted,
        }
    }
}

/// The dashboard's state between snapshots.
#[derive(Debug, Default)]
pub struct Model {
    workers: HashMap<String, (Heartbeat, u64)>,
    recent: VecDeque<FinishedView>,
    /// Per suite, its flakiest tests as its last finished run saw them, and
    /// when that run finished (a count): the [`MAX_SUITES`] suites that
    /// finished last.
    flakiest: BTreeMap<String, (u64, u32, Vec<TestFlakiness>)>,
    finished_count: u64,
    /// The flakiest across those suites, made when a run finishes rather
    /// than at every snapshot.
    flakiest_view: Vec<FlakyView>,
    queues: Vec<QueueView>,
    totals: Totals,
}

impl Model {
    /// A worker's heartbeat, received at `now_ms`.
    pub fn heartbeat(&mut self, heartbeat: Heartbeat, now_ms: u64) {
        if self.workers.len() >= crate::fleet::MAX_WORKERS
            && !self.workers.contains_key(&heartbeat.worker_id)
        {
            return;
        }
        self.workers
            .insert(heartbeat.worker_id.clone(), (heartbeat, now_ms));
    }

    /// Counts the attempts that events say finished.
    pub fn observe(&mut self, events: &[RunEvent]) {
        for event in events {
            if let RunEventKind::TestFinished { status, .. } = &event.kind {
                *self.totals.finished.entry(status.name()).or_default() += 1;
            }
        }
    }

    /// A run's verdict went out.
    pub fn finished(&mut self, run: FinishedRun) {
        let duration = run.view.duration_secs;
        let totals = &mut self.totals;
        *totals.runs.entry(run.view.verdict).or_default() += 1;
        if totals.duration_buckets.is_empty() {
            totals.duration_buckets = vec![0; DURATION_BUCKETS.len()];
        }
        for (bucket, bound) in totals.duration_buckets.iter_mut().zip(DURATION_BUCKETS) {
            if duration <= bound {
                *bucket += 1;
            }
        }
        totals.duration_sum_secs += duration;
        totals.duration_count += 1;
        if !run.flakiest.is_empty() {
            self.finished_count += 1;
            self.flakiest.insert(
                run.view.suite.clone(),
                (self.finished_count, run.runs_counted, run.flakiest),
            );
            if self.flakiest.len() > MAX_SUITES {
                let oldest = self
                    .flakiest
                    .iter()
                    .min_by_key(|(_, (finished, _, _))| *finished)
                    .map(|(suite, _)| suite.clone());
                if let Some(oldest) = oldest {
                    self.flakiest.remove(&oldest);
                }
            }
            self.flakiest_view = self.flakiest_views();
        }
        self.recent.push_front(run.view);
        self.recent.truncate(RECENT_RUNS);
    }

    /// The jobs queues' depths, as the broker last said.
    pub fn queues(&mut self, queues: Vec<QueueView>) {
        self.queues = queues;
    }

    /// Everything at `now_ms`, with the open runs' progress; workers silent
    /// too long are forgotten.
    pub fn snapshot(&mut self, runs: Vec<RunProgress>, now_ms: u64) -> Snapshot {
        self.workers
            .retain(|_, (_, seen)| now_ms.saturating_sub(*seen) < WORKER_SILENCE_MS);
        let mut workers: Vec<WorkerView> = self
            .workers
            .values()
            .map(|(beat, seen)| worker_view(beat, *seen, now_ms))
            .collect();
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Snapshot {
            at_ms: now_ms,
            runs: runs.into_iter().map(|run| run_view(run, now_ms)).collect(),
            workers,
            queues: self.queues.clone(),
            recent: self.recent.iter().cloned().collect(),
            flakiest: self.flakiest_view.clone(),
            totals: self.totals.clone(),
        }
    }

    fn flakiest_views(&self) -> Vec<FlakyView> {
        let mut views: Vec<FlakyView> = self
            .flakiest
            .iter()
            .flat_map(|(suite, (_, runs, tests))| {
                tests.iter().map(move |t| FlakyView {
                    suite: suite.clone(),
                    test_id: t.test_id.clone(),
                    flaky: t.flaky,
                    failed: t.failed,
                    runs: *runs,
                })
            })
            .collect();
        // By share of runs flaky, then by count.
        views.sort_by(|a, b| {
            let share = |v: &FlakyView| u64::from(v.flaky) * 1000 / u64::from(v.runs.max(1));
            share(b).cmp(&share(a)).then(b.flaky.cmp(&a.flaky))
        });
        views.truncate(FLAKIEST);
        views
    }
}

fn run_view(run: RunProgress, now_ms: u64) -> RunView {
    let elapsed_ms = now_ms.saturating_sub(run.created_at_ms);
    let left = run.in_round.saturating_sub(run.settled) as u64;
    let eta_secs =
        (run.settled > 0).then(|| elapsed_ms.saturating_mul(left) / run.settled as u64 / 1000);
    RunView {
        progress: run,
        eta_secs,
    }
}

fn worker_view(beat: &Heartbeat, seen: u64, now_ms: u64) -> WorkerView {
    WorkerView {
        worker_id: beat.worker_id.clone(),
        slots: beat.slots,
        busy: beat.running.len(),
        executors: beat
            .executors
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        running: beat
            .running
            .iter()
            .map(|job| RunningView {
                run_id: job.run_id,
                test: job.test.clone(),
                attempt: job.attempt,
                for_secs: now_ms.saturating_sub(job.started_at_ms) / 1000,
            })
            .collect(),
        seen_ms_ago: now_ms.saturating_sub(seen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::{ExecutorKind, RunningTest};

    fn beat(id: &str, running: usize) -> Heartbeat {
        Heartbeat {
            worker_id: id.into(),
            slots: 4,
            executors: vec![ExecutorKind::Process],
            running: (0..running)
                .map(|i| RunningTest {
                    run_id: Uuid::nil(),
                    test: format!("t{i}"),
                    attempt: 1,
                    started_at_ms: 1_000,
                })
                .collect(),
            at_ms: 1_000,
            host: String::new(),
            cores: 0,
        }
    }

    #[test]
    fn workers_show_their_busy_slots_and_go_when_silent() {
        let mut model = Model::default();
        model.heartbeat(beat("a", 3), 1_000);
        model.heartbeat(beat("b", 0), 8_000);
        let snapshot = model.snapshot(Vec::new(), 9_000);
        assert_eq!(snapshot.workers.len(), 2);
        assert_eq!(
            (snapshot.workers[0].busy, snapshot.workers[0].slots),
            (3, 4)
        );
        assert_eq!(snapshot.workers[0].running[0].for_secs, 8);
        let later = model.snapshot(Vec::new(), 14_000);
        let ids: Vec<&str> = later.workers.iter().map(|w| w.worker_id.as_str()).collect();
        assert_eq!(ids, ["b"], "a was silent 13 s");
    }

    #[test]
    fn a_runs_eta_follows_its_pace() {
        let progress = RunProgress {
            run_id: Uuid::nil(),
            suite: "s".into(),
            tests: 100,
            round: 1,
            settled: 25,
            in_round: 100,
            passed: 25,
            failed: 0,
            created_at_ms: 0,
            deadline_ms: 1_000_000,
            compared: None,
        };
        let view = run_view(progress.clone(), 10_000);
        assert_eq!(view.eta_secs, Some(30));
        let none = run_view(
            RunProgress {
                settled: 0,
                ..progress
            },
            10_000,
        );
        assert_eq!(none.eta_secs, None);
    }

    #[test]
    fn run_durations_fill_cumulative_buckets() {
        let mut model = Model::default();
        for secs in [0.5, 20.0, 7200.0] {
            model.finished(FinishedRun {
                view: FinishedView {
                    run_id: Uuid::nil(),
                    suite: "s".into(),
                    verdict: "passed",
                    passed: true,
                    tests: 1,
                    failed: 0,
                    flaky: 0,
                    quarantined: 0,
                    duration_secs: secs,
                    finished_at_ms: 0,
                    report: None,
                    regressed: None,
                },
                verdict: VerdictKind::Passed,
                flakiest: Vec::new(),
                runs_counted: 0,
            });
        }
        let totals = model.snapshot(Vec::new(), 0).totals;
        assert_eq!(totals.duration_buckets[0], 1, "≤ 1 s");
        assert_eq!(totals.duration_buckets[3], 2, "≤ 30 s");
        assert_eq!(
            *totals.duration_buckets.last().unwrap(),
            2,
            "7200 s is past every bound"
        );
        assert_eq!(totals.duration_count, 3);
        assert_eq!(totals.runs["passed"], 3);
    }

    #[test]
    fn the_flakiest_of_the_last_suites_are_kept_and_made_once() {
        let mut model = Model::default();
        for suite in 0..(MAX_SUITES + 500) {
            model.finished(FinishedRun {
                view: FinishedView {
                    run_id: Uuid::nil(),
                    suite: format!("suite-{suite}"),
                    verdict: "passed",
                    passed: true,
                    tests: 1,
                    failed: 0,
                    flaky: 1,
                    quarantined: 0,
                    duration_secs: 1.0,
                    finished_at_ms: 0,
                    report: None,
                    regressed: None,
                },
                verdict: VerdictKind::Passed,
                flakiest: vec![TestFlakiness {
                    test_id: "t".into(),
                    flaky: 1,
                    failed: 0,
                }],
                runs_counted: 2,
            });
        }
        assert_eq!(model.flakiest.len(), MAX_SUITES);
        assert!(!model.flakiest.contains_key("suite-0"), "the oldest went");
        assert!(model
            .flakiest
            .contains_key(&format!("suite-{}", MAX_SUITES + 499)));
        assert_eq!(model.snapshot(Vec::new(), 0).flakiest.len(), FLAKIEST);
    }
}
