//! The testfleet worker: a stateless consumer that runs each job in a fresh Docker
//! container, or as a child process on its host, and publishes what happened.
//!
//! Layout:
//! - [`settings`]: configuration into validated settings, in one place.
//! - [`service`]: the loop that owns the broker session and the running jobs.
//! - [`taker`]: which job a free slot takes next, from the queues of open
//!   runs and the shared one, in turn.
//! - [`turns`]: whose turn it is, by smooth weighted round-robin (pure).
//! - [`follows`]: which runs' queues it follows, from notices (pure).
//! - [`heartbeat`]: what the worker runs now, said every few seconds.
//! - [`host`]: the host its tests run on, its CPUs and how busy they are.
//! - [`job_task`]: what one job's task does, from its delivery to its ack.
//! - [`outbox`]: results and start events on their way to the broker, batched.
//! - [`executor`]: the executors a worker has, picking one per job, and what a
//!   job's run yields.
//! - [`job`]: what every executor shares (argv, environment, files, outcomes,
//!   output); a leaf that imports no executor.
//! - [`results`]: a job's run as per-test results, a batch record and the
//!   jobs its unreported tests run again in.
//! - [`runner_report`]: per-test results from a runner's own report (JUnit
//!   XML, `go test -json`, RSpec JSON), mapped back to the listed ids.
//! - [`discovery`]: listing a suite's tests in its image for a producer.
//! - [`confinement`]: what a Docker job may loosen, as the worker allows it (pure).
//! - [`docker`]: running one job in a container (the only code that talks to Docker).
//! - [`process`]: running one job as a child process in its own process group.
//! - [`labels`]: container labels and the rule that tells orphans (pure).
//! - [`phases`]: where a Docker job's time goes, logged at shutdown.
//! - [`warm`]: warm mode's pool of kept containers (`run.container_mode`).
//! - [`capture`]: head-and-tail output capture under a cap.

pub mod capture;
pub mod confinement;
pub mod discovery;
pub mod docker;
pub mod executor;
pub mod follows;
pub mod heartbeat;
pub mod host;
pub mod job;
pub mod job_task;
pub mod labels;
pub mod outbox;
pub mod phases;
pub mod process;
pub mod results;
pub mod runner_report;
pub mod service;
pub mod settings;
pub mod taker;
pub mod turns;
pub mod warm;

pub use service::{run, WorkerError};
pub use settings::WorkerSettings;
