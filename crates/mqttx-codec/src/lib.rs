//! mqttx-codec is the MQTT 3.1, 3.1.1 and 5.0 wire codec of mqttx: it turns bytes into
//! packets and packets into bytes, and nothing else.
//!
//! mqttx-codec contains no networking code, no clock and no runtime; it has no dependencies and
//! builds with `#![no_std]` and `alloc`. Connections, sessions and routing live in the crates
//! above it (`mqttx-client`, `mqttx-broker`, `mqttx-router`).
//!
//! What it gives you:
//!
//! - **All fifteen packets** of MQTT 3.1 ("MQIsdp", level 3), 3.1.1 (level 4) and 5.0
//!   (level 5), all 27 MQTT 5.0 properties ([`Properties`]) and every reason code
//!   ([`ReasonCode`]) with its name.
//! - **Zero-copy decoding**: a decoded [`Packet`] borrows its topic, payload, strings and
//!   property values from the input; repeated fields (filters, user properties, reason codes)
//!   stay as validated wire bytes ([`Items`]). An MQTT 3.1.x packet, or a v5 packet without
//!   properties, decodes with no allocation at all; a v5 packet with properties allocates one
//!   box for them ([`Props`]), and a CONNECT one for its Will. [`Packet::into_owned`] gives an
//!   [`OwnedPacket`] to store or send across tasks.
//! - **Fast forwarding**: a decoded packet that is encoded again unmodified (what a broker does)
//!   reuses its validated property block and repeated fields as they are.
//! - **An incremental [`Decoder`]** for byte streams that arrive in pieces.
//! - **Strict validation** in both directions: each failure is a typed [`DecodeError`] naming
//!   the spec's rule and mapping to the reason code the spec gives (0x81 Malformed Packet, 0x82
//!   Protocol Error, 0x95 Packet Too Large…), or an [`EncodeError`]. Decoding never panics and
//!   never allocates more than the packet's declared size.
//!
//! The crate has a single `unsafe` block, in the string check: a string proven ASCII by the same
//! word-at-a-time pass that looks for U+0000 and wildcards becomes a `&str` without a second
//! UTF-8 validation pass. Everything else is `#![deny(unsafe_code)]`.
//!
//! # Layout
//!
//! - [`decode`], [`decode_header`], [`decode_body`]: one packet from a byte slice.
//! - [`Decoder`]: the stream decoder.
//! - [`encode`], [`encode_to_slice`], [`encoded_len`], [`encode_publish_header`]: packets to
//!   bytes, into a `Vec<u8>` or a `&mut [u8]`; the header-only PUBLISH encode lets a large
//!   payload go out by vectored write without a copy.
//! - [`Packet`] and one struct per packet type; [`Props`] and [`Properties`]; [`ReasonCode`];
//!   [`topic`].
//!
//! # Getting started
//!
//! Encode a PUBLISH and decode it again:
//!
//! ```
//! use mqttx_codec::{
//!     DecodeContext, EncodeContext, Packet, PacketId, ProtocolVersion, Publish, QoS, decode,
//!     encode,
//! };
//!
//! let mut publish = Publish::new("sensors/room1/temp", &b"21.5"[..]);
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = PacketId::new(7);
//! publish.properties.content_type = Some("text/plain".into());
//!
//! let mut bytes = Vec::new();
//! encode(&Packet::Publish(publish.clone()), &EncodeContext::new(ProtocolVersion::V5), &mut bytes)?;
//!
//! let (decoded, used) = decode(&bytes, &DecodeContext::new(ProtocolVersion::V5))?
//!     .expect("a whole packet");
//! assert_eq!(used, bytes.len());
//! assert_eq!(decoded, Packet::Publish(publish));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Decode a stream that arrives in pieces:
//!
//! ```
//! use mqttx_codec::{DecodeContext, Decoder, Packet, ProtocolVersion};
//!
//! let mut decoder = Decoder::new(DecodeContext::new(ProtocolVersion::V311));
//! let stream = [0xC0, 0x00, 0xD0, 0x00]; // PINGREQ, PINGRESP
//! let mut seen = Vec::new();
//! for chunk in stream.chunks(1) {
//!     decoder.feed(chunk);
//!     while let Some(packet) = decoder.next_packet()? {
//!         seen.push(packet);
//!     }
//! }
//! assert_eq!(seen, [Packet::PingReq, Packet::PingResp]);
//! # Ok::<(), mqttx_codec::DecodeError>(())
//! ```
//!
//! Hostile input gives a typed error with its reason code:
//!
//! ```
//! use mqttx_codec::{DecodeContext, DecodeError, ProtocolVersion, decode};
//! // A PUBLISH with both QoS bits set.
//! let err = decode(&[0x36, 0x03, 0x00, 0x01, b'a'], &DecodeContext::new(ProtocolVersion::V5))
//!     .unwrap_err();
//! assert_eq!(err, DecodeError::InvalidQoS);
//! assert_eq!(err.reason_code().as_u8(), 0x81);
//! assert_eq!(err.rule(), "[MQTT-3.3.1-4] PUBLISH QoS 3");
//! ```
//!
//! # Crate features
//!
//! - `std` (default): nothing more than the standard library's presence today; without it the
//!   crate is `#![no_std]` and needs only `alloc`.

#![no_std]
// One audited `unsafe` block: `wire::checked_str` (ASCII proven before `from_utf8_unchecked`).
#![deny(unsafe_code)]
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod decode;
mod decoder;
mod encode;
mod error;
mod items;
mod packet;
mod properties;
mod reason;
pub mod topic;
mod types;
mod wire;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use decode::{
    DEFAULT_MAX_PACKET_SIZE, DecodeContext, FrameHeader, decode, decode_body, decode_header,
};
pub use decoder::Decoder;
pub use encode::{
    EncodeContext, MAX_PACKET_SIZE, encode, encode_publish_header, encode_to_slice, encoded_len,
};
pub use error::{DecodeError, EncodeError};
pub use items::{Item, Items, Iter, SubscribeFilter, UserProperty};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, OwnedPacket, Packet, PubResponse, Publish, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Will,
};
pub use properties::{Properties, PropertyId, Props};
pub use reason::ReasonCode;
pub use types::{PacketId, PacketType, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
