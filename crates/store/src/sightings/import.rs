//! The one store operation of migrations: set a whole record as imported
//! ([`Sightings::import`]), with the namespace count and consensus kept by the same rules as
//! a write ([`Sightings::count_new_value`]).
//!
//! Importing **sets**, it does not add: a record imported twice is the same as imported once,
//! so an interrupted import can simply be run again. When the value already exists (written
//! to sighthub before the import, or imported before), the two are merged by taking the
//! larger of each part, the rule SightingDB itself uses to merge two copies of a value
//! (`Attribute::merge`): the larger count, the earlier first seen, the later last seen, the
//! union of the tags, the shortest non-zero TTL (0 = never), and per hourly bucket the larger
//! count. It is idempotent and order-independent, and never lowers anything sighthub already
//! had. A merged record that equals the stored one is not written at all.

use super::{skey, Overlay, Sightings};
use crate::engine::Engine;
use crate::error::{ItemError, Result};
use crate::namespace::{Namespace, SHADOW_PREFIX};
use crate::record::{merge_tags, split_tags, Record};
use crate::store::{value_fits, MAX_TIMESTAMP, MIN_TIMESTAMP};
use sighthub_storage::Ticket;

/// One value to set as imported.
#[derive(Debug, Clone)]
pub struct Imported<'a> {
    /// Where: a public namespace, or a shadow one (`_shadow/<ns>`, which never counts towards
    /// consensus).
    pub namespace: &'a Namespace,
    /// The raw value (the namespace's value format is applied here, as for a write).
    pub value: &'a str,
    /// Count, first/last seen, tags, TTL and hourly stats, as the source had them.
    pub record: Record,
}

/// What [`Sightings::import`] did to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The value was not in the namespace; it is now, as imported.
    New,
    /// The value was there; the merge (larger of each part) changed it.
    Updated,
    /// The value was there and already held everything imported: nothing written.
    Unchanged,
}

impl<E: Engine> Sightings<E> {
    /// Sets each record as imported (see the module docs for the merge with an existing
    /// value) and writes `marker` (key, value: an importer's progress) in the **same** atomic
    /// batch, so a crash leaves the data and the progress that covers it together. A record
    /// the rules refuse (private namespace other than `_shadow/`, empty or over-long value,
    /// time out of range, a tag over `max_tag_len`, more than `max_tags_per_value` tags,
    /// count 0) is refused alone, with its reason, and the others are applied. Stats are
    /// trimmed like a write's (`stats_retention_hours`, `max_stats_buckets`).
    pub fn import(
        &self,
        items: &[Imported<'_>],
        marker: Option<(&[u8], &[u8])>,
        now: i64,
    ) -> Result<(Vec<std::result::Result<ImportOutcome, ItemError>>, Ticket)> {
        self.sweep_if_due(now)?;
        let _guard = super::lock(&self.writer);
        // Items on values another process changed meanwhile are imported again on fresh
        // reads; the marker goes with the attempt in which nothing conflicted.
        let mut out: Vec<Option<std::result::Result<ImportOutcome, ItemError>>> =
            vec![None; items.len()];
        let mut pending: Option<std::collections::HashSet<String>> = None;
        let mut ticket = Ticket::NONE;
        for attempt in 0..super::MAX_ATTEMPTS {
            let mut ov = Overlay::for_ops(items.len());
            for (item, slot) in items.iter().zip(out.iter_mut()) {
                if pending.is_some()
                    && (!value_fits(item.value)
                        || !Self::is_pending(
                            &pending,
                            &self.stored_value(item.namespace, item.value),
                        ))
                {
                    continue;
                }
                let outcome = match self.check_import(item) {
                    Ok(()) => self.import_one(&mut ov, item)?,
                    Err(e) => Err(e),
                };
                *slot = Some(outcome);
            }
            if let Some((k, v)) = marker {
                ov.markers.push((k.to_vec(), v.to_vec()));
            }
            let done = self.commit_overlay(ov)?;
            if done.ticket != Ticket::NONE {
                ticket = done.ticket;
            }
            if done.conflicts.is_empty() {
                let out = out
                    .into_iter()
                    .map(|o| o.unwrap_or(Err(ItemError::EmptyValue)))
                    .collect();
                return Ok((out, ticket));
            }
            pending = Some(done.conflicts);
            super::backoff(attempt);
        }
        Err(crate::Error::Contended)
    }

    fn check_import(&self, item: &Imported<'_>) -> std::result::Result<(), ItemError> {
        let ns = item.namespace;
        let shadow_of_public = ns
            .as_str()
            .strip_prefix(SHADOW_PREFIX)
            .is_some_and(|owner| !owner.starts_with('_'));
        if ns.is_internal() && !shadow_of_public {
            return Err(ItemError::Internal(ns.first_segment().to_owned()));
        }
        if item.value.is_empty() || item.record.count == 0 {
            return Err(ItemError::EmptyValue);
        }
        if !value_fits(item.value) {
            return Err(ItemError::ValueTooLong(item.value.len()));
        }
        let r = &item.record;
        for t in [r.first_seen, r.last_seen] {
            if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&t) {
                return Err(ItemError::TimestampOutOfRange(t));
            }
        }
        let limits = &self.opts.limits;
        let mut n = 0usize;
        for t in split_tags(&r.tags) {
            n += 1;
            if n > limits.max_tags_per_value {
                return Err(ItemError::TooManyTagsOnValue(limits.max_tags_per_value));
            }
            if t.len() > limits.max_tag_len {
                return Err(ItemError::TagTooLong(limits.max_tag_len));
            }
        }
        Ok(())
    }

