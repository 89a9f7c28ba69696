//! One task per peer: read the local log after the peer's cursor, keep what the peer may
//! have, send it as one ND-JSON request, and move the cursor once the peer answered.
//!
//! The reading is the exchange's ([`Follower`]: scan, filter by the peer's read grants,
//! page, wait for the durable end), and so is the cursor: the named consumer
//! `relay/push/<peer>` of the local organisation (a name with `/`, out of reach of the
//! `/iep04/consumers/{name}` routes), moved durably once the peer answered. The state file
//! `<data_dir>/relay/push-<peer>.json` keeps the counters ([`PeerState`]) and the position
//! they cover, written before the consumer moves; after a crash between the two the consumer
//! is moved up to it at start, so an answered batch is neither resent nor left uncounted.
//! **Upgrade:** a state file written before still holds the cursor; on the
//! first start without the consumer, the consumer is created there (same log epoch only:
//! a recreated log starts over), so nothing is sent again and nothing is skipped.
//!
//! A log entry goes to the peer unless:
//! - the peer's instance is on its `sighthub:path` (it crossed that instance, or came from it);
//! - it came from an instance configured with `forward_received = false`;
//! - its path already holds `max_hops` instances;
//! - the peer's `feeds` / `tlp_max` exclude it.
//!
//! Skipped entries advance the cursor too (they are counted in `skipped`). A failed request
//! leaves the cursor where it was and is retried with backoff; the peer answers `duplicate`
//! for anything it got by another path in the meantime.
//!
//! A **refusal** (a non-retryable 4xx, [`Error::is_refusal`]: e.g. another organisation's
//! withdrawal, accepted here because its target was unknown here) must not wedge the link:
//! the failed batch is retried in halves down to single messages, the message refused on
//! its own is recorded in the state file (`refused`, `last_refused_seq`/`_uuid`/`_reason`),
//! logged once and skipped, and everything after it is delivered. The peer's answers are
//! read within `max_answer_bytes` and checked (counts that add up, without overflow).
//!
//! **One front end at a time.** On an exchange several front ends share, the link runs where
//! its lease (`relay/push/<peer>`, [`sighthub_exchange::lease`]) is held: renewed before each
//! batch, checked again right before the batch is sent; after taking it the task reads the
//! cursor again (another front end may have moved it). The counters stay per front end (each
//! one's state file counts what it sent). A takeover sends at most the one batch the previous
//! holder sent without moving the cursor, and the peer answers it `duplicate`.

use sighthub_exchange::lease::Lease;
use sighthub_exchange::record::EntryKind;
use sighthub_exchange::{Cut, Follower, Grants, Reader, StartAt};
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::PeerConfig;
use crate::error::{Error, Result};
use crate::health::Health;
use crate::path::Routed;
use crate::state::{self, PeerState};
use crate::{sleep_or_stop, Backoff, Settings, Shared};

/// One batch read from the local log.
#[derive(Debug, Default)]
pub struct Batch {
    /// ND-JSON body (one envelope per line, path extended with this instance).
    pub body: Vec<u8>,
    /// Messages in it.
    pub count: u64,
    /// Entries examined but not sent.
    pub skipped: u64,
    /// Cursor after this batch.
    pub last: u64,
    /// Sequence number and uuid of the first message in it (the refused one when a batch
    /// of one is refused).
    pub first: Option<(u64, Uuid)>,
    /// Reached the durable end of the log.
    pub at_end: bool,
}

/// Why an entry is not sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The peer is on the path (it has it, or it came from there).
    OnPath,
    /// It came from an instance whose messages are not forwarded.
    NotForwarded,
    /// An earlier sender delivers it to the peer (`sighthub:covered`).
    Covered,
    /// The hop limit.
    Hops,
    /// Not in the peer's feeds or above its TLP.
    Filtered,
    /// Not a readable envelope.
    Unreadable,
}

