//! `mqttx`, the command-line tool of the mqttx toolkit. Today it has one subcommand:
//! `mqttx broker`, a standards-conformant MQTT 3.1.1 / 5.0 broker (the `mqttx-broker` crate with
//! its allow-all handler) listening on 127.0.0.1:1883 by default. Ctrl-C shuts it down
//! gracefully: clients get DISCONNECT 0x8B (MQTT 5.0) and the process exits when every
//! connection is closed.
//!
//! It is not a library; `pub`, `sub` and `bench` subcommands and a configuration file come
//! with later issues.
//!
//! Command-line parsing uses `clap` with its derive macros: a hand-written parser would cost
//! more code than the whole tool for help texts, error messages and value validation that
//! clap gets right, and the dependency stays in this binary crate, never in the libraries.
//! Logs go through `tracing` (which the broker emits) and `tracing-subscriber` to stderr.
//!
//! # Getting started
//!
//! ```text
//! cargo run --release -p mqttx-cli -- broker                      # 127.0.0.1:1883
//! cargo run --release -p mqttx-cli -- broker --bind 0.0.0.0:1883 --log-level debug
//! mosquitto_sub -t 'demo/#' -v &  mosquitto_pub -t demo/1 -m hello
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mqttx_broker::{Broker, Config};

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
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1883")]
    bind: SocketAddr,
    /// Log level.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
            LogLevel::Trace => Self::TRACE,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Broker(args) => broker(args),
    }
}

fn broker(args: BrokerArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::from(args.log_level))
        .with_writer(std::io::stderr)
        .init();
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
        let mut config = Config::default();
        config.bind = args.bind;
        let server = match Broker::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(bind = %args.bind, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        match server.local_addr() {
            Ok(addr) => tracing::info!(%addr, "mqttx broker listening"),
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
    })
}
