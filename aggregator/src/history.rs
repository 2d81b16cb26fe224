//! How long each test of each suite took: the durations the producer orders a
//! run's jobs by, longest first. Kept under the state directory, so they survive
//! restarts.
//!
//! One file per suite, so suites never mix and only the suite asked about is ever
//! read: nothing is held in memory between uses, whatever the number of suites or
//! tests. A file is of the framed format of `framed.rs` (a header with its
//! format, then records), each record a MessagePack list of (test,
//! milliseconds). Each finished run appends one record of its samples; reading
//! folds the records in order into an exponentially weighted average per test.
//! When a file holds many records (or a torn one from a crash), it is rewritten
//! as a single record of the averages, atomically. A file of another format, or
//! damaged before its end, is refused: the suite is then scheduled without
//! history, and the file is never rewritten.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use testfleet_types::messages::{BatchRecord, RunReport};
use testfleet_types::sides;

use crate::framed::{self, FileError, Kind};

const SUBDIR: &str = "history";
const EXTENSION: &str = "history";
/// Records a file may hold before it is rewritten as one.
const COMPACT_AFTER: usize = 16;
/// Weight of a new sample in the average, in tenths: recent runs count most, so
/// a test that got slower is soon scheduled as the slow test it now is.
const NEW_SAMPLE_TENTHS: u64 = 3;

/// The history files' format.
const HISTORY: Kind = Kind {
    magic: *b"tfhistry",
    version: 3,
    max_record: 512 << 20,
    name: "history",
};

/// A suite's history could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Refused(#[from] FileError),
}

/// The durations of every suite, on disk.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    dir: PathBuf,
}

/// One suite's averages, as read from its file.
#[derive(Debug, Default, PartialEq)]
pub struct SuiteHistory {
    pub durations_ms: HashMap<String, u64>,
    records: usize,
    /// Bytes of whole records; a longer file ends with a torn one.
    good_len: u64,
}

impl HistoryStore {
    pub fn new(state_dir: &Path) -> Self {
        HistoryStore {
            dir: state_dir.join(SUBDIR),
        }
    }

    /// The suite's averages; empty if it never finished a run here.
    pub fn load(&self, suite: &str) -> Result<SuiteHistory, HistoryError> {
        read(&self.path(suite))
    }

    /// Adds one run's samples to the suite's history.
    pub fn record(&self, suite: &str, samples: &[(String, u64)]) -> Result<(), HistoryError> {
        if samples.is_empty() {
            return Ok(());
        }
        let path = self.path(suite);
        let mut history = read(&path)?;
        let on_disk = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if history.records < COMPACT_AFTER && on_disk == history.good_len {
            return append(&path, on_disk == 0, samples).map_err(at(&path));
        }
        history.fold(samples);
        compact(&path, &history).map_err(at(&path))
    }

    fn path(&self, suite: &str) -> PathBuf {
        framed::suite_file(&self.dir, suite, EXTENSION)
    }
}

/// The history key of a suite's batch overhead, beside its tests' durations:
/// a NUL byte is in no test id (no argv can carry one; `limits` refuses it).
const BATCH_OVERHEAD_KEY: &str = "\0batch-overhead";
/// The history key of how busy the hosts' CPUs were while the suite's
/// batches ran, in thousandths.
const HOST_BUSY_KEY: &str = "\0host-busy";

/// What a suite's history tells a producer planning its next run.
#[derive(Debug, Default, PartialEq)]
pub struct Learned {
    pub durations_ms: Vec<(String, u64)>,
    pub batch_overhead_ms: Option<u64>,
    pub host_busy_permille: Option<u16>,
}

/// What a finished run teaches about durations: every attempt that ran to an end
/// the test chose or the timeout imposed. Errors, missing and dead-lettered
/// attempts say nothing about the test's own length. With batches, also the
/// median batch overhead: a batch's wall time less its tests' reported times.
pub fn samples(report: &RunReport) -> Vec<(String, u64)> {
    let compared = report.comparison.is_some();
    let mut samples: Vec<(String, u64)> = report
        .tests
        .iter()
        .filter_map(|test| Some((sides::history_id(compared, &test.id)?, test)))
        .flat_map(|(id, test)| {
            test.attempts
                .iter()
                .filter(|a| a.status.ran_to_an_end())
                .map(|a| (id.to_owned(), a.duration_ms))
        })
        .collect();
    if let Some(overhead) = batch_overhead_ms(report) {
        samples.push((BATCH_OVERHEAD_KEY.to_owned(), overhead));
    }
    if let Some(busy) = host_busy_permille(&report.batches) {
        samples.push((HOST_BUSY_KEY.to_owned(), u64::from(busy)));
    }
    samples
}

