//! Which job a free slot takes next: the worker's taker, one task per broker
//! session. A free slot takes one job (`basic.get`) from the source whose
//! turn it is (`turns.rs`): each open run of its own queue, and the shared
//! queue (runs of `run.queue = "shared"`, discovery requests). So a run
//! submitted beside a big one gets every other free slot at once, rather
//! than waiting behind the big one's queued jobs, and no job waits in a
//! worker that cannot run it yet: a job is taken only for a free slot.
//!
//! Which runs have queues of their own the taker learns from the queue
//! notices on the runs exchange (`Body::Queues`), read from a queue of this
//! worker's own: a producer's for its new run, the aggregator's for retries
//! and, every two seconds, its whole list of open runs. A run is followed
//! until its deadline, or until a whole list leaves it out, a grace period
//! after it was last named (the aggregator may not have learned it yet).
//!
//! Each run's queue is taken from on a channel of its own: the aggregator
//! deletes a run's queue at its end, and a get that finds it gone closes
//! that channel, which holds only that run's jobs. A channel is closed once
//! its run is no longer followed and none of its jobs is still running.
//! When every source is empty the taker waits, a little longer each time up
//! to [`IDLE_MAX`], or until a notice says a run has jobs.
//!
//! Free slots take at once: up to `worker.gets_in_flight` gets are under way
//! together, each on a channel of its own where it can (a source keeps as
//! many as its gets under way needed, within [`MAX_EXTRA_CHANNELS`] in
//! all), because the broker answers one channel's gets one after another,
//! each dequeue committed to the quorum queue's log before its answer.
//! After finding every source empty, one get looks at a time until one
//! finds a job.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::topology::Topology;
use testfleet_types::codec::decode;
use testfleet_types::messages::{Body, QueueNotice};
use testfleet_types::now_ms;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::follows::Follows;
use crate::turns::{Offer, Turns};

/// The longest wait between two looks at empty sources.
pub const IDLE_MAX: Duration = Duration::from_millis(500);
/// The first wait after finding every source empty; it doubles up to `IDLE_MAX`.
const IDLE_MIN: Duration = Duration::from_millis(10);
/// The most channels all sources may hold beyond one each: with one per
/// followed run (`follows::MAX_FOLLOWED`) and the worker's few others, a
/// connection stays under RabbitMQ's 2,047 channels.
const MAX_EXTRA_CHANNELS: usize = 512;
/// How long a run named by a notice is followed without an aggregator's
/// whole list naming it.
const GRACE: Duration = Duration::from_secs(60);

/// A job taken for a free slot.
pub struct Taken {
    pub delivery: Delivery,
    /// Held until the job's test has run: taking is bounded by these, and
    /// the next job is taken while this one's result is being confirmed.
    pub permit: OwnedSemaphorePermit,
    /// Held while the job runs, so that its channel stays open until then.
    pub lease: Lease,
}

/// Keeps a source's channel open while a job taken from it is unsettled.
pub struct Lease(#[allow(dead_code)] Arc<()>);

/// Whether the taker may take: the session pauses it while the engine is
/// down, and stops it to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    On,
    Paused,
    Stopped,
}

/// A source is the shared queue or a run's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Shared,
    Run(Uuid),
}

struct Source {
    queue: String,
    weight: u32,
    /// The run's deadline (`u64::MAX` for the shared queue).
    deadline_ms: u64,
    /// Its channels, each with its gets under way. A channel stays open
    /// while a job it delivered runs.
    lanes: Vec<Lane>,
    /// Channels being opened for a get.
    opening: usize,
    /// Held by each job taken from it and each get under way on it.
    lease: Arc<()>,
}

/// A channel of a source, and how many gets are under way on it.
struct Lane {
    channel: Channel,
    gets: usize,
}

impl Source {
    fn new(queue: String, weight: u32, deadline_ms: u64) -> Self {
        Source {
            queue,
            weight,
            deadline_ms,
            lanes: Vec::new(),
            opening: 0,
            lease: Arc::new(()),
        }
    }

    fn jobs_running(&self) -> bool {
        Arc::strong_count(&self.lease) > 1
    }

    /// Its channels, open or being opened.
    fn channels(&self) -> usize {
        self.lanes.len() + self.opening
    }

