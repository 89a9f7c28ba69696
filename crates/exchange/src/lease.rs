//! Singleton jobs over a shared exchange: [`Lease`], the one loop that lets a job (a relay
//! push link, a relay pull, an IntelMQ output, the bridge) run on one front end at a time and
//! continue on another when that one stops or dies.
//!
//! **The rule** is the engine's ([`crate::log::ExchangeLog::lease`], exposed as
//! [`crate::ExchangeStore::lease`]): a lease is granted to a holder when nobody holds it, when
//! that holder already does, or when its holder let it expire; otherwise it is refused and
//! nothing changes. An embedded exchange is one process and grants every lease; on NATS
//! JetStream it is a compare-and-set on one key of the bucket. The engine that holds a job's
//! state holds its lease ([`LeaseEngine`]): the exchange for the links and outputs (their
//! cursors are its named consumers), the sighting store for the bridge (its position is a
//! marker there).
//!
//! **The loop** ([`Lease::hold`]), called by the job before each step (each batch it sends):
//! renew the lease; while another front end holds it, wait [`RENEW`] and ask again. An idle
//! job waits at most [`Lease::idle`] (so it renews every [`RENEW`]); right before it sends, it
//! checks [`Lease::held`] (no round trip): a holder whose renewals failed stops sending
//! [`RENEW`] before its lease can expire ([`LEASE_MS`]). On stop the job gives the lease back
//! ([`Lease::release`]), so another front end takes it on its next ask instead of waiting for
//! the expiry.
//!
//! **What a takeover costs.** A holder that dies after a batch was sent and before its
//! cursor moved leaves that batch to the next holder, which sends it again: at most one batch
//! is sent twice, and a receiving exchange answers it `duplicate`. A holder stalled longer
//! than the lease (a send that outlasts it) can overlap the next holder by that one batch,
//! with the same effect.
//!
//! Expiries are wall-clock times of the front ends that write them: their clocks must agree
//! (NTP) to well under [`RENEW`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::log::ExchangeLog;
use crate::store::ExchangeStore;

/// How long a lease lasts unrenewed: a front end takes over a job at most this long (plus
/// [`RENEW`]) after its holder died.
pub const LEASE_MS: u64 = 15_000;

/// How often a holder renews while idle, and a front end without the lease asks for it
/// (a third of [`LEASE_MS`]).
pub const RENEW: Duration = Duration::from_secs(5);

/// Where a job's lease is kept: the engine that holds the job's state. Blocking.
pub trait LeaseEngine: Send + Sync + 'static {
    /// Takes or renews `name` for `holder` for `ttl_ms` (0: gives it back); `true` when
    /// `holder` holds it now. The rule of the [module docs](self).
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, String>;
}

impl<L: ExchangeLog> LeaseEngine for ExchangeStore<L> {
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, String> {
        ExchangeStore::lease(self, name, holder, ttl_ms).map_err(|e| e.to_string())
    }
}

/// Where a front end stands with a job's lease (its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Not asked yet, or the engine did not answer.
    Asking,
    /// This front end holds it: it runs the job.
    Held,
    /// Another front end holds it: this one waits and asks again.
    Standby,
    /// Given back (the job stopped).
    Released,
}

impl LeaseState {
    /// `asking`, `held`, `standby`, `released`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Asking => "asking",
            LeaseState::Held => "held",
            LeaseState::Standby => "standby",
            LeaseState::Released => "released",
        }
    }

    fn of(v: u8) -> LeaseState {
        match v {
            1 => LeaseState::Held,
            2 => LeaseState::Standby,
            3 => LeaseState::Released,
            _ => LeaseState::Asking,
        }
    }

    fn code(self) -> u8 {
        match self {
            LeaseState::Asking => 0,
            LeaseState::Held => 1,
            LeaseState::Standby => 2,
            LeaseState::Released => 3,
        }
    }
}

/// A lease's state as its job last saw it; cheap to clone (the clones share it), for status.
#[derive(Debug, Clone, Default)]
pub struct LeaseWatch(Arc<AtomicU8>);

impl LeaseWatch {
    /// The state.
    pub fn state(&self) -> LeaseState {
        LeaseState::of(self.0.load(Ordering::Relaxed))
    }

    /// Whether another front end holds the lease (this one is on standby).
    pub fn held_elsewhere(&self) -> bool {
        self.state() == LeaseState::Standby
    }

