//! `mqttx`, the command-line tool of the mqttx toolkit. `mqttx broker` is a
//! standards-conformant MQTT 3.1.1 / 5.0 broker (the `mqttx-broker` crate with its allow-all
//! handler, or `mqttx-auth`'s `Security` handler when the configuration has a `[security]`
//! table) listening on 127.0.0.1:1883 by default. Ctrl-C shuts it down gracefully: clients
//! get DISCONNECT 0x8B (MQTT 5.0) and the process exits when every connection is closed.
//! SIGHUP re-reads the `[security]` table (passwords, ACLs, limits) and the TLS listeners'
//! certificate files without dropping anyone.
//! `mqttx passwd FILE USER` adds, changes (`--scram` for a SCRAM-SHA-256 verifier) or deletes
//! (`-D`) users in a Mosquitto-format password file (see docs/security.md).
//!
//! `rpassword` reads passwords from the terminal without echo: the portable way to turn
//! echo off, which std does not offer.
//!
//! `--config FILE` reads the broker's `Config` from TOML (every field optional, unknown fields
//! refused, durations in seconds, `[[listeners]]` tables for TCP, TLS, WebSocket and secure
//! WebSocket). Listener flags (`--bind` for TCP, `--tls-bind`, `--ws-bind`, `--wss-bind`, each
//! repeatable) replace the file's listeners; `--cert`/`--key` (and `--client-ca` for mutual
//! TLS) serve the `tls` and `wss` ones, `--ws-path` the `ws` and `wss` ones.
//!
//! `--metrics-bind ADDR` serves the broker's metrics in Prometheus's text format at
//! `http://ADDR/metrics` (module `metrics_http`). The broker hands its counts to the
//! `metrics` facade (`Broker::record_metrics`, on every scrape); `metrics-exporter-prometheus`
//! renders them. That crate is the facade's standard Prometheus exporter; it is built without
//! its default features, which would bring hyper and an HTTP client for the push gateway: a
//! scrape endpoint is one `GET`, and a responder of ninety lines on the tokio this binary
//! already has answers it. `--sys-interval SECONDS` sets how often `$SYS/broker/...` is
//! published (0 turns it off).
//!
//! `mqttx bench` (module `bench`) is a load generator for any MQTT broker.
//!
//! `mqttx pub` and `mqttx sub` are MQTT clients with the flags of `mosquitto_pub` and
//! `mosquitto_sub` (`-h -p -t -m -q -r -V -D …`, plus `-L` URLs for mqtt, mqtts, ws and wss),
//! built on `mqttx-client` and the TLS and WebSocket transports; see `pubsub.rs` for the exit
//! codes. `mqttx completions SHELL` prints a completion script (`clap_complete`, clap's own
//! generator, so the scripts follow the argument definitions).
//!
//! It is not a library.
//!
//! Command-line parsing uses `clap` with its derive macros: a hand-written parser would cost
//! more code than the whole tool for help texts, error messages and value validation that
//! clap gets right, and the dependency stays in this binary crate, never in the libraries.
//! Logs go through `tracing` (which the broker and the client emit) and `tracing-subscriber`
//! to stderr: `--log-level`, or `RUST_LOG` directives when it is not given (`env-filter`, the
//! subscriber's standard filter; `mqttx pub`/`sub` log warnings, `-d` everything at debug
//! level, `RUST_LOG` what it names).
//!
//! # Getting started
//!
//! ```text
//! cargo run --release -p mqttx-cli -- broker                      # 127.0.0.1:1883
//! cargo run --release -p mqttx-cli -- broker --bind 0.0.0.0:1883 --log-level debug
//! cargo run --release -p mqttx-cli -- broker --config mqttx.toml
//! cargo run --release -p mqttx-cli -- broker --bind 127.0.0.1:1883 --ws-bind 127.0.0.1:8083 \
//!     --tls-bind 127.0.0.1:8883 --cert server.pem --key server.key
//! mosquitto_sub -t 'demo/#' -v &  mosquitto_pub -t demo/1 -m hello
//! ```

