//! Fleets for tests: an aggregator and workers as real processes, sharing the
//! local broker and Docker engine, under a queue prefix of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testfleet_common::topology::Topology;
use testfleet_types::messages::{Outcome, TestResult};

use crate::netns::Netns;

pub const BROKER: &str = "amqp://127.0.0.1:5672/%2f?heartbeat=5";
pub const BUSYBOX: &str = "testfleet/busybox:latest";

/// Where cargo put the workspace's binaries (next to this test's `deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A fleet of its own: prefix, folders, processes.
pub struct Fleet {
    pub prefix: String,
    pub dir: PathBuf,
    broker_url: String,
    /// Extra environment for every process of the fleet.
    env: Vec<(String, String)>,
    aggregator: Option<Child>,
    /// A second aggregator on the same prefix and state dir, if started.
    standby: Option<Child>,
    workers: BTreeMap<String, Child>,
}

/// What `testfleet-producer --wait` did.
pub struct RunOutcome {
    pub output: Output,
    pub report_dir: PathBuf,
}

impl RunOutcome {
    pub fn exit_code(&self) -> i32 {
        self.output
            .status
            .code()
            .expect("producer exited by itself")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn run_id(&self) -> String {
        self.stdout()
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no run id on the first line\n{}", self.describe()))
            .trim()
            .to_owned()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.report_dir.join(self.run_id())
    }

    pub fn report(&self) -> Value {
        let path = self.run_dir().join("report.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.describe()));
        serde_json::from_str(&text).expect("report.json is JSON")
    }

    pub fn junit(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("junit.xml")).expect("junit.xml")
    }

    /// Final status of each test, by id.
    pub fn statuses(&self) -> BTreeMap<String, String> {
        tests(&self.report())
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_owned(),
                    t["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Number of attempts of each test, by id.
    pub fn attempts(&self) -> BTreeMap<String, usize> {
        tests(&self.report())
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_owned(),
                    t["attempts"].as_array().unwrap().len(),
                )
            })
            .collect()
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status.code(),
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

pub fn tests(report: &Value) -> impl Iterator<Item = &Value> {
    report["tests"].as_array().expect("tests array").iter()
}

impl Fleet {
    /// Starts an aggregator and `workers` workers with `slots` each.
    pub fn start(workers: usize, slots: u32) -> Fleet {
        Fleet::start_with_broker(workers, slots, BROKER, &[])
    }

    /// Starts a fleet whose every process (producer too) joins the broker at
    /// `url`, with `env` added to its environment.
    pub fn start_with_broker(workers: usize, slots: u32, url: &str, env: &[(&str, &str)]) -> Fleet {
        let prefix = format!("it-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        // The key that seals a broker journal, which its aggregators share.
        let key_file = dir.join("journal.key");
        let key = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].map(|u| u.simple().to_string());
        std::fs::write(&key_file, key.concat()).unwrap();
        let key_env = (
            "TESTFLEET_AGGREGATOR__JOURNAL_KEY_FILE".to_owned(),
            key_file.to_str().unwrap().to_owned(),
        );
        let mut fleet = Fleet {
            prefix,
            dir,
            broker_url: url.to_owned(),
            env: std::iter::once(key_env)
                .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .collect(),
            aggregator: None,
            standby: None,
            workers: BTreeMap::new(),
        };
        fleet.start_aggregator();
        for i in 0..workers {
            fleet.start_worker(&format!("{}-w{i}", fleet.prefix), slots);
        }
        fleet
    }

    fn command(&self, binary_name: &str, log: &str) -> Command {
        self.configure(Command::new(binary(binary_name)), log)
    }

    /// Points a service at this fleet's queues and appends its output to `log`.
    fn configure(&self, mut command: Command, log: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .unwrap();
        command
            .env("TESTFLEET_BROKER__URL", &self.broker_url)
            .env("TESTFLEET_BROKER__PREFIX", &self.prefix)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    pub fn start_aggregator(&mut self) {
        self.start_aggregator_with(&[]);
    }

    /// Starts the aggregator with `env` added to its environment.
    pub fn start_aggregator_with(&mut self, env: &[(&str, &str)]) {
        let child = self
            .command("testfleet-aggregator", "aggregator.log")
            .args(["--report-dir", "aggregator-reports", "--state-dir", "state"])
            .envs(env.iter().copied())
            .spawn()
            .expect("start aggregator");
        self.aggregator = Some(child);
    }

    /// Whether the aggregator is still running.
    pub fn aggregator_running(&mut self) -> bool {
        match self.aggregator.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Waits up to `limit` for the aggregator to exit by itself; its status.
    pub fn wait_aggregator_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        let child = self.aggregator.as_mut().expect("aggregator running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.aggregator = None;
                return Some(status);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a second aggregator on this fleet's prefix, sharing the first
    /// one's state dir (as a redeploy's overlap would), logging to
    /// `standby.log`.
    pub fn start_standby_aggregator(&mut self) {
        self.start_standby_aggregator_in("state");
    }

    /// Starts a second aggregator on this fleet's prefix with a state dir of
    /// its own (`state_dir`, under the fleet's folder), as on another machine.
    pub fn start_standby_aggregator_in(&mut self, state_dir: &str) {
        let child = self
            .command("testfleet-aggregator", "standby.log")
            .args(["--report-dir", "standby-reports", "--state-dir", state_dir])
            .spawn()
            .expect("start the second aggregator");
        self.standby = Some(child);
    }

    pub fn standby_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("standby.log")).unwrap_or_default()
    }

    /// Ids of the runs with a journal in the aggregator's state dir: the runs
    /// it follows now.
    pub fn journaled_runs(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("state")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".journal").map(str::to_owned))
            .collect()
    }

    /// Messages waiting in the queue where `run_id`'s results are kept while
    /// no aggregator knows the run; 0 if there is none.
    pub async fn unclaimed_count(&self, run_id: &str) -> u32 {
        self.queue_len(&self.topology().unclaimed_queue(run_id))
            .await
            .unwrap_or(0)
    }

    /// Messages waiting in `queue`, or `None` if it does not exist.
    pub async fn queue_len(&self, queue: &str) -> Option<u32> {
        let connection = lapin::Connection::connect(BROKER, Default::default())
            .await
            .unwrap();
        let count = testfleet_common::broker::message_count(&connection, queue)
            .await
            .unwrap();
        let _ = connection.close(200, "counted".into()).await;
        count
    }

    /// Takes `run_id`'s unclaimed messages (see [`Fleet::unclaimed_count`]),
    /// waiting up to `within` for `count` of them.
    pub async fn take_unclaimed(
        &self,
        run_id: &str,
        count: usize,
        within: Duration,
    ) -> Vec<Vec<u8>> {
        self.take_from(&self.topology().unclaimed_queue(run_id), count, within)
            .await
    }

    /// Messages waiting in the fleet's parked queue.
    pub async fn parked_count(&self) -> u32 {
        let connection = lapin::Connection::connect(BROKER, Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare(
                self.topology().parked.as_str().into(),
                passive,
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "counted".into()).await;
        queue.message_count()
    }

    /// Takes messages from `queue`, waiting up to `within` for `count`.
    async fn take_from(&self, queue: &str, count: usize, within: Duration) -> Vec<Vec<u8>> {
        let connection = lapin::Connection::connect(BROKER, Default::default())
            .await
            .unwrap();
        let mut channel = connection.create_channel().await.unwrap();
        let started = Instant::now();
        let mut taken = Vec::new();
        while taken.len() < count && started.elapsed() < within {
            let got = channel
                .basic_get(
                    queue.into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await;
            match got {
                Ok(Some(message)) => taken.push(message.delivery.data),
                Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                // Not declared yet: the broker closed the channel.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    channel = connection.create_channel().await.unwrap();
                }
            }
        }
        let _ = connection.close(200, "taken".into()).await;
        taken
    }

    /// Runs one of the services against this fleet's queues with `env` added,
    /// until it exits by itself (within `limit`), and returns what it did.
    pub fn run_service_to_exit(
        &self,
        binary_name: &str,
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Output {
        let mut child = Command::new(binary(binary_name))
            .env("TESTFLEET_BROKER__URL", &self.broker_url)
            .env("TESTFLEET_BROKER__PREFIX", &self.prefix)
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the service");
        let until = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    }

    pub fn kill_aggregator(&mut self) {
        let mut child = self.aggregator.take().expect("aggregator running");
        child.kill().expect("SIGKILL the aggregator");
        child.wait().unwrap();
    }

    pub fn aggregator_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("aggregator.log")).unwrap_or_default()
    }

    /// The run events every producer of this fleet wrote so far (`--events`,
    /// which [`Producer::run`] always asks for), in order per file.
    pub fn events(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// How many attempts the aggregator has counted so far, by the events.
    pub fn finished_count(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "test_finished")
            .count()
    }

    /// Every (worker, test) start so far, by the events.
    pub fn starts(&self) -> Vec<(String, String)> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "test_started")
            .filter_map(|e| {
                Some((
                    e["worker"].as_str()?.to_owned(),
                    e["test"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Workers running a test now: a `test_started` event without its
    /// `test_finished`, by the events.
    pub fn busy_workers(&self) -> Vec<String> {
        let events = self.events();
        let key = |e: &Value| (e["test"].to_string(), e["attempt"].to_string());
        let finished: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "test_finished")
            .map(key)
            .collect();
        events
            .iter()
            .filter(|e| e["event"] == "test_started" && !finished.contains(&key(e)))
            .filter_map(|e| e["worker"].as_str().map(str::to_owned))
            .filter(|w| self.workers.contains_key(w))
            .collect()
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, 4)
    }

    pub fn start_worker(&mut self, id: &str, slots: u32) {
        self.start_worker_with(id, slots, &[]);
    }

    /// Starts a worker with extra flags (e.g. `--executors process`).
    pub fn start_worker_with(&mut self, id: &str, slots: u32, extra: &[&str]) {
        let child = self
            .command("testfleet-worker", &format!("{id}.log"))
            .args(["--worker-id", id, "--concurrency", &slots.to_string()])
            .args(extra)
            .spawn()
            .expect("start worker");
        self.workers.insert(id.to_owned(), child);
    }

    /// Starts a worker inside `netns`, joining the broker at `broker_url`: a
    /// worker on another host, as far as the network goes.
    pub fn start_worker_in(&mut self, netns: &Netns, broker_url: &str, id: &str, slots: u32) {
        let mut command = Command::new("ip");
        command
            .args(netns.exec_prefix())
            .arg(binary("testfleet-worker"));
        let child = self
            .configure(command, &format!("{id}.log"))
            .env("TESTFLEET_BROKER__URL", broker_url)
            .args(["--worker-id", id, "--concurrency", &slots.to_string()])
            .spawn()
            .expect("start worker in its namespace");
        self.workers.insert(id.to_owned(), child);
    }

    /// Peak resident memory of a running worker, in bytes (`VmHWM`).
    pub fn worker_peak_rss(&self, id: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.workers[id].id()))
            .expect("worker still running");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    pub fn worker_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{id}.log"))).unwrap_or_default()
    }

    pub fn signal_worker(&self, id: &str, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.workers[id].id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the worker");
    }

    /// Waits (up to a minute) for a worker to exit by itself; returns its status.
    pub fn wait_worker(&mut self, id: &str) -> std::process::ExitStatus {
        let mut child = self.workers.remove(id).expect("worker exists");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("worker {id} did not exit within a minute");
    }

    pub fn kill_worker(&mut self, id: &str) {
        let mut child = self.workers.remove(id).expect("worker exists");
        child.kill().expect("SIGKILL the worker");
        child.wait().unwrap();
    }

    /// Writes the ids to a file and runs the producer with `--wait` and `args`.
    pub async fn run(&self, ids: &[String], args: &[&str]) -> RunOutcome {
        self.producer().run(ids, args).await
    }

    pub async fn run_producer(&self, first: &[&str], args: &[&str]) -> RunOutcome {
        self.producer().run_producer(first, args).await
    }

    /// A producer of this fleet that does not borrow it, for runs during which
    /// the test changes the fleet.
    pub fn producer(&self) -> Producer {
        Producer {
            prefix: self.prefix.clone(),
            dir: self.dir.clone(),
            broker_url: self.broker_url.clone(),
            env: self.env.clone(),
        }
    }

    /// Stops every process, deletes the fleet's queues, checks for leftovers.
    pub async fn teardown(mut self) {
        self.stop_all();
        // Bounded: a broker call that never answers must not hang a test
        // whose every assertion held (seen once under a full suite's load).
        let deleted = tokio::time::timeout(Duration::from_secs(60), self.delete_queues()).await;
        if deleted.is_err() {
            eprintln!("teardown: the fleet's queues were not all deleted within 60 s");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Deletes every queue of the fleet's prefix.
    async fn delete_queues(&self) {
        let connection = lapin::Connection::connect(BROKER, Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        for queue in Topology::new(&self.prefix, 0).queues() {
            let _ = channel.queue_delete(queue.into(), Default::default()).await;
        }
        // Queues of one run each (unclaimed results), which expire by
        // themselves only after a week.
        let listed = Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "--no-table-headers", "name"])
            .output();
        let prefix = format!("{}.", self.prefix);
        if let Ok(listed) = listed {
            for queue in String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::trim)
                .filter(|q| q.starts_with(&prefix))
            {
                let channel = connection.create_channel().await.unwrap();
                let _ = channel.queue_delete(queue.into(), Default::default()).await;
            }
        }
        let _ = connection.close(200, "test over".into()).await;
    }

    fn stop_all(&mut self) {
        let children = self
            .aggregator
            .take()
            .into_iter()
            .chain(self.standby.take())
            .chain(std::mem::take(&mut self.workers).into_values());
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `testfleet-producer` against one fleet's queues.
pub struct Producer {
    prefix: String,
    dir: PathBuf,
    broker_url: String,
    env: Vec<(String, String)>,
}

impl Producer {
    /// Sets an environment variable (a configuration override) for its runs.
    pub fn with_env(mut self, key: &str, value: &str) -> Producer {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes the ids to a file and runs the producer with `--wait` and `args`,
    /// its events in a file of the fleet's (see [`Fleet::events`]) unless
    /// `args` say where they go.
    pub async fn run(&self, ids: &[String], args: &[&str]) -> RunOutcome {
        let tag = uuid::Uuid::new_v4();
        let list = self.dir.join(format!("ids-{tag}.txt"));
        std::fs::write(&list, ids.join("\n")).unwrap();
        let events = self.dir.join(format!("events-{tag}.ndjson"));
        let mut first = vec!["--tests", list.to_str().unwrap(), "--wait"];
        if !args.contains(&"--events") {
            first.extend(["--events", events.to_str().unwrap()]);
        }
        self.run_producer(&first, args).await
    }

    /// Like [`Producer::run`], with stdout and stderr on a pseudo-terminal
    /// (util-linux `script`), as someone at a terminal runs it: what the
    /// producer drew, escape codes included, is the outcome's stdout.
    pub async fn run_in_terminal(&self, ids: &[String], args: &[&str]) -> RunOutcome {
        let list = self.dir.join(format!("ids-{}.txt", uuid::Uuid::new_v4()));
        std::fs::write(&list, ids.join("\n")).unwrap();
        let report_dir = self.dir.join("reports");
        let producer = binary("testfleet-producer");
        let mut line = vec![
            producer.to_str().unwrap(),
            "--tests",
            list.to_str().unwrap(),
        ];
        line.extend(["--wait", "--report-dir", report_dir.to_str().unwrap()]);
        line.extend_from_slice(args);
        let line: Vec<String> = line.iter().map(|a| shell_quote(a)).collect();
        let mut command = tokio::process::Command::new("script");
        command.args([
            "--quiet",
            "--return",
            "--command",
            &line.join(" "),
            "/dev/null",
        ]);
        self.finish(command, report_dir).await
    }

    pub async fn run_producer(&self, first: &[&str], args: &[&str]) -> RunOutcome {
        let report_dir = self.dir.join("reports");
        let mut command = tokio::process::Command::new(binary("testfleet-producer"));
        command
            .args(first)
            .args(["--report-dir", report_dir.to_str().unwrap()])
            .args(args);
        self.finish(command, report_dir).await
    }

    /// Runs a producer command against this fleet's queues, within 10 minutes.
    async fn finish(
        &self,
        mut command: tokio::process::Command,
        report_dir: PathBuf,
    ) -> RunOutcome {
        command
            .env("TESTFLEET_BROKER__URL", &self.broker_url)
            .env("TESTFLEET_BROKER__PREFIX", &self.prefix)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(600), command.output())
            .await
            .expect("producer finished within 10 minutes")
            .expect("producer ran");
        RunOutcome { output, report_dir }
    }
}

impl Drop for Fleet {
    /// A failed test must not leave processes behind (only signals here).
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `arg` as one word of a POSIX shell line.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Containers labelled with this run that still exist.
pub fn leftover_containers(run_id: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=testfleet.run={run_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Containers of `run_id` the engine created since `since` (Unix seconds),
/// removed or not, from its event log.
pub fn containers_created(run_id: &str, since: u64) -> Vec<String> {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let output = Command::new("docker")
        .args(["events", "--since", &since.to_string()])
        .args(["--until", &until.to_string()])
        .args(["--filter", "type=container", "--filter", "event=create"])
        .args(["--filter", &format!("label=testfleet.run={run_id}")])
        .args(["--format", "{{.Actor.ID}}"])
        .output()
        .expect("docker events");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A test command that plays a test by its id prefix, in busybox.
pub fn scripted_command(script: &str) -> Vec<String> {
    vec![
        "--".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        "{id}".into(),
    ]
}

/// Consumers the broker has on `queue`.
/// The broker's queues whose names start with `prefix`.
pub fn queues_with_prefix(prefix: &str) -> Vec<String> {
    let output = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "--no-table-headers", "name"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

pub fn consumers(queue: &str) -> usize {
    let output = Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", "list_consumers", "queue_name"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.trim() == queue)
        .count()
}

/// A first attempt's passing result, as a worker `worker_id` would publish
/// it, for tests that forge messages.
pub fn passed_result(run_id: uuid::Uuid, test_id: &str, worker_id: &str) -> TestResult {
    TestResult {
        run_id,
        test_id: test_id.into(),
        attempt: 1,
        outcome: Outcome::Passed,
        exit_code: Some(0),
        duration_ms: 1,
        worker_id: worker_id.into(),
        started_at_ms: 1,
        finished_at_ms: 2,
        output: String::new(),
        output_truncated: false,
        message: None,
        published_at_ms: 0,
        batch: None,
        reason: None,
    }
}
