//! `mqttx broker` with listener flags, driven as a user would: TCP and TLS listeners on free
//! ports, `mosquitto_pub` as the client, and certificate files renewed and reloaded with
//! SIGHUP. Certificates are made at test time with rcgen; every process is started here,
//! waited for with a timeout and ended by its pid (`kill_on_drop`).

#[path = "../../mqttx-transport-tls/tests/support/pki.rs"]
mod pki;

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{line_containing, port_in};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

/// `mosquitto_pub` to `localhost:port` with `args`; whether it succeeded.
async fn publish(port: u16, args: &[&str]) -> bool {
    let child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-t",
            "cli/t",
            "-m",
            "x",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mosquitto_pub (Debian's mosquitto-clients; .ci/run installs it)");
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("wait")
        .status
        .success()
}

#[tokio::test]
async fn tcp_and_tls_listeners_from_flags_and_certificates_renewed_on_sighup() {
    let pki = pki::make();
    let (cert, key) = (pki.dir.join("live.pem"), pki.dir.join("live.key"));
    // The broker starts with an expired certificate.
    std::fs::copy(&pki.expired_cert, &cert).expect("copy");
    std::fs::copy(&pki.expired_key, &key).expect("copy");
    let mut broker: Child = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args([
            "broker",
            "--memory",
            "--bind",
            "127.0.0.1:0",
            "--tls-bind",
            "127.0.0.1:0",
            "--cert",
        ])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mqttx broker");
    let mut log = BufReader::new(broker.stderr.take().expect("stderr")).lines();
    let tcp = port_in(&line_containing(&mut log, "mqttx broker listening").await);
    let tls_line = line_containing(&mut log, "mqttx broker listening").await;
    assert!(tls_line.contains("\"tls\""), "{tls_line}");
    let tls = port_in(&tls_line);
    let cafile = pki.ca.display().to_string();

    assert!(publish(tcp, &[]).await, "plain TCP");
    assert!(
        !publish(tls, &["--cafile", &cafile]).await,
        "an expired certificate is refused"
    );

    std::fs::copy(&pki.server_cert, &cert).expect("copy");
    std::fs::copy(&pki.server_key, &key).expect("copy");
    let pid = broker.id().expect("running");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    line_containing(&mut log, "TLS certificates reloaded").await;
    assert!(
        publish(tls, &["--cafile", &cafile]).await,
        "the renewed certificate"
    );
    assert!(publish(tcp, &[]).await, "TCP still served");
}
