//! The broker's counters: relaxed atomics that connections fold their local counts into in
//! batches, read together as a [`Snapshot`] by the `$SYS/broker/...` publisher and, with the
//! `metrics` feature, by [`Broker::record_metrics`](crate::Broker::record_metrics).
//!
//! Nothing here is on the per-message path but [`Traffic`], a connection's plain (non-atomic)
//! counts; shared memory is touched once per socket write (see [`Traffic::fold`]), once per
//! connection, or once per dropped message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mqttx_codec::{QoS, ReasonCode};
use tokio::time::Instant;

use crate::config::ListenerKind;
use crate::proto::Session;

/// Why a message the broker accepted (or was asked to accept) was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// A client's outbound queue, its mailbox or a stored session's offline queue was full.
    QueueFull = 0,
    /// Larger than the client's Maximum Packet Size (or than MQTT can encode).
    TooLarge = 1,
    /// Its Message Expiry Interval passed while it waited in a queue.
    Expired = 2,
    /// Refused by the handler with 0x96 (Message rate too high) or 0x97 (Quota exceeded).
    RateLimited = 3,
}

impl DropCause {
    pub(crate) const ALL: [Self; 4] = [
        Self::QueueFull,
        Self::TooLarge,
        Self::Expired,
        Self::RateLimited,
    ];

