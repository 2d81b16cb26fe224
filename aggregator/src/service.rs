//! The aggregator's service loop: one owner of every open run's state.
//!
//! It consumes the results queue (run announcements and results) and the
//! dead-lettered jobs queue, journals each new fact before acking it, closes rounds
//! when they are complete or their run's deadline passes, publishes retries, and
//! finishes runs: reports on disk and the verdict on the verdicts exchange. On
//! that exchange it also publishes, best-effort, the run's events (finished,
//! round closed, retried) for a producer that follows the run. Finished runs feed
//! the durations history, which it serves to producers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::stream::SelectAll;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::config::JournalKind;
use testfleet_common::shutdown::Shutdown;
use testfleet_types::codec::{decode, decode_sorting, Refused};
use testfleet_types::limits::{MAX_PARTED_BYTES, PART_BYTES};
use testfleet_types::messages::{
    Batches, Body, HistoryQuery, Job, JobQueue, ResumeAnswer, ResumeRequest, RunEvent,
};
use testfleet_types::now_ms;
use testfleet_types::parts::{Bounds, Joined, Joiner};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::dashboard::{self, model::QueueView, Dashboard};
use crate::finishing::{Finished, Finishing, ReportSettings};
use crate::fleet::Fleet;
use crate::history::HistoryStore;
use crate::history_files::HistoryFiles;
use crate::journal::commit::{committed, Commit};
use crate::journal::stream::{Retention, StreamJournal};
use crate::journal::{FileJournals, JournalError, Journals};
use crate::outcomes::OutcomeStore;
use crate::pipeline::{self, Pipeline};
use crate::run_queues::{self, RunQueues};
use crate::runs::{Effects, Publish, Runs};
use crate::settings::AggregatorSettings;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(500);
/// Unacked deliveries the broker may push ahead of processing.
const PREFETCH: u16 = 512;
/// Retry jobs published per confirm round trip.
const PUBLISH_WINDOW: usize = 1000;
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

/// Deliveries handled since the last commit, and whether each is acked
/// (counted, or nothing to count) or parked (nacked to dead-lettering).
type Settled = Vec<(Delivery, bool)>;

/// Everything the aggregator knows; owned by the service loop alone.
struct Aggregator {
    settings: AggregatorSettings,
    /// Every run it knows, and the rules: the pure core.
    runs: Runs,
    /// The suites' history files, read and written off the loop.
    history: HistoryFiles,
    /// Parts of messages being joined, with their deliveries (unacked).
    joiner: Joiner<Delivery>,
    /// Runs whose reports and verdict are on their way, off the loop.
    finishing: Finishing,
    /// Every open run's journal: what is acked is in it.
    journals: Journals,
    /// The group commit under way: the loop goes on counting meanwhile.
    committing: Option<Commit>,
    /// What each commit settles when it ends: deliveries, runs to finish.
    pipeline: Pipeline<Delivery>,
    /// Runs just learned, whose unclaimed results are still to be taken.
    to_claim: Vec<Uuid>,
    /// Runs whose unclaimed queues are being consumed, with the consumer's tag.
    claiming: HashMap<Uuid, String>,
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
                brokers.move_on();
                shutdown.sleep(pause).await;
            }
            // A journal that takes no writes or cannot be read (a full disk,
            // a stream whose copy on this node stalls): nothing is acked
            // that is not durable, so closing the connection gives the
            // broker back every delivery not yet settled, and the lock with
            // them (a standby may do better). The next session, on the next
            // node, reloads the journals as they are, and tries again.
            Err(AggregatorError::State(error)) => {
                let pause = backoff.after(began.elapsed());
                error!(%error, retry_in = ?pause, "cannot keep the aggregator's state (its journal): results wait in the broker until it takes writes again");
                broker::close(&connection, "journal unwritable").await;
                brokers.move_on();
                shutdown.sleep(pause).await;
            }
        }
    }
    info!(
        open_runs = aggregator.runs.open_count(),
        "aggregator stopped"
    );
    aggregator.history.close().await;
    Ok(())
}

