//! A byte form of [`SessionState`], for session stores that keep sessions outside the
//! process (a durable store writes it to disk; the in-memory store does not need it).
//!
//! The session's instants (when each queued message started waiting, for Message Expiry)
//! are process-local, so the caller passes `now` twice, as an [`Instant`] and as wall-clock
//! milliseconds since the Unix epoch: the core still reads no clock.
//!
//! Layout, big-endian: the magic `MQXS` and a format version (1); the next Packet Identifier
//! (u16); the inbound QoS 2 identifiers awaiting PUBREL (u16 count, u16 each); the messages
//! in flight (u32 count; each: Packet Identifier u16, state u8 — 0 awaiting PUBACK, 1 awaiting
//! PUBREC, 2 awaiting PUBCOMP —, order u64, and the message for states 0 and 1); the queue
//! (u32 count; each: arrival time in Unix milliseconds u64 and the message). A message is its
//! encoded PUBLISH with what the session needs to send it: flags u8 (bit 0 MQTT 5.0, bit 1
//! has an expiry, bits 2–3 QoS), the expiry u32, the Packet Identifier's offset u32 (0 for
//! QoS 0), the length u32 and the bytes. Decoding checks every length and field, so a
//! corrupt or hostile record is an error, never a panic.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqttx_codec::QoS;

use super::{Flight, InFlight, Outbound, SessionState};

const MAGIC: &[u8; 4] = b"MQXS";
const FORMAT: u8 = 1;

/// Why a stored session state could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateDecodeError {
    /// Not a session state of a format this version knows.
    Format,
    /// The bytes end early, or a field is out of range.
    Corrupt,
}

impl fmt::Display for StateDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Format => "not a session state of a known format",
            Self::Corrupt => "the session state is corrupt",
        })
    }
}

impl std::error::Error for StateDecodeError {}

fn put_outbound(out: &mut Vec<u8>, message: &Outbound) {
    let qos = match message.qos {
        QoS::AtMostOnce => 0u8,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    };
    let flags = u8::from(message.v5) | (u8::from(message.expiry.is_some()) << 1) | (qos << 2);
    out.push(flags);
    out.extend_from_slice(&message.expiry.unwrap_or(0).to_be_bytes());
    let offset = message.pid_offset.unwrap_or(0);
    out.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_be_bytes());
    let len = u32::try_from(message.bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&message.bytes);
}

/// A cursor over the bytes being decoded; every read is checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateDecodeError> {
        if self.rest.len() < n {
            return Err(StateDecodeError::Corrupt);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateDecodeError> {
        self.take(N)?
            .try_into()
            .map_err(|_| StateDecodeError::Corrupt)
    }

    fn u8(&mut self) -> Result<u8, StateDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, StateDecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StateDecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StateDecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A count of items each at least `min_size` bytes long, checked against what is left
    /// (so a corrupt count cannot make the decoder reserve gigabytes).
    fn count(&mut self, wide: bool, min_size: usize) -> Result<usize, StateDecodeError> {
        let n = if wide {
            self.u32()? as usize
        } else {
            usize::from(self.u16()?)
        };
        if n.saturating_mul(min_size) > self.rest.len() {
            return Err(StateDecodeError::Corrupt);
        }
        Ok(n)
    }

    fn outbound(&mut self) -> Result<Outbound, StateDecodeError> {
        let flags = self.u8()?;
        let expiry = self.u32()?;
        let offset = self.u32()? as usize;
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let qos = match (flags >> 2) & 0b11 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(StateDecodeError::Corrupt),
        };
        // The bytes must be a PUBLISH of that QoS, with room for the Packet Identifier.
        let first = *bytes.first().ok_or(StateDecodeError::Corrupt)?;
        let header_qos = (first >> 1) & 0b11;
        let pid_offset = if qos == QoS::AtMostOnce {
            None
        } else {
            if offset == 0 || offset.saturating_add(2) > bytes.len() {
                return Err(StateDecodeError::Corrupt);
            }
            Some(offset)
        };
        if first >> 4 != 3 || header_qos != (flags >> 2) & 0b11 || flags >> 4 != 0 {
            return Err(StateDecodeError::Corrupt);
        }
        Ok(Outbound {
            bytes: Bytes::copy_from_slice(bytes),
            pid_offset,
            qos,
            expiry: (flags & 0b10 != 0).then_some(expiry),
            v5: flags & 1 != 0,
            id: None,
            receipt: super::ReceiptSlot(None),
        })
    }
}

