//! The journal of `aggregator.journal = "file"`: one file per open run under
//! the state dir.
//!
//! A fact is acked only once its record is durable: appended records wait in
//! memory until [`FileJournals::commit`], which writes and syncs every journal
//! that changed (`fdatasync`) in one go, and only then are the deliveries that
//! brought them acked (a group commit: one sync per batch of deliveries, not
//! per result). A restarted aggregator replays the journals to rebuild every
//! open run exactly, then takes the broker's redeliveries, which it recognises
//! as duplicates. A finished run's journal is deleted once its verdict is out.
//!
//! One file per open run under the state dir, of the framed format in
//! `framed.rs`: a torn last record (a crash mid-append) is cut, anything else
//! that does not read refuses that journal (its run is not resumed, and the
//! file stays for a person to look at).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::{error, warn};
use uuid::Uuid;

use super::commit::Commit;
use super::error::{JournalError, Replayed};
use super::records::{Record, JOURNAL};
use crate::framed;

const EXTENSION: &str = "journal";

/// Attaches `path` to an I/O error.
fn at(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |cause| JournalError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// Every open run's journal file, appended to as runs progress.
pub struct FileJournals {
    dir: PathBuf,
    open: HashMap<Uuid, RunFile>,
    /// Records appended since the last commit, by run.
    pending: HashMap<Uuid, Vec<u8>>,
    /// A journal was created or removed since the last commit: the next one
    /// syncs the directory first, so that an acked run's journal exists,
    /// and a finished one's stays gone, after a power loss.
    dir_changed: bool,
}

/// One run's open journal file.
struct RunFile {
    path: PathBuf,
    file: File,
}

impl FileJournals {
    pub fn new(dir: &Path) -> Self {
        FileJournals {
            dir: dir.to_owned(),
            open: HashMap::new(),
            pending: HashMap::new(),
            dir_changed: false,
        }
    }

    /// Reads every journal in the state dir, cutting torn tails, and keeps
    /// the usable ones open for appending; forgets what was open before
    /// (records not yet committed are dropped: their deliveries were never
    /// acked, so the broker brings them again).
    pub fn replay(&mut self) -> Result<Vec<Replayed>, JournalError> {
        self.open.clear();
        self.pending.clear();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(at(&self.dir)(e)),
        };
        let mut journals = Vec::new();
        for entry in entries {
            let path = entry.map_err(at(&self.dir))?.path();
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
            let replayed = self.reopen(run_id, &path);
            if let Err(error) = &replayed {
                error!(run = %run_id, %error, "cannot resume a run from its journal");
            }
            journals.push((run_id, replayed));
        }
        Ok(journals)
    }

    /// Reads one journal, cuts a torn tail and opens it for appending.
    fn reopen(&mut self, run_id: Uuid, path: &Path) -> Result<Vec<Record>, JournalError> {
        let contents = framed::read_file::<Record>(path, &JOURNAL)?.unwrap_or(framed::Contents {
            records: Vec::new(),
            good_len: 0,
            torn: false,
        });
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(at(path))?;
        if contents.torn {
            warn!(path = %path.display(), "cutting a torn record off the end of a journal");
            file.set_len(contents.good_len).map_err(at(path))?;
            file.sync_data().map_err(at(path))?;
        }
        let mut run = RunFile {
            path: path.to_owned(),
            file,
        };
        if contents.good_len == 0 {
            run.write_header()?;
        }
        self.open.insert(run_id, run);
        Ok(contents.records)
    }

    /// Starts the journal of a new run; its first record follows.
    pub fn create(&mut self, run_id: Uuid) -> Result<(), JournalError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(at(&self.dir))?;
        let path = self.dir.join(format!("{run_id}.{EXTENSION}"));
        // Only the aggregator's user reads it: a run's environment is in it.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(at(&path))?;
        // A journal left by an announcement that never got acked.
        file.set_len(0).map_err(at(&path))?;
        let mut run = RunFile { path, file };
        run.write_header()?;
        self.open.insert(run_id, run);
        self.dir_changed = true;
        Ok(())
    }

    /// Queues a record of an open run; it is durable once [`Self::commit`]
    /// returns.
    pub fn append(&mut self, run_id: Uuid, record: &Record) -> Result<(), JournalError> {
        let Some(run) = self.open.get(&run_id) else {
            return Ok(());
        };
        let pending = self.pending.entry(run_id).or_default();
        framed::write_record(pending, &JOURNAL, record).map_err(at(&run.path))?;
        Ok(())
    }

    /// Writes every queued record and syncs each journal it went to, on a
    /// blocking thread. On an error (a full disk), what reached a file may
    /// end in a torn record, which the next replay cuts.
    pub async fn commit(&mut self) -> Result<(), JournalError> {
        super::commit::committed(&mut self.start_commit()?).await
    }

    /// Starts [`Self::commit`]'s writes and syncs on a blocking thread and
    /// returns at once; what is appended meanwhile waits for the next one.
    pub fn start_commit(&mut self) -> Result<Commit, JournalError> {
        let mut writes = Vec::with_capacity(self.pending.len());
        for (run_id, bytes) in self.pending.drain() {
            if let Some(run) = self.open.get(&run_id) {
                let file = run.file.try_clone().map_err(at(&run.path))?;
                writes.push((run.path.clone(), file, bytes));
            }
        }
        let sync_dir = std::mem::take(&mut self.dir_changed).then(|| self.dir.clone());
        Ok(tokio::task::spawn_blocking(move || {
            testfleet_common::faults::delay_if_asked("journal-commit");
            if let Some(dir) = sync_dir {
                framed::sync_dir(&dir).map_err(at(&dir))?;
            }
            for (path, mut file, bytes) in writes {
                file.write_all(&bytes).map_err(at(&path))?;
                file.sync_data().map_err(at(&path))?;
            }
            Ok(())
        }))
    }

    /// Whether records (or a journal created or removed) wait for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.dir_changed
    }

    /// Removes the journal of a finished run.
    pub fn remove(&mut self, run_id: Uuid) -> Result<(), JournalError> {
        self.pending.remove(&run_id);
        let path = match self.open.remove(&run_id) {
            Some(run) => run.path,
            None => self.dir.join(format!("{run_id}.{EXTENSION}")),
        };
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(&path)(e)),
            Err(_) => Ok(()),
            Ok(()) => {
                self.dir_changed = true;
                Ok(())
            }
        }
    }
}

