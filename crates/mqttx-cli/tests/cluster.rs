//! `mqttx broker --cluster`: three broker processes on one real nats-server with JetStream,
//! with clients no one here wrote (`mosquitto_pub`/`mosquitto_sub`, Eclipse Paho for Python)
//! connected to different nodes: QoS 0, 1 and 2 across nodes, a retained message set on one
//! node and read on another, and a persistent session that moves with its client.
//!
//! The nats-server fixture is the cluster crate's (`nats-server -a 127.0.0.1 -p -1 -js`,
//! killed by pid); `.ci/run` installs nats-server, the Mosquitto clients and Paho.

#[path = "../../mqttx-cluster-nats/tests/support/nats.rs"]
#[allow(dead_code)]
mod nats;
mod support;

use std::process::Stdio;
use std::time::Duration;

use nats::NatsServer;
use support::{Broker, Client, start_broker};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Bounds every wait.
const WAIT: Duration = Duration::from_secs(15);

/// A `mqttx broker --cluster` process, killed when dropped.
struct Node {
    broker: Broker,
    port: String,
}

async fn node(nats: &NatsServer, id: &str) -> Node {
    let broker = start_broker(&[
        "--cluster".as_ref(),
        nats.url().as_ref(),
        "--node-id".as_ref(),
        id.as_ref(),
    ])
    .await;
    let port = broker.port.to_string();
    Node { broker, port }
}

