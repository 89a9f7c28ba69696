//! `sighthub migrate --to <config>`, the sightings half: copies an embedded data directory's
//! sighting store into the store another configuration names (a Redis Cluster), byte for
//! byte below the rules, so nothing is recomputed and nothing changes meaning: every record
//! (each namespace's, `_all`'s consensus, `_shadow/…`, `_expired/…`), the expiry index, the
//! value formats and the feeders' markers.
//!
//! **Resumable.** Records go in batches of [`BATCH`] in key order, each record created only
//! where the target does not hold it yet (the engine's compare-and-set: a record already
//! there conflicts and is left as it is, and its namespace is not counted twice); after each
//! batch a marker on the target ([`POSITION`]) holds the last key copied, so a second run
//! starts after it, and a batch copied again changes nothing.
//!
//! **Checked.** At the end, every namespace count of the source must equal the target's;
//! otherwise the copy fails naming the first difference (a target written meanwhile, or a
//! target that held other values under the same prefix).
//!
//! **The shared documents** ([`copy_documents`]): the runtime API keys and the peers added
//! by invitation, files of the data directory on the embedded backend, are the cluster's on
//! the Redis backend (`sighthub_storage::docs`); they are copied where the cluster has none,
//! and a cluster that already holds other ones keeps them (reported, never overwritten).
//!
//! The exchange half ([`copy_exchange`]: the log, seen-set, consumers and so relay cursors)
//! is the exchange crate's `copy::copy_to_nats`, which `sighthub migrate` calls after this one.

use crate::backend::{Backend, NodeStore};
use crate::config::Config;
use sighthub_store::engine::{Batch, Engine, Group, RecordWrite, Space};
use sighthub_store::{Error, Result};
use std::ops::{Bound, ControlFlow};

/// The shared documents a migration copies: the runtime API keys and the runtime peers.
pub const DOCUMENTS: [&str; 2] = [
    sighthub_api::keyring::KEYS_DOCUMENT,
    sighthub_relay::runtime::DOCUMENT,
];

/// What a document of [`DOCUMENTS`] holds, for people.
pub fn label(name: &str) -> &'static str {
    if name == sighthub_api::keyring::KEYS_DOCUMENT {
        "runtime API keys"
    } else {
        "runtime peers"
    }
}

/// What [`copy_documents`] did with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentCopy {
    /// The source has none.
    None,
    /// Copied to the target.
    Copied,
    /// The target already holds the same one.
    Already,
    /// The target holds another one, kept.
    KeptTarget,
}

/// Copies the shared documents ([`DOCUMENTS`]) of the source's data directory into the
/// target's store, where it has none. See the module docs.
pub fn copy_documents(
    source: &Config,
    target: &NodeStore,
) -> std::result::Result<Vec<(&'static str, DocumentCopy)>, sighthub_storage::docs::DocError> {
    use sighthub_storage::docs::{Documents, FileDocuments};
    let from = FileDocuments::new(&source.data_dir);
    let to = crate::backend::documents(target, &source.data_dir)
        .map_err(|e| sighthub_storage::docs::DocError::Unavailable {
            name: "documents".into(),
            why: e.to_string(),
        })?
        .durable;
    let mut out = Vec::new();
    for name in DOCUMENTS {
        let what = match from.get(name)? {
            None => DocumentCopy::None,
            Some(doc) => match to.get(name)? {
                Some(there) if there.body == doc.body => DocumentCopy::Already,
                Some(_) => DocumentCopy::KeptTarget,
                None => match to.put(name, 0, &doc.body)? {
                    Some(_) => DocumentCopy::Copied,
                    None => DocumentCopy::KeptTarget,
                },
            },
        };
        out.push((name, what));
    }
    Ok(out)
}

/// Records copied per batch.
pub const BATCH: usize = 1_000;

/// The target's marker of the last source key copied.
pub const POSITION: &[u8] = b"migrate/sightings/position";

/// What [`copy_sightings`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Records written to the target by this run.
    pub records: u64,
    /// Records the target already held (an earlier, interrupted run).
    pub already: u64,
    /// Namespaces whose counts were checked equal.
    pub namespaces: u64,
    /// Whether this run resumed after an earlier one's position.
    pub resumed: bool,
}

fn engine_of(store: &NodeStore) -> &Backend {
    store.engine()
}

