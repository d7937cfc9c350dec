//! Encoding: from a [`Packet`] to bytes, after the same validation the decoder applies.
//!
//! Every encode first walks the packet once to validate it and compute its exact size, then
//! writes it in one pass. Nothing is written when validation fails, and no length field can
//! wrap: a field over 65 535 bytes or a packet over the size limit is an error.

use alloc::vec::Vec;

use crate::error::EncodeError;
use crate::items::Items;
use crate::items::options_from_byte;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use crate::properties::{
    PropCtx, Props, check_bin, check_str, properties_len, with_prefix, write_properties,
};
use crate::reason::ReasonCode;
use crate::topic;
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS, SubscriptionOptions};
use crate::wire::{MAX_VARINT, Out, Reader, Scan, SliceOut, scan, varint_len};

/// The largest packet MQTT can express: a 5-byte fixed header and a 268 435 455-byte body.
pub const MAX_PACKET_SIZE: u32 = 268_435_460;

/// What the encoder needs to know besides the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeContext {
    /// The connection's protocol version (a CONNECT uses its own `protocol` field).
    pub version: ProtocolVersion,
    /// The largest packet the peer accepts (its Maximum Packet Size); the protocol limit when
    /// the peer did not say.
    pub max_packet_size: u32,
}

impl EncodeContext {
    /// A context for `version` limited only by the protocol's own maximum.
    pub const fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// The same context with the peer's Maximum Packet Size.
    #[must_use]
    pub const fn with_max_packet_size(mut self, max: u32) -> Self {
        self.max_packet_size = max;
        self
    }
}

impl Default for EncodeContext {
    fn default() -> Self {
        Self::new(ProtocolVersion::V5)
    }
}

/// The sizes computed by validation, used by the write pass.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    /// Remaining Length.
    remaining: usize,
    /// Content length of the packet's properties.
    props: usize,
    /// Content length of the Will Properties.
    will_props: usize,
    /// Bytes of the PUBLISH payload, for the header-only encode.
    payload: usize,
}

impl Plan {
    fn total(&self) -> usize {
        1 + varint_len(u32::try_from(self.remaining).unwrap_or(u32::MAX)) + self.remaining
    }
}

/// Encodes `packet`, appending it to `out`.
///
/// ```
/// use mqttx_codec::{EncodeContext, Packet, ProtocolVersion, Publish, encode};
/// let mut out = Vec::new();
/// let publish = Publish::new("a/b", &b"hi"[..]);
/// encode(&Packet::Publish(publish), &EncodeContext::new(ProtocolVersion::V311), &mut out)?;
/// assert_eq!(out, [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i']);
/// # Ok::<(), mqttx_codec::EncodeError>(())
/// ```
#[inline]
pub fn encode(
    packet: &Packet<'_>,
    cx: &EncodeContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    // The hot packets take a direct path; the rest share the generic plan/write passes.
    match packet {
        Packet::Publish(p) => {
            let v5 = cx.version.is_v5();
            let plan = publish_plan(p, v5)?;
            check_size(&plan, cx)?;
            out.reserve(plan.total());
            write_publish(p, v5, &plan, out, true);
            Ok(())
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r)
            if is_short_ack(r) =>
        {
            // Packet type in bits 7-4; PUBREL alone carries the flags 0b0010 [MQTT-3.6.1-1].
            let kind = packet.packet_type();
            let flags = if kind == PacketType::PubRel {
                0b0010
            } else {
                0
            };
            short_ack(((kind as u8) << 4) | flags, r, out);
            Ok(())
        }
        Packet::PingReq => {
            out.extend_from_slice(&[0xC0, 0x00]);
            Ok(())
        }
        Packet::PingResp => {
            out.extend_from_slice(&[0xD0, 0x00]);
            Ok(())
        }
        _ => {
            let plan = plan(packet, cx)?;
            out.reserve(plan.total());
            write(packet, cx, &plan, out, true);
            Ok(())
        }
    }
}

