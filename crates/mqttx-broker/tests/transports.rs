//! The broker's TLS, WebSocket and secure WebSocket listeners with real clients:
//! `mosquitto_pub`/`mosquitto_sub` over TLS (with and without a client certificate), Eclipse
//! Paho for Python over WebSocket and secure WebSocket, and hostile handshakes and frames.
//!
//! Certificates are made at test time with rcgen (`mqttx-transport-tls/tests/support/pki.rs`).
//! Every child process is started with `kill_on_drop(true)` and every wait has a timeout.

mod common;
#[path = "../../mqttx-transport-tls/tests/support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{RawClient, WAIT, loopback_config, run};
use futures_util::SinkExt;
use mqttx_broker::codec::{Connect, OwnedPacket, Packet, ProtocolVersion};
use mqttx_broker::{
    Broker, Config, ConnectRefusal, ConnectRequest, Handler, Listener, PeerIdentity,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Records the peer identity of every CONNECT.
#[derive(Clone, Default)]
struct Identities(Arc<Mutex<Vec<Option<PeerIdentity>>>>);

impl Handler for Identities {
    type Session = ();

    async fn on_connect(&self, req: &ConnectRequest) -> Result<(), ConnectRefusal> {
        self.0.lock().expect("lock").push(req.peer_identity.clone());
        Ok(())
    }
}

/// Starts a broker with `listeners` and the recording handler; returns each listener's
/// address, in order.
async fn start(
    listeners: Vec<Listener>,
) -> (common::Running<Identities>, Vec<SocketAddr>, Identities) {
    let mut config: Config = loopback_config();
    config.listeners = listeners;
    let handler = Identities::default();
    let server = Broker::builder()
        .config(config)
        .handler(handler.clone())
        .bind()
        .await
        .expect("bind");
    let addrs = server
        .local_addrs()
        .expect("addresses")
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    (run(server), addrs, handler)
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

/// `mosquitto_pub`/`mosquitto_sub` to `localhost:port` (the certificate names localhost),
/// line-buffered, or a failed test saying how to get them.
fn mosquitto(name: &str, port: u16, args: &[&std::path::Path]) -> Command {
    assert!(
        on_path(name),
        "`{name}` is not on PATH: install Debian's mosquitto-clients (.ci/run does it)"
    );
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", name, "-h", "localhost", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `mosquitto_pub`; whether it succeeded, and its stderr.
async fn mosquitto_pub(mut cmd: Command, topic: &str, message: &str) -> (bool, String) {
    cmd.args(["-t", topic, "-m", message, "-q", "1"]);
    let out = tokio::time::timeout(WAIT, cmd.spawn().expect("spawn").wait_with_output())
        .await
        .expect("mosquitto_pub exits in time")
        .expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mosquitto_sub` and `mosquitto_pub` over TLS: a message goes from one to the other.
async fn mosquitto_round_trip(port: u16, tls_args: &[&std::path::Path], topic: &str) {
    let mut sub = mosquitto("mosquitto_sub", port, tls_args);
    sub.args(["-d", "-v", "-q", "1", "-C", "1", "-t", topic]);
    let mut sub = sub.spawn().expect("spawn mosquitto_sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("mosquitto_sub prints its SUBACK in time")
            .expect("read")
            .expect("mosquitto_sub ended before its SUBACK");
        if line.contains("received SUBACK") {
            break;
        }
    }
    let (ok, err) = mosquitto_pub(
        mosquitto("mosquitto_pub", port, tls_args),
        topic,
        "over tls",
    )
    .await;
    assert!(ok, "mosquitto_pub over TLS failed: {err}");
    let mut got = None;
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a message in time")
        .expect("read")
    {
        if !line.starts_with("Client ") {
            got = Some(line);
        }
    }
    assert_eq!(got, Some(format!("{topic} over tls")));
    let status = tokio::time::timeout(WAIT, sub.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(status.success());
}

#[tokio::test]
async fn tls_with_mosquitto_clients() {
    let pki = pki::make();
    let (_b, addrs, handler) = start(vec![Listener::tls(
        any_port(),
        &pki.server_cert,
        &pki.server_key,
    )])
    .await;
    let port = addrs[0].port();
    let cafile = std::path::Path::new("--cafile");
    mosquitto_round_trip(port, &[cafile, &pki.ca], "tls/one").await;
    // Without the CA that signed the broker's certificate the client refuses to go on.
    let (ok, _) = mosquitto_pub(
        mosquitto("mosquitto_pub", port, &[cafile, &pki.other_ca]),
        "t",
        "x",
    )
    .await;
    assert!(!ok, "a client that does not trust the CA must fail");
    // The broker still serves, and no connection had a client identity.
    mosquitto_round_trip(port, &[cafile, &pki.ca], "tls/two").await;
    let seen = handler.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(Option::is_none));
}

#[tokio::test]
async fn mutual_tls_identity_reaches_on_connect() {
    let pki = pki::make();
    let listener =
        Listener::tls(any_port(), &pki.server_cert, &pki.server_key).with_client_ca(&pki.ca);
    let (_b, addrs, handler) = start(vec![listener]).await;
    let port = addrs[0].port();
    let flag = |s: &'static str| std::path::Path::new(s);
    let with_cert = [
        flag("--cafile"),
        &pki.ca,
        flag("--cert"),
        &pki.client_cert,
        flag("--key"),
        &pki.client_key,
    ];
    mosquitto_round_trip(port, &with_cert, "mtls/one").await;
    let seen = handler.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    for id in seen {
        let id = id.expect("a verified client identity");
        assert_eq!(id.common_name.as_deref(), Some("device-1"));
        assert_eq!(id.subject_alt_names, ["DNS:device-1.example"]);
    }
    // No client certificate: refused during the handshake, on_connect never called.
    let (ok, _) = mosquitto_pub(
        mosquitto("mosquitto_pub", port, &[flag("--cafile"), &pki.ca]),
        "t",
        "x",
    )
    .await;
    assert!(!ok, "a client without a certificate must be refused");
    assert_eq!(handler.0.lock().expect("lock").len(), 2);
}

/// Paho for Python over WebSocket (`transport="websockets"`), TLS when a CA file is given:
/// subscribes, publishes at QoS 0, 1 and 2, prints what arrived.
const PAHO_WS: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt

port, version, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
got, subscribed = threading.Event(), threading.Event()

def on_message(client, userdata, message):
    print(message.topic, message.payload.decode(), message.qos, flush=True)
    got.set()

def on_subscribe(client, userdata, mid, *rest):
    subscribed.set()

def client(name):
    c = mqtt.Client(client_id=name + "-" + version, protocol=proto, transport="websockets")
    c.ws_set_options(path="/mqtt")
    if ca != "-":
        c.tls_set(ca_certs=ca)
    c.connect("localhost", port)
    c.loop_start()
    return c

sub = client("paho-ws-sub")
sub.on_message, sub.on_subscribe = on_message, on_subscribe
sub.subscribe("ws/round/trip", qos=2)
if not subscribed.wait(10):
    sys.exit("no SUBACK")
pub = client("paho-ws-pub")
for qos in (0, 1, 2):
    got.clear()
    pub.publish("ws/round/trip", "hello %d" % qos, qos=qos).wait_for_publish(10)
    if not got.wait(10):
        sys.exit("QoS %d not received" % qos)
for c in (pub, sub):
    c.disconnect()
    c.loop_stop()
"#;

async fn paho_ws(port: u16, version: &str, ca: Option<&std::path::Path>) {
    let ca = ca.map_or("-".to_owned(), |p| p.display().to_string());
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", PAHO_WS, &port.to_string(), version, &ca]);
    let lines = common::run_client(cmd, "the paho client (Debian's python3-paho-mqtt)").await;
    assert_eq!(
        lines,
        [
            "ws/round/trip hello 0 0",
            "ws/round/trip hello 1 1",
            "ws/round/trip hello 2 2"
        ]
    );
}

#[tokio::test]
async fn websocket_and_secure_websocket_with_paho() {
    let pki = pki::make();
    let (_b, addrs, _) = start(vec![
        Listener::ws(any_port()),
        Listener::wss(any_port(), &pki.server_cert, &pki.server_key),
    ])
    .await;
    paho_ws(addrs[0].port(), "311", None).await;
    paho_ws(addrs[0].port(), "5", None).await;
    paho_ws(addrs[1].port(), "5", Some(&pki.ca)).await;
}

async fn still_serving(
    client: &mut RawClient<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
) {
    client.send(&Packet::PingReq).await;
    assert!(matches!(client.recv().await, Some(OwnedPacket::PingResp)));
}

#[tokio::test]
async fn hostile_handshakes_and_frames_leave_others_served() {
    let pki = pki::make();
    let (_b, addrs, _) = start(vec![
        Listener::tls(any_port(), &pki.server_cert, &pki.server_key),
        Listener::ws(any_port()),
        Listener::tcp(any_port()),
    ])
    .await;
    let (tls, ws, tcp) = (addrs[0], addrs[1], addrs[2]);
    let mut steady = RawClient::connect(tcp, ProtocolVersion::V5).await;
    steady
        .send(&Packet::Connect(Connect::new(
            ProtocolVersion::V5,
            "steady",
        )))
        .await;
    assert!(matches!(steady.recv().await, Some(OwnedPacket::ConnAck(_))));
    // And one over WebSocket, through the WebSocket transport's client side.
    let connector = mqttx_transport_ws::WsConnector::new(&format!("ws://{ws}/mqtt")).expect("url");
    let mut steady_ws = RawClient::new(connector.connect().await.expect("ws"), ProtocolVersion::V5);
    steady_ws
        .send(&Packet::Connect(Connect::new(
            ProtocolVersion::V5,
            "steady-ws",
        )))
        .await;
    assert!(matches!(
        steady_ws.recv().await,
        Some(OwnedPacket::ConnAck(_))
    ));

    // A TLS handshake of garbage: the broker closes the connection.
    let mut garbage = TcpStream::connect(tls).await.expect("tcp");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(WAIT, garbage.read(&mut buf))
        .await
        .expect("closed in time");
    still_serving(&mut steady).await;

    // WebSocket upgrades without the subprotocol (400) and on another path (404).
    for (path, protocol, status) in [
        ("/mqtt", "", "400"),
        ("/other", "Sec-WebSocket-Protocol: mqtt\r\n", "404"),
    ] {
        let mut raw = TcpStream::connect(ws).await.expect("tcp");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        );
        raw.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut response))
            .await
            .expect("answered");
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
        still_serving(&mut steady).await;
    }

    // After a good upgrade: a text frame, and a frame over the cap, each end that connection.
    for message in [
        Message::text("{\"hello\": 1}"),
        Message::binary(vec![0x30; 3 * 1024 * 1024]),
    ] {
        let mut request = format!("ws://{ws}/mqtt")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("value"));
        let tcp = TcpStream::connect(ws).await.expect("tcp");
        let (mut peer, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .expect("upgrade");
        let _ = peer.send(message).await;
        let closed = tokio::time::timeout(WAIT, async {
            use futures_util::StreamExt;
            while let Some(Ok(_)) = peer.next().await {}
        })
        .await;
        assert!(closed.is_ok(), "the broker closes the connection");
        still_serving(&mut steady).await;
        still_serving(&mut steady_ws).await;
    }
}

/// MQTT.js (the npm package `mqtt`) over WebSocket, TLS when a CA file is given: subscribes
/// at QoS 2, publishes at QoS 0, 1 and 2 (each after the previous arrived), prints what
/// arrived.
const MQTT_JS: &str = r#"
const mqtt = require('mqtt');
const fs = require('fs');
const [url, version, ca] = process.argv.slice(1);
const opts = { protocolVersion: Number(version), clean: true, reconnectPeriod: 0, connectTimeout: 10000 };
if (ca !== '-') { opts.ca = fs.readFileSync(ca); opts.wsOptions = { ca: opts.ca }; }
const timer = setTimeout(() => { console.error('timed out'); process.exit(2); }, 20000);
const fail = (who) => (e) => { console.error(who, e.message); process.exit(1); };
const sub = mqtt.connect(url, { ...opts, clientId: 'mqttjs-sub-' + version });
sub.on('error', fail('sub'));
sub.on('connect', () => {
  sub.subscribe('js/round/trip', { qos: 2 }, (err) => {
    if (err) fail('subscribe')(err);
    const pub = mqtt.connect(url, { ...opts, clientId: 'mqttjs-pub-' + version });
    pub.on('error', fail('pub'));
    let qos = 0;
    const next = () => pub.publish('js/round/trip', 'hello ' + qos, { qos });
    sub.on('message', (topic, payload, packet) => {
      console.log(topic, payload.toString(), packet.qos);
      qos += 1;
      if (qos < 3) { next(); } else { pub.end(); sub.end(); clearTimeout(timer); }
    });
    pub.on('connect', next);
  });
});
"#;

/// Where `.ci/run` installs MQTT.js: `target/node/node_modules` of the workspace, or the
/// directory in `MQTTX_NODE_MODULES`.
fn mqtt_js_modules() -> std::path::PathBuf {
    let dir = std::env::var_os("MQTTX_NODE_MODULES").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/node/node_modules"),
        std::path::PathBuf::from,
    );
    assert!(
        dir.join("mqtt").is_dir(),
        "MQTT.js is not installed in {}: run `npm install --prefix target/node mqtt@5.16.0` \
         in the workspace (.ci/run does it), with Node.js 18 or later",
        dir.display()
    );
    dir
}

async fn mqtt_js(url: &str, version: &str, ca: Option<&std::path::Path>) {
    let ca = ca.map_or("-".to_owned(), |p| p.display().to_string());
    let mut cmd = Command::new("node");
    cmd.args(["-e", MQTT_JS, url, version, &ca])
        .env("NODE_PATH", mqtt_js_modules());
    let lines = common::run_client(cmd, "the MQTT.js client (Node.js 18 or later)").await;
    assert_eq!(
        lines,
        [
            "js/round/trip hello 0 0",
            "js/round/trip hello 1 1",
            "js/round/trip hello 2 2"
        ],
        "{url} MQTT {version}"
    );
}

#[tokio::test]
async fn websocket_and_secure_websocket_with_mqtt_js() {
    let pki = pki::make();
    let (_b, addrs, _) = start(vec![
        Listener::ws(any_port()),
        Listener::wss(any_port(), &pki.server_cert, &pki.server_key),
    ])
    .await;
    let ws = format!("ws://127.0.0.1:{}/mqtt", addrs[0].port());
    mqtt_js(&ws, "4", None).await;
    mqtt_js(&ws, "5", None).await;
    let wss = format!("wss://localhost:{}/mqtt", addrs[1].port());
    mqtt_js(&wss, "5", Some(&pki.ca)).await;
}

#[tokio::test]
async fn certificates_reload_without_a_restart() {
    use mqttx_transport_tls::{ClientOptions, TlsConnector};
    let pki = pki::make();
    let live = pki.dir.join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(&pki.expired_cert, &cert).expect("copy");
    std::fs::copy(&pki.expired_key, &key).expect("copy");
    let mut config: Config = loopback_config();
    config.listeners = vec![
        Listener::tls(any_port(), &cert, &key),
        Listener::tcp(any_port()),
    ];
    let server = Broker::bind(config).await.expect("bind");
    let reloader = server.certificate_reloader();
    assert_eq!(reloader.len(), 1);
    let tls_addr = server.local_addrs().expect("addrs")[0].1;
    let _b = run(server);
    let connector =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("connector");
    let handshake = || async {
        let tcp = TcpStream::connect(tls_addr).await.expect("tcp");
        connector.connect("localhost", tcp).await
    };
    let err = handshake().await.expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
    // A half-written renewal is refused and names the listener; the old certificate stays.
    std::fs::write(&key, "").expect("truncate");
    let err = reloader.reload().expect_err("no key");
    assert!(
        err.to_string()
            .contains(&format!("tls listener on {tls_addr}")),
        "{err}"
    );
    std::fs::copy(&pki.server_cert, &cert).expect("copy");
    std::fs::copy(&pki.server_key, &key).expect("copy");
    reloader.reload().expect("reload");
    let tls = handshake().await.expect("the renewed certificate");
    let mut client = RawClient::new(tls, ProtocolVersion::V5);
    client
        .send(&Packet::Connect(Connect::new(
            ProtocolVersion::V5,
            "renewed",
        )))
        .await;
    assert!(matches!(client.recv().await, Some(OwnedPacket::ConnAck(_))));
}

#[tokio::test]
async fn websocket_caps_follow_max_packet_size() {
    use futures_util::StreamExt;
    // max_packet_size 8 KiB: frames up to 8 KiB + 64 KiB pass, larger ones end the connection.
    let mut config: Config = loopback_config();
    config.max_packet_size = 8 * 1024;
    config.listeners = vec![Listener::ws(any_port())];
    let server = Broker::bind(config).await.expect("bind");
    let ws = server.local_addrs().expect("addrs")[0].1;
    let _b = run(server);
    // One frame: a CONNECT (3.1.1, client id "big") followed by PINGREQs.
    let frame = |pings: usize| {
        let mut bytes = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03big".to_vec();
        for _ in 0..pings {
            bytes.extend([0xC0, 0x00]);
        }
        Message::binary(bytes)
    };
    for (pings, passes) in [(35 * 1024, true), (40 * 1024, false)] {
        let mut request = format!("ws://{ws}/mqtt")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("value"));
        let tcp = TcpStream::connect(ws).await.expect("tcp");
        let (mut peer, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .expect("upgrade");
        let _ = peer.send(frame(pings)).await;
        // The CONNACK (4 bytes) and a PINGRESP (2 bytes) arrive only if the frame was taken.
        let mut got = 0usize;
        let answered = tokio::time::timeout(WAIT, async {
            while let Some(Ok(message)) = peer.next().await {
                got += message.len();
                if got >= 6 {
                    return true;
                }
            }
            false
        })
        .await
        .expect("in time");
        assert_eq!(answered, passes, "{} KiB frame", pings * 2 / 1024);
    }
}
