//! Session ownership against a real nats-server (`support::nats`): simultaneous claims end
//! with exactly one owner, a release is fenced by the revision, and a client reconnecting to
//! another broker takes its session over through the old owner's takeover subject.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqttx_broker::codec::{
    Connect, DecodeContext, Decoder, EncodeContext, OwnedPacket, Packet, PacketId, ProtocolVersion,
    QoS, ReasonCode, Subscribe, SubscribeFilter, encode,
};
use mqttx_broker::{
    Broker, ClaimError, Cluster, ClusterFuture, ClusterNode, ClusterWill, Config, Message,
    StoredSession,
};
use mqttx_cluster_nats::Ownership;
use mqttx_router::TopicFilter;
use support::nats::NatsServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bounds every wait.
const TIMEOUT: Duration = Duration::from_secs(10);

async fn ownership(server: &NatsServer, node_id: &str) -> Ownership {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", server.log()));
    Ownership::open(client, "owners_test", 1, node_id, "ctl.node", TIMEOUT)
        .await
        .expect("bucket")
}

#[tokio::test]
async fn simultaneous_claims_end_with_one_owner_and_release_is_fenced() {
    let server = NatsServer::start();
    let (n1, n2, n3) = (
        ownership(&server, "n1").await,
        ownership(&server, "n2").await,
        ownership(&server, "n3").await,
    );
    // Claims at the same moment: whichever way they interleave, the entry ends with one of
    // the claimants whose claim succeeded (a claim that read a revision another claim had
    // already replaced is refused by the compare-and-set; one that came after it takes over).
    for round in 0..5 {
        let id = format!("c/{round}");
        if round % 2 == 1 {
            // Owned by n1 first: the claims replace an entry rather than create one.
            assert!(matches!(n1.claim(&id).await, Ok(None)));
            assert!(
                matches!(n1.claim(&id).await, Ok(None)),
                "claiming one's own is a no-op"
            );
        }
        let (a, b) = tokio::join!(n2.claim(&id), n3.claim(&id));
        assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
        for r in [&a, &b] {
            assert!(matches!(r, Ok(None) | Err(ClaimError::Refused)), "{r:?}");
        }
        let owner = n1.owner(&id).await.unwrap().expect("owned");
        let won = if owner == "n2" { &a } else { &b };
        assert!(
            won.is_ok(),
            "the owner {owner} claimed successfully: {a:?} {b:?}"
        );
    }
    let owner = n1.owner("c/1").await.unwrap().expect("owned");
    // n1's release does not remove the new owner's entry.
    n1.release("c/1").await.unwrap();
    assert_eq!(n1.owner("c/1").await.unwrap(), Some(owner.clone()));
    let winner = if owner == "n2" { &n2 } else { &n3 };
    winner.release("c/1").await.unwrap();
    assert_eq!(n1.owner("c/1").await.unwrap(), None);
    // Released: the next claim creates it again.
    assert!(matches!(n1.claim("c/1").await, Ok(None)));
    assert_eq!(n2.owner("c/1").await.unwrap().as_deref(), Some("n1"));
}

/// A cluster that only does ownership: enough for takeover between two brokers.
#[derive(Debug)]
struct OwnersOnly {
    owners: Ownership,
    node: Mutex<Option<ClusterNode>>,
}

impl Cluster for OwnersOnly {
    fn attach(&self, node: ClusterNode) {
        *self.node.lock().unwrap() = Some(node);
    }
    fn subscribed(&self, _: &TopicFilter) -> Option<ClusterFuture<()>> {
        None
    }
    fn unsubscribed(&self, _: &TopicFilter) {}
    fn publish(&self, _: &Message) -> Option<ClusterFuture<()>> {
        None
    }
    fn claim(
        &self,
        client_id: &str,
        _will: Option<&ClusterWill>,
    ) -> ClusterFuture<Result<Option<StoredSession>, ClaimError>> {
        let owners = self.owners.clone();
        let client_id = client_id.to_owned();
        Box::pin(async move { owners.claim(&client_id).await })
    }
    fn release(&self, client_id: &str) {
        let owners = self.owners.clone();
        let client_id = client_id.to_owned();
        tokio::spawn(async move { owners.release(&client_id).await });
    }
}

