//! The TLS transport over loopback TCP with certificates made at test time: server and client
//! from PEM files, mutual TLS identities, readable refusals, and garbage handshakes.

#[path = "support/pki.rs"]
mod pki;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mqttx_transport_tls::{ClientOptions, ServerOptions, TlsAcceptor, TlsConnector, TlsStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// A server that accepts one connection, echoes two bytes back, and returns the stream.
async fn server(
    acceptor: TlsAcceptor,
) -> (SocketAddr, JoinHandle<io::Result<TlsStream<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        Ok(tls)
    });
    (addr, task)
}

async fn client(
    connector: &TlsConnector,
    name: &str,
    addr: SocketAddr,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await??;
    tls.write_all(&[0xC0, 0x00]).await?;
    let mut buf = [0u8; 2];
    tls.read_exact(&mut buf).await?;
    assert_eq!(buf, [0xC0, 0x00]);
    Ok(tls)
}

#[tokio::test]
async fn server_and_client_from_pem_files() {
    let pki = pki::make();
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(&pki.server_cert, &pki.server_key)).expect("acceptor");
    let connector =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("connector");
    for name in ["localhost", "127.0.0.1"] {
        let (addr, task) = server(acceptor.clone()).await;
        let tls = client(&connector, name, addr).await.expect("handshake");
        let server_id = tls.peer_identity().expect("the server's identity");
        assert_eq!(server_id.common_name.as_deref(), Some("localhost"));
        assert!(
            server_id
                .subject_alt_names
                .contains(&"IP:127.0.0.1".to_owned())
        );
        let accepted = task.await.expect("task").expect("server side");
        assert_eq!(
            accepted.peer_identity(),
            None,
            "no client certificate asked for"
        );
    }
}

#[tokio::test]
async fn mutual_tls_gives_the_client_identity() {
    let pki = pki::make();
    let opts = ServerOptions::new(&pki.server_cert, &pki.server_key).with_client_ca(&pki.ca);
    let acceptor = TlsAcceptor::new(&opts).expect("acceptor");
    let with_cert = TlsConnector::new(
        &ClientOptions::default()
            .with_ca_file(&pki.ca)
            .with_client_cert(&pki.client_cert, &pki.client_key),
    )
    .expect("connector");
    let (addr, task) = server(acceptor.clone()).await;
    client(&with_cert, "localhost", addr)
        .await
        .expect("handshake");
    let id = task
        .await
        .expect("task")
        .expect("server side")
        .peer_identity()
        .expect("client identity");
    assert_eq!(id.common_name.as_deref(), Some("device-1"));
    assert_eq!(id.subject_alt_names, ["DNS:device-1.example"]);
    assert_eq!(id.name(), Some("device-1"));

    // Without a client certificate the server refuses the handshake.
    let without =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("connector");
    let (addr, task) = server(acceptor).await;
    assert!(client(&without, "localhost", addr).await.is_err());
    assert!(task.await.expect("task").is_err());
}

#[tokio::test]
async fn refusals_say_why() {
    let pki = pki::make();
    let good =
        TlsAcceptor::new(&ServerOptions::new(&pki.server_cert, &pki.server_key)).expect("acceptor");
    let expired = TlsAcceptor::new(&ServerOptions::new(&pki.expired_cert, &pki.expired_key))
        .expect("acceptor");
    let trusting =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("connector");
    let other =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.other_ca)).expect("other");
    let cases = [
        (&good, &other, "localhost", "unknown issuer"),
        (
            &good,
            &trusting,
            "elsewhere.example",
            "not valid for the name elsewhere.example",
        ),
        (
            &good,
            &trusting,
            "127.0.0.2",
            "not valid for the name 127.0.0.2",
        ),
        (&expired, &trusting, "localhost", "has expired"),
    ];
    for (acceptor, connector, name, expected) in cases {
        let (addr, task) = server(acceptor.clone()).await;
        let err = client(connector, name, addr).await.expect_err("refused");
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(task.await.expect("task").is_err());
    }
    // The danger option connects to the expired server anyway.
    let (addr, task) = server(expired).await;
    let danger = TlsConnector::new(&ClientOptions::default().danger_accept_invalid_certs(true))
        .expect("connector");
    client(&danger, "localhost", addr)
        .await
        .expect("unverified");
    task.await.expect("task").expect("server side");
}

