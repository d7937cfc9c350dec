//! The client against scripted servers on loopback: silent servers, refusals. Time is paused
//! where the test waits on the client's timers.

use std::time::Duration;

use mqttx_client::codec::{ProtocolVersion, QoS, ReasonCode};
use mqttx_client::{Client, ConnectOptions, Error, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Bounds every wait (in paused time it advances instantly, so it only catches hangs).
const WAIT: Duration = Duration::from_secs(120);

/// MQTT 5.0 CONNACK: no session, `code`, no properties.
fn connack(code: u8) -> [u8; 5] {
    [0x20, 0x03, 0x00, code, 0x00]
}

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

/// Reads one CONNECT (whatever arrives first) and answers `reply`.
async fn answer(stream: &mut TcpStream, reply: &[u8]) {
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read CONNECT");
    assert!(n > 0 && buf[0] == 0x10, "a CONNECT first");
    stream.write_all(reply).await.expect("write");
}

fn options(port: u16, keep_alive: u64) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port, "raw")
        .protocol(ProtocolVersion::V5)
        .keep_alive(Duration::from_secs(keep_alive))
}

#[tokio::test(start_paused = true)]
async fn keepalive_timeout_against_a_server_that_stops_answering() {
    // [MQTT-3.1.2-20] PINGREQ when idle; no PINGRESP within the keep alive → connection lost.
    let (l, port) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x00)).await;
        // Silent from here on: reads and never answers.
        let mut buf = [0u8; 64];
        let mut seen = Vec::new();
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let mut o = options(port, 5);
    o.reconnect = false;
    let (_client, mut events) = timeout(WAIT, Client::connect(o))
        .await
        .expect("in time")
        .expect("connects");
    let mut got = Vec::new();
    timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            got.push(e);
        }
    })
    .await
    .expect("events end");
    assert_eq!(
        got,
        [
            Event::Connected {
                session_present: false
            },
            Event::Disconnected {
                reason_code: ReasonCode::KEEP_ALIVE_TIMEOUT
            },
            Event::Stopped(ReasonCode::UNSPECIFIED_ERROR),
        ]
    );
    let seen = timeout(WAIT, server)
        .await
        .expect("in time")
        .expect("server task");
    assert_eq!(
        seen,
        [0xC0, 0x00],
        "exactly one PINGREQ, then the client closed"
    );
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_covers_a_server_that_never_sends_connack() {
    let (l, port) = listener().await;
    let _server = tokio::spawn(async move {
        let (s, _) = l.accept().await.expect("accept");
        std::future::pending::<()>().await;
        drop(s);
    });
    let mut o = options(port, 60);
    o.connect_timeout = Duration::from_secs(3);
    let r = timeout(WAIT, Client::connect(o)).await.expect("in time");
    assert!(matches!(r, Err(Error::ConnectTimeout)), "{r:?}");
}

#[tokio::test]
async fn first_connect_refused_is_an_error() {
    let (l, port) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x86)).await;
    });
    let r = timeout(WAIT, Client::connect(options(port, 60)))
        .await
        .expect("in time");
    assert!(
        matches!(
            r,
            Err(Error::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD))
        ),
        "{r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn non_retryable_refusal_on_reconnect_stops_with_an_event() {
    // Issue 5: reconnecting stops, with an event, on a non-retryable CONNACK code (0x87).
    let (l, port) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x00)).await;
        drop(s); // the connection is lost
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x88)).await; // retryable: Server unavailable
        drop(s);
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x87)).await; // not authorized: final
        let _ = s.read(&mut [0u8; 16]).await;
    });
    let (client, mut events) = timeout(WAIT, Client::connect(options(port, 60)))
        .await
        .expect("in time")
        .expect("connects");
    let mut got = Vec::new();
    timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            got.push(e);
        }
    })
    .await
    .expect("events end");
    assert_eq!(
        got,
        [
            Event::Connected {
                session_present: false
            },
            Event::Disconnected {
                reason_code: ReasonCode::UNSPECIFIED_ERROR
            },
            Event::ConnectionRefused(ReasonCode::SERVER_UNAVAILABLE),
            Event::Stopped(ReasonCode::NOT_AUTHORIZED),
        ]
    );
    let r = client
        .publish(
            "t",
            b"x".to_vec(),
            mqttx_client::codec::QoS::AtLeastOnce,
            false,
        )
        .await;
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn commands_are_served_while_a_reconnect_waits_for_connack() {
    // The second connection is accepted but never answered: a publish made meanwhile is
    // queued at once (not held for the connect timeout) and waits for the next connection.
    let (l, port) = listener().await;
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x00)).await;
        drop(s);
        let (s2, _) = l.accept().await.expect("accept");
        let _ = hold_rx.await;
        drop(s2);
    });
    let mut o = options(port, 60);
    o.connect_timeout = Duration::from_secs(30);
    let (client, mut events) = timeout(WAIT, Client::connect(o))
        .await
        .expect("in time")
        .expect("connects");
    assert_eq!(
        events.recv().await,
        Some(Event::Connected {
            session_present: false
        })
    );
    assert!(matches!(
        events.recv().await,
        Some(Event::Disconnected { .. })
    ));
    // Past the 1 s backoff (±10 %): the second attempt is waiting for its CONNACK.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = tokio::time::Instant::now();
    let handle = timeout(
        Duration::from_secs(1),
        client.publish(
            "t",
            b"x".to_vec(),
            mqttx_client::codec::QoS::AtLeastOnce,
            false,
        ),
    )
    .await
    .expect("publish returns while connecting")
    .expect("queued");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(handle.packet_id().is_some());
    drop(hold_tx);
}

