//! The single-write queue: one thread applies the sightings of `GET /w`, and the shadow
//! sightings of single reads, in batches.
//!
//! A `/w` used to hand its write to a blocking thread of its own. Under load that is a thread
//! wake-up and a context switch per request, which the profile showed as the largest cost of a
//! write after the network itself. Here a request queues its sighting in a bounded channel
//! ([`QUEUE`]); one thread (`sighting-writer`) takes everything queued, up to [`MAX_BATCH`],
//! applies it with one [`SightingStore::write`] (one hold of the writer lock, one engine batch,
//! one ticket) and answers each request through its own reply channel. While requests keep
//! coming the thread never sleeps, so the wake-ups are paid per batch, not per request. The
//! shadow sighting a `GET /r` raises goes the same way ([`Writer::shadow`]), applied with one
//! [`SightingStore::shadow`] per batch, so a read answered on the async worker
//! ([`SightingStore::read_now`]) needs no blocking thread either.
//!
//! Nothing of the write's rules moves: the store applies the items in arrival order, refuses an
//! item on its own ([`sighthub_store::ItemError`]), and every request still waits for its
//! ticket to be durable before it is answered ([`crate::cmd::write`]). A batch that fails as a
//! whole (a storage error) answers that error to each of its requests, and is **not** applied
//! again one write at a time: an engine that applies a batch value group by value group (Redis
//! Cluster) may have written part of it before failing, and a second attempt would count those
//! sightings twice (the failover test of the cluster suites caught exactly that). A panic while applying a batch is caught: its requests get a 500 and the thread
//! goes on. A full queue makes the next requests wait their turn (back-pressure), never fail.

use crate::error::ApiError;
use sighthub_store::{ItemError, Namespace, SightingStore, Ticket, WriteOp, WriteOutcome};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most sightings applied in one store write (one hold of the writer lock).
pub const MAX_BATCH: usize = 512;
/// Most sightings waiting for the writer thread; further requests wait to be queued.
pub const QUEUE: usize = 4096;

/// What a queued write gets back: its outcome (or why the store refused the item) and the
/// ticket to wait for.
pub type Written = (Result<WriteOutcome, ItemError>, Ticket);

/// One job of the writer thread.
enum Job {
    /// A sighting (`GET /w`).
    Write(Queued),
    /// A shadow sighting of a read, answered once applied (not waited for durability, as
    /// [`SightingStore::shadow`] says).
    Shadow {
        namespace: Namespace,
        value: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
}

/// A queued shadow sighting: where, what, and where to answer.
type ShadowJob = (Namespace, String, oneshot::Sender<Result<(), ApiError>>);

/// One sighting to write, with where to answer.
struct Queued {
    namespace: Namespace,
    value: String,
    timestamp: i64,
    ttl: Option<u64>,
    tags: Option<String>,
    reply: oneshot::Sender<Result<Written, ApiError>>,
}

impl Queued {
    fn op(&self) -> WriteOp<'_> {
        WriteOp {
            namespace: &self.namespace,
            value: &self.value,
            timestamp: self.timestamp,
            ttl: self.ttl,
            tags: self.tags.as_deref(),
        }
    }
}

/// The queue in front of the writer thread; the thread ends when the queue is dropped.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<dyn SightingStore>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sighting-writer".into())
            .spawn(move || run(&*store, rx))?;
        Ok(Writer { tx })
    }

    /// Queues one sighting and waits until it is applied (not until it is durable: wait for
    /// the ticket). `now` decides the TTL sweep and is the writer thread's own clock.
    pub async fn write(
        &self,
        namespace: Namespace,
        value: String,
        timestamp: i64,
        ttl: Option<u64>,
        tags: Option<String>,
    ) -> Result<Written, ApiError> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            namespace,
            value,
            timestamp,
            ttl,
            tags,
            reply,
        };
        self.send(Job::Write(queued), answer).await
    }

    /// Queues the shadow sighting of a read of `value` in `namespace` and waits until it is
    /// applied, so a later read of `_shadow/` sees it.
    pub async fn shadow(&self, namespace: Namespace, value: String) -> Result<(), ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            Job::Shadow {
                namespace,
                value,
                reply,
            },
            answer,
        )
        .await
    }

    async fn send<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.tx
            .send(job)
            .await
            .map_err(|_| ApiError::Internal("the sighting writer has stopped"))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("a request handler panicked"))?
    }
}

/// The writer thread: drain, apply, answer, until every sender is gone.
fn run(store: &dyn SightingStore, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let (mut writes, mut shadows) = (Vec::with_capacity(16), Vec::new());
        let mut job = Some(first);
        while let Some(j) = job.take() {
            match j {
                Job::Write(q) => writes.push(q),
                Job::Shadow {
                    namespace,
                    value,
                    reply,
                } => shadows.push((namespace, value, reply)),
            }
            if writes.len() + shadows.len() < MAX_BATCH {
                job = rx.try_recv().ok();
            }
        }
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !writes.is_empty() {
                apply(store, writes);
            }
            if !shadows.is_empty() {
                apply_shadows(store, shadows);
            }
        }));
        if applied.is_err() {
            // The batch's reply senders were dropped with it: each request answers 500.
            tracing::error!("the sighting writer panicked applying a batch; it goes on");
        }
    }
}

