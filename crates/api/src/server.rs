//! The socket side: accept loop, TLS handshake, HTTP/1.1 connections, graceful shutdown.
//!
//! A semaphore permit is taken before each accept, so at most `max_connections` are served;
//! accept errors back off instead of spinning. On shutdown the listener closes, open
//! connections finish their current request (hyper's graceful shutdown) and the call returns
//! once all are done or after a deadline.

use crate::app::App;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// How long shutdown waits for open connections.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a client may take to send its request head (and the TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound server, ready to run.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one).
    pub async fn bind(
        app: Arc<App>,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        Ok(Self {
            app,
            listener: TcpListener::bind(addr).await?,
            tls,
            max_connections,
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
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = &mut shutdown => break,
            };
            let (stream, _peer) = tokio::select! {
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
            let _ = stream.set_nodelay(true);
            let app = Arc::clone(&self.app);
            let service = service_fn(move |req| {
                let app = Arc::clone(&app);
                async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
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
                            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream))
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
