//! The codec's two error types: [`DecodeError`] for bytes from a peer, [`EncodeError`] for
//! packets from the caller.
//!
//! Both are small `Copy` values. Each decode error names the normative statement it enforces
//! ([`DecodeError::rule`]) and the reason code a server or client sends for it
//! ([`DecodeError::reason_code`]). The `Display` text is for people and may change between
//! versions; match on the variants instead.

use core::fmt;

use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion};

/// Why bytes from a peer are not a valid MQTT packet.
///
/// "Not enough bytes yet" is not an error: [`decode`](crate::decode) returns `Ok(None)` for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The declared packet size exceeds the receiver's Maximum Packet Size.
    PacketTooLarge {
        /// Bytes the whole packet would take: fixed header plus Remaining Length.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// A Variable Byte Integer has a continuation bit on its fourth byte, or is not minimal.
    MalformedVariableByteInteger,
    /// The packet type is 0, which is reserved.
    ReservedPacketType,
    /// An AUTH packet arrived on an MQTT 3.1.x connection, where type 15 is reserved.
    AuthBeforeV5,
    /// The fixed-header flags (bits 3–0) are not the ones the packet type requires.
    InvalidFixedHeaderFlags {
        /// The packet type.
        packet: PacketType,
        /// The flags received.
        flags: u8,
    },
    /// PUBLISH with both QoS bits set.
    InvalidQoS,
    /// PUBLISH with DUP set and QoS 0.
    DupWithQoS0,
    /// The packet ends before one of its fields does.
    UnexpectedEof,
    /// Bytes remain after the packet's last field.
    TrailingBytes(PacketType),
    /// A UTF-8 Encoded String is not well-formed UTF-8 (this includes surrogates).
    InvalidUtf8,
    /// A UTF-8 Encoded String contains U+0000.
    NullCharacter,
    /// CONNECT's Protocol Name is neither "MQTT" nor "MQIsdp", or does not fit the level.
    InvalidProtocolName,
    /// CONNECT's Protocol Level is not 3, 4 or 5.
    UnsupportedProtocolVersion(u8),
    /// CONNECT's reserved flag (bit 0) is set.
    ReservedConnectFlag,
    /// CONNECT has Will QoS or Will Retain set without the Will Flag.
    WillFlagsWithoutWill,
    /// CONNECT's Will QoS is 3.
    InvalidWillQoS,
    /// An MQTT 3.1.x CONNECT has the Password Flag without the User Name Flag.
    PasswordWithoutUsername,
    /// CONNACK's Acknowledge Flags have reserved bits set.
    InvalidConnAckFlags,
    /// A reason code that this packet type may not carry (or an unknown 3.1.x return code).
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The byte received.
        code: u8,
    },
    /// A Packet Identifier of 0 where one is required.
    ZeroPacketId,
    /// A PUBLISH Topic Name is empty and there is no Topic Alias.
    EmptyTopicWithoutAlias,
    /// A PUBLISH Topic Name contains `+` or `#`.
    WildcardInTopicName,
    /// SUBSCRIBE, UNSUBSCRIBE or SUBACK (or an MQTT 5.0 UNSUBACK) without a single entry.
    EmptyPayload(PacketType),
    /// Reserved bits 6–7 of a subscription options byte are set.
    ReservedSubscriptionOptions,
    /// An MQTT 3.1.x subscription options byte uses bits 2–7, which only MQTT 5.0 defines.
    V5SubscriptionOptionsBeforeV5,
    /// A subscription asks for QoS 3.
    InvalidSubscriptionQoS,
    /// A subscription has Retain Handling 3.
    InvalidRetainHandling,
    /// A shared subscription (`$share/…`) has the No Local option set.
    NoLocalOnSharedSubscription,
    /// A property identifier that MQTT 5.0 does not define.
    UnknownProperty(u8),
    /// A property that this packet type may not carry.
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet type (CONNECT also stands for the Will Properties).
        packet: PacketType,
    },
    /// A property other than User Property (or Subscription Identifier in PUBLISH) appears twice.
    DuplicateProperty(u8),
    /// Receive Maximum, Maximum Packet Size or Subscription Identifier is 0.
    ZeroPropertyValue(u8),
    /// A property that must be 0 or 1 has another value.
    InvalidBooleanProperty(u8),
    /// A Topic Alias of 0.
    TopicAliasZero,
    /// Authentication Data without an Authentication Method.
    AuthenticationDataWithoutMethod,
}

