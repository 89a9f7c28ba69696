//! A listener for IntelMQ's TCP output bot (`bots/outputs/tcp/output.py`).
//!
//! Per connection: read frames (length-prefixed, or separator-ended), take every frame that
//! has fully arrived as one batch into the exchange ([`Sink::accept`]: durable before it
//! returns), then write one `Ok` per frame. The bot sends one frame and waits for `Ok`, so a
//! batch is usually one event; pipelining clients get batching for free.
//!
//! Nothing is answered `Ok` before it is durably in the log (a duplicate is already there).
//! A frame that is not a valid message is logged and, by default, answered `Ok` too
//! (`invalid = "skip"`: the bot would otherwise resend it forever), or the connection is
//! closed (`invalid = "close"`). An oversized frame, a truncated frame at EOF or a storage
//! failure closes the connection without an answer for what was not stored.
//!
//! ## Silent and trickling clients
//! The listener is meant for a trusted network, but no client can hold it: a connection
//! that completes no frame for `idle_timeout_seconds` is closed, and when a new connection
//! would exceed `max_connections` (or `max_connections_per_address` for its address), the
//! connection of that scope that has gone longest without completing a frame, and is
//! waiting for input (never one whose batch is being stored), is closed to make room. A
//! client that stays silent or trickles bytes is therefore the first to go, while one that
//! keeps sending frames keeps its place; the bot reconnects and resends what was not
//! answered. Only when every connection in scope is busy storing a batch is the new one
//! refused (closed at once).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::config::{FramingKind, OnInvalid, TcpInConfig};
use crate::error::Result;
use crate::frame::{Decoder, Framing};
use crate::sink::{Sink, Taken};

/// A bound listener, ready to [`run`](TcpIn::run).
pub struct TcpIn {
    cfg: Arc<TcpInConfig>,
    sink: Sink,
    listener: TcpListener,
}