async fn broker(server: &NatsServer, node_id: &str) -> std::net::SocketAddr {
    let cluster = Arc::new(OwnersOnly {
        owners: ownership(server, node_id).await,
        node: Mutex::new(None),
    });
    let mut config = Config::default();
    config.bind = ([127, 0, 0, 1], 0).into();
    let server = Broker::builder()
        .config(config)
        .cluster(Arc::clone(&cluster) as Arc<dyn Cluster>)
        .bind()
        .await
        .expect("bind");
    let node = cluster.node.lock().unwrap().clone().expect("attached");
    cluster
        .owners
        .serve_takeovers(node)
        .await
        .expect("takeover subject");
    let addr = server.local_addr().expect("address");
    tokio::spawn(server.run());
    addr
}

struct Raw {
    stream: tokio::net::TcpStream,
    decoder: Decoder,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr, id: &str) -> (Self, bool) {
        let (raw, code, present) = Self::try_connect(addr, id).await;
        assert_eq!(code, ReasonCode::SUCCESS);
        (raw, present)
    }

    /// CONNECT (Clean Start 0): the CONNACK's reason code and Session Present.
    async fn try_connect(addr: std::net::SocketAddr, id: &str) -> (Self, ReasonCode, bool) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = Self {
            stream,
            decoder: Decoder::new(DecodeContext::new(ProtocolVersion::V5)),
        };
        let mut connect = Connect::new(ProtocolVersion::V5, id.to_owned());
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(60);
        raw.send(&Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack.reason_code, ack.session_present),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: &Packet<'_>) {
        let mut bytes = Vec::new();
        encode(packet, &EncodeContext::new(ProtocolVersion::V5), &mut bytes).expect("encode");
        self.stream.write_all(&bytes).await.expect("write");
    }

    async fn recv(&mut self) -> Option<OwnedPacket> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = self.decoder.next_packet().expect("valid packet") {
                return Some(p);
            }
            let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf))
                .await
                .expect("answer in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.decoder.feed(&buf[..n]);
        }
    }
}

#[tokio::test]
async fn a_client_reconnecting_to_another_broker_takes_its_session_over() {
    let server = NatsServer::start();
    let n1 = broker(&server, "n1").await;
    let n2 = broker(&server, "n2").await;
    let (mut old, present) = Raw::connect(n1, "roamer").await;
    assert!(!present);
    old.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("r/#", QoS::AtLeastOnce)].into(),
    }))
    .await;
    assert!(matches!(old.recv().await, Some(Packet::SubAck(_))));

    let (_new, present) = Raw::connect(n2, "roamer").await;
    assert!(present, "n1 handed the session over through NATS");
    match old.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    // And back: n2 hands it to n1.
    let (_back, present) = Raw::connect(n1, "roamer").await;
    assert!(present);
}

#[tokio::test]
async fn simultaneous_connects_on_two_brokers_leave_one_connection() {
    let server = NatsServer::start();
    let n2 = broker(&server, "n2").await;
    let n3 = broker(&server, "n3").await;
    let check = ownership(&server, "observer").await;
    for round in 0..3 {
        let id = format!("twin-{round}");
        let (a, b) = tokio::join!(Raw::try_connect(n2, &id), Raw::try_connect(n3, &id));
        // A refused CONNECT closes; an accepted one that lost the session afterwards gets
        // DISCONNECT 0x8E. Exactly one connection is left, on the node the bucket names.
        let mut alive = Vec::new();
        for (node, (mut raw, code, _)) in [("n2", a), ("n3", b)] {
            if code != ReasonCode::SUCCESS {
                assert_eq!(
                    code,
                    ReasonCode::SERVER_UNAVAILABLE,
                    "a lost claim is refused"
                );
                assert!(raw.recv().await.is_none(), "refused and closed");
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(300), raw.recv()).await {
                Err(_) => alive.push(node),
                Ok(Some(Packet::Disconnect(d))) => {
                    assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(alive.len(), 1, "round {round}: {alive:?}");
        assert_eq!(check.owner(&id).await.unwrap().as_deref(), Some(alive[0]));
    }
}
