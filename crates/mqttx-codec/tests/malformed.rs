//! The malformed-input table: one row per rule of strict decoding (several where protocol
//! versions or packet types differ), each naming the rule, the protocol version, the bytes,
//! the exact [`DecodeError`] and the reason code byte it maps to.
//!
//! Every row goes through [`check`], which decodes the bytes whole and through a [`Decoder`]
//! fed one byte at a time, and requires the same error from both. Rows are grouped by area,
//! one `#[test]` per group; the positive edge cases (what must *not* be rejected) follow the
//! tables.
//!
//! Reason codes are an MQTT 5.0 notion; for 3.1.x rows the byte is what
//! [`DecodeError::reason_code`] reports (a 3.1.x server simply closes the connection).

use mqttx_codec::{
    Connect, DecodeContext, DecodeError, Decoder, Packet, PacketType, ProtocolVersion, Publish,
    decode,
};

use DecodeError as E;
use PacketType as T;
use ProtocolVersion::{V5, V31, V311};

/// One row: the rule (spec statement), version, bytes, expected error, expected reason code.
type Case = (&'static str, ProtocolVersion, Vec<u8>, DecodeError, u8);

const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
const TOPIC_NAME_INVALID: u8 = 0x90;
const TOPIC_ALIAS_INVALID: u8 = 0x94;
const PACKET_TOO_LARGE: u8 = 0x95;

// ---------------------------------------------------------------------------------------------
// The check and the byte builders
// ---------------------------------------------------------------------------------------------

/// `bytes` must fail to decode with exactly `expected`, whose reason code byte is `code`, both
/// through [`decode`] and through a [`Decoder`] fed one byte at a time (which must say "need
/// more" until the error, and never return a packet).
#[track_caller]
fn check(rule: &str, version: ProtocolVersion, bytes: &[u8], expected: DecodeError, code: u8) {
    let cx = DecodeContext::new(version);
    match decode(bytes, &cx) {
        Err(err) => {
            assert_eq!(err, expected, "{rule} ({version}): {bytes:02X?}");
            assert_eq!(
                err.reason_code().as_u8(),
                code,
                "{rule} ({version}): reason code of {err:?}"
            );
            assert!(!err.rule().is_empty());
        }
        Ok(other) => panic!("{rule} ({version}): {bytes:02X?} gave {other:?}, not {expected:?}"),
    }

    let mut decoder = Decoder::new(cx);
    let mut got = None;
    for (i, byte) in bytes.iter().enumerate() {
        decoder.feed(std::slice::from_ref(byte));
        match decoder.next_packet() {
            Ok(None) => {}
            Ok(Some(packet)) => panic!("{rule} ({version}): decoder returned {packet:?}"),
            Err(err) => {
                got = Some((err, i + 1));
                break;
            }
        }
    }
    let Some((err, _at)) = got else {
        panic!("{rule} ({version}): the decoder still wants more bytes after {bytes:02X?}");
    };
    assert_eq!(
        err, expected,
        "{rule} ({version}): stream decoder, {bytes:02X?}"
    );
    // A failed decoder stays failed.
    assert_eq!(decoder.next_packet(), Err(expected));
}

fn check_all(cases: &[Case]) {
    for (rule, version, bytes, err, code) in cases {
        check(rule, *version, bytes, *err, *code);
    }
}

/// A Variable Byte Integer (MQTT 5.0 §1.5.5).
fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

/// A whole packet: `first` byte (type and flags), the Remaining Length of `body`, `body`.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// Concatenates byte fields.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A length-prefixed field of arbitrary bytes (MQTT 5.0 §1.5.4, §1.5.6).
fn raw(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A UTF-8 Encoded String.
fn s(text: &str) -> Vec<u8> {
    raw(text.as_bytes())
}

/// A property block: Property Length, then the properties (MQTT 5.0 §2.2.2).
fn props(block: &[u8]) -> Vec<u8> {
    cat(&[&varint(block.len()), block])
}

/// A CONNECT of `version` with Connect Flags `flags`, Keep Alive 60, the CONNECT properties
/// `connect_props` (v5 only) and then `payload` (Client Identifier onwards).
fn connect(version: ProtocolVersion, flags: u8, connect_props: &[u8], payload: &[u8]) -> Vec<u8> {
    let header: &[u8] = match version {
        V31 => b"\x00\x06MQIsdp\x03",
        V311 => b"\x00\x04MQTT\x04",
        V5 => b"\x00\x04MQTT\x05",
    };
    let mut body = cat(&[header, &[flags, 0x00, 0x3C]]);
    if version == V5 {
        body.extend(props(connect_props));
    }
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// A v5 CONNECT, Clean Start, client id "c", with these CONNECT properties.
fn connect_v5(block: &[u8]) -> Vec<u8> {
    connect(V5, 0x02, block, &s("c"))
}

/// A v5 CONNECT with a Will (QoS 0, topic "w", payload "x") carrying these Will Properties.
fn will_v5(block: &[u8]) -> Vec<u8> {
    connect(
        V5,
        0x06,
        &[],
        &cat(&[&s("c"), &props(block), &s("w"), &s("x")]),
    )
}

/// A v5 CONNACK (Success) with these properties.
fn connack_v5(block: &[u8]) -> Vec<u8> {
    frame(0x20, &cat(&[&[0x00, 0x00], &props(block)]))
}

/// A v5 PUBLISH QoS 0 to "a" with these properties and payload "x".
fn publish_v5(block: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&s("a"), &props(block), b"x"]))
}

/// A v5 PUBACK (packet id 1, reason 0x00) with these properties.
fn puback_v5(block: &[u8]) -> Vec<u8> {
    frame(0x40, &cat(&[&[0x00, 0x01, 0x00], &props(block)]))
}

/// A SUBSCRIBE (packet id 1) of one `filter` with options byte `options`.
fn subscribe(version: ProtocolVersion, filter: &str, options: u8) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if version == V5 {
        body.push(0x00); // Property Length 0
    }
    body.extend(s(filter));
    body.push(options);
    frame(0x82, &body)
}

/// A v5 SUBSCRIBE (packet id 1) with these properties, for "a" at QoS 0.
fn subscribe_v5(block: &[u8]) -> Vec<u8> {
    frame(
        0x82,
        &cat(&[&[0x00, 0x01], &props(block), &s("a"), &[0x00]]),
    )
}

/// A v5 UNSUBSCRIBE (packet id 1) with these properties, for "a".
fn unsubscribe_v5(block: &[u8]) -> Vec<u8> {
    frame(0xA2, &cat(&[&[0x00, 0x01], &props(block), &s("a")]))
}

/// A v5 SUBACK (packet id 1) with these properties and one code 0x00.
fn suback_v5(block: &[u8]) -> Vec<u8> {
    frame(0x90, &cat(&[&[0x00, 0x01], &props(block), &[0x00]]))
}

/// A v5 DISCONNECT (reason 0x00) with these properties.
fn disconnect_v5(block: &[u8]) -> Vec<u8> {
    frame(0xE0, &cat(&[&[0x00], &props(block)]))
}

/// A v5 AUTH (reason 0x18 Continue authentication) with these properties.
fn auth_v5(block: &[u8]) -> Vec<u8> {
    frame(0xF0, &cat(&[&[0x18], &props(block)]))
}

// ---------------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------------

