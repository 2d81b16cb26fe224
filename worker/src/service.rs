//! The worker's service loop: take jobs, run each in a slot (its own task,
//! `job_task`), and keep the session with the broker and the engine healthy.
//!
//! One loop owns the state of a session ([`Session`]: the taker, running
//! jobs, engine health) and `select!`s over jobs taken, finished jobs,
//! shutdown and the sweep timer, each handled by a method of its own. The
//! taker (`taker.rs`) takes a job only for a free slot (plus
//! `worker.prefetch_extra`), in turn from every open run's queue, so this
//! worker never holds more jobs than it can run at once, and an unacked job
//! is redelivered elsewhere if the worker dies. Chores that may wait on the
//! engine (the orphan sweep, removing what an outage left) run in tasks of
//! their own, so the loop never waits on them.
//!
//! The Docker engine matters only to a worker with the Docker executor: one
//! started with `--executors process` never looks for it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::shutdown::Shutdown;
use testfleet_types::messages::ExecutorKind;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::discovery::Listings;
use crate::docker::DockerExecutor;
use crate::executor::{Executor, Executors};
use crate::heartbeat::{self, Board, Identity};
use crate::host;
use crate::job_task::{JobContext, JobEnd};
use crate::labels::Sweep;
use crate::outbox::Outbox;
use crate::phases;
use crate::process::ProcessExecutor;
use crate::settings::WorkerSettings;
use crate::taker::{Taken, Taker, TakerSetup, Taking};
use crate::warm::WARM_IDLE_MAX;

