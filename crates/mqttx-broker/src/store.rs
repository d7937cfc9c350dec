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

use crate::proto::{Outbound, SessionState};

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
}
