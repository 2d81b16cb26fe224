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
//! every message carrying what it yields (its results, its batch record, the
//! jobs its unreported tests run again in) is confirmed, and a start event goes
//! out before its test's result, on the same channel.

use lapin::message::Delivery;
use lapin::Channel;
use testfleet_common::broker::{self, BrokerError, Routed};
use testfleet_common::topology::Topology;
use testfleet_types::limits::{
    MAX_BATCH_BYTES, MAX_MESSAGE_TEXT_BYTES, MAX_OUTPUT_CAP_BYTES, MAX_TEST_ID_BYTES,
};
use testfleet_types::messages::{BatchRecord, Batches, Body, Job, JobQueue, RunEvent, TestResult};
use testfleet_types::now_ms;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::executor::Finished;

/// Jobs per group commit at most: a group is one confirm wait, so a bigger
/// one holds back every job in it for longer.
const MAX_JOBS: usize = 64;

/// Told to a job task once its results are confirmed and its job acked, or not.
type Settled = oneshot::Sender<Result<(), NotSettled>>;

/// Why a job handed to the outbox was not settled.
#[derive(Debug, thiserror::Error)]
pub enum NotSettled {
    /// What it yields did not reach the broker: the session is lost, and
    /// the broker redelivers the job.
    #[error("not published: {0}")]
    NotPublished(BrokerError),
    /// Published, but not acked: the channel it came on is gone (its run's
    /// queue deleted, say), and the broker requeues it if its queue is still
    /// there; the session goes on.
    #[error("published but not acked: {0}")]
    NotAcked(BrokerError),
}

/// Something a job task hands the outbox.
enum Outgoing {
    /// An answer to a request (a discovery): to its reply-to, then the ack.
    Reply {
        body: Box<Body>,
        delivery: Box<Delivery>,
        settled: Settled,
    },
    /// A test started: an event for followers of its run.
    Started(RunEvent),
    /// A job finished: what it yields, and the delivery to ack once all of it
    /// is confirmed.
    Finished {
        /// Boxed: the variants travel through one channel, sized by the largest.
        finished: Box<Finished>,
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
    pub fn start(channel: Channel, topology: Topology) -> (Outbox, tokio::task::JoinHandle<()>) {
        // Unbounded, yet bounded by the prefetch: it holds at most a start and a
        // result per delivery the worker holds, and a job task hands over its
        // result only to wait for it.
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(channel, topology, receiver));
        (Outbox { sender }, task)
    }

    /// Announces a start; never waits (events are best-effort).
    pub fn started(&self, event: RunEvent) {
        let _ = self.sender.send(Outgoing::Started(event));
    }

    /// Answers the request `delivery` brought with `body`, then acks it; waits
    /// until both are done.
    pub async fn reply(&self, body: Body, delivery: Delivery) -> Result<(), NotSettled> {
        let (settled, done) = oneshot::channel();
        let outgoing = Outgoing::Reply {
            body: Box::new(body),
            delivery: Box::new(delivery),
            settled,
        };
        if self.sender.send(outgoing).is_err() {
            return Err(NotSettled::NotPublished(BrokerError::ChannelGone));
        }
        done.await
            .unwrap_or(Err(NotSettled::NotPublished(BrokerError::ChannelGone)))
    }

    /// Hands over what a job yields (its cleanup already taken) and waits
    /// until all of it is confirmed and the job acked.
    pub async fn finished(&self, finished: Finished, delivery: Delivery) -> Result<(), NotSettled> {
        let (settled, done) = oneshot::channel();
        let outgoing = Outgoing::Finished {
            finished: Box::new(finished),
            delivery: Box::new(delivery),
            settled,
        };
        if self.sender.send(outgoing).is_err() {
            return Err(NotSettled::NotPublished(BrokerError::ChannelGone));
        }
        done.await
            .unwrap_or(Err(NotSettled::NotPublished(BrokerError::ChannelGone)))
    }
}

/// One group commit: starts first (in order), then follow-up jobs, batch
/// records and results, with the deliveries they settle.
#[derive(Default)]
struct Group {
    started: Vec<RunEvent>,
    follow_ups: Vec<Job>,
    items: Vec<Item>,
    waiting: Vec<(Box<Delivery>, Settled)>,
    replies: Vec<(Box<Body>, Box<Delivery>, Settled)>,
}

/// What goes to the results queue.
enum Item {
    Batch(BatchRecord),
    Result(TestResult),
}

impl Group {
    fn is_full(&self) -> bool {
        self.waiting.len() + self.replies.len() >= MAX_JOBS
    }

    fn add(&mut self, outgoing: Outgoing) {
        match outgoing {
            Outgoing::Started(event) => self.started.push(event),
            Outgoing::Reply {
                body,
                delivery,
                settled,
            } => self.replies.push((body, delivery, settled)),
            Outgoing::Finished {
                finished,
                delivery,
                settled,
            } => {
                let Finished {
                    results,
                    batch,
                    follow_ups,
                    ..
                } = *finished;
                self.items.extend(batch.map(Item::Batch));
                self.items.extend(results.into_iter().map(Item::Result));
                self.follow_ups.extend(follow_ups);
                self.waiting.push((delivery, settled));
            }
        }
    }