impl Outbound {
    /// Appends the byte form of this message (as in a session state's layout, above) to
    /// `out`, for a journal record. Its journal key is not part of it.
    pub fn encode_record(&self, out: &mut Vec<u8>) {
        put_outbound(out, self);
    }

    /// Reads a message written by [`encode_record`](Self::encode_record): all of `bytes`,
    /// checked field by field.
    pub fn decode_record(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        let mut reader = Reader { rest: bytes };
        let message = reader.outbound()?;
        if !reader.rest.is_empty() {
            return Err(StateDecodeError::Corrupt);
        }
        Ok(message)
    }
}

impl super::Message {
    /// The byte form of this message for a journal record: an MQTT 5.0 PUBLISH with its QoS,
    /// RETAIN flag and forwarded properties (and Packet Identifier 1 for QoS 1 and 2).
    pub fn encode_record(&self) -> Result<Vec<u8>, mqttx_codec::EncodeError> {
        let outbound = Outbound::encode(
            self,
            mqttx_codec::ProtocolVersion::V5,
            self.qos,
            self.retain,
            &[],
        )?;
        Ok(outbound.bytes.to_vec())
    }

    /// Reads a message written by [`encode_record`](Self::encode_record): all of `bytes`
    /// must be one valid MQTT 5.0 PUBLISH with a topic name.
    pub fn decode_record(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        let cx = mqttx_codec::DecodeContext::new(mqttx_codec::ProtocolVersion::V5)
            .with_max_packet_size(mqttx_codec::MAX_PACKET_SIZE);
        let Ok(Some((mqttx_codec::Packet::Publish(publish), used))) =
            mqttx_codec::decode(bytes, &cx)
        else {
            return Err(StateDecodeError::Corrupt);
        };
        if used != bytes.len() {
            return Err(StateDecodeError::Corrupt);
        }
        let topic =
            mqttx_router::TopicName::new(&publish.topic).map_err(|_| StateDecodeError::Corrupt)?;
        Ok(Self::from_parts(
            topic,
            &publish.payload,
            publish.qos,
            publish.retain,
            &publish.properties,
        ))
    }
}

/// Where a restored message in flight stands, for [`SessionState::restore_in_flight`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlightState {
    /// Sent (QoS 1 or 2), not yet acknowledged: resent with DUP.
    Sent,
    /// QoS 2, PUBREC received and PUBREL sent: the PUBREL is resent.
    Released,
}

impl SessionState {
    /// Adds a message that waited since `since` (for restoring a session from a journal, in
    /// the order the messages arrived).
    pub fn restore_queued(&mut self, message: Outbound, since: Instant) {
        self.queued_bytes += message.len();
        self.queue.push_back((message, since));
    }

