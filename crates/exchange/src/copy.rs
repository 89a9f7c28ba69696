//! [`copy_to_nats`]: copies an embedded exchange (the fjall database of
//! `<data_dir>/exchange`: log, seen-set, content window, consumers, identity) into the NATS
//! JetStream of `[exchange.nats]`, for `sighthub migrate --to <config>`.
//!
//! - **Same positions.** Every record keeps its sequence number (a stream created here starts
//!   at the embedded log's first record), so consumers' cursors stay valid; the cursor epoch
//!   changes (it is the stream's creation time), so clients holding an old cursor get
//!   `400` and start again from a consumer, as after any new database.
//! - **Resumable.** Records are appended in order with the expected last sequence: a copy
//!   that stopped resumes after the stream's last record. Seen entries, content entries,
//!   consumers and the identity are rewritten whole on every run (idempotent puts).
//! - **Link and alternate indexes** are derived again from the copied records, as the store
//!   writes them (`crate::store::index_entries`).
//! - **Count check** at the end: the stream holds exactly the embedded log's records.
//!
//! The server must be stopped (the embedded database is opened here).

use sighthub_iep04::Message;
use std::ops::ControlFlow;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::{ExchangeLog, FjallLog, LogBatch, NatsLog, META_INSTANCE, META_ORG};
use crate::record::{self, EntryKind, Seen};
use crate::store::{index_entries, StoreOptions};

/// Records per append batch (one atomic batch, one acknowledgement).
const COPY_BATCH: usize = 500;

/// Where a copy stands, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress {
    /// Log records in the target so far (those copied earlier included).
    pub records_done: u64,
    /// Log records of the embedded exchange.
    pub records_total: u64,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Log records appended by this run (0 when an earlier run had copied them all).
    pub records: u64,
    /// Log records in the target (checked equal to the embedded log's).
    pub records_total: u64,
    /// Seen entries written.
    pub seen: u64,
    /// Content window entries written.
    pub content: u64,
    /// Named consumers written.
    pub consumers: u64,
}

