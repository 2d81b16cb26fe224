//! Runs one job in a fresh Docker container and observes how it ends; and
//! everything else the worker asks of its engine: connecting and waiting for
//! it, the orphan sweep, removing what an outage left.
//!
//! Only this module talks to the Docker engine. The container is always removed,
//! whatever happened; a failing or timed-out test is a [`TestResult`], and only an
//! engine we cannot reach is an `Err` (the job then goes back to the queue).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use testfleet_common::shutdown::Shutdown;
use testfleet_types::messages::{ContainerMode, Job, Outcome, RuntimeReason};
use testfleet_types::now_ms;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::capture::OutputCapture;
use crate::confinement::{capability, CacheAccess, CACHE_NETWORK};
use crate::job::{
    argv, collect_output, error_outcome, host_out_of_memory, ids_file_contents, needs_files,
    no_output, report_file_name, test_env, timed_out, Cleanup, LastOutput, Observed, Paths, Ran,
    Requeue,
};
use crate::labels::{self, Sweep};
use crate::phases::Phase;
use crate::runner_report;
use crate::warm::{Warm, WarmPool, WARM_IDLE_MAX};

/// Where a container's command finds its ids file and writes its report.
const STAGE_DIR: &str = "/testfleet";
/// Waiting for an engine that does not answer: first and longest pause.
const ENGINE_FIRST_BACKOFF: Duration = Duration::from_millis(250);
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(10);

/// PID 1 of a kept container (warm mode): the image needs `sleep`.
const KEEP_ALIVE: [&str; 2] = ["sleep", "2147483647"];