    /// Adds a message in flight under `packet_id` (for restoring a session from a journal,
    /// in the order the messages were sent). A second message under the same identifier, or
    /// a QoS 0 message, is queued instead.
    pub fn restore_in_flight(
        &mut self,
        packet_id: u16,
        state: FlightState,
        message: Outbound,
        since: Instant,
    ) {
        let taken = packet_id == 0 || self.inflight.iter().any(|f| f.packet_id == packet_id);
        let state = match (message.qos, state) {
            (QoS::AtMostOnce, _) => None,
            (QoS::AtLeastOnce, _) => Some(InFlight::Qos1),
            (QoS::ExactlyOnce, FlightState::Sent) => Some(InFlight::Qos2Sent),
            (QoS::ExactlyOnce, FlightState::Released) => Some(InFlight::Qos2Released),
        };
        match state {
            Some(state) if !taken => {
                let seq = self.inflight.len() as u64 + 1;
                self.next_packet_id = self.next_packet_id.max(packet_id.wrapping_add(1)).max(1);
                self.inflight.push(Flight {
                    packet_id,
                    state,
                    seq,
                    message: Some(message),
                });
            }
            _ => self.restore_queued(message, since),
        }
    }

    /// Moves `other`'s queued messages after this state's, and its inbound QoS 2
    /// identifiers into this state.
    pub fn append(&mut self, other: &mut SessionState) {
        self.queued_bytes += std::mem::take(&mut other.queued_bytes);
        self.queue.append(&mut other.queue);
        self.incoming_qos2.extend(other.incoming_qos2.drain());
    }

    /// Drops the queued messages whose Message Expiry Interval has passed by `now`
    /// [MQTT-3.3.2-5]; returns how many, and adds the journal keys of those that have one to
    /// `ids`.
    pub fn sweep_expired(&mut self, now: Instant, ids: &mut Vec<u64>) -> usize {
        let before = self.queue.len();
        let mut freed = 0;
        self.queue.retain(|(message, since)| {
            let Some(expiry) = message.expiry else {
                return true;
            };
            let waited = now.saturating_duration_since(*since).as_secs();
            if waited < u64::from(expiry) {
                return true;
            }
            freed += message.len();
            ids.extend(message.id);
            false
        });
        self.queued_bytes -= freed;
        before - self.queue.len()
    }

    /// Adds an inbound QoS 2 Packet Identifier awaiting PUBREL.
    pub fn restore_inbound(&mut self, packet_id: u16) {
        self.incoming_qos2.insert(packet_id);
    }

    /// Gives every message a new journal key from `next_id`, and returns what a journal needs
    /// to restore this state: each message (those in flight first, in the order they were
    /// sent, then the queued ones) and the inbound QoS 2 identifiers. For moving a session
    /// into another journal, as when a cluster node takes a session over. A QoS 2 message
    /// whose PUBREC came and whose message was not kept (only its PUBREL is owed) is left out
    /// of the list: a journal cannot hold a flight without its message.
    pub fn rekey(&mut self, now: Instant, mut next_id: impl FnMut() -> u64) -> Rekeyed {
        let mut out = Rekeyed::default();
        self.inflight.sort_by_key(|f| f.seq);
        for flight in &mut self.inflight {
            let Some(message) = flight.message.take() else {
                continue;
            };
            let message = message.with_id(next_id());
            let state = match flight.state {
                InFlight::Qos2Released => FlightState::Released,
                InFlight::Qos1 | InFlight::Qos2Sent => FlightState::Sent,
            };
            out.messages
                .push((message.clone(), Some((flight.packet_id, state)), now));
            flight.message = Some(message);
        }
        for (message, since) in &mut self.queue {
            let rekeyed = message.clone().with_id(next_id());
            out.messages.push((rekeyed.clone(), None, *since));
            *message = rekeyed;
        }
        out.inbound.extend(self.incoming_qos2.iter().copied());
        out.inbound.sort_unstable();
        out
    }
}

/// A message in flight: its Packet Identifier and how far its acknowledgement went.
pub type FlightOf = (u16, FlightState);

/// What [`SessionState::rekey`] lists for a journal.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Rekeyed {
    /// Each message with its new key ([`Outbound::id`]), its Packet Identifier and state
    /// when in flight, and when it started waiting.
    pub messages: Vec<(Outbound, Option<FlightOf>, Instant)>,
    /// The inbound QoS 2 identifiers awaiting PUBREL.
    pub inbound: Vec<u16>,
}

