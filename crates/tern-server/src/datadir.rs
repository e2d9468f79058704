//! The data directory belongs to one server at a time.
//!
//! Two servers writing one embedded database would both assign seqs (`UNIQUE constraint failed`
//! for their senders) and split live delivery between them. So a server takes an exclusive
//! `flock` on `tern.lock` in the directory for as long as it runs; the kernel releases it when
//! the process ends however it ends (kill -9 included), so a crash never leaves a stale lock.
//! The file holds the owner's pid, only to name it in the refusal.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("data directory {} is in use by another tern server ({holder}); stop that one or pass another --data-dir", dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// "pid N", or "pid unknown".
        holder: String,
    },
    /// The directory or its lock file could not be opened.
    #[error("cannot lock data directory {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes `dir` (creating it if needed) for this process, or says who has it.
pub fn lock(dir: &Path) -> Result<DataDirLock, LockError> {
    let io = |source| LockError::Io { dir: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("tern.lock"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "pid unknown".into(),
            };
            return Err(LockError::InUse { dir: dir.to_path_buf(), holder });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in this same
        // process conflicts just as another process would.
        match lock(dir.path()) {
            Err(LockError::InUse { holder, .. }) => assert_eq!(holder, format!("pid {}", std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(held);
        lock(dir.path()).expect("free again once the holder is gone");
    }
}
