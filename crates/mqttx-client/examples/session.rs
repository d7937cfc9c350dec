//! A persistent session: the broker keeps the subscription and queues messages while the
//! client is away (Clean Start 0, a Session Expiry Interval), and a `FileStore` keeps the
//! client's side (unacknowledged and queued messages, subscriptions) across process restarts.
//!
//! Run it twice. The first run subscribes and leaves; a message published meanwhile waits in
//! the broker; the second run resumes the session (Session Present 1) and receives it.
//!
//! ```text
//! mqttx broker --bind 127.0.0.1:1883 &
//! cargo run -p mqttx-client --example session -- 127.0.0.1 1883 /tmp/mqttx-session
//! mosquitto_pub -p 1883 -q 1 -t mqttx/example/session -m "while you were away"
//! cargo run -p mqttx-client --example session -- 127.0.0.1 1883 /tmp/mqttx-session
//! ```

use std::sync::Arc;
use std::time::Duration;

use mqttx_client::codec::QoS;
use mqttx_client::{Client, ConnectOptions, Event, FileStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;
    let dir = args.next().map_or_else(
        || std::env::temp_dir().join("mqttx-session-example"),
        Into::into,
    );

    // The session is keyed by this client identifier, in the broker and in the store.
    let mut options = ConnectOptions::new(host, port, "session-example");
    options.session.clean_start = false;
    options.session.session_expiry_interval = 3600;
    options.store = Some(Arc::new(FileStore::new(&dir)));
    let (client, mut events) = Client::connect(options).await?;
    if let Some(Event::Connected { session_present }) = events.recv().await {
        println!(
            "connected, session present: {session_present}, state in {}",
            dir.display()
        );
    }

    // Subscribing again is harmless; a resumed session has the subscription already.
    let granted = client
        .subscribe("mqttx/example/session", QoS::AtLeastOnce)
        .await?;
    println!("subscribed: {granted:?}");

    // Messages queued by the broker while we were away arrive now.
    let wait = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(event) = events.recv().await {
            if let Event::Message(msg) = event {
                println!("{}: {}", msg.topic, String::from_utf8_lossy(&msg.payload));
            }
        }
    });
    let _ = wait.await;

    // Leaves with the session kept by the broker for the Session Expiry Interval.
    client.disconnect().await?;
    Ok(())
}
