//! Interoperability with Eclipse Paho's Python client (Debian's `python3-paho-mqtt`), in MQTT
//! 3.1.1 and 5.0: a second client implementation no one here wrote, next to mosquitto's.
//!
//! The broker runs in-process on 127.0.0.1 with a free port; the client is a short Python
//! program run with `kill_on_drop(true)` and a timeout. Without a Python that can import
//! `paho.mqtt` these tests fail with a message saying how to install it (`.ci/run` does it).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::start;
use tokio::process::Command;

/// Subscribes, publishes at QoS 0, 1 and 2, and prints what arrived, one line per message.
const ROUND_TRIP: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt

port, version = int(sys.argv[1]), sys.argv[2]
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
got, subscribed = threading.Event(), threading.Event()

def on_message(client, userdata, message):
    print(message.topic, message.payload.decode(), message.qos, flush=True)
    got.set()

def on_subscribe(client, userdata, mid, *rest):
    subscribed.set()

def client(name):
    c = mqtt.Client(client_id=name + "-" + version, protocol=proto)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c

sub = client("paho-sub")
sub.on_message, sub.on_subscribe = on_message, on_subscribe
sub.subscribe("paho/round/trip", qos=2)
if not subscribed.wait(10):
    sys.exit("no SUBACK")
pub = client("paho-pub")
for qos in (0, 1, 2):
    got.clear()
    pub.publish("paho/round/trip", "hello %d" % qos, qos=qos).wait_for_publish(10)
    if not got.wait(10):
        sys.exit("QoS %d not received" % qos)
for c in (pub, sub):
    c.disconnect()
    c.loop_stop()
"#;

/// A Python interpreter that can import `paho.mqtt`, or a failed test saying how to get one.
async fn python_with_paho() -> &'static str {
    // Debian's package installs into the system Python, which a version manager's `python3`
    // on PATH may hide.
    for python in ["/usr/bin/python3", "python3"] {
        let probe = Command::new(python)
            .args(["-c", "import paho.mqtt"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(10), probe).await {
            if status.success() {
                return python;
            }
        }
    }
    panic!(
        "no Python with paho.mqtt: these interoperability tests need Debian's \
         python3-paho-mqtt (`apt-get install -y python3-paho-mqtt`; .ci/run installs it)"
    );
}

async fn round_trip(version: &str) {
    let b = start().await;
    let python = python_with_paho().await;
    let mut cmd = Command::new(python);
    cmd.args(["-c", ROUND_TRIP, &b.addr.port().to_string(), version]);
    let lines = common::run_client(cmd, "the paho client").await;
    assert_eq!(
        lines,
        [
            "paho/round/trip hello 0 0",
            "paho/round/trip hello 1 1",
            "paho/round/trip hello 2 2"
        ]
    );
}

#[tokio::test]
async fn paho_qos_0_1_2_round_trip_mqtt311() {
    // MQTT 3.1.1 §4.3 with Paho: every QoS end to end, delivered at the published QoS.
    round_trip("311").await;
}

#[tokio::test]
async fn paho_qos_0_1_2_round_trip_mqtt5() {
    // MQTT 5.0 §4.3 with Paho.
    round_trip("5").await;
}

