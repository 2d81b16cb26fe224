//! The journal stream's entries sealed with a key only aggregators hold
//! (`aggregator.journal_key_file`): any broker user who may read the stream
//! learns nothing from it (a run's verdict token, its secret variables), and
//! an entry anyone else publishes into it does not open, so a replay skips
//! it rather than believe it. ChaCha20-Poly1305 (ring), a random nonce per
//! entry, the stream's name as associated data (an entry of another
//! prefix's stream does not open here).

use std::path::Path;
use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The stream's own format: sealed entries (format 4). The file journal,
/// which only the aggregator's user reads, keeps format 3 unsealed.
pub const STREAM_FORMAT: u16 = 4;

/// The key every aggregator of a prefix holds.
#[derive(Clone)]
pub struct JournalKey(Arc<LessSafeKey>);

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalKey(<secret>)")
    }
}

/// One message of the stream, as it travels.
#[derive(Serialize, Deserialize)]
struct Sealed {
    format: u16,
    #[serde(with = "serde_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sealed: Vec<u8>,
}

impl JournalKey {
    /// A key of 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<JournalKey, String> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| format!("a journal key is 32 bytes, not {}", bytes.len()))?;
        Ok(JournalKey(Arc::new(LessSafeKey::new(key))))
    }

    /// The key in `path`: 32 bytes, or 64 hexadecimal digits (what
    /// `openssl rand -hex 32` writes).
    pub fn read(path: &Path) -> Result<JournalKey, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let hex = text.trim();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let decoded: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits"))
                .collect();
            return JournalKey::from_bytes(&decoded);
        }
        JournalKey::from_bytes(&bytes)
            .map_err(|e| format!("{}: {e} (or 64 hexadecimal digits)", path.display()))
    }

    /// `plain` sealed for the stream `stream`.
    pub fn seal(&self, stream: &str, plain: Vec<u8>) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source answers");
        let mut sealed = plain;
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(stream.as_bytes()),
                &mut sealed,
            )
            .expect("a journal entry is far below ChaCha20-Poly1305's limit");
        rmp_serde::to_vec(&Sealed {
            format: STREAM_FORMAT,
            nonce: nonce.to_vec(),
            sealed,
        })
        .expect("a sealed entry serializes")
    }

    /// What a message of the stream `stream` holds, if this key sealed it
    /// for that stream; why not otherwise.
    pub fn open(&self, stream: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        let sealed: Sealed = rmp_serde::from_slice(message)
            .map_err(|e| format!("not a sealed journal entry: {e}"))?;
        if sealed.format != STREAM_FORMAT {
            return Err(format!(
                "an entry of format {}, which this build does not read (it reads format {STREAM_FORMAT}); another testfleet version may lead this prefix",
                sealed.format
            ));
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce)
            .map_err(|_| "a sealed entry with a bad nonce".to_owned())?;
        let mut bytes = sealed.sealed;
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(stream.as_bytes()), &mut bytes)
            .map_err(|_| {
                "an entry that does not open with this key: another key sealed it, or nobody did"
                    .to_owned()
            })?;
        let length = plain.len();
        bytes.truncate(length);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_and_stream_that_sealed_an_entry_open_it() {
        let key = JournalKey::from_bytes(&[7; 32]).unwrap();
        let other = JournalKey::from_bytes(&[8; 32]).unwrap();
        let message = key.seal("p.journal", b"the verdict token".to_vec());
        assert!(
            !message.windows(17).any(|w| w == b"the verdict token"),
            "sealed"
        );
        assert_eq!(
            key.open("p.journal", &message).unwrap(),
            b"the verdict token"
        );
        assert!(other.open("p.journal", &message).is_err(), "another key");
        assert!(
            key.open("q.journal", &message).is_err(),
            "another prefix's stream"
        );
        assert!(key.open("p.journal", b"forged").is_err());
        assert!(JournalKey::from_bytes(&[1; 16]).is_err());
    }

    #[test]
    fn a_key_file_holds_raw_bytes_or_hex() {
        let dir = std::env::temp_dir().join(format!("tf-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let hex = dir.join("hex");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
        let raw = dir.join("raw");
        std::fs::write(&raw, [0xab; 32]).unwrap();
        let sealed = JournalKey::read(&hex).unwrap().seal("s", b"x".to_vec());
        assert_eq!(
            JournalKey::read(&raw).unwrap().open("s", &sealed).unwrap(),
            b"x"
        );
        std::fs::write(&raw, b"short").unwrap();
        assert!(JournalKey::read(&raw).unwrap_err().contains("32 bytes"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