/// Fixed header (MQTT 5.0 §2.1, 3.1.1 §2.2) and Remaining Length (§1.5.5 / §2.2.3).
#[rustfmt::skip] // A table: one row per rule, kept compact.
fn fixed_header() -> Vec<Case> {
    let bad_flags = |packet, flags| E::InvalidFixedHeaderFlags { packet, flags };
    let connect_body = &connect(V311, 0x02, &[], &s("c"))[2..];
    let connect_v5_body = &connect_v5(&[])[2..];
    vec![
        // [MQTT-3.3.1-4] "A PUBLISH Packet MUST NOT have both QoS bits set to 1." Malformed.
        ("[MQTT-3.3.1-4] PUBLISH QoS 3", V311,
            vec![0x36, 0x03, 0x00, 0x01, b'a'], // PUBLISH QoS 11; topic "a"
            E::InvalidQoS, MALFORMED),
        ("[MQTT-3.3.1-4] PUBLISH QoS 3", V5,
            vec![0x36, 0x04, 0x00, 0x01, b'a', 0x00], // QoS 11; topic "a"; Property Length 0
            E::InvalidQoS, MALFORMED),
        ("[MQTT-3.3.1-4] PUBLISH QoS 3 with RETAIN", V31,
            vec![0x37, 0x03, 0x00, 0x01, b'a'],
            E::InvalidQoS, MALFORMED),
        // [MQTT-3.3.1-2] "The DUP flag MUST be set to 0 for all QoS 0 messages."
        ("[MQTT-3.3.1-2] DUP with QoS 0", V311,
            vec![0x38, 0x03, 0x00, 0x01, b'a'], // DUP 1, QoS 0
            E::DupWithQoS0, MALFORMED),
        ("[MQTT-3.3.1-2] DUP with QoS 0", V5,
            vec![0x39, 0x04, 0x00, 0x01, b'a', 0x00], // DUP 1, QoS 0, RETAIN 1
            E::DupWithQoS0, MALFORMED),
        // [MQTT-2.1.3-1] / MQTT 5.0 §2.1.3 Table 2-2: reserved flags "MUST be set to the value
        // listed"; "If invalid flags are received it is a Malformed Packet."
        ("[MQTT-2.1.3-1] CONNECT flags 0010", V311,
            frame(0x12, connect_body), bad_flags(T::Connect, 0b0010), MALFORMED),
        ("[MQTT-2.1.3-1] CONNECT flags 0001", V5,
            frame(0x11, connect_v5_body), bad_flags(T::Connect, 0b0001), MALFORMED),
        ("[MQTT-2.1.3-1] CONNACK flags 0001", V311,
            vec![0x21, 0x02, 0x00, 0x00], bad_flags(T::ConnAck, 0b0001), MALFORMED),
        ("[MQTT-2.1.3-1] PUBACK flags 0010", V311,
            vec![0x42, 0x02, 0x00, 0x01], bad_flags(T::PubAck, 0b0010), MALFORMED),
        ("[MQTT-2.1.3-1] PUBREC flags 1000", V5,
            vec![0x58, 0x02, 0x00, 0x01], bad_flags(T::PubRec, 0b1000), MALFORMED),
        // [MQTT-3.6.1-1] PUBREL bits 3-0 MUST be 0010.
        ("[MQTT-3.6.1-1] PUBREL flags 0000", V311,
            vec![0x60, 0x02, 0x00, 0x01], bad_flags(T::PubRel, 0b0000), MALFORMED),
        ("[MQTT-3.6.1-1] PUBREL flags 0011", V5,
            vec![0x63, 0x02, 0x00, 0x01], bad_flags(T::PubRel, 0b0011), MALFORMED),
        ("[MQTT-2.1.3-1] PUBCOMP flags 0001", V311,
            vec![0x71, 0x02, 0x00, 0x01], bad_flags(T::PubComp, 0b0001), MALFORMED),
        // [MQTT-3.8.1-1] SUBSCRIBE bits 3-0 MUST be 0010.
        ("[MQTT-3.8.1-1] SUBSCRIBE flags 0000", V311,
            frame(0x80, &subscribe(V311, "a", 0)[2..]), bad_flags(T::Subscribe, 0), MALFORMED),
        ("[MQTT-3.8.1-1] SUBSCRIBE flags 1010", V5,
            frame(0x8A, &subscribe(V5, "a", 0)[2..]),
            bad_flags(T::Subscribe, 0b1010), MALFORMED),
        ("[MQTT-2.1.3-1] SUBACK flags 0010", V311,
            vec![0x92, 0x03, 0x00, 0x01, 0x00], bad_flags(T::SubAck, 0b0010), MALFORMED),
        // [MQTT-3.10.1-1] UNSUBSCRIBE bits 3-0 MUST be 0010.
        ("[MQTT-3.10.1-1] UNSUBSCRIBE flags 0000", V311,
            vec![0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            bad_flags(T::Unsubscribe, 0), MALFORMED),
        ("[MQTT-3.10.1-1] UNSUBSCRIBE flags 0011", V5,
            vec![0xA3, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
            bad_flags(T::Unsubscribe, 0b0011), MALFORMED),
        ("[MQTT-2.1.3-1] UNSUBACK flags 0001", V5,
            vec![0xB1, 0x04, 0x00, 0x01, 0x00, 0x00], bad_flags(T::UnsubAck, 1), MALFORMED),
        ("[MQTT-2.1.3-1] PINGREQ flags 0010", V311,
            vec![0xC2, 0x00], bad_flags(T::PingReq, 0b0010), MALFORMED),
        ("[MQTT-2.1.3-1] PINGRESP flags 0001", V31,
            vec![0xD1, 0x00], bad_flags(T::PingResp, 0b0001), MALFORMED),
        ("[MQTT-2.1.3-1] DISCONNECT flags 0010", V5,
            vec![0xE2, 0x00], bad_flags(T::Disconnect, 0b0010), MALFORMED),
        ("[MQTT-2.1.3-1] DISCONNECT flags 1000", V311,
            vec![0xE8, 0x00], bad_flags(T::Disconnect, 0b1000), MALFORMED),
        ("[MQTT-2.1.3-1] AUTH flags 0001", V5,
            vec![0xF1, 0x00], bad_flags(T::Auth, 0b0001), MALFORMED),
        // MQTT 5.0 §2.1.2 Table 2-1: packet type 0 is "Reserved" (3.1.1 "Forbidden").
        ("§2.1.2 packet type 0", V311, vec![0x00, 0x00], E::ReservedPacketType, MALFORMED),
        ("§2.1.2 packet type 0 with flags", V5,
            vec![0x02, 0x01, 0x00], E::ReservedPacketType, MALFORMED),
        // 3.1.1 §2.2.1 Table 2.1: type 15 is "Reserved"; AUTH exists from MQTT 5.0 on.
        ("3.1.1 §2.2.1 AUTH before MQTT 5.0", V311,
            vec![0xF0, 0x00], E::AuthBeforeV5, MALFORMED),
        ("3.1 AUTH before MQTT 5.0", V31,
            vec![0xF0, 0x02, 0x18, 0x00], E::AuthBeforeV5, MALFORMED),
        // [MQTT-1.5.5-1] / 3.1.1 §2.2.3: at most four bytes; a continuation bit on the fourth
        // makes a fifth, which is Malformed.
        ("§1.5.5 five-byte Remaining Length", V311,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            E::MalformedVariableByteInteger, MALFORMED),
        ("§1.5.5 five-byte Remaining Length", V5,
            vec![0xC0, 0x80, 0x80, 0x80, 0x80, 0x01],
            E::MalformedVariableByteInteger, MALFORMED),
        // [MQTT-1.5.5-1] "The encoded value MUST use the minimum number of bytes necessary".
        ("[MQTT-1.5.5-1] non-minimal Remaining Length 80 00", V311,
            vec![0xC0, 0x80, 0x00], E::MalformedVariableByteInteger, MALFORMED),
        ("[MQTT-1.5.5-1] non-minimal Remaining Length 81 80 00", V5,
            vec![0xE0, 0x81, 0x80, 0x00], E::MalformedVariableByteInteger, MALFORMED),
        // MQTT 5.0 §3.1.2.11.4: a packet over the receiver's Maximum Packet Size is a Protocol
        // Error with 0x95 Packet too large; it is detected from the fixed header alone (the
        // default maximum is 1 MiB = 1 048 576 bytes).
        ("§3.1.2.11.4 packet too large (3-byte length)", V311,
            vec![0x30, 0xFF, 0xFF, 0x7F], // Remaining Length 2 097 151, no body yet
            E::PacketTooLarge { size: 4 + 2_097_151, max: 1_048_576 }, PACKET_TOO_LARGE),
        ("§3.1.2.11.4 packet one byte too large", V5,
            vec![0x30, 0xFD, 0xFF, 0x3F], // Remaining Length 1 048 573: 1 048 577 in all
            E::PacketTooLarge { size: 1_048_577, max: 1_048_576 }, PACKET_TOO_LARGE),
        ("§3.1.2.11.4 packet too large (largest length)", V5,
            vec![0x10, 0xFF, 0xFF, 0xFF, 0x7F], // Remaining Length 268 435 455
            E::PacketTooLarge { size: 268_435_460, max: 1_048_576 }, PACKET_TOO_LARGE),
    ]
}

/// CONNECT (MQTT 5.0 §3.1, 3.1.1 §3.1).
#[rustfmt::skip] // A table: one row per rule, kept compact.
fn connect_rules() -> Vec<Case> {
    let client = s("c");
    let will = |topic: &str| cat(&[&s("c"), &s(topic), &s("x")]);
    let will_v5_topic = |topic: &str| cat(&[&s("c"), &[0x00], &s(topic), &s("x")]);
    vec![
        // [MQTT-3.1.2-3] "The Server MUST validate that the reserved flag in the CONNECT
        // packet is set to 0" (5.0: "If the reserved flag is not 0 it is a Malformed Packet").
        ("[MQTT-3.1.2-3] CONNECT reserved flag", V311,
            connect(V311, 0x03, &[], &client), E::ReservedConnectFlag, MALFORMED),
        ("[MQTT-3.1.2-3] CONNECT reserved flag", V5,
            connect(V5, 0x01, &[], &client), E::ReservedConnectFlag, MALFORMED),
        ("[MQTT-3.1.2-3] CONNECT reserved flag", V31,
            connect(V31, 0x03, &[], &client), E::ReservedConnectFlag, MALFORMED),
        // [MQTT-3.1.2-11] "If the Will Flag is set to 0, then the Will QoS MUST be set to 0";
        // [MQTT-3.1.2-13] "If the Will Flag is set to 0, then Will Retain MUST be set to 0".
        ("[MQTT-3.1.2-11] Will QoS 1 without Will Flag", V311,
            connect(V311, 0x0A, &[], &client), E::WillFlagsWithoutWill, MALFORMED),
        ("[MQTT-3.1.2-11] Will QoS 2 without Will Flag", V5,
            connect(V5, 0x12, &[], &client), E::WillFlagsWithoutWill, MALFORMED),
        ("[MQTT-3.1.2-13] Will Retain without Will Flag", V311,
            connect(V311, 0x22, &[], &client), E::WillFlagsWithoutWill, MALFORMED),
        ("[MQTT-3.1.2-13] Will Retain without Will Flag", V5,
            connect(V5, 0x20, &[], &client), E::WillFlagsWithoutWill, MALFORMED),
        // [MQTT-3.1.2-12] Will QoS "MUST NOT be 3" (5.0: "A value of 3 (0x03) is a Malformed
        // Packet").
        ("[MQTT-3.1.2-12] Will QoS 3", V311,
            connect(V311, 0x1E, &[], &will("w")), E::InvalidWillQoS, MALFORMED),
        ("[MQTT-3.1.2-12] Will QoS 3", V5,
            connect(V5, 0x1C, &[], &will_v5_topic("w")), E::InvalidWillQoS, MALFORMED),
        // 3.1.1 [MQTT-3.1.2-22] "If the User Name Flag is set to 0, the Password Flag MUST be
        // set to 0." (MQTT 5.0 dropped this rule; see `password_without_username_in_v5`.)
        ("[MQTT-3.1.2-22] password without user name", V311,
            connect(V311, 0x42, &[], &cat(&[&client, &s("p")])),
            E::PasswordWithoutUsername, MALFORMED),
        ("3.1 §3.1 password without user name", V31,
            connect(V31, 0x42, &[], &cat(&[&client, &s("p")])),
            E::PasswordWithoutUsername, MALFORMED),
        // [MQTT-3.1.2-1] Protocol Name must be "MQTT" (3.1: "MQIsdp"); the codec answers
        // 0x84 Unsupported Protocol Version, the code 5.0 §3.1.2.1 lets a server send for a
        // wrong Protocol Name.
        ("[MQTT-3.1.2-1] protocol name MQTX", V311,
            frame(0x10, &cat(&[b"\x00\x04MQTX\x04\x02\x00\x3C", &client])),
            E::InvalidProtocolName, UNSUPPORTED_PROTOCOL_VERSION),
        ("[MQTT-3.1.2-1] protocol name in lower case", V5,
            frame(0x10, &cat(&[b"\x00\x04mqtt\x05\x02\x00\x3C\x00", &client])),
            E::InvalidProtocolName, UNSUPPORTED_PROTOCOL_VERSION),
        // [MQTT-3.1.2-2] unsupported Protocol Level: 3.1.1 return code 0x01, 5.0 reason 0x84.
        ("[MQTT-3.1.2-2] protocol level 6", V5,
            frame(0x10, &cat(&[b"\x00\x04MQTT\x06\x02\x00\x3C\x00", &client])),
            E::UnsupportedProtocolVersion(6), UNSUPPORTED_PROTOCOL_VERSION),
        ("[MQTT-3.1.2-2] MQTT with level 3", V311,
            frame(0x10, &cat(&[b"\x00\x04MQTT\x03\x02\x00\x3C", &client])),
            E::UnsupportedProtocolVersion(3), UNSUPPORTED_PROTOCOL_VERSION),
        ("[MQTT-3.1.2-2] MQIsdp with level 4", V31,
            frame(0x10, &cat(&[b"\x00\x06MQIsdp\x04\x02\x00\x3C", &client])),
            E::UnsupportedProtocolVersion(4), UNSUPPORTED_PROTOCOL_VERSION),
        // Will Topic is a Topic Name: [MQTT-3.3.2-2] no wildcards, [MQTT-4.7.3-1] not empty.
        ("[MQTT-3.3.2-2] '+' in the Will Topic", V311,
            connect(V311, 0x06, &[], &will("w/+")), E::WildcardInTopicName, TOPIC_NAME_INVALID),
        ("[MQTT-3.3.2-2] '#' in the Will Topic", V5,
            connect(V5, 0x06, &[], &will_v5_topic("#")), E::WildcardInTopicName,
            TOPIC_NAME_INVALID),
        ("[MQTT-4.7.3-1] empty Will Topic", V311,
            connect(V311, 0x06, &[], &will("")), E::EmptyTopicWithoutAlias, PROTOCOL_ERROR),
        // [MQTT-1.5.4-2] no U+0000, here in the Client Identifier.
        ("[MQTT-1.5.4-2] U+0000 in the Client Identifier", V311,
            connect(V311, 0x02, &[], &raw(b"c\0")), E::NullCharacter, MALFORMED),
        // 5.0 §4.13 / 3.1.1 §4.8: bytes after the last field the flags announce.
        ("§4.13 bytes after the CONNECT payload", V311,
            connect(V311, 0x02, &[], &cat(&[&client, &[0x00]])),
            E::TrailingBytes(T::Connect), MALFORMED),
        ("§4.13 bytes after the CONNECT payload", V5,
            connect(V5, 0x02, &[], &cat(&[&client, &s("u")])),
            E::TrailingBytes(T::Connect), MALFORMED),
        // A field the flags announce is missing, inside a complete frame: Malformed, never
        // "need more".
        ("§4.13 User Name Flag without a User Name", V311,
            connect(V311, 0x82, &[], &client), E::UnexpectedEof, MALFORMED),
        ("§4.13 CONNECT cut after the Protocol Name", V5,
            frame(0x10, b"\x00\x04MQTT"), E::UnexpectedEof, MALFORMED),
    ]
}

/// PUBLISH (MQTT 5.0 §3.3, 3.1.1 §3.3) and UTF-8 strings (§1.5.4).
#[rustfmt::skip] // A table: one row per rule, kept compact.
fn publish_rules() -> Vec<Case> {
    let topic = |bytes: &[u8]| frame(0x30, &raw(bytes));
    vec![
        // [MQTT-1.5.4-2] "A UTF-8 Encoded String MUST NOT include an encoding of the null
        // character U+0000."
        ("[MQTT-1.5.4-2] U+0000 in the Topic Name", V311,
            topic(b"a\0b"), E::NullCharacter, MALFORMED),
        ("[MQTT-1.5.4-2] U+0000 in a User Property name", V5,
            publish_v5(&cat(&[&[0x26], &raw(b"k\0"), &s("v")])), E::NullCharacter, MALFORMED),
        // [MQTT-1.5.4-1] "The character data in a UTF-8 Encoded String MUST be well-formed
        // UTF-8 … In particular, the character data MUST NOT include encodings of code points
        // between U+D800 and U+DFFF."
        ("[MQTT-1.5.4-1] byte FF is never UTF-8", V311,
            topic(&[b'a', 0xFF]), E::InvalidUtf8, MALFORMED),
        ("[MQTT-1.5.4-1] encoded surrogate U+D800 (ED A0 80)", V311,
            topic(&[0xED, 0xA0, 0x80]), E::InvalidUtf8, MALFORMED),
        ("[MQTT-1.5.4-1] encoded surrogate U+DFFF (ED BF BF)", V5,
            publish_v5(&cat(&[&[0x03], &raw(&[0xED, 0xBF, 0xBF])])), E::InvalidUtf8, MALFORMED),
        ("[MQTT-1.5.4-1] overlong '/' (C0 AF)", V311,
            topic(&[0xC0, 0xAF]), E::InvalidUtf8, MALFORMED),
        ("[MQTT-1.5.4-1] overlong U+0000 (C0 80)", V31,
            topic(&[b'a', 0xC0, 0x80]), E::InvalidUtf8, MALFORMED),
        ("[MQTT-1.5.4-1] truncated sequence (E2 82)", V5,
            frame(0x30, &cat(&[&raw(&[0xE2, 0x82]), &[0x00]])), E::InvalidUtf8, MALFORMED),
        // [MQTT-3.3.2-2] "The Topic Name in the PUBLISH packet MUST NOT contain wildcard
        // characters." 0x90 Topic Name invalid: the codec's choice (5.0 does not say whether
        // this is Malformed; 0x90 names the problem precisely).
        ("[MQTT-3.3.2-2] '+' in the Topic Name", V311,
            frame(0x30, &s("a/+")), E::WildcardInTopicName, TOPIC_NAME_INVALID),
        ("[MQTT-3.3.2-2] '#' in the Topic Name", V5,
            frame(0x30, &cat(&[&s("a/#"), &[0x00]])), E::WildcardInTopicName, TOPIC_NAME_INVALID),
        ("[MQTT-3.3.2-2] '+' in the Topic Name", V31,
            frame(0x30, &s("+")), E::WildcardInTopicName, TOPIC_NAME_INVALID),
        ("§3.3.2.3.5 '#' in the Response Topic", V5,
            publish_v5(&cat(&[&[0x08], &s("r/#")])), E::WildcardInTopicName, TOPIC_NAME_INVALID),
        // [MQTT-4.7.3-1] "All Topic Names and Topic Filters MUST be at least one character
        // long"; 5.0 §3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and
        // there is no Topic Alias."
        ("[MQTT-4.7.3-1] empty Topic Name", V311,
            vec![0x30, 0x03, 0x00, 0x00, b'x'], E::EmptyTopicWithoutAlias, PROTOCOL_ERROR),
        ("§3.3.2.1 empty Topic Name without Topic Alias", V5,
            vec![0x30, 0x04, 0x00, 0x00, 0x00, b'x'], E::EmptyTopicWithoutAlias, PROTOCOL_ERROR),
        // [MQTT-3.3.2-8] "A sender MUST NOT send a PUBLISH packet containing a Topic Alias
        // which has the value 0." §3.3.2.3.4: the receiver uses 0x94 Topic Alias invalid.
        ("[MQTT-3.3.2-8] Topic Alias 0", V5,
            publish_v5(&[0x23, 0x00, 0x00]), E::TopicAliasZero, TOPIC_ALIAS_INVALID),
        // [MQTT-2.2.1-3] (5.0 [MQTT-2.2.1-3]) a non-zero Packet Identifier.
        ("[MQTT-2.2.1-3] PUBLISH QoS 1 with Packet Identifier 0", V311,
            frame(0x32, &cat(&[&s("a"), &[0x00, 0x00]])), E::ZeroPacketId, PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] PUBLISH QoS 2 with Packet Identifier 0", V5,
            frame(0x34, &cat(&[&s("a"), &[0x00, 0x00, 0x00]])), E::ZeroPacketId, PROTOCOL_ERROR),
        // Truncated fields inside a complete frame (§4.13): Malformed, never "need more".
        ("§4.13 PUBLISH QoS 1 without Packet Identifier", V311,
            frame(0x32, &s("a")), E::UnexpectedEof, MALFORMED),
        ("§4.13 Topic Name longer than the packet", V311,
            vec![0x30, 0x02, 0x00, 0x05], E::UnexpectedEof, MALFORMED),
        ("§4.13 PUBLISH without Property Length", V5,
            frame(0x30, &s("a")), E::UnexpectedEof, MALFORMED),
    ]
}

/// MQTT 5.0 properties (§2.2.2, Table 2-4, and each property's section).
#[rustfmt::skip] // A table: one row per rule, kept compact.
fn property_rules() -> Vec<Case> {
    let dup = |id| (E::DuplicateProperty(id), PROTOCOL_ERROR);
    let zero = |id| (E::ZeroPropertyValue(id), PROTOCOL_ERROR);
    let boolean = |id| (E::InvalidBooleanProperty(id), PROTOCOL_ERROR);
    let not_allowed = |id, packet| (E::PropertyNotAllowed { id, packet }, MALFORMED);
    let rows: Vec<(&'static str, Vec<u8>, (DecodeError, u8))> = vec![
        // "It is a Protocol Error to include <property> more than once" (§3.1.2.11, §3.3.2.3,
        // …); User Property may repeat (§2.2.2.2), Subscription Identifier only in PUBLISH.
        ("§3.3.2.3.2 Payload Format Indicator twice",
            publish_v5(&[0x01, 0x00, 0x01, 0x01]), dup(0x01)),
        ("§3.3.2.3.3 Message Expiry Interval twice",
            publish_v5(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]), dup(0x02)),
        ("§3.3.2.3.9 Content Type twice",
            publish_v5(&cat(&[&[0x03], &s("a"), &[0x03], &s("b")])), dup(0x03)),
        ("§3.3.2.3.4 Topic Alias twice",
            publish_v5(&[0x23, 0x00, 0x01, 0x23, 0x00, 0x02]), dup(0x23)),
        ("§3.1.2.11.2 Session Expiry Interval twice",
            connect_v5(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]), dup(0x11)),
        ("§3.1.2.11.3 Receive Maximum twice",
            connect_v5(&[0x21, 0x00, 0x0A, 0x21, 0x00, 0x0A]), dup(0x21)),
        ("§3.2.2.3.8 Topic Alias Maximum twice",
            connack_v5(&[0x22, 0x00, 0x0A, 0x22, 0x00, 0x0B]), dup(0x22)),
        ("§3.4.2.2.2 Reason String twice",
            puback_v5(&cat(&[&[0x1F], &s("a"), &[0x1F], &s("b")])), dup(0x1F)),
        ("§3.14.2.2.5 Server Reference twice",
            disconnect_v5(&cat(&[&[0x1C], &s("a"), &[0x1C], &s("b")])), dup(0x1C)),
        ("§3.15.2.2.2 Authentication Method twice",
            auth_v5(&cat(&[&[0x15], &s("m"), &[0x15], &s("m")])), dup(0x15)),
        ("§3.1.3.2.2 Will Delay Interval twice",
            will_v5(&[0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1]), dup(0x18)),
        ("§3.8.2.1.2 Subscription Identifier twice in SUBSCRIBE",
            subscribe_v5(&[0x0B, 0x01, 0x0B, 0x02]), dup(0x0B)),
        // Zero values: "It is a Protocol Error if the Subscription Identifier has a value of
        // 0" (§3.8.2.1.2), "… Receive Maximum … to have the value 0" (§3.1.2.11.3,
        // §3.2.2.3.3), "… Maximum Packet Size … to be set to zero" (§3.1.2.11.4, §3.2.2.3.6).
        ("§3.8.2.1.2 Subscription Identifier 0", subscribe_v5(&[0x0B, 0x00]), zero(0x0B)),
        ("§3.3.2.3.8 Subscription Identifier 0 in PUBLISH",
            publish_v5(&[0x0B, 0x00]), zero(0x0B)),
        ("§3.1.2.11.3 Receive Maximum 0", connect_v5(&[0x21, 0x00, 0x00]), zero(0x21)),
        ("§3.2.2.3.3 Receive Maximum 0 in CONNACK", connack_v5(&[0x21, 0x00, 0x00]), zero(0x21)),
        ("§3.1.2.11.4 Maximum Packet Size 0", connect_v5(&[0x27, 0, 0, 0, 0]), zero(0x27)),
        ("§3.2.2.3.6 Maximum Packet Size 0 in CONNACK",
            connack_v5(&[0x27, 0, 0, 0, 0]), zero(0x27)),
        // Byte properties that must be 0 or 1 ("It is a Protocol Error to include … a value
        // other than 0 or 1"), and Maximum QoS, which must be 0 or 1 (§3.2.2.3.4).
        ("§3.3.2.3.2 Payload Format Indicator 2", publish_v5(&[0x01, 0x02]), boolean(0x01)),
        ("§3.1.3.2.3 Will Payload Format Indicator 2", will_v5(&[0x01, 0x02]), boolean(0x01)),
        ("§3.1.2.11.7 Request Problem Information 2", connect_v5(&[0x17, 0x02]), boolean(0x17)),
        ("§3.1.2.11.6 Request Response Information 2",
            connect_v5(&[0x19, 0x02]), boolean(0x19)),
        ("§3.2.2.3.5 Retain Available 2", connack_v5(&[0x25, 0x02]), boolean(0x25)),
        ("§3.2.2.3.11 Wildcard Subscription Available 2",
            connack_v5(&[0x28, 0x02]), boolean(0x28)),
        ("§3.2.2.3.12 Subscription Identifiers Available 2",
            connack_v5(&[0x29, 0x02]), boolean(0x29)),
        ("§3.2.2.3.13 Shared Subscription Available 2",
            connack_v5(&[0x2A, 0x02]), boolean(0x2A)),
        ("§3.2.2.3.4 Maximum QoS 2", connack_v5(&[0x24, 0x02]), boolean(0x24)),
        // Identifiers Table 2-4 does not define: Malformed (the packet cannot be parsed on).
        ("§2.2.2.2 unknown property 0x04", publish_v5(&[0x04, 0x00]),
            (E::UnknownProperty(0x04), MALFORMED)),
        ("§2.2.2.2 unknown property 0x00", connack_v5(&[0x00, 0x00]),
            (E::UnknownProperty(0x00), MALFORMED)),
        ("§2.2.2.2 unknown property 0x2B", connect_v5(&[0x2B, 0x00]),
            (E::UnknownProperty(0x2B), MALFORMED)),
        ("§2.2.2.2 unknown property 0x7F", disconnect_v5(&[0x7F, 0x00]),
            (E::UnknownProperty(0x7F), MALFORMED)),
        // A Property Identifier is a Variable Byte Integer (§2.2.2.2); a two-byte one names
        // no property of MQTT 5.0, and a non-minimal one is Malformed ([MQTT-1.5.5-1]).
        ("§2.2.2.2 two-byte property identifier 0x81 0x01 (129)",
            publish_v5(&[0x81, 0x01, 0x00]), (E::UnknownProperty(129), MALFORMED)),
        ("[MQTT-1.5.5-1] non-minimal property identifier 0x83 0x00",
            publish_v5(&[0x83, 0x00, 0x00]), (E::MalformedVariableByteInteger, MALFORMED)),
        // Properties Table 2-4 does not list for the packet. MQTT 5.0 does not say which
        // reason code this gets: the codec reports 0x81 Malformed Packet (Mosquitto, for one,
        // answers 0x82 Protocol Error; §4.13's definitions could support either).
        ("Table 2-4 Topic Alias in CONNECT",
            connect_v5(&[0x23, 0x00, 0x01]), not_allowed(0x23, T::Connect)),
        ("Table 2-4 Session Expiry Interval in PUBLISH",
            publish_v5(&[0x11, 0, 0, 0, 1]), not_allowed(0x11, T::Publish)),
        ("Table 2-4 Will Delay Interval in CONNECT properties",
            connect_v5(&[0x18, 0, 0, 0, 1]), not_allowed(0x18, T::Connect)),
        ("Table 2-4 Reason String in PUBLISH",
            publish_v5(&cat(&[&[0x1F], &s("r")])), not_allowed(0x1F, T::Publish)),
        ("Table 2-4 Maximum QoS in CONNECT",
            connect_v5(&[0x24, 0x01]), not_allowed(0x24, T::Connect)),
        ("Table 2-4 Topic Alias in Will Properties",
            will_v5(&[0x23, 0x00, 0x01]), not_allowed(0x23, T::Connect)),
        ("Table 2-4 Session Expiry Interval in Will Properties",
            will_v5(&[0x11, 0, 0, 0, 1]), not_allowed(0x11, T::Connect)),
        ("Table 2-4 Subscription Identifier in UNSUBSCRIBE",
            unsubscribe_v5(&[0x0B, 0x01]), not_allowed(0x0B, T::Unsubscribe)),
        ("Table 2-4 Authentication Method in PUBACK",
            puback_v5(&cat(&[&[0x15], &s("m")])), not_allowed(0x15, T::PubAck)),
        ("Table 2-4 Session Expiry Interval in SUBACK",
            suback_v5(&[0x11, 0, 0, 0, 1]), not_allowed(0x11, T::SubAck)),
        ("Table 2-4 Receive Maximum in DISCONNECT",
            disconnect_v5(&[0x21, 0x00, 0x01]), not_allowed(0x21, T::Disconnect)),
        ("Table 2-4 Content Type in AUTH",
            auth_v5(&cat(&[&[0x03], &s("t")])), not_allowed(0x03, T::Auth)),
        ("Table 2-4 Assigned Client Identifier in CONNECT",
            connect_v5(&cat(&[&[0x12], &s("c")])), not_allowed(0x12, T::Connect)),
        // Property blocks that do not fit (§2.2.2.1, §4.13).
        ("§2.2.2.1 Property Length past the end of the packet",
            frame(0x30, &cat(&[&s("a"), &[0x05, 0x01]])), (E::UnexpectedEof, MALFORMED)),
        ("§2.2.2.1 CONNACK Property Length past the end of the packet",
            frame(0x20, &[0x00, 0x00, 0x08, 0x11]), (E::UnexpectedEof, MALFORMED)),
        ("§1.5.5 Property Length cut inside its Variable Byte Integer",
            frame(0x30, &cat(&[&s("a"), &[0x80]])), (E::UnexpectedEof, MALFORMED)),
        ("[MQTT-1.5.5-1] non-minimal Property Length (80 00)",
            frame(0x30, &cat(&[&s("a"), &[0x80, 0x00]])),
            (E::MalformedVariableByteInteger, MALFORMED)),
        ("§1.5.5 Subscription Identifier cut inside its Variable Byte Integer",
            subscribe_v5(&[0x0B, 0x80]), (E::UnexpectedEof, MALFORMED)),
        ("§2.2.2.2 Message Expiry Interval cut short by the Property Length",
            publish_v5(&[0x02, 0x00, 0x00]), (E::UnexpectedEof, MALFORMED)),
        ("§2.2.2.2 User Property without its value",
            publish_v5(&cat(&[&[0x26], &s("k")])), (E::UnexpectedEof, MALFORMED)),
        // §3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is no
        // Authentication Method."
        ("§3.1.2.11.10 Authentication Data without Authentication Method",
            connect_v5(&[0x16, 0x00, 0x01, 0xAA]),
            (E::AuthenticationDataWithoutMethod, PROTOCOL_ERROR)),
        ("§3.15.2.2.3 AUTH data without method",
            auth_v5(&[0x16, 0x00, 0x01, 0xAA]),
            (E::AuthenticationDataWithoutMethod, PROTOCOL_ERROR)),
    ];
    rows.into_iter()
        .map(|(rule, bytes, (err, code))| (rule, V5, bytes, err, code))
        .collect()
}

