//! Files of framed records: the on-disk format of the journal and of the
//! durations history.
//!
//! A file opens with a header, its kind's magic bytes and its format version
//! (little-endian `u16`), so that a file of another kind or of a format this
//! build does not know is refused, never read half-way or rewritten. Then
//! records follow, each its payload's length (`u32`), the payload's CRC-32 and
//! the payload (MessagePack). A crash mid-append can only leave the *last*
//! record incomplete (or, after a power loss, its bytes zeroed): that torn tail
//! is what a reader may cut. Anything else that does not read, a bad checksum
//! or a length out of bounds with records after it, is damage: the file is
//! refused with where and why, and kept as it is for a person to look at.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What kind of file, in which format, and how big a record may be.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// Eight bytes naming the kind, at the start of every file.
    pub magic: [u8; 8],
    /// The format this build writes and reads.
    pub version: u16,
    /// A record longer than this is damage, not a record: a lying length
    /// prefix never makes a reader allocate more.
    pub max_record: u32,
    /// What people call it, for messages.
    pub name: &'static str,
}

/// Magic bytes, then the format version.
pub const HEADER_LEN: u64 = 10;
/// A record's length and checksum.
const FRAME_LEN: u64 = 8;

/// Why a file's records cannot be trusted; names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{}: not a testfleet {kind} file (no header: written before format 3, or by something else); it is left as it is", path.display())]
    NotOurs { path: PathBuf, kind: &'static str },
    #[error("{}: a {kind} of format {found}, which this build does not read (it reads format {reads}); it is left as it is", path.display())]
    UnknownFormat {
        path: PathBuf,
        kind: &'static str,
        found: u16,
        reads: u16,
    },
    #[error("{}: damaged at byte {offset}: {reason}; the file is left as it is, and nothing of it is used", path.display())]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl FileError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
        move |cause| FileError::Io {
            path: path.to_owned(),
            cause,
        }
    }
}

/// A file's records, and where the good ones end.
#[derive(Debug)]
pub struct Contents<T> {
    pub records: Vec<T>,
    /// The length of the header and the whole records: a longer file ends
    /// with a torn record, to cut before appending.
    pub good_len: u64,
    /// Whether a torn last record follows `good_len`.
    pub torn: bool,
}

/// Replaces the file at `path` with a header and `records`: a new file,
/// synced, renamed over the old, so a crash leaves one or the other, never
/// half of each.
pub fn replace<T: Serialize>(path: &Path, kind: &Kind, records: &[T]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("compacting");
    let mut writer = io::BufWriter::new(File::create(&temporary)?);
    write_header(&mut writer, kind)?;
    for record in records {
        write_record(&mut writer, kind, record)?;
    }
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&temporary, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The longest file name most file systems take.
const MAX_FILE_NAME_BYTES: usize = 255;

/// The file of `suite`'s records in `dir`: `suite-<hex of the name>.<ext>`,
/// which keeps any name a valid and distinct file name, or, when that would
/// be longer than a file name may be (a suite name past ~120 bytes, such as
/// a nested project's path), `suite-sha256-<hex of its SHA-256>.<ext>`.
pub fn suite_file(dir: &Path, suite: &str, extension: &str) -> std::path::PathBuf {
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let name = format!("suite-{}.{extension}", hex(suite.as_bytes()));
    if name.len() <= MAX_FILE_NAME_BYTES {
        return dir.join(name);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, suite.as_bytes());
    dir.join(format!("suite-sha256-{}.{extension}", hex(digest.as_ref())))
}

/// Appends one record to the file at `path`, the header first when it is
/// `new` (its name then synced into its directory). Not synced itself: a
/// history is worth a crash's loss, and a torn tail is cut when read.
pub fn append<T: Serialize>(path: &Path, kind: &Kind, new: bool, record: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut writer = io::BufWriter::new(file);
    if new {
        write_header(&mut writer, kind)?;
    }
    write_record(&mut writer, kind, record)?;
    writer.flush()?;
    match path.parent() {
        Some(dir) if new => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Syncs a directory, so that files created, renamed or removed in it stay
/// so after a power loss (syncing a file does not sync its name).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    synced_dirs::note(dir);
    File::open(dir)?.sync_all()
}

/// The directories [`sync_dir`] synced, for the tests of the files that
/// must call it (a power loss cannot be simulated here).
#[cfg(test)]
pub mod synced_dirs {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub fn note(dir: &Path) {
        SYNCED.lock().unwrap().push(dir.to_owned());
    }

    /// How many times `dir` was synced.
    pub fn count(dir: &Path) -> usize {
        SYNCED.lock().unwrap().iter().filter(|d| *d == dir).count()
    }
}

/// Writes the header of a new file.
pub fn write_header(writer: &mut impl Write, kind: &Kind) -> io::Result<()> {
    writer.write_all(&kind.magic)?;
    writer.write_all(&kind.version.to_le_bytes())
}

/// Writes one record (not flushed); returns the bytes it took.
pub fn write_record<T: Serialize>(
    writer: &mut impl Write,
    kind: &Kind,
    record: &T,
) -> io::Result<u64> {
    let payload = rmp_serde::to_vec(record).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= kind.max_record)
        .ok_or_else(|| {
            io::Error::other(format!(
                "a {} record of {} bytes is over the {}-byte bound",
                kind.name,
                payload.len(),
                kind.max_record
            ))
        })?;
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
    writer.write_all(&payload)?;
    Ok(FRAME_LEN + payload.len() as u64)
}

/// Reads a whole file of `kind`; `None` if there is none.
pub fn read_file<T: DeserializeOwned>(
    path: &Path,
    kind: &Kind,
) -> Result<Option<Contents<T>>, FileError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io(path)(e)),
    };
    let len = file.metadata().map_err(FileError::io(path))?.len();
    let mut reader = BufReader::new(file);
    read_records(&mut reader, len, path, kind).map(Some)
}

