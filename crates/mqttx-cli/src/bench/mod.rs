//! `mqttx bench`: a load generator for MQTT brokers.
//!
//! Scenarios, each bounded in message count and time: `conn` (open connections, report
//! connections/s and, with `--broker-pid`, the broker's resident memory per connection),
//! `pub` (publishers only), `sub` (subscribers only, counting what arrives), `fanin`
//! (P publishers → 1 subscriber on a wildcard), `fanout` (1 publisher → N subscribers) and
//! `latency` (a fixed rate, send times in the payloads, percentiles end to end).
//!
//! With `--session-expiry SECS` every connection of a message scenario has a persistent
//! session (Clean Start 0 and that Session Expiry Interval; Clean Session 0 over 3.1.1), so a
//! durable broker must store each QoS 1/2 message for its subscribers before acknowledging
//! it; the sessions are ended when the run is over.
//!
//! Every payload starts with the publisher's index, a sequence number and the send time, so
//! each subscriber counts lost and duplicated messages exactly (a bitmap per publisher).
//! Publishers keep at most `--ahead` messages beyond what the subscribers have received
//! (end-to-end flow control, so a run measures what a broker sustains rather than how deep
//! its queues are), and QoS 1/2 publishers at most `--window` unacknowledged messages.
//!
//! The generator must not be the bottleneck: it drives the codec directly over tokio TCP
//! streams (no client session), encodes up to 512 PUBLISH packets into one write, reads
//! 64 KiB at a time into the decoder's own buffer, and reports its own CPU use next to the
//! broker's (`--broker-pid`), read from `/proc`.
//!
//! The progress line is written by hand to stderr (only when it is a terminal); the machine
//! form (`--json`) uses `serde_json`, the standard serializer, which the workspace already
//! builds.

mod conn;
mod stats;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use mqttx_codec::{ProtocolVersion, QoS};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use self::conn::{Conn, PublishPlan, PublishResult, Run, SubscribeResult};
use self::stats::{cpu_seconds, quantile, rss_bytes};

/// What `mqttx bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Open connections (CONNECT/CONNACK) and hold them; connections/s and broker memory.
    Conn,
    /// Publishers only: messages/s the broker accepts.
    Pub,
    /// Subscribers only: count what arrives on `--topic` from elsewhere.
    Sub,
    /// P publishers (default 4) → 1 subscriber on a wildcard.
    Fanin,
    /// 1 publisher → N subscribers (default 100).
    Fanout,
    /// 1 publisher → 1 subscriber at a fixed rate: end-to-end latency percentiles.
    Latency,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Conn => "conn",
            Self::Pub => "pub",
            Self::Sub => "sub",
            Self::Fanin => "fanin",
            Self::Fanout => "fanout",
            Self::Latency => "latency",
        }
    }
}

