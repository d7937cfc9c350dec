//! The tokio shell: the accept loop, one driver task per connection, and the state the
//! connections share (router, retained messages, client registry).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mqttx_codec::{ProtocolVersion, QoS, ReasonCode};
use mqttx_router::{
    Deliveries, RetainHandling, RetainedStore, Router, SubscribeOutcome, SubscriberId, TopicFilter,
    TopicName,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::PeerIdentity;
use crate::cluster::{Cluster, ClusterFuture, ClusterNode, ClusterWill, LocalNode};
use crate::config::Config;
use crate::durable::{self, Clock};
use crate::handler::{
    AllowAll, AppMessage, AuthDecision, ClientInfo, Handler, MessageAction, PublishDecision,
    SubscribeDecision,
};
use crate::journal::{Journal, JournalOp};
use crate::listen::Server;
use crate::proto::JournalEntry;
use crate::proto::{
    CloseReason, DeliverOutcome, Delivered, Event, Message, Outbound, PublishOutcome, Receipt,
    ServerDisconnect, Session, SubscribeRequest, UnsubscribeRequest,
};
use crate::stats::{DropCause, ListenerStats, SharedCounts, Snapshot, Stats, Traffic};
use crate::store::{MemoryStore, QueueLimits, SessionStore, StoredSession};

/// How long a closing connection may take to write its last bytes (DISCONNECT, CONNACK).
const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// Bytes read from a stream per call, into the worker thread's buffer.
const READ_BUFFER: usize = 64 * 1024;
/// A connection with nothing to write keeps its write buffer only up to this capacity.
const IDLE_WRITE_BUFFER: usize = 16 * 1024;
/// Reading pauses while more control-packet bytes than this wait to be written: a client that
/// sends without reading its acknowledgements meets TCP backpressure instead of growing memory.
const READ_GATE: usize = 256 * 1024;

/// The broker: shared state plus the handler. Cheap to clone (an `Arc`).
///
/// [`Broker::bind`] or [`Builder::bind`] give a [`Server`] with its listeners;
/// [`Broker::serve`] drives one connection over any byte stream.
#[derive(Debug)]
pub struct Broker<H: Handler = AllowAll> {
    inner: Arc<Inner<H>>,
}

impl<H: Handler> Clone for Broker<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<H> {
    config: Config,
    handler: H,
    shared: Mutex<Shared>,
    next_connection: AtomicU64,
    /// Makes assigned client identifiers differ between broker instances.
    nonce: u64,
    shutdown: watch::Sender<bool>,
    /// Whether the housekeeping task runs.
    housekeeping: std::sync::atomic::AtomicBool,
    /// Where the sessions of absent clients are kept.
    store: Arc<dyn SessionStore>,
    /// Counters for `$SYS` and metrics (connections fold their local counts in, see
    /// `Traffic`), messages dropped outside the lock among them.
    stats: Stats,
    /// The connection counts of the listeners a [`Server`] bound.
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
    /// The store operations, until the store task takes them (see [`StoreOp`]).
    store_rx: Mutex<Option<mpsc::UnboundedReceiver<StoreOp>>>,
    /// Where what must survive a restart is written, if anywhere.
    journal: Option<Arc<dyn Journal>>,
    /// How many store operations the store task has carried out and (with a journal)
    /// committed: acknowledgements wait for the count their operations reached.
    committed: watch::Sender<u64>,
    /// The other nodes, when this broker is one node of a cluster.
    cluster: Option<Arc<dyn Cluster>>,
}

/// One call of the [`SessionStore`], sent from a synchronous section (often under the
/// `Shared` lock) to the one task that makes the calls, in order: a message queued for a
/// session is stored after the session, and a resumed session is taken after every message
/// queued for it.
#[derive(Debug)]
enum StoreOp {
    Save(String, StoredSession),
    Enqueue(String, std::time::Instant, Outbound),
    Take(String, oneshot::Sender<Option<StoredSession>>),
    Remove(String),
    /// Changes for the journal, written in the store task's next batch.
    Journal(Vec<JournalOp>),
    /// Drop the stored messages that expired by then.
    Sweep(std::time::Instant),
    /// Operations carried out in the same journal batch.
    Group(Vec<StoreOp>),
    /// Wait until the cluster has stored a message: the operations after it (and the
    /// acknowledgements waiting for them) wait too.
    Cluster(Settle),
}

/// A [`Cluster::publish`] future, in a [`StoreOp`].
struct Settle(ClusterFuture<()>);

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Settle")
    }
}

/// What the connections share, behind one mutex held only for short, non-async sections.
#[derive(Debug, Default)]
struct Shared {
    router: Router,
    retained: RetainedStore<Retained>,
    clients: HashMap<SubscriberId, ClientEntry>,
    by_client_id: HashMap<String, SubscriberId>,
    deliveries: Deliveries,
    /// Messages dropped under the lock, by [`DropCause`].
    dropped: [u64; 4],
    /// Topic and payload bytes of the retained messages, the broker's `$SYS` ones not counted.
    retained_bytes: usize,
    /// How many retained messages are the broker's own `$SYS` statistics (outside the
    /// retained limits).
    sys_retained: usize,
    /// Persistent sessions whose client is away, by client identifier: what routing and
    /// expiry need; the session itself is in the [`SessionStore`].
    sessions: HashMap<String, Stored>,
    /// Sends to the store task (`None` only in a `Shared` that belongs to no broker).
    store_tx: Option<mpsc::UnboundedSender<StoreOp>>,
    /// The subscriber ids of `sessions`, for routing to them.
    offline: HashMap<SubscriberId, String>,
    /// Wills waiting for their Will Delay Interval, by client identifier: when, what, and the
    /// publishing session's subscriber id (for No Local).
    delayed_wills: HashMap<String, (Instant, Message, SubscriberId)>,
    /// The broker has a journal: persistent sessions, retained messages and delayed Wills
    /// are written to it.
    journaling: bool,
    /// The next journal key for a message.
    next_message_id: u64,
    /// Store operations sent so far (see [`Inner::committed`]).
    store_seq: u64,
    /// Operations gathered to be sent as one [`StoreOp::Group`].
    group: Option<Vec<StoreOp>>,
    /// The cluster, if this broker is one node of several (see [`Inner::cluster`]).
    cluster: Option<Arc<dyn Cluster>>,
}

/// A persistent session whose client is away. Its subscriptions stay in the router under
/// `id`; matching QoS 1 and 2 messages go to its queue in the [`SessionStore`].
#[derive(Debug)]
struct Stored {
    id: SubscriberId,
    version: ProtocolVersion,
    /// `None`: never expires.
    expires_at: Option<Instant>,
}

/// A retained message and when it was stored, for its Message Expiry Interval.
#[derive(Debug)]
struct Retained {
    message: Message,
    stored_at: Instant,
    /// The broker's own `$SYS` statistics.
    sys: bool,
}

impl Retained {
    /// The message as it must be sent now: `None` once its Message Expiry Interval has
    /// passed; otherwise with the interval lowered by the time it waited.
    fn current(&self, now: Instant) -> Option<std::borrow::Cow<'_, Message>> {
        let Some(expiry) = self.message.properties.message_expiry_interval else {
            return Some(std::borrow::Cow::Borrowed(&self.message));
        };
        let waited = now.saturating_duration_since(self.stored_at).as_secs();
        // [MQTT-3.3.2-5] If the Message Expiry Interval has passed and the Server has not
        // managed to start onward delivery to a matching subscriber, then it MUST delete the
        // copy of the message for that subscriber.
        let left = u64::from(expiry).checked_sub(waited).filter(|&l| l > 0)?;
        let mut message = self.message.clone();
        // [MQTT-3.3.2-6] The PUBLISH packet sent to a Client by the Server MUST contain a
        // Message Expiry Interval set to the received value minus the time that the
        // Application Message has been waiting in the Server.
        message.properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(expiry));
        Some(std::borrow::Cow::Owned(message))
    }
}

#[derive(Debug)]
struct ClientEntry {
    mailbox: Arc<Mailbox>,
    version: ProtocolVersion,
    /// The client identifier of a persistent session in a broker with a journal: messages
    /// for it are journaled before they are acknowledged to their publisher.
    durable: Option<Arc<str>>,
}

/// A connection's inbox: what other tasks ask of its driver. Senders push under a short lock
/// and wake the driver only when the inbox turns non-empty; the driver takes everything
/// waiting in one go. An idle connection's inbox holds no allocation (an unbounded channel
/// would keep a block of 32 slots per connection).
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    /// Wakes the driver (a stored permit when it is busy, so no wake-up is lost).
    wake: tokio::sync::Notify,
    /// Wakes tasks waiting for the connection to leave the shared state (takeover).
    finished: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct MailboxState {
    commands: Vec<Command>,
    /// `Command::Deliver`s in `commands`, bounded by `max_queued_messages`.
    deliveries: usize,
    /// The connection has left the shared state: its session is stored (when persistent)
    /// and nothing sent from now on is taken.
    done: bool,
}

/// What [`Mailbox::deliver`] did.
#[derive(Debug, PartialEq, Eq)]
enum Posted {
    Sent,
    /// `max` deliveries already wait: dropped.
    Full,
    /// The connection is gone.
    Closed,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, mut state: MutexGuard<'_, MailboxState>, command: Command) {
        let was_empty = state.commands.is_empty();
        state.commands.push(command);
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Sends a command; `false` when the connection is gone.
    fn send(&self, command: Command) -> bool {
        let state = self.lock();
        if state.done {
            return false;
        }
        self.push(state, command);
        true
    }

    /// Sends a delivery unless `max` deliveries already wait.
    fn deliver(&self, message: Outbound, max: usize) -> Posted {
        let mut state = self.lock();
        if state.done {
            return Posted::Closed;
        }
        if state.deliveries >= max {
            return Posted::Full;
        }
        state.deliveries += 1;
        self.push(state, Command::Deliver(message));
        Posted::Sent
    }

    /// Everything waiting, in the order it was sent.
    fn take(&self) -> Vec<Command> {
        let mut state = self.lock();
        state.deliveries = 0;
        std::mem::take(&mut state.commands)
    }

    /// The connection has left the shared state.
    fn finish(&self) {
        let mut state = self.lock();
        state.done = true;
        state.deliveries = 0;
        state.commands = Vec::new();
        drop(state);
        self.finished.notify_waiters();
    }

    /// Waits until [`finish`](Self::finish) was called.
    async fn finished(&self) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().done {
                return;
            }
            notified.await;
        }
    }
}

/// Where a connection came from, as far as its transport knows, for
/// [`Broker::serve_with`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The verified TLS client certificate.
    pub identity: Option<PeerIdentity>,
    /// The name of the listener that accepted it.
    pub listener: Option<Arc<str>>,
    /// The connection counts of the listener that accepted it.
    pub(crate) listener_stats: Option<Arc<ListenerStats>>,
}

impl ConnectionInfo {
    /// A connection from `peer`.
    pub fn from_peer(peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..Self::default()
        }
    }

    /// With a verified TLS client identity.
    #[must_use]
    pub fn with_identity(mut self, identity: Option<PeerIdentity>) -> Self {
        self.identity = identity;
        self
    }
}

/// What other tasks ask of a connection's driver.
#[derive(Debug)]
enum Command {
    Deliver(Outbound),
    Disconnect(Box<ServerDisconnect>),
    /// The application's own message, for [`Handler::on_message`].
    App(AppMessage),
    /// Another node of the cluster takes the session over: DISCONNECT 0x8E; the session is
    /// stored as usual, for [`ClusterNode::take_over`] to hand over.
    Moved,
}