/// Reads the header and records of a file `len` bytes long.
fn read_records<T: DeserializeOwned>(
    reader: &mut impl Read,
    len: u64,
    path: &Path,
    kind: &Kind,
) -> Result<Contents<T>, FileError> {
    if len == 0 {
        // Created, then a crash before its header was written.
        return Ok(Contents {
            records: Vec::new(),
            good_len: 0,
            torn: false,
        });
    }
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN {
        let mut start = vec![0u8; len as usize];
        reader.read_exact(&mut start).map_err(FileError::io(path))?;
        if kind.magic.starts_with(&start) || start.iter().all(|b| *b == 0) {
            return Ok(Contents {
                records: Vec::new(),
                good_len: 0,
                torn: true,
            });
        }
        return Err(not_ours(path, kind));
    }
    reader
        .read_exact(&mut header)
        .map_err(FileError::io(path))?;
    if header[..8] != kind.magic {
        return Err(not_ours(path, kind));
    }
    let found = u16::from_le_bytes([header[8], header[9]]);
    if found != kind.version {
        return Err(FileError::UnknownFormat {
            path: path.to_owned(),
            kind: kind.name,
            found,
            reads: kind.version,
        });
    }
    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    while offset < len {
        match next_record(reader, offset, len, kind) {
            Next::Record(payload) => {
                let record = rmp_serde::from_slice(&payload).map_err(|e| FileError::Damaged {
                    path: path.to_owned(),
                    offset,
                    reason: format!("a record that does not read: {e}"),
                })?;
                records.push(record);
                offset += FRAME_LEN + payload.len() as u64;
            }
            Next::Torn => {
                return Ok(Contents {
                    records,
                    good_len: offset,
                    torn: true,
                })
            }
            Next::Damaged(reason) => {
                return Err(FileError::Damaged {
                    path: path.to_owned(),
                    offset,
                    reason,
                })
            }
            Next::Io(cause) => return Err(FileError::io(path)(cause)),
        }
    }
    Ok(Contents {
        records,
        good_len: offset,
        torn: false,
    })
}

fn not_ours(path: &Path, kind: &Kind) -> FileError {
    FileError::NotOurs {
        path: path.to_owned(),
        kind: kind.name,
    }
}

/// What the bytes at a record's offset are.
enum Next {
    Record(Vec<u8>),
    /// The last record, incomplete or zeroed: a crash mid-append.
    Torn,
    Damaged(String),
    Io(io::Error),
}

/// Reads the record at `offset` of a file `len` bytes long. Only the bytes
/// the file really has are ever allocated.
fn next_record(reader: &mut impl Read, offset: u64, len: u64, kind: &Kind) -> Next {
    let left = len - offset;
    if left < FRAME_LEN {
        return Next::Torn;
    }
    let mut frame = [0u8; FRAME_LEN as usize];
    if let Err(e) = reader.read_exact(&mut frame) {
        return Next::Io(e);
    }
    let size = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let checksum = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let after_frame = left - FRAME_LEN;
    if size == 0 || size > kind.max_record {
        return match zeroes_to_the_end(reader, &frame) {
            Ok(true) => Next::Torn,
            Ok(false) => Next::Damaged(format!(
                "a record length of {size} bytes (at most {} allowed)",
                kind.max_record
            )),
            Err(e) => Next::Io(e),
        };
    }
    if u64::from(size) > after_frame {
        return Next::Torn;
    }
    let mut payload = vec![0u8; size as usize];
    if let Err(e) = reader.read_exact(&mut payload) {
        return Next::Io(e);
    }
    if crc32fast::hash(&payload) == checksum {
        return Next::Record(payload);
    }
    match u64::from(size) == after_frame {
        // The last record, its bytes not all on disk when the power went.
        true => Next::Torn,
        false => Next::Damaged("a record whose checksum does not match".into()),
    }
}

