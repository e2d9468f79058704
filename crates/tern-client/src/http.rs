//! REST calls: register, login, user lookup, history.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tern_proto::{ConvId, DeviceId, ErrorCode, UserId};

use crate::{DeviceSession, Endpoints, Error, HistoryPage, Session};

/// One HTTP client per thread, so calls share pooled keep-alive connections (thousands of calls
/// from a load generator would otherwise leave thousands of sockets in TIME_WAIT). Per thread,
/// not per process: a pooled connection belongs to the runtime that opened it, and a thread never
/// changes runtime.
fn client() -> reqwest::Client {
    thread_local! {
        static CLIENT: reqwest::Client = reqwest::Client::new();
    }
    CLIENT.with(reqwest::Client::clone)
}

fn transport(e: reqwest::Error) -> Error {
    Error::Transport(format!("http request failed: {e}"))
}

async fn parse<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    #[derive(Deserialize)]
    struct Wrapper {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        code: ErrorCode,
        message: String,
    }
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| Error::Transport(format!("unexpected response: {e}")));
    }
    match serde_json::from_slice::<Wrapper>(&bytes) {
        Ok(w) => Err(Error::Server { code: w.error.code, message: w.error.message }),
        Err(_) => Err(Error::Transport(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))),
    }
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

async fn post<T: DeserializeOwned>(server: &str, path: &str, body: serde_json::Value) -> Result<T, Error> {
    let resp = client().post(url(server, path)).json(&body).send().await.map_err(transport)?;
    parse(resp).await
}

async fn get<T: DeserializeOwned>(session: &Session, path: &str) -> Result<T, Error> {
    let resp = client().get(url(&session.server, path)).bearer_auth(&session.token).send().await.map_err(transport)?;
    parse(resp).await
}

/// Registers an account; returns its id.
pub async fn register(server: &str, username: &str, password: &str) -> Result<UserId, Error> {
    #[derive(Deserialize)]
    struct Created {
        user_id: UserId,
    }
    let body = serde_json::json!({ "username": username, "password": password });
    Ok(post::<Created>(server, "/v1/users", body).await?.user_id)
}

/// Logs a device in.
pub async fn login(server: &str, username: &str, password: &str, device_id: &str) -> Result<Session, Error> {
    #[derive(Deserialize)]
    struct LoggedIn {
        user_id: UserId,
        device_id: DeviceId,
        token: String,
        expires_at: u64,
        endpoints: Endpoints,
        #[serde(default)]
        alternates: Vec<Endpoints>,
    }
    let body = serde_json::json!({ "username": username, "password": password, "device_id": device_id });
    let r: LoggedIn = post(server, "/v1/sessions", body).await?;
    Ok(Session {
        server: server.trim_end_matches('/').to_owned(),
        user_id: r.user_id,
        device_id: r.device_id,
        token: r.token,
        expires_at: r.expires_at,
        endpoints: r.endpoints,
        alternates: r.alternates,
    })
}

/// Finds a user's id by name.
pub async fn lookup_user(session: &Session, username: &str) -> Result<UserId, Error> {
    #[derive(Deserialize)]
    struct Found {
        user_id: UserId,
    }
    let path = format!("/v1/users/by-name/{username}");
    Ok(get::<Found>(session, &path).await?.user_id)
}

/// A page of history over REST.
pub async fn history(
    session: &Session,
    conv: ConvId,
    after_seq: Option<u64>,
    limit: u32,
) -> Result<HistoryPage, Error> {
    let mut path = format!("/v1/conversations/{conv}/messages?limit={limit}");
    if let Some(a) = after_seq {
        path.push_str(&format!("&after_seq={a}"));
    }
    get(session, &path).await
}

/// Gets a token for an anonymous device (a new device id).
pub async fn device(server: &str) -> Result<DeviceSession, Error> {
    #[derive(Deserialize)]
    struct Issued {
        device_id: DeviceId,
        token: String,
        expires_at: u64,
        endpoints: Endpoints,
        #[serde(default)]
        alternates: Vec<Endpoints>,
    }
    let r: Issued = post(server, "/v1/devices", serde_json::json!({})).await?;
    Ok(DeviceSession {
        server: server.trim_end_matches('/').to_owned(),
        device_id: r.device_id,
        token: r.token,
        expires_at: r.expires_at,
        endpoints: r.endpoints,
        alternates: r.alternates,
    })
}

