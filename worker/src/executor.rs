//! The executors a worker runs jobs with, chosen per job by its run spec, and
//! what a job's run yields once its executor is done.
//!
//! An enum rather than a trait object: there are two executors, each with its own
//! needs (Docker's engine health, leftovers and sweeps), and the service loop
//! matches on them where they differ. Both report what they observed in the
//! shared vocabulary of `job`, and `results` turns that into results, a batch
//! record and follow-up jobs the same way for both.

use testfleet_types::messages::{BatchRecord, ExecutorKind, Job, TestResult};
use testfleet_types::now_ms;
use tokio_util::sync::CancellationToken;

use crate::confinement::Confinement;
use crate::docker::DockerExecutor;
use crate::host::CpuTimes;
use crate::job::{error_outcome, Cleanup, Observed, Requeue};
use crate::process::ProcessExecutor;
use crate::results::{self, Settling, Yield};

/// A job's results, batch record and follow-up jobs, and what is left to do
/// after its job is acked.
pub struct Finished {
    pub results: Vec<TestResult>,
    pub batch: Option<BatchRecord>,
    /// Jobs for tests the runner did not report, published with the results.
    pub follow_ups: Vec<Job>,
    pub cleanup: Option<Cleanup>,
}

impl Finished {
    fn from(settled: Yield, cleanup: Option<Cleanup>) -> Self {
        Finished {
            results: settled.results,
            batch: settled.batch,
            follow_ups: settled.follow_ups,
            cleanup,
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

    async fn run(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<(Observed, Option<Cleanup>), Requeue> {
        match self {
            Executor::Docker(docker) => docker.run(job, interrupt).await,
            Executor::Process(process) => Ok((process.run(job, interrupt).await?, None)),
        }
    }
}

/// The executors this worker was started with, and what its Docker jobs
/// may loosen.
#[derive(Clone)]
pub struct Executors {
    worker_id: String,
    enabled: Vec<Executor>,
    confinement: Confinement,
}

impl Executors {
    pub fn new(worker_id: String, enabled: Vec<Executor>, confinement: Confinement) -> Self {
        Executors {
            worker_id,
            enabled,
            confinement,
        }
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
    /// worker lacks is an `Error` for each of its tests, naming the worker: the
    /// aggregator counts it as an infrastructure error and retries it, instead
    /// of the job bouncing between workers until the broker dead-letters it.
    /// Unreported tests run again in up to `parts` jobs.
    pub async fn run(
        &self,
        job: &Job,
        parts: usize,
        interrupt: &CancellationToken,
    ) -> Result<Finished, Requeue> {
        let before = CpuTimes::now();
        let (observed, cleanup) = self.observe(job, interrupt).await?;
        let host_busy = before
            .zip(CpuTimes::now())
            .and_then(|(b, a)| b.busy_permille_since(a));
        let settled = results::settle(
            job,
            observed,
            &Settling {
                worker_id: &self.worker_id,
                parts,
                host_busy_permille: host_busy,
            },
        );
        Ok(Finished::from(settled, cleanup))
    }

    /// Runs `job`'s command with the executor its spec names and returns
    /// what it observed (see [`Executors::run`] for a missing executor). A
    /// Docker job that asks for more than this worker's confinement allows
    /// is refused the same way, before any container exists.
    pub async fn observe(
        &self,
        job: &Job,
        interrupt: &CancellationToken,
    ) -> Result<(Observed, Option<Cleanup>), Requeue> {
        let wanted = job.spec.executor;
        if wanted == ExecutorKind::Docker {
            if let Err(refused) = self.confinement.check(&job.spec) {
                let message = format!(
                    "worker {} refuses this job's container: {refused}",
                    self.worker_id
                );
                return Ok((refusal(message), None));
            }
        }
        match self.enabled.iter().find(|e| e.kind() == wanted) {
            Some(executor) => executor.run(job, interrupt).await,
            None => Ok((self.refuse(wanted), None)),
        }
    }

    /// The id of the image a Docker job runs in, as this worker's engine
    /// knows it; `None` for process jobs or an image it lacks.
    pub async fn image_id(&self, job: &Job) -> Option<String> {
        match job.spec.executor {
            ExecutorKind::Docker => self.docker()?.image_id(&job.spec.image).await,
            ExecutorKind::Process => None,
        }
    }

    fn refuse(&self, wanted: ExecutorKind) -> Observed {
        refusal(format!(
            "worker {} does not run {} jobs (its executors: {}); start workers with `--executors {}`",
            self.worker_id,
            wanted.as_str(),
            self.kinds().join(","),
            wanted.as_str(),
        ))
    }
}

/// A job this worker will not run, as an `Error` saying why.
fn refusal(message: String) -> Observed {
    Observed {
        ran: error_outcome(message),
        output: None,
        report: None,
        started_at_ms: now_ms(),
        command_started_at_ms: now_ms(),
        clock: tokio::time::Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_types::messages::Outcome;

    #[tokio::test]
    async fn a_job_for_a_missing_executor_is_an_error_that_says_why() {
        let settings =
            crate::settings::WorkerSettings::from_config(&testfleet_common::config::defaults())
                .unwrap();
        let executors = Executors::new(
            "w1".into(),
            vec![Executor::Process(ProcessExecutor::new())],
            settings.confinement,
        );
        let job = Job::single(
            uuid::Uuid::nil(),
            "t".into(),
            1,
            u64::MAX,
            testfleet_common::config::default_spec(),
        );
        let result = executors
            .run(&job, 2, &CancellationToken::new())
            .await
            .unwrap()
            .results
            .remove(0);
        assert_eq!(result.outcome, Outcome::Error);
        let message = result.message.unwrap();
        assert!(
            message.contains("w1 does not run docker jobs") && message.contains("process"),
            "{message}"
        );
    }
}
