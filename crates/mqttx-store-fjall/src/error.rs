//! [`OpenError`]: why a store directory could not be opened, naming the directory.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of problem kept [`FjallJournal::open`](crate::FjallJournal::open) from opening
/// a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The path exists but does not hold an mqttx store: a file, a directory with other
    /// files in it, or an embedded database that is not ours. Nothing of ours was written
    /// into it.
    NotAStore,
    /// The store was written by a newer mqttx, in a format this one does not read.
    NewerFormat,
    /// Another process (or another journal in this one) has the store open.
    Locked,
    /// The store is damaged: a journal batch fails its checksum, a table cannot be read,
    /// the format marker is unreadable, or its creation was interrupted.
    Corrupt,
    /// An I/O error other than the above (permissions, a full disk, …).
    Io,
}

/// A store directory that could not be opened: which one, what kind of problem, and a
/// sentence saying what is wrong (the message text is not stable).
#[derive(Debug)]
pub struct OpenError {
    dir: PathBuf,
    kind: OpenErrorKind,
    detail: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl OpenError {
    pub(crate) fn new(dir: &Path, kind: OpenErrorKind, detail: impl Into<String>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Maps an error of fjall while opening or checking the store.
    pub(crate) fn from_fjall(dir: &Path, e: fjall::Error) -> Self {
        use fjall::Error as F;
        let (kind, detail) = match &e {
            F::Locked => (
                OpenErrorKind::Locked,
                "the store is in use by another process (or already open in this one)".to_owned(),
            ),
            F::Io(io) => (OpenErrorKind::Io, format!("i/o error: {io}")),
            F::JournalRecovery(why) => (
                OpenErrorKind::Corrupt,
                format!("the store is corrupt: its journal cannot be recovered ({why:?})"),
            ),
            F::InvalidVersion(Some(v)) => (
                OpenErrorKind::NotAStore,
                format!("not an mqttx store: a fjall database of on-disk format {v}, not 3"),
            ),
            F::InvalidVersion(None) => (
                OpenErrorKind::Corrupt,
                "the store is corrupt: its fjall version file is unreadable".to_owned(),
            ),
            F::Storage(fjall::LsmError::Io(io)) => (
                OpenErrorKind::Io,
                format!("i/o error reading a table: {io}"),
            ),
            other => (
                OpenErrorKind::Corrupt,
                format!("the store is corrupt: fjall cannot read it ({other:?})"),
            ),
        };
        Self::new(dir, kind, detail).with_source(e)
    }

    /// The directory that was to be opened.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What kind of problem it was.
    pub fn kind(&self) -> OpenErrorKind {
        self.kind
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot open the mqttx store in {}: {}",
            self.dir.display(),
            self.detail
        )
    }
}

impl Error for OpenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl From<OpenError> for io::Error {
    /// An [`io::Error`] with the same message: `ResourceBusy` when the store is locked,
    /// `InvalidData` when it is not a store, newer or corrupt, and the original kind for
    /// other I/O errors.
    fn from(e: OpenError) -> Self {
        let kind = match e.kind {
            OpenErrorKind::Locked => io::ErrorKind::ResourceBusy,
            OpenErrorKind::NotAStore | OpenErrorKind::NewerFormat | OpenErrorKind::Corrupt => {
                io::ErrorKind::InvalidData
            }
            OpenErrorKind::Io => e
                .source
                .as_deref()
                .and_then(io_kind)
                .unwrap_or(io::ErrorKind::Other),
        };
        io::Error::new(kind, e)
    }
}

fn io_kind(e: &(dyn Error + Send + Sync + 'static)) -> Option<io::ErrorKind> {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return Some(io.kind());
    }
    match e.downcast_ref::<fjall::Error>()? {
        fjall::Error::Io(io) => Some(io.kind()),
        fjall::Error::Storage(fjall::LsmError::Io(io)) => Some(io.kind()),
        _ => None,
    }
}
