//! The one reader of the log. [`Reader`] is the part every follower shares: scan the
//! durable log after a position, keep what the reader's read grants allow, cut a page
//! (possibly before an entry that does not fit), and wait until the durable end moves past
//! a position. [`Follower`] is a [`Reader`] over a named, durable cursor (a named consumer
//! of [`ExchangeStore`]), for the readers that deliver the log somewhere and must neither
//! lose nor repeat more than the last unacknowledged page after a restart.
//!
//! The loop they serve: position → [`Reader::page`] → deliver → advance → [`Reader::wait_past`].
//! Where the position lives is the caller's choice; reading, filtering and waiting are here:
//! - the HTTP long-poll read (`api::cmd::iep04_read`): a [`Reader`] with the caller's
//!   grants; the cursor comes with each request;
//! - the bridge feeder (`sighthub_bridge::feeder`): a [`Reader::whole_log`]; its position is
//!   a marker written in the same atomic batch as its sightings (exactly once);
//! - relay push (`sighthub_relay::push`): a [`Follower`] over `relay/push/<peer>`;
//! - the IntelMQ outputs (`sighthub_intelmq::out`): a [`Follower`] over `intelmq-out/<name>`.
//!
//! Delivery itself (TCP, HTTP, Redis, a relay peer, a sighting store) and its retry policy
//! stay with the caller.

use sighthub_iep04::Tlp;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::access::Grants;
use crate::error::{Error, Result};
use crate::log::{AnyLog, ExchangeLog};
use crate::record::LogEntry;
use crate::store::{now_secs, ExchangeStore};

/// Where a follower whose cursor does not exist yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The first message still in the log.
    #[default]
    Beginning,
    /// What becomes durable from now on.
    End,
    /// After this sequence number (clamped to the durable end): a cursor carried over from
    /// elsewhere, e.g. a state file written before the cursor moved into the exchange.
    After(u64),
}

/// Where a page ends when its visitor breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// After this entry: it is in the page.
    After,
    /// Before this entry: it did not fit (a byte budget), the next page starts with it.
    Before,
}

/// How far a page went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEnd {
    /// Last sequence number the page covers: where to advance once what was visited is
    /// delivered (entries the grants hide are passed over with it); `after` when nothing was.
    pub last: u64,
    /// The page reached the durable end of the log.
    pub at_end: bool,
    /// Messages between `after` and the first one still in the log were dropped by retention.
    pub truncated: bool,
    /// Entries examined that the grants hid (never shown to the visitor).
    pub hidden: u64,
}

/// Scan → filter by read grants → page → wait, over the log of `store`, without a cursor of
/// its own; cheap to clone. See the [module docs](self).
pub struct Reader<L: ExchangeLog = AnyLog> {
    store: Arc<ExchangeStore<L>>,
    /// `None`: the whole log (a reader of this instance's own, such as the bridge).
    grants: Option<Arc<Grants>>,
    default_tlp: Tlp,
    durable: watch::Receiver<u64>,
}

impl<L: ExchangeLog> Clone for Reader<L> {
    fn clone(&self) -> Self {
        Reader {
            store: Arc::clone(&self.store),
            grants: self.grants.clone(),
            default_tlp: self.default_tlp,
            durable: self.durable.clone(),
        }
    }
}

impl<L: ExchangeLog> std::fmt::Debug for Reader<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("whole_log", &self.grants.is_none())
            .field("default_tlp", &self.default_tlp)
            .finish()
    }
}

impl<L: ExchangeLog> Reader<L> {
    /// A reader of what `grants` may read (`default_tlp`: the TLP of messages without one).
    pub fn new(store: Arc<ExchangeStore<L>>, grants: Arc<Grants>, default_tlp: Tlp) -> Self {
        let durable = store.subscribe();
        Reader {
            store,
            grants: Some(grants),
            default_tlp,
            durable,
        }
    }

    /// A reader of every record, whatever its feed and TLP (this instance's own consumers
    /// of the log, such as the bridge).
    pub fn whole_log(store: Arc<ExchangeStore<L>>) -> Self {
        let durable = store.subscribe();
        Reader {
            store,
            grants: None,
            default_tlp: Tlp::Red,
            durable,
        }
    }

    /// The store it reads.
    pub fn store(&self) -> &Arc<ExchangeStore<L>> {
        &self.store
    }

