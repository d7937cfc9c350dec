//! Reason codes (MQTT 5.0 §2.4, Table 2-6) and which packets may carry each.
//!
//! MQTT 3.1.x CONNACK return codes are mapped onto the MQTT 5.0 codes with the same meaning,
//! so an application handles one type whatever the protocol version.

use core::fmt;

use crate::types::PacketType;

/// An MQTT 5.0 reason code: one byte whose meaning the spec names (MQTT 5.0 §2.4).
///
/// Values below 0x80 report success, values from 0x80 report failure.
/// The constants cover every code of Table 2-6; [`ReasonCode::name`] gives the spec's wording.
///
/// ```
/// use mqttx_codec::ReasonCode;
/// assert_eq!(ReasonCode::PACKET_TOO_LARGE.as_u8(), 0x95);
/// assert_eq!(ReasonCode::PACKET_TOO_LARGE.name(), "Packet too large");
/// assert!(ReasonCode::PACKET_TOO_LARGE.is_error());
/// assert_eq!(ReasonCode::from_u8(0x03), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReasonCode(u8);

impl ReasonCode {
    /// 0x00 Success; also Normal disconnection and Granted QoS 0.
    pub const SUCCESS: Self = Self(0x00);
    /// 0x01 Granted QoS 1 (SUBACK).
    pub const GRANTED_QOS_1: Self = Self(0x01);
    /// 0x02 Granted QoS 2 (SUBACK).
    pub const GRANTED_QOS_2: Self = Self(0x02);
    /// 0x04 Disconnect with Will Message (DISCONNECT).
    pub const DISCONNECT_WITH_WILL_MESSAGE: Self = Self(0x04);
    /// 0x10 No matching subscribers (PUBACK, PUBREC).
    pub const NO_MATCHING_SUBSCRIBERS: Self = Self(0x10);
    /// 0x11 No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: Self = Self(0x11);
    /// 0x18 Continue authentication (AUTH).
    pub const CONTINUE_AUTHENTICATION: Self = Self(0x18);
    /// 0x19 Re-authenticate (AUTH).
    pub const RE_AUTHENTICATE: Self = Self(0x19);
    /// 0x80 Unspecified error.
    pub const UNSPECIFIED_ERROR: Self = Self(0x80);
    /// 0x81 Malformed Packet.
    pub const MALFORMED_PACKET: Self = Self(0x81);
    /// 0x82 Protocol Error.
    pub const PROTOCOL_ERROR: Self = Self(0x82);
    /// 0x83 Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = Self(0x83);
    /// 0x84 Unsupported Protocol Version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(0x84);
    /// 0x85 Client Identifier not valid (CONNACK).
    pub const CLIENT_IDENTIFIER_NOT_VALID: Self = Self(0x85);
    /// 0x86 Bad User Name or Password (CONNACK).
    pub const BAD_USER_NAME_OR_PASSWORD: Self = Self(0x86);
    /// 0x87 Not authorized.
    pub const NOT_AUTHORIZED: Self = Self(0x87);
    /// 0x88 Server unavailable (CONNACK).
    pub const SERVER_UNAVAILABLE: Self = Self(0x88);
    /// 0x89 Server busy.
    pub const SERVER_BUSY: Self = Self(0x89);
    /// 0x8A Banned (CONNACK).
    pub const BANNED: Self = Self(0x8A);
    /// 0x8B Server shutting down (DISCONNECT).
    pub const SERVER_SHUTTING_DOWN: Self = Self(0x8B);
    /// 0x8C Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: Self = Self(0x8C);
    /// 0x8D Keep Alive timeout (DISCONNECT).
    pub const KEEP_ALIVE_TIMEOUT: Self = Self(0x8D);
    /// 0x8E Session taken over (DISCONNECT).
    pub const SESSION_TAKEN_OVER: Self = Self(0x8E);
    /// 0x8F Topic Filter invalid.
    pub const TOPIC_FILTER_INVALID: Self = Self(0x8F);
    /// 0x90 Topic Name invalid.
    pub const TOPIC_NAME_INVALID: Self = Self(0x90);
    /// 0x91 Packet Identifier in use.
    pub const PACKET_IDENTIFIER_IN_USE: Self = Self(0x91);
    /// 0x92 Packet Identifier not found.
    pub const PACKET_IDENTIFIER_NOT_FOUND: Self = Self(0x92);
    /// 0x93 Receive Maximum exceeded (DISCONNECT).
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = Self(0x93);
    /// 0x94 Topic Alias invalid (DISCONNECT).
    pub const TOPIC_ALIAS_INVALID: Self = Self(0x94);
    /// 0x95 Packet too large.
    pub const PACKET_TOO_LARGE: Self = Self(0x95);
    /// 0x96 Message rate too high (DISCONNECT).
    pub const MESSAGE_RATE_TOO_HIGH: Self = Self(0x96);
    /// 0x97 Quota exceeded.
    pub const QUOTA_EXCEEDED: Self = Self(0x97);
    /// 0x98 Administrative action (DISCONNECT).
    pub const ADMINISTRATIVE_ACTION: Self = Self(0x98);
    /// 0x99 Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: Self = Self(0x99);
    /// 0x9A Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: Self = Self(0x9A);
    /// 0x9B QoS not supported.
    pub const QOS_NOT_SUPPORTED: Self = Self(0x9B);
    /// 0x9C Use another server.
    pub const USE_ANOTHER_SERVER: Self = Self(0x9C);
    /// 0x9D Server moved.
    pub const SERVER_MOVED: Self = Self(0x9D);
    /// 0x9E Shared Subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0x9E);
    /// 0x9F Connection rate exceeded.
    pub const CONNECTION_RATE_EXCEEDED: Self = Self(0x9F);
    /// 0xA0 Maximum connect time (DISCONNECT).
    pub const MAXIMUM_CONNECT_TIME: Self = Self(0xA0);
    /// 0xA1 Subscription Identifiers not supported.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Self = Self(0xA1);
    /// 0xA2 Wildcard Subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0xA2);
    /// 0x00 Normal disconnection (DISCONNECT); the same value as [`ReasonCode::SUCCESS`].
    pub const NORMAL_DISCONNECTION: Self = Self(0x00);
    /// 0x00 Granted QoS 0 (SUBACK); the same value as [`ReasonCode::SUCCESS`].
    pub const GRANTED_QOS_0: Self = Self(0x00);

