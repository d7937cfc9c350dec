//! The broker's records in a [`Journal`]: their keys and values, and recovery at start-up.
//!
//! Keys, big-endian: a client's key is its identifier's length (u16) and UTF-8 bytes, so
//! that all of one client's entries share a prefix.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `sessions` | client | [`StoredSession::encode`] with an empty state: version, expiry (Unix ms, `u64::MAX` never), subscriptions |
//! | `messages` | client, message id (u64) | arrival (Unix ms, u64), then [`Outbound::encode_record`] |
//! | `flights` | client, message id | Packet Identifier (u16), state (u8: 0 sent, 1 PUBREL sent) |
//! | `inbound` | client, Packet Identifier (u16) | empty |
//! | `retained` | topic (UTF-8) | stored at (Unix ms, u64), then [`Message::encode_record`] |
//! | `wills` | client | due (Unix ms, u64), then [`Message::encode_record`] |
//!
//! Message ids grow for the life of the store (recovery starts after the largest), so a
//! session's messages come back in the order they arrived.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::journal::{Entry, JournalOp, Table};
use crate::proto::{FlightState, Message, Outbound, SessionState};
use crate::store::StoredSession;

/// The same moment on the process's monotonic clock and on the wall clock, to convert the
/// broker's instants to the Unix milliseconds a journal keeps, and back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) now: Instant,
    pub(crate) unix_ms: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub(crate) fn read() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            now: Instant::now(),
            unix_ms,
        }
    }

    pub(crate) fn to_unix(self, at: Instant) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if at >= self.now {
            self.unix_ms.saturating_add(ms(at - self.now))
        } else {
            self.unix_ms.saturating_sub(ms(self.now - at))
        }
    }

    pub(crate) fn instant_of(self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            self.now + Duration::from_millis(unix_ms - self.unix_ms)
        } else {
            self.now
                .checked_sub(Duration::from_millis(self.unix_ms - unix_ms))
                .unwrap_or(self.now)
        }
    }
}

/// The longest client identifier whose session is journaled, in bytes: a journal key is the
/// identifier plus at most 10 bytes, and stores limit keys (fjall: 65 535 bytes). Sessions of
/// longer identifiers (MQTT allows up to 65 535 bytes) are kept in memory only.
pub(crate) const MAX_CLIENT_ID: usize = 4096;

/// Whether `client_id`'s session can be journaled.
pub(crate) fn fits(client_id: &str) -> bool {
    client_id.len() <= MAX_CLIENT_ID
}

pub(crate) fn client_key(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + client_id.len() + 8);
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    key
}

