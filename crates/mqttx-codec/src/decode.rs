//! Decoding: from bytes to a borrowed [`Packet`], with every rule of the spec checked.

use alloc::borrow::Cow;

use crate::error::DecodeError;
use crate::items::Items;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will,
};
use crate::properties::{PropCtx, Props, decode_properties};
use crate::reason::ReasonCode;
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::wire::{Reader, read_varint};

/// The default Maximum Packet Size a decoder accepts: 1 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;

/// What the decoder needs to know besides the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeContext {
    /// The connection's protocol version (CONNECT carries its own and ignores this).
    pub version: ProtocolVersion,
    /// The largest packet accepted, fixed header included. Finite by default
    /// ([`DEFAULT_MAX_PACKET_SIZE`]).
    pub max_packet_size: u32,
}

impl DecodeContext {
    /// A context for `version` with the default maximum packet size.
    pub const fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }

    /// The same context with another maximum packet size.
    #[must_use]
    pub const fn with_max_packet_size(mut self, max: u32) -> Self {
        self.max_packet_size = max;
        self
    }
}

impl Default for DecodeContext {
    fn default() -> Self {
        Self::new(ProtocolVersion::V5)
    }
}

/// A parsed fixed header (MQTT 5.0 §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameHeader {
    /// The first byte: packet type and flags.
    pub first_byte: u8,
    /// Bytes in the fixed header: 1 plus the Remaining Length's own bytes.
    pub header_len: usize,
    /// The Remaining Length.
    pub remaining_len: u32,
}

impl FrameHeader {
    /// Bytes the whole packet takes.
    #[inline]
    pub const fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len as usize
    }
}

