//! Which tests of a suite were flaky, or failed, in its recent runs: what a
//! report's "flaky in k of the last N runs" and its list of the suite's
//! flakiest tests come from. Kept under the state dir beside the durations
//! (`history.rs`), so it survives restarts.
//!
//! One file per suite, of the framed format of `framed.rs` (kind
//! `outcomes`): a record per finished run, naming only its tests that did not
//! simply pass (most tests, most runs, cost nothing). Past twice
//! [`RECENT_RUNS`] records the file is rewritten with the last
//! [`RECENT_RUNS`], atomically; readers take those last ones. A file of
//! another format, or damaged before its end, is refused (no flakiness is
//! said then) and never rewritten.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use testfleet_types::limits::MAX_FLAKINESS_TESTS;
use testfleet_types::messages::{FinalStatus, Flakiness, RunReport, TestFlakiness};
use testfleet_types::sides;

use crate::framed::{self, Kind};
use crate::history::HistoryError;

/// Runs a flakiness counts, this one included.
pub const RECENT_RUNS: usize = 20;
/// The suite's flakiest tests a report lists besides its own run's.
pub const FLAKIEST_LISTED: usize = 10;
const EXTENSION: &str = "outcomes";

/// The outcome files' format.
const OUTCOMES: Kind = Kind {
    magic: *b"tfoutcms",
    version: 1,
    max_record: 512 << 20,
    name: "outcomes",
};

/// One run's tests that did not simply pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcomes {
    pub flaky: Vec<String>,
    /// Those that did not pass at all.
    pub failed: Vec<String>,
}

impl RunOutcomes {
    /// What `report` says; a quarantined test counts as it ran (its
    /// flakiness is why it is watched).
    pub fn of(report: &RunReport) -> Self {
        let mut outcomes = RunOutcomes::default();
        let compared = report.comparison.is_some();
        for test in &report.tests {
            let Some(id) = sides::history_id(compared, &test.id) else {
                continue;
            };
            match test.status {
                FinalStatus::Flaky => outcomes.flaky.push(id.to_owned()),
                status if status.against_history() => outcomes.failed.push(id.to_owned()),
                _ => {}
            }
        }
        outcomes
    }
}

/// Every suite's outcome files, on disk.
#[derive(Debug, Clone)]
pub struct OutcomeStore {
    dir: PathBuf,
}

impl OutcomeStore {
    pub fn new(state_dir: &Path) -> Self {
        OutcomeStore {
            dir: state_dir.join("history"),
        }
    }

    /// The suite's last [`RECENT_RUNS`] runs, oldest first; none if it never
    /// finished one here.
    pub fn recent(&self, suite: &str) -> Result<Vec<RunOutcomes>, HistoryError> {
        let path = self.path(suite);
        let Some(contents) = framed::read_file::<RunOutcomes>(&path, &OUTCOMES)? else {
            return Ok(Vec::new());
        };
        let mut records = contents.records;
        let keep = records.len().saturating_sub(RECENT_RUNS);
        records.drain(..keep);
        Ok(records)
    }

    /// Adds a finished run's outcomes to the suite's file.
    pub fn record(&self, suite: &str, run: &RunOutcomes) -> Result<(), HistoryError> {
        let path = self.path(suite);
        let at = |cause| HistoryError::Io {
            path: path.clone(),
            cause,
        };
        let contents = framed::read_file::<RunOutcomes>(&path, &OUTCOMES)?;
        match contents {
            Some(contents)
                if contents.records.len() >= 2 * RECENT_RUNS
                    || fs::metadata(&path).map(|m| m.len()).ok() != Some(contents.good_len) =>
            {
                let mut records = contents.records;
                records.push(run.clone());
                let keep = records.len().saturating_sub(RECENT_RUNS);
                rewrite(&path, &records[keep..]).map_err(at)
            }
            Some(_) => append(&path, false, run).map_err(at),
            None => append(&path, true, run).map_err(at),
        }
    }

    fn path(&self, suite: &str) -> PathBuf {
        framed::suite_file(&self.dir, suite, EXTENSION)
    }
}

