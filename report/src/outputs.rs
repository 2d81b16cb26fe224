//! `outputs/`: the captured output of every attempt that did not pass, one file
//! each, with an `index.json` saying which test and attempt each file holds.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;
use testfleet_types::messages::{AttemptReport, RunReport};

use super::format::{attempt_status_str, did_not_pass};

/// The index's file name; it cannot clash with a log, which ends in `.log`.
pub const INDEX_FILE: &str = "index.json";

/// Characters of the id kept in a file name, before the hash suffix.
const MAX_STEM_CHARS: usize = 100;

/// What `index.json` records for one file.
#[derive(Debug, Serialize)]
struct IndexEntry<'a> {
    test_id: &'a str,
    attempt: u32,
    status: &'static str,
    exit_code: Option<i64>,
    /// The worker cut the output at `output_cap_bytes`.
    truncated: bool,
}

/// Writes one file per failed attempt that has output, and the index, into
/// `dir`, replacing whatever an earlier write left there.
///
/// Attempts without any output (missing, dead-lettered) get no file: there is
/// nothing to show, and `report.json` says what happened to them.
pub fn write(report: &RunReport, dir: &Path) -> io::Result<()> {
    if dir.exists() {
        // A rewrite must not leave logs the new index does not list.
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    let mut names = FileNames::default();
    let mut index = BTreeMap::new();
    for test in &report.tests {
        for attempt in test.attempts.iter().filter(|a| did_not_pass(a)) {
            let Some(output) = attempt.output.as_deref() else {
                continue;
            };
            let name = names.log_name(&test.id, attempt.attempt);
            fs::write(dir.join(&name), contents(report, attempt, output))?;
            index.insert(name, index_entry(&test.id, attempt));
        }
    }
    let mut json = serde_json::to_vec_pretty(&index)?;
    json.push(b'\n');
    fs::write(dir.join(INDEX_FILE), json)?;
    write_batch_logs(report, &dir.join(BATCHES_DIR))
}

/// Where batch logs go, one `<batch id>.log` each, named by `report.json`'s
/// batch ids (the index lists test attempts only).
pub const BATCHES_DIR: &str = "batches";

/// The whole log of every batch that kept one (a test of it did not pass, or
/// was not reported).
fn write_batch_logs(report: &RunReport, dir: &Path) -> io::Result<()> {
    let mut made = false;
    for batch in &report.batches {
        let Some(log) = &batch.log else { continue };
        if !made {
            fs::create_dir_all(dir)?;
            made = true;
        }
        let mut contents = String::new();
        if batch.log_truncated {
            contents.push_str(&format!(
                "[testfleet: log truncated at the worker's cap of {} bytes]\n",
                report.spec.output_cap_bytes
            ));
        }
        contents.push_str(log);
        fs::write(dir.join(format!("{}.log", batch.id)), contents)?;
    }
    Ok(())
}

fn index_entry<'a>(test_id: &'a str, attempt: &AttemptReport) -> IndexEntry<'a> {
    IndexEntry {
        test_id,
        attempt: attempt.attempt,
        status: attempt_status_str(attempt.status),
        exit_code: attempt.exit_code,
        truncated: attempt.output_truncated,
    }
}

/// The output as captured; a truncated one opens with a line saying so, since
/// whoever opens the file may never look at the index.
fn contents(report: &RunReport, attempt: &AttemptReport, output: &str) -> String {
    if attempt.output_truncated {
        format!(
            "[testfleet: output truncated at the worker's cap of {} bytes]\n{output}",
            report.spec.output_cap_bytes
        )
    } else {
        output.to_owned()
    }
}

/// Hands out file-name stems, one per test id, never the same for two ids.
#[derive(Default)]
struct FileNames {
    by_id: HashMap<String, String>,
    /// Stems in use, lowercased so that case-insensitive file systems (macOS,
    /// Windows) cannot merge two of them either.
    taken: HashMap<String, String>,
}

impl FileNames {
    fn log_name(&mut self, id: &str, attempt: u32) -> String {
        format!("{}.attempt-{attempt}.log", self.stem(id))
    }

    fn stem(&mut self, id: &str) -> String {
        if let Some(stem) = self.by_id.get(id) {
            return stem.clone();
        }
        let base = sanitized_id(id);
        // The hash makes a clash unlikely, not impossible: count up until free.
        let stem = (1..)
            .map(|n| match n {
                1 => base.clone(),
                n => format!("{base}-{n}"),
            })
            .find(|stem| !self.taken.contains_key(&stem.to_lowercase()))
            .expect("an unbounded range always yields a free stem");
        self.taken.insert(stem.to_lowercase(), id.to_owned());
        self.by_id.insert(id.to_owned(), stem.clone());
        stem
    }
}

