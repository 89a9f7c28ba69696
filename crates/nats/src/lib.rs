//! # sighthub-nats
//!
//! sighthub's client of a NATS JetStream cluster: the `[exchange.nats]` configuration
//! ([`NatsConfig`]: servers, credentials, TLS, replicas, timeouts), one connection
//! ([`Nats::connect`]) and the few JetStream calls the exchange's adapter
//! (`sighthub_exchange::log::nats::NatsLog`) is written with: pipelined publishes with an
//! expected last sequence and a message id, batched direct reads of a range, a stream's
//! state, purges, and a KV bucket's point reads, writes, `create` (put-if-absent) and
//! prefix listings.
//!
//! ## Called from any thread
//! The exchange store is called from blocking threads, plain threads (retention, bridge,
//! relay, IntelMQ workers) and async tasks. [`Nats::run`] runs a future on the client's own
//! runtime (two worker threads, owned here) and waits for it: never `block_on` on the
//! caller's runtime. On a worker of a multi-threaded tokio runtime it waits inside
//! `block_in_place`, so that runtime keeps its other tasks going; elsewhere it simply blocks.
//! Every call is bounded by `request_timeout_seconds`: a cluster that does not answer is an
//! [`Error::Unavailable`], never a hang.
//!
//! ## Front ends that start at once
//! Several front ends may open a stream or bucket that does not exist yet at the same moment.
//! JetStream may then leave a create (or a configuration update) of one of them unanswered
//! while it applies the other's; [`while_timed_out`] retries such an attempt (the next one
//! finds the asset made) for up to [`OPEN_ATTEMPTS`] request timeouts, and [`Nats::open`]
//! runs an opening with that bound.
//!
//! It knows nothing of the exchange's records: keys and payloads are bytes.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod config;
pub mod error;
pub mod kv;
pub mod log;

pub use config::NatsConfig;
pub use error::{Error, Result};

use async_nats::jetstream;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How many times an opening step (a stream's or a bucket's create or configuration) is
/// tried while JetStream leaves it unanswered ([`while_timed_out`]).
pub const OPEN_ATTEMPTS: u32 = 4;

/// Runs `attempt` again, after a short pause, while it fails with an error `timed_out` says
/// is a timeout, at most [`OPEN_ATTEMPTS`] times in all: the creation of an asset that
/// another client creates at the same moment may go unanswered, and the next attempt finds
/// it made. Any other error, and the last timeout, are returned as they are.
pub async fn while_timed_out<T, E, F, Fut>(
    mut attempt: F,
    timed_out: impl Fn(&E) -> bool,
) -> std::result::Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if timed_out(&e) && tries < OPEN_ATTEMPTS => {
                tracing::info!(attempt = tries, "JetStream left an opening step unanswered (another front end creating the same stream or bucket?); trying again");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r,
        }
    }
}

/// Whether a stream's create or update went unanswered ([`while_timed_out`]).
pub fn stream_timed_out(e: &jetstream::context::CreateStreamError) -> bool {
    e.kind() == jetstream::context::CreateStreamErrorKind::TimedOut
}

/// One connection to the cluster and the runtime it lives on; cheap to clone.
#[derive(Clone)]
pub struct Nats {
    inner: Arc<Inner>,
}

struct Inner {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: async_nats::Client,
    js: jetstream::Context,
    timeout: Duration,
    replicas: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context; this does not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Nats {
    /// Connects to `cfg.servers` (validated first) and waits until the cluster answers a
    /// JetStream request: an unreachable cluster is a clear [`Error::Connect`] at start.
    pub fn connect(cfg: &NatsConfig) -> Result<Nats> {
        cfg.validate()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats")
            .enable_all()
            .build()
            .map_err(|e| Error::Connect(format!("starting the NATS client's runtime: {e}")))?;
        let handle = rt.handle().clone();
        let timeout = Duration::from_secs(cfg.request_timeout_seconds.max(1));
        let opts = cfg.clone();
        let servers = cfg.servers.join(", ");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = tx.send(config::connect(&opts).await);
        });
        let client = wait(|| rx.recv())
            .map_err(|_| Error::Connect("the NATS client's runtime stopped".into()))??;
        // The context spawns its acknowledgement task: on the client's runtime.
        let js = {
            let _entered = handle.enter();
            jetstream::ContextBuilder::new()
                .timeout(timeout)
                .build(client.clone())
        };
        let nats = Nats {
            inner: Arc::new(Inner {
                rt: Some(rt),
                handle,
                client,
                js,
                timeout,
                replicas: cfg.replicas,
            }),
        };
        let js = nats.js();
        nats.run(async move {
            js.query_account()
                .await
                .map(|_| ())
                .map_err(|e| Error::Connect(format!("JetStream at {servers} does not answer: {e}")))
        })?;
        Ok(nats)
    }

    /// Runs `fut` on the client's runtime and waits for it, from any thread (see the crate
    /// docs); bounded by the request timeout (a bit more, so that the call's own timeout
    /// speaks first).
    pub fn run<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.run_within(self.inner.timeout * 3, fut)
    }

    /// [`Nats::run`] for the opening of a stream and its bucket: each may be retried while
    /// another front end creates it ([`while_timed_out`]), so the bound is theirs.
    pub fn open<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.run_within(self.inner.timeout * (2 * OPEN_ATTEMPTS + 2), fut)
    }

    fn run_within<T, F>(&self, limit: Duration, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner.handle.spawn(async move {
            let out = match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Unavailable(format!(
                    "the NATS cluster did not answer within {} s",
                    limit.as_secs()
                ))),
            };
            let _ = tx.send(out);
        });
        wait(|| rx.recv())
            .map_err(|_| Error::Unavailable("the NATS client's runtime stopped".into()))?
    }

    /// Starts `fut` on the client's runtime (background work of an adapter: following a
    /// stream's head).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.handle.spawn(fut);
    }

    /// The JetStream context.
    pub fn js(&self) -> jetstream::Context {
        self.inner.js.clone()
    }

    /// The core client.
    pub fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Replicas of every stream and bucket this client creates.
    pub fn replicas(&self) -> usize {
        self.inner.replicas
    }
}

/// Waits for `f` (a blocking receive): inside `block_in_place` on a worker of a
/// multi-threaded tokio runtime, plainly elsewhere.
fn wait<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unreachable cluster at start is a clear error naming it, within the timeouts,
    /// from a plain thread and from an async worker alike.
    #[test]
    fn an_unreachable_cluster_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let cfg = NatsConfig {
            servers: vec![format!("nats://127.0.0.1:{port}")],
            connect_timeout_seconds: 1,
            request_timeout_seconds: 1,
            ..Default::default()
        };
        let err = Nats::connect(&cfg).err().expect("no cluster there");
        assert!(matches!(err, Error::Connect(_)), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let cfg2 = cfg.clone();
        let from_async = rt.block_on(async move { Nats::connect(&cfg2).err() });
        assert!(matches!(from_async, Some(Error::Connect(_))));
    }
}
