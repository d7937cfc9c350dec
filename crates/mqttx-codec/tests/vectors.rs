//! Byte vectors from the MQTT specifications, checked in both directions.
//!
//! Every vector is an annotated byte array: a comment per field names the spec section or
//! table it follows. [`check_vector`] decodes the bytes (whole, and through a [`Decoder`] fed
//! one byte at a time) and compares the result with the expected [`Packet`], then encodes that
//! packet and compares the result with the bytes. Vectors that are valid but not the shortest
//! form (which the encoder always writes) go through [`check_decodes_to`] instead.
//!
//! Spec references: "3.1" is MQTT V3.1 (IBM/Eurotech, 2010), "3.1.1" is the OASIS standard
//! of 2014, "5.0" is the OASIS standard of 2019.

use std::borrow::Cow;

use mqttx_codec::{
    Auth, ConnAck, Connect, DecodeContext, DecodeError, Decoder, Disconnect, EncodeContext,
    EncodeError, FrameHeader, Packet, PacketId, Properties, Props, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, Unsubscribe, UserProperty, Will, decode, decode_header, encode,
    encode_publish_header, encode_to_slice, encoded_len,
};

use ProtocolVersion::{V5, V31, V311};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Decodes `bytes` as one packet of `version`, whole and in 1-byte chunks, and returns it
/// owned after checking it equals `expected`.
#[track_caller]
fn check_decodes_to(version: ProtocolVersion, bytes: &[u8], expected: &Packet<'_>) {
    let cx = DecodeContext::new(version);
    let (packet, used) = match decode(bytes, &cx) {
        Ok(Some(found)) => found,
        other => panic!("decode of {bytes:02X?} gave {other:?}"),
    };
    assert_eq!(used, bytes.len(), "decode used {used} of {bytes:02X?}");
    assert_eq!(&packet, expected, "decode of {bytes:02X?}");

    // The stream decoder agrees when the bytes arrive one at a time, and only says "need more"
    // until the last byte.
    let mut decoder = Decoder::new(cx);
    for (i, byte) in bytes.iter().enumerate() {
        decoder.feed(std::slice::from_ref(byte));
        let next = decoder.next_packet();
        if i + 1 < bytes.len() {
            assert_eq!(
                next,
                Ok(None),
                "decoder after {} bytes of {bytes:02X?}",
                i + 1
            );
        } else {
            assert_eq!(next.as_ref().ok().and_then(Option::as_ref), Some(expected));
        }
    }
}

/// The one check of this file: `bytes` decodes to `expected`, and `expected` encodes to
/// exactly `bytes` (through `encode`, `encode_to_slice` and `encoded_len`).
#[track_caller]
fn check_vector(version: ProtocolVersion, bytes: &[u8], expected: Packet<'_>) {
    check_decodes_to(version, bytes, &expected);

    let cx = EncodeContext::new(version);
    let mut out = vec![0xEE]; // `encode` appends: keep what was there.
    encode(&expected, &cx, &mut out).expect("encode");
    assert_eq!(out[0], 0xEE);
    assert_eq!(&out[1..], bytes, "encode of {expected:?}");
    assert_eq!(encoded_len(&expected, &cx), Ok(bytes.len()));
    let mut buf = vec![0u8; bytes.len()];
    assert_eq!(encode_to_slice(&expected, &cx, &mut buf), Ok(bytes.len()));
    assert_eq!(buf, bytes, "encode_to_slice of {expected:?}");
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero packet id")
}

fn user(key: &str, value: &str) -> UserProperty {
    UserProperty::new(key, value)
}

fn ack(id: u16, reason_code: ReasonCode) -> PubResponse<'static> {
    PubResponse {
        reason_code,
        ..PubResponse::new(pid(id))
    }
}

