//! The WebSocket transport over loopback TCP: the upgrade's checks, frames as a byte stream,
//! and hostile frames, with tungstenite as the peer where raw frames are needed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mqttx_transport_ws::{ClientOptions, ServerOptions, WsConnector, WsStream, accept, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

/// A server that upgrades one connection and returns the stream (or the refusal).
async fn server(opts: ServerOptions) -> (SocketAddr, JoinHandle<io::Result<WsStream<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        accept(tcp, &opts).await
    });
    (addr, task)
}

/// A raw tungstenite client offering `protocol` on `path`.
async fn raw_client(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
    }
    let tcp = TcpStream::connect(addr).await?;
    Ok(tokio_tungstenite::client_async(request, tcp).await?.0)
}

async fn read_n(ws: &mut WsStream<TcpStream>, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, ws.read_exact(&mut buf)).await??;
    Ok(buf)
}

#[tokio::test]
async fn upgrade_checks_path_and_subprotocol() {
    // The subprotocol is echoed; "mqttv3.1" offered first does not matter.
    let (addr, task) = server(ServerOptions::default()).await;
    let ws = raw_client(addr, "/mqtt", Some("mqttv3.1, mqtt"))
        .await
        .expect("upgrade");
    drop(ws);
    task.await.expect("task").expect("accepted");

    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    let (addr, task) = server(ServerOptions::default()).await;
    let err = raw_client(addr, "/mqtt", None).await.expect_err("refused");
    assert_eq!(status(err), 400);
    assert!(task.await.expect("task").is_err());

    let (addr, task) = server(ServerOptions::default()).await;
    let err = raw_client(addr, "/other", Some("mqtt"))
        .await
        .expect_err("refused");
    assert_eq!(status(err), 404);
    assert!(task.await.expect("task").is_err());

    // Another path is configurable, and our client reports the status.
    let (addr, task) = server(ServerOptions::default().with_path("/ws")).await;
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let err = connect(&format!("ws://{addr}/mqtt"), tcp, &ClientOptions::default())
        .await
        .expect_err("404");
    assert!(err.to_string().contains("404"), "{err}");
    assert!(task.await.expect("task").is_err());

    // Not HTTP at all: an MQTT CONNECT sent to the WebSocket port.
    let (addr, task) = server(ServerOptions::default()).await;
    let mut tcp = TcpStream::connect(addr).await.expect("tcp");
    tcp.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\r\n\r\n")
        .await
        .expect("write");
    assert!(
        tokio::time::timeout(WAIT, task)
            .await
            .expect("ends")
            .expect("task")
            .is_err()
    );
}

#[tokio::test]
async fn frames_become_one_byte_stream() {
    let (addr, task) = server(ServerOptions::default()).await;
    let mut peer = raw_client(addr, "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    let mut ws = task.await.expect("task").expect("accepted");
    // A PINGREQ split over two frames, then two packets packed into one frame.
    peer.send(Message::binary(vec![0xC0])).await.expect("send");
    peer.send(Message::Ping(vec![1, 2].into()))
        .await
        .expect("ping");
    peer.send(Message::binary(vec![0x00])).await.expect("send");
    peer.send(Message::binary(vec![0xC0, 0x00, 0xE0, 0x00]))
        .await
        .expect("send");
    assert_eq!(
        read_n(&mut ws, 6).await.expect("read"),
        [0xC0, 0x00, 0xC0, 0x00, 0xE0, 0x00]
    );
    // Each write is one binary frame, sent without an explicit flush; the ping was answered.
    ws.write_all(&[0xD0, 0x00]).await.expect("write");
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(WAIT, peer.next())
            .await
            .expect("frame")
        {
            Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], [1, 2]),
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, [0xD0, 0x00]);
    // A Close ends the byte stream.
    peer.close(None).await.expect("close");
    let mut buf = [0u8; 8];
    assert_eq!(
        tokio::time::timeout(WAIT, ws.read(&mut buf))
            .await
            .expect("eof")
            .expect("ok"),
        0
    );
}