    fn set(&self, s: LeaseState) {
        self.0.store(s.code(), Ordering::Relaxed);
    }
}

/// One job's lease on one front end; see the [module docs](self).
pub struct Lease {
    engine: Arc<dyn LeaseEngine>,
    name: String,
    holder: String,
    ttl: Duration,
    renew: Duration,
    /// Until when this front end sends under it: the start of the last granted request plus
    /// the lease's duration, less [`RENEW`] (the margin for a send's start and clock skew).
    until: Option<Instant>,
    watch: LeaseWatch,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("state", &self.watch.state())
            .finish()
    }
}

impl Lease {
    /// The lease `name` in `engine`, for `holder` (this front end's id), lasting
    /// [`LEASE_MS`] and renewed every [`RENEW`].
    pub fn new(
        engine: Arc<dyn LeaseEngine>,
        name: impl Into<String>,
        holder: impl Into<String>,
    ) -> Lease {
        Lease {
            engine,
            name: name.into(),
            holder: holder.into(),
            ttl: Duration::from_millis(LEASE_MS),
            renew: RENEW,
            until: None,
            watch: LeaseWatch::default(),
        }
    }

    /// Reports its state through `watch` (one its owner made for status) instead of its own.
    pub fn with_watch(mut self, watch: LeaseWatch) -> Lease {
        self.watch = watch;
        self
    }

