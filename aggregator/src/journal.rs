//! The aggregator's durable state: one append-only journal file per open run.
//!
//! A result is acked only after it is in the journal, so a restarted aggregator
//! replays the journals to rebuild every open run exactly, then takes the broker's
//! redeliveries (which it recognises as duplicates). A finished run's journal is
//! deleted once its reports are written.
//!
//! Format: records of a little-endian `u32` length and a MessagePack [`Record`].
//! A torn last record (a crash mid-write) is ignored on replay.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use testfleet_common::wire::{BatchRecord, RunAnnounce, TestResult};
use tracing::warn;

use crate::framed;
use uuid::Uuid;

const EXTENSION: &str = "journal";

/// One entry of a run's journal, replayed in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Announce(Box<RunAnnounce>),
    Result(TestResult),
    DeadLetter {
        test_id: String,
        attempt: u32,
        deliveries: u32,
    },
    /// The open round was closed at this time (so replay closes it identically).
    RoundClosed {
        at_ms: u64,
    },
    /// A batch the run's tests ran in.
    Batch(BatchRecord),
    /// The journal's own format, its first record (a journal without one is
    /// format 1, from before the record existed).
    Format {
        version: u16,
    },
}

/// The format this build writes and reads; a journal of a later format is
/// refused, naming the file, rather than half read.
pub const JOURNAL_FORMAT: u16 = 2;

/// A journal could not be read or written; names the file or folder.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
pub struct JournalError {
    path: PathBuf,
    cause: io::Error,
}

/// Attaches `path` to an I/O error.
fn at(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |cause| JournalError {
        path: path.to_owned(),
        cause,
    }
}

/// An open journal, appended to as the run progresses.
pub struct Journal {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl Journal {
    pub fn create(dir: &Path, run_id: Uuid) -> Result<Journal, JournalError> {
        fs::create_dir_all(dir).map_err(at(dir))?;
        let path = dir.join(format!("{run_id}.{EXTENSION}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(at(&path))?;
        let fresh = file.metadata().map(|m| m.len() == 0).unwrap_or(false);
        let mut journal = Journal {
            path,
            writer: BufWriter::new(file),
        };
        if fresh {
            journal.append(&Record::Format {
                version: JOURNAL_FORMAT,
            })?;
        }
        Ok(journal)
    }

    /// Appends a record; it is on its way to disk when this returns.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        self.write_record(record).map_err(at(&self.path))
    }

    fn write_record(&mut self, record: &Record) -> io::Result<()> {
        framed::write(&mut self.writer, record)?;
        self.writer.flush()
    }

    /// Removes the journal of a finished run.
    pub fn remove(self) -> Result<(), JournalError> {
        drop(self.writer);
        fs::remove_file(&self.path).map_err(at(&self.path))
    }
}

/// Every journal in `dir`, each as its records in order.
pub fn replay_all(dir: &Path) -> Result<Vec<(Uuid, Vec<Record>)>, JournalError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(at(dir)(e)),
    };
    let mut journals = Vec::new();
    for entry in entries {
        let path = entry.map_err(at(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Some(run_id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
        else {
            warn!(path = %path.display(), "ignoring a journal whose name is not a run id");
            continue;
        };
        journals.push((run_id, read_records(&path).map_err(at(&path))?));
    }
    Ok(journals)
}

/// Reads a journal's records; a torn or unreadable tail is cut off the file so
/// that records appended later are read again.
fn read_records(path: &Path) -> io::Result<Vec<Record>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    let good_len = framed::read_each(&mut reader, path, |record| records.push(record))?;
    if let Some(Record::Format { version }) = records.first() {
        if *version > JOURNAL_FORMAT {
            return Err(io::Error::other(format!(
                "a journal of format {version}, from a later testfleet; this build reads format {JOURNAL_FORMAT}"
            )));
        }
        records.remove(0);
    }
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() > good_len {
        file.set_len(good_len)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_torn_tails_are_dropped() {
        let dir = std::env::temp_dir().join(format!("tf-journal-{}", Uuid::new_v4()));
        let run_id = Uuid::new_v4();
        let mut journal = Journal::create(&dir, run_id).unwrap();
        let records = vec![
            Record::DeadLetter {
                test_id: "t".into(),
                attempt: 1,
                deliveries: 5,
            },
            Record::RoundClosed { at_ms: 7 },
        ];
        for record in &records {
            journal.append(record).unwrap();
        }
        drop(journal);
        // A crash mid-write leaves half a record.
        let path = dir.join(format!("{run_id}.journal"));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        fs::write(dir.join("notes.txt"), "not a journal").unwrap();

        let replayed = replay_all(&dir).unwrap();
        assert_eq!(replayed, vec![(run_id, records)]);

        Journal::create(&dir, run_id).unwrap().remove().unwrap();
        assert!(replay_all(&dir).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
