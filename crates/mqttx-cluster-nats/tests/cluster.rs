//! Three brokers joined by `NatsCluster` on one real nats-server (`support::nats`): messages
//! across nodes at QoS 0, 1 and 2, `#` matching its parent level, `$` topics, overlapping
//! filters delivering once, a shared group spread over two nodes, retained messages, and a
//! QoS 1 PUBACK held while the engine is stopped with SIGSTOP.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqttx_broker::codec::{
    Connect, DecodeContext, Decoder, EncodeContext, OwnedPacket, Packet, PacketId, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter, encode,
};
use mqttx_broker::{Broker, Config};
use mqttx_cluster_nats::{NatsCluster, NatsClusterOptions};
use support::nats::NatsServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bounds every wait.
const TIMEOUT: Duration = Duration::from_secs(10);
const V5: ProtocolVersion = ProtocolVersion::V5;

struct Node {
    addr: SocketAddr,
    broker: Broker,
    cluster: Arc<NatsCluster>,
}

async fn node(server: &NatsServer, id: &str) -> Node {
    node_with(
        server,
        NatsClusterOptions::new(server.url(), id).connect_timeout(Duration::from_secs(2)),
    )
    .await
}

async fn node_with(server: &NatsServer, options: NatsClusterOptions) -> Node {
    let id = options_id(&options);
    let cluster = NatsCluster::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}\n{}", server.log()));
    let mut config = Config::default();
    config.bind = ([127, 0, 0, 1], 0).into();
    let bound = Broker::builder()
        .config(config)
        .cluster(Arc::clone(&cluster) as Arc<dyn mqttx_broker::Cluster>)
        .bind()
        .await
        .expect("bind");
    let addr = bound.local_addr().expect("address");
    let broker = bound.broker().clone();
    tokio::spawn(bound.run());
    Node {
        addr,
        broker,
        cluster,
    }
}

async fn three(server: &NatsServer) -> [Node; 3] {
    [
        node(server, "n1").await,
        node(server, "n2").await,
        node(server, "n3").await,
    ]
}

/// The node id of `options`, for messages.
fn options_id(options: &NatsClusterOptions) -> String {
    format!("{options:?}")
}

struct Raw {
    stream: tokio::net::TcpStream,
    decoder: Decoder,
}

impl Raw {
    async fn connect(addr: SocketAddr, id: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = Self {
            stream,
            decoder: Decoder::new(DecodeContext::new(V5)),
        };
        raw.send(&Packet::Connect(Connect::new(V5, id.to_owned())))
            .await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn send(&mut self, packet: &Packet<'_>) {
        let mut bytes = Vec::new();
        encode(packet, &EncodeContext::new(V5), &mut bytes).expect("encode");
        self.stream.write_all(&bytes).await.expect("write");
    }

    async fn recv(&mut self) -> Option<OwnedPacket> {
        self.recv_within(TIMEOUT)
            .await
            .expect("an answer within the timeout")
    }

    /// The next packet within `wait` (`Err` when none came), `Ok(None)` at the end.
    async fn recv_within(&mut self, wait: Duration) -> Result<Option<OwnedPacket>, ()> {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(p) = self.decoder.next_packet().expect("valid packet") {
                return Ok(Some(p));
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .map_err(|_| ())?
                .unwrap_or(0);
            if n == 0 {
                return Ok(None);
            }
            self.decoder.feed(&buf[..n]);
        }
    }

    async fn subscribe(&mut self, id: u16, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(id).unwrap(),
            properties: Default::default(),
            filters: vec![SubscribeFilter::new(filter, qos)].into(),
        }))
        .await;
        assert!(
            matches!(self.recv().await, Some(Packet::SubAck(_))),
            "SUBACK for {filter}"
        );
    }

    /// Publishes and waits for the acknowledgement (QoS 2: through PUBCOMP).
    async fn publish(&mut self, topic: &str, payload: &'static [u8], qos: QoS, id: u16) {
        let mut p = Publish::new(topic.to_owned(), payload);
        p.qos = qos;
        p.packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap());
        self.send(&Packet::Publish(p)).await;
        let Some(pid) = PacketId::new(id).filter(|_| qos != QoS::AtMostOnce) else {
            return;
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                assert_eq!(
                    self.recv().await,
                    Some(Packet::PubAck(PubResponse::new(pid)))
                );
            }
            QoS::ExactlyOnce => {
                assert!(matches!(self.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid));
                self.send(&Packet::PubRel(PubResponse::new(pid))).await;
                assert!(
                    matches!(self.recv().await, Some(Packet::PubComp(r)) if r.packet_id == pid)
                );
            }
        }
    }

    /// The next PUBLISH (acknowledged as its QoS asks; a PUBREL met on the way is answered):
    /// topic and payload.
    async fn message(&mut self) -> (String, String) {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    if let Some(id) = p.packet_id {
                        let ack = match p.qos {
                            QoS::ExactlyOnce => Packet::PubRec(PubResponse::new(id)),
                            _ => Packet::PubAck(PubResponse::new(id)),
                        };
                        self.send(&ack).await;
                    }
                    return (
                        p.topic.to_string(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    );
                }
                Some(Packet::PubRel(r)) => {
                    self.send(&Packet::PubComp(PubResponse::new(r.packet_id)))
                        .await;
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    /// Nothing but PUBRELs (answered) arrives within `ms` milliseconds.
    async fn silent(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(wait).await {
                Err(()) => return,
                Ok(Some(Packet::PubRel(r))) => {
                    self.send(&Packet::PubComp(PubResponse::new(r.packet_id)))
                        .await;
                }
                got => panic!("expected nothing, got {got:?}"),
            }
        }
    }
}

