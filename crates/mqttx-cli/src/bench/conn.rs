//! One load-generator connection: the codec straight over a tokio TCP stream, with batched
//! writes and large reads, and the publisher and subscriber loops that run on it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mqttx_codec::{
    Connect, DecodeContext, Decoder, EncodeContext, Packet, PacketId, ProtocolVersion, PubResponse,
    Publish, QoS, Subscribe, SubscribeFilter, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, watch};

use super::stats::SeqTracker;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;
/// The most PUBLISH packets a publisher encodes into one write.
const WRITE_BATCH: u64 = 512;
/// The payload header: publisher index (4 bytes), sequence number (4), send time in
/// nanoseconds since the run's start (8).
pub(crate) const HEADER: usize = 16;
/// How long the handshakes (CONNACK, SUBACK) may take.
const HANDSHAKE: Duration = Duration::from_secs(30);

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// An MQTT connection driven with the codec alone.
pub(crate) struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    decoder: Decoder,
    cx: EncodeContext,
    /// Acknowledgements waiting to be written.
    acks: Vec<u8>,
    /// Bytes asked of the socket per read: small for handshakes (an idle connection of the
    /// `conn` scenario keeps a small buffer), [`READ_SIZE`] once messages flow.
    read_size: usize,
    /// For a persistent session: what [`Conn::close`] needs to end it on the broker.
    persistent: Option<Box<Persistent>>,
}

/// A persistent session to end when the connection closes, so runs leave no sessions behind.
struct Persistent {
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: String,
}

impl Conn {
    /// Opens TCP (TCP_NODELAY on), sends CONNECT (no Keep Alive) and waits for a successful
    /// CONNACK. With `session_expiry`, the session is persistent: Clean Start 0 and that
    /// Session Expiry Interval (MQTT 5.0), or Clean Session 0 (3.1.1); otherwise Clean Start.
    pub(crate) async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        session_expiry: Option<u32>,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Self {
            rd,
            wr,
            decoder: Decoder::new(DecodeContext::new(version)),
            cx: EncodeContext::new(version),
            acks: Vec::new(),
            read_size: 256,
            persistent: None,
        };
        let mut connect = Connect::new(version, client_id);
        connect.keep_alive = 0;
        if let Some(expiry) = session_expiry {
            connect.clean_start = false;
            if version.is_v5() {
                connect.properties.session_expiry_interval = Some(expiry);
            }
            conn.persistent = Some(Box::new(Persistent {
                addr,
                version,
                client_id: client_id.to_owned(),
            }));
        }
        conn.send(&Packet::Connect(connect)).await?;
        tokio::time::timeout(
            HANDSHAKE,
            conn.expect(|p| match p {
                Packet::ConnAck(ack) if ack.reason_code.is_error() => {
                    Some(Err(other(format!("CONNACK {}", ack.reason_code))))
                }
                Packet::ConnAck(_) => Some(Ok(())),
                _ => None,
            }),
        )
        .await
        .map_err(|_| other("no CONNACK"))??;
        Ok(conn)
    }

    async fn send(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        let mut out = Vec::new();
        encode(packet, &self.cx, &mut out).map_err(|e| other(e.to_string()))?;
        self.wr.write_all(&out).await
    }

    /// Reads until `pick` returns a result for a packet.
    async fn expect<T>(
        &mut self,
        mut pick: impl FnMut(&Packet<'_>) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        loop {
            while let Some(packet) = self
                .decoder
                .next_borrowed()
                .map_err(|e| other(e.to_string()))?
            {
                if let Some(result) = pick(&packet) {
                    return result;
                }
            }
            self.fill().await?;
        }
    }

    /// One socket read into the decoder's buffer.
    async fn fill(&mut self) -> io::Result<()> {
        let room = self.decoder.read_buf(self.read_size);
        let n = self.rd.read(room).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.decoder.commit(n);
        Ok(())
    }

    /// Subscribes to `filter` at `qos` and waits for a granting SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> io::Result<()> {
        let packet_id = PacketId::new(1).ok_or_else(|| other("packet id"))?;
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties: Default::default(),
            filters: vec![SubscribeFilter::new(filter, qos)].into(),
        }))
        .await?;
        tokio::time::timeout(
            HANDSHAKE,
            self.expect(|p| match p {
                Packet::SubAck(ack) => Some(match ack.reason_codes.iter().next() {
                    Some(code) if !code.is_error() => Ok(()),
                    code => Err(other(format!("SUBACK {code:?}"))),
                }),
                _ => None,
            }),
        )
        .await
        .map_err(|_| other("no SUBACK"))?
    }

    /// A PINGREQ and its PINGRESP: every packet sent before has been processed by the broker.
    pub(crate) async fn ping(&mut self) -> io::Result<()> {
        self.send(&Packet::PingReq).await?;
        self.expect(|p| matches!(p, Packet::PingResp).then_some(Ok(())))
            .await
    }

    /// Sends DISCONNECT and closes the stream. A persistent session is ended too: by a
    /// Session Expiry Interval of 0 in the DISCONNECT (MQTT 5.0), or by connecting again
    /// with Clean Session 1 (3.1.1).
    pub(crate) async fn close(mut self) {
        let persistent = self.persistent.take();
        let mut disconnect = mqttx_codec::Disconnect::default();
        if persistent.as_ref().is_some_and(|p| p.version.is_v5()) {
            disconnect.properties.session_expiry_interval = Some(0);
        }
        self.disconnect(disconnect).await;
        if let Some(p) = persistent.filter(|p| !p.version.is_v5()) {
            let clean = Self::connect(p.addr, p.version, &p.client_id, None);
            if let Ok(Ok(mut conn)) = tokio::time::timeout(HANDSHAKE, clean).await {
                conn.disconnect(mqttx_codec::Disconnect::default()).await;
            }
        }
    }

    async fn disconnect(&mut self, disconnect: mqttx_codec::Disconnect<'_>) {
        let _ = self.send(&Packet::Disconnect(disconnect)).await;
        let _ = self.wr.shutdown().await;
    }

    async fn flush_acks(&mut self) -> io::Result<()> {
        if !self.acks.is_empty() {
            self.wr.write_all(&self.acks).await?;
            self.acks.clear();
        }
        Ok(())
    }

    fn push_ack(&mut self, packet: &Packet<'_>) {
        // Acknowledgements always encode; a failure would be a codec bug worth ignoring here.
        let _ = encode(packet, &self.cx, &mut self.acks);
    }
}

