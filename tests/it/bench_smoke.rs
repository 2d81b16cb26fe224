//! The benchmark command cannot rot: `scripts/bench.sh --quick` on a subset
//! runs end to end against the real broker and prints every figure it owes,
//! and fails (exit 1) when a run it times did not pass every test (the host
//! network rows once timed 200 refused jobs).

use std::process::Command;

#[test]
fn the_quick_benchmark_prints_every_figure_of_its_subset() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(format!("{root}/scripts/bench.sh"))
        .args([
            "--quick",
            "throughput",
            "overhead",
            "wide",
            "scheduling",
            "recovery",
            "fairness",
            "ab",
        ])
        // The test suite builds debug binaries; quick figures are no benchmark.
        .env("TESTFLEET_BENCH_PROFILE", "debug")
        .output()
        .expect("bench.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for figure in [
        "fresh ÷ seed",
        "crun: fresh ÷ seed, both crun",
        "parallel -j4 true, tests/s",
        "testfleet, tests/s",
        "testfleet ÷ parallel",
        "publish→start p50, ms",
        "publish→start p99, ms",
        "aggregator peak RSS, MB",
        "testfleet ÷ xargs (time)",
        "gets_in_flight=1 ÷ xargs (time)",
        "arrival: makespan ÷ bound",
        "longest-first: makespan ÷ bound",
        "SIGKILL → start elsewhere, s",
        "behind the big run: first start, s",
        "behind the big run ÷ alone",
        "two equal runs: finish spread",
        "spurious regressions",
        "A/B run, s",
    ] {
        let line = stdout
            .lines()
            .find(|line| line.contains(figure))
            .unwrap_or_else(|| panic!("no `{figure}` in the table:\n{stdout}"));
        // A figure is a number: the third column, after the benchmark's name.
        let value = line.split(figure).nth(1).unwrap().split_whitespace().next();
        assert!(
            value.is_some_and(|v| v.parse::<f64>().is_ok()),
            "`{figure}` has no number: {line}"
        );
    }
}