/// Waits until the cluster's journal bucket holds `count` keys starting with `prefix` (a node
/// id and a table: what that node has journaled).
async fn journaled(server: &NatsServer, prefix: &str, count: usize) {
    use futures_util::StreamExt as _;
    let nats = async_nats::connect(server.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let bucket = js
        .get_key_value("mqttx_journal")
        .await
        .expect("journal bucket");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut keys = bucket.keys().await.expect("keys");
        let mut found = 0;
        while let Some(key) = keys.next().await {
            if key.expect("key").starts_with(prefix) {
                found += 1;
            }
        }
        if found >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{found} of {count} {prefix} keys journaled in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `mosquitto_pub` to `node`, to completion.
async fn publish(node: &Node, args: &[&str]) {
    let status = tokio::time::timeout(
        WAIT,
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &node.port])
            .args(args)
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("mosquitto_pub ends in time")
    .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    assert!(status.success(), "mosquitto_pub {args:?}");
}

/// A `mosquitto_sub -v` on `node` and its output lines.
struct Sub {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

fn subscribe(node: &Node, args: &[&str]) -> Sub {
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &node.port, "-v"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    Sub {
        _child: child,
        lines,
    }
}

impl Sub {
    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
    }

    /// Publishes `topic` at QoS 0 on `from` until this subscriber prints it (the subscription
    /// is in place across the cluster), at most 100 times.
    async fn ready(&mut self, from: &Node, topic: &str) {
        for _ in 0..100 {
            publish(from, &["-t", topic, "-m", "ping"]).await;
            if let Ok(line) =
                tokio::time::timeout(Duration::from_millis(100), self.lines.next_line()).await
            {
                assert_eq!(
                    line.expect("read").as_deref(),
                    Some(&*format!("{topic} ping"))
                );
                return;
            }
        }
        panic!("the subscription on {topic} never got a message");
    }

    /// The next line that is not a readiness ping.
    async fn message(&mut self) -> String {
        loop {
            let line = self.line().await.expect("mosquitto_sub still running");
            if !line.ends_with(" ping") {
                return line;
            }
        }
    }
}

#[tokio::test]
async fn mosquitto_clients_on_different_nodes() {
    let server = NatsServer::start();
    let (n1, n2, n3) = (
        node(&server, "n1").await,
        node(&server, "n2").await,
        node(&server, "n3").await,
    );
    for version in ["mqttv311", "mqttv5"] {
        let mut sub = subscribe(&n3, &["-V", version, "-q", "2", "-t", "m/#"]);
        sub.ready(&n1, "m/ping").await;
        for qos in ["0", "1", "2"] {
            publish(&n1, &["-V", version, "-q", qos, "-t", "m/x", "-m", qos]).await;
            assert_eq!(sub.message().await, format!("m/x {qos}"), "{version}");
        }
        // `m/#` matches `m` itself; `$SYS` topics are not matched by `#`.
        let mut all = subscribe(&n2, &["-V", version, "-t", "#"]);
        all.ready(&n1, "any/ping").await;
        publish(
            &n1,
            &["-V", version, "-q", "1", "-t", "$SYS/x", "-m", "hidden"],
        )
        .await;
        publish(&n1, &["-V", version, "-q", "1", "-t", "m", "-m", "parent"]).await;
        assert_eq!(sub.message().await, "m parent");
        assert_eq!(
            all.message().await,
            "m parent",
            "$SYS/x is not matched by #"
        );
    }

    // A retained message set through n1 is answered by n2 to a new subscriber.
    publish(&n1, &["-t", "ret/a", "-m", "kept", "-r", "-q", "1"]).await;
    let mut got = None;
    for _ in 0..50 {
        let mut one = subscribe(&n2, &["-t", "ret/+", "-C", "1", "-W", "1"]);
        if let Some(line) = one.line().await {
            got = Some(line);
            break;
        }
    }
    assert_eq!(got.as_deref(), Some("ret/a kept"));
}

#[tokio::test]
async fn a_persistent_session_follows_its_client_to_another_node() {
    let server = NatsServer::start();
    let (n1, n2, n3) = (
        node(&server, "n1").await,
        node(&server, "n2").await,
        node(&server, "n3").await,
    );
    let args = ["-c", "-i", "roamer", "-q", "1", "-t", "r/#"];
    let mut first = subscribe(&n1, &args);
    first.ready(&n3, "r/ping").await;
    drop(first); // killed: the session stays on n1
    // Published while the client is away: in its session on n1 (queued, or in flight to the
    // connection n1 has not yet seen die, which the session keeps too).
    publish(&n3, &["-q", "1", "-t", "r/away", "-m", "queued"]).await;
    // Reconnecting to n2 takes the session over from n1, message included.
    let mut again = subscribe(&n2, &args);
    assert_eq!(again.message().await, "r/away queued");
}

/// A Paho subscriber on one node and a Paho publisher on another, QoS 0, 1 and 2.
const PAHO: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt

sub_port, pub_port = int(sys.argv[1]), int(sys.argv[2])
got, subscribed = threading.Event(), threading.Event()

def on_message(client, userdata, message):
    print(message.topic, message.payload.decode(), message.qos, flush=True)
    got.set()

def on_subscribe(client, userdata, mid, *rest):
    subscribed.set()

def client(name, port):
    c = mqtt.Client(client_id=name, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c

sub = client("paho-sub", sub_port)
sub.on_message, sub.on_subscribe = on_message, on_subscribe
sub.subscribe("paho/cluster", qos=2)
if not subscribed.wait(10):
    sys.exit("no SUBACK")
pub = client("paho-pub", pub_port)
for qos in (0, 1, 2):
    got.clear()
    pub.publish("paho/cluster", "hello %d" % qos, qos=qos).wait_for_publish(10)
    if not got.wait(10):
        sys.exit("QoS %d not received" % qos)
for c in (pub, sub):
    c.disconnect()
    c.loop_stop()
"#;

#[tokio::test]
async fn paho_clients_on_different_nodes() {
    let server = NatsServer::start();
    let (n1, n2) = (node(&server, "n1").await, node(&server, "n2").await);
    let mut python = None;
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import paho.mqtt"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            python = Some(candidate);
            break;
        }
    }
    let python = python.expect("a Python with paho.mqtt (apt-get install python3-paho-mqtt)");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(python)
            .args(["-c", PAHO, &n2.port, &n1.port])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("paho finishes in time")
    .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "paho/cluster hello 0 0",
            "paho/cluster hello 1 1",
            "paho/cluster hello 2 2"
        ]
    );
}

