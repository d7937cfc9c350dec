//! The broker examples the guides walk through, run against Eclipse Mosquitto's command-line
//! clients: `hooks` (authentication and ACLs) and `bridge` (an application service behind
//! `Broker::send_to` and `Handler::on_message`). Each example's source is compiled into this
//! test as a module, so what runs here is the code the guides show.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use mqttx_broker::{Config, Handler, Server};

#[allow(dead_code)] // its `main` is the example's, not used here
#[path = "../../crates/mqttx-broker/examples/hooks.rs"]
mod hooks;

#[allow(dead_code)]
#[path = "../../crates/mqttx-broker/examples/bridge.rs"]
mod bridge;

/// How long any one tool may take.
const WAIT: Duration = Duration::from_secs(10);

fn loopback() -> Config {
    let mut config = Config::default();
    config.bind = "127.0.0.1:0".parse().expect("an address");
    config
}

/// Runs `server` on its own task; returns its address.
fn run<H: Handler>(server: Server<H>) -> SocketAddr {
    let addr = server.local_addr().expect("a bound listener");
    tokio::spawn(server.run());
    addr
}

/// Runs a mosquitto tool against `addr` to completion, or fails saying how to install it.
async fn mosquitto(tool: &str, addr: SocketAddr, args: &[&str]) -> Output {
    let port = addr.port().to_string();
    let child = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(WAIT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!(
            "cannot run `{tool}` ({e}): these tests need Debian's mosquitto-clients \
             (`apt-get install -y mosquitto-clients`; .ci/run installs it)"
        ),
        Err(_) => panic!("`{tool} {args:?}` did not finish within {WAIT:?}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn hooks_example_checks_passwords_and_topics() {
    let server = mqttx_broker::Broker::builder()
        .config(loopback())
        .handler(hooks::Hooks::new())
        .bind()
        .await
        .expect("bind");
    let addr = run(server);
    let alice = ["-u", "alice", "-P", "wonderland"];
    let bob = ["-u", "bob", "-P", "builder"];

    // Wrong password: CONNACK 0x86 (3.1.1 return code 4); no user name: 0x87 (5).
    let out = mosquitto(
        "mosquitto_pub",
        addr,
        &["-u", "alice", "-P", "x", "-t", "t", "-m", "x"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("bad user name or password"),
        "{}",
        text(&out)
    );
    let out = mosquitto("mosquitto_pub", addr, &["-t", "t", "-m", "x"]).await;
    assert!(text(&out).contains("not authorised"), "{}", text(&out));

    // Alice may publish in her own tree.
    let args = [
        &alice[..],
        &["-t", "users/alice/status", "-m", "online", "-r", "-q", "1"],
    ]
    .concat();
    let out = mosquitto("mosquitto_pub", addr, &args).await;
    assert!(out.status.success(), "{}", text(&out));

    // Bob may not: PUBACK 0x87 (135), and the retained message stays Alice's.
    let args = [
        &bob[..],
        &[
            "-t",
            "users/alice/status",
            "-m",
            "hacked",
            "-r",
            "-q",
            "1",
            "-V",
            "5",
            "-d",
        ],
    ]
    .concat();
    let out = mosquitto("mosquitto_pub", addr, &args).await;
    assert!(
        text(&out).contains("received PUBACK (Mid: 1, RC:135)"),
        "{}",
        text(&out)
    );

    // Nor subscribe there (SUBACK 0x87); Alice may.
    let args = [
        &bob[..],
        &["-t", "users/alice/status", "-C", "1", "-W", "5", "-V", "5"],
    ]
    .concat();
    let out = mosquitto("mosquitto_sub", addr, &args).await;
    assert!(
        text(&out).contains("All subscription requests were denied"),
        "{}",
        text(&out)
    );
    let args = [
        &alice[..],
        &["-t", "users/alice/#", "-C", "1", "-W", "5", "-v"],
    ]
    .concat();
    let out = mosquitto("mosquitto_sub", addr, &args).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "users/alice/status online\n",
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn bridge_example_answers_through_the_application() {
    let addr = run(bridge::start(loopback()).await.expect("bind"));

    // A request goes through `on_publish` into the service, the answer comes back through
    // `send_to` and `on_message` to the Response Topic the request named.
    let out = mosquitto(
        "mosquitto_rr",
        addr,
        &[
            "-t",
            "app/inbox",
            "-e",
            "replies/me",
            "-m",
            "hello",
            "-W",
            "5",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");

    // "bye" makes the service disconnect the client: DISCONNECT 0x98 (152).
    let out = mosquitto(
        "mosquitto_rr",
        addr,
        &[
            "-t",
            "app/inbox",
            "-e",
            "replies/me",
            "-m",
            "bye",
            "-W",
            "5",
            "-d",
        ],
    )
    .await;
    assert!(
        text(&out).contains("Received DISCONNECT (152)"),
        "{}",
        text(&out)
    );
}
