//! Unit tests of the session core: raw bytes in, bytes and events out, time passed in.
//!
//! No socket, no runtime, no sleep: every test moves time by adding durations to one instant.
//! Each test names the spec statement it checks.

use std::time::{Duration, Instant};

use mqttx_codec::{
    Auth, Connect, DecodeContext, Disconnect, EncodeContext, Items, Packet, PacketId,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Unsubscribe, Will, decode, encode,
};
use mqttx_router::TopicName;

use super::*;
use crate::config::Config;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// A session under test, the current time, and a decoder for what it sends.
struct Harness {
    session: Session,
    now: Instant,
    version: ProtocolVersion,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(&Config::default())
    }

    fn with_config(config: &Config) -> Self {
        let now = crate::test_epoch();
        Self {
            session: Session::new(now, config, "assigned-7".into()),
            now,
            version: V5,
        }
    }

    /// A session that sent CONNECT (client id "c", keep alive 60 s) and was accepted.
    fn connected(version: ProtocolVersion) -> Self {
        let mut h = Self::new();
        h.connect_with(Connect::new(version, "c"));
        assert!(matches!(h.event(), Some(Event::Connect(_))));
        h.session.accept_connect(h.now);
        let out = h.packets();
        assert!(
            matches!(&out[..], [Packet::ConnAck(ack)] if ack.reason_code == ReasonCode::SUCCESS)
        );
        h
    }

    fn connect_with(&mut self, connect: Connect<'_>) {
        self.version = connect.protocol;
        self.send(&Packet::Connect(connect));
    }

    fn send(&mut self, packet: &Packet<'_>) {
        let mut bytes = Vec::new();
        encode(packet, &EncodeContext::new(self.version), &mut bytes).unwrap();
        self.session.handle_bytes(self.now, &bytes);
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.session.handle_bytes(self.now, bytes);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
    }

    fn event(&mut self) -> Option<Event> {
        self.session.poll_event()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    fn bytes(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.session.poll_transmit(&mut out) {}
        out
    }

    /// Everything the session sent, decoded.
    fn packets(&mut self) -> Vec<Packet<'static>> {
        let bytes = self.bytes();
        let cx = DecodeContext::new(self.version);
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while let Some((packet, used)) = decode(rest, &cx).unwrap() {
            out.push(packet.into_owned());
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "partial packet in output");
        out
    }

    /// The DISCONNECT reason code the session sent, if it sent exactly one DISCONNECT.
    fn disconnect_code(&mut self) -> Option<ReasonCode> {
        match &self.packets()[..] {
            [Packet::Disconnect(d)] => Some(d.reason_code),
            _ => None,
        }
    }
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn publish(topic: &str, payload: &'static [u8], qos: QoS, id: u16) -> Packet<'static> {
    let mut p = Publish::new(topic.to_owned(), payload);
    p.qos = qos;
    p.packet_id = PacketId::new(id);
    Packet::Publish(p)
}

/// SUBSCRIBE bytes built by hand: the encoder refuses invalid filters, the decoder leaves
/// filter syntax to the session.
fn raw_subscribe(version: ProtocolVersion, id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if version.is_v5() {
        body.push(0x00); // no properties
    }
    for (filter, qos) in filters {
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(qos.as_u8());
    }
    assert!(body.len() < 128);
    let mut bytes = vec![0x82, body.len() as u8];
    bytes.extend_from_slice(&body);
    bytes
}

fn message(topic: &str, payload: &'static [u8], qos: QoS) -> Message {
    Message::new(TopicName::new(topic).unwrap(), payload, qos, false)
}

#[test]
fn connect_accepted_gets_connack_with_limits_v5() {
    // MQTT 5.0 §3.2.2.3: CONNACK carries Receive Maximum, Maximum Packet Size, Topic Alias
    // Maximum.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.properties
        .user_properties
        .push(mqttx_codec::UserProperty::new("site", "lab"));
    h.connect_with(c);
    let Some(Event::Connect(req)) = h.event() else {
        panic!("no connect request")
    };
    assert_eq!(req.client_id, "c");
    assert!(!req.assigned_client_id);
    assert_eq!(
        req.properties.user_properties.iter().collect::<Vec<_>>(),
        [("site", "lab")],
        "the handler sees every CONNECT property"
    );
    h.session.accept_connect(h.now);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.receive_maximum, Some(100));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(ack.properties.topic_alias_maximum, Some(100));
    assert!(h.session.is_connected());
}

