//! [`Config`]: the broker's typed configuration, every limit finite by default; [`Listener`]:
//! where it accepts connections (TCP, TLS, WebSocket, secure WebSocket).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Broker configuration. Every limit has a finite default.
///
/// The struct is `#[non_exhaustive]`: start from [`Config::default`] and set fields.
///
/// ```
/// use std::time::Duration;
/// let mut config = mqttx_broker::Config::default();
/// config.connect_timeout = Duration::from_secs(5);
/// assert_eq!(config.max_packet_size, 1024 * 1024);
/// assert_eq!(config.bind.to_string(), "127.0.0.1:1883");
/// ```
///
/// With the `serde` feature, `Config` implements `Deserialize`: every field is optional (the
/// default fills in), unknown fields are an error, and durations are whole seconds. In TOML:
///
/// ```toml
/// bind = "0.0.0.0:1883"
/// max_packet_size = 262144
/// connect_timeout = 5
/// max_queued_messages = 500
/// ```
///
/// Several listeners, of any kind, replace `bind` (see [`Listener`]):
///
/// ```toml
/// [[listeners]]
/// kind = "tcp"
/// bind = "0.0.0.0:1883"
///
/// [[listeners]]
/// kind = "tls"
/// bind = "0.0.0.0:8883"
/// cert = "/etc/mqttx/server.pem"
/// key = "/etc/mqttx/server.key"
/// client_ca = "/etc/mqttx/ca.pem"   # optional: mutual TLS
///
/// [[listeners]]
/// kind = "ws"
/// bind = "0.0.0.0:8083"
/// path = "/mqtt"                     # the default
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Config {
    /// The address [`Broker::bind`](crate::Broker::bind) listens on over TCP (default
    /// `127.0.0.1:1883`) when [`listeners`](Self::listeners) is empty.
    pub bind: SocketAddr,
    /// The listeners (default none: TCP on [`bind`](Self::bind)). When there are any, the
    /// broker listens on these and only these.
    pub listeners: Vec<Listener>,
    /// The largest packet accepted from a client, fixed header included (default 1 MiB). A
    /// larger declared Remaining Length is refused before its body is read (DISCONNECT 0x95 for
    /// MQTT 5.0 clients). MQTT 5.0 clients learn it from CONNACK's Maximum Packet Size.
    pub max_packet_size: u32,
    /// How long a new connection may take to send CONNECT (default 10 s; whole seconds in a
    /// configuration file).
    #[cfg_attr(feature = "serde", serde(with = "secs"))]
    pub connect_timeout: Duration,
    /// The longest Keep Alive granted, in seconds (default 3 600). An MQTT 5.0 client asking
    /// for more, or for 0 (no keep alive), is told this value in CONNACK's Server Keep Alive.
    /// MQTT 3.1.1 has no way to say so; its clients keep their own value.
    pub max_keepalive: u16,
    /// How long a client without Keep Alive (an MQTT 3.1.x client that sent 0) may stay
    /// silent before it is disconnected (default 1 hour; `None`: forever). MQTT 5.0 clients
    /// always have a Keep Alive, since [`max_keepalive`](Self::max_keepalive) replaces their 0.
    #[cfg_attr(feature = "serde", serde(with = "opt_secs"))]
    pub idle_timeout: Option<Duration>,
    /// The Receive Maximum advertised to MQTT 5.0 clients (default 100): how many QoS 2
    /// PUBLISH exchanges a client may have unfinished; one more is DISCONNECT 0x93.
    pub receive_maximum: u16,
    /// The Topic Alias Maximum advertised to MQTT 5.0 clients (default 100): how many inbound
    /// Topic Aliases a client may define on one connection. 0 turns them off.
    pub topic_alias_maximum: u16,
    /// How many Topic Aliases the broker uses toward one MQTT 5.0 client (default 100), at most
    /// the client's own Topic Alias Maximum: the topics it sent most recently get an alias, the
    /// least recently used one is replaced. 0 turns outbound aliases off.
    pub outbound_topic_aliases: u16,
    /// The most QoS 1 and 2 messages in flight to one client (default 100); the client's own
    /// Receive Maximum lowers it.
    pub max_inflight: u16,
    /// The most messages waiting to be sent to one client (default 1 000), also the size of a
    /// persistent session's offline queue (QoS 1 and 2 messages only).
    pub max_queued_messages: usize,
    /// The most bytes of encoded messages waiting to be sent to one client (default 16 MiB).
    pub max_queued_bytes: usize,
    /// The most bytes of encoded messages a persistent session's offline queue holds while its
    /// client is away (default 1 MiB); QoS 1 and 2 messages beyond it (or beyond
    /// [`max_queued_messages`](Self::max_queued_messages)) are dropped and counted. Lower than
    /// [`max_queued_bytes`](Self::max_queued_bytes) because up to
    /// [`max_stored_sessions`](Self::max_stored_sessions) sessions may be away at once.
    pub max_offline_queued_bytes: usize,
    /// The most retained messages kept (default 100 000); a new retained topic beyond it is
    /// not stored (the message is still delivered).
    pub max_retained_messages: usize,
    /// The most bytes of retained messages kept, topics and payloads counted (default
    /// 256 MiB); a new retained message beyond it is not stored (it is still delivered).
    pub max_retained_bytes: usize,
    /// The most sessions kept for absent clients (default 100 000); past it a closing
    /// persistent session is discarded.
    pub max_stored_sessions: usize,
    /// The longest Session Expiry Interval granted, in seconds (default `u32::MAX`: a session
    /// may be kept until its client returns, as MQTT 3.1.1 Clean Session 0 asks). MQTT 5.0
    /// clients asking for more learn the granted value from CONNACK.
    pub max_session_expiry: u32,
    /// The most simultaneous connections a [`Server`](crate::Server) accepts (default
    /// 100 000); beyond it new connections are closed at once.
    pub max_connections: usize,
    /// How often the broker publishes its `$SYS/broker/...` statistics (retained, Mosquitto's
    /// names: `clients/connected`, `messages/received`, `bytes/sent`, `uptime`, `version`…;
    /// default 10 s, whole seconds in a configuration file; `None` turns them off). `#` never
    /// matches them [MQTT-4.7.2-1]: subscribe to `$SYS/#`.
    #[cfg_attr(feature = "serde", serde(with = "opt_secs"))]
    pub sys_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            listeners: Vec::new(),
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_keepalive: 3600,
            idle_timeout: Some(Duration::from_secs(3600)),
            receive_maximum: 100,
            topic_alias_maximum: 100,
            outbound_topic_aliases: 100,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_offline_queued_bytes: 1024 * 1024,
            max_retained_messages: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_connections: 100_000,
            max_stored_sessions: 100_000,
            max_session_expiry: u32::MAX,
            sys_interval: Some(Duration::from_secs(10)),
        }
    }
}

