//! The aggregator's service loop: one owner of every open run's state.
//!
//! It consumes the results queue (run announcements and results) and the
//! dead-lettered jobs queue, journals each new fact before acking it, closes rounds
//! when they are complete or their run's deadline passes, publishes retries, and
//! finishes runs: reports on disk and the verdict on the verdicts exchange. On
//! that exchange it also publishes, best-effort, the run's events (finished,
//! round closed, retried) for a producer that follows the run. Finished runs feed
//! the durations history, which it serves to producers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::config::JournalKind;
use testfleet_common::shutdown::Shutdown;
use testfleet_types::codec::{decode, decode_sorting, Refused};
use testfleet_types::limits::{MAX_PARTED_BYTES, PART_BYTES};
use testfleet_types::messages::{
    AttemptStatus, BatchRecord, Batches, Body, HistoryQuery, Job, JobQueue, ResumeAnswer,
    ResumeOutcome, ResumeRequest, RunAnnounce, RunEvent, TestResult,
};
use testfleet_types::now_ms;
use testfleet_types::order;
use testfleet_types::parts::{Bounds, Joined, Joiner};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::dashboard::{self, model::QueueView, Dashboard};
use crate::events;
use crate::finishing::{Finished, Finishing, ReportSettings};
use crate::fleet::Fleet;
use crate::history::HistoryStore;
use crate::history_files::HistoryFiles;
use crate::journal::commit::{committed, Commit};
use crate::journal::stream::{Retention, StreamJournal};
use crate::journal::{FileJournals, JournalError, Journals, Record};
use crate::outcomes::OutcomeStore;
use crate::quarantine;
use crate::run_queues::{self, RunQueues};
use crate::run_state::{Recorded, RoundDecision, RunState};
use crate::settings::AggregatorSettings;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(500);
/// Unacked deliveries the broker may push ahead of processing.
const PREFETCH: u16 = 512;
/// Retry jobs published per confirm round trip.
const PUBLISH_WINDOW: usize = 1000;
/// Finished run ids remembered, to tell late results from unknown runs.
const FINISHED_MEMORY: usize = 10_000;
/// How often a standby aggregator tries for the lead.
const STANDBY_POLL: Duration = Duration::from_secs(2);
/// How long the parts of a message may wait for the rest of it: a real one's
/// parts are published one after the other, so a minute is plenty.
const PARTS_PATIENCE: Duration = Duration::from_secs(60);
/// Deliveries handled before their records are synced and they are acked.
const GROUP_COMMIT_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The journal's error, in the message (not also a `source`).
    #[error("cannot keep the aggregator's state: {0}")]
    State(JournalError),
    #[error("cannot serve the dashboard (aggregator.dashboard): {0}")]
    Dashboard(std::io::Error),
}

impl From<JournalError> for AggregatorError {
    fn from(error: JournalError) -> Self {
        match error {
            JournalError::Broker(error) => AggregatorError::Broker(error),
            other => AggregatorError::State(other),
        }
    }
}

/// A run being followed (its journal is in `Aggregator::journals`).
struct OpenRun {
    state: RunState,
}

/// Deliveries handled since the last commit, and whether each is acked
/// (counted, or nothing to count) or parked (nacked to dead-lettering).
type Settled = Vec<(Delivery, bool)>;

/// A group commit under way, and the deliveries it settles when it ends.
struct InFlight {
    commit: Commit,
    settled: Settled,
}

/// Everything the aggregator knows; owned by the service loop alone.
struct Aggregator {
    settings: AggregatorSettings,
    open: HashMap<Uuid, OpenRun>,
    finished: HashSet<Uuid>,
    finished_order: VecDeque<Uuid>,
    /// The suites' history files, read and written off the loop.
    history: HistoryFiles,
    /// Parts of messages being joined, with their deliveries (unacked).
    joiner: Joiner<Delivery>,
    /// Runs whose reports and verdict are on their way, off the loop.
    finishing: Finishing,
    /// Every open run's journal: what is acked is in it.
    journals: Journals,
    /// The group commit under way: the loop goes on counting meanwhile.
    committing: Option<InFlight>,
    /// Deliveries whose records wait for the next commit.
    uncommitted: Settled,
    /// Runs just learned, whose unclaimed results are still to be taken.
    to_claim: Vec<Uuid>,
    /// The notices of runs' own queues, and the queues of runs that ended.
    run_queues: RunQueues,
    /// The dashboard, when `aggregator.dashboard` asks for one.
    dashboard: Option<Dashboard>,
    /// The workers heard from lately, for the capacity history answers carry.
    fleet: Fleet,
}

