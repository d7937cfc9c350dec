//! The sans-IO session core: one MQTT connection as a state machine, bytes and time in, bytes
//! and events out.
//!
//! [`Session`] never reads a clock and never touches a socket. The shell (or a test) feeds it
//! the bytes a client sent with [`Session::handle_bytes`] and the passing of time with
//! [`Session::handle_timeout`], answers the requests it raises through [`Session::poll_event`],
//! gives it messages to deliver with [`Session::deliver`], and writes what
//! [`Session::poll_transmit`] returns to the client.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqttx_codec::{
    Auth, ConnAck, Connect, DecodeContext, DecodeError, Decoder, Disconnect, EncodeContext,
    EncodeError, Items, Packet, PacketId, PacketType, Props, ProtocolVersion, PubResponse, Publish,
    QoS, ReasonCode, SubAck, UnsubAck, encode,
};
use mqttx_router::{RetainHandling, SubscribeOptions, SubscriptionId, TopicFilter, TopicName};

use crate::config::Config;

/// How many bytes [`Session::poll_transmit`] gathers at most per call from the message queue,
/// so one write is large but bounded.
const TRANSMIT_BATCH: usize = 64 * 1024;

/// An application message as the broker routes it: the topic, the payload shared by every
/// copy, and the PUBLISH properties that are forwarded (MQTT 5.0 §3.3.2.3: Payload Format
/// Indicator, Message Expiry Interval, Content Type, Response Topic, Correlation Data, User
/// Properties; never a Topic Alias or a Subscription Identifier).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The topic it was published to.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// The forwarded MQTT 5.0 properties (empty for MQTT 3.1.x publishers).
    pub properties: Props<'static>,
}

impl Message {
    /// A message without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload: payload.into(),
            qos,
            retain,
            properties: Props::new(),
        }
    }

    /// Builds a message from a PUBLISH (or a Will), keeping only the forwarded properties.
    fn from_parts(
        topic: TopicName,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        props: &mqttx_codec::Properties<'_>,
    ) -> Self {
        let mut properties = Props::new();
        if props.payload_format_indicator.is_some()
            || props.message_expiry_interval.is_some()
            || props.content_type.is_some()
            || props.response_topic.is_some()
            || props.correlation_data.is_some()
            || !props.user_properties.is_empty()
        {
            let p = &mut *properties;
            p.payload_format_indicator = props.payload_format_indicator;
            p.message_expiry_interval = props.message_expiry_interval;
            p.content_type = props.content_type.clone().map(|c| c.into_owned().into());
            p.response_topic = props.response_topic.clone().map(|c| c.into_owned().into());
            p.correlation_data = props
                .correlation_data
                .clone()
                .map(|c| c.into_owned().into());
            p.user_properties = props.user_properties.clone().into_owned();
        }
        Self {
            topic,
            payload: Bytes::copy_from_slice(payload),
            qos,
            retain,
            properties,
        }
    }
}

/// What became of one message handed to one subscriber, for whoever must know (a cluster
/// that gives a shared group's message to another member if this one did not take it).
///
/// [`settle`](Self::settle) calls the function given to [`new`](Self::new) once, with `true`
/// when the message is taken care of: acknowledged by the client (PUBACK, PUBREC; or sent,
/// at QoS 0), expired, too large for the client, or kept with a persistent session that
/// outlives its connection. A receipt dropped unsettled settles with `false`: the message was
/// not delivered (its connection ended with its session, or a queue was full).
pub struct Receipt(Option<OnSettle>);

/// What a [`Receipt`] calls when settled.
type OnSettle = Box<dyn FnOnce(bool) + Send + Sync>;

impl Receipt {
    /// A receipt that calls `on_settle` once.
    pub fn new(on_settle: impl FnOnce(bool) + Send + Sync + 'static) -> Self {
        Self(Some(Box::new(on_settle)))
    }

    /// Settles the receipt.
    pub fn settle(mut self, taken: bool) {
        if let Some(on_settle) = self.0.take() {
            on_settle(taken);
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(on_settle) = self.0.take() {
            on_settle(false);
        }
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receipt")
    }
}

/// An [`Outbound`]'s receipt: boxed (a pointer in every copy, most without one), left out of
/// clones (the original settles it) and of comparisons.
#[derive(Debug, Default)]
struct ReceiptSlot(Option<Box<Receipt>>);

impl Clone for ReceiptSlot {
    fn clone(&self) -> Self {
        Self(None)
    }
}

impl PartialEq for ReceiptSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ReceiptSlot {}

/// A PUBLISH encoded once for every subscriber that receives it unchanged.
///
/// For QoS 1 and 2 the bytes hold a placeholder Packet Identifier, which each session replaces
/// with its own while copying the bytes into its write buffer; the encoded bytes themselves are
/// shared ([`Bytes`]) and never modified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    bytes: Bytes,
    /// Where the two Packet Identifier bytes are, for QoS 1 and 2.
    pid_offset: Option<usize>,
    qos: QoS,
    /// The message's Message Expiry Interval when it was encoded, in seconds.
    expiry: Option<u32>,
    /// Encoded for MQTT 5.0 (so the interval is in the bytes).
    v5: bool,
    /// The message's key in the broker's journal, for a durable session's copy.
    id: Option<u64>,
    /// Who must know what became of this copy.
    receipt: ReceiptSlot,
}

impl Outbound {
    /// Encodes `message` for a subscriber speaking `version`, at `qos`, with the RETAIN flag
    /// `retain` and the MQTT 5.0 Subscription Identifiers `subscription_ids`.
    pub fn encode(
        message: &Message,
        version: ProtocolVersion,
        qos: QoS,
        retain: bool,
        subscription_ids: &[u32],
    ) -> Result<Self, EncodeError> {
        let mut publish = Publish::new(message.topic.as_str(), &message.payload[..]);
        publish.qos = qos;
        publish.retain = retain;
        if qos != QoS::AtMostOnce {
            publish.packet_id = PacketId::new(1);
        }
        if version.is_v5() {
            publish.properties = message.properties.clone();
            if !subscription_ids.is_empty() {
                publish.properties.subscription_identifiers = subscription_ids.to_vec().into();
            }
        }
        let mut out = Vec::with_capacity(message.payload.len() + message.topic.as_str().len() + 16);
        encode(
            &Packet::Publish(publish),
            &EncodeContext::new(version),
            &mut out,
        )?;
        let pid_offset = (qos != QoS::AtMostOnce).then(|| {
            // The fixed header is the first byte plus the Remaining Length's bytes: each but
            // the last has its continuation bit set. Then comes the topic's length and text.
            let varint = out.iter().skip(1).take_while(|b| **b & 0x80 != 0).count() + 1;
            1 + varint + 2 + message.topic.as_str().len()
        });
        Ok(Self {
            bytes: Bytes::from(out),
            pid_offset,
            qos,
            expiry: message.properties.message_expiry_interval,
            v5: version.is_v5(),
            id: None,
            receipt: ReceiptSlot(None),
        })
    }

    /// This copy, kept under `id` in the broker's journal: the session reports what becomes
    /// of it through [`Session::poll_journal`].
    #[must_use]
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// The key of this copy in the broker's journal, if it has one.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// With a receipt, settled when the session is done with this copy (see [`Receipt`]).
    #[must_use]
    pub fn with_receipt(mut self, receipt: Receipt) -> Self {
        self.receipt = ReceiptSlot(Some(Box::new(receipt)));
        self
    }

    /// Takes this copy's receipt, if it has one.
    pub fn take_receipt(&mut self) -> Option<Receipt> {
        self.receipt.0.take().map(|receipt| *receipt)
    }

    /// Settles this copy's receipt, if it has one.
    fn settle(&mut self, taken: bool) {
        if let Some(receipt) = self.take_receipt() {
            receipt.settle(taken);
        }
    }

    /// This message after waiting `waited` seconds: `None` once its Message Expiry Interval
    /// has passed [MQTT-3.3.2-5], otherwise with the interval lowered by the wait
    /// [MQTT-3.3.2-6] (re-encoded: the shared bytes are never modified).
    fn aged(self, waited: u64) -> Option<Self> {
        let Some(expiry) = self.expiry else {
            return Some(self);
        };
        let left = u64::from(expiry).checked_sub(waited).filter(|&l| l > 0)?;
        let left = u32::try_from(left).unwrap_or(expiry);
        if left == expiry {
            return Some(self);
        }
        if !self.v5 {
            // No property to rewrite; the interval left still counts down.
            return Some(Self {
                expiry: Some(left),
                ..self
            });
        }
        let cx = DecodeContext::new(ProtocolVersion::V5)
            .with_max_packet_size(mqttx_codec::MAX_PACKET_SIZE);
        let Ok(Some((Packet::Publish(mut publish), _))) = mqttx_codec::decode(&self.bytes, &cx)
        else {
            return Some(self);
        };
        publish.properties.message_expiry_interval = Some(left);
        let mut out = Vec::with_capacity(self.bytes.len());
        if encode(
            &Packet::Publish(publish),
            &EncodeContext::new(ProtocolVersion::V5),
            &mut out,
        )
        .is_err()
        {
            return Some(self);
        }
        Some(Self {
            bytes: Bytes::from(out),
            expiry: Some(left),
            ..self
        })
    }

    /// The encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (never, for a PUBLISH).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The QoS of this copy.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// The shared encoded bytes (with the placeholder Packet Identifier for QoS 1 and 2).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The topic, as a slice of the shared bytes (no copy).
    fn topic_bytes(&self) -> Option<Bytes> {
        let has_pid = self.pid_offset.is_some();
        let topic = if self.v5 {
            PublishParts::parse(&self.bytes, has_pid)?.topic
        } else {
            let (_, rest) = self.bytes.split_first()?;
            let (_, used) = read_varint(rest)?;
            let body = rest.get(used..)?;
            let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
            body.get(2..2 + len)?
        };
        Some(self.bytes.slice_ref(topic))
    }

    fn write(&self, pid: Option<PacketId>, out: &mut Vec<u8>) {
        match (self.pid_offset, pid) {
            (Some(at), Some(pid)) if at + 2 <= self.bytes.len() => {
                out.extend_from_slice(&self.bytes[..at]);
                out.extend_from_slice(&pid.get().to_be_bytes());
                out.extend_from_slice(&self.bytes[at + 2..]);
            }
            _ => out.extend_from_slice(&self.bytes),
        }
    }
}

/// The pieces of an encoded MQTT 5.0 PUBLISH, for rewriting it with a Topic Alias.
struct PublishParts<'a> {
    first_byte: u8,
    topic: &'a [u8],
    props: &'a [u8],
    payload: &'a [u8],
}

impl<'a> PublishParts<'a> {
    /// Splits a PUBLISH this crate encoded; `None` if it does not have the expected shape.
    fn parse(bytes: &'a [u8], has_packet_id: bool) -> Option<Self> {
        let (&first_byte, rest) = bytes.split_first()?;
        let (remaining, used) = read_varint(rest)?;
        let body = rest.get(used..)?;
        if body.len() != remaining {
            return None;
        }
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = body.get(2..2 + topic_len)?;
        let after = 2 + topic_len + if has_packet_id { 2 } else { 0 };
        let (props_len, used) = read_varint(body.get(after..)?)?;
        let props_start = after + used;
        let props = body.get(props_start..props_start + props_len)?;
        let payload = body.get(props_start + props_len..)?;
        Some(Self {
            first_byte,
            topic,
            props,
            payload,
        })
    }
}

