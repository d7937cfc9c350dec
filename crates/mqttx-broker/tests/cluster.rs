//! The cluster seam, with an in-process stand-in for a cluster (`Hub`) joining several
//! brokers on loopback: what the broker reports (interest, publishes, releases), what it does
//! with what the cluster hands it (deliveries, shared-group picks, retained messages,
//! takeovers), and that acknowledgements and CONNECTs wait for the cluster (fail closed).
//! The NATS implementation is tested against a real nats-server in `mqttx-cluster-nats`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RawClient, loopback_config, run};
use mqttx_broker::codec::{
    Connect, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscribeFilter, Unsubscribe,
};
use mqttx_broker::router::TopicFilter;
use mqttx_broker::{
    AllowAll, Broker, ClaimError, Cluster, ClusterFuture, ClusterNode, ClusterWill, Message,
    StoredSession,
};
use tokio::sync::oneshot;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// The nodes of a stand-in cluster.
#[derive(Debug, Default)]
struct Hub {
    members: Mutex<Vec<Arc<Member>>>,
    /// The owning member of each client identifier.
    owners: Mutex<HashMap<String, usize>>,
}

/// One node's side of the stand-in: it records what its broker reports and delivers on tasks
/// of its own (never from within a call of the broker).
#[derive(Debug)]
struct Member {
    index: usize,
    hub: Arc<Hub>,
    node: Mutex<Option<ClusterNode>>,
    /// Local subscriptions per filter, as reported.
    interest: Mutex<HashMap<String, i64>>,
    /// While set, QoS 1 and 2 publishes are not "stored" until `settle` is called.
    hold: AtomicBool,
    held: Mutex<Vec<oneshot::Sender<()>>>,
    available: AtomicBool,
    refuse_claims: AtomicBool,
    claims: Mutex<Vec<String>>,
    released: Mutex<Vec<String>>,
    /// The Wills that came with claims, and the (client, connection) pairs settled.
    wills: Mutex<Vec<ClusterWill>>,
    settled: Mutex<Vec<(String, u64)>>,
}

impl Member {
    fn node(&self) -> ClusterNode {
        self.node.lock().unwrap().clone().expect("attached")
    }

    fn interest(&self, filter: &str) -> i64 {
        self.interest
            .lock()
            .unwrap()
            .get(filter)
            .copied()
            .unwrap_or(0)
    }

    fn has(&self, pred: impl Fn(&TopicFilter) -> bool) -> Vec<TopicFilter> {
        self.interest
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, _)| TopicFilter::new(f).unwrap())
            .filter(|f| pred(f))
            .collect()
    }

    /// While `hold` is set, a future that waits for `settle`.
    fn held_future(&self) -> Option<ClusterFuture<()>> {
        if !self.hold.load(Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.held.lock().unwrap().push(tx);
        Some(Box::pin(async move {
            let _ = rx.await;
        }))
    }

    fn settle(&self) {
        for tx in self.held.lock().unwrap().drain(..) {
            let _ = tx.send(());
        }
    }
}

impl Cluster for Member {
    fn attach(&self, node: ClusterNode) {
        *self.node.lock().unwrap() = Some(node);
    }

    fn subscribed(&self, filter: &TopicFilter) -> Option<ClusterFuture<()>> {
        *self
            .interest
            .lock()
            .unwrap()
            .entry(filter.as_str().to_owned())
            .or_default() += 1;
        self.held_future()
    }

    fn unsubscribed(&self, filter: &TopicFilter) {
        *self
            .interest
            .lock()
            .unwrap()
            .entry(filter.as_str().to_owned())
            .or_default() -= 1;
    }

