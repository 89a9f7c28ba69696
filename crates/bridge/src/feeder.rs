//! The feeder: a consumer of the exchange log that records sightings.
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

use crate::config::BridgeConfig;
use crate::mapping::{self, Sighting};
use sighthub_exchange::record::EntryKind;
use sighthub_exchange::ExchangeStore;
use sighthub_iep04::Message;
use sighthub_store::{Namespace, SightingStore, Ticket, ValueFormat, WriteOp};
use std::sync::Arc;
use std::time::Duration;

/// Marker key of the feeder's position (last applied log seq, u64 BE).
pub const POSITION: &[u8] = b"bridge/position";
/// Marker key of the current rebuild generation (u64 BE).
pub const GENERATION: &[u8] = b"bridge/generation";

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
    /// Position after the step.
    pub position: u64,
    /// Nothing more is durable in the log for now.
    pub at_end: bool,
}

/// Feeds the exchange log into the sighting store.
pub struct Feeder {
    exchange: Arc<ExchangeStore>,
    store: Arc<dyn SightingStore>,
    cfg: BridgeConfig,
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn read_u64(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.get(..8).and_then(|s| s.try_into().ok()))
        .map_or(0, u64::from_be_bytes)
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
            exchange,
            store,
            cfg,
        }
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
        let Some((seq, Some(bytes))) = self.exchange.lookup(uuid)? else {
            return Ok(Vec::new());
        };
        if seq >= before {
            return Ok(Vec::new());
        }
        let Some(entry) = sighthub_exchange::record::decode_log(&bytes) else {
            return Ok(Vec::new());
        };
        Ok(match Message::from_slice(entry.json) {
            Ok(m) => mapping::sightings(&m, entry.accepted_at as i64, &self.cfg),
            Err(_) => Vec::new(),
        })
    }

    /// Applies up to `max` log records after the position, in one atomic batch with the new
    /// position. Blocking (run it on a blocking thread). The returned ticket becomes durable
    /// with the next group commit of the sighting store.
    pub fn step(&self, max: usize) -> Result<(Step, Ticket), Error> {
        let position = self.position()?;
        let generation = read_u64(self.store.marker(GENERATION)?);
        let mut records: Vec<(u64, i64, Vec<u8>)> = Vec::new();
        let end = self.exchange.scan(position, max, |seq, entry| {
            if entry.kind == EntryKind::Message {
                records.push((seq, entry.accepted_at as i64, entry.json.to_vec()));
            }
            std::ops::ControlFlow::Continue(())
        })?;
        let mut step = Step {
            position: end.last.max(position),
            at_end: end.at_end,
            ..Step::default()
        };
        step.records = records.len();
        let mut sightings = Vec::new();
        let mut retract = Vec::new();
        let mut withdrawn_markers = Vec::new();
        for (seq, arrived, json) in &records {
            let Ok(msg) = Message::from_slice(json) else {
                continue;
            };
            sightings.extend(mapping::sightings(&msg, *arrived, &self.cfg));
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
        let parsed: Vec<(Namespace, &Sighting)> = sightings
            .iter()
            .filter_map(|s| Namespace::parse(&s.namespace).ok().map(|n| (n, s)))
            .collect();
        for (ns, s) in &parsed {
            self.ensure_format(ns, &s.field);
        }
        let ops: Vec<WriteOp<'_>> = parsed
            .iter()
            .map(|(ns, s)| WriteOp {
                namespace: ns,
                value: &s.value,
                timestamp: s.timestamp,
                ttl: (s.ttl > 0).then_some(s.ttl),
                tags: (!s.tags.is_empty()).then_some(s.tags.as_str()),
            })
            .collect();
        let retract_ns: Vec<(Namespace, &str)> = retract
            .iter()
            .filter_map(|s| {
                Namespace::parse(&s.namespace)
                    .ok()
                    .map(|n| (n, s.value.as_str()))
            })
            .collect();
        let retractions: Vec<(&Namespace, &str)> =
            retract_ns.iter().map(|(n, v)| (n, *v)).collect();
        let pos_bytes = be(step.position);
        let mut markers: Vec<(&[u8], &[u8])> = vec![(POSITION, &pos_bytes)];
        markers.extend(withdrawn_markers.iter().map(|k| (k.as_slice(), &b"1"[..])));
        if step.position == position && ops.is_empty() && retractions.is_empty() {
            return Ok((step, Ticket::NONE));
        }
        let (outcomes, ticket) =
            self.store
                .apply_marked(&ops, &retractions, &markers, unix_now())?;
        step.sightings = outcomes.iter().filter(|o| o.is_ok()).count();
        step.retracted = retractions.len();
        Ok((step, ticket))
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
                    self.store.group_commit().wait_blocking(t)?;
                    deleted += usize::from(done);
                }
            }
        }
        let next_gen = read_u64(self.store.marker(GENERATION)?) + 1;
        let (gen, zero) = (be(next_gen), be(0));
        let (_, t) =
            self.store
                .apply_marked(&[], &[], &[(POSITION, &zero), (GENERATION, &gen)], now)?;
        self.store.group_commit().wait_blocking(t)?;
        Ok(deleted)
    }

    /// Follows the log until `shutdown` flips to true.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut durable = self.exchange.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let me = Arc::clone(&self);
            let result = tokio::task::spawn_blocking(move || me.step(1000)).await;
            let at_end = match result {
                Ok(Ok((step, ticket))) => {
                    if let Err(e) = self.store.group_commit().wait(ticket).await {
                        tracing::warn!(error = %e, "bridge: sightings not durable");
                    }
                    step.at_end
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "bridge: step failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
                Err(_) => return,
            };
            if at_end {
                tokio::select! {
                    r = durable.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => {},
                }
            }
        }
    }
}
