//! The worker's service loop: consume jobs, run each in a slot, publish the result,
//! then ack.
//!
//! One loop owns the state (consumer, running jobs, engine health) and `select!`s
//! over deliveries, finished jobs, shutdown and the sweep timer. The prefetch equals
//! the number of slots, so the broker never hands this worker more jobs than it can
//! run at once, and an unacked job is redelivered elsewhere if the worker dies.
//!
//! The Docker engine matters only to a worker with the Docker executor: one
//! started with `--executors process` never looks for it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::now_ms;
use testfleet_common::shutdown::Shutdown;
use testfleet_common::topology::Topology;
use testfleet_common::wire::{
    decode, Body, Discover, ExecutorKind, Job, Outcome, RunEvent, RunEventKind,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument};

use crate::discovery::{self, Listings};
use crate::docker::DockerExecutor;
use crate::executor::{Executor, Executors, Finished};
use crate::job::Requeue;
use crate::labels::{self, Sweep};
use crate::outbox::Outbox;
use crate::phases;
use crate::process::ProcessExecutor;
use crate::warm::WARM_IDLE_MAX;

/// Often enough that a dead neighbour's containers go soon after it dies; a
/// sweep is one label-filtered list call.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Validated settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub broker_url: String,
    pub connect_timeout: Duration,
    pub topology: Topology,
    pub concurrency: u16,
    pub worker_id: String,
    pub docker_timeout: Duration,
    /// Executors to run jobs with; validated non-empty.
    pub executors: Vec<ExecutorKind>,
    /// Deliveries beyond the slots, so a slot can start a test while its last
    /// result is being confirmed; 0 keeps prefetch equal to slots.
    pub prefetch_extra: u16,
}

/// Containers the engine could not remove, when the worker has a Docker executor.
type Leftovers = Option<mpsc::UnboundedReceiver<String>>;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// How one job's task ended, as the loop needs to know.
enum JobEnd {
    Done,
    /// The engine did not answer; the job was requeued.
    EngineDown,
    /// The broker connection failed under the task; the session must restart.
    BrokerLost(BrokerError),
}

/// How a session with the broker ended.
enum SessionEnd {
    Drained,
    Lost(BrokerError),
}

/// Runs a worker until `shutdown` drains it (or the broker stays unreachable).
pub async fn run(settings: WorkerSettings, shutdown: Shutdown) -> Result<(), WorkerError> {
    let Some((executors, mut leftovers)) = start_executors(&settings, &shutdown).await else {
        return Ok(());
    };
    info!(worker = %settings.worker_id, slots = settings.concurrency, executors = %executors.kinds().join(","), "worker started");

    let mut backoff = broker::SessionBackoff::default();
    let listings = Listings::default();
    while !shutdown.is_draining() {
        let connection = tokio::select! {
            connected = broker::connect(&settings.broker_url, settings.connect_timeout) => connected?,
            () = shutdown.draining() => break,
        };
        let began = std::time::Instant::now();
        match session(
            &connection,
            &settings,
            &executors,
            &mut leftovers,
            &listings,
            &shutdown,
        )
        .await
        {
            Ok(SessionEnd::Drained) => {
                let _ = connection.close(200, "worker stopped".into()).await;
                break;
            }
            Err(error) if error.is_fatal() => {
                let _ = connection.close(200, "cannot go on".into()).await;
                return Err(error.into());
            }
            Ok(SessionEnd::Lost(error)) | Err(error) => {
                let pause = backoff.after(began.elapsed());
                warn!(%error, retry_in = ?pause, "lost the broker connection, reconnecting");
                let _ = connection.close(200, "reconnecting".into()).await;
                shutdown.sleep(pause).await;
            }
        }
    }
    if let Some(docker) = executors.docker() {
        docker.retire_warm(Duration::ZERO).await;
        phases::log_summary();
    }
    info!(worker = %settings.worker_id, "worker stopped");
    Ok(())
}

