//! [`Server`]: the broker's listeners (TCP, TLS, WebSocket, secure WebSocket) and the accept
//! loop that hands each connection, after its TLS and WebSocket handshakes, to
//! [`Broker::serve`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mqttx_transport_tcp::{TcpListener, TcpOptions};
use mqttx_transport_tls::{ServerOptions as TlsOptions, TlsAcceptor};
use mqttx_transport_ws::ServerOptions as WsOptions;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{Listener, ListenerKind};
use crate::handler::{AllowAll, Handler};
use crate::shell::Broker;
use crate::shell::ConnectionInfo;
use crate::stats::ListenerStats;

/// How many accepted connections may wait for the accept loop.
const ACCEPT_QUEUE: usize = 64;

/// What runs on an accepted TCP stream before MQTT.
#[derive(Clone, Debug)]
enum Layers {
    Tcp,
    Tls(TlsAcceptor),
    Ws(WsOptions),
    Wss(TlsAcceptor, WsOptions),
}

#[derive(Debug)]
struct Bound {
    kind: ListenerKind,
    tcp: TcpListener,
    layers: Layers,
    name: Option<Arc<str>>,
    stats: Arc<ListenerStats>,
}

/// A broker with its listeners bound. Run it with [`Server::run`] or [`Server::run_until`].
#[derive(Debug)]
pub struct Server<H: Handler = AllowAll> {
    broker: Broker<H>,
    listeners: Vec<Bound>,
}

impl<H: Handler> Server<H> {
    /// Binds every listener of the broker's configuration
    /// ([`Config::effective_listeners`](crate::Config::effective_listeners)), loading the
    /// certificates of TLS listeners. Fails on the first that cannot be bound or loaded.
    pub(crate) async fn bind(broker: Broker<H>) -> io::Result<Self> {
        let config = broker.config();
        let mut listeners = Vec::new();
        for listener in config.effective_listeners() {
            let layers = layers(&listener, config)?;
            let tcp = TcpListener::bind(listener.bind, TcpOptions::default())
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} listener on {}: {e}",
                            listener.kind.as_str(),
                            listener.bind
                        ),
                    )
                })?;
            let label = match &listener.name {
                Some(name) => name.clone(),
                None => format!("{}:{}", listener.kind.as_str(), tcp.local_addr()?),
            };
            let stats = Arc::new(ListenerStats::new(label, listener.kind));
            broker.add_listener(Arc::clone(&stats));
            listeners.push(Bound {
                kind: listener.kind,
                tcp,
                layers,
                name: listener.name.as_deref().map(Arc::from),
                stats,
            });
        }
        Ok(Self { broker, listeners })
    }

    /// The address of the first listener (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(l) => l.tcp.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no listener")),
        }
    }

    /// Every listener's kind and address, in the order of the configuration.
    pub fn local_addrs(&self) -> io::Result<Vec<(ListenerKind, SocketAddr)>> {
        self.listeners
            .iter()
            .map(|l| Ok((l.kind, l.tcp.local_addr()?)))
            .collect()
    }

    /// The broker, e.g. to call [`Broker::shutdown`] from elsewhere.
    pub fn broker(&self) -> &Broker<H> {
        &self.broker
    }

    /// A handle that reloads the certificate files of the `tls` and `wss` listeners while
    /// the server runs (e.g. on SIGHUP, as `mqttx broker` does).
    pub fn certificate_reloader(&self) -> CertificateReloader {
        let acceptors = self
            .listeners
            .iter()
            .filter_map(|l| match &l.layers {
                Layers::Tls(tls) | Layers::Wss(tls, _) => {
                    let addr = l.tcp.local_addr().ok()?;
                    Some((l.kind, addr, tls.clone()))
                }
                _ => None,
            })
            .collect();
        CertificateReloader { acceptors }
    }

    /// Accepts connections until [`Broker::shutdown`] is called, then shuts down gracefully.
    pub async fn run(self) -> io::Result<()> {
        let stopped = self.broker.stopped();
        self.run_until(stopped).await
    }

    /// Accepts connections until `signal` completes, then shuts down gracefully: stops
    /// accepting, sends DISCONNECT 0x8B (Server shutting down) to MQTT 5.0 clients, closes
    /// every connection, and returns once every connection task has ended.
    ///
    /// TLS and WebSocket handshakes run on the connection's own task, bounded by
    /// [`Config::connect_timeout`](crate::Config::connect_timeout); a client whose handshake
    /// fails (garbage, no certificate, no `mqtt` subprotocol) is dropped and logged at debug
    /// level, and the others are not affected.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
        let (tx, mut rx) = mpsc::channel::<(usize, TcpStream, SocketAddr)>(ACCEPT_QUEUE);
        let mut accepting = JoinSet::new();
        let mut layers = Vec::with_capacity(self.listeners.len());
        for (index, bound) in self.listeners.into_iter().enumerate() {
            layers.push((bound.kind, bound.layers, bound.name, bound.stats));
            let tx = tx.clone();
            accepting.spawn(async move {
                loop {
                    match bound.tcp.accept().await {
                        Ok((stream, peer)) => {
                            if tx.send((index, stream, peer)).await.is_err() {
                                return;
                            }
                        }
                        // Accept errors (out of file descriptors, a connection reset before
                        // accept) concern one connection, not the listener.
                        Err(e) => tracing::warn!(error = %e, "accept failed"),
                    }
                }
            });
        }
        drop(tx);
        let max_connections = self.broker.config().max_connections;
        let mut tasks = JoinSet::new();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = rx.recv() => match accepted {
                    Some((index, stream, peer)) if tasks.len() >= max_connections => {
                        tracing::warn!(%peer, "connection limit reached; closing");
                        if let Some((_, _, _, stats)) = layers.get(index) {
                            ListenerStats::add(&stats.refused);
                        }
                        drop(stream);
                    }
                    Some((index, stream, peer)) => {
                        let Some((kind, layers, name, stats)) = layers.get(index) else { continue };
                        ListenerStats::add(&stats.accepted);
                        let mut origin = ConnectionInfo::from_peer(peer);
                        origin.listener.clone_from(name);
                        origin.listener_stats = Some(Arc::clone(stats));
                        tracing::debug!(%peer, listener = kind.as_str(), "accepted");
                        let broker = self.broker.clone();
                        match layers.clone() {
                            // Plain TCP: the broker reads the socket directly.
                            Layers::Tcp => {
                                tasks.spawn(broker.serve_with(stream, origin));
                            }
                            layers => {
                                tasks.spawn(serve_layered(broker, layers, stream, origin));
                            }
                        }
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        accepting.shutdown().await;
        self.broker.shutdown();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Reloads the certificate, key and client CA files of a [`Server`]'s TLS listeners: new
/// handshakes use the new files, open connections keep theirs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CertificateReloader {
    acceptors: Vec<(ListenerKind, SocketAddr, TlsAcceptor)>,
}

impl CertificateReloader {
    /// How many listeners use TLS (`tls` and `wss`).
    pub fn len(&self) -> usize {
        self.acceptors.len()
    }

    /// Whether no listener uses TLS.
    pub fn is_empty(&self) -> bool {
        self.acceptors.is_empty()
    }

    /// Reads every TLS listener's files again. A listener whose files cannot be loaded keeps
    /// its previous certificate; the error names each such listener.
    pub fn reload(&self) -> io::Result<()> {
        let failures: Vec<String> = self
            .acceptors
            .iter()
            .filter_map(|(kind, addr, tls)| {
                let error = tls.reload().err()?;
                Some(format!("{} listener on {addr}: {error}", kind.as_str()))
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                failures.join("; "),
            ))
        }
    }
}

