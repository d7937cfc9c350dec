//! mqttx-transport-tls turns byte streams into TLS byte streams for mqttx: a [`TlsAcceptor`]
//! for servers (certificate chain and key from PEM files, optional client certificates) and a
//! [`TlsConnector`] for clients (verification on by default, SNI, client certificates).
//!
//! It is a thin adapter and knows nothing about MQTT: it takes any `AsyncRead + AsyncWrite`
//! stream (usually a TCP stream from `mqttx-transport-tcp`) and gives a [`TlsStream`], which
//! the broker and the client take like any other stream. A verified client certificate
//! becomes a [`PeerIdentity`] (Common Name and Subject Alternative Names), which the broker
//! hands to its `Handler::on_connect`.
//!
//! TLS is rustls (through tokio-rustls), the Rust ecosystem's standard TLS library, with the
//! `ring` crypto provider, so that nothing needs OpenSSL, cmake or a C toolchain beyond what
//! `ring` builds. Only TLS 1.3 and TLS 1.2 are offered. The platform's root certificates come
//! from rustls-native-certs, and PEM files are read by rustls-pki-types.
//!
//! Writes are flushed before `poll_write` returns, so a caller that never calls `flush` (the
//! broker and client drive TCP that way) still sends every byte.
//!
//! # Layout
//!
//! - [`ServerOptions`] and [`TlsAcceptor`]: the server side; [`TlsAcceptor::accept`] gives a
//!   [`TlsStream`] whose [`TlsStream::peer_identity`] is the verified client identity, and
//!   [`TlsAcceptor::reload`] takes renewed certificate files without a restart.
//! - [`ClientOptions`] and [`TlsConnector`]: the client side, with readable handshake errors
//!   (unknown issuer, name mismatch, expired certificate).
//! - [`PeerIdentity`]: who a verified certificate names.
//! - [`MaybeTlsStream`]: TLS or not, decided at run time.
//! - [`Error`]: what went wrong while loading certificates and keys.
//!
//! # Getting started
//!
//! A server and a client on loopback, with a certificate made for the occasion (in real use
//! the files come from your CA; `docs/transports.md` shows how to make a test CA):
//!
//! ```
//! use std::sync::{Arc, RwLock};
//! use mqttx_transport_tls::{TlsAcceptor, TlsConnector, rustls};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
//! # let (cert_der, key_der) = (cert.cert.der().clone(), cert.signing_key.serialize_der());
//! # let provider = Arc::new(rustls::crypto::ring::default_provider());
//! # let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
//! #     .with_safe_default_protocol_versions()?
//! #     .with_no_client_auth()
//! #     .with_single_cert(vec![cert_der.clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()))?;
//! # let mut roots = rustls::RootCertStore::empty();
//! # roots.add(cert_der)?;
//! # let client_config = rustls::ClientConfig::builder_with_provider(provider)
//! #     .with_safe_default_protocol_versions()?
//! #     .with_root_certificates(roots)
//! #     .with_no_client_auth();
//! // Usually `TlsAcceptor::new(&ServerOptions::new("server.pem", "server.key"))?`.
//! let acceptor = TlsAcceptor::from_config(Arc::new(server_config));
//! // Usually `TlsConnector::new(&ClientOptions::default().with_ca_file("ca.pem"))?`.
//! let connector = TlsConnector::from_config(Arc::new(client_config));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut tls = acceptor.accept(tcp).await?;
//!     let mut buf = [0u8; 2];
//!     tls.read_exact(&mut buf).await?;
//!     std::io::Result::Ok(buf)
//! });
//! let tcp = tokio::net::TcpStream::connect(addr).await?;
//! let mut tls = connector.connect("localhost", tcp).await?;
//! tls.write_all(&[0xC0, 0x00]).await?; // an MQTT PINGREQ, as far as TLS cares
//! assert_eq!(server.await??, [0xC0, 0x00]);
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! None. The crypto provider is always `ring`.

mod identity;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use identity::PeerIdentity;
/// The rustls crate this one is built on, for [`TlsAcceptor::from_config`] and
/// [`TlsConnector::from_config`].
pub use rustls;

/// The TLS versions offered: 1.3 and 1.2.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The default time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An error while loading certificates or keys, or building a TLS configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A PEM file could not be read or parsed.
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// A key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM).
    NoPrivateKey(PathBuf),
    /// Neither a CA file nor the platform gave any root certificate.
    NoRootCertificates,
    /// rustls refused the configuration (a key that does not match the certificate, an
    /// unusable CA certificate…).
    Tls(rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    ClientVerifier(String),
    /// [`TlsAcceptor::reload`] on an acceptor made from a configuration, not from files.
    NotReloadable,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem { path, source } => write!(f, "{}: {source}", path.display()),
            Self::NoCertificate(path) => {
                write!(f, "{}: no PEM certificate in the file", path.display())
            }
            Self::NoPrivateKey(path) => {
                write!(f, "{}: no PEM private key in the file", path.display())
            }
            Self::NoRootCertificates => f.write_str("no root certificate to verify peers with"),
            Self::Tls(e) => write!(f, "TLS configuration refused: {e}"),
            Self::ClientVerifier(e) => write!(f, "client certificate verifier: {e}"),
            Self::NotReloadable => f.write_str("this acceptor was not made from files"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pem { source, .. } => Some(source),
            Self::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Self::Tls(e)
    }
}

