//! What of a client session survives a process restart, and its byte form.
//!
//! The byte form is a short header and a list of records, each an MQTT packet encoded by the
//! codec in the session's protocol version, so the format needs no serializer of its own:
//!
//! ```text
//! "MQXS" 0x01 <protocol level>  then records: <kind u8> <length u32 BE> <encoded packet>
//! kind 1: PUBLISH in flight   2: PUBREL in flight   3: PUBLISH queued
//!      4: SUBSCRIBE (one filter, optional Subscription Identifier)   5: PUBREC owed (inbound QoS 2)
//! ```

use std::fmt;

use mqttx_codec::{
    DecodeContext, EncodeContext, Packet, PacketId, Properties, ProtocolVersion, PubResponse,
    Publish, Subscribe, SubscribeFilter, decode, encode,
};

const MAGIC: &[u8; 4] = b"MQXS";
const FORMAT: u8 = 0x01;

/// The state of a [`ClientSession`](super::ClientSession) that must outlive the process:
/// unacknowledged and queued messages in order, subscriptions, inbound QoS 2 identifiers
/// awaiting PUBREL. Packet identifiers are those of the messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionState {
    /// The protocol version the state was recorded in.
    pub protocol: ProtocolVersion,
    pub(super) inflight: Vec<Stored>,
    pub(super) queued: Vec<Publish<'static>>,
    pub(super) subscriptions: Vec<(SubscribeFilter, Option<u32>)>,
    pub(super) inbound_qos2: Vec<PacketId>,
}

/// One entry of the in-flight table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    Publish(Publish<'static>),
    PubRel(PacketId),
}

/// Why [`SessionState::decode`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// Not the header this version writes.
    BadHeader,
    /// A record is cut short or of an unknown kind.
    BadRecord,
    /// A record's packet does not decode, or is not the packet its kind says.
    BadPacket,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadHeader => "not a session state (bad header)",
            Self::BadRecord => "truncated or unknown record",
            Self::BadPacket => "record holds an invalid packet",
        })
    }
}

impl std::error::Error for StateError {}

impl SessionState {
    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
            && self.queued.is_empty()
            && self.subscriptions.is_empty()
            && self.inbound_qos2.is_empty()
    }

    /// Appends the byte form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.push(self.protocol.level());
        let cx = EncodeContext::new(self.protocol);
        let mut record = |kind: u8, packet: &Packet<'_>| {
            let mut body = Vec::new();
            // Every packet here was encoded once already (sent or checked at publish time).
            if encode(packet, &cx, &mut body).is_ok() {
                out.push(kind);
                out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(&body);
            }
        };
        for s in &self.inflight {
            match s {
                Stored::Publish(p) => record(1, &Packet::Publish(p.clone())),
                Stored::PubRel(id) => record(2, &Packet::PubRel(PubResponse::new(*id))),
            }
        }
        for p in &self.queued {
            record(3, &Packet::Publish(p.clone()));
        }
        let one = PacketId::new(1);
        for (filter, sub_id) in &self.subscriptions {
            let mut props = Properties::new();
            if let (Some(s), true) = (sub_id, self.protocol.is_v5()) {
                props.subscription_identifiers.push(*s);
            }
            if let Some(packet_id) = one {
                record(
                    4,
                    &Packet::Subscribe(Subscribe {
                        packet_id,
                        properties: props.into(),
                        filters: vec![filter.clone()].into(),
                    }),
                );
            }
        }
        for id in &self.inbound_qos2 {
            record(5, &Packet::PubRec(PubResponse::new(*id)));
        }
    }

    /// Reads the byte form written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let (header, mut rest) = bytes.split_at_checked(6).ok_or(StateError::BadHeader)?;
        if header.get(..4) != Some(&MAGIC[..]) || header.get(4) != Some(&FORMAT) {
            return Err(StateError::BadHeader);
        }
        let protocol = match header.get(5) {
            Some(4) => ProtocolVersion::V311,
            Some(5) => ProtocolVersion::V5,
            _ => return Err(StateError::BadHeader),
        };
        let cx = DecodeContext::new(protocol).with_max_packet_size(u32::MAX);
        let mut state = Self {
            protocol,
            inflight: Vec::new(),
            queued: Vec::new(),
            subscriptions: Vec::new(),
            inbound_qos2: Vec::new(),
        };
        while let Some((&kind, tail)) = rest.split_first() {
            let (len, tail) = tail.split_at_checked(4).ok_or(StateError::BadRecord)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (body, tail) = tail.split_at_checked(len).ok_or(StateError::BadRecord)?;
            rest = tail;
            let packet = match decode(body, &cx) {
                Ok(Some((p, used))) if used == body.len() => p.into_owned(),
                _ => return Err(StateError::BadPacket),
            };
            match (kind, packet) {
                (1, Packet::Publish(p)) if p.packet_id.is_some() => {
                    state.inflight.push(Stored::Publish(p))
                }
                (2, Packet::PubRel(r)) => state.inflight.push(Stored::PubRel(r.packet_id)),
                (3, Packet::Publish(p)) => state.queued.push(p),
                (4, Packet::Subscribe(s)) => {
                    let sub_id = s.properties.subscription_identifiers.iter().next();
                    for (filter, options) in s.filters.iter() {
                        let mut f = SubscribeFilter::new(filter, options.qos);
                        f.options = options;
                        state.subscriptions.push((f, sub_id));
                    }
                }
                (5, Packet::PubRec(r)) => state.inbound_qos2.push(r.packet_id),
                (1..=5, _) => return Err(StateError::BadPacket),
                _ => return Err(StateError::BadRecord),
            }
        }
        Ok(state)
    }
}
