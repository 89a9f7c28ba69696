//! The UDP and TCP front ends: sockets, the rate limit, bounded concurrency, TCP framing.
//!
//! Bounds (each from [`crate::DnsConfig`], documented in SECURITY.md):
//! - UDP: one datagram is one query; a datagram over [`MAX_QUERY_LEN`] bytes is FORMERR.
//!   At most `max_in_flight` queries are answered at once; more are dropped (the client
//!   retries), so a flood cannot queue unbounded work.
//! - TCP (RFC 7766 framing, a two-byte length before each message): at most
//!   `max_tcp_connections` connections, `max_tcp_connections_per_address` per client address
//!   (more are closed at once); a declared length over [`MAX_QUERY_LEN`] or under a header
//!   closes the connection (nothing is read into memory for it); a connection without a
//!   complete query for `tcp_idle_timeout_seconds`, or whose answer cannot be written in that
//!   time, is closed. Queries on one connection are answered in order.
//! - The per-client rate limit ([`crate::limit`]): over it, UDP drops, TCP answers REFUSED.
//!
//! Lookups run on tokio's blocking pool (a store read may touch the disk), never on the
//! threads that receive packets, so a slow read cannot stall other clients.

use crate::answer::{Reply, Responder};
use crate::limit::RateLimit;
use crate::{DnsConfig, Error};
use sighthub_store::SightingStore;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Longest query accepted, in bytes (a question of at most 255 bytes, an OPT record with
/// options; larger is never a lookup).
pub const MAX_QUERY_LEN: usize = 1024;

/// What the server did since it started (relaxed atomics; `GET /metrics` shows them).
#[derive(Debug, Default)]
pub struct Counters {
    /// Queries received (UDP datagrams and TCP messages).
    pub queries: std::sync::atomic::AtomicU64,
    /// Queries over a client's rate limit (UDP: dropped; TCP: answered REFUSED).
    pub over_rate: std::sync::atomic::AtomicU64,
    /// UDP queries dropped because `max_in_flight` were being answered.
    pub over_in_flight: std::sync::atomic::AtomicU64,
    /// TCP connections closed at once (over `max_tcp_connections` or the per-address bound).
    pub connections_refused: std::sync::atomic::AtomicU64,
}

impl Counters {
    fn add(c: &std::sync::atomic::AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counters as `(name, value)` pairs.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        let g = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        [
            ("queries", g(&self.queries)),
            ("over_rate", g(&self.over_rate)),
            ("over_in_flight", g(&self.over_in_flight)),
            ("connections_refused", g(&self.connections_refused)),
        ]
    }
}

/// A bound DNS server, not yet running.
pub struct DnsServer {
    counters: Arc<Counters>,
    responder: Arc<Responder>,
    limit: Arc<RateLimit>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    max_in_flight: usize,
    max_tcp: usize,
    max_tcp_per_address: usize,
    idle: Duration,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl DnsServer {
    /// Validates `cfg` and binds UDP and TCP on `cfg.listen` (the same port for both; with
    /// port 0, the port UDP got). `None` when `cfg.listen` is not set.
    pub async fn bind(
        cfg: &DnsConfig,
        store: Arc<dyn SightingStore>,
    ) -> Result<Option<Self>, Error> {
        let Some(addr) = cfg.listen else {
            return Ok(None);
        };
        cfg.validate().map_err(Error::Config)?;
        let zones = cfg.build_zones().map_err(Error::Config)?;
        let bind_err = |source| Error::Bind { addr, source };
        let (udp, tcp) = {
            let mut tries = 0;
            loop {
                let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
                let got = udp.local_addr().map_err(bind_err)?;
                match TcpListener::bind(got).await {
                    Ok(tcp) => break (udp, tcp),
                    // Port 0: the port UDP got may be taken for TCP; try another.
                    Err(_) if addr.port() == 0 && tries < 16 => tries += 1,
                    Err(e) => return Err(bind_err(e)),
                }
            }
        };
        Ok(Some(Self {
            counters: Arc::new(Counters::default()),
            responder: Arc::new(Responder::new(zones, store, cfg.ttl_seconds, cfg.shadow)),
            limit: Arc::new(RateLimit::new(cfg.rate_limit_per_second)),
            udp: Arc::new(udp),
            tcp,
            max_in_flight: cfg.max_in_flight,
            max_tcp: cfg.max_tcp_connections,
            max_tcp_per_address: cfg.max_tcp_connections_per_address,
            idle: Duration::from_secs(cfg.tcp_idle_timeout_seconds),
        }))
    }

    /// Its counters (shared with the running server).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Serves until `stop` turns true, then returns once every connection task has ended.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let udp = tokio::spawn(udp_loop(
            Arc::clone(&self.udp),
            Arc::clone(&self.responder),
            Arc::clone(&self.limit),
            self.max_in_flight,
            Arc::clone(&self.counters),
            stop.clone(),
        ));
        tcp_loop(self, stop).await;
        let _ = udp.await;
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn udp_loop(
    sock: Arc<UdpSocket>,
    responder: Arc<Responder>,
    limit: Arc<RateLimit>,
    max_in_flight: usize,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    // One byte more than a query may be, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; MAX_QUERY_LEN + 1];
    let mut tasks = JoinSet::new();
    loop {
        let got = tokio::select! {
            _ = stopped(&mut stop) => break,
            got = sock.recv_from(&mut buf) => got,
        };
        while tasks.try_join_next().is_some() {}
        let (n, peer) = match got {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier answers surface here on some systems: not fatal.
                tracing::debug!(error = %e, "dns: udp receive");
                continue;
            }
        };
        Counters::add(&counters.queries);
        if !limit.allow(peer.ip(), Instant::now()) {
            Counters::add(&counters.over_rate);
            continue;
        }
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            Counters::add(&counters.over_in_flight);
            continue;
        };
        let packet = buf[..n].to_vec();
        let (responder, sock) = (Arc::clone(&responder), Arc::clone(&sock));
        tasks.spawn(async move {
            let reply =
                tokio::task::spawn_blocking(move || responder.respond(&packet, true, now())).await;
            if let Ok(Reply::Send(bytes)) = reply {
                let _ = sock.send_to(&bytes, peer).await;
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Open TCP connections per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
struct Slot {
    table: Arc<PerAddress>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl PerAddress {
    fn take(
        table: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<Slot> {
        let mut m = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: Arc::clone(table),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

async fn tcp_loop(server: DnsServer, mut stop: watch::Receiver<bool>) {
    let conns = Arc::new(Semaphore::new(server.max_tcp));
    let per_address = Arc::new(PerAddress::default());
    let mut tasks = JoinSet::new();
    loop {
        let got = tokio::select! {
            _ = stopped(&mut stop) => break,
            got = server.tcp.accept() => got,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match got {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "dns: tcp accept");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            Counters::add(&server.counters.connections_refused);
            continue; // dropped: closed at once
        };
        let Some(slot) =
            PerAddress::take(&per_address, peer.ip(), server.max_tcp_per_address, permit)
        else {
            Counters::add(&server.counters.connections_refused);
            continue;
        };
        let responder = Arc::clone(&server.responder);
        let counters = Arc::clone(&server.counters);
        let limit = Arc::clone(&server.limit);
        let (idle, stop) = (server.idle, stop.clone());
        tasks.spawn(async move {
            connection(stream, peer.ip(), responder, limit, counters, idle, stop).await;
            drop(slot);
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    mut stream: TcpStream,
    ip: IpAddr,
    responder: Arc<Responder>,
    limit: Arc<RateLimit>,
    counters: Arc<Counters>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            _ = stopped(&mut stop) => return,
            msg = tokio::time::timeout(idle, read_message(&mut stream)) => msg,
        };
        let Ok(Some(msg)) = msg else {
            return; // idle, closed, or a length out of bounds
        };
        Counters::add(&counters.queries);
        let reply = if limit.allow(ip, Instant::now()) {
            let responder = Arc::clone(&responder);
            match tokio::task::spawn_blocking(move || responder.respond(&msg, false, now())).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            Counters::add(&counters.over_rate);
            responder.refused(&msg)
        };
        let Reply::Send(bytes) = reply else { continue };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        match tokio::time::timeout(idle, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// One length-prefixed message; `None` at the end of the stream or when the declared length
/// is out of bounds.
async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let len = usize::from(stream.read_u16().await.ok()?);
    if !(12..=MAX_QUERY_LEN).contains(&len) {
        return None;
    }
    let mut msg = vec![0u8; len];
    stream.read_exact(&mut msg).await.ok()?;
    Some(msg)
}