#[test]
fn first_packet_not_connect_closes_without_reply() {
    // [MQTT-3.1.0-1] The first packet sent from the Client to the Server MUST be a CONNECT.
    let mut h = Harness::new();
    h.send(&publish("a", b"x", QoS::AtMostOnce, 0));
    assert!(h.session.is_closed());
    assert!(h.bytes().is_empty());
    assert_eq!(
        h.events(),
        [Event::Closed(CloseReason::ProtocolError(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
}

#[test]
fn first_byte_not_connect_closes_at_once() {
    // [MQTT-3.1.0-1]: an incomplete frame of another type is not waited for.
    let mut h = Harness::new();
    h.raw(b"GET / HTTP/1.1");
    assert!(h.session.is_closed());
    assert!(h.bytes().is_empty());
}

#[test]
fn second_connect_is_protocol_error_0x82() {
    // [MQTT-3.1.0-2] The Server MUST process a second CONNECT packet sent from a Client as a
    // Protocol Error and close the Network Connection.
    let mut h = Harness::connected(V5);
    h.send(&Packet::Connect(Connect::new(V5, "c")));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(h.session.is_closed());
}

#[test]
fn unsupported_protocol_level_gets_connack_0x84_or_0x01() {
    // [MQTT-3.1.2-2] … respond with CONNACK 0x84 (5.0) / return code 0x01 (3.1.1) and close.
    let connect = |level: u8| {
        [
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x02, 0x00, 0x3C, 0x00, 0x01,
            b'c',
        ]
    };
    let mut h = Harness::new();
    h.raw(&connect(6));
    assert_eq!(h.bytes(), [0x20, 0x03, 0x00, 0x84, 0x00]);
    assert!(h.session.is_closed());

    let mut h = Harness::new();
    h.raw(&connect(2));
    assert_eq!(h.bytes(), [0x20, 0x02, 0x00, 0x01]);
    assert!(h.session.is_closed());
}

#[test]
fn empty_client_id_v5_is_assigned_and_returned() {
    // [MQTT-3.1.3-6] the Server MUST assign a unique ClientID; [MQTT-3.2.2-16] it MUST return
    // the Assigned Client Identifier in the CONNACK.
    let mut h = Harness::new();
    h.connect_with(Connect::new(V5, ""));
    let Some(Event::Connect(req)) = h.event() else {
        panic!("no connect request")
    };
    assert!(req.assigned_client_id);
    assert_eq!(req.client_id, "assigned-7");
    h.session.accept_connect(h.now);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("assigned-7")
    );
}

#[test]
fn empty_client_id_v311_clean_is_assigned() {
    // [MQTT-3.1.3-6] (3.1.1 [MQTT-3.1.3-6]) a zero-byte ClientId with CleanSession 1 is
    // assigned one.
    let mut h = Harness::new();
    h.connect_with(Connect::new(V311, ""));
    let Some(Event::Connect(req)) = h.event() else {
        panic!("no connect request")
    };
    assert_eq!(req.client_id, "assigned-7");
    h.session.accept_connect(h.now);
    assert_eq!(h.bytes(), [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn empty_client_id_v311_persistent_gets_0x02() {
    // [MQTT-3.1.3-8] (3.1.1) zero-byte ClientId with CleanSession 0 → CONNACK 0x02, close.
    let mut h = Harness::new();
    let mut c = Connect::new(V311, "");
    c.clean_start = false;
    h.connect_with(c);
    assert_eq!(h.bytes(), [0x20, 0x02, 0x00, 0x02]);
    assert!(h.session.is_closed());
    assert_eq!(
        h.events(),
        [Event::Closed(CloseReason::Refused(
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
        ))]
    );
}

#[test]
fn refused_connect_gets_the_code_and_closes() {
    // MQTT 5.0 §3.2.2.2: the Server sends CONNACK with a Reason Code ≥ 0x80 and closes
    // [MQTT-3.2.2-7]; 3.1.1 maps 0x87 to return code 5.
    let mut h = Harness::new();
    h.connect_with(Connect::new(V5, "c"));
    h.events();
    h.session.refuse_connect(ReasonCode::NOT_AUTHORIZED);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    assert!(h.session.is_closed());

    let mut h = Harness::new();
    h.connect_with(Connect::new(V311, "c"));
    h.events();
    h.session.refuse_connect(ReasonCode::NOT_AUTHORIZED);
    assert_eq!(h.bytes(), [0x20, 0x02, 0x00, 0x05]);

    // [MQTT-3.2.2-6] a refusal with no 3.1.1 return code (0x9F Connection rate exceeded)
    // closes the connection without CONNACK.
    let mut h = Harness::new();
    h.connect_with(Connect::new(V311, "c"));
    h.events();
    h.session
        .refuse_connect(ReasonCode::CONNECTION_RATE_EXCEEDED);
    assert_eq!(h.bytes(), []);
    assert!(h.session.is_closed());
}

#[test]
fn connect_timeout_closes() {
    // [MQTT-3.1.4-1] / §4.2: a connection that sends no CONNECT within a reasonable time is
    // closed (10 s by default).
    let mut h = Harness::new();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(10))
    );
    h.advance(Duration::from_millis(9_999));
    assert!(!h.session.is_closed());
    h.advance(Duration::from_millis(1));
    assert!(h.session.is_closed());
    assert_eq!(h.events(), [Event::Closed(CloseReason::ConnectTimeout)]);
}

#[test]
fn keepalive_one_and_a_half_times_then_0x8d_and_will() {
    // [MQTT-3.1.2-22] no packet within one and a half times the Keep Alive: close as if the
    // network had failed (the Will is published); MQTT 5.0 sends DISCONNECT 0x8D first.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.keep_alive = 10;
    c.will = Some(Box::new(Will {
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Props::new(),
        topic: "w".into(),
        payload: (&b"gone"[..]).into(),
    }));
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    // Every packet resets the timer.
    h.advance(Duration::from_secs(14));
    h.send(&Packet::PingReq);
    assert_eq!(h.packets(), [Packet::PingResp]);
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(15))
    );
    h.advance(Duration::from_millis(14_999));
    assert!(h.session.is_connected());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    let events = h.events();
    assert!(
        matches!(&events[..], [Event::Will(m), Event::Closed(CloseReason::KeepAliveTimeout)] if &m.payload[..] == b"gone")
    );
}

#[test]
fn server_keep_alive_caps_v5_keepalive() {
    // [MQTT-3.2.2-21] the Client uses the Server Keep Alive sent in CONNACK.
    let config = Config {
        max_keepalive: 30,
        ..Config::default()
    };
    let mut h = Harness::with_config(&config);
    let mut c = Connect::new(V5, "c");
    c.keep_alive = 0;
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(45))
    );
}

#[test]
fn oversized_declared_length_gets_0x95_before_the_body() {
    // MQTT 5.0 §3.1.2.11.4 / [MQTT-3.2.2-15]-side: a packet above the Server's Maximum Packet
    // Size is refused with DISCONNECT 0x95 as soon as its fixed header is read.
    let mut h = Harness::connected(V5);
    // PUBLISH declaring 2 MiB of body; only the header is sent.
    h.raw(&[0x30, 0x80, 0x80, 0x80, 0x01]);
    let [Packet::Disconnect(d)] = &h.packets()[..] else {
        panic!("no DISCONNECT")
    };
    assert_eq!(d.reason_code, ReasonCode::PACKET_TOO_LARGE);
    assert!(d.properties.reason_string.is_some());
    assert!(h.session.is_closed());
}

#[test]
fn malformed_packet_gets_disconnect_with_reason_string() {
    // MQTT 5.0 §4.13.1: on a Malformed Packet the Server MAY send DISCONNECT with 0x81 and a
    // Reason String, then MUST close; [MQTT-3.3.1-4] PUBLISH with QoS 3 is malformed.
    let mut h = Harness::connected(V5);
    h.raw(&[0x36, 0x03, 0x00, 0x01, b'a']);
    let [Packet::Disconnect(d)] = &h.packets()[..] else {
        panic!("no DISCONNECT")
    };
    assert_eq!(d.reason_code, ReasonCode::MALFORMED_PACKET);
    assert!(d.properties.reason_string.is_some());
    assert_eq!(
        h.events(),
        [Event::Closed(CloseReason::ProtocolError(
            ReasonCode::MALFORMED_PACKET
        ))]
    );
}

#[test]
fn malformed_packet_v311_closes_silently() {
    // [MQTT-4.8.0-1] (3.1.1 §4.8) close the Network Connection; 3.1.1 has no DISCONNECT
    // from the server.
    let mut h = Harness::connected(V311);
    h.raw(&[0x36, 0x03, 0x00, 0x01, b'a']);
    assert!(h.bytes().is_empty());
    assert!(h.session.is_closed());
}

