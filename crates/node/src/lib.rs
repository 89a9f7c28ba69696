//! # sighthub-node
//!
//! The composition root: the one place that opens every subsystem of a sighthub instance,
//! starts its background work, and stops and closes everything in order. The binary parses
//! the command line and the signals and calls this crate; nothing else builds a server.
//!
//! ## Layout
//! - [`config`]: the TOML configuration (every section), validated.
//! - [`boot`]: from a configuration to an opened [`Node`] (stores, keys, TLS, subsystems).
//! - [`worker`]: the [`worker::Worker`] trait and the [`worker::Supervisor`] that starts and
//!   stops every background job.
//! - [`Node::serve`]: listener, workers, drain, shutdown; [`Node::close`]: both stores,
//!   explicitly, after everything that uses them has stopped.
//!
//! ## Life of an instance
//! 1. [`boot::boot`] opens the sighting store and the exchange store (each with its own
//!    group-commit thread, owned and stopped by its store), the keys and TLS, and builds the
//!    bridge, relay and IntelMQ subsystems without starting them.
//! 2. [`Node::serve`] binds the listener, then starts the workers under one supervisor: the
//!    expiry sweep, the exchange retention, the bridge, the relay, the IntelMQ transports,
//!    MISP's ZeroMQ ingest, the DNS server (`[dns] listen`), the key-less metrics listener
//!    (`[metrics] listen`) and the SIGHUP reload.
//! 3. On the shutdown signal the listener drains its connections, the supervisor stops every
//!    worker (each finishes what it is doing; [`SHUTDOWN_DEADLINE`] bounds the wait), and only
//!    then [`Node::close`] seals the exchange store and the sighting store, in that order.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod backend;
pub mod boot;
pub mod config;
pub mod migrate;
pub mod peering;
pub mod status;
pub mod worker;

pub use boot::{boot, BootError, ADMIN_KEY_ENV};
pub use config::{Config, ConfigError};
/// The relay crate, for the binary's `peer` commands (invitations).
pub use sighthub_relay as relay;

use sighthub_api::server::{ConnLimits, Server};
use sighthub_api::App;
use sighthub_store::{SightingStore, Ticket};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use worker::{Periodic, Stop, Supervisor, Task, WorkerError};