/// A Variable Byte Integer (MQTT 5.0 §1.5.5) at the start of `bytes`: value and length.
fn read_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn push_varint(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// What the session asks of the shell, or tells it. Drain with [`Session::poll_event`] after
/// every input or command.
///
/// `Connect`, `Publish`, `Subscribe` and `Unsubscribe` are requests: the session processes no
/// further input until the shell answers with the matching command
/// ([`Session::accept_connect`] or [`Session::refuse_connect`], [`Session::complete_publish`],
/// [`Session::complete_subscribe`], [`Session::complete_unsubscribe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A CONNECT arrived: accept or refuse it.
    Connect(Box<ConnectRequest>),
    /// A step of MQTT 5.0 enhanced authentication (§4.12), at CONNECT or for
    /// re-authentication: answer with [`Session::continue_auth`], [`Session::auth_success`] or
    /// [`Session::auth_failure`]. At CONNECT, [`Event::Connect`] follows a success.
    Auth(AuthRequest),
    /// A PUBLISH arrived: authorize and route it, then call [`Session::complete_publish`].
    Publish(Message),
    /// A SUBSCRIBE arrived: decide per filter, then call [`Session::complete_subscribe`].
    Subscribe(SubscribeRequest),
    /// An UNSUBSCRIBE arrived: remove the filters, then call [`Session::complete_unsubscribe`].
    Unsubscribe(UnsubscribeRequest),
    /// The client acknowledged a QoS 1 or 2 message the broker sent it: PUBACK, or PUBCOMP
    /// (no answer needed).
    Delivered(Delivered),
    /// The connection ended abnormally and had a Will Message: publish it, after
    /// [`Session::will_delay`] if the session outlives the connection (no answer needed).
    Will(Message),
    /// The connection is over. Write what [`Session::poll_transmit`] still returns, then
    /// close the stream. No further event follows.
    Closed(CloseReason),
}

/// A CONNECT, as the shell and the handler see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectRequest {
    /// The protocol version.
    pub protocol: ProtocolVersion,
    /// The client identifier: the client's own, or the one the broker assigned.
    pub client_id: String,
    /// Whether the broker assigned `client_id` (the client sent an empty one).
    pub assigned_client_id: bool,
    /// Clean Start / Clean Session.
    pub clean_start: bool,
    /// The Keep Alive the client asked for, in seconds.
    pub keep_alive: u16,
    /// The User Name.
    pub username: Option<String>,
    /// The Password.
    pub password: Option<Bytes>,
    /// Whether the CONNECT carries a Will Message.
    pub has_will: bool,
    /// The Session Expiry Interval asked for, in seconds: MQTT 5.0's property (0 when
    /// absent), or for MQTT 3.1.x 0 with Clean Session and `u32::MAX` (never) without.
    pub session_expiry_interval: u32,
    /// The MQTT 5.0 Authentication Method, when the client used enhanced authentication (the
    /// exchange already succeeded when this request is made).
    pub authentication_method: Option<String>,
    /// Every MQTT 5.0 CONNECT property (User Properties, Receive Maximum, Maximum Packet
    /// Size…); empty for MQTT 3.1.x.
    pub properties: Props<'static>,
    /// Who the transport authenticated the client as: the verified client certificate of a
    /// mutual-TLS listener (`tls` or `wss` with a client CA); `None` otherwise. Set by the
    /// shell (`Broker::serve_with`), never by the session core.
    pub peer_identity: Option<crate::PeerIdentity>,
    /// The client's address as the listener saw it (TCP source address), when the
    /// connection came through [`Server`](crate::Server) or `Broker::serve_with`; set by the
    /// shell, never by the session core.
    pub peer_addr: Option<std::net::SocketAddr>,
    /// The name of the listener that accepted the connection ([`Listener::name`]), if it
    /// has one; set by the shell.
    ///
    /// [`Listener::name`]: crate::Listener::name
    pub listener: Option<String>,
    /// A client identifier the handler assigned (see [`ConnectRequest::assign_client_id`]).
    handler_client_id: std::sync::OnceLock<String>,
}

impl ConnectRequest {
    /// Gives the client `client_id` in place of its own (or of the one the broker
    /// assigned): for `Handler::on_connect` to call before it accepts, e.g. to derive the
    /// identifier from the credentials. MQTT 5.0 clients learn it from CONNACK's Assigned
    /// Client Identifier [MQTT-3.2.2-16]; MQTT 3.1.x has no way to tell them, so the broker
    /// only uses it itself (sessions, takeover, `Broker::clients`). The first non-empty call
    /// wins; returns whether this one did.
    pub fn assign_client_id(&self, client_id: impl Into<String>) -> bool {
        let client_id = client_id.into();
        !client_id.is_empty() && self.handler_client_id.set(client_id).is_ok()
    }

    /// The client identifier the handler assigned with
    /// [`assign_client_id`](Self::assign_client_id), if any.
    pub fn handler_client_id(&self) -> Option<&str> {
        self.handler_client_id.get().map(String::as_str)
    }
}

/// A QoS 1 or 2 message the client acknowledged (MQTT 5.0 §4.3.2, §4.3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    topic: Bytes,
    /// The QoS it was sent with.
    pub qos: QoS,
    /// The Packet Identifier it was sent with.
    pub packet_id: PacketId,
}

impl Delivered {
    /// The topic it was sent to.
    pub fn topic(&self) -> &str {
        // The bytes are a topic this crate encoded from a `TopicName`, so valid UTF-8.
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }
}

/// A step of MQTT 5.0 enhanced authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The Authentication Method of the CONNECT (the same for every step).
    pub method: String,
    /// The Authentication Data of this step.
    pub data: Option<Bytes>,
    /// Whether this is a re-authentication of a connected client (AUTH 0x19), rather than
    /// part of the CONNECT.
    pub reauthenticate: bool,
}

/// One valid filter of a SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeEntry {
    /// The filter (possibly a shared subscription).
    pub filter: TopicFilter,
    /// The options, with the Subscription Identifier of the SUBSCRIBE.
    pub options: SubscribeOptions,
}

/// The valid filters of a SUBSCRIBE, in order. Invalid filters were already answered with
/// 0x8F (Topic Filter invalid) and are not listed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeRequest {
    /// The filters.
    pub entries: Vec<SubscribeEntry>,
}

/// The valid filters of an UNSUBSCRIBE, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnsubscribeRequest {
    /// The filters.
    pub filters: Vec<TopicFilter>,
}

/// The shell's answer to an [`Event::Publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishOutcome {
    /// Accepted (and routed): PUBACK / PUBREC 0x00.
    Accepted,
    /// Refused with a reason code: PUBACK / PUBREC with it (MQTT 5.0); MQTT 3.1.x gets the
    /// normal acknowledgement, as [MQTT-3.3.5-2] of 3.1.1 allows.
    Refused(ReasonCode),
    /// Refused, and the connection is closed with DISCONNECT and this code (MQTT 5.0).
    Disconnect(ReasonCode),
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent DISCONNECT 0x00 (the Will is discarded).
    Normal,
    /// The client sent DISCONNECT with another code, e.g. 0x04 (the Will is published).
    ClientDisconnect(ReasonCode),
    /// The stream ended or failed without DISCONNECT.
    ConnectionLost,
    /// No CONNECT arrived within the connect timeout.
    ConnectTimeout,
    /// No packet arrived within 1.5 times the Keep Alive.
    KeepAliveTimeout,
    /// A client without Keep Alive sent nothing for [`Config::idle_timeout`].
    IdleTimeout,
    /// The client broke the protocol; the code says how (sent to MQTT 5.0 clients).
    ProtocolError(ReasonCode),
    /// The CONNECT was refused with this code.
    Refused(ReasonCode),
    /// Another connection took over the client identifier (DISCONNECT 0x8E).
    TakenOver,
    /// The broker is shutting down (DISCONNECT 0x8B).
    ServerShutdown,
    /// The server disconnected the client with this code.
    Server(ReasonCode),
}

/// A DISCONNECT the server sends: the reason code and the MQTT 5.0 properties that go with
/// it (§3.14.2.2: Reason String, User Properties, Server Reference). MQTT 3.1.x clients have
/// no DISCONNECT from the server: their connection is closed.
///
/// ```
/// use mqttx_broker::codec::ReasonCode;
/// use mqttx_broker::proto::ServerDisconnect;
///
/// let d = ServerDisconnect::new(ReasonCode::USE_ANOTHER_SERVER)
///     .reason_string("maintenance")
///     .user_property("window", "30m")
///     .server_reference("mqtt-2.example.net");
/// assert_eq!(d.reason_code, ReasonCode::USE_ANOTHER_SERVER);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerDisconnect {
    /// The reason code; one that DISCONNECT may not carry becomes 0x80 (Unspecified error).
    pub reason_code: ReasonCode,
    /// A Reason String for the client's logs (left out if the packet would exceed the
    /// client's Maximum Packet Size, as §3.14.2.2.3 allows).
    pub reason_string: Option<String>,
    /// User Properties (left out with the Reason String if the packet would be too large).
    pub user_properties: Vec<(String, String)>,
    /// A Server Reference, for 0x9C (Use another server) and 0x9D (Server moved).
    pub server_reference: Option<String>,
}

impl ServerDisconnect {
    /// A DISCONNECT with `code` and no properties.
    pub const fn new(code: ReasonCode) -> Self {
        Self {
            reason_code: code,
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        }
    }

    /// Sets the Reason String.
    #[must_use]
    pub fn reason_string(mut self, text: impl Into<String>) -> Self {
        self.reason_string = Some(text.into());
        self
    }

    /// Adds a User Property.
    #[must_use]
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.user_properties.push((key.into(), value.into()));
        self
    }

    /// Sets the Server Reference.
    #[must_use]
    pub fn server_reference(mut self, reference: impl Into<String>) -> Self {
        self.server_reference = Some(reference.into());
        self
    }

    /// The DISCONNECT properties.
    fn properties(&self) -> Props<'static> {
        let mut props = Props::new();
        if let Some(text) = &self.reason_string {
            props.reason_string = Some(text.clone().into());
        }
        if let Some(reference) = &self.server_reference {
            props.server_reference = Some(reference.clone().into());
        }
        for (key, value) in &self.user_properties {
            props
                .user_properties
                .push(mqttx_codec::UserProperty::new(key.clone(), value.clone()));
        }
        props
    }
}

/// What [`Session::deliver`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverOutcome {
    /// Queued for sending.
    Queued,
    /// Dropped: the session's outbound queue is full (counted in [`SessionStats`]).
    QueueFull,
    /// Dropped: larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    TooLarge,
    /// Dropped: the session is not connected (yet, or any more).
    NotConnected,
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// QoS 0 messages dropped because the outbound queue was full.
    pub dropped_qos0: u64,
    /// QoS 1 and 2 messages dropped because the outbound queue was full.
    pub dropped_qos12: u64,
    /// Messages dropped because they exceed the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Messages dropped from the outbound queue because their Message Expiry Interval passed
    /// while they waited [MQTT-3.3.2-5].
    pub dropped_expired: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for CONNECT.
    AwaitConnect,
    /// CONNECT received, waiting for the shell's decision.
    Connecting,
    Connected,
    Closed,
}