/// Whether an acknowledgement has the two-byte form of every version: Success and no
/// properties (MQTT 5.0 §3.4.2.1 lets the Reason Code and Property Length be omitted).
#[inline(always)]
fn is_short_ack(r: &PubResponse<'_>) -> bool {
    r.reason_code == ReasonCode::SUCCESS && r.properties.as_option().is_none()
}

#[inline(always)]
fn short_ack(first: u8, r: &PubResponse<'_>, out: &mut Vec<u8>) {
    let [hi, lo] = r.packet_id.get().to_be_bytes();
    out.extend_from_slice(&[first, 0x02, hi, lo]);
}

/// Encodes `packet` into the start of `buf` and returns the number of bytes written.
///
/// Fails with [`EncodeError::BufferTooSmall`] (writing nothing) when `buf` is too short.
pub fn encode_to_slice(
    packet: &Packet<'_>,
    cx: &EncodeContext,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let plan = plan(packet, cx)?;
    let needed = plan.total();
    if buf.len() < needed {
        return Err(EncodeError::BufferTooSmall { needed });
    }
    let mut out = SliceOut { buf, pos: 0 };
    write(packet, cx, &plan, &mut out, true);
    Ok(out.pos)
}

/// The number of bytes `encode` would write, after the same validation.
pub fn encoded_len(packet: &Packet<'_>, cx: &EncodeContext) -> Result<usize, EncodeError> {
    plan(packet, cx).map(|p| p.total())
}

/// Encodes everything of a PUBLISH but its payload, appending it to `out`.
///
/// The Remaining Length counts the payload, so writing `publish.payload` right after these
/// bytes (for example with a vectored write) completes the packet without copying the payload.
/// Returns the number of header bytes written.
///
/// ```
/// use mqttx_codec::{EncodeContext, ProtocolVersion, Publish, encode_publish_header};
/// let publish = Publish::new("t", vec![0u8; 100_000]);
/// let mut head = Vec::new();
/// let n = encode_publish_header(&publish, &EncodeContext::new(ProtocolVersion::V311), &mut head)?;
/// assert_eq!(n, head.len());
/// assert_eq!(head, [0x30, 0xA3, 0x8D, 0x06, 0x00, 0x01, b't']);
/// # Ok::<(), mqttx_codec::EncodeError>(())
/// ```
pub fn encode_publish_header(
    publish: &Publish<'_>,
    cx: &EncodeContext,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let plan = publish_plan(publish, cx.version.is_v5())?;
    check_size(&plan, cx)?;
    let before = out.len();
    out.reserve(plan.total() - plan.payload);
    write_publish(publish, cx.version.is_v5(), &plan, out, false);
    Ok(out.len() - before)
}

fn check_size(plan: &Plan, cx: &EncodeContext) -> Result<(), EncodeError> {
    if plan.remaining > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge {
            size: plan.remaining + 5,
            max: MAX_PACKET_SIZE,
        });
    }
    let size = plan.total();
    if size > cx.max_packet_size as usize {
        return Err(EncodeError::PacketTooLarge {
            size,
            max: cx.max_packet_size,
        });
    }
    Ok(())
}

fn plan(packet: &Packet<'_>, cx: &EncodeContext) -> Result<Plan, EncodeError> {
    let v5 = cx.version.is_v5();
    let plan = match packet {
        Packet::Connect(p) => connect_plan(p)?,
        Packet::ConnAck(p) => connack_plan(p, v5)?,
        Packet::Publish(p) => publish_plan(p, v5)?,
        Packet::PubAck(p) => pub_response_plan(p, PacketType::PubAck, cx.version)?,
        Packet::PubRec(p) => pub_response_plan(p, PacketType::PubRec, cx.version)?,
        Packet::PubRel(p) => pub_response_plan(p, PacketType::PubRel, cx.version)?,
        Packet::PubComp(p) => pub_response_plan(p, PacketType::PubComp, cx.version)?,
        Packet::Subscribe(p) => subscribe_plan(p, cx.version)?,
        Packet::SubAck(p) => suback_plan(p, v5)?,
        Packet::Unsubscribe(p) => unsubscribe_plan(p, cx.version)?,
        Packet::UnsubAck(p) => unsuback_plan(p, cx.version)?,
        Packet::PingReq | Packet::PingResp => Plan::default(),
        Packet::Disconnect(p) => disconnect_plan(p, cx.version)?,
        Packet::Auth(p) => auth_plan(p, cx.version)?,
    };
    check_size(&plan, cx)?;
    Ok(plan)
}

