//! Bodies of the fuzz targets in `fuzz/fuzz_targets/`, kept in the library so each target is
//! one line and the same checks also run under `cargo test`.
//!
//! Compiled only with `--cfg fuzzing` (set by cargo-fuzz) and in this crate's unit tests.

use alloc::vec::Vec;

use crate::{
    DecodeContext, Decoder, EncodeContext, EncodeError, OwnedPacket, ProtocolVersion, decode,
    encode,
};

fn version(selector: u8) -> ProtocolVersion {
    match selector % 3 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    }
}

/// Decodes one packet from arbitrary bytes (the first byte picks the protocol version).
/// It must return, never panic.
pub fn decode_packet(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let cx = DecodeContext::new(version(selector));
    if let Ok(Some((packet, used))) = decode(bytes, &cx) {
        assert!(used <= bytes.len());
        // Every accessor of a decoded packet must work on validated bytes.
        let _ = alloc::format!("{packet:?}");
    }
}

/// Decodes, re-encodes and decodes again: the two decoded packets must be equal.
pub fn roundtrip(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let v = version(selector);
    let dcx = DecodeContext::new(v);
    let Ok(Some((packet, _))) = decode(bytes, &dcx) else {
        return;
    };
    let mut out = Vec::new();
    match encode(&packet, &EncodeContext::new(v), &mut out) {
        Ok(()) => {}
        // The decoder leaves the structure of Topic Filters to the receiver (it answers 0x8F
        // per filter); the encoder refuses to send an invalid one.
        Err(EncodeError::InvalidTopicFilter(_)) => return,
        Err(e) => panic!("decoded packet does not encode: {e:?}\n{packet:?}"),
    }
    let again = decode(&out, &dcx);
    match again {
        Ok(Some((p2, used))) => {
            assert_eq!(used, out.len());
            assert_eq!(p2, packet);
        }
        other => panic!("re-encoded packet does not decode: {other:?}\n{packet:?}"),
    }
}

/// Feeds arbitrary bytes to a [`Decoder`] in chunks whose sizes come from the input, and checks
/// that the packets (and the first error) are those of decoding the whole buffer at once.
pub fn decoder_stream(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunking, bytes)) = rest.split_first() else {
        return;
    };
    let cx = DecodeContext::new(version(selector)).with_max_packet_size(4096);

    // Reference: repeated one-shot decode over the whole buffer.
    let mut expected: Vec<OwnedPacket> = Vec::new();
    let mut expected_err = None;
    let mut pos = 0;
    loop {
        match decode(&bytes[pos..], &cx) {
            Ok(Some((p, used))) => {
                expected.push(p.into_owned());
                pos += used;
            }
            Ok(None) => break,
            Err(e) => {
                expected_err = Some(e);
                break;
            }
        }
    }

    let mut decoder = Decoder::new(cx);
    let mut got: Vec<OwnedPacket> = Vec::new();
    let mut got_err = None;
    let step = usize::from(chunking % 17) + 1;
    'outer: for (i, chunk) in bytes.chunks(step).enumerate() {
        // Vary chunk boundaries further: sometimes split a chunk in two feeds, sometimes write
        // it into `read_buf` and commit it, as a socket read would.
        if i % 3 == 1 && chunk.len() > 1 {
            decoder.feed(&chunk[..1]);
            decoder.feed(&chunk[1..]);
        } else if i % 3 == 2 {
            let room = decoder.read_buf(chunk.len() + usize::from(chunking % 5));
            room[..chunk.len()].copy_from_slice(chunk);
            decoder.commit(chunk.len());
        } else {
            decoder.feed(chunk);
        }
        loop {
            match decoder.next_packet() {
                Ok(Some(p)) => got.push(p),
                Ok(None) => break,
                Err(e) => {
                    got_err = Some(e);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(got_err, expected_err);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// The fuzz bodies hold on random input, so `cargo test` exercises them too.
        #[test]
        fn fuzz_bodies_hold(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::decode_packet(&data);
            super::roundtrip(&data);
            super::decoder_stream(&data);
        }
    }
}
