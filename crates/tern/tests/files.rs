//! Files: tus 1.0 uploads (resume, checksums, termination, expiry), downloads (ranges, ETags,
//! safe types), who may read a file, messages that carry files, and hostile files.

mod common;

use bytes::Bytes;
use common::*;
use reqwest::StatusCode;
use sha2::Digest;
use tern_client::http::files::{self, UploadOptions};
use tern_client::http::im;
use tern_client::{Session, Transport};
use tern_proto::rest::JoinPolicy;
use tern_proto::{Body, ConvId};

fn http() -> reqwest::Client {
    tern_client::http::shared_client()
}

fn sha256_b64(data: &[u8]) -> String {
    data_encoding::BASE64.encode(&sha2::Sha256::digest(data))
}

/// `POST /v1/files/` with tus headers; returns (status, upload path).
async fn create(srv: &TestServer, s: &Session, len: u64, metadata: &str) -> (StatusCode, String) {
    let resp = http()
        .post(format!("{}/v1/files/", srv.url()))
        .bearer_auth(&s.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", len)
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["tus-resumable"], "1.0.0");
    let loc = resp.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status(), loc)
}

async fn patch(
    srv: &TestServer,
    s: &Session,
    path: &str,
    offset: u64,
    data: &[u8],
    checksum: Option<String>,
) -> reqwest::Response {
    let mut req = http()
        .patch(format!("{}{path}", srv.url()))
        .bearer_auth(&s.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset)
        .header("Content-Type", "application/offset+octet-stream")
        .body(data.to_vec());
    if let Some(c) = checksum {
        req = req.header("Upload-Checksum", c);
    }
    req.send().await.unwrap()
}

