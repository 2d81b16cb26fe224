//! Where a run's test ids come from, and the filtering that makes them a run.
//!
//! Ids are taken verbatim: only the line ending is removed, so spaces, quotes and
//! shell metacharacters survive. `--null` separates ids by NUL for ids that hold
//! newlines.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use regex::Regex;
use testfleet_types::limits::{MAX_TESTS_PER_RUN, MAX_TEST_ID_BYTES};
use tracing::warn;

use crate::presets::Preset;
use crate::rdeps::{Index, Query};

/// Where to read test ids from.
#[derive(Debug, Clone)]
pub enum IdSource {
    File(PathBuf),
    Stdin,
    /// A command run through `sh -c` on this machine (the user's own line);
    /// its stdout lists the ids. This is the suite's "dry run".
    Discover(String),
    /// The reverse dependencies of packages in a dependency index
    /// (`--rdeps-of`, `--deps`): one package name per id.
    ReverseDependencies {
        deps: PathBuf,
        query: Query,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("{0}")]
    Index(String),
    #[error("cannot read test ids from {what}: {cause}")]
    Read { what: String, cause: std::io::Error },
    #[error("discovery command `{command}` failed with {status}; its output ends:\n{output}")]
    Discovery {
        command: String,
        status: String,
        output: String,
    },
    #[error("test id {position} is {bytes} bytes long; ids are at most {max} bytes: {start}…")]
    TooLong {
        position: usize,
        bytes: usize,
        max: usize,
        start: String,
    },
    #[error("{count} tests in one run; a run has at most {max}: split it with --filter")]
    TooMany { count: usize, max: usize },
    #[error("no tests to run: {listed} listed, {filtered_out} filtered out")]
    Empty { listed: usize, filtered_out: usize },
}

/// How ids are laid out in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    Newline,
    Nul,
    /// A test runner's own listing, parsed by its preset.
    Preset(Preset),
}

/// Which listed ids make the run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Keep an id only if it matches one of these (when any are given).
    pub filters: Vec<Regex>,
    /// Drop an id that matches any of these.
    pub excludes: Vec<Regex>,
}

impl Selection {
    fn keeps(&self, id: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|re| re.is_match(id)))
            && !self.excludes.iter().any(|re| re.is_match(id))
    }
}

/// Reads, splits, deduplicates and filters the ids; an empty result is an error.
pub fn collect(
    source: &IdSource,
    separator: Separator,
    selection: &Selection,
) -> Result<Vec<String>, IdError> {
    let raw = read_source(source)?;
    select(split(&raw, separator), selection)
}

fn read_source(source: &IdSource) -> Result<Vec<u8>, IdError> {
    match source {
        IdSource::File(path) => std::fs::read(path).map_err(|cause| IdError::Read {
            what: path.display().to_string(),
            cause,
        }),
        IdSource::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|cause| IdError::Read {
                    what: "stdin".into(),
                    cause,
                })?;
            Ok(bytes)
        }
        IdSource::Discover(command) => discover(command),
        IdSource::ReverseDependencies { deps, query } => {
            let index = Index::read(deps).map_err(IdError::Index)?;
            let names = index.reverse_dependencies(query);
            Ok(names
                .iter()
                .map(|n| format!("{n}\n"))
                .collect::<String>()
                .into_bytes())
        }
    }
}

fn discover(command: &str) -> Result<Vec<u8>, IdError> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .map_err(|cause| IdError::Read {
            what: format!("discovery command `{command}`"),
            cause,
        })?;
    if !output.status.success() {
        let said = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
        return Err(IdError::Discovery {
            command: shortened(command, SHOWN_COMMAND_CHARS),
            status: output.status.to_string(),
            output: output_tail(&String::from_utf8_lossy(&said)),
        });
    }
    Ok(output.stdout)
}

