//! Discovery presets: the dry-run command of a common test runner and the parser
//! of what it prints, so users need not write either themselves.
//!
//! Each parser keeps only what is a test id in its runner's own terms, verbatim,
//! and ignores the rest of the output (summaries, warnings, build noise).

use std::fmt;

use testfleet_types::messages::{IdScheme, ReportFormat, RunnerReport};

/// A test runner whose listing testfleet understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// pytest's own collection, through the preset's plugin: node ids such
    /// as `tests/test_x.py::test_a[1]`, and those of files that failed to
    /// collect.
    Pytest,
    /// `cargo nextest list -T oneline`: `<binary-id> <test name>` per line.
    Nextest,
    /// `rspec --dry-run --format json`: example ids such as `./spec/a_spec.rb[1:2]`.
    Rspec,
    /// `go test -list .`: test and example names of the package here.
    Go,
    /// One id per line, whatever the command (blank lines skipped).
    Lines,
}

impl Preset {
    /// The discovery command run (with `sh -c`) when `--discover` is not given.
    pub fn command(self) -> Option<String> {
        let command = match self {
            // The plugin lists whatever the suite's `addopts` say, and
            // names the files that failed to collect (`--list`).
            Preset::Pytest => format!("python3 -c {} --list", shell_quoted(PYTEST_PLUGIN)),
            Preset::Nextest => "cargo nextest list --message-format oneline".into(),
            Preset::Rspec => "rspec --dry-run --format json".into(),
            Preset::Go => "go test -list .".into(),
            Preset::Lines => return None,
        };
        Some(command)
    }

    /// The command that runs a batch of this runner's tests and writes its
    /// report at `{report}` (argv, no shell of ours), and how to read that
    /// report; `None` for `lines`, which knows no runner.
    pub fn batched_command(self) -> Option<(Vec<String>, RunnerReport)> {
        let (argv, format, ids): (&[&str], _, _) = match self {
            // pytest collects as the suite's plain run does and a plugin
            // keeps the batch's ids (`testfleet_pytest.py`): node ids given
            // as arguments are collected as paths, not as the suite runs.
            Preset::Pytest => (
                &[
                    "python3",
                    "-c",
                    PYTEST_PLUGIN,
                    "{ids_file}",
                    "{report}",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--continue-on-collection-errors",
                ],
                ReportFormat::Jsonl,
                IdScheme::Pytest,
            ),
            // RSpec loads the suite as its plain run does and a filter keeps
            // the batch's examples (`testfleet_rspec.rb`): example ids given
            // as arguments load only their own files.
            Preset::Rspec => (
                &["ruby", "-e", RSPEC_RUNNER, "{ids_file}", "{report}"],
                ReportFormat::RspecJson,
                IdScheme::Rspec,
            ),
            // `go test -json` writes its report to stdout; the ids become one
            // anchored `-run` regex, passed to the shell as an argument;
            // `-count=1`, since a cached result is no run of the test.
            Preset::Go => (
                &[
                    "sh",
                    "-c",
                    "go test -count=1 -json -run \"$1\" . > \"$2\"",
                    "sh",
                    "{ids_regex}",
                    "{report}",
                ],
                ReportFormat::GoTestJson,
                IdScheme::Go,
            ),
            // nextest writes JUnit under its target folder, for a profile of
            // a config file: a tool config file made here adds that profile
            // (the project's own `.config/nextest.toml` still applies), the
            // ids file becomes one filterset, and the report is copied out.
            Preset::Nextest => (
                &["sh", "-c", NEXTEST_BATCH, "sh", "{report}", "{ids_file}"],
                ReportFormat::Junit,
                IdScheme::Nextest,
            ),
            Preset::Lines => return None,
        };
        let argv = argv.iter().map(|a| a.to_string()).collect();
        Some((argv, RunnerReport { format, ids }))
    }

    /// The ids in a listing printed by this runner.
    pub fn parse(self, listing: &str) -> Vec<String> {
        match self {
            Preset::Pytest => pytest(listing),
            Preset::Nextest => lines(listing),
            Preset::Rspec => rspec(listing),
            Preset::Go => go(listing),
            Preset::Lines => lines(listing),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Preset::Pytest => "pytest",
            Preset::Nextest => "nextest",
            Preset::Rspec => "rspec",
            Preset::Go => "go",
            Preset::Lines => "lines",
        };
        f.write_str(name)
    }
}

