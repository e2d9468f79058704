//! `tern push`, `tern keys …`, `tern room join`.

use anyhow::Context;
use serde_json::Value;
use tern_client::http::service::{self, Target};
use tern_client::{Client, Event, Options, Priority};
use tern_proto::{DeviceId, UserId};

use super::{ClientTransportArg, Profile};

/// Where the push service is and which key to use.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// HTTP base URL of the server (`host:port` means `http://host:port`).
    #[arg(long, env = "TERN_URL", default_value = "http://127.0.0.1:7070", value_parser = super::server_url)]
    pub server: String,
    /// API key (or set TERN_PUSH_KEY).
    #[arg(long, env = "TERN_PUSH_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

impl KeyArgs {
    /// The key, from `--key` or the environment.
    pub fn key(&self) -> anyhow::Result<&str> {
        super::given(&self.key, "API key", "--key", "TERN_PUSH_KEY")
    }
}

/// Options of `tern push`.
#[derive(clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Push to this user id (repeatable).
    #[arg(long = "user", group = "target")]
    pub users: Vec<u64>,
    /// Push to this device: `USER_ID:DEVICE` for a user's device, `DEVICE` for an anonymous one
    /// (repeatable).
    #[arg(long = "device", group = "target")]
    pub devices: Vec<String>,
    /// Push to everyone in this room.
    #[arg(long, group = "target")]
    pub room: Option<String>,
    /// Push to every room of this area.
    #[arg(long, group = "target")]
    pub area: Option<String>,
    /// Push to every connection.
    #[arg(long, group = "target")]
    pub all: bool,
    /// Lane: `low` (aggregated, dropped first when a client lags) or `high`.
    #[arg(long, value_enum, default_value = "low")]
    pub priority: PriorityArg,
    /// 0 = best effort, 1 = must arrive (ACK and retry).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// The payload: JSON, or any other text (sent as a JSON string).
    pub data: String,
}

/// Lane on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PriorityArg {
    /// Low.
    Low,
    /// High.
    High,
}

pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let target = if !args.users.is_empty() {
        Target::Users(args.users.into_iter().map(UserId).collect())
    } else if !args.devices.is_empty() {
        let parse = |d: &String| match d.split_once(':') {
            Some((u, dev)) => {
                u.parse::<u64>().map(|u| (Some(UserId(u)), DeviceId(dev.to_owned()))).context("--device USER_ID:DEVICE")
            }
            None => Ok((None, DeviceId(d.clone()))),
        };
        Target::Devices(args.devices.iter().map(parse).collect::<anyhow::Result<_>>()?)
    } else if let Some(room) = args.room {
        Target::Room(room)
    } else if let Some(area) = args.area {
        Target::Area(area)
    } else if args.all {
        Target::All
    } else {
        anyhow::bail!("name a target: --user, --device, --room, --area or --all");
    };
    let data = serde_json::from_str::<Value>(&args.data).unwrap_or(Value::String(args.data));
    let priority = match args.priority {
        PriorityArg::Low => Priority::Low,
        PriorityArg::High => Priority::High,
    };
    let id = service::push(&args.key.server, args.key.key()?, &target, data, priority, args.qos).await?;
    println!("{}", serde_json::json!({ "msg_id": id }));
    Ok(())
}

/// `tern keys …`.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key (printed once).
    Create {
        #[command(flatten)]
        key: KeyArgs,
        /// A label.
        #[arg(long)]
        name: String,
        /// Scope: users, devices, rooms, areas, all, admin, metrics (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Requests per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Burst.
        #[arg(long)]
        burst: Option<u32>,
    },
    /// List API keys.
    List {
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Revoke an API key.
    Revoke {
        #[command(flatten)]
        key: KeyArgs,
        /// The key id.
        key_id: String,
    },
}

pub async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { key, name, scopes, rate, burst } => {
            let created = service::create_key(&key.server, key.key()?, &name, &scopes, rate, burst).await?;
            println!("{}", serde_json::to_string(&created)?);
        }
        KeysCommand::List { key } => {
            let list = service::list_keys(&key.server, key.key()?).await?;
            for k in &list {
                println!("{}", serde_json::to_string(k)?);
            }
        }
        KeysCommand::Revoke { key, key_id } => {
            service::revoke_key(&key.server, key.key()?, &key_id).await?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

/// Options of `tern room join`.
#[derive(clap::Args)]
pub struct JoinArgs {
    /// The room.
    pub room: String,
    /// HTTP base URL of the server (for an anonymous device).
    #[arg(long, env = "TERN_URL", default_value = "http://127.0.0.1:7070", value_parser = super::server_url)]
    pub server: String,
    /// Join as the user in this profile instead of as an anonymous device.
    #[arg(long)]
    pub profile: Option<std::path::PathBuf>,
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: ClientTransportArg,
    /// Exit after this many pushes.
    #[arg(long)]
    pub count: Option<usize>,
}

pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let opts = Options { transport: args.transport.into(), resume: false, ..Options::default() };
    let (client, mut events) = match &args.profile {
        Some(path) => Client::connect(Profile::load(path)?.session, opts).await?,
        None => Client::connect_device(tern_client::http::device(&args.server).await?, opts).await?,
    };
    let joined = client.join(&args.room).await?;
    eprintln!("tern: joined {} (area {}, {} online)", joined.room, joined.area, joined.online);
    let mut printed = 0usize;
    while let Some(event) = events.recv().await {
        match event {
            Event::Push(p) => {
                println!("{}", serde_json::to_string(&p)?);
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    break;
                }
            }
            Event::Online { room, count } => eprintln!("tern: {count} online in {room}"),
            Event::Kicked { room, reason } => anyhow::bail!("taken out of room {room} by its moderators: {reason}"),
            Event::Disconnected { reconnecting: false, message, .. } => anyhow::bail!("disconnected: {message}"),
            Event::Disconnected { message, .. } => eprintln!("tern: disconnected ({message}); reconnecting"),
            _ => {}
        }
    }
    client.close().await;
    Ok(())
}