/// The routing decision for one entry, `Ok` with the line to send. `others`: the peers of
/// this instance that get this entry from it (announced as covered).
pub(crate) fn route(
    entry_json: &[u8],
    me: Uuid,
    peer: Uuid,
    settings: &Settings,
    others: &[Uuid],
) -> std::result::Result<Vec<u8>, Skip> {
    let r = Routed::parse(entry_json).ok_or(Skip::Unreadable)?;
    if r.crossed(&peer) || peer == me {
        return Err(Skip::OnPath);
    }
    if settings.covered && r.covers(&peer) {
        return Err(Skip::Covered);
    }
    if r.came_from()
        .is_some_and(|from| settings.no_forward.contains(&from))
    {
        return Err(Skip::NotForwarded);
    }
    if r.path.len() >= settings.max_hops {
        return Err(Skip::Hops);
    }
    if !settings.covered {
        return Ok(r.with_hop(me));
    }
    let mut covered = r.covered.clone();
    for q in others {
        if *q != me && !r.crossed(q) && !covered.contains(q) {
            covered.push(*q);
        }
    }
    Ok(r.with_hop_covering(me, &covered))
}

/// Reads the next batch for `peer` after `after` through `reader` (the peer's read grants)
/// (blocking: runs a log scan).
pub(crate) fn next_batch(
    sh: &Shared,
    settings: &Settings,
    reader: &Reader,
    peer: Uuid,
    after: u64,
    limit: usize,
) -> Result<Batch> {
    let me = sh.store.instance();
    let mut b = Batch::default();
    let known: Vec<(Uuid, Grants)> = if settings.covered {
        let peers = sh
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.values().cloned().collect()
    } else {
        Vec::new()
    };
    let mut others = Vec::with_capacity(known.len());
    let end = reader.page(after, limit.saturating_mul(8).max(64), |seq, e| {
        let line = if matches!(e.kind, EntryKind::Message | EntryKind::TagUpdate) {
            others.clear();
            others.extend(known.iter().filter_map(|(q, g)| {
                g.may_read(e.format_type, &e.tags, e.tlp, sh.local.default_tlp)
                    .then_some(*q)
            }));
            route(e.json, me, peer, settings, &others)
        } else {
            Err(Skip::Filtered)
        };
        match line {
            // The byte budget: this line waits for the next batch.
            Ok(line)
                if b.count > 0
                    && b.body.len().saturating_add(line.len()) >= settings.max_batch_bytes =>
            {
                return ControlFlow::Break(Cut::Before);
            }
            Ok(line) => {
                b.body.extend_from_slice(&line);
                b.body.push(b'\n');
                b.count += 1;
                if b.first.is_none() {
                    b.first = Some((seq, e.uuid));
                }
            }
            Err(_) => b.skipped += 1,
        }
        if b.count as usize >= limit {
            ControlFlow::Break(Cut::After)
        } else {
            ControlFlow::Continue(())
        }
    })?;
    // Entries the peer's grants hide are skipped too.
    b.skipped = b.skipped.saturating_add(end.hidden);
    b.last = end.last;
    b.at_end = end.at_end;
    if end.truncated {
        tracing::warn!(
            after,
            "relay: log entries were dropped by retention before a peer got them"
        );
    }
    Ok(b)
}

/// The peer's answer to a batch: (accepted, duplicate, errors).
async fn send(
    http: &reqwest::Client,
    peer: &PeerConfig,
    body: Vec<u8>,
    count: u64,
    settings: &Settings,
) -> Result<(u64, u64, u64)> {
    let mut url = crate::endpoint(&peer.url, &["iep04", "messages"])?;
    url.set_query(Some("results=errors"));
    let req = http
        .post(url)
        .header("authorization", &peer.key)
        .header("content-type", "application/x-ndjson")
        .timeout(settings.timeout)
        .body(body);
    let v = crate::call(req, &peer.name, true, settings.max_answer_bytes).await?;
    answer_counts(&v, count).ok_or_else(|| Error::Answer {
        peer: peer.name.clone(),
        reason: format!("{count} messages sent, answer {v:.300}"),
    })
}

/// The counts of a publish answer for `count` messages: (accepted, duplicate, errors), each
/// present and adding up to `count` without overflow; `None` otherwise (`pub` for the fuzz
/// targets).
pub fn answer_counts(v: &serde_json::Value, count: u64) -> Option<(u64, u64, u64)> {
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let (a, d, e) = (n("accepted")?, n("duplicate")?, n("errors")?);
    (a.checked_add(d)?.checked_add(e)? == count).then_some((a, d, e))
}

/// The named consumer that holds the cursor of the push to `peer` (of the local
/// organisation).
pub fn consumer_name(peer: &str) -> String {
    format!("relay/push/{peer}")
}

