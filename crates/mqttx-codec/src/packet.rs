//! The fifteen MQTT Control Packets (MQTT 5.0 §3) as Rust values.
//!
//! Every packet type has one struct for all protocol versions; fields that only MQTT 5.0 has
//! (properties, reason codes) stay at their defaults for 3.1.x. Strings and payloads are
//! `Cow`s: borrowed from the input after a decode, owned or borrowed when an application
//! builds a packet. [`Packet::into_owned`] turns a decoded packet into a `Packet<'static>`.

use alloc::borrow::Cow;

use crate::items::{Items, SubscribeFilter};
use crate::properties::Props;
use crate::reason::ReasonCode;
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};

/// CONNECT: the first packet a client sends (MQTT 5.0 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Connect<'a> {
    /// Protocol version, from Protocol Name and Protocol Level.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.x).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// CONNECT properties (MQTT 5.0).
    pub properties: Props<'a>,
    /// Client Identifier; may be empty.
    pub client_id: Cow<'a, str>,
    /// The Will Message, if the Will Flag is set (boxed: it is rare and large).
    pub will: Option<alloc::boxed::Box<Will<'a>>>,
    /// User Name.
    pub username: Option<Cow<'a, str>>,
    /// Password (binary data).
    pub password: Option<Cow<'a, [u8]>>,
}

impl<'a> Connect<'a> {
    /// A CONNECT for `client_id` with clean start, keep alive 60 s and nothing else.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<Cow<'a, str>>) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: Props::new(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }
}

/// The Will Message of a CONNECT (MQTT 5.0 §3.1.2.5, §3.1.3.2–4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Will<'a> {
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (MQTT 5.0).
    pub properties: Props<'a>,
    /// Will Topic.
    pub topic: Cow<'a, str>,
    /// Will Payload.
    pub payload: Cow<'a, [u8]>,
}

impl<'a> Will<'a> {
    /// A Will Message on `topic` with `payload`, at QoS 0, not retained, without properties
    /// (set `qos`, `retain` and `properties`, e.g. the Will Delay Interval, as needed).
    pub fn new(topic: impl Into<Cow<'a, str>>, payload: impl Into<Cow<'a, [u8]>>) -> Self {
        Self {
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Props::new(),
            topic: topic.into(),
            payload: payload.into(),
        }
    }
}

/// CONNACK: the server's answer to CONNECT (MQTT 5.0 §3.2).
///
/// For MQTT 3.1.x, the Connect Return Code is mapped to the MQTT 5.0 reason code with the same
/// meaning (1 → 0x84, 2 → 0x85, 3 → 0x88, 4 → 0x86, 5 → 0x87) and back on encode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct ConnAck<'a> {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code.
    pub reason_code: ReasonCode,
    /// CONNACK properties (MQTT 5.0).
    pub properties: Props<'a>,
}

/// PUBLISH: an application message (MQTT 5.0 §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Publish<'a> {
    /// DUP: this may be a re-delivery.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name; empty only when a Topic Alias stands for it (MQTT 5.0).
    pub topic: Cow<'a, str>,
    /// Packet Identifier: present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (MQTT 5.0).
    pub properties: Props<'a>,
    /// Application payload.
    pub payload: Cow<'a, [u8]>,
}

impl<'a> Publish<'a> {
    /// A QoS 0 PUBLISH of `payload` to `topic`.
    pub fn new(topic: impl Into<Cow<'a, str>>, payload: impl Into<Cow<'a, [u8]>>) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: Props::new(),
            payload: payload.into(),
        }
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: one step of a QoS 1 or QoS 2 exchange (MQTT 5.0
/// §3.4–3.7). Which one it is follows from the [`Packet`] variant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct PubResponse<'a> {
    /// Packet Identifier of the PUBLISH this answers.
    pub packet_id: PacketId,
    /// Reason code (MQTT 5.0; 0x00 Success for 3.1.x).
    pub reason_code: ReasonCode,
    /// Properties (MQTT 5.0).
    pub properties: Props<'a>,
}

impl PubResponse<'_> {
    /// A success response for `packet_id`.
    pub const fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::SUCCESS,
            properties: Props::new(),
        }
    }
}

/// SUBSCRIBE (MQTT 5.0 §3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Subscribe<'a> {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0): Subscription Identifier and User Properties.
    pub properties: Props<'a>,
    /// Topic Filters with their options; at least one.
    pub filters: Items<'a, SubscribeFilter>,
}

/// SUBACK (MQTT 5.0 §3.9): one reason code per filter of the SUBSCRIBE, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct SubAck<'a> {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0).
    pub properties: Props<'a>,
    /// One code per filter: 0x00–0x02 grant a QoS, 0x80 and above refuse.
    pub reason_codes: Items<'a, ReasonCode>,
}

/// UNSUBSCRIBE (MQTT 5.0 §3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Unsubscribe<'a> {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0): User Properties.
    pub properties: Props<'a>,
    /// Topic Filters; at least one.
    pub filters: Items<'a, alloc::string::String>,
}

/// UNSUBACK (MQTT 5.0 §3.11). MQTT 3.1.x UNSUBACK has no payload: `reason_codes` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct UnsubAck<'a> {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0).
    pub properties: Props<'a>,
    /// One code per filter (MQTT 5.0 only).
    pub reason_codes: Items<'a, ReasonCode>,
}