#[tokio::test]
async fn a_killed_node_s_sessions_are_recovered_by_another_node() {
    use mqttx_codec::{Packet, PacketId, PubResponse, Publish, QoS, Subscribe, SubscribeFilter};

    const N: u16 = 50;
    let server = NatsServer::start();
    let (n1, n2) = (node(&server, "n1").await, node(&server, "n2").await);
    let (mut sub, _) = Client::connect(n1.broker.port, "victim")
        .await
        .expect("connect to n1");
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("k/#", QoS::AtLeastOnce)].into(),
    }))
    .await
    .unwrap();
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    // QoS 1 messages published on n2, received on n1 and not acknowledged.
    let (mut publ, _) = Client::connect(n2.broker.port, "pub")
        .await
        .expect("connect to n2");
    for i in 1..=N {
        let mut p = Publish::new(format!("k/{i}"), format!("m{i}").into_bytes());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(i);
        publ.send(&Packet::Publish(p)).await.unwrap();
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    let mut first = Vec::new();
    for _ in 0..N {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                assert!(!p.dup);
                first.push((p.topic.to_string(), p.packet_id));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // Wait until n1's journal in the cluster holds them, then kill it.
    journaled(&server, "n1.flights.", usize::from(N)).await;
    n1.broker.kill().await;
    drop(sub);

    // The client comes back on n2: its session, from n1's journal, with every message again,
    // DUP set and the original Packet Identifiers.
    let (mut back, present) = Client::connect(n2.broker.port, "victim")
        .await
        .expect("connect to n2");
    assert!(
        present,
        "the session was recovered from the dead node's journal"
    );
    let mut again = Vec::new();
    for _ in 0..N {
        match back.recv().await {
            Some(Packet::Publish(p)) => {
                assert!(p.dup, "resent with DUP");
                let id = p.packet_id.expect("QoS 1");
                again.push((p.topic.to_string(), Some(id)));
                back.send(&Packet::PubAck(PubResponse::new(id)))
                    .await
                    .unwrap();
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(again, first);
    // And the session lives on at n2.
    let mut p = Publish::new("k/after".to_owned(), &b"after"[..]);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(N + 1);
    publ.send(&Packet::Publish(p)).await.unwrap();
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    assert!(matches!(back.recv().await, Some(Packet::Publish(p)) if &*p.topic == "k/after"));
}

/// A raw MQTT 5.0 connection to `port` as `id`, with a QoS 1 Will on `topic` delayed by
/// `delay` s and a Session Expiry Interval of `expiry` s (Clean Start 0 when above 0), once
/// its CONNACK came.
async fn with_will(
    port: u16,
    id: &str,
    topic: &str,
    delay: u32,
    expiry: u32,
) -> tokio::net::TcpStream {
    use mqttx_codec::{Connect, Packet, ProtocolVersion, QoS};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut connect = Connect::new(ProtocolVersion::V5, id.to_owned());
    connect.clean_start = expiry == 0;
    connect.properties.session_expiry_interval = Some(expiry);
    let mut will = mqttx_codec::Will::new(topic, &b"gone"[..]);
    will.qos = QoS::AtLeastOnce;
    will.properties.will_delay_interval = Some(delay);
    connect.will = Some(Box::new(will));
    let mut bytes = Vec::new();
    mqttx_codec::encode(
        &Packet::Connect(connect),
        &mqttx_codec::EncodeContext::new(ProtocolVersion::V5),
        &mut bytes,
    )
    .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut raw = mqttx_codec::Decoder::new(mqttx_codec::DecodeContext::new(ProtocolVersion::V5));
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("CONNACK in time")
        .unwrap();
    raw.feed(&buf[..n]);
    match raw.next_packet() {
        Ok(Some(Packet::ConnAck(ack))) => {
            assert_eq!(ack.reason_code, mqttx_codec::ReasonCode::SUCCESS, "{id}");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    stream
}

/// `mqttx broker --cluster` nodes with heartbeats every 300 ms (a node silent for 0.9 s is
/// taken for dead), and the directory of their configuration.
struct FastNodes {
    dir: tempfile::TempDir,
}

impl FastNodes {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            dir.path().join("node.toml"),
            "[cluster]\nheartbeat_ms = 300\n",
        )
        .expect("config");
        Self { dir }
    }

    async fn start(&self, server: &NatsServer, id: &str) -> Broker {
        start_broker(&[
            "--cluster".as_ref(),
            server.url().as_ref(),
            "--node-id".as_ref(),
            id.as_ref(),
            "--config".as_ref(),
            self.dir.path().join("node.toml").as_os_str(),
        ])
        .await
    }
}

impl FastNodes {
    /// Nodes n1 and n2, and a client on n2 subscribed to `will/#`.
    async fn pair_watching_wills(server: &NatsServer) -> (Self, Broker, Broker, Client) {
        let fast = Self::new();
        let (n1, n2) = (
            fast.start(server, "n1").await,
            fast.start(server, "n2").await,
        );
        let watcher = watcher(n2.port, "watcher", "will/#").await;
        (fast, n1, n2, watcher)
    }
}

/// A raw client on `port` subscribed to `filter` at QoS 1.
async fn watcher(port: u16, id: &str, filter: &str) -> Client {
    use mqttx_codec::{Packet, PacketId, QoS, Subscribe, SubscribeFilter};

    let (mut watcher, _) = Client::connect(port, id).await.expect("watcher");
    watcher
        .send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            filters: vec![SubscribeFilter::new(filter, QoS::AtLeastOnce)].into(),
        }))
        .await
        .unwrap();
    assert!(matches!(
        watcher.recv().await,
        Some(mqttx_codec::Packet::SubAck(_))
    ));
    watcher
}

#[tokio::test]
async fn the_wills_of_clients_connected_to_a_killed_node_are_published() {
    use mqttx_codec::Packet;

    let server = NatsServer::start();
    let (_fast, n1, n2, mut watcher) = FastNodes::pair_watching_wills(&server).await;
    // Connected to n1, each with a Will due at once: "lively" stays away once n1 is gone (n2
    // adopts n1's clients when its heartbeat expires), "hasty" reconnects to n2 at once (its
    // claim finds n1 silent).
    let lively = with_will(n1.port, "lively", "will/lively", 0, 0).await;
    let hasty = with_will(n1.port, "hasty", "will/hasty", 0, 0).await;
    // A Will with a delay whose client comes back in time is not published; one whose client
    // stays away is, after its delay, by the node that adopted its session.
    let patient = with_will(n1.port, "patient", "will/patient", 30, 60).await;
    let tardy = with_will(n1.port, "tardy", "will/tardy", 1, 60).await;
    n1.kill().await;
    drop((lively, hasty, patient, tardy));
    let (_hasty, _) = Client::connect(n2.port, "hasty")
        .await
        .expect("hasty on n2");
    let (_patient, _) = Client::connect(n2.port, "patient")
        .await
        .expect("patient on n2");

    let mut wills = Vec::new();
    while wills.len() < 3 {
        match tokio::time::timeout(WAIT, watcher.recv()).await {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!(&p.payload[..], b"gone");
                wills.push(p.topic.to_string());
            }
            other => panic!("expected the Wills, got {other:?} after {wills:?}"),
        }
    }
    wills.sort();
    assert_eq!(wills, ["will/hasty", "will/lively", "will/tardy"]);
    // Each once: nothing more comes within a few heartbeats.
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(1500), watcher.recv()).await {
        panic!("expected nothing more, got {more:?}");
    }
}

