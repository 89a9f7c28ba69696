//! Group commit: many writers, one fsync.
//!
//! Writers apply their batch to the engine (which appends it to the journal's buffer), take a
//! [`Ticket`] and wait. One background thread repeatedly takes the newest ticket number,
//! calls the engine's persist (flush + `fdatasync`) once, and publishes that number as synced:
//! every writer whose ticket is at or below it was covered by that single fsync. Under load
//! the batches grow by themselves; alone, a writer waits for one fsync.
//!
//! If a persist fails the commit is poisoned: every waiter and every later write gets
//! [`Error::Poisoned`], because the journal's state on disk is unknown.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use tokio::sync::watch;

/// A position in the write sequence; durable once synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is durable only once its ticket is waited for"]
pub struct Ticket(pub(crate) u64);

impl Ticket {
    /// A ticket that needs no wait (nothing was written).
    pub const NONE: Ticket = Ticket(0);
}

/// The function that makes everything written so far durable.
pub type PersistFn = Box<dyn FnMut() -> Result<()> + Send + 'static>;

struct State {
    /// Highest ticket handed out.
    issued: u64,
    /// Highest ticket known durable.
    synced: u64,
    shutdown: bool,
    /// The sync thread is waiting on `work` (otherwise it will look at `issued` again by
    /// itself, and `issue` need not wake it: no futex call per write under load).
    idle: bool,
    /// Threads in `wait_blocking` (otherwise `done` is not signalled).
    blocked: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sync thread when tickets are issued.
    work: Condvar,
    /// Wakes blocking waiters when `synced` moves.
    done: Condvar,
    /// Async waiters watch this (synced ticket number).
    synced_tx: watch::Sender<u64>,
    poisoned: AtomicBool,
    /// What the sync thread did (`GroupCommit::stats`); touched once per fsync, never per
    /// write.
    fsync_seconds: Histogram,
    batch_writes: Histogram,
}

/// Upper bounds (seconds) of the fsync latency buckets.
pub const FSYNC_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the writes-per-fsync buckets.
pub const BATCH_WRITES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// A fixed-bucket histogram of atomics (the group commit's, read by the metrics).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum, in millionths of the unit.
    sum_micros: AtomicU64,
}

/// A copy of a [`Histogram`]: cumulative counts per upper bound (the last is `+Inf`).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, cumulative, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Empty, with these upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    /// A copy.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: acc,
        }
    }
}

/// What a group commit did since it started.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitStats {
    /// Seconds per fsync (the persist call).
    pub fsync_seconds: HistogramSnapshot,
    /// Writes (tickets) covered by each fsync.
    pub batch_writes: HistogramSnapshot,
    /// Whether a failed fsync poisoned it.
    pub poisoned: bool,
}

/// Batches the fsyncs of concurrent writers. See the module docs.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the sync thread around `persist`.
    pub fn start(mut persist: PersistFn) -> Result<Self> {
        let (synced_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                issued: 0,
                synced: 0,
                shutdown: false,
                idle: false,
                blocked: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            synced_tx,
            poisoned: AtomicBool::new(false),
            fsync_seconds: Histogram::new(FSYNC_SECONDS),
            batch_writes: Histogram::new(BATCH_WRITES),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || sync_loop(&worker, &mut persist))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands out the next ticket. Call after the batch is in the engine.
    pub fn issue(&self) -> Result<Ticket> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let (t, wake) = {
            let mut s = lock(&self.shared.state);
            s.issued += 1;
            (s.issued, std::mem::take(&mut s.idle))
        };
        if wake {
            self.shared.work.notify_one();
        }
        Ok(Ticket(t))
    }

    /// What it did since it started (fsync latencies, writes per fsync).
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            fsync_seconds: self.shared.fsync_seconds.snapshot(),
            batch_writes: self.shared.batch_writes.snapshot(),
            poisoned: self.is_poisoned(),
        }
    }

    /// True once a persist has failed.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Waits until `ticket` is durable.
    pub async fn wait(&self, ticket: Ticket) -> Result<()> {
        if ticket == Ticket::NONE {
            return Ok(());
        }
        let mut rx = self.shared.synced_tx.subscribe();
        let poisoned = &self.shared.poisoned;
        rx.wait_for(|synced| *synced >= ticket.0 || poisoned.load(Ordering::Acquire))
            .await
            .map_err(|_| Error::Poisoned)?;
        if *rx.borrow() >= ticket.0 {
            Ok(())
        } else {
            Err(Error::Poisoned)
        }
    }

    /// Blocking form of [`Self::wait`], for threads outside an async runtime.
    pub fn wait_blocking(&self, ticket: Ticket) -> Result<()> {
        let mut s = lock(&self.shared.state);
        s.blocked += 1;
        let outcome = loop {
            if s.synced >= ticket.0 {
                break Ok(());
            }
            if self.is_poisoned() {
                break Err(Error::Poisoned);
            }
            s = self
                .shared
                .done
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        };
        s.blocked -= 1;
        outcome
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sync_loop(shared: &Shared, persist: &mut PersistFn) {
    loop {
        let (target, from) = {
            let mut s = lock(&shared.state);
            while s.issued == s.synced && !s.shutdown {
                s.idle = true;
                s = shared
                    .work
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            s.idle = false;
            if s.issued == s.synced {
                return; // shutdown with nothing pending
            }
            (s.issued, s.synced)
        };
        let started = std::time::Instant::now();
        let outcome = persist();
        shared
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        shared.batch_writes.observe((target - from) as f64);
        let mut s = lock(&shared.state);
        match outcome {
            Ok(()) => {
                s.synced = target;
                shared.synced_tx.send_replace(target);
                if s.blocked == 0 {
                    continue;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal fsync failed; refusing further writes");
                shared.poisoned.store(true, Ordering::Release);
                shared.synced_tx.send_modify(|_| {});
                shared.done.notify_all();
                return;
            }
        }
        drop(s);
        shared.done.notify_all();
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("group-commit thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn batches_fsyncs_and_reports_durability() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let gc = GroupCommit::start(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(())
        }))
        .expect("starts");
        let tickets: Vec<Ticket> = (0..50).map(|_| gc.issue().expect("issue")).collect();
        for t in &tickets {
            gc.wait_blocking(*t).expect("durable");
        }
        let n = calls.load(Ordering::SeqCst);
        assert!((1..50).contains(&n), "50 tickets took {n} fsyncs");
        // The stats saw each fsync once and every ticket in some batch.
        let st = gc.stats();
        assert_eq!(st.fsync_seconds.count, n as u64);
        assert_eq!(st.batch_writes.count, n as u64);
        assert_eq!(st.batch_writes.sum, 50.0);
        assert!(st.fsync_seconds.sum >= 0.005 * n as f64, "{st:?}");
        assert_eq!(st.batch_writes.buckets.last().map(|b| b.1), Some(n as u64));
        assert!(!st.poisoned);
    }

    #[test]
    fn failed_persist_poisons() {
        let gc = GroupCommit::start(Box::new(|| {
            Err(Error::Io(std::io::Error::other("disk gone")))
        }))
        .expect("starts");
        let t = gc.issue().expect("first issue works");
        assert!(matches!(gc.wait_blocking(t), Err(Error::Poisoned)));
        assert!(matches!(gc.issue(), Err(Error::Poisoned)));
    }

    #[tokio::test]
    async fn async_wait() {
        let gc = GroupCommit::start(Box::new(|| Ok(()))).expect("starts");
        let t = gc.issue().expect("issue");
        gc.wait(t).await.expect("durable");
        gc.wait(Ticket::NONE).await.expect("nothing to wait for");
    }
}
