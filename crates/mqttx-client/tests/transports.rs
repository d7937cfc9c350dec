//! The client over TLS, WebSocket and secure WebSocket (connectors from the transport crates,
//! plugged in as closures) to our broker and over TLS to Eclipse Mosquitto, and through an
//! HTTP CONNECT proxy written here. Certificates are made at test time with rcgen.

mod common;
#[path = "../../mqttx-transport-tls/tests/support/pki.rs"]
mod pki;

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{WAIT, free_port, mosquitto_binary};
use mqttx_broker::{Broker, Config, Listener};
use mqttx_client::codec::QoS;
use mqttx_client::{Client, ConnectOptions, Connector, Event};
use mqttx_transport_tcp::HttpProxy;
use mqttx_transport_tls::{ClientOptions, TlsConnector};
use mqttx_transport_ws::WsConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Subscribes, publishes at QoS 1 and receives it back, then disconnects.
async fn round_trip<C: Connector>(connector: C, id: &str) {
    let options = ConnectOptions::new("unused", 0, id);
    let (client, mut events) = timeout(WAIT, Client::connect_with(options, connector))
        .await
        .expect("connects in time")
        .unwrap_or_else(|e| panic!("{id}: {e}: {:?}", std::error::Error::source(&e)));
    let topic = format!("{id}/t");
    let granted = timeout(WAIT, client.subscribe(topic.clone(), QoS::AtLeastOnce))
        .await
        .expect("in time")
        .expect("subscribed");
    assert_eq!(granted, Ok(QoS::AtLeastOnce));
    let ack = client
        .publish(
            topic.clone(),
            &b"over the transport"[..],
            QoS::AtLeastOnce,
            false,
        )
        .await
        .expect("queued");
    timeout(WAIT, ack)
        .await
        .expect("acked in time")
        .expect("acked");
    loop {
        match timeout(WAIT, events.recv())
            .await
            .expect("an event in time")
        {
            Some(Event::Message(m)) => {
                assert_eq!(m.topic, topic);
                assert_eq!(&m.payload[..], b"over the transport");
                break;
            }
            Some(_) => {}
            None => panic!("{id}: events ended"),
        }
    }
    timeout(WAIT, client.disconnect())
        .await
        .expect("in time")
        .expect("disconnects");
}

/// Our broker with `listeners`, on a task; their addresses in order.
async fn our_broker(listeners: Vec<Listener>) -> Vec<SocketAddr> {
    let mut config = Config::default();
    config.listeners = listeners;
    let server = Broker::bind(config).await.expect("binds");
    let addrs = server.local_addrs().expect("addresses");
    tokio::spawn(server.run());
    addrs.into_iter().map(|(_, a)| a).collect()
}

fn any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// TLS to `addr`, verifying the certificate for `name`.
fn tls_to(tls: TlsConnector, addr: SocketAddr, name: &'static str) -> impl Connector {
    move || {
        let tls = tls.clone();
        async move { tls.connect(name, TcpStream::connect(addr).await?).await }
    }
}

fn ws_to(ws: WsConnector) -> impl Connector {
    move || {
        let ws = ws.clone();
        async move { ws.connect().await }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ws_and_wss_to_our_broker() {
    let pki = pki::make();
    let addrs = our_broker(vec![
        Listener::tls(any(), &pki.server_cert, &pki.server_key),
        Listener::ws(any()),
        Listener::wss(any(), &pki.server_cert, &pki.server_key),
    ])
    .await;
    let tls = TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("tls");
    round_trip(tls_to(tls.clone(), addrs[0], "localhost"), "ours-tls").await;
    round_trip(tls_to(tls.clone(), addrs[0], "127.0.0.1"), "ours-tls-ip").await;
    let ws = WsConnector::new(&format!("ws://{}/mqtt", addrs[1])).expect("url");
    round_trip(ws_to(ws), "ours-ws").await;
    let wss = WsConnector::new(&format!("wss://localhost:{}/mqtt", addrs[2].port()))
        .expect("url")
        .with_tls(tls);
    round_trip(ws_to(wss), "ours-wss").await;

    // A client that does not trust the broker's CA never gets to MQTT.
    let untrusting =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.other_ca)).expect("tls");
    let mut options = ConnectOptions::new("unused", 0, "untrusting");
    options.reconnect = false;
    let refused = timeout(
        WAIT,
        Client::connect_with(options, tls_to(untrusting, addrs[0], "localhost")),
    )
    .await
    .expect("in time");
    assert!(refused.is_err());
}

/// Mosquitto with a TLS listener on a free port, killed (by its pid) when dropped.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_mosquitto() {
    let pki = pki::make();
    let port = free_port();
    let conf = pki.dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .expect("config");
    let _mosquitto = Mosquitto(
        Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("mosquitto listens");
    let tls = TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("tls");
    round_trip(tls_to(tls, addr, "localhost"), "mosquitto-tls").await;
}

/// A small HTTP CONNECT proxy: checks Basic credentials `user:pass` (407 otherwise), connects
/// to the target and relays bytes both ways. Counts the tunnels it opened.
async fn proxy() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(any()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&tunnels);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or("")
                    .to_owned();
                // "user:pass" in Base64.
                if !head.contains("\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n") {
                    let _ = client
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, tunnels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_ws_and_wss_through_an_http_proxy() {
    let pki = pki::make();
    let addrs = our_broker(vec![
        Listener::tcp(any()),
        Listener::tls(any(), &pki.server_cert, &pki.server_key),
        Listener::ws(any()),
        Listener::wss(any(), &pki.server_cert, &pki.server_key),
    ])
    .await;
    let (proxy_addr, tunnels) = proxy().await;
    let proxy = HttpProxy::new("127.0.0.1", proxy_addr.port()).with_basic_auth("user", "pass");

    let p = proxy.clone();
    let tcp_port = addrs[0].port();
    let tcp = move || {
        let p = p.clone();
        async move { p.connect("127.0.0.1", tcp_port).await }
    };
    round_trip(tcp, "proxied-tcp").await;

    // TLS inside the tunnel, verified for the broker's name, not the proxy's.
    let tls = TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("tls");
    let (p, t) = (proxy.clone(), tls.clone());
    let tls_port = addrs[1].port();
    let over_tls = move || {
        let (p, t) = (p.clone(), t.clone());
        async move {
            t.connect("localhost", p.connect("127.0.0.1", tls_port).await?)
                .await
        }
    };
    round_trip(over_tls, "proxied-tls").await;

    let ws = WsConnector::new(&format!("ws://{}/mqtt", addrs[2]))
        .expect("url")
        .with_proxy(proxy.clone());
    round_trip(ws_to(ws), "proxied-ws").await;
    let wss = WsConnector::new(&format!("wss://127.0.0.1:{}/mqtt", addrs[3].port()))
        .expect("url")
        .with_tls(tls)
        .with_proxy(proxy);
    round_trip(ws_to(wss), "proxied-wss").await;
    assert_eq!(tunnels.load(Ordering::Relaxed), 4);

    // Wrong credentials: the proxy's 407 comes back as PermissionDenied with the status.
    let wrong = HttpProxy::new("127.0.0.1", proxy_addr.port()).with_basic_auth("user", "nope");
    let err = wrong.connect("127.0.0.1", tcp_port).await.expect_err("407");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("407"), "{err}");
    // A target that cannot be written in a request line is refused before any byte is sent.
    let err = wrong
        .connect("evil\r\nHost: x", 1)
        .await
        .expect_err("invalid");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(tunnels.load(Ordering::Relaxed), 4);
}