/// Runs the aggregator until `shutdown` drains it.
///
/// One aggregator leads a prefix at a time: the holder of the broker's
/// exclusive lock queue (`Topology::aggregator_lock`). Another one started on
/// the same prefix (a redeploy's overlap, `--scale aggregator=2`) stands by,
/// consuming nothing, until the leader's connection goes; then it takes over,
/// resuming open runs from the journals in its state dir.
pub async fn run(settings: AggregatorSettings, shutdown: Shutdown) -> Result<(), AggregatorError> {
    let mut aggregator = Aggregator::restore(settings)?;
    aggregator.dashboard = Dashboard::start(&aggregator.settings)
        .await
        .map_err(AggregatorError::Dashboard)?;
    let mut backoff = broker::SessionBackoff::default();
    let mut brokers = aggregator.settings.brokers.clone();
    // Bounded at start-up (a wrong URL is said at once), patient after.
    let mut patience = Some(aggregator.settings.connect_timeout);
    while !shutdown.is_draining() {
        let connection = tokio::select! {
            connected = broker::connect(&mut brokers, patience) => connected?,
            () = shutdown.draining() => break,
        };
        patience = None;
        let began = Instant::now();
        match aggregator.lead(&connection, &shutdown).await {
            Ok(()) => {
                broker::close(&connection, "aggregator stopped").await;
                break;
            }
            Err(AggregatorError::Broker(error)) if error.is_fatal() => return Err(error.into()),
            Err(error @ AggregatorError::Dashboard(_)) => return Err(error),
            Err(AggregatorError::Broker(error)) => {
                let pause = backoff.after(began.elapsed());
                warn!(%error, retry_in = ?pause, "lost the broker connection, reconnecting");
                broker::close(&connection, "reconnecting").await;
                shutdown.sleep(pause).await;
            }
            // A state dir that takes no writes (a full disk): nothing is
            // acked that is not on disk, so closing the connection gives the
            // broker back every delivery not yet settled, and the lock with
            // them (a standby may do better). The next session reloads the
            // journals as they are on disk, and tries again.
            Err(AggregatorError::State(error)) => {
                let pause = backoff.after(began.elapsed());
                error!(%error, retry_in = ?pause, "cannot keep the aggregator's state: results wait in the broker until the state dir takes writes again");
                broker::close(&connection, "state dir unwritable").await;
                shutdown.sleep(pause).await;
            }
        }
    }
    info!(open_runs = aggregator.open.len(), "aggregator stopped");
    aggregator.history.close().await;
    Ok(())
}

impl Aggregator {
    /// An aggregator with no open run yet: it reads its journals on taking
    /// the lead.
    fn restore(settings: AggregatorSettings) -> Result<Self, AggregatorError> {
        let aggregator = Aggregator {
            open: HashMap::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            history: HistoryFiles::start(
                HistoryStore::new(&settings.state_dir),
                OutcomeStore::new(&settings.state_dir),
            ),
            joiner: joiner(),
            finishing: Finishing::default(),
            journals: journals(&settings),
            committing: None,
            uncommitted: Settled::new(),
            to_claim: Vec::new(),
            run_queues: RunQueues::default(),
            dashboard: None,
            fleet: Fleet::default(),
            settings,
        };
        Ok(aggregator)
    }

    /// Rebuilds every open run from its journal, dropping what is in memory.
    async fn reload_open_runs(&mut self, connection: &Connection) -> Result<(), AggregatorError> {
        self.open.clear();
        for (run_id, records) in self.journals.replay(connection).await? {
            // A journal that cannot be read was logged; its file stays.
            let Ok(records) = records else { continue };
            let Some(state) = replay(records) else {
                warn!(run = %run_id, "ignoring a journal without a run announcement");
                continue;
            };
            let (settled, of) = state.progress();
            info!(run = %run_id, round = state.round(), settled, of, "resumed a run from its journal");
            self.open.insert(run_id, OpenRun { state });
        }
        self.to_claim = self.open.keys().copied().collect();
        Ok(())
    }

    /// Stands by until this aggregator holds the prefix's lock, then resumes
    /// the open runs from the journals (a predecessor sharing the state dir
    /// may have moved them on) and serves until the session ends.
    async fn lead(
        &mut self,
        connection: &Connection,
        shutdown: &Shutdown,
    ) -> Result<(), AggregatorError> {
        let topology = &self.settings.topology;
        if !broker::take_lock(connection, topology, STANDBY_POLL, shutdown).await? {
            return Ok(());
        }
        // Finishings of an earlier session published on its channel, and
        // one that completed may not remove a journal reloaded below.
        self.finishing.abort_all();
        self.abandon_commit().await;
        self.reload_open_runs(connection).await?;
        self.session(connection, shutdown).await
    }

