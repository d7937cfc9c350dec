//! The tokio shell: the [`Client`] handle, the driver task, reconnects with backoff.
//!
//! The driver owns the transport and the [`ClientSession`]; it makes no protocol decision.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use mqttx_codec::{
    PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode, SubscribeFilter, Will,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::proto::{
    self, ClientSession, PublishError, RequestError, SessionError, SessionOptions, SessionState,
    SubscribeResult,
};

const COMMAND_CAPACITY: usize = 256;
/// Bytes a `publish` may leave in the session's transmit buffer before it waits for the
/// driver to write them (QoS 0 has no other bound while connected).
const MAX_UNWRITTEN: usize = 256 * 1024;

/// Opens the byte stream the client speaks MQTT over. TCP is [`TcpConnector`]; TLS,
/// WebSocket or in-memory streams plug in by implementing this.
pub trait Connector: Send + Sync + 'static {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens one connection.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Any `Fn() -> Future<Output = io::Result<Stream>>` is a connector, so a transport plugs
/// in with a closure that opens one connection per call (the TLS, WebSocket and proxy
/// connectors of `mqttx-transport-tls`, `mqttx-transport-ws` and `mqttx-transport-tcp`; see
/// `docs/transports.md`):
///
/// ```no_run
/// let connector = || async {
///     let tcp = tokio::net::TcpStream::connect("127.0.0.1:1883").await?;
///     // Here e.g. `tls.connect("broker.example", tcp).await` with a cloned `TlsConnector`.
///     std::io::Result::Ok(tcp)
/// };
/// # async {
/// let (client, events) = mqttx_client::Client::connect_with(
///     mqttx_client::ConnectOptions::new("127.0.0.1", 1883, "demo"),
///     connector,
/// )
/// .await?;
/// # Ok::<_, mqttx_client::Error>(()) };
/// ```
impl<F, Fut, S> Connector for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = S;

    fn connect(&self) -> impl Future<Output = io::Result<S>> + Send {
        self()
    }
}

/// Keeps a client's [`SessionState`] (in its byte form) across process restarts, keyed by
/// the configured client identifier. The driver loads it once when the client is created and
/// saves it whenever it changed: before writing to the network, and before `publish` or
/// `request` returns, so a message whose publish returned survives a crash.
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// The saved state of `client_id`, if any.
    fn load(&self, client_id: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the saved state of `client_id`.
    fn save(&self, client_id: &str, state: &[u8]) -> io::Result<()>;
}

/// One side of an MQTT 5.0 enhanced authentication (§4.12), e.g. SCRAM or Kerberos: given
/// the server's Authentication Data of a challenge (AUTH 0x18), the client's next data.
pub trait Authenticator: fmt::Debug + Send + Sync + 'static {
    /// The answer to one challenge of `method`.
    fn step(&self, method: &str, server_data: &[u8]) -> Vec<u8>;
}

/// A [`SessionStore`] in memory: survives a new `Client` in the same process.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SessionStore for MemoryStore {
    fn load(&self, client_id: &str) -> io::Result<Option<Vec<u8>>> {
        let map = self
            .0
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        Ok(map.get(client_id).cloned())
    }

    fn save(&self, client_id: &str, state: &[u8]) -> io::Result<()> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        map.insert(client_id.to_owned(), state.to_vec());
        Ok(())
    }
}

/// A [`SessionStore`] in a directory: one file per client identifier (its bytes in hex, so
/// any identifier is a safe file name), replaced atomically by write-and-rename. Writes are
/// synchronous, on the driver task.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, client_id: &str) -> PathBuf {
        let name: String = client_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.mqxs"))
    }
}

impl SessionStore for FileStore {
    fn load(&self, client_id: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(client_id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, client_id: &str, state: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(client_id);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, state)?;
        std::fs::rename(tmp, path)
    }
}

/// Connects over TCP (with TCP_NODELAY, from mqttx-transport-tcp) to `host:port`.
#[derive(Clone, Debug)]
pub struct TcpConnector {
    host: String,
    port: u16,
}

impl TcpConnector {
    /// A connector for `host:port` (resolved on every attempt).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match mqttx_transport_tcp::connect(addr, mqttx_transport_tcp::TcpOptions::default())
                .await
            {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Reconnect delays: `initial`, multiplied by `multiplier` after each failed attempt up to
/// `max`, each spread by ± `jitter` (a fraction); reset after a successful CONNACK.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// First delay (default 1 s).
    pub initial: Duration,
    /// Largest delay (default 30 s).
    pub max: Duration,
    /// Growth factor (default 2).
    pub multiplier: f64,
    /// Relative jitter (default 0.1, i.e. ±10 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
        }
    }
}

/// Everything [`Client::connect`] needs.
///
/// ```
/// use std::time::Duration;
/// let mut opts = mqttx_client::ConnectOptions::new("127.0.0.1", 1883, "sensor-1");
/// opts.session.keep_alive = Duration::from_secs(30);
/// assert_eq!(opts.connect_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The CONNECT and the session's limits.
    pub session: SessionOptions,
    /// Time allowed for TCP (or the connector) plus CONNECT/CONNACK (default 10 s).
    pub connect_timeout: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Whether to reconnect after the connection is lost (default `true`).
    pub reconnect: bool,
    /// Capacity of the event channel (default 1 024); see the crate docs.
    pub event_capacity: usize,
    /// Answers MQTT 5.0 enhanced-authentication challenges (AUTH 0x18). Set the method and
    /// the first data in `session.properties.authentication_method` / `_data`.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Where the session state is kept across restarts (default none). Needs a non-empty
    /// client identifier.
    pub store: Option<Arc<dyn SessionStore>>,
    /// Whether [`Client::connect`] waits for the first CONNACK (default `true`). With
    /// `false` it returns at once and the first connection is made like a reconnect:
    /// [`Event::Connected`] tells when it is up, and failures retry with backoff.
    pub wait_for_connack: bool,
}