#[test]
fn qos1_publish_is_acked_after_the_decision() {
    // [MQTT-4.3.2-4] The receiver MUST respond with a PUBACK containing the Packet Identifier.
    let mut h = Harness::connected(V5);
    h.send(&publish("a/b", b"hi", QoS::AtLeastOnce, 9));
    let Some(Event::Publish(m)) = h.event() else {
        panic!("no publish")
    };
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("a/b", &b"hi"[..], QoS::AtLeastOnce)
    );
    assert!(h.bytes().is_empty());
    h.session.complete_publish(h.now, PublishOutcome::Accepted);
    assert_eq!(h.packets(), [Packet::PubAck(PubResponse::new(pid(9)))]);
}

#[test]
fn refused_qos1_publish_gets_the_code_in_v5() {
    // MQTT 5.0 §3.4.2.1: PUBACK 0x87 Not authorized.
    let mut h = Harness::connected(V5);
    h.send(&publish("a", b"x", QoS::AtLeastOnce, 3));
    h.events();
    h.session
        .complete_publish(h.now, PublishOutcome::Refused(ReasonCode::NOT_AUTHORIZED));
    let [Packet::PubAck(ack)] = &h.packets()[..] else {
        panic!("no PUBACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
}

#[test]
fn qos2_publish_delivered_exactly_once() {
    // [MQTT-4.3.3-9] Until the PUBREL, a PUBLISH with the same Packet Identifier gets PUBREC
    // again and MUST NOT cause a duplicate delivery; [MQTT-4.3.3-10] PUBREL → PUBCOMP;
    // [MQTT-4.3.3-11] after PUBCOMP the id starts a new message.
    let mut h = Harness::connected(V5);
    h.send(&publish("a", b"x", QoS::ExactlyOnce, 5));
    assert!(matches!(h.events()[..], [Event::Publish(_)]));
    h.session.complete_publish(h.now, PublishOutcome::Accepted);
    assert_eq!(h.packets(), [Packet::PubRec(PubResponse::new(pid(5)))]);

    let mut dup = Publish::new("a", &b"x"[..]);
    dup.qos = QoS::ExactlyOnce;
    dup.packet_id = Some(pid(5));
    dup.dup = true;
    h.send(&Packet::Publish(dup));
    assert!(
        h.events().is_empty(),
        "a duplicate must not be delivered again"
    );
    assert_eq!(h.packets(), [Packet::PubRec(PubResponse::new(pid(5)))]);

    h.send(&Packet::PubRel(PubResponse::new(pid(5))));
    assert_eq!(h.packets(), [Packet::PubComp(PubResponse::new(pid(5)))]);

    h.send(&publish("a", b"y", QoS::ExactlyOnce, 5));
    assert!(matches!(h.events()[..], [Event::Publish(_)]));
}

#[test]
fn unknown_pubrel_gets_pubcomp_0x92() {
    // MQTT 5.0 §3.7.2.1: PUBCOMP 0x92 Packet Identifier not found.
    let mut h = Harness::connected(V5);
    h.send(&Packet::PubRel(PubResponse::new(pid(44))));
    let [Packet::PubComp(comp)] = &h.packets()[..] else {
        panic!("no PUBCOMP")
    };
    assert_eq!(comp.packet_id, pid(44));
    assert_eq!(comp.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
}

#[test]
fn receive_maximum_exceeded_gets_0x93() {
    // [MQTT-3.3.4-9] / MQTT 5.0 §3.3.4: more unacknowledged QoS 2 PUBLISH than the Receive
    // Maximum → DISCONNECT 0x93.
    let config = Config {
        receive_maximum: 2,
        ..Config::default()
    };
    let mut h = Harness::with_config(&config);
    h.connect_with(Connect::new(V5, "c"));
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    for id in 1..=2 {
        h.send(&publish("a", b"x", QoS::ExactlyOnce, id));
        h.events();
        h.session.complete_publish(h.now, PublishOutcome::Accepted);
    }
    h.bytes();
    h.send(&publish("a", b"x", QoS::ExactlyOnce, 3));
    assert_eq!(
        h.disconnect_code(),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn topic_alias_above_maximum_gets_0x94() {
    // [MQTT-3.3.2-9] no Topic Alias above the Server's Topic Alias Maximum → 0x94.
    let config = Config {
        topic_alias_maximum: 2,
        ..Config::default()
    };
    let mut h = Harness::with_config(&config);
    h.connect_with(Connect::new(V5, "c"));
    h.events();
    h.session.accept_connect(h.now);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.properties.topic_alias_maximum, Some(2));
    let mut p = Publish::new("a", &b"x"[..]);
    p.properties.topic_alias = Some(3);
    h.send(&Packet::Publish(p));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::TOPIC_ALIAS_INVALID));
}

#[test]
fn topic_alias_sets_and_resolves_the_topic() {
    // MQTT 5.0 §3.3.2.3.4: a PUBLISH with a Topic Name and an alias sets the mapping; a later
    // one with an empty Topic Name and the alias uses it; a new Topic Name replaces it.
    let mut h = Harness::connected(V5);
    let mut topics = Vec::new();
    for (topic, payload) in [
        ("long/topic/name", "1"),
        ("", "2"),
        ("other", "3"),
        ("", "4"),
    ] {
        let mut p = Publish::new(topic, payload.as_bytes());
        p.properties.topic_alias = Some(1);
        h.send(&Packet::Publish(p));
        let Some(Event::Publish(m)) = h.event() else {
            panic!("no publish")
        };
        topics.push(m.topic.as_str().to_owned());
        assert!(
            m.properties.topic_alias.is_none(),
            "aliases are not forwarded"
        );
        h.session.complete_publish(h.now, PublishOutcome::Accepted);
    }
    assert_eq!(
        topics,
        ["long/topic/name", "long/topic/name", "other", "other"]
    );
}

#[test]
fn unknown_topic_alias_is_a_protocol_error() {
    // MQTT 5.0 §3.3.2.3.4: an alias without a mapping is a Protocol Error (0x82).
    let mut h = Harness::connected(V5);
    let mut p = Publish::new("", &b"x"[..]);
    p.properties.topic_alias = Some(5);
    h.send(&Packet::Publish(p));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn session_expiry_on_disconnect_after_zero_is_a_protocol_error() {
    // MQTT 5.0 §3.14.2.2.2: Session Expiry 0 in CONNECT, non-zero in DISCONNECT → 0x82.
    let mut h = Harness::connected(V5);
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    h.send(&Packet::Disconnect(d));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn subscribe_with_an_invalid_filter_gets_0x8f_for_it_only() {
    // MQTT 5.0 §3.9.3: one reason code per filter, in order; 0x8F Topic Filter invalid.
    let mut h = Harness::connected(V5);
    h.raw(&raw_subscribe(
        V5,
        4,
        &[
            ("a/+", QoS::AtLeastOnce),
            ("a/#/b", QoS::AtMostOnce),
            ("c", QoS::ExactlyOnce),
        ],
    ));
    let Some(Event::Subscribe(req)) = h.event() else {
        panic!("no subscribe request")
    };
    let filters: Vec<&str> = req.entries.iter().map(|e| e.filter.as_str()).collect();
    assert_eq!(filters, ["a/+", "c"]);
    h.session.complete_subscribe(
        h.now,
        &[ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
    );
    let [Packet::SubAck(ack)] = &h.packets()[..] else {
        panic!("no SUBACK")
    };
    assert_eq!(ack.packet_id, pid(4));
    let codes: Vec<ReasonCode> = ack.reason_codes.iter().collect();
    assert_eq!(
        codes,
        [
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::NOT_AUTHORIZED
        ]
    );
}

#[test]
fn subscribe_refusals_are_0x80_in_v311() {
    // MQTT 3.1.1 §3.9.3: SUBACK return codes are 0x00–0x02 or 0x80 (Failure).
    let mut h = Harness::connected(V311);
    h.raw(&raw_subscribe(
        V311,
        1,
        &[("a/#/b", QoS::AtMostOnce), ("x", QoS::ExactlyOnce)],
    ));
    h.events();
    h.session
        .complete_subscribe(h.now, &[ReasonCode::GRANTED_QOS_2]);
    let [Packet::SubAck(ack)] = &h.packets()[..] else {
        panic!("no SUBACK")
    };
    let codes: Vec<u8> = ack.reason_codes.iter().map(|c| c.as_u8()).collect();
    assert_eq!(codes, [0x80, 0x02]);
}

#[test]
fn unsubscribe_reports_missing_subscriptions_v5() {
    // MQTT 5.0 §3.11.3: 0x00 Success, 0x11 No subscription existed.
    let mut h = Harness::connected(V5);
    let filters: Items<'_, String> = vec!["a".to_owned(), "b".to_owned()].into();
    h.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        properties: Props::new(),
        filters,
    }));
    assert!(matches!(h.events()[..], [Event::Unsubscribe(_)]));
    h.session.complete_unsubscribe(h.now, &[true, false]);
    let [Packet::UnsubAck(ack)] = &h.packets()[..] else {
        panic!("no UNSUBACK")
    };
    let codes: Vec<ReasonCode> = ack.reason_codes.iter().collect();
    assert_eq!(
        codes,
        [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
}

#[test]
fn requests_pause_input_until_answered() {
    // [MQTT-4.6.0-2] / ordering: acknowledgements go out in the order of the PUBLISH packets;
    // a pipelined packet is not processed before the request ahead of it is answered.
    let mut h = Harness::connected(V5);
    let mut bytes = Vec::new();
    let cx = EncodeContext::new(V5);
    encode(&publish("a", b"1", QoS::AtLeastOnce, 1), &cx, &mut bytes).unwrap();
    encode(&publish("a", b"2", QoS::AtLeastOnce, 2), &cx, &mut bytes).unwrap();
    h.raw(&bytes);
    assert_eq!(h.events().len(), 1);
    h.session.complete_publish(h.now, PublishOutcome::Accepted);
    assert_eq!(h.events().len(), 1);
    h.session.complete_publish(h.now, PublishOutcome::Accepted);
    assert_eq!(
        h.packets(),
        [
            Packet::PubAck(PubResponse::new(pid(1))),
            Packet::PubAck(PubResponse::new(pid(2)))
        ]
    );
}

#[test]
fn outbound_qos1_uses_own_ids_and_the_receive_maximum_window() {
    // [MQTT-2.2.1-3] a non-zero Packet Identifier that is currently unused; [MQTT-4.9.0-2]
    // no more unacknowledged QoS 1/2 PUBLISH than the client's Receive Maximum.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.properties.receive_maximum = Some(2);
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    let m = message("t", b"m", QoS::AtLeastOnce);
    for _ in 0..3 {
        let out = Outbound::encode(&m, V5, QoS::AtLeastOnce, false, &[]).unwrap();
        assert_eq!(h.session.deliver(h.now, out), DeliverOutcome::Queued);
    }
    let ids: Vec<u16> = h
        .packets()
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id.map_or(0, PacketId::get),
            _ => 0,
        })
        .collect();
    assert_eq!(ids, [1, 2], "the third waits for the window");
    h.send(&Packet::PubAck(PubResponse::new(pid(1))));
    let [Packet::Publish(third)] = &h.packets()[..] else {
        panic!("the third PUBLISH")
    };
    assert_eq!(third.packet_id, Some(pid(3)));
}

#[test]
fn outbound_ids_skip_ids_in_flight() {
    // [MQTT-2.2.1-3] the Packet Identifier MUST be currently unused.
    let mut h = Harness::connected(V5);
    let m = message("t", b"m", QoS::ExactlyOnce);
    let out = Outbound::encode(&m, V5, QoS::ExactlyOnce, false, &[]).unwrap();
    h.session.deliver(h.now, out.clone());
    h.bytes(); // id 1 in flight, awaiting PUBREC
    h.session.state.next_packet_id = u16::MAX;
    h.session.deliver(h.now, out.clone());
    h.session.deliver(h.now, out);
    let ids: Vec<u16> = h
        .packets()
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id.map(PacketId::get),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [u16::MAX, 2]);
}

#[test]
fn outbound_qos2_flow() {
    // [MQTT-4.3.3-4] the sender MUST send a PUBREL when it receives a PUBREC; PUBCOMP frees
    // the id.
    let mut h = Harness::connected(V5);
    let m = message("t", b"m", QoS::ExactlyOnce);
    h.session.deliver(
        h.now,
        Outbound::encode(&m, V5, QoS::ExactlyOnce, false, &[]).unwrap(),
    );
    assert!(matches!(&h.packets()[..], [Packet::Publish(p)] if p.qos == QoS::ExactlyOnce));
    h.send(&Packet::PubRec(PubResponse::new(pid(1))));
    assert_eq!(h.packets(), [Packet::PubRel(PubResponse::new(pid(1)))]);
    h.send(&Packet::PubComp(PubResponse::new(pid(1))));
    assert!(h.session.state.inflight.is_empty());
}

#[test]
fn full_queue_drops_and_counts() {
    // Issue #4: a slow subscriber's queue is bounded; QoS 0 is dropped when full and counted.
    let config = Config {
        max_queued_messages: 2,
        ..Config::default()
    };
    let mut h = Harness::with_config(&config);
    h.connect_with(Connect::new(V5, "c"));
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    let m = message("t", b"m", QoS::AtMostOnce);
    let out = Outbound::encode(&m, V5, QoS::AtMostOnce, false, &[]).unwrap();
    assert_eq!(
        h.session.deliver(h.now, out.clone()),
        DeliverOutcome::Queued
    );
    assert_eq!(
        h.session.deliver(h.now, out.clone()),
        DeliverOutcome::Queued
    );
    assert_eq!(
        h.session.deliver(h.now, out.clone()),
        DeliverOutcome::QueueFull
    );
    assert_eq!(h.session.stats().dropped_qos0, 1);
    assert_eq!(h.packets().len(), 2);
    assert_eq!(h.session.deliver(h.now, out), DeliverOutcome::Queued);
}

#[test]
fn too_large_for_the_client_is_dropped() {
    // [MQTT-3.1.2-25] The Server MUST NOT send packets exceeding the client's Maximum Packet
    // Size.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.properties.maximum_packet_size = Some(10);
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    let m = message("topic", b"a payload", QoS::AtMostOnce);
    let out = Outbound::encode(&m, V5, QoS::AtMostOnce, false, &[]).unwrap();
    assert_eq!(h.session.deliver(h.now, out), DeliverOutcome::TooLarge);
    assert_eq!(h.session.stats().dropped_too_large, 1);
}

#[test]
fn normal_disconnect_discards_the_will() {
    // [MQTT-3.14.4-3] DISCONNECT 0x00 → the Will is discarded without publishing it.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.will = Some(Box::new(Will {
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Props::new(),
        topic: "w".into(),
        payload: (&b"gone"[..]).into(),
    }));
    h.connect_with(c.clone());
    h.events();
    h.session.accept_connect(h.now);
    h.send(&Packet::Disconnect(Disconnect::default()));
    assert_eq!(h.events(), [Event::Closed(CloseReason::Normal)]);

    // MQTT 5.0 §3.14.2.1: 0x04 Disconnect with Will Message publishes it.
    let mut h = Harness::new();
    h.connect_with(c.clone());
    h.events();
    h.session.accept_connect(h.now);
    h.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        properties: Props::new(),
    }));
    assert!(matches!(
        &h.events()[..],
        [Event::Will(_), Event::Closed(_)]
    ));

    // [MQTT-3.1.2-8] the Will is published when the connection closes without DISCONNECT.
    let mut h = Harness::new();
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    h.session.handle_closed();
    assert!(matches!(
        &h.events()[..],
        [Event::Will(m), Event::Closed(CloseReason::ConnectionLost)] if m.topic.as_str() == "w"
    ));
}

