//! Listing a suite's tests inside the run's image, through a worker: the
//! producer never talks to Docker. A `Discover` request goes on the jobs
//! queue with a reply-to; a worker runs the preset's listing command where
//! the run's tests would run and answers with what it printed (from its own
//! listings of the same image id when it has one).

use std::time::Duration;

use testfleet_common::broker::{self, BrokerError};
use testfleet_common::now_ms;
use testfleet_common::wire::{Body, Discover, Outcome};
use tracing::info;
use uuid::Uuid;

use crate::presets::Preset;
use crate::submit::ProducerSettings;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("no worker listed the tests within {0:?}; are workers running for this image?")]
    NoAnswer(Duration),
    #[error("listing the tests in {image} failed ({how}): {output}")]
    Failed {
        image: String,
        how: String,
        output: String,
    },
    #[error("a worker answered the discovery with a {0} message")]
    WrongAnswer(&'static str),
}

/// The preset's listing, as printed inside the run's image by a worker.
pub async fn list_in_image(
    settings: &ProducerSettings,
    preset: Preset,
    timeout: Duration,
) -> Result<String, DiscoveryError> {
    let command = preset.command().unwrap_or_default();
    let mut spec = settings.spec.clone();
    // The listing goes to a file, so that nothing the runner prints around it
    // (warnings on stderr) mixes in; on failure its stderr is the output.
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        format!("{{ {command}; }} > \"$1\" 2> \"$1.err\" || {{ s=$?; cat \"$1.err\"; exit $s; }}"),
        "sh".into(),
        "{report}".into(),
    ];
    spec.runner_report = None;
    let request = Discover {
        request_id: Uuid::new_v4(),
        spec,
        deadline_ms: now_ms().saturating_add(timeout.as_millis() as u64),
    };
    let connection = broker::connect(&settings.broker_url, settings.connect_timeout).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(BrokerError::from)?;
    broker::declare(&channel, &settings.topology).await?;
    let _ = channel.close(200, "declared".into()).await;
    info!(image = %settings.spec.image, %preset, "listing the tests in the image");
    let answer = broker::request(
        &connection,
        &settings.topology.jobs,
        &Body::Discover(request),
        timeout,
    )
    .await;
    let _ = connection.close(200, "listed".into()).await;
    match answer? {
        None => Err(DiscoveryError::NoAnswer(timeout)),
        Some(Body::Listing(listing)) if listing.outcome == Outcome::Passed => {
            info!(cached = listing.cached, image_id = ?listing.image_id, "tests listed");
            Ok(listing.listing)
        }
        Some(Body::Listing(listing)) => Err(DiscoveryError::Failed {
            image: settings.spec.image.clone(),
            how: match (listing.exit_code, listing.message) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(message)) => message,
                (None, None) => listing.outcome.as_str().to_owned(),
            },
            output: listing
                .output
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | "),
        }),
        Some(other) => Err(DiscoveryError::WrongAnswer(other.kind())),
    }
}
