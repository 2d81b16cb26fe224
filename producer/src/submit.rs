//! Publishing a run: its announcement to the aggregator, then one job per test
//! (longest first when the suite has a history), each confirmed by the broker;
//! and waiting for the run's verdict.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::now_ms;
use testfleet_common::parts::{Joined, Joiner};
use testfleet_common::topology::Topology;
use testfleet_common::wire::{decode, Body, Job, RunAnnounce, RunEvent, RunReport, RunSpec};
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use crate::history::{self, Order};

/// Jobs published per confirm round trip.
const PUBLISH_WINDOW: usize = 2000;
/// How long after the run's deadline a waiting producer gives up on the verdict.
const VERDICT_GRACE: Duration = Duration::from_secs(120);
/// An unread verdict queue outlives the deadline by this much, then expires.
const VERDICT_QUEUE_SLACK: Duration = Duration::from_secs(3600);

/// Validated settings of the producer.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub broker_url: String,
    pub connect_timeout: Duration,
    pub topology: Topology,
    pub suite: String,
    pub spec: RunSpec,
    /// How long the run may take in all.
    pub deadline: Duration,
    /// The order jobs are published in.
    pub order: Order,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(
        "no verdict for run {run_id} by {waited:?} after its deadline; is an aggregator running?"
    )]
    NoVerdict { run_id: Uuid, waited: Duration },
}

/// A run that the broker has taken.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run_id: Uuid,
    pub tests: usize,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
}

/// Publishes the run. With `wait`, the verdict queue exists before anything else,
/// so the verdict cannot be missed.
pub async fn submit(
    settings: &ProducerSettings,
    tests: Vec<String>,
    wait: bool,
) -> Result<Submitted, ProducerError> {
    let connection = broker::connect(&settings.broker_url, settings.connect_timeout).await?;
    let submitted = publish_run(&connection, settings, tests, wait).await;
    let _ = connection.close(200, "run submitted".into()).await;
    submitted
}

async fn publish_run(
    connection: &Connection,
    settings: &ProducerSettings,
    tests: Vec<String>,
    wait: bool,
) -> Result<Submitted, ProducerError> {
    let channel = broker::confirm_channel(connection).await?;
    settings
        .topology
        .declare(&channel)
        .await
        .map_err(BrokerError::from)?;
    let run_id = Uuid::new_v4();
    let created_at_ms = now_ms();
    let deadline_ms = created_at_ms + settings.deadline.as_millis() as u64;
    if wait {
        let expires = settings.deadline + VERDICT_GRACE + VERDICT_QUEUE_SLACK;
        settings
            .topology
            .declare_verdict_queue(&channel, &run_id.to_string(), expires)
            .await
            .map_err(BrokerError::from)?;
    }
    let announce = RunAnnounce {
        run_id,
        suite: settings.suite.clone(),
        created_at_ms,
        deadline_ms,
        spec: settings.spec.clone(),
        tests,
    };
    // The announcement goes first, on the queue results travel: the aggregator
    // knows the run's expected tests before any result of it can arrive.
    broker::publish_parted(
        &channel,
        "",
        &settings.topology.results,
        &Body::Run(announce.clone()),
    )
    .await?;
    let count = announce.tests.len();
    // The announcement keeps the listed order (reports follow it); only the
    // jobs are reordered.
    let tests = match settings.order {
        Order::Arrival => announce.tests,
        Order::LongestFirst => {
            let topology = &settings.topology;
            match history::fetch(
                connection,
                topology,
                &settings.suite,
                history::HISTORY_TIMEOUT,
            )
            .await
            {
                Some(known) => history::longest_first(announce.tests, &known),
                None => announce.tests,
            }
        }
    };
    let jobs = tests.into_iter().map(|test_id| {
        Body::Job(Job {
            run_id,
            test_id,
            attempt: 1,
            deadline_ms,
            spec: settings.spec.clone(),
            // The iterator is consumed as it is published: this is publish time.
            published_at_ms: now_ms(),
        })
    });
    broker::publish_all(&channel, "", &settings.topology.jobs, jobs, PUBLISH_WINDOW).await?;
    info!(run = %run_id, tests = count, "run published");
    let _ = channel.close(200, "run published".into()).await;
    Ok(Submitted {
        run_id,
        tests: count,
        created_at_ms,
        deadline_ms,
    })
}