/// Applies one batch and answers each of its requests.
fn apply(store: &dyn SightingStore, batch: Vec<Queued>) {
    let now = crate::app::now();
    let ops: Vec<WriteOp<'_>> = batch.iter().map(Queued::op).collect();
    let result = store.write(&ops, now);
    drop(ops);
    match result {
        Ok((outcomes, ticket)) if outcomes.len() == batch.len() => {
            for (q, outcome) in batch.into_iter().zip(outcomes) {
                let _ = q.reply.send(Ok((outcome, ticket)));
            }
        }
        Ok(_) => {
            for q in batch {
                let _ = q
                    .reply
                    .send(Err(ApiError::Internal("a write gave no outcome")));
            }
        }
        Err(e) => {
            let (detail, first) = (e.to_string(), ApiError::from(e));
            for q in batch {
                let _ = q.reply.send(Err(same_error(&first, &detail)));
            }
        }
    }
}

/// The error a failed batch answers to each of its requests: the same status and message as
/// `e` (whose store error reads `detail`).
fn same_error(e: &ApiError, detail: &str) -> ApiError {
    match e {
        ApiError::Unavailable => ApiError::Unavailable,
        ApiError::Backend(why) => ApiError::Backend(why.clone()),
        ApiError::Conflict(why) => ApiError::Conflict(why.clone()),
        ApiError::Internal(why) => ApiError::Internal(why),
        _ => ApiError::Storage(Box::new(std::io::Error::other(detail.to_owned()))),
    }
}

/// Applies the shadow sightings of a batch and answers each read.
fn apply_shadows(store: &dyn SightingStore, shadows: Vec<ShadowJob>) {
    let now = crate::app::now();
    let reads: Vec<(&Namespace, &str)> = shadows.iter().map(|(n, v, _)| (n, v.as_str())).collect();
    let result = store.shadow(&reads, now);
    drop(reads);
    match result {
        Ok(()) => {
            for (_, _, reply) in shadows {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            let (detail, first) = (e.to_string(), ApiError::from(e));
            for (_, _, reply) in shadows {
                let _ = reply.send(Err(same_error(&first, &detail)));
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use sighthub_store::{FjallStore, StoreOptions};

    /// Concurrent single writes are applied in batches, each request gets its own outcome,
    /// and the counts add up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_each_get_their_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn SightingStore> =
            Arc::new(FjallStore::open(dir.path(), StoreOptions::default()).expect("open"));
        let writer = Arc::new(Writer::start(Arc::clone(&store)).expect("start"));
        let ns = Namespace::parse("t/w").expect("ns");
        let mut tasks = Vec::new();
        for i in 0..400u32 {
            let (w, ns) = (Arc::clone(&writer), ns.clone());
            tasks.push(tokio::spawn(async move {
                w.write(ns, format!("v{}", i % 100), 1_700_000_000, None, None)
                    .await
            }));
        }
        let mut new = 0;
        for t in tasks {
            let (outcome, ticket) = t.await.expect("join").expect("written");
            store.durability().wait(ticket).await.expect("durable");
            if outcome.expect("accepted").new {
                new += 1;
            }
        }
        assert_eq!(new, 100, "each value is new exactly once");
        assert_eq!(store.count(&ns, 1_700_000_000).expect("count"), Some(100));
        for i in 0..100 {
            let v = match store
                .read(&ns, &format!("v{i}"), 1_700_000_000)
                .expect("read")
            {
                sighthub_store::ReadOutcome::Found(v) => v,
                other => panic!("v{i}: {other:?}"),
            };
            assert_eq!(v.record.count, 4);
        }
    }

    /// Shadow sightings queued by concurrent reads are all applied before each read is
    /// answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_shadows_are_applied_before_the_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn SightingStore> =
            Arc::new(FjallStore::open(dir.path(), StoreOptions::default()).expect("open"));
        let writer = Arc::new(Writer::start(Arc::clone(&store)).expect("start"));
        let ns = Namespace::parse("t/r").expect("ns");
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let (w, ns) = (Arc::clone(&writer), ns.clone());
                tokio::spawn(async move { w.shadow(ns, format!("v{}", i % 50)).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("applied");
        }
        let now = crate::app::now();
        assert_eq!(store.count(&ns.shadow(), now).expect("count"), Some(50));
        match store.read(&ns.shadow(), "v7", now).expect("read") {
            sighthub_store::ReadOutcome::Found(v) => assert_eq!(v.record.count, 4),
            other => panic!("{other:?}"),
        }
    }

    /// An item the store refuses is refused for its request only.
    #[tokio::test]
    async fn a_refused_item_is_answered_on_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn SightingStore> =
            Arc::new(FjallStore::open(dir.path(), StoreOptions::default()).expect("open"));
        let writer = Writer::start(Arc::clone(&store)).expect("start");
        let ns = Namespace::parse("t/w").expect("ns");
        let long = "x".repeat(sighthub_store::MAX_VALUE_LEN + 1);
        let (refused, _) = writer
            .write(ns.clone(), long, 1_700_000_000, None, None)
            .await
            .expect("answered");
        assert!(refused.is_err());
        let (ok, _) = writer
            .write(ns, "v".into(), 1_700_000_000, None, None)
            .await
            .expect("answered");
        assert!(ok.expect("accepted").new);
    }
}