impl ConnectOptions {
    /// Options for `client_id` at `host:port`, MQTT 5.0, everything else default.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            session: SessionOptions::new(client_id),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            reconnect: true,
            event_capacity: 1024,
            wait_for_connack: true,
            store: None,
            authenticator: None,
        }
    }

    /// Sets the protocol version.
    pub fn protocol(mut self, protocol: ProtocolVersion) -> Self {
        self.session.protocol = protocol;
        self
    }

    /// Sets the Keep Alive.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.session.keep_alive = keep_alive;
        self
    }

    /// Sets the Will Message.
    pub fn will(mut self, will: Will<'static>) -> Self {
        self.session.will = Some(will);
        self
    }

    /// Sets user name and password.
    pub fn credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<Vec<u8>>,
    ) -> Self {
        self.session.username = Some(username.into());
        self.session.password = Some(password.into());
        self
    }
}

/// The errors of the shell. Message text is unstable.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Opening the transport failed.
    Io(io::Error),
    /// TCP plus CONNACK did not finish within the connect timeout.
    ConnectTimeout,
    /// The server refused the CONNECT.
    Refused(ReasonCode),
    /// The connection failed on a protocol error before CONNACK.
    Session(SessionError),
    /// The session refused the publish.
    Publish(PublishError),
    /// The session refused the subscribe or unsubscribe.
    Request(RequestError),
    /// The driver stopped (disconnect, non-retryable refusal, or every handle dropped).
    Closed,
    /// No response within the time given to [`Client::request`].
    RequestTimeout,
    /// The feature needs MQTT 5.0 (request/response).
    NeedsV5,
    /// A typed payload did not serialize (features `json`, `protobuf`).
    Payload(crate::payload::PayloadError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(_) => f.write_str("connection failed"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::Refused(code) => write!(f, "connection refused: {code}"),
            Self::Session(_) => f.write_str("protocol error while connecting"),
            Self::Publish(_) => f.write_str("publish refused"),
            Self::Request(_) => f.write_str("request refused"),
            Self::Closed => f.write_str("client closed"),
            Self::RequestTimeout => f.write_str("no response in time"),
            Self::NeedsV5 => f.write_str("needs MQTT 5.0"),
            Self::Payload(_) => f.write_str("payload refused"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Session(e) => Some(e),
            Self::Publish(e) => Some(e),
            Self::Request(e) => Some(e),
            Self::Payload(e) => Some(e),
            _ => None,
        }
    }
}

/// What the application sees.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A CONNACK 0x00 (also after every reconnect).
    Connected {
        /// Session Present.
        session_present: bool,
    },
    /// An application message.
    Message(Publish<'static>),
    /// The automatic re-subscription after a reconnect without session was answered.
    Resubscribed(Vec<(String, SubscribeResult)>),
    /// The connection ended; a reconnect follows unless `Stopped` comes next.
    Disconnected {
        /// The server's DISCONNECT reason, or the session's reason for giving up, or
        /// 0x80 Unspecified error for a transport failure.
        reason_code: ReasonCode,
    },
    /// The server refused a reconnect with a retryable code; another attempt follows.
    ConnectionRefused(ReasonCode),
    /// The driver stopped for good: a non-retryable CONNACK code (carried here), or
    /// reconnecting is off (0x80).
    Stopped(ReasonCode),
}

/// The event receiver returned by [`Client::connect`].
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the driver stopped and every event was read. Cancel safe.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The underlying receiver.
    pub fn into_inner(self) -> mpsc::Receiver<Event> {
        self.rx
    }
}

/// `Events` is a [`Stream`](futures_core::Stream) of [`Event`]s, for `StreamExt` combinators
/// (`next`, `filter_map`…) from futures or tokio-stream; it ends when the driver stopped and
/// every event was read.
impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// Resolves with the server's reason code when the PUBACK or PUBCOMP (or a failing PUBREC)
/// arrives; at once with 0x00 for QoS 0. Survives reconnects; [`Error::Closed`] if the
/// driver stops first.
#[derive(Debug)]
pub struct PublishHandle {
    packet_id: Option<PacketId>,
    rx: Option<oneshot::Receiver<ReasonCode>>,
}

impl PublishHandle {
    /// The packet identifier (QoS 1 and 2).
    pub fn packet_id(&self) -> Option<PacketId> {
        self.packet_id
    }
}

impl Future for PublishHandle {
    type Output = Result<ReasonCode, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.rx.as_mut() {
            None => Poll::Ready(Ok(ReasonCode::SUCCESS)),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| r.map_err(|_| Error::Closed)),
        }
    }
}

