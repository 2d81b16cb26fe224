//! `testfleet-report`: reports on a finished run: JSON, JUnit XML, Markdown,
//! HTML, per-attempt output files and a console summary.
//!
//! These are pure renderers of a [`RunReport`]: they depend on `common`'s
//! types alone, know nothing of the broker or of how the run was followed,
//! and write only under the directory given. The aggregator and the waiting
//! producer both write their reports with them, as nextest keeps its reporters
//! apart from its runner.
//!
//! Layout: [`json`] (`report.json`), [`junit`], [`markdown`] (the pull-request
//! summary), [`html`] (the page, with its timeline, durations and batches),
//! [`outputs`] (one file per failed attempt and per kept batch log),
//! [`triage`] (failures grouped by cause), [`reasons`] (tests that did
//! not pass, by why), `compare` (an A/B run's ids by class, with their
//! sides), `console` (the summary printed at
//! the end), `format` (wording and numbers the renderers share), `fixture`
//! (sample reports for the unit tests).

mod compare;
mod console;
mod format;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod outputs;
pub mod reasons;
pub mod triage;

#[cfg(test)]
mod fixture;

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use testfleet_types::messages::RunReport;
use testfleet_types::triage::TriageRule;

pub use console::console_summary;
pub use format::MISSING_MESSAGE;

/// Where [`write_all`] put each report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// `<base_dir>/<run_id>/`, holding everything below.
    pub dir: PathBuf,
    pub json: PathBuf,
    pub junit: PathBuf,
    pub markdown: PathBuf,
    /// `report.html`: the page for people, self-contained.
    pub html: PathBuf,
    /// One log per failed attempt, plus `index.json`.
    pub outputs: PathBuf,
}

impl ReportPaths {
    fn in_dir(dir: PathBuf) -> Self {
        ReportPaths {
            json: dir.join("report.json"),
            junit: dir.join("junit.xml"),
            markdown: dir.join("summary.md"),
            html: dir.join("report.html"),
            outputs: dir.join("outputs"),
            dir,
        }
    }
}

/// Writes every report for `report` into `dir/<run_id>/` (creating it) and
/// returns their paths; failures are grouped by signature alone.
pub fn write_all(report: &RunReport, base_dir: &Path) -> io::Result<ReportPaths> {
    write_all_with_rules(report, base_dir, &[])
}

/// [`write_all`], with failures grouped by the user's triage `rules` first.
pub fn write_all_with_rules(
    report: &RunReport,
    base_dir: &Path,
    rules: &[TriageRule],
) -> io::Result<ReportPaths> {
    let triage = triage::triage(report, rules);
    let paths = ReportPaths::in_dir(base_dir.join(report.run_id.to_string()));
    fs::create_dir_all(&paths.dir).map_err(|e| with_path(e, &paths.dir))?;
    write_streamed(&paths.json, |out| json::write(report, out))?;
    write_streamed(&paths.junit, |out| {
        junit::write(report, out).map_err(io::Error::other)
    })?;
    write_file(
        &paths.markdown,
        markdown::render(report, &triage).as_bytes(),
    )?;
    write_file(&paths.html, html::render(report, &triage).as_bytes())?;
    outputs::write(report, &paths.outputs).map_err(|e| with_path(e, &paths.outputs))?;
    Ok(paths)
}

/// The Markdown summary (`summary.md`'s text), for a CI system's own summary
/// page (GitHub's `GITHUB_STEP_SUMMARY`).
pub fn summary_markdown(report: &RunReport, rules: &[TriageRule]) -> String {
    markdown::render(report, &triage::triage(report, rules))
}

/// Writes through a temporary file and a rename, so that a reader (a CI step
/// picking up `junit.xml`) never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_streamed(path, |out| out.write_all(bytes))
}

/// [`write_file`] for content that `render` writes as it goes.
fn write_streamed(
    path: &Path,
    render: impl FnOnce(&mut BufWriter<fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    fs::File::create(&partial)
        .and_then(|file| {
            let mut out = BufWriter::new(file);
            render(&mut out)?;
            out.into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .sync_data()
        })
        .and_then(|()| fs::rename(&partial, path))
        .map_err(|e| with_path(e, path))
}

/// Names the file in the error: a bare "permission denied" does not say where.
fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("writing {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_report_into_the_run_directory() {
        let report = fixture::sample_report();
        let tests = report.tests.iter().map(json::schema::Test::from).collect();
        let batches = report
            .batches
            .iter()
            .map(json::schema::Batch::from)
            .collect();
        let base = fixture::temp_dir("write-all");
        let paths = write_all(&report, &base).unwrap();

        let dir = base.join(report.run_id.to_string());
        assert_eq!(paths, ReportPaths::in_dir(dir.clone()));
        assert_eq!(paths.junit, dir.join("junit.xml"));
        assert_eq!(paths.html, dir.join("report.html"));
        for file in [&paths.json, &paths.junit, &paths.markdown, &paths.html] {
            assert!(fs::metadata(file).unwrap().len() > 0, "{}", file.display());
        }
        assert!(paths.outputs.join(outputs::INDEX_FILE).is_file());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
        let back = json::read(&fs::read(&paths.json).unwrap()).unwrap();
        let compared = report
            .comparison
            .as_ref()
            .map(|_| json::compared_tests(&report));
        assert_eq!(
            back,
            json::schema::Report::of(&report, tests, batches, compared)
        );
        assert!(fs::read_to_string(&paths.markdown)
            .unwrap()
            .starts_with("## ❌"));

        // A second write of the same run succeeds and lands in the same place.
        assert_eq!(write_all(&report, &base).unwrap(), paths);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_blocked_directory_is_an_error_naming_the_path() {
        let base = fixture::temp_dir("blocked");
        let report = fixture::sample_report();
        // A file where the run directory should go.
        fs::write(base.join(report.run_id.to_string()), "").unwrap();
        let error = write_all(&report, &base).unwrap_err();
        assert!(
            error.to_string().contains(&report.run_id.to_string()),
            "{error}"
        );
        fs::remove_dir_all(base).unwrap();
    }
}
