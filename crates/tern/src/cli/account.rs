//! `tern register`, `tern login`.

use super::{Profile, ProfileArg, ServerArgs};

pub async fn register(server: &ServerArgs, username: &str, password: &str) -> anyhow::Result<()> {
    let id = tern_client::http::register(&server.server, username, password).await?;
    println!("registered {username} as user {id}");
    Ok(())
}

pub async fn login(
    server: &ServerArgs,
    username: &str,
    password: &str,
    device: &str,
    profile: &ProfileArg,
) -> anyhow::Result<()> {
    let session = tern_client::http::login(&server.server, username, password, device).await?;
    let user_id = session.user_id;
    Profile { session, watermarks: Default::default() }.save(&profile.profile)?;
    println!("logged in as {username} (user {user_id}); session saved to {}", profile.profile.display());
    Ok(())
}