/// SUBSCRIBE and UNSUBSCRIBE (MQTT 5.0 §3.8, §3.10; 3.1.1 §3.8, §3.10).
#[rustfmt::skip] // A table: one row per rule, kept compact.
fn subscribe_rules() -> Vec<Case> {
    vec![
        // [MQTT-3.8.3-2] (5.0 [MQTT-3.8.3-2]) at least one Topic Filter and options pair;
        // 5.0: "A SUBSCRIBE packet with no Payload is a Protocol Error."
        ("[MQTT-3.8.3-2] SUBSCRIBE without filters", V311,
            vec![0x82, 0x02, 0x00, 0x01], E::EmptyPayload(T::Subscribe), PROTOCOL_ERROR),
        ("[MQTT-3.8.3-2] SUBSCRIBE without filters", V5,
            vec![0x82, 0x03, 0x00, 0x01, 0x00], E::EmptyPayload(T::Subscribe), PROTOCOL_ERROR),
        ("[MQTT-3.8.3-2] SUBSCRIBE without filters", V31,
            vec![0x82, 0x02, 0x00, 0x01], E::EmptyPayload(T::Subscribe), PROTOCOL_ERROR),
        // [MQTT-3.10.3-2] at least one Topic Filter; 5.0: "An UNSUBSCRIBE packet with no
        // Payload is a Protocol Error."
        ("[MQTT-3.10.3-2] UNSUBSCRIBE without filters", V311,
            vec![0xA2, 0x02, 0x00, 0x01], E::EmptyPayload(T::Unsubscribe), PROTOCOL_ERROR),
        ("[MQTT-3.10.3-2] UNSUBSCRIBE without filters", V5,
            vec![0xA2, 0x03, 0x00, 0x01, 0x00], E::EmptyPayload(T::Unsubscribe),
            PROTOCOL_ERROR),
        // [MQTT-3.8.3-5] "The Server MUST treat a SUBSCRIBE packet as malformed if any of
        // Reserved bits in the Payload are non-zero" (bits 7-6 in 5.0).
        ("[MQTT-3.8.3-5] subscription option bit 6", V5,
            subscribe(V5, "a", 0x41), E::ReservedSubscriptionOptions, MALFORMED),
        ("[MQTT-3.8.3-5] subscription option bit 7", V5,
            subscribe(V5, "a", 0x80), E::ReservedSubscriptionOptions, MALFORMED),
        ("[MQTT-3-8.3-4] subscription option bit 7", V311,
            subscribe(V311, "a", 0x80), E::ReservedSubscriptionOptions, MALFORMED),
        // 3.1.1 [MQTT-3-8.3-4]: bits 7-2 reserved, "MUST treat … as malformed"; MQTT 5.0
        // gives bits 5-2 a meaning, so they are rejected only before 5.0.
        ("[MQTT-3-8.3-4] No Local bit in 3.1.1", V311,
            subscribe(V311, "a", 0x04), E::V5SubscriptionOptionsBeforeV5, MALFORMED),
        ("[MQTT-3-8.3-4] Retain As Published bit in 3.1.1", V311,
            subscribe(V311, "a", 0x08), E::V5SubscriptionOptionsBeforeV5, MALFORMED),
        ("[MQTT-3-8.3-4] Retain Handling bits in 3.1.1", V311,
            subscribe(V311, "a", 0x21), E::V5SubscriptionOptionsBeforeV5, MALFORMED),
        ("3.1 options bits in a 3.1 SUBSCRIBE", V31,
            subscribe(V31, "a", 0x10), E::V5SubscriptionOptionsBeforeV5, MALFORMED),
        // 5.0 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
        // (3.1.1 [MQTT-3-8.3-4] calls the same thing malformed; the reason code byte is a 5.0
        // notion and the codec reports one value for both.)
        ("§3.8.3.1 subscription QoS 3", V5,
            subscribe(V5, "a", 0x03), E::InvalidSubscriptionQoS, PROTOCOL_ERROR),
        ("[MQTT-3-8.3-4] subscription QoS 3", V311,
            subscribe(V311, "a", 0x03), E::InvalidSubscriptionQoS, PROTOCOL_ERROR),
        // 5.0 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
        ("§3.8.3.1 Retain Handling 3", V5,
            subscribe(V5, "a", 0x30), E::InvalidRetainHandling, PROTOCOL_ERROR),
        // [MQTT-3.8.3-4] "It is a Protocol Error to set the No Local bit to 1 on a Shared
        // Subscription."
        ("[MQTT-3.8.3-4] No Local on a Shared Subscription", V5,
            subscribe(V5, "$share/g/a", 0x05), E::NoLocalOnSharedSubscription, PROTOCOL_ERROR),
        // [MQTT-2.2.1-3] non-zero Packet Identifier.
        ("[MQTT-2.2.1-3] SUBSCRIBE Packet Identifier 0", V311,
            frame(0x82, &cat(&[&[0x00, 0x00], &s("a"), &[0x00]])), E::ZeroPacketId,
            PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] UNSUBSCRIBE Packet Identifier 0", V311,
            frame(0xA2, &cat(&[&[0x00, 0x00], &s("a")])), E::ZeroPacketId, PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] UNSUBSCRIBE Packet Identifier 0", V5,
            frame(0xA2, &cat(&[&[0x00, 0x00, 0x00], &s("a")])), E::ZeroPacketId,
            PROTOCOL_ERROR),
        // Truncated entries inside a complete frame.
        ("§4.13 Topic Filter without its options byte", V311,
            frame(0x82, &cat(&[&[0x00, 0x01], &s("a")])), E::UnexpectedEof, MALFORMED),
        ("§4.13 UNSUBSCRIBE filter longer than the packet", V311,
            vec![0xA2, 0x04, 0x00, 0x01, 0x00, 0x02], E::UnexpectedEof, MALFORMED),
        ("[MQTT-1.5.4-1] ill-formed UTF-8 in a Topic Filter", V5,
            frame(0x82, &cat(&[&[0x00, 0x01, 0x00], &raw(&[0xED, 0xA0, 0x80]), &[0x00]])),
            E::InvalidUtf8, MALFORMED),
    ]
}

