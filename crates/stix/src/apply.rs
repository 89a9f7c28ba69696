//! Decoded observations → sightings in a store, idempotently.
//!
//! An observation of `count` sightings between `first_seen` and `last_seen` is written
//! through the store's one write path ([`SightingStore::apply_marked`], each write checked as
//! a client's is): one sighting at `first_seen` carrying the tags, the others at `last_seen`,
//! so the value's count, first and last seen are the bundle's.
//!
//! **Idempotent**: the count applied for each observation (its key: the STIX object id, the
//! namespace and the value) is recorded as a store marker in the same atomic batch as the
//! writes. Importing it again applies only what the bundle now says beyond that (nothing, for
//! the same bundle; the difference, for a sighting whose `count` grew); an import interrupted
//! by a crash resumes where its last batch ended, without counting anything twice. A count
//! that went down takes nothing back.

use crate::import::Observation;
use sighthub_store::{ItemError, Namespace, SightingStore, WriteOp};

/// The prefix of this importer's markers in the store.
pub const MARKER_PREFIX: &[u8] = b"stix/import/";

/// Bounds of one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Writes per atomic batch.
    pub batch: usize,
    /// Largest count one observation may carry (each sighting is one write).
    pub max_count: u64,
}

impl ApplyOptions {
    /// Default [`ApplyOptions::max_count`]: 1,000,000.
    pub const DEFAULT_MAX_COUNT: u64 = 1_000_000;
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            batch: 10_000,
            max_count: Self::DEFAULT_MAX_COUNT,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Observations that added sightings.
    pub applied: usize,
    /// Observations already imported (their marker holds their count).
    pub unchanged: usize,
    /// Sightings written.
    pub writes: u64,
    /// Observations refused: namespace, value and why.
    pub refused: Vec<(String, String, String)>,
}

/// The marker of an observation in the store: the count applied so far (8 bytes,
/// little-endian, under [`MARKER_PREFIX`] + the observation's key).
pub type Marked = u64;

struct Plan {
    ns: Namespace,
    value: String,
    tags: String,
    first: i64,
    last: i64,
    done: u64,
    target: u64,
    marker: Vec<u8>,
}

/// Writes `observations` into `store` (see the module docs); `now` is the store's clock.
pub fn apply(
    store: &dyn SightingStore,
    observations: &[Observation],
    opts: &ApplyOptions,
    now: i64,
) -> Result<Applied, sighthub_store::Error> {
    let mut out = Applied::default();
    let limits = *store.limits();
    let mut plans: Vec<Plan> = Vec::new();
    for o in observations {
        let refuse = |why: String| (o.namespace.clone(), o.value.clone(), why);
        let ns = match Namespace::parse(&o.namespace) {
            Ok(ns) => ns,
            Err(e) => {
                out.refused.push(refuse(e.to_string()));
                continue;
            }
        };
        if o.count > opts.max_count {
            out.refused.push(refuse(format!(
                "count {} is over the limit of {} (--max-count)",
                o.count, opts.max_count
            )));
            continue;
        }
        let a = o.first_seen.or(o.last_seen).unwrap_or(now);
        let b = o.last_seen.or(o.first_seen).unwrap_or(now);
        let (first, last) = (a.min(b), a.max(b));
        let tags: Vec<String> = o
            .tags
            .iter()
            .take(limits.max_tags_per_item)
            .map(|t| cut(t, limits.max_tag_len).to_owned())
            .collect();
        let tags = tags.join(",");
        let mut check = WriteOp::new(&ns, &o.value, first);
        check.tags = Some(&tags);
        let checked = check
            .check(&limits)
            .and_then(|()| WriteOp::new(&ns, &o.value, last).check(&limits));
        if let Err(e) = checked {
            out.refused.push(refuse(e.to_string()));
            continue;
        }
        let mut marker = MARKER_PREFIX.to_vec();
        marker.extend_from_slice(o.key.as_bytes());
        let done = store
            .marker(&marker)?
            .and_then(|m| <[u8; 8]>::try_from(m.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        if o.count <= done {
            out.unchanged += 1;
            continue;
        }
        plans.push(Plan {
            ns,
            value: o.value.clone(),
            tags,
            first,
            last,
            done,
            target: o.count,
            marker,
        });
    }
    out.applied = plans.len();
    let batch = opts.batch.max(1);
    // (plan, applied before this chunk, sightings in this chunk)
    let mut chunk: Vec<(usize, u64, u64)> = Vec::new();
    let mut in_batch = 0u64;
    for (i, p) in plans.iter().enumerate() {
        let mut done = p.done;
        while done < p.target {
            let room = batch as u64 - in_batch;
            let n = (p.target - done).min(room);
            chunk.push((i, done, n));
            done += n;
            in_batch += n;
            if in_batch == batch as u64 {
                flush(store, &plans, &mut chunk, &mut out, now)?;
                in_batch = 0;
            }
        }
    }
    flush(store, &plans, &mut chunk, &mut out, now)?;
    Ok(out)
}

fn flush(
    store: &dyn SightingStore,
    plans: &[Plan],
    chunk: &mut Vec<(usize, u64, u64)>,
    out: &mut Applied,
    now: i64,
) -> Result<(), sighthub_store::Error> {
    if chunk.is_empty() {
        return Ok(());
    }
    let mut ops: Vec<WriteOp<'_>> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    let mut markers: Vec<(&[u8], [u8; 8])> = Vec::new();
    for &(i, before, n) in chunk.iter() {
        let Some(p) = plans.get(i) else { continue };
        for k in 0..n {
            let ts = if before + k == 0 { p.first } else { p.last };
            let mut op = WriteOp::new(&p.ns, &p.value, ts);
            if k == 0 {
                op.tags = Some(&p.tags);
            }
            ops.push(op);
            owner.push(i);
        }
        markers.push((&p.marker, (before + n).to_le_bytes()));
    }
    let marks: Vec<(&[u8], &[u8])> = markers.iter().map(|(k, v)| (*k, &v[..])).collect();
    let (outcomes, ticket) = store.apply_marked(&ops, &[], &marks, now)?;
    store.durability().wait_blocking(ticket)?;
    let mut refused_plan: Option<usize> = None;
    for (outcome, i) in outcomes.iter().zip(&owner) {
        match outcome {
            Ok(_) => out.writes += 1,
            Err(e) if refused_plan != Some(*i) => {
                refused_plan = Some(*i);
                if let Some(p) = plans.get(*i) {
                    out.refused.push(refusal(p, e));
                }
            }
            Err(_) => {}
        }
    }
    chunk.clear();
    Ok(())
}

fn refusal(p: &Plan, e: &ItemError) -> (String, String, String) {
    (p.ns.as_str().to_owned(), p.value.clone(), e.to_string())
}

/// `t` cut to at most `max` bytes, at a character boundary.
fn cut(t: &str, max: usize) -> &str {
    if t.len() <= max {
        return t;
    }
    let mut end = max;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}

#[cfg(test)]
mod tests;
