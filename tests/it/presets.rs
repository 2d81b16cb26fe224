//! Discovery presets on tiny real projects, listed by the real runners that
//! `scripts/setup-runners.sh` installs: pytest, cargo nextest, RSpec, go test;
//! and the presets' batched commands run by those runners through a fleet,
//! each test's result read from the runner's own report: as process jobs on
//! this machine, and in containers of a plain image of the runner made from
//! Debian's packages (`scripts/runner-images.sh`), listed inside it, the way
//! a user's image runs.

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
/// (no command given), as process jobs in `dir` and then in a container of
/// the runner's plain image; asserts that both give the same statuses and
/// returns them, with the number of jobs (batch records) each took.
async fn batched_run(
    dir: &Path,
    preset: &str,
    extra: &[&str],
) -> (BTreeMap<String, String>, usize) {
    let on_host = batched_run_listed(dir, preset, preset_listing_command(preset), extra).await;
    let image = SuiteImage::build(dir, preset);
    let in_image = batched_run_in_image(&image, None, extra).await;
    assert_eq!(
        on_host.statuses, in_image.statuses,
        "{preset}: process jobs and containers agree"
    );
    assert_eq!(
        on_host.jobs, in_image.jobs,
        "{preset}: as many jobs either way"
    );
    (on_host.statuses, on_host.jobs)
}

/// What a batched run ended with: each test's status and its last attempt's
/// message, and the jobs (batch records) it took.
struct Batched {
    statuses: BTreeMap<String, String>,
    messages: BTreeMap<String, String>,
    jobs: usize,
}

impl Batched {
    fn of(run: &crate::fixtures::RunOutcome) -> Batched {
        let report = run.report();
        let messages = crate::fixtures::tests(&report)
            .map(|t| {
                let last = t["attempts"].as_array().unwrap().last().unwrap();
                let message = last["message"].as_str().unwrap_or_default().to_owned();
                (t["id"].as_str().unwrap().to_owned(), message)
            })
            .collect();
        Batched {
            statuses: run.statuses(),
            messages,
            jobs: report["batches"].as_array().unwrap().len(),
        }
    }
}

/// A project's suite in an image of its runner (`testfleet/runner-<preset>`,
/// made from Debian's packages), at `/suite`; removed when dropped.
struct SuiteImage {
    tag: String,
    preset: String,
}

impl SuiteImage {
    fn build(dir: &Path, preset: &str) -> SuiteImage {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/runner-images.sh");
        let made = Command::new(script)
            .arg(preset)
            .status()
            .expect("runner-images.sh");
        assert!(made.success(), "the {preset} runner's image");
        let tag = format!("testfleet-it/suite-{}", uuid::Uuid::new_v4().simple());
        let mut dockerfile =
            format!("FROM testfleet/runner-{preset}\nCOPY . /suite\nWORKDIR /suite\n");
        if preset == "nextest" {
            // Built into the image, as a user's image would carry its build.
            dockerfile.push_str(
                "ENV CARGO_TARGET_DIR=/suite/target\nRUN cargo build --offline --tests\n",
            );
        }
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        // What a run on this machine left beside the suite stays here (a
        // lock file of a newer cargo than Debian's, a build).
        std::fs::write(
            dir.join(".dockerignore"),
            "target\nCargo.lock\n__pycache__\n",
        )
        .unwrap();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(dir)
            .output()
            .expect("docker build");
        std::fs::remove_file(dir.join("Dockerfile")).unwrap();
        std::fs::remove_file(dir.join(".dockerignore")).unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        SuiteImage {
            tag,
            preset: preset.to_owned(),
        }
    }
}

