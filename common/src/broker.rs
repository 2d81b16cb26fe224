//! Connecting to RabbitMQ and the few operations every service needs on it.
//!
//! Reconnection is deliberately simple: a service that loses its connection drops
//! every channel and consumer, connects again through [`connect`] with backoff, and
//! re-declares the topology. Unacked deliveries of the dead connection are
//! redelivered by the broker, so nothing is lost in between.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use crate::wire::{encode, Body};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker at {url} unreachable for {waited:?}, giving up: {source}")]
    Unreachable {
        url: String,
        waited: Duration,
        #[source]
        source: lapin::Error,
    },
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused a message published to {routing_key:?} (nack or no route)")]
    NotConfirmed { routing_key: String },
    #[error("the channel carrying a delivery is gone; the broker will redeliver it")]
    ChannelGone,
}

/// Hides the password of a broker URL so it can be logged or reported.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Connects, retrying with exponential backoff until `give_up_after` has passed.
pub async fn connect(url: &str, give_up_after: Duration) -> Result<Connection, BrokerError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(connection) => {
                info!(broker = %redact(url), "connected to the broker");
                return Ok(connection);
            }
            Err(error) if started.elapsed() + backoff <= give_up_after => {
                warn!(broker = %redact(url), %error, retry_in = ?backoff, "broker unreachable, retrying");
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(source) => {
                return Err(BrokerError::Unreachable {
                    url: redact(url),
                    waited: started.elapsed(),
                    source,
                })
            }
        }
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
/// fine), and waits for the broker's confirm.
pub async fn broadcast(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
) -> Result<(), BrokerError> {
    let confirm = send(channel, exchange, routing_key, body, false).await?;
    match confirm.await? {
        confirmation if confirmation.is_ack() => Ok(()),
        _ => Err(BrokerError::NotConfirmed {
            routing_key: routing_key.to_owned(),
        }),
    }
}

async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
    mandatory: bool,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/msgpack".into())
        .with_type(body.kind().into());
    let options = BasicPublishOptions {
        mandatory,
        ..Default::default()
    };
    Ok(channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            &encode(body),
            properties,
        )
        .await?)
}

/// Publishes a persistent message and waits until the broker has taken it.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &Body,
) -> Result<(), BrokerError> {
    let confirm = publish_unconfirmed(channel, exchange, routing_key, body).await?;
    check_confirm(confirm.await?, routing_key)
}

/// Fails unless the broker acked the message and routed it to a queue.
pub fn check_confirm(
    confirmation: lapin::Confirmation,
    routing_key: &str,
) -> Result<(), BrokerError> {
    if confirmation.is_ack() && confirmation.take_message().is_none() {
        Ok(())
    } else {
        Err(BrokerError::NotConfirmed {
            routing_key: routing_key.to_owned(),
        })
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

async fn await_confirms(
    pending: &mut Vec<lapin::PublisherConfirm>,
    routing_key: &str,
) -> Result<usize, BrokerError> {
    let count = pending.len();
    for confirm in pending.drain(..) {
        check_confirm(confirm.await?, routing_key)?;
    }
    Ok(count)
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
    }
}
