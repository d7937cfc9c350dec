//! Loopback tests against our own broker (`mqttx-broker`, in this process).

mod common;

use common::TestBroker;
use mqttx_client::codec::ProtocolVersion;

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
