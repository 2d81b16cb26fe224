//! Listing a suite's tests inside its image, for a producer that has no
//! Docker engine of its own (`--preset … --image …` without `--discover`):
//! the listing command runs as a job would, and its listing goes back to the
//! producer through the request's reply-to.
//!
//! A second run of an unchanged image is answered without a container: the
//! producer names the image id of the listing it kept, and a worker whose
//! engine has that id says so; a worker also keeps its own last listings by
//! image id and command. The cache sits
//! behind a mutex, as warm mode's pool does: a job task touches it for a few
//! instructions, and it decides nothing the service loop needs to know.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use testfleet_types::messages::{Discover, Job, Listing};

use crate::job::Observed;

/// Listings a worker keeps.
const KEPT: usize = 16;

/// The job a discovery runs as: one "test" whose command writes the listing.
pub fn job(request: &Discover) -> Job {
    Job::single(
        request.request_id,
        "(discovery)".into(),
        1,
        request.deadline_ms,
        request.spec.clone(),
    )
}

/// What a discovery's run says, as its answer.
pub fn listing(request: &Discover, observed: Observed, image_id: Option<String>) -> Listing {
    let (output, _) = observed
        .output
        .map(crate::capture::OutputCapture::finish)
        .unwrap_or_default();
    Listing {
        request_id: request.request_id,
        outcome: observed.ran.outcome,
        exit_code: observed.ran.exit_code,
        listing: String::from_utf8_lossy(&observed.report.unwrap_or_default()).into_owned(),
        output,
        message: observed.ran.message,
        image_id,
        cached: false,
        unchanged: false,
    }
}

/// The answer when the producer's listing is of this very image.
pub fn unchanged(request: &Discover, image_id: String) -> Listing {
    Listing {
        request_id: request.request_id,
        outcome: testfleet_types::messages::Outcome::Passed,
        exit_code: Some(0),
        listing: String::new(),
        output: String::new(),
        message: None,
        image_id: Some(image_id),
        cached: true,
        unchanged: true,
    }
}

/// Listings of images by id and command, the latest [`KEPT`].
#[derive(Clone, Default)]
pub struct Listings {
    kept: Arc<Mutex<VecDeque<(Key, Listing)>>>,
}

type Key = (String, Vec<String>);

impl Listings {
    /// The listing of `image_id` by `command`, answering `request`.
    pub fn get(&self, image_id: &str, request: &Discover) -> Option<Listing> {
        let kept = self.kept.lock().expect("the lock is never poisoned");
        kept.iter()
            .find(|((id, command), _)| id == image_id && *command == request.spec.command)
            .map(|(_, listing)| Listing {
                request_id: request.request_id,
                cached: true,
                ..listing.clone()
            })
    }

    /// Keeps a listing that succeeded.
    pub fn keep(&self, image_id: String, request: &Discover, listing: &Listing) {
        let mut kept = self.kept.lock().expect("the lock is never poisoned");
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(((image_id, request.spec.command.clone()), listing.clone()));
    }
}
