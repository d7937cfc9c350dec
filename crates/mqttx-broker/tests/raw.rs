//! Loopback tests with a scripted client speaking raw codec-encoded bytes: hostile input, the
//! handler hooks, takeover, graceful shutdown, and (over an in-memory stream with paused time)
//! the connect and keep-alive timeouts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RawClient, WAIT, loopback_config, run, start};
use mqttx_broker::codec::{
    ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, Subscribe, SubscribeFilter,
};
use mqttx_broker::proto::Outbound;
use mqttx_broker::router::{SubscribeOptions, TopicFilter, TopicName};
use mqttx_broker::{
    Broker, ClientInfo, ConnectRefusal, ConnectRequest, Handler, MemoryStore, Message,
    PublishDecision, QueueLimits, SessionStore, StoreFuture, StoredSession, SubscribeDecision,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet<'static> {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new(filter, qos)].into(),
    })
}

fn publish(topic: &str, payload: &'static [u8], qos: QoS, id: u16) -> Packet<'static> {
    let mut p = Publish::new(topic.to_owned(), payload);
    p.qos = qos;
    p.packet_id = PacketId::new(id);
    Packet::Publish(p)
}

async fn connected<S>(
    client: &mut RawClient<S>,
    version: ProtocolVersion,
    id: &str,
) -> ConnAck<'static>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client
        .send(&Packet::Connect(Connect::new(version, id.to_owned())))
        .await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A subscriber and a publisher through the broker, to show it still serves clients.
async fn round_trip(addr: std::net::SocketAddr) {
    let mut sub = RawClient::connect(addr, V311).await;
    connected(&mut sub, V311, "still-serving-sub").await;
    sub.send(&subscribe(1, "health/#", QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publ = RawClient::connect(addr, V311).await;
    connected(&mut publ, V311, "still-serving-pub").await;
    publ.send(&publish("health/ok", b"yes", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(
        publ.recv().await,
        Some(Packet::PubAck(PubResponse::new(pid(1))))
    );
    let Some(Packet::Publish(p)) = sub.recv().await else {
        panic!("the subscriber receives the message")
    };
    assert_eq!((&*p.topic, &p.payload[..]), ("health/ok", &b"yes"[..]));
}

#[tokio::test]
async fn garbage_is_closed_and_others_are_served() {
    // [MQTT-4.8.0-1] a protocol violation closes that connection; no other client is affected.
    let b = start().await;
    let mut bad = RawClient::connect(b.addr, V5).await;
    bad.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(bad.until_closed().await, []);
    round_trip(b.addr).await;
}

#[tokio::test]
async fn publish_before_connect_is_closed() {
    // [MQTT-3.1.0-1] the first packet MUST be CONNECT; otherwise the connection is closed.
    let b = start().await;
    let mut bad = RawClient::connect(b.addr, V311).await;
    bad.send(&publish("a", b"x", QoS::AtMostOnce, 0)).await;
    assert_eq!(bad.until_closed().await, []);
    round_trip(b.addr).await;
}

#[tokio::test]
async fn oversized_declared_length_gets_0x95_and_close() {
    // MQTT 5.0 §3.1.2.11.4: a packet above the Maximum Packet Size (1 MiB by default) is
    // refused on its declared length, before the body: DISCONNECT 0x95, then close.
    let b = start().await;
    let mut big = RawClient::connect(b.addr, V5).await;
    let ack = connected(&mut big, V5, "big").await;
    assert_eq!(ack.properties.maximum_packet_size, Some(1024 * 1024));
    // A PUBLISH declaring 268 435 455 bytes; none of the body follows.
    big.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    let packets = big.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PACKET_TOO_LARGE),
        "{packets:?}"
    );
    round_trip(b.addr).await;
}

#[tokio::test]
async fn subscribe_flood_is_served_in_order() {
    // Issue #4 hostile input: a flood of SUBSCRIBEs in one write gets every SUBACK, in order.
    let b = start().await;
    let mut c = RawClient::connect(b.addr, V311).await;
    connected(&mut c, V311, "flood").await;
    let mut bytes = Vec::new();
    for i in 1..=500u16 {
        let packet = subscribe(i, &format!("flood/{i}"), QoS::AtMostOnce);
        mqttx_broker::codec::encode(
            &packet,
            &mqttx_broker::codec::EncodeContext::new(V311),
            &mut bytes,
        )
        .expect("encode");
    }
    c.send_raw(&bytes).await;
    for i in 1..=500u16 {
        match c.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.packet_id, pid(i)),
            other => panic!("expected SUBACK {i}, got {other:?}"),
        }
    }
    round_trip(b.addr).await;
}

#[tokio::test]
async fn takeover_sends_0x8e_to_the_old_connection() {
    // [MQTT-3.1.4-3] a second connection with a live client id: the old one gets DISCONNECT
    // 0x8E (Session taken over) and is closed.
    let b = start().await;
    let mut old = RawClient::connect(b.addr, V5).await;
    connected(&mut old, V5, "same-id").await;
    let mut new = RawClient::connect(b.addr, V5).await;
    connected(&mut new, V5, "same-id").await;
    let packets = old.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SESSION_TAKEN_OVER),
        "{packets:?}"
    );
    new.send(&Packet::PingReq).await;
    assert_eq!(new.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn retained_message_at_min_qos_and_cleared_by_empty_payload() {
    // [MQTT-3.3.1-5] a retained message is stored and sent to new subscribers with RETAIN 1,
    // at min(stored QoS, granted QoS); [MQTT-3.3.1-6] an empty retained payload clears it.
    let b = start().await;
    let mut p = RawClient::connect(b.addr, V5).await;
    connected(&mut p, V5, "retainer").await;
    let mut msg = Publish::new("r/1", &b"kept"[..]);
    msg.qos = QoS::ExactlyOnce;
    msg.packet_id = Some(pid(1));
    msg.retain = true;
    p.send(&Packet::Publish(msg)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    p.send(&Packet::PubRel(PubResponse::new(pid(1)))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    assert_eq!(b.broker.retained_count(), 1);

    let mut s = RawClient::connect(b.addr, V5).await;
    connected(&mut s, V5, "late").await;
    s.send(&subscribe(1, "r/+", QoS::AtLeastOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let Some(Packet::Publish(got)) = s.recv().await else {
        panic!("the retained message")
    };
    assert!(got.retain);
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(&got.payload[..], b"kept");

    let mut clear = Publish::new("r/1", &b""[..]);
    clear.retain = true;
    p.send(&Packet::Publish(clear)).await;
    p.send(&Packet::PingReq).await;
    assert_eq!(p.recv().await, Some(Packet::PingResp));
    assert_eq!(b.broker.retained_count(), 0);
}

/// A handler exercising every hook: refuses clients named "intruder", refuses publishing to
/// `secret/#`, refuses subscribing to `private/#`, downgrades every grant to QoS 1, and
/// records disconnects.
#[derive(Default)]
struct Strict {
    disconnects: std::sync::Mutex<Vec<(String, mqttx_broker::CloseReason)>>,
}

impl Handler for Strict {
    type Session = ();

    async fn on_connect(&self, req: &ConnectRequest) -> Result<(), ConnectRefusal> {
        if req.client_id == "intruder" {
            Err(ConnectRefusal::new(ReasonCode::NOT_AUTHORIZED))
        } else {
            Ok(())
        }
    }

    async fn on_publish(&self, _: &(), _: &ClientInfo, message: &Message) -> PublishDecision {
        if message.topic.as_str().starts_with("secret/") {
            PublishDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
        } else {
            PublishDecision::Accept
        }
    }

    async fn on_subscribe(
        &self,
        _: &(),
        _: &ClientInfo,
        filter: &TopicFilter,
        _: &SubscribeOptions,
    ) -> SubscribeDecision {
        if filter.as_str().starts_with("private/") {
            SubscribeDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
        } else {
            SubscribeDecision::Grant(QoS::AtLeastOnce)
        }
    }

    async fn on_disconnect(&self, _: (), client: &ClientInfo, reason: mqttx_broker::CloseReason) {
        if let Ok(mut d) = self.disconnects.lock() {
            d.push((client.client_id.clone(), reason));
        }
    }
}

#[tokio::test]
async fn handler_hooks_decide_with_reason_codes() {
    let server = Broker::builder()
        .config(loopback_config())
        .handler(Strict::default())
        .bind()
        .await
        .expect("bind");
    let b = run(server);

    // on_connect: CONNACK 0x87 (v5), return code 5 (3.1.1).
    let mut c = RawClient::connect(b.addr, V5).await;
    let ack = connected(&mut c, V5, "intruder").await;
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(c.until_closed().await, []);
    let mut c = RawClient::connect(b.addr, V311).await;
    let ack = connected(&mut c, V311, "intruder").await;
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);

    // on_subscribe: per-filter refusal, and a grant lowered to QoS 1.
    let mut c = RawClient::connect(b.addr, V5).await;
    connected(&mut c, V5, "app").await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![
            SubscribeFilter::new("private/x", QoS::AtLeastOnce),
            SubscribeFilter::new("public/#", QoS::ExactlyOnce),
        ]
        .into(),
    }))
    .await;
    let Some(Packet::SubAck(ack)) = c.recv().await else {
        panic!("SUBACK")
    };
    let codes: Vec<ReasonCode> = ack.reason_codes.iter().collect();
    assert_eq!(
        codes,
        [ReasonCode::NOT_AUTHORIZED, ReasonCode::GRANTED_QOS_1]
    );

    // on_publish: PUBACK 0x87, and the message is not routed.
    c.send(&publish("secret/plans", b"x", QoS::AtLeastOnce, 2))
        .await;
    let Some(Packet::PubAck(ack)) = c.recv().await else {
        panic!("PUBACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    c.send(&publish("public/news", b"hello", QoS::ExactlyOnce, 3))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(c.recv().await);
    }
    assert!(got.iter().any(|p| matches!(p, Some(Packet::PubRec(_)))));
    assert!(
        got.iter()
            .any(|p| matches!(p, Some(Packet::Publish(p)) if p.qos == QoS::AtLeastOnce && &*p.topic == "public/news")),
        "{got:?}"
    );

    // on_disconnect: with the reason.
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);
    b.broker.shutdown();
    tokio::time::timeout(WAIT, b.task)
        .await
        .expect("the server stops")
        .expect("no panic")
        .expect("no error");
    let disconnects = b.broker.handler().disconnects.lock().expect("lock").clone();
    assert_eq!(
        disconnects,
        [("app".to_owned(), mqttx_broker::CloseReason::Normal)]
    );
}

#[tokio::test]
async fn graceful_shutdown_sends_0x8b() {
    // Issue #4: shutting down sends DISCONNECT 0x8B (Server shutting down) to MQTT 5.0 clients
    // and the server future returns.
    let b = start().await;
    let mut c = RawClient::connect(b.addr, V5).await;
    connected(&mut c, V5, "bye").await;
    assert_eq!(b.broker.client_count(), 1);
    b.broker.shutdown();
    let packets = c.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SERVER_SHUTTING_DOWN),
        "{packets:?}"
    );
    tokio::time::timeout(WAIT, b.task)
        .await
        .expect("the server stops")
        .expect("no panic")
        .expect("no error");
}

