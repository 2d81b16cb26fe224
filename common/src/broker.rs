//! Connecting to RabbitMQ and the few operations every service needs on it.
//!
//! Reconnection is deliberately simple: a service that loses its connection drops
//! every channel and consumer, connects again through [`connect`] with backoff, and
//! re-declares the topology. Unacked deliveries of the dead connection are
//! redelivered by the broker, so nothing is lost in between.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use testfleet_types::codec::{decode, encode, WireError};
use testfleet_types::limits::{MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
use testfleet_types::messages::{Body, RunEvent};
use testfleet_types::parts::{self, Joined, Joiner};
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use crate::topology::{Topology, DIRECT_REPLY_TO};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
/// AMQP delivery mode 1: kept in memory; what best-effort events need.
const TRANSIENT: u8 = 1;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker at {url} unreachable for {waited:?}, giving up: {cause}")]
    Unreachable {
        url: String,
        waited: Duration,
        cause: lapin::Error,
    },
    /// The broker's error, in the message (no `source`, so that a chain
    /// printer does not say it twice).
    #[error("broker error: {0}")]
    Amqp(lapin::Error),
    #[error("the broker refused a message published to {routing_key:?} (nack or no route)")]
    NotConfirmed { routing_key: String },
    #[error("the channel carrying a delivery is gone; the broker will redeliver it")]
    ChannelGone,
    /// The broker neither acked nor nacked a publish in time; the session
    /// ends, and what waited on it is done again on the next one.
    #[error("the broker did not take and confirm what was published to {routing_key:?} within {waited:?}")]
    ConfirmTimedOut {
        routing_key: String,
        waited: Duration,
    },
    /// Refused before it reached the broker, which would close the channel.
    #[error("a {kind} message of {bytes} bytes is over the {max}-byte message bound")]
    TooBig {
        kind: String,
        bytes: usize,
        max: usize,
    },
    #[error(transparent)]
    TooBigForParts(#[from] testfleet_types::parts::TooBig),
    #[error("unreadable answer: {0}")]
    Unreadable(WireError),
    /// A queue exists with other arguments than this configuration gives it;
    /// reconnecting cannot fix that, so services stop with this message.
    #[error("{0}")]
    TopologyMismatch(String),
}

impl From<lapin::Error> for BrokerError {
    fn from(error: lapin::Error) -> Self {
        BrokerError::Amqp(error)
    }
}

impl From<WireError> for BrokerError {
    fn from(error: WireError) -> Self {
        BrokerError::Unreadable(error)
    }
}

impl BrokerError {
    /// Whether retrying cannot help: the service should stop and say why.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            BrokerError::TopologyMismatch(_) | BrokerError::Unreachable { .. }
        )
    }

    /// Whether the broker said the queue (or exchange) is not there; it
    /// closes the channel that asked, and that channel alone.
    pub fn is_not_found(&self) -> bool {
        match self {
            BrokerError::Amqp(error) => {
                protocol_message(error).is_some_and(|m| m.starts_with("NOT_FOUND"))
            }
            _ => false,
        }
    }
}

/// How long a publish waits for the broker's confirm. A confirm can fail to
/// come at all (a stream's or quorum queue's leader lost on a cluster node
/// with the message in flight): without a bound, what waits on it (a journal
/// commit, a verdict) would wait for ever on a connection that looks healthy.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing a connection may take: the broker's close-ok, or the
/// connection's end, whichever comes; past it the socket is dropped anyway.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Closes `connection` saying `reason`, waiting at most [`CLOSE_PATIENCE`]:
/// a close the broker never answers (a connection half gone) must not keep
/// a service from stopping.
pub async fn close(connection: &Connection, reason: &str) {
    let closed = tokio::time::timeout(CLOSE_PATIENCE, connection.close(200, reason.into())).await;
    if closed.is_err() {
        warn!(
            reason,
            "the broker did not answer the connection's close in time; dropping it"
        );
    }
}

