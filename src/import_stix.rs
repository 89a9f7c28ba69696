//! `sighthub import-stix <file|dir>`: STIX 2.1 bundles into the sighting store, without a
//! server, under the data directory's lock (as `rebuild-sightings`).
//!
//! One file, or every `.json` file of a directory (not below it), in name order. Each bundle
//! is decoded ([`sighthub_stix::decode`]: bounded in bytes, objects and nesting) and applied
//! ([`sighthub_stix::apply`]: through the store's write path, idempotent through markers), so
//! running the same import again changes nothing and an interrupted one can simply be run
//! again. A bundle that cannot be read is reported and the others are imported; the command
//! then fails, naming it.

use anyhow::{bail, Context as _};
use sighthub_stix::{ApplyOptions, DecodeLimits, Mapping};
use std::path::{Path, PathBuf};

/// The command line of `import-stix`.
#[derive(clap::Args)]
pub struct ImportStixArgs {
    /// A bundle (JSON), or a directory whose `.json` files are bundles.
    pub path: PathBuf,
    /// TOML configuration file (the one the server uses).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Data directory. Overrides the config.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Namespace of the values that neither --type maps nor their sighting names
    /// (`x_sightingdb_namespace`, which sighthub's and SightingDB's exports write).
    #[arg(long, default_value = "stix")]
    pub namespace: String,
    /// Where values of one observable type go, TYPE=NAMESPACE (ipv4-addr=feeds/ips,
    /// file.SHA-256=feeds/hashes); repeatable; wins over the sighting's namespace.
    #[arg(long = "type", value_name = "TYPE=NAMESPACE")]
    pub types: Vec<String>,
    /// Largest bundle, in bytes.
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_BYTES)]
    pub max_bytes: usize,
    /// Most objects in one bundle.
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_OBJECTS)]
    pub max_objects: usize,
    /// Largest count of one sighting (each sighting is one write).
    #[arg(long, default_value_t = ApplyOptions::DEFAULT_MAX_COUNT)]
    pub max_count: u64,
}

/// Bundle files of `path`: itself, or the `.json` files of the directory, sorted.
fn bundles(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read {}; give a bundle file or a directory of them",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("json"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .json file to import", path.display());
    }
    Ok(files)
}

/// Runs the import (see the module docs).
pub fn run(args: ImportStixArgs, mut cfg: sighthub_node::Config) -> anyhow::Result<()> {
    let mut mapping = Mapping {
        default_namespace: args.namespace.clone(),
        ..Mapping::default()
    };
    for t in &args.types {
        let Some((kind, ns)) = t
            .split_once('=')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty())
        else {
            bail!("--type {t}: write TYPE=NAMESPACE, for example --type ipv4-addr=feeds/ips");
        };
        mapping
            .types
            .insert(kind.trim().to_owned(), ns.trim().to_owned());
    }
    let files = bundles(&args.path)?;
    let limits = DecodeLimits {
        max_bytes: args.max_bytes,
        max_objects: args.max_objects,
    };
    let opts = ApplyOptions {
        max_count: args.max_count,
        ..ApplyOptions::default()
    };
    cfg.plain_http = true;
    cfg.authenticate = false;
    let _lock = crate::datadir::lock(&cfg.data_dir)?;
    let node = sighthub_node::boot(&cfg).context("opening the stores")?;
    let mut failed: Vec<String> = Vec::new();
    let (mut applied, mut unchanged, mut writes, mut refused, mut skipped) = (0, 0, 0u64, 0, 0);
    let mut progress = crate::progress::Progress::new("import-stix", "bundles");
    let total = files.len() as u64;
    for (index, file) in files.iter().enumerate() {
        progress.set(index as u64, total);
        let shown = file.display();
        let bytes = match std::fs::metadata(file) {
            Ok(m) if m.len() > limits.max_bytes as u64 => {
                eprintln!(
                    "{shown}: not imported: {} bytes, more than --max-bytes {}",
                    m.len(),
                    limits.max_bytes
                );
                failed.push(shown.to_string());
                continue;
            }
            _ => match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{shown}: not imported: cannot read it: {e}");
                    failed.push(shown.to_string());
                    continue;
                }
            },
        };
        let decoded = match sighthub_stix::decode(&bytes, &mapping, &limits) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{shown}: not imported: {e}");
                failed.push(shown.to_string());
                continue;
            }
        };
        for (id, why) in decoded.skipped.iter().take(10) {
            eprintln!("{shown}: skipped object {id}: {why}");
        }
        if decoded.skipped.len() > 10 {
            eprintln!(
                "{shown}: … and {} more objects skipped",
                decoded.skipped.len() - 10
            );
        }
        let done = sighthub_stix::apply(node.store.as_ref(), &decoded.observations, &opts, now())
            .with_context(|| format!("{shown}: writing its sightings"))?;
        for (ns, value, why) in done.refused.iter().take(10) {
            eprintln!("{shown}: refused {ns} {value:?}: {why}");
        }
        eprintln!(
            "{shown}: {} objects, {} values with new sightings ({} sightings), {} already imported, {} refused, {} objects skipped",
            decoded.objects,
            done.applied,
            done.writes,
            done.unchanged,
            done.refused.len(),
            decoded.skipped.len()
        );
        applied += done.applied;
        unchanged += done.unchanged;
        writes += done.writes;
        refused += done.refused.len();
        skipped += decoded.skipped.len();
    }
    progress.set(total, total);
    progress.finish();
    node.close().context("closing the stores")?;
    eprintln!(
        "done: {} bundles, {applied} values with new sightings ({writes} sightings), {unchanged} already imported, {refused} refused, {skipped} objects skipped",
        files.len() - failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} bundles could not be imported (said above): {}",
            failed.len(),
            files.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
