//! mqttx-store-fjall: [`FjallJournal`], the durable [`Journal`] of the mqttx broker, kept in
//! one directory on the local disk by fjall, an embedded log-structured (LSM-tree)
//! key-value store.
//!
//! It stores and loads the broker's tables; it knows nothing of MQTT, sessions or the
//! encoding of the keys and values (the broker defines those), and it is not a database
//! server: only one process opens a store at a time.
//!
//! Why fjall: the broker needs an ordered key-value store with atomic batches across
//! tables, a write-ahead journal it can fsync on demand, and recovery that discards a torn
//! last batch, embedded in the process so that `mqttx broker` keeps its state with no server
//! to install. fjall is the pure-Rust embedded LSM store that does this (no C toolchain, as
//! RocksDB's bindings would need), and it is the storage dependency the mqttx brief chose.
//! It is built without its default `lz4` feature: mqttx values are small, and the build
//! stays lean.
//!
//! # Layout
//!
//! One directory holds fjall's files: its `version` file, its `lock` file, its journal
//! (`*.jnl`) and `keyspaces/`. There is one keyspace per [`Table`] (named by
//! [`Table::name`]) and a `meta` keyspace whose `format` key holds the store's format
//! version ([`FORMAT_VERSION`], in ASCII decimal). `docs/storage.md` describes it all,
//! with the sync policies and recovery.
//!
//! # Getting started
//!
//! ```
//! use mqttx_broker::{Journal, JournalOp, Table};
//! use mqttx_store_fjall::{FjallJournal, SyncPolicy};
//!
//! # let dir = std::env::temp_dir().join(format!("mqttx-store-doctest-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let journal = FjallJournal::open(&dir, SyncPolicy::EveryBatch)?;
//! journal.commit(&[JournalOp::Put {
//!     table: Table::Retained,
//!     key: b"a/b".to_vec(),
//!     value: b"hello".to_vec(),
//! }])?;
//! drop(journal);
//!
//! let journal = FjallJournal::open(&dir, SyncPolicy::EveryBatch)?;
//! assert_eq!(journal.load()?, vec![(Table::Retained, b"a/b".to_vec(), b"hello".to_vec())]);
//! # drop(journal);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Limits
//!
//! Keys are 1 to 65 535 bytes long and values at most 4 GiB − 1 (fjall's limits);
//! [`Journal::commit`] refuses a batch that breaks them with `InvalidInput`, writing
//! nothing.
//!
//! # Crate features
//!
//! None.

mod error;
mod sync;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use mqttx_broker::{Entry, Journal, JournalOp, Table};

pub use error::{OpenError, OpenErrorKind};
pub use sync::{ParseSyncPolicyError, SyncPolicy};

/// The on-disk format version this crate writes and reads: the `format` key of the `meta`
/// keyspace. A store with a larger number is refused ([`OpenErrorKind::NewerFormat`]).
pub const FORMAT_VERSION: u32 = 1;

/// The longest key fjall stores.
const MAX_KEY_LEN: usize = u16::MAX as usize;
/// The longest value fjall stores.
const MAX_VALUE_LEN: u64 = u32::MAX as u64;

const META_KEYSPACE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";
/// The file fjall writes last when it creates a database.
const FJALL_VERSION_FILE: &str = "version";

/// A [`Journal`] in a directory on disk, kept by fjall.
///
/// [`open`](Self::open) it once, give it to the broker, and drop it to close the store
/// (dropping flushes and fsyncs the journal and releases the directory's lock).
pub struct FjallJournal {
    // First, so that it is dropped (its thread stopped) before the database.
    syncer: Option<Syncer>,
    dir: PathBuf,
    policy: SyncPolicy,
    db: Database,
    tables: Vec<(Table, Keyspace)>,
}

/// The background thread of [`SyncPolicy::Interval`]: it fsyncs the journal every interval
/// and stops when `stop` is dropped.
struct Syncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only loops on a channel and fsyncs; it has nothing to report.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for FjallJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FjallJournal")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .field("sync_thread", &self.syncer.is_some())
            .finish_non_exhaustive()
    }
}

