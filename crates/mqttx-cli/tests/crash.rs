//! `mqttx broker --data-dir` killed with SIGKILL while it takes messages, several times over:
//! every message it acknowledged reaches the persistent subscriber that was away meanwhile
//! (QoS 1 at least once, QoS 2 exactly once), and the retained message is intact.
//!
//! The publisher and subscriber are scripted clients speaking raw packets (the codec's),
//! so that the test knows exactly what was acknowledged when the broker died. Every process
//! is started here and ended by its pid; every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

mod support;

use mqttx_codec::{
    Packet, PacketId, PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter,
};
use support::{Broker, Client, start_broker};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(30);
/// QoS 1 messages, then QoS 2 ones, numbered from 0.
const QOS1: u32 = 10_000;
const QOS2: u32 = 500;
/// Publishes in flight at once.
const WINDOW: usize = 64;

/// A small deterministic generator (xorshift), seeded per run and printed, so that a failing
/// run can be repeated with `MQTTX_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Starts `mqttx broker` on a free port with `dir` as its data directory.
async fn start(dir: &std::path::Path, config: &std::path::Path) -> Broker {
    start_broker(&[
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
    .await
}

fn pid(n: u32) -> PacketId {
    // 1..=65535, never 0.
    PacketId::new(u16::try_from(n % 65_535 + 1).expect("fits")).expect("non-zero")
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("a 4-byte payload"))
}

/// What the publisher knows: which messages the broker acknowledged (PUBACK, or PUBREC for
/// QoS 2), and the QoS 2 ones whose exchange is not finished.
#[derive(Default)]
struct Publisher {
    next: u32,
    acked: BTreeSet<u32>,
    /// Sent, not yet acknowledged: resent with DUP after a reconnect.
    unacked: BTreeSet<u32>,
    /// QoS 2, PUBREC received, PUBCOMP not yet: PUBREL resent after a reconnect.
    released: BTreeSet<u32>,
}

fn publish_packet(n: u32, dup: bool) -> Packet<'static> {
    let mut p = Publish::new(format!("crash/{}", n % 10), n.to_be_bytes().to_vec());
    p.qos = if n < QOS1 {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    };
    p.packet_id = Some(pid(n));
    p.dup = dup;
    Packet::Publish(p)
}