/// Declares `topology` on `channel`, explaining a queue that exists with other
/// arguments (the broker's `PRECONDITION_FAILED - inequivalent arg`): which
/// setting disagrees, and how to make them agree.
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), BrokerError> {
    topology
        .declare(channel)
        .await
        .map_err(|error| match protocol_message(&error) {
            Some(message) if message.contains("inequivalent arg") => {
                BrokerError::TopologyMismatch(explain_mismatch(&message))
            }
            _ => BrokerError::from(error),
        })
}

/// The broker's own words, for an error it sent.
fn protocol_message(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_message().to_string()),
        _ => None,
    }
}

/// "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue
/// 'testfleet.jobs' in vhost '/': received …" as something a person can act on.
fn explain_mismatch(message: &str) -> String {
    let quoted: Vec<&str> = message.split('\'').skip(1).step_by(2).collect();
    let (argument, queue) = match quoted.as_slice() {
        [argument, queue, ..] => (*argument, *queue),
        _ => ("?", "?"),
    };
    let setting = match argument {
        "x-delivery-limit" => "`broker.delivery_limit`",
        "x-queue-type" | "x-dead-letter-exchange" | "x-dead-letter-routing-key" => {
            "this testfleet version's queue layout"
        }
        "x-max-length" | "x-message-ttl" | "x-expires" => "this testfleet version's queue bounds",
        _ => "this configuration",
    };
    format!(
        "queue `{queue}` already exists with another `{argument}` than {setting} gives it \
         (the broker said: {message}); use the value the queue was declared with, \
         or delete the queue once no run uses it (`rabbitmqctl delete_queue {queue}`)"
    )
}

