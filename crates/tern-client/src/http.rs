//! REST calls: register, login, user lookup, history; files in [`files`].

pub mod files;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_proto::rest::{ErrorBody, Login, NewUser, SessionToken, UserView};
use tern_proto::{ConvId, UserId};

use crate::{DeviceSession, Error, HistoryPage, Session};

/// One HTTP client per thread, so calls share pooled keep-alive connections (thousands of calls
/// from a load generator would otherwise leave thousands of sockets in TIME_WAIT). Per thread,
/// not per process: a pooled connection belongs to the runtime that opened it, and a thread never
/// changes runtime.
///
/// HTTPS verifies the server with the roots of `tls.rs` (the system's, and `TERN_CA`).
fn client() -> reqwest::Client {
    thread_local! {
        static CLIENT: reqwest::Client = {
            let builder = reqwest::Client::builder();
            let builder = match crate::tls::config(b"http/1.1") {
                Ok(tls) => builder.use_preconfigured_tls(tls),
                // Roots that cannot be loaded (a bad TERN_CA): every HTTPS call fails on an
                // unknown issuer, and the error names the file on the first connection.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS roots unavailable");
                    builder
                }
            };
            builder.build().unwrap_or_default()
        };
    }
    CLIENT.with(reqwest::Client::clone)
}

/// The SDK's HTTP client: pooled per thread, verifying HTTPS servers like the SDK's connections
/// (for tools that make their own calls, like `tern bench`).
pub fn shared_client() -> reqwest::Client {
    client()
}

/// A failed request in a sentence (for tools making their own calls with [`shared_client`]).
pub fn describe(e: reqwest::Error) -> String {
    transport(e).to_string()
}

/// A failed request, with its causes: reqwest's own message ("error sending request") does not
/// say why — a refused connection, an untrusted certificate.
fn transport(e: reqwest::Error) -> Error {
    let mut causes = String::new();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        causes.push_str(&format!(": {c}"));
        cause = c.source();
    }
    Error::Transport(match e.url() {
        Some(url) if e.is_connect() => {
            let origin = url.origin().ascii_serialization();
            format!("cannot reach tern at {origin}{causes} — is the server running, and is this its address?")
        }
        _ => format!("http request failed: {e}{causes}"),
    })
}

async fn parse<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| Error::Transport(format!("unexpected response: {e}")));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(w) => Err(Error::Server { code: w.error.code, message: w.error.message }),
        Err(_) => Err(Error::Transport(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))),
    }
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

async fn post<T: DeserializeOwned>(server: &str, path: &str, body: &impl Serialize) -> Result<T, Error> {
    let resp = client().post(url(server, path)).json(body).send().await.map_err(transport)?;
    parse(resp).await
}

async fn get<T: DeserializeOwned>(session: &Session, path: &str) -> Result<T, Error> {
    let resp = client().get(url(&session.server, path)).bearer_auth(&session.token).send().await.map_err(transport)?;
    parse(resp).await
}

/// Registers an account; returns its id.
pub async fn register(server: &str, username: &str, password: &str) -> Result<UserId, Error> {
    let body = NewUser { username: username.to_owned(), password: password.to_owned() };
    Ok(post::<UserView>(server, "/v1/users", &body).await?.user_id)
}

/// Logs a device in.
pub async fn login(server: &str, username: &str, password: &str, device_id: &str) -> Result<Session, Error> {
    let body = Login { username: username.to_owned(), password: password.to_owned(), device_id: device_id.to_owned() };
    let r: SessionToken = post(server, "/v1/sessions", &body).await?;
    let user_id = r.user_id.ok_or_else(|| Error::Transport("unexpected response: a login without user_id".into()))?;
    Ok(Session {
        server: server.trim_end_matches('/').to_owned(),
        user_id,
        device_id: r.device_id,
        token: r.token,
        expires_at: r.expires_at,
        endpoints: r.endpoints,
        alternates: r.alternates,
    })
}

