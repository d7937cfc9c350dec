//! Unit tests of the session core: bytes and instants in, bytes and events out.
//!
//! Each test plays the server with encoded packets and names the statement it checks.

use std::time::{Duration, Instant};

use mqttx_codec::{
    ConnAck, DecodeContext, Decoder, Disconnect, EncodeContext, OwnedPacket, Packet, PacketId,
    Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck, SubscribeFilter,
    UnsubAck, encode,
};

use super::{ClientSession, Event, PublishError, SessionError, SessionOptions};

/// A session plus the server's view of the bytes it sends.
struct Harness {
    session: ClientSession,
    now: Instant,
    version: ProtocolVersion,
    decoder: Decoder,
}

impl Harness {
    fn new(opts: SessionOptions) -> Self {
        let version = opts.protocol;
        let now = start();
        let mut session = ClientSession::new();
        session.connect(now, opts);
        let mut h = Self {
            session,
            now,
            version,
            decoder: Decoder::new(DecodeContext::new(version)),
        };
        assert!(matches!(h.sent().as_slice(), [Packet::Connect(_)]));
        h
    }

    /// A connected MQTT 5.0 session with default options.
    fn connected() -> Self {
        Self::connected_with(SessionOptions::new("c"))
    }

    fn connected_with(opts: SessionOptions) -> Self {
        let mut h = Self::new(opts);
        h.connack(false, Properties::new());
        assert!(matches!(h.event(), Some(Event::Connected { .. })));
        h
    }

    fn connack(&mut self, session_present: bool, props: Properties<'static>) {
        self.recv(Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::SUCCESS,
            properties: props.into(),
        }))
        .expect("connack accepted");
    }

    fn reconnect(&mut self, opts: SessionOptions) {
        self.session.handle_connection_closed();
        self.session.connect(self.now, opts);
        self.decoder = Decoder::new(DecodeContext::new(self.version));
        assert!(
            matches!(self.sent().as_slice(), [Packet::Connect(c)] if !c.clean_start || !self.version.is_v5())
        );
    }

    fn recv(&mut self, packet: OwnedPacket) -> Result<(), SessionError> {
        let mut bytes = Vec::new();
        encode(&packet, &EncodeContext::new(self.version), &mut bytes)
            .expect("test packet encodes");
        self.session.handle_bytes(self.now, &bytes)
    }

    /// Every packet the session wants to send now.
    fn sent(&mut self) -> Vec<OwnedPacket> {
        let mut out = Vec::new();
        while self.session.poll_transmit(&mut out) {}
        self.decoder.feed(&out);
        let mut packets = Vec::new();
        while let Some(p) = self
            .decoder
            .next_packet()
            .expect("the session sends valid packets")
        {
            packets.push(p);
        }
        packets
    }

    fn event(&mut self) -> Option<Event> {
        self.session.poll_event()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    fn publish(&mut self, topic: &str, qos: QoS) -> Result<Option<PacketId>, PublishError> {
        let mut p = Publish::new(topic.to_owned(), b"x".to_vec());
        p.qos = qos;
        self.session.publish(self.now, p)
    }
}

fn start() -> Instant {
    // The clock is read outside `proto`, which never reads one.
    crate::test_start()
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn inbound(topic: &str, qos: QoS, packet_id: Option<u16>) -> OwnedPacket {
    let mut p = Publish::new(topic.to_owned(), b"m".to_vec());
    p.qos = qos;
    p.packet_id = packet_id.and_then(PacketId::new);
    Packet::Publish(p)
}

fn code_of(r: &OwnedPacket) -> (u8, u16) {
    match r {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            (r.reason_code.as_u8(), r.packet_id.get())
        }
        other => panic!("not an acknowledgement: {other:?}"),
    }
}

// ----- CONNECT / CONNACK -----

#[test]
fn connect_carries_the_options_and_v5_limits() {
    let mut opts = SessionOptions::new("dev-1");
    opts.keep_alive = Duration::from_secs(15);
    opts.topic_alias_maximum = 4;
    opts.max_packet_size = 4096;
    let mut s = ClientSession::new();
    s.connect(start(), opts);
    let mut out = Vec::new();
    assert!(s.poll_transmit(&mut out));
    let mut d = Decoder::new(DecodeContext::new(ProtocolVersion::V5));
    d.feed(&out);
    let Some(Packet::Connect(c)) = d.next_packet().expect("valid") else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.client_id, "dev-1");
    assert_eq!(c.keep_alive, 15);
    assert!(c.clean_start);
    assert_eq!(c.properties.topic_alias_maximum, Some(4));
    assert_eq!(c.properties.maximum_packet_size, Some(4096));
}

