//! `tern`: the server (`tern serve`) and a command-line client (`register`, `login`, `send`,
//! `listen`). Client errors print one line and exit non-zero.

mod bench;
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's own counts (refreshed by advancing its epoch), for `/metrics`.
fn jemalloc_stats() -> Option<tern_server::telemetry::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(tern_server::telemetry::AllocatorStats {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

#[derive(Parser)]
#[command(name = "tern", version, about = "tern: one server for IM and live push over long connections")]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Also trust this CA certificate (PEM) when verifying a tern server's TLS certificate, as
    /// well as the system's roots (for a private CA).
    #[arg(long, global = true, env = "TERN_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded store in the data directory).
    Serve {
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (store and token secret).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP address: REST API and WebSocket.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// Raw TCP address.
        #[arg(long)]
        tcp: Option<std::net::SocketAddr>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
        /// A push API key with every scope (at least 16 characters).
        #[arg(long, env = "TERN_PUSH__BOOTSTRAP_KEY", hide_env_values = true)]
        push_key: Option<String>,
        /// Read that key from a file (its first line) instead: a secret kept out of `ps` and
        /// the shell's history.
        #[arg(long, value_name = "FILE", conflicts_with = "push_key")]
        push_key_file: Option<PathBuf>,
        /// Shared PostgreSQL store (`postgres://user@host:port/db`) instead of the embedded one.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// This node's number in a cluster, 0–1023.
        #[arg(long)]
        node_id: Option<u16>,
        /// Run as a cluster node: the NATS server carrying deliveries between nodes.
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// TLS certificate chain (PEM): HTTPS/WSS on the HTTP port, TLS on the TCP port; reloaded
        /// when the file changes or on SIGHUP. Needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Create an account.
    Register {
        /// Username.
        username: String,
        #[command(flatten)]
        common: cli::ServerArgs,
        /// Password (or set TERN_PASSWORD).
        #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Log in and save the session to the profile file.
    Login {
        /// Username.
        username: String,
        #[command(flatten)]
        common: cli::ServerArgs,
        /// Password (or set TERN_PASSWORD).
        #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// This device's id.
        #[arg(long, default_value = "cli")]
        device: String,
        #[command(flatten)]
        profile: cli::ProfileArg,
    },
    /// Send a text message to a user (by username).
    Send {
        /// Recipient's username.
        #[arg(long)]
        to: String,
        /// The text.
        text: String,
        #[command(flatten)]
        profile: cli::ProfileArg,
        /// Transport.
        #[arg(long, value_enum, default_value = "ws")]
        transport: cli::ClientTransportArg,
    },
    /// Print each incoming message as one JSON line; resumes from where the last listen stopped.
    Listen {
        #[command(flatten)]
        profile: cli::ProfileArg,
        /// Transport.
        #[arg(long, value_enum, default_value = "ws")]
        transport: cli::ClientTransportArg,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Send a file straight to another user (through tern's relay when needed), or receive one.
    #[command(subcommand)]
    File(FileCommand),
    /// Push through the service API.
    Push(cli::push::PushArgs),
    /// Manage push API keys.
    #[command(subcommand)]
    Keys(cli::push::KeysCommand),
    /// Live rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Load scenarios against a running server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Server configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Save a consistent copy of a running server's store (admin API key).
    Backup(cli::ops::BackupArgs),
    /// Put a backup in place as the store of an empty data directory.
    Restore(cli::ops::RestoreArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every setting as TOML with its default and meaning (a starting `--config` file).
    Example,
}

#[derive(Subcommand)]
enum FileCommand {
    /// Offer a file to a user and send it once they accept: directly if their machine can
    /// reach this one, else through tern's relay. Prints one JSON line when it arrived.
    Send(cli::file::SendArgs),
    /// Wait for offered files and save them in a directory, checked against their SHA-256.
    Receive(cli::file::ReceiveArgs),
}

#[derive(Subcommand)]
enum RoomCommand {
    /// Join a room and print each push that arrives as one JSON line.
    Join(cli::push::JoinArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// 1:1 messages with persistence and ACKs: throughput and latency.
    P2p(bench::p2p::P2pArgs),
    /// One group, many members, some online: group message throughput, delivery latency,
    /// history page latency.
    Group(bench::group::GroupArgs),
    /// One room (or NATS subject), many members: deliveries, server CPU per delivery, latency.
    Fanout(bench::fanout::FanoutArgs),
    /// Idle authenticated connections: server RSS per connection.
    Conns(bench::conns::ConnsArgs),
    /// Many clients connecting and authenticating at once.
    Storm(bench::conns::StormArgs),
    /// A reconnect storm: clients in a room all drop at once and come back with jitter.
    Reconnect(bench::reconnect::ReconnectArgs),
    /// Compression ratio of room batches by batch size (brotli as the server uses it, and zlib).
    Compress(bench::fanout::CompressArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(ca) = &args.ca
        && let Err(e) = tern_client::tls::use_ca_file(ca)
    {
        eprintln!("tern: {e}");
        return ExitCode::FAILURE;
    }
    let result = runtime.block_on(async {
        match args.command {
            Command::Serve {
                config,
                data_dir,
                http,
                tcp,
                log_json,
                push_key,
                push_key_file,
                store,
                node_id,
                cluster,
                tls_cert,
                tls_key,
            } => {
                tern_server::telemetry::set_allocator_stats(jemalloc_stats);
                let flags = cli::serve::Flags {
                    config,
                    data_dir,
                    http,
                    tcp,
                    log_json,
                    push_key,
                    push_key_file,
                    store,
                    node_id,
                    cluster,
                    tls: tls_cert.zip(tls_key),
                };
                cli::serve::run(flags).await
            }
            Command::Push(args) => cli::push::push(args).await,
            Command::Backup(args) => cli::ops::backup(args).await,
            Command::Restore(args) => cli::ops::restore(args),
            Command::Keys(cmd) => cli::push::keys(cmd).await,
            Command::Config(ConfigCommand::Example) => {
                print!("{}", tern_server::config::example());
                Ok(())
            }
            Command::Room(RoomCommand::Join(args)) => cli::push::join(args).await,
            Command::Register { username, common, password } => {
                cli::account::register(
                    &common,
                    &username,
                    cli::given(&password, "password", "--password", "TERN_PASSWORD")?,
                )
                .await
            }
            Command::Login { username, common, password, device, profile } => {
                let password = cli::given(&password, "password", "--password", "TERN_PASSWORD")?;
                cli::account::login(&common, &username, password, &device, &profile).await
            }
            Command::Send { to, text, profile, transport } => cli::chat::send(&profile, transport, &to, &text).await,
            Command::Listen { profile, transport, count } => cli::chat::listen(&profile, transport, count).await,
            Command::File(FileCommand::Send(args)) => cli::file::send(args).await,
            Command::File(FileCommand::Receive(args)) => cli::file::receive(args).await,
            Command::Bench(BenchCommand::P2p(args)) => bench::p2p::p2p(args).await,
            Command::Bench(BenchCommand::Group(args)) => bench::group::group(args).await,
            Command::Bench(BenchCommand::Fanout(args)) => bench::fanout::fanout(args).await,
            Command::Bench(BenchCommand::Conns(args)) => bench::conns::conns(args).await,
            Command::Bench(BenchCommand::Storm(args)) => bench::conns::storm(args).await,
            Command::Bench(BenchCommand::Reconnect(args)) => bench::reconnect::reconnect(args).await,
            Command::Bench(BenchCommand::Compress(args)) => bench::fanout::compress(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}");
            // A client command that cannot reach its server says which setting names the server.
            let hint =
                if line.contains("cannot reach tern at") { " (the CLI's server is --server or TERN_URL)" } else { "" };
            eprintln!("tern: {line}{hint}");
            ExitCode::FAILURE
        }
    }
}
