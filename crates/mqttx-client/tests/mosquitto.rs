//! Loopback tests against Eclipse Mosquitto (Debian's `mosquitto`), a broker no one here
//! wrote, started as a child process on a free loopback port. Fails if it is not installed.

mod common;

use common::TestBroker;
use mqttx_client::codec::ProtocolVersion;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_qos_0_1_2_round_trips_v5() {
    let b = TestBroker::mosquitto("rt5").await;
    common::qos_round_trips(&b, ProtocolVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_qos_0_1_2_round_trips_v311() {
    let b = TestBroker::mosquitto("rt311").await;
    common::qos_round_trips(&b, ProtocolVersion::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_publish_from_inside_event_handling_does_not_deadlock() {
    let b = TestBroker::mosquitto("reentrant").await;
    common::publish_from_event_handling(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_reconnect_after_restart_restores_subscriptions_and_qos1() {
    let mut b = TestBroker::mosquitto("restart").await;
    common::reconnect_restores_subscriptions_and_qos1(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_outbound_topic_aliases_round_trip() {
    let b = TestBroker::mosquitto("aliases").await;
    common::topic_aliases_round_trip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_request_response() {
    let b = TestBroker::mosquitto("reqresp").await;
    common::request_response(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_file_store_survives_a_client_restart() {
    let mut b = TestBroker::mosquitto("store").await;
    common::file_store_survives_a_restart(&mut b, "mosquitto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_flow_control_with_a_small_receive_maximum() {
    // Mosquitto advertises `max_inflight_messages` as its Receive Maximum.
    let b = TestBroker::mosquitto_with("window", "max_inflight_messages 2\n").await;
    common::flow_control_with_a_small_receive_maximum(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_in_flight_qos1_survives_a_broker_restart() {
    let mut b = TestBroker::mosquitto("inflight").await;
    common::in_flight_qos1_survives_a_broker_restart(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_keepalive_timeout_against_a_broker_that_stops_answering() {
    let mut b = TestBroker::mosquitto("sleepy").await;
    common::keepalive_timeout_against_a_stopped_broker(&mut b).await;
}