    /// A get of one job from this source: on a channel with no get under
    /// way, else on a new one if `may_open`, else after the fewest gets on
    /// one of its channels (the broker answers them in turn).
    fn get(&mut self, connection: &Arc<Connection>, may_open: bool) -> BoxFuture<'static, Got> {
        self.lanes.retain(|lane| lane.channel.status().connected());
        let (queue, lease) = (self.queue.clone(), Lease(self.lease.clone()));
        let free = self.lanes.iter_mut().min_by_key(|lane| lane.gets);
        match free {
            Some(lane) if lane.gets == 0 || !may_open => {
                lane.gets += 1;
                let channel = lane.channel.clone();
                async move {
                    let answer = broker::get(&channel, &queue).await;
                    let lane = LaneOf::Existing(channel.id());
                    Got {
                        lane,
                        answer,
                        lease,
                    }
                }
                .boxed()
            }
            _ => {
                self.opening += 1;
                let connection = connection.clone();
                async move {
                    let (lane, answer) = match connection.create_channel().await {
                        Ok(channel) => {
                            let answer = broker::get(&channel, &queue).await;
                            (LaneOf::Opened(Some(channel)), answer)
                        }
                        Err(error) => (LaneOf::Opened(None), Err(error.into())),
                    };
                    Got {
                        lane,
                        answer,
                        lease,
                    }
                }
                .boxed()
            }
        }
    }

    /// A get on `lane` has answered.
    fn got(&mut self, lane: LaneOf) {
        match lane {
            LaneOf::Existing(id) => {
                if let Some(lane) = self.lanes.iter_mut().find(|l| l.channel.id() == id) {
                    lane.gets = lane.gets.saturating_sub(1);
                }
            }
            LaneOf::Opened(channel) => {
                self.opening = self.opening.saturating_sub(1);
                if let Some(channel) = channel {
                    self.lanes.push(Lane { channel, gets: 0 });
                }
            }
        }
    }
}

/// The channel a get was asked on: one of its source's, or one opened
/// for it (none if that failed).
enum LaneOf {
    Existing(u16),
    Opened(Option<Channel>),
}

/// A get's answer, with the channel it was asked on.
struct Got {
    lane: LaneOf,
    answer: Result<Option<Delivery>, BrokerError>,
    lease: Lease,
}

/// A turn under way: the permit of the free slot it is for, and the
/// sources still offered it.
struct Turn {
    permit: OwnedSemaphorePermit,
    offer: Offer<Key>,
    key: Key,
}

/// What the taker needs to start.
pub struct TakerSetup {
    pub topology: Topology,
    /// A permit per job the worker may hold (its slots, plus
    /// `worker.prefetch_extra`).
    pub permits: Arc<Semaphore>,
    /// How many gets may be under way at once (`worker.gets_in_flight`).
    pub gets_in_flight: usize,
    pub taking: watch::Receiver<Taking>,
    pub taken: mpsc::Sender<Taken>,
}

/// The taker of one session.
pub struct Taker {
    connection: Arc<Connection>,
    setup: TakerSetup,
    sources: HashMap<Key, Source>,
    /// Which runs' sources are followed, decided from the notices.
    follows: Follows,
    /// Sources no longer followed whose jobs still run: closed after them.
    retired: Vec<Source>,
    turns: Turns<Key>,
    /// Gets under way, each with its turn.
    in_flight: FuturesUnordered<BoxFuture<'static, (Turn, Got)>>,
    /// The wait after every source was last found empty; zero once a get
    /// finds a job.
    idle: Duration,
    /// No get starts before this, after every source was found empty.
    idle_until: tokio::time::Instant,
}

impl Taker {
    /// Declares this worker's own queue of notices, bound to the runs exchange,
    /// and starts taking in a task of its own, which ends when the session
    /// stops it or its connection fails.
    pub async fn start(
        connection: Arc<Connection>,
        setup: TakerSetup,
    ) -> Result<tokio::task::JoinHandle<Result<(), BrokerError>>, BrokerError> {
        let notices = notices(&connection, &setup.topology).await?;
        let mut sources = HashMap::new();
        let shared = Source::new(setup.topology.jobs.clone(), 1, u64::MAX);
        sources.insert(Key::Shared, shared);
        let taker = Taker {
            connection,
            setup,
            sources,
            follows: Follows::default(),
            retired: Vec::new(),
            turns: Turns::default(),
            in_flight: FuturesUnordered::new(),
            idle: Duration::ZERO,
            idle_until: tokio::time::Instant::now(),
        };
        Ok(tokio::spawn(taker.run(notices)))
    }

