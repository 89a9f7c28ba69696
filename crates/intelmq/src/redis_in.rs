//! Reading an IntelMQ Redis pipeline queue into the exchange, the way IntelMQ's own bots do
//! (`lib/pipeline.py`): move messages to `<queue>-internal` (`BLMOVE q q-internal RIGHT
//! LEFT`), take them into the exchange (durable), and only then remove them from
//! `-internal` (`RPOP`). At start, whatever `-internal` still holds (sighthub was killed
//! between the two) is taken again first: a duplicate then is found by content and costs
//! nothing, and nothing acknowledged is lost.

use redis::aio::MultiplexedConnection;
use std::time::Duration;
use tokio::sync::watch;

use crate::config::RedisInConfig;
use crate::error::Result;
use crate::sink::{Sink, Taken};

/// Messages moved per batch.
const BATCH: usize = 200;

/// A reader of one queue.
pub struct RedisIn {
    cfg: RedisInConfig,
    sink: Sink,
}

impl RedisIn {
    /// A reader for `cfg` into `sink`.
    pub fn new(cfg: RedisInConfig, sink: Sink) -> Self {
        RedisIn { cfg, sink }
    }

    fn internal(&self) -> String {
        format!("{}-internal", self.cfg.queue)
    }

    /// Reads until `shutdown` flips to true; reconnects on errors.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let r = tokio::select! {
                r = self.session(shutdown.clone()) => r,
                _ = shutdown.changed() => return,
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(redis_in = %self.cfg.name, error = %e, "intelmq redis in failed; retrying in {:?}", backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn session(&self, shutdown: watch::Receiver<bool>) -> Result<()> {
        let client = redis::Client::open(self.cfg.url.as_str())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let internal = self.internal();
        // Left over from a previous run: take them again (duplicates are free).
        let leftover: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&internal)
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await?;
        if !leftover.is_empty() {
            tracing::info!(redis_in = %self.cfg.name, count = leftover.len(), "re-processing messages left in {internal}");
            // LRANGE lists newest first (LPUSH side); take them oldest first.
            let n = leftover.len();
            let mut batch = leftover;
            batch.reverse();
            self.take(&mut c, batch, n).await?;
        }
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let first: Option<Vec<u8>> = redis::cmd("BLMOVE")
                .arg(&self.cfg.queue)
                .arg(&internal)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(1)
                .query_async(&mut c)
                .await?;
            let Some(first) = first else { continue };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                let next: Option<Vec<u8>> = redis::cmd("LMOVE")
                    .arg(&self.cfg.queue)
                    .arg(&internal)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .query_async(&mut c)
                    .await?;
                match next {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            let n = batch.len();
            self.take(&mut c, batch, n).await?;
        }
    }

    /// Takes `batch` (the oldest `n` messages of `-internal`) into the exchange, then
    /// removes them from `-internal`.
    async fn take(
        &self,
        c: &mut MultiplexedConnection,
        batch: Vec<Vec<u8>>,
        n: usize,
    ) -> Result<()> {
        let taken = self.sink.accept(batch).await?;
        for t in &taken {
            if let Taken::Rejected(reason) = t {
                tracing::warn!(redis_in = %self.cfg.name, %reason, "intelmq redis in: invalid message dropped");
            }
        }
        let _: redis::Value = redis::cmd("RPOP")
            .arg(self.internal())
            .arg(n)
            .query_async(c)
            .await?;
        Ok(())
    }
}
