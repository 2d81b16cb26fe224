//! Listing a suite's tests inside the run's image, through a worker: the
//! producer never talks to Docker. A `Discover` request goes on the jobs
//! queue with a reply-to; a worker runs the preset's listing command where
//! the run's tests would run and answers with what it printed (from its own
//! listings of the same image id when it has one).
//!
//! The producer keeps its last listing per image and command under
//! `$XDG_CACHE_HOME/testfleet/listings` (or `~/.cache/…`), with the image id
//! the worker reported: the next request names that id, and a worker whose
//! engine still has it answers "unchanged", so an unchanged image is listed
//! once.

use std::time::Duration;

use testfleet_common::broker::{self, BrokerError};
use testfleet_types::messages::{Body, Discover, Outcome};
use testfleet_types::now_ms;
use tracing::info;
use uuid::Uuid;

use crate::ids::output_tail;
use crate::presets::Preset;
use crate::settings::ProducerSettings;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("no worker listed the tests within {0:?}; are workers running for this image?")]
    NoAnswer(Duration),
    #[error("listing the tests in {image} failed ({how}); its output ends:\n{output}")]
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
    // (warnings on stderr) mixes in; on failure both are the output (`go
    // test` says on stdout why it could not run its test binary).
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        format!("{{ {command}; }} > \"$1\" 2> \"$1.err\" || {{ s=$?; cat \"$1\" \"$1.err\"; exit $s; }}"),
        "sh".into(),
        "{report}".into(),
    ];
    spec.runner_report = None;
    let kept = KeptListing::path(&spec).and_then(|path| KeptListing::read(&path));
    let request = Discover {
        request_id: Uuid::new_v4(),
        known_image_id: kept.as_ref().map(|k| k.image_id.clone()),
        spec,
        deadline_ms: now_ms().saturating_add(timeout.as_millis() as u64),
    };
    let keep_at = KeptListing::path(&request.spec);
    let mut brokers = settings.brokers.clone();
    let connection = broker::connect(&mut brokers, Some(settings.connect_timeout)).await?;
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
    broker::close(&connection, "listed").await;
    match answer? {
        None => Err(DiscoveryError::NoAnswer(timeout)),
        Some(Body::Listing(listing)) if listing.unchanged && kept.is_some() => {
            info!(image_id = ?listing.image_id, "the image is unchanged: reusing its listing");
            Ok(kept.expect("checked").listing)
        }
        Some(Body::Listing(listing)) if listing.outcome == Outcome::Passed => {
            info!(cached = listing.cached, image_id = ?listing.image_id, "tests listed");
            if let (Some(path), Some(image_id)) = (keep_at, listing.image_id.clone()) {
                KeptListing {
                    image_id,
                    listing: listing.listing.clone(),
                }
                .write(&path);
            }
            Ok(listing.listing)
        }
        Some(Body::Listing(listing)) => Err(DiscoveryError::Failed {
            image: settings.spec.image.clone(),
            how: match (listing.exit_code, listing.message) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(message)) => message,
                (None, None) => listing.outcome.as_str().to_owned(),
            },
            output: output_tail(&listing.output),
        }),
        Some(other) => Err(DiscoveryError::WrongAnswer(other.kind())),
    }
}

/// A listing kept on this machine, with the image id it was made from.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptListing {
    image_id: String,
    listing: String,
}

impl KeptListing {
    /// Where the listing of this image and command is kept: a name hashed
    /// from both, so any image name makes a valid file name.
    fn path(spec: &testfleet_types::messages::RunSpec) -> Option<std::path::PathBuf> {
        use std::hash::{Hash, Hasher};
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache"))
            })?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&spec.image, &spec.command, spec.executor).hash(&mut hasher);
        let name = format!("{:016x}.json", hasher.finish());
        Some(base.join("testfleet").join("listings").join(name))
    }

    fn read(path: &std::path::Path) -> Option<KeptListing> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Keeps the listing; a failure only costs a listing next time.
    fn write(&self, path: &std::path::Path) {
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| std::fs::write(path, serde_json::to_vec(self).unwrap_or_default()));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "could not keep the listing");
        }
    }
}
