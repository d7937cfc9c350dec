//! MQTT 5.0 request/response: a responder that upper-cases payloads and a requester that
//! awaits each answer, both in this process.
//!
//! ```text
//! mqttx broker --bind 127.0.0.1:1883 &
//! cargo run -p mqttx-client --example request -- 127.0.0.1 1883
//! ```

use std::time::Duration;

use mqttx_client::codec::{Publish, QoS};
use mqttx_client::{Client, ConnectOptions, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;

    let (responder, mut requests) =
        Client::connect(ConnectOptions::new(host.clone(), port, "upper-service")).await?;
    let granted = responder
        .subscribe("service/upper", QoS::AtLeastOnce)
        .await?;
    println!("service subscribed: {granted:?}");
    tokio::spawn(async move {
        while let Some(event) = requests.recv().await {
            let Event::Message(request) = event else {
                continue;
            };
            let Some(to) = request.properties.response_topic.clone() else {
                continue;
            };
            let mut answer = Publish::new(to.into_owned(), request.payload.to_ascii_uppercase());
            answer.qos = QoS::AtLeastOnce;
            answer.properties.correlation_data = request.properties.correlation_data.clone();
            let _ = responder.publish_message(answer).await;
        }
    });

    let (client, _events) = Client::connect(ConnectOptions::new(host, port, "requester")).await?;
    for word in ["hello", "mqtt"] {
        let response = client
            .request("service/upper", word, Duration::from_secs(5))
            .await?;
        println!("{word} -> {}", String::from_utf8_lossy(&response.payload));
    }
    client.disconnect().await?;
    Ok(())
}
