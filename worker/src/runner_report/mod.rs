//! Per-test results from a test runner's own report, mapped back to the ids a
//! batch listed.
//!
//! Each format has its parser (`junit`, `go_json`, `rspec_json`, `jsonl`), which yields
//! [`Entry`]s as the runner names its tests; the run's [`IdScheme`] says how a
//! listed id is named in that report, so that the mapping is exact: a pytest
//! node id `tests/test_a.py::TestX::test_y[1]` is the JUnit testcase
//! `classname="tests.test_a.TestX" name="test_y[1]"` (in the `jsonl` report
//! of the pytest preset's plugin it is itself), a nextest id
//! `<binary-id> <test name>` is `classname name`, an RSpec example id is its
//! JSON `id`, a go test name is its `-json` `Test`. An entry that maps to no
//! listed id is ignored; a listed id with no entry is unreported (the caller
//! runs it again).

mod go_json;
mod jsonl;
mod junit;
mod rspec_json;

use std::collections::HashMap;

use testfleet_types::messages::{IdScheme, Outcome, ReportFormat};

use crate::capture::OutputCapture;

/// A runner report bigger than this is not read (its tests count as
/// unreported and are run again in smaller batches).
pub const MAX_REPORT_BYTES: u64 = 256 << 20;

/// One test as the runner reported it, before mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The runner's names for it: the keys an [`IdScheme`] matches.
    pub names: Names,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// What the report holds of its own output and failure.
    pub output: String,
    /// Why it did not pass, or that it was skipped, in one line.
    pub message: Option<String>,
}

/// How a report names a test.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    /// JUnit `classname`, or empty.
    pub class: String,
    /// JUnit `name`, the go test name, or the RSpec example id.
    pub name: String,
    /// JUnit `file` (pytest writes it with `junit_family=xunit1`), or empty.
    pub file: String,
}

/// Bytes of what a report says outside any test that are kept (its head
/// and tail).
pub const OUTSIDE_BYTES: usize = 64 << 10;

/// `text` within [`OUTSIDE_BYTES`], head and tail kept.
fn capped(text: &str) -> String {
    let mut capture = OutputCapture::new(OUTSIDE_BYTES);
    capture.push(text.as_bytes());
    capture.finish().0
}

/// What a report says: its tests, and what it says outside any test.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    /// The runner's words outside any test (a package's build failure).
    pub outside: String,
    /// The runner says no test could run at all (its package did not
    /// build): every test it did not report ends as the command did, with
    /// [`Parsed::outside`], rather than being bisected.
    pub none_ran: bool,
}

impl Parsed {
    /// A report of tests alone.
    fn tests(entries: Vec<Entry>) -> Self {
        Parsed {
            entries,
            ..Parsed::default()
        }
    }
}

/// A report read for a batch: per listed id (by position) what it says of
/// it, and what it says outside any test.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub reported: Vec<Option<Reported>>,
    pub outside: String,
    pub none_ran: bool,
}

/// A listed test the report covers: its own output capped at what the
/// reader was told, the cut said.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub output: String,
    pub output_truncated: bool,
    pub message: Option<String>,
}

/// Parses `bytes` as `format` and maps its entries to `ids` by `scheme`,
/// each test's output capped at `cap` bytes as its entries are read.
pub fn read(
    format: ReportFormat,
    scheme: IdScheme,
    bytes: &[u8],
    ids: &[String],
    cap: usize,
) -> Result<Read, String> {
    let (parsed, scheme) = match format {
        ReportFormat::Junit => (Parsed::tests(junit::parse(bytes)?), scheme),
        ReportFormat::GoTestJson => (go_json::parse(bytes)?, scheme),
        ReportFormat::RspecJson => (rspec_json::parse(bytes)?, scheme),
        // Its names are the listed ids themselves, whatever the runner's
        // scheme: matched exactly, as the other exact schemes are.
        ReportFormat::Jsonl => (Parsed::tests(jsonl::parse(bytes)?), IdScheme::Rspec),
    };
    Ok(Read {
        reported: map(parsed.entries, scheme, ids, cap),
        outside: parsed.outside,
        none_ran: parsed.none_ran,
    })
}

