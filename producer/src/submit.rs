//! Publishing a run: its announcement to the aggregator, then one job per test
//! (longest first when the suite has a history), each confirmed by the broker;
//! and waiting for the run's verdict.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use testfleet_common::broker::{self, BrokerError};
use testfleet_common::topology::Topology;
use testfleet_types::batch::{self, PlanParams, Planned};
use testfleet_types::checks;
use testfleet_types::codec::decode;
use testfleet_types::limits::{MAX_MESSAGE_BYTES, MAX_TESTS_PER_JOB};
use testfleet_types::messages::{
    Body, ExecutorKind, Job, JobQueue, JobTest, QueueNotice, RunAnnounce, RunEvent, RunQueue,
    RunReport,
};
use testfleet_types::now_ms;
use testfleet_types::parts::{Joined, Joiner};
use testfleet_types::sides::{self, Side};
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use crate::history::{self, History, Order};
use crate::settings::{Batching, ProducerSettings};

/// Jobs published per confirm round trip.
const PUBLISH_WINDOW: usize = 2000;
/// How long after the run's deadline a waiting producer gives up on the verdict.
const VERDICT_GRACE: Duration = Duration::from_secs(120);
/// An unread verdict queue outlives the deadline by this much, then expires.
const VERDICT_QUEUE_SLACK: Duration = Duration::from_secs(3600);

/// Bytes of ids per batch at most when they go on the command line: each id
/// is an argv element (or part of one, `{ids_regex}`), and Linux allows
/// 128 KiB per element, 2 MiB in all.
const MAX_BATCH_IDS_BYTES: usize = 96 << 10;
/// Bytes of ids per batch at most when the command reads them from
/// `{ids_file}` alone: half of what a job's message may hold.
const MAX_FILE_IDS_BYTES: usize = MAX_MESSAGE_BYTES / 2;
/// Slots per consuming worker, when the producer counts them: the default
/// `worker.concurrency`.
const SLOTS_PER_WORKER: usize = 2;
/// What a batch is taken to cost beyond its tests before the suite's history
/// says: a container created, started and removed plus a runner's start-up,
/// or a process and a runner's start-up.
const DEFAULT_DOCKER_BATCH_COST_MS: u64 = 1_500;
const DEFAULT_PROCESS_BATCH_COST_MS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(
        "no verdict for run {run_id} by {waited:?} after its deadline; is an aggregator running?"
    )]
    NoVerdict { run_id: Uuid, waited: Duration },
    /// What the run would publish is out of the bounds every aggregator
    /// checks, which would park it unread.
    #[error("the run is out of the fleet's bounds, so no aggregator would take it: {0}")]
    OutOfBounds(String),
}

/// A run that the broker has taken.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run_id: Uuid,
    /// The run's secret, which its verdict must carry.
    pub verdict_token: Uuid,
    pub tests: usize,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    /// Where its verdict and events come (`Topology::declare_verdict_queue`).
    pub verdict_queue: String,
}

/// Publishes the run. With `wait`, the verdict queue exists before anything else,
/// so the verdict cannot be missed.
pub async fn submit(
    settings: &ProducerSettings,
    tests: Vec<String>,
    wait: bool,
) -> Result<Submitted, ProducerError> {
    let mut brokers = settings.brokers.clone();
    let connection = broker::connect(&mut brokers, Some(settings.connect_timeout)).await?;
    let submitted = publish_run(&connection, &brokers.user(), settings, tests, wait).await;
    broker::close(&connection, "run submitted").await;
    submitted
}