impl Command {
    /// DISCONNECT 0x8E to the connection whose session another one takes over. It carries
    /// a Reason String: besides telling the client why, this makes it readable to clients
    /// that parse a DISCONNECT's reason code only when properties follow it (Paho Python 1.x
    /// reports a bare 0x8E as a lost connection).
    fn taken_over() -> Self {
        Self::Disconnect(Box::new(
            ServerDisconnect::new(ReasonCode::SESSION_TAKEN_OVER)
                .reason_string("session taken over by another connection"),
        ))
    }
}

/// Builds a [`Broker`]: configuration and handler.
#[derive(Debug)]
pub struct Builder<H: Handler = AllowAll> {
    config: Config,
    handler: H,
    store: Arc<dyn SessionStore>,
    journal: Option<(Arc<dyn Journal>, durable::Recovered)>,
    cluster: Option<Arc<dyn Cluster>>,
}

/// What [`Builder::journal`] found in the journal and restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Persistent sessions restored.
    pub sessions: usize,
    /// Their queued and in-flight messages.
    pub messages: usize,
    /// Retained messages restored.
    pub retained: usize,
    /// Delayed Wills restored.
    pub wills: usize,
    /// How long reading and decoding the journal took.
    pub elapsed: Duration,
}

impl Broker<AllowAll> {
    /// A builder with the default [`Config`] and the [`AllowAll`] handler.
    pub fn builder() -> Builder<AllowAll> {
        Builder {
            config: Config::default(),
            handler: AllowAll,
            store: Arc::new(MemoryStore::new()),
            journal: None,
            cluster: None,
        }
    }

    /// A broker with `config` and the [`AllowAll`] handler, listening on `config.bind`.
    pub async fn bind(config: Config) -> io::Result<Server<AllowAll>> {
        Self::builder().config(config).bind().await
    }
}

impl<H: Handler> Builder<H> {
    /// Uses `config`.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the address [`bind`](Self::bind) listens on.
    #[must_use]
    pub fn bind_addr(mut self, addr: SocketAddr) -> Self {
        self.config.bind = addr;
        self
    }

    /// Uses `handler` for the hooks.
    pub fn handler<H2: Handler>(self, handler: H2) -> Builder<H2> {
        Builder {
            config: self.config,
            handler,
            store: self.store,
            journal: self.journal,
            cluster: self.cluster,
        }
    }

    /// Keeps the sessions of absent clients in `store` (default: a [`MemoryStore`]).
    #[must_use]
    pub fn session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = store;
        self
    }

    /// Makes the broker durable: reads everything `journal` holds (persistent sessions with
    /// their queued and in-flight messages and inbound QoS 2 identifiers, retained messages,
    /// delayed Wills), which the broker starts from, and from then on writes to it every
    /// change to those before acknowledging what caused it: a QoS 1 or 2 PUBLISH gets its
    /// PUBACK or PUBREC only once the journal holds it for every persistent session it goes
    /// to. Changes that arrive together are committed together (group commit).
    ///
    /// # Errors
    /// The journal could not be read, or holds an entry that is not a valid record (the
    /// error names it): a broker never starts empty from a store it cannot read.
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> io::Result<(Self, Recovery)> {
        let started = std::time::Instant::now();
        let entries = journal.load()?;
        let recovered = durable::recover(entries, Clock::read())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let recovery = Recovery {
            sessions: recovered.sessions.len(),
            messages: recovered.messages,
            retained: recovered.retained.len(),
            wills: recovered.wills.len(),
            elapsed: started.elapsed(),
        };
        self.journal = Some((journal, recovered));
        Ok((self, recovery))
    }

    /// Makes the broker one node of a cluster: it reports its subscriptions to `cluster`,
    /// hands it every message published here, acknowledges QoS 1 and 2 messages once the
    /// cluster has stored them, and accepts a CONNECT once the cluster made this node the
    /// owner of its client identifier (see [`Cluster`]). The `mqttx-cluster-nats` crate
    /// implements it on NATS JetStream.
    #[must_use]
    pub fn cluster(mut self, cluster: Arc<dyn Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The broker, not yet listening anywhere.
    pub fn build(self) -> Broker<H> {
        let (shutdown, _) = watch::channel(false);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        let mut shared = Shared {
            store_tx: Some(store_tx),
            cluster: self.cluster.clone(),
            ..Shared::default()
        };
        let next_connection = AtomicU64::new(1);
        let journal = match self.journal {
            Some((journal, recovered)) => {
                shared.restore(&self.config, recovered, &next_connection);
                Some(journal)
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            config: self.config,
            handler: self.handler,
            shared: Mutex::new(shared),
            next_connection,
            nonce,
            shutdown,
            housekeeping: std::sync::atomic::AtomicBool::new(false),
            store: self.store,
            stats: Stats::new(),
            listeners: Mutex::new(Vec::new()),
            store_rx: Mutex::new(Some(store_rx)),
            journal,
            committed: watch::channel(0).0,
            cluster: self.cluster,
        });
        if let Some(cluster) = &inner.cluster {
            let local: Arc<dyn LocalNode> = Arc::clone(&inner) as Arc<dyn LocalNode>;
            cluster.attach(ClusterNode::new(Arc::downgrade(&local)));
            // The subscriptions of the sessions restored from a journal.
            let shared = inner.lock();
            for stored in shared.sessions.values() {
                for (filter, _) in shared.router.subscriptions(stored.id) {
                    let _ = cluster.subscribed(&filter);
                }
            }
        }
        Broker { inner }
    }

    /// Builds the broker and binds its listeners: [`Config::listeners`], or TCP on
    /// [`Config::bind`] when there are none (TCP_NODELAY, address reuse).
    pub async fn bind(self) -> io::Result<Server<H>> {
        Server::bind(self.build()).await
    }
}

impl<H: Handler> Broker<H> {
    /// The handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Starts a graceful shutdown: every connection gets DISCONNECT 0x8B (MQTT 5.0) and
    /// closes, and [`Server::run`] returns.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// The number of connected clients (CONNECT accepted, not yet closed).
    pub fn client_count(&self) -> usize {
        self.inner.lock().clients.len()
    }

    /// The number of retained messages, the broker's own `$SYS/broker/...` ones not counted.
    pub fn retained_count(&self) -> usize {
        let shared = self.inner.lock();
        shared.retained.len() - shared.sys_retained
    }

    /// The number of persistent sessions kept for absent clients.
    pub fn stored_sessions(&self) -> usize {
        self.inner.sweep();
        self.inner.lock().sessions.len()
    }

    /// The client identifiers of the connected clients, in no particular order.
    pub fn clients(&self) -> Vec<String> {
        self.inner.lock().by_client_id.keys().cloned().collect()
    }

    /// Messages dropped so far because a client's outbound queue (or a stored session's
    /// offline queue) was full, a message was larger than the client's Maximum Packet Size,
    /// its Message Expiry Interval passed while it waited in a queue, or the handler refused
    /// it with 0x96 (Message rate too high) or 0x97 (Quota exceeded).
    pub fn dropped_messages(&self) -> u64 {
        let dropped = self.inner.lock().dropped;
        self.inner.stats.dropped_total(&dropped)
    }

    /// Hands the broker's counts to the [`metrics`] facade, to whatever recorder is installed
    /// (e.g. `metrics-exporter-prometheus`): connections, sessions, messages and bytes in and
    /// out, dropped messages by cause, retained messages, subscriptions, messages in flight,
    /// and per-listener connection counts (docs/telemetry.md lists every name). Call it before
    /// each scrape, or on a timer for a pushing exporter; `mqttx broker --metrics-bind` calls
    /// it on every `GET /metrics`.
    ///
    /// The broker counts in its own relaxed atomics (the same ones `$SYS/broker/...` reports)
    /// and hands them over here, counters as absolute values, so recording costs nothing per
    /// message; with one broker per recorder, the values are the broker's totals.
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        let snapshot = self.inner.snapshot(&self.inner.lock());
        let listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        snapshot.record(&listeners);
    }

    /// Publishes an application message as the broker itself: it is retained or clears the
    /// retained message as its RETAIN flag and payload say, and goes to every matching
    /// subscription (No Local does not apply: there is no publishing client). The handler's
    /// `on_publish` is not called.
    pub fn publish(&self, message: &Message) {
        self.inner.lock().publish(&self.inner.config, None, message);
    }

    /// Disconnects the client with this identifier: MQTT 5.0 clients get DISCONNECT with
    /// `code` (e.g. 0x98 Administrative action), and its Will is published. Returns whether
    /// such a client was connected.
    pub fn disconnect_client(&self, client_id: &str, code: ReasonCode) -> bool {
        self.disconnect_client_with(client_id, ServerDisconnect::new(code))
    }

    /// Like [`disconnect_client`](Self::disconnect_client), with the DISCONNECT's MQTT 5.0
    /// properties: a Reason String, User Properties, a Server Reference (for 0x9C Use another
    /// server and 0x9D Server moved).
    pub fn disconnect_client_with(&self, client_id: &str, disconnect: ServerDisconnect) -> bool {
        self.command(client_id, Command::Disconnect(Box::new(disconnect)))
    }

    /// Sends the application's own message to the connection of the client with this
    /// identifier, where [`Handler::on_message`] receives it, in order with that connection's
    /// other hooks, and decides what to do (send the client a PUBLISH, disconnect it, or
    /// nothing). Any `Send + 'static` value will do; the handler downcasts it. Returns whether
    /// such a client was connected. Never blocks; messages wait in the connection's
    /// command channel until its task takes them.
    pub fn send_to<M: std::any::Any + Send>(&self, client_id: &str, message: M) -> bool {
        self.command(client_id, Command::App(Box::new(message)))
    }

    /// Sends a command to a connected client's driver.
    fn command(&self, client_id: &str, command: Command) -> bool {
        let shared = self.inner.lock();
        let Some(id) = shared.by_client_id.get(client_id) else {
            return false;
        };
        shared
            .clients
            .get(id)
            .is_some_and(|c| c.mailbox.send(command))
    }

    /// Sends an application message to one client, as the broker itself, at the message's QoS
    /// and RETAIN flag, without routing or retaining it; a client with a stored session that
    /// is away gets it queued (QoS 1 and 2). Returns whether the client was found.
    pub fn publish_to(&self, client_id: &str, message: &Message) -> bool {
        let mut shared = self.inner.lock();
        let max = self.inner.config.max_queued_messages;
        let client = shared
            .by_client_id
            .get(client_id)
            .and_then(|id| shared.clients.get(id))
            .map(|c| (c.version, c.durable.clone(), Arc::clone(&c.mailbox)));
        if let Some((version, durable_id, mailbox)) = client {
            let Ok(mut encoded) =
                Outbound::encode(message, version, message.qos, message.retain, &[])
            else {
                return false;
            };
            let mut record = Vec::new();
            if let (Some(client_id), false) = (&durable_id, message.qos == QoS::AtMostOnce) {
                let id = shared.message_id();
                encoded = encoded.with_id(id);
                let unix = Clock::read().unix_ms;
                durable::put_message(client_id, id, unix, &encoded, &mut record);
            }
            match mailbox.deliver(encoded, max) {
                Posted::Full => shared.dropped[DropCause::QueueFull as usize] += 1,
                Posted::Sent => shared.journal(record),
                Posted::Closed => {}
            }
            return true;
        }
        let Some(stored) = shared.sessions.get(client_id) else {
            return false;
        };
        // The store counts what it does not keep; QoS 0 is not kept for absent clients.
        match Outbound::encode(message, stored.version, message.qos, message.retain, &[]) {
            Ok(mut encoded) => {
                if shared.journaling {
                    encoded = encoded.with_id(shared.message_id());
                }
                shared.store(StoreOp::Enqueue(
                    client_id.to_owned(),
                    Instant::now().into_std(),
                    encoded,
                ));
            }
            Err(_) if message.qos != QoS::AtMostOnce => {
                shared.dropped[DropCause::TooLarge as usize] += 1;
            }
            Err(_) => {}
        }
        true
    }

    /// Drives one connection over `stream` until it ends: any `AsyncRead + AsyncWrite`
    /// stream (TCP, TLS, WebSocket byte streams, an in-memory duplex). Spawn it on a task.
    pub fn serve<S>(&self, stream: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_with(stream, ConnectionInfo::default())
    }

    /// Like [`serve`](Self::serve), with what the transport knows of the client: its
    /// address, a verified TLS identity, the listener's name. `Handler::on_connect` finds
    /// them in [`ConnectRequest`](crate::ConnectRequest) (`peer_addr`, `peer_identity`,
    /// `listener`).
    pub fn serve_with<S>(
        &self,
        stream: S,
        origin: ConnectionInfo,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        // Every event of the connection carries its peer, listener and (once known) client
        // identifier; without a subscriber at DEBUG the span is a no-op.
        let span = tracing::debug_span!(
            "mqtt_connection",
            peer = origin.peer.map(tracing::field::display),
            listener = origin.listener.as_deref(),
            client_id = tracing::field::Empty,
        );
        async move {
            inner.start_housekeeping();
            let mut driver = Driver::new(inner);
            driver.origin = origin;
            driver.run(stream).await;
        }
        .instrument(span)
    }

    /// Keeps the connection counts of a listener a [`Server`] bound.
    pub(crate) fn add_listener(&self, listener: Arc<ListenerStats>) {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Resolves once [`shutdown`](Self::shutdown) was called.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.inner.shutdown.subscribe();
        async move {
            let _ = stop.wait_for(|&s| s).await;
        }
    }
}