#[test]
fn takeover_sends_0x8e_and_publishes_the_will() {
    // [MQTT-3.1.4-3] the existing connection gets DISCONNECT 0x8E and is closed.
    let mut h = Harness::connected(V5);
    h.session.disconnect(ReasonCode::SESSION_TAKEN_OVER);
    assert_eq!(h.disconnect_code(), Some(ReasonCode::SESSION_TAKEN_OVER));
    assert_eq!(h.events(), [Event::Closed(CloseReason::TakenOver)]);
}

#[test]
fn pingreq_gets_pingresp() {
    // [MQTT-3.12.4-1] The Server MUST send a PINGRESP packet in response to a PINGREQ.
    let mut h = Harness::connected(V311);
    h.raw(&[0xC0, 0x00]);
    assert_eq!(h.bytes(), [0xD0, 0x00]);
}

#[test]
fn outbound_encoding_is_shared_and_patched_per_session() {
    // One encoding serves every subscriber; only the Packet Identifier differs per session.
    let m = message("a/b", b"payload", QoS::AtLeastOnce);
    let out = Outbound::encode(&m, V311, QoS::AtLeastOnce, false, &[]).unwrap();
    let mut a = Harness::connected(V311);
    let mut b = Harness::connected(V311);
    b.session.state.next_packet_id = 77;
    a.session.deliver(a.now, out.clone());
    b.session.deliver(b.now, out.clone());
    let (pa, pb) = (a.packets(), b.packets());
    let [Packet::Publish(pa)] = &pa[..] else {
        panic!()
    };
    let [Packet::Publish(pb)] = &pb[..] else {
        panic!()
    };
    assert_eq!((pa.packet_id, pb.packet_id), (Some(pid(1)), Some(pid(77))));
    assert_eq!(pa.payload, pb.payload);
    // The shared bytes still hold the placeholder.
    assert_eq!(
        out.bytes()[..],
        {
            let mut v = Vec::new();
            let mut p = Publish::new("a/b", &b"payload"[..]);
            p.qos = QoS::AtLeastOnce;
            p.packet_id = Some(pid(1));
            encode(&Packet::Publish(p), &EncodeContext::new(V311), &mut v).unwrap();
            v
        }[..]
    );
}