impl Publisher {
    /// Publishes until `stop_after` more acknowledgements (or all messages), or until the
    /// connection dies. Returns whether every message is acknowledged and every QoS 2
    /// exchange finished.
    async fn run(&mut self, client: &mut Client, stop_after: Option<u64>) -> bool {
        // After a reconnect: the unfinished exchanges first [MQTT-4.4.0-1].
        let resend: Vec<u32> = self.unacked.iter().copied().collect();
        for n in resend {
            if client.send(&publish_packet(n, true)).await.is_err() {
                return false;
            }
        }
        let release: Vec<u32> = self.released.iter().copied().collect();
        for n in release {
            if client
                .send(&Packet::PubRel(PubResponse::new(pid(n))))
                .await
                .is_err()
            {
                return false;
            }
        }
        let mut budget = stop_after.unwrap_or(u64::MAX);
        let mut by_pid: BTreeMap<u16, u32> = self
            .unacked
            .iter()
            .chain(self.released.iter())
            .map(|&n| (pid(n).get(), n))
            .collect();
        loop {
            while self.unacked.len() + self.released.len() < WINDOW && self.next < QOS1 + QOS2 {
                let n = self.next;
                self.next += 1;
                self.unacked.insert(n);
                by_pid.insert(pid(n).get(), n);
                if client.send(&publish_packet(n, false)).await.is_err() {
                    return false;
                }
            }
            if self.unacked.is_empty() && self.released.is_empty() {
                return self.next == QOS1 + QOS2;
            }
            if budget == 0 {
                return false;
            }
            let Some(packet) = client.recv().await else {
                return false;
            };
            match packet {
                Packet::PubAck(ack) => {
                    let Some(&n) = by_pid.get(&ack.packet_id.get()) else {
                        panic!("PUBACK for an unknown packet id {ack:?}")
                    };
                    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "message {n}");
                    self.unacked.remove(&n);
                    self.acked.insert(n);
                    by_pid.remove(&ack.packet_id.get());
                    budget -= 1;
                }
                Packet::PubRec(rec) => {
                    let Some(&n) = by_pid.get(&rec.packet_id.get()) else {
                        panic!("PUBREC for an unknown packet id {rec:?}")
                    };
                    assert_eq!(rec.reason_code, ReasonCode::SUCCESS, "message {n}");
                    if self.unacked.remove(&n) {
                        self.acked.insert(n);
                        self.released.insert(n);
                        budget -= 1;
                    }
                    if client
                        .send(&Packet::PubRel(PubResponse::new(rec.packet_id)))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                Packet::PubComp(comp) => {
                    if let Some(n) = by_pid.remove(&comp.packet_id.get()) {
                        self.released.remove(&n);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_message() {
    let seed = std::env::var("MQTTX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("MQTTX_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("mqttx-crash-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("mqttx.toml");
    std::fs::write(
        &config,
        "max_queued_messages = 20000\nmax_offline_queued_bytes = 16777216\n",
    )
    .expect("config");
    let data = dir.join("data");

    // The subscriber subscribes, and goes away.
    let broker = start(&data, &config).await;
    let (mut sub, _) = Client::connect(broker.port, "crash-sub")
        .await
        .expect("connect");
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(0),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("crash/#", QoS::ExactlyOnce)].into(),
    }))
    .await
    .expect("subscribe");
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    drop(sub);
    // A retained message, acknowledged before the first crash.
    let (mut publ, _) = Client::connect(broker.port, "crash-retain")
        .await
        .expect("connect");
    let mut retained = Publish::new("kept/one".to_owned(), b"intact".to_vec());
    retained.qos = QoS::AtLeastOnce;
    retained.retain = true;
    retained.packet_id = Some(pid(7));
    publ.send(&Packet::Publish(retained)).await.expect("send");
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    drop(publ);

    // Three rounds of publishing, each ended by SIGKILL at a random point.
    let mut publisher = Publisher::default();
    let mut broker = Some(broker);
    for round in 0..3 {
        let running = match broker.take() {
            Some(running) => running,
            None => start(&data, &config).await,
        };
        if let Some((mut client, _)) = Client::connect(running.port, "crash-pub").await {
            let stop_after = 200 + rng.below(u64::from(QOS1 + QOS2) / 4);
            publisher.run(&mut client, Some(stop_after)).await;
        }
        running.kill().await;
        eprintln!(
            "round {round}: {} acknowledged, {} in flight at the kill",
            publisher.acked.len(),
            publisher.unacked.len() + publisher.released.len()
        );
    }
    // The last broker takes the rest.
    let running = start(&data, &config).await;
    let (mut client, present) = Client::connect(running.port, "crash-pub")
        .await
        .expect("connect");
    assert!(present, "the publisher's session survived");
    assert!(publisher.run(&mut client, None).await, "all published");
    assert_eq!(publisher.acked.len() as u32, QOS1 + QOS2);

    // The subscriber gets every message: QoS 1 at least once, QoS 2 exactly once.
    let (mut sub, present) = Client::connect(running.port, "crash-sub")
        .await
        .expect("connect");
    assert!(present, "the subscriber's session survived");
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    while (seen.len() as u32) < QOS1 + QOS2 {
        let Some(packet) = sub.recv().await else {
            let missing: Vec<u32> = (0..QOS1 + QOS2)
                .filter(|n| !seen.contains_key(n))
                .take(10)
                .collect();
            panic!(
                "{} of {} delivered; missing e.g. {missing:?}",
                seen.len(),
                QOS1 + QOS2
            );
        };
        match packet {
            Packet::Publish(p) => {
                *seen.entry(number(&p.payload)).or_default() += 1;
                let id = p.packet_id.expect("QoS 1 or 2");
                let answer = if p.qos == QoS::AtLeastOnce {
                    Packet::PubAck(PubResponse::new(id))
                } else {
                    Packet::PubRec(PubResponse::new(id))
                };
                sub.send(&answer).await.expect("ack");
            }
            Packet::PubRel(rel) => {
                sub.send(&Packet::PubComp(PubResponse::new(rel.packet_id)))
                    .await
                    .expect("pubcomp");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let twice: Vec<u32> = seen
        .iter()
        .filter(|&(&n, &count)| n >= QOS1 && count > 1)
        .map(|(&n, _)| n)
        .collect();
    assert!(
        twice.is_empty(),
        "QoS 2 messages delivered twice: {twice:?}"
    );

    // The retained message is intact.
    let (mut late, _) = Client::connect(running.port, "crash-late")
        .await
        .expect("connect");
    late.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("kept/#", QoS::AtLeastOnce)].into(),
    }))
    .await
    .expect("subscribe");
    assert!(matches!(late.recv().await, Some(Packet::SubAck(_))));
    match late.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(
            (&*p.topic, &p.payload[..], p.retain),
            ("kept/one", &b"intact"[..], true)
        ),
        other => panic!("expected the retained message, got {other:?}"),
    }
    running.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_directory_that_is_not_a_store_is_an_error_not_an_empty_start() {
    let dir = std::env::temp_dir().join(format!("mqttx-not-a-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("notes.txt"), "mine").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mqttx"))
        .args(["broker", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("exits in time")
        .expect("run mqttx broker");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("not an mqttx store"), "{log}");
    assert!(
        log.contains(&*dir.to_string_lossy()),
        "the error names the directory: {log}"
    );
    // Left as it was.
    assert_eq!(
        std::fs::read_dir(&dir).expect("read dir").count(),
        1,
        "nothing written into it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mosquitto_sub`/`mosquitto_pub` (Debian's mosquitto-clients) as the clients: a persistent
/// `mosquitto_sub` session away while `mosquitto_pub` publishes at QoS 1, the broker killed
/// with SIGKILL and restarted, then `mosquitto_sub` resumes its session and gets them all.
#[tokio::test]
async fn mosquitto_clients_session_survives_kill_9() {
    let dir = std::env::temp_dir().join(format!("mqttx-crash-mosq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("mqttx.toml");
    std::fs::write(&config, "sys_interval = 0\n").expect("config");
    let data = dir.join("data");
    let tool = |name: &str, port: u16, args: &[&str]| {
        let mut cmd = Command::new(name);
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "311"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let run = |mut cmd: Command| async move {
        let out = tokio::time::timeout(WAIT, cmd.output())
            .await
            .expect("the client finishes in time")
            .expect("spawn (Debian's mosquitto-clients; .ci/run installs them)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let broker = start(&data, &config).await;
    // Subscribe with a persistent session (-c, Clean Session 0) and leave at once.
    run(tool(
        "mosquitto_sub",
        broker.port,
        &["-c", "-i", "mosq-durable", "-q", "1", "-t", "mosq/#", "-E"],
    ))
    .await;
    for i in 0..20 {
        run(tool(
            "mosquitto_pub",
            broker.port,
            &[
                "-q",
                "1",
                "-t",
                &format!("mosq/{i}"),
                "-m",
                &format!("m{i}"),
            ],
        ))
        .await;
    }
    run(tool(
        "mosquitto_pub",
        broker.port,
        &["-q", "1", "-r", "-t", "kept/mosq", "-m", "intact"],
    ))
    .await;
    broker.kill().await;
    let broker = start(&data, &config).await;
    let got = run(tool(
        "mosquitto_sub",
        broker.port,
        &[
            "-c",
            "-i",
            "mosq-durable",
            "-q",
            "1",
            "-t",
            "mosq/#",
            "-C",
            "20",
            "-v",
        ],
    ))
    .await;
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort_unstable();
    let mut want: Vec<String> = (0..20).map(|i| format!("mosq/{i} m{i}")).collect();
    want.sort_unstable();
    assert_eq!(lines, want);
    let retained = run(tool(
        "mosquitto_sub",
        broker.port,
        &["-t", "kept/#", "-C", "1", "-v"],
    ))
    .await;
    assert_eq!(retained.trim(), "kept/mosq intact");
    broker.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
