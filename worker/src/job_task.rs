//! What a job's task does, from the delivery to its ack: decode the job, take
//! a slot, announce its tests' starts, run it with the worker's executors, and
//! hand what it yields to the outbox (which acks the job once all of it is
//! confirmed); or give the job back. A discovery request is answered the same
//! way; a batch delivered again is split without running.
//!
//! A task owns its delivery and reports how it ended to the service loop
//! through its join handle ([`JobEnd`]); it shares nothing else with the loop.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use testfleet_common::broker::{self, BrokerError};
use testfleet_types::codec::decode;
use testfleet_types::messages::{Body, Discover, Job, Outcome, RunEvent, RunEventKind};
use testfleet_types::now_ms;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::discovery::{self, Listings};
use crate::executor::{Executors, Finished};
use crate::heartbeat::Board;
use crate::job::Requeue;
use crate::outbox::{NotSettled, Outbox};
use crate::taker::Taken;

/// How long a job waits for its engine to answer again before it is given
/// back to the queue: longer than an engine's restart, which stops every
/// container first (up to their stop timeout of 10 s).
const ENGINE_PATIENCE: Duration = Duration::from_secs(60);

/// How one job's task ended, as the loop needs to know.
pub enum JobEnd {
    Done,
    /// The engine did not answer; the job was requeued.
    EngineDown,
    /// What the job yields did not reach the broker; the session must restart.
    BrokerLost(BrokerError),
    /// The job could not be acked or given back on the channel it came on
    /// (gone with its run's queue, say); the broker requeues it if its queue
    /// is still there. The session goes on.
    Unsettled(BrokerError),
}

/// What a job's task needs, cloned from the loop's state.
pub struct JobContext {
    /// Listings of images this worker made (discovery).
    pub listings: Listings,
    pub executors: Executors,
    /// Where its start event and its result go, batched with other jobs'.
    pub outbox: Outbox,
    pub worker_id: String,
    /// Fires on abort, or when the session that delivered the job is lost.
    pub interrupt: CancellationToken,
    /// A permit per test slot, held while a job runs.
    pub slots: Arc<Semaphore>,
    /// What this worker runs now, for its heartbeats.
    pub board: Board,
}

impl JobContext {
    /// Runs the job taken, to its end. Its permit goes once its test has
    /// run (the taker may then take the next job while this one's result is
    /// confirmed), its channel's lease with the task.
    pub async fn handle(self, taken: Taken) -> JobEnd {
        let Taken {
            delivery,
            permit,
            lease,
        } = taken;
        let end = self.handle_delivery(delivery, permit).await;
        drop(lease);
        end
    }

    /// Runs whatever `delivery` asks for, to its end.
    async fn handle_delivery(self, delivery: Delivery, permit: OwnedSemaphorePermit) -> JobEnd {
        let job = match decode(&delivery.data) {
            Ok(Body::Job(job)) => job,
            Ok(Body::Discover(request)) => {
                let span = info_span!("discovery", request = %request.request_id);
                return self.discover(delivery, request).instrument(span).await;
            }
            Ok(other) => {
                let error = format!("expected a job message, got a {} message", other.kind());
                error!(%error, "rejecting a message of the wrong kind to the dead-letter queue");
                return settle(broker::nack(&delivery, false).await);
            }
            Err(error) => {
                error!(%error, "rejecting an unreadable job to the dead-letter queue");
                return settle(broker::nack(&delivery, false).await);
            }
        };
        let span = info_span!("job", run = %job.run_id, test = %job.label(), attempt = job.attempt);
        // A handle on the delivery's ack, kept here so that a panic anywhere
        // in the job still gives the job back: a dropped delivery is neither
        // acked nor nacked, and would hold its slot until the connection died.
        // The handle is single-use, so a job settled before it panicked stays
        // settled.
        let acker = delivery.acker.clone();
        let running = AssertUnwindSafe(self.run_job(delivery, job, permit)).catch_unwind();
        match running.instrument(span).await {
            Ok(end) => end,
            Err(panic) => {
                error!(panic = %panic_message(&panic), "a job task panicked; giving its job back to the queue");
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                match acker.nack(requeue).await {
                    Ok(_) => JobEnd::Done,
                    Err(error) => JobEnd::Unsettled(error.into()),
                }
            }
        }
    }

