//! SightingDB's `sightingdb.toml` (0.7.8; earlier files are subsets) → an equivalent
//! `sighthub.toml`, and the list of what has no equivalent ([`convert`]).
//!
//! Mapped: `[daemon] listen_ip`/`listen_port` → `listen` (always written, with SightingDB's
//! defaults `0.0.0.0` and 9999 where absent); `ssl = false` → `plain_http`;
//! `ssl_cert`/`ssl_key` → `[tls] cert`/`key` (resolved against the SightingDB file's folder,
//! as SightingDB resolves them); `authenticate`; `post_limit` → `max_body_bytes`;
//! `sweep_interval`; `stats_retention` → `[stats] retention_hours`; `shadow_ttl` →
//! `[shadow] ttl`; `latest_writes`; the API keys of `[acl]` or of the `acl_file` it names
//! → `[acl]` (same grant syntax: `r`, `w`, `rw`, `:<prefix>`, `admin`). Everything else is
//! reported, one line per setting, with why; `dbdir` is reported with the import command.
//! The caller checks the result with sighthub's own configuration reader before writing it.

use std::path::{Path, PathBuf};

/// Why a SightingDB configuration cannot be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not TOML, or not of SightingDB's shape.
    #[error("{path}: not a SightingDB configuration: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The converted configuration.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// The `sighthub.toml` text.
    pub toml: String,
    /// Settings with no equivalent, one line each: `section.key: why`.
    pub unmapped: Vec<String>,
    /// Things to do or know (the data import command, a default key to replace).
    pub notes: Vec<String>,
    /// API keys carried over.
    pub keys: usize,
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Why a SightingDB setting has no sighthub equivalent.
fn why_not(key: &str) -> &'static str {
    match key {
        "enabled" => "sighthub always serves its HTTP API",
        "daemonize" | "log_out" | "log_err" => {
            "sighthub runs in the foreground and logs to stderr (RUST_LOG); run it under systemd"
        }
        "snapshot_interval" | "compression_level" => {
            "sighthub writes every acknowledged write to its journal (fsync); there is no snapshot to schedule"
        }
        "rejection_log" | "activity" | "tags_file" | "tiers_file" => {
            "belongs to SightingDB's management interface, which sighthub does not have"
        }
        "node_id" | "galaxy" => {
            "SightingDB's galaxy; sighthub instances peer by exchanging IEP04 messages ([relay])"
        }
        "namespaces" | "storage" | "default_tier" | "warm_idle" | "tiers" => {
            "sighthub stores every namespace on disk; there are no tiers to page in and out"
        }
        "dns" => "no DNS listener in this sighthub",
        "zmq" => "no ZeroMQ ingest in this sighthub",
        "stix" => "no STIX import or export in this sighthub",
        _ => "unknown to this importer",
    }
}

/// Converts the SightingDB configuration at `path` (see the module docs).
pub fn convert(path: &Path) -> Result<Converted, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    convert_text(&text, path, base)
}

