//! Runs one job as a child process on the worker's host, with the semantics of
//! the Docker executor: argv without a shell, the same environment variables, a
//! timeout, capped output and the same outcomes.
//!
//! The child leads a process group of its own, and that whole group is killed
//! when the child exits, times out or the worker aborts: like a container, a test
//! leaves nothing running behind it (grandchildren included, unless one moves to
//! a session of its own with `setsid`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use testfleet_types::messages::{Job, Outcome, RuntimeReason};
use testfleet_types::now_ms;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::capture::OutputCapture;
use crate::job::{
    argv, collect_output, error_outcome, host_out_of_memory, ids_file_contents, needs_files,
    no_output, report_file_name, test_env, timed_out, LastOutput, Observed, Paths, Ran, Requeue,
};
use crate::runner_report;

/// How long output may keep arriving after the group was killed: only a process
/// that escaped the group (`setsid`) can hold the pipe open longer.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Said in the output when the pipe stays open past the drain time.
const ESCAPED: &str = "output could not be collected; did a process escape the test's group?";
/// Variables of the worker itself that a test must not inherit: the worker's
/// configuration may hold the broker's password.
const WORKER_ENV_PREFIX: &str = "TESTFLEET_";

/// Runs jobs as child processes of this worker.
#[derive(Debug, Clone, Default)]
pub struct ProcessExecutor;

impl ProcessExecutor {
    pub fn new() -> Self {
        ProcessExecutor
    }

    /// Runs `job` to its end. `interrupt` kills the process group and requeues.
    /// A batch's files live in a folder of the job's own under the system's
    /// temporary folder, removed when the job ends.
    pub async fn run(&self, job: &Job, interrupt: &CancellationToken) -> Result<Observed, Requeue> {
        let started_at_ms = now_ms();
        let clock = tokio::time::Instant::now();
        let folder = match JobFolder::create(job) {
            Ok(folder) => folder,
            Err(message) => {
                return Ok(Observed {
                    ran: error_outcome(message),
                    output: None,
                    report: None,
                    started_at_ms,
                    command_started_at_ms: now_ms(),
                    clock,
                })
            }
        };
        let command_started_at_ms = now_ms();
        let (ran, output) = match spawn(job, &folder.paths) {
            Err(message) => (error_outcome(message), None),
            Ok((child, output)) => {
                let cap = job.spec.output_cap_bytes as usize;
                let last_output = LastOutput::start();
                let reader = tokio::spawn(read_output(
                    output,
                    OutputCapture::new(cap),
                    last_output.clone(),
                ));
                let limits = Limits {
                    timeout: Duration::from_millis(job.timeout_ms()),
                    quiet: job.spec.quiet_timeout_ms.map(Duration::from_millis),
                    last_output,
                };
                let ran = supervise(child, limits, interrupt).await;
                if ran.is_err() {
                    reader.abort();
                }
                (
                    ran?,
                    Some(collect_output(reader, OUTPUT_DRAIN, ESCAPED).await),
                )
            }
        };
        let report = job.spec.writes_report().then(|| folder.report()).flatten();
        Ok(Observed {
            ran,
            output,
            report,
            started_at_ms,
            command_started_at_ms,
            clock,
        })
    }
}

/// A job's own folder on this host: its ids file and its report folder;
/// removed when dropped.
struct JobFolder {
    _dir: Option<tempfile::TempDir>,
    paths: Paths,
}

impl JobFolder {
    fn create(job: &Job) -> Result<JobFolder, String> {
        if !needs_files(job) {
            let nowhere = Paths {
                ids_file: String::new(),
                report: String::new(),
            };
            return Ok(JobFolder {
                _dir: None,
                paths: nowhere,
            });
        }
        let failed = |e: io::Error| format!("could not make the job's folder: {e}");
        let dir = tempfile::Builder::new()
            .prefix("testfleet-job-")
            .tempdir()
            .map_err(failed)?;
        let ids_file = dir.path().join("ids");
        std::fs::write(&ids_file, ids_file_contents(job)).map_err(failed)?;
        let report_dir = dir.path().join("report");
        std::fs::create_dir(&report_dir).map_err(failed)?;
        let paths = Paths {
            ids_file: ids_file.display().to_string(),
            report: report_dir.join(report_file_name(job)).display().to_string(),
        };
        Ok(JobFolder {
            _dir: Some(dir),
            paths,
        })
    }

    /// The runner's report, if it wrote one within `MAX_REPORT_BYTES`.
    fn report(&self) -> Option<Vec<u8>> {
        let path = Path::new(&self.paths.report);
        let size = path.metadata().ok()?.len();
        if size > runner_report::MAX_REPORT_BYTES {
            return None;
        }
        std::fs::read(path).ok()
    }
}