#[tokio::test]
async fn messages_cross_nodes_at_every_qos() {
    let server = NatsServer::start();
    let [n1, n2, n3] = three(&server).await;
    let mut sub = Raw::connect(n3.addr, "sub").await;
    sub.subscribe(1, "a/#", QoS::ExactlyOnce).await;
    sub.subscribe(2, "a/+", QoS::AtLeastOnce).await; // overlaps a/#
    sub.subscribe(3, "#", QoS::AtMostOnce).await; // overlaps both, not $ topics
    let mut other = Raw::connect(n2.addr, "other").await;
    other.subscribe(1, "a", QoS::AtLeastOnce).await;

    let mut publ = Raw::connect(n1.addr, "pub").await;
    publ.publish("a", b"parent q0", QoS::AtMostOnce, 0).await;
    publ.publish("a/b", b"child q1", QoS::AtLeastOnce, 1).await;
    publ.publish("a/c", b"child q2", QoS::ExactlyOnce, 2).await;
    publ.publish("$SYS/x", b"dollar", QoS::AtLeastOnce, 3).await;
    publ.publish("z", b"end", QoS::AtLeastOnce, 4).await;

    // Each message once, in order, at the subscriber on n3; `$SYS/x` not through `#`.
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(sub.message().await);
    }
    let pairs: Vec<(&str, &str)> = got.iter().map(|(t, p)| (t.as_str(), p.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("a", "parent q0"),
            ("a/b", "child q1"),
            ("a/c", "child q2"),
            ("z", "end")
        ]
    );
    sub.silent(200).await;
    assert_eq!(other.message().await, ("a".into(), "parent q0".into()));
    other.silent(0).await;
    assert_eq!(n3.cluster.dropped(), 0);
    drop((n1, n2, n3));
}