/// The IM REST API as the logged-in user: profiles, friends, blocks, groups, conversations.
/// Answers are the JSON bodies documented in docs/PROTOCOL.md and `/openapi.json`.
pub mod im {
    use serde_json::{Value, json};
    use tern_proto::{ConvId, GroupId, UserId};

    use super::{client, parse, transport, url};
    use crate::{Error, Session};

    async fn call(session: &Session, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let mut req = client().request(method, url(&session.server, path)).bearer_auth(&session.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(transport)?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        parse(resp).await
    }

    use reqwest::Method;

    /// The caller's profile.
    pub async fn me(s: &Session) -> Result<Value, Error> {
        call(s, Method::GET, "/v1/me", None).await
    }
    /// Changes the caller's profile (`nickname`, `avatar`, `signature`, `dm_policy`).
    pub async fn update_me(s: &Session, changes: Value) -> Result<Value, Error> {
        call(s, Method::PATCH, "/v1/me", Some(changes)).await
    }
    /// A user's profile.
    pub async fn profile(s: &Session, user: UserId) -> Result<Value, Error> {
        call(s, Method::GET, &format!("/v1/users/{user}"), None).await
    }
    /// Users whose name starts with `prefix`.
    pub async fn search(s: &Session, prefix: &str) -> Result<Value, Error> {
        call(s, Method::GET, &format!("/v1/users?prefix={prefix}"), None).await
    }
    /// Friends, pending requests both ways, blocks.
    pub async fn friends(s: &Session) -> Result<Value, Error> {
        call(s, Method::GET, "/v1/friends", None).await
    }
    /// Asks `user` to be friends.
    pub async fn request_friend(s: &Session, user: UserId, message: &str) -> Result<Value, Error> {
        call(s, Method::POST, "/v1/friends/requests", Some(json!({ "user_id": user, "message": message }))).await
    }
    /// Accepts `user`'s request.
    pub async fn accept_friend(s: &Session, user: UserId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/friends/requests/{user}/accept"), None).await
    }
    /// Declines `user`'s request.
    pub async fn decline_friend(s: &Session, user: UserId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/friends/requests/{user}/decline"), None).await
    }
    /// Ends a friendship.
    pub async fn remove_friend(s: &Session, user: UserId) -> Result<Value, Error> {
        call(s, Method::DELETE, &format!("/v1/friends/{user}"), None).await
    }
    /// Blocks `user`.
    pub async fn block(s: &Session, user: UserId) -> Result<Value, Error> {
        call(s, Method::PUT, &format!("/v1/blocks/{user}"), None).await
    }
    /// Unblocks `user`.
    pub async fn unblock(s: &Session, user: UserId) -> Result<Value, Error> {
        call(s, Method::DELETE, &format!("/v1/blocks/{user}"), None).await
    }
    /// Creates a group (`join_policy`: `open` or `approval`); answers the group.
    pub async fn create_group(s: &Session, name: &str, join_policy: &str) -> Result<Value, Error> {
        call(s, Method::POST, "/v1/groups", Some(json!({ "name": name, "join_policy": join_policy }))).await
    }
    /// The group with its members.
    pub async fn group(s: &Session, g: GroupId) -> Result<Value, Error> {
        call(s, Method::GET, &format!("/v1/groups/{g}"), None).await
    }
    /// Adds `user` to the group.
    pub async fn invite(s: &Session, g: GroupId, user: UserId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/members"), Some(json!({ "user_id": user }))).await
    }
    /// Joins (open) or asks to join (approval).
    pub async fn join_group(s: &Session, g: GroupId, message: &str) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/join"), Some(json!({ "message": message }))).await
    }
    /// Approves a join request.
    pub async fn approve(s: &Session, g: GroupId, user: UserId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/requests/{user}/approve"), None).await
    }
    /// Declines a join request.
    pub async fn decline_join(s: &Session, g: GroupId, user: UserId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/requests/{user}/decline"), None).await
    }
    /// Leaves the group.
    pub async fn leave_group(s: &Session, g: GroupId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/leave"), None).await
    }
    /// Removes a member.
    pub async fn kick(s: &Session, g: GroupId, user: UserId) -> Result<Value, Error> {
        call(s, Method::DELETE, &format!("/v1/groups/{g}/members/{user}"), None).await
    }
    /// Sets a member's role (`admin` or `member`).
    pub async fn set_role(s: &Session, g: GroupId, user: UserId, role: &str) -> Result<Value, Error> {
        call(s, Method::PUT, &format!("/v1/groups/{g}/members/{user}/role"), Some(json!({ "role": role }))).await
    }
    /// Hands ownership to `user`.
    pub async fn transfer(s: &Session, g: GroupId, user: UserId) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/transfer"), Some(json!({ "user_id": user }))).await
    }
    /// Mutes a member for `duration_secs` (0 unmutes).
    pub async fn mute_member(s: &Session, g: GroupId, user: UserId, duration_secs: u64) -> Result<Value, Error> {
        let body = json!({ "duration_secs": duration_secs });
        call(s, Method::PUT, &format!("/v1/groups/{g}/members/{user}/mute"), Some(body)).await
    }
    /// Mutes or unmutes the whole group.
    pub async fn mute_group(s: &Session, g: GroupId, muted: bool) -> Result<Value, Error> {
        call(s, Method::PUT, &format!("/v1/groups/{g}/mute"), Some(json!({ "muted": muted }))).await
    }
    /// Dissolves the group.
    pub async fn dissolve(s: &Session, g: GroupId) -> Result<Value, Error> {
        call(s, Method::DELETE, &format!("/v1/groups/{g}"), None).await
    }
    /// The caller's conversation list.
    pub async fn conversations(s: &Session) -> Result<Value, Error> {
        call(s, Method::GET, "/v1/conversations", None).await
    }
    /// Marks `conv` read up to `seq`.
    pub async fn mark_read(s: &Session, conv: ConvId, seq: u64) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/conversations/{conv}/read"), Some(json!({ "seq": seq }))).await
    }
    /// Recalls a message.
    pub async fn recall(s: &Session, conv: ConvId, seq: u64) -> Result<Value, Error> {
        call(s, Method::POST, &format!("/v1/conversations/{conv}/messages/{seq}/recall"), None).await
    }
    /// Who has read a message.
    pub async fn reads(s: &Session, conv: ConvId, seq: u64) -> Result<Value, Error> {
        call(s, Method::GET, &format!("/v1/conversations/{conv}/messages/{seq}/reads"), None).await
    }
}

