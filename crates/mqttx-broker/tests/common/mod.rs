//! Helpers shared by the loopback integration tests: an in-process broker on a free port and
//! a scripted client that speaks raw codec-encoded packets.

#![allow(dead_code, unreachable_pub)] // Each test crate uses a different subset.

use std::net::SocketAddr;
use std::time::Duration;

use mqttx_broker::codec::{
    DecodeContext, Decoder, EncodeContext, OwnedPacket, Packet, ProtocolVersion, encode,
};
use mqttx_broker::{Broker, Config, Handler, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config listening on a free loopback port.
pub fn loopback_config() -> Config {
    let mut config = Config::default();
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// A running broker: its address, a handle, and the server task.
pub struct Running<H: Handler> {
    pub addr: SocketAddr,
    pub broker: Broker<H>,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Starts `server` on a task.
pub fn run<H: Handler>(server: Server<H>) -> Running<H> {
    let addr = server.local_addr().expect("local address");
    let broker = server.broker().clone();
    let task = tokio::spawn(server.run());
    Running { addr, broker, task }
}

/// Starts a broker with the default handler on 127.0.0.1:0.
pub async fn start() -> Running<mqttx_broker::AllowAll> {
    run(Broker::bind(loopback_config()).await.expect("bind"))
}

/// A client that sends and receives packets as raw bytes.
pub struct RawClient<S> {
    pub stream: S,
    decoder: Decoder,
    version: ProtocolVersion,
}

impl RawClient<tokio::net::TcpStream> {
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        Self::new(stream, version)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    pub fn new(stream: S, version: ProtocolVersion) -> Self {
        Self {
            stream,
            decoder: Decoder::new(DecodeContext::new(version)),
            version,
        }
    }

    pub async fn send(&mut self, packet: &Packet<'_>) {
        let mut bytes = Vec::new();
        encode(packet, &EncodeContext::new(self.version), &mut bytes).expect("encode");
        self.send_raw(&bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet from the broker, or `None` when it closed the connection.
    pub async fn recv(&mut self) -> Option<OwnedPacket> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = self
                .decoder
                .next_packet()
                .expect("broker sent a valid packet")
            {
                return Some(p);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("the broker answers within the timeout")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.decoder.feed(&buf[..n]);
        }
    }

    /// Reads until the broker closes the connection; returns what it sent before.
    pub async fn until_closed(&mut self) -> Vec<OwnedPacket> {
        let mut out = Vec::new();
        while let Some(p) = self.recv().await {
            out.push(p);
        }
        out
    }
}

/// Runs a third-party client program to its end (30 s at most), asserts that it succeeded,
/// and returns what it printed, line by line. `what` names it in failures.
pub async fn run_client(mut cmd: tokio::process::Command, what: &str) -> Vec<String> {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes in time"))
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}
