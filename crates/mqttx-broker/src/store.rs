//! [`SessionStore`]: where the persistent sessions of absent clients are kept, and
//! [`MemoryStore`], the in-memory store the broker uses by default.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Instant;

use mqttx_codec::ProtocolVersion;
use mqttx_router::{SubscribeOptions, TopicFilter};

use crate::proto::{Outbound, SessionState, StateDecodeError};

/// The future a [`SessionStore`] method returns: boxed, so that the trait stays usable as
/// `Arc<dyn SessionStore>` (what `async-trait` would generate, without the macro).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a resumed persistent session needs, kept while its client is away.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredSession {
    /// The protocol version the session's messages are encoded for.
    pub version: ProtocolVersion,
    /// When the session expires (`None`: never). A process-local instant: a durable store
    /// converts it to wall-clock time and back.
    pub expires_at: Option<Instant>,
    /// The subscriptions with their options (shared ones with their `$share/` prefix).
    pub subscriptions: Vec<(TopicFilter, SubscribeOptions)>,
    /// The session core's state: queued QoS 1 and 2 messages, messages in flight with their
    /// Packet Identifiers and acknowledgement state, and inbound QoS 2 identifiers awaiting
    /// PUBREL.
    pub state: SessionState,
}

impl StoredSession {
    /// A stored session from its parts.
    pub fn new(
        version: ProtocolVersion,
        expires_at: Option<Instant>,
        subscriptions: Vec<(TopicFilter, SubscribeOptions)>,
        state: SessionState,
    ) -> Self {
        Self {
            version,
            expires_at,
            subscriptions,
            state,
        }
    }
}

impl StoredSession {
    /// Appends the byte form of this session to `out`, for a store that keeps sessions
    /// outside the process: the protocol version, the expiry as wall-clock milliseconds, the
    /// subscriptions with their options, then [`SessionState::encode`]. `now` and
    /// `now_unix_ms` are the same moment on the process's clock and on the wall clock.
    pub fn encode(&self, now: Instant, now_unix_ms: u64, out: &mut Vec<u8>) {
        out.push(match self.version {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            _ => 5,
        });
        let expiry = self.expires_at.map_or(u64::MAX, |at| {
            let left = at.saturating_duration_since(now).as_millis();
            now_unix_ms.saturating_add(u64::try_from(left).unwrap_or(u64::MAX - 1))
        });
        out.extend_from_slice(&expiry.to_be_bytes());
        let n = u32::try_from(self.subscriptions.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for (filter, options) in self.subscriptions.iter().take(n as usize) {
            let text = filter.as_str().as_bytes();
            // A topic filter is at most 65 535 bytes (MQTT 5.0 §1.5.4).
            let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(text.get(..usize::from(len)).unwrap_or(text));
            out.push(options.qos as u8);
            out.push(u8::from(options.no_local) | (u8::from(options.retain_as_published) << 1));
            out.push(options.retain_handling as u8);
            let id = options.subscription_id.map_or(0, |id| id.get());
            out.extend_from_slice(&id.to_be_bytes());
        }
        self.state.encode(now, now_unix_ms, out);
    }

    /// Reads a session written by [`encode`](Self::encode); a session whose expiry passed
    /// while it was stored comes back with `expires_at` at `now`.
    pub fn decode(bytes: &[u8], now: Instant, now_unix_ms: u64) -> Result<Self, StateDecodeError> {
        use mqttx_router::{QoS as RouterQoS, RetainHandling, SubscriptionId};
        let corrupt = StateDecodeError::Corrupt;
        let (&version, rest) = bytes.split_first().ok_or(corrupt)?;
        let version = match version {
            3 => ProtocolVersion::V31,
            4 => ProtocolVersion::V311,
            5 => ProtocolVersion::V5,
            _ => return Err(StateDecodeError::Format),
        };
        let (expiry, mut rest) = rest.split_first_chunk::<8>().ok_or(corrupt)?;
        let expiry = u64::from_be_bytes(*expiry);
        let expires_at = (expiry != u64::MAX)
            .then(|| now + std::time::Duration::from_millis(expiry.saturating_sub(now_unix_ms)));
        let (n, tail) = rest.split_first_chunk::<4>().ok_or(corrupt)?;
        rest = tail;
        let n = u32::from_be_bytes(*n) as usize;
        if n.saturating_mul(9) > rest.len() {
            return Err(corrupt);
        }
        let mut subscriptions = Vec::with_capacity(n);
        for _ in 0..n {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or(corrupt)?;
            let len = usize::from(u16::from_be_bytes(*len));
            let (text, tail) = tail.split_at_checked(len).ok_or(corrupt)?;
            let (fields, tail) = tail.split_first_chunk::<7>().ok_or(corrupt)?;
            rest = tail;
            let text = std::str::from_utf8(text).map_err(|_| corrupt)?;
            let filter = TopicFilter::new(text).map_err(|_| corrupt)?;
            let mut options =
                SubscribeOptions::new(RouterQoS::try_from(fields[0]).map_err(|_| corrupt)?);
            if fields[1] > 0b11 {
                return Err(corrupt);
            }
            options.no_local = fields[1] & 1 != 0;
            options.retain_as_published = fields[1] & 0b10 != 0;
            options.retain_handling = RetainHandling::try_from(fields[2]).map_err(|_| corrupt)?;
            let id = u32::from_be_bytes([fields[3], fields[4], fields[5], fields[6]]);
            options.subscription_id = match id {
                0 => None,
                id => Some(SubscriptionId::new(id).map_err(|_| corrupt)?),
            };
            subscriptions.push((filter, options));
        }
        let state = SessionState::decode(rest, now, now_unix_ms)?;
        Ok(Self {
            version,
            expires_at,
            subscriptions,
            state,
        })
    }
}

/// The limits of one session's offline queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueLimits {
    /// The most messages queued ([`Config::max_queued_messages`](crate::Config::max_queued_messages)).
    pub max_messages: usize,
    /// The most encoded bytes queued
    /// ([`Config::max_offline_queued_bytes`](crate::Config::max_offline_queued_bytes)).
    pub max_bytes: usize,
}

