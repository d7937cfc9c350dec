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
    let child = Command::new(python)
        .args(["-c", ROUND_TRIP, &b.addr.port().to_string(), version])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the paho client finishes in time")
        .expect("wait for python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
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
