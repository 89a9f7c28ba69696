//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition of both halves, with the
//! `prometheus-client` crate.
//!
//! Request counts and latencies per route and status are recorded live by
//! [`App::handle`](crate::App::handle) in [`HttpMetrics`] (bounded labels: the route
//! pattern, never the path). Everything else is read at scrape time from where it already
//! lives — the stores' group commits, the exchange's publish counters and consumers, the
//! relay's link files, the bridge and the IntelMQ transports ([`crate::status::NodeStatus`])
//! — so nothing is counted twice and a scrape costs nothing between scrapes. Every family is
//! listed, with example alerts, in `docs/OPERATIONS.md`.

use crate::app::App;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap as HashMap;
use sighthub_storage::HistogramSnapshot;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most consumers reported (their lag), over every organisation.
pub const MAX_CONSUMERS: usize = 1000;

/// Upper bounds (seconds) of the request latency buckets.
const LATENCY_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// The statuses counted one by one; any other is counted as `other`.
const STATUSES: &[u16] = &[
    200, 201, 204, 400, 401, 403, 404, 405, 406, 408, 409, 410, 413, 500, 501, 503,
];

/// One route's counters: a count per status and a latency histogram, all atomics.
#[derive(Debug)]
struct RouteStats {
    method: &'static str,
    route: &'static str,
    statuses: Vec<AtomicU64>,
    seconds: sighthub_storage::commit::Histogram,
}

/// The live request metrics: one [`RouteStats`] per entry of the route table (and one for
/// requests no route matched), found by a lookup made once at start, so recording a request
/// takes no lock and allocates nothing (atomic adds only).
#[derive(Debug)]
pub struct HttpMetrics {
    routes: Vec<RouteStats>,
    index: HashMap<(&'static str, &'static str), usize>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut routes = Vec::new();
        let mut index = HashMap::default();
        let all = crate::router::ROUTES
            .iter()
            .map(|(m, p, _)| (*m, *p))
            .chain(std::iter::once(("", "unmatched")));
        for (method, route) in all {
            index.insert((method, route), routes.len());
            routes.push(RouteStats {
                method,
                route,
                statuses: (0..=STATUSES.len()).map(|_| AtomicU64::new(0)).collect(),
                seconds: sighthub_storage::commit::Histogram::new(LATENCY_SECONDS),
            });
        }
        HttpMetrics { routes, index }
    }
}

impl HttpMetrics {
    /// Records one answered request: its route pattern (`("", "unmatched")` when no route
    /// matched), status and time.
    pub fn observe(&self, route: (&'static str, &'static str), status: u16, took: Duration) {
        let i = self
            .index
            .get(&route)
            .or_else(|| self.index.get(&("", "unmatched")))
            .copied()
            .unwrap_or(0);
        let Some(r) = self.routes.get(i) else {
            return;
        };
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        if let Some(c) = r.statuses.get(s) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        r.seconds.observe(took.as_secs_f64());
    }

    fn requests(&self) -> Vec<(Labels, u64)> {
        let mut out = Vec::new();
        for r in &self.routes {
            for (i, c) in r.statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES.get(i).map_or("other".to_owned(), u16::to_string);
                out.push((
                    vec![
                        ("method", r.method.to_owned()),
                        ("route", r.route.to_owned()),
                        ("status", status),
                    ],
                    n,
                ));
            }
        }
        out
    }

    fn seconds(&self) -> SnapshotFamily {
        self.routes
            .iter()
            .map(|r| (r, r.seconds.snapshot()))
            .filter(|(_, h)| h.count > 0)
            .map(|(r, h)| (label("route", r.route), Snapshot(h)))
            .collect()
    }
}

/// A histogram copied from somewhere else (the group commit's atomics).
#[derive(Debug)]
struct Snapshot(HistogramSnapshot);