/// CONNACK, the acknowledgements, DISCONNECT, PINGREQ/PINGRESP and AUTH.
#[rustfmt::skip] // A table: one row per rule, kept compact.
fn ack_rules() -> Vec<Case> {
    let code = |packet, code| E::InvalidReasonCode { packet, code };
    vec![
        // Bytes after the last field (5.0 §4.13, 3.1.1 §4.8): the Remaining Length covers
        // more than the packet holds.
        ("§4.13 CONNACK with a third byte", V311,
            vec![0x20, 0x03, 0x00, 0x00, 0x00], E::TrailingBytes(T::ConnAck), MALFORMED),
        ("§4.13 bytes after the CONNACK properties", V5,
            vec![0x20, 0x04, 0x00, 0x00, 0x00, 0xFF], E::TrailingBytes(T::ConnAck), MALFORMED),
        ("§4.13 3.1.1 PUBACK with a reason code byte", V311,
            vec![0x40, 0x03, 0x00, 0x01, 0x00], E::TrailingBytes(T::PubAck), MALFORMED),
        ("§4.13 3.1 PUBREC with a third byte", V31,
            vec![0x50, 0x03, 0x00, 0x01, 0x00], E::TrailingBytes(T::PubRec), MALFORMED),
        ("§4.13 bytes after the PUBACK properties", V5,
            vec![0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF], E::TrailingBytes(T::PubAck),
            MALFORMED),
        ("§4.13 bytes after the PUBREL properties", V5,
            vec![0x62, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF], E::TrailingBytes(T::PubRel),
            MALFORMED),
        ("§4.13 bytes after the PUBCOMP properties", V5,
            vec![0x70, 0x05, 0x00, 0x01, 0x92, 0x00, 0x00], E::TrailingBytes(T::PubComp),
            MALFORMED),
        ("§4.13 3.1.1 DISCONNECT with a body", V311,
            vec![0xE0, 0x01, 0x00], E::TrailingBytes(T::Disconnect), MALFORMED),
        ("§4.13 bytes after the DISCONNECT properties", V5,
            vec![0xE0, 0x03, 0x00, 0x00, 0xFF], E::TrailingBytes(T::Disconnect), MALFORMED),
        ("§3.12 PINGREQ with a body", V311,
            vec![0xC0, 0x01, 0x00], E::TrailingBytes(T::PingReq), MALFORMED),
        ("§3.13 PINGRESP with a body", V5,
            vec![0xD0, 0x01, 0x00], E::TrailingBytes(T::PingResp), MALFORMED),
        ("§4.13 bytes after the AUTH properties", V5,
            vec![0xF0, 0x03, 0x00, 0x00, 0xFF], E::TrailingBytes(T::Auth), MALFORMED),
        // 3.1.1 §3.11.3: "The UNSUBACK Packet has no payload."
        ("3.1.1 §3.11.3 UNSUBACK with a payload", V311,
            vec![0xB0, 0x03, 0x00, 0x01, 0x00], E::TrailingBytes(T::UnsubAck), MALFORMED),
        // Truncated fields inside a complete frame.
        ("§4.13 PUBACK with half a Packet Identifier", V311,
            vec![0x40, 0x01, 0x00], E::UnexpectedEof, MALFORMED),
        ("§4.13 CONNACK without its return code", V311,
            vec![0x20, 0x01, 0x00], E::UnexpectedEof, MALFORMED),
        // 5.0 §3.2.2.3.1: unlike PUBACK or DISCONNECT, CONNACK has no short form without the
        // Property Length.
        ("§3.2.2.3.1 CONNACK without Property Length", V5,
            vec![0x20, 0x02, 0x00, 0x00], E::UnexpectedEof, MALFORMED),
        ("§4.13 SUBACK with half a Packet Identifier", V5,
            vec![0x90, 0x01, 0x00], E::UnexpectedEof, MALFORMED),
        // SUBACK return codes: 3.1.1 [MQTT-3.9.3-2] "SUBACK return codes other than 0x00,
        // 0x01, 0x02 and 0x80 are reserved and MUST NOT be used"; 5.0 §3.9.3 Table.
        ("[MQTT-3.9.3-2] SUBACK code 0x03", V311,
            vec![0x90, 0x03, 0x00, 0x01, 0x03], code(T::SubAck, 0x03), MALFORMED),
        ("[MQTT-3.9.3-2] SUBACK code 0x7F", V311,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x7F], code(T::SubAck, 0x7F), MALFORMED),
        ("3.1 SUBACK granted QoS 3", V31,
            vec![0x90, 0x03, 0x00, 0x01, 0x03], code(T::SubAck, 0x03), MALFORMED),
        ("§3.9.3 SUBACK reason code 0x10", V5,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x10], code(T::SubAck, 0x10), MALFORMED),
        ("§3.9.3 SUBACK reason code 0x87 in 3.1.1", V311,
            vec![0x90, 0x03, 0x00, 0x01, 0x87], code(T::SubAck, 0x87), MALFORMED),
        // 5.0 §3.11.3 UNSUBACK reason codes.
        ("§3.11.3 UNSUBACK reason code 0x01", V5,
            vec![0xB0, 0x04, 0x00, 0x01, 0x00, 0x01], code(T::UnsubAck, 0x01), MALFORMED),
        ("§3.11.3 UNSUBACK reason code 0x10", V5,
            vec![0xB0, 0x05, 0x00, 0x01, 0x00, 0x00, 0x10], code(T::UnsubAck, 0x10),
            MALFORMED),
        // SUBACK needs one code per filter, 5.0 UNSUBACK too (3.1.1 §3.9.3, 5.0 §3.9.3,
        // §3.11.3).
        ("§3.9.3 SUBACK without return codes", V311,
            vec![0x90, 0x02, 0x00, 0x01], E::EmptyPayload(T::SubAck), MALFORMED),
        ("§3.9.3 SUBACK without reason codes", V5,
            vec![0x90, 0x03, 0x00, 0x01, 0x00], E::EmptyPayload(T::SubAck), MALFORMED),
        ("§3.11.3 UNSUBACK without reason codes", V5,
            vec![0xB0, 0x03, 0x00, 0x01, 0x00], E::EmptyPayload(T::UnsubAck), MALFORMED),
        // Reason codes the packet type may not carry (5.0 §2.4 Table 2-6 and §3.x.2.1). The
        // spec does not classify these either; the codec reports 0x81 Malformed Packet.
        ("§3.4.2.1 PUBACK reason code 0x04", V5,
            vec![0x40, 0x03, 0x00, 0x01, 0x04], code(T::PubAck, 0x04), MALFORMED),
        ("§3.5.2.1 PUBREC reason code 0x92", V5,
            vec![0x50, 0x03, 0x00, 0x01, 0x92], code(T::PubRec, 0x92), MALFORMED),
        ("§3.6.2.1 PUBREL reason code 0x10", V5,
            vec![0x62, 0x03, 0x00, 0x01, 0x10], code(T::PubRel, 0x10), MALFORMED),
        ("§3.7.2.1 PUBCOMP reason code 0x80", V5,
            vec![0x70, 0x03, 0x00, 0x01, 0x80], code(T::PubComp, 0x80), MALFORMED),
        ("§3.14.2.1 DISCONNECT reason code 0x01", V5,
            vec![0xE0, 0x01, 0x01], code(T::Disconnect, 0x01), MALFORMED),
        ("§3.14.2.1 DISCONNECT reason code 0x84", V5,
            vec![0xE0, 0x01, 0x84], code(T::Disconnect, 0x84), MALFORMED),
        ("§3.15.2.1 AUTH reason code 0x01", V5,
            vec![0xF0, 0x02, 0x01, 0x00], code(T::Auth, 0x01), MALFORMED),
        ("§3.15.2.1 AUTH reason code 0x87", V5,
            vec![0xF0, 0x02, 0x87, 0x00], code(T::Auth, 0x87), MALFORMED),
        ("§3.2.2.2 CONNACK reason code 0x8B", V5,
            vec![0x20, 0x03, 0x00, 0x8B, 0x00], code(T::ConnAck, 0x8B), MALFORMED),
        ("§3.2.2.2 CONNACK reason code 0x03", V5,
            vec![0x20, 0x03, 0x00, 0x03, 0x00], code(T::ConnAck, 0x03), MALFORMED),
        // 3.1.1 §3.2.2.3 Table 3.1: return codes 6-255 are "Reserved for future use".
        ("3.1.1 Table 3.1 CONNACK return code 6", V311,
            vec![0x20, 0x02, 0x00, 0x06], code(T::ConnAck, 0x06), MALFORMED),
        ("3.1.1 Table 3.1 CONNACK return code 0x87", V311,
            vec![0x20, 0x02, 0x00, 0x87], code(T::ConnAck, 0x87), MALFORMED),
        ("3.1 CONNACK return code 6", V31,
            vec![0x20, 0x02, 0x00, 0x06], code(T::ConnAck, 0x06), MALFORMED),
        // [MQTT-3.2.2-1] Connect Acknowledge Flags: "Bits 7-1 are reserved and MUST be set to
        // 0" (3.1.1 §3.2.2.1, 5.0 §3.2.2.1).
        ("[MQTT-3.2.2-1] CONNACK flag bit 1", V311,
            vec![0x20, 0x02, 0x02, 0x00], E::InvalidConnAckFlags, MALFORMED),
        ("[MQTT-3.2.2-1] CONNACK flag bit 7", V5,
            vec![0x20, 0x03, 0x80, 0x00, 0x00], E::InvalidConnAckFlags, MALFORMED),
        // [MQTT-2.2.1-3] non-zero Packet Identifier in the acknowledgements.
        ("[MQTT-2.2.1-3] PUBACK Packet Identifier 0", V311,
            vec![0x40, 0x02, 0x00, 0x00], E::ZeroPacketId, PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] PUBACK Packet Identifier 0", V5,
            vec![0x40, 0x03, 0x00, 0x00, 0x10], E::ZeroPacketId, PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] PUBREL Packet Identifier 0", V5,
            vec![0x62, 0x02, 0x00, 0x00], E::ZeroPacketId, PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] SUBACK Packet Identifier 0", V311,
            vec![0x90, 0x03, 0x00, 0x00, 0x00], E::ZeroPacketId, PROTOCOL_ERROR),
        ("[MQTT-2.2.1-3] UNSUBACK Packet Identifier 0", V5,
            vec![0xB0, 0x04, 0x00, 0x00, 0x00, 0x00], E::ZeroPacketId, PROTOCOL_ERROR),
    ]
}