/// Waits for the run's verdict, reconnecting to the broker if needed. The run's
/// events, which arrive on the same queue before it, go to `events`; a closed
/// receiver only means nobody follows them.
pub async fn wait_for_verdict(
    settings: &ProducerSettings,
    submitted: &Submitted,
    events: mpsc::Sender<RunEvent>,
) -> Result<RunReport, ProducerError> {
    let give_up_in =
        Duration::from_millis(submitted.deadline_ms.saturating_sub(now_ms())) + VERDICT_GRACE;
    let waiting = wait_reconnecting(settings, submitted.run_id, &events);
    match tokio::time::timeout(give_up_in, waiting).await {
        Ok(report) => report,
        Err(_) => Err(ProducerError::NoVerdict {
            run_id: submitted.run_id,
            waited: VERDICT_GRACE,
        }),
    }
}

async fn wait_reconnecting(
    settings: &ProducerSettings,
    run_id: Uuid,
    events: &mpsc::Sender<RunEvent>,
) -> Result<RunReport, ProducerError> {
    loop {
        let connection = broker::connect(&settings.broker_url, settings.connect_timeout).await?;
        match read_verdict(&connection, settings, run_id, events).await {
            Ok(report) => {
                let _ = connection.close(200, "verdict received".into()).await;
                return Ok(report);
            }
            Err(error) => {
                warn!(%error, "lost the broker while waiting for the verdict, reconnecting");
                let _ = connection.close(200, "reconnecting".into()).await;
            }
        }
    }
}

/// A message on the verdict queue that is neither this run's verdict nor one of
/// its events: kept in the parked queue, with the reason logged, not dropped.
async fn park_stray(
    channel: &Channel,
    settings: &ProducerSettings,
    queue: &str,
    delivery: &lapin::message::Delivery,
    reason: &str,
) -> Result<(), BrokerError> {
    warn!(%reason, %queue, "parking a message that is no part of this run's verdict");
    broker::park(channel, &settings.topology, queue, delivery, reason).await
}

async fn read_verdict(
    connection: &Connection,
    settings: &ProducerSettings,
    run_id: Uuid,
    events: &mpsc::Sender<RunEvent>,
) -> Result<RunReport, BrokerError> {
    // Confirms, for parking what does not belong here (`park_stray`).
    let channel = broker::confirm_channel(connection).await?;
    let queue = settings.topology.verdict_queue(&run_id.to_string());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut joiner = Joiner::default();
    loop {
        let delivery = consumer.next().await.ok_or(BrokerError::ChannelGone)??;
        let (body, held) = match decode(&delivery.data) {
            Ok(Body::Part(part)) => match joiner.add(part, delivery) {
                Joined::Incomplete => continue,
                Joined::Whole { body, held } => (*body, held),
                Joined::Refused { reason, held } => {
                    park_stray(&channel, settings, &queue, &held, &reason).await?;
                    continue;
                }
            },
            body => (body, vec![delivery]),
        };
        match body {
            Ok(Body::Report(report)) if report.run_id == run_id => {
                ack_all(&held).await?;
                // Cancel before deleting: a queue deleted under its consumer makes
                // the broker cancel it while the channel closes, which lapin logs
                // as a connection error over the progress display.
                channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await?;
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
                let _ = channel.close(200, "verdict received".into()).await;
                return Ok(report);
            }
            Ok(Body::Event(event)) if event.run_id == run_id => {
                ack_all(&held).await?;
                let _ = events.send(event).await;
            }
            Ok(Body::Events(batch)) if batch.iter().all(|e| e.run_id == run_id) => {
                ack_all(&held).await?;
                for event in batch {
                    let _ = events.send(event).await;
                }
            }
            Ok(other) => {
                let reason = format!("a {} message of another run or kind", other.kind());
                for delivery in &held {
                    park_stray(&channel, settings, &queue, delivery, &reason).await?;
                }
            }
            Err(error) => {
                for delivery in &held {
                    park_stray(&channel, settings, &queue, delivery, &error.to_string()).await?;
                }
            }
        }
    }
}

async fn ack_all(deliveries: &[lapin::message::Delivery]) -> Result<(), BrokerError> {
    for delivery in deliveries {
        broker::ack(delivery).await?;
    }
    Ok(())
}
