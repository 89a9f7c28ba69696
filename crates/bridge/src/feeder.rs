//! The feeder: a consumer of the exchange log that records sightings.
//!
//! It reads the log through the exchange's one reader ([`Reader::whole_log`]: scan, page,
//! wait for the durable end); only where its position lives is its own.
//!
//! Its position is a marker in the sighting store, written in the same atomic batch as the
//! sightings of the messages up to it. So each accepted message is applied exactly once:
//! the exchange refuses a second copy of a uuid whatever path it took, and the feeder never
//! re-applies nor skips a log record, even when killed between two batches.
//!
//! A message that `withdraws` or `replaces` an earlier one takes the earlier message's
//! sightings back out, once: a "withdrawn" marker, in the same batch, prevents a second
//! withdrawal from retracting again. Only what takes effect by the one rule does
//! ([`ExchangeStore::effects`]: a typed link `W withdraws|replaces X` of the message `W`
//! itself, `X` of the same organisation); any other link is data.
//!
//! Several front ends on one shared sighting store (and one shared exchange) run the feeder
//! one at a time: [`Feeder::run`] steps only while its process holds the store's [`LEASE`]
//! (renewed before each step and while idle; another front end takes it over [`LEASE_MS`]
//! after its holder stopped renewing; given back when the bridge stops). The position marker
//! is shared, so the new holder goes on where the old one stopped. Where a sighting store has
//! one process, the lease is always granted. The loop that keeps the lease is the exchange's
//! [`sighthub_exchange::lease::Lease`] (the one the relay links and IntelMQ outputs use),
//! over the sighting store's lease ([`SightingStore::lease`]), since the bridge's position is
//! kept there. What the marker cannot cover on a non-transactional engine (a crash between a
//! batch's sightings and its marker applies that batch again) is listed in
//! `sighthub_store::engine`.

use crate::config::BridgeConfig;
use crate::mapping::{self, Sighting};
use sighthub_exchange::lease::{Lease, LeaseEngine};
use sighthub_exchange::record::EntryKind;
use sighthub_exchange::{Cut, ExchangeStore, Reader};
use sighthub_iep04::Message;
use sighthub_store::{Limits, Namespace, SightingStore, Ticket, ValueFormat, WriteOp};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

/// Marker key of the feeder's position (last applied log seq, u64 BE).
pub const POSITION: &[u8] = b"bridge/position";
/// Marker key of the current rebuild generation (u64 BE).
pub const GENERATION: &[u8] = b"bridge/generation";
/// Marker key counting log records the feeder could not apply and skipped (u64 BE).
pub const SKIPPED: &[u8] = b"bridge/skipped";
/// Marker key counting sightings the sighting store refused (e.g. a value over
/// `MAX_VALUE_LEN`, a namespace that does not parse) (u64 BE).
pub const REFUSED: &[u8] = b"bridge/refused";

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sighting store failed.
    #[error("sighting store: {0}")]
    Store(#[from] sighthub_store::Error),
    /// The exchange store failed.
    #[error("exchange: {0}")]
    Exchange(#[from] sighthub_exchange::Error),
    /// Applying a record panicked (a bug, or the storage engine refusing it).
    #[error("panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// The storage itself failed (disk, fsync, engine): retrying later may work, and the
    /// record is not at fault, so it must not be skipped.
    pub fn is_storage_failure(&self) -> bool {
        use sighthub_exchange::error::StorageError;
        match self {
            Error::Store(e) => matches!(
                e,
                sighthub_store::Error::Engine(_)
                    | sighthub_store::Error::Io(_)
                    | sighthub_store::Error::Poisoned
            ),
            Error::Exchange(e) => matches!(
                e,
                sighthub_exchange::Error::Poisoned
                    | sighthub_exchange::Error::Storage(
                        StorageError::Fjall(_) | StorageError::Io(_) | StorageError::Commit(_)
                    )
            ),
            Error::Panicked(_) => false,
        }
    }
}

/// The feeder's counters of what it could not apply (markers in the sighting store, written
/// in the same batch as the position).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Log records skipped because applying them failed ([`SKIPPED`]).
    pub skipped: u64,
    /// Sightings the store refused ([`REFUSED`]).
    pub refused: u64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Log records examined.
    pub records: usize,
    /// Sightings written.
    pub sightings: usize,
    /// Sightings taken back out by withdrawals.
    pub retracted: usize,
    /// Sightings refused (not written, counted in [`REFUSED`]).
    pub refused: usize,
    /// Log records skipped because they could not be applied (counted in [`SKIPPED`]).
    pub skipped: usize,
    /// Position after the step.
    pub position: u64,
    /// Nothing more is durable in the log for now.
    pub at_end: bool,
}