/// Publishes the run on `connection`, logged in as `user`.
async fn publish_run(
    connection: &Connection,
    user: &str,
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
    let verdict_token = Uuid::new_v4();
    let created_at_ms = now_ms();
    let deadline_ms = created_at_ms + settings.deadline.as_millis() as u64;
    if wait {
        let expires = verdict_queue_expiry(settings);
        settings
            .topology
            .declare_verdict_queue(&channel, &run_id.to_string(), None, expires)
            .await
            .map_err(BrokerError::from)?;
    }
    // An A/B run lists each id on both sides, and plans its jobs on the
    // plain ids.
    let (listed, plain) = match settings.ab {
        Some(_) => (sides::paired(tests.clone()), Some(tests)),
        None => (tests, None),
    };
    let announce = RunAnnounce {
        run_id,
        suite: settings.suite.clone(),
        created_at_ms,
        deadline_ms,
        spec: settings.spec.clone(),
        tests: listed,
        verdict_token: Some(verdict_token),
        queue: settings.queue,
        weight: settings.weight,
        auto_quarantine_percent: settings.auto_quarantine_percent,
        quarantine: settings.quarantine.clone(),
        signatures: settings.signatures.clone(),
        ab: settings.ab.clone(),
    };
    // Checked as the aggregator will check it: one it would park unread
    // must not leave the producer waiting for a verdict.
    let announcement = Body::Run(announce.clone());
    checks::check(&announcement).map_err(ProducerError::OutOfBounds)?;
    // The announcement goes first, on the queue results travel: the aggregator
    // knows the run's expected tests before any result of it can arrive.
    broker::publish_parted(
        &channel,
        "",
        &settings.topology.results,
        &announcement,
        user,
    )
    .await?;
    // The tests that run: a recorded baseline's never do.
    let recorded = settings.ab.as_ref().is_some_and(|ab| ab.recorded.is_some());
    let count = match recorded {
        true => announce.tests.len() / 2,
        false => announce.tests.len(),
    };
    // The announcement keeps the listed order (reports follow it); only the
    // jobs are reordered and grouped.
    let history = match (settings.order, settings.batching) {
        (Order::Arrival, Batching::One | Batching::AtMost(_)) => None,
        _ => {
            let topology = &settings.topology;
            history::fetch(
                connection,
                topology,
                &settings.suite,
                history::HISTORY_TIMEOUT,
            )
            .await
        }
    };
    let slots = match settings.batching {
        Batching::Auto { slots: None } => Some(fleet_slots(&channel, &settings.topology).await),
        _ => None,
    };
    let plain = plain.unwrap_or(announce.tests);
    let mut jobs = plan_jobs(settings, plain, history, slots);
    if let Some(ab) = &settings.ab {
        jobs = match ab.recorded {
            Some(_) => on_side(Side::Candidate, &jobs),
            None => side_by_side(jobs),
        };
    }
    info!(run = %run_id, tests = count, jobs = jobs.len(), "publishing the run's jobs");
    let jobs = jobs.into_iter().map(|tests| {
        let mut job = Job {
            run_id,
            tests,
            attempt: 1,
            deadline_ms,
            spec: settings.spec.clone(),
            // The iterator is consumed as it is published: this is publish time.
            published_at_ms: now_ms(),
            queue: settings.queue,
        };
        if let Some(ab) = &settings.ab {
            sides::fit_job(ab, &mut job);
        }
        Body::Job(job)
    });
    let queue = jobs_queue(&channel, settings, run_id).await?;
    let notice = queue_notice(settings, run_id, deadline_ms);
    if let Some(notice) = &notice {
        // Workers start taking while the rest is published.
        broker::publish_event(&channel, &settings.topology.runs, "", notice).await;
    }
    broker::publish_all(&channel, "", &queue, jobs, PUBLISH_WINDOW).await?;
    if let Some(notice) = &notice {
        broker::publish_event(&channel, &settings.topology.runs, "", notice).await;
    }
    info!(run = %run_id, tests = count, queue = %queue, "run published");
    let _ = channel.close(200, "run published".into()).await;
    Ok(Submitted {
        run_id,
        verdict_token,
        tests: count,
        created_at_ms,
        deadline_ms,
        verdict_queue: settings.topology.verdict_queue(&run_id.to_string()),
    })
}

/// How long a verdict queue nobody reads lives: past the run's deadline and
/// the producer's patience.
pub fn verdict_queue_expiry(settings: &ProducerSettings) -> Duration {
    settings.deadline + VERDICT_GRACE + VERDICT_QUEUE_SLACK
}

/// The queue the run's jobs go to: the shared one, or one of the run's own
/// (declared here, before any job).
async fn jobs_queue(
    channel: &Channel,
    settings: &ProducerSettings,
    run_id: Uuid,
) -> Result<String, BrokerError> {
    let topology = &settings.topology;
    match settings.queue {
        JobQueue::Shared => Ok(topology.jobs.clone()),
        JobQueue::Own => {
            let queue = topology
                .declare_run_jobs_queue(channel, &run_id.to_string())
                .await?;
            Ok(queue)
        }
    }
}

/// What tells workers that a run of its own queue has jobs, if it has one.
fn queue_notice(settings: &ProducerSettings, run_id: Uuid, deadline_ms: u64) -> Option<Body> {
    (settings.queue == JobQueue::Own).then(|| {
        Body::Queues(QueueNotice {
            runs: vec![RunQueue {
                run_id,
                weight: settings.weight,
                deadline_ms,
            }],
            whole: false,
        })
    })
}