/// `mqttx bench` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The broker's address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    host: SocketAddr,
    /// Subscribers connect to this address instead of `--host` (another node of a cluster:
    /// publishers on one node, subscribers on another).
    #[arg(long, value_name = "ADDR")]
    sub_host: Option<SocketAddr>,
    /// MQTT version: 3 (3.1.1) or 5 (5.0).
    #[arg(short = 'V', long = "mqtt", default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=5))]
    version: u8,
    /// QoS of publications and subscriptions.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload size in bytes (at least 16: index, sequence number, send time).
    #[arg(short = 's', long, default_value_t = 64)]
    payload: usize,
    /// Messages per publisher [default: 100 000; latency: rate × duration].
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// The longest time publishers send (or `sub` listens, `conn` holds), in seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Publishers [default: fanin 4, others 1].
    #[arg(short = 'P', long)]
    publishers: Option<usize>,
    /// Subscribers [default: fanout 100, pub 0, others 1].
    #[arg(short = 'S', long)]
    subscribers: Option<usize>,
    /// QoS 1/2 messages in flight per publisher (unacknowledged).
    #[arg(short = 'w', long, default_value_t = 64)]
    window: u64,
    /// Messages a publisher may be ahead of its subscribers (0: no limit).
    #[arg(long, default_value_t = 10_000)]
    ahead: u64,
    /// Messages per second over all publishers [default: latency 10 000, others unlimited].
    #[arg(short = 'r', long)]
    rate: Option<u64>,
    /// Connections to open (`conn`).
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Connection handshakes in progress at once (`conn`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Persistent sessions with this Session Expiry Interval in seconds: every connection
    /// (publishers and subscribers) connects with Clean Start 0 (MQTT 3.1.1: Clean Session
    /// 0), so a durable broker must store each QoS 1/2 message for the subscribers before
    /// acknowledging it. The sessions are ended when the run is over. Not used by `conn`.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    session_expiry: Option<u32>,
    /// The topic filter `sub` subscribes to.
    #[arg(long, default_value = "mqttx-bench/#")]
    topic: String,
    /// The broker's process id: report its CPU use and resident memory.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// The result of one run.
#[derive(Debug, Default, Serialize)]
struct Report {
    scenario: &'static str,
    mqtt: &'static str,
    qos: u8,
    payload: usize,
    publishers: usize,
    subscribers: usize,
    connections: usize,
    /// The Session Expiry Interval of persistent sessions (`--session-expiry`), if any.
    session_expiry: Option<u32>,
    /// Messages published.
    sent: u64,
    /// Deliveries expected (sent × subscribers receiving each message).
    expected: u64,
    /// Deliveries received (duplicates included).
    delivered: u64,
    lost: u64,
    duplicated: u64,
    /// Messages received without this run's header (`sub` counts them all).
    foreign: u64,
    /// Connections or subscriptions that failed.
    errors: u64,
    elapsed_s: f64,
    /// Deliveries per second (`pub`: publications, `conn`: connections).
    rate: f64,
    latency_us: Option<Latency>,
    /// CPU used by this generator, in cores (1.0 = one core busy).
    bench_cpu: Option<f64>,
    /// CPU used by the broker, in cores.
    broker_cpu: Option<f64>,
    /// The broker's largest resident memory seen, in bytes.
    broker_rss_max: Option<u64>,
    /// `conn`: the broker's resident memory growth per connection, in bytes.
    broker_rss_per_conn: Option<f64>,
}

/// Runs `mqttx bench`.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    if args.payload < conn::HEADER && args.scenario != Scenario::Conn {
        eprintln!("mqttx bench: --payload must be at least {}", conn::HEADER);
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqttx bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.scenario {
            Scenario::Conn => connections(&args).await,
            _ => messages(&args).await,
        }
    });
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("mqttx bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_table(&report);
            }
            if report.errors > 0 || report.lost > 0 || report.duplicated > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("mqttx bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn version(args: &BenchArgs) -> ProtocolVersion {
    if args.version == 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

fn qos(args: &BenchArgs) -> QoS {
    match args.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A number that differs between runs, so topics and client ids do not collide.
fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ u64::from(std::process::id()).rotate_left(40)) & 0xFFFF_FFFF_FFFF
}

/// Samples CPU and memory of this process and the broker around a run.
struct Meter {
    start: Instant,
    own: Option<f64>,
    broker: Option<f64>,
    pid: Option<u32>,
    rss_max: Arc<AtomicU64>,
}

impl Meter {
    fn start(pid: Option<u32>) -> Self {
        Self {
            start: Instant::now(),
            own: cpu_seconds(None),
            broker: pid.and_then(|p| cpu_seconds(Some(p))),
            pid,
            rss_max: Arc::new(AtomicU64::new(pid.and_then(rss_bytes).unwrap_or(0))),
        }
    }

    fn sample(&self) {
        if let Some(rss) = self.pid.and_then(rss_bytes) {
            self.rss_max.fetch_max(rss, Ordering::Relaxed);
        }
    }