    /// The Prometheus label value.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::TooLarge => "too_large",
            Self::Expired => "expired",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// The broker-wide counters.
#[derive(Debug)]
pub(crate) struct Stats {
    started: Instant,
    /// CONNECTs accepted.
    pub(crate) clients_total: AtomicU64,
    /// Network connections being served (CONNECT received or not).
    connections: AtomicU64,
    /// Network connections served since the start.
    connections_total: AtomicU64,
    /// PUBLISH packets received from clients, by QoS.
    messages_received: [AtomicU64; 3],
    /// PUBLISH packets queued to clients, by QoS.
    messages_sent: [AtomicU64; 3],
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    /// By [`DropCause`].
    dropped: [AtomicU64; 4],
    /// QoS 1 and 2 messages in flight to connected clients (a sum of per-connection deltas).
    in_flight: AtomicU64,
    /// CONNECTs refused, by reason code (index: code − 0x80).
    refused: [AtomicU64; 128],
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            clients_total: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            messages_received: Default::default(),
            messages_sent: Default::default(),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            dropped: Default::default(),
            in_flight: AtomicU64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// One message dropped for `cause`.
    pub(crate) fn dropped(&self, cause: DropCause) {
        self.dropped[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped for any cause, `shared` adding those counted under the broker's lock.
    pub(crate) fn dropped_total(&self, shared: &[u64; 4]) -> u64 {
        DropCause::ALL
            .iter()
            .map(|&c| self.dropped[c as usize].load(Ordering::Relaxed) + shared[c as usize])
            .sum()
    }

    /// A CONNECT refused with `code`.
    pub(crate) fn refused(&self, code: ReasonCode) {
        let index = usize::from(code.as_u8().saturating_sub(0x80));
        if let Some(counter) = self.refused.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A network connection starts (`true`) or ends being served.
    pub(crate) fn connection(&self, open: bool) {
        if open {
            self.connections.fetch_add(1, Ordering::Relaxed);
            self.connections_total.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One connection's counts since they were last folded into [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    messages_received: [u64; 3],
    messages_sent: [u64; 3],
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    /// What this connection last added to [`Stats::in_flight`].
    in_flight: u64,
    /// The session's `dropped_expired` when last folded.
    expired: u64,
}

impl Traffic {
    /// A PUBLISH received.
    pub(crate) fn received(&mut self, qos: QoS) {
        if let Some(n) = self.messages_received.get_mut(usize::from(qos.as_u8())) {
            *n += 1;
        }
    }

    /// A PUBLISH queued for the client.
    pub(crate) fn sent(&mut self, qos: QoS) {
        if let Some(n) = self.messages_sent.get_mut(usize::from(qos.as_u8())) {
            *n += 1;
        }
    }

    /// Adds the counts to `stats` and resets them; brings this connection's share of the
    /// in-flight gauge and of the expired messages up to date with `session`.
    pub(crate) fn fold(&mut self, stats: &Stats, session: &Session) {
        let add = |counter: &AtomicU64, n: &mut u64| {
            if *n > 0 {
                counter.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        };
        for (counter, n) in stats
            .messages_received
            .iter()
            .zip(&mut self.messages_received)
        {
            add(counter, n);
        }
        for (counter, n) in stats.messages_sent.iter().zip(&mut self.messages_sent) {
            add(counter, n);
        }
        add(&stats.bytes_received, &mut self.bytes_received);
        add(&stats.bytes_sent, &mut self.bytes_sent);
        let in_flight = session.in_flight() as u64;
        if in_flight != self.in_flight {
            // Wrapping: a lower count subtracts.
            stats
                .in_flight
                .fetch_add(in_flight.wrapping_sub(self.in_flight), Ordering::Relaxed);
            self.in_flight = in_flight;
        }
        let expired = session.stats().dropped_expired;
        if expired > self.expired {
            stats.dropped[DropCause::Expired as usize]
                .fetch_add(expired - self.expired, Ordering::Relaxed);
            self.expired = expired;
        }
    }

    /// The last fold of a connection that ends: its messages are no longer in flight.
    pub(crate) fn finish(&mut self, stats: &Stats, session: &Session) {
        self.fold(stats, session);
        if self.in_flight > 0 {
            stats
                .in_flight
                .fetch_sub(std::mem::take(&mut self.in_flight), Ordering::Relaxed);
        }
    }
}

/// The connection counts of one listener.
#[derive(Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))] // Read by `record`.
pub(crate) struct ListenerStats {
    /// The listener's name, or `kind:address` for an unnamed one.
    pub(crate) label: String,
    pub(crate) kind: ListenerKind,
    /// Connections accepted.
    pub(crate) accepted: AtomicU64,
    /// Connections being served.
    pub(crate) open: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub(crate) refused: AtomicU64,
    /// Connections whose TLS or WebSocket handshake failed.
    pub(crate) handshake_failed: AtomicU64,
}

impl ListenerStats {
    pub(crate) fn new(label: String, kind: ListenerKind) -> Self {
        Self {
            label,
            kind,
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            handshake_failed: AtomicU64::new(0),
        }
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the broker counts, at one moment.
#[derive(Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))] // Read by `record`.
pub(crate) struct Snapshot {
    pub(crate) uptime: Duration,
    pub(crate) connections: u64,
    pub(crate) connections_total: u64,
    pub(crate) clients_connected: usize,
    pub(crate) sessions_offline: usize,
    pub(crate) clients_total: u64,
    pub(crate) messages_received: [u64; 3],
    pub(crate) messages_sent: [u64; 3],
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) dropped: [u64; 4],
    pub(crate) in_flight: u64,
    /// Non-zero counts only.
    pub(crate) refused: Vec<(ReasonCode, u64)>,
    pub(crate) retained: usize,
    pub(crate) retained_bytes: usize,
    pub(crate) subscriptions: usize,
}

/// What [`Snapshot`] needs from the state behind the broker's lock.
#[derive(Debug)]
pub(crate) struct SharedCounts {
    pub(crate) clients_connected: usize,
    pub(crate) sessions_offline: usize,
    pub(crate) dropped: [u64; 4],
    pub(crate) retained: usize,
    pub(crate) retained_bytes: usize,
    pub(crate) subscriptions: usize,
}

impl Stats {
    pub(crate) fn snapshot(&self, shared: SharedCounts) -> Snapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let three = |a: &[AtomicU64; 3]| [load(&a[0]), load(&a[1]), load(&a[2])];
        let mut dropped = shared.dropped;
        for (n, counter) in dropped.iter_mut().zip(&self.dropped) {
            *n += load(counter);
        }
        Snapshot {
            uptime: self.started.elapsed(),
            connections: load(&self.connections),
            connections_total: load(&self.connections_total),
            clients_connected: shared.clients_connected,
            sessions_offline: shared.sessions_offline,
            clients_total: load(&self.clients_total),
            messages_received: three(&self.messages_received),
            messages_sent: three(&self.messages_sent),
            bytes_received: load(&self.bytes_received),
            bytes_sent: load(&self.bytes_sent),
            dropped,
            in_flight: load(&self.in_flight),
            refused: self
                .refused
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let n = load(c);
                    let code = ReasonCode::from_u8(u8::try_from(i + 0x80).ok()?)?;
                    (n > 0).then_some((code, n))
                })
                .collect(),
            retained: shared.retained,
            retained_bytes: shared.retained_bytes,
            subscriptions: shared.subscriptions,
        }
    }
}

#[cfg(feature = "metrics")]
impl Snapshot {
    /// Hands every count to the `metrics` facade: counters as absolute values (the broker's
    /// own totals), gauges as they are.
    pub(crate) fn record(&self, listeners: &[std::sync::Arc<ListenerStats>]) {
        use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

        describe_gauge!(
            "mqttx_connections",
            Unit::Count,
            "Network connections being served, CONNECT received or not."
        );
        gauge!("mqttx_connections").set(self.connections as f64);
        describe_counter!(
            "mqttx_connections_total",
            Unit::Count,
            "Network connections served since the broker started."
        );
        counter!("mqttx_connections_total").absolute(self.connections_total);
        describe_counter!(
            "mqttx_client_connects_total",
            Unit::Count,
            "CONNECT packets accepted (the handler said yes)."
        );
        counter!("mqttx_client_connects_total").absolute(self.clients_total);
        describe_counter!(
            "mqttx_connections_refused_total",
            Unit::Count,
            "Connections refused: CONNECT refused, by reason code (reason), or closed at accept \
             because max_connections were open (reason=\"connection_limit\")."
        );
        for (code, n) in &self.refused {
            counter!("mqttx_connections_refused_total", "reason" => label(code.name()))
                .absolute(*n);
        }
        let limit: u64 = listeners
            .iter()
            .map(|l| l.refused.load(Ordering::Relaxed))
            .sum();
        if limit > 0 {
            counter!("mqttx_connections_refused_total", "reason" => "connection_limit")
                .absolute(limit);
        }
        describe_gauge!(
            "mqttx_sessions",
            Unit::Count,
            "Sessions: of connected clients (state=\"online\") and persistent sessions kept \
             for absent clients (state=\"offline\")."
        );
        gauge!("mqttx_sessions", "state" => "online").set(self.clients_connected as f64);
        gauge!("mqttx_sessions", "state" => "offline").set(self.sessions_offline as f64);
        describe_counter!(
            "mqttx_messages_received_total",
            Unit::Count,
            "PUBLISH packets received from clients, by QoS."
        );
        describe_counter!(
            "mqttx_messages_sent_total",
            Unit::Count,
            "PUBLISH packets queued to clients (retained ones at subscribe included), by QoS."
        );
        for (qos, name) in ["0", "1", "2"].into_iter().enumerate() {
            counter!("mqttx_messages_received_total", "qos" => name)
                .absolute(self.messages_received[qos]);
            counter!("mqttx_messages_sent_total", "qos" => name).absolute(self.messages_sent[qos]);
        }
        describe_counter!(
            "mqttx_bytes_received_total",
            Unit::Bytes,
            "Bytes read from clients (MQTT packets, after TLS and WebSocket)."
        );
        counter!("mqttx_bytes_received_total").absolute(self.bytes_received);
        describe_counter!(
            "mqttx_bytes_sent_total",
            Unit::Bytes,
            "Bytes written to clients (MQTT packets, before TLS and WebSocket)."
        );
        counter!("mqttx_bytes_sent_total").absolute(self.bytes_sent);
        describe_counter!(
            "mqttx_messages_dropped_total",
            Unit::Count,
            "Messages not delivered, by cause: queue_full, too_large, expired, rate_limited."
        );
        for cause in DropCause::ALL {
            counter!("mqttx_messages_dropped_total", "cause" => cause.as_str())
                .absolute(self.dropped[cause as usize]);
        }
        describe_gauge!(
            "mqttx_in_flight_messages",
            Unit::Count,
            "QoS 1 and 2 messages sent to connected clients and not yet acknowledged."
        );
        gauge!("mqttx_in_flight_messages").set(self.in_flight as f64);
        describe_gauge!(
            "mqttx_retained_messages",
            Unit::Count,
            "Retained messages, the broker's own $SYS ones not counted."
        );
        gauge!("mqttx_retained_messages").set(self.retained as f64);
        describe_gauge!(
            "mqttx_retained_bytes",
            Unit::Bytes,
            "Topic and payload bytes of the retained messages ($SYS not counted)."
        );
        gauge!("mqttx_retained_bytes").set(self.retained_bytes as f64);
        describe_gauge!(
            "mqttx_subscriptions",
            Unit::Count,
            "Subscriptions, of connected clients and of stored sessions."
        );
        gauge!("mqttx_subscriptions").set(self.subscriptions as f64);
        describe_gauge!(
            "mqttx_uptime_seconds",
            Unit::Seconds,
            "Time since the broker started."
        );
        gauge!("mqttx_uptime_seconds").set(self.uptime.as_secs_f64());
        describe_gauge!(
            "mqttx_listener_connections",
            Unit::Count,
            "Network connections being served, by listener."
        );
        describe_counter!(
            "mqttx_listener_connections_total",
            Unit::Count,
            "Network connections accepted, by listener."
        );
        describe_counter!(
            "mqttx_listener_connections_refused_total",
            Unit::Count,
            "Network connections closed at accept because max_connections were open, by listener."
        );
        describe_counter!(
            "mqttx_listener_handshake_failures_total",
            Unit::Count,
            "TLS or WebSocket handshakes that failed, by listener."
        );
        for l in listeners {
            let labels = [
                ("listener", l.label.clone()),
                ("kind", l.kind.as_str().to_owned()),
            ];
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            gauge!("mqttx_listener_connections", &labels).set(load(&l.open) as f64);
            counter!("mqttx_listener_connections_total", &labels).absolute(load(&l.accepted));
            counter!("mqttx_listener_connections_refused_total", &labels)
                .absolute(load(&l.refused));
            counter!("mqttx_listener_handshake_failures_total", &labels)
                .absolute(load(&l.handshake_failed));
        }
    }
}

/// A reason code's name as a label value: `Not authorized` → `not_authorized`.
#[cfg(feature = "metrics")]
fn label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
