//! The socket side: accept loop, TLS handshake, HTTP/1.1 connections, graceful shutdown.
//!
//! A semaphore permit is taken before each accept, so at most `max_connections` are served;
//! accept errors back off instead of spinning. On shutdown the listener closes, open
//! connections finish their current request (hyper's graceful shutdown) and the call returns
//! once all are done or after a deadline.
//!
//! Everything a client can hold is bounded in time and count ([`ConnLimits`]):
//! - at most `per_address` connections from one client address; more are closed at once, so
//!   one address cannot take every slot;
//! - the TLS handshake and each request head must arrive within `header_timeout`, which also
//!   closes a keep-alive connection idle that long (hyper starts the head timer as soon as it
//!   waits for the next request);
//! - each request body must arrive whole within `body_timeout` (every route, `/iep04/`
//!   included: the body is wrapped before dispatch, see [`crate::deadline`]); past it the
//!   answer is 408 and the connection is closed.

use crate::app::App;
use crate::deadline::DeadlineBody;
use crate::error::ApiError;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// How long shutdown waits for open connections.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Connection bounds (configuration: `max_connections`, `max_connections_per_address`,
/// `header_timeout_seconds`, `body_timeout_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections from one client address.
    pub per_address: usize,
    /// TLS handshake, each request head, and keep-alive idle time.
    pub header_timeout: Duration,
    /// Each whole request body.
    pub body_timeout: Duration,
}

/// Runs a request's handler in its own task, so that a panic anywhere in it (the exchange's
/// routes included) is a logged 500 instead of a dropped connection; the task is aborted when
/// the connection goes away, as the handler itself would have been.
async fn contain_panics<F>(handler: F) -> hyper::Response<http_body_util::Full<bytes::Bytes>>
where
    F: Future<Output = hyper::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    /// Aborts the task when dropped (the connection closed before the answer).
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(handler);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(resp) => resp,
        Err(e) => crate::cmd::join_error(e).into_response(),
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, or `None` when that address already holds `max`.
    fn take(table: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut m = table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A bound server, ready to run.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one).
    pub async fn bind(
        app: Arc<App>,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        limits: ConnLimits,
    ) -> std::io::Result<Self> {
        Ok(Self {
            app,
            listener: TcpListener::bind(addr).await?,
            tls,
            limits,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let limit = Arc::new(Semaphore::new(self.limits.max_connections));
        let per_address = Arc::new(PerAddress::default());
        let (header_timeout, body_timeout) = (self.limits.header_timeout, self.limits.body_timeout);
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(s) => { backoff = Duration::from_millis(5); s }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(slot) = PerAddress::take(
                &per_address,
                sighthub_exchange::access::client_scope(peer.ip()),
                self.limits.per_address,
            ) else {
                tracing::debug!(peer = %peer.ip(), "connection refused: max_connections_per_address reached");
                drop(stream);
                continue;
            };
            let permit = (permit, slot);
            let _ = stream.set_nodelay(true);
            let app = Arc::clone(&self.app);
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = Arc::clone(&app);
                async move {
                    let (req, expired) = {
                        let (parts, body) = req.into_parts();
                        let (body, expired) = DeadlineBody::new(body, body_timeout);
                        (hyper::Request::from_parts(parts, body), expired)
                    };
                    let resp = contain_panics(async move { app.handle(req).await }).await;
                    // Whatever the handler made of it, a body that missed its deadline is a
                    // 408 and the end of the connection.
                    let resp = if expired.get() {
                        ApiError::BodyTimeout(body_timeout.as_secs()).into_response()
                    } else {
                        resp
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            match &self.tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                        drop(permit);
                    });
                }
                Some(acceptor) => {
                    // The handshake runs in the task; graceful shutdown covers the connection
                    // once it is established.
                    let acceptor = acceptor.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls =
                            match tokio::time::timeout(header_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        let _ = watcher.watch(conn).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; closing"),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500() {
        let resp = contain_panics(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()))
        })
        .await;
        assert_eq!(resp.status(), hyper::StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn per_address_slots_are_counted_and_given_back() {
        let table = Arc::new(PerAddress::default());
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = PerAddress::take(&table, ip, 2);
        let b = PerAddress::take(&table, ip, 2);
        assert!(a.is_some() && b.is_some());
        assert!(
            PerAddress::take(&table, ip, 2).is_none(),
            "a third is refused"
        );
        assert!(PerAddress::take(&table, [127, 0, 0, 2].into(), 2).is_some());
        drop(a);
        assert!(
            PerAddress::take(&table, ip, 2).is_some(),
            "a slot came back"
        );
    }
}