impl RunFile {
    fn write_header(&mut self) -> Result<(), JournalError> {
        let mut header = Vec::new();
        framed::write_header(&mut header, &JOURNAL).map_err(at(&self.path))?;
        let mut writer = BufWriter::new(&self.file);
        writer.write_all(&header).map_err(at(&self.path))?;
        writer.flush().map_err(at(&self.path))?;
        self.file.sync_data().map_err(at(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("tf-journal-{}", Uuid::new_v4()))
    }

    fn records() -> Vec<Record> {
        vec![
            Record::DeadLetter {
                test_id: "t".into(),
                attempt: 1,
                deliveries: 5,
            },
            Record::RoundClosed { at_ms: 7 },
            Record::RoundClosed { at_ms: 9 },
        ]
    }

    async fn journal_of(dir: &Path, run_id: Uuid, records: &[Record]) -> PathBuf {
        let mut journals = FileJournals::new(dir);
        journals.create(run_id).unwrap();
        for record in records {
            journals.append(run_id, record).unwrap();
        }
        journals.commit().await.unwrap();
        dir.join(format!("{run_id}.journal"))
    }

    #[tokio::test]
    async fn creating_and_removing_a_journal_syncs_the_directory_at_the_next_commit() {
        use crate::framed::synced_dirs;
        let dir = dir();
        let run_id = Uuid::new_v4();
        let mut journals = FileJournals::new(&dir);
        journals.create(run_id).unwrap();
        assert!(
            journals.has_pending(),
            "a new journal's name waits for a commit"
        );
        journals.commit().await.unwrap();
        assert_eq!(synced_dirs::count(&dir), 1, "created");
        journals.append(run_id, &records()[1]).unwrap();
        journals.commit().await.unwrap();
        assert_eq!(
            synced_dirs::count(&dir),
            1,
            "a record alone changes no name"
        );
        journals.remove(run_id).unwrap();
        assert!(journals.has_pending());
        journals.commit().await.unwrap();
        assert_eq!(synced_dirs::count(&dir), 2, "removed");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn committed_records_survive_and_a_torn_tail_is_cut() {
        let dir = dir();
        let run_id = Uuid::new_v4();
        let path = journal_of(&dir, run_id, &records()).await;
        let whole = fs::metadata(&path).unwrap().len();
        // A crash mid-append leaves half a record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        fs::write(dir.join("notes.txt"), "not a journal").unwrap();

        let mut journals = FileJournals::new(&dir);
        let replayed = journals.replay().unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].1.as_ref().unwrap(), &records());
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            whole,
            "the torn tail cut"
        );
        journals
            .append(run_id, &Record::RoundClosed { at_ms: 11 })
            .unwrap();
        journals.commit().await.unwrap();
        let again = FileJournals::new(&dir).replay().unwrap();
        assert_eq!(again[0].1.as_ref().unwrap().len(), 4, "appends follow on");

        journals.remove(run_id).unwrap();
        assert!(FileJournals::new(&dir).replay().unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_damaged_middle_refuses_its_journal_and_keeps_the_file() {
        let dir = dir();
        let (damaged, fine) = (Uuid::new_v4(), Uuid::new_v4());
        let path = journal_of(&dir, damaged, &records()).await;
        journal_of(&dir, fine, &records()).await;
        let mut bytes = fs::read(&path).unwrap();
        let middle = framed::HEADER_LEN as usize + 12;
        bytes[middle] ^= 0xff;
        fs::write(&path, &bytes).unwrap();

        let replayed = FileJournals::new(&dir).replay().unwrap();
        for (run_id, result) in replayed {
            match run_id == damaged {
                true => {
                    let error = result.unwrap_err().to_string();
                    assert!(error.contains("damaged at byte"), "{error}");
                }
                false => assert_eq!(result.unwrap(), records()),
            }
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "kept as it was");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_journal_of_an_unknown_format_is_refused_and_kept() {
        let dir = dir();
        let run_id = Uuid::new_v4();
        let path = journal_of(&dir, run_id, &records()).await;
        let mut bytes = fs::read(&path).unwrap();
        bytes[8] = 9;
        fs::write(&path, &bytes).unwrap();
        let replayed = FileJournals::new(&dir).replay().unwrap();
        let error = replayed[0].1.as_ref().unwrap_err().to_string();
        assert!(error.contains("format 9"), "{error}");
        assert_eq!(fs::read(&path).unwrap(), bytes);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn journals_are_private_to_the_aggregator() {
        let dir = dir();
        let path = journal_of(&dir, Uuid::new_v4(), &records()).await;
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0);
        fs::remove_dir_all(dir).unwrap();
    }
}
