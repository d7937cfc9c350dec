//! Subscribes, publishes at QoS 1, awaits the PUBACK and prints what comes back.
//!
//! ```text
//! mqttx broker --bind 127.0.0.1:1883 &
//! cargo run -p mqttx-client --example pubsub -- 127.0.0.1 1883
//! ```

use std::time::Duration;

use mqttx_client::codec::QoS;
use mqttx_client::{Client, ConnectOptions, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;

    let (client, mut events) =
        Client::connect(ConnectOptions::new(host, port, "pubsub-example")).await?;
    let granted = client
        .subscribe("mqttx/example/#", QoS::AtLeastOnce)
        .await?;
    println!("subscribed: {granted:?}");

    let ack = client
        .publish(
            "mqttx/example/hello",
            "hello from mqttx-client",
            QoS::AtLeastOnce,
            false,
        )
        .await?;
    println!("PUBACK reason code: {}", ack.await?);

    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.recv().await {
            if let Event::Message(msg) = event {
                println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
                return;
            }
        }
    });
    let _ = wait.await;
    client.disconnect().await?;
    Ok(())
}