/// Stands by until this connection holds `topology`'s aggregator lock,
/// trying every `poll`. `false` if asked to drain first.
pub async fn take_lock(
    connection: &Connection,
    topology: &Topology,
    poll: Duration,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<bool, BrokerError> {
    let mut said = false;
    loop {
        let channel = connection.create_channel().await?;
        match topology.declare_lock(&channel).await {
            Ok(()) => {
                let _ = channel.close(200, "lock taken".into()).await;
                if said {
                    info!("the leading aggregator is gone: taking over");
                }
                return Ok(true);
            }
            Err(error) if is_resource_locked(&error) => {
                if !said {
                    info!(lock = %topology.aggregator_lock, "another aggregator leads this prefix: standing by");
                    said = true;
                }
            }
            Err(error) => return Err(error.into()),
        }
        if shutdown.is_draining() {
            return Ok(false);
        }
        shutdown.sleep(poll).await;
    }
}

fn is_resource_locked(error: &lapin::Error) -> bool {
    protocol_message(error).is_some_and(|m| m.starts_with("RESOURCE_LOCKED"))
}

/// Pauses between sessions with the broker: none after a session that lasted,
/// doubling (up to 30 s) after each that ended at once, so that a refusal that
/// repeats (a message the broker rejects, a declaration it refuses) is never
/// retried in a tight loop.
#[derive(Debug)]
pub struct SessionBackoff {
    next: Duration,
}

impl Default for SessionBackoff {
    fn default() -> Self {
        SessionBackoff {
            next: SESSION_FIRST_BACKOFF,
        }
    }
}

/// A session that lasted this long was healthy: the next failure starts over.
const SESSION_HEALTHY: Duration = Duration::from_secs(30);
const SESSION_FIRST_BACKOFF: Duration = Duration::from_millis(500);
const SESSION_MAX_BACKOFF: Duration = Duration::from_secs(30);

impl SessionBackoff {
    /// How long to pause after a session that lasted `lasted`.
    pub fn after(&mut self, lasted: Duration) -> Duration {
        if lasted >= SESSION_HEALTHY {
            self.next = SESSION_FIRST_BACKOFF;
            return Duration::ZERO;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(SESSION_MAX_BACKOFF);
        pause
    }
}

/// Hides the password of a broker URL so it can be logged or reported.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // Userinfo lives in the authority only: an `@` in the path or query is not one.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// The broker nodes a service may join (`broker.url`: URLs separated by
/// commas, the nodes of one cluster), and the one it joined last, where the
/// next connect starts: a service stays on its node until that node fails.
/// The first node tried is picked at random, so that a fleet's connections
/// spread over the cluster.
#[derive(Debug, Clone)]
pub struct Brokers {
    urls: Vec<String>,
    current: usize,
    /// Whether the next [`connect`] starts with the node after `current`.
    move_on: bool,
}

impl Brokers {
    /// The nodes of a `broker.url` list (validated by the configuration).
    pub fn new(list: &str) -> Self {
        let urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let current = (uuid::Uuid::new_v4().as_u128() % urls.len().max(1) as u128) as usize;
        Brokers {
            urls,
            current,
            move_on: false,
        }
    }

    /// Makes the next [`connect`] try the node after the one joined last
    /// first, and that one last: a session that failed on a node can fail
    /// there again (the aggregator replays its journal from that node's
    /// copy of the stream, which may lag), and every node serves as well.
    pub fn move_on(&mut self) {
        self.move_on = true;
    }

    /// The nodes' indexes in the order the next [`connect`] tries them.
    fn order(&mut self) -> Vec<usize> {
        let first = self.current + usize::from(std::mem::take(&mut self.move_on));
        let count = self.urls.len();
        (0..count).map(|step| (first + step) % count).collect()
    }

    /// The broker user of the node joined last, as the broker knows it
    /// (`guest` when the URL names none).
    pub fn user(&self) -> String {
        self.urls
            .get(self.current)
            .and_then(|url| url.parse::<lapin::uri::AMQPUri>().ok())
            .map(|uri| uri.authority.userinfo.username)
            .unwrap_or_else(|| "guest".into())
    }

    /// Every node, passwords hidden, for messages.
    pub fn describe(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How long one connection attempt to one node may take: a node cut off
/// answers nothing, and the next one may.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to one of `brokers`' nodes: the last one joined first, then each
/// of the others in turn; after a round where none answered, it waits (with
/// exponential backoff) and goes round again. Gives up after `give_up_after`
/// (the last attempt made at that time, not one backoff before it); with
/// `None` it keeps trying until it connects or is dropped, which is what a
/// service does once it has been connected (a broker out of reach for a
/// while is not fatal).
pub async fn connect(
    brokers: &mut Brokers,
    give_up_after: Option<Duration>,
) -> Result<Connection, BrokerError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let order = brokers.order();
        for (step, &at) in order.iter().enumerate() {
            let url = &brokers.urls[at];
            let error = match attempt(url).await {
                Ok(connection) => {
                    if at != brokers.current {
                        info!(broker = %redact(url), previous = %redact(&brokers.urls[brokers.current]), "joined another broker node");
                    }
                    info!(broker = %redact(url), "connected to the broker");
                    brokers.current = at;
                    return Ok(connection);
                }
                Err(error) => error,
            };
            let remaining = give_up_after.map(|limit| limit.saturating_sub(started.elapsed()));
            if remaining.is_some_and(|r| r.is_zero()) {
                return Err(BrokerError::Unreachable {
                    url: brokers.describe(),
                    waited: started.elapsed(),
                    cause: error,
                });
            }
            if let Some(&next) = order.get(step + 1) {
                warn!(broker = %redact(url), %error, next = %redact(&brokers.urls[next]), "broker unreachable, trying the next node");
                continue;
            }
            let retry_in = remaining.map_or(backoff, |r| backoff.min(r));
            warn!(broker = %redact(url), %error, ?retry_in, "broker unreachable, retrying");
            sleep(retry_in).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// One connection attempt, bounded by [`ATTEMPT_TIMEOUT`].
async fn attempt(url: &str) -> Result<Connection, lapin::Error> {
    let connect = Connection::connect(url, ConnectionProperties::default());
    match tokio::time::timeout(ATTEMPT_TIMEOUT, connect).await {
        Ok(connected) => connected,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        ))),
    }
}

/// A channel in publisher-confirm mode.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes a persistent message that must reach a queue, without waiting for
/// its confirm (see [`publish_all`]).
pub async fn publish_unconfirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    send(channel, exchange, routing_key, body, true).await
}

/// Publishes a persistent message that may reach no queue (nobody listening is
/// fine), in parts if it is too big for one (`testfleet_types::parts`), and waits for
/// the broker's confirms.
///
/// Takes the body by value: a verdict carries a whole run's report, which is
/// freed once encoded, before the broker client makes its copy of the bytes.
/// With `tokens`, every message carries them in [`VERDICT_TOKEN_HEADER`].
pub async fn broadcast(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: Body,
    tokens: &[uuid::Uuid],
) -> Result<(), BrokerError> {
    let publishing = broadcast_unbounded(channel, exchange, routing_key, body, tokens);
    within(CONFIRM_TIMEOUT, routing_key, publishing).await
}

async fn broadcast_unbounded(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: Body,
    tokens: &[uuid::Uuid],
) -> Result<(), BrokerError> {
    let kind = body.kind();
    let payloads = parts::split(&body)?;
    drop(body);
    let mut properties = properties(kind, PERSISTENT);
    if !tokens.is_empty() {
        let joined: Vec<String> = tokens.iter().map(uuid::Uuid::to_string).collect();
        let mut headers = FieldTable::default();
        headers.insert(
            VERDICT_TOKEN_HEADER.into(),
            AMQPValue::LongString(joined.join(",").into()),
        );
        properties = properties.with_headers(headers);
    }
    let mut confirms = Vec::with_capacity(payloads.len());
    for payload in &payloads {
        check_size(kind, payload)?;
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                payload,
                properties.clone(),
            )
            .await?;
        confirms.push(confirm);
    }
    drop(payloads);
    for confirm in confirms {
        if !confirmed(confirm, routing_key).await?.is_ack() {
            return Err(BrokerError::NotConfirmed {
                routing_key: routing_key.to_owned(),
            });
        }
    }
    Ok(())
}