pub(crate) fn message_key(client_id: &str, id: u64) -> Vec<u8> {
    let mut key = client_key(client_id);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn inbound_key(client_id: &str, packet_id: u16) -> Vec<u8> {
    let mut key = client_key(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

/// Splits a key into the client identifier and the rest.
fn split_client(key: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let (id, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
    Some((std::str::from_utf8(id).ok()?, rest))
}

/// Writes (replaces) a persistent session's metadata.
pub(crate) fn put_session(
    client_id: &str,
    session: &StoredSession,
    clock: Clock,
    ops: &mut Vec<JournalOp>,
) {
    let mut value = Vec::new();
    session.encode(clock.now, clock.unix_ms, &mut value);
    ops.push(JournalOp::Put {
        table: Table::Sessions,
        key: client_key(client_id),
        value,
    });
}

/// Removes a session with everything it keeps (not its delayed Will, which outlives it).
pub(crate) fn remove_session(client_id: &str, ops: &mut Vec<JournalOp>) {
    let key = client_key(client_id);
    ops.push(JournalOp::Delete {
        table: Table::Sessions,
        key: key.clone(),
    });
    for table in [Table::Messages, Table::Flights, Table::Inbound] {
        ops.push(JournalOp::DeletePrefix {
            table,
            prefix: key.clone(),
        });
    }
}

/// Removes a session's messages and in-flight states (kept: its metadata and inbound QoS 2
/// identifiers).
pub(crate) fn remove_messages(client_id: &str, ops: &mut Vec<JournalOp>) {
    let key = client_key(client_id);
    for table in [Table::Messages, Table::Flights] {
        ops.push(JournalOp::DeletePrefix {
            table,
            prefix: key.clone(),
        });
    }
}

pub(crate) fn put_message(
    client_id: &str,
    id: u64,
    arrived_unix_ms: u64,
    message: &Outbound,
    ops: &mut Vec<JournalOp>,
) {
    let mut value = Vec::with_capacity(8 + 13 + message.len());
    value.extend_from_slice(&arrived_unix_ms.to_be_bytes());
    message.encode_record(&mut value);
    ops.push(JournalOp::Put {
        table: Table::Messages,
        key: message_key(client_id, id),
        value,
    });
}

pub(crate) fn remove_message(client_id: &str, id: u64, ops: &mut Vec<JournalOp>) {
    let key = message_key(client_id, id);
    ops.push(JournalOp::Delete {
        table: Table::Flights,
        key: key.clone(),
    });
    ops.push(JournalOp::Delete {
        table: Table::Messages,
        key,
    });
}

pub(crate) fn put_flight(
    client_id: &str,
    id: u64,
    packet_id: u16,
    released: bool,
    ops: &mut Vec<JournalOp>,
) {
    let mut value = packet_id.to_be_bytes().to_vec();
    value.push(u8::from(released));
    ops.push(JournalOp::Put {
        table: Table::Flights,
        key: message_key(client_id, id),
        value,
    });
}

pub(crate) fn put_inbound(client_id: &str, packet_id: u16, ops: &mut Vec<JournalOp>) {
    ops.push(JournalOp::Put {
        table: Table::Inbound,
        key: inbound_key(client_id, packet_id),
        value: Vec::new(),
    });
}

pub(crate) fn remove_inbound(client_id: &str, packet_id: u16, ops: &mut Vec<JournalOp>) {
    ops.push(JournalOp::Delete {
        table: Table::Inbound,
        key: inbound_key(client_id, packet_id),
    });
}

/// A message with a Unix-milliseconds time (retained: when stored; Will: when due).
fn timed_message(unix_ms: u64, message: &Message) -> Option<Vec<u8>> {
    let record = message.encode_record().ok()?;
    let mut value = Vec::with_capacity(8 + record.len());
    value.extend_from_slice(&unix_ms.to_be_bytes());
    value.extend_from_slice(&record);
    Some(value)
}

pub(crate) fn put_retained(message: &Message, stored_unix_ms: u64, ops: &mut Vec<JournalOp>) {
    if let Some(value) = timed_message(stored_unix_ms, message) {
        ops.push(JournalOp::Put {
            table: Table::Retained,
            key: message.topic.as_str().as_bytes().to_vec(),
            value,
        });
    }
}

pub(crate) fn remove_retained(topic: &str, ops: &mut Vec<JournalOp>) {
    ops.push(JournalOp::Delete {
        table: Table::Retained,
        key: topic.as_bytes().to_vec(),
    });
}

pub(crate) fn put_will(
    client_id: &str,
    due_unix_ms: u64,
    will: &Message,
    ops: &mut Vec<JournalOp>,
) {
    if let Some(value) = timed_message(due_unix_ms, will) {
        ops.push(JournalOp::Put {
            table: Table::Wills,
            key: client_key(client_id),
            value,
        });
    }
}

pub(crate) fn remove_will(client_id: &str, ops: &mut Vec<JournalOp>) {
    ops.push(JournalOp::Delete {
        table: Table::Wills,
        key: client_key(client_id),
    });
}

/// A message in flight as the journal has it: id, Packet Identifier, state, message, arrival.
type RestoredFlight = (u64, u16, FlightState, Outbound, Instant);

/// A journal entry that could not be read: which one, and why.
#[derive(Debug)]
pub(crate) struct CorruptEntry {
    table: Table,
    key: Vec<u8>,
    what: &'static str,
}

impl fmt::Display for CorruptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt journal entry in table `{}` (key {}): {}",
            self.table.name(),
            String::from_utf8_lossy(&self.key).escape_debug(),
            self.what
        )
    }
}

impl std::error::Error for CorruptEntry {}

/// What a journal held, decoded: the broker's state to start from.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Persistent sessions with their messages, in flight and queued.
    pub(crate) sessions: Vec<(String, StoredSession)>,
    /// Retained messages, with when they were stored.
    pub(crate) retained: Vec<(Message, Instant)>,
    /// Delayed Wills, with when they are due.
    pub(crate) wills: Vec<(String, Instant, Message)>,
    /// The next free message id.
    pub(crate) next_id: u64,
    /// Messages restored into sessions.
    pub(crate) messages: usize,
}