    fn publish(&self, message: &Message) -> Option<ClusterFuture<()>> {
        let members = self.hub.members.lock().unwrap().clone();
        let qos = message.qos;
        let message = message.clone();
        let from = self.index;
        tokio::spawn(async move {
            if message.retain {
                for m in members.iter().filter(|m| m.index != from) {
                    let kept = (!message.payload.is_empty()).then_some(&message);
                    m.node().retain(&message.topic, kept);
                }
            }
            for m in members.iter().filter(|m| m.index != from) {
                if !m
                    .has(|f| !f.is_shared() && f.matches(&message.topic))
                    .is_empty()
                {
                    m.node().deliver(&message);
                }
            }
            // Each shared group once, cluster-wide: the first node with a member.
            let mut groups: Vec<(String, Arc<Member>, TopicFilter)> = Vec::new();
            for m in &members {
                for f in m.has(|f| f.is_shared() && f.matches(&message.topic)) {
                    if !groups.iter().any(|(g, _, _)| g == f.as_str()) {
                        groups.push((f.as_str().to_owned(), Arc::clone(m), f));
                    }
                }
            }
            for (_, m, f) in groups {
                assert!(m.node().deliver_shared(&f, &message), "{f} has a member");
            }
        });
        if qos == QoS::AtMostOnce {
            return None;
        }
        Some(
            self.held_future()
                .unwrap_or_else(|| Box::pin(std::future::ready(()))),
        )
    }

    fn claim(
        &self,
        client_id: &str,
        will: Option<&ClusterWill>,
    ) -> ClusterFuture<Result<Option<StoredSession>, ClaimError>> {
        self.claims.lock().unwrap().push(client_id.to_owned());
        if let Some(will) = will {
            self.wills.lock().unwrap().push(will.clone());
        }
        if self.refuse_claims.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(ClaimError::Refused)));
        }
        let previous = self
            .hub
            .owners
            .lock()
            .unwrap()
            .insert(client_id.to_owned(), self.index);
        let old = previous
            .filter(|&owner| owner != self.index)
            .map(|owner| Arc::clone(&self.hub.members.lock().unwrap()[owner]));
        let client_id = client_id.to_owned();
        Box::pin(async move {
            match old {
                Some(old) => Ok(old.node().take_over(&client_id).await),
                None => Ok(None),
            }
        })
    }

    fn release(&self, client_id: &str) {
        self.released.lock().unwrap().push(client_id.to_owned());
    }

    fn will_settled(&self, client_id: &str, connection: u64) {
        self.settled
            .lock()
            .unwrap()
            .push((client_id.to_owned(), connection));
    }

    fn is_available(&self) -> bool {
        self.available.load(Ordering::SeqCst)
    }

    fn local_while_unavailable(&self) -> bool {
        self.index != 1
    }
}

struct Node {
    addr: std::net::SocketAddr,
    broker: Broker<AllowAll>,
    member: Arc<Member>,
}

async fn cluster(n: usize) -> (Arc<Hub>, Vec<Node>) {
    let hub = Arc::new(Hub::default());
    let mut nodes = Vec::new();
    for index in 0..n {
        let member = Arc::new(Member {
            index,
            hub: Arc::clone(&hub),
            node: Mutex::new(None),
            interest: Mutex::default(),
            hold: AtomicBool::new(false),
            held: Mutex::default(),
            available: AtomicBool::new(true),
            refuse_claims: AtomicBool::new(false),
            claims: Mutex::default(),
            released: Mutex::default(),
            wills: Mutex::default(),
            settled: Mutex::default(),
        });
        hub.members.lock().unwrap().push(Arc::clone(&member));
        let server = Broker::builder()
            .config(loopback_config())
            .cluster(Arc::clone(&member) as Arc<dyn Cluster>)
            .bind()
            .await
            .expect("bind");
        let running = run(server);
        nodes.push(Node {
            addr: running.addr,
            broker: running.broker,
            member,
        });
    }
    (hub, nodes)
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

async fn client(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
) -> RawClient<tokio::net::TcpStream> {
    let mut c = RawClient::connect(addr, version).await;
    c.send(&Packet::Connect(Connect::new(version, id.to_owned())))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{id}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

async fn subscribe(c: &mut RawClient<tokio::net::TcpStream>, id: u16, filter: &str, qos: QoS) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new(filter, qos)].into(),
    }))
    .await;
    assert!(
        matches!(c.recv().await, Some(Packet::SubAck(_))),
        "SUBACK for {filter}"
    );
}