impl DecodeError {
    /// The reason code a v5 peer sends (in CONNACK or DISCONNECT) for this error.
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Self::InvalidProtocolName | Self::UnsupportedProtocolVersion(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            Self::ZeroPacketId
            | Self::EmptyTopicWithoutAlias
            | Self::InvalidSubscriptionQoS
            | Self::InvalidRetainHandling
            | Self::NoLocalOnSharedSubscription
            | Self::DuplicateProperty(_)
            | Self::ZeroPropertyValue(_)
            | Self::InvalidBooleanProperty(_)
            | Self::AuthenticationDataWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            Self::EmptyPayload(PacketType::Subscribe | PacketType::Unsubscribe) => {
                ReasonCode::PROTOCOL_ERROR
            }
            Self::WildcardInTopicName => ReasonCode::TOPIC_NAME_INVALID,
            Self::TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The normative statement (or section) of the MQTT specification that was violated.
    pub const fn rule(&self) -> &'static str {
        match self {
            Self::PacketTooLarge { .. } => "MQTT 5.0 §3.1.2.11.4 Maximum Packet Size",
            Self::MalformedVariableByteInteger => "[MQTT-1.5.5-1] Variable Byte Integer",
            Self::ReservedPacketType => "MQTT 5.0 §2.1.2 packet type 0 is reserved",
            Self::AuthBeforeV5 => "MQTT 3.1.1 §2.2.1 packet type 15 is reserved",
            Self::InvalidFixedHeaderFlags { .. } => "[MQTT-2.1.3-1] fixed header flags",
            Self::InvalidQoS => "[MQTT-3.3.1-4] PUBLISH QoS 3",
            Self::DupWithQoS0 => "[MQTT-3.3.1-2] DUP set with QoS 0",
            Self::UnexpectedEof => "MQTT 5.0 §4.13 packet shorter than its fields",
            Self::TrailingBytes(_) => "MQTT 5.0 §4.13 bytes after the last field",
            Self::InvalidUtf8 => "[MQTT-1.5.4-1] ill-formed UTF-8",
            Self::NullCharacter => "[MQTT-1.5.4-2] U+0000 in a UTF-8 string",
            Self::InvalidProtocolName => "[MQTT-3.1.2-1] protocol name",
            Self::UnsupportedProtocolVersion(_) => "[MQTT-3.1.2-2] protocol level",
            Self::ReservedConnectFlag => "[MQTT-3.1.2-3] CONNECT reserved flag",
            Self::WillFlagsWithoutWill => {
                "[MQTT-3.1.2-11] [MQTT-3.1.2-13] will QoS/retain without will"
            }
            Self::InvalidWillQoS => "[MQTT-3.1.2-12] will QoS 3",
            Self::PasswordWithoutUsername => "[MQTT-3.1.2-22] password without user name",
            Self::InvalidConnAckFlags => "[MQTT-3.2.2-1] CONNACK reserved flags",
            Self::InvalidReasonCode { .. } => "MQTT 5.0 §2.4 reason code not valid for the packet",
            Self::ZeroPacketId => "[MQTT-2.2.1-3] packet identifier 0",
            Self::EmptyTopicWithoutAlias => "[MQTT-4.7.3-1] empty topic name without topic alias",
            Self::WildcardInTopicName => "[MQTT-3.3.2-2] wildcard in topic name",
            Self::EmptyPayload(_) => "[MQTT-3.8.3-2] [MQTT-3.10.3-2] no entries",
            Self::ReservedSubscriptionOptions => "[MQTT-3.8.3-5] reserved subscription option bits",
            Self::V5SubscriptionOptionsBeforeV5 => "[MQTT-3-8.3-4] MQTT 3.1.1 reserved option bits",
            Self::InvalidSubscriptionQoS => "MQTT 5.0 §3.8.3.1 maximum QoS 3",
            Self::InvalidRetainHandling => "MQTT 5.0 §3.8.3.1 retain handling 3",
            Self::NoLocalOnSharedSubscription => "[MQTT-3.8.3-4] no local on a shared subscription",
            Self::UnknownProperty(_) => "MQTT 5.0 §2.2.2.2 unknown property identifier",
            Self::PropertyNotAllowed { .. } => {
                "MQTT 5.0 §2.2.2.2 property not valid for the packet"
            }
            Self::DuplicateProperty(_) => "MQTT 5.0 §2.2.2.2 property included more than once",
            Self::ZeroPropertyValue(_) => "MQTT 5.0 §3.1.2.11 property value 0",
            Self::InvalidBooleanProperty(_) => "MQTT 5.0 §3.1.2.11 property must be 0 or 1",
            Self::TopicAliasZero => "[MQTT-3.3.2-8] topic alias 0",
            Self::AuthenticationDataWithoutMethod => {
                "MQTT 5.0 §3.1.2.11.10 authentication data without authentication method"
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            Self::InvalidFixedHeaderFlags { packet, flags } => {
                write!(f, "invalid fixed header flags {flags:#06b} for {packet}")
            }
            Self::TrailingBytes(packet) => write!(f, "trailing bytes after {packet}"),
            Self::UnsupportedProtocolVersion(level) => {
                write!(f, "unsupported protocol level {level}")
            }
            Self::InvalidReasonCode { packet, code } => {
                write!(f, "reason code {code:#04x} is not valid in {packet}")
            }
            Self::EmptyPayload(packet) => write!(f, "{packet} without entries"),
            Self::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            Self::PropertyNotAllowed { id, packet } => {
                write!(f, "property {id:#04x} is not allowed in {packet}")
            }
            Self::DuplicateProperty(id) => write!(f, "property {id:#04x} included more than once"),
            Self::ZeroPropertyValue(id) => write!(f, "property {id:#04x} has the value 0"),
            Self::InvalidBooleanProperty(id) => write!(f, "property {id:#04x} must be 0 or 1"),
            other => f.write_str(other.rule()),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a packet built by the caller cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet would exceed the peer's Maximum Packet Size or the 268 435 455-byte
    /// Remaining Length limit.
    PacketTooLarge {
        /// Bytes the whole packet would take.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// A string or binary field is longer than 65 535 bytes.
    FieldTooLong {
        /// The field's length.
        len: usize,
    },
    /// A UTF-8 string contains U+0000.
    NullCharacter,
    /// The PUBLISH or Will Topic Name is not valid (wildcard, or empty without a Topic Alias).
    InvalidTopicName(&'static str),
    /// A SUBSCRIBE or UNSUBSCRIBE Topic Filter is not valid.
    InvalidTopicFilter(&'static str),
    /// A PUBLISH with QoS 1 or 2 has no Packet Identifier.
    MissingPacketId,
    /// A PUBLISH with QoS 0 has a Packet Identifier.
    UnexpectedPacketId,
    /// A PUBLISH with QoS 0 has DUP set.
    DupWithQoS0,
    /// SUBSCRIBE, UNSUBSCRIBE or SUBACK (or an MQTT 5.0 UNSUBACK) without entries.
    EmptyList(PacketType),
    /// A property that this packet type may not carry.
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet type (CONNECT also stands for the Will Properties).
        packet: PacketType,
    },
    /// A property value outside its range (e.g. a Subscription Identifier of 0).
    PropertyOutOfRange(u8),
    /// The packet uses something the protocol version does not have.
    NotInVersion {
        /// What was used.
        what: &'static str,
        /// The version of the encoding.
        version: ProtocolVersion,
    },
    /// A reason code this packet type may not carry in this protocol version.
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code.
        code: u8,
    },
    /// An MQTT 3.1.x CONNECT with a password but no user name.
    PasswordWithoutUsername,
    /// A shared subscription with the No Local option.
    NoLocalOnSharedSubscription,
    /// The output slice is too small; `needed` bytes are required.
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            Self::FieldTooLong { len } => write!(f, "field of {len} bytes exceeds 65535"),
            Self::NullCharacter => f.write_str("string contains U+0000"),
            Self::InvalidTopicName(why) => write!(f, "invalid topic name: {why}"),
            Self::InvalidTopicFilter(why) => write!(f, "invalid topic filter: {why}"),
            Self::MissingPacketId => f.write_str("QoS 1 or 2 PUBLISH without packet identifier"),
            Self::UnexpectedPacketId => f.write_str("QoS 0 PUBLISH with a packet identifier"),
            Self::DupWithQoS0 => f.write_str("QoS 0 PUBLISH with DUP set"),
            Self::EmptyList(packet) => write!(f, "{packet} without entries"),
            Self::PropertyNotAllowed { id, packet } => {
                write!(f, "property {id:#04x} is not allowed in {packet}")
            }
            Self::PropertyOutOfRange(id) => write!(f, "property {id:#04x} out of range"),
            Self::NotInVersion { what, version } => {
                write!(f, "{what} does not exist in MQTT {version}")
            }
            Self::InvalidReasonCode { packet, code } => {
                write!(f, "reason code {code:#04x} is not valid in {packet}")
            }
            Self::PasswordWithoutUsername => f.write_str("password without user name"),
            Self::NoLocalOnSharedSubscription => {
                f.write_str("no local option on a shared subscription")
            }
            Self::BufferTooSmall { needed } => write!(f, "output buffer too small, need {needed}"),
        }
    }
}

impl core::error::Error for EncodeError {}
