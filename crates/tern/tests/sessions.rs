//! Sessions end when they should and tokens cannot be forged: the JWT attack set, logout (one
//! device, every device), password change, disabled accounts, and login throttling. Ending a
//! session voids its token everywhere and closes its live sockets; nobody else is disturbed.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tern_proto::{ClientFrame, CloseReason, ServerFrame};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

/// The issue asks for sockets to close "within a second": the bound is the requirement itself,
/// not a performance figure (the close is sent while the request is answered).
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

async fn server() -> TestServer {
    TestServer::with(|c| c.auth.token_secret = SECRET.into()).await
}

async fn rest(server: &TestServer, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), format!("{}{path}", server.url())).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn login_status(server: &TestServer, user: &str, password: &str) -> (u16, Value, Option<String>) {
    login_from(server, None, user, password).await
}

/// A login from `client` (named in `X-Forwarded-For`; the test server must trust 127.0.0.1).
async fn login_from(
    server: &TestServer,
    client: Option<&str>,
    user: &str,
    password: &str,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/sessions", server.url()))
        .json(&json!({"username": user, "password": password, "device_id": "phone"}));
    if let Some(ip) = client {
        req = req.header("x-forwarded-for", ip);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, resp.json().await.unwrap(), retry)
}

/// A WebSocket authenticated with `token`, or the close reason that refused it.
async fn socket(server: &TestServer, token: &str) -> Result<RawWs, CloseReason> {
    let mut ws = RawWs::open(server).await;
    ws.send_frame(&ClientFrame::Auth { token: token.into(), proto: None, resume: None, accept_compression: vec![] })
        .await;
    match ws.recv().await {
        Some(ServerFrame::AuthOk { .. }) => Ok(ws),
        Some(ServerFrame::Close { reason, .. }) => Err(reason),
        other => panic!("unexpected answer to auth: {other:?}"),
    }
}

async fn closed_with(ws: &mut RawWs) -> CloseReason {
    tokio::time::timeout(CLOSE_WITHIN, ws.expect_close()).await.expect("the socket closes within a second").0
}

