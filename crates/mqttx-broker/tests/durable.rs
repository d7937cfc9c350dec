//! A broker with a journal: what it acknowledged survives a crash. The crash is simulated
//! by copying the journal as it stands (what a `kill -9` leaves on disk) and starting a second
//! broker from the copy; the first broker is left running, unreachable to the clients.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{RawClient, WAIT, loopback_config, run};
use mqttx_broker::codec::{
    Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
    Subscribe, SubscribeFilter,
};
use mqttx_broker::{Broker, Journal, JournalOp, MemoryJournal, Table};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// A journal whose commits take a while, as a disk's would: acknowledgements that did not
/// wait for them would be seen before the journal has what they acknowledge.
#[derive(Debug)]
struct Slow(Arc<MemoryJournal>);

impl Journal for Slow {
    fn commit(&self, ops: &[JournalOp]) -> std::io::Result<()> {
        std::thread::sleep(Duration::from_millis(15));
        self.0.commit(ops)
    }

    fn load(&self) -> std::io::Result<Vec<mqttx_broker::Entry>> {
        self.0.load()
    }
}

/// What a crash leaves: a new journal with the entries `journal` holds now.
fn crash_copy(journal: &MemoryJournal) -> Arc<MemoryJournal> {
    let copy = Arc::new(MemoryJournal::new());
    let ops: Vec<JournalOp> = journal
        .load()
        .expect("load")
        .into_iter()
        .map(|(table, key, value)| JournalOp::Put { table, key, value })
        .collect();
    copy.commit(&ops).expect("commit");
    copy
}

async fn durable_broker(
    journal: Arc<dyn Journal>,
) -> (
    common::Running<mqttx_broker::AllowAll>,
    mqttx_broker::Recovery,
) {
    let (builder, recovery) = Broker::builder()
        .config(loopback_config())
        .journal(journal)
        .expect("the journal loads");
    (run(builder.bind().await.expect("bind")), recovery)
}