impl FjallJournal {
    /// Opens the store in `dir`, creating the directory and an empty store when `dir` does
    /// not exist or is an empty directory.
    ///
    /// # Errors
    ///
    /// An [`OpenError`] naming `dir` and what is wrong, never a silent empty start: `dir`
    /// is not a store ([`NotAStore`](OpenErrorKind::NotAStore): a file, a directory with
    /// other files, an embedded database that is not ours; nothing of ours is written), was written
    /// by a newer mqttx ([`NewerFormat`](OpenErrorKind::NewerFormat)), is open elsewhere
    /// ([`Locked`](OpenErrorKind::Locked)), is damaged ([`Corrupt`](OpenErrorKind::Corrupt)),
    /// or an I/O error ([`Io`](OpenErrorKind::Io)).
    pub fn open(dir: &Path, policy: SyncPolicy) -> Result<FjallJournal, OpenError> {
        let existing = check_dir(dir)?;
        let db = Database::builder(dir)
            .open()
            .map_err(|e| OpenError::from_fjall(dir, e))?;
        let fjall = |e| OpenError::from_fjall(dir, e);
        let needs_marker = if existing {
            check_marker(dir, &db)?
        } else {
            true
        };
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let keyspace = db
                .keyspace(table.name(), KeyspaceCreateOptions::default)
                .map_err(fjall)?;
            tables.push((table, keyspace));
        }
        if needs_marker {
            // Last, once every table exists: a store without its marker was never handed
            // out, so it is empty (see `check_marker`).
            let meta = db
                .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
                .map_err(fjall)?;
            let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_string().into_bytes());
            batch.commit().map_err(fjall)?;
        }
        let syncer = match policy {
            SyncPolicy::Interval(every) => Some(spawn_syncer(dir, db.clone(), every)?),
            _ => None,
        };
        Ok(FjallJournal {
            dir: dir.to_path_buf(),
            policy,
            db,
            tables,
            syncer,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sync policy it was opened with.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// The bytes the store takes on disk (journal and tables).
    pub fn disk_space(&self) -> io::Result<u64> {
        self.db.disk_space().map_err(to_io)
    }

    fn keyspace(&self, table: Table) -> io::Result<&Keyspace> {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, k)| k)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the store has no table {table:?}"),
                )
            })
    }

    fn persist_mode(&self) -> PersistMode {
        match self.policy {
            SyncPolicy::EveryBatch => PersistMode::SyncAll,
            // `Buffer` writes fjall's journal buffer out to the operating system: without it a
            // committed batch may sit in fjall's 8 KiB user-space buffer, and `kill -9` would
            // lose it.
            _ => PersistMode::Buffer,
        }
    }
}

/// Checks `dir` before fjall touches it: `Ok(true)` when it already holds a fjall
/// database, `Ok(false)` when it is missing (then created) or empty.
fn check_dir(dir: &Path) -> Result<bool, OpenError> {
    let io_err = |what: &str, e: io::Error| {
        OpenError::new(dir, OpenErrorKind::Io, format!("{what}: {e}")).with_source(e)
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(OpenError::new(
                dir,
                OpenErrorKind::NotAStore,
                "not an mqttx store: the path is not a directory",
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create the directory", e))?;
            return Ok(false);
        }
        Err(e) => return Err(io_err("cannot read the directory", e)),
    }
    if dir.join(FJALL_VERSION_FILE).is_file() {
        return Ok(true);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err("cannot list the directory", e))? {
        let entry = entry.map_err(|e| io_err("cannot list the directory", e))?;
        names.push(entry.file_name());
    }
    if names.is_empty() {
        return Ok(false);
    }
    // fjall writes `lock`, `keyspaces/` and `0.jnl` first and its `version` file last.
    let fjall_files = ["lock", "keyspaces", "0.jnl"];
    let detail = if names
        .iter()
        .all(|n| fjall_files.iter().any(|f| n.as_os_str() == *f))
    {
        "the store is corrupt: its creation was interrupted (fjall's version file is missing); \
         it was never used, so removing the directory starts an empty store"
    } else {
        "not an mqttx store: the directory is not empty and holds no store \
         (give a new or empty directory)"
    };
    let kind = if detail.starts_with("not") {
        OpenErrorKind::NotAStore
    } else {
        OpenErrorKind::Corrupt
    };
    Err(OpenError::new(dir, kind, detail))
}

/// Checks the format marker of an existing database: `Ok(false)` when it is a store of
/// our format, `Ok(true)` when it is an empty database with our tables at most and no
/// marker (a creation interrupted before the marker was written).
fn check_marker(dir: &Path, db: &Database) -> Result<bool, OpenError> {
    let fjall = |e| OpenError::from_fjall(dir, e);
    if db.keyspace_exists(META_KEYSPACE) {
        let meta = db
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(fjall)?;
        if let Some(marker) = meta.get(FORMAT_KEY).map_err(fjall)? {
            let version = std::str::from_utf8(&marker)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok());
            return match version {
                Some(FORMAT_VERSION) => Ok(false),
                Some(v) if v > FORMAT_VERSION => Err(OpenError::new(
                    dir,
                    OpenErrorKind::NewerFormat,
                    format!(
                        "the store has format version {v}, newer than the {FORMAT_VERSION} this \
                         mqttx reads; use a newer mqttx"
                    ),
                )),
                Some(v) => Err(OpenError::new(
                    dir,
                    OpenErrorKind::Corrupt,
                    format!("the store is corrupt: format version {v} does not exist"),
                )),
                None => Err(OpenError::new(
                    dir,
                    OpenErrorKind::Corrupt,
                    format!(
                        "the store is corrupt: its format marker {:?} is unreadable",
                        String::from_utf8_lossy(&marker[..marker.len().min(32)])
                    ),
                )),
            };
        }
    }
    // No marker: ours only if every keyspace is one of ours and empty.
    let not_ours = || {
        OpenError::new(
            dir,
            OpenErrorKind::NotAStore,
            "not an mqttx store: a fjall database without the mqttx format marker",
        )
    };
    for name in db.list_keyspace_names() {
        let name: &str = &name;
        if name != META_KEYSPACE && !Table::ALL.iter().any(|t| t.name() == name) {
            return Err(not_ours());
        }
        let keyspace = db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(fjall)?;
        if !keyspace.is_empty().map_err(fjall)? {
            return Err(not_ours());
        }
    }
    Ok(true)
}