#[tokio::test(start_paused = true)]
async fn connect_without_waiting_for_connack_retries_in_the_background() {
    // wait_for_connack = false: `connect` returns at once; a refused first attempt (0x88,
    // retryable) is retried after the backoff and `Connected` follows.
    let (l, port) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x88)).await;
        drop(s);
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x00)).await;
        // Expect the client's DISCONNECT with the reason it chose.
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.expect("read");
        // MQTT 5.0 §3.14.2.2.1: no properties, so the Property Length may be omitted.
        assert_eq!(&buf[..n], [0xE0, 0x01, 0x04]);
    });
    let mut o = options(port, 60);
    o.wait_for_connack = false;
    let (client, mut events) = timeout(WAIT, Client::connect(o))
        .await
        .expect("in time")
        .expect("returns at once");
    assert_eq!(
        events.recv().await,
        Some(Event::ConnectionRefused(ReasonCode::SERVER_UNAVAILABLE))
    );
    assert_eq!(
        events.recv().await,
        Some(Event::Connected {
            session_present: false
        })
    );
    timeout(
        WAIT,
        client.disconnect_with(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, Default::default()),
    )
    .await
    .expect("in time")
    .expect("disconnected");
    timeout(WAIT, server)
        .await
        .expect("in time")
        .expect("the server saw DISCONNECT 0x04");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_publishes_wait_when_the_server_stops_reading() {
    // QoS 0 has no acknowledgement to bound it: `publish` waits once 256 KiB are unwritten,
    // so a server that stops reading bounds what the client holds (TCP buffers included),
    // and the waiting publish goes through once the server reads again.
    let (l, port) = listener().await;
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        answer(&mut s, &connack(0x00)).await;
        // Reads nothing until told to, then everything until the client closes.
        let _ = go_rx.await;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let (client, _events) = timeout(WAIT, Client::connect(options(port, 0)))
        .await
        .expect("in time")
        .expect("connects");
    let payload = vec![0x5Au8; 64 * 1024];
    let mut accepted = 0usize;
    let waiting = loop {
        // 1 000 × 64 KiB is far more than loopback buffers hold.
        assert!(accepted < 1_000, "publish never waited");
        let mut publish = Box::pin(client.publish("q0", payload.clone(), QoS::AtMostOnce, false));
        match timeout(Duration::from_millis(500), publish.as_mut()).await {
            Ok(r) => {
                r.expect("queued");
                accepted += 1;
            }
            Err(_) => break publish,
        }
    };
    let _ = go_tx.send(());
    timeout(WAIT, waiting)
        .await
        .expect("the waiting publish goes through once the server reads")
        .expect("queued");
    timeout(WAIT, client.disconnect())
        .await
        .expect("in time")
        .expect("disconnects");
    let total = timeout(WAIT, server)
        .await
        .expect("in time")
        .expect("server task");
    assert!(
        total > (accepted + 1) * 64 * 1024,
        "every accepted message was sent: {total} bytes for {} messages",
        accepted + 1
    );
}
