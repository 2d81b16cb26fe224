//! Finishing a run off the service loop: writing its reports (on a blocking
//! thread, where a renderer that panics costs that run's files only), fitting
//! its verdict under its bound and publishing it. A big run's reports take
//! seconds to write; meanwhile the loop goes on counting other runs' results
//! and answering history queries.
//!
//! The loop hands a finished run over ([`Finishing::start`]) and learns of its
//! end through [`Finishing::next`]; only then does it record the run's
//! durations and remove its journal, so a run whose verdict did not go out is
//! reloaded from its journal and finished again.

use crate::cache_stats::{self, CacheEndpoint};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use testfleet_types::messages::CACHE_NETWORK;

use lapin::Channel;
use testfleet_common::broker::{self, BrokerError};
use testfleet_report as report;
use testfleet_types::limits::MAX_VERDICT_BYTES;
use testfleet_types::messages::{Body, Flakiness, RunReport};
use testfleet_types::now_ms;
use testfleet_types::triage::TriageRule;
use tokio::task::{self, JoinSet};
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::dashboard::model::FinishedRun;
use crate::outcomes::{self, OutcomeStore, RunOutcomes};
use crate::{quarantine, verdict};

/// Where a finished run's reports go and how failures are grouped in them.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub report_dir: PathBuf,
    pub triage_rules: Vec<TriageRule>,
    /// The verdicts exchange.
    pub verdicts: String,
    /// The suites' recent outcomes, for the reports' flakiness.
    pub outcomes: OutcomeStore,
    /// The fleet's package caches, whose figures a run of the cache
    /// network reports.
    pub caches: Vec<CacheEndpoint>,
}

/// A run whose finishing ended: what the loop still does with it.
pub struct Finished {
    pub run_id: Uuid,
    pub suite: String,
    /// Its durations, for the history.
    pub samples: Vec<(String, u64)>,
    /// Its flaky and failing tests, for the history.
    pub outcomes: RunOutcomes,
    /// What the dashboard keeps of it.
    pub dashboard: FinishedRun,
    /// Whether its verdict went out.
    pub published: Result<(), BrokerError>,
}

/// The runs being finished, each in a task of its own.
#[derive(Default)]
pub struct Finishing {
    tasks: JoinSet<Finished>,
    /// Their ids, by task: a late result of one is no result of an unknown
    /// run, and a task that panics still names its run.
    runs: HashMap<task::Id, Uuid>,
    /// Runs whose finishing panicked: known (their late results are not
    /// parked), never finished by this process; their journals stay.
    failed: HashSet<Uuid>,
}

