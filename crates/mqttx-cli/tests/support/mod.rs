//! Helpers shared by the integration tests that run `mqttx broker` as a child process: start
//! it and read its port from its log, kill it by its pid, and a scripted MQTT 5.0 client
//! speaking raw packets (the codec's).

#![allow(dead_code, unreachable_pub)] // Each test crate uses a different subset.

use std::process::Stdio;
use std::time::Duration;

use mqttx_codec::{
    Connect, DecodeContext, Decoder, EncodeContext, Packet, ProtocolVersion, ReasonCode, encode,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};

/// Bounds every wait of these helpers.
pub const WAIT: Duration = Duration::from_secs(30);
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A `mqttx broker` process, killed (SIGKILL) when dropped.
pub struct Broker {
    pub child: Child,
    pub port: u16,
}

/// Starts `mqttx broker --bind 127.0.0.1:0 ARGS` and waits until it logs its address.
pub async fn start_broker(args: &[&std::ffi::OsStr]) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args(["broker", "--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mqttx broker");
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = line_containing(&mut log, "mqttx broker listening").await;
    // Keep draining the log so that the broker never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    Broker {
        child,
        port: port_in(&line),
    }
}

/// The next line of a broker's log containing `needle` (bounded by [`WAIT`]).
pub async fn line_containing(log: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match log.next_line().await.expect("read log") {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("the broker exited before logging {needle:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in the log in time"))
}

/// The port of the first `127.0.0.1:PORT` in a log line.
pub fn port_in(line: &str) -> u16 {
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

impl Broker {
    /// SIGKILL, then wait for the process to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("kill -9");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the broker dies in time")
            .expect("wait");
    }
}

/// A scripted MQTT 5.0 client over TCP.
pub struct Client {
    stream: TcpStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Client {
    /// Connects with Clean Start 0 and a Session Expiry of an hour; returns Session Present.
    pub async fn connect(port: u16, id: &str) -> Option<(Self, bool)> {
        match Self::connect_with(port, id, false).await {
            Ok(connected) => Some(connected),
            Err(Some(code)) => panic!("expected CONNACK 0x00, got {code}"),
            Err(None) => None,
        }
    }

    /// Connects with Clean Start 1 and no Session Expiry (a session that ends with the
    /// connection); `Err` with the CONNACK's reason code when refused (`None`: no CONNACK).
    pub async fn connect_clean(port: u16, id: &str) -> Result<Self, Option<ReasonCode>> {
        Self::connect_with(port, id, true)
            .await
            .map(|(client, _)| client)
    }

    /// Connects with Clean Start 1 and no Session Expiry (`clean`), or Clean Start 0 and a
    /// Session Expiry of an hour; returns Session Present, or the CONNACK's reason code when
    /// refused (`None`: no CONNACK).
    pub async fn connect_with(
        port: u16,
        id: &str,
        clean: bool,
    ) -> Result<(Self, bool), Option<ReasonCode>> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|_| None)?;
        let mut client = Self {
            stream,
            decoder: Decoder::new(DecodeContext::new(V5)),
            buf: Vec::new(),
        };
        let mut connect = Connect::new(V5, id.to_owned());
        if !clean {
            connect.clean_start = false;
            connect.properties.session_expiry_interval = Some(3600);
        }
        client
            .send(&Packet::Connect(connect))
            .await
            .map_err(|_| None)?;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::SUCCESS => {
                Ok((client, ack.session_present))
            }
            Some(Packet::ConnAck(ack)) => Err(Some(ack.reason_code)),
            _ => Err(None),
        }
    }

    pub async fn send(&mut self, packet: &Packet<'_>) -> std::io::Result<()> {
        self.buf.clear();
        encode(packet, &EncodeContext::new(V5), &mut self.buf).expect("encode");
        self.stream.write_all(&self.buf).await
    }

    /// The next packet, or `None` once the connection is gone (or silent for `WAIT`).
    pub async fn recv(&mut self) -> Option<Packet<'static>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(packet) = self.decoder.next_packet().expect("a valid packet") {
                return Some(packet);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .ok()?
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.decoder.feed(&chunk[..n]);
        }
    }
}