/// The fleet's test slots, as far as the broker tells: the workers consuming
/// their presence queue (`Topology::workers`) now, at `SLOTS_PER_WORKER`
/// each; at least one.
async fn fleet_slots(channel: &Channel, topology: &Topology) -> usize {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let consumers = channel
        .queue_declare(
            topology.workers.as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .map(|queue| queue.consumer_count() as usize)
        .unwrap_or(0);
    consumers.max(1) * SLOTS_PER_WORKER
}

/// How busy (in thousandths) the hosts' CPUs must have been while a suite's
/// batches ran for its next plan to count cores rather than slots.
const CPU_BOUND_PERMILLE: u16 = 850;

/// How many batches the plan runs at once, and how many slots take jobs:
/// the fleet's cores within its slots when the suite's last runs kept its
/// hosts' CPUs busy (a CPU-bound suite: batches beyond the cores only share
/// them, each paying its fixed cost), else the fleet's slots; from the
/// workers' heartbeats when the aggregator answered with them, else
/// `counted` (workers consuming × 2).
fn at_once(history: Option<&History>, counted: usize) -> (usize, usize) {
    let Some(capacity) = history.and_then(|h| h.capacity) else {
        return (counted, counted);
    };
    let cpu_bound = history
        .and_then(|h| h.host_busy_permille)
        .is_some_and(|busy| busy >= CPU_BOUND_PERMILLE);
    let slots = (capacity.slots as usize).max(1);
    let at_once = if cpu_bound {
        capacity.cores as usize
    } else {
        slots
    };
    (at_once.clamp(1, slots), slots)
}

/// The limits every batch keeps: tests and id bytes per job, and a timeout
/// under the broker's consumer timeout.
fn plan_params(settings: &ProducerSettings, slots: usize, fixed_cost_ms: u64) -> PlanParams {
    PlanParams {
        slots,
        takers: slots,
        fixed_cost_ms,
        max_tests: MAX_TESTS_PER_JOB,
        max_ids_bytes: if settings.spec.ids_on_command_line() {
            MAX_BATCH_IDS_BYTES
        } else {
            MAX_FILE_IDS_BYTES
        },
        max_job_ms: settings.consumer_timeout_ms,
        timeout_ms: settings.spec.timeout_ms,
    }
}

/// An A/B run's jobs from the plan of its plain ids: each job twice, once
/// per side, published next to each other so that both see the same fleet,
/// cache and load; which side goes first alternates, since the first of a
/// pair warms caches for the second.
fn side_by_side(jobs: Vec<Vec<JobTest>>) -> Vec<Vec<JobTest>> {
    let baseline = on_side(Side::Baseline, &jobs);
    let candidate = on_side(Side::Candidate, &jobs);
    let mut paired = Vec::with_capacity(jobs.len() * 2);
    for (i, (base, cand)) in baseline.into_iter().zip(candidate).enumerate() {
        let (first, second) = if i % 2 == 0 {
            (base, cand)
        } else {
            (cand, base)
        };
        paired.push(first);
        paired.push(second);
    }
    paired
}

/// The jobs of plain ids as jobs of one side, each test's command given
/// its plain id (a `--compare` run's, whose baseline is recorded).
fn on_side(side: Side, jobs: &[Vec<JobTest>]) -> Vec<Vec<JobTest>> {
    jobs.iter()
        .map(|tests| {
            tests
                .iter()
                .map(|t| JobTest {
                    id: sides::side_id(side, &t.id),
                    allowance_ms: t.allowance_ms,
                    command_id: Some(t.id.clone()),
                })
                .collect()
        })
        .collect()
}

/// The run's jobs, each a list of tests with their allowances, in publishing
/// order: one test each (longest first with history), or batches.
fn plan_jobs(
    settings: &ProducerSettings,
    tests: Vec<String>,
    history: Option<History>,
    slots: Option<usize>,
) -> Vec<Vec<JobTest>> {
    let timeout_ms = settings.spec.timeout_ms;
    let known = history.as_ref().map(|h| &h.durations_ms);
    let expected = |id: &str| known.and_then(|k| k.get(id).copied());
    let planned: Vec<Planned> = tests
        .into_iter()
        .map(|id| Planned {
            expected_ms: expected(&id),
            id,
        })
        .collect();
    let batches = match settings.batching {
        Batching::One => {
            let ordered: Vec<String> = match (&history, settings.order) {
                (Some(history), Order::LongestFirst) => history::longest_first(
                    planned.into_iter().map(|p| p.id).collect(),
                    &history.durations_ms,
                ),
                _ => planned.into_iter().map(|p| p.id).collect(),
            };
            return ordered
                .into_iter()
                .map(|id| {
                    vec![JobTest {
                        id,
                        allowance_ms: timeout_ms,
                        command_id: None,
                    }]
                })
                .collect();
        }
        // By count, in the listed order: what a user who chose the size expects.
        Batching::AtMost(size) => {
            let tests = planned.into_iter().map(|p| (p.id, timeout_ms)).collect();
            let params = PlanParams {
                max_tests: size,
                ..plan_params(settings, 1, 0)
            };
            batch::by_count(tests, &params)
        }
        Batching::Auto { slots: counted } => {
            let fixed_cost_ms = history
                .as_ref()
                .and_then(|h| h.batch_overhead_ms)
                .unwrap_or(match settings.spec.executor {
                    ExecutorKind::Docker => DEFAULT_DOCKER_BATCH_COST_MS,
                    ExecutorKind::Process => DEFAULT_PROCESS_BATCH_COST_MS,
                });
            let (slots, takers) = match counted {
                Some(slots) => (slots, slots),
                None => at_once(history.as_ref(), slots.unwrap_or(1)),
            };
            let params = PlanParams {
                takers,
                ..plan_params(settings, slots, fixed_cost_ms)
            };
            info!(
                slots = params.slots,
                fixed_cost_ms,
                known = known.map_or(0, |k| k.len()),
                "planning batches"
            );
            batch::plan(planned, &params)
        }
    };
    batches
        .into_iter()
        .map(|b| {
            b.tests
                .into_iter()
                .map(|(id, allowance_ms)| JobTest {
                    id,
                    allowance_ms,
                    command_id: None,
                })
                .collect()
        })
        .collect()
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
    let waiting = wait_reconnecting(settings, submitted, &events);
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
    submitted: &Submitted,
    events: &mpsc::Sender<RunEvent>,
) -> Result<RunReport, ProducerError> {
    // Patient: the caller bounds the wait by the run's deadline, and a broker
    // node that goes leaves the others (`broker.url` may list them).
    let mut brokers = settings.brokers.clone();
    loop {
        let connection = broker::connect(&mut brokers, None).await?;
        match read_verdict(&connection, settings, submitted, events).await {
            Ok(report) => {
                broker::close(&connection, "verdict received").await;
                return Ok(report);
            }
            Err(error) => {
                warn!(%error, "lost the broker while waiting for the verdict, reconnecting");
                broker::close(&connection, "reconnecting").await;
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
    submitted: &Submitted,
    events: &mpsc::Sender<RunEvent>,
) -> Result<RunReport, BrokerError> {
    let run_id = submitted.run_id;
    // Confirms, for parking what does not belong here (`park_stray`).
    let channel = broker::confirm_channel(connection).await?;
    let queue = submitted.verdict_queue.clone();
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
            Ok(Body::Report(report))
                if report.run_id == run_id && !from_the_aggregator(&held, submitted) =>
            {
                let reason = "a verdict without this run's token: not from the aggregator";
                for delivery in &held {
                    park_stray(&channel, settings, &queue, delivery, reason).await?;
                }
            }
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

/// Whether every message of a verdict carries the run's token, which only
/// the producer and the aggregator (from the announcement) know.
fn from_the_aggregator(held: &[lapin::message::Delivery], submitted: &Submitted) -> bool {
    held.iter()
        .all(|d| broker::carries_verdict_token(d, submitted.verdict_token))
}

async fn ack_all(deliveries: &[lapin::message::Delivery]) -> Result<(), BrokerError> {
    for delivery in deliveries {
        broker::ack(delivery).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::Capacity;

    fn history(busy: Option<u16>, capacity: Option<Capacity>) -> History {
        History {
            durations_ms: Default::default(),
            batch_overhead_ms: Some(1_000),
            host_busy_permille: busy,
            capacity,
        }
    }

    #[test]
    fn a_cpu_bound_suite_runs_as_many_batches_at_once_as_the_fleet_has_cores() {
        let fleet = Some(Capacity { slots: 4, cores: 2 });
        assert_eq!(
            at_once(Some(&history(Some(990), fleet)), 8),
            (2, 4),
            "CPU-bound: cores"
        );
        assert_eq!(
            at_once(Some(&history(Some(300), fleet)), 8),
            (4, 4),
            "waiting tests: slots"
        );
        assert_eq!(
            at_once(Some(&history(None, fleet)), 8),
            (4, 4),
            "not learned yet: slots"
        );
        assert_eq!(
            at_once(Some(&history(Some(990), None)), 8),
            (8, 8),
            "no heartbeats: counted"
        );
        assert_eq!(at_once(None, 6), (6, 6), "no history");
    }
}