    /// The results-queue messages: batch records and results in order, cut
    /// so that no message exceeds `MAX_BATCH_BYTES`.
    fn messages(items: Vec<Item>) -> Vec<Body> {
        broker::batches_within(items, MAX_BATCH_BYTES - MAX_ITEM_BYTES, item_size)
            .into_iter()
            .map(|items| {
                let mut message = Batches {
                    batches: Vec::new(),
                    results: Vec::new(),
                };
                for item in items {
                    match item {
                        Item::Batch(batch) => message.batches.push(batch),
                        Item::Result(result) => message.results.push(result),
                    }
                }
                Body::Batches(message)
            })
            .collect()
    }
}

/// The most one item's encoding can take: its strings are bounded by `limits`
/// (output or log cap, ids, worker id, remark) and the rest is fixed-size.
/// A message is cut before it could pass `MAX_BATCH_BYTES` with one more.
const MAX_ITEM_BYTES: usize =
    MAX_OUTPUT_CAP_BYTES as usize + 2 * MAX_TEST_ID_BYTES + MAX_MESSAGE_TEXT_BYTES + (4 << 10);

/// An upper bound of an item's encoded size.
fn item_size(item: &Item) -> usize {
    match item {
        Item::Result(result) => {
            result.output.len()
                + result.test_id.len()
                + result.worker_id.len()
                + result.message.as_ref().map_or(0, String::len)
                + 256
        }
        Item::Batch(batch) => {
            batch.log.as_ref().map_or(0, String::len) + batch.worker_id.len() + 256
        }
    }
}

async fn run(
    channel: Channel,
    topology: Topology,
    mut receiver: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(first) = receiver.recv().await {
        let mut group = Group::default();
        group.add(first);
        while !group.is_full() {
            match receiver.try_recv() {
                Ok(outgoing) => group.add(outgoing),
                Err(_) => break,
            }
        }
        broker::publish_run_events(&channel, &topology.verdicts, group.started).await;
        for (body, delivery, settled) in group.replies {
            let answered = match broker::reply(&channel, &delivery, &body).await {
                Ok(_) => broker::ack(&delivery).await.map_err(NotSettled::NotAcked),
                Err(error) => Err(NotSettled::NotPublished(error)),
            };
            let _ = settled.send(answered);
        }
        if group.waiting.is_empty() {
            continue;
        }
        let published = publish(&channel, &topology, group.follow_ups, group.items).await;
        if let Err(error) = &published {
            warn!(%error, jobs = group.waiting.len(), "could not publish results; their jobs will be redelivered");
        }
        for (delivery, settled) in group.waiting {
            let acked = match &published {
                Ok(()) => broker::ack(&delivery).await.map_err(NotSettled::NotAcked),
                // Not acked: the broker redelivers the job and it runs again.
                Err(_) => Err(NotSettled::NotPublished(BrokerError::ChannelGone)),
            };
            let _ = settled.send(acked);
        }
    }
}

/// Publishes the follow-up jobs and the results messages, confirms pipelined,
/// and waits for every confirm. A follow-up of a run that is over is
/// dropped, said in the log, never the session's failure: past its
/// deadline, or returned by the broker because the run's own queue is gone
/// (the aggregator deletes it at the run's end).
async fn publish(
    channel: &Channel,
    topology: &Topology,
    follow_ups: Vec<Job>,
    items: Vec<Item>,
) -> Result<(), BrokerError> {
    let mut job_confirms = Vec::new();
    let now = now_ms();
    for job in follow_ups {
        if job.deadline_ms < now {
            warn!(run = %job.run_id, tests = job.tests.len(), "dropping follow-up jobs of a run past its deadline");
            continue;
        }
        let queue = topology.jobs_queue_of(job.queue, &job.run_id.to_string());
        let (run_id, tests, own) = (job.run_id, job.tests.len(), job.queue == JobQueue::Own);
        let confirm = broker::publish_unconfirmed(channel, "", &queue, &Body::Job(job)).await?;
        job_confirms.push((confirm, queue, run_id, tests, own));
    }
    let mut confirms = Vec::new();
    if !items.is_empty() {
        for body in Group::messages(items) {
            let confirm =
                broker::publish_unconfirmed(channel, "", &topology.results, &body).await?;
            confirms.push((confirm, topology.results.clone()));
        }
    }
    for (confirm, queue, run_id, tests, own) in job_confirms {
        match broker::routed(broker::confirmed(confirm, &queue).await?, &queue)? {
            Routed::ToQueue => {}
            Routed::NoQueue if own => {
                warn!(run = %run_id, tests, %queue, "dropping follow-up jobs of a run that is over: its queue is gone");
            }
            Routed::NoQueue => return Err(BrokerError::NotConfirmed { routing_key: queue }),
        }
    }
    for (confirm, queue) in confirms {
        broker::check_confirm(broker::confirmed(confirm, &queue).await?, &queue)?;
    }
    Ok(())
}