impl Drop for SuiteImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// Runs the suite in `image` through a fleet of Docker workers with the
/// preset's batched command: its tests listed inside the image, or `ids`.
async fn batched_run_in_image(image: &SuiteImage, ids: Option<&[&str]>, extra: &[&str]) -> Batched {
    let fleet = Fleet::start(1, 2);
    let mut args = vec![
        "--preset",
        image.preset.as_str(),
        "--image",
        image.tag.as_str(),
        "--wait",
        "--max-rounds",
        "1",
        "--retry-threshold",
        "1",
        "--timeout",
        "120",
    ];
    let ids_file = fleet.dir.join("ids.txt");
    if let Some(ids) = ids {
        std::fs::write(&ids_file, ids.join("\n")).unwrap();
        args.extend(["--tests", ids_file.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let run = fleet.run_producer(&args, &[]).await;
    assert!(
        [0, 1].contains(&run.exit_code()),
        "{}: {}",
        image.preset,
        run.describe()
    );
    let batched = Batched::of(&run);
    fleet.teardown().await;
    batched
}

/// [`batched_run`] with the ids `listing` prints (run in `dir`).
async fn batched_run_listed(dir: &Path, preset: &str, listing: &str, extra: &[&str]) -> Batched {
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
    let batched = Batched::of(&run);
    fleet.teardown().await;
    batched
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
    let Batched { statuses, jobs, .. } =
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
    let dir = project(&[
        // Shared examples in a spec file of their own, loaded first by the
        // suite's plain run: a batch that loaded only the files of its ids
        // would not find them.
        (
            "spec/0_shared_spec.rb",
            "RSpec.shared_examples 'a calculator' do\n  it('multiplies') { expect(2 * 3).to eq(6) }\nend\n",
        ),
        (
            "spec/calc_spec.rb",
            "RSpec.describe 'calc' do\n  it('adds') { expect(1 + 1).to eq(2) }\n  \
             context 'sub' do\n    it('subtracts') { expect(2 - 1).to eq(0) }\n  end\n  \
             it('waits') { pending('later'); expect(1).to eq(2) }\n  \
             it_behaves_like 'a calculator'\nend\n",
        ),
    ]);
    let (statuses, jobs) = batched_run(dir.path(), "rspec", &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("./spec/calc_spec.rb[1:1]", "Passed"),
            ("./spec/calc_spec.rb[1:2:1]", "Failed"),
            ("./spec/calc_spec.rb[1:3]", "Passed"),
            ("./spec/calc_spec.rb[1:4:1]", "Passed"),
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
             func FuzzAdd(f *testing.F) {\n\tf.Add(1, 2)\n\tf.Fuzz(func(t *testing.T, a, b int) {\n\t\tif Add(a, b) != a+b {\n\t\t\tt.Fatal(\"wrong\")\n\t\t}\n\t})\n}\n\
             func ExampleAdd() {\n\tfmt.Println(Add(1, 2))\n\t// Output: 3\n}\n",
        ),
    ]);
    let (statuses, jobs) = batched_run(dir.path(), "go", &["--batch", "10"]).await;
    assert_eq!(
        statuses,
        expect(&[
            ("ExampleAdd", "Passed"),
            ("FuzzAdd", "Passed"),
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

/// A suite as third-party suites are: a conftest that collects data files as
/// tests (one of them a `.py` that is no module pytest could import), and
/// ids with spaces, brackets, `::` and non-ASCII characters.
const DATA_SUITE: &[(&str, &str)] = &[
    ("pytest.ini", "[pytest]\ntestpaths = tests\n"),
    (
        "tests/conftest.py",
        "import pytest\n\
         class DataFile(pytest.File):\n    def collect(self):\n        yield DataItem.from_parent(self, name='')\n\
         class DataItem(pytest.Item):\n    def runtest(self):\n        assert 'FAIL' not in self.path.read_text(), 'bad data'\n\
         def pytest_collect_file(parent, file_path):\n    if file_path.parent.name == 'data':\n        return DataFile.from_parent(parent, path=file_path)\n",
    ),
    ("tests/data/some_example.py", "import a_module_no_one_has\n"),
    ("tests/data/sample.txt", "fine\n"),
    ("tests/data/failing_example.py", "FAIL\n"),
    (
        "tests/test_ids.py",
        "import pytest\n\
         @pytest.mark.parametrize('v', ['a b', 'x[y]', 'a::b', 'é', 'fail me'])\n\
         def test_value(v):\n    assert v != 'fail me'\n\
         def test_plain():\n    pass\n",
    ),
];

/// Each test's status when pytest runs the suite alone in `dir` (`-v`), as
/// the report names it: skipped counts as passed.
fn pytest_alone(dir: &Path) -> BTreeMap<String, String> {
    let output = Command::new("python3")
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider"])
        .current_dir(dir)
        .output()
        .expect("pytest alone");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = regex::Regex::new(r"^(.+::.*?) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)").unwrap();
    stdout
        .lines()
        .filter_map(|l| line.captures(l))
        .map(|c| {
            let status = if ["PASSED", "SKIPPED", "XFAIL"].contains(&&c[2]) {
                "Passed"
            } else {
                "Failed"
            };
            (c[1].to_owned(), status.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pytest_batches_select_tests_as_the_suite_runs_them() {
    let dir = project(DATA_SUITE);
    let alone = pytest_alone(dir.path());
    let expected = expect(&[
        ("tests/data/failing_example.py::", "Failed"),
        ("tests/data/sample.txt::", "Passed"),
        ("tests/data/some_example.py::", "Passed"),
        ("tests/test_ids.py::test_plain", "Passed"),
        ("tests/test_ids.py::test_value[\\xe9]", "Passed"),
        ("tests/test_ids.py::test_value[a b]", "Passed"),
        ("tests/test_ids.py::test_value[a::b]", "Passed"),
        ("tests/test_ids.py::test_value[fail me]", "Failed"),
        ("tests/test_ids.py::test_value[x[y]]", "Passed"),
    ]);
    assert_eq!(alone, expected, "pytest alone");
    let (statuses, jobs) = batched_run(dir.path(), "pytest", &["--batch", "100"]).await;
    assert_eq!(statuses, alone, "the fleet gives what pytest alone gives");
    assert_eq!(jobs, 1, "one batch, nothing bisected");
}

/// A batch holding the tests of a file that fails to collect (its ids from
/// an earlier listing): those tests get the collection error at once, every
/// other test its own outcome, and nothing is bisected.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_fails_to_collect_fails_its_own_tests_and_none_other() {
    let mut files = DATA_SUITE.to_vec();
    files.push((
        "tests/test_broken.py",
        "import a_module_no_one_has\ndef test_one():\n    pass\n",
    ));
    let dir = project(&files);
    let clean = project(DATA_SUITE);
    let mut expected = pytest_alone(clean.path());
    let broken = [
        "tests/test_broken.py::test_one",
        "tests/test_broken.py::test_two",
    ];
    for id in broken {
        expected.insert(id.to_owned(), "Failed".to_owned());
    }
    let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
    let listing = format!(
        "printf '%s\\n' {}",
        ids.iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let on_host = batched_run_listed(dir.path(), "pytest", &listing, &["--batch", "100"]).await;
    let image = SuiteImage::build(dir.path(), "pytest");
    let in_image = batched_run_in_image(&image, Some(&ids), &["--batch", "100"]).await;
    // Listed in the image by the preset's plugin, the broken file is an id
    // of its own, which fails with its collection error.
    let listed = batched_run_in_image(&image, None, &["--batch", "100"]).await;
    let mut listed_expected = pytest_alone(clean.path());
    listed_expected.insert("tests/test_broken.py".to_owned(), "Failed".to_owned());
    assert_eq!(listed.statuses, listed_expected, "listed in the image");
    assert_eq!(listed.jobs, 1, "listed in the image: one batch");
    assert!(
        listed.messages["tests/test_broken.py"]
            .contains("collection error in tests/test_broken.py"),
        "{}",
        listed.messages["tests/test_broken.py"]
    );
    for (place, run) in [("process jobs", on_host), ("containers", in_image)] {
        assert_eq!(run.statuses, expected, "{place}");
        assert_eq!(run.jobs, 1, "{place}: one batch, nothing bisected");
        for id in broken {
            assert!(
                run.messages[id].contains("collection error in tests/test_broken.py")
                    && run.messages[id].contains("a_module_no_one_has"),
                "{place}: {id}: {}",
                run.messages[id]
            );
        }
    }
}
