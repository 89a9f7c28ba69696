//! [`LogStream`]: a JetStream stream used as an ordered log whose positions are the stream's
//! sequence numbers. Appends carry the expected last sequence (so two writers never
//! interleave unnoticed) and a `Nats-Msg-Id` (so one message published by two writers at
//! once is stored once); reads of a range are batched direct gets (one request per batch,
//! answered only by a replica that has everything up to the range's end).

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::Nats;

/// Most records one batched read asks for.
pub const READ_BATCH: usize = 512;

/// Most messages of one atomic batch (the servers' default limit is 1,000).
pub const ATOMIC_BATCH: usize = 500;

/// How many times a stale answer to a read is asked again.
const STALE_RETRIES: u32 = 40;

/// The stream and what it takes to reach it; cheap to clone.
#[derive(Clone)]
pub struct LogStream {
    js: jetstream::Context,
    client: async_nats::Client,
    name: String,
    subject: String,
    timeout: Duration,
}

/// A stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// First sequence still held (`last + 1` when empty).
    pub first: u64,
    /// Last sequence ever assigned (0: nothing ever).
    pub last: u64,
    /// Messages held.
    pub messages: u64,
    /// Bytes held (JetStream's count, headers and subjects included).
    pub bytes: u64,
    /// Creation time of the stream, Unix nanoseconds.
    pub created_ns: u64,
    /// The server leading the stream (`server_name`), if known.
    pub leader: Option<String>,
    /// Whether every replica is current (a healed cluster).
    pub replicas_current: bool,
}

/// One append: the payload, the sequence it must get, and its de-duplication id.
#[derive(Debug, Clone)]
pub struct Append {
    /// The sequence number the writer assigned (the stream's last must be `seq - 1`).
    pub seq: u64,
    /// `Nats-Msg-Id`.
    pub msg_id: Option<String>,
    /// The record.
    pub payload: Bytes,
}

impl LogStream {
    /// Opens the stream `name` (subject `<name>.log`), creating it with `nats`' replicas,
    /// file storage, direct gets and the de-duplication window when it does not exist.
    pub async fn open(nats: &Nats, name: &str, duplicate_window: Duration) -> Result<LogStream> {
        Self::open_from(nats, name, duplicate_window, None).await
    }

