//! [`Bucket`]: a JetStream KV bucket with the calls the exchange needs: point reads (of the
//! stream leader: the bucket is set without direct gets, so a read sees every acknowledged
//! write), writes,
//! `create` (put-if-absent: the one writer of a key wins), compare-and-set updates (a write
//! that expects the key's revision: [`Bucket::entry`], [`Bucket::update`]), deletes, and the
//! live keys under a prefix (one ordered consumer over the bucket's stream, last value per
//! key).

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::Nats;

/// Most point reads [`Bucket::get_many`] keeps in flight at once.
pub const GET_CONCURRENCY: usize = 256;

/// The server's error codes of a write whose expected revision was not the key's: 10071
/// (wrong last sequence) and 10164 (a write racing another one still in flight on the
/// leader, seen when two front ends take one free lease at the same moment).
const LOST_RACE_CODES: [u64; 2] = [10071, 10164];

/// Whether a write that expected a key's revision failed because another writer wrote the
/// key first. The client classifies the server's "wrong last sequence" as such only under
/// one of its error codes (10071) and reports the other (10164) as an unclassified error, so
/// the server's error is looked for in the error's chain of sources, by its code.
fn lost_race(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(js) = err.downcast_ref::<jetstream::Error>() {
            return LOST_RACE_CODES.contains(&js.error_code().0);
        }
        cur = err.source();
    }
    false
}

/// The bucket; cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    js: jetstream::Context,
    store: kv::Store,
    name: String,
    timeout: Duration,
}

impl Bucket {
    /// Opens the bucket `name`, creating it (history 1, file storage, `nats`' replicas) when
    /// it does not exist.
    pub async fn open(nats: &Nats, name: &str) -> Result<Bucket> {
        let js = nats.js();
        let timed_out = |e: &jetstream::context::CreateKeyValueError| {
            e.kind() == jetstream::context::CreateKeyValueErrorKind::TimedOut
        };
        let store = crate::while_timed_out(
            || async {
                match js.get_key_value(name).await {
                    Ok(s) => Ok(s),
                    Err(_) => {
                        js.create_key_value(kv::Config {
                            bucket: name.to_owned(),
                            history: 1,
                            num_replicas: nats.replicas(),
                            storage: jetstream::stream::StorageType::File,
                            description: "sighthub exchange indexes".into(),
                            ..Default::default()
                        })
                        .await
                    }
                }
            },
            timed_out,
        )
        .await
        .map_err(|e| Error::unavailable(&format!("opening the bucket {name}"), e))?;
        // Reads of the leader only: a direct get may be answered by a replica that is behind,
        // and the seen-set and the consumers' cursors must read what was just written.
        // Per-key expiry (`Nats-TTL`, server 2.11 or newer): entries the exchange keeps for
        // a bounded time go away by themselves.
        let cached = &store.stream.cached_info().config;
        let store = if cached.allow_direct || !cached.allow_message_ttl {
            let mut config = cached.clone();
            config.allow_direct = false;
            config.allow_message_ttl = true;
            crate::while_timed_out(|| js.update_stream(&config), crate::stream_timed_out)
                .await
                .map_err(|e| Error::unavailable(&format!("configuring the bucket {name}"), e))?;
            js.get_key_value(name)
                .await
                .map_err(|e| Error::unavailable(&format!("opening the bucket {name}"), e))?
        } else {
            store
        };
        Ok(Bucket {
            js,
            store,
            name: name.to_owned(),
            timeout: nats.timeout(),
        })
    }