    async fn run_job(self, delivery: Delivery, job: Job, permit: OwnedSemaphorePermit) -> JobEnd {
        if now_ms() > job.deadline_ms {
            info!("skipping a job whose run is past its deadline");
            return settle(broker::ack(&delivery).await);
        }
        if delivery.redelivered && job.tests.len() > 1 {
            return self.split_redelivered(delivery, &job).await;
        }
        let slot = tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = self.interrupt.cancelled() => {
                return settle(broker::nack(&delivery, true).await);
            }
        };
        info!(
            executor = job.spec.executor.as_str(),
            tests = job.tests.len(),
            "test started"
        );
        self.announce_start(&job);
        let _on_board = self.board.running(&job);
        for id in job.ids() {
            testfleet_common::faults::panic_if_asked("job", id);
        }
        let ran = self.run_through_engine_outages(&job).await;
        drop((slot, permit));
        match ran {
            Ok(mut finished) => {
                log_finished(&finished);
                let cleanup = finished.cleanup.take();
                // Not acked if it fails: the broker redelivers the job.
                let end = handed(self.outbox.finished(finished, delivery).await);
                if let Some(cleanup) = cleanup {
                    cleanup.run().await;
                }
                end
            }
            Err(requeue) => {
                warn!(reason = %requeue, "giving the job back to the queue");
                let nacked = broker::nack(&delivery, true).await;
                match (requeue, nacked) {
                    (_, Err(error)) => JobEnd::Unsettled(error),
                    (Requeue::EngineUnreachable(_), Ok(())) => JobEnd::EngineDown,
                    (Requeue::Interrupted, Ok(())) => JobEnd::Done,
                }
            }
        }
    }

    /// Runs the job; when the engine stops answering, holds the job and its
    /// slot until the engine answers again (up to [`ENGINE_PATIENCE`]) and
    /// runs it again here. An engine restarting is the common outage: giving
    /// the job back at once would have the fleet's other slots take it, each
    /// meeting the same engine, until the broker's delivery limit
    /// dead-lettered a test that never failed. A slot held is also a worker
    /// taking no more jobs meanwhile.
    async fn run_through_engine_outages(&self, job: &Job) -> Result<Finished, Requeue> {
        let mut first_outage = None;
        loop {
            // This job's slot and the others free now: how many parts its
            // unreported tests are split into, so a culprit is found in
            // fewer rounds.
            let parts = self.slots.available_permits() + 1;
            let error = match self.executors.run(job, parts, &self.interrupt).await {
                Err(Requeue::EngineUnreachable(error)) => error,
                ended => return ended,
            };
            let outage_began = *first_outage.get_or_insert_with(tokio::time::Instant::now);
            let patience = ENGINE_PATIENCE.saturating_sub(outage_began.elapsed());
            warn!(%error, ?patience, "docker engine unreachable; holding the job until it answers");
            let answers = match self.executors.docker() {
                Some(docker) => docker.answers_within(patience, &self.interrupt).await,
                None => false,
            };
            if !answers {
                return Err(Requeue::EngineUnreachable(error));
            }
            info!(after = ?outage_began.elapsed(), "the docker engine answers again; running the job again here");
        }
    }

    /// Lists a suite's tests in its image and answers the producer that
    /// asked, from this worker's listings when it has the same image id.
    async fn discover(self, delivery: Delivery, request: Discover) -> JobEnd {
        if now_ms() > request.deadline_ms {
            info!("skipping a discovery nobody waits for any more");
            return settle(broker::ack(&delivery).await);
        }
        let job = discovery::job(&request);
        let image_id = self.executors.image_id(&job).await;
        let unchanged = image_id
            .as_ref()
            .filter(|id| request.known_image_id.as_ref() == Some(*id));
        let cached = match unchanged {
            Some(id) => Some(discovery::unchanged(&request, id.clone())),
            None => image_id
                .as_deref()
                .and_then(|id| self.listings.get(id, &request)),
        };
        let listing = match cached {
            Some(listing) => listing,
            None => {
                let _slot = tokio::select! {
                    slot = self.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = self.interrupt.cancelled() => return settle(broker::nack(&delivery, true).await),
                };
                info!(image = %request.spec.image, "listing tests");
                let observed = match self.executors.observe(&job, &self.interrupt).await {
                    Ok((observed, cleanup)) => {
                        if let Some(cleanup) = cleanup {
                            cleanup.run().await;
                        }
                        observed
                    }
                    Err(requeue) => {
                        warn!(reason = %requeue, "giving the discovery back to the queue");
                        return settle(broker::nack(&delivery, true).await);
                    }
                };
                let listing = discovery::listing(&request, observed, image_id.clone());
                if let (Outcome::Passed, Some(id)) = (listing.outcome, image_id) {
                    self.listings.keep(id, &request, &listing);
                }
                listing
            }
        };
        info!(
            cached = listing.cached,
            outcome = listing.outcome.as_str(),
            "tests listed"
        );
        handed(self.outbox.reply(Body::Listing(listing), delivery).await)
    }

    /// A batch delivered again: whoever ran it before died (or lost the
    /// broker) while it ran. Rather than run it whole again, and die again
    /// if one of its tests kills workers, it goes back as two halves, in the
    /// same attempt with a fresh delivery budget each: a test that kills
    /// whoever runs it ends up alone, and dead-lettered alone.
    async fn split_redelivered(&self, delivery: Delivery, job: &Job) -> JobEnd {
        let middle = job.tests.len() / 2;
        let halves = [&job.tests[..middle], &job.tests[middle..]].map(|tests| Job {
            tests: tests.to_vec(),
            published_at_ms: now_ms(),
            ..job.clone()
        });
        warn!(
            tests = job.tests.len(),
            "a batch delivered again: running it as two halves"
        );
        let finished = Finished {
            results: Vec::new(),
            batch: None,
            follow_ups: halves.to_vec(),
            cleanup: None,
        };
        handed(self.outbox.finished(finished, delivery).await)
    }

    /// Tells followers of the run that the job's tests started. Fire-and-forget:
    /// no confirm wait on the hot path, and a failure only loses the events.
    /// The outbox sends them before the results, on the same channel, so they
    /// reach a follower's queue before the aggregator can have counted a result.
    fn announce_start(&self, job: &Job) {
        for id in job.ids() {
            self.outbox.started(RunEvent {
                run_id: job.run_id,
                at_ms: now_ms(),
                kind: RunEventKind::TestStarted {
                    test_id: id.to_owned(),
                    attempt: job.attempt,
                    worker_id: self.worker_id.clone(),
                },
            });
        }
    }
}