/// The request the session waits on; no input is processed meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Connect,
    Auth {
        reauthenticate: bool,
    },
    Publish {
        qos: QoS,
        packet_id: Option<PacketId>,
    },
    Subscribe {
        packet_id: PacketId,
        /// One entry per filter: `Some` for filters already answered (invalid ones).
        codes: Vec<Option<ReasonCode>>,
    },
    Unsubscribe {
        packet_id: PacketId,
        codes: Vec<Option<ReasonCode>>,
    },
}

/// What became of a durable session's journaled messages and inbound QoS 2 identifiers,
/// for the shell to write to its journal ([`Session::poll_journal`]). Messages are named by
/// their [`Outbound::id`]; messages without one are not reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalEntry {
    /// The message was sent under `packet_id` (QoS 1 or 2), awaiting PUBACK or PUBREC.
    Sent {
        /// The message's journal key.
        id: u64,
        /// Its Packet Identifier.
        packet_id: u16,
        /// At QoS 2: a restart must resend it under this identifier, never under another,
        /// so the shell makes this entry durable before the PUBLISH goes out.
        exactly_once: bool,
    },
    /// QoS 2: PUBREC received, PUBREL sent under `packet_id`, awaiting PUBCOMP.
    Released {
        /// The message's journal key.
        id: u64,
        /// Its Packet Identifier.
        packet_id: u16,
    },
    /// The message is gone: acknowledged, expired, dropped, or refused by the client.
    Done {
        /// The message's journal key.
        id: u64,
    },
    /// An inbound QoS 2 PUBLISH was accepted under this Packet Identifier (PUBREC sent).
    InboundAdded(u16),
    /// The inbound QoS 2 exchange under this Packet Identifier ended (PUBREL received).
    InboundRemoved(u16),
}

/// Where an outbound QoS 1 or 2 message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    /// QoS 1, waiting for PUBACK.
    Qos1,
    /// QoS 2, waiting for PUBREC.
    Qos2Sent,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    Qos2Released,
}

/// What a persistent session keeps while its client is away: from
/// [`Session::take_state`], back through [`Session::accept_connect_resumed`]. Messages that
/// arrive meanwhile are added with [`SessionState::enqueue`].
#[derive(Clone, Debug, Default)]
pub struct SessionState {
    /// Waiting messages and when they started waiting.
    queue: VecDeque<(Outbound, Instant)>,
    /// Encoded bytes of `queue`.
    queued_bytes: usize,
    inflight: Vec<Flight>,
    incoming_qos2: HashSet<u16>,
    next_packet_id: u16,
}

#[derive(Clone, Debug)]
struct Flight {
    packet_id: u16,
    state: InFlight,
    seq: u64,
    message: Option<Outbound>,
}

impl SessionState {
    /// Queues a message for the absent client: QoS 1 and 2 only (QoS 0 is not kept, as MQTT
    /// 5.0 §4.1 allows), at most `max_messages` messages and `max_bytes` encoded bytes in the
    /// queue. Returns whether it was kept. `now` starts the message's Message Expiry countdown.
    pub fn enqueue(
        &mut self,
        now: Instant,
        message: Outbound,
        max_messages: usize,
        max_bytes: usize,
    ) -> bool {
        let mut message = message;
        if message.qos() == QoS::AtMostOnce
            || self.queue.len() >= max_messages
            || self.queued_bytes.saturating_add(message.len()) > max_bytes
        {
            return false;
        }
        // Kept with the session: taken care of (see `Receipt`).
        if let Some(receipt) = message.take_receipt() {
            receipt.settle(true);
        }
        self.queued_bytes += message.len();
        self.queue.push_back((message, now));
        true
    }

    /// Settles the receipts of the messages this state keeps (queued and in flight) as taken:
    /// they stay with the session (see [`Receipt`]).
    pub fn keep_receipts(&mut self) {
        let queued = self.queue.iter_mut().map(|(message, _)| message);
        let flying = self.inflight.iter_mut().filter_map(|f| f.message.as_mut());
        for message in queued.chain(flying) {
            if let Some(receipt) = message.take_receipt() {
                receipt.settle(true);
            }
        }
    }

    /// Messages waiting (queued, not in flight).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Encoded bytes of the messages waiting (queued, not in flight).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

/// One MQTT connection, from the broker's side, as a state machine.
///
/// # Calling contract
///
/// - Inputs: [`handle_bytes`](Self::handle_bytes) with what the client sent,
///   [`handle_timeout`](Self::handle_timeout) when the instant of
///   [`poll_timeout`](Self::poll_timeout) has passed, [`handle_closed`](Self::handle_closed) when
///   the stream ended.
/// - Commands: answers to requests ([`accept_connect`](Self::accept_connect),
///   [`refuse_connect`](Self::refuse_connect), [`complete_publish`](Self::complete_publish),
///   [`complete_subscribe`](Self::complete_subscribe),
///   [`complete_unsubscribe`](Self::complete_unsubscribe)), [`deliver`](Self::deliver) and
///   [`disconnect`](Self::disconnect).
/// - Outputs: after every input or command, drain [`poll_event`](Self::poll_event) (and
///   answer requests), then [`poll_transmit`](Self::poll_transmit) until it returns `false`,
///   then re-arm one timer at [`poll_timeout`](Self::poll_timeout).
///
/// `now` must never go backwards between calls. The session reads no clock: time is only what
/// the caller passes in.
#[derive(Debug)]
pub struct Session {
    decoder: Decoder,
    state: State,
}

#[derive(Debug)]
struct State {
    config: Limits,
    phase: Phase,
    version: ProtocolVersion,
    /// Set when CONNECT fixes the version, applied to the decoder before the next packet.
    version_change: Option<ProtocolVersion>,
    assigned_id: String,
    client_id: String,
    connect_deadline: Option<Instant>,
    keep_alive: Option<Duration>,
    last_packet: Instant,
    will: Option<Message>,
    pending: Option<Pending>,
    transmit: Vec<u8>,
    events: VecDeque<Event>,
    /// Messages waiting to be sent, and since when (for Message Expiry).
    queue: VecDeque<(Outbound, Instant)>,
    queued_bytes: usize,
    /// The latest instant an input or command passed in: what `poll_transmit` ages queued
    /// messages to.
    now: Instant,
    inflight: HashMap<u16, InFlight>,
    /// For each in-flight identifier: its send order, and the PUBLISH while it is not yet
    /// acknowledged (resent with DUP when a persistent session resumes).
    sent: HashMap<u16, (u64, Option<Outbound>)>,
    send_seq: u64,
    next_packet_id: u16,
    /// Inbound QoS 2 packet identifiers whose PUBREC was sent and whose PUBREL has not come.
    incoming_qos2: HashSet<u16>,
    /// Inbound Topic Aliases (MQTT 5.0 §3.3.2.3.4), at most `topic_alias_maximum` of them.
    topic_aliases: HashMap<u16, TopicName>,
    /// Outbound Topic Aliases: topic → (alias, last use), at most `alias_limit` of them.
    out_aliases: HashMap<Vec<u8>, (u16, u64)>,
    /// min(the client's Topic Alias Maximum, `outbound_topic_aliases`); 0 for none.
    alias_limit: u16,
    /// Counts uses of outbound aliases, for least-recently-used replacement.
    alias_clock: u64,
    client_receive_maximum: u16,
    client_max_packet_size: u32,
    /// The Keep Alive to announce in CONNACK's Server Keep Alive, when it differs.
    keep_alive_sent: Option<u16>,
    /// An MQTT 5.0 client asked for a Session Expiry Interval above 0.
    session_expiry_requested: bool,
    /// The Session Expiry Interval in force, in seconds: from CONNECT (MQTT 5.0; 0 when
    /// absent), or `u32::MAX` (never) for an MQTT 3.1.x Clean Session 0; DISCONNECT may change
    /// it.
    session_expiry: u32,
    /// The Authentication Method of the CONNECT (MQTT 5.0 enhanced authentication).
    auth_method: Option<String>,
    /// The Authentication Data to send in CONNACK after a successful exchange.
    auth_data_out: Option<Bytes>,
    /// The Will Delay Interval of the CONNECT's Will, in seconds (MQTT 5.0 §3.1.3.2.2).
    will_delay: u32,
    /// A Session Expiry Interval the shell granted in place of the client's.
    session_expiry_granted: Option<u32>,
    /// The CONNECT request, held back while its authentication exchange runs.
    held_connect: Option<Box<ConnectRequest>>,
    /// A re-authentication exchange is under way.
    reauthenticating: bool,
    /// The client identifier was assigned.
    assigned: bool,
    /// CONNACK says Session Present.
    session_present: bool,
    stats: SessionStats,
    /// Report what becomes of journaled messages and inbound QoS 2 identifiers.
    journaling: bool,
    journal: Vec<JournalEntry>,
    /// Hold the acknowledgements of inbound PUBLISH and PUBREL packets (and PUBREL packets
    /// this side sends) until the shell says the journal has what they acknowledge.
    park_acks: bool,
    parked: VecDeque<(PacketType, u16, ReasonCode)>,
}

#[derive(Clone, Copy, Debug)]
struct Limits {
    max_keepalive: u16,
    receive_maximum: u16,
    max_inflight: u16,
    max_queued_messages: usize,
    max_queued_bytes: usize,
    max_packet_size: u32,
    topic_alias_maximum: u16,
    outbound_topic_aliases: u16,
    idle_timeout: Option<Duration>,
}

impl Session {
    /// A session for a connection accepted at `now`. `assigned_id` is the client identifier
    /// the broker gives the client if it sends an empty one; the shell makes it unique.
    pub fn new(now: Instant, config: &Config, assigned_id: String) -> Self {
        let cx =
            DecodeContext::new(ProtocolVersion::V5).with_max_packet_size(config.max_packet_size);
        Self {
            decoder: Decoder::new(cx),
            state: State {
                config: Limits {
                    max_keepalive: config.max_keepalive,
                    receive_maximum: config.receive_maximum.max(1),
                    max_inflight: config.max_inflight.max(1),
                    max_queued_messages: config.max_queued_messages,
                    max_queued_bytes: config.max_queued_bytes,
                    max_packet_size: config.max_packet_size,
                    topic_alias_maximum: config.topic_alias_maximum,
                    outbound_topic_aliases: config.outbound_topic_aliases,
                    idle_timeout: config.idle_timeout,
                },
                phase: Phase::AwaitConnect,
                version: ProtocolVersion::V5,
                version_change: None,
                assigned_id,
                client_id: String::new(),
                connect_deadline: Some(now + config.connect_timeout),
                keep_alive: None,
                last_packet: now,
                will: None,
                pending: None,
                transmit: Vec::new(),
                events: VecDeque::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                now,
                inflight: HashMap::new(),
                sent: HashMap::new(),
                send_seq: 0,
                next_packet_id: 1,
                incoming_qos2: HashSet::new(),
                topic_aliases: HashMap::new(),
                out_aliases: HashMap::new(),
                alias_limit: 0,
                alias_clock: 0,
                client_receive_maximum: u16::MAX,
                client_max_packet_size: mqttx_codec::MAX_PACKET_SIZE,
                keep_alive_sent: None,
                session_expiry_requested: false,
                session_expiry: 0,
                auth_method: None,
                session_expiry_granted: None,
                will_delay: 0,
                auth_data_out: None,
                held_connect: None,
                reauthenticating: false,
                assigned: false,
                session_present: false,
                stats: SessionStats::default(),
                journaling: false,
                journal: Vec::new(),
                park_acks: false,
                parked: VecDeque::new(),
            },
        }
    }

