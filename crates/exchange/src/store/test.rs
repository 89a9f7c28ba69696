//! Tests of the store: de-duplication, sequence numbers, visibility, updates, withdrawals,
//! reopening, retention, consumers, and the size of the seen-set.

use super::*;
use crate::access::Grants;
use crate::ingest::{BodyKind, Collector};
use crate::log::{ExchangeLog, FjallLog, MemoryLog};
use std::ops::ControlFlow;

const ORG: Uuid = Uuid::from_u128(0x28bc3db3_16da_461c_b20b_b944f4058708);
const OTHER: Uuid = Uuid::from_u128(0x99);
const NOW: u64 = 1_800_000_000;

/// The engines the suite runs against.
trait Backend: ExchangeLog + Sized {
    /// A store of this engine in `dir` (the in-memory one ignores it).
    fn store(dir: &Path, opts: StoreOptions) -> ExchangeStore<Self>;
}

impl Backend for FjallLog {
    fn store(dir: &Path, opts: StoreOptions) -> ExchangeStore<Self> {
        let engine = FjallLog::open(dir, &opts).expect("open");
        ExchangeStore::with_engine(engine, opts, Some(ORG), None).expect("open")
    }
}

impl Backend for MemoryLog {
    fn store(_dir: &Path, opts: StoreOptions) -> ExchangeStore<Self> {
        ExchangeStore::in_memory(opts, Some(ORG), None).expect("open")
    }
}

impl Backend for crate::log::NatsLog {
    /// The stream of `dir` (a hash of its path: a reopened store finds its log again) on
    /// the JetStream cluster of `SIGHTHUB_TEST_NATS`.
    fn store(dir: &Path, opts: StoreOptions) -> ExchangeStore<Self> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        let servers = std::env::var("SIGHTHUB_TEST_NATS").expect("SIGHTHUB_TEST_NATS");
        let cfg = sighthub_nats::NatsConfig {
            servers: servers.split(',').map(str::to_owned).collect(),
            stream: format!("unit{:016x}{}", h.finish(), std::process::id()),
            // Below the horizons these tests configure (as the configuration requires).
            duplicate_window_seconds: 10,
            ..Default::default()
        };
        let engine = crate::log::NatsLog::open(&cfg, &opts).expect("open the JetStream engine");
        ExchangeStore::with_engine(engine, opts, Some(ORG), None).expect("open")
    }
}

/// Runs each generic test (`name::<B>()`) against every engine: `fjall::name`,
/// `memory::name`, and `nats::name` on the JetStream cluster of `SIGHTHUB_TEST_NATS` (ignored by a
/// plain `cargo test`; the clusters step of scripts/test runs them, and they fail without it).
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod fjall {
            $(#[tokio::test]
            async fn $name() {
                super::$name::<crate::log::FjallLog>().await
            })*
        }
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name::<crate::log::MemoryLog>().await
            })*
        }
        mod nats {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
            async fn $name() {
                assert!(
                    std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
                    "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)"
                );
                super::$name::<crate::log::NatsLog>().await
            })*
        }
    };
}

on_both_engines!(
    dedup_by_uuid_and_content_across_and_within_batches,
    nothing_is_visible_before_it_is_durable,
    tag_updates_merge_once_and_only_by_the_owner,
    withdrawals_are_indexed_and_checked_against_the_owner,
    retention_by_size_and_age_drops_the_oldest_and_their_links,
    consumer_cursors_only_move_forward,
    seen_uuids_expire_when_configured,
    tag_updates_stop_at_the_tag_limit_of_a_message,
    an_organisation_holds_a_bounded_number_of_consumers,
    publish_refuse_request_writes_nothing,
    publish_skip_refused_stores_the_rest,
    publish_answers_once_durable,
    a_dropped_publish_still_becomes_durable,
    publish_counts_what_it_answered_and_consumers_are_listed,
    batched_lookups_answer_like_single_ones,
);

fn open<B: Backend>(dir: &Path, opts: StoreOptions) -> ExchangeStore<B> {
    B::store(dir, opts)
}

/// Prepares the messages of a JSON body as `org` (a relaying admin when `org` is None).
fn prep_as(org: Uuid, body: &str) -> Vec<Prepared> {
    let mut g = Grants::admin(org);
    g.relay = false;
    g.admin = false;
    let mut c = Collector::new(Arc::new(g), Uuid::from_u128(5));
    c.decode_buffered(BodyKind::Json, body.as_bytes(), 1 << 20);
    assert!(c.refused.is_empty(), "{:?}", c.refused);
    assert_eq!(c.items.len(), c.len(), "all valid: {:?}", c.slots);
    c.items
}

fn prep(body: &str) -> Vec<Prepared> {
    prep_as(ORG, body)
}

fn env(uuid: Uuid, payload: &str, extra_meta: &str) -> String {
    format!(
        r#"{{"format":"intelmq","version":1,"type":"event","meta":{{"uuid":"{uuid}"{extra_meta}}},"payload":{payload}}}"#
    )
}

