//! `mqttx pub` and `mqttx sub`: command-line MQTT clients with the flags of `mosquitto_pub`
//! and `mosquitto_sub`, on top of `mqttx-client`, over TCP, TLS (`mqttx-transport-tls`),
//! WebSocket and secure WebSocket (`mqttx-transport-ws`).
//!
//! Exit codes: 0 success, 1 a connection or protocol failure (refused, unreachable, a
//! message refused by the broker, the connection lost for good), 2 a usage error (clap's
//! code), 27 when `mqttx sub -W` timed out (as `mosquitto_sub`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use mqttx_client::codec::{
    Properties, ProtocolVersion, Publish, QoS, ReasonCode, SubscribeFilter, UserProperty, Will,
};
use mqttx_client::{Client, ConnectOptions, Connector, Error, Event, Events, TcpConnector};
use mqttx_transport_tls::{ClientOptions as TlsOptions, TlsConnector};
use mqttx_transport_ws::WsConnector;

/// Exit code of a usage error (clap's).
const USAGE: u8 = 2;
/// Exit code of `mqttx sub -W` when no message came in time (mosquitto_sub's).
const TIMED_OUT: u8 = 27;

/// Connection flags shared by `pub` and `sub` (mosquitto's letters).
#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// The broker's host name or address.
    #[arg(short = 'h', long, value_name = "HOST", default_value = "localhost")]
    host: String,
    /// The broker's port [default: 1883, 8883 with TLS].
    #[arg(short = 'p', long, value_name = "PORT")]
    port: Option<u16>,
    /// The broker as a URL: mqtt://[user[:password]@]host[:port]/topic, mqtts://…,
    /// ws://host[:port]/path or wss://… (for ws and wss the path is the HTTP path).
    #[arg(short = 'L', long, value_name = "URL", conflicts_with_all = ["host", "port"])]
    url: Option<String>,
    /// Client identifier [default: mqttx-pub-PID / mqttx-sub-PID].
    #[arg(short = 'i', long, value_name = "ID")]
    id: Option<String>,
    /// User name.
    #[arg(short = 'u', long, value_name = "USER")]
    username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw", value_name = "PASSWORD")]
    password: Option<String>,
    /// MQTT protocol version: 31, 311 or 5 (also mqttv31, mqttv311, mqttv5).
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", default_value = "5", value_parser = parse_version)]
    version: ProtocolVersion,
    /// Keep alive in seconds (0 turns it off).
    #[arg(short = 'k', long, value_name = "SECS", default_value_t = 60)]
    keepalive: u16,
    /// Keep the session (Clean Start / Clean Session 0); with MQTT 5.0 give -x too.
    #[arg(short = 'c', long = "disable-clean-session")]
    keep_session: bool,
    /// Session Expiry Interval in seconds (MQTT 5.0; `-1` never expires).
    #[arg(
        short = 'x',
        long = "session-expiry-interval",
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    session_expiry: Option<i64>,
    /// Topic of the Will Message.
    #[arg(long, value_name = "TOPIC")]
    will_topic: Option<String>,
    /// Payload of the Will Message.
    #[arg(long, value_name = "PAYLOAD", requires = "will_topic")]
    will_payload: Option<String>,
    /// QoS of the Will Message.
    #[arg(long, value_name = "QOS", default_value = "0", value_parser = parse_qos, requires = "will_topic")]
    will_qos: QoS,
    /// Retain the Will Message.
    #[arg(long, requires = "will_topic")]
    will_retain: bool,
    /// CA certificates (PEM) to verify the broker with; turns TLS on.
    #[arg(long, value_name = "FILE")]
    cafile: Option<PathBuf>,
    /// TLS with the platform's CA certificates.
    #[arg(long)]
    tls_use_os_certs: bool,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Do not verify the broker's certificate (TLS without authentication: tests only).
    #[arg(long)]
    insecure: bool,
    /// MQTT 5.0 property: -D COMMAND NAME VALUE (user-property takes NAME KEY VALUE).
    /// Commands: connect, publish, subscribe, will. Names: content-type, correlation-data,
    /// message-expiry-interval, payload-format-indicator, response-topic, user-property
    /// (publish, will), will-delay-interval (will), session-expiry-interval,
    /// receive-maximum, maximum-packet-size, user-property (connect), subscription-identifier,
    /// user-property (subscribe).
    #[arg(short = 'D', long = "property", value_name = "COMMAND NAME VALUE", num_args = 3..=4, action = ArgAction::Append)]
    property: Vec<String>,
    /// Print debug messages (connection, packets) to stderr.
    #[arg(short = 'd', long)]
    debug: bool,
}