enum Command {
    Subscribe(
        Vec<SubscribeFilter>,
        Box<Properties<'static>>,
        oneshot::Sender<Result<Vec<SubscribeResult>, Error>>,
    ),
    Unsubscribe(Vec<String>, oneshot::Sender<Result<Vec<ReasonCode>, Error>>),
    Disconnect(ReasonCode, Box<Properties<'static>>, oneshot::Sender<()>),
    /// Re-authentication with this first Authentication Data.
    Reauthenticate(Vec<u8>, oneshot::Sender<()>),
    /// Manual acknowledgement of an inbound message.
    Ack(PacketId, oneshot::Sender<bool>),
    /// Topic, payload, where the response goes, where "queued" goes.
    Request(
        String,
        Vec<u8>,
        oneshot::Sender<Publish<'static>>,
        oneshot::Sender<Result<(), Error>>,
    ),
}

/// A cheap, cloneable handle to one client session; the driver task stops when every
/// handle is dropped or [`Client::disconnect`] is called.
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// What the handles and the driver share. `publish` puts the message into the session
/// itself, so a burst of publishes costs no channel hop each and leaves the driver one
/// buffer to write; the lock is held only for short synchronous sections, never across an
/// `.await`.
struct Shared {
    core: Mutex<Core>,
    /// Wakes the driver: a handle left bytes to send.
    wake: Notify,
    /// Wakes publishes waiting for the transmit buffer to drain (or the driver to stop).
    flushed: Notify,
    store: Option<Arc<dyn SessionStore>>,
    client_id: String,
}

struct Core {
    session: ClientSession,
    /// QoS 1 and 2 publishes waiting for their acknowledgement, with when they were
    /// published if a `publish stop` event may be logged.
    publishes: HashMap<PacketId, (oneshot::Sender<ReasonCode>, Option<std::time::Instant>)>,
    /// The state last given to the store, to save only changes.
    saved: Vec<u8>,
    /// Set when the driver stopped: publishes fail with [`Error::Closed`].
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves a consistent session (its methods do not
        // unwind half-way through on any input), so a poisoned lock is used as it is.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves the session state if a store is configured and the state changed. A failing
    /// store is retried at the next change; the connection goes on.
    fn persist(&self, core: &mut Core) {
        let Some(store) = &self.store else {
            return;
        };
        let mut bytes = Vec::new();
        core.session.state().encode(&mut bytes);
        if bytes != core.saved && store.save(&self.client_id, &bytes).is_ok() {
            core.saved = bytes;
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects over TCP to `options.host:options.port`, waits for the CONNACK (within
    /// `connect_timeout`), and spawns the driver task.
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Events), Error> {
        let connector = TcpConnector::new(options.host.clone(), options.port);
        Self::connect_with(options, connector).await
    }

    /// Like [`connect`](Self::connect) over any stream `connector` opens (host and port in
    /// `options` are then unused).
    pub async fn connect_with<C: Connector>(
        options: ConnectOptions,
        connector: C,
    ) -> Result<(Client, Events), Error> {
        let (tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(options.event_capacity.max(1));
        let mut session = ClientSession::new();
        let mut saved = Vec::new();
        if let Some(store) = &options.store {
            if let Some(bytes) = store.load(&options.session.client_id).map_err(Error::Io)? {
                let state = SessionState::decode(&bytes)
                    .map_err(|e| Error::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                session = ClientSession::from_state(state);
                saved = bytes;
            }
        }
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                session,
                publishes: HashMap::new(),
                saved,
                closed: false,
            }),
            wake: Notify::new(),
            flushed: Notify::new(),
            store: options.store.clone(),
            client_id: options.session.client_id.clone(),
        });
        let mut driver = Driver {
            shared: Arc::clone(&shared),
            seed: seed(&options.session.client_id),
            options,
            connector: Arc::new(connector),
            cmd_rx,
            ev_tx,
            pending: VecDeque::new(),
            subscribes: HashMap::new(),
            unsubscribes: HashMap::new(),
            stopping: None,
            lost: None,
            response_topic: None,
            next_correlation: 0,
            responders: HashMap::new(),
            reauth: Vec::new(),
        };
        // Every event of this client's driver carries its client identifier.
        let span =
            tracing::debug_span!("mqtt_client", client_id = %driver.options.session.client_id);
        if driver.options.wait_for_connack {
            let stream = driver.establish().instrument(span.clone()).await?;
            tokio::spawn(driver.run(Some(stream)).instrument(span));
        } else {
            tokio::spawn(driver.run(None).instrument(span));
        }
        Ok((Client { tx, shared }, Events { rx: ev_rx }))
    }

    /// Publishes; returns once the message is queued in the session, with a handle that
    /// resolves on its acknowledgement. QoS 0 while disconnected is refused
    /// ([`PublishError::NotConnected`]); QoS 1 and 2 wait (bounded, see
    /// [`SessionOptions::max_queued`]) for a window slot or a connection.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        qos: QoS,
        retain: bool,
    ) -> Result<PublishHandle, Error> {
        let mut msg = Publish::new(topic.into(), payload.into());
        msg.qos = qos;
        msg.retain = retain;
        self.publish_message(msg).await
    }

    /// The protocol version of the session.
    pub fn protocol(&self) -> ProtocolVersion {
        self.shared.lock().session.protocol()
    }

    /// Publishes a prepared message (with MQTT 5.0 properties).
    pub async fn publish_message(&self, msg: Publish<'static>) -> Result<PublishHandle, Error> {
        // Backpressure for QoS 0 while connected: wait while more than MAX_UNWRITTEN bytes
        // wait for the driver. The driver writes whatever happens to events, so this wait
        // ends as soon as the transport takes the bytes (or the connection ends).
        loop {
            let flushed = self.shared.flushed.notified();
            tokio::pin!(flushed);
            {
                let core = self.shared.lock();
                if core.closed || core.session.unsent() <= MAX_UNWRITTEN {
                    break;
                }
                // Registered before the lock is released: a drain in between is not missed.
                flushed.as_mut().enable();
            }
            flushed.await;
        }
        self.publish_now(msg)
    }