/// The pytest preset's plugin, run as the program `python3 -c` runs.
const PYTEST_PLUGIN: &str = include_str!("testfleet_pytest.py");

/// The RSpec preset's runner, run as the program `ruby -e` runs.
const RSPEC_RUNNER: &str = include_str!("testfleet_rspec.rb");

/// nextest's batched run: `$1` the report's path, `$2` the ids file (one
/// `<binary-id> <test name>` per line). Each id becomes an exact filterset
/// term, `binary_id(=B) & test(=T)`, split at the line's first space (a name
/// may hold spaces, even at its ends) with `\`, `)` and `,` escaped as
/// filtersets want; the terms go in `-E` expressions of 500 (nextest takes
/// their union), each under Linux's 128 KiB limit on one argument.
const NEXTEST_BATCH: &str = r#"report=$1 ids=$2
config=$(mktemp)
printf '[profile.testfleet]\nfail-fast = false\n[profile.testfleet.junit]\npath = "junit.xml"\n' > "$config"
exprs=$(mktemp)
sed -e 's/\\/\\\\/g' -e 's/)/\\)/g' -e 's/,/\\,/g' "$ids" | awk '
  { i = index($0, " "); term = "(binary_id(=" substr($0, 1, i - 1) ") & test(=" substr($0, i + 1) "))" }
  NR % 500 == 1 { if (NR > 1) printf "\n"; printf "%s", term; next }
  { printf "|%s", term }
  END { printf "\n" }' > "$exprs"
set --
while IFS= read -r expr; do set -- "$@" -E "$expr"; done < "$exprs"
cargo nextest run --no-fail-fast --tool-config-file "testfleet:$config" --profile testfleet "$@"
status=$?
cp "${CARGO_TARGET_DIR:-target}/nextest/testfleet/junit.xml" "$report" 2>/dev/null
exit $status"#;

fn lines(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The plugin's listing: every line after its header is an id, verbatim.
/// Without the header (`--discover` running `pytest --collect-only -q`),
/// node ids are the lines naming a test (`path::name`), until the blank line
/// before pytest's "N tests collected" summary.
fn pytest(listing: &str) -> Vec<String> {
    let mut lines = listing.lines();
    if lines.any(|line| line == PYTEST_LISTING_HEADER) {
        return lines
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
    }
    listing
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.contains("::") && !line.starts_with(char::is_whitespace))
        .map(str::to_owned)
        .collect()
}

/// The first line of the plugin's listing (`LISTING_HEADER` there).
const PYTEST_LISTING_HEADER: &str = "# testfleet: pytest node ids";

/// `text` as one word of a POSIX shell line.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The JSON document may follow warnings that RSpec printed first.
fn rspec(listing: &str) -> Vec<String> {
    let Some(start) = listing.find('{') else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&listing[start..]) else {
        return Vec::new();
    };
    json["examples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|example| example["id"].as_str())
        .map(str::to_owned)
        .collect()
}