/// Feeds the exchange log into the sighting store.
pub struct Feeder {
    exchange: Arc<ExchangeStore>,
    /// The exchange's one reader of the log, over the whole log (no read grants: the
    /// bridge records every organisation's sightings).
    reader: Reader,
    store: Arc<dyn SightingStore>,
    cfg: BridgeConfig,
    /// This process's id for the bridge's lease ([`LEASE`]).
    holder: String,
}

/// The lease that lets one front end of a shared sighting store run the bridge
/// ([`SightingStore::lease`]): held for [`LEASE_MS`], renewed before each step and every
/// [`RENEW`] while idle, taken over by another front end once it expired.
pub const LEASE: &str = "bridge";

/// How long the bridge's lease lasts unrenewed (the exchange's lease duration). A step takes
/// far less (at most 1000 records), so a holder never steps on an expired lease unless it
/// stalls for this long.
pub const LEASE_MS: u64 = sighthub_exchange::lease::LEASE_MS;

/// How often an idle holder renews, and a front end without the lease asks for it.
pub const RENEW: Duration = sighthub_exchange::lease::RENEW;

/// The sighting store as the engine of the bridge's lease.
struct SightingLeases(Arc<dyn SightingStore>);

impl LeaseEngine for SightingLeases {
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, String> {
        self.0
            .lease(name, holder, ttl_ms)
            .map_err(|e| e.to_string())
    }
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn read_u64(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.get(..8).and_then(|s| s.try_into().ok()))
        .map_or(0, u64::from_be_bytes)
}

fn write_op<'a>(ns: &'a Namespace, s: &'a Sighting) -> WriteOp<'a> {
    WriteOp {
        namespace: ns,
        value: &s.value,
        timestamp: s.timestamp,
        ttl: (s.ttl > 0).then_some(s.ttl),
        tags: (!s.tags.is_empty()).then_some(s.tags.as_str()),
    }
}