/// Publishes a persistent message that must reach a queue, in parts if it is
/// too big for one, and waits for the broker's confirms: a run's
/// announcement, which grows with the run's ids. Each message names its
/// sender (`user`, the broker user this connection logged in as, which the
/// broker checks), so that its receiver joins parts per sender.
pub async fn publish_parted(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
    user: &str,
) -> Result<(), BrokerError> {
    let mut confirms = Vec::new();
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    for payload in parts::split(body)? {
        check_size(body.kind(), &payload)?;
        let properties = properties(body.kind(), PERSISTENT).with_user_id(user.into());
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                &payload,
                properties,
            )
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        check_confirm(confirmed(confirm, routing_key).await?, routing_key)?;
    }
    Ok(())
}

/// Publishes a transient message that may reach no queue, and does not wait
/// for the broker's confirm: for run events and queue notices, which are
/// information, not state.
/// A failure is logged and swallowed, so a lost event never breaks a run; a dead
/// channel shows up at the caller's next confirmed publish anyway.
///
/// On a confirm channel the confirm is still awaited, in a task of its own:
/// lapin keeps a confirm that is dropped unresolved until `wait_for_confirms`,
/// which nothing here calls, so dropping them would grow a long run's
/// aggregator and workers by every event (docs/BENCHMARKS.md has the figure).
pub async fn publish_event(channel: &Channel, exchange: &str, routing_key: &str, body: &Body) {
    match publish_with(channel, exchange, routing_key, body, false, TRANSIENT).await {
        Ok(confirm) => {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await;
            });
        }
        Err(error) => {
            warn!(%error, routing_key, "could not publish a run event; going on without it")
        }
    }
}

/// Publishes run events as [`publish_event`] does, one message per run (a
/// run's events share a routing key, `Topology::events_key`): a lone event as
/// `Event`, several as one `Events`.
pub async fn publish_run_events(channel: &Channel, exchange: &str, events: Vec<RunEvent>) {
    let mut by_run: Vec<(uuid::Uuid, Vec<RunEvent>)> = Vec::new();
    for event in events {
        match by_run.iter_mut().find(|(run, _)| *run == event.run_id) {
            Some((_, of_run)) => of_run.push(event),
            None => by_run.push((event.run_id, vec![event])),
        }
    }
    for (run_id, of_run) in by_run {
        let key = Topology::events_key(&run_id.to_string());
        for mut batch in batches_within(of_run, MAX_BATCH_BYTES, event_size) {
            let body = match batch.len() {
                1 => Body::Event(batch.pop().expect("one event")),
                _ => Body::Events(batch),
            };
            publish_event(channel, exchange, &key, &body).await;
        }
    }
}