impl QueueLimits {
    /// Limits of `max_messages` messages and `max_bytes` bytes.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages,
            max_bytes,
        }
    }
}

/// Keeps the persistent sessions of absent clients, keyed by client identifier.
///
/// The broker holds its store as `Arc<dyn SessionStore>` (set with
/// [`Builder::session_store`](crate::Builder::session_store); [`MemoryStore`] by default)
/// rather than as a type parameter: [`Broker`](crate::Broker), [`Builder`](crate::Builder) and
/// [`Server`](crate::Server) are already generic over the handler, a second parameter would
/// spread into every signature that names them, and the store is called per session event and
/// per offline message, where one boxed future costs nothing that matters. So the methods
/// return a boxed [`StoreFuture`] instead of being `async fn`s, which are not object safe.
///
/// The broker calls the store from one task, in the order of the events (save when a
/// persistent session's connection closes, enqueue for each message routed to it while its
/// client is away, take when the client resumes it, remove when it expires or a Clean Start
/// discards it), so an implementation needs no ordering of its own. Routing to absent sessions
/// stays in memory: their subscriptions remain in the router, and [`StoredSession`] carries a
/// copy for a store that outlives the process. Errors are logged and the session (or message)
/// is treated as lost.
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// Keeps `session` for `client_id`, replacing any older one.
    fn save<'a>(
        &'a self,
        client_id: &'a str,
        session: StoredSession,
    ) -> StoreFuture<'a, io::Result<()>>;

    /// Adds a message to the offline queue of `client_id`'s session, within `limits`
    /// (QoS 0 messages are not kept); `now` starts its Message Expiry countdown. Returns
    /// whether it was kept (`false` also when there is no such session).
    fn enqueue<'a>(
        &'a self,
        client_id: &'a str,
        now: Instant,
        message: Outbound,
        limits: QueueLimits,
    ) -> StoreFuture<'a, io::Result<bool>>;

    /// Removes and returns `client_id`'s session, to resume it.
    fn take<'a>(&'a self, client_id: &'a str)
    -> StoreFuture<'a, io::Result<Option<StoredSession>>>;

    /// Discards `client_id`'s session (expired, or ended by a Clean Start).
    fn remove<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, io::Result<()>>;

    /// Drops the queued messages whose Message Expiry Interval has passed by `now`, from
    /// every session; returns each dropped message's client identifier and journal key
    /// ([`Outbound::id`], for those that have one). The broker calls it now and then. The
    /// default drops nothing (expired messages are then dropped when their session resumes).
    fn sweep(&self, now: Instant) -> StoreFuture<'_, io::Result<Vec<(String, u64)>>> {
        let _ = now;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// A [`SessionStore`] in memory, the broker's default: sessions survive their clients'
