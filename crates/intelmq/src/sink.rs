//! Taking IntelMQ messages into the exchange: decode (bare event → wrapped IEP04 message),
//! prepare with the transport's [`Grants`], and publish through the exchange's one pipeline
//! ([`ExchangeStore::publish`], refused messages skipped), which answers once durable.
//!
//! [`Sink::accept`] returns only once every accepted message of the batch is durable, so a
//! transport acknowledges (`Ok`, `RPOP …-internal`) after it and never before. A duplicate
//! (same uuid, or a bare event with the same content within the exchange's content window)
//! counts as taken: it is already in the log.

use sighthub_exchange::ingest::{prepare, ItemError};
use sighthub_exchange::store::{Outcome, Prepared};
use sighthub_exchange::{ExchangeStore, Feed, Grants, OnRefusal};
use sighthub_iep04::Receiver;
use std::sync::Arc;
use uuid::Uuid;

use crate::error::Result;
use crate::stats::TransportStats;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// In the log (new or a duplicate), durably.
    Stored(Outcome),
    /// Not a valid message, or not one this transport may publish: never stored.
    Rejected(String),
}

impl Taken {
    /// Stored (new or duplicate).
    pub fn is_stored(&self) -> bool {
        matches!(self, Taken::Stored(_))
    }
}

/// A transport's way into the exchange; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    store: Arc<ExchangeStore>,
    grants: Arc<Grants>,
    receiver: Receiver,
    max_bytes: usize,
    stats: Option<Arc<TransportStats>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("org", &self.grants.org)
            .finish()
    }
}

impl Sink {
    /// A sink publishing as `org` (default: the exchange's organisation), adding `tags` to
    /// bare events. It may publish any feed but only for its own organisation.
    pub fn new(store: Arc<ExchangeStore>, org: Option<Uuid>, tags: &[String]) -> Sink {
        let org = org.unwrap_or_else(|| store.org());
        let grants = Grants {
            org,
            publish: vec![Feed::All],
            read: Vec::new(),
            tlp_max: sighthub_iep04::Tlp::Red,
            relay: false,
            admin: false,
            bare_tags: tags.to_vec(),
        };
        let receiver = Receiver::new(org, Some(store.instance()));
        Sink {
            store,
            grants: Arc::new(grants),
            receiver,
            max_bytes: usize::MAX,
            stats: None,
        }
    }

    /// Counts what it takes in `stats`.
    pub fn with_stats(mut self, stats: Arc<TransportStats>) -> Sink {
        self.stats = Some(stats);
        self
    }

    /// Refuses (without parsing) messages longer than `n` bytes.
    pub fn with_max_bytes(mut self, n: usize) -> Sink {
        self.max_bytes = n;
        self
    }

    /// The exchange store.
    pub fn store(&self) -> &Arc<ExchangeStore> {
        &self.store
    }

    /// Decodes and prepares one JSON message (CPU only).
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared, String> {
        if bytes.len() > self.max_bytes {
            return Err(format!(
                "message of {} bytes, over the limit of {} bytes",
                bytes.len(),
                self.max_bytes
            ));
        }
        let decoded = self.receiver.decode(bytes).map_err(|e| e.to_string())?;
        prepare(decoded, &self.grants, self.store.instance()).map_err(|e| match e {
            ItemError::Invalid(e) => e.to_string(),
            ItemError::Refused(r) => r,
        })
    }

    /// Takes a batch of JSON messages; returns one [`Taken`] per message, in order, once
    /// every stored one is durable. An `Err` means nothing can be said about the batch
    /// (storage failure): acknowledge nothing.
    pub async fn accept(&self, frames: Vec<Vec<u8>>) -> Result<Vec<Taken>> {
        let taken = self.accept_uncounted(frames).await?;
        if let Some(st) = &self.stats {
            TransportStats::add(&st.received, taken.len() as u64);
            for t in &taken {
                TransportStats::add(
                    match t {
                        Taken::Stored(Outcome::Duplicate { .. }) => &st.duplicates,
                        Taken::Stored(_) => &st.stored,
                        Taken::Rejected(_) => &st.rejected,
                    },
                    1,
                );
            }
        }
        Ok(taken)
    }