/// Properties are MQTT 5.0 only: for 3.1.x, an empty set is required rather than silently
/// dropping what the caller asked to send.
#[inline]
fn props(p: &Props<'_>, ctx: PropCtx, version: ProtocolVersion) -> Result<usize, EncodeError> {
    if version.is_v5() {
        if let Some(raw) = p.raw_for(ctx) {
            // Decoded for this very place and unmodified since: already valid.
            return Ok(raw.len());
        }
    }
    let Some(p) = p.as_option() else {
        return Ok(0);
    };
    if version.is_v5() {
        properties_len(p, ctx)
    } else if p.is_empty() {
        Ok(0)
    } else {
        Err(EncodeError::NotInVersion {
            what: "properties",
            version,
        })
    }
}

fn check_reason(
    code: ReasonCode,
    packet: PacketType,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        if code.is_valid_for(packet) {
            return Ok(());
        }
        return Err(EncodeError::InvalidReasonCode {
            packet,
            code: code.as_u8(),
        });
    }
    if code == ReasonCode::SUCCESS {
        Ok(())
    } else {
        Err(EncodeError::NotInVersion {
            what: "reason codes",
            version,
        })
    }
}

fn topic_name_check(topic: &str, alias: bool) -> Result<usize, EncodeError> {
    if topic.is_empty() && !alias {
        return Err(EncodeError::InvalidTopicName(
            "empty topic name without topic alias",
        ));
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { len: topic.len() });
    }
    match scan(topic.as_bytes(), true) {
        Scan::Clean => Ok(2 + topic.len()),
        Scan::Nul => Err(EncodeError::NullCharacter),
        Scan::Wildcard => Err(EncodeError::InvalidTopicName(
            "[MQTT-3.3.2-2] wildcard in topic name",
        )),
    }
}

fn connect_plan(p: &Connect<'_>) -> Result<Plan, EncodeError> {
    let version = p.protocol;
    let v5 = version.is_v5();
    // Protocol Name, Protocol Level, Connect Flags, Keep Alive.
    let mut n = 2 + version.protocol_name().len() + 1 + 1 + 2;
    let props_len = props(&p.properties, PropCtx::Connect, version)?;
    if v5 {
        n += with_prefix(props_len);
    }
    n += check_str(&p.client_id)?;
    let mut will_props = 0;
    if let Some(will) = &p.will {
        will_props = props(&will.properties, PropCtx::Will, version)?;
        if v5 {
            n += with_prefix(will_props);
        }
        n += topic_name_check(&will.topic, false)?;
        n += check_bin(&will.payload)?;
    }
    if let Some(u) = &p.username {
        n += check_str(u)?;
    }
    if let Some(pw) = &p.password {
        // [MQTT-3.1.2-22] (3.1.1) If the User Name Flag is set to 0, the Password Flag MUST be 0.
        if !v5 && p.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        n += check_bin(pw)?;
    }
    Ok(Plan {
        remaining: n,
        props: props_len,
        will_props,
        payload: 0,
    })
}

