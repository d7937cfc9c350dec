//! Bodies of the client's fuzz targets, compiled under `cfg(fuzzing)` (set by cargo-fuzz) and
//! in unit tests. A target in `fuzz/fuzz_targets/` is one line calling a function here.

use std::time::{Duration, Instant};

use mqttx_codec::{
    DecodeContext, Decoder, Properties, ProtocolVersion, Publish, QoS, SubscribeFilter,
};

use crate::proto::{ClientSession, SessionOptions};

/// Drives a client session with arbitrary server bytes, timeouts, publishes, subscriptions and
/// reconnects, and checks that everything the session sends decodes as a packet of its version.
///
/// `data[0]` picks MQTT 3.1.1 or 5.0; the session is connected with a valid CONNACK first.
/// Then each operation byte (low 3 bits) either feeds up to 31 of the following bytes,
/// advances time, publishes, subscribes, unsubscribes, reconnects, answers with a CONNACK or
/// drains events.
pub fn client_session(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let version = if first & 1 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    };
    let mut now = Instant::now();
    let mut opts = SessionOptions::new("fuzz");
    opts.protocol = version;
    opts.keep_alive = Duration::from_secs(5);
    opts.max_inflight = 3;
    opts.max_queued = 8;
    opts.topic_alias_maximum = 2;
    opts.receive_maximum = 4;
    let mut session = ClientSession::new();
    let mut check = Decoder::new(DecodeContext::new(version).with_max_packet_size(u32::MAX));
    session.connect(now, opts.clone());
    let connack: &[u8] = if version.is_v5() {
        // Topic Alias Maximum 1, Receive Maximum 2.
        &[
            0x20, 0x09, 0x00, 0x00, 0x06, 0x22, 0x00, 0x01, 0x21, 0x00, 0x02,
        ]
    } else {
        &[0x20, 0x02, 0x00, 0x00]
    };
    let _ = session.handle_bytes(now, connack);
    let mut out = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = usize::from(op >> 3);
        match op & 0b111 {
            0 => {
                let n = arg.min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let _ = session.handle_bytes(now, chunk);
            }
            1 => {
                now += Duration::from_secs(arg as u64);
                session.handle_timeout(now);
            }
            2 => {
                let mut p = Publish::new(format!("t/{}", arg % 4), vec![0u8; arg]);
                p.qos = QoS::from_u8((arg % 3) as u8).unwrap_or_default();
                let _ = session.publish(now, p);
            }
            3 => {
                let f = SubscribeFilter::new(format!("f/{}", arg % 3), QoS::AtLeastOnce);
                let _ = session.subscribe(now, vec![f], Properties::new());
            }
            4 => {
                let _ = session.unsubscribe(now, vec![format!("f/{}", arg % 3)], Properties::new());
            }
            5 => {
                session.handle_connection_closed();
                session.connect(now, opts.clone());
                check = Decoder::new(DecodeContext::new(version).with_max_packet_size(u32::MAX));
                out.clear();
            }
            6 => {
                // A CONNACK, with Session Present from the argument.
                let mut ack = connack.to_vec();
                if let Some(flags) = ack.get_mut(2) {
                    *flags = (arg & 1) as u8;
                }
                let _ = session.handle_bytes(now, &ack);
            }
            _ => while session.poll_event().is_some() {},
        }
        if let Some(t) = session.poll_timeout() {
            assert!(
                t >= now - Duration::from_secs(3600),
                "a timeout in the past"
            );
        }
        while session.poll_transmit(&mut out) {}
        check.feed(&out);
        out.clear();
        loop {
            match check.next_packet() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the session sent an invalid packet: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_session_survives_pseudo_random_operations() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..3000 {
            let mut data = Vec::with_capacity(96);
            for _ in 0..96 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.push(seed as u8);
            }
            super::client_session(&data);
        }
    }
}
