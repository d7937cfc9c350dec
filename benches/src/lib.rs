//! Shared fixtures for the mqttx benchmarks; the benches themselves live in `benches/benches/`.
//!
//! The fixtures are encoded with mqttx-codec; a unit test checks that the peer codec used in the
//! same benches (rumqttc's `mqttbytes`) decodes every one of them, so the comparison is of the
//! same bytes.

use std::borrow::Cow;

use mqttx_codec::{
    Connect, EncodeContext, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS,
    Subscribe, SubscribeFilter, UserProperty, Will, encode,
};

/// One benchmark input: a packet as an application builds it, its bytes, and their version.
#[derive(Clone, Debug)]
pub struct Case {
    /// Short name for the criterion group.
    pub name: &'static str,
    /// Protocol version of the bytes.
    pub version: ProtocolVersion,
    /// The packet as built by an application (not decoded).
    pub packet: Packet<'static>,
    /// The encoded packet.
    pub bytes: Vec<u8>,
}

impl Case {
    fn new(name: &'static str, version: ProtocolVersion, packet: Packet<'static>) -> Self {
        let bytes = bytes_of(version, &packet);
        Self {
            name,
            version,
            packet,
            bytes,
        }
    }
}

fn bytes_of(version: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, &EncodeContext::new(version), &mut out).expect("fixture encodes");
    out
}

fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero")
}

/// A QoS 0 PUBLISH to `sensors/room1/temp` with `size` payload bytes.
pub fn publish_qos0(size: usize) -> Packet<'static> {
    Packet::Publish(Publish::new("sensors/room1/temp", vec![0xA5u8; size]))
}

/// A QoS 1 MQTT 5.0 PUBLISH with a user property, a content type and a message expiry.
pub fn publish_qos1_v5() -> Packet<'static> {
    let mut p = Publish::new("sensors/room1/temp", vec![0x5Au8; 64]);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(42));
    p.properties.user_properties = vec![UserProperty::new("site", "plant-7")].into();
    p.properties.content_type = Some(Cow::Borrowed("application/json"));
    p.properties.message_expiry_interval = Some(3600);
    Packet::Publish(p)
}

/// An MQTT 3.1.1 CONNECT with user name, password and will.
pub fn connect_v311() -> Packet<'static> {
    let mut c = Connect::new(ProtocolVersion::V311, "sensor-gateway-0042");
    c.keep_alive = 30;
    c.username = Some(Cow::Borrowed("gateway"));
    c.password = Some(Cow::Borrowed(b"s3cr3t-passw0rd"));
    c.will = Some(Box::new(Will {
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
        topic: Cow::Borrowed("gateways/0042/status"),
        payload: Cow::Borrowed(b"offline"),
    }));
    Packet::Connect(c)
}

/// A SUBSCRIBE with five filters.
pub fn subscribe_5() -> Packet<'static> {
    let filters = [
        "sensors/+/temp",
        "sensors/room1/#",
        "alerts/critical",
        "devices/+/status",
        "config/gateway/0042",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, f)| {
        SubscribeFilter::new(
            f,
            if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
        )
    })
    .collect();
    Packet::Subscribe(Subscribe {
        packet_id: pid(7),
        properties: Default::default(),
        filters,
    })
}

/// Every single-packet case of the codec benchmark.
pub fn cases() -> Vec<Case> {
    let v4 = ProtocolVersion::V311;
    let v5 = ProtocolVersion::V5;
    vec![
        Case::new("publish-qos0-16B", v4, publish_qos0(16)),
        Case::new("publish-qos0-256B", v4, publish_qos0(256)),
        Case::new("publish-qos0-4KiB", v4, publish_qos0(4096)),
        Case::new("publish-qos0-64KiB", v4, publish_qos0(65_536)),
        Case::new("publish-qos1-v5-props", v5, publish_qos1_v5()),
        Case::new("connect-v311-will-login", v4, connect_v311()),
        Case::new("subscribe-5-filters", v4, subscribe_5()),
        Case::new("puback", v4, Packet::PubAck(PubResponse::new(pid(42)))),
        Case::new("pingreq", v4, Packet::PingReq),
    ]
}

/// A buffer of `n` mixed MQTT 3.1.1 packets (mostly small PUBLISHes, as a broker sees them)
/// and the number of packets in it.
pub fn mixed_stream(n: usize) -> (Vec<u8>, usize) {
    let v4 = ProtocolVersion::V311;
    let mut qos1 = Publish::new("sensors/room1/humidity", vec![7u8; 32]);
    qos1.qos = QoS::AtLeastOnce;
    qos1.packet_id = Some(pid(9));
    let kinds = [
        bytes_of(v4, &publish_qos0(16)),
        bytes_of(v4, &publish_qos0(64)),
        bytes_of(v4, &Packet::Publish(qos1)),
        bytes_of(v4, &Packet::PubAck(PubResponse::new(pid(9)))),
        bytes_of(v4, &publish_qos0(256)),
        bytes_of(v4, &Packet::PingReq),
        bytes_of(v4, &subscribe_5()),
        bytes_of(v4, &publish_qos0(16)),
    ];
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(&kinds[i % kinds.len()]);
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    /// The peer decodes every fixture: the benchmark compares both codecs on the same bytes.
    #[test]
    fn peer_decodes_every_fixture() {
        for case in cases() {
            let mut buf = BytesMut::from(&case.bytes[..]);
            if case.version.is_v5() {
                rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, None)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            } else {
                rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1 << 20)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            }
            assert!(buf.is_empty(), "{}", case.name);
        }
        let (stream, n) = mixed_stream(64);
        let mut buf = BytesMut::from(&stream[..]);
        let mut count = 0;
        while !buf.is_empty() {
            rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1 << 20).unwrap();
            count += 1;
        }
        assert_eq!(count, n);
    }
}