/// Splits input into ids: line endings (or NULs) removed, blank entries skipped.
pub fn split(raw: &[u8], separator: Separator) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let pieces: Vec<&str> = match separator {
        Separator::Newline => text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect(),
        Separator::Nul => text.split('\0').collect(),
        Separator::Preset(preset) => return preset.parse(&text),
    };
    pieces
        .into_iter()
        .filter(|id| !id.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Drops duplicates (with a warning) and what the selection excludes.
pub fn select(listed: Vec<String>, selection: &Selection) -> Result<Vec<String>, IdError> {
    let total = listed.len();
    let mut seen = HashSet::with_capacity(total);
    let mut duplicates = Vec::new();
    let mut kept = Vec::with_capacity(total);
    let mut filtered_out = 0;
    for id in listed {
        if !seen.insert(id.clone()) {
            duplicates.push(id);
        } else if selection.keeps(&id) {
            kept.push(id);
        } else {
            filtered_out += 1;
        }
    }
    if !duplicates.is_empty() {
        let examples: Vec<&str> = duplicates.iter().take(3).map(String::as_str).collect();
        warn!(
            count = duplicates.len(),
            ?examples,
            "dropped duplicate test ids"
        );
    }
    if kept.is_empty() {
        return Err(IdError::Empty {
            listed: total,
            filtered_out,
        });
    }
    within_bounds(&kept)?;
    Ok(kept)
}

/// Refuses a run whose ids the wire could not carry (`limits`): better said
/// here, with the culprit named, than as a run the aggregator parks.
fn within_bounds(ids: &[String]) -> Result<(), IdError> {
    if ids.len() > MAX_TESTS_PER_RUN {
        return Err(IdError::TooMany {
            count: ids.len(),
            max: MAX_TESTS_PER_RUN,
        });
    }
    match ids.iter().position(|id| id.len() > MAX_TEST_ID_BYTES) {
        Some(position) => Err(IdError::TooLong {
            position: position + 1,
            bytes: ids[position].len(),
            max: MAX_TEST_ID_BYTES,
            start: ids[position].chars().take(60).collect(),
        }),
        None => Ok(()),
    }
}

/// Bytes of a failed listing's output an error shows, at most (its end).
const SHOWN_OUTPUT_BYTES: usize = 4 << 10;
/// Characters of a discovery command an error shows (the pytest preset's
/// carries its plugin's source).
const SHOWN_COMMAND_CHARS: usize = 160;

/// The end of a failed listing's output (stdout and stderr) as an error
/// shows it: see [`tail_of`].
pub fn output_tail(output: &str) -> String {
    tail_of(output, SHOWN_OUTPUT_BYTES)
}

/// `text` up to `max` characters, `…` marking a cut.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The end of `output`, at most `max` bytes from a line's start (or a
/// character's), each line indented; `(no output)` when there is none.
fn tail_of(output: &str, max: usize) -> String {
    let output = output.trim_end();
    if output.is_empty() {
        return "  (no output)".to_owned();
    }
    let from = output.len().saturating_sub(max);
    let from = (from..=output.len())
        .find(|&i| output.is_char_boundary(i))
        .unwrap_or(output.len());
    let tail = &output[from..];
    let tail = match (from > 0, tail.find('\n')) {
        (true, Some(newline)) => &tail[newline + 1..],
        _ => tail,
    };
    tail.lines()
        .map(|line| format!("  {line}\n"))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_listing_shows_the_end_of_its_output_from_a_line_start() {
        let output = "go: downloading\nfork/exec /tmp/go-build1/x.test: permission denied\nFAIL\n";
        assert_eq!(
            tail_of(output, 4096),
            "  go: downloading\n  fork/exec /tmp/go-build1/x.test: permission denied\n  FAIL"
        );
        assert_eq!(tail_of(output, 30), "  FAIL", "cut at a line's start");
        assert_eq!(tail_of("", 10), "  (no output)");
        let long = "é".repeat(100);
        assert!(tail_of(&long, 11).len() <= 2 + 11, "cut at a character");
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_are_taken_verbatim() {
        let raw = b"a b\r\n'quoted' \"x\"\n\n  \n$(rm -rf /);echo\nunicode \xe2\x9c\x93\n";
        assert_eq!(
            split(raw, Separator::Newline),
            ids(&["a b", "'quoted' \"x\"", "$(rm -rf /);echo", "unicode ✓"])
        );
        assert_eq!(
            split(b"line\none\0two", Separator::Nul),
            ids(&["line\none", "two"])
        );
    }

    #[test]
    fn an_id_over_the_bound_is_named() {
        let long = "x".repeat(MAX_TEST_ID_BYTES + 1);
        let error = select(ids(&["a", &long]), &Selection::default()).unwrap_err();
        assert!(error.to_string().starts_with("test id 2 is"), "{error}");
    }

    #[test]
    fn duplicates_are_dropped_keeping_the_first() {
        let kept = select(ids(&["a", "b", "a", "c", "b"]), &Selection::default()).unwrap();
        assert_eq!(kept, ids(&["a", "b", "c"]));
    }

    #[test]
    fn filter_and_exclude_apply_together() {
        let selection = Selection {
            filters: vec![Regex::new("^unit/").unwrap()],
            excludes: vec![Regex::new("slow").unwrap()],
        };
        let kept = select(ids(&["unit/a", "unit/slow_b", "e2e/c"]), &selection).unwrap();
        assert_eq!(kept, ids(&["unit/a"]));
    }

    #[test]
    fn an_empty_run_is_an_error() {
        let err = select(vec![], &Selection::default()).unwrap_err();
        assert_eq!(err.to_string(), "no tests to run: 0 listed, 0 filtered out");
        let selection = Selection {
            filters: vec![Regex::new("nothing").unwrap()],
            excludes: vec![],
        };
        assert!(matches!(
            select(ids(&["a"]), &selection),
            Err(IdError::Empty {
                listed: 1,
                filtered_out: 1
            })
        ));
    }

    #[test]
    fn discovery_reads_stdout_and_reports_failure() {
        let listed = collect(
            &IdSource::Discover("printf 'x\\ny\\n'".into()),
            Separator::Newline,
            &Selection::default(),
        )
        .unwrap();
        assert_eq!(listed, ids(&["x", "y"]));
        let err = collect(
            &IdSource::Discover("echo broken >&2; exit 3".into()),
            Separator::Newline,
            &Selection::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
    }
}