    /// The protocol version (MQTT 5.0 until CONNECT says otherwise).
    pub fn version(&self) -> ProtocolVersion {
        self.state.version
    }

    /// The client identifier once CONNECT arrived (assigned if the client sent none).
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// Whether CONNECT was accepted and the session has not ended.
    pub fn is_connected(&self) -> bool {
        self.state.phase == Phase::Connected
    }

    /// Whether the session has ended; only [`poll_transmit`](Self::poll_transmit) and
    /// [`poll_event`](Self::poll_event) have anything left to give.
    pub fn is_closed(&self) -> bool {
        self.state.phase == Phase::Closed
    }

    /// Bytes of control packets (acknowledgements, PINGRESP…) waiting for
    /// [`poll_transmit`](Self::poll_transmit). A shell stops reading from a client whose
    /// backlog grows, so a client that sends without reading cannot grow it without bound.
    pub fn transmit_backlog(&self) -> usize {
        self.state.transmit.len()
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.state.stats
    }

    /// QoS 1 and 2 messages sent to the client and not yet fully acknowledged (PUBACK, or
    /// PUBREC then PUBCOMP).
    pub fn in_flight(&self) -> usize {
        self.state.inflight.len()
    }

    /// Input: bytes received from the client.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.state.tick(now);
        if self.is_closed() {
            return;
        }
        if self.state.phase == Phase::AwaitConnect && self.decoder.buffered() == 0 {
            if let Some(first) = bytes.first() {
                if first >> 4 != PacketType::Connect as u8 {
                    // [MQTT-3.1.0-1] The first packet MUST be CONNECT: judged on its first
                    // byte, without waiting for the rest of a frame that may never come.
                    self.state.close(
                        CloseReason::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                        None,
                        false,
                    );
                    return;
                }
            }
        }
        self.decoder.feed(bytes);
        self.process(now);
    }

