//! Codec benchmarks: mqttx-codec side by side with rumqttc's `mqttbytes` (v4 and v5 modules)
//! in the same run, plus a `memcpy` of the same bytes as the physical reference.
//!
//! Run with `cargo bench -p mqttx-benches --bench codec`. Both codecs decode the very same
//! bytes (produced by mqttx-codec and checked to decode in rumqttc too); rumqttc's packets for
//! the encode side are obtained by decoding those bytes with rumqttc, so both encode the same
//! packet. rumqttc reads from a `BytesMut` that it consumes, so its input is rebuilt in
//! untimed setup (`iter_batched`).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mqttx_benches::{Case, cases, mixed_stream};
use mqttx_codec::{
    DecodeContext, Decoder, EncodeContext, Packet, ProtocolVersion, decode, encode,
    encode_publish_header,
};
use rumqttc::mqttbytes::v4::Packet as RumqttV4;
use rumqttc::v5::mqttbytes::v5::Packet as RumqttV5;

const MAX: usize = 1 << 20;

/// A packet decoded by rumqttc, in the module matching the case's protocol version.
#[allow(clippy::large_enum_variant)] // Bench-only; sizes are the peer's.
enum Peer {
    V4(RumqttV4),
    V5(RumqttV5),
}

fn peer_decode(version: ProtocolVersion, buf: &mut BytesMut) -> Peer {
    if version.is_v5() {
        Peer::V5(RumqttV5::read(buf, Some(MAX as u32)).expect("rumqttc v5 decodes the vector"))
    } else {
        Peer::V4(RumqttV4::read(buf, MAX).expect("rumqttc v4 decodes the vector"))
    }
}

fn bench_case(c: &mut Criterion, case: &Case) {
    let mut group = c.benchmark_group(format!("codec/{}", case.name));
    group.throughput(Throughput::Elements(1));
    let bytes = case.bytes.clone();
    let version = case.version;
    let dcx = DecodeContext::new(version).with_max_packet_size(MAX as u32);
    let ecx = EncodeContext::new(version);

    group.bench_function("decode/mqttx", |b| {
        b.iter(|| decode(black_box(&bytes), &dcx).unwrap().unwrap().1)
    });
    group.bench_function("decode-owned/mqttx", |b| {
        b.iter(|| {
            decode(black_box(&bytes), &dcx)
                .unwrap()
                .unwrap()
                .0
                .into_owned()
        })
    });
    group.bench_function("decode/rumqttc", |b| {
        b.iter_batched(
            || BytesMut::from(&bytes[..]),
            |mut buf| peer_decode(version, &mut buf),
            BatchSize::SmallInput,
        )
    });

    // An application-built packet, and a decoded one being forwarded (as a broker does):
    // the latter reuses the validated wire bytes of its properties and repeated fields.
    let built = &case.packet;
    let (packet, _) = decode(&bytes, &dcx).unwrap().unwrap();
    let mut out = Vec::with_capacity(bytes.len());
    group.bench_function("encode/mqttx", |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(built), &ecx, &mut out).unwrap();
            out.len()
        })
    });
    group.bench_function("encode-forward/mqttx", |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(&packet), &ecx, &mut out).unwrap();
            out.len()
        })
    });
    if let Packet::Publish(publish) = &packet {
        // The copy-free path for large payloads: header only, payload sent by vectored write.
        group.bench_function("encode-header/mqttx", |b| {
            b.iter(|| {
                out.clear();
                encode_publish_header(black_box(publish), &ecx, &mut out).unwrap()
            })
        });
    }
    let peer = peer_decode(version, &mut BytesMut::from(&bytes[..]));
    let mut peer_out = BytesMut::with_capacity(bytes.len());
    group.bench_function("encode/rumqttc", |b| {
        b.iter(|| {
            peer_out.clear();
            match black_box(&peer) {
                Peer::V4(p) => p.write(&mut peer_out, MAX).unwrap(),
                Peer::V5(p) => p.write(&mut peer_out, Some(MAX as u32)).unwrap(),
            }
        })
    });
    let mut copy = vec![0u8; bytes.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&bytes));
            copy.len()
        })
    });
    group.finish();
}

fn bench_stream(c: &mut Criterion) {
    let (bytes, count) = mixed_stream(10_000);
    let mut group = c.benchmark_group("codec/stream-10k-mixed-v311");
    group.throughput(Throughput::Elements(count as u64));
    let dcx = DecodeContext::new(ProtocolVersion::V311).with_max_packet_size(MAX as u32);

    group.bench_function("decode/mqttx", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut n = 0;
            while let Some((p, used)) = decode(black_box(&bytes[pos..]), &dcx).unwrap() {
                black_box(&p);
                pos += used;
                n += 1;
            }
            assert_eq!(n, count);
        })
    });
    group.bench_function("decoder-64k-reads/mqttx", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(dcx);
            let mut n = 0;
            for chunk in bytes.chunks(64 * 1024) {
                decoder.feed(chunk);
                while let Some(p) = decoder.next_borrowed().unwrap() {
                    black_box(&p);
                    n += 1;
                }
            }
            assert_eq!(n, count);
        })
    });
    group.bench_function("decode/rumqttc", |b| {
        b.iter_batched(
            || BytesMut::from(&bytes[..]),
            |mut buf| {
                let mut n = 0;
                while !buf.is_empty() {
                    black_box(RumqttV4::read(&mut buf, MAX).unwrap());
                    n += 1;
                }
                assert_eq!(n, count);
            },
            BatchSize::LargeInput,
        )
    });
    let mut copy = vec![0u8; bytes.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&bytes));
            copy.len()
        })
    });
    group.finish();
}

fn all(c: &mut Criterion) {
    for case in cases() {
        bench_case(c, &case);
    }
    bench_stream(c);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = all
}
criterion_main!(benches);