/// Logs how a job ended: one line per test alone, one per batch.
fn log_finished(finished: &Finished) {
    match (&finished.batch, finished.results.as_slice()) {
        (None, [result]) => {
            info!(outcome = result.outcome.as_str(), exit_code = ?result.exit_code, duration_ms = result.duration_ms, "test finished")
        }
        (batch, results) => {
            let failed = results
                .iter()
                .filter(|r| r.outcome != Outcome::Passed)
                .count();
            info!(
                results = results.len(),
                failed,
                split_into = batch.as_ref().map_or(0, |b| b.split_into),
                exit_code = ?batch.as_ref().and_then(|b| b.exit_code),
                "batch finished"
            );
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// How a job ended that was acked or given back here.
fn settle(acked: Result<(), BrokerError>) -> JobEnd {
    match acked {
        Ok(()) => JobEnd::Done,
        Err(error) => JobEnd::Unsettled(error),
    }
}

/// How a job ended that was handed to the outbox.
fn handed(settled: Result<(), NotSettled>) -> JobEnd {
    match settled {
        Ok(()) => JobEnd::Done,
        Err(NotSettled::NotPublished(error)) => JobEnd::BrokerLost(error),
        Err(NotSettled::NotAcked(error)) => JobEnd::Unsettled(error),
    }
}
