//! `tern file send`, `tern file receive`: a file straight from one user's machine to another's,
//! through tern's relay when they cannot reach each other (`tern_client::transfer`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tern_client::transfer::{self, Route};
use tern_client::{Client, Event, Options, Transport};

use super::{Profile, ProfileArg};

/// `tern file send`.
#[derive(clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    profile: ProfileArg,
    /// The recipient's username.
    #[arg(long)]
    to: String,
    /// The file.
    path: PathBuf,
    /// Do not listen for a direct connection: everything goes through tern's relay.
    #[arg(long)]
    relay_only: bool,
}

/// `tern file receive`.
#[derive(clap::Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    profile: ProfileArg,
    /// Where received files go.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Accept every offer without asking.
    #[arg(long)]
    accept_all: bool,
    /// Only through tern's relay (do not connect to the sender directly).
    #[arg(long)]
    relay_only: bool,
    /// Exit after this many files.
    #[arg(long)]
    count: Option<usize>,
}

fn bar(size: u64, what: String) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn route_name(route: Route) -> &'static str {
    match route {
        Route::Direct => "direct",
        Route::Relay => "relay",
    }
}

/// The addresses to offer: this machine's, on the listener's port. Loopback for a peer on the
/// same machine, and the address this machine uses to reach tern for one on the same network.
async fn candidates(server: &str, port: u16) -> Vec<String> {
    let mut out = vec![format!("127.0.0.1:{port}")];
    let host =
        reqwest::Url::parse(server).ok().and_then(|u| u.socket_addrs(|| None).ok()).and_then(|a| a.first().copied());
    if let Some(server_addr) = host
        && let Ok(socket) = tokio::net::UdpSocket::bind("0.0.0.0:0").await
        && socket.connect(server_addr).await.is_ok()
        && let Ok(local) = socket.local_addr()
        && !local.ip().is_loopback()
    {
        out.push(format!("{}:{port}", local.ip()));
    }
    out
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let p = Profile::load(&args.profile.profile)?;
    let name = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the path names no file (or its name is not UTF-8)")?
        .to_owned();
    let size =
        tokio::fs::metadata(&args.path).await.with_context(|| format!("cannot read {}", args.path.display()))?.len();
    let sha256 = transfer::sha256_of(&args.path).await?;
    let to = tern_client::http::lookup_user(&p.session, &args.to).await?;
    let listener = if args.relay_only { None } else { Some(tokio::net::TcpListener::bind("0.0.0.0:0").await?) };
    let offered_at = match &listener {
        Some(l) => candidates(&p.session.server, l.local_addr()?.port()).await,
        None => Vec::new(),
    };
    let opts = Options { transport: Transport::WsJson, resume: false, ..Options::default() };
    let (client, mut events) = Client::connect(p.session.clone(), opts).await?;
    let offered = client.offer_file(to, &name, size, &sha256, offered_at).await?;
    eprintln!("tern: offered {name} ({size} bytes) to {}; waiting for an answer", args.to);
    let lasts = std::time::Duration::from_secs(offered.expires_at.saturating_sub(now_secs()));
    let answer = async {
        loop {
            match events.recv().await {
                Some(Event::FileAnswer { transfer_id, accept }) if transfer_id == offered.transfer_id => {
                    return Ok(accept);
                }
                Some(Event::Disconnected { reconnecting: false, message, .. }) => {
                    anyhow::bail!("disconnected: {message}")
                }
                Some(_) => {}
                None => anyhow::bail!("the connection ended before an answer"),
            }
        }
    };
    let accepted = tokio::time::timeout(lasts, answer)
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer before the offer expired", args.to))??;
    if !accepted {
        client.close().await;
        anyhow::bail!("{} declined {name}", args.to);
    }
    let progress = bar(size, format!("sending {name}"));
    let route = transfer::send(&p.session, &offered, listener, &args.path, size, &|n| progress.set_position(n)).await?;
    progress.finish_and_clear();
    client.close().await;
    println!("{}", serde_json::json!({ "sent": name, "size": size, "sha256": sha256, "route": route_name(route) }));
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A name that stays inside the target directory.
fn safe_name(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    match cleaned.trim_start_matches('.') {
        "" => "file".to_owned(),
        rest => rest.to_owned(),
    }
}

async fn ask(question: String) -> bool {
    tokio::task::spawn_blocking(move || {
        eprint!("{question} [y/N] ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
    })
    .await
    .unwrap_or(false)
}

pub async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let p = Profile::load(&args.profile.profile)?;
    tokio::fs::create_dir_all(&args.dir).await.with_context(|| format!("cannot create {}", args.dir.display()))?;
    let opts = Options { transport: Transport::WsJson, resume: false, ..Options::default() };
    let (client, mut events) = Client::connect(p.session.clone(), opts).await?;
    eprintln!("tern: waiting for files");
    let mut received = 0usize;
    while let Some(event) = events.recv().await {
        let offer = match event {
            Event::FileOffer(offer) => offer,
            Event::Disconnected { reconnecting: false, message, .. } => anyhow::bail!("disconnected: {message}"),
            _ => continue,
        };
        let name = safe_name(&offer.name);
        let accept = args.accept_all
            || ask(format!("user {} offers {} ({} bytes). Accept?", offer.from, name, offer.size)).await;
        client.answer_file(offer.ticket.clone(), accept).await?;
        if !accept {
            continue;
        }
        let part = args.dir.join(format!(".{name}.{}.part", &offer.transfer_id[..8.min(offer.transfer_id.len())]));
        let progress = bar(offer.size, format!("receiving {name}"));
        let route = transfer::receive(&p.session, &offer, &part, args.relay_only, &|n| progress.set_position(n)).await;
        progress.finish_and_clear();
        let route = route?;
        let dest = unused(&args.dir, &name);
        tokio::fs::rename(&part, &dest).await.with_context(|| format!("cannot write {}", dest.display()))?;
        println!(
            "{}",
            serde_json::json!({ "received": dest, "from": offer.from, "size": offer.size, "sha256": offer.sha256, "route": route_name(route) })
        );
        received += 1;
        if args.count.is_some_and(|c| received >= c) {
            break;
        }
    }
    client.close().await;
    Ok(())
}

/// `dir/name`, or `dir/name (2)` and so on if that exists.
fn unused(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (2..).map(|i| dir.join(format!("{name} ({i})"))).find(|p| !p.exists()).unwrap_or(first)
}