/// absences, not the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, StoredSession>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of sessions kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredSession>> {
        // Each operation is one map call, so a panic elsewhere cannot leave it half done.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionStore for MemoryStore {
    fn save<'a>(
        &'a self,
        client_id: &'a str,
        session: StoredSession,
    ) -> StoreFuture<'a, io::Result<()>> {
        self.lock().insert(client_id.to_owned(), session);
        Box::pin(std::future::ready(Ok(())))
    }

    fn enqueue<'a>(
        &'a self,
        client_id: &'a str,
        now: Instant,
        message: Outbound,
        limits: QueueLimits,
    ) -> StoreFuture<'a, io::Result<bool>> {
        let kept = self.lock().get_mut(client_id).is_some_and(|s| {
            s.state
                .enqueue(now, message, limits.max_messages, limits.max_bytes)
        });
        Box::pin(std::future::ready(Ok(kept)))
    }

    fn take<'a>(
        &'a self,
        client_id: &'a str,
    ) -> StoreFuture<'a, io::Result<Option<StoredSession>>> {
        let session = self.lock().remove(client_id);
        Box::pin(std::future::ready(Ok(session)))
    }

    fn remove<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, io::Result<()>> {
        self.lock().remove(client_id);
        Box::pin(std::future::ready(Ok(())))
    }

    fn sweep(&self, now: Instant) -> StoreFuture<'_, io::Result<Vec<(String, u64)>>> {
        let mut dropped = Vec::new();
        let mut ids = Vec::new();
        for (client_id, session) in self.lock().iter_mut() {
            session.state.sweep_expired(now, &mut ids);
            dropped.extend(ids.drain(..).map(|id| (client_id.clone(), id)));
        }
        Box::pin(std::future::ready(Ok(dropped)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mqttx_router::{RetainHandling, SubscriptionId};

    use super::*;

    /// The output of a memory store's future, which is ready at once.
    fn now<T>(mut future: StoreFuture<'_, T>) -> T {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => unreachable!("the memory store is immediate"),
        }
    }

    #[test]
    fn sweep_drops_expired_queued_messages_and_names_their_journal_keys() {
        use mqttx_codec::QoS;
        let start = crate::test_epoch();
        let store = MemoryStore::new();
        let topic = mqttx_router::TopicName::new("t").expect("topic");
        let mut expiring = crate::Message::new(topic.clone(), &b"x"[..], QoS::AtLeastOnce, false);
        expiring.properties.message_expiry_interval = Some(5);
        let lasting = crate::Message::new(topic, &b"y"[..], QoS::AtLeastOnce, false);
        let encode = |m: &crate::Message, id| {
            Outbound::encode(m, ProtocolVersion::V5, QoS::AtLeastOnce, false, &[])
                .expect("encode")
                .with_id(id)
        };
        let limits = QueueLimits::new(10, 1 << 20);
        let session = StoredSession::new(
            ProtocolVersion::V5,
            None,
            Vec::new(),
            SessionState::default(),
        );
        now(store.save("c", session)).expect("save");
        assert!(now(store.enqueue("c", start, encode(&expiring, 7), limits)).expect("enqueue"));
        assert!(now(store.enqueue("c", start, encode(&lasting, 8), limits)).expect("enqueue"));
        let sweep = |at| now(store.sweep(at)).expect("sweep");
        assert!(sweep(start + Duration::from_secs(4)).is_empty());
        assert_eq!(
            sweep(start + Duration::from_secs(5)),
            vec![("c".to_owned(), 7)]
        );
        assert!(sweep(start + Duration::from_secs(500)).is_empty());
        assert_eq!(store.lock().get("c").map(|s| s.state.queued()), Some(1));
    }

    #[test]
    fn stored_session_byte_form_round_trip() {
        let now = crate::test_epoch() + Duration::from_secs(60);
        let mut options = SubscribeOptions::new(mqttx_router::QoS::ExactlyOnce);
        options.no_local = true;
        options.retain_handling = RetainHandling::DoNotSend;
        options.subscription_id = Some(SubscriptionId::new(42).expect("id"));
        let session = StoredSession::new(
            ProtocolVersion::V5,
            Some(now + Duration::from_secs(300)),
            vec![
                (TopicFilter::new("a/+/c").expect("filter"), options),
                (
                    TopicFilter::new("$share/g/x/#").expect("filter"),
                    SubscribeOptions::new(mqttx_router::QoS::AtMostOnce),
                ),
            ],
            SessionState::default(),
        );
        let mut bytes = Vec::new();
        session.encode(now, 1_000_000, &mut bytes);
        // Read back 100 s later: 200 s of the session's expiry are left.
        let later = now + Duration::from_secs(100);
        let back = StoredSession::decode(&bytes, later, 1_100_000).expect("decode");
        assert_eq!(back.version, ProtocolVersion::V5);
        assert_eq!(back.subscriptions, session.subscriptions);
        assert_eq!(back.expires_at, Some(later + Duration::from_secs(200)));
        // Never expiring stays so.
        let forever = StoredSession::new(
            ProtocolVersion::V311,
            None,
            Vec::new(),
            SessionState::default(),
        );
        let mut bytes2 = Vec::new();
        forever.encode(now, 5, &mut bytes2);
        let back = StoredSession::decode(&bytes2, now, 5).expect("decode");
        assert_eq!(
            (back.version, back.expires_at),
            (ProtocolVersion::V311, None)
        );
        // Corrupt input is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                StoredSession::decode(&bytes[..cut], now, 0).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xA5;
            let _ = StoredSession::decode(&b, now, 0);
        }
    }
}