#[tokio::test]
async fn a_shared_group_over_two_nodes_gets_each_message_once() {
    let server = NatsServer::start();
    let [n1, n2, n3] = three(&server).await;
    let mut m1 = Raw::connect(n1.addr, "m1").await;
    m1.subscribe(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
    let mut m3 = Raw::connect(n3.addr, "m3").await;
    m3.subscribe(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(n1.addr, "pub").await;
    const N: u16 = 40;
    for i in 1..=N {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        publ.publish("jobs/x", b"job", qos, i).await;
    }
    publ.publish("end/x", b"end", QoS::AtLeastOnce, N + 1).await;
    // Count what each member got until both stay silent.
    let (mut a, mut b) = (0u16, 0u16);
    loop {
        tokio::select! {
            r = m1.recv_within(Duration::from_millis(500)) => match r {
                Ok(Some(Packet::Publish(p))) => {
                    if let Some(id) = p.packet_id {
                        m1.send(&Packet::PubAck(PubResponse::new(id))).await;
                    }
                    a += 1;
                }
                Err(()) => break,
                other => panic!("{other:?}"),
            },
            r = m3.recv_within(Duration::from_millis(500)) => match r {
                Ok(Some(Packet::Publish(p))) => {
                    if let Some(id) = p.packet_id {
                        m3.send(&Packet::PubAck(PubResponse::new(id))).await;
                    }
                    b += 1;
                }
                Err(()) => break,
                other => panic!("{other:?}"),
            },
        }
        if a + b > N {
            break;
        }
    }
    assert_eq!(
        a + b,
        N,
        "each message once across the group ({a} on n1, {b} on n3)"
    );
    assert!(a > 0 && b > 0, "spread over both nodes: {a} and {b}");
    drop((n1, n2, n3));
}

#[tokio::test]
async fn a_shared_message_goes_to_another_member_only_when_its_member_did_not_take_it() {
    let server = NatsServer::start();
    // The engine takes a node for dead when a group message goes unacknowledged for 3 s.
    let options = |id: &str| {
        NatsClusterOptions::new(server.url(), id)
            .connect_timeout(Duration::from_secs(2))
            .shared_ack_wait(Duration::from_secs(3))
    };
    let n1 = node_with(&server, options("n1")).await;
    let n2 = node_with(&server, options("n2")).await;
    let n3 = node_with(&server, options("n3")).await;
    // The group's only member, on n1, gets the message and leaves without a PUBACK.
    let mut quitter = Raw::connect(n1.addr, "quitter").await;
    quitter
        .subscribe(1, "$share/g/work", QoS::AtLeastOnce)
        .await;
    let mut publ = Raw::connect(n3.addr, "pub").await;
    publ.publish("work", b"task", QoS::AtLeastOnce, 1).await;
    match quitter.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"task"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // Another member joins on n2, then the first one's connection ends with its session: n1
    // refuses the message at once, well before the acknowledgement wait runs out.
    let mut worker = Raw::connect(n2.addr, "worker").await;
    worker.subscribe(1, "$share/g/work", QoS::AtLeastOnce).await;
    worker.silent(300).await;
    drop(quitter);
    let id = match worker.recv_within(Duration::from_millis(2500)).await {
        Ok(Some(Packet::Publish(p))) => {
            assert_eq!(&p.payload[..], b"task");
            p.packet_id.expect("QoS 1")
        }
        other => panic!("expected the message again, got {other:?}"),
    };
    // A member that takes longer than the acknowledgement wait to answer keeps the message:
    // its node tells the engine it is in progress, so nobody else gets it meanwhile.
    let mut late = Raw::connect(n1.addr, "late").await;
    late.subscribe(1, "$share/g/work", QoS::AtLeastOnce).await;
    tokio::join!(worker.silent(4500), late.silent(4500));
    worker.send(&Packet::PubAck(PubResponse::new(id))).await;
    // Acknowledged: nobody gets it again.
    tokio::join!(worker.silent(1000), late.silent(1000));
}

#[tokio::test]
async fn the_cluster_works_again_once_the_engine_restarts() {
    let mut server = NatsServer::start();
    let [n1, n2, _n3] = three(&server).await;
    let mut sub = Raw::connect(n2.addr, "sub").await;
    sub.subscribe(1, "r/#", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(n1.addr, "pub").await;
    publ.publish("r/1", b"before", QoS::AtLeastOnce, 1).await;
    assert_eq!(sub.message().await, ("r/1".into(), "before".into()));

    // The engine crashes and comes back (same port, same JetStream directory). Clients stay
    // connected; a QoS 1 PUBLISH is acknowledged once the engine has it again.
    server.restart();
    publ.publish("r/2", b"after", QoS::AtLeastOnce, 2).await;
    // At least once: n2's acknowledgement of r/1 may not have reached the engine's disk.
    let mut next = sub.message().await;
    if next == ("r/1".into(), "before".into()) {
        next = sub.message().await;
    }
    assert_eq!(next, ("r/2".into(), "after".into()));
    // QoS 0 crosses nodes again (the nodes' NATS subscriptions are made again).
    let mut crossed = false;
    for i in 0..50 {
        publ.publish("r/0", b"ping", QoS::AtMostOnce, 0).await;
        if let Ok(Some(Packet::Publish(p))) = sub.recv_within(Duration::from_millis(100)).await {
            assert_eq!(&*p.topic, "r/0", "after {i} tries");
            crossed = true;
            break;
        }
    }
    assert!(crossed, "QoS 0 crosses nodes after the restart");
    // A retained message set on n1 now is seen by a new subscriber on n2 (the bucket's watch
    // goes on), and new clients are accepted.
    let mut p = Publish::new("cfg/x".to_owned(), &b"on"[..]);
    p.qos = QoS::AtLeastOnce;
    p.retain = true;
    p.packet_id = PacketId::new(3);
    publ.send(&Packet::Publish(p)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let mut seen = false;
    for i in 0..50u16 {
        let mut late = Raw::connect(n2.addr, &format!("late{i}")).await;
        late.subscribe(1, "cfg/#", QoS::AtLeastOnce).await;
        if let Ok(Some(Packet::Publish(p))) = late.recv_within(Duration::from_millis(100)).await {
            assert_eq!((&*p.topic, &p.payload[..]), ("cfg/x", &b"on"[..]));
            seen = true;
            break;
        }
    }
    assert!(seen, "the retained message reached n2 after the restart");
}

#[tokio::test]
async fn retained_messages_reach_other_nodes_and_are_cleared() {
    let server = NatsServer::start();
    let [n1, _n2, n3] = three(&server).await;
    let mut publ = Raw::connect(n1.addr, "retainer").await;
    let mut p = Publish::new("home/temp".to_owned(), &b"21"[..]);
    p.retain = true;
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(1);
    publ.send(&Packet::Publish(p)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while n3.broker.retained_count() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "mirrored in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sub = Raw::connect(n3.addr, "late").await;
    sub.subscribe(1, "home/#", QoS::AtLeastOnce).await;
    assert_eq!(sub.message().await, ("home/temp".into(), "21".into()));

    // A fourth node started now loads it at connect.
    let n4 = node(&server, "n4").await;
    assert_eq!(n4.broker.retained_count(), 1);

    let mut clear = Publish::new("home/temp".to_owned(), &b""[..]);
    clear.retain = true;
    publ.send(&Packet::Publish(clear)).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while n3.broker.retained_count() != 0 || n4.broker.retained_count() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "cleared in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn acknowledgements_wait_while_the_engine_is_stopped() {
    let server = NatsServer::start();
    let [n1, _n2, n3] = three(&server).await;
    let mut sub = Raw::connect(n3.addr, "sub").await;
    sub.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(n1.addr, "pub").await;
    publ.publish("t", b"before", QoS::AtLeastOnce, 1).await;
    assert_eq!(sub.message().await, ("t".into(), "before".into()));

    let pid = server.pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    // Stopped for sure (state T in /proc) before publishing.
    let stat = format!("/proc/{pid}/stat");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !std::fs::read_to_string(&stat).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('T'))
    }) {
        assert!(std::time::Instant::now() < deadline, "nats-server stopped");
        std::thread::yield_now();
    }
    let mut p = Publish::new("t".to_owned(), &b"during"[..]);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(2);
    publ.send(&Packet::Publish(p)).await;
    // Not stored, not acknowledged (fail closed); a new CONNECT's claim times out (0x88).
    let held = publ.recv_within(Duration::from_millis(500)).await;
    let refused = async {
        let stream = tokio::net::TcpStream::connect(n1.addr)
            .await
            .expect("connect");
        let mut raw = Raw {
            stream,
            decoder: Decoder::new(DecodeContext::new(V5)),
        };
        raw.send(&Packet::Connect(Connect::new(V5, "newcomer".to_owned())))
            .await;
        raw.recv().await
    }
    .await;
    signal("-CONT");
    assert!(
        held.is_err(),
        "no PUBACK while the engine is stopped: {held:?}"
    );
    assert!(
        matches!(refused, Some(Packet::ConnAck(ref a)) if a.reason_code == ReasonCode::SERVER_UNAVAILABLE),
        "{refused:?}"
    );
    // Resumed: the PUBACK comes, and the message is delivered.
    assert_eq!(
        publ.recv().await,
        Some(Packet::PubAck(PubResponse::new(PacketId::new(2).unwrap())))
    );
    assert_eq!(sub.message().await, ("t".into(), "during".into()));
}

#[tokio::test]
async fn qos2_is_delivered_once_across_a_reconnect_to_another_node() {
    let server = NatsServer::start();
    let [n1, n2, n3] = three(&server).await;
    let mut sub = Raw::connect(n3.addr, "sub").await;
    sub.subscribe(1, "q2/#", QoS::ExactlyOnce).await;

    // CONNECT with Clean Start 0 and a Session Expiry Interval.
    async fn persistent(addr: SocketAddr) -> (Raw, bool) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = Raw {
            stream,
            decoder: Decoder::new(DecodeContext::new(V5)),
        };
        let mut connect = Connect::new(V5, "exactly".to_owned());
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(300);
        raw.send(&Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
                (raw, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
    let pid = PacketId::new(7).unwrap();
    let packet = |dup: bool| {
        let mut p = Publish::new("q2/once".to_owned(), &b"once"[..]);
        p.qos = QoS::ExactlyOnce;
        p.packet_id = Some(pid);
        p.dup = dup;
        Packet::Publish(p)
    };
    let (mut publ, _) = persistent(n1.addr).await;
    publ.send(&packet(false)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid));
    // The PUBREC is lost with the connection: the client resends the PUBLISH, on n2.
    drop(publ);
    let (mut publ, present) = persistent(n2.addr).await;
    assert!(
        present,
        "the session (with its inbound QoS 2 identifier) moved to n2"
    );
    publ.send(&packet(true)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid));
    publ.send(&Packet::PubRel(PubResponse::new(pid))).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubComp(r)) if r.packet_id == pid));
    publ.publish("q2/end", b"end", QoS::AtLeastOnce, 8).await;

    assert_eq!(sub.message().await, ("q2/once".into(), "once".into()));
    assert_eq!(
        sub.message().await,
        ("q2/end".into(), "end".into()),
        "once, not twice"
    );
    sub.silent(200).await;
    drop((n1, n2, n3));
}