    /// Input: time has passed. Closes the connection if the connect timeout or the keep-alive
    /// deadline is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.state.tick(now);
        let s = &mut self.state;
        match s.phase {
            Phase::AwaitConnect | Phase::Connecting => {
                if s.connect_deadline.is_some_and(|d| now >= d) {
                    // [MQTT-3.1.4-1] (and §4.2 of 3.1.1): a Server that does not receive a
                    // CONNECT within a reasonable time SHOULD close the connection.
                    s.close(CloseReason::ConnectTimeout, None, false);
                }
            }
            Phase::Connected => {
                if s.idle_deadline().is_some_and(|d| now >= d) {
                    // Issue #4 idle ceiling: a client without Keep Alive that stays silent this
                    // long is closed as if the network had failed (the Will is published).
                    s.close(CloseReason::IdleTimeout, None, true);
                } else if s.keepalive_deadline().is_some_and(|d| now >= d) {
                    // [MQTT-3.1.2-22] If the Keep Alive value is non-zero and the Server does not
                    // receive an MQTT Control Packet from the Client within one and a half times
                    // the Keep Alive time period, it MUST close the Network Connection to the
                    // Client as if the network had failed.
                    s.close(
                        CloseReason::KeepAliveTimeout,
                        Some((ReasonCode::KEEP_ALIVE_TIMEOUT, None)),
                        true,
                    );
                }
            }
            Phase::Closed => {}
        }
    }

    /// Input: the stream ended or failed. Publishes the Will if there is one.
    pub fn handle_closed(&mut self) {
        if !self.is_closed() {
            self.state.close(CloseReason::ConnectionLost, None, true);
        }
    }

    /// Command: before [`accept_connect`](Self::accept_connect) or
    /// [`accept_connect_resumed`](Self::accept_connect_resumed), replace the pending CONNECT's
    /// client identifier with `client_id`; MQTT 5.0 clients get it in CONNACK's Assigned
    /// Client Identifier. Ignored when no CONNECT is pending or `client_id` is empty.
    pub fn assign_client_id(&mut self, client_id: String) {
        let s = &mut self.state;
        if s.pending == Some(Pending::Connect) && !client_id.is_empty() {
            s.client_id = client_id;
            // [MQTT-3.2.2-16] If the Client connects using a zero length Client Identifier,
            // the Server MUST respond with a CONNACK containing an Assigned Client Identifier;
            // MQTT 5.0 §3.2.2.3.7 lets the Server assign one in other cases too.
            s.assigned = true;
        }
    }

    /// Command: accept the pending CONNECT. Sends CONNACK 0x00 and processes input that
    /// arrived after the CONNECT.
    pub fn accept_connect(&mut self, now: Instant) {
        self.state.tick(now);
        if self.state.pending != Some(Pending::Connect) {
            return;
        }
        self.state.pending = None;
        self.state.accept_connect(now);
        self.process(now);
    }

    /// Command: accept the pending CONNECT and resume a stored session: CONNACK with Session
    /// Present 1, then the unacknowledged PUBLISH packets again with DUP and the PUBREL
    /// packets, in their original order [MQTT-4.4.0-1], then the queued messages.
    pub fn accept_connect_resumed(&mut self, now: Instant, state: SessionState) {
        self.state.tick(now);
        if self.state.pending != Some(Pending::Connect) {
            return;
        }
        self.state.pending = None;
        self.state.session_present = true;
        let s = &mut self.state;
        s.accept_connect(now);
        s.next_packet_id = state.next_packet_id;
        s.incoming_qos2 = state.incoming_qos2;
        // [MQTT-3.3.2-5] / [MQTT-3.3.2-6]: messages whose Message Expiry Interval passed while
        // they waited are dropped; the others go out with the time left.
        let mut queue = VecDeque::with_capacity(state.queue.len());
        for (message, since) in state.queue {
            let id = message.id;
            match message.aged(now.saturating_duration_since(since).as_secs()) {
                Some(message) => queue.push_back((message, now)),
                None => {
                    if let Some(id) = id {
                        s.journal(JournalEntry::Done { id });
                    }
                }
            }
        }
        s.queue = queue;
        s.queued_bytes = s.queue.iter().map(|(m, _)| m.len()).sum();
        let mut resend = state.inflight;
        resend.sort_by_key(|f| f.seq);
        for flight in resend {
            let Some(pid) = PacketId::new(flight.packet_id) else {
                continue;
            };
            match (&flight.message, flight.state) {
                (Some(message), InFlight::Qos1 | InFlight::Qos2Sent) => {
                    // [MQTT-3.3.1-1] The DUP flag MUST be set to 1 by the Client or Server
                    // when it attempts to re-deliver a PUBLISH packet.
                    let before = s.transmit.len();
                    message.write(Some(pid), &mut s.transmit);
                    if let Some(first) = s.transmit.get_mut(before) {
                        *first |= 0b0000_1000;
                    }
                }
                (_, InFlight::Qos2Released) => {
                    s.send(&Packet::PubRel(PubResponse::new(pid)));
                }
                _ => continue,
            }
            s.inflight.insert(flight.packet_id, flight.state);
            s.send_seq += 1;
            s.sent
                .insert(flight.packet_id, (s.send_seq, flight.message));
        }
        self.process(now);
    }

    /// Command: the shell grants `seconds` as the Session Expiry Interval instead of the
    /// client's (call before accepting; MQTT 5.0 clients learn it from CONNACK).
    pub fn grant_session_expiry(&mut self, seconds: u32) {
        let s = &mut self.state;
        if seconds != s.session_expiry && s.version.is_v5() {
            s.session_expiry_granted = Some(seconds);
        }
        s.session_expiry = seconds;
    }

    /// The Will CONNECT set, until the session ends (when it becomes an [`Event::Will`] or is
    /// dropped).
    pub fn will(&self) -> Option<&Message> {
        self.state.will.as_ref()
    }

    /// The Will Delay Interval of the Will, in seconds (0 without one, or for MQTT 3.1.x). The
    /// shell publishes an [`Event::Will`] after min(this, the Session Expiry Interval), unless
    /// the client resumes the session first [MQTT-3.1.3-9].
    pub fn will_delay(&self) -> u32 {
        self.state.will_delay
    }

    /// The Session Expiry Interval in force, in seconds (`u32::MAX`: never). After the
    /// session closed, a value above 0 means the shell should keep its state
    /// ([`take_state`](Self::take_state)) for that long.
    pub fn session_expiry(&self) -> u32 {
        self.state.session_expiry
    }

    /// Takes what a persistent session keeps between connections: queued messages, messages
    /// in flight, inbound QoS 2 identifiers awaiting PUBREL. Call after the session closed;
    /// Queued messages keep the instant they started waiting (at most `now`) for their
    /// Message Expiry countdown.
    pub fn take_state(&mut self, now: Instant) -> SessionState {
        let s = &mut self.state;
        let mut inflight = Vec::with_capacity(s.inflight.len());
        for (id, state) in s.inflight.drain() {
            let (seq, message) = s.sent.remove(&id).unwrap_or((0, None));
            inflight.push(Flight {
                packet_id: id,
                state,
                seq,
                message,
            });
        }
        let queued_bytes = std::mem::take(&mut s.queued_bytes);
        SessionState {
            queue: std::mem::take(&mut s.queue)
                .into_iter()
                .map(|(message, since)| (message, since.min(now)))
                .collect(),
            queued_bytes,
            inflight,
            incoming_qos2: std::mem::take(&mut s.incoming_qos2),
            next_packet_id: s.next_packet_id,
        }
    }

    /// Command: refuse the pending CONNECT with `code` (CONNACK, then close). MQTT 3.1.x
    /// clients get the return code with the same meaning, or 5 (not authorized) when there is
    /// none.
    pub fn refuse_connect(&mut self, code: ReasonCode) {
        if self.state.pending != Some(Pending::Connect) {
            return;
        }
        self.state.pending = None;
        let code = if code.is_error() && code.is_valid_for(PacketType::ConnAck) {
            code
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        self.state.send_connack_error(code);
        self.state.close(CloseReason::Refused(code), None, false);
    }

    /// Command: the pending authentication step needs another round: sends AUTH 0x18
    /// (Continue authentication) with `data` and waits for the client's next AUTH.
    pub fn continue_auth(&mut self, now: Instant, data: Option<Bytes>) {
        self.state.tick(now);
        let Some(Pending::Auth { reauthenticate }) = self.state.pending else {
            return;
        };
        self.state.pending = None;
        self.state.reauthenticating = reauthenticate;
        self.state
            .send_auth(ReasonCode::CONTINUE_AUTHENTICATION, data);
        self.process(now);
    }

    /// Command: the authentication succeeded. At CONNECT, the held [`Event::Connect`] follows
    /// (its CONNACK will carry `data`); for a re-authentication, AUTH 0x00 with `data` is sent.
    pub fn auth_success(&mut self, now: Instant, data: Option<Bytes>) {
        self.state.tick(now);
        let Some(Pending::Auth { reauthenticate }) = self.state.pending else {
            return;
        };
        let s = &mut self.state;
        s.reauthenticating = false;
        if reauthenticate {
            s.pending = None;
            // MQTT 5.0 §4.12.1: the Server sends AUTH with Reason Code 0x00 (Success) when
            // re-authentication succeeds.
            s.send_auth(ReasonCode::SUCCESS, data);
            self.process(now);
        } else {
            s.auth_data_out = data;
            match s.held_connect.take() {
                Some(req) => {
                    s.pending = Some(Pending::Connect);
                    s.events.push_back(Event::Connect(req));
                }
                None => s.pending = None,
            }
        }
    }

    /// Command: the authentication failed with `code`: CONNACK with it at CONNECT, DISCONNECT
    /// for a re-authentication [MQTT-4.12.1-2] (0x87 when `code` is not a DISCONNECT code).
    pub fn auth_failure(&mut self, code: ReasonCode) {
        let Some(Pending::Auth { reauthenticate }) = self.state.pending else {
            return;
        };
        if reauthenticate {
            self.state.pending = None;
            let code = if code.is_error() && code.is_valid_for(PacketType::Disconnect) {
                code
            } else {
                ReasonCode::NOT_AUTHORIZED
            };
            self.state
                .close(CloseReason::Server(code), Some((code, None)), true);
        } else {
            self.state.pending = Some(Pending::Connect);
            self.refuse_connect(code);
        }
    }

    /// Command: the pending PUBLISH was handled. Sends its acknowledgement.
    pub fn complete_publish(&mut self, now: Instant, outcome: PublishOutcome) {
        self.state.tick(now);
        let Some(Pending::Publish { qos, packet_id }) = self.state.pending.clone() else {
            return;
        };
        self.state.pending = None;
        self.state.complete_publish(qos, packet_id, outcome);
        self.process(now);
    }

    /// Command: the pending SUBSCRIBE was handled; `codes` has one reason code per entry of
    /// the [`SubscribeRequest`] (a granted QoS 0x00–0x02, or a refusal ≥ 0x80). Sends SUBACK.
    pub fn complete_subscribe(&mut self, now: Instant, codes: &[ReasonCode]) {
        self.state.tick(now);
        let Some(Pending::Subscribe {
            packet_id,
            codes: slots,
        }) = self.state.pending.take()
        else {
            return;
        };
        let v5 = self.state.version.is_v5();
        let mut given = codes.iter();
        let mut out = Items::new();
        for slot in slots {
            let code = slot
                .or_else(|| given.next().copied())
                .unwrap_or(ReasonCode::UNSPECIFIED_ERROR);
            let code = if v5 {
                code
            } else {
                ReasonCode::from_u8(code.to_v3_suback()).unwrap_or(ReasonCode::UNSPECIFIED_ERROR)
            };
            out.push(code);
        }
        self.state.send(&Packet::SubAck(SubAck {
            packet_id,
            properties: Props::new(),
            reason_codes: out,
        }));
        self.process(now);
    }

    /// Command: the pending UNSUBSCRIBE was handled; `existed` says, per entry of the
    /// [`UnsubscribeRequest`], whether the subscription existed. Sends UNSUBACK.
    pub fn complete_unsubscribe(&mut self, now: Instant, existed: &[bool]) {
        self.state.tick(now);
        let Some(Pending::Unsubscribe {
            packet_id,
            codes: slots,
        }) = self.state.pending.take()
        else {
            return;
        };
        let mut given = existed.iter();
        let mut out = Items::new();
        if self.state.version.is_v5() {
            for slot in slots {
                out.push(slot.unwrap_or_else(|| match given.next() {
                    Some(true) => ReasonCode::SUCCESS,
                    _ => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                }));
            }
        }
        self.state.send(&Packet::UnsubAck(UnsubAck {
            packet_id,
            properties: Props::new(),
            reason_codes: out,
        }));
        self.process(now);
    }

    /// Command: queue a message for the client at `now`. QoS 1 and 2 messages get a Packet
    /// Identifier when they are sent, within the client's Receive Maximum; a message whose
    /// Message Expiry Interval passes while it waits is dropped, the others are sent with the
    /// time they have left.
    pub fn deliver(&mut self, now: Instant, mut message: Outbound) -> DeliverOutcome {
        let s = &mut self.state;
        s.tick(now);
        if s.phase != Phase::Connected {
            return DeliverOutcome::NotConnected;
        }
        // [MQTT-3.1.2-25] The Server MUST NOT send packets exceeding Maximum Packet Size to
        // the Client.
        if message.len() > s.client_max_packet_size as usize {
            s.stats.dropped_too_large += 1;
            s.journal_done(&mut message);
            return DeliverOutcome::TooLarge;
        }
        if s.queue.len() >= s.config.max_queued_messages
            || s.queued_bytes + message.len() > s.config.max_queued_bytes
        {
            if message.qos == QoS::AtMostOnce {
                s.stats.dropped_qos0 += 1;
            } else {
                s.stats.dropped_qos12 += 1;
            }
            // Not taken: a shared group's message may go to another member.
            message.settle(false);
            s.journal_done(&mut message);
            return DeliverOutcome::QueueFull;
        }
        s.queued_bytes += message.len();
        s.queue.push_back((message, now));
        DeliverOutcome::Queued
    }

    /// Command: the server ends the connection with `code`: 0x8E (session taken over), 0x8B
    /// (server shutting down) or another DISCONNECT reason code. MQTT 5.0 clients get a
    /// DISCONNECT; the Will is published.
    pub fn disconnect(&mut self, code: ReasonCode) {
        self.disconnect_with(&ServerDisconnect::new(code));
    }

    /// Command: like [`disconnect`](Self::disconnect), with the DISCONNECT's MQTT 5.0
    /// properties (Reason String, User Properties, Server Reference).
    pub fn disconnect_with(&mut self, disconnect: &ServerDisconnect) {
        let code = disconnect.reason_code;
        let s = &mut self.state;
        match s.phase {
            Phase::Closed => {}
            Phase::Connected => {
                let reason = match code {
                    ReasonCode::SESSION_TAKEN_OVER => CloseReason::TakenOver,
                    ReasonCode::SERVER_SHUTTING_DOWN => CloseReason::ServerShutdown,
                    other => CloseReason::Server(other),
                };
                s.close_with(reason, Some((code, disconnect.properties())), true);
            }
            Phase::AwaitConnect | Phase::Connecting => {
                s.pending = None;
                s.close(CloseReason::Server(code), None, false);
            }
        }
    }

    /// Output: appends bytes to write to the client. Returns whether it wrote anything.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        let s = &mut self.state;
        let before = out.len();
        out.append(&mut s.transmit);
        if s.phase != Phase::Connected {
            // A closed session keeps its queue for a persistent session; nothing more is sent.
            return out.len() > before;
        }
        let window = s.config.max_inflight.min(s.client_receive_maximum) as usize;
        while out.len() - before < TRANSMIT_BATCH {
            let Some((front, since)) = s.queue.front() else {
                break;
            };
            let waited = s.now.saturating_duration_since(*since).as_secs();
            if front.expiry.is_some() && waited > 0 {
                let Some((message, _)) = s.queue.pop_front() else {
                    break;
                };
                s.queued_bytes -= message.len();
                // [MQTT-3.3.2-5] If the Message Expiry Interval has passed and the Server has
                // not managed to start onward delivery to a matching subscriber, then it MUST
                // delete the copy of the message for that subscriber. [MQTT-3.3.2-6] The
                // PUBLISH sent carries the received value minus the time it waited.
                let id = message.id;
                let mut message = message;
                let receipt = message.take_receipt();
                match message.aged(waited) {
                    Some(mut aged) => {
                        aged.receipt = ReceiptSlot(receipt.map(Box::new));
                        s.queued_bytes += aged.len();
                        s.queue.push_front((aged, s.now));
                    }
                    None => {
                        s.stats.dropped_expired += 1;
                        if let Some(receipt) = receipt {
                            receipt.settle(true);
                        }
                        if let Some(id) = id {
                            s.journal(JournalEntry::Done { id });
                        }
                    }
                }
                continue;
            }
            let qos = front.qos;
            let pid = if qos == QoS::AtMostOnce {
                None
            } else {
                // [MQTT-4.9.0-2] / [MQTT-4.9.0-3] The Server MUST NOT send more QoS 1 and
                // QoS 2 PUBLISH packets than the client's Receive Maximum without an answer.
                if s.inflight.len() >= window {
                    break;
                }
                let Some(pid) = s.allocate_packet_id() else {
                    break;
                };
                let state = if qos == QoS::AtLeastOnce {
                    InFlight::Qos1
                } else {
                    InFlight::Qos2Sent
                };
                s.inflight.insert(pid.get(), state);
                Some(pid)
            };
            let Some((mut message, _)) = s.queue.pop_front() else {
                break;
            };
            s.queued_bytes -= message.len();
            if !s.write_aliased(&message, pid, out) {
                message.write(pid, out);
            }
            if let Some(pid) = pid {
                if let Some(id) = message.id {
                    s.journal(JournalEntry::Sent {
                        id,
                        packet_id: pid.get(),
                        exactly_once: qos == QoS::ExactlyOnce,
                    });
                }
                s.send_seq += 1;
                s.sent.insert(pid.get(), (s.send_seq, Some(message)));
            } else {
                s.journal_done(&mut message);
            }
        }
        out.len() > before
    }

    /// Output: the instant at which [`handle_timeout`](Self::handle_timeout) must be called,
    /// if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = &self.state;
        match s.phase {
            Phase::AwaitConnect | Phase::Connecting => s.connect_deadline,
            Phase::Connected => s.keepalive_deadline().or_else(|| s.idle_deadline()),
            Phase::Closed => None,
        }
    }

    /// Output: the next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.state.events.pop_front()
    }

    /// Configures durability. With `journaling`, the session reports through
    /// [`poll_journal`](Self::poll_journal) what becomes of the messages that carry an
    /// [`Outbound::id`] and of inbound QoS 2 identifiers (for a persistent session of a
    /// broker with a journal). With `park_acks`, the PUBACK, PUBREC and PUBCOMP packets that
    /// answer the client and the PUBREL packets sent to it wait, in order, until
    /// [`release_acks`](Self::release_acks): the shell releases them once its journal holds
    /// what they acknowledge.
    pub fn set_durability(&mut self, journaling: bool, park_acks: bool) {
        self.state.journaling = journaling;
        self.state.park_acks = park_acks;
    }

    /// Output: appends what became of journaled messages since the last call to `out`.
    pub fn poll_journal(&mut self, out: &mut Vec<JournalEntry>) {
        out.append(&mut self.state.journal);
    }

    /// The acknowledgements held back (see [`set_durability`](Self::set_durability)), in
    /// order; the client sends no more than its Receive Maximum without them, so a shell
    /// stops reading while this is at [`Config::receive_maximum`].
    pub fn parked_acks(&self) -> usize {
        self.state.parked.len()
    }

    /// Command: sends the first `n` acknowledgements held back.
    pub fn release_acks(&mut self, n: usize) {
        let s = &mut self.state;
        for _ in 0..n {
            let Some((kind, id, code)) = s.parked.pop_front() else {
                break;
            };
            if let Some(pid) = PacketId::new(id) {
                s.send_response(kind, pid, code);
            }
        }
    }

    /// Decodes and handles buffered packets until a request is pending or the session ends.
    fn process(&mut self, now: Instant) {
        loop {
            if let Some(version) = self.state.version_change.take() {
                self.decoder.set_version(version);
            }
            if self.state.phase == Phase::Closed || self.state.pending.is_some() {
                return;
            }
            match self.decoder.next_borrowed() {
                Ok(Some(packet)) => self.state.handle_packet(now, packet),
                Ok(None) => return,
                Err(e) => self.state.decode_error(e),
            }
        }
    }
}

