//! Built-in TLS: HTTPS, WSS and TLS on the TCP port with one certificate, verified by the SDK
//! against a private CA (`tern_client::tls::use_ca_file`, the CLI's `--ca`); untrusted and
//! wrong-host certificates refused; a certificate replaced on disk served to new connections
//! without a restart while open ones carry on; a bad certificate refused at start and ignored (the
//! old one kept) at reload. Certificates are made here with rcgen.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::pki::*;
use common::*;
use tern_client::Transport;
use tokio::net::TcpStream;

/// The common name of the certificate the server presents to a new TLS connection on its TCP
/// port, verified against the CA.
async fn presented_name(srv: &TestServer) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca().cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(srv.server.tcp_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let text = String::from_utf8_lossy(der.as_ref()).into_owned();
    ["first", "second"].iter().find(|n| text.contains(*n)).map_or_else(|| "other".into(), |n| n.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_rest_and_pushes_run_over_tls_tcp_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), &leaf(&["localhost", "127.0.0.1"], "first", true));
    let srv = tls_server(&files).await;
    assert!(srv.url().starts_with("https://"));
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    assert!(alice.endpoints.ws.starts_with("wss://"), "{:?}", alice.endpoints);
    assert!(alice.endpoints.tls, "the TCP endpoint is marked TLS: {:?}", alice.endpoints);

    let (ac, mut ae) = connect(&alice, Transport::Tcp).await;
    let (bc, mut be) = connect(&bob, Transport::WsJson).await;
    ac.send_text(bob.user_id, "over tls tcp").await.unwrap();
    assert_eq!(texts(&expect_messages(&mut be, 1).await), vec!["over tls tcp"]);
    bc.send_text(alice.user_id, "over wss").await.unwrap();
    assert_eq!(texts(&expect_messages(&mut ae, 1).await), vec!["over wss"]);
    // The connection gauge and the byte counters tell the TLS transports apart.
    let metrics = tern_server::telemetry::render();
    let value = |series: String| {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{series} "))).and_then(|v| v.parse::<f64>().ok())
    };
    for transport in ["tls", "wss"] {
        let open = value(format!("tern_connections{{transport=\"{transport}\"}}"));
        assert!(open.is_some_and(|n| n >= 1.0), "{transport}: {open:?}");
        for counter in ["tern_transport_bytes_received_total", "tern_transport_bytes_sent_total"] {
            let bytes = value(format!("{counter}{{transport=\"{transport}\"}}"));
            assert!(bytes.is_some_and(|n| n > 100.0), "{counter} {transport}: {bytes:?}");
        }
    }

    // History over HTTPS holds both.
    let conv = tern_client::ConvId::direct(alice.user_id, bob.user_id);
    let page = tern_client::http::history(&alice, conv, Some(0), 10).await.unwrap();
    assert_eq!(texts(&page.messages), vec!["over tls tcp", "over wss"]);

    // A room push reaches an anonymous device over WSS with MessagePack.
    let device = srv.device().await;
    let (dc, mut de) = connect_device(&device, Transport::WsBinary).await;
    dc.join("stage").await.unwrap();
    let room = tern_client::http::service::Target::Room("stage".into());
    let data = serde_json::json!({ "n": 1 });
    tern_client::http::service::push(&srv.url(), PUSH_KEY, &room, data, tern_client::Priority::High, 0).await.unwrap();
    let pushes = expect_pushes(&mut de, 1).await;
    assert_eq!(pushes[0].data, serde_json::json!({ "n": 1 }));

    // Plain HTTP and plain TCP frames on the TLS ports get nowhere.
    let plain = format!("http://{}/healthz", srv.server.http_addr());
    assert!(!reqwest::get(&plain).await.is_ok_and(|r| r.status().is_success()), "plain HTTP on the TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_and_wrong_host_certificates_are_refused() {
    let _ = ca();
    for (names, signed, why) in [
        (&["localhost", "127.0.0.1"][..], false, "a self-signed certificate"),
        (&["example.com"][..], true, "a certificate for another host"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), &leaf(names, "first", signed));
        let srv = tls_server(&files).await;
        let refused = tern_client::http::register(&srv.url(), "mallory", PASSWORD).await;
        assert!(matches!(&refused, Err(e) if e.code().is_none()), "{why}: {refused:?}");
        // The socket transports verify too.
        let endpoints = tern_client::Endpoints {
            ws: srv.ws_url(),
            tcp: srv.server.tcp_addr().to_string(),
            tls: true,
            ..Default::default()
        };
        for transport in [Transport::Tcp, Transport::WsJson] {
            let device = tern_client::DeviceSession {
                server: srv.url(),
                device_id: tern_client::DeviceId("d_x".into()),
                token: "t".into(),
                expires_at: 0,
                endpoints: endpoints.clone(),
                alternates: vec![],
            };
            let options = tern_client::Options { transport, ..Default::default() };
            let connected =
                tokio::time::timeout(Duration::from_secs(5), tern_client::Client::connect_device(device, options))
                    .await;
            assert!(
                matches!(&connected, Ok(Err(e)) if e.to_string().contains("TLS") || e.to_string().contains("certificate")),
                "{why} over {transport:?}: {:?}",
                connected.as_ref().map(|r| r.as_ref().err())
            );
        }
    }
    // A missing or unusable CA is one clear error.
    let missing = tern_client::tls::use_ca_file(Path::new("/nonexistent/ca.pem"));
    assert!(matches!(&missing, Err(e) if e.to_string().contains("/nonexistent/ca.pem")), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_serves_new_connections_and_open_ones_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), &leaf(&["localhost", "127.0.0.1"], "first", true));
    let srv = tls_server(&files).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::Tcp).await;
    let (_bc, mut be) = connect(&bob, Transport::WsJson).await;
    assert_eq!(presented_name(&srv).await, "first");

    // A broken file is refused at reload: the server keeps presenting the old certificate.
    std::fs::write(&files.0, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(presented_name(&srv).await, "first", "a bad certificate on disk is not taken");

    // A good one is taken within a couple of seconds, without a restart.
    write_pair(dir.path(), &leaf(&["localhost", "127.0.0.1"], "second", true));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while presented_name(&srv).await != "second" {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Connections opened before the swap still work.
    ac.send_text(bob.user_id, "still here").await.unwrap();
    assert_eq!(texts(&expect_messages(&mut be, 1).await), vec!["still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_stops_the_start_with_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = leaf(&["localhost"], "first", true);
    let other = leaf(&["localhost"], "second", true);
    let cases = [
        (("garbage".to_string(), good.1.clone()), "cert.pem"),
        ((good.0.clone(), "garbage".to_string()), "key.pem"),
        ((good.0.clone(), other.1.clone()), "does not match"),
    ];
    for ((cert, key), expected) in cases {
        let (c, k) = write_pair(dir.path(), &(cert, key));
        let data = tempfile::tempdir().unwrap();
        let mut cfg = tern_server::Config::default();
        cfg.server.http = "127.0.0.1:0".parse().unwrap();
        cfg.server.tcp = "127.0.0.1:0".parse().unwrap();
        cfg.server.data_dir = data.path().to_path_buf();
        cfg.server.tls_cert = c.display().to_string();
        cfg.server.tls_key = k.display().to_string();
        let err = tern_server::Server::start(cfg).await.err().expect("start must fail");
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
    let mut cfg = tern_server::Config::default();
    cfg.server.tls_cert = "cert.pem".into();
    assert!(cfg.validate().is_err(), "a certificate without a key is a configuration error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_the_server_with_ca_or_refuses_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), &leaf(&["localhost", "127.0.0.1"], "first", true));
    let srv = tls_server(&files).await;
    let run = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(args).env("TERN_PASSWORD", PASSWORD).env_remove("TERN_CA").env_remove("TERN_URL");
        async move { tokio::time::timeout(WAIT, cmd.output()).await.unwrap().unwrap() }
    };
    let ca = ca().path.display().to_string();
    let trusted = run(vec!["--ca".into(), ca, "register".into(), "carol".into(), "--server".into(), srv.url()]).await;
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let untrusted = run(vec!["register".into(), "dave".into(), "--server".into(), srv.url()]).await;
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success() && err.trim().lines().count() == 1, "one line: {err}");
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_catches_up_on_a_thousand_messages_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), &leaf(&["localhost", "127.0.0.1"], "first", true));
    let srv = tls_server(&files).await;
    let alice = srv.login("alice", "phone").await;
    let bob_phone = srv.login("bob", "phone").await;
    let bob_laptop = srv.login("bob", "laptop").await;
    let (ac, _ae) = connect(&alice, Transport::Tcp).await;
    for i in 0..1000 {
        ac.send_text(bob_phone.user_id, format!("m{i}")).await.unwrap();
    }
    // Both of bob's devices were offline: they catch up in order, each message once, over TLS
    // TCP and WSS (more than a socket buffer's worth, so TLS writes back up and must be flushed).
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    for (bob, transport) in [(&bob_phone, Transport::Tcp), (&bob_laptop, Transport::WsBinary)] {
        let (_bc, mut be) = connect(bob, transport).await;
        assert_eq!(texts(&expect_messages(&mut be, 1000).await), expected, "{transport:?}");
        expect_quiet(&mut be, Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_resend_is_stored_once_and_a_stalled_reader_is_cut_off_alone() {
    use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), &leaf(&["localhost", "127.0.0.1"], "first", true));
    let (cert, key) = (files.0.display().to_string(), files.1.display().to_string());
    let srv = TestServer::with(move |c| {
        c.server.tls_cert = cert;
        c.server.tls_key = key;
        c.push.aggregate = false;
        c.push.max_payload_bytes = 64 * 1024;
        c.gateway.low_queue = 16;
        c.gateway.slow_consumer_ms = 1500;
    })
    .await;

    // Resend dedup: the same client_msg_id twice is one message.
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::Tcp).await;
    let (_bc, mut be) = connect(&bob, Transport::WsJson).await;
    let body = tern_client::Body::Text { text: "once".into() };
    let first = ac.send(bob.user_id, body.clone(), "k-1".into()).await.unwrap();
    let again = ac.send(bob.user_id, body, "k-1".into()).await.unwrap();
    assert_eq!((first.msg_id, first.seq), (again.msg_id, again.seq));
    assert_eq!(texts(&expect_messages(&mut be, 1).await), vec!["once"]);
    expect_quiet(&mut be, Duration::from_millis(300)).await;

    // A reader that stops reading is cut off with slow_consumer; the one that reads gets every push.
    let (fast, mut fast_events) = connect_device(&srv.device().await, Transport::Tcp).await;
    fast.join("r").await.unwrap();
    let device = srv.device().await;
    let tcp = TcpStream::connect(srv.server.tcp_addr()).await.unwrap();
    let mut stalled = tern_client::tls::connect(tcp, "127.0.0.1", tern_client::tls::ALPN_TERN).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let decoder = FrameDecoder::new(1 << 24);
    for frame in [
        ClientFrame::Auth { token: device.token, proto: None, resume: None, accept_compression: vec![] },
        ClientFrame::Join { id: 1, room: "r".into(), token: None, recent: None },
    ] {
        stalled.write_all(&Codec::MsgPack.encode_prefixed(&frame)).await.unwrap();
        stalled.flush().await.unwrap();
        let answer = loop {
            if let Some(p) = decoder.decode(&mut buf).unwrap() {
                break Codec::MsgPack.decode::<ServerFrame>(&p).unwrap();
            }
            assert!(stalled.read_buf(&mut buf).await.unwrap() > 0);
        };
        assert!(matches!(answer, ServerFrame::AuthOk { .. } | ServerFrame::Joined { .. }), "{answer:?}");
    }
    let room = tern_client::http::service::Target::Room("r".into());
    let blob = "x".repeat(60_000);
    let mut pushed = 0;
    while srv.server.gateway().close_counts().get(&tern_client::CloseReason::SlowConsumer) != Some(&1) {
        let data = serde_json::json!({ "i": pushed, "blob": blob });
        tern_client::http::service::push(&srv.url(), PUSH_KEY, &room, data, tern_client::Priority::Low, 0)
            .await
            .unwrap();
        pushed += 1;
        assert!(pushed < 2000, "the stalled reader was never cut off");
        if pushed > 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let got = expect_pushes(&mut fast_events, pushed).await;
    assert_eq!(got.len(), pushed, "the reading member lost nothing");
}
