//! Small files replaced durably: the one way sighthub rewrites a file whose loss or half-write
//! after a crash would lose an acknowledged change (a relay link's cursor, the runtime API
//! keys, the runtime peers).
//!
//! [`replace_durably`] writes the new content next to the file, fsyncs it, renames it over
//! the old one and fsyncs the directory: after a crash the file holds either the old content
//! or the new one, never a mix, and once the call returns the new one survives `kill -9` and
//! power loss (as far as the disk honours fsync).

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `body` atomically and durably; the file is created with mode `mode`
/// (Unix permission bits, `0o600` for a secret) when it does not exist yet, and keeps at most
/// those bits.
pub fn replace_durably(path: &Path, body: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let now = f.metadata()?.permissions().mode() & 0o777;
        if now & !mode != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(now & mode))?;
        }
    }
    f.write_all(body)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // The rename is durable only once the directory is.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("keys.json");
        replace_durably(&p, b"one", 0o600).expect("create");
        assert_eq!(std::fs::read(&p).expect("read"), b"one");
        replace_durably(&p, b"two", 0o600).expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert!(!dir.path().join("keys.json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(m, 0o600);
        }
    }
}