/// How long output may keep arriving after the container has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);
/// How long a container killed by SIGKILL is asked whether memory did it.
const OOM_NEWS_GRACE: Duration = Duration::from_secs(10);

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
    /// Where jobs of `run.network = "cache"` go (`worker.cache`).
    cache: Option<Arc<CacheAccess>>,
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
            cache: None,
        };
        (executor, receiver)
    }

    /// The same executor, giving jobs of `run.network = "cache"` this access.
    pub fn with_cache(self, cache: Option<CacheAccess>) -> Self {
        DockerExecutor {
            cache: cache.map(Arc::new),
            ..self
        }
    }

    /// Connects to the local engine and waits until it answers, with backoff:
    /// a worker may start before its engine. `None` if asked to stop first.
    pub async fn connect(
        timeout: Duration,
        worker_id: String,
        shutdown: &Shutdown,
    ) -> Option<(Self, mpsc::UnboundedReceiver<String>)> {
        let mut backoff = ENGINE_FIRST_BACKOFF;
        let docker = loop {
            match Docker::connect_with_local_defaults() {
                Ok(docker) => break docker.with_timeout(timeout),
                Err(error) => warn!(%error, retry_in = ?backoff, "docker engine unreachable"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.draining() => return None,
            }
            backoff = (backoff * 2).min(ENGINE_RETRY_MAX);
        };
        let (executor, leftovers) = DockerExecutor::new(docker, worker_id);
        executor.wait_until_up(shutdown).await;
        Some((executor, leftovers))
    }

    /// The engine's id and its host's CPUs, if it says: the host a Docker
    /// worker's tests run on (workers of one engine share its CPUs).
    pub async fn host(&self) -> Option<(String, u32)> {
        let info = self.docker.info().await.ok()?;
        let cores = u32::try_from(info.ncpu?).ok()?;
        Some((format!("docker:{}", info.id?), cores))
    }

    /// Pings the engine with backoff (at most a second apart) until it
    /// answers, for up to `patience`; false if it never did or `interrupt`
    /// fired first.
    pub async fn answers_within(&self, patience: Duration, interrupt: &CancellationToken) -> bool {
        let waiting = async {
            let mut backoff = ENGINE_FIRST_BACKOFF;
            while self.docker.ping().await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        };
        tokio::select! {
            answered = tokio::time::timeout(patience, waiting) => answered.is_ok(),
            () = interrupt.cancelled() => false,
        }
    }

    /// Pings the engine with backoff until it answers or the worker drains.
    pub async fn wait_until_up(&self, shutdown: &Shutdown) {
        let mut backoff = ENGINE_FIRST_BACKOFF;
        loop {
            match self.docker.ping().await {
                Ok(_) => return,
                Err(error) => warn!(%error, retry_in = ?backoff, "docker engine unreachable"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.draining() => return,
            }
            backoff = (backoff * 2).min(ENGINE_RETRY_MAX);
        }
    }

    /// Removes orphaned test containers (`labels::is_orphan`); returns how
    /// many it removed.
    pub async fn sweep(&self, sweep: Sweep<'_>) -> usize {
        let containers = match self.list_managed().await {
            Ok(containers) => containers,
            Err(error) => {
                warn!(%error, "could not list containers for the orphan sweep");
                return 0;
            }
        };
        let now = now_ms();
        let mut removed = 0;
        for (id, labels) in containers {
            if labels::is_orphan(&labels, sweep, now) {
                let run = labels.get(labels::RUN).map(String::as_str).unwrap_or("?");
                info!(container = %id, run, "removing orphaned test container");
                self.remove(&id).await;
                removed += 1;
            }
        }
        removed
    }

    /// Removes `containers`, which the engine did not answer for before;
    /// those that fail again come back through the leftovers channel.
    pub async fn remove_leftovers(&self, containers: Vec<String>) {
        for container in containers {
            info!(%container, "removing a container left while the engine was unreachable");
            self.remove(&container).await;
        }
    }

    async fn list_managed(&self) -> Result<Vec<(String, HashMap<String, String>)>, DockerError> {
        let filters = HashMap::from([("label".to_owned(), vec![labels::MANAGED.to_owned()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self.docker.list_containers(Some(options)).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect())
    }

    /// The image's id on this engine, if it has the image.
    pub async fn image_id(&self, image: &str) -> Option<String> {
        self.docker.inspect_image(image).await.ok()?.id
    }

    /// Runs `job` to its end. `interrupt` kills the container and requeues the job.
    ///
    /// A passed job's container is handed back as a [`Cleanup`], removed after
    /// the job is acked: removal is the slowest step after the run itself, and
    /// an exit 0 that the engine reported leaves nothing to doubt. Any other
    /// container is removed before the result exists, since an engine that fails
    /// to remove it casts doubt on how the test ended. A runner's report is
    /// read out of the container before it goes.
    pub async fn run(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<(Observed, Option<Cleanup>), Requeue> {
        if job.spec.container_mode == ContainerMode::Warm {
            return self.run_warm(job, interrupt).await;
        }
        let started_at_ms = now_ms();
        let clock = tokio::time::Instant::now();
        let paths = paths(job, None);
        let container = match Phase::Create.time(self.create(job, &paths)).await? {
            Step::Done(container) => container,
            Step::Refused(message) => {
                return Ok((not_started(message, started_at_ms, clock), None))
            }
        };
        let attached = match self.stage(&container, job, &paths).await? {
            Step::Refused(message) => Ok(not_run(message)),
            Step::Done(()) => self.run_created(&container, job, interrupt).await,
        };
        let report = match &attached {
            Ok(_) if job.spec.writes_report() => self.fetch_report(&container, &paths.report).await,
            _ => None,
        };
        let mut cleanup = None;
        let attached = if matches!(&attached, Ok(a) if a.ran.outcome == Outcome::Passed) {
            cleanup = Some(self.cleanup(container));
            attached?
        } else {
            self.checked_remove(&container, attached).await?
        };
        Ok((attached.observed(report, started_at_ms, clock), cleanup))
    }

    /// Warm mode: runs `job` as an exec in a kept container of its run. The
    /// container goes back to the pool after a passed job, is removed after the
    /// ack once it has run `warm_reuse` jobs, and is removed before the result
    /// exists after any other outcome (its leftovers must not meet the next test).
    async fn run_warm(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<(Observed, Option<Cleanup>), Requeue> {
        let started_at_ms = now_ms();
        let clock = tokio::time::Instant::now();
        let paths = paths(job, Some(uuid::Uuid::new_v4()));
        let mut cleanup = None;
        let (attached, report) = match self.exec_somewhere(job, &paths, interrupt).await? {
            Step::Refused(message) => {
                return Ok((not_started(message, started_at_ms, clock), None))
            }
            Step::Done((mut warm, attached)) => {
                let report = match job.spec.writes_report() {
                    true => self.fetch_report(&warm.id, &paths.report).await,
                    false => None,
                };
                if attached.ran.outcome == Outcome::Passed {
                    warm.used += 1;
                    if warm.used >= job.spec.warm_reuse {
                        cleanup = Some(self.cleanup(warm.id));
                    } else {
                        self.warm.put_back(warm);
                    }
                    (attached, report)
                } else {
                    (self.checked_remove(&warm.id, Ok(attached)).await?, report)
                }
            }
        };
        Ok((attached.observed(report, started_at_ms, clock), cleanup))
    }

    /// Removes `container` after the job is acked.
    fn cleanup(&self, container: String) -> Cleanup {
        let docker = self.clone();
        Cleanup::new(async move {
            docker.remove(&container).await;
        })
    }

    /// Runs the exec in a kept container, or in a new one when the kept one is
    /// gone (swept, or killed by the engine): a container we lost is no fault of
    /// the test.
    async fn exec_somewhere(
        &self,
        job: &Job,
        paths: &Paths,
        interrupt: &CancellationToken,
    ) -> Result<Step<(Warm, Attached)>, Requeue> {
        for _ in 0..2 {
            let warm = match self.warm_container(job, paths).await? {
                Step::Done(warm) => warm,
                Step::Refused(message) => return Ok(Step::Refused(message)),
            };
            if let Step::Refused(message) = self.stage(&warm.id, job, paths).await? {
                self.remove(&warm.id).await;
                return Ok(Step::Refused(message));
            }
            match self.exec(&warm.id, job, paths, interrupt).await {
                Ok(Some(attached)) => return Ok(Step::Done((warm, attached))),
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
        Ok(Step::Refused(
            "kept containers kept vanishing under the exec".into(),
        ))
    }

    /// A kept container of the job's run, or a new one started for it.
    async fn warm_container(&self, job: &Job, paths: &Paths) -> Result<Step<Warm>, Requeue> {
        let needed_until = labels::expiry(job.timeout_ms());
        let key = self.warm.key(job);
        let (found, expired) = self.warm.checkout(key, needed_until);
        for container in expired {
            self.remove(&container).await;
        }
        if let Some(warm) = found {
            return Ok(Step::Done(warm));
        }
        let container = match Phase::Create.time(self.create(job, paths)).await? {
            Step::Done(container) => container,
            Step::Refused(message) => return Ok(Step::Refused(message)),
        };
        let start = self.docker.start_container(&container, None);
        if let Err(error) = Phase::Start.time(start).await {
            self.remove(&container).await;
            return classify(error, "start the kept container").map(Step::Refused);
        }
        Ok(Step::Done(Warm::new(container, key, warm_expiry(job))))
    }

    /// One exec of the job's argv in `container`, output attached, under the
    /// job's timeout; `None` when the container is gone. A timeout or an
    /// interrupt kills the container: there is no other way to kill an exec's
    /// processes.
    async fn exec(
        &self,
        container: &str,
        job: &Job,
        paths: &Paths,
        interrupt: &CancellationToken,
    ) -> Result<Option<Attached>, Requeue> {
        let clock = std::time::Instant::now();
        let options = CreateExecOptions {
            cmd: Some(argv(job, paths)),
            env: Some(env_lines(job, paths, self.cache_of(job))),
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
        let command_started_at_ms = now_ms();
        let output = match self.docker.start_exec(&exec, None).await {
            Ok(StartExecResults::Attached { output, .. }) => output,
            Ok(StartExecResults::Detached) => {
                return Ok(Some(not_run("the engine started the exec detached".into())))
            }
            Err(error) => return classify(error, "start the exec").map(not_run).map(Some),
        };
        let cap = job.spec.output_cap_bytes as usize;
        let timeout = Duration::from_millis(job.timeout_ms());
        let last_output = LastOutput::start();
        let quiet = job.spec.quiet_timeout_ms.map(Duration::from_millis);
        let reading = read_output(output, OutputCapture::new(cap), last_output.clone());
        let capture = tokio::select! {
            read = tokio::time::timeout(timeout, reading) => match read {
                Ok(capture) => capture,
                Err(_elapsed) => {
                    self.kill(container).await;
                    return Ok(Some(Attached { ran: timed_out(timeout), output: None, command_started_at_ms }));
                }
            },
            () = last_output.quiet_for(quiet) => {
                self.kill(container).await;
                let ran = no_output(quiet.unwrap_or_default());
                return Ok(Some(Attached { ran, output: None, command_started_at_ms }));
            }
            () = interrupt.cancelled() => {
                self.kill(container).await;
                return Err(Requeue::Interrupted);
            }
        };
        let ran = match self.docker.inspect_exec(&exec).await {
            Ok(inspect) => match inspect.exit_code {
                Some(exit) => Ran::exited(exit),
                None => error_outcome("the exec ended without an exit code".into()),
            },
            Err(error) => classify(error, "inspect the exec").map(error_outcome)?,
        };
        Phase::Exec.record(clock.elapsed());
        Ok(Some(Attached {
            ran,
            output: Some(capture),
            command_started_at_ms,
        }))
    }

    /// Puts the job's files into the container before its command starts: the
    /// ids file and an empty report folder anyone may write (the image's user
    /// may not be root). Nothing for a job of one that reads no report.
    async fn stage(&self, container: &str, job: &Job, paths: &Paths) -> Result<Step<()>, Requeue> {
        if !needs_files(job) {
            return Ok(Step::Done(()));
        }
        let tar = match staging_tar(job, paths) {
            Ok(tar) => tar,
            Err(error) => {
                return Ok(Step::Refused(format!(
                    "could not pack the job's files: {error}"
                )))
            }
        };
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        let upload = self.docker.upload_to_container(
            container,
            Some(options),
            bollard::body_full(tar.into()),
        );
        match Phase::Stage.time(upload).await {
            Ok(()) => Ok(Step::Done(())),
            Err(error) => {
                classify(error, "put the job's files into the container").map(Step::Refused)
            }
        }
    }

    /// The runner's report, read out of the container; `None` when the
    /// command wrote none (or one over `MAX_REPORT_BYTES`).
    async fn fetch_report(&self, container: &str, path: &str) -> Option<Vec<u8>> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        let mut tar = Vec::new();
        let limit = runner_report::MAX_REPORT_BYTES as usize + (64 << 10);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) if tar.len() + bytes.len() <= limit => tar.extend_from_slice(&bytes),
                Ok(_) => {
                    warn!(container, "the runner's report is over its bound; not read");
                    return None;
                }
                Err(error) => {
                    debug!(%error, container, "no runner report");
                    return None;
                }
            }
        }
        first_file_in(&tar)
    }

    /// Removes kept containers idle for `idle_for` (all of them with zero).
    pub async fn retire_warm(&self, idle_for: Duration) {
        for container in self.warm.take_idle(idle_for) {
            self.remove(&container).await;
        }
    }

    /// Removes the container of a job that did not pass, or could not run.
    async fn checked_remove(
        &self,
        container: &str,
        attached: Result<Attached, Requeue>,
    ) -> Result<Attached, Requeue> {
        let engine_lost = self.remove(container).await;
        let attached = attached?;
        match engine_lost {
            // A daemon that shuts down kills its containers (exit 137) and is
            // gone a moment later: a job that did not pass while the engine
            // went away says nothing about its tests.
            Some(error) if attached.ran.outcome != Outcome::Passed => {
                Err(Requeue::EngineUnreachable(error))
            }
            _ => Ok(attached),
        }
    }

    /// Creates the container, pulling its image once if the engine lacks it.
    /// A refusal leaves nothing to remove.
    async fn create(&self, job: &Job, paths: &Paths) -> Result<Step<String>, Requeue> {
        match self.try_create(job, paths).await {
            Ok(id) => return Ok(Step::Done(id)),
            Err(error) if !is_missing_image(&error) => {
                return classify(error, "create the container").map(Step::Refused)
            }
            Err(_) => {}
        }
        if let Err(error) = self.pull(&job.spec.image).await {
            if is_unreachable(&error) {
                return Err(Requeue::EngineUnreachable(error));
            }
            return Ok(Step::Refused(format!(
                "image `{}` is not on this Docker engine and could not be pulled: {error}",
                job.spec.image
            )));
        }
        match self.try_create(job, paths).await {
            Ok(id) => Ok(Step::Done(id)),
            Err(error) => classify(error, "create the container").map(Step::Refused),
        }
    }

    async fn try_create(&self, job: &Job, paths: &Paths) -> Result<String, DockerError> {
        let body = container_body(job, paths, &self.worker_id, self.cache_of(job));
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
    ) -> Result<Attached, Requeue> {
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
        let last_output = LastOutput::start();
        let reader = tokio::spawn(read_output(
            output,
            OutputCapture::new(cap),
            last_output.clone(),
        ));
        let quiet = job.spec.quiet_timeout_ms.map(Duration::from_millis);

        let start = self.docker.start_container(container, None);
        if let Err(error) = Phase::Start.time(start).await {
            reader.abort();
            return classify(error, "start the container").map(not_run);
        }
        let command_started_at_ms = now_ms();
        let timeout = Duration::from_millis(job.timeout_ms());
        let ran = tokio::select! {
            waited = tokio::time::timeout(timeout, Phase::Wait.time(self.wait(container))) => match waited {
                Ok(exit) => self.with_memory_verdict(exit?, container, job).await,
                Err(_elapsed) => {
                    self.kill(container).await;
                    timed_out(timeout)
                }
            },
            () = last_output.quiet_for(quiet) => {
                self.kill(container).await;
                no_output(quiet.unwrap_or_default())
            }
            () = interrupt.cancelled() => {
                self.kill(container).await;
                reader.abort();
                return Err(Requeue::Interrupted);
            }
        };
        let output = Phase::Output
            .time(collect_output(
                reader,
                OUTPUT_DRAIN,
                "output could not be collected",
            ))
            .await;
        Ok(Attached {
            ran,
            output: Some(output),
            command_started_at_ms,
        })
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
        Ok(Ran::exited(exit))
    }

    /// A failed command's reason, corrected by what the engine says of
    /// memory: killed for it under the job's own limit (`oom`), or with no
    /// limit of its own (the host ran out: `host-oom`, the fleet's doing).
    async fn with_memory_verdict(&self, ran: Ran, container: &str, job: &Job) -> Ran {
        // The kernel kills for memory with SIGKILL: 128 + 9.
        if ran.outcome != Outcome::Failed || ran.exit_code != Some(137) {
            return ran;
        }
        if !self.oom_killed(container).await {
            return ran;
        }
        match job.spec.container.memory_bytes.is_some_and(|m| m > 0) {
            true => Ran {
                reason: Some(RuntimeReason::Oom),
                message: Some("killed for memory under its limit (OOMKilled)".into()),
                ..ran
            },
            false => host_out_of_memory(ran.exit_code),
        }
    }

    /// Whether the engine says the kernel killed a process of the stopped
    /// `container` for memory. The engine learns of the kill apart from the
    /// exit (on cgroup v2 it may mark the container after its wait returned),
    /// so a container killed by SIGKILL is asked again for a while.
    async fn oom_killed(&self, container: &str) -> bool {
        let asked = tokio::time::Instant::now();
        loop {
            match self.docker.inspect_container(container, None).await {
                Ok(inspected)
                    if inspected.state.as_ref().and_then(|s| s.oom_killed) == Some(true) =>
                {
                    return true
                }
                Ok(_) if asked.elapsed() < OOM_NEWS_GRACE => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(_) => return false,
                Err(error) => {
                    debug!(%error, "could not ask the engine whether memory killed the test");
                    return false;
                }
            }
        }
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

/// A tmpfs mount's options, `exec` unless they say `noexec`: the engine
/// mounts a tmpfs `noexec` by default, and runners execute what they build
/// in `/tmp` (`go test` its test binary).
fn executable(options: &str) -> String {
    let said = |word: &str| options.split(',').any(|o| o.trim() == word);
    match options {
        _ if said("exec") || said("noexec") => options.to_owned(),
        "" => "exec".to_owned(),
        _ => format!("{options},exec"),
    }
}

/// The container's full definition: argv without a shell, labels, confinement.
fn container_body(
    job: &Job,
    paths: &Paths,
    worker_id: &str,
    cache: Option<&CacheAccess>,
) -> ContainerCreateBody {
    let spec = &job.spec;
    let (cmd, env) = match spec.container_mode {
        ContainerMode::Fresh => (argv(job, paths), env_lines(job, paths, cache)),
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
            Some((path, options)) => (path.to_owned(), executable(options)),
            None => (mount.clone(), executable("")),
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
        user: spec.user.clone(),
        host_config: Some(HostConfig {
            network_mode: Some(match cache {
                Some(cache) => cache.network.clone(),
                None => spec.container.network.clone(),
            }),
            tmpfs: Some(tmpfs),
            memory: spec.container.memory_bytes,
            // No swap beyond the memory limit (the engine's default doubles it).
            memory_swap: spec.container.memory_bytes,
            nano_cpus: spec.container.nano_cpus,
            pids_limit: spec.container.pids_limit,
            security_opt: spec
                .container
                .no_new_privileges
                .then(|| vec!["no-new-privileges".into()]),
            // Every capability dropped but those the spec gives back, which
            // the worker's confinement allowed (`confinement.rs`).
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(
                spec.container
                    .cap_add
                    .iter()
                    .map(|c| capability(c))
                    .collect(),
            ),
            // Output is attached, so the engine keeps no log of its own: a
            // test that writes gigabytes fills no disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            runtime: spec.runtime.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The job's environment as the engine takes it, `KEY=value`: the cache's
/// variables first (a job of the cache network), so that the spec's own
/// override them (the engine keeps a name's last value).
fn env_lines(job: &Job, paths: &Paths, cache: Option<&CacheAccess>) -> Vec<String> {
    let cache_env = cache.map(|c| c.env.as_slice()).unwrap_or_default();
    cache_env
        .iter()
        .cloned()
        .chain(test_env(job, paths))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

impl DockerExecutor {
    /// The cache access a job gets: this worker's, for a job of the cache
    /// network (which confinement let through only where there is one).
    fn cache_of(&self, job: &Job) -> Option<&CacheAccess> {
        (job.spec.container.network == CACHE_NETWORK)
            .then_some(self.cache.as_deref())
            .flatten()
    }
}

/// Where a container's command finds its files: under `/testfleet`, or a
/// folder of the job's own there in a kept container (warm mode), which
/// several jobs use in turn.
fn paths(job: &Job, job_folder: Option<uuid::Uuid>) -> Paths {
    let base = match job_folder {
        Some(folder) => format!("{STAGE_DIR}/{folder}"),
        None => STAGE_DIR.to_owned(),
    };
    Paths {
        ids_file: format!("{base}/ids"),
        report: format!("{base}/report/{}", report_file_name(job)),
    }
}

/// The job's files as a tar to unpack at `/`: the folders (anyone may
/// write the report's) and the ids file.
fn staging_tar(job: &Job, paths: &Paths) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let ids_file = paths.ids_file.trim_start_matches('/');
    let report_dir = match paths.report.trim_start_matches('/').rsplit_once('/') {
        Some((dir, _)) => dir.to_owned(),
        None => String::new(),
    };
    let mut folders = vec![STAGE_DIR.trim_start_matches('/').to_owned()];
    if let Some((folder, _)) = ids_file.rsplit_once('/') {
        if !folders.iter().any(|f| f == folder) {
            folders.push(folder.to_owned());
        }
    }
    folders.push(report_dir);
    for folder in folders {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(now_ms() / 1000);
        tar.append_data(&mut header, format!("{folder}/"), std::io::empty())?;
    }
    let ids = ids_file_contents(job);
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(ids.len() as u64);
    header.set_mtime(now_ms() / 1000);
    tar.append_data(&mut header, ids_file, ids.as_bytes())?;
    tar.into_inner()
}

/// The contents of the first file in a tar (what the engine sends for a
/// path that is a file).
fn first_file_in(tar: &[u8]) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let mut contents = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut contents).ok()?;
            return Some(contents);
        }
    }
    None
}

/// When a kept container is certainly orphaned: after `warm_reuse` tests at
/// their timeout each, idle spells between them, and the usual grace. The pool
/// stops using it before then (see `WarmPool::checkout`).
fn warm_expiry(job: &Job) -> u64 {
    let busy = job
        .timeout_ms()
        .saturating_mul(u64::from(job.spec.warm_reuse));
    let idle = (WARM_IDLE_MAX.as_millis() as u64).saturating_mul(u64::from(job.spec.warm_reuse));
    labels::expiry(busy.saturating_add(idle))
}

async fn read_output(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>,
    >,
    mut capture: OutputCapture,
    last_output: LastOutput,
) -> OutputCapture {
    while let Some(chunk) = output.next().await {
        match chunk {
            Ok(chunk) => {
                last_output.touch();
                capture.push(chunk.as_ref())
            }
            Err(error) => {
                debug!(%error, "output stream ended with an error");
                break;
            }
        }
    }
    capture
}

/// What the engine made of one step of a job: done, or refused with the
/// message of the job's error outcome (an unreachable engine is a `Requeue`,
/// the `Err` around it).
enum Step<T> {
    Done(T),
    Refused(String),
}

/// How a container's command ended, with its output and when it started.
struct Attached {
    ran: Ran,
    output: Option<OutputCapture>,
    command_started_at_ms: u64,
}

impl Attached {
    fn observed(
        self,
        report: Option<Vec<u8>>,
        started_at_ms: u64,
        clock: tokio::time::Instant,
    ) -> Observed {
        Observed {
            ran: self.ran,
            output: self.output,
            report,
            started_at_ms,
            command_started_at_ms: self.command_started_at_ms,
            clock,
        }
    }
}

/// An error outcome for a container that never ran, so has no output.
fn not_run(message: String) -> Attached {
    Attached {
        ran: error_outcome(message),
        output: None,
        command_started_at_ms: now_ms(),
    }
}

/// What is observed of a job whose container could not be created.
fn not_started(message: String, started_at_ms: u64, clock: tokio::time::Instant) -> Observed {
    not_run(message).observed(None, started_at_ms, clock)
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

/// A 404 from creating a container: its image is missing, unless what the
/// engine could not find is the network (the cache's, say, not created on
/// this engine), which no pull brings.
fn is_missing_image(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } if !message.starts_with("network ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_missing_network_is_no_missing_image() {
        let not_found = |message: &str| DockerError::DockerResponseServerError {
            status_code: 404,
            message: message.into(),
        };
        assert!(is_missing_image(&not_found("No such image: x:latest")));
        assert!(!is_missing_image(&not_found(
            "network testfleet-cache not found"
        )));
    }

    fn job(test_id: &str) -> Job {
        let mut spec = testfleet_common::config::default_spec();
        spec.command = vec!["run".into(), "--test={id}".into(), "{id}".into()];
        spec.env = BTreeMap::from([("K".into(), "v".into())]);
        spec.container.tmpfs = vec!["/tmp:size=1m".into(), "/scratch".into()];
        spec.container.pids_limit = Some(64);
        Job::single(uuid::Uuid::nil(), test_id.into(), 2, 0, spec)
    }

    fn body(job: &Job) -> ContainerCreateBody {
        container_body(job, &paths(job, None), "w", None)
    }

    #[test]
    fn the_id_goes_into_argv_verbatim() {
        let id = "a b'\"; $(rm -rf /)\n✓";
        let body = body(&job(id));
        assert_eq!(
            body.cmd.unwrap(),
            vec!["run".to_owned(), format!("--test={id}"), id.to_owned()]
        );
        assert_eq!(body.entrypoint, Some(vec![]));
    }

    #[test]
    fn environment_names_the_test() {
        let env = body(&job("t1")).env.unwrap();
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
    fn the_staging_tar_holds_open_folders_and_the_ids() {
        let mut batch = job("a");
        batch.tests.push(testfleet_types::messages::JobTest {
            id: "b c".into(),
            allowance_ms: 1,
            command_id: None,
        });
        let paths = paths(&batch, Some(uuid::Uuid::nil()));
        let tar = staging_tar(&batch, &paths).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let folder = "testfleet/00000000-0000-0000-0000-000000000000";
        assert!(
            entries.contains(&(format!("{folder}/report/"), 0o777)),
            "{entries:?}"
        );
        assert!(
            entries.contains(&(format!("{folder}/ids"), 0o644)),
            "{entries:?}"
        );
        assert_eq!(paths.report, format!("/{folder}/report/report.xml"));
        assert_eq!(first_file_in(&tar), Some(b"a\nb c\n".to_vec()));
    }

    #[test]
    fn a_job_of_the_cache_network_runs_on_the_workers_with_its_variables_first() {
        let mut cached = job("t1");
        cached.spec.container.network = CACHE_NETWORK.into();
        cached
            .spec
            .env
            .insert("http_proxy".into(), "http://mine:1".into());
        let cache = CacheAccess {
            network: "fleet-cache".into(),
            env: vec![
                ("http_proxy".into(), "http://apt-cache:3142".into()),
                (
                    "PIP_INDEX_URL".into(),
                    "http://pypi-cache:5000/index/".into(),
                ),
            ],
        };
        let created = container_body(&cached, &paths(&cached, None), "w", Some(&cache));
        let host = created.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("fleet-cache"));
        let env = created.env.unwrap();
        let position = |line: &str| env.iter().position(|e| e == line).unwrap();
        assert!(
            position("http_proxy=http://apt-cache:3142") < position("http_proxy=http://mine:1"),
            "the spec's own value comes last, and wins: {env:?}"
        );
        assert!(env.contains(&"PIP_INDEX_URL=http://pypi-cache:5000/index/".to_owned()));
    }

    #[test]
    fn confinement_follows_the_spec() {
        let host = body(&job("t1")).host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.memory_swap, host.memory);
        let tmpfs = host.tmpfs.unwrap();
        assert_eq!(tmpfs["/tmp"], "size=1m,exec");
        assert_eq!(tmpfs["/scratch"], "exec");
        assert_eq!(
            host.security_opt.unwrap(),
            vec!["no-new-privileges".to_owned()]
        );
        assert_eq!(host.runtime, None, "the engine's default runtime");
        assert_eq!(host.cap_drop.unwrap(), vec!["ALL".to_owned()]);
        assert_eq!(host.cap_add.unwrap(), Vec::<String>::new());
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));

        let mut chowning = job("t4");
        chowning.spec.container.cap_add = vec!["cap_chown".into()];
        chowning.spec.user = Some("1000:1000".into());
        let created = body(&chowning);
        assert_eq!(created.user.as_deref(), Some("1000:1000"));
        assert_eq!(created.host_config.unwrap().cap_add.unwrap(), ["CHOWN"]);

        let mut privileged = job("t3");
        privileged.spec.container.no_new_privileges = false;
        let host = body(&privileged).host_config.unwrap();
        assert_eq!(host.security_opt, None, "the spec may allow setuid");

        let mut crun = job("t2");
        crun.spec.runtime = Some("crun".into());
        let host = body(&crun).host_config.unwrap();
        assert_eq!(host.runtime.as_deref(), Some("crun"));
    }
}