/// Whether `frame` and everything after it are zeroes: space a file system
/// gave an append that never reached the disk.
fn zeroes_to_the_end(reader: &mut impl Read, frame: &[u8]) -> io::Result<bool> {
    if frame.iter().any(|b| *b != 0) {
        return Ok(false);
    }
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(true),
            n if buffer[..n].iter().any(|b| *b != 0) => return Ok(false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: Kind = Kind {
        magic: *b"tftest\0\x01",
        version: 3,
        max_record: 1 << 20,
        name: "test",
    };

    #[test]
    fn a_file_replaced_or_created_is_synced_into_its_directory() {
        let dir = std::env::temp_dir().join(format!("tf-framed-{}", uuid::Uuid::new_v4()));
        let path = dir.join("f.test");
        append(&path, &KIND, true, &"first").unwrap();
        assert_eq!(synced_dirs::count(&dir), 1, "a new file's name");
        append(&path, &KIND, false, &"second").unwrap();
        assert_eq!(synced_dirs::count(&dir), 1, "appending changes no name");
        replace(&path, &KIND, &["only"]).unwrap();
        assert_eq!(synced_dirs::count(&dir), 2, "the rename");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn file_of(records: &[&str]) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        write_header(&mut bytes, &KIND).unwrap();
        let mut starts = Vec::new();
        for record in records {
            starts.push(bytes.len() as u64);
            write_record(&mut bytes, &KIND, record).unwrap();
        }
        (bytes, starts)
    }

    fn read(bytes: &[u8]) -> Result<Contents<String>, FileError> {
        read_records(&mut &bytes[..], bytes.len() as u64, Path::new("f"), &KIND)
    }

    #[test]
    fn records_read_back_in_order() {
        let (bytes, _) = file_of(&["a", "b", "c"]);
        let contents = read(&bytes).unwrap();
        assert_eq!(contents.records, ["a", "b", "c"]);
        assert_eq!(
            (contents.good_len, contents.torn),
            (bytes.len() as u64, false)
        );
    }

    #[test]
    fn only_a_torn_last_record_is_cut() {
        let (mut bytes, starts) = file_of(&["a", "b", "c"]);
        let whole = bytes.len() as u64;
        // Half of the last record written, as a crash mid-append leaves it.
        bytes.truncate(whole as usize - 2);
        let contents = read(&bytes).unwrap();
        assert_eq!(contents.records, ["a", "b"]);
        assert_eq!((contents.good_len, contents.torn), (starts[2], true));
        // The last record's bytes zeroed, as a power loss may leave them.
        let (mut bytes, starts) = file_of(&["a", "b", "c"]);
        bytes[starts[2] as usize..].fill(0);
        let contents = read(&bytes).unwrap();
        assert_eq!((contents.records.len(), contents.torn), (2, true));
        // A frame written, its payload's checksum wrong, nothing after it.
        let (mut bytes, _) = file_of(&["a", "b", "c"]);
        *bytes.last_mut().unwrap() ^= 0xff;
        assert!(read(&bytes).unwrap().torn);
    }

    #[test]
    fn a_damaged_middle_is_refused_not_cut() {
        let (mut bytes, starts) = file_of(&["a", "b", "c"]);
        bytes[starts[1] as usize + FRAME_LEN as usize] ^= 0xff;
        let error = read(&bytes).unwrap_err().to_string();
        assert!(
            error.contains(&format!("damaged at byte {}", starts[1])) && error.contains("checksum"),
            "{error}"
        );
    }

    #[test]
    fn a_lying_length_allocates_nothing_and_is_damage_unless_zeroes_follow() {
        let (mut bytes, starts) = file_of(&["a", "b"]);
        let at = starts[1] as usize;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = read(&bytes).unwrap_err().to_string();
        assert!(error.contains("a record length of 4294967295"), "{error}");
        // Within the bound but past the end of the file: a torn last record.
        bytes[at..at + 4].copy_from_slice(&(1u32 << 19).to_le_bytes());
        assert!(read(&bytes).unwrap().torn);
    }

    #[test]
    fn another_kind_or_format_is_refused() {
        let (mut bytes, _) = file_of(&["a"]);
        bytes[8] = 4;
        let error = read(&bytes).unwrap_err().to_string();
        assert!(
            error.contains("format 4") && error.contains("reads format 3"),
            "{error}"
        );
        let legacy = [5u8, 0, 0, 0, 0x91, 1, 2, 3, 4, 5, 6, 7];
        assert!(matches!(read(&legacy), Err(FileError::NotOurs { .. })));
        assert!(read(&[]).unwrap().records.is_empty());
        assert!(read(&KIND.magic[..5]).unwrap().torn, "a torn header");
    }
}