/// One client's persistent session read from another broker's journal entries
/// ([`recover_session`]): the session, and the keys it was read from.
#[derive(Debug)]
#[non_exhaustive]
pub struct ForeignSession {
    /// The session: subscriptions, expiry, queued messages, messages in flight, inbound QoS 2
    /// identifiers.
    pub session: StoredSession,
    /// Its delayed Will, if it has one: when it is due, and the Will.
    pub will: Option<(Instant, Message)>,
    /// The entries it was built from, to remove from that journal.
    pub keys: Vec<(Table, Vec<u8>)>,
}

/// The client whose session a journal entry belongs to (`None`: an entry of no client, such
/// as a retained message or the broker's metadata). With it, another broker's journal can be
/// split per client before [`recover_session`] reads each.
pub fn journal_client(table: Table, key: &[u8]) -> Option<&str> {
    match table {
        Table::Sessions | Table::Messages | Table::Flights | Table::Inbound | Table::Wills => {
            split_client(key).map(|(client, _)| client)
        }
        _ => None,
    }
}

/// Reads `client_id`'s persistent session out of `entries`, all or some of another broker's
/// journal (a cluster node taking over the session of a node that died). `None`: the
/// entries hold no session of that client.
///
/// # Errors
/// An entry of that client is not a valid record.
pub fn recover_session(
    client_id: &str,
    entries: Vec<Entry>,
) -> std::io::Result<Option<ForeignSession>> {
    let mine: Vec<Entry> = entries
        .into_iter()
        .filter(|(table, key, _)| journal_client(*table, key) == Some(client_id))
        .collect();
    let keys = mine.iter().map(|(t, k, _)| (*t, k.clone())).collect();
    let recovered = recover(mine, Clock::read())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let will = recovered
        .wills
        .into_iter()
        .next()
        .map(|(_, due, will)| (due, will));
    Ok(recovered
        .sessions
        .into_iter()
        .next()
        .map(|(_, session)| ForeignSession {
            session,
            will,
            keys,
        }))
}