    fn finish(&self, report: &mut Report) {
        self.sample();
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        report.bench_cpu = cpu_seconds(None).zip(self.own).map(|(b, a)| (b - a) / wall);
        report.broker_cpu = self
            .pid
            .and_then(|p| cpu_seconds(Some(p)))
            .zip(self.broker)
            .map(|(b, a)| (b - a) / wall);
        report.broker_rss_max = self.pid.map(|_| self.rss_max.load(Ordering::Relaxed));
    }
}

/// `pub`, `sub`, `fanin`, `fanout` and `latency`.
async fn messages(args: &BenchArgs) -> Result<Report, String> {
    let scenario = args.scenario;
    let publishers = match scenario {
        Scenario::Sub => 0,
        Scenario::Fanin => args.publishers.unwrap_or(4),
        _ => args.publishers.unwrap_or(1),
    };
    let subscribers = match scenario {
        Scenario::Pub => 0,
        Scenario::Fanout => args.subscribers.unwrap_or(100),
        _ => args.subscribers.unwrap_or(1),
    };
    let rate = match scenario {
        Scenario::Latency => Some(args.rate.unwrap_or(10_000)),
        _ => args.rate,
    };
    let duration = Duration::from_secs_f64(args.duration.max(0.001));
    let count = args.count.unwrap_or(match (scenario, rate) {
        (Scenario::Latency, Some(r)) => {
            (r as f64 * duration.as_secs_f64()) as u64 / publishers.max(1) as u64
        }
        _ => 100_000,
    });
    let (version, qos) = (version(args), qos(args));
    let nonce = nonce();
    let base = format!("mqttx-bench/{nonce:x}");
    let filter = if scenario == Scenario::Sub {
        args.topic.clone()
    } else if publishers == 1 && scenario != Scenario::Fanin {
        format!("{base}/0")
    } else {
        format!("{base}/+")
    };

    let mut sub_conns = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let id = format!("bench-{nonce:x}-s{i}");
        let host = args.sub_host.unwrap_or(args.host);
        let mut conn = Conn::connect(host, version, &id, args.session_expiry)
            .await
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        conn.subscribe(&filter, qos)
            .await
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        sub_conns.push(conn);
    }
    let mut pub_conns = Vec::with_capacity(publishers);
    for i in 0..publishers {
        let id = format!("bench-{nonce:x}-p{i}");
        let conn = Conn::connect(args.host, version, &id, args.session_expiry)
            .await
            .map_err(|e| format!("publisher {i}: {e}"))?;
        pub_conns.push(conn);
    }

    let meter = Meter::start(args.broker_pid);
    let start = Instant::now();
    let run = Arc::new(Run {
        start,
        deadline: start + duration,
        delivered: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
        total_delivered: AtomicU64::new(0),
        total_sent: AtomicU64::new(0),
        progress: Notify::new(),
        stop_publishing: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subs = JoinSet::new();
    for conn in sub_conns {
        subs.spawn(conn::subscriber(
            conn,
            publishers,
            Arc::clone(&run),
            scenario == Scenario::Latency,
            stop_rx.clone(),
        ));
    }
    let mut pubs = JoinSet::new();
    for (i, conn) in pub_conns.into_iter().enumerate() {
        let plan = PublishPlan {
            index: i as u32,
            qos,
            payload: args.payload,
            count,
            window: args.window.max(1),
            ahead: args.ahead,
            receivers: subscribers as u64,
            rate: rate.map_or(0, |r| (r / publishers as u64).max(1)),
        };
        pubs.spawn(conn::publisher(
            conn,
            format!("{base}/{i}"),
            plan,
            Arc::clone(&run),
        ));
    }
    let ticker = progress(scenario, Arc::clone(&run), &meter, !args.json);

    let mut results: Vec<PublishResult> = Vec::new();
    let mut errors = 0u64;
    while let Some(joined) = pubs.join_next().await {
        match joined {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                eprintln!("mqttx bench: publisher: {e}");
                errors += 1;
            }
            Err(e) => {
                eprintln!("mqttx bench: publisher task: {e}");
                errors += 1;
            }
        }
    }
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let expected = sent * subscribers as u64;
    // Wait for the deliveries still under way: until all arrived, or nothing arrived for a
    // second, or (for `sub`) the duration is over.
    let mut last_seen = (run.total_delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let now_delivered = run.total_delivered.load(Ordering::Relaxed);
        if scenario == Scenario::Sub {
            if Instant::now() >= run.deadline || args.count.is_some_and(|c| now_delivered >= c) {
                break;
            }
        } else if now_delivered >= expected {
            break;
        }
        if now_delivered != last_seen.0 {
            last_seen = (now_delivered, Instant::now());
        } else if scenario != Scenario::Sub && last_seen.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), run.progress.notified()).await;
    }
    let _ = stop_tx.send(true);
    let mut received: Vec<SubscribeResult> = Vec::new();
    while let Some(joined) = subs.join_next().await {
        match joined {
            Ok(Ok(r)) => received.push(r),
            Ok(Err(e)) => {
                eprintln!("mqttx bench: subscriber: {e}");
                errors += 1;
            }
            Err(e) => {
                eprintln!("mqttx bench: subscriber task: {e}");
                errors += 1;
            }
        }
    }
    ticker.abort();
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!();
    }

    let mut report = Report {
        scenario: scenario.name(),
        mqtt: if version.is_v5() { "5.0" } else { "3.1.1" },
        qos: args.qos,
        payload: args.payload,
        publishers,
        subscribers,
        connections: publishers + subscribers,
        session_expiry: args.session_expiry,
        sent,
        expected,
        errors,
        ..Report::default()
    };
    meter.finish(&mut report);
    let mut unique = 0u64;
    let mut latencies: Vec<u64> = Vec::new();
    let mut last: Option<Instant> = None;
    for r in &mut received {
        for t in &r.seqs {
            unique += t.unique;
            report.duplicated += t.duplicates;
        }
        report.foreign += r.foreign;
        last = last.max(r.last);
        latencies.append(&mut r.latencies);
    }
    report.delivered = unique + report.duplicated + report.foreign;
    report.lost = if scenario == Scenario::Sub {
        0
    } else {
        expected.saturating_sub(unique)
    };
    let end = match scenario {
        Scenario::Pub => results.iter().filter_map(|r| r.done).max(),
        _ => last,
    };
    report.elapsed_s = end.map_or(0.0, |e| e.duration_since(start).as_secs_f64());
    let counted = if scenario == Scenario::Pub {
        sent
    } else {
        report.delivered
    };
    report.rate = if report.elapsed_s > 0.0 {
        counted as f64 / report.elapsed_s
    } else {
        0.0
    };
    if scenario == Scenario::Latency && !latencies.is_empty() {
        latencies.sort_unstable();
        let us = |q: f64| quantile(&latencies, q).map_or(0.0, |ns| ns as f64 / 1000.0);
        report.latency_us = Some(Latency {
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: us(1.0),
        });
    }
    Ok(report)
}

