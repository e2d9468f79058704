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
    pub store: Option<String>,
    pub node_id: Option<u16>,
    pub cluster: Option<String>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let Flags { config, data_dir, http, tcp, log_json, push_key, store, node_id, cluster, tls } = flags;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
    // One stable line on stdout for scripts and tests.
    println!("tern listening http={} tcp={}", server.http_addr(), server.tcp_addr());

    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