/// Sets up each executor the settings name. With Docker, waits for the engine and
/// removes what a predecessor with this id left. `None` if asked to stop first.
async fn start_executors(
    settings: &WorkerSettings,
    shutdown: &Shutdown,
) -> Option<(Executors, Leftovers)> {
    let mut enabled = Vec::new();
    let mut leftovers = None;
    for kind in &settings.executors {
        match kind {
            ExecutorKind::Docker => {
                let docker = connect_engine(settings.docker_timeout, shutdown).await?;
                let (executor, receiver) = DockerExecutor::new(docker, settings.worker_id.clone());
                wait_for_engine(&executor, shutdown).await;
                let removed =
                    labels::sweep(&executor, Sweep::ExpiredOrOwnedBy(&settings.worker_id)).await;
                info!(orphans_removed = removed, "docker executor ready");
                leftovers = Some(receiver);
                enabled.push(Executor::Docker(executor));
            }
            ExecutorKind::Process => enabled.push(Executor::Process(ProcessExecutor::new())),
        }
    }
    Some((
        Executors::new(settings.worker_id.clone(), enabled),
        leftovers,
    ))
}

/// Retries removing containers the engine did not answer for (Docker only).
async fn remove_leftovers(executors: &Executors, leftovers: &mut Leftovers) {
    if let (Some(docker), Some(leftovers)) = (executors.docker(), leftovers.as_mut()) {
        labels::remove_leftovers(docker, leftovers).await;
    }
}

/// One connection's worth of work. Errors here restart the session.
async fn session(
    connection: &Connection,
    settings: &WorkerSettings,
    executors: &Executors,
    leftovers: &mut Leftovers,
    listings: &Listings,
    shutdown: &Shutdown,
) -> Result<SessionEnd, BrokerError> {
    let consume = connection.create_channel().await?;
    broker::declare(&consume, &settings.topology).await?;
    consume
        .basic_qos(
            settings.concurrency + settings.prefetch_extra,
            BasicQosOptions::default(),
        )
        .await?;
    // A permit per slot, held while a test runs (not while its result is
    // confirmed): with `prefetch_extra` = 0 one is always free for a delivery.
    let slots = Arc::new(Semaphore::new(usize::from(settings.concurrency)));
    let (outbox, outbox_task) = Outbox::start(
        broker::confirm_channel(connection).await?,
        settings.topology.clone(),
    );
    let mut consumer = consume
        .basic_consume(
            settings.topology.jobs.as_str().into(),
            settings.worker_id.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut running: JoinSet<JobEnd> = JoinSet::new();
    let (engine_back_tx, mut engine_back) = mpsc::channel::<()>(1);
    let mut engine_ok = true;
    let mut consuming = true;
    // Interrupts this session's jobs on abort, or when the connection is lost.
    let interrupt = shutdown.abort_token().child_token();
    let mut sweep_timer = tokio::time::interval(SWEEP_EVERY);
    sweep_timer.tick().await;

    let end = loop {
        if !consuming && running.is_empty() {
            break SessionEnd::Drained;
        }
        tokio::select! {
            () = shutdown.draining(), if consuming => {
                consuming = false;
                cancel_consumer(&consume, &settings.worker_id).await;
                info!(running = running.len(), "no longer taking jobs; waiting for running ones");
            }
            delivery = consumer.next(), if consuming && engine_ok => match delivery {
                Some(Ok(delivery)) => {
                    let job = JobContext {
                        listings: listings.clone(),
                        executors: executors.clone(),
                        outbox: outbox.clone(),
                        worker_id: settings.worker_id.clone(),
                        interrupt: interrupt.clone(),
                        slots: slots.clone(),
                    };
                    running.spawn(job.handle(delivery));
                }
                Some(Err(error)) => break SessionEnd::Lost(error.into()),
                None => break SessionEnd::Lost(BrokerError::ChannelGone),
            },
            Some(ended) = running.join_next() => match ended {
                // A job that ends normally shows the engine answers: a good time
                // to remove what an outage left behind (a no-op when nothing was).
                Ok(JobEnd::Done) => remove_leftovers(executors, leftovers).await,
                Ok(JobEnd::EngineDown) if engine_ok => {
                    engine_ok = false;
                    warn!("docker engine unreachable: pausing until it answers");
                    let executor = executors.docker().expect("only docker jobs find the engine down").clone();
                    let tx = engine_back_tx.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        wait_for_engine(&executor, &shutdown).await;
                        labels::sweep(&executor, Sweep::Expired).await;
                        let _ = tx.send(()).await;
                    });
                }
                Ok(JobEnd::EngineDown) => {}
                Ok(JobEnd::BrokerLost(error)) => break SessionEnd::Lost(error),
                Err(panic) => error!(%panic, "a job task panicked; its job will be redelivered"),
            },
            Some(()) = engine_back.recv() => {
                info!("docker engine answers again: taking jobs");
                engine_ok = true;
                remove_leftovers(executors, leftovers).await;
            }
            _ = sweep_timer.tick() => {
                if let Some(docker) = executors.docker() {
                    labels::sweep(docker, Sweep::Expired).await;
                    docker.retire_warm(WARM_IDLE_MAX).await;
                }
                remove_leftovers(executors, leftovers).await;
            }
        }
    };
    if let SessionEnd::Lost(_) = end {
        // Jobs still running hold deliveries of a dead channel: the broker has
        // requeued them already, so their results would only be duplicates. Stop
        // them at a safe point, where their containers are removed.
        interrupt.cancel();
        while running.join_next().await.is_some() {}
    }
    // Every job task has ended, so nothing is left for the outbox to send.
    drop(outbox);
    let _ = outbox_task.await;
    Ok(end)
}