/// Starts the child in a new process group, stdout and stderr on one pipe so
/// that their interleaving is kept, as Docker's attach keeps it. The `Err` is
/// the message of an error outcome: the test never started.
fn spawn(job: &Job, paths: &Paths) -> Result<(Child, tokio::net::unix::pipe::Receiver), String> {
    let argv = argv(job, paths);
    let (program, args) = argv.split_first().ok_or("the run's command is empty")?;
    let workdir = workdir(job)?;
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(k, _)| !is_worker_variable(k))
        .chain(
            test_env(job, paths)
                .into_iter()
                .map(|(k, v)| (k.into(), v.into())),
        )
        .collect();
    let path_var = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v);
    let resolved = resolve_program(program, path_var.map(|v| v.as_os_str()), &workdir)
        .ok_or_else(|| spawn_error(program, &workdir, &io::ErrorKind::NotFound.into()))?;
    let (reader, writer) = io::pipe().map_err(|e| format!("could not make a pipe: {e}"))?;
    let writer_err = writer
        .try_clone()
        .map_err(|e| format!("could not make a pipe: {e}"))?;
    let mut command = Command::new(&resolved);
    command
        .arg0(program)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err)
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| spawn_error(program, &workdir, &e))?;
    // Dropping `command` closes this process's copies of the write end, so the
    // pipe reports end-of-file once the test's group is gone.
    drop(command);
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
        .map_err(|e| format!("could not read the test's output: {e}"))?;
    Ok((child, reader))
}

/// Where `program` is, searched as `execvp` would in the child's `PATH`
/// (relative entries from the child's working directory). Done here because
/// std spawns with `posix_spawn` (a vfork) only for a program given as a path
/// once the environment sets `PATH`; otherwise it forks the whole worker, a
/// cost per test that `scripts/profile-noop.sh` shows. `None`: not found.
fn resolve_program(
    program: &str,
    path_var: Option<&std::ffi::OsStr>,
    workdir: &Path,
) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let default_path = std::ffi::OsStr::new("/usr/local/bin:/usr/bin:/bin");
    std::env::split_paths(path_var.unwrap_or(default_path))
        .map(|dir| workdir.join(dir).join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn workdir(job: &Job) -> Result<PathBuf, String> {
    let dir = match &job.spec.workdir {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_dir()
            .map_err(|e| format!("the worker's working directory is unusable: {e}"))?,
    };
    if !dir.is_dir() {
        return Err(format!(
            "working directory `{}` does not exist on this worker",
            dir.display()
        ));
    }
    Ok(dir)
}

fn is_worker_variable(key: &std::ffi::OsStr) -> bool {
    key.to_str()
        .is_some_and(|k| k.starts_with(WORKER_ENV_PREFIX))
}

fn spawn_error(program: &str, workdir: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!(
            "could not start `{program}`: not found (searched PATH and `{}`)",
            workdir.display()
        ),
        io::ErrorKind::PermissionDenied => {
            format!("could not start `{program}`: permission denied (is it executable?)")
        }
        _ => format!("could not start `{program}`: {error}"),
    }
}

/// What a process job may take: its timeout, and how long it may stay quiet.
struct Limits {
    timeout: Duration,
    quiet: Option<Duration>,
    last_output: LastOutput,
}

/// How a supervised child ended.
enum Ended {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Quiet,
    Interrupted,
}

/// Waits for the child under its limits; whatever the end, its group is
/// killed and the child reaped before this returns.
async fn supervise(
    mut child: Child,
    limits: Limits,
    interrupt: &CancellationToken,
) -> Result<Ran, Requeue> {
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    let oom_kills = oom_kills();
    let ended = tokio::select! {
        waited = tokio::time::timeout(limits.timeout, child.wait()) => match waited {
            Ok(status) => Ended::Exited(status),
            Err(_elapsed) => Ended::TimedOut,
        },
        () = limits.last_output.quiet_for(limits.quiet) => Ended::Quiet,
        () = interrupt.cancelled() => Ended::Interrupted,
    };
    // The test's end is its group's end, as a container's end is its processes'.
    kill_group(group);
    let reaped = child.wait().await;
    match ended {
        Ended::Interrupted => Err(Requeue::Interrupted),
        Ended::TimedOut => Ok(timed_out(limits.timeout)),
        Ended::Quiet => Ok(no_output(limits.quiet.unwrap_or_default())),
        Ended::Exited(status) => Ok(match status.or(reaped) {
            Ok(status) => exited(status, oom_kills),
            Err(error) => error_outcome(format!("could not wait for the test: {error}")),
        }),
    }
}

/// How many processes the kernel killed for memory so far (`/proc/vmstat`).
fn oom_kills() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    vmstat
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
}

/// Whether the kernel killed a process for memory since it counted `before`.
fn oom_killed_since(before: Option<u64>) -> bool {
    before
        .zip(oom_kills())
        .is_some_and(|(before, now)| now > before)
}

fn kill_group(group: Option<Pid>) {
    let Some(group) = group else { return };
    if let Err(error) = killpg(group, Signal::SIGKILL) {
        // ESRCH: every process of the group had exited already.
        debug!(%error, "killing the test's process group");
    }
}