/// The median over a run's batches of how busy their hosts' CPUs were
/// while each ran (where the worker could tell).
pub fn host_busy_permille(batches: &[BatchRecord]) -> Option<u16> {
    let mut busy: Vec<u16> = batches
        .iter()
        .filter_map(|b| b.host_busy_permille)
        .collect();
    if busy.is_empty() {
        return None;
    }
    busy.sort_unstable();
    Some(busy[busy.len() / 2].min(1000))
}

/// The median over the run's batches that reported every test of what a
/// batch cost beyond its tests.
pub fn batch_overhead_ms(report: &RunReport) -> Option<u64> {
    let mut reported: HashMap<uuid::Uuid, u64> = HashMap::new();
    for attempt in report.tests.iter().flat_map(|t| &t.attempts) {
        if let Some(batch) = attempt.batch {
            let sum = reported.entry(batch).or_default();
            *sum = sum.saturating_add(attempt.duration_ms);
        }
    }
    let mut overheads: Vec<u64> = report
        .batches
        .iter()
        .filter(|b| b.reported == b.tests && !b.timed_out)
        .map(|b| {
            let wall = b.finished_at_ms.saturating_sub(b.started_at_ms);
            wall.saturating_sub(reported.get(&b.id).copied().unwrap_or(0))
        })
        .collect();
    if overheads.is_empty() {
        return None;
    }
    overheads.sort_unstable();
    Some(overheads[overheads.len() / 2])
}

impl SuiteHistory {
    /// The tests' durations, the batch overhead and how busy the hosts
    /// were, as a history answer carries them.
    pub fn into_answer(mut self) -> Learned {
        let batch_overhead_ms = self.durations_ms.remove(BATCH_OVERHEAD_KEY);
        let host_busy_permille = self
            .durations_ms
            .remove(HOST_BUSY_KEY)
            .map(|busy| busy.min(1000) as u16);
        Learned {
            durations_ms: self.durations_ms.into_iter().collect(),
            batch_overhead_ms,
            host_busy_permille,
        }
    }

    fn fold(&mut self, samples: &[(String, u64)]) {
        for (test, ms) in samples {
            match self.durations_ms.get_mut(test) {
                Some(average) => *average = blend(*average, *ms),
                None => {
                    self.durations_ms.insert(test.clone(), *ms);
                }
            }
        }
    }
}