impl Aggregator {
    /// An aggregator with no open run yet: it reads its journals on taking
    /// the lead.
    fn restore(settings: AggregatorSettings) -> Result<Self, AggregatorError> {
        let aggregator = Aggregator {
            runs: Runs::new(settings.topology.delivery_limit),
            history: HistoryFiles::start(
                HistoryStore::new(&settings.state_dir),
                OutcomeStore::new(&settings.state_dir),
            ),
            joiner: joiner(),
            finishing: Finishing::default(),
            journals: journals(&settings),
            committing: None,
            pipeline: Pipeline::default(),
            to_claim: Vec::new(),
            claiming: HashMap::new(),
            run_queues: RunQueues::default(),
            dashboard: None,
            fleet: Fleet::default(),
            settings,
        };
        Ok(aggregator)
    }

    /// Rebuilds every open run from its journal, dropping what is in memory.
    async fn reload_open_runs(&mut self, connection: &Connection) -> Result<(), AggregatorError> {
        let mut journals = Vec::new();
        for (run_id, records) in self.journals.replay(connection).await? {
            // A journal that cannot be read was logged; its file stays.
            if let Ok(records) = records {
                journals.push((run_id, records));
            }
        }
        let effects = self.runs.reload(journals);
        self.to_claim = effects.claim;
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
        info!(open_runs = self.runs.open_count(), "aggregator ready");
        // A new session's channel: claims start afresh on it.
        let mut claims = SelectAll::new();
        self.claiming.clear();
        self.start_claims(connection, &channel, &mut claims).await?;

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
                done = commit_ended(&mut self.committing) => {
                    self.on_committed(done, &publish).await?;
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
                    self.start_claims(connection, &channel, &mut claims).await?;
                    self.commit_later(settled, &publish)?;
                }
                Some(delivery) = claims.next(), if !claims.is_empty() => {
                    let delivery = delivery.map_err(BrokerError::from)?;
                    let mut settled = Settled::new();
                    self.on_result_queue(delivery, &publish, &mut settled).await?;
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
                    self.end_claims(&channel).await?;
                    self.refresh_dashboard(connection).await?;
                    let effects = self.runs.tick(now_ms());
                    self.perform(effects, &publish).await?;
                    self.expire_parts().await?;
                    let open = self.runs.announces();
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
        self.pipeline.gather(settled);
        self.start_commit(publish)
    }

    /// Starts committing every record appended and what gathered, if any
    /// and if no commit is under way.
    fn start_commit(&mut self, publish: &Channel) -> Result<(), AggregatorError> {
        if !self.pipeline.should_start(self.journals.has_pending()) {
            return Ok(());
        }
        self.committing = Some(self.journals.start_commit(publish)?);
        self.pipeline.started();
        Ok(())
    }

    /// The commit under way ended: its deliveries are settled, the runs it
    /// made finished durably are finished, and what gathered meanwhile is
    /// committed next.
    async fn on_committed(
        &mut self,
        done: Result<(), JournalError>,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        done?;
        let group = self.pipeline.ended();
        self.settle_group(group, publish).await?;
        self.start_commit(publish)
    }

    /// Settles a committed group's deliveries and finishes its runs.
    async fn settle_group(
        &mut self,
        group: pipeline::Group<Delivery>,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        settle(&group.settled).await?;
        for run_id in group.finish {
            self.finish(run_id, publish);
        }
        Ok(())
    }

    /// Commits everything now, after the commit under way: for what must be
    /// durable before the loop goes on (a resumed run's jobs, a session's
    /// first claims, stopping).
    async fn commit_now(&mut self, publish: &Channel) -> Result<(), AggregatorError> {
        if let Some(mut commit) = self.committing.take() {
            committed(&mut commit).await?;
            let group = self.pipeline.ended();
            self.settle_group(group, publish).await?;
        }
        let gathered = self.pipeline.take_gathered();
        self.journals.commit(publish).await?;
        self.settle_group(gathered, publish).await
    }

    /// Drops a lost session's commit once its writes are over (a journal is
    /// not replayed while a write to it goes on); its deliveries went with
    /// their channel, and the broker delivers them again; runs it would have
    /// finished are replayed from their journals.
    async fn abandon_commit(&mut self) {
        if let Some(mut commit) = self.committing.take() {
            let _ = committed(&mut commit).await;
        }
        self.pipeline.abandon();
    }

    async fn on_result_queue(
        &mut self,
        delivery: Delivery,
        publish: &Channel,
        settled_deliveries: &mut Settled,
    ) -> Result<(), AggregatorError> {
        let sender = sender_of(&delivery);
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
        let now = now_ms();
        let effects = match body {
            Ok(Body::Run(announce)) => Ok(self.runs.announced(announce)),
            Ok(Body::Result(result)) => {
                Ok(self.runs.results(&sender, Vec::new(), vec![result], now))
            }
            Ok(Body::Results(results)) => Ok(self.runs.results(&sender, Vec::new(), results, now)),
            Ok(Body::Batches(Batches { batches, results })) => {
                Ok(self.runs.results(&sender, batches, results, now))
            }
            Ok(other) => {
                error!(kind = other.kind(), queue = %self.settings.topology.results, "parking a message of the wrong kind");
                Err(())
            }
            Err(reason) => {
                error!(%reason, queue = %self.settings.topology.results, "parking an unreadable message");
                Err(())
            }
        };
        let acked = match effects {
            Ok(effects) => !self.perform(effects, publish).await?,
            Err(()) => false,
        };
        settled_deliveries.extend(held.into_iter().map(|delivery| (delivery, acked)));
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

    /// Starts taking the results kept for runs this aggregator has just
    /// learned (an announcement, or its journals on taking the lead) from
    /// their unclaimed queues: a consumer per such queue, whose deliveries
    /// the loop counts as results (results another aggregator could not
    /// place are not lost), none fetched on the loop. A queue that does not
    /// exist (nothing was kept) is skipped.
    async fn start_claims(
        &mut self,
        connection: &Connection,
        channel: &Channel,
        claims: &mut SelectAll<lapin::Consumer>,
    ) -> Result<(), AggregatorError> {
        for run_id in std::mem::take(&mut self.to_claim) {
            let queue = self.settings.topology.unclaimed_queue(&run_id.to_string());
            let Some(waiting) = broker::message_count(connection, &queue).await? else {
                continue;
            };
            info!(run = %run_id, waiting, "claiming results kept for this run while no aggregator knew it");
            let consumer = consume(channel, &queue).await?;
            self.claiming.insert(run_id, consumer.tag().to_string());
            claims.push(consumer);
        }
        Ok(())
    }

    /// Stops the claims of runs that are over (their unclaimed queues
    /// expire by themselves).
    async fn end_claims(&mut self, channel: &Channel) -> Result<(), AggregatorError> {
        let over: Vec<Uuid> = self
            .claiming
            .keys()
            .filter(|run| !self.runs.is_open(run))
            .copied()
            .collect();
        for run_id in over {
            if let Some(tag) = self.claiming.remove(&run_id) {
                channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await
                    .map_err(BrokerError::from)?;
            }
        }
        Ok(())
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

    /// Resumes a run for a producer (`--resume`), as the core decides
    /// (`Runs::resume`): the resumption durable before its jobs go out and
    /// the producer is answered.
    async fn on_resume(
        &mut self,
        request: ResumeRequest,
        delivery: Delivery,
        publish: &Channel,
    ) -> Result<(), AggregatorError> {
        let run_id = request.run_id;
        let (mut effects, outcome) = self.runs.resume(&request);
        let jobs = std::mem::take(&mut effects.jobs);
        self.perform(effects, publish).await?;
        self.commit_now(publish).await?;
        for jobs in jobs {
            self.publish_jobs(jobs, publish).await?;
        }
        info!(run = %run_id, ?outcome, "a producer asked to resume a run");
        let answer = Body::Resumed(ResumeAnswer { run_id, outcome });
        broker::reply(publish, &delivery, &answer).await?;
        broker::ack(&delivery).await?;
        Ok(())
    }

    /// Performs what the core decided, in its order (`runs.rs`): journals,
    /// records, events, jobs, results kept or parked, claims, finishes after
    /// the next commit. Whether the event's delivery is parked.
    async fn perform(
        &mut self,
        effects: Effects,
        publish: &Channel,
    ) -> Result<bool, AggregatorError> {
        let Effects {
            new_journals,
            records,
            events,
            jobs,
            keep_unclaimed,
            park,
            claim,
            finish,
            park_delivery,
        } = effects;
        for run_id in new_journals {
            self.journals.create(run_id)?;
        }
        for (run_id, record) in &records {
            self.journals.append(*run_id, record)?;
        }
        self.publish_events(publish, events).await;
        for jobs in jobs {
            self.publish_jobs(jobs, publish).await?;
        }
        let topology = &self.settings.topology;
        for (run_id, kept) in keep_unclaimed {
            let queue = topology
                .declare_unclaimed_queue(publish, &run_id.to_string())
                .await
                .map_err(BrokerError::from)?;
            let body = Body::Batches(kept);
            for payload in testfleet_types::parts::split(&body).map_err(BrokerError::from)? {
                broker::publish_encoded(publish, &queue, body.kind(), &[payload]).await?;
            }
        }
        for (body, reason) in park {
            broker::park_body(publish, topology, &topology.results, &body, &reason).await?;
        }
        self.to_claim.extend(claim);
        for run_id in finish {
            self.pipeline.finish_after_commit(run_id);
        }
        Ok(park_delivery)
    }

    /// Publishes a run's jobs to its queue, declared first (it may have been
    /// deleted meanwhile), with confirms; then tells the workers, if asked.
    async fn publish_jobs(&self, order: Publish, publish: &Channel) -> Result<(), AggregatorError> {
        let Some(announce) = self.runs.announce(&order.run_id) else {
            return Ok(());
        };
        let topology = &self.settings.topology;
        let queue = run_queues::jobs_queue(publish, topology, announce).await?;
        let now = now_ms();
        let bodies = order.jobs.into_iter().map(|job| {
            Body::Job(Job {
                published_at_ms: now,
                ..job
            })
        });
        broker::publish_all(publish, "", &queue, bodies, PUBLISH_WINDOW).await?;
        if order.notice {
            run_queues::notice_jobs(publish, topology, announce).await;
        }
        Ok(())
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
        let effects = self.runs.dead_letter(job, now_ms());
        let parked = self.perform(effects, publish).await?;
        settled.push((delivery, !parked));
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
    /// the verdict; `finishing`). Its journal goes only once the verdict is
    /// confirmed.
    fn finish(&mut self, run_id: Uuid, publish: &Channel) {
        let Some(order) = self.runs.take_finished(run_id, now_ms()) else {
            return;
        };
        let (run, queue) = order.announce_queue;
        self.run_queues.ended(run, queue);
        let settings = self.report_settings();
        self.finishing.start(
            order.report,
            order.tokens,
            order.quarantine,
            &settings,
            publish,
        );
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
        self.runs.finish_ended(run_id);
        Ok(())
    }

    fn report_settings(&self) -> ReportSettings {
        ReportSettings {
            report_dir: self.settings.report_dir.clone(),
            triage_rules: self.settings.triage_rules.clone(),
            verdicts: self.settings.topology.verdicts.clone(),
            outcomes: OutcomeStore::new(&self.settings.state_dir),
            caches: self.settings.caches.clone(),
        }
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
                .runs
                .announces()
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
        dashboard.publish(self.runs.progress_views(), now_ms());
        Ok(())
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
            settings
                .journal_key
                .clone()
                .expect("the settings give the broker journal its key"),
        )),
    }
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

/// The end of the commit under way; pending for ever when none is.
async fn commit_ended(committing: &mut Option<Commit>) -> Result<(), JournalError> {
    let Some(commit) = committing else {
        return std::future::pending().await;
    };
    let done = committed(commit).await;
    *committing = None;
    done
}