    async fn accept_uncounted(&self, frames: Vec<Vec<u8>>) -> Result<Vec<Taken>> {
        let me = self.clone();
        let (mut taken, items, index) = tokio::task::spawn_blocking(move || {
            let mut taken = Vec::with_capacity(frames.len());
            let mut items = Vec::new();
            let mut index = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                match me.prepare(f) {
                    Ok(p) => {
                        index.push(i);
                        items.push(p);
                        taken.push(Taken::Rejected(String::new()));
                    }
                    Err(reason) => taken.push(Taken::Rejected(reason)),
                }
            }
            (taken, items, index)
        })
        .await?;
        if items.is_empty() {
            return Ok(taken);
        }
        // Through the exchange's publish pipeline: a refused message (e.g. withdrawing
        // another organisation's message) is rejected, the rest stored and acknowledged.
        let published = self.store.publish(items, OnRefusal::SkipRefused).await?;
        for (slot, outcome) in index.into_iter().zip(published.outcomes) {
            if let Some(t) = taken.get_mut(slot) {
                *t = match outcome {
                    Ok(o) => Taken::Stored(o),
                    Err(reason) => Taken::Rejected(reason),
                };
            }
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sighthub_exchange::StoreOptions;

    const EVENT: &[u8] = include_bytes!("../tests/data/redis_pipeline_event.json");

    #[tokio::test]
    async fn bare_events_are_wrapped_durable_and_deduplicated() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(
            ExchangeStore::open(dir.path(), StoreOptions::default(), None, None).expect("open"),
        );
        let org = Uuid::from_u128(7);
        let sink = Sink::new(Arc::clone(&store), Some(org), &["intelmq:tcp".into()]);
        let taken = sink
            .accept(vec![EVENT.to_vec(), b"{not json".to_vec(), EVENT.to_vec()])
            .await
            .expect("accept");
        assert_eq!(taken[0], Taken::Stored(Outcome::Accepted { seq: 1 }));
        assert!(matches!(taken[1], Taken::Rejected(_)));
        assert!(matches!(
            taken[2],
            Taken::Stored(Outcome::Duplicate {
                seq: 1,
                by_content: true
            })
        ));
        assert_eq!(store.durable(), 1, "durable before accept returns");
        let mut seen = Vec::new();
        store
            .scan(0, 10, |seq, e| {
                let m = sighthub_iep04::Message::from_slice(e.json).expect("envelope");
                let meta = m.meta.expect("meta");
                assert_eq!(meta.uuid_org, Some(org));
                assert_eq!(meta.tags, vec!["intelmq:tcp".to_owned()]);
                seen.push(seq);
                std::ops::ControlFlow::Continue(())
            })
            .expect("scan");
        assert_eq!(seen, vec![1]);
    }

    /// The exchange refuses a withdrawal of another organisation's message: that one is
    /// rejected, the rest of the batch stored (OnRefusal::SkipRefused).
    #[tokio::test]
    async fn a_refused_message_is_rejected_and_the_rest_stored() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(
            ExchangeStore::open(dir.path(), StoreOptions::default(), None, None).expect("open"),
        );
        let x = "03c51929-eeab-4d47-9dc0-c667f94c7d2c";
        let w = "13c51929-eeab-4d47-9dc0-c667f94c7d2c";
        let envelope = |uuid: &str, meta: &str| {
            format!(
                r#"{{"format":"intelmq","version":1,"type":"event","meta":{{"uuid":"{uuid}"{meta}}},"payload":{{"raw":"eA=="}}}}"#
            )
            .into_bytes()
        };
        let theirs = Sink::new(Arc::clone(&store), Some(Uuid::from_u128(9)), &[]);
        let taken = theirs.accept(vec![envelope(x, "")]).await.expect("accept");
        assert_eq!(taken, vec![Taken::Stored(Outcome::Accepted { seq: 1 })]);
        let mine = Sink::new(Arc::clone(&store), Some(Uuid::from_u128(7)), &[]);
        let withdrawal = format!(
            r#","intelmq:links":[{{"left_side":"{w}","type":"withdraws","right_side":"{x}"}}]"#
        );
        let taken = mine
            .accept(vec![
                EVENT.to_vec(),
                envelope(w, &withdrawal),
                envelope("23c51929-eeab-4d47-9dc0-c667f94c7d2c", ""),
            ])
            .await
            .expect("accept");
        assert_eq!(taken[0], Taken::Stored(Outcome::Accepted { seq: 2 }));
        assert!(
            matches!(&taken[1], Taken::Rejected(r) if r.contains("withdraw")),
            "{:?}",
            taken[1]
        );
        assert_eq!(taken[2], Taken::Stored(Outcome::Accepted { seq: 3 }));
        assert_eq!(store.durable(), 3, "durable before accept returns");
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_unparsed() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(
            ExchangeStore::open(dir.path(), StoreOptions::default(), None, None).expect("open"),
        );
        let sink = Sink::new(Arc::clone(&store), None, &[]).with_max_bytes(EVENT.len() - 1);
        let taken = sink.accept(vec![EVENT.to_vec()]).await.expect("accept");
        assert!(matches!(&taken[0], Taken::Rejected(r) if r.contains("over the limit")));
        assert_eq!(store.durable(), 0);
    }
}
