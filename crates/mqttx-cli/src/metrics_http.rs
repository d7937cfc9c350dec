//! `mqttx broker --metrics-bind ADDR`: the Prometheus endpoint. A tiny HTTP/1.1 responder on
//! tokio answers `GET /metrics` (and `HEAD`) with the text exposition format that
//! `metrics-exporter-prometheus` renders, after the broker has handed its counts to the
//! recorder (`Broker::record_metrics`). Every connection gets one answer and is closed.
//!
//! Limits: a request head of at most 8 KiB, read within 5 s; at most 16 scrapes at once (more
//! are closed unanswered). Anything but `GET`/`HEAD` is 405, any other path 404, a head that
//! is not HTTP/1.x 400.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head and read the answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes answered at once.
const MAX_CONCURRENT: usize = 16;

/// Answers scrapes on `listener` until the task is dropped; `render` gives the body.
pub(crate) async fn serve<F>(listener: TcpListener, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint: too many scrapes at once; closing");
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let answered = tokio::time::timeout(TIMEOUT, answer(stream, &*render)).await;
            if let Ok(Err(error)) = answered {
                tracing::debug!(%peer, %error, "metrics endpoint: request failed");
            }
            drop(permit);
        });
    }
}

/// Reads one request head and writes the answer.
async fn answer(
    mut stream: TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return respond(&mut stream, "400 Bad Request", "", false).await;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return respond(&mut stream, "400 Bad Request", "", false).await;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "try /metrics\n", false).await;
    }
    match method {
        "GET" => respond(&mut stream, "200 OK", &render(), true).await,
        "HEAD" => {
            let body = render();
            let head = header("200 OK", body.len(), true);
            stream.write_all(head.as_bytes()).await?;
            stream.shutdown().await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "", false).await,
    }
}

fn header(status: &str, length: usize, metrics: bool) -> String {
    let content_type = if metrics {
        // The Prometheus text exposition format.
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         {allow}Connection: close\r\n\r\n"
    )
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    metrics: bool,
) -> io::Result<()> {
    let mut out = header(status, body.len(), metrics).into_bytes();
    out.extend_from_slice(body.as_bytes());
    stream.write_all(&out).await?;
    stream.shutdown().await
}
