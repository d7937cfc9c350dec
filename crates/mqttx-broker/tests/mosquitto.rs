//! Interoperability with real clients that no one here wrote: `mosquitto_pub` and
//! `mosquitto_sub` from Debian's `mosquitto-clients`, in MQTT 3.1, 3.1.1 and 5.0.
//!
//! The broker runs in-process on 127.0.0.1 with a free port. Every child process is started
//! with `kill_on_drop(true)`, and every wait on it has a timeout. Subscribers run with `-d`,
//! so their output says when the SUBACK arrived: nothing here sleeps. Without the tools on
//! PATH these tests fail with a message saying how to install them (`.ci/run` does it).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::{WAIT, start};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

/// A `mosquitto_*` command, or a failed test saying how to get it.
///
/// It runs under coreutils' `stdbuf -oL`: mosquitto_sub does not flush its debug lines when
/// stdout is a pipe, and the tests wait for them.
fn tool(name: &str, addr: SocketAddr, version: &str) -> Command {
    assert!(
        on_path(name),
        "`{name}` is not on PATH: these interoperability tests need Debian's mosquitto-clients \
         (`apt-get install -y mosquitto-clients`; .ci/run installs it)"
    );
    assert!(on_path("stdbuf"), "`stdbuf` (coreutils) is not on PATH");
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", name])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-V",
            version,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running `mosquitto_sub -d -v`.
struct Sub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sub {
    /// Starts `mosquitto_sub` with `args` and waits for its SUBACK.
    async fn start(addr: SocketAddr, version: &str, args: &[&str]) -> Self {
        let mut sub = Self::spawn(addr, version, args);
        sub.line_containing("received SUBACK").await;
        sub
    }

    /// Starts `mosquitto_sub` with `args` without waiting for anything.
    fn spawn(addr: SocketAddr, version: &str, args: &[&str]) -> Self {
        let mut child = tool("mosquitto_sub", addr, version)
            .args(["-d", "-v"])
            .args(args)
            .spawn()
            .expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next output line containing `needle` (debug lines included).
    async fn line_containing(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("mosquitto_sub printed no line with {needle:?} in time"))
                .expect("read mosquitto_sub output")
                .unwrap_or_else(|| panic!("mosquitto_sub ended before printing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The next message: (the debug line of its PUBLISH, "topic payload").
    async fn message(&mut self) -> (String, String) {
        let header = self.line_containing("received PUBLISH").await;
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("a message line in time")
                .expect("read mosquitto_sub output")
                .expect("a message line");
            // Debug lines (the PUBACK it sends, …) start with "Client ".
            if !line.starts_with("Client ") {
                return (header, line);
            }
        }
    }

    /// Waits for the process to exit by itself (after `-C n` messages).
    async fn exits(mut self) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("mosquitto_sub exits in time")
            .expect("wait for mosquitto_sub");
        assert!(status.success(), "mosquitto_sub failed: {status}");
    }
}

/// Runs `mosquitto_pub` with `args` to completion.
async fn publish(addr: SocketAddr, version: &str, args: &[&str]) {
    let child = tool("mosquitto_pub", addr, version)
        .args(args)
        .spawn()
        .expect("spawn mosquitto_pub");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("mosquitto_pub exits in time")
        .expect("wait for mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn qos_round_trips(version: &str) {
    let b = start().await;
    for qos in ["0", "1", "2"] {
        let topic = format!("mqttx/{version}/q{qos}");
        let payload = format!("hello at qos {qos}");
        let mut sub = Sub::start(b.addr, version, &["-t", &topic, "-q", qos, "-C", "1"]).await;
        publish(b.addr, version, &["-t", &topic, "-q", qos, "-m", &payload]).await;
        let (header, body) = sub.message().await;
        assert!(header.contains(&format!("q{qos}")), "{header}");
        assert_eq!(body, format!("{topic} {payload}"));
        sub.exits().await;
    }
}

#[tokio::test]
async fn qos_0_1_2_round_trip_mqtt311() {
    // MQTT 3.1.1 §4.3: QoS 0, 1 and 2 end to end between two real clients.
    qos_round_trips("mqttv311").await;
}

#[tokio::test]
async fn qos_0_1_2_round_trip_mqtt31() {
    // MQTT 3.1 ("MQIsdp", level 3): the same with the oldest protocol version.
    qos_round_trips("mqttv31").await;
}

#[tokio::test]
async fn qos_0_1_2_round_trip_mqtt5() {
    // MQTT 5.0 §4.3: the same with MQTT 5.0 clients.
    qos_round_trips("mqttv5").await;
}

async fn retained_set_and_clear(version: &str) {
    let b = start().await;
    let topic = format!("mqttx/{version}/retained");
    // [MQTT-3.3.1-5] stored and sent to a later subscriber with RETAIN 1.
    publish(
        b.addr,
        version,
        &["-t", &topic, "-q", "1", "-r", "-m", "kept"],
    )
    .await;
    let mut sub = Sub::start(b.addr, version, &["-t", &topic, "-q", "1", "-C", "1"]).await;
    let (header, body) = sub.message().await;
    assert!(header.contains("r1"), "{header}");
    assert_eq!(body, format!("{topic} kept"));
    sub.exits().await;
    // [MQTT-3.3.1-6] an empty retained payload clears it: a new subscriber's first message
    // is the live one published after its SUBACK.
    publish(b.addr, version, &["-t", &topic, "-r", "-n"]).await;
    let mut sub = Sub::start(b.addr, version, &["-t", &topic, "-C", "1"]).await;
    publish(b.addr, version, &["-t", &topic, "-m", "live"]).await;
    let (header, body) = sub.message().await;
    assert!(header.contains("r0"), "{header}");
    assert_eq!(body, format!("{topic} live"));
    sub.exits().await;
    assert_eq!(b.broker.retained_count(), 0);
}

#[tokio::test]
async fn retained_set_and_clear_mqtt311() {
    retained_set_and_clear("mqttv311").await;
}

#[tokio::test]
async fn retained_set_and_clear_mqtt5() {
    retained_set_and_clear("mqttv5").await;
}

async fn will_on_kill_not_on_disconnect(version: &str) {
    let b = start().await;
    let will_topic = format!("mqttx/{version}/will");
    let mut watcher = Sub::start(b.addr, version, &["-t", &will_topic, "-q", "1"]).await;

    // [MQTT-3.1.2-8] the Will is published when the connection ends without DISCONNECT: the
    // client is killed (SIGKILL to the process this test started).
    let mut doomed = Sub::start(
        b.addr,
        version,
        &[
            "-t",
            "mqttx/unused",
            "--will-topic",
            &will_topic,
            "--will-payload",
            "died",
            "--will-qos",
            "1",
        ],
    )
    .await;
    doomed
        .child
        .kill()
        .await
        .expect("kill the client we started");
    let (_, body) = watcher.message().await;
    assert_eq!(body, format!("{will_topic} died"));

    // [MQTT-3.14.4-3] after a normal DISCONNECT the Will is discarded: the next message the
    // watcher sees is the marker published afterwards.
    publish(
        b.addr,
        version,
        &[
            "-t",
            "mqttx/other",
            "-m",
            "x",
            "--will-topic",
            &will_topic,
            "--will-payload",
            "must not appear",
        ],
    )
    .await;
    publish(b.addr, version, &["-t", &will_topic, "-m", "marker"]).await;
    let (_, body) = watcher.message().await;
    assert_eq!(body, format!("{will_topic} marker"));
}

#[tokio::test]
async fn will_on_kill_not_on_disconnect_mqtt311() {
    will_on_kill_not_on_disconnect("mqttv311").await;
}

#[tokio::test]
async fn will_on_kill_not_on_disconnect_mqtt5() {
    will_on_kill_not_on_disconnect("mqttv5").await;
}

/// Refuses every filter under `private/`.
struct NoPrivate;

impl mqttx_broker::Handler for NoPrivate {
    type Session = ();

    async fn on_subscribe(
        &self,
        _: &(),
        _: &mqttx_broker::ClientInfo,
        filter: &mqttx_broker::router::TopicFilter,
        _: &mqttx_broker::router::SubscribeOptions,
    ) -> mqttx_broker::SubscribeDecision {
        if filter.as_str().starts_with("private/") {
            mqttx_broker::SubscribeDecision::Refuse(mqttx_broker::codec::ReasonCode::NOT_AUTHORIZED)
        } else {
            mqttx_broker::SubscribeDecision::Grant(mqttx_broker::codec::QoS::ExactlyOnce)
        }
    }
}

#[tokio::test]
async fn subscribe_refusal_seen_by_mosquitto_sub() {
    // Issue #4: a refusal from `on_subscribe` reaches a real client as its SUBACK code:
    // 0x87 (135) for MQTT 5.0, 0x80 (128) for 3.1.1 (§3.9.3 Failure).
    let server = mqttx_broker::Broker::builder()
        .config(common::loopback_config())
        .handler(NoPrivate)
        .bind()
        .await
        .expect("bind");
    let b = common::run(server);
    for (version, code) in [("mqttv5", "135"), ("mqttv311", "128")] {
        let mut sub = Sub::start(b.addr, version, &["-t", "private/x", "-q", "1"]).await;
        let line = sub.line_containing("Subscribed (mid: 1)").await;
        assert!(line.ends_with(&format!(": {code}")), "{version}: {line}");
    }
}

#[tokio::test]
async fn persistent_session_offline_messages_mosquitto() {
    // [MQTT-3.1.2-5] a client with a persistent session (`-c -i ID`) that was away receives
    // the QoS 1 messages published meanwhile when it comes back, in 3.1.1 and 5.0.
    let b = start().await;
    for version in ["mqttv311", "mqttv5"] {
        let id = format!("mqttx-persist-{version}");
        let topic = format!("mqttx/{version}/offline");
        let mut away =
            Sub::start(b.addr, version, &["-c", "-i", &id, "-q", "1", "-t", &topic]).await;
        away.child.kill().await.expect("kill the client we started");
        for i in 1..=3 {
            publish(
                b.addr,
                version,
                &["-t", &topic, "-q", "1", "-m", &format!("while away {i}")],
            )
            .await;
        }
        // The queued messages may come before the SUBACK of the new SUBSCRIBE.
        let mut back = Sub::spawn(
            b.addr,
            version,
            &["-c", "-i", &id, "-q", "1", "-t", &topic, "-C", "3"],
        );
        for i in 1..=3 {
            let (_, body) = back.message().await;
            assert_eq!(body, format!("{topic} while away {i}"));
        }
        back.exits().await;
    }
}