#[tokio::test(start_paused = true)]
async fn keepalive_timeout_with_paused_time() {
    // [MQTT-3.1.2-22] 1.5 × Keep Alive without a packet: DISCONNECT 0x8D and close. Over an
    // in-memory stream with tokio's paused clock: no wall-clock wait.
    let broker = Broker::builder().build();
    let (client_end, server_end) = tokio::io::duplex(4096);
    let task = tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    let mut connect = Connect::new(V5, "sleepy");
    connect.keep_alive = 2;
    c.send(&Packet::Connect(connect)).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    let start = tokio::time::Instant::now();
    let packets = c.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{packets:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    task.await.expect("the driver ends");
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_with_paused_time() {
    // [MQTT-3.1.4-1] / §4.2: no CONNECT within the connect timeout: closed.
    let mut config = loopback_config();
    config.connect_timeout = Duration::from_secs(4);
    let broker = Broker::builder().config(config).build();
    let (client_end, server_end) = tokio::io::duplex(4096);
    let task = tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    let start = tokio::time::Instant::now();
    assert_eq!(c.until_closed().await, []);
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    task.await.expect("the driver ends");
}

fn subscribe_with(
    id: u16,
    filter: &str,
    options: mqttx_broker::codec::SubscriptionOptions,
    subscription_id: Option<u32>,
) -> Packet<'static> {
    let mut properties = mqttx_broker::codec::Props::new();
    if let Some(sid) = subscription_id {
        properties.subscription_identifiers = vec![sid].into();
    }
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties,
        filters: vec![SubscribeFilter {
            filter: filter.to_owned(),
            options,
        }]
        .into(),
    })
}