/// `go test -list` also lists benchmarks, which a plain `go test` does not
/// run, and ends with an `ok <package>` line. Fuzz targets are tests: a plain
/// `go test` runs their seed corpus.
fn go(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|name| {
            ["Test", "Example", "Fuzz"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .filter(|name| name.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keeps_every_non_blank_line_verbatim_without_its_line_ending() {
        assert_eq!(
            Preset::Lines.parse("a\n\n  \n b \r\nx;y $(z)\n"),
            ["a".to_owned(), " b ".to_owned(), "x;y $(z)".to_owned()]
        );
    }

    #[test]
    fn pytest_node_ids_without_the_summary() {
        let listing = "tests/test_a.py::test_one\ntests/test_a.py::test_two[1-x y]\n\
                       tests/test_b.py::TestK::test_m\n\n3 tests collected in 0.01s\n";
        assert_eq!(
            Preset::Pytest.parse(listing),
            [
                "tests/test_a.py::test_one",
                "tests/test_a.py::test_two[1-x y]",
                "tests/test_b.py::TestK::test_m"
            ]
        );
    }

    #[test]
    fn the_plugins_listing_is_every_line_after_its_header() {
        let listing = "pytest says hello\n# testfleet: pytest node ids\n\
                       t/data/x.py::\nt/a.py::t[a b]\nt/broken.py\n";
        assert_eq!(
            Preset::Pytest.parse(listing),
            ["t/data/x.py::", "t/a.py::t[a b]", "t/broken.py"]
        );
        assert!(PYTEST_PLUGIN.contains(&format!("LISTING_HEADER = \"{PYTEST_LISTING_HEADER}\"")));
    }

    #[test]
    fn the_pytest_listing_runs_the_plugin_through_one_shell_word() {
        let command = Preset::Pytest.command().unwrap();
        let output = std::process::Command::new("sh")
            .args([
                "-c",
                &format!(
                    "printf '%s\\n' {}",
                    command.strip_prefix("python3 -c ").unwrap()
                ),
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            format!("{PYTEST_PLUGIN}\n--list\n")
        );
    }

    #[test]
    fn nextest_oneline_entries_are_ids() {
        let listing = "mycrate tests::adds\nmycrate::integration smoke\n";
        assert_eq!(
            Preset::Nextest.parse(listing),
            ["mycrate tests::adds", "mycrate::integration smoke"]
        );
    }

    #[test]
    fn rspec_example_ids_after_warnings() {
        let listing = "WARN: something\n{\"version\":\"3.12\",\"examples\":[\
                       {\"id\":\"./spec/a_spec.rb[1:1]\"},{\"id\":\"./spec/a_spec.rb[1:2]\"}]}";
        assert_eq!(
            Preset::Rspec.parse(listing),
            ["./spec/a_spec.rb[1:1]", "./spec/a_spec.rb[1:2]"]
        );
        assert!(Preset::Rspec.parse("not json").is_empty());
    }

    #[test]
    fn batched_commands_write_a_report_and_take_the_ids() {
        for preset in [Preset::Pytest, Preset::Rspec, Preset::Go, Preset::Nextest] {
            let (argv, _) = preset.batched_command().unwrap();
            assert!(argv.iter().any(|a| a.contains("{report}")), "{preset}");
            assert!(
                argv.iter()
                    .any(|a| a == "{ids}" || a == "{ids_regex}" || a == "{ids_file}"),
                "{preset}"
            );
        }
        assert!(Preset::Lines.batched_command().is_none());
    }

    /// The nextest batch's filtersets, as a `cargo` that prints its
    /// arguments sees them.
    fn nextest_arguments(ids: &[String]) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tf-nextest-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cargo = dir.join("cargo");
        std::fs::write(
            &cargo,
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ids_file = dir.join("ids");
        std::fs::write(
            &ids_file,
            ids.iter().map(|id| format!("{id}\n")).collect::<String>(),
        )
        .unwrap();
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
        let output = std::process::Command::new("sh")
            .args(["-c", NEXTEST_BATCH, "sh", "/dev/null"])
            .arg(&ids_file)
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", &dir)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .split('\0')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn nextest_ids_become_exact_escaped_filtersets_split_at_the_first_space() {
        let ids = [
            "b t1",
            "b::it  lead",
            "b f(x), g\\h ",
            "my-crate::bin/x m::t",
        ]
        .map(String::from);
        let args = nextest_arguments(&ids);
        let at = args.iter().position(|a| a == "-E").unwrap();
        assert_eq!(
            &args[at..],
            [
                "-E",
                "(binary_id(=b) & test(=t1))|(binary_id(=b::it) & test(= lead))|\
                 (binary_id(=b) & test(=f(x\\)\\, g\\\\h ))|\
                 (binary_id(=my-crate::bin/x) & test(=m::t))"
            ]
        );
    }

    #[test]
    fn a_big_nextest_batch_goes_in_several_expressions() {
        let ids: Vec<String> = (0..1200).map(|i| format!("bin test_{i}")).collect();
        let args = nextest_arguments(&ids);
        let expressions: Vec<&String> = args
            .iter()
            .skip_while(|a| *a != "-E")
            .skip(1)
            .step_by(2)
            .collect();
        assert_eq!(expressions.len(), 3, "500, 500, 200");
        assert!(expressions.iter().all(|e| e.len() < 128 << 10));
        assert_eq!(expressions[2].matches("binary_id").count(), 200);
    }

    #[test]
    fn go_tests_examples_and_fuzz_seeds_but_not_benchmarks() {
        let listing = "TestAdd\nTestSub_Negative\nBenchmarkAdd\nFuzzAdd\nExampleAdd\n\
                       ok  \texample.com/calc\t0.002s\n";
        assert_eq!(
            Preset::Go.parse(listing),
            ["TestAdd", "TestSub_Negative", "FuzzAdd", "ExampleAdd"]
        );
    }
}