/// An upper bound of an event's encoded size: its strings plus room for the
/// fixed fields.
fn event_size(event: &RunEvent) -> usize {
    use testfleet_types::messages::RunEventKind::*;
    let strings = match &event.kind {
        TestStarted {
            test_id, worker_id, ..
        } => test_id.len() + worker_id.len(),
        TestFinished {
            test_id, worker_id, ..
        } => test_id.len() + worker_id.as_ref().map_or(0, String::len),
        TestRetried { test_id, .. } => test_id.len(),
        RoundClosed { .. } => 0,
    };
    strings + 192
}

/// `items` in order, cut into batches whose estimated sizes add up to at most
/// `max_bytes` (an item bigger than that alone goes in a batch of its own).
pub fn batches_within<T>(
    items: Vec<T>,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        if !batch.is_empty() && bytes + item_bytes > max_bytes {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += item_bytes;
        batch.push(item);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
    mandatory: bool,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    publish_with(channel, exchange, routing_key, body, mandatory, PERSISTENT).await
}

async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
    mandatory: bool,
    delivery_mode: u8,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    let payload = encode(body);
    publish_payload(
        channel,
        exchange,
        routing_key,
        body.kind(),
        &payload,
        mandatory,
        delivery_mode,
    )
    .await
}

async fn publish_payload(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    kind: &str,
    payload: &[u8],
    mandatory: bool,
    delivery_mode: u8,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    check_size(kind, payload)?;
    let options = BasicPublishOptions {
        mandatory,
        ..Default::default()
    };
    Ok(channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties(kind, delivery_mode),
        )
        .await?)
}

/// The header a verdict carries its run's secret tokens in, separated by
/// commas: the announcement's (see `RunAnnounce::verdict_token`) and those
/// of producers that resumed the run.
pub const VERDICT_TOKEN_HEADER: &str = "x-testfleet-verdict-token";

/// Whether a delivery carries `token` among its verdict tokens.
pub fn carries_verdict_token(delivery: &Delivery, token: uuid::Uuid) -> bool {
    let Some(headers) = delivery.properties.headers().as_ref() else {
        return false;
    };
    match headers.inner().get(VERDICT_TOKEN_HEADER) {
        Some(AMQPValue::LongString(tokens)) => tokens
            .to_string()
            .split(',')
            .any(|listed| listed.parse() == Ok(token)),
        _ => false,
    }
}

/// What every testfleet message says of itself.
fn properties(kind: &str, delivery_mode: u8) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(delivery_mode)
        .with_content_type("application/msgpack".into())
        .with_type(kind.into())
}

/// Refuses a payload over the message bound before the broker sees it: the
/// broker would close the channel, and the sender would retry in a loop.
fn check_size(kind: &str, payload: &[u8]) -> Result<(), BrokerError> {
    if payload.len() <= MAX_MESSAGE_BYTES {
        return Ok(());
    }
    Err(BrokerError::TooBig {
        kind: kind.to_owned(),
        bytes: payload.len(),
        max: MAX_MESSAGE_BYTES,
    })
}

/// Publishes a persistent message and waits until the broker has taken it.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
) -> Result<(), BrokerError> {
    let confirm = publish_unconfirmed(channel, exchange, routing_key, body).await?;
    check_confirm(confirmed(confirm, routing_key).await?, routing_key)
}

/// The broker's answer to a publish, waited for at most [`CONFIRM_TIMEOUT`].
pub async fn confirmed(
    confirm: lapin::PublisherConfirm,
    routing_key: &str,
) -> Result<lapin::Confirmation, BrokerError> {
    confirmed_within(confirm, routing_key, CONFIRM_TIMEOUT).await
}

async fn confirmed_within(
    confirm: impl Future<Output = lapin::Result<lapin::Confirmation>>,
    routing_key: &str,
    waited: Duration,
) -> Result<lapin::Confirmation, BrokerError> {
    within(waited, routing_key, confirm).await
}