impl State {
    /// Records the latest instant passed in (`now` never goes backwards, but keep the
    /// maximum in case a caller's does).
    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        self.keep_alive.map(|k| self.last_packet + k)
    }

    /// Without a Keep Alive (0, which only MQTT 3.1.x clients keep), the idle ceiling.
    fn idle_deadline(&self) -> Option<Instant> {
        match (self.keep_alive, self.config.idle_timeout) {
            (None, Some(idle)) => Some(self.last_packet + idle),
            _ => None,
        }
    }

    fn encode_cx(&self) -> EncodeContext {
        // [MQTT-3.1.2-25] The Server MUST NOT send packets exceeding the Maximum Packet Size
        // the Client gave in CONNECT; the encoder refuses them.
        EncodeContext::new(self.version).with_max_packet_size(self.client_max_packet_size)
    }

    /// Encodes a control packet into the transmit buffer. Returns `false` when it could not
    /// be encoded: packets built here are valid by construction, so that happens only when
    /// one exceeds the client's Maximum Packet Size, and then it is not sent.
    fn send(&mut self, packet: &Packet<'_>) -> bool {
        let cx = self.encode_cx();
        encode(packet, &cx, &mut self.transmit).is_ok()
    }

    /// Sends a PUBACK, PUBREC, PUBREL or PUBCOMP (no properties), or holds it back while the
    /// shell makes what it acknowledges durable.
    fn send_ack(&mut self, kind: PacketType, packet_id: PacketId, code: ReasonCode) {
        if self.park_acks {
            self.parked.push_back((kind, packet_id.get(), code));
            return;
        }
        self.send_response(kind, packet_id, code);
    }

    /// Sends a PUBACK, PUBREC, PUBREL or PUBCOMP (`kind`) with no properties, now.
    fn send_response(&mut self, kind: PacketType, packet_id: PacketId, code: ReasonCode) {
        let mut response = PubResponse::new(packet_id);
        response.reason_code = code;
        let packet = match kind {
            PacketType::PubAck => Packet::PubAck(response),
            PacketType::PubRec => Packet::PubRec(response),
            PacketType::PubRel => Packet::PubRel(response),
            _ => Packet::PubComp(response),
        };
        self.send(&packet);
    }

    /// Reports a journal entry when the session is journaling.
    fn journal(&mut self, entry: JournalEntry) {
        if self.journaling {
            self.journal.push(entry);
        }
    }

    /// Reports that a message is gone (settling its receipt: see [`Receipt`]), to the journal
    /// if it has a journal key.
    fn journal_done(&mut self, message: &mut Outbound) {
        message.settle(true);
        if let Some(id) = message.id {
            self.journal(JournalEntry::Done { id });
        }
    }

    /// Ends the session: optionally a DISCONNECT (MQTT 5.0 only), optionally the Will.
    fn close(
        &mut self,
        reason: CloseReason,
        disconnect: Option<(ReasonCode, Option<&str>)>,
        publish_will: bool,
    ) {
        let disconnect = disconnect.map(|(code, reason_string)| {
            let mut properties = Props::new();
            properties.reason_string = reason_string.map(|text| text.to_owned().into());
            (code, properties)
        });
        self.close_with(reason, disconnect, publish_will);
    }

    /// Ends the session: optionally a DISCONNECT with properties (MQTT 5.0 only), optionally
    /// the Will.
    fn close_with(
        &mut self,
        reason: CloseReason,
        disconnect: Option<(ReasonCode, Props<'static>)>,
        publish_will: bool,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some((code, properties)) = disconnect {
            let code = if code.is_valid_for(PacketType::Disconnect) {
                code
            } else {
                ReasonCode::UNSPECIFIED_ERROR
            };
            if self.phase == Phase::Connected && self.version.is_v5() {
                let packet = Disconnect {
                    reason_code: code,
                    properties,
                };
                if !self.send(&Packet::Disconnect(packet)) {
                    // [MQTT-3.1.2-25]: the properties made it too large for the client
                    // (MQTT 5.0 §3.14.2.2.3 lets the sender leave them out).
                    self.send(&Packet::Disconnect(Disconnect {
                        reason_code: code,
                        properties: Props::new(),
                    }));
                }
            }
        }
        self.pending = None;
        self.phase = Phase::Closed;
        if let Some(will) = self.will.take() {
            if publish_will {
                self.events.push_back(Event::Will(will));
            }
        }
        self.events.push_back(Event::Closed(reason));
    }

    fn decode_error(&mut self, e: DecodeError) {
        let code = e.reason_code();
        match self.phase {
            Phase::AwaitConnect => match e {
                DecodeError::UnsupportedProtocolVersion(level) => {
                    // [MQTT-3.1.2-2] The Server MAY respond to the CONNECT packet with a CONNACK
                    // packet with Reason Code 0x84 (Unsupported Protocol Version) and then MUST
                    // close the Network Connection. (3.1.1: return code 0x01.) A level above 5
                    // gets the MQTT 5.0 form, anything else the 3.1.1 form.
                    self.version = if level >= 5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    };
                    self.send_connack_error(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
                    self.close(CloseReason::ProtocolError(code), None, false);
                }
                DecodeError::InvalidProtocolName => {
                    self.version = ProtocolVersion::V311;
                    self.send_connack_error(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
                    self.close(CloseReason::ProtocolError(code), None, false);
                }
                // [MQTT-4.8.0-1] Unless stated otherwise, if either the Server or Client
                // encounters a protocol violation, it MUST close the Network Connection. The
                // version is unknown, so no DISCONNECT.
                _ => self.close(CloseReason::ProtocolError(code), None, false),
            },
            _ => {
                // MQTT 5.0 §4.13.1: the receiver of a Malformed Packet or Protocol Error MAY
                // send a DISCONNECT with the reason code before closing.
                let text = e.to_string();
                self.close(
                    CloseReason::ProtocolError(code),
                    Some((code, Some(&text))),
                    true,
                );
            }
        }
    }

    /// A protocol error found by the session rather than the decoder.
    fn protocol_error(&mut self, code: ReasonCode, rule: &str) {
        self.close(
            CloseReason::ProtocolError(code),
            Some((code, Some(rule))),
            true,
        );
    }

    fn send_connack_error(&mut self, code: ReasonCode) {
        // [MQTT-3.2.2-6] (3.1.1) If none of the return codes are deemed applicable, then the
        // Server MUST close the Network Connection without sending a CONNACK: e.g. 0x9F
        // Connection rate exceeded has no 3.1.1 return code.
        if !self.version.is_v5() && code.to_v3_connack().is_none() {
            return;
        }
        self.send(&Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: code,
            properties: Props::new(),
        }));
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet<'_>) {
        self.last_packet = now;
        match self.phase {
            Phase::AwaitConnect => match packet {
                Packet::Connect(connect) => self.handle_connect(connect),
                // [MQTT-3.1.0-1] After a Network Connection is established by a Client to a
                // Server, the first packet sent from the Client to the Server MUST be a CONNECT
                // packet. The version is not known yet, so the connection is closed without
                // DISCONNECT.
                _ => self.close(
                    CloseReason::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                    None,
                    false,
                ),
            },
            // During an enhanced authentication exchange only AUTH may come (`process` does not
            // decode while a request is pending).
            Phase::Connecting => match packet {
                Packet::Auth(a) => self.handle_auth(a),
                _ => self.connecting_protocol_error(),
            },
            Phase::Closed => {}
            Phase::Connected => self.handle_connected(packet),
        }
    }

    /// MQTT 5.0 §4.12: during the authentication exchange, anything but an
    /// AUTH with the same method and 0x18 is a Protocol Error; CONNACK 0x82, then close.
    fn connecting_protocol_error(&mut self) {
        self.send_connack_error(ReasonCode::PROTOCOL_ERROR);
        self.close(
            CloseReason::ProtocolError(ReasonCode::PROTOCOL_ERROR),
            None,
            false,
        );
    }

    fn send_auth(&mut self, code: ReasonCode, data: Option<Bytes>) {
        let mut auth = Auth {
            reason_code: code,
            properties: Props::new(),
        };
        auth.properties.authentication_method = self.auth_method.clone().map(Into::into);
        auth.properties.authentication_data = data.map(|d| d.to_vec().into());
        self.send(&Packet::Auth(auth));
    }

    /// An AUTH from the client, during the CONNECT exchange or once connected.
    fn handle_auth(&mut self, a: Auth<'_>) {
        let connecting = self.phase == Phase::Connecting;
        let same_method = self.auth_method.is_some()
            && a.properties.authentication_method.as_deref() == self.auth_method.as_deref();
        // MQTT 5.0 §4.12: 0x18 continues an exchange the Server asked to continue; 0x19 starts
        // a re-authentication, only once connected and only if CONNECT used a method
        // [MQTT-4.12.1-1]; the method never changes [MQTT-4.12.0-5].
        let ok = same_method
            && match a.reason_code {
                ReasonCode::CONTINUE_AUTHENTICATION => connecting || self.reauthenticating,
                ReasonCode::RE_AUTHENTICATE => !connecting && !self.reauthenticating,
                _ => false,
            };
        if !ok {
            if connecting {
                self.connecting_protocol_error();
            } else {
                self.protocol_error(ReasonCode::PROTOCOL_ERROR, "MQTT 5.0 §4.12 unexpected AUTH");
            }
            return;
        }
        let reauthenticate = !connecting;
        self.pending = Some(Pending::Auth { reauthenticate });
        self.events.push_back(Event::Auth(AuthRequest {
            method: self.auth_method.clone().unwrap_or_default(),
            data: a
                .properties
                .authentication_data
                .as_ref()
                .map(|d| Bytes::copy_from_slice(d)),
            reauthenticate,
        }));
    }

    fn handle_connect(&mut self, c: Connect<'_>) {
        self.version = c.protocol;
        self.version_change = Some(c.protocol);
        let v5 = c.protocol.is_v5();
        if v5 {
            self.auth_method = c
                .properties
                .authentication_method
                .as_ref()
                .map(|m| m.clone().into_owned());
            if let Some(max) = c.properties.receive_maximum {
                self.client_receive_maximum = max;
            }
            if let Some(max) = c.properties.maximum_packet_size {
                self.client_max_packet_size = max;
            }
            // [MQTT-3.1.2-26] The Server MUST NOT send a Topic Alias in a PUBLISH packet to the
            // Client greater than Topic Alias Maximum; [MQTT-3.1.2-27] none if it is absent or 0.
            self.alias_limit = c
                .properties
                .topic_alias_maximum
                .unwrap_or(0)
                .min(self.config.outbound_topic_aliases);
        }
        let assigned = c.client_id.is_empty();
        if assigned {
            if !v5 && !c.clean_start {
                // [MQTT-3.1.3-8] (3.1.1) If the Client supplies a zero-byte ClientId with
                // CleanSession set to 0, the Server MUST respond to the CONNECT Packet with a
                // CONNACK return code 0x02 (Identifier rejected) and then close the Network
                // Connection.
                self.send_connack_error(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
                self.close(
                    CloseReason::Refused(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
                    None,
                    false,
                );
                return;
            }
            // [MQTT-3.1.3-6] A Server MAY allow a Client to supply a ClientID that has a length
            // of zero bytes, however if it does so the Server MUST treat this as a special case
            // and assign a unique ClientID to that Client. (MQTT 5.0 also: [MQTT-3.2.2-16] it
            // MUST return the Assigned Client Identifier in the CONNACK.)
            self.client_id = std::mem::take(&mut self.assigned_id);
        } else {
            self.client_id = c.client_id.clone().into_owned();
        }
        if let Some(will) = &c.will {
            match TopicName::new(&will.topic) {
                Ok(topic) => {
                    self.will = Some(Message::from_parts(
                        topic,
                        &will.payload,
                        will.qos,
                        will.retain,
                        &will.properties,
                    ));
                    self.will_delay = will.properties.will_delay_interval.unwrap_or(0);
                }
                Err(_) => {
                    // [MQTT-3.1.3-11] The Will Topic MUST be a UTF-8 Encoded String; an invalid
                    // topic name refuses the connection (0x90 for MQTT 5.0).
                    self.send_connack_error(ReasonCode::TOPIC_NAME_INVALID);
                    self.close(
                        CloseReason::Refused(ReasonCode::TOPIC_NAME_INVALID),
                        None,
                        false,
                    );
                    return;
                }
            }
        }
        let requested = c.keep_alive;
        let mut keep_alive = requested;
        if v5
            && self.config.max_keepalive > 0
            && (requested == 0 || requested > self.config.max_keepalive)
        {
            keep_alive = self.config.max_keepalive;
        }
        self.keep_alive = (keep_alive > 0).then(|| {
            // One and a half times the Keep Alive, in milliseconds to keep the half second.
            Duration::from_millis(u64::from(keep_alive) * 1500)
        });
        self.keep_alive_sent = (keep_alive != requested).then_some(keep_alive);
        self.phase = Phase::Connecting;
        let request = ConnectRequest {
            protocol: c.protocol,
            client_id: self.client_id.clone(),
            assigned_client_id: assigned,
            clean_start: c.clean_start,
            keep_alive: requested,
            username: c.username.as_ref().map(|u| u.clone().into_owned()),
            password: c.password.as_ref().map(|p| Bytes::copy_from_slice(p)),
            has_will: c.will.is_some(),
            session_expiry_interval: if v5 {
                c.properties.session_expiry_interval.unwrap_or(0)
            } else if c.clean_start {
                0
            } else {
                u32::MAX
            },
            authentication_method: self.auth_method.clone(),
            properties: c.properties.clone().into_owned(),
            peer_identity: None,
            peer_addr: None,
            listener: None,
            handler_client_id: std::sync::OnceLock::new(),
        };
        match &self.auth_method {
            // MQTT 5.0 §4.12: with an Authentication Method, the exchange comes first and the
            // CONNECT is decided after it succeeds.
            Some(method) => {
                self.pending = Some(Pending::Auth {
                    reauthenticate: false,
                });
                self.events.push_back(Event::Auth(AuthRequest {
                    method: method.clone(),
                    data: c
                        .properties
                        .authentication_data
                        .as_ref()
                        .map(|d| Bytes::copy_from_slice(d)),
                    reauthenticate: false,
                }));
                self.held_connect = Some(Box::new(request));
            }
            None => {
                self.pending = Some(Pending::Connect);
                self.events.push_back(Event::Connect(Box::new(request)));
            }
        }
        self.session_expiry_requested =
            v5 && c.properties.session_expiry_interval.is_some_and(|e| e > 0);
        self.session_expiry = if v5 {
            // MQTT 5.0 §3.1.2.11.2: absent means 0, the session ends with the connection.
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            // MQTT 3.1.1 §3.1.2.4: a Clean Session 0 session has no expiry in the protocol.
            u32::MAX
        };
        self.assigned = assigned;
    }

    fn accept_connect(&mut self, now: Instant) {
        if self.events.is_empty() {
            // The CONNECT request made room for a few events (large ones); an idle
            // connection keeps none, a busy one allocates again with its first PUBLISH.
            self.events = VecDeque::new();
        }
        self.phase = Phase::Connected;
        self.connect_deadline = None;
        self.last_packet = now;
        let mut connack = ConnAck {
            // [MQTT-3.2.2-2] / [MQTT-3.2.2-3]: Session Present is 1 only for a resumed session.
            session_present: self.session_present,
            ..ConnAck::default()
        };
        if self.version.is_v5() {
            let p = &mut *connack.properties;
            if self.assigned {
                // [MQTT-3.2.2-16] … the Server MUST return the Assigned Client Identifier.
                p.assigned_client_identifier = Some(self.client_id.clone().into());
            }
            // MQTT 5.0 §3.2.2.3.3: the Server's Receive Maximum for QoS 1 and 2 PUBLISH.
            p.receive_maximum = Some(self.config.receive_maximum);
            // MQTT 5.0 §3.2.2.3.6: the Maximum Packet Size the Server accepts.
            p.maximum_packet_size = Some(self.config.max_packet_size);
            // MQTT 5.0 §3.2.2.3.8: the highest Topic Alias the Client may send.
            p.topic_alias_maximum = Some(self.config.topic_alias_maximum);
            if let Some(k) = self.keep_alive_sent {
                // [MQTT-3.2.2-21] If the Server sends a Server Keep Alive on the CONNACK
                // packet, the Client MUST use this value instead of the Keep Alive value the
                // Client sent on CONNECT.
                p.server_keep_alive = Some(k);
            }
            if let Some(method) = &self.auth_method {
                // MQTT 5.0 §3.2.2.3.17: the CONNACK carries the Authentication Method of the
                // CONNECT, and the last Authentication Data of the exchange.
                p.authentication_method = Some(method.clone().into());
                p.authentication_data = self.auth_data_out.take().map(|d| d.to_vec().into());
            }
            if let Some(granted) = self.session_expiry_granted {
                // MQTT 5.0 §3.2.2.3.2: the Client uses the Session Expiry Interval the Server
                // sends in CONNACK, when the Server changed it.
                p.session_expiry_interval = Some(granted);
            }
        }
        self.send(&Packet::ConnAck(connack));
    }

    fn complete_publish(&mut self, qos: QoS, packet_id: Option<PacketId>, outcome: PublishOutcome) {
        let v5 = self.version.is_v5();
        let code = match outcome {
            PublishOutcome::Accepted => ReasonCode::SUCCESS,
            PublishOutcome::Refused(code) => code,
            PublishOutcome::Disconnect(code) => {
                if let (QoS::ExactlyOnce, Some(pid)) = (qos, packet_id) {
                    self.journal(JournalEntry::InboundRemoved(pid.get()));
                }
                self.close(CloseReason::Server(code), Some((code, None)), true);
                return;
            }
        };
        let kind = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => PacketType::PubAck,
            QoS::ExactlyOnce => PacketType::PubRec,
        };
        let Some(packet_id) = packet_id else {
            return;
        };
        let code = if !v5 {
            ReasonCode::SUCCESS
        } else if code.is_valid_for(kind) {
            code
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        if kind == PacketType::PubAck {
            // [MQTT-4.3.2-4] The receiver MUST respond with a PUBACK packet containing the
            // Packet Identifier from the incoming PUBLISH packet.
            self.send_ack(PacketType::PubAck, packet_id, code);
        } else {
            // [MQTT-4.3.3-8] The receiver MUST respond with a PUBREC containing the Packet
            // Identifier from the incoming PUBLISH packet, having accepted ownership of the
            // Application Message. A refusal (≥ 0x80) ends the exchange: no PUBREL follows.
            if code.is_error() {
                self.journal(JournalEntry::InboundRemoved(packet_id.get()));
            } else {
                self.incoming_qos2.insert(packet_id.get());
            }
            self.send_ack(PacketType::PubRec, packet_id, code);
        }
    }

    /// Writes a queued PUBLISH with a Topic Alias when the client accepts them (MQTT 5.0
    /// §3.3.2.3.4): the first time a topic is sent it carries its name and an alias, later
    /// only the alias and an empty name. The least recently used alias is replaced when all
    /// are taken. Returns `false` (nothing written) when no alias applies.
    fn write_aliased(
        &mut self,
        message: &Outbound,
        pid: Option<PacketId>,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.alias_limit == 0 || !self.version.is_v5() {
            return false;
        }
        let Some(parts) = PublishParts::parse(&message.bytes, message.pid_offset.is_some()) else {
            return false;
        };
        self.alias_clock += 1;
        let clock = self.alias_clock;
        let (alias, known) = match self.out_aliases.get_mut(parts.topic) {
            Some(entry) => {
                entry.1 = clock;
                (entry.0, true)
            }
            None => {
                let alias = if self.out_aliases.len() < usize::from(self.alias_limit) {
                    // Aliases 1..=len are taken; the next one is free.
                    u16::try_from(self.out_aliases.len() + 1).unwrap_or(u16::MAX)
                } else {
                    let oldest = self
                        .out_aliases
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(topic, (alias, _))| (topic.clone(), *alias));
                    let Some((topic, alias)) = oldest else {
                        return false;
                    };
                    self.out_aliases.remove(&topic);
                    alias
                };
                self.out_aliases
                    .insert(parts.topic.to_vec(), (alias, clock));
                (alias, false)
            }
        };
        let topic: &[u8] = if known { &[] } else { parts.topic };
        let props_len = parts.props.len() + 3;
        let body_len = 2
            + topic.len()
            + if pid.is_some() { 2 } else { 0 }
            + varint_len(props_len)
            + props_len
            + parts.payload.len();
        let total = 1 + varint_len(body_len) + body_len;
        if total > self.client_max_packet_size as usize || body_len > 268_435_455 {
            // Only a first use adds bytes (three); then send it without an alias.
            if !known {
                self.out_aliases.remove(parts.topic);
            }
            return false;
        }
        out.reserve(total);
        out.push(parts.first_byte);
        push_varint(body_len, out);
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        if let Some(pid) = pid {
            out.extend_from_slice(&pid.get().to_be_bytes());
        }
        push_varint(props_len, out);
        // 0x23 Topic Alias, a Two Byte Integer.
        out.push(0x23);
        out.extend_from_slice(&alias.to_be_bytes());
        out.extend_from_slice(parts.props);
        out.extend_from_slice(parts.payload);
        true
    }

    /// An outbound exchange ended: its Packet Identifier is free again.
    fn flight_done(&mut self, id: u16, delivered: bool) {
        self.inflight.remove(&id);
        let Some((_, Some(mut message))) = self.sent.remove(&id) else {
            return;
        };
        self.journal_done(&mut message);
        if let (true, Some(packet_id)) = (delivered, PacketId::new(id)) {
            if let Some(topic) = message.topic_bytes() {
                self.events.push_back(Event::Delivered(Delivered {
                    topic,
                    qos: message.qos,
                    packet_id,
                }));
            }
        }
    }

    /// [MQTT-2.2.1-3] … it MUST assign it a non-zero Packet Identifier that is currently unused.
    fn allocate_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(pid) = PacketId::new(candidate) {
                if !self.inflight.contains_key(&candidate) {
                    return Some(pid);
                }
            }
        }
        None
    }

    fn handle_connected(&mut self, packet: Packet<'_>) {
        let v5 = self.version.is_v5();
        match packet {
            Packet::Connect(_) => {
                // [MQTT-3.1.0-2] The Server MUST process a second CONNECT packet sent from a
                // Client as a Protocol Error and close the Network Connection.
                self.protocol_error(ReasonCode::PROTOCOL_ERROR, "[MQTT-3.1.0-2] second CONNECT");
            }
            Packet::Publish(p) => self.handle_publish(p),
            Packet::PubAck(r) => {
                // MQTT 5.0 §4.3.2: the PUBACK ends a QoS 1 exchange; an unknown one is ignored.
                if self.inflight.get(&r.packet_id.get()) == Some(&InFlight::Qos1) {
                    self.flight_done(r.packet_id.get(), !r.reason_code.is_error());
                }
            }
            Packet::PubRec(r) => {
                let id = r.packet_id.get();
                match self.inflight.get(&id) {
                    Some(InFlight::Qos2Sent | InFlight::Qos2Released) => {
                        if r.reason_code.is_error() {
                            // MQTT 5.0 §4.3.3: a PUBREC with a Reason Code of 0x80 or greater
                            // ends the exchange; the Packet Identifier is free again.
                            self.flight_done(id, false);
                        } else {
                            // [MQTT-4.3.3-4] The sender MUST send a PUBREL packet when it
                            // receives a PUBREC packet from the receiver.
                            let first = self.inflight.insert(id, InFlight::Qos2Released)
                                == Some(InFlight::Qos2Sent);
                            if let (true, Some((_, Some(message)))) = (first, self.sent.get(&id)) {
                                if let Some(message_id) = message.id {
                                    self.journal(JournalEntry::Released {
                                        id: message_id,
                                        packet_id: id,
                                    });
                                }
                            }
                            // [MQTT-4.3.3-5] … it MUST NOT re-send the PUBLISH once it has
                            // sent the corresponding PUBREL: the copy is kept only to report
                            // the delivery.
                            self.send_ack(PacketType::PubRel, r.packet_id, ReasonCode::SUCCESS);
                        }
                    }
                    _ => {
                        // MQTT 5.0 §3.6.2.1: PUBREL 0x92, Packet Identifier not found.
                        let mut rel = PubResponse::new(r.packet_id);
                        if v5 {
                            rel.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                        }
                        if !r.reason_code.is_error() {
                            self.send(&Packet::PubRel(rel));
                        }
                    }
                }
            }
            Packet::PubComp(r) => {
                if self.inflight.get(&r.packet_id.get()) == Some(&InFlight::Qos2Released) {
                    self.flight_done(r.packet_id.get(), true);
                }
            }
            Packet::PubRel(r) => {
                // [MQTT-4.3.3-10] The receiver MUST respond to a PUBREL packet by sending a
                // PUBCOMP packet containing the same Packet Identifier as the PUBREL.
                let mut code = ReasonCode::SUCCESS;
                if self.incoming_qos2.remove(&r.packet_id.get()) {
                    self.journal(JournalEntry::InboundRemoved(r.packet_id.get()));
                } else if v5 {
                    // MQTT 5.0 §3.7.2.1: 0x92 Packet Identifier not found.
                    code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.send_ack(PacketType::PubComp, r.packet_id, code);
            }
            Packet::Subscribe(sub) => {
                let subscription_id = sub
                    .properties
                    .subscription_identifiers
                    .iter()
                    .next()
                    .and_then(|id| SubscriptionId::new(id).ok());
                let mut codes = Vec::with_capacity(sub.filters.len());
                let mut entries = Vec::new();
                for (text, options) in sub.filters.iter() {
                    match TopicFilter::new(text) {
                        Ok(filter) => {
                            let qos = match options.qos {
                                QoS::AtMostOnce => mqttx_router::QoS::AtMostOnce,
                                QoS::AtLeastOnce => mqttx_router::QoS::AtLeastOnce,
                                QoS::ExactlyOnce => mqttx_router::QoS::ExactlyOnce,
                            };
                            let retain_handling = match options.retain_handling {
                                mqttx_codec::RetainHandling::SendAtSubscribe => {
                                    RetainHandling::SendAtSubscribe
                                }
                                mqttx_codec::RetainHandling::SendIfNew => {
                                    RetainHandling::SendAtNewSubscribe
                                }
                                mqttx_codec::RetainHandling::DoNotSend => RetainHandling::DoNotSend,
                            };
                            codes.push(None);
                            entries.push(SubscribeEntry {
                                filter,
                                options: SubscribeOptions::new(qos)
                                    .with_no_local(options.no_local)
                                    .with_retain_as_published(options.retain_as_published)
                                    .with_retain_handling(retain_handling)
                                    .with_subscription_id(subscription_id),
                            });
                        }
                        // MQTT 5.0 §3.9.3: 0x8F Topic Filter invalid, for this filter only.
                        Err(_) => codes.push(Some(ReasonCode::TOPIC_FILTER_INVALID)),
                    }
                }
                self.pending = Some(Pending::Subscribe {
                    packet_id: sub.packet_id,
                    codes,
                });
                self.events
                    .push_back(Event::Subscribe(SubscribeRequest { entries }));
            }
            Packet::Unsubscribe(unsub) => {
                let mut codes = Vec::with_capacity(unsub.filters.len());
                let mut filters = Vec::new();
                for text in unsub.filters.iter() {
                    match TopicFilter::new(text) {
                        Ok(filter) => {
                            codes.push(None);
                            filters.push(filter);
                        }
                        Err(_) => codes.push(Some(ReasonCode::TOPIC_FILTER_INVALID)),
                    }
                }
                self.pending = Some(Pending::Unsubscribe {
                    packet_id: unsub.packet_id,
                    codes,
                });
                self.events
                    .push_back(Event::Unsubscribe(UnsubscribeRequest { filters }));
            }
            // [MQTT-3.12.4-1] The Server MUST send a PINGRESP packet in response to a PINGREQ.
            Packet::PingReq => {
                self.send(&Packet::PingResp);
            }
            Packet::Disconnect(d) => {
                if v5
                    && !self.session_expiry_requested
                    && d.properties.session_expiry_interval.is_some_and(|e| e > 0)
                {
                    // MQTT 5.0 §3.14.2.2.2: if the Session Expiry Interval in
                    // CONNECT was zero, a non-zero one in DISCONNECT is a Protocol Error.
                    self.protocol_error(
                        ReasonCode::PROTOCOL_ERROR,
                        "MQTT 5.0 §3.14.2.2.2 session expiry set on DISCONNECT after 0 on CONNECT",
                    );
                    return;
                }
                if let Some(expiry) = d.properties.session_expiry_interval {
                    // MQTT 5.0 §3.14.2.2.2: DISCONNECT may change the Session Expiry Interval.
                    self.session_expiry = expiry;
                }
                if d.reason_code == ReasonCode::NORMAL_DISCONNECTION {
                    // [MQTT-3.14.4-3] On receipt of DISCONNECT with a Reason Code of 0x00
                    // (Success) the Server MUST discard any Will Message associated with the
                    // current Connection without publishing it.
                    self.close(CloseReason::Normal, None, false);
                } else {
                    // MQTT 5.0 §3.14.2.1: 0x04 (Disconnect with Will Message) and error codes
                    // leave the Will to be published.
                    self.close(CloseReason::ClientDisconnect(d.reason_code), None, true);
                }
            }
            Packet::Auth(a) => self.handle_auth(a),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                // MQTT 5.0 §2.1.2: these packets flow from Server to Client only.
                self.protocol_error(
                    ReasonCode::PROTOCOL_ERROR,
                    "MQTT 5.0 §2.1.2 server-to-client packet sent by a client",
                );
            }
        }
    }

    fn handle_publish(&mut self, p: Publish<'_>) {
        if p.qos == QoS::ExactlyOnce {
            if let Some(pid) = p.packet_id {
                if self.incoming_qos2.contains(&pid.get()) {
                    // [MQTT-4.3.3-9] Until it has received the corresponding PUBREL packet, the
                    // receiver MUST acknowledge any subsequent PUBLISH packet with the same
                    // Packet Identifier by sending a PUBREC. It MUST NOT cause duplicate
                    // messages to be delivered to any onward recipients in this case.
                    self.send_ack(PacketType::PubRec, pid, ReasonCode::SUCCESS);
                    return;
                }
                if self.incoming_qos2.len() >= usize::from(self.config.receive_maximum) {
                    // [MQTT-3.3.4-9] The Server MUST NOT … receive more than Receive Maximum
                    // QoS 1 and QoS 2 PUBLISH packets for which it has not sent PUBACK or
                    // PUBCOMP; MQTT 5.0 §3.3.4: DISCONNECT 0x93 Receive Maximum exceeded.
                    self.protocol_error(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "[MQTT-3.3.4-9] receive maximum exceeded",
                    );
                    return;
                }
            }
        }
        let topic = if p.topic.is_empty() {
            None
        } else {
            match TopicName::new(&p.topic) {
                Ok(topic) => Some(topic),
                Err(_) => {
                    // MQTT 5.0 §3.3.2.1: 0x90 Topic Name invalid.
                    self.protocol_error(
                        ReasonCode::TOPIC_NAME_INVALID,
                        "[MQTT-3.3.2-1] topic name",
                    );
                    return;
                }
            }
        };
        let topic = match (p.properties.topic_alias, topic) {
            (None, Some(topic)) => topic,
            (Some(alias), _) if alias > self.config.topic_alias_maximum => {
                // [MQTT-3.3.2-9] A Client MUST NOT send a PUBLISH packet with a Topic Alias
                // greater than the Topic Alias Maximum value returned by the Server in the
                // CONNACK; MQTT 5.0 §3.3.2.3.4: DISCONNECT 0x94 Topic Alias invalid.
                self.protocol_error(
                    ReasonCode::TOPIC_ALIAS_INVALID,
                    "[MQTT-3.3.2-9] topic alias above the maximum",
                );
                return;
            }
            (Some(alias), Some(topic)) => {
                // MQTT 5.0 §3.3.2.3.4: a Topic Name with a Topic Alias sets (or replaces) the
                // mapping for this connection.
                self.topic_aliases.insert(alias, topic.clone());
                topic
            }
            (Some(alias), None) => match self.topic_aliases.get(&alias) {
                Some(topic) => topic.clone(),
                None => {
                    // MQTT 5.0 §3.3.2.3.4: an alias with no mapping on this connection is a
                    // Protocol Error.
                    self.protocol_error(
                        ReasonCode::PROTOCOL_ERROR,
                        "MQTT 5.0 §3.3.2.3.4 topic alias without a mapping",
                    );
                    return;
                }
            },
            // The decoder refuses an empty topic without an alias ([MQTT-4.7.3-1]).
            (None, None) => {
                self.protocol_error(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-4.7.3-1] empty topic name without topic alias",
                );
                return;
            }
        };
        let message = Message::from_parts(topic, &p.payload, p.qos, p.retain, &p.properties);
        if let (QoS::ExactlyOnce, Some(pid)) = (p.qos, p.packet_id) {
            // Reported before the message is routed, so that the shell journals the
            // identifier in the same batch as the message: a resent PUBLISH after a restart
            // must find it [MQTT-4.3.3-9]. Withdrawn if the message is refused.
            self.journal(JournalEntry::InboundAdded(pid.get()));
        }
        self.pending = Some(Pending::Publish {
            qos: p.qos,
            packet_id: p.packet_id,
        });
        self.events.push_back(Event::Publish(message));
    }
}

mod persist;
#[cfg(test)]
mod tests;

pub use persist::{FlightOf, FlightState, Rekeyed, StateDecodeError};