#[test]
fn fixed_header_and_remaining_length() {
    check_all(&fixed_header());
}

#[test]
fn connect_table() {
    check_all(&connect_rules());
}

#[test]
fn publish_and_utf8_table() {
    check_all(&publish_rules());
}

#[test]
fn property_table() {
    check_all(&property_rules());
}

#[test]
fn subscribe_and_unsubscribe_table() {
    check_all(&subscribe_rules());
}

#[test]
fn acknowledgement_table() {
    check_all(&ack_rules());
}

#[test]
fn the_table_has_at_least_60_distinct_cases() {
    let all: Vec<Case> = [
        fixed_header(),
        connect_rules(),
        publish_rules(),
        property_rules(),
        subscribe_rules(),
        ack_rules(),
    ]
    .concat();
    assert!(all.len() >= 60, "{} cases", all.len());
    // No row is a copy of another.
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(
                (a.1, &a.2) != (b.1, &b.2),
                "{:?} and {:?} test the same bytes",
                a.0,
                b.0
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What must not be rejected
// ---------------------------------------------------------------------------------------------

/// Decodes one whole packet, which must take all of `bytes`.
#[track_caller]
fn decodes(version: ProtocolVersion, bytes: &[u8]) -> Packet<'static> {
    match decode(bytes, &DecodeContext::new(version)) {
        Ok(Some((packet, used))) => {
            assert_eq!(used, bytes.len());
            packet.into_owned()
        }
        other => panic!("{bytes:02X?} ({version}) gave {other:?}"),
    }
}

#[test]
fn password_without_username_in_v5() {
    // MQTT 5.0 §3.1.2.9: "This version of the protocol allows the sending of a Password with
    // no User Name, where MQTT v3.1.1 did not."
    let bytes = connect(V5, 0x42, &[], &cat(&[&s("c"), &s("p")]));
    let Packet::Connect(connect) = decodes(V5, &bytes) else {
        panic!("not a CONNECT");
    };
    assert_eq!(
        connect,
        Connect {
            password: Some((&b"p"[..]).into()),
            ..Connect::new(V5, "c")
        }
    );
}

#[test]
fn user_property_may_repeat() {
    // MQTT 5.0 §3.1.2.11.8 (and §3.3.2.3.7, §3.14.2.2.4…): "The User Property is allowed to
    // appear multiple times to represent multiple name, value pairs. The same name is allowed
    // to appear more than once."
    let block = cat(&[&[0x26], &s("k"), &s("v"), &[0x26], &s("k"), &s("w")]);
    let expected = [("k", "v"), ("k", "w")];
    let Packet::Publish(publish) = decodes(V5, &publish_v5(&block)) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        publish
            .properties
            .user_properties
            .iter()
            .collect::<Vec<_>>(),
        expected
    );
    let Packet::Connect(connect) = decodes(V5, &connect_v5(&block)) else {
        panic!("not a CONNECT");
    };
    assert_eq!(
        connect
            .properties
            .user_properties
            .iter()
            .collect::<Vec<_>>(),
        expected
    );
    let Packet::Disconnect(disconnect) = decodes(V5, &disconnect_v5(&block)) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(disconnect.properties.user_properties.len(), 2);
}

