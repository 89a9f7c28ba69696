//! One follower of the log: [`Follower`], over a named, durable cursor (a named consumer of
//! [`ExchangeStore`]), for the readers that deliver the log somewhere and must neither lose
//! nor repeat more than the last unacknowledged page after a restart.
//!
//! The loop it serves: [`Follower::position`] → [`Follower::page`] (scan the durable log
//! after the position, keeping what the follower's read grants allow) → deliver →
//! [`Follower::advance`] (durably, never back) → [`Follower::wait_past`] (until the durable
//! end moves). Delivery itself (TCP, HTTP, Redis, a relay peer) and its retry policy stay
//! with the caller.
//!
//! Used by the IntelMQ outputs (`sighthub_intelmq::out`). The HTTP long-poll read follows a
//! client's cursor rather than a named one (it uses [`ExchangeStore::scan`] and
//! [`ExchangeStore::subscribe`] directly); the bridge keeps its position with the sightings
//! it writes (one atomic batch) and relay push in its own state files.

use sighthub_iep04::Tlp;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::access::Grants;
use crate::error::{Error, Result};
use crate::log::{ExchangeLog, FjallLog};
use crate::record::LogEntry;
use crate::store::{now_secs, ExchangeStore, ScanEnd};

/// Where a follower whose cursor does not exist yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The first message still in the log.
    #[default]
    Beginning,
    /// What becomes durable from now on.
    End,
}

/// A reader of the log over the named consumer `name` of organisation `org`; cheap to
/// clone (the clones share the cursor). See the [module docs](self).
pub struct Follower<L: ExchangeLog = FjallLog> {
    store: Arc<ExchangeStore<L>>,
    org: Uuid,
    name: String,
    grants: Arc<Grants>,
    default_tlp: Tlp,
    durable: watch::Receiver<u64>,
}

impl<L: ExchangeLog> Clone for Follower<L> {
    fn clone(&self) -> Self {
        Follower {
            store: Arc::clone(&self.store),
            org: self.org,
            name: self.name.clone(),
            grants: Arc::clone(&self.grants),
            default_tlp: self.default_tlp,
            durable: self.durable.clone(),
        }
    }
}

impl<L: ExchangeLog> std::fmt::Debug for Follower<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("org", &self.org)
            .field("name", &self.name)
            .finish()
    }
}