/// Reads the fixed header at the start of `buf` and checks the declared size against
/// `max_packet_size`, before any of the body needs to be present.
///
/// `Ok(None)` means the header itself is not complete yet.
#[inline]
pub fn decode_header(buf: &[u8], max_packet_size: u32) -> Result<Option<FrameHeader>, DecodeError> {
    let Some((&first_byte, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let Some((remaining_len, used)) = read_varint(rest)? else {
        return Ok(None);
    };
    let header = FrameHeader {
        first_byte,
        header_len: 1 + used,
        remaining_len,
    };
    let size = header.frame_len();
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    Ok(Some(header))
}

/// Decodes one packet from the start of `buf`.
///
/// Returns the packet and the number of bytes it took, or `Ok(None)` when `buf` does not yet
/// hold the whole packet. The packet borrows from `buf`. The declared size is checked against
/// `cx.max_packet_size` as soon as the fixed header is readable, so an oversized packet is an
/// error before its body arrives.
///
/// ```
/// use mqttx_codec::{DecodeContext, Packet, ProtocolVersion, decode};
/// let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
/// let (packet, used) = decode(&bytes, &DecodeContext::new(ProtocolVersion::V311))?.unwrap();
/// assert_eq!(used, bytes.len());
/// let Packet::Publish(publish) = packet else { unreachable!() };
/// assert_eq!(publish.topic, "a/b");
/// assert_eq!(&publish.payload[..], b"hi");
/// # Ok::<(), mqttx_codec::DecodeError>(())
/// ```
#[inline]
pub fn decode<'a>(
    buf: &'a [u8],
    cx: &DecodeContext,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    let Some(header) = decode_header(buf, cx.max_packet_size)? else {
        return Ok(None);
    };
    let end = header.frame_len();
    let Some(body) = buf.get(header.header_len..end) else {
        return Ok(None);
    };
    decode_body(header.first_byte, body, cx.version).map(|p| Some((p, end)))
}

/// Decodes a packet whose fixed header has been read: `body` is exactly the Remaining Length
/// bytes after it. Any field that runs past `body` is Malformed.
pub fn decode_body(
    first_byte: u8,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Packet<'_>, DecodeError> {
    let flags = first_byte & 0x0F;
    let Some(kind) = PacketType::from_u8(first_byte >> 4) else {
        return Err(DecodeError::ReservedPacketType);
    };
    if kind == PacketType::Auth && !version.is_v5() {
        return Err(DecodeError::AuthBeforeV5);
    }
    // [MQTT-2.1.3-1] Where a flag bit is marked as "Reserved", it is reserved for future use
    // and MUST be set to the value listed. PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010.
    // MQTT 3.1 §2.1 let a resent PUBREL, SUBSCRIBE or UNSUBSCRIBE carry DUP (bit 3): accept it
    // there, and only there.
    let dup_allowed = version == ProtocolVersion::V31
        && matches!(
            kind,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe
        );
    let checked = if dup_allowed { flags & 0b0111 } else { flags };
    let expected_flags = match kind {
        PacketType::Publish => flags,
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if checked != expected_flags {
        return Err(DecodeError::InvalidFixedHeaderFlags {
            packet: kind,
            flags,
        });
    }
    let mut r = Reader::new(body);
    let v5 = version.is_v5();
    let packet = match kind {
        PacketType::Publish => Packet::Publish(publish(flags, &mut r, v5)?),
        PacketType::PubAck => Packet::PubAck(pub_response(kind, &mut r, v5)?),
        PacketType::PubRec => Packet::PubRec(pub_response(kind, &mut r, v5)?),
        PacketType::PubRel => Packet::PubRel(pub_response(kind, &mut r, v5)?),
        PacketType::PubComp => Packet::PubComp(pub_response(kind, &mut r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Connect => Packet::Connect(connect(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(connack(&mut r, v5)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, v5)?),
        PacketType::Disconnect => Packet::Disconnect(disconnect(&mut r, v5)?),
        PacketType::Auth => Packet::Auth(auth(&mut r)?),
    };
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(kind));
    }
    Ok(packet)
}

#[inline]
fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    // [MQTT-2.2.1-3] … MUST contain a non-zero 16-bit Packet Identifier.
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

#[inline]
fn no_properties<'a>() -> Props<'a> {
    Props::new()
}

fn reason(r: &mut Reader<'_>, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    match ReasonCode::from_u8(code) {
        Some(rc) if rc.is_valid_for(packet) => Ok(rc),
        _ => Err(DecodeError::InvalidReasonCode { packet, code }),
    }
}

/// Checks that a Topic Name (already free of wildcards, see `Reader::topic_name`) is not empty,
/// unless a Topic Alias stands in for it.
#[inline]
fn topic_name(topic: &str, alias: bool) -> Result<(), DecodeError> {
    if topic.is_empty() {
        // [MQTT-4.7.3-1] All Topic Names and Topic Filters MUST be at least one character long;
        // MQTT 5.0 §3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there
        // is no Topic Alias."
        if alias {
            return Ok(());
        }
        return Err(DecodeError::EmptyTopicWithoutAlias);
    }
    Ok(())
}

#[inline]
fn publish<'a>(flags: u8, r: &mut Reader<'a>, v5: bool) -> Result<Publish<'a>, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    // [MQTT-3.3.1-4] A PUBLISH Packet MUST NOT have both QoS bits set to 1.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    // [MQTT-3.3.1-2] The DUP flag MUST be set to 0 for all QoS 0 messages.
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupWithQoS0);
    }
    let topic = r.topic_name()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = if v5 {
        decode_properties(r, PropCtx::Publish)?
    } else {
        no_properties()
    };
    topic_name(topic, properties.topic_alias.is_some())?;
    let payload = r.take(r.remaining())?;
    Ok(Publish {
        dup,
        qos,
        retain,
        topic: Cow::Borrowed(topic),
        packet_id,
        properties,
        payload: Cow::Borrowed(payload),
    })
}

#[inline]
fn pub_response<'a>(
    kind: PacketType,
    r: &mut Reader<'a>,
    v5: bool,
) -> Result<PubResponse<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut out = PubResponse::new(packet_id);
    // MQTT 5.0 §3.4.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
    // is 0x00 (Success) and there are no Properties." §3.4.2.2: "If the Remaining Length is
    // less than 4 there is no Property Length and the value of 0 is used."
    if v5 && !r.is_empty() {
        out.reason_code = reason(r, kind)?;
        if !r.is_empty() {
            out.properties = decode_properties(r, PropCtx::PubResp(kind))?;
        }
    }
    Ok(out)
}