    fn import_one(
        &self,
        ov: &mut Overlay,
        item: &Imported<'_>,
    ) -> Result<std::result::Result<ImportOutcome, ItemError>> {
        let stored = self.stored_value(item.namespace, item.value).into_owned();
        let key = skey(item.namespace.as_str(), &stored);
        let existing = self.get_record(ov, &key)?;
        let mut incoming = item.record.clone();
        incoming.first_seen = incoming.first_seen.min(incoming.last_seen);
        incoming.tags = merge_tags("", &incoming.tags);
        incoming.stats.sort_unstable_by_key(|s| s.0);
        let (rec, outcome) = match &existing {
            None => (incoming, ImportOutcome::New),
            Some(old) => {
                let merged = merge_larger(old, &incoming);
                let n = split_tags(&merged.tags).count();
                if merged.tags != old.tags && n > self.opts.limits.max_tags_per_value {
                    return Ok(Err(ItemError::TooManyTagsOnValue(
                        self.opts.limits.max_tags_per_value,
                    )));
                }
                (merged, ImportOutcome::Updated)
            }
        };
        let mut rec = rec;
        self.trim(&mut rec);
        if existing.as_ref() == Some(&rec) {
            return Ok(Ok(ImportOutcome::Unchanged));
        }
        let old_exp = existing.as_ref().and_then(Record::expires_at);
        Self::reindex(ov, &key, old_exp, rec.expires_at());
        let first_seen = rec.first_seen;
        ov.records.insert(key, Some(rec));
        if existing.is_none() {
            self.count_new_value(ov, item.namespace, &stored, first_seen)?;
        }
        Ok(Ok(outcome))
    }
}