async fn head(srv: &TestServer, s: &Session, path: &str) -> reqwest::Response {
    http()
        .head(format!("{}{path}", srv.url()))
        .bearer_auth(&s.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

fn offset(resp: &reqwest::Response) -> u64 {
    resp.headers()["upload-offset"].to_str().unwrap().parse().unwrap()
}

async fn get(srv: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut req = http().get(format!("{}{path}", srv.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn error_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

fn id_of(path: &str) -> &str {
    path.trim_start_matches("/v1/files/")
}

#[tokio::test]
async fn a_tus_upload_resumes_checks_checksums_and_downloads_byte_exact() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;

    // Discovery.
    let opts = http().request(reqwest::Method::OPTIONS, format!("{}/v1/files/", srv.url())).send().await.unwrap();
    assert_eq!(opts.status(), StatusCode::NO_CONTENT);
    let ext = opts.headers()["tus-extension"].to_str().unwrap();
    for e in ["creation", "creation-with-upload", "checksum", "termination", "expiration"] {
        assert!(ext.split(',').any(|x| x == e), "{ext} lacks {e}");
    }
    assert_eq!(opts.headers()["tus-version"], "1.0.0");
    assert!(opts.headers()["tus-checksum-algorithm"].to_str().unwrap().contains("sha256"));

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let name = data_encoding::BASE64.encode("report 2026.bin".as_bytes());
    let (status, path) = create(&srv, &alice, data.len() as u64, &format!("filename {name}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(path.starts_with("/v1/files/"), "{path}");

    let r = head(&srv, &alice, &path).await;
    assert_eq!((r.status(), offset(&r)), (StatusCode::OK, 0));
    assert_eq!(r.headers()["upload-length"], data.len().to_string().as_str());
    assert!(r.headers().contains_key("upload-expires"));
    assert_eq!(r.headers()["cache-control"], "no-store");

    // The first 100,000 bytes, then a wrong offset, then a wrong checksum: neither moves it.
    let r = patch(&srv, &alice, &path, 0, &data[..100_000], None).await;
    assert_eq!((r.status(), offset(&r)), (StatusCode::NO_CONTENT, 100_000));
    let r = patch(&srv, &alice, &path, 50_000, &data[50_000..60_000], None).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = patch(
        &srv,
        &alice,
        &path,
        100_000,
        &data[100_000..200_000],
        Some(format!("sha256 {}", sha256_b64(b"other bytes"))),
    )
    .await;
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(error_code(r).await, "checksum_mismatch");
    assert_eq!(offset(&head(&srv, &alice, &path).await), 100_000, "nothing of the refused request was kept");

    // A download before completion finds nothing.
    assert_eq!(get(&srv, Some(&alice.token), &path).await.status(), StatusCode::NOT_FOUND);

    // The rest, with right checksums (sha256 and sha1).
    let r = patch(
        &srv,
        &alice,
        &path,
        100_000,
        &data[100_000..200_000],
        Some(format!("sha256 {}", sha256_b64(&data[100_000..200_000]))),
    )
    .await;
    assert_eq!(offset(&r), 200_000);
    let sha1 = data_encoding::BASE64.encode(&sha1_digest(&data[200_000..]));
    let r = patch(&srv, &alice, &path, 200_000, &data[200_000..], Some(format!("sha1 {sha1}"))).await;
    assert_eq!((r.status(), offset(&r)), (StatusCode::NO_CONTENT, data.len() as u64));
    assert!(!r.headers().contains_key("upload-expires"), "a complete upload does not expire");
    // Past the end: refused.
    assert_eq!(patch(&srv, &alice, &path, data.len() as u64, b"x", None).await.status(), StatusCode::CONFLICT);

    let resp = get(&srv, Some(&alice.token), &path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment;") && disposition.contains("report%202026.bin"), "{disposition}");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
    assert_eq!(sha2::Sha256::digest(&body), sha2::Sha256::digest(&data));
    let hex = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&data));
    assert_eq!(etag, format!("\"{hex}\""));

    // Conditional and ranged downloads.
    let r = http()
        .get(format!("{}{path}", srv.url()))
        .bearer_auth(&alice.token)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = http()
        .get(format!("{}{path}", srv.url()))
        .bearer_auth(&alice.token)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], format!("bytes 1000-1999/{}", data.len()).as_str());
    assert_eq!(&r.bytes().await.unwrap()[..], &data[1000..2000]);
    let r = http()
        .get(format!("{}{path}", srv.url()))
        .bearer_auth(&alice.token)
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], &data[data.len() - 10..]);
    let r = http()
        .get(format!("{}{path}", srv.url()))
        .bearer_auth(&alice.token)
        .header("Range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let info = files::info(&alice, id_of(&path)).await.unwrap();
    assert_eq!(
        (info.size, info.sha256.as_str(), info.name.as_str()),
        (data.len() as u64, hex.as_str(), "report 2026.bin")
    );

    // Wrong tus version and content type.
    let r = http()
        .patch(format!("{}{path}", srv.url()))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "0.2.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    let (_, p2) = create(&srv, &alice, 10, "").await;
    let r = http()
        .patch(format!("{}{p2}", srv.url()))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", 0)
        .header("Content-Type", "text/plain")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Termination: the upload is gone.
    let r = http()
        .delete(format!("{}{p2}", srv.url()))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&srv, &alice, &p2).await.status(), StatusCode::NOT_FOUND);
}

fn sha1_digest(data: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(data).to_vec()
}