    /// One connection's worth of work; a broker error ends it for a reconnect.
    async fn session(
        &mut self,
        connection: &Connection,
        shutdown: &Shutdown,
    ) -> Result<(), AggregatorError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::from)?;
        broker::declare(&channel, &self.settings.topology).await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(BrokerError::from)?;
        let publish = broker::confirm_channel(connection).await?;
        let mut results = consume(&channel, &self.settings.topology.results).await?;
        let mut dead = consume(&channel, &self.settings.topology.dead_jobs).await?;
        let mut history_queries = consume(&channel, &self.settings.topology.history).await?;
        // Heartbeats tell the fleet's capacity (history answers) and feed
        // the dashboard.
        let mut heartbeats =
            Some(consume_unacked(&channel, &self.settings.topology.heartbeats).await?);
        info!(open_runs = self.open.len(), "aggregator ready");
        let mut claimed = Settled::new();
        self.claim_unclaimed(connection, &channel, &publish, &mut claimed)
            .await?;
        self.uncommitted.extend(claimed);
        self.commit_now(&publish).await?;

        // Parts of a message being joined: their deliveries belong to this
        // session's channel, so a new session starts with none.
        self.joiner = joiner();
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = shutdown.draining() => {
                    self.commit_now(&publish).await?;
                    return self.drain_finishing().await;
                }
                finished = self.finishing.next() => self.on_finished(finished)?,
                (done, settled) = commit_ended(&mut self.committing) => {
                    self.on_committed(done, settled, &publish).await?;
                }
                delivery = results.next() => {
                    let mut settled = Settled::new();
                    let mut next = Some(delivery);
                    // A group commit: what is already delivered joins this sync.
                    while let Some(delivery) = next {
                        let delivery = delivery.ok_or(BrokerError::ChannelGone)?.map_err(BrokerError::from)?;
                        self.on_result_queue(delivery, &publish, &mut settled).await?;
                        next = match settled.len() < GROUP_COMMIT_MAX {
                            true => results.next().now_or_never(),
                            false => None,
                        };
                    }
                    self.claim_unclaimed(connection, &channel, &publish, &mut settled).await?;
                    self.commit_later(settled, &publish)?;
                }
                delivery = dead.next() => {
                    let delivery = delivery.ok_or(BrokerError::ChannelGone)?.map_err(BrokerError::from)?;
                    let mut settled = Settled::new();
                    self.on_dead_job(delivery, &publish, &mut settled).await?;
                    self.commit_later(settled, &publish)?;
                }
                delivery = history_queries.next() => {
                    let delivery = delivery.ok_or(BrokerError::ChannelGone)?.map_err(BrokerError::from)?;
                    self.on_history_query(delivery, &channel, &publish).await?;
                }
                delivery = next_heartbeat(&mut heartbeats) => {
                    self.on_heartbeat(delivery.ok_or(BrokerError::ChannelGone)?.map_err(BrokerError::from)?);
                }
                _ = ticker.tick() => {
                    self.refresh_dashboard(connection).await?;
                    self.close_due_rounds(&publish).await?;
                    self.expire_parts().await?;
                    let open = self.open.values().map(|run| run.state.announce());
                    self.run_queues.tick(&publish, &self.settings.topology, open).await?;
                    self.commit_later(Settled::new(), &publish)?;
                }
            }
        }
    }

    /// Settles `settled` once the records appended so far are durable:
    /// nothing is acked before its fact is on disk. A commit starts now when
    /// none is under way, else when the one under way ends; the loop goes on
    /// counting meanwhile (a group commit, pipelined: while one group syncs,
    /// the next gathers).
    fn commit_later(&mut self, settled: Settled, publish: &Channel) -> Result<(), AggregatorError> {
        self.uncommitted.extend(settled);
        if self.committing.is_none() {
            self.start_commit(publish)?;
        }
        Ok(())
    }

    /// Starts committing every record appended and waiting delivery, if any.
    fn start_commit(&mut self, publish: &Channel) -> Result<(), AggregatorError> {
        if self.uncommitted.is_empty() && !self.journals.has_pending() {
            return Ok(());
        }
        let commit = self.journals.start_commit(publish)?;
        self.committing = Some(InFlight {
            commit,
            settled: std::mem::take(&mut self.uncommitted),
        });
        Ok(())
    }

    /// The commit under way ended: its deliveries are settled, and what
    /// gathered meanwhile is committed next.
    async fn on_committed(
        &mut self,
        done: Result<(), JournalError>,
        settled: Settled,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        done?;
        settle(&settled).await?;
        self.start_commit(publish)
    }

    /// Commits everything now, after the commit under way: for what must be
    /// durable before the loop goes on (a resumed run's jobs, a session's
    /// first claims, stopping).
    async fn commit_now(&mut self, publish: &Channel) -> Result<(), AggregatorError> {
        if let Some(mut in_flight) = self.committing.take() {
            committed(&mut in_flight.commit).await?;
            settle(&in_flight.settled).await?;
        }
        let settled = std::mem::take(&mut self.uncommitted);
        self.journals.commit(publish).await?;
        settle(&settled).await?;
        Ok(())
    }

    /// Drops a lost session's commit once its writes are over (a journal is
    /// not replayed while a write to it goes on); its deliveries went with
    /// their channel, and the broker delivers them again.
    async fn abandon_commit(&mut self) {
        if let Some(mut in_flight) = self.committing.take() {
            let _ = committed(&mut in_flight.commit).await;
        }
        self.uncommitted.clear();
    }

    async fn on_result_queue(
        &mut self,
        delivery: Delivery,
        publish: &Channel,
        settled_deliveries: &mut Settled,
    ) -> Result<(), AggregatorError> {
        let (body, held) = match decode_sorting(&delivery.data) {
            Ok((Body::Part(part), _)) => {
                let joined = self.joiner.add_from(&sender_of(&delivery), part, delivery);
                self.park_evicted_parts(settled_deliveries);
                match joined {
                    Joined::Incomplete => return Ok(()),
                    Joined::Whole { body, held } => (*body, held),
                    Joined::Refused { reason, held } => {
                        error!(%reason, queue = %self.settings.topology.results, "parking a part of a message");
                        settled_deliveries.push((held, false));
                        return Ok(());
                    }
                }
            }
            Ok((body, refused)) => {
                self.park_refused(refused, publish).await?;
                (Ok(body), vec![delivery])
            }
            Err(error) => (Err(error), vec![delivery]),
        };
        let settled = match body {
            Ok(Body::Run(announce)) => self.on_announce(announce).map(|()| true),
            Ok(Body::Result(result)) => self.on_results(vec![result], Vec::new(), publish).await,
            Ok(Body::Results(results)) => self.on_results(results, Vec::new(), publish).await,
            Ok(Body::Batches(Batches { batches, results })) => {
                let unknown_batches = self.on_batches(batches)?;
                self.on_results(results, unknown_batches, publish).await
            }
            Ok(other) => {
                error!(kind = other.kind(), queue = %self.settings.topology.results, "parking a message of the wrong kind");
                Ok(false)
            }
            Err(reason) => {
                error!(%reason, queue = %self.settings.topology.results, "parking an unreadable message");
                Ok(false)
            }
        }?;
        settled_deliveries.extend(held.into_iter().map(|delivery| (delivery, settled)));
        Ok(())
    }

    /// Parks, confirmed before their message is acked, the results and batch
    /// records a worker's message carried out of bounds: the rest of the
    /// message is counted as usual.
    async fn park_refused(
        &self,
        refused: Refused,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        let topology = &self.settings.topology;
        for (item, reason) in refused {
            error!(%reason, kind = item.kind(), queue = %topology.results, "parking a result out of bounds; the rest of its message counts");
            broker::park_body(publish, topology, &topology.results, &item, &reason).await?;
        }
        Ok(())
    }

    /// Parks the parts of messages the joiner gave up to stay within its
    /// bounds (too many half-sent messages, of one sender or in all).
    fn park_evicted_parts(&mut self, settled: &mut Settled) {
        for delivery in self.joiner.take_evicted() {
            error!(queue = %self.settings.topology.results, "parking a part of a message given up for room: too many parted messages were being joined");
            settled.push((delivery, false));
        }
    }

    /// Parks the parts of messages whose other parts never came: their sender
    /// died half-way, and the parts would hold the prefetch for ever.
    async fn expire_parts(&mut self) -> Result<(), AggregatorError> {
        for delivery in self.joiner.expire(PARTS_PATIENCE) {
            error!(queue = %self.settings.topology.results, "parking a part whose message never completed");
            broker::nack(&delivery, false).await?;
        }
        Ok(())
    }

    /// Counts a worker's results (one, or a batch), tells followers, then closes
    /// the rounds they may have completed. Results (and `unknown_batches`,
    /// batch records) of a run this aggregator does not know are parked, not
    /// dropped: their run may be another aggregator's, or its journal lost.
    /// Always `true`: the delivery is settled.
    async fn on_results(
        &mut self,
        results: Vec<TestResult>,
        unknown_batches: Vec<BatchRecord>,
        publish: &Channel,
    ) -> Result<bool, AggregatorError> {
        let mut finished = Vec::with_capacity(results.len());
        let mut runs: Vec<Uuid> = Vec::new();
        let mut unknown = Vec::new();
        for result in results {
            let run_id = result.run_id;
            if !self.knows(&run_id) {
                unknown.push(result);
                continue;
            }
            let event = events::test_finished(&result, now_ms());
            if self.on_result(result)? {
                finished.push(event);
                if !runs.contains(&run_id) {
                    runs.push(run_id);
                }
            }
        }
        self.park_unknown(unknown_batches, unknown, publish).await?;
        self.publish_events(publish, finished).await;
        for run_id in runs {
            self.close_if_due(run_id, publish).await?;
        }
        Ok(true)
    }

    /// Keeps results and batch records of runs this aggregator never heard
    /// of in the parked queue, with the reason, confirmed before their
    /// message is acked.
    async fn park_unknown(
        &self,
        batches: Vec<BatchRecord>,
        results: Vec<TestResult>,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        if batches.is_empty() && results.is_empty() {
            return Ok(());
        }
        let topology = &self.settings.topology;
        let mut by_run: HashMap<Uuid, Batches> = HashMap::new();
        for result in results {
            warn!(run = %result.run_id, test = %result.test_id, attempt = result.attempt, "keeping a result of a run this aggregator does not know, for one that does");
            by_run
                .entry(result.run_id)
                .or_default()
                .results
                .push(result);
        }
        for batch in batches {
            warn!(run = %batch.run_id, batch = %batch.id, "keeping a batch record of a run this aggregator does not know, for one that does");
            by_run.entry(batch.run_id).or_default().batches.push(batch);
        }
        for (run_id, batches) in by_run {
            let queue = topology
                .declare_unclaimed_queue(publish, &run_id.to_string())
                .await
                .map_err(BrokerError::from)?;
            let body = Body::Batches(batches);
            for payload in testfleet_types::parts::split(&body).map_err(BrokerError::from)? {
                broker::publish_encoded(publish, &queue, body.kind(), &[payload]).await?;
            }
        }
        Ok(())
    }

    /// Takes the results kept for runs this aggregator has just learned (an
    /// announcement, or its journals on taking the lead) from their
    /// unclaimed queues and counts them as if they came now: results another
    /// aggregator could not place (its journals were elsewhere) are not lost.
    /// Their deliveries settle with the group being committed.
    async fn claim_unclaimed(
        &mut self,
        connection: &Connection,
        channel: &Channel,
        publish: &Channel,
        settled: &mut Settled,
    ) -> Result<(), AggregatorError> {
        for run_id in std::mem::take(&mut self.to_claim) {
            let queue = self.settings.topology.unclaimed_queue(&run_id.to_string());
            let Some(waiting) = broker::message_count(connection, &queue).await? else {
                continue;
            };
            info!(run = %run_id, waiting, "claiming results kept for this run while no aggregator knew it");
            for _ in 0..waiting {
                let Some(delivery) = broker::get(channel, &queue).await? else {
                    break;
                };
                self.on_result_queue(delivery, publish, settled).await?;
            }
        }
        Ok(())
    }

    /// Keeps the records of the batches a worker ran, for the reports and
    /// the history's batch overhead. Returns the records of runs this
    /// aggregator does not know, to be parked with the results beside them;
    /// a late record of a run already finished is dropped, as its results are.
    fn on_batches(
        &mut self,
        batches: Vec<BatchRecord>,
    ) -> Result<Vec<BatchRecord>, AggregatorError> {
        let mut unknown = Vec::new();
        for batch in batches {
            if !self.knows(&batch.run_id) {
                unknown.push(batch);
                continue;
            }
            let Some(run) = self.open.get_mut(&batch.run_id) else {
                continue;
            };
            let (run_id, record) = (batch.run_id, Record::Batch((&batch).into()));
            if run.state.record_batch(batch) {
                self.journals.append(run_id, &record)?;
            }
        }
        Ok(unknown)
    }

    fn on_announce(&mut self, announce: RunAnnounce) -> Result<(), AggregatorError> {
        let run_id = announce.run_id;
        if self.knows(&run_id) {
            debug!(run = %run_id, "run announced again; already known");
            return Ok(());
        }
        self.journals.create(run_id)?;
        self.journals
            .append(run_id, &Record::Announce(Box::new((&announce).into())))?;
        self.to_claim.push(run_id);
        info!(run = %run_id, suite = %announce.suite, tests = announce.tests.len(), "following a new run");
        self.open.insert(
            run_id,
            OpenRun {
                state: RunState::new(announce),
            },
        );
        Ok(())
    }

    /// Counts a result; true when it was new (so the round may now be complete).
    fn on_result(&mut self, result: TestResult) -> Result<bool, AggregatorError> {
        let Some(run) = self.open.get_mut(&result.run_id) else {
            self.log_orphan_result(&result.run_id, &result.test_id, result.attempt);
            return Ok(false);
        };
        let record = Record::Result((&result).into());
        let (run_id, test, attempt) = (result.run_id, result.test_id.clone(), result.attempt);
        match run.state.record_result(result) {
            Recorded::New => {
                self.journals.append(run_id, &record)?;
                let (settled, of) = run.state.progress();
                debug!(run = %run_id, %test, attempt, settled, of, "result recorded");
                Ok(true)
            }
            Recorded::Duplicate => {
                info!(run = %run_id, %test, attempt, "ignoring a duplicate result");
                Ok(false)
            }
            Recorded::Stale => {
                info!(run = %run_id, %test, attempt, "ignoring a stale result (its round has closed)");
                Ok(false)
            }
        }
    }

    /// Answers a producer's question about a suite's past durations, from a
    /// task (`HistoryFiles::answer`). A message that is no history query is
    /// parked by hand: the history queue's TTL rules out its dead-lettering.
    async fn on_history_query(
        &mut self,
        delivery: Delivery,
        channel: &Channel,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        let queue = &self.settings.topology.history;
        let reason = match decode(&delivery.data) {
            Ok(Body::HistoryQuery(HistoryQuery { suite })) => {
                let capacity = self.fleet.capacity(now_ms());
                self.history
                    .answer(suite, capacity, delivery, channel.clone());
                return Ok(());
            }
            Ok(Body::Resume(request)) => return self.on_resume(request, delivery, publish).await,
            Ok(other) => {
                let reason = format!("expected a history query, got a {} message", other.kind());
                error!(%reason, %queue, "parking a message of the wrong kind");
                reason
            }
            Err(unreadable) => {
                error!(reason = %unreadable, %queue, "parking an unreadable history query");
                unreadable.to_string()
            }
        };
        Ok(broker::park(publish, &self.settings.topology, queue, &delivery, &reason).await?)
    }

    /// Resumes a run for a producer (`--resume`): its deadline moves, the
    /// producer's token joins the verdict's, and the open round's tests
    /// without a result are queued again (their jobs may be gone with a
    /// wiped broker; one still queued runs twice, and its second result is
    /// ignored as a duplicate). Durable before the jobs and the answer go.
    async fn on_resume(
        &mut self,
        request: ResumeRequest,
        delivery: Delivery,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        let run_id = request.run_id;
        let known = self.knows(&run_id);
        let outcome = match self.open.get_mut(&run_id) {
            Some(run) => {
                run.state
                    .resume(request.deadline_ms, Some(request.verdict_token));
                let record = Record::Resumed {
                    deadline_ms: request.deadline_ms,
                    verdict_token: request.verdict_token,
                };
                self.journals.append(run_id, &record)?;
                self.commit_now(publish).await?;
                self.queue_unsettled(run_id, publish).await?
            }
            None if known => ResumeOutcome::Finished,
            None => ResumeOutcome::Unknown,
        };
        info!(run = %run_id, ?outcome, "a producer asked to resume a run");
        let answer = Body::Resumed(ResumeAnswer { run_id, outcome });
        broker::reply(publish, &delivery, &answer).await?;
        broker::ack(&delivery).await?;
        Ok(())
    }

    /// Queues again the open round's tests of `run_id` without a result.
    async fn queue_unsettled(
        &mut self,
        run_id: Uuid,
        publish: &Channel,
    ) -> Result<ResumeOutcome, AggregatorError> {
        let Some(run) = self.open.get(&run_id) else {
            return Ok(ResumeOutcome::Unknown);
        };
        let tests = run.state.unsettled();
        let announce = run.state.announce();
        let round = run.state.round();
        let topology = &self.settings.topology;
        let queue = run_queues::jobs_queue(publish, topology, announce).await?;
        let jobs = retry_jobs(announce, round, &tests);
        broker::publish_all(publish, "", &queue, jobs, PUBLISH_WINDOW).await?;
        run_queues::notice_jobs(publish, topology, announce).await;
        Ok(ResumeOutcome::Resumed {
            tests: announce.tests.len() as u32,
            queued: tests.len() as u32,
            round,
            deadline_ms: announce.deadline_ms,
        })
    }

    /// Only a run that finished gets here: the callers park what belongs to
    /// runs never heard of.
    fn log_orphan_result(&self, run_id: &Uuid, test: &str, attempt: u32) {
        info!(run = %run_id, %test, attempt, "ignoring a late result of a finished run");
    }

    async fn on_dead_job(
        &mut self,
        delivery: Delivery,
        publish: &Channel,
        settled: &mut Settled,
    ) -> Result<(), AggregatorError> {
        let job = match decode(&delivery.data) {
            Ok(Body::Job(job)) => job,
            // A discovery no worker took before its producer stopped waiting:
            // it expired, and nobody wants its answer.
            Ok(Body::Discover(request)) => {
                info!(request = %request.request_id, "dropping a discovery request that expired unanswered");
                settled.push((delivery, true));
                return Ok(());
            }
            Ok(other) => {
                let reason = format!("expected a job message, got a {} message", other.kind());
                error!(%reason, queue = %self.settings.topology.dead_jobs, "parking an unreadable dead-lettered message");
                settled.push((delivery, false));
                return Ok(());
            }
            Err(reason) => {
                error!(%reason, queue = %self.settings.topology.dead_jobs, "parking an unreadable dead-lettered message");
                settled.push((delivery, false));
                return Ok(());
            }
        };
        if !self.knows(&job.run_id) {
            warn!(run = %job.run_id, test = %job.label(), attempt = job.attempt, "parking a dead-lettered job of a run this aggregator does not know");
            settled.push((delivery, false));
            return Ok(());
        }
        if job.tests.len() > 1 {
            self.split_dead_batch(job, publish).await?;
            settled.push((delivery, true));
            return Ok(());
        }
        // Workers reject only unreadable jobs, so a readable job got here by using up
        // its deliveries. RabbitMQ 3.10 puts no delivery count on dead-lettered
        // messages (checked), so the count is the one the limit implies.
        let deliveries = self.settings.topology.delivery_limit.saturating_add(1);
        if self.on_dead_letter(&job, deliveries)? {
            let status = AttemptStatus::DeadLettered { deliveries };
            let event =
                events::test_ended_unrun(job.run_id, &job.label(), job.attempt, status, now_ms());
            self.publish_events(publish, [event]).await;
            self.close_if_due(job.run_id, publish).await?;
        }
        settled.push((delivery, true));
        Ok(())
    }

    /// A batch the broker gave up on: its workers died under it. Which test
    /// killed them, if any, only running them apart can tell, so the batch
    /// goes back as two halves in the same attempt, each with a fresh delivery
    /// budget (workers split a batch delivered again themselves; this covers a
    /// delivery limit of 0). A test that kills workers ends up alone and is
    /// dead-lettered alone.
    async fn split_dead_batch(
        &mut self,
        job: Job,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        warn!(run = %job.run_id, tests = job.tests.len(), attempt = job.attempt, "a batch was dead-lettered: running it again as two halves");
        let middle = job.tests.len() / 2;
        let halves = [&job.tests[..middle], &job.tests[middle..]].map(|tests| {
            Body::Job(Job {
                tests: tests.to_vec(),
                published_at_ms: now_ms(),
                ..job.clone()
            })
        });
        let topology = &self.settings.topology;
        let queue = topology.jobs_queue_of(job.queue, &job.run_id.to_string());
        broker::publish_all(publish, "", &queue, halves, PUBLISH_WINDOW).await?;
        Ok(())
    }

    /// Counts a dead-lettered job of one test.
    fn on_dead_letter(&mut self, job: &Job, deliveries: u32) -> Result<bool, AggregatorError> {
        let test_id = job.ids().next().unwrap_or_default();
        let Some(run) = self.open.get_mut(&job.run_id) else {
            self.log_orphan_result(&job.run_id, test_id, job.attempt);
            return Ok(false);
        };
        let recorded = run
            .state
            .record_dead_letter(test_id, job.attempt, deliveries);
        error!(run = %job.run_id, test = %test_id, attempt = job.attempt, deliveries, ?recorded, "job dead-lettered by the broker");
        if recorded != Recorded::New {
            return Ok(false);
        }
        let record = Record::DeadLetter {
            test_id: test_id.to_owned(),
            attempt: job.attempt,
            deliveries,
        };
        self.journals.append(job.run_id, &record)?;
        Ok(true)
    }

    async fn close_due_rounds(&mut self, publish: &Channel) -> Result<(), AggregatorError> {
        let due: Vec<Uuid> = self.open.keys().copied().collect();
        for run_id in due {
            self.close_if_due(run_id, publish).await?;
        }
        Ok(())
    }

    /// Closes the run's round if it is complete or past its deadline, and acts on
    /// the decision. Retry jobs are published before the closing is journaled: a
    /// crash in between re-publishes them (a duplicate run, deduplicated) rather
    /// than losing them.
    async fn close_if_due(
        &mut self,
        run_id: Uuid,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        let now = now_ms();
        let Some(run) = self.open.get_mut(&run_id) else {
            return Ok(());
        };
        if run.state.is_finished() {
            self.finish(run_id, publish);
            return Ok(());
        }
        if !(run.state.round_complete() || run.state.deadline_passed(now)) {
            return Ok(());
        }
        let round = run.state.round();
        let decision = run.state.close_round(now);
        // Before the retry jobs: a follower learns of a retry before any worker
        // can announce its start.
        let followers_news: Vec<RunEvent> = events::round_closed(
            run_id,
            round,
            run.state.round_statuses(round),
            &decision,
            now,
        )
        .into_iter()
        .collect();
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.observe(&followers_news);
        }
        publish_events(publish, &self.settings.topology.verdicts, followers_news).await;
        if let RoundDecision::Retry { attempt, tests } = &decision {
            // No priorities on quorum queues: retries cannot overtake jobs already
            // queued. None of this run's are (the round is complete, or it is the
            // deadline and the run ends), so ordering is all there is left to do:
            // longest first, by what each test took in this run.
            let tests = order::longest_first(tests.clone(), |t| run.state.last_duration_ms(t));
            let announce = run.state.announce();
            let topology = &self.settings.topology;
            let queue = run_queues::jobs_queue(publish, topology, announce).await?;
            let jobs = retry_jobs(announce, *attempt, &tests);
            broker::publish_all(publish, "", &queue, jobs, PUBLISH_WINDOW).await?;
            run_queues::notice_jobs(publish, topology, announce).await;
            info!(run = %run_id, round = attempt, tests = tests.len(), "round closed: re-running failed and missing tests");
        }
        self.journals
            .append(run_id, &Record::RoundClosed { at_ms: now })?;
        if let RoundDecision::Finish(_) = decision {
            self.finish(run_id, publish);
        }
        Ok(())
    }

    /// Waits, when stopping, for the runs being finished: their verdicts.
    async fn drain_finishing(&mut self) -> Result<(), AggregatorError> {
        while !self.finishing.is_empty() {
            let finished = self.finishing.next().await;
            self.on_finished(finished)?;
        }
        Ok(())
    }

    /// Hands a finished run over to be finished off the loop (reports, then
    /// the verdict; `finishing`). Its state is taken apart into its report: a
    /// run of 400,000 tests would otherwise hold both. Its journal goes with
    /// it, and is removed only once the verdict is confirmed.
    fn finish(&mut self, run_id: Uuid, publish: &Channel) {
        let Some(OpenRun { state }) = self.open.remove(&run_id) else {
            return;
        };
        let tokens = state.verdict_tokens();
        let announce = state.announce();
        self.run_queues.ended(announce);
        let quarantine = quarantine::Rules {
            listed: announce.quarantine.clone(),
            auto_percent: announce.auto_quarantine_percent,
        };
        let report = state.into_report(now_ms());
        let settings = self.report_settings();
        self.finishing
            .start(report, tokens, quarantine, &settings, publish);
    }

    /// A run's finishing ended: with its verdict out, its durations go to
    /// the history and its journal goes. A verdict that did not go out means
    /// the session is lost: the run is reloaded from its journal and finished
    /// again.
    fn on_finished(&mut self, finished: Finished) -> Result<(), AggregatorError> {
        let Finished {
            run_id,
            suite,
            samples,
            outcomes,
            dashboard,
            published,
        } = finished;
        published?;
        if let Some(shown) = &mut self.dashboard {
            shown.finished(dashboard);
        }
        self.history.record(run_id, suite, samples, outcomes);
        if let Err(error) = self.journals.remove(run_id) {
            warn!(run = %run_id, %error, "could not remove a finished run's journal");
        }
        self.remember_finished(run_id);
        Ok(())
    }

    fn report_settings(&self) -> ReportSettings {
        ReportSettings {
            report_dir: self.settings.report_dir.clone(),
            triage_rules: self.settings.triage_rules.clone(),
            verdicts: self.settings.topology.verdicts.clone(),
            outcomes: OutcomeStore::new(&self.settings.state_dir),
        }
    }

    /// Whether the run is open, being finished, or finished lately.
    fn knows(&self, run_id: &Uuid) -> bool {
        self.open.contains_key(run_id)
            || self.finishing.contains(run_id)
            || self.finished.contains(run_id)
    }

    async fn publish_events(
        &mut self,
        publish: &Channel,
        events: impl IntoIterator<Item = RunEvent>,
    ) {
        let events: Vec<RunEvent> = events.into_iter().collect();
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.observe(&events);
        }
        publish_events(publish, &self.settings.topology.verdicts, events).await;
    }

    /// A worker's heartbeat, for the fleet's capacity and the dashboard;
    /// one that does not read is dropped (heartbeats are information, never
    /// state).
    fn on_heartbeat(&mut self, delivery: Delivery) {
        match decode(&delivery.data) {
            Ok(Body::Heartbeat(heartbeat)) => {
                let now = now_ms();
                self.fleet.heartbeat(&heartbeat, now);
                if let Some(dashboard) = &mut self.dashboard {
                    dashboard.heartbeat(heartbeat, now);
                }
            }
            Ok(other) => debug!(
                kind = other.kind(),
                "ignoring a message of the wrong kind among heartbeats"
            ),
            Err(error) => debug!(%error, "ignoring an unreadable heartbeat"),
        }
    }

    /// Gives the dashboard the open runs' progress, and every few seconds
    /// the jobs queues' depths from the broker.
    async fn refresh_dashboard(&mut self, connection: &Connection) -> Result<(), AggregatorError> {
        let Some(dashboard) = &mut self.dashboard else {
            return Ok(());
        };
        if dashboard.depths_due() {
            let topology = &self.settings.topology;
            let own = self
                .open
                .values()
                .map(|run| run.state.announce())
                .filter(|announce| announce.queue == JobQueue::Own)
                .take(dashboard::MAX_QUEUES_ASKED)
                .map(|announce| topology.run_jobs_queue(&announce.run_id.to_string()));
            let mut queues = Vec::new();
            for queue in std::iter::once(topology.jobs.clone()).chain(own) {
                let waiting = broker::message_count(connection, &queue).await?;
                queues.push(QueueView { queue, waiting });
            }
            dashboard.queues(queues);
        }
        let runs = self
            .open
            .values()
            .map(|run| run.state.progress_view())
            .collect();
        dashboard.publish(runs, now_ms());
        Ok(())
    }

    fn remember_finished(&mut self, run_id: Uuid) {
        self.finished.insert(run_id);
        self.finished_order.push_back(run_id);
        if self.finished_order.len() > FINISHED_MEMORY {
            if let Some(oldest) = self.finished_order.pop_front() {
                self.finished.remove(&oldest);
            }
        }
    }
}