/// Writes a progress line to stderr every 250 ms (when it is a terminal) and samples the
/// broker's memory.
fn progress(
    scenario: Scenario,
    run: Arc<Run>,
    meter: &Meter,
    show: bool,
) -> tokio::task::JoinHandle<()> {
    let show = show && std::io::stderr().is_terminal();
    let pid = meter.pid;
    let rss_max = Arc::clone(&meter.rss_max);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            if let Some(rss) = pid.and_then(rss_bytes) {
                rss_max.fetch_max(rss, Ordering::Relaxed);
            }
            if show {
                let secs = run.start.elapsed().as_secs_f64();
                let delivered = run.total_delivered.load(Ordering::Relaxed);
                eprint!(
                    "\r{:<8} {secs:6.1} s  sent {:>11}  delivered {:>11}  {:>12}/s ",
                    scenario.name(),
                    run.total_sent.load(Ordering::Relaxed),
                    delivered,
                    human(delivered as f64 / secs.max(1e-9)),
                );
            }
        }
    })
}

/// `conn`: opens `--connections` connections, `--concurrency` handshakes at a time, holds
/// them for `--duration` seconds at most (one second is enough to read the memory).
async fn connections(args: &BenchArgs) -> Result<Report, String> {
    let version = version(args);
    let nonce = nonce();
    let rss_before = args.broker_pid.and_then(rss_bytes);
    let meter = Meter::start(args.broker_pid);
    let start = Instant::now();
    let mut open: Vec<Conn> = Vec::with_capacity(args.connections);
    let mut errors = 0u64;
    let mut tasks = JoinSet::new();
    let mut next = 0usize;
    let interval = args
        .rate
        .filter(|&r| r > 0)
        .map(|r| Duration::from_secs_f64(1.0 / r as f64));
    while next < args.connections || !tasks.is_empty() {
        while next < args.connections && tasks.len() < args.concurrency.max(1) {
            if let Some(interval) = interval {
                tokio::time::sleep_until((start + interval * next as u32).into()).await;
            }
            let id = format!("bench-{nonce:x}-c{next}");
            let host = args.host;
            tasks.spawn(async move { Conn::connect(host, version, &id, None).await });
            next += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(conn))) => open.push(conn),
            Some(Ok(Err(e))) => {
                if errors == 0 {
                    eprintln!("mqttx bench: connection failed: {e}");
                }
                errors += 1;
            }
            Some(Err(e)) => {
                eprintln!("mqttx bench: connection task: {e}");
                errors += 1;
            }
            None => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: "conn",
        mqtt: if version.is_v5() { "5.0" } else { "3.1.1" },
        connections: open.len(),
        errors,
        elapsed_s: elapsed,
        rate: open.len() as f64 / elapsed.max(1e-9),
        ..Report::default()
    };
    // Let the broker settle, then read its memory with every connection open.
    let hold = Duration::from_secs_f64(args.duration.clamp(0.0, 1.0));
    tokio::time::sleep(hold).await;
    meter.finish(&mut report);
    if let (Some(before), Some(after)) = (rss_before, args.broker_pid.and_then(rss_bytes)) {
        if !open.is_empty() {
            report.broker_rss_per_conn = Some((after as f64 - before as f64) / open.len() as f64);
        }
    }
    drop(open);
    Ok(report)
}

