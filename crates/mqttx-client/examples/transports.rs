//! Connects over TCP, TLS, WebSocket or secure WebSocket, chosen by the URL, optionally
//! through an HTTP proxy: subscribes to `demo/#`, publishes one message at QoS 1 and prints
//! it when it comes back. The connectors come from the transport crates and plug into
//! `Client::connect_with` as a closure.
//!
//! ```text
//! mqttx broker --bind 127.0.0.1:1883 --tls-bind 127.0.0.1:8883 --ws-bind 127.0.0.1:8083 \
//!     --wss-bind 127.0.0.1:8084 --cert server.pem --key server.key &
//! cargo run -p mqttx-client --example transports -- mqtt://127.0.0.1:1883
//! cargo run -p mqttx-client --example transports -- mqtts://localhost:8883 --ca ca.pem
//! cargo run -p mqttx-client --example transports -- ws://127.0.0.1:8083/mqtt
//! cargo run -p mqttx-client --example transports -- wss://localhost:8084/mqtt --ca ca.pem
//! cargo run -p mqttx-client --example transports -- mqtts://localhost:8883 --ca ca.pem \
//!     --cert client.pem --key client.key --proxy 127.0.0.1:3128 --proxy-auth user:pass
//! ```

use std::io;
use std::time::Duration;

use mqttx_client::codec::QoS;
use mqttx_client::{Client, ConnectOptions, Event};
use mqttx_transport_tcp::HttpProxy;
use mqttx_transport_tls::{ClientOptions, TlsConnector};
use mqttx_transport_ws::WsConnector;
use tokio::io::{AsyncRead, AsyncWrite};

/// Any byte stream, boxed: the closure below returns one type for every transport.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `host:port` of an `mqtt://` or `mqtts://` URL.
fn host_port(rest: &str, default_port: u16) -> Result<(String, u16), String> {
    let authority = rest.split('/').next().unwrap_or("");
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.ends_with(']') => {
            let port = p.parse().map_err(|_| format!("bad port in {rest:?}"))?;
            Ok((h.trim_matches(['[', ']']).to_owned(), port))
        }
        _ => Ok((authority.trim_matches(['[', ']']).to_owned(), default_port)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let mut tls_options = ClientOptions::default();
    let mut proxy: Option<HttpProxy> = None;
    let mut proxy_auth: Option<(String, String)> = None;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ca" => tls_options.ca_file = Some(value.into()),
            "--cert" => tls_options.client_cert = Some(value.into()),
            "--key" => tls_options.client_key = Some(value.into()),
            "--proxy" => {
                let (host, port) = host_port(&value, 3128)?;
                proxy = Some(HttpProxy::new(host, port));
            }
            "--proxy-auth" => {
                let (user, pass) = value.split_once(':').ok_or("--proxy-auth user:pass")?;
                proxy_auth = Some((user.to_owned(), pass.to_owned()));
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if let (Some(p), Some((user, pass))) = (proxy.take(), &proxy_auth) {
        proxy = Some(p.with_basic_auth(user, pass));
    }
    let tls = TlsConnector::new(&tls_options)?;

    // One closure per scheme, each returning a boxed stream.
    let connector = {
        let url = url.clone();
        move || {
            let (url, tls, proxy) = (url.clone(), tls.clone(), proxy.clone());
            async move {
                let tcp = |host: String, port: u16| {
                    let proxy = proxy.clone();
                    async move {
                        match proxy {
                            Some(p) => p.connect(&host, port).await,
                            None => tokio::net::TcpStream::connect((host.as_str(), port)).await,
                        }
                    }
                };
                let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
                let stream: Box<dyn Io> = if let Some(rest) = url.strip_prefix("mqtt://") {
                    let (host, port) = host_port(rest, 1883).map_err(invalid)?;
                    Box::new(tcp(host, port).await?)
                } else if let Some(rest) = url.strip_prefix("mqtts://") {
                    let (host, port) = host_port(rest, 8883).map_err(invalid)?;
                    Box::new(tls.connect(&host, tcp(host.clone(), port).await?).await?)
                } else {
                    let mut ws = WsConnector::new(&url)?.with_tls(tls);
                    if let Some(p) = proxy {
                        ws = ws.with_proxy(p);
                    }
                    Box::new(ws.connect().await?)
                };
                Ok(stream)
            }
        }
    };

    let options = ConnectOptions::new("unused", 0, "transports-example");
    let (client, mut events) = Client::connect_with(options, connector).await?;
    client
        .subscribe("demo/#", QoS::AtLeastOnce)
        .await?
        .map_err(|c| format!("{c}"))?;
    let ack = client
        .publish(
            "demo/transports",
            format!("hello over {url}"),
            QoS::AtLeastOnce,
            false,
        )
        .await?;
    println!("PUBACK reason {}", ack.await?);
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if let Event::Message(msg) = event {
                return Some(format!(
                    "{} {}",
                    msg.topic,
                    String::from_utf8_lossy(&msg.payload)
                ));
            }
        }
        None
    })
    .await?;
    println!("received: {}", got.unwrap_or_default());
    client.disconnect().await?;
    Ok(())
}
