//! Rules that read failures' output: a failure-triage rule (the reports
//! group failing tests whose output matches its pattern under its name;
//! validated from configuration by `testfleet-common`'s `config.rs`, used by
//! the report crate), and a run's log-signature rules (`run.signatures`),
//! which name why an attempt failed and whether that was the fleet's fault
//! (validated by the same file, matched by the aggregator).

use regex::{Regex, RegexBuilder};

use crate::messages::{Signature, SignatureRule};

/// Failing tests whose output matches `pattern` are grouped under `name`.
#[derive(Debug, Clone)]
pub struct TriageRule {
    pub name: String,
    pub pattern: Regex,
}

/// The most a signature's compiled program may take: a pattern from the
/// wire cannot make the aggregator build a huge automaton.
const SIGNATURE_PROGRAM_BYTES: usize = 1 << 20;

/// A signature rule's pattern, compiled as both the producer (to refuse a
/// bad one) and the aggregator (to match) compile it.
pub fn signature_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(SIGNATURE_PROGRAM_BYTES)
        .build()
}

/// A run's signature rules, compiled. A rule whose pattern does not compile
/// (the producer refuses those; one can only come forged) never matches.
#[derive(Debug, Default)]
pub struct Signatures {
    rules: Vec<(Signature, Option<Regex>)>,
}

impl Signatures {
    pub fn new(rules: &[SignatureRule]) -> Self {
        let rules = rules
            .iter()
            .map(|rule| {
                let signature = Signature {
                    name: rule.name.clone(),
                    fleet_fault: rule.fleet_fault,
                };
                (signature, signature_regex(&rule.pattern).ok())
            })
            .collect();
        Signatures { rules }
    }

    /// The first rule whose pattern `text` matches, by its position.
    pub fn first_match(&self, text: &str) -> Option<u16> {
        let position = self
            .rules
            .iter()
            .position(|(_, regex)| regex.as_ref().is_some_and(|r| r.is_match(text)))?;
        u16::try_from(position).ok()
    }

    /// The rule at `position`, as reports name it.
    pub fn get(&self, position: u16) -> Option<&Signature> {
        self.rules.get(usize::from(position)).map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, pattern: &str, fleet_fault: bool) -> SignatureRule {
        SignatureRule {
            name: name.into(),
            pattern: pattern.into(),
            fleet_fault,
        }
    }

    #[test]
    fn the_first_matching_rule_names_it_and_a_bad_pattern_never_matches() {
        let signatures = Signatures::new(&[
            rule("broken", "(unclosed", true),
            rule("no-space", "(?i)no space left on device", true),
            rule("resolver", "unmet dependencies|No space", false),
        ]);
        let at = signatures
            .first_match("write: No space left on device")
            .unwrap();
        assert_eq!(signatures.get(at).unwrap().name, "no-space");
        let at = signatures.first_match("E: unmet dependencies").unwrap();
        assert!(!signatures.get(at).unwrap().fleet_fault);
        assert_eq!(signatures.first_match("(unclosed"), None);
        assert!(
            signature_regex(&"a{1000}{1000}".repeat(3)).is_err(),
            "too big a program"
        );
    }
}
