//! Property tests: every packet type and version round-trips, a stream split anywhere decodes
//! to the same packets, and arbitrary bytes never make the decoder panic.

use std::borrow::Cow;

use mqttx_codec::{
    Auth, ConnAck, Connect, DecodeContext, Decoder, Disconnect, EncodeContext, Items, Packet,
    PacketId, PacketType, Properties, Props, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck,
    Unsubscribe, UserProperty, Will, decode, encode, encode_to_slice, encoded_len,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Where a property set goes; decides which properties the generator may set (Table 2-4).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

fn text() -> impl Strategy<Value = String> {
    // Multi-byte characters included; no U+0000.
    "[a-zA-Z0-9 é€😀/_-]{0,12}"
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9$é]{1,6}(/[a-z0-9é]{0,6}){0,4}"
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        topic(),
        Just("#".to_string()),
        Just("+/b/#".to_string()),
        Just("a/+/c".to_string()),
        Just("$share/group/a/+".to_string()),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

fn cow_str(s: Option<String>) -> Option<Cow<'static, str>> {
    s.map(Cow::Owned)
}

fn cow_bin(b: Option<Vec<u8>>) -> Option<Cow<'static, [u8]>> {
    b.map(Cow::Owned)
}

fn properties(place: Place) -> impl Strategy<Value = Properties<'static>> {
    let a = (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic()),
        option::of(bytes()),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
    );
    let b = (
        option::of(text()),
        option::of(bytes()),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1u16..),
    );
    let c = (
        option::of(any::<u16>()),
        option::of(1u16..),
        option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        option::of(any::<bool>()),
        vec((text(), text()), 0..3),
        option::of(1u32..),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    (a, b, c).prop_map(move |(a, b, c)| {
        let mut p = Properties::new();
        p.payload_format_indicator = a.0;
        p.message_expiry_interval = a.1;
        p.content_type = cow_str(a.2);
        p.response_topic = cow_str(a.3);
        p.correlation_data = cow_bin(a.4);
        p.subscription_identifiers = Items::from(a.5);
        p.session_expiry_interval = a.6;
        p.assigned_client_identifier = cow_str(a.7);
        p.server_keep_alive = a.8;
        p.authentication_method = cow_str(b.0);
        // MQTT 5.0 §3.1.2.11.10: no Authentication Data without an Authentication Method.
        p.authentication_data = if p.authentication_method.is_some() {
            cow_bin(b.1)
        } else {
            None
        };
        p.request_problem_information = b.2;
        p.will_delay_interval = b.3;
        p.request_response_information = b.4;
        p.response_information = cow_str(b.5);
        p.server_reference = cow_str(b.6);
        p.reason_string = cow_str(b.7);
        p.receive_maximum = b.8;
        p.topic_alias_maximum = c.0;
        p.topic_alias = c.1;
        p.maximum_qos = c.2;
        p.retain_available = c.3;
        p.user_properties =
            c.4.into_iter()
                .map(|(k, v)| UserProperty::new(k, v))
                .collect();
        p.maximum_packet_size = c.5;
        p.wildcard_subscription_available = c.6;
        p.subscription_identifier_available = c.7;
        p.shared_subscription_available = c.8;
        prune(p, place)
    })
}

/// Clears what Table 2-4 does not allow in `place`.
fn prune(mut p: Properties<'static>, place: Place) -> Properties<'static> {
    use Place as P;
    let message = matches!(place, P::Publish | P::Will);
    if !message {
        p.payload_format_indicator = None;
        p.message_expiry_interval = None;
        p.content_type = None;
        p.response_topic = None;
        p.correlation_data = None;
    }
    match place {
        P::Publish => {}
        P::Subscribe => {
            let first = p.subscription_identifiers.iter().next();
            p.subscription_identifiers = first.into_iter().collect();
        }
        _ => p.subscription_identifiers = Items::new(),
    }
    if !matches!(place, P::Connect | P::ConnAck | P::Disconnect) {
        p.session_expiry_interval = None;
    }
    if place != P::ConnAck {
        p.assigned_client_identifier = None;
        p.server_keep_alive = None;
        p.response_information = None;
        p.maximum_qos = None;
        p.retain_available = None;
        p.wildcard_subscription_available = None;
        p.subscription_identifier_available = None;
        p.shared_subscription_available = None;
    }
    if !matches!(place, P::Connect | P::ConnAck | P::Auth) {
        p.authentication_method = None;
        p.authentication_data = None;
    }
    if place != P::Connect {
        p.request_problem_information = None;
        p.request_response_information = None;
    }
    if place != P::Will {
        p.will_delay_interval = None;
    }
    if !matches!(place, P::ConnAck | P::Disconnect) {
        p.server_reference = None;
    }
    if !matches!(
        place,
        P::ConnAck | P::PubResp | P::SubAck | P::UnsubAck | P::Disconnect | P::Auth
    ) {
        p.reason_string = None;
    }
    if !matches!(place, P::Connect | P::ConnAck) {
        p.receive_maximum = None;
        p.topic_alias_maximum = None;
        p.maximum_packet_size = None;
    }
    if place != P::Publish {
        p.topic_alias = None;
    }
    p
}

/// Properties for `place` in `version`: empty before MQTT 5.0.
fn props_for(place: Place, version: ProtocolVersion) -> BoxedStrategy<Props<'static>> {
    if version.is_v5() {
        properties(place).prop_map(Props::from).boxed()
    } else {
        prop_oneof![Just(Props::new()), Just(Props::from(Properties::new()))].boxed()
    }
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).unwrap())
}