    /// Another duration and renewal period (tests); `renew` below `ttl`.
    pub fn with_timing(mut self, ttl: Duration, renew: Duration) -> Lease {
        self.ttl = ttl;
        self.renew = renew.min(ttl / 2);
        self
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its state, for status.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// The longest an idle holder waits before its next [`Lease::hold`].
    pub fn idle(&self) -> Duration {
        self.renew
    }

    /// Whether this front end still sends under the lease, as of its last granted request
    /// (no round trip): checked right before each send.
    pub fn held(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }

    /// Renews the lease once, now (a job waiting on something long, a long poll, renews
    /// through it every [`Lease::idle`]): whether this front end still holds it.
    pub async fn renew(&mut self) -> bool {
        self.ask(self.ttl).await
    }

    /// Asks the engine once (take or renew): whether this front end holds the lease now. An
    /// engine that does not answer counts as not held.
    async fn ask(&mut self, ttl: Duration) -> bool {
        let started = Instant::now();
        let (engine, name, holder) = (
            Arc::clone(&self.engine),
            self.name.clone(),
            self.holder.clone(),
        );
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let got = tokio::task::spawn_blocking(move || engine.lease(&name, &holder, ttl_ms))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let before = self.watch.state();
        let now = match got {
            Ok(true) => {
                self.until = Some(started + ttl.saturating_sub(self.renew));
                LeaseState::Held
            }
            Ok(false) => {
                self.until = None;
                LeaseState::Standby
            }
            Err(e) => {
                self.until = None;
                tracing::warn!(lease = %self.name, error = %e, "lease: not renewed (the engine did not answer); not running until it is");
                LeaseState::Asking
            }
        };
        if now != before {
            match now {
                LeaseState::Held => {
                    tracing::info!(lease = %self.name, "lease: taken; running here")
                }
                LeaseState::Standby => {
                    tracing::info!(lease = %self.name, "lease: held by another front end; standing by")
                }
                _ => {}
            }
        }
        self.watch.set(now);
        now == LeaseState::Held
    }

    /// Before each step of the job: renews the lease, or, while another front end holds it,
    /// waits [`RENEW`] and asks again until it is granted. `Some(true)`: held without a gap
    /// since the last call; `Some(false)`: taken (first call, or again after a gap): what
    /// another front end did meanwhile (a cursor it moved) must be read again; `None`:
    /// stopped first.
    pub async fn hold(&mut self, stop: &mut watch::Receiver<bool>) -> Option<bool> {
        let continued = self.held();
        let mut first = true;
        loop {
            if *stop.borrow() {
                return None;
            }
            if self.ask(self.ttl).await {
                return Some(continued && first);
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(self.renew) => {}
                changed = stop.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Gives the lease back when this front end holds it (it expires at once: another front
    /// end takes it on its next ask). Call when the job stops.
    pub async fn release(&mut self) {
        if self.watch.state() == LeaseState::Held || self.until.is_some() {
            self.ask(Duration::ZERO).await;
            tracing::info!(lease = %self.name, "lease: given back");
        }
        self.until = None;
        self.watch.set(LeaseState::Released);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The rule of the module docs over a map, with a clock the test moves.
    #[derive(Default)]
    struct Fake {
        leases: Mutex<std::collections::HashMap<String, (String, u64)>>,
        now: std::sync::atomic::AtomicU64,
        down: std::sync::atomic::AtomicBool,
    }

    impl LeaseEngine for Fake {
        fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, String> {
            if self.down.load(Ordering::Relaxed) {
                return Err("down".into());
            }
            let now = self.now.load(Ordering::Relaxed);
            let mut m = self.leases.lock().map_err(|e| e.to_string())?;
            match m.get(name) {
                Some((h, exp)) if h != holder && *exp > now => Ok(false),
                _ => {
                    m.insert(name.into(), (holder.into(), now + ttl_ms));
                    Ok(true)
                }
            }
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_standby_takes_over_and_release_hands_it_on() {
        let fake = Arc::new(Fake::default());
        let timing = (Duration::from_millis(300), Duration::from_millis(20));
        let mut a = Lease::new(Arc::clone(&fake) as Arc<dyn LeaseEngine>, "job", "a")
            .with_timing(timing.0, timing.1);
        let mut b = Lease::new(Arc::clone(&fake) as Arc<dyn LeaseEngine>, "job", "b")
            .with_timing(timing.0, timing.1);
        let (_tx, mut stop) = watch::channel(false);
        assert_eq!(
            a.hold(&mut stop).await,
            Some(false),
            "taken: read the cursor"
        );
        assert!(a.held());
        assert_eq!(a.hold(&mut stop).await, Some(true), "renewed without a gap");
        // B waits while A holds it.
        let waited = tokio::time::timeout(Duration::from_millis(100), b.hold(&mut stop)).await;
        assert!(waited.is_err(), "B got a lease A holds");
        assert!(b.watch().held_elsewhere());
        assert_eq!(a.watch().state(), LeaseState::Held);
        // A gives it back: B takes it on its next ask.
        a.release().await;
        assert!(!a.held());
        assert_eq!(a.watch().state(), LeaseState::Released);
        assert_eq!(b.hold(&mut stop).await, Some(false));
        assert_eq!(b.watch().state(), LeaseState::Held);
        // B stops renewing (dies): A takes it once it expired by the engine's clock.
        fake.now.fetch_add(301, Ordering::Relaxed);
        assert_eq!(a.hold(&mut stop).await, Some(false));
        // The engine does not answer: the holder stops sending at once.
        fake.down.store(true, Ordering::Relaxed);
        let r = tokio::time::timeout(Duration::from_millis(100), a.hold(&mut stop)).await;
        assert!(r.is_err(), "held without an answer");
        assert!(!a.held());
        assert_eq!(a.watch().state(), LeaseState::Asking);
    }

    #[tokio::test]
    async fn hold_ends_when_stopped() {
        let fake = Arc::new(Fake::default());
        let mut a = Lease::new(Arc::clone(&fake) as Arc<dyn LeaseEngine>, "job", "a");
        let mut b = Lease::new(Arc::clone(&fake) as Arc<dyn LeaseEngine>, "job", "b");
        let (tx, mut stop) = watch::channel(false);
        assert!(a.hold(&mut stop).await.is_some());
        let waiting = tokio::spawn(async move { b.hold(&mut stop).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(true).expect("send");
        assert_eq!(waiting.await.expect("join"), None);
    }

    #[tokio::test]
    async fn an_embedded_exchange_grants_every_lease() {
        let store = ExchangeStore::in_memory(Default::default(), None, None).expect("open");
        assert!(store.lease("relay/push/x", "a", LEASE_MS).expect("lease"));
        assert!(store.lease("relay/push/x", "b", LEASE_MS).expect("lease"));
        let dir = tempfile::tempdir().expect("tmp");
        let disk = ExchangeStore::open(dir.path(), Default::default(), None, None).expect("open");
        assert!(disk.lease("relay/push/x", "a", LEASE_MS).expect("lease"));
        assert!(disk.lease("relay/push/x", "b", LEASE_MS).expect("lease"));
    }
}
