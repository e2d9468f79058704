//! `tern send`, `tern listen`.

use anyhow::Context;
use tern_client::{Client, Event, Options};

use super::{ClientTransportArg, Profile, ProfileArg};

pub async fn send(profile: &ProfileArg, transport: ClientTransportArg, to: &str, text: &str) -> anyhow::Result<()> {
    let p = Profile::load(&profile.profile)?;
    let to_id = tern_client::http::lookup_user(&p.session, to).await?;
    let opts = Options { transport: transport.into(), resume: false, ..Options::default() };
    let (client, _events) = Client::connect(p.session, opts).await?;
    let sent = client.send_text(to_id, text).await?;
    client.close().await;
    println!(
        "{}",
        serde_json::json!({ "msg_id": sent.msg_id, "conv_id": sent.conv_id, "seq": sent.seq, "ts": sent.ts })
    );
    Ok(())
}

pub async fn listen(profile: &ProfileArg, transport: ClientTransportArg, count: Option<usize>) -> anyhow::Result<()> {
    let mut p = Profile::load(&profile.profile)?;
    let opts = Options { transport: transport.into(), watermarks: p.watermarks.clone(), ..Options::default() };
    let (client, mut events) = Client::connect(p.session.clone(), opts).await?;
    let mut printed = 0usize;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(m) => {
                println!("{}", serde_json::to_string(&m).context("cannot print message")?);
                printed += 1;
                // Remember what was printed, so the next listen starts after it.
                p.watermarks = client.watermarks();
                p.save(&profile.profile)?;
                if count.is_some_and(|c| printed >= c) {
                    break;
                }
            }
            Event::Disconnected { reconnecting: false, message, .. } => anyhow::bail!("disconnected: {message}"),
            Event::Disconnected { message, .. } => {
                eprintln!("tern: disconnected ({message}); reconnecting")
            }
            Event::Missing { conv_id, from_seq, to_seq } => {
                eprintln!("tern: server has no messages {from_seq}..={to_seq} of {conv_id}")
            }
            Event::Push(p) => println!("{}", serde_json::json!({ "push": p })),
            Event::Typing { conv_id, user } => eprintln!("tern: user {user} is typing in {conv_id}"),
            Event::Presence { user, online } => {
                eprintln!("tern: user {user} is {}", if online { "online" } else { "offline" })
            }
            // `listen` joins no room.
            Event::Connected { .. }
            | Event::Synced
            | Event::Online { .. }
            | Event::Kicked { .. }
            | Event::RoomEvents { .. }
            | Event::RoomGap { .. }
            | Event::FileOffer(_)
            | Event::FileAnswer { .. } => {}
        }
    }
    client.close().await;
    Ok(())
}
