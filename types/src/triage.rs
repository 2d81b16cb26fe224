//! A failure-triage rule: the reports group failing tests whose output
//! matches its pattern under its name. Validated from configuration by
//! `testfleet-common`'s `config.rs`, used by the report crate.

use regex::Regex;

/// Failing tests whose output matches `pattern` are grouped under `name`.
#[derive(Debug, Clone)]
pub struct TriageRule {
    pub name: String,
    pub pattern: Regex,
}
