//! Bodies of the broker's fuzz targets, compiled under `cfg(fuzzing)` (set by cargo-fuzz) and
//! in unit tests. A target in `fuzz/fuzz_targets/` is one line calling a function here.

use std::time::{Duration, Instant};

use mqttx_codec::{
    Connect, DecodeContext, EncodeContext, Packet, ProtocolVersion, QoS, ReasonCode, decode, encode,
};
use mqttx_router::TopicName;

use crate::config::Config;
use crate::proto::{Event, Message, Outbound, PublishOutcome, Session};

/// Drives one accepted session with arbitrary bytes, timeouts and deliveries, answering every
/// request, and checks that everything the session sends is a valid packet of its version.
///
/// `data[0]` picks MQTT 3.1.1 or 5.0 (bit 0) and durability (bit 1: journaled messages and
/// held acknowledgements, released after each operation whose top bit is set, with the
/// journal's reports checked against the messages delivered); then each operation byte
/// either feeds up to 63 of the following bytes, advances time by the next byte's value in
/// seconds, or delivers a message.
pub fn broker_session(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let version = if first & 1 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    };
    let mut now = Instant::now();
    let config = Config {
        max_queued_messages: 16,
        max_inflight: 4,
        ..Config::default()
    };
    let durable = first & 2 != 0;
    let mut session = Session::new(now, &config, "fuzz".into());
    session.set_durability(durable, durable);
    let mut next_id = 0u64;
    let mut live = std::collections::HashSet::new();
    let mut entries = Vec::new();
    let mut bytes = Vec::new();
    let mut connect = Connect::new(version, "c");
    connect.keep_alive = 5;
    if version.is_v5() {
        // Exercise outbound Topic Aliases, with replacement.
        connect.properties.topic_alias_maximum = Some(1);
    }
    if encode(
        &Packet::Connect(connect),
        &EncodeContext::new(version),
        &mut bytes,
    )
    .is_err()
    {
        return;
    }
    session.handle_bytes(now, &bytes);
    let topic = TopicName::new("fuzz/t").ok();
    let mut out = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 4 {
            0 => {
                let secs = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or_default();
                now += Duration::from_secs(u64::from(secs));
                session.handle_timeout(now);
            }
            1 => {
                if let Some(topic) = &topic {
                    let qos = QoS::from_u8((op >> 2) % 3).unwrap_or(QoS::AtMostOnce);
                    let message = Message::new(topic.clone(), &b"payload"[..], qos, false);
                    if let Ok(mut encoded) = Outbound::encode(&message, version, qos, false, &[]) {
                        if durable && qos != QoS::AtMostOnce {
                            next_id += 1;
                            live.insert(next_id);
                            encoded = encoded.with_id(next_id);
                        }
                        session.deliver(now, encoded);
                    }
                }
            }
            _ => {
                let n = usize::from(op >> 2).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                session.handle_bytes(now, chunk);
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                Event::Connect(_) => session.accept_connect(now),
                Event::Publish(_) => session.complete_publish(now, PublishOutcome::Accepted),
                Event::Subscribe(req) => {
                    let codes = vec![ReasonCode::GRANTED_QOS_1; req.entries.len()];
                    session.complete_subscribe(now, &codes);
                }
                Event::Unsubscribe(req) => {
                    let existed = vec![false; req.filters.len()];
                    session.complete_unsubscribe(now, &existed);
                }
                _ => {}
            }
        }
        if durable && op & 0x80 != 0 {
            session.release_acks(session.parked_acks());
        }
        out.clear();
        while session.poll_transmit(&mut out) {}
        session.poll_journal(&mut entries);
        for entry in entries.drain(..) {
            match entry {
                crate::proto::JournalEntry::Sent { id, .. }
                | crate::proto::JournalEntry::Released { id, .. } => {
                    assert!(live.contains(&id), "report on an unknown message {id}");
                }
                crate::proto::JournalEntry::Done { id } => {
                    assert!(live.remove(&id), "message {id} done twice or unknown");
                }
                _ => {}
            }
        }
        let cx = DecodeContext::new(version);
        let mut sent = &out[..];
        while !sent.is_empty() {
            match decode(sent, &cx) {
                Ok(Some((_, used))) => sent = sent.get(used..).unwrap_or_default(),
                other => panic!("the session sent an invalid packet: {other:?}"),
            }
        }
        if session.is_closed() {
            return;
        }
    }
}