/// Reads every certificate of a PEM file (a chain: end entity first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = |source| Error::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    match PrivateKeyDer::from_pem_file(path) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            Err(Error::NoPrivateKey(path.to_owned()))
        }
        Err(source) => Err(Error::Pem {
            path: path.to_owned(),
            source,
        }),
    }
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certificates(path)? {
                roots.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "platform root certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::NoRootCertificates);
            }
        }
    }
    Ok(roots)
}

/// What a [`TlsAcceptor`] needs: the server's certificate chain and key, and for mutual TLS
/// the CA that signs client certificates.
///
/// ```
/// use mqttx_transport_tls::ServerOptions;
/// let opts = ServerOptions::new("server.pem", "server.key").with_client_ca("ca.pem");
/// assert!(opts.client_cert_required);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The certificate chain, PEM, end entity first.
    pub cert_chain: PathBuf,
    /// The private key of the end-entity certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The CA certificates (PEM) that client certificates are verified against; `None`: no
    /// client certificates are asked for.
    pub client_ca: Option<PathBuf>,
    /// With a `client_ca`: whether a client without a certificate is refused (default
    /// `true`). With `false`, a client may connect without one and has no identity.
    pub client_cert_required: bool,
    /// How long the handshake may take (default 10 s).
    pub handshake_timeout: Duration,
}

impl ServerOptions {
    /// A server with this certificate chain and key, without client certificates.
    pub fn new(cert_chain: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        Self {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
            client_ca: None,
            client_cert_required: true,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Asks clients for a certificate signed by a CA of `path` (mutual TLS).
    #[must_use]
    pub fn with_client_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(path.into());
        self
    }

    /// With a client CA, whether a client certificate is required.
    #[must_use]
    pub fn with_client_cert_required(mut self, required: bool) -> Self {
        self.client_cert_required = required;
        self
    }

    /// Another handshake timeout.
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// The server side: turns accepted streams into [`TlsStream`]s. Cheap to clone; clones share
/// the configuration, so [`reload`](Self::reload) on one reaches them all.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    /// The files to read again on [`reload`](Self::reload); `None` for [`from_config`](Self::from_config).
    options: Option<Arc<ServerOptions>>,
    timeout: Duration,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads the files of `opts` and builds the acceptor (TLS 1.3 and 1.2, `ring`).
    pub fn new(opts: &ServerOptions) -> Result<Self, Error> {
        Ok(Self {
            config: Arc::new(RwLock::new(Self::load(opts)?)),
            options: Some(Arc::new(opts.clone())),
            timeout: opts.handshake_timeout,
        })
    }

    /// Reads the certificate, key and client CA files again and uses them for the
    /// handshakes that start from now on; connections already open keep theirs. On an error
    /// (a missing file, a key that does not match) nothing changes.
    ///
    /// Errors with [`Error::NotReloadable`] for an acceptor made by
    /// [`from_config`](Self::from_config).
    pub fn reload(&self) -> Result<(), Error> {
        let options = self.options.as_ref().ok_or(Error::NotReloadable)?;
        let config = Self::load(options)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn load(opts: &ServerOptions) -> Result<Arc<rustls::ServerConfig>, Error> {
        let chain = load_certificates(&opts.cert_chain)?;
        let key = load_private_key(&opts.private_key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?;
        let builder = match &opts.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(root_store(Some(ca))?);
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = if opts.client_cert_required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| Error::ClientVerifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        Ok(Arc::new(builder.with_single_cert(chain, key)?))
    }

    /// An acceptor from a rustls configuration built by the caller (10 s handshake timeout).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            config: Arc::new(RwLock::new(config)),
            options: None,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Runs the server handshake on `stream`, within the handshake timeout.
    ///
    /// A client that sends garbage, presents no (or an unverifiable) certificate when one is
    /// required, or stalls, gets an `Err`; the caller drops the stream.
    pub async fn accept<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accepted = tokio::time::timeout(self.timeout, acceptor.accept(stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?;
        Ok(TlsStream::new(tokio_rustls::TlsStream::Server(accepted?)))
    }
}

/// What a [`TlsConnector`] needs. The default verifies the server against the platform's
/// root certificates and presents no client certificate.
///
/// ```
/// use mqttx_transport_tls::ClientOptions;
/// let opts = ClientOptions::default()
///     .with_ca_file("ca.pem")
///     .with_client_cert("client.pem", "client.key");
/// assert!(!opts.danger_accept_invalid_certs);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// CA certificates (PEM) to verify the server with; `None`: the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) for mutual TLS, with [`client_key`](Self::client_key).
    pub client_cert: Option<PathBuf>,
    /// The private key of [`client_cert`](Self::client_cert) (PEM).
    pub client_key: Option<PathBuf>,
    /// Accepts any server certificate, valid or not. The connection is then encrypted but
    /// not authenticated: anyone on the path can read and change it. For tests only; a
    /// warning is logged when a connector is built with it.
    pub danger_accept_invalid_certs: bool,
    /// How long the handshake may take (`None`: 10 s).
    pub handshake_timeout: Option<Duration>,
}

impl ClientOptions {
    /// Verifies servers against the CA certificates of `path` instead of the platform's.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this certificate chain and key (mutual TLS).
    #[must_use]
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// Skips server verification (see [`danger_accept_invalid_certs`](Self::danger_accept_invalid_certs)).
    #[must_use]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
        self
    }
}

/// The client side: opens TLS over a connected stream, verifying the server. Cheap to
/// clone.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Builds a connector from `opts` (TLS 1.3 and 1.2, `ring`).
    pub fn new(opts: &ClientOptions) -> Result<Self, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?;
        let builder = if opts.danger_accept_invalid_certs {
            tracing::warn!(
                "TLS server certificates are NOT verified (danger_accept_invalid_certs): \
                 the connection can be read and changed by anyone on the path"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else {
            builder.with_root_certificates(root_store(opts.ca_file.as_deref())?)
        };
        let config = match (&opts.client_cert, &opts.client_key) {
            (Some(cert), Some(key)) => {
                builder.with_client_auth_cert(load_certificates(cert)?, load_private_key(key)?)?
            }
            (Some(cert), None) => return Err(Error::NoPrivateKey(cert.clone())),
            _ => builder.with_no_client_auth(),
        };
        Ok(Self::from_config(Arc::new(config)).with_timeout(opts.handshake_timeout))
    }

    fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout.unwrap_or(HANDSHAKE_TIMEOUT);
        self
    }

    /// A connector from a rustls configuration built by the caller (10 s handshake timeout).
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            inner: tokio_rustls::TlsConnector::from(config),
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Runs the client handshake on `stream` for `server_name` (a DNS name, sent as SNI, or
    /// an IP address, which the certificate must name as an IP SAN).
    ///
    /// Handshake failures are `io::Error`s whose message says what was wrong in plain words
    /// (unknown issuer, a certificate for another name, an expired certificate).
    pub async fn connect<S>(&self, server_name: &str, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // "[::1]" as in URLs is the IP address ::1.
        let bare = server_name
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(server_name);
        let name = ServerName::try_from(bare.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is neither a DNS name nor an IP address"),
            )
        })?;
        let handshake = self.inner.connect(name, stream);
        match tokio::time::timeout(self.timeout, handshake).await {
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {server_name} timed out"),
            )),
            Ok(Err(e)) => Err(explain(server_name, e)),
            Ok(Ok(s)) => Ok(TlsStream::new(tokio_rustls::TlsStream::Client(s))),
        }
    }
}