impl<L: ExchangeLog> Follower<L> {
    /// The follower of the consumer `name` of `org`, reading what `grants` may read
    /// (`default_tlp`: the TLP of messages without one). A new cursor starts at `start`
    /// (at the end: created durably at the current durable end).
    pub async fn open(
        store: Arc<ExchangeStore<L>>,
        org: Uuid,
        name: impl Into<String>,
        grants: Grants,
        default_tlp: Tlp,
        start: StartAt,
    ) -> Result<Self> {
        let durable = store.subscribe();
        let f = Follower {
            store,
            org,
            name: name.into(),
            grants: Arc::new(grants),
            default_tlp,
            durable,
        };
        if start == StartAt::End && f.store.consumer(f.org, &f.name)?.is_none() {
            let end = f.store.durable();
            f.advance(end).await?;
        }
        Ok(f)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store it follows.
    pub fn store(&self) -> &Arc<ExchangeStore<L>> {
        &self.store
    }

    /// Last acknowledged sequence number (0: nothing yet).
    pub fn position(&self) -> Result<u64> {
        Ok(self
            .store
            .consumer(self.org, &self.name)?
            .map_or(0, |c| c.acked))
    }

    /// Scans the durable log after `after` (at most `max_scan` records), calling `visit` on
    /// the entries the grants may read, until it breaks (blocking: call it off the async
    /// runtime). The returned [`ScanEnd::last`] is where to advance once what was visited
    /// is delivered: records skipped by the grants are passed over with them.
    pub fn page(
        &self,
        after: u64,
        max_scan: usize,
        mut visit: impl FnMut(u64, &LogEntry<'_>) -> ControlFlow<()>,
    ) -> Result<ScanEnd> {
        self.store.scan(after, max_scan, |seq, e| {
            if self
                .grants
                .may_read(e.format_type, &e.tags, e.tlp, self.default_tlp)
            {
                visit(seq, e)
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// Durably moves the cursor to `seq` (never back; `seq` must be durable).
    pub async fn advance(&self, seq: u64) -> Result<()> {
        let (store, org, name) = (Arc::clone(&self.store), self.org, self.name.clone());
        let (_, ticket) =
            tokio::task::spawn_blocking(move || store.consumer_ack(org, &name, seq, now_secs()))
                .await
                .map_err(Error::join)??;
        self.store.group_commit().wait(ticket).await?;
        Ok(())
    }

    /// Waits until the durable end of the log is past `after`; `false` when the store is
    /// gone. Cancel-safe (for `select!` with a shutdown signal).
    pub async fn wait_past(&mut self, after: u64) -> bool {
        loop {
            if *self.durable.borrow_and_update() > after {
                return true;
            }
            if self.durable.changed().await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ingest::{BodyKind, Collector};
    use crate::log::MemoryLog;
    use crate::store::{OnRefusal, StoreOptions};
    use crate::Feed;

    const ORG: Uuid = Uuid::from_u128(0x42);

    fn store() -> Arc<ExchangeStore<MemoryLog>> {
        Arc::new(ExchangeStore::in_memory(StoreOptions::default(), Some(ORG), None).expect("open"))
    }

    async fn publish(store: &Arc<ExchangeStore<MemoryLog>>, body: &str) {
        let mut c = Collector::new(Arc::new(Grants::admin(ORG)), Uuid::from_u128(5));
        c.decode_buffered(BodyKind::Json, body.as_bytes(), 1 << 20);
        store
            .publish(c.items, OnRefusal::RefuseRequest)
            .await
            .expect("publish");
    }

    fn reader(tlp_max: Tlp) -> Grants {
        Grants {
            org: ORG,
            publish: Vec::new(),
            read: vec![Feed::All],
            tlp_max,
            relay: false,
            admin: false,
            bare_tags: Vec::new(),
        }
    }

    fn seqs(f: &Follower<MemoryLog>, after: u64) -> (Vec<u64>, ScanEnd) {
        let mut out = Vec::new();
        let end = f
            .page(after, 100, |seq, _| {
                out.push(seq);
                ControlFlow::Continue(())
            })
            .expect("page");
        (out, end)
    }

    #[tokio::test]
    async fn follows_filters_by_grants_advances_and_waits() {
        let store = store();
        publish(
            &store,
            r#"[{"source.ip":"198.51.100.1"},
                {"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c","tags":["tlp:red"]},"payload":{"raw":"eA=="}},
                {"source.ip":"198.51.100.3"}]"#,
        )
        .await;
        let mut f = Follower::open(
            Arc::clone(&store),
            ORG,
            "out/a",
            reader(Tlp::Amber),
            Tlp::Green,
            StartAt::Beginning,
        )
        .await
        .expect("follower");
        assert_eq!(f.position().expect("pos"), 0);
        let (got, end) = seqs(&f, 0);
        assert_eq!(got, vec![1, 3], "the red message is not for these grants");
        assert_eq!((end.last, end.at_end), (3, true));
        f.advance(end.last).await.expect("advance");
        f.advance(1).await.expect("never back");
        assert_eq!(f.position().expect("pos"), 3);
        // Nothing new: the wait blocks until something becomes durable.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), f.wait_past(3));
        assert!(waiting.await.is_err(), "nothing past 3 yet");
        let mut g = f.clone();
        let woke = tokio::spawn(async move { g.wait_past(3).await });
        publish(&store, r#"{"source.ip":"198.51.100.4"}"#).await;
        assert!(woke.await.expect("task"));
        assert_eq!(seqs(&f, f.position().expect("pos")).0, vec![4]);
    }

    #[tokio::test]
    async fn a_new_cursor_at_the_end_skips_what_is_there() {
        let store = store();
        publish(&store, r#"{"source.ip":"198.51.100.1"}"#).await;
        let f = Follower::open(
            Arc::clone(&store),
            ORG,
            "out/b",
            reader(Tlp::Red),
            Tlp::Green,
            StartAt::End,
        )
        .await
        .expect("follower");
        assert_eq!(f.position().expect("pos"), 1);
        // Opening it again keeps the stored position, whatever the start.
        publish(&store, r#"{"source.ip":"198.51.100.2"}"#).await;
        let again = Follower::open(
            Arc::clone(&store),
            ORG,
            "out/b",
            reader(Tlp::Red),
            Tlp::Green,
            StartAt::End,
        )
        .await
        .expect("follower");
        assert_eq!(again.position().expect("pos"), 1);
        assert_eq!(seqs(&again, 1).0, vec![2]);
    }
}
