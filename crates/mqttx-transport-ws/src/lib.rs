//! mqttx-transport-ws carries MQTT over WebSocket (RFC 6455) for mqttx, as MQTT 5.0 §6 and
//! MQTT 3.1.1 §6 describe it: binary frames, the `mqtt` subprotocol, packets free to span or
//! share frames. Over a TLS stream from `mqttx-transport-tls` it is secure WebSocket (wss).
//!
//! It is a thin adapter and knows nothing about MQTT packets: [`accept`] (server) and
//! [`connect`] (client) run the HTTP upgrade on an open stream and give a [`WsStream`], a
//! plain byte stream (`AsyncRead + AsyncWrite`) that the broker and the client take like TCP.
//! Reads concatenate the payloads of binary messages; each write becomes one binary message.
//! Pings are answered, a Close ends the stream, and a text frame is an error
//! ([MQTT-6.0.0-1]: "MQTT Control Packets MUST be sent in WebSocket binary data frames. If
//! any other type of data frame is received the recipient MUST close the Network
//! Connection").
//!
//! WebSocket framing and the handshake are tokio-tungstenite's (the standard tokio WebSocket
//! library), with only its `handshake` feature: TCP, TLS and proxies are the other mqttx
//! transports' job.
//!
//! # Layout
//!
//! - [`ServerOptions`], [`accept`]: the server side. The path (`/mqtt` by default) and the
//!   subprotocol are checked: another path is HTTP 404, a request without the `mqtt`
//!   subprotocol HTTP 400; the chosen subprotocol is echoed.
//! - [`ClientOptions`], [`connect`]: the client side over an open stream, with extra headers
//!   (e.g. `Authorization`).
//! - [`WsConnector`]: the whole client path from a `ws://` or `wss://` URL: TCP (optionally
//!   through an HTTP proxy), TLS for `wss`, then the upgrade.
//! - [`WsStream`]: the byte stream.
//!
//! # Limits
//!
//! Incoming frames and messages are capped at [`DEFAULT_MAX_MESSAGE`] (1 MiB, the broker's
//! default maximum packet size, plus 64 KiB of headroom); a larger one ends the connection.
//! The upgrade request must arrive within the handshake timeout (10 s).
//!
//! # Getting started
//!
//! ```
//! use mqttx_transport_ws::{ClientOptions, ServerOptions, accept, connect};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut ws = accept(tcp, &ServerOptions::default()).await?;
//!     let mut buf = [0u8; 2];
//!     ws.read_exact(&mut buf).await?;
//!     std::io::Result::Ok(buf)
//! });
//! let tcp = tokio::net::TcpStream::connect(addr).await?;
//! let url = format!("ws://{addr}/mqtt");
//! let mut ws = connect(&url, tcp, &ClientOptions::default()).await?;
//! ws.write_all(&[0xC0, 0x00]).await?; // one binary frame
//! assert_eq!(server.await??, [0xC0, 0x00]);
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! None.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use mqttx_transport_tcp::{HttpProxy, TcpOptions};
use mqttx_transport_tls::{MaybeTlsStream, TlsConnector};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// The default cap on an incoming frame and message: 1 MiB plus 64 KiB of headroom.
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024 + 64 * 1024;
/// The subprotocol of MQTT over WebSocket (MQTT 5.0 §6, [MQTT-6.0.0-3]).
pub const SUBPROTOCOL: &str = "mqtt";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutting a [`WsStream`] down waits for the closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// tungstenite's read buffer, allocated per connection.
const READ_BUFFER: usize = 16 * 1024;