    /// The value of `key`, if set.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.store
            .get(key)
            .await
            .map_err(|e| Error::unavailable("reading the index bucket", e))
    }

    /// The values of `keys`, in order: the reads go out together (at most
    /// [`GET_CONCURRENCY`] in flight), so a request's lookups cost about one round trip
    /// rather than one each.
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Bytes>>> {
        futures_util::stream::iter(keys)
            .map(|k| async move { self.get(&k).await })
            .buffered(GET_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Sets `key`.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.store
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| Error::unavailable("writing the index bucket", e))
    }

    /// Sets `key`, removed by the server `ttl` after this write (never with `None`).
    pub async fn put_expiring(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let Some(ttl) = ttl else {
            return self.put(key, value).await;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            ttl.as_secs().max(1).to_string().as_str(),
        );
        self.js
            .publish_with_headers(format!("$KV.{}.{key}", self.name), headers, value)
            .await
            .map_err(|e| Error::unavailable("writing the index bucket", e))?
            .await
            .map(|_| ())
            .map_err(|e| Error::unavailable("writing the index bucket", e))
    }

    /// [`Bucket::create`], the entry removed by the server `ttl` after this write (never with
    /// `None`).
    pub async fn create_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let Some(ttl) = ttl else {
            return self.create(key, value).await;
        };
        match self.store.create_with_ttl(key, value, ttl).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => Ok(false),
            Err(e) => Err(Error::unavailable("writing the index bucket", e)),
        }
    }

    /// Sets `key` unless it holds a value: `false` when it did (another writer's value stays).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<bool> {
        match self.store.create(key, value).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => Ok(false),
            Err(e) => Err(Error::unavailable("writing the index bucket", e)),
        }
    }

    /// The value of `key` with its revision (the bucket stream's sequence of its last
    /// write), if set; a deleted key is `None`.
    pub async fn entry(&self, key: &str) -> Result<Option<(Bytes, u64)>> {
        let e = self
            .store
            .entry(key)
            .await
            .map_err(|e| Error::unavailable("reading the index bucket", e))?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    /// Sets `key` if its last write is still `revision` (compare-and-set): `false` when
    /// another writer wrote it since (its value stays).
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<bool> {
        match self.store.update(key, value, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || lost_race(&e) => {
                Ok(false)
            }
            Err(e) => Err(Error::unavailable("writing the index bucket", e)),
        }
    }

    /// Removes `key`; `true` when it held a value.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        if self.get(key).await?.is_none() {
            return Ok(false);
        }
        self.store
            .delete(key)
            .await
            .map(|_| true)
            .map_err(|e| Error::unavailable("deleting from the index bucket", e))
    }

    /// The live keys (and values) under `prefix` (a prefix of whole tokens, ending with
    /// `.`), in the order they were last written.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Bytes)>> {
        let fail = |e: &dyn std::fmt::Display| Error::unavailable("listing the index bucket", e);
        let stream = self
            .js
            .get_stream_no_info(format!("KV_{}", self.name))
            .await
            .map_err(|e| fail(&e))?;
        let subject_prefix = format!("$KV.{}.", self.name);
        let consumer = stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: format!("{subject_prefix}{prefix}>"),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&e))?;
        let name = consumer.cached_info().name.clone();
        let listed = self.read_listing(consumer, &subject_prefix).await;
        // Ephemeral consumers otherwise linger until their inactivity threshold, and a
        // stream holds a bounded number.
        let _ = stream.delete_consumer(&name).await;
        listed
    }

    async fn read_listing(
        &self,
        consumer: jetstream::consumer::Consumer<jetstream::consumer::push::OrderedConfig>,
        subject_prefix: &str,
    ) -> Result<Vec<(String, Bytes)>> {
        let fail = |e: &dyn std::fmt::Display| Error::unavailable("listing the index bucket", e);
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
        loop {
            let msg = match tokio::time::timeout(self.timeout, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(fail(&e)),
                Ok(None) => break,
                Err(_) => return Err(fail(&"no answer in time")),
            };
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            let deleted = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if !deleted {
                if let Some(key) = msg.subject.strip_prefix(subject_prefix) {
                    out.push((key.to_owned(), msg.payload.clone()));
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use jetstream::context::{PublishError, PublishErrorKind};

    /// The server's error with `code`, as the client wraps it into a failed update.
    fn update_failed_with(code: u64) -> kv::UpdateError {
        let server: jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": code, "description": "wrong last sequence"
        }))
        .expect("a server error");
        PublishError::with_source(PublishErrorKind::Other, server).into()
    }

    #[test]
    fn a_lost_race_is_told_by_the_servers_error_code_not_its_text() {
        assert!(lost_race(&update_failed_with(10164)));
        assert!(lost_race(&update_failed_with(10071)));
        // Same text, another code: not a race.
        assert!(!lost_race(&update_failed_with(10058)));
        assert!(!lost_race(&kv::UpdateError::new(
            kv::UpdateErrorKind::TimedOut
        )));
    }
}
