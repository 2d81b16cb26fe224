//! Escaping and the small vocabulary the HTML report's parts share: text made
//! safe for HTML, status classes, and axis steps for the charts.

use testfleet_types::messages::{AttemptStatus, FinalStatus, Outcome};

use crate::format::{one_line, tail_lines};

/// `s` with the five characters that mean something in HTML (in text and in
/// quoted attributes) replaced by entities.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Text from outside (an id, a worker name, a message) on one line of at most
/// `max_chars`, control and bidirectional characters shown escaped, then made
/// safe for HTML.
pub fn text(s: &str, max_chars: usize) -> String {
    esc(&one_line(s, max_chars))
}

/// The last `lines` lines of an output, as a terminal showed them, each cut
/// to `max_line_chars` and made safe for a `<pre>`. Bidirectional overrides
/// are shown escaped so they cannot reorder what the reader sees.
pub fn output_tail(output: &str, lines: usize, max_line_chars: usize) -> String {
    let shown: Vec<String> = tail_lines(output, lines, max_line_chars)
        .iter()
        .map(|line| esc(&escape_bidi(line)))
        .collect();
    shown.join("\n")
}

fn escape_bidi(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
                c.escape_unicode().to_string()
            }
            _ => c.to_string(),
        })
        .collect()
}

/// The CSS class that colours a final status (`style.css` defines each).
pub fn final_class(status: FinalStatus) -> &'static str {
    match status {
        FinalStatus::Passed => "s-passed",
        FinalStatus::Flaky => "s-flaky",
        FinalStatus::Failed => "s-failed",
        FinalStatus::TimedOut => "s-timedout",
        FinalStatus::Error => "s-error",
        FinalStatus::Missing => "s-missing",
        FinalStatus::DeadLettered => "s-dead",
    }
}

/// The CSS class that colours one attempt's status.
pub fn attempt_class(status: AttemptStatus) -> &'static str {
    match status {
        AttemptStatus::Ran(Outcome::Passed) => "s-passed",
        AttemptStatus::Ran(Outcome::Failed) => "s-failed",
        AttemptStatus::Ran(Outcome::TimedOut) => "s-timedout",
        AttemptStatus::Ran(Outcome::Error) => "s-error",
        AttemptStatus::Missing => "s-missing",
        AttemptStatus::DeadLettered { .. } => "s-dead",
    }
}

/// The smallest "nice" step (1, 2 or 5 times a power of ten) that splits
/// `span` into at most `parts` parts; at least 1.
pub fn nice_step(span: u64, parts: u64) -> u64 {
    let wanted = span.div_ceil(parts.max(1)).max(1);
    let mut power = 1u64;
    loop {
        for factor in [1u64, 2, 5] {
            let step = factor.saturating_mul(power);
            if step >= wanted {
                return step;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// A time offset for an axis label: "750 ms", "12 s", "2.5 s", "3 min".
pub fn axis_time(ms: u64) -> String {
    if ms == 0 {
        "0".to_owned()
    } else if ms < 1_000 {
        format!("{ms} ms")
    } else if whole(ms, 60_000) {
        format!("{} min", ms / 60_000)
    } else if whole(ms, 1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{}.{} s", ms / 1_000, (ms % 1_000) / 100)
    }
}

/// Whether `ms` is a whole number of `unit`s (`u64::is_multiple_of` is newer
/// than the workspace's minimum Rust).
fn whole(ms: u64, unit: u64) -> bool {
    let rest = ms % unit;
    rest == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_nothing_live() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(text("a\n<b>", 100), "a\\n&lt;b&gt;");
        assert_eq!(
            output_tail("1\n\u{1b}[31m<red>\u{202E}x\n", 5, 100),
            "1\n&lt;red&gt;\\u{202e}x"
        );
    }

    #[test]
    fn steps_and_labels() {
        assert_eq!(nice_step(10_000, 10), 1_000);
        assert_eq!(nice_step(12_000, 10), 2_000);
        assert_eq!(nice_step(31_000, 10), 5_000);
        assert_eq!(nice_step(0, 10), 1);
        assert_eq!(nice_step(7, 24), 1);
        assert_eq!(axis_time(0), "0");
        assert_eq!(axis_time(500), "500 ms");
        assert_eq!(axis_time(2_500), "2.5 s");
        assert_eq!(axis_time(120_000), "2 min");
        assert_eq!(axis_time(90_000), "90 s");
    }
}