fn parse(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

/// As [`convert`], from the file's text; relative paths resolve against `base`.
pub fn convert_text(text: &str, path: &Path, base: &Path) -> Result<Converted, ConfigError> {
    let root = parse(text, path)?;
    let shape = |what: &str| ConfigError::Parse {
        path: path.to_owned(),
        reason: what.to_owned(),
    };
    let mut out = Converted::default();
    let mut top: Vec<String> = Vec::new();
    let mut tls: Vec<String> = Vec::new();
    let mut stats: Vec<String> = Vec::new();
    let mut shadow: Vec<String> = Vec::new();
    let mut acl: Vec<(String, String)> = Vec::new();
    let empty = toml::Table::new();
    let daemon = match root.get("daemon") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(shape("[daemon] is not a table")),
        None => &empty,
    };
    let int = |k: &str| -> Result<Option<i64>, ConfigError> {
        match daemon.get(k) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i)),
            Some(_) => Err(shape(&format!("[daemon] {k} is not an integer"))),
        }
    };
    let string = |k: &str| -> Result<Option<&str>, ConfigError> {
        match daemon.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(shape(&format!("[daemon] {k} is not a string"))),
        }
    };
    let boolean = |k: &str| -> Result<Option<bool>, ConfigError> {
        match daemon.get(k) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(shape(&format!("[daemon] {k} is not true or false"))),
        }
    };
    // Always written: SightingDB's defaults (every interface, port 9999) are not sighthub's
    // (loopback), and the converted file must listen where SightingDB did.
    let ip = string("listen_ip")?.unwrap_or("0.0.0.0");
    let port = int("listen_port")?.unwrap_or(9999);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    top.push(format!("listen = {}", quote(&format!("{host}:{port}"))));
    if ip == "0.0.0.0" || ip == "::" {
        out.notes.push(format!(
            "listening on every interface ({host}:{port}), as SightingDB did; set listen to a narrower address if that was not meant"
        ));
    }
    if let Some(a) = boolean("authenticate")? {
        top.push(format!("authenticate = {a}"));
    }
    match boolean("ssl")? {
        Some(false) => top.push("plain_http = true".into()),
        Some(true) => {
            for (from, to) in [("ssl_cert", "cert"), ("ssl_key", "key")] {
                match string(from)? {
                    Some(p) => tls.push(format!(
                        "{to} = {}",
                        quote(&resolve(base, p).display().to_string())
                    )),
                    None => out.notes.push(format!(
                        "ssl is on but {from} is missing: sighthub will generate a self-signed pair"
                    )),
                }
            }
        }
        None => {}
    }
    if let Some(n) = int("post_limit")? {
        top.push(format!("max_body_bytes = {n}"));
    }
    match int("sweep_interval")? {
        Some(0) => out.unmapped.push(
            "daemon.sweep_interval = 0: sighthub always sweeps expired values (reads also move what is due); sweep_interval keeps its default".into(),
        ),
        Some(n) => top.push(format!("sweep_interval = {n}")),
        None => {}
    }
    if let Some(n) = int("latest_writes")? {
        top.push(format!("latest_writes = {n}"));
    }
    if let Some(n) = int("stats_retention")? {
        stats.push(format!("retention_hours = {n}"));
    }
    if let Some(n) = int("shadow_ttl")? {
        shadow.push(format!("ttl = {n}"));
    }
    if let Some(dir) = string("dbdir")? {
        out.notes.push(format!(
            "SightingDB's data (dbdir): import it with `sighthub import-sightingdb {}`, SightingDB stopped",
            resolve(base, dir).display()
        ));
    }
    // API keys: the acl_file wins, as in SightingDB.
    let acl_table = match string("acl_file")? {
        Some(f) => {
            let p = resolve(base, f);
            let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            match parse(&text, &p)?.remove("acl") {
                Some(toml::Value::Table(t)) => t,
                None => toml::Table::new(),
                Some(_) => {
                    return Err(ConfigError::Parse {
                        path: p,
                        reason: "[acl] is not a table".into(),
                    })
                }
            }
        }
        None => match root.get("acl") {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err(shape("[acl] is not a table")),
            None => toml::Table::new(),
        },
    };
    for (key, grants) in acl_table {
        let toml::Value::String(g) = grants else {
            return Err(shape("the grants of an [acl] key are not a string"));
        };
        if key == "changeme" {
            out.notes.push(
                "the API key \"changeme\" is SightingDB's well-known default: replace it in [acl] before serving".into(),
            );
        }
        acl.push((key, g));
    }
    out.keys = acl.len();
    let mapped = [
        "listen_ip",
        "listen_port",
        "authenticate",
        "ssl",
        "ssl_cert",
        "ssl_key",
        "post_limit",
        "sweep_interval",
        "latest_writes",
        "stats_retention",
        "shadow_ttl",
        "dbdir",
        "acl_file",
    ];
    for k in daemon.keys().filter(|k| !mapped.contains(&k.as_str())) {
        out.unmapped.push(format!("daemon.{k}: {}", why_not(k)));
    }
    for k in root
        .keys()
        .filter(|k| !matches!(k.as_str(), "daemon" | "acl"))
    {
        out.unmapped.push(format!("[{k}]: {}", why_not(k)));
    }

    let mut t = String::from(
        "# sighthub configuration converted from SightingDB's by `sighthub import-sightingdb-config`.\n\
         # Every key not written here has sighthub's default (docs/sighthub.example.toml).\n",
    );
    for l in &top {
        t.push_str(l);
        t.push('\n');
    }
    for (name, lines) in [("tls", &tls), ("stats", &stats), ("shadow", &shadow)] {
        if !lines.is_empty() {
            t.push_str(&format!("\n[{name}]\n"));
            for l in lines {
                t.push_str(l);
                t.push('\n');
            }
        }
    }
    if !acl.is_empty() {
        t.push_str("\n# API keys and grants (the same syntax as SightingDB's). Keep this file private (chmod 600).\n[acl]\n");
        for (k, g) in &acl {
            t.push_str(&format!("{} = {}\n", quote(k), quote(g)));
        }
    }
    out.toml = t;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_what_it_can_and_lists_the_rest() {
        let text = r#"
[daemon]
listen_ip = "::1"
listen_port = 9998
ssl = true
ssl_cert = "ssl/cert.pem"
ssl_key = "/abs/key.pem"
authenticate = true
stats_retention = 720
shadow_ttl = 60
daemonize = false
[acl]
"k1" = "rw:feeds, admin"
[dns]
enabled = true
"#;
        let c = convert_text(text, Path::new("s.toml"), Path::new("/etc/sdb")).expect("converts");
        assert!(c.toml.contains("listen = \"[::1]:9998\""), "{}", c.toml);
        assert!(
            c.toml.contains("cert = \"/etc/sdb/ssl/cert.pem\""),
            "{}",
            c.toml
        );
        assert!(c.toml.contains("key = \"/abs/key.pem\""), "{}", c.toml);
        assert!(c.toml.contains("retention_hours = 720"));
        assert!(c.toml.contains("\"k1\" = \"rw:feeds, admin\""));
        assert_eq!(c.keys, 1);
        assert!(
            c.unmapped.iter().any(|l| l.starts_with("daemon.daemonize")),
            "{:?}",
            c.unmapped
        );
        assert!(
            c.unmapped.iter().any(|l| l.starts_with("[dns]")),
            "{:?}",
            c.unmapped
        );
    }

    #[test]
    fn sightingdbs_listen_defaults_are_kept() {
        let c = convert_text(
            "[daemon]\nssl = false\n",
            Path::new("s.toml"),
            Path::new("."),
        )
        .expect("converts");
        assert!(c.toml.contains("listen = \"0.0.0.0:9999\""), "{}", c.toml);
        assert!(c.toml.contains("plain_http = true"), "{}", c.toml);
    }

    #[test]
    fn a_wrong_shape_is_an_error_naming_the_file() {
        let e = convert_text(
            "[daemon]\nlisten_port = \"x\"\n",
            Path::new("s.toml"),
            Path::new("."),
        )
        .expect_err("refused");
        assert!(
            e.to_string().contains("s.toml") && e.to_string().contains("listen_port"),
            "{e}"
        );
    }
}