fn filters(list: &[(&str, SubscriptionOptions)]) -> Vec<SubscribeFilter> {
    list.iter()
        .map(|&(filter, options)| SubscribeFilter {
            filter: filter.into(),
            options,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data representations (MQTT 5.0 §1.5)
// ---------------------------------------------------------------------------------------------

/// MQTT 5.0 §1.5.5 (3.1.1 §2.2.3), Table 1-1 "Size of Variable Byte Integer": the smallest and
/// largest value of each encoded length, plus the spec's examples 64 → `40` and 321 → `C1 02`.
const REMAINING_LENGTHS: &[(u32, &[u8])] = &[
    (0, &[0x00]),                             // 1 byte, smallest
    (64, &[0x40]),                            // §1.5.5 example: 64 is the single byte 0x40
    (127, &[0x7F]),                           // 1 byte, largest
    (128, &[0x80, 0x01]),                     // 2 bytes, smallest
    (321, &[0xC1, 0x02]),                     // §1.5.5 example: 321 = 65 + 2*128 → 0xC1 0x02
    (16_383, &[0xFF, 0x7F]),                  // 2 bytes, largest
    (16_384, &[0x80, 0x80, 0x01]),            // 3 bytes, smallest
    (2_097_151, &[0xFF, 0xFF, 0x7F]),         // 3 bytes, largest
    (2_097_152, &[0x80, 0x80, 0x80, 0x01]),   // 4 bytes, smallest
    (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]), // 4 bytes, largest: the protocol maximum
];

#[test]
fn remaining_length_boundaries_decode() {
    for &(value, encoded) in REMAINING_LENGTHS {
        let mut bytes = vec![0x30]; // PUBLISH, QoS 0: the type does not matter to the header
        bytes.extend_from_slice(encoded);
        let Ok(Some(FrameHeader {
            remaining_len,
            header_len,
            ..
        })) = decode_header(&bytes, u32::MAX)
        else {
            panic!("no header for {value}");
        };
        assert_eq!(remaining_len, value, "{encoded:02X?}");
        assert_eq!(header_len, 1 + encoded.len(), "{encoded:02X?}");
        // One byte short of the Remaining Length is "need more", not an error.
        assert_eq!(decode_header(&bytes[..bytes.len() - 1], u32::MAX), Ok(None));
    }
}

#[test]
fn remaining_length_boundaries_encode() {
    let cx = EncodeContext::new(V311);
    for &(value, encoded) in REMAINING_LENGTHS {
        if value == 0 {
            // Only packets without a body have Remaining Length 0.
            let mut out = Vec::new();
            encode(&Packet::PingReq, &cx, &mut out).unwrap();
            assert_eq!(out, [0xC0, 0x00]);
            continue;
        }
        if value == 268_435_455 {
            // A packet this size needs a 256 MiB payload; the decode test above covers the
            // bytes, and `encode_rejects_oversized_packets` the limit, without that memory.
            continue;
        }
        // A 3.1.1 PUBLISH QoS 0 to topic "t": 3 bytes of topic, the rest payload.
        let publish = Publish::new("t", Cow::Owned(vec![0u8; value as usize - 3]));
        let mut head = Vec::new();
        let n = encode_publish_header(&publish, &cx, &mut head).unwrap();
        let mut expected = vec![0x30]; // PUBLISH, QoS 0
        expected.extend_from_slice(encoded); // Remaining Length
        expected.extend_from_slice(&[0x00, 0x01, b't']); // Topic Name "t"
        assert_eq!(head, expected, "Remaining Length {value}");
        assert_eq!(n, head.len());
        let packet = Packet::Publish(publish);
        assert_eq!(
            encoded_len(&packet, &cx),
            Ok(1 + encoded.len() + value as usize)
        );
        if value <= 16_384 {
            let mut out = Vec::new();
            encode(&packet, &cx, &mut out).unwrap();
            assert_eq!(out[..head.len()], head[..]);
            assert_eq!(out.len(), 1 + encoded.len() + value as usize);
        }
    }
}

#[test]
fn encode_rejects_oversized_packets() {
    // The 268 435 455-byte Remaining Length maximum is not exercised here: a payload that size
    // is 256 MiB. The same check path runs for the peer's Maximum Packet Size, tested here.
    let cx = EncodeContext::new(V311).with_max_packet_size(100);
    let fits = Packet::Publish(Publish::new("t", vec![0u8; 95])); // 2 + 98 = 100 bytes
    assert_eq!(encoded_len(&fits, &cx), Ok(100));
    let too_big = Packet::Publish(Publish::new("t", vec![0u8; 96])); // 101 bytes
    assert_eq!(
        encoded_len(&too_big, &cx),
        Err(EncodeError::PacketTooLarge {
            size: 101,
            max: 100
        })
    );
    let mut out = Vec::new();
    assert!(encode(&too_big, &cx, &mut out).is_err());
    assert!(out.is_empty(), "nothing is written when validation fails");
}

#[test]
fn remaining_length_with_continuation_bit_on_fourth_byte_is_malformed() {
    // MQTT 5.0 §1.5.5: "The maximum number of bytes in the Variable Byte Integer field is
    // four." A fifth byte (continuation bit set on the fourth) is a Malformed Packet.
    let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    let err = decode_header(&bytes, u32::MAX).unwrap_err();
    assert_eq!(err, DecodeError::MalformedVariableByteInteger);
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(err.reason_code().as_u8(), 0x81);
    // It is known to be malformed as soon as the fourth byte has arrived.
    assert_eq!(
        decode_header(&bytes[..5], u32::MAX),
        Err(DecodeError::MalformedVariableByteInteger)
    );
}

#[test]
fn utf8_string_example_of_figure_1_1() {
    // MQTT 5.0 §1.5.4, Figure 1-1 "UTF-8 Encoded String non-normative example": the string
    // "A𪛔" (LATIN CAPITAL LETTER A, then U+2A6D4, a CJK ideograph outside the BMP).
    let topic = "A\u{2A6D4}";
    assert_eq!(topic.len(), 5);
    check_vector(
        V311,
        &[
            0x30, 0x07, // PUBLISH, QoS 0; Remaining Length 7
            0x00, 0x05, // string length 5 (Figure 1-1 byte 1, byte 2)
            0x41, // 'A'
            0xF0, 0xAA, 0x9B, 0x94, // U+2A6D4
                  // no payload
        ],
        Packet::Publish(Publish::new(topic, Vec::new())),
    );
    check_vector(
        V5,
        &[
            0x30, 0x08, // PUBLISH, QoS 0; Remaining Length 8
            0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94, // Topic Name "A\u{2A6D4}"
            0x00, // Property Length 0 (§3.3.2.3.1)
        ],
        Packet::Publish(Publish::new(topic, Vec::new())),
    );
}

// ---------------------------------------------------------------------------------------------
// CONNECT (3.1 §3.1, 3.1.1 §3.1, 5.0 §3.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_v31() {
    check_vector(
        V31,
        &[
            0x10, 0x19, // CONNECT (type 1, flags 0); Remaining Length 25
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // 3.1 Protocol Name "MQIsdp"
            0x03, // Protocol Version 3
            0xC2, // Connect Flags: User Name, Password, Clean Session
            0x00, 0x0A, // Keep Alive 10 s
            0x00, 0x05, b'm', b'q', b't', b't', b'x', // Client Identifier "mqttx"
            0x00, 0x01, b'u', // User Name "u"
            0x00, 0x01, b'p', // Password "p"
        ],
        Packet::Connect(Connect {
            keep_alive: 10,
            username: Some("u".into()),
            password: Some((&b"p"[..]).into()),
            ..Connect::new(V31, "mqttx")
        }),
    );
}

#[test]
fn connect_v311() {
    // The variable header is 3.1.1 §3.1.2.10 Figure 3.6 "Variable header non normative
    // example": flags 0xCE (User Name, Password, Will QoS 1, Will Flag, Clean Session), Keep
    // Alive 10.
    check_vector(
        V311,
        &[
            0x10, 0x22, // CONNECT; Remaining Length 34
            0x00, 0x04, b'M', b'Q', b'T', b'T', // Protocol Name "MQTT" (§3.1.2.1)
            0x04, // Protocol Level 4 (§3.1.2.2)
            0xCE, // Connect Flags 1100_1110 (§3.1.2.3)
            0x00, 0x0A, // Keep Alive 10 (§3.1.2.10)
            0x00, 0x02, b'c', b'1', // Client Identifier "c1" (§3.1.3.1)
            0x00, 0x03, b'w', b'/', b't', // Will Topic "w/t" (§3.1.3.2)
            0x00, 0x03, b'b', b'y', b'e', // Will Message "bye" (§3.1.3.3)
            0x00, 0x04, b'u', b's', b'e', b'r', // User Name "user" (§3.1.3.4)
            0x00, 0x02, b'p', b'w', // Password "pw" (§3.1.3.5)
        ],
        Packet::Connect(Connect {
            keep_alive: 10,
            will: Some(Box::new(Will {
                qos: QoS::AtLeastOnce,
                ..Will::new("w/t", &b"bye"[..])
            })),
            username: Some("user".into()),
            password: Some((&b"pw"[..]).into()),
            ..Connect::new(V311, "c1")
        }),
    );
}

#[test]
fn connect_v5_with_properties() {
    check_vector(
        V5,
        &[
            0x10, 0x1E, // CONNECT; Remaining Length 30
            0x00, 0x04, b'M', b'Q', b'T', b'T', // Protocol Name (§3.1.2.1)
            0x05, // Protocol Version 5 (§3.1.2.2)
            0x02, // Connect Flags: Clean Start (§3.1.2.4)
            0x00, 0x3C, // Keep Alive 60 (§3.1.2.10)
            0x0F, // Property Length 15 (§3.1.2.11.1)
            0x11, 0x00, 0x00, 0x00, 0x78, // 0x11 Session Expiry Interval 120 (§3.1.2.11.2)
            0x21, 0x00, 0x0A, // 0x21 Receive Maximum 10 (§3.1.2.11.3)
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 0x26 User Property k=v (§3.1.2.11.8)
            0x00, 0x02, b'c', b'1', // Client Identifier "c1" (§3.1.3.1)
        ],
        Packet::Connect(Connect {
            properties: Properties {
                session_expiry_interval: Some(120),
                receive_maximum: Some(10),
                user_properties: vec![user("k", "v")].into(),
                ..Properties::new()
            }
            .into(),
            ..Connect::new(V5, "c1")
        }),
    );
}

#[test]
fn connect_v5_figure_3_6() {
    // MQTT 5.0 §3.1.2.12 Figure 3-6 "Variable Header example": flags 0xCE, Keep Alive 10,
    // Property Length 5, Session Expiry Interval 10; then a payload for those flags.
    check_vector(
        V5,
        &[
            0x10, 0x21, // CONNECT; Remaining Length 33
            0x00, 0x04, b'M', b'Q', b'T', b'T', // Protocol Name
            0x05, // Protocol Version 5
            0xCE, // User Name, Password, Will QoS 1, Will Flag, Clean Start
            0x00, 0x0A, // Keep Alive 10
            0x05, // Property Length 5
            0x11, 0x00, 0x00, 0x00, 0x0A, // Session Expiry Interval 10
            0x00, 0x02, b'c', b'1', // Client Identifier "c1"
            0x00, // Will Property Length 0 (§3.1.3.2.1)
            0x00, 0x01, b'w', // Will Topic "w" (§3.1.3.3)
            0x00, 0x01, b'x', // Will Payload "x" (§3.1.3.4)
            0x00, 0x01, b'u', // User Name "u" (§3.1.3.5)
            0x00, 0x01, b'p', // Password "p" (§3.1.3.6)
        ],
        Packet::Connect(Connect {
            keep_alive: 10,
            properties: Properties {
                session_expiry_interval: Some(10),
                ..Properties::new()
            }
            .into(),
            will: Some(Box::new(Will {
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Props::new(),
                topic: "w".into(),
                payload: (&b"x"[..]).into(),
            })),
            username: Some("u".into()),
            password: Some((&b"p"[..]).into()),
            ..Connect::new(V5, "c1")
        }),
    );
}

#[test]
fn connect_v5_with_will_properties_and_authentication() {
    check_vector(
        V5,
        &[
            0x10, 0x28, // CONNECT; Remaining Length 40
            0x00, 0x04, b'M', b'Q', b'T', b'T', // Protocol Name
            0x05, // Protocol Version 5
            0x96, // Connect Flags 1001_0110: User Name, Will QoS 2, Will Flag, Clean Start
            0x00, 0x00, // Keep Alive 0: off (§3.1.2.10)
            0x06, // Property Length 6
            0x15, 0x00, 0x01, b'm', // 0x15 Authentication Method "m" (§3.1.2.11.9)
            0x17, 0x00, // 0x17 Request Problem Information 0 (§3.1.2.11.7)
            0x00, 0x00, // Client Identifier "" (§3.1.3.1 allows zero bytes)
            0x0B, // Will Property Length 11 (§3.1.3.2)
            0x01, 0x01, // 0x01 Payload Format Indicator 1: UTF-8 (§3.1.3.2.3)
            0x03, 0x00, 0x01, b't', // 0x03 Content Type "t" (§3.1.3.2.5)
            0x18, 0x00, 0x00, 0x00, 0x05, // 0x18 Will Delay Interval 5 s (§3.1.3.2.2)
            0x00, 0x01, b'w', // Will Topic "w"
            0x00, 0x01, b'x', // Will Payload "x"
            0x00, 0x01, b'u', // User Name "u"
        ],
        Packet::Connect(Connect {
            keep_alive: 0,
            properties: Properties {
                authentication_method: Some("m".into()),
                request_problem_information: Some(false),
                ..Properties::new()
            }
            .into(),
            will: Some(Box::new(Will {
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: Properties {
                    payload_format_indicator: Some(true),
                    content_type: Some("t".into()),
                    will_delay_interval: Some(5),
                    ..Properties::new()
                }
                .into(),
                topic: "w".into(),
                payload: (&b"x"[..]).into(),
            })),
            username: Some("u".into()),
            ..Connect::new(V5, "")
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// CONNACK (3.1 §3.2, 3.1.1 §3.2, 5.0 §3.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn connack_v31() {
    check_vector(
        V31,
        &[
            0x20, 0x02, // CONNACK; Remaining Length 2
            0x00, // reserved byte (3.1: "not used")
            0x00, // Return Code 0: Connection Accepted
        ],
        Packet::ConnAck(ConnAck::default()),
    );
}

#[test]
fn connack_v311() {
    check_vector(
        V311,
        &[
            0x20, 0x02, // CONNACK; Remaining Length 2 (§3.2.1)
            0x01, // Connect Acknowledge Flags: Session Present (§3.2.2.2)
            0x00, // Connect Return Code 0: Connection Accepted (Table 3.1)
        ],
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        }),
    );
}

#[test]
fn connack_v3_return_codes_map_to_v5_reason_codes() {
    // 3.1.1 §3.2.2.3 Table 3.1 "Connect Return code values" (3.1 has the same six values),
    // mapped to the MQTT 5.0 Connect Reason Code with the same meaning (5.0 §3.2.2.2).
    let table = [
        (0x00, ReasonCode::SUCCESS),                      // Connection Accepted
        (0x01, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION), // unacceptable protocol version
        (0x02, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),  // identifier rejected
        (0x03, ReasonCode::SERVER_UNAVAILABLE),           // Server unavailable
        (0x04, ReasonCode::BAD_USER_NAME_OR_PASSWORD),    // bad user name or password
        (0x05, ReasonCode::NOT_AUTHORIZED),               // not authorized
    ];
    for version in [V31, V311] {
        for (code, reason_code) in table {
            check_vector(
                version,
                &[
                    0x20, 0x02, // CONNACK; Remaining Length 2
                    0x00, // no Session Present
                    code, // Connect Return Code
                ],
                Packet::ConnAck(ConnAck {
                    reason_code,
                    ..ConnAck::default()
                }),
            );
        }
    }
    // A v5-only reason code has no 3.1.1 return code: encoding fails instead of inventing one.
    let quota = Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::QUOTA_EXCEEDED,
        ..ConnAck::default()
    });
    assert_eq!(
        encode(&quota, &EncodeContext::new(V311), &mut Vec::new()),
        Err(EncodeError::InvalidReasonCode {
            packet: mqttx_codec::PacketType::ConnAck,
            code: 0x97
        })
    );
}

