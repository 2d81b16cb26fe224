//! Every open run's journal, wherever `aggregator.journal` keeps it: the one
//! type the loop (`service.rs`) talks to.

use lapin::{Channel, Connection};
use uuid::Uuid;

use super::commit::{committed, Commit};
use super::error::{JournalError, Replayed};
use super::files::FileJournals;
use super::records::Record;
use super::stream::StreamJournal;

/// Every open run's journal: files under the state dir, or the broker's
/// stream (`aggregator.journal`).
pub enum Journals {
    Files(FileJournals),
    Stream(StreamJournal),
}

impl Journals {
    /// Every open run's records, read back when taking the lead.
    pub async fn replay(&mut self, connection: &Connection) -> Result<Vec<Replayed>, JournalError> {
        match self {
            Journals::Files(files) => files.replay(),
            Journals::Stream(stream) => stream.replay(connection).await,
        }
    }

    /// Starts the journal of a new run; its announcement follows.
    pub fn create(&mut self, run_id: Uuid) -> Result<(), JournalError> {
        match self {
            Journals::Files(files) => files.create(run_id),
            Journals::Stream(_) => Ok(()),
        }
    }

    /// Queues a record; it is durable once [`Self::commit`] returns.
    pub fn append(&mut self, run_id: Uuid, record: &Record) -> Result<(), JournalError> {
        match self {
            Journals::Files(files) => files.append(run_id, record),
            Journals::Stream(stream) => stream.append(run_id, record),
        }
    }

    /// Makes every queued record durable: synced to disk, or confirmed by
    /// the broker's stream (on `publish`).
    pub async fn commit(&mut self, publish: &Channel) -> Result<(), JournalError> {
        committed(&mut self.start_commit(publish)?).await
    }

    /// Starts making every queued record durable and returns at once: the
    /// loop goes on counting while a disk syncs or the broker confirms.
    /// Records appended meanwhile wait for the next commit, which starts
    /// once this one is [`committed`], so they reach the journal in order.
    pub fn start_commit(&mut self, publish: &Channel) -> Result<Commit, JournalError> {
        match self {
            Journals::Files(files) => files.start_commit(),
            Journals::Stream(stream) => Ok(stream.start_commit(publish)),
        }
    }

    /// Whether records wait for a commit.
    pub fn has_pending(&self) -> bool {
        match self {
            Journals::Files(files) => files.has_pending(),
            Journals::Stream(stream) => stream.has_pending(),
        }
    }

    /// A finished run's journal goes (the stream's at the next commit).
    pub fn remove(&mut self, run_id: Uuid) -> Result<(), JournalError> {
        match self {
            Journals::Files(files) => files.remove(run_id),
            Journals::Stream(stream) => {
                stream.end(run_id);
                Ok(())
            }
        }
    }
}
