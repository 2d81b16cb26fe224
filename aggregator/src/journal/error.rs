//! Why a journal could not be read or written, and a run's journal as
//! replayed.

use std::io;
use std::path::PathBuf;

use testfleet_common::broker::BrokerError;
use uuid::Uuid;

use super::records::Record;
use crate::framed::FileError;

/// A journal could not be read or written; names the file, folder or stream.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    File(#[from] FileError),
    /// The broker journal's session failed: a reconnect, like any other.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the journal stream holds {0}")]
    Stream(String),
    #[error("the journal stream sent nothing for {0:?} while being replayed")]
    Stalled(std::time::Duration),
    /// A commit's task was stopped with the runtime: nothing says it is durable.
    #[error("a journal commit was cancelled")]
    Cancelled,
}

/// A run's journal as replayed: its records, or why it cannot be used.
pub type Replayed = (Uuid, Result<Vec<Record>, JournalError>);
