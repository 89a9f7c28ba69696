//! The data directory of one running process.
//!
//! [`lock`] creates the directory (private, through [`sighthub_node::boot::private_dir`]),
//! then takes an exclusive advisory lock on `sighthub.lock` inside it and writes the process
//! id there. A second `sighthub` on the same directory is then refused before it opens a
//! store, with the first one's pid; a directory this user cannot write to is refused as a
//! data directory, before any file in it (a key, a certificate) is created. The lock lasts
//! as long as the returned [`Lock`] (the process), and the kernel drops it when the process
//! dies, so a crash never leaves a stale lock.

use anyhow::bail;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

/// The name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "sighthub.lock";

/// Held while the process uses the data directory.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Creates `dir` if needed and locks it for this process (see the module docs).
pub fn lock(dir: &Path) -> anyhow::Result<Lock> {
    sighthub_node::boot::private_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = match File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Err(not_writable(dir, &e)),
    };
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                let pid = match held.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                bail!(
                    "data directory {} is in use by another sighthub process{pid}; stop it, or \
                     give this one another --data-dir",
                    dir.display()
                );
            }
            bail!(
                "data directory {}: cannot lock {LOCK_FILE}: {e}",
                dir.display()
            );
        }
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{pid}"))
        .map_err(|e| not_writable(dir, &e))?;
    Ok(Lock { _file: file })
}

/// The error of a data directory a file cannot be created in (worded in one place, the node's
/// [`sighthub_node::BootError::not_writable`]).
fn not_writable(dir: &Path, e: &std::io::Error) -> anyhow::Error {
    sighthub_node::BootError::not_writable(dir, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_refuses_files_is_called_a_data_directory() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let text = not_writable(Path::new("d"), &e).to_string();
        assert!(
            text.starts_with("data directory d is not writable"),
            "{text}"
        );
        assert!(text.contains("--data-dir"), "{text}");
        assert!(!text.contains("key file"), "{text}");
    }
}