#[test]
fn connack_v5_with_properties() {
    check_vector(
        V5,
        &[
            0x20, 0x0F, // CONNACK; Remaining Length 15
            0x00, // Connect Acknowledge Flags (§3.2.2.1)
            0x00, // Connect Reason Code 0x00 Success (§3.2.2.2)
            0x0C, // Property Length 12 (§3.2.2.3.1)
            0x12, 0x00, 0x04, b'a', b'b', b'c', b'd', // 0x12 Assigned Client Id (§3.2.2.3.7)
            0x22, 0x00, 0x0A, // 0x22 Topic Alias Maximum 10 (§3.2.2.3.8)
            0x24, 0x01, // 0x24 Maximum QoS 1 (§3.2.2.3.4)
        ],
        Packet::ConnAck(ConnAck {
            properties: Properties {
                assigned_client_identifier: Some("abcd".into()),
                topic_alias_maximum: Some(10),
                maximum_qos: Some(QoS::AtLeastOnce),
                ..Properties::new()
            }
            .into(),
            ..ConnAck::default()
        }),
    );
}

#[test]
fn connack_v5_refused() {
    check_vector(
        V5,
        &[
            0x20, 0x03, // CONNACK; Remaining Length 3
            0x00, // no Session Present ([MQTT-3.2.2-6] with a failure code)
            0x87, // Connect Reason Code 0x87 Not authorized
            0x00, // Property Length 0
        ],
        Packet::ConnAck(ConnAck {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..ConnAck::default()
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// PUBLISH (3.1 §3.3, 3.1.1 §3.3, 5.0 §3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_v31() {
    check_vector(
        V31,
        &[
            0x30, 0x07, // PUBLISH, DUP 0, QoS 0, RETAIN 0; Remaining Length 7
            0x00, 0x03, b'a', b'/', b'b', // Topic Name "a/b"
            b'h', b'i', // payload
        ],
        Packet::Publish(Publish::new("a/b", &b"hi"[..])),
    );
}

#[test]
fn publish_v311() {
    check_vector(
        V311,
        &[
            0x3D, // PUBLISH 0011, DUP 1, QoS 2 (10), RETAIN 1 (§3.3.1)
            0x0C, // Remaining Length 12
            0x00, 0x03, b'a', b'/', b'b', // Topic Name "a/b" (§3.3.2.1)
            0x00, 0x0A, // Packet Identifier 10 (§3.3.2.2)
            b'h', b'e', b'l', b'l', b'o', // payload (§3.3.3)
        ],
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            packet_id: Some(pid(10)),
            ..Publish::new("a/b", &b"hello"[..])
        }),
    );
    check_vector(
        V311,
        &[
            0x32, 0x07, // PUBLISH QoS 1; Remaining Length 7
            0x00, 0x01, b't', // Topic Name "t"
            0xFF, 0xFF, // Packet Identifier 65535
            b'1', b'2', // payload
        ],
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: Some(pid(0xFFFF)),
            ..Publish::new("t", &b"12"[..])
        }),
    );
}