/// Decodes everything a journal holds. Entries of a session that is not there (a crash
/// between batches cannot cause that: batches are atomic) are ignored.
pub(crate) fn recover(entries: Vec<Entry>, clock: Clock) -> Result<Recovered, CorruptEntry> {
    let corrupt = |table: Table, key: &[u8], what: &'static str| CorruptEntry {
        table,
        key: key.to_vec(),
        what,
    };
    let mut sessions: HashMap<String, StoredSession> = HashMap::new();
    let mut messages: Vec<(String, u64, u64, Outbound)> = Vec::new();
    let mut flights: HashMap<(String, u64), (u16, FlightState)> = HashMap::new();
    let mut inbound: Vec<(String, u16)> = Vec::new();
    let mut out = Recovered {
        next_id: 1,
        ..Recovered::default()
    };
    for (table, key, value) in entries {
        match table {
            Table::Sessions => {
                let (client, rest) = split_client(&key)
                    .filter(|(_, rest)| rest.is_empty())
                    .ok_or_else(|| corrupt(table, &key, "bad key"))?;
                let session = StoredSession::decode(&value, clock.now, clock.unix_ms)
                    .map_err(|_| corrupt(table, &key, "bad session record"))?;
                let _ = rest;
                sessions.insert(client.to_owned(), session);
            }
            Table::Messages => {
                let (client, rest) =
                    split_client(&key).ok_or_else(|| corrupt(table, &key, "bad key"))?;
                let id = rest
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(table, &key, "bad message id"))?;
                let (arrived, record) = value
                    .split_first_chunk::<8>()
                    .ok_or_else(|| corrupt(table, &key, "truncated"))?;
                let message = Outbound::decode_record(record)
                    .map_err(|_| corrupt(table, &key, "bad message record"))?
                    .with_id(id);
                out.next_id = out.next_id.max(id.saturating_add(1));
                messages.push((client.to_owned(), id, u64::from_be_bytes(*arrived), message));
            }
            Table::Flights => {
                let (client, rest) =
                    split_client(&key).ok_or_else(|| corrupt(table, &key, "bad key"))?;
                let id = rest
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(table, &key, "bad message id"))?;
                let (pid, state) = match value[..] {
                    [a, b, 0] => (u16::from_be_bytes([a, b]), FlightState::Sent),
                    [a, b, 1] => (u16::from_be_bytes([a, b]), FlightState::Released),
                    _ => return Err(corrupt(table, &key, "bad flight record")),
                };
                flights.insert((client.to_owned(), id), (pid, state));
            }
            Table::Inbound => {
                let (client, rest) =
                    split_client(&key).ok_or_else(|| corrupt(table, &key, "bad key"))?;
                let pid = rest
                    .try_into()
                    .map(u16::from_be_bytes)
                    .map_err(|_| corrupt(table, &key, "bad packet identifier"))?;
                inbound.push((client.to_owned(), pid));
            }
            Table::Retained => {
                let (stored, record) = value
                    .split_first_chunk::<8>()
                    .ok_or_else(|| corrupt(table, &key, "truncated"))?;
                let message = Message::decode_record(record)
                    .map_err(|_| corrupt(table, &key, "bad message record"))?;
                if message.topic.as_str().as_bytes() != key {
                    return Err(corrupt(table, &key, "topic differs from key"));
                }
                out.retained
                    .push((message, clock.instant_of(u64::from_be_bytes(*stored))));
            }
            Table::Wills => {
                let (client, rest) = split_client(&key)
                    .filter(|(_, rest)| rest.is_empty())
                    .ok_or_else(|| corrupt(table, &key, "bad key"))?;
                let _ = rest;
                let (due, record) = value
                    .split_first_chunk::<8>()
                    .ok_or_else(|| corrupt(table, &key, "truncated"))?;
                let will = Message::decode_record(record)
                    .map_err(|_| corrupt(table, &key, "bad message record"))?;
                out.wills.push((
                    client.to_owned(),
                    clock.instant_of(u64::from_be_bytes(*due)),
                    will,
                ));
            }
        }
    }
    // Messages come in key order: by client, then by id (arrival order).
    let mut restored: HashMap<String, (Vec<RestoredFlight>, SessionState)> = HashMap::new();
    for (client, id, arrived, message) in messages {
        if !sessions.contains_key(&client) {
            continue;
        }
        let since = clock.instant_of(arrived);
        let entry = restored.entry(client.clone()).or_default();
        match flights.get(&(client, id)) {
            Some(&(pid, state)) => entry.0.push((id, pid, state, message, since)),
            None => entry.1.restore_queued(message, since),
        }
        out.messages += 1;
    }
    for (client, pid) in inbound {
        if sessions.contains_key(&client) {
            restored.entry(client).or_default().1.restore_inbound(pid);
        }
    }
    for (client, mut session) in sessions {
        if let Some((mut in_flight, mut state)) = restored.remove(&client) {
            // In flight first, in the order they were sent (ids grow with arrival, and the
            // messages of one session are sent in arrival order).
            in_flight.sort_by_key(|f| f.0);
            let mut with_flights = SessionState::default();
            for (_, pid, flight, message, since) in in_flight {
                with_flights.restore_in_flight(pid, flight, message, since);
            }
            with_flights.append(&mut state);
            session.state = with_flights;
        }
        out.sessions.push((client, session));
    }
    out.sessions.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