/// Where a push cursor that does not exist yet starts: at the cursor of a state file
/// written before the cursor moved into the exchange (the upgrade path), if it belongs to
/// this log (`epoch`), else at the beginning.
pub(crate) fn carried_over(st: &PeerState, epoch: u64, file: &std::path::Path) -> StartAt {
    if st.cursor == 0 {
        return StartAt::Beginning;
    }
    if st.epoch != epoch {
        tracing::warn!(file = %file.display(), "relay: the local log was recreated; the peer gets it from the start");
        return StartAt::Beginning;
    }
    StartAt::After(st.cursor)
}

/// The cursor of the push to `peer`, reading what `grants` allow: the consumer
/// [`consumer_name`], created at the state file's cursor when it does not exist yet (see the
/// module docs), and moved up to the state file's cursor when it is behind it (a crash after
/// the counters were written and before the consumer moved: the counters already count that
/// batch, and the peer answered it).
pub(crate) async fn open_cursor(
    sh: &Shared,
    peer: &str,
    grants: Grants,
    st: &PeerState,
    file: &std::path::Path,
) -> Result<Follower> {
    let start = carried_over(st, sh.store.epoch(), file);
    let cursor = Follower::open(
        Arc::clone(&sh.store),
        sh.store.org(),
        consumer_name(peer),
        grants,
        sh.local.default_tlp,
        start,
    )
    .await?;
    if st.epoch == sh.store.epoch() && st.cursor > cursor.position()? {
        cursor.advance(st.cursor.min(sh.store.durable())).await?;
    }
    Ok(cursor)
}

/// Writes the counters with the position they cover, then moves the cursor there: the
/// counters file is the write-ahead of the consumer, so a crash between the two is repaired
/// at start ([`open_cursor`]) and the counters always agree with the cursor. A failure is
/// logged, and the cursor kept in memory: a crash before the next successful move resends
/// one batch.
async fn save(cursor: &Follower, to: u64, path: &std::path::Path, st: &mut PeerState) {
    st.cursor = to;
    st.epoch = cursor.store().epoch();
    if let Err(e) = state::store(path, st) {
        tracing::warn!(error = %e, "relay: counters not persisted");
    }
    if let Err(e) = cursor.advance(to).await {
        tracing::warn!(error = %e, "relay: cursor not persisted");
    }
}

/// A running peer in [`Shared::peers`] while its task lives.
struct Registration {
    sh: Arc<Shared>,
    name: String,
}

impl Registration {
    fn enter(&self, instance: Uuid, grants: &Grants) {
        let mut peers = self
            .sh
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.insert(self.name.clone(), (instance, grants.clone()));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut peers = self
            .sh
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.remove(&self.name);
    }
}

/// The task of one peer; returns when `stop` turns true (after the request in flight),
/// having given its lease back.
pub(crate) async fn run(
    sh: Arc<Shared>,
    settings: Arc<Settings>,
    peer: PeerConfig,
    health: Health,
    stop: watch::Receiver<bool>,
) {
    let mut lease = sh.lease(format!("push:{}", peer.name), consumer_name(&peer.name));
    run_leased(sh, settings, peer, health, stop, &mut lease).await;
    lease.release().await;
}

