//! A real third-party suite (`six`'s tests from its PyPI sdist) through a real
//! fleet with the one-line run (`--preset pytest --image …`: listed in the
//! image, batched) must give the same pass/fail set as pytest run directly
//! over the suite: `examples/third-party/run.sh` does both and compares.

use std::process::Command;

use crate::fixtures::binary;

#[test]
fn six_through_the_one_line_run_passes_and_fails_exactly_as_pytest_alone() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = binary("testfleet-producer").parent().unwrap().to_owned();
    let output = Command::new("bash")
        .arg(root.join("examples/third-party/run.sh"))
        .env("TESTFLEET_SKIP_BUILD", "1")
        .env("TESTFLEET_BIN_DIR", &bin_dir)
        .output()
        .expect("run examples/third-party/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("== same pass/fail set: 200 tests"),
        "{stdout}"
    );
    assert!(stdout.contains("fleet verdict: exit 0"), "{stdout}");
    let containers: usize = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("== ")?
                .strip_suffix(" containers for 200 tests")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("containers counted: {stdout}"));
    assert!(
        containers <= 8,
        "batched: {containers} containers for 200 tests\n{stdout}"
    );
}