/// DISCONNECT (MQTT 5.0 §3.14). MQTT 3.1.x DISCONNECT has no body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Disconnect<'a> {
    /// Disconnect Reason Code (MQTT 5.0).
    pub reason_code: ReasonCode,
    /// Properties (MQTT 5.0).
    pub properties: Props<'a>,
}

/// AUTH (MQTT 5.0 §3.15), for enhanced authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // Mirrors the spec's fields.
pub struct Auth<'a> {
    /// Authenticate Reason Code: 0x00, 0x18 or 0x19.
    pub reason_code: ReasonCode,
    /// Properties: Authentication Method and Data, Reason String, User Properties.
    pub properties: Props<'a>,
}

/// Any MQTT Control Packet. Variants follow the spec's packet-type values.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_enums)] // The fifteen packet types of the spec.
pub enum Packet<'a> {
    /// CONNECT (1).
    Connect(Connect<'a>),
    /// CONNACK (2).
    ConnAck(ConnAck<'a>),
    /// PUBLISH (3).
    Publish(Publish<'a>),
    /// PUBACK (4).
    PubAck(PubResponse<'a>),
    /// PUBREC (5).
    PubRec(PubResponse<'a>),
    /// PUBREL (6).
    PubRel(PubResponse<'a>),
    /// PUBCOMP (7).
    PubComp(PubResponse<'a>),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe<'a>),
    /// SUBACK (9).
    SubAck(SubAck<'a>),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck<'a>),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Disconnect<'a>),
    /// AUTH (15), MQTT 5.0 only.
    Auth(Auth<'a>),
}

/// A packet that owns all its data, for storing and for sending across tasks.
pub type OwnedPacket = Packet<'static>;

fn own_str(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

fn own_bin(s: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
    Cow::Owned(s.into_owned())
}

impl Connect<'_> {
    /// Copies every borrowed value.
    pub fn into_owned(self) -> Connect<'static> {
        Connect {
            protocol: self.protocol,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            properties: self.properties.into_owned(),
            client_id: own_str(self.client_id),
            will: self.will.map(|w| alloc::boxed::Box::new(w.into_owned())),
            username: self.username.map(own_str),
            password: self.password.map(own_bin),
        }
    }
}

impl Will<'_> {
    /// Copies every borrowed value.
    pub fn into_owned(self) -> Will<'static> {
        Will {
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.into_owned(),
            topic: own_str(self.topic),
            payload: own_bin(self.payload),
        }
    }
}

impl Publish<'_> {
    /// Copies every borrowed value.
    pub fn into_owned(self) -> Publish<'static> {
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: own_str(self.topic),
            packet_id: self.packet_id,
            properties: self.properties.into_owned(),
            payload: own_bin(self.payload),
        }
    }
}

impl PubResponse<'_> {
    /// Copies every borrowed value.
    pub fn into_owned(self) -> PubResponse<'static> {
        PubResponse {
            packet_id: self.packet_id,
            reason_code: self.reason_code,
            properties: self.properties.into_owned(),
        }
    }
}

impl Packet<'_> {
    /// The packet's type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// Copies every borrowed value, so the packet no longer borrows the decoded input.
    pub fn into_owned(self) -> OwnedPacket {
        match self {
            Self::Connect(p) => Packet::Connect(p.into_owned()),
            Self::ConnAck(p) => Packet::ConnAck(ConnAck {
                session_present: p.session_present,
                reason_code: p.reason_code,
                properties: p.properties.into_owned(),
            }),
            Self::Publish(p) => Packet::Publish(p.into_owned()),
            Self::PubAck(p) => Packet::PubAck(p.into_owned()),
            Self::PubRec(p) => Packet::PubRec(p.into_owned()),
            Self::PubRel(p) => Packet::PubRel(p.into_owned()),
            Self::PubComp(p) => Packet::PubComp(p.into_owned()),
            Self::Subscribe(p) => Packet::Subscribe(Subscribe {
                packet_id: p.packet_id,
                properties: p.properties.into_owned(),
                filters: p.filters.into_owned(),
            }),
            Self::SubAck(p) => Packet::SubAck(SubAck {
                packet_id: p.packet_id,
                properties: p.properties.into_owned(),
                reason_codes: p.reason_codes.into_owned(),
            }),
            Self::Unsubscribe(p) => Packet::Unsubscribe(Unsubscribe {
                packet_id: p.packet_id,
                properties: p.properties.into_owned(),
                filters: p.filters.into_owned(),
            }),
            Self::UnsubAck(p) => Packet::UnsubAck(UnsubAck {
                packet_id: p.packet_id,
                properties: p.properties.into_owned(),
                reason_codes: p.reason_codes.into_owned(),
            }),
            Self::PingReq => Packet::PingReq,
            Self::PingResp => Packet::PingResp,
            Self::Disconnect(p) => Packet::Disconnect(Disconnect {
                reason_code: p.reason_code,
                properties: p.properties.into_owned(),
            }),
            Self::Auth(p) => Packet::Auth(Auth {
                reason_code: p.reason_code,
                properties: p.properties.into_owned(),
            }),
        }
    }
}
