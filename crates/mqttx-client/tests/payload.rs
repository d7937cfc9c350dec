//! Typed payloads (features `json` and `protobuf`, on in this crate's tests) through our
//! broker: published as values, received and decoded, with their Content Type over MQTT 5.0.

mod common;

use common::{TestBroker, WAIT, next_message, options};
use mqttx_client::Client;
use mqttx_client::codec::{ProtocolVersion, QoS, ReasonCode};
use mqttx_client::payload::{JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE, PayloadExt};
use tokio::time::timeout;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Reading {
    room: String,
    celsius: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(string, tag = "1")]
    room: String,
    #[prost(sint32, repeated, tag = "2")]
    deltas: Vec<i32>,
}

async fn round_trip(version: ProtocolVersion) {
    let b = TestBroker::ours().await;
    let (client, mut events) = timeout(WAIT, Client::connect(options(b.port(), "typed", version)))
        .await
        .expect("in time")
        .expect("connects");
    client
        .subscribe("typed/#", QoS::AtLeastOnce)
        .await
        .expect("sent")
        .expect("granted");
    let v5 = version.is_v5();

    let reading = Reading {
        room: "kitchen".into(),
        celsius: 21.5,
    };
    let h = client
        .publish_json("typed/json", &reading, QoS::AtLeastOnce, false)
        .await
        .expect("queued");
    assert_eq!(
        timeout(WAIT, h).await.expect("in time").expect("acked"),
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut events).await;
    assert_eq!(m.decode_json::<Reading>().expect("decodes"), reading);
    assert_eq!(
        m.properties.content_type.as_deref(),
        v5.then_some(JSON_CONTENT_TYPE)
    );
    assert_eq!(m.properties.payload_format_indicator, v5.then_some(true));
    // Another shape than the one published (an object is not an array): an error.
    assert!(m.decode_json::<Vec<u8>>().is_err());

    let sample = Sample {
        room: "hall".into(),
        deltas: vec![-3, 0, 7],
    };
    let h = client
        .publish_protobuf("typed/proto", &sample, QoS::AtLeastOnce, false)
        .await
        .expect("queued");
    assert_eq!(
        timeout(WAIT, h).await.expect("in time").expect("acked"),
        ReasonCode::SUCCESS
    );
    let m = next_message(&mut events).await;
    assert_eq!(m.decode_protobuf::<Sample>().expect("decodes"), sample);
    assert_eq!(
        m.properties.content_type.as_deref(),
        v5.then_some(PROTOBUF_CONTENT_TYPE)
    );
    assert!(m.decode_json::<Reading>().is_err());

    // A value serde_json refuses (a map with non-string keys) is a typed error.
    let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let r = client
        .publish_json("typed/json", &bad, QoS::AtMostOnce, false)
        .await;
    assert!(matches!(r, Err(mqttx_client::Error::Payload(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_round_trips_v5() {
    round_trip(ProtocolVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_round_trips_v311() {
    round_trip(ProtocolVersion::V311).await;
}
