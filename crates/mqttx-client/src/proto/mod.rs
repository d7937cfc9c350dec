//! The sans-IO client session core: bytes and `now` in; bytes, events and timeouts out.
//!
//! [`ClientSession`] holds everything an MQTT client remembers across connections (packet
//! identifiers, unacknowledged messages, subscriptions, the offline queue) and decides every
//! protocol question. It never reads a clock, never touches a socket and spawns nothing; the
//! shell in the crate root drives it, and the unit tests in `tests.rs` drive it with bytes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use mqttx_codec::{
    Auth, ConnAck, Connect, DEFAULT_MAX_PACKET_SIZE, DecodeContext, DecodeError, Decoder,
    Disconnect, EncodeContext, EncodeError, MAX_PACKET_SIZE, OwnedPacket, Packet, PacketId,
    Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck, Subscribe,
    SubscribeFilter, UnsubAck, Unsubscribe, Will, encode, encoded_len,
};

mod state;
#[cfg(test)]
mod tests;

use state::Stored;
pub use state::{SessionState, StateError};

/// The default bound of the offline / flow-control queue of QoS 1 and 2 messages.
pub const DEFAULT_MAX_QUEUED: usize = 1_000;
/// The default number of unacknowledged outbound QoS 1 and 2 messages.
pub const DEFAULT_MAX_INFLIGHT: u16 = 100;

/// What a [`ClientSession`] puts in its CONNECT, and its local limits.
///
/// ```
/// use mqttx_client::proto::SessionOptions;
/// let opts = SessionOptions::new("sensor-1");
/// assert_eq!(opts.max_packet_size, 1024 * 1024);
/// assert_eq!(opts.keep_alive.as_secs(), 60);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Protocol version (default MQTT 5.0).
    pub protocol: ProtocolVersion,
    /// Client Identifier; empty asks the server to assign one (MQTT 5.0) or gives a
    /// clean, unnamed session (3.1.1).
    pub client_id: String,
    /// Clean Start (MQTT 5.0) / Clean Session (3.1.1) of the first CONNECT (default `true`).
    /// MQTT 5.0 reconnects use Clean Start 0, so a session with an expiry interval resumes.
    pub clean_start: bool,
    /// Keep Alive (default 60 s; zero disables PINGREQ). Rounded down to seconds.
    pub keep_alive: Duration,
    /// User Name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// Will Message.
    pub will: Option<Will<'static>>,
    /// Session Expiry Interval in seconds (MQTT 5.0; default 0, absent on the wire).
    pub session_expiry_interval: u32,
    /// Receive Maximum we advertise: at most this many inbound QoS 2 messages unreleased
    /// (MQTT 5.0; default 65 535, absent on the wire).
    pub receive_maximum: u16,
    /// Topic Alias Maximum we advertise (MQTT 5.0; default 0, absent on the wire).
    pub topic_alias_maximum: u16,
    /// Largest packet accepted and sent (default 1 MiB); advertised in MQTT 5.0.
    pub max_packet_size: u32,
    /// Largest number of unacknowledged outbound QoS 1 and 2 messages (default 100); the
    /// effective window is the smaller of this and the server's Receive Maximum.
    pub max_inflight: u16,
    /// Bound of the queue of QoS 1 and 2 messages waiting for a window slot or a connection
    /// (default 1 000); a publish beyond it fails with [`PublishError::QueueFull`].
    pub max_queued: usize,
    /// Whether QoS 0 messages published while disconnected wait in the same queue (default
    /// `false`: they are refused with [`PublishError::NotConnected`]).
    pub queue_qos0: bool,
    /// Whether inbound QoS 1 and 2 messages wait for [`ClientSession::ack`] instead of being
    /// acknowledged when handed out (default `false`). Acknowledgements keep arrival order.
    pub manual_ack: bool,
    /// Most outbound Topic Aliases to use (MQTT 5.0; default 65 535): the session uses
    /// min(this, the server's Topic Alias Maximum), assigning them to topics as they are
    /// published and replacing the least recently used one when all are taken. 0 turns
    /// outbound aliases off.
    pub max_outbound_topic_aliases: u16,
    /// Further CONNECT properties (MQTT 5.0), e.g. User Properties; the fields above win.
    pub properties: Properties<'static>,
}

impl SessionOptions {
    /// Defaults for `client_id`.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            protocol: ProtocolVersion::V5,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: Duration::from_secs(60),
            username: None,
            password: None,
            will: None,
            session_expiry_interval: 0,
            receive_maximum: u16::MAX,
            topic_alias_maximum: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            queue_qos0: false,
            manual_ack: false,
            max_outbound_topic_aliases: u16::MAX,
            properties: Properties::new(),
        }
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self::new("")
    }
}

/// Why the connection ended from the session's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The server broke the protocol; the rule is named (`"[MQTT-x.y.z-n] …"`).
    Protocol {
        /// Reason code sent in the DISCONNECT (MQTT 5.0).
        code: ReasonCode,
        /// The normative statement.
        rule: &'static str,
    },
    /// A packet from the server did not decode.
    Decode(DecodeError),
    /// No PINGRESP within the Keep Alive after a PINGREQ.
    KeepAliveTimeout,
    /// Bytes arrived while no connection was being made.
    NotConnected,
}