#[tokio::test]
async fn garbage_and_silence_end_the_handshake() {
    let pki = pki::make();
    let opts = ServerOptions::new(&pki.server_cert, &pki.server_key)
        .with_handshake_timeout(Duration::from_millis(300));
    let acceptor = TlsAcceptor::new(&opts).expect("acceptor");
    // Not a TLS record at all: an MQTT CONNECT sent in clear.
    let (addr, task) = server(acceptor.clone()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .await
        .expect("write");
    let err = tokio::time::timeout(WAIT, task)
        .await
        .expect("ends")
        .expect("task");
    assert!(err.is_err());
    // A client that says nothing is dropped after the handshake timeout.
    let (addr, task) = server(acceptor).await;
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let err = tokio::time::timeout(WAIT, task)
        .await
        .expect("ends")
        .expect("task");
    assert_eq!(err.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
}

#[test]
fn loading_errors_name_the_file() {
    let pki = pki::make();
    let missing = pki.dir.join("missing.pem");
    let err =
        TlsAcceptor::new(&ServerOptions::new(&missing, &pki.server_key)).expect_err("no file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A certificate file given as the key.
    let err = TlsAcceptor::new(&ServerOptions::new(&pki.server_cert, &pki.server_cert))
        .expect_err("no key");
    assert!(err.to_string().contains("no PEM private key"), "{err}");
    // A key that does not belong to the certificate.
    assert!(TlsAcceptor::new(&ServerOptions::new(&pki.server_cert, &pki.client_key)).is_err());
    let err = TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.server_key))
        .expect_err("no certificate");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

#[tokio::test]
async fn tls_1_3_by_default_and_1_2_when_the_client_asks() {
    use mqttx_transport_tls::rustls;
    let pki = pki::make();
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(&pki.server_cert, &pki.server_key)).expect("acceptor");
    let default =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("connector");
    let (addr, task) = server(acceptor.clone()).await;
    let tls = client(&default, "localhost", addr).await.expect("TLS 1.3");
    assert_eq!(
        tls.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    task.await.expect("task").expect("server side");

    // A client that offers only TLS 1.2 (rustls offers nothing older).
    let mut roots = rustls::RootCertStore::empty();
    for cert in mqttx_transport_tls::load_certificates(&pki.ca).expect("CA") {
        roots.add(cert).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls12 = TlsConnector::from_config(std::sync::Arc::new(config));
    let (addr, task) = server(acceptor).await;
    let tls = client(&tls12, "localhost", addr).await.expect("TLS 1.2");
    assert_eq!(
        tls.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let accepted = task.await.expect("task").expect("server side");
    assert_eq!(
        accepted.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn a_tls_1_1_client_hello_is_refused() {
    let pki = pki::make();
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(&pki.server_cert, &pki.server_key)).expect("acceptor");
    let (addr, task) = server(acceptor).await;
    // A TLS 1.1 ClientHello (RFC 4346 §7.4.1.2) without extensions, offering
    // TLS_RSA_WITH_AES_128_CBC_SHA: legacy version 0x0302 and no supported_versions.
    let mut hello = vec![0x03, 0x02];
    hello.extend([0x11; 32]); // random
    hello.extend([0x00, 0x00, 0x02, 0x00, 0x2F, 0x01, 0x00]); // session id, suites, compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&record).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("closed");
    // An alert record, never a ServerHello.
    assert_eq!(answer.first(), Some(&0x15), "{answer:02x?}");
    assert!(task.await.expect("task").is_err());
}

#[tokio::test]
async fn reload_takes_new_files_for_new_handshakes() {
    let pki = pki::make();
    let live = pki.dir.join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    // Start with the expired certificate.
    std::fs::copy(&pki.expired_cert, &cert).expect("copy");
    std::fs::copy(&pki.expired_key, &key).expect("copy");
    let acceptor = TlsAcceptor::new(&ServerOptions::new(&cert, &key)).expect("acceptor");
    let connector =
        TlsConnector::new(&ClientOptions::default().with_ca_file(&pki.ca)).expect("connector");
    let (addr, task) = server(acceptor.clone()).await;
    let err = client(&connector, "localhost", addr)
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
    let _ = task.await;

    // A broken file is refused and the old certificate stays.
    std::fs::write(&key, "not a key").expect("write");
    assert!(acceptor.reload().is_err());
    // Renewed files: a clone of the acceptor sees them too.
    std::fs::copy(&pki.server_cert, &cert).expect("copy");
    std::fs::copy(&pki.server_key, &key).expect("copy");
    acceptor.clone().reload().expect("reload");
    let (addr, task) = server(acceptor).await;
    client(&connector, "localhost", addr)
        .await
        .expect("renewed certificate");
    task.await.expect("task").expect("server side");
}
