//! Keeping the write-ahead log bounded: the checkpoint thread and the writer's restarts.

use super::*;

/// WAL frames (4 KiB pages) past which the log should start over from its beginning: 64 MiB.
pub(super) const WAL_RESTART_FRAMES: i64 = 16_384;

/// WAL frames past which the checkpoint thread stops waiting for the writer to restart the log
/// and truncates it itself, holding the writer off while it does: 256 MiB.
pub(super) const WAL_TRUNCATE_FRAMES: i64 = 4 * WAL_RESTART_FRAMES;

/// What the checkpoint thread leaves for the writer to copy when it asks for a restart, at most
/// (unless commits outrun eight passes in a row).
pub(super) const WAL_TAIL_FRAMES: i64 = 256;

/// How often the checkpoint thread copies the WAL into the database.
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps the WAL bounded without pausing the writer.
///
/// Passive checkpoints (the checkpoint thread's, every [`CHECKPOINT_EVERY`]) copy pages beside
/// the writer, but the log only starts over when a write transaction begins with every frame
/// already copied and no reader on the log — which under steady load never happens by itself:
/// measured, 8.3 GB of WAL beside a 169 MB database after a 10-minute soak, its index (`-shm`,
/// mapped) growing the server's RSS. So once the log passes [`WAL_RESTART_FRAMES`] the
/// checkpoint thread asks the writer, which runs a passive checkpoint of its own between two
/// commits ([`restart_wal`]): it copies only what was written since the last pass, and
/// its next transaction starts the log over.
///
/// (A truncating checkpoint from this thread did the same by holding the writer off; the
/// writer then slept in SQLite's busy handler, whose back-off rounds up to 100 ms: measured,
/// pauses of 50–600 ms every 64 MiB, the whole 1:1 ACK p99 at saturation. It remains the
/// fallback past [`WAL_TRUNCATE_FRAMES`], if readers keep the log from starting over.)
pub(super) struct WalCheckpointer {
    conn: Connection,
    restart: Arc<AtomicBool>,
    /// [`WAL_RESTART_FRAMES`]; [`WAL_TRUNCATE_FRAMES`] (smaller in tests).
    restart_frames: i64,
    truncate_frames: i64,
}

impl WalCheckpointer {
    fn pass(&self) -> Result<(), rusqlite::Error> {
        let passive = || passive_checkpoint(&self.conn).map(|c| c.log);
        let mut log = passive()?;
        if log >= self.restart_frames {
            // Catch up before asking the writer: each pass copies what was committed during the
            // one before, so a few back-to-back passes leave the writer only a short tail.
            for _ in 0..8 {
                let before = log;
                log = passive()?;
                if log - before <= WAL_TAIL_FRAMES {
                    break;
                }
            }
        }
        if log >= self.truncate_frames {
            let started = std::time::Instant::now();
            let (busy, log): (i64, i64) =
                self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            tracing::warn!(busy, frames_left = log, took_ms = started.elapsed().as_millis() as u64, "wal truncated");
        } else if log >= self.restart_frames {
            self.restart.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What a checkpoint reports, in WAL frames.
pub(super) struct Checkpoint {
    /// It could not run to completion (another connection held a lock).
    busy: bool,
    /// Frames in the log.
    log: i64,
    /// Frames of the log already copied into the database.
    copied: i64,
}

/// A passive checkpoint: copies what it can without waiting for, or holding off, anyone.
pub(super) fn passive_checkpoint(conn: &Connection) -> Result<Checkpoint, rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Checkpoint { busy: r.get::<_, i64>(0)? != 0, log: r.get(1)?, copied: r.get(2)? })
    })
}

/// Run by the writer between two commits when `wanted` is set: copies what the checkpoint thread
/// has not yet copied, so that the writer's next transaction starts the WAL over. Busy (the
/// checkpoint thread is in a pass) or incomplete (a reader holds an older snapshot): `wanted`
/// stays set, and the next commit tries again.
pub(super) fn restart_wal(conn: &Connection, wanted: &AtomicBool) {
    let started = std::time::Instant::now();
    match passive_checkpoint(conn) {
        Ok(Checkpoint { busy: false, log, copied }) if copied == log => {
            wanted.store(false, Ordering::Relaxed);
            tracing::debug!(frames = log, took_us = started.elapsed().as_micros() as u64, "wal restarts");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
    }
}

/// Starts the checkpoint thread (see [`WalCheckpointer`]); it stops when the returned sender is
/// dropped.
pub(super) fn spawn_checkpointer(
    path: &Path,
    sync: Synchronous,
    restart: Arc<AtomicBool>,
) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let checkpointer = WalCheckpointer {
        conn: open_connection(path, Some(sync))?,
        restart,
        restart_frames: WAL_RESTART_FRAMES,
        truncate_frames: WAL_TRUNCATE_FRAMES,
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("tern-store-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = checkpointer.pass() {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_frames(conn: &Connection) -> i64 {
        passive_checkpoint(conn).unwrap().log
    }

    #[test]
    fn the_wal_starts_over_once_the_writer_copies_the_tail_and_never_grows_past_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.db");
        let writer = open_connection(&path, Some(Synchronous::Normal)).unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)").unwrap();
        let wanted = Arc::new(AtomicBool::new(false));
        let checkpointer = WalCheckpointer {
            conn: open_connection(&path, Some(Synchronous::Normal)).unwrap(),
            restart: Arc::clone(&wanted),
            restart_frames: 64,
            truncate_frames: 1_000_000,
        };
        let mut next = 0;
        let mut commit = |n: usize| {
            let tx = writer.unchecked_transaction().unwrap();
            for _ in 0..n {
                next += 1;
                tx.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(3000))", [next]).unwrap();
            }
            tx.commit().unwrap();
        };
        for _ in 0..10 {
            commit(10); // ~10 frames each
        }
        checkpointer.pass().unwrap();
        assert!(wanted.load(Ordering::Relaxed), "past the bound, the writer is asked");
        let before = wal_frames(&checkpointer.conn);
        assert!(before >= 64, "{before} frames");
        // Steady load: commits keep coming between the checkpoint thread's passes and the
        // writer's turn, so there is a tail to copy.
        commit(10);
        restart_wal(&writer, &wanted);
        assert!(!wanted.load(Ordering::Relaxed), "the tail was copied");
        commit(1);
        let after = wal_frames(&checkpointer.conn);
        assert!(after < 10, "the next transaction starts the log over: {after} frames (was {before})");
        assert_eq!(writer.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 111);

        // A reader on an old snapshot keeps the log from starting over; past the hard bound the
        // checkpoint thread truncates it once the reader is gone.
        let reader = open_connection(&path, None).unwrap();
        let checkpointer = WalCheckpointer { restart_frames: 8, truncate_frames: 32, ..checkpointer };
        let held = reader.unchecked_transaction().unwrap();
        let _: i64 = held.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        for _ in 0..5 {
            commit(10);
        }
        wanted.store(true, Ordering::Relaxed);
        restart_wal(&writer, &wanted);
        assert!(wanted.load(Ordering::Relaxed), "the reader's snapshot still needs the log");
        held.commit().unwrap();
        let wal = dir.path().join("tern.db-wal");
        let high_water = std::fs::metadata(&wal).unwrap().len();
        checkpointer.pass().unwrap();
        // Restarting reuses the file from its start; truncating empties it.
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "truncated past the hard bound (was {high_water} B)");
        commit(1);
        assert!(wal_frames(&checkpointer.conn) < 10);
    }
}