    /// [`LogStream::open`]; a stream created here starts at `first` (a copy of a log whose
    /// oldest records were dropped keeps its sequence numbers).
    pub async fn open_from(
        nats: &Nats,
        name: &str,
        duplicate_window: Duration,
        first: Option<u64>,
    ) -> Result<LogStream> {
        let js = nats.js();
        let subject = format!("{name}.log");
        let config = stream::Config {
            first_sequence: first.filter(|f| *f > 1),
            name: name.to_owned(),
            subjects: vec![subject.clone()],
            num_replicas: nats.replicas(),
            storage: stream::StorageType::File,
            allow_direct: true,
            allow_atomic_publish: true,
            duplicate_window,
            discard: stream::DiscardPolicy::Old,
            description: Some("sighthub exchange log".into()),
            ..Default::default()
        };
        crate::while_timed_out(
            || js.get_or_create_stream(config.clone()),
            crate::stream_timed_out,
        )
        .await
        .map_err(|e| Error::unavailable(&format!("opening the stream {name}"), e))?;
        let mut info = js
            .get_stream(name)
            .await
            .map_err(|e| Error::unavailable(&format!("opening the stream {name}"), e))?
            .cached_info()
            .config
            .clone();
        if !info.allow_atomic_publish {
            // A stream made by an earlier version: atomic batches are needed for appends.
            info.allow_atomic_publish = true;
            crate::while_timed_out(|| js.update_stream(&info), crate::stream_timed_out)
                .await
                .map_err(|e| Error::unavailable(&format!("configuring the stream {name}"), e))?;
        }
        Ok(LogStream {
            js,
            client: nats.client(),
            name: name.to_owned(),
            subject,
            timeout: nats.timeout(),
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject its records are published on (core subscribers of it are woken by every
    /// append, before it is known durable).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The stream's state, from its leader.
    pub async fn state(&self) -> Result<State> {
        let s = self
            .js
            .get_stream_no_info(&self.name)
            .await
            .map_err(|e| Error::unavailable("reading the stream", e))?;
        let info = s
            .get_info()
            .await
            .map_err(|e| Error::unavailable("reading the stream's state", e))?;
        let created_ns = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
        Ok(State {
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            messages: info.state.messages,
            bytes: info.state.bytes,
            created_ns,
            leader: info.cluster.as_ref().and_then(|c| c.leader.clone()),
            replicas_current: info
                .cluster
                .as_ref()
                .is_some_and(|c| c.replicas.iter().all(|r| r.current)),
        })
    }

    /// Appends `items` as atomic batches (JetStream's atomic batch publish: all of a batch
    /// or nothing, the first message expecting the previous sequence), up to [`ATOMIC_BATCH`]
    /// messages each, one acknowledgement per batch (on a quorum, durable under the servers'
    /// `sync_interval`). Returns how many were appended, and the error that stopped it:
    /// [`Error::Conflict`] when another writer took the first sequence of a batch, or stored
    /// one of its `Nats-Msg-Id`s. What was appended is exactly the first items, at their
    /// `seq`: a lost race never leaves a later item in without an earlier one.
    pub async fn append(&self, items: Vec<Append>) -> (usize, Result<()>) {
        let mut done = 0usize;
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let batch: Vec<Append> = items.by_ref().take(ATOMIC_BATCH).collect();
            let n = batch.len();
            if let Err(e) = self.append_atomic(batch).await {
                return (done, Err(e));
            }
            done += n;
        }
        (done, Ok(()))
    }

    async fn append_atomic(&self, batch: Vec<Append>) -> Result<()> {
        let id = self
            .client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("b")
            .to_owned();
        let (first_seq, last_seq) = match (batch.first(), batch.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Ok(()),
        };
        let n = batch.len();
        let mut ack = None;
        for (i, item) in batch.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            if n > 1 {
                headers.insert("Nats-Batch-Id", id.as_str());
                headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            }
            if i == 0 {
                headers.insert(
                    "Nats-Expected-Last-Sequence",
                    item.seq.saturating_sub(1).to_string().as_str(),
                );
            }
            if let Some(m) = &item.msg_id {
                headers.insert("Nats-Msg-Id", m.as_str());
            }
            if i + 1 == n {
                if n > 1 {
                    headers.insert("Nats-Batch-Commit", "1");
                }
                ack = Some(
                    self.js
                        .publish_with_headers(self.subject.clone(), headers, item.payload)
                        .await,
                );
            } else {
                self.client
                    .publish_with_headers(self.subject.clone(), headers, item.payload)
                    .await
                    .map_err(|e| Error::unavailable("appending to the log", e))?;
            }
        }
        let ack = match ack {
            Some(Ok(f)) => f.await,
            Some(Err(e)) => Err(e),
            None => return Ok(()),
        };
        match ack {
            Ok(a) if a.duplicate => Err(Error::Conflict(format!(
                "a message id of {first_seq}..={last_seq} was already stored (at {})",
                a.sequence
            ))),
            Ok(a) if a.sequence != last_seq => Err(Error::Unavailable(format!(
                "the stream stored at {} what was expected at {last_seq}",
                a.sequence
            ))),
            Ok(_) => Ok(()),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
            {
                Err(Error::Conflict(format!("sequence {first_seq} was taken")))
            }
            // "Duplicate message id is in process": another writer is storing it right now.
            // 10158: "duplicate message id is in process" (another writer is storing it right
            // now); 10201: "atomic publish batch contains duplicate message id" (stored).
            Err(e) if e.to_string().contains("10158") || e.to_string().contains("10201") => {
                Err(Error::Conflict(e.to_string()))
            }
            Err(e) => Err(Error::unavailable("appending to the log", e)),
        }
    }

    /// The records from `from` to `to` (inclusive) still in the stream, in order, at most
    /// `max`: one batched direct get per attempt. Any replica may answer a direct get, and
    /// one that is behind answers with a hole (the server has no "minimum last sequence" for
    /// direct gets yet); since this log is only ever purged from its front, the records from
    /// the first one answered on have no gaps, so an answer that skips a sequence, or is
    /// empty, is stale: asked again (another replica, or the same one caught up). A short
    /// answer without holes is returned as it is: the caller asks for the rest.
    pub async fn read(&self, from: u64, to: u64, max: usize) -> Result<Vec<(u64, Bytes)>> {
        if from > to || max == 0 {
            return Ok(Vec::new());
        }
        let want = usize::try_from(to - from + 1)
            .unwrap_or(usize::MAX)
            .min(max);
        let req = serde_json::json!({"seq": from, "batch": want});
        for attempt in 0..STALE_RETRIES {
            let mut out: Vec<(u64, Bytes)> = Vec::with_capacity(want);
            self.batch_get(&req, |seq, payload| {
                if seq <= to {
                    out.push((seq, payload));
                }
            })
            .await?;
            // A short answer without holes is fine (the caller asks for the rest); a hole or
            // nothing at all is not.
            let whole = match (out.first(), out.last()) {
                (Some(&(first, _)), Some(&(last, _))) => out.len() as u64 == last - first + 1,
                // Nothing: stale, or everything up to `to` was purged meanwhile.
                _ => attempt + 1 >= STALE_RETRIES / 4,
            };
            if whole {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(2 * u64::from(attempt + 1))).await;
        }
        Err(Error::Unavailable(format!(
            "reading the log: no replica answered {from}..={to} whole"
        )))
    }

    /// The record at `seq`, if still in the stream (asked again a few times when absent: a
    /// replica that is behind answers "not found").
    pub async fn get(&self, seq: u64) -> Result<Option<Bytes>> {
        let req = serde_json::json!({"seq": seq, "batch": 1});
        for attempt in 0..4u64 {
            let mut got = None;
            self.batch_get(&req, |s, p| {
                if s == seq {
                    got = Some(p);
                }
            })
            .await?;
            if got.is_some() {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(2 * (attempt + 1))).await;
        }
        Ok(None)
    }

    async fn batch_get(
        &self,
        req: &serde_json::Value,
        mut f: impl FnMut(u64, Bytes),
    ) -> Result<()> {
        let subject = format!("$JS.API.DIRECT.GET.{}", self.name);
        // A replica behind `min_last_seq` answers with an error status: ask again (another
        // replica, or the same one caught up).
        for attempt in 0..20u32 {
            let inbox = self.client.new_inbox();
            let mut sub = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| Error::unavailable("reading the log", e))?;
            self.client
                .publish_with_reply(subject.clone(), inbox, req.to_string().into())
                .await
                .map_err(|e| Error::unavailable("reading the log", e))?;
            let mut retry = false;
            loop {
                let msg = match tokio::time::timeout(self.timeout, sub.next()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(Error::Unavailable("reading the log: closed".into())),
                    Err(_) => {
                        return Err(Error::Unavailable(format!(
                            "reading the log: no answer within {} s",
                            self.timeout.as_secs()
                        )))
                    }
                };
                if let Some(status) = msg.status {
                    match status.as_u16() {
                        // End of batch; nothing at or after the sequence.
                        204 | 404 => break,
                        // No responders yet (a leader election), or a replica behind.
                        _ => {
                            retry = true;
                            break;
                        }
                    }
                }
                let seq = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Sequence"))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                match seq {
                    Some(seq) => f(seq, msg.payload),
                    None => {
                        return Err(Error::Unavailable(
                            "reading the log: an answer without a sequence".into(),
                        ))
                    }
                }
            }
            let _ = sub.unsubscribe().await;
            if !retry {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt + 1))).await;
        }
        Err(Error::Unavailable(
            "reading the log: no replica holds the range yet".into(),
        ))
    }

    /// Removes every record below `seq` (retention of the oldest).
    pub async fn purge_below(&self, seq: u64) -> Result<()> {
        let s = self
            .js
            .get_stream_no_info(&self.name)
            .await
            .map_err(|e| Error::unavailable("purging the log", e))?;
        s.purge()
            .sequence(seq)
            .await
            .map(|_| ())
            .map_err(|e| Error::unavailable("purging the log", e))
    }

    /// Subscribes (core NATS) to the log's subject: a wake-up on every append by any writer.
    pub async fn wakeups(&self) -> Result<async_nats::Subscriber> {
        self.client
            .subscribe(self.subject.clone())
            .await
            .map_err(|e| Error::unavailable("subscribing to the log", e))
    }
}
