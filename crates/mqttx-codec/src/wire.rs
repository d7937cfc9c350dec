//! Data representations of MQTT 5.0 §1.5: the checked reader and the writer.
//!
//! Every read is bounds-checked and returns [`DecodeError::UnexpectedEof`] past the end:
//! a packet body is always a complete frame, so missing bytes there are Malformed, never
//! "need more".

use crate::error::DecodeError;

/// The largest value a Variable Byte Integer holds (MQTT 5.0 §1.5.5).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// A cursor over one packet's bytes.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::UnexpectedEof)?;
        self.buf = rest;
        Ok(b)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.buf {
            [a, b, ref rest @ ..] => {
                self.buf = rest;
                Ok(u16::from_be_bytes([a, b]))
            }
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match *self.buf {
            [a, b, c, d, ref rest @ ..] => {
                self.buf = rest;
                Ok(u32::from_be_bytes([a, b, c, d]))
            }
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEof);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A Variable Byte Integer (MQTT 5.0 §1.5.5).
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(self.buf)? {
            Some((value, used)) => {
                self.buf = &self.buf[used..];
                Ok(value)
            }
            None => Err(DecodeError::UnexpectedEof),
        }
    }

    /// Binary Data: a two-byte length and that many bytes (MQTT 5.0 §1.5.6).
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String (MQTT 5.0 §1.5.4).
    #[inline]
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        utf8(bytes)
    }

    /// A Topic Name: a UTF-8 Encoded String without wildcards, checked in one pass.
    #[inline]
    pub(crate) fn topic_name(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        checked_str(bytes, true)
    }

    /// A string this crate validated before (re-reading stored wire bytes): only the
    /// `&str` conversion is repeated.
    #[inline]
    pub(crate) fn validated_string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        checked_str(bytes, false)
    }
}

/// Checks a UTF-8 Encoded String.
///
/// `[MQTT-1.5.4-1]` The character data in a UTF-8 Encoded String MUST be well-formed UTF-8 as
/// defined by the Unicode specification and restated in RFC 3629. In particular, the character
/// data MUST NOT include encodings of code points between U+D800 and U+DFFF.
/// `[MQTT-1.5.4-2]` A UTF-8 Encoded String MUST NOT include an encoding of the null character
/// U+0000.
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    checked_str(bytes, false)
}

/// What a one-pass scan of a string found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Neither U+0000 nor (when asked) a wildcard.
    Clean,
    /// A NUL byte.
    Nul,
    /// A `+` or `#` (only reported when wildcards were asked for).
    Wildcard,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero exactly when some byte of `x` is zero (the classic bit trick; exact for "any").
#[inline(always)]
const fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Eight bytes of `bytes` from `at`, little-endian; the caller keeps `at + 8 <= len`.
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        w.copy_from_slice(src);
    }
    u64::from_le_bytes(w)
}

/// One pass over `bytes`, eight at a time: whether any byte is NUL, whether (with `wildcards`)
/// any is `+` or `#`, and whether any is outside ASCII. The last word overlaps the one before
/// rather than looping over a remainder.
#[inline(always)]
fn swar(bytes: &[u8], wildcards: bool) -> (bool, bool, bool) {
    let n = bytes.len();
    if n < 8 {
        let (mut nul, mut wild, mut all) = (false, false, 0u8);
        for &b in bytes {
            nul |= b == 0;
            wild |= wildcards & ((b == b'+') | (b == b'#'));
            all |= b;
        }
        return (nul, wild, all >= 0x80);
    }
    let (mut nul, mut wild, mut all) = (0u64, 0u64, 0u64);
    let mut step = |x: u64| {
        nul |= zero_bytes(x);
        if wildcards {
            wild |= zero_bytes(x ^ (LO * u64::from(b'+'))) | zero_bytes(x ^ (LO * u64::from(b'#')));
        }
        all |= x;
    };
    let mut at = 0;
    while at + 8 <= n {
        step(word(bytes, at));
        at += 8;
    }
    if at < n {
        step(word(bytes, n - 8));
    }
    (nul != 0, wild != 0, all & HI != 0)
}

/// Looks for NUL and, if `wildcards`, for `+` and `#`.
#[inline]
pub(crate) fn scan(bytes: &[u8], wildcards: bool) -> Scan {
    match swar(bytes, wildcards) {
        (true, _, _) => Scan::Nul,
        (false, true, _) => Scan::Wildcard,
        (false, false, _) => Scan::Clean,
    }
}

/// A validated UTF-8 Encoded String: well-formed UTF-8 without U+0000 and, with `wildcards`,
/// without `+` or `#` (a Topic Name).
///
/// The common case, ASCII, is proven in the same single pass that looks for the forbidden
/// bytes; anything else goes through the standard library's full UTF-8 validation.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn checked_str(bytes: &[u8], wildcards: bool) -> Result<&str, DecodeError> {
    let (nul, wild, non_ascii) = swar(bytes, wildcards);
    if !nul && !wild && !non_ascii {
        // SAFETY: `swar` found no byte with its high bit set (it ORs every byte of `bytes`,
        // and every word it reads lies inside `bytes`), so `bytes` is ASCII, and ASCII is
        // well-formed UTF-8.
        return Ok(unsafe { core::str::from_utf8_unchecked(bytes) });
    }
    if nul {
        return Err(DecodeError::NullCharacter);
    }
    // [MQTT-3.3.2-2] The Topic Name in the PUBLISH packet MUST NOT contain wildcard characters.
    if wild {
        return Err(DecodeError::WildcardInTopicName);
    }
    // `from_utf8` rejects surrogates and overlong forms, as RFC 3629 requires.
    core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Reads a Variable Byte Integer at the start of `buf`.