    /// The synchronous part of a publish: into the session, under the lock.
    fn publish_now(&self, msg: Publish<'static>) -> Result<PublishHandle, Error> {
        let mut core = self.shared.lock();
        if core.closed {
            return Err(Error::Closed);
        }
        // Nothing is formatted or timed unless a subscriber wants TRACE events here.
        let traced = tracing::enabled!(tracing::Level::TRACE);
        let (qos, retain, payload_len) = (msg.qos, msg.retain, msg.payload.len());
        if traced {
            tracing::trace!(
                client_id = %self.shared.client_id,
                topic = %msg.topic,
                ?qos,
                retain,
                payload_len,
                "publish start"
            );
        }
        let started = traced.then(std::time::Instant::now);
        let handle = match core.session.publish(now(), msg) {
            Ok(Some(id)) => {
                let (tx, rx) = oneshot::channel();
                core.publishes.insert(id, (tx, started));
                PublishHandle {
                    packet_id: Some(id),
                    rx: Some(rx),
                }
            }
            Ok(None) => {
                // QoS 0 is done once it is queued.
                tracing::trace!(client_id = %self.shared.client_id, ?qos, "publish stop");
                PublishHandle {
                    packet_id: None,
                    rx: None,
                }
            }
            Err(e) => {
                tracing::debug!(client_id = %self.shared.client_id, ?qos, error = %e, "publish exception");
                return Err(Error::Publish(e));
            }
        };
        // Saved before the caller hears "queued": a publish that returned survives a crash.
        self.shared.persist(&mut core);
        drop(core);
        self.shared.wake.notify_one();
        Ok(handle)
    }

    /// Subscribes to one filter; resolves with its granted QoS or failure code.
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<SubscribeResult, Error> {
        let results = self
            .subscribe_many(vec![SubscribeFilter::new(filter, qos)], Properties::new())
            .await?;
        Ok(results
            .into_iter()
            .next()
            .unwrap_or(Err(ReasonCode::UNSPECIFIED_ERROR)))
    }

    /// Subscribes to several filters with options and properties (e.g. a Subscription
    /// Identifier); resolves with one result per filter when the SUBACK arrives.
    pub async fn subscribe_many(
        &self,
        filters: Vec<SubscribeFilter>,
        properties: Properties<'static>,
    ) -> Result<Vec<SubscribeResult>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Subscribe(filters, Box::new(properties), tx))
            .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Unsubscribes; resolves with one reason code per filter when the UNSUBACK arrives.
    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<Vec<ReasonCode>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Unsubscribe(filters, tx)).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Acknowledges an inbound QoS 1 or 2 message when [`SessionOptions::manual_ack`] is set
    /// (PUBACK or PUBREC, in arrival order). `Ok(false)` for a QoS 0 message or one not
    /// awaiting acknowledgement.
    pub async fn ack(&self, msg: &Publish<'_>) -> Result<bool, Error> {
        let Some(id) = msg.packet_id else {
            return Ok(false);
        };
        let (tx, rx) = oneshot::channel();
        self.send(Command::Ack(id, tx)).await?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// MQTT 5.0 re-authentication (AUTH 0x19) with the CONNECT's Authentication Method and
    /// `data`; challenges go to the [`ConnectOptions::authenticator`]. Resolves when the
    /// server confirms (AUTH 0x00); [`Error::Closed`] if the connection ends first (a server
    /// refuses a re-authentication by disconnecting).
    pub async fn reauthenticate(&self, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Reauthenticate(data.into(), tx)).await?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Request/response (MQTT 5.0 §4.10): publishes at QoS 1 with a Response Topic of this
    /// client's own (subscribed on first use) and fresh Correlation Data, and resolves with
    /// the first message that comes back on that topic with that Correlation Data, or
    /// [`Error::RequestTimeout`] after `timeout`. Responses do not appear on [`Events`].
    pub async fn request(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Publish<'static>, Error> {
        let (tx, rx) = oneshot::channel();
        let (queued_tx, queued_rx) = oneshot::channel();
        self.send(Command::Request(
            topic.into(),
            payload.into(),
            tx,
            queued_tx,
        ))
        .await?;
        queued_rx.await.map_err(|_| Error::Closed)??;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::RequestTimeout),
        }
    }

    /// Sends DISCONNECT (0x00), closes the connection and stops the driver; resolves once
    /// it has stopped. Waiting publish handles then resolve with [`Error::Closed`].
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.disconnect_with(ReasonCode::NORMAL_DISCONNECTION, Properties::new())
            .await
    }

    /// [`disconnect`](Self::disconnect) with a reason code (0x04 asks the server to publish
    /// the Will) and MQTT 5.0 properties (Session Expiry Interval, Reason String, User
    /// Properties).
    pub async fn disconnect_with(
        &self,
        reason_code: ReasonCode,
        properties: Properties<'static>,
    ) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disconnect(reason_code, Box::new(properties), tx))
            .await?;
        rx.await.map_err(|_| Error::Closed)
    }

    async fn send(&self, cmd: Command) -> Result<(), Error> {
        self.tx.send(cmd).await.map_err(|_| Error::Closed)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Subscribe(..) => "Subscribe",
            Self::Unsubscribe(..) => "Unsubscribe",
            Self::Disconnect(..) => "Disconnect",
            Self::Request(..) => "Request",
            Self::Ack(..) => "Ack",
            Self::Reauthenticate(..) => "Reauthenticate",
        })
    }
}