/// [`run`] under `lease`.
async fn run_leased(
    sh: Arc<Shared>,
    settings: Arc<Settings>,
    peer: PeerConfig,
    mut health: Health,
    mut stop: watch::Receiver<bool>,
    lease: &mut Lease,
) {
    let file = state::file(&sh.dir, "push", &peer.name);
    let mut st = match state::load(&file) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(peer = %peer.name, error = %e, "relay: peer not started");
            return;
        }
    };
    let Some(http) = crate::client_when_ready(
        &settings,
        peer.trust(),
        &mut health,
        &mut st,
        &file,
        &mut stop,
    )
    .await
    else {
        return;
    };
    let grants = peer.grants(sh.store.org());
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    let (mut cursor, mut at) = loop {
        let opened = match open_cursor(&sh, &peer.name, grants.clone(), &st, &file).await {
            Ok(c) => c.position().map(|at| (c, at)).map_err(Error::from),
            Err(e) => Err(e),
        };
        match opened {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(peer = %peer.name, error = %e, "relay: cursor unavailable, retrying");
                if !sleep_or_stop(backoff.next(), &mut stop).await {
                    return;
                }
            }
        }
    };
    let mut instance = peer.instance;
    let registration = Registration {
        sh: Arc::clone(&sh),
        name: peer.name.clone(),
    };
    if let Some(i) = instance {
        registration.enter(i, &grants);
    }
    let mut limit = settings.batch;
    // While a refused batch is searched for its refused message: the end of that batch.
    let mut isolating: Option<u64> = None;
    tracing::info!(peer = %peer.name, cursor = at, "relay: pushing");
    loop {
        if *stop.borrow() {
            return;
        }
        match lease.hold(&mut stop).await {
            None => return,
            Some(true) => {}
            Some(false) => {
                // Taken (again): the link goes on from its shared cursor, wherever another
                // front end left it.
                match cursor.position() {
                    Ok(p) => at = p,
                    Err(e) => {
                        tracing::warn!(peer = %peer.name, error = %e, "relay: cursor unavailable, retrying");
                        if !sleep_or_stop(backoff.next(), &mut stop).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        }
        let peer_instance = match instance {
            Some(i) => i,
            None => match crate::fetch_instance(
                &http,
                &peer.url,
                &peer.key,
                &peer.name,
                settings.timeout,
            )
            .await
            {
                Ok(i) => {
                    instance = Some(i);
                    registration.enter(i, &grants);
                    health.ok(&mut st, &file);
                    i
                }
                Err(e) => {
                    health.failed(&e, "peer unreachable", &mut st, &file);
                    if !sleep_or_stop(backoff.next(), &mut stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let (s, set, r, after) = (
            Arc::clone(&sh),
            Arc::clone(&settings),
            cursor.reader().clone(),
            at,
        );
        let batch = tokio::task::spawn_blocking(move || {
            next_batch(&s, &set, &r, peer_instance, after, limit)
        })
        .await;
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(peer = %peer.name, error = %e, "relay: reading the local log failed");
                if !sleep_or_stop(backoff.next(), &mut stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(peer = %peer.name, error = %e, "relay: log reader panicked");
                return;
            }
        };
        if batch.count == 0 {
            if batch.last > at {
                at = batch.last;
                st.skipped = st.skipped.saturating_add(batch.skipped);
                save(&cursor, at, &file, &mut st).await;
            }
            if batch.at_end {
                tokio::select! {
                    more = cursor.wait_past(at) => if !more { return },
                    _ = stop.changed() => {},
                    // Renew the lease while idle (and look again even without a signal).
                    _ = tokio::time::sleep(lease.idle()) => {},
                }
            }
            continue;
        }
        if !lease.held() {
            // Not renewed in time (a slow read): ask again before anything is sent.
            continue;
        }
        st.attempted = st.attempted.saturating_add(batch.count);
        match send(&http, &peer, batch.body, batch.count, &settings).await {
            Ok((a, d, e)) => {
                health.ok(&mut st, &file);
                at = batch.last;
                st.sent = st.sent.saturating_add(batch.count);
                st.accepted = st.accepted.saturating_add(a);
                st.duplicate = st.duplicate.saturating_add(d);
                st.errors = st.errors.saturating_add(e);
                st.skipped = st.skipped.saturating_add(batch.skipped);
                st.batches = st.batches.saturating_add(1);
                save(&cursor, at, &file, &mut st).await;
                if e > 0 {
                    tracing::warn!(peer = %peer.name, errors = e, "relay: the peer refused some messages as invalid");
                }
                backoff.reset();
                if isolating.is_none_or(|end| at >= end) {
                    isolating = None;
                    limit = settings.batch;
                }
            }
            Err(e) if e.is_refusal() && batch.count > 1 => {
                // Find the refused message: halves, down to single messages, until the
                // cursor is past this batch.
                isolating = Some(isolating.map_or(batch.last, |end| end.max(batch.last)));
                limit = usize::try_from(batch.count / 2).unwrap_or(1).max(1);
                tracing::info!(peer = %peer.name, error = %e, limit, "relay: the peer refused a batch; retrying in smaller batches to find the refused message");
            }
            Err(e) if e.is_refusal() => {
                let (seq, uuid) = batch.first.unwrap_or((batch.last, Uuid::nil()));
                let reason = e.to_string();
                tracing::warn!(peer = %peer.name, seq, %uuid, error = %reason, "relay: the peer refused this message for good; skipped, the link goes on");
                at = batch.last;
                st.refused = st.refused.saturating_add(1);
                st.last_refused_seq = Some(seq);
                st.last_refused_uuid = Some(uuid.to_string());
                st.last_refused_reason = Some(reason.chars().take(300).collect());
                st.skipped = st.skipped.saturating_add(batch.skipped);
                save(&cursor, at, &file, &mut st).await;
                backoff.reset();
                if isolating.is_none_or(|end| at >= end) {
                    isolating = None;
                    limit = settings.batch;
                }
            }
            Err(e) => {
                if matches!(&e, Error::Network { source, .. } if source.is_connect()) {
                    // Never reached the peer.
                    st.attempted = st.attempted.saturating_sub(batch.count);
                }
                if !e.retryable() {
                    backoff.give_up_soon();
                }
                health.failed(&e, "batch not delivered", &mut st, &file);
                if !sleep_or_stop(backoff.next(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    fn settings(no_forward: Vec<Uuid>, max_hops: usize) -> Settings {
        Settings {
            batch: 10,
            max_hops,
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            timeout: Duration::from_secs(1),
            covered: true,
            no_forward,
            max_answer_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_peer_answer_must_add_up_without_overflow() {
        let v = |a: u64, d: u64, e: u64| serde_json::json!({"accepted": a, "duplicate": d, "errors": e});
        assert_eq!(answer_counts(&v(2, 1, 0), 3), Some((2, 1, 0)));
        assert_eq!(answer_counts(&v(2, 2, 0), 3), None);
        assert_eq!(
            answer_counts(&v(u64::MAX, 2, 0), 1),
            None,
            "an overflow is refused"
        );
        assert_eq!(answer_counts(&v(u64::MAX, 1, 1), 0), None);
        assert_eq!(answer_counts(&serde_json::json!({"accepted": 1}), 1), None);
        assert_eq!(
            answer_counts(
                &serde_json::json!({"accepted": -1, "duplicate": 2, "errors": 0}),
                1
            ),
            None
        );
    }

    #[test]
    fn routing_rules() {
        let (me, peer, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let s = settings(vec![], 3);
        let local = br#"{"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c"}}"#;
        let line = route(local, me, peer, &s, &[]).expect("sent");
        assert_eq!(Routed::parse(&line).expect("obj").path, vec![me]);
        // Came from the peer, or crossed it: never back.
        let from_peer = Routed::parse(local).expect("obj").with_hop(peer);
        assert_eq!(route(&from_peer, me, peer, &s, &[]), Err(Skip::OnPath));
        let crossed = Routed::parse(&from_peer).expect("obj").with_hop(other);
        assert_eq!(route(&crossed, me, peer, &s, &[]), Err(Skip::OnPath));
        // Through another instance: on, with this instance appended.
        let via = Routed::parse(local).expect("obj").with_hop(other);
        let line = route(&via, me, peer, &s, &[]).expect("sent");
        assert_eq!(Routed::parse(&line).expect("obj").path, vec![other, me]);
        // Not forwarded from `other`; hop limit.
        assert_eq!(
            route(&via, me, peer, &settings(vec![other], 3), &[]),
            Err(Skip::NotForwarded)
        );
        assert_eq!(
            route(&via, me, peer, &settings(vec![], 1), &[]),
            Err(Skip::Hops)
        );
        assert_eq!(route(b"nope", me, peer, &s, &[]), Err(Skip::Unreadable));
        // Covered by an earlier sender: not sent; this instance announces its own peers
        // (not those on the path, and keeping what was announced before).
        let third = Uuid::new_v4();
        let cov = Routed::parse(local)
            .expect("obj")
            .with_hop_covering(other, &[peer]);
        assert_eq!(route(&cov, me, peer, &s, &[]), Err(Skip::Covered));
        let line = route(&via, me, peer, &s, &[peer, third, other]).expect("sent");
        assert_eq!(
            Routed::parse(&line).expect("obj").covered,
            vec![peer, third]
        );
        let cov = Routed::parse(local)
            .expect("obj")
            .with_hop_covering(other, &[third]);
        let line = route(&cov, me, peer, &s, &[peer]).expect("sent");
        assert_eq!(
            Routed::parse(&line).expect("obj").covered,
            vec![third, peer]
        );
        let off = Settings {
            covered: false,
            ..settings(vec![], 3)
        };
        let line = route(&via, me, peer, &off, &[third]).expect("sent");
        assert!(Routed::parse(&line).expect("obj").covered.is_empty());
    }
}
