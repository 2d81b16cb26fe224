//! Discovery presets on tiny real projects, listed by the real runners that
//! `scripts/setup-runners.sh` installs: pytest, cargo nextest, RSpec, go test;
//! and the presets' batched commands run by those runners through a fleet,
//! each test's result read from the runner's own report.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::fixtures::{binary, Fleet};

/// Writes `files` (path, content) under a fresh folder; returns it.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// The ids `testfleet-producer --preset <runner> --list` prints in `dir`.
fn listed(dir: &Path, preset: &str) -> Vec<String> {
    let output = Command::new(binary("testfleet-producer"))
        .args(["--preset", preset, "--list"])
        .current_dir(dir)
        // The outer cargo's settings must not leak into the project's own build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run the producer");
    assert!(
        output.status.success(),
        "{preset}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut ids: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

#[test]
fn pytest_preset_lists_node_ids() {
    let dir = project(&[(
        "tests/test_calc.py",
        "import pytest\n\
         def test_add():\n    assert 1 + 1 == 2\n\
         @pytest.mark.parametrize('n', [1, 2])\n\
         def test_square(n):\n    assert n * n >= n\n\
         class TestSub:\n    def test_sub(self):\n        assert 2 - 1 == 1\n",
    )]);
    assert_eq!(
        listed(dir.path(), "pytest"),
        [
            "tests/test_calc.py::TestSub::test_sub",
            "tests/test_calc.py::test_add",
            "tests/test_calc.py::test_square[1]",
            "tests/test_calc.py::test_square[2]",
        ]
    );
}

#[test]
fn nextest_preset_lists_binary_and_test_names() {
    let dir = project(&[
        (
            "Cargo.toml",
            "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
        ),
        (
            "src/lib.rs",
            "#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {}\n    #[test]\n    fn subtracts() {}\n}\n",
        ),
        ("tests/smoke.rs", "#[test]\nfn starts() {}\n"),
    ]);
    assert_eq!(
        listed(dir.path(), "nextest"),
        [
            "calc tests::adds",
            "calc tests::subtracts",
            "calc::smoke starts"
        ]
    );
}

#[test]
fn rspec_preset_lists_example_ids() {
    let dir = project(&[(
        "spec/calc_spec.rb",
        "RSpec.describe 'calc' do\n  it('adds') { expect(1 + 1).to eq(2) }\n  \
         context 'sub' do\n    it('subtracts') { expect(2 - 1).to eq(1) }\n  end\nend\n",
    )]);
    assert_eq!(
        listed(dir.path(), "rspec"),
        ["./spec/calc_spec.rb[1:1]", "./spec/calc_spec.rb[1:2:1]"]
    );
}

#[test]
fn go_preset_lists_tests_and_examples_but_not_benchmarks() {
    let dir = project(&[
        ("go.mod", "module example.com/calc\n\ngo 1.19\n"),
        (
            "calc.go",
            "package calc\n\nfunc Add(a, b int) int { return a + b }\n",
        ),
        (
            "calc_test.go",
            "package calc\n\nimport (\n\t\"fmt\"\n\t\"testing\"\n)\n\n\
             func TestAdd(t *testing.T) {}\nfunc TestAddNegative(t *testing.T) {}\n\
             func BenchmarkAdd(b *testing.B) {}\n\
             func ExampleAdd() {\n\tfmt.Println(Add(1, 2))\n\t// Output: 3\n}\n",
        ),
    ]);
    assert_eq!(
        listed(dir.path(), "go"),
        ["ExampleAdd", "TestAdd", "TestAddNegative"]
    );
}

#[test]
fn lines_preset_keeps_each_non_blank_line_verbatim_and_needs_a_listing() {
    let dir = project(&[]);
    let output = Command::new(binary("testfleet-producer"))
        .args(["--preset", "lines", "--list", "--discover"])
        .arg(r"printf 'a b\n\n   \nc;d $(x) \n✓\n'")
        .current_dir(dir.path())
        .output()
        .expect("run the producer");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "a b\nc;d $(x) \n✓\n",
        "blank lines dropped, the rest verbatim"
    );

    let alone = Command::new(binary("testfleet-producer"))
        .args(["--preset", "lines", "--list"])
        .current_dir(dir.path())
        .output()
        .expect("run the producer");
    assert_eq!(alone.status.code(), Some(2), "usage error: {alone:?}");
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--discover CMD"), "{stderr}");
}

/// Runs a project's suite through a fleet with the preset's batched command
/// (no command given), as process jobs in `dir`, and returns each test's
/// final status and the number of jobs (batch records) it took.
async fn batched_run(
    dir: &Path,
    preset: &str,
    extra: &[&str],
) -> (BTreeMap<String, String>, usize) {
    batched_run_listed(dir, preset, preset_listing_command(preset), extra).await
}

/// [`batched_run`] with the ids `listing` prints (run in `dir`).
async fn batched_run_listed(
    dir: &Path,
    preset: &str,
    listing: &str,
    extra: &[&str],
) -> (BTreeMap<String, String>, usize) {
    let mut fleet = Fleet::start(0, 1);
    let worker = format!("{}-proc", fleet.prefix);
    fleet.start_worker_with(&worker, 2, &["--executors", "process"]);
    let discover = format!("cd '{}' && {listing}", dir.display());
    let workdir = dir.to_str().unwrap();
    let mut args = vec![
        "--preset",
        preset,
        "--discover",
        &discover,
        "--wait",
        "--executor",
        "process",
        "--workdir",
        workdir,
        "--max-rounds",
        "1",
        "--retry-threshold",
        "1",
        "--timeout",
        "120",
    ];
    args.extend_from_slice(extra);
    let run = fleet.run_producer(&args, &[]).await;
    assert!(
        [0, 1].contains(&run.exit_code()),
        "{preset}: {}",
        run.describe()
    );
    let jobs = run.report()["batches"].as_array().unwrap().len();
    let statuses = run.statuses();
    fleet.teardown().await;
    (statuses, jobs)
}

fn preset_listing_command(preset: &str) -> &'static str {
    match preset {
        "nextest" => "cargo nextest list --message-format oneline",
        "pytest" => "python3 -m pytest --collect-only -q",
        "rspec" => "rspec --dry-run --format json",
        "go" => "go test -list .",
        other => panic!("no listing for {other}"),
    }
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(id, status)| (id.to_string(), status.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pytest_batches_read_each_tests_result_from_pytests_junit_report() {
    let dir = project(&[(
        "tests/test_calc.py",
        "import pytest\n\
         def test_add():\n    assert 1 + 1 == 2\n\
         @pytest.mark.parametrize('n', [1, 2, 'a::b'])\n\
         def test_square(n):\n    assert n != 2\n\
         class TestSub:\n    def test_sub(self):\n        print('inside TestSub')\n        assert 2 - 1 == 0\n\
         @pytest.mark.skip(reason='not today')\n\
         def test_skipped():\n    assert False\n",
    )]);
    let (statuses, jobs) = batched_run(dir.path(), "pytest", &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("tests/test_calc.py::TestSub::test_sub", "Failed"),
            ("tests/test_calc.py::test_add", "Passed"),
            ("tests/test_calc.py::test_skipped", "Passed"),
            ("tests/test_calc.py::test_square[1]", "Passed"),
            ("tests/test_calc.py::test_square[2]", "Failed"),
            ("tests/test_calc.py::test_square[a::b]", "Passed"),
        ])
    );
    assert_eq!(jobs, 1, "one batch, one pytest");
}

