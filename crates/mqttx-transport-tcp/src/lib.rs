//! mqttx-transport-tcp produces TCP byte streams for mqttx: a listener that accepts
//! [`tokio::net::TcpStream`]s and a connector that opens them, both with the socket options an
//! MQTT server or client wants (TCP_NODELAY, a listen backlog, address reuse).
//!
//! It is a thin adapter and knows nothing about MQTT: no packet, no session, no broker type
//! appears here. The broker and the client accept any `AsyncRead + AsyncWrite + Unpin + Send`
//! stream, so this crate is one way to get such a stream, and TLS or WebSocket transports are
//! others. The sockets are configured through [`tokio::net::TcpSocket`], without `socket2`.
//!
//! # Layout
//!
//! - [`TcpOptions`]: the socket options, with defaults fit for MQTT (no Nagle delay, a backlog
//!   of 1024, `SO_REUSEADDR` on the listener).
//! - [`TcpListener`]: [`TcpListener::bind`] and [`TcpListener::accept`].
//! - [`connect`]: an outgoing connection with the same options.
//! - [`HttpProxy`]: a tunnel through an HTTP proxy (`CONNECT host:port`, optional Basic
//!   authentication), for clients behind one; TLS and WebSocket run through it unchanged.
//!
//! # Getting started
//!
//! ```
//! use mqttx_transport_tcp::{TcpListener, TcpOptions, connect};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // Port 0: the operating system picks a free port.
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap(), TcpOptions::default()).await?;
//! let addr = listener.local_addr()?;
//!
//! let mut client = connect(addr, TcpOptions::default()).await?;
//! let (mut server, _peer) = listener.accept().await?;
//! assert!(server.nodelay()?);
//!
//! client.write_all(&[0xC0, 0x00]).await?; // the bytes of an MQTT PINGREQ, as far as TCP cares
//! let mut buf = [0u8; 2];
//! server.read_exact(&mut buf).await?;
//! assert_eq!(buf, [0xC0, 0x00]);
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! None.

mod proxy;

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

pub use proxy::HttpProxy;

/// Socket options for [`TcpListener::bind`] and [`connect`].
///
/// ```
/// let opts = mqttx_transport_tcp::TcpOptions::default().with_backlog(128);
/// assert!(opts.nodelay);
/// assert_eq!(opts.backlog, 128);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpOptions {
    /// Sets TCP_NODELAY on every stream (default `true`): MQTT packets are small and an
    /// acknowledgement should not wait for Nagle's algorithm.
    pub nodelay: bool,
    /// The listen backlog (default 1024): connections the kernel queues before `accept`.
    pub backlog: u32,
    /// Sets `SO_REUSEADDR` on the listening socket (default `true`), so a restarted server can
    /// bind its port while old connections are in TIME_WAIT.
    pub reuse_address: bool,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            nodelay: true,
            backlog: 1024,
            reuse_address: true,
        }
    }
}

impl TcpOptions {
    /// The same options with another `nodelay`.
    #[must_use]
    pub const fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// The same options with another listen backlog.
    #[must_use]
    pub const fn with_backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// The same options with another `reuse_address`.
    #[must_use]
    pub const fn with_reuse_address(mut self, reuse_address: bool) -> Self {
        self.reuse_address = reuse_address;
        self
    }
}

/// A TCP listener whose accepted streams carry the configured options.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    opts: TcpOptions,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port) and starts listening.
    ///
    /// Must be called inside a tokio runtime with I/O enabled.
    pub async fn bind(addr: SocketAddr, opts: TcpOptions) -> io::Result<Self> {
        let socket = new_socket(addr)?;
        if opts.reuse_address {
            socket.set_reuseaddr(true)?;
        }
        socket.bind(addr)?;
        let inner = socket.listen(opts.backlog)?;
        Ok(Self { inner, opts })
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Accepts the next connection and applies the stream options to it.
    ///
    /// Cancel safe: if the future is dropped, no connection is lost.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        if self.opts.nodelay {
            stream.set_nodelay(true)?;
        }
        Ok((stream, peer))
    }

    /// The underlying tokio listener.
    pub fn into_inner(self) -> tokio::net::TcpListener {
        self.inner
    }
}

/// Opens a TCP connection to `addr` with the given options.
pub async fn connect(addr: SocketAddr, opts: TcpOptions) -> io::Result<TcpStream> {
    let socket = new_socket(addr)?;
    let stream = socket.connect(addr).await?;
    if opts.nodelay {
        stream.set_nodelay(true)?;
    }
    Ok(stream)
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_reach_both_ends() -> io::Result<()> {
        let opts = TcpOptions::default().with_nodelay(false);
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), opts).await?;
        let addr = listener.local_addr()?;
        assert_ne!(addr.port(), 0);
        let client = connect(addr, opts).await?;
        let (server, peer) = listener.accept().await?;
        assert!(!client.nodelay()?);
        assert!(!server.nodelay()?);
        assert_eq!(peer, client.local_addr()?);
        Ok(())
    }

    #[tokio::test]
    async fn nodelay_is_the_default() -> io::Result<()> {
        let listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), TcpOptions::default()).await?;
        let client = connect(listener.local_addr()?, TcpOptions::default()).await?;
        let (server, _) = listener.accept().await?;
        assert!(client.nodelay()?);
        assert!(server.nodelay()?);
        Ok(())
    }
}