#[test]
fn subscription_identifier_may_repeat_in_publish() {
    // MQTT 5.0 §3.3.2.3.8: "Multiple Subscription Identifiers will be included if the
    // publication is the result of a match to more than one subscription".
    let Packet::Publish(publish) = decodes(V5, &publish_v5(&[0x0B, 0x01, 0x0B, 0x02])) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        publish
            .properties
            .subscription_identifiers
            .iter()
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn empty_v311_unsuback_is_fine() {
    // 3.1.1 §3.11.3: "The UNSUBACK Packet has no payload."
    let Packet::UnsubAck(unsuback) = decodes(V311, &[0xB0, 0x02, 0x00, 0x01]) else {
        panic!("not an UNSUBACK");
    };
    assert_eq!(unsuback.packet_id.get(), 1);
    assert!(unsuback.properties.is_empty());
    assert!(unsuback.reason_codes.is_empty());
}

#[test]
fn empty_payload_publish_is_fine() {
    // MQTT 5.0 §3.3.3: "It is valid for a PUBLISH packet to contain a zero length Payload."
    let empty = Packet::Publish(Publish::new("a", Vec::new()));
    assert_eq!(decodes(V311, &[0x30, 0x03, 0x00, 0x01, b'a']), empty);
    assert_eq!(decodes(V5, &[0x30, 0x04, 0x00, 0x01, b'a', 0x00]), empty);
}

#[test]
fn empty_v5_topic_with_topic_alias_is_fine() {
    // MQTT 5.0 §3.3.2.3.4: a zero length Topic Name with a Topic Alias.
    let bytes = frame(0x30, &cat(&[&s(""), &props(&[0x23, 0x00, 0x07]), b"x"]));
    let Packet::Publish(publish) = decodes(V5, &bytes) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.topic, "");
    assert_eq!(publish.properties.topic_alias, Some(7));
}