/// Matches entries to ids: each id's key under `scheme` against each entry's
/// keys. Several entries for one id (a teardown error beside the call, a
/// retry) merge: the worst outcome, durations added, outputs joined under
/// `cap` as they come (a report of a million entries for one id costs a
/// pass over it, not a copy per entry). Two ids
/// of one key (pytest's `a/b.py::T::t` and `a/b/T.py::t` both read
/// `a.b.T::t` in JUnit) are told apart by the entry's file where it has one;
/// without one, the key matches neither, and both run again apart.
fn map(entries: Vec<Entry>, scheme: IdScheme, ids: &[String], cap: usize) -> Vec<Option<Reported>> {
    let mut positions: HashMap<String, Option<usize>> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        positions
            .entry(key_of_id(scheme, id))
            .and_modify(|p| *p = None)
            .or_insert(Some(i));
    }
    let exact: HashMap<&str, usize> = match scheme {
        IdScheme::Pytest => ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect(),
        _ => HashMap::new(),
    };
    let mut merged: Vec<Option<Merged>> = (0..ids.len()).map(|_| None).collect();
    for entry in entries {
        let by_file = pytest_node_id(&entry.names).and_then(|id| exact.get(id.as_str()).copied());
        let position = by_file.or_else(|| {
            keys_of_entry(scheme, &entry.names)
                .iter()
                .find_map(|key| positions.get(key).copied().flatten())
        });
        let Some(position) = position else {
            continue;
        };
        merged[position]
            .get_or_insert_with(|| Merged::new(cap))
            .add(entry);
    }
    merged.into_iter().map(|m| m.map(Merged::finish)).collect()
}

/// One listed test's entries so far.
struct Merged {
    outcome: Outcome,
    duration_ms: u64,
    output: OutputCapture,
    message: Option<String>,
}

impl Merged {
    fn new(cap: usize) -> Self {
        Merged {
            outcome: Outcome::Passed,
            duration_ms: 0,
            output: OutputCapture::new(cap),
            message: None,
        }
    }

    fn add(&mut self, entry: Entry) {
        if severity(entry.outcome) > severity(self.outcome) {
            self.outcome = entry.outcome;
        }
        self.duration_ms = self.duration_ms.saturating_add(entry.duration_ms);
        self.output.push(entry.output.as_bytes());
        if self.message.is_none() {
            self.message = entry.message;
        }
    }

    fn finish(self) -> Reported {
        let (output, output_truncated) = self.output.finish();
        Reported {
            outcome: self.outcome,
            duration_ms: self.duration_ms,
            output,
            output_truncated,
            message: self.message,
        }
    }
}

fn severity(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Passed => 0,
        Outcome::Failed => 1,
        Outcome::TimedOut => 2,
        Outcome::Error => 3,
    }
}

/// A listed id as the key its report entry will have.
fn key_of_id(scheme: IdScheme, id: &str) -> String {
    match scheme {
        IdScheme::Pytest => pytest_key(id),
        IdScheme::Nextest | IdScheme::Rspec | IdScheme::Go | IdScheme::Name => id.to_owned(),
    }
}

/// The keys an entry can match under `scheme`.
fn keys_of_entry(scheme: IdScheme, names: &Names) -> Vec<String> {
    match scheme {
        IdScheme::Pytest => vec![format!("{}::{}", names.class, names.name)],
        IdScheme::Nextest => vec![format!("{} {}", names.class, names.name)],
        IdScheme::Rspec | IdScheme::Go => vec![names.name.clone()],
        IdScheme::Name => vec![
            names.name.clone(),
            format!("{}::{}", names.class, names.name),
            format!("{}.{}", names.class, names.name),
        ],
    }
}

/// A pytest node id as JUnit names it: `tests/test_a.py::TestX::test_y[p]`
/// is classname `tests.test_a.TestX`, name `test_y[p]`, so the key
/// `tests.test_a.TestX::test_y[p]`. Parameters may hold `::` and `/`, so only
/// what comes before them is split.
fn pytest_key(node_id: &str) -> String {
    let params_at = node_id.find('[').unwrap_or(node_id.len());
    let (path_part, params) = node_id.split_at(params_at);
    let mut parts: Vec<&str> = path_part.split("::").collect();
    let name = format!("{}{params}", parts.pop().unwrap_or_default());
    let module = parts
        .first()
        .map(|file| file.strip_suffix(".py").unwrap_or(file).replace('/', "."))
        .unwrap_or_default();
    let class = std::iter::once(module)
        .chain(parts.iter().skip(1).map(|c| c.to_string()))
        .collect::<Vec<_>>()
        .join(".");
    format!("{class}::{name}")
}

/// The pytest node id an entry names, from its `file`: `a/b.py` and class
/// `a.b.T` with name `t` are `a/b.py::T::t`. `None` without a file.
fn pytest_node_id(names: &Names) -> Option<String> {
    if names.file.is_empty() {
        return None;
    }
    let module = names
        .file
        .strip_suffix(".py")
        .unwrap_or(&names.file)
        .replace('/', ".");
    let classes = match names.class.strip_prefix(&module) {
        Some("") => Vec::new(),
        Some(rest) => rest.strip_prefix('.')?.split('.').collect(),
        None => return None,
    };
    let mut parts = vec![names.file.as_str()];
    parts.extend(classes);
    parts.push(&names.name);
    Some(parts.join("::"))
}