impl SessionState {
    /// Appends the byte form of this state to `out` (its layout is described in `proto/persist.rs`).
    /// `now` and `now_unix_ms` are the same moment on the session's clock and on the wall
    /// clock.
    pub fn encode(&self, now: Instant, now_unix_ms: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&self.next_packet_id.to_be_bytes());
        let mut qos2: Vec<u16> = self.incoming_qos2.iter().copied().collect();
        qos2.sort_unstable();
        out.extend_from_slice(&u16::try_from(qos2.len()).unwrap_or(u16::MAX).to_be_bytes());
        for id in qos2.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&(self.inflight.len() as u32).to_be_bytes());
        for flight in &self.inflight {
            out.extend_from_slice(&flight.packet_id.to_be_bytes());
            out.push(match flight.state {
                InFlight::Qos1 => 0,
                InFlight::Qos2Sent => 1,
                InFlight::Qos2Released => 2,
            });
            out.extend_from_slice(&flight.seq.to_be_bytes());
            match &flight.message {
                Some(message) => {
                    out.push(1);
                    put_outbound(out, message);
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(self.queue.len() as u32).to_be_bytes());
        for (message, since) in &self.queue {
            let waited = now.saturating_duration_since(*since).as_millis();
            let arrival = now_unix_ms.saturating_sub(u64::try_from(waited).unwrap_or(u64::MAX));
            out.extend_from_slice(&arrival.to_be_bytes());
            put_outbound(out, message);
        }
    }

    /// Reads a state written by [`encode`](Self::encode). `now` and `now_unix_ms` are the
    /// same moment on this process's clock and the wall clock: a message that waited an
    /// hour before the restart has waited an hour after it.
    pub fn decode(bytes: &[u8], now: Instant, now_unix_ms: u64) -> Result<Self, StateDecodeError> {
        let mut r = Reader { rest: bytes };
        if r.take(4).ok() != Some(&MAGIC[..]) || r.u8().ok() != Some(FORMAT) {
            return Err(StateDecodeError::Format);
        }
        let next_packet_id = r.u16()?;
        let n = r.count(false, 2)?;
        let mut incoming_qos2 = HashSet::with_capacity(n);
        for _ in 0..n {
            incoming_qos2.insert(r.u16()?);
        }
        let n = r.count(true, 12)?;
        let mut inflight = Vec::with_capacity(n);
        for _ in 0..n {
            let packet_id = r.u16()?;
            let state = match r.u8()? {
                0 => InFlight::Qos1,
                1 => InFlight::Qos2Sent,
                2 => InFlight::Qos2Released,
                _ => return Err(StateDecodeError::Corrupt),
            };
            let seq = r.u64()?;
            let message = match r.u8()? {
                0 => None,
                1 => Some(r.outbound()?),
                _ => return Err(StateDecodeError::Corrupt),
            };
            if packet_id == 0 || message.is_none() != matches!(state, InFlight::Qos2Released) {
                return Err(StateDecodeError::Corrupt);
            }
            inflight.push(Flight {
                packet_id,
                state,
                seq,
                message,
            });
        }
        let n = r.count(true, 21)?;
        let mut queue = VecDeque::with_capacity(n);
        let mut queued_bytes = 0usize;
        for _ in 0..n {
            let arrival = r.u64()?;
            let message = r.outbound()?;
            let waited = Duration::from_millis(now_unix_ms.saturating_sub(arrival));
            let since = now.checked_sub(waited).unwrap_or(now);
            queued_bytes += message.len();
            queue.push_back((message, since));
        }
        if !r.rest.is_empty() {
            return Err(StateDecodeError::Corrupt);
        }
        Ok(Self {
            queue,
            queued_bytes,
            inflight,
            incoming_qos2,
            next_packet_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mqttx_codec::{ProtocolVersion, QoS};
    use mqttx_router::TopicName;

    use super::*;
    use crate::proto::Message;

    fn outbound(topic: &str, qos: QoS, v5: bool, expiry: Option<u32>) -> Outbound {
        let mut message = Message::new(
            TopicName::new(topic).expect("topic"),
            &b"payload"[..],
            qos,
            false,
        );
        message.properties.message_expiry_interval = expiry;
        let version = if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        Outbound::encode(&message, version, qos, false, &[]).expect("encode")
    }

    fn sample(now: Instant) -> SessionState {
        let mut state = SessionState {
            next_packet_id: 7,
            ..SessionState::default()
        };
        state.incoming_qos2.extend([3, 9]);
        state.inflight.push(Flight {
            packet_id: 4,
            state: InFlight::Qos1,
            seq: 1,
            message: Some(outbound("a/b", QoS::AtLeastOnce, true, Some(60))),
        });
        state.inflight.push(Flight {
            packet_id: 5,
            state: InFlight::Qos2Released,
            seq: 2,
            message: None,
        });
        assert!(state.enqueue(
            now - Duration::from_secs(30),
            outbound("c", QoS::ExactlyOnce, false, None),
            10,
            1 << 20
        ));
        assert!(state.enqueue(
            now,
            outbound("d/e/f", QoS::AtLeastOnce, true, Some(5)),
            10,
            1 << 20
        ));
        state
    }

    fn bytes_of(state: &SessionState, now: Instant, unix: u64) -> Vec<u8> {
        let mut out = Vec::new();
        state.encode(now, unix, &mut out);
        out
    }

    #[test]
    fn round_trip_keeps_everything_and_the_time_waited() {
        let now = crate::test_epoch() + Duration::from_secs(3600);
        let state = sample(now);
        let bytes = bytes_of(&state, now, 1_700_000_000_000);
        // Decoded 10 s later (wall clock and process clock both moved on).
        let later = now + Duration::from_secs(10);
        let back = SessionState::decode(&bytes, later, 1_700_000_010_000).expect("decode");
        assert_eq!(back.next_packet_id, 7);
        assert_eq!(back.incoming_qos2, HashSet::from([3, 9]));
        assert_eq!(back.inflight.len(), 2);
        assert_eq!(back.queued(), 2);
        assert_eq!(back.queued_bytes(), state.queued_bytes());
        let waited: Vec<u64> = back
            .queue
            .iter()
            .map(|(_, since)| later.duration_since(*since).as_secs())
            .collect();
        assert_eq!(waited, [40, 10]);
        for ((a, _), (b, _)) in state.queue.iter().zip(&back.queue) {
            assert_eq!(
                (&a.bytes, a.pid_offset, a.qos, a.expiry, a.v5),
                (&b.bytes, b.pid_offset, b.qos, b.expiry, b.v5)
            );
        }
        // Encoding what was decoded, at the same moment, gives the same bytes.
        assert_eq!(
            bytes_of(&back, later, 1_700_000_010_000),
            bytes_of(&state, later, 1_700_000_010_000)
        );
    }

    #[test]
    fn corrupt_bytes_are_errors() {
        let now = crate::test_epoch() + Duration::from_secs(3600);
        let bytes = bytes_of(&sample(now), now, 1_700_000_000_000);
        assert_eq!(
            SessionState::decode(b"", now, 0).err(),
            Some(StateDecodeError::Format)
        );
        assert_eq!(
            SessionState::decode(b"MQXS\x02", now, 0).err(),
            Some(StateDecodeError::Format)
        );
        // Every truncation, and every single-byte change, is an error or a valid state;
        // never a panic.
        for cut in 0..bytes.len() {
            assert!(
                SessionState::decode(&bytes[..cut], now, 0).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = SessionState::decode(&b, now, 0);
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            SessionState::decode(&trailing, now, 0).err(),
            Some(StateDecodeError::Corrupt)
        );
    }
}