impl TcpIn {
    /// Binds the configured address.
    pub async fn bind(cfg: TcpInConfig, sink: Sink) -> Result<TcpIn> {
        let listener = TcpListener::bind(cfg.listen).await?;
        Ok(TcpIn {
            cfg: Arc::new(cfg),
            sink,
            listener,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Accepts connections until `shutdown` flips to true; then lets running batches finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let table = Arc::new(Mutex::new(Table::default()));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let admitted = lock(&table).admit(
                        sighthub_exchange::access::client_scope(peer.ip()),
                        self.cfg.max_connections,
                        self.cfg.max_connections_per_address,
                    );
                    let Some(slot) = admitted else {
                        tracing::warn!(listener = %self.cfg.name, %peer, "intelmq tcp: every connection is busy storing; new connection refused");
                        drop(stream);
                        continue;
                    };
                    let slot = Slot {
                        table: Arc::clone(&table),
                        id: slot.0,
                        evicted: slot.1,
                    };
                    let (cfg, sink, stop) =
                        (Arc::clone(&self.cfg), self.sink.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        if let Err(e) = serve_slot(stream, &cfg, &sink, stop, Some(&slot)).await {
                            tracing::warn!(listener = %cfg.name, %peer, error = %e, "intelmq tcp connection closed");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(listener = %self.cfg.name, error = %e, "intelmq tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        tasks.join_all().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One open connection, as the accept loop sees it.
struct Entry {
    addr: IpAddr,
    /// When it last completed a frame (or connected).
    progress: Instant,
    /// Waiting for input (not storing a batch): may be closed to make room.
    waiting: bool,
    evict: Arc<Notify>,
}

/// The open connections of one listener.
#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Entry>,
}

impl Table {
    /// Makes room for a connection from `addr` within both limits, closing the waiting
    /// connection of the full scope that has gone longest without a frame; `None` when no
    /// connection of that scope may be closed.
    fn admit(
        &mut self,
        addr: IpAddr,
        max: usize,
        per_address: usize,
    ) -> Option<(u64, Arc<Notify>)> {
        for (limit, same_addr) in [(per_address, true), (max, false)] {
            let in_scope = |e: &Entry| !same_addr || e.addr == addr;
            if self.conns.values().filter(|e| in_scope(e)).count() < limit {
                continue;
            }
            let victim = self
                .conns
                .iter()
                .filter(|(_, e)| in_scope(e) && e.waiting)
                .min_by_key(|(_, e)| e.progress)
                .map(|(id, _)| *id)?;
            if let Some(e) = self.conns.remove(&victim) {
                e.evict.notify_one();
            }
        }
        let id = self.next;
        self.next += 1;
        let evict = Arc::new(Notify::new());
        self.conns.insert(
            id,
            Entry {
                addr,
                progress: Instant::now(),
                waiting: true,
                evict: Arc::clone(&evict),
            },
        );
        Some((id, evict))
    }
}

/// A connection's place in the [`Table`]; leaves it when dropped.
struct Slot {
    table: Arc<Mutex<Table>>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Slot {
    fn waiting(&self, waiting: bool, progressed: bool) {
        if let Some(e) = lock(&self.table).conns.get_mut(&self.id) {
            e.waiting = waiting;
            if progressed {
                e.progress = Instant::now();
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).conns.remove(&self.id);
    }
}

/// Serves one connection; see the [module docs](self).
pub async fn serve(
    stream: TcpStream,
    cfg: &TcpInConfig,
    sink: &Sink,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    serve_slot(stream, cfg, sink, shutdown, None).await
}

async fn serve_slot(
    mut stream: TcpStream,
    cfg: &TcpInConfig,
    sink: &Sink,
    mut shutdown: watch::Receiver<bool>,
    slot: Option<&Slot>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let framing = match cfg.framing {
        FramingKind::Length => Framing::LengthPrefixed,
        FramingKind::Separator => Framing::Separator(cfg.separator.as_bytes().to_vec()),
    };
    let mut decoder = Decoder::new(framing, cfg.max_frame_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let idle = Duration::from_secs(cfg.idle_timeout_seconds);
    let mut deadline = tokio::time::Instant::now() + idle;
    let never = Arc::new(Notify::new());
    let evicted = slot.map_or(&never, |s| &s.evicted);
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => r?,
            _ = shutdown.changed() => return Ok(()),
            _ = evicted.notified() => {
                tracing::info!(listener = %cfg.name, "intelmq tcp: connection without progress closed to make room for a new one");
                return Ok(());
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(listener = %cfg.name, seconds = cfg.idle_timeout_seconds, "intelmq tcp: no complete frame within idle_timeout_seconds; connection closed");
                return Ok(());
            }
        };
        if n == 0 {
            if decoder.pending() > 0 {
                tracing::warn!(listener = %cfg.name, bytes = decoder.pending(), "intelmq tcp: truncated frame at end of stream dropped (never answered)");
            }
            return Ok(());
        }
        decoder.push(buf.get(..n).unwrap_or_default());
        let mut frames = Vec::new();
        let mut fatal = None;
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if !frames.is_empty() {
            deadline = tokio::time::Instant::now() + idle;
            if let Some(s) = slot {
                s.waiting(false, true);
            }
            let count = frames.len();
            let taken = sink.accept(frames).await?;
            let mut answer = Vec::with_capacity(2 * count);
            for t in &taken {
                if let Taken::Rejected(reason) = t {
                    tracing::warn!(listener = %cfg.name, %reason, "intelmq tcp: invalid message skipped");
                    if cfg.invalid == OnInvalid::Close {
                        // Answer what came before it, then close.
                        if cfg.ack && !answer.is_empty() {
                            stream.write_all(&answer).await?;
                        }
                        return Ok(());
                    }
                }
                answer.extend_from_slice(b"Ok");
            }
            if cfg.ack {
                stream.write_all(&answer).await?;
            }
            if let Some(s) = slot {
                s.waiting(true, false);
            }
        }
        if let Some(e) = fatal {
            return Err(e.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn room_is_made_by_closing_the_waiting_connection_without_progress() {
        let mut t = Table::default();
        let (a, evict_a) = t.admit(ip(1), 3, 2).expect("room");
        let (b, _) = t.admit(ip(1), 3, 2).expect("room");
        // ip(1) is at its limit: its oldest waiting connection (a) makes room.
        let (c, _) = t.admit(ip(1), 3, 2).expect("room");
        assert!(!t.conns.contains_key(&a));
        assert!(t.conns.contains_key(&b) && t.conns.contains_key(&c));
        // The evicted task is told (the permit is kept until it listens).
        assert!(futures_now(evict_a.notified()));
        // Another address fills the listener; one more: the oldest waiting one anywhere (b).
        let (d, _) = t.admit(ip(2), 3, 2).expect("room");
        assert_eq!(t.conns.len(), 3);
        let (e, _) = t.admit(ip(3), 3, 2).expect("room");
        assert!(!t.conns.contains_key(&b));
        // Connections storing a batch are never closed: with all busy, a new one is refused.
        for entry in t.conns.values_mut() {
            entry.waiting = false;
        }
        assert!(t.admit(ip(4), 3, 2).is_none());
        assert_eq!(t.conns.len(), 3);
        assert!([c, d, e].iter().all(|id| t.conns.contains_key(id)));
    }

    /// Polls a future once.
    fn futures_now<F: std::future::Future>(f: F) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(
            sighthub_exchange::ExchangeStore::open(
                dir.path(),
                sighthub_exchange::StoreOptions::default(),
                None,
                None,
            )
            .expect("open"),
        );
        let cfg: TcpInConfig = serde_json::from_value(serde_json::json!({
            "name": "t", "listen": "127.0.0.1:0", "idle_timeout_seconds": 1
        }))
        .expect("config");
        let listener = TcpIn::bind(cfg, Sink::new(store, None, &[]))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop, rx) = watch::channel(false);
        tokio::spawn(listener.run(rx));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&[0, 0]).await.expect("half a length prefix");
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
}