#[test]
fn publish_v5_without_properties() {
    check_vector(
        V5,
        &[
            0x30, 0x08, // PUBLISH QoS 0; Remaining Length 8
            0x00, 0x03, b'a', b'/', b'b', // Topic Name "a/b"
            0x00, // Property Length 0 (§3.3.2.3.1)
            b'h', b'i', // payload
        ],
        Packet::Publish(Publish::new("a/b", &b"hi"[..])),
    );
}

#[test]
fn publish_v5_qos1_with_properties() {
    check_vector(
        V5,
        &[
            0x32, 0x25, // PUBLISH QoS 1; Remaining Length 37
            0x00, 0x03, b'a', b'/', b'b', // Topic Name "a/b" (§3.3.2.1)
            0x00, 0x01, // Packet Identifier 1 (§3.3.2.2)
            0x1B, // Property Length 27 (§3.3.2.3.1)
            0x02, 0x00, 0x00, 0x00, 0x3C, // 0x02 Message Expiry Interval 60 (§3.3.2.3.3)
            0x03, 0x00, 0x04, b'j', b's', b'o',
            b'n', // 0x03 Content Type "json" (§3.3.2.3.9)
            0x0B, 0x01, // 0x0B Subscription Identifier 1 (§3.3.2.3.8)
            0x0B, 0x80, 0x01, // 0x0B Subscription Identifier 128, a 2-byte VBI
            0x23, 0x00, 0x05, // 0x23 Topic Alias 5 (§3.3.2.3.4)
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 0x26 User Property k=v (§3.3.2.3.7)
            b'{', b'}', // payload (§3.3.3)
        ],
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: Some(pid(1)),
            properties: Properties {
                message_expiry_interval: Some(60),
                content_type: Some("json".into()),
                subscription_identifiers: vec![1, 128].into(),
                topic_alias: Some(5),
                user_properties: vec![user("k", "v")].into(),
                ..Properties::new()
            }
            .into(),
            ..Publish::new("a/b", &b"{}"[..])
        }),
    );
}