async fn cancel_consumer(channel: &Channel, tag: &str) {
    if let Err(error) = channel
        .basic_cancel(tag.into(), BasicCancelOptions::default())
        .await
    {
        warn!(%error, "could not cancel the consumer; closing the connection will");
    }
}

/// Sets up the Docker client, waiting (with backoff) while the engine's socket
/// does not exist yet: a worker may start before its engine. `None` if the
/// worker is asked to stop first.
async fn connect_engine(timeout: Duration, shutdown: &Shutdown) -> Option<bollard::Docker> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match bollard::Docker::connect_with_local_defaults() {
            Ok(docker) => return Some(docker.with_timeout(timeout)),
            Err(error) => warn!(%error, retry_in = ?backoff, "docker engine unreachable"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.draining() => return None,
        }
        backoff = (backoff * 2).min(ENGINE_RETRY_MAX);
    }
}

/// Pings the engine with backoff until it answers or the worker drains.
async fn wait_for_engine(executor: &DockerExecutor, shutdown: &Shutdown) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match executor.docker().ping().await {
            Ok(_) => return,
            Err(error) => warn!(%error, retry_in = ?backoff, "docker engine unreachable"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.draining() => return,
        }
        backoff = (backoff * 2).min(ENGINE_RETRY_MAX);
    }
}

/// What a job's task needs, cloned from the loop's state.
struct JobContext {
    /// Listings of images this worker made (discovery).
    listings: Listings,
    executors: Executors,
    /// Where its start event and its result go, batched with other jobs'.
    outbox: Outbox,
    worker_id: String,
    interrupt: tokio_util::sync::CancellationToken,
    slots: Arc<Semaphore>,
}

impl JobContext {
    async fn handle(self, delivery: Delivery) -> JobEnd {
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
        let running = AssertUnwindSafe(self.run_job(delivery, job)).catch_unwind();
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
                    Err(error) => JobEnd::BrokerLost(error.into()),
                }
            }
        }
    }

    async fn run_job(self, delivery: Delivery, job: Job) -> JobEnd {
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
                return match broker::nack(&delivery, true).await {
                    Ok(()) => JobEnd::Done,
                    Err(error) => JobEnd::BrokerLost(error),
                };
            }
        };
        info!(
            executor = job.spec.executor.as_str(),
            tests = job.tests.len(),
            "test started"
        );
        self.announce_start(&job);
        for id in job.ids() {
            testfleet_common::faults::panic_if_asked("job", id);
        }
        let ran = self.executors.run(&job, &self.interrupt).await;
        drop(slot);
        match ran {
            Ok(mut finished) => {
                log_finished(&finished);
                let cleanup = finished.cleanup.take();
                // Not acked if it fails: the broker redelivers the job.
                let end = settle(self.outbox.finished(finished, delivery).await);
                if let Some(cleanup) = cleanup {
                    cleanup.run().await;
                }
                end
            }
            Err(requeue) => {
                warn!(reason = %requeue, "giving the job back to the queue");
                let nacked = broker::nack(&delivery, true).await;
                match (requeue, nacked) {
                    (_, Err(error)) => JobEnd::BrokerLost(error),
                    (Requeue::EngineUnreachable(_), Ok(())) => JobEnd::EngineDown,
                    (Requeue::Interrupted, Ok(())) => JobEnd::Done,
                }
            }
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
        settle(self.outbox.reply(Body::Listing(listing), delivery).await)
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
        settle(self.outbox.finished(finished, delivery).await)
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

fn settle(acked: Result<(), BrokerError>) -> JobEnd {
    match acked {
        Ok(()) => JobEnd::Done,
        Err(error) => JobEnd::BrokerLost(error),
    }
}
