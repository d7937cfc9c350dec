//! Loopback tests against our own broker (`mqttx-broker`, in this process).

mod common;

use common::{TestBroker, WAIT};
use mqttx_client::Client;
use mqttx_client::codec::{ProtocolVersion, QoS};
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
    // our broker disconnects with 0x93 if the client sends more.
    let mut config = mqttx_broker::Config::default();
    config.receive_maximum = 2;
    let b = TestBroker::ours_with(config).await;
    common::flow_control_with_a_small_receive_maximum(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_qos1_survives_a_broker_restart() {
    let mut b = TestBroker::ours().await;
    common::in_flight_qos1_survives_a_broker_restart(&mut b).await;
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

/// A broker handler with a two-step challenge: "hello" → "challenge" → "answer:challenge".
struct TwoStep;

impl mqttx_broker::Handler for TwoStep {
    type Session = ();

    async fn on_auth(
        &self,
        _client_id: &str,
        req: &mqttx_broker::AuthRequest,
    ) -> mqttx_broker::AuthDecision {
        use mqttx_broker::AuthDecision;
        match req.data.as_deref() {
            Some(b"hello") => AuthDecision::Continue(Some(bytes::Bytes::from_static(b"challenge"))),
            Some(b"answer:challenge") => AuthDecision::Success(None),
            _ => AuthDecision::Failure(mqttx_client::codec::ReasonCode::NOT_AUTHORIZED),
        }
    }
}

#[derive(Debug)]
struct Answers;

impl mqttx_client::Authenticator for Answers {
    fn step(&self, method: &str, server_data: &[u8]) -> Vec<u8> {
        assert_eq!(method, "TWO-STEP");
        [&b"answer:"[..], server_data].concat()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_authentication_with_our_broker() {
    let mut config = mqttx_broker::Config::default();
    config.bind = "127.0.0.1:0".parse().expect("address");
    let server = mqttx_broker::Broker::builder()
        .config(config)
        .handler(TwoStep)
        .bind()
        .await
        .expect("binds");
    let port = server.local_addr().expect("bound").port();
    let broker = server.broker().clone();
    tokio::spawn(server.run());
    let mut o = common::options(port, "auth", ProtocolVersion::V5);
    o.session.properties.authentication_method = Some("TWO-STEP".into());
    o.session.properties.authentication_data = Some(b"hello".to_vec().into());
    o.authenticator = Some(std::sync::Arc::new(Answers));
    let (client, _events) = timeout(WAIT, Client::connect(o.clone()))
        .await
        .expect("in time")
        .expect("authenticated");
    // Re-authentication (AUTH 0x19) goes through the same two steps.
    timeout(WAIT, client.reauthenticate(b"hello".to_vec()))
        .await
        .expect("in time")
        .expect("re-authenticated");
    client.disconnect().await.expect("disconnects");
    // Without an authenticator the challenge goes unanswered: refused or timed out.
    o.authenticator = None;
    o.connect_timeout = std::time::Duration::from_secs(2);
    o.reconnect = false;
    let r = timeout(WAIT, Client::connect(o)).await.expect("in time");
    assert!(r.is_err(), "{r:?}");
    broker.shutdown();
}