#[test]
fn arbitrary_input_and_time_never_panic() {
    // MQTT 5.0 §4.13: whatever a client sends, the session answers with valid packets or a
    // close, never a panic. The fuzz body (`crate::fuzzing::broker_session`) also checks that
    // every byte the session sends decodes; a fixed-seed xorshift generator feeds it here.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3_000 {
        let len = (next() % 512) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Often make chunks start with a plausible first byte, so the body decoders run.
        for i in (1..data.len()).step_by(7) {
            if next() % 2 == 0 {
                data[i] = [
                    0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82, 0xA2, 0xC0, 0xE0,
                ][(next() % 12) as usize];
            }
        }
        crate::fuzzing::broker_session(&data);
    }
}

fn auth_packet(code: ReasonCode, method: &str, data: &'static [u8]) -> Packet<'static> {
    let mut auth = Auth {
        reason_code: code,
        properties: Props::new(),
    };
    auth.properties.authentication_method = Some(method.to_owned().into());
    auth.properties.authentication_data = Some(data.into());
    Packet::Auth(auth)
}

fn connect_with_auth(method: &str, data: &'static [u8]) -> Connect<'static> {
    let mut c = Connect::new(V5, "c");
    c.properties.authentication_method = Some(method.to_owned().into());
    c.properties.authentication_data = Some(data.into());
    c
}

#[test]
fn enhanced_auth_runs_before_connect_and_ends_in_connack() {
    // MQTT 5.0 §4.12: [MQTT-4.12.0-2] the Server continues with AUTH 0x18; [MQTT-4.12.0-3]
    // the Client answers AUTH 0x18; [MQTT-4.12.0-5] every AUTH and the CONNACK carry the
    // CONNECT's Authentication Method.
    let mut h = Harness::new();
    h.connect_with(connect_with_auth("CHALLENGE", b"hello"));
    let Some(Event::Auth(req)) = h.event() else {
        panic!("no auth request")
    };
    assert_eq!(req.method, "CHALLENGE");
    assert_eq!(req.data.as_deref(), Some(&b"hello"[..]));
    assert!(!req.reauthenticate);
    assert!(h.event().is_none(), "CONNECT is decided after the exchange");

    h.session
        .continue_auth(h.now, Some(Bytes::from_static(b"nonce")));
    assert_eq!(
        h.packets(),
        [auth_packet(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "CHALLENGE",
            b"nonce"
        )]
    );
    h.send(&auth_packet(
        ReasonCode::CONTINUE_AUTHENTICATION,
        "CHALLENGE",
        b"answer",
    ));
    let Some(Event::Auth(req)) = h.event() else {
        panic!("second step")
    };
    assert_eq!(req.data.as_deref(), Some(&b"answer"[..]));
    h.session
        .auth_success(h.now, Some(Bytes::from_static(b"welcome")));
    let Some(Event::Connect(req)) = h.event() else {
        panic!("the CONNECT follows a success")
    };
    assert_eq!(req.authentication_method.as_deref(), Some("CHALLENGE"));
    h.session.accept_connect(h.now);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some("CHALLENGE")
    );
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(&b"welcome"[..])
    );
}

