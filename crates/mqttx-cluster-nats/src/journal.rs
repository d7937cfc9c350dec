//! [`NatsJournal`]: the broker's [`Journal`] in a JetStream key-value bucket that every node
//! of the cluster shares, so that a node's persistent sessions outlive the node.
//!
//! Each node writes under its own identifier: a journal key `(table, bytes)` of node `n` is
//! the bucket key `n.{table}.{hex of the bytes}`. A node reads its own keys back at start
//! (the sessions it still owns), and a node that claims the session of a node that died reads
//! that node's keys of the client ([`read_node`], `mqttx_broker::recover_session`), journals
//! the session under its own identifier and removes the dead node's copy.
//!
//! A commit folds its operations into the last value per key, then writes the puts of
//! sessions, messages and flights, then those of inbound QoS 2 identifiers, then the
//! removals, each group concurrently. JetStream has no batch across keys here, so a crash in
//! the middle leaves part of a batch; the order makes the part left err towards a message
//! delivered twice, never towards one lost. Removals purge the key, leaving no marker, so the
//! bucket holds only live records. Retained messages are not journaled here: the cluster keeps
//! them in its own bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt as _;
use mqttx_broker::{Entry, Journal, JournalOp, Table};
use tokio::task::JoinSet;

use crate::proto::subject::encode_token;

/// The journal of one node.
#[derive(Debug)]
pub struct NatsJournal {
    kv: kv::Store,
    /// The node's key prefix (its identifier as one token).
    node: String,
    handle: tokio::runtime::Handle,
    /// This node's keys: the journal's own index, for removals by prefix.
    index: Mutex<BTreeSet<(Table, Vec<u8>)>>,
    /// What was read at open, handed to the broker by `load`.
    loaded: Mutex<Option<Vec<Entry>>>,
    timeout: Duration,
}

fn table_of(name: &str) -> Option<Table> {
    Table::ALL.into_iter().find(|t| t.name() == name)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The bucket key of a journal key of `node` (a token).
fn bucket_key(node: &str, table: Table, key: &[u8]) -> String {
    // An empty key (none of the broker's) still needs a token.
    format!("{node}.{}.k{}", table.name(), hex(key))
}

/// The journal key of a bucket key of `node`, if it is one.
fn journal_key(node: &str, key: &str) -> Option<(Table, Vec<u8>)> {
    let rest = key.strip_prefix(node)?.strip_prefix('.')?;
    let (table, bytes) = rest.split_once('.')?;
    Some((table_of(table)?, unhex(bytes.strip_prefix('k')?)?))
}

fn other(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Every journal entry of node `node_id` in `store`, in key order.
///
/// Only that node's keys are read: an ordered consumer of the bucket's stream filtered on the
/// node's token, from the last value of each key.
///
/// # Errors
/// The bucket could not be read in time.
pub async fn read_node(
    store: &kv::Store,
    node_id: &str,
    timeout: Duration,
) -> io::Result<Vec<Entry>> {
    let node = encode_token(node_id);
    let read = async {
        let mut out = Vec::new();
        let config = jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}{node}.>", store.prefix),
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        };
        let consumer = store
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| other("journal read", e))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| other("journal read", e))?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| other("journal read", e))?;
            let pending = msg.info().map_or(0, |info| info.pending);
            let removed = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(KV_OPERATION))
                .is_some_and(|op| op.as_str() != "PUT");
            let entry = msg
                .subject
                .strip_prefix(store.prefix.as_str())
                .and_then(|key| journal_key(&node, key));
            if let (Some((table, bytes)), false) = (entry, removed) {
                out.push((table, bytes, msg.payload.to_vec()));
            }
            if pending == 0 {
                break;
            }
        }
        // In key order, as the broker's recovery expects.
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(out)
    };
    tokio::time::timeout(timeout * 6, read)
        .await
        .map_err(|_| other("journal", "timed out"))?
}

/// The header of a key-value bucket's message that says it removes its key.
const KV_OPERATION: &str = "KV-Operation";

/// Removes node `node_id`'s entries `keys` from `store` (after another node took them over).
///
/// # Errors
/// A removal failed.
pub async fn purge_node(
    store: &kv::Store,
    node_id: &str,
    keys: &[(Table, Vec<u8>)],
) -> io::Result<()> {
    let node = encode_token(node_id);
    for (table, key) in keys {
        let subject = format!("{}{}", store.prefix, bucket_key(&node, *table, key));
        store
            .stream
            .purge()
            .filter(subject)
            .await
            .map_err(|e| other("journal purge", e))?;
    }
    Ok(())
}