impl TypedMetric for Snapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Snapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder adds the buckets up itself and writes `+Inf` for `f64::MAX`.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .map(|&(le, cumulative)| {
                let n = cumulative.saturating_sub(below);
                below = cumulative;
                (if le.is_finite() { le } else { f64::MAX }, n)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Labelled snapshot histograms.
type SnapshotFamily = Vec<(Vec<(&'static str, String)>, Snapshot)>;

#[derive(Debug)]
struct Snapshots(SnapshotFamily);

impl TypedMetric for Snapshots {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Snapshots {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let e = encoder.encode_family(labels)?;
            h.encode(e)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, f);
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    reg.register(name, help, f);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The storage engines' own activity: memtables, flushes, compactions, journals, disk, cache.
fn engine_families(reg: &mut Registry, engines: &[(&'static str, sighthub_storage::EngineStats)]) {
    type G = fn(&sighthub_storage::EngineStats) -> u64;
    let gauges: [(&str, &str, G); 7] = [
        (
            "storage_memtable_bytes",
            "Bytes in memtables not yet flushed to tables",
            |e| e.write_buffer_bytes,
        ),
        (
            "storage_flushes_pending",
            "Sealed memtables waiting for a flush",
            |e| e.flushes_pending,
        ),
        (
            "storage_compactions_active",
            "Compactions running now",
            |e| e.compactions_active,
        ),
        (
            "storage_journals",
            "Journal files on disk (replayed after a crash)",
            |e| e.journals,
        ),
        ("storage_journal_bytes", "Bytes of the journal files", |e| {
            e.journal_bytes
        }),
        ("storage_disk_bytes", "Bytes of the store on disk", |e| {
            e.disk_bytes
        }),
        (
            "storage_cache_bytes",
            "Bytes in the block cache (its capacity is storage.cache_mb)",
            |e| e.cache_bytes,
        ),
    ];
    for (name, help, get) in gauges {
        gauge_family(
            reg,
            name,
            help,
            engines
                .iter()
                .map(|(s, e)| (label("store", *s), sat(get(e))))
                .collect(),
        );
    }
    counter_family(
        reg,
        "storage_compactions",
        "Compactions finished since start",
        engines
            .iter()
            .map(|(s, e)| (label("store", *s), e.compactions_completed))
            .collect(),
    );
    let secs = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    for (s, e) in engines {
        secs.get_or_create(&label("store", *s))
            .inc_by(e.compaction_micros as f64 / 1e6);
    }
    reg.register(
        "storage_compaction_seconds",
        "Time spent compacting since start",
        secs,
    );
}

/// The exposition, read now (blocking: it reads the stores).
pub fn render(app: &App) -> String {
    let mut reg = Registry::with_prefix("sighthub");
    counter_family(
        &mut reg,
        "http_requests",
        "HTTP requests answered, by route pattern, method and status",
        app.metrics.requests(),
    );
    reg.register(
        "http_request_duration_seconds",
        "Time from the request head to the answer, by route pattern",
        Snapshots(app.metrics.seconds()),
    );

    // Sightings.
    match app.store.namespaces() {
        Ok(all) => {
            let (private, public): (Vec<_>, Vec<_>) =
                all.iter().partition(|n| n.namespace.is_internal());
            gauge_family(
                &mut reg,
                "sightings_namespaces",
                "Namespaces stored, public or private (_all, _shadow/…, _expired/…)",
                vec![
                    (label("kind", "public"), sat(public.len() as u64)),
                    (label("kind", "private"), sat(private.len() as u64)),
                ],
            );
            let distinct = all
                .iter()
                .find(|n| n.namespace.as_str() == "_all")
                .map_or(0, |n| n.values);
            gauge_family(
                &mut reg,
                "sightings_values",
                "Values stored: in public namespaces (one per namespace), and distinct (the values of _all)",
                vec![
                    (
                        label("kind", "public"),
                        sat(public.iter().map(|n| n.values).sum()),
                    ),
                    (label("kind", "distinct"), sat(distinct)),
                ],
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: sighting namespaces unreadable"),
    }
    let mut fsync = Vec::new();
    let mut batch = Vec::new();
    let mut poisoned = Vec::new();
    let mut engines: Vec<(&'static str, sighthub_storage::EngineStats)> = Vec::new();
    if let Some(e) = app.store.engine_stats() {
        engines.push(("sightings", e));
    }
    if let Some(s) = app.store.durability().stats() {
        fsync.push((label("store", "sightings"), Snapshot(s.fsync_seconds)));
        batch.push((label("store", "sightings"), Snapshot(s.batch_writes)));
        poisoned.push((label("store", "sightings"), i64::from(s.poisoned)));
    }

    // Exchange.
    if let Ok(inner) = app.exchange.inner() {
        let ex = &inner.store;
        let s = ex.group_commit().stats();
        if let Some(e) = ex.engine_stats() {
            engines.push(("exchange", e));
        }
        fsync.push((label("store", "exchange"), Snapshot(s.fsync_seconds)));
        batch.push((label("store", "exchange"), Snapshot(s.batch_writes)));
        poisoned.push((label("store", "exchange"), i64::from(s.poisoned)));
        let head = ex.durable();
        gauge(
            &mut reg,
            "exchange_head_seq",
            "Sequence number of the last durable message of the exchange log",
            sat(head),
        );
        gauge(
            &mut reg,
            "exchange_log_bytes",
            "Bytes of the exchange log",
            sat(ex.log_bytes()),
        );
        use std::sync::atomic::Ordering::Relaxed;
        let c = ex.counters();
        counter_family(
            &mut reg,
            "exchange_messages",
            "Messages the exchange's publish answered since start, by outcome (every path: HTTP, IntelMQ, relay pulls)",
            vec![
                (label("outcome", "accepted"), c.accepted.load(Relaxed)),
                (label("outcome", "updated"), c.updated.load(Relaxed)),
                (label("outcome", "duplicate_uuid"), c.duplicate_uuid.load(Relaxed)),
                (
                    label("outcome", "duplicate_content"),
                    c.duplicate_content.load(Relaxed),
                ),
                (label("outcome", "refused"), c.refused.load(Relaxed)),
                (label("outcome", "ignored"), c.ignored.load(Relaxed)),
            ],
        );
        match ex.consumers(MAX_CONSUMERS) {
            Ok(list) => gauge_family(
                &mut reg,
                "exchange_consumer_lag",
                "Messages between a named consumer's cursor and the head of the log",
                list.into_iter()
                    .map(|(org, name, st)| {
                        (
                            vec![("org", org.to_string()), ("consumer", name)],
                            sat(head.saturating_sub(st.acked)),
                        )
                    })
                    .collect(),
            ),
            Err(e) => tracing::warn!(error = %e, "metrics: consumers unreadable"),
        }
    }
    reg.register(
        "commit_fsync_seconds",
        "Seconds per fsync of a store's group commit",
        Snapshots(fsync),
    );
    reg.register(
        "commit_batch_writes",
        "Writes made durable by one fsync of a store's group commit",
        Snapshots(batch),
    );
    gauge_family(
        &mut reg,
        "commit_poisoned",
        "1 when a failed fsync stopped a store's writes (restart needed)",
        poisoned,
    );
    engine_families(&mut reg, &engines);

    // Node: relay links, bridge, IntelMQ transports.
    if let Some(node) = &app.status {
        let links = node.links();
        let mut rows = Vec::new();
        let mut up = Vec::new();
        let mut standby = Vec::new();
        for l in &links {
            let base = vec![("kind", l.kind.to_owned()), ("link", l.name.clone())];
            for field in [
                "attempted",
                "sent",
                "accepted",
                "duplicate",
                "errors",
                "refused",
                "skipped",
                "own",
            ] {
                let mut lab = base.clone();
                lab.push(("outcome", field.to_owned()));
                rows.push((lab, l.state[field].as_u64().unwrap_or(0)));
            }
            up.push((base.clone(), i64::from(l.last_error.is_none())));
            standby.push((base, i64::from(l.held_elsewhere)));
        }
        counter_family(
            &mut reg,
            "relay_messages",
            "Messages of each relay link by outcome (persisted: they survive restarts)",
            rows,
        );
        gauge_family(
            &mut reg,
            "relay_link_up",
            "1 while a relay link works, 0 while it fails (its status says why)",
            up,
        );
        gauge_family(
            &mut reg,
            "relay_link_standby",
            "1 while another front end of a shared exchange runs the relay link (it holds the link's lease), else 0",
            standby,
        );
        if let Some(b) = node.bridge() {
            gauge(
                &mut reg,
                "bridge_lag",
                "Exchange log records not yet turned into sightings",
                sat(b.log_end.saturating_sub(b.position)),
            );
            counter_family(
                &mut reg,
                "bridge_records",
                "Log records the bridge could not apply (skipped) and sightings the store refused",
                vec![
                    (label("outcome", "skipped"), b.skipped),
                    (label("outcome", "refused"), b.refused),
                ],
            );
        }
        let mut rows = Vec::new();
        for t in node.transports() {
            for (field, v) in &t.counters {
                rows.push((
                    vec![
                        ("kind", t.kind.to_owned()),
                        ("transport", t.name.clone()),
                        ("outcome", (*field).to_owned()),
                    ],
                    *v,
                ));
            }
        }
        counter_family(
            &mut reg,
            "intelmq_messages",
            "Messages of each IntelMQ transport since start, by outcome",
            rows,
        );
        let standby = node
            .transports()
            .into_iter()
            .filter(|t| t.lease.is_some())
            .map(|t| {
                (
                    vec![("kind", t.kind.to_owned()), ("transport", t.name)],
                    i64::from(t.held_elsewhere),
                )
            })
            .collect();
        gauge_family(
            &mut reg,
            "intelmq_output_standby",
            "1 while another front end of a shared exchange delivers the IntelMQ output (it holds the output's lease), else 0",
            standby,
        );
        let mut rows = Vec::new();
        for (worker, counters) in node.worker_counters() {
            for (outcome, v) in counters {
                rows.push((
                    vec![
                        ("worker", worker.to_owned()),
                        ("outcome", outcome.to_owned()),
                    ],
                    v,
                ));
            }
        }
        counter_family(
            &mut reg,
            "worker_records",
            "What other background workers did since start, by outcome (MISP's ZeroMQ ingest: frames, sightings, ignored, malformed, refused, failed)",
            rows,
        );
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::error!(error = %e, "metrics: encoding failed");
    }
    out
}

/// Most connections the open metrics listener serves at once (a scraper needs one).
pub const OPEN_MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` without a key on its own listener (`[metrics] listen`, meant for a
/// monitoring network), until `stop` resolves: plain HTTP/1.1, at most
/// [`OPEN_MAX_CONNECTIONS`] at once, a 10 s header timeout; every other path is a 404.
pub async fn serve_open(
    listener: tokio::net::TcpListener,
    app: std::sync::Arc<App>,
    stop: impl std::future::Future<Output = ()>,
) {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(OPEN_MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = std::sync::Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut stop => return,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    continue;
                }
            },
        };
        let app = std::sync::Arc::clone(&app);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = std::sync::Arc::clone(&app);
                async move {
                    let resp = if req.uri().path() == "/metrics"
                        && (req.method() == hyper::Method::GET
                            || req.method() == hyper::Method::HEAD)
                    {
                        let text = tokio::task::spawn_blocking(move || render(&app))
                            .await
                            .unwrap_or_default();
                        crate::error::bytes_response(
                            hyper::StatusCode::OK,
                            CONTENT_TYPE,
                            text.into_bytes(),
                        )
                    } else {
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                            b"only GET /metrics here\n",
                        )));
                        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                        r
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn requests_are_counted_per_route_and_status_without_a_lock() {
        let m = HttpMetrics::default();
        let w = ("GET", "/w/{namespace}");
        m.observe(w, 200, Duration::from_micros(30));
        m.observe(w, 200, Duration::from_millis(3));
        m.observe(w, 418, Duration::from_micros(30));
        m.observe(("GET", "/no/such/pattern"), 404, Duration::from_micros(30));
        let rows = m.requests();
        let find = |route: &str, status: &str| {
            rows.iter()
                .find(|(l, _)| l[1].1 == route && l[2].1 == status)
                .map(|(_, n)| *n)
        };
        assert_eq!(find("/w/{namespace}", "200"), Some(2));
        assert_eq!(find("/w/{namespace}", "other"), Some(1));
        assert_eq!(find("unmatched", "404"), Some(1));
        assert_eq!(rows.len(), 3);
        let h = m.seconds();
        let w_hist = h
            .iter()
            .find(|(l, _)| l[0].1 == "/w/{namespace}")
            .expect("w");
        assert_eq!(w_hist.1 .0.count, 3);
        assert!(
            (w_hist.1 .0.sum - 0.00306).abs() < 1e-6,
            "{}",
            w_hist.1 .0.sum
        );
    }
}
