//! The quarantine file (`run.quarantine_file`): tests that run and are
//! reported but whose failure fails no verdict, each with a reason and an
//! expiry date. Read and checked here, before anything is published: a bad
//! entry is a usage error naming the file and the entry; an expired one is
//! warned about and left out (the test fails the verdict again, as it
//! should once nobody renews its entry).
//!
//! ```toml
//! [[quarantine]]
//! test = "tests/test_net.py::test_retry"
//! reason = "flaky on CI, tracked in #123"
//! expires = "2027-01-31"
//! ```

use std::path::Path;

use serde::Deserialize;
use testfleet_types::limits::{MAX_QUARANTINE, MAX_REASON_BYTES, MAX_TEST_ID_BYTES, MAX_TIME_MS};
use testfleet_types::messages::Quarantine;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    quarantine: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    test: String,
    reason: String,
    expires: String,
}

/// The entries that hold at `now_ms`, and a warning for each that expired.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    pub entries: Vec<Quarantine>,
    pub expired: Vec<String>,
}

/// Reads and checks the quarantine file at `path`.
pub fn read(path: &Path, now_ms: u64) -> Result<Read, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("run.quarantine_file {}: {error}", path.display()))?;
    parse(&text, now_ms)
        .map_err(|problem| format!("run.quarantine_file {}: {problem}", path.display()))
}

fn parse(text: &str, now_ms: u64) -> Result<Read, String> {
    let file: File = toml::from_str(text).map_err(|error| error.to_string())?;
    if file.quarantine.len() > MAX_QUARANTINE {
        return Err(format!("more than {MAX_QUARANTINE} entries"));
    }
    let mut read = Read::default();
    for (number, entry) in file.quarantine.into_iter().enumerate() {
        let which = format!("entry {} ({:?})", number + 1, entry.test);
        let expires_ms = checked(&entry).map_err(|problem| format!("{which}: {problem}"))?;
        if expires_ms <= now_ms {
            read.expired.push(format!(
                "quarantine of {:?} expired on {} ({}): it fails the verdict again; renew or remove the entry",
                entry.test, entry.expires, entry.reason
            ));
            continue;
        }
        read.entries.push(Quarantine {
            test_id: entry.test,
            reason: entry.reason,
            expires_ms,
        });
    }
    Ok(read)
}

/// The entry's expiry in Unix ms (the start of that day, UTC), if the
/// entry is sound. A date past what the wire carries (year 3000; a usual
/// way to write "never" is 9999-12-31) expires at that bound: never, for
/// the fleet.
fn checked(entry: &Entry) -> Result<u64, String> {
    if entry.test.is_empty() || entry.test.len() > MAX_TEST_ID_BYTES {
        return Err(format!(
            "test must be an id of 1 to {MAX_TEST_ID_BYTES} bytes"
        ));
    }
    if entry.reason.trim().is_empty() || entry.reason.len() > MAX_REASON_BYTES {
        return Err(format!(
            "reason must say why, in at most {MAX_REASON_BYTES} bytes"
        ));
    }
    day_start_ms(&entry.expires)
        .map(|ms| ms.min(MAX_TIME_MS))
        .ok_or_else(|| format!("expires must be a date YYYY-MM-DD, not {:?}", entry.expires))
}

/// `YYYY-MM-DD` as Unix ms at 00:00 UTC that day.
fn day_start_ms(date: &str) -> Option<u64> {
    let mut parts = date.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let seconds = date.midnight().assume_utc().unix_timestamp();
    u64::try_from(seconds).ok()?.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2027_MS: u64 = 1_798_761_600_000;

    #[test]
    fn entries_hold_until_their_day_and_expired_ones_are_said() {
        let text = r#"
[[quarantine]]
test = "t::flaky"
reason = "known flaky, #12"
expires = "2027-01-02"

[[quarantine]]
test = "t::old"
reason = "was flaky"
expires = "2027-01-01"
"#;
        let read = parse(text, JAN_1_2027_MS).unwrap();
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.entries[0].test_id, "t::flaky");
        assert_eq!(read.entries[0].expires_ms, JAN_1_2027_MS + 86_400_000);
        assert_eq!(read.expired.len(), 1);
        assert!(read.expired[0].contains("t::old"), "{:?}", read.expired);
    }

    #[test]
    fn an_expiry_past_the_wires_bound_means_never() {
        let text = "[[quarantine]]\ntest = \"a\"\nreason = \"r\"\nexpires = \"9999-12-31\"";
        let read = parse(text, JAN_1_2027_MS).unwrap();
        assert_eq!(read.entries[0].expires_ms, MAX_TIME_MS);
        let announce =
            testfleet_types::messages::Body::Run(testfleet_types::messages::RunAnnounce {
                run_id: uuid::Uuid::nil(),
                suite: "s".into(),
                created_at_ms: JAN_1_2027_MS,
                deadline_ms: JAN_1_2027_MS + 1,
                spec: testfleet_common::config::default_spec(),
                tests: vec!["a".into()],
                verdict_token: None,
                queue: Default::default(),
                weight: 1,
                auto_quarantine_percent: None,
                quarantine: read.entries,
                signatures: Vec::new(),
                ab: None,
            });
        assert_eq!(
            testfleet_types::checks::check(&announce),
            Ok(()),
            "as the aggregator checks it"
        );
    }

    #[test]
    fn a_bad_entry_is_named() {
        for (text, said) in [
            (
                "[[quarantine]]\ntest = \"a\"\nreason = \"r\"\nexpires = \"2027-02-30\"",
                "entry 1 (\"a\"): expires",
            ),
            (
                "[[quarantine]]\ntest = \"a\"\nreason = \" \"\nexpires = \"2027-02-01\"",
                "reason",
            ),
            (
                "[[quarantine]]\ntest = \"a\"\nreason = \"r\"\nexpire = \"2027-02-01\"",
                "expire",
            ),
        ] {
            let error = parse(text, 0).unwrap_err();
            assert!(error.contains(said), "{said} in {error}");
        }
        assert_eq!(parse("", 0).unwrap(), Read::default());
    }
}
