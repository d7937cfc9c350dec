//! [`Journal`]: where a durable broker writes what must survive a restart (persistent
//! sessions, their queued and in-flight messages, inbound QoS 2 identifiers, retained
//! messages, delayed Wills), and [`MemoryJournal`], a journal in memory for tests.
//!
//! A journal is an ordered key-value store with a few tables; the broker encodes the keys and
//! values itself (see the broker's `durable` module), so an implementation only has to apply
//! batches of [`JournalOp`]s atomically and read everything back at start-up. The
//! `mqttx-store-fjall` crate implements it on fjall, an embedded LSM-tree store.
//!
//! The methods are blocking, not `async`: the embedded stores they wrap are synchronous, and
//! the broker calls [`Journal::commit`] from one task through `spawn_blocking`, batching every
//! operation that arrived meanwhile into one call (group commit).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Mutex;

/// The tables of a [`Journal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    /// Persistent sessions: protocol version, expiry and subscriptions, by client identifier.
    Sessions,
    /// The QoS 1 and 2 messages a session has to deliver, by client identifier and order.
    Messages,
    /// The Packet Identifier and state of each message in flight, keyed like `Messages`.
    Flights,
    /// Inbound QoS 2 Packet Identifiers awaiting PUBREL, by client identifier.
    Inbound,
    /// Retained messages, by topic.
    Retained,
    /// Wills waiting for their Will Delay Interval, by client identifier.
    Wills,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 6] = [
        Table::Sessions,
        Table::Messages,
        Table::Flights,
        Table::Inbound,
        Table::Retained,
        Table::Wills,
    ];

    /// A stable name, for stores that keep each table under its own name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Messages => "messages",
            Table::Flights => "flights",
            Table::Inbound => "inbound",
            Table::Retained => "retained",
            Table::Wills => "wills",
        }
    }
}

/// One entry of a [`Journal`]: its table, key and value.
pub type Entry = (Table, Vec<u8>, Vec<u8>);

/// A journal's content as an ordered map of `(table, key)` to value (see [`apply_ops`]).
pub type Tables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// One change to a [`Journal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalOp {
    /// Sets `key` to `value` in `table`.
    Put {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` from `table` (nothing when it is absent).
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key of `table` that starts with `prefix`.
    DeletePrefix {
        /// The table.
        table: Table,
        /// The prefix.
        prefix: Vec<u8>,
    },
}

/// A durable, ordered key-value store in a few [`Table`]s, written in atomic batches.
///
/// The broker calls [`commit`](Self::commit) from one thread at a time, with the operations
/// in the order they happened, and [`load`](Self::load) once, before serving. Both may block.
pub trait Journal: fmt::Debug + Send + Sync + 'static {
    /// Applies `ops`, in order, as one atomic batch: after a crash either all of them are
    /// there or none. Returns once the batch is as durable as the store's sync policy makes
    /// it; the broker acknowledges the messages in the batch only then.
    fn commit(&self, ops: &[JournalOp]) -> io::Result<()>;

    /// Everything the journal holds: each table's entries, in key order.
    fn load(&self) -> io::Result<Vec<Entry>>;
}

/// A [`Journal`] in memory: it survives a broker, not the process. For tests of recovery,
/// and as the model the durable stores are checked against.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    tables: Mutex<Tables>,
    commits: std::sync::atomic::AtomicU64,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries in `table`.
    pub fn len(&self, table: Table) -> usize {
        self.lock().keys().filter(|(t, _)| *t == table).count()
    }

    /// The number of [`commit`](Journal::commit) calls so far (batches, not operations).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Applies `ops` to an ordered map of `(table, key) → value`: what every journal must do.
pub fn apply_ops(map: &mut Tables, ops: &[JournalOp]) {
    for op in ops {
        match op {
            JournalOp::Put { table, key, value } => {
                map.insert((*table, key.clone()), value.clone());
            }
            JournalOp::Delete { table, key } => {
                map.remove(&(*table, key.clone()));
            }
            JournalOp::DeletePrefix { table, prefix } => {
                let doomed: Vec<(Table, Vec<u8>)> = map
                    .range((*table, prefix.clone())..)
                    .take_while(|((t, k), _)| t == table && k.starts_with(prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in doomed {
                    map.remove(&key);
                }
            }
        }
    }
}

/// The longest key a journal must accept (fjall's limit); keys are never empty.
pub const MAX_KEY_LEN: usize = 65_535;

impl Journal for MemoryJournal {
    fn commit(&self, ops: &[JournalOp]) -> io::Result<()> {
        // The limits of the durable stores, so that tests meet them too.
        for op in ops {
            let key = match op {
                JournalOp::Put { key, .. } | JournalOp::Delete { key, .. } => key,
                JournalOp::DeletePrefix { .. } => continue,
            };
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a journal key of {} bytes", key.len()),
                ));
            }
        }
        apply_ops(&mut self.lock(), ops);
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn load(&self) -> io::Result<Vec<Entry>> {
        Ok(self
            .lock()
            .iter()
            .map(|((table, key), value)| (*table, key.clone(), value.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_prefix_stays_in_its_table_and_prefix() {
        let journal = MemoryJournal::new();
        let put = |table, key: &[u8]| JournalOp::Put {
            table,
            key: key.to_vec(),
            value: b"v".to_vec(),
        };
        journal
            .commit(&[
                put(Table::Messages, b"\x00\x01a1"),
                put(Table::Messages, b"\x00\x01a2"),
                put(Table::Messages, b"\x00\x01b1"),
                put(Table::Flights, b"\x00\x01a1"),
                JournalOp::DeletePrefix {
                    table: Table::Messages,
                    prefix: b"\x00\x01a".to_vec(),
                },
            ])
            .expect("commit");
        let all = journal.load().expect("load");
        let keys: Vec<(Table, &[u8])> = all.iter().map(|(t, k, _)| (*t, &k[..])).collect();
        assert_eq!(
            keys,
            vec![
                (Table::Messages, &b"\x00\x01b1"[..]),
                (Table::Flights, &b"\x00\x01a1"[..]),
            ]
        );
        assert_eq!(journal.commits(), 1);
    }
}