#[test]
fn enhanced_auth_failure_gets_connack_and_close() {
    // [MQTT-4.12.0-4] the Server can reject the authentication at any point: CONNACK ≥ 0x80,
    // then close. [MQTT-4.12.0-1] an unsupported method: 0x8C.
    let mut h = Harness::new();
    h.connect_with(connect_with_auth("UNKNOWN", b""));
    assert!(matches!(h.event(), Some(Event::Auth(_))));
    h.session
        .auth_failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(h.session.is_closed());
}

#[test]
fn other_packet_during_auth_exchange_is_a_protocol_error() {
    // [MQTT-4.12.0-3] during the exchange the Client answers with AUTH 0x18, nothing else.
    let mut h = Harness::new();
    h.connect_with(connect_with_auth("CHALLENGE", b""));
    h.events();
    h.session.continue_auth(h.now, None);
    h.bytes();
    h.send(&Packet::PingReq);
    let [Packet::ConnAck(ack)] = &h.packets()[..] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::PROTOCOL_ERROR);
    assert!(h.session.is_closed());
}

#[test]
fn reauthentication_success_and_failure() {
    // [MQTT-4.12.1-1] AUTH 0x19 with the same method starts a re-authentication; success is
    // AUTH 0x00; [MQTT-4.12.1-2] failure is DISCONNECT and close.
    let mut h = Harness::new();
    h.connect_with(connect_with_auth("CHALLENGE", b""));
    h.events();
    h.session.auth_success(h.now, None);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    h.send(&auth_packet(
        ReasonCode::RE_AUTHENTICATE,
        "CHALLENGE",
        b"again",
    ));
    let Some(Event::Auth(req)) = h.event() else {
        panic!("re-authentication request")
    };
    assert!(req.reauthenticate);
    h.session
        .auth_success(h.now, Some(Bytes::from_static(b"ok")));
    assert_eq!(
        h.packets(),
        [auth_packet(ReasonCode::SUCCESS, "CHALLENGE", b"ok")]
    );
    h.send(&auth_packet(
        ReasonCode::RE_AUTHENTICATE,
        "CHALLENGE",
        b"again",
    ));
    h.events();
    h.session
        .auth_failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
    // 0x8C may not be sent in DISCONNECT: 0x87 instead.
    assert_eq!(h.disconnect_code(), Some(ReasonCode::NOT_AUTHORIZED));
    assert!(h.session.is_closed());
}