/// A reason code valid for `packet` in `version`.
fn reason(packet: PacketType, version: ProtocolVersion) -> BoxedStrategy<ReasonCode> {
    if version.is_v5() {
        let valid: Vec<ReasonCode> = (0..=255u8)
            .filter_map(ReasonCode::from_u8)
            .filter(|c| c.is_valid_for(packet))
            .collect();
        proptest::sample::select(valid).boxed()
    } else {
        match packet {
            PacketType::ConnAck => (0u8..=5)
                .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap())
                .boxed(),
            PacketType::SubAck => proptest::sample::select(vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::UNSPECIFIED_ERROR,
            ])
            .boxed(),
            _ => Just(ReasonCode::SUCCESS).boxed(),
        }
    }
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    let will = option::of((
        qos(),
        any::<bool>(),
        props_for(Place::Will, version),
        topic(),
        bytes(),
    ));
    (
        any::<bool>(),
        any::<u16>(),
        props_for(Place::Connect, version),
        "[a-zA-Z0-9-]{0,23}",
        will,
        option::of(text()),
        option::of(bytes()),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, id, will, username, password)| {
                let mut c = Connect::new(version, id);
                c.clean_start = clean_start;
                c.keep_alive = keep_alive;
                c.properties = properties;
                c.will = will.map(|(qos, retain, properties, topic, payload)| {
                    Box::new(Will {
                        qos,
                        retain,
                        properties,
                        topic: topic.into(),
                        payload: payload.into(),
                    })
                });
                c.username = cow_str(username);
                // [MQTT-3.1.2-22]: 3.1.x has no password without a user name.
                c.password = if version.is_v5() || c.username.is_some() {
                    cow_bin(password)
                } else {
                    None
                };
                Packet::Connect(c)
            },
        )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        packet_id(),
        props_for(Place::Publish, version),
        vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, properties, payload, empty_topic)| {
                let mut p = Publish::new(topic, payload);
                p.qos = qos;
                p.dup = dup && qos != QoS::AtMostOnce;
                p.retain = retain;
                p.packet_id = (qos != QoS::AtMostOnce).then_some(id);
                // An empty Topic Name is allowed only with a Topic Alias (MQTT 5.0).
                if empty_topic && properties.topic_alias.is_some() {
                    p.topic = Cow::Borrowed("");
                }
                p.properties = properties;
                Packet::Publish(p)
            },
        )
}

fn pub_response(
    kind: PacketType,
    version: ProtocolVersion,
) -> impl Strategy<Value = Packet<'static>> {
    (
        packet_id(),
        reason(kind, version),
        props_for(Place::PubResp, version),
    )
        .prop_map(move |(id, reason_code, properties)| {
            let r = PubResponse {
                packet_id: id,
                reason_code,
                properties,
            };
            match kind {
                PacketType::PubAck => Packet::PubAck(r),
                PacketType::PubRec => Packet::PubRec(r),
                PacketType::PubRel => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        })
}

fn subscription_options(version: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if version.is_v5() {
        (qos(), any::<bool>(), any::<bool>(), 0u8..3)
            .prop_map(
                |(qos, no_local, retain_as_published, rh)| SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling: RetainHandling::from_u8(rh).unwrap(),
                },
            )
            .boxed()
    } else {
        qos().prop_map(SubscriptionOptions::new).boxed()
    }
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    (
        packet_id(),
        props_for(Place::Subscribe, version),
        vec((filter(), subscription_options(version)), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            let filters = filters
                .into_iter()
                .map(|(filter, mut options)| {
                    // [MQTT-3.8.3-4] No Local is a Protocol Error on a shared subscription.
                    if filter.starts_with("$share/") {
                        options.no_local = false;
                    }
                    SubscribeFilter { filter, options }
                })
                .collect();
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    (
        packet_id(),
        props_for(Place::SubAck, version),
        vec(reason(PacketType::SubAck, version), 1..6),
    )
        .prop_map(|(packet_id, properties, codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes: codes.into(),
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    (
        packet_id(),
        props_for(Place::Unsubscribe, version),
        vec(filter(), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters: filters.into(),
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    let codes = if version.is_v5() {
        vec(reason(PacketType::UnsubAck, version), 1..6).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), props_for(Place::UnsubAck, version), codes).prop_map(
        |(packet_id, properties, codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes: codes.into(),
            })
        },
    )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    (
        any::<bool>(),
        reason(PacketType::ConnAck, version),
        props_for(Place::ConnAck, version),
    )
        .prop_map(|(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    (
        reason(PacketType::Disconnect, version),
        props_for(Place::Disconnect, version),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
}

fn auth() -> impl Strategy<Value = Packet<'static>> {
    (
        reason(PacketType::Auth, ProtocolVersion::V5),
        properties(Place::Auth),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties: properties.into(),
            })
        })
}

fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet<'static>> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        pub_response(PacketType::PubAck, version),
        pub_response(PacketType::PubRec, version),
        pub_response(PacketType::PubRel, version),
        pub_response(PacketType::PubComp, version),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V31),
        Just(ProtocolVersion::V311),
        Just(ProtocolVersion::V5)
    ]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet<'static>)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}