/// How long shutdown waits for the background workers once the listener has drained.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Errors of serving and closing (start-up errors are [`BootError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The IntelMQ transports could not start (an address in use, …).
    #[error("starting the [intelmq] transports: {0}")]
    Intelmq(#[from] sighthub_intelmq::Error),
    /// The DNS server could not start (an address in use, …).
    #[error("starting the [dns] server: {0}")]
    Dns(#[from] sighthub_dns::Error),
    /// The sighting store failed.
    #[error("sighting store: {0}")]
    Store(#[from] sighthub_store::Error),
    /// The exchange store failed.
    #[error("exchange store: {0}")]
    Exchange(#[from] sighthub_exchange::Error),
    /// The bridge failed.
    #[error("bridge: {0}")]
    Bridge(#[from] sighthub_bridge::feeder::Error),
    /// The bridge is off, so there is nothing to rebuild.
    #[error("the bridge is disabled ([bridge] enabled = false) or the exchange is off")]
    NoBridge,
}

/// An opened instance: every subsystem, owned here.
pub struct Node {
    /// The configuration it was opened with.
    pub cfg: Config,
    /// The HTTP edge's state (handlers of both APIs).
    pub app: Arc<App>,
    /// The sighting store.
    pub store: Arc<backend::NodeStore>,
    /// The IEP04 exchange (disabled when `[exchange] enabled = false`).
    pub exchange: sighthub_exchange::Exchange,
    /// TLS acceptor, unless plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// A key generated on this start, to show the operator once.
    pub generated_admin_key: Option<(String, PathBuf)>,
    /// Where the DNS server's counters go once it is bound (the metrics read them).
    pub dns_counters: Arc<std::sync::OnceLock<Arc<sighthub_dns::Counters>>>,
    /// The admin key's digest (authentication on), kept for SIGHUP's key reload.
    pub admin_digest: Option<[u8; 32]>,
    /// The feeder of exchanged events into sightings, when both are enabled.
    pub bridge: Option<Arc<sighthub_bridge::Feeder>>,
    /// Peering, whenever the exchange is on (with `[relay] enabled = false` or no peers it
    /// runs nothing).
    pub relay: Option<Arc<sighthub_relay::Relay>>,
    /// The IntelMQ transports, when `[intelmq] enabled`.
    pub intelmq: Option<Arc<sighthub_intelmq::Intelmq>>,
    /// MISP's ZeroMQ ingest, when `[zmq] enabled`.
    pub misp: Option<Arc<sighthub_misp::Ingest>>,
}

/// What the process tells a serving node (installed by the binary before anything is
/// announced, so that a signal right after start is handled, not fatal).
pub struct Signals<S> {
    /// Resolves when the server should stop (SIGTERM, Ctrl-C).
    pub shutdown: S,
    /// SIGHUP: re-read the configuration file (`None` where there is no such signal).
    #[cfg(unix)]
    pub reload: Option<tokio::signal::unix::Signal>,
    /// The configuration file SIGHUP re-reads.
    pub config_path: Option<PathBuf>,
}

impl Node {
    /// The listener's connection bounds from the configuration.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.cfg.max_connections,
            per_address: self.cfg.max_connections_per_address,
            header_timeout: Duration::from_secs(self.cfg.header_timeout_seconds),
            body_timeout: Duration::from_secs(self.cfg.body_timeout_seconds),
        }
    }

    /// Binds the listener (calling `on_listening` with the scheme and address once bound),
    /// starts every background worker, serves until `signals.shutdown`, then drains, stops the
    /// workers and closes both stores ([`Node::close`]). Must run inside a tokio runtime.
    pub async fn serve<S>(
        self,
        signals: Signals<S>,
        on_listening: impl FnOnce(&str, std::net::SocketAddr),
    ) -> Result<(), NodeError>
    where
        S: Future<Output = ()> + Send,
    {
        let addr = self.cfg.listen;
        let server = Server::bind(
            Arc::clone(&self.app),
            addr,
            self.tls.clone(),
            self.conn_limits(),
        )
        .await
        .map_err(|source| NodeError::Bind { addr, source })?;
        let local = server
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;
        let mut sup = Supervisor::new();
        #[cfg(unix)]
        let reload = signals.reload;
        #[cfg(not(unix))]
        let reload = None::<()>;
        if let Err(e) = self
            .start_workers(&mut sup, reload, signals.config_path)
            .await
        {
            sup.shutdown(SHUTDOWN_DEADLINE).await;
            return Err(e);
        }
        on_listening(server.scheme(), local);
        server.run(signals.shutdown).await;
        let report = sup.shutdown(SHUTDOWN_DEADLINE).await;
        tracing::debug!(stopped = ?report.stopped, aborted = ?report.aborted, "workers stopped");
        self.close()
    }

    /// Closes both stores explicitly, exchange first (its clients, the bridge among them,
    /// have stopped), then the sightings: each becomes durable and seals its journal, so the
    /// next start replays nothing.
    pub fn close(self) -> Result<(), NodeError> {
        let exchange = self.exchange.close();
        let store = self.store.close();
        exchange?;
        store?;
        Ok(())
    }

    /// Waits until the sighting store made `ticket` durable.
    fn wait_blocking(&self, ticket: Ticket) -> Result<(), NodeError> {
        self.store.durability().wait_blocking(ticket)?;
        Ok(())
    }

    /// Starts every background job of the configuration under `sup`. The IntelMQ listeners
    /// and the DNS sockets are bound here, so an address in use fails the start instead of
    /// being a log line.
    async fn start_workers(
        &self,
        sup: &mut Supervisor,
        #[cfg(unix)] reload: Option<tokio::signal::unix::Signal>,
        #[cfg(not(unix))] reload: Option<()>,
        config_path: Option<PathBuf>,
    ) -> Result<(), NodeError> {
        let store = Arc::clone(&self.store);
        sup.spawn(Box::new(Periodic::new(
            "expiry-sweep",
            Duration::from_secs(self.cfg.sweep_interval),
            move || {
                store
                    .sweep(sighthub_api::app::now())
                    .map(|_| ())
                    .map_err(WorkerError::from_display)
            },
        )));
        if let Some(ex) = self
            .exchange
            .store()
            .filter(|_| self.cfg.exchange.retains())
        {
            let ex = Arc::clone(ex);
            sup.spawn(Box::new(Periodic::new(
                "exchange-retention",
                Duration::from_secs(self.cfg.exchange.retention_interval_seconds),
                move || match ex.sweep(sighthub_exchange::store::now_secs()) {
                    Ok(s) => {
                        if s.removed > 0 {
                            tracing::debug!(
                                removed = s.removed,
                                bytes = s.bytes,
                                "exchange retention"
                            );
                        }
                        Ok(())
                    }
                    Err(e) => Err(WorkerError::from_display(e)),
                },
            )));
        }
        if self.app.keys.is_shared() || self.app.sessions.is_shared() {
            // Runtime keys and console logouts of the other front ends, in force here within
            // one period.
            let app = Arc::clone(&self.app);
            sup.spawn(Box::new(Periodic::new(
                "shared-documents",
                sighthub_storage::docs::REFRESH,
                move || {
                    let keys = app.keys.refresh().map_err(WorkerError::from_display);
                    let sessions = app.sessions.refresh().map_err(WorkerError::from_display);
                    keys.and(sessions).map(|_| ())
                },
            )));
        }
        if let Some(feeder) = &self.bridge {
            let feeder = Arc::clone(feeder);
            sup.spawn(Box::new(Task::new(
                "bridge",
                move |stop: Stop| async move {
                    feeder.run(stop.receiver()).await;
                    Ok(())
                },
            )));
        }
        if let Some(relay) = &self.relay {
            let relay = Arc::clone(relay);
            sup.spawn(Box::new(Task::new(
                "relay",
                move |mut stop: Stop| async move {
                    relay.start().await;
                    if relay.shares_peers() {
                        // The peers other front ends added by invitation.
                        let mut tick = tokio::time::interval(sighthub_storage::docs::REFRESH);
                        loop {
                            tokio::select! {
                                _ = stop.stopped() => break,
                                _ = tick.tick() => {
                                    if let Err(e) = relay.refresh_peers().await {
                                        tracing::warn!(error = %e, "relay: runtime peers not refreshed");
                                    }
                                }
                            }
                        }
                    } else {
                        stop.stopped().await;
                    }
                    relay.stop().await;
                    Ok(())
                },
            )));
        }
        if let Some(intelmq) = &self.intelmq {
            let running = intelmq.start(sup.stop_signal().receiver()).await?;
            sup.spawn(Box::new(Task::new(
                "intelmq",
                move |_stop: Stop| async move {
                    // Every transport watches the same stop signal; this waits for all of them.
                    running.join().await;
                    Ok(())
                },
            )));
        }
        if let Some(addr) = self.cfg.metrics.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?;
            tracing::info!(%addr, "metrics: GET /metrics without a key on this address");
            let app = Arc::clone(&self.app);
            sup.spawn(Box::new(Task::new(
                "metrics",
                move |mut stop: Stop| async move {
                    sighthub_api::metrics::serve_open(listener, app, async move {
                        stop.stopped().await;
                    })
                    .await;
                    Ok(())
                },
            )));
        }
        if let Some(misp) = &self.misp {
            let misp = Arc::clone(misp);
            sup.spawn(Box::new(Task::new(
                "misp-zmq",
                move |stop: Stop| async move {
                    misp.run(stop.receiver()).await;
                    Ok(())
                },
            )));
        }
        let store: Arc<dyn SightingStore> = self.store.clone();
        if let Some(dns) = sighthub_dns::DnsServer::bind(&self.cfg.dns, store).await? {
            let addr = dns.local_addr().map_err(|source| NodeError::Bind {
                addr: self.cfg.dns.listen.unwrap_or(self.cfg.listen),
                source,
            })?;
            tracing::info!("dns listening on udp+tcp {addr}");
            let _ = self.dns_counters.set(dns.counters());
            sup.spawn(Box::new(Task::new("dns", move |stop: Stop| async move {
                dns.run(stop.receiver()).await;
                Ok(())
            })));
        }
        #[cfg(unix)]
        if let Some(hup) = reload {
            let target = ReloadTarget {
                relay: self.relay.clone(),
                app: Arc::clone(&self.app),
                exchange: self.exchange.clone(),
                authenticate: self.cfg.authenticate,
                admin: self.admin_digest,
            };
            sup.spawn(Box::new(Task::new("reload", move |stop: Stop| {
                reloader(hup, stop, target, config_path)
            })));
        }
        #[cfg(not(unix))]
        let _ = (reload, config_path);
        Ok(())
    }

    /// Re-builds the sightings recorded from exchanged events by replaying the whole exchange
    /// log (`sighthub rebuild-sightings`, server stopped). `progress` is called after each
    /// batch with the position reached and the log's end. A record that cannot be applied is
    /// skipped and counted, never the end of the replay.
    pub fn rebuild(
        self,
        batch: usize,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Rebuilt, NodeError> {
        let feeder = self.bridge.clone().ok_or(NodeError::NoBridge)?;
        let mut out = Rebuilt {
            namespaces_deleted: feeder.reset()?,
            ..Rebuilt::default()
        };
        let total = feeder.log_end();
        loop {
            let (step, ticket) = feeder.step_or_skip(batch.max(1))?;
            self.wait_blocking(ticket)?;
            out.sightings += step.sightings;
            out.retracted += step.retracted;
            out.refused += step.refused;
            out.skipped += step.skipped;
            progress(step.position.min(total), total);
            if step.at_end {
                break;
            }
        }
        drop(feeder);
        self.close()?;
        Ok(out)
    }
}

/// What [`Node::rebuild`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Bridge namespaces deleted before the replay.
    pub namespaces_deleted: usize,
    /// Sightings recorded.
    pub sightings: usize,
    /// Sightings taken back by withdrawals.
    pub retracted: usize,
    /// Sightings the store refused.
    pub refused: usize,
    /// Log records skipped (logged with their seq and uuid).
    pub skipped: usize,
}

/// What SIGHUP re-applies.
struct ReloadTarget {
    relay: Option<Arc<sighthub_relay::Relay>>,
    app: Arc<App>,
    exchange: sighthub_exchange::Exchange,
    authenticate: bool,
    admin: Option<[u8; 32]>,
}

/// On SIGHUP, re-reads the configuration file and applies its API keys (`[acl]`,
/// `[exchange.keys]`; the runtime keys stay) and its `[relay]` section (peers and pulls
/// added, removed or changed without a restart). Other sections need a restart.
#[cfg(unix)]
async fn reloader(
    mut hup: tokio::signal::unix::Signal,
    mut stop: Stop,
    target: ReloadTarget,
    config: Option<PathBuf>,
) -> Result<(), WorkerError> {
    loop {
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            got = hup.recv() => if got.is_none() { return Ok(()) },
        }
        let Some(path) = &config else {
            tracing::warn!("SIGHUP ignored: no --config file");
            continue;
        };
        match Config::read(path).and_then(|c| c.validate().map(|()| c)) {
            Ok(c) => {
                if c.authenticate != target.authenticate {
                    tracing::warn!(
                        "SIGHUP: `authenticate` changed in the file; that needs a restart"
                    );
                }
                target.app.keys.set_config(boot::config_auth(
                    &c,
                    target.authenticate,
                    target.admin,
                ));
                if let Err(e) = target.exchange.reload_keys(&c.exchange) {
                    tracing::warn!(error = %e, "SIGHUP: [exchange.keys] refused");
                }
                tracing::info!(
                    acl = c.acl.len(),
                    exchange_keys = c.exchange.keys.len(),
                    "SIGHUP: API keys reloaded"
                );
                if let Some(relay) = &target.relay {
                    if let Err(e) = relay.reload(c.relay).await {
                        tracing::warn!(error = %e, "SIGHUP: relay configuration refused");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "SIGHUP: configuration not reloaded"),
        }
    }
}