/// A persistent session: Clean Start 0, and for MQTT 5.0 a Session Expiry of an hour.
async fn persistent(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
) -> (RawClient<tokio::net::TcpStream>, bool) {
    let mut client = RawClient::connect(addr, version).await;
    let mut connect = Connect::new(version, id.to_owned());
    connect.clean_start = false;
    if version == V5 {
        connect.properties.session_expiry_interval = Some(3600);
    }
    client.send(&Packet::Connect(connect)).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
            (client, ack.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn publish(topic: &str, payload: Vec<u8>, qos: QoS, id: u16, retain: bool) -> Packet<'static> {
    let mut p = Publish::new(topic.to_owned(), payload);
    p.qos = qos;
    p.retain = retain;
    p.packet_id = PacketId::new(id);
    Packet::Publish(p)
}

async fn expect(client: &mut RawClient<tokio::net::TcpStream>, want: Packet<'static>) {
    assert_eq!(client.recv().await, Some(want));
}

/// Receives `n` PUBLISH packets, acknowledging each as its QoS asks (QoS 2 to the end).
/// Returns (topic → payloads, DUP flags seen, packet ids).
async fn receive_all(
    client: &mut RawClient<tokio::net::TcpStream>,
    n: usize,
) -> (BTreeMap<String, Vec<Vec<u8>>>, Vec<bool>, Vec<u16>) {
    let mut got: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut dups = Vec::new();
    let mut ids = Vec::new();
    let mut received = 0;
    while received < n {
        match client.recv().await {
            Some(Packet::Publish(p)) => {
                received += 1;
                got.entry(p.topic.to_string())
                    .or_default()
                    .push(p.payload.to_vec());
                dups.push(p.dup);
                if let Some(id) = p.packet_id {
                    ids.push(id.get());
                    match p.qos {
                        QoS::AtLeastOnce => {
                            client.send(&Packet::PubAck(PubResponse::new(id))).await
                        }
                        _ => client.send(&Packet::PubRec(PubResponse::new(id))).await,
                    }
                }
            }
            Some(Packet::PubRel(r)) => {
                client
                    .send(&Packet::PubComp(PubResponse::new(r.packet_id)))
                    .await;
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    (got, dups, ids)
}

/// Waits (bounded) until `journal` has `n` entries in `table`.
async fn settle(journal: &MemoryJournal, table: Table, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while journal.len(table) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{table:?}: {} entries, want {n}",
            journal.len(table)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn acknowledged_messages_retained_and_qos2_ids_survive_a_crash() {
    let journal = Arc::new(MemoryJournal::new());
    let (first, recovery) = durable_broker(Arc::new(Slow(Arc::clone(&journal)))).await;
    assert_eq!(recovery.sessions, 0);

    // A persistent subscriber, then away.
    let (mut sub, present) = persistent(first.addr, V311, "durable-sub").await;
    assert!(!present);
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![
            SubscribeFilter::new("d/#", QoS::AtLeastOnce),
            SubscribeFilter::new("e/#", QoS::ExactlyOnce),
        ]
        .into(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Disconnect::default())).await;
    assert!(sub.until_closed().await.is_empty());

    // A persistent MQTT 5.0 publisher: QoS 1, QoS 2 to the end, one QoS 2 left at PUBREC,
    // and a retained message.
    let (mut publ, _) = persistent(first.addr, V5, "durable-pub").await;
    for i in 1..=20u16 {
        publ.send(&publish(
            &format!("d/{i}"),
            vec![i as u8],
            QoS::AtLeastOnce,
            i,
            false,
        ))
        .await;
        expect(&mut publ, Packet::PubAck(PubResponse::new(pid(i)))).await;
    }
    for i in 21..=25u16 {
        publ.send(&publish(
            &format!("e/{i}"),
            vec![i as u8],
            QoS::ExactlyOnce,
            i,
            false,
        ))
        .await;
        expect(&mut publ, Packet::PubRec(PubResponse::new(pid(i)))).await;
        publ.send(&Packet::PubRel(PubResponse::new(pid(i)))).await;
        expect(&mut publ, Packet::PubComp(PubResponse::new(pid(i)))).await;
    }
    publ.send(&publish("e/26", vec![26], QoS::ExactlyOnce, 26, false))
        .await;
    expect(&mut publ, Packet::PubRec(PubResponse::new(pid(26)))).await;
    publ.send(&publish(
        "r/1",
        b"kept".to_vec(),
        QoS::AtLeastOnce,
        27,
        true,
    ))
    .await;
    expect(&mut publ, Packet::PubAck(PubResponse::new(pid(27)))).await;

    // Crash: everything acknowledged is in the journal now.
    let copy = crash_copy(&journal);
    drop(publ);
    let (second, recovery) = durable_broker(copy).await;
    assert_eq!(
        (recovery.sessions, recovery.messages, recovery.retained),
        (2, 26, 1),
        "{recovery:?}"
    );

    // The publisher resends the PUBLISH it has no PUBCOMP for: acknowledged, not routed again.
    let (mut publ, present) = persistent(second.addr, V5, "durable-pub").await;
    assert!(present);
    let Packet::Publish(mut again) = publish("e/26", vec![26], QoS::ExactlyOnce, 26, false) else {
        unreachable!()
    };
    again.dup = true;
    publ.send(&Packet::Publish(again)).await;
    expect(&mut publ, Packet::PubRec(PubResponse::new(pid(26)))).await;
    publ.send(&Packet::PubRel(PubResponse::new(pid(26)))).await;
    expect(&mut publ, Packet::PubComp(PubResponse::new(pid(26)))).await;

    // The subscriber gets every message exactly once.
    let (mut sub, present) = persistent(second.addr, V311, "durable-sub").await;
    assert!(present);
    let (got, _, _) = receive_all(&mut sub, 26).await;
    for i in 1..=20u8 {
        assert_eq!(got.get(&format!("d/{i}")), Some(&vec![vec![i]]), "d/{i}");
    }
    for i in 21..=26u8 {
        assert_eq!(got.get(&format!("e/{i}")), Some(&vec![vec![i]]), "e/{i}");
    }

    // The retained message is there for a new subscriber.
    let mut late = RawClient::connect(second.addr, V311).await;
    late.send(&Packet::Connect(Connect::new(V311, "late".to_owned())))
        .await;
    assert!(matches!(late.recv().await, Some(Packet::ConnAck(_))));
    late.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("r/#", QoS::AtLeastOnce)].into(),
    }))
    .await;
    assert!(matches!(late.recv().await, Some(Packet::SubAck(_))));
    match late.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(
                (&*p.topic, &p.payload[..], p.retain),
                ("r/1", &b"kept"[..], true)
            );
        }
        other => panic!("expected the retained message, got {other:?}"),
    }
    first.broker.shutdown();
    second.broker.shutdown();
}