    /// The reason code for `value`, or `None` when Table 2-6 does not define it.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x00 | 0x01 | 0x02 | 0x04 | 0x10 | 0x11 | 0x18 | 0x19 | 0x80 | 0x81 | 0x82 | 0x83
            | 0x84 | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | 0x8A | 0x8B | 0x8C | 0x8D | 0x8E | 0x8F
            | 0x90 | 0x91 | 0x92 | 0x93 | 0x94 | 0x95 | 0x96 | 0x97 | 0x98 | 0x99 | 0x9A | 0x9B
            | 0x9C | 0x9D | 0x9E | 0x9F | 0xA0 | 0xA1 | 0xA2 => Some(Self(value)),
            _ => None,
        }
    }

    /// The byte on the wire.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// Whether this code reports a failure (0x80 and above).
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The spec's name for the code (for 0x00, "Success").
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x00 => "Success",
            0x01 => "Granted QoS 1",
            0x02 => "Granted QoS 2",
            0x04 => "Disconnect with Will Message",
            0x10 => "No matching subscribers",
            0x11 => "No subscription existed",
            0x18 => "Continue authentication",
            0x19 => "Re-authenticate",
            0x80 => "Unspecified error",
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x83 => "Implementation specific error",
            0x84 => "Unsupported Protocol Version",
            0x85 => "Client Identifier not valid",
            0x86 => "Bad User Name or Password",
            0x87 => "Not authorized",
            0x88 => "Server unavailable",
            0x89 => "Server busy",
            0x8A => "Banned",
            0x8B => "Server shutting down",
            0x8C => "Bad authentication method",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x8F => "Topic Filter invalid",
            0x90 => "Topic Name invalid",
            0x91 => "Packet Identifier in use",
            0x92 => "Packet Identifier not found",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x96 => "Message rate too high",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x99 => "Payload format invalid",
            0x9A => "Retain not supported",
            0x9B => "QoS not supported",
            0x9C => "Use another server",
            0x9D => "Server moved",
            0x9E => "Shared Subscriptions not supported",
            0x9F => "Connection rate exceeded",
            0xA0 => "Maximum connect time",
            0xA1 => "Subscription Identifiers not supported",
            0xA2 => "Wildcard Subscriptions not supported",
            _ => "Unknown reason code",
        }
    }

    /// Whether a packet of type `packet` may carry this code in MQTT 5.0 (Table 2-6 and the
    /// per-packet tables of §3). SUBACK and UNSUBACK carry one code per filter.
    pub const fn is_valid_for(self, packet: PacketType) -> bool {
        let v = self.0;
        match packet {
            PacketType::ConnAck => {
                matches!(v, 0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F)
            }
            PacketType::PubAck | PacketType::PubRec => {
                matches!(
                    v,
                    0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
                )
            }
            PacketType::PubRel | PacketType::PubComp => matches!(v, 0x00 | 0x92),
            PacketType::SubAck => {
                matches!(
                    v,
                    0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
                )
            }
            PacketType::UnsubAck => matches!(v, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
            PacketType::Disconnect => matches!(
                v,
                0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
            ),
            PacketType::Auth => matches!(v, 0x00 | 0x18 | 0x19),
            _ => false,
        }
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code (0–5) with the same meaning, if there is one.
    pub const fn to_v3_connack(self) -> Option<u8> {
        match self.0 {
            0x00 => Some(0),
            0x84 => Some(1),
            0x85 => Some(2),
            0x88 => Some(3),
            0x86 => Some(4),
            0x87 => Some(5),
            _ => None,
        }
    }

    /// The reason code for an MQTT 3.1/3.1.1 CONNACK return code (0–5).
    pub const fn from_v3_connack(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::SUCCESS),
            1 => Some(Self::UNSUPPORTED_PROTOCOL_VERSION),
            2 => Some(Self::CLIENT_IDENTIFIER_NOT_VALID),
            3 => Some(Self::SERVER_UNAVAILABLE),
            4 => Some(Self::BAD_USER_NAME_OR_PASSWORD),
            5 => Some(Self::NOT_AUTHORIZED),
            _ => None,
        }
    }

    /// The MQTT 3.1.1 SUBACK return code for this code: 0x00–0x02 or 0x80 for any failure.
    pub const fn to_v3_suback(self) -> u8 {
        if self.0 <= 0x02 { self.0 } else { 0x80 }
    }
}

impl Default for ReasonCode {
    fn default() -> Self {
        Self::SUCCESS
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReasonCode(0x{:02X} {})", self.0, self.name())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} {}", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_code_round_trips_and_has_a_name() {
        let mut defined = 0;
        for v in 0..=255u8 {
            if let Some(code) = ReasonCode::from_u8(v) {
                defined += 1;
                assert_eq!(code.as_u8(), v);
                assert_ne!(code.name(), "Unknown reason code");
            }
        }
        // Table 2-6 lists 43 distinct values.
        assert_eq!(defined, 43);
    }

    #[test]
    fn v3_connack_mapping_is_a_bijection_on_0_to_5() {
        for v in 0..=5u8 {
            let code = ReasonCode::from_v3_connack(v).unwrap();
            assert_eq!(code.to_v3_connack(), Some(v));
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::QUOTA_EXCEEDED.to_v3_connack(), None);
    }
}