/// A signal death is reported as a shell (and Docker) would: 128 + the signal.
/// A SIGKILL testfleet did not send (the child ended by itself), while the
/// kernel's count of processes killed for memory grew since it started
/// (`oom_kills_before`), is the host running out of memory.
fn exited(status: ExitStatus, oom_kills_before: Option<u64>) -> Ran {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ran::exited(i64::from(code)),
        (None, Some(signal)) => {
            let code = 128 + i64::from(signal);
            // Process jobs have no memory limit of their own.
            if signal == Signal::SIGKILL as i32 && oom_killed_since(oom_kills_before) {
                return host_out_of_memory(Some(code));
            }
            Ran {
                outcome: Outcome::Failed,
                exit_code: Some(code),
                message: Some(format!("killed by signal {signal}")),
                reason: Some(RuntimeReason::Signal(signal as u8)),
            }
        }
        (None, None) => error_outcome("the test ended without an exit code".into()),
    }
}

async fn read_output(
    mut output: tokio::net::unix::pipe::Receiver,
    mut capture: OutputCapture,
    last_output: LastOutput,
) -> OutputCapture {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match output.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                last_output.touch();
                capture.push(&buffer[..n])
            }
            Err(error) => {
                debug!(%error, "output pipe ended with an error");
                break;
            }
        }
    }
    capture
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(test_id: &str) -> Job {
        let mut spec = testfleet_common::config::default_spec();
        spec.command = vec!["run".into(), "--test={id}".into(), "{id}{id}".into()];
        spec.env = BTreeMap::from([("K".into(), "v".into())]);
        Job::single(uuid::Uuid::nil(), test_id.into(), 2, 0, spec)
    }

    fn nowhere() -> Paths {
        Paths {
            ids_file: String::new(),
            report: String::new(),
        }
    }

    #[test]
    fn worker_configuration_is_not_inherited() {
        assert!(is_worker_variable("TESTFLEET_BROKER__URL".as_ref()));
        assert!(!is_worker_variable("PATH".as_ref()));
    }

    #[test]
    fn signals_read_like_a_shell_exit_code() {
        use std::os::unix::process::ExitStatusExt;
        // No process killed for memory since the count was taken.
        let killed = exited(ExitStatus::from_raw(9), Some(u64::MAX));
        assert_eq!(
            (killed.outcome, killed.exit_code, killed.reason),
            (Outcome::Failed, Some(137), Some(RuntimeReason::Signal(9)))
        );
        let failed = exited(ExitStatus::from_raw(3 << 8), None);
        assert_eq!(
            (failed.outcome, failed.exit_code, failed.reason),
            (Outcome::Failed, Some(3), Some(RuntimeReason::Exit))
        );
        let passed = exited(ExitStatus::from_raw(0), None);
        assert_eq!((passed.outcome, passed.reason), (Outcome::Passed, None));
    }

    #[tokio::test]
    async fn an_interrupted_job_is_requeued_and_its_group_killed() {
        let marker = format!("tf-interrupt-{}", uuid::Uuid::new_v4().simple());
        let mut job = job("t");
        job.spec.command = vec![
            "sh".into(),
            "-c".into(),
            "sh -c 'sleep 100' $0-child & sleep 100".into(),
            marker.clone(),
        ];
        let interrupt = CancellationToken::new();
        let cancel = interrupt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let executor = ProcessExecutor::new();
        let ended = executor.run(&job, &interrupt).await;
        assert!(matches!(ended, Err(Requeue::Interrupted)), "{ended:?}");
        let left = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&left.stdout)
        );
    }

    #[test]
    fn programs_are_found_in_the_childs_path_as_execvp_would() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let not_executable = bin.join("data");
        std::fs::write(&not_executable, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

        let path = std::ffi::OsString::from("/nonexistent:bin");
        let found = resolve_program("tool", Some(&path), dir.path());
        assert_eq!(found, Some(tool), "relative PATH entries from the workdir");
        assert_eq!(resolve_program("data", Some(&path), dir.path()), None);
        assert_eq!(
            resolve_program("tool", Some("/nonexistent".as_ref()), dir.path()),
            None
        );
        assert_eq!(
            resolve_program("./x", Some(&path), dir.path()),
            Some(PathBuf::from("./x")),
            "a path is the child's to resolve"
        );
        assert_eq!(
            resolve_program("sh", None, dir.path()).map(|p| p.is_absolute()),
            Some(true)
        );
    }

    #[tokio::test]
    async fn a_missing_workdir_or_program_is_an_error_outcome() {
        let mut missing_dir = job("t");
        missing_dir.spec.workdir = Some("/no/such/dir".into());
        let message = spawn(&missing_dir, &nowhere()).err().unwrap();
        assert!(message.contains("/no/such/dir"), "{message}");

        let mut missing_program = job("t");
        missing_program.spec.command = vec!["testfleet-no-such-program".into()];
        let message = spawn(&missing_program, &nowhere()).err().unwrap();
        assert!(
            message.contains("`testfleet-no-such-program`") && message.contains("not found"),
            "{message}"
        );
    }
}
