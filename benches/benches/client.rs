//! Client benchmark: QoS 1 publish throughput of mqttx-client and of rumqttc, in one run,
//! against the same local Eclipse Mosquitto, then against mqttx-broker in this process.
//!
//! Run with `cargo bench -p mqttx-benches --bench client`. The bench writes a Mosquitto
//! configuration file to a temporary directory, starts `/usr/sbin/mosquitto` (or the one on
//! `PATH`) on a free loopback port, and kills that process by its pid at the end.
//!
//! Each round publishes [`MESSAGES`] QoS 1 messages of [`PAYLOAD`] bytes to one topic with at
//! most [`WINDOW`] unacknowledged at any time, and is timed from the first publish to the last
//! PUBACK. The clients take turns, round by round, so a disturbance on the shared machine hits
//! both; the table reports the median round of each. Both run on a current-thread tokio
//! runtime (the application task and the client's connection task share one thread).
//!
//! - mqttx-client: the application keeps a window of [`WINDOW`] [`PublishHandle`]s and awaits
//!   the oldest before publishing once the window is full; the session's own window
//!   (`max_inflight`) is also [`WINDOW`].
//! - rumqttc: `MqttOptions::set_inflight(WINDOW)` (3.1.1) or
//!   `set_outgoing_inflight_upper_limit(WINDOW)` (5.0), a request channel of [`WINDOW`], one
//!   task publishing and the event loop counting PUBACKs, as rumqttc's own examples do.
//!
//! Each table also gives CPU time per message: the client's (the thread that runs the
//! current-thread runtime, so the client and the application) and the broker's (Mosquitto's
//! process, or the broker's thread).
//!
//! Mosquitto advertises a Receive Maximum of `max_inflight_messages` to MQTT 5.0 clients
//! (20 by default), so the configuration sets it to [`WINDOW`].
//!
//! `--quick` runs fewer, shorter rounds (for a smoke run); `--rounds N` and `--messages N`
//! override the defaults; `--only mqttx` or `--only rumqttc` runs one client (for profiling).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mqttx_client::codec::{ProtocolVersion, QoS};
use mqttx_client::{Client, ConnectOptions, PublishHandle};

/// Messages per round.
const MESSAGES: usize = 100_000;
/// Payload bytes per message.
const PAYLOAD: usize = 100;
/// Most unacknowledged messages at once.
const WINDOW: usize = 100;
/// Rounds per client and protocol version.
const ROUNDS: usize = 7;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; anything else we do not know is ignored.
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let rounds = value("--rounds").unwrap_or(if quick { 2 } else { ROUNDS });
    let messages = value("--messages").unwrap_or(if quick { 10_000 } else { MESSAGES });
    // `--only mqttx` or `--only rumqttc` runs one client (for profiling).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mosquitto = Mosquitto::start();
    table(&rt, &Broker::Mosquitto(&mosquitto), messages, rounds, only);
    drop(mosquitto);
    let ours = OurBroker::start();
    table(&rt, &Broker::Ours(&ours), messages, rounds, only);
    drop(ours);
}

/// The broker of one table.
enum Broker<'a> {
    Mosquitto(&'a Mosquitto),
    Ours(&'a OurBroker),
}

impl Broker<'_> {
    fn port(&self) -> u16 {
        match self {
            Self::Mosquitto(m) => m.port,
            Self::Ours(o) => o.port,
        }
    }

    /// CPU time the broker used so far.
    fn cpu(&self) -> Duration {
        match self {
            Self::Mosquitto(m) => cpu_time(&format!("/proc/{}/stat", m.child.id())),
            Self::Ours(_) => thread_cpu_time(OurBroker::THREAD),
        }
    }
}

