//! Runs one job in a fresh Docker container and observes how it ends.
//!
//! Only this module talks to the Docker engine. The container is always removed,
//! whatever happened; a failing or timed-out test is a [`TestResult`], and only an
//! engine we cannot reach is an `Err` (the job then goes back to the queue).

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use testfleet_common::now_ms;
use testfleet_common::wire::{Job, Outcome, TestResult};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::capture::OutputCapture;
use crate::labels;

/// How long output may keep arriving after the container has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);

/// Why a job could not be run here and must go back to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Requeue {
    #[error("docker engine unreachable: {0}")]
    EngineUnreachable(#[source] DockerError),
    #[error("the worker is shutting down")]
    Interrupted,
}

/// A connection to one Docker engine, shared by every slot of a worker.
#[derive(Clone)]
pub struct DockerExecutor {
    docker: Docker,
    worker_id: String,
    /// Containers that could not be removed because the engine did not answer;
    /// the service loop removes them once it does (see `labels::remove_leftovers`).
    leftovers: mpsc::UnboundedSender<String>,
}

/// What happened between start and exit, before it becomes a result.
struct Ran {
    outcome: Outcome,
    exit_code: Option<i64>,
    message: Option<String>,
}

impl DockerExecutor {
    /// The executor, and the receiving end of the containers it could not remove.
    pub fn new(docker: Docker, worker_id: String) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (leftovers, receiver) = mpsc::unbounded_channel();
        let executor = DockerExecutor {
            docker,
            worker_id,
            leftovers,
        };
        (executor, receiver)
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Runs `job` to its end. `interrupt` kills the container and requeues the job.
    pub async fn run(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<TestResult, Requeue> {
        let started_at_ms = now_ms();
        let clock = tokio::time::Instant::now();
        let (ran, capture) = match self.create(job).await? {
            Err(message) => (error_outcome(message), None),
            Ok(container) => {
                let ran = self.run_created(&container, job, interrupt).await;
                let engine_lost = self.remove(&container).await;
                let (ran, capture) = ran?;
                match engine_lost {
                    // A daemon that shuts down kills its containers (exit 137)
                    // and is gone a moment later: a test that did not pass while
                    // the engine went away says nothing about the test.
                    Some(error) if ran.outcome != Outcome::Passed => {
                        return Err(Requeue::EngineUnreachable(error))
                    }
                    _ => (ran, capture),
                }
            }
        };
        let (output, output_truncated) = capture.map(OutputCapture::finish).unwrap_or_default();
        Ok(TestResult {
            run_id: job.run_id,
            test_id: job.test_id.clone(),
            attempt: job.attempt,
            outcome: ran.outcome,
            exit_code: ran.exit_code,
            duration_ms: clock.elapsed().as_millis() as u64,
            worker_id: self.worker_id.clone(),
            started_at_ms,
            finished_at_ms: now_ms(),
            output,
            output_truncated,
            message: ran.message,
        })
    }

    /// Creates the container, pulling its image once if the engine lacks it.
    /// The inner `Err` is a message for an error outcome (nothing to remove).
    async fn create(&self, job: &Job) -> Result<Result<String, String>, Requeue> {
        match self.try_create(job).await {
            Ok(id) => return Ok(Ok(id)),
            Err(error) if !is_missing_image(&error) => {
                return classify(error, "create the container").map(Err)
            }
            Err(_) => {}
        }
        if let Err(error) = self.pull(&job.spec.image).await {
            if is_unreachable(&error) {
                return Err(Requeue::EngineUnreachable(error));
            }
            return Ok(Err(format!(
                "image `{}` is not on this Docker engine and could not be pulled: {error}",
                job.spec.image
            )));
        }
        match self.try_create(job).await {
            Ok(id) => Ok(Ok(id)),
            Err(error) => classify(error, "create the container").map(Err),
        }
    }

    async fn try_create(&self, job: &Job) -> Result<String, DockerError> {
        let body = container_body(job, &self.worker_id);
        let created = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await?;
        for warning in created.warnings {
            debug!(%warning, "docker warning on create");
        }
        Ok(created.id)
    }

    async fn pull(&self, image: &str) -> Result<(), DockerError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// Attaches, starts and waits; the container exists throughout. Returns the
    /// output too when the container ran.
    async fn run_created(
        &self,
        container: &str,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<(Ran, Option<OutputCapture>), Requeue> {
        // Attach before start so that not a byte of output is missed.
        let options = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let output = match self.docker.attach_container(container, Some(options)).await {
            Ok(attached) => attached.output,
            Err(error) => return classify(error, "attach to the container").map(not_run),
        };
        let cap = job.spec.output_cap_bytes as usize;
        let reader = tokio::spawn(read_output(output, OutputCapture::new(cap)));

        if let Err(error) = self.docker.start_container(container, None).await {
            reader.abort();
            return classify(error, "start the container").map(not_run);
        }
        let timeout = Duration::from_millis(job.spec.timeout_ms);
        let ran = tokio::select! {
            waited = tokio::time::timeout(timeout, self.wait(container)) => match waited {
                Ok(exit) => exit?,
                Err(_elapsed) => {
                    self.kill(container).await;
                    timed_out(timeout)
                }
            },
            () = interrupt.cancelled() => {
                self.kill(container).await;
                reader.abort();
                return Err(Requeue::Interrupted);
            }
        };
        Ok((ran, Some(collect_output(reader).await)))
    }

    /// Waits for the container to stop. A non-zero exit arrives from bollard as a
    /// `DockerContainerWaitError`: it is the test's outcome, not an engine failure.
    async fn wait(&self, container: &str) -> Result<Ran, Requeue> {
        let mut stream = self
            .docker
            .wait_container(container, None::<WaitContainerOptions>);
        let exit = match stream.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) => {
                return classify(error, "wait for the container").map(error_outcome)
            }
            None => {
                return Ok(error_outcome(
                    "the engine closed the wait without an exit code".into(),
                ))
            }
        };
        Ok(Ran {
            outcome: Outcome::from_exit_code(exit),
            exit_code: Some(exit),
            message: None,
        })
    }