/// A Paho program the test talks to through its stdout lines.
struct Py {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Py {
    async fn start(script: &str, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let python = python_with_paho().await;
        let mut child = Command::new(python)
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next line the program prints.
    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("the paho client prints in time")
            .expect("read stdout")
            .expect("the paho client printed a line before exiting")
    }
}

/// Two subscribers in one shared group, a publisher sending `n` QoS 1 messages; prints how
/// many each subscriber got and how many distinct messages arrived.
const SHARED: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt

port, n = int(sys.argv[1]), int(sys.argv[2])
got, lock, done, subscribed = {"a": [], "b": []}, threading.Lock(), threading.Event(), threading.Semaphore(0)

def subscriber(name):
    c = mqtt.Client(client_id="paho-share-" + name, protocol=mqtt.MQTTv5)
    def on_message(client, userdata, message):
        with lock:
            got[name].append(message.payload.decode())
            if sum(len(v) for v in got.values()) >= n:
                done.set()
    c.on_message = on_message
    c.on_subscribe = lambda *args: subscribed.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe("$share/workers/paho/jobs", qos=1)
    return c

subs = [subscriber("a"), subscriber("b")]
for _ in subs:
    if not subscribed.acquire(timeout=10):
        sys.exit("no SUBACK")
pub = mqtt.Client(client_id="paho-share-pub", protocol=mqtt.MQTTv5)
pub.connect("127.0.0.1", port)
pub.loop_start()
for i in range(n):
    pub.publish("paho/jobs", str(i), qos=1).wait_for_publish(10)
if not done.wait(10):
    sys.exit("only %d of %d arrived" % (sum(len(v) for v in got.values()), n))
with lock:
    print(len(got["a"]), len(got["b"]), len(set(got["a"]) | set(got["b"])), flush=True)
"#;

#[tokio::test]
async fn paho_shared_subscription_spreads_messages() {
    // MQTT 5.0 §4.8.2: each message published to a shared subscription's topic goes to one
    // session of the group; with two Paho subscribers both get some, none gets a duplicate.
    let b = start().await;
    let mut py = Py::start(SHARED, &[&b.addr.port().to_string(), "20"]).await;
    let line = py.line().await;
    let counts: Vec<usize> = line
        .split(' ')
        .map(|n| n.parse().expect("a count"))
        .collect();
    let [a, b_count, distinct] = counts[..] else {
        panic!("{line}")
    };
    assert!(a > 0 && b_count > 0, "both members get messages: {line}");
    assert_eq!((a + b_count, distinct), (20, 20), "{line}");
}

/// Subscribes twice with Subscription Identifiers 7 and 9 on overlapping filters, publishes
/// one message both match and then a marker only the first matches, and prints what arrived.
const SUBSCRIPTION_IDS: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port = int(sys.argv[1])
got, subscribed = threading.Event(), threading.Semaphore(0)

def on_message(client, userdata, message):
    ids = sorted(getattr(message.properties, "SubscriptionIdentifier", []))
    print(message.topic, message.qos, ",".join(map(str, ids)), flush=True)
    if message.topic == "paho/sid/marker":
        got.set()

c = mqtt.Client(client_id="paho-sid", protocol=mqtt.MQTTv5)
c.on_message = on_message
c.on_subscribe = lambda *args: subscribed.release()
c.connect("127.0.0.1", port)
c.loop_start()
for sid, topic, qos in ((7, "paho/sid/#", 1), (9, "paho/sid/+/x", 2)):
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = sid
    c.subscribe(topic, qos=qos, properties=props)
    if not subscribed.acquire(timeout=10):
        sys.exit("no SUBACK")
c.publish("paho/sid/a/x", "both", qos=2).wait_for_publish(10)
c.publish("paho/sid/marker", "one", qos=1).wait_for_publish(10)
if not got.wait(10):
    sys.exit("no marker")
"#;

#[tokio::test]
async fn paho_subscription_identifiers_and_overlaps() {
    // MQTT 5.0 [MQTT-3.3.4-3]/[MQTT-3.3.4-5]: a message matching two subscriptions of one
    // client is delivered once, at the higher granted QoS [MQTT-3.3.4-2], carrying both
    // Subscription Identifiers; the marker (published after it by the same client) proves no
    // second copy came.
    let b = start().await;
    let mut py = Py::start(SUBSCRIPTION_IDS, &[&b.addr.port().to_string()]).await;
    assert_eq!(py.line().await, "paho/sid/a/x 2 7,9");
    assert_eq!(py.line().await, "paho/sid/marker 1 7");
}

/// A subscriber allowing 5 Topic Aliases receives three messages on one topic and prints
/// each one's topic, payload and Topic Alias (Paho 1.x hands aliases to the application
/// unresolved, so the wire form shows).
const ALIASES: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port = int(sys.argv[1])
done, subscribed, count = threading.Event(), threading.Event(), [0]

def on_message(client, userdata, message):
    alias = getattr(message.properties, "TopicAlias", 0)
    print(message.topic or "-", message.payload.decode(), alias, flush=True)
    count[0] += 1
    if count[0] == 3:
        done.set()

sub = mqtt.Client(client_id="paho-alias-sub", protocol=mqtt.MQTTv5)
props = Properties(PacketTypes.CONNECT)
props.TopicAliasMaximum = 5
sub.on_message = on_message
sub.on_subscribe = lambda *args: subscribed.set()
sub.connect("127.0.0.1", port, properties=props)
sub.loop_start()
sub.subscribe("paho/alias/#", qos=1)
if not subscribed.wait(10):
    sys.exit("no SUBACK")
pub = mqtt.Client(client_id="paho-alias-pub", protocol=mqtt.MQTTv5)
pub.connect("127.0.0.1", port)
pub.loop_start()
for i in range(3):
    pub.publish("paho/alias/a/rather/long/topic/name", "m%d" % i, qos=1).wait_for_publish(10)
if not done.wait(10):
    sys.exit("not all arrived")
"#;

#[tokio::test]
async fn paho_receives_outbound_topic_aliases() {
    // MQTT 5.0 §3.3.2.3.4: the client allowed Topic Aliases (CONNECT Topic Alias Maximum 5),
    // so the broker sends the topic once with alias 1 and then only the alias (empty topic).
    let b = start().await;
    let mut py = Py::start(ALIASES, &[&b.addr.port().to_string()]).await;
    assert_eq!(py.line().await, "paho/alias/a/rather/long/topic/name m0 1");
    for i in 1..3 {
        let line = py.line().await;
        // A Paho that resolves aliases itself would show the topic: accept both forms, but
        // the alias must be on the wire.
        assert!(
            line == format!("- m{i} 1")
                || line == format!("paho/alias/a/rather/long/topic/name m{i} 1"),
            "{line}"
        );
    }
}

/// Two connections with one client identifier: prints the reason code the first one is
/// disconnected with when the second connects.
const TAKEOVER: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt

port = int(sys.argv[1])
codes, gone, up = [], threading.Event(), threading.Semaphore(0)

def on_disconnect(client, userdata, rc, *rest):
    codes.append(getattr(rc, "value", rc))
    gone.set()

def client():
    c = mqtt.Client(client_id="paho-takeover", protocol=mqtt.MQTTv5)
    c.reconnect_delay_set(60, 60)
    c.on_connect = lambda *args: up.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not up.acquire(timeout=10):
        sys.exit("no CONNACK")
    return c

first = client()
first.on_disconnect = on_disconnect
second = client()
if not gone.wait(10):
    sys.exit("the first connection was not disconnected")
print(codes[0], flush=True)
"#;

#[tokio::test]
async fn paho_session_takeover() {
    // [MQTT-3.1.4-3]: a second connection with the same client identifier takes over; the
    // first gets DISCONNECT 0x8E (142, Session taken over) and is closed.
    let b = start().await;
    let mut py = Py::start(TAKEOVER, &[&b.addr.port().to_string()]).await;
    assert_eq!(py.line().await, "142");
    assert_eq!(b.broker.clients(), ["paho-takeover"]);
}

/// Connects with a Will (and optionally a Will Delay and a Session Expiry), prints "ready",
/// then idles until the test kills or stops it.
const WILLER: &str = r#"
import sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port, keepalive, delay, topic = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
up = threading.Event()
c = mqtt.Client(client_id="paho-willer-" + topic.replace("/", "-"), protocol=mqtt.MQTTv5)
will = Properties(PacketTypes.WILLMESSAGE)
if delay:
    will.WillDelayInterval = delay
c.will_set(topic, "gone", qos=1, properties=will)
connect = Properties(PacketTypes.CONNECT)
connect.SessionExpiryInterval = 60
c.on_connect = lambda *args: up.set()
c.connect("127.0.0.1", port, keepalive=keepalive, properties=connect)
c.loop_start()
if not up.wait(10):
    sys.exit("no CONNACK")
print("ready", flush=True)
time.sleep(60)
"#;

/// Waits for the Will on `topic` with a raw observer; returns how long after `since` it came.
async fn will_after(
    observer: &mut common::RawClient<tokio::net::TcpStream>,
    since: std::time::Instant,
) -> Duration {
    let Some(mqttx_broker::codec::Packet::Publish(p)) = observer.recv().await else {
        panic!("the Will")
    };
    assert_eq!(&p.payload[..], b"gone");
    since.elapsed()
}

async fn observer(
    addr: std::net::SocketAddr,
    topic: &str,
) -> common::RawClient<tokio::net::TcpStream> {
    use mqttx_broker::codec::{Connect, Packet, ProtocolVersion, Subscribe, SubscribeFilter};
    let mut c = common::RawClient::connect(addr, ProtocolVersion::V5).await;
    c.send(&Packet::Connect(Connect::new(
        ProtocolVersion::V5,
        format!("observer-{}", topic.replace('/', "-")),
    )))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    let sub = Subscribe {
        packet_id: mqttx_broker::codec::PacketId::new(1).expect("nonzero"),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new(
            topic.to_owned(),
            mqttx_broker::codec::QoS::AtLeastOnce,
        )]
        .into(),
    };
    c.send(&Packet::Subscribe(sub)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

#[tokio::test]
async fn paho_will_delay() {
    // MQTT 5.0 [MQTT-3.1.3-9]: with a Will Delay Interval of 1 s (and a longer session), the
    // Will of a Paho client that was killed is published, but not before the delay passed.
    let b = start().await;
    let mut watch = observer(b.addr, "paho/will/delayed").await;
    let mut py = Py::start(
        WILLER,
        &[&b.addr.port().to_string(), "60", "1", "paho/will/delayed"],
    )
    .await;
    assert_eq!(py.line().await, "ready");
    let killed = std::time::Instant::now();
    py.child.kill().await.expect("kill the client we started");
    let after = will_after(&mut watch, killed).await;
    assert!(after >= Duration::from_secs(1), "Will after {after:?}");
}

#[tokio::test]
async fn paho_keepalive_timeout_publishes_the_will() {
    // [MQTT-3.1.2-22]: a client with Keep Alive 1 s that goes silent (its process stopped
    // with SIGSTOP, so its socket stays open) is disconnected after 1.5 s, and its Will is
    // published [MQTT-3.1.2-8].
    let b = start().await;
    let mut watch = observer(b.addr, "paho/will/keepalive").await;
    let mut py = Py::start(
        WILLER,
        &[&b.addr.port().to_string(), "1", "0", "paho/will/keepalive"],
    )
    .await;
    assert_eq!(py.line().await, "ready");
    let pid = py.child.id().expect("the client runs");
    let stopped = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let after = will_after(&mut watch, stopped).await;
    assert!(after >= Duration::from_secs(1), "Will after {after:?}");
    assert!(
        b.broker
            .clients()
            .iter()
            .all(|c| !c.starts_with("paho-willer"))
    );
    // kill_on_drop's SIGKILL ends the stopped process.
}