/// The TLS and WebSocket settings of one listener.
fn layers(listener: &Listener, config: &crate::Config) -> io::Result<Layers> {
    let timeout = config.connect_timeout;
    let name = format!("{} listener on {}", listener.kind.as_str(), listener.bind);
    let tls = || -> io::Result<TlsAcceptor> {
        let (Some(cert), Some(key)) = (&listener.cert, &listener.key) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: needs `cert` and `key` (PEM files)"),
            ));
        };
        let mut opts = TlsOptions::new(cert, key).with_handshake_timeout(timeout);
        if let Some(ca) = &listener.client_ca {
            opts = opts.with_client_ca(ca);
        }
        TlsAcceptor::new(&opts)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))
    };
    let ws = || {
        // WebSocket frames and messages may be as large as the largest MQTT packet accepted,
        // plus 64 KiB of headroom (packets may also span frames).
        let cap = usize::try_from(config.max_packet_size)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024);
        let mut opts = WsOptions::default().with_max_message_size(cap, cap);
        opts.handshake_timeout = timeout;
        if let Some(path) = &listener.path {
            opts.path.clone_from(path);
        }
        opts
    };
    if !listener.kind.is_tls() && (listener.cert.is_some() || listener.client_ca.is_some()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: `cert`, `key` and `client_ca` are for tls and wss listeners"),
        ));
    }
    Ok(match listener.kind {
        ListenerKind::Tcp => Layers::Tcp,
        ListenerKind::Tls => Layers::Tls(tls()?),
        ListenerKind::Ws => Layers::Ws(ws()),
        ListenerKind::Wss => Layers::Wss(tls()?, ws()),
    })
}

/// Runs the handshakes of `layers` on `stream`, then the broker on the resulting stream.
async fn serve_layered<H: Handler>(
    broker: Broker<H>,
    layers: Layers,
    stream: TcpStream,
    mut origin: ConnectionInfo,
) {
    let result: io::Result<(Box<dyn Stream>, _)> = async {
        Ok(match layers {
            Layers::Tcp => (Box::new(stream) as Box<dyn Stream>, None),
            Layers::Tls(tls) => {
                let stream = tls.accept(stream).await?;
                let identity = stream.peer_identity();
                (Box::new(stream) as Box<dyn Stream>, identity)
            }
            Layers::Ws(ws) => {
                let stream = mqttx_transport_ws::accept(stream, &ws).await?;
                (Box::new(stream) as Box<dyn Stream>, None)
            }
            Layers::Wss(tls, ws) => {
                let stream = tls.accept(stream).await?;
                let identity = stream.peer_identity();
                let stream = mqttx_transport_ws::accept(stream, &ws).await?;
                (Box::new(stream) as Box<dyn Stream>, identity)
            }
        })
    }
    .await;
    match result {
        Ok((stream, identity)) => {
            origin.identity = identity;
            broker.serve_with(stream, origin).await;
        }
        Err(error) => {
            if let Some(stats) = &origin.listener_stats {
                ListenerStats::add(&stats.handshake_failed);
            }
            tracing::debug!(peer = ?origin.peer, %error, "handshake failed");
        }
    }
}

/// A TLS or WebSocket stream, boxed so that the broker's connection code is compiled once for
/// all of them.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}