/// The flakiness `report` shows: in how many of the suite's recent runs
/// (`previous`, then this one) each of this run's flaky and failing tests was
/// flaky or failed, then the suite's flakiest tests over those runs.
pub fn flakiness(previous: &[RunOutcomes], this: &RunOutcomes) -> Flakiness {
    let skip = previous.len().saturating_sub(RECENT_RUNS - 1);
    let runs: Vec<&RunOutcomes> = previous[skip..].iter().chain([this]).collect();
    let mut counts: HashMap<&str, (u32, u32)> = HashMap::new();
    for run in &runs {
        for id in &run.flaky {
            counts.entry(id).or_default().0 += 1;
        }
        for id in &run.failed {
            counts.entry(id).or_default().1 += 1;
        }
    }
    let entry = |id: &str| {
        let (flaky, failed) = counts.get(id).copied().unwrap_or_default();
        TestFlakiness {
            test_id: id.to_owned(),
            flaky,
            failed,
        }
    };
    let mut tests: Vec<TestFlakiness> = this
        .flaky
        .iter()
        .chain(&this.failed)
        .map(|id| entry(id))
        .collect();
    let mut flakiest: Vec<(&str, (u32, u32))> = counts
        .iter()
        .filter(|(_, (flaky, _))| *flaky > 0)
        .map(|(id, counts)| (*id, *counts))
        .collect();
    flakiest.sort_by(|(a, (af, ax)), (b, (bf, bx))| bf.cmp(af).then(bx.cmp(ax)).then(a.cmp(b)));
    for (id, _) in flakiest.into_iter().take(FLAKIEST_LISTED) {
        if !tests.iter().any(|t| t.test_id == id) {
            tests.push(entry(id));
        }
    }
    tests.truncate(MAX_FLAKINESS_TESTS);
    Flakiness {
        runs: runs.len() as u32,
        tests,
    }
}

/// The suite's flakiest tests a flakiness lists: those flaky at least once,
/// most often first.
pub fn flakiest(flakiness: &Flakiness) -> Vec<&TestFlakiness> {
    let mut listed: Vec<&TestFlakiness> = flakiness.tests.iter().filter(|t| t.flaky > 0).collect();
    listed.sort_by(|a, b| b.flaky.cmp(&a.flaky).then(b.failed.cmp(&a.failed)));
    listed.truncate(FLAKIEST_LISTED);
    listed
}

fn append(path: &Path, new: bool, run: &RunOutcomes) -> io::Result<()> {
    framed::append(path, &OUTCOMES, new, run)
}

/// Rewrites the file with `runs` (see [`framed::replace`]).
fn rewrite(path: &Path, runs: &[RunOutcomes]) -> io::Result<()> {
    framed::replace(path, &OUTCOMES, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flaky: &[&str], failed: &[&str]) -> RunOutcomes {
        RunOutcomes {
            flaky: flaky.iter().map(|s| s.to_string()).collect(),
            failed: failed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_test_is_counted_over_the_recent_runs_and_the_flakiest_follow() {
        let previous = vec![run(&["a", "b"], &[]), run(&["a"], &["c"]), run(&[], &[])];
        let this = run(&["c"], &["d"]);
        let flakiness = flakiness(&previous, &this);
        assert_eq!(flakiness.runs, 4);
        let of = |id| flakiness.of(id).cloned().unwrap();
        assert_eq!((of("c").flaky, of("c").failed), (1, 1), "this run's first");
        assert_eq!((of("d").flaky, of("d").failed), (0, 1));
        assert_eq!(of("a").flaky, 2, "the suite's flakiest follow");
        let ids: Vec<&str> = flakiness.tests.iter().map(|t| t.test_id.as_str()).collect();
        assert_eq!(ids, ["c", "d", "a", "b"]);
        let top: Vec<&str> = super::flakiest(&flakiness)
            .iter()
            .map(|t| t.test_id.as_str())
            .collect();
        assert_eq!(top, ["a", "c", "b"]);
    }

    #[test]
    fn only_what_the_test_did_counts_against_it() {
        use FinalStatus::*;
        let counted: Vec<FinalStatus> = [
            Passed,
            Flaky,
            Failed,
            TimedOut,
            Missing,
            DeadLettered,
            Error,
        ]
        .into_iter()
        .filter(|s| s.against_history())
        .collect();
        assert_eq!(counted, [Failed, TimedOut, DeadLettered]);
    }

    #[test]
    fn only_the_last_runs_count() {
        let previous: Vec<RunOutcomes> = (0..30).map(|_| run(&["old"], &[])).collect();
        let flakiness = flakiness(&previous, &run(&[], &[]));
        assert_eq!(flakiness.runs as usize, RECENT_RUNS);
        assert_eq!(flakiness.of("old").unwrap().flaky as usize, RECENT_RUNS - 1);
    }

    #[test]
    fn the_file_keeps_the_last_runs_across_rewrites() {
        let dir = std::env::temp_dir().join(format!("tf-outcomes-{}", uuid::Uuid::new_v4()));
        let store = OutcomeStore::new(&dir);
        for i in 0..(2 * RECENT_RUNS + 5) {
            store
                .record("suite/x", &run(&[&format!("t{i}")], &[]))
                .unwrap();
        }
        let recent = store.recent("suite/x").unwrap();
        assert_eq!(recent.len(), RECENT_RUNS);
        assert_eq!(recent.last().unwrap().flaky, ["t44"]);
        assert!(store.recent("another").unwrap().is_empty());
        let long = "gitlab.example/group/".repeat(12);
        store.record(&long, &run(&["x"], &[])).unwrap();
        assert_eq!(
            store.recent(&long).unwrap()[0].flaky,
            ["x"],
            "a long suite name"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
