//! `report.json`: the whole run report, every attempt included, for tools and
//! for anyone who needs what the shorter reports leave out. Its schema is
//! `docs/REPORT.md`'s, versioned by its `schema` field.

use std::io::{self, Write};

use serde::Serialize;
use testfleet_common::wire::RunReport;

/// The report as pretty-printed JSON, ending with a newline.
pub fn render(report: &RunReport) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write(report, &mut bytes)?;
    Ok(bytes)
}

/// The schema version `report.json` carries (`docs/REPORT.md`).
pub const SCHEMA: u32 = 2;

/// `report.json`'s own type: the run report with its schema version. Not a
/// wire type (the verdict message carries the `RunReport` itself), so the two
/// can change apart.
#[derive(Serialize)]
struct ReportJson<'a> {
    schema: u32,
    #[serde(flatten)]
    report: &'a RunReport,
}

/// [`render`] into `out` as it goes: a big run's JSON is hundreds of MB, which
/// should not sit in memory beside the report it comes from.
pub fn write(report: &RunReport, mut out: impl Write) -> io::Result<()> {
    let document = ReportJson {
        schema: SCHEMA,
        report,
    };
    serde_json::to_writer_pretty(&mut out, &document)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn round_trips_with_every_attempt() {
        let report = fixture::sample_report();
        let bytes = render(&report).unwrap();
        let back: RunReport = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, report);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"DeadLettered\""));
        assert!(text.starts_with("{\n  \"schema\": 2,"), "versioned first");
        assert!(text.contains("\"deliveries\": 5"));
        assert!(text.contains("first try"), "earlier attempts are kept");
        assert!(text.ends_with("}\n"));
    }
}