#[test]
fn auth_without_method_or_with_another_method_is_a_protocol_error() {
    // [MQTT-4.12.0-7] no AUTH from a Client whose CONNECT had no method; [MQTT-4.12.0-5] the
    // method never changes.
    let mut h = Harness::connected(V5);
    h.send(&auth_packet(ReasonCode::RE_AUTHENTICATE, "X", b""));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::PROTOCOL_ERROR));

    let mut h = Harness::new();
    h.connect_with(connect_with_auth("CHALLENGE", b""));
    h.events();
    h.session.auth_success(h.now, None);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    h.send(&auth_packet(ReasonCode::RE_AUTHENTICATE, "OTHER", b""));
    assert_eq!(h.disconnect_code(), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn outbound_topic_aliases_least_recently_used() {
    // [MQTT-3.1.2-26] no alias above the client's Topic Alias Maximum (2 here); MQTT 5.0
    // §3.3.2.3.4: the first PUBLISH of a topic carries name and alias, later ones only the
    // alias; the least recently used alias is re-mapped when all are taken.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.properties.topic_alias_maximum = Some(2);
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    for (topic, qos) in [
        ("a", QoS::AtMostOnce),
        ("a", QoS::AtLeastOnce),
        ("b", QoS::AtMostOnce),
        ("c", QoS::ExactlyOnce),
        ("a", QoS::AtMostOnce),
    ] {
        let mut m = message(topic, b"payload", qos);
        m.properties.content_type = Some("text/plain".into());
        let out = Outbound::encode(&m, V5, qos, false, &[]).unwrap();
        h.session.deliver(h.now, out);
    }
    /// Topic, alias, packet id, payload, content type kept.
    type Sent = (String, Option<u16>, Option<u16>, Vec<u8>, bool);
    let sent: Vec<Sent> = h
        .packets()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (
                p.topic.to_string(),
                p.properties.topic_alias,
                p.packet_id.map(PacketId::get),
                p.payload.to_vec(),
                p.properties.content_type.as_deref() == Some("text/plain"),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    let expect = |t: &str, alias: u16, pid: Option<u16>| {
        (t.to_owned(), Some(alias), pid, b"payload".to_vec(), true)
    };
    assert_eq!(
        sent,
        [
            expect("a", 1, None),
            expect("", 1, Some(1)),
            expect("b", 2, None),
            expect("c", 1, Some(2)), // "a" (alias 1) was used least recently
            expect("a", 2, None),    // then "b" (alias 2)
        ]
    );
}

#[test]
fn no_outbound_aliases_without_the_clients_maximum() {
    // [MQTT-3.1.2-27] If Topic Alias Maximum is absent or zero, the Server MUST NOT send any
    // Topic Aliases to the Client.
    let mut h = Harness::connected(V5);
    for _ in 0..2 {
        let m = message("a", b"x", QoS::AtMostOnce);
        h.session.deliver(
            h.now,
            Outbound::encode(&m, V5, QoS::AtMostOnce, false, &[]).unwrap(),
        );
    }
    for p in h.packets() {
        let Packet::Publish(p) = p else { panic!() };
        assert_eq!((&*p.topic, p.properties.topic_alias), ("a", None));
    }
}

#[test]
fn persistent_session_resumes_with_dup_pubrel_and_queue() {
    // [MQTT-4.4.0-1] on resuming a session the Server MUST resend unacknowledged PUBLISH
    // packets (with DUP, [MQTT-3.3.1-1]) and PUBREL packets with their original Packet
    // Identifiers; [MQTT-3.2.2-3] Session Present is 1.
    let mut h = Harness::new();
    let mut c = Connect::new(V5, "p");
    c.properties.session_expiry_interval = Some(60);
    c.properties.receive_maximum = Some(3);
    h.connect_with(c);
    let Some(Event::Connect(req)) = h.event() else {
        panic!("connect")
    };
    assert_eq!(req.session_expiry_interval, 60);
    h.session.accept_connect(h.now);
    h.bytes();
    for (payload, qos) in [
        (&b"one"[..], QoS::AtLeastOnce),
        (b"two", QoS::ExactlyOnce),
        (b"three", QoS::ExactlyOnce),
        (b"four", QoS::AtLeastOnce),
    ] {
        let m = message("t", payload, qos);
        h.session
            .deliver(h.now, Outbound::encode(&m, V5, qos, false, &[]).unwrap());
    }
    assert_eq!(
        h.packets().len(),
        3,
        "the window of 3 holds the fourth back"
    );
    h.send(&Packet::PubRec(PubResponse::new(pid(2))));
    assert_eq!(h.packets(), [Packet::PubRel(PubResponse::new(pid(2)))]);
    h.session.handle_closed();
    assert_eq!(h.session.session_expiry(), 60);
    let state = h.session.take_state(h.now);
    assert_eq!(state.queued(), 1);

    let mut r = Harness::new();
    let mut c = Connect::new(V5, "p");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    c.properties.receive_maximum = Some(3);
    r.connect_with(c);
    r.events();
    r.session.accept_connect_resumed(r.now, state);
    let packets = r.packets();
    let [Packet::ConnAck(ack), rest @ ..] = &packets[..] else {
        panic!("CONNACK first")
    };
    assert!(ack.session_present);
    let summary: Vec<(String, Option<u16>, bool)> = rest
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.packet_id.map(PacketId::get),
                p.dup,
            ),
            Packet::PubRel(r) => ("PUBREL".to_owned(), Some(r.packet_id.get()), false),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("one".to_owned(), Some(1), true),
            ("PUBREL".to_owned(), Some(2), false),
            ("three".to_owned(), Some(3), true),
        ],
        "the queued fourth waits for the window"
    );
    r.send(&Packet::PubAck(PubResponse::new(pid(1))));
    let [Packet::Publish(fourth)] = &r.packets()[..] else {
        panic!("the queued message")
    };
    assert_eq!((&fourth.payload[..], fourth.dup), (&b"four"[..], false));
    assert_eq!(fourth.packet_id, Some(pid(4)));
}

#[test]
fn session_expiry_of_each_version() {
    // MQTT 5.0 §3.1.2.11.2: absent is 0; 3.1.1 §3.1.2.4: Clean Session 0 keeps the session
    // with no expiry; MQTT 5.0 §3.14.2.2.2: DISCONNECT may change it.
    let expiry = |connect: Connect<'static>| {
        let mut h = Harness::new();
        h.connect_with(connect);
        let Some(Event::Connect(req)) = h.event() else {
            panic!("connect")
        };
        req.session_expiry_interval
    };
    assert_eq!(expiry(Connect::new(V5, "c")), 0);
    let mut persistent = Connect::new(V311, "c");
    persistent.clean_start = false;
    assert_eq!(expiry(persistent), u32::MAX);
    assert_eq!(expiry(Connect::new(V311, "c")), 0);

    let mut h = Harness::new();
    let mut c = Connect::new(V5, "c");
    c.properties.session_expiry_interval = Some(30);
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(0);
    h.send(&Packet::Disconnect(d));
    assert_eq!(h.session.session_expiry(), 0);
}

#[test]
fn offline_queue_keeps_qos1_and_2_only() {
    // MQTT 5.0 §4.1: QoS 1 and 2 messages are part of the Session State; QoS 0 may be dropped.
    let mut state = SessionState::default();
    let m = message("t", b"x", QoS::AtMostOnce);
    let now = crate::test_epoch();
    assert!(!state.enqueue(
        now,
        Outbound::encode(&m, V5, QoS::AtMostOnce, false, &[]).unwrap(),
        10,
        usize::MAX
    ));
    let m = message("t", b"x", QoS::AtLeastOnce);
    let out = Outbound::encode(&m, V5, QoS::AtLeastOnce, false, &[]).unwrap();
    assert!(state.enqueue(now, out.clone(), 1, usize::MAX));
    assert!(!state.enqueue(now, out, 1, usize::MAX), "bounded");
    assert_eq!(state.queued(), 1);
}

#[test]
fn offline_queue_is_bounded_in_bytes() {
    // Issue 4: a persistent session's offline queue is bounded in bytes as well as messages;
    // a message that would pass the byte limit is not kept, smaller later ones still are.
    let now = crate::test_epoch();
    let small = message("t", &[0; 10], QoS::AtLeastOnce);
    let small = Outbound::encode(&small, V5, QoS::AtLeastOnce, false, &[]).unwrap();
    let big = message("t", &[0; 100], QoS::ExactlyOnce);
    let big = Outbound::encode(&big, V5, QoS::ExactlyOnce, false, &[]).unwrap();
    let max_bytes = 2 * small.len() + 5;
    let mut state = SessionState::default();
    assert!(state.enqueue(now, small.clone(), 10, max_bytes));
    assert!(
        !state.enqueue(now, big, 10, max_bytes),
        "over the byte limit"
    );
    assert!(state.enqueue(now, small.clone(), 10, max_bytes));
    assert!(
        !state.enqueue(now, small.clone(), 10, max_bytes),
        "full in bytes"
    );
    assert_eq!(state.queued(), 2);
    assert_eq!(state.queued_bytes(), 2 * small.len());

    // What a closing session hands over counts toward the limit too.
    let mut h = Harness::connected(V5);
    assert_eq!(
        h.session.deliver(h.now, small.clone()),
        DeliverOutcome::Queued
    );
    h.session.handle_closed();
    let mut state = h.session.take_state(h.now);
    assert_eq!(state.queued(), 1);
    assert_eq!(state.queued_bytes(), small.len());
    let room = state.queued_bytes() + small.len();
    assert!(state.enqueue(now, small.clone(), 10, room));
    assert!(!state.enqueue(now, small, 10, room));
}

