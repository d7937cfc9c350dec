//! `mqttx broker --metrics-bind 127.0.0.1:0 --sys-interval 1`, driven as a user would: a known
//! workload from `mosquitto_pub` and `mosquitto_sub` on two named listeners (one refusing
//! anonymous clients, a retained-size quota), then `GET /metrics` over loopback checked line
//! by line, and the `$SYS` statistics received at the interval the flag sets; then the
//! `tracing` events of broker and client with `RUST_LOG` at TRACE, without payload bytes.
//! Every process is started here, waited for with a timeout and ended by its pid
//! (`kill_on_drop`).

mod support;

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::time::Duration;

use support::{line_containing, port_in};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

fn tool(name: &str, port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new(name);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a mosquitto client to its end (within `WAIT`).
async fn run(name: &str, port: u16, args: &[&str]) -> Output {
    let child = tool(name, port, args)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} (Debian's mosquitto-clients): {e}"));
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} exits in time"))
        .expect("wait")
}

/// `GET /metrics`: the samples, keyed by name and labels as printed (`name{a="b"}`).
async fn scrape(port: u16) -> HashMap<String, f64> {
    let body = tokio::time::timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        response
    })
    .await
    .expect("the endpoint answers in time");
    let (head, body) = body.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("name value");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// Scrapes until `key` has `value` (the broker closes connections after the clients exit).