/// `mqttx pub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The topic to publish to.
    #[arg(short = 't', long, value_name = "TOPIC")]
    topic: Option<String>,
    /// The message.
    #[arg(short = 'm', long, value_name = "MESSAGE", group = "payload")]
    message: Option<String>,
    /// Send the contents of a file as the message.
    #[arg(short = 'f', long, value_name = "FILE", group = "payload")]
    file: Option<PathBuf>,
    /// Send each line of stdin as a message (empty lines are skipped).
    #[arg(short = 'l', long = "stdin-line", group = "payload")]
    lines: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long = "stdin-file", group = "payload")]
    stdin: bool,
    /// Send an empty (null) message.
    #[arg(short = 'n', long = "null-message", group = "payload")]
    null: bool,
    /// QoS.
    #[arg(short = 'q', long, value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

/// `mqttx sub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// A topic filter to subscribe to (repeatable).
    #[arg(short = 't', long, value_name = "FILTER")]
    topic: Vec<String>,
    /// Maximum QoS of the subscriptions.
    #[arg(short = 'q', long, value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Print the topic before the payload ("TOPIC PAYLOAD").
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Output format: %t topic, %p payload, %x payload in hex, %l length, %q QoS, %r retain,
    /// %m packet id, %C content type, %E message expiry, %R response topic, %D correlation
    /// data, %P user properties, %% a percent sign; \n, \t, \\ escapes. No newline is added.
    #[arg(short = 'F', long, value_name = "FORMAT", conflicts_with = "verbose")]
    format: Option<String>,
    /// Exit after this many messages.
    #[arg(short = 'C', long, value_name = "COUNT")]
    count: Option<u64>,
    /// Exit after this many seconds without a message (exit code 27).
    #[arg(short = 'W', long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Do not print a newline after each message.
    #[arg(short = 'N', long)]
    no_newline: bool,
    /// Do not print retained messages received on subscribing.
    #[arg(short = 'R', long)]
    no_retained: bool,
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("{s:?} is not a QoS: use 0, 1 or 2"))
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "31" | "mqttv31" => Ok(ProtocolVersion::V31),
        "311" | "mqttv311" => Ok(ProtocolVersion::V311),
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        _ => Err(format!("{s:?} is not a protocol version: use 31, 311 or 5")),
    }
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    fn connection(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// Runs `mqttx pub`.
pub(crate) fn run_pub(args: PubArgs) -> ExitCode {
    run(args.conn.debug, publish(args))
}

/// Runs `mqttx sub`.
pub(crate) fn run_sub(args: SubArgs) -> ExitCode {
    run(args.conn.debug, subscribe(args))
}

fn run(debug: bool, work: impl Future<Output = Result<(), Failure>>) -> ExitCode {
    // `-d`: debug; otherwise warnings, or what RUST_LOG names (the client's spans and events).
    crate::init_logging(
        debug.then_some(crate::LogLevel::Debug),
        Some(crate::LogLevel::Warn),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("Error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Where and how to connect, from the flags and the URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
    /// `ws`/`wss`: the URL to upgrade (without user info).
    ws_url: Option<String>,
    /// `mqtt`/`mqtts`: the topic named by the URL's path.
    topic: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

/// Parses mqtt://[user[:password]@]host[:port][/topic] and its mqtts, ws and wss kin.
fn parse_url(url: &str) -> Result<Target, Failure> {
    let bad = |why: &str| {
        Failure::usage(format!(
            "{url:?} is not a broker URL ({why}); write e.g. mqtt://localhost:1883/topic, \
             mqtts://user:password@host/topic or ws://host:8083/mqtt"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => Scheme::Mqtt,
        "mqtts" | "ssl" | "tls" => Scheme::Mqtts,
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        _ => return Err(bad("the scheme is not mqtt, mqtts, ws or wss")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (Some(user.to_owned()), Some(pw.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let default_port = match scheme {
        Scheme::Mqtt => 1883,
        Scheme::Mqtts => 8883,
        Scheme::Ws => 80,
        Scheme::Wss => 443,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        match tail.strip_prefix(':') {
            Some(p) => (host, p.parse().map_err(|_| bad("bad port"))?),
            None if tail.is_empty() => (host, default_port),
            None => return Err(bad("junk after the address")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad("no host or port"));
    }
    let (ws_url, topic) = match scheme {
        Scheme::Ws | Scheme::Wss => {
            let path = if path.is_empty() { "/mqtt" } else { path };
            let scheme = if scheme == Scheme::Ws { "ws" } else { "wss" };
            (Some(format!("{scheme}://{hostport}{path}")), None)
        }
        _ => (None, path.strip_prefix('/').filter(|t| !t.is_empty())),
    };
    Ok(Target {
        scheme,
        host: host.to_owned(),
        port,
        ws_url,
        topic: topic.map(str::to_owned),
        username,
        password,
    })
}

/// The MQTT 5.0 properties given with -D, per command.
#[derive(Debug, Default)]
struct PropertyArgs {
    connect: Properties<'static>,
    publish: Properties<'static>,
    subscribe: Properties<'static>,
    will: Properties<'static>,
    session_expiry: Option<u32>,
    receive_maximum: Option<u16>,
    maximum_packet_size: Option<u32>,
}

/// Groups the flat -D values (COMMAND NAME VALUE, or COMMAND user-property KEY VALUE).
fn parse_properties(values: &[String]) -> Result<PropertyArgs, Failure> {
    let mut out = PropertyArgs::default();
    let mut rest = values;
    while !rest.is_empty() {
        let [command, name, tail @ ..] = rest else {
            return Err(Failure::usage("-D needs COMMAND NAME VALUE"));
        };
        let arity = if name == "user-property" { 2 } else { 1 };
        if tail.len() < arity {
            return Err(Failure::usage(format!(
                "-D {command} {name} needs {arity} value(s)"
            )));
        }
        let (vals, next) = tail.split_at(arity);
        rest = next;
        let value = vals[0].as_str();
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| *v <= max)
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "-D {command} {name}: {value:?} is not a number up to {max}"
                    ))
                })
        };
        let unknown = || {
            Failure::usage(format!(
                "-D {command} {name}: not supported; see `mqttx {} --help` for the supported properties",
                if command == "subscribe" { "sub" } else { "pub" }
            ))
        };
        let props = match command.as_str() {
            "connect" => &mut out.connect,
            "publish" => &mut out.publish,
            "subscribe" => &mut out.subscribe,
            "will" => &mut out.will,
            _ => {
                return Err(Failure::usage(format!(
                    "-D: unknown command {command:?}: use connect, publish, subscribe or will"
                )));
            }
        };
        match (command.as_str(), name.as_str()) {
            (_, "user-property") => props
                .user_properties
                .push(UserProperty::new(value, vals[1].as_str())),
            ("publish" | "will", "content-type") => {
                props.content_type = Some(value.to_owned().into())
            }
            ("publish" | "will", "response-topic") => {
                props.response_topic = Some(value.to_owned().into());
            }
            ("publish" | "will", "correlation-data") => {
                props.correlation_data = Some(value.as_bytes().to_vec().into());
            }
            ("publish" | "will", "message-expiry-interval") => {
                props.message_expiry_interval = Some(number(u32::MAX.into())? as u32);
            }
            ("publish" | "will", "payload-format-indicator") => {
                props.payload_format_indicator = Some(number(1)? == 1);
            }
            ("will", "will-delay-interval") => {
                props.will_delay_interval = Some(number(u32::MAX.into())? as u32);
            }
            ("connect", "session-expiry-interval") => {
                out.session_expiry = Some(number(u32::MAX.into())? as u32);
            }
            ("connect", "receive-maximum") => {
                out.receive_maximum = Some(number(u16::MAX.into())? as u16).filter(|v| *v > 0);
            }
            ("connect", "maximum-packet-size") => {
                out.maximum_packet_size = Some(number(u32::MAX.into())? as u32).filter(|v| *v > 0);
            }
            ("subscribe", "subscription-identifier") => {
                let id = number(268_435_455)? as u32;
                if id == 0 {
                    return Err(Failure::usage(
                        "-D subscribe subscription-identifier: 1 or more",
                    ));
                }
                props.subscription_identifiers.push(id);
            }
            _ => return Err(unknown()),
        }
    }
    Ok(out)
}

/// A connected client and its events.
struct Connected {
    client: Client,
    events: Events,
}

impl ConnArgs {
    /// Options and transport from the flags; `topic` is the URL's topic, if any.
    fn prepare(
        &self,
        role: &str,
        reconnect: bool,
    ) -> Result<(ConnectOptions, Target, PropertyArgs), Failure> {
        let target = match &self.url {
            Some(url) => parse_url(url)?,
            None => {
                let tls = self.cafile.is_some()
                    || self.cert.is_some()
                    || self.tls_use_os_certs
                    || self.insecure;
                Target {
                    scheme: if tls { Scheme::Mqtts } else { Scheme::Mqtt },
                    host: self.host.clone(),
                    port: self.port.unwrap_or(if tls { 8883 } else { 1883 }),
                    ws_url: None,
                    topic: None,
                    username: None,
                    password: None,
                }
            }
        };
        let props = parse_properties(&self.property)?;
        let v5 = self.version == ProtocolVersion::V5;
        if !self.property.is_empty() && !v5 {
            return Err(Failure::usage("-D properties need MQTT 5.0 (-V 5)"));
        }
        if self.session_expiry.is_some() && !v5 {
            return Err(Failure::usage(
                "-x (session expiry) needs MQTT 5.0 (-V 5); with 3.1.1, -c alone keeps the session",
            ));
        }
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("mqttx-{role}-{}", std::process::id()));
        if self.keep_session && self.id.is_none() {
            return Err(Failure::usage(
                "-c (keep the session) needs a client identifier: give -i ID",
            ));
        }
        let mut options = ConnectOptions::new(target.host.clone(), target.port, id)
            .protocol(self.version)
            .keep_alive(Duration::from_secs(self.keepalive.into()));
        options.reconnect = reconnect;
        options.session.clean_start = !self.keep_session;
        if let Some(expiry) = self.session_expiry.or(props.session_expiry.map(i64::from)) {
            options.session.session_expiry_interval = if expiry < 0 {
                u32::MAX
            } else {
                u32::try_from(expiry).unwrap_or(u32::MAX)
            };
        }
        if let Some(max) = props.receive_maximum {
            options.session.receive_maximum = max;
        }
        if let Some(max) = props.maximum_packet_size {
            options.session.max_packet_size = max;
        }
        options.session.properties = props.connect.clone();
        let username = self.username.clone().or(target.username.clone());
        let password = self.password.clone().or(target.password.clone());
        match (username, password) {
            (Some(user), pw) => {
                options.session.username = Some(user);
                options.session.password = pw.map(String::into_bytes);
            }
            (None, Some(_)) => {
                return Err(Failure::usage("a password (-P) needs a user name (-u)"));
            }
            (None, None) => {}
        }
        if let Some(topic) = &self.will_topic {
            let will = Will {
                qos: self.will_qos,
                retain: self.will_retain,
                properties: props.will.clone().into(),
                topic: Cow::Owned(topic.clone()),
                payload: Cow::Owned(self.will_payload.clone().unwrap_or_default().into_bytes()),
            };
            options = options.will(will);
        }
        Ok((options, target, props))
    }

    fn tls(&self) -> Result<TlsConnector, Failure> {
        let mut opts = TlsOptions::default().danger_accept_invalid_certs(self.insecure);
        if let Some(ca) = &self.cafile {
            opts = opts.with_ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            opts = opts.with_client_cert(cert, key);
        }
        TlsConnector::new(&opts).map_err(|e| {
            Failure::connection(format!(
                "cannot set up TLS: {}; check --cafile, --cert and --key",
                chain(&e)
            ))
        })
    }

    async fn connect(
        &self,
        options: ConnectOptions,
        target: &Target,
    ) -> Result<Connected, Failure> {
        let (host, port) = (target.host.clone(), target.port);
        let result = match target.scheme {
            Scheme::Mqtt => Client::connect_with(options, TcpConnector::new(host, port)).await,
            Scheme::Mqtts => {
                let tls = self.tls()?;
                let tcp = TcpConnector::new(host.clone(), port);
                let connector = move || {
                    let (tls, tcp, host) = (tls.clone(), tcp.clone(), host.clone());
                    async move {
                        let stream = tcp.connect().await?;
                        tls.connect(&host, stream).await
                    }
                };
                Client::connect_with(options, connector).await
            }
            Scheme::Ws | Scheme::Wss => {
                let url = target.ws_url.as_deref().unwrap_or_default();
                let mut ws = WsConnector::new(url).map_err(|e| Failure::usage(e.to_string()))?;
                if target.scheme == Scheme::Wss {
                    ws = ws.with_tls(self.tls()?);
                }
                let connector = move || {
                    let ws = ws.clone();
                    async move { ws.connect().await }
                };
                Client::connect_with(options, connector).await
            }
        };
        result
            .map(|(client, events)| Connected { client, events })
            .map_err(|e| Failure::connection(explain(&e, target, self.version)))
    }
}

/// An error and its causes, "a: b: c".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// What went wrong connecting, and what to try.
fn explain(e: &Error, target: &Target, version: ProtocolVersion) -> String {
    let whom = format!("{}:{}", target.host, target.port);
    match e {
        Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => format!(
            "cannot connect to {whom}: connection refused; is a broker running there? \
             (check -h/-p or -L)"
        ),
        Error::Io(_) => format!("cannot connect to {whom}: {}", chain(e)),
        Error::ConnectTimeout => format!(
            "no answer from {whom} in time; is it an MQTT broker, and is this the right \
             transport (mqtt, mqtts, ws, wss)?"
        ),
        Error::Refused(code) => {
            let hint = match code.as_u8() {
                0x84 | 0x01 if version == ProtocolVersion::V5 => {
                    "; the broker may not speak MQTT 5.0: try -V 311"
                }
                0x86 | 0x04 => "; check the user name and password (-u, -P)",
                0x87 | 0x05 => "; this user may not connect (check -u, -P, the certificate)",
                0x85 | 0x02 => "; try another client identifier (-i)",
                _ => "",
            };
            format!("{whom} refused the connection: {code}{hint}")
        }
        _ => format!("connecting to {whom}: {}", chain(e)),
    }
}

/// The payloads `mqttx pub` sends.
fn payloads(args: &PubArgs) -> Result<Box<dyn Iterator<Item = io::Result<Vec<u8>>>>, Failure> {
    if let Some(m) = &args.message {
        return Ok(Box::new(std::iter::once(Ok(m.clone().into_bytes()))));
    }
    if let Some(path) = &args.file {
        let bytes = std::fs::read(path).map_err(|e| {
            Failure::usage(format!(
                "cannot read the message file {}: {e}",
                path.display()
            ))
        })?;
        return Ok(Box::new(std::iter::once(Ok(bytes))));
    }
    if args.null {
        return Ok(Box::new(std::iter::once(Ok(Vec::new()))));
    }
    if args.stdin {
        let mut bytes = Vec::new();
        io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
        return Ok(Box::new(std::iter::once(Ok(bytes))));
    }
    if args.lines {
        let lines = io::stdin()
            .lock()
            .split(b'\n')
            .filter_map(|line| match line {
                Ok(mut l) => {
                    if l.last() == Some(&b'\r') {
                        l.pop();
                    }
                    (!l.is_empty()).then_some(Ok(l))
                }
                Err(e) => Some(Err(e)),
            });
        return Ok(Box::new(lines));
    }
    Err(Failure::usage(
        "no message: give one of -m MESSAGE, -f FILE, -l, -s or -n",
    ))
}

async fn publish(args: PubArgs) -> Result<(), Failure> {
    let (options, target, props) = args.conn.prepare("pub", false)?;
    let topic = args
        .topic
        .clone()
        .or(target.topic.clone())
        .ok_or_else(|| Failure::usage("no topic: give -t TOPIC (or a topic in the -L URL)"))?;
    let payloads = payloads(&args)?;
    let Connected { client, events } = args.conn.connect(options, &target).await?;
    drop(events);
    let mut handles = Vec::new();
    for payload in payloads {
        let payload = payload.map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
        let mut msg = Publish::new(topic.clone(), payload);
        msg.qos = args.qos;
        msg.retain = args.retain;
        msg.properties = props.publish.clone().into();
        let handle = client.publish_message(msg).await.map_err(|e| {
            Failure::connection(format!("cannot publish to {topic:?}: {}", chain(&e)))
        })?;
        handles.push(handle);
        // Bounded: resolve what is done so far so a long -l stream keeps few handles.
        if handles.len() >= 1024 {
            for handle in handles.drain(..) {
                check_ack(handle.await, &topic)?;
            }
        }
    }
    for handle in handles {
        check_ack(handle.await, &topic)?;
    }
    let _ = client.disconnect().await;
    Ok(())
}

fn check_ack(ack: Result<ReasonCode, Error>, topic: &str) -> Result<(), Failure> {
    match ack {
        Ok(code) if code.is_error() => Err(Failure::connection(format!(
            "the broker refused the message to {topic:?}: {code}"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::connection(format!(
            "the connection ended before the message to {topic:?} was acknowledged: {}",
            chain(&e)
        ))),
    }
}

async fn subscribe(args: SubArgs) -> Result<(), Failure> {
    let (options, target, props) = args.conn.prepare("sub", true)?;
    let mut filters = args.topic.clone();
    filters.extend(target.topic.clone());
    if filters.is_empty() {
        return Err(Failure::usage("no topic: give -t FILTER (repeatable)"));
    }
    let format = args.format.as_deref().map(unescape);
    let Connected { client, mut events } = args.conn.connect(options, &target).await?;
    let requested = filters
        .iter()
        .map(|f| SubscribeFilter::new(f.clone(), args.qos))
        .collect();
    let results = client
        .subscribe_many(requested, props.subscribe.clone())
        .await
        .map_err(|e| Failure::connection(format!("subscribe failed: {}", chain(&e))))?;
    for (filter, result) in filters.iter().zip(&results) {
        if let Err(code) = result {
            return Err(Failure::connection(format!(
                "the broker refused the subscription to {filter:?}: {code}"
            )));
        }
    }
    let mut received = 0u64;
    let wait = args.timeout.map(Duration::from_secs);
    let stdout = io::stdout();
    let result = loop {
        if args.count.is_some_and(|count| received >= count) {
            break Ok(());
        }
        let next = async {
            match wait {
                Some(wait) => tokio::time::timeout(wait, events.recv()).await.ok(),
                None => Some(events.recv().await),
            }
        };
        let event = tokio::select! {
            event = next => event,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let Some(event) = event else {
            break Err(Failure {
                code: TIMED_OUT,
                message: format!("no message within {} s (-W)", args.timeout.unwrap_or(0)),
            });
        };
        match event {
            Some(Event::Message(msg)) => {
                if args.no_retained && msg.retain {
                    continue;
                }
                received += 1;
                let mut line = Vec::new();
                match &format {
                    Some(format) => render(format, &msg, &mut line),
                    None => {
                        if args.verbose {
                            line.extend_from_slice(msg.topic.as_bytes());
                            line.push(b' ');
                        }
                        line.extend_from_slice(&msg.payload);
                    }
                }
                if !args.no_newline && format.is_none() {
                    line.push(b'\n');
                }
                let mut out = stdout.lock();
                if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                    // stdout closed (e.g. `| head`): done.
                    break Ok(());
                }
            }
            Some(Event::Disconnected { reason_code }) => {
                eprintln!("Warning: disconnected ({reason_code}); reconnecting");
            }
            Some(Event::Stopped(code)) => {
                break Err(Failure::connection(format!(
                    "the connection ended for good: {code}"
                )));
            }
            Some(_) => {}
            None => break Err(Failure::connection("the connection ended")),
        }
    };
    let _ = client.disconnect().await;
    result
}

/// Replaces `\n`, `\t`, `\\`, `\e` and `\0` in a format string.
fn unescape(format: &str) -> String {
    let mut out = String::with_capacity(format.len());
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('e') => out.push('\x1b'),
            Some('0') => out.push('\0'),
            Some('\\') | None => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

/// Writes one message as `format` says.
fn render(format: &str, msg: &Publish<'_>, out: &mut Vec<u8>) {
    let mut chars = format.chars();
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<u8>| {
        out.extend_from_slice(text.as_bytes());
        text.clear();
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        let props = &msg.properties;
        match chars.next() {
            Some('t') => text.push_str(&msg.topic),
            Some('p') => {
                flush(&mut text, out);
                out.extend_from_slice(&msg.payload);
            }
            Some('x') => msg.payload.iter().for_each(|b| {
                let _ = write!(text, "{b:02x}");
            }),
            Some('X') => msg.payload.iter().for_each(|b| {
                let _ = write!(text, "{b:02X}");
            }),
            Some('l') => {
                let _ = write!(text, "{}", msg.payload.len());
            }
            Some('q') => {
                let _ = write!(text, "{}", msg.qos.as_u8());
            }
            Some('r') => text.push(if msg.retain { '1' } else { '0' }),
            Some('m') => {
                let _ = write!(text, "{}", msg.packet_id.map_or(0, |id| id.get()));
            }
            Some('C') => text.push_str(props.content_type.as_deref().unwrap_or("")),
            Some('E') => {
                if let Some(e) = props.message_expiry_interval {
                    let _ = write!(text, "{e}");
                }
            }
            Some('R') => text.push_str(props.response_topic.as_deref().unwrap_or("")),
            Some('D') => {
                flush(&mut text, out);
                out.extend_from_slice(props.correlation_data.as_deref().unwrap_or(&[]));
            }
            Some('P') => {
                let mut first = true;
                for (key, value) in &props.user_properties {
                    if !first {
                        text.push(' ');
                    }
                    first = false;
                    let _ = write!(text, "{key}:{value}");
                }
            }
            Some('%') => text.push('%'),
            Some(other) => {
                text.push('%');
                text.push(other);
            }
            None => text.push('%'),
        }
    }
    flush(&mut text, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("mqtt://alice:secret@broker.example:1884/a/b").expect("valid");
        assert_eq!(t.scheme, Scheme::Mqtt);
        assert_eq!((t.host.as_str(), t.port), ("broker.example", 1884));
        assert_eq!(t.topic.as_deref(), Some("a/b"));
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("secret"));
        let t = parse_url("mqtts://[::1]/x").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8883));
        let t = parse_url("ws://127.0.0.1:8083").expect("valid");
        assert_eq!(t.ws_url.as_deref(), Some("ws://127.0.0.1:8083/mqtt"));
        assert_eq!(t.topic, None);
        let t = parse_url("wss://u@h:8084/ws").expect("valid");
        assert_eq!(t.ws_url.as_deref(), Some("wss://h:8084/ws"));
        assert_eq!(t.username.as_deref(), Some("u"));
        for bad in [
            "localhost:1883",
            "http://h/",
            "mqtt://:1883/t",
            "mqtt://h:99999/t",
            "mqtt://[::1/t",
        ] {
            assert_eq!(
                parse_url(bad).map_err(|f| f.code).err(),
                Some(USAGE),
                "{bad}"
            );
        }
    }

    #[test]
    fn properties_group_by_arity() {
        let args: Vec<String> = [
            "publish",
            "user-property",
            "k",
            "v",
            "publish",
            "content-type",
            "text/plain",
            "publish",
            "message-expiry-interval",
            "60",
            "subscribe",
            "subscription-identifier",
            "7",
            "connect",
            "session-expiry-interval",
            "30",
            "will",
            "will-delay-interval",
            "5",
            "publish",
            "correlation-data",
            "abc",
            "publish",
            "response-topic",
            "r/1",
        ]
        .map(String::from)
        .into();
        let p = parse_properties(&args).expect("valid");
        assert_eq!(p.publish.user_properties.iter().next(), Some(("k", "v")));
        assert_eq!(p.publish.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.publish.message_expiry_interval, Some(60));
        assert_eq!(p.publish.correlation_data.as_deref(), Some(&b"abc"[..]));
        assert_eq!(p.publish.response_topic.as_deref(), Some("r/1"));
        assert_eq!(p.subscribe.subscription_identifiers.iter().next(), Some(7));
        assert_eq!(p.session_expiry, Some(30));
        assert_eq!(p.will.will_delay_interval, Some(5));
        for bad in [
            &["publish", "content-type"][..],
            &["publish", "user-property", "k"],
            &["publish", "topic-alias", "1"],
            &["connect", "message-expiry-interval", "-1"],
            &["nope", "content-type", "x"],
            &["subscribe", "subscription-identifier", "0"],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(
                parse_properties(&bad).map_err(|f| f.code).err(),
                Some(USAGE),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn formats() {
        let mut msg = Publish::new("a/b", &b"hi"[..]);
        msg.retain = true;
        msg.qos = QoS::AtLeastOnce;
        msg.properties.content_type = Some("text/plain".into());
        msg.properties
            .user_properties
            .push(UserProperty::new("k", "v"));
        let mut out = Vec::new();
        render(
            &unescape(r"%t %p %x %l %q %r %C %P 100%%\n"),
            &msg,
            &mut out,
        );
        assert_eq!(out, b"a/b hi 6869 2 1 1 text/plain k:v 100%\n");
    }
}