impl Config {
    /// The listeners the broker binds: [`listeners`](Self::listeners), or TCP on
    /// [`bind`](Self::bind) when there are none.
    ///
    /// ```
    /// use mqttx_broker::{Config, Listener};
    /// let mut config = Config::default();
    /// assert_eq!(config.effective_listeners(), [Listener::tcp(config.bind)]);
    /// config.listeners.push(Listener::ws("127.0.0.1:8083".parse().unwrap()));
    /// assert_eq!(config.effective_listeners().len(), 1);
    /// ```
    pub fn effective_listeners(&self) -> Vec<Listener> {
        if self.listeners.is_empty() {
            vec![Listener::tcp(self.bind)]
        } else {
            self.listeners.clone()
        }
    }
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[allow(clippy::exhaustive_enums)] // The four transports of MQTT.
pub enum ListenerKind {
    /// MQTT over TCP (port 1883 by convention).
    Tcp,
    /// MQTT over TLS (8883).
    Tls,
    /// MQTT over WebSocket (8083, path `/mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS (8084 or 443).
    Wss,
}

impl ListenerKind {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// Whether this kind runs TLS (and so needs a certificate and key).
    pub const fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }
}

/// One address the broker accepts connections on, and how.
///
/// `tls` and `wss` need `cert` and `key` (PEM files: the chain, end entity first, and its
/// private key); with `client_ca` they also ask clients for a certificate signed by it
/// (mutual TLS), and the verified identity reaches `Handler::on_connect` as
/// [`ConnectRequest::peer_identity`](crate::ConnectRequest::peer_identity). `ws` and `wss`
/// upgrade requests on `path` (default `/mqtt`) with the `mqtt` subprotocol.
///
/// ```
/// use mqttx_broker::{Listener, ListenerKind};
/// let tls = Listener::tls("0.0.0.0:8883".parse().unwrap(), "server.pem", "server.key")
///     .with_client_ca("ca.pem");
/// assert_eq!(tls.kind, ListenerKind::Tls);
/// let ws = Listener::ws("127.0.0.1:8083".parse().unwrap()).with_path("/ws");
/// assert_eq!(ws.path.as_deref(), Some("/ws"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct Listener {
    /// What it speaks.
    pub kind: ListenerKind,
    /// The address (port 0 picks a free port).
    pub bind: SocketAddr,
    /// `tls`, `wss`: the certificate chain (PEM).
    #[cfg_attr(feature = "serde", serde(default))]
    pub cert: Option<PathBuf>,
    /// `tls`, `wss`: the private key (PEM).
    #[cfg_attr(feature = "serde", serde(default))]
    pub key: Option<PathBuf>,
    /// `tls`, `wss`: CA certificates (PEM) that client certificates must be signed by;
    /// clients without one are refused.
    #[cfg_attr(feature = "serde", serde(default))]
    pub client_ca: Option<PathBuf>,
    /// `ws`, `wss`: the HTTP path upgraded (default `/mqtt`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub path: Option<String>,
    /// A name for the handler: `Handler::on_connect` finds it in
    /// [`ConnectRequest::listener`](crate::ConnectRequest::listener), e.g. for settings per
    /// listener (anonymous access, connection rates).
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
}

impl Listener {
    fn new(kind: ListenerKind, bind: SocketAddr) -> Self {
        Self {
            kind,
            bind,
            cert: None,
            key: None,
            client_ca: None,
            path: None,
            name: None,
        }
    }

    /// Names the listener (see [`name`](Self::name)).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A TCP listener.
    pub fn tcp(bind: SocketAddr) -> Self {
        Self::new(ListenerKind::Tcp, bind)
    }

    /// A TLS listener with this certificate chain and key.
    pub fn tls(bind: SocketAddr, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self::new(ListenerKind::Tls, bind).with_cert(cert, key)
    }

    /// A WebSocket listener.
    pub fn ws(bind: SocketAddr) -> Self {
        Self::new(ListenerKind::Ws, bind)
    }

    /// A secure WebSocket listener with this certificate chain and key.
    pub fn wss(bind: SocketAddr, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self::new(ListenerKind::Wss, bind).with_cert(cert, key)
    }

    /// Sets the certificate chain and key.
    #[must_use]
    pub fn with_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Requires client certificates signed by the CAs of `path` (mutual TLS).
    #[must_use]
    pub fn with_client_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(path.into());
        self
    }

    /// Sets the WebSocket path.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// `Duration` as whole seconds, for configuration files.
#[cfg(feature = "serde")]
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// `Option<Duration>` as whole seconds, for configuration files.
#[cfg(feature = "serde")]
mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|s| s.map(Duration::from_secs))
    }
}