#[test]
fn publish_v5_empty_topic_with_topic_alias() {
    // MQTT 5.0 §3.3.2.3.4: a sender may send a zero length Topic Name and a Topic Alias.
    check_vector(
        V5,
        &[
            0x30, 0x07, // PUBLISH QoS 0; Remaining Length 7
            0x00, 0x00, // Topic Name "" (zero length)
            0x03, // Property Length 3
            0x23, 0x00, 0x05, // 0x23 Topic Alias 5
            b'x', // payload
        ],
        Packet::Publish(Publish {
            properties: Properties {
                topic_alias: Some(5),
                ..Properties::new()
            }
            .into(),
            ..Publish::new("", &b"x"[..])
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4–§3.7 of each version)
// ---------------------------------------------------------------------------------------------

#[test]
fn puback() {
    for version in [V31, V311] {
        check_vector(
            version,
            &[
                0x40, 0x02, // PUBACK; Remaining Length 2 (3.1.1 §3.4.1)
                0x12, 0x34, // Packet Identifier 0x1234 (§3.4.2)
            ],
            Packet::PubAck(PubResponse::new(pid(0x1234))),
        );
    }
    // MQTT 5.0 §3.4.2.1: "The Reason Code and Property Length can be omitted if the Reason
    // Code is 0x00 (Success) and there are no Properties. In this case the PUBACK has a
    // Remaining Length of 2."
    check_vector(
        V5,
        &[
            0x40, 0x02, // PUBACK; Remaining Length 2
            0x00, 0x01, // Packet Identifier 1
        ],
        Packet::PubAck(PubResponse::new(pid(1))),
    );
    // §3.4.2.2.1: "If the Remaining Length is less than 4 there is no Property Length".
    check_vector(
        V5,
        &[
            0x40, 0x03, // PUBACK; Remaining Length 3
            0x00, 0x01, // Packet Identifier 1
            0x10, // PUBACK Reason Code 0x10 No matching subscribers (Table 3-4)
        ],
        Packet::PubAck(ack(1, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
    );
    check_vector(
        V5,
        &[
            0x40, 0x08, // PUBACK; Remaining Length 8
            0x00, 0x01, // Packet Identifier 1
            0x97, // PUBACK Reason Code 0x97 Quota exceeded
            0x04, // Property Length 4
            0x1F, 0x00, 0x01, b'q', // 0x1F Reason String "q" (§3.4.2.2.2)
        ],
        Packet::PubAck(PubResponse {
            properties: Properties {
                reason_string: Some("q".into()),
                ..Properties::new()
            }
            .into(),
            ..ack(1, ReasonCode::QUOTA_EXCEEDED)
        }),
    );
}

#[test]
fn puback_v5_longer_forms_of_success() {
    // Valid but not the shortest form: the Reason Code 0x00 written out, with and without an
    // empty Property Length. The encoder writes the 2-byte form.
    for bytes in [
        &[0x40, 0x03, 0x00, 0x01, 0x00][..],   // Reason Code 0x00
        &[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], // Reason Code 0x00, Property Length 0
    ] {
        check_decodes_to(V5, bytes, &Packet::PubAck(PubResponse::new(pid(1))));
    }
}

#[test]
fn pubrec() {
    check_vector(
        V31,
        &[0x50, 0x02, 0x00, 0x01], // PUBREC; Remaining Length 2; Packet Identifier 1
        Packet::PubRec(PubResponse::new(pid(1))),
    );
    check_vector(
        V311,
        &[
            0x50, 0x02, // PUBREC; Remaining Length 2 (§3.5.1)
            0xFF, 0xFF, // Packet Identifier 65535 (§3.5.2)
        ],
        Packet::PubRec(PubResponse::new(pid(0xFFFF))),
    );
    check_vector(
        V5,
        &[
            0x50, 0x03, // PUBREC; Remaining Length 3
            0x00, 0x02, // Packet Identifier 2
            0x10, // PUBREC Reason Code 0x10 No matching subscribers (§3.5.2.1)
        ],
        Packet::PubRec(ack(2, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
    );
}

#[test]
fn pubrel() {
    for version in [V31, V311] {
        check_vector(
            version,
            &[
                0x62, 0x02, // PUBREL, flags 0010 ([MQTT-3.6.1-1]); Remaining Length 2
                0x00, 0x02, // Packet Identifier 2
            ],
            Packet::PubRel(PubResponse::new(pid(2))),
        );
    }
    check_vector(
        V5,
        &[0x62, 0x02, 0x00, 0x02], // PUBREL; short form of Reason Code 0x00 (§3.6.2.1)
        Packet::PubRel(PubResponse::new(pid(2))),
    );
    check_vector(
        V5,
        &[
            0x62, 0x03, // PUBREL, flags 0010; Remaining Length 3
            0x00, 0x01, // Packet Identifier 1
            0x92, // PUBREL Reason Code 0x92 Packet Identifier not found (§3.6.2.1)
        ],
        Packet::PubRel(ack(1, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
    );
}

#[test]
fn pubcomp() {
    for version in [V31, V311, V5] {
        check_vector(
            version,
            &[
                0x70, 0x02, // PUBCOMP; Remaining Length 2 (§3.7.1)
                0x00, 0x03, // Packet Identifier 3
            ],
            Packet::PubComp(PubResponse::new(pid(3))),
        );
    }
    check_vector(
        V5,
        &[
            0x70, 0x03, // PUBCOMP; Remaining Length 3
            0x00, 0x01, // Packet Identifier 1
            0x92, // PUBCOMP Reason Code 0x92 Packet Identifier not found (§3.7.2.1)
        ],
        Packet::PubComp(ack(1, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK (§3.8–§3.11)
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_v31() {
    check_vector(
        V31,
        &[
            0x82, 0x08, // SUBSCRIBE, QoS 1 in the header (3.1); Remaining Length 8
            0x00, 0x01, // Message ID 1
            0x00, 0x03, b'a', b'/', b'b', // Topic name "a/b"
            0x01, // Requested QoS 1
        ],
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Props::new(),
            filters: filters(&[("a/b", SubscriptionOptions::new(QoS::AtLeastOnce))]).into(),
        }),
    );
}

#[test]
fn subscribe_v311() {
    check_vector(
        V311,
        &[
            0x82, 0x0E, // SUBSCRIBE, flags 0010 ([MQTT-3.8.1-1]); Remaining Length 14
            0x00, 0x02, // Packet Identifier 2 (§3.8.2)
            0x00, 0x03, b'a', b'/', b'+', // Topic Filter "a/+" (§3.8.3)
            0x00, // Requested QoS 0
            0x00, 0x03, b'b', b'/', b'#', // Topic Filter "b/#"
            0x02, // Requested QoS 2
        ],
        Packet::Subscribe(Subscribe {
            packet_id: pid(2),
            properties: Props::new(),
            filters: filters(&[
                ("a/+", SubscriptionOptions::new(QoS::AtMostOnce)),
                ("b/#", SubscriptionOptions::new(QoS::ExactlyOnce)),
            ])
            .into(),
        }),
    );
}

#[test]
fn subscribe_v5_with_subscription_identifier_and_options() {
    check_vector(
        V5,
        &[
            0x82, 0x18, // SUBSCRIBE, flags 0010; Remaining Length 24
            0x00, 0x0A, // Packet Identifier 10 (§3.8.2)
            0x02, // Property Length 2 (§3.8.2.1.1)
            0x0B, 0x05, // 0x0B Subscription Identifier 5 (§3.8.2.1.2)
            0x00, 0x03, b'a', b'/', b'b', // Topic Filter "a/b" (§3.8.3)
            0x2D, // Options 0010_1101 (Figure 3-21): Retain Handling 2, RAP, No Local, QoS 1
            0x00, 0x0A, // Topic Filter length 10: a Shared Subscription (§4.8.2)
            b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'c', // "$share/g/c"
            0x02, // Options: QoS 2, everything else 0
        ],
        Packet::Subscribe(Subscribe {
            packet_id: pid(10),
            properties: Properties {
                subscription_identifiers: vec![5].into(),
                ..Properties::new()
            }
            .into(),
            filters: filters(&[
                (
                    "a/b",
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                ),
                ("$share/g/c", SubscriptionOptions::new(QoS::ExactlyOnce)),
            ])
            .into(),
        }),
    );
}

#[test]
fn suback() {
    check_vector(
        V31,
        &[
            0x90, 0x03, // SUBACK; Remaining Length 3
            0x00, 0x01, // Message ID 1
            0x01, // Granted QoS 1
        ],
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: Props::new(),
            reason_codes: vec![ReasonCode::GRANTED_QOS_1].into(),
        }),
    );
    check_vector(
        V311,
        &[
            0x90, 0x05, // SUBACK; Remaining Length 5 (§3.9.1)
            0x00, 0x02, // Packet Identifier 2 (§3.9.2)
            0x00, // Success - Maximum QoS 0 (§3.9.3)
            0x02, // Success - Maximum QoS 2
            0x80, // Failure
        ],
        Packet::SubAck(SubAck {
            packet_id: pid(2),
            properties: Props::new(),
            reason_codes: vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::UNSPECIFIED_ERROR,
            ]
            .into(),
        }),
    );
    check_vector(
        V5,
        &[
            0x90, 0x06, // SUBACK; Remaining Length 6
            0x00, 0x0A, // Packet Identifier 10
            0x00, // Property Length 0 (§3.9.2.1.1)
            0x01, // Granted QoS 1 (§3.9.3 Table 3-8)
            0x87, // Not authorized
            0xA2, // Wildcard Subscriptions not supported
        ],
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            properties: Props::new(),
            reason_codes: vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            ]
            .into(),
        }),
    );
}

#[test]
fn unsubscribe() {
    check_vector(
        V31,
        &[
            0xA2, 0x07, // UNSUBSCRIBE, QoS 1 in the header (3.1); Remaining Length 7
            0x00, 0x01, // Message ID 1
            0x00, 0x03, b'a', b'/', b'b', // Topic Name "a/b"
        ],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(1),
            properties: Props::new(),
            filters: vec!["a/b".to_owned()].into(),
        }),
    );
    check_vector(
        V311,
        &[
            0xA2, 0x0C, // UNSUBSCRIBE, flags 0010 ([MQTT-3.10.1-1]); Remaining Length 12
            0x00, 0x02, // Packet Identifier 2 (§3.10.2)
            0x00, 0x03, b'a', b'/', b'b', // Topic Filter "a/b" (§3.10.3)
            0x00, 0x03, b'c', b'/', b'#', // Topic Filter "c/#"
        ],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: Props::new(),
            filters: vec!["a/b".to_owned(), "c/#".to_owned()].into(),
        }),
    );
    check_vector(
        V5,
        &[
            0xA2, 0x0F, // UNSUBSCRIBE, flags 0010; Remaining Length 15
            0x00, 0x03, // Packet Identifier 3
            0x07, // Property Length 7 (§3.10.2.1.1)
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 0x26 User Property k=v (§3.10.2.1.2)
            0x00, 0x03, b'a', b'/', b'b', // Topic Filter "a/b"
        ],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(3),
            properties: Properties {
                user_properties: vec![user("k", "v")].into(),
                ..Properties::new()
            }
            .into(),
            filters: vec!["a/b".to_owned()].into(),
        }),
    );
}