fn versioned_stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet<'static>>)> {
    version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..6)))
}

fn encode_all(version: ProtocolVersion, packets: &[Packet<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        encode(p, &EncodeContext::new(version), &mut out).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// decode(encode(p)) == p for every packet type and version; the three encoders agree.
    #[test]
    fn encode_then_decode_is_identity((version, packet) in versioned_packet()) {
        let ecx = EncodeContext::new(version);
        let mut bytes = Vec::new();
        encode(&packet, &ecx, &mut bytes).unwrap();
        prop_assert_eq!(encoded_len(&packet, &ecx).unwrap(), bytes.len());
        let mut slice = vec![0u8; bytes.len()];
        prop_assert_eq!(encode_to_slice(&packet, &ecx, &mut slice).unwrap(), bytes.len());
        prop_assert_eq!(&slice, &bytes);
        if !bytes.is_empty() {
            prop_assert!(encode_to_slice(&packet, &ecx, &mut slice[1..]).is_err());
        }

        let (decoded, used) = decode(&bytes, &DecodeContext::new(version)).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&decoded, &packet);
        // The owned form is equal too, and encodes to the same bytes.
        let owned = decoded.into_owned();
        prop_assert_eq!(&owned, &packet);
        let mut again = Vec::new();
        encode(&owned, &ecx, &mut again).unwrap();
        prop_assert_eq!(again, bytes);
    }

    /// A stream of packets split at every offset decodes to the same packets as the whole.
    #[test]
    fn stream_split_anywhere_decodes_the_same((version, packets) in versioned_stream()) {
        let bytes = encode_all(version, &packets);
        for split in 0..=bytes.len() {
            let mut decoder = Decoder::new(DecodeContext::new(version));
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                decoder.feed(part);
                while let Some(p) = decoder.next_packet().unwrap() {
                    got.push(p);
                }
            }
            prop_assert_eq!(&got, &packets, "split at {}", split);
            prop_assert_eq!(decoder.buffered(), 0);
        }
    }

    /// Feeding one byte at a time, and decoding whole, both give the packets.
    #[test]
    fn stream_byte_by_byte((version, packets) in versioned_stream()) {
        let bytes = encode_all(version, &packets);
        let mut decoder = Decoder::new(DecodeContext::new(version));
        let mut got = Vec::new();
        for b in &bytes {
            decoder.feed(std::slice::from_ref(b));
            while let Some(p) = decoder.next_borrowed().unwrap() {
                got.push(p.into_owned());
            }
        }
        prop_assert_eq!(&got, &packets);

        let mut pos = 0;
        let mut whole = Vec::new();
        while let Some((p, used)) = decode(&bytes[pos..], &DecodeContext::new(version)).unwrap() {
            whole.push(p);
            pos += used;
        }
        prop_assert_eq!(pos, bytes.len());
        prop_assert_eq!(&whole, &packets);
    }

    /// Arbitrary bytes never panic, whatever the version or the chunking.
    #[test]
    fn arbitrary_bytes_never_panic(
        version in version(),
        bytes in vec(any::<u8>(), 0..256),
        chunk in 1usize..32,
    ) {
        let cx = DecodeContext::new(version).with_max_packet_size(128);
        let _ = decode(&bytes, &cx);
        let mut decoder = Decoder::new(cx);
        for part in bytes.chunks(chunk) {
            decoder.feed(part);
            while let Ok(Some(p)) = decoder.next_borrowed() {
                let _ = format!("{p:?}");
            }
        }
    }

    /// Arbitrary bytes behind a valid fixed header reach every body decoder.
    #[test]
    fn arbitrary_bodies_never_panic(
        version in version(),
        first in any::<u8>(),
        body in vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = vec![first, body.len() as u8];
        bytes.extend_from_slice(&body);
        if let Ok(Some((p, _))) = decode(&bytes, &DecodeContext::new(version)) {
            // Whatever decodes must also re-encode (topic filters aside, see fuzzing.rs).
            let mut out = Vec::new();
            if encode(&p, &EncodeContext::new(version), &mut out).is_ok() {
                let (again, _) = decode(&out, &DecodeContext::new(version)).unwrap().unwrap();
                prop_assert_eq!(again, p);
            }
        }
    }
}