/// Finds a user's id by name.
pub async fn lookup_user(session: &Session, username: &str) -> Result<UserId, Error> {
    let path = format!("/v1/users/by-name/{username}");
    Ok(get::<UserView>(session, &path).await?.user_id)
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
    let r: SessionToken = post(server, "/v1/devices", &serde_json::json!({})).await?;
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
/// Requests and answers are the shared types of [`tern_proto::rest`], the same the server uses
/// and `/openapi.json` describes.
pub mod im {
    use reqwest::Method;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use tern_proto::rest::{
        ConvSummary, FriendRequest, GroupMute, GroupView, JoinGroup, JoinOutcome, JoinPolicy, MemberMute, NewGroup,
        Profile, ProfileChange, PublicProfile, ReadReceipt, ReadUpTo, Relations, RequestOutcome, RoleChange, Status,
        UserRef,
    };
    use tern_proto::{ConvId, GroupId, Role, UserId};

    use super::{client, parse, transport, url};
    use crate::{Error, Session};

    /// A call whose answer has a body.
    async fn call<T: DeserializeOwned>(
        s: &Session,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<T, Error> {
        let mut req = client().request(method, url(&s.server, path)).bearer_auth(&s.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        parse(req.send().await.map_err(transport)?).await
    }

    /// A call answered `204 No Content`.
    async fn act(s: &Session, method: Method, path: &str, body: Option<&(impl Serialize + Sync)>) -> Result<(), Error> {
        let mut req = client().request(method, url(&s.server, path)).bearer_auth(&s.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        parse::<serde_json::Value>(resp).await.map(drop)
    }

    const NO_BODY: Option<&()> = None;

    /// The caller's profile, settings included.
    pub async fn me(s: &Session) -> Result<Profile, Error> {
        call(s, Method::GET, "/v1/me", NO_BODY).await
    }
    /// Changes the caller's profile; absent fields stay.
    pub async fn update_me(s: &Session, changes: &ProfileChange) -> Result<Profile, Error> {
        call(s, Method::PATCH, "/v1/me", Some(changes)).await
    }
    /// A user's public profile.
    pub async fn profile(s: &Session, user: UserId) -> Result<PublicProfile, Error> {
        call(s, Method::GET, &format!("/v1/users/{user}"), NO_BODY).await
    }
    /// Users whose name starts with `prefix`.
    pub async fn search(s: &Session, prefix: &str) -> Result<Vec<PublicProfile>, Error> {
        call(s, Method::GET, &format!("/v1/users?prefix={prefix}"), NO_BODY).await
    }
    /// Friends, requests both ways, blocks.
    pub async fn friends(s: &Session) -> Result<Relations, Error> {
        call(s, Method::GET, "/v1/friends", NO_BODY).await
    }
    /// Asks `user` to be friends.
    pub async fn request_friend(s: &Session, user: UserId, message: &str) -> Result<Status<RequestOutcome>, Error> {
        let body = FriendRequest { user_id: user, message: message.to_owned() };
        call(s, Method::POST, "/v1/friends/requests", Some(&body)).await
    }
    /// Accepts `user`'s request.
    pub async fn accept_friend(s: &Session, user: UserId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/friends/requests/{user}/accept"), NO_BODY).await
    }
    /// Declines `user`'s request.
    pub async fn decline_friend(s: &Session, user: UserId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/friends/requests/{user}/decline"), NO_BODY).await
    }
    /// Ends a friendship.
    pub async fn remove_friend(s: &Session, user: UserId) -> Result<(), Error> {
        act(s, Method::DELETE, &format!("/v1/friends/{user}"), NO_BODY).await
    }
    /// Blocks `user`.
    pub async fn block(s: &Session, user: UserId) -> Result<(), Error> {
        act(s, Method::PUT, &format!("/v1/blocks/{user}"), NO_BODY).await
    }
    /// Unblocks `user`.
    pub async fn unblock(s: &Session, user: UserId) -> Result<(), Error> {
        act(s, Method::DELETE, &format!("/v1/blocks/{user}"), NO_BODY).await
    }
    /// Creates a group owned by the caller.
    pub async fn create_group(s: &Session, name: &str, join_policy: JoinPolicy) -> Result<GroupView, Error> {
        let body = NewGroup { name: name.to_owned(), join_policy };
        call(s, Method::POST, "/v1/groups", Some(&body)).await
    }
    /// A group the caller belongs to.
    pub async fn group(s: &Session, g: GroupId) -> Result<GroupView, Error> {
        call(s, Method::GET, &format!("/v1/groups/{g}"), NO_BODY).await
    }
    /// Adds `user` to the group.
    pub async fn invite(s: &Session, g: GroupId, user: UserId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/groups/{g}/members"), Some(&UserRef { user_id: user })).await
    }
    /// Joins (open groups) or asks to join (approval groups).
    pub async fn join_group(s: &Session, g: GroupId, message: &str) -> Result<Status<JoinOutcome>, Error> {
        call(s, Method::POST, &format!("/v1/groups/{g}/join"), Some(&JoinGroup { message: message.to_owned() })).await
    }
    /// Approves `user`'s join request.
    pub async fn approve(s: &Session, g: GroupId, user: UserId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/groups/{g}/requests/{user}/approve"), NO_BODY).await
    }
    /// Declines `user`'s join request.
    pub async fn decline_join(s: &Session, g: GroupId, user: UserId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/groups/{g}/requests/{user}/decline"), NO_BODY).await
    }
    /// Leaves the group.
    pub async fn leave_group(s: &Session, g: GroupId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/groups/{g}/leave"), NO_BODY).await
    }
    /// Removes `user` from the group.
    pub async fn kick(s: &Session, g: GroupId, user: UserId) -> Result<(), Error> {
        act(s, Method::DELETE, &format!("/v1/groups/{g}/members/{user}"), NO_BODY).await
    }
    /// Makes `user` an admin or a plain member.
    pub async fn set_role(s: &Session, g: GroupId, user: UserId, role: Role) -> Result<(), Error> {
        act(s, Method::PUT, &format!("/v1/groups/{g}/members/{user}/role"), Some(&RoleChange { role })).await
    }
    /// Hands the group to `user`.
    pub async fn transfer(s: &Session, g: GroupId, user: UserId) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/groups/{g}/transfer"), Some(&UserRef { user_id: user })).await
    }
    /// Mutes `user` for `duration_secs` (0 unmutes).
    pub async fn mute_member(s: &Session, g: GroupId, user: UserId, duration_secs: u64) -> Result<(), Error> {
        let body = MemberMute { duration_secs };
        act(s, Method::PUT, &format!("/v1/groups/{g}/members/{user}/mute"), Some(&body)).await
    }
    /// Mutes or unmutes the whole group.
    pub async fn mute_group(s: &Session, g: GroupId, muted: bool) -> Result<(), Error> {
        act(s, Method::PUT, &format!("/v1/groups/{g}/mute"), Some(&GroupMute { muted })).await
    }
    /// Dissolves the group (owner only).
    pub async fn dissolve(s: &Session, g: GroupId) -> Result<(), Error> {
        act(s, Method::DELETE, &format!("/v1/groups/{g}"), NO_BODY).await
    }
    /// The caller's conversations, newest first.
    pub async fn conversations(s: &Session) -> Result<Vec<ConvSummary>, Error> {
        call(s, Method::GET, "/v1/conversations", NO_BODY).await
    }
    /// Marks everything up to `seq` read.
    pub async fn mark_read(s: &Session, conv: ConvId, seq: u64) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/conversations/{conv}/read"), Some(&ReadUpTo { seq })).await
    }
    /// Recalls one of the caller's messages.
    pub async fn recall(s: &Session, conv: ConvId, seq: u64) -> Result<(), Error> {
        act(s, Method::POST, &format!("/v1/conversations/{conv}/messages/{seq}/recall"), NO_BODY).await
    }
    /// Who has read a message.
    pub async fn reads(s: &Session, conv: ConvId, seq: u64) -> Result<ReadReceipt, Error> {
        call(s, Method::GET, &format!("/v1/conversations/{conv}/messages/{seq}/reads"), NO_BODY).await
    }
}

/// Calls for business servers: push and key management, authenticated with an API key.
pub mod service {
    use serde::Serialize;
    use serde_json::Value;
    use tern_proto::rest::{Accepted, ByPath, CreatedKey, DeviceRef, KeyView, NewKey, Push, ToDevices, ToUsers};
    use tern_proto::{MsgId, Priority};

    use super::{client, parse, transport, url};
    use crate::Error;

    pub use tern_proto::rest::PushTarget as Target;

    async fn call<T: serde::de::DeserializeOwned>(
        method: reqwest::Method,
        server: &str,
        key: &str,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<T, Error> {
        let mut req = client().request(method, url(server, path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
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
        let path = target.path();
        let post = reqwest::Method::POST;
        let accepted: Accepted = match target {
            Target::Users(users) => {
                let body = Push { to: ToUsers { users: users.clone() }, data, priority, qos };
                call(post, server, key, &path, Some(&body)).await?
            }
            Target::Devices(devices) => {
                let devices = devices
                    .iter()
                    .map(|(user_id, device)| DeviceRef { user_id: *user_id, device_id: device.0.clone() })
                    .collect();
                let body = Push { to: ToDevices { devices }, data, priority, qos };
                call(post, server, key, &path, Some(&body)).await?
            }
            Target::Room(_) | Target::Area(_) | Target::All => {
                let body = Push { to: ByPath {}, data, priority, qos };
                call(post, server, key, &path, Some(&body)).await?
            }
        };
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
    ) -> Result<CreatedKey, Error> {
        let body = NewKey { name: name.to_owned(), scopes: scopes.to_vec(), rate_per_sec, burst };
        call(reqwest::Method::POST, server, admin_key, "/v1/admin/keys", Some(&body)).await
    }

    /// Lists API keys (without secrets).
    pub async fn list_keys(server: &str, admin_key: &str) -> Result<Vec<KeyView>, Error> {
        call(reqwest::Method::GET, server, admin_key, "/v1/admin/keys", None::<&()>).await
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
