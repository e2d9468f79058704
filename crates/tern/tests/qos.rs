//! Must-arrive (QoS 1) pushes through a lossy link: arrival matches 1-(1-r)^(n+1) for n retries,
//! and the app never sees a push twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tern_client::{Client, Options, Transport};
use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Link {
    /// Copies of each must-arrive push the server sent, by msg_id.
    attempts: HashMap<u64, usize>,
    /// Copies that got through.
    forwarded: HashMap<u64, usize>,
    acks_dropped: usize,
}

/// Forwards frames from `from` to `to`, dropping the ones `drop` picks.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut drop_it: impl FnMut(&[u8]) -> bool + Send,
) {
    let decoder = FrameDecoder::new(1 << 24);
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(payload)) = decoder.decode(&mut buf) {
            if !drop_it(&payload) {
                let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&payload);
                if to.write_all(&framed).await.is_err() {
                    return;
                }
            }
        }
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = buf.remaining();
    }
}

/// A TCP proxy that drops a fraction `r` of QoS-1 pushes (server → client) and 30% of ACKs
/// (client → server), with a fixed seed.
async fn lossy_proxy(server: std::net::SocketAddr, r: f64, link: Arc<Mutex<Link>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.unwrap();
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            let mut rng_down = rand::rngs::StdRng::seed_from_u64(7);
            let mut rng_up = rand::rngs::StdRng::seed_from_u64(11);
            let (l1, l2) = (Arc::clone(&link), Arc::clone(&link));
            tokio::spawn(pump(ur, cw, move |payload| match Codec::MsgPack.decode::<ServerFrame>(payload) {
                Ok(ServerFrame::Push(p)) if p.qos == 1 => {
                    let mut link = l1.lock().unwrap();
                    *link.attempts.entry(p.msg_id.0).or_default() += 1;
                    let dropped = rng_down.random_bool(r);
                    if !dropped {
                        *link.forwarded.entry(p.msg_id.0).or_default() += 1;
                    }
                    dropped
                }
                _ => false,
            }));
            tokio::spawn(pump(cr, uw, move |payload| match Codec::MsgPack.decode::<ClientFrame>(payload) {
                Ok(ClientFrame::Ack { .. }) => {
                    let dropped = rng_up.random_bool(0.3);
                    l2.lock().unwrap().acks_dropped += dropped as usize;
                    dropped
                }
                _ => false,
            }));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_arrive_pushes_through_a_lossy_link_arrive_as_predicted_and_never_twice() {
    // Retries 100 ms apart until 290 ms: sent at 0, retried at ~100 and ~200, given up at ~300
    // — n = 2 retries.
    let srv = TestServer::with(|c| {
        c.gateway.retry_initial_ms = 100;
        c.gateway.retry_max_ms = 100;
        c.push.qos1_ttl_ms = 290;
    })
    .await;
    let (r, n, total) = (0.5f64, 2i32, 1000usize);
    let link = Arc::new(Mutex::new(Link::default()));
    let proxy = lossy_proxy(srv.server.tcp_addr(), r, Arc::clone(&link)).await;
    let mut device = srv.device().await;
    device.endpoints.tcp = proxy.to_string();
    let opts = Options { transport: Transport::Tcp, accept_brotli: false, ..Options::default() };
    let (_client, mut events) = Client::connect_device(device.clone(), opts).await.unwrap();

    let target = json!([{ "device_id": device.device_id.0 }]);
    let mut sent = Vec::new();
    for i in 0..total {
        sent.push(srv.push("/v1/push/devices", json!({ "devices": target, "data": i, "qos": 1 })).await);
    }
    // Everything is either acknowledged or given up 300 ms after the last send.
    let mut got = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(1500), events.next_push()).await {
        got.push(p.msg_id.0);
    }
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "the app never sees a push twice");
    assert!(unique.iter().all(|id| sent.contains(id)));

    let expected = 1.0 - (1.0 - r).powi(n + 1);
    let arrived = unique.len() as f64 / total as f64;
    assert!((arrived - expected).abs() < 0.05, "arrival {arrived:.3}, predicted {expected:.3}");

    let link = link.lock().unwrap();
    assert!(link.attempts.values().all(|&a| a <= (n + 1) as usize), "never more than n+1 copies");
    let lost: Vec<_> = sent.iter().filter(|id| !unique.contains(id)).collect();
    assert!(lost.iter().all(|id| link.attempts.get(id) == Some(&((n + 1) as usize))), "a lost push used every retry");
    let twice = link.forwarded.values().filter(|&&c| c >= 2).count();
    assert!(twice > 0 && link.acks_dropped > 0, "some pushes arrived twice (lost ACKs) and were deduplicated");
    assert!(srv.server.gateway().qos1_expired() >= lost.len() as u64);
    eprintln!(
        "qos1: {total} pushes, r={r}, n={n}: arrival {arrived:.3} (predicted {expected:.3}); {twice} arrived twice"
    );
}