/// The server side's settings.
///
/// ```
/// let opts = mqttx_transport_ws::ServerOptions::default();
/// assert_eq!(opts.path, "/mqtt");
/// assert_eq!(opts.subprotocol, "mqtt");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The only request path upgraded (default `/mqtt`); others get HTTP 404.
    pub path: String,
    /// The subprotocol the client must offer (default `mqtt`); without it HTTP 400.
    pub subprotocol: String,
    /// The largest incoming frame payload, and the largest frame written (default
    /// [`DEFAULT_MAX_MESSAGE`]).
    pub max_frame_size: usize,
    /// The largest incoming message, fragments joined (default [`DEFAULT_MAX_MESSAGE`]).
    pub max_message_size: usize,
    /// How long the upgrade may take (default 10 s).
    pub handshake_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            path: "/mqtt".to_owned(),
            subprotocol: SUBPROTOCOL.to_owned(),
            max_frame_size: DEFAULT_MAX_MESSAGE,
            max_message_size: DEFAULT_MAX_MESSAGE,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl ServerOptions {
    /// The same options with another path.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The same options with other frame and message caps.
    #[must_use]
    pub fn with_max_message_size(mut self, max_frame: usize, max_message: usize) -> Self {
        self.max_frame_size = max_frame;
        self.max_message_size = max_message;
        self
    }
}

fn ws_config(max_frame: usize, max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every message goes to the stream at once; `WsStream` flushes each write.
        .write_buffer_size(0)
        .max_frame_size(Some(max_frame))
        .max_message_size(Some(max_message))
}

/// Runs the server side of the upgrade on `stream` and gives the byte stream.
///
/// Refusals (answered with an HTTP status, then an `Err`): a path other than
/// [`ServerOptions::path`] (404), no [`ServerOptions::subprotocol`] among the offered ones
/// (400), anything that is not a WebSocket upgrade (400), no request within the handshake
/// timeout (`TimedOut`).
#[allow(clippy::result_large_err)] // The callback's error type is tungstenite's.
pub async fn accept<S>(stream: S, opts: &ServerOptions) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let check = |request: &Request, mut response: Response| {
        if request.uri().path() != opts.path {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                "no MQTT endpoint at this path",
            ));
        }
        let offered = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == opts.subprotocol);
        if !offered {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "the mqtt WebSocket subprotocol is required",
            ));
        }
        let echo = HeaderValue::from_str(&opts.subprotocol)
            .map_err(|_| refusal(StatusCode::INTERNAL_SERVER_ERROR, "bad subprotocol"))?;
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", echo);
        Ok(response)
    };
    let config = ws_config(opts.max_frame_size, opts.max_message_size);
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    let ws = tokio::time::timeout(opts.handshake_timeout, upgrade)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "WebSocket upgrade timed out"))?
        .map_err(|e| handshake_error("WebSocket upgrade refused", e))?;
    Ok(WsStream::new(ws, opts.max_frame_size))
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_owned()));
    *response.status_mut() = status;
    response
}

