//! A group commit under way: records being synced to disk or confirmed by
//! the broker's stream, off the loop, and waiting for it to end.

use tokio::task::JoinHandle;

use super::error::JournalError;

/// A commit under way ([`super::Journals::start_commit`]).
pub type Commit = JoinHandle<Result<(), JournalError>>;

/// Waits for a commit under way to end; its panic is the loop's.
pub async fn committed(commit: &mut Commit) -> Result<(), JournalError> {
    match commit.await {
        Ok(done) => done,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(JournalError::Cancelled),
    }
}