/// `work` (publishing to `routing_key`, up to its confirms) if it ends
/// within `waited`, else [`BrokerError::ConfirmTimedOut`]. A broker that
/// stops reading a connection (a channel blocked by its credit flow) holds
/// the publish itself, not only its confirm.
async fn within<T, E>(
    waited: Duration,
    routing_key: &str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, BrokerError>
where
    BrokerError: From<E>,
{
    match tokio::time::timeout(waited, work).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(BrokerError::ConfirmTimedOut {
            routing_key: routing_key.to_owned(),
            waited,
        }),
    }
}

/// Fails unless the broker acked the message and routed it to a queue.
pub fn check_confirm(
    confirmation: lapin::Confirmation,
    routing_key: &str,
) -> Result<(), BrokerError> {
    match routed(confirmation, routing_key)? {
        Routed::ToQueue => Ok(()),
        Routed::NoQueue => Err(BrokerError::NotConfirmed {
            routing_key: routing_key.to_owned(),
        }),
    }
}

/// Where a confirmed mandatory publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    ToQueue,
    /// The broker returned it: no queue by that name (a run's queue deleted
    /// at its end, say).
    NoQueue,
}

/// What a confirm says of a mandatory publish: routed, returned, or (a
/// nack) not taken at all, which is an error.
pub fn routed(confirmation: lapin::Confirmation, routing_key: &str) -> Result<Routed, BrokerError> {
    if !confirmation.is_ack() {
        return Err(BrokerError::NotConfirmed {
            routing_key: routing_key.to_owned(),
        });
    }
    match confirmation.take_message() {
        None => Ok(Routed::ToQueue),
        Some(_) => Ok(Routed::NoQueue),
    }
}

/// Publishes many messages with confirms pipelined in windows of `window`.
///
/// One round trip per window instead of one per message: this is what keeps a run
/// of many thousand jobs from spending its time waiting on the broker.
pub async fn publish_all(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    bodies: impl IntoIterator<Item = Body>,
    window: usize,
) -> Result<usize, BrokerError> {
    let mut pending = Vec::with_capacity(window);
    let mut published = 0;
    for body in bodies {
        pending.push(publish_unconfirmed(channel, exchange, routing_key, &body).await?);
        if pending.len() >= window {
            published += await_confirms(&mut pending, routing_key).await?;
        }
    }
    published += await_confirms(&mut pending, routing_key).await?;
    Ok(published)
}

/// Publishes encoded messages of one `kind` (already within their bound),
/// persistent and mandatory, with their confirms pipelined: for records a
/// service keeps in a stream of its own.
pub async fn publish_encoded(
    channel: &Channel,
    queue: &str,
    kind: &str,
    payloads: &[Vec<u8>],
) -> Result<(), BrokerError> {
    let publishing = publish_encoded_unbounded(channel, queue, kind, payloads);
    within(CONFIRM_TIMEOUT, queue, publishing).await
}

async fn publish_encoded_unbounded(
    channel: &Channel,
    queue: &str,
    kind: &str,
    payloads: &[Vec<u8>],
) -> Result<(), BrokerError> {
    let mut pending = Vec::with_capacity(payloads.len());
    for payload in payloads {
        pending.push(publish_payload(channel, "", queue, kind, payload, true, PERSISTENT).await?);
    }
    await_confirms(&mut pending, queue).await.map(|_| ())
}

async fn await_confirms(
    pending: &mut Vec<lapin::PublisherConfirm>,
    routing_key: &str,
) -> Result<usize, BrokerError> {
    let count = pending.len();
    for confirm in pending.drain(..) {
        check_confirm(confirmed(confirm, routing_key).await?, routing_key)?;
    }
    Ok(count)
}

