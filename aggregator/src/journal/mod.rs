//! The aggregator's durable state: each open run's facts, in the order they
//! were counted, replayed to rebuild the run after a restart or on another
//! aggregator taking the lead.
//!
//! A fact is acked only once its record is durable (synced to disk, or
//! confirmed by the broker's stream), in group commits. A finished run's
//! journal goes once its verdict is out.
//!
//! Layout:
//! - [`journals`]: the one type the loop talks to, over either kind.
//! - [`records`]: the records, types of the journal's own, and its format.
//! - [`files`]: `aggregator.journal = "file"`, a file per run under the
//!   state dir.
//! - [`stream`]: `aggregator.journal = "broker"`, a RabbitMQ stream a standby
//!   replays.
//! - [`seal`]: the stream's entries sealed with a key only aggregators hold.
//! - [`commit`]: a group commit under way, off the loop.
//! - [`error`]: why a journal could not be read or written.

pub mod commit;
pub mod error;
pub mod files;
pub mod journals;
pub mod records;
pub mod seal;
pub mod stream;

pub use error::{JournalError, Replayed};
pub use files::FileJournals;
pub use journals::Journals;
pub use records::Record;
