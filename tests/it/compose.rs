//! The fleet of `compose.yaml`, for real: images built locally (`scripts/images.sh`),
//! `docker-compose up` with three workers, a worker in a network namespace of the
//! test's own joining through the broker's published port with nothing but its URL,
//! a run to its verdict through the one-shot producer service, a scale to five
//! workers and back to three, and `down` leaving nothing behind.
//!
//! Only the v1 `docker-compose` (Debian's 1.29) can be installed here; the file is
//! Compose Specification, so `docker compose` v2 should run it too, untested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{binary, leftover_containers, tests};
use crate::netns::Netns;

/// The repository root, where `compose.yaml` and `scripts/` are.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `check` every second until it returns `Ok`, or panics after `limit`
/// with the last state it saw.
fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(state) if started.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last seen: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Builds (or finds up to date) every image the fleet runs, from the binaries of
/// the current build: the ones this test binary sits beside.
fn build_images() {
    let bin_dir = binary("testfleet-worker").parent().unwrap().to_owned();
    let started = Instant::now();
    let output = Command::new(repo().join("scripts/images.sh"))
        .env("TESTFLEET_BIN_DIR", &bin_dir)
        .output()
        .expect("run scripts/images.sh");
    assert!(output.status.success(), "images.sh: {}", text(&output));
    eprintln!(
        "scripts/images.sh took {:.1?}:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A compose project of the test's own (`-p`), so parallel tests and reruns never
/// meet; `down` on drop, so a failed assertion leaves no fleet behind.
struct Project {
    name: String,
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    down: bool,
}

impl Project {
    fn new() -> Project {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let name = format!("tfc{tag}");
        let dir = std::env::temp_dir().join(&name);
        for sub in ["work", "reports"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let env = vec![
            ("RABBITMQ_IMAGE", "testfleet/rabbitmq:latest".to_owned()),
            // On every address, so that the namespace's worker reaches it through
            // its veth link; on a free port, chosen by the engine.
            ("RABBITMQ_BIND", "0.0.0.0".to_owned()),
            ("RABBITMQ_PORT", String::new()),
            ("RABBITMQ_USER", format!("tf-{tag}")),
            (
                "RABBITMQ_PASSWORD",
                uuid::Uuid::new_v4().simple().to_string(),
            ),
            ("TESTFLEET_REPORTS", path_str(&dir.join("reports"))),
            ("TESTFLEET_WORKDIR", path_str(&dir.join("work"))),
            ("RUST_LOG", "info".to_owned()),
        ];
        Project {
            name,
            dir,
            env,
            down: false,
        }
    }

    fn setting(&self, key: &str) -> &str {
        &self.env.iter().find(|(k, _)| *k == key).unwrap().1
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .arg("-f")
            .arg(repo().join("compose.yaml"))
            .args(["-p", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("docker-compose {args:?}: {e}"))
    }

    /// Runs a compose command that must succeed; returns its stdout.
    fn must(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "docker-compose {args:?}: {}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn up(&self, workers: usize) {
        self.must(&["up", "-d", "--scale", &format!("worker={workers}")]);
    }

    /// Consumers on the workers' presence queue, as the broker counts them:
    /// one per worker.
    fn workers_on_the_broker(&self) -> Result<usize, String> {
        let queues = self.output(&[
            "exec",
            "-T",
            "rabbitmq",
            "rabbitmqctl",
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "consumers",
        ]);
        let out = String::from_utf8_lossy(&queues.stdout);
        out.lines()
            .find_map(|line| line.strip_prefix("testfleet.workers\t"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| text(&queues))
    }

    /// Ids of this project's containers, by label, optionally of one service.
    fn containers(&self, service: Option<&str>, running_only: bool) -> Vec<String> {
        let mut args = vec![
            "ps".to_owned(),
            "-q".to_owned(),
            "--no-trunc".to_owned(),
            "--filter".to_owned(),
            format!("label=com.docker.compose.project={}", self.name),
        ];
        if let Some(service) = service {
            args.extend([
                "--filter".to_owned(),
                format!("label=com.docker.compose.service={service}"),
            ]);
        }
        if !running_only {
            args.push("-a".to_owned());
        }
        docker_ids(&args)
    }

    /// Waits until `n` worker containers run and `n` + `extra` workers are on
    /// the broker.
    fn wait_for_workers(&self, n: usize, extra: usize) {
        wait_until(
            &format!("{n} worker containers and {} consumers", n + extra),
            Duration::from_secs(120),
            || {
                let running = self.containers(Some("worker"), true).len();
                let consumers = self.workers_on_the_broker()?;
                if running == n && consumers == n + extra {
                    Ok(())
                } else {
                    Err(format!("{running} workers, {consumers} consumers"))
                }
            },
        );
    }

    /// The broker's port on the host.
    fn broker_port(&self) -> u16 {
        let address = self.must(&["port", "rabbitmq", "5672"]);
        address
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("published port in {address:?}"))
    }

    fn down(&mut self) -> Output {
        self.down = true;
        self.output(&["down", "-v", "--remove-orphans", "--timeout", "30"])
    }
}

impl Drop for Project {
    /// A test that failed half-way still takes its fleet down. Blocking here is
    /// deliberate: nothing else would ever remove it.
    fn drop(&mut self) {
        if !self.down {
            let output = self.down();
            if !output.status.success() {
                eprintln!("docker-compose down: {}", text(&output));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

/// `docker ARGS` listing ids, one per line.
fn docker_ids(args: &[String]) -> Vec<String> {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A worker on "another host": a process in a network namespace, given only the
/// broker's URL. Killed on drop.
struct RemoteWorker {
    id: String,
    log: PathBuf,
    child: Child,
}

impl RemoteWorker {
    fn start(netns: &Netns, url: &str, dir: &Path) -> RemoteWorker {
        let id = format!("{}-remote", netns.name);
        let log = dir.join("remote-worker.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(netns.exec_prefix())
            .arg(binary("testfleet-worker"))
            .args(["--worker-id", &id, "--concurrency", "2"])
            .env("TESTFLEET_BROKER__URL", url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the worker in its namespace");
        RemoteWorker { id, log, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: an idle worker drains at once and exits 0.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_until("the remote worker to exit", Duration::from_secs(60), || {
            self.child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "running".to_owned())
        });
        assert!(status.success(), "remote worker: {status}\n{}", self.log());
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small suite for the sample image: 13 passing, 2 flaky, 1 failing. Three
/// failures in 16 on the first round are under the run's retry threshold, so the
/// run takes three rounds.
fn suite_ids() -> Vec<String> {
    let pass = (1..=13).map(|i| format!("pass/compose-{i:02}"));
    let flaky = (1..=2).map(|i| format!("flaky/compose-{i:02}"));
    pass.chain(flaky)
        .chain(["fail/compose-01".to_owned()])
        .collect()
}

/// The run's settings; the timeout is generous since the machine may be busy.
const RUN_CONFIG: &str = r#"[run]
suite = "compose"
image = "testfleet/examples:latest"
command = ["sh", "/suite/run-test.sh", "{id}"]
timeout_secs = 120.0
deadline_secs = 900
retry_threshold = 0.25
"#;

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("report.json is JSON")
}

#[test]
fn a_compose_fleet_runs_scales_takes_a_remote_worker_and_leaves_nothing() {
    let started = Instant::now();
    build_images();
    let images_done = started.elapsed();
    let mut project = Project::new();

    let up_started = Instant::now();
    project.up(3);
    project.wait_for_workers(3, 0);
    let up_took = up_started.elapsed();
    let broker = project.containers(Some("rabbitmq"), true);
    let aggregator = project.containers(Some("aggregator"), true);
    assert_eq!((broker.len(), aggregator.len()), (1, 1));

    // Another host needs only the broker's URL: its address as the namespace
    // sees this machine, the published port, and the fleet's user.
    let netns = Netns::create();
    let url = format!(
        "amqp://{}:{}@{}:{}/%2f?heartbeat=5",
        project.setting("RABBITMQ_USER"),
        project.setting("RABBITMQ_PASSWORD"),
        netns.host_ip,
        project.broker_port()
    );
    let remote = RemoteWorker::start(&netns, &url, &project.dir);
    project.wait_for_workers(3, 1);

    let ids = suite_ids();
    let work = project.dir.join("work");
    std::fs::write(work.join("tests.txt"), ids.join("\n")).unwrap();
    std::fs::write(work.join("testfleet.toml"), RUN_CONFIG).unwrap();
    let run_started = Instant::now();
    let run = project.output(&[
        "run",
        "--rm",
        "-T",
        "producer",
        "--config",
        "testfleet.toml",
        "--tests",
        "tests.txt",
        "--wait",
        "--report-dir",
        "reports",
    ]);
    let run_took = run_started.elapsed();
    assert_eq!(
        run.status.code(),
        Some(1),
        "tests failed → exit 1\n{}",
        text(&run)
    );
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let run_id = stdout.lines().next().unwrap_or_default().trim().to_owned();
    assert!(stdout.contains("fail/compose-01"), "{stdout}");

    // The producer's copy (in its /work) and the aggregator's (in its mounted
    // report folder) are the same run's.
    let report = read_report(&work.join("reports").join(&run_id).join("report.json"));
    let aggregator_report = read_report(
        &project
            .dir
            .join("reports")
            .join(&run_id)
            .join("report.json"),
    );
    for report in [&report, &aggregator_report] {
        assert_eq!(report["verdict"], "TestsFailed");
        assert_eq!(report["rounds"], 3);
    }
    let mut workers_used = BTreeSet::new();
    let mut remote_attempts = 0;
    assert_eq!(
        tests(&report).count(),
        ids.len(),
        "every test reported once"
    );
    for test in tests(&report) {
        let id = test["id"].as_str().unwrap();
        let attempts = test["attempts"].as_array().unwrap();
        let expected = match id.split('/').next().unwrap() {
            "pass" => ("Passed", 1),
            "flaky" => ("Flaky", 2),
            "fail" => ("Failed", 3),
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(
            (test["status"].as_str().unwrap(), attempts.len()),
            expected,
            "{id}"
        );
        for attempt in attempts {
            let worker = attempt["worker_id"].as_str().unwrap().to_owned();
            remote_attempts += usize::from(worker == remote.id);
            workers_used.insert(worker);
        }
    }
    // A compose worker's id starts with its hostname: its container's short id.
    let compose_workers: Vec<String> = project
        .containers(Some("worker"), true)
        .iter()
        .map(|id| id[..12].to_owned())
        .collect();
    let ran_in_compose = workers_used
        .iter()
        .filter(|w| compose_workers.iter().any(|c| w.starts_with(c.as_str())))
        .count();
    assert!(
        ran_in_compose >= 2 && ran_in_compose + 1 == workers_used.len(),
        "tests ran on the compose workers {compose_workers:?} and the remote one: {workers_used:?}"
    );
    let remote_log = remote.log();
    let remote_finished = remote_log
        .lines()
        .filter(|l| l.contains("test finished") && l.contains(&format!("run={run_id}")))
        .count();
    assert!(
        remote_finished > 0 && remote_finished == remote_attempts,
        "the remote worker ran {remote_attempts} attempts of the run by the report, \
         {remote_finished} by its log:\n{remote_log}"
    );
    assert!(
        !remote_log.contains(project.setting("RABBITMQ_PASSWORD")),
        "no password in logs"
    );
    remote.stop();
    project.wait_for_workers(3, 0);

    // No process job runs inside a worker's own container, which holds the
    // engine's socket (root on the host): each test is an error that says so.
    std::fs::write(work.join("process.txt"), "proc-1\nproc-2\nproc-3\n").unwrap();
    let process_run = project.output(&[
        "run",
        "--rm",
        "-T",
        "producer",
        "--tests",
        "process.txt",
        "--executor",
        "process",
        "--max-rounds",
        "1",
        "--wait",
        "--report-dir",
        "reports",
        "--",
        "sh",
        "-c",
        "echo ran-in=$(hostname)",
    ]);
    assert!(
        matches!(process_run.status.code(), Some(1 | 3)),
        "tests failed: {}",
        text(&process_run)
    );
    let process_id = String::from_utf8_lossy(&process_run.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let report = read_report(&work.join("reports").join(&process_id).join("report.json"));
    assert_eq!(tests(&report).count(), 3);
    for test in tests(&report) {
        assert_eq!(test["status"], "Error", "{test}");
        let message = test["attempts"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("does not run process jobs"),
            "{} refused by a compose worker: {message:?}",
            test["id"]
        );
    }

    // Scaling touches the workers only: the broker and aggregator stay as they are.
    let scale_started = Instant::now();
    project.up(5);
    project.wait_for_workers(5, 0);
    project.up(3);
    project.wait_for_workers(3, 0);
    let scale_took = scale_started.elapsed();
    assert_eq!(project.containers(Some("rabbitmq"), true), broker);
    assert_eq!(project.containers(Some("aggregator"), true), aggregator);

    let label = format!("label=com.docker.compose.project={}", project.name);
    let networks_and_volumes = || {
        ["network", "volume"].map(|kind| {
            docker_ids(&[
                kind.to_owned(),
                "ls".to_owned(),
                "-q".to_owned(),
                "--filter".to_owned(),
                label.clone(),
            ])
        })
    };
    // The check after `down` means something only if the label finds them now.
    let [networks, volumes] = networks_and_volumes();
    assert_eq!(
        (networks.len(), volumes.len()),
        (1, 1),
        "the project's network and volume"
    );

    let down_started = Instant::now();
    let down = project.down();
    assert!(down.status.success(), "down: {}", text(&down));
    let down_took = down_started.elapsed();
    assert_eq!(project.containers(None, false), Vec::<String>::new());
    assert_eq!(
        networks_and_volumes(),
        [Vec::<String>::new(), Vec::new()],
        "no network or volume left"
    );
    assert_eq!(leftover_containers(&run_id), Vec::<String>::new());
    eprintln!(
        "images {images_done:.1?}, up {up_took:.1?}, run {run_took:.1?}, scale 3→5→3 {scale_took:.1?}, \
         down {down_took:.1?}, total {:.1?}",
        started.elapsed()
    );
}