#[test]
fn a_packet_of_exactly_the_maximum_size_is_fine() {
    // Remaining Length 1 048 572 makes exactly 1 MiB with its 4-byte fixed header: accepted,
    // so the decoder waits for the body.
    let header = [0x30, 0xFC, 0xFF, 0x3F];
    assert_eq!(decode(&header, &DecodeContext::new(V5)), Ok(None));
    // The same with a small configured maximum.
    let cx = DecodeContext::new(V311).with_max_packet_size(5);
    let ok = [0x30, 0x03, 0x00, 0x01, b'a'];
    assert!(matches!(
        decode(&ok, &cx),
        Ok(Some((Packet::Publish(_), 5)))
    ));
    let too_big = [0x30, 0x04, 0x00, 0x01, b'a', b'x'];
    let err = decode(&too_big[..2], &cx).unwrap_err();
    assert_eq!(err, E::PacketTooLarge { size: 6, max: 5 });
    assert_eq!(err.reason_code().as_u8(), PACKET_TOO_LARGE);
}

#[test]
fn an_incomplete_frame_is_need_more_not_an_error() {
    // The "need more" answer is for a frame whose bytes have not all arrived; every prefix of
    // a valid packet gets it.
    let bytes = publish_v5(&[0x23, 0x00, 0x01]);
    for end in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..end], &DecodeContext::new(V5)),
            Ok(None),
            "{end}"
        );
    }
    assert!(decode(&bytes, &DecodeContext::new(V5)).unwrap().is_some());
}