fn publish(topic: &str, payload: &'static [u8], qos: QoS, id: u16) -> Packet<'static> {
    let mut p = Publish::new(topic.to_owned(), payload);
    p.qos = qos;
    p.packet_id = (qos != QoS::AtMostOnce).then(|| pid(id));
    Packet::Publish(p)
}

/// The next PUBLISH's topic and payload.
async fn next_message(c: &mut RawClient<tokio::net::TcpStream>) -> (String, Vec<u8>) {
    match c.recv().await {
        Some(Packet::Publish(p)) => (p.topic.to_string(), p.payload.to_vec()),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Nothing arrives within `ms` milliseconds (a bounded negative check).
async fn silent(c: &mut RawClient<tokio::net::TcpStream>, ms: u64) {
    let got = tokio::time::timeout(Duration::from_millis(ms), c.recv()).await;
    assert!(got.is_err(), "expected nothing, got {got:?}");
}

#[tokio::test]
async fn messages_cross_nodes_and_interest_is_counted_per_subscription() {
    let (_hub, nodes) = cluster(3).await;
    let mut sub = client(nodes[2].addr, V5, "sub-n3").await;
    subscribe(&mut sub, 1, "a/#", QoS::AtLeastOnce).await;
    // The same filter again replaces the subscription: still one reference.
    subscribe(&mut sub, 2, "a/#", QoS::AtLeastOnce).await;
    subscribe(&mut sub, 3, "b", QoS::AtMostOnce).await;
    assert_eq!(nodes[2].member.interest("a/#"), 1);
    assert_eq!(nodes[2].member.interest("b"), 1);
    assert_eq!(
        nodes[0].member.interest("a/#"),
        0,
        "other nodes report their own only"
    );

    let mut publ = client(nodes[0].addr, V311, "pub-n1").await;
    publ.send(&publish("a", b"parent", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(
        publ.recv().await,
        Some(Packet::PubAck(PubResponse::new(pid(1))))
    );
    assert_eq!(
        next_message(&mut sub).await,
        ("a".into(), b"parent".to_vec())
    );
    publ.send(&publish("a/b", b"child", QoS::AtLeastOnce, 2))
        .await;
    assert_eq!(
        publ.recv().await,
        Some(Packet::PubAck(PubResponse::new(pid(2))))
    );
    assert_eq!(
        next_message(&mut sub).await,
        ("a/b".into(), b"child".to_vec())
    );

    sub.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(4),
        properties: Default::default(),
        filters: vec!["b".into()].into(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::UnsubAck(_))));
    assert_eq!(nodes[2].member.interest("b"), 0);
    // The end of a clean session removes the rest, and releases the client identifier.
    sub.send(&Packet::Disconnect(Default::default())).await;
    assert!(sub.until_closed().await.is_empty());
    for _ in 0..200 {
        if nodes[2].member.interest("a/#") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nodes[2].member.interest("a/#"), 0);
    assert_eq!(*nodes[2].member.released.lock().unwrap(), ["sub-n3"]);
    assert_eq!(*nodes[2].member.claims.lock().unwrap(), ["sub-n3"]);
}

#[tokio::test]
async fn a_shared_group_across_nodes_gets_each_message_once() {
    let (_hub, nodes) = cluster(3).await;
    let mut m1 = client(nodes[0].addr, V5, "member-n1").await;
    subscribe(&mut m1, 1, "$share/g/s/+", QoS::AtLeastOnce).await;
    let mut m3 = client(nodes[2].addr, V5, "member-n3").await;
    subscribe(&mut m3, 1, "$share/g/s/+", QoS::AtLeastOnce).await;
    // The publisher is on the node of the first member: its local route must not deliver
    // to the group (the cluster picks, here always n1's member).
    let mut publ = client(nodes[0].addr, V5, "pub").await;
    for i in 1..=3u16 {
        publ.send(&publish("s/x", b"m", QoS::AtLeastOnce, i)).await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    for _ in 0..3 {
        assert_eq!(next_message(&mut m1).await.0, "s/x");
    }
    silent(&mut m1, 200).await;
    silent(&mut m3, 0).await;
}

#[tokio::test]
async fn acknowledgements_wait_for_the_cluster() {
    let (_hub, nodes) = cluster(2).await;
    nodes[0].member.hold.store(true, Ordering::SeqCst);
    let mut publ = client(nodes[0].addr, V5, "held").await;
    publ.send(&publish("t", b"1", QoS::AtLeastOnce, 1)).await;
    publ.send(&publish("t", b"2", QoS::ExactlyOnce, 2)).await;
    silent(&mut publ, 300).await;
    nodes[0].member.settle();
    assert_eq!(
        publ.recv().await,
        Some(Packet::PubAck(PubResponse::new(pid(1))))
    );
    assert!(
        matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(2)),
        "PUBREC once stored"
    );
    // A SUBACK waits until the cluster's subscription is in place.
    publ.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(3),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("x/#", QoS::AtLeastOnce)].into(),
    }))
    .await;
    silent(&mut publ, 300).await;
    nodes[0].member.settle();
    assert!(matches!(publ.recv().await, Some(Packet::SubAck(_))));
}