impl<H: Handler> Inner<H> {
    /// Starts, once per broker, the task that expires sessions and publishes delayed Wills
    /// every second. It holds the broker weakly and ends with it.
    fn start_housekeeping(self: &Arc<Self>) {
        if self.housekeeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks = 0u64;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.sweep();
                ticks += 1;
                if ticks % MESSAGE_SWEEP_TICKS == 0 {
                    // The stored queues' expired messages: less often, as it visits them all.
                    let now = Instant::now().into_std();
                    inner.lock().store(StoreOp::Sweep(now));
                }
            }
        });
        if let Some(every) = self.config.sys_interval.filter(|d| !d.is_zero()) {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    inner.publish_sys();
                }
            });
        }
        let Some(mut rx) = self.store_rx.lock().ok().and_then(|mut rx| rx.take()) else {
            return;
        };
        let weak = Arc::downgrade(self);
        let store = Arc::clone(&self.store);
        let limits = QueueLimits::new(
            self.config.max_queued_messages,
            self.config.max_offline_queued_bytes,
        );
        let journal = self.journal.clone();
        let committed = self.committed.clone();
        tokio::spawn(async move {
            let mut ops = Vec::new();
            let mut batch = Vec::new();
            let mut done = 0u64;
            // Ends when the broker (which holds the sender) is gone. Everything that arrived
            // meanwhile is one batch: one journal commit for all of it (group commit).
            while rx.recv_many(&mut ops, STORE_BATCH).await > 0 {
                for op in ops.drain(..) {
                    match op {
                        StoreOp::Group(group) => {
                            for op in group {
                                run_store_op(&*store, limits, op, &weak, &mut batch).await;
                            }
                        }
                        op => run_store_op(&*store, limits, op, &weak, &mut batch).await,
                    }
                    done += 1;
                }
                if let (Some(journal), false) = (&journal, batch.is_empty()) {
                    batch = commit_batch(journal, batch).await;
                    batch.clear();
                }
                committed.send_replace(done);
            }
        });
    }
}

/// Every how many housekeeping seconds the stored sessions' expired messages are dropped.
const MESSAGE_SWEEP_TICKS: u64 = 60;

/// Operations the store task takes from its channel at most per batch.
const STORE_BATCH: usize = 4096;