#[tokio::test]
async fn a_dead_node_s_absent_sessions_are_adopted_with_their_wills() {
    use mqttx_codec::Packet;

    let server = NatsServer::start();
    let (_fast, n1, n2, mut watcher) = FastNodes::pair_watching_wills(&server).await;

    // A client with a persistent session and a Will delayed by 3 s loses its connection to
    // n1 (dropped without DISCONNECT): n1 keeps the session and the Will, journaled in the
    // cluster.
    drop(with_will(n1.port, "mortal", "will/mortal", 3, 60).await);
    journaled(&server, "n1.wills.", 1).await;
    n1.kill().await;

    // n2 adopts the session once n1's heartbeat expires, and publishes the Will when due.
    match watcher.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!((&*p.topic, &p.payload[..]), ("will/mortal", &b"gone"[..]));
        }
        other => panic!("expected the Will, got {other:?}"),
    }
    // The session lives on at n2.
    let (_back, present) = Client::connect(n2.port, "mortal").await.expect("connect");
    assert!(present, "n2 adopted the session");
}

/// Connects to a node that refuses clients (0x88) while it catches up with the stream, once
/// it accepts them (bounded): see [`Client::connect_with`].
async fn once_ready(port: u16, id: &str, clean: bool) -> (Client, bool) {
    for _ in 0..150 {
        match Client::connect_with(port, id, clean).await {
            Ok(connected) => return connected,
            Err(Some(code)) => assert_eq!(code, mqttx_codec::ReasonCode::SERVER_UNAVAILABLE),
            Err(None) => panic!("no CONNACK"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node never accepted {id}");
}

#[tokio::test]
async fn a_restarted_node_catches_up_from_the_stream() {
    use mqttx_codec::{
        Disconnect, Packet, PacketId, PubResponse, Publish, QoS, Subscribe, SubscribeFilter,
    };

    const N: u16 = 20;
    let server = NatsServer::start();
    let (n1, n3) = (node(&server, "n1").await, node(&server, "n3").await);
    // A persistent session on n3 whose client is away.
    let (mut sleeper, _) = Client::connect(n3.broker.port, "sleeper")
        .await
        .expect("connect to n3");
    sleeper
        .send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            filters: vec![SubscribeFilter::new("c/#", QoS::AtLeastOnce)].into(),
        }))
        .await
        .unwrap();
    assert!(matches!(sleeper.recv().await, Some(Packet::SubAck(_))));
    sleeper
        .send(&Packet::Disconnect(Disconnect::default()))
        .await
        .unwrap();
    assert!(sleeper.recv().await.is_none());
    journaled(&server, "n3.sessions.", 1).await;

    // n3 is down while n1 takes messages for it; JetStream keeps them.
    n3.broker.kill().await;
    let (mut publ, _) = Client::connect(n1.broker.port, "pub")
        .await
        .expect("connect to n1");
    for i in 1..=N {
        let mut p = Publish::new(format!("c/{i}"), format!("m{i}").into_bytes());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(i);
        publ.send(&Packet::Publish(p)).await.unwrap();
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }

    // n3 comes back: its session from the journal, the messages from its stream consumer.
    let n3 = node(&server, "n3").await;
    let (mut back, present) = once_ready(n3.broker.port, "sleeper", false).await;
    assert!(present);
    let mut got = Vec::new();
    while got.len() < usize::from(N) {
        match back.recv().await {
            Some(Packet::Publish(p)) => {
                got.push(p.topic.to_string());
                if let Some(id) = p.packet_id {
                    back.send(&Packet::PubAck(PubResponse::new(id)))
                        .await
                        .unwrap();
                }
            }
            other => panic!(
                "expected PUBLISH, got {other:?} after {} messages",
                got.len()
            ),
        }
    }
    let want: Vec<String> = (1..=N).map(|i| format!("c/{i}")).collect();
    assert_eq!(got, want, "every message, in order");
}