#[test]
fn unsuback() {
    for (version, id) in [(V31, 1), (V311, 5)] {
        // 3.1.1 §3.11.3: "The UNSUBACK Packet has no payload."
        check_vector(
            version,
            &[
                0xB0, 0x02, // UNSUBACK; Remaining Length 2 (§3.11.1)
                0x00, id, // Packet Identifier (§3.11.2)
            ],
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(u16::from(id)),
                properties: Props::new(),
                reason_codes: Vec::new().into(),
            }),
        );
    }
    check_vector(
        V5,
        &[
            0xB0, 0x05, // UNSUBACK; Remaining Length 5
            0x00, 0x01, // Packet Identifier 1
            0x00, // Property Length 0 (§3.11.2.1.1)
            0x00, // Success (§3.11.3 Table 3-9)
            0x11, // No subscription existed
        ],
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(1),
            properties: Props::new(),
            reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED].into(),
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// PINGREQ, PINGRESP, DISCONNECT, AUTH (§3.12–§3.15)
// ---------------------------------------------------------------------------------------------

#[test]
fn pingreq_and_pingresp() {
    for version in [V31, V311, V5] {
        // PINGREQ (12), Remaining Length 0 (§3.12.1).
        check_vector(version, &[0xC0, 0x00], Packet::PingReq);
        // PINGRESP (13), Remaining Length 0 (§3.13.1).
        check_vector(version, &[0xD0, 0x00], Packet::PingResp);
    }
}