/// On several threads, as `mqttx broker` runs, where updates applied by separate tasks
/// would race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_updates_keep_their_order() {
    let server = NatsServer::start();
    let [n1, _n2, n3] = three(&server).await;
    let mut publ = Raw::connect(n1.addr, "retainer").await;
    let retained = |topic: &str, payload: &'static [u8]| {
        let mut p = Publish::new(topic.to_owned(), payload);
        p.retain = true;
        Packet::Publish(p)
    };
    // Set and clear in quick succession, many times, then a marker: once the marker is
    // retained on n3, every earlier update was applied before it, in order.
    for _ in 0..20 {
        publ.send(&retained("home/door", b"open")).await;
        publ.send(&retained("home/door", b"")).await;
    }
    publ.send(&retained("marker", b"m")).await;
    let mut late = Raw::connect(n3.addr, "late").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut id = 1;
    loop {
        late.subscribe(id, "marker", QoS::AtMostOnce).await;
        // The retained copy, not the live one (whose RETAIN flag is cleared).
        if let Ok(Some(Packet::Publish(p))) = late.recv_within(Duration::from_millis(50)).await
            && p.retain
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "marker mirrored in time"
        );
        id += 1;
    }
    assert_eq!(n3.broker.retained_count(), 1, "home/door cleared last");
    late.subscribe(id + 1, "home/#", QoS::AtMostOnce).await;
    late.silent(100).await;
}