/// A seed for the jitter PRNG: the client id hashed with the address of a stack value, so
/// clients started together do not reconnect in lockstep.
fn seed(client_id: &str) -> u64 {
    let marker = 0u8;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (&marker as *const u8 as u64);
    for b in client_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

/// xorshift64*: a uniform value in [0, 1).
fn next_unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay for attempt `attempt` (0-based), jittered.
pub(crate) fn backoff_delay(b: &Backoff, attempt: u32, rng: &mut u64) -> Duration {
    let base = b.initial.as_secs_f64() * b.multiplier.max(1.0).powi(attempt.min(64) as i32);
    let base = base.min(b.max.as_secs_f64());
    let j = b.jitter.clamp(0.0, 1.0);
    let factor = 1.0 + j * (2.0 * next_unit(rng) - 1.0);
    Duration::from_secs_f64((base * factor).max(0.0))
}

/// Where a SUBACK's results go.
type SubscribeReply = oneshot::Sender<Result<Vec<SubscribeResult>, Error>>;

struct Driver<C: Connector> {
    /// The session and the publish waiters, shared with the handles.
    shared: Arc<Shared>,
    options: ConnectOptions,
    connector: Arc<C>,
    seed: u64,
    cmd_rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<Event>,
    /// Events taken from the session and not yet in the channel (bounded by `event_capacity`).
    pending: VecDeque<Event>,
    /// SUBSCRIBEs waiting for their SUBACK, with when they were sent.
    subscribes: HashMap<PacketId, (SubscribeReply, std::time::Instant)>,
    unsubscribes: HashMap<PacketId, oneshot::Sender<Result<Vec<ReasonCode>, Error>>>,
    /// Set by a Disconnect command: answered when the driver has closed.
    stopping: Option<Vec<oneshot::Sender<()>>>,
    /// Set when the session gave up on the connection, with the reason to report.
    lost: Option<ReasonCode>,
    /// The Response Topic of [`Client::request`], subscribed on first use.
    response_topic: Option<String>,
    next_correlation: u64,
    /// Callers of `reauthenticate` waiting for AUTH 0x00.
    reauth: Vec<oneshot::Sender<()>>,
    /// Correlation Data → the waiting `request`.
    responders: HashMap<Vec<u8>, oneshot::Sender<Publish<'static>>>,
}

/// What woke the driver.
enum Step {
    Command(Option<Command>),
    Read(io::Result<usize>),
    Timeout,
    Nothing,
}

/// How one connection ended.
enum End {
    /// Reconnect (after backoff).
    Lost(ReasonCode),
    /// Stop the driver.
    Stop,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl<C: Connector> Driver<C> {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.shared.lock()
    }

    /// Takes everything the session wants sent (and saves its state first if it changed).
    fn take_transmit(&self, out: &mut Vec<u8>) {
        let mut core = self.core();
        self.shared.persist(&mut core);
        while core.session.poll_transmit(out) {}
        drop(core);
        self.shared.flushed.notify_waiters();
    }

    /// The connection is gone: the session keeps its state for the next one.
    fn closed(&self) {
        self.core().session.handle_connection_closed();
        self.shared.flushed.notify_waiters();
    }

    /// Opens the transport and completes CONNECT/CONNACK within the connect timeout, serving
    /// commands meanwhile (a publish during a reconnect is queued, not delayed).
    async fn establish(&mut self) -> Result<C::Stream, Error> {
        let started = Instant::now();
        let deadline = started + self.options.connect_timeout;
        tracing::debug!(
            protocol = %self.options.session.protocol,
            clean_start = self.options.session.clean_start,
            "connect start"
        );
        let r = self.handshake(deadline).await;
        match &r {
            Ok(_) => tracing::debug!(elapsed = ?started.elapsed(), "connect stop"),
            Err(Error::Closed) => {}
            Err(error) => {
                tracing::debug!(error = %ErrorChain(error), elapsed = ?started.elapsed(), "connect exception");
            }
        }
        if r.is_err() {
            self.closed();
            // Whatever the attempt produced (a refusal, a protocol error) is reported through
            // the result; leftover messages of the previous connection stay pending.
            self.drain_session(usize::MAX);
            self.lost = None;
        }
        r
    }

    async fn handshake(&mut self, deadline: Instant) -> Result<C::Stream, Error> {
        let connector = Arc::clone(&self.connector);
        let connecting = connector.connect();
        tokio::pin!(connecting);
        let mut stream = loop {
            let cmd = tokio::select! {
                r = &mut connecting => break r.map_err(Error::Io)?,
                cmd = self.cmd_rx.recv() => cmd,
                _ = tokio::time::sleep_until(deadline) => return Err(Error::ConnectTimeout),
            };
            self.command_or_stop(cmd)?;
        };
        self.core()
            .session
            .connect(now(), self.options.session.clone());
        let mut out = Vec::new();
        self.take_transmit(&mut out);
        let write = tokio::time::timeout_at(deadline, stream.write_all(&out));
        write
            .await
            .map_err(|_| Error::ConnectTimeout)?
            .map_err(Error::Io)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let step = tokio::select! {
                r = stream.read(&mut buf) => Step::Read(r),
                cmd = self.cmd_rx.recv() => Step::Command(cmd),
                _ = tokio::time::sleep_until(deadline) => return Err(Error::ConnectTimeout),
            };
            let n = match step {
                Step::Read(Ok(0)) => return Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
                Step::Read(Ok(n)) => n,
                Step::Read(Err(e)) => return Err(Error::Io(e)),
                Step::Command(cmd) => {
                    self.command_or_stop(cmd)?;
                    continue;
                }
                Step::Timeout | Step::Nothing => continue,
            };
            // Everything a successful CONNACK produced (Connected, resent messages, early
            // messages) is handled by the connection loop; only the outcome matters here.
            let connected = {
                let mut core = self.core();
                core.session
                    .handle_bytes(now(), buf.get(..n).unwrap_or_default())
                    .map_err(Error::Session)?;
                core.session.is_connected()
            };
            if connected {
                return Ok(stream);
            }
            // A refusal leaves the session disconnected with a ConnectionRefused event; an
            // AUTH challenge is answered by the authenticator.
            self.drain_session(usize::MAX);
            if let Some(code) = self.lost.take() {
                return Err(Error::Refused(code));
            }
            let mut out = Vec::new();
            self.take_transmit(&mut out);
            if !out.is_empty() {
                let write = tokio::time::timeout_at(deadline, stream.write_all(&out));
                write
                    .await
                    .map_err(|_| Error::ConnectTimeout)?
                    .map_err(Error::Io)?;
            }
        }
    }

    /// Applies a command taken while connecting; `Err(Closed)` when the driver must stop.
    fn command_or_stop(&mut self, cmd: Option<Command>) -> Result<(), Error> {
        match cmd {
            Some(cmd) => self.command(cmd),
            None => self.stopping = Some(self.stopping.take().unwrap_or_default()),
        }
        if self.stopping.is_some() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn run(mut self, first: Option<C::Stream>) {
        // Without a first stream, the first attempt is made at once.
        let mut wait = first.is_some();
        let mut stream = first;
        let mut attempt: u32 = 0;
        loop {
            if let Some(s) = stream.take() {
                attempt = 0;
                let connected = Instant::now();
                let end = self.serve(s).await;
                let connected_for = connected.elapsed();
                match &end {
                    End::Stop => tracing::debug!(?connected_for, "disconnect"),
                    End::Lost(code) => {
                        tracing::debug!(code = %code, ?connected_for, "disconnect (connection lost)");
                    }
                }
                match end {
                    End::Stop => break,
                    End::Lost(code) => {
                        // A re-authentication in progress ended with the connection.
                        self.reauth.clear();
                        self.push(Event::Disconnected { reason_code: code });
                        if !self.options.reconnect {
                            self.push(Event::Stopped(ReasonCode::UNSPECIFIED_ERROR));
                            break;
                        }
                    }
                }
            }
            if wait {
                let delay = backoff_delay(&self.options.backoff, attempt, &mut self.seed);
                attempt = attempt.saturating_add(1);
                if !self.idle(delay).await {
                    break;
                }
            }
            wait = true;
            match self.establish().await {
                Ok(s) => stream = Some(s),
                Err(Error::Refused(code)) if !proto::connack_is_retryable(code) => {
                    self.push(Event::Stopped(code));
                    break;
                }
                Err(Error::Refused(code)) => self.push(Event::ConnectionRefused(code)),
                Err(Error::Closed) => break,
                // Transport failures and timeouts: the next attempt follows the backoff.
                Err(_) => {}
            }
        }
        self.finish().await;
    }

    /// Stops: refuses further commands and publishes, resolves every waiting handle with
    /// [`Error::Closed`], answers `disconnect` callers, then hands out the remaining events.
    async fn finish(self) {
        {
            let mut core = self.shared.lock();
            core.closed = true;
            core.publishes.clear();
            self.shared.persist(&mut core);
        }
        self.shared.flushed.notify_waiters();
        let Driver {
            mut cmd_rx,
            ev_tx,
            pending,
            subscribes,
            unsubscribes,
            stopping,
            ..
        } = self;
        cmd_rx.close();
        drop(cmd_rx);
        drop((subscribes, unsubscribes));
        for tx in stopping.unwrap_or_default() {
            let _ = tx.send(());
        }
        // Only this task waits here, and it ends when the receiver is dropped.
        for ev in pending {
            if ev_tx.send(ev).await.is_err() {
                break;
            }
        }
    }

    /// Waits `delay` while serving commands and delivering events; `false` to stop.
    async fn idle(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            self.drain_session(self.options.event_capacity.max(1));
            {
                let mut core = self.core();
                self.shared.persist(&mut core);
            }
            if self.stopping.is_some() {
                return false;
            }
            let step = tokio::select! {
                cmd = self.cmd_rx.recv() => Step::Command(cmd),
                permit = self.ev_tx.reserve(), if !self.pending.is_empty() => {
                    match permit {
                        Ok(p) => { if let Some(ev) = self.pending.pop_front() { p.send(ev) } }
                        Err(_) => self.pending.clear(),
                    }
                    Step::Nothing
                }
                _ = tokio::time::sleep_until(deadline) => return true,
            };
            match step {
                Step::Command(Some(cmd)) => self.command(cmd),
                Step::Command(None) => return false,
                _ => {}
            }
        }
    }

    /// Runs one established connection until it ends.
    async fn serve(&mut self, mut stream: C::Stream) -> End {
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::new();
        let cap = self.options.event_capacity.max(1);
        loop {
            self.drain_session(cap);
            // Everything queued since the last write (a burst of publishes, the
            // acknowledgements of a batch of reads) goes out in one write.
            self.take_transmit(&mut out);
            if !out.is_empty() {
                let r = stream.write_all(&out).await;
                out.clear();
                if r.is_err() {
                    self.closed();
                    return End::Lost(ReasonCode::UNSPECIFIED_ERROR);
                }
            }
            if self.stopping.is_some() {
                let _ = stream.shutdown().await;
                self.closed();
                return End::Stop;
            }
            if let Some(code) = self.lost.take() {
                let _ = stream.shutdown().await;
                self.closed();
                return End::Lost(code);
            }
            let timeout = self.core().session.poll_timeout().map(Instant::from_std);
            let step = tokio::select! {
                cmd = self.cmd_rx.recv() => Step::Command(cmd),
                () = self.shared.wake.notified() => Step::Nothing,
                r = stream.read(&mut buf), if self.pending.len() < cap => Step::Read(r),
                permit = self.ev_tx.reserve(), if !self.pending.is_empty() => {
                    match permit {
                        Ok(p) => { if let Some(ev) = self.pending.pop_front() { p.send(ev) } }
                        Err(_) => self.pending.clear(),
                    }
                    Step::Nothing
                }
                _ = sleep_until_opt(timeout) => Step::Timeout,
            };
            match step {
                Step::Command(Some(cmd)) => self.command(cmd),
                Step::Command(None) => {
                    self.core()
                        .session
                        .disconnect(now(), ReasonCode::NORMAL_DISCONNECTION);
                    self.stopping = Some(Vec::new());
                }
                Step::Read(Ok(0) | Err(_)) => {
                    self.closed();
                    self.drain_session(cap);
                    return End::Lost(self.lost.take().unwrap_or(ReasonCode::UNSPECIFIED_ERROR));
                }
                Step::Read(Ok(n)) => {
                    // Errors are reported as a ConnectionLost event as well.
                    let _ = self
                        .core()
                        .session
                        .handle_bytes(now(), buf.get(..n).unwrap_or_default());
                }
                Step::Timeout => self.core().session.handle_timeout(now()),
                Step::Nothing => {}
            }
        }
    }

    fn push(&mut self, ev: Event) {
        if self.ev_tx.is_closed() {
            return;
        }
        match self.ev_tx.try_reserve() {
            Ok(p) if self.pending.is_empty() => p.send(ev),
            _ => self.pending.push_back(ev),
        }
    }

    /// Moves the session's events to callers and the application, while there is room.
    fn drain_session(&mut self, cap: usize) {
        let shared = Arc::clone(&self.shared);
        let mut core = shared.lock();
        while self.pending.len() < cap {
            let Some(ev) = core.session.poll_event() else {
                break;
            };
            match ev {
                proto::Event::Connected {
                    session_present, ..
                } => self.push(Event::Connected { session_present }),
                proto::Event::ConnectionRefused { reason_code, .. } => {
                    self.lost = Some(reason_code);
                }
                proto::Event::Message(m) => {
                    tracing::trace!(
                        topic = %m.topic,
                        qos = ?m.qos,
                        retain = m.retain,
                        payload_len = m.payload.len(),
                        "message received"
                    );
                    if let Some(m) = self.respond(m) {
                        self.push(Event::Message(m));
                    }
                }
                proto::Event::PublishComplete {
                    packet_id,
                    reason_code,
                } => {
                    if let Some((tx, started)) = core.publishes.remove(&packet_id) {
                        // Left out when TRACE was off at publish time.
                        let elapsed = started.map(|t| tracing::field::debug(t.elapsed()));
                        if reason_code.is_error() {
                            tracing::debug!(packet_id = packet_id.get(), code = %reason_code, elapsed, "publish exception");
                        } else {
                            tracing::trace!(packet_id = packet_id.get(), code = %reason_code, elapsed, "publish stop");
                        }
                        let _ = tx.send(reason_code);
                    }
                }
                proto::Event::Subscribed { packet_id, results } => {
                    if let Some((tx, started)) = self.subscribes.remove(&packet_id) {
                        tracing::debug!(packet_id = packet_id.get(), ?results, elapsed = ?started.elapsed(), "subscribe stop");
                        let _ = tx.send(Ok(results));
                    }
                }
                proto::Event::Unsubscribed { packet_id, results } => {
                    if let Some(tx) = self.unsubscribes.remove(&packet_id) {
                        let _ = tx.send(Ok(results));
                    }
                }
                proto::Event::Resubscribed { results } => self.push(Event::Resubscribed(results)),
                proto::Event::Disconnected { reason_code, .. } => self.lost = Some(reason_code),
                proto::Event::ConnectionLost(e) => self.lost = Some(e.reason_code()),
                proto::Event::AuthChallenge { method, data } => {
                    // Without an authenticator the challenge stays unanswered and the server
                    // ends the exchange (its timeout).
                    if let Some(auth) = self.options.authenticator.clone() {
                        // The application's code runs without the lock held.
                        drop(core);
                        let answer = auth.step(&method, &data);
                        core = shared.lock();
                        core.session.auth_continue(now(), answer);
                    }
                }
                proto::Event::Reauthenticated => {
                    for tx in self.reauth.drain(..) {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }

    /// Hands a response to its `request`; gives the message back if it is not one.
    fn respond(&mut self, m: Publish<'static>) -> Option<Publish<'static>> {
        if self.response_topic.as_deref() != Some(m.topic.as_ref()) {
            return Some(m);
        }
        let key = m.properties.correlation_data.as_deref().map(<[u8]>::to_vec);
        match key.and_then(|k| self.responders.remove(&k)) {
            Some(tx) => {
                let _ = tx.send(m);
                None
            }
            // A late response (the request timed out) is dropped.
            None => None,
        }
    }

    fn request(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        response: oneshot::Sender<Publish<'static>>,
    ) -> Result<(), Error> {
        if !self.options.session.protocol.is_v5() {
            return Err(Error::NeedsV5);
        }
        let now = now();
        let shared = Arc::clone(&self.shared);
        let mut core = shared.lock();
        let response_topic = match &self.response_topic {
            Some(t) => t.clone(),
            None => {
                // A topic of this client's own: 64 bits from the per-client generator.
                let tag = (next_unit(&mut self.seed) * (1u64 << 53) as f64) as u64;
                let t = format!("mqttx/response/{:x}", tag ^ self.seed);
                // The SUBSCRIBE goes out before the request's PUBLISH on the same connection,
                // so the server has the subscription when the responder answers.
                let filter = SubscribeFilter::new(t.clone(), QoS::AtLeastOnce);
                core.session
                    .subscribe(now, vec![filter], Properties::new())
                    .map_err(Error::Request)?;
                self.response_topic = Some(t.clone());
                t
            }
        };
        self.next_correlation += 1;
        let correlation = self.next_correlation.to_be_bytes().to_vec();
        let mut msg = Publish::new(topic, payload);
        msg.qos = QoS::AtLeastOnce;
        msg.properties.response_topic = Some(response_topic.into());
        msg.properties.correlation_data = Some(correlation.clone().into());
        core.session.publish(now, msg).map_err(Error::Publish)?;
        // Saved before the caller hears "queued".
        self.shared.persist(&mut core);
        self.responders.retain(|_, tx| !tx.is_closed());
        self.responders.insert(correlation, response);
        Ok(())
    }

    fn command(&mut self, cmd: Command) {
        let now = now();
        match cmd {
            Command::Reauthenticate(data, reply) => {
                self.core().session.reauthenticate(now, data);
                self.reauth.push(reply);
            }
            Command::Ack(id, reply) => {
                let _ = reply.send(self.core().session.ack(id));
            }
            Command::Request(topic, payload, response, queued) => {
                let r = self.request(topic, payload, response);
                let _ = queued.send(r);
            }
            Command::Subscribe(filters, props, reply) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let list: Vec<(&str, QoS)> = filters
                        .iter()
                        .map(|f| (f.filter.as_ref(), f.options.qos))
                        .collect();
                    tracing::debug!(filters = ?list, "subscribe start");
                }
                let r = self.core().session.subscribe(now, filters, *props);
                match r {
                    Ok(id) => {
                        self.subscribes.insert(id, (reply, now));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Request(e)));
                    }
                }
            }
            Command::Unsubscribe(filters, reply) => {
                let r = self
                    .core()
                    .session
                    .unsubscribe(now, filters, Properties::new());
                match r {
                    Ok(id) => {
                        self.unsubscribes.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Request(e)));
                    }
                }
            }
            Command::Disconnect(reason_code, properties, reply) => {
                self.core()
                    .session
                    .disconnect_with(now, reason_code, *properties);
                self.stopping.get_or_insert_with(Vec::new).push(reply);
            }
        }
    }
}