#[tokio::test]
async fn routing_options_no_local_subscription_ids_overlaps_shared() {
    use mqttx_broker::codec::SubscriptionOptions;
    let b = start().await;

    // A v5 client subscribed twice (overlapping, with identifiers 7 and 9) and once with
    // No Local on a filter it publishes to.
    let mut me = RawClient::connect(b.addr, V5).await;
    connected(&mut me, V5, "me").await;
    me.send(&subscribe_with(
        1,
        "o/+",
        SubscriptionOptions::new(QoS::AtMostOnce),
        Some(7),
    ))
    .await;
    me.send(&subscribe_with(
        2,
        "o/#",
        SubscriptionOptions::new(QoS::AtLeastOnce),
        Some(9),
    ))
    .await;
    let mut no_local = SubscriptionOptions::new(QoS::AtMostOnce);
    no_local.no_local = true;
    me.send(&subscribe_with(3, "mine", no_local, None)).await;
    for _ in 0..3 {
        assert!(matches!(me.recv().await, Some(Packet::SubAck(_))));
    }

    // [MQTT-3.8.3-3] No Local: my own PUBLISH on "mine" is not sent back to me; the ping that
    // follows arrives first.
    me.send(&publish("mine", b"echo?", QoS::AtMostOnce, 0))
        .await;
    me.send(&Packet::PingReq).await;
    assert_eq!(me.recv().await, Some(Packet::PingResp));

    // MQTT 5.0 §4.7 overlapping subscriptions: one copy at the highest QoS with every
    // matching Subscription Identifier [MQTT-3.3.4-3].
    let mut other = RawClient::connect(b.addr, V5).await;
    connected(&mut other, V5, "other").await;
    other
        .send(&publish("o/x", b"both", QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(other.recv().await, Some(Packet::PubAck(_))));
    let Some(Packet::Publish(p)) = me.recv().await else {
        panic!("one copy")
    };
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let mut ids: Vec<u32> = p.properties.subscription_identifiers.iter().collect();
    ids.sort_unstable();
    assert_eq!(ids, [7, 9]);
    me.send(&Packet::PubAck(PubResponse::new(
        p.packet_id.expect("QoS 1"),
    )))
    .await;
    me.send(&Packet::PingReq).await;
    assert_eq!(me.recv().await, Some(Packet::PingResp), "no second copy");

    // MQTT 5.0 §4.8.2 shared subscriptions: each message goes to one member of the group.
    let mut m1 = RawClient::connect(b.addr, V311).await;
    connected(&mut m1, V311, "m1").await;
    let mut m2 = RawClient::connect(b.addr, V311).await;
    connected(&mut m2, V311, "m2").await;
    for m in [&mut m1, &mut m2] {
        m.send(&subscribe(1, "$share/g/jobs/#", QoS::AtMostOnce))
            .await;
        assert!(matches!(m.recv().await, Some(Packet::SubAck(_))));
    }
    for i in 0..4u16 {
        other
            .send(&publish("jobs/1", b"job", QoS::AtLeastOnce, 10 + i))
            .await;
        assert!(matches!(other.recv().await, Some(Packet::PubAck(_))));
    }
    for m in [&mut m1, &mut m2] {
        for _ in 0..2 {
            assert!(matches!(m.recv().await, Some(Packet::Publish(p)) if &*p.topic == "jobs/1"));
        }
        m.send(&Packet::PingReq).await;
        assert_eq!(
            m.recv().await,
            Some(Packet::PingResp),
            "round robin: two each"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retained_message_expiry_with_paused_time() {
    // [MQTT-3.3.2-5] an expired retained message is not delivered; [MQTT-3.3.2-6] one that
    // waited is sent with its Message Expiry Interval lowered by the wait.
    let broker = Broker::builder().build();
    let open = |broker: &Broker| {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(broker.serve(server_end));
        RawClient::new(client_end, V5)
    };
    let mut p = open(&broker);
    connected(&mut p, V5, "p").await;
    let mut msg = Publish::new("exp/1", &b"soon gone"[..]);
    msg.retain = true;
    msg.properties.message_expiry_interval = Some(10);
    p.send(&Packet::Publish(msg)).await;
    p.send(&Packet::PingReq).await;
    assert_eq!(p.recv().await, Some(Packet::PingResp));

    tokio::time::advance(Duration::from_secs(4)).await;
    let mut s = open(&broker);
    connected(&mut s, V5, "s1").await;
    s.send(&subscribe(1, "exp/#", QoS::AtMostOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let Some(Packet::Publish(got)) = s.recv().await else {
        panic!("the retained message")
    };
    assert_eq!(got.properties.message_expiry_interval, Some(6));

    tokio::time::advance(Duration::from_secs(6)).await;
    let mut s = open(&broker);
    connected(&mut s, V5, "s2").await;
    s.send(&subscribe(1, "exp/#", QoS::AtMostOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    s.send(&Packet::PingReq).await;
    assert_eq!(
        s.recv().await,
        Some(Packet::PingResp),
        "expired: not delivered"
    );
    assert_eq!(broker.retained_count(), 0);
}

#[tokio::test]
async fn broker_publishes_lists_and_disconnects_clients() {
    // Issue #4 BrokerHandle: the application publishes to a topic, lists clients, and
    // disconnects one with a reason code (0x98 Administrative action).
    let b = start().await;
    let mut c = RawClient::connect(b.addr, V5).await;
    connected(&mut c, V5, "device-1").await;
    c.send(&subscribe(1, "cmd/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(b.broker.clients(), ["device-1"]);

    let topic = mqttx_broker::router::TopicName::new("cmd/reboot").expect("topic");
    b.broker
        .publish(&Message::new(topic, &b"now"[..], QoS::AtLeastOnce, false));
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("the application's message")
    };
    assert_eq!(
        (&*p.topic, &p.payload[..], p.qos),
        ("cmd/reboot", &b"now"[..], QoS::AtLeastOnce)
    );

    assert!(
        b.broker
            .disconnect_client("device-1", ReasonCode::ADMINISTRATIVE_ACTION)
    );
    assert!(
        !b.broker
            .disconnect_client("nobody", ReasonCode::ADMINISTRATIVE_ACTION)
    );
    let packets = c.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ADMINISTRATIVE_ACTION),
        "{packets:?}"
    );
}

/// Enhanced authentication with a challenge: the client must answer "secret" + the nonce.
struct Challenge;

impl Handler for Challenge {
    type Session = ();

    async fn on_auth(
        &self,
        _client_id: &str,
        req: &mqttx_broker::AuthRequest,
    ) -> mqttx_broker::AuthDecision {
        use mqttx_broker::AuthDecision;
        if req.method != "CHALLENGE" {
            return AuthDecision::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        match req.data.as_deref() {
            Some(b"hello") => AuthDecision::Continue(Some(b"nonce-1"[..].into())),
            Some(b"secret:nonce-1") => AuthDecision::Success(Some(b"welcome"[..].into())),
            _ => AuthDecision::Failure(ReasonCode::NOT_AUTHORIZED),
        }
    }
}

fn auth_packet(code: ReasonCode, data: &'static [u8]) -> Packet<'static> {
    let mut auth = mqttx_broker::codec::Auth {
        reason_code: code,
        properties: Default::default(),
    };
    auth.properties.authentication_method = Some("CHALLENGE".into());
    auth.properties.authentication_data = Some(data.into());
    Packet::Auth(auth)
}

#[tokio::test]
async fn enhanced_authentication_over_tcp() {
    // MQTT 5.0 §4.12 end to end: CONNECT with a method, AUTH 0x18 both ways, CONNACK with the
    // method and the server's last data; a wrong answer gets CONNACK 0x87; the default
    // handler supports no method (0x8C).
    let server = Broker::builder()
        .config(loopback_config())
        .handler(Challenge)
        .bind()
        .await
        .expect("bind");
    let b = run(server);
    for (answer, expected) in [
        (&b"secret:nonce-1"[..], ReasonCode::SUCCESS),
        (&b"guess"[..], ReasonCode::NOT_AUTHORIZED),
    ] {
        let mut c = RawClient::connect(b.addr, V5).await;
        let mut connect = Connect::new(V5, "auth-client");
        connect.properties.authentication_method = Some("CHALLENGE".into());
        connect.properties.authentication_data = Some((&b"hello"[..]).into());
        c.send(&Packet::Connect(connect)).await;
        let Some(Packet::Auth(challenge)) = c.recv().await else {
            panic!("AUTH 0x18")
        };
        assert_eq!(challenge.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
        assert_eq!(
            challenge.properties.authentication_data.as_deref(),
            Some(&b"nonce-1"[..])
        );
        c.send(&auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, answer))
            .await;
        let Some(Packet::ConnAck(ack)) = c.recv().await else {
            panic!("CONNACK")
        };
        assert_eq!(ack.reason_code, expected);
        if expected == ReasonCode::SUCCESS {
            assert_eq!(
                ack.properties.authentication_method.as_deref(),
                Some("CHALLENGE")
            );
            assert_eq!(
                ack.properties.authentication_data.as_deref(),
                Some(&b"welcome"[..])
            );
        } else {
            assert_eq!(c.until_closed().await, []);
        }
    }

    let d = start().await;
    let mut c = RawClient::connect(d.addr, V5).await;
    let mut connect = Connect::new(V5, "auth-client");
    connect.properties.authentication_method = Some("CHALLENGE".into());
    c.send(&Packet::Connect(connect)).await;
    let Some(Packet::ConnAck(ack)) = c.recv().await else {
        panic!("CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
}

#[tokio::test]
async fn outbound_topic_aliases_over_tcp() {
    // [MQTT-3.1.2-26] / MQTT 5.0 §3.3.2.3.4: a subscriber that allows Topic Aliases gets the
    // topic with an alias once, then only the alias. (mosquitto_sub 2.0.11 cannot take an
    // alias-only PUBLISH, a client bug fixed upstream, so this is checked with raw bytes.)
    let b = start().await;
    let mut s = RawClient::connect(b.addr, V5).await;
    let mut connect = Connect::new(V5, "aliased");
    connect.properties.topic_alias_maximum = Some(4);
    s.send(&Packet::Connect(connect)).await;
    assert!(matches!(s.recv().await, Some(Packet::ConnAck(_))));
    s.send(&subscribe(1, "alias/#", QoS::AtMostOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let mut p = RawClient::connect(b.addr, V311).await;
    connected(&mut p, V311, "publisher").await;
    for _ in 0..2 {
        p.send(&publish("alias/long/topic/name", b"x", QoS::AtMostOnce, 0))
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Some(Packet::Publish(m)) = s.recv().await else {
            panic!("PUBLISH")
        };
        seen.push((m.topic.to_string(), m.properties.topic_alias));
    }
    assert_eq!(
        seen,
        [
            ("alias/long/topic/name".to_owned(), Some(1)),
            (String::new(), Some(1))
        ]
    );
}

#[tokio::test]
async fn connection_and_retained_limits() {
    // Issue #4: every limit is finite; past `max_connections` a connection is closed at once,
    // past `max_retained_bytes` a retained message is delivered but not stored.
    let mut config = loopback_config();
    config.max_connections = 1;
    config.max_retained_bytes = 10;
    let b = run(Broker::builder().config(config).bind().await.expect("bind"));
    let mut first = RawClient::connect(b.addr, V311).await;
    connected(&mut first, V311, "first").await;
    let mut second = RawClient::connect(b.addr, V311).await;
    second
        .send(&Packet::Connect(Connect::new(V311, "second")))
        .await;
    assert_eq!(second.until_closed().await, []);

    for (payload, stored) in [(&b"12345"[..], 1), (&b"1234567890"[..], 0)] {
        let mut p = Publish::new("r", payload);
        p.retain = true;
        first.send(&Packet::Publish(p)).await;
        first.send(&Packet::PingReq).await;
        assert_eq!(first.recv().await, Some(Packet::PingResp));
        assert_eq!(b.broker.retained_count(), stored, "{payload:?}");
    }
}

async fn connect_session<S>(
    client: &mut RawClient<S>,
    version: ProtocolVersion,
    id: &str,
    clean: bool,
    expiry: Option<u32>,
) -> ConnAck<'static>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut connect = Connect::new(version, id.to_owned());
    connect.clean_start = clean;
    connect.properties.session_expiry_interval = expiry;
    client.send(&Packet::Connect(connect)).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn persistent_session_offline_queue_and_clean_start() {
    // [MQTT-3.1.2-5] Clean Session 0 resumes the session: Session Present 1 [MQTT-3.2.2-3],
    // its subscriptions still apply, and the QoS 1 messages published while the client was
    // away are delivered in order (QoS 0 ones are not kept). [MQTT-3.1.2-4] Clean Session 1
    // discards it.
    let b = start().await;
    let mut c = RawClient::connect(b.addr, V311).await;
    let ack = connect_session(&mut c, V311, "persist", false, None).await;
    assert!(!ack.session_present);
    c.send(&subscribe(1, "ps/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);

    let mut p = RawClient::connect(b.addr, V311).await;
    connected(&mut p, V311, "feeder").await;
    p.send(&publish("ps/a", b"zero", QoS::AtMostOnce, 0)).await;
    for (i, payload) in [&b"m1"[..], b"m2", b"m3"].into_iter().enumerate() {
        let id = 1 + i as u16;
        p.send(&publish("ps/a", payload, QoS::AtLeastOnce, id))
            .await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    assert_eq!(b.broker.stored_sessions(), 1);

    let mut c = RawClient::connect(b.addr, V311).await;
    let ack = connect_session(&mut c, V311, "persist", false, None).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for _ in 0..3 {
        let Some(Packet::Publish(m)) = c.recv().await else {
            panic!("a queued message")
        };
        got.push(m.payload.to_vec());
        c.send(&Packet::PubAck(PubResponse::new(
            m.packet_id.expect("QoS 1"),
        )))
        .await;
    }
    assert_eq!(got, [b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()]);
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);

    let mut c = RawClient::connect(b.addr, V311).await;
    let ack = connect_session(&mut c, V311, "persist", true, None).await;
    assert!(!ack.session_present);
    p.send(&publish("ps/a", b"after", QoS::AtLeastOnce, 9))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    c.send(&Packet::PingReq).await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PingResp),
        "the subscription is gone"
    );
}

#[tokio::test]
async fn persistent_session_taken_over_by_a_live_reconnect() {
    // [MQTT-3.1.4-3] the old connection gets 0x8E; the new one resumes its session
    // (Session Present 1) and receives on its subscription.
    let b = start().await;
    let mut old = RawClient::connect(b.addr, V5).await;
    connect_session(&mut old, V5, "roamer", false, Some(300)).await;
    old.send(&subscribe(1, "roam/#", QoS::AtLeastOnce)).await;
    assert!(matches!(old.recv().await, Some(Packet::SubAck(_))));
    let mut new = RawClient::connect(b.addr, V5).await;
    let ack = connect_session(&mut new, V5, "roamer", false, Some(300)).await;
    assert!(ack.session_present);
    let packets = old.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SESSION_TAKEN_OVER),
        "{packets:?}"
    );
    let mut p = RawClient::connect(b.addr, V5).await;
    connected(&mut p, V5, "sender").await;
    p.send(&publish("roam/x", b"here", QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    let Some(Packet::Publish(m)) = new.recv().await else {
        panic!("delivered to the new connection")
    };
    assert_eq!(&m.payload[..], b"here");
}

#[tokio::test(start_paused = true)]
async fn session_expiry_with_paused_time() {
    // MQTT 5.0 §3.1.2.11.2: the session is kept for the Session Expiry Interval after the
    // connection closes, then discarded: a later Clean Start 0 gets Session Present 0.
    let broker = Broker::builder().build();
    let open = |broker: &Broker| {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(broker.serve(server_end));
        RawClient::new(client_end, V5)
    };
    for (wait, present) in [(4, true), (6, false)] {
        let mut c = open(&broker);
        connect_session(&mut c, V5, "brief", false, Some(5)).await;
        c.send(&Packet::Disconnect(Disconnect::default())).await;
        assert_eq!(c.until_closed().await, []);
        tokio::time::advance(Duration::from_secs(wait)).await;
        let mut c = open(&broker);
        let ack = connect_session(&mut c, V5, "brief", false, Some(5)).await;
        assert_eq!(ack.session_present, present, "after {wait} s");
        c.send(&Packet::Disconnect(Disconnect::default())).await;
        assert_eq!(c.until_closed().await, []);
        // Start the next round without a session.
        let mut c = open(&broker);
        connect_session(&mut c, V5, "brief", true, None).await;
        c.send(&Packet::Disconnect(Disconnect::default())).await;
        assert_eq!(c.until_closed().await, []);
    }
}

#[tokio::test(start_paused = true)]
async fn will_delay_with_paused_time() {
    // MQTT 5.0 §3.1.3.2.2: the Will waits for the Will Delay Interval (or the end of the
    // session); [MQTT-3.1.3-9] a reconnect to the session before then cancels it.
    let broker = Broker::builder().build();
    let open = |broker: &Broker| {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(broker.serve(server_end));
        RawClient::new(client_end, V5)
    };
    let mut watcher = open(&broker);
    connected(&mut watcher, V5, "watcher").await;
    watcher
        .send(&subscribe(1, "wills/#", QoS::AtMostOnce))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));

    let with_will = |id: &str| {
        let mut connect = Connect::new(V5, id.to_owned());
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(60);
        let mut will = mqttx_broker::codec::Will {
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
            topic: format!("wills/{id}").into(),
            payload: (&b"gone"[..]).into(),
        };
        will.properties.will_delay_interval = Some(5);
        connect.will = Some(Box::new(will));
        Packet::Connect(connect)
    };

    // Dropped connection, no reconnect: the Will arrives after 5 s, not before.
    let mut c = open(&broker);
    c.send(&with_will("late")).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    drop(c);
    tokio::time::advance(Duration::from_secs(3)).await;
    watcher.send(&Packet::PingReq).await;
    assert_eq!(watcher.recv().await, Some(Packet::PingResp), "not yet");
    tokio::time::advance(Duration::from_secs(3)).await;
    let Some(Packet::Publish(will)) = watcher.recv().await else {
        panic!("the delayed Will")
    };
    assert_eq!(&*will.topic, "wills/late");

    // Dropped, then back within the delay: no Will.
    let mut c = open(&broker);
    c.send(&with_will("back")).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    drop(c);
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut c = open(&broker);
    c.send(&with_will("back")).await;
    let Some(Packet::ConnAck(ack)) = c.recv().await else {
        panic!("CONNACK")
    };
    assert!(ack.session_present);
    tokio::time::advance(Duration::from_secs(10)).await;
    watcher.send(&Packet::PingReq).await;
    assert_eq!(watcher.recv().await, Some(Packet::PingResp), "no Will");
}

/// Records expired sessions.
#[derive(Default)]
struct Expiries(std::sync::Mutex<Vec<String>>);

impl Handler for Expiries {
    type Session = ();

    async fn on_session_expired(&self, client_id: &str) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(client_id.to_owned());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn on_session_expired_with_paused_time() {
    // Issue #4 `on_session_expired`: called once the Session Expiry Interval has passed.
    let broker = Broker::builder().handler(Expiries::default()).build();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    connect_session(&mut c, V5, "ephemeral", false, Some(2)).await;
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);
    assert_eq!(broker.stored_sessions(), 1);
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(broker.stored_sessions(), 0);
    // The hook runs on a task of its own: let it.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let seen = broker.handler().0.lock().expect("lock").clone();
    assert_eq!(seen, ["ephemeral"]);
}

#[tokio::test]
async fn broker_publishes_to_one_client() {
    // Issue #4 BrokerHandle: publish to one client, not to the others on the same topic.
    let b = start().await;
    let mut one = RawClient::connect(b.addr, V5).await;
    connected(&mut one, V5, "one").await;
    let mut two = RawClient::connect(b.addr, V311).await;
    connected(&mut two, V311, "two").await;
    two.send(&subscribe(1, "direct/#", QoS::AtMostOnce)).await;
    assert!(matches!(two.recv().await, Some(Packet::SubAck(_))));
    let topic = mqttx_broker::router::TopicName::new("direct/note").expect("topic");
    let message = Message::new(topic, &b"just you"[..], QoS::AtLeastOnce, false);
    assert!(b.broker.publish_to("one", &message));
    assert!(!b.broker.publish_to("nobody", &message));
    let Some(Packet::Publish(p)) = one.recv().await else {
        panic!("the direct message")
    };
    assert_eq!(
        (&p.payload[..], p.qos),
        (&b"just you"[..], QoS::AtLeastOnce)
    );
    two.send(&Packet::PingReq).await;
    assert_eq!(
        two.recv().await,
        Some(Packet::PingResp),
        "not routed to subscribers"
    );
}

/// Records acknowledged deliveries.
#[derive(Default)]
struct Receipts(std::sync::Mutex<Vec<(String, String)>>);

impl Handler for Receipts {
    type Session = ();

    async fn on_delivered(&self, _: &(), client: &ClientInfo, delivered: &mqttx_broker::Delivered) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((client.client_id.clone(), delivered.topic().to_owned()));
        }
    }
}

#[tokio::test]
async fn on_delivered_after_puback() {
    // Issue #4 `on_delivered`: called when the client acknowledged a message the broker sent.
    let server = Broker::builder()
        .config(loopback_config())
        .handler(Receipts::default())
        .bind()
        .await
        .expect("bind");
    let b = run(server);
    let mut s = RawClient::connect(b.addr, V311).await;
    connected(&mut s, V311, "receiver").await;
    s.send(&subscribe(1, "receipts/#", QoS::AtLeastOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let mut p = RawClient::connect(b.addr, V311).await;
    connected(&mut p, V311, "sender").await;
    p.send(&publish("receipts/1", b"x", QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    let Some(Packet::Publish(m)) = s.recv().await else {
        panic!("the message")
    };
    s.send(&Packet::PubAck(PubResponse::new(
        m.packet_id.expect("QoS 1"),
    )))
    .await;
    s.send(&Packet::PingReq).await;
    assert_eq!(s.recv().await, Some(Packet::PingResp));
    let seen = b.broker.handler().0.lock().expect("lock").clone();
    assert_eq!(seen, [("receiver".to_owned(), "receipts/1".to_owned())]);
}

#[tokio::test]
async fn persistent_session_resumed_in_another_protocol_version() {
    // A session kept for an MQTT 3.1.1 client resumed by the same client id in MQTT 5.0: the
    // subscriptions carry over; messages encoded for 3.1.1 are not sent to the 5.0 client.
    let b = start().await;
    let mut c = RawClient::connect(b.addr, V311).await;
    connect_session(&mut c, V311, "switcher", false, None).await;
    c.send(&subscribe(1, "sw/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);
    let mut p = RawClient::connect(b.addr, V311).await;
    connected(&mut p, V311, "sw-feeder").await;
    p.send(&publish("sw/1", b"for 3.1.1", QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));

    let mut c = RawClient::connect(b.addr, V5).await;
    let ack = connect_session(&mut c, V5, "switcher", false, Some(60)).await;
    assert!(ack.session_present);
    p.send(&publish("sw/2", b"live", QoS::AtLeastOnce, 2)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    let Some(Packet::Publish(m)) = c.recv().await else {
        panic!("the live message, well-formed for MQTT 5.0")
    };
    assert_eq!(&m.payload[..], b"live");
}

#[tokio::test]
async fn slow_subscriber_is_bounded_and_others_are_served() {
    // Issue #4: a subscriber that never reads does not grow the broker's memory without
    // bound: past its queue limits QoS 0 messages are dropped and counted, and the publisher
    // and other clients keep being served.
    let mut config = loopback_config();
    config.max_queued_messages = 100;
    let b = run(Broker::builder().config(config).bind().await.expect("bind"));
    let mut stuck = RawClient::connect(b.addr, V311).await;
    connected(&mut stuck, V311, "stuck").await;
    stuck.send(&subscribe(1, "flood/#", QoS::AtMostOnce)).await;
    assert!(matches!(stuck.recv().await, Some(Packet::SubAck(_))));
    // From here on `stuck` reads nothing.

    let mut p = RawClient::connect(b.addr, V311).await;
    connected(&mut p, V311, "flooder").await;
    let payload: &'static [u8] = &[0x55; 4096];
    let mut batch = Vec::new();
    let cx = mqttx_broker::codec::EncodeContext::new(V311);
    mqttx_broker::codec::encode(
        &publish("flood/x", payload, QoS::AtMostOnce, 0),
        &cx,
        &mut batch,
    )
    .expect("encode");
    let batch = batch.repeat(256); // 1 MiB per write
    for _ in 0..64 {
        p.send_raw(&batch).await;
    }
    p.send(&Packet::PingReq).await;
    assert_eq!(
        p.recv().await,
        Some(Packet::PingResp),
        "the publisher is still served"
    );
    // 16 384 messages (64 MiB) went to a client that read none. It holds at most 100 in its
    // queue, 100 in its channel, 64 KiB being written and what the sockets buffer (a few MiB):
    // the rest was dropped, not kept.
    assert!(
        b.broker.dropped_messages() > 10_000,
        "{}",
        b.broker.dropped_messages()
    );
    round_trip(b.addr).await;
    drop(stuck);
}

/// A session store that records the calls it gets and keeps sessions in a [`MemoryStore`].
#[derive(Debug, Default)]
struct RecordingStore {
    calls: std::sync::Mutex<Vec<String>>,
    inner: MemoryStore,
}

impl RecordingStore {
    fn record(&self, call: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl SessionStore for RecordingStore {
    fn save<'a>(
        &'a self,
        client_id: &'a str,
        session: StoredSession,
    ) -> StoreFuture<'a, std::io::Result<()>> {
        let filters: Vec<String> = session
            .subscriptions
            .iter()
            .map(|(f, o)| format!("{}@{:?}", f.as_str(), o.qos))
            .collect();
        self.record(format!(
            "save {client_id} {} expires={}",
            filters.join(","),
            session.expires_at.is_some()
        ));
        self.inner.save(client_id, session)
    }

    fn enqueue<'a>(
        &'a self,
        client_id: &'a str,
        now: std::time::Instant,
        message: Outbound,
        limits: QueueLimits,
    ) -> StoreFuture<'a, std::io::Result<bool>> {
        self.record(format!("enqueue {client_id}"));
        self.inner.enqueue(client_id, now, message, limits)
    }

    fn take<'a>(
        &'a self,
        client_id: &'a str,
    ) -> StoreFuture<'a, std::io::Result<Option<StoredSession>>> {
        self.record(format!("take {client_id}"));
        self.inner.take(client_id)
    }

    fn remove<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, std::io::Result<()>> {
        self.record(format!("remove {client_id}"));
        self.inner.remove(client_id)
    }
}

#[tokio::test]
async fn persistent_sessions_go_through_the_session_store() {
    // Issue #4: sessions are kept "behind a store trait that a later issue makes durable".
    // The broker saves a closing persistent session (subscriptions with options, expiry,
    // state), queues offline messages into it, takes it back on resume and removes it on
    // Clean Start.
    let store = Arc::new(RecordingStore::default());
    let broker = Broker::builder()
        .session_store(Arc::clone(&store) as Arc<dyn SessionStore>)
        .build();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    connect_session(&mut c, V5, "kept", false, Some(60)).await;
    c.send(&subscribe(1, "st/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);
    broker.publish(&Message::new(
        TopicName::new("st/a").expect("topic"),
        &b"away"[..],
        QoS::AtLeastOnce,
        false,
    ));
    let saved = ["save kept st/#@AtLeastOnce expires=true", "enqueue kept"];
    tokio::time::timeout(WAIT, async {
        while store.calls().len() < saved.len() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the store task ran");
    assert_eq!(store.calls(), saved);
    assert_eq!(store.inner.len(), 1);

    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    let ack = connect_session(&mut c, V5, "kept", false, Some(60)).await;
    assert!(ack.session_present);
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("the queued message")
    };
    assert_eq!(&p.payload[..], b"away");
    assert!(store.inner.is_empty(), "taken");
    c.send(&Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(c.until_closed().await, []);

    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    let ack = connect_session(&mut c, V5, "kept", true, None).await;
    assert!(!ack.session_present);
    tokio::time::timeout(WAIT, async {
        while !store.calls().iter().any(|c| c.starts_with("remove")) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the store task ran");
    let calls = store.calls();
    assert_eq!(
        calls.get(2..).unwrap_or_default(),
        [
            "take kept",
            "save kept st/#@AtLeastOnce expires=true",
            "remove kept"
        ]
    );
    assert!(store.inner.is_empty());
}

/// Names every client after its user name.
struct NamesByUser;

impl Handler for NamesByUser {
    type Session = ();

    async fn on_connect(&self, req: &ConnectRequest) -> Result<(), ConnectRefusal> {
        if let Some(user) = &req.username {
            assert!(req.assign_client_id(format!("user-{user}")));
            assert!(!req.assign_client_id("second"), "the first assignment wins");
        }
        Ok(())
    }
}

#[tokio::test]
async fn on_connect_assigns_a_client_id() {
    // Issue #4 `on_connect`: "accept, refuse with a reason code, or assign a client id";
    // MQTT 5.0 §3.2.2.3.7 Assigned Client Identifier tells a v5 client, a 3.1.1 client is
    // not told but the broker uses it.
    let server = Broker::builder()
        .config(loopback_config())
        .handler(NamesByUser)
        .bind()
        .await
        .expect("bind");
    let b = run(server);
    for (version, user) in [(V5, "ann"), (V311, "bob")] {
        let mut c = RawClient::connect(b.addr, version).await;
        let mut connect = Connect::new(version, "own-id");
        connect.username = Some(user.into());
        c.send(&Packet::Connect(connect)).await;
        let Some(Packet::ConnAck(ack)) = c.recv().await else {
            panic!("CONNACK")
        };
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        let expected = format!("user-{user}");
        let told = ack
            .properties
            .assigned_client_identifier
            .as_ref()
            .map(|id| id.to_string());
        assert_eq!(told, (version == V5).then(|| expected.clone()));
        assert!(
            b.broker.clients().contains(&expected),
            "{:?}",
            b.broker.clients()
        );
        assert!(!b.broker.clients().contains(&"own-id".to_owned()));
    }
}

/// The application's messages to one connection, decided by `on_message`.
#[derive(Debug)]
enum Downlink {
    Command(&'static str),
    Kick,
}

/// Turns [`Downlink`]s into a PUBLISH to the client or a DISCONNECT with properties; ignores
/// anything else.
struct Bridge;

impl Handler for Bridge {
    type Session = ();

    async fn on_message(
        &self,
        _: &(),
        client: &ClientInfo,
        message: mqttx_broker::AppMessage,
    ) -> mqttx_broker::MessageAction {
        use mqttx_broker::{MessageAction, ServerDisconnect};
        match message.downcast::<Downlink>().map(|m| *m) {
            Ok(Downlink::Command(command)) => {
                let topic =
                    TopicName::new(&format!("devices/{}/cmd", client.client_id)).expect("topic");
                MessageAction::Publish(Message::new(topic, command, QoS::AtLeastOnce, false))
            }
            Ok(Downlink::Kick) => MessageAction::Disconnect(
                ServerDisconnect::new(ReasonCode::USE_ANOTHER_SERVER)
                    .reason_string("moving you")
                    .user_property("region", "eu")
                    .server_reference("127.0.0.1:1884"),
            ),
            Err(_) => MessageAction::None,
        }
    }
}

#[tokio::test]
async fn on_message_publishes_to_and_disconnects_one_client() {
    // Issue #4 `Handler::on_message` and `Broker::send_to`: the application's own messages
    // reach one connection in order, and the handler turns them into a PUBLISH (queued like
    // any other, acknowledged by the client) or a DISCONNECT with Reason String, User
    // Property and Server Reference (MQTT 5.0 §3.14.2.2). Other clients are unaffected.
    let b = run(Broker::builder()
        .config(loopback_config())
        .handler(Bridge)
        .bind()
        .await
        .expect("bind"));
    let mut c = RawClient::connect(b.addr, V5).await;
    connected(&mut c, V5, "dev-1").await;
    let mut other = RawClient::connect(b.addr, V5).await;
    connected(&mut other, V5, "dev-2").await;

    assert!(!b.broker.send_to("nobody", Downlink::Kick));
    // A message of a type the handler does not know is ignored.
    assert!(b.broker.send_to("dev-1", 42_u32));
    assert!(b.broker.send_to("dev-1", Downlink::Command("reboot")));
    assert!(b.broker.send_to("dev-1", Downlink::Command("blink")));
    for expected in ["reboot", "blink"] {
        let Some(Packet::Publish(p)) = c.recv().await else {
            panic!("the handler's PUBLISH")
        };
        assert_eq!(
            (&*p.topic, &p.payload[..], p.qos),
            ("devices/dev-1/cmd", expected.as_bytes(), QoS::AtLeastOnce)
        );
        let id = p.packet_id.expect("QoS 1 has a packet id");
        c.send(&Packet::PubAck(PubResponse::new(id))).await;
    }

    assert!(b.broker.send_to("dev-1", Downlink::Kick));
    let packets = c.until_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else {
        panic!("one DISCONNECT, got {packets:?}")
    };
    assert_eq!(d.reason_code, ReasonCode::USE_ANOTHER_SERVER);
    assert_eq!(d.properties.reason_string.as_deref(), Some("moving you"));
    assert_eq!(
        d.properties.server_reference.as_deref(),
        Some("127.0.0.1:1884")
    );
    let user: Vec<_> = d
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(user, [("region".to_owned(), "eu".to_owned())]);

    // The other client still works, and can be disconnected with properties by the handle.
    round_trip(b.addr).await;
    assert!(
        b.broker.disconnect_client_with(
            "dev-2",
            mqttx_broker::ServerDisconnect::new(ReasonCode::ADMINISTRATIVE_ACTION)
                .reason_string("maintenance"),
        )
    );
    let packets = other.until_closed().await;
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)]
            if d.reason_code == ReasonCode::ADMINISTRATIVE_ACTION
                && d.properties.reason_string.as_deref() == Some("maintenance")),
        "{packets:?}"
    );
}

/// Records `on_unsubscribe` calls and refuses every message (Wills included) under
/// `wills/denied/`.
#[derive(Default)]
struct Recorder {
    unsubscribed: std::sync::Mutex<Vec<(String, String)>>,
}

impl Handler for Recorder {
    type Session = ();

    async fn on_publish(&self, _: &(), _: &ClientInfo, message: &Message) -> PublishDecision {
        if message.topic.as_str().starts_with("wills/denied/") {
            PublishDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
        } else {
            PublishDecision::Accept
        }
    }

    async fn on_unsubscribe(&self, _: &(), client: &ClientInfo, filter: &TopicFilter) {
        if let Ok(mut u) = self.unsubscribed.lock() {
            u.push((client.client_id.clone(), filter.as_str().to_owned()));
        }
    }
}

#[tokio::test]
async fn on_unsubscribe_and_a_will_refused_by_on_publish() {
    // Issue #4: `on_unsubscribe` is called for the filter removed; a Will goes through
    // `on_publish` like any PUBLISH, and a refused (retained) Will is neither delivered nor
    // retained.
    let b = run(Broker::builder()
        .config(loopback_config())
        .handler(Recorder::default())
        .bind()
        .await
        .expect("bind"));
    let mut watcher = RawClient::connect(b.addr, V5).await;
    connected(&mut watcher, V5, "watcher").await;
    watcher
        .send(&subscribe(1, "wills/#", QoS::AtLeastOnce))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));

    // UNSUBSCRIBE: 0x00 for the filter that existed, 0x11 for the one that did not.
    watcher
        .send(&subscribe(2, "extra/+", QoS::AtMostOnce))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    watcher
        .send(&Packet::Unsubscribe(mqttx_broker::codec::Unsubscribe {
            packet_id: pid(3),
            properties: Default::default(),
            filters: vec!["extra/+".to_owned(), "never/subscribed".to_owned()].into(),
        }))
        .await;
    let Some(Packet::UnsubAck(ack)) = watcher.recv().await else {
        panic!("UNSUBACK")
    };
    let codes: Vec<ReasonCode> = ack.reason_codes.iter().collect();
    assert_eq!(
        codes,
        [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let unsubscribed = b
        .broker
        .handler()
        .unsubscribed
        .lock()
        .expect("lock")
        .clone();
    assert!(
        unsubscribed.contains(&("watcher".to_owned(), "extra/+".to_owned())),
        "{unsubscribed:?}"
    );

    // A client whose retained Will the handler refuses loses its connection.
    let mut doomed = RawClient::connect(b.addr, V5).await;
    let mut connect = Connect::new(V5, "doomed".to_owned());
    connect.will = Some(Box::new(mqttx_broker::codec::Will {
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
        topic: "wills/denied/doomed".into(),
        payload: (&b"gone"[..]).into(),
    }));
    doomed.send(&Packet::Connect(connect)).await;
    assert!(matches!(doomed.recv().await, Some(Packet::ConnAck(_))));
    drop(doomed);
    // The marker, published after the connection was lost, is the first thing the watcher
    // sees once the broker has dealt with the Will: wait until it has.
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.broker.clients().contains(&"doomed".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker notices the close"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut marker = RawClient::connect(b.addr, V5).await;
    connected(&mut marker, V5, "marker").await;
    marker
        .send(&publish("wills/ok", b"marker", QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(marker.recv().await, Some(Packet::PubAck(_))));
    let Some(Packet::Publish(p)) = watcher.recv().await else {
        panic!("the marker")
    };
    assert_eq!((&*p.topic, &p.payload[..]), ("wills/ok", &b"marker"[..]));
    assert_eq!(b.broker.retained_count(), 0);
}