async fn commit<B: ExchangeLog>(
    store: &ExchangeStore<B>,
    items: Vec<Prepared>,
    now: u64,
) -> Vec<Outcome> {
    let a = store
        .append(items, now, OnRefusal::RefuseRequest)
        .expect("append");
    store.wait_durable(a.ticket, a.high).await.expect("durable");
    a.outcomes
        .into_iter()
        .map(|o| o.expect("not refused"))
        .collect()
}

fn all<B: ExchangeLog>(
    store: &ExchangeStore<B>,
    after: u64,
) -> Vec<(u64, Uuid, EntryKind, Vec<String>)> {
    let mut out = Vec::new();
    store
        .scan(after, usize::MAX, |seq, e| {
            out.push((
                seq,
                e.uuid,
                e.kind,
                e.tags.iter().map(|t| (*t).to_owned()).collect(),
            ));
            ControlFlow::Continue(())
        })
        .expect("scan");
    out
}

async fn dedup_by_uuid_and_content_across_and_within_batches<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let body = format!(
        "[{}, {}, {}, {{\"source.ip\":\"198.51.100.1\"}}, {{\"source.ip\":\"198.51.100.1\",\"__type\":\"Event\"}}]",
        env(a, r#"{"raw":"eA=="}"#, ""),
        env(b, r#"{"raw":"eQ=="}"#, ""),
        env(a, r#"{"raw":"other content, same uuid"}"#, ""),
    );
    let out = commit(&store, prep(&body), NOW).await;
    assert_eq!(
        out,
        vec![
            Outcome::Accepted { seq: 1 },
            Outcome::Accepted { seq: 2 },
            Outcome::Duplicate {
                seq: 1,
                by_content: false
            },
            Outcome::Accepted { seq: 3 },
            Outcome::Duplicate {
                seq: 3,
                by_content: true
            },
        ]
    );
    // Again, in a later request: everything is a duplicate.
    let out = commit(&store, prep(&body), NOW + 10).await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Duplicate { .. })),
        "{out:?}"
    );
    assert_eq!(store.durable(), 3);
    // Another organisation's identical bare event is its own message.
    let out = commit(
        &store,
        prep_as(OTHER, r#"{"source.ip":"198.51.100.1"}"#),
        NOW,
    )
    .await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 4 }]);
    // After the content window, the same bare event is new again.
    let out = commit(&store, prep(r#"{"source.ip":"198.51.100.1"}"#), NOW + 3600).await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 5 }]);
    let seqs: Vec<u64> = all(&store, 0).iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

async fn nothing_is_visible_before_it_is_durable<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    let a = store
        .append(
            prep(&env(Uuid::new_v4(), "{\"raw\":\"\"}", "")),
            NOW,
            OnRefusal::RefuseRequest,
        )
        .expect("append");
    assert_eq!(a.high, 1);
    // On a shared engine (JetStream) an append returns once a quorum acknowledged it: it is
    // durable, and other front ends may already show it.
    if !store.engine().shared() {
        assert!(all(&store, 0).is_empty(), "visible before its fsync");
        assert!(store.get_seq(1).expect("get").is_none());
    }
    store.wait_durable(a.ticket, a.high).await.expect("durable");
    assert_eq!(all(&store, 0).len(), 1);
    // A duplicate of a message not yet durable gets a ticket of its own.
    let u = Uuid::new_v4();
    let first = store
        .append(
            prep(&env(u, "{\"raw\":\"\"}", "")),
            NOW,
            OnRefusal::RefuseRequest,
        )
        .expect("a");
    let dup = store
        .append(
            prep(&env(u, "{\"raw\":\"\"}", "")),
            NOW,
            OnRefusal::RefuseRequest,
        )
        .expect("b");
    // (On a shared engine the original may already be durable: then no wait is needed.)
    if !store.engine().shared() {
        assert_ne!(dup.ticket, Ticket::NONE);
    }
    store
        .wait_durable(dup.ticket, dup.high)
        .await
        .expect("durable");
    assert_eq!(
        store.durable(),
        2,
        "the duplicate's wait covered the original"
    );
    store
        .wait_durable(first.ticket, first.high)
        .await
        .expect("ok");
}

async fn tag_updates_merge_once_and_only_by_the_owner<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    let u = Uuid::new_v4();
    commit(
        &store,
        prep(&env(u, r#"{"raw":"eA=="}"#, r#","tags":["a"]"#)),
        NOW,
    )
    .await;
    let update = env(u, "{}", r#","tags":["b","tlp:red"]"#);
    let out = commit(&store, prep(&update), NOW).await;
    assert_eq!(out, vec![Outcome::Updated { seq: 2, target: 1 }]);
    let rows = all(&store, 0);
    assert_eq!(rows[0].3, vec!["a", "b", "tlp:red"], "original re-tagged");
    assert_eq!(rows[1].2, EntryKind::TagUpdate);
    let rec = store.get_seq(1).expect("get").expect("there");
    assert_eq!(
        rec.entry().expect("decodes").tlp,
        Some(sighthub_iep04::Tlp::Red),
        "TLP follows the new tags"
    );
    // The same update again changes nothing: a duplicate, not delivered twice.
    let out = commit(&store, prep(&update), NOW).await;
    assert_eq!(
        out,
        vec![Outcome::Duplicate {
            seq: 1,
            by_content: false
        }]
    );
    // Another organisation may not re-tag it: refused, nothing written.
    let foreign = env(u, "{}", &format!(r#","uuid_org":"{OTHER}","tags":["c"]"#));
    let mut g = Grants::admin(OTHER);
    g.admin = false;
    g.relay = false;
    let mut c = Collector::new(Arc::new(g), Uuid::from_u128(5));
    c.decode_buffered(BodyKind::Json, foreign.as_bytes(), 1 << 20);
    let before = store.durable();
    let err = store
        .append(c.items, NOW, OnRefusal::RefuseRequest)
        .expect_err("foreign update refused");
    assert!(
        matches!(err, Error::Refused(ref r) if r[0].index == 0),
        "{err:?}"
    );
    assert_eq!(store.durable(), before);
    assert_eq!(all(&store, 0).len(), 2);
    // An empty payload for an unknown uuid is an error, and is not remembered.
    let ghost = Uuid::new_v4();
    let out = commit(&store, prep(&env(ghost, "{}", "")), NOW).await;
    assert_eq!(out, vec![Outcome::UnknownTarget]);
    let out = commit(&store, prep(&env(ghost, r#"{"raw":""}"#, "")), NOW).await;
    assert!(matches!(out[0], Outcome::Accepted { .. }));
}

async fn withdrawals_are_indexed_and_checked_against_the_owner<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    let (x, w, foreign_w) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    commit(&store, prep(&env(x, r#"{"raw":"eA=="}"#, "")), NOW).await;
    let withdrawal = env(
        w,
        "{}",
        &format!(
            r#","intelmq:links":[{{"left_side":"{w}","type":"withdraws","right_side":"{x}"}}],"intelmq:related":["{x}"]"#
        ),
    );
    let out = commit(&store, prep(&withdrawal), NOW).await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 2 }]);
    let links = store.links_to(&x, 100).expect("links");
    assert_eq!(links.len(), 2);
    assert!(links.iter().any(|l| l.source == w
        && l.rel
            == LinkRel::Typed {
                link_type: "withdraws".into(),
                target_left: false,
                from_self: true
            }));
    assert!(links.iter().any(|l| l.rel == LinkRel::Related));
    // Another organisation withdrawing x: the whole request is refused.
    let foreign = format!(
        "[{}, {}]",
        env(Uuid::new_v4(), r#"{"raw":"ok"}"#, ""),
        env(
            foreign_w,
            "{}",
            &format!(
                r#","intelmq:links":[{{"left_side":"{foreign_w}","type":"withdraws","right_side":"{x}"}}]"#
            )
        )
    );
    let err = store
        .append(prep_as(OTHER, &foreign), NOW, OnRefusal::RefuseRequest)
        .expect_err("refused");
    assert!(matches!(err, Error::Refused(ref r) if r.len() == 1 && r[0].index == 1));
    assert_eq!(store.links_to(&x, 100).expect("links").len(), 2);
    assert_eq!(
        all(&store, 0).len(),
        2,
        "nothing of the refused request written"
    );
}

#[tokio::test]
async fn reopen_keeps_sequence_dedup_epoch_and_identity() {
    let dir = tempfile::tempdir().expect("tmp");
    let u = Uuid::new_v4();
    let (epoch, instance) = {
        let store =
            ExchangeStore::open(dir.path(), StoreOptions::default(), None, None).expect("open");
        commit(&store, prep(&env(u, r#"{"raw":""}"#, "")), NOW).await;
        commit(&store, prep(r#"{"source.ip":"198.51.100.7"}"#), NOW).await;
        (store.epoch(), store.instance())
    };
    let store = ExchangeStore::open(dir.path(), StoreOptions::default(), None, None).expect("re");
    assert_eq!(store.epoch(), epoch);
    assert_eq!(store.instance(), instance, "generated identity is kept");
    assert_eq!(store.durable(), 2);
    let out = commit(&store, prep(&env(u, r#"{"raw":""}"#, "")), NOW).await;
    assert_eq!(
        out,
        vec![Outcome::Duplicate {
            seq: 1,
            by_content: false
        }]
    );
    let out = commit(&store, prep(r#"{"source.ip":"198.51.100.7"}"#), NOW + 5).await;
    assert_eq!(
        out,
        vec![Outcome::Duplicate {
            seq: 2,
            by_content: true
        }]
    );
    let out = commit(&store, prep(r#"{"source.ip":"198.51.100.8"}"#), NOW).await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 3 }]);
}

async fn retention_by_size_and_age_drops_the_oldest_and_their_links<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = retention_drops::<B>(dir.path()).await;
    let out = commit(&store, prep(&env(Uuid::new_v4(), r#"{"raw":""}"#, "")), NOW).await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 61 }]);
    assert_eq!(store.log_bytes(), all_bytes(&store));
}

/// The fjall part of the retention test: after everything was dropped, the next sequence
/// number still moves on after a reopen.
#[tokio::test]
async fn retention_then_reopen_keeps_the_sequence() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = retention_drops::<FjallLog>(dir.path()).await;
    drop(store);
    let store = open::<FjallLog>(dir.path(), StoreOptions::default());
    let out = commit(&store, prep(&env(Uuid::new_v4(), r#"{"raw":""}"#, "")), NOW).await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 61 }]);
    assert_eq!(store.log_bytes(), all_bytes(&store));
}

/// 60 linked messages, swept by size, then by age, then all.
async fn retention_drops<B: Backend>(dir: &Path) -> ExchangeStore<B> {
    let opts = StoreOptions {
        log_max_bytes: 10_000,
        log_max_age: 100,
        ..StoreOptions::default()
    };
    let store = open::<B>(dir, opts);
    let target = Uuid::new_v4();
    let mut first = None;
    for i in 0..60u64 {
        let u = Uuid::new_v4();
        first.get_or_insert(u);
        let body = env(
            u,
            &format!(r#"{{"raw":"{}"}}"#, "x".repeat(200)),
            &format!(r#","intelmq:related":["{target}"],"intelmq:alternate":["RT#{i}"]"#),
        );
        commit(&store, prep(&body), NOW + i).await;
    }
    assert_eq!(store.links_to(&target, 1000).expect("links").len(), 60);
    let before = store.log_bytes();
    assert!(before > 10_000);
    let swept = store.sweep(NOW + 60).expect("sweep");
    assert!(swept.removed > 0);
    assert!(store.log_bytes() <= 10_000, "{}", store.log_bytes());
    assert_eq!(before - swept.bytes, store.log_bytes());
    let left = all(&store, 0);
    assert_eq!(left.first().map(|r| r.0), Some(swept.removed + 1));
    assert_eq!(
        store.links_to(&target, 1000).expect("links").len() as u64,
        60 - swept.removed
    );
    assert!(store.by_alternate("RT#0", 10).expect("alt").is_empty());
    assert_eq!(store.by_alternate("RT#59", 10).expect("alt").len(), 1);
    // A reader from the start learns that it missed messages.
    let end = store
        .scan(0, 10, |_, _| ControlFlow::Continue(()))
        .expect("scan");
    assert!(end.truncated);
    // The uuid of a dropped message is still a duplicate, but the message is gone.
    let first = first.expect("first");
    assert!(matches!(
        store.lookup(&first).expect("lookup"),
        Some((1, None))
    ));
    // By age: everything accepted before NOW+30 goes.
    store.sweep(NOW + 130).expect("sweep");
    assert!(all(&store, 0).iter().all(|r| r.0 > 30));
    // Everything goes; the next sequence number still moves on (after a reopen too:
    // `retention_then_reopen_keeps_the_sequence`).
    store.sweep(NOW + 1000).expect("sweep");
    assert!(all(&store, 0).is_empty());
    store
}

fn all_bytes<B: ExchangeLog>(store: &ExchangeStore<B>) -> u64 {
    let mut n = 0;
    for seq in 1..=store.durable() {
        n += store
            .get_seq(seq)
            .expect("get")
            .map_or(0, |v| v.len() as u64);
    }
    n
}

async fn consumer_cursors_only_move_forward<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    for _ in 0..3 {
        commit(&store, prep(&env(Uuid::new_v4(), r#"{"raw":""}"#, "")), NOW).await;
    }
    assert_eq!(store.consumer(ORG, "c").expect("get"), None);
    let (s, t) = store.consumer_ack(ORG, "c", 2, NOW).expect("ack");
    store.group_commit().wait(t).await.expect("durable");
    assert_eq!(s.acked, 2);
    let (s, t) = store.consumer_ack(ORG, "c", 1, NOW).expect("ack");
    assert_eq!((s.acked, t), (2, Ticket::NONE));
    assert!(
        store.consumer_ack(ORG, "c", 9, NOW).is_err(),
        "ahead of the log"
    );
    assert_eq!(
        store.consumer(OTHER, "c").expect("get"),
        None,
        "per organisation"
    );
    let (existed, _) = store.consumer_delete(ORG, "c").expect("delete");
    assert!(existed);
    assert_eq!(store.consumer(ORG, "c").expect("get"), None);
}

async fn seen_uuids_expire_when_configured<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = StoreOptions {
        seen_max_age: 50,
        ..StoreOptions::default()
    };
    let store = open::<B>(dir.path(), opts);
    let u = Uuid::new_v4();
    let body = env(u, r#"{"raw":""}"#, "");
    commit(&store, prep(&body), NOW).await;
    let out = commit(&store, prep(&body), NOW + 49).await;
    assert!(matches!(out[0], Outcome::Duplicate { .. }));
    let out = commit(&store, prep(&body), NOW + 50).await;
    assert_eq!(out, vec![Outcome::Accepted { seq: 2 }]);
}

/// The seen-set costs well under 64 bytes per uuid on disk (key 16 + value 12 + overhead).
#[test]
fn seen_set_is_compact() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<FjallLog>(dir.path(), StoreOptions::default());
    let n = 200_000u64;
    let mut batch = store.engine().batch();
    for seq in 1..=n {
        let s = Seen {
            seq,
            at: secs32(NOW),
        };
        batch.put_seen(&Uuid::new_v4(), s);
    }
    store.engine().commit(batch).expect("commit");
    store.engine().compact_seen().expect("compact");
    let per_uuid = store.engine().seen_disk_space() as f64 / n as f64;
    assert!(per_uuid < 48.0, "{per_uuid:.1} bytes per uuid");
}

/// Bytes of journal a restart would replay.
fn journal_bytes(dir: &Path) -> u64 {
    sighthub_storage::journal::replay_bytes(dir).expect("journal files readable")
}

#[tokio::test]
async fn close_seals_the_journal_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let filler = "x".repeat(900);
    let n = 6_000u64;
    {
        let store = open::<FjallLog>(dir.path(), StoreOptions::default());
        for chunk in 0..n / 500 {
            let body: Vec<String> = (0..500)
                .map(|i| {
                    let k = chunk * 500 + i;
                    format!(
                        r#"{{"source.ip":"10.0.{}.{}","extra.pad":"{filler}"}}"#,
                        k / 256,
                        k % 256
                    )
                })
                .collect();
            commit(&store, prep(&format!("[{}]", body.join(","))), NOW).await;
        }
        let before = journal_bytes(dir.path());
        assert!(
            before > sighthub_storage::journal::CLOSE_PAD_FROM,
            "journal holds {before} bytes"
        );
        store.close().expect("close");
        let after = journal_bytes(dir.path());
        // Within one batch of the seal's filler (about 1 MiB; see the sighting store's
        // `close_leaves_a_small_journal_and_keeps_everything`).
        assert!(after < 2 * 1024 * 1024, "journal still holds {after} bytes");
    }
    let store = open::<FjallLog>(dir.path(), StoreOptions::default());
    assert_eq!(store.durable(), n);
    assert_eq!(all(&store, 0).len() as u64, n);
    let first = format!(r#"{{"source.ip":"10.0.0.0","extra.pad":"{filler}"}}"#);
    let again = commit(&store, prep(&first), NOW).await;
    assert_eq!(
        again,
        vec![Outcome::Duplicate {
            seq: 1,
            by_content: true
        }]
    );
    let new = commit(
        &store,
        prep(r#"{"source.ip":"10.0.0.7","extra.pad":"y"}"#),
        NOW,
    )
    .await;
    assert_eq!(new, vec![Outcome::Accepted { seq: n + 1 }]);
}

async fn tag_updates_stop_at_the_tag_limit_of_a_message<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    let u = Uuid::new_v4();
    commit(&store, prep(&env(u, r#"{"raw":"eA=="}"#, "")), NOW).await;
    let tags = |from: usize, n: usize| {
        let list: Vec<String> = (from..from + n).map(|i| format!("\"t{i}\"")).collect();
        format!(r#","tags":[{}]"#, list.join(","))
    };
    // Up to the limit, in two updates (repeats inside one update count once).
    let half = MAX_TAGS_PER_MESSAGE / 2;
    let first = env(u, "{}", &tags(0, half));
    assert!(matches!(
        commit(&store, prep(&first), NOW).await[..],
        [Outcome::Updated { .. }]
    ));
    let second = env(u, "{}", &tags(half, MAX_TAGS_PER_MESSAGE - half));
    assert!(matches!(
        commit(&store, prep(&second), NOW).await[..],
        [Outcome::Updated { .. }]
    ));
    assert_eq!(all(&store, 0)[0].3.len(), MAX_TAGS_PER_MESSAGE);
    // One more tag is refused with the limit's name, nothing written.
    let before = store.durable();
    let err = store
        .append(
            prep(&env(u, "{}", &tags(MAX_TAGS_PER_MESSAGE, 1))),
            NOW,
            OnRefusal::RefuseRequest,
        )
        .expect_err("over the limit");
    assert!(
        matches!(err, Error::Refused(ref r) if r[0].reason.contains("MAX_TAGS_PER_MESSAGE")),
        "{err:?}"
    );
    assert_eq!(store.durable(), before);
    // Tags already there are still a no-op duplicate.
    let again = env(u, "{}", &tags(0, 3));
    assert!(matches!(
        commit(&store, prep(&again), NOW).await[..],
        [Outcome::Duplicate { .. }]
    ));
}

async fn an_organisation_holds_a_bounded_number_of_consumers<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    commit(
        &store,
        prep(&env(Uuid::new_v4(), r#"{"raw":"eA=="}"#, "")),
        NOW,
    )
    .await;
    for i in 0..MAX_CONSUMERS_PER_ORG {
        let _ticket = store
            .consumer_ack(ORG, &format!("c{i}"), 1, NOW)
            .expect("under the limit");
    }
    let err = store
        .consumer_ack(ORG, "one-more", 1, NOW)
        .expect_err("over the limit");
    assert!(
        matches!(
            err,
            Error::OverLimit {
                limit: "MAX_CONSUMERS_PER_ORG",
                ..
            }
        ),
        "{err:?}"
    );
    // An existing one still moves, another organisation is not affected, and a deleted
    // name makes room.
    let _ticket = store.consumer_ack(ORG, "c0", 1, NOW).expect("existing");
    let _ticket = store
        .consumer_ack(OTHER, "one-more", 1, NOW)
        .expect("other organisation");
    assert!(store.consumer_delete(ORG, "c1").expect("delete").0);
    let _ticket = store
        .consumer_ack(ORG, "one-more", 1, NOW)
        .expect("room again");
}

/// A request of three: a new message, another organisation's withdrawal of `x` (refused),
/// and a tag update of the withdrawal (whose target then does not exist).
fn refused_in_the_middle(x: Uuid) -> (Vec<Prepared>, Uuid) {
    let w = Uuid::new_v4();
    let body = format!(
        "[{}, {}, {}]",
        env(Uuid::new_v4(), r#"{"raw":"ok"}"#, ""),
        env(
            w,
            r#"{"raw":"w"}"#,
            &format!(
                r#","intelmq:links":[{{"left_side":"{w}","type":"withdraws","right_side":"{x}"}}]"#
            )
        ),
        env(w, "{}", r#","tags":["t"]"#),
    );
    (prep_as(OTHER, &body), w)
}

async fn publish_refuse_request_writes_nothing<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(open::<B>(dir.path(), StoreOptions::default()));
    let x = Uuid::new_v4();
    let first = store
        .publish(
            prep(&env(x, r#"{"raw":"x"}"#, "")),
            OnRefusal::RefuseRequest,
        )
        .await
        .expect("publish");
    assert_eq!(first.outcomes, vec![Ok(Outcome::Accepted { seq: 1 })]);
    let (items, _) = refused_in_the_middle(x);
    let err = store
        .publish(items, OnRefusal::RefuseRequest)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, Error::Refused(ref r) if r.len() == 1 && r[0].index == 1),
        "{err:?}"
    );
    assert_eq!(store.durable(), 1);
    assert_eq!(all(&store, 0).len(), 1, "nothing of the request written");
    assert_eq!(store.links_to(&x, 10).expect("links"), Vec::new());
}

async fn publish_skip_refused_stores_the_rest<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(open::<B>(dir.path(), StoreOptions::default()));
    let x = Uuid::new_v4();
    commit(&store, prep(&env(x, r#"{"raw":"x"}"#, "")), NOW).await;
    let (items, w) = refused_in_the_middle(x);
    let published = store
        .publish(items, OnRefusal::SkipRefused)
        .await
        .expect("publish");
    assert_eq!(published.refused, 1);
    assert_eq!(published.outcomes.len(), 3, "one outcome per item");
    assert_eq!(published.outcomes[0], Ok(Outcome::Accepted { seq: 2 }));
    assert!(
        matches!(&published.outcomes[1], Err(r) if r.contains("withdraw")),
        "{:?}",
        published.outcomes[1]
    );
    // As if the refused message had not been in the request: nothing to update.
    assert_eq!(published.outcomes[2], Ok(Outcome::UnknownTarget));
    assert_eq!(store.durable(), 2);
    assert_eq!(all(&store, 0).len(), 2);
    assert_eq!(store.lookup(&w).expect("lookup").map(|(s, _)| s), None);
    assert_eq!(store.links_to(&x, 10).expect("links"), Vec::new());
    // Without a refusal both policies give the same outcomes.
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let p = store
        .publish(prep(&env(a, r#"{"raw":"a"}"#, "")), OnRefusal::SkipRefused)
        .await
        .expect("publish");
    let q = store
        .publish(
            prep(&env(b, r#"{"raw":"b"}"#, "")),
            OnRefusal::RefuseRequest,
        )
        .await
        .expect("publish");
    assert_eq!(p.outcomes, vec![Ok(Outcome::Accepted { seq: 3 })]);
    assert_eq!(q.outcomes, vec![Ok(Outcome::Accepted { seq: 4 })]);
    assert_eq!((p.refused, q.refused), (0, 0));
}

async fn publish_answers_once_durable<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(open::<B>(dir.path(), StoreOptions::default()));
    let empty = store
        .publish(Vec::new(), OnRefusal::RefuseRequest)
        .await
        .expect("publish");
    assert_eq!(empty.outcomes, Vec::new());
    let u = Uuid::new_v4();
    let body = format!(
        "[{}, {}]",
        env(u, r#"{"raw":"u"}"#, ""),
        env(u, r#"{"raw":"u"}"#, "")
    );
    let published = store
        .publish(prep(&body), OnRefusal::SkipRefused)
        .await
        .expect("publish");
    assert_eq!(
        published.outcomes,
        vec![
            Ok(Outcome::Accepted { seq: 1 }),
            Ok(Outcome::Duplicate {
                seq: 1,
                by_content: false
            })
        ]
    );
    assert_eq!(store.durable(), 1, "durable before publish returns");
    assert_eq!(
        store
            .get_seq(1)
            .expect("get")
            .map(|r| r.entry().expect("decodes").uuid),
        Some(u)
    );
}

async fn a_dropped_publish_still_becomes_durable<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(open::<B>(dir.path(), StoreOptions::default()));
    let items = prep(&env(Uuid::new_v4(), r#"{"raw":"x"}"#, ""));
    // Polled exactly once (it starts), then dropped: the caller went away.
    {
        let publish = store.publish(items, OnRefusal::RefuseRequest);
        tokio::pin!(publish);
        let finished = tokio::select! {
            biased;
            _ = &mut publish => true,
            () = async {} => false,
        };
        assert!(!finished, "not finished in one poll");
    }
    for _ in 0..400 {
        if store.durable() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(store.durable(), 1, "written, then made durable and visible");
    assert_eq!(all(&store, 0).len(), 1);
}

/// The publish counters (the metrics' `sighthub_exchange_messages`) count each answer once,
/// by kind, and every organisation's consumers are listed (their lag).
async fn publish_counts_what_it_answered_and_consumers_are_listed<B: Backend>() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(open::<B>(dir.path(), StoreOptions::default()));
    let u = Uuid::new_v4();
    for _ in 0..2 {
        store
            .publish(prep(&env(u, r#"{"raw":""}"#, "")), OnRefusal::RefuseRequest)
            .await
            .expect("publish");
    }
    let c = store.counters();
    assert_eq!(
        (
            c.accepted.load(Relaxed),
            c.duplicate_uuid.load(Relaxed),
            c.duplicate_content.load(Relaxed),
            c.refused.load(Relaxed)
        ),
        (1, 1, 0, 0)
    );
    let (_, t) = store.consumer_ack(ORG, "a", 1, NOW).expect("ack");
    store.group_commit().wait(t).await.expect("durable");
    let (_, t) = store.consumer_ack(OTHER, "b", 0, NOW).expect("ack");
    store.group_commit().wait(t).await.expect("durable");
    let mut listed: Vec<(Uuid, String, u64)> = store
        .consumers(10)
        .expect("consumers")
        .into_iter()
        .map(|(o, n, st)| (o, n, st.acked))
        .collect();
    listed.sort();
    let mut want = vec![(ORG, "a".to_owned(), 1), (OTHER, "b".to_owned(), 0)];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(store.consumers(1).expect("bounded").len(), 1);
}

/// `seen_many` and `content_many` (one round trip per request on a network engine) answer
/// what `seen` and `content` answer one by one, in the order asked, repeats and unknowns
/// included.
async fn batched_lookups_answer_like_single_ones<B: Backend>() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open::<B>(dir.path(), StoreOptions::default());
    let (a, b, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let bare = r#"{"source.ip":"198.51.100.7"}"#;
    let body = format!(
        "[{}, {}, {bare}]",
        env(a, r#"{"raw":"eA=="}"#, ""),
        env(b, r#"{"raw":"eQ=="}"#, "")
    );
    commit(&store, prep(&body), NOW).await;
    let uuids = [b, unknown, a, b];
    let many = store.engine.seen_many(&uuids).expect("seen_many");
    let one: Vec<_> = uuids
        .iter()
        .map(|u| store.engine.seen(u).expect("seen"))
        .collect();
    assert_eq!(many, one);
    assert_eq!(
        many.iter().map(|s| s.map(|s| s.seq)).collect::<Vec<_>>(),
        vec![Some(2), None, Some(1), Some(2)]
    );
    let key = prep(bare)[0]
        .content_key
        .expect("a bare event has a content key");
    let other = prep(r#"{"source.ip":"198.51.100.8"}"#)[0]
        .content_key
        .expect("content key");
    let keys = [other, key, key];
    let many = store.engine.content_many(&keys).expect("content_many");
    assert_eq!(
        many.iter().map(|s| s.map(|s| s.seq)).collect::<Vec<_>>(),
        vec![None, Some(3), Some(3)]
    );
    assert!(store.engine.seen_many(&[]).expect("empty").is_empty());
}

/// The lease rule on JetStream (`NatsLog::lease`, a compare-and-set on the bucket): taken,
/// renewed, refused while another holder has it, taken over once it expired, given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn nats_leases_are_exclusive_renewable_and_taken_over_once_expired() {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
        "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(<crate::log::NatsLog as Backend>::store(
        dir.path(),
        StoreOptions::default(),
    ));
    let s = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        let lease = |name: &str, holder: &str, ttl: u64| s.lease(name, holder, ttl).expect("lease");
        assert!(lease("relay/push/r", "front-a", 60_000), "taken");
        assert!(!lease("relay/push/r", "front-b", 60_000), "held by A");
        assert!(lease("relay/push/r", "front-a", 60_000), "renewed");
        assert!(!lease("relay/push/r", "front-b", 60_000), "still held by A");
        assert!(
            lease("relay/pull/h", "front-b", 60_000),
            "another name is another lease"
        );
        // A short lease that A stops renewing: B takes it once it expired (bounded wait).
        assert!(lease("intelmq-out", "front-a", 300));
        assert!(!lease("intelmq-out", "front-b", 60_000));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if lease("intelmq-out", "front-b", 60_000) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "an expired lease was never taken over"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!lease("intelmq-out", "front-a", 60_000), "B holds it now");
        // Given back (ttl 0): the other front end takes it at once.
        assert!(lease("relay/push/r", "front-a", 0));
        assert!(
            lease("relay/push/r", "front-b", 60_000),
            "taken after A gave it back"
        );
        assert!(!lease("relay/push/r", "front-a", 60_000));
        // Giving back a lease another front end holds changes nothing.
        assert!(!lease("relay/push/r", "front-a", 0));
        assert!(!lease("relay/push/r", "front-a", 60_000));
    })
    .await
    .expect("lease checks");
}

/// Two front ends racing for one free lease: exactly one gets it (create is put-if-absent;
/// a takeover expects the revision it read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn nats_a_lease_raced_for_goes_to_one_front_end() {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
        "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let a = Arc::new(<crate::log::NatsLog as Backend>::store(
        dir.path(),
        StoreOptions::default(),
    ));
    // A second connection to the same stream: another front end.
    let b = Arc::new(<crate::log::NatsLog as Backend>::store(
        dir.path(),
        StoreOptions::default(),
    ));
    for round in 0..20 {
        let name = format!("race/{round}");
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        let (n1, n2) = (name.clone(), name.clone());
        let ta = tokio::task::spawn_blocking(move || a.lease(&n1, "front-a", 60_000));
        let tb = tokio::task::spawn_blocking(move || b.lease(&n2, "front-b", 60_000));
        let (ga, gb) = (
            ta.await.expect("join").expect("lease"),
            tb.await.expect("join").expect("lease"),
        );
        assert!(ga ^ gb, "round {round}: A {ga}, B {gb}");
    }
}

/// On JetStream, a content-window entry and (with `seen_max_age`) a seen entry are removed
/// from the bucket by the server once past their horizon (plus the margin): the bucket does
/// not grow with every bare event ever received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn nats_entries_past_their_horizon_leave_the_bucket() {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
        "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let opts = StoreOptions {
        content_window: 1,
        seen_max_age: 1,
        ..StoreOptions::default()
    };
    let store = open::<crate::log::NatsLog>(dir.path(), opts);
    let body = format!(
        "[{}, {{\"source.ip\":\"198.51.100.1\"}}]",
        env(Uuid::new_v4(), r#"{"raw":"eA=="}"#, "")
    );
    let out = commit(&store, prep(&body), now_secs()).await;
    assert_eq!(
        out,
        vec![Outcome::Accepted { seq: 1 }, Outcome::Accepted { seq: 2 }]
    );
    let keys = |p: &str| store.engine().index_keys(p).expect("list");
    // Two seen entries (the bare event got a uuid too) and one content entry.
    assert_eq!((keys("s.").len(), keys("c.").len()), (2, 1));
    let start = std::time::Instant::now();
    while !(keys("s.").is_empty() && keys("c.").is_empty()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "still there after 60 s: {:?} {:?}",
            keys("s."),
            keys("c.")
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    println!("removed after {:?}", start.elapsed());
    // The log itself is kept.
    assert_eq!(all(&store, 0).len(), 2);
}

/// Two front ends on one JetStream stream (two stores over it): a consumer write decided on
/// a version another front end has since replaced is refused, so the acknowledgement is
/// decided again on the newer cursor and never moves it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a JetStream cluster in SIGHTHUB_TEST_NATS: the clusters step of scripts/test"]
async fn nats_consumer_writes_are_compare_and_set_across_front_ends() {
    assert!(
        std::env::var_os("SIGHTHUB_TEST_NATS").is_some(),
        "SIGHTHUB_TEST_NATS is not set: this test needs a JetStream cluster (scripts/test clusters runs it)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let a = open::<crate::log::NatsLog>(dir.path(), StoreOptions::default());
    for _ in 0..10 {
        commit(&a, prep(&env(Uuid::new_v4(), r#"{"raw":""}"#, "")), NOW).await;
    }
    // The second front end, on the same stream (the harness names it by the directory).
    let b = open::<crate::log::NatsLog>(dir.path(), StoreOptions::default());
    let state = |acked| ConsumerState {
        acked,
        updated_at: NOW,
    };
    // A new name: created once; a second creation from the same (absent) version loses.
    let (none, v0) = a.engine().consumer_versioned(ORG, "c").expect("read");
    assert_eq!((none, v0), (None, 0));
    assert!(a
        .engine()
        .consumer_put_if(ORG, "c", state(5), v0)
        .expect("create"));
    assert!(!b
        .engine()
        .consumer_put_if(ORG, "c", state(3), v0)
        .expect("raced"));
    // a reads 5 and decides 7; b moves the cursor to 9 meanwhile: a's write is refused.
    let (cur, v) = a.engine().consumer_versioned(ORG, "c").expect("read");
    assert_eq!(cur.map(|c| c.acked), Some(5));
    let (s, _) = b.consumer_ack(ORG, "c", 9, NOW).expect("ack through b");
    assert_eq!(s.acked, 9);
    assert!(!a
        .engine()
        .consumer_put_if(ORG, "c", state(7), v)
        .expect("stale"));
    // Through the store, a decides again on 9: no move back.
    let (s, t) = a.consumer_ack(ORG, "c", 7, NOW).expect("ack through a");
    assert_eq!((s.acked, t), (9, Ticket::NONE));
    assert_eq!(
        b.consumer(ORG, "c").expect("read").map(|c| c.acked),
        Some(9)
    );
}