/// Seconds as a report writes them ("0.123") to whole milliseconds, 0 when
/// unreadable or absurd.
pub(crate) fn seconds_to_ms(text: &str) -> u64 {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => (secs * 1000.0).round().min(1e15) as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_node_ids_become_junit_names() {
        assert_eq!(pytest_key("test_a.py::test_x"), "test_a::test_x");
        assert_eq!(
            pytest_key("tests/unit/test_a.py::TestX::TestY::test_z[1-a::b/c]"),
            "tests.unit.test_a.TestX.TestY::test_z[1-a::b/c]"
        );
    }

    fn entry(class: &str, name: &str, outcome: Outcome) -> Entry {
        Entry {
            names: Names {
                class: class.into(),
                name: name.into(),
                file: String::new(),
            },
            outcome,
            duration_ms: 5,
            output: format!("{name} says hi\n"),
            message: None,
        }
    }

    #[test]
    fn entries_map_to_listed_ids_exactly_and_merge() {
        let ids: Vec<String> = [
            "tests/test_a.py::TestX::test_y[1]",
            "tests/test_a.py::test_z",
            "tests/test_b.py::test_missing",
        ]
        .map(String::from)
        .to_vec();
        let entries = vec![
            entry("tests.test_a.TestX", "test_y[1]", Outcome::Passed),
            entry("tests.test_a", "test_z", Outcome::Passed),
            // A teardown error reported beside the call.
            entry("tests.test_a", "test_z", Outcome::Failed),
            // Not listed in this batch: ignored.
            entry("tests.test_a", "test_other", Outcome::Failed),
        ];
        let mapped = map(entries, IdScheme::Pytest, &ids, CAP);
        assert_eq!(mapped[0].as_ref().unwrap().outcome, Outcome::Passed);
        let z = mapped[1].as_ref().unwrap();
        assert_eq!((z.outcome, z.duration_ms), (Outcome::Failed, 10));
        assert!(mapped[2].is_none(), "unreported");
    }

    #[test]
    fn two_pytest_ids_of_one_junit_key_are_told_apart_by_file_or_not_at_all() {
        let ids: Vec<String> = ["a/b.py::T::t", "a/b/T.py::t"].map(String::from).to_vec();
        assert_eq!(pytest_key(&ids[0]), pytest_key(&ids[1]), "the collision");
        let in_file = |file: &str, outcome| Entry {
            names: Names {
                file: file.into(),
                ..entry("a.b.T", "t", outcome).names
            },
            ..entry("a.b.T", "t", outcome)
        };
        let mapped = map(
            vec![
                in_file("a/b.py", Outcome::Failed),
                in_file("a/b/T.py", Outcome::Passed),
            ],
            IdScheme::Pytest,
            &ids,
            CAP,
        );
        assert_eq!(mapped[0].as_ref().unwrap().outcome, Outcome::Failed);
        assert_eq!(mapped[1].as_ref().unwrap().outcome, Outcome::Passed);
        assert_eq!(mapped[0].as_ref().unwrap().duration_ms, 5, "nothing merged");
        // Without a file the key is ambiguous: neither id takes the entries,
        // so both run again, apart.
        let entries = vec![
            entry("a.b.T", "t", Outcome::Failed),
            entry("a.b.T", "t", Outcome::Passed),
        ];
        assert!(map(entries, IdScheme::Pytest, &ids, CAP)
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn nextest_ids_are_binary_and_name() {
        let ids = vec!["my-crate::tests parse::works".to_owned()];
        let entries = vec![entry("my-crate::tests", "parse::works", Outcome::Failed)];
        let mapped = map(entries, IdScheme::Nextest, &ids, CAP);
        assert_eq!(mapped[0].as_ref().unwrap().outcome, Outcome::Failed);
    }

    const CAP: usize = 1 << 20;

    #[test]
    fn many_entries_for_one_id_are_joined_under_the_cap_in_one_pass() {
        let ids = vec!["c::t".to_owned()];
        let chunk = "x".repeat(1024);
        let entries: Vec<Entry> = (0..100_000)
            .map(|_| Entry {
                output: chunk.clone(),
                ..entry("c", "t", Outcome::Passed)
            })
            .collect();
        let started = std::time::Instant::now();
        let mapped = map(entries, IdScheme::Name, &ids, 4096);
        let reported = mapped[0].as_ref().unwrap();
        assert!(
            reported.output.len() < 4096 + 100,
            "{}",
            reported.output.len()
        );
        assert!(reported.output_truncated);
        assert_eq!(reported.duration_ms, 500_000, "every entry's time");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn seconds_read_leniently() {
        assert_eq!(seconds_to_ms("0.0015"), 2);
        assert_eq!(seconds_to_ms(" 12 "), 12_000);
        assert_eq!(seconds_to_ms("NaN"), 0);
        assert_eq!(seconds_to_ms("-1"), 0);
        assert_eq!(seconds_to_ms("1e300"), 1_000_000_000_000_000);
    }
}
