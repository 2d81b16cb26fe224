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
    pub fn finish(self) -> (String, bool) {
        let head = String::from_utf8_lossy(&self.head);
        let tail_bytes: Vec<u8> = self.tail.into_iter().collect();
        let tail = String::from_utf8_lossy(&tail_bytes);
        if self.cut == 0 {
            return (format!("{head}{tail}"), false);
        }
        let marker = format!("\n[… testfleet cut {} bytes of output here …]\n", self.cut);
        (format!("{head}{marker}{tail}"), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