/// A file-name stem for a test id: characters outside `[A-Za-z0-9._-]` become
/// `_`, at most 100 of them are kept, then `-` and eight hex digits of the id's
/// FNV-1a hash, so ids that sanitize alike still get different names. A leading
/// `.` or `-` also becomes `_`: hidden files and option-like names trip people up.
pub fn sanitized_id(id: &str) -> String {
    let mut stem: String = id
        .chars()
        .take(MAX_STEM_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.starts_with(['.', '-']) {
        stem.replace_range(..1, "_");
    }
    format!("{stem}-{:08x}", fnv1a_32(id.as_bytes()))
}

/// 32-bit FNV-1a: tiny, stable across releases and platforms, good enough to
/// tell file names apart (it is not a defence against chosen collisions, which
/// [`FileNames`] handles anyway).
fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, WEIRD_ID};
    use serde_json::Value;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn sanitized_ids_are_safe_short_and_distinct() {
        assert_eq!(
            sanitized_id("fail-1"),
            format!("fail-1-{:08x}", fnv1a_32(b"fail-1"))
        );
        let weird = sanitized_id(WEIRD_ID);
        assert!(weird.starts_with("we_ird__id__with__ticks__"), "{weird}");
        assert!(weird
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        assert!(sanitized_id("../etc/passwd").starts_with("_._etc_passwd-"));
        assert!(sanitized_id("-rf").starts_with("_rf-"));

        let long = sanitized_id(&fixture::long_id());
        assert_eq!(long.len(), MAX_STEM_CHARS + 9);
        let other_long = sanitized_id(&(fixture::long_id() + "x"));
        assert_ne!(
            long, other_long,
            "same first 100 characters, different names"
        );
        assert_ne!(sanitized_id("a b"), sanitized_id("a_b"));
    }

    #[test]
    fn clashing_stems_are_told_apart() {
        let mut names = FileNames::default();
        let first = names.log_name("a", 1);
        // Pretend another id already took the stem that "b" would get.
        let b_stem = sanitized_id("b");
        names
            .taken
            .insert(b_stem.to_lowercase(), "someone else".into());
        assert_eq!(names.log_name("b", 1), format!("{b_stem}-2.attempt-1.log"));
        assert_eq!(names.log_name("b", 2), format!("{b_stem}-2.attempt-2.log"));
        assert_eq!(
            names.log_name("a", 2),
            first.replace("attempt-1", "attempt-2")
        );
    }

    #[test]
    fn writes_one_file_per_failed_attempt_and_an_index() {
        let report = fixture::sample_report();
        let root = fixture::temp_dir("outputs");
        let dir = root.join("outputs");
        write(&report, &dir).unwrap();

        let mut files: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut expected = vec![
            format!("{}.attempt-1.log", sanitized_id("flaky-1")),
            format!("{}.attempt-1.log", sanitized_id("fail-1")),
            format!("{}.attempt-2.log", sanitized_id("fail-1")),
            format!("{}.attempt-1.log", sanitized_id(WEIRD_ID)),
            format!("{}.attempt-1.log", sanitized_id("slow-1")),
            format!("{}.attempt-1.log", sanitized_id("infra-1")),
            format!("{}.attempt-1.log", sanitized_id("gone-1")),
            INDEX_FILE.to_owned(),
        ];
        expected.sort();
        assert_eq!(files, expected);

        let read = |name: String| fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(
            read(format!("{}.attempt-1.log", sanitized_id("flaky-1"))),
            "flaky boom\n"
        );
        let truncated = read(format!("{}.attempt-2.log", sanitized_id("fail-1")));
        assert_eq!(
            truncated,
            format!(
                "[testfleet: output truncated at the worker's cap of 1048576 bytes]\n{}",
                fixture::numbered_output("fail")
            )
        );
        assert_eq!(
            read(format!("{}.attempt-1.log", sanitized_id(WEIRD_ID))),
            report.tests[3].attempts[0].output.clone().unwrap(),
            "the log is the output exactly as captured"
        );

        let index: Value = serde_json::from_str(&read(INDEX_FILE.to_owned())).unwrap();
        let entry = &index[format!("{}.attempt-1.log", sanitized_id(WEIRD_ID))];
        assert_eq!(entry["test_id"], WEIRD_ID);
        assert_eq!(entry["attempt"], 1);
        assert_eq!(entry["status"], "failed");
        assert_eq!(entry["truncated"], false);
        let entry = &index[format!("{}.attempt-2.log", sanitized_id("fail-1"))];
        assert_eq!(
            (entry["attempt"].clone(), entry["truncated"].clone()),
            (2.into(), true.into())
        );
        assert_eq!(
            index[format!("{}.attempt-1.log", sanitized_id("slow-1"))]["status"],
            "timed out"
        );
        assert_eq!(index.as_object().unwrap().len(), 7);

        // Writing again replaces, rather than adds to, what is there.
        fs::write(dir.join("stale.attempt-1.log"), "old").unwrap();
        write(&report, &dir).unwrap();
        assert!(!dir.join("stale.attempt-1.log").exists());
        fs::remove_dir_all(root).unwrap();
    }
}