#[tokio::test]
async fn creation_with_upload_and_the_sdk_uploader() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let resp = http()
        .post(format!("{}/v1/files", srv.url()))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", 11)
        .header("Content-Type", "application/offset+octet-stream")
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(offset(&resp), 11);
    let id = id_of(resp.headers()["location"].to_str().unwrap()).to_owned();
    assert_eq!(&files::download(&alice, &id).await.unwrap()[..], b"hello world");
    assert_eq!(files::info(&alice, &id).await.unwrap().mime, "text/plain");

    // The SDK's uploader, in small chunks; the same bytes again are stored once.
    let data = Bytes::from(vec![42u8; 70_000]);
    let opts = UploadOptions { chunk_bytes: 16_000, ..UploadOptions::default() };
    let a = files::upload(&alice, "a.bin", data.clone(), &opts).await.unwrap();
    let b = files::upload(&alice, "b.bin", data.clone(), &opts).await.unwrap();
    assert_ne!(a.id, b.id, "every upload has its own id");
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(files::download(&alice, &b.id).await.unwrap(), data);
    let stored = walk(&srv.dir.path().join("files/content"));
    assert_eq!(stored.iter().filter(|p| p.ends_with(&a.sha256)).count(), 1, "one copy of the content: {stored:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

/// Who may read a file: its owner; members of a conversation where a message named it (a
/// kicked member no more); strangers, device tokens and expired signed URLs get the same 404 as
/// a file that does not exist.
#[tokio::test]
async fn the_authorization_matrix() {
    let srv = TestServer::with(|c| c.files.signed_url_secs = 2).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let dave = srv.login("dave", "phone").await;
    let mallory = srv.login("mallory", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsJson).await;
    let (bc, _be) = connect(&bob, Transport::WsJson).await;

    let file =
        files::upload(&alice, "plan.txt", Bytes::from_static(b"the plan"), &UploadOptions::default()).await.unwrap();
    let path = format!("/v1/files/{}", file.id);
    let nothing = get(&srv, Some(&mallory.token), "/v1/files/0123456789abcdef0123456789abcdef").await;
    assert_eq!(nothing.status(), StatusCode::NOT_FOUND);
    let nothing_body = nothing.text().await.unwrap();
    let stranger = get(&srv, Some(&mallory.token), &path).await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
    assert_eq!(stranger.text().await.unwrap(), nothing_body, "unauthorized reads exactly like non-existent");
    assert_eq!(get(&srv, Some(&bob.token), &path).await.status(), StatusCode::NOT_FOUND, "not shared with bob yet");
    assert_eq!(get(&srv, None, &path).await.status(), StatusCode::NOT_FOUND);
    let device = srv.device().await;
    assert_eq!(get(&srv, Some(&device.token), &path).await.status(), StatusCode::NOT_FOUND);
    // A stranger can neither send it nor learn of it through a message.
    let e = bc
        .send(alice.user_id, Body::File { file_id: file.id.clone(), name: "x".into(), size: 1 }, "m-steal".into())
        .await;
    assert_eq!(code(e), tern_client::ErrorCode::NotFound);

    // Sent to bob (the server writes the true size): bob may read it, and forward it to carol.
    let sent = ac
        .send(bob.user_id, Body::File { file_id: file.id.clone(), name: "plan.txt".into(), size: 999 }, "m-1".into())
        .await
        .unwrap();
    let page = tern_client::http::history(&bob, sent.conv_id, Some(sent.seq - 1), 1).await.unwrap();
    assert!(matches!(&page.messages[0].body, Body::File { size: 8, .. }), "{:?}", page.messages[0].body);
    assert_eq!(get(&srv, Some(&bob.token), &path).await.text().await.unwrap(), "the plan");
    bc.send(carol.user_id, Body::File { file_id: file.id.clone(), name: "fwd".into(), size: 8 }, "m-fwd".into())
        .await
        .unwrap();
    assert_eq!(get(&srv, Some(&carol.token), &path).await.status(), StatusCode::OK);

    // In a group: dave reads it while a member, not after being kicked.
    let secret = files::upload(&alice, "group.txt", Bytes::from_static(b"for the group"), &UploadOptions::default())
        .await
        .unwrap();
    let g = as_json(im::create_group(&alice, "team", JoinPolicy::Open).await.unwrap());
    let gid = tern_proto::GroupId(
        g["group_id"].as_str().map_or_else(|| g["group_id"].as_u64().unwrap(), |s| s.parse().unwrap()),
    );
    im::invite(&alice, gid, dave.user_id).await.unwrap();
    ac.send_to(ConvId::Group(gid), Body::File { file_id: secret.id.clone(), name: "g".into(), size: 0 }, "m-g".into())
        .await
        .unwrap();
    let gpath = format!("/v1/files/{}", secret.id);
    assert_eq!(get(&srv, Some(&dave.token), &gpath).await.status(), StatusCode::OK);
    im::kick(&alice, gid, dave.user_id).await.unwrap();
    assert_eq!(get(&srv, Some(&dave.token), &gpath).await.status(), StatusCode::NOT_FOUND, "kicked: no more access");

    // Recalled: the message no longer grants access.
    let s2 = ac
        .send(mallory.user_id, Body::File { file_id: secret.id.clone(), name: "g".into(), size: 0 }, "m-r".into())
        .await
        .unwrap();
    assert_eq!(get(&srv, Some(&mallory.token), &gpath).await.status(), StatusCode::OK);
    im::recall(&alice, s2.conv_id, s2.seq).await.unwrap();
    assert_eq!(get(&srv, Some(&mallory.token), &gpath).await.status(), StatusCode::NOT_FOUND, "recalled");

    // A signed URL needs no header, and expires.
    let signed = files::signed_url(&bob, &file.id).await.unwrap();
    assert_eq!(get(&srv, None, &signed.url).await.text().await.unwrap(), "the plan");
    let forged = signed.url.replace("token=", "token=x");
    assert_eq!(get(&srv, None, &forged).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        files::signed_url(&mallory, &file.id).await.map(drop).map_err(|e| e.code()),
        Err(Some(tern_client::ErrorCode::NotFound))
    );
    tokio::time::sleep(std::time::Duration::from_millis(4_100)).await;
    assert_eq!(get(&srv, None, &signed.url).await.status(), StatusCode::NOT_FOUND, "expired");

    // Only the owner touches an upload.
    assert_eq!(head(&srv, &bob, &path).await.status(), StatusCode::NOT_FOUND);
    let r = http()
        .delete(format!("{}{path}", srv.url()))
        .bearer_auth(&bob.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&srv, Some(&bob.token), &path).await.status(), StatusCode::OK, "still there");
}

