//! Micro-benchmarks of the hot encoders: decoding a client frame, encoding a pushed message, and
//! building a room batch frame (encode once, compress once). `cargo bench -p tern-server`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tern_proto::{Body, ClientFrame, Codec, ConvId, Message, MsgId, Priority, Push, PushScope, ServerFrame, UserId};
use tern_server::wire::OutFrame;

fn message() -> Message {
    Message {
        msg_id: MsgId(250_387_600_014_049_280),
        conv_id: ConvId::direct(UserId(41), UserId(42)),
        seq: 123_456,
        from: UserId(41),
        client_msg_id: "0193a2b4c5d00000001a2b3c4d5e6f".into(),
        ts: 1_795_386_655_820,
        body: Body::Text { text: "see you at the usual place at eight? bring the tickets".into() },
    }
}

fn batch(n: u64) -> ServerFrame {
    let pushes = (0..n)
        .map(|i| Push {
            msg_id: MsgId(250_387_600_014_049_280 + i * 1024),
            priority: Priority::Low,
            qos: 0,
            scope: PushScope::Room { room: "live-12345".into() },
            ts: 1_795_386_655_820 + i,
            data: serde_json::json!({ "uid": 1000 + i, "uname": format!("viewer{i}"), "text": "666666 前方高能 awsl", "color": "#ffffff" }),
            from: None,
        })
        .collect();
    ServerFrame::Batch { scope: PushScope::Room { room: "live-12345".into() }, pushes }
}

fn codec(c: &mut Criterion) {
    let send = ClientFrame::Send {
        id: 7,
        to: Some(UserId(42)),
        conv_id: None,
        client_msg_id: "0193a2b4c5d00000001a2b3c4d5e6f".into(),
        body: Body::Text { text: "see you at the usual place at eight? bring the tickets".into() },
    };
    let json = Codec::Json.encode(&send);
    let msgpack = Codec::MsgPack.encode(&send);
    c.bench_function("decode send (json)", |b| b.iter(|| Codec::Json.decode::<ClientFrame>(black_box(&json))));
    c.bench_function("decode send (msgpack)", |b| b.iter(|| Codec::MsgPack.decode::<ClientFrame>(black_box(&msgpack))));
    let msg = ServerFrame::Msg(message());
    c.bench_function("encode msg (json)", |b| b.iter(|| Codec::Json.encode(black_box(&msg))));
    c.bench_function("encode msg (msgpack, prefixed)", |b| b.iter(|| Codec::MsgPack.encode_prefixed(black_box(&msg))));
}

fn batches(c: &mut Criterion) {
    for n in [20u64, 200] {
        let frame = batch(n);
        c.bench_function(&format!("batch of {n}: encode msgpack once"), |b| {
            b.iter(|| {
                let f = OutFrame::new(black_box(frame.clone()));
                f.stream(false).len()
            })
        });
        c.bench_function(&format!("batch of {n}: encode + brotli once"), |b| {
            b.iter(|| {
                let f = OutFrame::compressible(black_box(frame.clone()), 512);
                f.stream(true).len()
            })
        });
        // What 1,000 members cost once the batch is built: a clone of shared bytes each.
        let shared = OutFrame::compressible(frame.clone(), 512);
        c.bench_function(&format!("batch of {n}: bytes for 1000 members"), |b| {
            b.iter(|| (0..1000).map(|_| shared.stream(true).len()).sum::<usize>())
        });
    }
}

criterion_group!(benches, codec, batches);
criterion_main!(benches);
