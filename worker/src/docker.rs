//! Runs one job in a fresh Docker container and observes how it ends.
//!
//! Only this module talks to the Docker engine. The container is always removed,
//! whatever happened; a failing or timed-out test is a [`TestResult`], and only an
//! engine we cannot reach is an `Err` (the job then goes back to the queue).

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use testfleet_common::now_ms;
use testfleet_common::wire::{ContainerMode, Job, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::capture::OutputCapture;
use crate::executor::{collect_output, error_outcome, timed_out, Cleanup, Finished, Ran, Requeue};
use crate::labels;
use crate::phases::Phase;
use crate::process::argv;
use crate::warm::{Warm, WarmPool, WARM_IDLE_MAX};

/// PID 1 of a kept container (warm mode): the image needs `sleep`.
const KEEP_ALIVE: [&str; 2] = ["sleep", "2147483647"];

/// How long output may keep arriving after the container has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);

/// A connection to one Docker engine, shared by every slot of a worker.
#[derive(Clone)]
pub struct DockerExecutor {
    docker: Docker,
    worker_id: String,
    /// Containers that could not be removed because the engine did not answer;
    /// the service loop removes them once it does (see `labels::remove_leftovers`).
    leftovers: mpsc::UnboundedSender<String>,
    /// Warm mode's kept containers (see `warm.rs`).
    warm: WarmPool,
}

impl DockerExecutor {
    /// The executor, and the receiving end of the containers it could not remove.
    pub fn new(docker: Docker, worker_id: String) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (leftovers, receiver) = mpsc::unbounded_channel();
        let executor = DockerExecutor {
            docker,
            worker_id,
            leftovers,
            warm: WarmPool::default(),
        };
        (executor, receiver)
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Runs `job` to its end. `interrupt` kills the container and requeues the job.
    ///
    /// A passed test's container is handed back as a [`Cleanup`], removed after
    /// the job is acked: removal is the slowest step after the run itself, and
    /// an exit 0 that the engine reported leaves nothing to doubt. Any other
    /// container is removed before the result exists, since an engine that fails
    /// to remove it casts doubt on how the test ended.
    pub async fn run(&self, job: &Job, interrupt: &CancellationToken) -> Result<Finished, Requeue> {
        if job.spec.container_mode == ContainerMode::Warm {
            return self.run_warm(job, interrupt).await;
        }
        let started_at_ms = now_ms();
        let clock = tokio::time::Instant::now();
        let mut cleanup = None;
        let (ran, capture) = match Phase::Create.time(self.create(job)).await? {
            Err(message) => (error_outcome(message), None),
            Ok(container) => {
                let ran = self.run_created(&container, job, interrupt).await;
                if matches!(&ran, Ok((r, _)) if r.outcome == Outcome::Passed) {
                    cleanup = Some(Cleanup::Container(self.clone(), container));
                    ran?
                } else {
                    self.checked_remove(&container, ran).await?
                }
            }
        };
        let result = ran.into_result(job, &self.worker_id, capture, started_at_ms, clock);
        Ok(Finished { result, cleanup })
    }

    /// Warm mode: runs `job` as an exec in a kept container of its run. The
    /// container goes back to the pool after a passed test, is removed after the
    /// ack once it has run `warm_reuse` tests, and is removed before the result
    /// exists after any other outcome (its leftovers must not meet the next test).
    async fn run_warm(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<Finished, Requeue> {
        let started_at_ms = now_ms();
        let clock = tokio::time::Instant::now();
        let mut cleanup = None;
        let (ran, capture) = match self.exec_somewhere(job, interrupt).await? {
            Err(message) => (error_outcome(message), None),
            Ok((mut warm, (ran, capture))) if ran.outcome == Outcome::Passed => {
                warm.used += 1;
                if warm.used >= job.spec.warm_reuse {
                    cleanup = Some(Cleanup::Container(self.clone(), warm.id));
                } else {
                    self.warm.put_back(warm);
                }
                (ran, capture)
            }
            Ok((warm, ran)) => self.checked_remove(&warm.id, Ok(ran)).await?,
        };
        let result = ran.into_result(job, &self.worker_id, capture, started_at_ms, clock);
        Ok(Finished { result, cleanup })
    }

    /// Runs the exec in a kept container, or in a new one when the kept one is
    /// gone (swept, or killed by the engine): a container we lost is no fault of
    /// the test. The inner `Err` is a message for an error outcome.
    async fn exec_somewhere(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<Result<(Warm, (Ran, Option<OutputCapture>)), String>, Requeue> {
        for _ in 0..2 {
            let warm = match self.warm_container(job).await? {
                Ok(warm) => warm,
                Err(message) => return Ok(Err(message)),
            };
            match self.exec(&warm.id, job, interrupt).await {
                Ok(Some(ran)) => return Ok(Ok((warm, ran))),
                Ok(None) => {
                    debug!(container = %warm.id, "kept container gone; starting another");
                    self.remove(&warm.id).await;
                }
                Err(requeue) => {
                    self.remove(&warm.id).await;
                    return Err(requeue);
                }
            }
        }
        Ok(Err("kept containers kept vanishing under the exec".into()))
    }

    /// A kept container of the job's run, or a new one started for it.
    async fn warm_container(&self, job: &Job) -> Result<Result<Warm, String>, Requeue> {
        let needed_until = labels::expiry(job.spec.timeout_ms);
        let (found, expired) = self.warm.checkout(job.run_id, needed_until);
        for container in expired {
            self.remove(&container).await;
        }
        if let Some(warm) = found {
            return Ok(Ok(warm));
        }
        let container = match Phase::Create.time(self.create(job)).await? {
            Ok(container) => container,
            Err(message) => return Ok(Err(message)),
        };
        let start = self.docker.start_container(&container, None);
        if let Err(error) = Phase::Start.time(start).await {
            self.remove(&container).await;
            return classify(error, "start the kept container").map(Err);
        }
        Ok(Ok(Warm::new(container, job.run_id, warm_expiry(job))))
    }

    /// One exec of the job's argv in `container`, output attached, under the
    /// timeout; `None` when the container is gone. A timeout or an interrupt
    /// kills the container: there is no other way to kill an exec's processes.
    async fn exec(
        &self,
        container: &str,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<Option<(Ran, Option<OutputCapture>)>, Requeue> {
        let clock = std::time::Instant::now();
        let options = CreateExecOptions {
            cmd: Some(argv(job)),
            env: Some(test_env(job)),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = match self.docker.create_exec(container, options).await {
            Ok(exec) => exec.id,
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => return Ok(None),
            Err(error) => return classify(error, "create the exec").map(not_run).map(Some),
        };
        let output = match self.docker.start_exec(&exec, None).await {
            Ok(StartExecResults::Attached { output, .. }) => output,
            Ok(StartExecResults::Detached) => {
                return Ok(Some(not_run("the engine started the exec detached".into())))
            }
            Err(error) => return classify(error, "start the exec").map(not_run).map(Some),
        };
        let cap = job.spec.output_cap_bytes as usize;
        let timeout = Duration::from_millis(job.spec.timeout_ms);
        let capture = tokio::select! {
            read = tokio::time::timeout(timeout, read_output(output, OutputCapture::new(cap))) => match read {
                Ok(capture) => capture,
                Err(_elapsed) => {
                    self.kill(container).await;
                    return Ok(Some((timed_out(timeout), None)));
                }
            },
            () = interrupt.cancelled() => {
                self.kill(container).await;
                return Err(Requeue::Interrupted);
            }
        };
        let ran = match self.docker.inspect_exec(&exec).await {
            Ok(inspect) => match inspect.exit_code {
                Some(exit) => Ran {
                    outcome: Outcome::from_exit_code(exit),
                    exit_code: Some(exit),
                    message: None,
                },
                None => error_outcome("the exec ended without an exit code".into()),
            },
            Err(error) => classify(error, "inspect the exec").map(error_outcome)?,
        };
        Phase::Exec.record(clock.elapsed());
        Ok(Some((ran, Some(capture))))
    }

    /// Removes kept containers idle for `idle_for` (all of them with zero).
    pub async fn retire_warm(&self, idle_for: Duration) {
        for container in self.warm.take_idle(idle_for) {
            self.remove(&container).await;
        }
    }

    /// Removes the container of a test that did not pass, or could not run.
    async fn checked_remove(
        &self,
        container: &str,
        ran: Result<(Ran, Option<OutputCapture>), Requeue>,
    ) -> Result<(Ran, Option<OutputCapture>), Requeue> {
        let engine_lost = self.remove(container).await;
        let (ran, capture) = ran?;
        match engine_lost {
            // A daemon that shuts down kills its containers (exit 137) and is
            // gone a moment later: a test that did not pass while the engine
            // went away says nothing about the test.
            Some(error) if ran.outcome != Outcome::Passed => Err(Requeue::EngineUnreachable(error)),
            _ => Ok((ran, capture)),
        }
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
        let attach = self.docker.attach_container(container, Some(options));
        let output = match Phase::Attach.time(attach).await {
            Ok(attached) => attached.output,
            Err(error) => return classify(error, "attach to the container").map(not_run),
        };
        let cap = job.spec.output_cap_bytes as usize;
        let reader = tokio::spawn(read_output(output, OutputCapture::new(cap)));

        let start = self.docker.start_container(container, None);
        if let Err(error) = Phase::Start.time(start).await {
            reader.abort();
            return classify(error, "start the container").map(not_run);
        }
        let timeout = Duration::from_millis(job.spec.timeout_ms);
        let ran = tokio::select! {
            waited = tokio::time::timeout(timeout, Phase::Wait.time(self.wait(container))) => match waited {
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
        Ok((
            ran,
            Some(
                Phase::Output
                    .time(collect_output(
                        reader,
                        OUTPUT_DRAIN,
                        "output could not be collected",
                    ))
                    .await,
            ),
        ))
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
        let remove = self.docker.remove_container(container, Some(options));
        match Phase::Remove.time(remove).await {
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
    let (cmd, env) = match spec.container_mode {
        ContainerMode::Fresh => (argv(job), test_env(job)),
        // PID 1 of a kept container only keeps it alive; tests come as execs,
        // each with its own argv and environment.
        ContainerMode::Warm => (KEEP_ALIVE.iter().map(|s| s.to_string()).collect(), vec![]),
    };
    let mut labels = labels::for_job(job, worker_id);
    if spec.container_mode == ContainerMode::Warm {
        labels.insert(labels::EXPIRES.into(), warm_expiry(job).to_string());
    }
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
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(spec.container.network.clone()),
            tmpfs: Some(tmpfs),
            memory: spec.container.memory_bytes,
            nano_cpus: spec.container.nano_cpus,
            pids_limit: spec.container.pids_limit,
            security_opt: spec
                .container
                .no_new_privileges
                .then(|| vec!["no-new-privileges".into()]),
            runtime: spec.runtime.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn test_env(job: &Job) -> Vec<String> {
    let mut env: Vec<String> = job
        .spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("TEST_ID={}", job.test_id));
    env.push(format!("TESTFLEET_RUN_ID={}", job.run_id));
    env.push(format!("TESTFLEET_ATTEMPT={}", job.attempt));
    env
}

/// When a kept container is certainly orphaned: after `warm_reuse` tests at
/// their timeout each, idle spells between them, and the usual grace. The pool
/// stops using it before then (see `WarmPool::checkout`).
fn warm_expiry(job: &Job) -> u64 {
    let busy = job
        .spec
        .timeout_ms
        .saturating_mul(u64::from(job.spec.warm_reuse));
    let idle = (WARM_IDLE_MAX.as_millis() as u64).saturating_mul(u64::from(job.spec.warm_reuse));
    labels::expiry(busy.saturating_add(idle))
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

/// An error outcome for a container that never ran, so has no output.
fn not_run(message: String) -> (Ran, Option<OutputCapture>) {
    (error_outcome(message), None)
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
            published_at_ms: 0,
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
        assert_eq!(host.runtime, None, "the engine's default runtime");

        let mut privileged = job("t3");
        privileged.spec.container.no_new_privileges = false;
        let host = container_body(&privileged, "w").host_config.unwrap();
        assert_eq!(host.security_opt, None, "the spec may allow setuid");

        let mut crun = job("t2");
        crun.spec.runtime = Some("crun".into());
        let host = container_body(&crun, "w").host_config.unwrap();
        assert_eq!(host.runtime.as_deref(), Some("crun"));
    }
}