/// Who sent a delivery, as the broker vouches for it: the user id it
/// checked against the publisher's login, if the publisher set one.
fn sender_of(delivery: &Delivery) -> String {
    delivery
        .properties
        .user_id()
        .as_ref()
        .map(|user| user.to_string())
        .unwrap_or_default()
}

/// How much the joiner may hold: a quarter of the prefetch in parts, so
/// that results always find room, and one parted message's bytes.
fn joiner() -> Joiner<Delivery> {
    Joiner::with_bounds(Bounds {
        messages: 16,
        per_sender: 4,
        parts: usize::from(PREFETCH) / 4,
        bytes: MAX_PARTED_BYTES + PART_BYTES,
    })
}

/// Where the settings say open runs' journals are kept.
fn journals(settings: &AggregatorSettings) -> Journals {
    match settings.journal {
        JournalKind::File => Journals::Files(FileJournals::new(&settings.state_dir)),
        JournalKind::Broker => Journals::Stream(StreamJournal::new(
            settings.topology.journal.clone(),
            Retention {
                max_bytes: settings.journal_max_bytes,
                max_age_days: 32,
            },
        )),
    }
}

/// Rebuilds a run's state from its journal, each record turned back into
/// the message it was journalled from.
fn replay(records: Vec<Record>) -> Option<RunState> {
    let mut records = records.into_iter();
    let Some(Record::Announce(announce)) = records.next() else {
        return None;
    };
    let mut state = RunState::new((*announce).into());
    for record in records {
        match record {
            Record::Announce(_) => {}
            Record::Result(result) => {
                state.record_result(result.into());
            }
            Record::DeadLetter {
                test_id,
                attempt,
                deliveries,
            } => {
                state.record_dead_letter(&test_id, attempt, deliveries);
            }
            Record::RoundClosed { at_ms } => {
                state.close_round(at_ms);
            }
            Record::Batch(batch) => {
                state.record_batch(batch.into());
            }
            Record::Resumed {
                deadline_ms,
                verdict_token,
            } => state.resume(deadline_ms, Some(verdict_token)),
        }
    }
    Some(state)
}