async fn still_serves(ws: &mut RawWs) {
    ws.send_frame(&ClientFrame::Ping).await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Pong)));
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, as JWTs use.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test]
async fn the_jwt_attack_set_is_refused_on_rest_and_sockets() {
    let server = server().await;
    let alice = server.login("alice", "phone").await;
    let t = now();
    let claims = |patch: Value| {
        let mut c = json!({"sub": alice.user_id.0.to_string(), "did": "phone", "iss": "tern", "aud": "tern-client",
                           "iat": t, "nbf": t, "exp": t + 3600});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    // The control: a token crafted here the way the server makes them is accepted, so every
    // refusal below is about the one thing changed.
    let good = sign(Algorithm::HS256, &claims(json!({})), SECRET);
    assert_eq!(rest(&server, "GET", "/v1/me", &good, None).await.0, 200);
    assert!(socket(&server, &good).await.is_ok());

    let payload = b64(claims(json!({})).to_string().as_bytes());
    let other_user = b64(claims(json!({"sub": "999999"})).to_string().as_bytes());
    let good_parts: Vec<&str> = good.split('.').collect();
    let attacks = [
        ("alg none", format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#))),
        ("alg none, signature kept", format!("{}.{payload}.{}", b64(br#"{"alg":"none","typ":"JWT"}"#), good_parts[2])),
        ("HS512 with the same secret", sign(Algorithm::HS512, &claims(json!({})), SECRET)),
        ("HS384 with the same secret", sign(Algorithm::HS384, &claims(json!({})), SECRET)),
        ("another secret", sign(Algorithm::HS256, &claims(json!({})), "another-secret-of-the-right-length-xyz")),
        (
            "expired",
            sign(Algorithm::HS256, &claims(json!({"iat": t - 7200, "nbf": t - 7200, "exp": t - 3600})), SECRET),
        ),
        ("not yet valid", sign(Algorithm::HS256, &claims(json!({"nbf": t + 3600})), SECRET)),
        ("wrong issuer", sign(Algorithm::HS256, &claims(json!({"iss": "evil"})), SECRET)),
        ("wrong audience", sign(Algorithm::HS256, &claims(json!({"aud": "tern-admin"})), SECRET)),
        ("no expiry", sign(Algorithm::HS256, &claims(json!({"exp": null})), SECRET)),
        ("tampered subject", format!("{}.{other_user}.{}", good_parts[0], good_parts[2])),
        ("user that does not exist", sign(Algorithm::HS256, &claims(json!({"sub": "999999"})), SECRET)),
        ("bad device id", sign(Algorithm::HS256, &claims(json!({"did": "../../etc"})), SECRET)),
        ("garbage", "not.a.token".into()),
        ("empty", String::new()),
    ];
    for (name, token) in attacks {
        let (status, body) = rest(&server, "GET", "/v1/me", &token, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{name}: REST");
        assert_eq!(socket(&server, &token).await.err(), Some(CloseReason::AuthFailed), "{name}: socket");
    }
    // Nothing above disturbed the real session.
    assert_eq!(rest(&server, "GET", "/v1/me", &alice.token, None).await.0, 200);
}

#[tokio::test]
async fn logout_ends_this_device_only() {
    let server = server().await;
    let phone = server.login("alice", "phone").await;
    let laptop = server.login("alice", "laptop").await;
    let bob = server.login("bob", "phone").await;
    let mut phone_ws = socket(&server, &phone.token).await.unwrap();
    let mut laptop_ws = socket(&server, &laptop.token).await.unwrap();
    let mut bob_ws = socket(&server, &bob.token).await.unwrap();

    assert_eq!(rest(&server, "DELETE", "/v1/sessions/current", &phone.token, None).await.0, 204);
    assert_eq!(closed_with(&mut phone_ws).await, CloseReason::AuthFailed);
    let (status, body) = rest(&server, "GET", "/v1/me", &phone.token, None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("session ended; log in again")));
    assert_eq!(socket(&server, &phone.token).await.err(), Some(CloseReason::AuthFailed));
    still_serves(&mut laptop_ws).await;
    still_serves(&mut bob_ws).await;
    assert_eq!(rest(&server, "GET", "/v1/me", &laptop.token, None).await.0, 200);

    // Logging in again on the phone works at once.
    let again = server.login("alice", "phone").await;
    assert!(socket(&server, &again.token).await.is_ok());
}

#[tokio::test]
async fn logout_everywhere_ends_every_device() {
    let server = server().await;
    let phone = server.login("alice", "phone").await;
    let laptop = server.login("alice", "laptop").await;
    let bob = server.login("bob", "phone").await;
    let mut phone_ws = socket(&server, &phone.token).await.unwrap();
    let mut laptop_ws = socket(&server, &laptop.token).await.unwrap();
    let mut bob_ws = socket(&server, &bob.token).await.unwrap();

    assert_eq!(rest(&server, "DELETE", "/v1/sessions", &laptop.token, None).await.0, 204);
    assert_eq!(closed_with(&mut phone_ws).await, CloseReason::AuthFailed);
    assert_eq!(closed_with(&mut laptop_ws).await, CloseReason::AuthFailed);
    for token in [&phone.token, &laptop.token] {
        assert_eq!(rest(&server, "GET", "/v1/me", token, None).await.0, 401);
    }
    still_serves(&mut bob_ws).await;
}

#[tokio::test]
async fn a_password_change_ends_every_session_and_hands_out_a_new_token() {
    let server = server().await;
    let phone = server.login("alice", "phone").await;
    let laptop = server.login("alice", "laptop").await;
    let mut phone_ws = socket(&server, &phone.token).await.unwrap();
    let mut laptop_ws = socket(&server, &laptop.token).await.unwrap();
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    // Refusals change nothing.
    let (status, body) =
        rest(&server, "PUT", "/v1/me/password", &phone.token, Some(change("wrong", "a new long passphrase"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) =
        rest(&server, "PUT", "/v1/me/password", &phone.token, Some(change(PASSWORD, "password"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("weak_password")));
    still_serves(&mut phone_ws).await;
    assert_eq!(rest(&server, "GET", "/v1/me", &laptop.token, None).await.0, 200);

    let (status, body) =
        rest(&server, "PUT", "/v1/me/password", &phone.token, Some(change(PASSWORD, "a new long passphrase"))).await;
    assert_eq!(status, 200);
    let fresh = body["token"].as_str().unwrap().to_owned();
    assert_eq!(closed_with(&mut phone_ws).await, CloseReason::AuthFailed);
    assert_eq!(closed_with(&mut laptop_ws).await, CloseReason::AuthFailed);
    for token in [&phone.token, &laptop.token] {
        assert_eq!(rest(&server, "GET", "/v1/me", token, None).await.0, 401);
    }
    assert_eq!(rest(&server, "GET", "/v1/me", &fresh, None).await.0, 200, "the answer's token works");
    assert!(socket(&server, &fresh).await.is_ok());
    assert_eq!(login_status(&server, "alice", PASSWORD).await.0, 401, "the old password is gone");
    assert_eq!(login_status(&server, "alice", "a new long passphrase").await.0, 200);
}

#[tokio::test]
async fn a_disabled_account_is_cut_off_until_enabled() {
    let server = server().await;
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    let mut alice_ws = socket(&server, &alice.token).await.unwrap();
    let mut bob_ws = socket(&server, &bob.token).await.unwrap();
    let path = format!("/v1/admin/users/{}/disabled", alice.user_id.0);

    // Users cannot do it, nor keys without the admin scope.
    assert_eq!(rest(&server, "PUT", &path, &bob.token, Some(json!({"disabled": true}))).await.0, 401);
    let (_, key) =
        server.push_api(PUSH_KEY, "/v1/admin/keys", json!({"name": "rooms-only", "scopes": ["rooms"]})).await;
    let narrow = key["key"].as_str().unwrap();
    assert_eq!(rest(&server, "PUT", &path, narrow, Some(json!({"disabled": true}))).await.0, 403);
    assert_eq!(
        rest(&server, "PUT", "/v1/admin/users/999999/disabled", PUSH_KEY, Some(json!({"disabled": true}))).await.0,
        404
    );
    still_serves(&mut alice_ws).await;

    assert_eq!(rest(&server, "PUT", &path, PUSH_KEY, Some(json!({"disabled": true}))).await.0, 204);
    assert_eq!(closed_with(&mut alice_ws).await, CloseReason::AuthFailed);
    assert_eq!(rest(&server, "GET", "/v1/me", &alice.token, None).await.0, 401);
    let (status, body, _) = login_status(&server, "alice", PASSWORD).await;
    assert_eq!((status, body["error"]["message"].as_str()), (403, Some("this account is disabled")));
    assert_eq!(login_status(&server, "alice", "not her password").await.0, 401, "disabled is told only to the owner");
    still_serves(&mut bob_ws).await;

    assert_eq!(rest(&server, "PUT", &path, PUSH_KEY, Some(json!({"disabled": false}))).await.0, 204);
    assert_eq!(login_status(&server, "alice", PASSWORD).await.0, 200);
}

/// Guessing is stopped where it comes from, and nobody can lock an owner out: a username is
/// refused only to the address that failed it; failures from many addresses, or one address
/// spraying many names, slow attempts down but the right password still logs in.
#[tokio::test]
async fn failed_logins_stop_the_guesser_but_never_lock_out_the_owner() {
    let server = TestServer::with(|c| {
        c.auth.login_failures_per_user = 3;
        c.auth.login_failures_per_user_total = 5;
        c.auth.login_failures_per_ip = 6;
        c.auth.login_failure_refill_secs = 3600;
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    for name in ["alice", "bob", "carol"] {
        server.login(name, "phone").await;
    }
    let guesser = Some("203.0.113.7");
    for _ in 0..3 {
        assert_eq!(login_from(&server, guesser, "alice", "guess").await.0, 401);
    }
    // The guesser's address is refused for alice, right password or not, before any hash.
    let (status, body, retry) = login_from(&server, guesser, "ALICE", PASSWORD).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert!(retry.unwrap().parse::<u64>().unwrap() > 0);
    // Alice herself, anywhere else, logs in; so do others from the guesser's address.
    assert_eq!(login_from(&server, Some("198.51.100.1"), "alice", PASSWORD).await.0, 200);
    assert_eq!(login_from(&server, guesser, "bob", PASSWORD).await.0, 200);

    // Guessing alice from many addresses uses up her total of 5: attempts are slowed, the
    // right password still works, a wrong one is still just wrong.
    for ip in ["192.0.2.1", "192.0.2.2"] {
        assert_eq!(login_from(&server, Some(ip), "alice", "guess").await.0, 401);
    }
    assert_eq!(login_from(&server, Some("192.0.2.3"), "alice", "guess").await.0, 401);
    assert_eq!(login_from(&server, Some("198.51.100.1"), "alice", PASSWORD).await.0, 200);

    // One address spraying names uses up its 6: its users still log in, slowed.
    let office = Some("192.0.2.50");
    for name in ["bob", "bob", "carol", "carol", "nobody_here", "nobody_here"] {
        assert_eq!(login_from(&server, office, name, "guess").await.0, 401);
    }
    assert_eq!(login_from(&server, office, "carol", PASSWORD).await.0, 200, "the address is slowed, not locked");
}

/// Shutdown reaches each connection through its lanes, like any other kick: every socket, on
/// either transport, hears `server_shutdown` with a jittered hint of when to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_tells_every_connection_to_come_back_later() {
    let srv = server().await;
    let (alice, bob) = (srv.login("alice", "phone").await, srv.login("bob", "laptop").await);
    let mut ws = socket(&srv, &alice.token).await.expect("alice connects");
    let mut tcp = RawTcp::open(&srv).await;
    assert!(matches!(tcp.auth_with(&bob.token).await, ServerFrame::AuthOk { .. }));
    let TestServer { server, dir: _dir, .. } = srv;
    let stopping = tokio::spawn(server.shutdown(Duration::from_secs(5)));
    for (reason, _, retry_after_ms) in [ws.expect_close_with_retry().await, tcp.expect_close_with_retry().await] {
        assert_eq!(reason, CloseReason::ServerShutdown);
        assert!(retry_after_ms.is_some_and(|ms| (500..5000).contains(&ms)), "{retry_after_ms:?}");
    }
    stopping.await.unwrap();
}