/// The client side's settings.
///
/// ```
/// let opts = mqttx_transport_ws::ClientOptions::default()
///     .with_header("Authorization", "Bearer 123");
/// assert_eq!(opts.subprotocol, "mqtt");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The subprotocol asked for (default `mqtt`); the server must echo it.
    pub subprotocol: String,
    /// Extra request headers (e.g. `Authorization`, `Origin`).
    pub headers: Vec<(String, String)>,
    /// The largest incoming frame payload, and the largest frame written (default
    /// [`DEFAULT_MAX_MESSAGE`]).
    pub max_frame_size: usize,
    /// The largest incoming message (default [`DEFAULT_MAX_MESSAGE`]).
    pub max_message_size: usize,
    /// How long the upgrade may take (default 10 s).
    pub handshake_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            subprotocol: SUBPROTOCOL.to_owned(),
            headers: Vec::new(),
            max_frame_size: DEFAULT_MAX_MESSAGE,
            max_message_size: DEFAULT_MAX_MESSAGE,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl ClientOptions {
    /// Adds a request header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Runs the client side of the upgrade for `url` (`ws://host[:port]/path` or `wss://…`;
/// only its host, port and path are used: TLS, if any, is already on `stream`).
///
/// Errors: `InvalidInput` for a bad URL or header, `ConnectionRefused` with the status for a
/// server that answers the upgrade with an HTTP error (e.g. 404 for a wrong path), and
/// `InvalidData` for a server that does not echo the subprotocol.
pub async fn connect<S>(url: &str, stream: S, opts: &ClientOptions) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let mut request = url
        .into_client_request()
        .map_err(|e| invalid(format!("WebSocket URL {url:?}: {e}")))?;
    let headers = request.headers_mut();
    let protocol = HeaderValue::from_str(&opts.subprotocol)
        .map_err(|_| invalid(format!("subprotocol {:?}", opts.subprotocol)))?;
    headers.insert("Sec-WebSocket-Protocol", protocol);
    for (name, value) in &opts.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("header name {name:?}")))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| invalid(format!("value of header {name}")))?;
        headers.append(name, value);
    }
    let config = ws_config(opts.max_frame_size, opts.max_message_size);
    let upgrade = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    let (ws, response) = tokio::time::timeout(opts.handshake_timeout, upgrade)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "WebSocket upgrade timed out"))?
        .map_err(|e| handshake_error(&format!("WebSocket upgrade to {url} failed"), e))?;
    let echoed = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if echoed != Some(opts.subprotocol.as_str()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the server did not accept the {} subprotocol",
                opts.subprotocol
            ),
        ));
    }
    Ok(WsStream::new(ws, opts.max_frame_size))
}

fn handshake_error(context: &str, e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => io::Error::new(e.kind(), format!("{context}: {e}")),
        tungstenite::Error::Http(response) => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{context}: HTTP {}", response.status()),
        ),
        e => io::Error::new(io::ErrorKind::InvalidData, format!("{context}: {e}")),
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::NotConnected, "WebSocket closed")
        }
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

/// A WebSocket connection as a byte stream: reads return the payloads of binary messages in
/// order, each write sends one binary message (at most the frame cap) and is flushed before
/// it is reported done.
///
/// Reading ends (`Ok(0)`) at a Close from the peer; a text message is an `InvalidData`
/// error; pings are answered with pongs by the WebSocket layer. Shutting the stream down
/// sends a Close and waits for the peer's (discarding data still in flight), for at most 2 s.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    read: Bytes,
    eof: bool,
    /// Whether `poll_shutdown` sent the Close frame.
    close_sent: bool,
    /// When `poll_shutdown` stops waiting for the peer's Close.
    close_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    max_write: usize,
    /// Bytes accepted by the last `poll_write` whose flush has not finished.
    unflushed: Option<usize>,
}