/// Waits until `deadline`; for ever without one.
async fn idle_for(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Often enough that a dead neighbour's containers go soon after it dies; a
/// sweep is one label-filtered list call.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// How a session with the broker ended.
enum SessionEnd {
    Drained,
    Lost(BrokerError),
}

/// What outlives a session: the executors, what the engine could not
/// remove, and the listings made.
struct Worker {
    settings: WorkerSettings,
    executors: Executors,
    /// Containers the engine could not remove (Docker only).
    leftovers: Option<mpsc::UnboundedReceiver<String>>,
    listings: Listings,
    /// What its slots run now, for its heartbeats.
    board: Board,
}

/// Runs a worker until `shutdown` drains it (or the broker stays unreachable).
pub async fn run(settings: WorkerSettings, shutdown: Shutdown) -> Result<(), WorkerError> {
    let Some(mut worker) = Worker::start(settings, &shutdown).await else {
        return Ok(());
    };
    let settings = &worker.settings;
    info!(worker = %settings.worker_id, slots = settings.concurrency, executors = %worker.executors.kinds().join(","), "worker started");
    let mut backoff = broker::SessionBackoff::default();
    let mut brokers = settings.brokers.clone();
    // Bounded at start-up (a wrong URL is said at once), patient after.
    let mut patience = Some(settings.connect_timeout);
    while !shutdown.is_draining() {
        let connection = tokio::select! {
            connected = broker::connect(&mut brokers, patience) => Arc::new(connected?),
            () = shutdown.draining() => break,
        };
        patience = None;
        let began = std::time::Instant::now();
        let ended = match Session::open(connection.clone(), &worker, &shutdown).await {
            Ok(session) => Ok(session.run(&mut worker, &shutdown).await),
            Err(error) => Err(error),
        };
        match ended {
            Ok(SessionEnd::Drained) => {
                broker::close(&connection, "worker stopped").await;
                break;
            }
            Err(error) if error.is_fatal() => {
                broker::close(&connection, "cannot go on").await;
                return Err(error.into());
            }
            Ok(SessionEnd::Lost(error)) | Err(error) => {
                let pause = backoff.after(began.elapsed());
                warn!(%error, retry_in = ?pause, "lost the broker connection, reconnecting");
                broker::close(&connection, "reconnecting").await;
                shutdown.sleep(pause).await;
            }
        }
    }
    if let Some(docker) = worker.executors.docker() {
        docker.retire_warm(Duration::ZERO).await;
        phases::log_summary();
    }
    info!(worker = %worker.settings.worker_id, "worker stopped");
    Ok(())
}

impl Worker {
    /// Sets up each executor the settings name. With Docker, waits for the
    /// engine and removes what a predecessor with this id left. `None` if
    /// asked to stop first.
    async fn start(settings: WorkerSettings, shutdown: &Shutdown) -> Option<Worker> {
        let mut enabled = Vec::new();
        let mut leftovers = None;
        for kind in &settings.executors {
            match kind {
                ExecutorKind::Docker => {
                    let id = settings.worker_id.clone();
                    let timeout = settings.docker_timeout;
                    let (docker, receiver) = DockerExecutor::connect(timeout, id, shutdown).await?;
                    let docker = docker.with_cache(settings.cache.clone());
                    let removed = docker
                        .sweep(Sweep::ExpiredOrOwnedBy(&settings.worker_id))
                        .await;
                    info!(orphans_removed = removed, "docker executor ready");
                    leftovers = Some(receiver);
                    enabled.push(Executor::Docker(docker));
                }
                ExecutorKind::Process => enabled.push(Executor::Process(ProcessExecutor::new())),
            }
        }
        Some(Worker {
            executors: Executors::new(
                settings.worker_id.clone(),
                enabled,
                settings.confinement.clone(),
            ),
            settings,
            leftovers,
            listings: Listings::default(),
            board: Board::default(),
        })
    }

    /// Removes, in a task of its own, the containers the engine did not answer
    /// for so far (a no-op without any).
    fn remove_leftovers(&mut self) {
        let (Some(docker), Some(leftovers)) = (self.executors.docker(), self.leftovers.as_mut())
        else {
            return;
        };
        let mut pending = Vec::new();
        while let Ok(container) = leftovers.try_recv() {
            pending.push(container);
        }
        if !pending.is_empty() {
            let docker = docker.clone();
            tokio::spawn(async move { docker.remove_leftovers(pending).await });
        }
    }
}

/// One broker session's state, owned by its loop.
struct Session {
    /// Consumes the presence queue (`Topology::workers`), which nothing is
    /// published to: the broker counts this worker, and the stream ends when
    /// the connection does.
    presence: Consumer,
    outbox: Outbox,
    outbox_task: JoinHandle<()>,
    /// Jobs taken for free slots, from the taker.
    taken: mpsc::Receiver<Taken>,
    /// `None` once it has ended.
    taker: Option<JoinHandle<Result<(), BrokerError>>>,
    /// Tells the taker to take, pause (the engine is down) or stop (drain).
    taking: watch::Sender<Taking>,
    /// A permit per slot, held while a test runs (not while its result is
    /// confirmed): with `prefetch_extra` = 0 one is always free for a job taken.
    slots: Arc<Semaphore>,
    running: JoinSet<JobEnd>,
    /// Interrupts this session's jobs on abort, or when the connection is lost.
    interrupt: CancellationToken,
    consuming: bool,
    /// False while the engine is down: no job is taken then.
    engine_ok: bool,
    engine_back_tx: mpsc::Sender<()>,
    engine_back: mpsc::Receiver<()>,
    /// The last sweep, while it runs: one at a time.
    sweeping: Option<JoinHandle<()>>,
    /// Since when no job has been taken or run (`worker.exit_when_idle_secs`).
    idle_since: tokio::time::Instant,
    /// Sends this worker's heartbeats while the session lasts.
    heartbeat: JoinHandle<()>,
}

impl Session {
    async fn open(
        connection: Arc<Connection>,
        worker: &Worker,
        shutdown: &Shutdown,
    ) -> Result<Session, BrokerError> {
        let settings = &worker.settings;
        let channel = connection.create_channel().await?;
        broker::declare(&channel, &settings.topology).await?;
        let (outbox, outbox_task) = Outbox::start(
            broker::confirm_channel(&connection).await?,
            settings.topology.clone(),
        );
        let presence = channel
            .basic_consume(
                settings.topology.workers.as_str().into(),
                settings.worker_id.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let held = settings.concurrency + settings.prefetch_extra;
        let (taken_tx, taken) = mpsc::channel(usize::from(held));
        let (taking, taking_rx) = watch::channel(Taking::On);
        let setup = TakerSetup {
            topology: settings.topology.clone(),
            permits: Arc::new(Semaphore::new(usize::from(held))),
            gets_in_flight: settings.gets_in_flight,
            taking: taking_rx,
            taken: taken_tx,
        };
        let (host, cores) = match worker.executors.docker() {
            Some(docker) => docker.host().await,
            None => None,
        }
        .unwrap_or_else(host::this_machine);
        let heartbeat = heartbeat::start(
            connection.create_channel().await?,
            settings.topology.clone(),
            Identity {
                worker_id: settings.worker_id.clone(),
                slots: u32::from(settings.concurrency),
                executors: settings.executors.clone(),
                host,
                cores,
            },
            worker.board.clone(),
        );
        let taker = Taker::start(connection, setup).await?;
        let (engine_back_tx, engine_back) = mpsc::channel(1);
        Ok(Session {
            presence,
            outbox,
            outbox_task,
            taken,
            taker: Some(taker),
            taking,
            slots: Arc::new(Semaphore::new(usize::from(settings.concurrency))),
            running: JoinSet::new(),
            interrupt: shutdown.abort_token().child_token(),
            consuming: true,
            engine_ok: true,
            engine_back_tx,
            engine_back,
            sweeping: None,
            idle_since: tokio::time::Instant::now(),
            heartbeat,
        })
    }

    async fn run(mut self, worker: &mut Worker, shutdown: &Shutdown) -> SessionEnd {
        let mut sweep_timer = tokio::time::interval(SWEEP_EVERY);
        sweep_timer.tick().await;
        let end = loop {
            if !self.consuming && self.running.is_empty() {
                break SessionEnd::Drained;
            }
            let idle_deadline = self.idle_deadline(worker.settings.exit_when_idle);
            let ended = tokio::select! {
                () = shutdown.draining(), if self.consuming => {
                    self.on_drain();
                    None
                }
                taken = self.taken.recv(), if self.taker.is_some() => match taken {
                    Some(taken) => {
                        self.on_taken(taken, worker);
                        None
                    }
                    None => self.on_taker_end().await,
                },
                presence = self.presence.next() => match presence {
                    Some(Ok(_)) => None,
                    Some(Err(error)) => Some(SessionEnd::Lost(error.into())),
                    None => Some(SessionEnd::Lost(BrokerError::ChannelGone)),
                },
                Some(ended) = self.running.join_next() => self.on_job_end(ended, worker, shutdown),
                Some(()) = self.engine_back.recv() => {
                    info!("docker engine answers again: taking jobs");
                    self.engine_ok = true;
                    if self.consuming {
                        self.taking.send_replace(Taking::On);
                    }
                    worker.remove_leftovers();
                    None
                }
                _ = sweep_timer.tick() => {
                    self.on_sweep_tick(worker);
                    None
                }
                () = idle_for(idle_deadline), if self.consuming => {
                    info!(idle_secs = ?worker.settings.exit_when_idle, "no job for that long: stopping (worker.exit_when_idle_secs)");
                    self.on_drain();
                    None
                }
            };
            if let Some(end) = ended {
                break end;
            }
        };
        self.close(end).await
    }

    fn on_drain(&mut self) {
        self.consuming = false;
        self.taking.send_replace(Taking::Stopped);
        info!(
            running = self.running.len(),
            "no longer taking jobs; waiting for running ones"
        );
    }

    /// When the worker has been idle long enough to exit: `None` while a job
    /// runs, or without `worker.exit_when_idle_secs`.
    fn idle_deadline(&self, limit: Option<Duration>) -> Option<tokio::time::Instant> {
        let limit = limit?;
        self.running.is_empty().then(|| self.idle_since + limit)
    }

    /// Starts a job taken for a free slot in a task of its own.
    fn on_taken(&mut self, taken: Taken, worker: &Worker) {
        let job = JobContext {
            listings: worker.listings.clone(),
            executors: worker.executors.clone(),
            outbox: self.outbox.clone(),
            worker_id: worker.settings.worker_id.clone(),
            interrupt: self.interrupt.clone(),
            slots: self.slots.clone(),
            board: worker.board.clone(),
        };
        self.running.spawn(job.handle(taken));
    }

    /// The taker ended: told to stop (a drain), or its connection failed.
    async fn on_taker_end(&mut self) -> Option<SessionEnd> {
        let taker = self.taker.take()?;
        match taker.await {
            Ok(Ok(())) if !self.consuming => None,
            Ok(Ok(())) => Some(SessionEnd::Lost(BrokerError::ChannelGone)),
            Ok(Err(error)) => Some(SessionEnd::Lost(error)),
            Err(panic) => {
                error!(%panic, "the taker panicked; starting a new session");
                Some(SessionEnd::Lost(BrokerError::ChannelGone))
            }
        }
    }

    /// A job's task ended; `Some` when that ends the session.
    fn on_job_end(
        &mut self,
        ended: Result<JobEnd, tokio::task::JoinError>,
        worker: &mut Worker,
        shutdown: &Shutdown,
    ) -> Option<SessionEnd> {
        if self.running.is_empty() {
            self.idle_since = tokio::time::Instant::now();
        }
        match ended {
            // A job that ends normally shows the engine answers: a good time
            // to remove what an outage left behind (a no-op when nothing was).
            Ok(JobEnd::Done) => worker.remove_leftovers(),
            Ok(JobEnd::EngineDown) if self.engine_ok => {
                self.engine_ok = false;
                if self.consuming {
                    self.taking.send_replace(Taking::Paused);
                }
                warn!("docker engine unreachable: pausing until it answers");
                let docker = worker
                    .executors
                    .docker()
                    .expect("only docker jobs find the engine down")
                    .clone();
                let back = self.engine_back_tx.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    docker.wait_until_up(&shutdown).await;
                    docker.sweep(Sweep::Expired).await;
                    let _ = back.send(()).await;
                });
            }
            Ok(JobEnd::EngineDown) => {}
            Ok(JobEnd::BrokerLost(error)) => return Some(SessionEnd::Lost(error)),
            Ok(JobEnd::Unsettled(error)) => {
                warn!(%error, "a job could not be settled on its channel; the broker requeues it if its queue is still there")
            }
            Err(panic) => error!(%panic, "a job task panicked; its job will be redelivered"),
        }
        None
    }

    /// Sweeps orphans and retires idle kept containers, in a task, unless the
    /// last sweep still runs.
    fn on_sweep_tick(&mut self, worker: &mut Worker) {
        if let Some(docker) = worker.executors.docker() {
            if self.sweeping.as_ref().is_none_or(JoinHandle::is_finished) {
                let docker = docker.clone();
                self.sweeping = Some(tokio::spawn(async move {
                    docker.sweep(Sweep::Expired).await;
                    docker.retire_warm(WARM_IDLE_MAX).await;
                }));
            }
        }
        worker.remove_leftovers();
    }

    async fn close(mut self, end: SessionEnd) -> SessionEnd {
        if let SessionEnd::Lost(_) = end {
            // Jobs still running hold deliveries of a dead channel: the broker has
            // requeued them already, so their results would only be duplicates. Stop
            // them at a safe point, where their containers are removed.
            self.interrupt.cancel();
            while self.running.join_next().await.is_some() {}
        }
        self.heartbeat.abort();
        // A job taken and not started yet goes back when its channel closes.
        self.taking.send_replace(Taking::Stopped);
        drop(self.taken);
        if let Some(taker) = self.taker.take() {
            let _ = taker.await;
        }
        // Every job task has ended, so nothing is left for the outbox to send.
        drop(self.outbox);
        let _ = self.outbox_task.await;
        end
    }
}