#[test]
fn assigned_client_identifier_and_server_keep_alive_are_adopted() {
    // [MQTT-3.2.2-21] the Client MUST use the Server Keep Alive instead of its own;
    // MQTT 5.0 §3.2.2.3.7 the Assigned Client Identifier is the one to use from now on.
    let mut h = Harness::new(SessionOptions::new(""));
    let mut props = Properties::new();
    props.assigned_client_identifier = Some("auto-7".into());
    props.server_keep_alive = Some(5);
    h.connack(false, props);
    match h.event() {
        Some(Event::Connected { client_id, .. }) => assert_eq!(client_id, "auto-7"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
    h.reconnect(SessionOptions::new(""));
    // The reconnect uses the assigned identifier with Clean Start 0.
    h.session.handle_connection_closed();
    h.session.connect(h.now, SessionOptions::new(""));
    match h.sent().as_slice() {
        [Packet::Connect(c)] => {
            assert_eq!(c.client_id, "auto-7");
            assert!(!c.clean_start);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_retryable_connack_codes_are_reported_as_such() {
    // Issue 5: stop on v5 0x84/0x85/0x86/0x87/0x8A/0x8C; retry on the others (0x88 here).
    for (code, retryable) in [(0x86, false), (0x8A, false), (0x88, true), (0x89, true)] {
        let mut h = Harness::new(SessionOptions::new("c"));
        let rc = ReasonCode::from_u8(code).expect("known code");
        h.recv(Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: rc,
            properties: Default::default(),
        }))
        .expect("accepted");
        assert_eq!(
            h.event(),
            Some(Event::ConnectionRefused {
                reason_code: rc,
                retryable
            })
        );
        assert!(!h.session.is_connected());
    }
}

#[test]
fn v311_return_code_5_is_not_authorized_and_final() {
    // MQTT 3.1.1 §3.2.2.3: 0x05 Connection Refused, not authorized.
    let mut opts = SessionOptions::new("c");
    opts.protocol = ProtocolVersion::V311;
    let mut h = Harness::new(opts);
    h.session
        .handle_bytes(h.now, &[0x20, 0x02, 0x00, 0x05])
        .expect("valid");
    assert_eq!(
        h.event(),
        Some(Event::ConnectionRefused {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            retryable: false
        })
    );
}

#[test]
fn first_packet_must_be_connack() {
    // [MQTT-3.2.0-1] The first packet sent from the Server to the Client MUST be a CONNACK.
    let mut h = Harness::new(SessionOptions::new("c"));
    let err = h.recv(Packet::PingResp).expect_err("refused");
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
    assert!(matches!(h.event(), Some(Event::ConnectionLost(_))));
}

#[test]
fn session_present_in_answer_to_clean_start_closes() {
    // [MQTT-3.2.2-4] no Session State and Session Present 1: close the Network Connection.
    let mut h = Harness::new(SessionOptions::new("c"));
    let err = h
        .recv(Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::SUCCESS,
            properties: Default::default(),
        }))
        .expect_err("refused");
    assert!(matches!(err, SessionError::Protocol { .. }));
}

// ----- Keep Alive -----

#[test]
fn pingreq_when_idle_and_connection_lost_without_pingresp() {
    // [MQTT-3.1.2-20] in the absence of other packets the Client MUST send a PINGREQ.
    let mut opts = SessionOptions::new("c");
    opts.keep_alive = Duration::from_secs(10);
    let mut h = Harness::connected_with(opts);
    let t0 = h.now;
    assert_eq!(h.session.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    h.session.handle_timeout(t0 + Duration::from_secs(9));
    assert!(h.sent().is_empty());
    h.now = t0 + Duration::from_secs(10);
    h.session.handle_timeout(h.now);
    assert_eq!(h.sent(), [Packet::PingReq]);
    // The answer clears the deadline.
    h.recv(Packet::PingResp).expect("ok");
    assert_eq!(h.session.poll_timeout(), Some(t0 + Duration::from_secs(20)));
    // Another PINGREQ, no PINGRESP: the connection is lost one Keep Alive later.
    h.now = t0 + Duration::from_secs(20);
    h.session.handle_timeout(h.now);
    assert_eq!(h.sent(), [Packet::PingReq]);
    h.session.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(
        h.event(),
        Some(Event::ConnectionLost(SessionError::KeepAliveTimeout))
    );
    assert!(!h.session.is_connected());
}

#[test]
fn sending_postpones_the_pingreq() {
    let mut opts = SessionOptions::new("c");
    opts.keep_alive = Duration::from_secs(10);
    let mut h = Harness::connected_with(opts);
    let t0 = h.now;
    h.now = t0 + Duration::from_secs(6);
    h.publish("t", QoS::AtMostOnce).expect("sent");
    assert_eq!(h.session.poll_timeout(), Some(t0 + Duration::from_secs(16)));
}

#[test]
fn keep_alive_zero_disables_pings() {
    // [MQTT-3.1.2-22 context] A Keep Alive value of 0 has the effect of turning off the mechanism.
    let mut opts = SessionOptions::new("c");
    opts.keep_alive = Duration::ZERO;
    let mut h = Harness::connected_with(opts);
    assert_eq!(h.session.poll_timeout(), None);
    h.session.handle_timeout(h.now + Duration::from_secs(3600));
    assert!(h.sent().is_empty());
}

// ----- Outbound QoS 0/1/2 -----

#[test]
fn qos0_is_sent_at_once_and_refused_while_disconnected() {
    let mut h = Harness::new(SessionOptions::new("c"));
    assert_eq!(
        h.publish("t", QoS::AtMostOnce),
        Err(PublishError::NotConnected)
    );
    h.connack(false, Properties::new());
    assert_eq!(h.publish("t", QoS::AtMostOnce), Ok(None));
    assert!(matches!(h.sent().as_slice(), [Packet::Publish(p)] if p.packet_id.is_none()));
}

#[test]
fn qos1_completes_on_puback() {
    // [MQTT-4.3.2-1] the sender MUST assign an unused Packet Identifier and treat the PUBLISH
    // as unacknowledged until it has received the corresponding PUBACK.
    let mut h = Harness::connected();
    let pid = h
        .publish("t", QoS::AtLeastOnce)
        .expect("ok")
        .expect("an id");
    assert!(
        matches!(h.sent().as_slice(), [Packet::Publish(p)] if p.packet_id == Some(pid) && !p.dup)
    );
    assert_eq!(h.session.inflight(), 1);
    let mut ack = PubResponse::new(pid);
    ack.reason_code = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    h.recv(Packet::PubAck(ack)).expect("ok");
    assert_eq!(
        h.event(),
        Some(Event::PublishComplete {
            packet_id: pid,
            reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS
        })
    );
    assert_eq!(h.session.inflight(), 0);
}

#[test]
fn qos2_sends_pubrel_on_pubrec_and_completes_on_pubcomp() {
    // [MQTT-4.3.3-4] the sender MUST send a PUBREL when it receives a PUBREC < 0x80.
    let mut h = Harness::connected();
    let pid = h
        .publish("t", QoS::ExactlyOnce)
        .expect("ok")
        .expect("an id");
    h.sent();
    h.recv(Packet::PubRec(PubResponse::new(pid))).expect("ok");
    assert_eq!(
        h.sent().iter().map(code_of).collect::<Vec<_>>(),
        [(0, pid.get())]
    );
    assert_eq!(h.event(), None);
    h.recv(Packet::PubComp(PubResponse::new(pid))).expect("ok");
    assert_eq!(
        h.event(),
        Some(Event::PublishComplete {
            packet_id: pid,
            reason_code: ReasonCode::SUCCESS
        })
    );
}

#[test]
fn qos2_pubrec_with_failure_ends_the_exchange() {
    // MQTT 5.0 §4.3.3: a PUBREC with a Reason Code of 0x80 or greater ends the flow.
    let mut h = Harness::connected();
    let pid = h
        .publish("t", QoS::ExactlyOnce)
        .expect("ok")
        .expect("an id");
    h.sent();
    let mut rec = PubResponse::new(pid);
    rec.reason_code = ReasonCode::QUOTA_EXCEEDED;
    h.recv(Packet::PubRec(rec)).expect("ok");
    assert!(h.sent().is_empty());
    assert_eq!(
        h.event(),
        Some(Event::PublishComplete {
            packet_id: pid,
            reason_code: ReasonCode::QUOTA_EXCEEDED
        })
    );
}

#[test]
fn packet_ids_skip_those_in_flight() {
    // [MQTT-2.2.1-3] a non-zero Packet Identifier that is currently unused.
    let mut h = Harness::connected();
    let a = h.publish("t", QoS::AtLeastOnce).expect("ok").expect("id");
    let b = h.publish("t", QoS::AtLeastOnce).expect("ok").expect("id");
    assert_ne!(a, b);
    // Walk the counter around the 16-bit space: ids a and b are still in use.
    h.recv(Packet::PubAck(PubResponse::new(b))).expect("ok");
    let mut more = Vec::new();
    for _ in 0..(u16::MAX as usize) {
        let c = h.publish("t", QoS::AtLeastOnce).expect("ok").expect("id");
        h.recv(Packet::PubAck(PubResponse::new(c))).expect("ok");
        more.push(c.get());
    }
    assert!(!more.contains(&a.get()), "id {a} is in flight");
    assert!(!more.contains(&0));
}

#[test]
fn window_is_min_of_receive_maximum_and_max_inflight_rest_waits() {
    // [MQTT-4.9.0-2] the Client MUST NOT send more than Receive Maximum unacknowledged QoS 1/2
    // PUBLISH packets; the rest wait without an error.
    let mut opts = SessionOptions::new("c");
    opts.max_inflight = 3;
    let mut h = Harness::new(opts);
    let mut props = Properties::new();
    props.receive_maximum = Some(2);
    h.connack(false, props);
    h.events();
    let ids: Vec<PacketId> = (0..5)
        .map(|_| {
            h.publish("t", QoS::AtLeastOnce)
                .expect("queued")
                .expect("id")
        })
        .collect();
    assert_eq!(h.sent().len(), 2);
    assert_eq!((h.session.inflight(), h.session.queued()), (2, 3));
    h.recv(Packet::PubAck(PubResponse::new(ids[0])))
        .expect("ok");
    // One acknowledgement frees one slot: the next message, in order.
    assert!(matches!(h.sent().as_slice(), [Packet::Publish(p)] if p.packet_id == Some(ids[2])));
    assert_eq!((h.session.inflight(), h.session.queued()), (2, 2));
}

#[test]
fn queue_is_bounded() {
    let mut opts = SessionOptions::new("c");
    opts.max_queued = 2;
    let mut h = Harness::new(opts);
    // Not connected yet: QoS 1 waits.
    assert!(h.publish("t", QoS::AtLeastOnce).is_ok());
    assert!(h.publish("t", QoS::AtLeastOnce).is_ok());
    assert_eq!(
        h.publish("t", QoS::AtLeastOnce),
        Err(PublishError::QueueFull)
    );
    // The CONNACK sends the queue.
    h.connack(false, Properties::new());
    assert_eq!(
        h.sent()
            .iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .count(),
        2
    );
}

#[test]
fn maximum_packet_size_of_the_server_is_respected() {
    // [MQTT-3.1.2-24] analogue: the Client MUST NOT send packets exceeding the server's
    // Maximum Packet Size (MQTT 5.0 §3.2.2.3.6).
    let mut h = Harness::new(SessionOptions::new("c"));
    let mut props = Properties::new();
    props.maximum_packet_size = Some(64);
    h.connack(false, props);
    let mut p = Publish::new("t", vec![0u8; 100]);
    p.qos = QoS::AtLeastOnce;
    assert_eq!(
        h.session.publish(h.now, p),
        Err(PublishError::PacketTooLarge)
    );
}

#[test]
fn inbound_packet_over_our_maximum_is_a_protocol_failure() {
    // [MQTT-3.2.2-?] / §3.1.2.11.4: a packet larger than the Maximum Packet Size we sent is
    // a Protocol Error (0x95 Packet too large).
    let mut opts = SessionOptions::new("c");
    opts.max_packet_size = 32;
    let mut h = Harness::connected_with(opts);
    let mut p = Publish::new("t", vec![0u8; 100]);
    p.qos = QoS::AtMostOnce;
    let err = h.recv(Packet::Publish(p)).expect_err("too large");
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert!(
        matches!(h.sent().as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PACKET_TOO_LARGE)
    );
}

// ----- Inbound QoS 1/2 -----

#[test]
fn inbound_qos1_is_acknowledged_after_the_event_is_handed_out() {
    // [MQTT-4.3.2-4] PUBACK after accepting ownership of the Application Message.
    let mut h = Harness::connected();
    h.recv(inbound("a", QoS::AtLeastOnce, Some(9))).expect("ok");
    assert!(
        h.sent().is_empty(),
        "no PUBACK before the application has the message"
    );
    assert!(matches!(h.event(), Some(Event::Message(m)) if m.topic == "a"));
    assert_eq!(h.sent().iter().map(code_of).collect::<Vec<_>>(), [(0, 9)]);
}

#[test]
fn inbound_qos2_is_delivered_exactly_once() {
    // [MQTT-4.3.3-10] until PUBREL, the receiver MUST NOT deliver duplicates onward and answers
    // a repeated PUBLISH with PUBREC; [MQTT-4.3.3-11] PUBREL is answered with PUBCOMP.
    let mut h = Harness::connected();
    h.recv(inbound("a", QoS::ExactlyOnce, Some(3))).expect("ok");
    h.recv(inbound("a", QoS::ExactlyOnce, Some(3))).expect("ok"); // duplicate while queued
    assert!(matches!(h.event(), Some(Event::Message(_))));
    assert_eq!(h.event(), None);
    assert!(matches!(h.sent().as_slice(), [Packet::PubRec(r)] if r.packet_id.get() == 3));
    let mut dup = Publish::new("a", b"m".to_vec());
    dup.qos = QoS::ExactlyOnce;
    dup.dup = true;
    dup.packet_id = PacketId::new(3);
    h.recv(Packet::Publish(dup)).expect("ok");
    assert_eq!(h.event(), None, "delivered once");
    assert!(matches!(h.sent().as_slice(), [Packet::PubRec(r)] if r.packet_id.get() == 3));
    h.recv(Packet::PubRel(PubResponse::new(id(3)))).expect("ok");
    assert!(
        matches!(h.sent().as_slice(), [Packet::PubComp(r)] if r.packet_id.get() == 3 && r.reason_code == ReasonCode::SUCCESS)
    );
    // After PUBCOMP the identifier may be reused for a new message.
    h.recv(inbound("b", QoS::ExactlyOnce, Some(3))).expect("ok");
    assert!(matches!(h.event(), Some(Event::Message(m)) if m.topic == "b"));
}

#[test]
fn inbound_qos2_beyond_our_receive_maximum_is_refused() {
    // [MQTT-3.3.4-9] the Server MUST NOT send more than Receive Maximum unacknowledged QoS 2.
    let mut opts = SessionOptions::new("c");
    opts.receive_maximum = 1;
    let mut h = Harness::connected_with(opts);
    h.recv(inbound("a", QoS::ExactlyOnce, Some(1))).expect("ok");
    let err = h
        .recv(inbound("a", QoS::ExactlyOnce, Some(2)))
        .expect_err("over the maximum");
    assert_eq!(err.reason_code(), ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
}

// ----- Topic aliases -----

#[test]
fn inbound_topic_alias_without_advertising_is_refused() {
    // [MQTT-3.3.2-10] alias above the Topic Alias Maximum we sent (absent = 0): 0x94.
    let mut h = Harness::connected();
    let mut p = Publish::new("a", b"m".to_vec());
    p.properties.topic_alias = Some(1);
    let err = h.recv(Packet::Publish(p)).expect_err("not advertised");
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_ALIAS_INVALID);
    assert!(
        matches!(h.sent().as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn inbound_topic_alias_is_resolved_and_not_carried_to_the_next_connection() {
    // MQTT 5.0 §3.3.2.3.4; [MQTT-3.3.2-8] mappings do not survive the Network Connection.
    let mut opts = SessionOptions::new("c");
    opts.topic_alias_maximum = 2;
    let mut h = Harness::connected_with(opts.clone());
    let mut p = Publish::new("long/topic", b"1".to_vec());
    p.properties.topic_alias = Some(2);
    h.recv(Packet::Publish(p)).expect("ok");
    let mut p = Publish::new("", b"2".to_vec());
    p.properties.topic_alias = Some(2);
    h.recv(Packet::Publish(p.clone())).expect("ok");
    let topics: Vec<String> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(m) => {
                assert_eq!(m.properties.topic_alias, None);
                Some(m.topic.into_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["long/topic", "long/topic"]);
    h.reconnect(opts);
    h.connack(true, Properties::new());
    h.events();
    assert!(h.recv(Packet::Publish(p)).is_err());
}

// ----- SUBSCRIBE / UNSUBSCRIBE -----

#[test]
fn suback_results_per_filter() {
    // [MQTT-3.9.3-1] one reason code per Topic Filter, in order.
    let mut h = Harness::connected();
    let pid = h
        .session
        .subscribe(
            h.now,
            vec![
                SubscribeFilter::new("a/#", QoS::ExactlyOnce),
                SubscribeFilter::new("b", QoS::AtLeastOnce),
            ],
            Properties::new(),
        )
        .expect("ok");
    assert!(
        matches!(h.sent().as_slice(), [Packet::Subscribe(s)] if s.packet_id == pid && s.filters.len() == 2)
    );
    h.recv(Packet::SubAck(SubAck {
        packet_id: pid,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED].into(),
    }))
    .expect("ok");
    assert_eq!(
        h.event(),
        Some(Event::Subscribed {
            packet_id: pid,
            results: vec![Ok(QoS::AtLeastOnce), Err(ReasonCode::NOT_AUTHORIZED)]
        })
    );
    // Only the granted filter is remembered for re-subscription.
    assert_eq!(
        h.session
            .subscriptions()
            .map(|f| f.filter.as_str())
            .collect::<Vec<_>>(),
        ["a/#"]
    );
    let uid = h
        .session
        .unsubscribe(h.now, vec!["a/#".into()], Properties::new())
        .expect("ok");
    h.sent();
    h.recv(Packet::UnsubAck(UnsubAck {
        packet_id: uid,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::SUCCESS].into(),
    }))
    .expect("ok");
    assert_eq!(
        h.event(),
        Some(Event::Unsubscribed {
            packet_id: uid,
            results: vec![ReasonCode::SUCCESS]
        })
    );
    assert_eq!(h.session.subscriptions().count(), 0);
}

// ----- Reconnect -----

#[test]
fn reconnect_without_session_resubscribes_grouped_by_subscription_identifier() {
    // Issue 5: after session_present = 0, resubscribe everything still subscribed, one
    // SUBSCRIBE per Subscription Identifier (MQTT 5.0 §3.8.2.1.2).
    let mut h = Harness::connected();
    for (filter, sub_id) in [("a", Some(7)), ("b", None), ("c", Some(7))] {
        let mut props = Properties::new();
        if let Some(s) = sub_id {
            props.subscription_identifiers.push(s);
        }
        let pid = h
            .session
            .subscribe(
                h.now,
                vec![SubscribeFilter::new(filter, QoS::AtLeastOnce)],
                props,
            )
            .expect("ok");
        h.recv(Packet::SubAck(SubAck {
            packet_id: pid,
            properties: Default::default(),
            reason_codes: vec![ReasonCode::GRANTED_QOS_1].into(),
        }))
        .expect("ok");
    }
    h.sent();
    h.events();
    h.reconnect(SessionOptions::new("c"));
    h.connack(false, Properties::new());
    let subs: Vec<(Vec<String>, Vec<u32>)> = h
        .sent()
        .into_iter()
        .filter_map(|p| match p {
            Packet::Subscribe(s) => Some((
                s.filters.iter().map(|(f, _)| f.to_owned()).collect(),
                s.properties.subscription_identifiers.iter().collect(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        subs,
        [
            (vec!["a".to_owned(), "c".to_owned()], vec![7]),
            (vec!["b".to_owned()], vec![])
        ]
    );
}

#[test]
fn reconnect_with_session_resends_publish_with_dup_and_pubrel_in_order() {
    // [MQTT-4.4.0-1] resend unacknowledged PUBLISH and PUBREL with their original Packet
    // Identifiers; [MQTT-3.3.1-1] DUP set on a re-delivered PUBLISH.
    let mut opts = SessionOptions::new("c");
    opts.session_expiry_interval = 300;
    let mut h = Harness::connected_with(opts.clone());
    let a = h.publish("a", QoS::ExactlyOnce).expect("ok").expect("id");
    let b = h.publish("b", QoS::AtLeastOnce).expect("ok").expect("id");
    h.recv(Packet::PubRec(PubResponse::new(a))).expect("ok");
    h.sent();
    h.reconnect(opts);
    h.connack(true, Properties::new());
    h.events();
    let resent = h.sent();
    assert!(
        matches!(resent.as_slice(), [Packet::PubRel(r), Packet::Publish(p)]
            if r.packet_id == a && p.packet_id == Some(b) && p.dup),
        "{resent:?}"
    );
}

#[test]
fn reconnect_without_session_publishes_unacknowledged_again() {
    // The server lost the session: the QoS 1 message goes again as a new PUBLISH (not lost).
    let mut h = Harness::connected();
    let a = h.publish("a", QoS::AtLeastOnce).expect("ok").expect("id");
    h.sent();
    h.reconnect(SessionOptions::new("c"));
    h.connack(false, Properties::new());
    assert!(
        matches!(h.sent().as_slice(), [Packet::Publish(p)] if p.packet_id == Some(a) && !p.dup)
    );
    h.recv(Packet::PubAck(PubResponse::new(a))).expect("ok");
    assert!(h.events().contains(&Event::PublishComplete {
        packet_id: a,
        reason_code: ReasonCode::SUCCESS
    }));
}

#[test]
fn pending_subscribe_goes_out_on_connack() {
    let mut h = Harness::new(SessionOptions::new("c"));
    let pid = h
        .session
        .subscribe(
            h.now,
            vec![SubscribeFilter::new("x", QoS::AtMostOnce)],
            Properties::new(),
        )
        .expect("ok");
    assert!(h.sent().is_empty());
    h.connack(false, Properties::new());
    assert!(matches!(h.sent().as_slice(), [Packet::Subscribe(s)] if s.packet_id == pid));
}

#[test]
fn server_disconnect_is_reported() {
    let mut h = Harness::connected();
    h.recv(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
        properties: Default::default(),
    }))
    .expect("ok");
    assert!(
        matches!(h.event(), Some(Event::Disconnected { reason_code, .. }) if reason_code == ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert!(!h.session.is_connected());
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed: u32 = 0x9E37_79B9;
    for _ in 0..2000 {
        let mut h = Harness::connected();
        let mut bytes = Vec::new();
        for _ in 0..32 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            bytes.push(seed as u8);
        }
        let _ = h.session.handle_bytes(h.now, &bytes);
        h.events();
        h.session.handle_timeout(h.now + Duration::from_secs(1000));
        let mut out = Vec::new();
        while h.session.poll_transmit(&mut out) {}
    }
}

#[test]
fn v311_round_trip_of_qos1_both_ways() {
    // MQTT 3.1.1 §3.4: PUBACK carries only the Packet Identifier.
    let mut opts = SessionOptions::new("old");
    opts.protocol = ProtocolVersion::V311;
    let mut h = Harness::new(opts);
    h.session
        .handle_bytes(h.now, &[0x20, 0x02, 0x00, 0x00])
        .expect("CONNACK");
    assert!(matches!(
        h.event(),
        Some(Event::Connected {
            session_present: false,
            ..
        })
    ));
    let pid = h.publish("t", QoS::AtLeastOnce).expect("ok").expect("id");
    assert!(matches!(h.sent().as_slice(), [Packet::Publish(p)] if p.packet_id == Some(pid)));
    h.recv(Packet::PubAck(PubResponse::new(pid))).expect("ok");
    assert!(matches!(h.event(), Some(Event::PublishComplete { .. })));
    h.recv(inbound("in", QoS::AtLeastOnce, Some(4)))
        .expect("ok");
    assert!(matches!(h.event(), Some(Event::Message(_))));
    assert_eq!(h.sent().iter().map(code_of).collect::<Vec<_>>(), [(0, 4)]);
}

#[test]
fn reconnect_without_session_forgets_inbound_qos2_state() {
    let mut h = Harness::connected();
    h.recv(inbound("a", QoS::ExactlyOnce, Some(5))).expect("ok");
    h.events();
    h.reconnect(SessionOptions::new("c"));
    h.connack(false, Properties::new());
    h.events();
    h.sent();
    // The same identifier is a new message now.
    h.recv(inbound("b", QoS::ExactlyOnce, Some(5))).expect("ok");
    assert!(matches!(h.event(), Some(Event::Message(m)) if m.topic == "b"));
}

// ----- Outbound Topic Aliases, QoS 0 queueing -----

fn wire_topics(packets: &[OwnedPacket]) -> Vec<(String, Option<u16>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.properties.topic_alias)),
            _ => None,
        })
        .collect()
}

#[test]
fn outbound_topic_aliases_up_to_the_server_maximum_with_lru_replacement() {
    // MQTT 5.0 §3.3.2.3.4; [MQTT-3.3.2-9] "A Client MUST NOT send a Topic Alias in a PUBLISH
    // packet to the Server greater than Topic Alias Maximum" (here 2).
    let mut h = Harness::new(SessionOptions::new("c"));
    let mut props = Properties::new();
    props.topic_alias_maximum = Some(2);
    h.connack(false, props);
    h.events();
    for t in ["a", "b", "a", "c", "a", "b"] {
        h.publish(t, QoS::AtMostOnce).expect("sent");
    }
    let s = |t: &str, a: u16| (t.to_owned(), Some(a));
    assert_eq!(
        wire_topics(&h.sent()),
        [
            s("a", 1),
            s("b", 2),
            s("", 1),
            s("c", 2),
            s("", 1),
            s("b", 2)
        ],
        "c replaces b (least recently used), then b replaces c"
    );
    // [MQTT-3.3.2-7] no mapping is carried to the next connection.
    h.reconnect(SessionOptions::new("c"));
    let mut props = Properties::new();
    props.topic_alias_maximum = Some(2);
    h.connack(true, props);
    h.events();
    h.publish("a", QoS::AtMostOnce).expect("sent");
    assert_eq!(wire_topics(&h.sent()), [s("a", 1)]);
}

#[test]
fn no_outbound_topic_alias_without_a_server_maximum_or_when_turned_off() {
    // An absent Topic Alias Maximum means 0 (MQTT 5.0 §3.2.2.3.8).
    let mut h = Harness::connected();
    h.publish("a", QoS::AtMostOnce).expect("sent");
    h.publish("a", QoS::AtMostOnce).expect("sent");
    assert_eq!(
        wire_topics(&h.sent()),
        [("a".to_owned(), None), ("a".to_owned(), None)]
    );
    let mut opts = SessionOptions::new("c");
    opts.max_outbound_topic_aliases = 0;
    let mut h = Harness::new(opts);
    let mut props = Properties::new();
    props.topic_alias_maximum = Some(10);
    h.connack(false, props);
    h.publish("a", QoS::AtMostOnce).expect("sent");
    assert_eq!(wire_topics(&h.sent()), [("a".to_owned(), None)]);
}

#[test]
fn qos0_waits_in_the_queue_when_asked_to() {
    let mut opts = SessionOptions::new("c");
    opts.queue_qos0 = true;
    let mut h = Harness::new(opts);
    assert_eq!(h.publish("zero", QoS::AtMostOnce), Ok(None));
    let one = h.publish("one", QoS::AtLeastOnce).expect("ok").expect("id");
    h.connack(false, Properties::new());
    let sent = h.sent();
    assert!(
        matches!(sent.as_slice(), [Packet::Publish(a), Packet::Publish(b)]
            if a.topic == "zero" && a.packet_id.is_none() && b.packet_id == Some(one)),
        "in publish order: {sent:?}"
    );
}

#[test]
fn maximum_qos_and_retain_available_of_the_server_are_respected() {
    // [MQTT-3.2.2-11] no PUBLISH above the Maximum QoS; [MQTT-3.2.2-14] no RETAIN when
    // Retain Available is 0.
    let mut h = Harness::new(SessionOptions::new("c"));
    let mut props = Properties::new();
    props.maximum_qos = Some(QoS::AtLeastOnce);
    props.retain_available = Some(false);
    h.connack(false, props);
    h.events();
    assert_eq!(
        h.publish("t", QoS::ExactlyOnce),
        Err(PublishError::QoSNotSupported)
    );
    let mut p = Publish::new("t", b"x".to_vec());
    p.retain = true;
    assert_eq!(
        h.session.publish(h.now, p),
        Err(PublishError::RetainNotSupported)
    );
    assert!(h.publish("t", QoS::AtLeastOnce).is_ok());
}

#[test]
fn disconnect_carries_reason_and_properties() {
    // MQTT 5.0 §3.14: 0x04 Disconnect with Will Message, Session Expiry Interval.
    let mut h = Harness::connected();
    let mut props = Properties::new();
    props.session_expiry_interval = Some(0);
    h.session
        .disconnect_with(h.now, ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, props);
    assert!(matches!(h.sent().as_slice(), [Packet::Disconnect(d)]
        if d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
            && d.properties.session_expiry_interval == Some(0)));
    assert!(!h.session.is_connected());
}

// ----- Session state across a process restart -----

/// A v5 session with a PUBREL-stage message, a QoS 1 message in flight, one queued, a
/// subscription with a Subscription Identifier and an inbound QoS 2 awaiting PUBREL.
fn busy_session() -> (Harness, PacketId, PacketId, PacketId) {
    let mut opts = SessionOptions::new("keeper");
    opts.max_inflight = 2;
    opts.session_expiry_interval = 3600;
    let mut h = Harness::connected_with(opts);
    let mut props = Properties::new();
    props.subscription_identifiers.push(9);
    let sid = h
        .session
        .subscribe(
            h.now,
            vec![SubscribeFilter::new("s/#", QoS::ExactlyOnce)],
            props,
        )
        .expect("ok");
    h.recv(Packet::SubAck(SubAck {
        packet_id: sid,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GRANTED_QOS_2].into(),
    }))
    .expect("ok");
    let a = h.publish("a", QoS::ExactlyOnce).expect("ok").expect("id");
    let b = h.publish("b", QoS::AtLeastOnce).expect("ok").expect("id");
    let c = h.publish("c", QoS::AtLeastOnce).expect("ok").expect("id");
    h.recv(Packet::PubRec(PubResponse::new(a))).expect("ok");
    h.recv(inbound("in", QoS::ExactlyOnce, Some(77)))
        .expect("ok");
    h.events();
    h.sent();
    (h, a, b, c)
}

#[test]
fn session_state_round_trips_through_its_byte_form() {
    let (h, ..) = busy_session();
    let state = h.session.state();
    assert!(!state.is_empty());
    let mut bytes = Vec::new();
    state.encode(&mut bytes);
    assert_eq!(&bytes[..4], b"MQXS");
    assert_eq!(super::SessionState::decode(&bytes), Ok(state));
    // Damaged input is refused, never a panic.
    for cut in 0..bytes.len() {
        let _ = super::SessionState::decode(&bytes[..cut]);
    }
    assert_eq!(
        super::SessionState::decode(b"nope"),
        Err(super::StateError::BadHeader)
    );
}

#[test]
fn restored_session_resends_in_order_when_the_server_kept_it() {
    // [MQTT-4.4.0-1] after a process restart too: PUBREL, then PUBLISH with DUP, in order;
    // the queued message follows within the window; Clean Start 0.
    let (h, a, b, c) = busy_session();
    let mut bytes = Vec::new();
    h.session.state().encode(&mut bytes);
    let state = super::SessionState::decode(&bytes).expect("valid");
    let mut session = ClientSession::from_state(state);
    let mut opts = SessionOptions::new("keeper");
    opts.max_inflight = 2;
    opts.session_expiry_interval = 3600;
    let now = h.now;
    session.connect(now, opts);
    let mut r = Harness {
        session,
        now,
        version: ProtocolVersion::V5,
        decoder: Decoder::new(DecodeContext::new(ProtocolVersion::V5)),
    };
    assert!(
        matches!(r.sent().as_slice(), [Packet::Connect(c)] if !c.clean_start && c.client_id == "keeper")
    );
    r.connack(true, Properties::new());
    let sent = r.sent();
    assert!(
        matches!(sent.as_slice(), [Packet::PubRel(x), Packet::Publish(y)]
            if x.packet_id == a && y.packet_id == Some(b) && y.dup),
        "{sent:?}"
    );
    // Identifiers of restored messages are not reused.
    let fresh = r.publish("d", QoS::AtLeastOnce).expect("ok").expect("id");
    assert!(![a, b, c].contains(&fresh));
    // The inbound QoS 2 message is not delivered again; its PUBREL is answered.
    r.recv(inbound("in", QoS::ExactlyOnce, Some(77)))
        .expect("ok");
    assert!(!r.events().iter().any(|e| matches!(e, Event::Message(_))));
    r.recv(Packet::PubRel(PubResponse::new(id(77))))
        .expect("ok");
    assert!(r.sent().iter().any(|p| matches!(p, Packet::PubComp(x) if x.packet_id.get() == 77 && x.reason_code == ReasonCode::SUCCESS)));
}

#[test]
fn restored_session_resubscribes_when_the_server_lost_it() {
    let (h, ..) = busy_session();
    let mut session = ClientSession::from_state(h.session.state());
    session.connect(h.now, SessionOptions::new("keeper"));
    let mut r = Harness {
        session,
        now: h.now,
        version: ProtocolVersion::V5,
        decoder: Decoder::new(DecodeContext::new(ProtocolVersion::V5)),
    };
    r.sent();
    r.connack(false, Properties::new());
    let sent = r.sent();
    assert!(
        matches!(sent.first(), Some(Packet::Subscribe(s))
            if s.properties.subscription_identifiers.iter().collect::<Vec<_>>() == [9]),
        "{sent:?}"
    );
    // Messages in flight go again as new ones (DUP 0), none lost.
    assert_eq!(
        sent.iter()
            .filter(|p| matches!(p, Packet::Publish(p) if !p.dup))
            .count(),
        2
    );
}

#[test]
fn manual_acknowledgements_go_out_in_arrival_order() {
    // Issue 5: manual acknowledgement, still in order ([MQTT-4.6.0-2]/[MQTT-4.6.0-3]: PUBACK
    // and PUBREC in the order the PUBLISH packets were received).
    let mut opts = SessionOptions::new("c");
    opts.manual_ack = true;
    let mut h = Harness::connected_with(opts);
    h.recv(inbound("a", QoS::AtLeastOnce, Some(1))).expect("ok");
    h.recv(inbound("b", QoS::ExactlyOnce, Some(2))).expect("ok");
    h.recv(inbound("c", QoS::AtLeastOnce, Some(3))).expect("ok");
    assert_eq!(h.events().len(), 3);
    assert!(h.sent().is_empty(), "nothing before ack");
    assert!(h.session.ack(id(3)));
    assert!(h.sent().is_empty(), "3 waits for 1 and 2");
    assert!(h.session.ack(id(1)));
    assert_eq!(h.sent().iter().map(code_of).collect::<Vec<_>>(), [(0, 1)]);
    assert!(h.session.ack(id(2)));
    let sent = h.sent();
    assert!(
        matches!(sent.as_slice(), [Packet::PubRec(r), Packet::PubAck(a)] if r.packet_id.get() == 2 && a.packet_id.get() == 3)
    );
    assert!(!h.session.ack(id(2)), "acknowledged already");
}

// ----- Enhanced authentication (MQTT 5.0 §4.12) -----

fn auth(code: ReasonCode, method: &str, data: &[u8]) -> OwnedPacket {
    let mut props = Properties::new();
    props.authentication_method = Some(method.to_owned().into());
    props.authentication_data = Some(data.to_vec().into());
    Packet::Auth(mqttx_codec::Auth {
        reason_code: code,
        properties: props.into(),
    })
}

#[test]
fn enhanced_authentication_at_connect_and_re_authentication() {
    // MQTT 5.0 §4.12: CONNECT with a method, AUTH 0x18 both ways, then CONNACK; AUTH 0x19
    // starts a re-authentication that ends with AUTH 0x00.
    let mut opts = SessionOptions::new("c");
    opts.properties.authentication_method = Some("SCRAM-X".into());
    opts.properties.authentication_data = Some(b"client-first".to_vec().into());
    let mut h = Harness::new(opts);
    h.recv(auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        "SCRAM-X",
        b"server-first",
    ))
    .expect("ok");
    assert_eq!(
        h.event(),
        Some(Event::AuthChallenge {
            method: "SCRAM-X".into(),
            data: b"server-first".to_vec()
        })
    );
    h.session.auth_continue(h.now, b"client-final".to_vec());
    assert!(matches!(h.sent().as_slice(), [Packet::Auth(a)]
        if a.reason_code == ReasonCode::CONTINUE_AUTHENTICATION
            && a.properties.authentication_data.as_deref() == Some(&b"client-final"[..])));
    h.connack(false, Properties::new());
    assert!(matches!(h.event(), Some(Event::Connected { .. })));
    h.session.reauthenticate(h.now, b"again".to_vec());
    assert!(
        matches!(h.sent().as_slice(), [Packet::Auth(a)] if a.reason_code == ReasonCode::RE_AUTHENTICATE)
    );
    h.recv(auth(ReasonCode::SUCCESS, "SCRAM-X", b""))
        .expect("ok");
    assert_eq!(h.event(), Some(Event::Reauthenticated));
}

#[test]
fn auth_with_another_method_or_without_one_is_a_protocol_error() {
    // [MQTT-4.12.0-5] / [MQTT-4.12.0-6].
    let mut opts = SessionOptions::new("c");
    opts.properties.authentication_method = Some("A".into());
    let mut h = Harness::new(opts);
    let err = h
        .recv(auth(ReasonCode::CONTINUE_AUTHENTICATION, "B", b""))
        .expect_err("refused");
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
    let mut h = Harness::connected();
    assert!(
        h.recv(auth(ReasonCode::CONTINUE_AUTHENTICATION, "A", b""))
            .is_err()
    );
}
