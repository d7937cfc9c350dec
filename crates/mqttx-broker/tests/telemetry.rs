//! The broker's own counts: `$SYS/broker/...` statistics outside the retained limits, retained
//! messages delivered at subscribe counted as sent, dropped messages by cause. Over in-memory
//! streams with tokio's paused clock: the `$SYS` interval passes without a wall-clock wait.

mod common;

use std::time::Duration;

use common::{RawClient, loopback_config};
use mqttx_broker::codec::{
    Connect, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscribeFilter,
};
use mqttx_broker::{Broker, ClientInfo, Handler, Message, PublishDecision};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn subscribe(id: u16, filter: &str) -> Packet<'static> {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(id).expect("non-zero"),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new(filter, QoS::AtLeastOnce)].into(),
    })
}

/// The payload of the next PUBLISH on `topic`, skipping other packets.
async fn next_on<S>(c: &mut RawClient<S>, topic: &str) -> (String, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for _ in 0..100 {
        match c.recv().await {
            Some(Packet::Publish(p)) if &*p.topic == topic => {
                if let Some(id) = p.packet_id {
                    c.send(&Packet::PubAck(PubResponse::new(id))).await;
                }
                return (String::from_utf8_lossy(&p.payload).into_owned(), p.retain);
            }
            Some(_) => {}
            None => panic!("closed before a message on {topic}"),
        }
    }
    panic!("no message on {topic} in 100 packets")
}

#[tokio::test(start_paused = true)]
async fn sys_topics_outside_retained_limits_and_retained_deliveries_counted_as_sent() {
    let mut config = loopback_config();
    // Room for one small retained message: the twelve `$SYS` ones must not take it.
    config.max_retained_messages = 1;
    config.max_retained_bytes = 10;
    config.sys_interval = Some(Duration::from_secs(1));
    let broker = Broker::builder().config(config).build();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    c.send(&Packet::Connect(Connect::new(V5, "counted"))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    // The first `$SYS` round is published and retained.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut p = Publish::new("r", &b"12345"[..]);
    p.retain = true;
    c.send(&Packet::Publish(p)).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    assert_eq!(broker.retained_count(), 1, "$SYS does not use the room");

    // Two retained messages delivered at subscribe: "r" and the last `messages/sent` value.
    c.send(&subscribe(1, "r")).await;
    assert_eq!(next_on(&mut c, "r").await, ("12345".to_owned(), true));
    c.send(&subscribe(2, "$SYS/broker/messages/sent")).await;
    let (_, retained) = next_on(&mut c, "$SYS/broker/messages/sent").await;
    assert!(retained);
    // The next round counts both.
    let (sent, retained) = next_on(&mut c, "$SYS/broker/messages/sent").await;
    assert!(!retained);
    assert_eq!(sent, "2");
}

/// Refuses every publish with 0x97 (Quota exceeded), as a rate limit does.
struct Quota;

impl Handler for Quota {
    type Session = ();

    async fn on_connect(
        &self,
        _: &mqttx_broker::ConnectRequest,
    ) -> Result<(), mqttx_broker::ConnectRefusal> {
        Ok(())
    }

    async fn on_publish(&self, _: &(), _: &ClientInfo, _: &Message) -> PublishDecision {
        PublishDecision::Refuse(ReasonCode::QUOTA_EXCEEDED)
    }
}

#[tokio::test(start_paused = true)]
async fn refused_for_a_quota_counts_as_dropped() {
    let broker = Broker::builder().handler(Quota).build();
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker.serve(server_end));
    let mut c = RawClient::new(client_end, V5);
    c.send(&Packet::Connect(Connect::new(V5, "limited"))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    let mut p = Publish::new("t", &b"x"[..]);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(1);
    c.send(&Packet::Publish(p)).await;
    match c.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    assert_eq!(broker.dropped_messages(), 1);
}
