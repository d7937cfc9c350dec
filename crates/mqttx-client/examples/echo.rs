//! An echo service: every message on `echo/in` is published back on `echo/out`, from inside
//! the event loop (which cannot deadlock), and the client reconnects on its own with backoff.
//!
//! ```text
//! mqttx broker --bind 127.0.0.1:1883 &
//! cargo run -p mqttx-client --example echo -- 127.0.0.1 1883
//! mosquitto_pub -h 127.0.0.1 -t echo/in -m hi
//! ```

use mqttx_client::codec::QoS;
use mqttx_client::{Client, ConnectOptions, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;

    let (client, mut events) =
        Client::connect(ConnectOptions::new(host, port, "echo-example")).await?;
    let granted = client.subscribe("echo/in", QoS::AtLeastOnce).await?;
    eprintln!("subscribed: {granted:?}");
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(msg) => {
                // Returns once queued; the PUBACK is not awaited here.
                client
                    .publish(
                        "echo/out",
                        msg.payload.into_owned(),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await?;
            }
            Event::Disconnected { reason_code } => {
                eprintln!("disconnected ({reason_code}), reconnecting")
            }
            Event::Resubscribed(results) => eprintln!("resubscribed: {results:?}"),
            Event::Stopped(code) => {
                eprintln!("stopped: {code}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