fn table(
    rt: &tokio::runtime::Runtime,
    broker: &Broker<'_>,
    messages: usize,
    rounds: usize,
    only: Option<&str>,
) {
    let port = broker.port();
    let name = match broker {
        Broker::Mosquitto(_) => "Mosquitto (child process)",
        Broker::Ours(_) => "mqttx-broker (in this process, on its own thread)",
    };
    println!();
    println!(
        "QoS 1 publish throughput against {name} on 127.0.0.1:{port}: {messages} messages of \
         {PAYLOAD} B per round, window {WINDOW}, {rounds} rounds per client, median round"
    );
    println!();
    println!(
        "| protocol | mqttx-client | rumqttc 0.25 | ratio | client CPU per message, mqttx / rumqttc \
         | broker CPU per message, with mqttx / rumqttc |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        for round in 0..rounds {
            let o = measure(broker, only != Some("rumqttc"), || {
                rt.block_on(run_mqttx(port, version, messages, round))
            });
            let p = measure(broker, only != Some("mqttx"), || {
                rt.block_on(run_rumqttc(port, version, messages, round))
            });
            eprintln!(
                "{version:?} round {round}: mqttx {:.0} msg/s, rumqttc {:.0} msg/s",
                o.rate(messages),
                p.rate(messages)
            );
            ours.push(o);
            peer.push(p);
        }
        let (o, p) = (median(&mut ours, messages), median(&mut peer, messages));
        let name = if version.is_v5() { "5.0" } else { "3.1.1" };
        println!(
            "| {name} | {} msg/s | {} msg/s | **{:.1}×** | {:.1} µs / {:.1} µs | {:.1} µs / {:.1} µs |",
            thousands(o.rate(messages)),
            thousands(p.rate(messages)),
            o.rate(messages) / p.rate(messages),
            o.cpu_per_message(messages),
            p.cpu_per_message(messages),
            o.broker_cpu_per_message(messages),
            p.broker_cpu_per_message(messages),
        );
    }
}

/// One timed round: wall time from the first publish to the last PUBACK, and the CPU time
/// of this process (the client) and of Mosquitto over the whole round (connect included).
#[derive(Clone, Copy, Debug)]
struct Round {
    elapsed: Duration,
    cpu: Duration,
    broker_cpu: Duration,
}

impl Round {
    fn rate(&self, messages: usize) -> f64 {
        messages as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_message(&self, messages: usize) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / messages as f64
    }

    fn broker_cpu_per_message(&self, messages: usize) -> f64 {
        self.broker_cpu.as_secs_f64() * 1e6 / messages as f64
    }
}

fn measure(broker: &Broker<'_>, run: bool, f: impl FnOnce() -> Duration) -> Round {
    if !run {
        // Left out (`--only`): a placeholder that keeps the table printable.
        return Round {
            elapsed: Duration::from_secs(1),
            cpu: Duration::ZERO,
            broker_cpu: Duration::ZERO,
        };
    }
    // The client (either one) runs on this thread: the current-thread runtime.
    let (cpu0, broker0) = (cpu_time("/proc/thread-self/stat"), broker.cpu());
    let elapsed = f();
    Round {
        elapsed,
        cpu: cpu_time("/proc/thread-self/stat").saturating_sub(cpu0),
        broker_cpu: broker.cpu().saturating_sub(broker0),
    }
}

/// User plus system CPU time from a `/proc/…/stat` file of a process or thread (zero where
/// there is no `/proc`). Clock ticks are taken as 100 Hz, Linux's `USER_HZ`.
fn cpu_time(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// CPU time of this process's thread named `name`.
fn thread_cpu_time(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            return cpu_time(&task.path().join("stat").to_string_lossy());
        }
    }
    Duration::ZERO
}

/// mqttx-broker with its default configuration on 127.0.0.1:0, on a thread of its own
/// running a current-thread runtime (so its CPU time is that thread's).
struct OurBroker {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OurBroker {
    const THREAD: &'static str = "bench-broker";