/// Copies the embedded exchange in `exchange_dir` (`<data_dir>/exchange`) into the JetStream
/// of `nats`; see the [module docs](self). `progress` is called after each batch of records.
pub fn copy_to_nats(
    exchange_dir: &Path,
    nats: &sighthub_nats::NatsConfig,
    target: &StoreOptions,
    mut progress: impl FnMut(CopyProgress),
) -> Result<Copied> {
    if !exchange_dir.join("keyspaces").exists() && !exchange_dir.exists() {
        return Err(Error::Config(format!(
            "no embedded exchange at {}",
            exchange_dir.display()
        )));
    }
    let src = FjallLog::open(exchange_dir, &StoreOptions::default())?;
    let bounds = src.bounds()?;
    let (first, last) = bounds.unwrap_or((1, 0));
    let total = if last >= first { last - first + 1 } else { 0 };
    let dst = NatsLog::open_from(nats, first, target)?;
    let mut out = Copied::default();

    // The identity first: a front end started on the target keeps this hub's.
    for key in [META_ORG, META_INSTANCE] {
        if let Some(v) = src.meta(key)? {
            dst.meta_put(key, v)?;
        }
    }

    // Records, resuming after what the stream holds.
    let state = dst.state()?;
    if state.last > last {
        return Err(Error::Config(format!(
            "the stream {} already holds {} records past the embedded log's end ({last}): \
             not a copy of this exchange",
            nats.stream, state.last
        )));
    }
    let mut next = state.last.max(first.saturating_sub(1)) + 1;
    let done_before = state.messages;
    progress(CopyProgress {
        records_done: done_before,
        records_total: total,
    });
    while next <= last {
        let mut batch = dst.batch();
        let mut n = 0u64;
        let mut end = next;
        let to = next.saturating_add(COPY_BATCH as u64 - 1).min(last);
        src.range(next, to, |seq, rec| {
            let entry =
                record::decode_log(rec.as_ref()).ok_or_else(|| Error::corrupt("log record"))?;
            batch.put_record(seq, rec.clone());
            if entry.kind == EntryKind::Message && entry.flags & record::FLAG_LINKED != 0 {
                if let Ok(msg) = Message::from_slice(entry.json) {
                    let (links, alternates) = index_entries(&msg);
                    for (target, rel) in links {
                        batch.put_link(target, entry.uuid, &rel, seq, entry.org);
                    }
                    for alt in alternates {
                        if record::alternate_fits(&alt) {
                            batch.put_alternate(&alt, entry.uuid, seq);
                        }
                    }
                }
            }
            n += 1;
            end = seq;
            Ok(ControlFlow::Continue(()))
        })?;
        if n == 0 {
            return Err(Error::corrupt("a hole in the embedded log"));
        }
        dst.commit(batch)?;
        out.records += n;
        next = end + 1;
        progress(CopyProgress {
            records_done: done_before + out.records,
            records_total: total,
        });
    }

    // The seen-set and the content window, whole (idempotent).
    let mut seen: Vec<(uuid::Uuid, Seen)> = Vec::new();
    let flush = |seen: &mut Vec<(uuid::Uuid, Seen)>, out: &mut Copied| -> Result<()> {
        out.seen += seen.len() as u64;
        dst.put_seen_entries(std::mem::take(seen))
    };
    let mut failed = None;
    src.each_seen(|u, s| {
        if failed.is_some() {
            return;
        }
        seen.push((u, s));
        if seen.len() >= 1000 {
            if let Err(e) = flush(&mut seen, &mut out) {
                failed = Some(e);
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    flush(&mut seen, &mut out)?;
    let mut content = Vec::new();
    src.each_content(|k, s| content.push((*k, s)))?;
    for chunk in content.chunks(1000) {
        let mut batch = dst.batch();
        for (k, s) in chunk {
            batch.put_content(k, *s);
        }
        dst.commit(batch)?;
        out.content += chunk.len() as u64;
    }

    // Consumers.
    for (org, name, state) in src.consumers(usize::MAX)? {
        dst.consumer_put(org, &name, state)?;
        out.consumers += 1;
    }

    // The count check.
    let state = dst.state()?;
    out.records_total = state.messages;
    if state.messages != total || (total > 0 && state.last != last) {
        return Err(Error::Backend(format!(
            "count check failed: the embedded log holds {total} records up to {last}, the \
             stream {} holds {} up to {}",
            nats.stream, state.messages, state.last
        )));
    }
    src.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Grants;
    use crate::ingest::{BodyKind, Collector};
    use crate::store::{ExchangeStore, OnRefusal};
    use std::sync::Arc;
    use uuid::Uuid;

    const ORG: Uuid = Uuid::from_u128(0x28bc3db3_16da_461c_b20b_b944f4058708);

    /// An embedded exchange with messages (one withdrawn by a link), a bare event and a
    /// consumer is copied, the copy resumed (nothing twice), and a store opened on the
    /// stream finds what the embedded one had.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
    async fn an_embedded_exchange_is_copied_resumably_and_counted() {
        let servers = std::env::var("SIGHTHUB_TEST_NATS").expect("SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)");
        let dir = tempfile::tempdir().expect("tmp");
        let exdir = dir.path().join("exchange");
        let uuids: Vec<Uuid> = (0..1200).map(|_| Uuid::new_v4()).collect();
        let n_items;
        {
            let store = Arc::new(
                ExchangeStore::open(&exdir, StoreOptions::default(), Some(ORG), None)
                    .expect("open"),
            );
            let mut c = Collector::new(Arc::new(Grants::admin(ORG)), Uuid::from_u128(5));
            let mut body = String::new();
            for u in &uuids {
                body.push_str(&format!(
                    "{{\"format\":\"intelmq\",\"version\":1,\"type\":\"event\",\"meta\":{{\"uuid\":\"{u}\"}},\"payload\":{{\"source.ip\":\"10.0.0.1\"}}}}\n"
                ));
            }
            body.push_str(&format!(
                "{{\"format\":\"intelmq\",\"version\":1,\"type\":\"event\",\"meta\":{{\"uuid\":\"{}\",\"intelmq:related\":[\"{}\"]}},\"payload\":{{\"source.ip\":\"10.0.0.2\"}}}}\n",
                Uuid::new_v4(),
                uuids[0]
            ));
            body.push_str("{\"source.fqdn\":\"bare.example\"}\n");
            c.decode_buffered(BodyKind::Json, body.as_bytes(), 1 << 24);
            assert!(c.refused.is_empty(), "{:?}", c.refused);
            let items = std::mem::take(&mut c.items);
            assert!(items.len() > COPY_BATCH * 2, "{}", items.len());
            n_items = items.len() as u64;
            store
                .publish(items, OnRefusal::RefuseRequest)
                .await
                .expect("publish");
            let (_, t) = store.consumer_ack(ORG, "c1", 700, 1).expect("ack");
            store.group_commit().wait(t).await.expect("durable");
            store.close().expect("close");
        }
        let cfg = sighthub_nats::NatsConfig {
            servers: servers.split(',').map(str::to_owned).collect(),
            stream: format!("copy{}", Uuid::new_v4().simple()),
            ..Default::default()
        };
        let (exdir2, cfg2) = (exdir.clone(), cfg.clone());
        let mut seen_progress = Vec::new();
        let first = tokio::task::spawn_blocking(move || {
            let r = copy_to_nats(&exdir2, &cfg2, &StoreOptions::default(), |p| {
                seen_progress.push(p)
            });
            (r, seen_progress)
        })
        .await
        .expect("join");
        let (first, progress) = (first.0.expect("copy"), first.1);
        assert_eq!(first.records, n_items);
        assert_eq!(first.records_total, n_items);
        assert_eq!(first.seen, n_items);
        assert_eq!(first.consumers, 1);
        assert_eq!(progress.last().map(|p| p.records_done), Some(n_items));
        assert!(
            progress.len() >= 3,
            "a progress call per batch: {progress:?}"
        );
        // Resumed: nothing appended twice.
        let (exdir2, cfg2) = (exdir.clone(), cfg.clone());
        let again = tokio::task::spawn_blocking(move || {
            copy_to_nats(&exdir2, &cfg2, &StoreOptions::default(), |_| {})
        })
        .await
        .expect("join")
        .expect("copy again");
        assert_eq!((again.records, again.records_total), (0, n_items));
        // A store on the stream has what the embedded one had.
        let cfg2 = cfg.clone();
        let store = tokio::task::spawn_blocking(move || {
            ExchangeStore::open_nats(&cfg2, StoreOptions::default(), None, None).expect("open")
        })
        .await
        .expect("join");
        assert_eq!(store.org(), ORG, "the identity came along");
        assert_eq!(
            store.lookup(&uuids[999]).expect("lookup").map(|l| l.0),
            Some(1000)
        );
        assert_eq!(
            store
                .consumer(ORG, "c1")
                .expect("consumer")
                .map(|c| c.acked),
            Some(700)
        );
        assert_eq!(store.links_to(&uuids[0], 10).expect("links").len(), 1);
        let mut n = 0;
        store
            .scan(0, 10_000, |_, _| {
                n += 1;
                std::ops::ControlFlow::Continue(())
            })
            .expect("scan");
        assert_eq!(n, n_items);
    }
}