impl SessionError {
    /// The reason code that fits the failure.
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Protocol { code, .. } => *code,
            Self::Decode(e) => e.reason_code(),
            Self::KeepAliveTimeout => ReasonCode::KEEP_ALIVE_TIMEOUT,
            Self::NotConnected => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol { rule, .. } => write!(f, "protocol violation by the server: {rule}"),
            Self::Decode(e) => write!(f, "undecodable packet from the server: {e}"),
            Self::KeepAliveTimeout => f.write_str("no PINGRESP within the keep alive"),
            Self::NotConnected => f.write_str("bytes received while not connected"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`ClientSession::publish`] refused a message. The caller's mistakes and full buffers,
/// never a peer fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// QoS 0 while not connected: it would be lost anyway.
    NotConnected,
    /// The queue of waiting QoS 1 and 2 messages holds `max_queued` already.
    QueueFull,
    /// Every packet identifier is in use.
    NoPacketId,
    /// The packet is larger than the Maximum Packet Size in force.
    PacketTooLarge,
    /// QoS above the server's Maximum QoS (MQTT 5.0 CONNACK).
    QoSNotSupported,
    /// RETAIN while the server's Retain Available is 0 (MQTT 5.0 CONNACK).
    RetainNotSupported,
    /// The packet does not encode (invalid topic, property not allowed…).
    Encode(EncodeError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => f.write_str("not connected (QoS 0 is not queued)"),
            Self::QueueFull => f.write_str("publish queue full"),
            Self::NoPacketId => f.write_str("no packet identifier free"),
            Self::PacketTooLarge => f.write_str("packet larger than the maximum packet size"),
            Self::QoSNotSupported => f.write_str("QoS above the server's maximum"),
            Self::RetainNotSupported => f.write_str("retain not available on the server"),
            Self::Encode(e) => write!(f, "invalid packet: {e}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`ClientSession::subscribe`] or [`ClientSession::unsubscribe`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No filter given.
    Empty,
    /// Every packet identifier is in use.
    NoPacketId,
    /// The packet does not encode (invalid filter, too large…).
    Encode(EncodeError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no topic filter"),
            Self::NoPacketId => f.write_str("no packet identifier free"),
            Self::Encode(e) => write!(f, "invalid packet: {e}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether connecting again may help after a CONNACK with `code`: `false` for the codes
/// issue 5 lists (MQTT 5.0 0x84 Unsupported Protocol Version, 0x85 Client Identifier not
/// valid, 0x86 Bad User Name or Password, 0x87 Not authorized, 0x8A Banned, 0x8C Bad
/// authentication method; the 3.1.1 return codes 1, 2, 4 and 5 decode to 0x84–0x87).
pub const fn connack_is_retryable(code: ReasonCode) -> bool {
    !matches!(code.as_u8(), 0x84 | 0x85 | 0x86 | 0x87 | 0x8A | 0x8C)
}

/// The outcome for one filter of a SUBSCRIBE: the granted QoS or the failure reason code.
pub type SubscribeResult = Result<QoS, ReasonCode>;

/// What the session tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// CONNACK with reason 0x00.
    Connected {
        /// Session Present.
        session_present: bool,
        /// The client identifier in use (the server's Assigned Client Identifier, if any).
        client_id: String,
        /// The CONNACK's properties (MQTT 5.0).
        properties: Box<Properties<'static>>,
    },
    /// CONNACK with a failure code. `retryable` is false for the codes the issue lists
    /// (v5 0x84/0x85/0x86/0x87/0x8A/0x8C, 3.1.1 return codes 1, 2, 4 and 5).
    ConnectionRefused {
        /// The reason code (3.1.1 return codes mapped to their MQTT 5.0 equivalents).
        reason_code: ReasonCode,
        /// Whether connecting again may help.
        retryable: bool,
    },
    /// An application message from the server, with its Topic Alias resolved.
    Message(Publish<'static>),
    /// A QoS 1 or 2 publish finished: PUBACK, PUBCOMP, or a PUBREC with a failure code.
    PublishComplete {
        /// Its packet identifier, as returned by [`ClientSession::publish`].
        packet_id: PacketId,
        /// The server's reason code (0x00 in 3.1.1).
        reason_code: ReasonCode,
    },
    /// SUBACK for a [`ClientSession::subscribe`].
    Subscribed {
        /// Packet identifier returned by `subscribe`.
        packet_id: PacketId,
        /// One result per filter, in order.
        results: Vec<SubscribeResult>,
    },
    /// UNSUBACK for a [`ClientSession::unsubscribe`].
    Unsubscribed {
        /// Packet identifier returned by `unsubscribe`.
        packet_id: PacketId,
        /// One reason code per filter (all 0x00 in 3.1.1).
        results: Vec<ReasonCode>,
    },
    /// SUBACK for the automatic re-subscription after a reconnect without a session.
    Resubscribed {
        /// The filters and their results.
        results: Vec<(String, SubscribeResult)>,
    },
    /// The server sent DISCONNECT (MQTT 5.0); the driver closes the connection.
    Disconnected {
        /// Its reason code.
        reason_code: ReasonCode,
        /// Its Reason String, if any.
        reason_string: Option<String>,
    },
    /// The server continues an MQTT 5.0 enhanced authentication (AUTH 0x18), during the
    /// CONNECT exchange or a re-authentication: answer with
    /// [`ClientSession::auth_continue`].
    AuthChallenge {
        /// The Authentication Method (the one of our CONNECT).
        method: String,
        /// The server's Authentication Data.
        data: Vec<u8>,
    },
    /// A re-authentication started with [`ClientSession::reauthenticate`] succeeded (AUTH 0x00).
    Reauthenticated,
    /// The session gave up on the connection (protocol violation, keep-alive timeout); a
    /// DISCONNECT, if any, is in the transmit buffer. The driver closes the connection.
    ConnectionLost(SessionError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Disconnected,
    Connecting,
    Connected,
}

#[derive(Clone, Debug)]
enum Outgoing {
    /// Sent (or to be sent) PUBLISH, not yet acknowledged.
    Publish(Publish<'static>),
    /// PUBREC received, PUBREL sent, waiting for PUBCOMP.
    PubRel(PacketId),
}

impl Outgoing {
    fn packet_id(&self) -> Option<PacketId> {
        match self {
            Self::Publish(p) => p.packet_id,
            Self::PubRel(id) => Some(*id),
        }
    }
}

#[derive(Clone, Debug)]
enum RequestKind {
    Subscribe {
        filters: Vec<SubscribeFilter>,
        subscription_id: Option<u32>,
    },
    Resubscribe {
        filters: Vec<SubscribeFilter>,
    },
    Unsubscribe {
        filters: Vec<String>,
    },
}

#[derive(Clone, Debug)]
struct Request {
    id: PacketId,
    kind: RequestKind,
    packet: OwnedPacket,
}

/// An acknowledgement that leaves when its message is handed out by [`ClientSession::poll_event`].
#[derive(Clone, Copy, Debug)]
enum Ack {
    PubAck(PacketId),
    PubRec(PacketId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inbound2 {
    /// The message is waiting in the event queue.
    Queued,
    /// The message was handed out; PUBREC sent or owed.
    HandedOut,
}

/// The state of one MQTT client session, across any number of connections.
///
/// # Calling order
///
/// Like quinn's `Connection`, the session is driven by three kinds of calls:
///
/// - **inputs**: [`handle_bytes`](Self::handle_bytes) with what the transport read,
///   [`handle_timeout`](Self::handle_timeout) when the instant from
///   [`poll_timeout`](Self::poll_timeout) has passed, and
///   [`handle_connection_closed`](Self::handle_connection_closed) when the transport ends;
/// - **commands**: [`connect`](Self::connect) (on every new transport connection),
///   [`publish`](Self::publish), [`subscribe`](Self::subscribe),
///   [`unsubscribe`](Self::unsubscribe), [`disconnect`](Self::disconnect);
/// - **outputs**: after every input or command, drain [`poll_event`](Self::poll_event) until
///   `None`, then [`poll_transmit`](Self::poll_transmit) until `false` and write the bytes,
///   then re-arm one timer from [`poll_timeout`](Self::poll_timeout).
///
/// Events are drained before transmitting because handing out an inbound QoS 1 or 2 message
/// is what queues its PUBACK or PUBREC: a message is acknowledged only once the application
/// has it. `now` must not go backwards between calls. The session reads no clock.
///
/// The crate documentation has a runnable example.
#[derive(Debug)]
pub struct ClientSession {
    options: SessionOptions,
    state: State,
    /// Incremented on every `connect`; acknowledgements carry the one they were owed on.
    generation: u64,
    /// Whether a CONNACK 0x00 was ever received: later CONNECTs use Clean Start 0 (MQTT 5.0).
    ever_connected: bool,
    /// The identifier to use on the next CONNECT (the server's assigned one once known).
    client_id: String,
    decoder: Decoder,
    transmit: Vec<u8>,
    events: VecDeque<(Event, Option<(u64, Ack)>)>,

    // Keep alive.
    keep_alive: Duration,
    last_sent: Option<Instant>,
    ping_deadline: Option<Instant>,

    // Server limits from CONNACK.
    server_receive_maximum: u16,
    server_maximum_qos: QoS,
    server_retain_available: bool,
    server_max_packet_size: u32,

    // Outbound.
    ids_in_use: HashSet<u16>,
    next_id: u16,
    inflight: VecDeque<Outgoing>,
    queued: VecDeque<Publish<'static>>,
    requests: VecDeque<Request>,
    subscriptions: Vec<(SubscribeFilter, Option<u32>)>,

    // Inbound.
    inbound_qos2: HashMap<u16, Inbound2>,
    inbound_aliases: HashMap<u16, String>,
    /// Acknowledgements handed out under `manual_ack`, in arrival order; `true` once acked.
    manual_acks: VecDeque<(u64, Ack, bool)>,

    // Outbound Topic Aliases of the current connection: topic → (alias, last use).
    outbound_aliases: HashMap<String, (u16, u64)>,
    outbound_alias_limit: u16,
    outbound_next_alias: u16,
    alias_clock: u64,
}

impl Default for ClientSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientSession {
    /// A session that has never connected.
    pub fn new() -> Self {
        let options = SessionOptions::default();
        Self {
            decoder: Decoder::new(DecodeContext::new(options.protocol)),
            client_id: String::new(),
            options,
            state: State::Disconnected,
            generation: 0,
            ever_connected: false,
            transmit: Vec::new(),
            events: VecDeque::new(),
            keep_alive: Duration::ZERO,
            last_sent: None,
            ping_deadline: None,
            server_receive_maximum: u16::MAX,
            server_maximum_qos: QoS::ExactlyOnce,
            server_retain_available: true,
            server_max_packet_size: MAX_PACKET_SIZE,
            ids_in_use: HashSet::new(),
            next_id: 0,
            inflight: VecDeque::new(),
            queued: VecDeque::new(),
            requests: VecDeque::new(),
            subscriptions: Vec::new(),
            inbound_qos2: HashMap::new(),
            inbound_aliases: HashMap::new(),
            manual_acks: VecDeque::new(),
            outbound_aliases: HashMap::new(),
            outbound_alias_limit: 0,
            outbound_next_alias: 0,
            alias_clock: 0,
        }
    }

    // ----- queries -----

    /// Whether a CONNACK 0x00 was received on the current connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The protocol version in use.
    pub fn protocol(&self) -> ProtocolVersion {
        self.options.protocol
    }

    /// Unacknowledged outbound QoS 1 and 2 messages (PUBLISH or PUBREL stage).
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// QoS 1 and 2 messages waiting for a window slot or a connection.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// The filters the server acknowledged and that were not unsubscribed since.
    pub fn subscriptions(&self) -> impl Iterator<Item = &SubscribeFilter> + '_ {
        self.subscriptions.iter().map(|(f, _)| f)
    }

    /// What must outlive the process: messages in flight and queued (in order),
    /// subscriptions, inbound QoS 2 identifiers awaiting PUBREL. Save it (its
    /// [`encode`](SessionState::encode)d form) after changes; SUBSCRIBE and UNSUBSCRIBE
    /// requests still unanswered are not part of it.
    pub fn state(&self) -> SessionState {
        SessionState {
            protocol: self.options.protocol,
            inflight: self
                .inflight
                .iter()
                .map(|o| match o {
                    Outgoing::Publish(p) => Stored::Publish(p.clone()),
                    Outgoing::PubRel(id) => Stored::PubRel(*id),
                })
                .collect(),
            queued: self.queued.iter().cloned().collect(),
            subscriptions: self.subscriptions.clone(),
            inbound_qos2: self
                .inbound_qos2
                .keys()
                .filter_map(|id| PacketId::new(*id))
                .collect(),
        }
    }

    /// A session resumed from a saved [`SessionState`] (e.g. after a process restart). It
    /// counts as having connected before: the next MQTT 5.0 CONNECT uses Clean Start 0, and
    /// the CONNACK's Session Present decides between resending and re-subscribing.
    pub fn from_state(state: SessionState) -> Self {
        let mut s = Self::new();
        s.options.protocol = state.protocol;
        s.ever_connected = true;
        for stored in state.inflight {
            let (out, id) = match stored {
                Stored::Publish(p) => match p.packet_id {
                    Some(id) => (Outgoing::Publish(p), id),
                    None => continue,
                },
                Stored::PubRel(id) => (Outgoing::PubRel(id), id),
            };
            if s.ids_in_use.insert(id.get()) {
                s.inflight.push_back(out);
            }
        }
        for p in state.queued {
            if let Some(id) = p.packet_id {
                // A duplicate identifier only comes from a damaged state: keep the first.
                if !s.ids_in_use.insert(id.get()) {
                    continue;
                }
            }
            s.queued.push_back(p);
        }
        s.subscriptions = state.subscriptions;
        for id in state.inbound_qos2 {
            s.inbound_qos2.insert(id.get(), Inbound2::HandedOut);
        }
        s
    }

    // ----- commands -----

    /// Starts a connection: queues the CONNECT. Call once per new transport connection,
    /// before any bytes of it are handled. `options` replaces the previous ones; the session
    /// state (messages, subscriptions, packet identifiers) is kept.
    pub fn connect(&mut self, now: Instant, options: SessionOptions) {
        if options.client_id != self.options.client_id || !self.ever_connected {
            self.client_id = options.client_id.clone();
        }
        self.options = options;
        self.reset_connection();
        self.generation += 1;
        self.state = State::Connecting;
        self.decoder = Decoder::new(
            DecodeContext::new(self.options.protocol)
                .with_max_packet_size(self.options.max_packet_size),
        );
        let v5 = self.options.protocol.is_v5();
        let mut connect = Connect::new(self.options.protocol, self.client_id.clone());
        // A reconnect of an MQTT 5.0 session resumes it (if the server kept it); 3.1.1 keeps
        // the caller's Clean Session, since Clean Session 0 there means "forever".
        connect.clean_start = if v5 && self.ever_connected {
            false
        } else {
            self.options.clean_start
        };
        connect.keep_alive = u16::try_from(self.options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.username = self.options.username.clone().map(Into::into);
        connect.password = self.options.password.clone().map(Into::into);
        connect.will = self.options.will.clone().map(Box::new);
        if v5 {
            let mut props = self.options.properties.clone();
            if self.options.session_expiry_interval != 0 {
                props.session_expiry_interval = Some(self.options.session_expiry_interval);
            }
            if self.options.receive_maximum != u16::MAX {
                props.receive_maximum = Some(self.options.receive_maximum.max(1));
            }
            if self.options.topic_alias_maximum != 0 {
                props.topic_alias_maximum = Some(self.options.topic_alias_maximum);
            }
            if self.options.max_packet_size < MAX_PACKET_SIZE {
                props.maximum_packet_size = Some(self.options.max_packet_size);
            }
            connect.properties = props.into();
        }
        self.send(now, &Packet::Connect(connect));
    }

    /// Publishes `msg` (its `packet_id` and `dup` are set by the session).
    ///
    /// QoS 0 goes out at once if connected and is refused otherwise. QoS 1 and 2 get a packet
    /// identifier, returned, and go out at once if connected and within the window
    /// (min(server Receive Maximum, `max_inflight`)); otherwise they wait in the bounded queue
    /// and go out in order as acknowledgements free the window or a connection comes up.
    pub fn publish(
        &mut self,
        now: Instant,
        mut msg: Publish<'static>,
    ) -> Result<Option<PacketId>, PublishError> {
        msg.dup = false;
        msg.packet_id = None;
        if msg.qos != QoS::AtMostOnce {
            // A placeholder identifier, so the size check counts its two bytes.
            msg.packet_id = PacketId::new(1);
        }
        if self.state == State::Connected {
            // [MQTT-3.2.2-11] "If a Client receives a Maximum QoS from a Server, it MUST NOT
            // send PUBLISH packets at a QoS level exceeding the Maximum QoS level specified."
            if msg.qos.as_u8() > self.server_maximum_qos.as_u8() {
                return Err(PublishError::QoSNotSupported);
            }
            // [MQTT-3.2.2-14] "A Client receiving Retain Available set to 0 from the Server
            // MUST NOT send a PUBLISH packet with the RETAIN flag set to 1."
            if msg.retain && !self.server_retain_available {
                return Err(PublishError::RetainNotSupported);
            }
        }
        let limit = self.outbound_limit();
        let cx = EncodeContext::new(self.options.protocol).with_max_packet_size(limit);
        match encoded_len(&Packet::Publish(view(&msg)), &cx) {
            Ok(_) => {}
            Err(EncodeError::PacketTooLarge { .. }) => return Err(PublishError::PacketTooLarge),
            Err(e) => return Err(PublishError::Encode(e)),
        }
        if msg.qos == QoS::AtMostOnce {
            if self.state == State::Connected && self.queued.is_empty() {
                self.send_publish(now, msg);
                return Ok(None);
            }
            if !self.options.queue_qos0 {
                return Err(PublishError::NotConnected);
            }
            if self.queued.len() >= self.options.max_queued {
                return Err(PublishError::QueueFull);
            }
            msg.packet_id = None;
            self.queued.push_back(msg);
            return Ok(None);
        }
        if self.queued.len() >= self.options.max_queued && !self.window_open() {
            return Err(PublishError::QueueFull);
        }
        let id = self.allocate_id().ok_or(PublishError::NoPacketId)?;
        msg.packet_id = Some(id);
        self.queued.push_back(msg);
        self.flush_queue(now);
        Ok(Some(id))
    }

    /// Subscribes to `filters`. The SUBSCRIBE goes out now if connected, else on the next
    /// CONNACK; [`Event::Subscribed`] carries the results. `properties` may hold a
    /// Subscription Identifier and User Properties (MQTT 5.0).
    pub fn subscribe(
        &mut self,
        now: Instant,
        filters: Vec<SubscribeFilter>,
        properties: Properties<'static>,
    ) -> Result<PacketId, RequestError> {
        if filters.is_empty() {
            return Err(RequestError::Empty);
        }
        let id = self.allocate_id().ok_or(RequestError::NoPacketId)?;
        let subscription_id = properties.subscription_identifiers.iter().next();
        let packet = Packet::Subscribe(Subscribe {
            packet_id: id,
            properties: properties.into(),
            filters: filters.clone().into(),
        });
        let kind = RequestKind::Subscribe {
            filters,
            subscription_id,
        };
        self.start_request(now, id, kind, packet)
    }

    /// Unsubscribes from `filters`; [`Event::Unsubscribed`] carries the results.
    pub fn unsubscribe(
        &mut self,
        now: Instant,
        filters: Vec<String>,
        properties: Properties<'static>,
    ) -> Result<PacketId, RequestError> {
        if filters.is_empty() {
            return Err(RequestError::Empty);
        }
        let id = self.allocate_id().ok_or(RequestError::NoPacketId)?;
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            properties: properties.into(),
            filters: filters.clone().into(),
        });
        self.start_request(now, id, RequestKind::Unsubscribe { filters }, packet)
    }

    /// Queues a DISCONNECT (if connected) and ends the connection; the session state is kept
    /// for a later [`connect`](Self::connect).
    pub fn disconnect(&mut self, now: Instant, reason_code: ReasonCode) {
        self.disconnect_with(now, reason_code, Properties::new());
    }

    /// [`disconnect`](Self::disconnect) with DISCONNECT properties (MQTT 5.0: Session Expiry
    /// Interval, Reason String, User Properties). Reason code 0x04 asks the server to
    /// publish the Will.
    pub fn disconnect_with(
        &mut self,
        now: Instant,
        reason_code: ReasonCode,
        properties: Properties<'static>,
    ) {
        if self.state != State::Disconnected {
            self.send(
                now,
                &Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: properties.into(),
                }),
            );
        }
        self.state = State::Disconnected;
        self.ping_deadline = None;
    }

    // ----- inputs -----

    /// Feeds bytes read from the transport. On a protocol violation the session queues a
    /// DISCONNECT with the fitting reason code (MQTT 5.0), emits [`Event::ConnectionLost`],
    /// stops accepting bytes, and returns the error; the driver then closes the transport.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), SessionError> {
        if self.state == State::Disconnected {
            return Err(SessionError::NotConnected);
        }
        self.decoder.feed(bytes);
        loop {
            let packet = match self.decoder.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(now, SessionError::Decode(e))),
            };
            if let Err(e) = self.handle_packet(now, packet) {
                return Err(self.fail(now, e));
            }
            if self.state == State::Disconnected {
                return Ok(());
            }
        }
    }

    /// Handles the passing of time: sends PINGREQ when the connection was idle for the Keep
    /// Alive, and gives up on it when no PINGRESP came within another Keep Alive.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Connected || self.keep_alive.is_zero() {
            return;
        }
        if let Some(deadline) = self.ping_deadline {
            if now >= deadline {
                // [MQTT-3.1.2-24] analogue on the client side: "If a Client does not receive
                // a PINGRESP packet within a reasonable amount of time after it has sent a
                // PINGREQ, it SHOULD close the Network Connection to the Server."
                self.fail(now, SessionError::KeepAliveTimeout);
            }
            return;
        }
        if let Some(last) = self.last_sent {
            if now >= last + self.keep_alive {
                // [MQTT-3.1.2-20] "... it is the responsibility of the Client to ensure that
                // the interval between MQTT Control Packets being sent does not exceed the
                // Keep Alive value. If Keep Alive is non-zero and in the absence of sending
                // any other MQTT Control Packets, the Client MUST send a PINGREQ packet."
                self.send(now, &Packet::PingReq);
                self.ping_deadline = Some(now + self.keep_alive);
            }
        }
    }