/// An error with its causes, for logs: `connection failed: Connection refused (os error 111)`.
struct ErrorChain<'a>(&'a Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl<C: Connector> fmt::Debug for Driver<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_maximum_with_ten_percent_jitter() {
        let b = Backoff::default();
        let mut rng = 0x1234_5678_9abc_def1;
        for (attempt, base) in [
            (0, 1.0),
            (1, 2.0),
            (2, 4.0),
            (4, 16.0),
            (5, 30.0),
            (20, 30.0),
        ] {
            let d = backoff_delay(&b, attempt, &mut rng).as_secs_f64();
            assert!(
                d >= base * 0.9 - 1e-9 && d <= base * 1.1 + 1e-9,
                "{attempt}: {d}"
            );
        }
    }

    #[tokio::test]
    async fn events_are_a_stream() {
        use futures_core::Stream;

        let (tx, rx) = mpsc::channel(2);
        let mut events = Events { rx };
        tx.send(Event::Stopped(ReasonCode::BANNED)).await.unwrap();
        drop(tx);
        let first = std::future::poll_fn(|cx| Pin::new(&mut events).poll_next(cx)).await;
        assert_eq!(first, Some(Event::Stopped(ReasonCode::BANNED)));
        let end = std::future::poll_fn(|cx| Pin::new(&mut events).poll_next(cx)).await;
        assert_eq!(end, None, "ends with the driver");
    }

    #[test]
    fn jitter_varies_between_draws() {
        let b = Backoff::default();
        let mut rng = seed("a");
        let a = backoff_delay(&b, 3, &mut rng);
        let c = backoff_delay(&b, 3, &mut rng);
        assert_ne!(a, c);
    }
}