/// The larger of each part of two copies of one value (see the module docs).
fn merge_larger(old: &Record, new: &Record) -> Record {
    let ttl = match (old.ttl, new.ttl) {
        (0, t) | (t, 0) => t,
        (a, b) => a.min(b),
    };
    let mut stats = old.stats.clone();
    for &(bucket, n) in &new.stats {
        match stats.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => {
                if let Some(s) = stats.get_mut(i) {
                    s.1 = s.1.max(n);
                }
            }
            Err(i) => stats.insert(i, (bucket, n)),
        }
    }
    Record {
        first_seen: old.first_seen.min(new.first_seen),
        last_seen: old.last_seen.max(new.last_seen),
        count: old.count.max(new.count),
        ttl,
        tags: merge_tags(&old.tags, &new.tags),
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;
    use crate::store::{ReadOutcome, SightingStore, WriteOp};
    use crate::StoreOptions;

    const T0: i64 = 1_700_000_000;

    fn store() -> Sightings<MemEngine> {
        Sightings::new(MemEngine::new(), StoreOptions::default()).expect("store")
    }

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).expect("namespace")
    }

    fn rec(count: u64, first: i64, last: i64, tags: &str, ttl: u64) -> Record {
        Record {
            first_seen: first,
            last_seen: last,
            count,
            ttl,
            tags: tags.into(),
            stats: vec![(first - first % 3600, count)],
        }
    }

    fn read(s: &Sightings<MemEngine>, n: &Namespace, v: &str) -> (Record, u64) {
        match s.read(n, v, T0).expect("read") {
            ReadOutcome::Found(view) => (view.record, view.consensus),
            other => panic!("expected {v} in {}, got {other:?}", n.as_str()),
        }
    }

    #[test]
    fn import_sets_counts_consensus_and_is_idempotent() {
        let s = store();
        let (a, b) = (ns("org/a"), ns("org/b"));
        let items = [
            Imported {
                namespace: &a,
                value: "1.2.3.4",
                record: rec(7, T0 - 7200, T0, "x,y", 0),
            },
            Imported {
                namespace: &b,
                value: "1.2.3.4",
                record: rec(2, T0, T0, "", 0),
            },
        ];
        let (out, _) = s.import(&items, Some((b"m", b"1")), T0).expect("import");
        assert_eq!(out, vec![Ok(ImportOutcome::New), Ok(ImportOutcome::New)]);
        let (r, consensus) = read(&s, &a, "1.2.3.4");
        assert_eq!(
            (r.count, r.first_seen, r.last_seen, r.tags.as_str()),
            (7, T0 - 7200, T0, "x,y")
        );
        assert_eq!(consensus, 2);
        assert_eq!(s.count(&a, T0).expect("count"), Some(1));
        assert_eq!(s.marker(b"m").expect("marker"), Some(b"1".to_vec()));
        // Again: nothing changes, consensus is not counted twice.
        let (out, _) = s.import(&items, None, T0).expect("import");
        assert_eq!(
            out,
            vec![Ok(ImportOutcome::Unchanged), Ok(ImportOutcome::Unchanged)]
        );
        assert_eq!(read(&s, &a, "1.2.3.4").1, 2);
        assert_eq!(read(&s, &a, "1.2.3.4").0.count, 7);
    }

    #[test]
    fn import_over_an_existing_value_keeps_the_larger_of_each() {
        let s = store();
        let a = ns("org/a");
        let (_, _) = s
            .write(
                &[WriteOp {
                    tags: Some("mine"),
                    ..WriteOp::new(&a, "v", T0 + 10)
                }],
                T0 + 10,
            )
            .expect("write");
        let item = Imported {
            namespace: &a,
            value: "v",
            record: rec(5, T0 - 3600, T0, "theirs", 600),
        };
        let (out, _) = s
            .import(std::slice::from_ref(&item), None, T0)
            .expect("import");
        assert_eq!(out, vec![Ok(ImportOutcome::Updated)]);
        let (r, consensus) = read(&s, &a, "v");
        assert_eq!(
            (r.count, r.first_seen, r.last_seen),
            (5, T0 - 3600, T0 + 10)
        );
        assert_eq!((r.tags.as_str(), r.ttl, consensus), ("mine,theirs", 600, 1));
    }

    #[test]
    fn import_refuses_what_the_rules_refuse_and_applies_the_rest() {
        let s = store();
        let (all, cfg, shadow, ok) = (
            ns("_all"),
            ns("_config/acl"),
            ns("_shadow/org/a"),
            ns("org/a"),
        );
        let items = [
            Imported {
                namespace: &all,
                value: "v",
                record: rec(1, T0, T0, "", 0),
            },
            Imported {
                namespace: &cfg,
                value: "v",
                record: rec(1, T0, T0, "", 0),
            },
            Imported {
                namespace: &ok,
                value: "",
                record: rec(1, T0, T0, "", 0),
            },
            Imported {
                namespace: &ok,
                value: "zero",
                record: rec(0, T0, T0, "", 0),
            },
            Imported {
                namespace: &shadow,
                value: "v",
                record: rec(3, T0, T0, "", 0),
            },
        ];
        let (out, _) = s.import(&items, None, T0).expect("import");
        assert!(matches!(out[0], Err(ItemError::Internal(_))));
        assert!(matches!(out[1], Err(ItemError::Internal(_))));
        assert_eq!(out[2], Err(ItemError::EmptyValue));
        assert_eq!(out[3], Err(ItemError::EmptyValue));
        assert_eq!(out[4], Ok(ImportOutcome::New));
        // A shadow value never counts towards consensus.
        assert_eq!(read(&s, &shadow, "v"), (rec(3, T0, T0, "", 0), 0));
    }
}