/// Commits one batch to the journal on a blocking thread; returns the batch's buffer for
/// reuse. A commit that fails is retried (backing off to once a second) until it succeeds:
/// meanwhile nothing more is acknowledged (the broker fails closed: a client waits for its
/// PUBACK rather than getting one for a message that could be lost). A store that keeps
/// failing (fjall refuses every write after a failed fsync) needs a restart, which recovers
/// from what was committed.
async fn commit_batch(journal: &Arc<dyn Journal>, batch: Vec<JournalOp>) -> Vec<JournalOp> {
    let mut batch = batch;
    let mut backoff = Duration::from_millis(10);
    loop {
        let journal = Arc::clone(journal);
        let outcome = tokio::task::spawn_blocking(move || {
            let result = journal.commit(&batch);
            (result, batch)
        })
        .await;
        let (result, back) = match outcome {
            Ok(done) => done,
            Err(error) => {
                // The commit panicked: the batch is gone with its thread.
                tracing::error!(%error, "journal commit panicked; its batch is lost");
                return Vec::new();
            }
        };
        batch = back;
        match result {
            Ok(()) => return batch,
            Err(error) if error.kind() == io::ErrorKind::InvalidInput => {
                // The journal refuses the batch itself (a key or value beyond its limits):
                // retrying cannot help, and holding it would stop every acknowledgement.
                tracing::error!(%error, ops = batch.len(), "journal refused a batch; it is lost");
                return batch;
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    ops = batch.len(),
                    "journal commit failed; acknowledgements wait until it succeeds (retrying; \
                     if it keeps failing, restart the broker)"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Makes one [`SessionStore`] call, or adds journal changes to `batch`; failures are logged
/// and lose the session or message.
async fn run_store_op<H>(
    store: &dyn SessionStore,
    limits: QueueLimits,
    op: StoreOp,
    inner: &std::sync::Weak<Inner<H>>,
    batch: &mut Vec<JournalOp>,
) {
    match op {
        StoreOp::Journal(mut ops) => batch.append(&mut ops),
        // The cluster's work is under way already (see `Cluster::publish`): waiting for each
        // in turn waits for all of them.
        StoreOp::Cluster(Settle(settle)) => settle.await,
        // Flattened by the store task.
        StoreOp::Group(_) => {}
        StoreOp::Sweep(now) => match store.sweep(now).await {
            Ok(dropped) => {
                for (client_id, id) in &dropped {
                    durable::remove_message(client_id, *id, batch);
                }
                if !dropped.is_empty() {
                    tracing::debug!(messages = dropped.len(), "expired stored messages dropped");
                }
            }
            Err(error) => tracing::warn!(%error, "session store: sweep failed"),
        },
        StoreOp::Save(client_id, session) => {
            if let Err(error) = store.save(&client_id, session).await {
                tracing::warn!(%client_id, %error, "session store: save failed");
            }
        }
        StoreOp::Enqueue(client_id, now, mut message) => {
            let qos = message.qos();
            // Kept with the session, or not taken (see `Receipt`).
            let receipt = message.take_receipt();
            // Journaled once the session store kept it.
            let mut record = Vec::new();
            if let Some(id) = message.id() {
                let unix = Clock::read().to_unix(now);
                durable::put_message(&client_id, id, unix, &message, &mut record);
            }
            let kept = match store.enqueue(&client_id, now, message, limits).await {
                Ok(kept) => kept,
                Err(error) => {
                    tracing::warn!(%client_id, %error, "session store: enqueue failed");
                    false
                }
            };
            if let Some(receipt) = receipt {
                receipt.settle(kept);
            }
            if kept {
                batch.append(&mut record);
            } else if qos != QoS::AtMostOnce {
                if let Some(inner) = inner.upgrade() {
                    inner.stats.dropped(DropCause::QueueFull);
                }
            }
        }
        StoreOp::Take(client_id, reply) => {
            let session = store.take(&client_id).await.unwrap_or_else(|error| {
                tracing::warn!(%client_id, %error, "session store: take failed");
                None
            });
            let _ = reply.send(session);
        }
        StoreOp::Remove(client_id) => {
            if let Err(error) = store.remove(&client_id).await {
                tracing::warn!(%client_id, %error, "session store: remove failed");
            }
        }
    }
}

impl<H: Handler> Inner<H> {
    /// Everything the broker counts, now.
    fn snapshot(&self, shared: &Shared) -> Snapshot {
        self.stats.snapshot(SharedCounts {
            clients_connected: shared.clients.len(),
            sessions_offline: shared.sessions.len(),
            dropped: shared.dropped,
            retained: shared.retained.len() - shared.sys_retained,
            retained_bytes: shared.retained_bytes,
            subscriptions: shared.router.len(),
        })
    }

    /// Publishes the `$SYS/broker/...` statistics, retained, with Mosquitto's topic names.
    /// They do not count against the retained-message limits.
    fn publish_sys(&self) {
        let mut shared = self.lock();
        let s = self.snapshot(&shared);
        let values = [
            ("version", format!("mqttx {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{} seconds", s.uptime.as_secs())),
            ("clients/connected", s.clients_connected.to_string()),
            ("clients/disconnected", s.sessions_offline.to_string()),
            ("clients/total", s.clients_total.to_string()),
            (
                "messages/received",
                s.messages_received.iter().sum::<u64>().to_string(),
            ),
            (
                "messages/sent",
                s.messages_sent.iter().sum::<u64>().to_string(),
            ),
            (
                "messages/dropped",
                s.dropped.iter().sum::<u64>().to_string(),
            ),
            ("bytes/received", s.bytes_received.to_string()),
            ("bytes/sent", s.bytes_sent.to_string()),
            ("subscriptions/count", s.subscriptions.to_string()),
            ("retained messages/count", s.retained.to_string()),
        ];
        for (name, value) in values {
            let Ok(topic) = mqttx_router::TopicName::new(&format!("$SYS/broker/{name}")) else {
                continue;
            };
            let message = Message::new(topic, value.into_bytes(), QoS::AtMostOnce, true);
            shared.publish_as(&self.config, None, &message, true);
        }
    }

    fn sweep(self: &Arc<Self>) {
        let expired = self.lock().sweep(&self.config, Instant::now());
        self.session_expired(expired);
    }

    /// Tells the handler, on a task of its own, which stored sessions expired.
    fn session_expired(self: &Arc<Self>, client_ids: Vec<String>) {
        if client_ids.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            for client_id in client_ids {
                inner.handler.on_session_expired(&client_id).await;
            }
        });
    }
}

impl<H: Handler> LocalNode for Inner<H> {
    fn holds(&self, client_id: &str) -> bool {
        let shared = self.lock();
        shared.by_client_id.contains_key(client_id) || shared.sessions.contains_key(client_id)
    }

    fn publish(self: Arc<Self>, message: &Message) {
        // A QoS 1 or 2 message waits in the store task for the cluster to store it.
        self.start_housekeeping();
        self.lock().publish(&self.config, None, message);
    }

    fn deliver(&self, message: &Message) {
        self.lock().route(&self.config, None, message, true);
    }

    fn deliver_stored(self: Arc<Self>, message: &Message) -> ClusterFuture<()> {
        // The store task runs from the first connection on; messages for restored sessions
        // may come before it.
        self.start_housekeeping();
        let seq = {
            let mut shared = self.lock();
            shared.route(&self.config, None, message, true);
            shared.store_seq
        };
        let mut committed = self.committed.subscribe();
        Box::pin(async move {
            let _ = committed.wait_for(|&done| done >= seq).await;
        })
    }

    fn deliver_shared(&self, filter: &TopicFilter, message: &Message) -> bool {
        self.lock().route_group(&self.config, filter, message, None)
    }

    fn deliver_shared_tracked(
        self: Arc<Self>,
        filter: &TopicFilter,
        message: &Message,
    ) -> Option<ClusterFuture<bool>> {
        self.start_housekeeping();
        let (tx, rx) = oneshot::channel();
        let receipt = Receipt::new(move |taken| {
            let _ = tx.send(taken);
        });
        let seq = {
            let mut shared = self.lock();
            if !shared.route_group(&self.config, filter, message, Some(receipt)) {
                return None;
            }
            shared.store_seq
        };
        let mut committed = self.committed.subscribe();
        Some(Box::pin(async move {
            let taken = rx.await.unwrap_or(false);
            if taken {
                // What the delivery journaled (the message kept with a persistent session)
                // is committed first.
                let _ = committed.wait_for(|&done| done >= seq).await;
            }
            taken
        }))
    }

    fn retain(&self, topic: &TopicName, message: Option<&Message>) {
        let mut shared = self.lock();
        match message {
            Some(message) if message.topic == *topic => {
                let mut message = message.clone();
                message.retain = true;
                shared.store_retained(&self.config, &message, false);
            }
            Some(_) => {}
            None => shared.remove_retained(topic),
        }
    }

    fn adopt(
        &self,
        client_id: &str,
        mut session: StoredSession,
        will: Option<(std::time::Instant, Message)>,
    ) -> bool {
        let mut shared = self.lock();
        if shared.by_client_id.contains_key(client_id)
            || shared.sessions.contains_key(client_id)
            || shared.sessions.len() >= self.config.max_stored_sessions
        {
            return false;
        }
        let id = SubscriberId::new(self.next_connection.fetch_add(1, Ordering::Relaxed));
        for (filter, options) in &session.subscriptions {
            let outcome = shared.router.subscribe(filter, id, *options);
            if let (Some(cluster), Ok(SubscribeOutcome::New)) = (&shared.cluster, outcome) {
                let _ = cluster.subscribed(filter);
            }
        }
        let mut ops = Vec::new();
        let durable = shared.journaling && durable::fits(client_id);
        if durable {
            let clock = Clock::read();
            let state = std::mem::take(&mut session.state);
            durable::put_session(client_id, &session, clock, &mut ops);
            session.state = state;
            shared.journal_rekeyed(client_id, &mut session.state, clock, &mut ops);
        }
        if let Some((due, will)) = will {
            if durable {
                let due_unix = Clock::read().to_unix(due);
                durable::put_will(client_id, due_unix, &will, &mut ops);
            }
            shared
                .delayed_wills
                .insert(client_id.to_owned(), (Instant::from_std(due), will, id));
        }
        shared.journal(ops);
        shared.sessions.insert(
            client_id.to_owned(),
            Stored {
                id,
                version: session.version,
                expires_at: session.expires_at.map(Instant::from_std),
            },
        );
        shared.offline.insert(id, client_id.to_owned());
        shared.store(StoreOp::Save(client_id.to_owned(), session));
        true
    }

    fn take_over(self: Arc<Self>, client_id: String) -> ClusterFuture<Option<StoredSession>> {
        Box::pin(async move {
            let connected = {
                let shared = self.lock();
                shared
                    .by_client_id
                    .get(&client_id)
                    .and_then(|id| shared.clients.get(id))
                    .filter(|entry| entry.mailbox.send(Command::Moved))
                    .map(|entry| Arc::clone(&entry.mailbox))
            };
            if let Some(mailbox) = connected {
                // Its task stores a persistent session before it finishes.
                let _ =
                    tokio::time::timeout(FINAL_FLUSH + Duration::from_secs(1), mailbox.finished())
                        .await;
            }
            let taken = {
                let mut shared = self.lock();
                let stored = shared.sessions.remove(&client_id)?;
                shared.offline.remove(&stored.id);
                shared.unsubscribe_all(stored.id);
                let mut ops = Vec::new();
                durable::remove_session(&client_id, &mut ops);
                shared.journal(ops);
                let (tx, rx) = oneshot::channel();
                shared.store(StoreOp::Take(client_id.clone(), tx));
                rx
            };
            taken.await.ok().flatten()
        })
    }
}

impl<H> Inner<H> {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while the lock was held leaves a consistent-enough router (each operation
        // is a single call); keep serving rather than propagating the poison.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The encodings of one message, at most one per (MQTT 5.0 or not, QoS, RETAIN).
#[derive(Default)]
struct EncodeCache {
    slots: [Option<Outbound>; 12],
}

impl EncodeCache {
    fn get(
        &mut self,
        message: &Message,
        version: ProtocolVersion,
        qos: QoS,
        retain: bool,
    ) -> Option<Outbound> {
        let index =
            usize::from(version.is_v5()) * 6 + usize::from(qos.as_u8()) * 2 + usize::from(retain);
        let slot = self.slots.get_mut(index)?;
        if slot.is_none() {
            // 3.1 and 3.1.1 encode a PUBLISH alike.
            *slot = Outbound::encode(message, version, qos, retain, &[]).ok();
        }
        slot.clone()
    }
}

fn to_codec_qos(qos: mqttx_router::QoS) -> QoS {
    match qos {
        mqttx_router::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttx_router::QoS::AtLeastOnce => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn to_router_qos(qos: QoS) -> mqttx_router::QoS {
    match qos {
        QoS::AtMostOnce => mqttx_router::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttx_router::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttx_router::QoS::ExactlyOnce,
    }
}

/// What a retained message counts against `max_retained_bytes`.
fn retained_size(message: &Message) -> usize {
    message.topic.as_str().len() + message.payload.len()
}

/// Whether a retained message is journaled: not the broker's own `$SYS` statistics, which it
/// publishes again.
fn journals_retained(topic: &str) -> bool {
    !topic.starts_with("$SYS/")
}

impl Shared {
    /// Hands `op` to the store task (or adds it to the open group).
    fn store(&mut self, op: StoreOp) {
        if let Some(group) = &mut self.group {
            group.push(op);
            return;
        }
        if let Some(tx) = &self.store_tx {
            self.store_seq += 1;
            // The task ends only with the broker, which owns `self`.
            let _ = tx.send(op);
        }
    }

    /// Sends the open group as one operation: the store task carries it out in one batch.
    fn end_group(&mut self) {
        match self.group.take() {
            Some(mut ops) if ops.len() == 1 => self.store(ops.remove(0)),
            Some(ops) if !ops.is_empty() => self.store(StoreOp::Group(ops)),
            _ => {}
        }
    }

    /// Hands journal changes to the store task (nothing without a journal).
    fn journal(&mut self, ops: Vec<JournalOp>) {
        if self.journaling && !ops.is_empty() {
            self.store(StoreOp::Journal(ops));
        }
    }

    /// The next journal key for a message.
    fn message_id(&mut self) -> u64 {
        let id = self.next_message_id.max(1);
        self.next_message_id = id + 1;
        id
    }

    /// Starts from what a journal held: stored sessions (their subscriptions in the router,
    /// their state in the session store), retained messages, delayed Wills.
    fn restore(&mut self, config: &Config, recovered: durable::Recovered, ids: &AtomicU64) {
        self.journaling = true;
        self.next_message_id = recovered.next_id;
        let mut by_client = HashMap::new();
        for (client_id, session) in recovered.sessions {
            let id = SubscriberId::new(ids.fetch_add(1, Ordering::Relaxed));
            for (filter, options) in &session.subscriptions {
                let _ = self.router.subscribe(filter, id, *options);
            }
            self.sessions.insert(
                client_id.clone(),
                Stored {
                    id,
                    version: session.version,
                    expires_at: session.expires_at.map(Instant::from_std),
                },
            );
            self.offline.insert(id, client_id.clone());
            by_client.insert(client_id.clone(), id);
            self.store(StoreOp::Save(client_id, session));
        }
        for (message, stored_at) in recovered.retained {
            let size = retained_size(&message);
            if self.retained.len() < config.max_retained_messages
                && self.retained_bytes + size <= config.max_retained_bytes
            {
                self.retained_bytes += size;
                let topic = message.topic.clone();
                self.retained.set(
                    &topic,
                    Retained {
                        message,
                        stored_at: Instant::from_std(stored_at),
                        sys: false,
                    },
                );
            }
        }
        for (client_id, due, will) in recovered.wills {
            let publisher = by_client
                .get(&client_id)
                .copied()
                .unwrap_or_else(|| SubscriberId::new(ids.fetch_add(1, Ordering::Relaxed)));
            self.delayed_wills
                .insert(client_id, (Instant::from_std(due), will, publisher));
        }
    }

    /// Discards the stored sessions that expired by `now`, with their subscriptions, and
    /// publishes the delayed Wills that are due. Returns the expired sessions' client ids.
    #[must_use]
    fn sweep(&mut self, config: &Config, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .delayed_wills
            .iter()
            .filter(|(_, (at, _, _))| *at <= now)
            .map(|(client_id, _)| client_id.clone())
            .collect();
        for client_id in due {
            if let Some((_, will, publisher)) = self.delayed_wills.remove(&client_id) {
                // MQTT 5.0 §3.1.3.2.2: the Will is published once the Will Delay Interval has
                // passed or the Session ends, whichever happens first.
                self.publish(config, Some(publisher), &will);
                let mut ops = Vec::new();
                durable::remove_will(&client_id, &mut ops);
                self.journal(ops);
            }
        }
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|t| t <= now))
            .map(|(client_id, _)| client_id.clone())
            .collect();
        for client_id in &expired {
            if let Some(stored) = self.sessions.remove(client_id) {
                self.offline.remove(&stored.id);
                self.unsubscribe_all(stored.id);
                if let Some(cluster) = &self.cluster {
                    cluster.release(client_id);
                }
                self.store(StoreOp::Remove(client_id.clone()));
                let mut ops = Vec::new();
                durable::remove_session(client_id, &mut ops);
                self.journal(ops);
            }
        }
        expired
    }

    /// Gives every message of `state` a new journal key and adds the records that restore it
    /// (messages, flights, inbound QoS 2 identifiers) to `ops`.
    fn journal_rekeyed(
        &mut self,
        client_id: &str,
        state: &mut crate::proto::SessionState,
        clock: Clock,
        ops: &mut Vec<JournalOp>,
    ) {
        let rekeyed = state.rekey(clock.now, || self.message_id());
        for (message, flight, since) in &rekeyed.messages {
            let Some(id) = message.id() else {
                continue;
            };
            durable::put_message(client_id, id, clock.to_unix(*since), message, ops);
            if let Some((packet_id, flight)) = flight {
                let released = *flight == crate::proto::FlightState::Released;
                durable::put_flight(client_id, id, *packet_id, released, ops);
            }
        }
        for packet_id in &rekeyed.inbound {
            durable::put_inbound(client_id, *packet_id, ops);
        }
    }

    /// Removes every subscription of `id`, reporting each to the cluster.
    fn unsubscribe_all(&mut self, id: SubscriberId) {
        if let Some(cluster) = &self.cluster {
            for (filter, _) in self.router.subscriptions(id) {
                cluster.unsubscribed(&filter);
            }
        }
        self.router.unsubscribe_all(id);
    }

    fn remove_retained(&mut self, topic: &mqttx_router::TopicName) {
        if let Some(old) = self.retained.remove(topic) {
            if old.sys {
                self.sys_retained -= 1;
            } else {
                self.retained_bytes -= retained_size(&old.message);
            }
            if self.journaling && journals_retained(topic.as_str()) {
                let mut ops = Vec::new();
                durable::remove_retained(topic.as_str(), &mut ops);
                self.journal(ops);
            }
        }
    }

    /// Stores or clears the retained message, then sends `message` to every matching
    /// subscriber, encoding it once per distinct form.
    fn publish(&mut self, config: &Config, publisher: Option<SubscriberId>, message: &Message) {
        self.publish_as(config, publisher, message, false);
    }

    /// [`publish`](Self::publish); `sys`: the broker's own `$SYS` statistics, retained
    /// outside the limits that apply to clients' messages.
    fn publish_as(
        &mut self,
        config: &Config,
        publisher: Option<SubscriberId>,
        message: &Message,
        sys: bool,
    ) {
        if message.retain {
            self.store_retained(config, message, sys);
        }
        let cluster = self.cluster.clone();
        // A node cut off from its cluster delivers locally only if the cluster allows it.
        let here = cluster
            .as_ref()
            .is_none_or(|c| c.local_while_unavailable() || c.is_available());
        if here {
            // Shared subscriptions are the cluster's to pick a member for, cluster-wide.
            self.route(config, publisher, message, cluster.is_some());
        }
        if let (Some(cluster), false) = (cluster, sys) {
            if let Some(settle) = cluster.publish(message) {
                self.store(StoreOp::Cluster(Settle(settle)));
            }
        }
    }

    /// Stores or clears (empty payload) the retained message of `message`'s topic.
    fn store_retained(&mut self, config: &Config, message: &Message, sys: bool) {
        {
            // [MQTT-3.3.1-6] A PUBLISH with RETAIN 1 and a zero-byte payload removes the
            // retained message for that topic; [MQTT-3.3.1-7] it is not stored.
            self.remove_retained(&message.topic);
            let size = retained_size(message);
            let within_limits = sys
                || (self.retained.len() - self.sys_retained < config.max_retained_messages
                    && self.retained_bytes + size <= config.max_retained_bytes);
            if !message.payload.is_empty() && within_limits {
                // [MQTT-3.3.1-5] The Server MUST store the Application Message and its QoS,
                // so that it can be delivered to future subscribers. Past the limits it is
                // only delivered, and the topic's older retained message is gone: a stale
                // value is worse than none.
                if sys {
                    self.sys_retained += 1;
                } else {
                    self.retained_bytes += size;
                }
                let stored_at = Instant::now();
                self.retained.set(
                    &message.topic,
                    Retained {
                        message: message.clone(),
                        stored_at,
                        sys,
                    },
                );
                if self.journaling && journals_retained(message.topic.as_str()) {
                    let mut ops = Vec::new();
                    let unix = Clock::read().to_unix(stored_at.into_std());
                    durable::put_retained(message, unix, &mut ops);
                    self.journal(ops);
                }
            }
        }
    }

    /// Sends `message` to every matching local subscriber (`skip_shared`: to none of the
    /// shared groups).
    fn route(
        &mut self,
        config: &Config,
        publisher: Option<SubscriberId>,
        message: &Message,
        skip_shared: bool,
    ) {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        self.router
            .route(&message.topic, publisher, &mut deliveries);
        self.dispatch(config, message, &deliveries, skip_shared, None);
        self.deliveries = deliveries;
    }

    /// Sends `message` to the member of the local shared group `filter` whose turn it is;
    /// false if the group has no member here. `receipt`, if any, goes with the member's copy
    /// (dropped, so settled as not taken, when none was handed over).
    fn route_group(
        &mut self,
        config: &Config,
        filter: &TopicFilter,
        message: &Message,
        receipt: Option<Receipt>,
    ) -> bool {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        let found = self.router.route_group(filter, None, &mut deliveries);
        if found {
            self.dispatch(config, message, &deliveries, false, receipt);
        }
        self.deliveries = deliveries;
        found
    }

    /// Hands `message` to each of `deliveries`, encoding it once per distinct form: to the
    /// connected clients' mailboxes, and the QoS 1 and 2 ones to the queues of stored sessions.
    fn dispatch(
        &mut self,
        config: &Config,
        message: &Message,
        deliveries: &Deliveries,
        skip_shared: bool,
        mut receipt: Option<Receipt>,
    ) {
        let mut cache = EncodeCache::default();
        let mut pending: Vec<(String, Outbound)> = Vec::new();
        let mut journaled: Vec<JournalOp> = Vec::new();
        let mut clock: Option<Clock> = None;
        for delivery in deliveries {
            if skip_shared && delivery.is_shared() {
                continue;
            }
            let Some(client) = self.clients.get(&delivery.subscriber()) else {
                // A persistent session whose client is away keeps QoS 1 and 2 messages.
                let stored = self
                    .offline
                    .get(&delivery.subscriber())
                    .and_then(|client_id| Some((client_id, self.sessions.get(client_id)?)));
                if let Some((client_id, stored)) = stored {
                    let qos = message.qos.min(to_codec_qos(delivery.qos()));
                    let retain = message.retain && delivery.retain_as_published();
                    let ids: Vec<u32> = delivery
                        .subscription_ids()
                        .iter()
                        .map(|i| i.get())
                        .collect();
                    if qos != QoS::AtMostOnce {
                        // The store task counts what the store does not keep.
                        match Outbound::encode(message, stored.version, qos, retain, &ids) {
                            Ok(mut encoded) => {
                                if let Some(receipt) = receipt.take() {
                                    encoded = encoded.with_receipt(receipt);
                                }
                                pending.push((client_id.clone(), encoded));
                            }
                            Err(_) => self.dropped[DropCause::TooLarge as usize] += 1,
                        }
                    }
                }
                continue;
            };
            // MQTT 5.0 §3.8.4: the delivered QoS is the minimum of the published QoS and the
            // granted maximum.
            let qos = message.qos.min(to_codec_qos(delivery.qos()));
            // [MQTT-3.3.1-12] / [MQTT-3.3.1-13]: forwarded messages keep RETAIN only with
            // Retain As Published.
            let retain = message.retain && delivery.retain_as_published();
            let ids = delivery.subscription_ids();
            let encoded = if client.version.is_v5() && !ids.is_empty() {
                // [MQTT-3.3.4-3] Subscription Identifiers go to this subscriber only.
                let ids: Vec<u32> = ids.iter().map(|id| id.get()).collect();
                Outbound::encode(message, client.version, qos, retain, &ids).ok()
            } else {
                cache.get(message, client.version, qos, retain)
            };
            if let Some(mut encoded) = encoded {
                if let Some(receipt) = receipt.take() {
                    encoded = encoded.with_receipt(receipt);
                }
                // A persistent session's QoS 1 and 2 messages are journaled before their
                // publisher's acknowledgement.
                let durable = match &client.durable {
                    Some(client_id) if qos != QoS::AtMostOnce => {
                        let id = self.next_message_id.max(1);
                        self.next_message_id = id + 1;
                        encoded = encoded.with_id(id);
                        let unix = *clock.get_or_insert_with(Clock::read);
                        let mut record = Vec::new();
                        durable::put_message(client_id, id, unix.unix_ms, &encoded, &mut record);
                        Some(record)
                    }
                    _ => None,
                };
                // Full: the driver is not keeping up (a slow hook); its session queue has the
                // same limit, so the message would be dropped there too. Closed: the
                // connection is ending; its cleanup removes it.
                match client.mailbox.deliver(encoded, config.max_queued_messages) {
                    Posted::Full => self.dropped[DropCause::QueueFull as usize] += 1,
                    Posted::Sent => journaled.extend(durable.into_iter().flatten()),
                    Posted::Closed => {}
                }
            }
        }
        self.journal(journaled);
        if !pending.is_empty() {
            let now = Instant::now().into_std();
            for (client_id, mut encoded) in pending {
                if self.journaling {
                    encoded = encoded.with_id(self.message_id());
                }
                self.store(StoreOp::Enqueue(client_id, now, encoded));
            }
        }
    }
}

/// One connection's driver: owns the stream, the session core, the timer and the handler's
/// per-connection state.
struct Driver<H: Handler> {
    inner: Arc<Inner<H>>,
    id: SubscriberId,
    session: Session,
    mailbox: Arc<Mailbox>,
    app: Option<H::Session>,
    client: Option<ClientInfo>,
    close_reason: Option<CloseReason>,
    /// The transport's verified identity of the client, handed to `on_connect`.
    origin: ConnectionInfo,
    /// Counts not yet folded into the broker's `Stats`.
    traffic: Traffic,
    /// With a journal only (boxed: a broker without one pays a pointer per connection).
    durability: Option<Box<Durability>>,
    /// When the CONNECT was accepted, for the `disconnect` event.
    connected_at: Option<Instant>,
    /// Another node of the cluster took the session over.
    moved: bool,
    /// The connection whose Will went to the cluster with the claim (see
    /// [`Cluster::will_settled`]).
    cluster_will: Option<u64>,
}

/// A connection's part in a durable broker.
#[derive(Debug, Default)]
struct Durability {
    /// The client identifier, when the session is persistent.
    client_id: Option<Arc<str>>,
    /// For each acknowledgement the session holds back, the store operation count it waits
    /// for (see [`Inner::committed`]).
    tickets: std::collections::VecDeque<u64>,
    /// The store operation count that covers everything this connection caused so far.
    need: u64,
    /// The session's journal reports, between polls.
    entries: Vec<JournalEntry>,
    /// The store operation count the bytes waiting to be written wait for: a QoS 2 PUBLISH
    /// goes out only once its Packet Identifier is journaled.
    write_gate: u64,
    /// The store operation count last seen committed.
    done: u64,
}

impl<H: Handler> Driver<H> {
    fn new(inner: Arc<Inner<H>>) -> Self {
        let n = inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let assigned = format!("mqttx-{:016x}-{n}", inner.nonce);
        let session = Session::new(Instant::now().into_std(), &inner.config, assigned);
        Self {
            inner,
            id: SubscriberId::new(n),
            session,
            mailbox: Arc::default(),
            app: None,
            client: None,
            close_reason: None,
            origin: ConnectionInfo::default(),
            traffic: Traffic::default(),
            durability: None,
            connected_at: None,
            moved: false,
            cluster_will: None,
        }
    }

    /// The client identifier of a durable session.
    fn durable(&self) -> Option<&Arc<str>> {
        self.durability.as_ref()?.client_id.as_ref()
    }

    /// Records that everything this connection caused is covered once the store has carried
    /// out `seq` operations.
    fn needs(&mut self, seq: u64) {
        if let Some(d) = &mut self.durability {
            d.need = seq;
        }
    }

    /// Journals what the session reported, gives each newly held-back acknowledgement the
    /// store operation count it waits for, and releases those already `committed`.
    fn settle(&mut self, committed: u64) {
        if self.durability.is_none() {
            return;
        }
        let (ops, gate) = self.drain_journal();
        if !ops.is_empty() {
            let mut shared = self.inner.lock();
            shared.journal(ops);
            let seq = shared.store_seq;
            drop(shared);
            self.needs(seq);
            if let (true, Some(d)) = (gate, &mut self.durability) {
                d.write_gate = seq;
            }
        }
        if let Some(d) = &mut self.durability {
            while d.tickets.len() < self.session.parked_acks() {
                d.tickets.push_back(d.need);
            }
        }
        self.release(committed);
    }

    /// The journal changes for what the session reported (none unless it is durable), and
    /// whether a QoS 2 PUBLISH was sent (it must be journaled before it goes out).
    fn drain_journal(&mut self) -> (Vec<JournalOp>, bool) {
        let mut ops = Vec::new();
        let mut gate = false;
        let Some(d) = &mut self.durability else {
            return (ops, gate);
        };
        self.session.poll_journal(&mut d.entries);
        if let Some(client_id) = &d.client_id {
            for entry in d.entries.drain(..) {
                match entry {
                    JournalEntry::Sent {
                        id,
                        packet_id,
                        exactly_once,
                    } => {
                        gate |= exactly_once;
                        durable::put_flight(client_id, id, packet_id, false, &mut ops);
                    }
                    JournalEntry::Released { id, packet_id } => {
                        durable::put_flight(client_id, id, packet_id, true, &mut ops);
                    }
                    JournalEntry::Done { id } => {
                        durable::remove_message(client_id, id, &mut ops);
                    }
                    JournalEntry::InboundAdded(pid) => {
                        durable::put_inbound(client_id, pid, &mut ops);
                    }
                    JournalEntry::InboundRemoved(pid) => {
                        durable::remove_inbound(client_id, pid, &mut ops);
                    }
                }
            }
        }
        d.entries.clear();
        (ops, gate)
    }

    /// Whether the bytes waiting may be written: not while a QoS 2 PUBLISH among them waits
    /// for its journal entry.
    fn may_write(&self) -> bool {
        self.durability
            .as_ref()
            .is_none_or(|d| d.write_gate <= d.done)
    }

    /// Whether the driver waits for the store task: held acknowledgements or bytes.
    fn awaits_commit(&self) -> bool {
        self.durability
            .as_ref()
            .is_some_and(|d| !d.tickets.is_empty() || d.write_gate > d.done)
    }

    /// Sends the held-back acknowledgements whose store operations are `committed`.
    fn release(&mut self, committed: u64) {
        let Some(d) = &mut self.durability else {
            return;
        };
        d.done = d.done.max(committed);
        let mut n = 0;
        while d.tickets.front().is_some_and(|&t| t <= committed) {
            d.tickets.pop_front();
            n += 1;
        }
        if n > 0 {
            self.session.release_acks(n);
        }
    }

    /// Journals every message and inbound QoS 2 identifier of `state`, under new keys, when
    /// the session is durable: for a session another node handed over.
    fn journal_state(&mut self, state: &mut crate::proto::SessionState) {
        let Some(client_id) = self.durable().cloned() else {
            return;
        };
        let clock = Clock::read();
        let mut shared = self.inner.lock();
        let mut ops = Vec::new();
        shared.journal_rekeyed(&client_id, state, clock, &mut ops);
        shared.journal(ops);
        let seq = shared.store_seq;
        drop(shared);
        self.needs(seq);
    }

    /// Journals the session's metadata (subscriptions, expiry) when it is durable.
    fn journal_session(&mut self) {
        let Some(client_id) = self.durable().cloned() else {
            return;
        };
        let Some(client) = &self.client else {
            return;
        };
        let clock = Clock::read();
        let expiry = self.session.session_expiry();
        let expires_at =
            (expiry != u32::MAX).then(|| clock.now + Duration::from_secs(u64::from(expiry)));
        let mut shared = self.inner.lock();
        let session = StoredSession::new(
            client.protocol,
            expires_at,
            shared.router.subscriptions(self.id),
            crate::proto::SessionState::default(),
        );
        let mut ops = Vec::new();
        durable::put_session(&client_id, &session, clock, &mut ops);
        shared.journal(ops);
        let seq = shared.store_seq;
        drop(shared);
        self.needs(seq);
    }

    async fn run<S>(&mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut wbuf: Vec<u8> = Vec::new();
        let mut written = 0usize;
        let mut stop = self.inner.shutdown.subscribe();
        let mut stopping = false;
        let mut committed = self.inner.committed.subscribe();
        if self.inner.journal.is_some() || self.inner.cluster.is_some() {
            self.durability = Some(Box::default());
        }
        let ack_window = usize::from(self.inner.config.receive_maximum.max(1));
        self.inner.stats.connection(true);
        if let Some(listener) = &self.origin.listener_stats {
            ListenerStats::add(&listener.open);
        }
        loop {
            while let Some(event) = self.session.poll_event() {
                match event {
                    // The per-message events run inline; the others (connect, subscribe,
                    // authentication…) in a box of their own, so that their larger state does
                    // not make every connection's task larger while it is idle.
                    Event::Publish(message) => {
                        self.traffic.received(message.qos);
                        // Timed only when a subscriber wants TRACE events here.
                        let started = tracing::enabled!(tracing::Level::TRACE).then(Instant::now);
                        let outcome = self.authorize_and_publish(&message).await;
                        if let Some(started) = started {
                            tracing::trace!(
                                topic = %message.topic,
                                qos = ?message.qos,
                                retain = message.retain,
                                payload_len = message.payload.len(),
                                ?outcome,
                                elapsed = ?started.elapsed(),
                                "publish"
                            );
                        }
                        self.session
                            .complete_publish(Instant::now().into_std(), outcome);
                    }
                    Event::Delivered(delivered) => self.delivered(&delivered).await,
                    event => Box::pin(self.handle_event(event)).await,
                }
            }
            if self.durability.is_some() {
                let done = *committed.borrow_and_update();
                self.settle(done);
            }
            if written == wbuf.len() {
                wbuf.clear();
                written = 0;
                if !self.session.poll_transmit(&mut wbuf) && wbuf.capacity() > IDLE_WRITE_BUFFER {
                    // Nothing to send: an idle connection keeps no large buffer.
                    wbuf = Vec::new();
                }
                if self.durability.is_some() {
                    // What was just sent goes to the journal (a QoS 2 PUBLISH before it is
                    // written).
                    let done = *committed.borrow_and_update();
                    self.settle(done);
                }
            }
            if self.session.is_closed() {
                while self.session.poll_transmit(&mut wbuf) {}
                let rest = wbuf.get(written..).unwrap_or_default();
                let _ = tokio::time::timeout(FINAL_FLUSH, async {
                    wr.write_all(rest).await?;
                    wr.shutdown().await
                })
                .await;
                break;
            }
            let deadline = self.session.poll_timeout().map(Instant::from_std);
            tokio::select! {
                read = read_into(&mut rd, &mut self.session), if self.session.transmit_backlog() < READ_GATE && self.session.parked_acks() < ack_window => {
                    match read {
                        Ok(0) | Err(_) => self.session.handle_closed(),
                        Ok(n) => self.traffic.bytes_received += n as u64,
                    }
                }
                w = wr.write(wbuf.get(written..).unwrap_or_default()), if written < wbuf.len() && self.may_write() => {
                    match w {
                        Ok(0) | Err(_) => self.session.handle_closed(),
                        Ok(n) => {
                            written += n;
                            self.traffic.bytes_sent += n as u64;
                            // Once per write: what this connection received and sent since.
                            self.traffic.fold(&self.inner.stats, &self.session);
                        }
                    }
                }
                () = self.mailbox.wake.notified() => {
                    // Everything waiting, in one lock: deliveries are bounded by
                    // `max_queued_messages`.
                    for command in self.mailbox.take() {
                        self.command(command).await;
                    }
                }
                () = sleep_until(deadline) => {
                    self.session.handle_timeout(Instant::now().into_std());
                }
                changed = committed.changed(), if self.awaits_commit() => {
                    // The store task ends only with the broker; if it is gone, nothing is
                    // waited for.
                    let done = if changed.is_ok() { *committed.borrow_and_update() } else { u64::MAX };
                    self.release(done);
                }
                () = async { let _ = stop.wait_for(|&s| s).await; }, if !stopping => {
                    stopping = true;
                    // With a Reason String, as for takeover (see `Command::taken_over`).
                    self.session.disconnect_with(
                        &ServerDisconnect::new(ReasonCode::SERVER_SHUTTING_DOWN)
                            .reason_string("server shutting down"),
                    );
                }
            }
        }
        self.traffic.finish(&self.inner.stats, &self.session);
        self.inner.stats.connection(false);
        if let Some(listener) = &self.origin.listener_stats {
            listener.open.fetch_sub(1, Ordering::Relaxed);
        }
        self.finish().await;
    }

    /// Counts what [`Session::deliver`] did with a message of this QoS.
    fn count_delivery(&mut self, qos: QoS, outcome: DeliverOutcome) {
        match outcome {
            DeliverOutcome::Queued => self.traffic.sent(qos),
            DeliverOutcome::QueueFull => self.inner.stats.dropped(DropCause::QueueFull),
            DeliverOutcome::TooLarge => self.inner.stats.dropped(DropCause::TooLarge),
            _ => {}
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Deliver(message) => {
                let qos = message.qos();
                let outcome = self.session.deliver(Instant::now().into_std(), message);
                self.count_delivery(qos, outcome);
            }
            Command::Disconnect(disconnect) => self.session.disconnect_with(&disconnect),
            Command::App(message) => Box::pin(self.app_message(message)).await,
            Command::Moved => {
                self.moved = true;
                self.session.disconnect_with(
                    &ServerDisconnect::new(ReasonCode::SESSION_TAKEN_OVER)
                        .reason_string("session taken over by another node"),
                );
            }
        }
    }

    /// The application's own message: [`Handler::on_message`] decides what this connection
    /// does with it.
    async fn app_message(&mut self, message: AppMessage) {
        let (Some(app), Some(client)) = (&self.app, &self.client) else {
            return;
        };
        if self.session.is_closed() {
            return;
        }
        match self.inner.handler.on_message(app, client, message).await {
            MessageAction::Publish(message) => {
                let version = self.session.version();
                match Outbound::encode(&message, version, message.qos, message.retain, &[]) {
                    Ok(encoded) => {
                        let outcome = self.session.deliver(Instant::now().into_std(), encoded);
                        self.count_delivery(message.qos, outcome);
                    }
                    Err(_) => self.inner.stats.dropped(DropCause::TooLarge),
                }
            }
            MessageAction::Disconnect(disconnect) => self.session.disconnect_with(&disconnect),
            MessageAction::None => {}
        }
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connect(mut req) => {
                let started = Instant::now();
                tracing::debug!(
                    client_id = %req.client_id,
                    protocol = %req.protocol,
                    clean_start = req.clean_start,
                    keep_alive = req.keep_alive,
                    username = req.username.as_deref(),
                    "connect start"
                );
                req.peer_identity.clone_from(&self.origin.identity);
                req.peer_addr = self.origin.peer;
                req.listener = self.origin.listener.as_deref().map(str::to_owned);
                // A node cut off from its cluster fails closed.
                if let Some(cluster) = self.inner.cluster.as_ref().filter(|c| !c.is_available()) {
                    tracing::debug!(client_id = %req.client_id, ?cluster, "connect exception: cluster unavailable");
                    self.session.refuse_connect(ReasonCode::SERVER_UNAVAILABLE);
                    return;
                }
                match self.inner.handler.on_connect(&req).await {
                    Ok(app) => {
                        self.inner
                            .stats
                            .clients_total
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(id) = req.handler_client_id().map(str::to_owned) {
                            self.session.assign_client_id(id.clone());
                            req.client_id = id;
                            req.assigned_client_id = true;
                        }
                        let client = ClientInfo {
                            client_id: req.client_id.clone(),
                            protocol: req.protocol,
                            username: req.username.clone(),
                        };
                        // The session is this node's once the cluster says so: after the
                        // handler authorized the client, since a claim takes the session
                        // over from another node.
                        let mut handed = None;
                        if let Some(cluster) = &self.inner.cluster {
                            // The Will goes with the claim, for another node to publish should
                            // this one stop while the connection lasts: authorized now, since
                            // that node has no handler state for this client.
                            let mut will = None;
                            if let Some(message) = self.session.will().cloned() {
                                let decision =
                                    self.inner.handler.on_publish(&app, &client, &message).await;
                                if decision == PublishDecision::Accept {
                                    let granted = req
                                        .session_expiry_interval
                                        .min(self.inner.config.max_session_expiry);
                                    let delay = self.session.will_delay().min(granted);
                                    let connection =
                                        self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
                                    will = Some(ClusterWill::new(message, delay, connection));
                                }
                            }
                            match cluster.claim(&req.client_id, will.as_ref()).await {
                                Ok(session) => {
                                    handed = session;
                                    self.cluster_will = will.map(|w| w.connection);
                                }
                                Err(error) => {
                                    let code = ReasonCode::SERVER_UNAVAILABLE;
                                    tracing::debug!(
                                        client_id = %req.client_id,
                                        %error,
                                        "connect exception: cluster claim failed"
                                    );
                                    self.session.refuse_connect(code);
                                    self.inner
                                        .handler
                                        .on_disconnect(app, &client, CloseReason::Refused(code))
                                        .await;
                                    return;
                                }
                            }
                        }
                        self.app = Some(app);
                        self.client = Some(client);
                        // [MQTT-3.1.4-3] If the ClientID represents a Client already connected
                        // to the Server, the Server sends a DISCONNECT packet to the existing
                        // Client with Reason Code 0x8E (Session taken over) and MUST close its
                        // Network Connection; only after the new connection was authorized.
                        // Its session (if persistent) is taken over once its task has stored it.
                        let old_done = {
                            let shared = self.inner.lock();
                            shared
                                .by_client_id
                                .get(&req.client_id)
                                .and_then(|old| shared.clients.get(old))
                                .map(|entry| {
                                    entry.mailbox.send(Command::taken_over());
                                    Arc::clone(&entry.mailbox)
                                })
                        };
                        if let Some(old) = old_done {
                            let _ = tokio::time::timeout(
                                FINAL_FLUSH + Duration::from_secs(1),
                                old.finished(),
                            )
                            .await;
                        }
                        let granted = req
                            .session_expiry_interval
                            .min(self.inner.config.max_session_expiry);
                        if granted != req.session_expiry_interval {
                            self.session.grant_session_expiry(granted);
                        }
                        let resumed = {
                            let now = Instant::now();
                            let mut shared = self.inner.lock();
                            let expired = shared.sweep(&self.inner.config, now);
                            self.inner.session_expired(expired);
                            let mut ops = Vec::new();
                            // [MQTT-3.1.3-9] If a new Network Connection to this Session is
                            // made before the Will Delay Interval has passed, the Server MUST
                            // NOT send the Will Message.
                            if let Some((_, will, publisher)) =
                                shared.delayed_wills.remove(&req.client_id)
                            {
                                durable::remove_will(&req.client_id, &mut ops);
                                if req.clean_start {
                                    // Clean Start ends the old session, and a Will waits at
                                    // most until its session ends (MQTT 5.0 §3.1.3.2.2).
                                    shared.publish(&self.inner.config, Some(publisher), &will);
                                }
                            }
                            let stored = shared.sessions.remove(&req.client_id);
                            if let Some(stored) = &stored {
                                shared.offline.remove(&stored.id);
                            }
                            let had_stored = stored.is_some();
                            let resumed = match stored {
                                // [MQTT-3.1.2-5] / MQTT 5.0 §3.1.2.4: Clean Start 0 resumes
                                // the existing session.
                                Some(stored) if !req.clean_start => {
                                    self.id = stored.id;
                                    let (tx, rx) = oneshot::channel();
                                    shared.store(StoreOp::Take(req.client_id.clone(), tx));
                                    let same_version =
                                        stored.version.is_v5() == req.protocol.is_v5();
                                    if !same_version {
                                        durable::remove_messages(&req.client_id, &mut ops);
                                    }
                                    Some((rx, same_version, false))
                                }
                                // [MQTT-3.1.2-4] Clean Start 1: the existing session is
                                // discarded.
                                Some(stored) => {
                                    shared.unsubscribe_all(stored.id);
                                    shared.store(StoreOp::Remove(req.client_id.clone()));
                                    durable::remove_session(&req.client_id, &mut ops);
                                    None
                                }
                                // A session another node of the cluster handed over.
                                None => match handed {
                                    Some(session) if !req.clean_start => {
                                        for (filter, options) in &session.subscriptions {
                                            let outcome =
                                                shared.router.subscribe(filter, self.id, *options);
                                            if let (Some(cluster), Ok(SubscribeOutcome::New)) =
                                                (&shared.cluster, outcome)
                                            {
                                                let _ = cluster.subscribed(filter);
                                            }
                                        }
                                        let same_version =
                                            session.version.is_v5() == req.protocol.is_v5();
                                        let (tx, rx) = oneshot::channel();
                                        let _ = tx.send(Some(session));
                                        Some((rx, same_version, true))
                                    }
                                    _ => None,
                                },
                            };
                            // A persistent session of a broker with a journal is durable: its
                            // metadata is written now, its messages as they come.
                            let expiry = self.session.session_expiry();
                            let durable =
                                shared.journaling && expiry > 0 && durable::fits(&req.client_id);
                            if shared.journaling && expiry > 0 && !durable {
                                tracing::warn!(
                                    client_id_len = req.client_id.len(),
                                    "client identifier too long to journal: its session is kept in memory only"
                                );
                            }
                            if durable {
                                let clock = Clock::read();
                                let expires_at = (expiry != u32::MAX)
                                    .then(|| clock.now + Duration::from_secs(u64::from(expiry)));
                                let session = StoredSession::new(
                                    req.protocol,
                                    expires_at,
                                    shared.router.subscriptions(self.id),
                                    crate::proto::SessionState::default(),
                                );
                                durable::put_session(&req.client_id, &session, clock, &mut ops);
                                if let Some(d) = &mut self.durability {
                                    d.client_id = Some(Arc::from(req.client_id.as_str()));
                                }
                            } else if had_stored && req.clean_start {
                                // Removed above.
                            } else if had_stored {
                                durable::remove_session(&req.client_id, &mut ops);
                            }
                            // Acknowledgements wait for the journal, and for the cluster.
                            self.session.set_durability(
                                durable,
                                shared.journaling || shared.cluster.is_some(),
                            );
                            shared.journal(ops);
                            let seq = shared.store_seq;
                            if let Some(d) = &mut self.durability {
                                d.need = seq;
                            }
                            shared.by_client_id.insert(req.client_id.clone(), self.id);
                            shared.clients.insert(
                                self.id,
                                ClientEntry {
                                    mailbox: Arc::clone(&self.mailbox),
                                    version: req.protocol,
                                    durable: self.durable().cloned(),
                                },
                            );
                            resumed
                        };
                        // The store answers after every message queued for the session.
                        let resumed = match resumed {
                            Some((taken, same_version, handed)) => {
                                let mut state = taken
                                    .await
                                    .ok()
                                    .flatten()
                                    // Messages encoded for the other protocol version do not
                                    // carry over; the subscriptions (in the router) do.
                                    .filter(|_| same_version)
                                    .map(|stored| stored.state)
                                    .unwrap_or_default();
                                if handed {
                                    // Another node's session: into this broker's journal.
                                    self.journal_state(&mut state);
                                }
                                Some(state)
                            }
                            None => None,
                        };
                        tracing::Span::current().record("client_id", req.client_id.as_str());
                        tracing::debug!(
                            client_id = %req.client_id,
                            resumed = resumed.is_some(),
                            elapsed = ?started.elapsed(),
                            "connect stop"
                        );
                        self.connected_at = Some(Instant::now());
                        let now = Instant::now().into_std();
                        match resumed {
                            Some(state) => self.session.accept_connect_resumed(now, state),
                            None => self.session.accept_connect(now),
                        }
                    }
                    Err(refusal) => {
                        tracing::debug!(
                            client_id = %req.client_id,
                            code = %refusal.reason_code(),
                            elapsed = ?started.elapsed(),
                            "connect exception"
                        );
                        self.session.refuse_connect(refusal.reason_code());
                    }
                }
            }
            Event::Auth(req) => {
                let client_id = self.session.client_id().to_owned();
                let decision = self.inner.handler.on_auth(&client_id, &req).await;
                let now = Instant::now().into_std();
                match decision {
                    AuthDecision::Continue(data) => self.session.continue_auth(now, data),
                    AuthDecision::Success(data) => self.session.auth_success(now, data),
                    AuthDecision::Failure(code) => self.session.auth_failure(code),
                }
            }
            Event::Publish(message) => {
                let outcome = self.authorize_and_publish(&message).await;
                self.session
                    .complete_publish(Instant::now().into_std(), outcome);
            }
            Event::Will(message) => {
                let delay = self.session.will_delay().min(self.session.session_expiry());
                match (&self.client, delay) {
                    (Some(client), 1..) => {
                        // Authorized now, published later by the housekeeping sweep.
                        let decision = match &self.app {
                            Some(app) => self.inner.handler.on_publish(app, client, &message).await,
                            None => PublishDecision::Refuse(ReasonCode::NOT_AUTHORIZED),
                        };
                        if decision == PublishDecision::Accept {
                            let at = Instant::now() + Duration::from_secs(u64::from(delay));
                            let mut shared = self.inner.lock();
                            if shared.journaling && durable::fits(&client.client_id) {
                                let mut ops = Vec::new();
                                let due = Clock::read().to_unix(at.into_std());
                                durable::put_will(&client.client_id, due, &message, &mut ops);
                                shared.journal(ops);
                            }
                            shared
                                .delayed_wills
                                .insert(client.client_id.clone(), (at, message, self.id));
                        }
                    }
                    _ => {
                        self.authorize_and_publish(&message).await;
                    }
                }
            }
            Event::Subscribe(req) => self.subscribe(req).await,
            Event::Unsubscribe(req) => self.unsubscribe(req).await,
            Event::Delivered(delivered) => self.delivered(&delivered).await,
            Event::Closed(reason) => self.close_reason = Some(reason),
        }
    }

    async fn delivered(&self, delivered: &Delivered) {
        if let (Some(app), Some(client)) = (&self.app, &self.client) {
            self.inner
                .handler
                .on_delivered(app, client, delivered)
                .await;
        }
    }

    async fn authorize_and_publish(&mut self, message: &Message) -> PublishOutcome {
        let (Some(app), Some(client)) = (&self.app, &self.client) else {
            return PublishOutcome::Refused(ReasonCode::NOT_AUTHORIZED);
        };
        match self.inner.handler.on_publish(app, client, message).await {
            PublishDecision::Accept => {
                // The session's own changes (an inbound QoS 2 identifier) and the message's
                // go to the journal in one batch.
                let (prefix, _) = self.drain_journal();
                let mut shared = self.inner.lock();
                let before = shared.store_seq;
                shared.group = Some(Vec::new());
                shared.journal(prefix);
                shared.publish(&self.inner.config, Some(self.id), message);
                shared.end_group();
                if shared.store_seq != before {
                    let seq = shared.store_seq;
                    drop(shared);
                    self.needs(seq);
                }
                PublishOutcome::Accepted
            }
            PublishDecision::Refuse(code) => {
                self.count_refused_publish(code);
                PublishOutcome::Refused(code)
            }
            PublishDecision::Disconnect(code) => {
                self.count_refused_publish(code);
                PublishOutcome::Disconnect(code)
            }
        }
    }

    /// A message refused for its rate (0x96) or a quota (0x97) counts as dropped.
    fn count_refused_publish(&self, code: ReasonCode) {
        if code == ReasonCode::MESSAGE_RATE_TOO_HIGH || code == ReasonCode::QUOTA_EXCEEDED {
            self.inner.stats.dropped(DropCause::RateLimited);
        }
    }

    async fn subscribe(&mut self, req: SubscribeRequest) {
        let (Some(app), Some(client)) = (&self.app, &self.client) else {
            return;
        };
        let mut codes = Vec::with_capacity(req.entries.len());
        let mut retained = Vec::new();
        // The cluster's subscriptions the SUBACK waits for.
        let mut interest = Vec::new();
        for entry in &req.entries {
            let decision = self
                .inner
                .handler
                .on_subscribe(app, client, &entry.filter, &entry.options)
                .await;
            let granted = match decision {
                SubscribeDecision::Grant(qos) => qos.min(to_codec_qos(entry.options.qos)),
                SubscribeDecision::Refuse(code) => {
                    codes.push(if code.is_error() {
                        code
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            };
            let mut options = entry.options;
            options.qos = to_router_qos(granted);
            let mut shared = self.inner.lock();
            let outcome = match shared.router.subscribe(&entry.filter, self.id, options) {
                Ok(outcome) => outcome,
                Err(_) => {
                    codes.push(ReasonCode::UNSPECIFIED_ERROR);
                    continue;
                }
            };
            if let (Some(cluster), SubscribeOutcome::New) = (&shared.cluster, &outcome) {
                interest.extend(cluster.subscribed(&entry.filter));
            }
            codes.push(ReasonCode::from_u8(granted.as_u8()).unwrap_or(ReasonCode::SUCCESS));
            // [MQTT-3.3.1-9] / MQTT 5.0 §3.8.3.1 Retain Handling: 0 sends the retained
            // messages at subscribe, 1 only for a new subscription, 2 never. MQTT 5.0 §4.8.2:
            // none for a shared subscription.
            let send = !entry.filter.is_shared()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtNewSubscribe => outcome == SubscribeOutcome::New,
                    _ => false,
                };
            if send {
                let version = self.session.version();
                let now = Instant::now();
                let mut expired = Vec::new();
                for (topic, stored) in shared.retained.matching(&entry.filter) {
                    let Some(message) = stored.current(now) else {
                        expired.push(topic.clone());
                        continue;
                    };
                    // Delivered at min(stored QoS, granted QoS), with RETAIN set
                    // [MQTT-3.3.1-8].
                    let qos = message.qos.min(granted);
                    let ids: Vec<u32> = options
                        .subscription_id
                        .map(|id| id.get())
                        .into_iter()
                        .collect();
                    if let Ok(encoded) = Outbound::encode(&message, version, qos, true, &ids) {
                        retained.push(encoded);
                    }
                }
                for topic in expired {
                    shared.remove_retained(&topic);
                }
            }
        }
        self.journal_session();
        for ready in interest {
            ready.await;
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (entry, code) in req.entries.iter().zip(&codes) {
                tracing::debug!(
                    filter = %entry.filter,
                    qos = ?entry.options.qos,
                    granted = %code,
                    "subscribe"
                );
            }
        }
        let now = Instant::now().into_std();
        self.session.complete_subscribe(now, &codes);
        for message in retained {
            let qos = message.qos();
            let outcome = self.session.deliver(now, message);
            self.count_delivery(qos, outcome);
        }
    }

    async fn unsubscribe(&mut self, req: UnsubscribeRequest) {
        let (Some(app), Some(client)) = (&self.app, &self.client) else {
            return;
        };
        let mut existed = Vec::with_capacity(req.filters.len());
        for filter in &req.filters {
            let removed = {
                let mut shared = self.inner.lock();
                let removed = shared.router.unsubscribe(filter, self.id);
                if let (Some(cluster), Some(_)) = (&shared.cluster, &removed) {
                    cluster.unsubscribed(filter);
                }
                removed
            };
            tracing::debug!(%filter, existed = removed.is_some(), "unsubscribe");
            existed.push(removed.is_some());
            self.inner.handler.on_unsubscribe(app, client, filter).await;
        }
        self.journal_session();
        self.session
            .complete_unsubscribe(Instant::now().into_std(), &existed);
    }

    /// Removes the connection from the shared state and tells the handler.
    async fn finish(&mut self) {
        // What the session reported last goes to the journal before its state is stored.
        self.settle(0);
        {
            let now = Instant::now();
            let mut shared = self.inner.lock();
            let mut ops = Vec::new();
            if shared
                .clients
                .get(&self.id)
                .is_some_and(|c| Arc::ptr_eq(&c.mailbox, &self.mailbox))
            {
                shared.clients.remove(&self.id);
            }
            let mut kept = false;
            let mut released = false;
            if let Some(client) = &self.client {
                let newer = shared
                    .by_client_id
                    .get(&client.client_id)
                    .is_some_and(|id| *id != self.id);
                if !newer {
                    shared.by_client_id.remove(&client.client_id);
                }
                let expiry = self.session.session_expiry();
                // MQTT 5.0 §3.1.2.11.2 / 3.1.1 §3.1.2.4: a session with an expiry above 0
                // outlives its connection; its subscriptions stay in the router.
                if expiry > 0
                    && !newer
                    && shared.sessions.len() < self.inner.config.max_stored_sessions
                {
                    let expires_at =
                        (expiry != u32::MAX).then(|| now + Duration::from_secs(u64::from(expiry)));
                    let stored = Stored {
                        id: self.id,
                        version: client.protocol,
                        expires_at,
                    };
                    let mut state = self.session.take_state(now.into_std());
                    // Its messages stay with the session (see `Receipt`).
                    state.keep_receipts();
                    // Messages still in the mailbox belong to the session too.
                    let config = &self.inner.config;
                    for command in self.mailbox.take() {
                        if let Command::Deliver(message) = command {
                            let id = message.id();
                            if !state.enqueue(
                                now.into_std(),
                                message,
                                config.max_queued_messages,
                                config.max_offline_queued_bytes,
                            ) {
                                if let (Some(id), Some(client_id)) = (id, self.durable()) {
                                    durable::remove_message(client_id, id, &mut ops);
                                }
                            }
                        }
                    }
                    let mut session = StoredSession::new(
                        client.protocol,
                        expires_at.map(Instant::into_std),
                        shared.router.subscriptions(self.id),
                        crate::proto::SessionState::default(),
                    );
                    if let Some(client_id) = self.durable() {
                        durable::put_session(client_id, &session, Clock::read(), &mut ops);
                    }
                    session.state = state;
                    shared.store(StoreOp::Save(client.client_id.clone(), session));
                    shared.offline.insert(self.id, client.client_id.clone());
                    shared.sessions.insert(client.client_id.clone(), stored);
                    kept = true;
                }
            }
            if !kept {
                shared.unsubscribe_all(self.id);
                let newer = self.client.as_ref().is_some_and(|client| {
                    shared
                        .by_client_id
                        .get(&client.client_id)
                        .is_some_and(|id| *id != self.id)
                });
                if let (Some(cluster), Some(client), false, false, Some(_)) = (
                    &shared.cluster,
                    &self.client,
                    newer,
                    self.moved,
                    self.connected_at,
                ) {
                    cluster.release(&client.client_id);
                    released = true;
                }
                if let (Some(client_id), false) = (self.durable(), newer) {
                    durable::remove_session(client_id, &mut ops);
                }
            }
            shared.journal(ops);
            // The Will is settled here by now (published, kept as a delayed Will, or
            // dropped): the cluster forgets it once that is stored.
            if let (Some(cluster), Some(client), Some(connection), false) =
                (&shared.cluster, &self.client, self.cluster_will, released)
            {
                let (cluster, client_id) = (Arc::clone(cluster), client.client_id.clone());
                let seq = shared.store_seq;
                let mut committed = self.inner.committed.subscribe();
                tokio::spawn(async move {
                    let _ = committed.wait_for(|&done| done >= seq).await;
                    cluster.will_settled(&client_id, connection);
                });
            }
        }
        self.mailbox.finish();
        let reason = self.close_reason.unwrap_or(CloseReason::ConnectionLost);
        if let CloseReason::Refused(code) = reason {
            self.inner.stats.refused(code);
        }
        match (&self.client, self.connected_at) {
            (Some(client), Some(at)) => tracing::debug!(
                client_id = %client.client_id,
                ?reason,
                connected_for = ?at.elapsed(),
                "disconnect"
            ),
            // Refusals were logged with their CONNECT.
            _ if matches!(reason, CloseReason::Refused(_)) => {}
            _ => tracing::debug!(?reason, "connect exception"),
        }
        if let (Some(app), Some(client)) = (self.app.take(), &self.client) {
            self.inner.handler.on_disconnect(app, client, reason).await;
        }
    }
}

thread_local! {
    /// One read buffer per worker thread: a read lands in it and goes into the session's
    /// decoder within the same poll, so no connection keeps a read buffer of its own (the
    /// decoder keeps only the bytes of incomplete packets, and as much room as the largest
    /// read it was fed).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads once from `rd` and feeds the bytes to `session` before returning their number (0 at
/// the end of the stream).
fn read_into<'a, R>(
    rd: &'a mut R,
    session: &'a mut Session,
) -> impl Future<Output = io::Result<usize>> + 'a
where
    R: AsyncRead + Unpin,
{
    std::future::poll_fn(move |cx| {
        READ_BUF.with(|cell| {
            let mut own = Vec::new();
            let mut shared = cell.try_borrow_mut();
            // Never nested in practice (a stream's read does not poll another connection);
            // if it ever were, a buffer of its own keeps this correct.
            let buf = match &mut shared {
                Ok(buf) => &mut **buf,
                Err(_) => &mut own,
            };
            if buf.len() < READ_BUFFER {
                buf.resize(READ_BUFFER, 0);
            }
            let mut read = tokio::io::ReadBuf::new(buf);
            match std::pin::Pin::new(&mut *rd).poll_read(cx, &mut read) {
                std::task::Poll::Ready(Ok(())) => {
                    let bytes = read.filled();
                    if !bytes.is_empty() {
                        session.handle_bytes(Instant::now().into_std(), bytes);
                    }
                    std::task::Poll::Ready(Ok(bytes.len()))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
