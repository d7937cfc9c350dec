//! [`Decoder`]: turns a byte stream that arrives in arbitrary pieces into packets.

use alloc::vec::Vec;

use crate::decode::{DecodeContext, decode_body, decode_header};
use crate::error::DecodeError;
use crate::packet::{OwnedPacket, Packet};
use crate::types::ProtocolVersion;

/// Buffers partial input and yields whole packets.
///
/// Feed it bytes as they arrive with [`feed`](Self::feed), then call
/// [`next_packet`](Self::next_packet) (owned packets) or [`next_borrowed`](Self::next_borrowed)
/// (zero-copy, borrowing the decoder's buffer) until it returns `Ok(None)`, which means "need
/// more bytes" and is not an error.
///
/// Each frame's declared size is checked against the maximum packet size as soon as its fixed
/// header has arrived: an oversized frame is reported before its body is received, and its body
/// is never kept. Frames that arrived complete before a bad one are still returned first, so
/// nothing already accepted is lost. After an error the decoder stays failed: the connection
/// should be closed.
///
/// ```
/// use mqttx_codec::{Decoder, DecodeContext, Packet, ProtocolVersion};
/// let mut decoder = Decoder::new(DecodeContext::new(ProtocolVersion::V311));
/// // A PINGREQ and half of a PUBLISH.
/// decoder.feed(&[0xC0, 0x00, 0x30, 0x07, 0x00, 0x03, b'a']);
/// assert_eq!(decoder.next_packet()?, Some(Packet::PingReq));
/// assert_eq!(decoder.next_packet()?, None); // need more bytes
/// decoder.feed(&[b'/', b'b', b'h', b'i']);
/// let Some(Packet::Publish(p)) = decoder.next_packet()? else { unreachable!() };
/// assert_eq!((&*p.topic, &*p.payload), ("a/b", &b"hi"[..]));
/// # Ok::<(), mqttx_codec::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    /// Storage, initialized once and reused: bytes `start..end` are data, the rest is room
    /// for [`read_buf`](Self::read_buf).
    buf: Vec<u8>,
    /// End of the buffered data.
    end: usize,
    /// Start of the first frame not yet returned.
    start: usize,
    /// Start of the first frame whose header has not been checked or whose body is incomplete.
    scanned: usize,
    cx: DecodeContext,
    error: Option<DecodeError>,
}

impl Decoder {
    /// A decoder with the given context.
    pub const fn new(cx: DecodeContext) -> Self {
        Self {
            buf: Vec::new(),
            end: 0,
            start: 0,
            scanned: 0,
            cx,
            error: None,
        }
    }

    /// The context in force.
    pub const fn context(&self) -> &DecodeContext {
        &self.cx
    }

    /// Sets the protocol version, e.g. once a server has read the CONNECT.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.cx.version = version;
    }

    /// Sets the maximum packet size for frames whose header has not been checked yet.
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.cx.max_packet_size = max;
    }

    /// Bytes buffered and not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Appends bytes from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let room = self.read_buf(bytes.len());
        room[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Room for at least `min` more bytes at the end of the buffer, to read from a socket into
    /// directly (no copy through [`feed`](Self::feed)); then call [`commit`](Self::commit) with
    /// the number of bytes read.
    ///
    /// The room is initialized memory that the decoder reuses, so asking for the same size
    /// again costs nothing.
    ///
    /// ```
    /// use mqttx_codec::{DecodeContext, Decoder, Packet, ProtocolVersion};
    /// let mut decoder = Decoder::new(DecodeContext::new(ProtocolVersion::V311));
    /// let room = decoder.read_buf(4096);
    /// room[..2].copy_from_slice(&[0xC0, 0x00]); // as a socket read would
    /// decoder.commit(2);
    /// assert_eq!(decoder.next_packet()?, Some(Packet::PingReq));
    /// # Ok::<(), mqttx_codec::DecodeError>(())
    /// ```
    pub fn read_buf(&mut self, min: usize) -> &mut [u8] {
        self.compact();
        let want = self.end + min;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Marks `n` bytes written into [`read_buf`](Self::read_buf)'s room as received (at most
    /// the room's size), and checks the headers that became readable.
    pub fn commit(&mut self, n: usize) {
        if self.error.is_some() {
            return;
        }
        self.end = (self.end + n).min(self.buf.len());
        self.scan();
    }

    /// Drops consumed bytes when that is cheap relative to what remains.
    fn compact(&mut self) {
        if self.start == self.end {
            self.end = 0;
            self.start = 0;
            self.scanned = 0;
        } else if self.start >= 4096 && self.start * 2 >= self.end {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
    }

    /// Checks the header of every frame that became readable; an oversized or malformed header
    /// stops the scan, and the bytes from that frame on are dropped.
    fn scan(&mut self) {
        loop {
            let rest = self.buf.get(self.scanned..self.end).unwrap_or_default();
            match decode_header(rest, self.cx.max_packet_size) {
                Ok(Some(h)) if h.frame_len() <= rest.len() => self.scanned += h.frame_len(),
                Ok(_) => return,
                Err(e) => {
                    // The bad frame and anything after it are dropped, never kept.
                    self.error = Some(e);
                    self.end = self.scanned;
                    return;
                }
            }
        }
    }

    /// The next packet, borrowing from the decoder's buffer (no copy), or `Ok(None)` when
    /// more bytes are needed.
    pub fn next_borrowed(&mut self) -> Result<Option<Packet<'_>>, DecodeError> {
        let rest = self.buf.get(self.start..self.end).unwrap_or_default();
        let header = match decode_header(rest, self.cx.max_packet_size) {
            Ok(Some(h)) if h.frame_len() <= rest.len() => h,
            Ok(_) => return self.error.map_or(Ok(None), Err),
            Err(e) => {
                self.error = Some(e);
                return Err(e);
            }
        };
        let body_start = self.start + header.header_len;
        let end = self.start + header.frame_len();
        self.start = end;
        if self.scanned < end {
            self.scanned = end;
        }
        let body = self.buf.get(body_start..end).unwrap_or_default();
        match decode_body(header.first_byte, body, self.cx.version) {
            Ok(packet) => Ok(Some(packet)),
            Err(e) => {
                self.error = Some(e);
                Err(e)
            }
        }
    }

    /// The next packet as an [`OwnedPacket`], or `Ok(None)` when more bytes are needed.
    pub fn next_packet(&mut self) -> Result<Option<OwnedPacket>, DecodeError> {
        self.next_borrowed().map(|p| p.map(Packet::into_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::DEFAULT_MAX_PACKET_SIZE;

    #[test]
    fn oversized_header_fails_before_the_body_arrives() {
        let mut d = Decoder::new(DecodeContext::new(ProtocolVersion::V311));
        // A complete PINGREQ, then a PUBLISH declaring 2 MiB (0x80 0x80 0x80 0x01).
        d.feed(&[0xC0, 0x00, 0x30, 0x80, 0x80, 0x80, 0x01, 0x00]);
        assert_eq!(d.next_packet(), Ok(Some(Packet::PingReq)));
        let err = d.next_packet().unwrap_err();
        assert_eq!(
            err,
            DecodeError::PacketTooLarge {
                size: 5 + 2_097_152,
                max: DEFAULT_MAX_PACKET_SIZE
            }
        );
        assert_eq!(err.reason_code().as_u8(), 0x95);
        // The body is never buffered.
        d.feed(&[0u8; 4096]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_packet(), Err(err));
    }
}