/// A minimal JPEG (2x3) with an EXIF segment carrying a "GPS" marker.
fn jpeg_with_exif() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    j.extend([0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
    j.extend([0xFF, 0xE1, 0x00, 0x0C, b'E', b'x', b'i', b'f', 0, 0, b'G', b'P', b'S', b'!']);
    j.extend([0xFF, 0xC0, 0x00, 0x0B, 8, 0x00, 0x03, 0x00, 0x02, 1, 1, 0x11, 0]);
    j.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0]);
    j.extend_from_slice(b"<html><script>alert(1)</script></html>");
    j.extend([0xFF, 0xD9]);
    j
}

#[tokio::test]
async fn hostile_files_are_handled_safely() {
    let srv = TestServer::with(|c| {
        c.files.max_file_bytes = 1_000_000;
        c.files.quota_bytes_per_user = 2_000_000;
    })
    .await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsJson).await;
    let up = |name: &'static str, data: Vec<u8>| {
        let alice = alice.clone();
        async move { files::upload(&alice, name, Bytes::from(data), &UploadOptions::default()).await }
    };

    // A JPEG with EXIF GPS and HTML after its scan (a polyglot): an inline image, EXIF gone,
    // never HTML.
    let jpeg = up("photo.jpg", jpeg_with_exif()).await.unwrap();
    assert_eq!((jpeg.mime.as_str(), jpeg.width, jpeg.height), ("image/jpeg", Some(2), Some(3)));
    let r = get(&srv, Some(&alice.token), &format!("/v1/files/{}", jpeg.id)).await;
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("inline"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));
    let bytes = r.bytes().await.unwrap();
    assert!(!bytes.windows(4).any(|w| w == b"Exif") && !bytes.windows(3).any(|w| w == b"GPS"), "EXIF stripped");
    assert_eq!(bytes.len() as u64, jpeg.size);
    // As an image message the server fills in the true pixels.
    let sent = ac
        .send(bob.user_id, Body::Image { file_id: jpeg.id.clone(), width: Some(4000), height: None }, "i-1".into())
        .await
        .unwrap();
    let page = tern_client::http::history(&bob, sent.conv_id, Some(sent.seq - 1), 1).await.unwrap();
    assert!(matches!(page.messages[0].body, Body::Image { width: Some(2), height: Some(3), .. }));

    // An SVG with a script: stored, but only ever an attachment, and not an image message.
    let svg = up("x.svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec())
        .await
        .unwrap();
    let r = get(&srv, Some(&alice.token), &format!("/v1/files/{}", svg.id)).await;
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert_ne!(r.headers()["content-type"], "image/svg+xml");
    let e =
        ac.send(bob.user_id, Body::Image { file_id: svg.id.clone(), width: None, height: None }, "i-2".into()).await;
    assert_eq!(code(e), tern_client::ErrorCode::BadRequest);

    // A PNG header claiming 100,000 x 100,000 pixels: kept as a file, never an image.
    let mut bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bomb.extend(100_000u32.to_be_bytes());
    bomb.extend(100_000u32.to_be_bytes());
    bomb.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bomb.extend(vec![0u8; 5000]);
    let bomb = up("bomb.png", bomb).await.unwrap();
    assert_eq!((bomb.width, bomb.height), (None, None));
    let e =
        ac.send(bob.user_id, Body::Image { file_id: bomb.id.clone(), width: None, height: None }, "i-3".into()).await;
    assert_eq!(code(e), tern_client::ErrorCode::BadRequest);

    // A zero-byte file is complete at once.
    let (status, empty) = create(&srv, &alice, 0, "").await;
    assert_eq!(status, StatusCode::CREATED);
    let r = get(&srv, Some(&alice.token), &empty).await;
    assert_eq!((r.status(), r.bytes().await.unwrap().len()), (StatusCode::OK, 0));

    // Over the size limit, and over the quota.
    let (status, _) = create(&srv, &alice, 1_000_001, "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = create(&srv, &alice, 999_000, "").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = create(&srv, &alice, 999_000, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "over the quota");

    // Missing and malformed headers answer 400 with tern's error body.
    let r = http()
        .post(format!("{}/v1/files/", srv.url()))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status(), error_code(r).await.as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
    let r = http()
        .post(format!("{}/v1/files/", srv.url()))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http()
        .post(format!("{}/v1/files/", srv.url()))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", 5)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// tus as an independent client speaks it: `scripts/tus-client.py` on tuspy (PyPI) uploads in
/// checksummed chunks, breaks a request off mid-body, resumes from the server's offset, and the
/// download matches; a wrong checksum is refused with 460. Skipped with a notice when tuspy is
/// not installed, unless `TERN_REQUIRE_TUSPY` is set (`.ci/run` installs it and sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_is_interrupted_resumes_and_the_bytes_match() {
    let installed = std::process::Command::new("python3")
        .args(["-c", "import tusclient"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("TERN_REQUIRE_TUSPY").is_none(),
            "TERN_REQUIRE_TUSPY is set but python3 with tuspy is not installed"
        );
        eprintln!("SKIPPED: pip install tuspy to run the independent tus client");
        return;
    }
    let srv = TestServer::start().await;
    let py = srv.login("pyuser", "python").await;
    let file = srv.dir.path().join("upload.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tus-client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([srv.url(), py.token.clone(), file.to_string_lossy().into_owned()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT * 6, out).await.expect("the client finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let step = |name: &str| steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("{name} in {stdout}"));
    let chunk = data.len() as u64 / 8;
    assert_eq!(step("chunks")["offset"], 2 * chunk);
    let resumed = step("resumed")["offset"].as_u64().unwrap();
    assert!(
        resumed > 2 * chunk && resumed <= 2 * chunk + (2 * chunk) / 3,
        "kept what arrived before the break: {resumed}"
    );
    assert_eq!(step("done")["offset"], data.len() as u64);
    let downloaded = step("downloaded");
    assert_eq!(downloaded["status"], 200);
    assert_eq!(downloaded["sha256"], downloaded["local"]);
    assert_eq!(step("wrong_checksum")["status"], 460);
    assert_eq!(step("wrong_checksum")["offset"], 0);
}

/// An upload that never finishes expires: HEAD and PATCH find nothing, and the sweep removes
/// its bytes.
#[tokio::test]
async fn an_upload_that_never_finishes_expires_and_the_sweep_removes_its_bytes() {
    let srv = TestServer::with(|c| c.files.upload_expiry_secs = 3).await;
    let bob = srv.login("bob", "phone").await;
    let (_, stalled) = create(&srv, &bob, 1000, "").await;
    assert_eq!(offset(&patch(&srv, &bob, &stalled, 0, &[7u8; 500], None).await), 500);
    let part = srv.dir.path().join("files/parts").join(id_of(&stalled));
    assert!(part.exists());
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    assert_eq!(head(&srv, &bob, &stalled).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(patch(&srv, &bob, &stalled, 500, &[7u8; 500], None).await.status(), StatusCode::NOT_FOUND);
    let (expired, _) = srv.server.files().sweep().await.unwrap();
    assert_eq!(expired, 1);
    assert!(!part.exists(), "the expired upload's bytes are gone");
}

/// The pixel size of a JPEG, from its first SOF marker.
fn jpeg_size(j: &[u8]) -> (u16, u16) {
    let at = j.windows(2).position(|w| w == [0xFF, 0xC0] || w == [0xFF, 0xC2]).expect("a JPEG frame header");
    let h = u16::from_be_bytes([j[at + 5], j[at + 6]]);
    let w = u16::from_be_bytes([j[at + 7], j[at + 8]]);
    (w, h)
}

/// Real images (made with Pillow: tests/fixtures): type, pixels, thumbnails for each inline
/// type; the photo's GPS is gone while its orientation is kept, and its thumbnail is upright.
#[tokio::test]
async fn images_get_thumbnails_and_lose_their_gps_but_not_their_orientation() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let up = |name: &'static str, data: &'static [u8]| {
        let alice = alice.clone();
        async move { files::upload(&alice, name, Bytes::from_static(data), &UploadOptions::default()).await.unwrap() }
    };
    let photo = up("photo.jpg", include_bytes!("fixtures/photo-exif.jpg")).await;
    assert_eq!(
        (photo.mime.as_str(), photo.width, photo.height, photo.thumbnail),
        ("image/jpeg", Some(64), Some(32), true)
    );
    let stored = files::download(&alice, &photo.id).await.unwrap();
    assert!(!stored.windows(7).any(|w| w == b"TernCam"), "the EXIF camera tag is gone");
    assert!(stored.windows(6).any(|w| w == b"Exif\0\0"), "an EXIF with the orientation is kept");
    let thumb = get(&srv, Some(&alice.token), &format!("/v1/files/{}?thumb=true", photo.id)).await;
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    assert_eq!(jpeg_size(&thumb.bytes().await.unwrap()), (32, 64), "turned upright (EXIF orientation 6)");

    for (name, data, mime, size) in [
        ("sticker.png", &include_bytes!("fixtures/sticker.png")[..], "image/png", (40, 20)),
        ("anim.gif", &include_bytes!("fixtures/anim.gif")[..], "image/gif", (30, 30)),
        ("green.webp", &include_bytes!("fixtures/green.webp")[..], "image/webp", (50, 25)),
    ] {
        let f = up(name, data).await;
        assert_eq!((f.mime.as_str(), f.width, f.height), (mime, Some(size.0), Some(size.1)), "{name}");
        let thumb = get(&srv, Some(&alice.token), &format!("/v1/files/{}?thumb=true", f.id)).await;
        assert_eq!(thumb.status(), StatusCode::OK, "{name}");
        assert_eq!(jpeg_size(&thumb.bytes().await.unwrap()), (size.0 as u16, size.1 as u16), "{name}");
    }
    let png = up("sticker.png", include_bytes!("fixtures/sticker.png")).await;
    let stored = files::download(&alice, &png.id).await.unwrap();
    assert!(!stored.windows(15).any(|w| w == b"secret location"), "PNG text chunks are gone");
    // Not an image: no thumbnail.
    let text = up("t.txt", b"just text").await;
    assert!(!text.thumbnail);
    assert_eq!(
        get(&srv, Some(&alice.token), &format!("/v1/files/{}?thumb=true", text.id)).await.status(),
        StatusCode::NOT_FOUND
    );
}

/// Stickers: built-in emoticons travel as codes, custom ones as image files; a user keeps a
/// collection of images they may read (their own, or received) and sends them on.
#[tokio::test]
async fn stickers_as_codes_and_as_files_and_a_collection_to_send_from() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsJson).await;
    let (bc, _be) = connect(&bob, Transport::WsJson).await;
    let sticker = |code: Option<&str>, file_id: Option<&str>| Body::Sticker {
        code: code.map(str::to_owned),
        file_id: file_id.map(str::to_owned),
        width: None,
        height: None,
    };
    ac.send(bob.user_id, sticker(Some("thumbs_up"), None), "s-1".into()).await.unwrap();
    for (bad, why) in [
        (sticker(Some("Thumbs Up!"), None), "bad code"),
        (sticker(None, None), "neither"),
        (sticker(Some("smile"), Some("x")), "both"),
    ] {
        assert_eq!(
            code(ac.send(bob.user_id, bad, format!("bad-{why}")).await),
            tern_client::ErrorCode::BadRequest,
            "{why}"
        );
    }
    let cat = files::upload(
        &alice,
        "cat.png",
        Bytes::from_static(include_bytes!("fixtures/sticker.png")),
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    let text = files::upload(&alice, "t.txt", Bytes::from_static(b"words"), &UploadOptions::default()).await.unwrap();
    assert_eq!(
        code(ac.send(bob.user_id, sticker(None, Some(&text.id)), "s-2".into()).await),
        tern_client::ErrorCode::BadRequest
    );
    let sent = ac.send(bob.user_id, sticker(None, Some(&cat.id)), "s-3".into()).await.unwrap();
    let page = tern_client::http::history(&bob, sent.conv_id, Some(sent.seq - 2), 2).await.unwrap();
    assert_eq!(page.messages[0].body, sticker(Some("thumbs_up"), None));
    assert!(
        matches!(&page.messages[1].body, Body::Sticker { file_id: Some(f), width: Some(40), height: Some(20), .. } if *f == cat.id)
    );

    // Bob keeps alice's sticker (he received it) and sends it to carol; carol may then see it.
    assert_eq!(
        files::add_sticker(&carol, &cat.id).await.map_err(|e| e.code()),
        Err(Some(tern_client::ErrorCode::NotFound))
    );
    files::add_sticker(&bob, &cat.id).await.unwrap();
    files::add_sticker(&bob, &cat.id).await.unwrap();
    let mine = files::stickers(&bob).await.unwrap().stickers;
    assert_eq!(
        mine.iter().map(|s| (s.file_id.as_str(), s.width, s.height)).collect::<Vec<_>>(),
        [(cat.id.as_str(), Some(40), Some(20))]
    );
    bc.send(carol.user_id, sticker(None, Some(&mine[0].file_id)), "s-4".into()).await.unwrap();
    assert_eq!(
        get(&srv, Some(&carol.token), &format!("/v1/files/{}?thumb=true", cat.id)).await.status(),
        StatusCode::OK
    );
    let r =
        http().delete(format!("{}/v1/me/stickers/{}", srv.url(), cat.id)).bearer_auth(&bob.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(files::stickers(&bob).await.unwrap().stickers.is_empty());
    let r =
        http().delete(format!("{}/v1/me/stickers/{}", srv.url(), cat.id)).bearer_auth(&bob.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
