//! The suites' history files, worked on off the aggregator's loop: a query is
//! answered from a task that reads the suite's file on a blocking thread, and
//! one writer task appends finished runs' samples (durations, and which tests
//! were flaky or failed) in the order they finished, so that two runs of one
//! suite never write its files at once.
//!
//! A reader may meet a file while the writer appends to it or compacts it:
//! compaction renames a whole new file into place, and a record being
//! appended reads as a torn last record, which `history::read` leaves out.

use lapin::message::Delivery;
use lapin::Channel;
use testfleet_common::broker;
use testfleet_types::messages::{Body, Capacity, History};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};
use uuid::Uuid;

use crate::history::{HistoryStore, Learned};
use crate::outcomes::{OutcomeStore, RunOutcomes};

/// A finished run's samples, waiting for the writer.
struct Samples {
    run_id: Uuid,
    suite: String,
    samples: Vec<(String, u64)>,
    outcomes: RunOutcomes,
}

/// The history files' reader tasks and their one writer.
pub struct HistoryFiles {
    store: HistoryStore,
    writes: mpsc::UnboundedSender<Samples>,
    writer: JoinHandle<()>,
}

impl HistoryFiles {
    /// Starts the writer; needs a tokio runtime.
    pub fn start(store: HistoryStore, outcomes: OutcomeStore) -> HistoryFiles {
        let (writes, queued) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_in_order(store.clone(), outcomes, queued));
        HistoryFiles {
            store,
            writes,
            writer,
        }
    }

    /// Queues a finished run's samples to be added to its suite's files.
    pub fn record(
        &self,
        run_id: Uuid,
        suite: String,
        samples: Vec<(String, u64)>,
        outcomes: RunOutcomes,
    ) {
        let queued = self.writes.send(Samples {
            run_id,
            suite,
            samples,
            outcomes,
        });
        if queued.is_err() {
            warn!(run = %run_id, "the history writer is gone; the run's durations are not kept");
        }
    }

    /// Answers a producer's history query from a task of its own: the
    /// suite's durations (none if its file cannot be read: the producer then
    /// keeps arrival order), replied on `channel`, then the query acked.
    /// The fleet's `capacity` goes with it.
    pub fn answer(
        &self,
        suite: String,
        capacity: Option<Capacity>,
        delivery: Delivery,
        channel: Channel,
    ) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let read_suite = suite.clone();
            let loaded = tokio::task::spawn_blocking(move || store.load(&read_suite)).await;
            let learned = match loaded {
                Ok(Ok(history)) => history.into_answer(),
                Ok(Err(error)) => {
                    error!(%suite, %error, "could not read the suite's history");
                    Learned::default()
                }
                Err(panicked) => {
                    error!(%suite, error = %panicked, "reading the suite's history panicked");
                    Learned::default()
                }
            };
            debug!(%suite, tests = learned.durations_ms.len(), "answering a history query");
            let answer = Body::History(History {
                suite,
                durations_ms: learned.durations_ms,
                batch_overhead_ms: learned.batch_overhead_ms,
                host_busy_permille: learned.host_busy_permille,
                capacity,
            });
            // A query without a reply-to address is acked unanswered.
            let answered = match broker::reply(&channel, &delivery, &answer).await {
                Ok(_) => broker::ack(&delivery).await,
                Err(error) => Err(error),
            };
            if let Err(error) = answered {
                // The query expires; the producer goes on in arrival order.
                warn!(%error, "could not answer a history query");
            }
        });
    }

    /// Waits until every queued run's samples are written.
    pub async fn close(self) {
        drop(self.writes);
        if let Err(error) = self.writer.await {
            error!(%error, "the history writer failed");
        }
    }
}

/// The writer: one run's samples at a time, each on a blocking thread.
async fn write_in_order(
    store: HistoryStore,
    outcome_store: OutcomeStore,
    mut queued: mpsc::UnboundedReceiver<Samples>,
) {
    while let Some(Samples {
        run_id,
        suite,
        samples,
        outcomes,
    }) = queued.recv().await
    {
        let store = store.clone();
        let outcome_store = outcome_store.clone();
        let written = tokio::task::spawn_blocking(move || {
            store.record(&suite, &samples)?;
            outcome_store.record(&suite, &outcomes)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(run = %run_id, %error, "could not record the run's durations"),
            Err(panicked) => {
                error!(run = %run_id, error = %panicked, "recording the run's durations panicked")
            }
        }
    }
}
