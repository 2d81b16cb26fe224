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
//!                        ▼                                      └──"parked"──▶ {p}.parked (kept for people)
//!                   producer --wait
//! ```
//!
//! Queues are durable quorum queues, so a message survives a broker restart and is
//! redelivered if its consumer dies before acking it.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

/// Routing key, on the dead-letter exchange, of jobs the broker gave up on.
const DEAD_JOBS_KEY: &str = "jobs";
/// Routing key, on the dead-letter exchange, of messages nobody can use.
const PARKED_KEY: &str = "parked";
/// The parked queue is for people to inspect; it must not grow without bound.
const PARKED_MAX_LENGTH: i64 = 10_000;

/// The names of every queue and exchange of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub jobs: String,
    pub results: String,
    pub dead_exchange: String,
    pub dead_jobs: String,
    pub parked: String,
    pub verdicts: String,
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
            delivery_limit,
        }
    }

    /// Every queue, for tools that clean up a fleet.
    pub fn queues(&self) -> [&str; 4] {
        [&self.jobs, &self.results, &self.dead_jobs, &self.parked]
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

        let mut jobs_args = self.quorum_args(DEAD_JOBS_KEY);
        jobs_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        declare_queue(channel, &self.jobs, jobs_args).await?;
        declare_queue(channel, &self.results, self.quorum_args(PARKED_KEY)).await?;
        declare_queue(channel, &self.dead_jobs, self.quorum_args(PARKED_KEY)).await?;

        let mut parked_args = FieldTable::default();
        parked_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        parked_args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(PARKED_MAX_LENGTH),
        );
        declare_queue(channel, &self.parked, parked_args).await?;

        self.bind(channel, &self.dead_jobs, DEAD_JOBS_KEY).await?;
        self.bind(channel, &self.parked, PARKED_KEY).await
    }

    /// The queue one waiting producer reads its run's verdict from. Durable, so a
    /// verdict published while the producer reconnects is not lost; it expires on
    /// its own if nobody ever reads it.
    pub fn verdict_queue(&self, run_id: &str) -> String {
        format!("{}.verdict.{run_id}", self.verdicts)
    }

    /// Declares and binds the verdict queue of `run_id`.
    pub async fn declare_verdict_queue(
        &self,
        channel: &Channel,
        run_id: &str,
        expires: std::time::Duration,
    ) -> lapin::Result<String> {
        let name = self.verdict_queue(run_id);
        let mut args = FieldTable::default();
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(expires.as_millis().min(i64::MAX as u128) as i64),
        );
        declare_queue(channel, &name, args).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                self.verdicts.as_str().into(),
                run_id.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(name)
    }

    /// Quorum queue arguments that send rejected messages to `dead_key`.
    fn quorum_args(&self, dead_key: &str) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
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
        assert!(t.queues().iter().all(|q| q.starts_with("it-1.")));
    }
}
