//! Length-prefixed MessagePack records: the on-disk format of the journal and of
//! the durations history. Each record is its length (u32, little-endian) then its
//! bytes, so a crash mid-write leaves a torn tail that readers can tell apart.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

/// Writes one record (not flushed).
pub fn write<T: Serialize>(writer: &mut impl Write, record: &T) -> io::Result<()> {
    let bytes = rmp_serde::to_vec(record).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(&bytes)
}

/// Hands each record of `reader` to `each`, stopping at the end, at a torn
/// record or at an unreadable one (logged with `path`: what follows it cannot be
/// trusted). Returns how many bytes the readable records take from the start.
pub fn read_each<T: DeserializeOwned>(
    reader: &mut impl Read,
    path: &Path,
    mut each: impl FnMut(T),
) -> io::Result<u64> {
    let mut good_len = 0;
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        if reader.read_exact(&mut bytes).is_err() {
            warn!(path = %path.display(), "ignoring a torn record at the end of a file");
            break;
        }
        match rmp_serde::from_slice(&bytes) {
            Ok(record) => each(record),
            Err(error) => {
                warn!(path = %path.display(), %error, "ignoring an unreadable record and what follows");
                break;
            }
        }
        good_len += 4 + bytes.len() as u64;
    }
    Ok(good_len)
}