impl Finishing {
    /// Starts finishing `report`'s run: its quarantine and flakiness, its
    /// reports, then the verdict on `publish`. The verdict carries `tokens`,
    /// the run's secrets from its announcement and from producers that
    /// resumed it.
    pub fn start(
        &mut self,
        mut report: RunReport,
        tokens: Vec<Uuid>,
        quarantine: quarantine::Rules,
        settings: &ReportSettings,
        publish: &Channel,
    ) {
        let settings = settings.clone();
        let publish = publish.clone();
        let run_id = report.run_id;
        let task = self.tasks.spawn(async move {
            let suite = report.suite.clone();
            let samples = crate::history::samples(&report);
            let outcomes = RunOutcomes::of(&report);
            let flakiness = flakiness(&settings.outcomes, &suite, &outcomes).await;
            quarantine::apply(&mut report, &quarantine, flakiness.as_ref(), now_ms());
            report.flakiness = flakiness;
            if report.spec.container.network == CACHE_NETWORK && !settings.caches.is_empty() {
                let (from_ms, to_ms) = (report.created_at_ms, report.finished_at_ms);
                report.cache = Some(cache_stats::read_all(&settings.caches, from_ms, to_ms).await);
            }
            let (mut report, written) = write_reports(report, &settings).await;
            let full_report = match written {
                Ok(()) => full_report_location(&settings, run_id),
                Err(error) => {
                    let full_report = format!("nowhere: the aggregator could not write its reports ({error})");
                    report.reports_error = Some(error);
                    full_report
                }
            };
            let link = report
                .reports_error
                .is_none()
                .then(|| format!("/runs/{run_id}/report.html"));
            let dashboard = FinishedRun::of(&report, link);
            testfleet_common::faults::panic_if_asked("verdict", &suite);
            let verdict = verdict::fit(report, MAX_VERDICT_BYTES, &full_report);
            if let Some(cut) = &verdict.verdict_cut {
                warn!(run = %run_id, outputs_shortened = cut.outputs_shortened, output_bytes_cut = cut.output_bytes_cut, passed_tests_left_out = cut.passed_tests_left_out, "the verdict carries a shortened report; the full one is in this aggregator's reports");
            }
            let key = run_id.to_string();
            let published =
                broker::broadcast(&publish, &settings.verdicts, &key, Body::Report(verdict), &tokens)
                    .await;
            Finished {
                run_id,
                suite,
                samples,
                outcomes,
                dashboard,
                published,
            }
        });
        self.runs.insert(task.id(), run_id);
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether `run_id` is being finished, or its finishing failed.
    pub fn contains(&self, run_id: &Uuid) -> bool {
        self.failed.contains(run_id) || self.runs.values().any(|r| r == run_id)
    }

    /// The next run whose finishing ended; pending while none is. A task
    /// that panicked ends its run here: logged, its journal kept for the
    /// next start, and no longer waited for.
    pub async fn next(&mut self) -> Finished {
        loop {
            match self.tasks.join_next_with_id().await {
                Some(Ok((task, finished))) => {
                    self.runs.remove(&task);
                    return finished;
                }
                Some(Err(error)) => {
                    let run = self.runs.remove(&error.id());
                    if let Some(run_id) = run {
                        self.failed.insert(run_id);
                    }
                    error!(run = ?run, %error, "a run's finishing panicked: no verdict from this aggregator; its journal stays for the next start");
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Stops every finishing and forgets those that completed: their runs'
    /// journals remain, and the next session finishes them again.
    pub fn abort_all(&mut self) {
        // Dropping the set aborts its tasks and discards what finished ones
        // returned; `JoinSet::abort_all` would keep those results.
        self.tasks = JoinSet::new();
        self.runs.clear();
        self.failed.clear();
    }
}

/// How flaky the run's tests were over the suite's recent runs, read on a
/// blocking thread; `None` (said in the log) if its file cannot be read.
async fn flakiness(store: &OutcomeStore, suite: &str, this: &RunOutcomes) -> Option<Flakiness> {
    let (store, name) = (store.clone(), suite.to_owned());
    match tokio::task::spawn_blocking(move || store.recent(&name)).await {
        Ok(Ok(previous)) => Some(outcomes::flakiness(&previous, this)),
        Ok(Err(error)) => {
            warn!(%suite, %error, "could not read the suite's recent outcomes: no flakiness in its reports");
            None
        }
        Err(panic) => {
            error!(%suite, %panic, "reading the suite's recent outcomes panicked");
            None
        }
    }
}

/// Writes the run's reports on a blocking thread, so that a renderer that
/// panics fails this run's files only: the loop, every other run and this
/// run's verdict go on. Returns the report for the verdict, and what went
/// wrong writing the files, for the verdict to say.
async fn write_reports(
    report: RunReport,
    settings: &ReportSettings,
) -> (RunReport, Result<(), String>) {
    let report = Arc::new(report);
    let run_id = report.run_id;
    let dir = settings.report_dir.clone();
    let rules = settings.triage_rules.clone();
    let shared = report.clone();
    let written = tokio::task::spawn_blocking(move || {
        testfleet_common::faults::panic_if_asked("report", &shared.suite);
        report::write_all_with_rules(&shared, &dir, &rules)
    })
    .await;
    let dir = settings.report_dir.display();
    let written = match written {
        Ok(Ok(paths)) => {
            info!(run = %run_id, verdict = report.verdict.as_str(), reports = %paths.dir.display(), html = %paths.html.display(), "run finished");
            Ok(())
        }
        Ok(Err(error)) => {
            error!(run = %run_id, %error, %dir, "could not write the reports; the verdict says so");
            Err(format!("{error} (under {dir})"))
        }
        Err(panic) => {
            error!(run = %run_id, %panic, %dir, "writing the reports panicked; the verdict goes out without them");
            Err(format!("writing them panicked: {panic}"))
        }
    };
    // The blocking task has ended, so its clone is gone.
    let report = Arc::try_unwrap(report).unwrap_or_else(|shared| (*shared).clone());
    (report, written)
}

/// Where this aggregator's full reports of `run_id` are, for a verdict that
/// carries a shortened copy: its host and the run's folder.
fn full_report_location(settings: &ReportSettings, run_id: Uuid) -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "the aggregator's host".into());
    let dir =
        std::path::absolute(&settings.report_dir).unwrap_or_else(|_| settings.report_dir.clone());
    format!("{host}:{}", dir.join(run_id.to_string()).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(run_id: Uuid) -> Finished {
        Finished {
            dashboard: FinishedRun::blank(),
            outcomes: RunOutcomes::default(),
            run_id,
            suite: "s".into(),
            samples: Vec::new(),
            published: Ok(()),
        }
    }

    /// A finishing of an earlier session that completed before the session
    /// ended must not reach the next one: its run was reloaded, and would
    /// lose its journal and count its history twice.
    #[tokio::test]
    async fn finishings_that_completed_before_an_abort_are_forgotten() {
        let mut finishing = Finishing::default();
        let run_id = Uuid::new_v4();
        let task = finishing.tasks.spawn(async move { finished(run_id) });
        finishing.runs.insert(task.id(), run_id);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        finishing.abort_all();
        assert!(finishing.is_empty() && !finishing.contains(&run_id));
        let next = tokio::time::timeout(std::time::Duration::from_millis(100), finishing.next());
        assert!(next.await.is_err(), "nothing comes out of an aborted set");
    }

    /// A finishing that panics ends its run's wait: the loop no longer waits
    /// for it (shutdown drains), and its run stays known, its journal kept.
    #[tokio::test]
    async fn a_finishing_that_panics_is_no_longer_waited_for() {
        let mut finishing = Finishing::default();
        let (doomed, fine) = (Uuid::new_v4(), Uuid::new_v4());
        let task = finishing
            .tasks
            .spawn(async move { panic!("deliberate, for {doomed}") });
        finishing.runs.insert(task.id(), doomed);
        let task = finishing.tasks.spawn(async move { finished(fine) });
        finishing.runs.insert(task.id(), fine);
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), finishing.next());
        assert_eq!(next.await.unwrap().run_id, fine);
        assert!(finishing.is_empty(), "the panicked one is not waited for");
        assert!(
            finishing.contains(&doomed),
            "its late results are not parked"
        );
    }
}