/// What publishers and subscribers share while a run lasts.
#[derive(Debug)]
pub(crate) struct Run {
    /// The run's time origin (payload timestamps count from it).
    pub(crate) start: Instant,
    /// Publishers stop sending at this instant.
    pub(crate) deadline: Instant,
    /// Messages each subscriber has received, per publisher (flow control and progress).
    pub(crate) delivered: Vec<AtomicU64>,
    /// All deliveries, for the progress display.
    pub(crate) total_delivered: AtomicU64,
    /// All messages sent.
    pub(crate) total_sent: AtomicU64,
    /// Subscribers signal progress here; blocked publishers wait on it.
    pub(crate) progress: Notify,
    /// Set when publishers must stop (deadline or interrupt).
    pub(crate) stop_publishing: AtomicBool,
}

/// How a publisher sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PublishPlan {
    pub(crate) index: u32,
    pub(crate) qos: QoS,
    pub(crate) payload: usize,
    pub(crate) count: u64,
    /// QoS 1/2 messages awaiting their acknowledgement.
    pub(crate) window: u64,
    /// Messages sent and not yet received by every subscriber (0: no such limit).
    pub(crate) ahead: u64,
    /// Subscribers that receive each message (for `ahead`).
    pub(crate) receivers: u64,
    /// Messages per second (0: as fast as possible).
    pub(crate) rate: u64,
}

/// What one publisher did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PublishResult {
    pub(crate) sent: u64,
    /// When the broker had answered for the last message (PINGRESP or last acknowledgement).
    pub(crate) done: Option<Instant>,
}