fn connack_plan(p: &ConnAck<'_>, v5: bool) -> Result<Plan, EncodeError> {
    if v5 {
        check_reason(p.reason_code, PacketType::ConnAck, ProtocolVersion::V5)?;
        let props_len = props(&p.properties, PropCtx::ConnAck, ProtocolVersion::V5)?;
        Ok(Plan {
            remaining: 2 + with_prefix(props_len),
            props: props_len,
            ..Plan::default()
        })
    } else {
        if p.reason_code.to_v3_connack().is_none() {
            return Err(EncodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: p.reason_code.as_u8(),
            });
        }
        props(&p.properties, PropCtx::ConnAck, ProtocolVersion::V311)?;
        Ok(Plan {
            remaining: 2,
            ..Plan::default()
        })
    }
}

#[inline]
fn publish_plan(p: &Publish<'_>, v5: bool) -> Result<Plan, EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => return Err(EncodeError::MissingPacketId),
        _ => {}
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::DupWithQoS0);
    }
    let mut n = topic_name_check(&p.topic, v5 && p.properties.topic_alias.is_some())?;
    if p.packet_id.is_some() {
        n += 2;
    }
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let props_len = props(&p.properties, PropCtx::Publish, version)?;
    if v5 {
        n += with_prefix(props_len);
    }
    n += p.payload.len();
    Ok(Plan {
        remaining: n,
        props: props_len,
        will_props: 0,
        payload: p.payload.len(),
    })
}

fn pub_response_plan(
    p: &PubResponse<'_>,
    kind: PacketType,
    version: ProtocolVersion,
) -> Result<Plan, EncodeError> {
    // The Packet Identifier, then the omissible Reason Code and properties (§3.4.2.1).
    short_form_plan(
        p.reason_code,
        &p.properties,
        kind,
        PropCtx::PubResp(kind),
        version,
        2,
    )
}

/// The plan of a packet whose Reason Code and Property Length may be left out: MQTT 5.0 omits
/// both for Success without properties, and the Property Length alone when there are none
/// (§3.4.2.1, §3.14.2.1). `fixed` counts the bytes before the Reason Code.
fn short_form_plan(
    reason_code: ReasonCode,
    properties: &Props<'_>,
    kind: PacketType,
    ctx: PropCtx,
    version: ProtocolVersion,
    fixed: usize,
) -> Result<Plan, EncodeError> {
    check_reason(reason_code, kind, version)?;
    let props_len = props(properties, ctx, version)?;
    let tail = if !version.is_v5() || (reason_code == ReasonCode::SUCCESS && props_len == 0) {
        0
    } else if props_len == 0 {
        1
    } else {
        1 + with_prefix(props_len)
    };
    Ok(Plan {
        remaining: fixed + tail,
        props: props_len,
        ..Plan::default()
    })
}

/// `check_str` and `topic::validate_topic_filter` in one pass for filters without wildcards.
#[inline]
fn check_filter_str(filter: &str) -> Result<usize, EncodeError> {
    let b = filter.as_bytes();
    if b.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { len: b.len() });
    }
    match scan(b, true) {
        Scan::Clean if !b.is_empty() => Ok(2 + b.len()),
        Scan::Nul => Err(EncodeError::NullCharacter),
        Scan::Clean => Err(EncodeError::InvalidTopicFilter(
            "[MQTT-4.7.3-1] empty topic filter",
        )),
        Scan::Wildcard => {
            topic::filter_structure(b).map_err(EncodeError::InvalidTopicFilter)?;
            Ok(2 + b.len())
        }
    }
}