/// Sends `body` to `queue` as a request and waits up to `timeout` for the answer,
/// through RabbitMQ's direct reply-to: no reply queue to declare or clean up.
/// An answer too big for one message comes in parts, joined here.
/// `Ok(None)` when no answer came in time. The request expires with the timeout,
/// so an answerer that starts later does not work for nobody.
pub async fn request(
    connection: &Connection,
    queue: &str,
    body: &Body,
    timeout: Duration,
) -> Result<Option<Body>, BrokerError> {
    let channel = connection.create_channel().await?;
    // Direct reply-to: consume the pseudo-queue, without acks, before publishing.
    let mut replies = channel
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let correlation = uuid::Uuid::new_v4().to_string();
    let properties = BasicProperties::default()
        .with_content_type("application/msgpack".into())
        .with_type(body.kind().into())
        .with_reply_to(DIRECT_REPLY_TO.into())
        .with_correlation_id(correlation.as_str().into())
        .with_expiration(timeout.as_millis().to_string().as_str().into());
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &encode(body),
            properties,
        )
        .await?;
    let answer = tokio::time::timeout(timeout, async {
        let mut joiner = Joiner::default();
        while let Some(delivery) = replies.next().await {
            let delivery = delivery?;
            let matches = delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|id| id.as_str() == correlation);
            if !matches {
                continue;
            }
            match decode(&delivery.data) {
                Ok(Body::Part(part)) => match joiner.add(part, ()) {
                    Joined::Incomplete => {}
                    Joined::Whole { body, .. } => return Ok(Some((*body)?)),
                    Joined::Refused { reason, .. } => {
                        return Err(BrokerError::Unreadable(WireError::Malformed(reason)))
                    }
                },
                Ok(body) => return Ok(Some(body)),
                Err(error) => return Err(BrokerError::Unreadable(error)),
            }
        }
        Err(BrokerError::ChannelGone)
    })
    .await
    .unwrap_or(Ok(None));
    let _ = channel.close(200, "request done".into()).await;
    answer
}

/// Answers a [`request`]: publishes `body` (in parts if it is too big for one)
/// to the delivery's reply-to address with its correlation id. Not persistent
/// and not confirmed: the requester waits briefly and falls back if the answer
/// is lost. `false` if the delivery asked for no answer.
pub async fn reply(
    channel: &Channel,
    delivery: &Delivery,
    body: &Body,
) -> Result<bool, BrokerError> {
    let Some(reply_to) = delivery.properties.reply_to().clone() else {
        return Ok(false);
    };
    let mut properties = BasicProperties::default()
        .with_content_type("application/msgpack".into())
        .with_type(body.kind().into());
    if let Some(correlation) = delivery.properties.correlation_id().clone() {
        properties = properties.with_correlation_id(correlation);
    }
    for payload in parts::split(body)? {
        check_size(body.kind(), &payload)?;
        channel
            .basic_publish(
                "".into(),
                reply_to.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                properties.clone(),
            )
            .await?;
    }
    Ok(true)
}

/// Header naming why a message was parked by hand, and the queue it came from.
pub const PARKED_REASON_HEADER: &str = "x-testfleet-parked-reason";
pub const PARKED_FROM_HEADER: &str = "x-testfleet-parked-from";

/// Moves an unreadable delivery of `queue` to the parked queue, for queues whose
/// own dead-lettering cannot be used (the history queue drops by TTL, a verdict
/// queue by length): a confirmed copy with the reason in a header, then the ack,
/// so the message is never lost in between.
pub async fn park(
    publish: &Channel,
    topology: &Topology,
    queue: &str,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), BrokerError> {
    park_payload(publish, topology, queue, &delivery.data, reason).await?;
    ack(delivery).await
}

/// Parks `body` (part of what a delivery of `queue` brought) with the reason,
/// confirmed; the caller acks the delivery once the rest of it is used.
pub async fn park_body(
    publish: &Channel,
    topology: &Topology,
    queue: &str,
    body: &Body,
    reason: &str,
) -> Result<(), BrokerError> {
    for payload in parts::split(body)? {
        park_payload(publish, topology, queue, &payload, reason).await?;
    }
    Ok(())
}

