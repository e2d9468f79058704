//! `tern backup`, `tern restore`: an operator's copies of the embedded store.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::push::KeyArgs;

/// Options of `tern backup`.
#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Where to write the backup (a SQLite file).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Options of `tern restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A file written by `tern backup`.
    pub backup: PathBuf,
    /// The data directory to restore into; it must hold no store yet (and no running server).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// SQLite's file header: what every backup starts with.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Asks the running server for a consistent snapshot and writes it to `--out` (atomically).
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let key = args.key.key()?;
    let url = format!("{}/v1/admin/backup", args.key.server.trim_end_matches('/'));
    let mut resp = tern_client::http::shared_client()
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(tern_client::http::describe(e)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("");
        anyhow::bail!("{code}: {message} (HTTP {status})");
    }
    let tmp = args.out.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await.context("the backup was cut off")? {
        file.write_all(&chunk).with_context(|| format!("cannot write {}", tmp.display()))?;
        bytes += chunk.len() as u64;
    }
    file.sync_all()?;
    check_sqlite(&tmp)?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("{}", serde_json::json!({ "backup": args.out, "bytes": bytes }));
    Ok(())
}

/// Puts a backup in place as the store of an empty data directory.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    check_sqlite(&args.backup)?;
    let db = args.data_dir.join("tern.db");
    anyhow::ensure!(
        !db.exists(),
        "{} already holds a store; restore into an empty data directory (and point tern serve at it)",
        args.data_dir.display()
    );
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let tmp = args.data_dir.join("tern.db.restoring");
    std::fs::copy(&args.backup, &tmp).with_context(|| format!("cannot copy into {}", args.data_dir.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &db)?;
    println!("{}", serde_json::json!({ "restored": db }));
    Ok(())
}

fn check_sqlite(path: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .with_context(|| format!("cannot read {}", path.display()));
    anyhow::ensure!(
        read.is_ok() && &head == SQLITE_MAGIC,
        "{} is not a tern backup (not a SQLite file)",
        path.display()
    );
    Ok(())
}