#[tokio::test]
async fn unreadable_messages_from_nats_are_dropped() {
    let server = NatsServer::start();
    let [_n1, n2, n3] = three(&server).await;
    let mut sub = Raw::connect(n3.addr, "sub").await;
    sub.subscribe(1, "a/#", QoS::AtMostOnce).await;
    let nats = async_nats::connect(server.url()).await.expect("nats");
    for body in [&b""[..], b"\xff\x00garbage", &[0u8; 64]] {
        nats.publish("mqttx.q0.a.b", Bytes::from_static(body))
            .await
            .expect("publish");
        nats.publish("mqttx.q1.a", Bytes::from_static(body))
            .await
            .expect("publish");
    }
    // Flushed: the server handed them to n3 before anything published after this.
    nats.flush().await.expect("flush");
    // One good message through each subscription the bad ones came through (core `a.>` of
    // QoS 0, `a` of QoS 1): once both arrived, every bad one was read before them.
    let mut publ = Raw::connect(n2.addr, "pub").await;
    publ.publish("a/c", b"fine", QoS::AtMostOnce, 0).await;
    publ.publish("a", b"fine", QoS::AtLeastOnce, 1).await;
    let mut got = [sub.message().await, sub.message().await];
    got.sort();
    assert_eq!(
        got,
        [("a".into(), "fine".into()), ("a/c".into(), "fine".into())]
    );
    sub.silent(100).await;
    assert_eq!(n3.cluster.unreadable(), 6);
    assert_eq!(n3.cluster.slow_consumers(), 0);
}