/// Copies `source` (an embedded store) into `target`; `progress(done, total)` after each
/// batch (`total`: the source's records, from its counts). See the module docs.
pub fn copy_sightings(
    source: &NodeStore,
    target: &NodeStore,
    mut progress: impl FnMut(u64, u64),
) -> Result<Copied> {
    let (src, dst) = (engine_of(source), engine_of(target));
    let mut out = Copied::default();
    // Small spaces first (idempotent puts): formats, expiry index, markers.
    for space in [Space::Formats, Space::Expiry, Space::Markers] {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        src.scan(
            space,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
            |k, v| {
                entries.push((k.to_vec(), v.to_vec()));
                Ok(ControlFlow::Continue(()))
            },
        )?;
        for chunk in entries.chunks(BATCH) {
            let mut b = Batch::default();
            match space {
                Space::Formats => {
                    b.formats = chunk
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect()
                }
                Space::Expiry => b.expiry_added = chunk.iter().map(|(k, _)| k.clone()).collect(),
                _ => b.markers = chunk.to_vec(),
            }
            let _ = dst.apply(b)?;
        }
    }
    let mut total = 0u64;
    src.scan(
        Space::Counts,
        Bound::Unbounded,
        Bound::Unbounded,
        usize::MAX,
        |_, v| {
            total += v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            Ok(ControlFlow::Continue(()))
        },
    )?;
    let mut after = dst
        .get(Space::Markers, POSITION)?
        .map(|v| v.as_ref().to_vec());
    out.resumed = after.is_some();
    let mut done = 0u64;
    loop {
        let from = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let mut page: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(BATCH);
        src.scan(Space::Sightings, from, Bound::Unbounded, BATCH, |k, v| {
            page.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        let Some(last) = page.last().map(|(k, _)| k.clone()) else {
            break;
        };
        let groups = page
            .into_iter()
            .map(|(key, value)| {
                let i = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                let ns = key.get(..i).unwrap_or_default().to_vec();
                let stored = key.get(i + 1..).unwrap_or_default().to_vec();
                Group {
                    value: stored,
                    records: vec![RecordWrite {
                        key,
                        value: Some(value),
                        prior: Some(None),
                    }],
                    counts: vec![(ns, 1)],
                    expiry_removed: Vec::new(),
                }
            })
            .collect::<Vec<_>>();
        // Several namespaces of one value in one page: one group per value, so the engine
        // applies each value's records together.
        let groups = merge_by_value(groups);
        let n: u64 = groups.iter().map(|g| g.records.len() as u64).sum();
        let applied = dst.apply(Batch {
            groups,
            ..Batch::default()
        })?;
        // A conflicted value was copied before (all its records of this page are left).
        let already: u64 = applied.conflicts.len() as u64;
        out.already += already;
        out.records += n.saturating_sub(already);
        done += n;
        let _ = dst.apply(Batch {
            markers: vec![(POSITION.to_vec(), last.clone())],
            ..Batch::default()
        })?;
        progress(done, total);
        after = Some(last);
    }
    // The count check.
    let mut mismatch = None;
    src.scan(
        Space::Counts,
        Bound::Unbounded,
        Bound::Unbounded,
        usize::MAX,
        |k, v| {
            let there = dst.get(Space::Counts, k)?.map(|t| t.as_ref().to_vec());
            if there.as_deref() != Some(v) && mismatch.is_none() {
                let count = |b: &[u8]| {
                    b.get(..8)
                        .and_then(|s| s.try_into().ok())
                        .map_or(0, u64::from_le_bytes)
                };
                mismatch = Some(format!(
                    "namespace '{}': {} values in the source, {} in the target",
                    String::from_utf8_lossy(k),
                    count(v),
                    there.as_deref().map_or(0, count)
                ));
            }
            out.namespaces += 1;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    match mismatch {
        Some(m) => Err(Error::Unavailable(format!("count check failed: {m}"))),
        None => Ok(out),
    }
}

/// One group per stored value (a page may hold a value in several namespaces). A conflict
/// then covers every record of the value in the page, which a re-run treats alike.
fn merge_by_value(groups: Vec<Group>) -> Vec<Group> {
    let mut by: std::collections::BTreeMap<Vec<u8>, Group> = Default::default();
    for g in groups {
        let e = by.entry(g.value.clone()).or_insert_with(|| Group {
            value: g.value.clone(),
            ..Group::default()
        });
        e.records.extend(g.records);
        e.counts.extend(g.counts);
    }
    by.into_values().collect()
}

/// Whether `cfg` keeps its exchange on NATS JetStream (`[exchange] backend = "nats"`).
pub fn exchange_on_nats(cfg: &Config) -> bool {
    cfg.exchange.enabled && cfg.exchange.backend == sighthub_exchange::config::Backend::Nats
}

/// The exchange half of `sighthub migrate --to`: copies the embedded exchange of `source`'s
/// data directory into the JetStream of `target` (`sighthub_exchange::copy::copy_to_nats`:
/// the log with its sequence numbers, which the bridge's copied position counts on, the
/// seen-set, the content window and the consumers; resumable, counts checked).
pub fn copy_exchange(
    source: &Config,
    target: &Config,
    progress: impl FnMut(sighthub_exchange::copy::CopyProgress),
) -> sighthub_exchange::Result<sighthub_exchange::copy::Copied> {
    sighthub_exchange::copy::copy_to_nats(
        &source.data_dir.join("exchange"),
        &target.exchange.nats,
        &target.exchange.store_options(),
        progress,
    )
}
