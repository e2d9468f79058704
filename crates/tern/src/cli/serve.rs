//! `tern serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tern_server::{Config, Server};
use tracing_subscriber::EnvFilter;

/// `tern serve`'s flags; each overrides its setting from the config file and environment.
pub struct Flags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub log_json: bool,
    pub push_key: Option<String>,
    pub push_key_file: Option<PathBuf>,
    pub store: Option<String>,
    pub node_id: Option<u16>,
    pub cluster: Option<String>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let Flags { config, data_dir, http, tcp, log_json, push_key, push_key_file, store, node_id, cluster, tls } = flags;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if log_json {
        logs.json().init();
    } else {
        logs.init();
    }

    let mut cfg = Config::load(config.as_deref())?;
    if let Some(d) = data_dir {
        cfg.server.data_dir = d;
    }
    if let Some(a) = http {
        cfg.server.http = a;
    }
    if let Some(a) = tcp {
        cfg.server.tcp = a;
    }
    if let Some(k) = push_key {
        cfg.push.bootstrap_key = k;
    }
    if let Some(path) = push_key_file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read the push key from {}: {e}", path.display()))?;
        cfg.push.bootstrap_key = text.lines().next().unwrap_or_default().trim().to_owned();
    }
    if let Some(url) = store {
        cfg.store.postgres_url = url;
    }
    if let Some(n) = node_id {
        cfg.cluster.node_id = n;
    }
    if let Some(url) = cluster {
        cfg.cluster.nats_url = url;
    }
    if let Some((cert, key)) = tls {
        cfg.server.tls_cert = cert.display().to_string();
        cfg.server.tls_key = key.display().to_string();
    }
    // A bad setting stops start-up with its one line before anything else is logged.
    cfg.validate()?;
    // Every connection is a file descriptor: take the hard limit, not the default soft one.
    match crate::bench::raise_fd_limit(0) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let server = Server::start(cfg).await?;
    // The handlers are in place before the listening line: a supervisor that signals as soon as
    // it reads the line must stop the server, not kill it mid-write.
    let stop = shutdown_signal()?;
    // One stable line on stdout for scripts and tests; with --log-json it is a JSON object too,
    // so a log pipeline never meets a plain line.
    let quic = server.quic_addr().map(|a| a.to_string());
    if log_json {
        let line = serde_json::json!({
            "event": "tern listening",
            "http": server.http_addr().to_string(),
            "tcp": server.tcp_addr().to_string(),
            "quic": quic,
        });
        println!("{line}");
    } else {
        let quic = quic.map(|a| format!(" quic={a}")).unwrap_or_default();
        println!("tern listening http={} tcp={}{quic}", server.http_addr(), server.tcp_addr());
    }

    stop.await;
    tracing::info!("shutting down");
    server.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