#[tokio::test]
async fn text_and_oversized_frames_are_errors() {
    let (addr, task) = server(ServerOptions::default()).await;
    let mut peer = raw_client(addr, "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    let mut ws = task.await.expect("task").expect("accepted");
    peer.send(Message::text("hello")).await.expect("send");
    let err = read_n(&mut ws, 1).await.expect_err("text frame");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    let (addr, task) = server(ServerOptions::default().with_max_message_size(1024, 1024)).await;
    let mut peer = raw_client(addr, "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    let mut ws = task.await.expect("task").expect("accepted");
    peer.send(Message::binary(vec![0u8; 1000]))
        .await
        .expect("send");
    assert_eq!(
        read_n(&mut ws, 1000).await.expect("under the cap").len(),
        1000
    );
    let _ = peer.send(Message::binary(vec![0u8; 2000])).await;
    assert!(
        read_n(&mut ws, 1).await.is_err(),
        "a frame over the cap ends the stream"
    );
}

#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's callback type.
async fn connector_sends_headers_and_subprotocol() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        let check = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
            let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_owned());
            *seen2.lock().expect("lock") = auth;
            resp.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("value"));
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, check)
            .await
            .expect("upgrade");
        let msg = ws.next().await.expect("a message").expect("ok");
        let auth = seen.lock().expect("lock").clone();
        (auth, msg)
    });
    let connector = WsConnector::new(&format!("ws://{addr}/mqtt"))
        .expect("url")
        .with_options(ClientOptions::default().with_header("Authorization", "Bearer t0ken"));
    let mut ws = connector.connect().await.expect("connect");
    ws.write_all(&[0xC0, 0x00]).await.expect("write");
    let (auth, msg) = tokio::time::timeout(WAIT, task)
        .await
        .expect("done")
        .expect("task");
    assert_eq!(auth.as_deref(), Some("Bearer t0ken"));
    assert_eq!(msg, Message::binary(vec![0xC0, 0x00]));
}

#[test]
fn urls() {
    for (url, host, port) in [
        ("ws://localhost/mqtt", "localhost", 80),
        ("wss://broker.example/mqtt", "broker.example", 443),
        ("wss://broker.example:8884/", "broker.example", 8884),
        ("ws://[::1]:8083/mqtt", "::1", 8083),
        ("ws://[::1]/mqtt", "::1", 80),
    ] {
        let c = WsConnector::new(url).expect(url);
        assert_eq!((c.host(), c.port()), (host, port), "{url}");
    }
    for bad in [
        "mqtt://h/",
        "ws://",
        "ws://:80/",
        "ws://h:x/",
        "ws://u@h/",
        "ws://h:0/",
    ] {
        assert!(WsConnector::new(bad).is_err(), "{bad}");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_close_reply_but_not_forever() {
    // In memory, with tokio's paused clock: the peer upgrades and then never reads again.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move { accept(a, &ServerOptions::default()).await });
    let mut request = "ws://localhost/mqtt"
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
    let (_silent_peer, _) = tokio_tungstenite::client_async(request, b)
        .await
        .expect("upgrade");
    let mut ws = server.await.expect("task").expect("accepted");
    let start = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, ws.shutdown())
        .await
        .expect("bounded")
        .expect("ok");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn streams_upgraded_elsewhere_carry_bytes_both_ways() {
    // As after an HTTP server's own upgrade: both sides wrap a raw stream.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut server = WsStream::from_upgraded(a, true, 1024).await;
    let mut client = WsStream::from_upgraded(b, false, 1024).await;
    client.write_all(&[0x10; 3000]).await.expect("write"); // three frames of at most 1 KiB
    let mut buf = vec![0u8; 3000];
    tokio::time::timeout(WAIT, server.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(buf, [0x10; 3000]);
    server
        .write_all(&[0x20, 0x02, 0x00, 0x00])
        .await
        .expect("write");
    let mut ack = [0u8; 4];
    tokio::time::timeout(WAIT, client.read_exact(&mut ack))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
}