/// Publishes `plan.count` messages (or until the deadline) to `topic`, then makes sure the
/// broker has processed them (a PINGREQ round trip after QoS 0).
pub(crate) async fn publisher(
    mut conn: Conn,
    topic: String,
    plan: PublishPlan,
    run: Arc<Run>,
) -> io::Result<PublishResult> {
    conn.read_size = READ_SIZE;
    let mut payload = vec![0u8; plan.payload.max(HEADER)];
    payload[..4].copy_from_slice(&plan.index.to_be_bytes());
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut sent: u64 = 0;
    let mut inflight: u64 = 0;
    let mut next_pid: u16 = 0;
    let my_delivered = &run.delivered[plan.index as usize];
    let mut tick = (plan.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_millis(1));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    loop {
        if sent >= plan.count
            || run.stop_publishing.load(Ordering::Relaxed)
            || Instant::now() >= run.deadline
        {
            break;
        }
        let mut room = (plan.count - sent).min(WRITE_BATCH);
        if plan.qos != QoS::AtMostOnce {
            room = room.min(plan.window.saturating_sub(inflight));
        }
        if plan.ahead > 0 && plan.receivers > 0 {
            let received = my_delivered.load(Ordering::Acquire) / plan.receivers;
            room = room.min((received + plan.ahead).saturating_sub(sent));
        }
        if let Some(tick) = &mut tick {
            let due =
                (run.start.elapsed().as_nanos() as u64).saturating_mul(plan.rate) / 1_000_000_000;
            if due <= sent {
                // Ahead of the rate: wait for the next millisecond, taking acknowledgements.
                if plan.qos != QoS::AtMostOnce {
                    read_acks(&mut conn, &mut inflight, false).await?;
                }
                tick.tick().await;
                continue;
            }
            room = room.min(due - sent);
        }
        if room == 0 {
            if plan.qos != QoS::AtMostOnce && inflight >= plan.window {
                // Waiting for acknowledgements.
                read_acks(&mut conn, &mut inflight, true).await?;
            } else {
                // Waiting for the subscribers to catch up.
                let notified = run.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let received = my_delivered.load(Ordering::Acquire) / plan.receivers.max(1);
                if received + plan.ahead <= sent {
                    let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
                }
                if plan.qos != QoS::AtMostOnce {
                    read_acks(&mut conn, &mut inflight, false).await?;
                }
            }
            continue;
        }
        wbuf.clear();
        wbuf.append(&mut conn.acks);
        for _ in 0..room {
            let seq = sent as u32;
            payload[4..8].copy_from_slice(&seq.to_be_bytes());
            let t = run.start.elapsed().as_nanos() as u64;
            payload[8..16].copy_from_slice(&t.to_be_bytes());
            let mut p = Publish::new(topic.as_str(), &payload[..]);
            p.qos = plan.qos;
            if plan.qos != QoS::AtMostOnce {
                next_pid = next_pid.checked_add(1).unwrap_or(1);
                p.packet_id = PacketId::new(next_pid);
                inflight += 1;
            }
            encode(&Packet::Publish(p), &conn.cx, &mut wbuf).map_err(|e| other(e.to_string()))?;
            sent += 1;
        }
        conn.wr.write_all(&wbuf).await?;
        run.total_sent.fetch_add(room, Ordering::Relaxed);
        if plan.qos != QoS::AtMostOnce {
            read_acks(&mut conn, &mut inflight, false).await?;
        }
    }
    // Every message sent has been handled by the broker once its acknowledgements are in
    // (QoS 1/2), or once a PINGREQ sent after them is answered (QoS 0: TCP keeps the order).
    let wait = async {
        while inflight > 0 {
            read_acks(&mut conn, &mut inflight, true).await?;
        }
        conn.ping().await
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| other("broker did not answer for the last messages"))??;
    let done = Some(Instant::now());
    conn.close().await;
    Ok(PublishResult { sent, done })
}