#[tokio::test]
async fn a_node_that_lost_a_session_without_a_takeover_closes_it() {
    fencing(false).await;
}

#[tokio::test]
async fn a_node_fences_its_clients_after_the_engine_restarted() {
    fencing(true).await;
}

/// n2 becomes the owner of a client connected to n1 without asking n1 (`restart`: after the
/// engine restarted, which leaves n1's watch of the owners silent until n1 watches again).
async fn fencing(restart: bool) {
    let mut server = NatsServer::start();
    // Heartbeats every 200 ms: the grace before fencing is 1 s.
    let n1 = node_with(
        &server,
        NatsClusterOptions::new(server.url(), "n1").heartbeat(Duration::from_millis(200)),
    )
    .await;
    let _n2 = node_with(
        &server,
        NatsClusterOptions::new(server.url(), "n2").heartbeat(Duration::from_millis(200)),
    )
    .await;
    let mut c = Raw::connect(n1.addr, "fenced").await;
    if restart {
        server.restart();
    }
    // n2, alive, becomes the owner without asking n1 (as when n1 was cut off meanwhile).
    let nats = async_nats::connect(server.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let owners = js.get_key_value("mqttx_sessions").await.expect("owners");
    owners.put("fenced", "n2".into()).await.expect("put");
    match c.recv_within(Duration::from_secs(10)).await {
        Ok(Some(Packet::Disconnect(d))) => {
            assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(n1.broker.clients().is_empty());
}

#[tokio::test]
async fn a_message_too_large_for_nats_stays_local_and_stalls_nothing() {
    let server = NatsServer::start();
    let [n1, _n2, n3] = three(&server).await;
    let mut local = Raw::connect(n1.addr, "local").await;
    local.subscribe(1, "big/#", QoS::AtLeastOnce).await;
    let mut remote = Raw::connect(n3.addr, "remote").await;
    remote.subscribe(1, "big/#", QoS::AtLeastOnce).await;
    // Within the broker's packet limit (1 MiB), beyond NATS's max_payload (1 MiB) once the
    // headers are added.
    let payload: &'static [u8] = vec![b'x'; 1024 * 1024 - 64].leak();
    let mut publ = Raw::connect(n1.addr, "big").await;
    let mut p = Publish::new("big/one".to_owned(), payload);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(1);
    publ.send(&Packet::Publish(p)).await;
    assert_eq!(local.message().await.0, "big/one");
    // The node goes on: the next message is acknowledged and crosses nodes.
    let mut other = Raw::connect(n1.addr, "other").await;
    other
        .publish("big/two", b"small", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(remote.message().await, ("big/two".into(), "small".into()));
    // The large one is acknowledged too, as a message of this node only.
    assert_eq!(
        publ.recv().await,
        Some(Packet::PubAck(PubResponse::new(PacketId::new(1).unwrap())))
    );
    assert_eq!(n1.cluster.too_large(), 1);
    remote.silent(100).await;
}