    fn start() -> Self {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(Self::THREAD.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("broker runtime");
                rt.block_on(async move {
                    let mut config = mqttx_broker::Config::default();
                    config.bind = "127.0.0.1:0".parse().expect("address");
                    let server = mqttx_broker::Broker::bind(config)
                        .await
                        .expect("broker binds");
                    let port = server.local_addr().expect("bound").port();
                    port_tx.send(port).expect("bench waits");
                    let _ = server
                        .run_until(async move {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })
            .expect("broker thread");
        let port = port_rx.recv().expect("broker started");
        Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for OurBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The round with the median throughput.
fn median(v: &mut [Round], messages: usize) -> Round {
    v.sort_by(|a, b| a.rate(messages).total_cmp(&b.rate(messages)));
    v[v.len() / 2]
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

async fn run_mqttx(port: u16, version: ProtocolVersion, messages: usize, round: usize) -> Duration {
    let mut o =
        ConnectOptions::new("127.0.0.1", port, format!("bench-mqttx-{round}")).protocol(version);
    o.session.max_inflight = WINDOW as u16;
    o.reconnect = false;
    let (client, _events) = Client::connect(o).await.expect("mqttx-client connects");
    let payload = vec![0xA5u8; PAYLOAD];
    let mut window: VecDeque<PublishHandle> = VecDeque::with_capacity(WINDOW);
    let start = Instant::now();
    for _ in 0..messages {
        if window.len() == WINDOW {
            let oldest = window.pop_front().expect("a full window");
            let code = oldest.await.expect("acknowledged");
            assert!(!code.is_error(), "{code}");
        }
        let handle = client
            .publish("bench/mqttx", payload.clone(), QoS::AtLeastOnce, false)
            .await
            .expect("queued");
        window.push_back(handle);
    }
    for h in window {
        let code = h.await.expect("acknowledged");
        assert!(!code.is_error(), "{code}");
    }
    let elapsed = start.elapsed();
    client.disconnect().await.expect("disconnects");
    elapsed
}

async fn run_rumqttc(
    port: u16,
    version: ProtocolVersion,
    messages: usize,
    round: usize,
) -> Duration {
    if version.is_v5() {
        run_rumqttc_v5(port, messages, round).await
    } else {
        run_rumqttc_v4(port, messages, round).await
    }
}

async fn run_rumqttc_v4(port: u16, messages: usize, round: usize) -> Duration {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let mut opts = MqttOptions::new(format!("bench-rumqttc-{round}"), "127.0.0.1", port);
    opts.set_inflight(WINDOW as u16);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, WINDOW);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) =
            eventloop.poll().await.expect("rumqttc connects")
        {
            break;
        }
    }
    let payload = vec![0xA5u8; PAYLOAD];
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..messages {
            client
                .publish("bench/rumqttc", QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queued");
        }
        client
    });
    let mut acked = 0;
    while acked < messages {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("rumqttc runs") {
            acked += 1;
        }
    }
    let elapsed = start.elapsed();
    let client = publisher.await.expect("publisher");
    client.disconnect().await.expect("disconnect queued");
    // Let the event loop send the DISCONNECT; it ends with an error once the socket closes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    elapsed
}

async fn run_rumqttc_v5(port: u16, messages: usize, round: usize) -> Duration {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let mut opts = MqttOptions::new(format!("bench-rumqttc5-{round}"), "127.0.0.1", port);
    opts.set_outgoing_inflight_upper_limit(WINDOW as u16);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, WINDOW);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) =
            eventloop.poll().await.expect("rumqttc connects")
        {
            break;
        }
    }
    let payload = vec![0xA5u8; PAYLOAD];
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..messages {
            client
                .publish("bench/rumqttc", QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queued");
        }
        client
    });
    let mut acked = 0;
    while acked < messages {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("rumqttc runs") {
            acked += 1;
        }
    }
    let elapsed = start.elapsed();
    let client = publisher.await.expect("publisher");
    client.disconnect().await.expect("disconnect queued");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    elapsed
}

/// The Mosquitto process of this run, killed by its pid when dropped.
struct Mosquitto {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Mosquitto {
    fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("mqttx-bench-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages {WINDOW}\n\
                 persistence false\nset_tcp_nodelay true\n"
            ),
        )
        .expect("config file");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, dir, child }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // By its pid (the Child handle), never by name.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mosquitto_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("mosquitto");
        if p.is_file() {
            return p;
        }
    }
    let p = PathBuf::from("/usr/sbin/mosquitto");
    assert!(
        p.is_file(),
        "the `mosquitto` broker is not installed (`apt-get install -y mosquitto`)"
    );
    p
}