/// Processes acknowledgements from the broker: reads once when `block` (or when data is
/// ready), answers PUBREC with PUBREL, and frees window slots.
async fn read_acks(conn: &mut Conn, inflight: &mut u64, block: bool) -> io::Result<()> {
    if block {
        // PUBRELs still waiting would leave the broker without a reason to answer.
        conn.flush_acks().await?;
        tokio::time::timeout(HANDSHAKE, conn.fill())
            .await
            .map_err(|_| other("no acknowledgement from the broker"))??;
    } else {
        let room = conn.decoder.read_buf(READ_SIZE);
        match conn.rd.try_read(room) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => conn.decoder.commit(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let mut rel: Vec<PacketId> = Vec::new();
    while let Some(packet) = conn
        .decoder
        .next_borrowed()
        .map_err(|e| other(e.to_string()))?
    {
        match packet {
            Packet::PubAck(_) | Packet::PubComp(_) => *inflight = inflight.saturating_sub(1),
            Packet::PubRec(r) if r.reason_code.is_error() => {
                *inflight = inflight.saturating_sub(1);
            }
            Packet::PubRec(r) => rel.push(r.packet_id),
            Packet::Disconnect(d) => return Err(other(format!("DISCONNECT {}", d.reason_code))),
            _ => {}
        }
    }
    for pid in rel {
        conn.push_ack(&Packet::PubRel(PubResponse::new(pid)));
    }
    if block {
        conn.flush_acks().await?;
    }
    Ok(())
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub(crate) struct SubscribeResult {
    /// Per publisher: the sequence numbers received.
    pub(crate) seqs: Vec<SeqTracker>,
    /// Messages received without this run's payload header (another publisher's).
    pub(crate) foreign: u64,
    /// When the last message arrived.
    pub(crate) last: Option<Instant>,
    /// End-to-end latencies in nanoseconds (only when asked for).
    pub(crate) latencies: Vec<u64>,
}

/// Receives until `stop` turns true, acknowledging QoS 1 and 2 messages, checking sequence
/// numbers per publisher and, with `latency`, recording each message's transit time.
pub(crate) async fn subscriber(
    mut conn: Conn,
    publishers: usize,
    run: Arc<Run>,
    latency: bool,
    mut stop: watch::Receiver<bool>,
) -> io::Result<SubscribeResult> {
    let mut result = SubscribeResult {
        seqs: (0..publishers).map(|_| SeqTracker::default()).collect(),
        ..SubscribeResult::default()
    };
    let mut batch = vec![0u64; publishers];
    conn.read_size = READ_SIZE;
    loop {
        let room = conn.decoder.read_buf(READ_SIZE);
        let n = tokio::select! {
            read = conn.rd.read(room) => read?,
            _ = stop.wait_for(|&s| s) => break,
        };
        if n == 0 {
            break;
        }
        conn.decoder.commit(n);
        let now = Instant::now();
        let now_ns = now.duration_since(run.start).as_nanos() as u64;
        let mut got = 0u64;
        let mut acks: Vec<(u8, PacketId)> = Vec::new();
        while let Some(packet) = conn
            .decoder
            .next_borrowed()
            .map_err(|e| other(e.to_string()))?
        {
            match packet {
                Packet::Publish(p) => {
                    got += 1;
                    match p.packet_id {
                        Some(pid) if p.qos == QoS::AtLeastOnce => acks.push((4, pid)),
                        Some(pid) => acks.push((5, pid)),
                        None => {}
                    }
                    let Some(head) = p.payload.get(..HEADER) else {
                        result.foreign += 1;
                        continue;
                    };
                    let index = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                    let seq = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                    let Some(tracker) = result.seqs.get_mut(index) else {
                        result.foreign += 1;
                        continue;
                    };
                    tracker.record(seq);
                    batch[index] += 1;
                    if latency {
                        let mut t = [0u8; 8];
                        t.copy_from_slice(&head[8..16]);
                        result
                            .latencies
                            .push(now_ns.saturating_sub(u64::from_be_bytes(t)));
                    }
                }
                Packet::PubRel(r) => acks.push((7, r.packet_id)),
                _ => {}
            }
        }
        for (kind, pid) in acks {
            let ack = PubResponse::new(pid);
            conn.push_ack(&match kind {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                _ => Packet::PubComp(ack),
            });
        }
        conn.flush_acks().await?;
        if got > 0 {
            result.last = Some(now);
            for (i, b) in batch.iter_mut().enumerate() {
                if *b > 0 {
                    run.delivered[i].fetch_add(*b, Ordering::Release);
                    *b = 0;
                }
            }
            run.total_delivered.fetch_add(got, Ordering::Relaxed);
            run.progress.notify_waiters();
        }
    }
    conn.close().await;
    Ok(result)
}