#[tokio::test]
async fn in_flight_messages_are_resent_with_dup_and_their_ids_after_a_crash() {
    let journal = Arc::new(MemoryJournal::new());
    let (first, _) = durable_broker(Arc::clone(&journal) as Arc<dyn Journal>).await;
    let (mut sub, _) = persistent(first.addr, V5, "inflight-sub").await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("f/#", QoS::ExactlyOnce)].into(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publ = RawClient::connect(first.addr, V5).await;
    publ.send(&Packet::Connect(Connect::new(
        V5,
        "inflight-pub".to_owned(),
    )))
    .await;
    assert!(matches!(publ.recv().await, Some(Packet::ConnAck(_))));
    for i in 1..=3u16 {
        publ.send(&publish(
            &format!("f/{i}"),
            vec![i as u8],
            QoS::AtLeastOnce,
            i,
            false,
        ))
        .await;
        expect(&mut publ, Packet::PubAck(PubResponse::new(pid(i)))).await;
    }
    // The subscriber receives all three and answers none: they are in flight.
    let mut sent = Vec::new();
    for _ in 0..3 {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                sent.push((p.topic.to_string(), p.packet_id.map(|i| i.get())))
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // Their in-flight state reaches the journal shortly after they were sent.
    settle(&journal, Table::Flights, 3).await;
    let copy = crash_copy(&journal);
    drop(sub);
    let (second, recovery) = durable_broker(copy).await;
    assert_eq!((recovery.sessions, recovery.messages), (1, 3));
    let (mut sub, present) = persistent(second.addr, V5, "inflight-sub").await;
    assert!(present);
    let mut resent = Vec::new();
    for _ in 0..3 {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                assert!(p.dup, "resent with DUP");
                resent.push((p.topic.to_string(), p.packet_id.map(|i| i.get())));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(resent, sent);
    first.broker.shutdown();
    second.broker.shutdown();
}

#[tokio::test]
async fn a_corrupt_journal_is_an_error_not_an_empty_start() {
    let journal = Arc::new(MemoryJournal::new());
    journal
        .commit(&[JournalOp::Put {
            table: Table::Messages,
            key: b"\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01".to_vec(),
            value: b"not a message".to_vec(),
        }])
        .expect("commit");
    let error = Broker::builder()
        .journal(journal)
        .expect_err("a corrupt journal is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("messages"), "{error}");
}

/// A journal that fails while `failing` is set.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryJournal,
    failing: std::sync::atomic::AtomicBool,
}

impl Journal for Flaky {
    fn commit(&self, ops: &[JournalOp]) -> std::io::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("disk on fire"));
        }
        self.inner.commit(ops)
    }

    fn load(&self) -> std::io::Result<Vec<mqttx_broker::Entry>> {
        self.inner.load()
    }
}

#[tokio::test]
async fn a_failing_journal_holds_acknowledgements_until_it_recovers() {
    let journal = Arc::new(Flaky::default());
    let (broker, _) = durable_broker(Arc::clone(&journal) as Arc<dyn Journal>).await;
    let (mut sub, _) = persistent(broker.addr, V5, "flaky-sub").await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("g/#", QoS::AtLeastOnce)].into(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    journal
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut publ = RawClient::connect(broker.addr, V5).await;
    publ.send(&Packet::Connect(Connect::new(V5, "flaky-pub".to_owned())))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::ConnAck(_))));
    publ.send(&publish("g/1", vec![1], QoS::AtLeastOnce, 1, false))
        .await;
    // No PUBACK while the journal cannot take the message.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), publ.recv())
            .await
            .is_err(),
        "acknowledged although the journal failed"
    );
    journal
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    expect(&mut publ, Packet::PubAck(PubResponse::new(pid(1)))).await;
    // Acknowledged once it is in the journal (the subscriber has not answered it yet).
    assert_eq!(journal.inner.len(Table::Messages), 1);
    broker.broker.shutdown();
}