fn subscribe_plan(p: &Subscribe<'_>, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    if p.filters.is_empty() {
        return Err(EncodeError::EmptyList(PacketType::Subscribe));
    }
    let props_len = props(&p.properties, PropCtx::Subscribe, version)?;
    let mut n = 2 + if version.is_v5() {
        with_prefix(props_len)
    } else {
        0
    };
    let check_options = |filter: &[u8], options: SubscriptionOptions| {
        if !version.is_v5() && options.has_v5_bits() {
            return Err(EncodeError::NotInVersion {
                what: "subscription options",
                version,
            });
        }
        if options.no_local && filter.starts_with(b"$share/") {
            return Err(EncodeError::NoLocalOnSharedSubscription);
        }
        Ok(())
    };
    if let Some(wire) = p.filters.wire() {
        // Decoded filters were validated as strings already: only the structural rules remain,
        // and the bytes are copied as they are.
        let mut r = Reader::new(wire);
        while !r.is_empty() {
            let filter = r
                .binary()
                .map_err(|_| EncodeError::InvalidTopicFilter("corrupt"))?;
            let options = r
                .u8()
                .map_err(|_| EncodeError::InvalidTopicFilter("corrupt"))?;
            topic::validate_filter_bytes(filter).map_err(EncodeError::InvalidTopicFilter)?;
            check_options(filter, options_from_byte(options))?;
        }
        n += wire.len();
    } else {
        for (filter, options) in p.filters.iter() {
            n += check_filter_str(filter)? + 1;
            check_options(filter.as_bytes(), options)?;
        }
    }
    Ok(Plan {
        remaining: n,
        props: props_len,
        ..Plan::default()
    })
}

fn codes_plan(
    codes: &Items<'_, ReasonCode>,
    packet: PacketType,
    v5: bool,
) -> Result<usize, EncodeError> {
    if codes.is_empty() {
        return Err(EncodeError::EmptyList(packet));
    }
    for code in codes.iter() {
        let ok = if v5 {
            code.is_valid_for(packet)
        } else {
            matches!(code.as_u8(), 0..=2 | 0x80)
        };
        if !ok {
            return Err(EncodeError::InvalidReasonCode {
                packet,
                code: code.as_u8(),
            });
        }
    }
    Ok(codes.len())
}

fn suback_plan(p: &SubAck<'_>, v5: bool) -> Result<Plan, EncodeError> {
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let props_len = props(&p.properties, PropCtx::SubAck, version)?;
    let n = 2
        + if v5 { with_prefix(props_len) } else { 0 }
        + codes_plan(&p.reason_codes, PacketType::SubAck, v5)?;
    Ok(Plan {
        remaining: n,
        props: props_len,
        ..Plan::default()
    })
}

fn unsubscribe_plan(p: &Unsubscribe<'_>, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    if p.filters.is_empty() {
        return Err(EncodeError::EmptyList(PacketType::Unsubscribe));
    }
    let props_len = props(&p.properties, PropCtx::Unsubscribe, version)?;
    let mut n = 2 + if version.is_v5() {
        with_prefix(props_len)
    } else {
        0
    };
    if let Some(wire) = p.filters.wire() {
        let mut r = Reader::new(wire);
        while !r.is_empty() {
            let filter = r
                .binary()
                .map_err(|_| EncodeError::InvalidTopicFilter("corrupt"))?;
            topic::validate_filter_bytes(filter).map_err(EncodeError::InvalidTopicFilter)?;
        }
        n += wire.len();
    } else {
        for filter in p.filters.iter() {
            n += check_filter_str(filter)?;
        }
    }
    Ok(Plan {
        remaining: n,
        props: props_len,
        ..Plan::default()
    })
}

fn unsuback_plan(p: &UnsubAck<'_>, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    let props_len = props(&p.properties, PropCtx::UnsubAck, version)?;
    if !version.is_v5() {
        if !p.reason_codes.is_empty() {
            return Err(EncodeError::NotInVersion {
                what: "UNSUBACK reason codes",
                version,
            });
        }
        return Ok(Plan {
            remaining: 2,
            ..Plan::default()
        });
    }
    let n = 2 + with_prefix(props_len) + codes_plan(&p.reason_codes, PacketType::UnsubAck, true)?;
    Ok(Plan {
        remaining: n,
        props: props_len,
        ..Plan::default()
    })
}

fn disconnect_plan(p: &Disconnect<'_>, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    short_form_plan(
        p.reason_code,
        &p.properties,
        PacketType::Disconnect,
        PropCtx::Disconnect,
        version,
        0,
    )
}

