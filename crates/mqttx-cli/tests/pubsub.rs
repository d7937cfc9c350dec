//! `mqttx pub` and `mqttx sub` run as a user would: the `mqttx` binary against a broker on
//! loopback (in this process, with TCP, TLS and WebSocket listeners), with `mosquitto_pub`
//! and `mosquitto_sub` on the other side. Every process is started here with
//! `kill_on_drop(true)` and waited for with a timeout.

#[path = "../../mqttx-transport-tls/tests/support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use mqttx_broker::{Broker, Config, Listener, ListenerKind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

fn mqttx() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqttx"));
    cmd.kill_on_drop(true).stdin(Stdio::null());
    cmd
}

fn tool(name: &str) -> Command {
    let mut cmd = Command::new(name);
    cmd.kill_on_drop(true).stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end (within `WAIT`) and returns its output.
async fn output(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn (mosquitto-clients installed?)");
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("the process exited early")
}

/// The ports of a running broker.
struct Ports {
    tcp: u16,
    tls: u16,
    ws: u16,
}

/// Starts a broker with TCP, TLS and WebSocket listeners on free loopback ports; it runs
/// until the test's runtime ends.
async fn start(pki: &pki::Pki) -> Ports {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config::default();
    config.listeners = vec![
        Listener::tcp(any),
        Listener::tls(any, &pki.server_cert, &pki.server_key),
        Listener::ws(any),
    ];
    let server = Broker::builder().config(config).bind().await.expect("bind");
    let addrs = server.local_addrs().expect("addresses");
    let port = |kind: ListenerKind| {
        addrs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| a.port())
            .expect("listener")
    };
    let ports = Ports {
        tcp: port(ListenerKind::Tcp),
        tls: port(ListenerKind::Tls),
        ws: port(ListenerKind::Ws),
    };
    tokio::spawn(server.run());
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_to_mqttx_sub_with_properties() {
    let pki = pki::make();
    let ports = start(&pki).await;
    let port = ports.tcp.to_string();
    // A retained message, so the subscriber gets it whenever it subscribes.
    let mut publish = tool("mosquitto_pub");
    publish.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-r",
    ]);
    publish.args([
        "-t",
        "cli/in",
        "-m",
        "hello",
        "-D",
        "publish",
        "content-type",
        "text/x",
    ]);
    publish.args(["-D", "publish", "user-property", "k", "v"]);
    let out = output(publish).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut sub = mqttx();
    sub.args([
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "cli/#",
        "-q",
        "1",
        "-C",
        "1",
    ]);
    sub.args(["-F", r"%t|%p|%r|%q|%C|%P\n"]);
    let out = output(sub).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cli/in|hello|1|1|text/x|k:v\n");

    // -v over MQTT 3.1.1, the topic from an mqtt:// URL.
    let mut sub = mqttx();
    sub.args(["sub", "-V", "311", "-v", "-C", "1", "-L"]);
    sub.arg(format!("mqtt://127.0.0.1:{port}/cli/in"));
    let out = output(sub).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cli/in hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqttx_pub_to_mosquitto_sub() {
    let pki = pki::make();
    let ports = start(&pki).await;
    let port = ports.tcp.to_string();
    // mosquitto_sub -d says on stdout when its subscription is acknowledged; stdbuf makes
    // it write each line at once on a pipe.
    let mut sub = tool("stdbuf");
    sub.args([
        "-oL",
        "mosquitto_sub",
        "-d",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-q",
        "2",
    ]);
    sub.args([
        "-t",
        "cli/lines",
        "-t",
        "cli/props",
        "-C",
        "4",
        "-F",
        "%t %p %C %P",
    ]);
    let mut sub = sub
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    loop {
        let line = next_line(&mut lines).await;
        if line.contains("SUBACK") {
            break;
        }
    }

    // -l: every non-empty line of stdin is a message, at QoS 2.
    let mut publish = mqttx();
    publish.args([
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "cli/lines",
        "-q",
        "2",
        "-l",
    ]);
    let mut child = publish
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mqttx pub");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"one\ntwo\n\nthree\n")
        .await
        .expect("write");
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("in time")
        .expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // MQTT 5.0 properties with -D.
    let mut publish = mqttx();
    publish.args([
        "pub",
        "-p",
        &port,
        "-h",
        "127.0.0.1",
        "-t",
        "cli/props",
        "-m",
        "p",
        "-q",
        "1",
    ]);
    // A three-value -D before another -D (clap must not take the next "-D" as a value).
    publish.args(["-D", "publish", "content-type", "application/json"]);
    publish.args(["-D", "publish", "user-property", "a", "b"]);
    let out = output(publish).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Read to the end (mosquitto_sub exits after -C 4).
    let mut got = Vec::new();
    let rest = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.starts_with("cli/") {
                got.push(line.trim_end().to_owned());
            }
        }
    };
    tokio::time::timeout(WAIT, rest)
        .await
        .expect("mosquitto_sub exits after -C 4");
    assert_eq!(
        got,
        [
            "cli/lines one",
            "cli/lines two",
            "cli/lines three",
            "cli/props p application/json a:b"
        ]
    );
    let status = tokio::time::timeout(WAIT, sub.wait())
        .await
        .expect("mosquitto_sub exits")
        .expect("wait");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_websocket() {
    let pki = pki::make();
    let ports = start(&pki).await;
    let tls = ports.tls.to_string();
    let ca = pki.ca.to_str().expect("UTF-8 path");

    // TLS with a CA file, from -h/-p.
    let mut publish = mqttx();
    publish.args(["pub", "-h", "127.0.0.1", "-p", &tls, "--cafile", ca, "-r"]);
    publish.args(["-t", "tls/t", "-m", "secure", "-q", "1"]);
    let out = output(publish).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // mosquitto_sub over TLS sees it.
    let mut sub = tool("mosquitto_sub");
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &tls,
        "--cafile",
        ca,
        "-t",
        "tls/t",
        "-C",
        "1",
    ]);
    let out = output(sub).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "secure\n");

    // mqttx sub with an mqtts:// URL.
    let mut sub = mqttx();
    sub.args(["sub", "--cafile", ca, "-C", "1", "-L"]);
    sub.arg(format!("mqtts://localhost:{tls}/tls/t"));
    let out = output(sub).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "secure\n");

    // The wrong CA: exit code 1 and a message that names the problem.
    let mut publish = mqttx();
    publish.args(["pub", "-h", "127.0.0.1", "-p", &tls, "--cafile"]);
    publish.arg(&pki.other_ca);
    publish.args(["-t", "tls/t", "-m", "x"]);
    let out = output(publish).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("certificate"),
        "{}",
        text(&out.stderr)
    );
    // --insecure connects anyway.
    let mut publish = mqttx();
    publish.args(["pub", "-h", "127.0.0.1", "-p", &tls, "--insecure"]);
    publish.args(["-t", "tls/x", "-m", "x"]);
    let out = output(publish).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // WebSocket: publish retained, read it back.
    let ws = format!("ws://127.0.0.1:{}/mqtt", ports.ws);
    let mut publish = mqttx();
    publish.args([
        "pub", "-L", &ws, "-t", "ws/t", "-m", "over ws", "-r", "-q", "1",
    ]);
    let out = output(publish).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut sub = mqttx();
    sub.args(["sub", "-L", &ws, "-t", "ws/t", "-C", "1", "-v"]);
    let out = output(sub).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ws/t over ws\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_errors() {
    // Nobody listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port().to_string()
    };
    let mut publish = mqttx();
    publish.args(["pub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"]);
    let out = output(publish).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("connection refused") && err.contains("-h/-p"),
        "{err}"
    );

    for (args, needle) in [
        (&["pub", "-m", "x"][..], "no topic"),
        (&["pub", "-t", "t"], "no message"),
        (&["pub", "-t", "t", "-m", "x", "-q", "3"], "not a QoS"),
        (&["pub", "-t", "t", "-m", "x", "-n"], "cannot be used with"),
        (
            &[
                "sub",
                "-t",
                "t",
                "-V",
                "311",
                "-D",
                "subscribe",
                "user-property",
                "a",
                "b",
            ],
            "MQTT 5.0",
        ),
        (&["sub"], "no topic"),
        (&["sub", "-t", "t", "-L", "http://h/"], "not a broker URL"),
        (
            &[
                "pub",
                "-t",
                "t",
                "-m",
                "x",
                "--cafile",
                "/nonexistent/ca.pem",
            ],
            "ca.pem",
        ),
    ] {
        let mut cmd = mqttx();
        cmd.args(args);
        let out = output(cmd).await;
        let err = text(&out.stderr);
        let want = if needle == "ca.pem" { 1 } else { 2 };
        assert_eq!(out.status.code(), Some(want), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    let mut cmd = mqttx();
    cmd.args(["completions", "bash"]);
    let out = output(cmd).await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--will-topic"));
    let mut cmd = mqttx();
    cmd.arg("--version");
    let out = output(cmd).await;
    assert_eq!(
        text(&out.stdout).trim(),
        format!("mqttx {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics() {
    let mut config = Config::default();
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.sys_interval = Some(Duration::from_millis(50));
    let server = Broker::builder().config(config).bind().await.expect("bind");
    let port = server.local_addr().expect("address").port().to_string();
    tokio::spawn(server.run());
    // One message in (plus a CONNECT), so the counters have something to show.
    let mut publish = mqttx();
    publish.args(["pub", "-h", "127.0.0.1", "-p", &port, "-t", "a", "-m", "x"]);
    let out = output(publish).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // -R skips the retained copies: the values come from the next three rounds (the last
    // value of each counts what the first rounds sent to this subscriber).
    let mut sub = mqttx();
    sub.args([
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-R",
        "-v",
        "-C",
        "24",
    ]);
    sub.args(["-t", "$SYS/broker/#"]);
    let out = output(sub).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = text(&out.stdout);
    let value = |name: &str| {
        got.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("$SYS/broker/{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {got}"))
            .to_owned()
    };
    assert_eq!(value("messages/received"), "1");
    assert_eq!(value("clients/total"), "2");
    assert_eq!(value("clients/connected"), "1");
    assert_eq!(value("subscriptions/count"), "1");
    assert!(value("version").starts_with("mqttx "));
    assert!(value("uptime").ends_with(" seconds"));
    for name in ["messages/sent", "bytes/received", "bytes/sent"] {
        assert!(value(name).parse::<u64>().expect("a number") > 0, "{name}");
    }
    assert!(value("retained messages/count").parse::<u64>().is_ok());

    // `#` never matches `$SYS` topics [MQTT-4.7.2-1]: nothing arrives within 5 rounds.
    let mut sub = mqttx();
    sub.args([
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-R",
        "-W",
        "1",
        "-t",
        "#",
    ]);
    let out = output(sub).await;
    assert_eq!(out.status.code(), Some(27), "{}", text(&out.stdout));
}