#[tokio::test]
async fn a_qos2_publish_goes_out_only_once_its_packet_identifier_is_journaled() {
    let journal = Arc::new(MemoryJournal::new());
    let (first, _) = durable_broker(Arc::new(Slow(Arc::clone(&journal)))).await;
    let (mut sub, _) = persistent(first.addr, V5, "gate-sub").await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("h/#", QoS::ExactlyOnce)].into(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publ = RawClient::connect(first.addr, V5).await;
    publ.send(&Packet::Connect(Connect::new(V5, "gate-pub".to_owned())))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::ConnAck(_))));
    publ.send(&publish("h/1", vec![1], QoS::ExactlyOnce, 9, false))
        .await;
    let Some(Packet::Publish(first_copy)) = sub.recv().await else {
        panic!("the subscriber receives the message")
    };
    // Crash the moment the PUBLISH arrived: its identifier must already be journaled, so the
    // restarted broker resends it under the same one (the client may have it already).
    let copy = crash_copy(&journal);
    drop(sub);
    let (second, _) = durable_broker(copy).await;
    let (mut sub, present) = persistent(second.addr, V5, "gate-sub").await;
    assert!(present);
    match sub.recv().await {
        Some(Packet::Publish(again)) => {
            assert!(again.dup);
            assert_eq!(again.packet_id, first_copy.packet_id);
            assert_eq!(&again.payload[..], &[1]);
        }
        other => panic!("expected the resent PUBLISH, got {other:?}"),
    }
    first.broker.shutdown();
    second.broker.shutdown();
}

#[tokio::test]
async fn a_client_identifier_too_long_to_journal_is_served_from_memory() {
    let journal = Arc::new(MemoryJournal::new());
    let (broker, _) = durable_broker(Arc::clone(&journal) as Arc<dyn Journal>).await;
    // Longer than any journal key may be (MQTT allows identifiers up to 65 535 bytes).
    let long = "L".repeat(65_534);
    let (mut sub, _) = persistent(broker.addr, V5, &long).await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("long/#", QoS::AtLeastOnce)].into(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publ = RawClient::connect(broker.addr, V5).await;
    publ.send(&Packet::Connect(Connect::new(V5, "long-pub".to_owned())))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::ConnAck(_))));
    // Acknowledged and delivered: the journal never sees a key it must refuse.
    publ.send(&publish("long/1", vec![1], QoS::AtLeastOnce, 1, false))
        .await;
    expect(&mut publ, Packet::PubAck(PubResponse::new(pid(1)))).await;
    assert!(matches!(sub.recv().await, Some(Packet::Publish(_))));
    assert_eq!(journal.len(Table::Sessions), 0);
    broker.broker.shutdown();
}

#[tokio::test]
async fn a_delayed_will_survives_a_crash_and_is_published_when_due() {
    let journal = Arc::new(MemoryJournal::new());
    let (first, _) = durable_broker(Arc::clone(&journal) as Arc<dyn Journal>).await;
    let mut client = RawClient::connect(first.addr, V5).await;
    let mut connect = Connect::new(V5, "will-client".to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    let mut will = Box::new(mqttx_broker::codec::Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        topic: "wills/gone".into(),
        payload: b"bye".to_vec().into(),
    });
    will.properties.will_delay_interval = Some(1);
    connect.will = Some(will);
    client.send(&Packet::Connect(connect)).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    // Gone without DISCONNECT: the Will waits its delay, and is journaled.
    drop(client);
    settle(&journal, Table::Wills, 1).await;
    let copy = crash_copy(&journal);
    first.broker.shutdown();
    let (second, recovery) = durable_broker(copy).await;
    assert_eq!((recovery.sessions, recovery.wills), (1, 1));
    let mut watcher = RawClient::connect(second.addr, V5).await;
    watcher
        .send(&Packet::Connect(Connect::new(
            V5,
            "will-watcher".to_owned(),
        )))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::ConnAck(_))));
    watcher
        .send(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![SubscribeFilter::new("wills/#", QoS::AtMostOnce)].into(),
        }))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    // Published by the restarted broker's housekeeping once due (within WAIT).
    match watcher.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!((&*p.topic, &p.payload[..]), ("wills/gone", &b"bye"[..]))
        }
        other => panic!("expected the Will, got {other:?}"),
    }
    second.broker.shutdown();
}
