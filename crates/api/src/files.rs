//! File modes: the one place that reads and tightens the Unix permission bits of what
//! sighthub keeps private (the data directory, generated keys, the admin key file) and of
//! what operators hand it (a configured TLS key, the configuration file). Each caller decides
//! what it does with the answer (tighten, refuse, warn); the bits are read here only.
//!
//! On systems without mode bits every file reads as private to its owner.

use std::path::Path;

/// The permission bits (`0o777`) of `path`.
pub fn mode(path: &Path) -> std::io::Result<u32> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(meta.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        Ok(if meta.is_dir() { 0o700 } else { 0o600 })
    }
}

/// Removes every permission bit of `path` beyond `allowed` (`0o600` for a private file,
/// `0o700` for a private directory). Returns the old bits when something changed.
pub fn tighten(path: &Path, allowed: u32) -> std::io::Result<Option<u32>> {
    let old = mode(path)?;
    if old & !allowed == 0 {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(old & allowed))?;
    }
    Ok(Some(old))
}

#[cfg(all(test, unix))]
mod test {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tighten_removes_only_the_bits_beyond_what_is_allowed() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(tighten(&p, 0o600).expect("tighten"), Some(0o644));
        assert_eq!(mode(&p).expect("mode"), 0o600);
        assert_eq!(tighten(&p, 0o600).expect("again"), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(
            tighten(&p, 0o600).expect("read-only"),
            None,
            "0400 is private too"
        );
    }
}