    /// The transport closed (or the driver closed it). Unacknowledged messages and requests
    /// are kept for the next [`connect`](Self::connect).
    pub fn handle_connection_closed(&mut self) {
        self.state = State::Disconnected;
        self.reset_connection();
    }

    // ----- outputs -----

    /// How many bytes wait for [`poll_transmit`](Self::poll_transmit).
    pub fn unsent(&self) -> usize {
        self.transmit.len()
    }

    /// Appends the bytes to send to `out`; `false` when there is nothing.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.transmit.is_empty() {
            return false;
        }
        out.append(&mut self.transmit);
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Connected || self.keep_alive.is_zero() {
            return None;
        }
        match self.ping_deadline {
            Some(d) => Some(d),
            None => self.last_sent.map(|t| t + self.keep_alive),
        }
    }

    /// The next event. Handing out an inbound QoS 1 or 2 message queues its PUBACK or PUBREC
    /// (if the connection it came on is still up), unless `manual_ack` is set: then
    /// [`ack`](Self::ack) does.
    pub fn poll_event(&mut self) -> Option<Event> {
        let (event, ack) = self.events.pop_front()?;
        if let Some((generation, ack)) = ack {
            if self.options.manual_ack {
                self.manual_acks.push_back((generation, ack, false));
            } else {
                self.release_ack(generation, ack);
            }
        }
        Some(event)
    }

    /// Acknowledges an inbound QoS 1 or 2 message handed out by [`poll_event`](Self::poll_event)
    /// when `manual_ack` is set. Acknowledgements still go out in the order the messages
    /// arrived: an early `ack` waits for those before it. `false` if no message with this
    /// identifier awaits one.
    pub fn ack(&mut self, packet_id: PacketId) -> bool {
        let Some(entry) = self.manual_acks.iter_mut().find(|(_, a, done)| {
            !*done && matches!(a, Ack::PubAck(id) | Ack::PubRec(id) if *id == packet_id)
        }) else {
            return false;
        };
        entry.2 = true;
        while self.manual_acks.front().is_some_and(|(_, _, done)| *done) {
            if let Some((generation, ack, _)) = self.manual_acks.pop_front() {
                self.release_ack(generation, ack);
            }
        }
        true
    }

    /// Sends an acknowledgement owed for a message the application has.
    fn release_ack(&mut self, generation: u64, ack: Ack) {
        let connected = self.state == State::Connected;
        let now = self.last_sent;
        match ack {
            Ack::PubAck(id) => {
                // A PUBACK owed on an earlier connection is not sent: the server delivers
                // the message again, and that copy is acknowledged.
                if generation == self.generation && connected {
                    self.send_untimed(now, &Packet::PubAck(PubResponse::new(id)));
                }
            }
            Ack::PubRec(id) => {
                self.inbound_qos2.insert(id.get(), Inbound2::HandedOut);
                // PUBREC is owed for the identifier on whatever connection is up now: a
                // server that resent the PUBLISH waits for it.
                if connected {
                    self.send_untimed(now, &Packet::PubRec(PubResponse::new(id)));
                }
            }
        }
    }

    // ----- internals -----

    fn reset_connection(&mut self) {
        self.transmit.clear();
        self.ping_deadline = None;
        self.last_sent = None;
        self.keep_alive = Duration::ZERO;
        self.inbound_aliases.clear();
        // [MQTT-3.3.2-7] "A sender MUST NOT carry forward any Topic Alias mappings from one
        // Network Connection to another".
        self.outbound_aliases.clear();
        self.outbound_alias_limit = 0;
        self.outbound_next_alias = 0;
        self.server_receive_maximum = u16::MAX;
        self.server_maximum_qos = QoS::ExactlyOnce;
        self.server_retain_available = true;
        self.server_max_packet_size = MAX_PACKET_SIZE;
    }

    fn outbound_limit(&self) -> u32 {
        self.options
            .max_packet_size
            .min(self.server_max_packet_size)
    }

    fn window(&self) -> usize {
        usize::from(
            self.options
                .max_inflight
                .min(self.server_receive_maximum)
                .max(1),
        )
    }

    fn window_open(&self) -> bool {
        self.state == State::Connected
            && self.queued.is_empty()
            && self.inflight.len() < self.window()
    }

    fn allocate_id(&mut self) -> Option<PacketId> {
        // [MQTT-2.2.1-3] "Each time a Client sends a new SUBSCRIBE, UNSUBSCRIBE, or PUBLISH
        // (where QoS > 0) MQTT Control Packet it MUST assign it a non-zero Packet Identifier
        // that is currently unused."
        if self.ids_in_use.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if self.ids_in_use.insert(self.next_id) {
                return PacketId::new(self.next_id);
            }
        }
    }

    fn release_id(&mut self, id: PacketId) {
        self.ids_in_use.remove(&id.get());
    }

    fn send(&mut self, now: Instant, packet: &Packet<'_>) {
        self.send_untimed(Some(now), packet);
    }

    fn send_untimed(&mut self, now: Option<Instant>, packet: &Packet<'_>) -> bool {
        let cx =
            EncodeContext::new(self.options.protocol).with_max_packet_size(self.outbound_limit());
        // Every packet is checked on the way in (publish, subscribe) or built by the session
        // from valid parts; an encode failure here is dropped rather than sent half-written.
        let start = self.transmit.len();
        if encode(packet, &cx, &mut self.transmit).is_err() {
            self.transmit.truncate(start);
            return false;
        }
        if let Some(now) = now {
            self.last_sent = Some(now);
        }
        true
    }

    /// Sends a PUBLISH, with an outbound Topic Alias when the server allows them.
    fn send_publish(&mut self, now: Instant, mut p: Publish<'_>) {
        // Queued before the CONNACK told the limits: the RETAIN flag is dropped rather than
        // breaking [MQTT-3.2.2-14]. (A QoS above the maximum keeps its QoS: the server's
        // answer, 0x9B QoS not supported, reaches the publisher's handle.)
        if !self.server_retain_available {
            p.retain = false;
        }
        if self.outbound_alias_limit == 0
            || p.topic.is_empty()
            || p.properties.topic_alias.is_some()
        {
            self.send(now, &Packet::Publish(p));
            return;
        }
        self.alias_clock += 1;
        let clock = self.alias_clock;
        let (alias, known) = match self.outbound_aliases.get_mut(p.topic.as_ref()) {
            Some((alias, used)) => {
                *used = clock;
                (*alias, true)
            }
            None => {
                let next = self.outbound_next_alias.saturating_add(1);
                let alias = if next <= self.outbound_alias_limit {
                    self.outbound_next_alias = next;
                    next
                } else {
                    // Least recently used replacement; its topic is sent with the new mapping.
                    let lru = self
                        .outbound_aliases
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(t, (a, _))| (t.clone(), *a));
                    match lru {
                        Some((old, a)) => {
                            self.outbound_aliases.remove(&old);
                            a
                        }
                        None => {
                            self.send(now, &Packet::Publish(p));
                            return;
                        }
                    }
                };
                self.outbound_aliases
                    .insert(p.topic.to_string(), (alias, clock));
                (alias, false)
            }
        };
        // MQTT 5.0 §3.3.2.3.4: a known alias goes with a zero-length Topic Name; a new
        // mapping carries both. [MQTT-3.3.2-9] the alias is within the server's maximum.
        let plain = p.clone();
        p.properties.topic_alias = Some(alias);
        if known {
            p.topic = "".into();
        }
        if !self.send_untimed(Some(now), &Packet::Publish(p)) {
            // Three property bytes more than checked at publish time: send it unaliased
            // (the size check passed for that form).
            if !known {
                self.outbound_aliases.retain(|_, (a, _)| *a != alias);
            }
            self.send(now, &Packet::Publish(plain));
        }
    }

    fn start_request(
        &mut self,
        now: Instant,
        id: PacketId,
        kind: RequestKind,
        packet: OwnedPacket,
    ) -> Result<PacketId, RequestError> {
        let cx =
            EncodeContext::new(self.options.protocol).with_max_packet_size(self.outbound_limit());
        if let Err(e) = encoded_len(&packet, &cx) {
            self.release_id(id);
            return Err(RequestError::Encode(e));
        }
        if self.state == State::Connected {
            self.send(now, &packet);
        }
        self.requests.push_back(Request { id, kind, packet });
        Ok(id)
    }

    /// Moves queued messages into the window and sends them, in order.
    fn flush_queue(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        while let Some(front) = self.queued.front() {
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= self.window() {
                break;
            }
            let Some(msg) = self.queued.pop_front() else {
                break;
            };
            // The message is encoded from a borrowed view: topic and payload are copied once,
            // into the transmit buffer.
            self.send_publish(now, view(&msg));
            if msg.qos != QoS::AtMostOnce {
                self.inflight.push_back(Outgoing::Publish(msg));
            }
        }
    }

    fn fail(&mut self, now: Instant, error: SessionError) -> SessionError {
        if self.options.protocol.is_v5() && self.state == State::Connected {
            // [MQTT-4.13.1-1] "When a Server detects a Malformed Packet or Protocol Error, and
            // a Reason Code is given in the specification, it MUST close the Network
            // Connection"; the client does the same, after a DISCONNECT with that code.
            let code = match error {
                SessionError::Protocol { code, .. } => code,
                SessionError::Decode(e) => e.reason_code(),
                SessionError::KeepAliveTimeout => ReasonCode::KEEP_ALIVE_TIMEOUT,
                SessionError::NotConnected => ReasonCode::PROTOCOL_ERROR,
            };
            if code.as_u8() >= 0x80 && code != ReasonCode::KEEP_ALIVE_TIMEOUT {
                self.send(
                    now,
                    &Packet::Disconnect(Disconnect {
                        reason_code: code,
                        properties: Default::default(),
                    }),
                );
            }
        }
        self.state = State::Disconnected;
        self.ping_deadline = None;
        self.events.push_back((Event::ConnectionLost(error), None));
        error
    }

    fn handle_packet(&mut self, now: Instant, packet: OwnedPacket) -> Result<(), SessionError> {
        if self.state == State::Connecting {
            return match packet {
                Packet::ConnAck(ack) => self.handle_connack(now, ack),
                Packet::Auth(a) => self.handle_auth(a),
                // [MQTT-3.2.0-1] "The Server MUST send a CONNACK ... The first packet sent from
                // the Server to the Client MUST be a CONNACK Packet."
                _ => Err(protocol(
                    "[MQTT-3.2.0-1] first packet from the server is not CONNACK",
                )),
            };
        }
        match packet {
            Packet::ConnAck(_) => Err(protocol("[MQTT-3.2.0-2] second CONNACK")),
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::PubAck(r) => {
                self.complete(now, r.packet_id, QoS::AtLeastOnce, r.reason_code);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.handle_pubrec(now, r);
                Ok(())
            }
            Packet::PubRel(r) => {
                // [MQTT-4.3.3-11] "In the QoS 2 delivery protocol, the receiver ... MUST
                // respond to a PUBREL packet by sending a PUBCOMP packet containing the same
                // Packet Identifier as the PUBREL."
                let known = self.inbound_qos2.remove(&r.packet_id.get()).is_some();
                let mut comp = PubResponse::new(r.packet_id);
                if !known && self.options.protocol.is_v5() {
                    comp.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.send(now, &Packet::PubComp(comp));
                Ok(())
            }
            Packet::PubComp(r) => {
                self.complete(now, r.packet_id, QoS::ExactlyOnce, r.reason_code);
                Ok(())
            }
            Packet::SubAck(ack) => {
                self.handle_suback(now, ack);
                Ok(())
            }
            Packet::UnsubAck(ack) => {
                self.handle_unsuback(now, ack);
                Ok(())
            }
            Packet::PingResp => {
                self.ping_deadline = None;
                Ok(())
            }
            Packet::Disconnect(d) => {
                let reason_string = d.properties.reason_string.as_deref().map(String::from);
                self.state = State::Disconnected;
                self.ping_deadline = None;
                self.events.push_back((
                    Event::Disconnected {
                        reason_code: d.reason_code,
                        reason_string,
                    },
                    None,
                ));
                Ok(())
            }
            Packet::Auth(a) => self.handle_auth(a),
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => Err(protocol("[MQTT-2.1.3] packet a server never sends")),
        }
    }

    fn auth_method(&self) -> Option<&str> {
        self.options.properties.authentication_method.as_deref()
    }

    fn handle_auth(&mut self, a: Auth<'static>) -> Result<(), SessionError> {
        // [MQTT-4.12.0-6] "If the Client does not include an Authentication Method in the
        // CONNECT, the Server MUST NOT send an AUTH packet"; [MQTT-4.12.0-5] the method in
        // AUTH is the one of the CONNECT.
        let Some(ours) = self.auth_method() else {
            return Err(protocol(
                "[MQTT-4.12.0-6] AUTH without an Authentication Method in CONNECT",
            ));
        };
        if a.properties.authentication_method.as_deref() != Some(ours) {
            return Err(protocol(
                "[MQTT-4.12.0-5] AUTH with another Authentication Method",
            ));
        }
        let method = ours.to_owned();
        let data = a
            .properties
            .authentication_data
            .as_deref()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        match a.reason_code.as_u8() {
            0x18 => self
                .events
                .push_back((Event::AuthChallenge { method, data }, None)),
            // Success ends a re-authentication; during CONNECT success comes as CONNACK.
            0x00 if self.state == State::Connected => {
                self.events.push_back((Event::Reauthenticated, None));
            }
            _ => return Err(protocol("[MQTT-3.15.2-1] AUTH reason code out of place")),
        }
        Ok(())
    }

    /// Answers an [`Event::AuthChallenge`] with AUTH 0x18 (Continue authentication) and our
    /// Authentication Data. Ignored without an Authentication Method or a connection.
    pub fn auth_continue(&mut self, now: Instant, data: Vec<u8>) {
        self.send_auth(now, ReasonCode::CONTINUE_AUTHENTICATION, data);
    }

    /// Starts a re-authentication (AUTH 0x19) with the CONNECT's Authentication Method;
    /// [`Event::AuthChallenge`] or [`Event::Reauthenticated`] follow. Only once connected.
    pub fn reauthenticate(&mut self, now: Instant, data: Vec<u8>) {
        if self.state == State::Connected {
            self.send_auth(now, ReasonCode::RE_AUTHENTICATE, data);
        }
    }

    fn send_auth(&mut self, now: Instant, reason_code: ReasonCode, data: Vec<u8>) {
        let Some(method) = self.auth_method().map(str::to_owned) else {
            return;
        };
        if self.state == State::Disconnected || !self.options.protocol.is_v5() {
            return;
        }
        let mut props = Properties::new();
        props.authentication_method = Some(method.into());
        props.authentication_data = Some(data.into());
        self.send(
            now,
            &Packet::Auth(Auth {
                reason_code,
                properties: props.into(),
            }),
        );
    }

    fn handle_connack(&mut self, now: Instant, ack: ConnAck<'static>) -> Result<(), SessionError> {
        if ack.reason_code.is_error() || ack.reason_code != ReasonCode::SUCCESS {
            let retryable = connack_is_retryable(ack.reason_code);
            self.state = State::Disconnected;
            self.events.push_back((
                Event::ConnectionRefused {
                    reason_code: ack.reason_code,
                    retryable,
                },
                None,
            ));
            return Ok(());
        }
        let had_state = !self.inflight.is_empty();
        if ack.session_present && !self.ever_connected && self.options.clean_start {
            // [MQTT-3.2.2-4] "If the Client does not have Session State and receives Session
            // Present set to 1 it MUST close the Network Connection."
            return Err(protocol(
                "[MQTT-3.2.2-4] Session Present 1 in answer to Clean Start 1",
            ));
        }
        self.state = State::Connected;
        self.ever_connected = true;
        let props: Properties<'static> = ack.properties.as_option().cloned().unwrap_or_default();
        if let Some(id) = props.assigned_client_identifier.as_deref() {
            // MQTT 5.0 §3.2.2.3.7: the Assigned Client Identifier is used from now on.
            self.client_id = id.to_owned();
        }
        self.keep_alive = match props.server_keep_alive {
            // [MQTT-3.2.2-21] "If the Server sends a Server Keep Alive on the CONNACK packet,
            // the Client MUST use this value instead of the Keep Alive value the Client sent
            // on CONNECT."
            Some(secs) => Duration::from_secs(u64::from(secs)),
            None => Duration::from_secs(self.options.keep_alive.as_secs().min(u64::from(u16::MAX))),
        };
        // Absent Receive Maximum means 65 535 (MQTT 5.0 §3.2.2.3.3).
        self.server_receive_maximum = props.receive_maximum.unwrap_or(u16::MAX).max(1);
        self.server_maximum_qos = props.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        self.server_retain_available = props.retain_available.unwrap_or(true);
        self.server_max_packet_size = props.maximum_packet_size.unwrap_or(MAX_PACKET_SIZE);
        // Absent Topic Alias Maximum means 0: no aliases (MQTT 5.0 §3.2.2.3.8).
        self.outbound_alias_limit = props
            .topic_alias_maximum
            .unwrap_or(0)
            .min(self.options.max_outbound_topic_aliases);
        self.last_sent = Some(now);
        self.events.push_back((
            Event::Connected {
                session_present: ack.session_present,
                client_id: self.client_id.clone(),
                properties: Box::new(props),
            },
            None,
        ));

        if ack.session_present {
            // [MQTT-4.4.0-1] "When a Client reconnects with Clean Start set to 0 and a session
            // is present, both the Client and Server MUST resend any unacknowledged PUBLISH
            // packets (where QoS > 0) and PUBREL packets using their original Packet
            // Identifiers." [MQTT-4.4.0-2] ... "it MUST set the DUP flag".
            let resend: Vec<Outgoing> = self.inflight.iter().cloned().collect();
            for out in resend {
                match out {
                    Outgoing::Publish(mut p) => {
                        p.dup = true;
                        self.send_publish(now, p);
                    }
                    Outgoing::PubRel(id) => self.send(now, &Packet::PubRel(PubResponse::new(id))),
                }
            }
            for out in self.inflight.iter_mut() {
                if let Outgoing::Publish(p) = out {
                    p.dup = true;
                }
            }
        } else if had_state {
            // The server has no session: unacknowledged messages are published again as new
            // (DUP 0) so none is lost; one past PUBREC was received by the server already and
            // completes here.
            let old: Vec<Outgoing> = self.inflight.drain(..).collect();
            let mut again = Vec::new();
            for out in old {
                match out {
                    Outgoing::Publish(mut p) => {
                        p.dup = false;
                        again.push(p);
                    }
                    Outgoing::PubRel(id) => {
                        self.release_id(id);
                        self.events.push_back((
                            Event::PublishComplete {
                                packet_id: id,
                                reason_code: ReasonCode::SUCCESS,
                            },
                            None,
                        ));
                    }
                }
            }
            for p in again.into_iter().rev() {
                self.queued.push_front(p);
            }
        }
        if !ack.session_present {
            // The server has no session: no PUBREL will come for the QoS 2 messages it sent
            // before, and their identifiers may be reused for new ones.
            self.inbound_qos2.clear();
            self.resubscribe(now);
        }
        // Requests that were never answered go out again, in order.
        let pending: Vec<OwnedPacket> = self
            .requests
            .iter()
            .filter(|r| !matches!(r.kind, RequestKind::Resubscribe { .. }))
            .map(|r| r.packet.clone())
            .collect();
        for packet in pending {
            self.send(now, &packet);
        }
        self.flush_queue(now);
        Ok(())
    }

    /// Sends one SUBSCRIBE per Subscription Identifier for everything still subscribed, so
    /// the identifiers survive (MQTT 5.0 §3.8.2.1.2: one identifier per SUBSCRIBE).
    fn resubscribe(&mut self, now: Instant) {
        // Drop answers owed to earlier resubscriptions: their SUBACK will never come.
        let stale: Vec<PacketId> = self
            .requests
            .iter()
            .filter(|r| matches!(r.kind, RequestKind::Resubscribe { .. }))
            .map(|r| r.id)
            .collect();
        self.requests
            .retain(|r| !matches!(r.kind, RequestKind::Resubscribe { .. }));
        for id in stale {
            self.release_id(id);
        }
        let mut groups: Vec<(Option<u32>, Vec<SubscribeFilter>)> = Vec::new();
        for (filter, sub_id) in &self.subscriptions {
            match groups.iter_mut().find(|(g, _)| g == sub_id) {
                Some((_, filters)) => filters.push(filter.clone()),
                None => groups.push((*sub_id, vec![filter.clone()])),
            }
        }
        for (sub_id, filters) in groups {
            let Some(id) = self.allocate_id() else {
                return;
            };
            let mut props = Properties::new();
            if let Some(s) = sub_id {
                props.subscription_identifiers.push(s);
            }
            let packet = Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: props.into(),
                filters: filters.clone().into(),
            });
            self.send(now, &packet);
            self.requests.push_back(Request {
                id,
                kind: RequestKind::Resubscribe { filters },
                packet,
            });
        }
    }

    fn handle_publish(
        &mut self,
        now: Instant,
        mut p: Publish<'static>,
    ) -> Result<(), SessionError> {
        if let Some(alias) = p.properties.topic_alias {
            // [MQTT-3.3.2-8] "A receiver MUST NOT carry forward any Topic Alias mappings from
            // one Network Connection to another"; [MQTT-3.3.2-10] alias 0 or above the
            // Topic Alias Maximum the Client sent is a Protocol Error (0x94).
            if alias == 0 || alias > self.options.topic_alias_maximum {
                return Err(SessionError::Protocol {
                    code: ReasonCode::TOPIC_ALIAS_INVALID,
                    rule: "[MQTT-3.3.2-10] Topic Alias 0 or above our Topic Alias Maximum",
                });
            }
            if p.topic.is_empty() {
                match self.inbound_aliases.get(&alias) {
                    Some(topic) => p.topic = topic.clone().into(),
                    None => {
                        return Err(protocol(
                            "[MQTT-3.3.4] Topic Alias with an empty topic and no mapping",
                        ));
                    }
                }
            } else {
                self.inbound_aliases.insert(alias, p.topic.to_string());
            }
            p.properties.topic_alias = None;
        }
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => self.events.push_back((Event::Message(p), None)),
            (QoS::AtLeastOnce, Some(id)) => {
                // [MQTT-4.3.2-4] the receiver "MUST respond with a PUBACK packet containing the
                // Packet Identifier from the incoming PUBLISH packet, having accepted ownership
                // of the Application Message" — sent when the event is handed out.
                let ack = Some((self.generation, Ack::PubAck(id)));
                self.events.push_back((Event::Message(p), ack));
            }
            (QoS::ExactlyOnce, Some(id)) => match self.inbound_qos2.get(&id.get()) {
                // [MQTT-4.3.3-10] until PUBREL the receiver "MUST NOT cause duplicate messages
                // to be delivered to any onward recipients"; it answers with PUBREC again.
                Some(Inbound2::HandedOut) => {
                    self.send(now, &Packet::PubRec(PubResponse::new(id)));
                }
                Some(Inbound2::Queued) => {}
                None => {
                    let unreleased = self.inbound_qos2.len();
                    if self.options.protocol.is_v5()
                        && unreleased >= usize::from(self.options.receive_maximum.max(1))
                    {
                        // [MQTT-3.3.4-9] "The Server MUST NOT send more than Receive Maximum
                        // QoS 1 and QoS 2 PUBLISH packets for which it has not received
                        // PUBACK, PUBCOMP, or PUBREC with a Reason Code of 128 or greater."
                        return Err(SessionError::Protocol {
                            code: ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                            rule: "[MQTT-3.3.4-9] more unacknowledged QoS 2 than Receive Maximum",
                        });
                    }
                    self.inbound_qos2.insert(id.get(), Inbound2::Queued);
                    let ack = Some((self.generation, Ack::PubRec(id)));
                    self.events.push_back((Event::Message(p), ack));
                }
            },
            // The codec refuses QoS > 0 without a packet identifier ([MQTT-2.2.1-2]).
            (_, None) => return Err(protocol("[MQTT-2.2.1-2] QoS > 0 without packet id")),
        }
        Ok(())
    }

    fn handle_pubrec(&mut self, now: Instant, r: PubResponse<'static>) {
        let id = r.packet_id;
        let Some(pos) = self.inflight.iter().position(|o| o.packet_id() == Some(id)) else {
            // Unknown identifier: answer so the server can finish (MQTT 5.0 §4.3.3).
            let mut rel = PubResponse::new(id);
            if self.options.protocol.is_v5() {
                rel.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            }
            self.send(now, &Packet::PubRel(rel));
            return;
        };
        if r.reason_code.is_error() {
            // [MQTT-4.3.3] a PUBREC with a Reason Code of 0x80 or greater ends the exchange.
            self.inflight.remove(pos);
            self.release_id(id);
            self.events.push_back((
                Event::PublishComplete {
                    packet_id: id,
                    reason_code: r.reason_code,
                },
                None,
            ));
            self.flush_queue(now);
            return;
        }
        if let Some(slot) = self.inflight.get_mut(pos) {
            // [MQTT-4.3.3-4] the sender "MUST send a PUBREL packet when it receives a PUBREC
            // packet from the receiver with a Reason Code value less than 0x80".
            *slot = Outgoing::PubRel(id);
        }
        self.send(now, &Packet::PubRel(PubResponse::new(id)));
    }

    fn complete(&mut self, now: Instant, id: PacketId, qos: QoS, reason_code: ReasonCode) {
        let pos = self.inflight.iter().position(|o| match o {
            Outgoing::Publish(p) => {
                p.packet_id == Some(id) && p.qos == qos && qos == QoS::AtLeastOnce
            }
            Outgoing::PubRel(r) => *r == id && qos == QoS::ExactlyOnce,
        });
        let Some(pos) = pos else {
            return;
        };
        self.inflight.remove(pos);
        self.release_id(id);
        self.events.push_back((
            Event::PublishComplete {
                packet_id: id,
                reason_code,
            },
            None,
        ));
        self.flush_queue(now);
    }

    fn take_request(&mut self, id: PacketId) -> Option<Request> {
        let pos = self.requests.iter().position(|r| r.id == id)?;
        let req = self.requests.remove(pos)?;
        self.release_id(id);
        Some(req)
    }

    fn handle_suback(&mut self, _now: Instant, ack: SubAck<'static>) {
        let Some(req) = self.take_request(ack.packet_id) else {
            return;
        };
        let results: Vec<SubscribeResult> = ack
            .reason_codes
            .iter()
            .map(|c| match c.as_u8() {
                0x00 => Ok(QoS::AtMostOnce),
                0x01 => Ok(QoS::AtLeastOnce),
                0x02 => Ok(QoS::ExactlyOnce),
                _ => Err(c),
            })
            .collect();
        match req.kind {
            RequestKind::Subscribe {
                filters,
                subscription_id,
            } => {
                for (filter, result) in filters.iter().zip(&results) {
                    if result.is_ok() {
                        self.remember(filter.clone(), subscription_id);
                    }
                }
                self.events.push_back((
                    Event::Subscribed {
                        packet_id: ack.packet_id,
                        results,
                    },
                    None,
                ));
            }
            RequestKind::Resubscribe { filters } => {
                let results = filters.into_iter().map(|f| f.filter).zip(results).collect();
                self.events
                    .push_back((Event::Resubscribed { results }, None));
            }
            RequestKind::Unsubscribe { .. } => {}
        }
    }

    fn remember(&mut self, filter: SubscribeFilter, subscription_id: Option<u32>) {
        match self
            .subscriptions
            .iter_mut()
            .find(|(f, _)| f.filter == filter.filter)
        {
            Some(slot) => *slot = (filter, subscription_id),
            None => self.subscriptions.push((filter, subscription_id)),
        }
    }

    fn handle_unsuback(&mut self, _now: Instant, ack: UnsubAck<'static>) {
        let Some(req) = self.take_request(ack.packet_id) else {
            return;
        };
        if let RequestKind::Unsubscribe { filters } = req.kind {
            self.subscriptions
                .retain(|(f, _)| !filters.contains(&f.filter));
            // 3.1.1 UNSUBACK has no reason codes: one success per filter.
            let mut results: Vec<ReasonCode> = ack.reason_codes.iter().collect();
            if results.is_empty() {
                results = vec![ReasonCode::SUCCESS; filters.len()];
            }
            self.events.push_back((
                Event::Unsubscribed {
                    packet_id: ack.packet_id,
                    results,
                },
                None,
            ));
        }
    }
}

/// `p` with its topic and payload borrowed: encoding it copies them once, into the output.
fn view<'a>(p: &'a Publish<'_>) -> Publish<'a> {
    Publish {
        dup: p.dup,
        qos: p.qos,
        retain: p.retain,
        topic: Cow::Borrowed(&p.topic),
        packet_id: p.packet_id,
        // Nothing to copy without properties; one box otherwise.
        properties: p.properties.clone(),
        payload: Cow::Borrowed(&p.payload),
    }
}

fn protocol(rule: &'static str) -> SessionError {
    SessionError::Protocol {
        code: ReasonCode::PROTOCOL_ERROR,
        rule,
    }
}
