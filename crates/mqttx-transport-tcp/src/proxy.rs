//! [`HttpProxy`]: a TCP tunnel through an HTTP proxy (`CONNECT host:port`, RFC 9110 §9.3.6).

use std::fmt;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TcpOptions;

/// The most bytes of a proxy's response header read before giving up.
const MAX_RESPONSE: usize = 8 * 1024;

/// An HTTP proxy that opens tunnels with `CONNECT`, optionally with Basic authentication.
///
/// What runs through the tunnel (MQTT, TLS, WebSocket) is the caller's: TLS verification
/// and SNI stay aimed at the broker, since the proxy only relays bytes.
///
/// ```
/// use mqttx_transport_tcp::HttpProxy;
/// let proxy = HttpProxy::new("proxy.example", 3128).with_basic_auth("user", "secret");
/// assert_eq!(proxy.host(), "proxy.example");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HttpProxy {
    host: String,
    port: u16,
    /// `user:password`, Base64-encoded for the Proxy-Authorization header.
    credentials: Option<String>,
    options: TcpOptions,
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

impl HttpProxy {
    /// A proxy at `host:port`, without authentication.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            credentials: None,
            options: TcpOptions::default(),
        }
    }

    /// Authenticates with HTTP Basic authentication (`Proxy-Authorization: Basic …`).
    #[must_use]
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some(base64(format!("{user}:{password}").as_bytes()));
        self
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connects to the proxy and asks it for a tunnel to `host:port`. Returns the TCP stream
    /// once the proxy answered 2xx; from then on it carries the target's bytes.
    ///
    /// Errors: `InvalidInput` for a target that cannot be written in a request line,
    /// `PermissionDenied` for 407 (authentication required or refused), `ConnectionRefused`
    /// for any other status (the status line is in the message), `InvalidData` for a
    /// malformed or oversized (over 8 KiB) response.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let target = authority(host, port)?;
        let mut stream = self.open().await?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = &self.credentials {
            request.push_str(&format!("Proxy-Authorization: Basic {credentials}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let head = read_head(&mut stream).await?;
        check_status(&head, &target)?;
        Ok(stream)
    }

    async fn open(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "proxy resolved to no address");
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match crate::connect(addr, self.options).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(io::Error::new(
            last.kind(),
            format!("proxy {}:{}: {last}", self.host, self.port),
        ))
    }
}

/// `host:port` for a request line, IPv6 addresses in brackets; refuses anything that could
/// change the request's meaning.
fn authority(host: &str, port: u16) -> io::Result<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ok = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !ok || port == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid proxy target {host:?}:{port}"),
        ));
    }
    Ok(if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    })
}

/// Reads the response header, byte by byte so that nothing of the tunnel is taken.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("proxy response header longer than {MAX_RESPONSE} bytes"),
            ));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "proxy closed the connection before answering CONNECT",
            ));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

fn check_status(head: &[u8], target: &str) -> io::Result<()> {
    let malformed = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed proxy response (no HTTP/1.x status line)",
        )
    };
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(malformed)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| malformed())?;
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(malformed());
    }
    let status: u16 = code.parse().map_err(|_| malformed())?;
    match status {
        200..=299 => Ok(()),
        407 => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("proxy refused CONNECT {target}: {line} (check the proxy credentials)"),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("proxy refused CONNECT {target}: {line}"),
        )),
    }
}

/// Standard Base64 with padding (RFC 4648 §4), for the Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 0x3F]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        // RFC 4648 §10.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        // RFC 7617 §2's example credentials.
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn targets_are_checked() {
        assert_eq!(
            authority("broker.example", 8883).unwrap(),
            "broker.example:8883"
        );
        assert_eq!(authority("::1", 1883).unwrap(), "[::1]:1883");
        assert_eq!(authority("[::1]", 1883).unwrap(), "[::1]:1883");
        for bad in ["", "a b", "a\r\nX-Injected: 1", "user@host", "host/path"] {
            let err = authority(bad, 1883).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(authority("host", 0).is_err());
    }

    #[test]
    fn status_lines() {
        let ok = |s: &str| check_status(s.as_bytes(), "t:1");
        assert!(ok("HTTP/1.1 200 Connection established\r\n\r\n").is_ok());
        assert!(ok("HTTP/1.0 200\r\n\r\n").is_ok());
        let kind = |s: &str| ok(s).unwrap_err().kind();
        assert_eq!(
            kind("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind("HTTP/1.1 403 Forbidden\r\n\r\n"),
            io::ErrorKind::ConnectionRefused
        );
        for bad in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert_eq!(kind(bad), io::ErrorKind::InvalidData, "{bad:?}");
        }
        let err = ok("HTTP/1.1 502 Bad Gateway\r\n\r\n").unwrap_err();
        assert!(err.to_string().contains("502 Bad Gateway"), "{err}");
    }

    /// A proxy that answers every CONNECT with `answer` and closes.
    async fn fake_proxy(answer: Vec<u8>) -> HttpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&answer).await;
        });
        HttpProxy::new("127.0.0.1", port)
    }

    #[tokio::test]
    async fn bad_proxy_answers_are_clear_errors() {
        let cases = [
            (
                vec![b'X'; 10_000],
                io::ErrorKind::InvalidData,
                "longer than 8192",
            ),
            (
                b"SSH-2.0-OpenSSH_9\r\n\r\n".to_vec(),
                io::ErrorKind::InvalidData,
                "malformed",
            ),
            (
                b"HTTP/1.1 200 OK\r\n".to_vec(),
                io::ErrorKind::UnexpectedEof,
                "closed",
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec(),
                io::ErrorKind::ConnectionRefused,
                "403",
            ),
        ];
        for (answer, kind, text) in cases {
            let proxy = fake_proxy(answer).await;
            let err = proxy.connect("broker.example", 1883).await.unwrap_err();
            assert_eq!(err.kind(), kind, "{err}");
            assert!(err.to_string().contains(text), "{err}");
        }
    }
}