#[tokio::test]
async fn a_restarted_node_gives_new_subscribers_only_later_messages() {
    use mqttx_codec::{
        Disconnect, Packet, PacketId, PubResponse, Publish, QoS, Subscribe, SubscribeFilter,
    };

    const N: u16 = 20;
    let subscribe = |id: u16| {
        Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(id).unwrap(),
            properties: Default::default(),
            filters: vec![SubscribeFilter::new("c/#", QoS::AtLeastOnce)].into(),
        })
    };
    let server = NatsServer::start();
    let (n1, n3) = (node(&server, "n1").await, node(&server, "n3").await);
    let (mut publ, _) = Client::connect(n1.broker.port, "pub")
        .await
        .expect("connect to n1");
    let mut sent = 0u16;
    let mut publish = async |publ: &mut Client, topic: String| {
        sent += 1;
        let mut p = Publish::new(topic, b"m".to_vec());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(sent);
        publ.send(&Packet::Publish(p)).await.unwrap();
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    };
    // n3 had a QoS 1 subscriber (so it reads the stream), whose session ended with it.
    let mut early = Client::connect_clean(n3.broker.port, "early")
        .await
        .expect("connect to n3");
    early.send(&subscribe(1)).await.unwrap();
    assert!(matches!(early.recv().await, Some(Packet::SubAck(_))));
    publish(&mut publ, "c/0".into()).await;
    match early.recv().await {
        Some(Packet::Publish(p)) => {
            early
                .send(&Packet::PubAck(PubResponse::new(p.packet_id.unwrap())))
                .await
                .unwrap();
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    early
        .send(&Packet::Disconnect(Disconnect::default()))
        .await
        .unwrap();
    assert!(early.recv().await.is_none());

    // Messages published while n3 is down wait in the stream for its consumer.
    n3.broker.kill().await;
    for i in 1..=N {
        publish(&mut publ, format!("c/{i}")).await;
    }
    // Back, n3 delivers them (to nobody) before it accepts a client, so a subscriber that
    // connects then gets only what is published afterwards.
    let n3 = node(&server, "n3").await;
    let (mut newcomer, _) = once_ready(n3.broker.port, "newcomer", true).await;
    newcomer.send(&subscribe(1)).await.unwrap();
    assert!(matches!(newcomer.recv().await, Some(Packet::SubAck(_))));
    publish(&mut publ, "c/new".into()).await;
    match newcomer.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&*p.topic, "c/new", "only later messages"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}
