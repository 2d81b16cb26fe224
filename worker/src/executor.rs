//! The executors a worker runs jobs with, chosen per job by its run spec.
//!
//! An enum rather than a trait object: there are two executors, each with its own
//! needs (Docker's engine health, leftovers and sweeps), and the service loop
//! matches on them where they differ.

use std::time::Duration;

use testfleet_common::limits::MAX_MESSAGE_TEXT_BYTES;
use testfleet_common::now_ms;
use testfleet_common::wire::{ExecutorKind, Job, Outcome, TestResult};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capture::OutputCapture;

use crate::docker::DockerExecutor;
use crate::process::ProcessExecutor;

/// Why a job could not be run here and must go back to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Requeue {
    #[error("docker engine unreachable: {0}")]
    EngineUnreachable(#[source] bollard::errors::Error),
    #[error("the worker is shutting down")]
    Interrupted,
}

/// A job's result, and what is left to do after its job is acked.
pub struct Finished {
    pub result: TestResult,
    pub cleanup: Option<Cleanup>,
}

impl From<TestResult> for Finished {
    fn from(result: TestResult) -> Self {
        Finished {
            result,
            cleanup: None,
        }
    }
}

/// Work kept off a job's critical path: it runs after the ack, in the job's own
/// task, which the service loop still awaits (so a draining worker finishes it).
pub enum Cleanup {
    /// Remove a passed test's container.
    Container(DockerExecutor, String),
}

impl Cleanup {
    pub async fn run(self) {
        match self {
            Cleanup::Container(docker, container) => {
                docker.remove(&container).await;
            }
        }
    }
}

/// One way of running a job.
#[derive(Clone)]
pub enum Executor {
    Docker(DockerExecutor),
    Process(ProcessExecutor),
}

impl Executor {
    pub fn kind(&self) -> ExecutorKind {
        match self {
            Executor::Docker(_) => ExecutorKind::Docker,
            Executor::Process(_) => ExecutorKind::Process,
        }
    }

    async fn run(&self, job: &Job, interrupt: &CancellationToken) -> Result<Finished, Requeue> {
        match self {
            Executor::Docker(docker) => docker.run(job, interrupt).await,
            Executor::Process(process) => process.run(job, interrupt).await.map(Finished::from),
        }
    }
}

/// The executors this worker was started with.
#[derive(Clone)]
pub struct Executors {
    worker_id: String,
    enabled: Vec<Executor>,
}

impl Executors {
    pub fn new(worker_id: String, enabled: Vec<Executor>) -> Self {
        Executors { worker_id, enabled }
    }

    pub fn docker(&self) -> Option<&DockerExecutor> {
        self.enabled.iter().find_map(|e| match e {
            Executor::Docker(docker) => Some(docker),
            Executor::Process(_) => None,
        })
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|e| e.kind().as_str()).collect()
    }

    /// Runs `job` with the executor its spec names. A job for an executor this
    /// worker lacks is an `Error` result naming the worker: the aggregator counts
    /// it as an infrastructure error and retries it, instead of the job bouncing
    /// between workers until the broker dead-letters it.
    pub async fn run(&self, job: &Job, interrupt: &CancellationToken) -> Result<Finished, Requeue> {
        let wanted = job.spec.executor;
        match self.enabled.iter().find(|e| e.kind() == wanted) {
            Some(executor) => executor.run(job, interrupt).await,
            None => Ok(self.refuse(job, wanted).into()),
        }
    }

    fn refuse(&self, job: &Job, wanted: ExecutorKind) -> TestResult {
        let message = format!(
            "worker {} does not run {} jobs (its executors: {}); start workers with `--executors {}`",
            self.worker_id,
            wanted.as_str(),
            self.kinds().join(","),
            wanted.as_str(),
        );
        let clock = tokio::time::Instant::now();
        error_outcome(message).into_result(job, &self.worker_id, None, now_ms(), clock)
    }
}

/// How a test ended, before it becomes a result: what both executors report.
pub(crate) struct Ran {
    pub outcome: Outcome,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
}

impl Ran {
    /// The result of `job`'s attempt on `worker_id`, started at `started_at_ms`
    /// (wall clock) and timed by `clock` (monotonic).
    pub fn into_result(
        self,
        job: &Job,
        worker_id: &str,
        capture: Option<OutputCapture>,
        started_at_ms: u64,
        clock: tokio::time::Instant,
    ) -> TestResult {
        let (output, output_truncated) = capture.map(OutputCapture::finish).unwrap_or_default();
        TestResult {
            run_id: job.run_id,
            test_id: job.test_id.clone(),
            attempt: job.attempt,
            outcome: self.outcome,
            exit_code: self.exit_code,
            duration_ms: clock.elapsed().as_millis() as u64,
            worker_id: worker_id.to_owned(),
            started_at_ms,
            finished_at_ms: now_ms(),
            output,
            output_truncated,
            message: self.message.map(|m| within(m, MAX_MESSAGE_TEXT_BYTES)),
            published_at_ms: job.published_at_ms,
        }
    }
}

/// `text` cut at a character boundary to at most `max` bytes: an engine's
/// error can quote anything, and a result must stay within its bounds.
fn within(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
}

pub(crate) fn timed_out(timeout: Duration) -> Ran {
    Ran {
        outcome: Outcome::TimedOut,
        exit_code: None,
        message: Some(format!("killed after the {timeout:?} timeout")),
    }
}

pub(crate) fn error_outcome(message: String) -> Ran {
    Ran {
        outcome: Outcome::Error,
        exit_code: None,
        message: Some(message),
    }
}

/// The output a reader task captured, waiting at most `drain` for it to end;
/// past that (or if the task failed) a capture that says so, with `lost`.
pub(crate) async fn collect_output(
    reader: JoinHandle<OutputCapture>,
    drain: Duration,
    lost: &str,
) -> OutputCapture {
    match tokio::time::timeout(drain, reader).await {
        Ok(Ok(capture)) => capture,
        Ok(Err(_)) | Err(_) => {
            let mut capture = OutputCapture::new(256);
            capture.push(format!("[testfleet: {lost}]").as_bytes());
            capture
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_for_a_missing_executor_is_an_error_that_says_why() {
        let executors = Executors::new(
            "w1".into(),
            vec![Executor::Process(ProcessExecutor::new("w1".into()))],
        );
        let job = Job {
            run_id: uuid::Uuid::nil(),
            test_id: "t".into(),
            attempt: 1,
            deadline_ms: u64::MAX,
            spec: testfleet_common::config::default_spec(),
            published_at_ms: 0,
        };
        let result = executors
            .run(&job, &CancellationToken::new())
            .await
            .unwrap()
            .result;
        assert_eq!(result.outcome, Outcome::Error);
        let message = result.message.unwrap();
        assert!(
            message.contains("w1 does not run docker jobs") && message.contains("process"),
            "{message}"
        );
    }
}
