//! Codec benchmarks: the per-request cost of the protocol on the master and the worker.
//!
//! - `request_head/encode+decode`: a typical `GET` head (12 headers, no body) framed by
//!   `encode_master` into a reused `BytesMut`, split off with `split_frame` and decoded
//!   with `decode_master`: one request's trip through the codec. Target: under 1 µs.
//! - `request_head/encode` and `request_head/decode`: the two halves alone.
//! - `request_head/encode_borrowed`: the master's hot path, `encode_request_head` with
//!   the header bytes borrowed (`BytesRef`) instead of owned `Bytes`; same output bytes.
//! - `body_chunk_64k/decode`: decoding a 64 KiB body-chunk frame, which must not copy
//!   the data (checked once before timing: the data points into the read buffer).
//!
//! `cargo bench -p ferry-protocol --bench codec [-- --measurement-time 3 --warm-up-time 1]`
//!
//! Figures on 2026-11-21 (2 shared cores, load about 2, `nice -n 19`, criterion medians):
//! encode+decode 734 ns, encode 155 ns, decode 550 ns, encode_borrowed 154 ns (2.4 µs
//! before `BytesRef`, when serde wrote a `&[u8]` one byte at a time), 64 KiB chunk
//! decode 36 ns (no copy: the cost does not depend on the chunk size).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry_protocol::frame::{decode_master, encode_master, encode_request_head, split_frame};
use ferry_protocol::*;

const MAX: usize = DEFAULT_MAX_FRAME_SIZE;

fn typical_head() -> MasterMsg {
    let h = |n: &'static str, v: &'static str| Header::new(n, v);
    MasterMsg::RequestHead(RequestHead {
        id: 48_213,
        method: "GET".into(),
        target: "/api/items?page=2".into(),
        version: HttpVersion::Http11,
        headers: vec![
            h("host", "shop.example.com"),
            h(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            h("accept", "application/json, text/plain, */*"),
            h("accept-language", "en-US,en;q=0.5"),
            h("accept-encoding", "gzip, deflate, br, zstd"),
            h("referer", "https://shop.example.com/items?page=1"),
            h("cookie", "session=3f9a1c2e7b5d4e8f; theme=dark; consent=1"),
            h(
                "authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl",
            ),
            h("x-request-id", "5b2c7e1a-90f4-4d3b-a8c6-2f1e0d9c8b7a"),
            h("x-forwarded-for", "198.51.100.23"),
            h("cache-control", "no-cache"),
            h("connection", "keep-alive"),
        ],
        peer: "203.0.113.7:51234".into(),
        body: BodyKind::Empty,
    })
}

fn request_head(c: &mut Criterion) {
    let msg = typical_head();
    let mut g = c.benchmark_group("request_head");

    // Sanity, once: the trip gives back the same message and leaves the buffer empty.
    let mut buf = BytesMut::with_capacity(4096);
    encode_master(&msg, &mut buf, MAX).unwrap();
    let frame_len = buf.len();
    let payload = split_frame(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(decode_master(payload.clone()).unwrap(), msg);
    assert!(buf.is_empty());
    println!("request_head frame: {frame_len} bytes");

    g.bench_function("encode+decode", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            encode_master(black_box(&msg), &mut buf, MAX).unwrap();
            let payload = split_frame(&mut buf, MAX).unwrap().unwrap();
            black_box(decode_master(payload).unwrap())
        })
    });

    g.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            encode_master(black_box(&msg), &mut buf, MAX).unwrap();
            black_box(buf.len())
        })
    });

    g.bench_function("decode", |b| {
        b.iter(|| black_box(decode_master(black_box(payload.clone())).unwrap()))
    });

    // The master's hot path: the same head with its byte fields borrowed (as from an
    // `http::HeaderMap`), through `encode_request_head`. Same bytes as `encode`.
    let MasterMsg::RequestHead(owned) = &msg else {
        unreachable!()
    };
    let borrowed = owned.borrowed();
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    encode_master(&msg, &mut a, MAX).unwrap();
    encode_request_head(&borrowed, &mut b, MAX).unwrap();
    assert_eq!(a, b, "borrowed and owned encodings differ");
    g.bench_function("encode_borrowed", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            encode_request_head(black_box(&borrowed), &mut buf, MAX).unwrap();
            black_box(buf.len())
        })
    });

    g.finish();
}

fn body_chunk(c: &mut Criterion) {
    const DATA: usize = 64 * 1024;
    let msg = MasterMsg::BodyChunk(BodyChunk {
        id: 7,
        data: Bytes::from(vec![0x5a; DATA]),
    });
    let mut read_buf = BytesMut::new();
    encode_master(&msg, &mut read_buf, MAX).unwrap();

    // Once, outside the timed loop: the decoded data is a slice of the read buffer.
    let range = read_buf.as_ptr() as usize..read_buf.as_ptr() as usize + read_buf.len();
    let payload = split_frame(&mut read_buf, MAX).unwrap().unwrap();
    match decode_master(payload.clone()).unwrap() {
        MasterMsg::BodyChunk(chunk) => {
            assert_eq!(chunk.data.len(), DATA);
            let p = chunk.data.as_ptr() as usize;
            assert!(
                range.contains(&p) && range.contains(&(p + DATA - 1)),
                "body chunk data was copied out of the read buffer"
            );
        }
        other => panic!("decoded {other:?}"),
    }

    let mut g = c.benchmark_group("body_chunk_64k");
    g.throughput(Throughput::Bytes(DATA as u64));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(decode_master(black_box(payload.clone())).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, request_head, body_chunk);
criterion_main!(benches);