#[test]
fn disconnect() {
    for version in [V31, V311] {
        // DISCONNECT (14), Remaining Length 0: no variable header, no payload (§3.14).
        check_vector(
            version,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        );
    }
    // MQTT 5.0 §3.14.2.1: "If the Remaining Length is less than 1 the value of 0x00 (Normal
    // disconnection) is used."
    check_vector(V5, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    check_vector(
        V5,
        &[
            0xE0, 0x07, // DISCONNECT; Remaining Length 7
            0x04, // Reason Code 0x04 Disconnect with Will Message (Table 3-10)
            0x05, // Property Length 5 (§3.14.2.2.1)
            0x11, 0x00, 0x00, 0x00, 0x3C, // 0x11 Session Expiry Interval 60 (§3.14.2.2.2)
        ],
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: Properties {
                session_expiry_interval: Some(60),
                ..Properties::new()
            }
            .into(),
        }),
    );
    // §3.14.2.2.1: "If the Remaining Length is less than 2, a value of 0 is used."
    check_vector(
        V5,
        &[
            0xE0, 0x01, // DISCONNECT; Remaining Length 1
            0x8E, // Reason Code 0x8E Session taken over
        ],
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SESSION_TAKEN_OVER,
            properties: Props::new(),
        }),
    );
    // Longer forms of Normal disconnection decode to the same packet.
    check_decodes_to(
        V5,
        &[0xE0, 0x01, 0x00],
        &Packet::Disconnect(Disconnect::default()),
    );
    check_decodes_to(
        V5,
        &[0xE0, 0x02, 0x00, 0x00],
        &Packet::Disconnect(Disconnect::default()),
    );
}

