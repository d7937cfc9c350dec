//! Loopback tests against our own broker (`mqttx-broker`, in this process).

mod common;

use common::{TestBroker, WAIT};
use mqttx_client::codec::{ProtocolVersion, QoS};
use mqttx_client::{Client, Event};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trips_v5() {
    let b = TestBroker::ours().await;
    common::qos_round_trips(&b, ProtocolVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trips_v311() {
    let b = TestBroker::ours().await;
    common::qos_round_trips(&b, ProtocolVersion::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_from_inside_event_handling_does_not_deadlock() {
    let b = TestBroker::ours().await;
    common::publish_from_event_handling(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_restart_restores_subscriptions_and_qos1() {
    let mut b = TestBroker::ours().await;
    common::reconnect_restores_subscriptions_and_qos1(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_with_a_small_receive_maximum() {
    // [MQTT-4.9.0-2] at most Receive Maximum (here 2) unacknowledged QoS 1/2 PUBLISH packets;
    // our broker disconnects with 0x93 if the client sends more, so 100 publishes in a burst
    // only succeed if the client holds the rest back.
    let mut config = mqttx_broker::Config::default();
    config.receive_maximum = 2;
    let b = TestBroker::ours_with(config).await;
    let o = common::options(b.port(), "window", ProtocolVersion::V5);
    let (client, mut events) = timeout(WAIT, Client::connect(o))
        .await
        .expect("in time")
        .expect("connects");
    let mut handles = Vec::new();
    for i in 0..100u32 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        handles.push(
            client
                .publish("fc", i.to_be_bytes().to_vec(), qos, false)
                .await
                .expect("queued"),
        );
    }
    for h in handles {
        let code = timeout(WAIT, h)
            .await
            .expect("in time")
            .expect("acknowledged");
        assert!(!code.is_error(), "{code}");
    }
    assert!(
        !std::iter::from_fn(|| events.try_recv()).any(|e| matches!(e, Event::Disconnected { .. })),
        "the broker never disconnected us"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_round_trip() {
    let b = TestBroker::ours().await;
    common::topic_aliases_round_trip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response() {
    let b = TestBroker::ours().await;
    common::request_response(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_survives_a_client_restart() {
    let mut b = TestBroker::ours().await;
    common::file_store_survives_a_restart(&mut b, "ours").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_acknowledgement() {
    // With manual_ack the application acknowledges a QoS 1 message itself, once.
    let b = TestBroker::ours().await;
    let mut o = common::options(b.port(), "manual", ProtocolVersion::V5);
    o.session.manual_ack = true;
    let (client, mut events) = timeout(WAIT, Client::connect(o))
        .await
        .expect("in time")
        .expect("connects");
    client
        .subscribe("ma/#", QoS::AtLeastOnce)
        .await
        .expect("sent")
        .expect("granted");
    let h = client
        .publish("ma/1", b"x".to_vec(), QoS::AtLeastOnce, false)
        .await
        .expect("queued");
    timeout(WAIT, h).await.expect("in time").expect("acked");
    let m = common::next_message(&mut events).await;
    assert_eq!(m.topic, "ma/1");
    assert!(
        client.ack(&m).await.expect("driver up"),
        "awaiting its PUBACK"
    );
    assert!(!client.ack(&m).await.expect("driver up"), "only once");
}