impl<S> WsStream<S> {
    fn new(inner: WebSocketStream<S>, max_write: usize) -> Self {
        Self {
            inner,
            read: Bytes::new(),
            eof: false,
            close_sent: false,
            close_deadline: None,
            max_write: max_write.max(1),
            unflushed: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// The stream under the WebSocket layer.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// Wraps a stream on which the upgrade already happened (e.g. by an HTTP server that
    /// routes `/mqtt` here), as the server side (`Role::Server`) or the client side.
    pub async fn from_upgraded(stream: S, server: bool, max_message: usize) -> Self {
        let role = if server { Role::Server } else { Role::Client };
        let config = ws_config(max_message, max_message);
        let ws = WebSocketStream::from_raw_socket(stream, role, Some(config)).await;
        Self::new(ws, max_message)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                let chunk = self.read.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => self.eof = true,
                Some(Ok(Message::Binary(data))) => self.read = data,
                Some(Ok(Message::Text(_))) => {
                    // [MQTT-6.0.0-1] any other type of data frame: close the connection.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame: MQTT uses binary frames only",
                    )));
                }
                // Pongs are sent by tungstenite; pongs and raw frames carry no data.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A message that was queued but not yet flushed is finished first and reported
        // then: the caller retries with the same bytes, which are not sent twice.
        let n = match self.unflushed {
            Some(n) => n,
            None => {
                if buf.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(io_error)?;
                let n = buf.len().min(self.max_write);
                let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                Pin::new(&mut self.inner)
                    .start_send(message)
                    .map_err(io_error)?;
                self.unflushed = Some(n);
                n
            }
        };
        ready!(Pin::new(&mut self.inner).poll_flush(cx)).map_err(io_error)?;
        self.unflushed = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The closing handshake is bounded: a peer that never answers (or never reads) does
        // not keep the caller waiting longer than CLOSE_WAIT.
        let deadline = self
            .close_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_WAIT)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        if !self.close_sent {
            ready!(Pin::new(&mut self.inner).poll_close(cx)).map_err(io_error)?;
            self.close_sent = true;
        }
        // RFC 6455 §7.1.1: wait for the peer's Close (or the end of the stream), discarding
        // what comes before it, so that the TCP connection is closed with nothing unread and
        // the peer's last frames do not meet a reset. Callers bound this with a timeout.
        while !self.eof {
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => self.eof = true,
                Some(Ok(_)) => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The whole client path from a URL: `ws://host[:port]/path` (port 80 by default) or
/// `wss://…` (443), TCP (through an [`HttpProxy`] if set), TLS for `wss` (SNI and
/// verification for the URL's host, even through a proxy), then the upgrade.
///
/// ```
/// use mqttx_transport_ws::WsConnector;
/// let ws = WsConnector::new("ws://127.0.0.1:8083/mqtt").unwrap();
/// assert_eq!(ws.host(), "127.0.0.1");
/// assert_eq!(ws.port(), 8083);
/// assert!(WsConnector::new("http://example.org/").is_err());
/// ```
#[derive(Clone, Debug)]
pub struct WsConnector {
    url: String,
    host: String,
    port: u16,
    secure: bool,
    tls: Option<TlsConnector>,
    proxy: Option<HttpProxy>,
    options: ClientOptions,
}

impl WsConnector {
    /// A connector for `url`; `InvalidInput` unless it is a `ws://` or `wss://` URL with a
    /// host.
    pub fn new(url: &str) -> io::Result<Self> {
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{url:?} is not a ws:// or wss:// URL with a host"),
            )
        };
        let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(invalid());
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(invalid());
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 address without a port: "[::1]".
            Some((h, _)) if authority.ends_with(']') && h.starts_with('[') => {
                (authority, default_port)
            }
            Some((h, p)) => (h, p.parse().map_err(|_| invalid())?),
            None => (authority, default_port),
        };
        if host.is_empty() || port == 0 {
            return Err(invalid());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            secure,
            tls: None,
            proxy: None,
            options: ClientOptions::default(),
        })
    }

    /// The URL's host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Uses `tls` for `wss://` (default: verification against the platform's roots).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Opens the TCP connection through `proxy`.
    #[must_use]
    pub fn with_proxy(mut self, proxy: HttpProxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Uses these WebSocket options (subprotocol, headers, caps).
    #[must_use]
    pub fn with_options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Opens one connection.
    pub async fn connect(&self) -> io::Result<WsStream<MaybeTlsStream<TcpStream>>> {
        let tcp = match &self.proxy {
            Some(proxy) => proxy.connect(&self.host, self.port).await?,
            None => tcp_connect(&self.host, self.port).await?,
        };
        let stream = if self.secure {
            let tls = match &self.tls {
                Some(tls) => tls.clone(),
                None => TlsConnector::new(&Default::default())
                    .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?,
            };
            MaybeTlsStream::Tls(tls.connect(&self.host, tcp).await?)
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        connect(&self.url, stream, &self.options).await
    }
}

/// TCP to the first address of `host:port` that answers.
async fn tcp_connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for addr in tokio::net::lookup_host((host, port)).await? {
        match mqttx_transport_tcp::connect(addr, TcpOptions::default()).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