/// Gives a handshake error a message a person can act on.
fn explain(server_name: &str, e: io::Error) -> io::Error {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return e;
    };
    let why = match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA (unknown issuer; \
                 give the CA file that signed it)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for the name {server_name}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".to_owned()
            }
            other => format!("the server's certificate is invalid ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the handshake ({alert:?})")
        }
        other => other.to_string(),
    };
    io::Error::new(
        e.kind(),
        format!("TLS handshake with {server_name} failed: {why}"),
    )
}

/// The verifier of `danger_accept_invalid_certs`: any certificate, but handshake signatures
/// are still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS byte stream, server or client side.
///
/// Every write is flushed before `poll_write` reports it done (TLS records are not held
/// back), so callers that never call `flush` work as they do over TCP.
#[derive(Debug)]
pub struct TlsStream<S> {
    inner: tokio_rustls::TlsStream<S>,
    /// Bytes accepted by the last `poll_write` whose flush has not finished.
    unflushed: Option<usize>,
}

impl<S> TlsStream<S> {
    fn new(inner: tokio_rustls::TlsStream<S>) -> Self {
        Self {
            inner,
            unflushed: None,
        }
    }

    /// The stream under TLS.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref().0
    }

    /// The identity of the peer's verified certificate: the client's on a server with a
    /// client CA, the server's on a client. `None` when the peer sent no certificate (or,
    /// with `danger_accept_invalid_certs`, an unverified one is still returned).
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        let certs = self.inner.get_ref().1.peer_certificates()?;
        certs.first().map(|c| PeerIdentity::from_der(c))
    }

    /// The negotiated TLS version (`TLSv1_3` or `TLSv1_2`).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.inner.get_ref().1.protocol_version()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A write that was accepted but not yet flushed is finished first, and reported
        // then: the caller retries with the same bytes, which are not taken twice.
        let n = match self.unflushed {
            Some(n) => n,
            None => {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
                self.unflushed = Some(n);
                n
            }
        };
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.unflushed = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that is TLS or not, decided at run time (`mqtt://` or `mqtts://`, `ws://` or
/// `wss://`).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One per connection; boxing would cost every read.
pub enum MaybeTlsStream<S> {
    /// No TLS.
    Plain(S),
    /// TLS over `S`.
    Tls(TlsStream<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