fn connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    // [MQTT-3.1.2-1] The protocol name MUST be the UTF-8 String "MQTT" (3.1 used "MQIsdp").
    if name != b"MQTT" && name != b"MQIsdp" {
        return Err(DecodeError::InvalidProtocolName);
    }
    // [MQTT-3.1.2-2] The Server MUST respond … with return code 0x01 (unacceptable protocol
    // level) and then disconnect the Client if the Protocol Level is not supported.
    let protocol = match (name, level) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocolVersion(level)),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    // [MQTT-3.1.2-3] The Server MUST validate that the reserved flag in the CONNECT packet is
    // set to 0.
    if flags & 0b0000_0001 != 0 {
        return Err(DecodeError::ReservedConnectFlag);
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    // [MQTT-3.1.2-11] If the Will Flag is set to 0, then the Will QoS MUST be set to 0.
    // [MQTT-3.1.2-13] If the Will Flag is set to 0, then Will Retain MUST be set to 0.
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    // [MQTT-3.1.2-12] … the value of Will QoS can be 0, 1 or 2. It MUST NOT be 3.
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?;
    // [MQTT-3.1.2-22] (3.1.1) If the User Name Flag is set to 0, the Password Flag MUST be 0.
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        decode_properties(r, PropCtx::Connect)?
    } else {
        no_properties()
    };
    let client_id = Cow::Borrowed(r.string()?);
    let will = if will_flag {
        let properties = if v5 {
            decode_properties(r, PropCtx::Will)?
        } else {
            no_properties()
        };
        let topic = r.topic_name()?;
        topic_name(topic, false)?;
        let payload = r.binary()?;
        Some(alloc::boxed::Box::new(Will {
            qos: will_qos,
            retain: will_retain,
            properties,
            topic: Cow::Borrowed(topic),
            payload: Cow::Borrowed(payload),
        }))
    } else {
        None
    };
    let username = if username_flag {
        Some(Cow::Borrowed(r.string()?))
    } else {
        None
    };
    let password = if password_flag {
        Some(Cow::Borrowed(r.binary()?))
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn connack<'a>(r: &mut Reader<'a>, v5: bool) -> Result<ConnAck<'a>, DecodeError> {
    let flags = r.u8()?;
    // [MQTT-3.2.2-1] Byte 1 is the "Connect Acknowledge Flags". Bits 7-1 are reserved and MUST
    // be set to 0.
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::InvalidConnAckFlags);
    }
    let session_present = flags & 1 != 0;
    let (reason_code, properties) = if v5 {
        let rc = reason(r, PacketType::ConnAck)?;
        (rc, decode_properties(r, PropCtx::ConnAck)?)
    } else {
        let code = r.u8()?;
        let rc = ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?;
        (rc, no_properties())
    };
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

fn subscribe<'a>(r: &mut Reader<'a>, v5: bool) -> Result<Subscribe<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        decode_properties(r, PropCtx::Subscribe)?
    } else {
        no_properties()
    };
    let payload = r.rest();
    let mut count = 0usize;
    while !r.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        // [MQTT-3.8.3-5] The Server MUST treat a SUBSCRIBE packet as malformed if any of the
        // Reserved bits in the Payload are non-zero.
        if options & 0b1100_0000 != 0 {
            return Err(DecodeError::ReservedSubscriptionOptions);
        }
        // 3.1.1 [MQTT-3-8.3-4]: bits 7-2 are reserved; MQTT 5.0 defines bits 5-2.
        if !v5 && options & 0b0011_1100 != 0 {
            return Err(DecodeError::V5SubscriptionOptionsBeforeV5);
        }
        // "It is a Protocol Error if the Maximum QoS field has the value 3." (§3.8.3.1)
        if options & 0b11 == 0b11 {
            return Err(DecodeError::InvalidSubscriptionQoS);
        }
        // "It is a Protocol Error to send a Retain Handling value of 3." (§3.8.3.1)
        if (options >> 4) & 0b11 == 0b11 {
            return Err(DecodeError::InvalidRetainHandling);
        }
        // [MQTT-3.8.3-4] It is a Protocol Error to set the No Local bit to 1 on a Shared
        // Subscription.
        if options & 0b0100 != 0 && filter.starts_with("$share/") {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        count += 1;
    }
    // [MQTT-3.8.3-2] The payload of a SUBSCRIBE packet MUST contain at least one Topic Filter
    // and Subscription Options pair.
    if count == 0 {
        return Err(DecodeError::EmptyPayload(PacketType::Subscribe));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters: Items::from_wire(payload, count),
    })
}