// The doc comments of this binary are clap's help texts (`mqtt://[user[:password]@]host`),
// not API documentation: rustdoc's link syntax does not apply to them.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mqttx_auth::{Security, SecurityConfig};
use mqttx_broker::{Broker, CertificateReloader, Config, Handler, Listener, ListenerKind, Server};
use mqttx_cluster_nats::{NatsCluster, NatsClusterOptions};
use mqttx_store_fjall::{FjallJournal, SyncPolicy};

mod metrics_http;
mod passwd;
mod pubsub;

mod bench;

/// The mqttx MQTT toolkit.
#[derive(Debug, Parser)]
#[command(name = "mqttx", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run an MQTT 3.1.1 / 5.0 broker (Ctrl-C stops it gracefully).
    Broker(BrokerArgs),
    /// Add, change or delete a user in a password file (Mosquitto's format).
    Passwd(passwd::PasswdArgs),
    /// Load-test a broker: connections, publish/subscribe throughput, fan-in, fan-out, latency.
    Bench(bench::BenchArgs),
    /// Publish messages (the flags of mosquitto_pub).
    Pub(pubsub::PubArgs),
    /// Subscribe and print messages (the flags of mosquitto_sub).
    Sub(pubsub::SubArgs),
    /// Print a shell completion script: `mqttx completions bash > /etc/bash_completion.d/mqttx`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// MQTT over TCP on this address (repeatable) [default: 127.0.0.1:1883, or the config
    /// file's listeners].
    #[arg(long, value_name = "ADDR")]
    bind: Vec<SocketAddr>,
    /// MQTT over TLS on this address (repeatable; needs --cert and --key), e.g. 127.0.0.1:8883.
    #[arg(long, value_name = "ADDR", requires_all = ["cert", "key"])]
    tls_bind: Vec<SocketAddr>,
    /// MQTT over WebSocket on this address (repeatable), e.g. 127.0.0.1:8083.
    #[arg(long, value_name = "ADDR")]
    ws_bind: Vec<SocketAddr>,
    /// MQTT over secure WebSocket on this address (repeatable; needs --cert and --key).
    #[arg(long, value_name = "ADDR", requires_all = ["cert", "key"])]
    wss_bind: Vec<SocketAddr>,
    /// The certificate chain (PEM) of the TLS and WSS listeners.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of the TLS and WSS listeners.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// CA certificates (PEM): TLS and WSS clients must present a certificate signed by one.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// The HTTP path of the WebSocket listeners [default: /mqtt].
    #[arg(long, value_name = "PATH")]
    ws_path: Option<String>,
    /// A TOML file with the broker's configuration (limits, timeouts, `bind`, `[[listeners]]`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP on this address (GET /metrics), e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<SocketAddr>,
    /// Publish the $SYS/broker/... statistics every SECONDS (0: never) [default: 10, or the
    /// config file's `sys_interval`].
    #[arg(long, value_name = "SECONDS")]
    sys_interval: Option<u64>,
    /// Keep sessions, queued messages and retained messages in this directory (created if
    /// missing; one broker at a time) so that they survive a restart [default: ./mqttx-data,
    /// or the config file's `[storage] data_dir`].
    #[arg(long, value_name = "DIR", conflicts_with = "memory")]
    data_dir: Option<PathBuf>,
    /// When a batch of changes reaches the disk: `every-batch` (fsync before acknowledging;
    /// survives power loss), `interval:100ms` (fsync every interval), or `none` (the OS
    /// decides); every policy survives a crash of the process (see docs/storage.md)
    /// [default: every-batch].
    #[arg(long, value_name = "POLICY", conflicts_with = "memory")]
    sync: Option<SyncPolicy>,
    /// Keep everything in memory only: nothing survives a restart.
    #[arg(long)]
    memory: bool,
    /// Run as one node of a cluster on this NATS server with JetStream (e.g.
    /// nats://127.0.0.1:4222; several separated by commas), which then keeps the stored
    /// messages, retained messages and session owners (see docs/clustering.md); the node
    /// itself keeps nothing on disk [default: the config file's `[cluster] url`].
    #[arg(long, value_name = "URL", conflicts_with_all = ["data_dir", "sync"])]
    cluster: Option<String>,
    /// This node's name in the cluster, unique among its nodes [default: the config file's
    /// `[cluster] node_id`; required in a cluster].
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Log level [default: info, or what RUST_LOG says when it is set, e.g.
    /// RUST_LOG=info,mqttx_broker=debug].
    #[arg(long, value_enum)]
    log_level: Option<LogLevel>,
}

