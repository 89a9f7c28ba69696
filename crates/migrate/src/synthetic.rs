//! Snapshots in SightingDB 0.7.8's format, generated: for the import tests (a snapshot large
//! enough to interrupt) and the import-rate measurement. The files are what SightingDB writes
//! (version 2 shards, zstd level 3, its shard file names); the content is deterministic, so
//! a test knows every value's expected count ([`value`]).

use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// First seen of value 0.
pub const T0: i64 = 1_764_547_200;

/// Namespace, value and count of the `i`-th of `values` generated values over `namespaces`
/// namespaces and `shards` shards (first segments).
pub fn value(i: u64, namespaces: u64, shards: u64) -> (String, String, u64) {
    let ns = i % namespaces.max(1);
    let shard = ns % shards.max(1);
    (
        format!("synth{shard}/ns{ns}"),
        format!("10.{}.{}.{}/{i}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        i % 7 + 1,
    )
}

/// The file SightingDB 0.7.8 writes a shard to (its `persistence::shard_file`).
pub fn shard_file(dir: &Path, shard: &str) -> PathBuf {
    let mut safe = String::new();
    for c in shard.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            safe.push(c);
        } else {
            for b in c.to_string().bytes() {
                safe.push_str(&format!("%{b:02X}"));
            }
        }
    }
    safe.truncate(80);
    let d = Sha256::digest(shard.as_bytes());
    let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    dir.join(format!("{safe}-{h:08x}.json.zst"))
}

/// Writes `values` values over `namespaces` namespaces and `shards` shard files into `dir`.
pub fn write(dir: &Path, values: u64, namespaces: u64, shards: u64) -> std::io::Result<()> {
    let (namespaces, shards) = (namespaces.max(1), shards.max(1).min(namespaces.max(1)));
    std::fs::create_dir_all(dir)?;
    for shard in 0..shards {
        let file = std::fs::File::create(shard_file(dir, &format!("synth{shard}")))?;
        let mut z = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 3)?;
        z.write_all(b"{\"version\":2,\"namespaces\":{")?;
        let mut first_ns = true;
        for ns in (shard..namespaces).step_by(shards as usize) {
            if !first_ns {
                z.write_all(b",")?;
            }
            first_ns = false;
            write!(z, "\"synth{shard}/ns{ns}\":{{")?;
            let mut first = true;
            for i in (ns..values).step_by(namespaces as usize) {
                let (_, v, count) = value(i, namespaces, shards);
                let seen = T0 + (i % 86_400) as i64;
                let hour = seen - seen % 3600;
                if !first {
                    z.write_all(b",")?;
                }
                first = false;
                write!(
                    z,
                    "\"{v}\":{{\"value\":\"{v}\",\"first_seen\":{seen},\"last_seen\":{seen},\"counts\":{{\"local\":{count}}},\"tags\":\"synthetic\",\"tags_at\":0,\"ttl\":0,\"node_stats\":{{\"local\":{{\"{hour}\":{count}}}}}}}"
                )?;
            }
            z.write_all(b"}")?;
        }
        z.write_all(b"}}")?;
        z.finish()?.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_sightingdbs() {
        // As SightingDB 0.7.8 names them: the safe name, then 8 hex digits of SHA-256.
        let p = shard_file(Path::new("d"), "myorg");
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            name.starts_with("myorg-") && name.ends_with(".json.zst"),
            "{name}"
        );
        assert_eq!(name.len(), "myorg-".len() + 8 + ".json.zst".len());
    }
}