fn suback<'a>(r: &mut Reader<'a>, v5: bool) -> Result<SubAck<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        decode_properties(r, PropCtx::SubAck)?
    } else {
        no_properties()
    };
    let codes = r.take(r.remaining())?;
    if codes.is_empty() {
        return Err(DecodeError::EmptyPayload(PacketType::SubAck));
    }
    for &code in codes {
        // 3.1.1 [MQTT-3.9.3-2]: SUBACK return codes other than 0x00, 0x01, 0x02 and 0x80 are
        // reserved and MUST NOT be used. MQTT 5.0 §3.9.3 lists its reason codes.
        let ok = if v5 {
            ReasonCode::from_u8(code).is_some_and(|rc| rc.is_valid_for(PacketType::SubAck))
        } else {
            matches!(code, 0x00..=0x02 | 0x80)
        };
        if !ok {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            });
        }
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes: Items::from_wire(codes, codes.len()),
    })
}

fn unsubscribe<'a>(r: &mut Reader<'a>, v5: bool) -> Result<Unsubscribe<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        decode_properties(r, PropCtx::Unsubscribe)?
    } else {
        no_properties()
    };
    let payload = r.rest();
    let mut count = 0usize;
    while !r.is_empty() {
        r.string()?;
        count += 1;
    }
    // [MQTT-3.10.3-2] The Payload of an UNSUBSCRIBE packet MUST contain at least one Topic
    // Filter.
    if count == 0 {
        return Err(DecodeError::EmptyPayload(PacketType::Unsubscribe));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters: Items::from_wire(payload, count),
    })
}

fn unsuback<'a>(r: &mut Reader<'a>, v5: bool) -> Result<UnsubAck<'a>, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 {
        // 3.1.1 §3.11.3: the UNSUBACK Packet has no payload (trailing bytes are caught by the
        // caller).
        return Ok(UnsubAck {
            packet_id,
            properties: no_properties(),
            reason_codes: Items::new(),
        });
    }
    let properties = decode_properties(r, PropCtx::UnsubAck)?;
    let codes = r.take(r.remaining())?;
    if codes.is_empty() {
        return Err(DecodeError::EmptyPayload(PacketType::UnsubAck));
    }
    for &code in codes {
        if !ReasonCode::from_u8(code).is_some_and(|rc| rc.is_valid_for(PacketType::UnsubAck)) {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::UnsubAck,
                code,
            });
        }
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes: Items::from_wire(codes, codes.len()),
    })
}

fn disconnect<'a>(r: &mut Reader<'a>, v5: bool) -> Result<Disconnect<'a>, DecodeError> {
    let mut out = Disconnect::default();
    // MQTT 5.0 §3.14.2.1: "If the Remaining Length is less than 1 the value of 0x00 (Normal
    // disconnection) is used." §3.14.2.2.1: "If the Remaining Length is less than 2, a value of
    // 0 is used." 3.1.x DISCONNECT has no variable header.
    if v5 && !r.is_empty() {
        out.reason_code = reason(r, PacketType::Disconnect)?;
        if !r.is_empty() {
            out.properties = decode_properties(r, PropCtx::Disconnect)?;
        }
    }
    Ok(out)
}

fn auth<'a>(r: &mut Reader<'a>) -> Result<Auth<'a>, DecodeError> {
    let mut out = Auth::default();
    // MQTT 5.0 §3.15.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
    // is 0x00 (Success) and there are no Properties. In this case the AUTH has a Remaining
    // Length of 0."
    if !r.is_empty() {
        out.reason_code = reason(r, PacketType::Auth)?;
        if !r.is_empty() {
            out.properties = decode_properties(r, PropCtx::Auth)?;
        }
    }
    Ok(out)
}
