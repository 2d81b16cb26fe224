//! The AMQP topology, declared in one place.
//!
//! Every name carries a prefix (default `testfleet`) so that several fleets, or
//! several integration tests, can share one broker without seeing each other.
//!
//! ```text
//! producer ──run──▶ {p}.results ◀──result── worker ◀──job── {p}.jobs ◀──job── producer, aggregator (retries)
//!                        │                                      │ delivery limit reached, or rejected
//!                        ▼ aggregator                           ▼
//!                   {p}.verdicts (topic, key = run id)    {p}.dead ──"jobs"──▶ {p}.dead.jobs ──▶ aggregator
//!                        ▼  ▲ events (key = run id.events)      └──"parked"──▶ {p}.parked (kept for people)
//!                        ▼  └── worker (started), aggregator (finished, retried, round closed)
//!                   {p}.verdicts.verdict.{run id} ──▶ producer --wait
//!
//! producer ──jobs of a run (run.queue = "own")──▶ {p}.jobs.{run id} ◀──basic.get── workers, in turn by run
//! producer, aggregator ──queue notices──▶ {p}.runs (fanout) ──▶ each worker's own queue
//!
//! producer ──history query (reply-to: amq.rabbitmq.reply-to)──▶ {p}.history ──▶ aggregator
//!     ▲                                                                            │
//!     └──────────────────────── history (direct reply-to) ─────────────────────────┘
//! ```
//!
//! A waiting producer's queue binds both keys of its run, so its events and its
//! verdict arrive in one queue. Without a waiting producer, events match no
//! binding and the broker drops them.
//!
//! Queues are durable quorum queues, replicated on the broker's cluster, so a
//! message survives a broker restart or the loss of a node and is redelivered
//! if its consumer dies before acking it. The history queue's requests expire
//! (a producer waits for an answer only a few seconds and a late one is
//! useless), and a run's verdict queue expires once nobody reads it. The one
//! queue that is not a quorum queue is the aggregators' lock, exclusive to the
//! connection that holds it, and the journal stream of `aggregator.journal =
//! "broker"`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};
use testfleet_types::messages::JobQueue;

/// Routing key, on the dead-letter exchange, of jobs the broker gave up on.
const DEAD_JOBS_KEY: &str = "jobs";
/// Routing key, on the dead-letter exchange, of messages nobody can use.
const PARKED_KEY: &str = "parked";
/// The parked queue is for people to inspect; it must not grow without bound.
const PARKED_MAX_LENGTH: i64 = 10_000;
/// A history request nobody answered within this long has no one waiting for it.
const HISTORY_REQUEST_TTL_MS: i64 = 30_000;
/// Requests pile up only while no aggregator runs; keep that pile small.
const HISTORY_MAX_LENGTH: i64 = 1_000;
/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Results of a run no aggregator knew wait this long for one that does.
const UNCLAIMED_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Messages one run's unclaimed queue keeps; older ones go to the parked queue.
const UNCLAIMED_MAX_LENGTH: i64 = 100_000;
/// Bounds a verdict queue nobody reads. The broker then drops the oldest
/// messages, which are events: the verdict comes last, so it survives.
const VERDICT_QUEUE_MAX_LENGTH: i64 = 200_000;