/// Calls for business servers: push and key management, authenticated with an API key.
pub mod service {
    use serde::Deserialize;
    use serde_json::{Value, json};
    use tern_proto::{MsgId, Priority};

    use super::{client, parse, transport, url};
    use crate::Error;

    pub use tern_proto::rest::PushTarget as Target;

    async fn call<T: serde::de::DeserializeOwned>(
        method: reqwest::Method,
        server: &str,
        key: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, Error> {
        let mut req = client().request(method, url(server, path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        parse(req.send().await.map_err(transport)?).await
    }

    /// Pushes `data`; returns the push id.
    pub async fn push(
        server: &str,
        key: &str,
        target: &Target,
        data: Value,
        priority: Priority,
        qos: u8,
    ) -> Result<MsgId, Error> {
        #[derive(Deserialize)]
        struct Accepted {
            msg_id: MsgId,
        }
        let mut body = json!({ "data": data, "priority": priority, "qos": qos });
        match target {
            Target::Users(users) => body["users"] = json!(users),
            Target::Devices(devices) => {
                let list: Vec<Value> = devices.iter().map(|(u, d)| json!({ "user_id": u, "device_id": d })).collect();
                body["devices"] = json!(list);
            }
            Target::Room(_) | Target::Area(_) | Target::All => {}
        }
        let path = target.path();
        let accepted: Accepted = call(reqwest::Method::POST, server, key, &path, Some(body)).await?;
        Ok(accepted.msg_id)
    }

    /// Creates an API key; the answer includes `key`, shown only once.
    pub async fn create_key(
        server: &str,
        admin_key: &str,
        name: &str,
        scopes: &[String],
        rate_per_sec: Option<f64>,
        burst: Option<u32>,
    ) -> Result<Value, Error> {
        let body = json!({ "name": name, "scopes": scopes, "rate_per_sec": rate_per_sec, "burst": burst });
        call(reqwest::Method::POST, server, admin_key, "/v1/admin/keys", Some(body)).await
    }

    /// Lists API keys (without secrets).
    pub async fn list_keys(server: &str, admin_key: &str) -> Result<Value, Error> {
        call(reqwest::Method::GET, server, admin_key, "/v1/admin/keys", None).await
    }

    /// Revokes an API key.
    pub async fn revoke_key(server: &str, admin_key: &str, key_id: &str) -> Result<(), Error> {
        let resp = client()
            .delete(url(server, &format!("/v1/admin/keys/{key_id}")))
            .bearer_auth(admin_key)
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        parse::<Value>(resp).await.map(drop)
    }
}