#[tokio::test]
async fn an_unavailable_cluster_refuses_connects() {
    let (_hub, nodes) = cluster(1).await;
    nodes[0].member.available.store(false, Ordering::SeqCst);
    // MQTT 3.1.1's return code 3 (Server unavailable) decodes as 0x88.
    for version in [V5, V311] {
        let mut c = RawClient::connect(nodes[0].addr, version).await;
        c.send(&Packet::Connect(Connect::new(
            version,
            "refused".to_owned(),
        )))
        .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(
                ack.reason_code,
                ReasonCode::SERVER_UNAVAILABLE,
                "{version:?}"
            ),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        assert!(c.until_closed().await.is_empty());
    }
    nodes[0].member.available.store(true, Ordering::SeqCst);
    nodes[0].member.refuse_claims.store(true, Ordering::SeqCst);
    let mut c = RawClient::connect(nodes[0].addr, V5).await;
    c.send(&Packet::Connect(Connect::new(V5, "unclaimed".to_owned())))
        .await;
    assert!(
        matches!(c.recv().await, Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::SERVER_UNAVAILABLE)
    );
    assert_eq!(nodes[0].broker.client_count(), 0);
}

/// CONNECT with Clean Start 0 and a Session Expiry Interval (MQTT 5.0) or Clean Session 0.
async fn persistent(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
) -> (RawClient<tokio::net::TcpStream>, bool) {
    let mut c = RawClient::connect(addr, version).await;
    let mut connect = Connect::new(version, id.to_owned());
    connect.clean_start = false;
    if version == V5 {
        connect.properties.session_expiry_interval = Some(300);
    }
    c.send(&Packet::Connect(connect)).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
            (c, ack.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_moves_to_the_node_its_client_reconnects_to() {
    let (_hub, nodes) = cluster(3).await;
    // Connected on n1 with a message in flight (not acknowledged) when the client reconnects
    // to n2: n1 closes the old connection with 0x8E and hands the session over.
    let (mut old, present) = persistent(nodes[0].addr, V5, "roamer").await;
    assert!(!present);
    subscribe(&mut old, 1, "r/#", QoS::AtLeastOnce).await;
    let mut publ = client(nodes[2].addr, V5, "pub-n3").await;
    publ.send(&publish("r/1", b"one", QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let first = match old.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(&*first.topic, "r/1");
    let (mut new, present) = persistent(nodes[1].addr, V5, "roamer").await;
    assert!(present, "the session was handed over");
    match old.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    // The unacknowledged message again, with DUP and its Packet Identifier.
    match new.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(
                (&*p.topic, p.dup, p.packet_id),
                ("r/1", true, first.packet_id)
            );
        }
        other => panic!("expected the resent PUBLISH, got {other:?}"),
    }
    assert_eq!(nodes[0].member.interest("r/#"), 0, "n1 let the filter go");
    assert_eq!(nodes[1].member.interest("r/#"), 1, "n2 took it");
    assert_eq!(nodes[0].broker.stored_sessions(), 0);
    assert!(nodes[0].member.released.lock().unwrap().is_empty());
    // New messages reach it on n2.
    publ.send(&publish("r/2", b"two", QoS::AtLeastOnce, 2))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(
        next_message(&mut new).await,
        ("r/2".into(), b"two".to_vec())
    );

    // An absent client's stored session, with a message queued while it was away (MQTT
    // 3.1.1), moves too.
    let (mut away, _) = persistent(nodes[0].addr, V311, "sleeper").await;
    subscribe(&mut away, 1, "z", QoS::AtLeastOnce).await;
    away.send(&Packet::Disconnect(Default::default())).await;
    assert!(away.until_closed().await.is_empty());
    for _ in 0..200 {
        if nodes[0].broker.stored_sessions() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publ.send(&publish("z", b"queued", QoS::AtLeastOnce, 3))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let (mut back, present) = persistent(nodes[2].addr, V311, "sleeper").await;
    assert!(present);
    assert_eq!(
        next_message(&mut back).await,
        ("z".into(), b"queued".to_vec())
    );
    assert_eq!(nodes[0].broker.stored_sessions(), 0);

    // A v3.1.1 connection taken over just closes (no server DISCONNECT in 3.1.1), and a
    // Clean Start on the new node discards the handed-over session.
    let (mut c, _) = persistent(nodes[0].addr, V311, "fresh").await;
    subscribe(&mut c, 1, "f", QoS::AtLeastOnce).await;
    let fresh = client(nodes[1].addr, V311, "fresh").await;
    c.until_closed().await;
    assert_eq!(nodes[0].member.interest("f"), 0);
    assert_eq!(nodes[1].member.interest("f"), 0, "Clean Start: not resumed");
    drop(fresh);
    assert!(nodes[1].member.node().take_over("nobody").await.is_none());
}

#[tokio::test]
async fn retained_messages_are_mirrored_and_cleared() {
    let (_hub, nodes) = cluster(2).await;
    let mut publ = client(nodes[0].addr, V5, "retainer").await;
    let mut p = Publish::new("k/v".to_owned(), &b"kept"[..]);
    p.retain = true;
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(1));
    publ.send(&Packet::Publish(p)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    for _ in 0..200 {
        if nodes[1].broker.retained_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sub = client(nodes[1].addr, V5, "late").await;
    subscribe(&mut sub, 1, "k/+", QoS::AtLeastOnce).await;
    assert_eq!(
        next_message(&mut sub).await,
        ("k/v".into(), b"kept".to_vec())
    );
    let mut clear = Publish::new("k/v".to_owned(), &b""[..]);
    clear.retain = true;
    publ.send(&Packet::Publish(clear)).await;
    for _ in 0..200 {
        if nodes[1].broker.retained_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nodes[1].broker.retained_count(), 0);
}

#[tokio::test]
async fn a_cut_off_node_delivers_locally_only_when_allowed() {
    // Node 0 keeps local delivery while unavailable (the default); node 1 does not.
    let (_hub, nodes) = cluster(2).await;
    for (node, delivered) in [(&nodes[0], true), (&nodes[1], false)] {
        let mut sub = client(node.addr, V5, "local-sub").await;
        subscribe(&mut sub, 1, "l/#", QoS::AtMostOnce).await;
        let mut publ = client(node.addr, V5, "local-pub").await;
        node.member.available.store(false, Ordering::SeqCst);
        publ.send(&publish("l/x", b"cut off", QoS::AtMostOnce, 0))
            .await;
        if delivered {
            assert_eq!(
                next_message(&mut sub).await,
                ("l/x".into(), b"cut off".to_vec())
            );
        } else {
            silent(&mut sub, 300).await;
        }
        node.member.available.store(true, Ordering::SeqCst);
        publ.send(&publish("l/y", b"back", QoS::AtMostOnce, 0))
            .await;
        assert_eq!(
            next_message(&mut sub).await,
            ("l/y".into(), b"back".to_vec())
        );
    }
}

/// CONNECT (Clean Start 1) with a Will on `topic`, its delay `delay` and Session Expiry
/// `expiry`.
async fn with_will(
    addr: std::net::SocketAddr,
    id: &str,
    topic: &str,
    delay: u32,
    expiry: u32,
) -> RawClient<tokio::net::TcpStream> {
    let mut c = RawClient::connect(addr, V5).await;
    let mut connect = Connect::new(V5, id.to_owned());
    connect.properties.session_expiry_interval = Some(expiry);
    let mut will = Box::new(mqttx_broker::codec::Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        topic: topic.into(),
        payload: b"gone".to_vec().into(),
    });
    will.properties.will_delay_interval = Some(delay);
    connect.will = Some(will);
    c.send(&Packet::Connect(connect)).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

/// Waits (bounded) until `member` has settled `client_id`'s Will.
async fn settled(member: &Member, client_id: &str) -> Vec<u64> {
    for _ in 0..300 {
        let done: Vec<u64> = member
            .settled
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == client_id)
            .map(|(_, n)| *n)
            .collect();
        if !done.is_empty() {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Vec::new()
}

#[tokio::test]
async fn wills_go_with_claims_and_are_settled_when_their_connection_ends() {
    let (_hub, nodes) = cluster(2).await;
    let mut watcher = client(nodes[1].addr, V5, "watcher").await;
    subscribe(&mut watcher, 1, "wills/#", QoS::AtLeastOnce).await;

    // A persistent session's Will: handed to the cluster with the claim, its delay capped by
    // the Session Expiry Interval.
    let mut c = with_will(nodes[0].addr, "willing", "wills/willing", 60, 30).await;
    let armed = nodes[0].member.wills.lock().unwrap().clone();
    assert_eq!(armed.len(), 1);
    assert_eq!(
        (armed[0].message.topic.as_str(), armed[0].delay),
        ("wills/willing", 30)
    );
    assert!(
        nodes[0].member.settled.lock().unwrap().is_empty(),
        "still connected"
    );
    // A normal DISCONNECT drops the Will; the session stays here, so it is settled, not
    // released.
    c.send(&Packet::Disconnect(Default::default())).await;
    c.until_closed().await;
    assert_eq!(
        settled(&nodes[0].member, "willing").await,
        [armed[0].connection]
    );
    assert!(nodes[0].member.released.lock().unwrap().is_empty());

    // The next connection has a number of its own; a session that ends with its connection
    // is released (which forgets the Will too), not settled, and its Will is published.
    let c = with_will(nodes[0].addr, "willing", "wills/willing", 0, 0).await;
    let armed = nodes[0].member.wills.lock().unwrap().clone();
    assert_eq!(armed.len(), 2);
    assert_ne!(armed[0].connection, armed[1].connection);
    assert_eq!(armed[1].delay, 0);
    drop(c);
    assert_eq!(
        next_message(&mut watcher).await,
        ("wills/willing".into(), b"gone".to_vec())
    );
    for _ in 0..300 {
        if !nodes[0].member.released.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*nodes[0].member.released.lock().unwrap(), ["willing"]);
    assert_eq!(settled(&nodes[0].member, "willing").await.len(), 1);

    // A client without a Will hands none over.
    let plain = client(nodes[0].addr, V5, "plain").await;
    assert_eq!(nodes[0].member.wills.lock().unwrap().len(), 2);
    drop(plain);

    // What the cluster publishes through a node's handle (a stopped node's Will) reaches that
    // node's subscribers and, through the cluster, the others'.
    let mut local = client(nodes[0].addr, V5, "local").await;
    subscribe(&mut local, 1, "wills/#", QoS::AtLeastOnce).await;
    let topic = mqttx_broker::router::TopicName::new("wills/orphan").unwrap();
    let will = Message::new(topic, &b"lost"[..], QoS::AtLeastOnce, false);
    nodes[0].member.node().publish(&will);
    assert_eq!(
        next_message(&mut local).await,
        ("wills/orphan".into(), b"lost".to_vec())
    );
    assert_eq!(
        next_message(&mut watcher).await,
        ("wills/orphan".into(), b"lost".to_vec())
    );
}

/// The next PUBLISH, whole.
async fn next_publish(c: &mut RawClient<tokio::net::TcpStream>) -> Publish<'static> {
    match c.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Waits (bounded) for what became of a shared group's message.
async fn outcome(fut: ClusterFuture<bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("settled in time")
}

#[tokio::test]
async fn a_shared_message_is_taken_once_acknowledged_or_kept_and_given_back_otherwise() {
    let (_hub, nodes) = cluster(1).await;
    let node = nodes[0].member.node();
    let filter = TopicFilter::new("$share/g/job").unwrap();
    let job = |n: u8| {
        let topic = mqttx_broker::router::TopicName::new("job").unwrap();
        Message::new(topic, vec![n], QoS::AtLeastOnce, false)
    };
    assert!(
        node.deliver_shared_tracked(&filter, &job(0)).is_none(),
        "no member"
    );

    // A member that acknowledges: taken once its PUBACK came, not before.
    let mut worker = client(nodes[0].addr, V5, "worker").await;
    subscribe(&mut worker, 1, "$share/g/job", QoS::AtLeastOnce).await;
    let mut fut = node
        .deliver_shared_tracked(&filter, &job(1))
        .expect("a member");
    let p = next_publish(&mut worker).await;
    assert_eq!(&p.payload[..], [1]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut fut)
            .await
            .is_err(),
        "not taken before the PUBACK"
    );
    worker
        .send(&Packet::PubAck(PubResponse::new(p.packet_id.unwrap())))
        .await;
    assert!(outcome(fut).await, "acknowledged");

    // A member whose connection ends with its session before the PUBACK: given back.
    let fut = node
        .deliver_shared_tracked(&filter, &job(2))
        .expect("a member");
    assert_eq!(&next_publish(&mut worker).await.payload[..], [2]);
    drop(worker);
    assert!(!outcome(fut).await, "not delivered");

    // A member with a persistent session keeps it: in flight when its connection drops, then
    // queued while it is away.
    let (mut keeper, _) = persistent(nodes[0].addr, V5, "keeper").await;
    subscribe(&mut keeper, 1, "$share/g/job", QoS::AtLeastOnce).await;
    let fut = node
        .deliver_shared_tracked(&filter, &job(3))
        .expect("a member");
    assert_eq!(&next_publish(&mut keeper).await.payload[..], [3]);
    drop(keeper);
    assert!(outcome(fut).await, "kept in flight with the session");
    for _ in 0..300 {
        if nodes[0].broker.stored_sessions() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fut = node
        .deliver_shared_tracked(&filter, &job(4))
        .expect("a member");
    assert!(outcome(fut).await, "queued with the session");
    let (mut keeper, present) = persistent(nodes[0].addr, V5, "keeper").await;
    assert!(present);
    let again = next_publish(&mut keeper).await;
    assert_eq!((&again.payload[..], again.dup), (&[3u8][..], true));
    assert_eq!(&next_publish(&mut keeper).await.payload[..], [4]);
}