/// The event's tags that fit the store's per-write limits: an over-long tag (a long
/// `classification.identifier`) is dropped rather than refusing the sighting, so that an
/// event is always counted.
fn fit_tags(tags: &str, limits: &Limits) -> String {
    limits.fit_tags(tags.split(','))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Feeder {
    /// A feeder over these stores.
    pub fn new(
        exchange: Arc<ExchangeStore>,
        store: Arc<dyn SightingStore>,
        cfg: BridgeConfig,
    ) -> Self {
        Self {
            reader: Reader::whole_log(Arc::clone(&exchange)),
            exchange,
            store,
            cfg,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// This front end's id for the bridge's lease (a new random one by default). Give the
    /// same id across restarts on one data directory, so a restarted front end takes its own
    /// lease back at once instead of waiting for it to expire.
    pub fn with_holder(mut self, holder: String) -> Self {
        self.holder = holder;
        self
    }

    /// Last applied log seq.
    pub fn position(&self) -> Result<u64, Error> {
        Ok(read_u64(self.store.marker(POSITION)?))
    }

    /// Highest durable seq of the log (the target of a catch-up).
    pub fn log_end(&self) -> u64 {
        self.exchange.durable()
    }

    fn withdrawn_key(&self, generation: u64, uuid: &uuid::Uuid) -> Vec<u8> {
        let mut k = b"bridge/withdrawn/".to_vec();
        k.extend_from_slice(&be(generation));
        k.extend_from_slice(uuid.as_bytes());
        k
    }

    /// Sightings of the message stored at `seq`, if it was applied before `before`.
    fn applied_sightings(&self, uuid: &uuid::Uuid, before: u64) -> Result<Vec<Sighting>, Error> {
        let Some((seq, Some(stored))) = self.exchange.lookup(uuid)? else {
            return Ok(Vec::new());
        };
        if seq >= before {
            return Ok(Vec::new());
        }
        let Ok(entry) = stored.entry() else {
            return Ok(Vec::new());
        };
        Ok(match Message::from_slice(entry.json) {
            Ok(m) => mapping::sightings(&m, entry.accepted_at as i64, &self.cfg),
            Err(_) => Vec::new(),
        })
    }

    /// The counters of what could not be applied.
    pub fn counters(&self) -> Result<Counters, Error> {
        Ok(Counters {
            skipped: read_u64(self.store.marker(SKIPPED)?),
            refused: read_u64(self.store.marker(REFUSED)?),
        })
    }

    /// Applies up to `max` log records after the position, in one atomic batch with the new
    /// position. Blocking (run it on a blocking thread). The returned ticket becomes durable
    /// with the next group commit of the sighting store.
    ///
    /// A sighting the store would refuse ([`WriteOp::check`], a namespace that does not
    /// parse) is left out, counted ([`REFUSED`]) and logged once with its record's seq and
    /// uuid; the rest of the record is applied.
    pub fn step(&self, max: usize) -> Result<(Step, Ticket), Error> {
        let position = self.position()?;
        let generation = read_u64(self.store.marker(GENERATION)?);
        let mut records: Vec<(u64, i64, Vec<u8>)> = Vec::new();
        let end = self.reader.page(position, max, |seq, entry| {
            if entry.kind == EntryKind::Message {
                records.push((seq, entry.accepted_at as i64, entry.json.to_vec()));
            }
            ControlFlow::Continue(())
        })?;
        let mut step = Step {
            position: end.last.max(position),
            at_end: end.at_end,
            ..Step::default()
        };
        step.records = records.len();
        let mut sightings: Vec<(Namespace, Sighting)> = Vec::new();
        let mut retract = Vec::new();
        let mut withdrawn_markers = Vec::new();
        for (seq, arrived, json) in &records {
            let Ok(msg) = Message::from_slice(json) else {
                continue;
            };
            for mut s in mapping::sightings(&msg, *arrived, &self.cfg) {
                s.tags = fit_tags(&s.tags, self.store.limits());
                let checked = Namespace::parse(&s.namespace)
                    .map_err(|e| e.to_string())
                    .and_then(|ns| {
                        let op = write_op(&ns, &s);
                        op.check(self.store.limits()).map_err(|e| e.to_string())?;
                        Ok(ns)
                    });
                match checked {
                    Ok(ns) => sightings.push((ns, s)),
                    Err(error) => {
                        step.refused += 1;
                        tracing::warn!(seq, uuid = ?msg.uuid(), field = %s.field, %error,
                            "bridge: sighting refused, the rest of the message is applied");
                    }
                }
            }
            // Only what takes effect by the one rule (sighthub_iep04::authority): the
            // message's own links, on a message of its own organisation.
            for claim in self.exchange.effects(&msg)? {
                let target = claim.target;
                let key = self.withdrawn_key(generation, &target);
                if self.store.marker(&key)?.is_some() || withdrawn_markers.contains(&key) {
                    continue;
                }
                retract.extend(self.applied_sightings(&target, *seq)?);
                withdrawn_markers.push(key);
            }
        }
        for (ns, s) in &sightings {
            self.ensure_format(ns, &s.field);
        }
        let ops: Vec<WriteOp<'_>> = sightings.iter().map(|(ns, s)| write_op(ns, s)).collect();
        let retract_ns: Vec<(Namespace, &str)> = retract
            .iter()
            .filter(|s| sighthub_store::value_fits(&s.value))
            .filter_map(|s| {
                Namespace::parse(&s.namespace)
                    .ok()
                    .map(|n| (n, s.value.as_str()))
            })
            .collect();
        let retractions: Vec<(&Namespace, &str)> =
            retract_ns.iter().map(|(n, v)| (n, *v)).collect();
        if step.position == position && ops.is_empty() && retractions.is_empty() {
            return Ok((step, Ticket::NONE));
        }
        let pos_bytes = be(step.position);
        let mut markers: Vec<(&[u8], &[u8])> = vec![(POSITION, &pos_bytes)];
        let refused_total;
        if step.refused > 0 {
            refused_total = be(read_u64(self.store.marker(REFUSED)?) + step.refused as u64);
            markers.push((REFUSED, &refused_total));
        }
        markers.extend(withdrawn_markers.iter().map(|k| (k.as_slice(), &b"1"[..])));
        let (outcomes, ticket) =
            self.store
                .apply_marked(&ops, &retractions, &markers, unix_now())?;
        step.sightings = outcomes.iter().filter(|o| o.is_ok()).count();
        step.retracted = retractions.len();
        Ok((step, ticket))
    }

    /// [`Feeder::step`], but a record that cannot be applied never stops the feeder: when a
    /// step fails (or panics) for another reason than the storage itself failing, the
    /// records are applied one at a time and the one that fails is skipped: the position
    /// moves past it, [`SKIPPED`] counts it, and it is logged once with its seq and uuid.
    /// A storage failure is returned (retry later; nothing is skipped). Blocking. The feeder
    /// task and `rebuild-sightings` both go through here.
    pub fn step_or_skip(&self, max: usize) -> Result<(Step, Ticket), Error> {
        let first = match self.guarded_step(max) {
            Err(e) if !e.is_storage_failure() => e,
            done => return done,
        };
        if max > 1 {
            tracing::warn!(error = %first, "bridge: a batch failed; applying its records one at a time");
            match self.guarded_step(1) {
                Err(e) if !e.is_storage_failure() => {}
                done => return done,
            }
        }
        self.skip_next()
    }

    fn guarded_step(&self, max: usize) -> Result<(Step, Ticket), Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(max))).unwrap_or_else(
            |p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::Panicked(what))
            },
        )
    }

    /// Moves the position past the next log record without applying it, and counts it.
    fn skip_next(&self) -> Result<(Step, Ticket), Error> {
        let position = self.position()?;
        let mut skipped = None;
        let end = self.reader.page(position, 1, |seq, entry| {
            skipped = Some((seq, entry.uuid));
            ControlFlow::Break(Cut::After)
        })?;
        let Some((seq, uuid)) = skipped else {
            return Ok((
                Step {
                    position,
                    at_end: end.at_end,
                    ..Step::default()
                },
                Ticket::NONE,
            ));
        };
        let total = read_u64(self.store.marker(SKIPPED)?) + 1;
        tracing::error!(seq, %uuid, skipped_total = total,
            "bridge: log record cannot be applied; skipped (its sightings are not recorded)");
        let (pos, count) = (be(seq), be(total));
        let (_, ticket) = self.store.apply_marked(
            &[],
            &[],
            &[(POSITION, &pos), (SKIPPED, &count)],
            unix_now(),
        )?;
        Ok((
            Step {
                records: 1,
                skipped: 1,
                position: seq,
                at_end: end.at_end,
                ..Step::default()
            },
            ticket,
        ))
    }

    fn ensure_format(&self, ns: &Namespace, field: &str) {
        let Some(f) = self
            .cfg
            .value_formats
            .get(field)
            .and_then(|f| ValueFormat::parse(f))
        else {
            return;
        };
        if self.store.format(ns) != f {
            if let Err(e) = self.store.set_format(ns, f) {
                tracing::warn!(namespace = %ns, error = %e, "bridge: cannot set the value format");
            }
        }
    }

    /// Deletes every namespace under the bridge's root and starts a new generation at
    /// position 0, so the next steps replay the whole log. Blocking.
    pub fn reset(&self) -> Result<usize, Error> {
        let now = unix_now();
        let mut deleted = 0;
        if let Some(root) = self.cfg.root() {
            for info in self.store.namespaces()? {
                if !info.namespace.is_internal() && info.namespace.is_within(root) {
                    let (done, t) = self.store.delete(&info.namespace, now)?;
                    self.store.durability().wait_blocking(t)?;
                    deleted += usize::from(done);
                }
            }
        }
        let next_gen = read_u64(self.store.marker(GENERATION)?) + 1;
        let (gen, zero) = (be(next_gen), be(0));
        let (_, t) =
            self.store
                .apply_marked(&[], &[], &[(POSITION, &zero), (GENERATION, &gen)], now)?;
        self.store.durability().wait_blocking(t)?;
        Ok(deleted)
    }

    /// Follows the log until `shutdown` flips to true, then gives the lease back.
    pub async fn run(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut lease = Lease::new(
            Arc::new(SightingLeases(Arc::clone(&self.store))),
            LEASE,
            self.holder.clone(),
        );
        Arc::clone(&self).run_leased(shutdown, &mut lease).await;
        lease.release().await;
    }

    /// [`Feeder::run`] under `lease`.
    async fn run_leased(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        lease: &mut Lease,
    ) {
        let mut waiter = self.reader.clone();
        loop {
            // Only the lease's holder steps: several front ends on one shared store apply
            // each record once. The position is read from the store at each step.
            if lease.hold(&mut shutdown).await.is_none() {
                return;
            }
            if !lease.held() {
                continue;
            }
            let me = Arc::clone(&self);
            let result = tokio::task::spawn_blocking(move || me.step_or_skip(1000)).await;
            let at_end = match result {
                Ok(Ok((step, ticket))) => {
                    if let Err(e) = self.store.durability().wait(ticket).await {
                        tracing::warn!(error = %e, "bridge: sightings not durable");
                    }
                    step.at_end.then_some(step.position)
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "bridge: step failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
                Err(e) => {
                    // step_or_skip catches panics: this is a cancelled runtime (shutdown).
                    tracing::warn!(error = %e, "bridge: feeder task ended");
                    return;
                }
            };
            if let Some(position) = at_end {
                tokio::select! {
                    more = waiter.wait_past(position) => if !more { return },
                    _ = shutdown.changed() => {},
                    // Renew the lease while idle.
                    _ = tokio::time::sleep(lease.idle()) => {},
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sighthub_exchange::{Feed, Grants, StoreOptions as ExchangeOptions};
    use sighthub_iep04::Receiver;
    use sighthub_store::{
        FjallStore, ItemError, ListPage, NamespaceInfo, ReadOutcome, StoreOptions, View,
        WriteOutcome,
    };

    const ORG: uuid::Uuid = uuid::Uuid::from_u128(0xA);
    /// A value whose sighting makes [`Panicky`] panic, as the storage engine did on
    /// over-long keys.
    const BOOM: &str = "boom.example";

    #[test]
    fn tags_that_do_not_fit_are_dropped_not_the_sighting() {
        let limits = Limits {
            max_tags_per_item: 2,
            max_tag_len: 8,
            ..Limits::default()
        };
        let long = format!("type:{}", "x".repeat(20));
        assert_eq!(
            fit_tags(&format!("tlp:red,{long},a:b,c:d"), &limits),
            "tlp:red,a:b"
        );
        assert_eq!(fit_tags("", &limits), "");
    }

    /// The fjall store, but `apply_marked` panics when asked to write [`BOOM`].
    struct Panicky(FjallStore);

    type Outcomes = Vec<std::result::Result<WriteOutcome, ItemError>>;

    impl SightingStore for Panicky {
        fn write(
            &self,
            ops: &[WriteOp<'_>],
            now: i64,
        ) -> sighthub_store::Result<(Outcomes, Ticket)> {
            self.0.write(ops, now)
        }
        fn shadow(&self, reads: &[(&Namespace, &str)], now: i64) -> sighthub_store::Result<()> {
            self.0.shadow(reads, now)
        }
        fn read(
            &self,
            ns: &Namespace,
            value: &str,
            now: i64,
        ) -> sighthub_store::Result<ReadOutcome> {
            self.0.read(ns, value, now)
        }
        fn list(
            &self,
            ns: &Namespace,
            after: Option<&str>,
            limit: usize,
            max_bytes: usize,
            now: i64,
        ) -> sighthub_store::Result<Option<ListPage>> {
            self.0.list(ns, after, limit, max_bytes, now)
        }
        fn limits(&self) -> &Limits {
            self.0.limits()
        }
        fn count(&self, ns: &Namespace, now: i64) -> sighthub_store::Result<Option<u64>> {
            self.0.count(ns, now)
        }
        fn delete(&self, ns: &Namespace, now: i64) -> sighthub_store::Result<(bool, Ticket)> {
            self.0.delete(ns, now)
        }
        fn namespaces(&self) -> sighthub_store::Result<Vec<NamespaceInfo>> {
            self.0.namespaces()
        }
        fn format(&self, ns: &Namespace) -> ValueFormat {
            self.0.format(ns)
        }
        fn set_format(&self, ns: &Namespace, f: ValueFormat) -> sighthub_store::Result<Ticket> {
            self.0.set_format(ns, f)
        }
        fn set_digest_lookups(&self, ns: &Namespace, on: bool) {
            self.0.set_digest_lookups(ns, on)
        }
        fn sweep(&self, now: i64) -> sighthub_store::Result<usize> {
            self.0.sweep(now)
        }
        fn apply_marked(
            &self,
            writes: &[WriteOp<'_>],
            retractions: &[(&Namespace, &str)],
            markers: &[(&[u8], &[u8])],
            now: i64,
        ) -> sighthub_store::Result<(Outcomes, Ticket)> {
            assert!(
                !writes.iter().any(|w| w.value == BOOM),
                "engine refuses {BOOM}"
            );
            self.0.apply_marked(writes, retractions, markers, now)
        }
        fn marker(&self, key: &[u8]) -> sighthub_store::Result<Option<Vec<u8>>> {
            self.0.marker(key)
        }
        fn holders(&self, value: &str, now: i64) -> sighthub_store::Result<Vec<(Namespace, View)>> {
            self.0.holders(value, now)
        }
        fn durability(&self) -> sighthub_store::Durability<'_> {
            self.0.durability()
        }
    }

    fn publish(ex: &ExchangeStore, events: &[String]) {
        let grants = Grants {
            org: ORG,
            publish: vec![Feed::All],
            read: Vec::new(),
            tlp_max: sighthub_iep04::Tlp::Red,
            relay: false,
            admin: false,
            bare_tags: Vec::new(),
        };
        let receiver = Receiver::new(ORG, Some(ex.instance()));
        let items = events
            .iter()
            .map(|e| {
                let d = receiver.decode(e.as_bytes()).expect("decodes");
                sighthub_exchange::ingest::prepare(d, &grants, ex.instance()).expect("prepared")
            })
            .collect();
        let a = ex
            .append(
                items,
                1_700_000_000,
                sighthub_exchange::OnRefusal::RefuseRequest,
            )
            .expect("append");
        ex.group_commit().wait_blocking(a.ticket).expect("durable");
        ex.mark_durable(a.high);
    }

    fn event(field: &str, value: &str) -> String {
        serde_json::json!({field: value, "feed.name": "f", "classification.taxonomy": "other",
                           "time.source": "2021-03-01T12:00:00+00:00"})
        .to_string()
    }

    #[test]
    fn a_record_that_cannot_be_applied_is_skipped_counted_and_the_rest_goes_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let ex = Arc::new(
            ExchangeStore::open(
                &dir.path().join("ex"),
                ExchangeOptions::default(),
                Some(ORG),
                None,
            )
            .expect("exchange"),
        );
        let store: Arc<dyn SightingStore> = Arc::new(Panicky(
            FjallStore::open(&dir.path().join("db"), StoreOptions::default()).expect("store"),
        ));
        let long_url = format!("http://example.com/{}", "a".repeat(70_000));
        publish(
            &ex,
            &[
                event("source.ip", "192.0.2.1"),
                event("source.fqdn", BOOM),
                event("source.url", &long_url),
                event("source.ip", "192.0.2.2"),
            ],
        );
        let feeder = Feeder::new(Arc::clone(&ex), Arc::clone(&store), BridgeConfig::default());
        let (mut skipped, mut refused) = (0, 0);
        for _ in 0..10 {
            let (step, ticket) = feeder.step_or_skip(1000).expect("never an error");
            store.durability().wait_blocking(ticket).expect("durable");
            skipped += step.skipped;
            refused += step.refused;
            if step.at_end && feeder.position().expect("pos") == 4 {
                break;
            }
        }
        assert_eq!(feeder.position().expect("pos"), 4, "went past every record");
        assert_eq!((skipped, refused), (1, 1));
        assert_eq!(
            feeder.counters().expect("counters"),
            Counters {
                skipped: 1,
                refused: 1
            }
        );
        let ns = Namespace::parse(&format!("iep04/{ORG}/f/source.ip")).expect("ns");
        for ip in ["192.0.2.1", "192.0.2.2"] {
            assert!(
                matches!(store.read(&ns, ip, 0).expect("read"), ReadOutcome::Found(_)),
                "{ip} recorded"
            );
        }
    }

    /// The running feeder follows the log through the exchange's reader: it applies what is
    /// durable, waits at the end, wakes for what becomes durable next, and stops on request.
    #[tokio::test]
    async fn the_running_feeder_waits_for_the_durable_end_and_stops() {
        let dir = tempfile::tempdir().expect("tmp");
        let ex = Arc::new(
            ExchangeStore::open(
                &dir.path().join("ex"),
                ExchangeOptions::default(),
                Some(ORG),
                None,
            )
            .expect("exchange"),
        );
        let store: Arc<dyn SightingStore> = Arc::new(
            FjallStore::open(&dir.path().join("db"), StoreOptions::default()).expect("store"),
        );
        publish(&ex, &[event("source.ip", "192.0.2.1")]);
        let feeder = Arc::new(Feeder::new(
            Arc::clone(&ex),
            Arc::clone(&store),
            BridgeConfig::default(),
        ));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(Arc::clone(&feeder).run(shutdown));
        let reaches = |n: u64| {
            let feeder = Arc::clone(&feeder);
            async move {
                for _ in 0..500 {
                    if feeder.position().expect("pos") == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(reaches(1).await, "caught up");
        // At the end now: what becomes durable next wakes it.
        publish(&ex, &[event("source.ip", "192.0.2.2")]);
        assert!(reaches(2).await, "woke for the new message");
        let ns = Namespace::parse(&format!("iep04/{ORG}/f/source.ip")).expect("ns");
        assert!(matches!(
            store.read(&ns, "192.0.2.2", 0).expect("read"),
            ReadOutcome::Found(_)
        ));
        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("task");
    }
}