/// Publishes run events for followers, best-effort and without confirms, on
/// the channel the verdict goes out on: a follower gets them in order, and the
/// verdict after them. A run's events go out as one message.
async fn publish_events(
    publish: &Channel,
    exchange: &str,
    events: impl IntoIterator<Item = RunEvent>,
) {
    broker::publish_run_events(publish, exchange, events.into_iter().collect()).await;
}

/// A retry round's jobs: one test each. Retries are few (the threshold caps
/// them at a tenth of the run by default), and alone a test meets no state an
/// earlier test of its batch left behind: one that failed only beside
/// another passes alone, and shows as flaky with both attempts' batches.
fn retry_jobs(announce: &RunAnnounce, attempt: u32, tests: &[String]) -> Vec<Body> {
    tests
        .iter()
        .map(|test_id| {
            let mut job = Job::single(
                announce.run_id,
                test_id.clone(),
                attempt,
                announce.deadline_ms,
                announce.spec.clone(),
            );
            job.published_at_ms = now_ms();
            job.queue = announce.queue;
            Body::Job(job)
        })
        .collect()
}

/// Consumes `queue` without acks: for heartbeats, which nobody needs twice.
async fn consume_unacked(channel: &Channel, queue: &str) -> Result<lapin::Consumer, BrokerError> {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    Ok(channel
        .basic_consume(
            queue.into(),
            format!("aggregator-{queue}").as_str().into(),
            options,
            FieldTable::default(),
        )
        .await?)
}

/// The next heartbeat, or never without a consumer of them.
async fn next_heartbeat(
    heartbeats: &mut Option<lapin::Consumer>,
) -> Option<lapin::Result<Delivery>> {
    match heartbeats {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}

async fn consume(channel: &Channel, queue: &str) -> Result<lapin::Consumer, BrokerError> {
    Ok(channel
        .basic_consume(
            queue.into(),
            format!("aggregator-{queue}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// Acks or parks deliveries whose facts are durable.
async fn settle(settled: &Settled) -> Result<(), BrokerError> {
    if !settled.is_empty() {
        testfleet_common::faults::exit_if_asked("journal-commit");
    }
    for (delivery, ack) in settled {
        match ack {
            true => broker::ack(delivery).await?,
            false => broker::nack(delivery, false).await?,
        }
    }
    Ok(())
}

/// The end of the commit under way, with the deliveries it settles;
/// pending for ever when none is.
async fn commit_ended(committing: &mut Option<InFlight>) -> (Result<(), JournalError>, Settled) {
    let Some(in_flight) = committing else {
        return std::future::pending().await;
    };
    let done = committed(&mut in_flight.commit).await;
    let settled = committing.take().map(|i| i.settled).unwrap_or_default();
    (done, settled)
}