    /// The read grants it filters by (`None`: the whole log).
    pub fn grants(&self) -> Option<&Arc<Grants>> {
        self.grants.as_ref()
    }

    /// May this reader see `e`? The one filter of every follower.
    fn shows(&self, e: &LogEntry<'_>) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.may_read(e.format_type, &e.tags, e.tlp, self.default_tlp))
    }

    /// Scans the durable log after `after` (at most `max_scan` records), calling `visit` on
    /// the entries the grants may read, until it breaks (blocking: call it off the async
    /// runtime). A break with [`Cut::Before`] leaves that entry for the next page.
    pub fn page(
        &self,
        after: u64,
        max_scan: usize,
        mut visit: impl FnMut(u64, &LogEntry<'_>) -> ControlFlow<Cut>,
    ) -> Result<PageEnd> {
        let mut hidden = 0u64;
        let mut before = None;
        let end = self.store.scan(after, max_scan, |seq, e| {
            if !self.shows(e) {
                hidden += 1;
                return ControlFlow::Continue(());
            }
            match visit(seq, e) {
                ControlFlow::Continue(()) => ControlFlow::Continue(()),
                ControlFlow::Break(Cut::After) => ControlFlow::Break(()),
                ControlFlow::Break(Cut::Before) => {
                    before = Some(seq);
                    ControlFlow::Break(())
                }
            }
        })?;
        let mut page = PageEnd {
            last: end.last,
            at_end: end.at_end,
            truncated: end.truncated,
            hidden,
        };
        if let Some(seq) = before {
            // The entry that did not fit is the first of the next page.
            page.last = seq.saturating_sub(1).max(after);
            page.at_end = false;
        }
        Ok(page)
    }

    /// Waits until the durable end of the log is past `after`; `false` when the store is
    /// gone. Cancel-safe (for `select!` with a shutdown signal or a deadline).
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

/// A [`Reader`] over the named consumer `name` of organisation `org`; cheap to clone (the
/// clones share the cursor). See the [module docs](self).
pub struct Follower<L: ExchangeLog = AnyLog> {
    reader: Reader<L>,
    org: Uuid,
    name: Arc<str>,
}

impl<L: ExchangeLog> Clone for Follower<L> {
    fn clone(&self) -> Self {
        Follower {
            reader: self.reader.clone(),
            org: self.org,
            name: Arc::clone(&self.name),
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
    /// (at the end, or after a given seq: created durably there).
    pub async fn open(
        store: Arc<ExchangeStore<L>>,
        org: Uuid,
        name: impl Into<String>,
        grants: Grants,
        default_tlp: Tlp,
        start: StartAt,
    ) -> Result<Self> {
        let f = Follower {
            reader: Reader::new(store, Arc::new(grants), default_tlp),
            org,
            name: Arc::from(name.into()),
        };
        let at = match start {
            StartAt::Beginning => None,
            StartAt::End => Some(f.store().durable()),
            StartAt::After(seq) => Some(seq.min(f.store().durable())),
        };
        if let Some(at) = at {
            if f.store().consumer(f.org, &f.name)?.is_none() {
                f.advance(at).await?;
            }
        }
        Ok(f)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store it follows.
    pub fn store(&self) -> &Arc<ExchangeStore<L>> {
        self.reader.store()
    }

    /// The reader under the cursor.
    pub fn reader(&self) -> &Reader<L> {
        &self.reader
    }

    /// Last acknowledged sequence number (0: nothing yet).
    pub fn position(&self) -> Result<u64> {
        Ok(self
            .store()
            .consumer(self.org, &self.name)?
            .map_or(0, |c| c.acked))
    }

    /// [`Reader::page`]: the next page after `after` (usually [`Follower::position`]).
    pub fn page(
        &self,
        after: u64,
        max_scan: usize,
        visit: impl FnMut(u64, &LogEntry<'_>) -> ControlFlow<Cut>,
    ) -> Result<PageEnd> {
        self.reader.page(after, max_scan, visit)
    }

    /// Durably moves the cursor to `seq` (never back; `seq` must be durable).
    pub async fn advance(&self, seq: u64) -> Result<()> {
        let (store, org, name) = (Arc::clone(self.store()), self.org, Arc::clone(&self.name));
        let (_, ticket) =
            tokio::task::spawn_blocking(move || store.consumer_ack(org, &name, seq, now_secs()))
                .await
                .map_err(Error::join)??;
        self.store().group_commit().wait(ticket).await?;
        Ok(())
    }

    /// [`Reader::wait_past`].
    pub async fn wait_past(&mut self, after: u64) -> bool {
        self.reader.wait_past(after).await
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
        Grants::reader(ORG, vec![Feed::All], tlp_max)
    }

    fn seqs(f: &Follower<MemoryLog>, after: u64) -> (Vec<u64>, PageEnd) {
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
        assert_eq!((end.last, end.at_end, end.hidden), (3, true, 1));
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

    #[tokio::test]
    async fn a_carried_over_cursor_is_created_once_and_clamped() {
        let store = store();
        publish(
            &store,
            r#"[{"source.ip":"198.51.100.1"},{"source.ip":"198.51.100.2"}]"#,
        )
        .await;
        let open = |name: &'static str, start| {
            Follower::open(
                Arc::clone(&store),
                ORG,
                name,
                reader(Tlp::Red),
                Tlp::Green,
                start,
            )
        };
        let f = open("c", StartAt::After(1)).await.expect("follower");
        assert_eq!(f.position().expect("pos"), 1);
        assert_eq!(seqs(&f, 1).0, vec![2]);
        // An existing cursor wins over the carried-over one.
        let again = open("c", StartAt::After(0)).await.expect("follower");
        assert_eq!(again.position().expect("pos"), 1);
        // Past the durable end: at the end, never ahead of the log.
        let ahead = open("d", StartAt::After(99)).await.expect("follower");
        assert_eq!(ahead.position().expect("pos"), 2);
    }

    fn visit_all(
        r: &Reader<MemoryLog>,
        after: u64,
        cut: Option<(u64, Cut)>,
    ) -> (Vec<u64>, PageEnd) {
        let mut out = Vec::new();
        let end = r
            .page(after, 100, |seq, _| match cut {
                Some((at, c)) if at == seq => {
                    if c == Cut::After {
                        out.push(seq);
                    }
                    ControlFlow::Break(c)
                }
                _ => {
                    out.push(seq);
                    ControlFlow::Continue(())
                }
            })
            .expect("page");
        (out, end)
    }

    #[tokio::test]
    async fn the_shared_reader_filters_cuts_and_waits_with_a_deadline() {
        let store = store();
        publish(
            &store,
            r#"[{"source.ip":"198.51.100.1"},
                {"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c","tags":["tlp:red"]},"payload":{"raw":"eA=="}},
                {"source.ip":"198.51.100.3"},
                {"source.ip":"198.51.100.4"}]"#,
        )
        .await;
        // The whole log: nothing hidden, whatever the TLP.
        let all = Reader::whole_log(Arc::clone(&store));
        let (got, end) = visit_all(&all, 0, None);
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!((end.last, end.at_end, end.hidden), (4, true, 0));
        // Grants: the red one is hidden and passed over.
        let amber = Reader::new(Arc::clone(&store), Arc::new(reader(Tlp::Amber)), Tlp::Green);
        let (got, end) = visit_all(&amber, 0, Some((3, Cut::After)));
        assert_eq!(got, vec![1, 3]);
        assert_eq!((end.last, end.at_end, end.hidden), (3, false, 1));
        // An entry that does not fit: the page ends before it, the next one starts with it.
        let (got, end) = visit_all(&amber, 0, Some((3, Cut::Before)));
        assert_eq!(got, vec![1]);
        assert_eq!((end.last, end.at_end), (2, false));
        assert_eq!(visit_all(&amber, end.last, None).0, vec![3, 4]);
        let (got, end) = visit_all(&amber, 3, Some((4, Cut::Before)));
        assert!(got.is_empty());
        assert_eq!((end.last, end.at_end), (3, false), "never behind `after`");
        // Past the end: the page is empty, at the end; the wait honours a deadline.
        let (got, end) = visit_all(&amber, 4, None);
        assert!(got.is_empty());
        assert_eq!((end.last, end.at_end, end.hidden), (4, true, 0));
        let mut waiter = amber.clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(30);
        assert!(tokio::time::timeout_at(deadline, waiter.wait_past(4))
            .await
            .is_err());
        assert!(waiter.wait_past(3).await, "already past 3");
        let woke = tokio::spawn(async move { waiter.wait_past(4).await });
        publish(&store, r#"{"source.ip":"198.51.100.5"}"#).await;
        assert!(woke.await.expect("task"));
    }
}