///
/// `Ok(None)` when `buf` ends before the integer does. A continuation bit on the fourth byte,
/// or a non-minimal encoding (`[MQTT-1.5.5-1]` the encoded value MUST use the minimum number of
/// bytes necessary), is Malformed.
#[inline]
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::MalformedVariableByteInteger);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedVariableByteInteger)
}

/// Bytes a Variable Byte Integer takes.
#[inline]
pub(crate) const fn varint_len(value: u32) -> usize {
    if value < 0x80 {
        1
    } else if value < 0x4000 {
        2
    } else if value < 0x20_0000 {
        3
    } else {
        4
    }
}

/// Where an encoder writes. The encoder computes the exact size first and checks it, so the
/// writes themselves cannot fail.
pub(crate) trait Out {
    fn put(&mut self, bytes: &[u8]);

    #[inline]
    fn put_u8(&mut self, b: u8) {
        self.put(&[b]);
    }

    #[inline]
    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    #[inline]
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    #[inline]
    fn put_varint(&mut self, mut value: u32) {
        let mut tmp = [0u8; 4];
        let mut n = 0;
        loop {
            let mut byte = (value & 0x7F) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            tmp[n] = byte;
            n += 1;
            if value == 0 || n == 4 {
                break;
            }
        }
        self.put(&tmp[..n]);
    }

    /// A length-prefixed field; the caller has checked that it fits in 16 bits.
    #[inline]
    fn put_binary(&mut self, bytes: &[u8]) {
        self.put_u16(bytes.len() as u16);
        self.put(bytes);
    }
}

impl Out for alloc::vec::Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn put_u8(&mut self, b: u8) {
        self.push(b);
    }
}

/// A writer into a slice whose length was checked beforehand.
#[derive(Debug)]
pub(crate) struct SliceOut<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) pos: usize,
}

impl Out for SliceOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        // The encoder checked the total size against the slice, so this range is in bounds;
        // `get_mut` keeps that a checked fact rather than a panic if it were ever wrong.
        let end = self.pos + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_encoding() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut out = alloc::vec::Vec::new();
            out.put_varint(v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&out), Ok(Some((v, out.len()))));
        }
    }

    #[test]
    fn scan_finds_nul_and_wildcards_in_every_position() {
        for len in 0..40 {
            let clean = alloc::vec![b'a'; len];
            assert_eq!(scan(&clean, true), Scan::Clean);
            for pos in 0..len {
                for (b, wild, expected) in [
                    (0u8, false, Scan::Nul),
                    (0, true, Scan::Nul),
                    (b'+', true, Scan::Wildcard),
                    (b'#', true, Scan::Wildcard),
                    (b'+', false, Scan::Clean),
                    (0x80, true, Scan::Clean),
                ] {
                    let mut v = clean.clone();
                    v[pos] = b;
                    assert_eq!(scan(&v, wild), expected, "len {len} pos {pos} byte {b}");
                }
            }
        }
    }

    #[test]
    fn checked_str_agrees_with_the_standard_library() {
        let samples: [&[u8]; 12] = [
            b"",
            b"plain/ascii/topic",
            b"caf\xC3\xA9",
            b"\xF0\xAA\x9B\x94",
            b"\xED\xA0\x80",
            b"\xC0\xAF",
            b"a\x00b",
            b"a/+/b",
            b"#",
            b"\xFF",
            b"12345678\x80",
            b"1234567\xE2\x82\xAC",
        ];
        for s in samples {
            for wildcards in [false, true] {
                let expected = if s.contains(&0) {
                    Err(DecodeError::NullCharacter)
                } else if wildcards && s.iter().any(|&b| b == b'+' || b == b'#') {
                    Err(DecodeError::WildcardInTopicName)
                } else {
                    core::str::from_utf8(s).map_err(|_| DecodeError::InvalidUtf8)
                };
                assert_eq!(checked_str(s, wildcards), expected, "{s:?} {wildcards}");
            }
        }
    }

    proptest::proptest! {
        /// The one-pass check (and its `unsafe` ASCII shortcut) agrees with the standard
        /// library on any bytes, ASCII-heavy or not, at every length around the word size.
        #[test]
        fn checked_str_matches_std_on_random_bytes(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![0x20u8..0x7F, proptest::prelude::any::<u8>()],
                0..40,
            ),
            wildcards in proptest::prelude::any::<bool>(),
        ) {
            let expected = if bytes.contains(&0) {
                Err(DecodeError::NullCharacter)
            } else if wildcards && bytes.iter().any(|&b| b == b'+' || b == b'#') {
                Err(DecodeError::WildcardInTopicName)
            } else {
                core::str::from_utf8(&bytes).map_err(|_| DecodeError::InvalidUtf8)
            };
            proptest::prop_assert_eq!(checked_str(&bytes, wildcards), expected);
        }
    }

    #[test]
    fn varint_rejects_non_minimal_and_five_bytes() {
        assert_eq!(
            read_varint(&[0x80, 0x00]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(read_varint(&[0xFF, 0xFF]), Ok(None));
    }
}