/// The exponentially weighted average after one more sample.
fn blend(average: u64, sample: u64) -> u64 {
    let blended = (u128::from(average) * u128::from(10 - NEW_SAMPLE_TENTHS)
        + u128::from(sample) * u128::from(NEW_SAMPLE_TENTHS))
        / 10;
    blended as u64
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> HistoryError + '_ {
    move |cause| HistoryError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// Folds a file's records. A torn tail is ignored here and cut off by the
/// next compaction; readers never write.
fn read(path: &Path) -> Result<SuiteHistory, HistoryError> {
    let mut history = SuiteHistory::default();
    let Some(contents) = framed::read_file::<Vec<(String, u64)>>(path, &HISTORY)? else {
        return Ok(history);
    };
    for samples in &contents.records {
        history.fold(samples);
    }
    history.records = contents.records.len();
    history.good_len = contents.good_len;
    Ok(history)
}

fn append(path: &Path, new: bool, samples: &[(String, u64)]) -> io::Result<()> {
    framed::append(path, &HISTORY, new, &samples)
}

/// Rewrites the file as one record of the averages (see [`framed::replace`]).
fn compact(path: &Path, history: &SuiteHistory) -> io::Result<()> {
    let mut averages: Vec<(String, u64)> = history
        .durations_ms
        .iter()
        .map(|(test, ms)| (test.clone(), *ms))
        .collect();
    averages.sort_unstable();
    framed::replace(path, &HISTORY, &[averages])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (HistoryStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tf-history-{}", uuid::Uuid::new_v4()));
        (HistoryStore::new(&dir), dir)
    }

    fn samples(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(t, ms)| (t.to_string(), *ms)).collect()
    }

    fn batch(host_busy_permille: Option<u16>) -> BatchRecord {
        BatchRecord {
            id: uuid::Uuid::new_v4(),
            run_id: uuid::Uuid::nil(),
            attempt: 1,
            worker_id: "w".into(),
            tests: 2,
            reported: 2,
            started_at_ms: 1,
            command_started_at_ms: 2,
            finished_at_ms: 3,
            exit_code: Some(0),
            timed_out: false,
            log: None,
            log_truncated: false,
            split_into: 0,
            host_busy_permille,
        }
    }

    #[test]
    fn how_busy_the_hosts_were_is_learned_beside_the_durations() {
        let busy = [Some(990), None, Some(40), Some(930)].map(batch);
        assert_eq!(
            host_busy_permille(&busy),
            Some(930),
            "the median of those known"
        );
        assert_eq!(host_busy_permille(&[batch(None)]), None);
        let (store, dir) = store();
        store
            .record(
                "s",
                &[("t".to_owned(), 10), (HOST_BUSY_KEY.to_owned(), 990)],
            )
            .unwrap();
        store
            .record("s", &[(HOST_BUSY_KEY.to_owned(), 500)])
            .unwrap();
        let learned = store.load("s").unwrap().into_answer();
        assert_eq!(
            learned.host_busy_permille,
            Some(843),
            "0.7 × 990 + 0.3 × 500"
        );
        assert_eq!(
            learned.durations_ms,
            [("t".to_owned(), 10)],
            "no test is a key"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unknown_suite_has_no_history() {
        let (store, _dir) = store();
        assert!(store.load("never ran").unwrap().durations_ms.is_empty());
    }

    #[test]
    fn runs_are_averaged_per_test_and_suites_do_not_mix() {
        let (store, dir) = store();
        store
            .record("unit", &samples(&[("a", 1000), ("b", 10)]))
            .unwrap();
        store.record("unit", &samples(&[("a", 2000)])).unwrap();
        store.record("e2e", &samples(&[("a", 5)])).unwrap();

        let unit = store.load("unit").unwrap().durations_ms;
        assert_eq!(unit["a"], 1300, "0.7 × 1000 + 0.3 × 2000");
        assert_eq!(unit["b"], 10);
        assert_eq!(store.load("e2e").unwrap().durations_ms["a"], 5);
        assert_eq!(
            HistoryStore::new(&dir).load("unit").unwrap().durations_ms,
            unit,
            "a new store (a restarted aggregator) reads the same"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn many_runs_compact_into_one_record_with_the_same_averages() {
        let (store, dir) = store();
        for run in 0..COMPACT_AFTER as u64 {
            store
                .record("s", &samples(&[("t", 100 * (run + 1)), ("u", 7)]))
                .unwrap();
        }
        let before = store.load("s").unwrap();
        assert_eq!(before.records, COMPACT_AFTER);

        store.record("s", &samples(&[("t", 50)])).unwrap();
        let after = store.load("s").unwrap();
        assert_eq!(after.records, 1, "rewritten as one record");
        let mut expected = before.durations_ms.clone();
        *expected.get_mut("t").unwrap() = blend(before.durations_ms["t"], 50);
        assert_eq!(after.durations_ms, expected);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_record_is_ignored_then_compacted_away() {
        let (store, dir) = store();
        store.record("s", &samples(&[("t", 100)])).unwrap();
        let path = store.path("s");
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(file);
        assert_eq!(store.load("s").unwrap().durations_ms["t"], 100);

        store.record("s", &samples(&[("t", 200)])).unwrap();
        let history = store.load("s").unwrap();
        assert_eq!(history.durations_ms["t"], 130);
        assert_eq!(fs::metadata(&path).unwrap().len(), history.good_len);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_of_another_format_or_damaged_is_refused_and_never_rewritten() {
        let (store, dir) = store();
        for run in 0..3 {
            store.record("s", &samples(&[("t", 100 + run)])).unwrap();
        }
        let path = store.path("s");
        let mut bytes = fs::read(&path).unwrap();
        let damaged_middle = framed::HEADER_LEN as usize + 9;
        bytes[damaged_middle] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let error = store.record("s", &samples(&[("t", 1)])).unwrap_err();
        assert!(error.to_string().contains("damaged at byte"), "{error}");
        assert!(store.load("s").is_err());
        assert_eq!(fs::read(&path).unwrap(), bytes, "left as it was");

        bytes[damaged_middle] ^= 0xff;
        bytes[8] = 7;
        fs::write(&path, &bytes).unwrap();
        let error = store.record("s", &samples(&[("t", 1)])).unwrap_err();
        assert!(error.to_string().contains("format 7"), "{error}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "left as it was");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_long_suite_name_keeps_its_history() {
        let (store, dir) = store();
        let long = format!("group/{}/project", "sub".repeat(100));
        let other = format!("{long}2");
        store.record(&long, &samples(&[("t", 100)])).unwrap();
        store.record(&other, &samples(&[("t", 7)])).unwrap();
        assert_eq!(store.load(&long).unwrap().durations_ms["t"], 100);
        assert_eq!(store.load(&other).unwrap().durations_ms["t"], 7);
        let name = store.path(&long).file_name().unwrap().len();
        assert!(name <= 255, "{name} bytes");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn suite_names_become_distinct_safe_file_names() {
        let (store, _dir) = store();
        let a = store.path("../etc/passwd");
        let b = store.path("../etc/passwe");
        assert_ne!(a, b);
        assert_eq!(a.parent(), b.parent());
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("suite-2e2e2f"));
    }
}