fn auth_plan(p: &Auth<'_>, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    if !version.is_v5() {
        return Err(EncodeError::NotInVersion {
            what: "AUTH",
            version,
        });
    }
    check_reason(p.reason_code, PacketType::Auth, version)?;
    let props_len = props(&p.properties, PropCtx::Auth, version)?;
    let remaining = if p.reason_code == ReasonCode::SUCCESS && props_len == 0 {
        0
    } else {
        1 + with_prefix(props_len)
    };
    Ok(Plan {
        remaining,
        props: props_len,
        ..Plan::default()
    })
}

#[inline]
fn header<O: Out>(out: &mut O, first: u8, remaining: usize) {
    out.put_u8(first);
    // `check_size` bounded `remaining` by the Variable Byte Integer maximum.
    out.put_varint(remaining as u32);
}

/// The write pass. `with_payload` is false only for the header-only PUBLISH encode.
fn write<O: Out>(
    packet: &Packet<'_>,
    cx: &EncodeContext,
    plan: &Plan,
    out: &mut O,
    with_payload: bool,
) {
    let v5 = cx.version.is_v5();
    match packet {
        Packet::Connect(p) => write_connect(p, plan, out),
        Packet::ConnAck(p) => {
            header(out, 0x20, plan.remaining);
            out.put_u8(u8::from(p.session_present));
            if v5 {
                out.put_u8(p.reason_code.as_u8());
                write_properties(&p.properties, PropCtx::ConnAck, plan.props, out);
            } else {
                out.put_u8(p.reason_code.to_v3_connack().unwrap_or(0));
            }
        }
        Packet::Publish(p) => write_publish(p, v5, plan, out, with_payload),
        Packet::PubAck(p) => write_pub_response(p, 0x40, plan, out),
        Packet::PubRec(p) => write_pub_response(p, 0x50, plan, out),
        Packet::PubRel(p) => write_pub_response(p, 0x62, plan, out),
        Packet::PubComp(p) => write_pub_response(p, 0x70, plan, out),
        Packet::Subscribe(p) => {
            id_and_properties(
                out,
                0x82,
                plan,
                p.packet_id,
                &p.properties,
                PropCtx::Subscribe,
                v5,
            );
            if let Some(wire) = p.filters.wire() {
                out.put(wire);
            } else {
                for (filter, options) in p.filters.iter() {
                    out.put_binary(filter.as_bytes());
                    out.put_u8(options.to_byte());
                }
            }
        }
        Packet::SubAck(p) => {
            id_and_properties(
                out,
                0x90,
                plan,
                p.packet_id,
                &p.properties,
                PropCtx::SubAck,
                v5,
            );
            for code in p.reason_codes.iter() {
                out.put_u8(code.as_u8());
            }
        }
        Packet::Unsubscribe(p) => {
            id_and_properties(
                out,
                0xA2,
                plan,
                p.packet_id,
                &p.properties,
                PropCtx::Unsubscribe,
                v5,
            );
            if let Some(wire) = p.filters.wire() {
                out.put(wire);
            } else {
                for filter in p.filters.iter() {
                    out.put_binary(filter.as_bytes());
                }
            }
        }
        Packet::UnsubAck(p) => {
            id_and_properties(
                out,
                0xB0,
                plan,
                p.packet_id,
                &p.properties,
                PropCtx::UnsubAck,
                v5,
            );
            if v5 {
                for code in p.reason_codes.iter() {
                    out.put_u8(code.as_u8());
                }
            }
        }
        Packet::PingReq => out.put(&[0xC0, 0x00]),
        Packet::PingResp => out.put(&[0xD0, 0x00]),
        Packet::Disconnect(p) => {
            header(out, 0xE0, plan.remaining);
            if plan.remaining > 0 {
                out.put_u8(p.reason_code.as_u8());
                if plan.remaining > 1 {
                    write_properties(&p.properties, PropCtx::Disconnect, plan.props, out);
                }
            }
        }
        Packet::Auth(p) => {
            header(out, 0xF0, plan.remaining);
            if plan.remaining > 0 {
                out.put_u8(p.reason_code.as_u8());
                write_properties(&p.properties, PropCtx::Auth, plan.props, out);
            }
        }
    }
}

