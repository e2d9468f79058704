//! REST calls: register, login, user lookup, history.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tern_proto::{ConvId, DeviceId, ErrorCode, UserId};

use crate::{Endpoints, Error, HistoryPage, Session};

fn client() -> reqwest::Client {
    reqwest::Client::new()
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
        return serde_json::from_slice(&bytes)
            .map_err(|e| Error::Transport(format!("unexpected response: {e}")));
    }
    match serde_json::from_slice::<Wrapper>(&bytes) {
        Ok(w) => Err(Error::Server {
            code: w.error.code,
            message: w.error.message,
        }),
        Err(_) => Err(Error::Transport(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))),
    }
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

async fn post<T: DeserializeOwned>(
    server: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<T, Error> {
    let resp = client()
        .post(url(server, path))
        .json(&body)
        .send()
        .await
        .map_err(transport)?;
    parse(resp).await
}

async fn get<T: DeserializeOwned>(session: &Session, path: &str) -> Result<T, Error> {
    let resp = client()
        .get(url(&session.server, path))
        .bearer_auth(&session.token)
        .send()
        .await
        .map_err(transport)?;
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
pub async fn login(
    server: &str,
    username: &str,
    password: &str,
    device_id: &str,
) -> Result<Session, Error> {
    #[derive(Deserialize)]
    struct LoggedIn {
        user_id: UserId,
        device_id: DeviceId,
        token: String,
        expires_at: u64,
        endpoints: Endpoints,
    }
    let body =
        serde_json::json!({ "username": username, "password": password, "device_id": device_id });
    let r: LoggedIn = post(server, "/v1/sessions", body).await?;
    Ok(Session {
        server: server.trim_end_matches('/').to_owned(),
        user_id: r.user_id,
        device_id: r.device_id,
        token: r.token,
        expires_at: r.expires_at,
        endpoints: r.endpoints,
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