#[test]
fn offline_messages_expire_and_age() {
    // [MQTT-3.3.2-5] a message whose Message Expiry Interval passed while queued is not sent;
    // [MQTT-3.3.2-6] the others carry the interval minus the time they waited.
    let start = crate::test_epoch();
    let mut state = SessionState::default();
    for (payload, expiry) in [(&b"short"[..], 5), (b"long", 100)] {
        let mut m = message("t", payload, QoS::AtLeastOnce);
        m.properties.message_expiry_interval = Some(expiry);
        let out = Outbound::encode(&m, V5, QoS::AtLeastOnce, false, &[]).unwrap();
        assert!(state.enqueue(start, out, 10, usize::MAX));
    }
    let mut h = Harness::new();
    h.now = start + Duration::from_secs(30);
    let mut c = Connect::new(V5, "p");
    c.clean_start = false;
    h.connect_with(c);
    h.events();
    h.session.accept_connect_resumed(h.now, state);
    let packets = h.packets();
    let [Packet::ConnAck(_), Packet::Publish(p)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(&p.payload[..], b"long");
    assert_eq!(p.properties.message_expiry_interval, Some(70));
    assert_eq!(p.packet_id, Some(pid(1)));
}

#[test]
fn acknowledged_deliveries_are_reported() {
    // MQTT 5.0 §4.3.2 / §4.3.3: PUBACK ends a QoS 1 delivery, PUBCOMP a QoS 2 one; a PUBREC
    // refusal (≥ 0x80) is no delivery.
    let mut h = Harness::connected(V5);
    for (topic, qos) in [
        ("q/1", QoS::AtLeastOnce),
        ("q/2", QoS::ExactlyOnce),
        ("q/refused", QoS::ExactlyOnce),
    ] {
        let m = message(topic, b"x", qos);
        h.session
            .deliver(h.now, Outbound::encode(&m, V5, qos, false, &[]).unwrap());
    }
    h.bytes();
    h.send(&Packet::PubAck(PubResponse::new(pid(1))));
    h.send(&Packet::PubRec(PubResponse::new(pid(2))));
    let mut refused = PubResponse::new(pid(3));
    refused.reason_code = ReasonCode::NOT_AUTHORIZED;
    h.send(&Packet::PubRec(refused));
    h.send(&Packet::PubComp(PubResponse::new(pid(2))));
    let delivered: Vec<(String, QoS, u16)> = h
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Delivered(d) => (d.topic().to_owned(), d.qos, d.packet_id.get()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("q/1".to_owned(), QoS::AtLeastOnce, 1),
            ("q/2".to_owned(), QoS::ExactlyOnce, 2)
        ]
    );
    assert!(h.session.state.inflight.is_empty());
}

#[test]
fn idle_ceiling_for_clients_without_keepalive() {
    // Issue #4: an MQTT 3.1.1 client with Keep Alive 0 has no [MQTT-3.1.2-22] deadline; the
    // idle ceiling (1 h by default) closes it, publishing its Will.
    let mut h = Harness::new();
    let mut c = Connect::new(V311, "quiet");
    c.keep_alive = 0;
    h.connect_with(c);
    h.events();
    h.session.accept_connect(h.now);
    h.bytes();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(3600))
    );
    h.advance(Duration::from_secs(3599));
    assert!(h.session.is_connected());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.events(), [Event::Closed(CloseReason::IdleTimeout)]);
}

#[test]
fn connected_queue_messages_expire_and_age() {
    // [MQTT-3.3.2-5] a message whose Message Expiry Interval passed while it waited in a
    // connected client's queue (here behind one message in flight) is not sent, and is
    // counted; [MQTT-3.3.2-6] the others carry the interval minus the time they waited.
    let config = Config {
        max_inflight: 1,
        ..Config::default()
    };
    for version in [V5, V311] {
        let mut h = Harness::with_config(&config);
        h.connect_with(Connect::new(version, "slow"));
        h.events();
        h.session.accept_connect(h.now);
        h.packets();
        for (payload, expiry) in [
            (&b"first"[..], None),
            (b"short", Some(5)),
            (b"long", Some(100)),
        ] {
            let mut m = message("t", payload, QoS::AtLeastOnce);
            m.properties.message_expiry_interval = expiry;
            let out = Outbound::encode(&m, version, QoS::AtLeastOnce, false, &[]).unwrap();
            assert_eq!(h.session.deliver(h.now, out), DeliverOutcome::Queued);
        }
        let packets = h.packets();
        let [Packet::Publish(first)] = &packets[..] else {
            panic!("{packets:?}")
        };
        assert_eq!(&first.payload[..], b"first");
        h.advance(Duration::from_secs(30));
        assert_eq!(h.packets(), []);
        h.send(&Packet::PubAck(PubResponse::new(pid(1))));
        let packets = h.packets();
        let [Packet::Publish(p)] = &packets[..] else {
            panic!("{packets:?}")
        };
        assert_eq!(&p.payload[..], b"long");
        let left = if version == V5 { Some(70) } else { None };
        assert_eq!(p.properties.message_expiry_interval, left);
        assert_eq!(h.session.stats().dropped_expired, 1);
    }
}

#[test]
fn assign_client_id_before_accepting() {
    // MQTT 5.0 §3.2.2.3.7: the Server may assign a Client Identifier, returned as the
    // Assigned Client Identifier [MQTT-3.2.2-16].
    let mut h = Harness::new();
    h.connect_with(Connect::new(V5, "own"));
    assert!(matches!(h.event(), Some(Event::Connect(r)) if r.client_id == "own"));
    h.session.assign_client_id(String::new());
    assert_eq!(
        h.session.client_id(),
        "own",
        "an empty identifier is ignored"
    );
    h.session.assign_client_id("given".into());
    h.session.accept_connect(h.now);
    let packets = h.packets();
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("given")
    );
    assert_eq!(h.session.client_id(), "given");
    h.session.assign_client_id("late".into());
    assert_eq!(
        h.session.client_id(),
        "given",
        "only while CONNECT is pending"
    );
}