impl NatsJournal {
    /// The journal of node `node_id` in `store`, reading its entries now.
    ///
    /// # Errors
    /// The bucket could not be read in time.
    pub async fn open(store: kv::Store, node_id: &str, timeout: Duration) -> io::Result<Self> {
        let entries = read_node(&store, node_id, timeout).await?;
        let index = entries.iter().map(|(t, k, _)| (*t, k.clone())).collect();
        Ok(Self {
            kv: store,
            node: encode_token(node_id),
            handle: tokio::runtime::Handle::current(),
            index: Mutex::new(index),
            loaded: Mutex::new(Some(entries)),
            timeout,
        })
    }

    /// How many entries this node has in the bucket.
    pub fn len(&self) -> usize {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether this node has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn write(&self, folded: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>) -> io::Result<()> {
        // Records first (inbound identifiers after the messages they guard), removals last.
        let mut phases: [Vec<(String, Option<Bytes>)>; 3] = Default::default();
        for ((table, key), value) in folded {
            let name = bucket_key(&self.node, table, &key);
            let phase = match (&value, table) {
                (Some(_), Table::Inbound) => 1,
                (Some(_), _) => 0,
                (None, _) => 2,
            };
            phases[phase].push((name, value.map(Bytes::from)));
        }
        for phase in phases {
            let mut tasks = JoinSet::new();
            for (key, value) in phase {
                let kv = self.kv.clone();
                tasks.spawn(async move {
                    match value {
                        Some(value) => kv
                            .put(&key, value)
                            .await
                            .map(|_| ())
                            .map_err(|e| other("journal put", e)),
                        None => {
                            let subject = format!("{}{key}", kv.prefix);
                            kv.stream
                                .purge()
                                .filter(subject)
                                .await
                                .map(|_| ())
                                .map_err(|e| other("journal purge", e))
                        }
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| other("journal write", e))??;
            }
        }
        Ok(())
    }
}

impl Journal for NatsJournal {
    fn commit(&self, ops: &[JournalOp]) -> io::Result<()> {
        // Fold the batch into the last value per key; removals by prefix through the index.
        let mut folded: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            for op in ops {
                match op {
                    JournalOp::Put { table, .. }
                    | JournalOp::Delete { table, .. }
                    | JournalOp::DeletePrefix { table, .. }
                        if *table == Table::Retained => {}
                    JournalOp::Put { table, key, value } => {
                        folded.insert((*table, key.clone()), Some(value.clone()));
                    }
                    JournalOp::Delete { table, key } => {
                        folded.insert((*table, key.clone()), None);
                    }
                    JournalOp::DeletePrefix { table, prefix } => {
                        let stored = index
                            .range((*table, prefix.clone())..)
                            .take_while(|(t, k)| t == table && k.starts_with(prefix))
                            .map(|(t, k)| (*t, k.clone()));
                        let pending: Vec<_> = folded
                            .range((*table, prefix.clone())..)
                            .take_while(|((t, k), _)| t == table && k.starts_with(prefix))
                            .map(|(key, _)| key.clone())
                            .collect();
                        for key in stored.chain(pending) {
                            folded.insert(key, None);
                        }
                    }
                }
            }
        }
        // Keys the index does not have need no removal.
        {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            folded.retain(|key, value| value.is_some() || index.contains(key));
        }
        if folded.is_empty() {
            return Ok(());
        }
        let changes: Vec<((Table, Vec<u8>), bool)> = folded
            .iter()
            .map(|(k, v)| (k.clone(), v.is_some()))
            .collect();
        let timeout = self.timeout;
        self.handle.block_on(async {
            tokio::time::timeout(timeout, self.write(folded))
                .await
                .map_err(|_| other("journal commit", "timed out"))?
        })?;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        for (key, present) in changes {
            if present {
                index.insert(key);
            } else {
                index.remove(&key);
            }
        }
        Ok(())
    }

    fn load(&self) -> io::Result<Vec<Entry>> {
        Ok(self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for key in [
            &b""[..],
            b"\x00\x03abc\x00\x00\x00\x00\x00\x00\x00\x07",
            b"\xff",
        ] {
            for table in Table::ALL {
                let name = bucket_key("n=2D1", table, key);
                assert_eq!(
                    journal_key("n=2D1", &name),
                    Some((table, key.to_vec())),
                    "{name}"
                );
                assert_eq!(journal_key("n=2D2", &name), None);
            }
        }
        assert_eq!(journal_key("n", "n.sessions.kabc"), None, "odd length");
        assert_eq!(journal_key("n", "n.nope.k00"), None);
        assert_eq!(journal_key("n", "n.sessions.kAB"), None, "upper case");
    }
}
