//! What a worker sends the broker about its jobs, batched: results (confirmed,
//! then the jobs acked) and "test started" events (best-effort).
//!
//! One task per broker session drains everything the job tasks have handed it
//! and publishes it in as few messages as it can: a group commit. When one test
//! finishes at a time, a batch is that one result and costs what a single
//! publish did; when results finish while a confirm is in flight, they wait for
//! it and go out together. That cuts the broker's work per test (a publish, a
//! confirm, a delivery and an ack per message), which bounds throughput on small
//! machines (docs/BENCHMARKS.md).
//!
//! The guarantee is the same as one result at a time: a job is acked only after
//! the message carrying its result is confirmed, and a start event goes out
//! before its test's result, on the same channel.

use lapin::message::Delivery;
use lapin::Channel;
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::limits::{
    MAX_BATCH_BYTES, MAX_MESSAGE_TEXT_BYTES, MAX_OUTPUT_CAP_BYTES, MAX_TEST_ID_BYTES,
};
use testfleet_common::wire::{Body, RunEvent, TestResult};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Results per message at most: a batch is one confirm, so a bigger one holds
/// back every job in it for longer.
const MAX_RESULTS: usize = 64;

/// Told to a job task once its result is confirmed and its job acked, or not.
type Settled = oneshot::Sender<Result<(), BrokerError>>;

/// Something a job task hands the outbox.
enum Outgoing {
    /// A test started: an event for followers of its run.
    Started(RunEvent),
    /// A test finished: its result, and the delivery to ack once it is confirmed.
    Finished {
        result: TestResult,
        /// Boxed: the variants travel through one channel, sized by the largest.
        delivery: Box<Delivery>,
        settled: Settled,
    },
}

/// Where job tasks hand their starts and results.
#[derive(Clone)]
pub struct Outbox {
    sender: mpsc::UnboundedSender<Outgoing>,
}

impl Outbox {
    /// Starts the outbox of one session, publishing on `channel` (confirm mode).
    /// It ends when every `Outbox` clone is dropped and it has sent the rest.
    pub fn start(
        channel: Channel,
        results_queue: String,
        events_exchange: String,
    ) -> (Outbox, tokio::task::JoinHandle<()>) {
        // Unbounded, yet bounded by the prefetch: it holds at most a start and a
        // result per delivery the worker holds, and a job task hands over its
        // result only to wait for it.
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(channel, results_queue, events_exchange, receiver));
        (Outbox { sender }, task)
    }

    /// Announces a start; never waits (events are best-effort).
    pub fn started(&self, event: RunEvent) {
        let _ = self.sender.send(Outgoing::Started(event));
    }

    /// Hands over a result and waits until it is confirmed and its job acked.
    pub async fn finished(
        &self,
        result: TestResult,
        delivery: Delivery,
    ) -> Result<(), BrokerError> {
        let (settled, done) = oneshot::channel();
        let outgoing = Outgoing::Finished {
            result,
            delivery: Box::new(delivery),
            settled,
        };
        if self.sender.send(outgoing).is_err() {
            return Err(BrokerError::ChannelGone);
        }
        done.await.unwrap_or(Err(BrokerError::ChannelGone))
    }
}

/// One batch: starts first (in order), then results with their deliveries.
#[derive(Default)]
struct Batch {
    started: Vec<RunEvent>,
    results: Vec<TestResult>,
    waiting: Vec<(Box<Delivery>, Settled)>,
    /// The results' estimated encoded size.
    bytes: usize,
}

impl Batch {
    /// Full when one more result might take the message over its bound:
    /// a result is at most `result_size_bound` (its output is capped).
    fn is_full(&self) -> bool {
        self.results.len() >= MAX_RESULTS || self.bytes + MAX_RESULT_BYTES > MAX_BATCH_BYTES
    }

    fn add(&mut self, outgoing: Outgoing) {
        match outgoing {
            Outgoing::Started(event) => self.started.push(event),
            Outgoing::Finished {
                result,
                delivery,
                settled,
            } => {
                self.bytes += result_size(&result);
                self.results.push(result);
                self.waiting.push((delivery, settled));
            }
        }
    }
}

/// The most a result's encoding can take: its strings are bounded by
/// `limits` (output cap, id, worker id, remark) and the rest is fixed-size.
const MAX_RESULT_BYTES: usize =
    MAX_OUTPUT_CAP_BYTES as usize + 2 * MAX_TEST_ID_BYTES + MAX_MESSAGE_TEXT_BYTES + (4 << 10);

/// An upper bound of a result's encoded size.
fn result_size(result: &TestResult) -> usize {
    result.output.len()
        + result.test_id.len()
        + result.worker_id.len()
        + result.message.as_ref().map_or(0, String::len)
        + 256
}

async fn run(
    channel: Channel,
    results_queue: String,
    events_exchange: String,
    mut receiver: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = Batch::default();
        batch.add(first);
        while !batch.is_full() {
            match receiver.try_recv() {
                Ok(outgoing) => batch.add(outgoing),
                Err(_) => break,
            }
        }
        broker::publish_run_events(&channel, &events_exchange, batch.started).await;
        if batch.results.is_empty() {
            continue;
        }
        let body = match batch.results.len() {
            1 => Body::Result(batch.results.pop().expect("one result")),
            _ => Body::Results(batch.results),
        };
        let published = broker::publish(&channel, "", &results_queue, &body).await;
        if let Err(error) = &published {
            warn!(%error, results = batch.waiting.len(), "could not publish results; their jobs will be redelivered");
        }
        for (delivery, settled) in batch.waiting {
            let acked = match &published {
                Ok(()) => broker::ack(&delivery).await,
                // Not acked: the broker redelivers the job and it runs again.
                Err(_) => Err(BrokerError::ChannelGone),
            };
            let _ = settled.send(acked);
        }
    }
}
