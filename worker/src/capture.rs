//! Captures a test's output under a byte cap, keeping its head and its tail.
//!
//! The start of a log says what a test was doing and the end says how it died;
//! the middle of a 100 MB log rarely matters. Memory stays at the cap whatever the
//! test prints.

use std::collections::VecDeque;

/// Output kept under a cap: the first half verbatim, the last half as a ring.
#[derive(Debug)]
pub struct OutputCapture {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    /// Bytes that fell out of the middle.
    cut: u64,
}

impl OutputCapture {
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        OutputCapture {
            head_cap,
            tail_cap: cap - head_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            cut: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.tail_cap {
            self.cut += (self.tail.len() + bytes.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.cut += overflow as u64;
        self.tail.extend(bytes);
    }

    /// The kept output as UTF-8 (invalid sequences replaced) and whether any was cut.
    /// Replacement characters take three bytes for each invalid one, so binary
    /// output is cut again to keep the text itself within the cap.
    pub fn finish(self) -> (String, bool) {
        let (head, head_cut) = lossy_within(&self.head, self.head_cap, Keep::Start);
        let tail_bytes: Vec<u8> = self.tail.into_iter().collect();
        let (tail, tail_cut) = lossy_within(&tail_bytes, self.tail_cap, Keep::End);
        let cut = self.cut + (head_cut + tail_cut) as u64;
        if cut == 0 {
            return (format!("{head}{tail}"), false);
        }
        let marker = format!("\n[… testfleet cut {cut} bytes of output here …]\n");
        (format!("{head}{marker}{tail}"), true)
    }
}

/// Which end of a text to keep when it must be shortened.
#[derive(Clone, Copy)]
enum Keep {
    Start,
    End,
}

/// `bytes` as UTF-8 (invalid sequences replaced) in at most `budget` bytes, cut
/// at a character boundary; also how many bytes of text were cut.
fn lossy_within(bytes: &[u8], budget: usize, keep: Keep) -> (String, usize) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() <= budget {
        return (text, 0);
    }
    let cut = text.len() - budget;
    let kept = match keep {
        Keep::Start => {
            let end = (0..=budget)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text[..end].to_owned()
        }
        Keep::End => {
            let start = (cut..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            text[start..].to_owned()
        }
    };
    let dropped = text.len() - kept.len();
    debug_assert!(dropped >= cut);
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_output_stays_within_the_cap_as_text() {
        let mut capture = OutputCapture::new(1000);
        let binary: Vec<u8> = (0..10_000u32)
            .map(|i| (i * 131 % 256) as u8 | 0x80)
            .collect();
        capture.push(&binary);
        let (text, truncated) = capture.finish();
        assert!(truncated);
        let marker_len = text
            .lines()
            .find(|l| l.contains("testfleet cut"))
            .unwrap()
            .len()
            + 2;
        assert!(text.len() - marker_len <= 1000, "{} bytes", text.len());
        assert!(text.contains('\u{FFFD}'));
    }

    #[test]
    fn small_output_is_kept_whole() {
        let mut capture = OutputCapture::new(100);
        capture.push(b"hello ");
        capture.push(b"world");
        assert_eq!(capture.finish(), ("hello world".to_owned(), false));
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let mut capture = OutputCapture::new(10);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qrstuvwxyz"] {
            capture.push(chunk);
        }
        let (text, cut) = capture.finish();
        assert!(cut);
        assert!(text.starts_with("abcde"), "{text}");
        assert!(text.ends_with("vwxyz"), "{text}");
        assert!(text.contains("cut 16 bytes"), "{text}");
    }

    #[test]
    fn memory_is_bounded_by_the_cap() {
        let mut capture = OutputCapture::new(64);
        for _ in 0..10_000 {
            capture.push(&[b'x'; 1000]);
        }
        assert_eq!(capture.head.len() + capture.tail.len(), 64);
        assert_eq!(capture.cut, 10_000 * 1000 - 64);
    }

    #[test]
    fn binary_output_becomes_valid_utf8() {
        let mut capture = OutputCapture::new(100);
        capture.push(&[0xff, 0xfe, b'o', b'k', 0xc3]);
        let (text, _) = capture.finish();
        assert!(text.contains("ok"));
        assert!(text.contains('\u{fffd}'));
    }
}