#[test]
fn auth() {
    // MQTT 5.0 §3.15.2.1: "The Reason Code and Property Length can be omitted if the Reason
    // Code is 0x00 (Success) and there are no Properties. In this case the AUTH has a
    // Remaining Length of 0."
    check_vector(V5, &[0xF0, 0x00], Packet::Auth(Auth::default()));
    check_vector(
        V5,
        &[
            0xF0, 0x0F, // AUTH (15); Remaining Length 15
            0x18, // Authenticate Reason Code 0x18 Continue authentication (§3.15.2.1)
            0x0D, // Property Length 13 (§3.15.2.2.1)
            0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // 0x15 Authentication Method
            0x16, 0x00, 0x02, 0x01, 0x02, // 0x16 Authentication Data 01 02 (§3.15.2.2.3)
        ],
        Packet::Auth(Auth {
            reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some((&[0x01, 0x02][..]).into()),
                ..Properties::new()
            }
            .into(),
        }),
    );
    check_vector(
        V5,
        &[
            0xF0, 0x02, // AUTH; Remaining Length 2
            0x19, // Authenticate Reason Code 0x19 Re-authenticate
            0x00, // Property Length 0
        ],
        Packet::Auth(Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            properties: Props::new(),
        }),
    );
    // Success written out in full decodes to the short form.
    check_decodes_to(
        V5,
        &[0xF0, 0x02, 0x00, 0x00],
        &Packet::Auth(Auth::default()),
    );
    // AUTH does not exist before MQTT 5.0: the encoder refuses it.
    assert!(matches!(
        encode(
            &Packet::Auth(Auth::default()),
            &EncodeContext::new(V311),
            &mut Vec::new()
        ),
        Err(EncodeError::NotInVersion { .. })
    ));
}
