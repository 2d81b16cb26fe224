//! Discovery presets on tiny real projects, listed by the real runners that
//! `scripts/setup-runners.sh` installs: pytest, cargo nextest, RSpec, go test.

use std::path::Path;
use std::process::Command;

use crate::fixtures::binary;

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