/// 1234567.0 → "1.23 M".
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn print_table(r: &Report) {
    let row = |k: &str, v: String| println!("{k:<22} {v}");
    let shape = match r.scenario {
        "conn" => format!("{} connections, MQTT {}", r.connections, r.mqtt),
        _ => format!(
            "{} publisher(s) → {} subscriber(s), QoS {}, MQTT {}, {} B payload{}",
            r.publishers,
            r.subscribers,
            r.qos,
            r.mqtt,
            r.payload,
            r.session_expiry
                .map_or(String::new(), |s| format!(", persistent sessions ({s} s)"))
        ),
    };
    row("scenario", format!("{} ({shape})", r.scenario));
    if r.scenario == "conn" {
        row("connections/s", human(r.rate));
        if let Some(per) = r.broker_rss_per_conn {
            row("broker RSS/connection", format!("{:.0} B", per));
        }
    } else {
        row("sent", r.sent.to_string());
        if r.scenario != "pub" {
            row(
                "delivered",
                format!("{} of {} expected", r.delivered, r.expected),
            );
            row("lost", r.lost.to_string());
            row("duplicated", r.duplicated.to_string());
        }
        if r.foreign > 0 {
            row("foreign", r.foreign.to_string());
        }
        let what = if r.scenario == "pub" {
            "published/s"
        } else {
            "delivered/s"
        };
        row(what, human(r.rate));
    }
    row("elapsed", format!("{:.3} s", r.elapsed_s));
    if let Some(l) = &r.latency_us {
        row(
            "latency p50/p90/p99",
            format!("{:.0} / {:.0} / {:.0} µs", l.p50, l.p90, l.p99),
        );
        row(
            "latency p999/max",
            format!("{:.0} / {:.0} µs", l.p999, l.max),
        );
    }
    if r.errors > 0 {
        row("errors", r.errors.to_string());
    }
    if let Some(c) = r.bench_cpu {
        row("bench CPU", format!("{c:.2} cores"));
    }
    if let Some(c) = r.broker_cpu {
        row("broker CPU", format!("{c:.2} cores"));
    }
    if let Some(m) = r.broker_rss_max {
        row("broker RSS (max)", format!("{:.1} MB", m as f64 / 1e6));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(line: &str, addr: SocketAddr) -> BenchArgs {
        let words = std::iter::once("bench")
            .chain(line.split_whitespace())
            .map(String::from)
            .chain(["--host".into(), addr.to_string()]);
        Cli::try_parse_from(words).expect("valid arguments").bench
    }

    /// Runs scenarios against our broker on a loopback port: every message arrives exactly
    /// once, at every QoS and both protocol versions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scenarios_count_every_message_exactly_once() {
        let server = mqttx_broker::Broker::builder()
            .bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .bind()
            .await
            .expect("binds");
        let addr = server.local_addr().expect("bound");
        let broker = server.broker().clone();
        let running = tokio::spawn(server.run());
        for line in [
            // The broker's default queue holds 1 000 messages per client: keep the
            // publishers within it.
            "fanin -q 0 -c 2000 --ahead 200",
            "fanin -q 1 -w 8 -c 2000 --ahead 200 --mqtt 3",
            "fanin -q 2 -w 8 -c 500 -P 2 --ahead 200",
            "fanout -q 1 -S 5 -c 500 --ahead 100",
            "pub -q 1 -P 2 -c 500",
            "latency -q 1 -r 2000 -d 0.25",
            // Persistent sessions, ended when the run is over (checked below).
            "fanin -q 1 -w 8 -c 500 -P 2 --ahead 200 --session-expiry 60",
            "fanin -q 1 -w 8 -c 500 -P 2 --ahead 200 --session-expiry 60 --mqtt 3",
        ] {
            let report = messages(&args(line, addr)).await.expect(line);
            assert!(report.sent > 0, "{line}: nothing sent");
            if report.scenario != "pub" {
                assert_eq!(report.delivered, report.expected, "{line}");
            }
            assert_eq!(
                (report.lost, report.duplicated, report.errors),
                (0, 0, 0),
                "{line}"
            );
            assert!(report.rate > 0.0, "{line}");
            if report.scenario == "latency" {
                let l = report.latency_us.expect("latency percentiles");
                assert!(l.p50 <= l.p99 && l.p99 <= l.max, "{line}");
            }
        }
        // Every connection is closed and no persistent session is left behind.
        for _ in 0..500 {
            if broker.client_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((broker.client_count(), broker.stored_sessions()), (0, 0));
        // The flag does make the sessions persistent: dropped without `close`, they stay.
        for (i, version) in [ProtocolVersion::V5, ProtocolVersion::V311]
            .into_iter()
            .enumerate()
        {
            let conn = Conn::connect(addr, version, &format!("kept-{i}"), Some(60))
                .await
                .expect("connects");
            drop(conn);
        }
        for _ in 0..500 {
            if broker.stored_sessions() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(broker.stored_sessions(), 2);
        let report = connections(&args("conn -n 50 --concurrency 8 -d 0", addr))
            .await
            .expect("conn");
        assert_eq!((report.connections, report.errors), (50, 0));
        broker.shutdown();
        running.await.expect("joins").expect("runs");
    }

    #[test]
    fn payload_must_hold_the_header() {
        let a = args("fanin -s 8", SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(run(a), ExitCode::FAILURE);
    }

    #[test]
    fn session_expiry_is_optional_and_positive() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(args("fanin -q 1", addr).session_expiry, None);
        let a = args("fanin -q 1 --session-expiry 3600", addr);
        assert_eq!(a.session_expiry, Some(3600));
        for bad in ["0", "-1", "x"] {
            let words = ["bench", "fanin", "--session-expiry", bad];
            assert!(Cli::try_parse_from(words).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.0), "1.23 M");
        assert_eq!(human(12_345.0), "12.3 k");
        assert_eq!(human(12.0), "12");
    }
}
