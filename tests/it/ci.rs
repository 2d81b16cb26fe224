//! CI integration: in a GitHub Actions step, `--wait` appends the run's
//! Markdown summary to the step's summary page (`GITHUB_STEP_SUMMARY`); the
//! CI examples under `examples/ci/` are well-formed and run what the README
//! says.

use std::path::PathBuf;

use crate::fixtures::{scripted_command, Fleet};

const SCRIPT: &str = r#"
case "$1" in
  pass-*) exit 0 ;;
  *) echo "assertion failed in $1" >&2; exit 3 ;;
esac
"#;

/// The summary goes after what the page already holds, as the report's
/// `summary.md` has it.
#[tokio::test(flavor = "multi_thread")]
async fn wait_appends_the_summary_to_githubs_step_summary() {
    let mut fleet = Fleet::start(0, 0);
    fleet.start_worker_with("ci-w", 2, &["--executors", "process"]);
    let page = std::env::temp_dir().join(format!("step-summary-{}.md", uuid::Uuid::new_v4()));
    std::fs::write(&page, "## an earlier step\n").unwrap();
    let producer = fleet
        .producer()
        .with_env("GITHUB_STEP_SUMMARY", page.to_str().unwrap());
    let command = scripted_command(SCRIPT);
    let mut args = vec!["--executor", "process", "--max-rounds", "1"];
    args.extend(command.iter().map(String::as_str));
    let run = producer
        .run(&["pass-1".to_owned(), "fail-1".to_owned()], &args)
        .await;
    assert_eq!(run.exit_code(), 3, "{}", run.describe());
    let summary = std::fs::read_to_string(run.run_dir().join("summary.md")).unwrap();
    let written = std::fs::read_to_string(&page).unwrap();
    assert_eq!(written, format!("## an earlier step\n{summary}\n"));
    assert!(summary.contains("fail-1"), "{summary}");
    std::fs::remove_file(page).unwrap();
    fleet.teardown().await;
}

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/ci")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each example is YAML its CI system can read, submits to a fleet with
/// `--wait`, keeps `junit.xml`, and posts `summary.md` with the platform's
/// own CLI.
#[test]
fn the_ci_examples_submit_upload_junit_and_comment() {
    for (name, comment) in [
        ("github-actions.yml", "gh pr comment"),
        ("gitlab-ci.yml", "glab mr note"),
    ] {
        let text = example(name);
        let parsed = std::process::Command::new("python3")
            .args(["-c", "import sys, yaml; yaml.safe_load(sys.stdin)"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(text.as_bytes())?;
                child.wait()
            })
            .expect("python3 runs");
        assert!(parsed.success(), "{name} is not YAML");
        for needed in [
            "testfleet-producer",
            "--wait",
            "junit.xml",
            "summary.md",
            comment,
        ] {
            assert!(text.contains(needed), "{name} lacks {needed}");
        }
    }
}

/// The Kubernetes manifests (a worker Deployment, KEDA's ScaledObject and
/// ScaledJob on the jobs queues) match their kinds' schemas, as
/// `tests/node/validate-manifests.mjs` checks them (scripts/test.sh installs
/// its packages first).
#[test]
fn the_kubernetes_manifests_match_their_schemas() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    let output = std::process::Command::new("node")
        .arg(dir.join("validate-manifests.mjs"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for kind in ["Deployment", "ScaledObject", "ScaledJob"] {
        assert!(stdout.contains(kind), "{kind} checked: {stdout}");
    }
}