async fn scrape_until(port: u16, key: &str, value: f64) -> HashMap<String, f64> {
    for _ in 0..200 {
        let samples = scrape(port).await;
        if samples.get(key) == Some(&value) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} never became {value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_counts_a_known_workload_and_sys_interval_is_honoured() {
    let dir = std::env::temp_dir().join(format!("mqttx-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let config = dir.join("mqttx.toml");
    // The flag's interval (1 s) replaces the file's (60 s).
    std::fs::write(
        &config,
        "sys_interval = 60\n\
         [[listeners]]\nname = \"open\"\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"closed\"\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n\
         [security]\nallow_anonymous = false\nmax_retained_size = 10\n\
         [[security.listeners]]\nname = \"open\"\nallow_anonymous = true\n",
    )
    .expect("write the configuration");
    let mut broker = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args([
            "broker",
            "--memory",
            "--metrics-bind",
            "127.0.0.1:0",
            "--sys-interval",
            "1",
        ])
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mqttx broker");
    let mut log = BufReader::new(broker.stderr.take().expect("stderr")).lines();
    let metrics = port_in(&line_containing(&mut log, "metrics endpoint listening").await);
    let open = port_in(&line_containing(&mut log, "mqttx broker listening").await);
    let closed = port_in(&line_containing(&mut log, "mqttx broker listening").await);
    let _ = std::fs::remove_dir_all(&dir);

    // The workload. A retained QoS 1 message, and one over the retained-size quota (PUBACK
    // 0x97 to an MQTT 5.0 client: dropped, cause rate_limited).
    let out = run(
        "mosquitto_pub",
        open,
        &["-t", "t/r", "-m", "keep", "-r", "-q", "1"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let big = [
        "-V",
        "5",
        "-t",
        "t/big",
        "-m",
        "0123456789abcdef",
        "-r",
        "-q",
        "1",
    ];
    run("mosquitto_pub", open, &big).await;
    // A subscriber gets the retained message (sent at QoS 1), then one at QoS 0 and one at 2.
    let mut sub = tool(
        "mosquitto_sub",
        open,
        &["-t", "t/#", "-q", "2", "-C", "3", "-v"],
    )
    .spawn()
    .expect("spawn mosquitto_sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line()).await;
    assert_eq!(
        first.expect("in time").expect("read").as_deref(),
        Some("t/r keep")
    );
    for (topic, payload, qos) in [("t/a", "one", "0"), ("t/b", "two", "2")] {
        let out = run(
            "mosquitto_pub",
            open,
            &["-t", topic, "-m", payload, "-q", qos],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
    }
    let rest = tokio::time::timeout(WAIT, sub.wait_with_output())
        .await
        .expect("mosquitto_sub exits in time")
        .expect("wait");
    assert!(rest.status.success());
    let mut got = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        got.push(line);
    }
    assert_eq!(got, ["t/a one", "t/b two"]);
    // Anonymous clients are refused on the other listener (0x87 Not authorized).
    let out = run("mosquitto_pub", closed, &["-t", "t/c", "-m", "x"]).await;
    assert!(!out.status.success());

    let m = scrape_until(metrics, "mqttx_connections", 0.0).await;
    let expect = [
        ("mqttx_connections_total", 6.0),
        ("mqttx_client_connects_total", 5.0),
        (
            "mqttx_connections_refused_total{reason=\"not_authorized\"}",
            1.0,
        ),
        ("mqttx_messages_received_total{qos=\"0\"}", 1.0),
        ("mqttx_messages_received_total{qos=\"1\"}", 2.0),
        ("mqttx_messages_received_total{qos=\"2\"}", 1.0),
        ("mqttx_messages_sent_total{qos=\"0\"}", 1.0),
        ("mqttx_messages_sent_total{qos=\"1\"}", 1.0),
        ("mqttx_messages_sent_total{qos=\"2\"}", 1.0),
        ("mqttx_messages_dropped_total{cause=\"rate_limited\"}", 1.0),
        ("mqttx_messages_dropped_total{cause=\"queue_full\"}", 0.0),
        ("mqttx_messages_dropped_total{cause=\"too_large\"}", 0.0),
        ("mqttx_messages_dropped_total{cause=\"expired\"}", 0.0),
        ("mqttx_retained_messages", 1.0),
        ("mqttx_retained_bytes", 7.0),
        ("mqttx_subscriptions", 0.0),
        ("mqttx_sessions{state=\"online\"}", 0.0),
        ("mqttx_sessions{state=\"offline\"}", 0.0),
        ("mqttx_in_flight_messages", 0.0),
        (
            "mqttx_listener_connections_total{listener=\"open\",kind=\"tcp\"}",
            5.0,
        ),
        (
            "mqttx_listener_connections_total{listener=\"closed\",kind=\"tcp\"}",
            1.0,
        ),
        (
            "mqttx_listener_connections{listener=\"open\",kind=\"tcp\"}",
            0.0,
        ),
    ];
    for (key, value) in expect {
        assert_eq!(m.get(key), Some(&value), "{key} in {m:#?}");
    }
    // Each client sent at least its CONNECT and DISCONNECT, and got at least a CONNACK.
    assert!(m["mqttx_bytes_received_total"] >= 6.0 * 4.0, "{m:#?}");
    assert!(m["mqttx_bytes_sent_total"] >= 6.0 * 4.0, "{m:#?}");
    assert!(m["mqttx_uptime_seconds"] > 0.0);

    // `$SYS` every second: two rounds within a bounded wait (the file's 60 s would time out),
    // with the same count as the endpoint.
    let sys = [
        "-t",
        "$SYS/broker/messages/received",
        "-t",
        "$SYS/broker/uptime",
        "-R",
        "-v",
        "-C",
        "4",
        "-W",
        "15",
    ];
    let out = run("mosquitto_sub", open, &sys).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let received: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("$SYS/broker/messages/received "))
        .collect();
    assert_eq!(received, ["4", "4"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_events_of_broker_and_client_without_payload_bytes() {
    // Everything at TRACE, from RUST_LOG: the events of docs/telemetry.md appear, and the
    // payload itself never does (only its length).
    let mut broker = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args([
            "broker",
            "--memory",
            "--bind",
            "127.0.0.1:0",
            "--sys-interval",
            "0",
        ])
        .env("RUST_LOG", "info,mqttx_broker=trace")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mqttx broker");
    let mut log = BufReader::new(broker.stderr.take().expect("stderr")).lines();
    let port = port_in(&line_containing(&mut log, "mqttx broker listening").await);

    let sub = tool(
        "mosquitto_sub",
        port,
        &["-t", "s/#", "-C", "1", "-i", "traced-sub"],
    )
    .spawn()
    .expect("spawn mosquitto_sub");
    line_containing(&mut log, "subscribe").await;
    let out = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5"])
        .args([
            "-i",
            "traced-pub",
            "-t",
            "s/1",
            "-m",
            "SECRET-PAYLOAD",
            "-q",
            "1",
        ])
        .env("RUST_LOG", "mqttx_client=trace")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("mqttx pub exits in time")
        .expect("run mqttx pub");
    assert!(out.status.success(), "{out:?}");
    let client = String::from_utf8_lossy(&out.stderr);
    for event in [
        "connect start",
        "connect stop",
        "publish start",
        "publish stop",
        "disconnect",
    ] {
        assert!(client.contains(event), "no {event:?} in {client}");
    }
    assert!(client.contains("client_id=traced-pub"), "{client}");
    assert!(!client.contains("SECRET-PAYLOAD"), "{client}");
    let got = tokio::time::timeout(WAIT, sub.wait_with_output())
        .await
        .expect("mosquitto_sub exits in time")
        .expect("wait");
    assert_eq!(String::from_utf8_lossy(&got.stdout), "SECRET-PAYLOAD\n");

    // The broker's side, in order, until the publisher's disconnect.
    let mut seen = Vec::new();
    let line = line_containing(&mut log, "connect stop client_id=traced-pub").await;
    seen.push(line);
    let line = line_containing(&mut log, "publish topic=s/1").await;
    assert!(line.contains("payload_len=14"), "{line}");
    assert!(
        line.contains("client_id=\"traced-pub\""),
        "the span: {line}"
    );
    seen.push(line);
    seen.push(line_containing(&mut log, "disconnect client_id=traced-pub").await);
    assert!(
        seen.iter().all(|l| !l.contains("SECRET-PAYLOAD")),
        "{seen:#?}"
    );
}
