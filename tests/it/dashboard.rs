//! The aggregator's dashboard in a real browser: headless Chromium, driven by
//! playwright-core (`tests/node/dashboard.mjs`), watches a run of a real
//! fleet go by: the run's counts change on the page without a reload, the
//! worker shows what it runs, `/metrics` answers, the token is required, and
//! the finished run links its report. A screenshot taken mid-run is left at
//! `$TMPDIR/testfleet-dashboard.png`.

use std::path::PathBuf;

use crate::fixtures::{scripted_command, Fleet, BROKER};

/// A port free on loopback now, for the dashboard to listen on.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_run_going_on_live() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let env = [
        ("TESTFLEET_AGGREGATOR__DASHBOARD", address.as_str()),
        ("TESTFLEET_AGGREGATOR__DASHBOARD_TOKEN", "s3cret"),
    ];
    let mut fleet = Fleet::start_with_broker(0, 0, BROKER, &env);
    fleet.start_worker_with("dash-w", 2, &["--executors", "process"]);
    let producer = fleet.producer();
    let run = tokio::spawn(async move {
        let command = scripted_command("sleep 0.4");
        let mut args = vec!["--executor", "process", "--suite", "dashboard-it"];
        args.extend(command.iter().map(String::as_str));
        let ids: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
        producer.run(&ids, &args).await
    });

    let node = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    let screenshot = std::env::temp_dir().join("testfleet-dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let watched = tokio::process::Command::new("node")
        .arg(node.join("dashboard.mjs"))
        .args([&format!("http://{address}"), "s3cret"])
        .arg(&screenshot)
        .output()
        .await
        .expect("node runs");
    let run = run.await.unwrap();
    let said = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert!(
        watched.status.success(),
        "{said}{}\naggregator:\n{}",
        String::from_utf8_lossy(&watched.stderr),
        fleet.aggregator_log()
    );
    assert_eq!(run.exit_code(), 0, "{}", run.describe());
    let seen: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    assert_ne!(seen["first"], seen["second"], "the counts changed: {seen}");
    assert!(
        seen["worker"].as_str().unwrap().contains("dash-w"),
        "{seen}"
    );
    assert_eq!(seen["verdict"], "passed");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot"
    );
    fleet.teardown().await;
}

/// A request under a name the dashboard was not told (a DNS-rebinding page)
/// is refused; the token is taken once from the page's address, then from
/// its cookie, and refused without either.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_answers_known_hosts_and_keeps_the_token_out_of_urls() {
    use std::io::{Read, Write};
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let env = [
        ("TESTFLEET_AGGREGATOR__DASHBOARD", address.as_str()),
        ("TESTFLEET_AGGREGATOR__DASHBOARD_TOKEN", "s3cret"),
        ("TESTFLEET_AGGREGATOR__DASHBOARD_HOSTS", "fleet.example"),
    ];
    let fleet = Fleet::start_with_broker(0, 0, BROKER, &env);
    let ask = |path: &str, host: &str, extra: &str| -> String {
        for _ in 0..100 {
            if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                return answer;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the dashboard never listened");
    };
    let status = |answer: &str| {
        answer
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    let bearer = "Authorization: Bearer s3cret\r\n";
    assert_eq!(status(&ask("/api/state", &address, bearer)), "200");
    assert_eq!(
        status(&ask("/api/state", "fleet.example:80", bearer)),
        "200",
        "a listed name"
    );
    assert_eq!(
        status(&ask(
            "/api/state",
            &format!("attacker.example:{port}"),
            bearer
        )),
        "403"
    );
    let foreign_origin = format!("{bearer}Origin: http://attacker.example:{port}\r\n");
    assert_eq!(status(&ask("/api/state", &address, &foreign_origin)), "403");
    assert_eq!(status(&ask("/api/state", &address, "")), "401", "no token");
    assert_eq!(
        status(&ask("/api/state?token=s3cret", &address, "")),
        "401",
        "not in a URL but the page's"
    );
    let opened = ask("/?token=s3cret", &address, "");
    assert_eq!(status(&opened), "303", "{opened}");
    let cookie = opened
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        status(&ask("/api/state", &address, &format!("Cookie: {pair}\r\n"))),
        "200"
    );
    fleet.teardown().await;
}
