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

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

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
        let limit = Arc::new(Semaphore::new(self.cfg.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (cfg, sink, stop) =
                        (Arc::clone(&self.cfg), self.sink.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = serve(stream, &cfg, &sink, stop).await {
                            tracing::warn!(listener = %cfg.name, %peer, error = %e, "intelmq tcp connection closed");
                        }
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

/// Serves one connection; see the [module docs](self).
pub async fn serve(
    mut stream: TcpStream,
    cfg: &TcpInConfig,
    sink: &Sink,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let framing = match cfg.framing {
        FramingKind::Length => Framing::LengthPrefixed,
        FramingKind::Separator => Framing::Separator(cfg.separator.as_bytes().to_vec()),
    };
    let mut decoder = Decoder::new(framing, cfg.max_frame_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => r?,
            _ = shutdown.changed() => return Ok(()),
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
        }
        if let Some(e) = fatal {
            return Err(e.into());
        }
    }
}
