//! `report.json`: the whole run report, every attempt included, for tools and
//! for anyone who needs what the shorter reports leave out.

use std::io::{self, Write};

use testfleet_common::wire::RunReport;

/// The report as pretty-printed JSON, ending with a newline.
pub fn render(report: &RunReport) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write(report, &mut bytes)?;
    Ok(bytes)
}

/// [`render`] into `out` as it goes: a big run's JSON is hundreds of MB, which
/// should not sit in memory beside the report it comes from.
pub fn write(report: &RunReport, mut out: impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut out, report)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn round_trips_with_every_attempt() {
        let report = fixture::sample_report();
        let bytes = render(&report).unwrap();
        let back: RunReport = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, report);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"DeadLettered\""));
        assert!(text.contains("\"deliveries\": 5"));
        assert!(text.contains("first try"), "earlier attempts are kept");
        assert!(text.ends_with("}\n"));
    }
}
