//! The codec on its own: encode a client's first packets into one byte stream, decode that
//! stream as it would arrive from a socket (in small pieces), and see a malformed packet
//! rejected with its reason code. No network, no runtime, no dependency but the codec.
//!
//! ```text
//! cargo run -p mqttx-codec --example codec
//! ```

use mqttx_codec::{
    Connect, DecodeContext, DecodeError, Decoder, EncodeContext, Packet, PacketId, ProtocolVersion,
    Publish, QoS, Subscribe, SubscribeFilter, decode, encode,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let version = ProtocolVersion::V5;

    // 1. Encode: CONNECT, SUBSCRIBE and a QoS 1 PUBLISH with a property, into one buffer.
    let mut connect = Connect::new(version, "codec-example");
    connect.keep_alive = 30;
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).ok_or("zero packet id")?,
        properties: Default::default(),
        filters: vec![SubscribeFilter::new("sensors/+/temp", QoS::AtLeastOnce)].into(),
    };
    let mut publish = Publish::new("sensors/room1/temp", &b"21.5"[..]);
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = PacketId::new(2);
    publish.properties.content_type = Some("text/plain".into());

    let cx = EncodeContext::new(version);
    let mut stream = Vec::new();
    for packet in [
        Packet::Connect(connect),
        Packet::Subscribe(subscribe),
        Packet::Publish(publish),
    ] {
        encode(&packet, &cx, &mut stream)?;
    }
    println!("encoded {} bytes: {:02x?}", stream.len(), stream);

    // 2. Decode the stream as it arrives, 5 bytes at a time: `next_borrowed` returns
    //    `Ok(None)` until a whole packet is buffered, then the packet, borrowing its topic
    //    and payload from the decoder's buffer.
    let mut decoder = Decoder::new(DecodeContext::new(version));
    for chunk in stream.chunks(5) {
        decoder.feed(chunk);
        while let Some(packet) = decoder.next_borrowed()? {
            match packet {
                Packet::Connect(c) => println!("CONNECT client id {:?}", c.client_id),
                Packet::Subscribe(s) => {
                    for (filter, options) in s.filters.iter() {
                        println!("SUBSCRIBE {filter} at {:?}", options.qos);
                    }
                }
                Packet::Publish(p) => println!(
                    "PUBLISH {} {:?} content type {:?}",
                    p.topic,
                    String::from_utf8_lossy(&p.payload),
                    p.properties.content_type,
                ),
                other => println!("{:?}", other.packet_type()),
            }
        }
    }

    // 3. Hostile input: a PUBLISH whose QoS bits are both set is malformed. The error names
    //    the rule and the reason code a broker sends before closing the connection.
    let bad = [0x36, 0x03, 0x00, 0x01, b'a'];
    match decode(&bad, &DecodeContext::new(version)) {
        Err(e @ DecodeError::InvalidQoS) => {
            println!("rejected: {e}; reason code {}", e.reason_code())
        }
        other => return Err(format!("expected InvalidQoS, got {other:?}").into()),
    }
    Ok(())
}