/// Fixed header, Packet Identifier and (MQTT 5.0) properties: the start of SUBSCRIBE, SUBACK,
/// UNSUBSCRIBE and UNSUBACK.
fn id_and_properties<O: Out>(
    out: &mut O,
    first: u8,
    plan: &Plan,
    packet_id: PacketId,
    properties: &Props<'_>,
    ctx: PropCtx,
    v5: bool,
) {
    header(out, first, plan.remaining);
    out.put_u16(packet_id.get());
    if v5 {
        write_properties(properties, ctx, plan.props, out);
    }
}

fn write_connect<O: Out>(p: &Connect<'_>, plan: &Plan, out: &mut O) {
    let v5 = p.protocol.is_v5();
    header(out, 0x10, plan.remaining);
    out.put_binary(p.protocol.protocol_name().as_bytes());
    out.put_u8(p.protocol.level());
    let mut flags = 0u8;
    if p.clean_start {
        flags |= 0b0000_0010;
    }
    if let Some(will) = &p.will {
        flags |= 0b0000_0100 | (will.qos.as_u8() << 3);
        if will.retain {
            flags |= 0b0010_0000;
        }
    }
    if p.password.is_some() {
        flags |= 0b0100_0000;
    }
    if p.username.is_some() {
        flags |= 0b1000_0000;
    }
    out.put_u8(flags);
    out.put_u16(p.keep_alive);
    if v5 {
        write_properties(&p.properties, PropCtx::Connect, plan.props, out);
    }
    out.put_binary(p.client_id.as_bytes());
    if let Some(will) = &p.will {
        if v5 {
            write_properties(&will.properties, PropCtx::Will, plan.will_props, out);
        }
        out.put_binary(will.topic.as_bytes());
        out.put_binary(&will.payload);
    }
    if let Some(u) = &p.username {
        out.put_binary(u.as_bytes());
    }
    if let Some(pw) = &p.password {
        out.put_binary(pw);
    }
}

#[inline]
fn write_publish<O: Out>(p: &Publish<'_>, v5: bool, plan: &Plan, out: &mut O, with_payload: bool) {
    // Fixed header, Remaining Length and the topic's length prefix go out as one small write.
    let mut head = [0u8; 9];
    head[0] = 0x30 | (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain);
    // `check_size` bounded `remaining` by the Variable Byte Integer maximum.
    let mut value = plan.remaining as u32;
    let mut n = 1;
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        head[n] = if value > 0 { byte | 0x80 } else { byte };
        n += 1;
        if value == 0 || n == 5 {
            break;
        }
    }
    // `topic_name_check` bounded the topic by 65 535 bytes.
    let [hi, lo] = (p.topic.len() as u16).to_be_bytes();
    head[n] = hi;
    head[n + 1] = lo;
    out.put(&head[..n + 2]);
    out.put(p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        out.put_u16(id.get());
    }
    if v5 {
        write_properties(&p.properties, PropCtx::Publish, plan.props, out);
    }
    if with_payload {
        out.put(&p.payload);
    }
}

fn write_pub_response<O: Out>(p: &PubResponse<'_>, first: u8, plan: &Plan, out: &mut O) {
    let kind = PacketType::from_u8(first >> 4).unwrap_or(PacketType::PubAck);
    header(out, first, plan.remaining);
    out.put_u16(p.packet_id.get());
    if plan.remaining > 2 {
        out.put_u8(p.reason_code.as_u8());
        if plan.remaining > 3 {
            write_properties(&p.properties, PropCtx::PubResp(kind), plan.props, out);
        }
    }
}