/// The `[storage]` table of the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageConfig {
    /// The data directory (default `./mqttx-data`).
    data_dir: Option<PathBuf>,
    /// The sync policy (`every-batch`, `interval:100ms`, `none`).
    sync: Option<String>,
    /// Keep nothing on disk.
    #[serde(default)]
    memory: bool,
}

/// The `[cluster]` table of the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterConfig {
    /// The NATS server(s).
    url: Option<String>,
    /// This node's name.
    node_id: Option<String>,
    /// The subject, stream and bucket prefix (default `mqttx`).
    prefix: Option<String>,
    /// Copies of the stream and buckets (default 1).
    replicas: Option<usize>,
    /// How often the node's heartbeat is written, in milliseconds (default 2000); a node
    /// silent for three of these is taken for dead and its sessions adopted.
    heartbeat_ms: Option<u64>,
    /// Whether QoS 0 messages still go between this node's own clients while it is cut off
    /// from the engine (default true).
    local_while_unavailable: Option<bool>,
}

/// Bytes a cluster node adds to a PUBLISH it sends over NATS (headers, framing), at most.
const NATS_OVERHEAD: usize = 1024;

/// The data directory when neither the flags nor the configuration file name one.
const DEFAULT_DATA_DIR: &str = "mqttx-data";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Logs to stderr: at `level` when given, else as `RUST_LOG` says (tracing-subscriber's
/// `EnvFilter` directives, e.g. `info,mqttx_broker=debug`), else at `default` (`None`: no logs).
fn init_logging(level: Option<LogLevel>, default: Option<LogLevel>) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let (filter, bad) = match (level, from_env) {
        (Some(level), _) => (EnvFilter::new(level.as_str()), None),
        (None, Some(directives)) => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(e) => (
                EnvFilter::new(default.map_or("off", LogLevel::as_str)),
                Some(format!(
                    "RUST_LOG={directives:?} is not understood ({e}); ignored"
                )),
            ),
        },
        (None, None) => match default {
            Some(level) => (EnvFilter::new(level.as_str()), None),
            None => return,
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Broker(args) => broker(args),
        Commands::Passwd(args) => passwd::run(&args),
        Commands::Bench(args) => bench::run(args),
        Commands::Pub(args) => pubsub::run_pub(args),
        Commands::Sub(args) => pubsub::run_sub(args),
        Commands::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write as _;
            // Generated into memory first: clap_complete panics when its own write fails,
            // as it does on a closed pipe (`mqttx completions zsh | head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mqttx", &mut script);
            match std::io::stdout().write_all(&script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mqttx completions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Reads a TOML configuration.
fn read_config(path: &Path) -> Result<(Config, Option<SecurityConfig>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `[storage]` and `[cluster]` tables of a TOML configuration (defaults without them).
fn parse_storage(text: &str) -> Result<(StorageConfig, ClusterConfig), toml::de::Error> {
    let mut table: toml::Table = toml::from_str(text)?;
    let storage = table
        .remove("storage")
        .map(toml::Value::try_into::<StorageConfig>)
        .transpose()?
        .unwrap_or_default();
    let cluster = table
        .remove("cluster")
        .map(toml::Value::try_into::<ClusterConfig>)
        .transpose()?
        .unwrap_or_default();
    Ok((storage, cluster))
}

/// The broker's `Config` and, from the `[security]` table, the access control settings (the
/// `[storage]` table is read by [`parse_storage`]).
fn parse_config(text: &str) -> Result<(Config, Option<SecurityConfig>), toml::de::Error> {
    let mut table: toml::Table = toml::from_str(text)?;
    table.remove("storage");
    table.remove("cluster");
    let security = table
        .remove("security")
        .map(toml::Value::try_into::<SecurityConfig>)
        .transpose()?;
    Ok((toml::Value::Table(table).try_into()?, security))
}

impl BrokerArgs {
    /// The listeners the flags name, in the order tcp, tls, ws, wss; empty without any.
    fn listeners(&self) -> Vec<Listener> {
        let tls = |listener: Listener| {
            let listener = match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => listener.with_cert(cert, key),
                _ => listener,
            };
            match &self.client_ca {
                Some(ca) => listener.with_client_ca(ca),
                None => listener,
            }
        };
        let ws = |listener: Listener| match &self.ws_path {
            Some(path) => listener.with_path(path),
            None => listener,
        };
        let of_kind = |kind: ListenerKind, addr: SocketAddr| {
            let mut listener = Listener::tcp(addr);
            listener.kind = kind;
            listener
        };
        let mut listeners: Vec<Listener> = self.bind.iter().map(|&a| Listener::tcp(a)).collect();
        listeners.extend(
            self.tls_bind
                .iter()
                .map(|&a| tls(of_kind(ListenerKind::Tls, a))),
        );
        listeners.extend(self.ws_bind.iter().map(|&a| ws(Listener::ws(a))));
        listeners.extend(
            self.wss_bind
                .iter()
                .map(|&a| tls(ws(of_kind(ListenerKind::Wss, a)))),
        );
        listeners
    }
}

fn broker(args: BrokerArgs) -> ExitCode {
    init_logging(args.log_level, Some(LogLevel::Info));
    let (mut config, security) = match &args.config {
        Some(path) => match read_config(path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("cannot read the configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => (Config::default(), None),
    };
    let (storage, cluster_config) = match &args.config {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_storage(&text).map_err(|e| e.to_string()))
        {
            Ok(storage) => storage,
            Err(e) => {
                tracing::error!("cannot read the configuration: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Default::default(),
    };
    let cluster = match cluster_options(&args, cluster_config) {
        Ok(cluster) => cluster,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let journal = if cluster.is_some() {
        // A cluster node keeps its state in the engine.
        tracing::info!(
            "cluster node: stored and retained messages and session owners are kept by NATS \
             JetStream; nothing is written to this node's disk"
        );
        None
    } else {
        match open_journal(&args, storage) {
            Ok(journal) => journal,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let listeners = args.listeners();
    if !listeners.is_empty() {
        config.listeners = listeners;
    }
    if let Some(seconds) = args.sys_interval {
        config.sys_interval = Some(std::time::Duration::from_secs(seconds));
    }
    warn_if_open(&config, security.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let cluster = match cluster {
            Some(options) => match join_cluster(options).await {
                Some(cluster) => Some(cluster),
                None => return ExitCode::FAILURE,
            },
            None => None,
        };
        let mut config = config;
        if let Some(cluster) = &cluster {
            // A PUBLISH travels between nodes with NATS headers: one that NATS would refuse is
            // refused at the MQTT level (0x95) instead of staying on its node.
            let cap = u32::try_from(cluster.max_payload().saturating_sub(NATS_OVERHEAD))
                .unwrap_or(u32::MAX);
            if config.max_packet_size > cap {
                tracing::info!(
                    max_packet_size = cap,
                    "maximum packet size lowered to what NATS carries between nodes"
                );
                config.max_packet_size = cap;
            }
        }
        let Some(security) = security else {
            // No `[security]` table: the allow-all handler, with nothing on the hot path.
            let Some(builder) = recover(Broker::builder().config(config), journal) else {
                return ExitCode::FAILURE;
            };
            let Some(builder) = clustered(builder, cluster) else {
                return ExitCode::FAILURE;
            };
            return serve(builder.bind().await, args.metrics_bind).await;
        };
        let handler = match Security::new(security) {
            Ok(handler) => handler,
            Err(e) => {
                tracing::error!("cannot load the security configuration: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(builder) = recover(Broker::builder().config(config).handler(handler), journal)
        else {
            return ExitCode::FAILURE;
        };
        let Some(builder) = clustered(builder, cluster) else {
            return ExitCode::FAILURE;
        };
        let server = builder.bind().await;
        if let (Ok(server), Some(path)) = (&server, args.config.clone()) {
            reload_on_sighup(server.broker().clone(), path);
        }
        serve(server, args.metrics_bind).await
    })
}

/// The cluster to join, from the flags or the `[cluster]` table (`None`: a single node).
fn cluster_options(
    args: &BrokerArgs,
    table: ClusterConfig,
) -> Result<Option<NatsClusterOptions>, String> {
    let Some(url) = args.cluster.clone().or(table.url) else {
        if args.node_id.is_some() {
            return Err(String::from(
                "--node-id needs --cluster (or a [cluster] url)",
            ));
        }
        return Ok(None);
    };
    let Some(node_id) = args.node_id.clone().or(table.node_id) else {
        return Err(String::from(
            "a cluster node needs a name unique among the nodes: --node-id ID (or [cluster] node_id)",
        ));
    };
    let mut options = NatsClusterOptions::new(url, node_id);
    if let Some(prefix) = &table.prefix {
        options = options.prefix(prefix);
    }
    if let Some(replicas) = table.replicas {
        options = options.replicas(replicas);
    }
    if let Some(yes) = table.local_while_unavailable {
        options = options.local_while_unavailable(yes);
    }
    if let Some(ms) = table.heartbeat_ms {
        options = options.heartbeat(std::time::Duration::from_millis(ms));
    }
    Ok(Some(options))
}

/// Makes the broker a node of `cluster` (when there is one), with its journal in the
/// cluster's bucket; `None` (logged) when that journal cannot be read.
fn clustered<H: Handler>(
    builder: mqttx_broker::Builder<H>,
    cluster: Option<std::sync::Arc<NatsCluster>>,
) -> Option<mqttx_broker::Builder<H>> {
    let Some(cluster) = cluster else {
        return Some(builder);
    };
    match builder.journal(cluster.journal()) {
        Ok((builder, recovery)) => {
            tracing::info!(
                "recovered {} sessions and {} messages from the cluster's journal in {:?}",
                recovery.sessions,
                recovery.messages,
                recovery.elapsed,
            );
            Some(builder.cluster(cluster))
        }
        Err(e) => {
            tracing::error!("cannot recover from the cluster's journal: {e}");
            None
        }
    }
}

/// Connects to the cluster's engine; logs why not and returns `None` when it cannot.
async fn join_cluster(options: NatsClusterOptions) -> Option<std::sync::Arc<NatsCluster>> {
    match NatsCluster::connect(options).await {
        Ok(cluster) => {
            tracing::info!(node_id = cluster.node_id(), "joined the cluster");
            Some(cluster)
        }
        Err(e) => {
            tracing::error!("cannot join the cluster: {e}");
            None
        }
    }
}

/// Opens the data directory the flags or the `[storage]` table name (`None` with
/// `--memory`): a store that cannot be opened is an error that names it, never an empty
/// start.
fn open_journal(args: &BrokerArgs, storage: StorageConfig) -> Result<Option<FjallJournal>, String> {
    if args.memory || storage.memory {
        tracing::info!("keeping everything in memory (--memory): nothing survives a restart");
        return Ok(None);
    }
    let dir = args
        .data_dir
        .clone()
        .or(storage.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let policy = match (args.sync, storage.sync) {
        (Some(policy), _) => policy,
        (None, Some(text)) => text
            .parse()
            .map_err(|e| format!("[storage] sync = {text:?}: {e}"))?,
        (None, None) => SyncPolicy::default(),
    };
    let journal = FjallJournal::open(&dir, policy).map_err(|e| {
        format!(
            "cannot open the data directory (use --data-dir DIR, or --memory to keep nothing): {e}"
        )
    })?;
    tracing::info!(dir = %dir.display(), sync = %policy, "data directory open");
    Ok(Some(journal))
}

/// Restores the broker's state from `journal`, logging what it found; `None` (after logging
/// why) when the journal cannot be read.
fn recover<H: Handler>(
    builder: mqttx_broker::Builder<H>,
    journal: Option<FjallJournal>,
) -> Option<mqttx_broker::Builder<H>> {
    let Some(journal) = journal else {
        return Some(builder);
    };
    let dir = journal.dir().display().to_string();
    match builder.journal(std::sync::Arc::new(journal)) {
        Ok((builder, recovery)) => {
            tracing::info!(
                "recovered {} sessions, {} messages, {} retained messages and {} delayed wills from {dir} in {:?}",
                recovery.sessions,
                recovery.messages,
                recovery.retained,
                recovery.wills,
                recovery.elapsed,
            );
            Some(builder)
        }
        Err(e) => {
            tracing::error!("cannot recover from the data directory {dir}: {e}");
            None
        }
    }
}

/// Logs loudly when a listener is reachable from other hosts and anyone may connect.
fn warn_if_open(config: &Config, security: Option<&SecurityConfig>) {
    let listeners: Vec<(SocketAddr, Option<&str>)> = if config.listeners.is_empty() {
        vec![(config.bind, None)]
    } else {
        config
            .listeners
            .iter()
            .map(|l| (l.bind, l.name.as_deref()))
            .collect()
    };
    for (addr, name) in listeners {
        let anonymous = security.is_none_or(|s| s.allows_anonymous_on(name));
        if anonymous && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "THIS LISTENER IS REACHABLE FROM OTHER HOSTS AND ACCEPTS ANONYMOUS CLIENTS: set \
                 `allow_anonymous = false` and a `password_file` in the [security] table of \
                 the configuration (see docs/security.md)"
            );
        }
    }
    if let Some(security) = security {
        for l in &security.listeners {
            if !config
                .listeners
                .iter()
                .any(|c| c.name.as_deref() == Some(&l.name))
            {
                tracing::warn!(
                    name = %l.name,
                    "[[security.listeners]] names no listener: give a [[listeners]] table \
                     `name = \"{}\"`",
                    l.name
                );
            }
        }
    }
}

/// On SIGHUP, reads the configuration file again and applies its `[security]` table
/// (passwords, ACLs, limits) without dropping connections; a broken file keeps the old rules.
fn reload_on_sighup(broker: Broker<Security>, path: PathBuf) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("no SIGHUP handler: reload by restarting");
            return;
        };
        while hup.recv().await.is_some() {
            let loaded = read_config(&path).and_then(|(_, security)| {
                broker
                    .handler()
                    .reload(security.unwrap_or_default())
                    .map_err(|e| e.to_string())
            });
            match loaded {
                Ok(()) => tracing::info!(path = %path.display(), "security configuration reloaded"),
                Err(e) => tracing::error!("reload failed, the previous rules stay: {e}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (broker, path);
}

/// On SIGHUP, reads the certificate files of the TLS listeners again: renewed certificates
/// are used from the next handshake on; a broken file keeps the previous certificate.
fn reload_certificates_on_sighup(reloader: CertificateReloader) {
    if reloader.is_empty() {
        return;
    }
    // The handler is installed here, before the broker says it listens, so that a SIGHUP
    // sent right after never meets the default action (termination).
    #[cfg(unix)]
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: renew certificates by restarting");
        return;
    };
    #[cfg(unix)]
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reloader.reload() {
                Ok(()) => tracing::info!(listeners = reloader.len(), "TLS certificates reloaded"),
                Err(e) => tracing::error!("certificate reload failed, the previous ones stay: {e}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = reloader;
}

/// Installs the Prometheus recorder and serves `GET /metrics` on `addr`; the task ends when
/// the returned guard is dropped.
async fn serve_metrics<H: Handler>(
    addr: SocketAddr,
    broker: Broker<H>,
) -> Result<AbortOnDrop, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %local, "metrics endpoint listening: http://{local}/metrics");
    let render = move || {
        broker.record_metrics();
        handle.render()
    };
    Ok(AbortOnDrop(tokio::spawn(metrics_http::serve(
        listener, render,
    ))))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a bound broker until Ctrl-C, with its metrics endpoint on `metrics_bind`.
async fn serve<H: Handler>(
    server: std::io::Result<Server<H>>,
    metrics_bind: Option<SocketAddr>,
) -> ExitCode {
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let _metrics = match metrics_bind {
        Some(addr) => match serve_metrics(addr, server.broker().clone()).await {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve metrics on {addr}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    reload_certificates_on_sighup(server.certificate_reloader());
    match server.local_addrs() {
        Ok(addrs) => {
            for (kind, addr) in addrs {
                tracing::info!(%addr, listener = kind.as_str(), "mqttx broker listening");
            }
        }
        Err(e) => tracing::warn!(error = %e, "listening on an unknown address"),
    }
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a signal handler the broker runs until killed.
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    };
    match server.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "broker failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[test]
    fn broker_defaults_to_loopback_1883() {
        let cli = Cli::try_parse_from(["mqttx", "broker"]).expect("parses");
        let Commands::Broker(args) = cli.command else {
            panic!("a broker command")
        };
        assert!(args.listeners().is_empty());
        assert_eq!(Config::default().bind.to_string(), "127.0.0.1:1883");
    }

    #[test]
    fn broker_flags_parse() {
        let cli = Cli::try_parse_from([
            "mqttx",
            "broker",
            "--bind",
            "0.0.0.0:1884",
            "--log-level",
            "debug",
            "--config",
            "b.toml",
        ])
        .expect("parses");
        let Commands::Broker(args) = cli.command else {
            panic!("a broker command")
        };
        assert_eq!(
            args.listeners(),
            [Listener::tcp(SocketAddr::from(([0, 0, 0, 0], 1884)))]
        );
        assert!(matches!(args.log_level, Some(LogLevel::Debug)));
        assert_eq!(args.config, Some(PathBuf::from("b.toml")));
        assert!(Cli::try_parse_from(["mqttx", "broker", "--bind", "nowhere"]).is_err());
    }

    #[test]
    fn telemetry_flags_parse() {
        let cli = Cli::try_parse_from([
            "mqttx",
            "broker",
            "--metrics-bind",
            "127.0.0.1:9090",
            "--sys-interval",
            "0",
        ])
        .expect("parses");
        let Commands::Broker(args) = cli.command else {
            panic!("a broker command")
        };
        assert_eq!(
            args.metrics_bind,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert_eq!(args.sys_interval, Some(0));
        assert!(Cli::try_parse_from(["mqttx", "broker", "--sys-interval", "-1"]).is_err());
        // The configuration file's key; 0 turns `$SYS` off.
        let (config, _) = parse_config("sys_interval = 0\n").expect("valid TOML");
        assert_eq!(config.sys_interval, Some(Duration::ZERO));
    }

    #[test]
    fn config_file_sets_fields_and_keeps_defaults() {
        let (config, security) =
            parse_config("bind = \"0.0.0.0:1883\"\nconnect_timeout = 5\nmax_queued_messages = 7\n")
                .expect("valid TOML");
        assert_eq!(security, None);
        assert_eq!(config.bind, SocketAddr::from(([0, 0, 0, 0], 1883)));
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.max_queued_messages, 7);
        assert_eq!(config.max_packet_size, Config::default().max_packet_size);
    }

    #[test]
    fn listener_flags_of_every_kind() {
        let cli = Cli::try_parse_from([
            "mqttx",
            "broker",
            "--bind",
            "127.0.0.1:1883",
            "--bind",
            "127.0.0.1:1884",
            "--tls-bind",
            "127.0.0.1:8883",
            "--ws-bind",
            "127.0.0.1:8083",
            "--wss-bind",
            "127.0.0.1:8084",
            "--cert",
            "s.pem",
            "--key",
            "s.key",
            "--client-ca",
            "ca.pem",
            "--ws-path",
            "/ws",
        ])
        .expect("parses");
        let Commands::Broker(args) = cli.command else {
            panic!("a broker command")
        };
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            args.listeners(),
            [
                Listener::tcp(addr(1883)),
                Listener::tcp(addr(1884)),
                Listener::tls(addr(8883), "s.pem", "s.key").with_client_ca("ca.pem"),
                Listener::ws(addr(8083)).with_path("/ws"),
                Listener::wss(addr(8084), "s.pem", "s.key")
                    .with_client_ca("ca.pem")
                    .with_path("/ws"),
            ]
        );
        // TLS listeners need a certificate and a key.
        assert!(Cli::try_parse_from(["mqttx", "broker", "--tls-bind", "127.0.0.1:8883"]).is_err());
        assert!(
            Cli::try_parse_from([
                "mqttx",
                "broker",
                "--wss-bind",
                "127.0.0.1:8084",
                "--cert",
                "c"
            ])
            .is_err()
        );
    }

    #[test]
    fn config_file_listeners() {
        let (config, _) = parse_config(
            "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:1883\"\n\
             [[listeners]]\nkind = \"wss\"\nbind = \"127.0.0.1:8084\"\ncert = \"s.pem\"\n\
             key = \"s.key\"\npath = \"/ws\"\n",
        )
        .expect("valid TOML");
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            config.effective_listeners(),
            [
                Listener::tcp(addr(1883)),
                Listener::wss(addr(8084), "s.pem", "s.key").with_path("/ws"),
            ]
        );
        assert!(parse_config("[[listeners]]\nkind = \"quic\"\nbind = \"127.0.0.1:1\"\n").is_err());
        assert!(
            parse_config("[[listeners]]\nkind = \"ws\"\nbind = \"127.0.0.1:1\"\nport = 2\n")
                .is_err()
        );
    }

    #[test]
    fn config_file_refuses_unknown_fields() {
        assert!(parse_config("max_packet_sise = 10\n").is_err());
        assert!(parse_config("max_packet_size = \"big\"\n").is_err());
        assert!(parse_config("[security]\nallow_anonymus = false\n").is_err());
    }

    #[test]
    fn security_guide_example_config_parses() {
        // docs/security.md's complete configuration is what the broker reads.
        let guide = include_str!("../../../docs/security.md");
        let start = guide
            .find("`/etc/mqttx/mqttx.toml`:\n\n```toml\n")
            .expect("the guide has the example");
        let body = &guide[start..];
        let body = &body[body.find("```toml\n").expect("block") + 8..];
        let toml = &body[..body.find("```").expect("end of block")];
        let (config, security) = parse_config(toml).expect("the example is valid");
        assert_eq!(config.listeners.len(), 2);
        let security = security.expect("a [security] table");
        assert!(!security.allow_anonymous && security.use_identity_as_username);
        assert_eq!(security.acl.len(), 5);
        assert!(security.allows_anonymous_on(Some("local")));
        assert!(!security.allows_anonymous_on(Some("public")));
        assert_eq!(config.listeners[0].name.as_deref(), Some("public"));
    }

    #[test]
    fn config_file_security_table() {
        let (config, security) = parse_config(
            "max_queued_messages = 7\n\
             [security]\nallow_anonymous = false\npassword_file = \"/etc/mqttx/passwd\"\n\
             message_rate = 100\n\
             [[security.acl]]\npermission = \"deny\"\naccess = \"subscribe\"\ntopic = \"secret/#\"\n\
             reason_code = 0x80\n",
        )
        .expect("valid TOML");
        assert_eq!(config.max_queued_messages, 7);
        let security = security.expect("a [security] table");
        assert!(!security.allow_anonymous);
        assert_eq!(
            security.password_file,
            Some(PathBuf::from("/etc/mqttx/passwd"))
        );
        assert_eq!(security.message_rate, Some(100));
        assert_eq!(security.acl.len(), 1);
        assert_eq!(security.acl[0].reason_code, Some(0x80));
    }
}
