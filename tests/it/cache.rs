//! The fleet's package cache (`run.network = "cache"`): a run's containers
//! reach the caches (apt-cacher-ng, proxpi; `scripts/cache.sh`) and nothing
//! else, get the variables that point apt and pip at them, and the run's
//! report gives the hits and misses the caches counted. Hermetic once the
//! images are built (which takes Debian's and PyPI's packages): the
//! upstreams are an apt repository and a Python index this test builds
//! (`data/cache_repos.py`: a library, packages depending on it directly,
//! through an alternative and through a virtual package, one broken; a
//! wheel depending on another, one broken), served on the caches' upstream
//! network only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::fixtures::{tests, Fleet, BROKER};

/// Plays an id: an apt package installed and run, a Python project
/// installed, or `direct`, which tries Debian's mirror without the cache
/// (which a container of a bridge network reaches on this machine).
const SCRIPT: &str = r#"
case "$0" in
  app-*) apt-get update -qq && apt-get install -y -qq --no-install-recommends "$0" && "$0" ;;
  pkg-*) pip install -q --disable-pip-version-check --no-cache-dir --target /tmp/site "$0" ;;
  direct) python3 -c 'import urllib.request as u; u.build_opener(u.ProxyHandler({})).open("http://deb.debian.org/debian/dists/bookworm/Release", timeout=5)' ;;
esac
"#;

const IDS: [&str; 7] = [
    "app-a",
    "app-b",
    "app-c",
    "app-broken",
    "pkg-a",
    "pkg-broken",
    "direct",
];

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The caches of one test, on networks and under names of its own, and the
/// upstream repositories behind them; all removed on drop.
struct CacheStack {
    name: String,
    dir: PathBuf,
}

impl CacheStack {
    fn start() -> CacheStack {
        let name = format!(
            "tf{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let stack = CacheStack { name, dir };
        let made = Command::new("python3")
            .arg(repo_root().join("tests/it/data/cache_repos.py"))
            .arg(stack.dir.join("repos"))
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        stack.cache_sh("up");
        // The upstreams, where only the caches can reach them.
        docker(&[
            "run",
            "-d",
            "--name",
            &format!("{}-repo", stack.name),
            "--network",
            &format!("{}-up", stack.name),
            "--network-alias",
            "aptrepo",
            "--network-alias",
            "pyrepo",
            "-v",
            &format!("{}:/repo:ro", stack.dir.join("repos").display()),
            "testfleet/cache-apt",
            "python3",
            "-m",
            "http.server",
            "80",
            "-d",
            "/repo",
        ]);
        stack
    }

    fn cache_sh(&self, command: &str) -> String {
        let out = Command::new(repo_root().join("scripts/cache.sh"))
            .arg(command)
            .env("TESTFLEET_CACHE_NAME", &self.name)
            .env("TESTFLEET_CACHE_APT_STATS", "0")
            .env("TESTFLEET_CACHE_PYPI_STATS", "0")
            .env("TESTFLEET_CACHE_PYPI_INDEX", "http://pyrepo/pypi/simple/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cache.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A configuration file for a worker and an aggregator of this stack.
    fn config(&self) -> PathBuf {
        let path = self.dir.join("cache.toml");
        std::fs::write(&path, self.cache_sh("config")).unwrap();
        path
    }
}

impl Drop for CacheStack {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{}-repo", self.name)])
            .output();
        let _ = Command::new(repo_root().join("scripts/cache.sh"))
            .arg("down")
            .env("TESTFLEET_CACHE_NAME", &self.name)
            .output();
        let volumes = [format!("{}-apt", self.name), format!("{}-pypi", self.name)];
        let _ = Command::new("docker")
            .args(["volume", "rm"])
            .args(&volumes)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A Debian image with pip whose only apt source is the test's repository.
fn client_image() -> String {
    let tag = "testfleet-test/cache-client:latest".to_owned();
    let dir = std::env::temp_dir().join(format!("testfleet-cache-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm-slim\n\
         RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip \\\n\
          && rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/* /etc/apt/sources.list \\\n\
          && echo 'deb [trusted=yes] http://aptrepo/apt/ ./' > /etc/apt/sources.list\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", &tag, dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    tag
}

/// The counts of the cache named `name` in a report.
fn counts(report: &Value, name: &str) -> (u64, u64) {
    let cache = report["cache"]["caches"]
        .as_array()
        .unwrap_or_else(|| panic!("no cache figures: {}", report["cache"]))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} figures: {}", report["cache"]));
    (
        cache["package_hits"].as_u64().unwrap(),
        cache["package_misses"].as_u64().unwrap(),
    )
}

fn statuses(report: &Value) -> BTreeMap<String, String> {
    tests(report)
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_of_the_cache_network_reaches_the_caches_and_nothing_else() {
    let image = client_image();
    let stack = CacheStack::start();
    let config = stack.config();
    let caches = stack.cache_sh("caches");
    let env = [("TESTFLEET_AGGREGATOR__CACHES", caches.trim())];
    let mut fleet = Fleet::start_with_broker(0, 0, BROKER, &env);
    let worker = format!("{}-cache", fleet.prefix);
    // One slot: packages are fetched one after another, so the counts are
    // exact (two containers asking for one file at once share a download).
    fleet.start_worker_with(&worker, 1, &["--config", config.to_str().unwrap()]);
    let ids: Vec<String> = IDS.map(String::from).into();
    let args = [
        "--image",
        &image,
        "--network",
        "cache",
        "--timeout",
        "120",
        "--max-rounds",
        "1",
        "--",
        "sh",
        "-c",
        SCRIPT,
        "{id}",
    ];
    // What apt and dpkg need of root inside the container.
    let producer = fleet.producer().with_env(
        "TESTFLEET_RUN__CAP_ADD",
        "CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETGID,SETUID",
    );

    let first = producer.run(&ids, &args).await;
    let report = first.report();
    let expected: BTreeMap<String, String> = [
        ("app-a", "Passed"),
        ("app-b", "Passed"),
        ("app-c", "Passed"),
        ("app-broken", "Failed"),
        ("pkg-a", "Passed"),
        ("pkg-broken", "Failed"),
        ("direct", "Failed"),
    ]
    .map(|(id, status)| (id.to_owned(), status.to_owned()))
    .into();
    assert_eq!(statuses(&report), expected, "{}", first.describe());
    // libfoo once fetched and twice served from the cache; each app once.
    assert_eq!(counts(&report, "apt"), (2, 4), "{}", report["cache"]);
    // pkg-a, its dependency pkg-b, pkg-broken: each fetched once.
    assert_eq!(counts(&report, "pypi"), (0, 3), "{}", report["cache"]);

    // The caches count by the second: the next run starts in a later one.
    let finished_s = report["finished_at_ms"].as_u64().unwrap() / 1000;
    while testfleet_types::now_ms() / 1000 <= finished_s {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = producer.run(&ids, &args).await;
    let again = second.report();
    assert_eq!(statuses(&again), expected, "{}", second.describe());
    assert_eq!(counts(&again, "apt"), (6, 0), "{}", again["cache"]);
    assert_eq!(counts(&again, "pypi"), (3, 0), "{}", again["cache"]);
    let summary = std::fs::read_to_string(second.run_dir().join("summary.md")).unwrap();
    assert!(
        summary.contains("**Cache:** apt 6 of 6 packages from the cache (100 %), pypi 3 of 3 packages from the cache (100 %)"),
        "{summary}"
    );
    fleet.teardown().await;
    drop(stack);
}