async fn park_payload(
    publish: &Channel,
    topology: &Topology,
    queue: &str,
    payload: &[u8],
    reason: &str,
) -> Result<(), BrokerError> {
    let (exchange, key) = topology.parked_route();
    let mut headers = FieldTable::default();
    headers.insert(
        PARKED_REASON_HEADER.into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        PARKED_FROM_HEADER.into(),
        AMQPValue::LongString(queue.into()),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = publish
        .basic_publish(exchange.into(), key.into(), options, payload, properties)
        .await?;
    check_confirm(confirmed(confirm, key).await?, key)
}

/// How many messages `queue` holds, or `None` if it does not exist; asked on
/// a channel of its own, which the broker closes when the queue is absent.
pub async fn message_count(
    connection: &Connection,
    queue: &str,
) -> Result<Option<u32>, BrokerError> {
    let channel = connection.create_channel().await?;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(declared) => {
            let _ = channel.close(200, "counted".into()).await;
            Ok(Some(declared.message_count()))
        }
        Err(error) if protocol_message(&error).is_some_and(|m| m.starts_with("NOT_FOUND")) => {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// Takes one message from `queue`, to ack or nack later; `None` when empty.
pub async fn get(channel: &Channel, queue: &str) -> Result<Option<Delivery>, BrokerError> {
    let got = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await?;
    Ok(got.map(|message| message.delivery))
}

/// Acks a delivery, treating a dead channel as an error (lapin returns `Ok(false)`).
pub async fn ack(delivery: &Delivery) -> Result<(), BrokerError> {
    match delivery.ack(BasicAckOptions::default()).await? {
        true => Ok(()),
        false => Err(BrokerError::ChannelGone),
    }
}

/// Gives a delivery back: requeued for another consumer, or dead-lettered.
pub async fn nack(delivery: &Delivery, requeue: bool) -> Result<(), BrokerError> {
    let options = BasicNackOptions {
        requeue,
        ..Default::default()
    };
    match delivery.nack(options).await? {
        true => Ok(()),
        false => Err(BrokerError::ChannelGone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a failed session the next connection tries the next node
    /// first and the node it left last; otherwise it starts where it was.
    #[test]
    fn a_failed_session_moves_on_to_the_next_node() {
        let mut brokers = Brokers::new("amqp://a,amqp://b,amqp://c");
        brokers.current = 2;
        assert_eq!(brokers.order(), [2, 0, 1]);
        brokers.move_on();
        assert_eq!(brokers.order(), [0, 1, 2]);
        assert_eq!(brokers.order(), [2, 0, 1], "once, not for ever");
        let mut single = Brokers::new("amqp://a");
        single.move_on();
        assert_eq!(single.order(), [0]);
    }

    /// A confirm that never comes ends the wait with an error that names
    /// the queue, so the session ends instead of hanging (a journal commit
    /// or a verdict would otherwise wait for ever).
    #[tokio::test]
    async fn a_confirm_that_never_comes_is_an_error_in_time() {
        let never = std::future::pending();
        let waited = Duration::from_millis(20);
        let bounded = confirmed_within(never, "it.journal", waited);
        let error = tokio::time::timeout(Duration::from_secs(5), bounded)
            .await
            .expect("the wait for a confirm is bounded")
            .unwrap_err();
        assert!(
            matches!(error, BrokerError::ConfirmTimedOut { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("it.journal"), "{error}");
        assert!(!error.is_fatal(), "the session reconnects");
        let acked = std::future::ready(Ok(lapin::Confirmation::Ack(None)));
        let answer = confirmed_within(acked, "it.journal", waited).await.unwrap();
        assert!(answer.is_ack());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqps://fleet:s3cret@rabbit:5671/%2f"),
            "amqps://fleet:***@rabbit:5671/%2f"
        );
        assert_eq!(
            redact("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://user@host/"), "amqp://user@host/");
        assert_eq!(
            redact("amqp://host:5672/%2f?x=a:b@c"),
            "amqp://host:5672/%2f?x=a:b@c",
            "an @ in the query is not userinfo"
        );
        assert_eq!(
            redact("amqp://u:p@ss@host/?heartbeat=5"),
            "amqp://u:***@host/?heartbeat=5",
            "the last @ of the authority ends the userinfo"
        );
    }
}