/// A heartbeat older than this says nothing of the worker now.
const HEARTBEAT_TTL_MS: i64 = 15_000;
/// Heartbeats kept while nobody reads them.
const HEARTBEAT_MAX_LENGTH: i64 = 10_000;
/// A run's own jobs queue outlives its last use (a worker taking from it,
/// a declaration) by this long: a week, as unclaimed results.
const RUN_JOBS_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// The names of every queue and exchange of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub jobs: String,
    pub results: String,
    pub dead_exchange: String,
    pub dead_jobs: String,
    pub parked: String,
    pub verdicts: String,
    /// Producers ask the aggregator for a suite's past durations here.
    pub history: String,
    /// An exclusive queue whose holder is the prefix's one active aggregator.
    pub aggregator_lock: String,
    /// The stream of open runs' records, when the aggregators keep their
    /// journal in the broker (declared by the aggregator alone).
    pub journal: String,
    /// Fanout exchange of queue notices: which runs have jobs in queues of
    /// their own (`Body::Queues`), for every worker's own queue.
    pub runs: String,
    /// A queue nothing is published to, which every worker consumes: its
    /// consumer count is the fleet's size, as the broker sees it.
    pub workers: String,
    /// Workers' heartbeats, for the aggregator's dashboard: kept a little
    /// while, and only so many.
    pub heartbeats: String,
    /// Deliveries of a job beyond the first before it is dead-lettered.
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(prefix: &str, delivery_limit: u32) -> Self {
        Topology {
            jobs: format!("{prefix}.jobs"),
            results: format!("{prefix}.results"),
            dead_exchange: format!("{prefix}.dead"),
            dead_jobs: format!("{prefix}.dead.jobs"),
            parked: format!("{prefix}.parked"),
            verdicts: format!("{prefix}.verdicts"),
            history: format!("{prefix}.history"),
            aggregator_lock: format!("{prefix}.aggregator.lock"),
            journal: format!("{prefix}.journal"),
            runs: format!("{prefix}.runs"),
            workers: format!("{prefix}.workers"),
            heartbeats: format!("{prefix}.heartbeats"),
            delivery_limit,
        }
    }

    /// Every queue, for tools that clean up a fleet.
    pub fn queues(&self) -> [&str; 8] {
        [
            &self.jobs,
            &self.workers,
            &self.heartbeats,
            &self.results,
            &self.dead_jobs,
            &self.parked,
            &self.history,
            &self.journal,
        ]
    }

    /// Declares everything; idempotent, so every service calls it on connect.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.dead_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.verdicts.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.runs.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;

        declare_queue(channel, &self.jobs, self.jobs_args()).await?;
        declare_queue(channel, &self.workers, quorum()).await?;
        let mut heartbeat_args = quorum();
        heartbeat_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(HEARTBEAT_TTL_MS),
        );
        heartbeat_args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(HEARTBEAT_MAX_LENGTH),
        );
        declare_queue(channel, &self.heartbeats, heartbeat_args).await?;
        declare_queue(channel, &self.results, self.quorum_args(PARKED_KEY)).await?;
        declare_queue(channel, &self.dead_jobs, self.quorum_args(PARKED_KEY)).await?;

        let mut parked_args = quorum();
        parked_args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(PARKED_MAX_LENGTH),
        );
        declare_queue(channel, &self.parked, parked_args).await?;

        let mut history_args = quorum();
        history_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(HISTORY_REQUEST_TTL_MS),
        );
        history_args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(HISTORY_MAX_LENGTH),
        );
        declare_queue(channel, &self.history, history_args).await?;

        self.bind(channel, &self.dead_jobs, DEAD_JOBS_KEY).await?;
        self.bind(channel, &self.parked, PARKED_KEY).await
    }

    /// Declares the aggregators' lock: an exclusive queue, which only one
    /// connection can hold and which the broker deletes when that connection
    /// goes. Another connection's declaration fails with `RESOURCE_LOCKED`.
    pub async fn declare_lock(&self, channel: &Channel) -> lapin::Result<()> {
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        channel
            .queue_declare(
                self.aggregator_lock.as_str().into(),
                options,
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Exchange and routing key that reach the parked queue: where a consumer
    /// puts, by hand, an unreadable message from a queue without dead-lettering.
    pub fn parked_route(&self) -> (&str, &str) {
        (&self.dead_exchange, PARKED_KEY)
    }

    /// The queue one waiting producer reads its run's verdict from. Durable, so a
    /// verdict published while the producer reconnects is not lost; it expires on
    /// its own if nobody ever reads it.
    pub fn verdict_queue(&self, run_id: &str) -> String {
        format!("{}.verdict.{run_id}", self.verdicts)
    }

    /// The routing key of `run_id`'s events on the verdicts exchange. Its verdict
    /// travels under the bare run id, which this key does not match.
    pub fn events_key(run_id: &str) -> String {
        format!("{run_id}.events")
    }

    /// Declares a verdict queue of `run_id` and binds it to the run's verdict
    /// and to its events: the submitting producer's (`listener` `None`), or
    /// one of a producer that resumed the run, named after it, so that each
    /// waiting producer gets its own copy of the verdict.
    pub async fn declare_verdict_queue(
        &self,
        channel: &Channel,
        run_id: &str,
        listener: Option<&str>,
        expires: std::time::Duration,
    ) -> lapin::Result<String> {
        let name = match listener {
            None => self.verdict_queue(run_id),
            Some(listener) => format!("{}.{listener}", self.verdict_queue(run_id)),
        };
        let mut args = quorum();
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(expires.as_millis().min(i64::MAX as u128) as i64),
        );
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(VERDICT_QUEUE_MAX_LENGTH),
        );
        declare_queue(channel, &name, args).await?;
        for key in [run_id.to_owned(), Self::events_key(run_id)] {
            channel
                .queue_bind(
                    name.as_str().into(),
                    self.verdicts.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(name)
    }

    /// The queue results of `run_id` wait in while no aggregator knows the
    /// run (its journal was elsewhere, its announcement parked): the one
    /// that learns the run takes them from there.
    pub fn unclaimed_queue(&self, run_id: &str) -> String {
        format!("{}.unclaimed.{run_id}", self.results)
    }

    /// Declares `run_id`'s unclaimed queue: it expires a week after its last
    /// use, and past its length its oldest messages go to the parked queue.
    pub async fn declare_unclaimed_queue(
        &self,
        channel: &Channel,
        run_id: &str,
    ) -> lapin::Result<String> {
        let name = self.unclaimed_queue(run_id);
        let mut args = self.quorum_args(PARKED_KEY);
        args.insert("x-expires".into(), AMQPValue::LongLongInt(UNCLAIMED_TTL_MS));
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(UNCLAIMED_MAX_LENGTH),
        );
        declare_queue(channel, &name, args).await?;
        Ok(name)
    }

    /// Where jobs of `run_id` wait, its queue being `queue`.
    pub fn jobs_queue_of(&self, queue: JobQueue, run_id: &str) -> String {
        match queue {
            JobQueue::Shared => self.jobs.clone(),
            JobQueue::Own => self.run_jobs_queue(run_id),
        }
    }

    /// The queue of `run_id`'s jobs when the run has one of its own.
    pub fn run_jobs_queue(&self, run_id: &str) -> String {
        format!("{}.{run_id}", self.jobs)
    }

    /// Declares `run_id`'s own jobs queue, as the shared one (delivery limit,
    /// dead-lettering) but expiring after a week unused (nobody taking from
    /// it or declaring it): the aggregator deletes it at the run's end, and
    /// a run whose aggregator never ends it does not leave it forever. The
    /// producer and the aggregator both declare it, always with these same
    /// arguments (a queue declared again with others closes the channel).
    pub async fn declare_run_jobs_queue(
        &self,
        channel: &Channel,
        run_id: &str,
    ) -> lapin::Result<String> {
        let name = self.run_jobs_queue(run_id);
        let mut args = self.jobs_args();
        args.insert("x-expires".into(), AMQPValue::LongLongInt(RUN_JOBS_TTL_MS));
        declare_queue(channel, &name, args).await?;
        Ok(name)
    }

    /// Binds a worker's own queue to the queue notices.
    pub async fn bind_notices(&self, channel: &Channel, queue: &str) -> lapin::Result<()> {
        channel
            .queue_bind(
                queue.into(),
                self.runs.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// A jobs queue's arguments: its rejected and over-delivered jobs go to
    /// the dead-letter queue.
    fn jobs_args(&self) -> FieldTable {
        let mut args = self.quorum_args(DEAD_JOBS_KEY);
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args
    }

    /// Quorum queue arguments that send rejected messages to `dead_key`.
    fn quorum_args(&self, dead_key: &str) -> FieldTable {
        let mut args = quorum();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_exchange.as_str().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead_key.into()),
        );
        args
    }

    async fn bind(&self, channel: &Channel, queue: &str, key: &str) -> lapin::Result<()> {
        channel
            .queue_bind(
                queue.into(),
                self.dead_exchange.as_str().into(),
                ShortString::from(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

/// The arguments of a quorum queue: replicated on the broker's cluster, so
/// that no queue has a single node it lives or dies with (a classic queue
/// whose node is down cannot even be declared on the others).
fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(name.into(), options, args).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let t = Topology::new("it-1", 4);
        assert_eq!(t.jobs, "it-1.jobs");
        assert_eq!(t.dead_jobs, "it-1.dead.jobs");
        assert_eq!(t.history, "it-1.history");
        assert!(t.queues().iter().all(|q| q.starts_with("it-1.")));
    }

    /// Topic keys are dot-separated words: the events key must not match a
    /// binding on the bare run id (an older producer's), nor the reverse.
    #[test]
    fn events_key_is_the_run_id_plus_one_word() {
        let key = Topology::events_key("0b6e-42");
        assert_eq!(key, "0b6e-42.events");
        assert_eq!(key.split('.').next(), Some("0b6e-42"));
        assert_ne!(key, "0b6e-42");
    }
}