    async fn kill(&self, container: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        if let Err(error) = self.docker.kill_container(container, Some(options)).await {
            debug!(%error, container, "kill failed (the container may have exited already)");
        }
    }

    /// Removes the container. A failure is logged and left to the orphan sweep,
    /// or, when the engine did not answer, handed to the service loop to retry;
    /// that error is returned, since it casts doubt on how the container ended.
    pub async fn remove(&self, container: &str) -> Option<DockerError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => None,
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => None,
            Err(error) if is_unreachable(&error) => {
                warn!(%error, container, "engine unreachable; the container is removed when it answers");
                let _ = self.leftovers.send(container.to_owned());
                Some(error)
            }
            Err(error) => {
                warn!(%error, container, "could not remove container; the orphan sweep will");
                None
            }
        }
    }
}

/// The container's full definition: argv without a shell, labels, confinement.
fn container_body(job: &Job, worker_id: &str) -> ContainerCreateBody {
    let spec = &job.spec;
    let cmd = spec
        .command
        .iter()
        .map(|arg| arg.replace("{id}", &job.test_id))
        .collect();
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("TEST_ID={}", job.test_id));
    env.push(format!("TESTFLEET_RUN_ID={}", job.run_id));
    env.push(format!("TESTFLEET_ATTEMPT={}", job.attempt));
    let tmpfs: HashMap<String, String> = spec
        .container
        .tmpfs
        .iter()
        .map(|mount| match mount.split_once(':') {
            Some((path, options)) => (path.to_owned(), options.to_owned()),
            None => (mount.clone(), String::new()),
        })
        .collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // An empty entrypoint makes `cmd` the whole argv, whatever the image says.
        entrypoint: Some(vec![]),
        cmd: Some(cmd),
        env: Some(env),
        tty: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(labels::for_job(job, worker_id)),
        host_config: Some(HostConfig {
            network_mode: Some(spec.container.network.clone()),
            tmpfs: Some(tmpfs),
            memory: spec.container.memory_bytes,
            nano_cpus: spec.container.nano_cpus,
            pids_limit: spec.container.pids_limit,
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn read_output(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>,
    >,
    mut capture: OutputCapture,
) -> OutputCapture {
    while let Some(chunk) = output.next().await {
        match chunk {
            Ok(chunk) => capture.push(chunk.as_ref()),
            Err(error) => {
                debug!(%error, "output stream ended with an error");
                break;
            }
        }
    }
    capture
}

async fn collect_output(reader: JoinHandle<OutputCapture>) -> OutputCapture {
    match tokio::time::timeout(OUTPUT_DRAIN, reader).await {
        Ok(Ok(capture)) => capture,
        Ok(Err(_)) | Err(_) => {
            let mut capture = OutputCapture::new(256);
            capture.push(b"[testfleet: output could not be collected]");
            capture
        }
    }
}

fn timed_out(timeout: Duration) -> Ran {
    Ran {
        outcome: Outcome::TimedOut,
        exit_code: None,
        message: Some(format!("killed after the {timeout:?} timeout")),
    }
}

/// An error outcome for a container that never ran, so has no output.
fn not_run(message: String) -> (Ran, Option<OutputCapture>) {
    (error_outcome(message), None)
}

fn error_outcome(message: String) -> Ran {
    Ran {
        outcome: Outcome::Error,
        exit_code: None,
        message: Some(message),
    }
}

/// An unreachable engine requeues the job; any other engine refusal is reported.
fn classify(error: DockerError, doing: &str) -> Result<String, Requeue> {
    if is_unreachable(&error) {
        Err(Requeue::EngineUnreachable(error))
    } else {
        Ok(format!("could not {doing}: {error}"))
    }
}

/// Errors that mean we never got an answer from the engine.
pub fn is_unreachable(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    )
}

fn is_missing_image(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(test_id: &str) -> Job {
        let mut spec = testfleet_common::config::default_spec();
        spec.command = vec!["run".into(), "--test={id}".into(), "{id}".into()];
        spec.env = BTreeMap::from([("K".into(), "v".into())]);
        spec.container.tmpfs = vec!["/tmp:size=1m".into(), "/scratch".into()];
        spec.container.pids_limit = Some(64);
        Job {
            run_id: uuid::Uuid::nil(),
            test_id: test_id.into(),
            attempt: 2,
            deadline_ms: 0,
            spec,
        }
    }

    #[test]
    fn the_id_goes_into_argv_verbatim() {
        let id = "a b'\"; $(rm -rf /)\n✓";
        let body = container_body(&job(id), "w");
        assert_eq!(
            body.cmd.unwrap(),
            vec!["run".to_owned(), format!("--test={id}"), id.to_owned()]
        );
        assert_eq!(body.entrypoint, Some(vec![]));
    }

    #[test]
    fn environment_names_the_test() {
        let env = container_body(&job("t1"), "w").env.unwrap();
        for expected in [
            "K=v",
            "TEST_ID=t1",
            "TESTFLEET_ATTEMPT=2",
            "TESTFLEET_RUN_ID=00000000-0000-0000-0000-000000000000",
        ] {
            assert!(env.contains(&expected.to_owned()), "{expected} in {env:?}");
        }
    }

    #[test]
    fn confinement_follows_the_spec() {
        let host = container_body(&job("t1"), "w").host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.pids_limit, Some(64));
        let tmpfs = host.tmpfs.unwrap();
        assert_eq!(tmpfs["/tmp"], "size=1m");
        assert_eq!(tmpfs["/scratch"], "");
        assert_eq!(
            host.security_opt.unwrap(),
            vec!["no-new-privileges".to_owned()]
        );
    }
}
