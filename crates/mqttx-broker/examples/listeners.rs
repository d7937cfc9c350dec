//! One broker on four listeners: MQTT over TCP (1883), TLS (8883), WebSocket (8083) and
//! secure WebSocket (8084), all on loopback, from a PEM certificate chain and key
//! (docs/transports.md shows how to make a test CA and these files).
//!
//! ```text
//! cargo run -p mqttx-broker --example listeners -- pki/server.pem pki/server.key
//! mosquitto_pub -h localhost -p 8883 --cafile pki/ca.pem -t demo -m 'over TLS'
//! cargo run -p mqttx-client --example transports -- wss://localhost:8084/mqtt --ca pki/ca.pem
//! ```

use mqttx_broker::{Broker, Config, Listener};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err("usage: listeners CERT.pem KEY.pem".into());
    };

    let mut config = Config::default();
    config.listeners = vec![
        Listener::tcp("127.0.0.1:1883".parse()?),
        Listener::tls("127.0.0.1:8883".parse()?, &cert, &key),
        // The WebSocket path is `/mqtt` unless `with_path` says otherwise.
        Listener::ws("127.0.0.1:8083".parse()?),
        Listener::wss("127.0.0.1:8084".parse()?, &cert, &key),
    ];
    // For mutual TLS, add `.with_client_ca("pki/ca.pem")` to the TLS listeners: clients must
    // then present a certificate signed by that CA, and `Handler::on_connect` sees it as
    // `ConnectRequest::peer_identity`.

    // Certificates are loaded here: a missing or bad file is an error before anything runs.
    let server = Broker::builder().config(config).bind().await?;
    for (kind, addr) in server.local_addrs()? {
        println!("{kind:?} on {addr}");
    }
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