fn spawn_syncer(dir: &Path, db: Database, every: std::time::Duration) -> Result<Syncer, OpenError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mqttx-store-sync".to_owned())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                // A failed fsync poisons the database: every later commit fails, so the
                // broker stops acknowledging; there is nothing more to do here.
                if db.persist(PersistMode::SyncAll).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| {
            OpenError::new(
                dir,
                OpenErrorKind::Io,
                format!("cannot start the sync thread: {e}"),
            )
            .with_source(e)
        })?;
    Ok(Syncer {
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn to_io(e: fjall::Error) -> io::Error {
    match e {
        fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => e,
        fjall::Error::Poisoned => io::Error::other(
            "the store refuses writes since an earlier write or fsync failed; restart to recover",
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Refuses what fjall would panic on, before anything is written.
fn check_op(op: &JournalOp) -> io::Result<()> {
    let (key, value) = match op {
        JournalOp::Put { key, value, .. } => (key, Some(value)),
        JournalOp::Delete { key, .. } => (key, None),
        JournalOp::DeletePrefix { .. } => return Ok(()),
    };
    if key.is_empty() {
        return Err(invalid("the store cannot hold an empty key".to_owned()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "the store cannot hold a key of {} bytes (at most {MAX_KEY_LEN})",
            key.len()
        )));
    }
    if let Some(value) = value
        && value.len() as u64 > MAX_VALUE_LEN
    {
        return Err(invalid(format!(
            "the store cannot hold a value of {} bytes (at most {MAX_VALUE_LEN})",
            value.len()
        )));
    }
    Ok(())
}

/// A batch folded to one state per key: (table index, key) → `Some(value)` to put, `None`
/// to delete.
type Fold<'a> = BTreeMap<(usize, Cow<'a, [u8]>), Option<&'a [u8]>>;

impl Journal for FjallJournal {
    /// Applies `ops` as one fjall write batch across the tables' keyspaces.
    ///
    /// fjall gives every item of a batch the same sequence number, so the batch must hold
    /// each key once: the operations are first folded, in order, into the final state of
    /// each key they touch (a `DeletePrefix` reads the keys under the prefix from the store
    /// and from the operations before it), and that state is written.
    fn commit(&self, ops: &[JournalOp]) -> io::Result<()> {
        for op in ops {
            check_op(op)?;
        }
        let mut fold: Fold<'_> = BTreeMap::new();
        for op in ops {
            match op {
                JournalOp::Put { table, key, value } => {
                    fold.insert((self.index(*table)?, Cow::Borrowed(key)), Some(value));
                }
                JournalOp::Delete { table, key } => {
                    fold.insert((self.index(*table)?, Cow::Borrowed(key)), None);
                }
                JournalOp::DeletePrefix { table, prefix } => {
                    let index = self.index(*table)?;
                    for (_, value) in fold
                        .range_mut((index, Cow::Borrowed(&prefix[..]))..)
                        .take_while(|((i, k), _)| *i == index && k.starts_with(prefix))
                    {
                        *value = None;
                    }
                    if prefix.len() > MAX_KEY_LEN {
                        // No stored key is that long.
                        continue;
                    }
                    for guard in self.keyspace(*table)?.prefix(prefix) {
                        let key = guard.key().map_err(to_io)?;
                        fold.insert((index, Cow::Owned(key.to_vec())), None);
                    }
                }
            }
        }
        if fold.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch().durability(Some(self.persist_mode()));
        for ((index, key), value) in fold {
            let keyspace = &self.tables[index].1;
            match value {
                Some(value) => batch.insert(keyspace, &key[..], value),
                None => batch.remove(keyspace, &key[..]),
            }
        }
        batch.commit().map_err(to_io)
    }

    fn load(&self) -> io::Result<Vec<Entry>> {
        let snapshot = self.db.snapshot();
        let mut entries = Vec::new();
        for (table, keyspace) in &self.tables {
            for guard in snapshot.iter(keyspace) {
                let (key, value) = guard.into_inner().map_err(to_io)?;
                entries.push((*table, key.to_vec(), value.to_vec()));
            }
        }
        Ok(entries)
    }
}

impl FjallJournal {
    fn index(&self, table: Table) -> io::Result<usize> {
        self.tables
            .iter()
            .position(|(t, _)| *t == table)
            .ok_or_else(|| invalid(format!("the store has no table {table:?}")))
    }
}