    async fn run(mut self, mut notices: Consumer) -> Result<(), BrokerError> {
        let result = self.take_while_on(&mut notices).await;
        self.close_all().await;
        result
    }

    async fn take_while_on(&mut self, notices: &mut Consumer) -> Result<(), BrokerError> {
        let mut taking = self.setup.taking.clone();
        loop {
            let state = *taking.borrow_and_update();
            if state == Taking::Stopped && self.in_flight.is_empty() {
                return Ok(());
            }
            let permits = self.setup.permits.clone();
            let may_start = state == Taking::On && self.in_flight.len() < self.gets_allowed();
            let idle_until = self.idle_until;
            let resting = idle_until > tokio::time::Instant::now();
            tokio::select! {
                changed = taking.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                notice = notices.next() => self.on_notice(notice)?,
                Some((turn, got)) = self.in_flight.next() => {
                    if !self.on_got(turn, got).await? {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(idle_until), if may_start && resting => {}
                permit = permits.acquire_owned(), if may_start && !resting => {
                    let permit = permit.expect("the semaphore is never closed");
                    self.forget_ended().await;
                    self.start_turn(permit);
                }
            }
        }
    }

    /// How many gets may be under way: one while the sources were last
    /// found empty, so that an idle worker looks once, not once per slot.
    fn gets_allowed(&self) -> usize {
        match self.idle.is_zero() {
            true => self.setup.gets_in_flight,
            false => 1,
        }
    }

    /// Starts a turn for a free slot: a get from the source whose turn it is.
    fn start_turn(&mut self, permit: OwnedSemaphorePermit) {
        let candidates: Vec<(Key, u32)> = self
            .sources
            .iter()
            .map(|(key, source)| (*key, source.weight))
            .collect();
        let offer = self.turns.offer(&candidates);
        self.go_on(permit, offer);
    }

    /// Asks the next source offered the turn, or, when every one refused,
    /// gives the permit back and waits a little before looking again.
    fn go_on(&mut self, permit: OwnedSemaphorePermit, mut offer: Offer<Key>) {
        while let Some(key) = self.turns.next(&mut offer) {
            let Some(source) = self.sources.get_mut(&key) else {
                self.turns.refused(&mut offer, key);
                continue;
            };
            let may_open = source.channels() < self.setup.gets_in_flight
                && extra_channels(self.sources.values().chain(&self.retired)) < MAX_EXTRA_CHANNELS;
            let source = self.sources.get_mut(&key).expect("found above");
            let get = source.get(&self.connection, may_open);
            let turn = Turn { permit, offer, key };
            self.in_flight.push(get.map(move |got| (turn, got)).boxed());
            return;
        }
        drop(permit);
        self.idle = (self.idle * 2).clamp(IDLE_MIN, IDLE_MAX);
        self.idle_until = tokio::time::Instant::now() + self.idle;
    }

    /// A get answered: a job goes to the session, an empty or gone source
    /// passes the turn on. `false` when the session no longer takes jobs.
    async fn on_got(&mut self, turn: Turn, got: Got) -> Result<bool, BrokerError> {
        let Turn {
            permit,
            mut offer,
            key,
        } = turn;
        let Got {
            lane,
            answer,
            lease,
        } = got;
        if let Some(source) = self.source_mut(key) {
            source.got(lane);
        }
        match answer {
            Ok(Some(delivery)) => {
                self.idle = Duration::ZERO;
                let taken = Taken {
                    delivery,
                    permit,
                    lease,
                };
                return Ok(self.setup.taken.send(taken).await.is_ok());
            }
            Ok(None) => {}
            Err(error) if key != Key::Shared && error.is_not_found() => {
                if self.sources.contains_key(&key) {
                    info!(queue = %self.sources[&key].queue, "a run's queue is gone: its run has ended");
                    self.retire(key);
                }
            }
            Err(error) => return Err(error),
        }
        self.turns.refused(&mut offer, key);
        if *self.setup.taking.borrow() == Taking::On {
            self.go_on(permit, offer);
        }
        Ok(true)
    }

    /// A source, followed or retired (a get may answer after its run ended).
    fn source_mut(&mut self, key: Key) -> Option<&mut Source> {
        if self.sources.contains_key(&key) {
            return self.sources.get_mut(&key);
        }
        let queue = self.queue_of(key);
        self.retired.iter_mut().find(|source| source.queue == queue)
    }

    fn queue_of(&self, key: Key) -> String {
        match key {
            Key::Shared => self.setup.topology.jobs.clone(),
            Key::Run(run) => self.setup.topology.run_jobs_queue(&run.to_string()),
        }
    }

    fn on_notice(&mut self, notice: Option<lapin::Result<Delivery>>) -> Result<(), BrokerError> {
        let delivery = notice.ok_or(BrokerError::ChannelGone)??;
        match decode(&delivery.data) {
            Ok(Body::Queues(notice)) => self.follow(notice),
            Ok(other) => warn!(
                kind = other.kind(),
                "ignoring a message of the wrong kind among queue notices"
            ),
            Err(error) => warn!(%error, "ignoring an unreadable queue notice"),
        }
        Ok(())
    }

    /// Follows the runs a notice names; a whole list also ends the runs it
    /// leaves out, once their grace is over.
    fn follow(&mut self, notice: QueueNotice) {
        let named: Vec<Uuid> = notice.runs.iter().map(|r| r.run_id).collect();
        let grace = GRACE.as_millis() as u64;
        let change = self.follows.notice(&named, notice.whole, now_ms(), grace);
        for run in change.dropped {
            self.retire(Key::Run(run));
        }
        let added: HashSet<Uuid> = change.added.into_iter().collect();
        for run in &notice.runs {
            let key = Key::Run(run.run_id);
            if let Some(source) = self.sources.get_mut(&key) {
                source.weight = run.weight;
                source.deadline_ms = run.deadline_ms;
            } else if added.contains(&run.run_id) {
                debug!(run = %run.run_id, weight = run.weight, "taking jobs from a run's own queue");
                let queue = self.queue_of(key);
                self.sources
                    .insert(key, Source::new(queue, run.weight, run.deadline_ms));
            } else {
                warn!(run = %run.run_id, followed = self.follows.len(), "following as many runs as a worker may; not this one yet");
            }
        }
        // A notice of runs with jobs: look at once.
        self.idle = Duration::ZERO;
        self.idle_until = tokio::time::Instant::now();
    }

    /// Stops taking from runs past their deadline, and closes the channels
    /// of runs no longer followed whose jobs have all ended.
    async fn forget_ended(&mut self) {
        let now = now_ms();
        let past: Vec<Key> = self
            .sources
            .iter()
            .filter(|(_, source)| source.deadline_ms < now)
            .map(|(key, _)| *key)
            .collect();
        for key in past {
            self.retire(key);
        }
        let (done, running): (Vec<Source>, Vec<Source>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|source| !source.jobs_running());
        self.retired = running;
        for source in done {
            close(source).await;
        }
    }

    fn retire(&mut self, key: Key) {
        if let Key::Run(run) = key {
            self.follows.forget(&run);
        }
        if let Some(source) = self.sources.remove(&key) {
            self.retired.push(source);
        }
        self.turns
            .retain(|followed| self.sources.contains_key(followed));
    }

    /// Closes every channel, the session being over; jobs still running on
    /// them have been interrupted or settled by then.
    async fn close_all(&mut self) {
        let sources: Vec<Source> = self.sources.drain().map(|(_, source)| source).collect();
        for source in sources.into_iter().chain(std::mem::take(&mut self.retired)) {
            close(source).await;
        }
    }
}

async fn close(source: Source) {
    for lane in source.lanes {
        if lane.channel.status().connected() {
            let _ = lane
                .channel
                .close(200, "run no longer followed".into())
                .await;
        }
    }
}

/// The channels sources hold beyond one each.
fn extra_channels<'a>(sources: impl Iterator<Item = &'a Source>) -> usize {
    sources
        .map(|source| source.channels().saturating_sub(1))
        .sum()
}

/// This worker's own queue of notices: exclusive to its connection, so it
/// goes with it, and bound to the runs exchange.
async fn notices(connection: &Connection, topology: &Topology) -> Result<Consumer, BrokerError> {
    let channel = connection.create_channel().await?;
    let queue = format!("{}.{}", topology.runs, Uuid::new_v4());
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await?;
    topology.bind_notices(&channel, &queue).await?;
    let consume = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "notices".into(),
            consume,
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}