/// Two pytest ids that JUnit's dotted class name merges (`t/a.py::TestT::test_t`
/// and `t/a/TestT.py::test_t` are both `t.a.TestT` / `test_t`) keep their own
/// results in one batch: the preset's report names each case's file.
#[tokio::test(flavor = "multi_thread")]
async fn pytest_ids_that_junit_names_alike_keep_their_own_results() {
    let dir = project(&[
        (
            "pytest.ini",
            "[pytest]\npython_files = *.py\naddopts = --import-mode=importlib\n",
        ),
        (
            "t/a.py",
            "class TestT:\n    def test_t(self):\n        assert False\n",
        ),
        ("t/a/TestT.py", "def test_t():\n    pass\n"),
    ]);
    let listing = "printf 't/a.py::TestT::test_t\\nt/a/TestT.py::test_t\\n'";
    let (statuses, jobs) =
        batched_run_listed(dir.path(), "pytest", listing, &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("t/a.py::TestT::test_t", "Failed"),
            ("t/a/TestT.py::test_t", "Passed"),
        ])
    );
    assert_eq!(jobs, 1, "one batch: each result mapped by its file");
}

#[tokio::test(flavor = "multi_thread")]
async fn rspec_batches_read_each_examples_result_from_rspecs_json_report() {
    let dir = project(&[(
        "spec/calc_spec.rb",
        "RSpec.describe 'calc' do\n  it('adds') { expect(1 + 1).to eq(2) }\n  \
         context 'sub' do\n    it('subtracts') { expect(2 - 1).to eq(0) }\n  end\n  \
         it('waits') { pending('later'); expect(1).to eq(2) }\nend\n",
    )]);
    let (statuses, jobs) = batched_run(dir.path(), "rspec", &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("./spec/calc_spec.rb[1:1]", "Passed"),
            ("./spec/calc_spec.rb[1:2:1]", "Failed"),
            ("./spec/calc_spec.rb[1:3]", "Passed"),
        ])
    );
    assert_eq!(jobs, 1, "one batch, one rspec");
}

#[tokio::test(flavor = "multi_thread")]
async fn go_batches_read_each_tests_result_from_go_test_json() {
    let dir = project(&[
        ("go.mod", "module example.com/calc\n\ngo 1.19\n"),
        (
            "calc.go",
            "package calc\n\nfunc Add(a, b int) int { return a + b }\n",
        ),
        (
            "calc_test.go",
            "package calc\n\nimport (\n\t\"fmt\"\n\t\"testing\"\n)\n\n\
             func TestAdd(t *testing.T) {\n\tif Add(1, 2) != 3 {\n\t\tt.Fatal(\"wrong\")\n\t}\n}\n\
             func TestBroken(t *testing.T) {\n\tt.Run(\"inner\", func(t *testing.T) { t.Fatal(\"broken inside\") })\n}\n\
             func ExampleAdd() {\n\tfmt.Println(Add(1, 2))\n\t// Output: 3\n}\n",
        ),
    ]);
    let (statuses, jobs) = batched_run(dir.path(), "go", &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("ExampleAdd", "Passed"),
            ("TestAdd", "Passed"),
            ("TestBroken", "Failed"),
        ])
    );
    assert_eq!(jobs, 1, "one batch, one go test");
}

#[tokio::test(flavor = "multi_thread")]
async fn nextest_batches_read_each_tests_result_from_nextests_junit_report() {
    let dir = project(&[
        (
            "Cargo.toml",
            "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
        ),
        (
            "src/lib.rs",
            "#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {}\n    #[test]\n    fn subtracts() { panic!(\"broken\") }\n}\n",
        ),
        ("tests/smoke.rs", "#[test]\nfn starts() {}\n"),
    ]);
    let (statuses, jobs) = batched_run(dir.path(), "nextest", &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("calc tests::adds", "Passed"),
            ("calc tests::subtracts", "Failed"),
            ("calc::smoke starts", "Passed"),
        ])
    );
    assert_eq!(jobs, 1, "one batch, one nextest");
}