#[test]
fn legal_subscription_options_are_accepted() {
    // Every options byte MQTT 5.0 §3.8.3.1 allows: QoS 0-2, No Local, RAP, Retain Handling
    // 0-2, bits 7-6 zero.
    let mut accepted = 0;
    for options in 0..=0x3Fu8 {
        let legal = options & 0b11 != 3 && options >> 4 != 3;
        let bytes = subscribe(V5, "a", options);
        let result = decode(&bytes, &DecodeContext::new(V5));
        assert_eq!(result.is_ok(), legal, "options {options:#04x}: {result:?}");
        accepted += usize::from(legal);
    }
    assert_eq!(accepted, 3 * 2 * 2 * 3);
    // 3.1.1 allows the QoS bits only.
    for options in 0..=2u8 {
        assert!(decode(&subscribe(V311, "a", options), &DecodeContext::new(V311)).is_ok());
    }
}

#[test]
fn byte_order_mark_is_kept() {
    // [MQTT-1.5.4-3] "A UTF-8 encoded sequence 0xEF 0xBB 0xBF is always interpreted as U+FEFF
    // ("ZERO WIDTH NO-BREAK SPACE") wherever it appears in a string and MUST NOT be skipped
    // over or stripped off by a packet receiver."
    let bytes = frame(0x30, &raw(&[0xEF, 0xBB, 0xBF, b'a']));
    let Packet::Publish(publish) = decodes(V311, &bytes) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.topic, "\u{FEFF}a");
}

#[test]
fn auth_with_a_reason_code_and_no_property_length_is_accepted() {
    // Ambiguous in MQTT 5.0: §3.15.2.1 allows omitting both the Reason Code and the Property
    // Length (Remaining Length 0), and unlike PUBACK (§3.4.2.2.1) or DISCONNECT (§3.14.2.2.1)
    // AUTH has no "if the Remaining Length is less than …" rule for omitting the Property
    // Length alone. The codec reads a missing Property Length as 0 here, like Mosquitto does;
    // this test records that choice.
    let Packet::Auth(auth) = decodes(V5, &[0xF0, 0x01, 0x18]) else {
        panic!("not an AUTH");
    };
    assert_eq!(auth.reason_code.as_u8(), 0x18);
    assert!(auth.properties.is_empty());
}

#[test]
fn v31_dup_on_pubrel_subscribe_unsubscribe_is_accepted() {
    // MQTT 3.1 (2010) §2.1 "DUP": "This flag is set when the client or server attempts to
    // re-deliver a PUBLISH, PUBREL, SUBSCRIBE or UNSUBSCRIBE message" — a 3.1 peer may resend a
    // SUBSCRIBE as 0x8A (DUP, QoS 1). 3.1.1 [MQTT-3.8.1-1] fixed these flags at 0010, so only
    // 3.1 accepts it.
    let bytes = frame(0x8A, &subscribe(V31, "a", 0x01)[2..]);
    assert!(matches!(
        decode(&bytes, &DecodeContext::new(V31)),
        Ok(Some((Packet::Subscribe(_), _)))
    ));
    assert_eq!(
        decode(&bytes, &DecodeContext::new(V311)),
        Err(E::InvalidFixedHeaderFlags {
            packet: T::Subscribe,
            flags: 0b1010
        })
    );
    // PUBREL with DUP in 3.1.
    assert!(matches!(
        decode(&[0x6A, 0x02, 0x00, 0x01], &DecodeContext::new(V31)),
        Ok(Some((Packet::PubRel(_), 4)))
    ));
    // Other reserved bits stay reserved.
    assert_eq!(
        decode(&[0x63, 0x02, 0x00, 0x01], &DecodeContext::new(V31)),
        Err(E::InvalidFixedHeaderFlags {
            packet: T::PubRel,
            flags: 0b0011
        })
    );
}
